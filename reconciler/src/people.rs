//! The people side of `fleet run` (and `fleet release-watch`): the glue between the engine
//! and the `bots` crate, which alone talks to GitHub and Slack.
//!
//! - [`SlackNotifier`] turns executor and fetcher events into Slack notices (a
//!   [`Notifier`], so the executor never waits for Slack: the bot queues).
//! - [`SlackHook`] is `POST /hooks/slack`: verify Slack's signature, read the click, check
//!   the clicker is in fleet.yaml's `approvers`, record the decision in the journal (who,
//!   when, for exactly one coin, version and commit), wake the loop, update the message.
//! - [`release_watch_loop`] runs the release watch every interval, at once on a `release`
//!   webhook, against the revision in force.
//! - [`release_watch_cmd`] is `fleet release-watch`.

use crate::apply::{Event, Notifier};
use crate::clock::Millis;
use crate::config::RunConfig;
use crate::daemon::{Good, Shared};
use crate::health::Verdict as GateVerdict;
use crate::server::InteractionHook;
use crate::store::{Decision, Journal, Record};
use bots::github::{GitHub, GitHubConfig, StatsSnapshot, SystemPacer};
use bots::registry::{DigestResolver, OciResolver, RegistryAuth};
use bots::slack::interaction::{self, Decision as Judged, InteractionError};
use bots::slack::signature::{SigningSecret, Verifier};
use bots::slack::{ApprovalKey, BotConfig, ChannelFn, MorphismApi, Notice, SlackHandle, Verdict};
use bots::watch::{self, CoinOutcome, CycleReport, WatchSettings};
use hyper::StatusCode;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch as wch;
use tokio_util::sync::CancellationToken;

fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The last gate reading of each node: (height, height to reach).
pub type GateReadings = Mutex<HashMap<String, (Option<u64>, Option<u64>)>>;

/// Executor and fetcher events, as Slack notices.
pub struct SlackNotifier {
    handle: SlackHandle,
    good: wch::Receiver<Option<Arc<Good>>>,
    /// Last gate reading per node (height, target), for the failure message.
    gates: GateReadings,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackNotifier")
    }
}

impl SlackNotifier {
    /// Notices go to `handle`; approvers are read from the revision in force.
    pub fn new(handle: SlackHandle, good: wch::Receiver<Option<Arc<Good>>>) -> SlackNotifier {
        SlackNotifier {
            handle,
            good,
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn approvers(&self) -> Vec<String> {
        self.good
            .borrow()
            .as_ref()
            .map(|g| {
                g.desired
                    .fleet
                    .approvers
                    .iter()
                    .map(|a| a.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The notice for `e`, if Slack hears of it. `gates` keeps the last heights per node.
pub fn notice_of(
    e: &Event,
    approvers: impl FnOnce() -> Vec<String>,
    gates: &GateReadings,
) -> Option<Notice> {
    Some(match e {
        Event::RolloutStarted {
            coin,
            commit,
            from,
            to,
            zones,
            steps,
        } => Notice::RolloutStarted {
            coin: coin.clone(),
            from: from.clone(),
            to: to.clone(),
            commit: commit.clone(),
            zones: zones.clone(),
            steps: *steps,
        },
        Event::ApprovalNeeded {
            coin,
            version,
            commit,
            reasons,
            from,
            zones,
            steps,
        } => Notice::ApprovalNeeded {
            key: ApprovalKey {
                coin: coin.clone(),
                version: version.clone(),
                commit: commit.clone(),
            },
            from: from.clone(),
            reasons: reasons.clone(),
            zones: zones.clone(),
            steps: *steps,
            approvers: approvers(),
        },
        Event::ZonePassed {
            coin,
            zone,
            took_ms,
        } => Notice::ZonePassed {
            coin: coin.clone(),
            zone: zone.clone(),
            took_ms: *took_ms,
        },
        Event::RolloutFinished { coin, took_ms } => Notice::RolloutFinished {
            coin: coin.clone(),
            took_ms: *took_ms,
        },
        Event::RolloutFailed {
            coin,
            zone,
            node,
            reason,
        } => {
            let node = node.as_ref().map(|n| n.to_string());
            let (height, target) = node
                .as_ref()
                .and_then(|n| {
                    gates
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(n)
                        .copied()
                })
                .unwrap_or((None, None));
            Notice::GateFailed {
                coin: coin.clone(),
                zone: zone.clone(),
                node,
                reason: reason.clone(),
                height,
                target,
            }
        }
        Event::RepoInvalid {
            commit,
            in_force,
            errors,
        } => Notice::RepoInvalid {
            commit: commit.clone(),
            in_force: in_force.clone(),
            errors: errors.clone(),
        },
        Event::Gate { node, verdict, .. } => {
            let hv = match verdict {
                GateVerdict::Waiting { height, target, .. } => (*height, *target),
                GateVerdict::InSync { height } => (Some(*height), Some(*height)),
                GateVerdict::Failed(_) => return None,
            };
            gates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node.to_string(), hv);
            return None;
        }
        Event::StepStarted { .. }
        | Event::StepFinished { .. }
        | Event::Waiting { .. }
        | Event::Baking { .. } => return None,
    })
}

impl Notifier for SlackNotifier {
    fn notify(&self, _at_ms: Millis, e: &Event) {
        if let Some(n) = notice_of(e, || self.approvers(), &self.gates) {
            self.handle.notify(n);
        }
    }
}

/// `POST /hooks/slack`.
pub struct SlackHook {
    /// Signature and replay checks.
    pub verifier: Verifier,
    /// Where decisions are recorded.
    pub journal: Arc<Journal>,
    /// To wake the loop and count.
    pub shared: Arc<Shared>,
    /// The revision in force (approvers).
    pub good: wch::Receiver<Option<Arc<Good>>>,
    /// To update the message and answer the clicker.
    pub slack: SlackHandle,
}

impl std::fmt::Debug for SlackHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackHook")
    }
}

#[async_trait::async_trait]
impl InteractionHook for SlackHook {
    async fn handle(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, String) {
        let m = &self.shared.metrics;
        let now_ms = wall_ms();
        if let Err(e) = self
            .verifier
            .check(timestamp, signature, body, now_ms / 1000)
        {
            m.slack_interaction("unauthorized");
            tracing::warn!(error = %e, "Slack interaction refused");
            return (StatusCode::UNAUTHORIZED, e.to_string());
        }
        let click = match interaction::parse(body) {
            Ok(c) => c,
            Err(e @ (InteractionError::Other(_) | InteractionError::NotOurs(_))) => {
                m.slack_interaction("ignored");
                tracing::info!(error = %e, "Slack interaction ignored");
                return (StatusCode::OK, String::new());
            }
            Err(e) => {
                m.slack_interaction("bad_request");
                return (StatusCode::BAD_REQUEST, e.to_string());
            }
        };
        let good = self.good.borrow().clone();
        let Some(good) = good else {
            m.slack_interaction("not_ready");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no revision of the fleet repository in force yet".into(),
            );
        };
        let approvers: Vec<String> = good
            .desired
            .fleet
            .approvers
            .iter()
            .map(|a| a.to_string())
            .collect();
        let channel = click.channel.clone().unwrap_or_default();
        let click = match interaction::decide(click, &approvers) {
            Judged::Refuse { click, reason } => {
                m.slack_interaction("refused");
                tracing::warn!(user = %click.user, coin = %click.key.coin, version = %click.key.version, "Slack approval refused: not an approver");
                self.slack
                    .ephemeral(&channel, &click.user, &format!("Not recorded: {reason}."));
                return (StatusCode::OK, String::new());
            }
            Judged::Record(c) => c,
        };
        let k = &click.key;
        if let Some((d, by)) = self.journal.approval(&k.coin, &k.version, &k.commit) {
            m.slack_interaction("duplicate");
            let word = match d {
                Decision::Approved => "approved",
                Decision::Rejected => "rejected",
            };
            self.slack.ephemeral(
                &channel,
                &click.user,
                &format!("Already {word} by {by}; the first decision stands."),
            );
            return (StatusCode::OK, String::new());
        }
        let decision = match click.verdict {
            Verdict::Approved => Decision::Approved,
            Verdict::Rejected => Decision::Rejected,
        };
        let rec = Record::Approval {
            coin: k.coin.clone(),
            version: k.version.clone(),
            commit: k.commit.clone(),
            decision,
            by: click.user.clone(),
            at_ms: now_ms.max(0) as u64,
        };
        if let Err(e) = self.journal.append(rec) {
            m.slack_interaction("error");
            tracing::error!(error = %e, "cannot record a Slack decision");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "fleet could not record the decision; try again".into(),
            );
        }
        let word = match decision {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
        };
        m.slack_interaction(word);
        tracing::info!(coin = %k.coin, version = %k.version, commit = %k.commit, by = %click.user, decision = word, "rollout decision recorded from Slack");
        self.shared.kick.notify_one();
        if k.commit != good.rev {
            self.slack.ephemeral(
                &channel,
                &click.user,
                &format!(
                    "Recorded, but commit {} is in force now: this decision applies to commit {} only.",
                    good.rev, k.commit
                ),
            );
        }
        self.slack.notify(Notice::ApprovalDecided {
            key: k.clone(),
            verdict: click.verdict,
            by: click.user.clone(),
            at_ms: now_ms,
        });
        (StatusCode::OK, String::new())
    }
}

/// Slack, as configured: the bot's handle and worker, and the hook; None without a token.
pub struct SlackParts {
    /// Queue.
    pub handle: SlackHandle,
    /// Worker.
    pub task: tokio::task::JoinHandle<()>,
    /// Signing secret configured.
    pub verifier: Verifier,
}

impl std::fmt::Debug for SlackParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackParts")
    }
}

/// The channel: the configuration's `slack.channel`, else `notifications.slack_channel` of
/// the revision in force.
pub fn channel_of(cfg: &RunConfig, good: wch::Receiver<Option<Arc<Good>>>) -> ChannelFn {
    let fixed = cfg.slack_channel.clone();
    Arc::new(move || {
        fixed.clone().or_else(|| {
            good.borrow().as_ref().and_then(|g| {
                g.desired
                    .fleet
                    .slack_channel
                    .as_ref()
                    .map(|c| c.to_string())
            })
        })
    })
}

/// Start the Slack bot when its token is in the environment. `memory`: where it remembers
/// its approval requests and rollout threads across restarts.
pub fn start_slack(
    cfg: &RunConfig,
    channel: ChannelFn,
    memory: Option<std::path::PathBuf>,
) -> anyhow::Result<Option<SlackParts>> {
    let Some(token) = env_secret(&cfg.slack_token_env) else {
        if env_secret(&cfg.slack_signing_secret_env).is_some() {
            tracing::warn!(
                token = %cfg.slack_token_env,
                "a Slack signing secret is set but no bot token: Slack is off (POST /hooks/slack answers 503)"
            );
        }
        return Ok(None);
    };
    let api = MorphismApi::new(&cfg.slack_api, &token)
        .map_err(|e| anyhow::anyhow!("slack.api_url: {e}"))?;
    let (handle, task) = bots::slack::bot::start(
        Arc::new(api),
        Arc::new(SystemPacer),
        BotConfig {
            channel,
            repeat_window: Duration::from_millis(cfg.slack_repeat_window_ms),
            memory,
        },
    );
    let verifier = Verifier::new(env_secret(&cfg.slack_signing_secret_env).map(SigningSecret::new));
    Ok(Some(SlackParts {
        handle,
        task,
        verifier,
    }))
}

/// The /metrics lines of the Slack bot.
pub fn slack_metrics(h: &SlackHandle) -> String {
    let s = h.stats();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP fleet_slack_messages_total Slack messages by result (sent: posted or updated; retried: attempts to be repeated, rate_limited among them; dropped: refused for good or over the queue limit; suppressed: repeats not sent).\n# TYPE fleet_slack_messages_total counter"
    );
    for (k, v) in [
        ("sent", &s.sent),
        ("retried", &s.retries),
        ("rate_limited", &s.rate_limited),
        ("dropped", &s.dropped),
        ("suppressed", &s.suppressed),
    ] {
        let _ = writeln!(
            o,
            "fleet_slack_messages_total{{result=\"{k}\"}} {}",
            v.load(Ordering::SeqCst)
        );
    }
    let _ = writeln!(
        o,
        "# HELP fleet_slack_queue Slack messages waiting to be sent.\n# TYPE fleet_slack_queue gauge\nfleet_slack_queue {}",
        s.queued.load(Ordering::SeqCst)
    );
    o
}

/// What the release watch needs.
pub struct WatchRuntime {
    /// GitHub.
    pub gh: GitHub,
    /// Where pull requests go.
    pub settings: WatchSettings,
    /// Digests.
    pub resolver: Option<OciResolver>,
    /// Period.
    pub interval: Duration,
}

impl std::fmt::Debug for WatchRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WatchRuntime({})", self.settings.fleet_repo)
    }
}

/// The release watch of `cfg`, or None when it is off.
pub fn watch_runtime(cfg: &RunConfig, dry_run: bool) -> anyhow::Result<Option<WatchRuntime>> {
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
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let resolver = if cfg.resolve_digests {
        let auth = match (
            env_secret(&cfg.registry_username_env),
            env_secret(&cfg.registry_password_env),
        ) {
            (Some(username), Some(password)) => Some(RegistryAuth { username, password }),
            _ => None,
        };
        Some(OciResolver::new(auth).map_err(|e| anyhow::anyhow!("registry: {e}"))?)
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
        let errors = r
            .coins
            .values()
            .any(|o| matches!(o, CoinOutcome::Error { .. }));
        if errors {
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
            .coins
            .values()
            .filter(|o| matches!(o, CoinOutcome::Opened { .. }))
            .count();
        self.opened.fetch_add(opened as u64, Ordering::SeqCst);
    }

    /// The /metrics lines.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        format!(
            "# HELP fleet_release_watch_cycles_total Release watch cycles by result (error: a coin could not be checked or proposed).\n# TYPE fleet_release_watch_cycles_total counter\nfleet_release_watch_cycles_total{{result=\"ok\"}} {}\nfleet_release_watch_cycles_total{{result=\"error\"}} {}\n\
# HELP fleet_github_requests_total GitHub API requests of the release watch (not_modified: answered 304 to a conditional request, not charged to the rate limit; rate_limited: answered 403/429 for a rate limit).\n# TYPE fleet_github_requests_total counter\nfleet_github_requests_total{{kind=\"all\"}} {}\nfleet_github_requests_total{{kind=\"not_modified\"}} {}\nfleet_github_requests_total{{kind=\"rate_limited\"}} {}\n\
# HELP fleet_bump_pull_requests_total Bump pull requests opened.\n# TYPE fleet_bump_pull_requests_total counter\nfleet_bump_pull_requests_total {}\n",
            g(&self.cycles_ok),
            g(&self.cycles_error),
            g(&self.requests),
            g(&self.not_modified),
            g(&self.rate_limited),
            g(&self.opened),
        )
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
    for (coin, o) in &r.coins {
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
            } => {
                write!(out, "{coin}: opened #{number} for {version}: {url}")?;
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

/// `fleet release-watch`.
pub fn release_watch_cmd(
    cfg: RunConfig,
    once: bool,
    dry_run: bool,
    json: bool,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(async {
        let Some(watch) = watch_runtime(&cfg, dry_run)? else {
            anyhow::bail!(
                "no fleet repository on GitHub to open pull requests on: set github.repo in the config or --github-repo owner/name"
            );
        };
        let auth = crate::source::GitAuth {
            token: env_secret(&cfg.token_env),
            ssh_key: cfg.ssh_key.clone(),
            ssh_passphrase: env_secret(&cfg.ssh_passphrase_env),
        };
        // Its own cache: a `fleet run` on the same state directory fetches into repo-cache.
        let source = crate::source::Source::for_repo(
            &cfg.repo,
            cfg.branch.clone(),
            &cfg.subdir,
            cfg.state_dir.join("release-watch-cache"),
            auth,
        )?;
        let mut slack: Option<SlackParts> = None;
        let mut code = crate::cli::EXIT_OK;
        loop {
            let src = source.clone();
            let (head, loaded) = tokio::task::spawn_blocking(move || src.poll(None)).await??;
            let Some(loaded) = loaded else {
                anyhow::bail!("the fleet repository could not be read");
            };
            let Some(desired) = loaded.desired else {
                writeln!(err, "error: revision {} of the fleet repository is invalid:", head.rev)?;
                for d in loaded.diagnostics.iter().filter(|d| d.severity == fleet_repo_schema::Severity::Error) {
                    writeln!(err, "  {}:{}:{}: {} {}", d.file, d.span.start.line, d.span.start.col, d.code.as_str(), d.message)?;
                }
                return Ok(crate::cli::EXIT_INVALID);
            };
            if slack.is_none() && !dry_run {
                let ch = cfg
                    .slack_channel
                    .clone()
                    .or_else(|| desired.fleet.slack_channel.as_ref().map(|c| c.to_string()));
                slack = start_slack(&cfg, Arc::new(move || ch.clone()), None)?;
            }
            let report = watch::cycle(
                &watch.gh,
                &desired,
                &watch.settings,
                watch.resolver.as_ref().map(|r| r as &dyn DigestResolver),
                wall_ms(),
            )
            .await;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                render_report(&report, out)?;
            }
            if let Some(s) = &slack {
                for n in report.notices(&desired) {
                    s.handle.notify(n);
                }
            }
            if report.coins.values().any(|o| matches!(o, CoinOutcome::Error { .. })) {
                code = crate::cli::EXIT_INVALID;
            }
            if once {
                break;
            }
            tokio::time::sleep(watch.interval).await;
        }
        if let Some(s) = slack {
            // Let the queue drain (bounded): a cron job must not exit before Slack heard.
            let SlackParts { handle, task, .. } = s;
            drop(handle);
            if tokio::time::timeout(Duration::from_secs(30), task).await.is_err() {
                writeln!(err, "warning: Slack did not take every message within 30 s")?;
            }
        }
        Ok(code)
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::WaitReason;
    use crate::observe::NodeKey;

    fn node() -> NodeKey {
        NodeKey {
            coin: "bitcoin".into(),
            zone: "eu-central-1b".into(),
            index: 1,
        }
    }

    /// A failure carries the node's last heights; step and gate chatter is not Slack's.
    #[test]
    fn events_become_notices() {
        let gates = GateReadings::default();
        let none = || Vec::new();
        let gate = Event::Gate {
            coin: "bitcoin".into(),
            zone: "eu-central-1b".into(),
            node: node(),
            verdict: GateVerdict::Waiting {
                reason: WaitReason::BlocksBehindHeaders,
                height: Some(870_000),
                target: Some(870_900),
                blocks_per_sec: None,
                eta_ms: None,
            },
        };
        assert!(notice_of(&gate, none, &gates).is_none());
        let failed = Event::RolloutFailed {
            coin: "bitcoin".into(),
            zone: Some("eu-central-1b".into()),
            node: Some(node()),
            reason: "stalled".into(),
        };
        match notice_of(&failed, none, &gates) {
            Some(Notice::GateFailed {
                height,
                target,
                node,
                ..
            }) => {
                assert_eq!((height, target), (Some(870_000), Some(870_900)));
                assert_eq!(node.as_deref(), Some("bitcoin/eu-central-1b/1"));
            }
            other => panic!("{other:?}"),
        }
        let asked = Event::ApprovalNeeded {
            coin: "bitcoin".into(),
            version: "29.0".into(),
            commit: "c1".into(),
            reasons: vec!["major".into()],
            from: vec!["28.1".into()],
            zones: vec!["eu-central-1a".into()],
            steps: 1,
        };
        match notice_of(&asked, || vec!["U012ABCDEF".into()], &gates) {
            Some(Notice::ApprovalNeeded { key, approvers, .. }) => {
                assert_eq!(
                    (key.coin.as_str(), key.version.as_str(), key.commit.as_str()),
                    ("bitcoin", "29.0", "c1")
                );
                assert_eq!(approvers, ["U012ABCDEF"]);
            }
            other => panic!("{other:?}"),
        }
        let step = Event::StepStarted {
            coin: "bitcoin".into(),
            node: node(),
            action: "upgrade".into(),
        };
        assert!(notice_of(&step, none, &gates).is_none());
    }
}
