//! The in-process transport: every member's [`Agent`] lives in this process. With a root
//! directory, each call loads the member's state from its files and saves it back, so the
//! files under `--root` are the agents' real, durable state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::{Transport, TransportError};
use crate::agent::files::MemberDir;
use crate::agent::{Agent, AgentError, AgentRequest, AgentResponse};
use crate::cert::CertificateDer;
use crate::clock::{Clock, Timestamp};
use crate::protocol::{self, AgentMessage, Instruction, Report, Standing};
use crate::service::ZoneService;
use crate::store::Storage;

/// Agents in this process, in memory or backed by member files.
///
/// Calls to different members run side by side (each agent has its own lock, as each has its
/// own host); calls to one member are served one at a time.
#[derive(Debug, Default)]
pub struct LoopbackTransport {
    /// In memory: the agents, each behind its own lock.
    agents: RwLock<BTreeMap<String, Mutex<Agent>>>,
    /// Backed by files: one lock per member, so two calls never interleave on its files.
    file_locks: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    dir: Option<MemberDir>,
    offline: Mutex<BTreeSet<String>>,
}

impl LoopbackTransport {
    /// Agents held in memory only (tests, simulations, benchmarks).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Agents whose state lives under `root/<member>/` (the fleet of `zonectl`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        LoopbackTransport {
            dir: Some(MemberDir::new(root)),
            ..Self::default()
        }
    }

    /// The member files, when backed by a directory.
    pub fn member_dir(&self) -> Option<&MemberDir> {
        self.dir.as_ref()
    }

    /// Takes a member off (or back on) the network: calls to it fail as unreachable.
    pub fn set_offline(&self, member: &str, offline: bool) {
        let mut set = lock(&self.offline);
        if offline {
            set.insert(member.to_string());
        } else {
            set.remove(member);
        }
    }

    /// Runs `f` on a member's agent (loaded from its files when backed by a directory).
    pub fn with_agent<R>(&self, member: &str, f: impl FnOnce(&Agent) -> R) -> Option<R> {
        match &self.dir {
            Some(dir) => {
                let file_lock = self.file_lock(member);
                let _guard = lock(&file_lock);
                dir.load(member).ok().map(|a| f(&a))
            }
            None => self
                .agents
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(member)
                .map(|a| f(&lock(a))),
        }
    }

    /// Runs `f` on a member's agent and keeps what it changed (saved to its files when backed
    /// by a directory). For frontends that drive an agent by hand: a test, a simulation of one
    /// member's own timer.
    pub fn agent_mut<R>(
        &self,
        member: &str,
        f: impl FnOnce(&mut Agent) -> R,
    ) -> Result<R, AgentError> {
        self.act(member, |a| (f(a), true))
    }

    /// The lock of one member's files.
    fn file_lock(&self, member: &str) -> Arc<Mutex<()>> {
        lock(&self.file_locks)
            .entry(member.to_string())
            .or_default()
            .clone()
    }

    /// Runs `f` on a member's in-memory agent, made on first use.
    fn with_agent_mut<R>(&self, member: &str, f: impl FnOnce(&mut Agent) -> R) -> R {
        {
            let agents = self.agents.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(agent) = agents.get(member) {
                return f(&mut lock(agent));
            }
        }
        let mut agents = self.agents.write().unwrap_or_else(PoisonError::into_inner);
        let agent = agents
            .entry(member.to_string())
            .or_insert_with(|| Mutex::new(Agent::new(member)));
        f(agent.get_mut().unwrap_or_else(PoisonError::into_inner))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Transport for LoopbackTransport {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        if lock(&self.offline).contains(member) {
            return Err(TransportError::Unreachable {
                member: member.to_string(),
                reason: "offline".into(),
            });
        }
        let refused = |source| TransportError::Refused {
            member: member.to_string(),
            source: Box::new(source),
        };
        match &self.dir {
            Some(dir) => {
                // Two calls never interleave on one member's files.
                let file_lock = self.file_lock(member);
                let _guard = lock(&file_lock);
                let mut agent = dir.load(member).map_err(refused)?;
                let response = agent.handle(request).map_err(refused)?;
                dir.save(&agent).map_err(refused)?;
                Ok(response)
            }
            None => self
                .with_agent_mut(member, |agent| agent.handle(request))
                .map_err(refused),
        }
    }
}

/// What `fleet refresh` simulates for some members of the in-process fleet. The zone knows
/// nothing of it: these members' agents behave so, and the zone sees what it would see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshOptions {
    /// These members' agents report a failure instead of carrying out an instruction, or of
    /// switching at the activation time.
    pub fail: BTreeSet<String>,
    /// These members are not reached at all (they do not poll).
    pub offline: BTreeSet<String>,
}

impl RefreshOptions {
    /// No member fails, every member is online.
    pub fn new() -> Self {
        Self::default()
    }
    /// These members' agents report failures.
    pub fn failing(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.fail.extend(names.into_iter().map(Into::into));
        self
    }
    /// These members do not poll.
    pub fn offline(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.offline.extend(names.into_iter().map(Into::into));
        self
    }
}

/// What happened to one member in a refresh of the in-process fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Outcome {
    /// It did not poll (`RefreshOptions::offline`).
    Offline,
    /// Nothing outstanding.
    UpToDate,
    /// Its trust anchors were brought up to date.
    TrustUpdated,
    /// What it had staged for a cancelled operation is gone (O7).
    Unstaged,
    /// A content server that pulled the update's content (O3).
    Replicated,
    /// Waiting for something outside the member.
    Waiting,
    /// Still working on an instruction when the conversation's bound was reached.
    InProgress,
    /// Staged (A1).
    Applied,
    /// Switched (A2).
    Activated,
    /// Recovered with the bundle (O6).
    Recovered,
    /// Failed.
    Failed,
    /// Missed activation and cannot recover by itself (O8).
    Stranded,
}

impl Outcome {
    /// As printed: `offline`, `up-to-date`, `trust-updated`, `unstaged`, `replicated`,
    /// `waiting`, `in-progress`, `applied`, `activated`, `recovered`, `failed`, `stranded`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Offline => "offline",
            Outcome::UpToDate => "up-to-date",
            Outcome::TrustUpdated => "trust-updated",
            Outcome::Unstaged => "unstaged",
            Outcome::Replicated => "replicated",
            Outcome::Waiting => "waiting",
            Outcome::InProgress => "in-progress",
            Outcome::Applied => "applied",
            Outcome::Activated => "activated",
            Outcome::Recovered => "recovered",
            Outcome::Failed => "failed",
            Outcome::Stranded => "stranded",
        }
    }

    fn of(standing: &Standing) -> Self {
        match standing {
            Standing::UpToDate => Outcome::UpToDate,
            Standing::TrustUpdated => Outcome::TrustUpdated,
            Standing::Unstaged => Outcome::Unstaged,
            Standing::Replicated => Outcome::Replicated,
            Standing::Waiting { .. } => Outcome::Waiting,
            Standing::Applied => Outcome::Applied,
            Standing::Activated => Outcome::Activated,
            Standing::Recovered => Outcome::Recovered,
            Standing::Failed { .. } => Outcome::Failed,
            Standing::Stranded { .. } => Outcome::Stranded,
            _ => Outcome::InProgress,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl PartialEq<str> for Outcome {
    fn eq(&self, other: &str) -> bool {
        self.name() == other
    }
}

/// What happened to one member in a refresh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RefreshOutcome {
    /// The member.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Details (a failure's reason, what it waits for).
    pub detail: Option<String>,
}

/// Members whose conversations are answered in one transaction.
const BATCH: usize = 5_000;

/// The most messages one member sends in one refresh: a poll, then at most a report for each
/// instruction (make a key, stage; or recover, make a key, install), with room to spare.
const MAX_ROUNDS: usize = 8;

/// One member's conversation in a refresh.
struct Conversation {
    name: String,
    /// Whether the agent's own scheduled work (its switch, N5) ran.
    timers_ran: bool,
    /// The message to send next; `None` once the zone answered "nothing".
    next: Option<Vec<u8>>,
    /// The most telling standing so far.
    outcome: Option<(Outcome, Option<String>)>,
}

impl LoopbackTransport {
    /// Runs `f` on `member`'s agent, loaded from and saved back to its files when the fleet
    /// is backed by a directory (one caller at a time per member).
    /// `f` says whether it changed the agent: an unchanged agent is not saved.
    fn act<R>(
        &self,
        member: &str,
        f: impl FnOnce(&mut Agent) -> (R, bool),
    ) -> Result<R, AgentError> {
        match &self.dir {
            Some(dir) => {
                let file_lock = self.file_lock(member);
                let _guard = lock(&file_lock);
                let mut agent = dir.load(member)?;
                let (r, changed) = f(&mut agent);
                if changed {
                    dir.save(&agent)?;
                }
                Ok(r)
            }
            None => Ok(self.with_agent_mut(member, |a| f(a).0)),
        }
    }

    /// `fleet refresh`: each member named (all when `names` is empty) does what its agent
    /// does on a host of its own (N1): it runs its scheduled work by its clock (a switch at
    /// the activation time, N5), polls the zone with its state, carries out each instruction
    /// and reports, until the zone has nothing more for it. Every message goes through the
    /// zone's inbound entry point ([`ZoneService::answer_batch`]) serialised and parsed as on
    /// a wire, so nothing works here that would not work over a network. Members are taken
    /// in O8's order, in batches that the zone answers in one transaction each.
    ///
    /// `opts` makes some agents fail or stay offline; `progress(done, total)` is called after
    /// each batch.
    pub fn refresh<S: Storage, T: Transport, C: Clock>(
        &self,
        svc: &ZoneService<S, T, C>,
        names: &[String],
        opts: &RefreshOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> crate::error::Result<Vec<RefreshOutcome>> {
        let order = svc.member_order(names)?;
        let fold = |set: &BTreeSet<String>| -> crate::error::Result<BTreeSet<String>> {
            if set.is_empty() {
                return Ok(BTreeSet::new());
            }
            Ok(svc
                .member_order(&set.iter().cloned().collect::<Vec<_>>())?
                .into_iter()
                .collect())
        };
        let fail = fold(&opts.fail)?;
        let offline = fold(&opts.offline)?;
        let total = order.len();
        let mut outcomes = Vec::with_capacity(total);
        let mut anchors = SharedAnchors::default();
        for chunk in order.chunks(BATCH) {
            let now = svc.now();
            let mut talks: Vec<Conversation> = Vec::with_capacity(chunk.len());
            for name in chunk {
                let mut talk = Conversation {
                    name: name.clone(),
                    timers_ran: false,
                    next: None,
                    outcome: None,
                };
                if offline.contains(name) {
                    talk.outcome = Some((Outcome::Offline, None));
                } else {
                    // It polls first, so that it hears of a moved activation time (B2) before
                    // its own timer would switch it; its timer runs once the zone has nothing
                    // more for it.
                    let polled = self.act(name, |agent| (agent.poll(now), false));
                    match polled {
                        Ok(msg) => talk.next = Some(protocol::encode(&msg)),
                        Err(e) => {
                            talk.outcome = Some((Outcome::Failed, Some(e.to_string())));
                        }
                    }
                }
                talks.push(talk);
            }
            for _round in 0..MAX_ROUNDS {
                let mut batch = Vec::new();
                let mut who = Vec::new();
                for (i, t) in talks.iter_mut().enumerate() {
                    if let Some(bytes) = t.next.take() {
                        // As a zone server would: parse what came over the wire.
                        match protocol::decode_agent_message(&bytes) {
                            Ok(msg) => {
                                batch.push((t.name.clone(), msg));
                                who.push(i);
                            }
                            Err(e) => t.outcome = Some((Outcome::Failed, Some(e.to_string()))),
                        }
                    }
                }
                if batch.is_empty() {
                    break;
                }
                let answers = svc.answer_batch(batch)?;
                let now = svc.now();
                let mut jobs: Vec<(usize, Job)> = Vec::new();
                for (i, answer) in who.into_iter().zip(answers) {
                    let t = &mut talks[i];
                    let answer = match answer {
                        Ok(a) => protocol::decode_zone_answer(&protocol::encode(&a)),
                        Err(e) => {
                            t.outcome = Some((Outcome::Failed, Some(e.to_string())));
                            continue;
                        }
                    };
                    let answer = match answer {
                        Ok(mut a) => {
                            anchors.share(&mut a.instruction);
                            a
                        }
                        Err(e) => {
                            t.outcome = Some((Outcome::Failed, Some(e.to_string())));
                            continue;
                        }
                    };
                    let outcome = Outcome::of(&answer.standing);
                    if !matches!(outcome, Outcome::UpToDate | Outcome::InProgress)
                        || t.outcome.is_none()
                    {
                        t.outcome = Some((outcome, answer.standing.detail().map(str::to_string)));
                    }
                    if answer.instruction == Instruction::Nothing {
                        if t.timers_ran {
                            continue;
                        }
                        t.timers_ran = true;
                        jobs.push((i, Job::Timer));
                        continue;
                    }
                    jobs.push((i, Job::Follow(answer.instruction)));
                }
                // Each agent does its part on its own host: the heavy parts (a key, a CSR, a
                // chain to check) side by side, the light ones here, in order.
                let (heavy, light): (Vec<_>, Vec<_>) =
                    jobs.drain(..).partition(|(_, job)| job.is_heavy());
                let mut done: Vec<(usize, JobDone)> = light
                    .into_iter()
                    .map(|(i, job)| {
                        let failing = fail.contains(&talks[i].name);
                        (i, self.run_job(&talks[i].name, job, failing, now))
                    })
                    .collect();
                let workers = std::thread::available_parallelism()
                    .map_or(1, usize::from)
                    .min(heavy.len());
                if workers <= 1 {
                    for (i, job) in heavy {
                        let failing = fail.contains(&talks[i].name);
                        done.push((i, self.run_job(&talks[i].name, job, failing, now)));
                    }
                } else {
                    let next = std::sync::atomic::AtomicUsize::new(0);
                    let heavy = Mutex::new(heavy.into_iter().map(Some).collect::<Vec<_>>());
                    let talks = &talks;
                    let fail = &fail;
                    let work = || {
                        let mut mine = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((i, job)) = lock(&heavy).get_mut(k).and_then(Option::take)
                            else {
                                break;
                            };
                            let failing = fail.contains(&talks[i].name);
                            mine.push((i, self.run_job(&talks[i].name, job, failing, now)));
                        }
                        mine
                    };
                    std::thread::scope(|scope| {
                        let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
                        done.extend(work());
                        for h in helpers {
                            done.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                        }
                    });
                }
                for (i, d) in done {
                    let t = &mut talks[i];
                    match d.result {
                        Ok(Some(msg)) => t.next = Some(protocol::encode(&msg)),
                        Ok(None) => {}
                        // The agent could not keep what it did (its files): it says so, from
                        // the state it still has.
                        Err(e) => match d
                            .follow
                            .then(|| self.with_agent(&t.name, |a| a.state()))
                            .flatten()
                        {
                            Some(state) => {
                                let msg = AgentMessage::new(t.name.clone(), now, state)
                                    .with_report(Some(Report::Failed {
                                        op_id: d.op_id,
                                        reason: e.to_string(),
                                    }));
                                t.next = Some(protocol::encode(&msg));
                            }
                            None => t.outcome = Some((Outcome::Failed, Some(e.to_string()))),
                        },
                    }
                }
            }
            for t in talks {
                let (outcome, detail) = t.outcome.unwrap_or((Outcome::InProgress, None));
                outcomes.push(RefreshOutcome {
                    name: t.name,
                    outcome,
                    detail,
                });
            }
            progress(outcomes.len(), total);
        }
        Ok(outcomes)
    }
}

/// What an agent does after an answer.
enum Job {
    /// Its own timer (a switch at the activation time, N5).
    Timer,
    /// The zone's instruction.
    Follow(Instruction),
}

impl Job {
    /// A key to make, or a chain to check: worth a thread of its own.
    fn is_heavy(&self) -> bool {
        match self {
            Job::Follow(
                Instruction::MakeKey { .. }
                | Instruction::Install { .. }
                | Instruction::StageManual { .. },
            ) => true,
            Job::Follow(Instruction::Stage { chain, .. }) => !chain.is_empty(),
            _ => false,
        }
    }
}

/// What an agent's job gave: its next message, if any.
struct JobDone {
    result: Result<Option<AgentMessage>, AgentError>,
    /// Whether it followed an instruction (a failure to keep it is then reported).
    follow: bool,
    op_id: Option<u64>,
}

impl LoopbackTransport {
    /// Runs one agent's job (`failing`: the agent reports a failure instead).
    fn run_job(&self, name: &str, job: Job, failing: bool, now: Timestamp) -> JobDone {
        match job {
            Job::Timer => JobDone {
                result: self.act(name, |agent| {
                    let due = agent.poll_timeout().is_some_and(|at| now >= at);
                    if !due {
                        return (None, false);
                    }
                    if failing {
                        let op_id = agent.staged().map(|s| s.op_id);
                        let msg = agent.poll(now).with_report(Some(Report::Failed {
                            op_id,
                            reason: "the member failed to switch to the staged update".into(),
                        }));
                        return (Some(msg), false);
                    }
                    let switched = agent.handle_timeout(now);
                    (Some(agent.poll(now)), switched)
                }),
                follow: false,
                op_id: None,
            },
            Job::Follow(instruction) => {
                let op_id = instruction.op_id();
                let result = self.act(name, |agent| {
                    if failing
                        && !matches!(
                            instruction,
                            Instruction::Trust { .. } | Instruction::Unstage { .. }
                        )
                    {
                        let msg = agent.poll(now).with_report(Some(Report::Failed {
                            op_id,
                            reason: "the agent reported a failure while applying the update".into(),
                        }));
                        return (Some(msg), false);
                    }
                    (agent.follow(instruction, now), true)
                });
                JobDone {
                    result,
                    follow: true,
                    op_id,
                }
            }
        }
    }
}

/// The certificates of parsed answers, kept once for the whole in-process fleet.
///
/// Every answer is parsed from its JSON as on a wire, so each of them brings its own copy of
/// the zone's anchors; agents on hosts of their own would each keep theirs, but 100,000
/// agents in one process would hold 100,000 copies of the same two or three CA certificates
/// (about 200 MB at the scale bench's size, issue 10 item 7). After parsing, a certificate
/// equal to one already seen in this refresh is replaced by that one (clones share their
/// bytes), so the agents keep exactly what they were sent, held once.
#[derive(Default)]
struct SharedAnchors(Vec<CertificateDer>);

impl SharedAnchors {
    /// At most this many distinct certificates are kept (anchors are few; servers' leaves,
    /// each different, are not kept beyond it).
    const MAX: usize = 64;

    fn share(&mut self, instruction: &mut Instruction) {
        match instruction {
            Instruction::Nothing | Instruction::MakeKey { .. } => {}
            Instruction::Trust { trust } | Instruction::Unstage { trust, .. } => {
                self.all(trust);
            }
            Instruction::Stage {
                trust_now,
                trust_after,
                ..
            } => {
                self.all(trust_now);
                self.all(trust_after);
            }
            Instruction::StageManual {
                trust_now,
                trust_after,
                anchor,
                ..
            } => {
                self.all(trust_now);
                self.all(trust_after);
                self.one(anchor);
            }
            Instruction::Recover {
                new_ca,
                trust_after,
                ..
            } => {
                self.one(new_ca);
                self.all(trust_after);
            }
            Instruction::Install { trust, .. } => self.all(trust),
        }
    }

    fn all(&mut self, certs: &mut [CertificateDer]) {
        for c in certs {
            self.one(c);
        }
    }

    fn one(&mut self, cert: &mut CertificateDer) {
        match self.0.iter().find(|k| *k == cert) {
            Some(kept) => *cert = kept.clone(),
            None if self.0.len() < Self::MAX => self.0.push(cert.clone()),
            None => {}
        }
    }
}

/// A transport that is an in-process fleet ([`LoopbackTransport`], or a reference or `Arc`
/// to one).
pub trait InProcessFleet {
    /// The fleet.
    fn fleet(&self) -> &LoopbackTransport;
}

impl InProcessFleet for LoopbackTransport {
    fn fleet(&self) -> &LoopbackTransport {
        self
    }
}

impl<F: InProcessFleet + ?Sized> InProcessFleet for &F {
    fn fleet(&self) -> &LoopbackTransport {
        (**self).fleet()
    }
}

impl<F: InProcessFleet + ?Sized> InProcessFleet for Arc<F> {
    fn fleet(&self) -> &LoopbackTransport {
        (**self).fleet()
    }
}

/// `svc.refresh(...)` for a zone whose members are the in-process fleet: the same as
/// [`LoopbackTransport::refresh`] on the service's own transport.
pub trait Fleet {
    /// See [`LoopbackTransport::refresh`].
    fn refresh(
        &self,
        names: &[String],
        opts: &RefreshOptions,
        progress: impl FnMut(usize, usize),
    ) -> crate::error::Result<Vec<RefreshOutcome>>;
}

impl<S: Storage, T: Transport + InProcessFleet, C: Clock> Fleet for ZoneService<S, T, C> {
    fn refresh(
        &self,
        names: &[String],
        opts: &RefreshOptions,
        progress: impl FnMut(usize, usize),
    ) -> crate::error::Result<Vec<RefreshOutcome>> {
        self.transport()
            .fleet()
            .refresh(self, names, opts, progress)
    }
}
