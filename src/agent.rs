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
use crate::protocol::{AgentMessage, AgentState, Instruction, Report, StagedState, sha256_hex};

/// What one server asks of another server's agent (N1: servers reach each other directly):
/// enrolment, the CA's key and its custody, signing. Serialisable, so it can travel between
/// servers as JSON (`"call": "sign_certificate"`, ...); byte strings are base64. Members'
/// own updates are not here: they poll ([`crate::protocol`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "call", rename_all = "snake_case", deny_unknown_fields)]
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
    /// Generate a CA key and a self-signed zone CA certificate: this member becomes the
    /// certificate server (Z2). With `future`, the new CA waits beside the current one until
    /// the agent switches to the update that trusts it (Remint CA, RC1; see [`Agent::handle_timeout`]).
    CreateCa {
        /// Key type.
        key: KeySpec,
        /// Subject and validity.
        params: CaParams,
        /// Serial number allocated by the zone.
        serial: Serial,
        /// notBefore.
        now: Timestamp,
        /// Keep it as the future CA instead of the current one.
        future: bool,
    },
    /// Whether the agent answers: changes nothing. A command asks it before committing a
    /// change whose agent side must follow the commit (O7's cancel discards the future CA key
    /// only once the cancel is committed, B6).
    Ping,
    /// Drop the future CA with this certificate (a cancelled Remint CA).
    DiscardFutureCa {
        /// The future CA certificate whose key goes.
        certificate: CertificateDer,
    },
    /// BK1, MV1: hand out the CA certificate and key as an encrypted backup archive (the key
    /// never leaves in clear, S1, S5).
    ExportCa {
        /// The archive's passphrase.
        passphrase: crate::backup::Passphrase,
        /// The archive's creation time.
        now: Timestamp,
    },
    /// BK2, MV1: take the CA role from an encrypted backup archive. Refused, changing nothing,
    /// unless the archive opens with the passphrase and holds `expected_ca`.
    ImportCa {
        /// The archive.
        #[serde(with = "crate::protocol::base64_bytes")]
        archive: Vec<u8>,
        /// Its passphrase.
        passphrase: crate::backup::Passphrase,
        /// The zone CA the archive must hold.
        expected_ca: CertificateDer,
    },
    /// MV1: hand out the CA certificate and key as a one-time transfer archive under `key`
    /// (the key never leaves in clear, S1). Unlike a backup, the archive is sealed under a
    /// random 256-bit key and runs no 600,000-iteration key derivation (see
    /// [`crate::backup`]'s "One-time transfers"); no passphrase opens it.
    TransferCa {
        /// The move's one-time key.
        key: crate::backup::TransferKey,
        /// The archive's creation time.
        now: Timestamp,
    },
    /// MV1: take the CA role from the transfer archive of a [`AgentRequest::TransferCa`].
    /// Refused, changing nothing, unless it opens with `key` and holds `expected_ca`; a
    /// backup archive is refused (a restore is [`AgentRequest::ImportCa`]).
    AcceptCa {
        /// The transfer archive.
        #[serde(with = "crate::protocol::base64_bytes")]
        archive: Vec<u8>,
        /// The move's one-time key.
        key: crate::backup::TransferKey,
        /// The zone CA the archive must hold.
        expected_ca: CertificateDer,
    },
    /// MV1, BK2: give up the CA role (the key is erased).
    DropCa,
    /// Z3: install a chain and the key the administrator generated for it (a zone created
    /// with an external CA), after checking them against `trust` at `now`.
    Adopt {
        /// Leaf first.
        chain: Vec<CertificateDer>,
        /// The key (PKCS#8 DER), zeroized when dropped.
        #[serde(with = "crate::protocol::base64_bytes::secret")]
        key: zeroize::Zeroizing<Vec<u8>>,
        /// Trust anchors.
        trust: Vec<CertificateDer>,
        /// Now.
        now: Timestamp,
    },
    /// Sign a DER `TBSCertificate` with the CA key. Refused unless its issuer is this
    /// agent's CA, so the CA key signs nothing but certificates of its own CA.
    SignCertificate {
        /// The DER `TBSCertificate`.
        #[serde(with = "crate::protocol::base64_bytes")]
        tbs: Vec<u8>,
    },
}

/// The agent's answers, one per request kind.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentResponse {
    /// Answer to `Enroll`.
    Csr(CsrDer),
    /// Answer to `Install` and `Trust`.
    Done,
    /// Answer to `CreateCa`.
    CaCertificate(CertificateDer),
    /// Answer to `SignCertificate`.
    Signature(#[serde(with = "crate::protocol::base64_bytes")] Vec<u8>),
    /// Answer to `ExportCa` and `TransferCa`: the encrypted archive.
    Archive(#[serde(with = "crate::protocol::base64_bytes")] Vec<u8>),
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
    /// `Activate` for an operation this member has not staged.
    #[error("nothing is staged for operation {op_id}: the member did not apply the update")]
    NotStaged {
        /// The operation.
        op_id: u64,
    },
    /// `Activate` before the activation time.
    #[error("activation is at {activation}, not before")]
    TooEarly {
        /// The activation time.
        activation: Timestamp,
    },
    /// A recovery bundle that does not check out.
    #[error("recovery bundle refused: {reason}")]
    BadBundle {
        /// Why.
        reason: String,
    },
    /// A backup archive could not be made or opened.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// The archive holds another CA than the zone's.
    #[error("the archive holds the CA {found}, not this zone's CA {expected}")]
    WrongCa {
        /// The archive's CA subject and fingerprint.
        found: String,
        /// The zone CA's.
        expected: String,
    },
    /// CE2 manual mode: the remint repository lacks or garbles a piece.
    #[error("remint repository: {0}")]
    Manual(#[from] ManualError),
    /// The offered certificates fail the pre-flight lint (B4).
    #[error(transparent)]
    Lint(#[from] crate::lint::LintError),
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
    /// A member file is too large, or a symbolic link is where a member file or directory is
    /// written ([`crate::fsio`]).
    #[error("member files: {0}")]
    File(#[from] crate::fsio::FileError),
    /// Reading or writing the member's files failed.
    #[error("member files: {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Every part of an agent's state, for persistence.
pub(crate) struct AgentParts {
    pub(crate) name: String,
    pub(crate) key: Option<PrivateKey>,
    pub(crate) chain: Vec<CertificateDer>,
    pub(crate) trust: Vec<CertificateDer>,
    pub(crate) pending: Option<PrivateKey>,
    pub(crate) ca_key: Option<PrivateKey>,
    pub(crate) ca_cert: Option<CertificateDer>,
    pub(crate) future_cas: Vec<(PrivateKey, CertificateDer)>,
    pub(crate) staged: Option<Staged>,
    pub(crate) manual: Option<Result<ManualMaterial, ManualError>>,
}

/// What an administrator placed in a remint repository for CE2's manual mode.
pub struct ManualMaterial {
    /// The chain from `server.<ext>`, in file order.
    pub chain: Vec<Certificate>,
    /// The key from `key.der`.
    pub key: PrivateKey,
}

impl fmt::Debug for ManualMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualMaterial")
            .field("chain", &self.chain)
            .field("key", &"[secret key elided]")
            .finish()
    }
}

/// Why the remint repository's manual-mode files cannot be used (each says what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManualError {
    /// Nothing placed at all.
    #[error(
        "nothing placed yet: put the complete chain (server, intermediates, root) as \
             server.der, .cer, .crt, .p7b, .pem or .cert, and the server's key as key.der, in \
             the remint repository"
    )]
    NothingPlaced,
    /// The certificate names another host.
    #[error("the certificate in the remint repository is for {subject}, not {host}")]
    WrongHost {
        /// The certificate's subject.
        subject: String,
        /// This server.
        host: String,
    },
    /// A CA certificate where a server certificate belongs (S4).
    #[error("{subject} is a CA certificate, not a server certificate")]
    NotAServerCertificate {
        /// Its subject.
        subject: String,
    },
    /// The certificate would be expired when it becomes current.
    #[error("the certificate expires at {not_after}, before activation at {activation}")]
    ExpiresBeforeActivation {
        /// Its notAfter.
        not_after: Timestamp,
        /// Activation.
        activation: Timestamp,
    },
    /// No `server.<ext>`.
    #[error(
        "no server certificate: place the complete chain (server, intermediates, root) as \
             server.der, .cer, .crt, .p7b, .pem or .cert"
    )]
    MissingChain,
    /// Several `server.<ext>` files.
    #[error("several server certificate files ({0}): keep exactly one")]
    SeveralChains(String),
    /// No `key.der`.
    #[error("no key: place the server's private key as key.der (PKCS#8, DER or PEM)")]
    MissingKey,
    /// `server.<ext>` is not a certificate bundle.
    #[error("{file}: {reason}")]
    BadChain {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// `key.der` is not a usable key (never shows key material).
    #[error("key.der: {0}; convert with `openssl pkcs8 -topk8 -nocrypt -outform DER`")]
    BadKey(String),
    /// The key is not the certificate's.
    #[error("key.der does not match the certificate in {file} ({subject})")]
    KeyMismatch {
        /// The chain file.
        file: String,
        /// The certificate's subject.
        subject: String,
    },
}

/// The file names CE2 allows for the administrator's chain.
pub const MANUAL_CHAIN_FILES: [&str; 6] = [
    "server.der",
    "server.cer",
    "server.crt",
    "server.p7b",
    "server.pem",
    "server.cert",
];

/// Reads CE2 manual-mode material from a remint repository's files, given as (name, bytes):
/// exactly one `server.<ext>` (any of the six formats, content decides) and `key.der` (PKCS#8,
/// DER or PEM), whose key must be the public key of one certificate of the chain; that one is
/// moved to the front. Pure and I/O-free, so it can be fuzzed.
pub fn read_manual_material(files: &[(String, Vec<u8>)]) -> Result<ManualMaterial, ManualError> {
    let chains: Vec<&(String, Vec<u8>)> = files
        .iter()
        .filter(|(n, _)| MANUAL_CHAIN_FILES.contains(&n.as_str()))
        .collect();
    let (file, bytes) = match chains.as_slice() {
        [] => return Err(ManualError::MissingChain),
        [one] => (&one.0, &one.1),
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ManualError::SeveralChains(names.join(", ")));
        }
    };
    let mut chain =
        crate::cert::bundle::read_certificates(bytes).map_err(|e| ManualError::BadChain {
            file: file.clone(),
            reason: e.to_string(),
        })?;
    let key_bytes = files
        .iter()
        .find(|(n, _)| n == "key.der")
        .map(|(_, b)| b)
        .ok_or(ManualError::MissingKey)?;
    let key = PrivateKey::from_pkcs8(key_bytes).map_err(|e| ManualError::BadKey(e.to_string()))?;
    let spki = key.public_key_info();
    let Some(pos) = chain.iter().position(|c| c.public_key() == &spki) else {
        return Err(ManualError::KeyMismatch {
            file: file.clone(),
            subject: chain[0].subject(),
        });
    };
    let leaf = chain.remove(pos);
    chain.insert(0, leaf);
    Ok(ManualMaterial { chain, key })
}

/// Whether `cert` names `host` in its SAN DNS names (or, without a SAN, its CN); one leading
/// wildcard label matches exactly one label (RFC 6125 6.4.3), as an external CA may issue
/// (CE4).
pub fn certificate_names(cert: &Certificate, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let names = match cert.dns_names() {
        Ok(n) if !n.is_empty() => n,
        _ => cert.common_name().into_iter().collect(),
    };
    names.iter().any(|n| {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(rest) => host.split_once('.').is_some_and(|(label, tail)| {
                !label.is_empty() && tail == rest && rest.contains('.')
            }),
            None => n == host,
        }
    })
}

/// What an agent holds between staging and activation (A1).
#[derive(Debug)]
pub struct Staged {
    /// The operation.
    pub op_id: u64,
    /// When to switch.
    pub activation: Timestamp,
    /// Anchors after activation.
    pub trust_after: Vec<CertificateDer>,
    /// The future chain (servers), leaf first.
    pub chain: Vec<CertificateDer>,
    /// The future key (servers).
    pub key: Option<PrivateKey>,
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
    /// Future CAs made for Remint CA starts, newest last. More than one only after two
    /// frontends raced to start (B6): the loser's CA is never promoted, and is dropped when
    /// the winner's activates.
    future_cas: Vec<(PrivateKey, CertificateDer)>,
    staged: Option<Staged>,
    /// CE2 manual mode: what the remint repository holds (read by [`files::MemberDir`]).
    manual: Option<Result<ManualMaterial, ManualError>>,
    /// The report of the agent's own switch at the activation time (N5), sent with its next
    /// message. Not persisted: the zone also reads a switch from the state the agent reports.
    outbox: Option<Report>,
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
            .field("future_cas", &self.future_cas.len())
            .field("staged_op", &self.staged.as_ref().map(|s| s.op_id))
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

    /// The newest future CA key, on the certificate server during a Remint CA.
    pub fn future_ca_key(&self) -> Option<&PrivateKey> {
        self.future_cas.last().map(|(k, _)| k)
    }
    /// The newest future CA certificate.
    pub fn future_ca_certificate(&self) -> Option<&CertificateDer> {
        self.future_cas.last().map(|(_, c)| c)
    }
    /// Every future CA this agent holds (key and certificate), oldest first.
    pub fn future_cas(&self) -> impl Iterator<Item = (&PrivateKey, &CertificateDer)> {
        self.future_cas.iter().map(|(k, c)| (k, c))
    }
    /// What is staged for activation.
    pub fn staged(&self) -> Option<&Staged> {
        self.staged.as_ref()
    }

    /// Rebuilds an agent from persisted parts (see [`files::MemberDir`]).
    pub(crate) fn from_parts(p: AgentParts) -> Self {
        Agent {
            name: p.name,
            key: p.key,
            chain: p.chain,
            trust: p.trust,
            pending: p.pending,
            ca_key: p.ca_key,
            ca_cert: p.ca_cert,
            future_cas: p.future_cas,
            staged: p.staged,
            manual: p.manual,
            outbox: None,
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
            AgentRequest::CreateCa {
                key,
                params,
                serial,
                now,
                future,
            } => {
                let ca_key = PrivateKey::generate(key)?;
                let cert = self_signed_ca(&ca_key, &params, &serial, now)?;
                if future {
                    self.future_cas.push((ca_key, cert.der().clone()));
                } else {
                    self.ca_key = Some(ca_key);
                    self.ca_cert = Some(cert.der().clone());
                }
                Ok(AgentResponse::CaCertificate(cert.der().clone()))
            }
            AgentRequest::Ping => Ok(AgentResponse::Done),
            AgentRequest::DiscardFutureCa { certificate } => {
                self.future_cas.retain(|(_, c)| c != &certificate);
                Ok(AgentResponse::Done)
            }
            AgentRequest::SignCertificate { tbs } => self.sign_certificate(&tbs),
            AgentRequest::ExportCa { passphrase, now } => {
                let (Some(key), Some(cert)) = (&self.ca_key, &self.ca_cert) else {
                    return Err(AgentError::NotCaServer);
                };
                let cert = Certificate::try_from(cert)?;
                Ok(AgentResponse::Archive(crate::backup::create(
                    &cert,
                    key,
                    &passphrase,
                    now,
                )?))
            }
            AgentRequest::ImportCa {
                archive,
                passphrase,
                expected_ca,
            } => {
                let restored = crate::backup::open(&archive, &passphrase)?;
                self.take_ca(restored, &expected_ca)
            }
            AgentRequest::TransferCa { key: secret, now } => {
                let (Some(key), Some(cert)) = (&self.ca_key, &self.ca_cert) else {
                    return Err(AgentError::NotCaServer);
                };
                let cert = Certificate::try_from(cert)?;
                Ok(AgentResponse::Archive(crate::backup::create_transfer(
                    &cert, key, &secret, now,
                )?))
            }
            AgentRequest::AcceptCa {
                archive,
                key,
                expected_ca,
            } => {
                let restored = crate::backup::open_transfer(&archive, &key)?;
                self.take_ca(restored, &expected_ca)
            }
            AgentRequest::DropCa => {
                self.ca_key = None;
                self.ca_cert = None;
                Ok(AgentResponse::Done)
            }
            AgentRequest::Adopt {
                chain,
                key,
                trust,
                now,
            } => {
                let key = PrivateKey::from_pkcs8(&key)?;
                let old_pending = self.pending.replace(key);
                if let Err(e) = self.install(chain, trust, now) {
                    self.pending = old_pending;
                    return Err(e);
                }
                Ok(AgentResponse::Done)
            }
        }
    }

    /// What the agent holds, as it reports it in every message (N1).
    pub fn state(&self) -> AgentState {
        AgentState {
            trust: self
                .trust
                .iter()
                .map(|c| sha256_hex(c.as_bytes()))
                .collect(),
            certificate: self.chain.first().map(|c| sha256_hex(c.as_bytes())),
            pending_key: self.pending.is_some(),
            staged: self.staged.as_ref().map(|s| StagedState {
                op_id: s.op_id,
                activation: s.activation,
                certificate: s.chain.first().map(|c| sha256_hex(c.as_bytes())),
            }),
        }
    }

    /// The agent's next message: its state, with the report of its own switch if one waits
    /// (N5). A poll sends this; after an instruction, [`Agent::follow`] builds the message.
    pub fn poll(&mut self, now: Timestamp) -> AgentMessage {
        let report = self.outbox.take();
        AgentMessage::new(self.name.clone(), now, self.state()).with_report(report)
    }

    /// Carries out the zone's instruction and returns the message that reports its result,
    /// or `None` when the instruction was [`Instruction::Nothing`] (the conversation ends).
    pub fn follow(&mut self, instruction: Instruction, now: Timestamp) -> Option<AgentMessage> {
        let report = self.carry_out(instruction, now)?;
        Some(AgentMessage::new(self.name.clone(), now, self.state()).with_report(Some(report)))
    }

    /// Carries out one instruction; its result as a report (`None` for nothing to do).
    pub fn carry_out(&mut self, instruction: Instruction, now: Timestamp) -> Option<Report> {
        let op_id = instruction.op_id();
        let result = match instruction {
            Instruction::Nothing => return None,
            Instruction::Trust { trust } => self.check_new_anchors(&trust).map(|()| {
                self.trust = trust;
                Report::Done
            }),
            Instruction::MakeKey {
                op_id,
                key,
                request,
            } => PrivateKey::generate(key)
                .map_err(AgentError::from)
                .and_then(|k| {
                    let csr = build_csr(&request, &k)?;
                    self.pending = Some(k);
                    Ok(Report::Csr { op_id, csr })
                }),
            Instruction::Stage {
                op_id,
                activation,
                trust_now,
                trust_after,
                chain,
            } => self
                .stage(op_id, activation, trust_now, trust_after, chain, now)
                .map(|()| Report::Staged {
                    op_id,
                    chain: Vec::new(),
                }),
            Instruction::StageManual {
                op_id,
                activation,
                trust_now,
                trust_after,
                bridge,
                anchor,
                intermediates,
                acknowledged,
            } => self
                .stage_manual(
                    op_id,
                    activation,
                    trust_now,
                    trust_after,
                    now,
                    bridge,
                    anchor,
                    intermediates,
                    &acknowledged,
                )
                .map(|chain| Report::Staged { op_id, chain }),
            Instruction::Unstage { op_id, trust } => {
                if self.staged.as_ref().is_some_and(|s| s.op_id == op_id) {
                    self.staged = None;
                }
                self.pending = None;
                self.trust = trust;
                Ok(Report::Done)
            }
            Instruction::Recover {
                op_id,
                new_ca,
                cross_certificate,
                trust_after,
            } => self
                .recover(&new_ca, &cross_certificate, trust_after, now)
                .map(|()| Report::Recovered { op_id }),
            Instruction::Install { chain, trust, .. } => {
                self.install(chain, trust, now).map(|()| Report::Done)
            }
        };
        Some(result.unwrap_or_else(|e| Report::Failed {
            op_id,
            reason: e.to_string(),
        }))
    }

    /// When the agent next wants to run by its own clock: the activation time of what it
    /// has staged (A2, N5).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.staged.as_ref().map(|s| s.activation)
    }

    /// Runs the agent's scheduled work at `now` by its own clock: at or after the activation
    /// time it switches to what it staged, whether or not a server answers, and keeps the
    /// report for its next message (A2, N5). A spurious call changes nothing. Returns whether
    /// it switched.
    pub fn handle_timeout(&mut self, now: Timestamp) -> bool {
        let Some(staged) = &self.staged else {
            return false;
        };
        if now < staged.activation {
            return false;
        }
        let op_id = staged.op_id;
        match self.activate(op_id, now) {
            Ok(()) => {
                self.outbox = Some(Report::Activated { op_id, at: now });
                true
            }
            Err(e) => {
                self.outbox = Some(Report::Failed {
                    op_id: Some(op_id),
                    reason: e.to_string(),
                });
                false
            }
        }
    }

    /// Checks that every anchor offered is a certificate. One the agent trusts already was
    /// checked when it came, and one offered twice is checked once: staging a Remint CA on a
    /// device parses only the future CA, not all four anchors of `trust_now` and
    /// `trust_after`.
    fn check_new_anchors<'a>(
        &self,
        anchors: impl IntoIterator<Item = &'a CertificateDer>,
    ) -> Result<(), AgentError> {
        let mut checked: Vec<&CertificateDer> = Vec::new();
        for t in anchors {
            if self.trust.contains(t) || checked.contains(&t) {
                continue;
            }
            Certificate::try_from(t)?;
            checked.push(t);
        }
        Ok(())
    }

    fn stage(
        &mut self,
        op_id: u64,
        activation: Timestamp,
        trust_now: Vec<CertificateDer>,
        trust_after: Vec<CertificateDer>,
        chain: Vec<CertificateDer>,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        self.check_new_anchors(trust_now.iter().chain(&trust_after))?;
        let mut key = None;
        if !chain.is_empty() {
            let certs = chain
                .iter()
                .map(Certificate::try_from)
                .collect::<Result<Vec<_>, CertError>>()?;
            let anchors = trust_after
                .iter()
                .map(Certificate::try_from)
                .collect::<Result<Vec<_>, CertError>>()?;
            let (leaf, rest) = certs.split_first().ok_or(AgentError::EmptyChain)?;
            verify_chain(leaf, rest, &anchors, now).map_err(|e| AgentError::Chain(Box::new(e)))?;
            // The chain is for the key made at enrolment (pending), or for the key staged by an
            // earlier attempt of the same operation (a re-stage after a lost reply).
            let restaged = self
                .staged
                .as_mut()
                .filter(|s| s.op_id == op_id)
                .and_then(|s| s.key.take());
            let mut found = None;
            for k in [self.pending.take(), restaged].into_iter().flatten() {
                if &k.public_key_info() == leaf.public_key() {
                    found = Some(k);
                }
            }
            key = Some(found.ok_or_else(|| AgentError::KeyMismatch {
                subject: leaf.subject(),
            })?);
        }
        self.trust = trust_now;
        self.staged = Some(Staged {
            op_id,
            activation,
            trust_after,
            chain,
            key,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn stage_manual(
        &mut self,
        op_id: u64,
        activation: Timestamp,
        trust_now: Vec<CertificateDer>,
        trust_after: Vec<CertificateDer>,
        now: Timestamp,
        bridge: Option<CertificateDer>,
        anchor: CertificateDer,
        intermediates: Vec<CertificateDer>,
        acknowledged: &[crate::lint::Rule],
    ) -> Result<Vec<CertificateDer>, AgentError> {
        let material = match self.manual.take() {
            // Staged already for this operation and nothing new placed: the reply was lost
            // (a failed commit); answer the same again (B5).
            None => match &mut self.staged {
                Some(st) if st.op_id == op_id && st.key.is_some() && !st.chain.is_empty() => {
                    // The same again, for the activation time the operation has now (B2).
                    st.activation = activation;
                    return Ok(st.chain.clone());
                }
                _ => return Err(ManualError::NothingPlaced.into()),
            },
            Some(Err(e)) => {
                self.manual = Some(Err(e.clone()));
                return Err(e.into());
            }
            Some(Ok(m)) => m,
        };
        let check = || -> Result<Vec<CertificateDer>, AgentError> {
            let (leaf, rest) = material.chain.split_first().ok_or(AgentError::EmptyChain)?;
            if !certificate_names(leaf, &self.name) {
                return Err(ManualError::WrongHost {
                    subject: leaf.subject(),
                    host: self.name.clone(),
                }
                .into());
            }
            if leaf.is_ca() {
                return Err(ManualError::NotAServerCertificate {
                    subject: leaf.subject(),
                }
                .into());
            }
            if leaf.not_after() <= activation {
                return Err(ManualError::ExpiresBeforeActivation {
                    not_after: leaf.not_after(),
                    activation,
                }
                .into());
            }
            // CE3: the chain must lead to the operation's CA, through the subordinates given
            // in the file or uploaded with the CA, and to nothing else (not the current CA).
            let anchor_cert = Certificate::try_from(&anchor)?;
            let mut subs: Vec<Certificate> = rest.to_vec();
            for d in &intermediates {
                subs.push(Certificate::try_from(d)?);
            }
            let path = verify_chain(leaf, &subs, std::slice::from_ref(&anchor_cert), now)
                .map_err(|e| AgentError::Chain(Box::new(e)))?;
            // B4: the administrator's chain passes the pre-flight lint before it is staged.
            crate::lint::enforce(
                crate::lint::lint_chain(path.path(), Some(&self.name), true),
                acknowledged,
            )?;
            let path: Vec<CertificateDer> = path.path().iter().map(|c| c.der().clone()).collect();
            Ok(crate::ops::with_bridge(
                path,
                Some(&anchor),
                bridge.as_ref(),
            ))
        };
        match check() {
            Ok(chain) => {
                self.trust = trust_now;
                self.staged = Some(Staged {
                    op_id,
                    activation,
                    trust_after,
                    chain: chain.clone(),
                    key: Some(material.key),
                });
                Ok(chain)
            }
            Err(e) => {
                self.manual = Some(Ok(material));
                Err(e)
            }
        }
    }

    fn activate(&mut self, op_id: u64, now: Timestamp) -> Result<(), AgentError> {
        let Some(staged) = self.staged.take_if(|s| s.op_id == op_id) else {
            return Err(AgentError::NotStaged { op_id });
        };
        if now < staged.activation {
            let activation = staged.activation;
            self.staged = Some(staged);
            return Err(AgentError::TooEarly { activation });
        }
        if !staged.chain.is_empty() {
            self.chain = staged.chain;
            self.key = staged.key;
        }
        // The certificate server promotes its future CA (Remint CA), and only the one this
        // update makes the anchor: not a stray future CA a failed start left behind (B6).
        if let Some(c) = self
            .future_cas
            .iter()
            .map(|(_, c)| c)
            .find(|c| staged.trust_after.contains(c))
        {
            let c = c.clone();
            self.promote_future_ca(&c);
        }
        self.trust = staged.trust_after;
        Ok(())
    }

    /// Makes the future CA `cert` this agent's CA, and drops every other future CA (strays of
    /// a lost start race, B6).
    fn promote_future_ca(&mut self, cert: &CertificateDer) {
        if let Some(i) = self.future_cas.iter().position(|(_, c)| c == cert) {
            let (k, c) = self.future_cas.swap_remove(i);
            self.ca_key = Some(k);
            self.ca_cert = Some(c);
            self.future_cas.clear();
        }
    }

    fn recover(
        &mut self,
        new_ca: &CertificateDer,
        cross: &CertificateDer,
        trust_after: Vec<CertificateDer>,
        now: Timestamp,
    ) -> Result<(), AgentError> {
        let bad = |reason: String| AgentError::BadBundle { reason };
        let new_ca_cert = Certificate::try_from(new_ca)?;
        let cross_cert = Certificate::try_from(cross)?;
        if cross_cert.public_key() != new_ca_cert.public_key()
            || !crate::cert::names_match(cross_cert.subject_name(), new_ca_cert.subject_name())
        {
            return Err(bad(
                "the cross-certificate does not certify the new CA's key".into(),
            ));
        }
        if !trust_after.contains(new_ca) {
            return Err(bad("the new trust does not contain the new CA".into()));
        }
        // On the new CA server the tool runs by itself (the manual, Remint CA step 5): the new
        // CA is the one this agent made, and it needs no voucher, even after an "immediate"
        // activation, when the old CA could no longer certify it.
        if self.future_cas.iter().any(|(_, c)| c == new_ca) {
            self.promote_future_ca(new_ca);
            self.trust = trust_after;
            self.staged = None;
            return Ok(());
        }
        let anchors = self
            .trust
            .iter()
            .map(Certificate::try_from)
            .collect::<Result<Vec<_>, CertError>>()?;
        // The bundle was signed while the old CA was valid; after the old CA has expired (an
        // "immediate" activation) its signature is still checked, at the old CA's last second.
        let at = now.min(cross_cert.not_after());
        verify_chain(&cross_cert, &[], &anchors, at)
            .map_err(|e| bad(format!("not vouched for by a CA this member trusts: {e}")))?;
        self.trust = trust_after;
        self.staged = None;
        Ok(())
    }

    /// BK2, MV1: takes the CA role from an opened archive if it holds `expected_ca`;
    /// otherwise changes nothing.
    fn take_ca(
        &mut self,
        restored: crate::backup::Restored,
        expected_ca: &CertificateDer,
    ) -> Result<AgentResponse, AgentError> {
        if restored.certificate.der() != expected_ca {
            let expected = Certificate::try_from(expected_ca)?;
            let describe =
                |c: &Certificate| format!("{} (SHA-256 {})", c.subject(), c.fingerprints().sha256);
            return Err(AgentError::WrongCa {
                found: describe(&restored.certificate),
                expected: describe(&expected),
            });
        }
        self.ca_cert = Some(restored.certificate.der().clone());
        self.ca_key = Some(restored.key);
        Ok(AgentResponse::Done)
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
        if self.ca_key.is_none() && self.future_cas.is_empty() {
            return Err(AgentError::NotCaServer);
        }
        let parsed = TbsCertificate::from_der(tbs).map_err(|e| AgentError::RefusedToSign {
            reason: format!("not a TBSCertificate: {e}"),
        })?;
        // Which of this agent's CAs is the issuer: by name, and by authority key identifier
        // when both have the same name (a Remint CA keeps the common name).
        let aki = parsed
            .get_extension::<x509_cert::ext::pkix::AuthorityKeyIdentifier>()
            .ok()
            .flatten()
            .and_then(|(_, a)| a.key_identifier.map(|k| k.as_bytes().to_vec()));
        let mut any_ca = false;
        let current = self.ca_key.as_ref().zip(self.ca_cert.as_ref());
        let futures = self.future_cas.iter().map(|(k, c)| (k, c));
        for (key, der) in current.into_iter().chain(futures) {
            any_ca = true;
            let ca = Certificate::try_from(der)?;
            if parsed.issuer() != ca.subject_name() {
                continue;
            }
            if let (Some(aki), Ok(Some(ski))) = (&aki, ca.subject_key_id())
                && *aki != ski
            {
                continue;
            }
            if parsed.signature() != &key.signature_algorithm() {
                return Err(AgentError::RefusedToSign {
                    reason: "the signature algorithm does not match the CA key".into(),
                });
            }
            // Re-encode to be sure what we sign is exactly what was parsed.
            let canonical = parsed.to_der().map_err(|e| AgentError::RefusedToSign {
                reason: e.to_string(),
            })?;
            if canonical != tbs {
                return Err(AgentError::RefusedToSign {
                    reason: "TBSCertificate is not DER".into(),
                });
            }
            return Ok(AgentResponse::Signature(key.sign(tbs)?));
        }
        if !any_ca {
            return Err(AgentError::NotCaServer);
        }
        Err(AgentError::RefusedToSign {
            reason: format!("issuer {} is not a CA this agent holds", parsed.issuer()),
        })
    }
}
