//! What adopting a large fleet costs in API calls: 1,000 instances made the way the
//! operators' module makes them (one coin, 3 zones), adopted through the real SDK on moto.
//! The test asserts the batching (SendCommand takes 50 instances; the describes page) and
//! prints the calls per operation, the figure the README and the closing note quote.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, InstanceNetworkInterfaceSpecification, ResourceType, Tag,
    TagSpecification,
};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use fleet_tests::world::{AwsWorld, TestWorld};
use reconciler::adopt::Matcher;
use std::collections::BTreeMap;
use std::time::Instant;

const N: usize = 1000;

#[tokio::test]
async fn adopting_1000_instances_batches_its_calls() {
    let w = AwsWorld::new("adopt_scale::aws_1000").await;
    let mut d = w.desired().clone();
    d.coins.retain(|k, _| k == "bitcoin");
    let coin = d.coins.get_mut("bitcoin").unwrap();
    coin.nodes_per_zone = 334;
    coin.nodes = fleet_repo_schema::desired::node_slots(
        &coin.name,
        &coin.zones,
        coin.nodes_per_zone,
        &d.fleet.internal_domain,
    );
    let coin = d.coins["bitcoin"].clone();
    if let Some(s) = &coin.secrets {
        w.set_secret(s.as_str(), true).await;
    }
    let t = Instant::now();
    // 334, 333 and 333 instances in the three zones, reservations of up to 100, each with
    // the module's tag, a public address and a /dev/sdf data volume.
    let mut made: Vec<(String, String, String)> = Vec::new(); // (id, ip, zone)
    let mut batches = Vec::new();
    for (i, zone) in coin.zones.iter().enumerate() {
        let mut left = N / 3 + usize::from(i < N % 3);
        while left > 0 {
            batches.push((zone.clone(), left.min(100)));
            left -= left.min(100);
        }
    }
    for (zone, count) in &batches {
        let subnet = d.fleet.subnets[zone].as_str().to_string();
        let tags = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .tags(
                    Tag::builder()
                        .key("Component")
                        .value("nodes/bitcoin")
                        .build(),
                )
                .build()
        };
        let out = w
            .ec2
            .run_instances()
            .image_id(d.fleet.node_ami.as_str())
            .instance_type(coin.instance_type.as_str().into())
            .min_count(*count as i32)
            .max_count(*count as i32)
            .network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(&subnet)
                    .associate_public_ip_address(true)
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
            .tag_specifications(tags(ResourceType::Instance))
            .tag_specifications(tags(ResourceType::Volume))
            .send()
            .await
            .expect("RunInstances");
        for i in out.instances() {
            made.push((
                i.instance_id().unwrap().to_string(),
                i.private_ip_address().unwrap().to_string(),
                zone.to_string(),
            ));
        }
    }
    assert_eq!(made.len(), N);
    // The module's records: node<N> counts across the zones in placement order, as fleet's.
    let mut records = Vec::new();
    for z in &coin.zones {
        let slots: Vec<_> = coin.nodes.iter().filter(|s| &s.zone == z).collect();
        for ((_, ip, _), slot) in made.iter().filter(|m| m.2 == z.as_str()).zip(slots) {
            records.push((slot.dns_name.clone(), ip.clone()));
        }
    }
    for chunk in records.chunks(500) {
        let mut batch = ChangeBatch::builder();
        for (name, ip) in chunk {
            batch = batch.changes(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(
                        ResourceRecordSet::builder()
                            .name(format!("{name}."))
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
    let answer = fleet_tests::seed::answer(&coin, coin.version.as_str());
    for (id, _, _) in &made {
        w.answer_as(id, answer.clone());
    }
    let setup = t.elapsed();

    let before = w.aws.stats().by_operation();
    let t = Instant::now();
    let r = reconciler::adopt::run(
        &w.aws,
        &d,
        &Matcher::parse(Matcher::DEFAULT).unwrap(),
        false,
    )
    .await
    .expect("adopt");
    let took = t.elapsed();
    let per_op: BTreeMap<String, u64> = w
        .aws
        .stats()
        .by_operation()
        .into_iter()
        .map(|(k, v)| {
            let b = before.get(&k).copied().unwrap_or(0);
            (k, v - b)
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    let of = |op: &str| {
        per_op
            .iter()
            .filter(|(k, _)| k.ends_with(&format!(":{op}")))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    assert!(r.failed.is_none(), "{:?}", r.failed);
    assert_eq!(
        r.written,
        N,
        "{:#?}",
        &r.adoption.left_alone[..r.adoption.left_alone.len().min(3)]
    );
    assert_eq!(r.observed.nodes.len(), N);
    // 1,000 instances in 20 commands of 50; one CreateTags for a node's two volumes, one for
    // the instance.
    assert_eq!(of("SendCommand"), (N as u64).div_ceil(50));
    assert_eq!(of("CreateTags"), 2 * N as u64);
    // Reading the fleet pages: the unmanaged instances in one page of 1,000, their volumes
    // by id 200 a request (plus the observations before and after).
    assert!(
        of("DescribeVolumes") <= 2 + (N as u64).div_ceil(200),
        "{per_op:?}"
    );
    // The instances read again before writing, 200 ids a request, not one by one.
    assert!(
        of("DescribeInstances") <= 3 + (N as u64).div_ceil(200),
        "{per_op:?}"
    );
    // One GetCommandInvocation an instance (moto answers at once; SSM's batch read,
    // ListCommandInvocations with details, is not served by moto).
    assert_eq!(of("GetCommandInvocation"), N as u64, "{per_op:?}");
    let total: u64 = per_op.values().sum();
    eprintln!(
        "adopt on moto: {N} instances adopted in {total} calls ({} without the per-instance GetCommandInvocation and CreateTags) in {:.1} s (setup {:.1} s): {per_op:?}",
        total - of("GetCommandInvocation") - of("CreateTags"),
        took.as_secs_f64(),
        setup.as_secs_f64()
    );
}
