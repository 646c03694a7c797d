//! CA custody (MV1, BK1, BK2), a zone created with an external CA (Z3), and the emergency
//! replacement of an expired server certificate (SR6).
//!
//! The CA key moves only inside an encrypted backup archive ([`crate::backup`]): from the
//! certificate server's agent to the administrator (backup), from the archive to a Primary
//! Server's agent (restore), or from one agent to another under a one-time random passphrase
//! that never leaves this process (move). It is never in clear outside an agent (S1, S5).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Result, ZoneService, decode, encode, unexpected};
use crate::agent::{AgentRequest, AgentResponse, certificate_names};
use crate::backup::{Passphrase, TransferKey};
use crate::ca::ServerProfile;
use crate::cert::{Certificate, CertificateDer, bundle};
use crate::chain::{ChainError, verify_chain};
use crate::clock::{Clock, Timestamp};
use crate::key::PrivateKey;
use crate::ops::OpError;
use crate::store::{Expect, Storage, Write};
use crate::transport::Transport;
use crate::zone::{
    CaKind, Fqdn, RECORD_VERSION, ServerRecord, ServerRole, ZoneError, ZoneRecord, keys,
};

use super::{NewServer, server_record};

/// A zone created with an external CA (Z3). Made with [`InitExternal::new`].
#[derive(Clone)]
#[non_exhaustive]
pub struct InitExternal {
    /// Zone name.
    pub zone: String,
    /// The first Primary Server.
    pub first_server: NewServer,
    /// The external CA: its root, or the complete chain (any of the six formats, CE1).
    pub external_chain: Vec<u8>,
    /// The first server's certificate chain, leaf first or in any order.
    pub server_chain: Vec<u8>,
    /// The first server's key (PKCS#8, DER or PEM), zeroized when dropped.
    pub server_key: Zeroizing<Vec<u8>>,
    /// B4: lint warnings the administrator accepts for these certificates.
    pub acknowledge: Vec<crate::lint::Rule>,
}

/// Everything but the server key, which is a secret.
impl std::fmt::Debug for InitExternal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitExternal")
            .field("zone", &self.zone)
            .field("first_server", &self.first_server)
            .field(
                "external_chain",
                &format_args!("{} bytes", self.external_chain.len()),
            )
            .field(
                "server_chain",
                &format_args!("{} bytes", self.server_chain.len()),
            )
            .field(
                "server_key",
                &format_args!("<secret, {} bytes>", self.server_key.len()),
            )
            .field("acknowledge", &self.acknowledge)
            .finish()
    }
}

impl InitExternal {
    /// Zone `zone` under the external CA of `external_chain`, whose first Primary Server
    /// presents `server_chain` with `server_key`.
    pub fn new(
        zone: impl Into<String>,
        first_server: NewServer,
        external_chain: Vec<u8>,
        server_chain: Vec<u8>,
        server_key: Zeroizing<Vec<u8>>,
    ) -> Self {
        InitExternal {
            zone: zone.into(),
            first_server,
            external_chain,
            server_chain,
            server_key,
            acknowledge: Vec::new(),
        }
    }

    /// B4: lint warnings the administrator accepts for these certificates.
    pub fn with_acknowledge(mut self, acknowledge: Vec<crate::lint::Rule>) -> Self {
        self.acknowledge = acknowledge;
        self
    }
}

/// What an emergency replacement did (SR6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Replacement {
    /// The server.
    pub fqdn: String,
    /// Its new chain, leaf first.
    pub chain: Vec<CertificateDer>,
    /// When the expired certificate had expired.
    pub expired_at: Timestamp,
    /// Members that must re-establish trust with it: every managed device and every server
    /// that talks to it (its satellites, or its parent).
    pub must_reestablish: Vec<String>,
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    fn zone_versioned(&self) -> Result<(u64, ZoneRecord)> {
        let rec = self.store.get(keys::ZONE)?.ok_or(ZoneError::NoZone)?;
        Ok((rec.version, decode(keys::ZONE, &rec.value)?))
    }

    /// The certificate server of an internal CA; refused for an external one (`what` names
    /// the action in the message).
    fn certificate_server_for(zone: &ZoneRecord, what: &str) -> Result<Fqdn> {
        match &zone.ca {
            CaKind::Internal { certificate_server } => Ok(certificate_server.clone()),
            CaKind::External => Err(OpError::Selection(format!(
                "{what} is for an internal CA; this zone's CA is external and its key is not \
                 held by the zone"
            ))
            .into()),
        }
    }

    fn check_primary(&self, fqdn: &Fqdn) -> Result<()> {
        let ok = self
            .server_record(fqdn)?
            .is_some_and(|s| s.role == ServerRole::Primary);
        if ok {
            Ok(())
        } else {
            Err(OpError::Selection(format!(
                "{fqdn} is not a Primary Server of the zone: only a Primary Server can hold the \
                 CA role"
            ))
            .into())
        }
    }

    /// MV1: moves the CA role to another Primary Server. Refused for an external CA and while
    /// an operation runs (naming it). The key travels only inside a one-time transfer archive
    /// under a fresh random [`TransferKey`] (see [`crate::backup`], "One-time transfers"),
    /// which no passphrase restore accepts.
    ///
    /// The old holder's erasing its copy is recorded in the store (B5): if it could not be
    /// reached, or the process stopped before it confirmed, [`CaView::unerased_copies`] names
    /// it, and the same move run again (which is otherwise refused: `to` already holds the
    /// role) erases it.
    ///
    /// [`CaView::unerased_copies`]: crate::view::CaView::unerased_copies
    pub fn move_ca(&self, to: &Fqdn) -> Result<super::super::view::CaView> {
        // B6: "no operation runs" (MV1) is read here; an operation started meanwhile makes the
        // commit fail, and the target gives the role back.
        let mut epoch = self.begin()?;
        let (version, mut zone) = self.zone_versioned()?;
        let from = Self::certificate_server_for(&zone, "Move CA role")?;
        self.ensure_idle("Move CA role")?;
        self.check_primary(to)?;
        if &from == to {
            // B5: the same move again after a crash between its commit and the old holder's
            // erasing its copy finishes it.
            if let Some((hv, h)) = self.handover()?
                && &h.to == to
            {
                self.erase_stale_copies(&mut epoch, hv, h)?;
                return self.ca_view();
            }
            return Err(OpError::Selection(format!("{to} already holds the CA role")).into());
        }
        let now = self.clock.now();
        // A random 256-bit key for this move only: the archive needs no passphrase
        // stretching (S5 is for backups an administrator keeps; see crate::backup).
        let key = TransferKey::generate()?;
        let response = self.transport.call(
            from.as_str(),
            AgentRequest::TransferCa {
                key: key.clone(),
                now,
            },
        )?;
        let AgentResponse::Archive(archive) = response else {
            return Err(unexpected(from.as_str(), "an archive", &response));
        };
        self.transport.call(
            to.as_str(),
            AgentRequest::AcceptCa {
                archive,
                key,
                expected_ca: zone.ca_certificate.clone(),
            },
        )?;
        zone.ca = CaKind::Internal {
            certificate_server: to.clone(),
        };
        let (hv, h) = self.handover_to(to, Some(&from))?;
        let writes = vec![
            Write::put(keys::ZONE, Expect::Version(version), encode(&zone)),
            Write::put(keys::CA_HANDOVER, hv, encode(&h)),
        ];
        let detail = serde_json::json!({ "from": from, "to": to });
        if let Err(e) = self.commit(&mut epoch, writes, "ca.move", detail) {
            self.undo_handover(to, &from);
            return Err(e);
        }
        self.erase_stale_copies(&mut epoch, Expect::Version(next(hv)), h)?;
        self.ca_view()
    }

    /// MV1, BK2 (B5): the record of a handover whose old holders have not all confirmed
    /// erasing their copy of the CA key, with its version.
    fn handover(&self) -> Result<Option<(Expect, Handover)>> {
        Ok(match self.store.get(keys::CA_HANDOVER)? {
            Some(r) => Some((
                Expect::Version(r.version),
                decode(keys::CA_HANDOVER, &r.value)?,
            )),
            None => None,
        })
    }

    /// The handover record once `to` holds the role and `from` (if the role moved) must erase
    /// its copy: servers still to erase theirs from earlier handovers stay listed, but `to`.
    fn handover_to(&self, to: &Fqdn, from: Option<&Fqdn>) -> Result<(Expect, Handover)> {
        let (expect, mut h) = match self.handover()? {
            Some((v, h)) => (v, h),
            None => (
                Expect::Absent,
                Handover {
                    to: to.clone(),
                    erase: Vec::new(),
                },
            ),
        };
        h.to = to.clone();
        h.erase.extend(from.cloned());
        h.erase.retain(|s| s != to);
        h.erase.sort();
        h.erase.dedup();
        Ok((expect, h))
    }

    /// After a failed handover commit: `to` gives its copy back only when the store still
    /// names `from`. A commit error does not always mean nothing was written (a network
    /// store's lost answer); when the store names `to`, or cannot be read, `to` keeps the key
    /// (two copies, one stale, rather than none), and running the command again finishes.
    fn undo_handover(&self, to: &Fqdn, from: &Fqdn) {
        let still_from = matches!(
            self.zone().map(|z| z.ca),
            Ok(CaKind::Internal { certificate_server }) if &certificate_server == from
        );
        if still_from {
            let _ = self.transport.call(to.as_str(), AgentRequest::DropCa);
        }
    }

    /// Asks every server of `h.erase` to erase its copy of the CA key, and records those that
    /// did (the record goes once none is left). One that cannot be reached keeps a stale key
    /// that signs nothing the zone asks for; running the move or restore again erases it.
    fn erase_stale_copies(
        &self,
        epoch: &mut crate::audit::Epoch,
        version: Expect,
        mut h: Handover,
    ) -> Result<()> {
        let before = h.erase.clone();
        h.erase.retain(|s| {
            self.transport
                .call(s.as_str(), AgentRequest::DropCa)
                .is_err()
        });
        let write = if h.erase.is_empty() {
            Write::delete(keys::CA_HANDOVER, version)
        } else {
            Write::put(keys::CA_HANDOVER, version, encode(&h))
        };
        let erased: Vec<&Fqdn> = before.iter().filter(|s| !h.erase.contains(s)).collect();
        let detail =
            serde_json::json!({ "holder": h.to, "erased": erased, "unreachable": h.erase });
        self.commit(epoch, vec![write], "ca.erase_copies", detail)
    }

    /// BK1: an encrypted backup archive of the CA certificate and key, made by the certificate
    /// server's agent.
    pub fn backup_ca(&self, passphrase: &Passphrase) -> Result<Vec<u8>> {
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        let server = Self::certificate_server_for(&zone, "CA backup")?;
        let now = self.clock.now();
        let response = self.transport.call(
            server.as_str(),
            AgentRequest::ExportCa {
                passphrase: passphrase.clone(),
                now,
            },
        )?;
        let AgentResponse::Archive(archive) = response else {
            return Err(unexpected(server.as_str(), "an archive", &response));
        };
        let detail = serde_json::json!({
            "certificate_server": server,
            "archive_sha256": crate::cert::Fingerprint::sha256(&archive).to_string(),
        });
        self.commit(&mut epoch, Vec::new(), "ca.backup", detail)?;
        Ok(archive)
    }

    /// The checks [`backup_ca`](Self::backup_ca) makes before it needs the passphrase: the
    /// zone's CA is internal (an external CA's key is not held by the zone). A frontend calls
    /// it before asking for a passphrase that could not be used. Changes nothing.
    pub fn check_backup_ca(&self) -> Result<()> {
        Self::certificate_server_for(&self.zone()?, "CA backup").map(|_| ())
    }

    /// The checks [`restore_ca`](Self::restore_ca) makes before it needs the archive's
    /// passphrase: the zone's CA is internal, no staged operation runs, and `to` is a Primary
    /// Server. Changes nothing.
    pub fn check_restore_ca(&self, to: &Fqdn) -> Result<()> {
        Self::certificate_server_for(&self.zone()?, "CA restore")?;
        self.ensure_idle("CA restore")?;
        self.check_primary(to)
    }

    /// BK2: restores the CA from an archive onto `to`, which takes the CA role if it did not
    /// hold it. A wrong passphrase, a damaged or tampered archive, or another zone's CA is
    /// refused by the target's agent before anything changes. Like [`Self::move_ca`], it
    /// records the old holder's erasing its copy; running the restore again after an
    /// interruption finishes it (B5).
    pub fn restore_ca(
        &self,
        archive: &[u8],
        passphrase: &Passphrase,
        to: &Fqdn,
    ) -> Result<super::super::view::CaView> {
        let mut epoch = self.begin()?;
        let (version, mut zone) = self.zone_versioned()?;
        let from = Self::certificate_server_for(&zone, "CA restore")?;
        self.ensure_idle("CA restore")?;
        self.check_primary(to)?;
        // Structure and the cleartext certificate first: cheap, and a clear message for an
        // archive of another zone before the key derivation runs.
        let info = crate::backup::inspect(archive)?;
        if info.certificate.der() != &zone.ca_certificate {
            let expected = Certificate::try_from(&zone.ca_certificate)?;
            let describe =
                |c: &Certificate| format!("{} (SHA-256 {})", c.subject(), c.fingerprints().sha256);
            return Err(crate::agent::AgentError::WrongCa {
                found: describe(&info.certificate),
                expected: describe(&expected),
            }
            .into());
        }
        self.transport.call(
            to.as_str(),
            AgentRequest::ImportCa {
                archive: archive.to_vec(),
                passphrase: passphrase.clone(),
                expected_ca: zone.ca_certificate.clone(),
            },
        )?;
        let moved = &from != to;
        zone.ca = CaKind::Internal {
            certificate_server: to.clone(),
        };
        let mut writes = vec![Write::put(
            keys::ZONE,
            Expect::Version(version),
            encode(&zone),
        )];
        // B5: the old holder's erasing its copy is recorded, so that a restore run again
        // after a crash finishes it.
        let (hv, h) = self.handover_to(to, moved.then_some(&from))?;
        let handover = !h.erase.is_empty();
        if handover {
            writes.push(Write::put(keys::CA_HANDOVER, hv, encode(&h)));
        }
        let detail = serde_json::json!({ "to": to, "role_moved_from": moved.then_some(&from) });
        if let Err(e) = self.commit(&mut epoch, writes, "ca.restore", detail) {
            if moved {
                self.undo_handover(to, &from);
            }
            return Err(e);
        }
        if handover {
            self.erase_stale_copies(&mut epoch, Expect::Version(next(hv)), h)?;
        }
        self.ca_view()
    }

    /// Z3: creates a zone whose CA is external: its root (or chain), and the first Primary
    /// Server's chain and key, which must chain to that root (CE3) and name the server.
    pub fn init_external(&self, init: InitExternal) -> Result<ZoneRecord> {
        let mut epoch = self.begin()?;
        if let Some(rec) = self.store.get(keys::ZONE)? {
            let z: ZoneRecord = decode(keys::ZONE, &rec.value)?;
            return Err(ZoneError::ZoneExists { name: z.name }.into());
        }
        crate::zone::check_zone_name(&init.zone)?;
        let server = &init.first_server;
        if server.role != ServerRole::Primary {
            return Err(ZoneError::FirstServerNotPrimary {
                fqdn: server.fqdn.to_string(),
                role: server.role.to_string(),
            }
            .into());
        }
        let now = self.clock.now();
        let (root, intermediates) =
            super::external::split_external_chain(&init.external_chain, now, &init.acknowledge)?;
        let key = PrivateKey::from_pkcs8(&init.server_key)?;
        let mut certs = bundle::read_certificates(&init.server_chain)?;
        let spki = crate::key::Signer::public_key_info(&key);
        let pos = certs
            .iter()
            .position(|c| c.public_key() == &spki)
            .ok_or_else(|| {
                OpError::Selection(
                    "the server key does not belong to any certificate of the server chain".into(),
                )
            })?;
        let leaf = certs.remove(pos);
        if leaf.is_ca() {
            return Err(OpError::Selection(format!(
                "{} is a CA certificate, not a server certificate (S4)",
                leaf.subject()
            ))
            .into());
        }
        if !certificate_names(&leaf, server.fqdn.as_str()) {
            return Err(OpError::Selection(format!(
                "the server certificate ({}) does not name {}",
                leaf.subject(),
                server.fqdn
            ))
            .into());
        }
        let mut chain_intermediates = certs;
        chain_intermediates.extend(intermediates.iter().cloned());
        let path = verify_chain(
            &leaf,
            &chain_intermediates,
            std::slice::from_ref(&root),
            now,
        )
        .map_err(|e| -> crate::Error {
            match e {
                ChainError::BadSignature { .. } => {
                    OpError::Selection(format!("{} ({e})", crate::chain::NO_ISSUER_MESSAGE)).into()
                }
                other => other.into(),
            }
        })?;
        // B4: the server's chain passes the pre-flight lint before it is stored.
        crate::lint::enforce(
            crate::lint::lint_chain(path.path(), Some(server.fqdn.as_str()), true),
            &init.acknowledge,
        )?;
        let chain: Vec<CertificateDer> = path.path().iter().map(|c| c.der().clone()).collect();
        let zone = ZoneRecord {
            v: RECORD_VERSION,
            name: init.zone.clone(),
            ca: CaKind::External,
            ca_certificate: root.der().clone(),
            ca_intermediates: intermediates.iter().map(|c| c.der().clone()).collect(),
            created_at: now,
            retired_cas: Vec::new(),
        };
        self.transport.call(
            server.fqdn.as_str(),
            AgentRequest::Adopt {
                chain: chain.clone(),
                key: Zeroizing::new(key.to_pkcs8_der().to_vec()),
                trust: zone.trust_bundle(now),
                now,
            },
        )?;
        let record = server_record(server, chain, now);
        let writes = vec![
            Write::create(keys::ZONE, encode(&zone)),
            Write::create(keys::server(server.fqdn.as_str()), encode(&record)),
        ];
        let detail = serde_json::json!({
            "zone": zone.name, "ca": "external", "ca_subject": root.subject(),
            "first_server": server.fqdn,
        });
        self.commit(&mut epoch, writes, "zone.init", detail)?;
        Ok(zone)
    }

    /// SR6: replaces an expired server certificate at once, outside the staged operations.
    /// With an internal CA the server's agent makes a new key and the certificate server
    /// issues; with an external CA `certificate` is the new certificate from the current CA,
    /// for the server's CSR (Generate CSR first). Reports who must re-establish trust.
    pub fn replace_expired(&self, fqdn: &Fqdn, certificate: Option<&[u8]>) -> Result<Replacement> {
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        self.ensure_idle("an emergency replacement")?;
        let key = keys::server(fqdn.as_str());
        let rec = self
            .store
            .get(&key)?
            .ok_or_else(|| ZoneError::UnknownServer {
                fqdn: fqdn.to_string(),
            })?;
        let mut server: ServerRecord = decode(&key, &rec.value)?;
        let now = self.clock.now();
        let leaf = server
            .certificate
            .first()
            .ok_or_else(|| OpError::Selection(format!("{fqdn} has no certificate to replace")))?;
        let expired_at = Certificate::try_from(leaf)?.not_after();
        if now <= expired_at {
            return Err(OpError::Selection(format!(
                "{fqdn}'s certificate is valid until {expired_at}: renew it with a staged Server \
                 Remint; the emergency replacement is for expired certificates (SR6)"
            ))
            .into());
        }
        let (chain, mut writes) = match (&zone.ca, certificate) {
            (CaKind::Internal { certificate_server }, None) => {
                let issuer = Certificate::try_from(&zone.ca_certificate)?;
                // Checked before the agent makes a key: an expired CA issues nothing.
                if now > issuer.not_after() {
                    return Err(OpError::Selection(format!(
                        "the zone CA expired at {}, so it cannot issue a replacement: renew the \
                         CA first (Remint CA or Change CA with activation \"immediate\")",
                        issuer.not_after()
                    ))
                    .into());
                }
                let profile = ServerProfile {
                    fqdn: fqdn.to_string(),
                    common_name: None,
                    dns_names: server.dns_names.clone(),
                    include_dns: true,
                    not_after: None,
                };
                let spec = Certificate::try_from(leaf)?
                    .key_algorithm()
                    .ok()
                    .and_then(|a| {
                        crate::key::KeySpec::ALL
                            .into_iter()
                            .find(|k| k.algorithm() == a)
                    })
                    .unwrap_or_default();
                let (new_leaf, w) = self.issue_for_member(
                    fqdn.as_str(),
                    &issuer,
                    certificate_server,
                    spec,
                    &profile,
                    now,
                )?;
                (
                    vec![new_leaf.der().clone(), zone.ca_certificate.clone()],
                    vec![w],
                )
            }
            (CaKind::Internal { .. }, Some(_)) => {
                return Err(OpError::Selection(
                    "this zone's CA is internal: its certificate server issues the replacement; \
                     give no certificate"
                        .into(),
                )
                .into());
            }
            (CaKind::External, None) => {
                return Err(OpError::Selection(format!(
                    "this zone's CA is external: generate a CSR for {fqdn}, have the current CA \
                     sign it, and give the certificate"
                ))
                .into());
            }
            (CaKind::External, Some(bytes)) => {
                let csr = server.csr.clone().ok_or_else(|| OpError::NoCsr {
                    fqdn: fqdn.to_string(),
                    manual: false,
                })?;
                let certs = bundle::read_certificates(bytes)?;
                let chain = super::external::check_import(
                    fqdn,
                    &csr,
                    certs,
                    &zone.ca_certificate,
                    &zone.ca_intermediates,
                    (now, now),
                    &[],
                )?;
                server.csr = None;
                (chain, Vec::new())
            }
        };
        self.transport.call(
            fqdn.as_str(),
            AgentRequest::Install {
                chain: chain.clone(),
                trust: zone.trust_bundle(now),
                now,
            },
        )?;
        server.certificate = chain.clone();
        writes.push(Write::put(
            key,
            Expect::Version(rec.version),
            encode(&server),
        ));
        // Every device must re-establish, so the answer names them all; their names are their
        // keys, so no device record is decoded for it.
        let mut must_reestablish: Vec<String> = Vec::new();
        self.each_device_name(&mut |name| {
            must_reestablish.push(name.to_string());
            std::ops::ControlFlow::Continue(())
        })?;
        for s in self.server_records()? {
            let linked = s.parent.as_ref() == Some(fqdn) || server.parent.as_ref() == Some(&s.fqdn);
            if linked {
                must_reestablish.push(s.fqdn.to_string());
            }
        }
        let detail = serde_json::json!({
            "server": fqdn, "expired_at": expired_at, "must_reestablish": must_reestablish.len(),
        });
        self.commit(&mut epoch, writes, "server.replace_expired", detail)?;
        Ok(Replacement {
            fqdn: fqdn.to_string(),
            chain,
            expired_at,
            must_reestablish,
        })
    }
}

/// MV1, BK2 (B5): a CA handover not yet finished: `to` holds the role, and the servers of
/// `erase` may still hold a copy of the CA key (the old holders, until they confirm erasing
/// it). Stored under its own key, written in the handover's commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Handover {
    /// The certificate server the handover made.
    to: Fqdn,
    /// The servers still to erase their copy, in FQDN order.
    erase: Vec<Fqdn>,
}

/// The servers of `h` still to erase their copy, for the CA view.
pub(super) fn handover_erase(h: &Handover) -> Vec<String> {
    h.erase.iter().map(ToString::to_string).collect()
}

/// The version a record has after a write that expected `expect`.
fn next(expect: Expect) -> u64 {
    match expect {
        Expect::Version(v) => v + 1,
        Expect::Absent | Expect::Any => 1,
    }
}
