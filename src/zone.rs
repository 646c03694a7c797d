//! The zone and its members (Z1, Z2, Z3): names, roles, and the records the store keeps.
//!
//! Every persisted record starts with a format version field `v`, so a later release can read
//! (or refuse with a clear message) what an earlier one wrote.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cert::CertificateDer;
use crate::clock::Timestamp;
use crate::csr::check_dns_name;

/// Format version of every record this release writes.
pub(crate) const RECORD_VERSION: u32 = 1;

/// Errors of the zone model: names, membership rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// A zone name that cannot be a CA subject.
    #[error("invalid zone name {name:?}: {reason}")]
    InvalidZoneName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A server FQDN that is not a DNS name.
    #[error("invalid server name {name:?}: {reason}")]
    InvalidFqdn {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A device name that is not usable.
    #[error("invalid device name {name:?}: {reason}")]
    InvalidDeviceName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A role string outside the four roles.
    #[error("unknown role {given:?}: choose primary, auth-satellite or content-satellite")]
    UnknownRole {
        /// What was given.
        given: String,
    },
    /// The store holds no zone.
    #[error("the store holds no zone: create one with init")]
    NoZone,
    /// A zone exists already.
    #[error("the store already holds zone {name:?}")]
    ZoneExists {
        /// Its name.
        name: String,
    },
    /// A member with this name exists already.
    #[error("{name} is already a member of the zone (as {role})")]
    DuplicateMember {
        /// The name.
        name: String,
        /// The role it has.
        role: String,
    },
    /// No server of that name.
    #[error("no server {fqdn} in the zone")]
    UnknownServer {
        /// The name.
        fqdn: String,
    },
    /// An Authentication Satellite needs a Primary Server as parent (Z1).
    #[error(
        "{fqdn}: an Authentication Satellite must name the Primary Server it attaches to (its parent)"
    )]
    MissingParent {
        /// The satellite.
        fqdn: String,
    },
    /// Z2: the first server of a zone holds the CA role, so it must be a Primary Server.
    #[error("{fqdn} is a {role}: the first server of a zone must be a Primary Server (Z2)")]
    FirstServerNotPrimary {
        /// The server.
        fqdn: String,
        /// Its role.
        role: String,
    },
    /// A member name that is neither a server nor a device of the zone.
    #[error("{name} is not a member of the zone")]
    UnknownMember {
        /// The name.
        name: String,
    },
    /// A parent was named for a Primary Server: only satellites attach to a Primary Server.
    #[error(
        "{fqdn} is a Primary Server, which takes no parent: only satellites attach to a \
         Primary Server (here {parent}); add it without a parent, or as a satellite"
    )]
    PrimaryTakesNoParent {
        /// The server being added.
        fqdn: String,
        /// The parent named.
        parent: String,
    },
    /// The parent is not a Primary Server.
    #[error("{parent} is not a Primary Server of the zone, so it cannot be the parent of {fqdn}")]
    BadParent {
        /// The satellite.
        fqdn: String,
        /// The parent named.
        parent: String,
    },
    /// A record the store holds could not be read.
    #[error("record {key} is unreadable: {reason}")]
    BadRecord {
        /// The store key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// A server's fully qualified domain name, stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fqdn(String);

impl Fqdn {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Fqdn {
    type Err = ZoneError;
    fn from_str(s: &str) -> Result<Self, ZoneError> {
        let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
        check_dns_name(&lower).map_err(|e| ZoneError::InvalidFqdn {
            name: s.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Fqdn(lower))
    }
}

impl TryFrom<String> for Fqdn {
    type Error = ZoneError;
    fn try_from(s: String) -> Result<Self, ZoneError> {
        s.parse()
    }
}

impl From<Fqdn> for String {
    fn from(f: Fqdn) -> String {
        f.0
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest common name X.509 allows (`ub-common-name`, RFC 5280 Appendix A.1).
pub const MAX_COMMON_NAME: usize = 64;

/// The subject CN a server's certificate carries by default: its FQDN when that fits in
/// [`MAX_COMMON_NAME`] characters, else its first label (a DNS label has at most 63).
///
/// The FQDN itself is always in the subjectAltName, which is what TLS clients match (RFC 6125
/// 6.4.4 ignores the CN when a dNSName is present), so a 73-character FQDN is a valid server
/// name: the CN is only a label for people. An explicit CN override must fit in 64 characters.
pub fn server_common_name(fqdn: &str) -> String {
    if fqdn.chars().count() <= MAX_COMMON_NAME {
        return fqdn.to_string();
    }
    fqdn.split('.').next().unwrap_or(fqdn).to_string()
}

/// Checks a zone name: it becomes the CA's CN, so 1 to 64 printable characters.
pub fn check_zone_name(name: &str) -> Result<(), ZoneError> {
    let bad = |reason: &str| {
        Err(ZoneError::InvalidZoneName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.trim().is_empty() {
        return bad("must not be empty");
    }
    if name.chars().count() > 64 {
        return bad("at most 64 characters (it becomes the CA's common name)");
    }
    if name.chars().any(char::is_control) {
        return bad("control characters are not allowed");
    }
    Ok(())
}

/// A managed device's name as the zone keeps it: checked by [`check_device_name`] and folded
/// to ASCII lower case, as server FQDNs are. `D1` and `d1` are one device: names become
/// directories under the fleet root, and two names that differ only in case would collide on
/// a case-insensitive file system.
pub fn device_name(name: &str) -> Result<String, ZoneError> {
    check_device_name(name)?;
    Ok(name.to_ascii_lowercase())
}

/// A member name as given by an administrator (a server FQDN or a device name), folded the way
/// the zone keys members, for looking a member up. Performs no validation.
pub(crate) fn member_lookup_name(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// Checks a managed device's name: 1 to 128 characters of letters, digits, `-`, `_`, `.`.
/// Case is not significant: see [`device_name`].
pub fn check_device_name(name: &str) -> Result<(), ZoneError> {
    // Starts with a letter or digit: names become directories under the fleet root, so "."
    // and ".." (and hidden names) must not be possible.
    let ok = name
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ZoneError::InvalidDeviceName {
            name: name.to_string(),
            reason:
                "use 1 to 128 letters, digits, '-', '_' or '.', starting with a letter or digit"
                    .into(),
        })
    }
}

/// A server's role in the zone (Z1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerRole {
    /// A Primary Server: may hold the CA role (Z2).
    Primary,
    /// An Authentication Satellite, attached to one Primary Server.
    AuthSatellite,
    /// A Content Satellite.
    ContentSatellite,
}

impl ServerRole {
    /// `primary`, `auth-satellite`, `content-satellite`.
    pub fn name(self) -> &'static str {
        match self {
            ServerRole::Primary => "primary",
            ServerRole::AuthSatellite => "auth-satellite",
            ServerRole::ContentSatellite => "content-satellite",
        }
    }

    /// Whether servers of this role get a zone server certificate (Primary Servers and
    /// Authentication Satellites do, CI2 and SR1).
    pub fn has_certificate(self) -> bool {
        matches!(self, ServerRole::Primary | ServerRole::AuthSatellite)
    }
}

impl fmt::Display for ServerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ServerRole {
    type Err = ZoneError;
    fn from_str(s: &str) -> Result<Self, ZoneError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "primary" => Ok(ServerRole::Primary),
            "auth-satellite" => Ok(ServerRole::AuthSatellite),
            "content-satellite" => Ok(ServerRole::ContentSatellite),
            _ => Err(ZoneError::UnknownRole {
                given: s.to_string(),
            }),
        }
    }
}

/// Who holds the zone's CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CaKind {
    /// An internal CA whose key is held by one Primary Server's agent (Z2).
    Internal {
        /// The certificate server: the Primary Server holding the CA role.
        certificate_server: Fqdn,
    },
    /// An external CA: the zone holds only its certificates (Z3).
    External,
}

/// The zone record: `zone` in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRecord {
    /// Record format version.
    pub v: u32,
    /// Zone name.
    pub name: String,
    /// Who holds the CA.
    pub ca: CaKind,
    /// The zone CA certificate (the trust anchor every member holds).
    pub ca_certificate: CertificateDer,
    /// For an external CA: subordinate CA certificates between the root and server
    /// certificates (may be empty).
    pub ca_intermediates: Vec<CertificateDer>,
    /// When the zone was created.
    pub created_at: Timestamp,
    /// Former zone CAs still trusted because certificates they issued may still be in use
    /// (B7).
    #[serde(default)]
    pub retired_cas: Vec<RetiredCa>,
}

/// A former zone CA kept in trust bundles until the last certificate it issued expires (B7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredCa {
    /// The CA certificate.
    pub certificate: CertificateDer,
    /// Trusted until then.
    pub keep_until: Timestamp,
}

impl ZoneRecord {
    /// Every anchor a member should trust at `now`: the zone CA, then retired CAs still
    /// needed (B7).
    pub fn trust_bundle(&self, now: Timestamp) -> Vec<CertificateDer> {
        let mut out = vec![self.ca_certificate.clone()];
        out.extend(
            self.retired_cas
                .iter()
                .filter(|r| r.keep_until > now)
                .map(|r| r.certificate.clone()),
        );
        out
    }
}

/// A server record: `server/<fqdn>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// Record format version.
    pub v: u32,
    /// The server's FQDN.
    pub fqdn: Fqdn,
    /// Its role.
    pub role: ServerRole,
    /// The Primary Server an Authentication Satellite is attached to.
    pub parent: Option<Fqdn>,
    /// Additional DNS names (put in the SAN when an operation includes them).
    pub dns_names: Vec<String>,
    /// The agent's version string.
    pub agent_version: String,
    /// The current certificate chain, leaf first (none for Content Satellites, or before an
    /// external-CA certificate is imported).
    #[serde(with = "crate::cert::record_chain")]
    pub certificate: Vec<CertificateDer>,
    /// When it joined.
    pub joined_at: Timestamp,
    /// External CA: a CSR its agent made outside any operation, waiting for `cert import`.
    #[serde(default)]
    pub csr: Option<crate::csr::CsrDer>,
}

/// A managed device record: `device/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Record format version.
    pub v: u32,
    /// Device name.
    pub name: String,
    /// The agent's version string.
    pub agent_version: String,
    /// When it joined.
    pub joined_at: Timestamp,
}

/// An issued serial number: `serial/<issuer key id>/<serial>`, created with an
/// "absent" precondition so the store refuses a repeat (S3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialRecord {
    /// Record format version.
    pub v: u32,
    /// Subject of the certificate that carries it.
    pub subject: String,
    /// When it was issued.
    pub issued_at: Timestamp,
}

/// Store keys, in one place.
pub(crate) mod keys {
    pub(crate) const ZONE: &str = "zone";
    /// MV1, BK2 (B5): an unfinished CA handover (old holders still to erase their key copy).
    pub(crate) const CA_HANDOVER: &str = "ca/handover";
    pub(crate) const SERVER_PREFIX: &str = "server/";
    pub(crate) const DEVICE_PREFIX: &str = "device/";
    /// N3: a member's registration token.
    pub(crate) const TOKEN_PREFIX: &str = "token/";
    /// D2: where a Primary Server's zone service listens.
    pub(crate) const ENDPOINT_PREFIX: &str = "endpoint/";
    pub(crate) fn endpoint(fqdn: &str) -> String {
        format!("{ENDPOINT_PREFIX}{fqdn}")
    }
    pub(crate) fn token(name: &str) -> String {
        format!("{TOKEN_PREFIX}{name}")
    }
    pub(crate) fn server(fqdn: &str) -> String {
        format!("{SERVER_PREFIX}{fqdn}")
    }
    pub(crate) fn device(name: &str) -> String {
        format!("{DEVICE_PREFIX}{name}")
    }
    pub(crate) fn serial(issuer_key_id: &str, serial_hex: &str) -> String {
        format!("serial/{issuer_key_id}/{serial_hex}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_normalises_and_refuses() {
        assert_eq!(
            "PS1.Zone.Example.".parse::<Fqdn>().unwrap().as_str(),
            "ps1.zone.example"
        );
        for bad in ["", "a b", "*.x.example", "x..example"] {
            assert!(bad.parse::<Fqdn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_parse() {
        assert_eq!(
            "auth-satellite".parse::<ServerRole>().unwrap(),
            ServerRole::AuthSatellite
        );
        let e = "satellite".parse::<ServerRole>().unwrap_err().to_string();
        assert!(e.contains("primary"), "{e}");
    }

    #[test]
    fn names_checked() {
        assert!(check_zone_name("").is_err());
        assert!(check_zone_name(&"x".repeat(65)).is_err());
        check_zone_name("Acme Zone").unwrap();
        check_device_name("dev-1").unwrap();
        assert!(check_device_name("dev 1").is_err());
        assert!(check_device_name("").is_err());
        assert!(check_device_name("..").is_err());
        assert!(check_device_name(".hidden").is_err());
        assert_eq!(device_name("Laptop-7").unwrap(), "laptop-7");
    }

    #[test]
    fn ip_literals_are_not_server_names() {
        // Issue 9 item 6: an IPv4 literal used to land in a dNSName SAN.
        for ip in ["1.2.3.4", "10.0.0.1.", "127.0.0.1"] {
            let e = ip.parse::<Fqdn>().unwrap_err().to_string();
            assert!(e.contains("IP address"), "{ip}: {e}");
        }
        for ok in ["ps1.example", "1.example", "host-1.2x", "localhost"] {
            ok.parse::<Fqdn>().unwrap();
        }
    }

    #[test]
    fn long_fqdns_get_a_common_name_within_the_x509_bound() {
        // Issue 9 item 6: a valid 73-character FQDN was accepted by `server add` and then
        // refused by the agent's CSR ("longer than 64 characters").
        let fqdn = format!("{}.{}.example", "a".repeat(40), "b".repeat(24));
        assert!(fqdn.len() > MAX_COMMON_NAME);
        assert_eq!(server_common_name(&fqdn), "a".repeat(40));
        assert_eq!(server_common_name("ps1.example"), "ps1.example");
        let sixty_four = format!("{}.example", "c".repeat(56));
        assert_eq!(sixty_four.len(), 64);
        assert_eq!(server_common_name(&sixty_four), sixty_four);
    }
}
