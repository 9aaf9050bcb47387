//! Property tests of the planner over random fleets and random worlds.
//!
//! A fleet is a list of coin specs (1 to 6 coins, 1 to 3 of the region's zones in a random
//! order, 1 to 3 nodes per zone, max_unavailable 1 to 3, versions from a small pool, a random
//! approval policy and data volume) written out as repository YAML and `load`ed, so every
//! `Desired` here is one the loader accepts. A world is the simulator seeded from a *different*
//! spec of the same coins (other versions, volumes smaller or equal, other instance types,
//! other zones and node counts, coins missing or added) and then disturbed through the
//! provider: nodes terminated (with or without their DNS record), records deleted, upgrades
//! and type changes cut off half way by an injected failure. A model kept alongside says what
//! each slot looks like, independently of `observe` and `plan`.
//!
//! Properties, in words:
//! - **Exactly what differs.** Every desired slot that differs from the repository gets
//!   exactly the steps for its differences (launch a missing node; grow a smaller volume;
//!   change a different or half-changed type, or start a stopped node; upgrade a different
//!   or unknown version, asking the node first when a cut-off upgrade aimed at the target;
//!   point a missing record). A slot that already matches gets no step. Nodes without a slot
//!   are retired; records naming no slot are deleted. Hence the plan is empty iff nothing
//!   differs (also checked directly: a world seeded from the desired fleet itself plans
//!   nothing, and one changed node plans exactly one step).
//! - **Zone order.** Within a coin, repair waves (bringing nodes that are down now back up:
//!   a start, or a type change finishing) come first, then rollout waves following
//!   `placement.zones` (zone index never decreases), retire waves after every rollout wave,
//!   DNS clean-up last; apart from its repair, a node's steps are all in one wave, of its
//!   own zone.
//! - **max_unavailable.** No rollout or retire wave takes down more than the coin's
//!   `max_unavailable` nodes.
//! - **Convergence.** Carrying the plan out with the real executor (approvals given) and
//!   planning again gives an empty plan.
//! - **Refusals.** A data_volume_gb smaller than a node's volume is refused for that node;
//!   the executor does nothing for that coin (outcome Refused, no step journaled, no command
//!   sent) and the volume keeps its size.

use fleet_repo_schema::semver::{Class, classify};
use fleet_repo_schema::values::{InstanceType, Version};
use fleet_repo_schema::{Approval, Desired};
use fleet_tests::repo::{CoinSpec, HOSTED_ZONE, SUBNETS, desired_of_specs};
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use reconciler::apply::{CoinOutcome, ExecOptions, Executor};
use reconciler::clock::{Clock, ManualClock, TokioClock};
use reconciler::events::NoNotifier;
use reconciler::node::NodeKey;
use reconciler::plan::Observed;
use reconciler::plan::{Action, Plan, WaveKind, needs_approval, plan};
use reconciler::provider::sim::SimProber;
use reconciler::provider::sim::{ChainParams, SimConfig, SimFault, SimProvider};
use reconciler::provider::{DnsRecord, Provider};
use reconciler::store::{Journal, Record};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const T0: u64 = 1_700_000_000_000;
static NAMES: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
static VERSIONS: [&str; 5] = ["1.0.0", "1.1.0", "2.0.0", "0.21.3", "22.0"];
static TYPES: [&str; 3] = ["c5.large", "c5.xlarge", "m5.large"];
static VOLUMES: [u32; 4] = [100, 200, 300, 500];
static APPROVALS: [&str; 4] = ["none", "major", "minor", "always"];

fn cases(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn zones() -> impl Strategy<Value = Vec<String>> {
    subsequence(
        SUBNETS
            .iter()
            .map(|(z, _)| z.to_string())
            .collect::<Vec<_>>(),
        1..=3,
    )
    .prop_shuffle()
}

fn coin_spec(name: &'static str) -> impl Strategy<Value = CoinSpec> {
    (
        select(&VERSIONS[..]),
        select(&TYPES[..]),
        select(&VOLUMES[..]),
        zones(),
        1..=3u32,
        1..=3u32,
        select(&APPROVALS[..]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(v, t, vol, zones, npz, mu, a, bu, rn)| CoinSpec {
            name: name.to_string(),
            version: v.to_string(),
            instance_type: t.to_string(),
            data_volume_gb: vol,
            zones,
            nodes_per_zone: npz,
            max_unavailable: mu,
            approval: a.to_string(),
            bake: "1m".into(),
            before_upgrade: bu,
            restore_new_nodes: rn,
        })
}

/// The repository's coins.
fn fleet_spec() -> impl Strategy<Value = Vec<CoinSpec>> {
    subsequence(NAMES[..6].to_vec(), 1..=6)
        .prop_flat_map(|names| names.into_iter().map(coin_spec).collect::<Vec<_>>())
}

/// The same coin as it was (or is) in the world: other versions, types, zones and counts,
/// a volume no larger.
fn world_coin(c: &CoinSpec) -> impl Strategy<Value = CoinSpec> + use<> {
    let base = c.clone();
    let smaller: Vec<u32> = VOLUMES
        .iter()
        .copied()
        .filter(|v| *v <= c.data_volume_gb)
        .collect();
    (
        prop_oneof![
            Just(c.version.clone()),
            select(&VERSIONS[..]).prop_map(String::from)
        ],
        prop_oneof![
            Just(c.instance_type.clone()),
            select(&TYPES[..]).prop_map(String::from)
        ],
        select(smaller),
        prop_oneof![Just(c.zones.clone()), zones()],
        prop_oneof![Just(c.nodes_per_zone), 1..=3u32],
    )
        .prop_map(move |(version, instance_type, vol, zones, npz)| CoinSpec {
            version,
            instance_type,
            data_volume_gb: vol,
            zones,
            nodes_per_zone: npz,
            ..base.clone()
        })
}

/// The world's coins: most of the repository's, changed, and maybe one it does not have.
fn world_spec(desired: &[CoinSpec]) -> impl Strategy<Value = Vec<CoinSpec>> + use<> {
    let kept: Vec<_> = desired
        .iter()
        .map(|c| prop::option::weighted(0.85, world_coin(c)))
        .collect();
    let extra = NAMES
        .iter()
        .find(|n| !desired.iter().any(|c| c.name == **n))
        .copied()
        .expect("fewer than 8 coins");
    (kept, prop::option::weighted(0.3, coin_spec(extra)))
        .prop_map(|(kept, extra)| kept.into_iter().flatten().chain(extra).collect::<Vec<_>>())
}

/// Something that happened to one node of the world before the plan.
#[derive(Debug, Clone)]
enum Disturb {
    /// Terminated outside fleet; its DNS record left behind (pointing nowhere) or removed.
    Terminate { keep_dns: bool },
    /// Its DNS record deleted.
    DeleteDns,
    /// An upgrade to `to` cut off by a failure of `at` (SendCommand: the daemon was not
    /// restarted; DeleteTags: it runs `to` but the marker stayed).
    UpgradeCut { to: &'static str, at: &'static str },
    /// A type change to `to` cut off at `at` (ModifyInstanceAttribute: stopped, old type;
    /// StartInstances: stopped, new type).
    ChangeTypeCut { to: &'static str, at: &'static str },
}

fn disturb() -> impl Strategy<Value = Disturb> {
    prop_oneof![
        any::<bool>().prop_map(|keep_dns| Disturb::Terminate { keep_dns }),
        Just(Disturb::DeleteDns),
        (
            select(&VERSIONS[..]),
            select(vec!["SendCommand", "DeleteTags"])
        )
            .prop_map(|(to, at)| Disturb::UpgradeCut { to, at }),
        (
            select(&TYPES[..]),
            select(vec!["ModifyInstanceAttribute", "StartInstances"])
        )
            .prop_map(|(to, at)| Disturb::ChangeTypeCut { to, at }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    desired: Vec<CoinSpec>,
    world: Vec<CoinSpec>,
    disturbs: Vec<(Index, Disturb)>,
}

fn case() -> impl Strategy<Value = Case> {
    fleet_spec().prop_flat_map(|desired| {
        let world = world_spec(&desired);
        let disturbs = prop::collection::vec((any::<Index>(), disturb()), 0..=4);
        (Just(desired), world, disturbs).prop_map(|(desired, world, disturbs)| Case {
            desired,
            world,
            disturbs,
        })
    })
}

/// What one node of the world is, kept by the test as it changes the world.
#[derive(Debug, Clone)]
struct ModelNode {
    alive: bool,
    version: String,
    instance_type: String,
    volume_gb: u32,
    dns_name: String,
    has_dns: bool,
    stopped: bool,
    /// (step, target) of a step cut off half way.
    pending: Option<(&'static str, String)>,
    /// The fingerprint of its configuration (`fleet:config`), as launched.
    config: String,
    /// Its `Name` tag, as launched (its slot's DNS name then).
    name_tag: String,
}

#[derive(Debug, Default)]
struct Model {
    nodes: BTreeMap<NodeKey, ModelNode>,
    /// Each seeded coin's own security group: its inbound rules.
    groups: BTreeMap<String, Vec<reconciler::network::IngressRule>>,
    /// Records left pointing at no node.
    stray: Vec<String>,
}

/// A world: the simulator, seeded from `case.world` and disturbed; the model of it.
struct World {
    desired: Desired,
    sim: SimProvider,
    model: Model,
}

fn sim_config() -> SimConfig {
    // Short chains, so that a node launched without a snapshot syncs from genesis within
    // minutes of simulated time rather than hours (the executor polls every 5 s).
    let mut c = SimConfig::default();
    for n in NAMES {
        c.chains.insert(
            n.to_string(),
            ChainParams {
                base_height: 20_000,
                ..ChainParams::for_coin(n)
            },
        );
    }
    c
}

async fn build(case: &Case, clock: Arc<dyn Clock>) -> World {
    let mut desired = desired_of_specs(&case.desired);
    // The generated repositories retire freely (coins gone, zones dropped): they confirm it,
    // as fleet.yaml's `retire:` does; refusing unconfirmed retirements is a unit test of the
    // planner.
    desired.fleet.retire = NAMES
        .iter()
        .map(|n| fleet_repo_schema::values::CoinName::parse(n).unwrap())
        .collect();
    let variant = desired_of_specs(&case.world);
    let sim = SimProvider::new(clock, sim_config());
    let versions: BTreeMap<String, Version> = case
        .world
        .iter()
        .map(|c| (c.name.clone(), Version::parse(&c.version).unwrap()))
        .collect();
    sim.seed(&variant, &versions).unwrap();
    let mut model = Model::default();
    for coin in variant.coins.values() {
        model.groups.insert(
            coin.name.to_string(),
            reconciler::network::CoinNetwork::of(&variant.fleet, coin).rules,
        );
        for slot in &coin.nodes {
            model.nodes.insert(
                NodeKey::of(slot),
                ModelNode {
                    alive: true,
                    version: versions[coin.name.as_str()].to_string(),
                    instance_type: coin.instance_type.to_string(),
                    volume_gb: coin.data_volume_gb,
                    dns_name: slot.dns_name.clone(),
                    has_dns: true,
                    stopped: false,
                    pending: None,
                    config: fingerprint(coin, slot),
                    name_tag: slot.dns_name.clone(),
                },
            );
        }
    }
    // Seen through the world's own repository, every node is in a slot.
    let seen = fleet_tests::observe(&sim, &variant).await;
    assert_eq!(seen.nodes.len(), model.nodes.len());
    let keys: Vec<NodeKey> = model.nodes.keys().cloned().collect();
    let mut touched = BTreeSet::new();
    for (i, d) in case.disturbs.iter().filter(|_| !keys.is_empty()) {
        let key = i.get(&keys).clone();
        if !touched.insert(key.clone()) {
            continue;
        }
        let n = seen.node(&key).unwrap();
        let node = n.node_ref();
        let record = seen
            .dns
            .iter()
            .find(|r| n.dns_names.contains(&r.name))
            .cloned()
            .unwrap();
        let m = model.nodes.get_mut(&key).unwrap();
        match d {
            Disturb::Terminate { keep_dns } => {
                let dns: &[DnsRecord] = if *keep_dns {
                    &[]
                } else {
                    std::slice::from_ref(&record)
                };
                sim.retire(&node, HOSTED_ZONE, dns).await.unwrap();
                m.alive = false;
                if *keep_dns {
                    model.stray.push(record.name.clone());
                }
            }
            Disturb::DeleteDns => {
                sim.delete_dns(HOSTED_ZONE, &record).await.unwrap();
                m.has_dns = false;
            }
            Disturb::UpgradeCut { to, at } => {
                sim.inject(SimFault::FailOp {
                    op: at.to_string(),
                    times: 1,
                });
                let r = sim.upgrade(&node, &Version::parse(to).unwrap()).await;
                sim.clear_faults();
                if m.version == *to {
                    // Already at that version: nothing is done, nothing cut off.
                    assert!(r.is_ok(), "{r:?}");
                } else {
                    assert!(r.is_err(), "the injected failure cut the upgrade off");
                    m.pending = Some(("upgrade", to.to_string()));
                }
            }
            Disturb::ChangeTypeCut { to, at } => {
                sim.inject(SimFault::FailOp {
                    op: at.to_string(),
                    times: 1,
                });
                let r = sim
                    .change_instance_type(&node, &InstanceType::parse(to).unwrap())
                    .await;
                sim.clear_faults();
                if m.instance_type == *to {
                    assert!(r.is_ok(), "{r:?}");
                } else {
                    assert!(r.is_err(), "the injected failure cut the change off");
                    m.pending = Some(("change-type", to.to_string()));
                    m.stopped = true;
                    if *at == "StartInstances" {
                        m.instance_type = to.to_string();
                    }
                }
            }
        }
    }
    World {
        desired,
        sim,
        model,
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A world on a manual clock, observed through the repository, and its plan.
fn planned(case: &Case) -> (World, Observed, Plan) {
    current_thread().block_on(async {
        let w = build(case, Arc::new(ManualClock::new(T0))).await;
        let o = fleet_tests::observe(&w.sim, &w.desired).await;
        let p = plan(&w.desired, &o, T0);
        (w, o, p)
    })
}

/// The `fleet:config` a node of `slot` of `coin` carries when launched from it.
fn fingerprint(coin: &fleet_repo_schema::Coin, slot: &fleet_repo_schema::NodeSlot) -> String {
    reconciler::node_config::NodeFiles::of(coin, slot)
        .unwrap()
        .fingerprint()
        .to_tag()
}

/// The steps the model says the plan must have, as (action, node or record name).
fn expected_steps(d: &Desired, m: &Model) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut add = |action: &str, who: String| {
        assert!(
            out.insert((action.to_string(), who.clone())),
            "model expects {action} {who} twice"
        );
    };
    for coin in d.coins.values() {
        // The coin's own group: made when the world's repository had no such coin, brought
        // in step when its ports changed.
        let rules = reconciler::network::CoinNetwork::of(&d.fleet, coin).rules;
        if m.groups.get(coin.name.as_str()) != Some(&rules) {
            add("set-coin-network", format!("fleet-{}", coin.name));
        }
        let names: BTreeSet<&str> = coin.nodes.iter().map(|s| s.dns_name.as_str()).collect();
        for slot in &coin.nodes {
            let key = NodeKey::of(slot);
            let who = key.to_string();
            let Some(n) = m.nodes.get(&key).filter(|n| n.alive) else {
                add("launch", who);
                continue;
            };
            if n.volume_gb < coin.data_volume_gb {
                add("grow-volume", who.clone());
            }
            let type_cut = matches!(n.pending, Some(("change-type", _)));
            if n.instance_type != coin.instance_type.as_str() || type_cut {
                add("change-type", who.clone());
            } else if n.stopped {
                add("start", who.clone());
            }
            let upgrade_cut = matches!(n.pending, Some(("upgrade", _)));
            if upgrade_cut || n.version != coin.version.as_str() {
                add("upgrade", who.clone());
            }
            // Settings the world's repository gave it that this one changes (a coin's ports
            // follow its place among the coins, its records its slot).
            if n.config != fingerprint(coin, slot) {
                add("reconfigure", who.clone());
            }
            // (The generated coins list no tags of their own: only `Name` can differ.)
            if n.name_tag != slot.dns_name {
                add("set-tags", who.clone());
            }
            if !(n.has_dns && n.dns_name == slot.dns_name) {
                add("set-dns", who.clone());
            }
            if n.has_dns && !names.contains(n.dns_name.as_str()) {
                add("delete-dns", n.dns_name.clone());
            }
        }
    }
    for (key, n) in &m.nodes {
        let in_slot = d
            .coins
            .get(key.coin.as_str())
            .is_some_and(|c| c.nodes.iter().any(|s| NodeKey::of(s) == *key));
        if n.alive && !in_slot {
            add("retire", key.to_string());
        }
    }
    for name in &m.stray {
        let coin = name.split('.').nth(1).unwrap_or_default();
        if let Some(c) = d.coins.get(coin)
            && !c.nodes.iter().any(|s| s.dns_name == *name)
        {
            add("delete-dns", name.clone());
        }
    }
    out
}

fn actual_steps(p: &Plan) -> Result<BTreeSet<(String, String)>, TestCaseError> {
    let mut out = BTreeSet::new();
    for cp in &p.coins {
        for w in &cp.waves {
            for s in &w.steps {
                let who = match &s.action {
                    Action::DeleteDns { record } => record.name.clone(),
                    Action::SetCoinNetwork { name, .. } => name.clone(),
                    _ => s.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                };
                let fresh = out.insert((s.action.name().to_string(), who.clone()));
                prop_assert!(fresh, "{} {who} planned twice", s.action.name());
            }
        }
    }
    Ok(out)
}

/// Zone order, one wave per node, and max_unavailable, for every coin of `p`.
fn check_shape(p: &Plan, d: &Desired, model: &Model) -> Result<(), TestCaseError> {
    for cp in &p.coins {
        let coin = d.coins.get(cp.coin.as_str());
        prop_assert_eq!(
            cp.max_unavailable,
            coin.map_or(1, |c| c.rollout.max_unavailable),
            "{}",
            cp.coin
        );
        let phase = |k: WaveKind| match k {
            WaveKind::Network => 0,
            WaveKind::Repair => 1,
            WaveKind::Rollout => 2,
            WaveKind::Retire => 3,
            WaveKind::Cleanup => 4,
        };
        let mut last_phase = 0;
        let mut last_zone = 0;
        let mut wave_of: BTreeMap<&NodeKey, usize> = BTreeMap::new();
        for (i, w) in cp.waves.iter().enumerate() {
            prop_assert!(!w.steps.is_empty(), "{}: empty wave {i}", cp.coin);
            prop_assert!(
                phase(w.kind) >= last_phase,
                "{}: {:?} wave after a later kind",
                cp.coin,
                w.kind
            );
            if phase(w.kind) != last_phase {
                last_zone = 0;
            }
            last_phase = phase(w.kind);
            prop_assert!(1 <= w.part && w.part <= w.parts);
            if matches!(w.kind, WaveKind::Repair | WaveKind::Rollout) {
                let coin = coin.expect("rollout waves only for coins in the repository");
                let pos = coin.zones.iter().position(|z| Some(z) == w.zone.as_ref());
                prop_assert!(pos.is_some(), "{}: rollout in unplaced zone", cp.coin);
                let pos = pos.unwrap();
                prop_assert!(
                    pos >= last_zone,
                    "{}: zone {:?} after a later zone",
                    cp.coin,
                    w.zone
                );
                last_zone = pos;
            }
            if w.kind == WaveKind::Repair {
                for s in &w.steps {
                    prop_assert!(
                        matches!(s.action, Action::Start { .. } | Action::ChangeType { .. }),
                        "{}: {} in a repair wave",
                        cp.coin,
                        s.action
                    );
                    let node = s.node.as_ref().expect("a repair names its node");
                    prop_assert_eq!(Some(&node.zone), w.zone.as_ref());
                    let stopped = model.nodes.get(node).is_some_and(|n| n.stopped);
                    prop_assert!(stopped, "{}: repair of {} which is up", cp.coin, node);
                }
            } else if !matches!(w.kind, WaveKind::Cleanup | WaveKind::Network) {
                prop_assert!(
                    w.disrupted().len() as u32 <= cp.max_unavailable,
                    "{}: wave {i} in {:?} takes {} nodes down, max_unavailable {}",
                    cp.coin,
                    w.zone,
                    w.disrupted().len(),
                    cp.max_unavailable
                );
                for s in &w.steps {
                    let node = s
                        .node
                        .as_ref()
                        .expect("a rollout or retire step names its node");
                    prop_assert_eq!(&node.coin, &cp.coin);
                    prop_assert_eq!(
                        Some(&node.zone),
                        w.zone.as_ref(),
                        "a step outside its wave's zone"
                    );
                    let first = *wave_of.entry(node).or_insert(i);
                    prop_assert_eq!(first, i, "{}: steps of {} in two waves", cp.coin, node);
                }
            }
        }
        let cleanups = cp
            .waves
            .iter()
            .filter(|w| w.kind == WaveKind::Cleanup)
            .count();
        prop_assert!(cleanups <= 1);
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    /// Exactly what differs gets a step, and the plan's shape holds.
    #[test]
    fn plans_exactly_what_differs_in_zone_order_within_max_unavailable(case in case()) {
        let (w, o, p) = planned(&case);
        prop_assert!(!p.has_refusals(), "no volume is larger than desired: {:#?}", p);
        let expected = expected_steps(&w.desired, &w.model);
        let actual = actual_steps(&p)?;
        prop_assert_eq!(&actual, &expected, "observed: {:#?}", o);
        prop_assert_eq!(p.is_empty(), expected.is_empty());
        check_shape(&p, &w.desired, &w.model)?;
        // An interrupted upgrade towards the target asks the node before restarting it.
        for s in p.coins.iter().flat_map(|c| &c.waves).flat_map(|w| &w.steps) {
            if let (Action::Upgrade { confirm_first, to, .. }, Some(node)) = (&s.action, &s.node) {
                let m = &w.model.nodes[node];
                let cut_to_target = m.pending.as_ref()
                    .is_some_and(|(step, t)| *step == "upgrade" && t == to.as_str());
                prop_assert_eq!(*confirm_first, cut_to_target, "{}", node);
            }
        }
        // Approval: asked when the policy covers a known version change or nodes retire.
        for cp in &p.coins {
            let Some(coin) = w.desired.coins.get(cp.coin.as_str()) else {
                prop_assert!(cp.approval.is_some(), "retiring a removed coin needs approval");
                continue;
            };
            let known = w.model.nodes.iter()
                .filter(|(k, n)| k.coin == cp.coin && n.alive && n.pending.is_none())
                .filter(|(k, _)| coin.nodes.iter().any(|s| NodeKey::of(s) == **k))
                .map(|(_, n)| classify(&n.version, coin.version.as_str()))
                .max()
                .unwrap_or(Class::None);
            let retires = cp.waves.iter().any(|w| w.kind == WaveKind::Retire);
            if needs_approval(coin.rollout.approval, known) || retires {
                prop_assert!(cp.approval.is_some(), "{}: no approval asked", cp.coin);
            }
            if coin.rollout.approval == Approval::None && !retires {
                prop_assert!(cp.approval.is_none(), "{}: approval none, yet asked", cp.coin);
            }
        }
    }

    /// A world seeded from the repository itself plans nothing; one changed node (another
    /// version, a deleted record, a terminated instance) plans exactly one step, on it.
    #[test]
    fn the_plan_is_empty_iff_nothing_differs(
        desired in fleet_spec(),
        pick in any::<Index>(),
        change in 0..3u8,
        other in select(&VERSIONS[..]),
    ) {
        current_thread().block_on(async {
            let d = desired_of_specs(&desired);
            let sim = SimProvider::new(Arc::new(ManualClock::new(T0)), SimConfig::default());
            sim.seed(&d, &BTreeMap::new()).unwrap();
            let o = fleet_tests::observe(&sim, &d).await;
            let p = plan(&d, &o, T0);
            prop_assert!(p.is_empty() && p.flagged.is_empty(), "{:#?}", p);

            let n = pick.get(&o.nodes);
            let coin = &d.coins[n.key.coin.as_str()];
            let expected = match change {
                0 if other != coin.version.as_str() => {
                    sim.upgrade(&n.node_ref(), &Version::parse(other).unwrap()).await.unwrap();
                    "upgrade"
                }
                0 => return Ok(()),
                1 => {
                    let r = o.dns.iter().find(|r| n.dns_names.contains(&r.name)).unwrap();
                    sim.delete_dns(HOSTED_ZONE, r).await.unwrap();
                    "set-dns"
                }
                _ => {
                    sim.retire(&n.node_ref(), HOSTED_ZONE, &[]).await.unwrap();
                    "launch"
                }
            };
            let o = fleet_tests::observe(&sim, &d).await;
            let p = plan(&d, &o, T0);
            prop_assert!(!p.is_empty());
            let steps: Vec<(&str, Option<&NodeKey>)> = p.coins.iter()
                .flat_map(|c| &c.waves)
                .flat_map(|w| &w.steps)
                .map(|s| (s.action.name(), s.node.as_ref()))
                .collect();
            prop_assert_eq!(steps, vec![(expected, Some(&n.key))]);
            Ok(())
        })?;
    }

    /// A data volume larger than desired is refused for its node, and the coin is left
    /// entirely alone by the executor; other coins still converge.
    #[test]
    fn a_shrink_is_refused_and_nothing_of_the_coin_is_touched(
        case in case(),
        pick in any::<Index>(),
    ) {
        let mut case = case;
        case.disturbs.clear();
        // One coin of the world has larger volumes than the repository asks for.
        let shrunk = pick.get(&case.desired).name.clone();
        let want = case.desired.iter().find(|c| c.name == shrunk).unwrap().data_volume_gb;
        // Its zones are the repository's, so that its nodes fill slots.
        let zones = case.desired.iter().find(|c| c.name == shrunk).unwrap().zones.clone();
        match case.world.iter_mut().find(|c| c.name == shrunk) {
            Some(c) => {
                c.data_volume_gb = want + 100;
                c.zones = zones;
            }
            None => {
                let mut c = case.desired.iter().find(|c| c.name == shrunk).unwrap().clone();
                c.data_volume_gb = want + 100;
                case.world.push(c);
            }
        }
        let rt = paused();
        rt.block_on(async {
            let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(T0));
            let w = build(&case, Arc::clone(&clock)).await;
            let o = fleet_tests::observe(&w.sim, &w.desired).await;
            let p = plan(&w.desired, &o, clock.now_ms());
            let cp = p.coin(&shrunk).expect("the refused coin is in the plan");
            let big: BTreeMap<NodeKey, (String, u32)> = o.nodes.iter()
                .filter(|n| n.key.coin == shrunk.as_str())
                .filter_map(|n| n.data_volume.as_ref().map(|v| (n.key.clone(), (v.volume_id.clone(), v.size_gb))))
                .filter(|(_, (_, gb))| *gb > want)
                .collect();
            prop_assert!(!big.is_empty());
            let refused: BTreeSet<&NodeKey> = cp.refusals.iter().filter_map(|r| r.node.as_ref()).collect();
            prop_assert_eq!(refused, big.keys().collect::<BTreeSet<_>>());
            for r in &cp.refusals {
                prop_assert!(r.reason.contains("cannot shrink"), "{}", r.reason);
            }
            // (A record naming no slot may still be planned for deletion: the coin runs
            // nothing while it has a refusal anyway.)
            prop_assert!(cp.waves.iter().flat_map(|w| &w.steps)
                .filter(|s| !matches!(s.action, Action::DeleteDns { .. }))
                .all(|s| s.node.as_ref().is_none_or(|k| !big.contains_key(k))),
                "no step for a refused node");

            let (exec, journal) = executor(&w, &p, &clock);
            let report = exec.apply(&Arc::new(w.desired.clone()), &p, &CancellationToken::new()).await;
            let r = report.coins.iter().find(|c| c.coin == shrunk.as_str()).unwrap();
            prop_assert!(matches!(r.outcome, CoinOutcome::Refused { .. }), "{:?}", r.outcome);
            prop_assert_eq!(r.steps, 0);
            let journaled = journal.records().iter().any(|r| matches!(r, Record::Step { coin, .. } if *coin == shrunk));
            prop_assert!(!journaled, "a step of the refused coin was journaled");
            prop_assert!(!w.sim.commands().iter().any(|c| c.key.coin == shrunk.as_str()));
            let after = fleet_tests::observe(&w.sim, &w.desired).await;
            for (key, (vol, gb)) in &big {
                let v = after.node(key).and_then(|n| n.data_volume.as_ref()).unwrap();
                prop_assert_eq!((&v.volume_id, v.size_gb), (vol, *gb), "volume untouched");
            }
            for c in report.coins.iter().filter(|c| c.coin != shrunk.as_str()) {
                prop_assert_eq!(&c.outcome, &CoinOutcome::Completed, "{}", c.coin);
            }
            Ok(())
        })?;
    }
}

/// The real executor on the world, every approval the plan needs given in its journal.
fn executor(w: &World, p: &Plan, clock: &Arc<dyn Clock>) -> (Arc<Executor>, Arc<Journal>) {
    let journal = Arc::new(Journal::in_memory());
    let opts = ExecOptions {
        parallel_coins: 8,
        poll_ms: 5_000,
        commit: "proptest".into(),
    };
    fleet_tests::approve_all(&journal, p, &opts.commit, "proptest");
    let exec = Arc::new(Executor {
        provider: Arc::new(w.sim.clone()),
        prober: Arc::new(SimProber(w.sim.clone())),
        journal: Arc::clone(&journal),
        notifier: Arc::new(NoNotifier),
        clock: Arc::clone(clock),
        opts,
    });
    (exec, journal)
}

proptest! {
    #![proptest_config(cases(48))]

    /// Applying the plan and planning again gives an empty plan.
    #[test]
    fn applying_the_plan_converges(case in case()) {
        let rt = paused();
        rt.block_on(async {
            let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(T0));
            let w = build(&case, Arc::clone(&clock)).await;
            let o = fleet_tests::observe(&w.sim, &w.desired).await;
            let p = plan(&w.desired, &o, clock.now_ms());
            let (exec, _) = executor(&w, &p, &clock);
            let desired = Arc::new(w.desired.clone());
            let report = exec.apply(&desired, &p, &CancellationToken::new()).await;
            prop_assert!(report.all_completed(), "{:#?}\nplan: {}", report.coins,
                reconciler::render::plan_human(&p, &w.desired, reconciler::render::Style { color: false }));
            let again = plan(&w.desired, &fleet_tests::observe(&w.sim, &w.desired).await, clock.now_ms());
            prop_assert!(again.is_empty(), "not converged: {}",
                reconciler::render::plan_human(&again, &w.desired, reconciler::render::Style { color: false }));
            Ok(())
        })?;
    }
}
