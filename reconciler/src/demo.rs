//! `fleet demo`: the example fleet, embedded in the binary, seeded into the simulator at
//! older versions and reconciled to the example's versions zone by zone, with health gates,
//! in accelerated time. Needs nothing but the binary.

use crate::apply::{ExecOptions, Executor};
use crate::clock::{Clock, ScaledClock, SystemClock};
use crate::events::Notifier;
use crate::plan::plan;
use crate::provider::sim::{SimConfig, SimProber, SimProvider};
use crate::store::{ApprovalKey, Decision, Journal};
use fleet_repo_schema::values::Version;
use fleet_repo_schema::{Desired, MemTree, load};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The example fleet repository (`examples/fleet/`), as compiled in.
pub const EXAMPLE_FILES: &[(&str, &str)] = &[
    (
        "fleet.yaml",
        include_str!("../../examples/fleet/fleet.yaml"),
    ),
    (
        "coins/bitcoin.yaml",
        include_str!("../../examples/fleet/coins/bitcoin.yaml"),
    ),
    (
        "coins/dogecoin.yaml",
        include_str!("../../examples/fleet/coins/dogecoin.yaml"),
    ),
    (
        "coins/ethereum.yaml",
        include_str!("../../examples/fleet/coins/ethereum.yaml"),
    ),
    (
        "coins/iota.yaml",
        include_str!("../../examples/fleet/coins/iota.yaml"),
    ),
    (
        "coins/litecoin.yaml",
        include_str!("../../examples/fleet/coins/litecoin.yaml"),
    ),
    (
        "coins/monero.yaml",
        include_str!("../../examples/fleet/coins/monero.yaml"),
    ),
    (
        "metrics/bitcoin.sh",
        include_str!("../../examples/fleet/metrics/bitcoin.sh"),
    ),
    (
        "metrics/ethereum.sh",
        include_str!("../../examples/fleet/metrics/ethereum.sh"),
    ),
    (
        "metrics/iota.sh",
        include_str!("../../examples/fleet/metrics/iota.sh"),
    ),
    (
        "metrics/litecoin.sh",
        include_str!("../../examples/fleet/metrics/litecoin.sh"),
    ),
    (
        "metrics/monero.sh",
        include_str!("../../examples/fleet/metrics/monero.sh"),
    ),
];

/// The embedded example as a file tree.
pub fn example_tree() -> MemTree {
    let mut t = MemTree::new();
    for (path, text) in EXAMPLE_FILES {
        t.insert(path, *text);
    }
    t
}

/// The embedded example, loaded (it is checked by the test suite, so this cannot fail in a
/// released binary; the error says which file if it ever does).
pub fn example_desired() -> Result<Desired, String> {
    let loaded = load(&example_tree());
    loaded.desired.ok_or_else(|| {
        let d = &loaded.diagnostics[0];
        format!(
            "the embedded example is invalid: {}:{}:{}: {}",
            d.file, d.span.start.line, d.span.start.col, d.message
        )
    })
}

/// The versions the demo's fleet runs before it is reconciled: one release behind each
/// coin's example version (a major, a minor and patch releases, so every approval rule shows).
pub fn older_versions() -> BTreeMap<String, Version> {
    [
        ("bitcoin", "27.2"),
        ("dogecoin", "1.14.8"),
        ("ethereum", "1.14.11"),
        ("iota", "2.0.1"),
        ("litecoin", "0.21.3"),
        ("monero", "0.18.3.3"),
    ]
    .into_iter()
    .map(|(c, v)| (c.to_string(), Version::parse(v).expect("valid version")))
    .collect()
}

/// A demo world: the simulator seeded with the example at older versions.
#[derive(Debug)]
pub struct DemoWorld {
    /// The desired fleet (the example).
    pub desired: Arc<Desired>,
    /// The simulated fleet.
    pub sim: SimProvider,
    /// The clock it runs on.
    pub clock: Arc<dyn Clock>,
}

impl DemoWorld {
    /// Seed the simulator with the example at [`older_versions`], its clock `speed` times
    /// faster than real time.
    pub fn new(speed: f64) -> Result<DemoWorld, String> {
        let desired = Arc::new(example_desired()?);
        let start = SystemClock.now_ms();
        let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(start, speed));
        let sim = SimProvider::new(Arc::clone(&clock), SimConfig::default());
        sim.seed(&desired, &older_versions())
            .map_err(|e| e.to_string())?;
        Ok(DemoWorld {
            desired,
            sim,
            clock,
        })
    }

    /// An executor on this world, approvals of `plan` recorded as given by `by`.
    pub fn executor(
        &self,
        plan: &crate::plan::Plan,
        by: &str,
        notifier: Arc<dyn Notifier>,
    ) -> Arc<Executor> {
        let journal = Arc::new(Journal::in_memory());
        let opts = ExecOptions {
            parallel_coins: 32,
            poll_ms: 5_000,
            commit: "embedded-example".into(),
        };
        for cp in plan.coins.iter().filter(|c| c.approval.is_some()) {
            let key = ApprovalKey {
                coin: cp.coin.clone(),
                target: cp.approval_target(),
                commit: opts.commit.clone(),
            };
            let _ = journal.decide_once(&key, Decision::Approved, by, self.clock.now_ms());
        }
        Arc::new(Executor {
            provider: Arc::new(self.sim.clone()),
            prober: Arc::new(SimProber(self.sim.clone())),
            journal,
            notifier,
            clock: Arc::clone(&self.clock),
            opts,
        })
    }

    /// Plan against the world as it is now.
    pub async fn plan(&self) -> Result<crate::plan::Plan, String> {
        let prober: Arc<dyn crate::health::Prober> = Arc::new(SimProber(self.sim.clone()));
        let (observed, _) =
            crate::apply::view::observe_and_probe(&self.sim, &prober, &self.desired)
                .await
                .map_err(|e| e.to_string())?;
        Ok(plan(&self.desired, &observed, self.clock.now_ms()))
    }
}
