//! `fleet plan`, `fleet apply` and `fleet demo`: the commands that observe and change a fleet.

use crate::apply::{ApplyReport, ExecOptions, Executor};
use crate::cli::{
    ApplyArgs, ColorChoice, DemoArgs, EXIT_CHANGES, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Format,
    PlanArgs, ProviderKind, WorldArgs, open_repo,
};
use crate::clock::{AnchoredClock, Clock, Millis, check_speed};
use crate::demo::DemoWorld;
use crate::events::{Event, Notifier};
use crate::health::Prober;
use crate::plan::{Observed, Plan, plan};
use crate::provider::Provider;
use crate::provider::sim::{SimConfig, SimProber, SimProvider};
use crate::render::{Progress, Style, plan_human, summary};
use crate::store::{ApprovalKey, Decision, Journal, StateLock};
use fleet_repo_schema::{Color, Desired, human_ms, load, render_human};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) fn style(c: ColorChoice, tty: bool) -> Style {
    Style {
        color: match c {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none(),
        },
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Everything a command needs to observe and change one fleet.
pub(crate) struct World {
    pub(crate) desired: Arc<Desired>,
    pub(crate) provider: Arc<dyn Provider>,
    prober: Arc<dyn Prober>,
    clock: Arc<dyn Clock>,
    /// Which provider was named (a simulated fleet is labelled as such on every screen).
    pub(crate) kind: ProviderKind,
    /// The state directory (where a simulated fleet lives).
    state_dir: std::path::PathBuf,
    /// Plan without asking the nodes (--no-probe).
    no_probe: bool,
    /// What approvals are tied to: the repository's content.
    commit: String,
    /// The state directory's lock, held while the command runs.
    _lock: StateLock,
}

impl World {
    /// `observed` with what the nodes' daemons say they run (unless --no-probe).
    pub(crate) async fn with_daemons(&self, observed: Observed) -> Observed {
        if self.no_probe {
            return observed;
        }
        crate::apply::view::ask_daemons(&self.prober, &self.desired, observed)
            .await
            .0
    }

    /// The provider's clock, now.
    pub(crate) fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }

    /// The line that opens every human screen of a simulated fleet (None on AWS).
    fn sim_banner(&self, st: Style) -> Option<String> {
        (self.kind == ProviderKind::Sim).then(|| {
            st.bold(&format!(
                "SIMULATED FLEET (--provider sim, kept in {}): nothing here is in your AWS account.",
                self.state_dir.display()
            ))
        })
    }

    /// The fleet as it is now, sorted into the desired slots, with what its daemons say
    /// they run.
    async fn observe(&self) -> Result<Observed, crate::provider::ProviderError> {
        if self.no_probe {
            return crate::apply::view::observe(self.provider.as_ref(), &self.desired).await;
        }
        crate::apply::view::observe_and_probe(self.provider.as_ref(), &self.prober, &self.desired)
            .await
            .map(|(observed, _)| observed)
    }
}

/// A stable id of the repository's content (FNV-1a over the resolved desired state): an
/// approval given for one content does not carry over to another.
fn content_id(desired: &Desired) -> String {
    let bytes = serde_json::to_vec(desired).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("worktree-{h:016x}")
}

/// Load the repository (printing its diagnostics on failure) and open the provider.
pub(crate) async fn open_world(
    command: &str,
    detailed: bool,
    a: &WorldArgs,
    err: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<Result<World, u8>> {
    // Before anything is read: a forgotten flag must not plan or apply a simulation.
    let kind = match a.provider(command) {
        Ok(k) => k,
        Err(message) => {
            writeln!(err, "{message}")?;
            // Under --detailed-exitcode 2 means "changes": a usage error must not look so.
            return Ok(Err(if detailed { EXIT_INVALID } else { EXIT_USAGE }));
        }
    };
    let tree = open_repo(&a.repo)?;
    let loaded = load(&tree);
    let Some(desired) = loaded.desired.clone() else {
        let color = if style(a.color, tty).color {
            Color::Always
        } else {
            Color::Never
        };
        for d in &loaded.diagnostics {
            let src = loaded.sources.get(&d.file).map(String::as_str);
            writeln!(err, "{}", render_human(d, src, color))?;
        }
        writeln!(
            err,
            "error: {} is invalid ({} errors): nothing is planned or changed; `fleet validate {}` shows the same",
            a.repo.display(),
            loaded.errors(),
            a.repo.display()
        )?;
        return Ok(Err(EXIT_INVALID));
    };
    let desired = Arc::new(desired);
    let commit = content_id(&desired);
    // One writer per state directory: a running `fleet run` (or another apply) would
    // change the same fleet, and the simulator's state would be rewritten by both.
    let lock = match StateLock::take(&a.state_dir) {
        Ok(l) => l,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(Err(EXIT_INVALID));
        }
    };
    Ok(Ok(match kind {
        ProviderKind::Sim => {
            let speed =
                check_speed(a.sim_speed).map_err(|e| anyhow::anyhow!("--sim-speed: {e}"))?;
            // Anchored in the state directory, as `fleet run`'s: the simulated fleet's time
            // goes on from where the last command left it, at whatever speed that ran.
            let clock: Arc<dyn Clock> = Arc::new(
                AnchoredClock::open(&a.state_dir, speed)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", a.state_dir.display()))?,
            );
            let sim = SimProvider::open(&a.state_dir, Arc::clone(&clock), SimConfig::default())?;
            World {
                desired,
                prober: Arc::new(SimProber(sim.clone())),
                provider: Arc::new(sim),
                clock,
                kind,
                state_dir: a.state_dir.clone(),
                no_probe: a.no_probe,
                commit,
                _lock: lock,
            }
        }
        #[cfg(not(feature = "aws"))]
        ProviderKind::Aws => {
            anyhow::bail!(
                "this fleet was built without the `aws` feature (the simulator only); build it with default features for --provider aws"
            );
        }
        #[cfg(feature = "aws")]
        ProviderKind::Aws => {
            use crate::health::probe::{DnsResolver, RpcCredentials, RpcProber};
            use crate::provider::aws::{AwsOptions, AwsProvider};
            let opts = AwsOptions {
                region: Some(desired.fleet.region.to_string()),
                endpoint_url: a.aws_endpoint.clone(),
                ..AwsOptions::default()
            };
            let aws = AwsProvider::connect(opts).await;
            let creds = RpcCredentials::from_env(desired.coins.keys().map(String::as_str));
            World {
                prober: Arc::new(RpcProber::new(
                    Arc::new(DnsResolver),
                    creds,
                    std::time::Duration::from_secs(10),
                )),
                provider: Arc::new(aws),
                clock: Arc::new(crate::clock::SystemClock),
                kind,
                state_dir: a.state_dir.clone(),
                no_probe: a.no_probe,
                desired,
                commit,
                _lock: lock,
            }
        }
    }))
}

/// `fleet plan`.
pub(crate) fn plan_cmd(
    a: &PlanArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<u8> {
    let rt = runtime()?;
    rt.block_on(async {
        let w = match open_world("plan", a.detailed_exitcode, &a.world, err, tty).await? {
            Ok(w) => w,
            Err(code) => return Ok(code),
        };
        let mut observed = w.observe().await?;
        // What `fleet run` grew on its own (its journal, when this machine holds it).
        let journal = Journal::peek(&a.world.state_dir);
        observed.auto_grown = journal.auto_grown_all();
        observed.replace_requested = journal.replacements_asked();
        let p = plan(&w.desired, &observed, w.clock.now_ms());
        match a.format {
            Format::Human => {
                let st = style(a.world.color, tty);
                if let Some(b) = w.sim_banner(st) {
                    writeln!(out, "{b}\n")?;
                }
                out.write_all(plan_human(&p, &w.desired, st).as_bytes())?;
                writeln!(
                    out,
                    "{}",
                    st.dim(&format!(
                        "(observed {} nodes through the {} provider with {} API calls; {}; `fleet plan` changes nothing)",
                        observed.nodes.len(),
                        w.provider.name(),
                        observed.api_calls,
                        if w.no_probe {
                            "nodes not asked (--no-probe): versions as fleet's tags record them".to_string()
                        } else {
                            format!(
                                "{} daemons said what they run",
                                observed.nodes.iter().filter(|n| n.daemon.is_some()).count()
                            )
                        }
                    ))
                )?;
            }
            Format::Json => {
                #[derive(serde::Serialize)]
                struct J<'a> {
                    provider: &'a str,
                    simulated: bool,
                    commit: &'a str,
                    changes: bool,
                    api_calls: u64,
                    plan: &'a Plan,
                }
                serde_json::to_writer_pretty(
                    &mut *out,
                    &J {
                        provider: w.provider.name(),
                        simulated: w.kind == ProviderKind::Sim,
                        commit: &w.commit,
                        changes: !p.is_empty(),
                        api_calls: observed.api_calls,
                        plan: &p,
                    },
                )?;
                writeln!(out)?;
            }
        }
        Ok(if p.has_refusals() {
            EXIT_INVALID
        } else if a.detailed_exitcode && !p.is_empty() {
            EXIT_CHANGES
        } else {
            EXIT_OK
        })
    })
}

/// Forwards events to the command's output loop.
struct ChannelNotifier(mpsc::UnboundedSender<(Millis, Event)>);

impl Notifier for ChannelNotifier {
    fn notify(&self, at_ms: Millis, event: &Event) {
        let _ = self.0.send((at_ms, event.clone()));
    }
}

/// Run `exec` on `plan`, printing progress to `out`; Ctrl-C cancels between steps.
async fn run_with_progress(
    exec: Arc<Executor>,
    desired: &Arc<Desired>,
    p: &Plan,
    mut rx: mpsc::UnboundedReceiver<(Millis, Event)>,
    out: &mut dyn Write,
    st: Style,
    live: bool,
) -> anyhow::Result<ApplyReport> {
    let cancel = CancellationToken::new();
    let mut progress = Progress::new(st, live, exec.clock.now_ms());
    let apply = {
        let (exec, desired, p, cancel) = (
            Arc::clone(&exec),
            Arc::clone(desired),
            p.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move { exec.apply(&desired, &p, &cancel).await })
    };
    tokio::pin!(apply);
    let mut interrupted = false;
    let report = loop {
        tokio::select! {
            r = &mut apply => break r?,
            Some((at, e)) = rx.recv() => {
                out.write_all(progress.event(at, &e).as_bytes())?;
                out.flush()?;
            }
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                cancel.cancel();
                writeln!(out, "\ninterrupted: stopping between steps (no step is cut in half); run apply again to continue")?;
            }
        }
    };
    while let Ok((at, e)) = rx.try_recv() {
        out.write_all(progress.event(at, &e).as_bytes())?;
    }
    Ok(report)
}

/// `fleet apply`.
pub(crate) fn apply_cmd(
    a: &ApplyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<u8> {
    let rt = runtime()?;
    rt.block_on(async {
        let w = match open_world("apply", false, &a.world, err, tty).await? {
            Ok(w) => w,
            Err(code) => return Ok(code),
        };
        let st = style(a.world.color, tty);
        let (journal, warnings) = Journal::open(&a.world.state_dir)?;
        for warn in warnings {
            writeln!(err, "warning: {warn}")?;
        }
        let journal = Arc::new(journal);
        let mut observed = w.observe().await?;
        observed.auto_grown = journal.auto_grown_all();
        observed.replace_requested = journal.replacements_asked();
        let p = plan(&w.desired, &observed, w.clock.now_ms());
        if let Some(b) = w.sim_banner(st) {
            writeln!(out, "{b}\n")?;
        }
        out.write_all(plan_human(&p, &w.desired, st).as_bytes())?;
        if p.is_empty() {
            return Ok(EXIT_OK);
        }
        let key = |c: &crate::plan::CoinPlan| ApprovalKey {
            coin: c.coin.clone(),
            target: c.approval_target(),
            commit: w.commit.clone(),
        };
        let needs: Vec<&crate::plan::CoinPlan> = p
            .coins
            .iter()
            .filter(|c| c.approval.is_some() && c.refusals.is_empty())
            .filter(|c| journal.approval(&key(c)).is_none())
            .collect();
        if !a.yes {
            if !std::io::stdin().is_terminal() {
                writeln!(
                    err,
                    "error: not applying without confirmation: standard input is not a terminal; review the plan and pass --yes"
                )?;
                return Ok(EXIT_INVALID);
            }
            if !needs.is_empty() {
                writeln!(
                    out,
                    "Answering yes also approves: {}.",
                    needs
                        .iter()
                        .map(|c| format!("{} {}", c.coin, c.approval_target()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
            write!(out, "Apply this plan? Only 'yes' is accepted: ")?;
            out.flush()?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            if line.trim() != "yes" {
                writeln!(out, "Not applied.")?;
                return Ok(EXIT_OK);
            }
        }
        let by = format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        );
        for c in &needs {
            // A decision recorded meanwhile (Slack, another apply) stands; the executor reads it.
            journal.decide_once(&key(c), Decision::Approved, &by, w.clock.now_ms())?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let exec = Arc::new(Executor {
            provider: Arc::clone(&w.provider),
            prober: Arc::clone(&w.prober),
            journal,
            notifier: Arc::new(ChannelNotifier(tx)),
            clock: Arc::clone(&w.clock),
            opts: ExecOptions {
                parallel_coins: a.parallel.max(1),
                poll_ms: a.poll.max(1) * 1000,
                commit: w.commit.clone(),
            },
        });
        let report = run_with_progress(exec, &w.desired, &p, rx, out, st, tty).await?;
        if w.kind == ProviderKind::Sim {
            writeln!(out, "\n{}", st.bold("Summary (simulated fleet, --provider sim):"))?;
        } else {
            writeln!(out, "\n{}", st.bold("Summary:"))?;
        }
        out.write_all(summary(&report, st).as_bytes())?;
        Ok(if report.all_completed() {
            EXIT_OK
        } else {
            EXIT_INVALID
        })
    })
}

/// `fleet demo`.
pub(crate) fn demo_cmd(a: &DemoArgs, out: &mut dyn Write, tty: bool) -> anyhow::Result<u8> {
    if a.speed < 1.0 {
        anyhow::bail!("--speed must be at least 1");
    }
    check_speed(a.speed).map_err(|e| anyhow::anyhow!("--speed: {e}"))?;
    let st = style(a.color, tty);
    let real = std::time::Instant::now();
    let rt = runtime()?;
    rt.block_on(async {
        let world = DemoWorld::new(a.speed).map_err(anyhow::Error::msg)?;
        let d = &world.desired;
        writeln!(
            out,
            "{}\n\
             The example fleet repository (examples/fleet: {} coins, {} nodes in {} availability zones) is\n\
             compiled into fleet. Its nodes run in a simulated AWS, one release behind the repository.\n\
             fleet plans the change, then upgrades each coin zone by zone: a zone starts only when every\n\
             node of the previous one is back in sync with its chain (blocks == headers, within\n\
             max_lag_blocks of the coin's other nodes) and stayed so for the coin's bake time.\n\
             Simulated time runs {}x faster than real time; times below are simulated.\n",
            st.bold("fleet demo"),
            d.coins.len(),
            d.nodes().count(),
            d.fleet.subnets.len(),
            a.speed
        )?;
        let p = world.plan().await.map_err(anyhow::Error::msg)?;
        writeln!(out, "{}", st.bold("1. The plan (what `fleet plan` prints):"))?;
        out.write_all(plan_human(&p, d, st).as_bytes())?;
        let approvals: Vec<String> = p
            .coins
            .iter()
            .filter(|c| c.approval.is_some())
            .map(|c| c.coin.to_string())
            .collect();
        writeln!(
            out,
            "\n{}\n{}",
            st.bold("2. Approvals:"),
            if approvals.is_empty() {
                "none needed".to_string()
            } else {
                format!(
                    "{} need{} an approval under their rollout.approval policy; in production it comes from\n\
                     an approver in Slack or from `fleet apply`'s confirmation. The demo approves as demo-operator.",
                    approvals.join(", "),
                    if approvals.len() == 1 { "s" } else { "" }
                )
            }
        )?;
        writeln!(out, "\n{}", st.bold("3. The rollout (what `fleet apply` shows):"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let exec = world.executor(&p, "demo-operator", Arc::new(ChannelNotifier(tx)));
        let sim_start = world.clock.now_ms();
        let calls_before = world.sim.call_counts().0;
        let report = run_with_progress(exec, &world.desired, &p, rx, out, st, tty).await?;
        let sim_ms = world.clock.now_ms() - sim_start;
        let calls = world.sim.call_counts().0 - calls_before;
        writeln!(out, "\n{}", st.bold("4. Summary:"))?;
        out.write_all(summary(&report, st).as_bytes())?;
        let after = world.plan().await.map_err(anyhow::Error::msg)?;
        let commands = world.sim.commands().len();
        writeln!(
            out,
            "\n{} simulated in {:.1}s real time; {} provider API calls, {} SSM commands.",
            human_ms(sim_ms),
            real.elapsed().as_secs_f64(),
            calls,
            commands
        )?;
        if after.is_empty() && report.all_completed() {
            writeln!(
                out,
                "{} the plan is now empty: all {} nodes run the repository's versions.",
                st.green("Converged:"),
                d.nodes().count()
            )?;
            writeln!(
                out,
                "Next: `fleet plan --repo examples/fleet --provider sim`, and `--provider aws` on your own fleet (see README.md)."
            )?;
            Ok(EXIT_OK)
        } else {
            writeln!(
                out,
                "{} {} steps still planned.",
                st.red("Not converged:"),
                after.step_count()
            )?;
            Ok(EXIT_INVALID)
        }
    })
}
