//! The node watch, in two parts:
//!
//! - [`refresh`]: after each pass's observation, every running node is probed and rated with
//!   the one rating ([`crate::health::rate`]) the executor uses, and the per-coin view of
//!   `/status` and the node gauges of `/metrics` are rebuilt from it. `/status` therefore
//!   never calls a node in sync that the executor would count as down.
//! - [`watch_loop`]: between (and during) passes, every `health.watch_interval` (the shortest
//!   of the fleet's), one observation and one probe of every node, given to the
//!   [`crate::care::Watcher`]: the per-node series of `/metrics`, the incidents (events to
//!   `/status`, the metrics and Slack) and the heals, each journaled before it is made.

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
                    disk_used_percent: None,
                    disk_days_left: None,
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
        // The node watch's view of each deadline stays until its next watch.
        for (name, cs) in coins.iter_mut() {
            let Some(old) = s.coins.get(name) else {
                continue;
            };
            cs.deadline = old.deadline.clone();
            cs.disk = old.disk.clone();
            // And each node's disk figures (read every DISK_EVERY_MS).
            for (zone, zs) in cs.zones.iter_mut() {
                let Some(oz) = old.zones.get(zone) else {
                    continue;
                };
                for n in zs.nodes.iter_mut() {
                    if let Some(o) = oz.nodes.iter().find(|o| o.node == n.node) {
                        n.disk_used_percent = o.disk_used_percent;
                        n.disk_days_left = o.disk_days_left;
                    }
                }
            }
        }
        s.commit = Some(good.rev.clone());
        s.commit_summary = good.summary.clone();
        s.coins = coins;
        s.pass.last_plan_steps = plan_steps;
    });
}

/// Opens the pull request that asks for (or records) a coin's larger data volumes: the
/// bots' GitHub side in `fleet run`, behind this seam so that the engine needs no GitHub.
#[async_trait::async_trait]
pub trait GrowProposer: Send + Sync {
    /// Make sure one pull request raises the coin's `data_volume_gb` to `order.to_gb`
    /// (`grown`: fleet grew the volumes already, the pull request records it).
    async fn propose(
        &self,
        desired: &fleet_repo_schema::Desired,
        order: &crate::care::disk::GrowOrder,
        grown: bool,
    ) -> crate::care::disk::Proposal;
}

/// When the watch runs: the shortest `health.watch_interval` of the revision's coins (the
/// built-in one for a fleet without coins).
pub fn watch_every_ms(desired: &fleet_repo_schema::Desired) -> u64 {
    desired
        .coins
        .values()
        .map(|c| c.health.watch_interval.0.as_millis() as u64)
        .min()
        .unwrap_or(fleet_repo_schema::desired::builtin::WATCH_INTERVAL_SECS * 1000)
        .max(1)
}

/// The node watch: every [`watch_every_ms`] (of the revision in force), once the reconcile
/// loop has made its backend, one [`watch_once`]. Runs until `shutdown`.
pub async fn watch_loop(
    shared: Arc<Shared>,
    good_rx: tokio::sync::watch::Receiver<Option<Arc<Good>>>,
    journal: Arc<crate::store::Journal>,
    notifier: Arc<dyn crate::events::Notifier>,
    repeat_ms: u64,
    proposer: Option<Arc<dyn GrowProposer>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let notifier: Arc<dyn crate::events::Notifier> = Arc::new(super::report::StatusNotifier {
        shared: Arc::clone(&shared),
        next: notifier,
    });
    let mut watcher = crate::care::Watcher::default();
    let mut good_rx = good_rx;
    loop {
        let every = good_rx
            .borrow()
            .as_ref()
            .map(|g| watch_every_ms(&g.desired));
        let Some(every) = every else {
            // No revision in force yet: its coins say how often to watch.
            tokio::select! {
                r = good_rx.changed() => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(every)) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(good) = good_rx.borrow().clone() else {
            continue;
        };
        let Some(backend) = shared.backend() else {
            continue;
        };
        let once = watch_once(
            &shared,
            &good,
            &backend,
            &journal,
            notifier.as_ref(),
            &mut watcher,
            repeat_ms,
            proposer.as_deref(),
        );
        tokio::select! {
            r = once => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "node watch: observing the fleet failed; trying again at the next watch");
                    shared.metrics.error(super::metrics::ErrorKind::Watch);
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One watch: observe and probe the fleet, rate it, tell of the incidents that changed, make
/// the heals asked for (each journaled first: a heal that cannot be recorded is not made).
#[allow(clippy::too_many_arguments)]
pub async fn watch_once(
    shared: &Arc<Shared>,
    good: &Good,
    b: &super::Backend,
    journal: &crate::store::Journal,
    notifier: &dyn crate::events::Notifier,
    watcher: &mut crate::care::Watcher,
    repeat_ms: u64,
    proposer: Option<&dyn GrowProposer>,
) -> Result<(), crate::provider::ProviderError> {
    use crate::events::{Event, StepOutcome};
    let desired = &good.desired;
    let (observed, readings) =
        crate::apply::view::observe_and_probe(b.provider.as_ref(), &b.prober, desired).await?;
    // EC2's own view of the instances; a watch without it still watches the daemons.
    let status = match b.provider.status_checks().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "node watch: EC2 status checks unreadable this time");
            shared.metrics.error(super::metrics::ErrorKind::Watch);
            Default::default()
        }
    };
    let now = b.clock.now_ms();
    // The data volumes' use, every DISK_EVERY_MS (a failed read is tried at the next watch).
    if watcher.disks_due(now) {
        let ids: Vec<String> = observed
            .nodes
            .iter()
            .map(|n| n.instance_id.clone())
            .collect();
        match b
            .provider
            .disk_usage(&ids, now.saturating_sub(crate::care::DISK_WINDOW_MS))
            .await
        {
            Ok(d) => watcher.saw_disks(d, now),
            Err(e) => {
                tracing::warn!(error = %e, "node watch: the data volumes' use (CloudWatch) unreadable this time");
                shared.metrics.error(super::metrics::ErrorKind::Watch);
            }
        }
    }
    let rolling = shared.rolling_mut(|r| r.clone());
    let since = now.saturating_sub(crate::care::heal::DAY_MS);
    let w = watcher.watch(crate::care::Look {
        desired,
        observed: &observed,
        readings: &readings,
        rolling: &rolling,
        status: &status,
        past: &|c| journal.heals(c.as_str(), since),
        now,
        repeat_ms,
        grown: &|c| journal.auto_grown(c.as_str()),
    });
    shared.metrics.watched(&w.coins);
    shared.metrics.api_calls(b.provider.api_calls());
    shared.status_mut(|s| {
        s.watched_ms = Some(now);
        for (coin, cw) in &w.coins {
            let Some(cs) = s.coins.get_mut(coin.as_str()) else {
                continue;
            };
            cs.deadline = cw.deadline.clone();
            for n in &cw.nodes {
                let name = n.key.to_string();
                let reading = readings.get(&n.key).and_then(|r| r.as_ref().ok());
                if let Some(ns) = cs
                    .zones
                    .get_mut(n.key.zone.as_str())
                    .and_then(|z| z.nodes.iter_mut().find(|x| x.node == name))
                {
                    ns.height = reading.map(|r| r.blocks);
                    ns.headers = reading.map(|r| r.headers);
                    ns.in_sync = Some(n.health.is_up());
                    ns.health = Some(n.health.clone());
                    ns.disk_used_percent = n.disk.map(|d| d.used_percent);
                    ns.disk_days_left = n.disk.and_then(|d| d.days_left());
                }
            }
        }
    });
    for (incident, change) in w.changes {
        notifier.notify(now, &Event::Incident { incident, change });
    }
    for h in w.heals {
        let coin = h.node.coin.clone();
        if let Err(e) = journal.append(crate::store::Record::Heal {
            coin: coin.to_string(),
            node: h.node.to_string(),
            reason: h.reason,
            version: h.version.to_string(),
            at_ms: now,
            instance_id: h.reason.replaces().then(|| h.instance_id.clone()),
        }) {
            tracing::error!(error = %e, node = %h.node, "heal not made: the journal cannot record it");
            shared.metrics.error(super::metrics::ErrorKind::Watch);
            continue;
        }
        let node = crate::provider::NodeRef {
            key: h.node.clone(),
            instance_id: h.instance_id.clone(),
        };
        let outcome = if h.reason.replaces() {
            // The journal's record is the request: the next pass plans the Replace step
            // (budget, gate and hand-over as any replacement), and it is woken for it.
            shared.kick.notify_one();
            StepOutcome::Done
        } else {
            match b.provider.restart_daemon(&node, &h.version).await {
                Ok(()) => StepOutcome::Done,
                Err(error) => StepOutcome::Failed { error },
            }
        };
        let at = b.clock.now_ms();
        notifier.notify(
            at,
            &Event::Healed {
                coin,
                node: h.node.clone(),
                reason: h.reason,
                version: h.version.clone(),
                outcome,
            },
        );
        if let Some(incident) = watcher.healed(&h.node, h.reason, now) {
            notifier.notify(
                at,
                &Event::Incident {
                    incident,
                    change: crate::care::incident::Change::Updated,
                },
            );
        }
    }
    for snap in w.snapshot {
        let key = snap.node.clone();
        let node = crate::provider::NodeRef {
            key: key.clone(),
            instance_id: snap.instance_id.clone(),
        };
        let reason = crate::care::snapshots::SCHEDULED;
        let taken = match &snap.stop {
            None => b.provider.snapshot(&node, reason).await,
            Some(v) => {
                crate::provider::snapshot_consistent(b.provider.as_ref(), &node, v, reason).await
            }
        };
        let (snapshot_id, outcome) = match taken {
            Ok(id) => (Some(id), StepOutcome::Done),
            Err(error) => (None, StepOutcome::Failed { error }),
        };
        notifier.notify(
            b.clock.now_ms(),
            &Event::SnapshotTaken {
                coin: key.coin.clone(),
                node: key,
                snapshot_id,
                outcome,
            },
        );
    }
    for order in w.grow {
        grow(
            shared, desired, &observed, b, journal, notifier, watcher, proposer, &rolling, order,
            now,
        )
        .await;
    }
    for (coin, snapshot_id) in w.delete_snapshots {
        let outcome = match b.provider.delete_snapshot(&snapshot_id).await {
            Ok(crate::provider::Outcome::Done) => StepOutcome::Done,
            Ok(crate::provider::Outcome::AlreadyDone) => StepOutcome::AlreadyDone,
            Err(error) => StepOutcome::Failed { error },
        };
        notifier.notify(
            b.clock.now_ms(),
            &Event::SnapshotDeleted {
                coin,
                snapshot_id,
                outcome,
            },
        );
    }
    Ok(())
}

/// A coin's data volumes must grow: with `disk.auto_grow` (and the coin not rolling out),
/// the journal's record first, then every node's volume at once; then the pull request that
/// asks for the size (or records it). Told when it is news.
#[allow(clippy::too_many_arguments)]
async fn grow(
    shared: &Arc<Shared>,
    desired: &fleet_repo_schema::Desired,
    observed: &Observed,
    b: &super::Backend,
    journal: &crate::store::Journal,
    notifier: &dyn crate::events::Notifier,
    watcher: &mut crate::care::Watcher,
    proposer: Option<&dyn GrowProposer>,
    rolling: &std::collections::BTreeSet<fleet_repo_schema::values::CoinName>,
    order: crate::care::disk::GrowOrder,
    now: crate::clock::Millis,
) {
    use crate::care::disk::Proposal;
    use crate::events::{Event, StepOutcome};
    let coin = order.coin.clone();
    let mut grown = Vec::new();
    let auto = order.auto && !rolling.contains(&coin);
    if auto {
        let recorded = journal.append(crate::store::Record::AutoGrow {
            coin: coin.to_string(),
            to_gb: order.to_gb,
            reason: order.reason.to_string(),
            at_ms: now,
        });
        match recorded {
            Err(e) => {
                tracing::error!(error = %e, coin = %coin, "auto-grow not made: the journal cannot record it");
                shared.metrics.error(super::metrics::ErrorKind::Watch);
            }
            Ok(()) => {
                for n in observed.nodes_of(&coin) {
                    if n.data_volume
                        .as_ref()
                        .is_none_or(|v| v.size_gb >= order.to_gb)
                    {
                        continue;
                    }
                    let node = crate::provider::NodeRef {
                        key: n.key.clone(),
                        instance_id: n.instance_id.clone(),
                    };
                    let outcome = match b.provider.grow_volume(&node, order.to_gb).await {
                        Ok(crate::provider::Outcome::Done) => StepOutcome::Done,
                        Ok(crate::provider::Outcome::AlreadyDone) => StepOutcome::AlreadyDone,
                        Err(error) => StepOutcome::Failed { error },
                    };
                    grown.push((n.key.clone(), outcome));
                }
            }
        }
    }
    let proposal = match proposer {
        Some(p) => p.propose(desired, &order, auto).await,
        None => Proposal::NoGitHub,
    };
    if watcher.disk_news(&coin, &proposal, !grown.is_empty()) {
        notifier.notify(
            b.clock.now_ms(),
            &Event::DiskGrow {
                coin,
                order,
                grown,
                proposal,
            },
        );
    }
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
