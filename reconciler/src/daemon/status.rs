//! What `GET /status` returns: the repository, the revision in force, the loop, and per coin
//! its state, its rollout's progress and its nodes with their health. Plain data with typed
//! states; it is filled by the node watch ([`super::watch`]) after each observation and by the
//! executor's events ([`super::report`]) during a rollout.

use crate::clock::Millis;
use crate::events::{Failure, LocatedError};
use crate::health::NodeHealth;
use crate::plan::Refusal;
use serde::Serialize;
use std::collections::BTreeMap;

/// Where the repository is fetched from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    /// `git` or `directory`.
    pub kind: String,
    /// URL or path (credentials removed).
    pub url: String,
    /// Branch asked for (None: the remote's default).
    pub branch: Option<String>,
    /// Head found by the last successful fetch.
    pub head: Option<String>,
    /// When the last fetch ended.
    pub last_fetch_ms: Option<Millis>,
    /// The last fetch's error, if it failed.
    pub last_fetch_error: Option<String>,
}

/// The last invalid revision.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationFailure {
    /// The revision that failed.
    pub commit: String,
    /// When it was seen.
    pub at_ms: Millis,
    /// Its errors.
    pub errors: Vec<LocatedError>,
}

/// A node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// `<coin>/<zone>/<index>`.
    pub node: String,
    /// Instance.
    pub instance_id: String,
    /// EC2 state.
    pub state: String,
    /// Version running: what the daemon reports when its probe read it, else what the tag
    /// records (`version_from` says which), if known.
    pub version: Option<String>,
    /// Where `version` comes from.
    pub version_from: VersionFrom,
    /// What fleet's tag (`fleet:version`) records, if known.
    pub recorded_version: Option<String>,
    /// Blocks, from the last reading.
    pub height: Option<u64>,
    /// Headers, from the last reading.
    pub headers: Option<u64>,
    /// In sync at the last reading (the one rule, [`NodeHealth::is_up`]).
    pub in_sync: Option<bool>,
    /// Its health at the last reading.
    pub health: Option<NodeHealth>,
    /// The gate's last word during a rollout.
    pub gate: Option<String>,
    /// Its data volume's use, percent, as the CloudWatch agent last reported it.
    pub disk_used_percent: Option<f64>,
    /// Days until its data volume is full at the last day's rate (None: not growing, or
    /// not measured yet).
    pub disk_days_left: Option<f64>,
}

/// A grow of a coin's data volumes the node watch asked for.
#[derive(Debug, Clone, Serialize)]
pub struct DiskGrowStatus {
    /// The figures and the size asked for.
    pub order: crate::care::disk::GrowOrder,
    /// fleet grew the volumes itself (`disk.auto_grow`).
    pub grown: bool,
    /// The pull request.
    pub proposal: crate::care::disk::Proposal,
    /// When.
    pub at_ms: Millis,
}

/// Where a node's version on `/status` comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionFrom {
    /// The daemon said it (getnetworkinfo, web3_clientVersion, the http version pointer).
    Daemon,
    /// The probe could not read it: fleet's tag stands.
    #[default]
    Tag,
}

/// A zone of a coin.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ZoneStatus {
    /// Nodes.
    pub nodes: Vec<NodeStatus>,
    /// In line with the revision in force: nothing planned and every node in sync, or passed
    /// its gate and bake in the rollout under way.
    pub passed: bool,
}

/// What a coin is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoinState {
    /// Its nodes are as the revision in force says.
    #[default]
    InSync,
    /// The plan has steps for it, not started yet.
    Drift,
    /// A rollout is under way.
    RollingOut,
    /// Its rollout waits for a person.
    AwaitingApproval,
    /// Its rollout stopped on a failure in this pass.
    Failed,
    /// Its rollout failed for the revision in force: held until the next revision.
    Held,
    /// The plan refuses something for it.
    Refused,
    /// The plan has no step for it but could not judge every node (one is booting).
    NotJudged,
}

/// A coin.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoinStatus {
    /// The coin's deadline as the node watch last saw it (version, due date, nodes below).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<crate::care::DeadlineWatch>,
    /// The coin's last grow of its data volumes asked by the node watch, if any: the
    /// figures, the size and the pull request.
    pub disk: Option<DiskGrowStatus>,
    /// Version the revision in force asks for.
    pub desired_version: String,
    /// What it is doing.
    pub state: CoinState,
    /// Steps of the current or last rollout.
    pub steps_total: usize,
    /// Of which done.
    pub steps_done: usize,
    /// Zone being rolled out.
    pub current_zone: Option<String>,
    /// Why it failed, is held, waits or is refused, in words.
    pub reason: Option<String>,
    /// The failure, as data, when it failed or is held.
    pub failure: Option<Failure>,
    /// The rollback that followed the failure (`rollout.on_failure: rollback`), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::events::Rollback>,
    /// The refusals, when refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Refusal>,
    /// Per zone, in rollout order.
    pub zones: BTreeMap<String, ZoneStatus>,
}

/// The reconcile loop.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassStatus {
    /// Passes started.
    pub number: u64,
    /// A pass is running.
    pub running: bool,
    /// When the current or last pass started.
    pub started_ms: Option<Millis>,
    /// When the last pass ended.
    pub finished_ms: Option<Millis>,
    /// How the last pass ended.
    pub last_result: Option<super::reconcile::PassLabel>,
    /// The last pass's error.
    pub last_error: Option<String>,
    /// Steps in the last plan.
    pub last_plan_steps: usize,
}

/// Everything /status returns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The repository.
    pub source: SourceStatus,
    /// Revision in force (the last good one), if any yet.
    pub commit: Option<String>,
    /// Its summary.
    pub commit_summary: Option<String>,
    /// The newest revision seen failed validation (None once a good one follows).
    pub validation_error: Option<ValidationFailure>,
    /// The loop.
    pub pass: PassStatus,
    /// Provider: `aws` or `sim`.
    pub provider: String,
    /// Whether the fleet is simulated (provider `sim`): nothing on this page is in AWS.
    pub simulated: bool,
    /// Per coin.
    pub coins: BTreeMap<String, CoinStatus>,
    /// The node watch's open incidents, oldest first.
    pub incidents: Vec<crate::care::incident::Incident>,
    /// When the node watch last watched the fleet.
    pub watched_ms: Option<Millis>,
    /// The release watch's last cycle, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_watch: Option<serde_json::Value>,
}
