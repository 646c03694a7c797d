//! Interop with real external CAs (issue #4 item 7; CE1-CE4, SR3, SR5, B1): an external root
//! and intermediate made with the `openssl` CLI, another made with GnuTLS `certtool`, each
//! signing the CSRs the crate exported (from the CSR zip, extracted with Python's `zipfile`,
//! or from `csrs()`); imports as PEM chains, DER leaves, and `.p7b` files made by both tools;
//! the zone chain uploaded as PEM, DER (root only) and `.p7b`; a certificate from an unrelated
//! CA refused in the manual's words with the store unchanged; after activation every server's
//! `current/cert.pem` verified by `openssl verify` and `certtool --verify`; and an external
//! Server Remint (SR3) signed by the openssl CA.
//!
//! The tools are real: `.ci/run` installs them, and under CI (env `CI` set) a missing one
//! fails the test instead of skipping it (`common::tool`).
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use zonepki::cert::{Certificate, CertificateDer, bundle};
use zonepki::clock::{Clock, ManualClock, Timestamp};
use zonepki::csr::CsrDer;
use zonepki::key::KeySpec;
use zonepki::ops::{ActivationRequest, CsrFields, CsrMode, OpError, OpKind};
use zonepki::service::{
    ChangeCaRequest, ChangeCaTarget, InitInternal, NewServer, OpView, ServerRemintRequest,
    ZoneService,
};
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::zone::{Fqdn, ServerRole};

const PS1: &str = "ps1.acme.example";
const PS2: &str = "ps2.acme.example";
const SAT: &str = "sat.acme.example";
const SERVERS: [&str; 3] = [PS1, PS2, SAT];
const DAY: Duration = Duration::from_secs(86_400);
/// CE3: the manual's refusal, word for word.
const REFUSAL: &str = "CA certificate subject from the CA Certificate chain does not match server certificate \
     issuer.";

type Svc = ZoneService<MemoryStore, LoopbackTransport, &'static ManualClock>;

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

/// Fails the test, naming the tool, unless every tool these tests drive is installed.
fn require_tools() {
    for t in ["openssl", "certtool", "python3"] {
        common::require(t);
    }
}

/// Runs a command (stdin closed, so nothing can wait for a prompt) and returns its output;
/// fails the test with that output when the command fails.
fn sh(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null());
    let (ok, out) = common::run(cmd);
    assert!(ok, "{cmd:?} failed:\n{out}");
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The real time, whole seconds: the external tools stamp their certificates with it.
fn real_now() -> Timestamp {
    Timestamp::from_unix(Timestamp::now_utc().unix()).unwrap()
}

/// Moves the zone's clock up to the real time (never back), so that what the tools just made
/// is already valid for the crate.
fn catch_up(clock: &ManualClock) {
    let now = real_now();
    if clock.now() < now {
        clock.set(now);
    }
}

/// A zone with an internal CA on ps1, a second Primary Server, an Authentication Satellite of
/// it and two devices; member files live under `fleet`. The clock starts a day in the past.
fn zone(fleet: &Path) -> (Svc, &'static ManualClock) {
    let clock: &'static ManualClock = Box::leak(Box::new(ManualClock::new(real_now().minus(DAY))));
    let svc = ZoneService::new(
        MemoryStore::new(),
        LoopbackTransport::with_root(fleet),
        clock,
    );
    svc.init_internal(
        InitInternal::new("Acme", NewServer::new(fq(PS1), ServerRole::Primary))
            .with_ca_key(KeySpec::P256)
            .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
    svc.add_server(NewServer::new(fq(PS2), ServerRole::Primary))
        .unwrap();
    let mut sat = NewServer::new(fq(SAT), ServerRole::AuthSatellite);
    sat.parent = Some(fq(PS2));
    svc.add_server(sat).unwrap();
    svc.add_devices(&["dev-1".into(), "dev-2".into()], "1")
        .unwrap();
    svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
        .unwrap();
    (svc, clock)
}

fn drive(svc: &Svc) -> OpView {
    for _ in 0..3 {
        svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
            .unwrap();
    }
    svc.op_show().unwrap()
}

fn fields() -> CsrFields {
    CsrFields::default()
        .with_organization("Acme")
        .with_organizational_unit("PKI")
        .with_locality("Springfield")
        .with_state("Oregon")
        .with_country("US")
}

fn auto() -> CsrMode {
    CsrMode::Auto {
        fields: fields(),
        key: KeySpec::P256,
    }
}

fn change_to_external(svc: &Svc, chain: Vec<u8>, activation: Timestamp) -> OpView {
    svc.start_change_ca(
        ChangeCaRequest::new(
            ChangeCaTarget::External { chain, csr: auto() },
            ActivationRequest::At(activation),
        )
        .with_update_name("To the external CA"),
    )
    .unwrap()
}

fn statuses(v: &OpView) -> Vec<(String, String)> {
    v.servers
        .iter()
        .map(|s| (s.fqdn.clone(), s.certificate_status.to_string()))
        .collect()
}

fn all_servers(v: &OpView, status: &str) -> bool {
    v.servers.len() == SERVERS.len() && v.servers.iter().all(|s| s.certificate_status == status)
}

/// The member's `current/cert.pem`.
fn current_cert(fleet: &Path, member: &str) -> PathBuf {
    fleet.join(member).join("current").join("cert.pem")
}

/// A certificate file's DER (PEM or DER input), via the crate's reader.
fn der_of(path: &Path) -> CertificateDer {
    let certs = bundle::read_file(path).unwrap();
    certs[0].der().clone()
}

fn cat(out: &Path, parts: &[&Path]) -> PathBuf {
    let mut all = Vec::new();
    for p in parts {
        all.extend(std::fs::read(p).unwrap());
    }
    std::fs::write(out, all).unwrap();
    out.to_path_buf()
}

/// `openssl x509 -outform DER` of a PEM certificate.
fn openssl_der(pem: &Path) -> Vec<u8> {
    let out = pem.with_extension("der");
    sh(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem)
        .arg("-out")
        .arg(&out));
    std::fs::read(out).unwrap()
}

/// `openssl crl2pkcs7 -nocrl -certfile ...` (PEM, or `-outform DER`).
fn openssl_p7b(out: &Path, certs: &[&Path], der: bool) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    cmd.args(["crl2pkcs7", "-nocrl"]);
    for c in certs {
        cmd.arg("-certfile").arg(c);
    }
    if der {
        cmd.args(["-outform", "DER"]);
    }
    sh(cmd.arg("-out").arg(out));
    let bytes = std::fs::read(out).unwrap();
    assert_eq!(bytes.starts_with(b"-----BEGIN PKCS7-----"), !der);
    bytes
}

/// `certtool --p7-generate` (PEM, or `--outder`).
fn certtool_p7b(out: &Path, certs: &[&Path], der: bool) -> Vec<u8> {
    let input = cat(&out.with_extension("in.pem"), certs);
    let mut cmd = Command::new("certtool");
    cmd.arg("--p7-generate")
        .arg("--load-certificate")
        .arg(&input);
    if der {
        cmd.arg("--outder");
    }
    sh(cmd.arg("--outfile").arg(out));
    let bytes = std::fs::read(out).unwrap();
    assert_eq!(bytes.starts_with(b"-----BEGIN PKCS7-----"), !der);
    bytes
}

/// `openssl verify -x509_strict -purpose sslserver`; requires "<file>: OK".
fn openssl_verify(ca_file: &Path, untrusted: Option<&Path>, cert: &Path, host: &str) {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-purpose", "sslserver"])
        .args(["-verify_hostname", host])
        .arg("-CAfile")
        .arg(ca_file);
    if let Some(u) = untrusted {
        cmd.arg("-untrusted").arg(u);
    }
    let (ok, out) = common::run(cmd.arg(cert).stdin(Stdio::null()));
    assert!(
        ok && out.contains(&format!("{}: OK", path_str(cert))),
        "openssl verify of {}:\n{out}",
        cert.display()
    );
}

/// `certtool --verify`; requires "Chain verification output: Verified."
fn certtool_verify(root: &Path, chain: &Path, host: &str) {
    let (ok, out) = common::run(
        Command::new("certtool")
            .arg("--verify")
            .arg("--load-ca-certificate")
            .arg(root)
            .arg("--infile")
            .arg(chain)
            .args(["--verify-hostname", host])
            .args(["--verify-purpose", "1.3.6.1.5.5.7.3.1"])
            .stdin(Stdio::null()),
    );
    assert!(
        ok && out.contains("Chain verification output: Verified."),
        "certtool --verify of {}:\n{out}",
        chain.display()
    );
}

/// Checks a CSR the crate made with `openssl req -verify`, and its subject (CE2).
fn check_csr(csr: &Path, cn: &str) {
    let out = sh(Command::new("openssl")
        .args(["req", "-noout", "-verify", "-subject", "-in"])
        .arg(csr));
    assert!(out.contains("verify OK"), "{out}");
    for part in [
        "C = US",
        "ST = Oregon",
        "L = Springfield",
        "O = Acme",
        "OU = PKI",
        &format!("CN = {cn}"),
    ] {
        assert!(
            out.contains(part),
            "{part} missing from the CSR subject: {out}"
        );
    }
}

fn write_csr(dir: &Path, fqdn: &Fqdn, csr: &CsrDer, tag: &str) -> PathBuf {
    let p = dir.join(format!("{fqdn}.{tag}.csr"));
    std::fs::write(&p, csr.to_pem()).unwrap();
    p
}

/// What made an external CA.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Openssl,
    Gnutls,
}

/// An external CA made with a real tool: a root and, optionally, an intermediate that issues.
struct ExtCa {
    tool: Tool,
    dir: PathBuf,
    tag: String,
    root: PathBuf,
    int: Option<PathBuf>,
    /// The issuing CA's key (the intermediate's, else the root's).
    key: PathBuf,
    issued: Cell<u32>,
}

impl ExtCa {
    /// Root: `openssl req -x509 -newkey ec` (P-256); intermediate: `openssl req -new` +
    /// `openssl x509 -req -CA root -extfile` with CA:TRUE, keyCertSign and SKI/AKI.
    fn openssl(dir: &Path, tag: &str, root_cn: &str, int_cn: Option<&str>) -> Self {
        let f = |n: &str| dir.join(format!("{tag}-{n}"));
        let (root, root_key) = (f("root.pem"), f("root.key"));
        sh(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .arg("-keyout")
            .arg(&root_key)
            .arg("-out")
            .arg(&root)
            .args(["-subj", &format!("/CN={root_cn}"), "-days", "3650"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        let (int, key) = match int_cn {
            None => (None, root_key),
            Some(cn) => {
                let (int, int_key, csr, ext) =
                    (f("int.pem"), f("int.key"), f("int.csr"), f("int.ext"));
                sh(Command::new("openssl")
                    .args(["req", "-new", "-newkey", "ec"])
                    .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
                    .arg("-keyout")
                    .arg(&int_key)
                    .arg("-out")
                    .arg(&csr)
                    .args(["-subj", &format!("/CN={cn}")]));
                std::fs::write(
                    &ext,
                    "basicConstraints=critical,CA:TRUE,pathlen:0\n\
                     keyUsage=critical,keyCertSign,cRLSign\n\
                     subjectKeyIdentifier=hash\n\
                     authorityKeyIdentifier=keyid:always\n",
                )
                .unwrap();
                sh(Command::new("openssl")
                    .args(["x509", "-req", "-in"])
                    .arg(&csr)
                    .arg("-CA")
                    .arg(&root)
                    .arg("-CAkey")
                    .arg(&root_key)
                    .args(["-CAcreateserial", "-days", "3000", "-extfile"])
                    .arg(&ext)
                    .arg("-out")
                    .arg(&int));
                (Some(int), int_key)
            }
        };
        ExtCa {
            tool: Tool::Openssl,
            dir: dir.to_path_buf(),
            tag: tag.into(),
            root,
            int,
            key,
            issued: Cell::new(0),
        }
    }

    /// `certtool --generate-privkey --key-type ecdsa`, `--generate-self-signed` with a
    /// template (`ca`, `cert_signing_key`, `cn`, `expiration_days = 3650`), the intermediate
    /// with `--generate-certificate --load-ca-certificate --load-ca-privkey`.
    fn gnutls(dir: &Path, tag: &str, root_cn: &str, int_cn: Option<&str>) -> Self {
        let f = |n: &str| dir.join(format!("{tag}-{n}"));
        let privkey = |out: &Path| {
            sh(Command::new("certtool")
                .args(["--generate-privkey", "--key-type", "ecdsa", "--outfile"])
                .arg(out));
        };
        let template = |out: &Path, cn: &str, days: u32| {
            std::fs::write(
                out,
                format!(
                    "cn = \"{cn}\"\nca\ncert_signing_key\ncrl_signing_key\n\
                     expiration_days = {days}\n"
                ),
            )
            .unwrap();
        };
        let (root, root_key, root_t) = (f("root.pem"), f("root.key"), f("root.tmpl"));
        privkey(&root_key);
        template(&root_t, root_cn, 3650);
        sh(Command::new("certtool")
            .arg("--generate-self-signed")
            .arg("--load-privkey")
            .arg(&root_key)
            .arg("--template")
            .arg(&root_t)
            .arg("--outfile")
            .arg(&root));
        let (int, key) = match int_cn {
            None => (None, root_key),
            Some(cn) => {
                let (int, int_key, int_t) = (f("int.pem"), f("int.key"), f("int.tmpl"));
                privkey(&int_key);
                template(&int_t, cn, 3000);
                sh(Command::new("certtool")
                    .arg("--generate-certificate")
                    .arg("--load-privkey")
                    .arg(&int_key)
                    .arg("--load-ca-certificate")
                    .arg(&root)
                    .arg("--load-ca-privkey")
                    .arg(&root_key)
                    .arg("--template")
                    .arg(&int_t)
                    .arg("--outfile")
                    .arg(&int));
                (Some(int), int_key)
            }
        };
        ExtCa {
            tool: Tool::Gnutls,
            dir: dir.to_path_buf(),
            tag: tag.into(),
            root,
            int,
            key,
            issued: Cell::new(0),
        }
    }

    /// The certificate that signs server certificates.
    fn issuer(&self) -> &Path {
        self.int.as_deref().unwrap_or(&self.root)
    }

    fn int(&self) -> &Path {
        self.int.as_deref().unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        let n = self.issued.get() + 1;
        self.issued.set(n);
        self.dir.join(format!("{}-{n}-{name}", self.tag))
    }

    /// Signs a CSR for `fqdn` as a TLS server and client certificate valid for `days`;
    /// returns the leaf's PEM file.
    fn sign(&self, csr: &Path, fqdn: &str, days: u32) -> PathBuf {
        let leaf = self.file(&format!("{fqdn}.pem"));
        match self.tool {
            Tool::Openssl => {
                let ext = self.file("leaf.ext");
                std::fs::write(
                    &ext,
                    format!(
                        "basicConstraints=critical,CA:FALSE\n\
                         keyUsage=critical,digitalSignature\n\
                         extendedKeyUsage=serverAuth,clientAuth\n\
                         subjectAltName=DNS:{fqdn}\n\
                         subjectKeyIdentifier=hash\n\
                         authorityKeyIdentifier=keyid:always\n"
                    ),
                )
                .unwrap();
                sh(Command::new("openssl")
                    .args(["x509", "-req", "-in"])
                    .arg(csr)
                    .arg("-CA")
                    .arg(self.issuer())
                    .arg("-CAkey")
                    .arg(&self.key)
                    .args(["-CAcreateserial", "-days", &days.to_string(), "-extfile"])
                    .arg(&ext)
                    .arg("-out")
                    .arg(&leaf));
            }
            Tool::Gnutls => {
                let t = self.file("leaf.tmpl");
                std::fs::write(
                    &t,
                    format!(
                        "dns_name = \"{fqdn}\"\ntls_www_server\ntls_www_client\nsigning_key\n\
                         expiration_days = {days}\n"
                    ),
                )
                .unwrap();
                sh(Command::new("certtool")
                    .arg("--generate-certificate")
                    .arg("--load-request")
                    .arg(csr)
                    .arg("--load-ca-certificate")
                    .arg(self.issuer())
                    .arg("--load-ca-privkey")
                    .arg(&self.key)
                    .arg("--template")
                    .arg(&t)
                    .arg("--outfile")
                    .arg(&leaf));
            }
        }
        leaf
    }

    /// Checks the path the crate returned for an import of `leaf`: the leaf, the
    /// intermediate, and at the end the root, or the bridge (B1) that stands in for it: a
    /// certificate with the root's subject and key, issued by `old_ca`.
    fn check_path(&self, got: &[CertificateDer], leaf: &Path, old_ca: Option<&Path>) {
        let mut head = vec![der_of(leaf)];
        if let Some(int) = &self.int {
            head.push(der_of(int));
        }
        assert_eq!(got.len(), head.len() + 1, "{got:?}");
        assert_eq!(&got[..head.len()], &head[..]);
        let last = got.last().unwrap();
        let root_der = der_of(&self.root);
        if last != &root_der {
            let (root, last) = (
                Certificate::try_from(&root_der).unwrap(),
                Certificate::try_from(last).unwrap(),
            );
            let old_ca = old_ca.expect("the path ends with the root");
            let old = Certificate::try_from(&der_of(old_ca)).unwrap();
            assert_eq!(last.subject(), root.subject(), "a bridge for the root");
            assert_eq!(
                last.public_key(),
                root.public_key(),
                "a bridge for the root"
            );
            assert_eq!(
                last.issuer(),
                old.subject(),
                "the bridge is from the old CA"
            );
        }
    }
}

/// CE3: every import of `bytes` for `fqdn` is refused in the manual's words, and the store
/// is exactly as before.
fn assert_refused(svc: &Svc, fqdn: &str, bytes: &[u8], what: &str) {
    let before = svc.dump().unwrap();
    let e = svc.import_certificate(&fq(fqdn), bytes).unwrap_err();
    assert!(e.to_string().contains(REFUSAL), "{what}: {e}");
    assert_eq!(
        svc.dump().unwrap(),
        before,
        "{what}: the refusal changed the store"
    );
}

/// After activation: every Primary Server's and Authentication Satellite's
/// `current/cert.pem` verifies with both tools under the external root.
fn verify_fleet(fleet: &Path, ca: &ExtCa) {
    for s in SERVERS {
        let cert = current_cert(fleet, s);
        openssl_verify(&ca.root, ca.int.as_deref(), &cert, s);
        certtool_verify(&ca.root, &cert, s);
    }
}

#[cfg_attr(
    not(all(zonepki_has_certtool, zonepki_has_openssl)),
    ignore = "needs certtool and openssl on PATH; .ci/run installs them"
)]
#[test]
fn openssl_ca_change_ca_imports_refusals_bridge_and_external_server_remint() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let (fleet, work) = (tmp.path().join("fleet"), tmp.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    let (svc, clock) = zone(&fleet);
    let old_ca = work.join("old-internal-ca.pem");
    std::fs::write(&old_ca, svc.ca_certificate().unwrap().der().to_pem()).unwrap();

    let ext = ExtCa::openssl(&work, "ossl", "OpenSSL Root", Some("OpenSSL Issuing CA"));
    // A third openssl root, unrelated to the zone, and an impostor intermediate that carries
    // the real intermediate's name under another root.
    let unrelated = ExtCa::openssl(&work, "unrel", "Unrelated Root", None);
    let impostor = ExtCa::openssl(&work, "imp", "Impostor Root", Some("OpenSSL Issuing CA"));

    // CE1: the complete chain, intermediate then root, as PEM.
    catch_up(clock);
    let activation = clock.now().plus(DAY * 10);
    let upload = cat(&work.join("upload.pem"), &[ext.int(), &ext.root]);
    let v = change_to_external(&svc, std::fs::read(&upload).unwrap(), activation);
    assert_eq!(v.kind, "change_ca_external");
    let op = svc.op().unwrap().unwrap();
    let OpKind::ChangeCa {
        future_ca,
        intermediates,
        cross_certificate,
        ..
    } = &op.kind
    else {
        panic!("{:?}", op.kind)
    };
    assert_eq!(
        future_ca,
        &der_of(&ext.root),
        "CE1: the root is the future CA"
    );
    assert_eq!(intermediates, &vec![der_of(ext.int())]);
    let bridge = cross_certificate
        .clone()
        .expect("B1: a bridge from the internal CA");
    let v = drive(&svc);
    assert!(all_servers(&v, "CSR generated"), "{:?}", statuses(&v));

    // SR5: the CSRs as one zip, extracted by Python's zipfile, each checked by openssl.
    let zip = work.join("csrs.zip");
    std::fs::write(&zip, svc.csr_zip(&[]).unwrap()).unwrap();
    let csr_dir = work.join("csrs");
    sh(Command::new("python3")
        .arg("-c")
        .arg("import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])")
        .arg(&zip)
        .arg(&csr_dir));
    let mut names: Vec<String> = std::fs::read_dir(&csr_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        SERVERS
            .iter()
            .map(|s| format!("{s}.csr"))
            .collect::<Vec<_>>()
    );
    let csr = |s: &str| csr_dir.join(format!("{s}.csr"));
    for s in SERVERS {
        check_csr(&csr(s), s);
    }

    // CE3: certificates from elsewhere are refused in the manual's words, the store untouched.
    let stray = unrelated.sign(&csr(PS1), PS1, 365);
    let fake = impostor.sign(&csr(PS1), PS1, 365);
    catch_up(clock);
    let stray_chain = cat(&work.join("stray-chain.pem"), &[&stray, &unrelated.root]);
    assert_refused(
        &svc,
        PS1,
        &std::fs::read(&stray_chain).unwrap(),
        "a leaf of an unrelated openssl root, with that root",
    );
    assert_refused(
        &svc,
        PS1,
        &openssl_der(&stray),
        "a leaf of an unrelated openssl root, alone (DER)",
    );
    assert_refused(
        &svc,
        PS1,
        &openssl_der(&fake),
        "a leaf of an impostor with the intermediate's name, alone (DER)",
    );
    assert_refused(
        &svc,
        PS1,
        &openssl_p7b(&work.join("fake.p7b"), &[&fake, impostor.int()], false),
        "a leaf and an impostor intermediate, .p7b",
    );

    // Imports: ps1's certificate in every container, each giving the same validated path.
    let ps1 = ext.sign(&csr(PS1), PS1, 365);
    let ps1_chain = cat(&work.join("ps1-chain.pem"), &[&ps1, ext.int()]);
    let forms: Vec<(&str, Vec<u8>)> = vec![
        (
            "PEM chain leaf+intermediate",
            std::fs::read(&ps1_chain).unwrap(),
        ),
        (
            "openssl crl2pkcs7 PEM",
            openssl_p7b(&work.join("ps1-ossl.p7b"), &[&ps1, ext.int()], false),
        ),
        (
            "openssl crl2pkcs7 -outform DER",
            openssl_p7b(&work.join("ps1-ossl-der.p7b"), &[&ps1, ext.int()], true),
        ),
        (
            "certtool --p7-generate PEM",
            certtool_p7b(&work.join("ps1-gnutls.p7b"), &[&ps1, ext.int()], false),
        ),
        (
            "certtool --p7-generate --outder",
            certtool_p7b(&work.join("ps1-gnutls-der.p7b"), &[&ps1, ext.int()], true),
        ),
    ];
    // A DER leaf alone for ps2; sat's certificate is short-lived, for the remint below.
    let ps2 = ext.sign(&csr(PS2), PS2, 365);
    let sat = ext.sign(&csr(SAT), SAT, 60);
    catch_up(clock);
    let mut paths = Vec::new();
    for (what, bytes) in &forms {
        let got = svc
            .import_certificate(&fq(PS1), bytes)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        ext.check_path(&got, &ps1, Some(&old_ca));
        paths.push(got);
    }
    assert!(
        paths.windows(2).all(|w| w[0] == w[1]),
        "one path for every container"
    );
    // The intermediate came with the uploaded zone chain: the DER leaf alone is enough.
    let got = svc
        .import_certificate(&fq(PS2), &openssl_der(&ps2))
        .unwrap();
    ext.check_path(&got, &ps2, Some(&old_ca));
    // The complete chain server -> intermediate -> root.
    let sat_full = cat(&work.join("sat-full.pem"), &[&sat, ext.int(), &ext.root]);
    let got = svc
        .import_certificate(&fq(SAT), &std::fs::read(&sat_full).unwrap())
        .unwrap();
    ext.check_path(&got, &sat, Some(&old_ca));
    let v = drive(&svc);
    assert!(
        all_servers(&v, "new certificate uploaded"),
        "{:?}",
        statuses(&v)
    );
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");

    // Activation.
    clock.set(activation);
    let v = drive(&svc);
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.kind, "external");
    assert_eq!(ca.details.subject, "CN=OpenSSL Root");
    verify_fleet(&fleet, &ext);

    // B1, checked by openssl: a member that still trusts only the old internal CA validates
    // what a server now presents, through the bridge in it.
    let bridge_pem = work.join("bridge.pem");
    std::fs::write(&bridge_pem, bridge.to_pem()).unwrap();
    for s in SERVERS {
        let cert = current_cert(&fleet, s);
        let presented = bundle::read_file(&cert).unwrap();
        assert_eq!(
            presented.last().unwrap().der(),
            &bridge,
            "{s} presents the bridge"
        );
        openssl_verify(&old_ca, Some(&cert), &cert, s);
    }
    svc.baseline(false).unwrap();

    // SR3: an external Server Remint. Activation must come before the earliest expiry among
    // the selected servers: sat's certificate (60 days) expires long before ps2's and the CA.
    let sat_leaf = Certificate::try_from(&der_of(&current_cert(&fleet, SAT))).unwrap();
    let ps2_leaf = Certificate::try_from(&der_of(&current_cert(&fleet, PS2))).unwrap();
    assert!(sat_leaf.not_after() < ps2_leaf.not_after());
    let request = |servers: &[&str], at: Timestamp| {
        ServerRemintRequest::new(
            servers.iter().map(|s| fq(s)).collect(),
            "Remint from the OpenSSL CA",
            ActivationRequest::At(at),
        )
        .with_key(KeySpec::P256)
        .with_csr(auto())
    };
    let late = sat_leaf.not_after().plus(DAY);
    assert!(late < ps2_leaf.not_after());
    let before = svc.dump().unwrap();
    let e = svc
        .start_server_remint(request(&[PS2, SAT], late))
        .unwrap_err();
    match &e {
        zonepki::Error::Op(OpError::ActivationAfterServerExpiry { not_after, .. }) => {
            assert_eq!(*not_after, sat_leaf.not_after(), "{e}");
        }
        other => panic!("expected ActivationAfterServerExpiry, got {other}"),
    }
    assert_eq!(svc.dump().unwrap(), before, "the refusal changed the store");

    let remint_at = clock.now().plus(DAY * 20);
    assert!(remint_at < sat_leaf.not_after());
    let v = svc.start_server_remint(request(&[SAT], remint_at)).unwrap();
    assert_eq!(v.update_name, "Remint from the OpenSSL CA");
    // A second request while it runs is refused too.
    assert!(svc.start_server_remint(request(&[PS2], late)).is_err());
    let v = drive(&svc);
    assert_eq!(
        statuses(&v),
        vec![(SAT.to_string(), "CSR generated".to_string())]
    );
    let first = svc.csrs(&[fq(SAT)]).unwrap();
    let first_csr = write_csr(&work, &first[0].0, &first[0].1, "remint-1");
    check_csr(&first_csr, SAT);
    // SR5 Generate CSR with a CN for the single server replaces the earlier CSR: a
    // certificate for the old one is refused, one for the new one accepted.
    let regenerated = svc
        .generate_csr(
            &[fq(SAT)],
            &fields(),
            Some("Satellite One".into()),
            KeySpec::P256,
        )
        .unwrap();
    let new_csr = write_csr(&work, &regenerated[0].0, &regenerated[0].1, "remint-2");
    check_csr(&new_csr, "Satellite One");
    assert_eq!(svc.csrs(&[]).unwrap(), regenerated);
    let stale = ext.sign(&first_csr, SAT, 365);
    catch_up(clock);
    let before = svc.dump().unwrap();
    let e = svc
        .import_certificate(&fq(SAT), &std::fs::read(&stale).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("CSR key"), "{e}");
    assert_eq!(svc.dump().unwrap(), before);
    let reminted = ext.sign(&new_csr, SAT, 365);
    catch_up(clock);
    let got = svc
        .import_certificate(
            &fq(SAT),
            &openssl_p7b(&work.join("sat-remint.p7b"), &[&reminted, ext.int()], true),
        )
        .unwrap();
    ext.check_path(&got, &reminted, None);
    let v = drive(&svc);
    assert_eq!(
        statuses(&v),
        vec![(SAT.to_string(), "new certificate uploaded".to_string())]
    );
    let ps2_before = std::fs::read(current_cert(&fleet, PS2)).unwrap();
    clock.set(remint_at);
    let v = drive(&svc);
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    let cert = current_cert(&fleet, SAT);
    assert_eq!(
        der_of(&cert),
        der_of(&reminted),
        "sat serves the reminted leaf"
    );
    let subject = sh(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&cert));
    assert!(subject.contains("CN = Satellite One"), "{subject}");
    openssl_verify(&ext.root, Some(ext.int()), &cert, SAT);
    certtool_verify(&ext.root, &cert, SAT);
    assert_eq!(
        std::fs::read(current_cert(&fleet, PS2)).unwrap(),
        ps2_before,
        "ps2 was not selected"
    );
    assert_eq!(svc.ca_view().unwrap().kind, "external");
}

#[cfg_attr(
    not(all(zonepki_has_certtool, zonepki_has_openssl)),
    ignore = "needs certtool and openssl on PATH; .ci/run installs them"
)]
#[test]
fn gnutls_ca_change_ca_with_p7b_upload_and_certtool_signed_imports() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let (fleet, work) = (tmp.path().join("fleet"), tmp.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    let (svc, clock) = zone(&fleet);
    let old_ca = work.join("old-internal-ca.pem");
    std::fs::write(&old_ca, svc.ca_certificate().unwrap().der().to_pem()).unwrap();
    let ext = ExtCa::gnutls(&work, "gnutls", "GnuTLS Root", Some("GnuTLS Issuing CA"));
    let unrelated = ExtCa::gnutls(&work, "gunrel", "Unrelated GnuTLS Root", None);

    // CE1: the chain uploaded as a DER .p7b made by certtool.
    catch_up(clock);
    let activation = clock.now().plus(DAY * 7);
    let upload = certtool_p7b(&work.join("upload.p7b"), &[&ext.root, ext.int()], true);
    let v = change_to_external(&svc, upload, activation);
    assert_eq!(v.kind, "change_ca_external");
    let op = svc.op().unwrap().unwrap();
    assert_eq!(op.kind.future_ca(), Some(&der_of(&ext.root)));
    let v = drive(&svc);
    assert!(all_servers(&v, "CSR generated"), "{:?}", statuses(&v));

    // The CSRs straight from `csrs()`.
    let csrs = svc.csrs(&[]).unwrap();
    assert_eq!(csrs.len(), SERVERS.len());
    let mut files = std::collections::BTreeMap::new();
    for (fqdn, csr) in &csrs {
        let p = write_csr(&work, fqdn, csr, "change");
        check_csr(&p, fqdn.as_str());
        files.insert(fqdn.to_string(), p);
    }
    let csr = |s: &str| files[s].clone();

    let stray = unrelated.sign(&csr(PS2), PS2, 365);
    catch_up(clock);
    assert_refused(
        &svc,
        PS2,
        &certtool_p7b(&work.join("stray.p7b"), &[&stray, &unrelated.root], false),
        "a certtool leaf of an unrelated root, .p7b with that root",
    );

    let ps1 = ext.sign(&csr(PS1), PS1, 365);
    let ps2 = ext.sign(&csr(PS2), PS2, 365);
    let sat = ext.sign(&csr(SAT), SAT, 365);
    catch_up(clock);
    let imports: Vec<(&str, &Path, Vec<u8>)> = vec![
        (
            PS1,
            &ps1,
            certtool_p7b(&work.join("ps1.p7b"), &[&ps1, ext.int()], false),
        ),
        (
            PS2,
            &ps2,
            certtool_p7b(&work.join("ps2.p7b"), &[&ps2, ext.int()], true),
        ),
        (
            SAT,
            &sat,
            std::fs::read(cat(&work.join("sat-chain.pem"), &[&sat, ext.int()])).unwrap(),
        ),
    ];
    for (fqdn, leaf, bytes) in &imports {
        let got = svc
            .import_certificate(&fq(fqdn), bytes)
            .unwrap_or_else(|e| panic!("{fqdn}: {e}"));
        ext.check_path(&got, leaf, Some(&old_ca));
    }
    let v = drive(&svc);
    assert!(
        all_servers(&v, "new certificate uploaded"),
        "{:?}",
        statuses(&v)
    );

    clock.set(activation);
    let v = drive(&svc);
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.kind, "external");
    assert_eq!(ca.details.subject, "CN=GnuTLS Root");
    verify_fleet(&fleet, &ext);
}

#[cfg_attr(
    not(all(zonepki_has_certtool, zonepki_has_openssl)),
    ignore = "needs certtool and openssl on PATH; .ci/run installs them"
)]
#[test]
fn zone_chain_uploaded_as_pem_der_root_and_p7b() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let (fleet, work) = (tmp.path().join("fleet"), tmp.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    let (svc, clock) = zone(&fleet);
    let old_ca = work.join("old-internal-ca.pem");
    std::fs::write(&old_ca, svc.ca_certificate().unwrap().der().to_pem()).unwrap();
    let ext = ExtCa::openssl(&work, "ossl", "OpenSSL Root", Some("OpenSSL Issuing CA"));
    let (root, int) = (der_of(&ext.root), der_of(ext.int()));

    // Every container of CE1, decided by content (the names are misleading on purpose).
    let uploads: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "PEM, intermediate then root",
            std::fs::read(cat(&work.join("chain.der"), &[ext.int(), &ext.root])).unwrap(),
            true,
        ),
        ("DER, root only", openssl_der(&ext.root), false),
        (
            "openssl .p7b PEM",
            openssl_p7b(&work.join("chain-ossl.cer"), &[&ext.root, ext.int()], false),
            true,
        ),
        (
            "openssl .p7b DER",
            openssl_p7b(&work.join("chain-ossl.pem"), &[ext.int(), &ext.root], true),
            true,
        ),
        (
            "certtool .p7b PEM",
            certtool_p7b(
                &work.join("chain-gnutls.crt"),
                &[&ext.root, ext.int()],
                false,
            ),
            true,
        ),
    ];
    for (i, (what, bytes, with_int)) in uploads.into_iter().enumerate() {
        catch_up(clock);
        let activation = clock.now().plus(DAY * 5);
        change_to_external(&svc, bytes, activation);
        let op = svc.op().unwrap().unwrap();
        let OpKind::ChangeCa {
            future_ca,
            intermediates,
            ..
        } = &op.kind
        else {
            panic!("{what}: {:?}", op.kind)
        };
        assert_eq!(future_ca, &root, "{what}");
        let want_int = if with_int { vec![int.clone()] } else { vec![] };
        assert_eq!(intermediates, &want_int, "{what}");
        let v = drive(&svc);
        assert!(
            all_servers(&v, "CSR generated"),
            "{what}: {:?}",
            statuses(&v)
        );
        let (fqdn, csr) = svc.csrs(&[fq(PS1)]).unwrap().remove(0);
        let leaf = ext.sign(&write_csr(&work, &fqdn, &csr, &i.to_string()), PS1, 365);
        catch_up(clock);
        let leaf_der = openssl_der(&leaf);
        if with_int {
            // The intermediate came with the zone chain: the DER leaf alone is enough.
            let got = svc.import_certificate(&fqdn, &leaf_der).unwrap();
            ext.check_path(&got, &leaf, Some(&old_ca));
        } else {
            // Root only: the leaf alone does not reach it (CE3), leaf + intermediate does.
            assert_refused(&svc, PS1, &leaf_der, what);
            let p7 = openssl_p7b(
                &work.join(format!("leaf-{i}.p7b")),
                &[&leaf, ext.int()],
                true,
            );
            let got = svc.import_certificate(&fqdn, &p7).unwrap();
            ext.check_path(&got, &leaf, Some(&old_ca));
        }
        svc.cancel().unwrap();
        assert!(
            !svc.op().unwrap().unwrap().state.is_running(),
            "{what}: cancelled"
        );
        drive_idle(&svc);
    }
    assert_eq!(svc.ca_view().unwrap().kind, "internal");
}

/// Refreshes without an operation (members drop what a cancelled one staged).
fn drive_idle(svc: &Svc) {
    svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
        .unwrap();
}
