//! The executor on the aws provider, against moto server on loopback: a full upgrade of a
//! coin across three zones goes through the real SDK, and its SSM commands are issued zone
//! by zone, each zone only after the previous one passed its gate.
//!
//! moto's instances run no daemon (and their 10.x addresses are never dialled), so the
//! nodes' chains are played by a prober that answers like a restarted node: unreachable, then
//! catching up for a few readings, then in sync. It learns of restarts from the SSM commands
//! moto received (recorded by the test interceptor), so a gate that did not wait would be seen.

use async_trait::async_trait;
use fleet_repo_schema::values::{Duration, Version};
use fleet_tests::world::{AwsWorld, TestWorld};
use reconciler::apply::{ExecOptions, Executor};
use reconciler::clock::{Clock, SystemClock};
use reconciler::events::{Event, RecordingNotifier};
use reconciler::health::{ChainStatus, ProbeError, ProbeTarget, Prober, Verdict};
use reconciler::plan::plan;
use reconciler::provider::{LaunchSpec, ObservedVersion, Provider};
use reconciler::store::Journal;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Answers like a node: after each restart, one unreachable reading, three catching up, then
/// in sync.
struct RestartingNodes {
    world: Arc<AwsWorld>,
    /// instance -> (restarts seen, readings since the last one).
    seen: Mutex<BTreeMap<String, (usize, u32)>>,
}

#[async_trait]
impl Prober for RestartingNodes {
    async fn probe(&self, t: &ProbeTarget) -> Result<ChainStatus, ProbeError> {
        let restarts = self
            .world
            .commands()
            .iter()
            .filter(|(id, cmd)| {
                *id == t.instance_id
                    && reconciler::provider::commands::upgrade_target(cmd).is_some()
            })
            .count();
        let mut seen = self.seen.lock().unwrap();
        let e = seen.entry(t.instance_id.clone()).or_insert((0, 0));
        if restarts > e.0 {
            *e = (restarts, 0);
        }
        e.1 += 1;
        let synced = ChainStatus {
            blocks: 1_000,
            headers: 1_000,
            initial_block_download: false,
            client: None,
        };
        match (e.0, e.1) {
            (0, _) => Ok(synced),
            (_, 1) => Err(ProbeError::Unreachable {
                node: t.key.to_string(),
                addr: "loopback-script".into(),
                detail: "connection refused".into(),
            }),
            (_, n @ 2..=4) => Ok(ChainStatus {
                blocks: 990 + u64::from(n),
                headers: 1_000,
                initial_block_download: false,
                client: None,
            }),
            _ => Ok(synced),
        }
    }
}

#[tokio::test]
async fn upgrade_across_three_zones_issues_ssm_commands_in_zone_order() {
    let world = Arc::new(AwsWorld::new("apply_three_zones").await);
    let mut desired = world.desired().clone();
    desired.coins.retain(|k, _| k == "bitcoin");
    let coin = desired.coins.get_mut("bitcoin").unwrap();
    coin.rollout.bake = Duration(std::time::Duration::from_secs(1));
    assert_eq!(coin.zones.len(), 3);
    // The fleet as it was: bitcoin 27.2 in three zones.
    let mut old = coin.clone();
    old.version = Version::parse("27.2").unwrap();
    for slot in &old.nodes {
        let spec = LaunchSpec::new(&desired.fleet, &old, slot, None).unwrap();
        world.aws.launch(&spec).await.unwrap();
    }
    let desired = Arc::new(desired);
    let observed = fleet_tests::observe(&world.aws, &desired).await;
    let zone_of: BTreeMap<String, String> = observed
        .nodes
        .iter()
        .map(|n| (n.instance_id.clone(), n.key.zone.to_string()))
        .collect();
    let p = plan(&desired, &observed, SystemClock.now_ms());
    let cp = p.coin("bitcoin").unwrap();
    let zones: Vec<&str> = cp
        .waves
        .iter()
        .map(|w| w.zone.as_ref().map(|z| z.as_str()).unwrap_or(""))
        .collect();
    assert_eq!(zones, ["eu-central-1a", "eu-central-1b", "eu-central-1c"]);
    assert!(cp.approval.is_some(), "27.2 → 28.1 is major");

    let journal = Arc::new(Journal::in_memory());
    fleet_tests::approve_all(&journal, &p, "c1", "U012ABCDEF");
    let rec = Arc::new(RecordingNotifier::default());
    let exec = Arc::new(Executor {
        provider: Arc::new(world.aws.clone()),
        prober: Arc::new(RestartingNodes {
            world: Arc::clone(&world),
            seen: Mutex::default(),
        }),
        journal,
        notifier: rec.clone(),
        clock: Arc::new(SystemClock),
        opts: ExecOptions {
            parallel_coins: 4,
            poll_ms: 50,
            commit: "c1".into(),
        },
    });
    let before = world.commands().len();
    let report = exec.apply(&desired, &p, &CancellationToken::new()).await;
    assert!(report.all_completed(), "{report:#?}");

    // Exactly one restart per node, zone by zone, each naming its one instance.
    let restarts: Vec<(String, String)> = world.commands()[before..]
        .iter()
        .filter(|(_, c)| reconciler::provider::commands::upgrade_target(c).is_some())
        .cloned()
        .collect();
    let order: Vec<&str> = restarts
        .iter()
        .map(|(id, _)| zone_of[id].as_str())
        .collect();
    assert_eq!(order, ["eu-central-1a", "eu-central-1b", "eu-central-1c"]);
    for (_, c) in &restarts {
        // The example pins bitcoin 28.1's image by digest: the node pulls exactly that.
        assert_eq!(
            c,
            "/usr/local/sbin/fleet-node upgrade '28.1' 'sha256:fed9369828c2e48f88cfbe36ef0e2d25a14d0c48d6287e9eb59bde270e54c265'"
        );
    }
    // Each zone's node was seen catching up and then in sync before the next zone's step.
    let events = rec.events();
    for (a, b) in [
        ("eu-central-1a", "eu-central-1b"),
        ("eu-central-1b", "eu-central-1c"),
    ] {
        let waited = events
            .iter()
            .position(|(_, e)| matches!(e, Event::Gate { zone, verdict: Verdict::Waiting { .. }, .. } if zone == a))
            .expect("the gate waited");
        let synced = events
            .iter()
            .position(|(_, e)| matches!(e, Event::Gate { zone, verdict: Verdict::InSync { .. }, .. } if zone == a))
            .expect("the gate passed");
        let passed = events
            .iter()
            .position(|(_, e)| matches!(e, Event::ZonePassed { zone, .. } if zone == a))
            .expect("the zone passed");
        let next = events
            .iter()
            .position(
                |(_, e)| matches!(e, Event::StepStarted { node: Some(node), .. } if node.zone == b),
            )
            .expect("the next zone started");
        assert!(
            waited < synced && synced < passed && passed < next,
            "{a} → {b}"
        );
    }
    // What AWS now records: the version, no pending marker, a snapshot taken before each upgrade.
    let after = fleet_tests::observe(&world.aws, &desired).await;
    for n in &after.nodes {
        assert_eq!(
            n.version,
            ObservedVersion::Known {
                version: Version::parse("28.1").unwrap()
            }
        );
        assert!(n.pending.is_none());
    }
    let snaps = after
        .snapshots
        .iter()
        .filter(|s| s.reason == "before-upgrade:28.1")
        .count();
    assert_eq!(snaps, 3);
    assert!(plan(&desired, &after, SystemClock.now_ms()).is_empty());
}

/// On moto: a coin's tags and fleet.yaml's security groups changed on a running fleet are
/// planned as online steps and applied with CreateTags and ModifyInstanceAttribute; the
/// next plan is empty.
#[tokio::test]
async fn tags_and_security_groups_converge_on_aws() {
    let world = Arc::new(AwsWorld::new("apply_tags_groups").await);
    let mut desired = world.desired().clone();
    desired.coins.retain(|k, _| k == "litecoin");
    let coin = desired.coins["litecoin"].clone();
    for slot in &coin.nodes {
        let spec = LaunchSpec::new(&desired.fleet, &coin, slot, None).unwrap();
        world.aws.launch(&spec).await.unwrap();
    }
    let vpc = world
        .ec2
        .describe_subnets()
        .subnet_ids(desired.fleet.subnets.values().next().unwrap().as_str())
        .send()
        .await
        .unwrap()
        .subnets()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let group = world
        .ec2
        .create_security_group()
        .group_name("fleet-nodes-2")
        .description("fleet test nodes, second group")
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    desired.fleet.security_groups =
        vec![fleet_repo_schema::values::SecurityGroupId::parse(&group).unwrap()];
    desired.coins.get_mut("litecoin").unwrap().tags.insert(
        fleet_repo_schema::values::TagKey::parse("CostCenter").unwrap(),
        fleet_repo_schema::values::TagValue::parse("trading").unwrap(),
    );
    let desired = Arc::new(desired);
    let observed = fleet_tests::observe(&world.aws, &desired).await;
    let own = reconciler::network::CoinNetwork::of(&desired.fleet, &desired.coins["litecoin"])
        .find(observed.groups.as_deref().unwrap_or_default())
        .map(|g| g.group_id.clone());
    assert!(own.is_some(), "litecoin's own group: {:?}", observed.groups);
    let p = plan(&desired, &observed, SystemClock.now_ms());
    let names: Vec<&str> = p
        .coins
        .iter()
        .flat_map(|c| &c.waves)
        .flat_map(|w| &w.steps)
        .map(|s| s.action.name())
        .collect();
    let n = coin.nodes.len();
    assert_eq!(
        names.iter().filter(|a| **a == "set-tags").count(),
        n,
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|a| **a == "set-security-groups")
            .count(),
        n,
        "{names:?}"
    );
    assert_eq!(names.len(), 2 * n, "nothing else: {names:?}");
    let exec = Arc::new(Executor {
        provider: Arc::new(world.aws.clone()),
        prober: Arc::new(RestartingNodes {
            world: Arc::clone(&world),
            seen: Mutex::default(),
        }),
        journal: Arc::new(Journal::in_memory()),
        notifier: Arc::new(RecordingNotifier::default()),
        clock: Arc::new(SystemClock),
        opts: ExecOptions {
            parallel_coins: 4,
            poll_ms: 50,
            commit: "c1".into(),
        },
    });
    let report = exec
        .apply(&desired, &p, &tokio_util::sync::CancellationToken::new())
        .await;
    assert!(report.all_completed(), "{report:#?}");
    // What EC2 now says, read with the raw client.
    let out = world.ec2.describe_instances().send().await.unwrap();
    let mut seen = 0;
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let groups: Vec<&str> = i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .collect();
        // fleet.yaml's new group and the coin's own (made when litecoin was launched).
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert!(groups.contains(&group.as_str()), "{groups:?}");
        assert!(
            groups.iter().any(|g| own.as_deref() == Some(*g)),
            "{groups:?} has the coin's own {own:?}"
        );
        assert!(
            i.tags()
                .iter()
                .any(|t| t.key() == Some("CostCenter") && t.value() == Some("trading"))
        );
        seen += 1;
    }
    assert_eq!(seen, n);
    let again = plan(
        &desired,
        &fleet_tests::observe(&world.aws, &desired).await,
        SystemClock.now_ms(),
    );
    assert!(again.is_empty(), "{again:#?}");
}

/// An agent that never registers fails the step after `agent_wait` with SSM's own code,
/// rather than waiting for ever (moto world: 5 s).
#[tokio::test]
async fn an_agent_that_never_registers_fails_the_step_with_ssms_code() {
    let world = AwsWorld::new("apply_agent_never").await;
    let d = world.desired().clone();
    let c = &d.coins["dogecoin"];
    let spec = LaunchSpec::new(&d.fleet, c, &c.nodes[0], None).unwrap();
    let (id, _) = world.aws.launch(&spec).await.unwrap();
    world.inject(fleet_tests::world::Fault::AgentNotReady { times: 10_000 });
    let node = reconciler::provider::NodeRef {
        key: reconciler::node::NodeKey::of(&c.nodes[0]),
        instance_id: id,
    };
    let t = std::time::Instant::now();
    let r = world
        .aws
        .upgrade(&node, &Version::parse("1.14.10").unwrap())
        .await;
    match r {
        Err(reconciler::provider::ProviderError::Api { code, .. }) => {
            assert_eq!(code, "InvalidInstanceId")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    world.clear_faults();
}

#[tokio::test]
async fn a_secret_scheduled_for_deletion_holds_the_launches_that_would_read_it() {
    let world = AwsWorld::new("apply_aws::secret_scheduled_for_deletion").await;
    let desired = world.desired().clone();
    let ltc = desired.coins["litecoin"]
        .secrets
        .clone()
        .expect("litecoin names a secret");
    for s in desired.coins.values().filter_map(|c| c.secrets.as_ref()) {
        world.set_secret(s.as_str(), true).await;
    }
    // Deleted with a recovery window: it still exists, scheduled for deletion, and reading
    // it fails until it is restored.
    world
        .sm
        .delete_secret()
        .secret_id(ltc.as_str())
        .recovery_window_in_days(7)
        .send()
        .await
        .expect("DeleteSecret");
    let observed = fleet_tests::observe(&world.aws, &desired).await;
    assert_eq!(
        observed
            .secrets
            .as_ref()
            .and_then(|s| s.get(ltc.as_str()).copied()),
        Some(reconciler::provider::SecretState::ScheduledForDeletion),
        "{:?}",
        observed.secrets
    );
    let p = plan(&desired, &observed, SystemClock.now_ms());
    let refused: Vec<&str> = p
        .coins
        .iter()
        .filter(|c| !c.refusals.is_empty())
        .map(|c| c.coin.as_str())
        .collect();
    assert_eq!(refused, ["litecoin"], "{p:#?}");
    assert!(
        p.coin("litecoin").unwrap().refusals[0]
            .reason
            .contains("is scheduled for deletion"),
        "{:?}",
        p.coin("litecoin").unwrap().refusals
    );
}
