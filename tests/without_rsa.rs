//! A build without the `rsa` feature (issue 9 item 7): `cargo test --no-default-features`.
//! RSA is refused wherever it would be needed, with [`KeyError::RsaNotEnabled`], whose message
//! names the feature; P-256 works as in the default build. (In the default build this file is
//! empty: the RSA paths are tested by the other files.)
#![cfg(not(feature = "rsa"))]
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use sha2::Digest;
use zonepki::backup;
use zonepki::cert::Certificate;
use zonepki::cert::bundle;
use zonepki::chain::verify_chain;
use zonepki::clock::Timestamp;
use zonepki::key::{KeyError, KeySpec, PrivateKey, SignatureError, Signer, verify_signature};

const FEATURE: &str = "built without its `rsa` feature";

fn fixture(name: &str) -> Certificate {
    let path = format!("{}/tests/data/bundle/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut certs = bundle::read_certificates(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(certs.len(), 1);
    certs.remove(0)
}

fn at() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

#[test]
fn key_types_offer_p256_only_and_refuse_rsa_naming_the_feature() {
    assert!(KeySpec::P256.is_available());
    for name in ["rsa2048", "RSA3072", "rsa4096"] {
        let e = name.parse::<KeySpec>().unwrap_err();
        assert_eq!(e, KeyError::RsaNotEnabled { what: "keys" });
        assert!(e.to_string().contains(FEATURE), "{e}");
    }
    for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Rsa4096] {
        assert!(!spec.is_available());
        let e = PrivateKey::generate(spec).unwrap_err();
        assert!(matches!(e, KeyError::RsaNotEnabled { .. }), "{e:?}");
    }
    // An unknown type lists what this build offers: P-256 only.
    let e = "rsa1024".parse::<KeySpec>().unwrap_err().to_string();
    assert_eq!(
        e,
        "unsupported key type \"rsa1024\": choose one of p256 (default)"
    );
    // P-256 works.
    let k = PrivateKey::generate(KeySpec::P256).unwrap();
    let sig = k.sign(b"m").unwrap();
    verify_signature(&k.public_key_info(), &k.signature_algorithm(), b"m", &sig).unwrap();
}

#[test]
fn records_naming_rsa_still_read() {
    // A zone made by a build with RSA stays readable; using RSA is what is refused.
    let spec: KeySpec = serde_json::from_str("\"rsa2048\"").unwrap();
    assert_eq!(spec, KeySpec::Rsa2048);
    assert_eq!(serde_json::to_string(&spec).unwrap(), "\"rsa2048\"");
}

#[test]
fn an_rsa_certificate_or_chain_is_refused_naming_the_feature() {
    let rsa_root = fixture("root-rsa.pem");
    let e = rsa_root.key_algorithm().unwrap_err().to_string();
    assert!(e.contains(FEATURE), "{e}");
    // Its self-signature is an RSA signature by an RSA key.
    let e = verify_signature(
        rsa_root.public_key(),
        rsa_root.signature_algorithm(),
        rsa_root.tbs_der(),
        rsa_root.signature().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(e, SignatureError::Key(KeyError::RsaNotEnabled { .. })),
        "{e:?}"
    );
    // As a chain's leaf, and as its only anchor.
    let p256_root = fixture("root-p256.pem");
    let e = verify_chain(&rsa_root, &[], std::slice::from_ref(&p256_root), at())
        .unwrap_err()
        .to_string();
    assert!(e.contains(FEATURE), "{e}");
    let e = verify_chain(&rsa_root, &[], std::slice::from_ref(&rsa_root), at())
        .unwrap_err()
        .to_string();
    assert!(e.contains(FEATURE), "{e}");
    // P-256 chains still verify.
    let leaf = fixture("leaf-p256.pem");
    let int = fixture("int-p256.pem");
    verify_chain(&leaf, &[int], &[p256_root], at()).unwrap();
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn an_rsa_private_key_is_refused_naming_the_feature() {
    let mut openssl = common::tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rsa.p8.pem");
    let (ok, text) = common::run(openssl.args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        out.to_str().unwrap(),
    ]));
    assert!(ok, "{text}");
    let pem = std::fs::read(&out).unwrap();
    assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    let e = PrivateKey::from_pkcs8(&pem).unwrap_err();
    assert_eq!(
        e,
        KeyError::RsaNotEnabled {
            what: "private keys"
        }
    );
    assert!(e.to_string().contains(FEATURE), "{e}");
}

/// A backup of an RSA CA (made by a build with RSA) is refused by `inspect`, the first step
/// of a restore, before any key derivation, with the feature named. The archive is a real
/// P-256 backup whose certificate entry is swapped for an RSA CA (manifest hashes fixed up;
/// `inspect` checks no MAC).
#[test]
fn a_backup_of_an_rsa_ca_is_refused_before_any_kdf() {
    use std::io::{Cursor, Read, Write};
    let key = PrivateKey::generate(KeySpec::P256).unwrap();
    let params = zonepki::ca::CaParams {
        common_name: "Acme".into(),
        validity: 10.try_into().unwrap(),
    };
    let now: Timestamp = "2027-03-01T12:00:00Z".parse().unwrap();
    let serial = zonepki::ca::Serial::random().unwrap();
    let cert = zonepki::ca::self_signed_ca(&key, &params, &serial, now).unwrap();
    let pp = backup::Passphrase::new("correct horse battery staple").unwrap();
    let zip = backup::create(&cert, &key, &pp, now).unwrap();
    backup::inspect(&zip).unwrap();

    let rsa_root = fixture("root-rsa.pem");
    let rsa_pem = rsa_root.der().to_pem();
    let mut z = zip::ZipArchive::new(Cursor::new(&zip)).unwrap();
    let mut entries = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        entries.push((f.name().unwrap().to_string(), data));
    }
    for (name, data) in &mut entries {
        match name.as_str() {
            "ca.pem" => *data = rsa_pem.clone().into_bytes(),
            "manifest.json" => {
                let mut m: serde_json::Value = serde_json::from_slice(data).unwrap();
                m["ca_subject"] = rsa_root.subject().into();
                m["ca_sha256"] = rsa_root.fingerprints().sha256.to_string().into();
                m["entries"]["ca.pem"] =
                    base16ct::lower::encode_string(&sha2::Sha256::digest(rsa_pem.as_bytes()))
                        .into();
                *data = serde_json::to_vec_pretty(&m).unwrap();
            }
            _ => {}
        }
    }
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in &entries {
        w.start_file(name.as_str(), options).unwrap();
        w.write_all(data).unwrap();
    }
    let swapped = w.finish().unwrap().into_inner();

    let e = backup::inspect(&swapped).unwrap_err();
    assert!(
        matches!(
            e,
            backup::BackupError::UnsupportedKey(KeyError::RsaNotEnabled { .. })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(FEATURE), "{e}");
}

#[test]
fn zonectl_refuses_an_rsa_key_type_and_makes_no_zone() {
    let z = cli::Zone::new();
    let o = z.run(&[
        "init",
        "--zone",
        "Acme",
        "--first-server",
        cli::PS1,
        "--key",
        "rsa2048",
        "--now",
        "2027-01-01T00:00:00Z",
    ]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains(FEATURE), "{}", o.stderr);
    assert!(!z.path("zone.db").exists());
}
