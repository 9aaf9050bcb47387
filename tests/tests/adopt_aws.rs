//! `fleet adopt` on moto: a fleet made the way the operators' Terraform module makes it
//! (instances with its `Component` tag, `Name` and a public address, a data volume at
//! /dev/sdf, `node<N>.<coin>` records; no fleet tags) is adopted without a single restart,
//! stop or modification; the plan after it is fleet's own network only (the coin's security
//! group, online) and empty once that is applied; differences are exactly what the
//! repository changes; ambiguous nodes are left alone; adopting again changes nothing; a crash
//! half-way converges on the next run.
//!
//! moto runs no command: what each node prints for the inspection is put into moto's own
//! GetCommandInvocation answer by the test interceptor (`AwsWorld::answer_as`), and
//! node_side.rs shows the script prints exactly that on a node the module set up.

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, InstanceNetworkInterfaceSpecification, ResourceType, Tag,
    TagSpecification,
};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use fleet_repo_schema::{Desired, NodeSlot};
use fleet_tests::world::{AwsWorld, TestWorld};
use reconciler::adopt::{Matcher, Report, inspect::INSPECT_SCRIPT};
use reconciler::apply::{ExecOptions, Executor};
use reconciler::clock::{Clock, SystemClock};
use reconciler::events::RecordingNotifier;
use reconciler::health::{ChainStatus, ProbeError, ProbeTarget, Prober};
use reconciler::plan::{Plan, plan};
use reconciler::provider::Provider;
use reconciler::store::Journal;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A node made by the module: its instance id.
struct SeedNode {
    instance_id: String,
}

/// Make `slot` of `coin` as the module does, running `version`; its record and what it
/// answers to the inspection. `name` overrides the module's Name tag.
async fn seed_node(
    w: &AwsWorld,
    d: &Desired,
    slot: &NodeSlot,
    version: &str,
    zone_override: Option<&str>,
) -> SeedNode {
    let coin = &d.coins[slot.coin.as_str()];
    let zone = zone_override.unwrap_or(slot.zone.as_str());
    let subnet = d
        .fleet
        .subnets
        .iter()
        .find(|(z, _)| z.as_str() == zone)
        .map(|(_, s)| s.as_str().to_string())
        .unwrap();
    let ami = d.fleet.node_ami.as_str();
    let root_device = w
        .ec2
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .unwrap()
        .images()[0]
        .root_device_name()
        .unwrap()
        .to_string();
    let tags = |rt: ResourceType, name: bool| {
        let mut t = TagSpecification::builder().resource_type(rt).tags(
            Tag::builder()
                .key("Component")
                .value(format!("nodes/{}", coin.name))
                .build(),
        );
        if name {
            t = t.tags(Tag::builder().key("Name").value(&slot.dns_name).build());
            for (k, v) in &coin.tags {
                t = t.tags(Tag::builder().key(k.as_str()).value(v.as_str()).build());
            }
        }
        t.build()
    };
    let out = w
        .ec2
        .run_instances()
        .image_id(ami)
        .instance_type(coin.instance_type.as_str().into())
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&subnet)
                .associate_public_ip_address(true)
                .set_groups(Some(
                    d.fleet
                        .security_groups
                        .iter()
                        .map(|g| g.as_str().to_string())
                        .collect(),
                ))
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(&root_device)
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(coin.root_volume_gb as i32)
                        .build(),
                )
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/sdf")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(coin.data_volume_gb as i32)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(tags(ResourceType::Instance, true))
        .tag_specifications(tags(ResourceType::Volume, false))
        .send()
        .await
        .expect("RunInstances");
    let i = &out.instances()[0];
    let id = i.instance_id().unwrap().to_string();
    let ip = i.private_ip_address().unwrap().to_string();
    w.r53
        .change_resource_record_sets()
        .hosted_zone_id(d.fleet.hosted_zone_id.as_str())
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(
                            ResourceRecordSet::builder()
                                .name(format!("{}.", slot.dns_name))
                                .r#type(RrType::A)
                                .ttl(60)
                                .resource_records(
                                    ResourceRecord::builder().value(&ip).build().unwrap(),
                                )
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("ChangeResourceRecordSets");
    w.answer_as(&id, fleet_tests::seed::answer(coin, version));
    SeedNode { instance_id: id }
}

/// The example fleet, cut to `coins`, with their secrets made (the plan checks they exist).
async fn fleet_of(w: &AwsWorld, coins: &[&str]) -> Desired {
    let mut d = w.desired().clone();
    d.coins.retain(|k, _| coins.contains(&k.as_str()));
    for c in d.coins.values() {
        if let Some(s) = &c.secrets {
            w.set_secret(s.as_str(), true).await;
        }
    }
    d
}

async fn adopt(w: &AwsWorld, d: &Desired, dry_run: bool) -> Report {
    reconciler::adopt::run(
        &w.aws,
        d,
        &Matcher::parse(Matcher::DEFAULT).unwrap(),
        dry_run,
    )
    .await
    .expect("adopt")
}

fn step_names(p: &Plan) -> Vec<&'static str> {
    p.coins
        .iter()
        .flat_map(|c| &c.waves)
        .flat_map(|w| &w.steps)
        .map(|s| s.action.name())
        .collect()
}

/// In sync at every reading (the steps applied here restart nothing, and no gate waits).
struct InSync;

#[async_trait]
impl Prober for InSync {
    async fn probe(&self, _t: &ProbeTarget) -> Result<ChainStatus, ProbeError> {
        Ok(ChainStatus {
            blocks: 1_000,
            headers: 1_000,
            initial_block_download: false,
            client: None,
        })
    }
}

/// Calls of `op` (any service) so far.
fn calls_of(w: &AwsWorld, op: &str) -> u64 {
    w.aws
        .stats()
        .by_operation()
        .iter()
        .filter(|(k, _)| k.rsplit(':').next() == Some(op))
        .map(|(_, v)| v)
        .sum()
}

/// EC2 calls that stop, start, restart, modify or terminate anything, so far.
fn disruptive_calls(w: &AwsWorld) -> Vec<(String, u64)> {
    w.aws
        .stats()
        .by_operation()
        .into_iter()
        .filter(|(op, _)| {
            [
                "StopInstances",
                "StartInstances",
                "RebootInstances",
                "TerminateInstances",
                "ModifyVolume",
                "DetachVolume",
                "AttachVolume",
                "ModifyInstanceAttribute",
                "RunInstances",
            ]
            .iter()
            .any(|d| op.ends_with(d))
        })
        .collect()
}

#[tokio::test]
async fn a_module_made_fleet_is_adopted_without_a_restart_and_converges_with_online_steps_only() {
    let w = AwsWorld::new("adopt::module_fleet").await;
    let d = fleet_of(&w, &["bitcoin", "litecoin"]).await;
    let mut seeded = Vec::new();
    for slot in d.nodes() {
        let coin = &d.coins[slot.coin.as_str()];
        seeded.push(seed_node(&w, &d, slot, coin.version.as_str(), None).await);
    }
    let n = seeded.len();
    assert!(n >= 4, "{n}");

    // Before: fleet sees none of them and would launch every node (days of resync).
    let before = plan(
        &d,
        &fleet_tests::observe(&w.aws, &d).await,
        SystemClock.now_ms(),
    );
    assert_eq!(
        step_names(&before)
            .iter()
            .filter(|s| **s == "launch")
            .count(),
        n
    );

    // A dry run finds each node in its slot and writes nothing.
    let dry = adopt(&w, &d, true).await;
    assert_eq!(dry.candidates, n);
    assert_eq!(
        dry.adoption.adopted.len(),
        n,
        "{:#?}",
        dry.adoption.left_alone
    );
    assert!(dry.adoption.left_alone.is_empty());
    assert_eq!(dry.written, 0);
    assert_eq!(calls_of(&w, "CreateTags"), 0);
    assert!(calls_of(&w, "DescribeInstances") > 0, "the counter counts");
    let dry_plan = plan(&d, &dry.observed, SystemClock.now_ms());

    // Adopted: each with the slot its record names and the version its unit runs.
    let r = adopt(&w, &d, false).await;
    assert!(r.failed.is_none(), "{:?}", r.failed);
    assert_eq!(r.written, n);
    // Data and root volumes are fleet's now too (a root volume is observed, and grown).
    for node in &r.observed.nodes {
        assert!(node.root_volume.is_some(), "{node:#?}");
        assert!(node.data_volume.as_ref().is_some_and(|v| v.size_gb > 0));
    }
    for a in &r.adoption.adopted {
        assert_eq!(a.slot_from, reconciler::adopt::SlotFrom::Record);
        assert!(a.differences.is_empty(), "{:#?}", a.differences);
    }
    // The only commands sent were the read-only inspection, once per node a run.
    let commands = w.commands();
    assert_eq!(commands.len(), 2 * n, "{commands:#?}");
    assert!(commands.iter().all(|(_, c)| c == INSPECT_SCRIPT));
    assert!(
        disruptive_calls(&w).is_empty(),
        "{:?}",
        disruptive_calls(&w)
    );

    // The plan now is what the dry run said, and only fleet's own network: the coin's
    // security group made and attached, online. Nothing launches, restarts or stops.
    let p = plan(
        &d,
        &fleet_tests::observe(&w.aws, &d).await,
        SystemClock.now_ms(),
    );
    assert_eq!(step_names(&p), step_names(&dry_plan));
    assert!(!p.has_refusals(), "{p:#?}");
    let names = step_names(&p);
    assert!(
        names
            .iter()
            .all(|s| matches!(*s, "set-coin-network" | "set-security-groups")),
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|s| **s == "set-security-groups")
            .count(),
        n
    );
    let exec = Arc::new(Executor {
        provider: Arc::new(w.aws.clone()),
        prober: Arc::new(InSync),
        journal: Arc::new(Journal::in_memory()),
        notifier: Arc::new(RecordingNotifier::default()),
        clock: Arc::new(SystemClock),
        opts: ExecOptions {
            parallel_coins: 4,
            poll_ms: 50,
            commit: "adopted".into(),
        },
    });
    let report = exec
        .apply(
            &Arc::new(d.clone()),
            &p,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;
    assert!(report.all_completed(), "{report:#?}");
    let after = plan(
        &d,
        &fleet_tests::observe(&w.aws, &d).await,
        SystemClock.now_ms(),
    );
    assert!(after.is_empty(), "{after:#?}");
    // Still not a single command besides the inspections, nor a stop or start.
    assert_eq!(w.commands().len(), 2 * n);
    for op in [
        "StopInstances",
        "StartInstances",
        "RebootInstances",
        "TerminateInstances",
        "RunInstances",
        "ModifyVolume",
    ] {
        assert_eq!(calls_of(&w, op), 0, "{op}");
    }
    // Two CreateTags a node (volume, then instance), and those of the applied steps.
    assert!(calls_of(&w, "CreateTags") >= 2 * n as u64);

    // Adopting again finds nothing to do and writes nothing.
    let tags_before = calls_of(&w, "CreateTags");
    let again = adopt(&w, &d, false).await;
    assert_eq!((again.candidates, again.written), (0, 0));
    assert_eq!(calls_of(&w, "CreateTags"), tags_before);
    let _ = seeded;
}

#[tokio::test]
async fn what_differs_from_the_repository_is_exactly_what_the_plan_does() {
    let w = AwsWorld::new("adopt::differs").await;
    let d = fleet_of(&w, &["litecoin"]).await;
    let coin = d.coins["litecoin"].clone();
    let mut ids = Vec::new();
    for slot in &coin.nodes {
        // One version behind what the repository asks for.
        ids.push(seed_node(&w, &d, slot, "0.21.3", None).await.instance_id);
    }
    // The first node's container has another value of one setting.
    let mut other = coin.clone();
    if let Some((k, _)) = other
        .container_config
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
    {
        other.container_config.insert(
            k,
            fleet_repo_schema::values::EnvValue::parse("999").unwrap(),
        );
    }
    let changed_setting = !coin.container_config.is_empty();
    w.answer_as(&ids[0], fleet_tests::seed::answer(&other, "0.21.3"));

    let r = adopt(&w, &d, false).await;
    assert_eq!(r.written, coin.nodes.len(), "{:#?}", r.adoption.left_alone);
    for a in &r.adoption.adopted {
        assert_eq!(a.version.as_str(), "0.21.3");
    }
    let p = plan(
        &d,
        &fleet_tests::observe(&w.aws, &d).await,
        SystemClock.now_ms(),
    );
    let cp = p.coin("litecoin").expect("litecoin is planned");
    let steps: Vec<(String, String)> = cp
        .waves
        .iter()
        .flat_map(|w| &w.steps)
        .filter(|s| !matches!(s.action.name(), "set-coin-network" | "set-security-groups"))
        .map(|s| {
            (
                s.instance_id.clone().unwrap_or_default(),
                s.action.to_string(),
            )
        })
        .collect();
    // Every node: fleet's node side installed without a restart, then the upgrade; the one
    // whose setting differs has it named.
    let upgrades = steps
        .iter()
        .filter(|(_, s)| s.starts_with("upgrade"))
        .count();
    assert_eq!(upgrades, coin.nodes.len(), "{steps:#?}");
    let first: Vec<&String> = steps
        .iter()
        .filter(|(i, _)| *i == ids[0])
        .map(|(_, s)| s)
        .collect();
    assert!(first[0].starts_with("reconfigure"), "{first:#?}");
    if changed_setting {
        let k = coin.container_config.keys().next().unwrap();
        assert!(
            first[0].contains(&format!("container_config.{}", k.as_str())),
            "{first:#?}"
        );
    }
    for id in &ids[1..] {
        let s: Vec<&String> = steps
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(s[0], "reconfigure fleet's node side (no restart)", "{s:#?}");
    }
    assert!(disruptive_calls(&w).is_empty());
}

#[tokio::test]
async fn ambiguous_nodes_are_left_alone_and_a_crash_half_way_converges() {
    let w = AwsWorld::new("adopt::ambiguous_crash").await;
    let d = fleet_of(&w, &["bitcoin"]).await;
    let coin = d.coins["bitcoin"].clone();
    let v = coin.version.as_str().to_string();
    let mut good = Vec::new();
    for slot in &coin.nodes {
        good.push(seed_node(&w, &d, slot, &v, None).await.instance_id);
    }
    // An extra node in the first zone (more than the repository wants), one with no active
    // unit and one stopped in the others. Each takes over its zone's record (an UPSERT), so
    // the first nodes have none left.
    let extra = seed_node(&w, &d, &coin.nodes[0], &v, None)
        .await
        .instance_id;
    let no_unit = seed_node(&w, &d, &coin.nodes[1], &v, None)
        .await
        .instance_id;
    w.answer_as(&no_unit, "host COIN 0000\n".into());
    let stopped = seed_node(&w, &d, &coin.nodes[2], &v, None)
        .await
        .instance_id;
    w.ec2
        .stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .unwrap();

    // A crash half-way: the instance's tags fail after its volumes' were written (CreateTags:
    // both volumes in one call, then the instance).
    w.fail_op_after("CreateTags", 1);
    let r = adopt(&w, &d, false).await;
    let (failed, _) = r
        .failed
        .clone()
        .expect("the injected failure stops the run");
    assert_eq!(failed, extra);
    assert_eq!(r.written, 0);
    assert!(fleet_tests::observe(&w.aws, &d).await.nodes.is_empty());
    let why: BTreeMap<String, String> = r
        .adoption
        .left_alone
        .iter()
        .map(|l| (l.instance_id.clone(), l.why.to_string()))
        .collect();
    assert!(
        why[&no_unit].contains("no node@ unit is active"),
        "{why:#?}"
    );
    assert!(why[&stopped].contains("stopped"), "{why:#?}");
    // The first zone has one slot and two nodes: the one its record names gets it, the
    // other is more than the repository wants. In the other zones the records point at the
    // nodes left alone: their slots are nobody's, never the record-less nodes'.
    for g in &good {
        assert!(why[g].contains("every slot is taken"), "{why:#?}");
    }
    assert!(!why.contains_key(&extra));

    // The next run goes on from where it stopped and ends where one run would have.
    let r2 = adopt(&w, &d, false).await;
    assert!(r2.failed.is_none(), "{:?}", r2.failed);
    assert_eq!(r2.written, 1);
    let o = fleet_tests::observe(&w.aws, &d).await;
    let managed: Vec<&str> = o.nodes.iter().map(|n| n.instance_id.as_str()).collect();
    assert_eq!(managed, [extra.as_str()]);
    let vol = o.nodes[0]
        .data_volume
        .as_ref()
        .expect("the adopted volume is observed");
    assert_eq!(vol.size_gb, coin.data_volume_gb);
    // Those left alone are untouched.
    let raw = w.ec2.describe_instances().send().await.unwrap();
    for i in raw.reservations().iter().flat_map(|r| r.instances()) {
        let id = i.instance_id().unwrap();
        let fleet_tags = i
            .tags()
            .iter()
            .filter(|t| t.key().is_some_and(|k| k.starts_with("fleet:")))
            .count();
        assert_eq!(fleet_tags > 0, id == extra, "{id}: {:?}", i.tags());
    }
    assert!(
        disruptive_calls(&w)
            .iter()
            .all(|(op, _)| op.ends_with("StopInstances"))
    );
}

#[tokio::test]
async fn the_simulator_refuses_to_adopt() {
    let clock: Arc<dyn Clock> = Arc::new(reconciler::clock::ManualClock::new(0));
    let sim = reconciler::provider::sim::SimProvider::new(clock, Default::default());
    let d = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
    let e = reconciler::adopt::run(&sim, &d, &Matcher::parse(Matcher::DEFAULT).unwrap(), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("use --provider aws"), "{e}");
    let _ = sim.name();
}
