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
