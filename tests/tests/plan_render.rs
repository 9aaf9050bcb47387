//! What `fleet plan` shows, as reviewed snapshots: the demo's plan (the example fleet one
//! release behind), a bootstrap (the example against an empty world), a mixed plan (a volume
//! to grow, an instance type to change, a zone to retire, a stray DNS record, a volume that
//! would have to shrink, a stopped node to bring back up), and `fleet plan --format json` with its `--detailed-exitcode` codes.
//!
//! Snapshots live in `tests/snapshots/plan-*`. To accept an intended change, rerun with
//! `FLEET_UPDATE_SNAPSHOTS=1` and review the diff like code.

use fleet_repo_schema::values::{InstanceType, Version};
use fleet_repo_schema::{Desired, MemTree, load};
use fleet_tests::check_snapshot;
use fleet_tests::{fleet, workspace_root};
use reconciler::clock::ManualClock;
use reconciler::demo::{EXAMPLE_FILES, example_desired, older_versions};
use reconciler::node::NodeKey;
use reconciler::plan::{Plan, plan};
use reconciler::provider::sim::{SimConfig, SimFault, SimProvider};
use reconciler::provider::{LaunchSpec, Provider};
use reconciler::render::{Style, plan_human};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;
const PLAIN: Style = Style { color: false };

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn plan_of(d: &Desired, sim: &SimProvider) -> Plan {
    let o = block_on(fleet_tests::observe(sim, d));
    plan(d, &o, sim.clock().now_ms())
}

fn sim() -> SimProvider {
    SimProvider::new(Arc::new(ManualClock::new(T0)), SimConfig::default())
}

/// The example repository with `edits` (file, from, to) made to its text.
fn example_with(edits: &[(&str, &str, &str)]) -> Desired {
    let mut t = MemTree::new();
    for (path, text) in EXAMPLE_FILES {
        let mut text = text.to_string();
        for (file, from, to) in edits.iter().filter(|(f, _, _)| f == path) {
            assert!(text.contains(from), "{file} has no {from:?}");
            text = text.replace(from, to);
        }
        t.insert(path, text);
    }
    let loaded = load(&t);
    loaded
        .desired
        .unwrap_or_else(|| panic!("{:#?}", loaded.diagnostics))
}

#[test]
fn the_demo_plan() {
    let d = example_desired().unwrap();
    let s = sim();
    s.seed(&d, &older_versions()).unwrap();
    let p = plan_of(&d, &s);
    assert_eq!(p.coins.len(), 6, "every coin is one release behind");
    check_snapshot("plan-demo.txt", &plan_human(&p, &d, PLAIN));
}

#[test]
fn a_bootstrap_plan_launches_every_node() {
    let d = example_desired().unwrap();
    let p = plan_of(&d, &sim());
    // A launch per node, and each coin's own security group made first.
    assert_eq!(p.step_count(), d.nodes().count() + d.coins.len());
    check_snapshot("plan-bootstrap.txt", &plan_human(&p, &d, PLAIN));
}

#[test]
fn a_mixed_plan() {
    // The world: the example fleet at the repository's versions, then
    let world = example_desired().unwrap();
    let s = sim();
    s.seed(&world, &BTreeMap::new()).unwrap();
    // one monero volume grown by hand past the repository's 400 GB,
    let o = block_on(fleet_tests::observe(&s, &world));
    let monero1 = o
        .node(&NodeKey::of(&world.coins["monero"].nodes[0]))
        .unwrap();
    block_on(s.grow_volume(&monero1.node_ref(), 500)).unwrap();
    // and a third dogecoin node, launched and then terminated outside fleet, whose record
    // `node3.dogecoin.internal` was left behind pointing nowhere.
    let doge = &world.coins["dogecoin"];
    let mut extra = doge.nodes[1].clone();
    extra.index = 2;
    extra.ordinal = 3;
    extra.dns_name = "node3.dogecoin.internal".into();
    let spec = LaunchSpec::new(&world.fleet, doge, &extra, None).unwrap();
    let (id, _) = block_on(s.launch(&spec)).unwrap();
    let node = reconciler::provider::NodeRef {
        key: NodeKey::of(&extra),
        instance_id: id,
    };
    block_on(s.retire(&node, world.fleet.hosted_zone_id.as_str(), &[])).unwrap();
    // And iota's node in eu-central-1b is stopped: a change of type was cut off after
    // StopInstances. It is brought back up first (a repair wave), before any zone's rollout.
    let iota2 = o.node(&NodeKey::of(&world.coins["iota"].nodes[1])).unwrap();
    s.inject(SimFault::FailOp {
        op: "ModifyInstanceAttribute".into(),
        times: 1,
    });
    let cut = block_on(s.change_instance_type(
        &iota2.node_ref(),
        &InstanceType::parse("c5.4xlarge").unwrap(),
    ));
    assert!(cut.is_err());

    // The repository: bitcoin's volume grows, ethereum moves to a larger type, litecoin
    // leaves eu-central-1b.
    let d = example_with(&[
        (
            "coins/bitcoin.yaml",
            "data_volume_gb: 1000",
            "data_volume_gb: 1200",
        ),
        (
            "coins/ethereum.yaml",
            "type: m6i.2xlarge",
            "type: m6i.4xlarge",
        ),
        (
            "coins/litecoin.yaml",
            "zones: [eu-central-1a, eu-central-1b]",
            "zones: [eu-central-1a]",
        ),
    ]);
    let p = plan_of(&d, &s);
    let names: Vec<&str> = p.coins.iter().map(|c| c.coin.as_str()).collect();
    assert_eq!(
        names,
        [
            "bitcoin", "dogecoin", "ethereum", "iota", "litecoin", "monero"
        ]
    );
    assert!(p.coin("litecoin").unwrap().approval.is_some());
    assert_eq!(p.coin("monero").unwrap().refusals.len(), 1);
    check_snapshot("plan-mixed.txt", &plan_human(&p, &d, PLAIN));
}

/// A state directory holding a simulated example fleet seeded at `versions`, with `grow`
/// (coin, GB) applied to every node of the coin afterwards.
fn state_dir(versions: &BTreeMap<String, Version>, grow: Option<(&str, u32)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = example_desired().unwrap();
    let s = SimProvider::open(
        dir.path(),
        Arc::new(ManualClock::new(T0)),
        SimConfig::default(),
    )
    .unwrap();
    s.seed(&d, versions).unwrap();
    if let Some((coin, gb)) = grow {
        let o = block_on(fleet_tests::observe(&s, &d));
        for n in o.nodes.iter().filter(|n| n.key.coin == coin) {
            block_on(s.grow_volume(&n.node_ref(), gb)).unwrap();
        }
    }
    dir
}

fn plan_cli(state: &Path, extra: &[&str]) -> fleet_tests::Output {
    let repo = workspace_root().join("examples/fleet");
    let mut args: Vec<String> = vec![
        "plan".into(),
        "--repo".into(),
        repo.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
        "--provider".into(),
        "sim".into(),
        "--color".into(),
        "never".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    fleet(&args)
}

#[test]
fn plan_json_and_detailed_exit_codes() {
    // Changes: the demo's world. JSON output is stable but for the time it was made.
    let behind = state_dir(&older_versions(), None);
    let out = plan_cli(behind.path(), &["--format", "json", "--detailed-exitcode"]);
    assert_eq!(out.code, 2, "changes: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["changes"], true);
    let at = v["plan"]["at_ms"].as_u64().unwrap();
    assert!(at > T0, "planned at the system clock's time");
    let key = format!("\"at_ms\": {at},");
    assert_eq!(out.stdout.matches(&key).count(), 1);
    check_snapshot("plan-demo.json", &out.stdout.replace(&key, "\"at_ms\": 0,"));
    // Without --detailed-exitcode, changes are a success.
    assert_eq!(plan_cli(behind.path(), &[]).code, 0);

    // No changes: 0, with and without the flag; the plan says so.
    let same = state_dir(&BTreeMap::new(), None);
    let out = plan_cli(same.path(), &["--detailed-exitcode"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("SIMULATED FLEET"), "{}", out.stdout);
    assert!(out.stdout.contains("\n\nNo changes."), "{}", out.stdout);
    let out = plan_cli(same.path(), &["--format", "json", "--detailed-exitcode"]);
    assert_eq!(out.code, 0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["changes"], false);
    assert_eq!(v["plan"]["coins"], serde_json::json!([]));

    // A refusal (every monero volume is larger than the repository's 400 GB): 1, with or
    // without the flag, even though other coins have changes too.
    let big = state_dir(&older_versions(), Some(("monero", 500)));
    for extra in [&["--detailed-exitcode"][..], &[]] {
        let out = plan_cli(big.path(), extra);
        assert_eq!(out.code, 1, "{extra:?}: {}", out.stdout);
        assert!(out.stdout.contains("refused:"), "{}", out.stdout);
    }
}
