//! Healing: which node of a coin, if any, fleet restarts now. Pure: the coin's ratings, how
//! long each node has been in trouble, the heals already made, and time in; one decision out.
//!
//! The rules, each checked here and nowhere else:
//! - **Only what a restart can mend.** A node stuck (its height unmoved for
//!   `health.stall_timeout` while the chain moved) or running without answering its probe
//!   (a crashed or hung daemon), for `heal.restart_after`. A node whose instance is not
//!   running, or that is merely slow, is not restarted.
//! - **Never a serving node.** Only a node that already counts as down is restarted, so a heal
//!   never takes the coin's serving count lower and never spends `max_unavailable`.
//! - **One at a time.** While a heal of the coin's has not been answered (its node back in
//!   sync, or `restart_after` passed since), no other node of the coin is restarted.
//! - **Bounded.** At most `heal.max_per_day` heals of the coin in any 24 hours.
//! - **Once per trouble.** A node restarted during its present trouble that has not been in
//!   sync since is not restarted again: it is left for a person, loudly.
//! - **Not during a rollout.** A coin fleet is rolling out is the executor's; its gate
//!   decides.
//! - **A broken instance is replaced, not restarted.** A node whose instance fails EC2's
//!   status checks cannot be reached over SSM; after `heal.replace_after` it is replaced (a
//!   new instance takes over its data volume: the plan's Replace step, gated like any, asked
//!   for through the journal), under the same limits (one heal of the coin at a time,
//!   `max_per_day`, once per trouble). With `replace_after: off` it is left for a person.

use crate::clock::Millis;
use crate::health::{CoinHealth, NodeHealth};
use crate::node::NodeKey;
use fleet_repo_schema::desired::HealSpec;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A day, ms: the span `heal.max_per_day` counts over.
pub const DAY_MS: u64 = 86_400_000;

/// Why a node is healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealReason {
    /// Its height stopped while its chain moved on.
    Stuck,
    /// Its instance runs but its daemon does not answer.
    NotAnswering,
    /// Its instance fails EC2's status checks: it is replaced, not restarted.
    FailsStatusChecks,
}

impl HealReason {
    /// The metric label: `stuck`, `not-answering`.
    pub fn label(self) -> &'static str {
        match self {
            HealReason::Stuck => "stuck",
            HealReason::NotAnswering => "not-answering",
            HealReason::FailsStatusChecks => "fails-status-checks",
        }
    }

    /// Whether the remedy is a new instance (else a restart of the daemon).
    pub fn replaces(self) -> bool {
        self == HealReason::FailsStatusChecks
    }
}

impl fmt::Display for HealReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealReason::Stuck => "stuck",
            HealReason::NotAnswering => "not answering",
            HealReason::FailsStatusChecks => "failing EC2's status checks",
        })
    }
}

/// A heal made before (from the journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastHeal {
    /// The node.
    pub node: NodeKey,
    /// When.
    pub at_ms: Millis,
}

/// What is known of one node of the coin for the decision.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The node.
    pub key: &'a NodeKey,
    /// Its rating now.
    pub health: &'a NodeHealth,
    /// In trouble since (None: fine).
    pub bad_since: Option<Millis>,
    /// Its instance fails EC2's status checks.
    pub failing_checks: bool,
}

/// What to do about the coin now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealDecision {
    /// The node to restart now, and why (at most one heal per coin: this or `replace`).
    pub restart: Option<(NodeKey, HealReason)>,
    /// The node whose instance to replace now (it fails EC2's status checks).
    pub replace: Option<NodeKey>,
    /// Nodes a restart could mend that fleet may not restart: a person must look.
    pub left: Vec<(NodeKey, String)>,
}

/// The heal reason of a node rated `h`, when a restart could mend it.
pub fn reason(h: &NodeHealth) -> Option<HealReason> {
    match h {
        NodeHealth::Stuck { .. } => Some(HealReason::Stuck),
        NodeHealth::Unreachable { .. } => Some(HealReason::NotAnswering),
        _ => None,
    }
}

/// Decide for one coin. `spec` is its `heal:` (None: `off`); `rolling` whether fleet is
/// rolling it out; `past` its heals, any order; `last_in_sync` when a node was last seen in
/// sync (None: not since the watch started).
pub fn decide(
    spec: Option<&HealSpec>,
    rolling: bool,
    health: &CoinHealth,
    nodes: &[Candidate<'_>],
    past: &[PastHeal],
    last_in_sync: impl Fn(&NodeKey) -> Option<Millis>,
    now: Millis,
) -> HealDecision {
    let mut d = HealDecision::default();
    let Some(spec) = spec else {
        return d;
    };
    if rolling {
        return d;
    }
    let wait = spec.restart_after.0.as_millis() as u64;
    // One at a time: the latest heal of the coin, not answered yet, holds the others.
    let busy = past.iter().max_by_key(|h| h.at_ms).is_some_and(|last| {
        now.saturating_sub(last.at_ms) < wait
            && health.nodes.contains_key(&last.node)
            && !health.is_up(&last.node)
    });
    // Those a restart can mend that waited enough, the longest in trouble first.
    let mut due: Vec<(&Candidate, HealReason, Millis)> = nodes
        .iter()
        .filter_map(|c| Some((c, reason(c.health)?, c.bad_since?)))
        .filter(|(_, _, since)| now.saturating_sub(*since) >= wait)
        .collect();
    due.sort_by_key(|(c, _, since)| (*since, c.key.clone()));
    let today = past
        .iter()
        .filter(|h| now.saturating_sub(h.at_ms) < DAY_MS)
        .count();
    // Broken instances first: a restart cannot reach them, a new instance can.
    let mut broken: Vec<(&Candidate, Millis)> = nodes
        .iter()
        .filter(|c| c.failing_checks)
        .filter_map(|c| Some((c, c.bad_since?)))
        .collect();
    broken.sort_by_key(|(c, since)| (*since, c.key.clone()));
    for (c, since) in broken {
        let node = c.key.clone();
        let Some(after) = spec.replace_after.map(|d| d.0.as_millis() as u64) else {
            if now.saturating_sub(since) >= wait {
                d.left.push((
                    node,
                    "its instance fails EC2's status checks, so a restart over SSM cannot reach it, and heal.replace_after is off: stop and start the instance (a new host) or replace it".into(),
                ));
            }
            continue;
        };
        if now.saturating_sub(since) < after {
            continue;
        }
        let asked = past
            .iter()
            .filter(|h| h.node == node && h.at_ms >= since)
            .map(|h| h.at_ms)
            .max();
        if let Some(at) = asked {
            if now.saturating_sub(at) >= after {
                d.left.push((
                    node,
                    format!(
                        "a replacement did not mend it: its instance still fails EC2's status checks {} after it was asked",
                        fleet_repo_schema::human_ms(now.saturating_sub(at))
                    ),
                ));
            }
            continue;
        }
        if today >= spec.max_per_day as usize {
            d.left.push((
                node,
                format!(
                    "its instance fails EC2's status checks, and the coin's nodes were healed {today} times in 24 hours (heal.max_per_day {})",
                    spec.max_per_day
                ),
            ));
            continue;
        }
        if d.replace.is_none() && !busy {
            d.replace = Some(node);
        }
    }
    for (c, why, since) in due {
        let node = c.key.clone();
        if c.failing_checks {
            continue;
        }
        let last_heal = past
            .iter()
            .filter(|h| h.node == node && h.at_ms >= since)
            .map(|h| h.at_ms)
            .max();
        if let Some(at) = last_heal
            && last_in_sync(&node).is_none_or(|t| t < at)
        {
            if now.saturating_sub(at) >= wait {
                d.left.push((
                    node,
                    format!(
                        "a restart did not mend it: still {why} {} after it",
                        fleet_repo_schema::human_ms(now.saturating_sub(at))
                    ),
                ));
            }
            continue;
        }
        if today >= spec.max_per_day as usize {
            d.left.push((
                node,
                format!(
                    "the coin's nodes were healed {today} times in 24 hours (heal.max_per_day {})",
                    spec.max_per_day
                ),
            ));
            continue;
        }
        if d.restart.is_none() && d.replace.is_none() && !busy {
            d.restart = Some((node, why));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProbeError;
    use fleet_repo_schema::values::Duration;

    fn key(i: u32) -> NodeKey {
        NodeKey::parse("litecoin", "eu-central-1a", i).unwrap()
    }

    fn spec() -> HealSpec {
        HealSpec {
            restart_after: Duration(std::time::Duration::from_secs(1800)),
            max_per_day: 2,
            replace_after: Some(Duration(std::time::Duration::from_secs(3600))),
        }
    }

    const MIN: u64 = 60_000;

    fn stuck() -> NodeHealth {
        NodeHealth::Stuck {
            height: 5,
            since_ms: 0,
            reference: 9,
        }
    }

    fn coin(h: &[(NodeKey, NodeHealth)]) -> CoinHealth {
        CoinHealth {
            reference: Some(9),
            nodes: h.iter().cloned().collect(),
        }
    }

    fn run(
        h: &CoinHealth,
        since: &[(u32, Millis)],
        past: &[PastHeal],
        last_in_sync: Option<Millis>,
        now: Millis,
    ) -> HealDecision {
        let nodes: Vec<Candidate> = h
            .nodes
            .iter()
            .map(|(k, health)| Candidate {
                key: k,
                health,
                bad_since: since.iter().find(|(i, _)| *i == k.index).map(|(_, s)| *s),
                failing_checks: false,
            })
            .collect();
        decide(Some(&spec()), false, h, &nodes, past, |_| last_in_sync, now)
    }

    #[test]
    fn a_stuck_node_is_restarted_after_restart_after_and_a_slow_or_stopped_one_never() {
        let h = coin(&[
            (key(1), NodeHealth::InSync { height: 9 }),
            (key(2), stuck()),
        ]);
        assert_eq!(run(&h, &[(2, 0)], &[], None, 29 * MIN), nothing());
        assert_eq!(
            run(&h, &[(2, 0)], &[], None, 30 * MIN).restart,
            Some((key(2), HealReason::Stuck))
        );
        let unreachable = NodeHealth::Unreachable {
            error: ProbeError::Timeout {
                node: "n".into(),
                addr: "a".into(),
                ms: 1,
            },
        };
        let h = coin(&[(key(1), unreachable)]);
        assert_eq!(
            run(&h, &[(1, 0)], &[], None, 30 * MIN).restart,
            Some((key(1), HealReason::NotAnswering))
        );
        for slow in [
            NodeHealth::Lagging {
                height: 1,
                headers: 9,
                reason: crate::health::WaitReason::BlocksBehindHeaders,
            },
            NodeHealth::Down {
                reason: crate::health::rating::DownReason::NotRunning,
            },
        ] {
            let h = coin(&[(key(1), slow)]);
            assert_eq!(run(&h, &[(1, 0)], &[], None, 90 * MIN), nothing());
        }
        // heal: off, or a rollout under way: nothing.
        let h = coin(&[(key(2), stuck())]);
        let (k2, st) = (key(2), stuck());
        let mut nodes = vec![Candidate {
            key: &k2,
            health: &st,
            bad_since: Some(0),
            failing_checks: false,
        }];
        assert_eq!(
            decide(None, false, &h, &nodes, &[], |_| None, 90 * MIN),
            nothing()
        );
        assert_eq!(
            decide(Some(&spec()), true, &h, &nodes, &[], |_| None, 90 * MIN),
            nothing()
        );
        // An instance failing EC2's status checks is beyond SSM: never restarted; replaced
        // after replace_after (1h), or with replace_after off left for a person.
        nodes[0].failing_checks = true;
        let d = decide(Some(&spec()), false, &h, &nodes, &[], |_| None, 50 * MIN);
        assert_eq!(d, nothing(), "not yet: under replace_after");
        let d = decide(Some(&spec()), false, &h, &nodes, &[], |_| None, 60 * MIN);
        assert_eq!((d.restart, d.replace), (None, Some(key(2))));
        let off = HealSpec {
            replace_after: None,
            ..spec()
        };
        let d = decide(Some(&off), false, &h, &nodes, &[], |_| None, 90 * MIN);
        assert_eq!((d.restart, d.replace), (None, None));
        assert!(d.left[0].1.contains("replace_after is off"), "{:?}", d.left);
    }

    #[test]
    fn a_broken_instance_is_replaced_once_per_trouble_and_within_max_per_day() {
        let h = coin(&[(key(1), stuck()), (key(2), stuck())]);
        let (k1, k2, st) = (key(1), key(2), stuck());
        let nodes = [
            Candidate {
                key: &k1,
                health: &st,
                bad_since: Some(0),
                failing_checks: true,
            },
            Candidate {
                key: &k2,
                health: &st,
                bad_since: Some(0),
                failing_checks: false,
            },
        ];
        // Node 1 is replaced first; node 2's restart waits (one heal of the coin at a time).
        let d = decide(Some(&spec()), false, &h, &nodes, &[], |_| None, 60 * MIN);
        assert_eq!((d.replace, d.restart), (Some(key(1)), None));
        // Asked at 60m and not mended 30m later: not asked again, the restart of node 2
        // still waits for the unanswered heal (within restart_after of it).
        let past = [PastHeal {
            node: key(1),
            at_ms: 60 * MIN,
        }];
        let d = decide(Some(&spec()), false, &h, &nodes, &past, |_| None, 80 * MIN);
        assert_eq!(d, nothing());
        // replace_after after it: left for a person, loudly; node 2 has its turn.
        let d = decide(Some(&spec()), false, &h, &nodes, &past, |_| None, 120 * MIN);
        assert_eq!(d.replace, None);
        assert_eq!(d.restart, Some((key(2), HealReason::Stuck)));
        assert!(
            d.left[0].1.contains("a replacement did not mend it"),
            "{:?}",
            d.left
        );
        // max_per_day (2) reached: left, with the count.
        let two = [
            PastHeal {
                node: key(2),
                at_ms: 10 * MIN,
            },
            PastHeal {
                node: key(2),
                at_ms: 20 * MIN,
            },
        ];
        let d = decide(
            Some(&spec()),
            false,
            &h,
            &nodes[..1],
            &two,
            |_| None,
            120 * MIN,
        );
        assert_eq!(d.replace, None);
        assert!(d.left[0].1.contains("heal.max_per_day 2"), "{:?}", d.left);
    }

    #[test]
    fn one_heal_at_a_time_once_per_trouble_and_at_most_max_per_day() {
        let h = coin(&[(key(1), stuck()), (key(2), stuck())]);
        let since = [(1, 0), (2, 10 * MIN)];
        // The longest in trouble first.
        assert_eq!(
            run(&h, &since, &[], None, 40 * MIN).restart,
            Some((key(1), HealReason::Stuck))
        );
        // Node 1 restarted at 40m and not back yet: node 2 waits its turn.
        let past = [PastHeal {
            node: key(1),
            at_ms: 40 * MIN,
        }];
        assert_eq!(run(&h, &since, &past, None, 50 * MIN), nothing());
        // restart_after later node 1 is still stuck and was never in sync since: left for a
        // person, and node 2 has its turn.
        let d = run(&h, &since, &past, None, 70 * MIN);
        assert_eq!(d.restart, Some((key(2), HealReason::Stuck)));
        assert_eq!(d.left.len(), 1);
        assert_eq!(d.left[0].0, key(1));
        assert!(d.left[0].1.contains("did not mend it"), "{:?}", d.left);
        // In sync after the heal and stuck again (a new trouble from 80m): healed again.
        let h1 = coin(&[(key(1), stuck())]);
        assert_eq!(
            run(&h1, &[(1, 80 * MIN)], &past, Some(60 * MIN), 110 * MIN).restart,
            Some((key(1), HealReason::Stuck))
        );
        // Two heals within 24 hours with max_per_day 2: left for a person.
        let past = [
            PastHeal {
                node: key(1),
                at_ms: 40 * MIN,
            },
            PastHeal {
                node: key(1),
                at_ms: 110 * MIN,
            },
        ];
        let d = run(&h1, &[(1, 150 * MIN)], &past, Some(140 * MIN), 180 * MIN);
        assert_eq!(d.restart, None);
        assert!(d.left[0].1.contains("heal.max_per_day 2"), "{:?}", d.left);
        // A day after the first, one more is allowed.
        assert_eq!(
            run(
                &h1,
                &[(1, DAY_MS)],
                &past,
                Some(DAY_MS - MIN),
                DAY_MS + 40 * MIN
            )
            .restart,
            Some((key(1), HealReason::Stuck))
        );
    }

    fn nothing() -> HealDecision {
        HealDecision::default()
    }
}
