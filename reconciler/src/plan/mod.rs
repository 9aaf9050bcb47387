//! The planner: from the desired fleet and the observed one, the ordered list of what to do
//! and why, coin by coin, zone wave by zone wave.
//!
//! Architecture invariant: [`plan`] is a pure function of (desired, observed, now). It never
//! calls a provider and never reads the clock, so it is tested with plain values and property
//! tests, and bootstrap is simply the plan against an empty observation.
//!
//! Shape of a plan: per coin, first the repair waves: nodes that are down now (stopped, or
//! stopped by a type change that did not finish) are brought back up, zone by zone, since
//! that takes nothing down that is not down already and they would otherwise use up
//! `max_unavailable` until their own zone's turn. Then waves in `placement.zones` order; a
//! zone's nodes that must go down (upgrade, change of type, start, launch) are split into
//! waves of at most `max_unavailable` nodes; steps that keep the node up (growing a volume,
//! fixing a DNS record) ride along with the zone's first wave. Retirements come after every
//! zone, then DNS clean-up. Whatever fleet will not do is a [`Refusal`] with its reason, never a silent
//! skip; a coin with a refusal is not rolled out at all until the repository or the world is
//! fixed.
//!
//! The code: [`assign`] sorts an observation into slots and orphans; [`coin`] plans one
//! coin's waves; this module holds the plan's types and [`plan`] itself (orphans become
//! retirements, clean-ups or flags for a person). Unit tests next to it in `tests.rs`
//! (`cargo test -p reconciler --no-default-features plan::`).

pub mod assign;
mod coin;
#[cfg(test)]
mod tests;

pub use assign::{Observed, ObservedNode, Orphan, OrphanReason};

use crate::node::NodeKey;
use crate::node_config::ConfigPart;
use crate::provider::{DnsRecord, SnapshotInfo, tags};
use fleet_repo_schema::semver::Class;
use fleet_repo_schema::values::{CoinName, InstanceType, Version, Zone};
use fleet_repo_schema::{Approval, Desired};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Rough durations for the estimate (a plan cannot know how fast a chain catches up).
pub mod estimate {
    /// Restart at a new version and catch up the blocks missed meanwhile.
    pub const UPGRADE_MS: u64 = 120_000;
    /// Stop, change type, start, catch up.
    pub const CHANGE_TYPE_MS: u64 = 300_000;
    /// Start a stopped instance and catch up.
    pub const START_MS: u64 = 180_000;
    /// Boot a new instance (from a snapshot) and catch up.
    pub const LAUNCH_MS: u64 = 900_000;
    /// Snapshot and terminate.
    pub const RETIRE_MS: u64 = 120_000;
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// When it was made (unix ms), as given.
    pub at_ms: u64,
    /// Coins with something to do or something refused, in name order.
    pub coins: Vec<CoinPlan>,
    /// Managed things fleet will not act on by itself, for an operator to look at.
    pub flagged: Vec<Flag>,
}

impl Plan {
    /// Nothing to do, nothing refused and nothing left unjudged (flags do not count: they
    /// need a person, not a step).
    pub fn is_empty(&self) -> bool {
        self.coins.is_empty()
    }
    /// Nodes the plan could not judge.
    pub fn unjudged(&self) -> impl Iterator<Item = &Unjudged> {
        self.coins.iter().flat_map(|c| c.unjudged.iter())
    }
    /// Number of steps.
    pub fn step_count(&self) -> usize {
        self.coins.iter().map(CoinPlan::step_count).sum()
    }
    /// Whether any coin has a refusal.
    pub fn has_refusals(&self) -> bool {
        self.coins.iter().any(|c| !c.refusals.is_empty())
    }
    /// The plan of `coin`.
    pub fn coin(&self, coin: &str) -> Option<&CoinPlan> {
        self.coins.iter().find(|c| c.coin.as_str() == coin)
    }
}

/// One coin's part of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoinPlan {
    /// Coin.
    pub coin: CoinName,
    /// The version it should run (None: the coin is gone from the repository).
    pub target: Option<Version>,
    /// The versions its nodes run now that will change (sorted, distinct).
    pub from_versions: Vec<Version>,
    /// The largest version change among its nodes.
    pub class: Class,
    /// Why an approval is needed, if it is.
    pub approval: Option<ApprovalNeed>,
    /// `rollout.max_unavailable` (1 for a coin that is gone).
    pub max_unavailable: u32,
    /// The waves, in order.
    pub waves: Vec<Wave>,
    /// What fleet refuses to do for this coin (the coin is not rolled out while any exists).
    pub refusals: Vec<Refusal>,
    /// Nodes the plan could not judge now, and why; they have no step in it.
    pub unjudged: Vec<Unjudged>,
    /// Rough duration: step times plus each changed zone's bake.
    pub estimate_ms: u64,
}

impl CoinPlan {
    /// Number of steps.
    pub fn step_count(&self) -> usize {
        self.waves.iter().map(|w| w.steps.len()).sum()
    }

    /// What an approval of this plan is for: its target version, or the coin's retirement.
    pub fn approval_target(&self) -> ApprovalTarget {
        match &self.target {
            Some(v) => ApprovalTarget::Version(v.clone()),
            None => ApprovalTarget::Retire,
        }
    }

    /// The zones its rollout waves go through, in order.
    pub fn rollout_zones(&self) -> Vec<Zone> {
        let mut z: Vec<Zone> = Vec::new();
        for w in self.waves.iter().filter(|w| w.kind == WaveKind::Rollout) {
            if let Some(zone) = &w.zone
                && !z.contains(zone)
            {
                z.push(zone.clone());
            }
        }
        z
    }
}

/// Why a coin's rollout waits for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalNeed {
    /// Each reason.
    pub reasons: Vec<ApprovalReason>,
}

/// One reason for an approval. Shown (and written in JSON) as its sentence, e.g. "major
/// version change 27.2 → 28.1 (rollout.approval: major)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalReason {
    /// The version change is of a class the coin's `rollout.approval` asks a person for.
    VersionChange {
        /// The largest change among the nodes.
        class: Class,
        /// Versions now (empty: unknown).
        from: Vec<Version>,
        /// Target.
        to: Version,
        /// The coin's policy.
        policy: Approval,
    },
    /// Nodes beyond the coin's placement are retired.
    Retire {
        /// How many.
        nodes: usize,
    },
    /// The coin is gone from the repository: every node of it is retired.
    RemovedCoin {
        /// How many.
        nodes: usize,
    },
    /// Nodes are replaced by new instances (a new AMI or subnet): under any
    /// `rollout.approval` but `none`, a person agrees to the new machine image first.
    Replace {
        /// How many.
        nodes: usize,
        /// The coin's policy.
        policy: Approval,
    },
}

impl fmt::Display for ApprovalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovalReason::VersionChange {
                class,
                from,
                to,
                policy,
            } => {
                let from = if from.is_empty() {
                    "?".to_string()
                } else {
                    from.iter()
                        .map(Version::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                write!(
                    f,
                    "{} version change {from} → {to} (rollout.approval: {})",
                    class.as_str(),
                    policy.as_str()
                )
            }
            ApprovalReason::Retire { nodes } => write!(
                f,
                "retiring {nodes} node{} (snapshots are taken first)",
                plural(*nodes)
            ),
            ApprovalReason::RemovedCoin { nodes } => write!(
                f,
                "retiring {nodes} node{} of a coin removed from the repository",
                plural(*nodes)
            ),
            ApprovalReason::Replace { nodes, policy } => write!(
                f,
                "replacing {nodes} instance{} (rollout.approval: {})",
                plural(*nodes),
                policy.as_str()
            ),
        }
    }
}

impl Serialize for ApprovalReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What an approval is for: a coin's target version, or retiring a coin removed from the
/// repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApprovalTarget {
    /// Rolling out this version.
    Version(Version),
    /// Retiring every node of a coin gone from the repository.
    Retire,
}

impl ApprovalTarget {
    /// As written in the journal and in Slack's buttons: the version, or `retire`.
    pub fn as_str(&self) -> &str {
        match self {
            ApprovalTarget::Version(v) => v.as_str(),
            ApprovalTarget::Retire => "retire",
        }
    }
}

impl fmt::Display for ApprovalTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ApprovalTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What kind of wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveKind {
    /// The coin's own security group is made or its rules brought in step (first: launches
    /// and attachments need it; takes nothing down).
    Network,
    /// Nodes of a zone that are down now are brought back up (started, or their type change
    /// finished) before any rollout; they pass their gate, without a bake.
    Repair,
    /// Nodes of a placed zone change (and then pass their gate; the zone bakes).
    Rollout,
    /// Nodes no longer wanted are snapshotted and terminated.
    Retire,
    /// DNS records no node needs are removed.
    Cleanup,
}

/// A set of steps done together; the next wave starts only after this one passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wave {
    /// Kind.
    pub kind: WaveKind,
    /// The zone (None: a DNS clean-up, which has none).
    pub zone: Option<Zone>,
    /// 1-based number of this wave within its zone, and how many the zone has.
    pub part: u32,
    /// Waves in this zone.
    pub parts: u32,
    /// Steps, node by node.
    pub steps: Vec<Step>,
}

impl Wave {
    /// Nodes this wave takes down.
    pub fn disrupted(&self) -> BTreeSet<&NodeKey> {
        self.steps
            .iter()
            .filter(|s| s.action.disruptive())
            .filter_map(|s| s.node.as_ref())
            .collect()
    }
}

/// One action on one node (or record), with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The node's slot (None: a clean-up of a record that points at no node).
    pub node: Option<NodeKey>,
    /// Its instance, when it exists.
    pub instance_id: Option<String>,
    /// What.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Launch the slot's node.
    Launch {
        /// Version it starts.
        version: Version,
        /// Instance type.
        instance_type: InstanceType,
        /// Data volume size.
        data_volume_gb: u32,
        /// Snapshot its data volume starts from.
        snapshot_id: Option<String>,
        /// Without a snapshot: how long the sync from genesis takes, as the coin file's
        /// `health.full_sync_estimate` says (None: it does not say).
        full_sync_ms: Option<u64>,
        /// DNS name it gets.
        dns_name: String,
        /// Whether it gets a public address ([`crate::provider::needs_public_ip`]).
        #[serde(default)]
        public_ip: bool,
    },
    /// Restart the daemon at another version.
    Upgrade {
        /// Version now (None: unknown).
        from: Option<String>,
        /// Target.
        to: Version,
        /// Snapshot the data volume first (`snapshots.before_upgrade`).
        snapshot_first: bool,
        /// An upgrade to `to` was interrupted: ask the node whether it already runs `to`
        /// before restarting anything.
        confirm_first: bool,
        /// `from` is what the daemon reports while its tag records `to` (a change by hand):
        /// the record is corrected to it first, so the upgrade is not taken for done.
        #[serde(default)]
        reported: bool,
    },
    /// Restart the daemon at the version it ran before a failed upgrade, on the image the
    /// node pinned for it (`rollout.on_failure: rollback`). Never planned: the executor makes
    /// it when a node fails its gate after an [`Action::Upgrade`], from that step's `from`.
    RollBack {
        /// The version whose gate failed.
        from: Version,
        /// The version it ran before.
        to: Version,
        /// Then put the data volume back as its before-upgrade snapshot had it
        /// (`rollout.on_failure: restore`: the new version changed the database).
        #[serde(default)]
        restore: bool,
    },
    /// Rewrite the node's configuration files (`fleet-node apply-config` over SSM) and, when
    /// `restart`, restart its daemon to take them in (gated like an upgrade).
    Reconfigure {
        /// The parts that differ (their names only, never their values).
        changed: Vec<ConfigPart>,
        /// The settings that differ, by name, where the node's record names them
        /// (`fleet:config-keys`); parts of `changed` none of these belong to are named as
        /// parts.
        settings: Vec<crate::node_config::SettingChange>,
        /// The version its daemon runs (as recorded; the target when unknown, in which case
        /// an upgrade follows): the `node@` unit a node set up by an older fleet enables.
        version: Version,
        /// Whether the daemon restarts (something the container sees changed, and no
        /// upgrade of the same node restarts it anyway).
        restart: bool,
    },
    /// Set tags the coin lists (and `Name`) on the instance and its data volume, delete the
    /// ones it no longer lists that fleet wrote, and record which are the coin's (online).
    SetTags {
        /// The data volume, tagged along.
        volume_id: Option<String>,
        /// The change.
        change: crate::provider::TagChange,
    },
    /// Make the coin's own security group, or bring its inbound rules in step (online).
    SetCoinNetwork {
        /// The group (None: it does not exist yet and is made).
        group_id: Option<String>,
        /// Its name, `fleet-<coin>`.
        name: String,
        /// Rules to add.
        add: Vec<crate::network::IngressRule>,
        /// Rules to revoke.
        revoke: Vec<crate::network::IngressRule>,
    },
    /// Attach exactly fleet.yaml's `network.security_groups` and the coin's own group
    /// (online).
    SetSecurityGroups {
        /// Groups now.
        from: Vec<String>,
        /// fleet.yaml's groups, sorted (the coin's own joins them).
        to: Vec<String>,
        /// The coin's own group (None: made by this plan's network step, id not known yet).
        coin_group: Option<String>,
    },
    /// Grow the root volume, its partition and file system (online).
    GrowRootVolume {
        /// Volume.
        volume_id: String,
        /// Size now.
        from_gb: u32,
        /// Size wanted.
        to_gb: u32,
    },
    /// Grow the data volume (online).
    GrowVolume {
        /// Volume.
        volume_id: String,
        /// Size now.
        from_gb: u32,
        /// Size wanted.
        to_gb: u32,
    },
    /// A new instance of the node (fleet.yaml's `node_ami`) takes over its data volume: the
    /// old one is stopped (kept, with its root volume) and the volume moved to the new one.
    /// The new one is launched as the coin says now (version, type, settings), so this and
    /// its [`Action::HandOver`] are the node's only steps.
    Replace {
        /// Why a new instance.
        cause: ReplaceCause,
    },
    /// An unfinished [`Action::Replace`] whose node the repository no longer asks to replace
    /// (`node_ami` or the zone's subnet set back to the old instance's): the replacement is
    /// stopped, the data volume goes back to the old instance, the replacement is terminated,
    /// the old instance started and its mark cleared. Gated like a start.
    UndoReplace {
        /// The AMI the replacement was launched from (the instance's `fleet:pending` mark).
        ami: String,
    },
    /// Finish a restore of the node's data volume from `snapshot` that was cut off (the
    /// instance's `restore:<snapshot>` mark: a rollback with `on_failure: restore` stopped
    /// between stopping the instance and starting it again). Gated like a start.
    FinishRestore {
        /// The snapshot being restored.
        snapshot: String,
    },
    /// After a [`Action::Replace`], once the new instance has passed its gate (the one step
    /// run after the gate, [`Action::after_gate`]): point the slot's DNS name at it and
    /// terminate the old instance.
    HandOver {
        /// Record name.
        name: String,
    },
    /// Stop, change the instance type, start.
    ChangeType {
        /// Type now (as observed).
        from: String,
        /// Type wanted.
        to: InstanceType,
    },
    /// Start a stopped instance (at the desired type).
    Start {
        /// Instance type.
        instance_type: InstanceType,
    },
    /// Point the slot's DNS name at the node.
    SetDns {
        /// Record name.
        name: String,
    },
    /// Snapshot the data volume, terminate, remove the node's records. Needs approval.
    Retire {
        /// Records pointing at the node.
        dns: Vec<DnsRecord>,
    },
    /// Remove a node record that no slot uses.
    DeleteDns {
        /// The record as observed.
        record: DnsRecord,
    },
}

impl Action {
    /// Whether the node is down (or not yet up) during and after this step until its gate.
    pub fn disruptive(&self) -> bool {
        matches!(
            self,
            Action::Launch { .. }
                | Action::Replace { .. }
                | Action::UndoReplace { .. }
                | Action::FinishRestore { .. }
                | Action::Upgrade { .. }
                | Action::RollBack { .. }
                | Action::ChangeType { .. }
                | Action::Start { .. }
                | Action::Retire { .. }
                | Action::Reconfigure { restart: true, .. }
        )
    }
    /// Rough duration.
    pub fn estimate_ms(&self) -> u64 {
        match self {
            Action::Launch {
                snapshot_id: None,
                full_sync_ms: Some(ms),
                ..
            } => estimate::LAUNCH_MS.max(*ms),
            Action::Launch { .. } | Action::Replace { .. } => estimate::LAUNCH_MS,
            Action::Upgrade { .. } | Action::RollBack { .. } => estimate::UPGRADE_MS,
            Action::ChangeType { .. } => estimate::CHANGE_TYPE_MS,
            Action::Start { .. } | Action::UndoReplace { .. } | Action::FinishRestore { .. } => {
                estimate::START_MS
            }
            Action::Retire { .. } => estimate::RETIRE_MS,
            Action::Reconfigure { restart: true, .. } => estimate::UPGRADE_MS,
            Action::Reconfigure { restart: false, .. } => 0,
            Action::GrowVolume { .. }
            | Action::GrowRootVolume { .. }
            | Action::SetDns { .. }
            | Action::DeleteDns { .. }
            | Action::HandOver { .. }
            | Action::SetTags { .. }
            | Action::SetCoinNetwork { .. }
            | Action::SetSecurityGroups { .. } => 0,
        }
    }
    /// Whether the step waits for its wave's gate: it runs once the wave's nodes are in sync
    /// (a replacement takes its node's name only then, and the old instance is kept until
    /// then).
    pub fn after_gate(&self) -> bool {
        matches!(self, Action::HandOver { .. })
    }
    /// Short name: `upgrade`, `grow-volume`, …
    pub fn name(&self) -> &'static str {
        match self {
            Action::Launch { .. } => "launch",
            Action::Replace { .. } => "replace",
            Action::HandOver { .. } => "hand-over",
            Action::UndoReplace { .. } => "undo-replace",
            Action::FinishRestore { .. } => "finish-restore",
            Action::Upgrade { .. } => "upgrade",
            Action::RollBack { .. } => "roll-back",
            Action::Reconfigure { .. } => "reconfigure",
            Action::SetTags { .. } => "set-tags",
            Action::SetCoinNetwork { .. } => "set-coin-network",
            Action::SetSecurityGroups { .. } => "set-security-groups",
            Action::GrowVolume { .. } => "grow-volume",
            Action::GrowRootVolume { .. } => "grow-root-volume",
            Action::ChangeType { .. } => "change-type",
            Action::Start { .. } => "start",
            Action::SetDns { .. } => "set-dns",
            Action::Retire { .. } => "retire",
            Action::DeleteDns { .. } => "delete-dns",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Launch {
                version,
                instance_type,
                data_volume_gb,
                snapshot_id,
                full_sync_ms,
                public_ip,
                ..
            } => {
                write!(
                    f,
                    "launch {version} on {instance_type}, {data_volume_gb} GB, {}",
                    if *public_ip {
                        "public address for P2P"
                    } else {
                        "no public address (no P2P ports)"
                    }
                )?;
                match (snapshot_id, full_sync_ms) {
                    (Some(s), _) => write!(f, " from {s}"),
                    (None, Some(ms)) => write!(
                        f,
                        " (empty volume: full sync, about {} by health.full_sync_estimate)",
                        fleet_repo_schema::human_ms(*ms)
                    ),
                    (None, None) => write!(
                        f,
                        " (empty volume: full sync; health.full_sync_estimate would say how long)"
                    ),
                }
            }
            Action::Replace { cause } => write!(
                f,
                "replace the instance ({cause}): the old one is stopped and kept, the new one takes over the data volume"
            ),
            Action::HandOver { name } => write!(
                f,
                "once the new instance is in sync: point {name} at it, then terminate the old one"
            ),
            Action::FinishRestore { snapshot } => write!(
                f,
                "finish the restore of the data volume from {snapshot}, cut off earlier: the new volume attached, the instance started on it"
            ),
            Action::UndoReplace { ami } => write!(
                f,
                "undo the replacement by an instance of {ami}: the data volume back to this instance, which starts again; the replacement is terminated"
            ),
            Action::RollBack {
                from,
                to,
                restore: false,
            } => write!(
                f,
                "roll back {from} → {to} (its gate failed; the image the node ran {to} on)"
            ),
            Action::RollBack {
                from,
                to,
                restore: true,
            } => write!(
                f,
                "roll back {from} → {to} (its gate failed; the image the node ran {to} on) and restore the data volume from its before-upgrade:{from} snapshot"
            ),
            Action::Upgrade {
                from,
                to,
                snapshot_first,
                confirm_first,
                reported,
            } => {
                write!(f, "upgrade {} → {to}", from.as_deref().unwrap_or("?"))?;
                if *reported {
                    write!(f, " (as its daemon reports; the tag is corrected first)")?;
                }
                if *confirm_first {
                    write!(f, " (check first whether it already runs {to})")?;
                }
                if *snapshot_first {
                    write!(f, ", snapshot first")?;
                }
                Ok(())
            }
            Action::Reconfigure {
                changed,
                settings,
                restart,
                ..
            } => {
                write!(f, "reconfigure ")?;
                let named = settings.iter().map(|s| s.to_string());
                let parts = changed
                    .iter()
                    .filter(|p| !settings.iter().any(|s| s.part() == **p))
                    .map(|p| p.to_string());
                for (i, what) in named.chain(parts).enumerate() {
                    write!(f, "{}{what}", if i == 0 { "" } else { ", " })?;
                }
                if *restart {
                    write!(f, ", then restart the daemon")
                } else {
                    write!(f, " (no restart)")
                }
            }
            Action::GrowVolume { from_gb, to_gb, .. } => {
                write!(f, "grow data volume {from_gb} → {to_gb} GB")
            }
            Action::GrowRootVolume { from_gb, to_gb, .. } => {
                write!(f, "grow root volume {from_gb} → {to_gb} GB")
            }
            Action::SetTags { change, .. } => {
                let set = change.set.iter().map(|(k, v)| format!("{k}={v}"));
                let unset = change.unset.iter().map(|k| format!("remove {k}"));
                let all: Vec<String> = set.chain(unset).collect();
                if all.is_empty() {
                    write!(f, "record which tags are the coin's ({})", tags::COIN_TAGS)
                } else {
                    write!(f, "tag {}", all.join(", "))
                }
            }
            Action::SetCoinNetwork {
                group_id,
                name,
                add,
                revoke,
            } => {
                match group_id {
                    None => write!(f, "create security group {name}")?,
                    Some(id) => write!(f, "security group {name} ({id})")?,
                }
                let list = |rules: &[crate::network::IngressRule]| {
                    rules
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if !add.is_empty() {
                    write!(f, ": allow {}", list(add))?;
                }
                if !revoke.is_empty() {
                    let sep = if add.is_empty() { ":" } else { ";" };
                    write!(f, "{sep} revoke {}", list(revoke))?;
                }
                Ok(())
            }
            Action::SetSecurityGroups {
                from,
                to,
                coin_group,
            } => {
                write!(
                    f,
                    "security groups {} → {} and the coin's own",
                    from.join(", "),
                    to.join(", ")
                )?;
                match coin_group {
                    Some(id) => write!(f, " {id}"),
                    None => Ok(()),
                }
            }
            // A change of type that stopped half way, already at the wanted type.
            Action::ChangeType { from, to } if from == to.as_str() => {
                write!(f, "finish the change of type to {to} (start it)")
            }
            Action::ChangeType { from, to } => write!(f, "change type {from} → {to}"),
            Action::Start { instance_type } => write!(f, "start ({instance_type})"),
            Action::SetDns { name } => write!(f, "point {name} at the node"),
            Action::Retire { dns } => {
                write!(f, "retire: snapshot, terminate")?;
                for (i, r) in dns.iter().enumerate() {
                    let sep = if i == 0 { ", delete record" } else { "," };
                    write!(f, "{sep} {}", r.name)?;
                }
                Ok(())
            }
            Action::DeleteDns { record } => write!(f, "delete record {}", record.name),
        }
    }
}

/// What only a new instance can take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "kebab-case")]
pub enum ReplaceCause {
    /// fleet.yaml's `node_ami` is not the one the instance was launched from.
    Ami {
        /// The instance's AMI.
        from: String,
        /// `node_ami`.
        to: String,
    },
    /// The zone's subnet in fleet.yaml's `network.subnets` is not the instance's.
    Subnet {
        /// The instance's subnet.
        from: String,
        /// `network.subnets[zone]`.
        to: String,
    },
    /// A replacement was cut off (the instance carries `fleet:pending=replace:…`).
    Resume,
    /// The node watch asked for it (`heal.replace_after`): the instance fails EC2's status
    /// checks, beyond what SSM can reach.
    Heal,
}

impl fmt::Display for ReplaceCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplaceCause::Ami { from, to } => write!(f, "AMI {from} → {to}"),
            ReplaceCause::Subnet { from, to } => write!(f, "subnet {from} → {to}"),
            ReplaceCause::Resume => write!(f, "finishing a replacement"),
            ReplaceCause::Heal => write!(f, "heal: the instance fails EC2's status checks"),
        }
    }
}

/// Something fleet will not do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The node concerned, if one.
    pub node: Option<NodeKey>,
    /// Why, and what to do about it.
    pub reason: String,
}

/// A node whose state the plan cannot judge now (it is booting): it has no step, and the plan
/// says so rather than "no changes". The next plan judges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unjudged {
    /// The node.
    pub node: NodeKey,
    /// Its instance.
    pub instance_id: String,
    /// Why, in words.
    pub reason: String,
}

/// A managed thing fleet leaves to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Instance id or record name.
    pub what: String,
    /// Why it is flagged and what to do.
    pub reason: String,
}

/// Whether a version change of `class` needs approval under `policy`
/// ([`Approval::requires`], shared with the release watch).
pub fn needs_approval(policy: Approval, class: Class) -> bool {
    policy.requires(class)
}

/// Retirements the revision does not say it wants, refused (like Terraform's
/// `prevent_destroy`, Argo CD's prune confirmation): every node of a coin (its file gone,
/// renamed or emptied), more than `limits.max_retire_percent` of a coin's nodes, or any
/// retirement at all in a revision where more than one coin disappears (the shape of a
/// repository broken by mistake, so even a small scale-down in it is not taken on trust). A
/// coin listed in fleet.yaml's `retire:` is retired as planned. A refused coin is left alone
/// entirely, its other changes too, until the revision is fixed or confirmed.
fn retirement_refusals(
    desired: &Desired,
    observed: &Observed,
    retire: &BTreeMap<CoinName, Vec<Step>>,
) -> BTreeMap<CoinName, Vec<Refusal>> {
    let gone: Vec<&str> = retire
        .keys()
        .map(CoinName::as_str)
        .filter(|c| !desired.coins.contains_key(*c))
        .collect();
    let max = desired.fleet.max_retire_percent;
    let mut out: BTreeMap<CoinName, Vec<Refusal>> = BTreeMap::new();
    for (coin, steps) in retire {
        if desired.fleet.retire.contains(coin) {
            continue;
        }
        let n = steps.len();
        let total = observed.nodes_of(coin).len() + n;
        let why = if n == total {
            format!(
                "this revision retires every node of {coin} ({n} node{})",
                plural(n)
            )
        } else if n * 100 > max as usize * total {
            format!(
                "this revision retires {n} of {coin}'s {total} nodes, more than limits.max_retire_percent ({max} %)"
            )
        } else if gone.len() > 1 {
            format!(
                "{} coins disappear in this revision ({}), which looks like a repository broken by mistake",
                gone.len(),
                gone.join(", ")
            )
        } else {
            continue;
        };
        out.entry(coin.clone()).or_default().push(Refusal {
            node: None,
            reason: format!(
                "{why}: fleet retires that only when fleet.yaml says so: add `retire: [{coin}]` to fleet.yaml to confirm (snapshots are taken first)"
            ),
        });
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The plan that takes `observed` to `desired`. Pure: `now` is only recorded.
pub fn plan(desired: &Desired, observed: &Observed, now: u64) -> Plan {
    let mut coins: BTreeMap<CoinName, CoinPlan> = BTreeMap::new();
    let mut flagged = Vec::new();
    let domain = desired.fleet.internal_domain.as_str();

    // Retirements and clean-ups, gathered per coin first.
    let mut retire: BTreeMap<CoinName, Vec<Step>> = BTreeMap::new();
    let mut cleanup: BTreeMap<CoinName, Vec<Step>> = BTreeMap::new();
    for o in &observed.orphans {
        match o {
            Orphan::Unplaced { reason, node: n } => {
                let why = match reason {
                    OrphanReason::UnknownCoin => {
                        format!("coin {} is no longer in the fleet repository", n.key.coin)
                    }
                    OrphanReason::ZoneNotPlaced => {
                        format!("zone {} is no longer in placement.zones", n.key.zone)
                    }
                    OrphanReason::IndexBeyondCount { nodes_per_zone } => {
                        format!("nodes_per_zone is now {nodes_per_zone}")
                    }
                };
                retire.entry(n.key.coin.clone()).or_default().push(Step {
                    node: Some(n.key.clone()),
                    instance_id: Some(n.instance_id.clone()),
                    action: Action::Retire {
                        dns: observed.records_of(n),
                    },
                    reason: why,
                });
            }
            // Its node's `replace` step resumes and finishes it.
            Orphan::Replacement { .. } => {}
            Orphan::Duplicate { of, node: n } => flagged.push(Flag {
                what: n.instance_id.clone(),
                reason: format!(
                    "a second instance for {} (the slot's node is {of}); terminate the one you do not want by hand after checking its data",
                    n.key
                ),
            }),
            Orphan::BadTags { detail, instance } => flagged.push(Flag {
                what: instance.instance_id.clone(),
                reason: format!(
                    "tagged fleet:managed but {detail}; fix its tags or remove fleet:managed"
                ),
            }),
            Orphan::StrayDns { record: r } => {
                let coin = tags::node_record_coin(&r.name, domain)
                    .and_then(|c| desired.coins.get(c));
                match coin {
                    // A slot's own name (only that coin's slots can have it): its node's
                    // SetDns step repoints it.
                    Some(c) if c.nodes.iter().any(|s| s.dns_name == r.name) => {}
                    Some(c) => cleanup.entry(c.name.clone()).or_default().push(Step {
                        node: None,
                        instance_id: None,
                        action: Action::DeleteDns { record: r.clone() },
                        reason: "no slot of the coin has this name and no node has its address"
                            .into(),
                    }),
                    None => flagged.push(Flag {
                        what: r.name.clone(),
                        reason: "a node-like record of a coin not in the fleet repository, pointing at no managed node; delete it by hand if it is not used".into(),
                    }),
                }
            }
        }
    }

    // P2P needs a public address, which EC2 gives only at launch (an Elastic IP aside, which
    // fleet does not manage): a node without one is left for a person, said once per node.
    for coin in desired.coins.values().filter(|c| !c.p2p_ports.is_empty()) {
        for n in observed.nodes_of(&coin.name) {
            if n.public_ip == Some(false) {
                flagged.push(Flag {
                    what: n.instance_id.clone(),
                    reason: format!(
                        "{} has no public address, so peers cannot reach its P2P ports {:?}: fleet asks for one only at launch; retire and relaunch the node (it restores from a snapshot), or attach an Elastic IP by hand",
                        n.key, coin.p2p_ports
                    ),
                });
            }
        }
    }

    // A deadline while nodes run below its version: said in every plan, with its day (a
    // height's day needs the block rate, which only the node watch measures).
    for coin in desired.coins.values() {
        let Some(d) = &coin.deadline else { continue };
        let below = observed
            .nodes_of(&coin.name)
            .iter()
            .filter(|n| crate::care::deadline::runs_below(n, &d.version))
            .count();
        if below == 0 {
            continue;
        }
        let when = match d.by {
            fleet_repo_schema::desired::DeadlineBy::Date(ms) if ms <= now => {
                format!("was due {}", crate::care::deadline::day(ms))
            }
            fleet_repo_schema::desired::DeadlineBy::Date(ms) => format!(
                "is due {} (in {})",
                crate::care::deadline::day(ms),
                crate::care::deadline::time_left(ms, now)
            ),
            fleet_repo_schema::desired::DeadlineBy::Height(h) => format!("is due at height {h}"),
        };
        flagged.push(Flag {
            what: coin.name.to_string(),
            reason: format!(
                "deadline: {} {when}; {below} node{} below it{}",
                d.version,
                if below == 1 { " runs" } else { "s run" },
                if coin.version.as_str() == d.version.as_str()
                    || fleet_repo_schema::semver::compare(coin.version.as_str(), d.version.as_str())
                        == std::cmp::Ordering::Greater
                {
                    " (this revision upgrades them)"
                } else {
                    ": set `version` to it"
                }
            ),
        });
    }

    // New nodes restore from the coin's newest snapshot: one older than snapshots.max_age
    // (or none at all) means a long catch-up for the next node launched. Said, not refused.
    for coin in desired.coins.values() {
        let Some(max) = coin.snapshots.max_age else {
            continue;
        };
        let newest = observed
            .snapshots
            .iter()
            .filter(|s| s.coin == coin.name.as_str() && s.state != "error")
            .map(|s| s.started_ms)
            .max();
        let max_ms = max.0.as_millis() as u64;
        let reason = match newest {
            None => Some(format!(
                "{} has no snapshot: a node launched now syncs from genesis (snapshots.max_age {max}; snapshots.every takes them)",
                coin.name
            )),
            Some(t) if now.saturating_sub(t) > max_ms => Some(format!(
                "the newest snapshot of {} is {} old, older than snapshots.max_age {max}: a node launched now catches up from there",
                coin.name,
                fleet_repo_schema::human_ms(now.saturating_sub(t))
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            flagged.push(Flag {
                what: coin.name.to_string(),
                reason,
            });
        }
    }

    // Data volumes fleet grew on its own (`disk.auto_grow`, the journal's record) are the
    // coin's size until the repository says as much: said, so that the pull request that
    // records it is merged.
    for coin in desired.coins.values() {
        if let Some(gb) = observed
            .auto_grown
            .get(&coin.name)
            .filter(|gb| **gb > coin.data_volume_gb)
        {
            flagged.push(Flag {
                what: coin.name.to_string(),
                reason: format!(
                    "fleet grew {}'s data volumes to {gb} GB on its own (disk.auto_grow); {} still says data_volume_gb {}: merge the pull request that raises it",
                    coin.name, coin.file, coin.data_volume_gb
                ),
            });
        }
    }

    // A root volume larger than the coin asks for stays (EBS cannot shrink one, and it holds
    // no chain): said, not refused.
    for coin in desired.coins.values() {
        for n in observed.nodes_of(&coin.name) {
            if let Some(v) = n
                .root_volume
                .as_ref()
                .filter(|v| v.size_gb > coin.root_volume_gb)
            {
                flagged.push(Flag {
                    what: n.instance_id.clone(),
                    reason: format!(
                        "root volume {} of {} is {} GB, more than instance.root_volume_gb {}: EBS cannot shrink it; only nodes launched from now on get {} GB",
                        v.volume_id, n.key, v.size_gb, coin.root_volume_gb, coin.root_volume_gb
                    ),
                });
            }
        }
    }

    // An adopted node runs the operators' node side until its first step that needs
    // fleet's: what only fleet's node side does is not in force there yet. Said, not done
    // (doing it would restart the daemon for nothing else).
    for coin in desired.coins.values() {
        for n in observed.nodes_of(&coin.name) {
            if !n.config().is_adopted() {
                continue;
            }
            let mut pending = vec!["RPC published on the private address only"];
            if coin.image.digest.is_some() {
                pending.push("the image.digest pin");
            }
            if coin.logging.is_some() {
                pending.push("logging");
            }
            if !coin.metric_scripts.is_empty() {
                pending.push("custom_metrics through fleet's timer");
            }
            flagged.push(Flag {
                what: n.instance_id.clone(),
                reason: format!(
                    "{} was adopted and runs the operators' node side: {} take effect when fleet installs its own, before the node's first upgrade, change of type or reconfiguration (a restart it would need anyway), and its unit is enabled for reboots only then",
                    n.key,
                    pending.join(", ")
                ),
            });
        }
    }

    // A coin's own group outlives the coin: fleet does not delete groups (an instance fleet
    // does not manage may use one), it says so.
    for g in observed.groups.iter().flatten() {
        if let Some(coin) = &g.coin
            && !desired.coins.contains_key(coin.as_str())
        {
            flagged.push(Flag {
                what: g.group_id.clone(),
                reason: format!(
                    "security group {} is coin {coin}'s, which is no longer in the fleet repository: delete it once no instance uses it (fleet does not delete security groups)",
                    g.name
                ),
            });
        }
    }

    // Records of a placed coin whose name is no slot's name any more (after nodes_per_zone
    // went down or zones were reordered) but that still point at a node.
    for coin in desired.coins.values() {
        let names: BTreeSet<&str> = coin.nodes.iter().map(|s| s.dns_name.as_str()).collect();
        for n in observed.nodes_of(&coin.name) {
            for name in &n.dns_names {
                if names.contains(name.as_str()) {
                    continue;
                }
                if let Some(r) = observed.record(name)
                    && tags::node_record_coin(&r.name, domain) == Some(coin.name.as_str())
                {
                    cleanup.entry(coin.name.clone()).or_default().push(Step {
                        node: Some(n.key.clone()),
                        instance_id: Some(n.instance_id.clone()),
                        action: Action::DeleteDns { record: r.clone() },
                        reason: "the name is no slot's name any more".into(),
                    });
                }
            }
        }
    }

    let mut retire_refusals = retirement_refusals(desired, observed, &retire);

    // Snapshots by coin, looked up once rather than scanned for every coin.
    let mut snapshots: BTreeMap<&str, Vec<&SnapshotInfo>> = BTreeMap::new();
    for s in &observed.snapshots {
        snapshots.entry(s.coin.as_str()).or_default().push(s);
    }
    for c in desired.coins.values() {
        let cp = coin::plan_coin(
            desired,
            c,
            observed,
            snapshots
                .get(c.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default(),
            retire.remove(&c.name).unwrap_or_default(),
            cleanup.remove(&c.name).unwrap_or_default(),
        );
        let mut cp = cp;
        cp.refusals
            .extend(retire_refusals.remove(&c.name).unwrap_or_default());
        if !cp.waves.is_empty() || !cp.refusals.is_empty() || !cp.unjudged.is_empty() {
            coins.insert(c.name.clone(), cp);
        }
    }
    // Coins gone from the repository: only retirements.
    for (name, steps) in retire {
        let mut cp = coin::plan_removed(name.clone(), steps);
        cp.refusals
            .extend(retire_refusals.remove(&name).unwrap_or_default());
        coins.insert(name, cp);
    }
    Plan {
        at_ms: now,
        coins: coins.into_values().collect(),
        flagged,
    }
}
