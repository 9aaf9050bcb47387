//! Node health: what a node says about its chain ([`ChainStatus`]), how it is asked
//! ([`Prober`]: the `bitcoin`, `ethereum` and `http` probes in [`probe`]; the simulator's
//! prober lives with the simulator), and the two judgments made of the answers:
//!
//! - [`rating`]: how each node of a coin is doing right now (in sync, lagging, stuck,
//!   unreachable, down), for the executor's `max_unavailable` budget, its bakes, `/status`
//!   and the metrics.
//! - [`gate`]: the health gate, a pure state machine that turns a series of one node's
//!   readings into "waiting (with rate and ETA)", "in sync" or "failed (why)".
//!
//! **One rule for "in sync"**, [`ChainStatus::caught_up`]: the node answers its probe, is not
//! in initial block download, has validated every block it knows a header of, and is within
//! `max_lag_blocks` of the reference height (the highest height among the coin's nodes that
//! are caught up with their own headers, [`rating::reference_height`]). Both judgments ask
//! it and nothing else decides it. `initial_block_download` alone is not enough: a restarted
//! node whose tip is recent reports `false` while it is still behind, hence the headers and
//! the reference.

pub mod gate;
pub mod probe;
pub mod rating;
pub mod version;

pub use gate::{Gate, GateConfig, GateFailure, Verdict};
pub use rating::{CoinHealth, NodeHealth, NodeInput, rate};
pub use version::DaemonVersion;

use crate::node::NodeKey;
use async_trait::async_trait;
use fleet_repo_schema::desired::HealthSpec;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a node says about its chain, as `getblockchaininfo` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// Blocks validated.
    pub blocks: u64,
    /// Headers known (the best chain the node has heard of).
    pub headers: u64,
    /// Still in initial block download.
    pub initial_block_download: bool,
    /// The version the daemon says it runs, when its probe reads one
    /// ([`version::DaemonVersion`]; None: not read, and then the recorded version stands).
    #[serde(default)]
    pub client: Option<DaemonVersion>,
}

impl ChainStatus {
    /// The one rule for "in sync": not in initial block download, every known header's block
    /// validated, and (when there is a reference) within `max_lag` blocks of it. `Err` says
    /// what is missing, in the order a catching-up node gets there.
    pub fn caught_up(&self, reference: Option<u64>, max_lag: u64) -> Result<(), WaitReason> {
        if self.initial_block_download {
            return Err(WaitReason::InitialBlockDownload);
        }
        if self.blocks < self.headers {
            return Err(WaitReason::BlocksBehindHeaders);
        }
        match reference {
            Some(r) if self.blocks.saturating_add(max_lag) < r => {
                Err(WaitReason::BehindReference { reference: r })
            }
            _ => Ok(()),
        }
    }
}

/// The node a probe asks.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTarget {
    /// The node's slot.
    pub key: NodeKey,
    /// EC2 instance id.
    pub instance_id: String,
    /// `node<N>.<coin>.<domain>`: what a [`probe::Resolver`] turns into an address, unless
    /// `address` is set.
    pub dns_name: String,
    /// The instance's private address, dialled instead of `dns_name` when the name's record
    /// does not point at the instance (a replacement gated before its node's name moves to
    /// it, a missing record): [`crate::apply::view::probe_address`].
    pub address: Option<String>,
    /// The coin's health settings (probe kind, port, http pointers).
    pub health: HealthSpec,
}

/// Why a probe got no reading. Never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeError {
    /// Nothing answered (connection refused, reset, no route, DNS failure).
    #[error("{node}: unreachable at {addr}: {detail}")]
    Unreachable {
        /// Node.
        node: String,
        /// Where it was dialled.
        addr: String,
        /// What the OS said.
        detail: String,
    },
    /// It did not answer within the probe's timeout.
    #[error("{node}: no answer from {addr} within {ms} ms")]
    Timeout {
        /// Node.
        node: String,
        /// Where it was dialled.
        addr: String,
        /// The timeout.
        ms: u64,
    },
    /// It answered with something that is not a usable reading (HTTP error, RPC error,
    /// unexpected JSON, warming up).
    #[error("{node}: {detail}")]
    BadAnswer {
        /// Node.
        node: String,
        /// What was wrong.
        detail: String,
    },
    /// The probe cannot be made (no port, no resolver entry, probe `none`).
    #[error("{node}: cannot probe: {detail}")]
    Config {
        /// Node.
        node: String,
        /// What is missing.
        detail: String,
    },
}

/// Asks a node for its [`ChainStatus`].
#[async_trait]
pub trait Prober: Send + Sync {
    /// One reading of `target`, per `target.health.probe`.
    async fn probe(&self, target: &ProbeTarget) -> Result<ChainStatus, ProbeError>;
}

/// Why a node is not (yet) in sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WaitReason {
    /// The probe got no reading.
    Unreachable {
        /// The probe's error.
        error: ProbeError,
    },
    /// The node says it is in initial block download.
    InitialBlockDownload,
    /// It has validated fewer blocks than it knows headers for.
    BlocksBehindHeaders,
    /// It is more than `max_lag_blocks` behind the reference.
    BehindReference {
        /// Highest height of the coin's other healthy nodes.
        reference: u64,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Unreachable { error } => write!(f, "not answering ({error})"),
            WaitReason::InitialBlockDownload => f.write_str("in initial block download"),
            WaitReason::BlocksBehindHeaders => f.write_str("validating blocks up to its headers"),
            WaitReason::BehindReference { reference } => {
                write!(f, "behind the coin's other nodes (at {reference})")
            }
        }
    }
}

/// Probe every target, at most `parallel` at once; the readings by node.
pub async fn probe_all(
    prober: &std::sync::Arc<dyn Prober>,
    targets: Vec<ProbeTarget>,
    parallel: usize,
) -> std::collections::BTreeMap<NodeKey, Result<ChainStatus, ProbeError>> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for t in targets {
        let (prober, sem) = (std::sync::Arc::clone(prober), std::sync::Arc::clone(&sem));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = prober.probe(&t).await;
            (t.key, r)
        });
    }
    let mut readings = std::collections::BTreeMap::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((key, r)) => {
                readings.insert(key, r);
            }
            // A probe task that panicked is a bug; the node is left without a reading,
            // which counts it as down.
            Err(e) => tracing::error!(error = %e, "a probe task ended abnormally"),
        }
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(blocks: u64, headers: u64, ibd: bool) -> ChainStatus {
        ChainStatus {
            blocks,
            headers,
            initial_block_download: ibd,
            client: None,
        }
    }

    #[test]
    fn caught_up_is_ibd_then_headers_then_the_reference() {
        assert_eq!(
            st(10, 100, true).caught_up(Some(100), 2),
            Err(WaitReason::InitialBlockDownload)
        );
        assert_eq!(
            st(60, 100, false).caught_up(Some(100), 2),
            Err(WaitReason::BlocksBehindHeaders)
        );
        assert_eq!(
            st(90, 90, false).caught_up(Some(100), 2),
            Err(WaitReason::BehindReference { reference: 100 })
        );
        // Exactly max_lag behind is in sync; one more is not.
        assert_eq!(st(98, 98, false).caught_up(Some(100), 2), Ok(()));
        assert!(st(97, 97, false).caught_up(Some(100), 2).is_err());
        // No reference: its own headers are the only target.
        assert_eq!(st(5, 5, false).caught_up(None, 0), Ok(()));
        // Ahead of the reference is fine.
        assert_eq!(st(105, 105, false).caught_up(Some(100), 0), Ok(()));
    }
}
