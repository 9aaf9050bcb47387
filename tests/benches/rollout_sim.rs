//! Simulated rollout of 25 coins × 3 zones: how close is the whole rollout's makespan to its
//! critical path (the sum of the slowest coin's gate and bake waits)? Target: within 2 %.
//!
//! Runs on tokio's paused time, so simulated hours take seconds and every wait is exact; what
//! is measured is the executor's own overhead: serialisation between coins, polling
//! granularity, steps. Prints the figures; asserts nothing.
//!
//! `cargo bench -p fleet-tests --bench rollout_sim` (add `--profile dev` to skip the release build).

use fleet_repo_schema::MemTree;
use fleet_tests::world::{desired_of, example_tree};
use reconciler::apply::{ExecOptions, Executor, NoNotifier, approval_version};
use reconciler::clock::{Clock, TokioClock};
use reconciler::health::SimProber;
use reconciler::observe::Provider;
use reconciler::observe::sim::{SimConfig, SimProvider};
use reconciler::plan::plan;
use reconciler::store::{Decision, Journal, Record};
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
    let start = reconciler::observe::sim::ChainParams::for_coin(coin).start_delay_ms;
    c.zones.len() as u64 * (start + c.rollout.bake.0.as_millis() as u64)
}

fn run(parallel: usize) -> (u64, u64, String, usize, u64) {
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
        let o = sim.observe(&desired).await.unwrap();
        let p = plan(&desired, &o, clock.now_ms());
        let journal = Arc::new(Journal::in_memory());
        for cp in p.coins.iter().filter(|c| c.approval.is_some()) {
            journal
                .append(Record::Approval {
                    coin: cp.coin.clone(),
                    version: approval_version(cp),
                    commit: "bench".into(),
                    decision: Decision::Approved,
                    by: "bench".into(),
                    at_ms: 0,
                })
                .unwrap();
        }
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
        let report = exec.apply(&desired, &p, &CancellationToken::new()).await;
        assert!(report.all_completed(), "{report:#?}");
        let makespan = report.finished_ms - report.started_ms;
        let slowest = report.coins.iter().max_by_key(|c| c.gate_wait_ms).unwrap();
        (
            makespan,
            slowest.gate_wait_ms,
            slowest.coin.clone(),
            p.step_count(),
            ideal_ms(&slowest.coin, &desired),
        )
    })
}

fn main() {
    println!("simulated rollout: {COINS} coins × 3 zones, one patch release behind, poll 5 s");
    for parallel in [COINS, 8] {
        let real = std::time::Instant::now();
        let (makespan, critical, coin, steps, ideal) = run(parallel);
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
    }
}
