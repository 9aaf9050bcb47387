//! The simulator as a product feature: chains that advance, nodes that restart and catch up
//! headers first, faults, and a world that persists between runs in the state directory.

use fleet_repo_schema::values::{InstanceType, Version};
use fleet_tests::world::{SimWorld, TestWorld};
use reconciler::clock::ManualClock;
use reconciler::node::NodeKey;
use reconciler::provider::sim::{ChainParams, SimConfig, SimFault, SimProvider};
use reconciler::provider::{ImagePin, LaunchSpec, NodeRef, Provider, ProviderError};
use std::collections::BTreeMap;
use std::sync::Arc;

const MIN: u64 = 60_000;

fn first_node(w: &SimWorld, coin: &str) -> NodeRef {
    let d = w.desired();
    let slot = &d.coins[coin].nodes[0];
    let o = futures_lite(fleet_tests::observe(w.provider(), d));
    let n = o.node(&NodeKey::of(slot)).expect("seeded");
    n.node_ref()
}

fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn chain_tip_advances_at_the_block_time() {
    let w = SimWorld::new();
    let t0 = w.sim.tip("bitcoin");
    w.clock.advance_ms(60 * MIN);
    assert_eq!(
        w.sim.tip("bitcoin") - t0,
        6,
        "a bitcoin block every 10 minutes"
    );
    let e0 = w.sim.tip("ethereum");
    w.clock.advance_ms(MIN);
    assert_eq!(
        w.sim.tip("ethereum") - e0,
        5,
        "an ethereum block every 12 s"
    );
}

#[test]
fn a_restarted_node_is_down_then_catches_up_headers_first() {
    let w = SimWorld::new();
    w.sim.seed(w.desired(), &BTreeMap::new()).unwrap();
    let n = first_node(&w, "litecoin");
    let s = w.sim.chain_status(&n.instance_id).unwrap();
    assert_eq!(
        (s.blocks, s.headers, s.initial_block_download),
        (w.sim.tip("litecoin"), w.sim.tip("litecoin"), false)
    );

    // An upgrade restarts the daemon: unreachable while it starts.
    futures_lite(w.provider().upgrade(&n, &Version::parse("0.21.5").unwrap())).unwrap();
    assert!(
        w.sim.chain_status(&n.instance_id).is_err(),
        "unreachable while the daemon starts"
    );
    w.clock.advance_ms(MIN);
    assert!(w.sim.chain_status(&n.instance_id).is_ok());

    // A node restored from a 12-hour-old snapshot has a real gap to close.
    let snap = futures_lite(w.provider().snapshot(&n, "test")).unwrap();
    w.clock.advance_ms(12 * 60 * MIN);
    let d = w.desired();
    let c = &d.coins["litecoin"];
    let mut slot = c.nodes[0].clone();
    slot.index = 2;
    let spec = LaunchSpec::new(&d.fleet, c, &slot, Some(snap)).unwrap();
    let (id, _) = futures_lite(w.provider().launch(&spec)).unwrap();
    assert!(w.sim.chain_status(&id).is_err(), "booting");
    let mut behind = None;
    for _ in 0..200 {
        w.clock.advance_ms(1_000);
        if let Ok(s) = w.sim.chain_status(&id) {
            behind = Some(s);
            break;
        }
    }
    let first = behind.expect("the new node comes up");
    assert!(first.blocks < first.headers || first.headers < w.sim.tip("litecoin"));
    w.clock.advance_ms(1_000);
    let behind = w.sim.chain_status(&id).unwrap();
    let tip = w.sim.tip("litecoin");
    assert_eq!(behind.headers, tip, "headers arrive first");
    assert!(
        behind.blocks + 200 <= tip,
        "blocks still lag most of 12 h of 2.5-minute blocks: {behind:?} tip {tip}"
    );
    assert!(!behind.initial_block_download, "less than a day behind");
    let n = NodeRef {
        key: NodeKey::of(&slot),
        instance_id: id,
    };
    // Catching up at 50 blocks/s from where it is now.
    let mut last = behind.blocks;
    let mut steps = 0;
    loop {
        w.clock.advance_ms(1_000);
        let s = w.sim.chain_status(&n.instance_id).unwrap();
        assert!(
            s.blocks >= last && s.blocks <= s.headers,
            "monotonic, never past headers"
        );
        last = s.blocks;
        steps += 1;
        if s.blocks == s.headers && s.headers == w.sim.tip("litecoin") {
            break;
        }
        assert!(steps < 10_000, "never caught up");
    }
    assert!(steps > 1, "catching up takes time: {steps} s");
}

#[test]
fn a_node_far_behind_reports_initial_block_download() {
    let clock = ManualClock::new(0);
    let mut cfg = SimConfig::default();
    cfg.chains.insert(
        "bitcoin".into(),
        ChainParams {
            block_rate: 10.0,
            ..ChainParams::for_coin("bitcoin")
        },
    );
    let sim = SimProvider::new(Arc::new(clock.clone()), cfg);
    let d = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
    let c = &d.coins["bitcoin"];
    // A new node without a snapshot starts from genesis.
    let spec = LaunchSpec::new(&d.fleet, c, &c.nodes[0], None).unwrap();
    let (id, _) = futures_lite(sim.launch(&spec)).unwrap();
    assert!(sim.chain_status(&id).is_err(), "booting");
    clock.advance_ms(10 * MIN);
    let s = sim.chain_status(&id).unwrap();
    assert!(s.initial_block_download && s.blocks < s.headers, "{s:?}");
}

#[test]
fn stalls_and_launch_failures_are_injected() {
    let w = SimWorld::new();
    w.sim.seed(w.desired(), &BTreeMap::new()).unwrap();
    let n = first_node(&w, "dogecoin");
    let h = w.sim.chain_status(&n.instance_id).unwrap().blocks;
    w.sim.inject(SimFault::StallAt {
        key: n.key.clone(),
        height: h + 2,
    });
    w.clock.advance_ms(60 * MIN);
    let s = w.sim.chain_status(&n.instance_id).unwrap();
    assert_eq!(s.blocks, h + 2, "stalled");
    assert!(s.headers > s.blocks);

    w.sim.inject(SimFault::LaunchFailsInZone {
        zone: "eu-central-1c".into(),
    });
    let d = w.desired();
    let c = &d.coins["bitcoin"];
    let mut slot = c.nodes[2].clone();
    slot.index = 2;
    let spec = LaunchSpec::new(&d.fleet, c, &slot, None).unwrap();
    match futures_lite(w.provider().launch(&spec)) {
        Err(ProviderError::Api { code, .. }) => assert_eq!(code, "InsufficientInstanceCapacity"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_world_persists_in_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let d = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
    {
        let sim =
            SimProvider::open(dir.path(), Arc::new(clock.clone()), SimConfig::default()).unwrap();
        sim.seed(
            &d,
            &BTreeMap::from([("bitcoin".to_string(), Version::parse("27.0").unwrap())]),
        )
        .unwrap();
    }
    clock.advance_ms(MIN);
    let sim = SimProvider::open(dir.path(), Arc::new(clock.clone()), SimConfig::default()).unwrap();
    let o = futures_lite(fleet_tests::observe(&sim, &d));
    assert_eq!(o.nodes.len(), 18);
    let btc = o.node(&NodeKey::of(&d.coins["bitcoin"].nodes[0])).unwrap();
    assert_eq!(btc.version.known().map(|v| v.as_str()), Some("27.0"));
    // A damaged state file is an error that says what to do, not a silently empty fleet.
    std::fs::write(dir.path().join("sim.json"), b"{not json").unwrap();
    let err = SimProvider::open(dir.path(), Arc::new(clock), SimConfig::default()).unwrap_err();
    assert!(err.to_string().contains("move it away"), "{err}");
}

#[test]
fn a_reboot_brings_the_daemon_back_only_when_its_unit_is_enabled() {
    let w = SimWorld::new();
    w.sim.seed(w.desired(), &BTreeMap::new()).unwrap();
    let boot_and_start = 2 * MIN;
    // A node fleet launched: its user data enables the bootstrap and node@<version>.
    let n = first_node(&w, "litecoin");
    w.sim.reboot(&n.instance_id).unwrap();
    assert!(w.sim.chain_status(&n.instance_id).is_err(), "rebooting");
    w.clock.advance_ms(boot_and_start);
    assert!(
        w.sim.chain_status(&n.instance_id).is_ok(),
        "an enabled unit comes back by itself"
    );

    // A node whose user data only started the unit once (fleet's before it enabled it, or
    // one set up by hand): after a reboot, and after a stop, change of type and start, the
    // instance runs and the daemon does not, as on EC2.
    let d = w.desired();
    let c = &d.coins["litecoin"];
    let mut slot = c.nodes[0].clone();
    slot.index = 2;
    let mut spec = LaunchSpec::new(&d.fleet, c, &slot, None).unwrap();
    spec.user_data = "#!/bin/bash\nsystemctl start \"node@0.21.4\"\n".into();
    let (id, _) = futures_lite(w.provider().launch(&spec)).unwrap();
    w.clock.advance_ms(boot_and_start);
    assert!(w.sim.chain_status(&id).is_ok(), "first boot: started once");
    w.sim.reboot(&id).unwrap();
    w.clock.advance_ms(60 * MIN);
    let down = w.sim.chain_status(&id).unwrap_err();
    assert!(down.contains("not running"), "{down}");
    let legacy = NodeRef {
        instance_id: id.clone(),
        key: NodeKey::of(&slot),
    };
    futures_lite(
        w.provider()
            .change_instance_type(&legacy, &InstanceType::parse("c5.2xlarge").unwrap()),
    )
    .unwrap();
    w.clock.advance_ms(60 * MIN);
    assert!(
        w.sim.chain_status(&id).is_err(),
        "still down after a change of type"
    );

    // fleet's upgrade enables the unit it starts: from then on a reboot brings it back.
    futures_lite(
        w.provider()
            .upgrade(&legacy, &Version::parse("0.21.5").unwrap()),
    )
    .unwrap();
    w.clock.advance_ms(boot_and_start);
    assert!(w.sim.chain_status(&id).is_ok());
    w.sim.reboot(&id).unwrap();
    w.clock.advance_ms(boot_and_start);
    assert!(w.sim.chain_status(&id).is_ok(), "enabled by the upgrade");
}

/// A daemon started by hand (the seed's SSM upgrade) reports the version it runs, not the
/// tag's; its unit is not enabled, so a reboot brings back the enabled one, as systemd does.
#[test]
fn a_daemon_started_by_hand_reports_its_version_until_a_reboot_brings_the_enabled_one_back() {
    let w = SimWorld::new();
    w.sim.seed(w.desired(), &BTreeMap::new()).unwrap();
    let n = first_node(&w, "bitcoin");
    let reported = |w: &SimWorld| {
        w.sim
            .chain_status(&n.instance_id)
            .expect("answers")
            .client
            .map(|v| v.to_string())
    };
    w.clock.advance_ms(10 * MIN);
    let tagged = w.desired().coins["bitcoin"].version.to_string();
    assert_eq!(reported(&w).as_deref(), Some(tagged.as_str()));
    w.sim.start_by_hand(&n.instance_id, "27.0").unwrap();
    w.clock.advance_ms(10 * MIN);
    assert_eq!(reported(&w).as_deref(), Some("27.0"));
    w.sim.reboot(&n.instance_id).unwrap();
    w.clock.advance_ms(10 * MIN);
    assert_eq!(reported(&w).as_deref(), Some(tagged.as_str()));
}

/// `fleet-node upgrade` to the version a daemon already runs (started by hand) restarts
/// nothing, as `systemctl start` of an active unit does nothing; it enables that unit, so a
/// reboot keeps it.
#[test]
fn an_upgrade_to_the_version_a_daemon_runs_by_hand_restarts_nothing_and_enables_it() {
    let w = SimWorld::new();
    w.sim.seed(w.desired(), &BTreeMap::new()).unwrap();
    let n = first_node(&w, "bitcoin");
    w.sim.start_by_hand(&n.instance_id, "29.0").unwrap();
    w.clock.advance_ms(10 * MIN);
    let before = w.sim.chain_status(&n.instance_id).expect("answers");
    let v = Version::parse("29.0").unwrap();
    futures_lite(w.sim.upgrade_pinned(&n, &v, ImagePin::Tag)).unwrap();
    // Still answering at once: a restart is unreachable for start_delay_ms.
    let after = w.sim.chain_status(&n.instance_id).expect("not restarted");
    assert!(after.blocks >= before.blocks);
    w.sim.reboot(&n.instance_id).unwrap();
    w.clock.advance_ms(10 * MIN);
    let s = w
        .sim
        .chain_status(&n.instance_id)
        .expect("back after the boot");
    assert_eq!(s.client.map(|c| c.to_string()).as_deref(), Some("29.0"));
}

#[test]
fn a_data_volume_is_modified_at_most_once_in_six_hours_as_on_ebs() {
    let w = SimWorld::new();
    w.sim.seed(w.desired(), &BTreeMap::new()).unwrap();
    let n = first_node(&w, "litecoin");
    let size = |w: &SimWorld| {
        let o = futures_lite(fleet_tests::observe(w.provider(), w.desired()));
        o.node(&n.key)
            .unwrap()
            .data_volume
            .as_ref()
            .unwrap()
            .size_gb
    };
    let first = size(&w);
    futures_lite(w.sim.grow_volume(&n, first + 100)).expect("the first grow");
    // Again within 6 hours: EBS refuses, and the volume keeps its size.
    w.clock.advance_ms(5 * 60 * MIN);
    match futures_lite(w.sim.grow_volume(&n, first + 200)) {
        Err(ProviderError::Api { code, .. }) => assert_eq!(code, "VolumeModificationRateExceeded"),
        other => panic!("a second modification within 6 h must be refused, got {other:?}"),
    }
    assert_eq!(size(&w), first + 100);
    // A grow to the size it has is no modification at all.
    assert!(futures_lite(w.sim.grow_volume(&n, first + 100)).is_ok());
    w.clock.advance_ms(60 * MIN);
    futures_lite(w.sim.grow_volume(&n, first + 200)).expect("6 hours later");
    assert_eq!(size(&w), first + 200);
}
