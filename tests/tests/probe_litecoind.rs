//! The `bitcoin` probe and the health gate against two real, peered `litecoind -regtest`
//! nodes (Debian's package) on loopback: in sync; one node stopped ("upgraded") while the other
//! mines a few thousand blocks; restarted, it catches up, and the gate must hold until its
//! blocks equal its headers and the other node's height, then pass.
//!
//! Needs `FLEET_TEST_LITECOIND` (set by `tests/run`).

use fleet_repo_schema::Probe;
use fleet_tests::nodes::{Litecoind, now_ms, probe_target};
use reconciler::health::probe::{RpcCredentials, RpcProber, StaticResolver};
use reconciler::health::{
    ChainStatus, Gate, GateConfig, ProbeError, ProbeTarget, Prober, Verdict, WaitReason,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USER: &str = "fleet";

/// A password no message may contain, different on every run.
fn password() -> String {
    format!("pw-{}-{}-not-for-printing", std::process::id(), now_ms())
}

/// The prober under test: both nodes by name on loopback, with `password`.
fn prober(a: &Litecoind, b: &Litecoind, password: &str) -> RpcProber {
    let mut r = StaticResolver::new();
    r.insert("node1.litecoin.fleet.test", a.rpc_addr());
    r.insert("node2.litecoin.fleet.test", b.rpc_addr());
    let mut creds = RpcCredentials::new();
    creds.insert("litecoin", USER.to_string(), password.to_string());
    RpcProber::new(Arc::new(r), creds, Duration::from_secs(5))
}

fn target(index: u32) -> ProbeTarget {
    // The port is the resolver's (loopback), `health.rpc_port` only has to be set.
    probe_target("litecoin", index, Probe::Bitcoin, Some(9332), None)
}

const GATE: GateConfig = GateConfig {
    max_lag_blocks: 0,
    stall_timeout_ms: 60_000,
    sync_timeout_ms: 240_000,
    full_sync: false,
};

/// What the gate must say of `reading` with `reference`, from the contract alone.
fn in_sync(s: &ChainStatus, reference: u64) -> bool {
    !s.initial_block_download
        && s.blocks == s.headers
        && s.blocks + GATE.max_lag_blocks >= reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_holds_while_a_restarted_litecoind_catches_up() {
    let pw = password();
    let mut a = Litecoind::new("a", USER, &pw);
    let mut b = Litecoind::new("b", USER, &pw);
    b.arg(format!("-addnode={}", a.p2p_addr()));
    // b dials a at start and retries only every minute: a listens first.
    a.start_ready().await;
    b.start_ready().await;
    let p = prober(&a, &b, &pw);
    let (ta, tb) = (target(1), target(2));

    // Both in sync at 101 blocks.
    a.mine(101).await;
    let t0 = Instant::now();
    while b.block_count().await != 101 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "b did not get a's first 101 blocks; {}",
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ra = p.probe(&ta).await.expect("a answers");
    assert_eq!(
        ra,
        ChainStatus {
            blocks: 101,
            headers: 101,
            initial_block_download: false,
            client: Some(fleet_tests::nodes::version_of(
                &fleet_tests::nodes::litecoind_bin(),
                "-version"
            )),
        }
    );
    let rb = p.probe(&tb).await;
    assert_eq!(rb, Ok(ra));
    let mut gate = Gate::new(GATE, now_ms());
    assert_eq!(
        gate.observe(now_ms(), &rb, Some(ra.blocks)),
        Verdict::InSync { height: 101 }
    );

    // Wrong credentials: a clear error that names neither password.
    let wrong = format!("wrong-{pw}");
    let e = prober(&a, &b, &wrong).probe(&ta).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        matches!(&e, ProbeError::BadAnswer { detail, .. } if detail.contains("refused the RPC credentials")),
        "{e}"
    );
    assert!(
        !shown.contains(&pw) && !shown.contains("wrong-"),
        "a password leaked: {shown}"
    );
    eprintln!("wrong credentials: {e}");

    // "Upgrade" b: stop it; a stopped node is unreachable.
    b.stop().await;
    let e = p.probe(&tb).await.unwrap_err();
    assert!(matches!(e, ProbeError::Unreachable { .. }), "{e}");
    eprintln!("stopped node: {e}");

    let mined = 2500;
    let t = Instant::now();
    a.mine(mined).await;
    eprintln!("mined {mined} blocks on a in {:?}", t.elapsed());
    let reference = p.probe(&ta).await.expect("a answers").blocks;
    assert_eq!(reference, 101 + mined);

    // Restart b and poll it with the prober and the gate until the gate passes.
    let started = now_ms();
    let t = Instant::now();
    b.start();
    let mut gate = Gate::new(GATE, started);
    let mut readings = 0u32;
    let (mut unreachable, mut warming_up, mut ibd, mut behind_headers, mut behind_ref) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    // Readings where the node said it was not in IBD and yet was behind: the case
    // `initialblockdownload` alone would pass.
    let mut behind_without_ibd = 0u32;
    let mut first_headers_ahead: Option<Duration> = None;
    let passed = loop {
        let reference = p.probe(&ta).await.expect("a answers").blocks;
        let reading = p.probe(&tb).await;
        let now = now_ms();
        let verdict = gate.observe(now, &reading, Some(reference));
        readings += 1;
        match (&reading, &verdict) {
            (
                Err(e),
                Verdict::Waiting {
                    reason: WaitReason::Unreachable { .. },
                    ..
                },
            ) => {
                if e.to_string().contains("-28") {
                    warming_up += 1;
                } else {
                    unreachable += 1;
                }
            }
            (Ok(s), Verdict::Waiting { reason, .. }) => {
                assert!(
                    !in_sync(s, reference),
                    "the gate held a node in sync: {s:?} ref {reference}: {verdict:?}"
                );
                if s.blocks < s.headers && first_headers_ahead.is_none() {
                    first_headers_ahead = Some(t.elapsed());
                }
                if !s.initial_block_download && (s.blocks < s.headers || s.blocks < reference) {
                    behind_without_ibd += 1;
                }
                match reason {
                    WaitReason::InitialBlockDownload => ibd += 1,
                    WaitReason::BlocksBehindHeaders => behind_headers += 1,
                    WaitReason::BehindReference { reference: r } => {
                        assert_eq!(*r, reference);
                        behind_ref += 1
                    }
                    WaitReason::Unreachable { .. } => panic!("{verdict:?} of a reading {s:?}"),
                }
            }
            (Ok(s), Verdict::InSync { height }) => {
                assert!(
                    in_sync(s, reference),
                    "the gate passed too early: {s:?} ref {reference}"
                );
                assert_eq!(*height, s.blocks);
                break *s;
            }
            (_, Verdict::Failed(f)) => panic!("the gate failed: {f}; {}", b.log_tail()),
            (r, v) => panic!("unexpected verdict {v:?} for {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let took = t.elapsed();
    eprintln!(
        "b in sync at {} after {took:?}: {readings} readings; waiting: {unreachable} unreachable, \
         {warming_up} warming up (-28), {ibd} in IBD, {behind_headers} blocks < headers, \
         {behind_ref} behind a; {behind_without_ibd} behind while ibd=false; \
         first blocks < headers at {first_headers_ahead:?}",
        passed.blocks
    );
    assert_eq!(
        passed,
        ChainStatus {
            blocks: reference,
            headers: reference,
            initial_block_download: false,
            client: Some(fleet_tests::nodes::version_of(
                &fleet_tests::nodes::litecoind_bin(),
                "-version"
            )),
        }
    );
    // The gate really held while b was behind, more than once, on real readings.
    let behind = ibd + behind_headers + behind_ref;
    assert!(
        behind >= 5,
        "only {behind} readings of b while it caught up: the test saw no catch-up"
    );
    // b learns a's headers in a moment and validates the blocks for seconds: the probe must
    // have shown headers ahead of blocks (while `initialblockdownload` was false, the case
    // that flag alone would let through).
    assert!(
        behind_headers >= 3,
        "only {behind_headers} readings with blocks < headers ({behind_ref} behind a, {ibd} in IBD)"
    );
    assert!(
        behind_without_ibd >= 3,
        "only {behind_without_ibd} readings behind with initialblockdownload false"
    );
    // And b agrees when asked directly.
    assert_eq!(b.block_count().await, reference);

    a.stop().await;
    b.stop().await;
}

/// A real daemon's own version (getnetworkinfo's subversion) that is not what the node's tag
/// records is drift the plan fixes, with the daemon's and the tag's words in its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_daemons_version_that_differs_from_its_tag_is_planned_for() {
    use reconciler::plan::{Action, plan};
    use reconciler::provider::sim::{SimConfig, SimProvider};
    let pw = password();
    let mut a = Litecoind::new("a", USER, &pw);
    a.start_ready().await;
    let reading = prober(&a, &a, &pw)
        .probe(&target(1))
        .await
        .expect("a answers");
    a.stop().await;
    let reported = reading.client.expect("litecoind says its version");
    assert_eq!(
        Some(reported),
        Some(fleet_tests::nodes::version_of(
            &fleet_tests::nodes::litecoind_bin(),
            "-version"
        ))
    );

    // The example fleet, every node tagged at the repository's version (litecoin 0.21.4),
    // and litecoin's first node answering as the real litecoind did.
    let desired = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimProvider::open(
        dir.path(),
        Arc::new(reconciler::clock::SystemClock),
        SimConfig::default(),
    )
    .expect("sim");
    sim.seed(&desired, &Default::default()).expect("seed");
    let observed = fleet_tests::observe(&sim, &desired).await;
    assert!(plan(&desired, &observed, 0).is_empty());
    let node = observed
        .nodes
        .iter()
        .find(|n| n.key.coin.as_str() == "litecoin")
        .expect("a litecoin node")
        .key
        .clone();
    let readings = [(node.clone(), Ok(reading))].into_iter().collect();
    let p = plan(&desired, &observed.with_readings(&readings), 0);
    let cp = p.coin("litecoin").expect("litecoin is planned for");
    let steps: Vec<_> = cp.waves.iter().flat_map(|w| &w.steps).collect();
    assert_eq!(steps.len(), 1, "{steps:#?}");
    assert_eq!(steps[0].node.as_ref(), Some(&node));
    assert_eq!(
        steps[0].reason,
        format!("version is 0.21.4: the daemon reports {reported}; fleet's tag says 0.21.4")
    );
    assert!(matches!(
        &steps[0].action,
        Action::Upgrade { from: Some(f), confirm_first: false, .. } if *f == reported.to_string()
    ));
}
