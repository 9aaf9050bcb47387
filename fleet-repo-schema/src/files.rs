//! The two file kinds of a fleet repository, as written (before defaults are applied).
//!
//! The doc comments here are the field documentation: they become the JSON Schema's
//! descriptions (shown by editors on hover) and the "add `x:` (…)" hints of errors.

use crate::decode::{Checked, Entries, NonEmpty, Spanned};
use crate::values::*;
use crate::{yaml_enum, yaml_struct};

yaml_enum! {
    /// Which version changes need a Slack approval before they roll out.
    pub enum Approval {
        /// Never.
        None = "none",
        /// When the major version changes (1.x to 2.x; 0.20 to 0.21 counts as major below 1.0).
        Major = "major",
        /// When the major or minor version changes.
        Minor = "minor",
        /// Every change.
        Always = "always",
    }
}

impl Approval {
    /// Whether a version change of `class` needs an approval under this policy. An unknown
    /// class (a version that is not number-led) counts as major.
    pub fn requires(self, class: crate::semver::Class) -> bool {
        use crate::semver::Class;
        match self {
            Approval::None => false,
            Approval::Major => matches!(class, Class::Major | Class::Unknown),
            Approval::Minor => matches!(class, Class::Major | Class::Minor | Class::Unknown),
            Approval::Always => class != Class::None,
        }
    }
}

yaml_enum! {
    /// What a rollout does when a node fails its gate after its upgrade.
    pub enum OnFailure {
        /// Stop the coin's rollout and leave every node as it is for a person (the default).
        Hold = "hold",
        /// Stop the coin's rollout and restart each node that failed its gate after an upgrade at the version it ran before (from the plan, journaled), gated like any step; the coin is then held as with `hold`.
        Rollback = "rollback",
        /// As `rollback`, and each such node's data volume is first replaced by one made from its before-upgrade snapshot (for a version that changed the database on its first start, which the version before cannot read). Needs `snapshots.before_upgrade`.
        Restore = "restore",
    }
}

yaml_enum! {
    /// How a node's health and sync state is read.
    pub enum Probe {
        /// Bitcoin Core style JSON-RPC `getblockchaininfo` (bitcoind, litecoind, dogecoind…).
        Bitcoin = "bitcoin",
        /// Ethereum JSON-RPC `eth_syncing` and `eth_blockNumber` (geth, erigon, nethermind…).
        Ethereum = "ethereum",
        /// An HTTP GET whose JSON response holds the height at `health.http.height_pointer`.
        Http = "http",
        /// No probe: the gate only waits for `bake`. Use only for nodes without any RPC.
        None = "none",
    }
}

yaml_struct! {
    /// Rollout policy: how many nodes may be down, how long a zone bakes, which changes need approval.
    pub struct RolloutSettings {
        /// Nodes of this coin that may be down at once, fleet-wide (at least 1).
        opt max_unavailable: Spanned<MaxUnavailable>,
        /// How long a zone must stay healthy before the next zone starts, e.g. 10m.
        opt bake: Duration,
        /// Which version changes need a Slack approval: none, major, minor or always.
        opt approval: Spanned<Approval>,
        /// When a node fails its gate after an upgrade: hold (default: stop and leave it), rollback (restart it at its previous version, gated) or restore (the same on its before-upgrade snapshot).
        opt on_failure: Spanned<OnFailure>,
    }
}

yaml_struct! {
    /// Fleet-wide health gate defaults.
    pub struct HealthDefaults {
        /// Blocks a node may trail the reference height (the highest of the coin's other healthy nodes).
        opt max_lag_blocks: LagBlocks,
        /// A node whose height does not advance for this long fails its gate, e.g. 30m (at least 1m).
        opt stall_timeout: Spanned<Duration>,
        /// A node not in sync this long after its restart fails its gate, e.g. 12h (at least 1m).
        opt sync_timeout: Spanned<Duration>,
        /// How often `fleet run` probes every node between rollouts, e.g. 1m (at least 10s).
        opt watch_interval: Spanned<Duration>,
        /// A node out of sync (lagging, unreachable, down) this long opens an incident, e.g. 5m.
        opt alert_after: Duration,
    }
}

yaml_struct! {
    /// Healing: what `fleet run` may do on its own for a node that is stuck or has crashed.
    pub struct Heal {
        /// Restart the daemon (over SSM) of a node stuck, or running but not answering, this long, e.g. 30m (at least 1m).
        opt restart_after: Spanned<Duration>,
        /// At most this many heals of the coin's nodes in any 24 hours (at least 1); beyond, nodes are left for a person.
        opt max_per_day: HealsPerDay,
        /// Replace the instance of a node failing EC2's status checks this long by a new one that takes over its data volume, e.g. 1h (at least 10m), or `off`.
        opt replace_after: OrOff<Spanned<Duration>>,
    }
}

yaml_struct! {
    /// Disk: when `fleet run` grows a coin's data volume before it fills (the CloudWatch agent's `disk_used_percent` of each node's /node-data).
    pub struct Disk {
        /// Grow when a node's data volume is this full, in percent (50 to 99; default 85).
        opt grow_at: GrowAt,
        /// Grow when a node's data volume will be full within this many days at its growth rate over the last day (default 30).
        opt min_days_left: DaysLeft,
        /// A grown volume gains at least this share of its size, in percent (5 to 100; default 25); more when the rate asks for it.
        opt grow_by: GrowBy,
        /// Grow the volumes at once and open the pull request to record it (default false: only the pull request, which the rollout then applies).
        opt auto_grow: bool,
    }
}

yaml_struct! {
    /// Settings every coin inherits unless it sets its own.
    pub struct Defaults {
        /// Default rollout policy.
        opt rollout: RolloutSettings,
        /// Default health gate thresholds.
        opt health: HealthDefaults,
        /// Default healing, or `off`.
        opt heal: OrOff<Heal>,
        /// Default disk thresholds, field by field.
        opt disk: Disk,
    }
}

yaml_struct! {
    /// The network the nodes run in.
    pub struct Network {
        /// The VPC of the fleet.
        req vpc_id: VpcId,
        /// One public subnet per availability zone the fleet may use (zone: subnet id).
        req subnets: Entries<Zone, SubnetId>,
        /// Security groups attached to every node, besides the coin's own (at most 4).
        req security_groups: NonEmpty<Spanned<SecurityGroupId>>,
        /// Networks the coins' RPC ports are open to in their own security groups (IPv4
        /// CIDRs, e.g. the VPC's); P2P ports are open to all.
        opt rpc_from: Vec<Cidr>,
    }
}

yaml_struct! {
    /// Where fleet reports.
    pub struct Notifications {
        /// Slack channel for rollout reports and approval requests.
        opt slack_channel: SlackChannel,
    }
}

yaml_struct! {
    /// fleet.yaml: the fleet-wide settings. Exactly one, at the repository root.
    pub struct FleetFile {
        /// AWS region of the fleet, e.g. eu-central-1.
        req region: Spanned<Region>,
        /// DNS domain of the nodes: node<N>.<coin>.<internal_domain>, e.g. node1.bitcoin.internal.
        req internal_domain: DomainName,
        /// Route53 private hosted zone for internal_domain.
        req hosted_zone_id: HostedZoneId,
        /// VPC, subnets per zone and security groups.
        req network: Network,
        /// AMI built for the nodes (Docker, node@.service, monitoring agent).
        req node_ami: AmiId,
        /// IAM instance profile of the nodes (SSM, ECR pull, secrets).
        req instance_profile: InstanceProfile,
        /// Image registry prefix; a coin's image defaults to <image_registry>/<coin>.
        req image_registry: ImageRepo,
        /// Settings every coin inherits unless it sets its own.
        opt defaults: Defaults,
        /// Where fleet reports rollouts.
        opt notifications: Notifications,
        /// Slack user ids allowed to approve rollouts.
        opt approvers: Vec<Spanned<SlackUserId>>,
        /// Coins this revision retires on purpose: every node of a coin whose file is gone, or
        /// more of a coin's nodes than limits.max_retire_percent. Without it such a plan is refused.
        opt retire: Vec<CoinName>,
        /// Safety limits of the planner.
        opt limits: Limits,
        /// The log driver of every coin's container, unless the coin sets its own.
        opt logging: Logging,
    }
}

yaml_struct! {
    /// Safety limits of the planner.
    pub struct Limits {
        /// A coin losing more than this share of its nodes in one revision is refused unless it
        /// is listed in `retire` (default 50).
        opt max_retire_percent: Percent,
    }
}

yaml_struct! {
    /// The daemon's container image.
    pub struct Image {
        /// Image repository without tag; default <image_registry>/<coin>.
        opt repository: ImageRepo,
        /// Optional pin of the version's tag: sha256:<64 hex digits>.
        opt digest: Digest,
    }
}

yaml_struct! {
    /// Where releases come from, for the release-watch bot.
    pub struct Upstream {
        /// GitHub repository publishing the releases, owner/name.
        req github: GithubRepo,
        /// Regular expression a release tag must match; must capture `version`.
        opt tag_pattern: Spanned<TagPattern>,
        /// Propose prereleases too (default false).
        opt prereleases: bool,
        /// Wait this long after publication before proposing a bump, e.g. 2d (default 0s).
        opt min_release_age: Duration,
    }
}

yaml_struct! {
    /// The EC2 instance of each node.
    pub struct Instance {
        /// EC2 instance type, e.g. c5.large.
        req instance_type as "type": InstanceType,
        /// Root volume size in GiB (default 16).
        opt root_volume_gb: RootVolumeGb,
        /// EBS data volume size in GiB; may grow, never shrink.
        req data_volume_gb: Spanned<DataVolumeGb>,
    }
}

yaml_struct! {
    /// Where the nodes run.
    pub struct Placement {
        /// Availability zones, in rollout order.
        req zones: NonEmpty<Spanned<Zone>>,
        /// Nodes in each zone (at least 1).
        req nodes_per_zone: NodesPerZone,
    }
}

yaml_struct! {
    /// Ports the container publishes.
    pub struct Ports {
        /// RPC ports, reachable from the internal network only.
        opt rpc: Vec<Spanned<Checked<Port>>>,
        /// Peer-to-peer ports, public.
        opt p2p: Vec<Spanned<Port>>,
    }
}

yaml_struct! {
    /// Settings of the `http` probe.
    pub struct HttpProbe {
        /// Path of the endpoint on the rpc port, e.g. /api/core/v2/info.
        req path: HttpPath,
        /// JSON pointer to the height in the response, e.g. /confirmedMilestone/index.
        req height_pointer: JsonPointer,
        /// Optional JSON pointer to the best known height (like `headers`), e.g. /latestMilestone/index.
        opt target_pointer: JsonPointer,
        /// Optional JSON pointer to the client's version string in the response, e.g. /appVersion: compared with the version fleet recorded (health.daemon_version).
        opt version_pointer: JsonPointer,
    }
}

yaml_struct! {
    /// How a node is judged healthy and in sync.
    pub struct Health {
        /// Probe type: bitcoin, ethereum, http or none.
        req probe: Spanned<Probe>,
        /// Port the probe talks to; default the first rpc port.
        opt rpc_port: Spanned<Port>,
        /// Blocks a node may trail the reference height; overrides defaults.health.
        opt max_lag_blocks: LagBlocks,
        /// A node whose height does not advance for this long fails its gate (at least 1m); overrides defaults.health.
        opt stall_timeout: Spanned<Duration>,
        /// A node not in sync this long after its restart fails its gate (at least 1m); overrides defaults.health.
        opt sync_timeout: Spanned<Duration>,
        /// How long a new node takes to sync from genesis, e.g. 3d: shown in the plan and its estimate (no gate uses it).
        opt full_sync_estimate: Duration,
        /// Settings of the http probe (required with probe: http).
        opt http: Spanned<HttpProbe>,
        /// How often `fleet run` probes the coin's nodes between rollouts (at least 10s); overrides defaults.health.
        opt watch_interval: Spanned<Duration>,
        /// A node out of sync this long opens an incident; overrides defaults.health.
        opt alert_after: Duration,
        /// Nodes that must be in sync for the coin to be served; fewer opens an incident (default 1, at most the coin's node count).
        opt min_synced: Spanned<MinSynced>,
        /// Compare the version the daemon reports (bitcoin: getnetworkinfo's subversion; ethereum: web3_clientVersion; http: health.http.version_pointer) with the version fleet recorded, and plan for a difference; default true. Set false for a client whose image tags are not its version numbers.
        opt daemon_version: bool,
    }
}

yaml_struct! {
    /// EBS snapshots taken and used by fleet.
    pub struct Snapshots {
        /// Snapshot the data volume before each version change (default true).
        opt before_upgrade: Spanned<bool>,
        /// A new node's data volume starts from the coin's latest snapshot (default true).
        opt restore_new_nodes: bool,
        /// `fleet run` snapshots an in-sync node's data volume when the coin's newest snapshot is older than this, e.g. 24h (at least 1h; default: no schedule).
        opt every: Spanned<Duration>,
        /// Scheduled snapshots kept per coin (default 7): older ones are deleted, never the coin's newest snapshot and never one taken for another reason.
        opt keep: SnapshotsKept,
        /// The plan warns when the coin's newest snapshot is older than this, e.g. 3d.
        opt max_age: Duration,
        /// Take the scheduled snapshot with the node's daemon stopped, for a consistent copy (default false); the stopped node counts against rollout.max_unavailable.
        opt stop_daemon: bool,
    }
}

yaml_struct! {
    /// A version every node of the coin must run by an activation height or a date (a hard fork).
    pub struct Deadline {
        /// The version required (at least; a later one also meets it).
        req version: Spanned<Version>,
        /// The activation height; fleet turns it into a date from the observed block rate (one of height and date).
        opt height: Spanned<BlockHeight>,
        /// The day, YYYY-MM-DD, UTC (one of height and date).
        opt date: Spanned<Date>,
    }
}

yaml_struct! {
    /// coins/<coin>.yaml: one coin's nodes.
    pub struct CoinFile {
        /// The coin's name; equals the file name.
        req coin: Spanned<CoinName>,
        /// The daemon version to run: the image tag and the node@<version> unit.
        req version: Spanned<Version>,
        /// The daemon's container image (default <image_registry>/<coin>, unpinned).
        opt image: Image,
        /// Where releases come from, for the release-watch bot.
        opt upstream: Upstream,
        /// The EC2 instance and its volumes.
        req instance: Instance,
        /// Availability zones and nodes per zone.
        req placement: Placement,
        /// RPC and peer-to-peer ports.
        req ports: Ports,
        /// Health probe and gate thresholds.
        req health: Health,
        /// Rollout policy; overrides defaults.rollout.
        opt rollout: RolloutSettings,
        /// EBS snapshot behaviour.
        opt snapshots: Snapshots,
        /// What `fleet run` may do on its own for a stuck or crashed node, or `off`; overrides defaults.heal.
        opt heal: OrOff<Heal>,
        /// When `fleet run` grows the data volume before it fills; overrides defaults.disk field by field.
        opt disk: Disk,
        /// A version every node must run by a height or a date; fleet escalates in Slack at 14, 7 and 1 days while any runs below it.
        opt deadline: Spanned<Deadline>,
        /// AWS Secrets Manager secret whose keys become container environment variables.
        opt secrets: SecretName,
        /// Environment of the host's node@ unit (/etc/sysconfig/node), e.g. DATA_VOLUME.
        opt host_config: Entries<EnvName, EnvValue>,
        /// Environment of the container (/etc/opt/node-config).
        opt container_config: Entries<EnvName, EnvValue>,
        /// Metric name: path of a script in this repository, run on the node to publish it.
        opt custom_metrics: Entries<MetricName, RepoPath>,
        /// AWS tags added to the coin's resources.
        opt tags: Entries<TagKey, TagValue>,
        /// The container's Docker log driver and options; replaces fleet.yaml's logging.
        opt logging: Logging,
    }
}

yaml_struct! {
    /// Where the container's logs go: Docker's --log-driver and --log-opt.
    pub struct Logging {
        /// Docker log driver, e.g. gelf (Graylog), awslogs, json-file.
        req driver: LogDriver,
        /// The driver's options, e.g. gelf-address: udp://graylog.internal:12201.
        opt options: Entries<LogOptName, EnvValue>,
    }
}
