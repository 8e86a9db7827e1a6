//! The registry of named signals that readiness and startup are computed over.
//!
//! A signal is anything with an up/down state and rules for it: a polled dependency, a capability
//! the agent pushes (`PUT /signals/{name}`), and later the gate, supervised processes and fleet
//! results. Each has a [`SignalId`], fixed for the life of a runtime, so the hot paths index a
//! vector instead of comparing names.
//!
//! Whether a signal may touch liveness is decided by its [`Source`], not by a flag a caller could
//! set: no dependency or pushed capability can restart the process.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::config::Kind;

/// The key of one signal in a [`Registry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalId(u32);

impl SignalId {
    /// The position in the registry.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for SignalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a signal's results come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A `[[dependencies]]` entry, checked by the background poller.
    Dependency(Kind),
    /// A `[[signals]]` entry, reported by the agent over `PUT /signals/{name}` or
    /// `Handle::set_signal`.
    Pushed,
    /// `[gate]`'s circuit breaker: down while the circuit is open or half-open.
    Gate,
    /// A `[[processes]]` entry (or entrypoint mode's `agent`): up while it runs and answers its
    /// health check.
    Process,
}

impl Source {
    /// The `kind` label in `/status` and metrics: the dependency kind, or `signal`.
    pub fn label(self) -> &'static str {
        match self {
            Source::Dependency(kind) => kind.as_str(),
            Source::Pushed => "signal",
            Source::Gate => "gate",
            Source::Process => "process",
        }
    }

    /// Whether results from this source may enter liveness. Dependencies and pushed capabilities
    /// never may: failing them drains an instance, restarting it would not help. Supervised
    /// processes do not either: vitals restarts them itself, and restarting vitals' container on
    /// top would only restart them a second time.
    pub fn touches_liveness(self) -> bool {
        match self {
            Source::Dependency(_) | Source::Pushed | Source::Gate | Source::Process => false,
        }
    }
}

/// The fixed rules of one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRules {
    pub name: String,
    pub source: Source,
    /// Down makes readiness 503 when critical, degraded otherwise.
    pub critical: bool,
    /// The signal is about this instance alone (a dependency on loopback, an `exec` check): its
    /// failure says this instance is broken, not the fleet. See [`crate::lifecycle::Scope`].
    pub instance_local: bool,
    /// Consecutive failures before an up signal goes down.
    pub failure_threshold: u32,
    /// Consecutive successes before a down signal comes up again.
    pub success_threshold: u32,
    /// A result older than this counts as down (a pushed signal's `ttl`; a report may carry its
    /// own).
    pub stale_after: Duration,
    /// `fleet_outage = "degraded"`: down for the whole fleet, it degrades instead of failing.
    pub fleet_outage_degrades: bool,
}

/// Every signal of a runtime, in a fixed order: dependencies first (in file order), then pushed
/// signals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    signals: Vec<SignalRules>,
    by_name: HashMap<String, SignalId>,
}

/// Why a name cannot be reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPushable {
    /// No signal has the name; these are the declared ones.
    Unknown { declared: Vec<String> },
    /// The name is a dependency vitals checks itself.
    Checked,
}

/// Two signals with one name: names are how routes, metrics and the agent address signals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signal named {name:?} is already registered")]
pub struct DuplicateSignal {
    pub name: String,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a signal and returns its key.
    pub fn register(&mut self, rules: SignalRules) -> Result<SignalId, DuplicateSignal> {
        if self.by_name.contains_key(&rules.name) {
            return Err(DuplicateSignal { name: rules.name });
        }
        let id = SignalId(u32::try_from(self.signals.len()).expect("fewer than 2^32 signals"));
        self.by_name.insert(rules.name.clone(), id);
        self.signals.push(rules);
        Ok(id)
    }

    pub fn id(&self, name: &str) -> Option<SignalId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: SignalId) -> Option<&SignalRules> {
        self.signals.get(id.index())
    }

    pub fn len(&self) -> usize {
        self.signals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.signals.is_empty()
    }

    /// Every signal with its key, in registry order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (SignalId, &SignalRules)> {
        self.signals
            .iter()
            .enumerate()
            .map(|(i, r)| (SignalId(i as u32), r))
    }

    /// The signal an agent may report under `name`: a declared `[[signals]]` entry, not a
    /// dependency vitals checks itself.
    pub fn pushed(&self, name: &str) -> Result<SignalId, NotPushable> {
        match self.id(name).map(|id| (id, self.get(id))) {
            Some((id, Some(rules))) if rules.source == Source::Pushed => Ok(id),
            Some(_) => Err(NotPushable::Checked),
            None => Err(NotPushable::Unknown {
                declared: self
                    .names_where(|r| r.source == Source::Pushed)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            }),
        }
    }

    /// The names of the signals from `source`-like sources, for messages.
    pub fn names_where(&self, f: impl Fn(&SignalRules) -> bool) -> Vec<&str> {
        self.signals
            .iter()
            .filter(|r| f(r))
            .map(|r| r.name.as_str())
            .collect()
    }
}
