//! One conformance suite, two providers: every case runs against the simulator and against
//! the AWS provider (real SDK) on moto server on loopback. The cases state, in words, what
//! any provider must do; a provider that passes can sit behind the planner and executor.

use fleet_repo_schema::values::{InstanceType, Version};
use fleet_tests::world::{AwsWorld, Fault, SimWorld, TestWorld};
use reconciler::network::{IngressRule, Protocol, Source};
use reconciler::node::NodeKey;
use reconciler::plan::{Observed, ObservedNode, Orphan, OrphanReason};
use reconciler::provider::{
    CheckState, DnsRecord, ImagePin, InstanceState, LaunchSpec, NodeRef, Outcome, PendingStep,
    ProviderError, Scope,
};

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

/// The launch spec of bitcoin's node in `zone_idx` (0..3), index `index`.
fn spec(w: &dyn TestWorld, coin: &str, zone_idx: usize, snapshot: Option<String>) -> LaunchSpec {
    let d = w.desired();
    let c = &d.coins[coin];
    let slot = &c.nodes[zone_idx * c.nodes_per_zone as usize];
    LaunchSpec::new(&d.fleet, c, slot, snapshot).expect("spec")
}

async fn observe(w: &dyn TestWorld) -> Observed {
    reconciler::apply::view::observe(w.provider(), w.desired())
        .await
        .expect("observe")
}

async fn launch(w: &dyn TestWorld, coin: &str, zone_idx: usize) -> NodeRef {
    let s = spec(w, coin, zone_idx, None);
    let (id, outcome) = w.provider().launch(&s).await.expect("launch");
    assert_eq!(outcome, Outcome::Done);
    NodeRef {
        key: NodeKey::of(&s.slot),
        instance_id: id,
    }
}

fn node<'a>(o: &'a Observed, r: &NodeRef) -> &'a ObservedNode {
    o.node(&r.key)
        .unwrap_or_else(|| panic!("{} not observed: {o:#?}", r.key))
}

/// An empty fleet observes as empty, and observing costs a handful of calls.
async fn observe_empty(w: &dyn TestWorld) {
    let o = observe(w).await;
    assert!(
        o.nodes.is_empty() && o.orphans.is_empty() && o.dns.is_empty(),
        "{o:#?}"
    );
    assert!((1..=10).contains(&o.api_calls), "calls: {}", o.api_calls);
}

/// A launched node is observed in its slot with its type, version, data volume and record.
async fn launch_then_observe(w: &dyn TestWorld) {
    let r = launch(w, "bitcoin", 1).await;
    let o = observe(w).await;
    let n = node(&o, &r);
    assert_eq!(n.instance_id, r.instance_id);
    assert_eq!(n.key.zone, "eu-central-1b");
    assert!(
        matches!(n.state, InstanceState::Pending | InstanceState::Running),
        "{:?}",
        n.state
    );
    assert_eq!(n.instance_type, "c5.xlarge");
    assert_eq!(n.version.known(), Some(&v("28.1")));
    assert_eq!(n.pending, None);
    let vol = n.data_volume.as_ref().expect("data volume");
    assert_eq!(vol.size_gb, 1000);
    assert_eq!(vol.snapshot_id, None);
    assert_eq!(n.dns_names, vec!["node2.bitcoin.internal".to_string()]);
    assert_eq!(o.dns.len(), 1);
    assert_eq!(o.dns[0].values, vec![n.private_ip.clone().unwrap()]);
    assert!(o.orphans.is_empty(), "{:#?}", o.orphans);
}

/// Launching a slot that already has a node launches nothing.
async fn launch_is_idempotent(w: &dyn TestWorld) {
    let r = launch(w, "litecoin", 0).await;
    let s = spec(w, "litecoin", 0, None);
    let (again, outcome) = w.provider().launch(&s).await.unwrap();
    assert_eq!(
        (again.as_str(), outcome),
        (r.instance_id.as_str(), Outcome::AlreadyDone)
    );
    let o = observe(w).await;
    assert_eq!(o.nodes.len(), 1);
    assert!(o.orphans.is_empty());
}

/// A node launched from a snapshot has its data volume created from it.
async fn launch_restores_from_snapshot(w: &dyn TestWorld) {
    let first = launch(w, "bitcoin", 0).await;
    let snap = w.provider().snapshot(&first, "seed").await.unwrap();
    let o = observe(w).await;
    let latest = o
        .latest_snapshot("bitcoin", "eu-central-1a")
        .expect("snapshot observed");
    assert_eq!(latest.snapshot_id, snap);
    assert_eq!((latest.size_gb, latest.reason.as_str()), (1000, "seed"));
    let s = spec(w, "bitcoin", 1, Some(snap.clone()));
    let (id, _) = w.provider().launch(&s).await.unwrap();
    let o = observe(w).await;
    let n = o.node(&NodeKey::of(&s.slot)).unwrap();
    assert_eq!(n.instance_id, id);
    assert_eq!(
        n.data_volume.as_ref().unwrap().snapshot_id.as_deref(),
        Some(snap.as_str())
    );
}

/// An upgrade sends exactly one command, to exactly that instance, then records the version;
/// repeating it sends nothing.
async fn upgrade_targets_one_instance(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    let b = launch(w, "dogecoin", 1).await;
    assert_eq!(
        w.provider().upgrade(&a, &v("1.14.10")).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        w.commands(),
        vec![(
            a.instance_id.clone(),
            "/usr/local/sbin/fleet-node upgrade '1.14.10'".to_string()
        )]
    );
    let o = observe(w).await;
    assert_eq!(node(&o, &a).version.known(), Some(&v("1.14.10")));
    assert_eq!(node(&o, &b).version.known(), Some(&v("1.14.9")));
    assert_eq!(
        w.provider().upgrade(&a, &v("1.14.10")).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(w.commands().len(), 1, "no second restart");
}

/// A rollback is the upgrade protocol with the node's own pin: one `fleet-node rollback`
/// command to that instance, then the version recorded; repeating it sends nothing.
async fn a_rollback_sends_one_command_and_records_the_old_version(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    w.provider().upgrade(&a, &v("1.14.10")).await.unwrap();
    let back = w
        .provider()
        .upgrade_pinned(&a, &v("1.14.9"), ImagePin::AsBefore)
        .await
        .unwrap();
    assert_eq!(back, Outcome::Done);
    assert_eq!(
        w.commands().last().cloned(),
        Some((
            a.instance_id.clone(),
            "/usr/local/sbin/fleet-node rollback '1.14.9'".to_string()
        ))
    );
    assert_eq!(
        node(&observe(w).await, &a).version.known(),
        Some(&v("1.14.9"))
    );
    assert_eq!(
        w.provider()
            .upgrade_pinned(&a, &v("1.14.9"), ImagePin::AsBefore)
            .await
            .unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(w.commands().len(), 2, "no second restart");
}

/// A restore (`on_failure: restore`) puts the node's data volume back as its newest snapshot
/// for the reason had it: same instance, a new volume from that snapshot at the data device,
/// recorded (`fleet:restored`) and unmarked; a repeat changes nothing; a cut-off attempt is
/// finished by `finish_restore` (the planner's step for its mark) without a second volume;
/// no such snapshot is a refusal.
async fn a_restore_puts_the_data_volume_back_from_its_snapshot(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    let before = node(&observe(w).await, &a).clone();
    let old_vol = before.data_volume.clone().unwrap().volume_id;
    let snap = w
        .provider()
        .snapshot(&a, "before-upgrade:1.14.10")
        .await
        .unwrap();
    // Cut off after the new volume is made and the old one detached.
    w.inject(Fault::FailOp {
        op: "AttachVolume",
        times: 1,
    });
    assert!(
        w.provider()
            .restore_data(&a, "before-upgrade:1.14.10")
            .await
            .is_err()
    );
    let cut = node(&observe(w).await, &a).clone();
    assert_eq!(
        cut.pending,
        Some(PendingStep::Restore {
            snapshot: snap.clone()
        })
    );
    // What the planner asks of such a node: finish the marked restore.
    assert_eq!(
        w.provider().finish_restore(&a, &snap).await.unwrap(),
        Outcome::Done
    );
    let after = node(&observe(w).await, &a).clone();
    assert_eq!(after.instance_id, a.instance_id, "in place");
    let vol = after.data_volume.clone().expect("a data volume again");
    assert_ne!(vol.volume_id, old_vol);
    assert_eq!(vol.snapshot_id.as_deref(), Some(snap.as_str()));
    assert_eq!(after.pending, None);
    assert_eq!(
        after
            .tags
            .get(reconciler::provider::tags::RESTORED)
            .map(String::as_str),
        Some(snap.as_str())
    );
    assert!(
        matches!(after.state, InstanceState::Running | InstanceState::Pending),
        "{:?}",
        after.state
    );
    // Done: a repeat makes nothing.
    assert_eq!(
        w.provider()
            .restore_data(&a, "before-upgrade:1.14.10")
            .await
            .unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(node(&observe(w).await, &a).data_volume, Some(vol));
    let e = w
        .provider()
        .restore_data(&a, "before-upgrade:9.9.9")
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Refused { .. }), "{e}");
}

/// A heal's restart is one command to one instance, changes no record, and a failed one says
/// why.
async fn restart_daemon_sends_one_command_and_records_nothing(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    let _b = launch(w, "dogecoin", 1).await;
    let before = observe(w).await;
    w.provider().restart_daemon(&a, &v("1.14.9")).await.unwrap();
    assert_eq!(
        w.commands(),
        vec![(
            a.instance_id.clone(),
            "/usr/local/sbin/fleet-node restart '1.14.9'".to_string()
        )]
    );
    let after = observe(w).await;
    assert_eq!(node(&after, &a).version, node(&before, &a).version);
    assert_eq!(node(&after, &a).pending, None);
    assert_eq!(node(&after, &a).tags, node(&before, &a).tags);
    w.inject(Fault::CommandFails {
        stderr: "fleet-node: node@1.14.9 is not the enabled unit; not restarting it".into(),
    });
    match w.provider().restart_daemon(&a, &v("1.14.9")).await {
        Err(ProviderError::CommandFailed { stderr, .. }) => {
            assert!(stderr.contains("not the enabled unit"), "{stderr}")
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

/// EC2's status checks: every running instance, in one call per page; one that fails its
/// instance check is seen failing (on AWS the answer is then a recorded real response shape
/// listing it, see `Fault::FailsStatusChecks`).
async fn status_checks_are_read_for_the_running_instances(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    let b = launch(w, "dogecoin", 1).await;
    // Booted (the simulated instances boot in a minute; moto's are running at once).
    w.pass_time(std::time::Duration::from_secs(180)).await;
    let calls = w.provider().api_calls();
    let checks = w.provider().status_checks().await.unwrap();
    assert_eq!(w.provider().api_calls() - calls, 1, "one page, one call");
    for n in [&a, &b] {
        let c = checks
            .get(&n.instance_id)
            .unwrap_or_else(|| panic!("{checks:?}"));
        assert!(!c.failing(), "{c:?}");
    }
    w.inject(Fault::FailsStatusChecks {
        key: a.key.clone(),
        instance_id: a.instance_id.clone(),
    });
    let checks = w.provider().status_checks().await.unwrap();
    assert_eq!(checks[&a.instance_id].instance, CheckState::Impaired);
    assert!(checks[&a.instance_id].failing());
    assert!(checks.get(&b.instance_id).is_none_or(|c| !c.failing()));
}

/// The data volumes' use is read per instance as its CloudWatch agent reported it (the data
/// volume's series only, oldest first, rising as the chain grows), in one ListMetrics and
/// one GetMetricData call for the page; an instance without reports is absent.
async fn disk_use_is_read_per_instance_from_the_agents_figures(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    w.pass_time(std::time::Duration::from_secs(180)).await;
    w.agent_reports(&a.instance_id, 4).await;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 24 * 3_600_000;
    // The simulator's clock is its own: it reads since its own day before.
    let since = if w.name() == "sim" { 0 } else { since };
    let silent = "i-0123456789abcdef0".to_string();
    let calls = w.provider().api_calls();
    let d = w
        .provider()
        .disk_usage(&[a.instance_id.clone(), silent.clone()], since)
        .await
        .unwrap();
    assert_eq!(w.provider().api_calls() - calls, 2, "one page of each");
    assert!(!d.contains_key(&silent), "{d:?}");
    let points = d.get(&a.instance_id).unwrap_or_else(|| panic!("{d:?}"));
    assert!(points.len() >= 4, "{points:?}");
    assert!(
        points.windows(2).all(|p| p[0].at_ms < p[1].at_ms),
        "{points:?}"
    );
    assert!(
        points
            .windows(2)
            .all(|p| p[0].used_percent <= p[1].used_percent),
        "{points:?}"
    );
    // The root file system's 97 % (beside it on AWS) is not the data volume's.
    assert!(
        points
            .iter()
            .all(|p| p.used_percent > 0.0 && p.used_percent < 90.0),
        "{points:?}"
    );
}

/// A failed command surfaces its stderr and leaves the node's version unknown, not guessed;
/// a retry converges.
async fn failed_command_leaves_version_unknown(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 1).await;
    w.inject(Fault::CommandFails {
        stderr: "Error response from daemon: pull access denied for coin-daemons/dogecoin".into(),
    });
    match w.provider().upgrade(&a, &v("1.14.10")).await {
        Err(ProviderError::CommandFailed {
            instance, stderr, ..
        }) => {
            assert_eq!(instance, a.instance_id);
            assert!(stderr.contains("pull access denied"), "{stderr}");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
    let o = observe(w).await;
    let n = node(&o, &a);
    assert_eq!(n.version.known(), None, "{:?}", n.version);
    assert_eq!(
        n.pending.as_ref().map(|p| p.to_tag()),
        Some("upgrade:1.14.10".into())
    );
    w.clear_faults();
    assert_eq!(
        w.provider().upgrade(&a, &v("1.14.10")).await.unwrap(),
        Outcome::Done
    );
    let o = observe(w).await;
    assert_eq!(node(&o, &a).version.known(), Some(&v("1.14.10")));
    assert_eq!(node(&o, &a).pending, None);
}

/// A crash between the pending mark and the command: the node reads as unknown, and the next
/// attempt completes it.
async fn crash_between_steps_converges(w: &dyn TestWorld) {
    let a = launch(w, "monero", 0).await;
    w.inject(Fault::FailOp {
        op: "SendCommand",
        times: 1,
    });
    assert!(w.provider().upgrade(&a, &v("0.18.4.0")).await.is_err());
    let o = observe(w).await;
    assert_eq!(node(&o, &a).version.known(), None);
    assert!(w.commands().is_empty(), "the command never left");
    assert_eq!(
        w.provider().upgrade(&a, &v("0.18.4.0")).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        node(&observe(w).await, &a).version.known(),
        Some(&v("0.18.4.0"))
    );

    // A launch that dies after RunInstances, before its DNS record: retrying it finds the
    // instance, creates the record, and launches nothing twice.
    w.inject(Fault::FailOp {
        op: "ChangeResourceRecordSets",
        times: 1,
    });
    let s = spec(w, "monero", 1, None);
    assert!(w.provider().launch(&s).await.is_err());
    let (id, outcome) = w.provider().launch(&s).await.unwrap();
    assert_eq!(outcome, Outcome::Done);
    let o = observe(w).await;
    let n = o.node(&NodeKey::of(&s.slot)).unwrap();
    assert_eq!(n.instance_id, id);
    assert_eq!(n.dns_names, vec![s.dns.name.clone()]);
    assert_eq!(o.nodes.len(), 2);
    assert!(o.orphans.is_empty(), "{:#?}", o.orphans);
}

/// Volumes grow (and the file system with them); shrinking is refused and changes nothing.
async fn grow_volume_never_shrinks(w: &dyn TestWorld) {
    let a = launch(w, "litecoin", 1).await;
    assert_eq!(
        w.provider().grow_volume(&a, 400).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        w.commands(),
        vec![(
            a.instance_id.clone(),
            "xfs_growfs -d /node-data".to_string()
        )]
    );
    assert_eq!(
        w.provider().grow_volume(&a, 400).await.unwrap(),
        Outcome::AlreadyDone
    );
    match w.provider().grow_volume(&a, 100).await {
        Err(ProviderError::Refused { reason }) => assert!(reason.contains("shrink"), "{reason}"),
        other => panic!("shrink must be refused, got {other:?}"),
    }
    let o = observe(w).await;
    assert_eq!(node(&o, &a).data_volume.as_ref().unwrap().size_gb, 400);
}

/// Changing the instance type stops, modifies and starts; a stop that is interrupted before
/// the start converges on the next attempt.
async fn change_instance_type(w: &dyn TestWorld) {
    let a = launch(w, "ethereum", 0).await;
    let big = InstanceType::parse("m6i.4xlarge").unwrap();
    w.inject(Fault::FailOp {
        op: "StartInstances",
        times: 1,
    });
    assert!(w.provider().change_instance_type(&a, &big).await.is_err());
    let o = observe(w).await;
    let n = node(&o, &a);
    assert_eq!(n.state, InstanceState::Stopped);
    assert!(
        matches!(n.pending, Some(PendingStep::ChangeType { .. })),
        "{:?}",
        n.pending
    );
    assert_eq!(
        w.provider().change_instance_type(&a, &big).await.unwrap(),
        Outcome::Done
    );
    let o = observe(w).await;
    let n = node(&o, &a);
    assert_eq!(n.instance_type, "m6i.4xlarge");
    assert!(
        matches!(n.state, InstanceState::Pending | InstanceState::Running),
        "{:?}",
        n.state
    );
    assert_eq!(n.pending, None);
    assert_eq!(n.version.known(), Some(&v("1.14.12")));
    assert_eq!(
        w.provider().change_instance_type(&a, &big).await.unwrap(),
        Outcome::AlreadyDone
    );
}

/// Retiring snapshots the data volume first, terminates, removes the record; retiring again
/// is harmless.
async fn retire_snapshots_first(w: &dyn TestWorld) {
    let a = launch(w, "iota", 1).await;
    let o = observe(w).await;
    let dns: Vec<DnsRecord> = o.dns.clone();
    assert_eq!(dns.len(), 1);
    let hz = w.desired().fleet.hosted_zone_id.to_string();
    let snap = w
        .provider()
        .retire(&a, &hz, &dns)
        .await
        .unwrap()
        .expect("snapshot");
    let o = observe(w).await;
    assert!(o.node(&a.key).is_none());
    assert!(o.dns.is_empty(), "{:?}", o.dns);
    let s = o
        .snapshots
        .iter()
        .find(|s| s.snapshot_id == snap)
        .expect("retire snapshot observed");
    assert_eq!(
        (s.coin.as_str(), s.zone.as_str(), s.reason.as_str()),
        ("iota", "eu-central-1b", "retire")
    );
    assert_eq!(w.provider().retire(&a, &hz, &dns).await.unwrap(), None);
    assert!(matches!(
        w.provider().upgrade(&a, &v("2.0.3")).await,
        Err(ProviderError::NotFound { .. })
    ));
}

/// The schedule's retention deletes exactly the snapshot it names; a second delete finds it
/// gone.
async fn delete_snapshot_removes_that_one(w: &dyn TestWorld) {
    let a = launch(w, "iota", 0).await;
    let old = w.provider().snapshot(&a, "scheduled").await.unwrap();
    let new = w.provider().snapshot(&a, "scheduled").await.unwrap();
    assert_eq!(
        w.provider().delete_snapshot(&old).await.unwrap(),
        Outcome::Done
    );
    let o = observe(w).await;
    let ids: Vec<&str> = o.snapshots.iter().map(|s| s.snapshot_id.as_str()).collect();
    assert!(!ids.contains(&old.as_str()), "{ids:?}");
    assert!(ids.contains(&new.as_str()), "{ids:?}");
    assert_eq!(
        w.provider().delete_snapshot(&old).await.unwrap(),
        Outcome::AlreadyDone
    );
}

/// A consistent snapshot: the daemon of the enabled unit stopped, the data volume
/// snapshotted, the daemon started again, in that order over SSM.
async fn a_consistent_snapshot_stops_snapshots_and_starts(w: &dyn TestWorld) {
    let a = launch(w, "iota", 1).await;
    w.pass_time(std::time::Duration::from_secs(180)).await;
    let v = w.desired().coins["iota"].version.clone();
    let before = w.commands().len();
    let id = reconciler::provider::snapshot_consistent(w.provider(), &a, &v, "scheduled")
        .await
        .unwrap();
    let cmds: Vec<String> = w.commands()[before..]
        .iter()
        .filter(|(i, _)| *i == a.instance_id)
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(
        cmds,
        [
            reconciler::provider::commands::stop_command(&v).unwrap(),
            reconciler::provider::commands::start_command(&v).unwrap()
        ]
    );
    let o = observe(w).await;
    assert!(
        o.snapshots.iter().any(|s| s.snapshot_id == id),
        "{:#?}",
        o.snapshots
    );
}

/// Managed things the desired state does not account for are reported as orphans.
async fn orphans_are_reported(w: &dyn TestWorld) {
    let d = w.desired();
    // A node in a slot beyond the coin's count (dogecoin has 1 per zone).
    let c = &d.coins["dogecoin"];
    let mut slot = c.nodes[0].clone();
    slot.index = 3;
    slot.dns_name = "node9.dogecoin.internal".into();
    let s = LaunchSpec::new(&d.fleet, c, &slot, None).unwrap();
    let (extra, _) = w.provider().launch(&s).await.unwrap();
    // A node whose record stays behind after it is retired.
    let gone = launch(w, "litecoin", 1).await;
    let hz = d.fleet.hosted_zone_id.to_string();
    w.provider().retire(&gone, &hz, &[]).await.unwrap();
    // A node of a coin the repo no longer has: observe with bitcoin removed.
    let btc = launch(w, "bitcoin", 0).await;
    let mut without = d.clone();
    without.coins.remove("bitcoin");
    let o = reconciler::apply::view::observe(w.provider(), &without)
        .await
        .unwrap();
    let reasons: Vec<(String, OrphanReason)> = o
        .orphans
        .iter()
        .filter_map(|x| match x {
            Orphan::Unplaced { reason, node } => Some((node.instance_id.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert!(
        reasons.contains(&(
            extra.clone(),
            OrphanReason::IndexBeyondCount { nodes_per_zone: 1 }
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(btc.instance_id.clone(), OrphanReason::UnknownCoin)),
        "{reasons:?}"
    );
    let stray: Vec<&str> = o
        .orphans
        .iter()
        .filter_map(|x| match x {
            Orphan::StrayDns { record } => Some(record.name.as_str()),
            _ => None,
        })
        .collect();
    let gone_name = spec(w, "litecoin", 1, None).dns.name;
    assert_eq!(stray, vec![gone_name.as_str()]);
    assert!(o.nodes.is_empty(), "{:#?}", o.nodes);
}

/// Throttling that stops within the retry budget is invisible except in the attempt count;
/// throttling that does not stop is a clear error.
async fn throttling(w: &dyn TestWorld) {
    let before = w.attempts();
    w.inject(Fault::Throttle {
        op: Some("DescribeInstances"),
        times: 2,
    });
    let o = observe(w).await;
    assert!(o.nodes.is_empty());
    assert!(
        w.attempts() - before >= o.api_calls + 2,
        "retries are attempts"
    );
    w.inject(Fault::Throttle {
        op: Some("DescribeInstances"),
        times: 1000,
    });
    let scope = Scope::of(&w.desired().fleet);
    match w.provider().observe(&scope).await {
        Err(ProviderError::Throttled { op, attempts, .. }) => {
            assert!(op.contains("DescribeInstances"), "{op}");
            assert_eq!(attempts, 5);
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    w.clear_faults();
    assert!(w.provider().observe(&scope).await.is_ok());
}

/// A version that could smuggle shell never reaches the provider: `Version` cannot hold it,
/// and the command builder checks again.
async fn versions_are_checked_before_the_shell(w: &dyn TestWorld) {
    for bad in ["1.0; reboot", "$(curl x)", "1.0 && rm", "`id`"] {
        assert!(Version::parse(bad).is_err(), "{bad}");
    }
    let _ = w;
}

/// A reconfiguration sends one command to that instance (the files staged, then
/// `fleet-node apply-config`), then records the fingerprint; repeating it sends nothing. A
/// crash between its marker and the command leaves the marker; the next attempt completes
/// it, and the version stays what it was all along.
async fn reconfigure_records_the_fingerprint(w: &dyn TestWorld) {
    let a = launch(w, "litecoin", 0).await;
    let d = w.desired();
    let mut coin = d.coins["litecoin"].clone();
    coin.container_config.insert(
        fleet_repo_schema::values::EnvName::parse("DBCACHE").unwrap(),
        fleet_repo_schema::values::EnvValue::parse("2000").unwrap(),
    );
    let slot = &coin.nodes[0];
    let files = reconciler::node_config::NodeFiles::of(&coin, slot).unwrap();
    let want = files.fingerprint();
    let before = node(&observe(w).await, &a).config();
    assert_eq!(
        before.differs(&want),
        [reconciler::node_config::ConfigPart::Container],
        "launched with the file's fingerprint, one part changed since"
    );
    let version = coin.version.clone();

    w.inject(Fault::FailOp {
        op: "SendCommand",
        times: 1,
    });
    assert!(
        w.provider()
            .reconfigure(&a, &version, &files, true)
            .await
            .is_err()
    );
    let o = observe(w).await;
    let n = node(&o, &a);
    assert_eq!(
        n.pending.as_ref().map(|p| p.to_tag()),
        Some("reconfigure".into())
    );
    assert!(w.commands().is_empty(), "the command never left");
    assert_eq!(
        n.config(),
        before,
        "nothing recorded before the command succeeded"
    );

    assert_eq!(
        w.provider()
            .reconfigure(&a, &version, &files, true)
            .await
            .unwrap(),
        Outcome::Done
    );
    let cmds = w.commands();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].0, a.instance_id);
    assert!(
        cmds[0]
            .1
            .ends_with(&format!("apply-config \"$d\" '{version}' restart\n")),
        "{}",
        cmds[0].1
    );
    assert!(
        !cmds[0].1.contains("DBCACHE"),
        "values travel encoded, never as shell words"
    );
    let o = observe(w).await;
    let n = node(&o, &a);
    assert_eq!(n.config(), want);
    assert_eq!(n.pending, None);
    assert_eq!(n.version.known(), Some(&version));
    assert_eq!(
        w.provider()
            .reconfigure(&a, &version, &files, true)
            .await
            .unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(w.commands().len(), 1, "no second command");
}

/// A node of a coin with P2P ports is launched with a public address, in its zone's
/// subnet with fleet.yaml's groups; one launched without is observed as such.
async fn p2p_nodes_get_a_public_address(w: &dyn TestWorld) {
    let s = spec(w, "bitcoin", 0, None);
    assert!(s.public_ip, "bitcoin has P2P ports");
    let a = launch(w, "bitcoin", 0).await;
    let mut t = spec(w, "bitcoin", 1, None);
    t.public_ip = false;
    let (b, _) = w.provider().launch(&t).await.unwrap();
    let o = observe(w).await;
    let na = node(&o, &a);
    assert_eq!(na.public_ip, Some(true));
    let own = s
        .network
        .find(o.groups.as_deref().expect("groups observed"))
        .expect("the coin's own group")
        .group_id
        .clone();
    let mut want = s.security_groups.clone();
    want.push(own);
    want.sort();
    assert_eq!(na.security_groups.as_deref(), Some(&want[..]));
    let nb = o.nodes.iter().find(|n| n.instance_id == b).unwrap();
    assert_eq!(nb.public_ip, Some(false));
}

/// The root volume is observed at its launch size and grows online, the partition and file
/// system with it over SSM; it never shrinks, and growing to its size changes nothing.
async fn root_volume_grows_never_shrinks(w: &dyn TestWorld) {
    let s = spec(w, "litecoin", 0, None);
    let a = launch(w, "litecoin", 0).await;
    let root = node(&observe(w).await, &a)
        .root_volume
        .clone()
        .expect("root volume observed");
    assert_eq!(root.size_gb, s.root_volume_gb);
    let bigger = s.root_volume_gb + 16;
    assert_eq!(
        w.provider().grow_root_volume(&a, bigger).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        w.commands(),
        vec![(
            a.instance_id.clone(),
            "/usr/local/sbin/fleet-node grow-root".to_string()
        )]
    );
    let after = node(&observe(w).await, &a).root_volume.clone().unwrap();
    assert_eq!(
        (after.volume_id.as_str(), after.size_gb),
        (root.volume_id.as_str(), bigger)
    );
    assert_eq!(
        w.provider().grow_root_volume(&a, bigger).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert!(matches!(
        w.provider().grow_root_volume(&a, s.root_volume_gb).await,
        Err(ProviderError::Refused { .. })
    ));
    assert_eq!(w.commands().len(), 1);
}

/// An instance whose SSM agent has not registered yet (it just booted) answers
/// InvalidInstanceId: the provider asks again, and the step goes through once it has.
async fn a_command_waits_for_the_ssm_agent(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    w.inject(Fault::AgentNotReady { times: 2 });
    assert_eq!(
        w.provider().upgrade(&a, &v("1.14.10")).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        node(&observe(w).await, &a).version.known(),
        Some(&v("1.14.10"))
    );
}

/// A launch makes the coin's own security group (named, tagged, with exactly the rules its
/// ports ask for) and puts the node in it besides fleet.yaml's groups; the coin's next node
/// shares it. Changed rules are brought in step (one added, one revoked), then nothing
/// changes; another coin gets a group of its own.
async fn the_coins_own_group_is_made_and_kept(w: &dyn TestWorld) {
    let s = spec(w, "bitcoin", 0, None);
    assert!(
        s.network
            .rules
            .iter()
            .any(|r| r.source == Source::Ipv4("0.0.0.0/0".into())),
        "P2P is open to all: {:?}",
        s.network.rules
    );
    assert!(
        s.network
            .rules
            .iter()
            .any(|r| r.from_port == 8332 && r.source == Source::Ipv4("10.20.0.0/16".into())),
        "RPC from network.rpc_from: {:?}",
        s.network.rules
    );
    let a = launch(w, "bitcoin", 0).await;
    let b = launch(w, "bitcoin", 1).await;
    let o = observe(w).await;
    let groups = o.groups.clone().expect("groups observed");
    assert_eq!(groups.len(), 1, "one group for the coin: {groups:#?}");
    let g = &groups[0];
    assert_eq!(
        (g.name.as_str(), g.coin.as_deref(), g.vpc_id.as_str()),
        ("fleet-bitcoin", Some("bitcoin"), s.network.vpc_id.as_str())
    );
    assert_eq!(g.rules, s.network.rules);
    for n in [&a, &b] {
        assert!(
            node(&o, n)
                .security_groups
                .as_ref()
                .is_some_and(|gs| gs.contains(&g.group_id)),
            "{} is in the coin's group",
            n.key
        );
    }

    let mut net = s.network.clone();
    let dropped = net.rules.pop().expect("rules");
    net.rules.push(IngressRule {
        protocol: Protocol::Tcp,
        from_port: 8332,
        to_port: 8332,
        source: Source::Ipv4("192.168.0.0/24".into()),
    });
    net.rules.sort();
    let (id, outcome) = w.provider().ensure_coin_network(&net).await.unwrap();
    assert_eq!((id.as_str(), outcome), (g.group_id.as_str(), Outcome::Done));
    let after = observe(w).await.groups.unwrap();
    assert_eq!(after[0].rules, net.rules);
    assert!(!after[0].rules.contains(&dropped));
    assert_eq!(
        w.provider().ensure_coin_network(&net).await.unwrap(),
        (g.group_id.clone(), Outcome::AlreadyDone)
    );

    let other = spec(w, "litecoin", 0, None).network;
    let (lid, outcome) = w.provider().ensure_coin_network(&other).await.unwrap();
    assert_eq!(outcome, Outcome::Done);
    assert_ne!(lid, g.group_id);
    assert_eq!(observe(w).await.groups.unwrap().len(), 2);
}

/// Whether each secret the coins name exists is observed by name (the secret's value is
/// never read); a name that is only a prefix of an existing secret's is not taken for it.
async fn secrets_are_seen_by_name(w: &dyn TestWorld) {
    use reconciler::provider::SecretState;
    let scope = Scope::of_desired(w.desired());
    assert!(
        scope.secrets.len() >= 2,
        "the example names secrets: {scope:?}"
    );
    let (a, b) = (scope.secrets[0].clone(), scope.secrets[1].clone());
    for s in &scope.secrets {
        w.set_secret(s, true).await;
    }
    w.set_secret(&b, false).await;
    // Another secret whose name starts with `b`'s.
    w.set_secret(&format!("{b}-old"), true).await;
    let o = w.provider().observe(&scope).await.unwrap();
    let seen = o.secrets.expect("secrets observed");
    assert_eq!(seen.len(), scope.secrets.len(), "{seen:?}");
    assert_eq!(seen[&a], SecretState::Exists);
    assert_eq!(seen[&b], SecretState::Missing, "{seen:?}");
    // A scope without secrets asks nothing about them.
    let o = w
        .provider()
        .observe(&Scope::of(&w.desired().fleet))
        .await
        .unwrap();
    assert_eq!(o.secrets, Some(Default::default()));
}

/// A launch that dies between making the coin's group and setting its rules, or between
/// the rules and RunInstances: each retry finds the group (one, never a second), completes
/// its rules and launches the node once.
async fn a_crash_while_making_the_coins_group_converges(w: &dyn TestWorld) {
    let s = spec(w, "ethereum", 0, None);
    for op in ["AuthorizeSecurityGroupIngress", "RunInstances"] {
        w.inject(Fault::FailOp { op, times: 1 });
        assert!(w.provider().launch(&s).await.is_err(), "{op} failed");
        let groups = observe(w).await.groups.unwrap();
        assert_eq!(groups.len(), 1, "after a failed {op}: {groups:#?}");
    }
    let (id, outcome) = w.provider().launch(&s).await.unwrap();
    assert_eq!(outcome, Outcome::Done);
    let o = observe(w).await;
    let groups = o.groups.clone().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].rules, s.network.rules);
    let n = o.node(&NodeKey::of(&s.slot)).unwrap();
    assert_eq!(n.instance_id, id);
    assert!(
        n.security_groups
            .as_ref()
            .is_some_and(|g| g.contains(&groups[0].group_id))
    );
    assert_eq!(o.nodes.len(), 1);
}

/// After a hand-over: `a`'s slot is `b`'s alone, with volume `vol` and the name `name`.
fn handed_over(o: &Observed, a: &NodeRef, b: &str, vol: &str, name: &str) {
    assert_eq!(o.nodes.len(), 1, "one node: {:#?}", o.nodes);
    assert!(o.orphans.is_empty(), "{:#?}", o.orphans);
    let n = node(o, a);
    assert_eq!(n.instance_id, b);
    assert_eq!(
        n.data_volume.as_ref().map(|v| v.volume_id.as_str()),
        Some(vol),
        "the same volume, moved"
    );
    assert_eq!(n.dns_names, vec![name.to_string()]);
}

/// A replacement (a new AMI) is a new instance with the node's own data volume, moved (the
/// same volume id, attached to one instance at a time) and the coin's groups; it ran the
/// every-boot set-up. Until the hand-over the name stays the old instance's and the old
/// instance is kept, stopped (the slot's node still, the replacement no duplicate); the
/// hand-over moves the name and terminates the old one. Asking either again changes nothing.
async fn replace_moves_the_data_volume_to_a_new_instance(w: &dyn TestWorld) {
    let a = launch(w, "litecoin", 0).await;
    let before = node(&observe(w).await, &a).clone();
    let vol = before.data_volume.clone().expect("a data volume").volume_id;
    let mut s = spec(w, "litecoin", 0, None);
    s.ami = w.another_ami().await;
    let (b, outcome) = w.provider().replace(&a, &s).await.unwrap();
    assert_eq!(outcome, Outcome::Done);
    assert_ne!(b, a.instance_id);
    let o = observe(w).await;
    let old = node(&o, &a);
    assert_eq!(old.instance_id, a.instance_id, "the old one keeps the slot");
    assert_eq!(old.state, InstanceState::Stopped);
    assert!(old.data_volume.is_none(), "{old:#?}");
    assert_eq!(
        old.dns_names, before.dns_names,
        "the name stays until the hand-over"
    );
    let [Orphan::Replacement { of, node: new }] = o.orphans.as_slice() else {
        panic!("one replacement: {:#?}", o.orphans)
    };
    assert_eq!(*of, a.instance_id);
    assert_eq!(new.instance_id, b);
    assert_eq!(new.image_id.as_deref(), Some(s.ami.as_str()));
    assert_eq!(
        new.data_volume.as_ref().map(|v| v.volume_id.as_str()),
        Some(vol.as_str()),
        "the same volume, moved"
    );
    assert!(new.dns_names.is_empty(), "{:?}", new.dns_names);
    assert_eq!(new.security_groups.as_ref().map(Vec::len), Some(2));
    assert!(
        w.commands()
            .iter()
            .any(|(id, c)| *id == b && c == "/usr/local/sbin/fleet-node bootstrap"),
        "{:?}",
        w.commands()
    );
    // Again: nothing is launched or moved; the set-up is sent once more.
    let again = w.provider().replace(&a, &s).await.unwrap();
    assert_eq!(again, (b.clone(), Outcome::Done));
    assert_eq!(observe(w).await.orphans.len(), 1);

    let handed = w.provider().hand_over(&a, &s.dns).await.unwrap();
    assert_eq!(handed, (b.clone(), Outcome::Done));
    handed_over(&observe(w).await, &a, &b, &vol, &s.dns.name);
    assert_eq!(
        w.provider().hand_over(&a, &s.dns).await.unwrap(),
        (b.clone(), Outcome::AlreadyDone)
    );
    assert_eq!(
        w.provider().replace(&a, &s).await.unwrap(),
        (b.clone(), Outcome::AlreadyDone)
    );
    assert_eq!(observe(w).await.nodes.len(), 1);
}

/// A hand-over before the replacement holds the volume is refused and changes nothing: the
/// name and the old instance stay.
async fn a_hand_over_before_the_volume_moved_is_refused(w: &dyn TestWorld) {
    let a = launch(w, "litecoin", 1).await;
    let before = node(&observe(w).await, &a).clone();
    let mut s = spec(w, "litecoin", 1, None);
    s.ami = w.another_ami().await;
    // No replacement at all.
    let e = w.provider().hand_over(&a, &s.dns).await.unwrap_err();
    assert!(e.to_string().contains("has no replacement"), "{e}");
    // A replacement cut off before it has the volume.
    w.inject(Fault::FailOp {
        op: "AttachVolume",
        times: 1,
    });
    assert!(w.provider().replace(&a, &s).await.is_err());
    let e = w.provider().hand_over(&a, &s.dns).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("does not hold the node's data volume"),
        "{e}"
    );
    let o = observe(w).await;
    let old = node(&o, &a);
    assert_eq!(old.instance_id, a.instance_id);
    assert_eq!(old.dns_names, before.dns_names);
}

/// A replacement cut off at any of its calls is finished by the next attempt, and so is a
/// hand-over: one replacement, the one volume on it, the old instance kept until the
/// hand-over is through, then gone.
async fn a_crash_anywhere_in_a_replacement_converges(w: &dyn TestWorld) {
    let a = launch(w, "dogecoin", 0).await;
    let vol = node(&observe(w).await, &a)
        .data_volume
        .clone()
        .unwrap()
        .volume_id;
    let mut s = spec(w, "dogecoin", 0, None);
    s.ami = w.another_ami().await;
    let keeps_slot = |o: &Observed, after: &str| {
        assert_eq!(
            o.node(&a.key).unwrap().instance_id,
            a.instance_id,
            "after {after}"
        );
        assert!(
            o.orphans
                .iter()
                .all(|x| matches!(x, Orphan::Replacement { of, .. } if *of == a.instance_id)),
            "after {after}: {:#?}",
            o.orphans
        );
    };
    for op in [
        "RunInstances",
        "StopInstances",
        "DetachVolume",
        "AttachVolume",
        "SendCommand",
    ] {
        w.inject(Fault::FailOp { op, times: 1 });
        assert!(
            w.provider().replace(&a, &s).await.is_err(),
            "a replacement cut off at {op} fails"
        );
        // Meanwhile the old instance keeps the slot and the replacement is no duplicate.
        keeps_slot(&observe(w).await, op);
    }
    let (b, outcome) = w.provider().replace(&a, &s).await.unwrap();
    assert_eq!(outcome, Outcome::Done);
    keeps_slot(&observe(w).await, "the replacement");
    for op in [
        "ChangeResourceRecordSets",
        "ModifyInstanceAttribute",
        "TerminateInstances",
    ] {
        w.inject(Fault::FailOp { op, times: 1 });
        assert!(
            w.provider().hand_over(&a, &s.dns).await.is_err(),
            "a hand-over cut off at {op} fails"
        );
        keeps_slot(&observe(w).await, op);
    }
    assert_eq!(
        w.provider().hand_over(&a, &s.dns).await.unwrap(),
        (b.clone(), Outcome::Done)
    );
    handed_over(&observe(w).await, &a, &b, &vol, &s.dns.name);
}

/// A replacement undone (the repository wants the old instance again): the volume goes back
/// to the old instance, which starts again without its mark; the replacement is terminated;
/// the name never moved. Cut off at any of its calls, the next attempt finishes the job, the
/// old instance keeping the slot throughout; asking again changes nothing.
async fn an_undone_replacement_gives_the_volume_back(w: &dyn TestWorld) {
    let a = launch(w, "litecoin", 0).await;
    let before = node(&observe(w).await, &a).clone();
    let vol = before.data_volume.clone().expect("a data volume").volume_id;
    let mut s = spec(w, "litecoin", 0, None);
    s.ami = w.another_ami().await;
    let (b, _) = w.provider().replace(&a, &s).await.unwrap();
    for op in [
        "StopInstances",
        "DetachVolume",
        "AttachVolume",
        "TerminateInstances",
        "StartInstances",
        "DeleteTags",
    ] {
        w.inject(Fault::FailOp { op, times: 1 });
        assert!(
            w.provider().undo_replace(&a).await.is_err(),
            "an undo cut off at {op} fails"
        );
        let o = observe(w).await;
        assert_eq!(node(&o, &a).instance_id, a.instance_id, "after {op}");
        assert!(
            o.orphans
                .iter()
                .all(|x| matches!(x, Orphan::Replacement { of, .. } if *of == a.instance_id)),
            "after {op}: {:#?}",
            o.orphans
        );
    }
    assert_eq!(w.provider().undo_replace(&a).await.unwrap(), Outcome::Done);
    let o = observe(w).await;
    assert_eq!(o.nodes.len(), 1, "{:#?}", o.nodes);
    assert!(
        o.orphans.is_empty(),
        "the replacement is gone: {:#?}",
        o.orphans
    );
    let n = node(&o, &a);
    assert_eq!(n.instance_id, a.instance_id);
    assert!(
        matches!(n.state, InstanceState::Running | InstanceState::Pending),
        "{:?}",
        n.state
    );
    assert_eq!(
        n.data_volume.as_ref().map(|v| v.volume_id.as_str()),
        Some(vol.as_str()),
        "the same volume, back"
    );
    assert_eq!(n.dns_names, before.dns_names);
    assert_eq!(n.pending, None, "the mark is cleared");
    assert_eq!(n.image_id, before.image_id);
    assert_eq!(
        w.provider().undo_replace(&a).await.unwrap(),
        Outcome::AlreadyDone
    );
    // Nothing of the replacement's is left to hand over to.
    let e = w.provider().hand_over(&a, &s.dns).await.unwrap_err();
    assert!(e.to_string().contains("has no replacement"), "{e} ({b})");
}

/// A replacement cut off at any of its calls can be undone: the volume ends on the old
/// instance (wherever the cut left it), which runs again without its mark, and nothing of the
/// replacement is left.
async fn a_replacement_cut_off_anywhere_can_be_undone(w: &dyn TestWorld) {
    let another = w.another_ami().await;
    for (i, (coin, slot, op)) in [
        ("bitcoin", 0, "StopInstances"),
        ("bitcoin", 1, "DetachVolume"),
        ("bitcoin", 2, "AttachVolume"),
        ("ethereum", 0, "SendCommand"),
    ]
    .into_iter()
    .enumerate()
    {
        let a = launch(w, coin, slot).await;
        let vol = node(&observe(w).await, &a)
            .data_volume
            .clone()
            .unwrap()
            .volume_id;
        let mut s = spec(w, coin, slot, None);
        s.ami = another.clone();
        w.inject(Fault::FailOp { op, times: 1 });
        assert!(
            w.provider().replace(&a, &s).await.is_err(),
            "a replacement cut off at {op} fails"
        );
        assert_eq!(
            w.provider().undo_replace(&a).await.unwrap(),
            Outcome::Done,
            "undone after {op}"
        );
        let o = observe(w).await;
        assert_eq!(o.nodes.len(), i + 1, "after {op}: {:#?}", o.nodes);
        assert!(o.orphans.is_empty(), "after {op}: {:#?}", o.orphans);
        let n = node(&o, &a);
        assert_eq!(
            n.data_volume.as_ref().map(|v| v.volume_id.as_str()),
            Some(vol.as_str()),
            "after {op}"
        );
        assert!(
            matches!(n.state, InstanceState::Running | InstanceState::Pending),
            "after {op}: {:?}",
            n.state
        );
        assert_eq!(n.pending, None, "after {op}");
    }
}

/// Tags are set, deleted and recorded as a `set-tags` step asks, on the instance (the data
/// volume is tagged along on AWS); asking again changes nothing.
async fn tags_are_set_deleted_and_recorded(w: &dyn TestWorld) {
    use reconciler::provider::{TagChange, tags};
    let a = launch(w, "litecoin", 0).await;
    let vol = node(&observe(w).await, &a)
        .data_volume
        .clone()
        .unwrap()
        .volume_id;
    let add = TagChange {
        set: [("Team".to_string(), "nodes".to_string())].into(),
        unset: vec![],
        record: tags::coin_tags_record(["Team"].into_iter()),
    };
    let p = w.provider();
    assert_eq!(
        p.set_tags(&a, Some(&vol), &add).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        p.set_tags(&a, Some(&vol), &add).await.unwrap(),
        Outcome::AlreadyDone
    );
    let t = node(&observe(w).await, &a).tags.clone();
    assert_eq!(t.get("Team").map(String::as_str), Some("nodes"));
    assert!(tags::recorded_coin_tag(&t[tags::COIN_TAGS], "Team"));
    let drop = TagChange {
        set: Default::default(),
        unset: vec!["Team".into()],
        record: tags::coin_tags_record(std::iter::empty()),
    };
    assert_eq!(
        p.set_tags(&a, Some(&vol), &drop).await.unwrap(),
        Outcome::Done
    );
    let t = node(&observe(w).await, &a).tags.clone();
    assert!(!t.contains_key("Team"), "{t:?}");
    assert!(!tags::recorded_coin_tag(&t[tags::COIN_TAGS], "Team"));
    assert!(t.contains_key(tags::MANAGED), "fleet's own tags stay");
}

/// Whether EC2 says the data volume of `instance` goes with it when it is terminated.
async fn data_volume_deleted_on_termination(w: &AwsWorld, instance: &str) -> Option<bool> {
    let out = w
        .ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    let i = out.reservations()[0].instances()[0].clone();
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some("/dev/sdf"))
        .and_then(|m| m.ebs()?.delete_on_termination())
}

/// On EC2 the volume a restore took off is kept, detached and tagged with its instance (it
/// holds what the failed version wrote: never deleted without a person), and the new one is
/// deleted with the instance, as a launched node's is.
#[tokio::test]
async fn aws_a_restore_keeps_the_old_volume_detached() {
    let w = AwsWorld::new("conformance::restore_keeps_the_old_volume").await;
    let a = launch(&w, "dogecoin", 0).await;
    let old = node(&observe(&w).await, &a)
        .data_volume
        .clone()
        .unwrap()
        .volume_id;
    w.provider()
        .snapshot(&a, "before-upgrade:2.0")
        .await
        .unwrap();
    w.provider()
        .restore_data(&a, "before-upgrade:2.0")
        .await
        .unwrap();
    let out = w
        .ec2
        .describe_volumes()
        .volume_ids(&old)
        .send()
        .await
        .unwrap();
    let v = &out.volumes()[0];
    assert_eq!(v.state().map(|s| s.as_str()), Some("available"));
    assert!(
        v.tags().iter().any(
            |t| t.key() == Some(reconciler::provider::tags::RESTORED_AWAY)
                && t.value() == Some(a.instance_id.as_str())
        ),
        "{:?}",
        v.tags()
    );
    assert_eq!(
        data_volume_deleted_on_termination(&w, &a.instance_id).await,
        Some(true)
    );
}

/// Until the hand-over, the moved volume is not deleted with the replacement (a failed one
/// terminated by hand must not take the chain with it); from the hand-over on, it is, as at
/// launch.
#[tokio::test]
async fn aws_a_replacement_owns_the_volume_only_from_its_hand_over() {
    let w = AwsWorld::new("conformance::volume_owned_from_the_hand_over").await;
    let a = launch(&w, "litecoin", 0).await;
    let mut s = spec(&w, "litecoin", 0, None);
    s.ami = w.another_ami().await;
    let (b, _) = w.provider().replace(&a, &s).await.unwrap();
    assert_eq!(
        data_volume_deleted_on_termination(&w, &b).await,
        Some(false)
    );
    w.provider().hand_over(&a, &s.dns).await.unwrap();
    assert_eq!(data_volume_deleted_on_termination(&w, &b).await, Some(true));
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sim {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let w = SimWorld::new();
                    super::$case(&w).await;
                }
            )*
        }
        mod aws {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let w = AwsWorld::new(concat!("conformance::", stringify!($case))).await;
                    super::$case(&w).await;
                }
            )*
        }
    };
}

conformance!(
    observe_empty,
    launch_then_observe,
    launch_is_idempotent,
    launch_restores_from_snapshot,
    upgrade_targets_one_instance,
    a_rollback_sends_one_command_and_records_the_old_version,
    a_restore_puts_the_data_volume_back_from_its_snapshot,
    restart_daemon_sends_one_command_and_records_nothing,
    status_checks_are_read_for_the_running_instances,
    disk_use_is_read_per_instance_from_the_agents_figures,
    delete_snapshot_removes_that_one,
    a_consistent_snapshot_stops_snapshots_and_starts,
    reconfigure_records_the_fingerprint,
    p2p_nodes_get_a_public_address,
    the_coins_own_group_is_made_and_kept,
    secrets_are_seen_by_name,
    a_crash_while_making_the_coins_group_converges,
    replace_moves_the_data_volume_to_a_new_instance,
    a_hand_over_before_the_volume_moved_is_refused,
    tags_are_set_deleted_and_recorded,
    a_crash_anywhere_in_a_replacement_converges,
    an_undone_replacement_gives_the_volume_back,
    a_replacement_cut_off_anywhere_can_be_undone,
    root_volume_grows_never_shrinks,
    a_command_waits_for_the_ssm_agent,
    failed_command_leaves_version_unknown,
    crash_between_steps_converges,
    grow_volume_never_shrinks,
    change_instance_type,
    retire_snapshots_first,
    orphans_are_reported,
    throttling,
    versions_are_checked_before_the_shell,
);
