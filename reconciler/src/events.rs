//! What the engine tells the world as it goes: [`Event`]s to a [`Notifier`] (the progress
//! display, `/status` and the metrics, the logs, Slack), and the typed reasons they carry,
//! [`StepOutcome`] and [`Failure`].
//!
//! Types at the seam: an outcome or a failure is an enum from where it happens to every
//! consumer, which renders it; nothing is flattened into a string and parsed back. A gate
//! failure keeps its heights, a step failure its provider error, a budget stop the nodes that
//! were down.

use crate::clock::Millis;
use crate::health::{GateFailure, Verdict};
use crate::node::NodeKey;
use crate::plan::{Action, ApprovalReason, ApprovalTarget};
use crate::provider::ProviderError;
use fleet_repo_schema::human_ms;
use fleet_repo_schema::values::{CoinName, Version, Zone};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex};

/// One validation error of a revision, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocatedError {
    /// File.
    pub file: String,
    /// Line (1-based).
    pub line: usize,
    /// Column (1-based).
    pub column: usize,
    /// Code (`E012`…).
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl LocatedError {
    /// From a diagnostic of the loader.
    pub fn of(d: &fleet_repo_schema::Diagnostic) -> LocatedError {
        LocatedError {
            file: d.file.clone(),
            line: d.span.start.line as usize,
            column: d.span.start.col as usize,
            code: d.code.as_str().to_string(),
            message: d.message.clone(),
            help: d.help.clone(),
        }
    }
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} {}",
            self.file, self.line, self.column, self.code, self.message
        )
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum StepOutcome {
    /// It changed the world.
    Done,
    /// The world already was as asked; nothing was changed.
    AlreadyDone,
    /// The provider refused or failed it.
    Failed {
        /// Why.
        error: ProviderError,
    },
}

impl StepOutcome {
    /// `done`, `already-done`, `error`: the metric label and the journal's word.
    pub fn label(&self) -> &'static str {
        match self {
            StepOutcome::Done => "done",
            StepOutcome::AlreadyDone => "already-done",
            StepOutcome::Failed { .. } => "error",
        }
    }
}

impl fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepOutcome::Done => f.write_str("done"),
            StepOutcome::AlreadyDone => f.write_str("already-done"),
            StepOutcome::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

/// When a gate failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatePhase {
    /// After the node's own step.
    AfterStep,
    /// During its zone's bake.
    Bake,
    /// When an earlier zone was checked before the coin's first wave.
    EarlierZone,
}

/// A rollback after a failed gate (`rollout.on_failure: rollback`): the nodes of the failed
/// wave that were upgraded and not in sync, each restarted at the version it ran before and
/// gated again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The failed wave's zone.
    pub zone: Zone,
    /// Each node rolled back, and the version it went back to.
    pub nodes: Vec<RolledBack>,
    /// How it ended.
    pub outcome: RollbackOutcome,
}

/// One node of a [`Rollback`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    /// Node.
    pub node: NodeKey,
    /// The version whose gate failed.
    pub from: Version,
    /// The version it ran before, restarted.
    pub to: Version,
    /// Its data volume put back as its before-upgrade snapshot had it.
    #[serde(default)]
    pub restored: bool,
}

impl fmt::Display for RolledBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} → {}", self.node, self.from, self.to)?;
        if self.restored {
            write!(f, " on its before-upgrade snapshot")?;
        }
        Ok(())
    }
}

/// How a [`Rollback`] ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RollbackOutcome {
    /// Every node rolled back is in sync at its previous version.
    InSync,
    /// A node's restart or its gate failed: it is left for a person.
    Failed {
        /// Why (boxed: a failure carries its readings).
        failure: Box<Failure>,
    },
    /// Stopped between steps on request (the next pass plans from what it finds).
    Cancelled,
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(RolledBack::to_string).collect();
        write!(f, "rolled back {}: ", nodes.join(", "))?;
        match &self.outcome {
            RollbackOutcome::InSync => f.write_str("in sync again at the previous version"),
            RollbackOutcome::Failed { failure } => {
                write!(f, "the rollback failed too, left for a person: {failure}")
            }
            RollbackOutcome::Cancelled => f.write_str("cancelled before it was done"),
        }
    }
}

/// Why a coin's rollout stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// A node failed its health gate (the failure keeps its heights).
    Gate {
        /// Zone.
        zone: Zone,
        /// Node.
        node: NodeKey,
        /// When.
        phase: GatePhase,
        /// How.
        failure: GateFailure,
    },
    /// A step failed at the provider.
    Step {
        /// Zone (None: a DNS clean-up).
        zone: Option<Zone>,
        /// Node (None: a DNS clean-up of a record that points at no node).
        node: Option<NodeKey>,
        /// `upgrade`, `launch`, …
        action: String,
        /// The provider's error.
        error: ProviderError,
    },
    /// Other nodes of the coin stayed down for `stall_timeout`, so the wave could not start
    /// within `max_unavailable`.
    Budget {
        /// The wave's zone.
        zone: Zone,
        /// The coin's other nodes not in sync.
        others_down: Vec<NodeKey>,
        /// Nodes the wave would take down.
        taking: usize,
        /// The coin's `max_unavailable`.
        max_unavailable: u32,
        /// How long it waited.
        waited_ms: u64,
    },
    /// Probe `none`: the instances did not run within `sync_timeout`.
    NotRunning {
        /// Zone.
        zone: Zone,
        /// The nodes that did not.
        nodes: Vec<NodeKey>,
        /// The timeout.
        after_ms: u64,
    },
    /// Observing the fleet failed.
    Observe {
        /// Why.
        error: ProviderError,
    },
    /// The journal could not be written: fleet stops rather than act without a record.
    Journal {
        /// Why.
        error: String,
    },
    /// The plan names a coin or slot the desired state does not have (a bug).
    Inconsistent {
        /// What.
        detail: String,
    },
}

impl Failure {
    /// The zone it happened in, if one.
    pub fn zone(&self) -> Option<&Zone> {
        match self {
            Failure::Gate { zone, .. }
            | Failure::Budget { zone, .. }
            | Failure::NotRunning { zone, .. } => Some(zone),
            Failure::Step { zone, .. } => zone.as_ref(),
            Failure::Observe { .. } | Failure::Journal { .. } | Failure::Inconsistent { .. } => {
                None
            }
        }
    }

    /// The node it happened on, if one.
    pub fn node(&self) -> Option<&NodeKey> {
        match self {
            Failure::Gate { node, .. } => Some(node),
            Failure::Step { node, .. } => node.as_ref(),
            _ => None,
        }
    }

    /// The node's last heights, (height, height to reach), when a gate failed.
    pub fn heights(&self) -> (Option<u64>, Option<u64>) {
        match self {
            Failure::Gate {
                failure: GateFailure::Stalled { height, target, .. },
                ..
            }
            | Failure::Gate {
                failure: GateFailure::SyncTimeout { height, target, .. },
                ..
            } => (*height, *target),
            _ => (None, None),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Gate {
                node,
                phase,
                failure,
                ..
            } => match phase {
                GatePhase::Bake => write!(f, "{node} fell out of sync during the bake: {failure}"),
                GatePhase::AfterStep | GatePhase::EarlierZone => {
                    write!(f, "{node} failed its health gate: {failure}")
                }
            },
            Failure::Step {
                node,
                action,
                error,
                ..
            } => match node {
                Some(n) => write!(f, "{action} of {n}: {error}"),
                None => write!(f, "{action}: {error}"),
            },
            Failure::Budget {
                others_down,
                taking,
                max_unavailable,
                waited_ms,
                ..
            } => {
                write!(
                    f,
                    "{}; gave up after stall_timeout",
                    BudgetWait {
                        others_down: others_down.clone(),
                        taking: *taking,
                        max_unavailable: *max_unavailable,
                    }
                )?;
                write!(f, " ({})", human_ms(*waited_ms))
            }
            Failure::NotRunning {
                nodes, after_ms, ..
            } => write!(
                f,
                "instances not running within sync_timeout ({}): {}",
                human_ms(*after_ms),
                join(nodes)
            ),
            Failure::Observe { error } => write!(f, "observe: {error}"),
            Failure::Journal { error } => f.write_str(error),
            Failure::Inconsistent { detail } => write!(f, "plan and repository disagree: {detail}"),
        }
    }
}

fn join(keys: &[NodeKey]) -> String {
    keys.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a wave waits before taking nodes down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetWait {
    /// The coin's other nodes not in sync.
    pub others_down: Vec<NodeKey>,
    /// Nodes the wave would take down.
    pub taking: usize,
    /// The coin's `max_unavailable`.
    pub max_unavailable: u32,
}

impl fmt::Display for BudgetWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.others_down.len();
        write!(
            f,
            "{n} other node{} not in sync ({}); taking {} more down would exceed max_unavailable {}",
            if n == 1 { " is" } else { "s are" },
            join(&self.others_down),
            self.taking,
            self.max_unavailable
        )
    }
}

/// What the engine reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A coin's rollout begins.
    RolloutStarted {
        /// Coin.
        coin: CoinName,
        /// Commit of the fleet repository the plan came from.
        commit: String,
        /// Versions now.
        from: Vec<Version>,
        /// Target (None: the coin is being removed).
        to: Option<Version>,
        /// Zones in order.
        zones: Vec<Zone>,
        /// Steps.
        steps: usize,
    },
    /// The rollout waits for a person.
    ApprovalNeeded {
        /// Coin.
        coin: CoinName,
        /// What the approval is for.
        target: ApprovalTarget,
        /// Commit.
        commit: String,
        /// Why.
        reasons: Vec<ApprovalReason>,
        /// Versions running now.
        from: Vec<Version>,
        /// Zones the rollout would go through, in order.
        zones: Vec<Zone>,
        /// Steps it would take.
        steps: usize,
    },
    /// A step is about to run.
    StepStarted {
        /// Coin.
        coin: CoinName,
        /// Node (None: a DNS clean-up of a record that points at no node).
        node: Option<NodeKey>,
        /// What.
        action: Action,
    },
    /// A step ran.
    StepFinished {
        /// Coin.
        coin: CoinName,
        /// Node.
        node: Option<NodeKey>,
        /// Action name (`upgrade`, …).
        action: &'static str,
        /// How it ended.
        outcome: StepOutcome,
    },
    /// Waiting for other nodes of the coin to recover before taking more down.
    Waiting {
        /// Coin.
        coin: CoinName,
        /// The wave's zone.
        zone: Zone,
        /// Why.
        wait: BudgetWait,
    },
    /// A gate reading.
    Gate {
        /// Coin.
        coin: CoinName,
        /// Zone.
        zone: Zone,
        /// Node.
        node: NodeKey,
        /// What the gate said.
        verdict: Verdict,
    },
    /// A zone's bake progresses.
    Baking {
        /// Coin.
        coin: CoinName,
        /// Zone.
        zone: Zone,
        /// Healthy for this long.
        elapsed_ms: u64,
        /// Of this long.
        bake_ms: u64,
    },
    /// A zone passed its gate and bake.
    ZonePassed {
        /// Coin.
        coin: CoinName,
        /// Zone.
        zone: Zone,
        /// From its first step to the end of its bake.
        took_ms: u64,
    },
    /// A coin's rollout completed.
    RolloutFinished {
        /// Coin.
        coin: CoinName,
        /// How long it took.
        took_ms: u64,
    },
    /// A commit of the fleet repository failed validation: nothing of it is applied, the
    /// last good commit stays in force (sent by `fleet run`, not the executor).
    RepoInvalid {
        /// The invalid commit.
        commit: String,
        /// The commit still in force, if any.
        in_force: Option<String>,
        /// Its errors.
        errors: Vec<LocatedError>,
    },
    /// A coin's rollout stopped on a failure.
    RolloutFailed {
        /// Coin.
        coin: CoinName,
        /// Why.
        failure: Failure,
    },
    /// After a failed gate, the failed wave's upgraded nodes were rolled back
    /// (`rollout.on_failure: rollback`; sent after the coin's [`Event::RolloutFailed`]).
    RolledBack {
        /// Coin.
        coin: CoinName,
        /// Which nodes, to what, and how it ended.
        rollback: Rollback,
    },
    /// The node watch opened, updated or resolved an incident (sent by `fleet run`'s node
    /// watch, not the executor).
    Incident {
        /// The incident as it is now.
        incident: crate::care::incident::Incident,
        /// What changed.
        change: crate::care::incident::Change,
    },
    /// The node watch took a scheduled snapshot of a node's data volume (`snapshots.every`).
    SnapshotTaken {
        /// Coin.
        coin: CoinName,
        /// Node.
        node: NodeKey,
        /// The snapshot, when taken.
        snapshot_id: Option<String>,
        /// How it ended.
        outcome: StepOutcome,
    },
    /// The node watch deleted a scheduled snapshot beyond `snapshots.keep`.
    SnapshotDeleted {
        /// Coin.
        coin: CoinName,
        /// The snapshot.
        snapshot_id: String,
        /// How it ended.
        outcome: StepOutcome,
    },
    /// The node watch found a coin's data volumes filling: what it asked for and did.
    DiskGrow {
        /// Coin.
        coin: CoinName,
        /// The figures and the size asked for.
        order: crate::care::disk::GrowOrder,
        /// Each node's volume grown at once (`disk.auto_grow`), and how it went.
        grown: Vec<(NodeKey, StepOutcome)>,
        /// The pull request that asks for (or records) the size.
        proposal: crate::care::disk::Proposal,
    },
    /// The node watch restarted a node's daemon.
    Healed {
        /// Coin.
        coin: CoinName,
        /// Node.
        node: NodeKey,
        /// Why.
        reason: crate::care::heal::HealReason,
        /// The version restarted.
        version: Version,
        /// How the restart ended.
        outcome: StepOutcome,
    },
}

impl Event {
    /// The coin it is about, if one.
    pub fn coin(&self) -> Option<&CoinName> {
        match self {
            Event::RolloutStarted { coin, .. }
            | Event::ApprovalNeeded { coin, .. }
            | Event::StepStarted { coin, .. }
            | Event::StepFinished { coin, .. }
            | Event::Waiting { coin, .. }
            | Event::Gate { coin, .. }
            | Event::Baking { coin, .. }
            | Event::ZonePassed { coin, .. }
            | Event::RolloutFinished { coin, .. }
            | Event::RolloutFailed { coin, .. }
            | Event::RolledBack { coin, .. }
            | Event::Healed { coin, .. }
            | Event::SnapshotTaken { coin, .. }
            | Event::SnapshotDeleted { coin, .. }
            | Event::DiskGrow { coin, .. } => Some(coin),
            Event::Incident { incident, .. } => Some(incident.subject.coin()),
            Event::RepoInvalid { .. } => None,
        }
    }
}

/// Receives events. Must not block: a slow consumer queues.
pub trait Notifier: Send + Sync {
    /// One event, at `at_ms`.
    fn notify(&self, at_ms: Millis, event: &Event);
}

/// Notifies nobody.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _: Millis, _: &Event) {}
}

/// Keeps every event (tests, the demo's summary).
#[derive(Debug, Default)]
pub struct RecordingNotifier(Mutex<Vec<(Millis, Event)>>);

impl RecordingNotifier {
    /// Every event so far.
    pub fn events(&self) -> Vec<(Millis, Event)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, at_ms: Millis, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at_ms, event.clone()));
    }
}

/// Several notifiers.
pub struct Fanout(pub Vec<Arc<dyn Notifier>>);

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fanout({})", self.0.len())
    }
}

impl Notifier for Fanout {
    fn notify(&self, at_ms: Millis, event: &Event) {
        for n in &self.0 {
            n.notify(at_ms, event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::WaitReason;

    fn key(z: &str, i: u32) -> NodeKey {
        NodeKey::parse("bitcoin", z, i).unwrap()
    }

    #[test]
    fn failures_say_what_happened_and_keep_their_readings() {
        let gate = Failure::Gate {
            zone: Zone::parse("eu-central-1b").unwrap(),
            node: key("eu-central-1b", 1),
            phase: GatePhase::AfterStep,
            failure: GateFailure::Stalled {
                height: Some(870_000),
                target: Some(870_900),
                for_ms: 1_800_000,
                waiting: WaitReason::BlocksBehindHeaders,
            },
        };
        assert_eq!(gate.heights(), (Some(870_000), Some(870_900)));
        assert_eq!(
            gate.to_string(),
            "bitcoin/eu-central-1b/1 failed its health gate: height stuck at 870000 for 30m while validating blocks up to its headers (stall_timeout)"
        );
        let budget = Failure::Budget {
            zone: Zone::parse("eu-central-1a").unwrap(),
            others_down: vec![key("eu-central-1c", 1)],
            taking: 1,
            max_unavailable: 1,
            waited_ms: 1_800_000,
        };
        assert!(
            budget
                .to_string()
                .starts_with("1 other node is not in sync (bitcoin/eu-central-1c/1)"),
            "{budget}"
        );
        assert!(budget.to_string().contains("gave up after stall_timeout"));
        assert_eq!(budget.node(), None);
        // Carried as data: a round trip through JSON (the journal) keeps every field.
        let back: Failure = serde_json::from_str(&serde_json::to_string(&gate).unwrap()).unwrap();
        assert_eq!(back, gate);
    }

    #[test]
    fn step_outcomes_have_one_label_each() {
        let failed = StepOutcome::Failed {
            error: ProviderError::Setup("x".into()),
        };
        assert_eq!(
            [
                StepOutcome::Done.label(),
                StepOutcome::AlreadyDone.label(),
                failed.label()
            ],
            ["done", "already-done", "error"]
        );
    }
}
