//! What observing a large fleet costs in API calls: O(pages), not O(instances).
//!
//! On moto: 1,000 managed instances with their data volumes, 1,000 node records and a few
//! snapshots, observed through the real SDK; the test asserts at most 10 calls and prints the
//! calls per operation. (moto pages DescribeInstances by reservation and does not page
//! DescribeVolumes at all; real EC2 pages volumes 500 at a time, so real AWS needs one more
//! call than moto here. The simulator counts pages with AWS's page sizes and is checked too.)

use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, ResourceType, Tag, TagSpecification};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use fleet_tests::world::{AwsWorld, SimWorld, TestWorld};
use reconciler::provider::Scope;
use reconciler::provider::sim::SimProvider;
use std::collections::BTreeMap;
use std::time::Instant;

const N: usize = 1000;

#[tokio::test]
async fn aws_observes_1000_instances_in_at_most_10_calls() {
    let w = AwsWorld::new("observe_scale::aws_1000").await;
    let d = w.desired().clone();
    let zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"];
    let t = Instant::now();
    // 10 reservations of 100 instances, each with a tagged /dev/sdf data volume.
    for batch in 0..N / 100 {
        let zone = zones[batch % 3];
        let tags = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .tags(Tag::builder().key("fleet:managed").value("true").build())
                .tags(Tag::builder().key("fleet:coin").value("bitcoin").build())
                .tags(Tag::builder().key("fleet:zone").value(zone).build())
                .tags(
                    Tag::builder()
                        .key("fleet:index")
                        .value((batch + 1).to_string())
                        .build(),
                )
                .tags(Tag::builder().key("fleet:version").value("28.1").build())
                .build()
        };
        w.ec2
            .run_instances()
            .image_id(d.fleet.node_ami.as_str())
            .min_count(100)
            .max_count(100)
            .subnet_id(d.fleet.subnets.values().nth(batch % 3).unwrap().as_str())
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/sdf")
                    .ebs(EbsBlockDevice::builder().volume_size(1000).build())
                    .build(),
            )
            .tag_specifications(tags(ResourceType::Instance))
            .tag_specifications(tags(ResourceType::Volume))
            .send()
            .await
            .expect("RunInstances");
    }
    // One record per instance, pointing at its private address.
    let out = w.ec2.describe_instances().send().await.unwrap();
    let ips: Vec<String> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.private_ip_address().map(str::to_string))
        .collect();
    assert_eq!(ips.len(), N);
    // Route53 counts an UPSERT twice against its 1,000-record batch limit: batches of 500.
    for (chunk_no, chunk) in ips.chunks(500).enumerate() {
        let mut batch = ChangeBatch::builder();
        for (i, ip) in chunk.iter().enumerate() {
            let n = chunk_no * 500 + i + 1;
            batch = batch.changes(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(
                        ResourceRecordSet::builder()
                            .name(format!("node{n}.bitcoin.internal"))
                            .r#type(RrType::A)
                            .ttl(60)
                            .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            );
        }
        w.r53
            .change_resource_record_sets()
            .hosted_zone_id(d.fleet.hosted_zone_id.as_str())
            .change_batch(batch.build().unwrap())
            .send()
            .await
            .expect("ChangeResourceRecordSets");
    }
    let setup = t.elapsed();

    let before = w.aws.stats().by_operation();
    let t = Instant::now();
    let o = w
        .provider()
        .observe(&Scope::of(&d.fleet))
        .await
        .expect("observe");
    let took = t.elapsed();
    let after = w.aws.stats().by_operation();
    let per_op: BTreeMap<&String, u64> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    assert_eq!(o.instances.len(), N, "every instance observed");
    assert_eq!(o.dns.len(), N, "every record observed (four Route53 pages)");
    assert!(
        o.instances
            .iter()
            .all(|n| n.data_volume.as_ref().is_some_and(|v| v.size_gb == 1000)),
        "every data volume joined to its instance"
    );
    assert_eq!(
        per_op
            .get(&"Route 53:ListResourceRecordSets".to_string())
            .copied(),
        Some(4),
        "{per_op:?}"
    );
    assert!(
        o.api_calls <= 10,
        "observe took {} calls: {per_op:?}",
        o.api_calls
    );
    eprintln!(
        "aws on moto: observed {N} instances, {N} volumes, {N} records in {} calls ({per_op:?}) in {:.0} ms (setup {:.1} s)",
        o.api_calls,
        took.as_secs_f64() * 1e3,
        setup.as_secs_f64()
    );
}

#[tokio::test]
async fn sim_counts_pages_like_aws() {
    let w = SimWorld::new();
    // A fleet of 1,002 nodes: the example's 18 plus 984 more through bigger placements.
    let mut d = w.desired().clone();
    for coin in d.coins.values_mut() {
        coin.nodes_per_zone = 100;
        coin.nodes = fleet_repo_schema::desired::node_slots(
            &coin.name,
            &coin.zones,
            100,
            &d.fleet.internal_domain,
        );
    }
    let total: usize = d.coins.values().map(|c| c.nodes.len()).sum();
    let sim: &SimProvider = &w.sim;
    sim.seed(&d, &BTreeMap::new()).unwrap();
    let o = w.provider().observe(&Scope::of(&d.fleet)).await.unwrap();
    assert_eq!(o.instances.len(), total);
    // ceil(1500/1000) instances + ceil(1500/500) volumes + 1 snapshots + 1 security groups (six
    // coins, one page) + ceil(1500/300) records
    assert_eq!(total, 1500);
    assert_eq!(o.api_calls, 2 + 3 + 1 + 1 + 5);
}
