//! nameConstraints (RFC 5280 4.2.1.10, 6.1.3 (b), (c), 6.1.4 (g)) for the name forms a zone's
//! certificates carry: dNSName, directoryName and iPAddress.
//!
//! Each CA's constraints are checked on their own against every certificate below that CA in
//! the path, which is what RFC 5280's running intersection of permitted subtrees and union of
//! excluded subtrees amounts to. A constraint on any other form (rfc822Name, URI, otherName,
//! x400Address, ediPartyName, registeredID) is not processed: a certificate below that has a
//! name of that form is refused, as 4.2.1.10 allows ("the application MUST either process the
//! constraint or reject the certificate"); one without such a name is unaffected ("Restrictions
//! apply only when the specified name form is present").

use der::asn1::ObjectIdentifier;
use x509_cert::ext::pkix::NameConstraints;
use x509_cert::ext::pkix::name::GeneralName;

use crate::cert::Certificate;
use crate::cert::name::NameKey;

/// PKCS #9 emailAddress: an rfc822Name in the subject (RFC 5280 4.2.1.10, 4.1.2.6).
const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");
/// id-at-commonName.
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// A CA's nameConstraints, decoded and checked for form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Constraints {
    permitted: Vec<Subtree>,
    excluded: Vec<Subtree>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subtree {
    /// Lower case, without a trailing dot; a leading dot is kept (subdomains only).
    Dns(String),
    Directory(NameKey),
    /// Address and mask, 4 + 4 or 16 + 16 octets.
    Ip(Vec<u8>, Vec<u8>),
    /// A form that is not processed.
    Other(&'static str),
}

impl Subtree {
    fn form(&self) -> &'static str {
        match self {
            Subtree::Dns(_) => "dNSName",
            Subtree::Directory(_) => "directoryName",
            Subtree::Ip(..) => "iPAddress",
            Subtree::Other(form) => form,
        }
    }
}

/// Why [`Constraints::check`] refused.
pub(super) enum Refusal {
    /// A name breaks the constraints: which, and how.
    Name(String),
    /// The comparison budget ran out.
    Budget,
}

/// A name of a certificate that constraints apply to.
enum CertName {
    Dns(String),
    Directory(NameKey, String),
    Ip(Vec<u8>),
    Other(&'static str),
}

fn form_of(name: &GeneralName) -> &'static str {
    match name {
        GeneralName::OtherName(_) => "otherName",
        GeneralName::Rfc822Name(_) => "rfc822Name",
        GeneralName::DnsName(_) => "dNSName",
        GeneralName::DirectoryName(_) => "directoryName",
        GeneralName::EdiPartyName(_) => "ediPartyName",
        GeneralName::UniformResourceIdentifier(_) => "uniformResourceIdentifier",
        GeneralName::IpAddress(_) => "iPAddress",
        GeneralName::RegisteredId(_) => "registeredID",
    }
}

impl Constraints {
    /// Decodes the extension's subtrees. Refuses what RFC 5280 4.2.1.10 forbids: an empty
    /// extension, `minimum` other than 0 or any `maximum` ("MUST be zero", "MUST be absent"),
    /// and an iPAddress subtree that is not an address and a mask of the same family.
    pub(super) fn new(nc: &NameConstraints) -> Result<Self, String> {
        let convert =
            |subtrees: &Option<Vec<x509_cert::ext::pkix::constraints::name::GeneralSubtree>>| {
                subtrees
                .iter()
                .flatten()
                .map(|s| {
                    if s.minimum != 0 || s.maximum.is_some() {
                        return Err("a subtree with minimum or maximum (RFC 5280 4.2.1.10: \
                                    minimum MUST be zero, maximum MUST be absent)"
                            .to_string());
                    }
                    Ok(match &s.base {
                        GeneralName::DnsName(n) => Subtree::Dns(dns_form(n.as_str())),
                        GeneralName::DirectoryName(n) => Subtree::Directory(NameKey::of(n)),
                        GeneralName::IpAddress(o) => {
                            let b = o.as_bytes();
                            if b.len() != 8 && b.len() != 32 {
                                return Err(format!(
                                    "an iPAddress subtree of {} octets (8 or 32: an address and \
                                     its mask)",
                                    b.len()
                                ));
                            }
                            let (addr, mask) = b.split_at(b.len() / 2);
                            Subtree::Ip(addr.to_vec(), mask.to_vec())
                        }
                        other => Subtree::Other(form_of(other)),
                    })
                })
                .collect::<Result<Vec<_>, String>>()
            };
        let permitted = convert(&nc.permitted_subtrees)?;
        let excluded = convert(&nc.excluded_subtrees)?;
        if permitted.is_empty() && excluded.is_empty() {
            return Err("no permitted and no excluded subtrees (RFC 5280 4.2.1.10)".into());
        }
        Ok(Constraints {
            permitted,
            excluded,
        })
    }

    /// Checks the names of `cert`, a certificate below the constraining CA. `leaf` adds the
    /// subject's common names that look like host names when the certificate has no dNSName,
    /// as OpenSSL does, so a constrained CA cannot name a host through the CN alone.
    ///
    /// Each name costs one unit of `budget` per subtree (S7: bounded work, however many names
    /// and subtrees hostile certificates carry); [`Refusal::Budget`] when it runs out.
    pub(super) fn check(
        &self,
        cert: &Certificate,
        leaf: bool,
        budget: &mut usize,
    ) -> Result<(), Refusal> {
        let cost = self.permitted.len() + self.excluded.len();
        for name in names(cert, leaf) {
            *budget = budget.checked_sub(cost).ok_or(Refusal::Budget)?;
            self.check_name(&name).map_err(Refusal::Name)?;
        }
        Ok(())
    }

    fn check_name(&self, name: &CertName) -> Result<(), String> {
        let form = match name {
            CertName::Dns(_) => "dNSName",
            CertName::Directory(..) => "directoryName",
            CertName::Ip(_) => "iPAddress",
            CertName::Other(form) => form,
        };
        let shown = || match name {
            CertName::Dns(n) => format!("dNSName {n}"),
            CertName::Directory(_, n) => format!("directoryName \"{n}\""),
            CertName::Ip(ip) => format!("iPAddress {}", show_ip(ip)),
            CertName::Other(form) => form.to_string(),
        };
        let mut of_form = self
            .permitted
            .iter()
            .chain(&self.excluded)
            .filter(|s| s.form() == form)
            .peekable();
        if of_form.peek().is_none() {
            return Ok(());
        }
        if let CertName::Other(form) = name {
            return Err(format!(
                "it has an {form}, and the zone validator does not process {form} constraints"
            ));
        }
        if self.excluded.iter().any(|s| excluded_by(name, s)) {
            return Err(format!("its {} is in an excluded subtree", shown()));
        }
        let mut permitted = self
            .permitted
            .iter()
            .filter(|s| s.form() == form)
            .peekable();
        if permitted.peek().is_some() && !permitted.any(|s| within(name, s)) {
            return Err(format!("its {} is outside the permitted subtrees", shown()));
        }
        Ok(())
    }
}

/// The names constraints apply to: the subject (when not empty) and its emailAddress
/// attributes, every subjectAltName entry, and for a leaf without a dNSName its host-name-like
/// common names.
fn names(cert: &Certificate, leaf: bool) -> Vec<CertName> {
    let mut out = Vec::new();
    let subject = cert.subject_name();
    if !subject.is_empty() {
        out.push(CertName::Directory(NameKey::of(subject), cert.subject()));
    }
    if subject.iter().any(|atv| atv.oid == EMAIL_ADDRESS) {
        out.push(CertName::Other("rfc822Name"));
    }
    let san = cert
        .x509()
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::SubjectAltName>()
        .ok()
        .flatten()
        .map(|(_, san)| san.0)
        .unwrap_or_default();
    let has_dns = san.iter().any(|g| matches!(g, GeneralName::DnsName(_)));
    for g in san {
        out.push(match g {
            GeneralName::DnsName(n) => CertName::Dns(dns_form(n.as_str())),
            GeneralName::DirectoryName(n) => {
                let shown = n.to_string();
                CertName::Directory(NameKey::of(&n), shown)
            }
            GeneralName::IpAddress(o) => CertName::Ip(o.as_bytes().to_vec()),
            other => CertName::Other(form_of(&other)),
        });
    }
    if leaf && !has_dns {
        for atv in subject.iter().filter(|atv| atv.oid == COMMON_NAME) {
            if let Ok(ds) = x509_cert::ext::pkix::name::DirectoryString::try_from(&atv.value) {
                let cn = ds.value();
                if looks_like_host(&cn) {
                    out.push(CertName::Dns(dns_form(&cn)));
                }
            }
        }
    }
    out
}

/// OpenSSL's test for a CN that names a host: letters, digits, `-`, `_`, `.` and `*`, with a
/// dot inside.
fn looks_like_host(cn: &str) -> bool {
    let cn = cn.trim_end_matches('.');
    cn.contains('.')
        && !cn.starts_with('.')
        && cn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'))
}

/// DNS names compare without case and without a final dot.
fn dns_form(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// RFC 5280 4.2.1.10: a DNS name is within `base` when it is `base` with zero or more labels
/// added on the left; a base with a leading dot (`.example.com`, the common extension) admits
/// the subdomains only; an empty base admits every name.
fn dns_within(name: &str, base: &str) -> bool {
    if base.is_empty() {
        return true;
    }
    if base.starts_with('.') {
        return name.len() > base.len() && name.ends_with(base);
    }
    name == base
        || (name.len() > base.len()
            && name.ends_with(base)
            && name.as_bytes()[name.len() - base.len() - 1] == b'.')
}

fn within(name: &CertName, subtree: &Subtree) -> bool {
    match (name, subtree) {
        (CertName::Dns(n), Subtree::Dns(base)) => dns_within(n, base),
        (CertName::Directory(n, _), Subtree::Directory(base)) => n.starts_with(base),
        (CertName::Ip(ip), Subtree::Ip(addr, mask)) => {
            ip.len() == addr.len()
                && ip
                    .iter()
                    .zip(addr)
                    .zip(mask)
                    .all(|((i, a), m)| i & m == a & m)
        }
        _ => false,
    }
}

/// Within an excluded subtree, or, for a wildcard DNS name (`*.example.com`), able to match
/// a host the subtree excludes (`secret.example.com`): the wildcard is one label wide.
fn excluded_by(name: &CertName, subtree: &Subtree) -> bool {
    if within(name, subtree) {
        return true;
    }
    match (name, subtree) {
        (CertName::Dns(n), Subtree::Dns(base)) => n.strip_prefix("*.").is_some_and(|parent| {
            base.split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
        }),
        _ => false,
    }
}

fn show_ip(ip: &[u8]) -> String {
    match ip.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(ip).expect("4 octets")).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(ip).expect("16 octets")).to_string(),
        _ => format!("of {} octets", ip.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_subtrees() {
        assert!(dns_within("example.com", "example.com"));
        assert!(dns_within("www.example.com", "example.com"));
        assert!(dns_within("a.b.example.com", "example.com"));
        assert!(!dns_within("badexample.com", "example.com"));
        assert!(!dns_within("example.com.evil", "example.com"));
        assert!(!dns_within("com", "example.com"));
        assert!(dns_within("www.example.com", ".example.com"));
        assert!(!dns_within("example.com", ".example.com"));
        assert!(!dns_within("badexample.com", ".example.com"));
        assert!(dns_within("anything.test", ""));
        let wildcard = CertName::Dns("*.example.com".into());
        assert!(excluded_by(
            &wildcard,
            &Subtree::Dns("secret.example.com".into())
        ));
        assert!(excluded_by(&wildcard, &Subtree::Dns("example.com".into())));
        assert!(!excluded_by(
            &wildcard,
            &Subtree::Dns("a.secret.example.com".into())
        ));
        assert!(!excluded_by(
            &wildcard,
            &Subtree::Dns(".secret.example.com".into())
        ));
        assert!(!excluded_by(&wildcard, &Subtree::Dns("other.test".into())));
    }

    #[test]
    fn ip_subtrees_and_host_like_common_names() {
        let net = Subtree::Ip(vec![10, 1, 0, 0], vec![255, 255, 0, 0]);
        assert!(within(&CertName::Ip(vec![10, 1, 2, 3]), &net));
        assert!(!within(&CertName::Ip(vec![10, 2, 2, 3]), &net));
        assert!(!within(&CertName::Ip(vec![0; 16]), &net), "another family");
        assert!(looks_like_host("server.zone.example"));
        assert!(looks_like_host("*.zone.example"));
        assert!(!looks_like_host("Zone Root CA"));
        assert!(!looks_like_host("localhost"));
    }
}
