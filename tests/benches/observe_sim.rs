//! Benchmark: observing a simulated fleet of 10,000 nodes (target: well under 100 ms).
//! Prints figures; asserts nothing about time.
//!
//!     cargo bench -p fleet-tests --bench observe_sim            # optimised
//!     cargo bench -p fleet-tests --bench observe_sim --profile dev

use fleet_repo_schema::desired::node_slots;
use fleet_tests::world::{desired_of, example_tree};
use reconciler::clock::ManualClock;
use reconciler::provider::sim::{SimConfig, SimProvider};
use reconciler::provider::{Provider, Scope};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The example fleet's 6 coins, cloned to 34 coins of 3 zones x 100 nodes = 10,200 nodes.
    let base = desired_of(&example_tree());
    let mut d = base.clone();
    d.coins.clear();
    let template = &base.coins["bitcoin"];
    for i in 0..34 {
        let mut c = template.clone();
        c.name = fleet_repo_schema::values::CoinName::parse(&format!("coin{i:02}")).unwrap();
        c.nodes_per_zone = 100;
        c.nodes = node_slots(&c.name, &c.zones, 100, &d.fleet.internal_domain);
        d.coins.insert(c.name.to_string(), c);
    }
    let n: usize = d.coins.values().map(|c| c.nodes.len()).sum();
    let clock = ManualClock::new(1_700_000_000_000);
    let sim = SimProvider::new(Arc::new(clock), SimConfig::default());
    let t = Instant::now();
    sim.seed(&d, &BTreeMap::new()).unwrap();
    let seeded = t.elapsed();
    let mut times = Vec::new();
    let mut calls = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let o = rt.block_on(sim.observe(&Scope::of(&d.fleet))).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(o.instances.len(), n);
        calls = o.api_calls;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "sim observe, {n} nodes: p50 {:.1} ms, min {:.1} ms, max {:.1} ms over {} runs; {calls} simulated calls; seeding took {:.0} ms",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len(),
        seeded.as_secs_f64() * 1e3
    );
}
