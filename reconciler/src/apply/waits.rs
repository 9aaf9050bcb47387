//! Everything the executor waits on the chain for: the budget before a wave
//! (`max_unavailable`), the gates after it, the zone's bake, and the earlier zones before a
//! coin's first wave. Every wait asks the same two things: the shared view (which instances
//! exist and run) and the probes, judged by [`crate::health::rate`] and the [`Gate`].

use super::view::{probe_address, rate_observed};
use super::{CoinReport, CoinRun, Executor, StepResult, Stop};
use crate::clock::Millis;
use crate::events::{BudgetWait, Event, Failure, GatePhase};
use crate::health::rating::reference_height;
use crate::health::{
    ChainStatus, CoinHealth, Gate, GateConfig, GateFailure, ProbeError, ProbeTarget, Verdict,
};
use crate::node::NodeKey;
use crate::plan::{Action, ObservedNode, Orphan, ReplaceCause, Wave};
use crate::store::Record;
use fleet_repo_schema::values::{Version, Zone};
use fleet_repo_schema::{Coin, Probe};
use std::collections::{BTreeMap, BTreeSet};

type Readings = BTreeMap<NodeKey, Result<ChainStatus, ProbeError>>;

/// The nodes of `nodes` a probe dials at their private address ([`probe_address`]).
fn addresses(coin: &Coin, nodes: &[ObservedNode]) -> BTreeMap<NodeKey, String> {
    nodes
        .iter()
        .filter_map(|n| {
            let slot = coin.nodes.iter().find(|s| NodeKey::of(s) == n.key)?;
            Some((n.key.clone(), probe_address(&slot.dns_name, n)?))
        })
        .collect()
}

/// What the steps of a wave mean for its gate.
#[derive(Debug, Default)]
struct AfterSteps {
    /// Nodes launched on an empty volume: a sync from genesis, gated on progress only.
    full_sync: BTreeSet<NodeKey>,
    /// The version each node's step started, which its daemon must report once in sync.
    versions: BTreeMap<NodeKey, Version>,
    /// The nodes a step waits on (a hand-over): once one node has failed, the gate goes on
    /// until each of these has passed or failed too, and no longer for the others.
    awaited: BTreeSet<NodeKey>,
}

/// How a gate ended, when it was not cancelled.
#[derive(Debug, Default)]
pub(super) struct Gated {
    /// The nodes in sync at the gate's last reading.
    pub(super) passed: BTreeSet<NodeKey>,
    /// The first node that failed, if one did: the coin's failure.
    pub(super) failure: Option<Failure>,
}

impl Gated {
    /// The gate as a step result: its failure stops the coin.
    pub(super) fn passed_all(self) -> StepResult<()> {
        super::stopped_by(self.failure)
    }
}

impl Executor {
    fn target(
        &self,
        coin: &Coin,
        key: &NodeKey,
        instance_id: &str,
        address: Option<&String>,
    ) -> ProbeTarget {
        let dns_name = coin
            .nodes
            .iter()
            .find(|s| NodeKey::of(s) == *key)
            .map(|s| s.dns_name.clone())
            .unwrap_or_default();
        ProbeTarget {
            key: key.clone(),
            instance_id: instance_id.to_string(),
            dns_name,
            address: address.cloned(),
            health: coin.health.clone(),
        }
    }

    /// Probe `nodes` (key, instance id): every one, whatever its observed state. One after
    /// the other, as close together in time as the probes allow: the readings are compared
    /// with each other (the reference height), and readings taken far apart would make a
    /// node that is in sync look behind on a fast chain.
    /// A node with an entry in `addresses` is dialled there, not at its name.
    async fn probe(
        &self,
        coin: &Coin,
        nodes: &[(NodeKey, String)],
        addresses: &BTreeMap<NodeKey, String>,
    ) -> Readings {
        let mut readings = Readings::new();
        if coin.health.probe == Probe::None {
            return readings;
        }
        for (k, id) in nodes {
            let r = self
                .prober
                .probe(&self.target(coin, k, id, addresses.get(k)))
                .await;
            readings.insert(k.clone(), r);
        }
        readings
    }

    /// Probe the running ones of `nodes` and rate them all.
    pub(super) async fn rate_now(
        &self,
        coin: &Coin,
        nodes: &[ObservedNode],
    ) -> (CoinHealth, Readings) {
        let running: Vec<(NodeKey, String)> = nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| (n.key.clone(), n.instance_id.clone()))
            .collect();
        let readings = self.probe(coin, &running, &addresses(coin, nodes)).await;
        let health = rate_observed(coin, nodes, &readings, None);
        (health, readings)
    }

    /// The coin's nodes as a gate of `nodes` (key, instance id) sees them: a gated instance
    /// that is the replacement of its slot's node (a `replace` under way) stands in for the
    /// node it replaces (and, the name being the old instance's until the hand-over after the
    /// gate, is dialled at its private address: [`probe_address`]).
    async fn gated_view(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        nodes: &[(NodeKey, String)],
    ) -> StepResult<Vec<ObservedNode>> {
        let observed = run.view.for_coin(&coin.name).await?;
        Ok(observed
            .nodes_of(&coin.name)
            .iter()
            .map(|n| {
                let gated = nodes.iter().find(|(k, _)| *k == n.key).map(|(_, id)| id);
                let stand_in = gated.filter(|id| **id != n.instance_id).and_then(|id| {
                    observed.orphans.iter().find_map(|o| match o {
                        Orphan::Replacement { of, node }
                            if node.instance_id == *id && *of == n.instance_id =>
                        {
                            Some(node)
                        }
                        _ => None,
                    })
                });
                match stand_in {
                    Some(r) => ObservedNode {
                        key: n.key.clone(),
                        ..r.clone()
                    },
                    None => n.clone(),
                }
            })
            .collect())
    }

    /// The coin's nodes, from the shared view.
    pub(super) async fn nodes_of(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
    ) -> StepResult<Vec<ObservedNode>> {
        let observed = run.view.for_coin(&coin.name).await?;
        Ok(observed.nodes_of(&coin.name).to_vec())
    }

    async fn sleep(&self, run: &CoinRun<'_>, ms: u64) -> StepResult<()> {
        tokio::select! {
            _ = self.clock.sleep(ms) => Ok(()),
            _ = run.cancel.cancelled() => Err(Stop::Cancelled),
        }
    }

    /// Wait until taking the wave's nodes down keeps the coin within `max_unavailable`.
    pub(super) async fn wait_for_budget(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        wave: &Wave,
    ) -> StepResult<()> {
        let disrupted: BTreeSet<NodeKey> = wave.disrupted().into_iter().cloned().collect();
        let t0 = self.now();
        let limit = coin.health.stall_timeout.0.as_millis() as u64;
        let mut told = false;
        loop {
            let nodes = self.nodes_of(run, coin).await?;
            let (health, _) = self.rate_now(coin, &nodes).await;
            let down: BTreeSet<&NodeKey> = health.down().collect();
            let others: Vec<NodeKey> = down
                .iter()
                .filter(|k| !disrupted.contains(**k))
                .map(|k| (*k).clone())
                .collect();
            let would_be = others.len() + disrupted.len();
            // A wave whose nodes are all down already takes nothing down.
            let adds = disrupted.iter().any(|k| !down.contains(k));
            if !adds || would_be as u32 <= run.cp.max_unavailable {
                return Ok(());
            }
            let wait = BudgetWait {
                others_down: others,
                taking: disrupted.len(),
                max_unavailable: run.cp.max_unavailable,
            };
            let waited_ms = self.now() - t0;
            if waited_ms >= limit {
                return Err(Stop::from(Failure::Budget {
                    zone: zone.clone(),
                    others_down: wait.others_down,
                    taking: wait.taking,
                    max_unavailable: wait.max_unavailable,
                    waited_ms,
                }));
            }
            if !told {
                told = true;
                self.emit(Event::Waiting {
                    coin: coin.name.clone(),
                    zone: zone.clone(),
                    wait,
                });
            }
            self.sleep(run, self.opts.poll_ms).await?;
        }
    }

    /// Gate the nodes `wave` took down (`ids`: their instance ids).
    pub(super) async fn gate_wave(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        wave: &Wave,
        ids: &BTreeMap<NodeKey, String>,
        report: &mut CoinReport,
    ) -> StepResult<Gated> {
        let nodes: Vec<(NodeKey, String)> = wave
            .disrupted()
            .into_iter()
            .filter_map(|k| ids.get(k).map(|id| (k.clone(), id.clone())))
            .collect();
        if nodes.is_empty() {
            return Ok(Gated::default());
        }
        // Launched on an empty volume: a sync from genesis, gated on progress only.
        let full_sync: BTreeSet<NodeKey> = wave
            .steps
            .iter()
            .filter(|s| {
                matches!(
                    s.action,
                    Action::Launch {
                        snapshot_id: None,
                        ..
                    }
                )
            })
            .filter_map(|s| s.node.clone())
            .collect();
        // What each node's daemon must report once in sync: the version its step started.
        let expects: BTreeMap<NodeKey, Version> = wave
            .steps
            .iter()
            .filter(|_| coin.health.daemon_version)
            .filter_map(|s| match &s.action {
                Action::Upgrade { to, .. } | Action::RollBack { to, .. } => {
                    Some((s.node.clone()?, to.clone()))
                }
                Action::Launch { version, .. } => Some((s.node.clone()?, version.clone())),
                // A replacement is launched at the coin's version. A resumed one runs what it
                // was launched with, which a bump since may have left behind: nothing is
                // expected of it (the plan after its hand-over upgrades it like any node).
                Action::Replace { cause } if *cause != ReplaceCause::Resume => {
                    Some((s.node.clone()?, coin.version.clone()))
                }
                _ => None,
            })
            .collect();
        let t0 = self.now();
        let after = AfterSteps {
            full_sync,
            versions: expects,
            // A step waits for this gate (a hand-over): the nodes that pass are told apart
            // from one that fails, so that one failure does not leave the others' names on
            // their stopped instances.
            awaited: wave
                .steps
                .iter()
                .filter(|s| s.action.after_gate())
                .filter_map(|s| s.node.clone())
                .filter(|k| ids.contains_key(k))
                .collect(),
        };
        let gated = self
            .gate_nodes(run, coin, zone, &nodes, &after, GatePhase::AfterStep)
            .await?;
        report.gate_wait_ms += self.now() - t0;
        Ok(gated)
    }

    /// Gate `nodes` (key, instance id) until all are in sync, or one fails: then once each
    /// node of `after.awaited` has passed or failed as well (at once when there are none).
    async fn gate_nodes(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        nodes: &[(NodeKey, String)],
        after: &AfterSteps,
        phase: GatePhase,
    ) -> StepResult<Gated> {
        let (full_sync, expects) = (&after.full_sync, &after.versions);
        if coin.health.probe == Probe::None {
            // The explicit choice of a coin without RPC: running is all that is known.
            return self.wait_running(run, coin, zone, nodes).await;
        }
        let cfg = GateConfig::of(&coin.health);
        let start = self.now();
        let mut gates: BTreeMap<NodeKey, Gate> = nodes
            .iter()
            .map(|(k, _)| {
                let cfg = if full_sync.contains(k) {
                    cfg.full_sync()
                } else {
                    cfg
                };
                (k.clone(), Gate::new(cfg, start))
            })
            .collect();
        let gated: BTreeSet<&NodeKey> = nodes.iter().map(|(k, _)| k).collect();
        // Observed once: instance ids do not change during a gate; from then on only the
        // nodes are asked.
        let all = self.gated_view(run, coin, nodes).await?;
        let dial = addresses(coin, &all);
        let others: Vec<(NodeKey, String)> = all
            .into_iter()
            .filter(|n| n.running() && !gated.contains(&n.key))
            .map(|n| (n.key, n.instance_id))
            .collect();
        let everyone: Vec<(NodeKey, String)> = others.iter().chain(nodes).cloned().collect();
        // The nodes whose gate failed (no longer observed) and the first failure.
        let mut failed: BTreeSet<NodeKey> = BTreeSet::new();
        let mut first: Option<Failure> = None;
        loop {
            let readings = self.probe(coin, &everyone, &dial).await;
            let reference = reference_height(readings.values());
            let now = self.now();
            let mut in_sync: BTreeSet<&NodeKey> = BTreeSet::new();
            for (key, _) in nodes {
                if failed.contains(key) {
                    continue;
                }
                let gate = gates.get_mut(key).expect("one gate per node");
                let reading = readings
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| no_reading(key));
                let v = gate.observe(now, &reading, reference);
                self.emit(Event::Gate {
                    coin: coin.name.clone(),
                    zone: zone.clone(),
                    node: key.clone(),
                    verdict: v.clone(),
                });
                // In sync at another version than the step started: held, never retried.
                let wrong = match (&v, &reading, expects.get(key)) {
                    (Verdict::InSync { .. }, Ok(r), Some(want)) => r
                        .client
                        .filter(|d| d.is(want) == Some(false))
                        .map(|d| GateFailure::WrongVersion {
                            expected: want.to_string(),
                            reports: d.to_string(),
                        }),
                    _ => None,
                };
                if let Some(failure) = &wrong {
                    // Recorded on the node, so that no later plan (a new revision, a restart
                    // of fleet) restarts it on the same image again.
                    if let (GateFailure::WrongVersion { expected, reports }, Some((_, id))) =
                        (failure, nodes.iter().find(|(k, _)| k == key))
                    {
                        let digest = coin
                            .image
                            .digest
                            .as_ref()
                            .filter(|_| coin.version.as_str() == expected)
                            .map(|d| d.to_string());
                        let value =
                            crate::provider::tags::image_runs(expected, digest.as_deref(), reports);
                        let node = crate::provider::NodeRef {
                            key: key.clone(),
                            instance_id: id.clone(),
                        };
                        if let Err(e) = self.provider.record_image_runs(&node, &value).await {
                            tracing::warn!(node = %key, error = %e, "could not record what the image runs");
                        }
                    }
                }
                let failure = match (wrong, v) {
                    (Some(failure), _) | (None, Verdict::Failed(failure)) => failure,
                    (None, Verdict::InSync { .. }) => {
                        in_sync.insert(key);
                        continue;
                    }
                    (None, Verdict::Waiting { .. }) => continue,
                };
                failed.insert(key.clone());
                first.get_or_insert(Failure::Gate {
                    zone: zone.clone(),
                    node: key.clone(),
                    phase,
                    failure,
                });
            }
            let done = if first.is_some() {
                // Failed: what is left to know is the verdict of the nodes a step waits on.
                after
                    .awaited
                    .iter()
                    .all(|k| failed.contains(k) || in_sync.contains(k))
            } else {
                in_sync.len() == nodes.len()
            };
            if done {
                return Ok(Gated {
                    passed: in_sync.into_iter().cloned().collect(),
                    failure: first,
                });
            }
            if let Err(stop) = self.sleep(run, self.opts.poll_ms).await {
                // Cancelled while the others settle: the failure is still the coin's.
                return Err(first.map(Stop::from).unwrap_or(stop));
            }
        }
    }

    /// Probe `none`: wait until the nodes' instances run, within `sync_timeout`.
    async fn wait_running(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        nodes: &[(NodeKey, String)],
    ) -> StepResult<Gated> {
        let t0 = self.now();
        let limit = coin.health.sync_timeout.0.as_millis() as u64;
        loop {
            let all = self.gated_view(run, coin, nodes).await?;
            let (health, _) = self.rate_now(coin, &all).await;
            let (up, waiting): (Vec<&NodeKey>, Vec<&NodeKey>) =
                nodes.iter().map(|(k, _)| k).partition(|k| health.is_up(k));
            if waiting.is_empty() || self.now() - t0 >= limit {
                return Ok(Gated {
                    passed: up.into_iter().cloned().collect(),
                    failure: (!waiting.is_empty()).then(|| Failure::NotRunning {
                        zone: zone.clone(),
                        nodes: waiting.into_iter().cloned().collect(),
                        after_ms: limit,
                    }),
                });
            }
            self.sleep(run, self.opts.poll_ms).await?;
        }
    }

    /// Hold every node of `zone` in sync for `bake`, resuming a journaled bake.
    pub(super) async fn bake(&self, run: &CoinRun<'_>, coin: &Coin, zone: &Zone) -> StepResult<()> {
        self.bake_as(run, coin, zone, coin.version.as_str()).await
    }

    /// [`Executor::bake`], journaled under `version` (the rollout's target; a rollback's
    /// bake has a key of its own, so that it never reads as the zone's bake at a version).
    pub(super) async fn bake_as(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        version: &str,
    ) -> StepResult<()> {
        let bake_ms = coin.rollout.bake.0.as_millis() as u64;
        let mut start = match self
            .journal
            .bake_started(coin.name.as_str(), zone.as_str(), version)
        {
            Some(t) if t <= self.now() => t,
            _ => self.begin_bake(coin, zone, version)?,
        };
        let cfg = GateConfig::of(&coin.health);
        let mut gates: BTreeMap<NodeKey, Gate> = BTreeMap::new();
        let mut broken = false;
        let all = self.nodes_of(run, coin).await?;
        loop {
            let (health, readings) = self.rate_now(coin, &all).await;
            let mut all_ok = true;
            for n in all.iter().filter(|n| n.key.zone == *zone) {
                if health.is_up(&n.key) {
                    gates.remove(&n.key);
                    continue;
                }
                all_ok = false;
                // Out of sync during the bake: it gets the gate's own timeouts to come
                // back, and the bake starts over once it has.
                let now = self.now();
                let gate = gates
                    .entry(n.key.clone())
                    .or_insert_with(|| Gate::new(cfg, now));
                let reading = readings
                    .get(&n.key)
                    .cloned()
                    .unwrap_or_else(|| no_reading(&n.key));
                let v = gate.observe(now, &reading, health.reference);
                self.emit(Event::Gate {
                    coin: coin.name.clone(),
                    zone: zone.clone(),
                    node: n.key.clone(),
                    verdict: v.clone(),
                });
                if let Verdict::Failed(failure) = v {
                    return Err(Stop::from(Failure::Gate {
                        zone: zone.clone(),
                        node: n.key.clone(),
                        phase: GatePhase::Bake,
                        failure,
                    }));
                }
            }
            let now = self.now();
            if !all_ok {
                broken = true;
            } else if broken {
                // Back in sync: the bake starts over (journaled once, not at every reading).
                broken = false;
                start = self.begin_bake(coin, zone, version)?;
            } else if now - start >= bake_ms {
                // Unrecorded, a passed bake would be waited again after a restart, which is
                // safe; going on to the next zone without the record is not what the journal
                // promises, so the coin stops here.
                self.journal
                    .append(Record::ZonePassed {
                        coin: coin.name.to_string(),
                        zone: zone.to_string(),
                        version: version.to_string(),
                        at_ms: now,
                    })
                    .map_err(|e| {
                        Stop::from(Failure::Journal {
                            error: e.to_string(),
                        })
                    })?;
                return Ok(());
            }
            let elapsed_ms = if broken { 0 } else { now.saturating_sub(start) };
            self.emit(Event::Baking {
                coin: coin.name.clone(),
                zone: zone.clone(),
                elapsed_ms,
                bake_ms,
            });
            // Sleep to the end of the bake when it is near, so the bake is not overshot.
            let left = bake_ms.saturating_sub(elapsed_ms);
            self.sleep(run, self.opts.poll_ms.min(left.max(1))).await?;
        }
    }

    fn begin_bake(&self, coin: &Coin, zone: &Zone, version: &str) -> StepResult<Millis> {
        let now = self.now();
        self.journal
            .append(Record::BakeStarted {
                coin: coin.name.to_string(),
                zone: zone.to_string(),
                version: version.to_string(),
                at_ms: now,
            })
            .map_err(|e| {
                Stop::from(Failure::Journal {
                    error: e.to_string(),
                })
            })?;
        Ok(now)
    }

    /// Before a coin's first wave in `zone`: every node of every earlier zone must be in sync,
    /// and an earlier zone whose bake towards this version has not passed (a crash after its
    /// nodes were changed, or a lost journal) is baked first.
    pub(super) async fn earlier_zones_ready(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        report: &mut CoinReport,
    ) -> StepResult<()> {
        let Some(pos) = coin.zones.iter().position(|z| z == zone) else {
            return Ok(());
        };
        if pos == 0 {
            return Ok(());
        }
        let all = self.nodes_of(run, coin).await?;
        for earlier in &coin.zones[..pos] {
            let nodes: Vec<(NodeKey, String)> = all
                .iter()
                .filter(|n| n.key.zone == *earlier)
                .map(|n| (n.key.clone(), n.instance_id.clone()))
                .collect();
            if nodes.is_empty() {
                continue;
            }
            let t0 = self.now();
            self.gate_nodes(
                run,
                coin,
                earlier,
                &nodes,
                &AfterSteps::default(),
                GatePhase::EarlierZone,
            )
            .await?
            .passed_all()?;
            if !self.journal.zone_passed(
                coin.name.as_str(),
                earlier.as_str(),
                coin.version.as_str(),
            ) {
                self.bake(run, coin, earlier).await?;
            }
            report.gate_wait_ms += self.now() - t0;
        }
        Ok(())
    }
}

/// The reading of a node that was not probed (not running): what a probe would have said.
fn no_reading(key: &NodeKey) -> Result<ChainStatus, ProbeError> {
    Err(ProbeError::Config {
        node: key.to_string(),
        detail: "instance not running".into(),
    })
}
