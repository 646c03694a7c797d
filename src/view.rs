//! What administrators see (V1, V2, V3): plain data, ready to print or serialise.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cert::{CertDetails, CertStatus, Certificate};
use crate::clock::Timestamp;
use crate::ops::update::ServerCertStatus;
use crate::zone::ServerRole;

/// `status == "applied"`: compares a view enum with its name as JSON writes it, so tests and
/// scripts ported from the JSON read naturally.
macro_rules! eq_name {
    ($($t:ty => $f:ident),* $(,)?) => {$(
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.$f() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.$f() == *other
            }
        }
    )*};
}
pub(crate) use eq_name;

eq_name!(
    CaType => name,
    OperationKind => name,
    OperationState => name,
    UpdateStatus => name,
    ReplicationStatus => name,
    CertificateStatus => text,
    ServerStatus => text,
    ServerOption => text,
);

/// The header of the expiry warnings, in the manual's words (V3).
pub const WARNING_HEADER: &str = "The following certificates are about to expire or have \
expired. You should update the certificates as soon as possible to avoid a loss of \
communication between devices and services.";

/// The default expiry-warning window (V3): 90 days.
pub const DEFAULT_WARNING_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

/// Whether the zone's CA is internal (its key held on a Primary Server) or external (Z2, Z3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaType {
    /// The zone holds the CA key, on the certificate server (Z2).
    Internal,
    /// An external CA signs the server certificates (Z3).
    External,
}

impl CaType {
    /// `internal` or `external`.
    pub fn name(self) -> &'static str {
        match self {
            CaType::Internal => "internal",
            CaType::External => "external",
        }
    }
}

impl fmt::Display for CaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The zone CA (V1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CaView {
    /// `internal` or `external`.
    pub kind: CaType,
    /// The Primary Server holding the CA role (internal CA only).
    pub certificate_server: Option<String>,
    /// Former holders of the CA role that have not confirmed erasing their copy of the CA key
    /// (a move or restore interrupted, or the old holder unreachable; MV1, BK2, B5). Running
    /// the move or restore again erases them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unerased_copies: Vec<String>,
    /// Subject, issuer, validity, key, fingerprints, status.
    #[serde(flatten)]
    pub details: CertDetails,
}

/// Which staged operation (O1): `remint_ca`, `change_ca_internal`, `change_ca_external`,
/// `server_remint` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OperationKind {
    /// Remint CA (RC1).
    RemintCa,
    /// Change CA to a new internal CA (CI1).
    ChangeCaInternal,
    /// Change CA to an external CA (CE1).
    ChangeCaExternal,
    /// Server Remint (SR1).
    ServerRemint,
}

impl OperationKind {
    /// The JSON name: `remint_ca`, `change_ca_internal`, `change_ca_external`,
    /// `server_remint`.
    pub fn name(self) -> &'static str {
        match self {
            OperationKind::RemintCa => "remint_ca",
            OperationKind::ChangeCaInternal => "change_ca_internal",
            OperationKind::ChangeCaExternal => "change_ca_external",
            OperationKind::ServerRemint => "server_remint",
        }
    }

    /// The manual's name: `Remint CA`, `Change CA (to internal)`, `Change CA (to external)`,
    /// `Server Remint`.
    pub fn title(self) -> &'static str {
        match self {
            OperationKind::RemintCa => "Remint CA",
            OperationKind::ChangeCaInternal => "Change CA (to internal)",
            OperationKind::ChangeCaExternal => "Change CA (to external)",
            OperationKind::ServerRemint => "Server Remint",
        }
    }
}

impl fmt::Display for OperationKind {
    /// The manual's name ([`OperationKind::title`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// Where a staged operation is in its life (O3-O10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OperationState {
    /// Replicating the update's content to the content servers (O3).
    Replicating,
    /// Assigned to members, waiting for activation (O4).
    Assigned,
    /// Activated (O8): members switch at their next contact; stranded ones need recovery.
    Activated,
    /// Cancelled (O7).
    Cancelled,
    /// Baselined (O10): finished.
    Baselined,
}

impl OperationState {
    /// `replicating`, `assigned`, `activated`, `cancelled`, `baselined`.
    pub fn name(self) -> &'static str {
        match self {
            OperationState::Replicating => "replicating",
            OperationState::Assigned => "assigned",
            OperationState::Activated => "activated",
            OperationState::Cancelled => "cancelled",
            OperationState::Baselined => "baselined",
        }
    }

    /// Whether the operation still runs (O1): until cancelled or baselined.
    pub fn is_running(self) -> bool {
        !matches!(self, OperationState::Cancelled | OperationState::Baselined)
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A member's status in the system update (O5, O8, B1), the same in every view (`op show`,
/// `plan`, the server and device lists). JSON uses [`UpdateStatus::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UpdateStatus {
    /// No operation runs, or the running one does not concern the member.
    None,
    /// The update is not assigned yet (replication runs, O3). Written `not assigned`, as the
    /// manual and zonectl's output always have.
    #[serde(rename = "not assigned")]
    NotAssigned,
    /// Assigned, not yet fetched.
    Assigned,
    /// Fetched; staging not finished.
    Downloading,
    /// Staged: the member will switch at activation.
    Applied,
    /// Failed (the view's `reason` says why); can be redeployed.
    Failed,
    /// Taken out of the update.
    Ignored,
    /// After activation: switched to the new material (A2).
    Activated,
    /// After activation: missed the update and cannot reach the servers until recovered (O8).
    Stranded,
    /// After activation: missed the update, but validates the servers through the bridge
    /// until the old CA expires (B1).
    Bridged,
    /// After activation: recovered with the recovery bundle (O8).
    Recovered,
}

impl UpdateStatus {
    /// Every status.
    pub const ALL: [UpdateStatus; 11] = [
        UpdateStatus::None,
        UpdateStatus::NotAssigned,
        UpdateStatus::Assigned,
        UpdateStatus::Downloading,
        UpdateStatus::Applied,
        UpdateStatus::Failed,
        UpdateStatus::Ignored,
        UpdateStatus::Activated,
        UpdateStatus::Stranded,
        UpdateStatus::Bridged,
        UpdateStatus::Recovered,
    ];

    /// `none`, `not assigned`, `assigned`, `downloading`, `applied`, `failed`, `ignored`,
    /// `activated`, `stranded`, `bridged`, `recovered`.
    pub fn name(self) -> &'static str {
        match self {
            UpdateStatus::None => "none",
            UpdateStatus::NotAssigned => "not assigned",
            UpdateStatus::Assigned => "assigned",
            UpdateStatus::Downloading => "downloading",
            UpdateStatus::Applied => "applied",
            UpdateStatus::Failed => "failed",
            UpdateStatus::Ignored => "ignored",
            UpdateStatus::Activated => "activated",
            UpdateStatus::Stranded => "stranded",
            UpdateStatus::Bridged => "bridged",
            UpdateStatus::Recovered => "recovered",
        }
    }

    /// Whether the member needs nothing more from the administrator: it applied, switched or
    /// was recovered.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            UpdateStatus::Applied | UpdateStatus::Activated | UpdateStatus::Recovered
        )
    }
}

impl fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for UpdateStatus {
    type Err = UnknownStatus;

    /// A status by its name (`not_assigned` is accepted for `not assigned`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = if s == "not_assigned" {
            "not assigned"
        } else {
            s
        };
        UpdateStatus::ALL
            .into_iter()
            .find(|u| u.name() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// A name that is no [`UpdateStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an update status: none, not assigned, assigned, downloading, applied, failed, \
     ignored, activated, stranded, bridged or recovered"
)]
pub struct UnknownStatus(String);

/// Whether a content server has the update's content (O3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationStatus {
    /// Not yet.
    Pending,
    /// It has.
    Replicated,
}

impl ReplicationStatus {
    /// `pending` or `replicated`.
    pub fn name(self) -> &'static str {
        match self {
            ReplicationStatus::Pending => "pending",
            ReplicationStatus::Replicated => "replicated",
        }
    }
}

impl fmt::Display for ReplicationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SR4: a server's certificate status during a remint, in the manual's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CertificateStatus {
    /// No new certificate yet.
    #[serde(rename = "pending")]
    Pending,
    /// Internal CA: "new certificate created".
    #[serde(rename = "new certificate created")]
    Created,
    /// Internal CA: "creating certificate failed".
    #[serde(rename = "creating certificate failed")]
    Failed,
    /// External CA: "CSR generated", waiting for the certificate.
    #[serde(rename = "CSR generated")]
    CsrGenerated,
    /// External CA: "CSR generation failed".
    #[serde(rename = "CSR generation failed")]
    CsrFailed,
    /// External CA: "new certificate uploaded".
    #[serde(rename = "new certificate uploaded")]
    Uploaded,
}

impl CertificateStatus {
    /// The manual's words (`pending`, `new certificate created`, ...).
    pub fn text(self) -> &'static str {
        match self {
            CertificateStatus::Pending => "pending",
            CertificateStatus::Created => "new certificate created",
            CertificateStatus::Failed => "creating certificate failed",
            CertificateStatus::CsrGenerated => "CSR generated",
            CertificateStatus::CsrFailed => "CSR generation failed",
            CertificateStatus::Uploaded => "new certificate uploaded",
        }
    }
}

impl fmt::Display for CertificateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl From<Option<ServerCertStatus>> for CertificateStatus {
    fn from(s: Option<ServerCertStatus>) -> Self {
        match s {
            None => CertificateStatus::Pending,
            Some(ServerCertStatus::Created) => CertificateStatus::Created,
            Some(ServerCertStatus::Failed) => CertificateStatus::Failed,
            Some(ServerCertStatus::CsrGenerated) => CertificateStatus::CsrGenerated,
            Some(ServerCertStatus::CsrFailed) => CertificateStatus::CsrFailed,
            Some(ServerCertStatus::Uploaded) => CertificateStatus::Uploaded,
        }
    }
}

/// A server's certificate status in the server list (V2): its current certificate's
/// validity, `none` without one, or during a remint SR4's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerStatus {
    /// The current certificate is valid.
    Active,
    /// The current certificate has expired.
    Expired,
    /// The current certificate is not valid yet.
    NotYetValid,
    /// No certificate: a Content Satellite, or a server waiting for an imported certificate.
    None,
    /// During a remint: SR4's certificate status, in the manual's words.
    #[serde(untagged)]
    Remint(CertificateStatus),
}

impl ServerStatus {
    /// `active`, `expired`, `not_yet_valid`, `none`, or SR4's words.
    pub fn text(self) -> &'static str {
        match self {
            ServerStatus::Active => "active",
            ServerStatus::Expired => "expired",
            ServerStatus::NotYetValid => "not_yet_valid",
            ServerStatus::None => "none",
            ServerStatus::Remint(c) => c.text(),
        }
    }
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// What can be had for a server besides its current certificate (V2's options column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerOption {
    /// A future certificate is staged for it (during an operation, until activation).
    #[serde(rename = "future certificate")]
    FutureCertificate,
    /// A CSR for it can be downloaded (SR5).
    #[serde(rename = "CSR available")]
    CsrAvailable,
}

impl ServerOption {
    /// `future certificate`, `CSR available`.
    pub fn text(self) -> &'static str {
        match self {
            ServerOption::FutureCertificate => "future certificate",
            ServerOption::CsrAvailable => "CSR available",
        }
    }
}

impl fmt::Display for ServerOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// One server (V2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerView {
    /// FQDN.
    pub fqdn: String,
    /// `primary`, `auth-satellite`, `content-satellite`.
    pub role: ServerRole,
    /// Parent Primary Server (Authentication Satellites).
    pub parent: Option<String>,
    /// Whether it holds the CA role.
    pub certificate_server: bool,
    /// "Issued to": the certificate's CN.
    pub issued_to: Option<String>,
    /// Certificate subject.
    pub subject: Option<String>,
    /// "Issued by".
    pub issuer: Option<String>,
    /// Valid from.
    pub not_before: Option<Timestamp>,
    /// Expires on.
    pub not_after: Option<Timestamp>,
    /// MD5 fingerprint.
    pub md5: Option<String>,
    /// SHA-1 fingerprint.
    pub sha1: Option<String>,
    /// SHA-256 fingerprint.
    pub sha256: Option<String>,
    /// `active`, `expired`, `not_yet_valid` or `none` (no certificate: a Content Satellite, or
    /// a server waiting for an imported certificate); during a remint the SR4 status.
    pub status: ServerStatus,
    /// Options (V2): `future certificate`, `CSR available`.
    pub options: Vec<ServerOption>,
    /// Status of the system update for this server (`none` when no operation runs).
    pub update_status: UpdateStatus,
    /// Agent version.
    pub agent_version: String,
    /// Additional DNS names.
    pub dns_names: Vec<String>,
}

impl ServerView {
    /// Fills the certificate columns from the server's current leaf certificate.
    pub(crate) fn certificate_columns(&mut self, leaf: &Certificate, now: Timestamp) {
        let fp = leaf.fingerprints();
        self.issued_to = leaf.common_name();
        self.subject = Some(leaf.subject());
        self.issuer = Some(leaf.issuer());
        self.not_before = Some(leaf.not_before());
        self.not_after = Some(leaf.not_after());
        self.md5 = Some(fp.md5.to_string());
        self.sha1 = Some(fp.sha1.to_string());
        self.sha256 = Some(fp.sha256.to_string());
        self.status = match leaf.status_at(now) {
            CertStatus::Valid => ServerStatus::Active,
            CertStatus::Expired => ServerStatus::Expired,
            CertStatus::NotYetValid => ServerStatus::NotYetValid,
        };
    }
}

/// One managed device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeviceView {
    /// Name.
    pub name: String,
    /// Status of the system update for this device (`none` when no operation runs).
    pub update_status: UpdateStatus,
    /// Agent version.
    pub agent_version: String,
}

/// Which devices [`ZoneService::device_list`](crate::service::ZoneService::device_list)
/// returns: a filter and one page of the natural order ([`natural_cmp`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceQuery {
    /// Only devices whose update status is this (`none` when no operation runs, else the
    /// running operation's member status such as `assigned`, `applied`, `failed`).
    pub status: Option<UpdateStatus>,
    /// Only devices after this name in natural order: the last name of the previous page.
    /// The name need not be a device's.
    pub after: Option<String>,
    /// At most this many devices.
    pub limit: Option<usize>,
}

impl DeviceQuery {
    /// Every device.
    pub fn all() -> Self {
        DeviceQuery::default()
    }

    /// Only devices with this update status.
    pub fn with_status(mut self, status: UpdateStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only devices after this name in natural order (the last name of the previous page).
    pub fn with_after(mut self, after: impl Into<String>) -> Self {
        self.after = Some(after.into());
        self
    }

    /// At most this many devices.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// One page of devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DevicePage {
    /// The devices of the page, in natural order.
    pub devices: Vec<DeviceView>,
    /// Whether more devices match after the last one of this page.
    pub more: bool,
}

/// Natural order of member names, as people sort them: runs of ASCII digits compare as
/// numbers (`laptop-2` before `laptop-10`), everything else byte by byte. Names equal as
/// numbers (`dev-01`, `dev-1`) fall back to byte order, so the order is total and agrees with
/// equality.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (dx, ex) = digit_run(x, i);
            let (dy, ey) = digit_run(y, j);
            // Without leading zeros, the longer number is the larger; equal lengths compare
            // digit by digit.
            let ord = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(dy));
            if ord != Ordering::Equal {
                return ord;
            }
            (i, j) = (ex, ey);
        } else {
            match x[i].cmp(&y[j]) {
                Ordering::Equal => (i, j) = (i + 1, j + 1),
                ord => return ord,
            }
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| x.cmp(y))
}

/// The run of ASCII digits of `s` from `k`, without leading zeros, and where it ends.
fn digit_run(s: &[u8], k: usize) -> (&[u8], usize) {
    let end = s[k..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(s.len(), |n| k + n);
    let digits = &s[k..end];
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    (&digits[zeros..], end)
}

/// What kind of certificate a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningSubject {
    /// The zone CA certificate.
    Ca,
    /// A server certificate.
    Server,
}

/// One expiry warning (V3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Warning {
    /// Server FQDN, or the CA's subject.
    pub name: String,
    /// CA or server.
    pub kind: WarningSubject,
    /// When it expires (or expired).
    pub not_after: Timestamp,
    /// Whether it has expired already.
    pub expired: bool,
    /// The manual's sentence: "`<name>` server certificate has expired", or when it will.
    pub message: String,
}

impl Warning {
    /// A warning for `cert` at `now`, if it expires within `window` or has expired.
    pub(crate) fn check(
        name: &str,
        kind: WarningSubject,
        cert: &Certificate,
        now: Timestamp,
        window: Duration,
    ) -> Option<Warning> {
        let not_after = cert.not_after();
        let what = match kind {
            WarningSubject::Ca => "CA",
            WarningSubject::Server => "server",
        };
        if now > not_after {
            Some(Warning {
                name: name.to_string(),
                kind,
                not_after,
                expired: true,
                message: format!("{name} {what} certificate has expired"),
            })
        } else if not_after <= now.plus(window) {
            Some(Warning {
                name: name.to_string(),
                kind,
                not_after,
                expired: false,
                message: format!("{name} {what} certificate expires on {not_after}"),
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod natural_tests {
    use super::natural_cmp;
    use std::cmp::Ordering;

    #[test]
    fn numbers_sort_as_numbers_and_the_order_is_total() {
        let mut names = vec![
            "laptop-10",
            "laptop-2",
            "laptop-1",
            "dev-01",
            "dev-1",
            "a",
            "laptop-",
            "b2",
            "b10a",
            "b10",
            "x99999999999999999999999",
            "x100000000000000000000000",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "a",
                "b2",
                "b10",
                "b10a",
                "dev-01",
                "dev-1",
                "laptop-",
                "laptop-1",
                "laptop-2",
                "laptop-10",
                "x99999999999999999999999",
                "x100000000000000000000000",
            ]
        );
        assert_eq!(natural_cmp("dev-1", "dev-1"), Ordering::Equal);
        assert_ne!(natural_cmp("dev-01", "dev-1"), Ordering::Equal);
    }
}
