//! Issuing: the zone CA's self-signed certificate (Z2, CI1, RC1), server certificates from a
//! [`VerifiedCsr`] (S4), and serial numbers (S3).
//!
//! Every certificate is built from an explicit profile: nothing in a CSR except its public
//! key reaches the certificate, so no request can make a CA certificate (S4).

use std::fmt;

use der::asn1::OctetString;
use der::{Encode, asn1::Ia5String};
use spki::SubjectPublicKeyInfoRef;
use x509_cert::builder::CertificateBuilder;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

use crate::cert::{CertError, Certificate, ext_oid};
use crate::clock::{TimeError, Timestamp};
use crate::csr::{CsrError, CsrSubject, VerifiedCsr, check_dns_name};
use crate::key::{KeyAlgorithm, KeyError, Signer, build_signed};
use crate::lint::CertRole;

/// id-kp-serverAuth and id-kp-clientAuth (RFC 5280 4.2.1.12).
const KP_SERVER_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const KP_CLIENT_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// Errors of issuing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Validity outside 1 to 10 years (CI1, RC1).
    #[error("validity of {years} years refused: choose 1 to 10 years")]
    ValidityYears {
        /// What was asked for.
        years: u32,
    },
    /// The issuing CA has expired.
    #[error("the CA certificate expired at {not_after}: it cannot issue at {now}")]
    CaExpired {
        /// The CA's notAfter.
        not_after: Timestamp,
        /// The issuing time.
        now: Timestamp,
    },
    /// The issuing CA is not yet valid.
    #[error("the CA certificate is not valid before {not_before}: it cannot issue at {now}")]
    CaNotYetValid {
        /// The CA's notBefore.
        not_before: Timestamp,
        /// The issuing time.
        now: Timestamp,
    },
    /// The issuer certificate is not a CA certificate.
    #[error("{subject} is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotACa {
        /// The would-be issuer.
        subject: String,
    },
    /// The signer's key is not the issuer certificate's key.
    #[error("the signing key does not belong to the CA certificate {subject}")]
    KeyMismatch {
        /// The issuer certificate's subject.
        subject: String,
    },
    /// A subject or DNS name is not acceptable.
    #[error(transparent)]
    Name(#[from] CsrError),
    /// A time that cannot go into a certificate.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The issuer certificate could not be read.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// What was built fails the pre-flight lint (B4): the crate never stores or stages a
    /// certificate its own lint flags.
    #[error(transparent)]
    Lint(#[from] crate::lint::LintError),
    /// Encoding the certificate failed.
    #[error("cannot build the certificate: {reason}")]
    Build {
        /// Why.
        reason: String,
    },
}

fn build_err(e: impl fmt::Display) -> CaError {
    CaError::Build {
        reason: e.to_string(),
    }
}

/// Builds the TBSCertificate of `profile`, has `signer` sign it, and parses the result back
/// (a self-check: what we issue must be a certificate we read).
fn sign_certificate(
    profile: Profile,
    serial: &Serial,
    validity: Validity,
    subject_key: spki::SubjectPublicKeyInfoOwned,
    signer: &dyn Signer,
) -> Result<Certificate, CaError> {
    let builder = CertificateBuilder::new(profile, serial.to_x509()?, validity, subject_key)
        .map_err(build_err)?;
    let cert = build_signed(builder, signer)?;
    Ok(Certificate::from_der(&cert.to_der().map_err(build_err)?)?)
}

/// B4: what the crate makes passes its own lint without a single finding, notices and
/// warnings included (no administrator can acknowledge a risk the crate chose), before anyone
/// stores or stages it.
fn lint_made(
    cert: &Certificate,
    role: CertRole,
    issuer: Option<&Certificate>,
    fqdn: Option<&str>,
) -> Result<(), CaError> {
    let findings = crate::lint::lint_certificate(
        cert,
        crate::lint::Context {
            role,
            issuer,
            fqdn,
            external: false,
        },
    );
    if findings.is_empty() {
        Ok(())
    } else {
        Err(crate::lint::LintError { findings }.into())
    }
}

/// A certificate validity in whole years, 1 to 10 (CI1, RC1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ValidityYears(u8);

impl ValidityYears {
    /// The number of years.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl Default for ValidityYears {
    /// Ten years, the manuals' maximum and a CA's usual lifetime.
    fn default() -> Self {
        ValidityYears(10)
    }
}

impl TryFrom<u32> for ValidityYears {
    type Error = CaError;
    fn try_from(years: u32) -> Result<Self, CaError> {
        match u8::try_from(years) {
            Ok(y @ 1..=10) => Ok(ValidityYears(y)),
            _ => Err(CaError::ValidityYears { years }),
        }
    }
}

impl From<ValidityYears> for u32 {
    fn from(v: ValidityYears) -> u32 {
        v.get()
    }
}

/// A certificate serial number (S3): 16 bytes from the OS CSPRNG, top bit cleared so the
/// INTEGER is positive and the next bit set so it is always exactly 16 octets (126 random bits).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial([u8; 16]);

impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut b = [0u8; 16];
        match base16ct::mixed::decode(text.as_bytes(), &mut b) {
            Ok(out) if out.len() == 16 => Ok(Serial(b)),
            _ => Err(serde::de::Error::custom(
                "a serial number is 32 hexadecimal digits",
            )),
        }
    }
}

impl Serial {
    /// A fresh random serial.
    pub fn random() -> Result<Self, KeyError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| KeyError::Generation {
            reason: e.to_string(),
        })?;
        b[0] = (b[0] & 0x7f) | 0x40;
        Ok(Serial(b))
    }
    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// Lower-case hex, no separators (used in store keys).
    pub fn hex(&self) -> String {
        base16ct::lower::encode_string(&self.0)
    }
    fn to_x509(&self) -> Result<SerialNumber, CaError> {
        SerialNumber::new(&self.0).map_err(build_err)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.hex())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::cert::colon_hex(&self.0))
    }
}

/// Subject key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2, method 1).
fn key_id(spki: SubjectPublicKeyInfoRef<'_>) -> Result<OctetString, CaError> {
    Ok(SubjectKeyIdentifier::try_from(spki).map_err(build_err)?.0)
}

fn ext<T: Encode>(
    oid: der::asn1::ObjectIdentifier,
    critical: bool,
    v: &T,
) -> Result<Extension, CaError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(v.to_der().map_err(build_err)?).map_err(build_err)?,
    })
}

/// What the builder needs beyond subject and key: the extensions, computed up front so that
/// errors keep their own type (x509-cert's `BuilderProfile` can only return its own error).
struct Profile {
    subject: Name,
    issuer: Option<Name>,
    extensions: Vec<Extension>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, subject: &Name) -> Name {
        self.issuer.clone().unwrap_or_else(|| subject.clone())
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

/// The extensions of the two profiles the zone issues.
enum ProfileKind {
    /// A CA certificate (the self-signed zone CA; later also cross-certificates).
    Ca,
    /// A server certificate: SAN names, and whether keyEncipherment suits the key.
    Server { san: Vec<String>, rsa: bool },
    /// A member's client credential (N3): clientAuth only, no SAN (the subject CN names the
    /// member).
    Client { rsa: bool },
}

fn extensions(
    kind: &ProfileKind,
    subject_key: &spki::SubjectPublicKeyInfoOwned,
    issuer_key: &spki::SubjectPublicKeyInfoOwned,
) -> Result<Vec<Extension>, CaError> {
    use der::referenced::OwnedToRef;
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(key_id(issuer_key.owned_to_ref())?),
        ..Default::default()
    };
    let mut out = vec![
        ext(
            ext_oid::SUBJECT_KEY_ID,
            false,
            &SubjectKeyIdentifier(key_id(subject_key.owned_to_ref())?),
        )?,
        ext(ext_oid::AUTHORITY_KEY_ID, false, &aki)?,
    ];
    match kind {
        ProfileKind::Ca => {
            // RFC 5280 4.2.1.9: critical in CA certificates. No pathLenConstraint, so that
            // bridge cross-certificates (B1) can sit below a zone CA.
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: None,
            };
            out.push(ext(ext_oid::BASIC_CONSTRAINTS, true, &bc)?);
            let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
            out.push(ext(ext_oid::KEY_USAGE, true, &ku)?);
        }
        ProfileKind::Server { san, rsa } => {
            // S4: CA:false, serverAuth + clientAuth, SANs.
            let bc = BasicConstraints {
                ca: false,
                path_len_constraint: None,
            };
            out.push(ext(ext_oid::BASIC_CONSTRAINTS, true, &bc)?);
            let ku = if *rsa {
                KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)
            } else {
                KeyUsage(KeyUsages::DigitalSignature.into())
            };
            out.push(ext(ext_oid::KEY_USAGE, true, &ku)?);
            let eku = ExtendedKeyUsage(vec![KP_SERVER_AUTH, KP_CLIENT_AUTH]);
            out.push(ext(ext_oid::EXT_KEY_USAGE, false, &eku)?);
            let mut names = Vec::with_capacity(san.len());
            for n in san {
                names.push(GeneralName::DnsName(Ia5String::new(n).map_err(build_err)?));
            }
            out.push(ext(
                ext_oid::SUBJECT_ALT_NAME,
                false,
                &SubjectAltName(names),
            )?);
        }
        ProfileKind::Client { rsa } => {
            let bc = BasicConstraints {
                ca: false,
                path_len_constraint: None,
            };
            out.push(ext(ext_oid::BASIC_CONSTRAINTS, true, &bc)?);
            let ku = if *rsa {
                KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)
            } else {
                KeyUsage(KeyUsages::DigitalSignature.into())
            };
            out.push(ext(ext_oid::KEY_USAGE, true, &ku)?);
            let eku = ExtendedKeyUsage(vec![KP_CLIENT_AUTH]);
            out.push(ext(ext_oid::EXT_KEY_USAGE, false, &eku)?);
        }
    }
    Ok(out)
}

/// Parameters of a new zone CA (CI1, RC1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaParams {
    /// Subject common name (default: the zone name).
    pub common_name: String,
    /// Validity in years.
    pub validity: ValidityYears,
}

/// Creates a self-signed zone CA certificate for `signer`'s key, valid from `now`.
pub fn self_signed_ca(
    signer: &dyn Signer,
    params: &CaParams,
    serial: &Serial,
    now: Timestamp,
) -> Result<Certificate, CaError> {
    let subject = CsrSubject::cn(params.common_name.clone()).to_name()?;
    let not_after = now.plus_years(params.validity.get());
    let validity = Validity::new(now.to_x509()?, not_after.to_x509()?);
    let key = signer.public_key_info();
    let extensions = extensions(&ProfileKind::Ca, &key, &key)?;
    let profile = Profile {
        subject,
        issuer: None,
        extensions,
    };
    let cert = sign_certificate(profile, serial, validity, signer.public_key_info(), signer)?;
    lint_made(&cert, CertRole::Ca, Some(&cert), None)?;
    Ok(cert)
}

/// What every issuance checks of its issuer: a CA certificate, whose key `signer` holds, valid
/// at `now` (an expired CA issues nothing; one not yet valid neither).
fn check_issuer(issuer: &Certificate, signer: &dyn Signer, now: Timestamp) -> Result<(), CaError> {
    if !issuer.is_ca() {
        return Err(CaError::NotACa {
            subject: issuer.subject(),
        });
    }
    if &signer.public_key_info() != issuer.public_key() {
        return Err(CaError::KeyMismatch {
            subject: issuer.subject(),
        });
    }
    if now > issuer.not_after() {
        return Err(CaError::CaExpired {
            not_after: issuer.not_after(),
            now,
        });
    }
    if now < issuer.not_before() {
        return Err(CaError::CaNotYetValid {
            not_before: issuer.not_before(),
            now,
        });
    }
    Ok(())
}

/// Certifies `subject_ca`'s key and name under `issuer` (a bridge, B1): a device that trusts
/// only `issuer` can validate this certificate and so learn the new CA from a source it
/// already trusts (the recovery bundle's proof, O6). Valid from `now` until the earlier of the
/// two CAs' expiries.
pub fn cross_certify(
    issuer: &Certificate,
    signer: &dyn Signer,
    subject_ca: &Certificate,
    serial: &Serial,
    now: Timestamp,
) -> Result<Certificate, CaError> {
    check_issuer(issuer, signer, now)?;
    if !subject_ca.is_ca() {
        return Err(CaError::NotACa {
            subject: subject_ca.subject(),
        });
    }
    let not_after = subject_ca.not_after().min(issuer.not_after());
    let validity = Validity::new(now.to_x509()?, not_after.to_x509()?);
    let extensions = extensions(
        &ProfileKind::Ca,
        subject_ca.public_key(),
        issuer.public_key(),
    )?;
    let profile = Profile {
        subject: subject_ca.subject_name().clone(),
        issuer: Some(issuer.subject_name().clone()),
        extensions,
    };
    let cert = sign_certificate(
        profile,
        serial,
        validity,
        subject_ca.public_key().clone(),
        signer,
    )?;
    lint_made(&cert, CertRole::Ca, Some(issuer), None)?;
    Ok(cert)
}

/// How a server certificate is named (SR2).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerProfile {
    /// The server's FQDN: always in the SAN, and the CN unless overridden.
    pub fqdn: String,
    /// A CN override (SR2 allows it for a single server without satellites).
    pub common_name: Option<String>,
    /// Additional DNS names, put in the SAN when `include_dns` is set.
    pub dns_names: Vec<String>,
    /// Whether the additional DNS names go into the SAN (CI1, RC1, SR2).
    pub include_dns: bool,
    /// The latest notAfter wanted (it is never later than the issuer's notAfter anyway).
    pub not_after: Option<Timestamp>,
}

impl ServerProfile {
    /// The subject CN of this server's certificate: the override, or else
    /// [`crate::zone::server_common_name`] of the FQDN.
    pub fn subject_common_name(&self) -> String {
        self.common_name
            .clone()
            .unwrap_or_else(|| crate::zone::server_common_name(&self.fqdn))
    }

    /// The SAN DNS names this profile puts into a certificate: the FQDN first, then the
    /// additional names when included, without duplicates.
    pub fn san(&self) -> Vec<String> {
        let mut out = vec![self.fqdn.clone()];
        if self.include_dns {
            for n in &self.dns_names {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(n)) {
                    out.push(n.clone());
                }
            }
        }
        out
    }
}

/// Issues a server certificate for the key proven by `csr`, signed by `issuer`'s key.
///
/// Only the CSR's public key is used; names come from `profile` (S4). The certificate is valid
/// from `now` until `profile.not_after` or the issuer's notAfter, whichever is earlier.
pub fn issue_server_certificate(
    issuer: &Certificate,
    signer: &dyn Signer,
    csr: &VerifiedCsr,
    profile: &ServerProfile,
    serial: &Serial,
    now: Timestamp,
) -> Result<Certificate, CaError> {
    check_issuer(issuer, signer, now)?;
    check_dns_name(&profile.fqdn)?;
    let san = profile.san();
    for n in &san {
        check_dns_name(n)?;
    }
    let fqdn = profile.fqdn.clone();
    let subject = CsrSubject::cn(profile.subject_common_name()).to_name()?;
    let not_after = profile
        .not_after
        .map_or(issuer.not_after(), |t| t.min(issuer.not_after()));
    let validity = Validity::new(now.to_x509()?, not_after.to_x509()?);
    let rsa = matches!(csr.key_algorithm(), KeyAlgorithm::Rsa { .. });
    let kind = ProfileKind::Server { san, rsa };
    let extensions = extensions(&kind, csr.public_key(), issuer.public_key())?;
    let profile = Profile {
        subject,
        issuer: Some(issuer.subject_name().clone()),
        extensions,
    };
    let cert = sign_certificate(profile, serial, validity, csr.public_key().clone(), signer)?;
    lint_made(&cert, CertRole::ServerLeaf, Some(issuer), Some(&fqdn))?;
    Ok(cert)
}

/// Issues a member's client credential (N3) for the key proven by `csr`: subject CN
/// `member`, clientAuth, valid from `now` until `not_after` or the issuer's notAfter, whichever
/// is earlier. Only the CSR's public key is used.
pub fn issue_client_certificate(
    issuer: &Certificate,
    signer: &dyn Signer,
    csr: &VerifiedCsr,
    member: &str,
    serial: &Serial,
    now: Timestamp,
    not_after: Timestamp,
) -> Result<Certificate, CaError> {
    check_issuer(issuer, signer, now)?;
    let subject = CsrSubject::cn(member).to_name()?;
    let validity = Validity::new(now.to_x509()?, not_after.min(issuer.not_after()).to_x509()?);
    let rsa = matches!(csr.key_algorithm(), KeyAlgorithm::Rsa { .. });
    let extensions = extensions(
        &ProfileKind::Client { rsa },
        csr.public_key(),
        issuer.public_key(),
    )?;
    let profile = Profile {
        subject,
        issuer: Some(issuer.subject_name().clone()),
        extensions,
    };
    sign_certificate(profile, serial, validity, csr.public_key().clone(), signer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::csr::{CsrRequest, build_csr};
    use crate::key::{KeySpec, PrivateKey};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ca() -> (PrivateKey, Certificate) {
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let params = CaParams {
            common_name: "zone.example".into(),
            validity: 5.try_into().unwrap(),
        };
        let cert = self_signed_ca(
            &key,
            &params,
            &Serial::random().unwrap(),
            t("2027-01-01T00:00:00Z"),
        )
        .unwrap();
        (key, cert)
    }

    #[test]
    fn validity_years_bounds() {
        assert!(ValidityYears::try_from(0).is_err());
        assert!(ValidityYears::try_from(11).is_err());
        assert_eq!(ValidityYears::try_from(10).unwrap().get(), 10);
        let msg = ValidityYears::try_from(11).unwrap_err().to_string();
        assert!(msg.contains("1 to 10"), "{msg}");
    }

    #[test]
    fn serial_is_positive_16_octets() {
        for _ in 0..100 {
            let s = Serial::random().unwrap();
            assert!(s.as_bytes()[0] & 0x80 == 0 && s.as_bytes()[0] & 0x40 != 0);
        }
        assert_ne!(Serial::random().unwrap(), Serial::random().unwrap());
    }

    #[test]
    fn ca_certificate_profile() {
        let (_, cert) = ca();
        assert_eq!(cert.subject(), "CN=zone.example");
        assert!(cert.is_self_signed());
        assert_eq!(cert.basic_constraints().unwrap(), Some((true, None)));
        assert!(cert.key_usage_allows(KeyUsages::KeyCertSign).unwrap());
        assert_eq!(cert.not_after(), t("2032-01-01T00:00:00Z"));
        assert_eq!(
            cert.subject_key_id().unwrap(),
            cert.authority_key_id().unwrap()
        );
        assert_eq!(cert.serial().len(), 16);
    }

    #[test]
    fn server_certificate_ignores_csr_names_and_never_is_ca() {
        let (ca_key, ca_cert) = ca();
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let req = CsrRequest {
            subject: crate::csr::CsrSubject::cn("evil.example"),
            dns_names: vec!["evil.example".into()],
        };
        let csr = VerifiedCsr::from_der(build_csr(&req, &key).unwrap().as_bytes()).unwrap();
        let profile = ServerProfile {
            fqdn: "ps1.zone.example".into(),
            dns_names: vec!["alias.zone.example".into()],
            include_dns: true,
            ..Default::default()
        };
        let now = t("2027-06-01T00:00:00Z");
        let cert = issue_server_certificate(
            &ca_cert,
            &ca_key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        assert_eq!(cert.subject(), "CN=ps1.zone.example");
        assert_eq!(
            cert.dns_names().unwrap(),
            ["ps1.zone.example", "alias.zone.example"]
        );
        assert_eq!(cert.basic_constraints().unwrap(), Some((false, None)));
        assert_eq!(cert.not_after(), ca_cert.not_after());
        assert_eq!(
            cert.authority_key_id().unwrap(),
            ca_cert.subject_key_id().unwrap()
        );
        assert_eq!(cert.public_key(), &key.public_key_info());
        crate::key::verify_signature(
            ca_cert.public_key(),
            cert.signature_algorithm(),
            cert.tbs_der(),
            cert.signature().unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn expired_ca_and_wrong_key_refused() {
        let (ca_key, ca_cert) = ca();
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let csr = VerifiedCsr::from_der(
            build_csr(&CsrRequest::default_for("a.example"), &key)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let profile = ServerProfile {
            fqdn: "a.example".into(),
            ..Default::default()
        };
        let late = t("2033-01-01T00:00:00Z");
        let e = issue_server_certificate(
            &ca_cert,
            &ca_key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            late,
        )
        .unwrap_err();
        assert!(matches!(e, CaError::CaExpired { .. }), "{e}");
        let now = t("2028-01-01T00:00:00Z");
        let e = issue_server_certificate(
            &ca_cert,
            &key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            now,
        )
        .unwrap_err();
        assert!(matches!(e, CaError::KeyMismatch { .. }), "{e}");
    }
}
