//! The agent protocol (N1, N2, N5): what a member's agent sends its zone and what the zone
//! answers. Members initiate: an agent polls with its state, the zone answers with one
//! instruction, the agent carries it out and reports the result in its next message, until
//! the zone answers [`Instruction::Nothing`]. The zone never calls a member.
//!
//! Every message is JSON with a version field `v` ([`VERSION`]); the wire format is
//! documented in `docs/protocol.md`. Decoding is bounded ([`MAX_MESSAGE_BYTES`]) and refuses
//! unknown versions, unknown fields and malformed input with a typed [`ProtocolError`].
//!
//! The zone's decisions rest on the state the agent reports and on the zone's own records,
//! never on what the zone believes it told the agent before, so every message is idempotent:
//! a poll repeated after a lost answer gets the same instruction again, and a report repeated
//! after a lost answer changes nothing twice (no serial, status change or audit entry twice,
//! N2).
//!
//! The activation time travels with [`Instruction::Stage`]: the agent switches at that time
//! by its own clock ([`crate::agent::Agent::handle_timeout`]), whether or not a server
//! answers then, and reports it at its next contact (N5).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cert::CertificateDer;
use crate::clock::Timestamp;
use crate::csr::{CsrDer, CsrRequest};
use crate::key::KeySpec;

/// The wire format version this library speaks.
pub const VERSION: u32 = 1;

/// The largest message either side accepts: a few certificate chains and trust bundles, with
/// room to spare.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How far an agent's clock may be from the zone's before the zone tells it (N5).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// The lower-case hex SHA-256 of a DER certificate (64 characters), as agents report what
/// they hold (see docs/protocol.md, "Encoding").
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest as _;
    base16ct::lower::encode_string(&sha2::Sha256::digest(der))
}

/// What an agent sends: its state, and the result of the last instruction it carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentMessage {
    /// Wire format version ([`VERSION`]).
    pub v: u32,
    /// The member the agent speaks for. A zone server checks it against the identity the
    /// member authenticated with: a member speaks only for itself (N3).
    pub member: String,
    /// The agent's clock (N5: a zone tells an agent whose clock is far off).
    pub now: Timestamp,
    /// What the agent holds now.
    pub state: AgentState,
    /// The result of the last instruction, or of the agent's own scheduled work (a switch at
    /// the activation time, N5). `None` in a plain poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

impl AgentMessage {
    /// A message of this version.
    pub fn new(member: impl Into<String>, now: Timestamp, state: AgentState) -> Self {
        AgentMessage {
            v: VERSION,
            member: member.into(),
            now,
            state,
            report: None,
        }
    }

    /// The same message carrying `report`.
    pub fn with_report(mut self, report: Option<Report>) -> Self {
        self.report = report;
        self
    }
}

/// An agent's state as it reports it: fingerprints, not certificates, so a poll is small.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentState {
    /// SHA-256 of every anchor the member trusts.
    pub trust: Vec<String>,
    /// SHA-256 of the member's current certificate (servers), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Whether a key made for a CSR waits for its certificate.
    #[serde(default)]
    pub pending_key: bool,
    /// What is staged for activation, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<StagedState>,
}

/// What an agent has staged (A1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StagedState {
    /// The operation.
    pub op_id: u64,
    /// When the agent switches.
    pub activation: Timestamp,
    /// SHA-256 of the staged certificate (servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// The result of an instruction, or of the agent's own switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Report {
    /// [`Instruction::MakeKey`] done: the CSR for the new key (the key never leaves, S1).
    Csr {
        /// The operation it was made for (`None`: a recovery).
        op_id: Option<u64>,
        /// The CSR.
        csr: CsrDer,
    },
    /// [`Instruction::Stage`] or [`Instruction::StageManual`] done: staged for `op_id` (A1).
    Staged {
        /// The operation.
        op_id: u64,
        /// The staged chain, leaf first (servers; in manual mode the administrator's chain as
        /// validated).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chain: Vec<CertificateDer>,
    },
    /// The agent switched to what it staged for `op_id`, at the activation time by its own
    /// clock (A2, N5).
    Activated {
        /// The operation.
        op_id: u64,
        /// When it switched, by its clock.
        at: Timestamp,
    },
    /// [`Instruction::Recover`] done (O6).
    Recovered {
        /// The operation.
        op_id: u64,
    },
    /// [`Instruction::Trust`], [`Instruction::Unstage`] or [`Instruction::Install`] done.
    Done,
    /// The instruction (or the switch) failed on the member.
    Failed {
        /// The operation, if the instruction belonged to one.
        op_id: Option<u64>,
        /// Why, in the agent's words.
        reason: String,
    },
}

/// What the zone answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ZoneAnswer {
    /// Wire format version ([`VERSION`]).
    pub v: u32,
    /// What to do now.
    pub instruction: Instruction,
    /// How the zone sees the member after this message (also what `zonectl fleet refresh`
    /// prints).
    pub standing: Standing,
    /// When to poll again at the latest (the activation time of a staged update, or nothing
    /// in particular). An agent polls earlier after an instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_by: Option<Timestamp>,
    /// N5: the agent's clock differs from the zone's by this many seconds (positive: the
    /// agent is ahead), when more than [`MAX_CLOCK_SKEW_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
}

impl ZoneAnswer {
    /// An answer of this version.
    pub fn new(instruction: Instruction, standing: Standing) -> Self {
        ZoneAnswer {
            v: VERSION,
            instruction,
            standing,
            poll_by: None,
            clock_skew_secs: None,
        }
    }
}

/// One instruction to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Instruction {
    /// Nothing to do.
    Nothing,
    /// Trust exactly these anchors from now on.
    Trust {
        /// The anchors.
        trust: Vec<CertificateDer>,
    },
    /// Make a key of type `key` and a CSR for `request`; report [`Report::Csr`] (S1, CE2).
    MakeKey {
        /// The operation (`None`: a recovery of a stranded server).
        op_id: Option<u64>,
        /// The key type.
        key: KeySpec,
        /// Subject and names.
        request: CsrRequest,
    },
    /// Stage the update (A1): trust `trust_now` at once, keep `chain` (servers: issued for
    /// the key made for it) and `trust_after`, and switch at `activation` by the agent's own
    /// clock (A2, N5).
    Stage {
        /// The operation.
        op_id: u64,
        /// When to switch.
        activation: Timestamp,
        /// Anchors to trust from now on.
        trust_now: Vec<CertificateDer>,
        /// Anchors to trust after activation.
        trust_after: Vec<CertificateDer>,
        /// The future chain, leaf first (empty for devices).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chain: Vec<CertificateDer>,
    },
    /// CE2 manual mode: stage the administrator's chain and key placed in the member's remint
    /// repository, after checking them (see [`crate::agent::AgentRequest`]'s docs of the
    /// checks).
    StageManual {
        /// The operation.
        op_id: u64,
        /// When to switch.
        activation: Timestamp,
        /// Anchors to trust from now on.
        trust_now: Vec<CertificateDer>,
        /// Anchors to trust after activation.
        trust_after: Vec<CertificateDer>,
        /// B1: the bridge to serve in place of the future CA.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bridge: Option<CertificateDer>,
        /// The CA the certificate must chain to.
        anchor: CertificateDer,
        /// Subordinate CAs uploaded with that CA.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        intermediates: Vec<CertificateDer>,
        /// Lint warnings the administrator acknowledged (B4).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        acknowledged: Vec<crate::lint::Rule>,
    },
    /// Drop what is staged for `op_id` (a cancelled operation, O7) and trust `trust`.
    Unstage {
        /// The operation.
        op_id: u64,
        /// The anchors.
        trust: Vec<CertificateDer>,
    },
    /// O6: a member that missed activation checks the bundle with the trust it has, then
    /// trusts `trust_after`.
    Recover {
        /// The operation.
        op_id: u64,
        /// The new CA certificate.
        new_ca: CertificateDer,
        /// The new CA's key certified by the old CA (B1).
        cross_certificate: CertificateDer,
        /// Anchors from now on (contains `new_ca`).
        trust_after: Vec<CertificateDer>,
    },
    /// Install `chain` (issued for the key made for it) and trust `trust` (a stranded server's
    /// recovery, O6).
    Install {
        /// The operation the certificate was issued for (`None`: outside any operation).
        op_id: Option<u64>,
        /// Leaf first.
        chain: Vec<CertificateDer>,
        /// The anchors.
        trust: Vec<CertificateDer>,
    },
}

impl Instruction {
    /// The operation the instruction belongs to, if any.
    pub fn op_id(&self) -> Option<u64> {
        match self {
            Instruction::MakeKey { op_id, .. } | Instruction::Install { op_id, .. } => *op_id,
            Instruction::Stage { op_id, .. }
            | Instruction::StageManual { op_id, .. }
            | Instruction::Unstage { op_id, .. }
            | Instruction::Recover { op_id, .. } => Some(*op_id),
            Instruction::Nothing | Instruction::Trust { .. } => None,
        }
    }

    /// `nothing`, `trust`, `make_key`, `stage`, `stage_manual`, `unstage`, `recover`,
    /// `install` (as on the wire, and as metrics label them).
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::Nothing => "nothing",
            Instruction::Trust { .. } => "trust",
            Instruction::MakeKey { .. } => "make_key",
            Instruction::Stage { .. } => "stage",
            Instruction::StageManual { .. } => "stage_manual",
            Instruction::Unstage { .. } => "unstage",
            Instruction::Recover { .. } => "recover",
            Instruction::Install { .. } => "install",
        }
    }
}

/// How the zone sees a member after its message: the outcome `fleet refresh` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "standing", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Standing {
    /// Nothing outstanding.
    UpToDate,
    /// Its trust anchors were brought up to date.
    TrustUpdated,
    /// What it had staged for a cancelled operation is gone (O7).
    Unstaged,
    /// A content server that pulled the update's content (O3).
    Replicated,
    /// Waiting for something outside the member (replication, an external CA's certificate,
    /// the administrator's files).
    Waiting {
        /// What it waits for.
        reason: Option<String>,
    },
    /// Working on an instruction (a key and CSR, a certificate being issued).
    InProgress,
    /// Staged: it switches at the activation time (A1).
    Applied,
    /// Switched (A2).
    Activated,
    /// Missed activation and recovered with the bundle (O6).
    Recovered,
    /// Failed, with the reason.
    Failed {
        /// Why.
        reason: String,
    },
    /// Missed activation and cannot recover by itself (O8).
    Stranded {
        /// Why, and what helps.
        reason: String,
    },
}

impl Standing {
    /// The short name `fleet refresh` prints: `up-to-date`, `trust-updated`, `unstaged`,
    /// `replicated`, `waiting`, `in-progress`, `applied`, `activated`, `recovered`,
    /// `failed`, `stranded`.
    pub fn name(&self) -> &'static str {
        match self {
            Standing::UpToDate => "up-to-date",
            Standing::TrustUpdated => "trust-updated",
            Standing::Unstaged => "unstaged",
            Standing::Replicated => "replicated",
            Standing::Waiting { .. } => "waiting",
            Standing::InProgress => "in-progress",
            Standing::Applied => "applied",
            Standing::Activated => "activated",
            Standing::Recovered => "recovered",
            Standing::Failed { .. } => "failed",
            Standing::Stranded { .. } => "stranded",
        }
    }

    /// The reason, for the standings that have one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Standing::Waiting { reason } => reason.as_deref(),
            Standing::Failed { reason } | Standing::Stranded { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Why a message was refused before the zone looked at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Nothing was sent.
    #[error("the message is empty")]
    Empty,
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("the message is larger than the {limit} bytes allowed")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not a message of this protocol.
    #[error("the message is malformed: {reason}")]
    Malformed {
        /// What the parser said (no message content).
        reason: String,
    },
    /// A version this library does not speak.
    #[error("protocol version {found} is not supported (this zone speaks version {supported})")]
    UnsupportedVersion {
        /// The message's version.
        found: u32,
        /// [`VERSION`].
        supported: u32,
    },
    /// The message speaks for another member than the one that sent it (N3).
    #[error("member {authenticated} sent a message for {claimed}: a member speaks only for itself")]
    WrongMember {
        /// Who authenticated.
        authenticated: String,
        /// Who the message names.
        claimed: String,
    },
}

/// A one-time registration token (N3): the secret a member presents once, at its first
/// contact, to get its credential. It is printable (base64url, 32 characters), so it also
/// serves as a password-based MAC secret. `Debug` never shows it; it is wiped on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegistrationToken(zeroize::Zeroizing<String>);

/// The number of random bytes in a [`RegistrationToken`].
const TOKEN_BYTES: usize = 24;

impl RegistrationToken {
    /// A new random token.
    pub fn generate() -> Result<Self, getrandom::Error> {
        use base64::Engine as _;
        let mut raw = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
        getrandom::fill(raw.as_mut())?;
        Ok(RegistrationToken(zeroize::Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref()),
        )))
    }

    /// Reads a token as a token file holds it (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let text = text.trim();
        let ok = text.len() == TOKEN_BYTES / 3 * 4
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(ProtocolError::Malformed {
                reason: format!(
                    "a registration token is {} characters of base64url; this is not one \
                     (use the token file the zone made for this member)",
                    TOKEN_BYTES / 3 * 4
                ),
            });
        }
        Ok(RegistrationToken(zeroize::Zeroizing::new(text.to_owned())))
    }

    /// The token's text (a secret: do not log it).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time that does not depend on where the two differ.
    pub fn matches(&self, other: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), other.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrationToken(..)")
    }
}

impl TryFrom<String> for RegistrationToken {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, ProtocolError> {
        let s = zeroize::Zeroizing::new(s);
        RegistrationToken::parse(&s)
    }
}

impl From<RegistrationToken> for String {
    fn from(t: RegistrationToken) -> String {
        t.0.as_str().to_owned()
    }
}

/// A member's first contact (N3): its registration token and a CSR for a key it made itself
/// (S1). The answer is an [`Enrolment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// [`VERSION`].
    pub v: u32,
    /// The member the token was made for.
    pub member: String,
    /// The token.
    pub token: RegistrationToken,
    /// PKCS#10, DER.
    #[serde(with = "base64_bytes")]
    pub csr: Vec<u8>,
}

impl EnrollRequest {
    /// A request of this version.
    pub fn new(member: impl Into<String>, token: RegistrationToken, csr: Vec<u8>) -> Self {
        EnrollRequest {
            v: VERSION,
            member: member.into(),
            token,
            csr,
        }
    }
}

/// An enrolled member's request for a new credential for a new key (S1), authenticated by its
/// current one: before that one expires, or after a CA change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// [`VERSION`].
    pub v: u32,
    /// The member (the one its TLS client certificate names).
    pub member: String,
    /// PKCS#10, DER.
    #[serde(with = "base64_bytes")]
    pub csr: Vec<u8>,
}

impl RenewRequest {
    /// A request of this version.
    pub fn new(member: impl Into<String>, csr: Vec<u8>) -> Self {
        RenewRequest {
            v: VERSION,
            member: member.into(),
            csr,
        }
    }
}

/// The answer to an [`EnrollRequest`] or a [`RenewRequest`]: the member's credential (a
/// server's certificate chain, or a device's client certificate chain), leaf first, and the
/// anchors it trusts from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    /// [`VERSION`].
    pub v: u32,
    /// The member.
    pub member: String,
    /// Leaf first.
    pub chain: Vec<CertificateDer>,
    /// Trust anchors.
    pub trust: Vec<CertificateDer>,
}

/// Reads an enrolment request: bounded, versioned, strict.
pub fn decode_enroll_request(bytes: &[u8]) -> Result<EnrollRequest, ProtocolError> {
    decode(bytes)
}

/// Reads a renewal request: bounded, versioned, strict.
pub fn decode_renew_request(bytes: &[u8]) -> Result<RenewRequest, ProtocolError> {
    decode(bytes)
}

/// Reads an enrolment answer: bounded, versioned, strict.
pub fn decode_enrolment(bytes: &[u8]) -> Result<Enrolment, ProtocolError> {
    decode(bytes)
}

/// Reads an agent's message: bounded, versioned, strict.
pub fn decode_agent_message(bytes: &[u8]) -> Result<AgentMessage, ProtocolError> {
    decode(bytes)
}

/// Reads a zone's answer: bounded, versioned, strict.
pub fn decode_zone_answer(bytes: &[u8]) -> Result<ZoneAnswer, ProtocolError> {
    decode(bytes)
}

/// A message as JSON bytes.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).expect("protocol messages are plain data and always serialise")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ProtocolError> {
    if bytes.is_empty() {
        return Err(ProtocolError::Empty);
    }
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            limit: MAX_MESSAGE_BYTES,
        });
    }
    // The version first, so a message of another version gets that refusal, not a field
    // error.
    #[derive(Deserialize)]
    struct Version {
        v: Option<serde_json::Value>,
    }
    let malformed = |e: serde_json::Error| ProtocolError::Malformed {
        reason: format!(
            "{} at line {} column {}",
            classify(&e),
            e.line(),
            e.column()
        ),
    };
    let version: Version = serde_json::from_slice(bytes).map_err(malformed)?;
    match version.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(ProtocolError::UnsupportedVersion {
                found: n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(u32::MAX),
                supported: VERSION,
            });
        }
        _ => {
            return Err(ProtocolError::Malformed {
                reason: "no numeric version field \"v\"".into(),
            });
        }
    }
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed {
        reason: e.to_string(),
    })
}

/// Serde of byte strings in messages as standard base64 (archives, DER blobs), and of
/// secrets the same way into zeroized buffers.
pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }

    /// The same, into a buffer wiped on drop (a private key).
    pub(crate) mod secret {
        use serde::{Deserializer, Serializer};
        use zeroize::Zeroizing;

        pub(crate) fn serialize<S: Serializer>(
            bytes: &Zeroizing<Vec<u8>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            super::serialize(bytes, s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Zeroizing<Vec<u8>>, D::Error> {
            super::deserialize(d).map(Zeroizing::new)
        }
    }
}

/// [`base64_bytes`] for an optional byte string (`null` or absent: `None`).
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub(crate) mod base64_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::base64_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        use base64::Engine as _;
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("not base64: {e}"))),
        }
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected content",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn poll() -> AgentMessage {
        AgentMessage::new(
            "dev-1",
            "2027-01-01T00:00:00Z".parse().unwrap(),
            AgentState::default(),
        )
    }

    #[test]
    fn round_trip() {
        let m = poll().with_report(Some(Report::Failed {
            op_id: Some(3),
            reason: "disk full".into(),
        }));
        let bytes = encode(&m);
        assert_eq!(decode_agent_message(&bytes).unwrap(), m);
        let a = ZoneAnswer::new(Instruction::Nothing, Standing::UpToDate);
        assert_eq!(decode_zone_answer(&encode(&a)).unwrap(), a);
    }

    /// The wire format's fingerprints are lower-case hex SHA-256 (docs/protocol.md), not
    /// the colon-separated upper-case form `Fingerprint` prints for people.
    #[test]
    fn fingerprints_are_lower_case_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(decode_agent_message(b""), Err(ProtocolError::Empty));
        assert!(matches!(
            decode_agent_message(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(ProtocolError::TooLarge { .. })
        ));
        let bytes = encode(&poll());
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                decode_agent_message(&bytes[..cut]),
                Err(ProtocolError::Malformed { .. })
            ));
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["v"] = 2.into();
        assert_eq!(
            decode_agent_message(&serde_json::to_vec(&v).unwrap()),
            Err(ProtocolError::UnsupportedVersion {
                found: 2,
                supported: VERSION
            })
        );
        v["v"] = 1.into();
        v["extra"] = true.into();
        assert!(matches!(
            decode_agent_message(&serde_json::to_vec(&v).unwrap()),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(
            decode_agent_message(b"{\"v\":\"1\"}"),
            Err(ProtocolError::Malformed { .. })
        ));
    }
}
