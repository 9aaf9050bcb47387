//! Day-two care: what `fleet run` does for the fleet between rollouts. Pure: one watch's
//! observation and readings in, what to tell people and what to restart out. The daemon's
//! node watch (`daemon::watch`) observes, probes, calls [`Watcher::watch`] and carries out
//! what it returns.
//!
//! - [`incident`]: when trouble becomes an incident, and its life (opened once, updated in
//!   place, resolved once, reopened within the repeat window).
//! - [`heal`]: which node of a coin fleet restarts, within its limits.
//! - [`snapshots`]: the snapshot schedule, what to take and what to delete.
//! - [`deadline`]: when a required version is due, and the stages of its escalation.
//! - [`disk`]: how full each data volume is, how fast it fills, and when to grow it.
//!
//! Every node is rated by the one rating ([`crate::apply::view::rate_observed`]) with a
//! memory of heights kept across watches (so "stuck" is seen between rollouts too), against
//! the same in-sync rule the gates use.

pub mod deadline;
pub mod disk;
pub mod heal;
pub mod incident;
pub mod snapshots;

use crate::apply::view::{Readings, rate_observed};
use crate::clock::Millis;
use crate::health::rating::{Progress, StallWatch};
use crate::health::{CoinHealth, NodeHealth};
use crate::node::NodeKey;
use crate::plan::Observed;
use fleet_repo_schema::Desired;
use fleet_repo_schema::values::{CoinName, Version};
use heal::{Candidate, HealReason, PastHeal};
use incident::{Care, Change, Condition, Incident, Incidents, Seen, Subject};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One node as the watch saw it: what `/metrics` shows per node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeWatch {
    /// The node.
    pub key: NodeKey,
    /// Its rating.
    pub health: NodeHealth,
    /// Blocks behind the coin's reference (None: no height or no reference).
    pub lag: Option<u64>,
    /// How long its height has not moved (None: no height seen).
    pub unmoved_ms: Option<u64>,
    /// Probe errors since the watch started.
    pub probe_errors: u64,
    /// Its data volume as the CloudWatch agent reported it (None: no report).
    pub disk: Option<disk::DiskUse>,
}

/// One coin as the watch saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CoinWatch {
    /// The rating of its nodes.
    pub health: CoinHealth,
    /// Its nodes.
    pub nodes: Vec<NodeWatch>,
    /// Nodes in sync (serving).
    pub synced: usize,
    /// `health.min_synced`.
    pub min_synced: u32,
    /// The coin's deadline as seen now, if it has one.
    pub deadline: Option<DeadlineWatch>,
}

/// A deadline as the watch sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadlineWatch {
    /// The version required.
    pub version: Version,
    /// When it is due (None: a height whose date is not known yet: the block rate is being
    /// measured).
    pub due_ms: Option<Millis>,
    /// The activation height, for a height deadline.
    pub height: Option<u64>,
    /// Nodes running below the version (or whose version is not known).
    pub below: Vec<NodeKey>,
}

/// A restart the watch asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealOrder {
    /// The node.
    pub node: NodeKey,
    /// Its instance.
    pub instance_id: String,
    /// The version its enabled unit runs (its recorded version).
    pub version: Version,
    /// Why.
    pub reason: HealReason,
}

/// A scheduled snapshot to take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSnapshot {
    /// The node.
    pub node: NodeKey,
    /// Its instance.
    pub instance_id: String,
    /// `snapshots.stop_daemon`: the version of its enabled unit, stopped for the snapshot and
    /// started after it (None: taken with the daemon running).
    pub stop: Option<Version>,
}

/// What one watch found and asks for.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// Per coin.
    pub coins: BTreeMap<CoinName, CoinWatch>,
    /// Incidents that changed.
    pub changes: Vec<(Incident, Change)>,
    /// Heals to make now (at most one per coin): a restart, or for an instance failing EC2's
    /// status checks ([`HealReason::replaces`]) a replacement, asked of the reconcile loop.
    pub heals: Vec<HealOrder>,
    /// Scheduled snapshots to take now (at most one per coin).
    pub snapshot: Vec<ScheduledSnapshot>,
    /// Scheduled snapshots to delete now, by coin.
    pub delete_snapshots: Vec<(CoinName, String)>,
    /// Coins whose data volumes must grow (only on a watch that read the disks).
    pub grow: Vec<disk::GrowOrder>,
}

/// What one watch is given.
pub struct Look<'a> {
    /// The revision in force.
    pub desired: &'a Desired,
    /// The fleet as observed.
    pub observed: &'a Observed,
    /// One reading per probed node.
    pub readings: &'a Readings,
    /// The coins fleet is rolling out.
    pub rolling: &'a BTreeSet<CoinName>,
    /// EC2's status checks by instance id (empty when they could not be read).
    pub status: &'a BTreeMap<String, crate::provider::StatusChecks>,
    /// A coin's heals of the last day (from the journal).
    pub past: &'a dyn Fn(&CoinName) -> Vec<PastHeal>,
    /// Now.
    pub now: Millis,
    /// Within this of its resolution an incident that comes back is reopened.
    pub repeat_ms: u64,
    /// The size fleet itself grew a coin's data volumes to (`disk.auto_grow`, from the
    /// journal), if any.
    pub grown: &'a dyn Fn(&CoinName) -> Option<u32>,
}

impl std::fmt::Debug for Look<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Look")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// The watch's memory between watches.
#[derive(Debug, Default)]
pub struct Watcher {
    progress: Progress,
    incidents: Incidents,
    last_in_sync: HashMap<NodeKey, Millis>,
    probe_errors: HashMap<NodeKey, u64>,
    /// Restarts per node during its present trouble.
    restarts: HashMap<NodeKey, u32>,
    /// Each coin's block rate, for deadlines by height.
    rates: HashMap<CoinName, deadline::BlockRate>,
    /// The data volumes' reports by instance id, and when they were read.
    disks: BTreeMap<String, Vec<crate::provider::DiskPoint>>,
    disks_at: Option<Millis>,
    /// The disks were read since the last watch.
    disks_fresh: bool,
    /// Each coin's last word on its disk pull request.
    proposals: HashMap<CoinName, disk::Proposal>,
    /// Each data volume's size by instance id, and since when the watch has seen it so:
    /// the agent's figures from before a grow are percent of the old size, not of this one.
    volume_sizes: HashMap<String, (u32, Millis)>,
}

/// How often the node watch reads the data volumes' use: the agent reports every minute,
/// a chain fills in days, and every read is charged per series.
pub const DISK_EVERY_MS: u64 = 15 * 60_000;

/// How far back the growth rate is read.
pub const DISK_WINDOW_MS: u64 = 24 * 3_600_000;

impl Watcher {
    /// Whether the disks are due to be read at `now`.
    pub fn disks_due(&self, now: Millis) -> bool {
        self.disks_at
            .is_none_or(|t| now >= t.saturating_add(DISK_EVERY_MS))
    }

    /// The disks were read at `now`: the next watch judges them.
    pub fn saw_disks(
        &mut self,
        disks: BTreeMap<String, Vec<crate::provider::DiskPoint>>,
        now: Millis,
    ) {
        self.disks = disks;
        self.disks_at = Some(now);
        self.disks_fresh = true;
    }

    /// Whether a coin's grow is worth telling: volumes grown now, or a proposal that is news
    /// ([`disk::Proposal::is_news`]) and not the one told last.
    pub fn disk_news(&mut self, coin: &CoinName, p: &disk::Proposal, grown: bool) -> bool {
        let last = self.proposals.insert(coin.clone(), p.clone());
        grown || (p.is_news() && last.as_ref() != Some(p))
    }

    /// Take one watch.
    pub fn watch(&mut self, look: Look<'_>) -> Watched {
        let Look {
            desired,
            observed,
            readings,
            rolling,
            status,
            past,
            now,
            repeat_ms,
            grown,
        } = look;
        let mut out = Watched::default();
        let judge_disks = std::mem::take(&mut self.disks_fresh);
        let mut seen = Vec::new();
        let mut keep: BTreeSet<NodeKey> = BTreeSet::new();
        for coin in desired.coins.values() {
            let nodes = observed.nodes_of(&coin.name);
            let health = rate_observed(
                coin,
                nodes,
                readings,
                Some(StallWatch {
                    progress: &mut self.progress,
                    now,
                    stall_ms: coin.health.stall_timeout.0.as_millis() as u64,
                }),
            );
            let coin_rolling = rolling.contains(&coin.name);
            let alert_after_ms = coin.health.alert_after.0.as_millis() as u64;
            let mut watched = Vec::new();
            for n in nodes {
                keep.insert(n.key.clone());
                let Some(h) = health.nodes.get(&n.key) else {
                    continue;
                };
                if h.is_up() {
                    self.last_in_sync.insert(n.key.clone(), now);
                    self.restarts.remove(&n.key);
                }
                if matches!(readings.get(&n.key), Some(Err(_))) {
                    *self.probe_errors.entry(n.key.clone()).or_default() += 1;
                }
                let failing = status.get(&n.instance_id).filter(|c| c.failing());
                seen.push(Seen {
                    subject: Subject::Node {
                        node: n.key.clone(),
                    },
                    condition: match failing {
                        Some(c) => Some(Condition::StatusChecks {
                            system: c.system,
                            instance: c.instance,
                        }),
                        None => Condition::of_node(h, health.reference),
                    },
                    fleets_own: coin_rolling || n.pending.is_some(),
                    alert_after_ms,
                });
                watched.push(NodeWatch {
                    key: n.key.clone(),
                    health: h.clone(),
                    lag: h
                        .height()
                        .zip(health.reference)
                        .map(|(h, r)| r.saturating_sub(h)),
                    unmoved_ms: self
                        .progress
                        .unmoved_since(&n.key)
                        .map(|s| now.saturating_sub(s)),
                    probe_errors: self.probe_errors.get(&n.key).copied().unwrap_or(0),
                    disk: n.data_volume.as_ref().and_then(|v| {
                        let since = match self.volume_sizes.get(&n.instance_id) {
                            Some((size, since)) if *size == v.size_gb => *since,
                            // Grown since the last watch: only figures from now on.
                            Some(_) => now,
                            // First seen: whatever the agent has.
                            None => 0,
                        };
                        self.volume_sizes
                            .insert(n.instance_id.clone(), (v.size_gb, since));
                        let points: Vec<crate::provider::DiskPoint> = self
                            .disks
                            .get(&n.instance_id)?
                            .iter()
                            .filter(|p| p.at_ms >= since)
                            .copied()
                            .collect();
                        disk::DiskUse::read(&points, v.size_gb)
                    }),
                });
            }
            if judge_disks {
                let uses: Vec<(NodeKey, disk::DiskUse)> = watched
                    .iter()
                    .filter_map(|w: &NodeWatch| Some((w.key.clone(), w.disk?)))
                    .collect();
                let asked = coin.data_volume_gb.max(grown(&coin.name).unwrap_or(0));
                out.grow
                    .extend(disk::decide(&coin.name, &coin.disk, asked, &uses));
            }
            if let Some(r) = health.reference {
                self.rates.entry(coin.name.clone()).or_default().saw(r, now);
            }
            let dw = coin.deadline.as_ref().map(|d| {
                let below: Vec<NodeKey> = nodes
                    .iter()
                    .filter(|n| deadline::runs_below(n, &d.version))
                    .map(|n| n.key.clone())
                    .collect();
                DeadlineWatch {
                    version: d.version.clone(),
                    due_ms: deadline::due_ms(
                        d.by,
                        health.reference,
                        self.rates.get(&coin.name).and_then(|r| r.ms_per_block()),
                        now,
                    ),
                    height: match d.by {
                        fleet_repo_schema::desired::DeadlineBy::Height(h) => Some(h),
                        fleet_repo_schema::desired::DeadlineBy::Date(_) => None,
                    },
                    below,
                }
            });
            if let Some(dw) = &dw {
                seen.push(Seen {
                    subject: Subject::Deadline {
                        coin: coin.name.clone(),
                    },
                    condition: dw.due_ms.filter(|_| !dw.below.is_empty()).and_then(|due| {
                        Some(Condition::Deadline {
                            version: dw.version.clone(),
                            due_ms: due,
                            stage: deadline::stage(due, now)?,
                            below: dw.below.len(),
                        })
                    }),
                    fleets_own: false,
                    alert_after_ms,
                });
            }
            let synced = health.up_count();
            let min = coin.health.min_synced;
            seen.push(Seen {
                subject: Subject::Coin {
                    coin: coin.name.clone(),
                },
                condition: (synced < min as usize)
                    .then_some(Condition::BelowMinSynced { synced, min }),
                fleets_own: coin_rolling,
                alert_after_ms,
            });
            out.coins.insert(
                coin.name.clone(),
                CoinWatch {
                    health,
                    nodes: watched,
                    synced,
                    min_synced: min,
                    deadline: dw,
                },
            );
        }
        self.progress.retain(|k| keep.contains(k));
        self.last_in_sync.retain(|k, _| keep.contains(k));
        self.probe_errors.retain(|k, _| keep.contains(k));
        self.restarts.retain(|k, _| keep.contains(k));
        let instances: BTreeSet<&str> = observed
            .nodes
            .iter()
            .map(|n| n.instance_id.as_str())
            .collect();
        self.volume_sizes
            .retain(|id, _| instances.contains(id.as_str()));
        self.rates
            .retain(|c, _| desired.coins.contains_key(c.as_str()));
        out.changes = self.incidents.observe(&seen, now, repeat_ms);

        for coin in desired.coins.values() {
            let Some(cw) = out.coins.get(&coin.name) else {
                continue;
            };
            let nodes = observed.nodes_of(&coin.name);
            let candidates: Vec<Candidate> = nodes
                .iter()
                .filter(|n| n.pending.is_none())
                .filter_map(|n| {
                    Some(Candidate {
                        key: &n.key,
                        health: cw.health.nodes.get(&n.key)?,
                        bad_since: self.incidents.bad_since(&Subject::Node {
                            node: n.key.clone(),
                        }),
                        failing_checks: status.get(&n.instance_id).is_some_and(|c| c.failing()),
                    })
                })
                .collect();
            let d = heal::decide(
                coin.heal.as_ref(),
                rolling.contains(&coin.name),
                &cw.health,
                &candidates,
                &past(&coin.name),
                |k| self.last_in_sync.get(k).copied(),
                now,
            );
            for (node, why) in d.left {
                let subject = Subject::Node { node };
                if let Some(i) = self.incidents.cared(&subject, Care::LeftForPerson { why }) {
                    out.changes.push((i, Change::Updated));
                }
            }
            let in_use = |id: &str| {
                nodes.iter().any(|n| {
                    n.state == crate::provider::InstanceState::Pending
                        && n.data_volume
                            .as_ref()
                            .is_some_and(|v| v.snapshot_id.as_deref() == Some(id))
                })
            };
            let mine: Vec<&crate::provider::SnapshotInfo> = observed
                .snapshots
                .iter()
                .filter(|s| s.coin == coin.name.as_str())
                .collect();
            let in_sync: Vec<NodeKey> = cw
                .health
                .nodes
                .iter()
                .filter(|(k, h)| {
                    h.is_up() && nodes.iter().any(|n| n.key == **k && n.pending.is_none())
                })
                .map(|(k, _)| k.clone())
                .collect();
            let sd = snapshots::decide(
                &coin.snapshots,
                rolling.contains(&coin.name),
                &mine,
                &in_sync,
                &in_use,
                now,
            );
            if let Some(k) = sd.take
                && let Some(n) = nodes.iter().find(|n| n.key == k)
            {
                if !coin.snapshots.stop_daemon {
                    out.snapshot.push(ScheduledSnapshot {
                        node: k,
                        instance_id: n.instance_id.clone(),
                        stop: None,
                    });
                } else if let Some(v) = n.version.known()
                    && snapshots::may_stop(
                        coin.rollout.max_unavailable,
                        nodes.len(),
                        cw.synced,
                        coin.health.min_synced,
                    )
                {
                    out.snapshot.push(ScheduledSnapshot {
                        node: k,
                        instance_id: n.instance_id.clone(),
                        stop: Some(v.clone()),
                    });
                }
            }
            out.delete_snapshots
                .extend(sd.delete.into_iter().map(|id| (coin.name.clone(), id)));
            if let Some((node, reason)) = d.restart
                && let Some(n) = nodes.iter().find(|n| n.key == node)
                && let Some(version) = n.version.known()
            {
                out.heals.push(HealOrder {
                    node,
                    instance_id: n.instance_id.clone(),
                    version: version.clone(),
                    reason,
                });
            }
            if let Some(node) = d.replace
                && let Some(n) = nodes.iter().find(|n| n.key == node)
            {
                out.heals.push(HealOrder {
                    node,
                    instance_id: n.instance_id.clone(),
                    version: n
                        .version
                        .known()
                        .cloned()
                        .unwrap_or_else(|| coin.version.clone()),
                    reason: HealReason::FailsStatusChecks,
                });
            }
        }
        out
    }

    /// A heal was made on `node` at `at_ms` (`reason`'s remedy): the incident's record of
    /// it, to announce when the node has one open.
    pub fn healed(
        &mut self,
        node: &NodeKey,
        reason: HealReason,
        at_ms: Millis,
    ) -> Option<Incident> {
        if reason.replaces() {
            return self.incidents.cared(
                &Subject::Node { node: node.clone() },
                Care::ReplaceAsked { at_ms },
            );
        }
        let restarts = self.restarts.entry(node.clone()).or_default();
        *restarts += 1;
        let restarts = *restarts;
        self.incidents.cared(
            &Subject::Node { node: node.clone() },
            Care::Healed { restarts, at_ms },
        )
    }

    /// The open incidents.
    pub fn open_incidents(&self) -> Vec<Incident> {
        self.incidents.open()
    }
}
