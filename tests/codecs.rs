//! Property tests for the crate's own codecs: CSR build/parse, PKCS#8, RFC 3339 timestamps
//! and X.509 times, and hostile bytes into every parser (no panic, a typed error).
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use proptest::prelude::*;
use zonepki::cert::Certificate;
use zonepki::clock::Timestamp;
use zonepki::csr::{CsrRequest, CsrSubject, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey, Signer};

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(KeySpec::P256).unwrap())
}

/// Attribute values: printable, no leading/trailing space trouble, up to 64 characters.
fn value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 ,.+=#;<>\"\\\\é-]{0,40}"
}

/// DNS names; the top-level label starts with a letter, since an all-numeric one is an IP
/// literal and refused (RFC 1123 2.1, issue 9 item 6).
fn dns() -> impl Strategy<Value = String> {
    "([a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\\.){0,3}[a-z]([a-z0-9-]{0,10}[a-z0-9])?"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn csr_round_trips(
        cn in value(), o in proptest::option::of(value()), ou in proptest::option::of(value()),
        l in proptest::option::of(value()), st in proptest::option::of(value()),
        c in proptest::option::of("[A-Za-z]{2}"), names in proptest::collection::vec(dns(), 0..4),
    ) {
        let req = CsrRequest {
            subject: CsrSubject {
                common_name: cn.clone(), organization: o, organizational_unit: ou,
                locality: l, state: st, country: c,
            },
            dns_names: names.clone(),
        };
        let csr = build_csr(&req, key()).unwrap();
        let v = VerifiedCsr::from_pem_or_der(csr.to_pem().as_bytes()).unwrap();
        prop_assert_eq!(v.common_name(), Some(cn));
        prop_assert_eq!(v.dns_names(), &names[..]);
        prop_assert_eq!(v.public_key(), &key().public_key_info());
        // The subject re-encodes to the same name the request asked for.
        prop_assert_eq!(v.subject(), &req.subject.to_name().unwrap());
    }

    #[test]
    fn csr_parser_never_panics_on_mutations(pos in any::<prop::sample::Index>(), byte in any::<u8>(),
                                            cut in any::<prop::sample::Index>()) {
        let der = build_csr(&CsrRequest::default_for("a.example"), key()).unwrap();
        let mut bytes = der.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        let changed = bytes[i] != byte;
        bytes[i] = byte;
        let r = VerifiedCsr::from_der(&bytes);
        if changed {
            // A changed byte either breaks the structure or the signature; it is never
            // silently accepted as the same request with another content... unless it
            // changed nothing the signature covers (the outer length bytes cannot).
            if let Ok(v) = &r {
                prop_assert_eq!(v.public_key(), &key().public_key_info());
            }
        }
        let n = cut.index(bytes.len());
        let _ = VerifiedCsr::from_der(&bytes[..n]);
    }

    #[test]
    fn garbage_into_every_parser_is_an_error_not_a_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Certificate::from_der(&data);
        let _ = VerifiedCsr::from_pem_or_der(&data);
        let _ = PrivateKey::from_pkcs8(&data);
        let _ = zonepki::cert::bundle::read_certificates(&data);
        if let Ok(s) = std::str::from_utf8(&data) {
            let _ = s.parse::<Timestamp>();
            let _ = s.parse::<KeySpec>();
            let _ = s.parse::<zonepki::zone::Fqdn>();
        }
    }

    #[test]
    fn timestamps_round_trip(secs in 0i64..253_402_300_799) {
        let t = Timestamp::from_unix(secs).unwrap();
        prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        prop_assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}

#[test]
fn pkcs8_round_trips_for_every_key_spec() {
    // Every spec this build makes (RSA needs the `rsa` feature).
    for spec in KeySpec::ALL.into_iter().filter(|k| k.is_available()) {
        let k = PrivateKey::generate(spec).unwrap();
        let back = PrivateKey::from_pkcs8(k.to_pkcs8_pem().as_bytes()).unwrap();
        assert_eq!(back.public_key_info(), k.public_key_info(), "{spec}");
        assert_eq!(back.algorithm(), spec.algorithm());
    }
}
