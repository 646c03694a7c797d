//! The system update's per-member side (O3-O5, O8, O9, SR4): one record per member,
//! `op/<id>/m/<name>`, written in batches so that 100,000 reports are 100,000 small writes
//! rather than rewrites of one large record.

use serde::{Deserialize, Serialize};

use crate::cert::CertificateDer;
use crate::clock::Timestamp;
use crate::zone::RECORD_VERSION;

/// A member's update status (O5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Assigned, not yet fetched.
    Assigned,
    /// Fetched; staging not finished (a server whose future certificate is still being made).
    Downloading,
    /// Staged: the member holds the future trust (and, on a server, its future key and
    /// certificate) and will switch at activation.
    Applied,
    /// Failed, with a reason; "redeploy" sends it again.
    Failed,
    /// Taken out of the update ("ignore device").
    Ignored,
}

impl MemberStatus {
    /// `assigned`, `downloading`, `applied`, `failed`, `ignored`.
    pub fn name(self) -> &'static str {
        match self {
            MemberStatus::Assigned => "assigned",
            MemberStatus::Downloading => "downloading",
            MemberStatus::Applied => "applied",
            MemberStatus::Failed => "failed",
            MemberStatus::Ignored => "ignored",
        }
    }
}

/// SR4's certificate status of a server during a remint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerCertStatus {
    /// Internal: "New certificate created": the future certificate exists.
    Created,
    /// Internal: "Creating certificate failed".
    Failed,
    /// External: "CSR generated": waiting for the certificate.
    CsrGenerated,
    /// External: "CSR generation failed".
    CsrFailed,
    /// External: "New certificate uploaded": the future certificate was imported.
    Uploaded,
}

impl ServerCertStatus {
    /// The manual's wording.
    pub fn text(self) -> &'static str {
        match self {
            ServerCertStatus::Created => "new certificate created",
            ServerCertStatus::Failed => "creating certificate failed",
            ServerCertStatus::CsrGenerated => "CSR generated",
            ServerCertStatus::CsrFailed => "CSR generation failed",
            ServerCertStatus::Uploaded => "new certificate uploaded",
        }
    }

    /// Whether the future certificate exists (O12 counts these).
    pub fn has_certificate(self) -> bool {
        matches!(self, ServerCertStatus::Created | ServerCertStatus::Uploaded)
    }
}

/// One member's progress in one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    /// Record format version.
    pub v: u32,
    /// The member.
    pub name: String,
    /// Update status.
    pub status: MemberStatus,
    /// Why it failed (or why activation failed, O9).
    pub reason: Option<String>,
    /// For servers: the future chain, leaf first (V2 "future certificate").
    #[serde(with = "crate::cert::record_chain")]
    pub future_chain: Vec<CertificateDer>,
    /// For servers: SR4 status.
    pub cert_status: Option<ServerCertStatus>,
    /// External CA, automatic CSR mode: the CSR the server's agent made (SR5).
    #[serde(default)]
    pub csr: Option<crate::csr::CsrDer>,
    /// The member switched to the staged material (A2).
    pub switched: bool,
    /// The member missed activation and was recovered with the recovery bundle (O8).
    pub recovered: bool,
    /// Last change.
    pub updated_at: Timestamp,
}

impl MemberUpdate {
    /// A member that has the update assigned and has not reported.
    pub fn assigned(name: &str, now: Timestamp) -> Self {
        MemberUpdate {
            v: RECORD_VERSION,
            name: name.to_string(),
            status: MemberStatus::Assigned,
            reason: None,
            future_chain: Vec::new(),
            cert_status: None,
            csr: None,
            switched: false,
            recovered: false,
            updated_at: now,
        }
    }

    /// After activation: a member that neither applied the update nor was taken out of it,
    /// and has not been recovered, is stranded (O8).
    pub fn is_stranded(&self) -> bool {
        !matches!(self.status, MemberStatus::Applied | MemberStatus::Ignored) && !self.recovered
    }
}

/// Store key of a member's record in operation `id`.
pub fn key(id: u64, name: &str) -> String {
    format!("{}{name}", prefix(id))
}

/// Prefix of every member record of operation `id`.
pub fn prefix(id: u64) -> String {
    format!("op/{id:06}/m/")
}

/// Where a member is in one operation: the per-member state machine (O5, O8, O9, SR4) over
/// the persisted record. Every change of a [`MemberUpdate`] goes through one of its
/// transitions below; each says which phases it leaves from, and a transition that does not
/// apply in the member's phase changes nothing and returns `false` (a repeated report, N2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Assigned; nothing fetched yet.
    Assigned,
    /// Fetching: a key and CSR being made, a certificate being issued or imported, the
    /// administrator's files being read.
    Fetching,
    /// Staged: it switches at the activation time (A1).
    Applied,
    /// Failed, with a reason; `redeploy` sends the update again (O5).
    Failed,
    /// Taken out of the update (O5).
    Ignored,
    /// Switched at activation (A2).
    Switched,
    /// Missed activation, recovered with the bundle (O6).
    Recovered,
}

impl MemberUpdate {
    /// The member's phase.
    pub fn phase(&self) -> Phase {
        match self.status {
            _ if self.recovered => Phase::Recovered,
            _ if self.switched => Phase::Switched,
            MemberStatus::Assigned => Phase::Assigned,
            MemberStatus::Downloading => Phase::Fetching,
            MemberStatus::Applied => Phase::Applied,
            MemberStatus::Failed => Phase::Failed,
            MemberStatus::Ignored => Phase::Ignored,
        }
    }

    /// Whether the member is still to stage: assigned or fetching.
    pub fn is_pending(&self) -> bool {
        matches!(self.phase(), Phase::Assigned | Phase::Fetching)
    }

    /// Assigned → fetching (the member was told to make a key, or to read its files).
    pub fn fetching(&mut self) -> bool {
        self.is_pending() && self.set_status(MemberStatus::Downloading)
    }

    /// SR4: the zone's CA issued the future certificate (`chain`, leaf first).
    pub fn certificate_created(&mut self, chain: Vec<CertificateDer>) -> bool {
        if !self.is_pending() {
            return false;
        }
        self.future_chain = chain;
        self.cert_status = Some(ServerCertStatus::Created);
        true
    }

    /// SR5: the member's CSR for the external CA arrived.
    pub fn csr_generated(&mut self, csr: crate::csr::CsrDer) -> bool {
        if !self.is_pending() {
            return false;
        }
        self.csr = Some(csr);
        self.cert_status = Some(ServerCertStatus::CsrGenerated);
        true
    }

    /// SR4/SR5: the external CA's certificate was imported (or, in manual mode, the
    /// administrator's chain validated on the member).
    pub fn certificate_uploaded(&mut self, chain: Vec<CertificateDer>) -> bool {
        if matches!(
            self.phase(),
            Phase::Switched | Phase::Recovered | Phase::Ignored
        ) {
            return false;
        }
        self.future_chain = chain;
        self.cert_status = Some(ServerCertStatus::Uploaded);
        self.reason = None;
        true
    }

    /// SR5 "Generate CSR": a new CSR replaces the old one and any certificate imported for it;
    /// a member that had failed is assigned again.
    pub fn csr_regenerated(&mut self, csr: crate::csr::CsrDer) -> bool {
        if matches!(
            self.phase(),
            Phase::Switched | Phase::Recovered | Phase::Ignored
        ) {
            return false;
        }
        self.csr = Some(csr);
        self.cert_status = Some(ServerCertStatus::CsrGenerated);
        self.future_chain.clear();
        if self.status == MemberStatus::Failed {
            self.status = MemberStatus::Assigned;
        }
        self.reason = None;
        true
    }

    /// Still fetching, waiting for something outside the member (an external CA's
    /// certificate, the administrator's files): the reason is shown.
    pub fn waiting(&mut self, reason: impl Into<String>) -> bool {
        let reason = Some(reason.into());
        if !self.is_pending() || self.reason == reason {
            return false;
        }
        self.reason = reason;
        true
    }

    /// Fetching → applied: the member staged the update (A1).
    pub fn staged(&mut self) -> bool {
        if !self.is_pending() {
            return false;
        }
        self.status = MemberStatus::Applied;
        self.reason = None;
        true
    }

    /// A CMP client's kur was answered with its future certificate (`chain`, leaf first, E2):
    /// it holds the future CA and its future key and certificate, so it is staged as an agent
    /// that applied the update is. A later kur before activation replaces the certificate
    /// (the client keeps the newest key); the status stays applied.
    pub fn cmp_staged(&mut self, chain: Vec<CertificateDer>) -> bool {
        if !matches!(
            self.phase(),
            Phase::Assigned | Phase::Fetching | Phase::Applied
        ) {
            return false;
        }
        let changed = self.future_chain != chain || self.status != MemberStatus::Applied;
        self.future_chain = chain;
        self.status = MemberStatus::Applied;
        self.reason = None;
        changed
    }

    /// The member failed to apply the update (O5), or its certificate could not be made
    /// (`cert` says how, SR4). With `key_lost` the key its future certificate was for is gone,
    /// so the certificate goes too.
    pub fn failed(
        &mut self,
        reason: impl Into<String>,
        cert: Option<ServerCertStatus>,
        key_lost: bool,
    ) -> bool {
        if !matches!(
            self.phase(),
            Phase::Assigned | Phase::Fetching | Phase::Applied
        ) {
            return false;
        }
        if key_lost {
            self.future_chain.clear();
            self.cert_status = None;
        }
        if cert.is_some() {
            self.cert_status = cert;
        }
        self.status = MemberStatus::Failed;
        self.reason = Some(reason.into());
        true
    }

    /// Failed → assigned: "redeploy" (O5). The certificate status goes with the failure.
    pub fn redeploy(&mut self) -> bool {
        if self.phase() != Phase::Failed {
            return false;
        }
        self.status = MemberStatus::Assigned;
        self.reason = None;
        self.cert_status = None;
        true
    }

    /// "Ignore device" (O5): out of the update, whatever its phase before.
    pub fn ignore(&mut self) -> bool {
        self.set_status(MemberStatus::Ignored)
    }

    /// Applied → switched: the member switched at activation (A2).
    pub fn switched(&mut self) -> bool {
        if self.phase() != Phase::Applied {
            return false;
        }
        self.switched = true;
        self.reason = None;
        true
    }

    /// An applied member's switch failed; it is retried at its next contact (O9).
    pub fn switch_failed(&mut self, reason: impl Into<String>) -> bool {
        let reason = Some(reason.into());
        if self.phase() != Phase::Applied || self.reason == reason {
            return false;
        }
        self.reason = reason;
        true
    }

    /// A stranded server's recovery certificate was issued (O6): kept until it is installed.
    pub fn recovery_certificate(&mut self, chain: Vec<CertificateDer>) -> bool {
        if matches!(
            self.phase(),
            Phase::Switched | Phase::Recovered | Phase::Ignored
        ) {
            return false;
        }
        self.future_chain = chain;
        true
    }

    /// A member that missed activation recovered with the bundle (O6).
    pub fn recovered(&mut self) -> bool {
        if matches!(
            self.phase(),
            Phase::Switched | Phase::Recovered | Phase::Ignored
        ) {
            return false;
        }
        self.recovered = true;
        self.reason = None;
        true
    }

    fn set_status(&mut self, status: MemberStatus) -> bool {
        if self.status == status {
            return false;
        }
        self.status = status;
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn u() -> MemberUpdate {
        MemberUpdate::assigned("dev-1", "2027-01-01T00:00:00Z".parse().unwrap())
    }

    #[test]
    fn a_member_goes_assigned_fetching_applied_switched() {
        let mut m = u();
        assert_eq!(m.phase(), Phase::Assigned);
        assert!(!m.switched(), "not before it applied");
        assert!(m.fetching());
        assert_eq!(m.phase(), Phase::Fetching);
        assert!(m.staged());
        assert!(!m.staged(), "a repeated report changes nothing (N2)");
        assert_eq!(m.phase(), Phase::Applied);
        assert!(m.switch_failed("disk full"));
        assert!(!m.switch_failed("disk full"));
        assert!(m.switched());
        assert!(!m.switched());
        assert_eq!(m.phase(), Phase::Switched);
        assert!(!m.recovered(), "a member that switched needs no recovery");
        assert!(!m.failed("late", None, false));
    }

    #[test]
    fn failure_redeploy_ignore_and_recovery() {
        let mut m = u();
        assert!(m.certificate_created(vec![crate::cert::CertificateDer::from_vec(vec![1])]));
        assert!(m.failed("no space", None, true));
        assert!(
            m.future_chain.is_empty() && m.cert_status.is_none(),
            "the key is gone"
        );
        assert_eq!(m.phase(), Phase::Failed);
        assert!(!m.staged(), "a failed member stages only after redeploy");
        assert!(m.redeploy());
        assert!(!m.redeploy());
        assert_eq!(m.phase(), Phase::Assigned);
        assert!(m.recovered());
        assert_eq!(m.phase(), Phase::Recovered);
        let mut m = u();
        assert!(m.ignore());
        assert!(!m.ignore());
        assert!(!m.staged() && !m.recovered());
        assert!(!m.is_stranded(), "an ignored member is not stranded");
    }

    #[test]
    fn a_cmp_client_stages_with_its_future_certificate_e2() {
        let cert = |b: u8| crate::cert::CertificateDer::from_vec(vec![b]);
        let mut m = u();
        assert!(m.cmp_staged(vec![cert(1)]));
        assert_eq!(m.phase(), Phase::Applied);
        assert!(
            !m.cmp_staged(vec![cert(1)]),
            "the same answer again changes nothing"
        );
        assert!(
            m.cmp_staged(vec![cert(2)]),
            "a second kur replaces the certificate"
        );
        assert_eq!(m.future_chain, vec![cert(2)]);
        assert!(m.switched());
        assert!(!m.cmp_staged(vec![cert(3)]), "not after the switch");
        let mut m = u();
        assert!(m.ignore());
        assert!(
            !m.cmp_staged(vec![cert(1)]),
            "an ignored member stays out of the update"
        );
    }
}
