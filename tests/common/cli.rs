//! The command-line harness of the tests/zonectl*.rs files: a zone in a temporary directory
//! driven through `examples/zonectl.rs`, an external CA made with the `openssl` CLI, and small
//! helpers for their output. Included with `#[path = "common/cli.rs"] mod cli;` next to
//! `mod common;`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use zonepki::clock::Timestamp;

use crate::common;

pub const PS1: &str = "ps1.acme.example";
pub const PS2: &str = "ps2.acme.example";
pub const SAT: &str = "sat.acme.example";
pub const CONTENT: &str = "content.acme.example";

/// The passphrase variables; unset in every run unless given.
pub const PASS_ENV: &str = "ZONECTL_PASSPHRASE";
pub const CONFIRM_ENV: &str = "ZONECTL_PASSPHRASE_CONFIRM";

/// A zone in a temporary directory: its store is `zone.db` and its members' files are under
/// `fleet/`.
pub struct Zone {
    pub dir: tempfile::TempDir,
}

/// A zonectl run's exit code (-1 when killed by a signal) and output.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Zone {
    pub fn new() -> Self {
        Zone {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// ps1 (CA, `init_extra` added to its init), ps2, sat under ps2, content, dev-1 ..
    /// dev-`devices`, all at `now`, every agent refreshed once.
    pub fn fleet(init_extra: &[&str], devices: &str, now: &str) -> Self {
        let z = Zone::new();
        z.init_acme(init_extra, now);
        z.ok(&["server", "add", PS2, "--role", "primary", "--now", now]);
        z.ok(&[
            "server",
            "add",
            SAT,
            "--role",
            "auth-satellite",
            "--parent",
            PS2,
            "--now",
            now,
        ]);
        z.ok(&[
            "server",
            "add",
            CONTENT,
            "--role",
            "content-satellite",
            "--now",
            now,
        ]);
        if devices != "0" {
            z.ok(&["device", "add", "--count", devices, "--now", now]);
        }
        z.ok(&["fleet", "refresh", "--all", "--now", now]);
        z
    }

    /// `init --zone Acme --first-server ps1.acme.example`, then `extra`, at `now`.
    pub fn init_acme(&self, extra: &[&str], now: &str) {
        let mut args = vec!["init", "--zone", "Acme", "--first-server", PS1];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--now", now]);
        self.ok(&args);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs zonectl with standard input closed (no terminal, so no prompt) and, of the
    /// passphrase variables, only those in `env` set.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(common::zonectl_bin());
        cmd.args(args)
            .env("ZONECTL_STORE", self.path("zone.db"))
            .env_remove(PASS_ENV)
            .env_remove(CONFIRM_ENV)
            .args(["--root", self.path("fleet").to_str().unwrap()])
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let o = self.run_env(args, env);
        assert_eq!(o.code, 0, "{args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_env(args, &[])
    }

    /// Runs a command with `--json` that must succeed; returns its output parsed.
    pub fn json_env(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok_env(&a, env)).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.json_env(args, &[])
    }

    /// Runs a command that must be refused (exit 1, one `error:` line) without changing the
    /// store; returns stderr.
    pub fn refused_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let before = self.ok(&["store", "dump"]);
        let o = self.run_env(args, env);
        assert_eq!(
            o.code, 1,
            "{args:?} should be refused: {}{}",
            o.stdout, o.stderr
        );
        assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert_eq!(
            before,
            self.ok(&["store", "dump"]),
            "{args:?} changed the store"
        );
        o.stderr
    }

    pub fn refused(&self, args: &[&str]) -> String {
        self.refused_env(args, &[])
    }

    /// A usage error: exit 2, store unchanged (if there is one).
    pub fn usage(&self, args: &[&str]) {
        let before = self
            .path("zone.db")
            .exists()
            .then(|| self.ok(&["store", "dump"]));
        let o = self.run(args);
        assert_eq!(o.code, 2, "{args:?} should be a usage error: {}", o.stderr);
        if let Some(before) = before {
            assert_eq!(before, self.ok(&["store", "dump"]), "{args:?}");
        }
    }

    /// A refused init: exit 1, one `error:` line, and no store file.
    pub fn init_refused(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}{}", o.stdout, o.stderr);
        assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert!(!self.path("zone.db").exists(), "{args:?} left a store");
        o.stderr
    }

    /// A usage error (exit 2) that leaves no store (only init is tried this way).
    pub fn init_usage(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 2, "{args:?} should be a usage error: {}", o.stderr);
        assert!(!self.path("zone.db").exists(), "{args:?} left a store");
        o.stderr
    }

    /// Whether a member's `file` exists.
    pub fn exists(&self, member: &str, file: &str) -> bool {
        self.path("fleet").join(member).join(file).exists()
    }

    /// A member's file, as a path string.
    pub fn member_file(&self, member: &str, file: &str) -> String {
        self.path("fleet")
            .join(member)
            .join(file)
            .to_str()
            .unwrap()
            .to_string()
    }

    /// Whether `leaf` (a file with the leaf first) validates against `trust` at `at`, by
    /// `zonectl chain verify`.
    pub fn verifies(&self, trust: &str, leaf: &str, at: &str) -> bool {
        self.run(&[
            "chain", "verify", "--trust", trust, "--leaf", leaf, "--at", at,
        ])
        .code
            == 0
    }

    /// `openssl ARGS` in the zone's directory (with `env`); must succeed. Returns stdout and
    /// stderr.
    pub fn openssl_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = Command::new("openssl");
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (ok, text) = common::run(&mut cmd);
        assert!(ok, "openssl {args:?} failed: {text}");
        text
    }

    pub fn openssl(&self, args: &[&str]) -> String {
        self.openssl_env(args, &[])
    }

    /// `openssl verify` of a member's current certificate (the first one in its cert.pem)
    /// against `ca_file`, with `untrusted` intermediates, at `at`.
    pub fn openssl_verifies(&self, member: &str, ca_file: &str, untrusted: &[&str], at: &str) {
        let cert = self.member_file(member, "current/cert.pem");
        let attime = at.parse::<Timestamp>().unwrap().unix().to_string();
        let mut args = vec!["verify", "-attime", &attime, "-CAfile", ca_file];
        for u in untrusted {
            args.extend_from_slice(&["-untrusted", u]);
        }
        args.push(&cert);
        let out = self.openssl(&args);
        assert!(out.contains(": OK"), "{member}: {out}");
    }

    /// [`Zone::openssl_verifies`], and the member's current key is the certificate's.
    pub fn openssl_verifies_with_key(
        &self,
        member: &str,
        ca_file: &str,
        untrusted: &[&str],
        at: &str,
    ) {
        self.openssl_verifies(member, ca_file, untrusted, at);
        let cert = self.member_file(member, "current/cert.pem");
        let key = self.member_file(member, "current/key.pem");
        assert_eq!(
            self.openssl(&["pkey", "-in", &key, "-pubout"]),
            self.openssl(&["x509", "-in", &cert, "-pubkey", "-noout"]),
            "{member}'s key is not its certificate's"
        );
    }
}

/// Times: offsets from the next UTC midnight after the test starts (openssl's certificates
/// start at the real clock).
pub struct Times {
    base: i64,
}

impl Times {
    pub fn new() -> Self {
        let now = Timestamp::now_utc().unix();
        Times {
            base: (now / 86_400 + 1) * 86_400,
        }
    }

    /// `days` days and `hours` hours after the base, RFC 3339.
    pub fn at(&self, days: i64, hours: i64) -> String {
        Timestamp::from_unix(self.base + days * 86_400 + hours * 3600)
            .unwrap()
            .to_rfc3339()
    }
}

/// A new EC P-256 key from openssl, PKCS#8 PEM, as `out` in the zone's directory.
pub fn new_key(z: &Zone, out: &str) {
    z.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        out,
    ]);
}

/// A CSR for `key` with the subject CN=`cn`, as `out`; needs the `req.cnf` that
/// [`ExternalCa::new`] writes.
fn new_csr(z: &Zone, key: &str, cn: &str, out: &str) {
    z.openssl(&[
        "req",
        "-new",
        "-config",
        "req.cnf",
        "-key",
        key,
        "-subj",
        &format!("/CN={cn}"),
        "-out",
        out,
    ]);
}

/// An external CA made with openssl in the zone's directory: `<p>root.pem`, `<p>int.pem` and
/// `<p>chain.pem` (intermediate, then root).
pub struct ExternalCa {
    prefix: String,
}

impl ExternalCa {
    pub fn new(z: &Zone, prefix: &str, name: &str) -> Self {
        std::fs::write(z.path("req.cnf"), "[req]\ndistinguished_name = dn\n[dn]\n").unwrap();
        std::fs::write(
            z.path("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n",
        )
        .unwrap();
        let f = |n: &str| format!("{prefix}{n}");
        for key in ["root.key", "int.key"] {
            new_key(z, &f(key));
        }
        z.openssl(&[
            "req",
            "-x509",
            "-new",
            "-config",
            "req.cnf",
            "-key",
            &f("root.key"),
            "-sha256",
            "-days",
            "3650",
            "-subj",
            &format!("/CN={name} Root"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-out",
            &f("root.pem"),
        ]);
        new_csr(
            z,
            &f("int.key"),
            &format!("{name} Issuing CA"),
            &f("int.csr"),
        );
        z.openssl(&[
            "x509",
            "-req",
            "-in",
            &f("int.csr"),
            "-CA",
            &f("root.pem"),
            "-CAkey",
            &f("root.key"),
            "-CAcreateserial",
            "-CAserial",
            &f("root.srl"),
            "-days",
            "3000",
            "-sha256",
            "-extfile",
            "ca.ext",
            "-out",
            &f("int.pem"),
        ]);
        let mut chain = std::fs::read(z.path(&f("int.pem"))).unwrap();
        chain.extend(std::fs::read(z.path(&f("root.pem"))).unwrap());
        std::fs::write(z.path(&f("chain.pem")), chain).unwrap();
        ExternalCa {
            prefix: prefix.into(),
        }
    }

    pub fn file(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Signs `csr` (a file in the zone's directory) for `fqdn` with the intermediate, valid
    /// for 825 days from the real clock, without a key usage; writes `out` (the leaf alone,
    /// PEM).
    pub fn sign(&self, z: &Zone, fqdn: &str, csr: &str, out: &str) {
        self.sign_leaf(z, fqdn, csr, 825, "", out);
    }

    /// As [`ExternalCa::sign`], but valid for `days` days and with the key usage
    /// `critical,digitalSignature`.
    pub fn sign_days(&self, z: &Zone, fqdn: &str, csr: &str, days: u32, out: &str) {
        self.sign_leaf(
            z,
            fqdn,
            csr,
            days,
            "keyUsage=critical,digitalSignature\n",
            out,
        );
    }

    fn sign_leaf(&self, z: &Zone, fqdn: &str, csr: &str, days: u32, key_usage: &str, out: &str) {
        let ext = format!("{out}.ext");
        std::fs::write(
            z.path(&ext),
            format!(
                "subjectAltName=DNS:{fqdn}\nbasicConstraints=CA:FALSE\n{key_usage}\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .unwrap();
        z.openssl(&[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            &self.file("int.pem"),
            "-CAkey",
            &self.file("int.key"),
            "-CAcreateserial",
            "-CAserial",
            &self.file("int.srl"),
            "-days",
            &days.to_string(),
            "-sha256",
            "-extfile",
            &ext,
            "-out",
            out,
        ]);
    }

    /// A key (`<name>.key`, PKCS#8 PEM) and a certificate (`<name>.pem`, by
    /// [`ExternalCa::sign_days`]) for `fqdn`, made outside zonepki, valid for `days` days.
    pub fn server(&self, z: &Zone, fqdn: &str, name: &str, days: u32) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        new_key(z, &key);
        new_csr(z, &key, fqdn, &csr);
        self.sign_days(z, fqdn, &csr, days, &format!("{name}.pem"));
    }

    /// `leaf` followed by the intermediate, PEM, as `out`.
    pub fn pem_chain(&self, z: &Zone, leaf: &str, out: &str) {
        let mut data = std::fs::read(z.path(leaf)).unwrap();
        data.extend(std::fs::read(z.path(&self.file("int.pem"))).unwrap());
        std::fs::write(z.path(out), data).unwrap();
    }
}

/// Extracts `zip` into `dir` with the `unzip` CLI, or else python3's zipfile; returns the
/// names of the extracted files, sorted. None outside CI when neither tool is installed.
pub fn unzip(z: &Zone, zip: &str, dir: &str) -> Vec<String> {
    let has_unzip = Command::new("sh")
        .args(["-c", "command -v unzip"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut cmd = if has_unzip {
        let mut c = Command::new("unzip");
        c.args(["-q", "-o", zip, "-d", dir]);
        c
    } else {
        let mut c = common::tool("python3");
        c.args(["-m", "zipfile", "-e", zip, dir]);
        c
    };
    let (ok, text) = common::run(cmd.current_dir(z.dir.path()));
    assert!(ok, "extracting {zip}: {text}");
    let mut names: Vec<String> = std::fs::read_dir(z.path(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `name`'s entry in an array of objects keyed by `key`.
pub fn entry<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

/// Borrows owned arguments as the `&[&str]` that [`Zone`]'s methods take.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
