//! What administrators see (V1, V2, V3): plain data, ready to print or serialise.

use std::cmp::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::cert::{CertDetails, CertStatus, Certificate};
use crate::clock::Timestamp;

/// The header of the expiry warnings, in the manual's words (V3).
pub const WARNING_HEADER: &str = "The following certificates are about to expire or have \
expired. You should update the certificates as soon as possible to avoid a loss of \
communication between devices and services.";

/// The default expiry-warning window (V3): 90 days.
pub const DEFAULT_WARNING_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

/// The zone CA (V1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaView {
    /// `internal` or `external`.
    pub kind: &'static str,
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

/// One server (V2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerView {
    /// FQDN.
    pub fqdn: String,
    /// `primary`, `auth-satellite`, `content-satellite`.
    pub role: String,
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
    pub status: String,
    /// Options (V2): `future certificate`, `CSR available`.
    pub options: Vec<String>,
    /// Status of the system update for this server (`none` when no operation runs).
    pub update_status: String,
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
            CertStatus::Valid => "active",
            CertStatus::Expired => "expired",
            CertStatus::NotYetValid => "not_yet_valid",
        }
        .to_string();
    }
}

/// One managed device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    /// Name.
    pub name: String,
    /// Status of the system update for this device (`none` when no operation runs).
    pub update_status: String,
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
    pub status: Option<String>,
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
}

/// One page of devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
