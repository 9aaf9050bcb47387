//! The node watch against two real, peered `litecoind -regtest` nodes (Debian's package) on
//! loopback, probed by the real `bitcoin` probe. The second node is cut off from the network
//! (`setnetworkactive false`) while the first mines: the watch sees it lag, then stuck, opens
//! one incident, heals it by restarting it through the provider interface (the test's
//! provider restarts the real daemon, which reconnects), sees it catch up, and resolves the
//! incident once.
//!
//! The watch's clock is a manual one, a minute per watch, as `fleet run` makes them every
//! `health.watch_interval`; the chains are real and move in real time. Needs
//! `FLEET_TEST_LITECOIND` (set by `tests/run`).

use async_trait::async_trait;
use fleet_repo_schema::MemTree;
use fleet_repo_schema::values::{InstanceType, Version};
use fleet_tests::nodes::{Litecoind, now_ms};
use fleet_tests::workspace_root;
use fleet_tests::world::desired_of;
use reconciler::care::Watcher;
use reconciler::care::incident::{Care, Change, Condition};
use reconciler::clock::ManualClock;
use reconciler::daemon::watch::watch_once;
use reconciler::daemon::{Backend, Good, Shared};
use reconciler::events::{Event, RecordingNotifier, StepOutcome};
use reconciler::health::probe::{RpcCredentials, RpcProber, StaticResolver};
use reconciler::node::NodeKey;
use reconciler::provider::sim::{SimConfig, SimProvider};
use reconciler::provider::{
    DnsRecord, DnsTarget, ImagePin, LaunchSpec, NodeRef, Observation, Outcome, Provider,
    ProviderError, Scope, StatusChecks, TagChange,
};
use reconciler::store::Journal;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

const USER: &str = "fleet";

/// The simulated fleet's records (instances, tags) in front of real daemons: every call is
/// the simulator's, and a daemon restart also restarts the node's real litecoind.
struct RealDaemons {
    sim: SimProvider,
    daemons: Mutex<BTreeMap<NodeKey, Litecoind>>,
}

#[async_trait]
impl Provider for RealDaemons {
    fn name(&self) -> &'static str {
        "sim+litecoind"
    }
    async fn observe(&self, scope: &Scope) -> Result<Observation, ProviderError> {
        self.sim.observe(scope).await
    }
    async fn restart_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        self.sim.restart_daemon(node, version).await?;
        let mut d = self.daemons.lock().await;
        let ltc = d.get_mut(&node.key).expect("a daemon for every node");
        ltc.stop().await;
        ltc.start_ready().await;
        Ok(())
    }
    async fn launch(&self, spec: &LaunchSpec) -> Result<(String, Outcome), ProviderError> {
        self.sim.launch(spec).await
    }
    async fn upgrade_pinned(
        &self,
        node: &NodeRef,
        version: &Version,
        pin: ImagePin<'_>,
    ) -> Result<Outcome, ProviderError> {
        self.sim.upgrade_pinned(node, version, pin).await
    }
    async fn reconfigure(
        &self,
        node: &NodeRef,
        version: &Version,
        files: &reconciler::node_config::NodeFiles,
        restart: bool,
    ) -> Result<Outcome, ProviderError> {
        self.sim.reconfigure(node, version, files, restart).await
    }
    async fn set_tags(
        &self,
        node: &NodeRef,
        volume_id: Option<&str>,
        change: &TagChange,
    ) -> Result<Outcome, ProviderError> {
        self.sim.set_tags(node, volume_id, change).await
    }
    async fn ensure_coin_network(
        &self,
        net: &reconciler::network::CoinNetwork,
    ) -> Result<(String, Outcome), ProviderError> {
        self.sim.ensure_coin_network(net).await
    }
    async fn set_security_groups(
        &self,
        node: &NodeRef,
        groups: &[String],
    ) -> Result<Outcome, ProviderError> {
        self.sim.set_security_groups(node, groups).await
    }
    async fn record_version(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        self.sim.record_version(node, version).await
    }
    async fn record_image_runs(&self, node: &NodeRef, value: &str) -> Result<(), ProviderError> {
        self.sim.record_image_runs(node, value).await
    }
    async fn confirm_version(
        &self,
        node: &NodeRef,
        version: &Version,
    ) -> Result<bool, ProviderError> {
        self.sim.confirm_version(node, version).await
    }
    async fn replace(
        &self,
        node: &NodeRef,
        spec: &LaunchSpec,
    ) -> Result<(String, Outcome), ProviderError> {
        self.sim.replace(node, spec).await
    }
    async fn hand_over(
        &self,
        node: &NodeRef,
        dns: &DnsTarget,
    ) -> Result<(String, Outcome), ProviderError> {
        self.sim.hand_over(node, dns).await
    }
    async fn undo_replace(&self, node: &NodeRef) -> Result<Outcome, ProviderError> {
        self.sim.undo_replace(node).await
    }
    async fn grow_volume(&self, node: &NodeRef, size_gb: u32) -> Result<Outcome, ProviderError> {
        self.sim.grow_volume(node, size_gb).await
    }
    async fn grow_root_volume(
        &self,
        node: &NodeRef,
        size_gb: u32,
    ) -> Result<Outcome, ProviderError> {
        self.sim.grow_root_volume(node, size_gb).await
    }
    async fn change_instance_type(
        &self,
        node: &NodeRef,
        instance_type: &InstanceType,
    ) -> Result<Outcome, ProviderError> {
        self.sim.change_instance_type(node, instance_type).await
    }
    async fn snapshot(&self, node: &NodeRef, reason: &str) -> Result<String, ProviderError> {
        self.sim.snapshot(node, reason).await
    }
    async fn restore_data(&self, node: &NodeRef, reason: &str) -> Result<Outcome, ProviderError> {
        self.sim.restore_data(node, reason).await
    }
    async fn finish_restore(
        &self,
        node: &NodeRef,
        snapshot: &str,
    ) -> Result<Outcome, ProviderError> {
        self.sim.finish_restore(node, snapshot).await
    }
    async fn retire(
        &self,
        node: &NodeRef,
        hosted_zone_id: &str,
        dns: &[DnsRecord],
    ) -> Result<Option<String>, ProviderError> {
        self.sim.retire(node, hosted_zone_id, dns).await
    }
    async fn set_dns(&self, node: &NodeRef, target: &DnsTarget) -> Result<Outcome, ProviderError> {
        self.sim.set_dns(node, target).await
    }
    async fn delete_dns(
        &self,
        hosted_zone_id: &str,
        record: &DnsRecord,
    ) -> Result<Outcome, ProviderError> {
        self.sim.delete_dns(hosted_zone_id, record).await
    }
    async fn stop_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        self.sim.stop_daemon(node, version).await
    }
    async fn start_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        self.sim.start_daemon(node, version).await
    }
    async fn status_checks(&self) -> Result<BTreeMap<String, StatusChecks>, ProviderError> {
        self.sim.status_checks().await
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<Outcome, ProviderError> {
        self.sim.delete_snapshot(snapshot_id).await
    }
    async fn disk_usage(
        &self,
        instance_ids: &[String],
        since_ms: u64,
    ) -> Result<BTreeMap<String, Vec<reconciler::provider::DiskPoint>>, ProviderError> {
        self.sim.disk_usage(instance_ids, since_ms).await
    }
}

/// The example fleet with litecoin only, its windows short enough for a test: lag is out of
/// sync at once (max_lag_blocks 0), an incident after 2 watches, stuck after 4 unmoved
/// watches, a restart after 5.
fn fleet() -> fleet_repo_schema::Desired {
    let ex = workspace_root().join("examples/fleet");
    let read = |p: &str| std::fs::read_to_string(ex.join(p)).expect("the example");
    let mut tree = MemTree::new();
    tree.insert("fleet.yaml", read("fleet.yaml"));
    tree.insert("metrics/litecoin.sh", read("metrics/litecoin.sh"));
    let coin = read("coins/litecoin.yaml")
        .replace("max_lag_blocks: 3", "max_lag_blocks: 0")
        .replace(
            "stall_timeout: 30m",
            "stall_timeout: 4m\n  alert_after: 2m\n  watch_interval: 1m",
        );
    tree.insert(
        "coins/litecoin.yaml",
        format!("{coin}heal:\n  restart_after: 5m\n  max_per_day: 3\n"),
    );
    desired_of(&tree)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_litecoind_is_an_incident_once_healed_by_a_restart_and_resolved_once() {
    let pw = format!("pw-{}-{}-not-for-printing", std::process::id(), now_ms());
    let mut a = Litecoind::new("a", USER, &pw);
    let mut b = Litecoind::new("b", USER, &pw);
    b.arg(format!("-addnode={}", a.p2p_addr()));
    a.start_ready().await;
    b.start_ready().await;
    a.mine(101).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while b.block_count().await < 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never synced\n{}",
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let desired = fleet();
    let clock = ManualClock::new(1_700_000_000_000);
    let sim = SimProvider::new(Arc::new(clock.clone()), SimConfig::default());
    sim.seed(&desired, &Default::default()).expect("seed");
    let key = |z: &str| NodeKey::parse("litecoin", z, 1).unwrap();
    let (first, second) = (key("eu-central-1a"), key("eu-central-1b"));
    let mut resolver = StaticResolver::new();
    resolver.insert("node1.litecoin.internal", a.rpc_addr());
    resolver.insert("node2.litecoin.internal", b.rpc_addr());
    let mut creds = RpcCredentials::new();
    creds.insert("litecoin", USER.to_string(), pw.clone());
    let b_rpc = b.rpc();
    let provider = Arc::new(RealDaemons {
        sim: sim.clone(),
        daemons: Mutex::new(
            [(first.clone(), a), (second.clone(), b)]
                .into_iter()
                .collect(),
        ),
    });
    let backend = Backend {
        provider: provider.clone(),
        prober: Arc::new(RpcProber::new(
            Arc::new(resolver),
            creds,
            Duration::from_secs(5),
        )),
        clock: Arc::new(clock.clone()),
    };
    let good = Good {
        rev: "c1".into(),
        summary: None,
        desired: Arc::new(desired),
    };
    let shared = Arc::new(Shared::default());
    let journal = Journal::in_memory();
    let events = Arc::new(RecordingNotifier::default());
    let notifier = reconciler::daemon::report::StatusNotifier {
        shared: Arc::clone(&shared),
        next: events.clone(),
    };
    let mut watcher = Watcher::default();
    let a_rpc = provider.daemons.lock().await[&first].rpc();
    let mine = |n: u64| {
        let rpc = a_rpc.clone();
        async move {
            rpc.call(
                "generatetoaddress",
                json!([n, fleet_tests::nodes::LTC_REGTEST_ADDR]),
            )
            .await
            .expect("mined");
        }
    };

    // In sync, the chain moving as a live one does: nothing to say.
    for _ in 0..3 {
        mine(1).await;
        let want = provider.daemons.lock().await[&first].block_count().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while b_rpc
            .call("getblockcount", json!([]))
            .await
            .ok()
            .and_then(|v| v.as_u64())
            != Some(want)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "b does not follow a"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watch_once(
            &shared,
            &good,
            &backend,
            &journal,
            &notifier,
            &mut watcher,
            3_600_000,
            None,
        )
        .await
        .expect("a watch");
        clock.advance_ms(60_000);
    }
    assert!(events.events().is_empty(), "{:#?}", events.events());

    // The second node loses the network; the first mines on, a few blocks a watch.
    b_rpc
        .call("setnetworkactive", json!([false]))
        .await
        .expect("setnetworkactive");
    let cut_at = clock_now(&clock);
    let mut resolved_at = None;
    for _ in 0..30 {
        mine(3).await;
        watch_once(
            &shared,
            &good,
            &backend,
            &journal,
            &notifier,
            &mut watcher,
            3_600_000,
            None,
        )
        .await
        .expect("a watch");
        if events.events().iter().any(|(_, e)| {
            matches!(
                e,
                Event::Incident {
                    change: Change::Resolved,
                    ..
                }
            )
        }) {
            resolved_at = Some(clock_now(&clock));
            break;
        }
        clock.advance_ms(60_000);
        // A restarted node needs a moment to reconnect and catch up, in real time.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let inc: Vec<_> = events
        .events()
        .into_iter()
        .filter_map(|(at, e)| match e {
            Event::Incident { incident, change } => Some((at, incident, change)),
            _ => None,
        })
        .collect();
    let heals: Vec<_> = events
        .events()
        .into_iter()
        .filter_map(|(at, e)| match e {
            Event::Healed { node, outcome, .. } => Some((at, node, outcome)),
            _ => None,
        })
        .collect();
    let resolved_at = resolved_at.unwrap_or_else(|| panic!("never resolved: {inc:#?}"));
    assert_eq!(
        inc.iter().filter(|i| i.2 == Change::Opened).count(),
        1,
        "{inc:#?}"
    );
    assert_eq!(
        inc.iter().filter(|i| i.2 == Change::Resolved).count(),
        1,
        "{inc:#?}"
    );
    assert!(inc.iter().all(|i| i.1.subject
        == reconciler::care::incident::Subject::Node {
            node: second.clone()
        }));
    // Lagging first (opened after alert_after), then stuck (updated), then healed.
    assert!(
        matches!(inc[0].1.condition, Condition::OutOfSync { .. }),
        "{inc:#?}"
    );
    assert!(
        inc.iter()
            .any(|i| i.2 == Change::Updated && matches!(i.1.condition, Condition::Stuck { .. })),
        "{inc:#?}"
    );
    assert!(
        inc.iter()
            .any(|i| matches!(i.1.care, Care::Healed { restarts: 1, .. }))
    );
    assert_eq!(heals.len(), 1, "{heals:#?}");
    assert_eq!(heals[0].1, second);
    assert_eq!(heals[0].2, StepOutcome::Done);
    assert!(
        heals[0].0 - cut_at >= 5 * 60_000,
        "healed before restart_after"
    );
    // It caught up for real: the same height as the miner.
    let d = provider.daemons.lock().await;
    assert_eq!(
        d[&second].block_count().await,
        d[&first].block_count().await
    );
    assert!(shared.status().incidents.is_empty());
    println!(
        "cut off -> incident {} watches, -> heal {} watches, -> resolved {} watches",
        (inc[0].0 - cut_at) / 60_000,
        (heals[0].0 - cut_at) / 60_000,
        (resolved_at - cut_at) / 60_000
    );
}

fn clock_now(c: &ManualClock) -> u64 {
    use reconciler::clock::Clock;
    c.now_ms()
}
