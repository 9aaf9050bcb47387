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

use crate::observe::{
    DnsRecord, InstanceState, NodeKey, Observed, ObservedNode, ObservedVersion, OrphanReason,
    SnapshotInfo, restart_command, tags,
};
use fleet_repo_schema::semver::{Class, classify};
use fleet_repo_schema::values::Version;
use fleet_repo_schema::{Approval, Coin, Desired};
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
    /// Nothing to do and nothing refused (flags do not count: they need a person, not a step).
    pub fn is_empty(&self) -> bool {
        self.coins.is_empty()
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
        self.coins.iter().find(|c| c.coin == coin)
    }
}

/// One coin's part of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoinPlan {
    /// Coin.
    pub coin: String,
    /// The version it should run (None: the coin is gone from the repository).
    pub target: Option<Version>,
    /// The versions its nodes run now that will change (sorted, distinct).
    pub from_versions: Vec<String>,
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
    /// Rough duration: step times plus each changed zone's bake.
    pub estimate_ms: u64,
}

impl CoinPlan {
    /// Number of steps.
    pub fn step_count(&self) -> usize {
        self.waves.iter().map(|w| w.steps.len()).sum()
    }
}

/// Why a coin's rollout waits for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalNeed {
    /// Each reason, e.g. "major version change 27.2 → 28.1 (rollout.approval: major)".
    pub reasons: Vec<String>,
}

/// What kind of wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveKind {
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
    /// The zone.
    pub zone: String,
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
            .map(|s| &s.node)
            .collect()
    }
}

/// One action on one node (or record), with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The node's slot (for a DNS clean-up, the record's coin with zone "" and index 0).
    pub node: NodeKey,
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
        instance_type: String,
        /// Data volume size.
        data_volume_gb: u32,
        /// Snapshot its data volume starts from.
        snapshot_id: Option<String>,
        /// DNS name it gets.
        dns_name: String,
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
    /// Stop, change the instance type, start.
    ChangeType {
        /// Type now.
        from: String,
        /// Type wanted.
        to: String,
    },
    /// Start a stopped instance (at the desired type).
    Start {
        /// Instance type.
        instance_type: String,
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
                | Action::Upgrade { .. }
                | Action::ChangeType { .. }
                | Action::Start { .. }
                | Action::Retire { .. }
        )
    }
    /// Rough duration.
    pub fn estimate_ms(&self) -> u64 {
        match self {
            Action::Launch { .. } => estimate::LAUNCH_MS,
            Action::Upgrade { .. } => estimate::UPGRADE_MS,
            Action::ChangeType { .. } => estimate::CHANGE_TYPE_MS,
            Action::Start { .. } => estimate::START_MS,
            Action::Retire { .. } => estimate::RETIRE_MS,
            Action::GrowVolume { .. } | Action::SetDns { .. } | Action::DeleteDns { .. } => 0,
        }
    }
    /// Short name: `upgrade`, `grow-volume`, …
    pub fn name(&self) -> &'static str {
        match self {
            Action::Launch { .. } => "launch",
            Action::Upgrade { .. } => "upgrade",
            Action::GrowVolume { .. } => "grow-volume",
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
                ..
            } => {
                write!(
                    f,
                    "launch {version} on {instance_type}, {data_volume_gb} GB"
                )?;
                match snapshot_id {
                    Some(s) => write!(f, " from {s}"),
                    None => write!(f, " (empty volume: full sync)"),
                }
            }
            Action::Upgrade {
                from,
                to,
                snapshot_first,
                confirm_first,
            } => {
                write!(f, "upgrade {} → {to}", from.as_deref().unwrap_or("?"))?;
                if *confirm_first {
                    write!(f, " (check first whether it already runs {to})")?;
                }
                if *snapshot_first {
                    write!(f, ", snapshot first")?;
                }
                Ok(())
            }
            Action::GrowVolume { from_gb, to_gb, .. } => {
                write!(f, "grow data volume {from_gb} → {to_gb} GB")
            }
            // A change of type that stopped half way, already at the wanted type.
            Action::ChangeType { from, to } if from == to => {
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

/// Something fleet will not do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The node concerned, if one.
    pub node: Option<NodeKey>,
    /// Why, and what to do about it.
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

/// The plan that takes `observed` to `desired`. Pure: `now` is only recorded.
pub fn plan(desired: &Desired, observed: &Observed, now: u64) -> Plan {
    let mut coins: BTreeMap<String, CoinPlan> = BTreeMap::new();
    let mut flagged = Vec::new();

    // Retirements and clean-ups, gathered per coin first.
    let mut retire: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    let mut cleanup: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for o in &observed.orphans {
        match (&o.reason, &o.node, &o.dns) {
            (
                OrphanReason::UnknownCoin
                | OrphanReason::ZoneNotPlaced
                | OrphanReason::IndexBeyondCount { .. },
                Some(n),
                _,
            ) => {
                let why = match &o.reason {
                    OrphanReason::UnknownCoin => {
                        format!("coin {} is no longer in the fleet repository", n.key.coin)
                    }
                    OrphanReason::ZoneNotPlaced => {
                        format!("zone {} is no longer in placement.zones", n.key.zone)
                    }
                    OrphanReason::IndexBeyondCount { nodes_per_zone } => {
                        format!("nodes_per_zone is now {nodes_per_zone}")
                    }
                    _ => unreachable!("matched above"),
                };
                let dns = records_of(observed, n);
                retire.entry(n.key.coin.clone()).or_default().push(Step {
                    node: n.key.clone(),
                    instance_id: Some(n.instance_id.clone()),
                    action: Action::Retire { dns },
                    reason: why,
                });
            }
            (OrphanReason::Duplicate { of }, Some(n), _) => flagged.push(Flag {
                what: n.instance_id.clone(),
                reason: format!(
                    "a second instance for {} (the slot's node is {of}); terminate the one you do not want by hand after checking its data",
                    n.key
                ),
            }),
            (OrphanReason::BadTags { detail }, Some(n), _) => flagged.push(Flag {
                what: n.instance_id.clone(),
                reason: format!(
                    "tagged fleet:managed but {detail}; fix its tags or remove fleet:managed"
                ),
            }),
            (OrphanReason::StrayDns, _, Some(r)) => {
                let coin = tags::node_record_coin(&r.name, desired.fleet.internal_domain.as_str());
                // A slot's name names its own coin, so only that coin's slots can have it.
                let slot_name = coin
                    .and_then(|c| desired.coins.get(c))
                    .is_some_and(|c| c.nodes.iter().any(|s| s.dns_name == r.name));
                match coin {
                    // A slot's own name: its node's SetDns step repoints it.
                    _ if slot_name => {}
                    Some(c) if desired.coins.contains_key(c) => {
                        cleanup.entry(c.to_string()).or_default().push(Step {
                            node: NodeKey {
                                coin: c.to_string(),
                                zone: String::new(),
                                index: 0,
                            },
                            instance_id: None,
                            action: Action::DeleteDns { record: r.clone() },
                            reason: "no slot of the coin has this name and no node has its address"
                                .into(),
                        })
                    }
                    _ => flagged.push(Flag {
                        what: r.name.clone(),
                        reason: "a node-like record of a coin not in the fleet repository, pointing at no managed node; delete it by hand if it is not used".into(),
                    }),
                }
            }
            _ => {}
        }
    }

    // Records of a placed coin whose name is no slot's name any more (after nodes_per_zone
    // went down or zones were reordered) but that still point at a node.
    for coin in desired.coins.values() {
        let names: BTreeSet<&str> = coin.nodes.iter().map(|s| s.dns_name.as_str()).collect();
        for n in observed.nodes_of(coin.name.as_str()) {
            for name in &n.dns_names {
                if names.contains(name.as_str()) {
                    continue;
                }
                if let Some(r) = observed.record(name)
                    && tags::node_record_coin(&r.name, desired.fleet.internal_domain.as_str())
                        == Some(coin.name.as_str())
                {
                    cleanup
                        .entry(coin.name.to_string())
                        .or_default()
                        .push(Step {
                            node: n.key.clone(),
                            instance_id: Some(n.instance_id.clone()),
                            action: Action::DeleteDns { record: r.clone() },
                            reason: "the name is no slot's name any more".into(),
                        });
                }
            }
        }
    }

    // Snapshots by coin, looked up once rather than scanned for every coin.
    let mut snapshots: BTreeMap<&str, Vec<&SnapshotInfo>> = BTreeMap::new();
    for s in &observed.snapshots {
        snapshots.entry(s.coin.as_str()).or_default().push(s);
    }
    for coin in desired.coins.values() {
        let cp = plan_coin(
            desired,
            coin,
            observed,
            snapshots
                .get(coin.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default(),
            retire.remove(coin.name.as_str()).unwrap_or_default(),
            cleanup.remove(coin.name.as_str()).unwrap_or_default(),
        );
        if !cp.waves.is_empty() || !cp.refusals.is_empty() {
            coins.insert(coin.name.to_string(), cp);
        }
    }
    // Coins gone from the repository: only retirements.
    for (name, steps) in retire {
        let n = steps.len();
        let waves = retire_waves(steps, 1);
        coins.insert(
            name.clone(),
            CoinPlan {
                coin: name.clone(),
                target: None,
                from_versions: vec![],
                class: Class::None,
                approval: Some(ApprovalNeed {
                    reasons: vec![format!(
                        "retiring {n} node{} of a coin removed from the repository",
                        plural(n)
                    )],
                }),
                max_unavailable: 1,
                estimate_ms: parallel_waves_ms(&waves),
                waves,
                refusals: vec![],
            },
        );
    }
    Plan {
        at_ms: now,
        coins: coins.into_values().collect(),
        flagged,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The records pointing at `n`'s address.
fn records_of(observed: &Observed, n: &ObservedNode) -> Vec<DnsRecord> {
    match &n.private_ip {
        Some(ip) => observed
            .dns
            .iter()
            .filter(|r| r.values.iter().any(|v| v == ip))
            .cloned()
            .collect(),
        None => vec![],
    }
}

fn plan_coin(
    desired: &Desired,
    coin: &Coin,
    observed: &Observed,
    snapshots: &[&SnapshotInfo],
    retire: Vec<Step>,
    cleanup: Vec<Step>,
) -> CoinPlan {
    let mut refusals = Vec::new();
    let mut from_versions = BTreeSet::new();
    let (mut known_class, mut unknown_plain, mut unknown_confirm) = (Class::None, false, false);
    if let Err(e) = restart_command(&coin.version) {
        refusals.push(Refusal {
            node: None,
            reason: format!("{}: {e}", coin.file),
        });
    }
    // Per zone: disruptive node step lists, quiet steps, and the steps that bring nodes that
    // are down now back up.
    let mut zones: Vec<(String, Vec<Vec<Step>>, Vec<Step>)> = Vec::new();
    let mut repairs: Vec<(String, Vec<Step>)> = Vec::new();
    let coin_nodes = observed.nodes_of(coin.name.as_str());
    let mut classes: BTreeMap<&str, Class> = BTreeMap::new();
    let newest_snapshot = snapshots
        .iter()
        .filter(|s| s.state != "error" && s.size_gb <= coin.data_volume_gb)
        .max_by_key(|s| s.started_ms);
    for zone in &coin.zones {
        let mut disruptive: Vec<Vec<Step>> = Vec::new();
        let mut quiet: Vec<Step> = Vec::new();
        let mut repair: Vec<Step> = Vec::new();
        if !desired.fleet.subnets.contains_key(zone) {
            refusals.push(Refusal {
                node: None,
                reason: format!(
                    "zone {zone} has no subnet in fleet.yaml `network.subnets`: add one before placing {} there",
                    coin.name
                ),
            });
        }
        for slot in coin.nodes.iter().filter(|s| &s.zone == zone) {
            let key = NodeKey::of(slot);
            let found = coin_nodes.binary_search_by(|n| n.key.cmp(&key));
            let Some(n) = found.ok().map(|i| &coin_nodes[i]) else {
                let snapshot_id = if coin.snapshots.restore_new_nodes {
                    newest_snapshot.map(|s| s.snapshot_id.clone())
                } else {
                    None
                };
                disruptive.push(vec![Step {
                    node: key,
                    instance_id: None,
                    action: Action::Launch {
                        version: coin.version.clone(),
                        instance_type: coin.instance_type.to_string(),
                        data_volume_gb: coin.data_volume_gb,
                        snapshot_id,
                        dns_name: slot.dns_name.clone(),
                    },
                    reason: "the slot has no node".into(),
                }]);
                continue;
            };
            let id = Some(n.instance_id.clone());
            let mut steps: Vec<Step> = Vec::new();
            let step = |action: Action, reason: String| Step {
                node: key.clone(),
                instance_id: id.clone(),
                action,
                reason,
            };
            match &n.state {
                InstanceState::Running | InstanceState::Stopped | InstanceState::Stopping => {}
                InstanceState::Pending => {
                    // Booting: nothing to do until it runs; the gate counts it as down.
                    continue;
                }
                other => {
                    refusals.push(Refusal {
                        node: Some(key.clone()),
                        reason: format!(
                            "instance {} is {}; fleet waits for it to settle (the next pass replaces a terminated node)",
                            n.instance_id,
                            other.as_str()
                        ),
                    });
                    continue;
                }
            }
            match &n.data_volume {
                None => {
                    refusals.push(Refusal {
                        node: Some(key.clone()),
                        reason: format!(
                            "instance {} has no data volume at /dev/sdf; attach the node's volume or retire the node by hand",
                            n.instance_id
                        ),
                    });
                    continue;
                }
                Some(v) if v.size_gb > coin.data_volume_gb => {
                    refusals.push(Refusal {
                        node: Some(key.clone()),
                        reason: format!(
                            "{}: data_volume_gb {} is smaller than volume {} of {key} ({} GB); EBS volumes cannot shrink without losing the chain: set it back to at least {} (a smaller volume needs a new node restored from a snapshot)",
                            coin.file, coin.data_volume_gb, v.volume_id, v.size_gb, v.size_gb
                        ),
                    });
                    continue;
                }
                Some(v) if v.size_gb < coin.data_volume_gb => steps.push(step(
                    Action::GrowVolume {
                        volume_id: v.volume_id.clone(),
                        from_gb: v.size_gb,
                        to_gb: coin.data_volume_gb,
                    },
                    format!("data_volume_gb is {}", coin.data_volume_gb),
                )),
                Some(_) => {}
            }
            let stopped = matches!(n.state, InstanceState::Stopped | InstanceState::Stopping);
            let pending_change_type = n.pending.as_ref().is_some_and(|p| p.step == "change-type");
            if n.instance_type != coin.instance_type.as_str() || pending_change_type {
                steps.push(step(
                    Action::ChangeType {
                        from: n.instance_type.clone(),
                        to: coin.instance_type.to_string(),
                    },
                    if pending_change_type && n.instance_type == coin.instance_type.as_str() {
                        "an earlier change of type did not finish".into()
                    } else {
                        format!("instance.type is {}", coin.instance_type)
                    },
                ));
            } else if stopped {
                steps.push(step(
                    Action::Start {
                        instance_type: coin.instance_type.to_string(),
                    },
                    "the instance is stopped".into(),
                ));
            }
            // The version the daemon runs, as far as the record goes.
            let (running, confirm_first): (Option<&Version>, bool) = match (&n.version, &n.pending)
            {
                (ObservedVersion::Known { version }, _) => (Some(version), false),
                (ObservedVersion::Unknown { .. }, Some(p)) if p.step == "change-type" => {
                    (n.recorded_version.as_ref(), false)
                }
                (ObservedVersion::Unknown { .. }, Some(p)) if p.step == "upgrade" => {
                    (None, p.target == coin.version.as_str())
                }
                (ObservedVersion::Unknown { .. }, _) => (None, false),
            };
            if running != Some(&coin.version) {
                let c = match running {
                    // A coin's nodes mostly run one or two versions: classify each once.
                    Some(v) => *classes
                        .entry(v.as_str())
                        .or_insert_with(|| classify(v.as_str(), coin.version.as_str())),
                    None => Class::Unknown,
                };
                match running {
                    Some(v) => {
                        from_versions.insert(v.to_string());
                        known_class = known_class.max(c);
                    }
                    // An interrupted upgrade to the target counts as unknown only when no
                    // node tells the change's size.
                    None if confirm_first => unknown_confirm = true,
                    None => unknown_plain = true,
                }
                let reason = match (running, &n.version) {
                    (Some(v), _) => format!("version is {} (runs {v})", coin.version),
                    (None, ObservedVersion::Unknown { reason }) => {
                        format!(
                            "version is {}; the node's is unknown: {reason}",
                            coin.version
                        )
                    }
                    (None, _) => format!("version is {}", coin.version),
                };
                steps.push(step(
                    Action::Upgrade {
                        from: running.map(|v| v.to_string()),
                        to: coin.version.clone(),
                        snapshot_first: coin.snapshots.before_upgrade,
                        confirm_first,
                    },
                    reason,
                ));
            }
            if !n.dns_names.iter().any(|d| d == &slot.dns_name) {
                steps.push(step(
                    Action::SetDns {
                        name: slot.dns_name.clone(),
                    },
                    "no record of this name points at the node".into(),
                ));
            }
            if stopped
                && let Some(i) = steps.iter().position(|s| {
                    matches!(s.action, Action::ChangeType { .. } | Action::Start { .. })
                })
            {
                repair.push(steps.remove(i));
            }
            if steps.iter().any(|s| s.action.disruptive()) {
                disruptive.push(steps);
            } else {
                quiet.extend(steps);
            }
        }
        zones.push((zone.to_string(), disruptive, quiet));
        if !repair.is_empty() {
            repairs.push((zone.to_string(), repair));
        }
    }

    // Nodes already down that no step of this plan brings up: they eat into max_unavailable.
    let max_unavailable = coin.rollout.max_unavailable.max(1);
    let down_elsewhere = coin_nodes
        .iter()
        .filter(|n| !matches!(n.state, InstanceState::Running))
        .filter(|n| {
            !zones
                .iter()
                .any(|(_, d, _)| d.iter().any(|steps| steps[0].node == n.key))
                && !repairs
                    .iter()
                    .any(|(_, r)| r.iter().any(|s| s.node == n.key))
        })
        .count() as u32;
    let batch = max_unavailable.saturating_sub(down_elsewhere).max(1) as usize;

    let mut waves = Vec::new();
    let mut estimate_ms = 0;
    for (zone, steps) in repairs {
        estimate_ms += steps
            .iter()
            .map(|s| s.action.estimate_ms())
            .max()
            .unwrap_or(0);
        waves.push(Wave {
            kind: WaveKind::Repair,
            zone,
            part: 1,
            parts: 1,
            steps,
        });
    }
    for (zone, disruptive, quiet) in zones {
        let parts = disruptive.len().div_ceil(batch) as u32;
        if disruptive.is_empty() {
            if !quiet.is_empty() {
                waves.push(Wave {
                    kind: WaveKind::Rollout,
                    zone,
                    part: 1,
                    parts: 1,
                    steps: quiet,
                });
            }
            continue;
        }
        let mut quiet = Some(quiet);
        // Moved, not copied, into their waves.
        let mut nodes = disruptive.into_iter();
        for i in 0..parts {
            let b: Vec<Vec<Step>> = nodes.by_ref().take(batch).collect();
            estimate_ms += b
                .iter()
                .map(|node| node.iter().map(|s| s.action.estimate_ms()).sum::<u64>())
                .max()
                .unwrap_or(0);
            let mut steps: Vec<Step> = quiet.take().unwrap_or_default();
            steps.extend(b.into_iter().flatten());
            waves.push(Wave {
                kind: WaveKind::Rollout,
                zone: zone.clone(),
                part: i + 1,
                parts,
                steps,
            });
        }
        estimate_ms += coin.rollout.bake.0.as_millis() as u64;
    }
    let n_retire = retire.len();
    let rw = retire_waves(retire, batch);
    estimate_ms += parallel_waves_ms(&rw);
    waves.extend(rw);
    if !cleanup.is_empty() {
        waves.push(Wave {
            kind: WaveKind::Cleanup,
            zone: String::new(),
            part: 1,
            parts: 1,
            steps: cleanup,
        });
    }

    let class = if unknown_plain || (known_class == Class::None && unknown_confirm) {
        known_class.max(Class::Unknown)
    } else {
        known_class
    };
    let mut reasons = Vec::new();
    if needs_approval(coin.rollout.approval, class) {
        let from: Vec<&str> = from_versions.iter().map(String::as_str).collect();
        reasons.push(format!(
            "{} version change {} → {} (rollout.approval: {})",
            class.as_str(),
            if from.is_empty() {
                "?".to_string()
            } else {
                from.join(", ")
            },
            coin.version,
            coin.rollout.approval.as_str()
        ));
    }
    if n_retire > 0 {
        reasons.push(format!(
            "retiring {n_retire} node{} (snapshots are taken first)",
            plural(n_retire)
        ));
    }
    CoinPlan {
        coin: coin.name.to_string(),
        target: Some(coin.version.clone()),
        from_versions: from_versions.into_iter().collect(),
        class,
        approval: (!reasons.is_empty()).then_some(ApprovalNeed { reasons }),
        max_unavailable,
        waves,
        refusals,
        estimate_ms,
    }
}

/// Rough duration of waves run one after the other, each as long as its slowest step.
fn parallel_waves_ms(waves: &[Wave]) -> u64 {
    waves
        .iter()
        .map(|w| {
            w.steps
                .iter()
                .map(|s| s.action.estimate_ms())
                .max()
                .unwrap_or(0)
        })
        .sum()
}

/// Retirements grouped by zone (sorted), `batch` nodes at a time.
fn retire_waves(steps: Vec<Step>, batch: usize) -> Vec<Wave> {
    let mut by_zone: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for s in steps {
        by_zone.entry(s.node.zone.clone()).or_default().push(s);
    }
    let mut waves = Vec::new();
    for (zone, mut steps) in by_zone {
        steps.sort_by(|a, b| a.node.cmp(&b.node));
        let batch = batch.max(1);
        let parts = steps.len().div_ceil(batch) as u32;
        let mut steps = steps.into_iter();
        for i in 0..parts {
            waves.push(Wave {
                kind: WaveKind::Retire,
                zone: zone.clone(),
                part: i + 1,
                parts,
                steps: steps.by_ref().take(batch).collect(),
            });
        }
    }
    waves
}
