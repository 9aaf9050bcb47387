//! Defaults inheritance and node slots of the resolved desired state.

use fleet_repo_schema::{Approval, DirTree, MemTree, Probe, load};

fn example() -> fleet_repo_schema::Desired {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fleet");
    let loaded = load(&DirTree::new(dir).unwrap());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.desired.unwrap()
}

#[test]
fn coin_settings_override_fleet_defaults_which_override_builtins() {
    let d = example();
    let btc = &d.coins["bitcoin"];
    // Set on the coin.
    assert_eq!(btc.rollout.bake.as_secs(), 1800);
    assert_eq!(btc.health.max_lag_blocks, 2);
    assert_eq!(btc.health.stall_timeout.as_secs(), 3600);
    // ethereum sets approval but not bake: bake comes from fleet.yaml defaults (10m).
    let eth = &d.coins["ethereum"];
    assert_eq!(eth.rollout.approval, Approval::Minor);
    assert_eq!(eth.rollout.bake.as_secs(), 600);
    assert_eq!(eth.rollout.max_unavailable, 1);
    // litecoin sets no sync_timeout: fleet.yaml's 12h.
    assert_eq!(d.coins["litecoin"].health.sync_timeout.as_secs(), 12 * 3600);
    // Built-in: root volume 16 GiB, snapshots on, no digest, image from the registry.
    let iota = &d.coins["iota"];
    assert_eq!(iota.root_volume_gb, 16);
    assert!(iota.snapshots.before_upgrade && iota.snapshots.restore_new_nodes);
    assert_eq!(
        iota.image.repository.as_str(),
        "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/iota"
    );
    assert_eq!(iota.health.probe, Probe::Http);
    // rpc_port defaults to the first rpc port.
    assert_eq!(d.coins["litecoin"].health.rpc_port, Some(9332));
    // The upstream tag pattern extracts versions.
    let up = btc.upstream.as_ref().unwrap();
    assert_eq!(up.tag_pattern.version_of("v28.1"), Some("28.1"));
    assert_eq!(up.min_release_age.as_secs(), 2 * 86400);
}

#[test]
fn builtin_defaults_apply_without_fleet_defaults() {
    let mut t = MemTree::new();
    t.insert(
        "fleet.yaml",
        "region: eu-central-1\ninternal_domain: internal\nhosted_zone_id: Z1\nnetwork:\n  vpc_id: vpc-01234567\n  subnets: {eu-central-1a: subnet-01234567}\n  security_groups: [sg-01234567]\nnode_ami: ami-01234567\ninstance_profile: p\nimage_registry: r.example/x\n",
    );
    t.insert(
        "coins/doge.yaml",
        "coin: doge\nversion: 1.14.9\ninstance: {type: c5.large, data_volume_gb: 10}\nplacement: {zones: [eu-central-1a], nodes_per_zone: 1}\nports: {rpc: [1], p2p: [2]}\nhealth: {probe: bitcoin}\nrollout: {approval: none}\n",
    );
    let loaded = load(&t);
    let d = loaded.desired.expect("valid");
    let c = &d.coins["doge"];
    assert_eq!(c.rollout.max_unavailable, 1);
    assert_eq!(c.rollout.bake.as_secs(), 600);
    assert_eq!(c.health.max_lag_blocks, 3);
    assert_eq!(c.health.stall_timeout.as_secs(), 1800);
    assert_eq!(c.health.sync_timeout.as_secs(), 43200);
    assert!(c.upstream.is_none());
}

#[test]
fn node_slots_count_across_zones_in_placement_order() {
    let d = example();
    let monero = &d.coins["monero"];
    let names: Vec<(&str, u32, &str)> = monero
        .nodes
        .iter()
        .map(|n| (n.zone.as_str(), n.index, n.dns_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("eu-central-1a", 1, "node1.monero.internal"),
            ("eu-central-1a", 2, "node2.monero.internal"),
            ("eu-central-1b", 1, "node3.monero.internal"),
            ("eu-central-1b", 2, "node4.monero.internal"),
            ("eu-central-1c", 1, "node5.monero.internal"),
            ("eu-central-1c", 2, "node6.monero.internal"),
        ]
    );
    // dogecoin's placement starts in zone b: its node1 is there.
    assert_eq!(d.coins["dogecoin"].nodes[0].zone.as_str(), "eu-central-1b");
    assert_eq!(
        d.coins["dogecoin"].nodes[0].dns_name,
        "node1.dogecoin.internal"
    );
    assert_eq!(d.nodes().count(), 18);
}
