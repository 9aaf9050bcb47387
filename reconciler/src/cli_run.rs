//! `fleet run`: wires the configuration, the source, the provider, the loop and the server
//! together, and stops them on SIGTERM / SIGINT.

use crate::cli::{EXIT_OK, EXIT_USAGE, LogFormat, ProviderKind, RunArgs};
use crate::clock::{AnchoredClock, Clock};
use crate::config::{Overrides, ProviderChoice, RunConfig, SimStart};
use crate::daemon::Good;
use crate::daemon::{
    Backend, BackendError, BackendFactory, LoopOptions, Shared, fetcher, reconcile_loop,
};
use crate::events::{NoNotifier, Notifier};
use crate::provider::sim::{SimConfig, SimProber, SimProvider};
use crate::server::{Secret, ServerState, serve};
use crate::source::{GitAuth, Source};
use crate::store::{Journal, StateLock};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn init_logs(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Human) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second `fleet run` in one process (tests) keeps the first subscriber.
    let _ = if json {
        b.json().flatten_event(true).try_init()
    } else {
        b.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}

fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `fleet run`.
pub(crate) fn run_cmd(a: &RunArgs, err: &mut dyn Write) -> u8 {
    let flags = Overrides {
        repo: a.source.repo.clone(),
        branch: a.source.branch.clone(),
        provider: a.provider.map(|p| {
            match p {
                ProviderKind::Sim => "sim",
                ProviderKind::Aws => "aws",
            }
            .to_string()
        }),
        listen: a.listen.clone(),
        state_dir: a.state_dir.clone(),
        sim_speed: a.sim_speed,
        aws_endpoint: a.aws_endpoint.clone(),
        poll_interval: a.poll_interval.clone(),
        github_api: a.people.github_api.clone(),
        github_repo: a.people.github_repo.clone(),
        slack_api: a.people.slack_api.clone(),
        release_interval: a.release_interval.clone(),
    };
    let (cfg, provider) = match RunConfig::load(a.source.config.as_deref(), &flags)
        .and_then(|c| c.provider().map(|p| (c, p)))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_USAGE;
        }
    };
    init_logs(a.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "error: cannot start the runtime: {e}");
            return EXIT_USAGE;
        }
    };
    let r = rt.block_on(run(cfg, provider));
    // Do not wait on a fetch stuck in libgit2 (a blocking thread) at exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match r {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "error: {e:#}");
            tracing::error!(error = %format!("{e:#}"), "fleet run stopped");
            EXIT_USAGE
        }
    }
}

/// `fleet release-watch`.
pub(crate) fn release_watch(
    a: &crate::cli::ReleaseWatchArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let flags = Overrides {
        repo: a.source.repo.clone(),
        branch: a.source.branch.clone(),
        state_dir: a.state_dir.clone(),
        github_api: a.people.github_api.clone(),
        github_repo: a.people.github_repo.clone(),
        slack_api: a.people.slack_api.clone(),
        ..Overrides::default()
    };
    let cfg = match RunConfig::load(a.source.config.as_deref(), &flags) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    init_logs(None);
    #[cfg(feature = "bots")]
    {
        crate::cli_release_watch::release_watch_cmd(
            cfg,
            a.once,
            a.dry_run,
            a.format == crate::cli::Format::Json,
            out,
            err,
        )
    }
    #[cfg(not(feature = "bots"))]
    {
        let _ = (cfg, out);
        let _ = writeln!(
            err,
            "error: this fleet was built without the `bots` feature; build it with default features for the release watch"
        );
        Ok(EXIT_USAGE)
    }
}

async fn run(cfg: RunConfig, provider: ProviderChoice) -> anyhow::Result<()> {
    let lock = StateLock::take(&cfg.state_dir).map_err(|e| anyhow::anyhow!(e))?;
    let (journal, warnings) = Journal::open(&cfg.state_dir)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let journal = Arc::new(journal);
    let auth = GitAuth {
        token: env_secret(&cfg.token_env),
        ssh_key: cfg.ssh_key.clone(),
        ssh_passphrase: env_secret(&cfg.ssh_passphrase_env),
    };
    let source = Source::for_repo(
        &cfg.repo,
        cfg.branch.clone(),
        &cfg.subdir,
        cfg.cache_dir.clone(),
        auth,
    )?;
    if let Some(signers) = &cfg.allowed_signers {
        source.require_signatures(Arc::clone(signers))?;
        tracing::info!(
            keys = signers.signers.len(),
            "only commits signed by a key of repo.verify.allowed_signers are applied"
        );
    }
    let webhook_secret = env_secret(&cfg.webhook_secret_env).map(Secret::new);
    let shared = Arc::new(Shared::default());
    // The webhook filters pushes on the followed branch (resolved at the first fetch when
    // the configuration leaves it to the remote's default).
    *shared.branch.lock().unwrap_or_else(|e| e.into_inner()) = source.branch();
    shared.status_mut(|s| {
        s.source.kind = source.kind().into();
        s.source.url = source.describe();
        s.source.branch = cfg.branch.clone();
        // Known before any backend is made: /status says "simulated" from the first answer.
        s.provider = provider.as_str().into();
        s.simulated = provider == ProviderChoice::Sim;
    });
    shared.metrics.provider(provider.as_str());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (set `listen` or --listen)",
                cfg.listen
            )
        })?;
    let shutdown = CancellationToken::new();
    tracing::info!(
        repo = %source.describe(),
        kind = source.kind(),
        branch = cfg.branch.as_deref().unwrap_or("(remote default)"),
        provider = provider.as_str(),
        listen = %format!("http://{}", listener.local_addr()?),
        state_dir = %cfg.state_dir.display(),
        webhook = webhook_secret.is_some(),
        "fleet run started"
    );
    if webhook_secret.is_none() {
        tracing::warn!(
            variable = %cfg.webhook_secret_env,
            "no webhook secret in the environment: POST /hooks/github answers 401"
        );
    }
    let opts = LoopOptions {
        poll_interval_ms: cfg.poll_interval_ms,
        requeue_ms: cfg.requeue_ms,
        backoff_min_ms: cfg.backoff_min_ms,
        backoff_max_ms: cfg.backoff_max_ms,
        exec: crate::apply::ExecOptions {
            parallel_coins: cfg.parallel_coins,
            poll_ms: cfg.gate_poll_ms,
            commit: String::new(),
        },
    };
    let (good_tx, good_rx) = tokio::sync::watch::channel(None);
    let people = People::start(&cfg, &shared, &journal, &good_rx, &shutdown)?;
    let server = tokio::spawn(serve(
        listener,
        ServerState {
            shared: Arc::clone(&shared),
            webhook_secret,
            slack: people.route.clone(),
            deliveries: Arc::default(),
        },
        shutdown.clone(),
    ));
    let notifier = people.notifier.clone();
    let fetch = tokio::spawn(fetcher(
        source.clone(),
        Arc::clone(&shared),
        Arc::clone(&notifier),
        good_tx,
        opts.clone(),
        shutdown.clone(),
    ));
    let _watcher = match (cfg.watch, source.watch_path()) {
        (true, Some(path)) => {
            let s = Arc::clone(&shared);
            match crate::source::watch(&path, move || s.fetch_now.notify_one()) {
                Ok(w) => {
                    tracing::info!(path = %path.display(), "watching the repository for changes");
                    Some(w)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot watch the repository; polling only");
                    None
                }
            }
        }
        _ => None,
    };
    let factory = backend_factory(&cfg, provider);
    let node_watch = tokio::spawn(crate::daemon::watch::watch_loop(
        Arc::clone(&shared),
        good_rx.clone(),
        Arc::clone(&journal),
        Arc::clone(&notifier),
        cfg.slack_repeat_window_ms,
        people.proposer.clone(),
        shutdown.clone(),
    ));
    let lp = tokio::spawn(reconcile_loop(
        Arc::clone(&shared),
        good_rx,
        factory,
        journal,
        notifier,
        opts,
        shutdown.clone(),
    ));
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: stopping between steps");
            shutdown.cancel();
        });
    }
    // After a signal the loop stops between steps. A step still under way after the grace
    // (an SSM command that takes long, a call that hangs) is left as a crash would leave it:
    // its `fleet:pending` marker makes the next start confirm or repeat it.
    let mut lp = lp;
    let r = tokio::select! {
        r = &mut lp => r,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(crate::daemon::SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                grace_s = crate::daemon::SHUTDOWN_GRACE.as_secs(),
                "a step is still under way after the shutdown grace; exiting anyway (its fleet:pending marker makes the next start confirm or repeat it)"
            );
            lp.abort();
            Ok(())
        }
    };
    shutdown.cancel();
    let _ = node_watch.await;
    let _ = fetch.await;
    let _ = server.await;
    people.stop().await;
    drop(lock);
    r.map_err(|e| anyhow::anyhow!("the reconcile loop ended abnormally: {e}"))?;
    tracing::info!("fleet run stopped cleanly");
    Ok(())
}

/// Slack and the release watch, when configured (the `bots` feature).
struct People {
    notifier: Arc<dyn Notifier>,
    /// The node watch's disk pull requests (None: no GitHub repository configured).
    proposer: Option<Arc<dyn crate::daemon::watch::GrowProposer>>,
    route: Option<crate::server::SlackRoute>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    #[cfg(feature = "bots")]
    slack_task: Option<(
        tokio::task::JoinHandle<()>,
        Arc<bots::slack::bot::SlackStats>,
    )>,
}

impl People {
    #[cfg(feature = "bots")]
    fn start(
        cfg: &RunConfig,
        shared: &Arc<Shared>,
        journal: &Arc<Journal>,
        good: &tokio::sync::watch::Receiver<Option<Arc<Good>>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<People> {
        use crate::people;
        let mut p = People {
            notifier: Arc::new(NoNotifier),
            proposer: None,
            route: None,
            tasks: Vec::new(),
            slack_task: None,
        };
        // Disk pull requests need the repository on GitHub, not the release watch.
        if let Some(rt) = people::watch_runtime(cfg, false)? {
            p.proposer = Some(Arc::new(people::volume_pr::GitHubProposer {
                gh: rt.gh,
                settings: rt.settings,
            }));
        }
        let slack = people::start_slack(
            cfg,
            people::channel_of(cfg, good.clone()),
            Some(cfg.state_dir.join("slack.json")),
        )?;
        let handle = slack.as_ref().map(|s| s.handle.clone());
        if let Some(s) = slack {
            if !s.verifier.configured() {
                tracing::warn!(
                    variable = %cfg.slack_signing_secret_env,
                    "no Slack signing secret in the environment: approvals from Slack are refused (401)"
                );
            }
            p.notifier = Arc::new(people::SlackNotifier::new(s.handle.clone(), good.clone()));
            p.route = Some(crate::server::SlackRoute(Arc::new(people::SlackHook {
                verifier: s.verifier,
                journal: Arc::clone(journal),
                shared: Arc::clone(shared),
                good: good.clone(),
                slack: s.handle.clone(),
            })));
            // The collector keeps the counters, not a handle: a handle kept alive by the
            // metrics would keep the Slack worker from ending at shutdown.
            shared
                .metrics
                .register(Box::new(people::slack::SlackMetrics(s.handle.counters())));
            p.slack_task = Some((s.task, s.handle.counters()));
            tracing::info!(api = %cfg.slack_api, "Slack on");
        }
        if cfg.release_watch
            && let Some(rt) = people::watch_runtime(cfg, false)?
        {
            let counters = Arc::new(people::WatchCounters::default());
            shared
                .metrics
                .register(Box::new(people::release_watch::WatchMetrics(Arc::clone(
                    &counters,
                ))));
            tracing::info!(repo = %rt.settings.fleet_repo, interval_s = rt.interval.as_secs(), api = %cfg.github_api, "release watch on");
            p.tasks.push(tokio::spawn(people::release_watch_loop(
                rt,
                Arc::clone(shared),
                good.clone(),
                handle,
                counters,
                shutdown.clone(),
            )));
        }
        Ok(p)
    }

    #[cfg(not(feature = "bots"))]
    fn start(
        cfg: &RunConfig,
        _: &Arc<Shared>,
        _: &Arc<Journal>,
        _: &tokio::sync::watch::Receiver<Option<Arc<Good>>>,
        _: &CancellationToken,
    ) -> anyhow::Result<People> {
        if cfg.github_repo.is_some() || env_secret(&cfg.slack_token_env).is_some() {
            tracing::warn!(
                "this fleet was built without the `bots` feature: no release watch, no Slack"
            );
        }
        Ok(People {
            notifier: Arc::new(NoNotifier),
            proposer: None,
            route: None,
            tasks: Vec::new(),
        })
    }

    /// After shutdown: the release watch has stopped; give Slack a few seconds to send
    /// what is queued (the last messages of a rollout stopped by the signal).
    async fn stop(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        drop(self.notifier);
        drop(self.route);
        #[cfg(feature = "bots")]
        if let Some((t, stats)) = self.slack_task
            && tokio::time::timeout(std::time::Duration::from_secs(5), t)
                .await
                .is_err()
        {
            let queued = stats.queued.load(std::sync::atomic::Ordering::SeqCst);
            if queued > 0 {
                tracing::warn!(queued, "Slack messages still queued at exit were not sent");
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // SIGHUP too: a closed terminal or a `kill -HUP` gets the same clean stop, not the
        // default of dying mid-step.
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut t), Ok(mut i), Ok(mut h)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                    _ = h.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn backend_factory(cfg: &RunConfig, provider: ProviderChoice) -> BackendFactory {
    let state_dir = cfg.state_dir.clone();
    let speed = cfg.sim_speed;
    let start = cfg.sim_start;
    let region = cfg.aws_region.clone();
    let endpoint = cfg.aws_endpoint.clone();
    Box::new(move |desired| {
        let (state_dir, region, endpoint) = (state_dir.clone(), region.clone(), endpoint.clone());
        Box::pin(async move {
            let err = |e: &dyn std::fmt::Display| BackendError(e.to_string());
            match provider {
                ProviderChoice::Sim => {
                    let clock: Arc<dyn Clock> =
                        Arc::new(AnchoredClock::open(&state_dir, speed).map_err(|e| err(&e))?);
                    let sim =
                        SimProvider::open(&state_dir, Arc::clone(&clock), SimConfig::default())
                            .map_err(|e| err(&e))?;
                    if sim.is_empty() && start == SimStart::InSync {
                        tracing::info!(
                            "new simulated fleet: every node of the revision in force, in sync"
                        );
                        sim.seed(&desired, &BTreeMap::new()).map_err(|e| err(&e))?;
                    }
                    Ok(Backend {
                        prober: Arc::new(SimProber(sim.clone())),
                        provider: Arc::new(sim),
                        clock,
                    })
                }
                ProviderChoice::Aws => aws_backend(&desired, region, endpoint).await,
            }
        })
    })
}

#[cfg(feature = "aws")]
async fn aws_backend(
    desired: &fleet_repo_schema::Desired,
    region: Option<String>,
    endpoint: Option<String>,
) -> Result<Backend, BackendError> {
    use crate::health::probe::{DnsResolver, RpcCredentials, RpcProber};
    use crate::provider::aws::{AwsOptions, AwsProvider};
    let opts = AwsOptions {
        region: Some(region.unwrap_or_else(|| desired.fleet.region.to_string())),
        endpoint_url: endpoint,
        ..AwsOptions::default()
    };
    let aws = AwsProvider::connect(opts).await;
    let creds = RpcCredentials::from_env(desired.coins.keys().map(String::as_str));
    Ok(Backend {
        prober: Arc::new(RpcProber::new(
            Arc::new(DnsResolver),
            creds,
            std::time::Duration::from_secs(10),
        )),
        provider: Arc::new(aws),
        clock: Arc::new(crate::clock::SystemClock),
    })
}

#[cfg(not(feature = "aws"))]
async fn aws_backend(
    _: &fleet_repo_schema::Desired,
    _: Option<String>,
    _: Option<String>,
) -> Result<Backend, BackendError> {
    Err(BackendError(
        "this fleet was built without the `aws` feature (the simulator only); build it with default features for --provider aws".into(),
    ))
}
