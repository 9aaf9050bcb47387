//! The release watch in `fleet run`: a cycle against the revision in force every interval and
//! on a `release` webhook, its counters for `/metrics`, and the human report of a cycle.

use super::registry::Registries;
use super::{SetupError, env_secret, wall_ms};
use crate::config::RunConfig;
use crate::daemon::{Good, Shared};
use bots::github::{GitHub, GitHubConfig, StatsSnapshot, SystemPacer};
use bots::registry::{DigestResolver, OciResolver, RegistryAuth};
use bots::slack::{Notice, SlackHandle};
use bots::watch::{self, CoinOutcome, CycleReport, WatchSettings};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch as wch;
use tokio_util::sync::CancellationToken;

/// What the release watch needs.
pub struct WatchRuntime {
    /// GitHub.
    pub gh: GitHub,
    /// Where pull requests go.
    pub settings: WatchSettings,
    /// Digests.
    pub resolver: Option<Registries>,
    /// Period.
    pub interval: Duration,
}

impl std::fmt::Debug for WatchRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WatchRuntime({})", self.settings.fleet_repo)
    }
}

/// The release watch of `cfg`, or None when it is off.
pub fn watch_runtime(cfg: &RunConfig, dry_run: bool) -> Result<Option<WatchRuntime>, SetupError> {
    let Some(repo) = cfg.github_repo.clone() else {
        return Ok(None);
    };
    let gh = GitHub::new(
        &GitHubConfig {
            api_url: cfg.github_api.clone(),
            token: env_secret(&cfg.github_token_env),
            max_wait: Duration::from_millis(cfg.max_rate_wait_ms),
        },
        Arc::new(SystemPacer),
    )
    .map_err(|e| SetupError::GitHub(e.to_string()))?;
    let resolver = if cfg.resolve_digests {
        let auth = match (
            env_secret(&cfg.registry_username_env),
            env_secret(&cfg.registry_password_env),
        ) {
            (Some(username), Some(password)) => Some(RegistryAuth { username, password }),
            _ => None,
        };
        let oci = OciResolver::new(auth).map_err(|e| SetupError::Registry(e.to_string()))?;
        Some(Registries::new(oci, cfg.aws_endpoint.clone()))
    } else {
        None
    };
    Ok(Some(WatchRuntime {
        gh,
        settings: WatchSettings {
            fleet_repo: repo,
            base: cfg.github_base.clone(),
            subdir: cfg.subdir.clone(),
            dry_run,
        },
        resolver,
        interval: Duration::from_millis(cfg.release_interval_ms),
    }))
}

/// Counters of the watch, for /metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    cycles_ok: AtomicU64,
    cycles_error: AtomicU64,
    requests: AtomicU64,
    not_modified: AtomicU64,
    rate_limited: AtomicU64,
    opened: AtomicU64,
}

impl WatchCounters {
    fn add(&self, r: &CycleReport) {
        if r.has_errors() {
            self.cycles_error.fetch_add(1, Ordering::SeqCst);
        } else {
            self.cycles_ok.fetch_add(1, Ordering::SeqCst);
        }
        let s: StatsSnapshot = r.requests;
        self.requests.fetch_add(s.requests, Ordering::SeqCst);
        self.not_modified
            .fetch_add(s.not_modified, Ordering::SeqCst);
        self.rate_limited
            .fetch_add(s.rate_limited, Ordering::SeqCst);
        let opened = r
            .outcomes()
            .filter(|(_, _, o)| matches!(o, CoinOutcome::Opened { .. }))
            .count();
        self.opened.fetch_add(opened as u64, Ordering::SeqCst);
    }
}

/// The watch's counters at each scrape.
#[derive(Debug)]
pub struct WatchMetrics(pub Arc<WatchCounters>);

impl Collector for WatchMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let g = |a: &AtomicU64| ConstCounter::new(a.load(Ordering::SeqCst));
        let mut e = encoder.encode_descriptor(
            "fleet_release_watch_cycles",
            "Release watch cycles by result (error: a coin could not be checked or proposed).",
            None,
            MetricType::Counter,
        )?;
        g(&c.cycles_ok).encode(e.encode_family(&[("result", "ok")])?)?;
        g(&c.cycles_error).encode(e.encode_family(&[("result", "error")])?)?;
        let mut e = encoder.encode_descriptor(
            "fleet_github_requests",
            "GitHub API requests of the release watch (not_modified: answered 304 to a conditional request, not charged to the rate limit; rate_limited: answered 403/429 for a rate limit).",
            None,
            MetricType::Counter,
        )?;
        g(&c.requests).encode(e.encode_family(&[("kind", "all")])?)?;
        g(&c.not_modified).encode(e.encode_family(&[("kind", "not_modified")])?)?;
        g(&c.rate_limited).encode(e.encode_family(&[("kind", "rate_limited")])?)?;
        g(&c.opened).encode(encoder.encode_descriptor(
            "fleet_bump_pull_requests",
            "Bump pull requests opened.",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// The release watch in `fleet run`: a cycle against the revision in force every
/// interval, and at once on a `release` webhook. Runs until `shutdown`.
pub async fn release_watch_loop(
    rt: WatchRuntime,
    shared: Arc<Shared>,
    mut good: wch::Receiver<Option<Arc<Good>>>,
    slack: Option<SlackHandle>,
    counters: Arc<WatchCounters>,
    shutdown: CancellationToken,
) {
    // Refused tags are told once per process, not every cycle.
    let mut told: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let g = good.borrow_and_update().clone();
        let Some(g) = g else {
            tokio::select! {
                r = good.changed() => { if r.is_err() { return; } continue; }
                _ = shutdown.cancelled() => return,
            }
        };
        let report = tokio::select! {
            r = watch::cycle(
                &rt.gh,
                &g.desired,
                &rt.settings,
                rt.resolver.as_ref().map(|r| r as &dyn DigestResolver),
                wall_ms(),
            ) => r,
            _ = shutdown.cancelled() => return,
        };
        counters.add(&report);
        tracing::info!(
            coins = report.coins.len(),
            requests = report.requests.requests,
            not_modified = report.requests.not_modified,
            counted = report.requests.counted,
            rate_limited = report.requests.rate_limited,
            "release watch cycle done"
        );
        if let Some(s) = &slack {
            for n in report.notices(&g.desired) {
                if let Notice::ReleaseRejected { coin, tag, .. } = &n
                    && !told.insert((coin.clone(), tag.clone()))
                {
                    continue;
                }
                s.notify(n);
            }
        }
        let mut v = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("finished_ms".into(), serde_json::json!(wall_ms()));
            o.insert("commit".into(), serde_json::json!(g.rev));
        }
        shared.status_mut(|s| s.release_watch = Some(v));
        tokio::select! {
            _ = tokio::time::sleep(rt.interval) => {}
            _ = shared.release_now.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Human output of a cycle.
pub fn render_report(r: &CycleReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for (name, line, o) in r.outcomes() {
        // A line's bump, proposed apart from the coin's newest (a major).
        let coin = if line {
            format!("{name} (its own line)")
        } else {
            name.to_string()
        };
        match o {
            CoinOutcome::UpToDate { current } => writeln!(out, "{coin}: up to date ({current})")?,
            CoinOutcome::Waiting { version, ready_at } => writeln!(
                out,
                "{coin}: {version} is newer but too recent (min_release_age); proposed from {ready_at}"
            )?,
            CoinOutcome::Opened {
                version,
                number,
                url,
                superseded,
                draft,
            } => {
                let what = if *draft { "opened draft" } else { "opened" };
                write!(out, "{coin}: {what} #{number} for {version}: {url}")?;
                if *draft {
                    write!(out, " (until its image tag is in the registry)")?;
                }
                if !superseded.is_empty() {
                    write!(out, " (closed {:?} in its favour)", superseded)?;
                }
                writeln!(out)?;
            }
            CoinOutcome::WouldOpen {
                version,
                branch,
                title,
                diff,
                body,
                would_supersede,
            } => {
                writeln!(
                    out,
                    "{coin}: would open \"{title}\" from {branch} ({version})"
                )?;
                if !would_supersede.is_empty() {
                    writeln!(out, "  and close {:?} in its favour", would_supersede)?;
                }
                for d in diff {
                    writeln!(out, "  {d}")?;
                }
                writeln!(out, "  --- body ---")?;
                for l in body.lines() {
                    writeln!(out, "  | {l}")?;
                }
            }
            CoinOutcome::AlreadyOpen { version, number } => {
                writeln!(out, "{coin}: {version} already proposed in #{number}")?
            }
            CoinOutcome::MarkedReady {
                version,
                number,
                url,
                digest,
            } => writeln!(
                out,
                "{coin}: the image of {version} is in the registry: #{number} pins {digest} and is ready: {url}"
            )?,
            CoinOutcome::AwaitingImage {
                version,
                number,
                reason,
            } => writeln!(
                out,
                "{coin}: #{number} ({version}) is a draft until its image is in the registry: {reason}"
            )?,
            CoinOutcome::Declined { version, number } => writeln!(
                out,
                "{coin}: {version} was proposed in #{number}, which was closed: not proposed again"
            )?,
            CoinOutcome::Error { message } => writeln!(out, "{coin}: error: {message}")?,
        }
    }
    for (coin, tags) in &r.rejected {
        for t in tags {
            writeln!(out, "{coin}: release tag {:?} refused: {}", t.tag, t.reason)?;
        }
    }
    let s = r.requests;
    writeln!(
        out,
        "GitHub: {} requests, {} answered 304 (free), {} charged to the rate limit, {} rate-limited",
        s.requests, s.not_modified, s.counted, s.rate_limited
    )
}
