//! The node watch: after each observation, every running node is probed and rated with the
//! one rating ([`crate::health::rate`]) the executor uses, and the per-coin view of `/status`
//! and the node gauges of `/metrics` are rebuilt from it. `/status` therefore never calls a
//! node in sync that the executor would count as down.

use super::Shared;
use super::reconcile::HeldCoins;
use super::status::{CoinState, CoinStatus, NodeStatus, VersionFrom};
use crate::apply::view::{Readings, rate_observed};
use crate::daemon::Good;
use crate::health::NodeHealth;
use crate::plan::{Observed, Plan};
use crate::provider::InstanceState;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The label of a node in `fleet_nodes{state}`: `in_sync` or `out_of_sync` for a running node
/// that is probed, `running` for probe `none`, else its EC2 state.
fn state_label(state: &InstanceState, health: Option<&NodeHealth>) -> String {
    match (state, health) {
        (InstanceState::Running, Some(NodeHealth::Running)) => "running".into(),
        (InstanceState::Running, Some(h)) if h.is_up() => "in_sync".into(),
        (InstanceState::Running, _) => "out_of_sync".into(),
        (s, _) => s.as_str().to_string(),
    }
}

/// Rate each coin of `observed` with the pass's `readings`, and rebuild the coins of `/status`
/// and the observation gauges.
pub fn refresh(
    shared: &Arc<Shared>,
    good: &Good,
    observed: &Observed,
    p: &Plan,
    readings: &Readings,
    held: &HeldCoins,
) {
    let desired = &good.desired;

    let mut coins = BTreeMap::new();
    let mut nodes_gauge: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut drift = BTreeMap::new();
    for coin in desired.coins.values() {
        let name = coin.name.to_string();
        let cp = p.coins.iter().find(|c| c.coin == coin.name);
        let steps = cp.map(|c| c.step_count()).unwrap_or(0);
        drift.insert(name.clone(), steps);
        let mut cs = CoinStatus {
            desired_version: coin.version.to_string(),
            state: if steps == 0 {
                CoinState::InSync
            } else {
                CoinState::Drift
            },
            ..CoinStatus::default()
        };
        if let Some(cp) = cp.filter(|cp| steps == 0 && !cp.unjudged.is_empty()) {
            cs.state = CoinState::NotJudged;
            cs.reason = Some(
                cp.unjudged
                    .iter()
                    .map(|u| format!("{}: {}", u.node, u.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        if let Some(h) = held.get(&coin.name) {
            cs.state = CoinState::Held;
            cs.reason = Some(format!(
                "rollout failed for this revision: {}; push a new commit (or fix the node) to retry",
                h.failure
            ));
            cs.failure = Some(h.failure.clone());
        }
        if let Some(cp) = cp.filter(|cp| !cp.refusals.is_empty()) {
            cs.state = CoinState::Refused;
            cs.reason = Some(
                cp.refusals
                    .iter()
                    .map(|r| r.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            cs.refusals = cp.refusals.clone();
        }
        for z in &coin.zones {
            cs.zones.entry(z.to_string()).or_default();
        }
        let nodes = observed.nodes_of(&coin.name);
        let health = rate_observed(coin, nodes, readings, None);
        for n in nodes {
            let h = health.nodes.get(&n.key);
            *nodes_gauge
                .entry((name.clone(), state_label(&n.state, h)))
                .or_default() += 1;
            let reading = readings.get(&n.key).and_then(|r| r.as_ref().ok());
            cs.zones
                .entry(n.key.zone.to_string())
                .or_default()
                .nodes
                .push(NodeStatus {
                    node: n.key.to_string(),
                    instance_id: n.instance_id.clone(),
                    state: n.state.as_str().to_string(),
                    version: n
                        .daemon
                        .map(|d| d.to_string())
                        .or_else(|| n.version.known().map(|v| v.to_string())),
                    version_from: if n.daemon.is_some() {
                        VersionFrom::Daemon
                    } else {
                        VersionFrom::Tag
                    },
                    recorded_version: n.version.known().map(|v| v.to_string()),
                    height: reading.map(|s| s.blocks),
                    headers: reading.map(|s| s.headers),
                    in_sync: h.map(NodeHealth::is_up),
                    health: h.cloned(),
                    gate: None,
                });
        }
        // A zone with nothing planned whose nodes are all in sync has passed: it is as the
        // revision says (the executor's ZonePassed says it during a rollout).
        for (zone, zs) in cs.zones.iter_mut() {
            let planned = cp.is_some_and(|cp| {
                cp.waves
                    .iter()
                    .any(|w| w.zone.as_ref().is_some_and(|z| z.as_str() == zone))
            });
            zs.passed = !planned
                && !zs.nodes.is_empty()
                && zs.nodes.iter().all(|n| n.in_sync == Some(true));
        }
        coins.insert(name, cs);
    }
    let plan_steps = p.step_count();
    shared.metrics.observed(plan_steps, &drift, &nodes_gauge);
    shared.status_mut(|s| {
        s.commit = Some(good.rev.clone());
        s.commit_summary = good.summary.clone();
        s.coins = coins;
        s.pass.last_plan_steps = plan_steps;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProbeError;

    #[test]
    fn node_states_for_the_gauge() {
        let unreachable = NodeHealth::Unreachable {
            error: ProbeError::Timeout {
                node: "n".into(),
                addr: "a".into(),
                ms: 1,
            },
        };
        let r = InstanceState::Running;
        assert_eq!(
            state_label(&r, Some(&NodeHealth::InSync { height: 1 })),
            "in_sync"
        );
        assert_eq!(state_label(&r, Some(&NodeHealth::Running)), "running");
        assert_eq!(state_label(&r, Some(&unreachable)), "out_of_sync");
        assert_eq!(
            state_label(&InstanceState::Stopped, Some(&unreachable)),
            "stopped"
        );
    }
}
