//! How each node of a coin is doing right now: the one rating the executor's budget check,
//! its bakes, `/status` and the metrics all use, so that no two of them can disagree about a
//! node. A node is in sync exactly when [`ChainStatus::caught_up`] says so against the coin's
//! reference height.
//!
//! The rating is pure: readings in, judgments out. "Stuck" needs a memory of heights, which
//! the caller keeps in a [`Progress`] and passes in when it has one (the node watch does; a
//! gate has its own stall rule and passes none).

use super::{ChainStatus, ProbeError, WaitReason};
use crate::clock::Millis;
use crate::node::NodeKey;
use fleet_repo_schema::Probe;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What is known of one node when it is rated.
#[derive(Debug, Clone, Copy)]
pub struct NodeInput<'a> {
    /// The node.
    pub key: &'a NodeKey,
    /// Its instance runs (EC2 state `running`).
    pub running: bool,
    /// A step of fleet's began on it and has not finished (`fleet:pending`).
    pub step_pending: bool,
    /// Its probe's answer; None when it was not asked (not running, or probe `none`).
    pub reading: Option<&'a Result<ChainStatus, ProbeError>>,
}

/// Why a node counts as down without a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownReason {
    /// The instance is not running (stopped, booting, terminating).
    NotRunning,
    /// Probe `none`: a step of fleet's is under way on it, so running says nothing.
    StepPending,
    /// It runs but was not probed.
    NotProbed,
}

/// A node's health now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "health", rename_all = "kebab-case")]
pub enum NodeHealth {
    /// Answering, and caught up ([`ChainStatus::caught_up`] against the reference).
    InSync {
        /// Blocks.
        height: u64,
    },
    /// Probe `none`: the instance runs and no step is pending, which is all that is known.
    Running,
    /// Answering, but not caught up.
    Lagging {
        /// Blocks.
        height: u64,
        /// Headers.
        headers: u64,
        /// What it is missing.
        reason: WaitReason,
    },
    /// Answering and behind, and its height has not moved for the stall timeout while the
    /// reference did.
    Stuck {
        /// Blocks, unchanged since `since_ms`.
        height: u64,
        /// Since when.
        since_ms: Millis,
        /// The reference height now.
        reference: u64,
    },
    /// The probe got no answer.
    Unreachable {
        /// Why.
        error: ProbeError,
    },
    /// Down without a reading.
    Down {
        /// Why.
        reason: DownReason,
    },
}

impl NodeHealth {
    /// Whether the node counts as serving: in sync, or (probe `none`) running. Everything else
    /// counts against `max_unavailable`.
    pub fn is_up(&self) -> bool {
        matches!(self, NodeHealth::InSync { .. } | NodeHealth::Running)
    }

    /// Its height, when it answered.
    pub fn height(&self) -> Option<u64> {
        match self {
            NodeHealth::InSync { height }
            | NodeHealth::Lagging { height, .. }
            | NodeHealth::Stuck { height, .. } => Some(*height),
            _ => None,
        }
    }

    /// Short label for metrics and logs: `in_sync`, `running`, `lagging`, `stuck`,
    /// `unreachable`, `down`.
    pub fn label(&self) -> &'static str {
        match self {
            NodeHealth::InSync { .. } => "in_sync",
            NodeHealth::Running => "running",
            NodeHealth::Lagging { .. } => "lagging",
            NodeHealth::Stuck { .. } => "stuck",
            NodeHealth::Unreachable { .. } => "unreachable",
            NodeHealth::Down { .. } => "down",
        }
    }
}

/// A coin's nodes, rated together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoinHealth {
    /// The reference height: the highest among the nodes caught up with their own headers.
    pub reference: Option<u64>,
    /// Every rated node.
    pub nodes: BTreeMap<NodeKey, NodeHealth>,
}

impl CoinHealth {
    /// Whether `key` counts as serving (a node not rated does not).
    pub fn is_up(&self, key: &NodeKey) -> bool {
        self.nodes.get(key).is_some_and(NodeHealth::is_up)
    }

    /// The nodes that do not count as serving, in key order.
    pub fn down(&self) -> impl Iterator<Item = &NodeKey> {
        self.nodes
            .iter()
            .filter(|(_, h)| !h.is_up())
            .map(|(k, _)| k)
    }

    /// How many count as serving.
    pub fn up_count(&self) -> usize {
        self.nodes.values().filter(|h| h.is_up()).count()
    }
}

/// The reference height of a coin: the highest height among the readings that are caught up
/// with their own headers. A node that restarted and has not heard of new blocks yet may look
/// caught up with itself, but is lower than the others and so never raises the reference.
pub fn reference_height<'a>(
    readings: impl IntoIterator<Item = &'a Result<ChainStatus, ProbeError>>,
) -> Option<u64> {
    readings
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|s| s.caught_up(None, 0).is_ok())
        .map(|s| s.blocks)
        .max()
}

/// Heights seen per node over time, for telling a stuck node from a slow one.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Per node: its last height, since when it has been there, and the reference then.
    seen: HashMap<NodeKey, (u64, Millis, Option<u64>)>,
}

impl Progress {
    /// Record `height` of `key` at `now` (with the coin's reference then); returns since when
    /// the height has been unchanged and the reference at that moment.
    fn record(
        &mut self,
        key: &NodeKey,
        height: u64,
        reference: Option<u64>,
        now: Millis,
    ) -> (Millis, Option<u64>) {
        let e = self
            .seen
            .entry(key.clone())
            .or_insert((height, now, reference));
        if e.0 != height {
            *e = (height, now, reference);
        }
        (e.1, e.2)
    }

    /// Since when `key`'s height has been what it is (None: never seen with a height).
    pub fn unmoved_since(&self, key: &NodeKey) -> Option<Millis> {
        self.seen.get(key).map(|e| e.1)
    }

    /// Forget nodes not in `keep` (retired, or of a coin no longer watched).
    pub fn retain(&mut self, keep: impl Fn(&NodeKey) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

/// What [`rate`] needs to call a node stuck.
#[derive(Debug)]
pub struct StallWatch<'a> {
    /// The memory of heights, updated by the rating.
    pub progress: &'a mut Progress,
    /// Now.
    pub now: Millis,
    /// Unchanged this long (while the reference moved) is stuck: `health.stall_timeout`.
    pub stall_ms: u64,
}

/// Rate a coin's nodes. `probe` is the coin's probe kind (with `none` a running node with no
/// step pending is [`NodeHealth::Running`]); `max_lag` its `health.max_lag_blocks`.
pub fn rate<'a>(
    probe: Probe,
    max_lag: u64,
    nodes: impl IntoIterator<Item = NodeInput<'a>>,
    mut stall: Option<StallWatch<'_>>,
) -> CoinHealth {
    let nodes: Vec<NodeInput<'a>> = nodes.into_iter().collect();
    let reference = reference_height(nodes.iter().filter_map(|n| n.reading));
    let mut rated = BTreeMap::new();
    for n in &nodes {
        let health = match (n.running, n.reading) {
            (false, _) => NodeHealth::Down {
                reason: DownReason::NotRunning,
            },
            (true, _) if probe == Probe::None => {
                if n.step_pending {
                    NodeHealth::Down {
                        reason: DownReason::StepPending,
                    }
                } else {
                    NodeHealth::Running
                }
            }
            (true, None) => NodeHealth::Down {
                reason: DownReason::NotProbed,
            },
            (true, Some(Err(e))) => NodeHealth::Unreachable { error: e.clone() },
            (true, Some(Ok(s))) => {
                let since = stall
                    .as_mut()
                    .map(|w| (w.progress.record(n.key, s.blocks, reference, w.now), w));
                match s.caught_up(reference, max_lag) {
                    Ok(()) => NodeHealth::InSync { height: s.blocks },
                    Err(reason) => match (since, reference) {
                        (Some(((since_ms, ref_then), w)), Some(r))
                            if w.now.saturating_sub(since_ms) >= w.stall_ms
                                && ref_then.is_some_and(|t| r > t) =>
                        {
                            NodeHealth::Stuck {
                                height: s.blocks,
                                since_ms,
                                reference: r,
                            }
                        }
                        _ => NodeHealth::Lagging {
                            height: s.blocks,
                            headers: s.headers,
                            reason,
                        },
                    },
                }
            }
        };
        rated.insert(n.key.clone(), health);
    }
    CoinHealth {
        reference,
        nodes: rated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> NodeKey {
        NodeKey::parse("bitcoin", "eu-central-1a", i).unwrap()
    }

    fn ok(blocks: u64, headers: u64) -> Result<ChainStatus, ProbeError> {
        Ok(ChainStatus {
            blocks,
            headers,
            initial_block_download: false,
            client: None,
        })
    }

    fn refused() -> Result<ChainStatus, ProbeError> {
        Err(ProbeError::Unreachable {
            node: "n".into(),
            addr: "127.0.0.1:1".into(),
            detail: "connection refused".into(),
        })
    }

    fn input<'a>(k: &'a NodeKey, r: &'a Result<ChainStatus, ProbeError>) -> NodeInput<'a> {
        NodeInput {
            key: k,
            running: true,
            step_pending: false,
            reading: Some(r),
        }
    }

    #[test]
    fn the_reference_is_the_top_of_the_nodes_caught_up_with_themselves() {
        let (k1, k2, k3, k4) = (key(1), key(2), key(3), key(4));
        let (a, b, c, d) = (ok(100, 100), ok(96, 96), ok(90, 120), refused());
        let h = rate(
            Probe::Bitcoin,
            3,
            [
                input(&k1, &a),
                input(&k2, &b),
                input(&k3, &c),
                input(&k4, &d),
            ],
            None,
        );
        // 90/120 knows more headers but has not validated them: it does not set the reference.
        assert_eq!(h.reference, Some(100));
        assert_eq!(h.nodes[&k1], NodeHealth::InSync { height: 100 });
        assert!(matches!(
            h.nodes[&k2],
            NodeHealth::Lagging {
                reason: WaitReason::BehindReference { reference: 100 },
                ..
            }
        ));
        assert!(matches!(
            h.nodes[&k3],
            NodeHealth::Lagging {
                reason: WaitReason::BlocksBehindHeaders,
                ..
            }
        ));
        assert!(matches!(h.nodes[&k4], NodeHealth::Unreachable { .. }));
        assert_eq!(h.down().cloned().collect::<Vec<_>>(), [k2, k3, k4]);
        assert_eq!(h.up_count(), 1);
    }

    #[test]
    fn probe_none_knows_only_running_and_pending() {
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let n = |k, running, step_pending| NodeInput {
            key: k,
            running,
            step_pending,
            reading: None,
        };
        let h = rate(
            Probe::None,
            0,
            [
                n(&k1, true, false),
                n(&k2, true, true),
                n(&k3, false, false),
            ],
            None,
        );
        assert_eq!(h.nodes[&k1], NodeHealth::Running);
        assert!(h.is_up(&k1) && !h.is_up(&k2) && !h.is_up(&k3));
        // With a probe, running without a reading is not up.
        let h = rate(Probe::Bitcoin, 0, [n(&k1, true, false)], None);
        assert!(!h.is_up(&k1));
    }

    #[test]
    fn stuck_is_an_unmoving_height_while_the_reference_moves() {
        let (k1, k2) = (key(1), key(2));
        let mut progress = Progress::default();
        let at = |now, top: u64, low: u64, p: &mut Progress| {
            let (a, b) = (ok(top, top), ok(low, low));
            rate(
                Probe::Bitcoin,
                2,
                [input(&k1, &a), input(&k2, &b)],
                Some(StallWatch {
                    progress: p,
                    now,
                    stall_ms: 60_000,
                }),
            )
            .nodes[&k2]
                .clone()
        };
        assert!(matches!(
            at(0, 100, 90, &mut progress),
            NodeHealth::Lagging { .. }
        ));
        assert!(matches!(
            at(59_999, 104, 90, &mut progress),
            NodeHealth::Lagging { .. }
        ));
        assert_eq!(
            at(60_000, 105, 90, &mut progress),
            NodeHealth::Stuck {
                height: 90,
                since_ms: 0,
                reference: 105
            }
        );
        // It moves: lagging again, the clock starts over.
        assert!(matches!(
            at(61_000, 105, 91, &mut progress),
            NodeHealth::Lagging { .. }
        ));
        // A chain that does not move makes nobody stuck.
        let mut p = Progress::default();
        at(0, 100, 90, &mut p);
        assert!(matches!(
            at(120_000, 100, 90, &mut p),
            NodeHealth::Lagging { .. }
        ));
    }
}
