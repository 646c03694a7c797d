//! The encrypted CA backup archive (BK1, BK2, S5) through the public API, at the real
//! iteration count, plus interoperability with python3's zipfile/hashlib and openssl.
//!
//! PBKDF2 at 600,000 iterations is slow in an unoptimised build (seconds per run), so the
//! archives are made once per test binary and every test that must reach the KDF does so once.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Cursor, Read, Write};
use std::sync::OnceLock;

use hmac::{KeyInit, Mac};
use proptest::prelude::*;
use sha2::Digest;
use zonepki::backup::{self, BackupError, Passphrase};
use zonepki::ca::{CaParams, Serial, self_signed_ca};
use zonepki::cert::Certificate;
use zonepki::clock::Timestamp;
use zonepki::key::{KeySpec, PrivateKey};

const PP: &str = "correct horse battery staple";

struct Fixture {
    cert: Certificate,
    key: PrivateKey,
    zip: Vec<u8>,
}

fn now() -> Timestamp {
    "2027-03-01T12:00:00Z".parse().unwrap()
}

fn pp() -> Passphrase {
    Passphrase::new(PP).unwrap()
}

fn new_ca(spec: KeySpec) -> (Certificate, PrivateKey) {
    let key = PrivateKey::generate(spec).unwrap();
    let params = CaParams {
        common_name: "Acme".into(),
        validity: 10.try_into().unwrap(),
    };
    let cert = self_signed_ca(&key, &params, &Serial::random().unwrap(), now()).unwrap();
    (cert, key)
}

fn fixture(spec: KeySpec) -> &'static Fixture {
    static P256: OnceLock<Fixture> = OnceLock::new();
    static RSA: OnceLock<Fixture> = OnceLock::new();
    let cell = match spec {
        KeySpec::P256 => &P256,
        KeySpec::Rsa2048 => &RSA,
        other => panic!("no fixture for {other}"),
    };
    cell.get_or_init(|| {
        let (cert, key) = new_ca(spec);
        let zip = backup::create(&cert, &key, &pp(), now()).unwrap();
        Fixture { cert, key, zip }
    })
}

/// The entries of an archive, read with the zip crate (not through the module under test).
fn entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

fn entry(zip: &[u8], name: &str) -> Vec<u8> {
    entries(zip)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

/// A well-formed zip of `files` (correct CRCs): what an attacker who can rewrite the
/// archive, but does not know the passphrase, can produce.
fn rezip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(*name, options).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// `fixture`'s entries with `name` replaced by `data` (or dropped when `None`).
fn with_entry(zip: &[u8], name: &str, data: Option<&[u8]>) -> Vec<u8> {
    let files = entries(zip);
    let kept: Vec<(&str, &[u8])> = files
        .iter()
        .filter_map(|(n, d)| {
            if n == name {
                data.map(|new| (n.as_str(), new))
            } else {
                Some((n.as_str(), d.as_slice()))
            }
        })
        .collect();
    rezip(&kept)
}

/// Renames an entry by rewriting its name bytes in place (local and central header), so
/// names the zip writer would refuse or clean up can be tested.
fn rename_raw(zip: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = zip.to_vec();
    let mut hits = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            hits += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert_eq!(hits, 2, "expected the name once in each header");
    out
}

fn mac_over(manifest: &[u8], passphrase: &str) -> Vec<u8> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let salt = unhex(m["mac_salt"].as_str().unwrap());
    let iterations = u32::try_from(m["kdf"]["iterations"].as_u64().unwrap()).unwrap();
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), &salt, iterations, &mut key);
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(manifest);
    let tag = mac.finalize().into_bytes();
    let mut hex = base16ct::lower::encode_string(&tag);
    hex.push('\n');
    hex.into_bytes()
}

fn unhex(s: &str) -> Vec<u8> {
    base16ct::lower::decode_vec(s).unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    base16ct::lower::encode_string(&sha2::Sha256::digest(data))
}

fn assert_same_ca(r: &backup::Restored, f: &Fixture) {
    assert_eq!(r.certificate, f.cert);
    assert_eq!(r.key.to_pkcs8_der(), f.key.to_pkcs8_der());
    assert_eq!(r.created_at, now());
    assert_eq!(r.zone_ca_sha256, f.cert.fingerprints().sha256.to_string());
}

fn round_trip(spec: KeySpec) {
    let f = fixture(spec);
    let info = backup::inspect(&f.zip).unwrap();
    assert_eq!(info.certificate, f.cert);
    assert_eq!(info.ca_subject, "CN=Acme");
    assert_eq!(info.ca_sha256, f.cert.fingerprints().sha256.to_string());
    assert_eq!(info.created_at, now());
    assert_eq!(info.kdf_iterations, backup::PBKDF2_ITERATIONS);
    assert_eq!(info.version, 1);

    let r = backup::open(&f.zip, &pp()).unwrap();
    assert_same_ca(&r, f);
    assert_eq!(r.key.algorithm(), spec.algorithm());
    let shown = format!("{r:?}");
    let pem = f.key.to_pkcs8_pem();
    let body = pem.lines().nth(1).unwrap();
    assert!(!shown.contains(body) && shown.contains("elided"), "{shown}");

    let names: Vec<String> = entries(&f.zip).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["manifest.json", "manifest.mac", "ca.pem", "ca-key.p8.pem"]
    );
}

#[test]
fn round_trip_p256() {
    round_trip(KeySpec::P256);
}

#[test]
#[cfg(feature = "rsa")]
fn round_trip_rsa2048() {
    round_trip(KeySpec::Rsa2048);
}

#[test]
fn passphrase_rules() {
    let short = Passphrase::new("123456789").unwrap_err();
    assert_eq!(short, BackupError::PassphraseTooShort { min: 10 });
    assert!(
        short.to_string().contains("at least 10 characters"),
        "{short}"
    );
    assert!(Passphrase::new("1234567890").is_ok());
    assert!(Passphrase::new(String::from("1234567890")).is_ok());
    assert!(Passphrase::new("").is_err());
    // Characters, not bytes: nine two-byte and nine four-byte characters are too short.
    assert!(Passphrase::new("ééééééééé").is_err());
    assert!(Passphrase::new("🔑🔑🔑🔑🔑🔑🔑🔑🔑").is_err());
    assert!(Passphrase::new("éééééééééé").is_ok());
    assert!(Passphrase::new("🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑").is_ok());
    assert_eq!(
        Passphrase::new("            ").unwrap_err(),
        BackupError::PassphraseBlank
    );
    assert_eq!(
        Passphrase::new(" \t\n          ").unwrap_err(),
        BackupError::PassphraseBlank
    );
    let shown = format!("{:?}", Passphrase::new("a very secret phrase").unwrap());
    assert!(!shown.contains("secret phrase"), "{shown}");
    assert_eq!(BackupError::PassphraseTooShort { min: 10 }, short);
}

#[test]
fn confirm_requires_the_same_passphrase_twice() {
    assert!(backup::confirm("correct horse", "correct horse").is_ok());
    assert_eq!(
        backup::confirm("correct horse", "correct h0rse").unwrap_err(),
        BackupError::PassphraseMismatch
    );
    assert_eq!(
        backup::confirm("short", "short").unwrap_err(),
        BackupError::PassphraseTooShort { min: 10 }
    );
    let e = backup::confirm("correct horse", "correct horsE").unwrap_err();
    assert!(!e.to_string().contains("correct"), "{e}");
}

#[test]
fn wrong_passphrase_is_refused_and_says_it_cannot_tell_tampering_apart() {
    let f = fixture(KeySpec::P256);
    let wrong = "correct horse battery stapler";
    let e = backup::open(&f.zip, &Passphrase::new(wrong).unwrap()).unwrap_err();
    assert_eq!(e, BackupError::WrongPassphrase);
    let msg = e.to_string();
    assert!(
        msg.contains("wrong passphrase, or the archive was altered"),
        "{msg}"
    );
    assert!(msg.contains("cannot be told apart"), "{msg}");
    assert!(!msg.contains(wrong) && !msg.contains(PP), "{msg}");
}

#[test]
fn a_flipped_byte_anywhere_is_an_error_never_a_different_ca() {
    let f = fixture(KeySpec::P256);
    let mut positions = 0;
    let mut errors = 0;
    for i in (0..f.zip.len()).step_by(97).chain([f.zip.len() - 1]) {
        let mut z = f.zip.clone();
        z[i] ^= 0xff;
        positions += 1;
        match backup::open(&z, &pp()) {
            Err(_) => errors += 1,
            // Zip metadata that nothing reads (versions, attributes) may change harmlessly;
            // what comes out must then be exactly what went in.
            Ok(r) => assert_same_ca(&r, f),
        }
        let _ = backup::inspect(&z);
    }
    assert!(
        errors * 10 >= positions * 9,
        "{errors} errors of {positions}"
    );
}

#[test]
fn an_altered_manifest_or_mac_fails_the_integrity_check() {
    let f = fixture(KeySpec::P256);
    let manifest = entry(&f.zip, "manifest.json");
    let altered = String::from_utf8(manifest)
        .unwrap()
        .replace("2027-03-01T12:00:00Z", "2020-03-01T12:00:00Z");
    let z = with_entry(&f.zip, "manifest.json", Some(altered.as_bytes()));
    // inspect has no passphrase: it sees a consistent archive (its result is a preview).
    assert!(backup::inspect(&z).is_ok());
    assert_eq!(
        backup::open(&z, &pp()).unwrap_err(),
        BackupError::WrongPassphrase
    );

    let mac = format!("{}\n", "ab".repeat(32));
    let z = with_entry(&f.zip, "manifest.mac", Some(mac.as_bytes()));
    assert_eq!(
        backup::open(&z, &pp()).unwrap_err(),
        BackupError::WrongPassphrase
    );
    let z = with_entry(&f.zip, "manifest.mac", Some(b"not hex\n"));
    assert!(matches!(
        backup::open(&z, &pp()).unwrap_err(),
        BackupError::Tampered { entry, .. } if entry == "manifest.mac"
    ));
}

#[test]
fn an_altered_entry_is_tampered_even_with_a_valid_zip_checksum() {
    let f = fixture(KeySpec::P256);
    let (other, _) = new_ca(KeySpec::P256);
    let z = with_entry(&f.zip, "ca.pem", Some(other.der().to_pem().as_bytes()));
    let tampered_cert =
        |e: BackupError| matches!(e, BackupError::Tampered { ref entry, .. } if entry == "ca.pem");
    assert!(tampered_cert(backup::inspect(&z).unwrap_err()));
    assert!(tampered_cert(backup::open(&z, &pp()).unwrap_err()));

    let mut key = entry(&f.zip, "ca-key.p8.pem");
    key[100] = if key[100] == b'A' { b'B' } else { b'A' };
    let z = with_entry(&f.zip, "ca-key.p8.pem", Some(&key));
    let e = backup::open(&z, &pp()).unwrap_err();
    assert!(
        matches!(e, BackupError::Tampered { ref entry, .. } if entry == "ca-key.p8.pem"),
        "{e:?}"
    );
    assert!(e.to_string().contains("damaged or was altered"), "{e}");
}

#[test]
fn truncated_archives_are_errors() {
    let f = fixture(KeySpec::P256);
    let n = f.zip.len();
    for len in [
        0,
        1,
        2,
        4,
        10,
        30,
        100,
        n / 3,
        n / 2,
        n - 100,
        n - 22,
        n - 1,
    ] {
        let e = backup::open(&f.zip[..len], &pp()).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::Truncated { .. }
                    | BackupError::NotAZip { .. }
                    | BackupError::DamagedZip { .. }
            ),
            "length {len}: {e:?}"
        );
        assert!(backup::inspect(&f.zip[..len]).is_err());
    }
    assert!(matches!(
        backup::open(&f.zip[..n / 2], &pp()).unwrap_err(),
        BackupError::Truncated { .. }
    ));
    assert!(matches!(
        backup::inspect(&[]).unwrap_err(),
        BackupError::NotAZip { .. }
    ));
    let e = backup::inspect(b"-----BEGIN CERTIFICATE-----\n").unwrap_err();
    assert!(matches!(e, BackupError::NotAZip { .. }), "{e:?}");
    assert!(e.to_string().contains("not a zonepki CA backup"), "{e}");
}

#[test]
fn data_before_the_archive_is_refused() {
    let f = fixture(KeySpec::P256);
    let mut z = vec![0x42; 100];
    z.extend_from_slice(&f.zip);
    let e = backup::inspect(&z).unwrap_err();
    assert!(matches!(e, BackupError::DamagedZip { .. }), "{e:?}");
}

#[test]
fn an_extra_entry_is_refused() {
    let f = fixture(KeySpec::P256);
    let mut files = entries(&f.zip);
    files.push(("notes.txt".into(), b"hello".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let z = rezip(&refs);
    let e = backup::open(&z, &pp()).unwrap_err();
    assert_eq!(
        e,
        BackupError::UnexpectedEntry {
            name: "\"notes.txt\"".into()
        }
    );
    assert!(backup::inspect(&z).is_err());
}

#[test]
fn path_entry_names_are_refused() {
    let f = fixture(KeySpec::P256);
    let files = entries(&f.zip);
    for path in [
        "../ca.pem",
        "..\\ca.pem",
        "/ca.pem",
        "/../../../../../../../../etc/ca.pem",
        "C:\\ca.pem",
    ] {
        let placeholder = format!("{}ca.pem", "z".repeat(path.len() - 6));
        let placeholder = placeholder.as_str();
        // Both in place of ca.pem and beside it.
        for keep_original in [false, true] {
            let mut refs: Vec<(&str, &[u8])> = files
                .iter()
                .filter(|(n, _)| keep_original || n != "ca.pem")
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect();
            let pem = entry(&f.zip, "ca.pem");
            refs.push((placeholder, &pem));
            let z = rename_raw(&rezip(&refs), placeholder.as_bytes(), path.as_bytes());
            let e = backup::open(&z, &pp()).unwrap_err();
            assert!(
                matches!(e, BackupError::UnsafeEntryName { .. }),
                "{path:?}: {e:?}"
            );
            assert!(matches!(
                backup::inspect(&z).unwrap_err(),
                BackupError::UnsafeEntryName { .. }
            ));
        }
    }
}

#[test]
fn a_duplicate_entry_is_refused() {
    let f = fixture(KeySpec::P256);
    let (other, _) = new_ca(KeySpec::P256);
    let other_pem = other.der().to_pem();
    let mut refs: Vec<(String, Vec<u8>)> = entries(&f.zip);
    refs.push(("cb.pem".into(), other_pem.into_bytes()));
    let refs: Vec<(&str, &[u8])> = refs
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let z = rename_raw(&rezip(&refs), b"cb.pem", b"ca.pem");
    let e = backup::open(&z, &pp()).unwrap_err();
    assert_eq!(
        e,
        BackupError::DuplicateEntry {
            name: "\"ca.pem\"".into()
        }
    );
}

#[test]
fn a_missing_entry_is_named() {
    let f = fixture(KeySpec::P256);
    for name in ["manifest.json", "manifest.mac", "ca.pem", "ca-key.p8.pem"] {
        let z = with_entry(&f.zip, name, None);
        let e = backup::open(&z, &pp()).unwrap_err();
        assert!(
            matches!(e, BackupError::MissingEntry { name: n } if n == name),
            "{name}: {e:?}"
        );
    }
}

#[test]
fn size_limits_hold_before_anything_is_decrypted() {
    let f = fixture(KeySpec::P256);
    let big = vec![0u8; backup::MAX_ARCHIVE_BYTES + 1];
    assert!(matches!(
        backup::inspect(&big).unwrap_err(),
        BackupError::TooLarge { .. }
    ));

    let names: Vec<String> = (0..9).map(|i| format!("f{i}")).collect();
    let refs: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let e = backup::open(&rezip(&refs), &pp()).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::TooLarge {
                size: 9,
                limit: 8,
                ..
            }
        ),
        "{e:?}"
    );

    let huge_pem = vec![b'A'; 70 * 1024];
    let z = with_entry(&f.zip, "ca.pem", Some(&huge_pem));
    let e = backup::open(&z, &pp()).unwrap_err();
    assert!(matches!(e, BackupError::TooLarge { .. }), "{e:?}");

    // A deflate bomb: 10 MiB of zeros in a few KiB.
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries(&f.zip) {
        w.start_file(name.as_str(), options).unwrap();
        if name == "ca.pem" {
            w.write_all(&vec![0u8; 10 << 20]).unwrap();
        } else {
            w.write_all(&data).unwrap();
        }
    }
    let z = w.finish().unwrap().into_inner();
    assert!(z.len() < 64 * 1024, "{}", z.len());
    let e = backup::open(&z, &pp()).unwrap_err();
    assert!(matches!(e, BackupError::TooLarge { .. }), "{e:?}");
}

#[test]
fn create_refuses_a_key_that_is_not_the_certificates() {
    let (cert, _) = new_ca(KeySpec::P256);
    let other = PrivateKey::generate(KeySpec::P256).unwrap();
    assert_eq!(
        backup::create(&cert, &other, &pp(), now()).unwrap_err(),
        BackupError::KeyMismatch
    );
}

/// A validly signed but inconsistent archive: the fixture's encrypted key under another CA's
/// certificate, with a manifest that describes exactly that and a correct MAC.
#[test]
fn a_validly_signed_archive_whose_key_is_not_the_certificates_is_refused() {
    let f = fixture(KeySpec::P256);
    let (other, _) = new_ca(KeySpec::P256);
    let other_pem = other.der().to_pem();
    let mut m: serde_json::Value = serde_json::from_slice(&entry(&f.zip, "manifest.json")).unwrap();
    m["entries"]["ca.pem"] = sha256_hex(other_pem.as_bytes()).into();
    m["ca_sha256"] = other.fingerprints().sha256.to_string().into();
    m["ca_subject"] = other.subject().into();
    let manifest = serde_json::to_vec_pretty(&m).unwrap();
    let mac = mac_over(&manifest, PP);
    let key = entry(&f.zip, "ca-key.p8.pem");
    let z = rezip(&[
        ("manifest.json", &manifest),
        ("manifest.mac", &mac),
        ("ca.pem", other_pem.as_bytes()),
        ("ca-key.p8.pem", &key),
    ]);
    assert_eq!(backup::inspect(&z).unwrap().certificate, other);
    let e = backup::open(&z, &pp()).unwrap_err();
    assert_eq!(e, BackupError::KeyMismatch);
    assert!(e.to_string().contains("does not belong"), "{e}");
}

/// BK1: never in clear. The clear PKCS#8 (DER, and each full PEM line whose bytes are not
/// also public, i.e. in the certificate) appears nowhere in the archive.
#[test]
fn the_archive_never_contains_the_key_in_clear() {
    for spec in [KeySpec::P256, KeySpec::Rsa2048] {
        if !spec.is_available() {
            continue; // RSA needs the `rsa` feature
        }
        let f = fixture(spec);
        let der = f.key.to_pkcs8_der();
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(
            !contains(&f.zip, &der),
            "{spec}: clear PKCS#8 DER in the archive"
        );
        let pem = f.key.to_pkcs8_pem();
        let mut checked = 0;
        for (i, line) in pem.lines().filter(|l| !l.starts_with("-----")).enumerate() {
            let chunk = der.get(i * 48..(i + 1) * 48);
            let public = chunk.is_none_or(|c| contains(f.cert.der().as_bytes(), c));
            if line.len() == 64 && !public {
                assert!(
                    !contains(&f.zip, line.as_bytes()),
                    "{spec}: PEM line {i} in clear"
                );
                checked += 1;
            }
        }
        assert!(checked >= 1, "{spec}");
        let key_entry = String::from_utf8(entry(&f.zip, "ca-key.p8.pem")).unwrap();
        assert!(key_entry.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        assert!(!key_entry.contains("BEGIN PRIVATE KEY"));
    }
}

/// S5: an independent zip reader and HMAC (python3) and openssl read the archive: the
/// documented format is the real one, and `openssl pkey` decrypts the key.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn python_and_openssl_read_the_archive() {
    let mut python = common::tool("python3");
    common::require("openssl");
    let f = fixture(KeySpec::P256);
    let dir = tempfile::tempdir().unwrap();
    let archive = common::write(dir.path(), "backup.zip", &f.zip);
    let script = r#"
import hashlib, hmac, json, os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.namelist() == ["manifest.json", "manifest.mac", "ca.pem", "ca-key.p8.pem"], z.namelist()
raw = z.read("manifest.json")
m = json.loads(raw)
assert m["format"] == "zonepki-ca-backup" and m["version"] == 1, m
assert m["kdf"]["alg"] == "pbkdf2-hmac-sha256" and m["kdf"]["iterations"] == 600000, m
for name, digest in m["entries"].items():
    assert hashlib.sha256(z.read(name)).hexdigest() == digest, name
key = hashlib.pbkdf2_hmac("sha256", os.environ["PP"].encode(), bytes.fromhex(m["mac_salt"]),
                          m["kdf"]["iterations"], 32)
tag = hmac.new(key, raw, hashlib.sha256).hexdigest() + "\n"
assert tag.encode() == z.read("manifest.mac"), "mac"
for name in ("ca.pem", "ca-key.p8.pem"):
    open(os.path.join(sys.argv[2], name), "wb").write(z.read(name))
print(m["ca_sha256"])
"#;
    let (ok, out) = common::run(
        python
            .arg("-c")
            .arg(script)
            .arg(&archive)
            .arg(dir.path())
            .env("PP", PP),
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), f.cert.fingerprints().sha256.to_string());

    let key_file = dir.path().join("ca-key.p8.pem");
    let cert_file = dir.path().join("ca.pem");
    let openssl = || common::tool("openssl");
    let (ok, from_key) = common::run(
        openssl()
            .args(["pkey", "-pubout", "-passin", &format!("pass:{PP}"), "-in"])
            .arg(&key_file),
    );
    assert!(ok, "{from_key}");
    let (ok, from_cert) = common::run(
        openssl()
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&cert_file),
    );
    assert!(ok, "{from_cert}");
    assert!(
        from_key.contains("-----BEGIN PUBLIC KEY-----"),
        "{from_key}"
    );
    assert_eq!(from_key, from_cert);
    let spki_pem = pem_rfc7468::encode_string(
        "PUBLIC KEY",
        pem_rfc7468::LineEnding::LF,
        &f.key.public_key_der(),
    )
    .unwrap();
    assert_eq!(from_key, spki_pem);

    let (ok, out) = common::run(
        openssl()
            .args([
                "pkey",
                "-pubout",
                "-passin",
                "pass:not the passphrase",
                "-in",
            ])
            .arg(&key_file),
    );
    assert!(!ok, "openssl accepted a wrong passphrase: {out}");

    let (ok, out) = common::run(openssl().args(["asn1parse", "-in"]).arg(&key_file));
    assert!(ok, "{out}");
    for expected in [
        "PBES2",
        "PBKDF2",
        "hmacWithSHA256",
        "aes-256-cbc",
        ":0927C0",
    ] {
        assert!(out.contains(expected), "{expected} missing from\n{out}");
    }
    let (ok, out) = common::run(
        openssl()
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert_file),
    );
    assert!(ok, "{out}");
    assert!(
        out.trim()
            .ends_with(&format!("={}", f.cert.fingerprints().sha256)),
        "{out}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random bytes are never a backup, and never a panic. (They never get past the zip
    /// structure, so no KDF runs.)
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(backup::inspect(&data).is_err());
        prop_assert!(backup::open(&data, &pp()).is_err());
    }

    /// Mutations of a valid archive never panic `inspect`, which needs no KDF.
    #[test]
    fn mutations_never_panic_inspect(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let f = fixture(KeySpec::P256);
        let mut z = f.zip.clone();
        for (at, value) in edits {
            let i = at % z.len();
            z[i] = value;
        }
        if let Some(c) = cut {
            z.truncate(c % (z.len() + 1));
        }
        if let Ok(info) = backup::inspect(&z) {
            prop_assert_eq!(info.certificate, f.cert.clone());
        }
    }
}

proptest! {
    // Few cases: a mutation that keeps the zip consistent costs two PBKDF2 runs.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Mutations of a valid archive never panic `open`, nor yield a different CA.
    #[test]
    fn mutations_never_change_what_open_returns(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let f = fixture(KeySpec::P256);
        let mut z = f.zip.clone();
        for (at, value) in edits {
            let i = at % z.len();
            z[i] = value;
        }
        if let Ok(r) = backup::open(&z, &pp()) {
            assert_same_ca(&r, f);
        }
    }
}
