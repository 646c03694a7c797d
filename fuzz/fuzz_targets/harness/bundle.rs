//! One `bundle` fuzz input (CE1): `read_certificates` on arbitrary bytes must not panic; what it
//! accepts must survive `to_pem`, `to_pkcs7_der` and `to_pkcs7_pem` unchanged.

use zonepki::cert::CertificateDer;
use zonepki::cert::bundle::{self, MAX_CERTIFICATES, MAX_INPUT_LEN};

/// Runs one input.
pub fn run(data: &[u8]) {
    let detected = bundle::detect(data);
    let Ok(certs) = bundle::read_certificates(data) else {
        return;
    };
    assert!(
        detected.is_ok(),
        "read_certificates accepted what detect refused: {detected:?}"
    );
    assert!(!certs.is_empty() && certs.len() <= MAX_CERTIFICATES);
    let ders: Vec<CertificateDer> = certs.iter().map(|c| c.der().clone()).collect();
    let encodings = [
        ("to_pem", bundle::to_pem(&ders).into_bytes()),
        ("to_pkcs7_der", bundle::to_pkcs7_der(&ders)),
        ("to_pkcs7_pem", bundle::to_pkcs7_pem(&ders).into_bytes()),
    ];
    for (name, encoded) in encodings {
        // PEM is a third larger than DER: near the input limit it may no longer fit.
        if encoded.len() > MAX_INPUT_LEN {
            continue;
        }
        match bundle::read_certificates(&encoded) {
            Ok(again) => assert!(
                again == certs,
                "{name} then read_certificates changed the list"
            ),
            Err(e) => panic!("{name} output does not read back: {e}"),
        }
    }
}
