//! The executor against the simulator, on tokio's paused time (a rollout of hours of
//! simulated time takes a moment, and coins waiting in parallel share one exact timeline).
//!
//! Invariants checked on every rollout here, by a monitor that reads every node's chain status
//! every 5 simulated seconds, independently of the executor:
//! - never more nodes of a coin out of sync than its `max_unavailable`;
//! - a coin's restart commands go zone by zone in `placement.zones` order, and a zone's first
//!   command comes only after the previous zone passed its gate and its bake;
//! - after a failure the coin stops: no command reaches a later zone.

use fleet_repo_schema::values::Version;
use fleet_repo_schema::{Desired, OnFailure, Probe};
use fleet_tests::world::{desired_of, example_tree};
use reconciler::apply::{CoinOutcome, ExecOptions, Executor};
use reconciler::clock::{Clock, TokioClock};
use reconciler::events::{Event, RecordingNotifier};
use reconciler::node::NodeKey;
use reconciler::plan::{Orphan, Plan, plan};
use reconciler::provider::commands;
use reconciler::provider::sim::{ChainParams, SimConfig, SimFault, SimProber, SimProvider};
use reconciler::provider::{InstanceState, ObservedVersion, Provider};
use reconciler::store::{Decision, Journal, Record};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const T0: u64 = 1_700_000_000_000;

struct Rig {
    desired: Arc<Desired>,
    sim: SimProvider,
    clock: Arc<dyn Clock>,
    journal: Arc<Journal>,
    rec: Arc<RecordingNotifier>,
}

fn older() -> BTreeMap<String, Version> {
    reconciler::demo::older_versions()
}

impl Rig {
    /// The example fleet seeded at older versions. Call inside a paused runtime.
    fn new() -> Rig {
        Rig::of(desired_of(&example_tree()))
    }

    /// `desired` seeded at older versions. Call inside a paused runtime.
    fn of(desired: Desired) -> Rig {
        let desired = Arc::new(desired);
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(T0));
        let sim = SimProvider::new(Arc::clone(&clock), SimConfig::default());
        sim.seed(&desired, &older()).unwrap();
        Rig {
            desired,
            sim,
            clock,
            journal: Arc::new(Journal::in_memory()),
            rec: Arc::new(RecordingNotifier::default()),
        }
    }

    /// `base` seeded at its own versions, to be taken to `desired`. Call inside a paused
    /// runtime.
    fn seeded(base: &Desired, desired: Desired) -> Rig {
        Rig::seeded_in(SimConfig::default(), base, desired)
    }

    /// As [`Rig::seeded`], in a world of `config`.
    fn seeded_in(config: SimConfig, base: &Desired, desired: Desired) -> Rig {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(T0));
        let sim = SimProvider::new(Arc::clone(&clock), config);
        sim.seed(base, &BTreeMap::new()).unwrap();
        Rig {
            desired: Arc::new(desired),
            sim,
            clock,
            journal: Arc::new(Journal::in_memory()),
            rec: Arc::new(RecordingNotifier::default()),
        }
    }

    /// The example fleet seeded as it says, then fleet.yaml names the AMI `ami`. Call inside
    /// a paused runtime.
    fn new_ami(ami: &str) -> Rig {
        Rig::new_ami_in(SimConfig::default(), ami)
    }

    /// As [`Rig::new_ami`], in a world of `config`.
    fn new_ami_in(config: SimConfig, ami: &str) -> Rig {
        let base = desired_of(&example_tree());
        let mut changed = base.clone();
        changed.fleet.node_ami = fleet_repo_schema::values::AmiId::parse(ami).unwrap();
        Rig::seeded_in(config, &base, changed)
    }

    /// The same world, journal and notifier, towards `desired` (the repository changed).
    fn towards(&self, desired: Desired) -> Rig {
        Rig {
            desired: Arc::new(desired),
            sim: self.sim.clone(),
            clock: Arc::clone(&self.clock),
            journal: Arc::clone(&self.journal),
            rec: Arc::clone(&self.rec),
        }
    }

    async fn plan(&self) -> Plan {
        let o = fleet_tests::observe(&self.sim, &self.desired).await;
        plan(&self.desired, &o, self.clock.now_ms())
    }

    fn approve_all(&self, p: &Plan) {
        fleet_tests::approve_all(&self.journal, p, "c1", "U012ABCDEF");
    }

    fn executor(&self) -> Arc<Executor> {
        Arc::new(Executor {
            provider: Arc::new(self.sim.clone()),
            prober: Arc::new(SimProber(self.sim.clone())),
            journal: Arc::clone(&self.journal),
            notifier: self.rec.clone(),
            clock: Arc::clone(&self.clock),
            opts: ExecOptions {
                parallel_coins: 8,
                poll_ms: 5_000,
                commit: "c1".into(),
            },
        })
    }

    /// Plan, approve, apply while the monitor watches; returns the report and the monitor's
    /// largest count of out-of-sync nodes per coin.
    async fn apply(&self) -> (reconciler::apply::ApplyReport, BTreeMap<String, usize>) {
        let (report, worst, ()) = self.apply_during(async {}).await;
        (report, worst)
    }

    /// As [`Rig::apply`], with `trouble` (fault injections on the clock) running alongside;
    /// also returns what `trouble` returned.
    async fn apply_during<T>(
        &self,
        trouble: impl std::future::Future<Output = T>,
    ) -> (reconciler::apply::ApplyReport, BTreeMap<String, usize>, T) {
        let p = self.plan().await;
        self.approve_all(&p);
        let stop = CancellationToken::new();
        let mon = tokio::spawn(monitor(
            self.sim.clone(),
            Arc::clone(&self.desired),
            Arc::clone(&self.clock),
            stop.clone(),
        ));
        let exec = self.executor();
        let never = CancellationToken::new();
        let (report, t) = tokio::join!(exec.apply(&self.desired, &p, &never), trouble);
        stop.cancel();
        (report, mon.await.unwrap(), t)
    }
}

/// Reads every node's chain every 5 simulated seconds; returns, per coin, the most nodes seen
/// out of sync at once (unreachable, in IBD, blocks behind headers, or behind the tip by more
/// than max_lag_blocks).
async fn monitor(
    sim: SimProvider,
    desired: Arc<Desired>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) -> BTreeMap<String, usize> {
    let mut worst: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let o = fleet_tests::observe(&sim, &desired).await;
        let mut down: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in &o.nodes {
            let coin = &desired.coins[n.key.coin.as_str()];
            let tip = sim.tip(n.key.coin.as_str());
            let status = sim.chain_status(&n.instance_id);
            let ok = match &status {
                Ok(s) => {
                    !s.initial_block_download
                        && s.blocks == s.headers
                        && s.blocks + coin.health.max_lag_blocks >= tip
                }
                Err(_) => false,
            };
            if !ok {
                down.entry(n.key.coin.to_string())
                    .or_default()
                    .push(format!("{} {status:?} tip {tip}", n.key));
            }
        }
        for (c, nodes) in down {
            let max = desired.coins[c.as_str()].rollout.max_unavailable as usize;
            if nodes.len() > max {
                eprintln!(
                    "monitor at {}: {c} over budget: {nodes:?}",
                    clock.now_ms() - T0
                );
            }
            let w = worst.entry(c).or_default();
            *w = (*w).max(nodes.len());
        }
        tokio::select! {
            _ = clock.sleep(5_000) => {}
            _ = stop.cancelled() => return worst,
        }
    }
}

/// Restart commands per coin: (time, zone, instance), in the order sent.
fn restarts(sim: &SimProvider) -> BTreeMap<String, Vec<(u64, String, String)>> {
    let mut out: BTreeMap<String, Vec<(u64, String, String)>> = BTreeMap::new();
    for c in sim.commands() {
        if commands::upgrade_target(&c.command).is_some() && c.ok {
            out.entry(c.key.coin.to_string()).or_default().push((
                c.at_ms,
                c.key.zone.to_string(),
                c.instance_id.clone(),
            ));
        }
    }
    out
}

/// No node was restarted twice at the same version.
fn assert_no_double_restart(sim: &SimProvider, context: &str) {
    let mut seen = BTreeSet::new();
    for c in sim.commands() {
        if commands::upgrade_target(&c.command).is_some() && c.ok {
            assert!(
                seen.insert((c.instance_id.clone(), c.command.clone())),
                "{context}: {} restarted twice: {}",
                c.key,
                c.command
            );
        }
    }
}

fn zone_passed_at(rec: &RecordingNotifier, coin: &str, zone: &str) -> Option<u64> {
    rec.events().into_iter().find_map(|(at, e)| match e {
        Event::ZonePassed {
            coin: c, zone: z, ..
        } if c == coin && z == zone => Some(at),
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn upgrades_every_coin_zone_by_zone_within_max_unavailable() {
    let rig = Rig::new();
    let (report, worst) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    // Invariant: never more nodes of a coin out of sync than max_unavailable; and the
    // rollout did take nodes down (the monitor is not blind).
    for (coin, n) in &worst {
        let max = rig.desired.coins[coin.as_str()].rollout.max_unavailable as usize;
        assert!(
            *n <= max,
            "{coin}: {n} nodes down at once, max_unavailable {max}"
        );
    }
    assert_eq!(worst.get("bitcoin"), Some(&1));
    assert_eq!(worst.get("monero"), Some(&2), "monero takes 2 at once");

    let r = restarts(&rig.sim);
    for (coin, cmds) in &r {
        let c = &rig.desired.coins[coin.as_str()];
        assert_eq!(cmds.len(), c.nodes.len(), "{coin}: one restart per node");
        let order: Vec<usize> = cmds
            .iter()
            .map(|(_, z, _)| c.zones.iter().position(|x| x.as_str() == z).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{coin}: {order:?}");
        // A zone's first restart only after the previous zone passed gate and bake.
        for w in c.zones.windows(2) {
            let passed = zone_passed_at(&rig.rec, coin, w[0].as_str()).unwrap();
            let first_next = cmds.iter().find(|(_, z, _)| z == w[1].as_str()).unwrap().0;
            assert!(
                first_next >= passed,
                "{coin}: {} before {} passed",
                w[1],
                w[0]
            );
            let last_prev = cmds.iter().rfind(|(_, z, _)| z == w[0].as_str()).unwrap().0;
            let bake = c.rollout.bake.0.as_millis() as u64;
            assert!(
                passed >= last_prev + bake,
                "{coin}: {} passed {} ms after its last restart, bake is {bake} ms",
                w[0],
                passed - last_prev
            );
        }
    }
    // Snapshots before each upgrade where the coin asks for them (all example coins do by
    // default).
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let before: Vec<_> = o
        .snapshots
        .iter()
        .filter(|s| s.reason.starts_with("before-upgrade:"))
        .collect();
    assert_eq!(before.len(), rig.desired.nodes().count());
    // Bitcoin's three zones took their bakes (30m each) and a catch-up each, not the hours
    // a sync from genesis takes in the simulator (870,000 blocks at 50 a second).
    let btc = report.coins.iter().find(|c| c.coin == "bitcoin").unwrap();
    let took = btc.finished_ms - btc.started_ms;
    assert!(took < 3 * 3_600_000, "bitcoin took {} min", took / 60_000);
    // Converged: nothing left to do.
    assert!(rig.plan().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_node_that_never_syncs_fails_its_gate_and_stops_only_its_coin() {
    let rig = Rig::new();
    let victim = NodeKey::parse("ethereum", "eu-central-1b", 1).unwrap();
    // The simulator's NeverSyncs freezes the daemon at the height it last started at, so
    // inject it once the rollout is under way (zone a restarting): from then on the victim
    // (in zone b) is behind on its own, and after its upgrade it never catches up.
    let inject = async {
        rig.clock.sleep(40_000).await;
        rig.sim.inject(SimFault::NeverSyncs {
            key: victim.clone(),
        });
    };
    let (report, worst, ()) = rig.apply_during(inject).await;
    let eth = report.coins.iter().find(|c| c.coin == "ethereum").unwrap();
    let CoinOutcome::Failed { failure, .. } = &eth.outcome else {
        panic!("{:?}", eth.outcome)
    };
    let reason = failure.to_string();
    assert!(reason.contains("ethereum/eu-central-1b/1"), "{reason}");
    assert!(reason.contains("stall_timeout"), "{reason}");
    // It failed after stall_timeout (30m), not before.
    let stall = rig.desired.coins["ethereum"]
        .health
        .stall_timeout
        .0
        .as_millis() as u64;
    let r = restarts(&rig.sim);
    let eth_cmds = &r["ethereum"];
    let victim_restart = eth_cmds
        .iter()
        .find(|(_, z, _)| z == "eu-central-1b")
        .unwrap()
        .0;
    let failed_at = rig
        .rec
        .events()
        .into_iter()
        .find_map(|(at, e)| {
            matches!(e, Event::RolloutFailed { ref coin, .. } if coin == "ethereum").then_some(at)
        })
        .unwrap();
    assert!(failed_at >= victim_restart + stall, "failed too early");
    assert!(
        failed_at <= victim_restart + stall + 60_000,
        "failed too late"
    );
    // The next zone was never touched.
    assert!(
        !eth_cmds.iter().any(|(_, z, _)| z == "eu-central-1c"),
        "{eth_cmds:?}"
    );
    // Every other coin completed.
    for c in report.coins.iter().filter(|c| c.coin != "ethereum") {
        assert_eq!(c.outcome, CoinOutcome::Completed, "{}", c.coin);
    }
    for (coin, n) in &worst {
        let max = rig.desired.coins[coin.as_str()].rollout.max_unavailable as usize;
        assert!(*n <= max, "{coin}: {n} down at once, max_unavailable {max}");
    }
    // The failure is journaled.
    assert!(rig.journal.records().iter().any(|r| matches!(r,
        Record::GateFailed { coin, node, .. } if coin == "ethereum" && node == "ethereum/eu-central-1b/1")));
}

#[tokio::test(start_paused = true)]
async fn a_node_that_stalls_below_the_reference_fails_and_later_zones_are_untouched() {
    let rig = Rig::new();
    let victim = NodeKey::parse("ethereum", "eu-central-1a", 1).unwrap();
    // Blocks stop at today's tip: while the node is down for its upgrade the chain moves on,
    // its headers follow, its blocks do not.
    let tip = rig.sim.tip("ethereum");
    rig.sim.inject(SimFault::StallAt {
        key: victim,
        height: tip,
    });
    let (report, _) = rig.apply().await;
    let eth = report.coins.iter().find(|c| c.coin == "ethereum").unwrap();
    assert!(
        matches!(&eth.outcome, CoinOutcome::Failed { failure, .. } if failure.to_string().contains(&format!("stuck at {tip}"))),
        "{:?}",
        eth.outcome
    );
    let r = restarts(&rig.sim);
    assert_eq!(
        r["ethereum"].len(),
        1,
        "zone b never started: {:?}",
        r["ethereum"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_command_stops_the_coin_and_a_new_run_converges() {
    let rig = Rig::new();
    let victim = NodeKey::parse("dogecoin", "eu-central-1c", 1).unwrap();
    rig.sim.inject(SimFault::FailCommand {
        key: Some(victim.clone()),
        times: 1,
        stderr: "Job for node@1.14.9.service failed: image not found".into(),
    });
    let (report, _) = rig.apply().await;
    let doge = report.coins.iter().find(|c| c.coin == "dogecoin").unwrap();
    let CoinOutcome::Failed { failure, .. } = &doge.outcome else {
        panic!("{:?}", doge.outcome)
    };
    let reason = failure.to_string();
    assert!(reason.contains("image not found"), "{reason}");
    // The node's version is now unknown (the step began and did not finish), never guessed.
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let n = o.node(&victim).unwrap();
    assert!(
        matches!(n.version, ObservedVersion::Unknown { .. }),
        "{:?}",
        n.version
    );
    // A new run: the plan asks the node first (it is not running the target), then upgrades.
    let p = rig.plan().await;
    let steps: Vec<_> = p
        .coins
        .iter()
        .flat_map(|c| c.waves.iter())
        .flat_map(|w| &w.steps)
        .collect();
    assert_eq!(steps.len(), 1, "{p:#?}");
    let (report, _) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    assert!(rig.plan().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn max_unavailable_counts_nodes_down_for_other_reasons() {
    let rig = Rig::new();
    // A monero node in the last zone is broken before anything starts (its daemon stopped
    // validating): with max_unavailable 2 and two nodes per zone, the first wave would take
    // the coin to 3 down, so it must wait, and give up after stall_timeout.
    let sick = NodeKey::parse("monero", "eu-central-1c", 2).unwrap();
    rig.sim.inject(SimFault::NeverSyncs { key: sick });
    // Let the chain move on so the sick node is visibly behind.
    rig.clock.sleep(600_000).await;
    let (report, _) = rig.apply().await;
    let xmr = report.coins.iter().find(|c| c.coin == "monero").unwrap();
    assert!(
        matches!(&xmr.outcome, CoinOutcome::Failed { failure, .. } if failure.to_string().contains("max_unavailable")),
        "{:?}",
        xmr.outcome
    );
    assert!(
        !restarts(&rig.sim).contains_key("monero"),
        "no monero node may be restarted"
    );
    assert!(
        rig.rec
            .events()
            .iter()
            .any(|(_, e)| matches!(e, Event::Waiting { coin, .. } if coin == "monero"))
    );
}

#[tokio::test(start_paused = true)]
async fn approvals_gate_the_rollout_per_coin_version_and_commit() {
    let rig = Rig::new();
    let p = rig.plan().await;
    // An approval for another commit does not count.
    rig.journal
        .append(Record::Approval {
            coin: "bitcoin".into(),
            version: "28.1".into(),
            commit: "another-commit".into(),
            decision: Decision::Approved,
            by: "U012ABCDEF".into(),
            at_ms: 0,
        })
        .unwrap();
    rig.journal
        .append(Record::Approval {
            coin: "monero".into(),
            version: "0.18.3.4".into(),
            commit: "c1".into(),
            decision: Decision::Rejected,
            by: "U034GHIJKL".into(),
            at_ms: 0,
        })
        .unwrap();
    let report = rig
        .executor()
        .apply(&rig.desired, &p, &CancellationToken::new())
        .await;
    let by_coin: BTreeMap<_, _> = report
        .coins
        .iter()
        .map(|c| (c.coin.as_str(), &c.outcome))
        .collect();
    assert_eq!(by_coin["bitcoin"], &CoinOutcome::AwaitingApproval);
    assert_eq!(
        by_coin["monero"],
        &CoinOutcome::Rejected {
            by: "U034GHIJKL".into()
        }
    );
    assert_eq!(by_coin["litecoin"], &CoinOutcome::Completed);
    let r = restarts(&rig.sim);
    assert!(
        !r.contains_key("bitcoin") && !r.contains_key("monero"),
        "{r:?}"
    );
    assert!(rig.rec.events().iter().any(|(_, e)| matches!(e,
        Event::ApprovalNeeded { coin, target, commit, .. } if coin == "bitcoin" && target.as_str() == "28.1" && commit == "c1")));
}

/// Kill the executor (drop its future: every task is aborted at its next await, i.e. between
/// two provider calls) at many points of a rollout, then start a new executor on a fresh plan,
/// sometimes with the journal lost. Each time: the fleet converges, the monitor never sees more
/// than max_unavailable nodes down, and no node is restarted at the target version twice.
#[tokio::test(start_paused = true)]
async fn crashes_at_any_point_converge_without_double_restarts() {
    let mut kill_points = 0;
    // Kill times in simulated seconds after the start, spread over the whole rollout
    // (the example fleet's rollout takes about 1h 32m simulated).
    let mut times: Vec<u64> = (0..8).map(|i| i * 7).collect(); // the first minute: mid-steps
    times.extend((1..=18).map(|i| i * 311)); // then every ~5 minutes
    for (n, kill_after_s) in times.into_iter().enumerate() {
        let rig = Rig::new();
        let stop = CancellationToken::new();
        let mon = tokio::spawn(monitor(
            rig.sim.clone(),
            Arc::clone(&rig.desired),
            Arc::clone(&rig.clock),
            stop.clone(),
        ));
        let p = rig.plan().await;
        rig.approve_all(&p);
        let exec = rig.executor();
        let cancel = CancellationToken::new();
        let run = exec.apply(&rig.desired, &p, &cancel);
        let killed = tokio::select! {
            _ = run => false,
            _ = rig.clock.sleep(kill_after_s * 1000 + (n as u64 % 5) * 137) => true,
        };
        if killed {
            kill_points += 1;
        }
        // Restart: a new executor, a new plan; every third time the journal is lost.
        let rig2 = Rig {
            desired: Arc::clone(&rig.desired),
            sim: rig.sim.clone(),
            clock: Arc::clone(&rig.clock),
            journal: if n % 3 == 0 {
                Arc::new(Journal::in_memory())
            } else {
                Arc::clone(&rig.journal)
            },
            rec: Arc::new(RecordingNotifier::default()),
        };
        let p2 = rig2.plan().await;
        rig2.approve_all(&p2);
        let report = rig2
            .executor()
            .apply(&rig2.desired, &p2, &CancellationToken::new())
            .await;
        stop.cancel();
        let worst = mon.await.unwrap();
        assert!(
            report.all_completed(),
            "kill at {kill_after_s}s: {report:#?}"
        );
        assert!(
            rig2.plan().await.is_empty(),
            "kill at {kill_after_s}s: not converged"
        );
        for (coin, k) in &worst {
            let max = rig.desired.coins[coin.as_str()].rollout.max_unavailable as usize;
            assert!(
                *k <= max,
                "kill at {kill_after_s}s: {coin} had {k} down, max {max}"
            );
        }
        assert_no_double_restart(&rig.sim, &format!("kill at {kill_after_s}s"));
    }
    assert!(
        kill_points >= 20,
        "only {kill_points} kills landed mid-rollout"
    );

    // A simulated step never yields (each of its calls completes at once), so a dropped
    // future cannot cut it; crashes *inside* a step are injected as calls that fail between
    // two of its API calls: e.g. DeleteTags failing leaves a node restarted at its target
    // with its `fleet:pending` marker still set.
    let mut mid_step = 0;
    for op in [
        "CreateSnapshot",
        "CreateTags",
        "SendCommand",
        "GetCommandInvocation",
        "DeleteTags",
    ] {
        for times in [1, 3] {
            let rig = Rig::new();
            rig.sim.inject(SimFault::FailOp {
                op: op.into(),
                times,
            });
            let (first, worst1) = rig.apply().await;
            assert!(!first.all_completed(), "{op}×{times}: nothing failed");
            mid_step += 1;
            rig.sim.clear_faults();
            let (report, worst2) = rig.apply().await;
            assert!(report.all_completed(), "{op}×{times}: {report:#?}");
            assert!(rig.plan().await.is_empty(), "{op}×{times}: not converged");
            for (coin, k) in worst1.iter().chain(worst2.iter()) {
                let max = rig.desired.coins[coin.as_str()].rollout.max_unavailable as usize;
                assert!(*k <= max, "{op}×{times}: {coin} had {k} down");
            }
            assert_no_double_restart(&rig.sim, &format!("{op}×{times}"));
        }
    }
    eprintln!(
        "crash test: {kill_points} kill points mid-rollout and {mid_step} crashes inside a step, all converged"
    );
}

#[tokio::test(start_paused = true)]
async fn probe_none_gates_on_running_and_bake() {
    let mut desired = desired_of(&example_tree());
    desired.coins.retain(|k, _| k == "iota");
    let iota = desired.coins.get_mut("iota").unwrap();
    iota.health.probe = Probe::None;
    let rig = Rig::of(desired);
    let (report, _) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    let passed_a = zone_passed_at(&rig.rec, "iota", "eu-central-1a").unwrap();
    let r = restarts(&rig.sim);
    assert!(r["iota"][1].0 >= passed_a);
    assert!(passed_a >= r["iota"][0].0 + 600_000, "baked 10m");
}

#[tokio::test(start_paused = true)]
async fn a_node_falling_behind_during_the_bake_restarts_the_bake() {
    let mut desired = desired_of(&example_tree());
    desired.coins.retain(|k, _| k == "ethereum");
    let rig = Rig::of(desired);
    let victim = NodeKey::parse("ethereum", "eu-central-1a", 1).unwrap();
    // Two minutes into zone a's bake its node stops validating; three minutes later it
    // recovers. The bake must start over then, and the zone pass a full bake after it.
    let trouble = async {
        rig.clock.sleep(150_000).await;
        let tip = rig.sim.tip("ethereum");
        rig.sim.inject(SimFault::StallAt {
            key: victim.clone(),
            height: tip,
        });
        rig.clock.sleep(180_000).await;
        rig.sim.clear_faults();
        rig.clock.now_ms()
    };
    let (report, _, recovered_at) = rig.apply_during(trouble).await;
    assert!(report.all_completed(), "{report:#?}");
    let passed = zone_passed_at(&rig.rec, "ethereum", "eu-central-1a").unwrap();
    let bake = rig.desired.coins["ethereum"].rollout.bake.0.as_millis() as u64;
    assert!(
        passed >= recovered_at + bake,
        "zone a passed {} s after the node recovered; bake is {} s",
        (passed - recovered_at) / 1000,
        bake / 1000
    );
    // The journal records the restarted bake once, not at every reading.
    let bakes = rig
        .journal
        .records()
        .iter()
        .filter(|r| matches!(r, Record::BakeStarted { zone, .. } if zone == "eu-central-1a"))
        .count();
    assert_eq!(bakes, 2);
}

/// Hardening: a journal that cannot be written (here a full disk: the file is /dev/full)
/// stops every coin before its first step; nothing is launched, restarted or recorded.
#[tokio::test(start_paused = true)]
async fn journal_failures_stop_the_coin() {
    let mut rig = Rig::new();
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path()).unwrap();
    let path = dir.path().join(reconciler::store::JOURNAL_FILE);
    let _ = std::fs::remove_file(&path);
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    rig.journal = Arc::new(journal);
    let p = rig.plan().await;
    // Approving fails too: nothing is recorded, so those coins keep waiting.
    for cp in p.coins.iter().filter(|c| c.approval.is_some()) {
        let key = reconciler::store::ApprovalKey {
            coin: cp.coin.clone(),
            target: cp.approval_target(),
            commit: "c1".into(),
        };
        assert!(
            rig.journal
                .decide_once(&key, Decision::Approved, "U1", 0)
                .is_err()
        );
    }
    let report = rig
        .executor()
        .apply(&rig.desired, &p, &CancellationToken::new())
        .await;
    let mut stopped = 0;
    for c in &report.coins {
        match &c.outcome {
            CoinOutcome::Failed {
                failure: reconciler::events::Failure::Journal { error },
                ..
            } => {
                assert!(error.contains("No space left"), "{error}");
                stopped += 1;
            }
            CoinOutcome::AwaitingApproval => {}
            other => panic!("{}: {other:?}", c.coin),
        }
        assert_eq!(c.steps, 0, "{}: a step ran without a record", c.coin);
    }
    assert!(stopped >= 4, "{report:#?}");
    assert!(rig.sim.commands().is_empty(), "a node was touched");
}

#[tokio::test(start_paused = true)]
async fn a_new_coin_syncs_from_genesis_past_sync_timeout_while_it_progresses() {
    // litecoin alone, new (no node, no snapshot), one node per zone; its chain is 60,000
    // blocks long, 20 minutes of validating at 50 blocks/s, and its sync_timeout is 10m. A
    // node syncing from genesis is gated on progress (stall_timeout), not on sync_timeout.
    let mut d = desired_of(&example_tree());
    d.coins.retain(|name, _| name == "litecoin");
    let c = d.coins.get_mut("litecoin").unwrap();
    c.health.sync_timeout = fleet_repo_schema::values::Duration::parse("10m").unwrap();
    c.snapshots.restore_new_nodes = false;
    let desired = Arc::new(d);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(T0));
    let mut config = SimConfig::default();
    config.chains.insert(
        "litecoin".into(),
        ChainParams {
            base_height: 60_000,
            ..reconciler::provider::sim::ChainParams::for_coin("litecoin")
        },
    );
    let rig = Rig {
        desired,
        sim: SimProvider::new(Arc::clone(&clock), config),
        clock,
        journal: Arc::new(Journal::in_memory()),
        rec: Arc::new(RecordingNotifier::default()),
    };
    let (report, _) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    // It took longer than sync_timeout, and the gate said how long it would take.
    let waited = report.coins[0].gate_wait_ms;
    assert!(waited > 10 * 60_000, "gated {waited} ms");
    let etas = rig
        .rec
        .events()
        .into_iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::Gate {
                    verdict: reconciler::health::Verdict::Waiting {
                        eta_ms: Some(_),
                        ..
                    },
                    ..
                }
            )
        })
        .count();
    assert!(etas > 0, "no gate reading carried an ETA");
}

#[tokio::test(start_paused = true)]
async fn a_reconfiguration_the_daemon_refuses_stops_at_its_first_node() {
    // litecoin runs as the example says; then the coin file gains a setting its daemon
    // refuses. The first node restarts into it and stays down (the simulator does not bring
    // it back); the rollout stops there, the coin's other nodes untouched.
    let base = desired_of(&example_tree());
    let mut changed = base.clone();
    let ltc = changed.coins.get_mut("litecoin").unwrap();
    ltc.container_config.insert(
        fleet_repo_schema::values::EnvName::parse("DBCACHE").unwrap(),
        fleet_repo_schema::values::EnvValue::parse("-1").unwrap(),
    );
    let rig = Rig::seeded(&base, changed);
    rig.sim.inject(SimFault::RejectsConfig {
        coin: "litecoin".into(),
        contains: "DBCACHE=-1".into(),
    });
    let p = rig.plan().await;
    let cp = p.coin("litecoin").expect("litecoin is reconfigured");
    assert!(
        cp.waves.iter().flat_map(|w| &w.steps).all(|s| matches!(
            s.action,
            reconciler::plan::Action::Reconfigure { restart: true, .. }
        )),
        "{cp:#?}"
    );
    assert_eq!(p.coins.len(), 1, "only litecoin changes: {p:#?}");
    let (report, worst) = rig.apply().await;
    let ltc = report.coins.iter().find(|c| c.coin == "litecoin").unwrap();
    let CoinOutcome::Failed { failure, .. } = &ltc.outcome else {
        panic!("{:?}", ltc.outcome)
    };
    let first = &rig.desired.coins["litecoin"].nodes[0];
    let first_key = NodeKey::of(first);
    assert_eq!(failure.node(), Some(&first_key), "{failure}");
    let reconfigured: Vec<_> = rig
        .sim
        .commands()
        .into_iter()
        .filter(|c| c.key.coin.as_str() == "litecoin" && c.command.contains("apply-config"))
        .collect();
    assert_eq!(
        reconfigured.len(),
        1,
        "only the first node: {reconfigured:#?}"
    );
    assert!(worst["litecoin"] <= 1, "{worst:?}");
    // Still down: nothing the simulator does brings a refused configuration back up.
    let id = &reconfigured[0].instance_id;
    rig.clock.sleep(3_600_000).await;
    let status = rig.sim.chain_status(id);
    assert!(
        status.as_ref().is_err_and(|e| e.contains("exits at start")),
        "{status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_node_ami_replaces_every_node_zone_by_zone_keeping_its_chain() {
    // The fleet runs as the example says; fleet.yaml then names a new AMI. Every node gets a
    // new instance that takes over its data volume, within max_unavailable, gated: the
    // chain is not synced again. Each name moves to its replacement only once the
    // replacement's gate has passed.
    let rig = Rig::new_ami("ami-0fedcba9876543210");
    let before = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let p = rig.plan().await;
    assert_eq!(
        p.step_count(),
        2 * before.nodes.len(),
        "a replace and a hand-over a node: {p:#?}"
    );
    let (report, worst) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    for (coin, n) in &worst {
        let max = rig.desired.coins[coin.as_str()].rollout.max_unavailable as usize;
        assert!(*n <= max, "{coin}: {n} down at once, max_unavailable {max}");
    }
    let after = fleet_tests::observe(&rig.sim, &rig.desired).await;
    assert_eq!(after.nodes.len(), before.nodes.len());
    assert!(after.orphans.is_empty(), "{:#?}", after.orphans);
    let events = rig.rec.events();
    for (b, a) in before.nodes.iter().zip(&after.nodes) {
        assert_eq!(a.key, b.key);
        assert_ne!(a.instance_id, b.instance_id, "{}: a new instance", a.key);
        assert_eq!(a.image_id.as_deref(), Some("ami-0fedcba9876543210"));
        assert_eq!(
            a.data_volume.as_ref().map(|v| &v.volume_id),
            b.data_volume.as_ref().map(|v| &v.volume_id),
            "{}: the same volume",
            a.key
        );
        assert_eq!(a.dns_names, b.dns_names);
        let in_sync = events.iter().position(|(_, e)| {
            matches!(e, Event::Gate { node, verdict: reconciler::health::Verdict::InSync { .. }, .. } if *node == a.key)
        });
        let handed = events.iter().position(|(_, e)| {
            matches!(e, Event::StepStarted { node: Some(node), action: reconciler::plan::Action::HandOver { .. }, .. } if *node == a.key)
        });
        assert!(
            in_sync.is_some() && handed.is_some() && in_sync < handed,
            "{}: in sync at event {in_sync:?}, handed over at {handed:?}",
            a.key
        );
    }
    // Converged: nothing left to do.
    assert!(rig.plan().await.is_empty());
}

/// Apply `rig`'s plan with `coin`'s first replacement made never to sync (`NeverSyncs`, from
/// the moment the replacement exists): returns that node and the coin's failure.
async fn fail_first_replacement(rig: &Rig, coin: &str) -> (NodeKey, reconciler::events::Failure) {
    let p = rig.plan().await;
    let first = p.coin(coin).unwrap().waves[0].steps[0]
        .node
        .clone()
        .unwrap();
    let old = fleet_tests::observe(&rig.sim, &rig.desired)
        .await
        .node(&first)
        .unwrap()
        .instance_id
        .clone();
    let trouble = async {
        loop {
            let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
            if o.orphans
                .iter()
                .any(|x| matches!(x, Orphan::Replacement { of, .. } if *of == old))
            {
                rig.sim.inject(SimFault::NeverSyncs { key: first.clone() });
                return;
            }
            rig.clock.sleep(1_000).await;
        }
    };
    let (report, _, ()) = rig.apply_during(trouble).await;
    let c = report.coins.iter().find(|c| c.coin == coin).unwrap();
    let CoinOutcome::Failed { failure, .. } = &c.outcome else {
        panic!("{:?}", c.outcome)
    };
    (first, failure.clone())
}

#[tokio::test(start_paused = true)]
async fn a_replacement_resumed_after_a_version_bump_is_gated_at_the_version_it_runs() {
    // ethereum's first replacement fails its gate; then the repository bumps ethereum. The
    // resumed replacement still runs the version it was launched with: its gate must not
    // call that a wrong image (it would fail on every pass, the node down for good). It is
    // handed over, and the next plan upgrades it like any node.
    let rig = Rig::new_ami("ami-0fedcba9876543210");
    let (first, _) = fail_first_replacement(&rig, "ethereum").await;
    rig.sim.clear_faults();
    let mut bumped = (*rig.desired).clone();
    let eth = bumped.coins.get_mut("ethereum").unwrap();
    let was = eth.version.clone();
    eth.version = Version::parse("1.15.0").unwrap();
    let rig = rig.towards(bumped);
    let (report, _) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let n = o.node(&first).unwrap();
    assert!(o.orphans.is_empty(), "{:#?}", o.orphans);
    assert_eq!(n.version.known(), Some(&was), "{n:#?}");
    let p = rig.plan().await;
    let steps: Vec<(&str, Option<&NodeKey>)> = p
        .coin("ethereum")
        .unwrap()
        .waves
        .iter()
        .flat_map(|w| &w.steps)
        .map(|s| (s.action.name(), s.node.as_ref()))
        .collect();
    assert_eq!(steps, [("upgrade", Some(&first))], "{p:#?}");
}

#[tokio::test(start_paused = true)]
async fn one_failed_replacement_does_not_keep_its_neighbour_from_taking_its_name() {
    // monero replaces two nodes a wave (max_unavailable 2). The first one's replacement never
    // catches up; the second's does. The second takes its name and its old instance goes,
    // rather than leave its name on a stopped instance because of the first; the first keeps
    // its old instance and name; the coin fails on the first, before the next zone.
    // (Blocks every 12 s, not monero's 2 min: a replacement that never syncs is then behind
    // from its first reading, as the chain moves on during its boot.)
    let mut config = SimConfig::default();
    config.chains.insert(
        "monero".into(),
        ChainParams {
            block_ms: 12_000,
            ..ChainParams::for_coin("monero")
        },
    );
    let rig = Rig::new_ami_in(config, "ami-0fedcba9876543210");
    let before = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let p = rig.plan().await;
    let wave = &p.coin("monero").unwrap().waves[0];
    let pair: Vec<NodeKey> = wave.disrupted().into_iter().cloned().collect();
    assert_eq!(pair.len(), 2, "{wave:#?}");
    let (first, failure) = fail_first_replacement(&rig, "monero").await;
    assert_eq!(first, pair[0]);
    assert_eq!(failure.node(), Some(&first), "{failure}");
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let (old_first, old_second) = (
        before.node(&pair[0]).unwrap(),
        before.node(&pair[1]).unwrap(),
    );
    let kept = o.node(&pair[0]).unwrap();
    assert_eq!(kept.instance_id, old_first.instance_id);
    assert_eq!(kept.state, InstanceState::Stopped);
    assert_eq!(kept.dns_names, old_first.dns_names);
    let second = o.node(&pair[1]).unwrap();
    assert_ne!(
        second.instance_id, old_second.instance_id,
        "the neighbour was handed over"
    );
    assert_eq!(second.dns_names, old_second.dns_names);
    assert_eq!(second.image_id.as_deref(), Some("ami-0fedcba9876543210"));
    assert!(
        o.orphans
            .iter()
            .all(|x| matches!(x, Orphan::Replacement { of, .. } if *of == old_first.instance_id)),
        "only the first's replacement is left: {:#?}",
        o.orphans
    );
    let handed: Vec<NodeKey> = rig
        .rec
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::StepStarted {
                node: Some(node),
                action: reconciler::plan::Action::HandOver { .. },
                ..
            } if node.coin == "monero" => Some(node),
            _ => None,
        })
        .collect();
    assert_eq!(handed, [pair[1].clone()], "one hand-over, the neighbour's");
    for n in before
        .nodes
        .iter()
        .filter(|n| n.key.coin == "monero" && !pair.contains(&n.key))
    {
        assert_eq!(
            o.node(&n.key).map(|x| &x.instance_id),
            Some(&n.instance_id),
            "{} untouched",
            n.key
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_replacement_step_that_fails_does_not_keep_its_neighbour_from_its_gate_and_name() {
    // monero replaces two nodes a wave. The second one's replacement step fails (its set-up
    // over SSM fails); the first one's went through: it is still gated and handed over,
    // rather than left down with its name on a stopped instance, and the coin fails on the
    // second one's step.
    let rig = Rig::new_ami("ami-0fedcba9876543210");
    let before = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let p = rig.plan().await;
    let pair: Vec<NodeKey> = p.coin("monero").unwrap().waves[0]
        .disrupted()
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(pair.len(), 2);
    rig.sim.inject(SimFault::FailCommand {
        key: Some(pair[1].clone()),
        times: 1,
        stderr: "bootstrap: cannot reach the registry".into(),
    });
    let (report, worst) = rig.apply().await;
    assert!(worst["monero"] <= 2, "{worst:?}");
    let c = report.coins.iter().find(|c| c.coin == "monero").unwrap();
    let CoinOutcome::Failed { failure, .. } = &c.outcome else {
        panic!("{:?}", c.outcome)
    };
    assert!(
        matches!(failure, reconciler::events::Failure::Step { node: Some(n), action, .. } if *n == pair[1] && action == "replace"),
        "{failure:?}"
    );
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let first = o.node(&pair[0]).unwrap();
    let was = before.node(&pair[0]).unwrap();
    assert_ne!(first.instance_id, was.instance_id, "handed over");
    assert_eq!(first.dns_names, was.dns_names);
    assert_eq!(first.image_id.as_deref(), Some("ami-0fedcba9876543210"));
    let second = o.node(&pair[1]).unwrap();
    let was = before.node(&pair[1]).unwrap();
    assert_eq!(
        second.instance_id, was.instance_id,
        "kept, to resume or undo"
    );
    assert_eq!(second.dns_names, was.dns_names);
}

#[tokio::test(start_paused = true)]
async fn a_replacement_the_repository_takes_back_is_undone_and_the_old_instance_runs_again() {
    // ethereum's first replacement fails its gate; fleet.yaml then names the old AMI again.
    // The next apply does not finish the replacement towards an AMI nobody wants: the volume
    // goes back to the old instance, which starts and is gated in sync, the replacement is
    // terminated, and the name never moved. Nothing is left to do.
    let rig = Rig::new_ami("ami-0fedcba9876543210");
    let before = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let (first, _) = fail_first_replacement(&rig, "ethereum").await;
    rig.sim.clear_faults();
    let rig = rig.towards(desired_of(&example_tree()));
    let p = rig.plan().await;
    let steps: Vec<&str> = p
        .coin("ethereum")
        .unwrap()
        .waves
        .iter()
        .flat_map(|w| &w.steps)
        .map(|s| s.action.name())
        .collect();
    assert_eq!(steps, ["undo-replace"], "{p:#?}");
    let mark = rig.rec.events().len();
    let (report, worst) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    assert!(worst["ethereum"] <= 1, "{worst:?}");
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let old = before.node(&first).unwrap();
    let n = o.node(&first).unwrap();
    assert_eq!(n.instance_id, old.instance_id, "the old instance again");
    assert_eq!(n.state, InstanceState::Running);
    assert_eq!(n.pending, None);
    assert_eq!(
        n.data_volume.as_ref().map(|v| &v.volume_id),
        old.data_volume.as_ref().map(|v| &v.volume_id)
    );
    assert_eq!(n.dns_names, old.dns_names);
    assert!(o.orphans.is_empty(), "{:#?}", o.orphans);
    let gated = rig.rec.events()[mark..].iter().any(|(_, e)| {
        matches!(e, Event::Gate { node, verdict: reconciler::health::Verdict::InSync { .. }, .. } if *node == first)
    });
    assert!(gated, "the old instance was gated back in sync");
    assert!(rig.plan().await.is_empty(), "converged");
}

#[tokio::test(start_paused = true)]
async fn a_replacement_that_does_not_sync_keeps_the_old_instance_and_the_name() {
    // ethereum's first replacement never catches up (blocks come every 12 s, so it is behind
    // once it has booted and started): its gate fails, the name still points
    // at the old instance, which is stopped but kept (with its root volume), and no other
    // node of the coin is touched. Once the trouble is gone the next apply resumes the
    // replacement: its gate passes, the name moves, the old instance goes.
    let rig = Rig::new_ami("ami-0fedcba9876543210");
    let before = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let (first, failure) = fail_first_replacement(&rig, "ethereum").await;
    let old = before.node(&first).unwrap().clone();
    assert_eq!(failure.node(), Some(&first), "{failure}");
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let kept = o.node(&first).unwrap();
    assert_eq!(
        kept.instance_id, old.instance_id,
        "the old instance keeps the slot"
    );
    assert_eq!(kept.state, InstanceState::Stopped);
    assert_eq!(kept.dns_names, old.dns_names, "the name was not moved");
    let new = o
        .orphans
        .iter()
        .find_map(|x| match x {
            Orphan::Replacement { of, node } if *of == old.instance_id => Some(node.clone()),
            _ => None,
        })
        .expect("the replacement is there");
    assert_eq!(
        new.data_volume.as_ref().map(|v| &v.volume_id),
        old.data_volume.as_ref().map(|v| &v.volume_id)
    );
    assert!(new.dns_names.is_empty(), "{:?}", new.dns_names);
    for n in before
        .nodes
        .iter()
        .filter(|n| n.key.coin == "ethereum" && n.key != first)
    {
        assert_eq!(
            o.node(&n.key).map(|x| &x.instance_id),
            Some(&n.instance_id),
            "{} untouched",
            n.key
        );
    }

    rig.sim.clear_faults();
    let p = rig.plan().await;
    let steps: Vec<&str> = p.coin("ethereum").unwrap().waves[0]
        .steps
        .iter()
        .map(|s| s.action.name())
        .collect();
    assert_eq!(steps, ["replace", "hand-over"], "{p:#?}");
    let (report, _) = rig.apply().await;
    assert!(report.all_completed(), "{report:#?}");
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let n = o.node(&first).unwrap();
    assert_eq!(n.instance_id, new.instance_id);
    assert_eq!(n.dns_names, old.dns_names);
    assert!(o.orphans.is_empty(), "{:#?}", o.orphans);
}

#[tokio::test(start_paused = true)]
async fn an_image_that_runs_another_version_than_its_tag_holds_the_coin_at_its_first_node() {
    // litecoin's image tagged 0.21.4 really runs 0.21.3: once the first node is back in sync
    // its daemon says so, and the rollout stops there (planned again, it would restart the
    // coin's nodes on every pass, forever).
    let rig = Rig::new();
    rig.sim.inject(SimFault::ImageRuns {
        coin: "litecoin".into(),
        tag: "0.21.4".into(),
        runs: "0.21.3".into(),
    });
    let (report, _) = rig.apply().await;
    let ltc = report.coins.iter().find(|c| c.coin == "litecoin").unwrap();
    let CoinOutcome::Failed { failure, .. } = &ltc.outcome else {
        panic!("{:?}", ltc.outcome)
    };
    let first = NodeKey::of(&rig.desired.coins["litecoin"].nodes[0]);
    assert_eq!(failure.node(), Some(&first), "{failure}");
    assert!(
        failure
            .to_string()
            .contains("its daemon reports 0.21.3, not 0.21.4"),
        "{failure}"
    );
    assert_eq!(
        restarts(&rig.sim)["litecoin"].len(),
        1,
        "only the first node"
    );
    // Recorded on the node: the next plan, whatever revision or process makes it, refuses
    // the coin with the reason instead of restarting the node on the same image again.
    let prober: Arc<dyn reconciler::health::Prober> = Arc::new(SimProber(rig.sim.clone()));
    rig.clock.sleep(600_000).await;
    let (o, _) = reconciler::apply::view::observe_and_probe(&rig.sim, &prober, &rig.desired)
        .await
        .unwrap();
    let node = o.node(&first).unwrap();
    assert_eq!(
        node.tags.get("fleet:image-runs").map(String::as_str),
        Some("0.21.4@-=0.21.3")
    );
    let p = plan(&rig.desired, &o, rig.clock.now_ms());
    let cp = p.coin("litecoin").expect("litecoin is refused");
    assert!(
        cp.refusals.iter().any(|r| r.node.as_ref() == Some(&first)
            && r.reason.contains("the image of 0.21.4 runs 0.21.3")),
        "{cp:#?}"
    );
    // The other coins, whose images say what they are, completed.
    assert!(
        report
            .coins
            .iter()
            .filter(|c| c.coin != "litecoin")
            .all(|c| c.outcome == CoinOutcome::Completed),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_instance_fails_its_status_checks_is_replaced_when_the_watch_asks() {
    // The node watch asked (the journal's heal record) for node 1's instance, which fails
    // EC2's status checks, to be replaced: the plan replaces that node only, the executor
    // launches a new instance on another host that takes over the data volume, gates it
    // and hands the name over; the broken instance is gone, and the request with it.
    let base = desired_of(&example_tree());
    let rig = Rig::seeded(&base, base.clone());
    let key = NodeKey::parse("litecoin", "eu-central-1a", 1).unwrap();
    let broken = rig.sim.instance_of(&key).expect("node 1");
    rig.sim.inject(SimFault::FailsStatusChecks {
        key: key.clone(),
        system: true,
        instance_id: None,
    });
    let asked: std::collections::BTreeSet<String> = [broken.clone()].into();
    let before = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let mut o = before.clone();
    o.replace_requested = asked.clone();
    let p = plan(&rig.desired, &o, rig.clock.now_ms());
    assert_eq!(p.step_count(), 2, "a replace and a hand-over: {p:#?}");
    rig.approve_all(&p);
    let report = rig
        .executor()
        .apply(&rig.desired, &p, &CancellationToken::new())
        .await;
    assert!(report.all_completed(), "{report:#?}");
    let after = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let (b, a) = (before.node(&key).unwrap(), after.node(&key).unwrap());
    assert_ne!(a.instance_id, broken, "a new instance");
    assert_eq!(
        a.data_volume.as_ref().map(|v| &v.volume_id),
        b.data_volume.as_ref().map(|v| &v.volume_id),
        "the same chain"
    );
    assert_eq!(a.dns_names, b.dns_names);
    assert!(after.orphans.is_empty(), "{:#?}", after.orphans);
    let checks = rig.sim.status_checks().await.unwrap();
    assert!(!checks[&a.instance_id].failing(), "the new host is healthy");
    assert!(!checks.contains_key(&broken), "the broken instance is gone");
    // The request stays in the journal, but asks nothing of an instance that is gone.
    let mut again = after.clone();
    again.replace_requested = asked;
    assert!(plan(&rig.desired, &again, rig.clock.now_ms()).is_empty());
}

/// The example fleet seeded at older versions, ethereum's rollout policy `on_failure:
/// <policy>`, and its new version a bad release (no daemon at it gets past its start).
fn bad_release_rig(policy: OnFailure) -> (Rig, Version, Version) {
    let mut desired = desired_of(&example_tree());
    let eth = desired.coins.get_mut("ethereum").unwrap();
    eth.rollout.on_failure = policy;
    let new = eth.version.clone();
    let rig = Rig::of(desired);
    rig.sim.inject(SimFault::BadRelease {
        coin: "ethereum".into(),
        version: new.to_string(),
    });
    (rig, new, older()["ethereum"].clone())
}

#[tokio::test(start_paused = true)]
async fn rollback_restarts_the_failed_node_at_its_previous_version_and_gates_it() {
    let (rig, new, old) = bad_release_rig(OnFailure::Rollback);
    let (report, worst) = rig.apply().await;
    let eth = report.coins.iter().find(|c| c.coin == "ethereum").unwrap();
    let CoinOutcome::Failed {
        failure,
        rollback: Some(rollback),
    } = &eth.outcome
    else {
        panic!("{:?}", eth.outcome)
    };
    // The gate failed on the first node of the first zone; it alone went back.
    let victim = failure.node().unwrap().clone();
    assert_eq!(victim.zone.as_str(), "eu-central-1a");
    assert!(failure.to_string().contains("stall_timeout"), "{failure}");
    assert_eq!(
        rollback.outcome,
        reconciler::events::RollbackOutcome::InSync,
        "{rollback}"
    );
    assert_eq!(rollback.nodes.len(), 1);
    assert_eq!(
        (
            &rollback.nodes[0].node,
            &rollback.nodes[0].from,
            &rollback.nodes[0].to
        ),
        (&victim, &new, &old)
    );
    // Its commands: the upgrade, then the rollback on the image it ran before; no other
    // node of the coin was touched, and never more than max_unavailable were down.
    let sent: Vec<String> = rig
        .sim
        .commands()
        .into_iter()
        .filter(|c| c.key.coin == "ethereum" && commands::upgrade_target(&c.command).is_some())
        .map(|c| format!("{} {}", c.key, c.command))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(
        sent[0].starts_with(&format!(
            "{victim} /usr/local/sbin/fleet-node upgrade '{new}' 'sha256:"
        )),
        "{sent:#?}"
    );
    assert_eq!(
        sent[1],
        format!("{victim} /usr/local/sbin/fleet-node rollback '{old}'")
    );
    assert!(
        worst["ethereum"] <= rig.desired.coins["ethereum"].rollout.max_unavailable as usize,
        "{worst:?}"
    );
    // It runs (and reports) the old version again and is in sync: the next plan would
    // upgrade it again, so the coin stays held at this revision (the loop's business).
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    assert_eq!(o.node(&victim).unwrap().version.known(), Some(&old));
    // Told after the failure, and journaled as a step.
    let events = rig.rec.events();
    let failed_at = events
        .iter()
        .position(|(_, e)| matches!(e, Event::RolloutFailed { coin, .. } if coin == "ethereum"))
        .unwrap();
    let rolled_at = events
        .iter()
        .position(|(_, e)| matches!(e, Event::RolledBack { coin, .. } if coin == "ethereum"))
        .unwrap();
    assert!(failed_at < rolled_at);
    assert!(
        rig.journal.records().iter().any(|r| matches!(r,
        Record::Step { node, action, .. } if *node == victim.to_string() && action == "roll-back"))
    );
    // The other coins rolled out as usual.
    assert!(
        report
            .coins
            .iter()
            .filter(|c| c.coin != "ethereum")
            .all(|c| c.outcome == CoinOutcome::Completed),
        "{:?}",
        report.coins
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_does_not_sync_either_is_left_for_a_person() {
    let (rig, _, old) = bad_release_rig(OnFailure::Rollback);
    // The previous version is no cure: the node's chain is stuck whatever it runs.
    rig.sim.inject(SimFault::BadRelease {
        coin: "ethereum".into(),
        version: old.to_string(),
    });
    let (report, _) = rig.apply().await;
    let eth = report.coins.iter().find(|c| c.coin == "ethereum").unwrap();
    let CoinOutcome::Failed {
        rollback: Some(rollback),
        ..
    } = &eth.outcome
    else {
        panic!("{:?}", eth.outcome)
    };
    let reconciler::events::RollbackOutcome::Failed { failure } = &rollback.outcome else {
        panic!("{rollback}")
    };
    assert_eq!(failure.node(), Some(&rollback.nodes[0].node));
    assert!(
        rollback.to_string().contains("left for a person"),
        "{rollback}"
    );
    // One upgrade, one rollback: fleet tries nothing more on its own.
    let sent = rig
        .sim
        .commands()
        .into_iter()
        .filter(|c| c.key.coin == "ethereum" && commands::upgrade_target(&c.command).is_some())
        .count();
    assert_eq!(sent, 2);
}

/// A bad release that also rewrites the database on its first start: rolled back in place,
/// the old version cannot read what the new one wrote and the rollback fails too; with
/// `on_failure: restore` the node's data volume is first put back from its before-upgrade
/// snapshot (a new volume from it, attached in place of the one the failed version wrote),
/// and the old version syncs from the snapshot's height.
#[tokio::test(start_paused = true)]
async fn a_restoring_rollback_puts_the_data_back_when_the_release_changed_the_database() {
    let changes = |rig: &Rig, new: &Version| {
        rig.sim.inject(SimFault::ChangesDatabase {
            coin: "ethereum".into(),
            version: new.to_string(),
        })
    };
    let rollback_of = |report: &reconciler::apply::ApplyReport| {
        let eth = report.coins.iter().find(|c| c.coin == "ethereum").unwrap();
        let CoinOutcome::Failed {
            rollback: Some(rollback),
            ..
        } = &eth.outcome
        else {
            panic!("{:?}", eth.outcome)
        };
        (**rollback).clone()
    };

    // In place: the old daemon exits at start on the new database.
    let (rig, new, _) = bad_release_rig(OnFailure::Rollback);
    changes(&rig, &new);
    let (report, _) = rig.apply().await;
    let rb = rollback_of(&report);
    let reconciler::events::RollbackOutcome::Failed { failure } = &rb.outcome else {
        panic!("{rb}")
    };
    assert!(!rb.nodes[0].restored);
    assert!(failure.to_string().contains("newer than"), "{failure}");

    // Restoring: back in sync at the old version, on a volume made from the snapshot.
    let (rig, new, old) = bad_release_rig(OnFailure::Restore);
    changes(&rig, &new);
    let before = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let (report, worst) = rig.apply().await;
    let rb = rollback_of(&report);
    assert_eq!(
        rb.outcome,
        reconciler::events::RollbackOutcome::InSync,
        "{rb}"
    );
    assert_eq!(rb.nodes.len(), 1);
    let victim = rb.nodes[0].node.clone();
    assert!(rb.nodes[0].restored);
    assert!(
        rb.to_string().contains("on its before-upgrade snapshot"),
        "{rb}"
    );
    let after = fleet_tests::observe(&rig.sim, &rig.desired).await;
    let (b, a) = (before.node(&victim).unwrap(), after.node(&victim).unwrap());
    assert_eq!(a.version.known(), Some(&old));
    assert_eq!(a.instance_id, b.instance_id, "restored in place");
    let vol = a.data_volume.as_ref().unwrap();
    assert_ne!(
        Some(&vol.volume_id),
        b.data_volume.as_ref().map(|v| &v.volume_id),
        "a new volume"
    );
    let snap = after
        .snapshots
        .iter()
        .find(|s| s.reason == format!("before-upgrade:{new}") && s.zone == victim.zone.as_str())
        .expect("the before-upgrade snapshot");
    assert_eq!(vol.snapshot_id.as_deref(), Some(snap.snapshot_id.as_str()));
    // The other nodes of the coin were never touched: the rollout stopped at the first.
    for n in before.nodes_of(&rig.desired.coins["ethereum"].name) {
        if n.key != victim {
            let now = after.node(&n.key).unwrap();
            assert_eq!(now.data_volume, n.data_volume, "{}", n.key);
        }
    }
    assert!(
        worst["ethereum"] <= rig.desired.coins["ethereum"].rollout.max_unavailable as usize,
        "{worst:?}"
    );
    assert!(
        rig.journal.records().iter().any(|r| matches!(r,
        Record::Step { node, action, .. } if *node == victim.to_string() && action == "roll-back"))
    );
}

#[tokio::test(start_paused = true)]
async fn on_failure_hold_leaves_the_failed_node_at_the_new_version() {
    let (rig, new, _) = bad_release_rig(OnFailure::Hold);
    let (report, _) = rig.apply().await;
    let eth = report.coins.iter().find(|c| c.coin == "ethereum").unwrap();
    let CoinOutcome::Failed {
        failure,
        rollback: None,
    } = &eth.outcome
    else {
        panic!("{:?}", eth.outcome)
    };
    let o = fleet_tests::observe(&rig.sim, &rig.desired).await;
    assert_eq!(
        o.node(failure.node().unwrap()).unwrap().version.known(),
        Some(&new)
    );
    assert!(
        !rig.rec
            .events()
            .iter()
            .any(|(_, e)| matches!(e, Event::RolledBack { .. }))
    );
}
