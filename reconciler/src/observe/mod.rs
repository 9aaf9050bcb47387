//! Observing and changing the world: the [`Provider`] trait, the [`Observed`] fleet it
//! reports, and its two implementations, [`aws`] (production: EC2, EBS, Route53, SSM) and
//! [`sim`] (the embedded default: an in-process, deterministic fleet with chains).
//!
//! Architecture invariant: only the implementations in this module talk to AWS. Everything
//! above (planner, executor) sees the world through [`Provider`].
//!
//! Every action is idempotent: repeating it after a crash at any point (between any two of its
//! own steps) converges and never does harm twice. Each action that touches a running daemon
//! writes a `fleet:pending` marker first and clears it last, so a half-done step shows up in
//! the next observation as [`ObservedVersion::Unknown`], never as a guess.

#[cfg(feature = "aws")]
pub mod aws;
pub mod sim;
pub mod tags;
pub mod userdata;

use async_trait::async_trait;
use fleet_repo_schema::values::{InstanceType, Version};
use fleet_repo_schema::{Coin, Desired, Fleet, NodeSlot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The identity of a node, as recorded in its tags: coin, zone, index within the zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeKey {
    /// Coin name.
    pub coin: String,
    /// Availability zone.
    pub zone: String,
    /// 1-based index within the zone.
    pub index: u32,
}

impl NodeKey {
    /// The key of a desired slot.
    pub fn of(slot: &NodeSlot) -> NodeKey {
        NodeKey {
            coin: slot.coin.to_string(),
            zone: slot.zone.to_string(),
            index: slot.index,
        }
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.coin, self.zone, self.index)
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
pub struct PendingStep {
    /// The step (`upgrade`, `change-type`).
    pub step: String,
    /// Its target (a version, an instance type).
    pub target: String,
}

impl PendingStep {
    /// Tag value form, `upgrade:28.1`.
    pub fn to_tag(&self) -> String {
        format!("{}:{}", self.step, self.target)
    }
    /// Parse the tag value.
    pub fn from_tag(s: &str) -> PendingStep {
        match s.split_once(':') {
            Some((step, target)) => PendingStep {
                step: step.to_string(),
                target: target.to_string(),
            },
            None => PendingStep {
                step: s.to_string(),
                target: String::new(),
            },
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

/// A managed node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNode {
    /// Identity from the tags.
    pub key: NodeKey,
    /// EC2 instance id.
    pub instance_id: String,
    /// Instance state.
    pub state: InstanceState,
    /// Instance type.
    pub instance_type: String,
    /// The version it runs.
    pub version: ObservedVersion,
    /// The version recorded in `fleet:version`, even while a step is pending (during a
    /// `change-type` the daemon keeps running this version).
    #[serde(default)]
    pub recorded_version: Option<Version>,
    /// A step that began and has not finished.
    pub pending: Option<PendingStep>,
    /// Private IPv4 address (what the DNS record points at; never dialled by tests).
    pub private_ip: Option<String>,
    /// The data volume (device `/dev/sdf`), if attached.
    pub data_volume: Option<ObservedVolume>,
    /// DNS names of records that point at this node's private address.
    pub dns_names: Vec<String>,
}

impl ObservedNode {
    /// A reference for actions.
    pub fn node_ref(&self) -> NodeRef {
        NodeRef {
            key: self.key.clone(),
            instance_id: self.instance_id.clone(),
        }
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

/// Why a managed resource has no place in the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OrphanReason {
    /// Its coin is not in the fleet repo.
    UnknownCoin,
    /// Its coin is not placed in its zone.
    ZoneNotPlaced,
    /// Its index is above the coin's `nodes_per_zone`.
    IndexBeyondCount {
        /// nodes_per_zone.
        nodes_per_zone: u32,
    },
    /// Another instance already holds the same (coin, zone, index).
    Duplicate {
        /// The instance kept as the slot's node.
        of: String,
    },
    /// Tagged `fleet:managed` but the identity tags are missing or invalid.
    BadTags {
        /// What is wrong.
        detail: String,
    },
    /// A node-like DNS record that points at no managed node.
    StrayDns,
}

/// Something managed that the desired state does not account for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    /// Why.
    pub reason: OrphanReason,
    /// The instance, for instance orphans.
    pub node: Option<ObservedNode>,
    /// The record, for stray DNS records.
    pub dns: Option<DnsRecord>,
}

/// Everything fleet manages, as observed in one pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Managed, non-terminated instances that fill a desired slot, sorted by key.
    pub nodes: Vec<ObservedNode>,
    /// Managed resources with no desired slot.
    pub orphans: Vec<Orphan>,
    /// Managed snapshots, newest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// Node-like DNS records under the fleet's domain, sorted by name.
    pub dns: Vec<DnsRecord>,
    /// API calls this observation made (AWS: SDK operations, retries not counted twice).
    pub api_calls: u64,
}

impl Observed {
    /// The node in a slot.
    pub fn node(&self, key: &NodeKey) -> Option<&ObservedNode> {
        self.nodes
            .binary_search_by(|n| n.key.cmp(key))
            .ok()
            .map(|i| &self.nodes[i])
    }
    /// The nodes of `coin` (a slice: [`Observed::nodes`] is sorted by key, coin first).
    pub fn nodes_of(&self, coin: &str) -> &[ObservedNode] {
        let lo = self.nodes.partition_point(|n| n.key.coin.as_str() < coin);
        let hi = lo + self.nodes[lo..].partition_point(|n| n.key.coin == coin);
        &self.nodes[lo..hi]
    }
    /// The record named `name` ([`Observed::dns`] is sorted by name).
    pub fn record(&self, name: &str) -> Option<&DnsRecord> {
        let i = self.dns.partition_point(|r| r.name.as_str() < name);
        self.dns.get(i).filter(|r| r.name == name)
    }
    /// The newest completed-or-pending snapshot of `coin` in `zone`.
    pub fn latest_snapshot(&self, coin: &str, zone: &str) -> Option<&SnapshotInfo> {
        self.snapshots
            .iter()
            .filter(|s| s.coin == coin && s.zone == zone && s.state != "error")
            .max_by_key(|s| s.started_ms)
    }

    /// Build an observation from every managed instance, record and snapshot: sort the
    /// instances into desired slots and orphans, attach DNS names. Shared by both providers
    /// so that they classify identically.
    pub fn assemble(
        desired: &Desired,
        instances: Vec<RawInstance>,
        mut dns: Vec<DnsRecord>,
        mut snapshots: Vec<SnapshotInfo>,
        api_calls: u64,
    ) -> Observed {
        dns.sort();
        snapshots.sort_by(|a, b| {
            b.started_ms
                .cmp(&a.started_ms)
                .then(a.snapshot_id.cmp(&b.snapshot_id))
        });
        let mut by_ip: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in &dns {
            for v in &r.values {
                by_ip.entry(v.as_str()).or_default().push(r.name.as_str());
            }
        }
        let mut nodes: Vec<ObservedNode> = Vec::with_capacity(instances.len());
        let mut orphans = Vec::new();
        let mut claimed_ips = std::collections::BTreeSet::new();
        for raw in instances {
            let dns_names: Vec<String> = raw
                .private_ip
                .as_deref()
                .and_then(|ip| by_ip.get(ip))
                .map(|names| names.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            if let Some(ip) = &raw.private_ip {
                claimed_ips.insert(ip.clone());
            }
            let key = match tags::node_key(&raw.tags) {
                Ok(k) => k,
                Err(detail) => {
                    orphans.push(Orphan {
                        reason: OrphanReason::BadTags { detail },
                        node: Some(raw.into_node(
                            NodeKey {
                                coin: String::new(),
                                zone: String::new(),
                                index: 0,
                            },
                            dns_names,
                        )),
                        dns: None,
                    });
                    continue;
                }
            };
            let reason = match desired.coins.get(&key.coin) {
                None => Some(OrphanReason::UnknownCoin),
                Some(c) if !c.zones.iter().any(|z| z.as_str() == key.zone) => {
                    Some(OrphanReason::ZoneNotPlaced)
                }
                Some(c) if key.index == 0 || key.index > c.nodes_per_zone => {
                    Some(OrphanReason::IndexBeyondCount {
                        nodes_per_zone: c.nodes_per_zone,
                    })
                }
                Some(_) => None,
            };
            let node = raw.into_node(key, dns_names);
            match reason {
                Some(reason) => orphans.push(Orphan {
                    reason,
                    node: Some(node),
                    dns: None,
                }),
                None => nodes.push(node),
            }
        }
        // One node per slot: the oldest-looking (smallest instance id) keeps it, deterministically.
        nodes.sort_by(|a, b| a.key.cmp(&b.key).then(a.instance_id.cmp(&b.instance_id)));
        let mut kept: Vec<ObservedNode> = Vec::with_capacity(nodes.len());
        for n in nodes {
            match kept.last() {
                Some(prev) if prev.key == n.key => orphans.push(Orphan {
                    reason: OrphanReason::Duplicate {
                        of: prev.instance_id.clone(),
                    },
                    node: Some(n),
                    dns: None,
                }),
                _ => kept.push(n),
            }
        }
        for r in &dns {
            if !r.values.iter().any(|v| claimed_ips.contains(v)) {
                orphans.push(Orphan {
                    reason: OrphanReason::StrayDns,
                    node: None,
                    dns: Some(r.clone()),
                });
            }
        }
        Observed {
            nodes: kept,
            orphans,
            snapshots,
            dns,
            api_calls,
        }
    }
}

/// A managed instance as read from the provider, before it is sorted into slots.
#[derive(Debug, Clone)]
pub struct RawInstance {
    /// Instance id.
    pub instance_id: String,
    /// All tags.
    pub tags: BTreeMap<String, String>,
    /// State.
    pub state: InstanceState,
    /// Instance type.
    pub instance_type: String,
    /// Private address.
    pub private_ip: Option<String>,
    /// Data volume.
    pub data_volume: Option<ObservedVolume>,
}

impl RawInstance {
    fn into_node(self, key: NodeKey, dns_names: Vec<String>) -> ObservedNode {
        let pending = self
            .tags
            .get(tags::PENDING)
            .map(|v| PendingStep::from_tag(v));
        let version = tags::version(&self.tags, pending.as_ref());
        let recorded_version = self
            .tags
            .get(tags::VERSION)
            .and_then(|v| Version::parse(v).ok());
        ObservedNode {
            key,
            instance_id: self.instance_id,
            state: self.state,
            instance_type: self.instance_type,
            version,
            recorded_version,
            pending,
            private_ip: self.private_ip,
            data_volume: self.data_volume,
            dns_names,
        }
    }
}

/// Which instance an action is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// Identity.
    pub key: NodeKey,
    /// Instance id.
    pub instance_id: String,
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
    /// Security groups.
    pub security_groups: Vec<String>,
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
        let user_data =
            userdata::render(fleet, coin, slot).map_err(|e| ProviderError::Refused {
                reason: e.to_string(),
            })?;
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
            instance_profile: fleet.instance_profile.to_string(),
            root_volume_gb: coin.root_volume_gb,
            data_volume_gb: coin.data_volume_gb,
            snapshot_id,
            user_data,
            tags: tags::for_node(coin, slot),
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

/// What an idempotent action found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The action changed something.
    Done,
    /// The world already was as asked; nothing was changed.
    AlreadyDone,
}

/// What went wrong in a provider call. Each carries what an operator needs to act.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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

    /// Observe every managed instance, data volume, node DNS record and snapshot.
    async fn observe(&self, desired: &Desired) -> Result<Observed, ProviderError>;

    /// Launch the node of a slot (instance, data volume restored from `snapshot_id` when
    /// set, DNS record). If an instance already holds the slot, only the DNS record is
    /// ensured. Returns the instance id.
    async fn launch(&self, spec: &LaunchSpec) -> Result<(String, Outcome), ProviderError>;

    /// Restart the node's daemon at `version` (`systemctl stop 'node@*' && systemctl start
    /// node@<version>` via SSM), then record the version. No-op when it already runs it.
    async fn upgrade(&self, node: &NodeRef, version: &Version) -> Result<Outcome, ProviderError>;

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

    /// Grow the data volume to `size_gb` and the file system with it. Refuses to shrink.
    async fn grow_volume(&self, node: &NodeRef, size_gb: u32) -> Result<Outcome, ProviderError>;

    /// Stop, change the instance type, start.
    async fn change_instance_type(
        &self,
        node: &NodeRef,
        instance_type: &InstanceType,
    ) -> Result<Outcome, ProviderError>;

    /// Snapshot the node's data volume; returns the snapshot id.
    async fn snapshot(&self, node: &NodeRef, reason: &str) -> Result<String, ProviderError>;

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
}

/// The shell command that restarts a node at `version`. The version is checked again here,
/// right before it becomes part of a command, whatever checked it before.
pub fn restart_command(version: &Version) -> Result<String, ProviderError> {
    let v = version.as_str();
    let ok = Version::parse(v).is_ok()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        && !v.starts_with('-');
    if !ok {
        return Err(ProviderError::Refused {
            reason: format!("version {v:?} is not a valid version; it will not reach a shell"),
        });
    }
    Ok(format!(
        "systemctl stop 'node@*' && systemctl start 'node@{v}'"
    ))
}

/// The shell command that succeeds exactly when `node@<version>` is active; the version is
/// checked as in [`restart_command`].
pub fn is_active_command(version: &Version) -> Result<String, ProviderError> {
    restart_command(version)?;
    Ok(format!("systemctl is-active --quiet 'node@{version}'"))
}

/// The command that grows the data file system after its volume grew (xfs, mounted at
/// /node-data by the node's user data).
pub const GROW_FS_COMMAND: &str = "xfs_growfs -d /node-data";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_command_quotes_and_checks_the_version() {
        let v = Version::parse("28.1").unwrap();
        assert_eq!(
            restart_command(&v).unwrap(),
            "systemctl stop 'node@*' && systemctl start 'node@28.1'"
        );
        for bad in ["1; rm -rf /", "$(id)", "a b", "", "-x", "1'2"] {
            assert!(Version::parse(bad).is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn pending_tag_round_trips() {
        let p = PendingStep {
            step: "upgrade".into(),
            target: "28.1".into(),
        };
        assert_eq!(PendingStep::from_tag(&p.to_tag()), p);
    }
}
