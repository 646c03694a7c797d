//! CE2 manual mode end to end (CE1-CE4, A1, A2): a Change CA to an external CA whose server
//! certificates the administrator obtains elsewhere. Keys and CSRs are made with the `openssl`
//! CLI, an external CA made with `openssl` signs them, and the complete chain is placed as
//! `<fleet>/<fqdn>/remint-repo/server.<ext>` with the key as `remint-repo/key.der`. Every broken
//! repository gives a clear reason and leaves the member not applied; a correct one is staged
//! (A1) and becomes the member's certificate at activation (A2), which `openssl verify` accepts.
//!
//! The zone's clock starts an hour after the real time, because `openssl x509 -req` dates
//! certificates from the real time and `openssl verify` checks them at the real time.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zonepki::agent::{MANUAL_CHAIN_FILES, ManualError, read_manual_material};
use zonepki::ca::{
    CaParams, Serial, ServerProfile, cross_certify, issue_server_certificate, self_signed_ca,
};
use zonepki::cert::{Certificate, CertificateDer, bundle};
use zonepki::chain::{NO_ISSUER_MESSAGE, verify_chain};
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::csr::{CsrRequest, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey, Signer};
use zonepki::lint::Rule;
use zonepki::ops::{ActivationRequest, CsrMode};
use zonepki::service::{
    ChangeCaRequest, ChangeCaTarget, InitInternal, NewServer, OpView, ZoneService,
};
use zonepki::store::{FaultyStore, MemoryStore, Storage};
use zonepki::transport::LoopbackTransport;
use zonepki::transport::{Fleet, RefreshOptions, RefreshOutcome};
use zonepki::view::UpdateStatus;
use zonepki::zone::{Fqdn, ServerRole};

const PS1: &str = "ps1.acme.example";
const PS2: &str = "ps2.acme.example";
const SAT: &str = "sat.acme.example";
const SERVERS: [&str; 3] = [PS1, PS2, SAT];
/// Activation, counted from the zone's start.
const ACTIVATION_AFTER: Duration = Duration::from_secs(9 * 24 * 3600);

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The zone: ps1 (CA), ps2, an Authentication Satellite under ps2, two devices; member files on
// disk under `<tmp>/fleet`.

struct Zone<S: Storage = MemoryStore> {
    svc: ZoneService<S, LoopbackTransport, &'static ManualClock>,
    clock: &'static ManualClock,
    fleet: PathBuf,
    start: Timestamp,
    tmp: tempfile::TempDir,
}

fn zone() -> Zone {
    zone_over(MemoryStore::new())
}

fn zone_over<S: Storage>(store: S) -> Zone<S> {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("fleet");
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = Timestamp::from_unix(i64::try_from(real - real % 60 + 3600).unwrap()).unwrap();
    let clock: &'static ManualClock = Box::leak(Box::new(ManualClock::new(start)));
    let svc = ZoneService::new(store, LoopbackTransport::with_root(&fleet), clock);
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
    Zone {
        svc,
        clock,
        fleet,
        start,
        tmp,
    }
}

/// A member's update status and reason, whichever list of `op show` it is in.
#[derive(Debug)]
struct Member {
    status: UpdateStatus,
    reason: Option<String>,
}

impl<S: Storage> Zone<S> {
    fn activation(&self) -> Timestamp {
        self.start.plus(ACTIVATION_AFTER)
    }

    /// Change CA to the external CA whose root (and maybe intermediates) `upload` holds, in
    /// CE2 manual mode; refreshed once, so the update is replicated and assigned.
    fn start_manual(&self, upload: Vec<u8>) {
        self.start_manual_acknowledging(upload, Vec::new());
    }

    /// [`Self::start_manual`], accepting these lint warnings (B4).
    fn start_manual_acknowledging(&self, upload: Vec<u8>, acknowledge: Vec<Rule>) {
        let v = self
            .svc
            .start_change_ca(
                ChangeCaRequest::new(
                    ChangeCaTarget::External {
                        chain: upload,
                        csr: CsrMode::Manual,
                    },
                    ActivationRequest::At(self.activation()),
                )
                .with_update_name("To the external CA")
                .with_acknowledge(acknowledge),
            )
            .unwrap();
        assert_eq!(v.kind, "change_ca_external");
        self.svc
            .refresh(&[], &RefreshOptions::default(), |_, _| {})
            .unwrap();
        assert_eq!(self.show().state, "assigned");
    }

    fn show(&self) -> OpView {
        self.svc.op_show().unwrap()
    }

    /// A member's row of `op show`, a server's or a device's.
    fn member(&self, name: &str) -> Member {
        let v = self.show();
        let server = v.servers.iter().find(|s| s.fqdn == name).map(|s| Member {
            status: s.status,
            reason: s.reason.clone(),
        });
        server
            .or_else(|| {
                v.devices.iter().find(|d| d.name == name).map(|d| Member {
                    status: d.status,
                    reason: d.reason.clone(),
                })
            })
            .unwrap_or_else(|| panic!("{name} is not in the update"))
    }

    fn cert_status(&self, name: &str) -> String {
        self.show()
            .servers
            .into_iter()
            .find(|s| s.fqdn == name)
            .unwrap_or_else(|| panic!("{name} is not a server of the update"))
            .certificate_status
            .to_string()
    }

    fn refresh(&self, names: &[&str]) -> Vec<RefreshOutcome> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.svc
            .refresh(&names, &RefreshOptions::default(), |_, _| {})
            .unwrap()
    }

    fn refresh_one(&self, name: &str) -> RefreshOutcome {
        self.refresh(&[name]).pop().unwrap()
    }

    fn drive(&self) -> OpView {
        for _ in 0..3 {
            self.refresh(&[]);
        }
        self.show()
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.fleet.join(name)
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.dir(name).join("remint-repo")
    }

    /// Replaces the administrator's files in `name`'s remint repository with `files`.
    fn place(&self, name: &str, files: &[(&str, &[u8])]) {
        let repo = self.repo(name);
        std::fs::create_dir_all(&repo).unwrap();
        for f in MANUAL_CHAIN_FILES.iter().chain(&["key.der", "notes.txt"]) {
            let p = repo.join(f);
            if p.exists() {
                std::fs::remove_file(&p).unwrap();
            }
        }
        for (f, bytes) in files {
            std::fs::write(repo.join(f), bytes).unwrap();
        }
    }

    /// The member's current chain, from `current/cert.pem`.
    fn current_chain(&self, name: &str) -> Vec<Certificate> {
        bundle::read_file(&self.dir(name).join("current/cert.pem")).unwrap()
    }

    /// Refreshes `name` with a broken repository: the outcome is "waiting" with a reason
    /// holding every piece of `want`, and the member is not applied, nothing is staged, and the
    /// administrator's files are left alone.
    fn assert_refused(&self, name: &str, want: &[&str]) -> String {
        let placed: Vec<String> = list(&self.repo(name));
        let o = self.refresh_one(name);
        assert_eq!(o.outcome, "waiting", "{name}: {o:?}");
        let reason = o.detail.clone().unwrap_or_default();
        for w in want {
            assert!(reason.contains(w), "{name}: {w:?} missing from: {reason}");
        }
        let m = self.member(name);
        assert_eq!(m.status, "downloading", "{name} must not be applied: {m:?}");
        assert_eq!(m.reason.as_deref(), Some(reason.as_str()), "op show: {m:?}");
        assert_ne!(self.cert_status(name), "new certificate uploaded", "{name}");
        let repo = self.repo(name);
        for f in ["staged.json", "key.pem", "ca.cert", "trust.pem"] {
            assert!(!repo.join(f).exists(), "{name}: {f} written for a refusal");
        }
        assert_eq!(
            list(&repo),
            placed,
            "{name}: the administrator's files changed"
        );
        assert!(
            self.svc
                .transport()
                .with_agent(name, |a| a.staged().is_none())
                .unwrap(),
            "{name}: something was staged"
        );
        reason
    }

    /// Refreshes `names` with correct repositories: each is applied, its files are consumed
    /// and replaced by what A1 says the repository holds.
    fn assert_applied(&self, names: &[&str], ext: &ExtCa) {
        for o in self.refresh(names) {
            assert_eq!(o.outcome, "applied", "{o:?}");
        }
        for name in names {
            assert_eq!(self.member(name).status, "applied", "{name}");
            assert_eq!(self.member(name).reason, None, "{name}");
            assert_eq!(self.cert_status(name), "new certificate uploaded", "{name}");
            let repo = self.repo(name);
            // A1: server.cer (the staged chain) and ca.cert (the future zone CA).
            let staged = bundle::read_file(&repo.join("server.cer")).unwrap();
            assert!(certificate_names_host(&staged[0], name), "{name}");
            // The validated path ends at the root, which B1 serves as the bridge (the root's
            // key certified by the current zone CA) when the operation has one.
            let op = self.svc.op().unwrap().unwrap();
            let root_der = ext.root().der().clone();
            let last = op.served_bridge().unwrap_or(&root_der);
            let subjects: Vec<String> = staged.iter().map(Certificate::subject).collect();
            assert_eq!(
                staged.last().unwrap().der(),
                last,
                "{name}: must end at the root or its bridge: {subjects:?}"
            );
            assert_eq!(staged.last().unwrap().public_key(), ext.root().public_key());
            let ca = bundle::read_file(&repo.join("ca.cert")).unwrap();
            assert_eq!(ca.len(), 1);
            assert_eq!(ca[0].der(), ext.root().der(), "{name}: ca.cert");
            // The clear key.der and the administrator's chain file are gone; the key lives on
            // as the staged key, 0600.
            assert!(
                !repo.join("key.der").exists(),
                "{name}: key.der left behind"
            );
            for f in MANUAL_CHAIN_FILES {
                if f != "server.cer" {
                    assert!(!repo.join(f).exists(), "{name}: {f} left behind");
                }
            }
            let key =
                PrivateKey::from_pkcs8(&std::fs::read(repo.join("key.pem")).unwrap()).unwrap();
            assert_eq!(&key.public_key_info(), staged[0].public_key(), "{name}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(repo.join("key.pem"))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{name}: key.pem mode {mode:o}");
            }
            // Nothing switches before activation (A2).
            assert_ne!(
                self.current_chain(name)[0].public_key(),
                staged[0].public_key(),
                "{name} switched before activation"
            );
        }
    }

    /// A2: at the activation time every server switches to the staged external chain, which
    /// `openssl verify -CAfile root.pem -untrusted int.pem` accepts; devices trust the root.
    fn activate_and_verify(&self, ext: &ExtCa, placed: &[(&str, PathBuf)]) {
        self.clock.set(self.activation());
        let v = self.drive();
        assert_eq!(v.state, "activated", "{v:?}");
        assert!(v.stranded.is_empty(), "{:?}", v.stranded);
        let ca = self.svc.ca_view().unwrap();
        assert_eq!(ca.kind, "external");
        assert_eq!(ca.details.subject, ext.root().subject());
        for (name, leaf_pem) in placed {
            let chain = self.current_chain(name);
            let placed_leaf = bundle::read_file(leaf_pem).unwrap();
            assert_eq!(chain[0].der(), placed_leaf[0].der(), "{name}: current leaf");
            verify_chain(&chain[0], &chain[1..], &[ext.root()], self.svc.now()).unwrap();
            let key_pem = std::fs::read(self.dir(name).join("current/key.pem")).unwrap();
            let key = PrivateKey::from_pkcs8(&key_pem).unwrap();
            assert_eq!(&key.public_key_info(), chain[0].public_key(), "{name}: key");
            let cert_pem = self.dir(name).join("current/cert.pem");
            let out = ossl(
                &ext.dir,
                &[
                    "verify",
                    "-CAfile",
                    path(&ext.dir.join("root.pem")),
                    "-untrusted",
                    path(&ext.dir.join("int.pem")),
                    path(&cert_pem),
                ],
            );
            assert!(out.contains(": OK"), "{name}: {out}");
        }
        for d in ["dev-1", "dev-2"] {
            let trust = self
                .svc
                .transport()
                .with_agent(d, |a| a.trust().to_vec())
                .unwrap();
            assert!(
                trust.contains(ext.root().der()),
                "{d} does not trust the root"
            );
        }
    }
}

fn certificate_names_host(cert: &Certificate, host: &str) -> bool {
    zonepki::agent::certificate_names(cert, host)
}

/// File names in `dir`, sorted.
fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// openssl: the administrator's tools and the external CA.

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `openssl args` in `dir`; it must succeed.
fn ossl(dir: &Path, args: &[&str]) -> String {
    let (ok, out) = common::run(Command::new("openssl").current_dir(dir).args(args));
    assert!(ok, "openssl {}: {out}", args.join(" "));
    out
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn concat(parts: &[&Path]) -> Vec<u8> {
    parts.iter().flat_map(|p| read(p)).collect()
}

fn serial() -> String {
    format!("0x{}", Serial::random().unwrap().hex())
}

const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[int]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

/// Who signs a server certificate.
#[derive(Clone, Copy)]
enum By {
    Root,
    Int,
}

/// What the external CA puts into a server certificate.
struct Leaf<'a> {
    san: &'a str,
    days: u32,
    ca: bool,
}

impl<'a> Leaf<'a> {
    fn for_host(san: &'a str) -> Self {
        Leaf {
            san,
            days: 730,
            ca: false,
        }
    }
}

/// An external CA made with openssl: `root.pem` and an issuing `int.pem` under it.
struct ExtCa {
    dir: PathBuf,
    name: String,
    root: Certificate,
}

impl ExtCa {
    fn new(base: &Path, name: &str) -> Self {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.cnf"), CA_CONFIG).unwrap();
        let genkey = |out: &str| {
            ossl(
                &dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    out,
                ],
            )
        };
        genkey("root.key");
        genkey("int.key");
        let root_cn = format!("/CN={name} Root");
        ossl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-config",
                "ca.cnf",
                "-extensions",
                "root",
                "-key",
                "root.key",
                "-subj",
                &root_cn,
                "-days",
                "3650",
                "-sha256",
                "-set_serial",
                &serial(),
                "-out",
                "root.pem",
            ],
        );
        let int_cn = format!("/CN={name} Issuing CA");
        ossl(
            &dir,
            &[
                "req", "-new", "-config", "ca.cnf", "-key", "int.key", "-subj", &int_cn, "-out",
                "int.csr",
            ],
        );
        ossl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "int.csr",
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-set_serial",
                &serial(),
                "-days",
                "3000",
                "-sha256",
                "-extfile",
                "ca.cnf",
                "-extensions",
                "int",
                "-out",
                "int.pem",
            ],
        );
        let root = bundle::read_file(&dir.join("root.pem")).unwrap().remove(0);
        ExtCa {
            dir,
            name: name.into(),
            root,
        }
    }

    fn root(&self) -> Certificate {
        self.root.clone()
    }

    fn root_pem(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    fn int_pem(&self) -> PathBuf {
        self.dir.join("int.pem")
    }

    /// CE1: the complete CA chain (intermediate, root), as uploaded at Change CA.
    fn chain_upload(&self) -> Vec<u8> {
        concat(&[&self.int_pem(), &self.root_pem()])
    }

    /// CE1: the trusted root alone.
    fn root_upload(&self) -> Vec<u8> {
        read(&self.root_pem())
    }

    /// Signs `csr` as the external CA would; returns the PEM certificate's path.
    fn sign(&self, csr: &Path, by: By, leaf: &Leaf, out: &str) -> PathBuf {
        let ext = format!(
            "[leaf]\nbasicConstraints = critical,CA:{}\nkeyUsage = critical,digitalSignature{}\n\
             extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = DNS:{}\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
            if leaf.ca { "TRUE" } else { "FALSE" },
            if leaf.ca { ",keyCertSign" } else { "" },
            leaf.san,
        );
        let ext_file = self.dir.join(format!("{out}.ext"));
        std::fs::write(&ext_file, ext).unwrap();
        let (ca, ca_key) = match by {
            By::Root => ("root.pem", "root.key"),
            By::Int => ("int.pem", "int.key"),
        };
        let out_path = self.dir.join(out);
        ossl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                path(csr),
                "-CA",
                ca,
                "-CAkey",
                ca_key,
                "-set_serial",
                &serial(),
                "-days",
                &leaf.days.to_string(),
                "-sha256",
                "-extfile",
                path(&ext_file),
                "-extensions",
                "leaf",
                "-out",
                path(&out_path),
            ],
        );
        out_path
    }
}

/// What the administrator makes for one server "elsewhere": a P-256 key and a CSR.
///
/// `openssl genpkey -outform DER` writes the "traditional" SEC1 `ECPrivateKey` (OpenSSL 3.0's
/// `i2d_PrivateKey`), not PKCS#8; only its PEM output is PKCS#8. So `key.der` is made the way
/// the library's refusal advises: `openssl pkcs8 -topk8 -nocrypt -outform DER`.
struct ServerKey {
    dir: PathBuf,
    /// What `openssl genpkey -outform DER` wrote.
    genpkey_der: PathBuf,
    /// PKCS#8 DER.
    key_der: PathBuf,
    csr: PathBuf,
}

impl ServerKey {
    fn new(base: &Path, label: &str, cn: &str) -> Self {
        let dir = base.join(format!("admin-{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("req.cnf"), CA_CONFIG).unwrap();
        ossl(
            &dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-outform",
                "DER",
                "-out",
                "genpkey.der",
            ],
        );
        ossl(
            &dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-inform",
                "DER",
                "-in",
                "genpkey.der",
                "-outform",
                "DER",
                "-out",
                "key.der",
            ],
        );
        let subj = format!("/CN={cn}");
        ossl(
            &dir,
            &[
                "req", "-new", "-config", "req.cnf", "-key", "key.der", "-keyform", "DER", "-subj",
                &subj, "-out", "req.csr",
            ],
        );
        ServerKey {
            genpkey_der: dir.join("genpkey.der"),
            key_der: dir.join("key.der"),
            csr: dir.join("req.csr"),
            dir,
        }
    }

    fn der(&self) -> Vec<u8> {
        read(&self.key_der)
    }

    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    fn pkcs8_pem(&self) -> Vec<u8> {
        let out = self.dir.join("key.pkcs8.pem");
        ossl(
            &self.dir,
            &[
                "pkey",
                "-inform",
                "DER",
                "-in",
                "key.der",
                "-out",
                path(&out),
            ],
        );
        let pem = read(&out);
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        pem
    }

    /// The "traditional" form `openssl ec` writes: SEC1 `ECPrivateKey`, DER or PEM.
    fn traditional(&self, form: &str) -> Vec<u8> {
        let out = self.dir.join(format!("key.sec1.{form}"));
        ossl(
            &self.dir,
            &[
                "ec",
                "-inform",
                "DER",
                "-in",
                "key.der",
                "-outform",
                form,
                "-out",
                path(&out),
            ],
        );
        let bytes = read(&out);
        if form == "PEM" {
            assert!(bytes.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
        }
        bytes
    }
}

/// `openssl crl2pkcs7 -nocrl -certfile ...`, PEM or DER.
fn p7b(dir: &Path, certs: &[&Path], form: &str, out: &str) -> Vec<u8> {
    let mut args = vec!["crl2pkcs7", "-nocrl"];
    for c in certs {
        args.push("-certfile");
        args.push(path(c));
    }
    let out = dir.join(out);
    args.extend(["-outform", form, "-out", path(&out)]);
    ossl(dir, &args);
    read(&out)
}

/// One certificate as DER.
fn der(dir: &Path, cert: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.der",
        cert.file_name().unwrap().to_str().unwrap()
    ));
    ossl(
        dir,
        &[
            "x509",
            "-in",
            path(cert),
            "-outform",
            "DER",
            "-out",
            path(&out),
        ],
    );
    read(&out)
}

// ---------------------------------------------------------------------------------------------
// End to end.

/// Root and intermediate uploaded (CE1); server.pem (leaf, intermediate, root) with a DER key
/// on ps1, server.p7b (DER PKCS#7 from crl2pkcs7) with a PKCS#8 PEM key on ps2, server.der (one
/// DER certificate, issued by the root directly: CE3) on the satellite.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn manual_mode_pem_p7b_and_der_from_an_external_ca() {
    common::require("openssl");
    let z = zone();
    let work = z.tmp.path().join("work");
    let ext = ExtCa::new(&work, "Globex");
    z.start_manual(ext.chain_upload());

    // Nothing placed yet: every server waits, with a reason; devices apply.
    let outcomes = z.refresh(&[]);
    for o in &outcomes {
        if SERVERS.contains(&o.name.as_str()) {
            assert_eq!(o.outcome, "waiting", "{o:?}");
            let d = o.detail.as_deref().unwrap_or_default();
            assert!(d.contains("server.der") && d.contains(".p7b"), "{d}");
        } else {
            // Devices may already have applied in the refresh that assigned the update.
            assert!(
                ["applied", "up-to-date"].contains(&o.outcome.name()),
                "{o:?}"
            );
        }
    }
    let v = z.show();
    for s in SERVERS {
        let m = z.member(s);
        assert_ne!(m.status, "applied", "{m:?}");
        assert!(m.reason.is_some(), "{m:?}");
        assert_eq!(z.cert_status(s), "pending");
    }
    assert!(
        v.devices
            .iter()
            .filter(|d| d.name.starts_with("dev"))
            .all(|d| d.status == "applied"),
        "{v:?}"
    );

    // ps1: PEM chain leaf, intermediate, root; PKCS#8 DER key.
    let k1 = ServerKey::new(&work, "ps1", PS1);
    let c1 = ext.sign(&k1.csr, By::Int, &Leaf::for_host(PS1), "ps1.pem");
    let pem_chain = concat(&[&c1, &ext.int_pem(), &ext.root_pem()]);
    z.place(PS1, &[("server.pem", &pem_chain), ("key.der", &k1.der())]);
    // ps2: DER PKCS#7 of leaf and intermediate; PKCS#8 PEM key.
    let k2 = ServerKey::new(&work, "ps2", PS2);
    let c2 = ext.sign(&k2.csr, By::Int, &Leaf::for_host(PS2), "ps2.pem");
    let p7 = p7b(&work, &[&c2, &ext.int_pem()], "DER", "ps2.p7b");
    z.place(PS2, &[("server.p7b", &p7), ("key.der", &k2.pkcs8_pem())]);
    // sat: one DER certificate, issued by the root itself.
    let k3 = ServerKey::new(&work, "sat", SAT);
    let c3 = ext.sign(&k3.csr, By::Root, &Leaf::for_host(SAT), "sat.pem");
    z.place(
        SAT,
        &[("server.der", &der(&work, &c3)), ("key.der", &k3.der())],
    );

    z.assert_applied(&SERVERS, &ext);
    let v = z.drive();
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");
    z.activate_and_verify(&ext, &[(PS1, c1), (PS2, c2), (SAT, c3)]);
}

/// Only the root uploaded (CE1); server.crt (PEM leaf and intermediate) on ps1, and one
/// wildcard certificate `*.acme.example` (CE4) with one key on ps2 as server.cer (DER PKCS#7
/// with the root) and on the satellite as server.cert (PEM PKCS#7).
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn manual_mode_crt_cer_cert_and_a_wildcard_certificate() {
    common::require("openssl");
    let z = zone();
    let work = z.tmp.path().join("work");
    let ext = ExtCa::new(&work, "Initech");
    // B4: a wildcard is legal from an external CA (CE4) but risky: the administrator accepts
    // the lint's warning for this operation (without it, see
    // `manual_mode_wildcard_needs_the_lint_warning_acknowledged`).
    z.start_manual_acknowledging(ext.root_upload(), vec![Rule::SanWildcard]);

    let k1 = ServerKey::new(&work, "ps1", PS1);
    let c1 = ext.sign(&k1.csr, By::Int, &Leaf::for_host(PS1), "ps1.pem");
    z.place(
        PS1,
        &[
            ("server.crt", &concat(&[&c1, &ext.int_pem()])),
            ("key.der", &k1.pkcs8_pem()),
        ],
    );
    let kw = ServerKey::new(&work, "wildcard", "*.acme.example");
    let cw = ext.sign(&kw.csr, By::Int, &Leaf::for_host("*.acme.example"), "w.pem");
    let wild = bundle::read_file(&cw).unwrap();
    assert_eq!(wild[0].dns_names().unwrap(), ["*.acme.example"]);
    let p7_der = p7b(
        &work,
        &[&cw, &ext.int_pem(), &ext.root_pem()],
        "DER",
        "w.p7b",
    );
    let p7_pem = p7b(&work, &[&cw, &ext.int_pem()], "PEM", "w.p7.pem");
    assert!(p7_pem.starts_with(b"-----BEGIN PKCS7-----"));
    z.place(PS2, &[("server.cer", &p7_der), ("key.der", &kw.der())]);
    z.place(SAT, &[("server.cert", &p7_pem), ("key.der", &kw.der())]);

    z.assert_applied(&SERVERS, &ext);
    z.activate_and_verify(&ext, &[(PS1, c1), (PS2, cw.clone()), (SAT, cw)]);
}

/// B4: without the acknowledgement, the wildcard (legal, CE4, but risky) is refused by the
/// pre-flight lint with a warning that names the rule; nothing is staged.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn manual_mode_wildcard_needs_the_lint_warning_acknowledged() {
    common::require("openssl");
    let z = zone();
    let work = z.tmp.path().join("work");
    let ext = ExtCa::new(&work, "Initech");
    z.start_manual(ext.root_upload());
    let kw = ServerKey::new(&work, "wildcard", "*.acme.example");
    let cw = ext.sign(&kw.csr, By::Int, &Leaf::for_host("*.acme.example"), "w.pem");
    let chain = concat(&[&cw, &ext.int_pem()]);
    z.place(PS2, &[("server.crt", &chain), ("key.der", &kw.der())]);
    z.assert_refused(PS2, &["pre-flight lint", "san_wildcard", "*.acme.example"]);
}

/// Every broken repository gives a clear reason and the member stays not applied; then the
/// correct files are staged.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn manual_mode_refuses_broken_remint_repositories() {
    common::require("openssl");
    let z = zone();
    let work = z.tmp.path().join("work");
    let ext = ExtCa::new(&work, "Globex");
    // The root alone: the intermediate reaches the zone only through server.<ext>.
    z.start_manual(ext.root_upload());
    let k = ServerKey::new(&work, "ps2", PS2);
    let leaf = ext.sign(&k.csr, By::Int, &Leaf::for_host(PS2), "ps2.pem");
    let full = concat(&[&leaf, &ext.int_pem(), &ext.root_pem()]);
    let key = k.der();

    // No server.<ext>.
    z.place(PS2, &[("key.der", &key)]);
    z.assert_refused(
        PS2,
        &["no server certificate", "server.der", ".p7b", ".cert"],
    );
    // A file with another name does not count.
    z.place(PS2, &[("notes.txt", &full), ("key.der", &key)]);
    z.assert_refused(PS2, &["no server certificate"]);
    // No key.der.
    z.place(PS2, &[("server.pem", &full)]);
    z.assert_refused(PS2, &["no key", "key.der", "PKCS#8"]);
    // Two server.<ext> files.
    z.place(
        PS2,
        &[
            ("server.pem", &full),
            ("server.der", &der(&work, &leaf)),
            ("key.der", &key),
        ],
    );
    z.assert_refused(
        PS2,
        &[
            "several server certificate files",
            "server.der, server.pem",
            "exactly one",
        ],
    );
    // Not a certificate file.
    z.place(PS2, &[("server.pem", b"hello"), ("key.der", &key)]);
    z.assert_refused(PS2, &["server.pem"]);
    // A key that is not the certificate's.
    let other = ServerKey::new(&work, "other", PS2);
    z.place(PS2, &[("server.pem", &full), ("key.der", &other.der())]);
    z.assert_refused(
        PS2,
        &["key.der does not match the certificate in server.pem", PS2],
    );
    // The chain without the intermediate: leaf alone (DER), and leaf with root (PEM). CE3's
    // sentence, naming the missing issuer.
    let int_cn = format!("{} Issuing CA", ext.name);
    z.place(
        PS2,
        &[("server.der", &der(&work, &leaf)), ("key.der", &key)],
    );
    z.assert_refused(PS2, &[NO_ISSUER_MESSAGE, &int_cn]);
    z.place(
        PS2,
        &[
            ("server.pem", &concat(&[&leaf, &ext.root_pem()])),
            ("key.der", &key),
        ],
    );
    z.assert_refused(PS2, &[NO_ISSUER_MESSAGE, &int_cn]);
    // A certificate from another CA, with that CA's complete chain.
    let stranger = ExtCa::new(&work, "Umbrella");
    let foreign = stranger.sign(&k.csr, By::Int, &Leaf::for_host(PS2), "foreign.pem");
    z.place(
        PS2,
        &[
            (
                "server.pem",
                &concat(&[&foreign, &stranger.int_pem(), &stranger.root_pem()]),
            ),
            ("key.der", &key),
        ],
    );
    z.assert_refused(PS2, &[NO_ISSUER_MESSAGE, "Umbrella Root"]);
    // A certificate (and its key) for another host.
    let k1 = ServerKey::new(&work, "ps1", PS1);
    let for_ps1 = ext.sign(&k1.csr, By::Int, &Leaf::for_host(PS1), "ps1.pem");
    z.place(
        PS2,
        &[
            (
                "server.pem",
                &concat(&[&for_ps1, &ext.int_pem(), &ext.root_pem()]),
            ),
            ("key.der", &k1.der()),
        ],
    );
    z.assert_refused(PS2, &[PS1, PS2]);
    // A wildcard for another domain does not name ps2 either.
    let kw = ServerKey::new(&work, "wrong-wildcard", "*.example");
    let wrong_wild = ext.sign(&kw.csr, By::Int, &Leaf::for_host("*.example"), "ww.pem");
    z.place(
        PS2,
        &[
            ("server.pem", &concat(&[&wrong_wild, &ext.int_pem()])),
            ("key.der", &kw.der()),
        ],
    );
    z.assert_refused(PS2, &[PS2]);
    // Keys in the traditional forms: the reason says how to convert. `openssl genpkey
    // -outform DER` writes one (SEC1) on OpenSSL 3.0.
    let convert = "openssl pkcs8 -topk8 -nocrypt -outform DER";
    let genpkey_der = read(&k.genpkey_der);
    if PrivateKey::from_pkcs8(&genpkey_der).is_err() {
        z.place(PS2, &[("server.pem", &full), ("key.der", &genpkey_der)]);
        z.assert_refused(PS2, &["key.der", "not PKCS#8", convert]);
    }
    for form in ["DER", "PEM"] {
        z.place(
            PS2,
            &[("server.pem", &full), ("key.der", &k.traditional(form))],
        );
        z.assert_refused(PS2, &["key.der", convert]);
    }
    let rsa = work.join("rsa.pkcs1.pem");
    ossl(
        &work,
        &["genrsa", "-traditional", "-out", path(&rsa), "2048"],
    );
    let rsa = read(&rsa);
    assert!(rsa.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    z.place(PS2, &[("server.pem", &full), ("key.der", &rsa)]);
    let reason = z.assert_refused(PS2, &["key.der", convert]);
    assert!(!reason.contains("MII"), "key material in: {reason}");

    // The other servers were never touched; devices applied.
    assert_ne!(z.member(PS1).status, "applied");
    assert_eq!(z.member("dev-1").status, "applied");

    // Finally the right files, in the PEM form of PKCS#8 and a PEM PKCS#7 bundle.
    let p7 = p7b(&work, &[&leaf, &ext.int_pem()], "PEM", "ps2.p7.pem");
    z.place(PS2, &[("server.p7b", &p7), ("key.der", &k.pkcs8_pem())]);
    z.assert_applied(&[PS2], &ext);
    // Staged material stays staged: a later refresh changes nothing.
    assert_eq!(z.refresh_one(PS2).outcome, "up-to-date");
    assert_eq!(z.member(PS2).status, "applied");
}

/// The reason shown before anything is placed names both files the administrator must place.
#[test]
fn manual_mode_empty_repository_names_server_ext_and_key_der() {
    let z = zone();
    let ext = InCrateCa::new(z.start);
    z.start_manual(ext.chain_upload());
    for s in SERVERS {
        let o = z.refresh_one(s);
        assert_eq!(o.outcome, "waiting", "{o:?}");
        let reason = o.detail.unwrap_or_default();
        for want in ["server.", ".p7b", "key.der"] {
            assert!(
                reason.contains(want),
                "{s}: {want:?} missing from: {reason}"
            );
        }
        let m = z.member(s);
        assert_eq!(m.status, "downloading", "{m:?}");
        assert_eq!(m.reason.as_deref(), Some(reason.as_str()));
    }
}

/// CE3: the administrator's certificate must chain to the future zone CA. The server's
/// current certificate (from the current, internal zone CA) with its key is no certificate
/// from the external CA.
#[test]
fn manual_mode_refuses_a_certificate_from_the_current_zone_ca() {
    let z = zone();
    let ext = InCrateCa::new(z.start);
    z.start_manual(ext.chain_upload());
    let cur = z.dir(PS2).join("current");
    let cert = read(&cur.join("cert.pem"));
    let key = read(&cur.join("key.pem"));
    z.place(PS2, &[("server.pem", &cert), ("key.der", &key)]);
    z.assert_refused(PS2, &[NO_ISSUER_MESSAGE]);
}

/// As for an imported certificate (SR5 Import Certificate): a certificate that expires before
/// the activation time is refused, or the server would switch to an expired certificate.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn manual_mode_refuses_a_certificate_expiring_before_activation() {
    common::require("openssl");
    let z = zone();
    let work = z.tmp.path().join("work");
    let ext = ExtCa::new(&work, "Globex");
    z.start_manual(ext.chain_upload());
    let k = ServerKey::new(&work, "ps2", PS2);
    let short = Leaf {
        days: 5,
        ..Leaf::for_host(PS2)
    };
    let leaf = ext.sign(&k.csr, By::Int, &short, "short.pem");
    let c = bundle::read_file(&leaf).unwrap();
    assert!(c[0].not_after() > z.svc.now() && c[0].not_after() < z.activation());
    z.place(
        PS2,
        &[
            ("server.pem", &concat(&[&leaf, &ext.int_pem()])),
            ("key.der", &k.der()),
        ],
    );
    z.assert_refused(PS2, &["expires", "activation"]);
}

/// S4, as for an imported certificate: a CA certificate is no server certificate, even when
/// it names the server.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn manual_mode_refuses_a_ca_certificate_as_server_certificate() {
    common::require("openssl");
    let z = zone();
    let work = z.tmp.path().join("work");
    let ext = ExtCa::new(&work, "Globex");
    z.start_manual(ext.chain_upload());
    let k = ServerKey::new(&work, "ps2", PS2);
    let ca_leaf = Leaf {
        ca: true,
        ..Leaf::for_host(PS2)
    };
    let leaf = ext.sign(&k.csr, By::Root, &ca_leaf, "ca-leaf.pem");
    assert!(bundle::read_file(&leaf).unwrap()[0].is_ca());
    z.place(PS2, &[("server.pem", &read(&leaf)), ("key.der", &k.der())]);
    let reason = z.assert_refused(PS2, &["CA"]);
    assert!(!reason.contains(NO_ISSUER_MESSAGE), "{reason}");
}

/// B5: the member staged the administrator's files, but the store lost the result (a crash
/// before the commit). The next refresh must find the member staged, not "no server
/// certificate" (staging consumed key.der and server.<ext>).
#[test]
fn manual_mode_staging_survives_a_lost_commit() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new(), None));
    let z = zone_over(Arc::clone(&store));
    let ext = InCrateCa::new(z.start);
    z.start_manual(ext.chain_upload());
    let (chain, key) = ext.server(PS2);
    z.place(PS2, &[("server.pem", &chain), ("key.der", &key)]);
    store.set_fail_after(Some(store.commits()));
    assert!(
        z.svc
            .refresh(&[PS2.into()], &RefreshOptions::default(), |_, _| {})
            .is_err(),
        "the commit must fail"
    );
    assert!(
        z.svc
            .transport()
            .with_agent(PS2, |a| a.staged().is_some())
            .unwrap(),
        "the agent staged before the commit failed"
    );
    store.set_fail_after(None);
    let o = z.refresh_one(PS2);
    assert_eq!(o.outcome, "applied", "{o:?}");
    assert_eq!(z.member(PS2).status, "applied");
    assert_eq!(z.cert_status(PS2), "new certificate uploaded");
}

// ---------------------------------------------------------------------------------------------
// `read_manual_material` alone (no openssl): every file name CE2 allows, each content form.

/// An external CA made with the crate's own functions (as tests/change_ca.rs does).
struct InCrateCa {
    root: Certificate,
    int: Certificate,
    int_key: PrivateKey,
    now: Timestamp,
}

impl InCrateCa {
    fn new(now: Timestamp) -> Self {
        let p = |cn: &str| CaParams {
            common_name: cn.into(),
            validity: 10.try_into().unwrap(),
        };
        let root_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let root =
            self_signed_ca(&root_key, &p("Hooli Root"), &Serial::random().unwrap(), now).unwrap();
        let int_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let int_self = self_signed_ca(
            &int_key,
            &p("Hooli Issuing CA"),
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        let int =
            cross_certify(&root, &root_key, &int_self, &Serial::random().unwrap(), now).unwrap();
        InCrateCa {
            root,
            int,
            int_key,
            now,
        }
    }

    fn chain_upload(&self) -> Vec<u8> {
        bundle::to_pem(&[self.int.der().clone(), self.root.der().clone()]).into_bytes()
    }

    fn leaf(&self, fqdn: &str) -> (Certificate, PrivateKey) {
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let csr = build_csr(&CsrRequest::default_for(fqdn), &key).unwrap();
        let csr = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
        let profile = ServerProfile {
            fqdn: fqdn.into(),
            ..Default::default()
        };
        let leaf = issue_server_certificate(
            &self.int,
            &self.int_key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            self.now,
        )
        .unwrap();
        (leaf, key)
    }

    /// A PEM chain (leaf, intermediate, root) and a PKCS#8 DER key for `fqdn`.
    fn server(&self, fqdn: &str) -> (Vec<u8>, Vec<u8>) {
        let (leaf, key) = self.leaf(fqdn);
        let chain = bundle::to_pem(&[
            leaf.der().clone(),
            self.int.der().clone(),
            self.root.der().clone(),
        ]);
        (chain.into_bytes(), key.to_pkcs8_der().to_vec())
    }
}

fn files(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect()
}

#[test]
fn read_manual_material_accepts_every_name_and_every_form() {
    let ca = InCrateCa::new(Timestamp::from_unix(1_800_000_000).unwrap());
    let (leaf, key) = ca.leaf(PS2);
    let ders: Vec<CertificateDer> = vec![leaf.der().clone(), ca.int.der().clone()];
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("PEM", bundle::to_pem(&ders).into_bytes()),
        ("DER PKCS#7", bundle::to_pkcs7_der(&ders)),
        ("PEM PKCS#7", bundle::to_pkcs7_pem(&ders).into_bytes()),
        ("DER", leaf.der().as_bytes().to_vec()),
    ];
    let keys: Vec<(&str, Vec<u8>)> = vec![
        ("PKCS#8 DER", key.to_pkcs8_der().to_vec()),
        ("PKCS#8 PEM", key.to_pkcs8_pem().as_bytes().to_vec()),
    ];
    for name in MANUAL_CHAIN_FILES {
        for (form, bytes) in &forms {
            for (key_form, key_bytes) in &keys {
                let m = read_manual_material(&files(&[(name, bytes), ("key.der", key_bytes)]))
                    .unwrap_or_else(|e| panic!("{name} as {form}, key as {key_form}: {e}"));
                assert_eq!(m.chain[0].der(), leaf.der(), "{name} {form}");
                let want = if *form == "DER" { 1 } else { 2 };
                assert_eq!(m.chain.len(), want, "{name} {form}");
                assert_eq!(m.key.public_key_info(), key.public_key_info());
            }
        }
    }
}

#[test]
fn read_manual_material_moves_the_keys_certificate_to_the_front() {
    let ca = InCrateCa::new(Timestamp::from_unix(1_800_000_000).unwrap());
    let (leaf, key) = ca.leaf(PS2);
    let reversed = bundle::to_pem(&[
        ca.root.der().clone(),
        ca.int.der().clone(),
        leaf.der().clone(),
    ]);
    let m = read_manual_material(&files(&[
        ("notes.txt", b"ignored"),
        ("key.der", &key.to_pkcs8_der()),
        ("server.pem", reversed.as_bytes()),
    ]))
    .unwrap();
    let subjects: Vec<String> = m.chain.iter().map(Certificate::subject).collect();
    assert_eq!(
        subjects,
        [leaf.subject(), ca.root.subject(), ca.int.subject()]
    );
}

#[test]
fn read_manual_material_errors() {
    let ca = InCrateCa::new(Timestamp::from_unix(1_800_000_000).unwrap());
    let (leaf, key) = ca.leaf(PS2);
    let (_, other_key) = ca.leaf(PS2);
    let pem = bundle::to_pem(&[leaf.der().clone(), ca.int.der().clone()]);
    let key_der = key.to_pkcs8_der().to_vec();
    let err = |list: &[(&str, &[u8])]| read_manual_material(&files(list)).unwrap_err();

    assert_eq!(err(&[]), ManualError::MissingChain);
    assert_eq!(
        err(&[("key.der", &key_der), ("server.key", pem.as_bytes())]),
        ManualError::MissingChain
    );
    assert_eq!(
        err(&[("server.pem", pem.as_bytes())]),
        ManualError::MissingKey
    );
    assert_eq!(
        err(&[
            ("server.crt", pem.as_bytes()),
            ("server.cert", pem.as_bytes()),
            ("key.der", &key_der),
        ]),
        ManualError::SeveralChains("server.crt, server.cert".into())
    );
    assert!(matches!(
        err(&[("server.pem", b"nonsense"), ("key.der", &key_der)]),
        ManualError::BadChain { file, .. } if file == "server.pem"
    ));
    let e = err(&[("server.pem", pem.as_bytes()), ("key.der", b"nonsense")]);
    assert!(matches!(e, ManualError::BadKey(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("openssl pkcs8 -topk8 -nocrypt -outform DER"),
        "{e}"
    );
    assert_eq!(
        err(&[
            ("server.pem", pem.as_bytes()),
            ("key.der", &other_key.to_pkcs8_der()),
        ]),
        ManualError::KeyMismatch {
            file: "server.pem".into(),
            subject: leaf.subject(),
        }
    );
    // The debug form of the material never shows the key.
    let m = read_manual_material(&files(&[
        ("server.pem", pem.as_bytes()),
        ("key.der", &key_der),
    ]))
    .unwrap();
    assert!(format!("{m:?}").contains("[secret key elided]"));
}
