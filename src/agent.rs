//! The member side (A1, A2, S1): every server and device runs an agent. Sans-IO like the rest
//! of the core: [`Agent::handle`] takes a request and returns a response, and the agent's
//! state (keys, certificates, trust) is plain data that [`files::MemberDir`] can persist.
//!
//! Keys are generated here, on the member that uses them, and never leave it (S1): the CA
//! sees only CSRs, and a CA server's agent signs certificates without handing out its key.

pub mod files;

use std::fmt;

use der::{Decode, Encode};
use x509_cert::certificate::TbsCertificate;

use crate::ca::{CaError, CaParams, Serial, self_signed_ca};
use crate::cert::{CertError, Certificate, CertificateDer};
use crate::chain::{ChainError, verify_chain};
use crate::clock::Timestamp;
use crate::csr::{CsrDer, CsrError, CsrRequest, build_csr};
use crate::key::{KeyError, KeySpec, PrivateKey, Signer};

/// What the zone (the service) asks of a member's agent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AgentRequest {
    /// Generate a fresh key of `key` and answer with a CSR for it (S1, CE2). The key waits as
    /// the pending key until [`AgentRequest::Install`] brings its certificate.
    Enroll {
        /// Key type.
        key: KeySpec,
        /// Subject and SAN names to request.
        request: CsrRequest,
    },
    /// Install the certificate chain issued for the pending key, with the anchors the member
    /// trusts from now on. The agent checks the chain against those anchors at `now` first.
    Install {
        /// Leaf first.
        chain: Vec<CertificateDer>,
        /// Trust anchors.
        trust: Vec<CertificateDer>,
        /// The time to check the chain at.
        now: Timestamp,
    },
    /// Replace the set of trust anchors (devices have nothing else).
    Trust {
        /// Trust anchors.
        trust: Vec<CertificateDer>,
    },
    /// Generate a CA key and a self-signed zone CA certificate: this member becomes the
    /// certificate server (Z2).
    CreateCa {
        /// Key type.
        key: KeySpec,
        /// Subject and validity.
        params: CaParams,
        /// Serial number allocated by the zone.
        serial: Serial,
        /// notBefore.
        now: Timestamp,
    },
    /// Sign a DER `TBSCertificate` with the CA key. Refused unless its issuer is this
    /// agent's CA, so the CA key signs nothing but certificates of its own CA.
    SignCertificate {
        /// The DER `TBSCertificate`.
        tbs: Vec<u8>,
    },
}

/// The agent's answers, one per request kind.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AgentResponse {
    /// Answer to `Enroll`.
    Csr(CsrDer),
    /// Answer to `Install` and `Trust`.
    Done,
    /// Answer to `CreateCa`.
    CaCertificate(CertificateDer),
    /// Answer to `SignCertificate`.
    Signature(Vec<u8>),
}

/// Why an agent refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// `Install` without an outstanding `Enroll`.
    #[error("no pending key: the member must enroll (generate a key and CSR) first")]
    NoPendingKey,
    /// The certificate offered is not for the key this member holds.
    #[error("the certificate for {subject} is not for this member's key")]
    KeyMismatch {
        /// Subject of the offered certificate.
        subject: String,
    },
    /// `SignCertificate` on a member without the CA role.
    #[error("this member does not hold the zone CA key")]
    NotCaServer,
    /// The CA refused to sign what it was given.
    #[error("the CA refused to sign: {reason}")]
    RefusedToSign {
        /// Why.
        reason: String,
    },
    /// An empty chain.
    #[error("an empty certificate chain was offered")]
    EmptyChain,
    /// The offered chain does not validate against the offered anchors.
    #[error("the offered certificate chain does not validate: {0}")]
    Chain(Box<ChainError>),
    /// Key generation or signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Building the CSR failed.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// Building the CA certificate failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A certificate could not be parsed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Reading or writing the member's files failed.
    #[error("member files: {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A member's agent: its keys, certificate chain and trust anchors.
#[derive(Default)]
pub struct Agent {
    name: String,
    key: Option<PrivateKey>,
    chain: Vec<CertificateDer>,
    trust: Vec<CertificateDer>,
    pending: Option<PrivateKey>,
    ca_key: Option<PrivateKey>,
    ca_cert: Option<CertificateDer>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("has_key", &self.key.is_some())
            .field("chain_len", &self.chain.len())
            .field("trust_len", &self.trust.len())
            .field("pending", &self.pending.is_some())
            .field("ca_server", &self.ca_key.is_some())
            .finish()
    }
}

impl Agent {
    /// A fresh agent with nothing yet.
    pub fn new(name: impl Into<String>) -> Self {
        Agent {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The current key, if enrolled.
    pub fn key(&self) -> Option<&PrivateKey> {
        self.key.as_ref()
    }
    /// The key waiting for its certificate.
    pub fn pending_key(&self) -> Option<&PrivateKey> {
        self.pending.as_ref()
    }
    /// The current certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer] {
        &self.chain
    }
    /// The anchors the member trusts.
    pub fn trust(&self) -> &[CertificateDer] {
        &self.trust
    }
    /// The CA key, on the certificate server only.
    pub fn ca_key(&self) -> Option<&PrivateKey> {
        self.ca_key.as_ref()
    }
    /// The CA certificate that goes with [`Agent::ca_key`].
    pub fn ca_certificate(&self) -> Option<&CertificateDer> {
        self.ca_cert.as_ref()
    }

    /// Rebuilds an agent from persisted parts (see [`files::MemberDir`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        name: String,
        key: Option<PrivateKey>,
        chain: Vec<CertificateDer>,
        trust: Vec<CertificateDer>,
        pending: Option<PrivateKey>,
        ca_key: Option<PrivateKey>,
        ca_cert: Option<CertificateDer>,
    ) -> Self {
        Agent {
            name,
            key,
            chain,
            trust,
            pending,
            ca_key,
            ca_cert,
        }
    }

    /// Handles one request from the zone.
    pub fn handle(&mut self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
        match request {
            AgentRequest::Enroll { key, request } => {
                let new_key = PrivateKey::generate(key)?;
                let csr = build_csr(&request, &new_key)?;
                self.pending = Some(new_key);
                Ok(AgentResponse::Csr(csr))
            }
            AgentRequest::Install { chain, trust, now } => {
                self.install(chain, trust, now)?;
                Ok(AgentResponse::Done)
            }
            AgentRequest::Trust { trust } => {
                for t in &trust {
                    Certificate::try_from(t)?;
                }
                self.trust = trust;
                Ok(AgentResponse::Done)
            }
            AgentRequest::CreateCa {
                key,
                params,
                serial,
                now,
            } => {
                let ca_key = PrivateKey::generate(key)?;
                let cert = self_signed_ca(&ca_key, &params, &serial, now)?;
                self.ca_key = Some(ca_key);
                self.ca_cert = Some(cert.der().clone());
                Ok(AgentResponse::CaCertificate(cert.der().clone()))
            }
            AgentRequest::SignCertificate { tbs } => self.sign_certificate(&tbs),
        }
    }

    fn install(
        &mut self,
        chain: Vec<CertificateDer>,
        trust: Vec<CertificateDer>,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        let certs = chain
            .iter()
            .map(Certificate::try_from)
            .collect::<Result<Vec<_>, CertError>>()?;
        let anchors = trust
            .iter()
            .map(Certificate::try_from)
            .collect::<Result<Vec<_>, CertError>>()?;
        let (leaf, intermediates) = certs.split_first().ok_or(AgentError::EmptyChain)?;
        verify_chain(leaf, intermediates, &anchors, now)
            .map_err(|e| AgentError::Chain(Box::new(e)))?;
        // The certificate must be for the pending key (a fresh enrolment), or re-issued for
        // the current key (a re-install after a lost reply).
        let for_pending = self
            .pending
            .as_ref()
            .is_some_and(|k| &k.public_key_info() == leaf.public_key());
        let for_current = self
            .key
            .as_ref()
            .is_some_and(|k| &k.public_key_info() == leaf.public_key());
        if for_pending {
            self.key = self.pending.take();
        } else if !for_current {
            return Err(if self.pending.is_none() && self.key.is_none() {
                AgentError::NoPendingKey
            } else {
                AgentError::KeyMismatch {
                    subject: leaf.subject(),
                }
            });
        }
        self.chain = chain;
        self.trust = trust;
        Ok(())
    }

    fn sign_certificate(&self, tbs: &[u8]) -> Result<AgentResponse, AgentError> {
        let (Some(key), Some(ca_der)) = (&self.ca_key, &self.ca_cert) else {
            return Err(AgentError::NotCaServer);
        };
        let ca = Certificate::try_from(ca_der)?;
        let parsed = TbsCertificate::from_der(tbs).map_err(|e| AgentError::RefusedToSign {
            reason: format!("not a TBSCertificate: {e}"),
        })?;
        if parsed.issuer() != ca.subject_name() {
            return Err(AgentError::RefusedToSign {
                reason: format!(
                    "issuer {} is not this CA ({})",
                    parsed.issuer(),
                    ca.subject()
                ),
            });
        }
        if parsed.signature() != &key.signature_algorithm() {
            return Err(AgentError::RefusedToSign {
                reason: "the signature algorithm does not match the CA key".into(),
            });
        }
        // Re-encode to be sure what we sign is exactly what was parsed (no trailing bytes).
        let canonical = parsed.to_der().map_err(|e| AgentError::RefusedToSign {
            reason: e.to_string(),
        })?;
        if canonical != tbs {
            return Err(AgentError::RefusedToSign {
                reason: "TBSCertificate is not DER".into(),
            });
        }
        Ok(AgentResponse::Signature(key.sign(tbs)?))
    }
}
