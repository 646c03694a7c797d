//! The in-process transport: every member's [`Agent`] lives in this process. With a root
//! directory, each call loads the member's state from its files and saves it back, so the
//! files under `--root` are the agents' real, durable state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::{Transport, TransportError};
use crate::agent::files::MemberDir;
use crate::agent::{Agent, AgentRequest, AgentResponse};

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
