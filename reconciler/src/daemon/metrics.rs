//! `GET /metrics`: the daemon's counters and gauges, through the Prometheus project's client
//! library (`prometheus-client`), in the OpenMetrics text format. The metric names are fleet's
//! contract with dashboards and alerts; they are listed in the README.
//!
//! Gauges that describe the last observation (drift per coin, nodes per state, the revision
//! in force) are rebuilt whole each time, so a coin or a state that disappears does not leave
//! a stale series behind. The bots add their own series through [`Metrics::register`].

use crate::events::StepOutcome;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the pass duration histogram, seconds: passes range from a converged poll
/// (well under a second) to a rollout with bakes (hours).
const PASS_BUCKETS: [f64; 8] = [0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0];

/// Results a pass can have (pre-created at 0, so rates exist before the first of each).
pub const PASS_RESULTS: [&str; 5] = ["converged", "progress", "partial", "error", "cancelled"];

type Labels = Vec<(&'static str, String)>;
type F64Gauge = Gauge<f64, AtomicU64>;

fn label(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

/// When an error of a kind last happened (`fleet_last_error_timestamp_seconds{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Fetching the repository.
    Fetch,
    /// A revision failed validation.
    Validation,
    /// A pass failed (observing, the provider).
    Pass,
    /// A coin's rollout failed.
    Rollout,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Fetch => "fetch",
            ErrorKind::Validation => "validation",
            ErrorKind::Pass => "pass",
            ErrorKind::Rollout => "rollout",
        }
    }
}

fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every series of the daemon.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    passes: Family<Labels, Counter>,
    pass_seconds: Histogram,
    plan_steps: Gauge,
    drift: Family<Labels, Gauge>,
    nodes: Family<Labels, Gauge>,
    steps: Family<Labels, Counter>,
    applied_commit: Family<Labels, Gauge>,
    applied_at: F64Gauge,
    source_valid: Gauge,
    invalid_commit: Family<Labels, Gauge>,
    last_error: Family<Labels, F64Gauge>,
    fetches: Family<Labels, Counter>,
    webhooks: Family<Labels, Counter>,
    slack_interactions: Family<Labels, Counter>,
    connections: Family<Labels, Counter>,
    api_calls: Counter,
    api_calls_seen: AtomicU64,
    provider: Family<Labels, Gauge>,
    /// Serialises the rebuilds of whole families (observation gauges, the commit).
    rebuild: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every series registered, the ones with a fixed set of labels at 0.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            passes: Family::default(),
            pass_seconds: Histogram::new(PASS_BUCKETS),
            plan_steps: Gauge::default(),
            drift: Family::default(),
            nodes: Family::default(),
            steps: Family::default(),
            applied_commit: Family::default(),
            applied_at: F64Gauge::default(),
            source_valid: Gauge::default(),
            invalid_commit: Family::default(),
            last_error: Family::default(),
            fetches: Family::default(),
            webhooks: Family::default(),
            slack_interactions: Family::default(),
            connections: Family::default(),
            api_calls: Counter::default(),
            api_calls_seen: AtomicU64::new(0),
            provider: Family::default(),
            rebuild: Mutex::new(()),
        };
        for r in PASS_RESULTS {
            let _ = m.passes.get_or_create(&label("result", r));
        }
        for r in ["ok", "error"] {
            let _ = m.fetches.get_or_create(&label("result", r));
        }
        for k in ["evicted", "shed"] {
            let _ = m.connections.get_or_create(&label("kind", k));
        }
        m.source_valid.set(1);
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "fleet_reconcile_passes",
                "Reconcile passes by result",
                m.passes.clone(),
            );
            r.register_with_unit(
                "fleet_reconcile_duration",
                "Duration of reconcile passes",
                Unit::Seconds,
                m.pass_seconds.clone(),
            );
            r.register(
                "fleet_plan_steps",
                "Steps in the last plan",
                m.plan_steps.clone(),
            );
            r.register(
                "fleet_coin_drift_steps",
                "Steps the last plan has for each coin (0: in line with the repository)",
                m.drift.clone(),
            );
            r.register(
                "fleet_nodes",
                "Managed nodes by coin and state at the last observation (state: in_sync or out_of_sync for running nodes that are probed, running for probe none, else the EC2 state)",
                m.nodes.clone(),
            );
            r.register("fleet_steps", "Executor steps by outcome", m.steps.clone());
            r.register(
                "fleet_provider_info",
                "Where the fleet is observed and changed: provider=\"aws\", or provider=\"sim\" for a simulated fleet",
                m.provider.clone(),
            );
            r.register(
                "fleet_applied_commit_info",
                "The revision in force",
                m.applied_commit.clone(),
            );
            r.register_with_unit(
                "fleet_applied_commit_timestamp",
                "When the revision in force was taken",
                Unit::Seconds,
                m.applied_at.clone(),
            );
            r.register(
                "fleet_source_valid",
                "1 if the newest revision of the fleet repository is valid, 0 if it failed validation (the last good one stays in force)",
                m.source_valid.clone(),
            );
            r.register(
                "fleet_invalid_commit_info",
                "The newest revision, when it failed validation",
                m.invalid_commit.clone(),
            );
            r.register_with_unit(
                "fleet_last_error_timestamp",
                "When the last error of each kind happened (fetch, validation, pass: observing or the provider, rollout: a failed coin)",
                Unit::Seconds,
                m.last_error.clone(),
            );
            r.register(
                "fleet_git_fetches",
                "Fetches of the fleet repository by result",
                m.fetches.clone(),
            );
            r.register(
                "fleet_webhook_requests",
                "GitHub webhook requests by result",
                m.webhooks.clone(),
            );
            r.register(
                "fleet_slack_interactions",
                "Slack interaction callbacks (POST /hooks/slack) by result",
                m.slack_interactions.clone(),
            );
            r.register(
                "fleet_http_connections_crowded",
                "Connections the server closed to keep its slots for clients that talk: evicted (accepted while every slot was taken, so the longest-waiting silent connection was closed to make room), shed (accepted while every slot was taken and none was silent: closed at once) or timed-out (sent no request within the header timeout)",
                m.connections.clone(),
            );
            r.register(
                "fleet_provider_api_calls",
                "Calls to the provider's API (AWS, or the simulator), retries counted once",
                m.api_calls.clone(),
            );
        }
        m
    }

    /// Add series kept elsewhere (the Slack bot's, the release watch's), encoded at each scrape.
    pub fn register(&self, collector: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(collector);
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }

    /// A webhook request, by result.
    pub fn webhook(&self, result: &str) {
        self.webhooks.get_or_create(&label("result", result)).inc();
    }

    /// A Slack interaction callback, by result.
    pub fn slack_interaction(&self, result: &str) {
        self.slack_interactions
            .get_or_create(&label("result", result))
            .inc();
    }

    /// A connection accepted while every slot was taken (`evicted` or `shed`).
    pub fn connection(&self, kind: &str) {
        self.connections.get_or_create(&label("kind", kind)).inc();
    }

    /// A fetch of the repository ended.
    pub fn fetch(&self, ok: bool) {
        let r = if ok { "ok" } else { "error" };
        self.fetches.get_or_create(&label("result", r)).inc();
        if !ok {
            self.error(ErrorKind::Fetch);
        }
    }

    /// Fetches by result (`ok`, `error`).
    pub fn fetches(&self, result: &str) -> u64 {
        self.fetches
            .get(&label("result", result))
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// The newest revision is valid (`None`) or this commit failed validation.
    pub fn source(&self, invalid: Option<&str>) {
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        self.invalid_commit.clear();
        match invalid {
            None => {
                self.source_valid.set(1);
            }
            Some(c) => {
                self.source_valid.set(0);
                self.invalid_commit
                    .get_or_create(&label("commit", c))
                    .set(1);
                self.error(ErrorKind::Validation);
            }
        }
    }

    /// An error of `kind` happened now.
    pub fn error(&self, kind: ErrorKind) {
        self.last_error
            .get_or_create(&label("kind", kind.as_str()))
            .set(wall_s());
    }

    /// A pass ended with `result` after `secs`.
    pub fn pass(&self, result: &str, secs: f64) {
        self.passes.get_or_create(&label("result", result)).inc();
        self.pass_seconds.observe(secs);
    }

    /// The provider fleet runs with (`aws` or `sim`): one series at 1.
    pub fn provider(&self, name: &str) {
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        self.provider.clear();
        self.provider.get_or_create(&label("provider", name)).set(1);
    }

    /// The provider's call count now (a running total).
    pub fn api_calls(&self, total: u64) {
        let before = self.api_calls_seen.swap(total, Ordering::SeqCst);
        self.api_calls.inc_by(total.saturating_sub(before));
    }

    /// `commit` is the revision in force (its timestamp moves only when it changes).
    pub fn applied(&self, commit: &str) {
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if self.applied_commit.get(&label("commit", commit)).is_none() {
            self.applied_commit.clear();
            self.applied_commit
                .get_or_create(&label("commit", commit))
                .set(1);
            self.applied_at.set(wall_s());
        }
    }

    /// What the last observation and plan found: steps in the plan, steps per coin, nodes per
    /// (coin, state).
    pub fn observed(
        &self,
        plan_steps: usize,
        drift: &BTreeMap<String, usize>,
        nodes: &BTreeMap<(String, String), usize>,
    ) {
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        self.plan_steps.set(plan_steps as i64);
        self.drift.clear();
        for (coin, n) in drift {
            self.drift
                .get_or_create(&label("coin", coin.as_str()))
                .set(*n as i64);
        }
        self.nodes.clear();
        for ((coin, state), n) in nodes {
            self.nodes
                .get_or_create(&vec![("coin", coin.clone()), ("state", state.clone())])
                .set(*n as i64);
        }
    }

    /// A step finished.
    pub fn step(&self, outcome: &StepOutcome) {
        self.steps
            .get_or_create(&label("outcome", outcome.label()))
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_openmetrics_text_with_fleets_names() {
        let m = Metrics::new();
        m.webhook("unauthorized");
        let mut drift = BTreeMap::new();
        drift.insert("bit\"coin".to_string(), 3);
        m.observed(3, &drift, &BTreeMap::new());
        m.applied("abc");
        m.pass("converged", 0.5);
        m.api_calls(7);
        m.api_calls(9);
        m.provider("aws");
        m.provider("sim");
        let t = m.render();
        assert!(!t.contains("fleet_provider_info{provider=\"aws\"}"), "{t}");
        for want in [
            "fleet_provider_info{provider=\"sim\"} 1",
            "fleet_webhook_requests_total{result=\"unauthorized\"} 1",
            "fleet_coin_drift_steps{coin=\"bit\\\"coin\"} 3",
            "fleet_applied_commit_info{commit=\"abc\"} 1",
            "fleet_reconcile_passes_total{result=\"converged\"} 1",
            "fleet_reconcile_passes_total{result=\"error\"} 0",
            "fleet_reconcile_duration_seconds_bucket{le=\"1.0\"} 1",
            "fleet_reconcile_duration_seconds_count 1",
            "fleet_provider_api_calls_total 9",
            "fleet_source_valid 1",
            "fleet_git_fetches_total{result=\"ok\"} 0",
        ] {
            assert!(t.contains(want), "{want} missing from\n{t}");
        }
        assert!(t.ends_with("# EOF\n"), "{t}");
        // A new commit replaces the old series; a coin gone from the plan leaves none.
        m.applied("def");
        m.observed(0, &BTreeMap::new(), &BTreeMap::new());
        let t = m.render();
        assert!(!t.contains("commit=\"abc\""), "{t}");
        assert!(t.contains("fleet_applied_commit_info{commit=\"def\"} 1"));
        assert!(!t.contains("fleet_coin_drift_steps{"), "{t}");
        // Every sample line belongs to a declared metric family.
        let declared: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            assert!(
                declared.iter().any(|d| name == *d
                    || name.strip_prefix(d).is_some_and(|s| {
                        ["_total", "_bucket", "_sum", "_count", "_created"].contains(&s)
                    })),
                "undeclared sample {l}"
            );
        }
    }

    #[test]
    fn a_failed_validation_is_shown_until_a_good_revision() {
        let m = Metrics::new();
        m.source(Some("c3"));
        let t = m.render();
        assert!(t.contains("fleet_source_valid 0"), "{t}");
        assert!(
            t.contains("fleet_invalid_commit_info{commit=\"c3\"} 1"),
            "{t}"
        );
        assert!(t.contains("fleet_last_error_timestamp_seconds{kind=\"validation\"}"));
        m.source(None);
        let t = m.render();
        assert!(t.contains("fleet_source_valid 1"));
        assert!(!t.contains("fleet_invalid_commit_info{"), "{t}");
    }
}
