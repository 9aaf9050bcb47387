//! Simulated rollout of 25 coins × 3 zones: how close is the whole rollout's makespan to its
//! critical path (the sum of the slowest coin's gate and bake waits)? Target: within 2 %.
//!
//! Runs on tokio's paused time, so simulated hours take seconds and every wait is exact; what
//! is measured is the executor's own overhead: serialisation between coins, polling
//! granularity, steps. Also what the rollout costs the account's API rate: every provider call,
//! counted by the simulator as the AWS provider's interceptor counts them, during the rollout
//! and while 25 coins wait on their `max_unavailable` budget at once. Prints the figures;
//! asserts nothing.
//!
//! `cargo bench -p fleet-tests --bench rollout_sim` (add `--profile dev` to skip the release build).

use fleet_repo_schema::MemTree;
use fleet_tests::world::{desired_of, example_tree};
use reconciler::apply::{ExecOptions, Executor};
use reconciler::clock::{Clock, TokioClock};
use reconciler::events::{Event, NoNotifier, RecordingNotifier};
use reconciler::node::NodeKey;
use reconciler::plan::plan;
use reconciler::provider::sim::{ChainParams, SimConfig, SimFault, SimProber, SimProvider};
use reconciler::store::Journal;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const COINS: usize = 25;

/// 25 coins over the example's three zones: bakes from 5 to 29 minutes, one or two nodes per
/// zone, `max_unavailable` 1 or 2, versions one patch behind.
fn fleet() -> (MemTree, BTreeMap<String, fleet_repo_schema::Version>) {
    let mut t = MemTree::new();
    let ex = example_tree();
    use fleet_repo_schema::FileTree;
    t.insert("fleet.yaml", ex.read("fleet.yaml", 1 << 20).unwrap());
    let mut old = BTreeMap::new();
    for i in 0..COINS {
        let name = format!("coin{i:02}");
        let per_zone = 1 + (i % 2);
        let yaml = format!(
            "coin: {name}\nversion: 1.{i}.1\ninstance: {{ type: m5.large, data_volume_gb: 100 }}\n\
             placement: {{ zones: [eu-central-1a, eu-central-1b, eu-central-1c], nodes_per_zone: {per_zone} }}\n\
             ports: {{ rpc: [8332], p2p: [8333] }}\nhealth: {{ probe: bitcoin }}\n\
             rollout: {{ max_unavailable: {}, bake: {}m, approval: none }}\n",
            1 + (i % 3 == 0) as usize,
            5 + i,
        );
        t.insert(&format!("coins/{name}.yaml"), yaml);
        old.insert(
            name,
            fleet_repo_schema::Version::parse(&format!("1.{i}.0")).unwrap(),
        );
    }
    (t, old)
}

/// The least a coin's rollout can take in the simulator: per zone, the daemon's restart delay
/// plus the bake (catching up the few blocks missed is near instant at 50 blocks/s).
fn ideal_ms(coin: &str, desired: &fleet_repo_schema::Desired) -> u64 {
    let c = &desired.coins[coin];
    let start = ChainParams::for_coin(coin).start_delay_ms;
    c.zones.len() as u64 * (start + c.rollout.bake.0.as_millis() as u64)
}

/// (makespan, slowest coin's waits, slowest coin, steps, its ideal, provider calls during the apply)
fn run(parallel: usize) -> (u64, u64, String, usize, u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let (tree, old) = fleet();
        let desired = Arc::new(desired_of(&tree));
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(1_700_000_000_000));
        let sim = SimProvider::new(Arc::clone(&clock), SimConfig::default());
        sim.seed(&desired, &old).unwrap();
        let o = fleet_tests::observe(&sim, &desired).await;
        let p = plan(&desired, &o, clock.now_ms());
        let journal = Arc::new(Journal::in_memory());
        fleet_tests::approve_all(&journal, &p, "bench", "bench");
        let exec = Arc::new(Executor {
            provider: Arc::new(sim.clone()),
            prober: Arc::new(SimProber(sim.clone())),
            journal,
            notifier: Arc::new(NoNotifier),
            clock: Arc::clone(&clock),
            opts: ExecOptions {
                parallel_coins: parallel,
                poll_ms: 5_000,
                commit: "bench".into(),
            },
        });
        let (calls_before, _) = sim.call_counts();
        let report = exec.apply(&desired, &p, &CancellationToken::new()).await;
        let (calls_after, _) = sim.call_counts();
        assert!(report.all_completed(), "{report:#?}");
        let makespan = report.finished_ms - report.started_ms;
        let slowest = report.coins.iter().max_by_key(|c| c.gate_wait_ms).unwrap();
        (
            makespan,
            slowest.gate_wait_ms,
            slowest.coin.to_string(),
            p.step_count(),
            ideal_ms(slowest.coin.as_str(), &desired),
            calls_after - calls_before,
        )
    })
}

/// 25 coins whose rollouts all wait on their budget: one node of each is out of sync (its
/// daemon stopped validating) for the first `sick_ms` of the apply, so no coin may take a
/// node down. Returns (coins that waited, provider calls during the wait, observations the
/// apply made).
fn run_waiting(sick_ms: u64) -> (usize, u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let (tree, old) = fleet();
        let desired = Arc::new(desired_of(&tree));
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(1_700_000_000_000));
        let sim = SimProvider::new(Arc::clone(&clock), SimConfig::default());
        sim.seed(&desired, &old).unwrap();
        for coin in desired.coins.values() {
            let slot = coin.nodes.last().unwrap();
            sim.inject(SimFault::NeverSyncs {
                key: NodeKey::of(slot),
            });
        }
        // Let the chains move on so the sick nodes are visibly behind.
        clock.sleep(600_000).await;
        let o = fleet_tests::observe(&sim, &desired).await;
        let p = plan(&desired, &o, clock.now_ms());
        let journal = Arc::new(Journal::in_memory());
        fleet_tests::approve_all(&journal, &p, "bench", "bench");
        let rec = Arc::new(RecordingNotifier::default());
        let exec = Arc::new(Executor {
            provider: Arc::new(sim.clone()),
            prober: Arc::new(SimProber(sim.clone())),
            journal,
            notifier: rec.clone(),
            clock: Arc::clone(&clock),
            opts: ExecOptions {
                parallel_coins: COINS,
                poll_ms: 5_000,
                commit: "bench".into(),
            },
        });
        let (before, _) = sim.call_counts();
        let cancel = CancellationToken::new();
        let during = async {
            clock.sleep(sick_ms).await;
            let calls = sim.call_counts().0 - before;
            cancel.cancel();
            calls
        };
        let (report, calls) = tokio::join!(exec.apply(&desired, &p, &cancel), during);
        let waited = rec
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::Waiting { .. }))
            .count();
        (waited, calls, report.observations)
    })
}

fn main() {
    let sick_ms = 600_000;
    let (waited, calls, observations) = run_waiting(sick_ms);
    let minutes = sick_ms as f64 / 60_000.0;
    println!(
        "waiting on the budget: {waited} of {COINS} coins wait {} simulated min with one node each out of sync: {calls} provider API calls ({:.1} per simulated minute), {observations} observations of the fleet ({:.1} per minute; the poll is 5 s)",
        sick_ms / 60_000,
        calls as f64 / minutes,
        observations as f64 / minutes
    );
    println!("simulated rollout: {COINS} coins × 3 zones, one patch release behind, poll 5 s");
    for parallel in [COINS, 8] {
        let real = std::time::Instant::now();
        let (makespan, critical, coin, steps, ideal, calls) = run(parallel);
        println!(
            "parallel_coins {parallel:>2}: {steps} steps; makespan {:.2} min, critical path {:.2} min ({coin}'s gate and bake waits): ratio {:.4} ({:+.2} %); {:.1} s real",
            makespan as f64 / 60_000.0,
            critical as f64 / 60_000.0,
            makespan as f64 / critical as f64,
            (makespan as f64 / critical as f64 - 1.0) * 100.0,
            real.elapsed().as_secs_f64()
        );
        println!(
            "    {coin}'s least possible (restart delays + bakes) {:.2} min: its waits exceed it by {:.1} s (polling granularity)",
            ideal as f64 / 60_000.0,
            (critical as f64 - ideal as f64) / 1000.0
        );
        // What the rollout costs the account's API rate: every provider call (observations,
        // steps), counted by the simulator exactly as the AWS provider's interceptor counts.
        println!(
            "    provider API calls during the rollout: {calls} ({:.1} per simulated minute)",
            calls as f64 / (makespan as f64 / 60_000.0)
        );
    }
}
