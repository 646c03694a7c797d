//! Keys: [`KeySpec`] (S2), [`PrivateKey`] with PKCS#8 in and out, the [`Signer`] trait through
//! which every certificate and CSR is signed (so a CA key can live in an HSM later), and
//! [`verify_signature`], the one place signatures are checked.
//!
//! P-256 is the default key type. RSA is offered for interoperability; the `rsa` crate carries
//! advisory RUSTSEC-2023-0071 (timing side channel in private-key operations, no fixed
//! release), which is one more reason to keep P-256.
//!
//! # The `rsa` feature
//!
//! RSA needs the cargo feature `rsa`, on by default. A build without it (`default-features =
//! false`) contains no `rsa` crate and handles P-256 (and verifies P-384) only. The types stay
//! the same in both builds ([`KeySpec`] keeps its RSA variants, so records naming them still
//! read), and every place RSA would be needed refuses it with [`KeyError::RsaNotEnabled`],
//! which names the feature:
//! - parsing a key type (`"rsa2048".parse::<KeySpec>()`) and [`PrivateKey::generate`];
//! - [`PrivateKey::from_pkcs8`] of an RSA key (a backup of an RSA CA, an imported key);
//! - [`KeyAlgorithm::of_spki`] of an RSA public key, and so [`verify_signature`] by one: an
//!   imported certificate, chain or CSR with an RSA key or an RSA signature is refused.

use std::fmt;
use std::str::FromStr;

use der::asn1::{BitString, ObjectIdentifier};
use der::{Decode, Encode};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use signature::hazmat::PrehashVerifier;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use zeroize::Zeroizing;

/// OIDs this module needs (RFC 5480, RFC 5758, RFC 4055, RFC 8017).
pub(crate) mod oid {
    use der::asn1::ObjectIdentifier as Oid;
    pub(crate) const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub(crate) const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub(crate) const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub(crate) const ECDSA_SHA1: Oid = Oid::new_unwrap("1.2.840.10045.4.1");
    pub(crate) const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub(crate) const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub(crate) const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
    pub(crate) const RSA_MD5: Oid = Oid::new_unwrap("1.2.840.113549.1.1.4");
    pub(crate) const RSA_SHA1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
    pub(crate) const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub(crate) const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub(crate) const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
}

/// The key types a zone may generate (S2): ECDSA P-256 (the default) and RSA 2048/3072/4096.
///
/// The RSA variants exist in every build; without the `rsa` feature they are refused when
/// parsed from text and when a key is generated (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum KeySpec {
    /// ECDSA on NIST P-256 with SHA-256: the default.
    #[default]
    P256,
    /// RSA 2048 with PKCS#1 v1.5 and SHA-256.
    Rsa2048,
    /// RSA 3072 with PKCS#1 v1.5 and SHA-256.
    Rsa3072,
    /// RSA 4096 with PKCS#1 v1.5 and SHA-256.
    Rsa4096,
}

impl KeySpec {
    /// Every allowed spec, in the order help texts list them.
    pub const ALL: [KeySpec; 4] = [
        KeySpec::P256,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
    ];

    /// The name used on command lines and in records: `p256`, `rsa2048`, ...
    pub fn name(self) -> &'static str {
        match self {
            KeySpec::P256 => "p256",
            KeySpec::Rsa2048 => "rsa2048",
            KeySpec::Rsa3072 => "rsa3072",
            KeySpec::Rsa4096 => "rsa4096",
        }
    }

    /// Whether this build can make keys of this spec: P-256 always, RSA with the `rsa`
    /// feature.
    pub fn is_available(self) -> bool {
        cfg!(feature = "rsa") || self == KeySpec::P256
    }

    /// The algorithm and size of keys of this spec.
    pub fn algorithm(self) -> KeyAlgorithm {
        match self {
            KeySpec::P256 => KeyAlgorithm::EcdsaP256,
            KeySpec::Rsa2048 => KeyAlgorithm::Rsa { bits: 2048 },
            KeySpec::Rsa3072 => KeyAlgorithm::Rsa { bits: 3072 },
            KeySpec::Rsa4096 => KeyAlgorithm::Rsa { bits: 4096 },
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl KeySpec {
    /// The spec named `s` (any case), whether or not this build can make it.
    fn by_name(s: &str) -> Result<Self, KeyError> {
        let lower = s.trim().to_ascii_lowercase();
        KeySpec::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or_else(|| KeyError::UnsupportedSpec {
                given: s.to_string(),
            })
    }
}

/// A key type asked for (a command line, a request): one this build can make, or an error that
/// says why not ([`KeyError::RsaNotEnabled`] for RSA without the `rsa` feature).
impl FromStr for KeySpec {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let spec = KeySpec::by_name(s)?;
        if !spec.is_available() {
            return Err(KeyError::RsaNotEnabled { what: "keys" });
        }
        Ok(spec)
    }
}

impl From<KeySpec> for String {
    fn from(k: KeySpec) -> String {
        k.name().to_string()
    }
}

/// Records (serde): any spec name reads, so a record naming RSA stays readable in a build
/// without the `rsa` feature; using it is refused where a key is made.
impl TryFrom<String> for KeySpec {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        KeySpec::by_name(&s)
    }
}

/// What kind of public key a certificate or CSR carries (V1: key algorithm and length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA P-256 (256 bits).
    EcdsaP256,
    /// ECDSA P-384 (384 bits): seen in external chains, never generated.
    EcdsaP384,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus length in bits.
        bits: u32,
    },
}

impl KeyAlgorithm {
    /// `ecdsa-p256`, `ecdsa-p384` or `rsa` (the `key_algorithm` field of `zonectl ca show`).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa { .. } => "rsa",
        }
    }

    /// Key length in bits.
    pub fn bits(self) -> u32 {
        match self {
            KeyAlgorithm::EcdsaP256 => 256,
            KeyAlgorithm::EcdsaP384 => 384,
            KeyAlgorithm::Rsa { bits } => bits,
        }
    }

    /// Reads the algorithm and size from a SubjectPublicKeyInfo.
    pub fn of_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, KeyError> {
        let alg = spki.algorithm.oid;
        if alg == oid::EC_PUBLIC_KEY {
            let curve: ObjectIdentifier = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok())
                .ok_or(KeyError::UnsupportedPublicKey {
                    what: "EC key without a named curve".into(),
                })?;
            if curve == oid::SECP256R1 {
                Ok(KeyAlgorithm::EcdsaP256)
            } else if curve == oid::SECP384R1 {
                Ok(KeyAlgorithm::EcdsaP384)
            } else {
                Err(KeyError::UnsupportedPublicKey {
                    what: format!("EC curve {curve}"),
                })
            }
        } else if alg == oid::RSA_ENCRYPTION {
            #[cfg(feature = "rsa")]
            {
                let key = rsa_public_key(spki)?;
                let bits = rsa::traits::PublicKeyParts::n(&key).bits();
                Ok(KeyAlgorithm::Rsa { bits })
            }
            #[cfg(not(feature = "rsa"))]
            Err(KeyError::RsaNotEnabled {
                what: "public keys (in certificates, chains and CSRs)",
            })
        } else {
            Err(KeyError::UnsupportedPublicKey {
                what: format!("algorithm {alg}"),
            })
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name(), self.bits())
    }
}

/// Errors of key handling and signature checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key type outside S2's list.
    #[error("unsupported key type {given:?}: choose one of {}", spec_choices())]
    UnsupportedSpec {
        /// What was asked for.
        given: String,
    },
    /// An RSA key below 2048 bits (S2).
    #[error("RSA key of {bits} bits refused: at least 2048 bits are required (S2)")]
    RsaTooSmall {
        /// The modulus length found.
        bits: u32,
    },
    /// RSA is needed and this build was made without the `rsa` feature.
    #[error(
        "RSA {what} are not supported: this zonepki was built without its `rsa` feature \
         (RSA is optional because of advisory RUSTSEC-2023-0071); use P-256, or a zonepki \
         built with the `rsa` feature"
    )]
    RsaNotEnabled {
        /// What needed RSA (`keys`, `private keys`, `public keys ...`).
        what: &'static str,
    },
    /// A public key of a kind the zone does not use.
    #[error(
        "unsupported public key: {what} (supported: {})",
        SUPPORTED_PUBLIC_KEYS
    )]
    UnsupportedPublicKey {
        /// What was found.
        what: String,
    },
    /// A private key that is not PKCS#8 of a supported type.
    #[error(
        "cannot read private key: {reason} (expected unencrypted PKCS#8, PEM or DER, of a {} key)",
        SUPPORTED_PRIVATE_KEYS
    )]
    BadPrivateKey {
        /// Why (never any key material).
        reason: String,
    },
    /// Generating a key failed (entropy source or RSA prime search).
    #[error("key generation failed: {reason}")]
    Generation {
        /// Why.
        reason: String,
    },
    /// The signer failed to produce a signature.
    #[error("signing failed: {reason}")]
    Signing {
        /// Why.
        reason: String,
    },
    /// The key's holder (the certificate server, D2) could not be reached: nothing was signed,
    /// and the same request succeeds once it answers again.
    #[error(
        "the CA key's holder {holder} cannot be reached: {reason}; nothing was signed, try again \
         once it is back"
    )]
    SignerUnreachable {
        /// The member holding the key.
        holder: String,
        /// Why.
        reason: String,
    },
}

/// The key types [`KeySpec`]'s parse error offers.
fn spec_choices() -> String {
    KeySpec::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .map(|k| match k == KeySpec::default() {
            true => format!("{k} (default)"),
            false => k.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(feature = "rsa")]
const SUPPORTED_PUBLIC_KEYS: &str = "ECDSA P-256/P-384, RSA >= 2048 bits";
#[cfg(not(feature = "rsa"))]
const SUPPORTED_PUBLIC_KEYS: &str = "ECDSA P-256/P-384; RSA needs the `rsa` feature";
#[cfg(feature = "rsa")]
const SUPPORTED_PRIVATE_KEYS: &str = "P-256 or RSA";
#[cfg(not(feature = "rsa"))]
const SUPPORTED_PRIVATE_KEYS: &str = "P-256";

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// SHA-1 or MD5 signatures are refused (S7).
    #[error("signature algorithm {oid} uses a broken hash (SHA-1 or MD5) and is refused")]
    WeakHash {
        /// The signature algorithm.
        oid: ObjectIdentifier,
    },
    /// An algorithm outside ECDSA-SHA2 / RSA PKCS#1 v1.5-SHA2.
    #[error("unsupported signature algorithm {oid}")]
    UnsupportedAlgorithm {
        /// The signature algorithm.
        oid: ObjectIdentifier,
    },
    /// The signature algorithm does not fit the key (e.g. ECDSA with an RSA key).
    #[error("signature algorithm {sig_alg} does not match the signer's {key} key")]
    AlgorithmMismatch {
        /// The signature algorithm.
        sig_alg: ObjectIdentifier,
        /// The key's algorithm.
        key: String,
    },
    /// The parameters field of the algorithm identifier is not what the RFCs require.
    #[error("malformed parameters in signature algorithm {oid}")]
    BadParameters {
        /// The signature algorithm.
        oid: ObjectIdentifier,
    },
    /// The public key could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signature does not verify.
    #[error("signature does not verify")]
    Invalid,
}

/// Anything that can sign certificates and CSRs: a [`PrivateKey`] in memory, or an HSM, or an
/// agent on another machine (x509-cert's `Builder::finalize` then `assemble` split).
pub trait Signer {
    /// The signature algorithm this signer produces (goes into the certificate).
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned;
    /// The signer's public key.
    fn public_key_info(&self) -> SubjectPublicKeyInfoOwned;
    /// Signs `message`; the result is in X.509 form (DER `Ecdsa-Sig-Value` for ECDSA).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
}

// Boxed: a P-256 signing key is 112 bytes inline, and an agent holds up to five
// `Option<PrivateKey>`s (100,000 device agents in one process under loopback).
enum Inner {
    P256(Box<p256::ecdsa::SigningKey>),
    #[cfg(feature = "rsa")]
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>, u32),
}

/// A private key the zone generated or imported. Zeroized on drop; `Debug` shows no secret.
pub struct PrivateKey(Inner);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm())
            .field("key", &"[secret key elided]")
            .finish()
    }
}

/// The operating system's CSPRNG as a `rand_core` RNG (for RSA's prime search).
#[cfg(feature = "rsa")]
pub(crate) fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

impl PrivateKey {
    /// Generates a fresh key of `spec` from the operating system's CSPRNG.
    pub fn generate(spec: KeySpec) -> Result<Self, KeyError> {
        match spec {
            KeySpec::P256 => {
                use p256::elliptic_curve::Generate;
                let key = p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng)
                    .map_err(|e| KeyError::Generation {
                        reason: e.to_string(),
                    })?;
                Ok(PrivateKey(Inner::P256(Box::new(key))))
            }
            #[cfg(not(feature = "rsa"))]
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                Err(KeyError::RsaNotEnabled { what: "keys" })
            }
            #[cfg(feature = "rsa")]
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let bits = spec.algorithm().bits();
                let key = rsa::RsaPrivateKey::new(&mut rng(), bits as usize).map_err(|e| {
                    KeyError::Generation {
                        reason: e.to_string(),
                    }
                })?;
                Ok(PrivateKey(Inner::Rsa(
                    Box::new(rsa::pkcs1v15::SigningKey::new(key)),
                    bits,
                )))
            }
        }
    }

    /// The key's algorithm and size.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match &self.0 {
            Inner::P256(_) => KeyAlgorithm::EcdsaP256,
            #[cfg(feature = "rsa")]
            Inner::Rsa(_, bits) => KeyAlgorithm::Rsa { bits: *bits },
        }
    }

    /// Reads an unencrypted PKCS#8 key, PEM (`BEGIN PRIVATE KEY`) or DER, decided by content.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::BadPrivateKey {
                reason: "the input is empty".into(),
            });
        }
        let der: Zeroizing<Vec<u8>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let text = std::str::from_utf8(bytes).map_err(|_| KeyError::BadPrivateKey {
                reason: "PEM that is not UTF-8".into(),
            })?;
            let (label, doc) = pkcs8::SecretDocument::from_pem(text.trim()).map_err(|e| {
                KeyError::BadPrivateKey {
                    reason: format!("bad PEM: {e}"),
                }
            })?;
            if label != "PRIVATE KEY" {
                return Err(KeyError::BadPrivateKey {
                    reason: format!("PEM label {label:?}, expected \"PRIVATE KEY\""),
                });
            }
            Zeroizing::new(doc.as_bytes().to_vec())
        } else {
            Zeroizing::new(bytes.to_vec())
        };
        let info =
            pkcs8::PrivateKeyInfoRef::from_der(&der).map_err(|e| KeyError::BadPrivateKey {
                reason: format!("not PKCS#8: {e}"),
            })?;
        let alg = info.algorithm.oid;
        if alg == oid::EC_PUBLIC_KEY {
            let key = p256::ecdsa::SigningKey::from_pkcs8_der(&der).map_err(|e| {
                KeyError::BadPrivateKey {
                    reason: format!("not a P-256 key: {e}"),
                }
            })?;
            Ok(PrivateKey(Inner::P256(Box::new(key))))
        } else if alg == oid::RSA_ENCRYPTION {
            #[cfg(feature = "rsa")]
            {
                let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).map_err(|e| {
                    KeyError::BadPrivateKey {
                        reason: format!("bad RSA key: {e}"),
                    }
                })?;
                let bits = rsa::traits::PublicKeyParts::n(&key).bits();
                if bits < 2048 {
                    return Err(KeyError::RsaTooSmall { bits });
                }
                Ok(PrivateKey(Inner::Rsa(
                    Box::new(rsa::pkcs1v15::SigningKey::new(key)),
                    bits,
                )))
            }
            #[cfg(not(feature = "rsa"))]
            Err(KeyError::RsaNotEnabled {
                what: "private keys",
            })
        } else {
            Err(KeyError::BadPrivateKey {
                reason: format!("unsupported key algorithm {alg}"),
            })
        }
    }

    /// PKCS#8 DER (a secret: zeroized when dropped).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = match &self.0 {
            Inner::P256(k) => k.to_pkcs8_der(),
            #[cfg(feature = "rsa")]
            Inner::Rsa(k, _) => k.to_pkcs8_der(),
        }
        .expect("encoding a valid in-memory key as PKCS#8 cannot fail");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    /// PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----` (a secret: zeroized when dropped).
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let der = self.to_pkcs8_der();
        Zeroizing::new(
            pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, &der)
                .expect("PEM encoding of a small DER blob cannot fail"),
        )
    }

    /// The public half as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.public_key_info().to_der().expect("an SPKI encodes")
    }
}

/// The signature algorithm a zone key of `alg` signs with: ecdsa-with-SHA256 (RFC 5758 3.2,
/// parameters absent) or sha256WithRSAEncryption (RFC 4055 5, parameters NULL). P-384 keys
/// are only ever verified, never used to sign (`None`).
pub fn signature_algorithm_for(alg: KeyAlgorithm) -> Option<AlgorithmIdentifierOwned> {
    match alg {
        KeyAlgorithm::EcdsaP256 => Some(AlgorithmIdentifierOwned {
            oid: oid::ECDSA_SHA256,
            parameters: None,
        }),
        KeyAlgorithm::Rsa { .. } => Some(AlgorithmIdentifierOwned {
            oid: oid::RSA_SHA256,
            parameters: Some(der::asn1::Null.into()),
        }),
        KeyAlgorithm::EcdsaP384 => None,
    }
}

impl Signer for PrivateKey {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        signature_algorithm_for(self.algorithm())
            .expect("a PrivateKey is P-256 or RSA, both of which sign")
    }

    fn public_key_info(&self) -> SubjectPublicKeyInfoOwned {
        let doc = match &self.0 {
            Inner::P256(k) => k.verifying_key().to_public_key_der(),
            #[cfg(feature = "rsa")]
            Inner::Rsa(k, _) => signature::Keypair::verifying_key(k.as_ref()).to_public_key_der(),
        }
        .expect("encoding a valid public key cannot fail");
        SubjectPublicKeyInfoOwned::from_der(doc.as_bytes())
            .expect("an SPKI we just encoded decodes")
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.0 {
            Inner::P256(k) => {
                let sig: p256::ecdsa::DerSignature = signature::Signer::try_sign(&**k, message)
                    .map_err(|e| KeyError::Signing {
                        reason: e.to_string(),
                    })?;
                Ok(sig.to_bytes().to_vec())
            }
            #[cfg(feature = "rsa")]
            Inner::Rsa(k, _) => {
                use signature::SignatureEncoding;
                let sig = signature::Signer::try_sign(k.as_ref(), message).map_err(|e| {
                    KeyError::Signing {
                        reason: e.to_string(),
                    }
                })?;
                Ok(sig.to_vec())
            }
        }
    }
}

#[cfg(feature = "rsa")]
fn rsa_public_key(spki: &SubjectPublicKeyInfoOwned) -> Result<rsa::RsaPublicKey, KeyError> {
    let bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or(KeyError::UnsupportedPublicKey {
            what: "RSA key bit string with unused bits".into(),
        })?;
    use rsa::pkcs1::DecodeRsaPublicKey;
    rsa::RsaPublicKey::from_pkcs1_der(bytes).map_err(|e| KeyError::UnsupportedPublicKey {
        what: format!("malformed RSA key: {e}"),
    })
}

/// Checks `signature` over `message` by the key in `spki` under the algorithm `alg`.
///
/// Accepted (S7): ECDSA with SHA-256/384/512 on P-256 and P-384 (parameters absent, RFC 5758
/// 3.2), RSA PKCS#1 v1.5 with SHA-256/384/512 (parameters NULL or absent, RFC 4055 5) and keys of
/// at least 2048 bits. SHA-1 and MD5 are refused outright. Without the `rsa` feature an RSA
/// key is refused with [`KeyError::RsaNotEnabled`] (inside [`SignatureError::Key`]).
pub fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let sig_oid = alg.oid;
    if [oid::ECDSA_SHA1, oid::RSA_SHA1, oid::RSA_MD5].contains(&sig_oid) {
        return Err(SignatureError::WeakHash { oid: sig_oid });
    }
    let key_alg = KeyAlgorithm::of_spki(spki)?;
    let ecdsa_hash = [
        (oid::ECDSA_SHA256, Hash::Sha256),
        (oid::ECDSA_SHA384, Hash::Sha384),
        (oid::ECDSA_SHA512, Hash::Sha512),
    ]
    .into_iter()
    .find(|(o, _)| *o == sig_oid)
    .map(|(_, h)| h);
    let rsa_hash = [
        (oid::RSA_SHA256, Hash::Sha256),
        (oid::RSA_SHA384, Hash::Sha384),
        (oid::RSA_SHA512, Hash::Sha512),
    ]
    .into_iter()
    .find(|(o, _)| *o == sig_oid)
    .map(|(_, h)| h);
    let mismatch = || SignatureError::AlgorithmMismatch {
        sig_alg: sig_oid,
        key: key_alg.to_string(),
    };
    if let Some(hash) = ecdsa_hash {
        if alg.parameters.is_some() {
            return Err(SignatureError::BadParameters { oid: sig_oid });
        }
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or(SignatureError::Invalid)?;
        let digest = hash.digest(message);
        match key_alg {
            KeyAlgorithm::EcdsaP256 => {
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| {
                    KeyError::UnsupportedPublicKey {
                        what: "invalid P-256 point".into(),
                    }
                })?;
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| SignatureError::Invalid)?;
                vk.verify_prehash(&digest, &sig)
                    .map_err(|_| SignatureError::Invalid)
            }
            KeyAlgorithm::EcdsaP384 => {
                let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| {
                    KeyError::UnsupportedPublicKey {
                        what: "invalid P-384 point".into(),
                    }
                })?;
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|_| SignatureError::Invalid)?;
                vk.verify_prehash(&digest, &sig)
                    .map_err(|_| SignatureError::Invalid)
            }
            KeyAlgorithm::Rsa { .. } => Err(mismatch()),
        }
    } else if let Some(hash) = rsa_hash {
        match &alg.parameters {
            None => {}
            Some(p) if der::Tagged::tag(p) == der::Tag::Null && p.value().is_empty() => {}
            Some(_) => return Err(SignatureError::BadParameters { oid: sig_oid }),
        }
        let KeyAlgorithm::Rsa { bits } = key_alg else {
            return Err(mismatch());
        };
        if bits < 2048 {
            return Err(KeyError::RsaTooSmall { bits }.into());
        }
        verify_rsa(spki, hash, message, signature)
    } else {
        Err(SignatureError::UnsupportedAlgorithm { oid: sig_oid })
    }
}

/// RSA PKCS#1 v1.5 verification, once the algorithm and key size are checked.
#[cfg(feature = "rsa")]
fn verify_rsa(
    spki: &SubjectPublicKeyInfoOwned,
    hash: Hash,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let key = rsa_public_key(spki)?;
    let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| SignatureError::Invalid)?;
    let result = match hash {
        Hash::Sha256 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
            .verify_prehash(&hash.digest(message), &sig),
        Hash::Sha384 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key)
            .verify_prehash(&hash.digest(message), &sig),
        Hash::Sha512 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key)
            .verify_prehash(&hash.digest(message), &sig),
    };
    result.map_err(|_| SignatureError::Invalid)
}

/// Without the `rsa` feature no RSA key gets this far ([`KeyAlgorithm::of_spki`] refuses it);
/// refuse all the same rather than rely on that.
#[cfg(not(feature = "rsa"))]
fn verify_rsa(
    _spki: &SubjectPublicKeyInfoOwned,
    _hash: Hash,
    _message: &[u8],
    _signature: &[u8],
) -> Result<(), SignatureError> {
    Err(KeyError::RsaNotEnabled { what: "signatures" }.into())
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, m: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(m).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(m).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(m).to_vec(),
        }
    }
}

/// Turns raw signature bytes into the BIT STRING a certificate or CSR carries.
pub(crate) fn signature_bits(sig: &[u8]) -> BitString {
    BitString::from_bytes(sig).expect("a byte-aligned bit string of signature size is valid")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_spec_parses_allowed_and_refuses_rest() {
        assert_eq!("p256".parse::<KeySpec>().unwrap(), KeySpec::P256);
        let err = "rsa1024".parse::<KeySpec>().unwrap_err().to_string();
        assert!(
            err.contains("rsa1024") && err.contains("p256 (default)"),
            "{err}"
        );
        #[cfg(feature = "rsa")]
        {
            assert_eq!("RSA3072".parse::<KeySpec>().unwrap(), KeySpec::Rsa3072);
            assert_eq!(
                err,
                "unsupported key type \"rsa1024\": choose one of p256 (default), rsa2048, \
                 rsa3072, rsa4096"
            );
        }
        assert!("".parse::<KeySpec>().is_err());
        assert_eq!(KeySpec::default(), KeySpec::P256);
    }

    #[test]
    fn p256_sign_verify_and_pkcs8_round_trip() {
        let k = PrivateKey::generate(KeySpec::P256).unwrap();
        let sig = k.sign(b"hello").unwrap();
        let spki = k.public_key_info();
        verify_signature(&spki, &k.signature_algorithm(), b"hello", &sig).unwrap();
        assert_eq!(
            verify_signature(&spki, &k.signature_algorithm(), b"hellO", &sig),
            Err(SignatureError::Invalid)
        );
        let pem = k.to_pkcs8_pem();
        let k2 = PrivateKey::from_pkcs8(pem.as_bytes()).unwrap();
        assert_eq!(k2.public_key_der(), k.public_key_der());
        let k3 = PrivateKey::from_pkcs8(&k.to_pkcs8_der()).unwrap();
        assert_eq!(k3.public_key_der(), k.public_key_der());
        assert_eq!(
            KeyAlgorithm::of_spki(&spki).unwrap(),
            KeyAlgorithm::EcdsaP256
        );
    }

    #[test]
    #[cfg(feature = "rsa")]
    fn rsa_sign_verify() {
        let k = PrivateKey::generate(KeySpec::Rsa2048).unwrap();
        assert_eq!(k.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });
        let sig = k.sign(b"m").unwrap();
        verify_signature(&k.public_key_info(), &k.signature_algorithm(), b"m", &sig).unwrap();
        let k2 = PrivateKey::from_pkcs8(&k.to_pkcs8_der()).unwrap();
        assert_eq!(k2.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = PrivateKey::generate(KeySpec::P256).unwrap();
        let d = format!("{k:?}");
        assert!(d.contains("[secret key elided]"), "{d}");
        let pem = k.to_pkcs8_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!d.contains(&body));
    }

    #[test]
    fn bad_private_keys_are_typed_errors() {
        for input in [
            &b""[..],
            b"garbage",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            &[0x30, 0x82, 0xff],
        ] {
            let e = PrivateKey::from_pkcs8(input).unwrap_err();
            assert!(matches!(e, KeyError::BadPrivateKey { .. }), "{e:?}");
        }
        let k = PrivateKey::generate(KeySpec::P256).unwrap();
        let der = k.to_pkcs8_der();
        let e = PrivateKey::from_pkcs8(&der[..der.len() - 5]).unwrap_err();
        assert!(matches!(e, KeyError::BadPrivateKey { .. }));
    }

    #[test]
    fn weak_hash_refused() {
        let k = PrivateKey::generate(KeySpec::P256).unwrap();
        let alg = AlgorithmIdentifierOwned {
            oid: oid::ECDSA_SHA1,
            parameters: None,
        };
        assert!(matches!(
            verify_signature(&k.public_key_info(), &alg, b"", &[]),
            Err(SignatureError::WeakHash { .. })
        ));
    }
}

/// Adapts a [`Signer`] to x509-cert's builder, which wants a `Keypair` to read the public key
/// and algorithm from before signing (the `finalize` / `assemble` split).
pub(crate) struct BuilderSigner {
    spki: SubjectPublicKeyInfoOwned,
    alg: AlgorithmIdentifierOwned,
}

/// A public key that encodes as the SPKI it holds.
#[derive(Clone)]
pub(crate) struct SpkiPublicKey(SubjectPublicKeyInfoOwned);

impl EncodePublicKey for SpkiPublicKey {
    fn to_public_key_der(&self) -> spki::Result<spki::Document> {
        Ok(spki::Document::encode_msg(&self.0)?)
    }
}

impl signature::Keypair for BuilderSigner {
    type VerifyingKey = SpkiPublicKey;
    fn verifying_key(&self) -> SpkiPublicKey {
        SpkiPublicKey(self.spki.clone())
    }
}

impl spki::DynSignatureAlgorithmIdentifier for BuilderSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.alg.clone())
    }
}

/// Runs an x509-cert builder through any [`Signer`]: finalize, sign the bytes, assemble.
pub(crate) fn build_signed<B: x509_cert::builder::Builder>(
    mut builder: B,
    signer: &dyn Signer,
) -> Result<B::Output, KeyError> {
    let adapter = BuilderSigner {
        spki: signer.public_key_info(),
        alg: signer.signature_algorithm(),
    };
    let tbs = builder.finalize(&adapter).map_err(|e| KeyError::Signing {
        reason: format!("cannot encode what is to be signed: {e}"),
    })?;
    let sig = signer.sign(&tbs)?;
    builder
        .assemble(signature_bits(&sig), &adapter)
        .map_err(|e| KeyError::Signing {
            reason: e.to_string(),
        })
}
