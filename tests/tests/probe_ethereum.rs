//! The `ethereum` probe and the gate against a real Ethereum JSON-RPC node: Foundry's `anvil`
//! from npm, on loopback, mining on demand.
//!
//! Needs `FLEET_TEST_ANVIL` (set by `tests/run`).

use fleet_repo_schema::Probe;
use fleet_tests::nodes::{Anvil, now_ms, probe_target};
use reconciler::health::probe::{RpcCredentials, RpcProber, StaticResolver};
use reconciler::health::{ChainStatus, Gate, GateConfig, ProbeError, Prober, Verdict, WaitReason};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn ethereum_probe_reads_anvil_and_the_gate_judges_it() {
    let mut anvil = Anvil::start().await;
    let mut r = StaticResolver::new();
    r.insert("node1.ethereum.fleet.test", anvil.addr());
    let p = RpcProber::new(Arc::new(r), RpcCredentials::new(), Duration::from_secs(5));
    let t = probe_target("ethereum", 1, Probe::Ethereum, Some(8545), None);

    // The client's own version, as `web3_clientVersion` says it (anvil/v1.7.1): what the
    // binary says it is.
    let anvil_version =
        fleet_tests::nodes::version_of(&fleet_tests::nodes::anvil_bin(), "--version");
    // A fresh anvil is at genesis.
    assert_eq!(
        p.probe(&t).await,
        Ok(ChainStatus {
            blocks: 0,
            headers: 0,
            initial_block_download: false,
            client: Some(anvil_version),
        })
    );

    anvil.mine(300).await;
    let rpc = anvil.rpc();
    assert_eq!(rpc.call("eth_syncing", json!([])).await, Ok(json!(false)));
    assert_eq!(
        rpc.call("eth_blockNumber", json!([])).await,
        Ok(json!("0x12c"))
    );
    let reading = p.probe(&t).await;
    assert_eq!(
        reading,
        Ok(ChainStatus {
            blocks: 300,
            headers: 300,
            initial_block_download: false,
            client: Some(anvil_version),
        })
    );

    let cfg = GateConfig {
        max_lag_blocks: 3,
        stall_timeout_ms: 60_000,
        sync_timeout_ms: 600_000,
        full_sync: false,
    };
    let now = now_ms();
    // At the reference, and within max_lag of it: in sync.
    assert_eq!(
        Gate::new(cfg, now).observe(now, &reading, Some(300)),
        Verdict::InSync { height: 300 }
    );
    assert_eq!(
        Gate::new(cfg, now).observe(now, &reading, Some(303)),
        Verdict::InSync { height: 300 }
    );
    // More than max_lag behind the reference: held.
    let v = Gate::new(cfg, now).observe(now, &reading, Some(304));
    assert!(
        matches!(
            v,
            Verdict::Waiting {
                reason: WaitReason::BehindReference { reference: 304 },
                height: Some(300),
                target: Some(304),
                ..
            }
        ),
        "{v:?}"
    );

    // It follows the chain.
    anvil.mine(0x1f).await;
    assert_eq!(p.probe(&t).await.map(|s| s.blocks), Ok(331));

    // A stopped node is unreachable, quickly (not a timeout).
    anvil.stop();
    let e = p.probe(&t).await.unwrap_err();
    assert!(matches!(e, ProbeError::Unreachable { .. }), "{e}");
    eprintln!("stopped anvil: {e}");
}
