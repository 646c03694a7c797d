//! One `csr` fuzz input (CE2): `VerifiedCsr::from_pem_or_der` on arbitrary bytes must not panic.

/// Runs one input.
pub fn run(data: &[u8]) {
    let _ = zonepki::csr::VerifiedCsr::from_pem_or_der(data);
}
