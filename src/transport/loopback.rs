//! The in-process transport: every member's [`Agent`] lives in this process. With a root
//! directory, each call loads the member's state from its files and saves it back, so the
//! files under `--root` are the agents' real, durable state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use super::{Transport, TransportError};
use crate::agent::files::MemberDir;
use crate::agent::{Agent, AgentRequest, AgentResponse};

/// Agents in this process, in memory or backed by member files.
#[derive(Debug, Default)]
pub struct LoopbackTransport {
    agents: Mutex<BTreeMap<String, Agent>>,
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
            Some(dir) => dir.load(member).ok().map(|a| f(&a)),
            None => lock(&self.agents).get(member).map(f),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
                // One process plays every agent: serialise calls so two never interleave on
                // one member's files.
                let _guard = lock(&self.agents);
                let mut agent = dir.load(member).map_err(refused)?;
                let response = agent.handle(request).map_err(refused)?;
                dir.save(&agent).map_err(refused)?;
                Ok(response)
            }
            None => {
                let mut agents = lock(&self.agents);
                let agent = agents
                    .entry(member.to_string())
                    .or_insert_with(|| Agent::new(member));
                agent.handle(request).map_err(refused)
            }
        }
    }
}
