//! Certificate bundle reading and writing (CE1): property tests over the committed fixtures,
//! and interoperability with the `openssl` and GnuTLS `certtool` command-line tools.
//!
//! Tests that need a tool fail when it is missing and env `CI` is set, and print a notice and
//! return otherwise (see `common::tool`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use zonepki::cert::bundle::{
    self, BundleError, BundleFormat, read_certificates, read_file, to_pem, to_pkcs7_der,
    to_pkcs7_pem,
};
use zonepki::cert::{Certificate, CertificateDer};

use common::{require, run};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bundle")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The five committed certificates: P-256 leaf, intermediate and root, P-384 root, RSA root.
fn fixture_certs() -> Vec<CertificateDer> {
    [
        "leaf-p256.pem",
        "int-p256.pem",
        "root-p256.pem",
        "root-p384.pem",
        "root-rsa.pem",
    ]
    .iter()
    .flat_map(|name| read_certificates(&fixture(name)).unwrap())
    .map(|c| c.der().clone())
    .collect()
}

fn ders(certs: &[Certificate]) -> Vec<CertificateDer> {
    certs.iter().map(|c| c.der().clone()).collect()
}

fn cns(certs: &[Certificate]) -> Vec<String> {
    certs
        .iter()
        .map(|c| c.common_name().unwrap_or_default())
        .collect()
}

/// Valid bundles of the fixtures in every format we write and openssl writes.
fn valid_bundles() -> Vec<Vec<u8>> {
    let certs = fixture_certs();
    vec![
        to_pem(&certs).into_bytes(),
        to_pkcs7_der(&certs),
        to_pkcs7_pem(&certs).into_bytes(),
        fixture("leaf-p256.der"),
        fixture("chain-p256-der.p7b"),
        fixture("chain-p256-pem.p7b"),
        fixture("chain-certtool.p7b"),
        fixture("chain-print-certs.pem"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any list of certificates survives every writer and the reader, in order (CE1).
    #[test]
    fn write_then_read_gives_the_same_list(picks in prop::collection::vec(0usize..5, 1..12)) {
        let all = fixture_certs();
        let certs: Vec<CertificateDer> = picks.iter().map(|&i| all[i].clone()).collect();
        let pem = to_pem(&certs);
        prop_assert_eq!(ders(&read_certificates(pem.as_bytes()).unwrap()), certs.clone());
        prop_assert_eq!(ders(&read_certificates(&to_pkcs7_der(&certs)).unwrap()), certs.clone());
        let p7pem = to_pkcs7_pem(&certs);
        prop_assert_eq!(ders(&read_certificates(p7pem.as_bytes()).unwrap()), certs.clone());
        if certs.len() == 1 {
            let der = certs[0].as_bytes();
            prop_assert_eq!(bundle::detect(der), Ok(BundleFormat::Der));
            prop_assert_eq!(ders(&read_certificates(der).unwrap()), certs.clone());
        }
    }

    /// Random bytes never panic, and errors always have a message.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = bundle::detect(&bytes);
        if let Err(e) = read_certificates(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Random bytes behind a plausible start (PEM armour or a DER header) never panic.
    #[test]
    fn random_bodies_never_panic(
        prefix in 0usize..4,
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let start: &[u8] = match prefix {
            0 => b"-----BEGIN CERTIFICATE-----\n",
            1 => b"-----BEGIN PKCS7-----\n",
            2 => &[0x30, 0x82, 0x01, 0x00, 0x30],
            _ => &[0x30, 0x82, 0x01, 0x00, 0x06, 0x09],
        };
        let input = [start, &bytes].concat();
        let _ = read_certificates(&input);
    }

    /// Truncations and bit flips of valid bundles never panic; what still reads is a list of
    /// valid certificates.
    #[test]
    fn truncations_and_bit_flips_never_panic(
        which in 0usize..8,
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
    ) {
        let mut input = valid_bundles()[which].clone();
        let truncated = &input[..cut.index(input.len() + 1)];
        let _ = read_certificates(truncated);
        for (at, bit) in &flips {
            let i = at.index(input.len());
            input[i] ^= 1 << bit;
        }
        if let Ok(certs) = read_certificates(&input) {
            for c in &certs {
                prop_assert!(Certificate::from_der(c.der().as_bytes()).is_ok());
            }
        }
    }
}

#[test]
fn errors_are_typed_for_the_committed_wrong_types() {
    assert!(matches!(
        read_certificates(&fixture("leaf.csr.pem")),
        Err(BundleError::UnexpectedPemLabel { .. })
    ));
    assert!(matches!(
        read_certificates(&fixture("root.crl.der")),
        Err(BundleError::NotCertificate { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Interoperability.

/// A root -> intermediate -> leaf chain (EC P-256) made by openssl in a temporary directory.
struct OpensslPki {
    dir: tempfile::TempDir,
}

const CNS: [&str; 3] = [
    "zonepki-interop-leaf",
    "zonepki-interop-int",
    "zonepki-interop-root",
];

impl OpensslPki {
    fn generate() -> Self {
        require("openssl");
        let dir = tempfile::tempdir().unwrap();
        let pki = OpensslPki { dir };
        for name in ["root", "int", "leaf"] {
            pki.openssl(&format!(
                "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {name}.key"
            ));
        }
        pki.write(
            "ca.ext",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n",
        );
        pki.write(
            "leaf.ext",
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:leaf.example\n",
        );
        pki.openssl(
            "req -x509 -new -key root.key -sha256 -days 3650 -subj /CN=zonepki-interop-root \
             -addext basicConstraints=critical,CA:TRUE -out root.pem",
        );
        for (name, issuer, ext) in [("int", "root", "ca.ext"), ("leaf", "int", "leaf.ext")] {
            pki.openssl(&format!(
                "req -new -key {name}.key -subj /CN=zonepki-interop-{name} -out {name}.csr"
            ));
            pki.openssl(&format!(
                "x509 -req -in {name}.csr -CA {issuer}.pem -CAkey {issuer}.key -set_serial 7 \
                 -days 3650 -sha256 -extfile {ext} -out {name}.pem"
            ));
        }
        let chain = [
            pki.read("leaf.pem"),
            pki.read("int.pem"),
            pki.read("root.pem"),
        ]
        .concat();
        pki.write("chain.pem", chain);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        std::fs::write(self.path(name), data).unwrap();
        self.path(name)
    }

    /// Runs openssl in the directory with whitespace-separated `args`; panics with its output
    /// on failure.
    fn openssl(&self, args: &str) -> String {
        let mut cmd = Command::new("openssl");
        cmd.args(args.split_whitespace())
            .current_dir(self.dir.path());
        let (ok, out) = run(&mut cmd);
        assert!(ok, "openssl {args:?} failed:\n{out}");
        out
    }

    /// The chain as our reader sees it: leaf, intermediate, root.
    fn chain(&self) -> Vec<Certificate> {
        let certs = read_certificates(&self.read("chain.pem")).unwrap();
        assert_eq!(cns(&certs), CNS);
        certs
    }
}

/// Runs certtool in `dir` with whitespace-separated `args`; panics with its output on failure.
fn certtool(dir: &Path, args: &str) -> String {
    let mut cmd = Command::new("certtool");
    cmd.args(args.split_whitespace()).current_dir(dir);
    let (ok, out) = run(&mut cmd);
    assert!(ok, "certtool {args:?} failed:\n{out}");
    out
}

fn sorted(mut v: Vec<CertificateDer>) -> Vec<CertificateDer> {
    v.sort();
    v
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn reads_what_openssl_writes() {
    let pki = OpensslPki::generate();
    let chain = ders(&pki.chain());
    pki.openssl("x509 -in leaf.pem -outform DER -out leaf.der");
    assert_eq!(ders(&read_file(&pki.path("leaf.der")).unwrap()), chain[..1]);
    pki.openssl("crl2pkcs7 -nocrl -certfile chain.pem -out pem.p7b");
    pki.openssl("crl2pkcs7 -nocrl -certfile chain.pem -outform DER -out der.p7b");
    assert!(pki.read("pem.p7b").starts_with(b"-----BEGIN PKCS7-----"));
    assert_eq!(
        bundle::detect(&pki.read("der.p7b")),
        Ok(BundleFormat::Pkcs7Der)
    );
    assert_eq!(ders(&read_file(&pki.path("pem.p7b")).unwrap()), chain);
    assert_eq!(ders(&read_file(&pki.path("der.p7b")).unwrap()), chain);
    // `-print_certs` puts subject=/issuer= lines before each block.
    let printed = pki.openssl("pkcs7 -in pem.p7b -print_certs");
    assert!(printed.contains("subject="), "{printed}");
    assert_eq!(ders(&read_certificates(printed.as_bytes()).unwrap()), chain);
    // openssl's certs-only PKCS#7 and ours are the same bytes.
    assert_eq!(to_pkcs7_der(&chain), pki.read("der.p7b"));
}

#[cfg_attr(
    not(all(zonepki_has_certtool, zonepki_has_openssl)),
    ignore = "needs certtool and openssl on PATH; .ci/run installs them"
)]
#[test]
fn reads_what_certtool_writes() {
    let pki = OpensslPki::generate();
    require("certtool");
    let chain = ders(&pki.chain());
    let dir = pki.dir.path();
    certtool(
        dir,
        "--p7-generate --load-certificate chain.pem --outfile gt.p7b",
    );
    certtool(
        dir,
        "--p7-generate --load-certificate chain.pem --outder --outfile gtd.p7b",
    );
    assert_eq!(bundle::detect(&pki.read("gt.p7b")), Ok(BundleFormat::Pem));
    assert_eq!(
        bundle::detect(&pki.read("gtd.p7b")),
        Ok(BundleFormat::Pkcs7Der)
    );
    // GnuTLS writes the certificates as a sorted DER SET OF: same set, its own order.
    for file in ["gt.p7b", "gtd.p7b"] {
        let got = ders(&read_file(&pki.path(file)).unwrap());
        assert_eq!(sorted(got), sorted(chain.clone()), "{file}");
    }
}

/// CE1: the name never decides; every extension with every kind of content reads.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn mismatched_extensions_still_read() {
    let pki = OpensslPki::generate();
    let chain = ders(&pki.chain());
    pki.openssl("x509 -in leaf.pem -outform DER -out leaf.der");
    pki.openssl("crl2pkcs7 -nocrl -certfile chain.pem -out pem.p7b");
    pki.openssl("crl2pkcs7 -nocrl -certfile chain.pem -outform DER -out der.p7b");
    let contents = [
        ("chain.pem", chain.clone()),
        ("leaf.der", chain[..1].to_vec()),
        ("pem.p7b", chain.clone()),
        ("der.p7b", chain.clone()),
    ];
    for ext in ["der", "cer", "crt", "p7b", "pem", "cert"] {
        for (source, want) in &contents {
            let path = pki.write(&format!("upload-{source}.{ext}"), pki.read(source));
            let got = read_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(&ders(&got), want, "{source} as .{ext}");
        }
    }
}

/// The subjects `openssl pkcs7 -print_certs` prints, with spaces around `=` removed (the
/// spacing differs between OpenSSL versions).
fn printed_subjects(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("subject="))
        .map(|s| s.replace(" = ", "=").trim().to_string())
        .collect()
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_accepts_what_we_write() {
    let pki = OpensslPki::generate();
    let chain = ders(&pki.chain());
    let want: Vec<String> = CNS.iter().map(|cn| format!("CN={cn}")).collect();
    pki.write("ours-der.p7b", to_pkcs7_der(&chain));
    pki.write("ours-pem.p7b", to_pkcs7_pem(&chain));
    for (file, form) in [("ours-der.p7b", "DER"), ("ours-pem.p7b", "PEM")] {
        let out = pki.openssl(&format!(
            "pkcs7 -print_certs -noout -inform {form} -in {file}"
        ));
        assert_eq!(printed_subjects(&out), want, "{file}:\n{out}");
    }
    // Our PEM chain verifies with openssl.
    pki.write("ours-leaf.pem", to_pem(&chain[..1]));
    pki.write("ours-int.pem", to_pem(&chain[1..2]));
    pki.write("ours-root.pem", to_pem(&chain[2..]));
    let out = pki.openssl("verify -CAfile ours-root.pem -untrusted ours-int.pem ours-leaf.pem");
    assert!(out.contains("OK"), "{out}");
}

#[cfg_attr(
    not(all(zonepki_has_certtool, zonepki_has_openssl)),
    ignore = "needs certtool and openssl on PATH; .ci/run installs them"
)]
#[test]
fn certtool_accepts_what_we_write() {
    let pki = OpensslPki::generate();
    require("certtool");
    let chain = ders(&pki.chain());
    let dir = pki.dir.path();
    pki.write("ours-der.p7b", to_pkcs7_der(&chain));
    pki.write("ours-pem.p7b", to_pkcs7_pem(&chain));
    for (file, inder) in [("ours-der.p7b", true), ("ours-pem.p7b", false)] {
        let inder = if inder { "--inder" } else { "" };
        let out = certtool(dir, &format!("--p7-info --infile {file} {inder}"));
        assert!(out.contains("Number of certificates: 3"), "{file}:\n{out}");
        // certtool prints the certificates it found as PEM (then the structure itself as a
        // PKCS7 block, cut off here): they are ours, in our order.
        let listed = out
            .split("-----BEGIN PKCS7-----")
            .next()
            .unwrap_or_default();
        let got = ders(&read_certificates(listed.as_bytes()).unwrap());
        assert_eq!(got, chain, "{file}:\n{out}");
    }
}
