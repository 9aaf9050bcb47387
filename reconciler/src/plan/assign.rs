//! From what exists to what it is for: an [`Observation`] (facts, as a provider reports them)
//! sorted against the desired fleet into [`Observed`], the nodes that fill its slots and the
//! orphans that do not. The first step of planning, and shared by everything that asks "which
//! node is in this slot" (the executor, `/status`).
//!
//! Pure, like the planner, and the same for every provider: both report facts and this one
//! function classifies them.

use crate::node::NodeKey;
use crate::provider::{
    DnsRecord, InstanceState, Observation, ObservedInstance, ObservedVersion, ObservedVolume,
    PendingStep, SnapshotInfo,
};
use fleet_repo_schema::Desired;
use fleet_repo_schema::values::{CoinName, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A managed instance that fills a slot of the desired fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNode {
    /// Its slot.
    pub key: NodeKey,
    /// EC2 instance id.
    pub instance_id: String,
    /// Instance state.
    pub state: InstanceState,
    /// Instance type.
    pub instance_type: String,
    /// The version it runs, as far as its tags tell.
    pub version: ObservedVersion,
    /// The version recorded in `fleet:version`, even while a step is pending.
    pub recorded_version: Option<Version>,
    /// A step that began and has not finished.
    pub pending: Option<PendingStep>,
    /// Private IPv4 address (what the DNS record points at; never dialled by tests).
    pub private_ip: Option<String>,
    /// The data volume (device `/dev/sdf`), if attached.
    pub data_volume: Option<ObservedVolume>,
    /// DNS names of records that point at this node's private address.
    pub dns_names: Vec<String>,
    /// Every tag.
    pub tags: BTreeMap<String, String>,
    /// Its security groups, sorted (None: not observed).
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    /// Whether it has a public address (None: not observed).
    #[serde(default)]
    pub public_ip: Option<bool>,
    /// Its root volume (None: not observed).
    #[serde(default)]
    pub root_volume: Option<ObservedVolume>,
    /// Its VPC (None: not observed).
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// The AMI it was launched from (None: not observed).
    #[serde(default)]
    pub image_id: Option<String>,
    /// Its subnet (None: not observed).
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// The version its daemon says it runs, when a probe read one
    /// ([`Observed::with_readings`]; None: not asked or not read, and the tag stands).
    #[serde(default)]
    pub daemon: Option<crate::health::DaemonVersion>,
}

impl ObservedNode {
    /// The version its daemon reports, when that is not the version its tag records: the
    /// drift of a node upgraded (or downgraded) by hand. None when they agree, when either is
    /// unknown, or when the tag cannot be compared (then the tag stands).
    pub fn runs_other_than_recorded(&self) -> Option<crate::health::DaemonVersion> {
        let d = self.daemon?;
        let tag = self.version.known()?;
        (d.is(tag) == Some(false)).then_some(d)
    }

    fn of(key: NodeKey, i: ObservedInstance, dns_names: Vec<String>) -> ObservedNode {
        ObservedNode {
            key,
            instance_id: i.instance_id,
            state: i.state,
            instance_type: i.instance_type,
            version: i.version,
            recorded_version: i.recorded_version,
            pending: i.pending,
            private_ip: i.private_ip,
            data_volume: i.data_volume,
            dns_names,
            tags: i.tags,
            security_groups: i.security_groups,
            public_ip: i.public_ip,
            root_volume: i.root_volume,
            vpc_id: i.vpc_id,
            image_id: i.image_id,
            subnet_id: i.subnet_id,
            daemon: None,
        }
    }

    /// The fingerprint of its configuration (`fleet:config`); empty when it carries none.
    pub fn config(&self) -> crate::node_config::Fingerprint {
        crate::node_config::Fingerprint::from_tag(
            self.tags
                .get(crate::provider::tags::CONFIG)
                .map(String::as_str)
                .unwrap_or(""),
        )
    }

    /// The per-setting record of its configuration (`fleet:config-keys`), when it carries one.
    pub fn key_print(&self) -> Option<crate::node_config::KeyPrint> {
        crate::node_config::KeyPrint::from_tag(self.tags.get(crate::provider::tags::CONFIG_KEYS)?)
    }

    /// A reference for actions.
    pub fn node_ref(&self) -> crate::provider::NodeRef {
        crate::provider::NodeRef {
            key: self.key.clone(),
            instance_id: self.instance_id.clone(),
        }
    }

    /// Whether the instance runs.
    pub fn running(&self) -> bool {
        self.state == InstanceState::Running
    }
}

/// Why a managed instance with a readable identity has no slot.
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
}

/// Something managed that the desired state does not account for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "orphan", rename_all = "kebab-case")]
pub enum Orphan {
    /// An instance whose slot the desired fleet does not have (a retirement).
    Unplaced {
        /// Why.
        reason: OrphanReason,
        /// The instance, with the slot its tags name.
        node: ObservedNode,
    },
    /// An instance launched to replace the slot's node, whose replacement is under way (the
    /// slot's node carries `fleet:pending=replace:…`; its `replace` step finishes the job).
    Replacement {
        /// The instance it replaces (the slot's node).
        of: String,
        /// The replacement.
        node: ObservedNode,
    },
    /// A second instance for a slot that has one.
    Duplicate {
        /// The instance kept as the slot's node.
        of: String,
        /// The other one.
        node: ObservedNode,
    },
    /// Tagged `fleet:managed` but its identity tags are missing or invalid.
    BadTags {
        /// What is wrong.
        detail: String,
        /// The instance.
        instance: ObservedInstance,
    },
    /// A node-like DNS record that points at no managed instance.
    StrayDns {
        /// The record.
        record: DnsRecord,
    },
}

impl Orphan {
    /// The instance id, for instance orphans.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Orphan::Unplaced { node, .. }
            | Orphan::Duplicate { node, .. }
            | Orphan::Replacement { node, .. } => Some(&node.instance_id),
            Orphan::BadTags { instance, .. } => Some(&instance.instance_id),
            Orphan::StrayDns { .. } => None,
        }
    }
}

/// The observed fleet, sorted against the desired one.
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
    /// The managed security groups (the coins' own), by group id (None: not observed).
    #[serde(default)]
    pub groups: Option<Vec<crate::network::ObservedGroup>>,
    /// Whether each secret the coins name exists (None: not observed).
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, crate::provider::SecretState>>,
    /// API calls the observation made.
    pub api_calls: u64,
    /// The size fleet grew each coin's data volumes to on its own (`disk.auto_grow`, from
    /// the journal): until the repository says as much, the coin's data volume size.
    #[serde(default)]
    pub auto_grown: BTreeMap<CoinName, u32>,
    /// Instances the node watch asked to be replaced (`heal.replace_after`: they fail EC2's
    /// status checks; from the journal): each is replaced while it holds its slot.
    #[serde(default)]
    pub replace_requested: BTreeSet<String>,
}

impl Observed {
    /// The same, with what the nodes' daemons said of their versions in `readings` (a node
    /// with a step under way is not judged by it: its version is unknown until the step ends).
    pub fn with_readings(
        mut self,
        readings: &BTreeMap<NodeKey, Result<crate::health::ChainStatus, crate::health::ProbeError>>,
    ) -> Observed {
        for n in &mut self.nodes {
            n.daemon = match readings.get(&n.key) {
                Some(Ok(s)) if n.pending.is_none() => s.client,
                _ => None,
            };
        }
        self
    }

    /// Sort `observation` against `desired`: instances into slots and orphans (the smallest
    /// instance id keeps a slot two instances claim, deterministically), DNS names attached
    /// to the instances they point at.
    pub fn assign(desired: &Desired, observation: Observation) -> Observed {
        let Observation {
            instances,
            dns,
            snapshots,
            groups,
            secrets,
            api_calls,
        } = observation;
        let mut by_ip: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in &dns {
            for v in &r.values {
                by_ip.entry(v.as_str()).or_default().push(r.name.as_str());
            }
        }
        let mut nodes: Vec<ObservedNode> = Vec::with_capacity(instances.len());
        let mut orphans = Vec::new();
        let mut claimed_ips = BTreeSet::new();
        for i in instances {
            if let Some(ip) = &i.private_ip {
                claimed_ips.insert(ip.clone());
            }
            let key = match &i.identity {
                Ok(k) => k.clone(),
                Err(detail) => {
                    orphans.push(Orphan::BadTags {
                        detail: detail.clone(),
                        instance: i,
                    });
                    continue;
                }
            };
            let dns_names: Vec<String> = i
                .private_ip
                .as_deref()
                .and_then(|ip| by_ip.get(ip))
                .map(|names| names.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            let reason = match desired.coins.get(key.coin.as_str()) {
                None => Some(OrphanReason::UnknownCoin),
                Some(c) if !c.zones.contains(&key.zone) => Some(OrphanReason::ZoneNotPlaced),
                Some(c) if key.index == 0 || key.index > c.nodes_per_zone => {
                    Some(OrphanReason::IndexBeyondCount {
                        nodes_per_zone: c.nodes_per_zone,
                    })
                }
                Some(_) => None,
            };
            let node = ObservedNode::of(key, i, dns_names);
            match reason {
                Some(reason) => orphans.push(Orphan::Unplaced { reason, node }),
                None => nodes.push(node),
            }
        }
        // Of two instances for a slot, one replacing the other (a `replace` under way), the
        // one it replaces keeps the slot while it exists: the step resumes from it.
        let replaced: BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.tags.get(crate::provider::tags::REPLACES).cloned())
            .collect();
        let replaces = |n: &ObservedNode, other: &ObservedNode| {
            n.tags.get(crate::provider::tags::REPLACES) == Some(&other.instance_id)
        };
        // An instance going away (terminating) yields the slot to one that is not.
        let going = |n: &ObservedNode| {
            matches!(
                n.state,
                InstanceState::ShuttingDown | InstanceState::Terminated
            )
        };
        nodes.sort_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then(going(a).cmp(&going(b)))
                .then(
                    replaced
                        .contains(&b.instance_id)
                        .cmp(&replaced.contains(&a.instance_id)),
                )
                .then(a.instance_id.cmp(&b.instance_id))
        });
        let mut kept: Vec<ObservedNode> = Vec::with_capacity(nodes.len());
        for n in nodes {
            match kept.last() {
                // The instance a finished replacement replaced, terminating.
                Some(prev) if prev.key == n.key && going(&n) && replaces(prev, &n) => {}
                Some(prev) if prev.key == n.key && replaces(&n, prev) => {
                    orphans.push(Orphan::Replacement {
                        of: prev.instance_id.clone(),
                        node: n,
                    })
                }
                Some(prev) if prev.key == n.key => orphans.push(Orphan::Duplicate {
                    of: prev.instance_id.clone(),
                    node: n,
                }),
                _ => kept.push(n),
            }
        }
        for r in &dns {
            if !r.values.iter().any(|v| claimed_ips.contains(v)) {
                orphans.push(Orphan::StrayDns { record: r.clone() });
            }
        }
        Observed {
            auto_grown: BTreeMap::new(),
            replace_requested: BTreeSet::new(),
            nodes: kept,
            orphans,
            snapshots,
            dns,
            groups,
            secrets,
            api_calls,
        }
    }

    /// The node in a slot.
    pub fn node(&self, key: &NodeKey) -> Option<&ObservedNode> {
        self.nodes
            .binary_search_by(|n| n.key.cmp(key))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The nodes of `coin` (a slice: [`Observed::nodes`] is sorted by key, coin first).
    pub fn nodes_of(&self, coin: &CoinName) -> &[ObservedNode] {
        let lo = self.nodes.partition_point(|n| n.key.coin < *coin);
        let hi = lo + self.nodes[lo..].partition_point(|n| n.key.coin == *coin);
        &self.nodes[lo..hi]
    }

    /// The record named `name` ([`Observed::dns`] is sorted by name).
    pub fn record(&self, name: &str) -> Option<&DnsRecord> {
        let i = self.dns.partition_point(|r| r.name.as_str() < name);
        self.dns.get(i).filter(|r| r.name == name)
    }

    /// The newest snapshot of `coin` in `zone` that did not fail.
    pub fn latest_snapshot(&self, coin: &str, zone: &str) -> Option<&SnapshotInfo> {
        self.snapshots
            .iter()
            .filter(|s| s.coin == coin && s.zone == zone && s.state != "error")
            .max_by_key(|s| s.started_ms)
    }

    /// The records pointing at `n`'s address.
    pub fn records_of(&self, n: &ObservedNode) -> Vec<DnsRecord> {
        match &n.private_ip {
            Some(ip) => self
                .dns
                .iter()
                .filter(|r| r.values.iter().any(|v| v == ip))
                .cloned()
                .collect(),
            None => vec![],
        }
    }
}
