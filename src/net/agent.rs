//! A member's agent on its own host (`zone-agent`), as library code: [`enroll`] once,
//! then [`refresh`] (one poll) or [`run`] (polls for ever). The decisions are the sans-IO
//! [`Agent`]'s; this module only carries its messages over HTTPS and keeps its state in a
//! member directory ([`MemberDir::single`], the layout of ZONECTL.md "The fleet").
//!
//! The state survives a kill -9 at any moment: every file of the member directory is written
//! to a temporary name and renamed into place, and `current/` is switched as a whole
//! ([`crate::agent::files`]); the agent's configuration file likewise. What a kill can lose
//! is an answer not yet saved, and the zone sends it again at the next poll (every message is
//! idempotent, N2).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api;
use super::client::{
    CaPin, ClientError, DEFAULT_TIMEOUT, HttpsClient, ServerUrl, agent_tls_config, fetch_pinned_ca,
};
use crate::agent::files::MemberDir;
use crate::agent::{Agent, AgentError, AgentRequest, AgentResponse};
use crate::cert::Certificate;
use crate::clock::Timestamp;
use crate::csr::{CsrRequest, CsrSubject};
use crate::fsio;
use crate::key::KeySpec;
use crate::protocol::{
    self, EnrollRequest, Enrolment, ProtocolError, RegistrationToken, RenewRequest, Standing,
};

/// The most other zone servers an agent keeps.
pub const MAX_SERVERS: usize = 16;

/// The agent's own file in its state directory: the zone server it polls, and its name.
pub const CONFIG_FILE: &str = "zone-agent.json";

/// The most messages one refresh exchanges (a poll and the reports of the instructions it
/// brought: a key, a stage, ...); a zone that keeps instructing beyond it is polled again at
/// the next refresh.
pub const MAX_EXCHANGES: usize = 8;

/// A device credential expiring within this is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Why the agent could not do what was asked. Never holds a token or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentRunError {
    /// The state directory holds no enrolled member.
    #[error(
        "{} holds no enrolled member: enrol first with the zone server's address, the member's \
         name, its registration token and the zone CA's SHA-256",
        dir.display()
    )]
    NotEnrolled {
        /// The state directory.
        dir: PathBuf,
    },
    /// The state directory already holds an enrolled member (nothing is overwritten).
    #[error(
        "{} already holds the enrolled member {name}: use another directory, or remove this \
         one to enrol again",
        dir.display()
    )]
    AlreadyEnrolled {
        /// The state directory.
        dir: PathBuf,
        /// Who is enrolled there.
        name: String,
    },
    /// The agent's configuration file is unreadable.
    #[error("{}: {reason}; enrol again into an empty directory", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The zone server could not be asked, or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The zone server's answer breaks the protocol.
    #[error("the zone server's answer was refused: {0}")]
    Protocol(#[from] ProtocolError),
    /// The agent refused what the zone sent, or its files failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The zone enrolled another member than asked.
    #[error("the zone server enrolled {got}, not {asked}: nothing was saved")]
    WrongMember {
        /// The name asked for.
        asked: String,
        /// The name in the answer.
        got: String,
    },
}

impl AgentRunError {
    /// Whether trying again later may help (the network, a busy server).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AgentRunError::Client(e) if e.is_retryable())
    }
}

/// The agent's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Format version (1).
    pub v: u32,
    /// The zone server, `https://HOST:PORT`.
    pub server: String,
    /// The member's name.
    pub name: String,
    /// Other zone servers of the zone (several Primary Servers on one store, D1), polled in
    /// this order when [`AgentConfig::server`] cannot be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

impl AgentConfig {
    /// Reads `DIR/zone-agent.json`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, AgentRunError> {
        let path = dir.join(CONFIG_FILE);
        let bad = |reason: String| AgentRunError::Config {
            path: path.clone(),
            reason,
        };
        let Some(bytes) = fsio::read_if_exists(&path, MAX_CONFIG_BYTES, "the agent's config")
            .map_err(|e| bad(e.to_string()))?
        else {
            return Ok(None);
        };
        let config: AgentConfig = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if config.v != 1 {
            return Err(bad(format!("format version {} is not 1", config.v)));
        }
        if config.also.len() > MAX_SERVERS {
            return Err(bad(format!("more than {MAX_SERVERS} other servers")));
        }
        for s in std::iter::once(&config.server).chain(&config.also) {
            s.parse::<ServerUrl>().map_err(|e| bad(e.to_string()))?;
        }
        Ok(Some(config))
    }

    /// The servers, the first one first.
    pub fn servers(&self) -> Result<Vec<ServerUrl>, AgentRunError> {
        std::iter::once(&self.server)
            .chain(&self.also)
            .map(|s| s.parse::<ServerUrl>().map_err(AgentRunError::from))
            .collect()
    }

    /// Records `others` as the zone servers polled when the first one cannot be reached
    /// (replacing those recorded before), in the configuration of the member in `state_dir`.
    pub fn set_other_servers(state_dir: &Path, others: &[ServerUrl]) -> Result<(), AgentRunError> {
        if others.len() > MAX_SERVERS {
            return Err(AgentRunError::Config {
                path: state_dir.join(CONFIG_FILE),
                reason: format!("more than {MAX_SERVERS} other servers"),
            });
        }
        let mut config = Self::load(state_dir)?.ok_or_else(|| AgentRunError::NotEnrolled {
            dir: state_dir.to_path_buf(),
        })?;
        config.also = others.iter().map(ServerUrl::to_string).collect();
        config.save(state_dir)
    }

    fn save(&self, dir: &Path) -> Result<(), AgentRunError> {
        let json = serde_json::to_vec_pretty(self).expect("a config is plain data");
        // The directory is made if missing; a symbolic link there is refused, not followed.
        fsio::check_root(dir, true).map_err(AgentError::from)?;
        fsio::write_atomic(&dir.join(CONFIG_FILE), &json, false).map_err(AgentError::from)?;
        Ok(())
    }
}

/// What [`enroll`] did.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The member.
    pub name: String,
    /// SHA-256 of its new certificate (colon hex).
    pub certificate_sha256: String,
    /// Its trust anchors' subjects.
    pub trust: Vec<String>,
}

/// How the agent talks to the zone server.
#[derive(Debug, Clone, Copy)]
pub struct AgentOptions {
    /// Each exchange's bound.
    pub timeout: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// First contact (N3, S1): trusts the zone CA whose SHA-256 is `pin` ([`fetch_pinned_ca`]),
/// makes the member's own key of `key` and a CSR for it (the key never leaves the member),
/// enrols with the one-time `token`, installs the credential the zone issued and saves the
/// member in `state_dir` (`current/cert.pem`, `current/key.pem` 0600, `current/trust.pem`,
/// `remint-repo/`) with the server's address, so [`refresh`] needs nothing else.
///
/// A directory that already holds an enrolled member is refused, changing nothing. A refusal
/// of the zone (a used or expired token) saves nothing.
pub async fn enroll(
    server: &ServerUrl,
    name: &str,
    token: RegistrationToken,
    pin: &CaPin,
    state_dir: &Path,
    key: KeySpec,
    options: AgentOptions,
) -> Result<Enrolled, AgentRunError> {
    // Enrolled means holding a credential. A directory whose enrolment a kill interrupted
    // (the configuration written, the credential not yet) enrols again with a new token.
    let dir = MemberDir::single(state_dir);
    let existing = dir.load(name)?;
    if existing.key().is_some() && !existing.chain().is_empty() {
        let config = AgentConfig::load(state_dir).ok().flatten();
        return Err(AgentRunError::AlreadyEnrolled {
            dir: state_dir.to_path_buf(),
            name: config.map_or_else(|| name.to_string(), |c| c.name),
        });
    }
    let now = Timestamp::now_utc();
    let anchors = fetch_pinned_ca(server, pin, now, options.timeout).await?;
    let mut agent = Agent::new(name.trim().to_ascii_lowercase());
    let csr = make_csr(&mut agent, key)?;
    let client = HttpsClient::new(server.clone(), agent_tls_config(&anchors, None)?)
        .with_timeout(options.timeout);
    let request = EnrollRequest::new(agent.name(), token, csr);
    let answer = client
        .post_bytes(
            api::path::ENROLL,
            protocol::encode(&request),
            api::MAX_AGENT_BODY,
        )
        .await?;
    let enrolment: Enrolment = protocol::decode_enrolment(&answer)?;
    if enrolment.member != agent.name() {
        return Err(AgentRunError::WrongMember {
            asked: agent.name().to_string(),
            got: enrolment.member,
        });
    }
    agent.handle(AgentRequest::Install {
        chain: enrolment.chain,
        trust: enrolment.trust,
        now: Timestamp::now_utc(),
    })?;
    // The configuration first, then the credential: a kill between the two leaves a
    // directory without a credential, which enrols again (see above); the reverse order could
    // leave a credential no command can use.
    AgentConfig {
        v: 1,
        server: server.to_string(),
        name: agent.name().to_string(),
        also: Vec::new(),
    }
    .save(state_dir)?;
    dir.save(&agent)?;
    Ok(Enrolled {
        name: agent.name().to_string(),
        certificate_sha256: agent
            .chain()
            .first()
            .map(|c| crate::cert::Fingerprint::sha256(c.as_bytes()).to_string())
            .unwrap_or_default(),
        trust: agent
            .trust()
            .iter()
            .filter_map(|c| Certificate::try_from(c).ok())
            .map(|c| c.subject())
            .collect(),
    })
}

/// A fresh key and a CSR for it, made by the agent (S1): the key waits as its pending key.
fn make_csr(agent: &mut Agent, key: KeySpec) -> Result<Vec<u8>, AgentRunError> {
    let request = CsrRequest {
        subject: CsrSubject::cn(agent.name().to_string()),
        dns_names: Vec::new(),
    };
    match agent.handle(AgentRequest::Enroll { key, request })? {
        AgentResponse::Csr(csr) => Ok(csr.as_bytes().to_vec()),
        other => unreachable!("Enroll answers with a CSR, not {other:?}"),
    }
}

/// What one [`refresh`] did.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// How the zone sees the member after the last message.
    pub standing: Standing,
    /// Messages sent.
    pub exchanges: usize,
    /// Whether the agent switched at the activation time by its own clock (N5) in this
    /// refresh.
    pub switched: bool,
    /// Whether the device's credential was renewed.
    pub renewed: bool,
    /// Why a renewal that was due failed (it is tried again at the next refresh).
    pub renewal_error: Option<String>,
    /// The zone asks for the next poll by then at the latest.
    pub poll_by: Option<Timestamp>,
    /// The zone finds the agent's clock off by this many seconds (N5; positive: ahead).
    pub clock_skew_secs: Option<i64>,
}

/// The enrolled member of `state_dir`, with its configuration.
fn load(state_dir: &Path) -> Result<(AgentConfig, MemberDir, Agent), AgentRunError> {
    let not_enrolled = || AgentRunError::NotEnrolled {
        dir: state_dir.to_path_buf(),
    };
    let config = AgentConfig::load(state_dir)?.ok_or_else(not_enrolled)?;
    let dir = MemberDir::single(state_dir);
    let agent = dir.load(&config.name)?;
    if agent.key().is_none() || agent.chain().is_empty() {
        return Err(not_enrolled());
    }
    Ok((config, dir, agent))
}

/// When the member in `state_dir` next wants to run by its own clock: the activation time of
/// what it staged (N5). `None`: nothing scheduled.
pub fn poll_timeout(state_dir: &Path) -> Result<Option<Timestamp>, AgentRunError> {
    let (_, _, agent) = load(state_dir)?;
    Ok(agent.poll_timeout())
}

/// Runs the agent's scheduled work at `now` without the network: at or after the activation
/// time it switches to what it staged (A2, N5) and saves. Returns whether it switched.
pub fn handle_timeout(state_dir: &Path, now: Timestamp) -> Result<bool, AgentRunError> {
    let (_, dir, mut agent) = load(state_dir)?;
    timer(&dir, &mut agent, now)
}

fn timer(dir: &MemberDir, agent: &mut Agent, now: Timestamp) -> Result<bool, AgentRunError> {
    if agent.poll_timeout().is_none_or(|t| t > now) {
        return Ok(false);
    }
    let switched = agent.handle_timeout(now);
    dir.save(agent)?;
    if switched {
        tracing::info!(
            member = agent.name(),
            "switched at the activation time (N5)"
        );
    }
    Ok(switched)
}

/// One poll (A1, A2, N1, N5): the agent's own timer first (it switches at the activation time
/// by its own clock, whatever the network does), then its state to the zone server over
/// mutual TLS with its current credential, the instruction carried out and its report sent,
/// up to [`MAX_EXCHANGES`] messages, the state saved after every change. Then a device whose
/// credential was issued by a CA it no longer trusts first, or that expires within
/// [`RENEW_BEFORE`], gets a new one for a new key (S1).
pub async fn refresh(
    state_dir: &Path,
    now: Timestamp,
    options: AgentOptions,
) -> Result<Refreshed, AgentRunError> {
    let (config, dir, mut agent) = load(state_dir)?;
    let switched = timer(&dir, &mut agent, now)?;
    // D1: the first server, then the others, while none has answered yet; once one answered,
    // the conversation stays with it.
    let servers = config.servers()?;
    let mut failed = None;
    let mut answered = None;
    for url in &servers {
        match converse(url, &dir, &mut agent, now, options).await {
            Ok(done) => {
                answered = Some((url.clone(), done));
                break;
            }
            Err((e, false)) if e.is_retryable() && servers.len() > 1 => {
                tracing::warn!(member = agent.name(), server = %url, error = %e, "zone server unreachable; trying the next one");
                failed = Some(e);
            }
            Err((e, _)) => return Err(e),
        }
    }
    let Some((url, (answer, exchanges))) = answered else {
        return Err(failed.expect("a server was tried"));
    };
    // The poll was answered: a renewal that fails now is tried again at the next refresh,
    // and does not make this one fail.
    let mut renewal_error = None;
    let renewed = if needs_renewal(&agent, now) {
        match renew(&url, &dir, &mut agent, options).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(member = agent.name(), error = %e, "renewal failed; retried at the next refresh");
                renewal_error = Some(e.to_string());
                false
            }
        }
    } else {
        false
    };
    Ok(Refreshed {
        standing: answer.standing,
        exchanges,
        switched,
        renewed,
        renewal_error,
        poll_by: answer.poll_by,
        clock_skew_secs: answer.clock_skew_secs,
    })
}

/// One conversation with the zone server at `url`: up to [`MAX_EXCHANGES`] messages, the
/// agent saved after every change. The last answer and the number of exchanges; on failure,
/// the error and whether any answer had come.
async fn converse(
    url: &ServerUrl,
    dir: &MemberDir,
    agent: &mut Agent,
    now: Timestamp,
    options: AgentOptions,
) -> Result<(crate::protocol::ZoneAnswer, usize), (AgentRunError, bool)> {
    let client = member_client(url, dir, agent, options).map_err(|e| (e, false))?;
    let mut message = agent.poll(now);
    let mut exchanges = 0;
    let mut last = None;
    while exchanges < MAX_EXCHANGES {
        exchanges += 1;
        let answered = last.is_some();
        let bytes = client
            .post_bytes(
                api::path::POLL,
                protocol::encode(&message),
                api::MAX_AGENT_BODY,
            )
            .await
            .map_err(|e| (e.into(), answered))?;
        let answer = protocol::decode_zone_answer(&bytes).map_err(|e| (e.into(), answered))?;
        if let Some(skew) = answer.clock_skew_secs {
            tracing::warn!(
                member = agent.name(),
                skew_secs = skew,
                "the zone finds this host's clock off by {skew} s: set it right (N5)"
            );
        }
        let next = agent.follow(answer.instruction.clone(), now);
        dir.save(agent).map_err(|e| (e.into(), true))?;
        last = Some(answer);
        match next {
            Some(m) => message = m,
            None => break,
        }
    }
    Ok((last.expect("at least one exchange ran"), exchanges))
}

/// An HTTPS client that authenticates as the member and trusts what it trusts.
fn member_client(
    url: &ServerUrl,
    dir: &MemberDir,
    agent: &Agent,
    options: AgentOptions,
) -> Result<HttpsClient, AgentRunError> {
    let key = agent.key().ok_or_else(|| AgentRunError::NotEnrolled {
        dir: dir.root().to_path_buf(),
    })?;
    let tls = agent_tls_config(agent.trust(), Some((agent.chain(), key)))?;
    Ok(HttpsClient::new(url.clone(), tls).with_timeout(options.timeout))
}

/// Whether the member holds a device credential (no DNS name: a server's certificate is the
/// zone's to renew, by its operations) that its first anchor did not issue (the zone CA
/// changed) or that expires within [`RENEW_BEFORE`]. Not while a key waits or an update is
/// staged: those belong to an operation.
pub fn needs_renewal(agent: &Agent, now: Timestamp) -> bool {
    if agent.pending_key().is_some() || agent.staged().is_some() {
        return false;
    }
    let Some(leaf) = agent
        .chain()
        .first()
        .and_then(|c| Certificate::try_from(c).ok())
    else {
        return false;
    };
    if leaf.dns_names().map(|n| !n.is_empty()).unwrap_or(true) {
        return false;
    }
    if leaf.not_after() <= now.plus(RENEW_BEFORE) {
        return true;
    }
    let Some(first) = agent
        .trust()
        .first()
        .and_then(|c| Certificate::try_from(c).ok())
    else {
        return false;
    };
    let intermediates: Vec<Certificate> = agent.chain()[1..]
        .iter()
        .filter_map(|c| Certificate::try_from(c).ok())
        .collect();
    crate::chain::verify_chain(&leaf, &intermediates, &[first], now).is_err()
}

async fn renew(
    url: &ServerUrl,
    dir: &MemberDir,
    agent: &mut Agent,
    options: AgentOptions,
) -> Result<(), AgentRunError> {
    let client = member_client(url, dir, agent, options)?;
    let csr = make_csr(agent, agent_key_spec(agent))?;
    let request = RenewRequest::new(agent.name(), csr);
    let answer = client
        .post_bytes(
            api::path::RENEW,
            protocol::encode(&request),
            api::MAX_AGENT_BODY,
        )
        .await;
    // On a failure the new key is not saved (nothing was): the next refresh makes another.
    let answer = answer?;
    let enrolment = protocol::decode_enrolment(&answer)?;
    agent.handle(AgentRequest::Install {
        chain: enrolment.chain,
        trust: enrolment.trust,
        now: Timestamp::now_utc(),
    })?;
    dir.save(agent)?;
    tracing::info!(member = agent.name(), "device credential renewed");
    Ok(())
}

/// The key type of the member's current key (a renewal keeps it).
fn agent_key_spec(agent: &Agent) -> KeySpec {
    agent
        .key()
        .and_then(|k| {
            let alg = k.algorithm();
            KeySpec::ALL.into_iter().find(|s| s.algorithm() == alg)
        })
        .unwrap_or_default()
}

/// How [`run`] paces its polls.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// The time between polls (±20 % jitter).
    pub interval: Duration,
    /// The first wait after a failed poll; it doubles with every failure in a row.
    pub retry: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
    /// Each exchange's bound.
    pub agent: AgentOptions,
}

impl RunOptions {
    /// Polls every `interval`, retrying after failures from 2 s up to the larger of
    /// `interval` and 5 minutes.
    pub fn every(interval: Duration) -> Self {
        RunOptions {
            interval,
            retry: Duration::from_secs(2).min(interval),
            max_backoff: interval.max(Duration::from_secs(300)),
            agent: AgentOptions::default(),
        }
    }
}

/// `d` ± 20 %, from the system's randomness (so a fleet started together spreads out).
fn jitter(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    // 0.8 + 0.4 * r / u32::MAX
    let factor = 0.8 + 0.4 * (f64::from(r) / f64::from(u32::MAX));
    d.mul_f64(factor)
}

/// The wait after `failures` failed polls in a row.
fn backoff(options: &RunOptions, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    options
        .retry
        .saturating_mul(1u32 << exp)
        .min(options.max_backoff)
}

/// Polls for ever (N1): every [`RunOptions::interval`] with jitter, sooner when the zone
/// asks (`poll_by`), with exponential backoff after failures; wakes at the activation time
/// to switch by its own clock even when no server answers then (N5). Returns when `shutdown`
/// completes, or with an error the agent cannot get past by waiting (its files, no
/// enrolment).
pub async fn run(
    state_dir: &Path,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentRunError> {
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    // The first poll right away.
    let mut next_poll = tokio::time::Instant::now();
    // An activation whose switch failed is retried at the next poll (A2), not in a loop.
    let mut failed_switch: Option<Timestamp> = None;
    loop {
        let now = Timestamp::now_utc();
        let mut wake = next_poll;
        let mut timer_due = false;
        if let Some(at) = poll_timeout(state_dir)?.filter(|at| Some(*at) != failed_switch) {
            let secs = u64::try_from(at.unix().saturating_sub(now.unix())).unwrap_or(0);
            let at_instant = tokio::time::Instant::now() + Duration::from_secs(secs);
            if at_instant <= wake {
                wake = at_instant;
                timer_due = true;
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Timestamp::now_utc();
        if timer_due {
            // Switch first, by this host's clock, whether or not the server answers (N5).
            match poll_timeout(state_dir)? {
                Some(at) if at <= now => {
                    failed_switch = (!handle_timeout(state_dir, now)?).then_some(at);
                }
                // Woken a moment early (whole seconds): wait for it.
                Some(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => {}
            }
        }
        if tokio::time::Instant::now() < next_poll {
            continue;
        }
        match refresh(state_dir, now, options.agent).await {
            Ok(r) => {
                failures = 0;
                tracing::info!(
                    standing = r.standing.name(),
                    exchanges = r.exchanges,
                    switched = r.switched,
                    renewed = r.renewed,
                    "polled"
                );
                let mut wait = jitter(options.interval);
                if let Some(by) = r.poll_by {
                    let secs = u64::try_from(by.unix().saturating_sub(now.unix())).unwrap_or(0);
                    wait = wait.min(Duration::from_secs(secs.max(1)));
                }
                next_poll = tokio::time::Instant::now() + wait;
            }
            Err(e @ (AgentRunError::Client(_) | AgentRunError::Protocol(_))) => {
                failures = failures.saturating_add(1);
                let wait = jitter(backoff(&options, failures));
                tracing::warn!(error = %e, failures, retry_in_secs = wait.as_secs(), "poll failed");
                next_poll = tokio::time::Instant::now() + wait;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..200 {
            let j = jitter(Duration::from_secs(100));
            assert!(
                j >= Duration::from_secs(80) && j <= Duration::from_secs(120),
                "{j:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = RunOptions::every(Duration::from_secs(60));
        assert_eq!(backoff(&o, 1), Duration::from_secs(2));
        assert_eq!(backoff(&o, 2), Duration::from_secs(4));
        assert_eq!(backoff(&o, 5), Duration::from_secs(32));
        assert_eq!(backoff(&o, 30), Duration::from_secs(300));
        assert_eq!(backoff(&o, u32::MAX), Duration::from_secs(300));
    }
}
