//! Coverage-gated activation (B2): an operation may activate only once enough of its members
//! have applied the update. At the activation time an unmet gate postpones activation by a
//! step and says why; it never postpones past a deadline (the current CA's expiry minus a
//! margin), where it either activates and reports the stranded members or holds and raises an
//! alarm, as the administrator chose. Plain data and pure functions: the service counts the
//! members ([`Coverage`]) and the operation decides ([`super::Op::handle_timeout`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::OpError;
use crate::clock::Timestamp;

/// How many member names a verdict keeps per status (the counts are always complete).
pub const NAMES_PER_STATUS: usize = 20;

/// What the servers in the update must have done before activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "servers", rename_all = "snake_case")]
pub enum ServerQuota {
    /// Every Primary Server and Authentication Satellite in the update has applied it.
    All,
    /// At least this many of each (capped at how many are in the update).
    AtLeast {
        /// Primary Servers.
        primary: u32,
        /// Authentication Satellites.
        auth_satellite: u32,
    },
}

/// What happens when the deadline comes and the gate is still not met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtDeadline {
    /// Activate anyway and report the stranded members.
    Activate,
    /// Stay put and raise an alarm: the administrator decides (cancel, ignore members, or
    /// wait for them; activation follows as soon as the gate is met).
    Hold,
}

impl std::str::FromStr for AtDeadline {
    type Err = OpError;
    fn from_str(s: &str) -> Result<Self, OpError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "activate" => Ok(AtDeadline::Activate),
            "hold" => Ok(AtDeadline::Hold),
            other => Err(OpError::Gate(format!(
                "{other:?} is not a deadline policy: choose activate or hold"
            ))),
        }
    }
}

/// The administrator's gate (B2). Made with [`Gate::new`] and the `with_*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Gate {
    /// The least percentage (0 to 100) of the update's other members (managed devices and
    /// Content Satellites, not counting ignored ones) that must have applied it.
    pub min_devices_percent: u8,
    /// What the Primary Servers and Authentication Satellites must have done.
    pub servers: ServerQuota,
    /// How far an unmet gate moves activation, in seconds.
    pub step_secs: u64,
    /// The deadline is the current CA's expiry minus this many seconds.
    pub deadline_margin_secs: u64,
    /// What happens at the deadline.
    pub at_deadline: AtDeadline,
}

impl Gate {
    /// A gate that wants `min_devices_percent` of the devices and the servers' `servers`,
    /// with defaults: an unmet gate postpones by one hour, the deadline is a week before the
    /// current CA expires, and at the deadline activation happens anyway.
    pub fn new(min_devices_percent: u8, servers: ServerQuota) -> Self {
        Gate {
            min_devices_percent,
            servers,
            step_secs: 3600,
            deadline_margin_secs: 7 * 24 * 3600,
            at_deadline: AtDeadline::Activate,
        }
    }

    /// How far an unmet gate moves activation, in seconds.
    pub fn with_step_secs(mut self, step_secs: u64) -> Self {
        self.step_secs = step_secs;
        self
    }

    /// The deadline is the current CA's expiry minus this many seconds.
    pub fn with_deadline_margin_secs(mut self, deadline_margin_secs: u64) -> Self {
        self.deadline_margin_secs = deadline_margin_secs;
        self
    }

    /// What happens at the deadline.
    pub fn with_at_deadline(mut self, at_deadline: AtDeadline) -> Self {
        self.at_deadline = at_deadline;
        self
    }

    /// Checks the settings: a percentage of at most 100, a step of at least a minute.
    pub fn check(&self) -> Result<(), OpError> {
        if self.min_devices_percent > 100 {
            return Err(OpError::Gate(format!(
                "a gate of {}% of devices is impossible: choose 0 to 100",
                self.min_devices_percent
            )));
        }
        if self.step_secs < 60 {
            return Err(OpError::Gate(format!(
                "a postponement step of {} seconds is too short: choose at least one minute",
                self.step_secs
            )));
        }
        Ok(())
    }

    /// Checks the settings against an operation's activation and the current CA's expiry,
    /// and returns the deadline: it must come after activation, which must not be
    /// "immediate" (an expired CA cannot wait).
    pub fn check_for(
        &self,
        activation: &super::Activation,
        ca_not_after: Timestamp,
    ) -> Result<Timestamp, OpError> {
        self.check()?;
        if activation.immediate {
            return Err(OpError::Gate(
                "an \"immediate\" activation (the CA has expired) cannot wait for a gate".into(),
            ));
        }
        let deadline = self.deadline(ca_not_after);
        if deadline <= activation.at {
            return Err(OpError::GateDeadline {
                deadline,
                activation: activation.at,
            });
        }
        Ok(deadline)
    }

    /// The postponement step.
    pub fn step(&self) -> Duration {
        Duration::from_secs(self.step_secs)
    }

    /// The deadline for a current CA expiring at `ca_not_after`.
    pub fn deadline(&self, ca_not_after: Timestamp) -> Timestamp {
        ca_not_after.minus(Duration::from_secs(self.deadline_margin_secs))
    }

    /// Judges `coverage`.
    pub fn verdict(&self, coverage: &Coverage) -> Verdict {
        let mut reasons = Vec::new();
        // percent * total <= 100 * applied, in integers.
        let devices_ok = u64::from(self.min_devices_percent) * coverage.devices.total
            <= 100 * coverage.devices.applied;
        if !devices_ok {
            reasons.push(format!(
                "{} of {} devices applied ({}%), the gate needs {}%",
                coverage.devices.applied,
                coverage.devices.total,
                coverage.devices.percent(),
                self.min_devices_percent
            ));
        }
        let (need_primary, need_auth) = match self.servers {
            ServerQuota::All => (coverage.primary.total, coverage.auth_satellite.total),
            ServerQuota::AtLeast {
                primary,
                auth_satellite,
            } => (
                u64::from(primary).min(coverage.primary.total),
                u64::from(auth_satellite).min(coverage.auth_satellite.total),
            ),
        };
        for (what, count, need) in [
            ("Primary Servers", &coverage.primary, need_primary),
            (
                "Authentication Satellites",
                &coverage.auth_satellite,
                need_auth,
            ),
        ] {
            if count.applied < need {
                reasons.push(format!(
                    "{} of {} {what} applied, the gate needs {need}",
                    count.applied, count.total
                ));
            }
        }
        Verdict {
            met: reasons.is_empty(),
            reasons,
            coverage: coverage.clone(),
        }
    }
}

/// Applied out of total, for one kind of member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Members that applied the update.
    pub applied: u64,
    /// Members in the update (ignored ones not counted).
    pub total: u64,
}

impl Count {
    /// Applied as a whole percentage of total, rounded down (100 when there are none).
    pub fn percent(&self) -> u64 {
        (100 * self.applied).checked_div(self.total).unwrap_or(100)
    }
}

/// Members of one status that have not applied the update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// How many.
    pub count: u64,
    /// The first [`NAMES_PER_STATUS`] of them, in member order.
    pub names: Vec<String>,
}

/// How far the update has reached (B2), as the service counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Coverage {
    /// Managed devices and Content Satellites.
    pub devices: Count,
    /// Primary Servers.
    pub primary: Count,
    /// Authentication Satellites.
    pub auth_satellite: Count,
    /// Members that have not applied, by status (`assigned`, `downloading`, `failed`, ...).
    pub missing: BTreeMap<String, Missing>,
}

impl Coverage {
    /// Adds a member that has not applied the update, under its status.
    pub fn note_missing(&mut self, status: &str, name: &str) {
        let m = self.missing.entry(status.to_string()).or_default();
        m.count += 1;
        if m.names.len() < NAMES_PER_STATUS {
            m.names.push(name.to_string());
        }
    }
}

/// The gate's judgement of a coverage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Verdict {
    /// Whether the gate is met.
    pub met: bool,
    /// Why not (empty when met).
    pub reasons: Vec<String>,
    /// What was judged.
    pub coverage: Coverage,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.met {
            return write!(
                f,
                "gate met ({} of {} devices applied)",
                self.coverage.devices.applied, self.coverage.devices.total
            );
        }
        f.write_str(&self.reasons.join("; "))?;
        let missing: Vec<String> = self
            .coverage
            .missing
            .iter()
            .map(|(status, m)| {
                let more = if m.count as usize > m.names.len() {
                    ", ..."
                } else {
                    ""
                };
                format!("{status} {} ({}{more})", m.count, m.names.join(", "))
            })
            .collect();
        if !missing.is_empty() {
            write!(f, "; missing: {}", missing.join("; "))?;
        }
        Ok(())
    }
}

/// One postponement (B2): when, from when to when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postponement {
    /// When the gate was judged.
    pub at: Timestamp,
    /// The activation time it moved from.
    pub from: Timestamp,
    /// The activation time it moved to.
    pub to: Timestamp,
    /// The verdict that postponed it.
    pub verdict: Verdict,
}

/// A gate and what it has done, persisted in the operation record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GateState {
    /// The settings (`settings` in the record and in `op show`).
    #[serde(rename = "settings")]
    pub gate: Gate,
    /// Never postponed past this (the current CA's expiry minus the margin).
    pub deadline: Timestamp,
    /// The activation time the administrator asked for.
    pub requested_activation: Timestamp,
    /// Every postponement, oldest first.
    pub postponements: Vec<Postponement>,
    /// Set when the deadline came with the gate unmet and the policy is to hold.
    pub held_since: Option<Timestamp>,
    /// Set when the deadline came with the gate unmet and the policy activated anyway.
    pub activated_at_deadline: bool,
}

impl GateState {
    /// Whether a postponement moved activation from the requested time.
    pub fn activation_moved(&self) -> bool {
        !self.postponements.is_empty()
    }
}

/// What [`super::Op::handle_timeout`] did, without the operation ([`super::Timeout::outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeoutOutcome {
    /// Nothing was due (or the operation was held already).
    Idle,
    /// Activated.
    Activated,
    /// The gate was not met: activation moved to this time.
    Postponed(Timestamp),
    /// The deadline came with the gate unmet and the policy is to hold: alarm raised.
    Held,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn gate(pct: u8, servers: ServerQuota) -> Gate {
        Gate {
            min_devices_percent: pct,
            servers,
            step_secs: 3600,
            deadline_margin_secs: 0,
            at_deadline: AtDeadline::Hold,
        }
    }

    fn cov(dev: (u64, u64), ps: (u64, u64), auth: (u64, u64)) -> Coverage {
        let c = |(applied, total)| Count { applied, total };
        Coverage {
            devices: c(dev),
            primary: c(ps),
            auth_satellite: c(auth),
            missing: BTreeMap::new(),
        }
    }

    #[test]
    fn percentages_and_server_quotas() {
        let g = gate(80, ServerQuota::All);
        assert!(g.verdict(&cov((8, 10), (2, 2), (1, 1))).met);
        let v = g.verdict(&cov((7, 10), (2, 2), (1, 1)));
        assert!(!v.met);
        assert!(
            v.reasons[0].contains("7 of 10 devices applied (70%)"),
            "{v}"
        );
        let v = g.verdict(&cov((10, 10), (1, 2), (1, 1)));
        assert!(
            !v.met && v.reasons[0].contains("1 of 2 Primary Servers"),
            "{v}"
        );
        let g = gate(
            0,
            ServerQuota::AtLeast {
                primary: 1,
                auth_satellite: 5,
            },
        );
        assert!(
            g.verdict(&cov((0, 10), (1, 2), (1, 1))).met,
            "quota capped at total"
        );
        assert!(
            gate(100, ServerQuota::All)
                .verdict(&cov((0, 0), (0, 0), (0, 0)))
                .met
        );
        assert!(gate(101, ServerQuota::All).check().is_err());
    }
}
