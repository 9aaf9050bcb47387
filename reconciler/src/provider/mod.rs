//! Observing and changing the world: the [`Provider`] trait, the [`Observation`] it returns
//! (facts only: what exists and what its tags say), and its two implementations, [`aws`]
//! (production: EC2, EBS, Route53, SSM) and [`sim`] (the embedded default: an in-process,
//! deterministic fleet with chains, and its prober).
//!
//! Architecture invariant: only the implementations in this module talk to AWS. Everything
//! above (planner, executor) sees the world through [`Provider`]. Observing knows nothing of
//! the desired state beyond its [`Scope`] (which hosted zone to list): sorting instances into
//! slots and orphans is the planner's ([`crate::plan::assign`]).
//!
//! Every action is idempotent: repeating it after a crash at any point (between any two of its
//! own steps) converges and never does harm twice. Each action that touches a running daemon
//! runs under [`protocol`]: it writes a `fleet:pending` marker first and clears it last, so a
//! half-done step shows up in the next observation as [`ObservedVersion::Unknown`], never as
//! a guess.

#[cfg(feature = "aws")]
pub mod aws;
pub mod commands;
pub mod protocol;
pub mod sim;
pub mod tags;
pub mod userdata;

use crate::node::NodeKey;
use async_trait::async_trait;
use fleet_repo_schema::values::{Digest, InstanceType, Version};
use fleet_repo_schema::{Coin, Fleet, NodeSlot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The device a node's data volume is attached at (what `fleet-node` mounts at /node-data).
pub const DATA_DEVICE: &str = "/dev/sdf";

/// One of EC2's status checks (DescribeInstanceStatus's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckState {
    /// Passed.
    Ok,
    /// Failed.
    Impaired,
    /// Not enough data yet.
    InsufficientData,
    /// Starting.
    Initializing,
    /// Does not apply.
    NotApplicable,
}

impl CheckState {
    /// From EC2's word (`ok`, `impaired`, `insufficient-data`, `initializing`,
    /// `not-applicable`); anything else reads as insufficient data.
    pub fn parse(s: &str) -> CheckState {
        match s {
            "ok" => CheckState::Ok,
            "impaired" => CheckState::Impaired,
            "initializing" => CheckState::Initializing,
            "not-applicable" => CheckState::NotApplicable,
            _ => CheckState::InsufficientData,
        }
    }

    /// EC2's word.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Ok => "ok",
            CheckState::Impaired => "impaired",
            CheckState::InsufficientData => "insufficient-data",
            CheckState::Initializing => "initializing",
            CheckState::NotApplicable => "not-applicable",
        }
    }
}

/// EC2's two status checks of a running instance: the system's (AWS's host and network)
/// and the instance's (its operating system reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChecks {
    /// The system status check.
    pub system: CheckState,
    /// The instance status check.
    pub instance: CheckState,
}

/// A data volume's use at one time, as the node's CloudWatch agent reported it (the hour's
/// highest `disk_used_percent`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiskPoint {
    /// The hour the figure is of (its start), unix milliseconds.
    pub at_ms: crate::clock::Millis,
    /// Percent of the file system used.
    pub used_percent: f64,
}

/// What the CloudWatch agent on every node reports its data volume as: the namespace,
/// metric and mount point fleet reads ([`Provider::disk_usage`]). The agent must append the
/// `InstanceId` dimension (`append_dimensions`), as the operators' AMI does.
pub mod disk_metric {
    /// The agent's namespace.
    pub const NAMESPACE: &str = "CWAgent";
    /// Its disk metric.
    pub const NAME: &str = "disk_used_percent";
    /// The dimension naming the mount point, and the data volume's (`fleet-node bootstrap`
    /// mounts it there).
    pub const PATH: (&str, &str) = ("path", "/node-data");
    /// The dimension naming the instance.
    pub const INSTANCE: &str = "InstanceId";
    /// One figure per hour.
    pub const PERIOD_SECS: i32 = 3600;
}

impl StatusChecks {
    /// Either check failed.
    pub fn failing(&self) -> bool {
        self.system == CheckState::Impaired || self.instance == CheckState::Impaired
    }
}

/// EC2 instance states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Launching.
    Pending,
    /// Running (the daemon may still be starting or syncing).
    Running,
    /// Stopping.
    Stopping,
    /// Stopped.
    Stopped,
    /// Terminating.
    ShuttingDown,
    /// Terminated.
    Terminated,
    /// A state this version of fleet does not know.
    Other(String),
}

impl InstanceState {
    /// Parse an EC2 state name.
    pub fn parse(s: &str) -> InstanceState {
        match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            other => InstanceState::Other(other.to_string()),
        }
    }
    /// The EC2 name.
    pub fn as_str(&self) -> &str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Other(s) => s,
        }
    }
}

/// The version a node runs, as far as fleet knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ObservedVersion {
    /// Recorded in `fleet:version` after a successful start, with no step pending.
    Known {
        /// The version.
        version: Version,
    },
    /// Not known: a step began and did not finish, or the tag is missing or invalid.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl ObservedVersion {
    /// The version, when known.
    pub fn known(&self) -> Option<&Version> {
        match self {
            ObservedVersion::Known { version } => Some(version),
            ObservedVersion::Unknown { .. } => None,
        }
    }
}

/// A step that began on a node and has not been recorded as finished (`fleet:pending`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum PendingStep {
    /// `upgrade:<version>`: the daemon was being restarted at `to`.
    Upgrade {
        /// The version it was going to (as written in the tag: not trusted as a version).
        to: String,
    },
    /// `change-type:<type>`: the instance was being stopped, resized and started.
    ChangeType {
        /// The instance type it was going to.
        to: String,
    },
    /// `reconfigure`: the node's files were being rewritten towards the fingerprint `to`
    /// (the tag value of [`crate::node_config::Fingerprint`]; not part of the marker, which
    /// must stay a short tag value: the step writes it when done).
    Reconfigure {
        /// The fingerprint it was going to.
        to: String,
        /// The per-setting record it was going to (the tag value of
        /// [`crate::node_config::KeyPrint`]; empty when it does not fit in a tag).
        keys: String,
    },
    /// `replace:<ami>[:<attempt>]`: the instance is being replaced by one launched from
    /// `ami`, which takes over its data volume (the replacement carries `fleet:replaces`).
    Replace {
        /// The AMI of the replacement (as written in the tag).
        ami: String,
        /// What tells this replacement from an earlier one of the same instance (undone):
        /// the AWS provider's RunInstances client token is made of it, since EC2 keeps a
        /// token for at least a day after its instance is gone. Empty in marks without one.
        attempt: String,
    },
    /// `restore:<snapshot>`: the node's data volume is being replaced by a new one made from
    /// `snapshot` (a rollback with `rollout.on_failure: restore`); the instance is stopped
    /// for the swap and started again. The old volume is kept, detached and tagged.
    Restore {
        /// The snapshot restored.
        snapshot: String,
    },
    /// A marker this version of fleet does not write (a newer fleet, or a person).
    Unknown {
        /// The tag's value.
        tag: String,
    },
}

impl PendingStep {
    /// Tag value form, `upgrade:28.1`.
    pub fn to_tag(&self) -> String {
        match self {
            PendingStep::Upgrade { to } => format!("upgrade:{to}"),
            PendingStep::ChangeType { to } => format!("change-type:{to}"),
            PendingStep::Reconfigure { .. } => "reconfigure".into(),
            PendingStep::Replace { ami, attempt } if attempt.is_empty() => format!("replace:{ami}"),
            PendingStep::Replace { ami, attempt } => format!("replace:{ami}:{attempt}"),
            PendingStep::Restore { snapshot } => format!("restore:{snapshot}"),
            PendingStep::Unknown { tag } => tag.clone(),
        }
    }
    /// Parse the tag value.
    pub fn from_tag(s: &str) -> PendingStep {
        match s.split_once(':') {
            Some(("upgrade", to)) => PendingStep::Upgrade { to: to.to_string() },
            Some(("change-type", to)) => PendingStep::ChangeType { to: to.to_string() },
            Some(("restore", snapshot)) => PendingStep::Restore {
                snapshot: snapshot.to_string(),
            },
            Some(("replace", rest)) => {
                let (ami, attempt) = rest.split_once(':').unwrap_or((rest, ""));
                PendingStep::Replace {
                    ami: ami.to_string(),
                    attempt: attempt.to_string(),
                }
            }
            _ if s == "reconfigure" => PendingStep::Reconfigure {
                to: String::new(),
                keys: String::new(),
            },
            _ => PendingStep::Unknown { tag: s.to_string() },
        }
    }
    /// The marked step that rewrites a node's configuration to `files`.
    pub fn reconfigure(files: &crate::node_config::NodeFiles) -> PendingStep {
        PendingStep::Reconfigure {
            to: files.fingerprint().to_tag(),
            keys: files.key_print().to_tag(),
        }
    }

    /// Whether this is an upgrade towards `version`.
    pub fn is_upgrade_to(&self, version: &Version) -> bool {
        matches!(self, PendingStep::Upgrade { to } if to == version.as_str())
    }
}

impl fmt::Display for PendingStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingStep::Upgrade { to } => write!(f, "upgrade towards {to}"),
            PendingStep::ChangeType { to } => write!(f, "change of type towards {to}"),
            PendingStep::Reconfigure { .. } => write!(f, "reconfiguration"),
            PendingStep::Replace { ami, .. } => write!(f, "replacement by an instance of {ami}"),
            PendingStep::Restore { snapshot } => {
                write!(f, "restore of the data volume from {snapshot}")
            }
            PendingStep::Unknown { tag } => write!(f, "step {tag:?}"),
        }
    }
}

/// A node's data volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedVolume {
    /// EBS volume id.
    pub volume_id: String,
    /// Size in GiB.
    pub size_gb: u32,
    /// The snapshot it was created from, if any.
    pub snapshot_id: Option<String>,
}

/// A managed instance as observed: its facts, and what its tags say. Whether it fills a slot
/// of the desired fleet is not a fact of the world and is decided by the planner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedInstance {
    /// EC2 instance id.
    pub instance_id: String,
    /// Its identity from the tags, or what is wrong with them.
    pub identity: Result<NodeKey, String>,
    /// Instance state.
    pub state: InstanceState,
    /// Instance type.
    pub instance_type: String,
    /// The version it runs, as far as its tags tell.
    pub version: ObservedVersion,
    /// The version recorded in `fleet:version`, even while a step is pending (during a
    /// `change-type` the daemon keeps running this version).
    pub recorded_version: Option<Version>,
    /// A step that began and has not finished.
    pub pending: Option<PendingStep>,
    /// Private IPv4 address (what the DNS record points at; never dialled by tests).
    pub private_ip: Option<String>,
    /// The data volume (device `/dev/sdf`), if attached.
    pub data_volume: Option<ObservedVolume>,
    /// Every tag.
    pub tags: BTreeMap<String, String>,
    /// Its security groups, sorted (None: not read by whoever built this observation).
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    /// Whether it has a public IPv4 address (None: not read).
    #[serde(default)]
    pub public_ip: Option<bool>,
    /// Its root volume (None: not read).
    #[serde(default)]
    pub root_volume: Option<ObservedVolume>,
    /// Its VPC (None: not read).
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// The AMI it was launched from (None: not read).
    #[serde(default)]
    pub image_id: Option<String>,
    /// Its subnet (None: not read).
    #[serde(default)]
    pub subnet_id: Option<String>,
}

impl ObservedInstance {
    /// The same, with its security groups as read.
    pub fn with_security_groups(mut self, mut groups: Vec<String>) -> ObservedInstance {
        groups.sort();
        groups.dedup();
        self.security_groups = Some(groups);
        self
    }

    /// An instance from what the provider read; the tags are interpreted here, identically
    /// for every provider.
    pub fn new(
        instance_id: String,
        tags: BTreeMap<String, String>,
        state: InstanceState,
        instance_type: String,
        private_ip: Option<String>,
        data_volume: Option<ObservedVolume>,
    ) -> ObservedInstance {
        let pending = tags.get(tags::PENDING).map(|v| PendingStep::from_tag(v));
        ObservedInstance {
            instance_id,
            identity: tags::node_key(&tags),
            state,
            instance_type,
            version: tags::version(&tags, pending.as_ref()),
            recorded_version: tags.get(tags::VERSION).and_then(|v| Version::parse(v).ok()),
            pending,
            private_ip,
            data_volume,
            tags,
            security_groups: None,
            public_ip: None,
            root_volume: None,
            vpc_id: None,
            image_id: None,
            subnet_id: None,
        }
    }

    /// The same with other tags, interpreted again (what `fleet adopt --dry-run` plans with).
    pub fn with_tags(self, tags: BTreeMap<String, String>) -> ObservedInstance {
        let fresh = ObservedInstance::new(
            self.instance_id.clone(),
            tags,
            self.state.clone(),
            self.instance_type.clone(),
            self.private_ip.clone(),
            self.data_volume.clone(),
        );
        ObservedInstance {
            identity: fresh.identity,
            version: fresh.version,
            recorded_version: fresh.recorded_version,
            pending: fresh.pending,
            tags: fresh.tags,
            ..self
        }
    }

    /// The same, with its data volume as read.
    pub fn with_data_volume(mut self, v: Option<ObservedVolume>) -> ObservedInstance {
        self.data_volume = v;
        self
    }

    /// The same, with its subnet as read.
    pub fn with_subnet(mut self, subnet_id: Option<String>) -> ObservedInstance {
        self.subnet_id = subnet_id;
        self
    }

    /// The same, with its AMI as read.
    pub fn with_image(mut self, image_id: Option<String>) -> ObservedInstance {
        self.image_id = image_id;
        self
    }

    /// The same, with its VPC as read.
    pub fn with_vpc(mut self, vpc_id: Option<String>) -> ObservedInstance {
        self.vpc_id = vpc_id;
        self
    }

    /// The same, with its root volume as read.
    pub fn with_root_volume(mut self, v: ObservedVolume) -> ObservedInstance {
        self.root_volume = Some(v);
        self
    }

    /// The same, with whether it has a public address as read.
    pub fn with_public_ip(mut self, has: bool) -> ObservedInstance {
        self.public_ip = Some(has);
        self
    }
}

/// An A record under the fleet's domain that looks like a node record (`node<N>.<coin>.<domain>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Fully qualified name without the trailing dot.
    pub name: String,
    /// Addresses.
    pub values: Vec<String>,
    /// TTL in seconds.
    pub ttl: i64,
}

/// A snapshot fleet took (tagged `fleet:managed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Coin (tag).
    pub coin: String,
    /// Zone the volume was in (tag).
    pub zone: String,
    /// Size of the volume it was taken from, GiB.
    pub size_gb: u32,
    /// Start time, unix milliseconds.
    pub started_ms: u64,
    /// `pending`, `completed`, `error`.
    pub state: String,
    /// Why it was taken (tag `fleet:reason`).
    pub reason: String,
}

/// What an observation covers beyond the managed instances, volumes, snapshots and security
/// groups: the hosted zone whose node records are listed, and the secrets whose existence is
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Route53 hosted zone of the nodes' records.
    pub hosted_zone_id: String,
    /// Its domain: records named `node<N>.<coin>.<domain>` are node records.
    pub internal_domain: String,
    /// Secrets Manager secrets (names) whose existence to check, sorted, each once.
    pub secrets: Vec<String>,
}

impl Scope {
    /// The scope of a fleet, without secrets.
    pub fn of(fleet: &Fleet) -> Scope {
        Scope {
            hosted_zone_id: fleet.hosted_zone_id.to_string(),
            internal_domain: fleet.internal_domain.to_string(),
            secrets: vec![],
        }
    }

    /// The scope of a desired fleet: its hosted zone and the secrets its coins name.
    pub fn of_desired(desired: &fleet_repo_schema::Desired) -> Scope {
        let mut secrets: Vec<String> = desired
            .coins
            .values()
            .filter_map(|c| c.secrets.as_ref().map(|s| s.to_string()))
            .collect();
        secrets.sort();
        secrets.dedup();
        Scope {
            secrets,
            ..Scope::of(&desired.fleet)
        }
    }
}

/// Whether a secret a coin names can be read by its nodes, as Secrets Manager lists it
/// (ListSecrets: names and dates only, never a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretState {
    /// It exists.
    Exists,
    /// It exists but is scheduled for deletion (reading it fails until it is restored).
    ScheduledForDeletion,
    /// There is no secret of that name in the fleet's account and region.
    Missing,
}

/// Everything fleet manages, as observed in one pass: facts only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Managed instances that are not terminated, in instance id order.
    pub instances: Vec<ObservedInstance>,
    /// Node-like records in the scope's zone, sorted by name.
    pub dns: Vec<DnsRecord>,
    /// Managed snapshots, newest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// Security groups tagged `fleet:managed` (the coins' own), in group id order (None: not
    /// read by whoever built this observation, and then not planned for).
    #[serde(default)]
    pub groups: Option<Vec<crate::network::ObservedGroup>>,
    /// The scope's secrets and whether each exists (None: not read by whoever built this
    /// observation, and then not checked).
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, SecretState>>,
    /// API calls this observation made (AWS: SDK operations, retries not counted twice).
    pub api_calls: u64,
}

impl Observation {
    /// An observation from what a provider read, in a canonical order (both providers
    /// return the same observation of the same world).
    pub fn new(
        mut instances: Vec<ObservedInstance>,
        mut dns: Vec<DnsRecord>,
        mut snapshots: Vec<SnapshotInfo>,
        api_calls: u64,
    ) -> Observation {
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        dns.sort();
        snapshots.sort_by(|a, b| {
            b.started_ms
                .cmp(&a.started_ms)
                .then(a.snapshot_id.cmp(&b.snapshot_id))
        });
        Observation {
            instances,
            dns,
            snapshots,
            groups: None,
            secrets: None,
            api_calls,
        }
    }

    /// The same, with the scope's secrets as listed.
    pub fn with_secrets(mut self, secrets: BTreeMap<String, SecretState>) -> Observation {
        self.secrets = Some(secrets);
        self
    }

    /// The same, with the managed security groups as read.
    pub fn with_groups(mut self, mut groups: Vec<crate::network::ObservedGroup>) -> Observation {
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        for g in &mut groups {
            g.rules.sort();
            g.rules.dedup();
        }
        self.groups = Some(groups);
        self
    }
}

/// Whether a node of `coin` is launched with a public IPv4 address: when it has P2P ports,
/// which peers on the internet must reach (the operators' rule; RPC stays on the private
/// address). The one rule for the launch and the plan that shows it.
pub fn needs_public_ip(coin: &fleet_repo_schema::Coin) -> bool {
    !coin.p2p_ports.is_empty()
}

/// Which image of a version a node's daemon is restarted on ([`Provider::upgrade_pinned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePin<'a> {
    /// The version's tag, unpinned (the coin pins no digest for it); a digest the node kept
    /// for the version is dropped.
    Tag,
    /// The coin's digest for the version.
    Digest(&'a Digest),
    /// A rollback: whatever the node pinned for the version when it last ran it (the digest
    /// it kept, else the tag). The repository pins only its current version, so this is the
    /// only way back to the exact image a node ran before.
    AsBefore,
}

/// Which instance an action is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// Identity.
    pub key: NodeKey,
    /// Instance id.
    pub instance_id: String,
}

/// What a `set-tags` step changes on a node's instance (and its data volume).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TagChange {
    /// Key → value, where they differ (the coin's tags and `Name`).
    pub set: BTreeMap<String, String>,
    /// Keys fleet wrote for the coin that its file no longer lists.
    pub unset: Vec<String>,
    /// The new [`tags::COIN_TAGS`] record (written on the instance only).
    pub record: String,
}

/// Everything needed to launch one node.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The slot.
    pub slot: NodeSlot,
    /// Version to start.
    pub version: Version,
    /// Instance type.
    pub instance_type: InstanceType,
    /// AMI.
    pub ami: String,
    /// Subnet of the slot's zone.
    pub subnet_id: String,
    /// fleet.yaml's security groups (the coin's own joins them: `network`).
    pub security_groups: Vec<String>,
    /// The coin's own security group, made or brought in step before a launch.
    pub network: crate::network::CoinNetwork,
    /// Ask for a public IPv4 address: the coin has P2P ports, which peers on the internet
    /// must reach (RPC stays on the private address: `fleet-node run`).
    pub public_ip: bool,
    /// Instance profile name.
    pub instance_profile: String,
    /// Root volume, GiB.
    pub root_volume_gb: u32,
    /// Data volume, GiB.
    pub data_volume_gb: u32,
    /// Restore the data volume from this snapshot.
    pub snapshot_id: Option<String>,
    /// Rendered user data (plain text; providers encode it).
    pub user_data: String,
    /// Every tag of the instance and its volumes (ownership tags included).
    pub tags: BTreeMap<String, String>,
    /// Route53 zone and record for the node.
    pub dns: DnsTarget,
}

impl LaunchSpec {
    /// The launch spec of `slot` of `coin`, restoring from `snapshot_id` when given.
    pub fn new(
        fleet: &Fleet,
        coin: &Coin,
        slot: &NodeSlot,
        snapshot_id: Option<String>,
    ) -> Result<LaunchSpec, ProviderError> {
        let subnet = fleet
            .subnets
            .get(&slot.zone)
            .ok_or_else(|| ProviderError::Refused {
                reason: format!(
                    "zone {} of coin {} has no subnet in fleet.yaml `network.subnets`",
                    slot.zone, coin.name
                ),
            })?;
        let refused = |e: userdata::RenderError| ProviderError::Refused {
            reason: e.to_string(),
        };
        let user_data = userdata::render(fleet, coin, slot).map_err(refused)?;
        let mut tags = tags::for_node(coin, slot);
        let files = crate::node_config::NodeFiles::of(coin, slot).map_err(refused)?;
        tags.insert(tags::CONFIG.to_string(), files.fingerprint().to_tag());
        let keys = files.key_print().to_tag();
        if !keys.is_empty() {
            tags.insert(tags::CONFIG_KEYS.to_string(), keys);
        }
        Ok(LaunchSpec {
            slot: slot.clone(),
            version: coin.version.clone(),
            instance_type: coin.instance_type.clone(),
            ami: fleet.node_ami.to_string(),
            subnet_id: subnet.to_string(),
            security_groups: fleet
                .security_groups
                .iter()
                .map(|s| s.to_string())
                .collect(),
            network: crate::network::CoinNetwork::of(fleet, coin),
            instance_profile: fleet.instance_profile.to_string(),
            public_ip: needs_public_ip(coin),
            root_volume_gb: coin.root_volume_gb,
            data_volume_gb: coin.data_volume_gb,
            snapshot_id,
            user_data,
            tags,
            dns: DnsTarget {
                hosted_zone_id: fleet.hosted_zone_id.to_string(),
                name: slot.dns_name.clone(),
            },
        })
    }
}

/// A node record to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsTarget {
    /// Route53 hosted zone id.
    pub hosted_zone_id: String,
    /// Record name, e.g. `node1.bitcoin.internal`.
    pub name: String,
}

/// Which of a node's volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// The data volume (`/dev/sdf`, the chain).
    Data,
    /// The root volume.
    Root,
}

impl Disk {
    /// `data` or `root`, as messages say it.
    pub fn name(self) -> &'static str {
        match self {
            Disk::Data => "data",
            Disk::Root => "root",
        }
    }

    /// What grows its partition and file system on the node once the volume grew.
    pub fn grow_command(self) -> &'static str {
        match self {
            Disk::Data => commands::GROW_FS_COMMAND,
            Disk::Root => commands::GROW_ROOT_COMMAND,
        }
    }
}

/// What an idempotent action found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The action changed something.
    Done,
    /// The world already was as asked; nothing was changed.
    AlreadyDone,
}

impl Outcome {
    /// Two actions of one step: done when either changed something.
    pub fn and(self, other: Outcome) -> Outcome {
        if self == Outcome::Done || other == Outcome::Done {
            Outcome::Done
        } else {
            Outcome::AlreadyDone
        }
    }
}

/// What went wrong in a provider call. Each carries what an operator needs to act.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProviderError {
    /// The API kept throttling after every retry.
    #[error(
        "{op}: throttled by AWS after {attempts} attempts ({code}); the next pass retries, or lower the fleet's API rate"
    )]
    Throttled {
        /// Operation.
        op: String,
        /// Attempts made.
        attempts: u32,
        /// AWS error code.
        code: String,
    },
    /// An API call failed.
    #[error("{op}: {code}: {message}{}", instance.as_ref().map(|i| format!(" (instance {i})")).unwrap_or_default())]
    Api {
        /// Operation, e.g. `ec2:RunInstances`.
        op: String,
        /// AWS error code (or `connection`, `timeout`…).
        code: String,
        /// Message.
        message: String,
        /// The instance concerned.
        instance: Option<String>,
    },
    /// An SSM command did not succeed on the instance.
    #[error("command on {instance} ended {status} (exit {exit_code}): {}", if stderr.trim().is_empty() { "no output on stderr".to_string() } else { stderr.trim().to_string() })]
    CommandFailed {
        /// Instance.
        instance: String,
        /// SSM status (Failed, Cancelled, TimedOut…).
        status: String,
        /// Exit code, -1 when unknown.
        exit_code: i32,
        /// Standard error (trimmed by SSM to 8,000 characters).
        stderr: String,
    },
    /// An SSM command did not finish within the bound.
    #[error(
        "command {command_id} on {instance} did not finish within {secs} s; check the instance in SSM Run Command"
    )]
    CommandTimeout {
        /// Instance.
        instance: String,
        /// Command id.
        command_id: String,
        /// The bound.
        secs: u64,
    },
    /// The instance is gone or not managed.
    #[error("instance {instance} not found or not managed by fleet")]
    NotFound {
        /// Instance.
        instance: String,
    },
    /// fleet refuses the action (it would lose data, or an input failed validation).
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// Configuration or local state problem.
    #[error("{0}")]
    Setup(String),
}

impl ProviderError {
    /// A call (or a wait made of calls) that did not finish within its bound.
    pub fn timed_out(op: &str, message: String, instance: Option<&str>) -> ProviderError {
        ProviderError::Api {
            op: op.to_string(),
            code: "timeout".into(),
            message,
            instance: instance.map(str::to_string),
        }
    }

    /// Growing a volume of `node` that it does not have, refused the same way by every
    /// provider.
    pub fn no_disk(node: &NodeRef, disk: Disk) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "instance {} has no {} volume",
                node.instance_id,
                disk.name()
            ),
        }
    }

    /// A replacement of a node that has no data volume to move, refused the same way by
    /// every provider.
    pub fn nothing_to_move(node: &NodeRef) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "instance {} of {} has no data volume to move to its replacement; attach the node's volume at /dev/sdf, or retire the node",
                node.instance_id, node.key
            ),
        }
    }

    /// The data volume `replacement` (of `node`) takes over, from its tags
    /// (`fleet:takes-volume`): one rule for `replace` and `hand_over` on every provider.
    pub fn taken_volume(
        node: &NodeRef,
        replacement: &str,
        instance_tags: &BTreeMap<String, String>,
    ) -> Result<String, ProviderError> {
        instance_tags
            .get(tags::TAKES_VOLUME)
            .cloned()
            .ok_or_else(|| ProviderError::unknown_volume(node, replacement))
    }

    /// A hand-over whose replacement does not hold the volume it takes over (yet).
    pub fn not_taken_over(node: &NodeRef, replacement: &str, volume: &str) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "replacement {replacement} of {} does not hold the node's data volume {volume}; the replacement step runs again first",
                node.key
            ),
        }
    }

    /// An undone replacement whose old instance holds no data volume, and no replacement
    /// holds it either: nothing to start the node on.
    pub fn volume_lost(node: &NodeRef) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "instance {} of {} holds no data volume and no replacement takes one over; attach the node's volume at /dev/sdf by hand, or retire the node",
                node.instance_id, node.key
            ),
        }
    }

    /// A hand-over with no replacement to hand over to.
    pub fn no_replacement(node: &NodeRef) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "instance {} of {} has no replacement (no instance is tagged fleet:replaces={}); the replacement step runs again first",
                node.instance_id, node.key, node.instance_id
            ),
        }
    }

    /// A replacement without its `fleet:takes-volume` tag (made by hand, or tags edited).
    pub fn unknown_volume(node: &NodeRef, replacement: &str) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "replacement {replacement} of {} does not say which volume it takes ({}); terminate it by hand",
                node.key,
                tags::TAKES_VOLUME
            ),
        }
    }

    /// Shrinking a volume, refused the same way by every provider.
    pub fn shrink(
        node: &NodeRef,
        disk: Disk,
        volume_id: &str,
        current: u32,
        size_gb: u32,
    ) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "{} volume {volume_id} of {} is {current} GB; shrinking it to {size_gb} GB would lose data (EBS cannot shrink a volume: launch a new node from a snapshot instead)",
                disk.name(),
                node.key
            ),
        }
    }

    /// `node` has no snapshot taken for `reason` to restore.
    pub fn no_snapshot_to_restore(node: &NodeRef, reason: &str) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "{} has no completed snapshot tagged fleet:reason={reason} to restore its data from",
                node.key
            ),
        }
    }

    /// A snapshot of a node that has no data volume, refused the same way by every provider.
    pub fn no_data_volume(node: &NodeRef) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "instance {} has no data volume to snapshot",
                node.instance_id
            ),
        }
    }
}

/// A fleet that can be observed and changed. Implementations: [`aws::AwsProvider`] and
/// [`sim::SimProvider`]; both pass one conformance suite (`tests/tests/provider_conformance.rs`).
#[async_trait]
pub trait Provider: Send + Sync {
    /// `aws` or `sim`.
    fn name(&self) -> &'static str;

    /// API calls made so far (each logical call once, however many retries it took).
    fn api_calls(&self) -> u64 {
        0
    }

    /// Observe every managed instance, data volume, snapshot and security group, the node
    /// records of the scope's hosted zone, and whether the scope's secrets exist.
    async fn observe(&self, scope: &Scope) -> Result<Observation, ProviderError>;

    /// Launch the node of a slot (instance in fleet.yaml's groups and the coin's own, made
    /// or brought in step first by [`Provider::ensure_coin_network`]; data volume restored
    /// from `snapshot_id` when set; DNS record). If an instance already holds the slot, only
    /// the DNS record is ensured. Returns the instance id.
    async fn launch(&self, spec: &LaunchSpec) -> Result<(String, Outcome), ProviderError>;

    /// Restart the node's daemon at `version`, its image as `pin` says (`fleet-node upgrade
    /// <version> [<digest>]`, or `fleet-node rollback <version>` for [`ImagePin::AsBefore`],
    /// via SSM: pull first, then switch the enabled `node@` unit), then record the version.
    /// No-op when it already runs it. A failed pull fails the step and leaves the running
    /// daemon alone.
    async fn upgrade_pinned(
        &self,
        node: &NodeRef,
        version: &Version,
        pin: ImagePin<'_>,
    ) -> Result<Outcome, ProviderError>;

    /// Rewrite the node's configuration to `files` over SSM (`fleet-node apply-config`) and,
    /// when `restart`, restart its daemon at `version` if anything the container sees
    /// changed; then record the fingerprint (`fleet:config`). No-op when the node already
    /// carries it.
    async fn reconfigure(
        &self,
        node: &NodeRef,
        version: &Version,
        files: &crate::node_config::NodeFiles,
        restart: bool,
    ) -> Result<Outcome, ProviderError>;

    /// Apply `change` to the instance (and its data volume `volume_id`, when given): the
    /// coin's tags and `Name` set (CreateTags), the ones it dropped deleted (DeleteTags), then
    /// the record of which are the coin's (CreateTags on the instance: a `fleet:` key is
    /// another IAM statement's). No-op when all are as asked.
    async fn set_tags(
        &self,
        node: &NodeRef,
        volume_id: Option<&str>,
        change: &TagChange,
    ) -> Result<Outcome, ProviderError>;

    /// Make the coin's own security group when it has none (named, tagged and described as
    /// [`crate::network::CoinNetwork`] says) and set its inbound rules to exactly
    /// `net.rules` (AWS: DescribeSecurityGroups, then CreateSecurityGroup,
    /// AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress as needed). Returns its
    /// id; AlreadyDone when nothing changed. A group of that name in the VPC that fleet did
    /// not tag is refused, never taken over.
    async fn ensure_coin_network(
        &self,
        net: &crate::network::CoinNetwork,
    ) -> Result<(String, Outcome), ProviderError>;

    /// Attach exactly `groups` to the instance (AWS: ModifyInstanceAttribute, online). No-op
    /// when it has them.
    async fn set_security_groups(
        &self,
        node: &NodeRef,
        groups: &[String],
    ) -> Result<Outcome, ProviderError>;

    /// [`Provider::upgrade_pinned`] without a digest pin.
    async fn upgrade(&self, node: &NodeRef, version: &Version) -> Result<Outcome, ProviderError> {
        self.upgrade_pinned(node, version, ImagePin::Tag).await
    }

    /// Restart the node's daemon, the enabled `node@<version>` unit (`fleet-node restart
    /// <version>` over SSM): healing's remedy for a daemon that is stuck or has crashed.
    /// Refused on the node when that unit is not the enabled one. Nothing is recorded: the
    /// version, the configuration and the tags stay as they are, and a repeat is one more
    /// restart.
    async fn restart_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError>;

    /// Stop the node's daemon, the enabled `node@<version>` unit, and flush its data volume
    /// (`fleet-node stop <version>` over SSM), for a consistent snapshot
    /// ([`snapshot_consistent`]). Refused on the node when that unit is not the enabled one.
    async fn stop_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError>;

    /// Start it again (`fleet-node start <version>`, the enabled unit only).
    async fn start_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError>;

    /// Write `version` as the node's recorded version (`fleet:version`) and nothing else:
    /// what its daemon reports when that is not what the tag says (a change by hand), before
    /// the upgrade that fixes it.
    async fn record_version(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError>;

    /// Write [`tags::IMAGE_RUNS`] on the node (its value from [`tags::image_runs`]): what its
    /// daemon reported after fleet started another version. Only the record.
    async fn record_image_runs(&self, node: &NodeRef, value: &str) -> Result<(), ProviderError>;

    /// After a crash in the middle of an upgrade to `version` (the node's `fleet:pending` is
    /// `upgrade:<version>`, its version unknown): ask the node whether `node@<version>` is
    /// active (`systemctl is-active`, via SSM). If it is, record the version and clear the
    /// marker without restarting anything and return true; otherwise change nothing and
    /// return false (the caller then upgrades). True at once when the version is recorded.
    async fn confirm_version(
        &self,
        node: &NodeRef,
        version: &Version,
    ) -> Result<bool, ProviderError>;

    /// Replace the node's instance by a new one of `spec` (a new AMI) that takes over its data
    /// volume: mark the old one (`fleet:pending=replace:<ami>`), launch the replacement
    /// without a data volume (tagged `fleet:replaces` and `fleet:takes-volume`), stop the old
    /// instance, detach the volume from it, attach it to the replacement and run the every-boot
    /// set-up there (`fleet-node bootstrap`). The DNS name and the old instance are left as
    /// they are: [`Provider::hand_over`] moves the one and terminates the other once the
    /// replacement is in sync, so that until then the old instance, stopped with its root
    /// volume, is still there to go back to. The volume is attached to one instance at a
    /// time, never copied and never deleted. Each part is idempotent, so a retry after a crash
    /// anywhere finishes the job; the set-up is sent on every attempt (a crash may have cut it
    /// off, and it changes nothing on a node that runs), so the outcome is `Done` while the
    /// old instance exists and `AlreadyDone` once it is gone. Returns the replacement's id.
    async fn replace(
        &self,
        node: &NodeRef,
        spec: &LaunchSpec,
    ) -> Result<(String, Outcome), ProviderError>;

    /// The end of a replacement, once the replacement of `node` (the instance tagged
    /// `fleet:replaces=<node's id>`) is in sync: point `dns` at the replacement's private
    /// address, then terminate the old instance. Refused while the replacement does not hold
    /// the volume it takes over (`fleet:takes-volume`). Idempotent: once the old instance is
    /// gone, only the record is ensured. Returns the replacement's id.
    async fn hand_over(
        &self,
        node: &NodeRef,
        dns: &DnsTarget,
    ) -> Result<(String, Outcome), ProviderError>;

    /// Undo an unfinished replacement of `node` (the repository wants the old instance again:
    /// its `node_ami` and subnet are the ones the old instance has): stop the replacement,
    /// move the data volume back to the old instance, terminate the replacement, start the
    /// old instance and clear its `fleet:pending` mark. Refused once the old instance is gone
    /// (a hand-over finished: the replacement is the node), and when the volume is on
    /// neither instance. Idempotent: a retry after a crash anywhere finishes the job.
    async fn undo_replace(&self, node: &NodeRef) -> Result<Outcome, ProviderError>;

    /// `fleet adopt`: the instances fleet does not manage (pending, running, stopping or
    /// stopped) whose tag `key` has one of `values` (EC2's `*` and `?` wildcards read), with
    /// their attached volumes other than the root. A provider without instances made outside
    /// fleet refuses.
    async fn unmanaged(
        &self,
        key: &str,
        values: &[String],
    ) -> Result<Vec<crate::adopt::Candidate>, ProviderError> {
        let _ = (key, values);
        Err(self.cannot_adopt())
    }

    /// `fleet adopt`: run the read-only shell `script` on each instance (SSM, up to 50 a
    /// command) and give each one's standard output, or what failed for it.
    async fn inspect(
        &self,
        instance_ids: &[String],
        script: &str,
    ) -> Result<BTreeMap<String, Result<String, String>>, ProviderError> {
        let _ = (instance_ids, script);
        Err(self.cannot_adopt())
    }

    /// `fleet adopt`: write each adoption's tags, in order: the data volume's first, then
    /// the instance's in one call. Nothing else is touched. The instances are read again
    /// first (in pages): one done already (carrying this identity) counts as written; one
    /// managed as another node, or whose data volume is no longer the one inspected, is
    /// refused. Stops at the first that fails: how many were written, and that failure.
    async fn adopt(
        &self,
        adoptees: &[crate::adopt::Adoptee],
    ) -> (usize, Option<(String, ProviderError)>) {
        (
            0,
            adoptees
                .first()
                .map(|a| (a.instance_id.clone(), self.cannot_adopt())),
        )
    }

    /// Why a provider without instances made outside fleet cannot adopt.
    fn cannot_adopt(&self) -> ProviderError {
        ProviderError::Refused {
            reason: format!(
                "fleet adopt takes over instances made outside fleet, and the {} provider has none: use --provider aws",
                self.name()
            ),
        }
    }

    /// Grow the data volume to `size_gb` and the file system with it. Refuses to shrink.
    async fn grow_volume(&self, node: &NodeRef, size_gb: u32) -> Result<Outcome, ProviderError>;

    /// Grow the root volume to `size_gb` online and its partition and file system with it
    /// (`fleet-node grow-root` over SSM). Refuses to shrink.
    async fn grow_root_volume(
        &self,
        node: &NodeRef,
        size_gb: u32,
    ) -> Result<Outcome, ProviderError>;

    /// Stop, change the instance type, start.
    async fn change_instance_type(
        &self,
        node: &NodeRef,
        instance_type: &InstanceType,
    ) -> Result<Outcome, ProviderError>;

    /// Snapshot the node's data volume; returns the snapshot id.
    async fn snapshot(&self, node: &NodeRef, reason: &str) -> Result<String, ProviderError>;

    /// Put the node's data back as it was in its newest snapshot taken for `reason`
    /// (`before-upgrade:<version>`): a new volume from that snapshot, in the node's zone and
    /// of the old volume's size and type; the instance stopped, the old volume detached and
    /// kept (tagged `fleet:restored-away`, never deleted: it holds what the failed version
    /// wrote), the new one attached at the data device, the instance started (its boot
    /// starts the enabled `node@` unit: roll the version back first). Marked
    /// (`restore:<snapshot>`) and recorded (`fleet:restored`), so a repeat restores nothing
    /// twice. Refused when the node has no such snapshot.
    async fn restore_data(&self, node: &NodeRef, reason: &str) -> Result<Outcome, ProviderError>;

    /// Finish, or make, the restore of the node's data volume from `snapshot` (the act of
    /// [`Provider::restore_data`] once its snapshot is known): what the planner asks of a
    /// node whose `restore:<snapshot>` mark says a restore was cut off (fleet stopped between
    /// the detach and the start). Idempotent.
    async fn finish_restore(
        &self,
        node: &NodeRef,
        snapshot: &str,
    ) -> Result<Outcome, ProviderError>;

    /// Snapshot the data volume, terminate the instance, then remove `dns` (its records).
    /// Returns the snapshot id, or None when the node had no data volume left.
    async fn retire(
        &self,
        node: &NodeRef,
        hosted_zone_id: &str,
        dns: &[DnsRecord],
    ) -> Result<Option<String>, ProviderError>;

    /// Point `target.name` at the node's private address (UPSERT).
    async fn set_dns(&self, node: &NodeRef, target: &DnsTarget) -> Result<Outcome, ProviderError>;

    /// Remove a record (exactly as observed).
    async fn delete_dns(
        &self,
        hosted_zone_id: &str,
        record: &DnsRecord,
    ) -> Result<Outcome, ProviderError>;

    /// Delete the managed snapshot `snapshot_id` (the snapshot schedule's retention; the
    /// caller picks only fleet's own, and the IAM policy allows no other). AlreadyDone when it
    /// is gone.
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<Outcome, ProviderError>;

    /// EC2's status checks of the region's running instances, by instance id
    /// (DescribeInstanceStatus, 1,000 a page: one call per page whatever the node count; the
    /// caller picks the fleet's). The node watch's view of instances AWS itself finds broken.
    async fn status_checks(&self) -> Result<BTreeMap<String, StatusChecks>, ProviderError>;

    /// The data volume use of `instance_ids` as each node's CloudWatch agent reports it
    /// ([`disk_metric`]): per instance, the hourly highest since `since_ms`, oldest first; an
    /// instance the agent has not reported for is absent. AWS: ListMetrics (500 a page) for
    /// the series, then GetMetricData (500 series a call): one call per page whatever the
    /// node count.
    async fn disk_usage(
        &self,
        instance_ids: &[String],
        since_ms: crate::clock::Millis,
    ) -> Result<BTreeMap<String, Vec<DiskPoint>>, ProviderError>;
}

/// A consistent snapshot of the node's data volume (`snapshots.stop_daemon`): stop its
/// daemon (the enabled `node@<version>`), snapshot the volume (an EBS snapshot is of the
/// moment CreateSnapshot is called, so the daemon need not wait for it to complete), start
/// the daemon again. The start is sent whatever the snapshot's outcome, and a failed stop
/// takes no snapshot. Returns the snapshot id, or the first failure.
pub async fn snapshot_consistent(
    p: &dyn Provider,
    node: &NodeRef,
    version: &Version,
    reason: &str,
) -> Result<String, ProviderError> {
    p.stop_daemon(node, version).await?;
    let taken = p.snapshot(node, reason).await;
    let started = p.start_daemon(node, version).await;
    let id = taken?;
    started.map(|()| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_tag_round_trips() {
        for tag in ["upgrade:28.1", "change-type:m5.large", "reconfigure", "x:y"] {
            assert_eq!(PendingStep::from_tag(tag).to_tag(), tag);
        }
        assert_eq!(
            PendingStep::from_tag("upgrade:28.1"),
            PendingStep::Upgrade { to: "28.1".into() }
        );
        assert!(matches!(
            PendingStep::from_tag("upgrade"),
            PendingStep::Unknown { .. }
        ));
        let v = Version::parse("28.1").unwrap();
        assert!(PendingStep::from_tag("upgrade:28.1").is_upgrade_to(&v));
        assert!(!PendingStep::from_tag("change-type:28.1").is_upgrade_to(&v));
    }

    #[test]
    fn an_instance_reads_its_tags_once() {
        let mut t = BTreeMap::new();
        for (k, v) in [
            (tags::MANAGED, "true"),
            (tags::COIN, "bitcoin"),
            (tags::ZONE, "eu-central-1a"),
            (tags::INDEX, "2"),
            (tags::VERSION, "28.1"),
            (tags::PENDING, "change-type:m5.xlarge"),
        ] {
            t.insert(k.to_string(), v.to_string());
        }
        let i = ObservedInstance::new(
            "i-1".into(),
            t,
            InstanceState::Stopped,
            "m5.large".into(),
            None,
            None,
        );
        assert_eq!(
            i.identity,
            Ok(NodeKey::parse("bitcoin", "eu-central-1a", 2).unwrap())
        );
        assert!(
            i.version.known().is_none(),
            "a pending step hides the version"
        );
        assert_eq!(i.recorded_version.unwrap().as_str(), "28.1");
        assert_eq!(
            i.pending,
            Some(PendingStep::ChangeType {
                to: "m5.xlarge".into()
            })
        );
    }
}
