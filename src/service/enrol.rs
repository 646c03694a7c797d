//! Members on their own hosts (N3): one-time registration tokens, enrolment from a CSR the
//! member made itself (S1), renewal of a device's credential, the CA certificates a client
//! pins, the anchors a zone server accepts client credentials from (N4, B7), and the audit of
//! refusals.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Result, ZoneService, decode, encode, serial_write};
use crate::ca::{Serial, ServerProfile, issue_client_certificate, issue_server_certificate};
use crate::cert::{Certificate, CertificateDer};
use crate::clock::{Clock, Timestamp};
use crate::csr::VerifiedCsr;
use crate::error::Error;
use crate::ops::update::{self, MemberUpdate, Phase};
use crate::ops::{OpState, Operation};
use crate::protocol::{EnrollRequest, Enrolment, ProtocolError, RegistrationToken, RenewRequest};
use crate::store::{Expect, Storage, Write};
use crate::transport::Transport;
use crate::zone::{
    CaKind, DeviceRecord, RECORD_VERSION, ServerRecord, ZoneError, ZoneRecord, keys,
    member_lookup_name,
};

/// The longest a registration token may stay valid.
pub const TOKEN_MAX_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// How long a device's client credential is valid (at most until its issuer expires); the
/// agent renews it a month before.
const CREDENTIAL_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A registration token as the store keeps it: `token/<member>`. The token itself is kept
/// (a password-based MAC needs the secret, not a digest of it), and left out of dumps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    v: u32,
    member: String,
    token: RegistrationToken,
    issued_at: Timestamp,
    expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_at: Option<Timestamp>,
}

/// Why an enrolment or a renewal was refused. The messages never hold the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolmentError {
    /// No valid token: none was made for this member, or it is not the one presented. The
    /// two are not told apart, so that a guess learns nothing.
    #[error(
        "the registration token presented for {member} is not valid for it: make a new token \
         for this member and enrol with it"
    )]
    BadToken {
        /// The member named.
        member: String,
    },
    /// The token was already used (tokens are single-use).
    #[error(
        "the registration token of {member} was already used on {used_at}: a token enrols \
         once; make a new one to enrol this member again"
    )]
    Used {
        /// The member.
        member: String,
        /// When it was used.
        used_at: Timestamp,
    },
    /// The token expired.
    #[error("the registration token of {member} expired on {expires_at}: make a new one")]
    Expired {
        /// The member.
        member: String,
        /// When it expired.
        expires_at: Timestamp,
    },
    /// A token validity of zero or beyond [`TOKEN_MAX_VALIDITY`].
    #[error("a registration token is valid for 1 hour to {} days, not {hours} hours",
        TOKEN_MAX_VALIDITY.as_secs() / 86400)]
    Validity {
        /// What was asked, in hours.
        hours: u64,
    },
    /// The zone's CA is external: the zone cannot issue credentials itself.
    #[error(
        "the zone's CA is external, so the zone cannot issue {member} a credential: members \
         enrol with a registration token only in a zone with an internal CA"
    )]
    ExternalCa {
        /// The member.
        member: String,
    },
    /// A server's certificate is renewed by the zone's operations, not on request.
    #[error(
        "{member} is a server whose certificate is renewed by a Server Remint, not by the \
         member's request"
    )]
    ServerRenewal {
        /// The member.
        member: String,
    },
}

/// A refused request, for the audit log (N3: every refusal is audited). Nothing in it may be
/// a secret: say what was refused and why, not what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Refusal {
    /// What was refused: `poll`, `enroll`, `renew`, `tls`, `admin`, ...
    pub what: String,
    /// The member the request claimed to be, if it named one.
    pub claimed: Option<String>,
    /// Where it came from (an address), if known.
    pub peer: Option<String>,
    /// Why (the refusal's message).
    pub reason: String,
}

impl Refusal {
    /// A refusal of `what`, for `reason`.
    pub fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal {
            what: what.into(),
            claimed: None,
            peer: None,
            reason: reason.into(),
        }
    }

    /// The member the request claimed to be.
    pub fn claimed(mut self, member: impl Into<String>) -> Self {
        self.claimed = Some(member.into());
        self
    }

    /// Where the request came from.
    pub fn peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }
}

/// The member a TLS credential names: a server certificate's first SAN DNS name (its FQDN,
/// S4), or else the subject CN (a device's client credential). `None` when it names none.
pub fn credential_member(leaf: &Certificate) -> Option<String> {
    match leaf.dns_names() {
        Ok(names) if !names.is_empty() => names.into_iter().next(),
        _ => leaf.common_name(),
    }
    .map(|n| member_lookup_name(&n))
}

/// Who a name is in the zone.
enum Enrollee {
    Server(u64, ServerRecord),
    Device(DeviceRecord),
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// Makes one-time registration tokens (N3) for members already added, valid for
    /// `valid_for` (1 hour to [`TOKEN_MAX_VALIDITY`]). A new token replaces a member's
    /// earlier one. All or none: an unknown name refuses the whole call, changing nothing.
    pub fn issue_tokens(
        &self,
        names: &[String],
        valid_for: Duration,
    ) -> Result<Vec<(String, RegistrationToken)>> {
        if valid_for < Duration::from_secs(3600) || valid_for > TOKEN_MAX_VALIDITY {
            return Err(EnrolmentError::Validity {
                hours: valid_for.as_secs() / 3600,
            }
            .into());
        }
        let mut epoch = self.begin()?;
        self.zone()?;
        let now = self.clock.now();
        let expires_at = now.plus(valid_for);
        let mut out: Vec<(String, RegistrationToken)> = Vec::with_capacity(names.len());
        let mut writes = Vec::with_capacity(names.len());
        for given in names {
            let name = self.enrollee_name(given)?;
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let token =
                RegistrationToken::generate().map_err(|e| crate::key::KeyError::Generation {
                    reason: e.to_string(),
                })?;
            let record = TokenRecord {
                v: RECORD_VERSION,
                member: name.clone(),
                token: token.clone(),
                issued_at: now,
                expires_at,
                used_at: None,
            };
            writes.push(Write::put(keys::token(&name), Expect::Any, encode(&record)));
            out.push((name, token));
        }
        let detail = serde_json::json!({
            "members": out.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "expires_at": expires_at,
        });
        self.commit(&mut epoch, writes, "member.token", detail)?;
        Ok(out)
    }

    /// Enrols a member from its registration token and a CSR for a key it made itself (S1,
    /// N3): a server gets its server certificate, a device (or a server without one) a client
    /// credential, both from the zone CA. The token is used up in the same commit. A refusal
    /// changes nothing; the frontend audits it with [`Self::record_refusal`].
    pub fn enroll(&self, request: &EnrollRequest) -> Result<Enrolment> {
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        let now = self.clock.now();
        let name = member_lookup_name(&request.member);
        let (version, mut token) = self.live_token(&name, Some(&request.token), now)?;
        let who = self.enrollee(&name)?;
        let csr = VerifiedCsr::from_der(&request.csr)?;
        let (chain, mut writes) = self.issue_credential(&zone, &who, &csr, now)?;
        token.used_at = Some(now);
        writes.push(Write::put(
            keys::token(&name),
            Expect::Version(version),
            encode(&token),
        ));
        let detail = serde_json::json!({
            "member": name,
            "certificate_sha256": chain.first()
                .map(|c| crate::cert::Fingerprint::sha256(c.as_bytes()).to_string()),
        });
        self.commit(&mut epoch, writes, "member.enroll", detail)?;
        Ok(Enrolment {
            v: crate::protocol::VERSION,
            member: name,
            chain,
            trust: zone.trust_bundle(now),
        })
    }

    /// A new client credential for an enrolled member, authenticated as `authenticated` (the
    /// member its current credential names), for a new key it made (S1): before the current
    /// one expires, or after a CA change. Servers whose certificate the zone manages are
    /// refused (their certificates change by the operations).
    pub fn renew(&self, authenticated: &str, request: &RenewRequest) -> Result<Enrolment> {
        let name = member_lookup_name(&request.member);
        if name != member_lookup_name(authenticated) {
            return Err(ProtocolError::WrongMember {
                authenticated: authenticated.to_string(),
                claimed: request.member.clone(),
            }
            .into());
        }
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        let now = self.clock.now();
        let who = self.enrollee(&name)?;
        if let Enrollee::Server(_, s) = &who
            && s.role.has_certificate()
        {
            return Err(EnrolmentError::ServerRenewal { member: name }.into());
        }
        let csr = VerifiedCsr::from_der(&request.csr)?;
        let (chain, writes) = self.issue_credential(&zone, &who, &csr, now)?;
        let detail = serde_json::json!({
            "member": name,
            "certificate_sha256": chain.first()
                .map(|c| crate::cert::Fingerprint::sha256(c.as_bytes()).to_string()),
        });
        self.commit(&mut epoch, writes, "member.renew", detail)?;
        Ok(Enrolment {
            v: crate::protocol::VERSION,
            member: name,
            chain,
            trust: zone.trust_bundle(now),
        })
    }

    /// Records a refused request in the audit log (N3), changing nothing else. Retried when
    /// another commit comes first (a refusal is never lost to a race).
    pub fn record_refusal(&self, refusal: &Refusal) -> Result<()> {
        let detail = serde_json::to_value(refusal).unwrap_or(serde_json::Value::Null);
        let mut last = None;
        for _ in 0..8 {
            let mut epoch = self.begin()?;
            match self.commit(&mut epoch, Vec::new(), "refused", detail.clone()) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::ZoneChanged {
            event: "refused".into(),
        }))
    }

    /// The CA certificates whose credentials a zone server accepts from members now (N4, B7):
    /// the zone CA, the future CA of a running Remint CA or Change CA (a member switches by its
    /// own clock, possibly before the zone has recorded the activation, N5), and retired CAs
    /// whose certificates may still be in use.
    pub fn accepted_client_anchors(&self) -> Result<Vec<CertificateDer>> {
        let zone = self.zone()?;
        let mut out = zone.trust_bundle(self.clock.now());
        if let Some((_, op)) = self.current_op()?
            && let Some(future) = op.kind.future_ca()
            && !out.contains(future)
        {
            out.push(future.clone());
        }
        Ok(out)
    }

    /// The zone's CA certificates, for a client that pins one of them by its SHA-256 before it
    /// trusts the zone server: the same set as [`Self::accepted_client_anchors`].
    pub fn ca_certificates(&self) -> Result<Vec<CertificateDer>> {
        self.accepted_client_anchors()
    }

    /// `name`'s registration token with its version, when `presented` (if given) is it and it
    /// is neither used nor expired. A wrong token is refused as if there were none, before its
    /// state is told.
    fn live_token(
        &self,
        name: &str,
        presented: Option<&RegistrationToken>,
        now: Timestamp,
    ) -> Result<(u64, TokenRecord)> {
        let bad = || EnrolmentError::BadToken {
            member: name.to_string(),
        };
        let key = keys::token(name);
        let Some(rec) = self.store.get(&key)? else {
            return Err(bad().into());
        };
        let token: TokenRecord = decode(&key, &rec.value)?;
        if presented.is_some_and(|p| !token.token.matches(p.as_str())) {
            return Err(bad().into());
        }
        if let Some(used_at) = token.used_at {
            return Err(EnrolmentError::Used {
                member: name.to_string(),
                used_at,
            }
            .into());
        }
        if now >= token.expires_at {
            return Err(EnrolmentError::Expired {
                member: name.to_string(),
                expires_at: token.expires_at,
            }
            .into());
        }
        Ok((rec.version, token))
    }

    /// The member key a name refers to, for a token: a server's FQDN or a device's name.
    fn enrollee_name(&self, given: &str) -> Result<String> {
        let name = member_lookup_name(given);
        if self.store.get(&keys::server(&name))?.is_some()
            || self.store.get(&keys::device(&name))?.is_some()
        {
            Ok(name)
        } else {
            Err(ZoneError::UnknownMember {
                name: given.to_string(),
            }
            .into())
        }
    }

    fn enrollee(&self, name: &str) -> Result<Enrollee> {
        let key = keys::server(name);
        if let Some(rec) = self.store.get(&key)? {
            return Ok(Enrollee::Server(rec.version, decode(&key, &rec.value)?));
        }
        let key = keys::device(name);
        if let Some(rec) = self.store.get(&key)? {
            return Ok(Enrollee::Device(decode(&key, &rec.value)?));
        }
        Err(ZoneError::UnknownMember { name: name.into() }.into())
    }

    /// Issues `who` its credential for `csr`'s key under the zone CA: a server certificate
    /// (recorded on the server) or a client credential. Returns the chain and the writes.
    fn issue_credential(
        &self,
        zone: &ZoneRecord,
        who: &Enrollee,
        csr: &VerifiedCsr,
        now: Timestamp,
    ) -> Result<(Vec<CertificateDer>, Vec<Write>)> {
        let name = match who {
            Enrollee::Server(_, s) => s.fqdn.to_string(),
            Enrollee::Device(d) => d.name.clone(),
        };
        let CaKind::Internal { certificate_server } = &zone.ca else {
            return Err(EnrolmentError::ExternalCa { member: name }.into());
        };
        let issuer = Certificate::try_from(&zone.ca_certificate)?;
        let signer = self.ca_signer(certificate_server, &issuer)?;
        let serial = Serial::random()?;
        let leaf = match who {
            Enrollee::Server(_, s) if s.role.has_certificate() => {
                let profile = ServerProfile {
                    fqdn: s.fqdn.to_string(),
                    common_name: None,
                    dns_names: s.dns_names.clone(),
                    include_dns: true,
                    not_after: None,
                };
                issue_server_certificate(&issuer, &signer, csr, &profile, &serial, now)?
            }
            _ => issue_client_certificate(
                &issuer,
                &signer,
                csr,
                &name,
                &serial,
                now,
                now.plus(CREDENTIAL_VALIDITY),
            )?,
        };
        let chain = vec![leaf.der().clone(), zone.ca_certificate.clone()];
        let mut writes = vec![serial_write(&issuer, &serial, &leaf.subject(), now)?];
        if let Enrollee::Server(version, s) = who
            && s.role.has_certificate()
        {
            let mut s = s.clone();
            s.certificate = chain.clone();
            writes.push(Write::put(
                keys::server(s.fqdn.as_str()),
                Expect::Version(*version),
                encode(&s),
            ));
        }
        Ok((chain, writes))
    }
}

/// A CMP transaction (E1) as the store keeps it: `cmp/<transactionID in hex>`, written in the
/// commit that issues its certificate, so a repeated transactionID gets the same certificate
/// back and never a second one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CmpTransaction {
    pub(crate) v: u32,
    /// The member it enrolled.
    pub(crate) member: String,
    /// The certReqId answered.
    pub(crate) cert_req_id: i64,
    /// The certificate and its issuer.
    pub(crate) chain: Vec<CertificateDer>,
    /// The zone's trust when issued (caPubs).
    pub(crate) trust: Vec<CertificateDer>,
    /// Whether the client confirmed it (certConf, or implicitly).
    pub(crate) confirmed: bool,
    /// E2: the certificate is a future one, issued by the future CA of a running Remint CA or
    /// Change CA; the client switches to it at this activation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) activation: Option<Timestamp>,
}

/// What a kur does to the member's update record in a running CA operation (E2).
enum Rekey {
    /// Nothing: no CA operation runs, it is not assigned yet, an external CA will issue the
    /// future certificates, or the member is out of the update: a certificate of the current CA.
    Current,
    /// Assigned, not yet activated: the future certificate, and the member counts as staged.
    Future(OpUpdate),
    /// Activated: a certificate of the (new) current CA; the member's record changes as `OpUpdate`
    /// says (switched, or recovered).
    After(OpUpdate),
}

/// A member's update record in the running operation, as read (B6) and as it is to be written.
struct OpUpdate {
    op: Operation,
    version: Option<u64>,
    update: MemberUpdate,
}

impl OpUpdate {
    fn write(&self) -> Write {
        Write::put(
            update::key(self.op.id, &self.update.name),
            self.version.map_or(Expect::Absent, Expect::Version),
            encode(&self.update),
        )
    }
}

fn cmp_key(transaction_id: &[u8]) -> String {
    format!("cmp/{}", base16ct::lower::encode_string(transaction_id))
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// The registration token of `member` as stored (used or not, expired or not), the secret
    /// of a CMP password-based MAC (E1). `None` when the member has none.
    pub(crate) fn registration_secret(&self, member: &str) -> Result<Option<RegistrationToken>> {
        let key = keys::token(&member_lookup_name(member));
        match self.store.get(&key)? {
            Some(rec) => Ok(Some(decode::<TokenRecord>(&key, &rec.value)?.token)),
            None => Ok(None),
        }
    }

    /// The CMP transaction `transaction_id`, if one was recorded.
    pub(crate) fn cmp_transaction(&self, transaction_id: &[u8]) -> Result<Option<CmpTransaction>> {
        let key = cmp_key(transaction_id);
        match self.store.get(&key)? {
            Some(rec) => Ok(Some(decode(&key, &rec.value)?)),
            None => Ok(None),
        }
    }

    /// Enrols `member` by CMP (E1, N3): its registration token was proven by the message's MAC
    /// and its key's possession by the request's POP, both checked by the caller. The token is
    /// used up, the certificate issued as [`Self::enroll`] issues it, and the transaction
    /// recorded, all in one commit; a transactionID already recorded is refused (the caller
    /// answers a retry from [`Self::cmp_transaction`] first).
    pub(crate) fn cmp_enroll(
        &self,
        member: &str,
        public_key: spki::SubjectPublicKeyInfoOwned,
        transaction_id: &[u8],
        cert_req_id: i64,
        confirmed: bool,
    ) -> Result<CmpTransaction> {
        self.cmp_issue(
            member,
            public_key,
            transaction_id,
            cert_req_id,
            confirmed,
            None,
        )
    }

    /// Re-keys `member` by CMP (kur, E1): its current credential `protecting` signed the
    /// request (checked by the caller, with the member it names), the new key's possession
    /// proven by the POP. A server whose certificate the zone manages is refused, as by
    /// [`Self::renew`].
    ///
    /// During a Remint CA or Change CA to an internal CA (E2), once the update is assigned
    /// (O4) and until activation, the certificate is the member's future one, issued by the
    /// future CA through the agent that holds its key (as the servers' future certificates
    /// are), and the member's update record says `applied` (staged) in the same commit. After
    /// activation a member that had staged counts as `activated` once `protecting` was issued
    /// by the (then) new CA, and one that had missed the update as `recovered` (the answer
    /// carries the new CA and a certificate of it), again in the commit that issues.
    pub(crate) fn cmp_rekey(
        &self,
        member: &str,
        public_key: spki::SubjectPublicKeyInfoOwned,
        transaction_id: &[u8],
        cert_req_id: i64,
        confirmed: bool,
        protecting: &Certificate,
    ) -> Result<CmpTransaction> {
        self.cmp_issue(
            member,
            public_key,
            transaction_id,
            cert_req_id,
            confirmed,
            Some(protecting),
        )
    }

    /// E2: a CMP request other than a kur (a signed genm or certConf) authenticated by
    /// `protecting`, a credential of `member`: after activation, a member that had staged and
    /// signs with a certificate of the new CA has switched; its update record says so (one
    /// commit, only when it changes: a repeated request changes nothing).
    pub(crate) fn cmp_authenticated(&self, member: &str, protecting: &Certificate) -> Result<()> {
        let mut epoch = self.begin()?;
        // N6: an activation that is due runs first, as before an agent's answer.
        self.tick_with(&mut epoch)?;
        let name = member_lookup_name(member);
        let Some(mut u) = self.cmp_op_update(&name)? else {
            return Ok(());
        };
        if !matches!(u.op.state, OpState::Activated(_))
            || !Self::issued_by_future_ca(&u.op, protecting, self.clock.now())
            || !u.update.switched()
        {
            return Ok(());
        }
        u.update.updated_at = self.clock.now();
        let detail = serde_json::json!({
            "member": name,
            "via": "cmp",
            "op": u.op.id,
            "status": "activated",
        });
        self.commit(&mut epoch, vec![u.write()], "member.activated", detail)
    }

    /// `name`'s update record in the running Remint CA or Change CA, if one runs (a Server
    /// Remint concerns servers only).
    fn cmp_op_update(&self, name: &str) -> Result<Option<OpUpdate>> {
        let Some((_, op)) = self.current_op()? else {
            return Ok(None);
        };
        if !op.state.is_running() || op.kind.future_ca().is_none() {
            return Ok(None);
        }
        let (version, update) = match self.member_update(&op, name)? {
            Some((v, u)) => (Some(v), u),
            None => (None, MemberUpdate::assigned(name, self.clock.now())),
        };
        Ok(Some(OpUpdate {
            op,
            version,
            update,
        }))
    }

    /// Whether `cert` was issued by `op`'s future CA (valid at `now`).
    fn issued_by_future_ca(op: &Operation, cert: &Certificate, now: Timestamp) -> bool {
        op.kind
            .future_ca()
            .and_then(|f| Certificate::try_from(f).ok())
            .is_some_and(|future| {
                crate::chain::verify_chain(cert, &[], std::slice::from_ref(&future), now).is_ok()
            })
    }

    /// What a kur by `name`, authenticated by `protecting`, does in the running operation.
    fn rekey_plan(&self, name: &str, protecting: &Certificate, now: Timestamp) -> Result<Rekey> {
        let Some(mut u) = self.cmp_op_update(name)? else {
            return Ok(Rekey::Current);
        };
        Ok(match u.op.state {
            // O4: the update reaches CMP clients when it is assigned, as it reaches agents; an
            // external future CA issues only the servers' certificates (CE2).
            OpState::Assigned(_)
                if Self::issuing_server(&u.op).is_some()
                    && matches!(
                        u.update.phase(),
                        Phase::Assigned | Phase::Fetching | Phase::Applied
                    ) =>
            {
                Rekey::Future(u)
            }
            OpState::Activated(_) => {
                let changed = match u.update.phase() {
                    Phase::Applied => {
                        Self::issued_by_future_ca(&u.op, protecting, now) && u.update.switched()
                    }
                    Phase::Assigned | Phase::Fetching | Phase::Failed => u.update.recovered(),
                    _ => false,
                };
                if changed {
                    u.update.updated_at = now;
                    Rekey::After(u)
                } else {
                    Rekey::Current
                }
            }
            _ => Rekey::Current,
        })
    }

    /// Issues by token (`protecting` is `None`: ir, cr, p10cr) or by kur.
    fn cmp_issue(
        &self,
        member: &str,
        public_key: spki::SubjectPublicKeyInfoOwned,
        transaction_id: &[u8],
        cert_req_id: i64,
        confirmed: bool,
        protecting: Option<&Certificate>,
    ) -> Result<CmpTransaction> {
        let mut epoch = self.begin()?;
        // N6: an activation that is due runs first, so the answer (which CA issues, the
        // member's status) rests on it, as an agent's answer does.
        self.tick_with(&mut epoch)?;
        let zone = self.zone()?;
        let now = self.clock.now();
        let name = member_lookup_name(member);
        let by_token = protecting.is_none();
        let mut writes = Vec::new();
        if by_token {
            // The MAC keyed by the token was verified before (the caller's protection check).
            let (version, mut token) = self.live_token(&name, None, now)?;
            token.used_at = Some(now);
            writes.push(Write::put(
                keys::token(&name),
                Expect::Version(version),
                encode(&token),
            ));
        }
        let who = self.enrollee(&name)?;
        if !by_token
            && let Enrollee::Server(_, s) = &who
            && s.role.has_certificate()
        {
            return Err(EnrolmentError::ServerRenewal { member: name }.into());
        }
        let subject = crate::csr::CsrSubject::cn(name.as_str()).to_name()?;
        let csr = VerifiedCsr::for_proven_key(public_key, subject)?;
        let plan = match protecting {
            Some(p) => self.rekey_plan(&name, p, now)?,
            None => Rekey::Current,
        };
        let mut staged = None;
        let (chain, trust, activation) = match plan {
            Rekey::Future(mut u) => {
                let (chain, issued) = self.issue_future_credential(&u.op, &name, &csr, now)?;
                writes.extend(issued);
                u.update.cmp_staged(chain.clone());
                u.update.updated_at = now;
                writes.push(u.write());
                staged = Some((u.op.id, "applied"));
                let (trust_now, _) = Self::trust_sets(&u.op, &zone, now);
                (chain, trust_now, Some(u.op.activation.at))
            }
            Rekey::After(u) => {
                writes.push(u.write());
                let status = if u.update.switched {
                    "activated"
                } else {
                    "recovered"
                };
                staged = Some((u.op.id, status));
                let (chain, issued) = self.issue_credential(&zone, &who, &csr, now)?;
                writes.extend(issued);
                (chain, zone.trust_bundle(now), None)
            }
            Rekey::Current => {
                let (chain, issued) = self.issue_credential(&zone, &who, &csr, now)?;
                writes.extend(issued);
                (chain, zone.trust_bundle(now), None)
            }
        };
        let txn = CmpTransaction {
            v: RECORD_VERSION,
            member: name.clone(),
            cert_req_id,
            chain,
            trust,
            confirmed,
            activation,
        };
        writes.push(Write::put(
            cmp_key(transaction_id),
            Expect::Absent,
            encode(&txn),
        ));
        let mut detail = serde_json::json!({
            "member": name,
            "via": "cmp",
            "certificate_sha256": txn.chain.first()
                .map(|c| crate::cert::Fingerprint::sha256(c.as_bytes()).to_string()),
        });
        if let Some((op, status)) = staged {
            detail["op"] = op.into();
            detail["status"] = status.into();
        }
        if let Some(at) = activation {
            detail["activation"] = at.to_string().into();
        }
        let event = if by_token {
            "member.enroll"
        } else {
            "member.renew"
        };
        self.commit(&mut epoch, writes, event, detail)?;
        Ok(txn)
    }

    /// E2: `name`'s future client credential for `csr`'s key, issued by `op`'s future CA
    /// through the agent that holds its key (the certificate server, or the new one of a
    /// Change CA to internal), as the servers' future certificates are. Valid from now, so a
    /// member that switches early by its own clock is accepted (N5, the zone accepts the future
    /// CA's credentials before activation). The chain is the certificate, the future CA, and
    /// the bridge when there is one (B1: the future CA certified by the current one). Returns
    /// the chain and the serial-number write (S3).
    fn issue_future_credential(
        &self,
        op: &Operation,
        name: &str,
        csr: &VerifiedCsr,
        now: Timestamp,
    ) -> Result<(Vec<CertificateDer>, Vec<Write>)> {
        let (Some(future), Some(issuing)) = (op.kind.future_ca(), Self::issuing_server(op)) else {
            return Err(EnrolmentError::ExternalCa {
                member: name.to_string(),
            }
            .into());
        };
        let issuer = Certificate::try_from(future)?;
        let signer = self.ca_signer(&issuing, &issuer)?;
        let serial = Serial::random()?;
        let leaf = issue_client_certificate(
            &issuer,
            &signer,
            csr,
            name,
            &serial,
            now,
            now.plus(CREDENTIAL_VALIDITY),
        )?;
        let mut chain = vec![leaf.der().clone(), future.clone()];
        chain.extend(op.kind.bridge().cloned());
        let writes = vec![serial_write(&issuer, &serial, &leaf.subject(), now)?];
        Ok((chain, writes))
    }

    /// Records that the client confirmed the certificate of `transaction_id` (certConf).
    /// Confirming again changes nothing.
    pub(crate) fn cmp_confirm(&self, transaction_id: &[u8]) -> Result<Option<CmpTransaction>> {
        let mut epoch = self.begin()?;
        let key = cmp_key(transaction_id);
        let Some(rec) = self.store.get(&key)? else {
            return Ok(None);
        };
        let mut txn: CmpTransaction = decode(&key, &rec.value)?;
        if txn.confirmed {
            return Ok(Some(txn));
        }
        txn.confirmed = true;
        let detail = serde_json::json!({ "member": txn.member, "via": "cmp" });
        self.commit(
            &mut epoch,
            vec![Write::put(key, Expect::Version(rec.version), encode(&txn))],
            "member.confirm",
            detail,
        )?;
        Ok(Some(txn))
    }
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// For CMP's rootCaKeyUpdate (E1, E2): during a Remint CA or Change CA, the future CA
    /// (newWithNew), the bridge that certifies it under the current CA when there is one
    /// (newWithOld, B1), and the operation's activation. `None` when no CA operation runs.
    pub(crate) fn cmp_root_update(
        &self,
    ) -> Result<
        Option<(
            CertificateDer,
            Option<CertificateDer>,
            crate::ops::Activation,
        )>,
    > {
        Ok(self.current_op()?.and_then(|(_, op)| {
            op.kind
                .future_ca()
                .cloned()
                .map(|future| (future, op.kind.bridge().cloned(), op.activation))
        }))
    }
}
