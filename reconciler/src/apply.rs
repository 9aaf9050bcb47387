//! The executor: carries a [`Plan`] out, coin by coin in parallel (a global bound), and within
//! a coin wave by wave, zone by zone, never moving on before the chain says the zone is in
//! sync and has stayed so for `bake`.
//!
//! What holds, whatever happens (tested in `tests/tests/executor.rs` with injected faults):
//! - Within a coin, never more than `max_unavailable` nodes are down at once, counting every
//!   node of the coin that is not in sync, including ones down for reasons of their own: a
//!   wave starts only when it fits, and waits (up to `stall_timeout`) for others to recover.
//! - A zone starts only after every node of every earlier zone of the coin is in sync, and
//!   the previous zone's bake is complete (bakes are journaled, so a crash resumes them).
//! - A failed gate stops that coin's rollout, records why (journal), tells the notifier, and
//!   touches nothing further of that coin; other coins go on.
//! - An approval applies to one (coin, target version, commit) and is read from the journal.
//! - Each step is idempotent; a crash at any point followed by a new plan and apply converges
//!   without restarting a node that already runs its target version (an interrupted upgrade
//!   is confirmed with the node before any restart).
//! - Cancellation (Ctrl-C, SIGTERM) is honoured between steps and during waits, never in the
//!   middle of a step.

use crate::clock::{Clock, Millis};
use crate::health::{Gate, GateConfig, ProbeTarget, Prober, Verdict};
use crate::observe::{
    InstanceState, LaunchSpec, NodeKey, NodeRef, Observed, ObservedNode, Outcome, Provider,
    ProviderError,
};
use crate::plan::{Action, CoinPlan, Plan, Step, Wave, WaveKind};
use crate::store::{Decision, Journal, Record};
use fleet_repo_schema::{Coin, Desired, Probe};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the executor reports as it goes: the progress display, logs and (later) Slack.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A coin's rollout begins.
    RolloutStarted {
        /// Coin.
        coin: String,
        /// Commit of the fleet repository the plan came from.
        commit: String,
        /// Versions now.
        from: Vec<String>,
        /// Target (None: the coin is being removed).
        to: Option<String>,
        /// Zones in order.
        zones: Vec<String>,
        /// Steps.
        steps: usize,
    },
    /// The rollout waits for a person.
    ApprovalNeeded {
        /// Coin.
        coin: String,
        /// Target version (or `retire`).
        version: String,
        /// Commit.
        commit: String,
        /// Why.
        reasons: Vec<String>,
        /// Versions running now.
        from: Vec<String>,
        /// Zones the rollout would go through, in order.
        zones: Vec<String>,
        /// Steps it would take.
        steps: usize,
    },
    /// A step is about to run.
    StepStarted {
        /// Coin.
        coin: String,
        /// Node.
        node: NodeKey,
        /// What, in words.
        action: String,
    },
    /// A step ran.
    StepFinished {
        /// Coin.
        coin: String,
        /// Node.
        node: NodeKey,
        /// Action name.
        action: String,
        /// `done`, `already-done`, or the error.
        outcome: String,
    },
    /// Waiting for other nodes of the coin to recover before taking more down.
    Waiting {
        /// Coin.
        coin: String,
        /// Why.
        reason: String,
    },
    /// A gate reading.
    Gate {
        /// Coin.
        coin: String,
        /// Zone.
        zone: String,
        /// Node.
        node: NodeKey,
        /// What the gate said.
        verdict: Verdict,
    },
    /// A zone's bake progresses.
    Baking {
        /// Coin.
        coin: String,
        /// Zone.
        zone: String,
        /// Healthy for this long.
        elapsed_ms: u64,
        /// Of this long.
        bake_ms: u64,
    },
    /// A zone passed its gate and bake.
    ZonePassed {
        /// Coin.
        coin: String,
        /// Zone.
        zone: String,
        /// From its first step to the end of its bake.
        took_ms: u64,
    },
    /// A coin's rollout completed.
    RolloutFinished {
        /// Coin.
        coin: String,
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
        /// `file:line:column: message` per error.
        errors: Vec<String>,
    },
    /// A coin's rollout stopped on a failure.
    RolloutFailed {
        /// Coin.
        coin: String,
        /// Zone, if one.
        zone: Option<String>,
        /// Node, if one.
        node: Option<NodeKey>,
        /// Why.
        reason: String,
    },
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
pub struct RecordingNotifier(std::sync::Mutex<Vec<(Millis, Event)>>);

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

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// How the executor runs.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Coins rolled out at once.
    pub parallel_coins: usize,
    /// Time between gate readings, in the clock's ms.
    pub poll_ms: u64,
    /// Commit of the fleet repository the plan came from (approvals are per commit).
    pub commit: String,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            parallel_coins: 32,
            poll_ms: 5_000,
            commit: "local".into(),
        }
    }
}

/// How a coin's rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum CoinOutcome {
    /// Every wave done.
    Completed,
    /// Stopped on a failure.
    Failed {
        /// Why.
        reason: String,
    },
    /// Not started: waits for an approval.
    AwaitingApproval,
    /// Not started: the approval was refused.
    Rejected {
        /// By whom.
        by: String,
    },
    /// Not started: the plan refuses something for this coin.
    Refused {
        /// Why.
        reasons: Vec<String>,
    },
    /// Stopped between steps on request.
    Cancelled,
}

/// One coin's rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoinReport {
    /// Coin.
    pub coin: String,
    /// How it ended.
    pub outcome: CoinOutcome,
    /// Start (clock ms).
    pub started_ms: Millis,
    /// End (clock ms).
    pub finished_ms: Millis,
    /// Time spent waiting on gates and bakes.
    pub gate_wait_ms: u64,
    /// Steps run (including already-done ones).
    pub steps: usize,
}

/// The whole apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplyReport {
    /// Per coin, in plan order.
    pub coins: Vec<CoinReport>,
    /// Start (clock ms).
    pub started_ms: Millis,
    /// End (clock ms).
    pub finished_ms: Millis,
}

impl ApplyReport {
    /// Whether every coin completed.
    pub fn all_completed(&self) -> bool {
        self.coins
            .iter()
            .all(|c| c.outcome == CoinOutcome::Completed)
    }
}

/// The executor.
pub struct Executor {
    /// The world.
    pub provider: Arc<dyn Provider>,
    /// Node health.
    pub prober: Arc<dyn Prober>,
    /// The journal.
    pub journal: Arc<Journal>,
    /// Where events go.
    pub notifier: Arc<dyn Notifier>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub opts: ExecOptions,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("provider", &self.provider.name())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Why a coin's rollout stopped early (internal).
enum Stop {
    Failed {
        zone: Option<String>,
        node: Option<NodeKey>,
        reason: String,
    },
    Cancelled,
}

type StepResult<T> = Result<T, Stop>;

impl Executor {
    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn emit(&self, e: Event) {
        self.notifier.notify(self.now(), &e);
    }

    /// Carry out `plan` for `desired`. Coins run in parallel up to `parallel_coins`.
    pub async fn apply(
        self: &Arc<Self>,
        desired: &Arc<Desired>,
        plan: &Plan,
        cancel: &CancellationToken,
    ) -> ApplyReport {
        let started_ms = self.now();
        let sem = Arc::new(tokio::sync::Semaphore::new(self.opts.parallel_coins.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for (i, cp) in plan.coins.iter().enumerate() {
            let (me, desired, cp, cancel, sem) = (
                Arc::clone(self),
                Arc::clone(desired),
                cp.clone(),
                cancel.clone(),
                Arc::clone(&sem),
            );
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (i, me.run_coin(&desired, &cp, &cancel).await)
            });
        }
        let mut coins: Vec<(usize, CoinReport)> = Vec::with_capacity(plan.coins.len());
        while let Some(r) = set.join_next().await {
            match r {
                Ok(x) => coins.push(x),
                // A panic in one coin's task is a bug; report it as that coin's failure.
                Err(e) => tracing::error!(error = %e, "a coin's rollout task ended abnormally"),
            }
        }
        coins.sort_by_key(|(i, _)| *i);
        ApplyReport {
            coins: coins.into_iter().map(|(_, r)| r).collect(),
            started_ms,
            finished_ms: self.now(),
        }
    }

    /// One coin's rollout.
    pub async fn run_coin(
        &self,
        desired: &Desired,
        cp: &CoinPlan,
        cancel: &CancellationToken,
    ) -> CoinReport {
        let started_ms = self.now();
        let mut report = CoinReport {
            coin: cp.coin.clone(),
            outcome: CoinOutcome::Completed,
            started_ms,
            finished_ms: started_ms,
            gate_wait_ms: 0,
            steps: 0,
        };
        if !cp.refusals.is_empty() {
            report.outcome = CoinOutcome::Refused {
                reasons: cp.refusals.iter().map(|r| r.reason.clone()).collect(),
            };
            return report;
        }
        let version_key = approval_version(cp);
        let zones: Vec<String> = {
            let mut z: Vec<String> = Vec::new();
            for w in cp.waves.iter().filter(|w| w.kind == WaveKind::Rollout) {
                if !z.contains(&w.zone) {
                    z.push(w.zone.clone());
                }
            }
            z
        };
        if let Some(need) = &cp.approval {
            match self
                .journal
                .approval(&cp.coin, &version_key, &self.opts.commit)
            {
                Some((Decision::Approved, _)) => {}
                Some((Decision::Rejected, by)) => {
                    report.outcome = CoinOutcome::Rejected { by };
                    return report;
                }
                None => {
                    self.emit(Event::ApprovalNeeded {
                        coin: cp.coin.clone(),
                        version: version_key,
                        commit: self.opts.commit.clone(),
                        reasons: need.reasons.clone(),
                        from: cp.from_versions.clone(),
                        zones: zones.clone(),
                        steps: cp.step_count(),
                    });
                    report.outcome = CoinOutcome::AwaitingApproval;
                    return report;
                }
            }
        }
        self.emit(Event::RolloutStarted {
            coin: cp.coin.clone(),
            commit: self.opts.commit.clone(),
            from: cp.from_versions.clone(),
            to: cp.target.as_ref().map(|v| v.to_string()),
            zones,
            steps: cp.step_count(),
        });
        let coin = desired.coins.get(cp.coin.as_str());
        let r = self.run_waves(desired, coin, cp, cancel, &mut report).await;
        report.finished_ms = self.now();
        match r {
            Ok(()) => {
                self.emit(Event::RolloutFinished {
                    coin: cp.coin.clone(),
                    took_ms: report.finished_ms - started_ms,
                });
            }
            Err(Stop::Cancelled) => report.outcome = CoinOutcome::Cancelled,
            Err(Stop::Failed { zone, node, reason }) => {
                let _ = self.journal.append(Record::GateFailed {
                    coin: cp.coin.clone(),
                    node: node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    reason: reason.clone(),
                    at_ms: self.now(),
                });
                self.emit(Event::RolloutFailed {
                    coin: cp.coin.clone(),
                    zone,
                    node,
                    reason: reason.clone(),
                });
                report.outcome = CoinOutcome::Failed { reason };
            }
        }
        report
    }

    async fn run_waves(
        &self,
        desired: &Desired,
        coin: Option<&Coin>,
        cp: &CoinPlan,
        cancel: &CancellationToken,
        report: &mut CoinReport,
    ) -> StepResult<()> {
        let mut zone_started: BTreeMap<String, Millis> = BTreeMap::new();
        let mut prechecked = false;
        for (wi, wave) in cp.waves.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            match wave.kind {
                WaveKind::Repair => {
                    // Its nodes are down already: the budget check lets it through unless
                    // one came back up meanwhile; no bake (the zone's rollout has its own).
                    let coin = coin.ok_or_else(|| failed(None, None, "coin missing".into()))?;
                    self.wait_for_budget(desired, coin, cp, wave, cancel)
                        .await?;
                    let ids = self
                        .run_steps(desired, Some(coin), cp, wave, report, cancel)
                        .await?;
                    self.gate_wave(desired, coin, wave, &ids, cancel, report)
                        .await?;
                }
                WaveKind::Rollout => {
                    let coin = coin.ok_or_else(|| failed(None, None, "coin missing".into()))?;
                    if !prechecked {
                        prechecked = true;
                        self.earlier_zones_ready(desired, coin, &wave.zone, cancel, report)
                            .await?;
                    }
                    zone_started.entry(wave.zone.clone()).or_insert(self.now());
                    let disrupted = wave.disrupted();
                    if !disrupted.is_empty() {
                        self.wait_for_budget(desired, coin, cp, wave, cancel)
                            .await?;
                    }
                    let ids = self
                        .run_steps(desired, Some(coin), cp, wave, report, cancel)
                        .await?;
                    self.gate_wave(desired, coin, wave, &ids, cancel, report)
                        .await?;
                    let last_of_zone = cp
                        .waves
                        .get(wi + 1)
                        .is_none_or(|n| n.zone != wave.zone || n.kind != WaveKind::Rollout);
                    let zone_disrupted = cp.waves.iter().any(|w| {
                        w.kind == WaveKind::Rollout
                            && w.zone == wave.zone
                            && !w.disrupted().is_empty()
                    });
                    if last_of_zone && zone_disrupted {
                        let t0 = self.now();
                        self.bake(desired, coin, &wave.zone, cancel).await?;
                        report.gate_wait_ms += self.now() - t0;
                        self.emit(Event::ZonePassed {
                            coin: cp.coin.clone(),
                            zone: wave.zone.clone(),
                            took_ms: self.now() - zone_started[&wave.zone],
                        });
                    }
                }
                WaveKind::Retire | WaveKind::Cleanup => {
                    self.run_steps(desired, coin, cp, wave, report, cancel)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Gate the nodes `wave` took down (`ids`: their instance ids).
    async fn gate_wave(
        &self,
        desired: &Desired,
        coin: &Coin,
        wave: &Wave,
        ids: &BTreeMap<NodeKey, String>,
        cancel: &CancellationToken,
        report: &mut CoinReport,
    ) -> StepResult<()> {
        let nodes: Vec<(NodeKey, String)> = wave
            .disrupted()
            .into_iter()
            .filter_map(|k| ids.get(k).map(|id| (k.clone(), id.clone())))
            .collect();
        if nodes.is_empty() {
            return Ok(());
        }
        let t0 = self.now();
        self.gate_nodes(desired, coin, &wave.zone, &nodes, cancel)
            .await?;
        report.gate_wait_ms += self.now() - t0;
        Ok(())
    }

    /// Run a wave's steps, node by node; returns the instance id of each node.
    async fn run_steps(
        &self,
        desired: &Desired,
        coin: Option<&Coin>,
        cp: &CoinPlan,
        wave: &Wave,
        report: &mut CoinReport,
        cancel: &CancellationToken,
    ) -> StepResult<BTreeMap<NodeKey, String>> {
        let mut ids: BTreeMap<NodeKey, String> = BTreeMap::new();
        for step in &wave.steps {
            if cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            if let Some(id) = &step.instance_id {
                ids.entry(step.node.clone()).or_insert_with(|| id.clone());
            }
            self.emit(Event::StepStarted {
                coin: cp.coin.clone(),
                node: step.node.clone(),
                action: step.action.to_string(),
            });
            let r = self
                .run_step(desired, coin, step, ids.get(&step.node).cloned())
                .await;
            report.steps += 1;
            let outcome = match &r {
                Ok((_, Outcome::Done)) => "done".to_string(),
                Ok((_, Outcome::AlreadyDone)) => "already-done".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            let _ = self.journal.append(Record::Step {
                coin: cp.coin.clone(),
                node: step.node.to_string(),
                action: step.action.name().into(),
                outcome: outcome.clone(),
                detail: step.action.to_string(),
                at_ms: self.now(),
            });
            self.emit(Event::StepFinished {
                coin: cp.coin.clone(),
                node: step.node.clone(),
                action: step.action.name().into(),
                outcome,
            });
            match r {
                Ok((Some(id), _)) => {
                    ids.insert(step.node.clone(), id);
                }
                Ok((None, _)) => {}
                Err(e) => {
                    return Err(failed(
                        Some(wave.zone.clone()).filter(|z| !z.is_empty()),
                        Some(step.node.clone()),
                        format!("{} of {}: {e}", step.action.name(), step.node),
                    ));
                }
            }
        }
        Ok(ids)
    }

    async fn run_step(
        &self,
        desired: &Desired,
        coin: Option<&Coin>,
        step: &Step,
        instance_id: Option<String>,
    ) -> Result<(Option<String>, Outcome), ProviderError> {
        let p = &self.provider;
        let node = || -> Result<NodeRef, ProviderError> {
            Ok(NodeRef {
                key: step.node.clone(),
                instance_id: instance_id.clone().ok_or_else(|| {
                    ProviderError::Setup(format!("no instance for {}", step.node))
                })?,
            })
        };
        let coin_of =
            || coin.ok_or_else(|| ProviderError::Setup(format!("coin {} missing", step.node.coin)));
        match &step.action {
            Action::Launch { snapshot_id, .. } => {
                let coin = coin_of()?;
                let slot = coin
                    .nodes
                    .iter()
                    .find(|s| NodeKey::of(s) == step.node)
                    .ok_or_else(|| ProviderError::Setup(format!("no slot {}", step.node)))?;
                let spec = LaunchSpec::new(&desired.fleet, coin, slot, snapshot_id.clone())?;
                let (id, o) = p.launch(&spec).await?;
                Ok((Some(id), o))
            }
            Action::Upgrade {
                to,
                snapshot_first,
                confirm_first,
                ..
            } => {
                let n = node()?;
                if *confirm_first && p.confirm_version(&n, to).await? {
                    return Ok((None, Outcome::AlreadyDone));
                }
                if *snapshot_first {
                    p.snapshot(&n, &format!("before-upgrade:{to}")).await?;
                }
                Ok((None, p.upgrade(&n, to).await?))
            }
            Action::GrowVolume { to_gb, .. } => Ok((None, p.grow_volume(&node()?, *to_gb).await?)),
            Action::ChangeType { to, .. } | Action::Start { instance_type: to } => {
                let t = fleet_repo_schema::values::InstanceType::parse(to)
                    .map_err(|e| ProviderError::Refused { reason: e })?;
                Ok((None, p.change_instance_type(&node()?, &t).await?))
            }
            Action::SetDns { name } => {
                let target = crate::observe::DnsTarget {
                    hosted_zone_id: desired.fleet.hosted_zone_id.to_string(),
                    name: name.clone(),
                };
                Ok((None, p.set_dns(&node()?, &target).await?))
            }
            Action::Retire { dns } => {
                p.retire(&node()?, desired.fleet.hosted_zone_id.as_str(), dns)
                    .await?;
                Ok((None, Outcome::Done))
            }
            Action::DeleteDns { record } => Ok((
                None,
                p.delete_dns(desired.fleet.hosted_zone_id.as_str(), record)
                    .await?,
            )),
        }
    }

    async fn observe_coin(&self, desired: &Desired, coin: &Coin) -> StepResult<Vec<ObservedNode>> {
        let o: Observed = self
            .provider
            .observe(desired)
            .await
            .map_err(|e| failed(None, None, format!("observe: {e}")))?;
        Ok(o.nodes
            .into_iter()
            .filter(|n| n.key.coin == coin.name.as_str())
            .collect())
    }

    fn target(&self, coin: &Coin, key: &NodeKey, instance_id: &str) -> ProbeTarget {
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
            health: coin.health.clone(),
        }
    }

    /// Heights of the nodes that are healthy now (the probe says in sync by its own headers;
    /// with probe `none`, running), and the set of those that are not.
    async fn health_now(
        &self,
        coin: &Coin,
        nodes: &[ObservedNode],
    ) -> (BTreeMap<NodeKey, u64>, BTreeSet<NodeKey>) {
        let mut healthy = BTreeMap::new();
        let mut down = BTreeSet::new();
        for n in nodes {
            // A running node whose last step was cut off (`fleet:pending`) has an unknown
            // version, but whether it serves is for its probe to say: counted down outright,
            // it used up max_unavailable until its own zone's wave, so earlier zones could
            // never start.
            let running = n.state == InstanceState::Running;
            if coin.health.probe == Probe::None {
                // Without a probe, running with no step pending is all that is known.
                if running && n.pending.is_none() {
                    healthy.insert(n.key.clone(), 0);
                } else {
                    down.insert(n.key.clone());
                }
                continue;
            }
            if !running {
                down.insert(n.key.clone());
                continue;
            }
            let t = self.target(coin, &n.key, &n.instance_id);
            match self.prober.probe(&t).await {
                Ok(s) if !s.initial_block_download && s.blocks == s.headers => {
                    healthy.insert(n.key.clone(), s.blocks);
                }
                _ => {
                    down.insert(n.key.clone());
                }
            }
        }
        // Behind the others by more than max_lag: not healthy either.
        if let Some(top) = healthy.values().copied().max() {
            let lag = coin.health.max_lag_blocks;
            let behind: Vec<NodeKey> = healthy
                .iter()
                .filter(|(_, h)| **h + lag < top)
                .map(|(k, _)| k.clone())
                .collect();
            for k in behind {
                healthy.remove(&k);
                down.insert(k);
            }
        }
        (healthy, down)
    }

    /// Wait until taking the wave's nodes down keeps the coin within `max_unavailable`.
    async fn wait_for_budget(
        &self,
        desired: &Desired,
        coin: &Coin,
        cp: &CoinPlan,
        wave: &Wave,
        cancel: &CancellationToken,
    ) -> StepResult<()> {
        let disrupted: BTreeSet<NodeKey> = wave.disrupted().into_iter().cloned().collect();
        let t0 = self.now();
        let limit = coin.health.stall_timeout.0.as_millis() as u64;
        let mut told = false;
        loop {
            let nodes = self.observe_coin(desired, coin).await?;
            let (_, down) = self.health_now(coin, &nodes).await;
            let others: Vec<&NodeKey> = down.iter().filter(|k| !disrupted.contains(*k)).collect();
            let would_be = others.len() + disrupted.len();
            // A wave whose nodes are all down already takes nothing down.
            let adds = disrupted.iter().any(|k| !down.contains(k));
            if !adds || would_be as u32 <= cp.max_unavailable {
                return Ok(());
            }
            let reason = format!(
                "{} other node{} of {} not in sync ({}); taking {} more down would exceed max_unavailable {}",
                others.len(),
                if others.len() == 1 { " is" } else { "s are" },
                coin.name,
                others
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                disrupted.len(),
                cp.max_unavailable
            );
            if self.now() - t0 >= limit {
                return Err(failed(
                    Some(wave.zone.clone()),
                    None,
                    format!("{reason}; gave up after stall_timeout"),
                ));
            }
            if !told {
                told = true;
                self.emit(Event::Waiting {
                    coin: coin.name.to_string(),
                    reason,
                });
            }
            self.sleep(cancel).await?;
        }
    }

    async fn sleep(&self, cancel: &CancellationToken) -> StepResult<()> {
        tokio::select! {
            _ = self.clock.sleep(self.opts.poll_ms) => Ok(()),
            _ = cancel.cancelled() => Err(Stop::Cancelled),
        }
    }

    /// Gate `nodes` (key, instance id) until all are in sync, or one fails.
    async fn gate_nodes(
        &self,
        desired: &Desired,
        coin: &Coin,
        zone: &str,
        nodes: &[(NodeKey, String)],
        cancel: &CancellationToken,
    ) -> StepResult<()> {
        if coin.health.probe == Probe::None {
            // The explicit choice of a coin without RPC: running is all that is known.
            return self.wait_running(desired, coin, zone, nodes, cancel).await;
        }
        let cfg = GateConfig::of(&coin.health);
        let start = self.now();
        let mut gates: BTreeMap<NodeKey, Gate> = nodes
            .iter()
            .map(|(k, _)| (k.clone(), Gate::new(cfg, start)))
            .collect();
        let gated: BTreeSet<NodeKey> = nodes.iter().map(|(k, _)| k.clone()).collect();
        // Observed once: instance ids do not change during a gate, and polling EC2 for every
        // reading of every coin would spend the account's API rate on nothing.
        let others: Vec<ObservedNode> = self
            .observe_coin(desired, coin)
            .await?
            .into_iter()
            .filter(|n| !gated.contains(&n.key))
            .collect();
        loop {
            let (healthy, _) = self.health_now(coin, &others).await;
            let reference = healthy.values().copied().max();
            let mut in_sync = 0;
            for (key, id) in nodes {
                let t = self.target(coin, key, id);
                let reading = self.prober.probe(&t).await;
                let now = self.now();
                let gate = gates.get_mut(key).expect("one gate per node");
                let v = gate.observe(now, &reading, reference);
                self.emit(Event::Gate {
                    coin: coin.name.to_string(),
                    zone: zone.to_string(),
                    node: key.clone(),
                    verdict: v.clone(),
                });
                match v {
                    Verdict::InSync { .. } => in_sync += 1,
                    Verdict::Waiting { .. } => {}
                    Verdict::Failed(f) => {
                        return Err(failed(
                            Some(zone.to_string()),
                            Some(key.clone()),
                            format!("{key} failed its health gate: {f}"),
                        ));
                    }
                }
            }
            if in_sync == nodes.len() {
                return Ok(());
            }
            self.sleep(cancel).await?;
        }
    }

    /// Probe `none`: wait until the nodes' instances run, within `sync_timeout`.
    async fn wait_running(
        &self,
        desired: &Desired,
        coin: &Coin,
        zone: &str,
        nodes: &[(NodeKey, String)],
        cancel: &CancellationToken,
    ) -> StepResult<()> {
        let t0 = self.now();
        let limit = coin.health.sync_timeout.0.as_millis() as u64;
        loop {
            let all = self.observe_coin(desired, coin).await?;
            let (healthy, _) = self.health_now(coin, &all).await;
            if nodes.iter().all(|(k, _)| healthy.contains_key(k)) {
                return Ok(());
            }
            if self.now() - t0 >= limit {
                return Err(failed(
                    Some(zone.to_string()),
                    None,
                    "instances not running within sync_timeout".into(),
                ));
            }
            self.sleep(cancel).await?;
        }
    }

    /// Hold every node of `zone` in sync for `bake`, resuming a journaled bake.
    async fn bake(
        &self,
        desired: &Desired,
        coin: &Coin,
        zone: &str,
        cancel: &CancellationToken,
    ) -> StepResult<()> {
        let version = coin.version.as_str();
        let bake_ms = coin.rollout.bake.0.as_millis() as u64;
        let mut start = match self.journal.bake_started(coin.name.as_str(), zone, version) {
            Some(t) if t <= self.now() => t,
            _ => self.begin_bake(coin, zone)?,
        };
        let cfg = GateConfig::of(&coin.health);
        let mut gates: BTreeMap<NodeKey, Gate> = BTreeMap::new();
        let mut broken = false;
        let all = self.observe_coin(desired, coin).await?;
        loop {
            let (healthy, _) = self.health_now(coin, &all).await;
            let reference = healthy.values().copied().max();
            let mut all_ok = true;
            for n in all.iter().filter(|n| n.key.zone == zone) {
                if healthy.contains_key(&n.key) {
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
                let reading = if coin.health.probe == Probe::None {
                    Err(crate::health::ProbeError::Config {
                        node: n.key.to_string(),
                        detail: "instance not running".into(),
                    })
                } else {
                    self.prober
                        .probe(&self.target(coin, &n.key, &n.instance_id))
                        .await
                };
                let others = reference.filter(|_| !healthy.is_empty());
                let v = gate.observe(now, &reading, others);
                self.emit(Event::Gate {
                    coin: coin.name.to_string(),
                    zone: zone.to_string(),
                    node: n.key.clone(),
                    verdict: v.clone(),
                });
                if let Verdict::Failed(f) = v {
                    return Err(failed(
                        Some(zone.to_string()),
                        Some(n.key.clone()),
                        format!("{} fell out of sync during the bake: {f}", n.key),
                    ));
                }
            }
            let now = self.now();
            if !all_ok {
                broken = true;
            } else if broken {
                // Back in sync: the bake starts over (journaled once, not at every reading).
                broken = false;
                start = self.begin_bake(coin, zone)?;
            } else if now - start >= bake_ms {
                let _ = self.journal.append(Record::ZonePassed {
                    coin: coin.name.to_string(),
                    zone: zone.to_string(),
                    version: version.to_string(),
                    at_ms: now,
                });
                return Ok(());
            }
            let elapsed_ms = if broken { 0 } else { now.saturating_sub(start) };
            self.emit(Event::Baking {
                coin: coin.name.to_string(),
                zone: zone.to_string(),
                elapsed_ms,
                bake_ms,
            });
            // Sleep to the end of the bake when it is near, so the bake is not overshot.
            let left = bake_ms.saturating_sub(elapsed_ms);
            let wait = self.opts.poll_ms.min(left.max(1));
            tokio::select! {
                _ = self.clock.sleep(wait) => {}
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
            }
        }
    }

    fn begin_bake(&self, coin: &Coin, zone: &str) -> StepResult<Millis> {
        let now = self.now();
        self.journal
            .append(Record::BakeStarted {
                coin: coin.name.to_string(),
                zone: zone.to_string(),
                version: coin.version.to_string(),
                at_ms: now,
            })
            .map_err(|e| failed(Some(zone.to_string()), None, e.to_string()))?;
        Ok(now)
    }

    /// Before a coin's first wave in `zone`: every node of every earlier zone must be in sync,
    /// and an earlier zone whose bake towards this version has not passed (a crash after its
    /// nodes were changed, or a lost journal) is baked first.
    async fn earlier_zones_ready(
        &self,
        desired: &Desired,
        coin: &Coin,
        zone: &str,
        cancel: &CancellationToken,
        report: &mut CoinReport,
    ) -> StepResult<()> {
        let Some(pos) = coin.zones.iter().position(|z| z.as_str() == zone) else {
            return Ok(());
        };
        if pos == 0 {
            return Ok(());
        }
        let all = self.observe_coin(desired, coin).await?;
        for earlier in &coin.zones[..pos] {
            let nodes: Vec<(NodeKey, String)> = all
                .iter()
                .filter(|n| n.key.zone == earlier.as_str())
                .map(|n| (n.key.clone(), n.instance_id.clone()))
                .collect();
            if nodes.is_empty() {
                continue;
            }
            let t0 = self.now();
            self.gate_nodes(desired, coin, earlier.as_str(), &nodes, cancel)
                .await?;
            if !self.journal.zone_passed(
                coin.name.as_str(),
                earlier.as_str(),
                coin.version.as_str(),
            ) {
                self.bake(desired, coin, earlier.as_str(), cancel).await?;
            }
            report.gate_wait_ms += self.now() - t0;
        }
        Ok(())
    }
}

fn failed(zone: Option<String>, node: Option<NodeKey>, reason: String) -> Stop {
    Stop::Failed { zone, node, reason }
}

/// What an approval of `cp` is for: its target version, or `retire` for a removed coin.
pub fn approval_version(cp: &CoinPlan) -> String {
    cp.target
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "retire".into())
}
