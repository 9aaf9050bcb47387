//! The executor: carries a [`Plan`] out, coin by coin in parallel (a global bound), and within
//! a coin wave by wave, zone by zone, never moving on before the chain says the zone is in
//! sync and has stayed so for `bake`.
//!
//! What holds, whatever happens (tested in `tests/tests/executor.rs` with injected faults):
//! - Within a coin, never more than `max_unavailable` nodes are down at once, counting every
//!   node of the coin that is not in sync ([`crate::health::rate`], the one rating),
//!   including ones down for reasons of their own: a wave starts only when it fits, and waits
//!   (up to `stall_timeout`) for others to recover.
//! - A zone starts only after every node of every earlier zone of the coin is in sync, and
//!   the previous zone's bake is complete (bakes are journaled, so a crash resumes them).
//! - A replacement takes its node's DNS name, and the old instance is terminated, only after
//!   the replacement has passed its gate (dialled at its own address until then): the steps
//!   that wait for a gate ([`crate::plan::Action::after_gate`]) run after it, for each node
//!   that passed, even when another node of the wave failed its gate or its step (whose old
//!   instance then keeps the name, stopped, to resume or undo from).
//! - A failure (a gate, a step, the budget) stops that coin's rollout, is journaled with its
//!   [`Failure`], told to the notifier, and nothing further of that coin is touched; other
//!   coins go on.
//! - Nothing is done without a record: a rollout starts with a journal record, every step
//!   and passed bake is journaled, and a journal that cannot be written stops the coin
//!   (before its first step when it fails from the start).
//! - An approval applies to one (coin, target version, commit) and is read from the journal.
//! - Each step is idempotent; a crash at any point followed by a new plan and apply converges
//!   without restarting a node that already runs its target version (an interrupted upgrade
//!   is confirmed with the node before any restart).
//! - Cancellation (Ctrl-C, SIGTERM) is honoured between steps and during waits, never in the
//!   middle of a step.
//! - Coins share one observation per poll ([`view::FleetView`]); a coin's own step makes its
//!   next question observe again.
//!
//! The code: this module runs coins and their waves; [`steps`] turns a plan step into provider
//! calls; [`waits`] holds everything that waits on the chain (budget, gates, bakes, earlier
//! zones).

mod rollback;
mod steps;
pub mod view;
mod waits;

use crate::clock::{Clock, Millis};
use crate::events::{Event, Failure, Notifier, Rollback};
use crate::health::Prober;
use crate::plan::{CoinPlan, Plan, Refusal, Unjudged, WaveKind};
use crate::provider::Provider;
use crate::store::{ApprovalKey, Decision, Journal, Record};
use fleet_repo_schema::values::{CoinName, Zone};
use fleet_repo_schema::{Coin, Desired};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use steps::Side;
use tokio_util::sync::CancellationToken;
use view::FleetView;

/// How the executor runs.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Coins rolled out at once.
    pub parallel_coins: usize,
    /// Time between gate readings (and the longest an observation is reused), clock ms.
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
        failure: Failure,
        /// The rollback that followed (`rollout.on_failure: rollback`), if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback: Option<Box<Rollback>>,
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
        /// What, and why.
        refusals: Vec<Refusal>,
    },
    /// Stopped between steps on request.
    Cancelled,
    /// Nothing to do now: the plan has no step for the coin, only nodes it could not judge.
    NotJudged {
        /// Those nodes.
        nodes: Vec<Unjudged>,
    },
}

/// One coin's rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoinReport {
    /// Coin.
    pub coin: CoinName,
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
    /// Observations of the fleet the apply made (shared by its coins).
    pub observations: u64,
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
    /// Boxed: a failure carries its readings and errors, and stops are passed up often.
    Failed(Box<Failure>),
    Cancelled,
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Failed(Box::new(f))
    }
}

type StepResult<T> = Result<T, Stop>;

/// The first failure of something that went on past it (a wave's steps, a settled gate), as
/// a step result: a failure stops the coin.
fn stopped_by(failure: Option<Failure>) -> StepResult<()> {
    match failure {
        Some(f) => Err(Stop::from(f)),
        None => Ok(()),
    }
}

/// What one coin's run needs besides the executor: its plan, its desired settings, the
/// shared view and how to stop.
struct CoinRun<'a> {
    desired: &'a Desired,
    cp: &'a CoinPlan,
    view: &'a FleetView,
    cancel: &'a CancellationToken,
}

impl CoinRun<'_> {
    /// The coin's desired settings (a coin being removed has none).
    fn coin(&self) -> StepResult<&Coin> {
        self.desired
            .coins
            .get(self.cp.coin.as_str())
            .ok_or_else(|| {
                Stop::from(Failure::Inconsistent {
                    detail: format!("coin {} is not in the desired state", self.cp.coin),
                })
            })
    }
}

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
        let view = Arc::new(FleetView::new(
            Arc::clone(&self.provider),
            Arc::clone(desired),
            Arc::clone(&self.clock),
            self.opts.poll_ms,
        ));
        let sem = Arc::new(tokio::sync::Semaphore::new(self.opts.parallel_coins.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for (i, cp) in plan.coins.iter().enumerate() {
            let (me, desired, cp, cancel, sem, view) = (
                Arc::clone(self),
                Arc::clone(desired),
                cp.clone(),
                cancel.clone(),
                Arc::clone(&sem),
                Arc::clone(&view),
            );
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let run = CoinRun {
                    desired: &desired,
                    cp: &cp,
                    view: &view,
                    cancel: &cancel,
                };
                (i, me.run_coin(&run).await)
            });
        }
        let mut coins: Vec<(usize, CoinReport)> = Vec::with_capacity(plan.coins.len());
        while let Some(r) = set.join_next().await {
            match r {
                Ok(x) => coins.push(x),
                // A panic in one coin's task is a bug; the others' reports still stand.
                Err(e) => tracing::error!(error = %e, "a coin's rollout task ended abnormally"),
            }
        }
        coins.sort_by_key(|(i, _)| *i);
        ApplyReport {
            coins: coins.into_iter().map(|(_, r)| r).collect(),
            started_ms,
            finished_ms: self.now(),
            observations: view.observations(),
        }
    }

    /// One coin's rollout.
    async fn run_coin(&self, run: &CoinRun<'_>) -> CoinReport {
        let cp = run.cp;
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
                refusals: cp.refusals.clone(),
            };
            return report;
        }
        if cp.waves.is_empty() {
            report.outcome = CoinOutcome::NotJudged {
                nodes: cp.unjudged.clone(),
            };
            return report;
        }
        let zones = cp.rollout_zones();
        if let Some(need) = &cp.approval {
            let key = ApprovalKey {
                coin: cp.coin.clone(),
                target: cp.approval_target(),
                commit: self.opts.commit.clone(),
            };
            match self.journal.approval(&key) {
                Some((Decision::Approved, _)) => {}
                Some((Decision::Rejected, by)) => {
                    report.outcome = CoinOutcome::Rejected { by };
                    return report;
                }
                None => {
                    self.emit(Event::ApprovalNeeded {
                        coin: cp.coin.clone(),
                        target: key.target,
                        commit: key.commit,
                        reasons: need.reasons.clone(),
                        from: cp.from_versions.clone(),
                        zones,
                        steps: cp.step_count(),
                    });
                    report.outcome = CoinOutcome::AwaitingApproval;
                    return report;
                }
            }
        }
        // Nothing is touched without a record: a journal that cannot be written (a full or
        // read-only disk) stops the coin here, before its first step.
        let r = match self.journal.append(Record::RolloutStarted {
            coin: cp.coin.to_string(),
            commit: self.opts.commit.clone(),
            steps: cp.step_count(),
            at_ms: started_ms,
        }) {
            Ok(()) => {
                self.emit(Event::RolloutStarted {
                    coin: cp.coin.clone(),
                    commit: self.opts.commit.clone(),
                    from: cp.from_versions.clone(),
                    to: cp.target.clone(),
                    zones,
                    steps: cp.step_count(),
                });
                self.run_waves(run, &mut report).await
            }
            Err(e) => Err(Stop::from(Failure::Journal {
                error: e.to_string(),
            })),
        };
        report.finished_ms = self.now();
        match r {
            Ok(()) => {
                self.emit(Event::RolloutFinished {
                    coin: cp.coin.clone(),
                    took_ms: report.finished_ms - started_ms,
                });
            }
            Err(Stop::Cancelled) => report.outcome = CoinOutcome::Cancelled,
            Err(Stop::Failed(failure)) => {
                let failure = *failure;
                let journaled = self.journal.append(Record::GateFailed {
                    coin: cp.coin.to_string(),
                    node: failure.node().map(|n| n.to_string()).unwrap_or_default(),
                    reason: failure.to_string(),
                    failure: Some(Box::new(failure.clone())),
                    commit: Some(self.opts.commit.clone()),
                    at_ms: self.now(),
                });
                if let Err(e) = journaled {
                    // The coin stops either way; the failure still reaches the notifier.
                    tracing::error!(coin = %cp.coin, error = %e, "could not journal a rollout failure");
                }
                self.emit(Event::RolloutFailed {
                    coin: cp.coin.clone(),
                    failure: failure.clone(),
                });
                // `rollout.on_failure: rollback`: after the failure is journaled and told.
                let pending = run
                    .coin()
                    .ok()
                    .and_then(|coin| rollback::pending(coin, cp, &failure));
                let rollback = match pending {
                    Some(p) => self.roll_back(run, p, &mut report).await.map(Box::new),
                    None => None,
                };
                report.finished_ms = self.now();
                report.outcome = CoinOutcome::Failed { failure, rollback };
            }
        }
        report
    }

    async fn run_waves(&self, run: &CoinRun<'_>, report: &mut CoinReport) -> StepResult<()> {
        let cp = run.cp;
        let mut zone_started: BTreeMap<Zone, Millis> = BTreeMap::new();
        let mut prechecked = false;
        for (wi, wave) in cp.waves.iter().enumerate() {
            if run.cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            match (wave.kind, &wave.zone) {
                (WaveKind::Repair, Some(zone)) => {
                    // Its nodes are down already: the budget check lets it through unless
                    // one came back up meanwhile; no bake (the zone's rollout has its own).
                    let coin = run.coin()?;
                    self.wait_for_budget(run, coin, zone, wave).await?;
                    self.run_gated(run, coin, zone, wave, report).await?;
                }
                (WaveKind::Rollout, Some(zone)) => {
                    let coin = run.coin()?;
                    if !prechecked {
                        prechecked = true;
                        self.earlier_zones_ready(run, coin, zone, report).await?;
                    }
                    zone_started.entry(zone.clone()).or_insert(self.now());
                    if !wave.disrupted().is_empty() {
                        self.wait_for_budget(run, coin, zone, wave).await?;
                    }
                    self.run_gated(run, coin, zone, wave, report).await?;
                    let last_of_zone = cp.waves.get(wi + 1).is_none_or(|n| {
                        n.zone.as_ref() != Some(zone) || n.kind != WaveKind::Rollout
                    });
                    let zone_disrupted = cp.waves.iter().any(|w| {
                        w.kind == WaveKind::Rollout
                            && w.zone.as_ref() == Some(zone)
                            && !w.disrupted().is_empty()
                    });
                    if last_of_zone && zone_disrupted {
                        let t0 = self.now();
                        self.bake(run, coin, zone).await?;
                        report.gate_wait_ms += self.now() - t0;
                        self.emit(Event::ZonePassed {
                            coin: cp.coin.clone(),
                            zone: zone.clone(),
                            took_ms: self.now() - zone_started[zone],
                        });
                    }
                }
                (WaveKind::Network | WaveKind::Retire | WaveKind::Cleanup, _) => {
                    // No gate: both sides run, in order.
                    self.run_steps(run, wave, Side::BeforeGate, report)
                        .await?
                        .all_done()?;
                    let all = wave.steps.iter().filter_map(|s| s.node.clone()).collect();
                    let side = Side::AfterGate { passed: &all };
                    self.run_steps(run, wave, side, report).await?.all_done()?;
                }
                (WaveKind::Repair | WaveKind::Rollout, None) => {
                    return Err(Stop::from(Failure::Inconsistent {
                        detail: format!("a {:?} wave of {} without a zone", wave.kind, cp.coin),
                    }));
                }
            }
        }
        Ok(())
    }

    /// A gated wave: the steps before its gate, the gate, then the steps that wait for it
    /// (a hand-over) of each node that passed, even when another failed: a replacement in
    /// sync takes its name whatever became of its neighbour's, rather than leave the name on
    /// a stopped instance. A failure of the gate is the coin's, before one of those steps.
    async fn run_gated(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        wave: &crate::plan::Wave,
        report: &mut CoinReport,
    ) -> StepResult<()> {
        let before = self.run_steps(run, wave, Side::BeforeGate, report).await?;
        // The nodes a step failed for are not gated (nor handed over); the others are.
        let gated = match self
            .gate_wave(run, coin, zone, wave, &before.ids, report)
            .await
        {
            Err(Stop::Cancelled) if before.failure.is_some() => return before.all_done(),
            r => r?,
        };
        let side = Side::AfterGate {
            passed: &gated.passed,
        };
        let after = self.run_steps(run, wave, side, report).await;
        // The first failure is the coin's: a step's before the gate, then the gate's; a step
        // that failed after them was journaled and told as it failed.
        before.all_done()?;
        gated.passed_all()?;
        after?.all_done()
    }
}
