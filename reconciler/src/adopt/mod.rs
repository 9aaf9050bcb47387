//! `fleet adopt`: bringing nodes that exist (made by the operators' Terraform module, or by
//! hand) under fleet without touching them. It only ever writes fleet's tags; it never
//! stops, restarts or modifies an instance, a volume or a record.
//!
//! The steps, each its own function so that the rules are tested without AWS:
//!
//! 1. [`screen`]: which unmanaged instances are candidates for which coin ([`Matcher`]: a tag
//!    whose value names the coin, by default the module's `Component = nodes/<coin>`), and
//!    which of them cannot be adopted from what EC2 says alone (not running, a zone the coin
//!    does not use, no data volume at fleet's device).
//! 2. The provider asks each screened node what it runs ([`inspect::INSPECT_SCRIPT`], over
//!    SSM, read-only, 50 instances a command).
//! 3. [`assign`]: each node gets a slot of its coin (its zone; the index from its existing
//!    `node<N>.<coin>` record where one points at it, else the lowest free index), its version
//!    from its active `node@<version>` unit, and the tags that record all this
//!    ([`Adoptee::instance_tags`]). Whatever is ambiguous is left alone, with its reason
//!    ([`Why`]).
//!
//! Invariants: an instance already managed is never a candidate; a slot is given at most once
//! (slots held by managed instances are taken); two candidates for one slot are both left
//! alone; the data volume is tagged before the instance, so a crash between the two leaves an
//! unmanaged instance that the next run adopts again (CreateTags is idempotent).

pub mod inspect;

use crate::node::NodeKey;
use crate::node_config::NodeFiles;
use crate::provider::{
    DATA_DEVICE, DnsRecord, InstanceState, ObservedInstance, ObservedVolume, tags,
};
use fleet_repo_schema::values::Version;
use fleet_repo_schema::{Desired, NodeSlot};
use inspect::{Difference, NodeReport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How candidates are recognised: the tag `key` whose value is `pattern` with `{coin}`
/// replaced by a coin's name. `*` in the pattern matches any run of characters and `?` one
/// (EC2's own filter wildcards), e.g. `Name=node*.{coin}.internal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matcher {
    /// Tag key.
    pub key: String,
    /// Value pattern, with `{coin}`.
    pub pattern: String,
}

impl Matcher {
    /// The operators' module: `Component = nodes/<coin>`.
    pub const DEFAULT: &'static str = "Component=nodes/{coin}";

    /// Parse `KEY=PATTERN`.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let (key, pattern) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected TAG=PATTERN, e.g. {}", Self::DEFAULT))?;
        if key.is_empty() || key.len() > 128 || key.starts_with("fleet:") || key.starts_with("aws:")
        {
            return Err(format!(
                "{s:?}: the tag key must be 1 to 128 characters and not fleet's or AWS's own"
            ));
        }
        if pattern.matches("{coin}").count() != 1 || pattern.len() > 200 {
            return Err(format!(
                "{s:?}: the pattern must name the coin once, as {{coin}}, e.g. {}",
                Self::DEFAULT
            ));
        }
        Ok(Matcher {
            key: key.to_string(),
            pattern: pattern.to_string(),
        })
    }

    /// The filter value for `coin` (EC2 reads `*` and `?` in it as wildcards).
    pub fn value_for(&self, coin: &str) -> String {
        self.pattern.replace("{coin}", coin)
    }

    /// The coins among `coins` whose value `value` matches.
    pub fn coins_of<'a>(&self, value: &str, coins: impl Iterator<Item = &'a str>) -> Vec<String> {
        coins
            .filter(|c| glob(&self.value_for(c), value))
            .map(str::to_string)
            .collect()
    }
}

/// `*` (any run) and `?` (one character) glob, as EC2 filters match.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// An EBS volume attached to a candidate, other than its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedVolume {
    /// The device it is attached at, as EC2 says (e.g. `/dev/sdf`).
    pub device: String,
    /// Its facts.
    pub volume: ObservedVolume,
}

/// An instance fleet does not manage that matched a coin's pattern, as the provider read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The instance, its tags as they are (its identity is not fleet's).
    pub instance: ObservedInstance,
    /// Its availability zone.
    pub zone: String,
    /// Its attached volumes other than the root.
    pub volumes: Vec<AttachedVolume>,
}

/// Why an instance was left alone. Each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum Why {
    /// EC2's filter matched its tag, but to no coin of the repository.
    NoCoin {
        /// The tag's value.
        value: String,
    },
    /// Its tag matches several coins' patterns.
    SeveralCoins {
        /// The coins.
        coins: Vec<String>,
    },
    /// It is not running: what it runs cannot be asked, and a start brings the operators'
    /// daemon back only if its unit is enabled.
    NotRunning {
        /// Its state.
        state: String,
    },
    /// It is in a zone the coin does not place nodes in.
    ZoneNotWanted {
        /// Its zone.
        zone: String,
    },
    /// No EBS volume is attached besides its root.
    NoDataVolume,
    /// Its volumes are at other devices than fleet's node side reads.
    DataVolumeElsewhere {
        /// Their devices.
        devices: Vec<String>,
    },
    /// Several node records point at it.
    SeveralRecords {
        /// Their names.
        records: Vec<String>,
    },
    /// Its record is fleet's name of a slot in another zone.
    RecordOfOtherZone {
        /// The record.
        record: String,
        /// The zone fleet places that name in.
        slot_zone: String,
    },
    /// Another candidate claims the same slot.
    SameSlot {
        /// The slot.
        slot: String,
        /// The other instances.
        others: Vec<String>,
    },
    /// Every slot of its coin in its zone is taken.
    NoFreeSlot {
        /// Slots in the zone.
        wanted: u32,
    },
    /// Asking it over SSM failed.
    NotInspected {
        /// What failed.
        error: String,
    },
    /// What it runs cannot be read from its units.
    NoVersion {
        /// Why.
        reason: String,
    },
    /// What it runs makes adopting it unsafe.
    Unsafe {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NoCoin { value } => {
                write!(
                    f,
                    "its tag's value {value:?} names no coin of the repository"
                )
            }
            Why::SeveralCoins { coins } => write!(
                f,
                "its tag matches the pattern of {}: make --match name one coin",
                coins.join(" and ")
            ),
            Why::NotRunning { state } => write!(
                f,
                "it is {state}: start it (and its daemon) and adopt again, or retire it by hand"
            ),
            Why::ZoneNotWanted { zone } => write!(
                f,
                "it runs in {zone}, which the coin's placement.zones does not list"
            ),
            Why::NoDataVolume => write!(f, "it has no data volume besides its root"),
            Why::DataVolumeElsewhere { devices } => write!(
                f,
                "its volumes are at {}; fleet's node side reads the chain from {DATA_DEVICE}",
                devices.join(", ")
            ),
            Why::SeveralRecords { records } => write!(
                f,
                "several node records point at it ({}): delete all but one",
                records.join(", ")
            ),
            Why::RecordOfOtherZone { record, slot_zone } => write!(
                f,
                "its record {record} is fleet's name for a node in {slot_zone}: adopting it would move that name; match the coin's placement.zones order to the records, or rename the record"
            ),
            Why::SameSlot { slot, others } => write!(
                f,
                "{} claim{} slot {slot} too: fleet cannot tell which one is the node",
                others.join(", "),
                if others.len() == 1 { "s" } else { "" }
            ),
            Why::NoFreeSlot { wanted } => write!(
                f,
                "the coin wants {wanted} node{} in this zone and every slot is taken (by a node, or by the record of one left alone): more nodes than the repository wants (raise placement.nodes_per_zone, or retire it by hand)",
                if *wanted == 1 { "" } else { "s" }
            ),
            Why::NotInspected { error } => write!(f, "asking it over SSM failed: {error}"),
            Why::NoVersion { reason } => write!(f, "{reason}"),
            Why::Unsafe { reason } => write!(f, "{reason}"),
        }
    }
}

/// An instance left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftAlone {
    /// Instance id.
    pub instance_id: String,
    /// The coin it matched, when one.
    pub coin: Option<String>,
    /// Why.
    pub why: Why,
}

/// A candidate that passed [`screen`]: one coin, running, in one of its zones, its data
/// volume at [`DATA_DEVICE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    /// The candidate.
    pub candidate: Candidate,
    /// Its coin.
    pub coin: String,
    /// Its data volume.
    pub data_volume: ObservedVolume,
}

/// Step 1: which candidates may be adopted, as far as EC2 tells.
pub fn screen(
    desired: &Desired,
    matcher: &Matcher,
    candidates: Vec<Candidate>,
) -> (Vec<Screened>, Vec<LeftAlone>) {
    let mut ok = Vec::new();
    let mut left = Vec::new();
    for c in candidates {
        let id = c.instance.instance_id.clone();
        let leave = |coin: Option<&str>, why: Why| LeftAlone {
            instance_id: id.clone(),
            coin: coin.map(str::to_string),
            why,
        };
        let value = c
            .instance
            .tags
            .get(&matcher.key)
            .cloned()
            .unwrap_or_default();
        let coins = matcher.coins_of(&value, desired.coins.keys().map(String::as_str));
        let coin = match coins.as_slice() {
            [one] => one.clone(),
            // The provider's filter matched it (EC2's wildcards are its own); one this
            // cannot tie to one coin is left alone.
            [] => {
                left.push(leave(None, Why::NoCoin { value }));
                continue;
            }
            _ => {
                left.push(leave(None, Why::SeveralCoins { coins }));
                continue;
            }
        };
        let spec = &desired.coins[&coin];
        if c.instance.state != InstanceState::Running {
            left.push(leave(
                Some(&coin),
                Why::NotRunning {
                    state: c.instance.state.as_str().to_string(),
                },
            ));
            continue;
        }
        if !spec.zones.iter().any(|z| z.as_str() == c.zone) {
            left.push(leave(
                Some(&coin),
                Why::ZoneNotWanted {
                    zone: c.zone.clone(),
                },
            ));
            continue;
        }
        let Some(data) = c.volumes.iter().find(|v| v.device == DATA_DEVICE) else {
            let why = if c.volumes.is_empty() {
                Why::NoDataVolume
            } else {
                Why::DataVolumeElsewhere {
                    devices: c.volumes.iter().map(|v| v.device.clone()).collect(),
                }
            };
            left.push(leave(Some(&coin), why));
            continue;
        };
        ok.push(Screened {
            data_volume: data.volume.clone(),
            coin,
            candidate: c,
        });
    }
    (ok, left)
}

/// How a node's slot was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotFrom {
    /// Its `node<N>.<coin>` record is the slot's name.
    Record,
    /// No record names it: the lowest free index of its zone (the plan then writes the
    /// slot's record).
    FreeIndex,
}

/// A node to adopt, and what adopting it records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adoptee {
    /// Instance id.
    pub instance_id: String,
    /// Its slot.
    pub slot: NodeKey,
    /// The slot's DNS name.
    pub dns_name: String,
    /// How the slot was found.
    pub slot_from: SlotFrom,
    /// Its data volume.
    pub volume_id: String,
    /// Its root volume, tagged too so that fleet observes it (None: EC2 did not say).
    pub root_volume_id: Option<String>,
    /// The version its active unit runs.
    pub version: Version,
    /// Settings found to differ from the coin file (the next plan reconfigures them).
    pub differences: Vec<Difference>,
    /// Keys of the container's environment taken to come from the coin's secret.
    pub from_secret: usize,
    /// `fleet:config` as recorded.
    #[serde(skip)]
    pub config: String,
    /// `fleet:config-keys` as recorded.
    #[serde(skip)]
    pub config_keys: String,
    /// `fleet:coin-tags` as recorded.
    #[serde(skip)]
    pub coin_tags: String,
}

impl Adoptee {
    /// The tags written on the data volume and the root volume (first).
    pub fn volume_tags(&self) -> Vec<(&'static str, String)> {
        vec![
            (tags::MANAGED, "true".into()),
            (tags::COIN, self.slot.coin.to_string()),
            (tags::ZONE, self.slot.zone.to_string()),
            (tags::INDEX, self.slot.index.to_string()),
        ]
    }

    /// The tags written on the instance (second, in one call): its identity, version and
    /// configuration record, and `fleet:managed`.
    pub fn instance_tags(&self) -> Vec<(&'static str, String)> {
        let mut t = self.volume_tags();
        t.extend([
            (tags::VERSION, self.version.to_string()),
            (tags::CONFIG, self.config.clone()),
            (tags::CONFIG_KEYS, self.config_keys.clone()),
            (tags::COIN_TAGS, self.coin_tags.clone()),
        ]);
        t
    }
}

/// What adoption found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Adoption {
    /// Nodes to adopt, by slot.
    pub adopted: Vec<Adoptee>,
    /// Instances left alone, by instance id.
    pub left_alone: Vec<LeftAlone>,
}

/// Step 3: a slot, a version and a record for each screened node that answered.
/// `reports`: each screened instance's answer to the inspection (Err: what failed);
/// `dns`: the node records of the fleet's zone; `taken`: slots managed instances hold;
/// `held`: the private addresses of the candidates [`screen`] left alone (a slot whose record
/// points at one of them, or at a node left alone here, is given to nobody: adopting another
/// node into it would move a name that serves).
pub fn assign(
    desired: &Desired,
    screened: Vec<Screened>,
    reports: &BTreeMap<String, Result<String, String>>,
    dns: &[DnsRecord],
    taken: &BTreeSet<NodeKey>,
    held: &BTreeSet<String>,
) -> Adoption {
    let mut out = Adoption::default();
    let ip_of: BTreeMap<String, String> = screened
        .iter()
        .filter_map(|s| {
            Some((
                s.candidate.instance.instance_id.clone(),
                s.candidate.instance.private_ip.clone()?,
            ))
        })
        .collect();
    let domain = desired.fleet.internal_domain.as_str();
    // Checked nodes, with their version and what the answer showed.
    struct Ready {
        s: Screened,
        version: Version,
        verified: inspect::Verified,
        record: Option<String>,
    }
    let mut ready = Vec::new();
    for s in screened {
        let id = s.candidate.instance.instance_id.clone();
        let leave = |why: Why| LeftAlone {
            instance_id: id.clone(),
            coin: Some(s.coin.clone()),
            why,
        };
        let answer = match reports.get(&id) {
            Some(Ok(a)) => NodeReport::parse(a),
            Some(Err(e)) => {
                out.left_alone
                    .push(leave(Why::NotInspected { error: e.clone() }));
                continue;
            }
            None => {
                out.left_alone.push(leave(Why::NotInspected {
                    error: "no answer".into(),
                }));
                continue;
            }
        };
        let version = match answer.version() {
            Ok(v) => v,
            Err(reason) => {
                out.left_alone.push(leave(Why::NoVersion { reason }));
                continue;
            }
        };
        let verified = match inspect::verify(&desired.coins[&s.coin], &answer) {
            Ok(v) => v,
            Err(reason) => {
                out.left_alone.push(leave(Why::Unsafe { reason }));
                continue;
            }
        };
        let records: Vec<String> = match &s.candidate.instance.private_ip {
            Some(ip) => dns
                .iter()
                .filter(|r| r.values.iter().any(|v| v == ip))
                .filter(|r| tags::node_record_coin(&r.name, domain) == Some(s.coin.as_str()))
                .map(|r| r.name.clone())
                .collect(),
            None => vec![],
        };
        if records.len() > 1 {
            out.left_alone.push(leave(Why::SeveralRecords { records }));
            continue;
        }
        ready.push(Ready {
            record: records.into_iter().next(),
            s,
            version,
            verified,
        });
    }
    // Claims by record first, then the lowest free index of the zone, in instance id order.
    let slot_named = |coin: &str, name: &str| -> Option<&NodeSlot> {
        desired.coins[coin]
            .nodes
            .iter()
            .find(|n| n.dns_name == name)
    };
    let mut claims: BTreeMap<NodeKey, Vec<usize>> = BTreeMap::new();
    let mut unclaimed = Vec::new();
    for (i, r) in ready.iter().enumerate() {
        match r.record.as_deref().and_then(|n| slot_named(&r.s.coin, n)) {
            Some(slot) if slot.zone.as_str() == r.s.candidate.zone => {
                claims.entry(NodeKey::of(slot)).or_default().push(i)
            }
            Some(slot) => out.left_alone.push(LeftAlone {
                instance_id: r.s.candidate.instance.instance_id.clone(),
                coin: Some(r.s.coin.clone()),
                why: Why::RecordOfOtherZone {
                    record: slot.dns_name.clone(),
                    slot_zone: slot.zone.to_string(),
                },
            }),
            // No record, or one that names no slot of the repository's.
            None => unclaimed.push(i),
        }
    }
    // The slots whose records point at a node left alone, here or by `screen`: nobody's.
    let mut held_ips = held.clone();
    held_ips.extend(
        out.left_alone
            .iter()
            .filter_map(|l| ip_of.get(&l.instance_id).cloned()),
    );
    let blocked: BTreeSet<NodeKey> = dns
        .iter()
        .filter(|r| r.values.iter().any(|v| held_ips.contains(v)))
        .filter_map(|r| desired.nodes().find(|n| n.dns_name == r.name))
        .map(NodeKey::of)
        .collect();
    let mut given: BTreeMap<NodeKey, (usize, SlotFrom)> = BTreeMap::new();
    let mut taken = taken.clone();
    for (key, who) in claims {
        if taken.contains(&key) || blocked.contains(&key) || who.len() > 1 {
            for &i in &who {
                let mut others: Vec<String> = who
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| ready[j].s.candidate.instance.instance_id.clone())
                    .collect();
                if taken.contains(&key) {
                    others.push("a node fleet manages".into());
                }
                if blocked.contains(&key) {
                    others.push("an instance left alone".into());
                }
                out.left_alone.push(LeftAlone {
                    instance_id: ready[i].s.candidate.instance.instance_id.clone(),
                    coin: Some(ready[i].s.coin.clone()),
                    why: Why::SameSlot {
                        slot: key.to_string(),
                        others,
                    },
                });
            }
            // Nobody else gets it either: the slot stays as it is until a person decides.
            taken.insert(key);
            continue;
        }
        taken.insert(key.clone());
        given.insert(key, (who[0], SlotFrom::Record));
    }
    taken.extend(blocked);
    unclaimed.sort_by(|a, b| {
        ready[*a]
            .s
            .candidate
            .instance
            .instance_id
            .cmp(&ready[*b].s.candidate.instance.instance_id)
    });
    for i in unclaimed {
        let r = &ready[i];
        let coin = &desired.coins[&r.s.coin];
        let free = coin
            .nodes
            .iter()
            .filter(|n| n.zone.as_str() == r.s.candidate.zone)
            .map(NodeKey::of)
            .find(|k| !taken.contains(k));
        match free {
            Some(k) => {
                taken.insert(k.clone());
                given.insert(k, (i, SlotFrom::FreeIndex));
            }
            None => out.left_alone.push(LeftAlone {
                instance_id: r.s.candidate.instance.instance_id.clone(),
                coin: Some(r.s.coin.clone()),
                why: Why::NoFreeSlot {
                    wanted: coin.nodes_per_zone,
                },
            }),
        }
    }
    for (key, (i, slot_from)) in given {
        let r = &ready[i];
        let coin = &desired.coins[&r.s.coin];
        let Some(slot) = coin.nodes.iter().find(|n| NodeKey::of(n) == key) else {
            continue;
        };
        let (config, config_keys) = match NodeFiles::of(coin, slot) {
            Ok(files) => inspect::recorded_config(&files, &r.verified),
            Err(e) => {
                out.left_alone.push(LeftAlone {
                    instance_id: r.s.candidate.instance.instance_id.clone(),
                    coin: Some(r.s.coin.clone()),
                    why: Why::Unsafe {
                        reason: format!("{}: {e}", coin.file),
                    },
                });
                continue;
            }
        };
        out.adopted.push(Adoptee {
            instance_id: r.s.candidate.instance.instance_id.clone(),
            dns_name: slot.dns_name.clone(),
            slot: key,
            slot_from,
            volume_id: r.s.data_volume.volume_id.clone(),
            root_volume_id: r
                .s
                .candidate
                .instance
                .root_volume
                .as_ref()
                .map(|v| v.volume_id.clone()),
            version: r.version.clone(),
            differences: r.verified.differences.clone(),
            from_secret: r.verified.from_secret,
            config,
            config_keys,
            coin_tags: tags::coin_tags_record(coin.tags.keys().map(|k| k.as_str())),
        });
    }
    out.left_alone
        .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    out
}

/// The instances of an observation as they would be once `adoption` is recorded: what a dry
/// run plans against.
pub fn as_adopted(adoption: &Adoption, screened: &[Screened]) -> Vec<ObservedInstance> {
    adoption
        .adopted
        .iter()
        .filter_map(|a| {
            let s = screened
                .iter()
                .find(|s| s.candidate.instance.instance_id == a.instance_id)?;
            let mut t = s.candidate.instance.tags.clone();
            for (k, v) in a.instance_tags() {
                t.insert(k.to_string(), v);
            }
            Some(
                s.candidate
                    .instance
                    .clone()
                    .with_tags(t)
                    .with_data_volume(Some(s.data_volume.clone())),
            )
        })
        .collect()
}

/// What one `fleet adopt` did.
#[derive(Debug, Clone)]
pub struct Report {
    /// What it found.
    pub adoption: Adoption,
    /// Candidates the provider listed.
    pub candidates: usize,
    /// Nodes whose tags were written (0 in a dry run).
    pub written: usize,
    /// The node whose tags could not be written, and why: the run stopped there (a next
    /// run goes on from it).
    pub failed: Option<(String, crate::provider::ProviderError)>,
    /// The fleet as the plan after adoption sees it: observed again after writing, or, in a
    /// dry run, the observation with the adoption's tags applied in memory.
    pub observed: crate::plan::Observed,
    /// API calls the run made, adopting and observing after.
    pub api_calls: u64,
}

/// `fleet adopt` on `provider`: find, screen, inspect, assign, and (unless `dry_run`) write
/// the tags, node by node, stopping at the first that cannot be written.
pub async fn run(
    provider: &dyn crate::provider::Provider,
    desired: &Desired,
    matcher: &Matcher,
    dry_run: bool,
) -> Result<Report, crate::provider::ProviderError> {
    let before = provider.api_calls();
    let observation = provider
        .observe(&crate::provider::Scope::of_desired(desired))
        .await?;
    let managed = crate::plan::Observed::assign(desired, observation.clone());
    let taken: BTreeSet<NodeKey> = managed.nodes.iter().map(|n| n.key.clone()).collect();
    let values: Vec<String> = desired.coins.keys().map(|c| matcher.value_for(c)).collect();
    let candidates = provider.unmanaged(&matcher.key, &values).await?;
    let n = candidates.len();
    let ip_of: BTreeMap<String, String> = candidates
        .iter()
        .filter_map(|c| {
            Some((
                c.instance.instance_id.clone(),
                c.instance.private_ip.clone()?,
            ))
        })
        .collect();
    let (screened, mut left) = screen(desired, matcher, candidates);
    let held: BTreeSet<String> = left
        .iter()
        .filter_map(|l| ip_of.get(&l.instance_id).cloned())
        .collect();
    let ids: Vec<String> = screened
        .iter()
        .map(|s| s.candidate.instance.instance_id.clone())
        .collect();
    let reports = if ids.is_empty() {
        BTreeMap::new()
    } else {
        provider.inspect(&ids, inspect::INSPECT_SCRIPT).await?
    };
    let mut adoption = assign(
        desired,
        screened.clone(),
        &reports,
        &observation.dns,
        &taken,
        &held,
    );
    adoption.left_alone.append(&mut left);
    adoption
        .left_alone
        .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let (written, failed) = if dry_run || adoption.adopted.is_empty() {
        (0, None)
    } else {
        provider.adopt(&adoption.adopted).await
    };
    let observed = if dry_run {
        let mut o = observation;
        o.instances.extend(as_adopted(&adoption, &screened));
        o.instances
            .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        crate::plan::Observed::assign(desired, o)
    } else {
        crate::apply::view::observe(provider, desired).await?
    };
    Ok(Report {
        adoption,
        candidates: n,
        written,
        failed,
        observed,
        api_calls: provider.api_calls() - before,
    })
}

#[cfg(test)]
mod tests;
