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
type F64Family = Family<Labels, F64Gauge>;

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
    /// The node watch could not observe the fleet, or journal a heal.
    Watch,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Fetch => "fetch",
            ErrorKind::Validation => "validation",
            ErrorKind::Pass => "pass",
            ErrorKind::Rollout => "rollout",
            ErrorKind::Watch => "watch",
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
    node_height: Family<Labels, Gauge>,
    node_lag: Family<Labels, Gauge>,
    node_in_sync: Family<Labels, Gauge>,
    node_unmoved: F64Family,
    node_probe_errors: Family<Labels, Counter>,
    node_disk_used: F64Family,
    node_disk_days_left: F64Family,
    disk_grows: Family<Labels, Counter>,
    coin_synced: Family<Labels, Gauge>,
    coin_min_synced: Family<Labels, Gauge>,
    watched_at: F64Gauge,
    watches: Counter,
    incidents_open: Family<Labels, Gauge>,
    incident_changes: Family<Labels, Counter>,
    heals: Family<Labels, Counter>,
    snapshots: Family<Labels, Counter>,
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
            node_height: Family::default(),
            node_lag: Family::default(),
            node_in_sync: Family::default(),
            node_unmoved: Family::default(),
            node_probe_errors: Family::default(),
            node_disk_used: Family::default(),
            node_disk_days_left: Family::default(),
            disk_grows: Family::default(),
            coin_synced: Family::default(),
            coin_min_synced: Family::default(),
            watched_at: F64Gauge::default(),
            watches: Counter::default(),
            incidents_open: Family::default(),
            incident_changes: Family::default(),
            heals: Family::default(),
            snapshots: Family::default(),
            rebuild: Mutex::new(()),
        };
        for r in PASS_RESULTS {
            let _ = m.passes.get_or_create(&label("result", r));
        }
        for r in ["ok", "error"] {
            let _ = m.fetches.get_or_create(&label("result", r));
        }
        for c in ["opened", "updated", "resolved", "reopened"] {
            let _ = m.incident_changes.get_or_create(&label("change", c));
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
                "fleet_node_height",
                "Blocks of each probed node at the last watch (coin, zone, index)",
                m.node_height.clone(),
            );
            r.register(
                "fleet_node_lag_blocks",
                "Blocks each node is behind its coin's reference height at the last watch",
                m.node_lag.clone(),
            );
            r.register(
                "fleet_node_in_sync",
                "1 if the node counts as in sync (the gates' rule) at the last watch, else 0",
                m.node_in_sync.clone(),
            );
            r.register_with_unit(
                "fleet_node_height_unchanged",
                "How long each node's height has not moved, at the last watch",
                Unit::Seconds,
                m.node_unmoved.clone(),
            );
            r.register(
                "fleet_node_probe_errors",
                "Probes of each node that got no reading, since fleet started",
                m.node_probe_errors.clone(),
            );
            r.register(
                "fleet_node_disk_used_percent",
                "Each node's data volume use as its CloudWatch agent reported it (disk_used_percent of /node-data, read every 15 minutes)",
                m.node_disk_used.clone(),
            );
            r.register(
                "fleet_node_disk_days_left",
                "Days until each node's data volume is full at its growth over the last day (absent: not growing, or not measured yet)",
                m.node_disk_days_left.clone(),
            );
            r.register(
                "fleet_disk_grows",
                "Grows of a coin's data volumes asked by the node watch, by coin, whether fleet grew them itself (disk.auto_grow) and what became of the pull request",
                m.disk_grows.clone(),
            );
            r.register(
                "fleet_coin_synced_nodes",
                "Nodes of each coin in sync at the last watch (compare fleet_coin_min_synced)",
                m.coin_synced.clone(),
            );
            r.register(
                "fleet_coin_min_synced",
                "Each coin's health.min_synced",
                m.coin_min_synced.clone(),
            );
            r.register_with_unit(
                "fleet_watch_timestamp",
                "When the node watch last watched the fleet",
                Unit::Seconds,
                m.watched_at.clone(),
            );
            r.register(
                "fleet_watches",
                "Watches of the fleet by the node watch (one observation and one probe of every node each)",
                m.watches.clone(),
            );
            r.register(
                "fleet_incidents_open",
                "Open incidents by coin and condition (out-of-sync, stuck, unreachable, down, below-min-synced)",
                m.incidents_open.clone(),
            );
            r.register(
                "fleet_incident_changes",
                "Incidents opened, updated, resolved and reopened",
                m.incident_changes.clone(),
            );
            r.register(
                "fleet_heals",
                "Daemon restarts made by the node watch, by coin, reason and outcome",
                m.heals.clone(),
            );
            r.register(
                "fleet_scheduled_snapshots",
                "Scheduled snapshots (snapshots.every, snapshots.keep) taken and deleted, by coin and outcome",
                m.snapshots.clone(),
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

    /// What a node watch saw: per node and per coin, rebuilt whole (a node retired leaves no
    /// series behind).
    pub fn watched(
        &self,
        coins: &BTreeMap<fleet_repo_schema::values::CoinName, crate::care::CoinWatch>,
    ) {
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        self.node_height.clear();
        self.node_lag.clear();
        self.node_in_sync.clear();
        self.node_unmoved.clear();
        self.coin_synced.clear();
        self.coin_min_synced.clear();
        // Rebuilt from the watch's running totals: the same values, and none for a node gone.
        self.node_probe_errors.clear();
        self.node_disk_used.clear();
        self.node_disk_days_left.clear();
        for (coin, cw) in coins {
            let c = label("coin", coin.as_str());
            self.coin_synced.get_or_create(&c).set(cw.synced as i64);
            self.coin_min_synced
                .get_or_create(&c)
                .set(i64::from(cw.min_synced));
            for n in &cw.nodes {
                let l: Labels = vec![
                    ("coin", coin.to_string()),
                    ("zone", n.key.zone.to_string()),
                    ("index", n.key.index.to_string()),
                ];
                if let Some(h) = n.health.height() {
                    self.node_height.get_or_create(&l).set(h as i64);
                }
                if let Some(lag) = n.lag {
                    self.node_lag.get_or_create(&l).set(lag as i64);
                }
                self.node_in_sync
                    .get_or_create(&l)
                    .set(i64::from(n.health.is_up()));
                if let Some(ms) = n.unmoved_ms {
                    self.node_unmoved.get_or_create(&l).set(ms as f64 / 1000.0);
                }
                self.node_probe_errors
                    .get_or_create(&l)
                    .inc_by(n.probe_errors);
                if let Some(d) = n.disk {
                    self.node_disk_used.get_or_create(&l).set(d.used_percent);
                    if let Some(days) = d.days_left() {
                        self.node_disk_days_left.get_or_create(&l).set(days);
                    }
                }
            }
        }
        self.watched_at.set(wall_s());
        self.watches.inc();
    }

    /// An incident changed; `open` are the open ones now.
    pub fn incident(
        &self,
        open: &[crate::care::incident::Incident],
        change: crate::care::incident::Change,
    ) {
        use crate::care::incident::Change;
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let c = match change {
            Change::Opened => "opened",
            Change::Updated => "updated",
            Change::Resolved => "resolved",
            Change::Reopened => "reopened",
        };
        self.incident_changes
            .get_or_create(&label("change", c))
            .inc();
        self.incidents_open.clear();
        for i in open {
            self.incidents_open
                .get_or_create(&vec![
                    ("coin", i.subject.coin().to_string()),
                    ("condition", i.condition.kind().to_string()),
                ])
                .inc();
        }
    }

    /// The node watch asked for a coin's data volumes to grow.
    pub fn disk_grow(
        &self,
        coin: &fleet_repo_schema::values::CoinName,
        grown: bool,
        proposal: &crate::care::disk::Proposal,
    ) {
        use crate::care::disk::Proposal;
        let p = match proposal {
            Proposal::Opened { .. } => "opened",
            Proposal::AlreadyOpen { .. } => "already-open",
            Proposal::Declined { .. } => "declined",
            Proposal::UpToDate { .. } => "up-to-date",
            Proposal::Failed { .. } => "failed",
            Proposal::NoGitHub => "no-github",
        };
        self.disk_grows
            .get_or_create(&vec![
                ("coin", coin.to_string()),
                ("auto", grown.to_string()),
                ("pull_request", p.to_string()),
            ])
            .inc();
    }

    /// A scheduled snapshot was taken or deleted (`change`).
    pub fn scheduled_snapshot(
        &self,
        coin: &fleet_repo_schema::values::CoinName,
        change: &'static str,
        outcome: &StepOutcome,
    ) {
        self.snapshots
            .get_or_create(&vec![
                ("coin", coin.to_string()),
                ("change", change.to_string()),
                ("outcome", outcome.label().to_string()),
            ])
            .inc();
    }

    /// A heal was made.
    pub fn healed(
        &self,
        coin: &fleet_repo_schema::values::CoinName,
        reason: crate::care::heal::HealReason,
        outcome: &StepOutcome,
    ) {
        self.heals
            .get_or_create(&vec![
                ("coin", coin.to_string()),
                ("reason", reason.label().to_string()),
                ("outcome", outcome.label().to_string()),
            ])
            .inc();
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
