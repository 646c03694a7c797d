//! CA custody and the zone's other beginnings through `examples/zonectl.rs`
//! (../shared/ZONECTL.md, "CA custody" and "Zone and members"): `ca move` (MV1), `ca backup`
//! and `ca restore` (BK1, BK2, S5) with the passphrase from the environment, `init
//! --external-chain` (Z3, CE3), and the emergency replacement of an expired server certificate,
//! `server replace` (SR6), with an internal and with an external CA.
//!
//! External CAs are made with the `openssl` CLI, which also reads the backup's encrypted key
//! (`-passin env:`, so the passphrase is never on a command line) and verifies the members'
//! files. Times go through --now; no sleeps. Tests with openssl-made certificates use fixed
//! offsets from the next UTC midnight, since openssl's certificates start at the real clock.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use cli::{CONFIRM_ENV, CONTENT, ExternalCa, PASS_ENV, PS1, PS2, SAT, Times, Zone, strs, unzip};

use std::path::Path;
use std::process::{Command, Stdio};

use zonepki::chain::NO_ISSUER_MESSAGE;

/// The backup passphrase of these tests.
const PASS: &str = "correct horse battery staple";

/// Both passphrase variables set to `p` (a backup's "typed twice").
fn twice(p: &str) -> Vec<(&'static str, &str)> {
    vec![(PASS_ENV, p), (CONFIRM_ENV, p)]
}

/// The permission bits of a file.
#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const T0: &str = "2027-01-01T00:00:00Z";
const T1: &str = "2027-01-02T00:00:00Z";
const PS3: &str = "ps3.acme.example";

/// An internal-CA zone at T0: ps1 (CA), ps2, sat under ps2, content, dev-1 .. dev-3, every
/// agent refreshed once. `valid_years` is the CA's validity.
fn internal_zone(valid_years: &str) -> Zone {
    Zone::fleet(&["--valid-years", valid_years], "3", T0)
}

fn certificate_server(z: &Zone) -> String {
    let ca = z.json(&["ca", "show", "--now", T1]);
    ca["certificate_server"].as_str().unwrap().to_string()
}

/// Who holds the CA key on disk: the members with a `ca/key.pem`.
fn ca_key_holders(z: &Zone) -> Vec<String> {
    let mut holders: Vec<String> = std::fs::read_dir(z.path("fleet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|m| Path::new(&z.member_file(m, "ca/key.pem")).exists())
        .collect();
    holders.sort();
    holders
}

/// `server add` of a new Primary Server, whose certificate must chain to the zone CA: proof
/// that the current certificate server issues.
fn add_and_check_issuing(z: &Zone, fqdn: &str) {
    z.ok(&["server", "add", fqdn, "--role", "primary", "--now", T1]);
    z.ok(&["ca", "export", "--out", "zone-ca.pem", "--now", T1]);
    let leaf = z.member_file(fqdn, "current/cert.pem");
    let out = z.ok(&[
        "chain",
        "verify",
        "--trust",
        "zone-ca.pem",
        "--leaf",
        &leaf,
        "--at",
        T1,
    ]);
    assert!(out.contains(&format!("CN={fqdn}")), "{out}");
}

#[test]
fn ca_move_refusals_then_the_role_and_key_move() {
    let z = internal_zone("10");
    assert_eq!(ca_key_holders(&z), [PS1]);

    // Only a Primary Server can hold the CA role, and not the one that holds it.
    for (to, why) in [
        (SAT, "not a Primary Server"),
        (CONTENT, "not a Primary Server"),
        ("nobody.acme.example", "not a Primary Server"),
        (PS1, "already holds the CA role"),
    ] {
        let e = z.refused(&["ca", "move", "--to", to, "--now", T1]);
        assert!(e.contains(why) && e.contains(to), "{to}: {e}");
    }
    assert_eq!(
        z.run(&["ca", "move", "--now", T1]).code,
        2,
        "--to is required"
    );

    // Not while an operation runs, and the refusal names it.
    z.ok(&[
        "ca",
        "remint",
        "--activate-at",
        "2027-03-01T00:00:00Z",
        "--update-name",
        "Spring remint",
        "--now",
        T1,
    ]);
    let e = z.refused(&["ca", "move", "--to", PS2, "--now", T1]);
    assert!(
        e.contains("Remint CA") && e.contains("Spring remint") && e.contains("Move CA role"),
        "{e}"
    );
    z.ok(&["op", "cancel", "--now", T1]);
    z.ok(&["fleet", "refresh", "--all", "--now", T1]);
    assert_eq!(certificate_server(&z), PS1);

    let before = z.json(&["ca", "show", "--now", T1]);
    let moved = z.json(&["ca", "move", "--to", PS2, "--now", T1]);
    assert_eq!(moved["certificate_server"], PS2);
    assert_eq!(moved["sha256"], before["sha256"], "the same CA, elsewhere");
    let shown = z.json(&["ca", "show", "--now", T1]);
    assert_eq!(shown["certificate_server"], PS2);
    assert_eq!(shown["sha256"], before["sha256"]);
    let servers = z.json(&["server", "list", "--now", T1]);
    let holder: Vec<&str> = servers
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["certificate_server"] == true)
        .map(|s| s["fqdn"].as_str().unwrap())
        .collect();
    assert_eq!(holder, [PS2]);

    // The key file moved: the new holder has it (0600), the old one none.
    assert_eq!(ca_key_holders(&z), [PS2]);
    let key = z.path("fleet").join(PS2).join("ca/key.pem");
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);
    assert!(!z.path("fleet").join(PS1).join("ca/key.pem").exists());

    // The new holder issues.
    add_and_check_issuing(&z, PS3);
    let out = z.ok(&["audit", "verify"]);
    assert!(out.contains("OK"), "{out}");
    let dump = z.ok(&["store", "dump"]);
    assert!(!dump.contains("PRIVATE KEY"));
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn ca_backup_passphrase_rules_and_an_archive_openssl_reads() {
    let z = internal_zone("10");
    let backup = ["ca", "backup", "--out", "ca-backup.zip", "--now", T1];

    // Without a passphrase: refused, saying how to give one.
    let e = z.refused(&backup);
    assert!(
        e.contains(PASS_ENV) && e.contains(CONFIRM_ENV) && e.contains("terminal"),
        "{e}"
    );
    // Given once only: refused (BK1: typed twice).
    let e = z.refused_env(&backup, &[(PASS_ENV, PASS)]);
    assert!(e.contains(CONFIRM_ENV), "{e}");
    let e = z.refused_env(&backup, &[(CONFIRM_ENV, PASS)]);
    assert!(e.contains(PASS_ENV), "{e}");
    // Too short, blank, or two different entries.
    let e = z.refused_env(&backup, &twice("short"));
    assert!(e.contains("too short") && e.contains("10"), "{e}");
    let e = z.refused_env(&backup, &twice("            "));
    assert!(e.contains("white space"), "{e}");
    let e = z.refused_env(
        &backup,
        &[
            (PASS_ENV, PASS),
            (CONFIRM_ENV, "correct horse battery stapler"),
        ],
    );
    assert!(e.contains("differ"), "{e}");
    // No option takes a passphrase.
    let mut with_arg = backup.to_vec();
    with_arg.extend_from_slice(&["--passphrase", PASS]);
    assert_eq!(z.run(&with_arg).code, 2);
    assert!(!z.path("ca-backup.zip").exists(), "a refusal wrote a file");

    // A backup: 0600, the passphrase printed nowhere, recorded in the audit log.
    let o = z.run_env(&backup, &twice(PASS));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        !o.stdout.contains(PASS) && !o.stderr.contains(PASS),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let zip = z.path("ca-backup.zip");
    #[cfg(unix)]
    assert_eq!(mode(&zip), 0o600);
    let data = std::fs::read(&zip).unwrap();
    assert!(data.starts_with(b"PK"));
    assert!(!String::from_utf8_lossy(&data).contains("BEGIN PRIVATE KEY"));
    let dump = z.ok(&["store", "dump"]);
    assert!(dump.contains("ca.backup"), "the backup is audited");
    assert!(!dump.contains(PASS));

    // Never over an existing file, and no temporary file is left behind.
    let e = z.refused_env(&backup, &twice(PASS));
    assert!(e.contains("exists"), "{e}");
    assert_eq!(
        std::fs::read(&zip).unwrap(),
        data,
        "the old backup was touched"
    );
    std::fs::write(z.path("other.zip"), "mine").unwrap();
    z.refused_env(
        &["ca", "backup", "--out", "other.zip", "--now", T1],
        &twice(PASS),
    );
    assert_eq!(std::fs::read(z.path("other.zip")).unwrap(), b"mine");
    // A place that cannot be written: refused before anything is recorded.
    z.refused_env(
        &["ca", "backup", "--out", "no-such-dir/b.zip", "--now", T1],
        &twice(PASS),
    );
    let mut files: Vec<String> = std::fs::read_dir(z.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert!(
        files.iter().all(|f| !f.ends_with(".tmp")),
        "temporary files left: {files:?}"
    );

    // The archive's content: the four entries; openssl decrypts the key (passphrase through
    // the environment, never on a command line) and it is the CA certificate's key.
    common::require("openssl");
    let names = unzip(&z, "ca-backup.zip", "x");
    assert_eq!(
        names,
        ["ca-key.p8.pem", "ca.pem", "manifest.json", "manifest.mac"]
    );
    let key = std::fs::read_to_string(z.path("x/ca-key.p8.pem")).unwrap();
    assert!(key.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{key}");
    let public = z.openssl_env(
        &[
            "pkey",
            "-in",
            "x/ca-key.p8.pem",
            "-passin",
            &format!("env:{PASS_ENV}"),
            "-pubout",
        ],
        &[(PASS_ENV, PASS)],
    );
    assert!(public.contains("BEGIN PUBLIC KEY"), "{public}");
    assert_eq!(
        public,
        z.openssl(&["x509", "-pubkey", "-noout", "-in", "x/ca.pem"])
    );
    z.ok(&["ca", "export", "--out", "zone-ca.pem", "--now", T1]);
    assert_eq!(
        public,
        z.openssl(&["x509", "-pubkey", "-noout", "-in", "zone-ca.pem"])
    );
    // The key is encrypted as S5 says.
    let params = z.openssl(&["asn1parse", "-in", "x/ca-key.p8.pem"]);
    for alg in ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"] {
        assert!(params.contains(alg), "{alg} missing: {params}");
    }
    // And a wrong passphrase does not decrypt it.
    let (ok, _) = common::run(
        Command::new("openssl")
            .args(["pkey", "-in", "x/ca-key.p8.pem", "-passin"])
            .arg(format!("env:{PASS_ENV}"))
            .env(PASS_ENV, "wrong passphrase!")
            .current_dir(z.dir.path())
            .stdin(Stdio::null()),
    );
    assert!(!ok, "openssl decrypted the key with a wrong passphrase");
}

/// `data` with the byte at `at` changed (still printable, so a text entry stays text).
fn flipped(data: &[u8], at: usize) -> Vec<u8> {
    let mut d = data.to_vec();
    d[at] = if d[at] == b'A' { b'B' } else { b'A' };
    d
}

/// `archive` rewritten entry by entry through `edit` (name, content -> new content, or None to
/// leave the entry out), with valid zip checksums: tampering that only the archive's own
/// integrity checks can find.
fn rezip(archive: &[u8], mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&name, data) {
            out.start_file(name, options).unwrap();
            out.write_all(&data).unwrap();
        }
    }
    out.finish().unwrap().into_inner()
}

fn find(data: &[u8], what: &[u8]) -> usize {
    data.windows(what.len())
        .position(|w| w == what)
        .unwrap_or_else(|| panic!("{} not in the archive", String::from_utf8_lossy(what)))
}

#[test]
fn ca_restore_refusals_same_server_and_another_primary() {
    let z = internal_zone("10");
    z.ok_env(
        &["ca", "backup", "--out", "b.zip", "--now", T1],
        &twice(PASS),
    );
    let data = std::fs::read(z.path("b.zip")).unwrap();
    let restore = |file: &str, to: &str| -> Vec<String> {
        ["ca", "restore", "--file", file, "--to", to, "--now", T1]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let refused = |args: Vec<String>, env: &[(&str, &str)]| {
        let e = z.refused_env(&strs(&args), env);
        assert_eq!(ca_key_holders(&z), [PS1], "{args:?} moved the key");
        e
    };
    let pass = [(PASS_ENV, PASS)];

    // The passphrase: required, never from an argument, never printed.
    let e = refused(restore("b.zip", PS1), &[]);
    assert!(e.contains(PASS_ENV) && e.contains("terminal"), "{e}");
    let e = refused(restore("b.zip", PS1), &[(PASS_ENV, "a wrong passphrase")]);
    assert!(e.contains("wrong passphrase"), "{e}");
    assert!(!e.contains(PASS));

    // Damaged, altered, truncated, not an archive at all, missing.
    let key_body = find(&data, b"ENCRYPTED PRIVATE KEY-----\n") + 40;
    let created = find(&data, b"\"created_at\"") + 17;
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "key.zip",
            flipped(&data, key_body),
            &["damaged", "altered", "tampered"],
        ),
        (
            "manifest.zip",
            flipped(&data, created),
            &["damaged", "altered", "tampered"],
        ),
        ("half.zip", data[..data.len() / 2].to_vec(), &["truncated"]),
        (
            "short.zip",
            data[..data.len() - 10].to_vec(),
            &["truncated", "damaged"],
        ),
        ("text.zip", b"hello, not a zip\n".to_vec(), &["not a zip"]),
    ];
    for (name, bytes, words) in cases {
        std::fs::write(z.path(name), bytes).unwrap();
        let e = refused(restore(name, PS1), &pass);
        assert!(words.iter().any(|w| e.contains(w)), "{name}: {e}");
        assert!(e.contains("copy") || e.contains("check the file"), "{e}");
    }
    let e = refused(restore("missing.zip", PS1), &pass);
    assert!(e.contains("missing.zip"), "{e}");
    // Only a Primary Server can receive the CA.
    let e = refused(restore("b.zip", SAT), &pass);
    assert!(e.contains("not a Primary Server"), "{e}");

    // Another zone's CA backup is refused, even with its right passphrase.
    let other = Zone::new();
    other.ok(&[
        "init",
        "--zone",
        "Other",
        "--first-server",
        PS1,
        "--now",
        T0,
    ]);
    other.ok_env(
        &["ca", "backup", "--out", "o.zip", "--now", T1],
        &twice(PASS),
    );
    std::fs::copy(other.path("o.zip"), z.path("o.zip")).unwrap();
    let e = refused(restore("o.zip", PS2), &pass);
    assert!(
        e.contains("CN=Other") && e.contains("not this zone's CA"),
        "{e}"
    );

    // Tampering with valid zip checksums: an altered manifest fails the passphrase-keyed
    // integrity check; another archive's key fails the manifest's hash; an extra entry and a
    // missing one are refused.
    let theirs = std::fs::read(other.path("o.zip")).unwrap();
    let their_key = {
        let mut key = None;
        rezip(&theirs, |name, data| {
            if name == "ca-key.p8.pem" {
                key = Some(data.clone());
            }
            Some(data)
        });
        key.unwrap()
    };
    let tampered: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "t-manifest.zip",
            rezip(&data, |name, data| {
                Some(if name == "manifest.json" {
                    String::from_utf8(data)
                        .unwrap()
                        .replace(
                            "\"created_at\": \"2027-01-02",
                            "\"created_at\": \"2027-01-03",
                        )
                        .into_bytes()
                } else {
                    data
                })
            }),
            "altered",
        ),
        (
            "t-key.zip",
            rezip(&data, |name, data| {
                Some(if name == "ca-key.p8.pem" {
                    their_key.clone()
                } else {
                    data
                })
            }),
            "altered",
        ),
        (
            "t-missing.zip",
            rezip(&data, |name, data| (name != "manifest.mac").then_some(data)),
            "manifest.mac",
        ),
    ];
    for (name, bytes, word) in tampered {
        assert_ne!(bytes, data, "{name} is unchanged");
        std::fs::write(z.path(name), bytes).unwrap();
        let e = refused(restore(name, PS1), &pass);
        assert!(e.contains(word), "{name}: {e}");
    }

    // Restore onto the holder itself: nothing moves.
    let before = z.json(&["ca", "show", "--now", T1]);
    let o = z.run_env(&strs(&restore("b.zip", PS1)), &pass);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(!o.stdout.contains(PASS) && !o.stderr.contains(PASS));
    assert_eq!(certificate_server(&z), PS1);
    assert_eq!(ca_key_holders(&z), [PS1]);

    // The certificate server is lost: restore onto another Primary Server, which takes the
    // role; the lost one's key is dropped if it is ever reached again.
    std::fs::remove_file(z.member_file(PS1, "ca/key.pem")).unwrap();
    let view = z.json_env(&strs(&restore("b.zip", PS2)), &pass);
    assert_eq!(view["certificate_server"], PS2);
    assert_eq!(view["sha256"], before["sha256"]);
    assert_eq!(certificate_server(&z), PS2);
    assert_eq!(ca_key_holders(&z), [PS2]);
    #[cfg(unix)]
    assert_eq!(mode(&z.path("fleet").join(PS2).join("ca/key.pem")), 0o600);
    add_and_check_issuing(&z, PS3);
    let dump = z.ok(&["store", "dump"]);
    assert!(dump.contains("ca.restore"), "the restore is audited");
    let out = z.ok(&["audit", "verify"]);
    assert!(out.contains("OK"), "{out}");
}

/// `init --external-chain` arguments for ps1 at `now`.
fn init_external(chain: &str, server_chain: &str, key: &str, now: &str) -> Vec<String> {
    [
        "init",
        "--zone",
        "Acme",
        "--first-server",
        PS1,
        "--external-chain",
        chain,
        "--server-chain",
        server_chain,
        "--server-key",
        key,
        "--dns",
        "alias.acme.example",
        "--agent-version",
        "24.4",
        "--now",
        now,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn init_with_an_external_ca_and_its_refusals() {
    common::require("openssl");
    let t = Times::new();
    let now = t.at(0, 1);
    let z = Zone::new();
    let ext = ExternalCa::new(&z, "ext-", "Ext");
    let other = ExternalCa::new(&z, "other-", "Other");
    ext.server(&z, PS1, "ps1", 825);
    other.server(&z, PS1, "ps1-other", 825);
    ext.server(&z, PS2, "ps2", 825);
    let args = |extra: &[&str], chain: &str, server: &str, key: &str| {
        let mut a = init_external(chain, server, key, &now);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Options that make no sense with an external CA, or an incomplete set: usage errors.
    for extra in [
        &["--key", "rsa2048"][..],
        &["--valid-years", "5"],
        &["--key", "p256", "--valid-years", "10"],
    ] {
        if !cfg!(feature = "rsa") && extra.contains(&"rsa2048") {
            continue; // refused as a key type this build lacks (tests/without_rsa.rs)
        }
        let e = z.init_usage(&strs(&args(extra, "ext-chain.pem", "ps1.pem", "ps1.key")));
        assert!(e.contains("--external-chain"), "{e}");
    }
    let e = z.init_usage(&[
        "init",
        "--zone",
        "Acme",
        "--first-server",
        PS1,
        "--external-chain",
        "ext-chain.pem",
        "--server-chain",
        "ps1.pem",
    ]);
    assert!(e.contains("--server-key"), "{e}");
    let e = z.init_usage(&[
        "init",
        "--zone",
        "Acme",
        "--first-server",
        PS1,
        "--server-key",
        "ps1.key",
    ]);
    assert!(e.contains("--external-chain"), "{e}");

    // Refusals leave no store and no member files.
    let e = z.init_refused(&strs(&args(
        &[],
        "ext-chain.pem",
        "ps1-other.pem",
        "ps1-other.key",
    )));
    assert!(e.contains(NO_ISSUER_MESSAGE), "{e}");
    let e = z.init_refused(&strs(&args(&[], "ext-chain.pem", "ps1.pem", "ps2.key")));
    assert!(e.contains("key does not belong"), "{e}");
    let e = z.init_refused(&strs(&args(&[], "ext-chain.pem", "ps2.pem", "ps2.key")));
    assert!(e.contains("does not name") && e.contains(PS1), "{e}");
    z.init_refused(&strs(&args(&[], "ext-chain.pem", "ps1.pem", "missing.key")));
    z.init_refused(&strs(&args(&[], "ext-chain.pem", "ps1.pem", "ps1.pem")));
    z.init_refused(&strs(&args(&[], "ps1.key", "ps1.pem", "ps1.key")));
    assert!(
        !z.path("fleet").join(PS1).exists(),
        "a refused init wrote files"
    );

    // The zone: the root of the uploaded chain is the zone CA.
    let view = z.json(&strs(&args(&[], "ext-chain.pem", "ps1.pem", "ps1.key")));
    assert_eq!(view["kind"], "external");
    let ca = z.json(&["ca", "show", "--now", &now]);
    assert_eq!(ca["kind"], "external");
    assert_eq!(ca["subject"], "CN=Ext Root");
    assert_eq!(ca["status"], "valid");
    assert!(ca["certificate_server"].is_null(), "{ca}");
    let ps1 = z.json(&["server", "show", PS1, "--now", &now]);
    assert_eq!(ps1["status"], "active");
    assert_eq!(ps1["issuer"], "CN=Ext Issuing CA");
    assert_eq!(ps1["agent_version"], "24.4");
    assert_eq!(ps1["dns_names"][0], "alias.acme.example");
    assert_eq!(ps1["certificate_server"], false);
    let o = z.run(&strs(&args(&[], "ext-chain.pem", "ps1.pem", "ps1.key")));
    assert_eq!(o.code, 1, "a second init is refused");

    // The first server's files: its chain, key (0600) and trust, verified by openssl.
    let trust = std::fs::read_to_string(z.member_file(PS1, "current/trust.pem")).unwrap();
    assert!(trust.contains("BEGIN CERTIFICATE"));
    #[cfg(unix)]
    assert_eq!(
        mode(Path::new(&z.member_file(PS1, "current/key.pem"))),
        0o600
    );
    z.openssl_verifies_with_key(PS1, "ext-root.pem", &["ext-int.pem"], &now);
    let chain = z.member_file(PS1, "current/cert.pem");
    z.openssl_verifies_with_key(PS1, "ext-root.pem", &[&chain], &now);
    assert_eq!(
        std::fs::read(z.member_file(PS1, "current/key.pem")).unwrap(),
        z.openssl(&["pkey", "-in", "ps1.key"]).into_bytes(),
        "the key given is the key installed"
    );

    // Custody is for an internal CA: each refusal says the CA is external.
    z.ok(&["server", "add", PS2, "--role", "primary", "--now", &now]);
    let e = z.refused(&["ca", "move", "--to", PS2, "--now", &now]);
    assert!(e.contains("external"), "{e}");
    let e = z.refused_env(
        &["ca", "backup", "--out", "b.zip", "--now", &now],
        &twice(PASS),
    );
    assert!(e.contains("external"), "{e}");
    assert!(!z.path("b.zip").exists());
}

#[test]
fn replace_expired_with_an_expired_internal_ca_is_refused() {
    // Server certificates end with their CA, so in a zone whose CA has expired every server
    // certificate has too, and no replacement can be issued.
    let z = internal_zone("1");
    let expired = "2028-01-02T00:00:00Z";
    let e = z.refused(&["server", "replace", PS1, "--now", expired]);
    assert!(e.contains("Remint CA"), "the message says what to do: {e}");
    assert!(
        e.contains("zone CA expired") && e.contains("2028-01-01T00:00:00Z"),
        "{e}"
    );
    // Before expiry: the staged Server Remint is the way.
    let e = z.refused(&["server", "replace", PS2, "--now", T1]);
    assert!(
        e.contains("valid until") && e.contains("Server Remint"),
        "{e}"
    );
    // A server without a certificate, an unknown one, a file with an internal CA.
    let e = z.refused(&["server", "replace", CONTENT, "--now", expired]);
    assert!(e.contains("no certificate"), "{e}");
    let e = z.refused(&["server", "replace", "x.acme.example", "--now", expired]);
    assert!(e.contains("x.acme.example"), "{e}");
    z.ok(&["ca", "export", "--out", "ca.pem"]);
    let e = z.refused(&[
        "server", "replace", PS2, "--file", "ca.pem", "--now", expired,
    ]);
    assert!(
        e.contains("internal") && e.contains("give no certificate"),
        "{e}"
    );
}

#[test]
fn replace_expired_internal_after_a_remint_ca_the_server_missed() {
    // A one-year CA is reminted in spring; ps2 is offline the whole time, so it keeps its
    // certificate from the old CA (bridged, B1), which expires with the old CA while the new
    // CA is valid: the case SR6's emergency replacement is for.
    let z = internal_zone("1");
    let (start, act, after) = (
        "2027-02-01T00:00:00Z",
        "2027-06-01T00:00:00Z",
        "2027-06-02T00:00:00Z",
    );
    z.ok(&["ca", "remint", "--activate-at", act, "--now", start]);
    z.ok(&["op", "assign-now", "--now", start]);
    for at in [start, after] {
        z.ok(&["fleet", "refresh", "--all", "--offline", PS2, "--now", at]);
    }
    // Not while the operation runs (it runs until baselined).
    let expired = "2028-01-02T00:00:00Z";
    let e = z.refused(&["server", "replace", PS2, "--now", expired]);
    assert!(
        e.contains("Remint CA") && e.contains("emergency replacement"),
        "{e}"
    );
    z.ok(&["op", "baseline", "--force", "--now", after]);

    let ps2 = z.json(&["server", "show", PS2, "--now", expired]);
    assert_eq!(ps2["status"], "expired", "{ps2}");
    let ca = z.json(&["ca", "show", "--now", expired]);
    assert_eq!(ca["status"], "valid");
    let old_key = std::fs::read(z.member_file(PS2, "current/key.pem")).unwrap();

    let r = z.json(&["server", "replace", PS2, "--now", expired]);
    assert_eq!(r["fqdn"], PS2);
    assert_eq!(r["expired_at"], "2028-01-01T00:00:00Z");
    let mut who: Vec<&str> = r["must_reestablish"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    who.sort();
    assert_eq!(
        who,
        ["dev-1", "dev-2", "dev-3", SAT],
        "devices and ps2's satellite"
    );
    let chain = r["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "leaf and CA");
    assert!(chain[0].as_str().unwrap().contains("BEGIN CERTIFICATE"));

    let ps2 = z.json(&["server", "show", PS2, "--now", expired]);
    assert_eq!(ps2["status"], "active");
    assert_eq!(ps2["not_after"], ca["not_after"]);
    assert_ne!(
        std::fs::read(z.member_file(PS2, "current/key.pem")).unwrap(),
        old_key,
        "a new key"
    );
    z.ok(&["ca", "export", "--out", "ca.pem", "--now", expired]);
    let leaf = z.member_file(PS2, "current/cert.pem");
    z.ok(&[
        "chain", "verify", "--trust", "ca.pem", "--leaf", &leaf, "--at", expired,
    ]);
    let dump = z.ok(&["store", "dump"]);
    assert!(dump.contains("server.replace_expired"), "audited");

    // The certificate is valid again: a second replacement is refused.
    let e = z.refused(&["server", "replace", PS2, "--now", expired]);
    assert!(e.contains("valid until"), "{e}");
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn replace_expired_with_an_external_ca() {
    common::require("openssl");
    let t = Times::new();
    let (t0, soon, expired) = (t.at(0, 1), t.at(0, 2), t.at(3, 0));
    let z = Zone::new();
    let ext = ExternalCa::new(&z, "ext-", "Ext");
    // ps1's certificate from the external CA lives two days from the real clock: `t0` (the
    // next midnight + 1 h) is at most 25 h away, so it is valid then at any time of day, and
    // expired at `expired` (+ 3 days). (One day failed between 00:00 and 01:00 UTC.)
    ext.server(&z, PS1, "ps1", 2);
    z.ok(&strs(&init_external(
        "ext-chain.pem",
        "ps1.pem",
        "ps1.key",
        &t0,
    )));
    z.ok(&[
        "server",
        "add",
        SAT,
        "--role",
        "auth-satellite",
        "--parent",
        PS1,
        "--now",
        &t0,
    ]);
    z.ok(&["device", "add", "dev-1", "dev-2", "--now", &t0]);
    let e = z.refused(&["server", "replace", PS1, "--now", &soon]);
    assert!(e.contains("valid until"), "{e}");

    let ps1 = z.json(&["server", "show", PS1, "--now", &expired]);
    assert_eq!(ps1["status"], "expired");
    // Without a certificate, or without a CSR: refused, saying what to do.
    let e = z.refused(&["server", "replace", PS1, "--now", &expired]);
    assert!(
        e.contains("external") && e.contains("generate a CSR"),
        "{e}"
    );
    ext.server(&z, PS1, "loose", 825);
    let e = z.refused(&[
        "server",
        "replace",
        PS1,
        "--file",
        "loose.pem",
        "--now",
        &expired,
    ]);
    assert!(e.contains("no CSR"), "{e}");

    // Generate CSR outside an operation, have the external CA sign it, replace.
    z.ok(&[
        "csr",
        "generate",
        PS1,
        "--org",
        "Acme",
        "--country",
        "US",
        "--now",
        &expired,
    ]);
    z.ok(&[
        "csr",
        "show",
        PS1,
        "--out",
        "ps1-new.csr",
        "--now",
        &expired,
    ]);
    // A certificate from another CA, or for another key, is refused.
    let other = ExternalCa::new(&z, "other-", "Other");
    other.sign_days(&z, PS1, "ps1-new.csr", 825, "wrong-ca.pem");
    let e = z.refused(&[
        "server",
        "replace",
        PS1,
        "--file",
        "wrong-ca.pem",
        "--now",
        &expired,
    ]);
    assert!(e.contains(NO_ISSUER_MESSAGE), "{e}");
    let e = z.refused(&[
        "server",
        "replace",
        PS1,
        "--file",
        "loose.pem",
        "--now",
        &expired,
    ]);
    assert!(e.contains("CSR") || e.contains("key"), "{e}");

    ext.sign_days(&z, PS1, "ps1-new.csr", 825, "ps1-new.pem");
    let out = z.ok(&[
        "server",
        "replace",
        PS1,
        "--file",
        "ps1-new.pem",
        "--now",
        &expired,
    ]);
    assert!(
        out.contains("Devices that must re-establish trust")
            && out.contains("dev-1")
            && out.contains("dev-2")
            && out.contains(SAT),
        "{out}"
    );
    assert!(out.contains(&format!("CN={PS1}")), "{out}");
    let ps1 = z.json(&["server", "show", PS1, "--now", &expired]);
    assert_eq!(ps1["status"], "active");
    assert_eq!(ps1["issuer"], "CN=Ext Issuing CA");
    z.openssl_verifies_with_key(PS1, "ext-root.pem", &["ext-int.pem"], &expired);
    assert_eq!(
        std::fs::read_to_string(z.member_file(PS1, "current/cert.pem"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        3,
        "leaf, intermediate, root"
    );
    // The CSR was used up.
    let o = z.run(&["csr", "show", PS1]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    let out = z.ok(&["audit", "verify"]);
    assert!(out.contains("OK"), "{out}");
}
