//! One observation of the fleet, shared by every coin of an apply.
//!
//! Coins waiting on their budget, a probe-`none` start or a gate all need to know which
//! instances exist and whether they run. Observing the whole fleet for each of them at each
//! poll would cost N full observations per poll (on AWS, 25 waiting coins at a 5 s poll is
//! 25 × 8 calls every 5 s: throttling in exactly the large rollout that needs the API most).
//! Instead a coin asks the view, which observes at most once per `max_age` for all of them.
//!
//! What keeps that safe: a coin's own steps change what is true of its nodes, so each step
//! marks its coin changed ([`FleetView::changed`]) and that coin's next question observes
//! again; an observation taken while a step ran does not count for the step's coin. What
//! others do to a coin's nodes is seen within `max_age`, and is caught sooner by the probes,
//! which ask the nodes themselves on every poll.

use crate::clock::{Clock, Millis};
use crate::events::Failure;
use crate::health::rating::StallWatch;
use crate::health::{
    ChainStatus, CoinHealth, NodeInput, ProbeError, ProbeTarget, Prober, probe_all, rate,
};
use crate::node::NodeKey;
use crate::plan::{Observed, ObservedNode};
use crate::provider::{Provider, ProviderError, Scope};
use fleet_repo_schema::values::CoinName;
use fleet_repo_schema::{Coin, Desired, Probe};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Observe the fleet of `desired` once and sort it into its slots: what every caller that
/// needs "which node is in this slot" does (the executor through [`FleetView`], the daemon's
/// pass, `fleet plan`).
pub async fn observe(
    provider: &dyn Provider,
    desired: &Desired,
) -> Result<Observed, ProviderError> {
    let observation = provider.observe(&Scope::of_desired(desired)).await?;
    Ok(Observed::assign(desired, observation))
}

/// Probes in flight at once across the fleet.
pub const PROBES_AT_ONCE: usize = 32;

/// One reading per probed node.
pub type Readings = BTreeMap<NodeKey, Result<ChainStatus, ProbeError>>;

/// Where a probe of `node` dials, the one rule: its slot's name `dns_name` when that record
/// points at it (observed), else its private address (None: the name). A node whose record
/// is missing or points elsewhere (a replacement before its hand-over, a record deleted by
/// hand) is still asked itself, never whatever the name reaches.
pub fn probe_address(dns_name: &str, node: &ObservedNode) -> Option<String> {
    if node.dns_names.iter().any(|d| d == dns_name) {
        None
    } else {
        node.private_ip.clone()
    }
}

/// What to probe: every running node of `observed` whose coin has a probe.
pub fn probe_targets(desired: &Desired, observed: &Observed) -> Vec<ProbeTarget> {
    let mut targets = Vec::new();
    for coin in desired.coins.values() {
        if coin.health.probe == Probe::None {
            continue;
        }
        for n in observed.nodes_of(&coin.name).iter().filter(|n| n.running()) {
            let dns_name = coin
                .nodes
                .iter()
                .find(|s| NodeKey::of(s) == n.key)
                .map(|s| s.dns_name.clone())
                .unwrap_or_default();
            targets.push(ProbeTarget {
                key: n.key.clone(),
                instance_id: n.instance_id.clone(),
                address: probe_address(&dns_name, n),
                dns_name,
                health: coin.health.clone(),
            });
        }
    }
    targets
}

/// Observe the fleet, then ask every running node how it is and what it runs: what a plan
/// is made from (`fleet plan`, `fleet apply`, each pass of `fleet run`), so that a version
/// changed by hand is seen ([`Observed::with_readings`]). The readings are returned for the
/// node watch, which rates the same answers.
pub async fn observe_and_probe(
    provider: &dyn Provider,
    prober: &Arc<dyn Prober>,
    desired: &Desired,
) -> Result<(Observed, Readings), ProviderError> {
    let observed = observe(provider, desired).await?;
    Ok(ask_daemons(prober, desired, observed).await)
}

/// `observed` with one probe of every running node ([`probe_targets`]): what its daemon
/// says it runs, and the readings.
pub async fn ask_daemons(
    prober: &Arc<dyn Prober>,
    desired: &Desired,
    observed: Observed,
) -> (Observed, Readings) {
    let readings = probe_all(prober, probe_targets(desired, &observed), PROBES_AT_ONCE).await;
    (observed.with_readings(&readings), readings)
}

/// Rate a coin's observed `nodes` with their `readings` (the nodes not probed have none),
/// by the coin's health settings: the executor's and the node watch's one way of asking
/// [`rate`].
pub fn rate_observed(
    coin: &Coin,
    nodes: &[ObservedNode],
    readings: &BTreeMap<NodeKey, Result<ChainStatus, ProbeError>>,
    stall: Option<StallWatch<'_>>,
) -> CoinHealth {
    rate(
        coin.health.probe,
        coin.health.max_lag_blocks,
        nodes.iter().map(|n| NodeInput {
            key: &n.key,
            running: n.running(),
            step_pending: n.pending.is_some(),
            reading: readings.get(&n.key),
        }),
        stall,
    )
}

/// The last observation, when it was taken, and each coin's change count at that moment.
#[derive(Debug)]
struct Taken {
    at_ms: Millis,
    changes: BTreeMap<CoinName, u64>,
    observed: Arc<Observed>,
}

/// The fleet as last observed, shared by the coins of one apply.
pub struct FleetView {
    provider: Arc<dyn Provider>,
    desired: Arc<Desired>,
    clock: Arc<dyn Clock>,
    max_age_ms: u64,
    /// Steps run per coin (the lock is held only to read or bump a count).
    changes: std::sync::Mutex<BTreeMap<CoinName, u64>>,
    /// Held across an observation, so concurrent askers wait for one instead of each
    /// starting their own.
    last: tokio::sync::Mutex<Option<Taken>>,
    /// Observations made, for tests and figures.
    observations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FleetView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetView")
            .field("max_age_ms", &self.max_age_ms)
            .finish_non_exhaustive()
    }
}

impl FleetView {
    /// A view of `desired`'s fleet through `provider`, re-observed when older than
    /// `max_age_ms` of `clock`'s time.
    pub fn new(
        provider: Arc<dyn Provider>,
        desired: Arc<Desired>,
        clock: Arc<dyn Clock>,
        max_age_ms: u64,
    ) -> FleetView {
        FleetView {
            provider,
            desired,
            clock,
            max_age_ms,
            changes: std::sync::Mutex::new(BTreeMap::new()),
            last: tokio::sync::Mutex::new(None),
            observations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn changes_of(&self, coin: &CoinName) -> u64 {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(coin)
            .copied()
            .unwrap_or(0)
    }

    /// A step of `coin` changed (or may have changed) the world: its next question observes.
    pub fn changed(&self, coin: &CoinName) {
        *self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(coin.clone())
            .or_default() += 1;
    }

    /// The fleet, as observed after `coin`'s last step and at most `max_age` ago.
    pub async fn for_coin(&self, coin: &CoinName) -> Result<Arc<Observed>, Failure> {
        let mut last = self.last.lock().await;
        let now = self.clock.now_ms();
        let mine = self.changes_of(coin);
        if let Some(t) = last.as_ref()
            && now.saturating_sub(t.at_ms) < self.max_age_ms
            && t.changes.get(coin).copied().unwrap_or(0) == mine
        {
            return Ok(Arc::clone(&t.observed));
        }
        // The counts as they were before observing: a step that finishes meanwhile makes its
        // coin observe again.
        let changes = self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let observed = observe(self.provider.as_ref(), &self.desired)
            .await
            .map_err(|error| Failure::Observe { error })?;
        self.observations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let observed = Arc::new(observed);
        *last = Some(Taken {
            at_ms: now,
            changes,
            observed: Arc::clone(&observed),
        });
        Ok(observed)
    }

    /// Observations made so far.
    pub fn observations(&self) -> u64 {
        self.observations.load(std::sync::atomic::Ordering::Relaxed)
    }
}
