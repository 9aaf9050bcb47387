//! The desired fleet: every coin with its settings resolved (defaults applied, image
//! repository filled in) and the list of node slots the coin should have.

use crate::files::{Approval, OnFailure, Probe};
use crate::values::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Largest `custom_metrics` script, in bytes: scripts travel in the node's user data, which
/// EC2 caps at 16 KiB.
pub const MAX_METRICS_SCRIPT: usize = 4096;

/// Built-in defaults, used where neither the coin nor fleet.yaml's `defaults` set a value.
pub mod builtin {
    /// `rollout.max_unavailable`.
    pub const MAX_UNAVAILABLE: u32 = 1;
    /// `rollout.bake`, seconds.
    pub const BAKE_SECS: u64 = 600;
    /// `rollout.approval`.
    pub const APPROVAL: super::Approval = super::Approval::Major;
    /// `health.max_lag_blocks`.
    pub const MAX_LAG_BLOCKS: u64 = 3;
    /// `health.stall_timeout`, seconds.
    pub const STALL_TIMEOUT_SECS: u64 = 1800;
    /// `health.sync_timeout`, seconds.
    pub const SYNC_TIMEOUT_SECS: u64 = 43_200;
    /// `instance.root_volume_gb`.
    pub const ROOT_VOLUME_GB: u32 = 16;
    /// `health.watch_interval`, seconds.
    pub const WATCH_INTERVAL_SECS: u64 = 60;
    /// `health.alert_after`, seconds.
    pub const ALERT_AFTER_SECS: u64 = 300;
    /// `health.min_synced`.
    pub const MIN_SYNCED: u32 = 1;
    /// `snapshots.keep`.
    pub const SNAPSHOTS_KEEP: u32 = 7;
    /// `heal.restart_after`, seconds.
    pub const HEAL_RESTART_AFTER_SECS: u64 = 1800;
    /// `heal.max_per_day`.
    pub const HEAL_MAX_PER_DAY: u32 = 3;
    /// `heal.replace_after`, seconds.
    pub const HEAL_REPLACE_AFTER_SECS: u64 = 3600;
    /// The shortest `heal.replace_after`, seconds: EC2 marks checks impaired after a few
    /// minutes, and a brief host event clears itself.
    pub const HEAL_REPLACE_AFTER_MIN_SECS: u64 = 600;
    /// `disk.grow_at`, percent.
    pub const DISK_GROW_AT: u32 = 85;
    /// `disk.min_days_left`.
    pub const DISK_MIN_DAYS_LEFT: u32 = 30;
    /// `disk.grow_by`, percent.
    pub const DISK_GROW_BY: u32 = 25;
    /// `limits.max_retire_percent`.
    pub const MAX_RETIRE_PERCENT: u32 = 50;
}

/// The whole desired state of a fleet repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Desired {
    /// Fleet-wide settings.
    pub fleet: Fleet,
    /// Coins by name.
    pub coins: BTreeMap<String, Coin>,
}

impl Desired {
    /// Every node slot of every coin, coins in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeSlot> {
        self.coins.values().flat_map(|c| c.nodes.iter())
    }
}

/// fleet.yaml, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    /// AWS region.
    pub region: Region,
    /// DNS domain of the nodes.
    pub internal_domain: DomainName,
    /// Route53 hosted zone of `internal_domain`.
    pub hosted_zone_id: HostedZoneId,
    /// VPC.
    pub vpc_id: VpcId,
    /// Subnet of each zone.
    pub subnets: BTreeMap<Zone, SubnetId>,
    /// Security groups of every node (besides its coin's own).
    pub security_groups: Vec<SecurityGroupId>,
    /// Networks each coin's group lets RPC in from.
    pub rpc_from: Vec<Cidr>,
    /// Node AMI.
    pub node_ami: AmiId,
    /// Node instance profile.
    pub instance_profile: InstanceProfile,
    /// Image registry prefix.
    pub image_registry: ImageRepo,
    /// Slack channel, if any.
    pub slack_channel: Option<SlackChannel>,
    /// Who may approve rollouts.
    pub approvers: Vec<SlackUserId>,
    /// Coins this revision retires on purpose (beyond the planner's limits).
    pub retire: Vec<CoinName>,
    /// A coin losing more than this share of its nodes is refused unless listed in `retire`.
    pub max_retire_percent: u32,
}

/// One coin, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coin {
    /// Name.
    pub name: CoinName,
    /// The file it came from, e.g. `coins/bitcoin.yaml`.
    pub file: String,
    /// Daemon version.
    pub version: Version,
    /// Image repository (resolved) and optional digest pin.
    pub image: ImageRef,
    /// Release source, if watched.
    pub upstream: Option<UpstreamSpec>,
    /// EC2 instance type.
    pub instance_type: InstanceType,
    /// Root volume, GiB.
    pub root_volume_gb: u32,
    /// Data volume, GiB.
    pub data_volume_gb: u32,
    /// Zones in rollout order.
    pub zones: Vec<Zone>,
    /// Nodes per zone.
    pub nodes_per_zone: u32,
    /// RPC ports (internal).
    pub rpc_ports: Vec<u16>,
    /// P2P ports (public).
    pub p2p_ports: Vec<u16>,
    /// Health gate.
    pub health: HealthSpec,
    /// Rollout policy.
    pub rollout: RolloutSpec,
    /// Snapshot behaviour.
    pub snapshots: SnapshotSpec,
    /// What `fleet run` may do on its own for a stuck or crashed node (None: `heal: off`).
    pub heal: Option<HealSpec>,
    /// When the data volume grows before it fills.
    pub disk: DiskSpec,
    /// A version required by a height or a date, if any.
    pub deadline: Option<DeadlineSpec>,
    /// Secrets Manager secret, if any.
    pub secrets: Option<SecretName>,
    /// Host environment (/etc/sysconfig/node), without the keys fleet writes itself.
    pub host_config: BTreeMap<EnvName, EnvValue>,
    /// Container environment (/etc/opt/node-config).
    pub container_config: BTreeMap<EnvName, EnvValue>,
    /// Metric name to script path in the repository.
    pub custom_metrics: BTreeMap<MetricName, RepoPath>,
    /// The container's log driver and options (the coin's, else fleet.yaml's), if set.
    pub logging: Option<LoggingSpec>,
    /// Metric name to the script's content, read from the repository at load (at most
    /// [`MAX_METRICS_SCRIPT`] bytes of UTF-8 each): what a node installs.
    #[serde(skip)]
    pub metric_scripts: BTreeMap<MetricName, String>,
    /// Extra AWS tags.
    pub tags: BTreeMap<TagKey, TagValue>,
    /// The node slots, zone by zone in rollout order.
    pub nodes: Vec<NodeSlot>,
}

/// A container's Docker log driver and its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggingSpec {
    /// `--log-driver`.
    pub driver: LogDriver,
    /// `--log-opt name=value`, each.
    pub options: BTreeMap<LogOptName, EnvValue>,
}

/// Image repository and pin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageRef {
    /// Repository without tag.
    pub repository: ImageRepo,
    /// Digest pin of the version's tag.
    pub digest: Option<Digest>,
}

/// Release-watch settings with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamSpec {
    /// owner/name.
    pub github: GithubRepo,
    /// Tag pattern (the default one when the coin sets none).
    pub tag_pattern: TagPattern,
    /// Whether prereleases are proposed.
    pub prereleases: bool,
    /// Minimum age of a release before it is proposed.
    pub min_release_age: Duration,
}

/// Health gate settings with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSpec {
    /// Probe type.
    pub probe: Probe,
    /// Port probed (None only with probe `none` and no rpc port).
    pub rpc_port: Option<u16>,
    /// Allowed lag behind the reference height.
    pub max_lag_blocks: u64,
    /// Height not advancing this long fails the gate.
    pub stall_timeout: Duration,
    /// Not in sync this long after restart fails the gate.
    pub sync_timeout: Duration,
    /// How long a sync from genesis takes, as the coin file estimates it (plan only).
    pub full_sync_estimate: Option<Duration>,
    /// http probe settings.
    pub http: Option<HttpSpec>,
    /// Whether the version the daemon reports is compared with the recorded one.
    pub daemon_version: bool,
    /// How often `fleet run` probes the nodes between rollouts.
    pub watch_interval: Duration,
    /// Out of sync this long opens an incident.
    pub alert_after: Duration,
    /// Nodes that must be in sync; fewer opens an incident.
    pub min_synced: u32,
}

/// A version every node must run by a height or a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadlineSpec {
    /// The version required (or a later one).
    pub version: Version,
    /// By when.
    pub by: DeadlineBy,
}

/// When a deadline falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadlineBy {
    /// At this block height.
    Height(u64),
    /// At midnight UTC of a day, unix ms.
    Date(u64),
}

/// Disk thresholds with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskSpec {
    /// Grow at this use, percent.
    pub grow_at: u32,
    /// Grow when fewer days than this are left at the growth rate.
    pub min_days_left: u32,
    /// Grow by at least this share of the size, percent.
    pub grow_by: u32,
    /// Grow at once (and record it with a pull request), rather than only propose it.
    pub auto_grow: bool,
}

/// Healing with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealSpec {
    /// A node stuck, or running without answering, this long has its daemon restarted.
    pub restart_after: Duration,
    /// At most this many heals of the coin's nodes in any 24 hours.
    pub max_per_day: u32,
    /// A node whose instance fails EC2's status checks this long is replaced (None: `off`).
    pub replace_after: Option<Duration>,
}

/// http probe settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpSpec {
    /// Request path.
    pub path: HttpPath,
    /// Pointer to the height.
    pub height_pointer: JsonPointer,
    /// Pointer to the best known height.
    pub target_pointer: Option<JsonPointer>,
    /// Pointer to the client's version string.
    pub version_pointer: Option<JsonPointer>,
}

/// Rollout policy with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutSpec {
    /// Nodes that may be down at once.
    pub max_unavailable: u32,
    /// How long a zone must stay healthy before the next starts.
    pub bake: Duration,
    /// Which changes need approval.
    pub approval: Approval,
    /// What a failed gate after an upgrade leads to.
    pub on_failure: OnFailure,
}

/// Snapshot behaviour with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotSpec {
    /// Snapshot before a version change.
    pub before_upgrade: bool,
    /// Restore new nodes from the latest snapshot.
    pub restore_new_nodes: bool,
    /// Snapshot an in-sync node when the newest snapshot is older than this (None: never).
    pub every: Option<Duration>,
    /// Scheduled snapshots kept.
    pub keep: u32,
    /// The plan warns when the newest snapshot is older than this.
    pub max_age: Option<Duration>,
    /// Scheduled snapshots are taken with the daemon stopped (a consistent copy).
    pub stop_daemon: bool,
}

/// One node a coin should have: (coin, zone, index) and its DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NodeSlot {
    /// Coin.
    pub coin: CoinName,
    /// Availability zone.
    pub zone: Zone,
    /// 1..=nodes_per_zone within the zone.
    pub index: u32,
    /// N of `node<N>`: counts from 1 across the coin's zones in placement order.
    pub ordinal: u32,
    /// `node<N>.<coin>.<internal_domain>`.
    pub dns_name: String,
}

/// The node slots of `coin` placed in `zones`, `per_zone` each.
pub fn node_slots(
    coin: &CoinName,
    zones: &[Zone],
    per_zone: u32,
    domain: &DomainName,
) -> Vec<NodeSlot> {
    let mut out = Vec::with_capacity(zones.len() * per_zone as usize);
    let mut ordinal = 0;
    for zone in zones {
        for index in 1..=per_zone {
            ordinal += 1;
            out.push(NodeSlot {
                coin: coin.clone(),
                zone: zone.clone(),
                index,
                ordinal,
                dns_name: format!("node{ordinal}.{coin}.{domain}"),
            });
        }
    }
    out
}
