//! CA custody through the service (MV1, BK1, BK2, S1, S5), a zone created with an external CA
//! (Z3) and the emergency replacement of an expired server certificate (SR6), end to end on
//! the memory store, in-process agents (in memory, or backed by member files) and a manual
//! clock. Every refusal is checked to change nothing: the store dump, and the agents' keys.
//!
//! Backups run PBKDF2 at S5's 600,000 iterations (twice per archive made or opened), so the
//! tests make as few archives as they can.
#![allow(clippy::unwrap_used)]

use std::io::{Cursor, Read, Write};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use sha2::Digest;
use zonepki::agent::{AgentRequest, AgentResponse};
use zonepki::backup::{self, BackupError, Passphrase};
use zonepki::ca::{
    CaParams, Serial, ServerProfile, cross_certify, issue_server_certificate, self_signed_ca,
};
use zonepki::cert::{Certificate, bundle};
use zonepki::chain::verify_chain;
use zonepki::clock::{Clock, ManualClock, Timestamp};
use zonepki::csr::{CsrDer, CsrRequest, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey, Signer};
use zonepki::ops::{ActivationRequest, CsrFields};
use zonepki::service::{InitExternal, InitInternal, NewServer, RemintCaRequest, ZoneService};
use zonepki::store::MemoryStore;
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::transport::{LoopbackTransport, Transport, TransportError};
use zonepki::zone::{CaKind, Fqdn, ServerRole};

const PP: &str = "correct horse battery staple";
const T0: &str = "2027-01-01T00:00:00Z";
const PS1: &str = "ps1.acme.example";
const PS2: &str = "ps2.acme.example";
const PS3: &str = "ps3.acme.example";
const SAT: &str = "sat.acme.example";
const DAY: Duration = Duration::from_secs(86_400);

type Svc = ZoneService<MemoryStore, LoopbackTransport, &'static ManualClock>;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

fn pp() -> Passphrase {
    Passphrase::new(PP).unwrap()
}

fn service(transport: LoopbackTransport) -> (Svc, &'static ManualClock) {
    let clock: &'static ManualClock = Box::leak(Box::new(ManualClock::new(t(T0))));
    (
        ZoneService::new(MemoryStore::new(), transport, clock),
        clock,
    )
}

/// An internal-CA zone `name`: ps1 (certificate server), ps2, sat under ps2, dev-1 and dev-2,
/// every member refreshed.
fn zone_on(transport: LoopbackTransport, name: &str, years: u32) -> (Svc, &'static ManualClock) {
    let (svc, clock) = service(transport);
    svc.init_internal(
        InitInternal::new(name, NewServer::new(fq(PS1), ServerRole::Primary))
            .with_ca_key(KeySpec::P256)
            .with_validity(years.try_into().unwrap()),
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

fn zone() -> (Svc, &'static ManualClock) {
    zone_on(LoopbackTransport::in_memory(), "Acme", 5)
}

/// The agent's CA key as PKCS#8 DER (None: it holds none, or is unknown).
fn ca_key(svc: &Svc, name: &str) -> Option<Vec<u8>> {
    svc.transport()
        .with_agent(name, |a| a.ca_key().map(|k| k.to_pkcs8_der().to_vec()))
        .flatten()
}

fn holds_ca_key(svc: &Svc, name: &str) -> bool {
    svc.transport()
        .with_agent(name, |a| a.ca_key().is_some())
        .unwrap_or(false)
}

fn chain_of(svc: &Svc, name: &str) -> Vec<Certificate> {
    svc.transport()
        .with_agent(name, |a| a.chain().to_vec())
        .unwrap()
        .iter()
        .map(|c| Certificate::try_from(c).unwrap())
        .collect()
}

fn agent_spki(svc: &Svc, name: &str) -> Option<spki::SubjectPublicKeyInfoOwned> {
    svc.transport()
        .with_agent(name, |a| a.key().map(Signer::public_key_info))
        .flatten()
}

/// Everything a refused command must leave as it was: the store, and the CA keys and server
/// keys of these agents.
#[derive(Debug, PartialEq)]
struct Snapshot {
    dump: serde_json::Value,
    keys: Vec<(
        String,
        Option<Vec<u8>>,
        Option<spki::SubjectPublicKeyInfoOwned>,
    )>,
}

fn snapshot(svc: &Svc, names: &[&str]) -> Snapshot {
    Snapshot {
        dump: svc.dump().unwrap(),
        keys: names
            .iter()
            .map(|n| (n.to_string(), ca_key(svc, n), agent_spki(svc, n)))
            .collect(),
    }
}

/// The dump without the audit log.
fn dump_without_audit(svc: &Svc) -> serde_json::Value {
    let mut d = svc.dump().unwrap();
    d.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("audit/"));
    d
}

fn last_audit_event(svc: &Svc) -> (String, serde_json::Value) {
    audit_event_from_end(svc, 0)
}

/// The audit entry `back` places before the last one.
fn audit_event_from_end(svc: &Svc, back: usize) -> (String, serde_json::Value) {
    let entries = zonepki::store::Storage::scan_all(svc.store(), "audit/entry/").unwrap();
    let (_, rec) = &entries[entries.len() - 1 - back];
    let e: zonepki::audit::AuditEntry = serde_json::from_slice(&rec.value).unwrap();
    (e.event, e.detail)
}

fn verifies(chain: &[Certificate], anchor: &Certificate, now: Timestamp) {
    verify_chain(&chain[0], &chain[1..], std::slice::from_ref(anchor), now).unwrap();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// An external CA made in the crate: a root and an issuing CA under it.

struct External {
    root: Certificate,
    int: Certificate,
    int_key: PrivateKey,
}

impl External {
    fn new(root_cn: &str, int_cn: &str, now: Timestamp) -> Self {
        let p = |cn: &str| CaParams {
            common_name: cn.into(),
            validity: 10.try_into().unwrap(),
        };
        let root_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let root = self_signed_ca(&root_key, &p(root_cn), &Serial::random().unwrap(), now).unwrap();
        let int_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let int_self =
            self_signed_ca(&int_key, &p(int_cn), &Serial::random().unwrap(), now).unwrap();
        let int =
            cross_certify(&root, &root_key, &int_self, &Serial::random().unwrap(), now).unwrap();
        External { root, int, int_key }
    }

    fn standard(now: Timestamp) -> Self {
        External::new("External Root", "External Issuing CA", now)
    }

    /// The CA chain as an administrator uploads it (CE1): intermediate, root.
    fn chain_pem(&self) -> Vec<u8> {
        bundle::to_pem(&[self.int.der().clone(), self.root.der().clone()]).into_bytes()
    }

    /// Signs `csr` for `fqdn`, valid until `not_after` (or the issuer's end).
    fn issue(
        &self,
        fqdn: &str,
        csr: &CsrDer,
        now: Timestamp,
        not_after: Option<Timestamp>,
    ) -> Certificate {
        let csr = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
        let profile = ServerProfile {
            fqdn: fqdn.into(),
            not_after,
            ..Default::default()
        };
        issue_server_certificate(
            &self.int,
            &self.int_key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            now,
        )
        .unwrap()
    }

    /// The server chain file: leaf, intermediate.
    fn chain_file(&self, leaf: &Certificate) -> Vec<u8> {
        bundle::to_pem(&[leaf.der().clone(), self.int.der().clone()]).into_bytes()
    }

    /// A key made by the administrator, and its certificate for `fqdn`.
    fn key_and_leaf(
        &self,
        fqdn: &str,
        now: Timestamp,
        not_after: Option<Timestamp>,
    ) -> (PrivateKey, Certificate) {
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let csr = build_csr(&CsrRequest::default_for(fqdn), &key).unwrap();
        let leaf = self.issue(fqdn, &csr, now, not_after);
        (key, leaf)
    }
}

fn init_external(ext: &External, key: &PrivateKey, server_chain: Vec<u8>) -> InitExternal {
    InitExternal::new(
        "Acme",
        NewServer::new(fq(PS1), ServerRole::Primary),
        ext.chain_pem(),
        server_chain,
        zeroize::Zeroizing::new(key.to_pkcs8_der().to_vec()),
    )
}

/// A zone with an external CA whose first server's certificate ends at `not_after`.
fn external_zone(not_after: Option<Timestamp>) -> (Svc, &'static ManualClock, External) {
    let (svc, clock) = service(LoopbackTransport::in_memory());
    let ext = External::standard(clock.now());
    let (key, leaf) = ext.key_and_leaf(PS1, clock.now(), not_after);
    svc.init_external(init_external(&ext, &key, ext.chain_file(&leaf)))
        .unwrap();
    (svc, clock, ext)
}

// ---------------------------------------------------------------------------------------------
// Archive surgery, with the zip crate and the documented format (not through the module).

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

/// A well-formed zip of `files` (correct CRCs).
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

/// Rewrites an entry's name in place (local and central header), so a name the zip writer
/// would clean up reaches the reader as is.
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

fn unhex(s: &str) -> Vec<u8> {
    base16ct::lower::decode_vec(s).unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    base16ct::lower::encode_string(&sha2::Sha256::digest(data))
}

/// The `manifest.mac` entry for `manifest` under `passphrase`, as the format describes it.
fn mac_over(manifest: &[u8], passphrase: &str) -> Vec<u8> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let salt = unhex(m["mac_salt"].as_str().unwrap());
    let iterations = u32::try_from(m["kdf"]["iterations"].as_u64().unwrap()).unwrap();
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), &salt, iterations, &mut key);
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(manifest);
    let mut hex = base16ct::lower::encode_string(&mac.finalize().into_bytes());
    hex.push('\n');
    hex.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// MV1

#[test]
fn mv1_move_ca_to_another_primary_server_moves_the_key_and_the_issuing() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let (svc, clock) = zone_on(LoopbackTransport::with_root(&fleet), "Acme", 5);
    let ca_before = svc.ca_certificate().unwrap();
    let key_before = ca_key(&svc, PS1).unwrap();
    let audit_before = svc.verify_audit().unwrap().entries;
    assert!(fleet.join(PS1).join("ca/key.pem").exists());

    let view = svc.move_ca(&fq(PS2)).unwrap();
    assert_eq!(view.certificate_server.as_deref(), Some(PS2));
    assert_eq!(view.kind, "internal");
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.certificate_server.as_deref(), Some(PS2));
    assert_eq!(
        svc.ca_certificate().unwrap(),
        ca_before,
        "the CA itself is unchanged"
    );
    assert!(svc.server(&fq(PS2)).unwrap().certificate_server);
    assert!(!svc.server(&fq(PS1)).unwrap().certificate_server);

    // The key moved: the old agent holds none, the new one holds the very same key.
    assert!(!holds_ca_key(&svc, PS1));
    assert!(holds_ca_key(&svc, PS2));
    assert_eq!(ca_key(&svc, PS2).unwrap(), key_before);
    let new_ca_cert = svc
        .transport()
        .with_agent(PS2, |a| a.ca_certificate().cloned())
        .unwrap()
        .unwrap();
    assert_eq!(&new_ca_cert, ca_before.der());

    // On disk: the new holder's key file exists, 0600; the old one's is gone.
    let new_key = fleet.join(PS2).join("ca/key.pem");
    assert!(new_key.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&new_key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(!fleet.join(PS1).join("ca/key.pem").exists());
    assert!(!fleet.join(PS1).join("ca/cert.pem").exists());
    // No key in clear in the store (S1).
    assert!(!svc.dump().unwrap().to_string().contains("PRIVATE KEY"));

    // S6: the move is in the audit log, and then the old holder's erasing its copy (B5).
    assert_eq!(svc.verify_audit().unwrap().entries, audit_before + 2);
    let (event, detail) = audit_event_from_end(&svc, 1);
    assert_eq!(event, "ca.move");
    assert_eq!(detail["from"], PS1);
    assert_eq!(detail["to"], PS2);
    let (event, detail) = last_audit_event(&svc);
    assert_eq!(event, "ca.erase_copies");
    assert_eq!(detail["erased"], serde_json::json!([PS1]));
    assert!(svc.ca_view().unwrap().unerased_copies.is_empty());

    // A server added afterwards is issued through the new holder: with the old one offline.
    svc.transport().set_offline(PS1, true);
    let v = svc
        .add_server(NewServer::new(fq(PS3), ServerRole::Primary))
        .unwrap();
    assert_eq!(v.issuer.as_deref(), Some(ca_before.subject().as_str()));
    verifies(&chain_of(&svc, PS3), &ca_before, clock.now());
    let leaf = Certificate::try_from(&svc.server_chain(&fq(PS3)).unwrap()[0]).unwrap();
    verifies(&[leaf], &ca_before, clock.now());
}

/// A loopback transport that keeps a copy of every archive an agent hands out.
#[derive(Default)]
struct Recording {
    inner: LoopbackTransport,
    archives: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Transport for Recording {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        let response = self.inner.call(member, request)?;
        if let AgentResponse::Archive(a) = &response {
            self.archives.lock().unwrap().push(a.clone());
        }
        Ok(response)
    }
}

/// MV1 (issue 9 item 7): the move's archive is a one-time transfer under a random 256-bit key
/// at one PBKDF2 iteration, not a 600,000-iteration backup; it cannot be restored as a backup.
#[test]
fn mv1_move_ca_hands_over_a_one_time_transfer_not_a_backup() {
    let clock: &'static ManualClock = Box::leak(Box::new(ManualClock::new(t(T0))));
    let svc = ZoneService::new(MemoryStore::new(), Recording::default(), clock);
    svc.init_internal(
        InitInternal::new("Acme", NewServer::new(fq(PS1), ServerRole::Primary))
            .with_ca_key(KeySpec::P256)
            .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
    svc.add_server(NewServer::new(fq(PS2), ServerRole::Primary))
        .unwrap();
    svc.move_ca(&fq(PS2)).unwrap();
    assert_eq!(
        svc.ca_view().unwrap().certificate_server.as_deref(),
        Some(PS2)
    );

    let archives = svc.transport().archives.lock().unwrap().clone();
    assert_eq!(archives.len(), 1, "one archive, from the old holder");
    let manifest: serde_json::Value =
        serde_json::from_slice(&entry(&archives[0], "manifest.json")).unwrap();
    assert_eq!(manifest["format"], backup::TRANSFER_FORMAT);
    assert_eq!(manifest["kdf"]["iterations"], backup::TRANSFER_ITERATIONS);
    assert_eq!(manifest["kdf"]["iterations"], 1);

    // Not a backup: refused by inspect and by a restore, which changes nothing.
    let e = backup::inspect(&archives[0]).unwrap_err();
    assert!(e.to_string().contains("one-time transfer"), "{e}");
    let before = svc.dump().unwrap();
    let e = svc
        .restore_ca(&archives[0], &pp(), &fq(PS1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("one-time transfer") && e.contains("not a backup"),
        "{e}"
    );
    assert_eq!(svc.dump().unwrap(), before);
}

#[test]
fn mv1_refusals_name_the_reason_and_change_nothing() {
    let (svc, clock) = zone();
    let names = [PS1, PS2, SAT];
    let archive = svc.backup_ca(&pp()).unwrap();
    let before = snapshot(&svc, &names);
    let key = ca_key(&svc, PS1).unwrap();

    // Not a Primary Server: a satellite, an unknown name, a device.
    for target in [SAT, "nope.acme.example", "dev-1"] {
        let e = svc.move_ca(&fq(target)).unwrap_err().to_string();
        assert!(
            e.contains(target) && e.contains("not a Primary Server"),
            "{target}: {e}"
        );
        assert_eq!(snapshot(&svc, &names), before, "{target}");
    }

    // Already the holder.
    let e = svc.move_ca(&fq(PS1)).unwrap_err().to_string();
    assert!(e.contains(PS1) && e.contains("already holds"), "{e}");
    assert_eq!(snapshot(&svc, &names), before);

    // The target offline: nothing changes, the old holder keeps the key.
    svc.transport().set_offline(PS2, true);
    let e = svc.move_ca(&fq(PS2)).unwrap_err().to_string();
    assert!(e.contains(PS2) && e.contains("unreachable"), "{e}");
    svc.transport().set_offline(PS2, false);
    assert_eq!(snapshot(&svc, &names), before);
    assert_eq!(ca_key(&svc, PS1).unwrap(), key);
    assert_eq!(
        svc.ca_view().unwrap().certificate_server.as_deref(),
        Some(PS1)
    );

    // The old holder offline: nothing can move either.
    svc.transport().set_offline(PS1, true);
    let e = svc.move_ca(&fq(PS2)).unwrap_err().to_string();
    assert!(e.contains(PS1), "{e}");
    svc.transport().set_offline(PS1, false);
    assert_eq!(snapshot(&svc, &names), before);

    // While an operation runs, naming it.
    svc.start_remint_ca(
        RemintCaRequest::new(ActivationRequest::At(clock.now().plus(30 * DAY)))
            .with_key(KeySpec::P256)
            .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
    let during = snapshot(&svc, &names);
    let e = svc.move_ca(&fq(PS2)).unwrap_err().to_string();
    assert!(e.contains("Remint CA"), "{e}");
    assert!(e.contains("Move CA"), "{e}");
    assert_eq!(snapshot(&svc, &names), during);
    // BK2 likewise: no restore while an operation runs.
    let e = svc
        .restore_ca(&archive, &pp(), &fq(PS2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Remint CA") && e.contains("CA restore"), "{e}");
    assert_eq!(snapshot(&svc, &names), during);
    assert!(holds_ca_key(&svc, PS1) && !holds_ca_key(&svc, PS2));

    // An external CA: its key is not the zone's to move.
    let (ext, _, _) = external_zone(None);
    ext.add_server(NewServer::new(fq(PS2), ServerRole::Primary))
        .unwrap();
    let before = snapshot(&ext, &[PS1, PS2]);
    let e = ext.move_ca(&fq(PS2)).unwrap_err().to_string();
    assert!(e.contains("external"), "{e}");
    assert_eq!(snapshot(&ext, &[PS1, PS2]), before);
}

// ---------------------------------------------------------------------------------------------
// BK1, S5

#[test]
fn bk1_backup_is_encrypted_opens_with_the_passphrase_and_is_audited() {
    // BK1: at least 10 characters.
    assert_eq!(
        Passphrase::new("123456789").unwrap_err(),
        BackupError::PassphraseTooShort { min: 10 }
    );
    assert!(Passphrase::new("1234567890").is_ok());
    assert_eq!(
        backup::confirm(PP, "correct horse battery stapel").unwrap_err(),
        BackupError::PassphraseMismatch
    );

    let (svc, _) = zone();
    let zone_ca = svc.ca_certificate().unwrap();
    let agent_key = svc
        .transport()
        .with_agent(PS1, |a| {
            (
                a.ca_key().unwrap().to_pkcs8_der().to_vec(),
                a.ca_key().unwrap().to_pkcs8_pem().to_string(),
            )
        })
        .unwrap();
    let store_before = dump_without_audit(&svc);
    let audit_before = svc.verify_audit().unwrap().entries;

    let archive = svc.backup_ca(&backup::confirm(PP, PP).unwrap()).unwrap();
    assert!(archive.starts_with(b"PK\x03\x04"), "a zip archive");

    // It opens with the passphrase and holds the zone CA and its key.
    let restored = backup::open(&archive, &pp()).unwrap();
    assert_eq!(restored.certificate, zone_ca);
    assert_eq!(
        &restored.key.public_key_info(),
        zone_ca.public_key(),
        "the key is the zone CA's"
    );
    assert_eq!(restored.key.to_pkcs8_der().to_vec(), agent_key.0);
    let info = backup::inspect(&archive).unwrap();
    assert!(info.kdf_iterations >= 600_000, "S5");
    assert_eq!(info.certificate, zone_ca);

    // The key never in clear: neither its DER nor any line of its PEM body.
    assert!(!contains(&archive, &agent_key.0), "clear PKCS#8 DER");
    let body: Vec<&str> = agent_key
        .1
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!body.is_empty());
    for (i, line) in body.iter().enumerate() {
        // A line that is also public (it encodes bytes of the certificate) proves nothing.
        let chunk = agent_key
            .0
            .get(i * 48..((i + 1) * 48).min(agent_key.0.len()));
        let public = chunk.is_none_or(|c| contains(zone_ca.der().as_bytes(), c));
        if !public {
            assert!(
                !contains(&archive, line.as_bytes()),
                "PEM line {i} in clear"
            );
        }
    }
    assert!(!contains(&archive, body.concat().as_bytes()));
    assert!(!contains(&archive, b"BEGIN PRIVATE KEY"));
    let key_entry = String::from_utf8(entry(&archive, "ca-key.p8.pem")).unwrap();
    assert!(key_entry.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    // The wrong passphrase does not open it.
    let wrong = Passphrase::new("correct horse battery stapler").unwrap();
    assert_eq!(
        backup::open(&archive, &wrong).unwrap_err(),
        BackupError::WrongPassphrase
    );

    // S6: the backup is audited, and nothing else in the store changed.
    assert_eq!(svc.verify_audit().unwrap().entries, audit_before + 1);
    let (event, detail) = last_audit_event(&svc);
    assert_eq!(event, "ca.backup");
    assert_eq!(detail["certificate_server"], PS1);
    assert!(!detail.to_string().contains(PP));
    assert_eq!(dump_without_audit(&svc), store_before);
    assert!(holds_ca_key(&svc, PS1));

    // An external CA has no key in the zone to back up.
    let (ext, _, _) = external_zone(None);
    let before = ext.dump().unwrap();
    let e = ext.backup_ca(&pp()).unwrap_err().to_string();
    assert!(e.contains("external"), "{e}");
    assert_eq!(ext.dump().unwrap(), before);
}

// ---------------------------------------------------------------------------------------------
// BK2

#[test]
fn bk2_restore_to_the_same_holder_and_to_another_primary_server() {
    let (svc, clock) = zone();
    let zone_ca = svc.ca_certificate().unwrap();
    let key = ca_key(&svc, PS1).unwrap();
    let archive = svc.backup_ca(&pp()).unwrap();

    // The same holder: it keeps the role and the key.
    let store_before = dump_without_audit(&svc);
    let v = svc.restore_ca(&archive, &pp(), &fq(PS1)).unwrap();
    assert_eq!(v.certificate_server.as_deref(), Some(PS1));
    assert_eq!(ca_key(&svc, PS1).unwrap(), key);
    assert!(!holds_ca_key(&svc, PS2));
    let (event, _) = last_audit_event(&svc);
    assert_eq!(event, "ca.restore");
    // Only the zone record's version moved.
    let after = dump_without_audit(&svc);
    assert_eq!(after["zone"]["value"], store_before["zone"]["value"]);

    // Another Primary Server: the role moves, the old holder drops the key.
    let v = svc.restore_ca(&archive, &pp(), &fq(PS2)).unwrap();
    assert_eq!(v.certificate_server.as_deref(), Some(PS2));
    assert_eq!(
        svc.ca_view().unwrap().certificate_server.as_deref(),
        Some(PS2)
    );
    assert!(!holds_ca_key(&svc, PS1));
    assert_eq!(ca_key(&svc, PS2).unwrap(), key);
    assert_eq!(svc.ca_certificate().unwrap(), zone_ca);
    let (event, detail) = audit_event_from_end(&svc, 1);
    assert_eq!(event, "ca.restore");
    assert_eq!(detail["to"], PS2);
    assert_eq!(detail["role_moved_from"], PS1);
    assert_eq!(last_audit_event(&svc).0, "ca.erase_copies");

    // The new holder issues: a server joins with ps1 offline.
    svc.transport().set_offline(PS1, true);
    svc.add_server(NewServer::new(fq(PS3), ServerRole::Primary))
        .unwrap();
    verifies(&chain_of(&svc, PS3), &zone_ca, clock.now());
}

#[test]
fn bk2_a_wrong_passphrase_or_a_damaged_or_foreign_archive_is_refused_and_changes_nothing() {
    let (svc, _) = zone();
    let zone_ca = svc.ca_certificate().unwrap();
    let archive = svc.backup_ca(&pp()).unwrap();
    // A second zone, its CA backed up under the same passphrase.
    let (other, _) = zone_on(LoopbackTransport::in_memory(), "Other Zone", 5);
    let other_ca = other.ca_certificate().unwrap();
    let foreign = other.backup_ca(&pp()).unwrap();

    let names = [PS1, PS2, SAT];
    let before = snapshot(&svc, &names);
    // Each refused onto another Primary Server (the role would move) and onto the holder.
    // PBKDF2 at S5's count is slow in a debug build, so the cases that reach it try ps2 only.
    let restore = |what: &str, bytes: &[u8], passphrase: &Passphrase, to: &str| -> String {
        let e = svc
            .restore_ca(bytes, passphrase, &fq(to))
            .map(|_| ())
            .expect_err(what);
        assert_eq!(snapshot(&svc, &names), before, "{what} onto {to}");
        e.to_string()
    };
    let refused = |what: &str, bytes: &[u8], passphrase: &Passphrase| -> String {
        let e = restore(what, bytes, passphrase, PS2);
        assert_eq!(restore(what, bytes, passphrase, PS1), e, "{what}");
        e
    };

    // A wrong passphrase.
    let wrong = Passphrase::new("correct horse battery stapler").unwrap();
    let e = restore("wrong passphrase", &archive, &wrong, PS2);
    assert!(e.contains("wrong passphrase"), "{e}");

    // A flipped byte: inside each entry's data, and in the central directory.
    let mut positions = Vec::new();
    for (name, data) in entries(&archive) {
        let at = archive
            .windows(data.len())
            .position(|w| w == data.as_slice())
            .unwrap_or_else(|| panic!("{name} is stored"));
        positions.push((name.clone(), at + data.len() / 2));
        positions.push((format!("{name} first byte"), at));
    }
    let central = archive.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    positions.push(("central directory name".into(), central + 46));
    positions.push(("central directory signature".into(), central + 1));
    positions.push(("end record".into(), archive.len() - 22));
    for (what, at) in &positions {
        let mut z = archive.clone();
        z[*at] ^= 0x01;
        let e = refused(what, &z, &pp());
        assert!(!e.is_empty(), "{what}");
    }

    // Truncated.
    for len in [0, 10, archive.len() / 2, archive.len() - 1] {
        let e = refused(&format!("truncated to {len}"), &archive[..len], &pp());
        if len == archive.len() / 2 {
            assert!(e.contains("truncated"), "{e}");
        }
    }

    // An extra entry.
    let mut files = entries(&archive);
    files.push(("notes.txt".into(), b"hello".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let e = refused("extra entry", &rezip(&refs), &pp());
    assert!(
        e.contains("unexpected entry") && e.contains("notes.txt"),
        "{e}"
    );

    // A path-traversing entry, in place of ca.pem and beside it.
    let files = entries(&archive);
    for keep_original in [false, true] {
        let mut refs: Vec<(&str, &[u8])> = files
            .iter()
            .filter(|(n, _)| keep_original || n != "ca.pem")
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let pem = entry(&archive, "ca.pem");
        refs.push(("zzzca.pem", &pem));
        let z = rename_raw(&rezip(&refs), b"zzzca.pem", b"../ca.pem");
        let e = refused("path entry", &z, &pp());
        assert!(e.contains("../ca.pem") && e.contains("path"), "{e}");
    }

    // Another zone's CA, named with ours; with the right passphrase and with a wrong one (the
    // archive is the wrong one whatever the passphrase: saying "wrong passphrase" would send
    // the administrator after the wrong fault).
    for (what, passphrase) in [("right", pp()), ("wrong", wrong.clone())] {
        let e = restore(
            &format!("another zone's archive, {what} passphrase"),
            &foreign,
            &passphrase,
            PS2,
        );
        assert!(
            e.contains(&other_ca.subject()) && e.contains(&zone_ca.subject()),
            "{what}: {e}"
        );
        assert!(
            e.contains(&other_ca.fingerprints().sha256.to_string())
                && e.contains(&zone_ca.fingerprints().sha256.to_string()),
            "{what}: {e}"
        );
    }

    // Our certificate with another key, in an archive whose MAC is right for the passphrase:
    // the key is the other zone's encrypted key, the manifest describes it.
    let mut m: serde_json::Value =
        serde_json::from_slice(&entry(&archive, "manifest.json")).unwrap();
    let foreign_m: serde_json::Value =
        serde_json::from_slice(&entry(&foreign, "manifest.json")).unwrap();
    let foreign_key = entry(&foreign, "ca-key.p8.pem");
    m["entries"]["ca-key.p8.pem"] = sha256_hex(&foreign_key).into();
    m["kdf"] = foreign_m["kdf"].clone();
    let manifest = serde_json::to_vec_pretty(&m).unwrap();
    let mac = mac_over(&manifest, PP);
    let mismatched = rezip(&[
        ("manifest.json", &manifest),
        ("manifest.mac", &mac),
        ("ca.pem", &entry(&archive, "ca.pem")),
        ("ca-key.p8.pem", &foreign_key),
    ]);
    assert_eq!(backup::inspect(&mismatched).unwrap().certificate, zone_ca);
    let e = restore("key not the certificate's", &mismatched, &pp(), PS2);
    assert!(e.contains("does not belong"), "{e}");

    // After all that, the genuine archive still restores.
    svc.restore_ca(&archive, &pp(), &fq(PS2)).unwrap();
    assert!(holds_ca_key(&svc, PS2) && !holds_ca_key(&svc, PS1));
}

// ---------------------------------------------------------------------------------------------
// Z3

#[test]
fn z3_a_zone_created_with_an_external_ca() {
    let (svc, clock) = service(LoopbackTransport::in_memory());
    let now = clock.now();
    let ext = External::standard(now);
    let (key, leaf) = ext.key_and_leaf(PS1, now, None);
    let zone = svc
        .init_external(init_external(&ext, &key, ext.chain_file(&leaf)))
        .unwrap();
    assert_eq!(zone.ca, CaKind::External);
    assert_eq!(&zone.ca_certificate, ext.root.der());
    assert_eq!(zone.ca_intermediates, vec![ext.int.der().clone()]);
    let stored = svc.zone().unwrap();
    assert_eq!(stored, zone);
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.kind, "external");
    assert_eq!(ca.certificate_server, None);
    assert_eq!(ca.details.subject, "CN=External Root");
    assert_eq!(svc.ca_certificate().unwrap(), ext.root);

    // The first server's agent holds the administrator's key and the chain, which verifies.
    assert_eq!(agent_spki(&svc, PS1).as_ref(), Some(leaf.public_key()));
    assert!(!holds_ca_key(&svc, PS1), "the zone holds no CA key");
    let chain = chain_of(&svc, PS1);
    assert_eq!(chain[0], leaf);
    assert!(chain.contains(&ext.int));
    verifies(&chain, &ext.root, now);
    let trust = svc
        .transport()
        .with_agent(PS1, |a| a.trust().to_vec())
        .unwrap();
    assert!(trust.contains(ext.root.der()));
    let served: Vec<Certificate> = svc
        .server_chain(&fq(PS1))
        .unwrap()
        .iter()
        .map(|c| Certificate::try_from(c).unwrap())
        .collect();
    assert_eq!(served[0], leaf);
    verifies(&served, &ext.root, now);
    assert_eq!(svc.server(&fq(PS1)).unwrap().status, "active");
    let (event, _) = last_audit_event(&svc);
    assert_eq!(event, "zone.init");
    assert!(!svc.dump().unwrap().to_string().contains("PRIVATE KEY"));

    // A second init on the existing zone is refused.
    let before = svc.dump().unwrap();
    let (k2, l2) = ext.key_and_leaf(PS2, now, None);
    let mut again = init_external(&ext, &k2, ext.chain_file(&l2));
    again.first_server = NewServer::new(fq(PS2), ServerRole::Primary);
    let e = svc.init_external(again).unwrap_err().to_string();
    assert!(e.contains("Acme"), "{e}");
    assert_eq!(svc.dump().unwrap(), before);
    assert!(svc.transport().with_agent(PS2, |_| ()).is_none());
}

#[test]
fn z3_refusals_leave_no_zone_and_no_member_state() {
    let now = t(T0);
    let ext = External::standard(now);
    let check = |what: &str, init: InitExternal| -> String {
        let (svc, _) = service(LoopbackTransport::in_memory());
        let e = svc.init_external(init).expect_err(what).to_string();
        assert_eq!(
            svc.dump().unwrap(),
            serde_json::json!({}),
            "{what}: no store change"
        );
        assert!(
            svc.transport().with_agent(PS1, |_| ()).is_none(),
            "{what}: the agent was never given anything"
        );
        e
    };

    // A server chain from an unrelated CA: with the same names (the signature fails) and with
    // other names (no issuer at all).
    for (root_cn, int_cn) in [
        ("External Root", "External Issuing CA"),
        ("Unrelated Root", "Unrelated Issuing CA"),
    ] {
        let unrelated = External::new(root_cn, int_cn, now);
        let (key, leaf) = unrelated.key_and_leaf(PS1, now, None);
        let mut init = init_external(&ext, &key, unrelated.chain_file(&leaf));
        let e = check(int_cn, init.clone());
        assert!(
            e.contains(
                "CA certificate subject from the CA Certificate chain does not match server \
                 certificate issuer."
            ),
            "{int_cn}: {e}"
        );
        // The leaf alone, without the unrelated intermediate.
        init.server_chain = bundle::to_pem(&[leaf.der().clone()]).into_bytes();
        let e = check(int_cn, init);
        assert!(
            e.contains(
                "CA certificate subject from the CA Certificate chain does not match server \
                 certificate issuer."
            ),
            "{int_cn}, leaf only: {e}"
        );
    }

    // A key that is not the certificate's.
    let (_, leaf) = ext.key_and_leaf(PS1, now, None);
    let other_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let e = check(
        "key mismatch",
        init_external(&ext, &other_key, ext.chain_file(&leaf)),
    );
    assert!(e.contains("does not belong"), "{e}");

    // A certificate that does not name the server.
    let (key, leaf) = ext.key_and_leaf("other.acme.example", now, None);
    let e = check(
        "wrong name",
        init_external(&ext, &key, ext.chain_file(&leaf)),
    );
    assert!(e.contains("does not name") && e.contains(PS1), "{e}");

    // S4: a CA certificate named after the server, chaining to the root, is not a server
    // certificate.
    let ca_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let params = CaParams {
        common_name: PS1.into(),
        validity: 1.try_into().unwrap(),
    };
    let self_signed = self_signed_ca(&ca_key, &params, &Serial::random().unwrap(), now).unwrap();
    let sub_ca = cross_certify(
        &ext.int,
        &ext.int_key,
        &self_signed,
        &Serial::random().unwrap(),
        now,
    )
    .unwrap();
    assert!(sub_ca.is_ca());
    let e = check(
        "a CA certificate",
        init_external(&ext, &ca_key, ext.chain_file(&sub_ca)),
    );
    assert!(e.contains("CA certificate"), "{e}");

    // The first server must be a Primary Server.
    let (key, leaf) = ext.key_and_leaf(PS1, now, None);
    let mut init = init_external(&ext, &key, ext.chain_file(&leaf));
    init.first_server = NewServer::new(fq(PS1), ServerRole::AuthSatellite);
    check("satellite", init);
}

// ---------------------------------------------------------------------------------------------
// SR6

#[test]
fn sr6_external_ca_an_expired_server_certificate_is_replaced_from_the_current_ca() {
    let (svc, clock, ext) = external_zone(Some(t(T0).plus(30 * DAY)));
    // A satellite of ps1, an unrelated Primary Server, and devices.
    let mut sat = NewServer::new(fq(SAT), ServerRole::AuthSatellite);
    sat.parent = Some(fq(PS1));
    svc.add_server(sat).unwrap();
    svc.add_server(NewServer::new(fq(PS2), ServerRole::Primary))
        .unwrap();
    svc.add_devices(&["dev-1".into(), "dev-2".into(), "dev-3".into()], "1")
        .unwrap();
    let names = [PS1, PS2, SAT];
    let old_leaf = chain_of(&svc, PS1)[0].clone();

    // Still valid: refused, pointing at the staged Server Remint.
    let before = snapshot(&svc, &names);
    let e = svc.replace_expired(&fq(PS1), None).unwrap_err().to_string();
    assert!(e.contains("staged Server Remint"), "{e}");
    let e = svc
        .replace_expired(&fq(PS1), Some(&ext.chain_file(&old_leaf)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("staged Server Remint"), "{e}");
    assert_eq!(snapshot(&svc, &names), before);

    clock.set(t(T0).plus(31 * DAY));
    assert_eq!(svc.server(&fq(PS1)).unwrap().status, "expired");
    assert_eq!(svc.ca_view().unwrap().details.status.name(), "valid");

    // Without a certificate: refused (the zone cannot issue for an external CA).
    let before = snapshot(&svc, &names);
    let e = svc.replace_expired(&fq(PS1), None).unwrap_err().to_string();
    assert!(e.contains("external") && e.contains("CSR"), "{e}");
    assert_eq!(snapshot(&svc, &names), before);

    // Generate CSR outside an operation, the external CA signs, the certificate is imported.
    let csrs = svc
        .generate_csr(&[fq(PS1)], &CsrFields::default(), None, KeySpec::P256)
        .unwrap();
    let (_, csr) = &csrs[0];
    let new_leaf = ext.issue(PS1, csr, clock.now(), None);
    // A certificate from an unrelated CA is refused in the manual's words, changing nothing.
    let unrelated = External::new("Unrelated Root", "Unrelated Issuing CA", clock.now());
    let before = snapshot(&svc, &names);
    let bad = unrelated.issue(PS1, csr, clock.now(), None);
    let e = svc
        .replace_expired(&fq(PS1), Some(&unrelated.chain_file(&bad)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CA certificate subject from the CA Certificate chain does not match server"),
        "{e}"
    );
    assert_eq!(snapshot(&svc, &names), before);

    let audit_before = svc.verify_audit().unwrap().entries;
    let r = svc
        .replace_expired(&fq(PS1), Some(&ext.chain_file(&new_leaf)))
        .unwrap();
    assert_eq!(r.fqdn, PS1);
    assert_eq!(r.expired_at, old_leaf.not_after());
    assert_eq!(&r.chain[0], new_leaf.der());
    // The agent has it, with the key it made for the CSR, and its chain verifies.
    let chain = chain_of(&svc, PS1);
    assert_eq!(chain[0], new_leaf);
    assert_eq!(agent_spki(&svc, PS1).as_ref(), Some(new_leaf.public_key()));
    verifies(&chain, &ext.root, clock.now());
    assert_eq!(svc.server(&fq(PS1)).unwrap().status, "active");
    assert_eq!(
        svc.server_chain(&fq(PS1)).unwrap()[0],
        new_leaf.der().clone()
    );
    // Every device and the linked satellite must re-establish trust; ps2 is not linked.
    let mut who = r.must_reestablish.clone();
    who.sort();
    assert_eq!(who, ["dev-1", "dev-2", "dev-3", SAT]);
    assert_eq!(svc.verify_audit().unwrap().entries, audit_before + 1);
    assert_eq!(last_audit_event(&svc).0, "server.replace_expired");
    // The CSR was used up.
    assert!(svc.csrs(&[fq(PS1)]).is_err());
}

#[test]
fn sr6_internal_ca_an_expired_server_certificate_is_issued_again_at_once() {
    // A 1-year CA; ps2 is left out of a Remint CA, so its certificate from the old CA expires
    // with that CA while the new zone CA is valid.
    let (svc, clock) = zone_on(LoopbackTransport::in_memory(), "Acme", 1);
    let names = [PS1, PS2, SAT];
    let before = snapshot(&svc, &names);
    let e = svc.replace_expired(&fq(PS2), None).unwrap_err().to_string();
    assert!(e.contains("staged Server Remint"), "{e}");
    assert_eq!(snapshot(&svc, &names), before);

    let activation = t("2027-06-01T00:00:00Z");
    svc.start_remint_ca(
        RemintCaRequest::new(ActivationRequest::At(activation))
            .with_common_name("Acme 2")
            .with_key(KeySpec::P256)
            .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
    // Refused while the operation runs, naming it.
    let e = svc.replace_expired(&fq(PS2), None).unwrap_err().to_string();
    assert!(e.contains("Remint CA"), "{e}");
    svc.ignore(&[PS2.to_string()]).unwrap();
    let drive = || {
        for _ in 0..4 {
            svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap();
        }
    };
    drive();
    clock.set(activation);
    drive();
    svc.baseline(false).unwrap();
    let ca = svc.ca_certificate().unwrap();
    assert_eq!(ca.subject(), "CN=Acme 2");
    let old_leaf = Certificate::try_from(&svc.server_chain(&fq(PS2)).unwrap()[0]).unwrap();
    assert_ne!(
        old_leaf.issuer_name(),
        ca.subject_name(),
        "ps2 was left out"
    );

    // After the old CA (and with it ps2's certificate) expired; the zone CA is valid.
    clock.set(old_leaf.not_after().plus(DAY));
    assert_eq!(svc.server(&fq(PS2)).unwrap().status, "expired");
    assert_eq!(svc.ca_view().unwrap().details.status.name(), "valid");

    // Internal: no certificate may be given.
    let before = snapshot(&svc, &names);
    let e = svc
        .replace_expired(&fq(PS2), Some(b"whatever"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("internal"), "{e}");
    assert_eq!(snapshot(&svc, &names), before);
    // The staged Server Remint refuses it, pointing here.
    let e = svc
        .start_server_remint(
            zonepki::service::ServerRemintRequest::new(
                vec![fq(PS2)],
                "ps2",
                ActivationRequest::At(clock.now().plus(DAY)),
            )
            .with_key(KeySpec::P256),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("emergency replacement"), "{e}");
    assert_eq!(snapshot(&svc, &names), before);

    let old_spki = agent_spki(&svc, PS2).unwrap();
    let r = svc.replace_expired(&fq(PS2), None).unwrap();
    assert_eq!(r.expired_at, old_leaf.not_after());
    let chain = chain_of(&svc, PS2);
    assert_eq!(chain[0].der(), &r.chain[0]);
    assert_eq!(chain[0].issuer_name(), ca.subject_name());
    verifies(&chain, &ca, clock.now());
    // A new key, made on ps2 (S1).
    let new_spki = agent_spki(&svc, PS2).unwrap();
    assert_ne!(new_spki, old_spki);
    assert_eq!(&new_spki, chain[0].public_key());
    assert_eq!(svc.server(&fq(PS2)).unwrap().status, "active");
    let mut who = r.must_reestablish.clone();
    who.sort();
    assert_eq!(who, ["dev-1", "dev-2", SAT]);
    assert_eq!(last_audit_event(&svc).0, "server.replace_expired");
}

#[test]
fn sr6_internal_ca_when_the_ca_has_expired_too_the_replacement_is_refused() {
    let (svc, clock) = zone_on(LoopbackTransport::in_memory(), "Acme", 1);
    let names = [PS1, PS2, SAT];
    clock.set(t("2028-01-02T00:00:00Z"));
    assert_eq!(svc.ca_view().unwrap().details.status.name(), "expired");
    let before = snapshot(&svc, &names);
    let e = svc.replace_expired(&fq(PS2), None).unwrap_err().to_string();
    assert!(e.contains("expired"), "{e}");
    assert_eq!(snapshot(&svc, &names), before);
}

/// Issue 10 item 5: library errors state facts in the library's words, typed so a frontend can
/// add its own advice; none names a command-line flag or command. Each refusal changes nothing.
#[test]
fn refusals_state_facts_not_command_line_advice() {
    fn no_cli_words(e: &zonepki::Error) {
        let text = e.to_string();
        for word in ["--", "zonectl", "csr generate", "csr export", "cert import"] {
            assert!(!text.contains(word), "{word:?} in {text:?}");
        }
    }
    use zonepki::ops::{CsrMode, OpError};
    use zonepki::service::ServerRemintRequest;

    // An internal CA: a CSR mode makes no sense (SR3); the update name is required (SR2).
    let (svc, clock) = zone();
    let at = ActivationRequest::At(clock.now().plus(DAY));
    let before = svc.dump().unwrap();
    let e = svc
        .start_server_remint(
            ServerRemintRequest::new(vec![fq(PS2)], "ps2", at).with_csr(CsrMode::Manual),
        )
        .unwrap_err();
    assert!(
        matches!(e, zonepki::Error::Op(OpError::CsrModeWithInternalCa)),
        "{e}"
    );
    no_cli_words(&e);
    let e = svc
        .start_server_remint(ServerRemintRequest::new(vec![fq(PS2)], "", at))
        .unwrap_err();
    assert!(
        matches!(e, zonepki::Error::Op(OpError::MissingUpdateName)),
        "{e}"
    );
    no_cli_words(&e);
    assert_eq!(svc.dump().unwrap(), before);

    // An external CA: a server remint must say how certificates are requested (SR3), and a
    // server without a CSR has none to export or to match an import against (SR5).
    let (svc, clock, ext) = external_zone(None);
    let at = ActivationRequest::At(clock.now().plus(DAY));
    let before = svc.dump().unwrap();
    let e = svc
        .start_server_remint(ServerRemintRequest::new(vec![fq(PS1)], "ps1", at))
        .unwrap_err();
    assert!(
        matches!(e, zonepki::Error::Op(OpError::CsrModeRequired)),
        "{e}"
    );
    no_cli_words(&e);
    let e = svc.csrs(&[fq(PS1)]).unwrap_err();
    assert!(
        matches!(&e, zonepki::Error::Op(OpError::NoCsr { fqdn, manual: false }) if fqdn == PS1),
        "{e}"
    );
    no_cli_words(&e);
    let e = svc.csrs(&[]).unwrap_err();
    assert!(matches!(e, zonepki::Error::Op(OpError::NoCsrs)), "{e}");
    no_cli_words(&e);
    let e = svc
        .import_certificate(&fq(PS1), &ext.chain_pem())
        .unwrap_err();
    assert!(
        matches!(&e, zonepki::Error::Op(OpError::NoCsr { fqdn, .. }) if fqdn == PS1),
        "{e}"
    );
    no_cli_words(&e);
    assert_eq!(svc.dump().unwrap(), before);
}

/// No secret in Debug: an `InitExternal`'s Debug shows the server key's length, never its
/// bytes (a frontend that logs its request must not log the key).
#[test]
fn init_external_debug_leaves_the_server_key_out() {
    let key = PrivateKey::generate(KeySpec::P256).unwrap();
    let der = key.to_pkcs8_der();
    let init = InitExternal::new(
        "Acme",
        NewServer::new(fq(PS1), ServerRole::Primary),
        b"chain".to_vec(),
        b"server chain".to_vec(),
        zeroize::Zeroizing::new(der.to_vec()),
    );
    let debug = format!("{init:?}");
    assert!(debug.contains("<secret"), "{debug}");
    // No run of the key's bytes as Debug prints a Vec (the header, or the key material).
    for window in [&der[..8], &der[40..48]] {
        let as_list = format!("{window:?}");
        let as_list = &as_list[1..as_list.len() - 1];
        assert!(!debug.contains(as_list), "{debug}");
    }
}
