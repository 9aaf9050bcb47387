//! Benchmark: planning a fleet of 1,000 coins × 10 nodes (2 zones × 5) where every node is
//! one version behind and a quarter of the coins' volumes must grow. Targets: a plan in
//! under 20 ms, under 50 MB of heap at its peak. Prints figures; asserts nothing about time.
//!
//!     cargo bench -p fleet-tests --bench plan_scale            # optimised
//!     cargo bench -p fleet-tests --bench plan_scale --profile dev
//!
//! Memory is counted by a global allocator wrapping the system one, switched on around one
//! `plan()` call: the net bytes allocated since the switch (allocations minus frees) and
//! the highest that reached, i.e. the call's peak heap use; what is still allocated when it
//! returns is the plan itself. The timed runs have counting off (one relaxed load per call).

use fleet_repo_schema::values::Version;
use fleet_tests::repo::{CoinSpec, desired_of_specs};
use reconciler::clock::ManualClock;
use reconciler::plan::{Observed, plan};
use reconciler::provider::sim::{SimConfig, SimProvider};
use reconciler::provider::{Provider, Scope};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::Instant;

/// The system allocator, counting net bytes allocated and their high-water mark while on.
struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

impl Counting {
    fn grew(by: usize) {
        if ON.load(Ordering::Relaxed) {
            let by = by as isize;
            let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
    }
    fn shrank(by: usize) {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_sub(by as isize, Ordering::Relaxed);
        }
    }
    /// Count from zero from now on.
    fn start() {
        LIVE.store(0, Ordering::Relaxed);
        PEAK.store(0, Ordering::Relaxed);
        ON.store(true, Ordering::Relaxed);
    }
    /// Stop; (peak, net now) in bytes since [`Counting::start`].
    fn stop() -> (isize, isize) {
        ON.store(false, Ordering::Relaxed);
        (PEAK.load(Ordering::Relaxed), LIVE.load(Ordering::Relaxed))
    }
}

// The only unsafe code of the workspace (the test crate denies it rather than forbidding it
// for this): GlobalAlloc is an unsafe trait. Every call is passed to System unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (so by System) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        Counting::shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and `new_size` is the caller's valid size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                Counting::grew(new_size - layout.size());
            } else {
                Counting::shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const COINS: usize = 1000;
const RUNS: usize = 50;
const MB: f64 = 1024.0 * 1024.0;

fn coin(i: usize, version: &str, volume_gb: u32) -> CoinSpec {
    CoinSpec {
        name: format!("coin{i:04}"),
        version: version.into(),
        instance_type: "c5.xlarge".into(),
        data_volume_gb: volume_gb,
        zones: vec!["eu-central-1a".into(), "eu-central-1b".into()],
        nodes_per_zone: 5,
        max_unavailable: 2,
        approval: "major".into(),
        bake: "10m".into(),
        before_upgrade: true,
        restore_new_nodes: true,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = Instant::now();
    let desired = desired_of_specs(
        &(0..COINS)
            .map(|i| coin(i, "2.1.0", 500))
            .collect::<Vec<_>>(),
    );
    // The world: one version behind everywhere; every fourth coin's volumes 100 GB short.
    let world = desired_of_specs(
        &(0..COINS)
            .map(|i| coin(i, "2.0.0", if i % 4 == 0 { 400 } else { 500 }))
            .collect::<Vec<_>>(),
    );
    let sim = SimProvider::new(
        Arc::new(ManualClock::new(1_700_000_000_000)),
        SimConfig::default(),
    );
    let versions: BTreeMap<String, Version> = BTreeMap::new();
    sim.seed(&world, &versions).unwrap();
    let observation = rt
        .block_on(sim.observe(&Scope::of(&desired.fleet)))
        .unwrap();
    let observed = Observed::assign(&desired, observation.clone());
    let nodes = observed.nodes.len();
    assert_eq!(nodes, COINS * 10);
    println!(
        "plan_scale: {COINS} coins, {nodes} nodes, every node one version behind, {} volumes to grow (setup {:.1} s)",
        COINS / 4 * 10,
        t.elapsed().as_secs_f64()
    );

    // Memory of one call.
    Counting::start();
    let p = plan(&desired, &observed, 0);
    let (peak, kept) = Counting::stop();
    assert_eq!(p.step_count(), nodes + COINS / 4 * 10);
    assert_eq!(p.coins.len(), COINS);
    let steps = p.step_count();
    drop(p);

    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let p = plan(&desired, &observed, 0);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&p);
    }
    times.sort_by(f64::total_cmp);
    let (min, p50, max) = (times[0], times[RUNS / 2], times[RUNS - 1]);
    println!(
        "plan(): min {min:.2} ms, p50 {p50:.2} ms, max {max:.2} ms over {RUNS} runs ({steps} steps)"
    );
    // Sorting the observation into slots comes first in every pass; timed on its own.
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let o = observation.clone();
        let t = Instant::now();
        let a = Observed::assign(&desired, o);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&a);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "Observed::assign(): min {:.2} ms, p50 {:.2} ms over {RUNS} runs ({nodes} instances)",
        times[0],
        times[RUNS / 2]
    );
    println!(
        "plan(): heap peak {:.1} MB during one call; the plan itself holds {:.1} MB",
        peak as f64 / MB,
        kept as f64 / MB
    );
    println!(
        "targets: time p50 < 20 ms {}; peak heap < 50 MB {}",
        if p50 < 20.0 { "met" } else { "MISSED" },
        if (peak as f64) < 50.0 * MB {
            "met"
        } else {
            "MISSED"
        }
    );
}
