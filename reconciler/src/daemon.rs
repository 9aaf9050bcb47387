//! `fleet run`: the long-running reconciler.
//!
//! Two tasks and a server share one [`Shared`]:
//! - the **fetcher** polls the fleet repository every `poll_interval`, at once on a GitHub
//!   push webhook or a file-system change, validates each new revision and publishes the
//!   last good one. An invalid revision is reported (status, metrics, notifier) and
//!   otherwise ignored: the last good revision stays in force.
//! - the **reconcile loop** is level-triggered: each pass rebuilds desired (the revision in
//!   force) and observed (the provider), plans and executes. Passes run one at a time; a new
//!   good revision preempts a running pass between steps; a pass that made progress is
//!   followed at once by another (which must find nothing to do), otherwise the next one
//!   comes after `requeue` (the safety net) or, after an error, after an exponential backoff.
//!   A coin whose rollout failed is held until the next revision: fleet does not retry a
//!   failed gate on its own.
//! - the **server** (`server.rs`) answers /healthz, /readyz, /metrics, /status and the
//!   webhook.
//!
//! SIGTERM and SIGINT cancel everything: the executor stops between steps, never inside one.

use crate::apply::{CoinOutcome, Event, ExecOptions, Executor, Notifier};
use crate::clock::{Clock, Millis};
use crate::health::{ProbeTarget, Prober, Verdict};
use crate::observe::{InstanceState, NodeKey, Observed, Provider};
use crate::plan::plan;
use crate::source::{Head, Source};
use crate::store::Journal;
use fleet_repo_schema::{Desired, Diagnostic, Severity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

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

/// Where the repository is fetched from, for /status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    /// `git` or `directory`.
    pub kind: String,
    /// URL or path (credentials removed).
    pub url: String,
    /// Branch asked for (None: the remote's default).
    pub branch: Option<String>,
    /// Head found by the last successful fetch.
    pub head: Option<String>,
    /// When the last fetch ended.
    pub last_fetch_ms: Option<Millis>,
    /// The last fetch's error, if it failed.
    pub last_fetch_error: Option<String>,
}

/// One validation error, located.
#[derive(Debug, Clone, Serialize)]
pub struct LocatedError {
    /// File.
    pub file: String,
    /// Line (1-based).
    pub line: usize,
    /// Column (1-based).
    pub column: usize,
    /// Code (`E012`…).
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

/// The last invalid revision.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationFailure {
    /// The revision that failed.
    pub commit: String,
    /// When it was seen.
    pub at_ms: Millis,
    /// Its errors.
    pub errors: Vec<LocatedError>,
}

/// A node, as /status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// `<coin>/<zone>/<index>`.
    pub node: String,
    /// Instance.
    pub instance_id: String,
    /// EC2 state.
    pub state: String,
    /// Version running (tag), if known.
    pub version: Option<String>,
    /// Blocks, from the last reading.
    pub height: Option<u64>,
    /// Headers, from the last reading.
    pub headers: Option<u64>,
    /// In sync at the last reading.
    pub in_sync: Option<bool>,
    /// The gate's last word during a rollout, or the probe error.
    pub gate: Option<String>,
}

/// A zone of a coin.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ZoneStatus {
    /// Nodes.
    pub nodes: Vec<NodeStatus>,
    /// Passed its gate and bake in the current rollout.
    pub passed: bool,
}

/// A coin.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoinStatus {
    /// Version the revision in force asks for.
    pub desired_version: String,
    /// `in-sync`, `drift`, `rolling-out`, `awaiting-approval`, `failed`, `held`, `refused`.
    pub state: String,
    /// Steps of the current or last rollout.
    pub steps_total: usize,
    /// Of which done.
    pub steps_done: usize,
    /// Zone being rolled out.
    pub current_zone: Option<String>,
    /// Why it failed or is held.
    pub reason: Option<String>,
    /// Per zone, in rollout order.
    pub zones: BTreeMap<String, ZoneStatus>,
}

/// The reconcile loop, for /status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassStatus {
    /// Passes started.
    pub number: u64,
    /// A pass is running.
    pub running: bool,
    /// When the current or last pass started.
    pub started_ms: Option<Millis>,
    /// When the last pass ended.
    pub finished_ms: Option<Millis>,
    /// `converged`, `progress`, `partial`, `error`, `cancelled`.
    pub last_result: Option<String>,
    /// The last pass's error.
    pub last_error: Option<String>,
    /// Steps in the last plan.
    pub last_plan_steps: usize,
}

/// Everything /status returns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The repository.
    pub source: SourceStatus,
    /// Revision in force (the last good one), if any yet.
    pub commit: Option<String>,
    /// Its summary.
    pub commit_summary: Option<String>,
    /// The newest revision seen failed validation (None once a good one follows).
    pub validation_error: Option<ValidationFailure>,
    /// The loop.
    pub pass: PassStatus,
    /// Provider.
    pub provider: String,
    /// Per coin.
    pub coins: BTreeMap<String, CoinStatus>,
    /// The release watch's last cycle, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_watch: Option<serde_json::Value>,
}

/// Counters and gauges for /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Debug, Default)]
struct MetricsInner {
    passes: BTreeMap<String, u64>,
    pass_seconds_sum: f64,
    pass_seconds_buckets: [u64; PASS_BUCKETS.len()],
    pass_count: u64,
    plan_steps: usize,
    drift: BTreeMap<String, usize>,
    nodes: BTreeMap<(String, String), usize>,
    applied_commit: Option<String>,
    applied_at_s: f64,
    fetches: BTreeMap<String, u64>,
    webhooks: BTreeMap<String, u64>,
    source_valid: Option<bool>,
    invalid_commit: Option<String>,
    last_error: BTreeMap<String, f64>,
    api_calls: u64,
    steps: BTreeMap<String, u64>,
    slack_interactions: BTreeMap<String, u64>,
}

const PASS_BUCKETS: [f64; 8] = [0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0];

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut MetricsInner)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Count a webhook request by result.
    pub fn webhook(&self, result: &str) {
        self.with(|m| *m.webhooks.entry(result.into()).or_default() += 1);
    }

    /// Count a Slack interaction request by result.
    pub fn slack_interaction(&self, result: &str) {
        self.with(|m| *m.slack_interactions.entry(result.into()).or_default() += 1);
    }

    /// Git fetches by result.
    pub fn fetches(&self, result: &str) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fetches
            .get(result)
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut o,
            "fleet_reconcile_passes_total",
            "counter",
            "Reconcile passes by result.",
        );
        for r in ["converged", "progress", "partial", "error", "cancelled"] {
            let _ = writeln!(
                o,
                "fleet_reconcile_passes_total{{result=\"{r}\"}} {}",
                m.passes.get(r).copied().unwrap_or(0)
            );
        }
        head(
            &mut o,
            "fleet_reconcile_duration_seconds",
            "histogram",
            "Duration of reconcile passes.",
        );
        let mut cum = 0;
        for (i, b) in PASS_BUCKETS.iter().enumerate() {
            cum += m.pass_seconds_buckets[i];
            let _ = writeln!(
                o,
                "fleet_reconcile_duration_seconds_bucket{{le=\"{b}\"}} {cum}"
            );
        }
        let _ = writeln!(
            o,
            "fleet_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.pass_count
        );
        let _ = writeln!(
            o,
            "fleet_reconcile_duration_seconds_sum {}",
            m.pass_seconds_sum
        );
        let _ = writeln!(o, "fleet_reconcile_duration_seconds_count {}", m.pass_count);
        head(
            &mut o,
            "fleet_plan_steps",
            "gauge",
            "Steps in the last plan.",
        );
        let _ = writeln!(o, "fleet_plan_steps {}", m.plan_steps);
        head(
            &mut o,
            "fleet_coin_drift_steps",
            "gauge",
            "Steps the last plan has for each coin (0: in line with the repository).",
        );
        for (c, n) in &m.drift {
            let _ = writeln!(o, "fleet_coin_drift_steps{{coin=\"{}\"}} {n}", esc(c));
        }
        head(
            &mut o,
            "fleet_nodes",
            "gauge",
            "Managed nodes by coin and state at the last observation (state: EC2 state, or in_sync / out_of_sync for running nodes probed).",
        );
        for ((c, s), n) in &m.nodes {
            let _ = writeln!(
                o,
                "fleet_nodes{{coin=\"{}\",state=\"{}\"}} {n}",
                esc(c),
                esc(s)
            );
        }
        head(
            &mut o,
            "fleet_steps_total",
            "counter",
            "Executor steps by outcome.",
        );
        for (k, n) in &m.steps {
            let _ = writeln!(o, "fleet_steps_total{{outcome=\"{}\"}} {n}", esc(k));
        }
        head(
            &mut o,
            "fleet_applied_commit_info",
            "gauge",
            "The revision in force.",
        );
        if let Some(c) = &m.applied_commit {
            let _ = writeln!(o, "fleet_applied_commit_info{{commit=\"{}\"}} 1", esc(c));
        }
        head(
            &mut o,
            "fleet_applied_commit_timestamp_seconds",
            "gauge",
            "When the revision in force was taken.",
        );
        let _ = writeln!(
            o,
            "fleet_applied_commit_timestamp_seconds {}",
            m.applied_at_s
        );
        head(
            &mut o,
            "fleet_source_valid",
            "gauge",
            "1 if the newest revision of the fleet repository is valid, 0 if it failed validation (the last good one stays in force).",
        );
        let _ = writeln!(
            o,
            "fleet_source_valid {}",
            u8::from(m.source_valid.unwrap_or(true))
        );
        head(
            &mut o,
            "fleet_invalid_commit_info",
            "gauge",
            "The newest revision, when it failed validation.",
        );
        if let Some(c) = &m.invalid_commit {
            let _ = writeln!(o, "fleet_invalid_commit_info{{commit=\"{}\"}} 1", esc(c));
        }
        head(
            &mut o,
            "fleet_last_error_timestamp_seconds",
            "gauge",
            "When the last error of each kind happened (fetch, validation, pass: observing or the provider, rollout: a failed coin).",
        );
        for (k, t) in &m.last_error {
            let _ = writeln!(
                o,
                "fleet_last_error_timestamp_seconds{{kind=\"{}\"}} {t}",
                esc(k)
            );
        }
        head(
            &mut o,
            "fleet_git_fetches_total",
            "counter",
            "Fetches of the fleet repository by result.",
        );
        for r in ["ok", "error"] {
            let _ = writeln!(
                o,
                "fleet_git_fetches_total{{result=\"{r}\"}} {}",
                m.fetches.get(r).copied().unwrap_or(0)
            );
        }
        head(
            &mut o,
            "fleet_webhook_requests_total",
            "counter",
            "GitHub webhook requests by result.",
        );
        for (r, n) in &m.webhooks {
            let _ = writeln!(
                o,
                "fleet_webhook_requests_total{{result=\"{}\"}} {n}",
                esc(r)
            );
        }
        head(
            &mut o,
            "fleet_slack_interactions_total",
            "counter",
            "Slack interaction callbacks (POST /hooks/slack) by result.",
        );
        for (r, n) in &m.slack_interactions {
            let _ = writeln!(
                o,
                "fleet_slack_interactions_total{{result=\"{}\"}} {n}",
                esc(r)
            );
        }
        head(
            &mut o,
            "fleet_provider_api_calls_total",
            "counter",
            "Calls to the provider's API (AWS, or the simulator), retries counted once.",
        );
        let _ = writeln!(o, "fleet_provider_api_calls_total {}", m.api_calls);
        o
    }
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
    /// More metrics, rendered after the daemon's own (the bots' counters).
    pub extra_metrics: Mutex<Vec<Arc<dyn Fn() -> String + Send + Sync>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The whole /metrics text: the daemon's and every registered extra.
    pub fn render_metrics(&self) -> String {
        let mut t = self.metrics.render();
        let extra = self
            .extra_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for f in extra {
            t.push_str(&f());
        }
        t
    }

    /// Update the status.
    pub fn status_mut<T>(&self, f: impl FnOnce(&mut Status) -> T) -> T {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()))
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

/// Makes a [`Backend`] for a desired state.
pub type BackendFactory = Box<
    dyn Fn(
            Arc<Desired>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Backend>> + Send>>
        + Send
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

fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn located(d: &Diagnostic) -> LocatedError {
    LocatedError {
        file: d.file.clone(),
        line: d.span.start.line as usize,
        column: d.span.start.col as usize,
        code: d.code.as_str().to_string(),
        message: d.message.clone(),
        help: d.help.clone(),
    }
}

/// Longest a fetch may take before it counts as failed.
pub const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The fetcher: runs until `shutdown`.
pub async fn fetcher(
    source: Source,
    shared: Arc<Shared>,
    notifier: Arc<dyn Notifier>,
    good_tx: watch::Sender<Option<Arc<Good>>>,
    opts: LoopOptions,
    shutdown: CancellationToken,
) {
    let mut known: Option<String> = None;
    let mut backoff = Backoff::new(
        opts.backoff_min_ms,
        opts.poll_interval_ms.max(opts.backoff_min_ms),
    );
    loop {
        shared.fetch_count.fetch_add(1, Ordering::SeqCst);
        let (src, k) = (source.clone(), known.clone());
        // libgit2 has no overall timeout: a remote that accepts and then stalls would hold
        // the fetcher for ever. After FETCH_TIMEOUT the fetch counts as failed (the blocking
        // thread is left to finish or fail on its own).
        let res = match tokio::time::timeout(
            FETCH_TIMEOUT,
            tokio::task::spawn_blocking(move || src.poll(k.as_deref())),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Ok(Err(crate::source::SourceError::Fetch {
                url: source.describe(),
                message: format!(
                    "no answer within {} s (the remote is unreachable or stalled)",
                    FETCH_TIMEOUT.as_secs()
                ),
            })),
        };
        let now = crate::clock::SystemClock.now_ms();
        let wait = match res {
            Ok(Ok((head, loaded))) => {
                backoff.reset();
                shared
                    .metrics
                    .with(|m| *m.fetches.entry("ok".into()).or_default() += 1);
                shared.status_mut(|s| {
                    s.source.head = Some(head.rev.clone());
                    s.source.last_fetch_ms = Some(now);
                    s.source.last_fetch_error = None;
                });
                if let Some(loaded) = loaded {
                    known = Some(head.rev.clone());
                    take(&shared, &*notifier, &good_tx, head, loaded, now);
                }
                opts.poll_interval_ms
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, "fetching the fleet repository failed; the last good revision stays in force");
                shared.metrics.with(|m| {
                    *m.fetches.entry("error".into()).or_default() += 1;
                    m.last_error.insert("fetch".into(), wall_s());
                });
                shared.status_mut(|s| {
                    s.source.last_fetch_ms = Some(now);
                    s.source.last_fetch_error = Some(msg);
                });
                backoff.fail()
            }
            Err(e) => {
                tracing::error!(error = %e, "the fetch task ended abnormally");
                backoff.fail()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
            _ = shared.fetch_now.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A new revision was loaded: publish it if good, report it if not.
fn take(
    shared: &Shared,
    notifier: &dyn Notifier,
    good_tx: &watch::Sender<Option<Arc<Good>>>,
    head: Head,
    loaded: fleet_repo_schema::Loaded,
    now: Millis,
) {
    match loaded.desired {
        Some(desired) => {
            tracing::info!(commit = %head.rev, summary = head.summary.as_deref().unwrap_or(""), "new revision of the fleet repository is valid");
            shared.metrics.with(|m| {
                m.source_valid = Some(true);
                m.invalid_commit = None;
            });
            shared.status_mut(|s| s.validation_error = None);
            let _ = good_tx.send(Some(Arc::new(Good {
                rev: head.rev,
                summary: head.summary,
                desired: Arc::new(desired),
            })));
        }
        None => {
            let errors: Vec<LocatedError> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(located)
                .collect();
            let in_force = good_tx.borrow().as_ref().map(|g| g.rev.clone());
            for e in &errors {
                tracing::error!(commit = %head.rev, file = %e.file, line = e.line, column = e.column, code = %e.code, "{}", e.message);
            }
            tracing::error!(commit = %head.rev, in_force = in_force.as_deref().unwrap_or("none"), errors = errors.len(), "revision is invalid: not applied; the last good revision stays in force");
            shared.metrics.with(|m| {
                m.source_valid = Some(false);
                m.invalid_commit = Some(head.rev.clone());
                m.last_error.insert("validation".into(), wall_s());
            });
            notifier.notify(
                now,
                &Event::RepoInvalid {
                    commit: head.rev.clone(),
                    in_force,
                    errors: errors
                        .iter()
                        .map(|e| {
                            format!(
                                "{}:{}:{}: {} {}",
                                e.file, e.line, e.column, e.code, e.message
                            )
                        })
                        .collect(),
                },
            );
            shared.status_mut(|s| {
                s.validation_error = Some(ValidationFailure {
                    commit: head.rev,
                    at_ms: now,
                    errors,
                })
            });
        }
    }
}

/// Keeps /status and the metrics current from the executor's events, and passes them on.
struct StatusNotifier {
    shared: Arc<Shared>,
    next: Arc<dyn Notifier>,
}

impl Notifier for StatusNotifier {
    fn notify(&self, at_ms: Millis, e: &Event) {
        self.next.notify(at_ms, e);
        log_event(e);
        self.shared.status_mut(|s| match e {
            Event::RolloutStarted { coin, steps, .. } => {
                let c = s.coins.entry(coin.clone()).or_default();
                c.state = "rolling-out".into();
                c.steps_total = *steps;
                c.steps_done = 0;
                c.reason = None;
                for z in c.zones.values_mut() {
                    z.passed = false;
                }
            }
            Event::ApprovalNeeded { coin, version, .. } => {
                let c = s.coins.entry(coin.clone()).or_default();
                c.state = "awaiting-approval".into();
                c.reason = Some(format!("{version} needs an approval"));
            }
            Event::StepStarted { coin, node, .. } => {
                s.coins.entry(coin.clone()).or_default().current_zone = Some(node.zone.clone());
            }
            Event::StepFinished { coin, .. } => {
                s.coins.entry(coin.clone()).or_default().steps_done += 1;
            }
            Event::Gate {
                coin,
                zone,
                node,
                verdict,
            } => {
                let z = s
                    .coins
                    .entry(coin.clone())
                    .or_default()
                    .zones
                    .entry(zone.clone())
                    .or_default();
                let name = node.to_string();
                if let Some(n) = z.nodes.iter_mut().find(|n| n.node == name) {
                    match verdict {
                        Verdict::InSync { height } => {
                            n.height = Some(*height);
                            n.in_sync = Some(true);
                            n.gate = Some("in sync".into());
                        }
                        Verdict::Waiting {
                            reason,
                            height,
                            target,
                            ..
                        } => {
                            n.height = *height;
                            n.headers = *target;
                            n.in_sync = Some(false);
                            n.gate = Some(format!("waiting: {reason:?}"));
                        }
                        Verdict::Failed(f) => {
                            n.in_sync = Some(false);
                            n.gate = Some(format!("failed: {f:?}"));
                        }
                    }
                }
            }
            Event::ZonePassed { coin, zone, .. } => {
                s.coins
                    .entry(coin.clone())
                    .or_default()
                    .zones
                    .entry(zone.clone())
                    .or_default()
                    .passed = true;
            }
            Event::RolloutFinished { coin, .. } => {
                let c = s.coins.entry(coin.clone()).or_default();
                c.state = "in-sync".into();
                c.current_zone = None;
            }
            Event::RolloutFailed { coin, reason, .. } => {
                let c = s.coins.entry(coin.clone()).or_default();
                c.state = "failed".into();
                c.reason = Some(reason.clone());
            }
            Event::Waiting { .. } | Event::Baking { .. } | Event::RepoInvalid { .. } => {}
        });
        if let Event::StepFinished { outcome, .. } = e {
            let k = match outcome.as_str() {
                "done" | "already-done" => outcome.as_str(),
                _ => "error",
            };
            if k == "done" {
                self.shared.steps_done.fetch_add(1, Ordering::SeqCst);
            }
            self.shared
                .metrics
                .with(|m| *m.steps.entry(k.into()).or_default() += 1);
        }
    }
}

fn log_event(e: &Event) {
    match e {
        Event::RolloutStarted {
            coin, to, steps, ..
        } => {
            tracing::info!(coin = %coin, to = to.as_deref().unwrap_or("retire"), steps, "rollout started")
        }
        Event::ApprovalNeeded {
            coin,
            version,
            commit,
            ..
        } => {
            tracing::info!(coin = %coin, version = %version, commit = %commit, "waiting for an approval")
        }
        Event::StepStarted { coin, node, action } => {
            tracing::info!(coin = %coin, zone = %node.zone, node = %node, step = %action, "step")
        }
        Event::StepFinished {
            coin,
            node,
            action,
            outcome,
        } => {
            tracing::info!(coin = %coin, zone = %node.zone, node = %node, step = %action, outcome = %outcome, "step finished")
        }
        Event::ZonePassed {
            coin,
            zone,
            took_ms,
        } => {
            tracing::info!(coin = %coin, zone = %zone, took_ms, "zone in sync and baked")
        }
        Event::RolloutFinished { coin, took_ms } => {
            tracing::info!(coin = %coin, took_ms, "rollout finished")
        }
        Event::RolloutFailed {
            coin,
            zone,
            node,
            reason,
        } => tracing::error!(
            coin = %coin,
            zone = zone.as_deref().unwrap_or(""),
            node = node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
            reason = %reason,
            "rollout stopped"
        ),
        Event::Waiting { coin, reason } => {
            tracing::info!(coin = %coin, reason = %reason, "waiting")
        }
        Event::Gate { .. } | Event::Baking { .. } | Event::RepoInvalid { .. } => {}
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassResult {
    /// Nothing to do.
    Converged,
    /// Steps were carried out: run again at once.
    Progress,
    /// Something waits (approval, held coin, refusal): nothing more can be done now.
    Partial,
    /// Preempted or shut down.
    Cancelled,
}

impl PassResult {
    fn as_str(self) -> &'static str {
        match self {
            PassResult::Converged => "converged",
            PassResult::Progress => "progress",
            PassResult::Partial => "partial",
            PassResult::Cancelled => "cancelled",
        }
    }
}

/// The reconcile loop: runs until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_loop(
    shared: Arc<Shared>,
    mut good_rx: watch::Receiver<Option<Arc<Good>>>,
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
    let mut backend: Option<(String, Backend)> = None;
    let mut backoff = Backoff::new(opts.backoff_min_ms, opts.backoff_max_ms);
    // Coins whose rollout failed, held until the revision changes: (rev, reason).
    let mut held: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut wait_ms: Option<u64> = None; // None: wait for the first good revision
    // Passes in a row that made progress: a plan that never empties (something the
    // provider reports done but observation never shows) must not spin.
    let mut streak = 0u32;
    loop {
        if good_rx.has_changed().is_err() {
            // The fetcher is gone (shutdown): nothing will ever change again.
            return;
        }
        // Wait for a reason to run.
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
                _ = shared.kick.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        let Some(good) = good_rx.borrow_and_update().clone() else {
            wait_ms = None;
            continue;
        };
        held.retain(|_, (rev, _)| *rev == good.rev);
        let started = std::time::Instant::now();
        shared.status_mut(|s| {
            s.pass.number += 1;
            s.pass.running = true;
            s.pass.started_ms = Some(crate::clock::SystemClock.now_ms());
        });
        let r = pass(
            &shared,
            &good,
            &mut good_rx,
            &factory,
            &mut backend,
            &journal,
            &notifier,
            &opts,
            &mut held,
            &shutdown,
        )
        .await;
        let secs = started.elapsed().as_secs_f64();
        let label = match &r {
            Ok(x) => x.as_str().to_string(),
            Err(_) => "error".into(),
        };
        shared.metrics.with(|m| {
            *m.passes.entry(label.clone()).or_default() += 1;
            m.pass_count += 1;
            m.pass_seconds_sum += secs;
            for (i, b) in PASS_BUCKETS.iter().enumerate() {
                if secs <= *b {
                    m.pass_seconds_buckets[i] += 1;
                    break;
                }
            }
            if let Some((_, b)) = &backend {
                m.api_calls = b.provider.api_calls();
            }
        });
        shared.status_mut(|s| {
            s.pass.running = false;
            s.pass.finished_ms = Some(crate::clock::SystemClock.now_ms());
            s.pass.last_result = Some(label.clone());
            s.pass.last_error = r.as_ref().err().map(|e| format!("{e:#}"));
        });
        // A newer revision seen during the pass (one that did not preempt it: same desired
        // state) is taken at once, so /status never shows a stale commit for long.
        let newer = good_rx.borrow().as_ref().is_some_and(|g| g.rev != good.rev);
        streak = if matches!(r, Ok(PassResult::Progress)) {
            streak + 1
        } else {
            0
        };
        wait_ms = Some(match r {
            Ok(_) if newer => 0,
            Ok(PassResult::Progress) if streak > 20 => {
                let d = backoff.fail();
                tracing::warn!(
                    passes = streak,
                    retry_in_ms = d,
                    "the plan keeps changing the fleet without converging; slowing down"
                );
                d
            }
            Ok(PassResult::Progress) | Ok(PassResult::Cancelled) => {
                backoff.reset();
                0
            }
            Ok(PassResult::Converged) | Ok(PassResult::Partial) => {
                backoff.reset();
                opts.requeue_ms
            }
            Err(e) => {
                let d = backoff.fail();
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = d, "reconcile pass failed");
                shared.metrics.with(|m| {
                    m.last_error.insert("pass".into(), wall_s());
                });
                d
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn pass(
    shared: &Arc<Shared>,
    good: &Arc<Good>,
    good_rx: &mut watch::Receiver<Option<Arc<Good>>>,
    factory: &BackendFactory,
    backend: &mut Option<(String, Backend)>,
    journal: &Arc<Journal>,
    notifier: &Arc<dyn Notifier>,
    opts: &LoopOptions,
    held: &mut BTreeMap<String, (String, String)>,
    shutdown: &CancellationToken,
) -> anyhow::Result<PassResult> {
    let desired = Arc::clone(&good.desired);
    let region = desired.fleet.region.to_string();
    if backend.as_ref().is_none_or(|(r, _)| *r != region) {
        *backend = None;
        let b = factory(Arc::clone(&desired)).await?;
        shared.status_mut(|s| s.provider = b.provider.name().to_string());
        *backend = Some((region, b));
    }
    let Some((_, b)) = backend.as_ref() else {
        anyhow::bail!("no provider");
    };
    let observed = b.provider.observe(&desired).await?;
    let now = b.clock.now_ms();
    let mut p = plan(&desired, &observed, now);
    refresh_status(shared, good, &desired, &observed, &p, b, held).await;
    shared.ready.store(true, Ordering::SeqCst);
    shared.metrics.with(|m| {
        if m.applied_commit.as_deref() != Some(good.rev.as_str()) {
            m.applied_at_s = wall_s();
        }
        m.applied_commit = Some(good.rev.clone());
        m.plan_steps = p
            .coins
            .iter()
            .map(|c| c.waves.iter().map(|w| w.steps.len()).sum::<usize>())
            .sum();
        m.api_calls = b.provider.api_calls();
    });
    let before = p.coins.len();
    p.coins.retain(|c| !held.contains_key(&c.coin));
    let some_held = p.coins.len() < before;
    if p.is_empty() {
        return Ok(if some_held {
            PassResult::Partial
        } else {
            PassResult::Converged
        });
    }
    let exec = Arc::new(Executor {
        provider: Arc::clone(&b.provider),
        prober: Arc::clone(&b.prober),
        journal: Arc::clone(journal),
        notifier: Arc::clone(notifier),
        clock: Arc::clone(&b.clock),
        opts: ExecOptions {
            commit: good.rev.clone(),
            ..opts.exec.clone()
        },
    });
    let cancel = shutdown.child_token();
    let done_before = shared.steps_done.load(Ordering::SeqCst);
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
            r = &mut run => break r?,
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
    let progress = shared.steps_done.load(Ordering::SeqCst) > done_before;
    let mut waiting = false;
    for c in &report.coins {
        match &c.outcome {
            CoinOutcome::Completed => {}
            CoinOutcome::Failed { reason } => {
                held.insert(c.coin.clone(), (good.rev.clone(), reason.clone()));
                shared.metrics.with(|m| {
                    m.last_error.insert("rollout".into(), wall_s());
                });
            }
            CoinOutcome::AwaitingApproval
            | CoinOutcome::Rejected { .. }
            | CoinOutcome::Refused { .. } => waiting = true,
            CoinOutcome::Cancelled => {}
        }
    }
    if cancel.is_cancelled() {
        return Ok(PassResult::Cancelled);
    }
    let _ = waiting;
    Ok(if progress {
        PassResult::Progress
    } else {
        // Awaiting approval, refused, held or failed: nothing more to do until something
        // changes (a commit, an approval) or the requeue comes.
        PassResult::Partial
    })
}

/// Rebuild the per-coin view: desired versions, nodes with a fresh probe reading, drift.
async fn refresh_status(
    shared: &Arc<Shared>,
    good: &Good,
    desired: &Desired,
    observed: &Observed,
    p: &crate::plan::Plan,
    b: &Backend,
    held: &BTreeMap<String, (String, String)>,
) {
    // Probe every running node (bounded), for heights and the nodes-per-state gauge.
    let mut targets: Vec<(String, String, NodeKey, ProbeTarget)> = Vec::new();
    for coin in desired.coins.values() {
        for n in observed.nodes_of(coin.name.as_str()) {
            if n.state != InstanceState::Running {
                continue;
            }
            let dns_name = coin
                .nodes
                .iter()
                .find(|s| NodeKey::of(s) == n.key)
                .map(|s| s.dns_name.clone())
                .unwrap_or_default();
            targets.push((
                coin.name.to_string(),
                n.instance_id.clone(),
                n.key.clone(),
                ProbeTarget {
                    key: n.key.clone(),
                    instance_id: n.instance_id.clone(),
                    dns_name,
                    health: coin.health.clone(),
                },
            ));
        }
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut set = tokio::task::JoinSet::new();
    for (_, id, _, t) in targets {
        let (prober, sem) = (Arc::clone(&b.prober), Arc::clone(&sem));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = prober.probe(&t).await;
            (id, r)
        });
    }
    let mut readings = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((id, r)) = r {
            readings.insert(id, r);
        }
    }
    let mut coins = BTreeMap::new();
    let mut nodes_gauge: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut drift = BTreeMap::new();
    for coin in desired.coins.values() {
        let name = coin.name.to_string();
        let steps: usize = p
            .coins
            .iter()
            .filter(|c| c.coin == name)
            .map(|c| c.waves.iter().map(|w| w.steps.len()).sum::<usize>())
            .sum();
        drift.insert(name.clone(), steps);
        let mut cs = CoinStatus {
            desired_version: coin.version.to_string(),
            state: if steps == 0 {
                "in-sync".into()
            } else {
                "drift".into()
            },
            ..CoinStatus::default()
        };
        if let Some((_, reason)) = held.get(&name) {
            cs.state = "held".into();
            cs.reason = Some(format!(
                "rollout failed for this revision: {reason}; push a new commit (or fix the node) to retry"
            ));
        }
        if let Some(cp) = p.coins.iter().find(|c| c.coin == name)
            && !cp.refusals.is_empty()
        {
            cs.state = "refused".into();
            cs.reason = Some(
                cp.refusals
                    .iter()
                    .map(|r| r.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        for z in &coin.zones {
            cs.zones.entry(z.to_string()).or_default();
        }
        for n in observed.nodes_of(&name) {
            let reading = readings.get(&n.instance_id);
            let state = match (&n.state, reading) {
                (InstanceState::Running, Some(Ok(st)))
                    if st.blocks >= st.headers && !st.initial_block_download =>
                {
                    "in_sync".to_string()
                }
                (InstanceState::Running, Some(_)) => "out_of_sync".to_string(),
                (s, _) => s.as_str().to_string(),
            };
            *nodes_gauge.entry((name.clone(), state)).or_default() += 1;
            let (height, headers, in_sync, gate) = match reading {
                Some(Ok(st)) => (
                    Some(st.blocks),
                    Some(st.headers),
                    Some(st.blocks >= st.headers && !st.initial_block_download),
                    None,
                ),
                Some(Err(e)) => (None, None, Some(false), Some(e.to_string())),
                None => (None, None, None, None),
            };
            cs.zones
                .entry(n.key.zone.clone())
                .or_default()
                .nodes
                .push(NodeStatus {
                    node: n.key.to_string(),
                    instance_id: n.instance_id.clone(),
                    state: n.state.as_str().to_string(),
                    version: n.version.known().map(|v| v.to_string()),
                    height,
                    headers,
                    in_sync,
                    gate,
                });
        }
        coins.insert(name, cs);
    }
    shared.metrics.with(|m| {
        m.nodes = nodes_gauge;
        m.drift = drift;
    });
    shared.status_mut(|s| {
        s.commit = Some(good.rev.clone());
        s.commit_summary = good.summary.clone();
        s.coins = coins;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    /// A broken revision is reported to the notifier and on the status with its location,
    /// and the good one stays published; the fix replaces it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalid_revision_is_reported_and_the_last_good_one_stays() {
        use crate::apply::RecordingNotifier;
        use crate::source::DirSource;
        let dir = tempfile::tempdir().unwrap();
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet");
        copy(&example, dir.path());
        let source = Source::Dir(Arc::new(DirSource::new(dir.path().to_path_buf())));
        let shared = Arc::new(Shared::default());
        let rec = Arc::new(RecordingNotifier::default());
        let (tx, rx) = watch::channel(None);
        let opts = LoopOptions {
            poll_interval_ms: 20,
            requeue_ms: 1_000,
            backoff_min_ms: 10,
            backoff_max_ms: 100,
            exec: ExecOptions::default(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(fetcher(
            source,
            Arc::clone(&shared),
            rec.clone(),
            tx,
            opts,
            stop.clone(),
        ));
        let wait = |f: &dyn Fn() -> bool| {
            let ok = (0..500).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                f()
            });
            assert!(ok, "timed out");
        };
        wait(&|| rx.borrow().is_some());
        let good = rx.borrow().as_ref().unwrap().rev.clone();
        let path = dir.path().join("coins/litecoin.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("nodes_per_zone: 1", "nodes_per_zone: -3"),
        )
        .unwrap();
        wait(&|| shared.status().validation_error.is_some());
        let v = shared.status().validation_error.unwrap();
        assert_ne!(v.commit, good);
        assert_eq!(v.errors[0].file, "coins/litecoin.yaml");
        assert!(
            v.errors[0].line > 1 && v.errors[0].column > 1,
            "{:?}",
            v.errors
        );
        assert_eq!(
            rx.borrow().as_ref().unwrap().rev,
            good,
            "the good revision stays"
        );
        let events = rec.events();
        assert!(
            events.iter().any(|(_, e)| matches!(e, Event::RepoInvalid { commit, in_force, errors }
                if *commit == v.commit && in_force.as_deref() == Some(good.as_str()) && errors[0].starts_with("coins/litecoin.yaml:"))),
            "{events:?}"
        );
        assert!(shared.metrics.render().contains("fleet_source_valid 0"));
        std::fs::write(
            &path,
            text.replace("nodes_per_zone: 1", "nodes_per_zone: 2"),
        )
        .unwrap();
        wait(&|| rx.borrow().as_ref().is_some_and(|g| g.rev != good));
        assert!(shared.status().validation_error.is_none());
        assert!(shared.metrics.render().contains("fleet_source_valid 1"));
        stop.cancel();
        task.await.unwrap();
    }

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

    #[test]
    fn metrics_are_prometheus_text() {
        let m = Metrics::default();
        m.webhook("unauthorized");
        m.with(|i| {
            i.drift.insert("bit\"coin".into(), 3);
            i.applied_commit = Some("abc".into());
        });
        let t = m.render();
        assert!(
            t.contains("fleet_webhook_requests_total{result=\"unauthorized\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("fleet_coin_drift_steps{coin=\"bit\\\"coin\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("fleet_applied_commit_info{commit=\"abc\"} 1"),
            "{t}"
        );
        // Every sample line belongs to a declared metric.
        let declared: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            assert!(
                declared.iter().any(|d| name == *d
                    || name
                        .strip_prefix(d)
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                "undeclared sample {l}"
            );
        }
    }
}
