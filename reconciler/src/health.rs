//! Health of a node as its chain reports it. The probes (bitcoin JSON-RPC, ethereum, http)
//! and the gate arrive with issue 4; the simulator already reports the same figures.

use serde::{Deserialize, Serialize};

/// What a node says about its chain, as `getblockchaininfo` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// Blocks validated.
    pub blocks: u64,
    /// Headers known (the best chain the node has heard of).
    pub headers: u64,
    /// Still in initial block download.
    pub initial_block_download: bool,
}
