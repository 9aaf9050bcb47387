//! `fleet run`: the long-running reconciler, as a folder of its jobs sharing one [`Shared`]:
//!
//! - [`fetcher`]: polls the fleet repository (and wakes on webhooks and file changes),
//!   validates each new revision and publishes the last good one; an invalid one is
//!   reported and otherwise ignored.
//! - [`reconcile`]: the level-triggered loop: per pass observe, plan, execute; preemption by a
//!   newer revision; when the next pass comes ([`reconcile::Requeue::next_wait`]); held coins.
//! - [`watch`]: after each observation, every node probed and rated with the executor's own
//!   rating, for `/status` and the node gauges.
//! - [`report`]: the executor's events as `/status`, metrics and log lines.
//! - [`status`] and [`metrics`]: what `GET /status` and `GET /metrics` return.
//!
//! The server (`server.rs`) answers /healthz, /readyz, /metrics, /status and the webhooks.
//! SIGTERM and SIGINT cancel everything: the executor stops between steps, never inside one.

pub mod fetcher;
pub mod metrics;
pub mod reconcile;
pub mod report;
pub mod status;
pub mod watch;

pub use fetcher::{FETCH_TIMEOUT, fetcher};
pub use metrics::Metrics;
pub use reconcile::reconcile_loop;
pub use status::Status;

use crate::apply::ExecOptions;
use crate::clock::Clock;
use crate::health::Prober;
use crate::provider::Provider;
use fleet_repo_schema::Desired;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How long `fleet run` waits, after SIGTERM or SIGINT, for the step under way before it exits
/// anyway. Exiting then is what a crash does, which the crash protocol makes safe: the step's
/// `fleet:pending` marker makes the next start confirm or repeat it. The systemd unit's
/// `TimeoutStopSec` must exceed it (`tests/tests/deploy.rs` checks).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A revision that passed validation.
#[derive(Debug)]
pub struct Good {
    /// Commit id (or `worktree-<hash>`).
    pub rev: String,
    /// Summary line, when git.
    pub summary: Option<String>,
    /// The desired state.
    pub desired: Arc<Desired>,
}

/// What the loop, the fetcher and the server share.
#[derive(Default)]
pub struct Shared {
    /// /status.
    pub status: Mutex<Status>,
    /// /metrics.
    pub metrics: Metrics,
    /// Fetch now (webhook, file watch).
    pub fetch_now: Notify,
    /// Run a pass now (an approval arrived).
    pub kick: Notify,
    /// Ready: a good revision is in force and a pass has observed the fleet.
    pub ready: AtomicBool,
    /// Branch pushes are filtered on (`refs/heads/<branch>`), when known.
    pub branch: Mutex<Option<String>>,
    /// Fetches started (tests and the webhook's "no fetch" check).
    pub fetch_count: AtomicU64,
    /// Steps carried out (outcome `done`), for telling progress from repetition.
    pub steps_done: AtomicU64,
    /// Run the release watch now (a `release` webhook).
    pub release_now: Notify,
    /// The coins whose rollout has started and not ended: the node watch leaves them to
    /// their gates (no incident for their nodes, no heal).
    pub rolling: Mutex<std::collections::BTreeSet<fleet_repo_schema::values::CoinName>>,
    /// The reconcile loop's backend, once made: what the node watch observes and heals with.
    pub backend: Mutex<Option<Backend>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Update the status.
    pub fn status_mut<T>(&self, f: impl FnOnce(&mut Status) -> T) -> T {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Update the coins rolling out.
    pub fn rolling_mut<T>(
        &self,
        f: impl FnOnce(&mut std::collections::BTreeSet<fleet_repo_schema::values::CoinName>) -> T,
    ) -> T {
        f(&mut self.rolling.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The backend, once the reconcile loop has made one.
    pub fn backend(&self) -> Option<Backend> {
        self.backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the loop needs from outside: the provider and its friends, made once the first good
/// revision says which region (and again if it changes).
#[derive(Clone)]
pub struct Backend {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Health.
    pub prober: Arc<dyn Prober>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.provider.name())
    }
}

/// A [`Backend`] could not be made (the provider's configuration or local state).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Makes a [`Backend`] for a desired state.
pub type BackendFactory = Box<
    dyn Fn(
            Arc<Desired>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Backend, BackendError>> + Send>,
        > + Send
        + Sync,
>;

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Fetch interval.
    pub poll_interval_ms: u64,
    /// Safety-net period.
    pub requeue_ms: u64,
    /// Backoff bounds.
    pub backoff_min_ms: u64,
    /// Backoff bounds.
    pub backoff_max_ms: u64,
    /// Executor settings (commit is set per pass).
    pub exec: ExecOptions,
}

/// Exponential backoff with a ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: u64,
    max: u64,
    next: u64,
}

impl Backoff {
    /// From `min` doubling up to `max`.
    pub fn new(min: u64, max: u64) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }
    /// The delay to wait now; the next one doubles.
    pub fn fail(&mut self) -> u64 {
        let d = self.next;
        self.next = (self.next.saturating_mul(2)).min(self.max);
        d
    }
    /// Back to the start.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(1_000, 5_000);
        assert_eq!(
            [b.fail(), b.fail(), b.fail(), b.fail(), b.fail()],
            [1_000, 2_000, 4_000, 5_000, 5_000]
        );
        b.reset();
        assert_eq!(b.fail(), 1_000);
    }
}
