//! The planner on plain values: a small fleet written inline, observations built from tags
//! as a provider reports them. No provider, no clock, no AWS crates
//! (`cargo test -p reconciler --no-default-features plan::`). The property tests over random
//! fleets are in `tests/tests/plan_properties.rs`.

use super::*;
use crate::node_config::ConfigPart;
use crate::provider::{
    InstanceState, Observation, ObservedInstance, ObservedVolume, PendingStep, tags,
};
use fleet_repo_schema::{MemTree, load};

const FLEET: &str = "region: eu-central-1
internal_domain: internal
hosted_zone_id: Z0123456789ABCDEFGHIJ
network:
  vpc_id: vpc-0a1b2c3d4e5f60718
  subnets:
    eu-central-1a: subnet-0aaaaaaaaaaaaaaa1
    eu-central-1b: subnet-0bbbbbbbbbbbbbbb2
    eu-central-1c: subnet-0ccccccccccccccc3
  security_groups: [sg-0123456789abcdef0]
node_ami: ami-0123456789abcdef0
instance_profile: fleet-node
image_registry: 123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons
approvers: [U012ABCDEF]
";

/// bitcoin: 2 nodes in each of 3 zones, max_unavailable 2, approval on major changes.
fn coin(version: &str, extra: &str) -> String {
    format!(
        "coin: bitcoin
version: \"{version}\"
instance: {{ type: m5.large, data_volume_gb: 500 }}
placement: {{ zones: [eu-central-1a, eu-central-1b, eu-central-1c], nodes_per_zone: 2 }}
ports: {{ rpc: [8332], p2p: [8333] }}
health: {{ probe: bitcoin }}
rollout: {{ max_unavailable: 2, bake: 10m, approval: major }}
{extra}"
    )
}

fn desired(version: &str, extra: &str) -> Desired {
    let mut t = MemTree::new();
    t.insert("fleet.yaml", FLEET);
    t.insert("coins/bitcoin.yaml", coin(version, extra));
    let l = load(&t);
    l.desired.unwrap_or_else(|| panic!("{:#?}", l.diagnostics))
}

/// Observed nodes, as a provider would report them.
#[derive(Default, Clone)]
struct World {
    instances: Vec<ObservedInstance>,
    dns: Vec<DnsRecord>,
}

impl World {
    /// Every slot of `d` running `version`, in sync with its record.
    fn running(d: &Desired, version: &str) -> World {
        let mut w = World::default();
        for s in d.nodes() {
            // Each node carries the fingerprint of the configuration the coin file asks for,
            // and its per-setting record.
            let files = crate::node_config::NodeFiles::of(&d.coins[s.coin.as_str()], s).unwrap();
            let config = files.fingerprint().to_tag();
            let keys = files.key_print().to_tag();
            let coin_tags = tags::for_node(&d.coins[s.coin.as_str()], s);
            w.node(s.coin.as_str(), s.zone.as_str(), s.index, version, |i| {
                i.tags.insert(tags::CONFIG.into(), config);
                i.tags.insert(tags::CONFIG_KEYS.into(), keys);
                for (k, v) in coin_tags {
                    i.tags.entry(k).or_insert(v);
                }
            });
        }
        w
    }

    fn node(
        &mut self,
        coin: &str,
        zone: &str,
        index: u32,
        version: &str,
        edit: impl FnOnce(&mut ObservedInstance),
    ) {
        let n = self.instances.len() + 1;
        let ip = format!("10.0.0.{n}");
        let mut t = BTreeMap::new();
        for (k, v) in [
            (tags::MANAGED, "true".to_string()),
            (tags::COIN, coin.to_string()),
            (tags::ZONE, zone.to_string()),
            (tags::INDEX, index.to_string()),
            (tags::VERSION, version.to_string()),
        ] {
            t.insert(k.to_string(), v);
        }
        let mut i = ObservedInstance::new(
            format!("i-{n:04}"),
            t,
            InstanceState::Running,
            "m5.large".into(),
            Some(ip.clone()),
            Some(ObservedVolume {
                volume_id: format!("vol-{n:04}"),
                size_gb: 500,
                snapshot_id: None,
            }),
        );
        edit(&mut i);
        // The slot's record: node<ordinal>.<coin>.internal (ordinal counts across zones).
        let zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"];
        let ordinal = zones.iter().position(|z| *z == zone).unwrap_or(0) as u32 * 2 + index;
        self.dns.push(DnsRecord {
            name: format!("node{ordinal}.{coin}.internal"),
            values: vec![ip],
            ttl: 60,
        });
        self.instances.push(i);
    }

    fn observed(self, d: &Desired) -> Observed {
        Observed::assign(d, Observation::new(self.instances, self.dns, vec![], 0))
    }

    /// Observed with the managed security groups read too.
    fn observed_with(self, d: &Desired, groups: Vec<crate::network::ObservedGroup>) -> Observed {
        Observed::assign(
            d,
            Observation::new(self.instances, self.dns, vec![], 0).with_groups(groups),
        )
    }
}

fn disrupted(w: &Wave) -> Vec<String> {
    w.disrupted().iter().map(|k| k.to_string()).collect()
}

#[test]
fn nothing_differs_nothing_planned() {
    let d = desired("28.1", "");
    let p = plan(&d, &World::running(&d, "28.1").observed(&d), 0);
    assert!(p.is_empty(), "{p:#?}");
    assert!(p.flagged.is_empty());
}

#[test]
fn bootstrap_launches_every_slot_zone_by_zone_within_max_unavailable() {
    let d = desired("28.1", "");
    let p = plan(&d, &Observed::default(), 0);
    let cp = p.coin("bitcoin").unwrap();
    let zones: Vec<&str> = cp
        .waves
        .iter()
        .map(|w| w.zone.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(zones, ["eu-central-1a", "eu-central-1b", "eu-central-1c"]);
    for w in &cp.waves {
        assert_eq!(w.kind, WaveKind::Rollout);
        assert!(w.disrupted().len() <= 2);
        assert!(
            w.steps
                .iter()
                .all(|s| matches!(s.action, Action::Launch { .. }))
        );
    }
    assert_eq!(cp.step_count(), 6);
    // A first launch needs no approval: nothing runs that a person could lose.
    assert_eq!(cp.approval, None);
}

#[test]
fn a_major_upgrade_goes_zone_by_zone_and_asks_a_person() {
    let d = desired("29.0", "");
    let p = plan(&d, &World::running(&d, "28.1").observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(
        cp.waves.iter().map(disrupted).collect::<Vec<_>>(),
        [
            ["bitcoin/eu-central-1a/1", "bitcoin/eu-central-1a/2"],
            ["bitcoin/eu-central-1b/1", "bitcoin/eu-central-1b/2"],
            ["bitcoin/eu-central-1c/1", "bitcoin/eu-central-1c/2"],
        ]
    );
    assert_eq!(cp.class, Class::Major);
    assert_eq!(cp.from_versions, [Version::parse("28.1").unwrap()]);
    let reasons: Vec<String> = cp
        .approval
        .as_ref()
        .unwrap()
        .reasons
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        reasons,
        ["major version change 28.1 → 29.0 (rollout.approval: major)"]
    );
    assert_eq!(
        cp.approval_target(),
        ApprovalTarget::Version(Version::parse("29.0").unwrap())
    );
    // A patch release needs no approval under `major`.
    let d = desired("28.1.1", "");
    let p = plan(&d, &World::running(&d, "28.1").observed(&d), 0);
    assert_eq!(p.coin("bitcoin").unwrap().approval, None);
}

#[test]
fn an_interrupted_upgrade_to_the_target_is_confirmed_before_any_restart() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    let i = &mut w.instances[0];
    i.pending = Some(PendingStep::Upgrade { to: "28.1".into() });
    i.version = tags::version(&i.tags, i.pending.as_ref());
    let p = plan(&d, &w.observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 1);
    match &cp.waves[0].steps[0].action {
        Action::Upgrade {
            from: None,
            confirm_first: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    // The node was recorded at the target already (the crash fell between recording the
    // version and clearing the marker): nothing to approve.
    assert_eq!(cp.class, Class::None);
    assert_eq!(cp.approval, None);
}

#[test]
fn an_interrupted_upgrade_is_sized_from_the_version_it_was_recorded_at() {
    // Every node at `target`, the last one cut off mid-upgrade to it while recorded at
    // `recorded`: it runs one or the other, so the change is at most recorded → target.
    let cut_off = |target: &str, recorded: Option<&str>| {
        let d = desired(target, "");
        let mut w = World::running(&d, target);
        let i = &mut w.instances[5];
        match recorded {
            Some(r) => i.tags.insert(tags::VERSION.into(), r.into()),
            None => i.tags.remove(tags::VERSION),
        };
        i.recorded_version = recorded.map(|r| Version::parse(r).unwrap());
        i.pending = Some(PendingStep::Upgrade { to: target.into() });
        i.version = tags::version(&i.tags, i.pending.as_ref());
        let p = plan(&d, &w.observed(&d), 0);
        p.coin("bitcoin").unwrap().clone()
    };
    // A patch rollout 28.1 → 28.1.1: `major` asks no one (a reconciler killed at that
    // moment used to wait for an approval nobody would give).
    let cp = cut_off("28.1.1", Some("28.1"));
    assert_eq!(cp.step_count(), 1);
    assert_eq!(cp.class, Class::Patch);
    assert_eq!(cp.approval, None);
    // A major one cut off the same way still asks.
    let cp = cut_off("29.0", Some("28.1"));
    assert_eq!(cp.class, Class::Major);
    assert!(cp.approval.is_some());
    // With no recorded version to go by the size is unknown, which under `major` needs a
    // person.
    let cp = cut_off("29.0", None);
    assert_eq!(cp.class, Class::Unknown);
    assert!(cp.approval.is_some());
}

#[test]
fn stopped_nodes_are_repaired_before_the_rollout_and_count_against_the_budget() {
    let d = desired("28.1.1", "");
    let mut w = World::running(&d, "28.1");
    // A node of the last zone was stopped by someone else.
    w.instances[5].state = InstanceState::Stopped;
    let p = plan(&d, &w.observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.waves[0].kind, WaveKind::Repair);
    assert_eq!(
        cp.waves[0].zone.as_ref().map(|z| z.as_str()),
        Some("eu-central-1c")
    );
    assert!(matches!(cp.waves[0].steps[0].action, Action::Start { .. }));
    assert!(cp.waves[1..].iter().all(|w| w.kind == WaveKind::Rollout));
}

#[test]
fn a_shrink_is_refused_with_how_to_fix_it() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    w.instances[2].data_volume.as_mut().unwrap().size_gb = 800;
    let p = plan(&d, &w.observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.refusals.len(), 1);
    let r = &cp.refusals[0];
    assert_eq!(
        r.node.as_ref().map(|k| k.to_string()).as_deref(),
        Some("bitcoin/eu-central-1b/1")
    );
    assert!(
        r.reason.contains("set it back to at least 800"),
        "{}",
        r.reason
    );
}

#[test]
fn a_larger_volume_and_a_new_type_change_without_a_new_version() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    w.instances[0].data_volume.as_mut().unwrap().size_gb = 400;
    w.instances[1].instance_type = "m5.xlarge".into();
    let p = plan(&d, &w.observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    let actions: Vec<&str> = cp
        .waves
        .iter()
        .flat_map(|w| &w.steps)
        .map(|s| s.action.name())
        .collect();
    assert_eq!(actions, ["grow-volume", "change-type"]);
    // Growing keeps the node up; changing its type takes it down.
    assert_eq!(disrupted(&cp.waves[0]), ["bitcoin/eu-central-1a/2"]);
}

#[test]
fn orphans_become_retirements_flags_or_clean_ups() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    // Beyond nodes_per_zone: retired, with approval.
    w.node("bitcoin", "eu-central-1a", 3, "28.1", |_| {});
    // A coin gone from the repository: retired one at a time, with approval.
    w.node("dogecoin", "eu-central-1a", 1, "1.14.9", |_| {});
    // A second instance for a slot: the smaller id keeps it, the other is flagged.
    w.node("bitcoin", "eu-central-1b", 1, "28.1", |_| {});
    // Managed but with unreadable identity tags: flagged.
    w.node("bitcoin", "eu-central-1c", 1, "28.1", |i| {
        i.tags.insert(tags::COIN.into(), "Bit Coin".into());
        i.identity = tags::node_key(&i.tags);
    });
    // A node record of a placed coin with no slot and no node: cleaned up.
    w.dns.push(DnsRecord {
        name: "node9.bitcoin.internal".into(),
        values: vec!["10.9.9.9".into()],
        ttl: 60,
    });
    let observed = w.observed(&d);
    let p = plan(&d, &observed, 0);
    let btc = p.coin("bitcoin").unwrap();
    let retire: Vec<&Step> = btc
        .waves
        .iter()
        .filter(|w| w.kind == WaveKind::Retire)
        .flat_map(|w| &w.steps)
        .collect();
    assert_eq!(retire.len(), 1);
    assert_eq!(
        retire[0].node.as_ref().map(|k| k.index),
        Some(3),
        "{retire:?}"
    );
    assert!(
        btc.approval
            .as_ref()
            .unwrap()
            .reasons
            .contains(&ApprovalReason::Retire { nodes: 1 })
    );
    let cleanup: Vec<&Step> = btc
        .waves
        .iter()
        .filter(|w| w.kind == WaveKind::Cleanup)
        .flat_map(|w| &w.steps)
        .collect();
    assert!(
        matches!(&cleanup[..], [Step { node: None, action: Action::DeleteDns { record }, .. }] if record.name == "node9.bitcoin.internal"),
        "{cleanup:?}"
    );
    let doge = p.coin("dogecoin").unwrap();
    assert_eq!(doge.target, None);
    assert_eq!(doge.approval_target(), ApprovalTarget::Retire);
    assert_eq!(
        doge.approval.as_ref().unwrap().reasons,
        [ApprovalReason::RemovedCoin { nodes: 1 }]
    );
    let flagged: Vec<&str> = p.flagged.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(flagged.len(), 2, "{flagged:?}");
    assert!(
        flagged
            .iter()
            .any(|f| f.contains("a second instance for bitcoin/eu-central-1b/1"))
    );
    assert!(flagged.iter().any(|f| f.contains("fix its tags")));
    // The duplicate kept the slot for the smaller instance id.
    let kept = observed
        .node(&NodeKey::parse("bitcoin", "eu-central-1b", 1).unwrap())
        .unwrap();
    assert_eq!(kept.instance_id, "i-0003");
}

#[test]
fn a_missing_record_is_pointed_without_taking_the_node_down() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    w.dns.remove(0);
    let p = plan(&d, &w.observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 1);
    assert!(matches!(
        &cp.waves[0].steps[0].action,
        Action::SetDns { name } if name == "node1.bitcoin.internal"
    ));
    assert!(cp.waves[0].disrupted().is_empty());
    assert_eq!(cp.approval, None);
}

/// Hardening: a coin gone from the repository, a coin losing more than
/// `limits.max_retire_percent` of its nodes, or any retirement while several coins disappear
/// at once, is refused unless fleet.yaml's `retire:` names the coin.
#[test]
fn retirements_the_revision_does_not_ask_for_are_refused() {
    let d = desired("28.1", "");
    // dogecoin and monero run, but the repository has only bitcoin.
    let mut w = World::running(&d, "28.1");
    w.node("dogecoin", "eu-central-1a", 1, "1.14.9", |_| {});
    w.node("monero", "eu-central-1a", 1, "0.18.3.4", |_| {});
    let o = w.observed(&d);
    let p = plan(&d, &o, 0);
    for coin in ["dogecoin", "monero"] {
        let cp = p.coin(coin).unwrap();
        assert_eq!(cp.refusals.len(), 1, "{coin}: {:?}", cp.refusals);
        assert!(
            cp.refusals[0].reason.contains("every node of")
                && cp.refusals[0].reason.contains(&format!("retire: [{coin}]")),
            "{}",
            cp.refusals[0].reason
        );
    }
    // Confirmed: planned, with the approval it always needs.
    let mut d2 = d.clone();
    d2.fleet.retire = vec![CoinName::parse("dogecoin").unwrap()];
    let p = plan(&d2, &o, 0);
    assert!(p.coin("dogecoin").unwrap().refusals.is_empty());
    assert!(p.coin("dogecoin").unwrap().approval.is_some());
    assert!(!p.coin("monero").unwrap().refusals.is_empty());

    // Shrinking bitcoin from 2 to 1 node per zone retires 3 of 6 (50 %): allowed; with a
    // limit of 40 % it is refused.
    let shrunk = desired("28.1", "").clone();
    let mut small = shrunk.clone();
    let c = small.coins.get_mut("bitcoin").unwrap();
    c.nodes_per_zone = 1;
    c.nodes.retain(|s| s.index == 1);
    let o = World::running(&shrunk, "28.1").observed(&small);
    assert!(
        plan(&small, &o, 0)
            .coin("bitcoin")
            .unwrap()
            .refusals
            .is_empty()
    );
    small.fleet.max_retire_percent = 40;
    let p = plan(&small, &o, 0);
    let r = &p.coin("bitcoin").unwrap().refusals;
    assert!(
        r.iter()
            .any(|r| r.reason.contains("3 of bitcoin's 6 nodes")),
        "{r:?}"
    );

    // dogecoin and monero both gone (confirmed) and bitcoin shrunk to 1 node per zone (50 %,
    // allowed on its own): in a revision that drops several coins, even that is refused
    // until confirmed.
    let mut w = World::running(&desired("28.1", ""), "28.1");
    w.node("dogecoin", "eu-central-1a", 1, "1.14.9", |_| {});
    w.node("monero", "eu-central-1a", 1, "0.18.3.4", |_| {});
    let mut small = desired("28.1", "");
    let c = small.coins.get_mut("bitcoin").unwrap();
    c.nodes_per_zone = 1;
    c.nodes.retain(|s| s.index == 1);
    small.fleet.retire = ["dogecoin", "monero"]
        .map(|c| CoinName::parse(c).unwrap())
        .to_vec();
    let o = w.observed(&small);
    let p = plan(&small, &o, 0);
    let r = &p.coin("bitcoin").unwrap().refusals;
    assert!(
        r.iter().any(|r| r
            .reason
            .contains("2 coins disappear in this revision (dogecoin, monero)")),
        "{r:?}"
    );
    assert!(p.coin("dogecoin").unwrap().refusals.is_empty());
    small.fleet.retire.push(CoinName::parse("bitcoin").unwrap());
    let p = plan(&small, &o, 0);
    assert!(p.coin("bitcoin").unwrap().refusals.is_empty());
}

/// `d` with bitcoin's coin edited by `edit`.
fn edited(d: &Desired, edit: impl FnOnce(&mut fleet_repo_schema::Coin)) -> Desired {
    let mut d = d.clone();
    edit(d.coins.get_mut("bitcoin").unwrap());
    d
}

fn actions(cp: &CoinPlan) -> Vec<(String, String)> {
    cp.waves
        .iter()
        .flat_map(|w| &w.steps)
        .map(|s| {
            (
                s.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                s.action.to_string(),
            )
        })
        .collect()
}

#[test]
fn a_changed_setting_is_a_reconfigure_rolled_out_like_an_upgrade() {
    let d = desired("28.1", "");
    let w = World::running(&d, "28.1");
    let d2 = edited(&d, |c| {
        c.container_config.insert(
            fleet_repo_schema::values::EnvName::parse("DBCACHE_MB").unwrap(),
            fleet_repo_schema::values::EnvValue::parse("8000").unwrap(),
        );
    });
    let p = plan(&d2, &w.observed(&d2), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 6, "{:#?}", actions(cp));
    // Zone by zone, within max_unavailable 2, each wave gated like an upgrade's.
    let zones: Vec<_> = cp.waves.iter().map(|w| w.zone.clone().unwrap()).collect();
    assert_eq!(
        zones.iter().map(|z| z.as_str()).collect::<Vec<_>>(),
        ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
    );
    for w in &cp.waves {
        assert_eq!(disrupted(w).len(), 2);
        for s in &w.steps {
            assert_eq!(
                s.action,
                Action::Reconfigure {
                    changed: vec![ConfigPart::Container],
                    settings: vec![crate::node_config::SettingChange::Added {
                        part: ConfigPart::Container,
                        setting: "container_config.DBCACHE_MB".into()
                    }],
                    version: Version::parse("28.1").unwrap(),
                    restart: true
                }
            );
        }
    }
    // The plan names what changed, never a value.
    let text = cp.waves[0].steps[0].action.to_string();
    assert_eq!(
        text,
        "reconfigure container_config.DBCACHE_MB (new), then restart the daemon"
    );
    assert_eq!(cp.approval, None, "a setting is not a version change");
}

#[test]
fn the_plan_names_the_settings_that_differ_never_their_values() {
    let base = |c: &mut fleet_repo_schema::Coin| {
        for (k, v) in [("DBCACHE", "4000"), ("PRUNE", "0"), ("TXINDEX", "1")] {
            c.container_config.insert(
                fleet_repo_schema::values::EnvName::parse(k).unwrap(),
                fleet_repo_schema::values::EnvValue::parse(v).unwrap(),
            );
        }
    };
    let d = edited(&desired("28.1", ""), base);
    // DBCACHE changes, PRUNE goes, the image pin and a host setting are new.
    let d2 = edited(&d, |c| {
        let env = |s: &str| fleet_repo_schema::values::EnvName::parse(s).unwrap();
        c.container_config.insert(
            env("DBCACHE"),
            fleet_repo_schema::values::EnvValue::parse("s3cr3t-looking-8000").unwrap(),
        );
        c.container_config.remove(&env("PRUNE"));
        c.host_config.insert(
            env("EXTRA_ARGS"),
            fleet_repo_schema::values::EnvValue::parse("-debug").unwrap(),
        );
    });
    let p = plan(&d2, &World::running(&d, "28.1").observed(&d2), 0);
    let text = p.coin("bitcoin").unwrap().waves[0].steps[0]
        .action
        .to_string();
    assert_eq!(
        text,
        "reconfigure host_config.EXTRA_ARGS (new), container_config.DBCACHE, 1 setting of container_config removed, then restart the daemon"
    );
    assert!(!text.contains("8000") && !text.contains("debug"), "{text}");
    // A node without the per-setting record (older, or too many settings): parts only.
    let mut w = World::running(&d, "28.1");
    for i in &mut w.instances {
        i.tags.remove(tags::CONFIG_KEYS);
    }
    let p = plan(&d2, &w.observed(&d2), 0);
    assert_eq!(
        p.coin("bitcoin").unwrap().waves[0].steps[0]
            .action
            .to_string(),
        "reconfigure host_config/image.repository/ports, container_config, then restart the daemon"
    );
}

#[test]
fn a_metrics_script_alone_is_written_without_a_restart() {
    let d = desired("28.1", "");
    let w = World::running(&d, "28.1");
    let d2 = edited(&d, |c| {
        c.metric_scripts.insert(
            fleet_repo_schema::values::MetricName::parse("peers").unwrap(),
            "#!/bin/sh\necho 8\n".into(),
        );
    });
    let p = plan(&d2, &w.observed(&d2), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 6);
    for w in &cp.waves {
        assert!(
            disrupted(w).is_empty(),
            "nothing goes down: {:#?}",
            actions(cp)
        );
    }
    assert!(matches!(
        &cp.waves[0].steps[0].action,
        Action::Reconfigure { changed, restart: false, .. } if *changed == [ConfigPart::Metrics]
    ));
}

#[test]
fn a_reconfigure_with_an_upgrade_writes_first_and_restarts_once() {
    let d = desired("28.1", "");
    let w = World::running(&d, "28.1");
    let d2 = edited(&desired("28.1.1", ""), |c| {
        c.secrets =
            Some(fleet_repo_schema::values::SecretName::parse("nodes/bitcoin/rpc2").unwrap());
    });
    let p = plan(&d2, &w.observed(&d2), 0);
    let cp = p.coin("bitcoin").unwrap();
    let first: Vec<_> = actions(cp)
        .into_iter()
        .filter(|(n, _)| n == "bitcoin/eu-central-1a/1")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        first,
        [
            "reconfigure secrets (no restart)".to_string(),
            "upgrade 28.1 → 28.1.1, snapshot first".to_string()
        ]
    );
}

#[test]
fn a_node_without_a_fingerprint_is_reconfigured_in_every_part() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    w.instances[0].tags.remove(tags::CONFIG);
    let p = plan(&d, &w.observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 1);
    let s = &cp.waves[0].steps[0];
    assert!(matches!(
        &s.action,
        Action::Reconfigure { changed, restart: true, .. } if *changed == ConfigPart::ALL
    ));
    assert!(s.reason.contains("fleet:config"), "{}", s.reason);
}

#[test]
fn tags_and_security_groups_converge_without_taking_a_node_down() {
    let d = desired("28.1", "tags: { CostCenter: custody }\n");
    let mut w = World::running(&d, "28.1");
    for i in &mut w.instances {
        *i = i
            .clone()
            .with_security_groups(vec!["sg-0123456789abcdef0".into()]);
    }
    // The coin's tag changed, and fleet.yaml names another group.
    let mut d2 = edited(&desired("28.1", "tags: { CostCenter: trading }\n"), |_| {});
    d2.fleet.security_groups =
        vec![fleet_repo_schema::values::SecurityGroupId::parse("sg-0fedcba9876543210").unwrap()];
    let p = plan(&d2, &w.observed(&d2), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 12, "{:#?}", actions(cp));
    for w in &cp.waves {
        assert!(disrupted(w).is_empty());
    }
    let first: Vec<String> = actions(cp)
        .into_iter()
        .filter(|(n, _)| n == "bitcoin/eu-central-1a/1")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        first,
        [
            "tag CostCenter=trading",
            "security groups sg-0123456789abcdef0 → sg-0fedcba9876543210 and the coin's own"
        ]
    );
    // Observed without its groups (a provider that does not read them): no step for them.
    let w = World::running(&d, "28.1");
    let p = plan(&d, &w.observed(&d), 0);
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn a_p2p_node_without_a_public_address_is_left_for_a_person() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    w.instances[2] = w.instances[2].clone().with_public_ip(false);
    w.instances[3] = w.instances[3].clone().with_public_ip(true);
    let p = plan(&d, &w.observed(&d), 0);
    assert!(p.is_empty(), "no step can give a running instance one");
    assert_eq!(p.flagged.len(), 1, "{:#?}", p.flagged);
    assert_eq!(p.flagged[0].what, "i-0003");
    assert!(p.flagged[0].reason.contains("no public address"));
}

#[test]
fn a_larger_root_volume_grows_online_and_a_smaller_one_is_only_said() {
    let d = desired("28.1", "");
    let root = |w: &mut World, gb: u32| {
        for (n, i) in w.instances.iter_mut().enumerate() {
            *i = i.clone().with_root_volume(ObservedVolume {
                volume_id: format!("vol-root-{n}"),
                size_gb: gb,
                snapshot_id: None,
            });
        }
    };
    // Launched at 16 GB; the coin now asks for 32.
    let d2 = edited(&d, |c| c.root_volume_gb = 32);
    let mut w = World::running(&d, "28.1");
    root(&mut w, 16);
    let p = plan(&d2, &w.observed(&d2), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 6);
    assert!(cp.waves.iter().all(|w| disrupted(w).is_empty()));
    assert_eq!(
        cp.waves[0].steps[0].action.to_string(),
        "grow root volume 16 → 32 GB"
    );
    // Larger than asked: EBS cannot shrink it; flagged, nothing refused.
    let mut w = World::running(&d, "28.1");
    root(&mut w, 64);
    let p = plan(&d, &w.observed(&d), 0);
    assert!(p.is_empty());
    assert_eq!(p.flagged.len(), 6);
    assert!(p.flagged[0].reason.contains("cannot shrink"));
}

#[test]
fn the_coins_own_group_is_made_first_then_kept_in_step() {
    use crate::network::{CoinNetwork, IngressRule, ObservedGroup, Protocol, Source};
    let d = desired("28.1", "");
    let fleet_group = "sg-0123456789abcdef0".to_string();
    let in_groups = |groups: Vec<String>| {
        let mut w = World::running(&d, "28.1");
        for i in &mut w.instances {
            *i = i.clone().with_security_groups(groups.clone());
        }
        w
    };
    // No group yet: made first (P2P from anywhere; no rpc_from, so no RPC rule), then every
    // node joins it; nothing goes down.
    let p = plan(
        &d,
        &in_groups(vec![fleet_group.clone()]).observed_with(&d, vec![]),
        0,
    );
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.waves[0].kind, WaveKind::Network);
    assert_eq!(
        cp.waves[0].steps[0].action.to_string(),
        "create security group fleet-bitcoin: allow tcp 8333 from 0.0.0.0/0, udp 8333 from 0.0.0.0/0"
    );
    assert_eq!(cp.step_count(), 7, "{:#?}", actions(cp));
    assert!(cp.waves.iter().all(|w| disrupted(w).is_empty()));
    assert!(
        cp.waves[1..]
            .iter()
            .flat_map(|w| &w.steps)
            .all(|s| matches!(
                &s.action,
                Action::SetSecurityGroups {
                    coin_group: None,
                    ..
                }
            ))
    );

    // The group as it should be, every node in it: nothing to do.
    let net = CoinNetwork::of(&d.fleet, &d.coins["bitcoin"]);
    let group = |rules: Vec<IngressRule>| ObservedGroup {
        group_id: "sg-0000000000000000c".into(),
        name: net.group_name(),
        coin: Some("bitcoin".into()),
        vpc_id: net.vpc_id.clone(),
        rules,
    };
    let both = vec![fleet_group.clone(), "sg-0000000000000000c".to_string()];
    let p = plan(
        &d,
        &in_groups(both.clone()).observed_with(&d, vec![group(net.rules.clone())]),
        0,
    );
    assert!(p.is_empty(), "{p:#?}");

    // rpc_from set, and a rule someone added by hand: one online step adds and revokes.
    let mut d2 = d.clone();
    d2.fleet.rpc_from = vec![fleet_repo_schema::values::Cidr::parse("10.20.0.0/16").unwrap()];
    let stray = IngressRule {
        protocol: Protocol::Tcp,
        from_port: 22,
        to_port: 22,
        source: Source::Ipv4("0.0.0.0/0".into()),
    };
    let mut rules = net.rules.clone();
    rules.push(stray);
    let p = plan(
        &d2,
        &in_groups(both.clone()).observed_with(&d2, vec![group(rules)]),
        0,
    );
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 1, "{:#?}", actions(cp));
    assert_eq!(
        cp.waves[0].steps[0].action.to_string(),
        "security group fleet-bitcoin (sg-0000000000000000c): allow tcp 8332 from 10.20.0.0/16; revoke tcp 22 from 0.0.0.0/0"
    );

    // The group of a coin that is gone is said, never deleted.
    let mut gone = group(vec![]);
    gone.coin = Some("monero".into());
    gone.name = "fleet-monero".into();
    let p = plan(
        &d,
        &in_groups(both).observed_with(&d, vec![group(net.rules.clone()), gone]),
        0,
    );
    assert!(p.is_empty());
    assert_eq!(p.flagged.len(), 1);
    assert!(
        p.flagged[0]
            .reason
            .contains("no longer in the fleet repository")
    );
}

#[test]
fn a_step_that_needs_a_missing_secret_is_refused_before_it_runs() {
    use crate::provider::SecretState;
    let d = desired("28.1", "secrets: nodes/bitcoin/rpc\n");
    let with_secret = |w: World, d: &Desired, state: SecretState| {
        Observed::assign(
            d,
            Observation::new(w.instances, w.dns, vec![], 0)
                .with_secrets(BTreeMap::from([("nodes/bitcoin/rpc".to_string(), state)])),
        )
    };
    // An upgrade does not read the secret (the node's environment has its keys already).
    let up = desired("28.2", "secrets: nodes/bitcoin/rpc\n");
    let p = plan(
        &up,
        &with_secret(World::running(&d, "28.1"), &up, SecretState::Missing),
        0,
    );
    assert!(!p.has_refusals(), "{p:#?}");
    // A reconfiguration does, and a launch (every boot does).
    let changed = desired(
        "28.1",
        "secrets: nodes/bitcoin/rpc\ncontainer_config: { DBCACHE: \"4000\" }\n",
    );
    for state in [SecretState::Missing, SecretState::ScheduledForDeletion] {
        let p = plan(
            &changed,
            &with_secret(World::running(&d, "28.1"), &changed, state),
            0,
        );
        let cp = p.coin("bitcoin").unwrap();
        assert_eq!(cp.refusals.len(), 1, "{cp:#?}");
        let why = &cp.refusals[0].reason;
        assert!(why.contains("secret nodes/bitcoin/rpc"), "{why}");
        assert!(why.contains("6 steps of this plan"), "{why}");
    }
    let p = plan(
        &d,
        &with_secret(World::default(), &d, SecretState::Missing),
        0,
    );
    assert!(
        p.coin("bitcoin").unwrap().refusals[0]
            .reason
            .contains("does not exist")
    );
    // A replacement boots a new instance, which reads it too.
    let mut w = World::running(&d, "28.1");
    for i in &mut w.instances {
        *i = i.clone().with_image(Some("ami-0aaaaaaaaaaaaaaaa".into()));
    }
    let p = plan(&d, &with_secret(w, &d, SecretState::Missing), 0);
    let why = &p.coin("bitcoin").unwrap().refusals[0].reason;
    assert!(why.contains("6 steps of this plan"), "{why}");
    // The secret there: no refusal.
    let p = plan(
        &changed,
        &with_secret(World::running(&d, "28.1"), &changed, SecretState::Exists),
        0,
    );
    assert!(!p.has_refusals());
}

#[test]
fn a_new_node_ami_replaces_each_node_zone_by_zone_and_a_cut_replacement_resumes() {
    let d = desired("28.1", "");
    let on = |w: &mut World, ami: &str| {
        for i in &mut w.instances {
            *i = i.clone().with_image(Some(ami.into()));
        }
    };
    // Launched from the AMI fleet.yaml names: nothing to do.
    let mut w = World::running(&d, "28.1");
    on(&mut w, "ami-0123456789abcdef0");
    assert!(plan(&d, &w.observed(&d), 0).is_empty());
    // From another one (and a version behind): one `replace` and its `hand-over` per node,
    // nothing else for it, two nodes a wave as max_unavailable says, zone by zone.
    let up = desired("28.2", "");
    let mut w = World::running(&d, "28.1");
    on(&mut w, "ami-0aaaaaaaaaaaaaaaa");
    let p = plan(&up, &w.observed(&up), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 12, "{:#?}", actions(cp));
    for w in &cp.waves {
        let names: Vec<&str> = w.steps.iter().map(|s| s.action.name()).collect();
        assert_eq!(names, ["replace", "hand-over", "replace", "hand-over"]);
        // The hand-over is the one step that waits for the gate.
        assert!(
            w.steps
                .iter()
                .all(|s| s.action.after_gate() == (s.action.name() == "hand-over"))
        );
    }
    assert!(cp.waves.iter().all(|w| disrupted(w).len() == 2));
    assert_eq!(
        cp.waves[0].steps[0].action.to_string(),
        "replace the instance (AMI ami-0aaaaaaaaaaaaaaaa → ami-0123456789abcdef0): the old one is stopped and kept, the new one takes over the data volume"
    );
    assert_eq!(
        cp.waves[0].steps[1].action.to_string(),
        "once the new instance is in sync: point node1.bitcoin.internal at it, then terminate the old one"
    );
    assert_eq!(cp.from_versions, [Version::parse("28.1").unwrap()]);
    // A new machine image asks a person first (approval: major, and any policy but none).
    assert!(
        cp.approval
            .as_ref()
            .is_some_and(|a| a.reasons.contains(&ApprovalReason::Replace {
                nodes: 6,
                policy: fleet_repo_schema::Approval::Major
            })),
        "{:#?}",
        cp.approval
    );
    // In another subnet than the zone's in network.subnets: the same, for that node only.
    let mut w = World::running(&d, "28.1");
    on(&mut w, "ami-0123456789abcdef0");
    w.instances[4] = w.instances[4]
        .clone()
        .with_subnet(Some("subnet-0ccccccccccccccc9".into()));
    w.instances[5] = w.instances[5]
        .clone()
        .with_subnet(Some("subnet-0ccccccccccccccc3".into()));
    let p = plan(&d, &w.observed(&d), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 2, "{:#?}", actions(cp));
    assert_eq!(
        cp.waves[0].steps[0].action.to_string(),
        "replace the instance (subnet subnet-0ccccccccccccccc9 → subnet-0ccccccccccccccc3): the old one is stopped and kept, the new one takes over the data volume"
    );

    // Cut off half way: the old instance (marked, stopped, its volume already moved) keeps
    // the slot, the replacement is neither a duplicate nor flagged, and the step resumes.
    let mut w = World::running(&d, "28.1");
    on(&mut w, "ami-0123456789abcdef0");
    let old = w.instances[0].clone();
    let mut t = old.tags.clone();
    t.insert(tags::PENDING.into(), "replace:ami-0123456789abcdef0".into());
    w.instances[0] = ObservedInstance::new(
        old.instance_id.clone(),
        t,
        InstanceState::Stopped,
        old.instance_type.clone(),
        old.private_ip.clone(),
        None,
    )
    .with_image(Some("ami-0aaaaaaaaaaaaaaaa".into()));
    let mut t = old.tags.clone();
    t.insert(tags::REPLACES.into(), old.instance_id.clone());
    w.instances.push(
        ObservedInstance::new(
            "i-0000".into(),
            t,
            InstanceState::Running,
            old.instance_type.clone(),
            Some("10.0.9.9".into()),
            old.data_volume.clone(),
        )
        .with_image(Some("ami-0123456789abcdef0".into())),
    );
    let o = w.clone().observed(&d);
    assert_eq!(
        o.node(&NodeKey::parse("bitcoin", "eu-central-1a", 1).unwrap())
            .unwrap()
            .instance_id,
        old.instance_id
    );
    let p = plan(&d, &o, 0);
    assert!(p.flagged.is_empty(), "{:#?}", p.flagged);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 2, "{:#?}", actions(cp));
    assert_eq!(
        cp.waves[0].steps[0].reason,
        "an earlier replacement did not finish"
    );
    assert!(matches!(
        cp.waves[0].steps[1].action,
        Action::HandOver { .. }
    ));
    assert_eq!(cp.approval, None, "the version is as recorded");
    // node_ami set back to the old instance's before the replacement finished: it is undone
    // (one step, gated like a start, without asking), not finished towards an AMI the
    // repository no longer names.
    let mut back = d.clone();
    back.fleet.node_ami = fleet_repo_schema::values::AmiId::parse("ami-0aaaaaaaaaaaaaaaa").unwrap();
    // While the old instance's subnet is unknown, nothing says it is wanted again: resumed.
    let p = plan(&back, &w.clone().observed(&back), 0);
    assert_eq!(
        p.coin("bitcoin").unwrap().waves[0].steps[0].reason,
        "an earlier replacement did not finish"
    );
    let zone_a = fleet_repo_schema::values::Zone::parse("eu-central-1a").unwrap();
    let subnet = back.fleet.subnets[&zone_a].to_string();
    w.instances[0] = w.instances[0].clone().with_subnet(Some(subnet));
    let p = plan(&back, &w.observed(&back), 0);
    let cp = p.coin("bitcoin").unwrap();
    // (The other nodes, launched from the AMI named until now, are replaced as usual.)
    let names: Vec<&str> = cp
        .waves
        .iter()
        .flat_map(|w| &w.steps)
        .filter(|s| s.instance_id.as_ref() == Some(&old.instance_id))
        .map(|s| s.action.name())
        .collect();
    assert_eq!(names, ["undo-replace"], "{cp:#?}");
    let undo = &cp.waves[0].steps[0];
    assert_eq!(undo.instance_id.as_ref(), Some(&old.instance_id));
    assert!(undo.action.disruptive() && !undo.action.after_gate());
    assert_eq!(
        undo.action.to_string(),
        "undo the replacement by an instance of ami-0123456789abcdef0: the data volume back to this instance, which starts again; the replacement is terminated"
    );
    assert!(
        cp.approval.as_ref().is_some_and(|a| a.reasons
            == [ApprovalReason::Replace {
                nodes: 5,
                policy: fleet_repo_schema::Approval::Major
            }]),
        "the undo asks nothing, the five replacements do: {:#?}",
        cp.approval
    );

    // Finished, the old instance terminating: the replacement is the slot's node.
    let mut w2 = World::running(&d, "28.1");
    on(&mut w2, "ami-0123456789abcdef0");
    let first = w2.instances[0].clone();
    let mut t = first.tags.clone();
    t.insert(tags::REPLACES.into(), "i-9999".into());
    w2.instances[0] = ObservedInstance::new(
        first.instance_id.clone(),
        t,
        InstanceState::Running,
        first.instance_type.clone(),
        first.private_ip.clone(),
        first.data_volume.clone(),
    )
    .with_image(Some("ami-0123456789abcdef0".into()));
    w2.instances[0].tags.extend(
        first
            .tags
            .clone()
            .into_iter()
            .filter(|(k, _)| k.starts_with("fleet:config")),
    );
    w2.instances.push(
        ObservedInstance::new(
            "i-9999".into(),
            first.tags.clone(),
            InstanceState::ShuttingDown,
            first.instance_type.clone(),
            Some("10.0.9.8".into()),
            None,
        )
        .with_image(Some("ami-0aaaaaaaaaaaaaaaa".into())),
    );
    let o = w2.observed(&d);
    assert_eq!(
        o.node(&NodeKey::parse("bitcoin", "eu-central-1a", 1).unwrap())
            .unwrap()
            .instance_id,
        first.instance_id
    );
    let p = plan(&d, &o, 0);
    assert!(p.is_empty() && p.flagged.is_empty(), "{p:#?}");
}

#[test]
fn a_tag_the_coin_dropped_is_deleted_and_a_tag_someone_else_wrote_is_not() {
    let d = desired("28.1", "tags: { CostCenter: custody, Team: nodes }\n");
    let mut w = World::running(&d, "28.1");
    for i in &mut w.instances {
        i.tags.insert("Backup".into(), "daily".into());
    }
    // Team is dropped from the coin file; Backup was never the coin's.
    let d2 = desired("28.1", "tags: { CostCenter: custody }\n");
    let p = plan(&d2, &w.observed(&d2), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(cp.step_count(), 6, "{:#?}", actions(cp));
    let s = &cp.waves[0].steps[0];
    assert_eq!(s.action.to_string(), "tag remove Team");
    assert!(cp.waves.iter().all(|w| disrupted(w).is_empty()));
    // A node launched before the record: it gets the record, and nothing is deleted.
    let mut w = World::running(&d, "28.1");
    for i in &mut w.instances {
        i.tags.remove(tags::COIN_TAGS);
    }
    let p = plan(&d2, &w.observed(&d2), 0);
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(
        cp.waves[0].steps[0].action.to_string(),
        "record which tags are the coin's (fleet:coin-tags)"
    );
}

/// Readings of every node of `o` reporting `client` (None for the nodes not listed).
fn reporting(o: &Observed, clients: &[(usize, &str)]) -> Observed {
    let mut readings = BTreeMap::new();
    for (i, c) in clients {
        readings.insert(
            o.nodes[*i].key.clone(),
            Ok(crate::health::ChainStatus {
                blocks: 10,
                headers: 10,
                initial_block_download: false,
                client: crate::health::DaemonVersion::from_client(c),
            }),
        );
    }
    o.clone().with_readings(&readings)
}

#[test]
fn a_daemon_that_runs_another_version_than_its_tag_is_drift_with_its_reason() {
    let d = desired("28.1", "");
    let o = World::running(&d, "27.2").observed(&d);
    // Node 0 was upgraded by hand to 28.0; node 1 says what its tag says; the rest are not
    // read (the tag stands).
    let p = plan(
        &d,
        &reporting(&o, &[(0, "/Satoshi:28.0.0/"), (1, "/Satoshi:27.2.0/")]),
        0,
    );
    let cp = p.coin("bitcoin").unwrap();
    let steps: Vec<&Step> = cp.waves.iter().flat_map(|w| &w.steps).collect();
    assert_eq!(steps.len(), 6, "every node is behind 28.1: {steps:#?}");
    let first = steps
        .iter()
        .find(|s| s.node.as_ref() == Some(&o.nodes[0].key))
        .unwrap();
    assert_eq!(
        first.reason,
        "version is 28.1: the daemon reports 28.0.0; fleet's tag says 27.2"
    );
    match &first.action {
        Action::Upgrade {
            from: Some(f),
            confirm_first: false,
            ..
        } => assert_eq!(f, "28.0.0"),
        other => panic!("{other:?}"),
    }
    // 28.0 → 28.1 is a minor change and 27.2 → 28.1 a major one: the approval still asks.
    assert!(cp.approval.is_some());
    assert!(cp.from_versions.iter().any(|v| v.as_str() == "28.0.0"));

    // At the target by hand while the tag says 28.1: the daemon runs 27.2, so it is
    // upgraded back, and a node at the repository's version by its tag and its daemon is not.
    let o = World::running(&d, "28.1").observed(&d);
    let p = plan(
        &d,
        &reporting(&o, &[(2, "/Satoshi:27.2.0/"), (3, "/Satoshi:28.1.0/")]),
        0,
    );
    let cp = p.coin("bitcoin").unwrap();
    assert_eq!(actions(cp).len(), 1, "{:#?}", actions(cp));
    assert_eq!(cp.waves[0].steps[0].node.as_ref(), Some(&o.nodes[2].key));
    // The tag already names the target: the record is corrected first.
    assert!(matches!(
        cp.waves[0].steps[0].action,
        Action::Upgrade {
            confirm_first: false,
            reported: true,
            ..
        }
    ));
}

#[test]
fn a_daemon_already_at_the_target_is_brought_under_its_unit_and_its_files_follow() {
    let d = desired("28.1", "");
    let o = World::running(&d, "27.2").observed(&d);
    let p = plan(&d, &reporting(&o, &[(0, "/Satoshi:28.1.0/")]), 0);
    let cp = p.coin("bitcoin").unwrap();
    let first = cp
        .waves
        .iter()
        .flat_map(|w| &w.steps)
        .find(|s| s.node.as_ref() == Some(&o.nodes[0].key))
        .unwrap();
    // An upgrade (fleet-node upgrade enables the target's unit and starts nothing already
    // running), not a bare confirmation that would leave 27.2's unit enabled for the next
    // boot; the tag names another version, so nothing is recorded first.
    match &first.action {
        Action::Upgrade {
            from: Some(f),
            confirm_first: false,
            reported: false,
            ..
        } => assert_eq!(f, "28.1.0"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        first.reason,
        "version is 28.1: the daemon reports 28.1.0; fleet's tag says 27.2"
    );
    // Files that need a restart come after that upgrade, at the target, with their own.
    let changed = edited(&d, |c| {
        c.container_config.insert(
            fleet_repo_schema::values::EnvName::parse("DBCACHE").unwrap(),
            fleet_repo_schema::values::EnvValue::parse("4096").unwrap(),
        );
    });
    let p = plan(&changed, &reporting(&o, &[(0, "/Satoshi:28.1.0/")]), 0);
    let steps: Vec<&Step> = p
        .coin("bitcoin")
        .unwrap()
        .waves
        .iter()
        .flat_map(|w| &w.steps)
        .filter(|s| s.node.as_ref() == Some(&o.nodes[0].key))
        .collect();
    match &steps[..] {
        [
            Step {
                action: Action::Upgrade { .. },
                ..
            },
            Step {
                action:
                    Action::Reconfigure {
                        restart: true,
                        version,
                        ..
                    },
                ..
            },
        ] => assert_eq!(version.as_str(), "28.1"),
        other => panic!("{other:#?}"),
    }
    // The daemon reports exactly the target's words: still an upgrade, the tag is wrong.
    let p = plan(&d, &reporting(&o, &[(0, "28.1")]), 0);
    assert!(
        p.coin("bitcoin")
            .unwrap()
            .waves
            .iter()
            .flat_map(|w| &w.steps)
            .any(|s| s.node.as_ref() == Some(&o.nodes[0].key)
                && s.reason
                    .contains("the daemon reports 28.1; fleet's tag says 27.2"))
    );
}

#[test]
fn a_tag_that_names_no_number_stands_and_a_step_under_way_is_not_judged_by_the_daemon() {
    let d = desired("latest", "");
    let o = World::running(&d, "latest").observed(&d);
    let p = plan(&d, &reporting(&o, &[(0, "/Satoshi:28.1.0/")]), 0);
    assert!(p.is_empty(), "{p:#?}");

    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    w.instances[0].pending = Some(PendingStep::ChangeType {
        to: "m5.xlarge".into(),
    });
    let o = w.observed(&d);
    let r = reporting(&o, &[(0, "/Satoshi:27.2.0/")]);
    assert_eq!(r.nodes[0].daemon, None);
}

/// Every node of `w` as `fleet adopt` records it: the repository's fingerprint with the node
/// side marked as the operators' own, without the parts in `differ`.
fn adopted(w: &mut World, d: &Desired, differ: &[ConfigPart]) {
    for (i, s) in w.instances.iter_mut().zip(d.nodes()) {
        let files = crate::node_config::NodeFiles::of(&d.coins[s.coin.as_str()], s).unwrap();
        let mut fp = files.fingerprint();
        for p in differ {
            fp.forget(*p);
        }
        i.tags.insert(tags::CONFIG.into(), fp.adopted().to_tag());
    }
}

#[test]
fn an_adopted_node_gets_fleets_node_side_only_before_a_step_that_needs_it() {
    let d = desired("28.1", "");
    // Adopted, as the repository says: nothing to do (adopting restarts nothing, and the
    // plan after it is empty).
    let mut w = World::running(&d, "28.1");
    adopted(&mut w, &d, &[]);
    let mut again = World::running(&d, "28.1");
    adopted(&mut again, &d, &[]);
    assert!(plan(&d, &again.observed(&d), 0).is_empty());
    // An upgrade: fleet's node side first, without a restart of its own, then the upgrade
    // (the one restart), on every node.
    let up = desired("28.2", "");
    let p = plan(&up, &w.observed(&up), 0);
    let a = actions(p.coin("bitcoin").unwrap());
    assert_eq!(a.len(), 12, "{a:#?}");
    for pair in a.chunks(2) {
        assert_eq!(
            pair[0].1, "reconfigure fleet's node side (no restart)",
            "{a:#?}"
        );
        assert!(pair[1].1.starts_with("upgrade"), "{a:#?}");
    }
    // A change of type: the node side first (its start must find the unit enabled).
    let mut typed = World::running(&d, "28.1");
    adopted(&mut typed, &d, &[]);
    for i in &mut typed.instances {
        i.instance_type = "m5.xlarge".into();
    }
    let a = actions(plan(&d, &typed.observed(&d), 0).coin("bitcoin").unwrap());
    assert_eq!(
        a[0].1, "reconfigure fleet's node side (no restart)",
        "{a:#?}"
    );
    assert!(a[1].1.starts_with("change type"), "{a:#?}");
    // Settings found to differ at adoption: reconfigured with a restart, node side included.
    let mut w = World::running(&d, "28.1");
    adopted(&mut w, &d, &[ConfigPart::Container]);
    let a = actions(plan(&d, &w.observed(&d), 0).coin("bitcoin").unwrap());
    assert_eq!(a.len(), 6, "{a:#?}");
    assert!(
        a.iter()
            .all(|(_, s)| s.starts_with("reconfigure container_config")
                && s.contains("fleet's node side")
                && s.ends_with("then restart the daemon")),
        "{a:#?}"
    );
}

#[test]
fn a_restore_cut_off_is_finished_before_anything_else() {
    let d = desired("28.1", "");
    let mut w = World::running(&d, "28.1");
    // Stopped, its old volume detached, the new one not attached yet.
    w.instances[0].pending = Some(PendingStep::Restore {
        snapshot: "snap-0abc".into(),
    });
    w.instances[0].state = InstanceState::Stopped;
    w.instances[0].data_volume = None;
    let o = w.observed(&d);
    let p = plan(&d, &o, 0);
    let steps: Vec<&Step> = p.coins[0].waves.iter().flat_map(|w| &w.steps).collect();
    assert_eq!(steps.len(), 1, "{p:#?}");
    assert_eq!(steps[0].node.as_ref(), Some(&o.nodes[0].key));
    assert_eq!(
        steps[0].action,
        Action::FinishRestore {
            snapshot: "snap-0abc".into()
        }
    );
    assert!(steps[0].action.disruptive());
    assert!(p.coins[0].refusals.is_empty(), "{:?}", p.coins[0].refusals);
}
