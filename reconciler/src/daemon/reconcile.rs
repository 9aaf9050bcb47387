//! The reconcile loop: level-triggered. Each pass rebuilds desired (the revision in force) and
//! observed (the provider), plans and executes. Passes run one at a time; a new good revision
//! preempts a running pass between steps; when the next pass comes is [`Requeue::next_wait`]'s
//! decision, a pure function of how the pass ended (in the style of kube-runtime's
//! `Action::requeue` and `error_policy`). A coin whose rollout failed is held until the next
//! revision: fleet does not retry a failed gate on its own, across a restart either (the
//! journal's failures of the revision are read back when the loop first sees it).

use super::metrics::ErrorKind;
use super::report::StatusNotifier;
use super::{Backend, BackendError, BackendFactory, Backoff, Good, LoopOptions, Shared, watch};
use crate::apply::{CoinOutcome, ExecOptions, Executor};
use crate::clock::{Clock, SystemClock};
use crate::events::{Failure, Notifier};
use crate::plan::plan;
use crate::provider::ProviderError;
use crate::store::Journal;
use fleet_repo_schema::values::CoinName;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch as wch;
use tokio_util::sync::CancellationToken;

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassLabel {
    /// Nothing to do.
    Converged,
    /// Steps were carried out: run again at once.
    Progress,
    /// Something waits (approval, held coin, refusal): nothing more can be done now.
    Partial,
    /// It failed (observing, the provider): retried after a backoff.
    Error,
    /// Preempted or shut down.
    Cancelled,
}

impl PassLabel {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PassLabel::Converged => "converged",
            PassLabel::Progress => "progress",
            PassLabel::Partial => "partial",
            PassLabel::Error => "error",
            PassLabel::Cancelled => "cancelled",
        }
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The provider could not be set up.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// Observing the fleet failed.
    #[error("observe: {0}")]
    Observe(#[from] ProviderError),
    /// The executor's task ended abnormally (a bug).
    #[error("the executor ended abnormally: {0}")]
    Executor(String),
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Run again at once (progress, a newer revision, preempted).
    Now,
    /// Nothing to do until something changes or the safety-net period passes.
    Requeue(u64),
    /// Progress many passes in a row: the plan never empties, so slow down.
    SlowDown {
        /// Wait, ms.
        ms: u64,
        /// Passes with progress in a row.
        passes: u32,
    },
    /// The pass failed: exponential backoff.
    Backoff(u64),
}

impl Wait {
    /// Milliseconds to wait.
    pub fn ms(self) -> u64 {
        match self {
            Wait::Now => 0,
            Wait::Requeue(ms) | Wait::Backoff(ms) | Wait::SlowDown { ms, .. } => ms,
        }
    }
}

/// Passes with progress in a row beyond which the loop slows down.
pub const MAX_PROGRESS_STREAK: u32 = 20;

/// The loop's memory between passes for deciding when the next one comes.
#[derive(Debug, Clone)]
pub struct Requeue {
    streak: u32,
    backoff: Backoff,
    requeue_ms: u64,
}

impl Requeue {
    /// From the loop's settings.
    pub fn new(opts: &LoopOptions) -> Requeue {
        Requeue {
            streak: 0,
            backoff: Backoff::new(opts.backoff_min_ms, opts.backoff_max_ms),
            requeue_ms: opts.requeue_ms,
        }
    }

    /// When to run the next pass, after one that ended `result`; `newer` when a newer
    /// revision arrived during it (one that did not preempt it: the same desired state).
    /// Progress means a step changed something; more than [`MAX_PROGRESS_STREAK`] in a row
    /// means a plan that never empties (something the provider reports done and observation
    /// never shows), which must not spin.
    pub fn next_wait(&mut self, result: PassLabel, newer: bool) -> Wait {
        self.streak = if result == PassLabel::Progress {
            self.streak + 1
        } else {
            0
        };
        match result {
            PassLabel::Error => Wait::Backoff(self.backoff.fail()),
            _ if newer => Wait::Now,
            PassLabel::Progress if self.streak > MAX_PROGRESS_STREAK => Wait::SlowDown {
                ms: self.backoff.fail(),
                passes: self.streak,
            },
            PassLabel::Progress | PassLabel::Cancelled => {
                self.backoff.reset();
                Wait::Now
            }
            PassLabel::Converged | PassLabel::Partial => {
                self.backoff.reset();
                Wait::Requeue(self.requeue_ms)
            }
        }
    }
}

/// A coin whose rollout failed, held until the revision changes.
#[derive(Debug, Clone)]
pub struct Held {
    /// The revision it failed for.
    pub rev: String,
    /// Why.
    pub failure: Failure,
}

/// Coins held, by name.
pub type HeldCoins = BTreeMap<CoinName, Held>;

/// Everything a pass needs that outlives it.
struct Loop {
    shared: Arc<Shared>,
    factory: BackendFactory,
    backend: Option<(String, Backend)>,
    journal: Arc<Journal>,
    notifier: Arc<dyn Notifier>,
    opts: LoopOptions,
    held: HeldCoins,
    shutdown: CancellationToken,
}

/// The reconcile loop: runs until `shutdown`.
pub async fn reconcile_loop(
    shared: Arc<Shared>,
    mut good_rx: wch::Receiver<Option<Arc<Good>>>,
    factory: BackendFactory,
    journal: Arc<Journal>,
    notifier: Arc<dyn Notifier>,
    opts: LoopOptions,
    shutdown: CancellationToken,
) {
    let notifier: Arc<dyn Notifier> = Arc::new(StatusNotifier {
        shared: Arc::clone(&shared),
        next: notifier,
    });
    let mut requeue = Requeue::new(&opts);
    let mut lp = Loop {
        shared,
        factory,
        backend: None,
        journal,
        notifier,
        opts,
        held: HeldCoins::new(),
        shutdown,
    };
    let mut wait_ms: Option<u64> = None; // None: wait for the first good revision
    // The revision whose failures were read back from the journal.
    let mut held_read: Option<String> = None;
    loop {
        if good_rx.has_changed().is_err() {
            // The fetcher is gone (shutdown): nothing will ever change again.
            return;
        }
        let w = wait_ms;
        let sleep = async move {
            match w {
                Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        };
        if wait_ms != Some(0) {
            tokio::select! {
                _ = sleep => {}
                r = good_rx.changed() => { if r.is_err() { return; } }
                _ = lp.shared.kick.notified() => {}
                _ = lp.shutdown.cancelled() => return,
            }
        }
        if lp.shutdown.is_cancelled() {
            return;
        }
        let Some(good) = good_rx.borrow_and_update().clone() else {
            wait_ms = None;
            continue;
        };
        lp.held.retain(|_, h| h.rev == good.rev);
        if held_read.as_deref() != Some(good.rev.as_str()) {
            // A restart forgets nothing: the journal says which coins failed at this revision.
            for (coin, failure) in lp.journal.failed_at(&good.rev) {
                lp.held.entry(coin).or_insert_with(|| Held {
                    rev: good.rev.clone(),
                    failure,
                });
            }
            held_read = Some(good.rev.clone());
        }
        let started = std::time::Instant::now();
        lp.shared.status_mut(|s| {
            s.pass.number += 1;
            s.pass.running = true;
            s.pass.started_ms = Some(SystemClock.now_ms());
            // The revision in force is known before the fleet is observed: /readyz then says
            // that observing is what it waits for.
            s.commit = Some(good.rev.clone());
            s.commit_summary = good.summary.clone();
        });
        let r = lp.pass(&good, &mut good_rx).await;
        let label = match &r {
            Ok(l) => *l,
            Err(_) => PassLabel::Error,
        };
        lp.shared
            .metrics
            .pass(label.as_str(), started.elapsed().as_secs_f64());
        if let Some((_, b)) = &lp.backend {
            lp.shared.metrics.api_calls(b.provider.api_calls());
        }
        lp.shared.status_mut(|s| {
            s.pass.running = false;
            s.pass.finished_ms = Some(SystemClock.now_ms());
            s.pass.last_result = Some(label);
            s.pass.last_error = r.as_ref().err().map(|e| e.to_string());
        });
        // A newer revision seen during the pass (one that did not preempt it: same desired
        // state) is taken at once, so /status never shows a stale commit for long.
        let newer = good_rx.borrow().as_ref().is_some_and(|g| g.rev != good.rev);
        let next = requeue.next_wait(label, newer);
        match (&next, &r) {
            (Wait::Backoff(ms), Err(e)) => {
                tracing::warn!(error = %e, retry_in_ms = ms, "reconcile pass failed");
                lp.shared.metrics.error(ErrorKind::Pass);
            }
            (Wait::SlowDown { ms, passes }, _) => tracing::warn!(
                passes,
                retry_in_ms = ms,
                "the plan keeps changing the fleet without converging; slowing down"
            ),
            _ => {}
        }
        wait_ms = Some(next.ms());
    }
}

impl Loop {
    /// The backend for `good`'s region, made once (and again if the region changes).
    async fn backend(&mut self, good: &Good) -> Result<&Backend, PassError> {
        let region = good.desired.fleet.region.to_string();
        if self.backend.as_ref().is_none_or(|(r, _)| *r != region) {
            self.backend = None;
            let b = (self.factory)(Arc::clone(&good.desired)).await?;
            self.shared
                .status_mut(|s| s.provider = b.provider.name().to_string());
            *self
                .shared
                .backend
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(b.clone());
            self.backend = Some((region, b));
        }
        match &self.backend {
            Some((_, b)) => Ok(b),
            None => Err(BackendError("no provider".into()).into()),
        }
    }

    async fn pass(
        &mut self,
        good: &Arc<Good>,
        good_rx: &mut wch::Receiver<Option<Arc<Good>>>,
    ) -> Result<PassLabel, PassError> {
        let desired = Arc::clone(&good.desired);
        // Until the executor runs nothing is under way, so a shutdown does not wait for a
        // provider being set up, an observation or the probes (each bounded, but by up to a
        // minute on an endpoint that hangs).
        let shutdown = self.shutdown.clone();
        let b = tokio::select! {
            b = self.backend(good) => b?,
            _ = shutdown.cancelled() => return Ok(PassLabel::Cancelled),
        };
        let (provider, prober, clock) = (
            Arc::clone(&b.provider),
            Arc::clone(&b.prober),
            Arc::clone(&b.clock),
        );
        // The nodes are asked before the plan is made: a version changed by hand is drift.
        let (observed, readings) = tokio::select! {
            o = crate::apply::view::observe_and_probe(provider.as_ref(), &prober, &desired) => o?,
            _ = shutdown.cancelled() => return Ok(PassLabel::Cancelled),
        };
        let mut observed = observed;
        observed.auto_grown = self.journal.auto_grown_all();
        observed.replace_requested = self.journal.replacements_asked();
        let mut p = plan(&desired, &observed, clock.now_ms());
        watch::refresh(&self.shared, good, &observed, &p, &readings, &self.held);
        self.shared.ready.store(true, Ordering::SeqCst);
        self.shared.metrics.applied(&good.rev);
        self.shared.metrics.api_calls(provider.api_calls());
        let before = p.coins.len();
        p.coins.retain(|c| !self.held.contains_key(&c.coin));
        let some_held = p.coins.len() < before;
        if p.is_empty() {
            return Ok(if some_held {
                PassLabel::Partial
            } else {
                PassLabel::Converged
            });
        }
        let exec = Arc::new(Executor {
            provider,
            prober,
            journal: Arc::clone(&self.journal),
            notifier: Arc::clone(&self.notifier),
            clock,
            opts: ExecOptions {
                commit: good.rev.clone(),
                ..self.opts.exec.clone()
            },
        });
        let cancel = self.shutdown.child_token();
        let done_before = self.shared.steps_done.load(Ordering::SeqCst);
        let run = {
            let (exec, desired, p, cancel) = (
                Arc::clone(&exec),
                Arc::clone(&desired),
                p.clone(),
                cancel.clone(),
            );
            tokio::spawn(async move { exec.apply(&desired, &p, &cancel).await })
        };
        tokio::pin!(run);
        let report = loop {
            tokio::select! {
                r = &mut run => break r.map_err(|e| PassError::Executor(e.to_string()))?,
                r = good_rx.changed(), if !cancel.is_cancelled() => {
                    let newer = good_rx.borrow().clone();
                    match (r, newer) {
                        (Ok(()), Some(n)) if n.desired != good.desired => {
                            tracing::info!(from = %good.rev, to = %n.rev, "a newer revision preempts the running pass (between steps)");
                            cancel.cancel();
                        }
                        (Err(_), _) => cancel.cancel(),
                        _ => {}
                    }
                }
            }
        };
        // Progress means a step actually changed something: steps found already done do not
        // count, or a step the executor keeps finding done while the plan keeps asking for it
        // would loop without pause.
        let progress = self.shared.steps_done.load(Ordering::SeqCst) > done_before;
        for c in &report.coins {
            if let CoinOutcome::Failed { failure, .. } = &c.outcome {
                self.held.insert(
                    c.coin.clone(),
                    Held {
                        rev: good.rev.clone(),
                        failure: failure.clone(),
                    },
                );
                self.shared.metrics.error(ErrorKind::Rollout);
            }
        }
        // Whatever the executor ended on (a preemption included), nothing rolls out now.
        self.shared.rolling_mut(|r| r.clear());
        if cancel.is_cancelled() {
            return Ok(PassLabel::Cancelled);
        }
        Ok(if progress {
            PassLabel::Progress
        } else {
            // Awaiting approval, refused, held or failed: nothing more to do until something
            // changes (a commit, an approval) or the requeue comes.
            PassLabel::Partial
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ExecOptions;

    fn requeue() -> Requeue {
        Requeue::new(&LoopOptions {
            poll_interval_ms: 30_000,
            requeue_ms: 300_000,
            backoff_min_ms: 1_000,
            backoff_max_ms: 8_000,
            exec: ExecOptions::default(),
        })
    }

    #[test]
    fn progress_runs_again_at_once_and_idle_passes_wait_for_the_requeue() {
        let mut r = requeue();
        assert_eq!(r.next_wait(PassLabel::Progress, false), Wait::Now);
        assert_eq!(r.next_wait(PassLabel::Cancelled, false), Wait::Now);
        assert_eq!(
            r.next_wait(PassLabel::Converged, false),
            Wait::Requeue(300_000)
        );
        assert_eq!(
            r.next_wait(PassLabel::Partial, false),
            Wait::Requeue(300_000)
        );
        // A newer revision is taken at once, whatever the pass found.
        assert_eq!(r.next_wait(PassLabel::Partial, true), Wait::Now);
    }

    #[test]
    fn errors_back_off_exponentially_and_reset_after_a_good_pass() {
        let mut r = requeue();
        let waits: Vec<Wait> = (0..5)
            .map(|_| r.next_wait(PassLabel::Error, false))
            .collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 8_000].map(Wait::Backoff)
        );
        // Even with a newer revision an error backs off: the provider is what failed.
        assert_eq!(r.next_wait(PassLabel::Error, true), Wait::Backoff(8_000));
        r.next_wait(PassLabel::Converged, false);
        assert_eq!(r.next_wait(PassLabel::Error, false), Wait::Backoff(1_000));
    }

    #[test]
    fn a_plan_that_never_empties_slows_down() {
        let mut r = requeue();
        for _ in 0..MAX_PROGRESS_STREAK {
            assert_eq!(r.next_wait(PassLabel::Progress, false), Wait::Now);
        }
        assert_eq!(
            r.next_wait(PassLabel::Progress, false),
            Wait::SlowDown {
                ms: 1_000,
                passes: MAX_PROGRESS_STREAK + 1
            }
        );
        assert_eq!(
            r.next_wait(PassLabel::Progress, false),
            Wait::SlowDown {
                ms: 2_000,
                passes: MAX_PROGRESS_STREAK + 2
            }
        );
        // One pass without progress ends the streak.
        r.next_wait(PassLabel::Partial, false);
        assert_eq!(r.next_wait(PassLabel::Progress, false), Wait::Now);
    }
}
