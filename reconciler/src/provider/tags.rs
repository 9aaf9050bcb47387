//! The tags that record ownership, identity and version in AWS. They are the only record
//! fleet keeps in AWS itself; ARCHITECTURE.md documents them for operators.
//!
//! | tag | on | value |
//! |---|---|---|
//! | `fleet:managed` | instance, volumes, snapshots | `true`: fleet owns it |
//! | `fleet:coin` | instance, volumes, snapshots | coin name |
//! | `fleet:zone` | instance, volumes, snapshots | availability zone |
//! | `fleet:index` | instance, volumes, snapshots | index within the zone, from 1 |
//! | `fleet:version` | instance | version running, written only after the start succeeded |
//! | `fleet:pending` | instance | `<step>:<target>` while a step is under way |
//! | `fleet:config` | instance | fingerprint of the node's rendered configuration, per part |
//! | `fleet:config-keys` | instance | per setting, hashes of its name and value (empty when they do not fit) |
//! | `fleet:coin-tags` | instance | 4 hex digits of SHA-256 per key of the coin's own tags, sorted |
//! | `fleet:replaces` | instance | on a replacement: the instance it replaces |
//! | `fleet:takes-volume` | instance | on a replacement: the data volume it takes over |
//! | `fleet:reason` | snapshots | why the snapshot was taken |
//! | `Name` | instance | `node<N>.<coin>.<domain>` at launch |

use super::{ObservedVersion, PendingStep};
use crate::node::NodeKey;
use fleet_repo_schema::values::Version;
use fleet_repo_schema::{Coin, NodeSlot};
use std::collections::BTreeMap;

/// `true` on everything fleet owns.
pub const MANAGED: &str = "fleet:managed";
/// Coin name.
pub const COIN: &str = "fleet:coin";
/// Availability zone.
pub const ZONE: &str = "fleet:zone";
/// Index within the zone.
pub const INDEX: &str = "fleet:index";
/// Version running (after success only).
pub const VERSION: &str = "fleet:version";
/// A step under way.
pub const PENDING: &str = "fleet:pending";
/// The fingerprint of the node's rendered configuration ([`crate::node_config::Fingerprint`]),
/// written at launch and after each reconfiguration.
pub const CONFIG: &str = "fleet:config";
/// Per setting of the node's configuration, short hashes of its name and value
/// ([`crate::node_config::KeyPrint`]): what lets the plan name the settings that differ.
/// Written with [`CONFIG`].
pub const CONFIG_KEYS: &str = "fleet:config-keys";
/// Which of the instance's tags are the coin's (16-bit hashes of their keys,
/// [`coin_tags_record`]): what lets fleet delete a tag the coin file no longer lists, and
/// never one someone else wrote.
pub const COIN_TAGS: &str = "fleet:coin-tags";
/// On an instance launched to replace another (a new `node_ami`): the instance it replaces.
pub const REPLACES: &str = "fleet:replaces";
/// On a replacement: the data volume it takes over from the instance it replaces.
pub const TAKES_VOLUME: &str = "fleet:takes-volume";
/// Why a snapshot was taken.
pub const REASON: &str = "fleet:reason";
/// On an instance: the snapshot its data volume was last restored from (a rollback with
/// `rollout.on_failure: restore`).
pub const RESTORED: &str = "fleet:restored";
/// On a data volume a restore took off its instance: that instance (the volume is kept,
/// detached, for a person to look at or delete).
pub const RESTORED_AWAY: &str = "fleet:restored-away";
/// On a volume made by a restore: the volume it replaces (how a repeat finds it).
pub const RESTORES: &str = "fleet:restores";
/// On an instance whose daemon, back in sync after fleet started a version, reported
/// another one: `<version>@<digest or ->=<reported>` ([`image_runs`]). While it describes
/// the coin's version and digest, the planner refuses the coin instead of restarting the
/// node on the same image again; a new version or digest makes it stale.
pub const IMAGE_RUNS: &str = "fleet:image-runs";

/// The [`IMAGE_RUNS`] value: the image of `version` (pinned at `digest`) runs `reported`.
pub fn image_runs(version: &str, digest: Option<&str>, reported: &str) -> String {
    format!("{version}@{}={reported}", digest.unwrap_or("-"))
}

/// What an [`IMAGE_RUNS`] value says the image of `version` (pinned at `digest`) runs; None
/// when it is about another version or digest (stale) or unreadable.
pub fn image_runs_of(
    value: &str,
    version: &str,
    digest: Option<&str>,
) -> Option<crate::health::DaemonVersion> {
    value
        .strip_prefix(image_runs(version, digest, "").as_str())
        .and_then(crate::health::DaemonVersion::from_client)
}

/// 16 bits of SHA-256 of a tag key, as 4 hex digits.
fn key_hash(key: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(key.as_bytes());
    format!("{:02x}{:02x}", d[0], d[1])
}

/// The [`COIN_TAGS`] value for a coin listing `keys`: their hashes, sorted, without
/// separators (at most 41 keys: 164 characters, within a tag value's 256).
pub fn coin_tags_record<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut h: Vec<String> = keys.map(key_hash).collect();
    h.sort();
    h.dedup();
    h.concat()
}

/// Whether `record` (a [`COIN_TAGS`] value) says `key` is a tag fleet wrote for the coin.
pub fn recorded_coin_tag(record: &str, key: &str) -> bool {
    let h = key_hash(key);
    record.is_ascii()
        && record.len().is_multiple_of(4)
        && (0..record.len()).step_by(4).any(|i| record[i..i + 4] == h)
}

/// The tags of a new node: the coin's own tags, then fleet's (which win).
pub fn for_node(coin: &Coin, slot: &NodeSlot) -> BTreeMap<String, String> {
    let mut t: BTreeMap<String, String> = coin
        .tags
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
        .collect();
    t.insert("Name".into(), slot.dns_name.clone());
    t.insert(MANAGED.into(), "true".into());
    t.insert(COIN.into(), slot.coin.to_string());
    t.insert(ZONE.into(), slot.zone.to_string());
    t.insert(INDEX.into(), slot.index.to_string());
    t.insert(VERSION.into(), coin.version.to_string());
    t.insert(
        COIN_TAGS.into(),
        coin_tags_record(coin.tags.keys().map(|k| k.as_str())),
    );
    t
}

/// The identity in `tags`, or what is wrong with it.
pub fn node_key(tags: &BTreeMap<String, String>) -> Result<NodeKey, String> {
    let get = |k: &str| {
        tags.get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("tag {k} is missing"))
    };
    let coin = get(COIN)?;
    let zone = get(ZONE)?;
    let index_s = get(INDEX)?;
    let index: u32 = index_s
        .parse()
        .map_err(|_| format!("tag {INDEX}={index_s:?} is not a number"))?;
    NodeKey::parse(coin, zone, index).map_err(|e| format!("tags {COIN}/{ZONE}: {e}"))
}

/// The version in `tags`: known only with a valid `fleet:version` and no step pending.
pub fn version(tags: &BTreeMap<String, String>, pending: Option<&PendingStep>) -> ObservedVersion {
    if let Some(p) = pending {
        return ObservedVersion::Unknown {
            reason: format!("{p} began and did not finish (tag {PENDING})"),
        };
    }
    match tags.get(VERSION) {
        None => ObservedVersion::Unknown {
            reason: format!("tag {VERSION} is missing"),
        },
        Some(v) => match Version::parse(v) {
            Ok(version) => ObservedVersion::Known { version },
            Err(_) => ObservedVersion::Unknown {
                reason: format!("tag {VERSION}={v:?} is not a valid version"),
            },
        },
    }
}

/// Parse `node<N>.<coin>.<domain>` (no trailing dot): the coin, if the name is a node record.
pub fn node_record_coin<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    let rest = name.strip_suffix(domain)?.strip_suffix('.')?;
    let (node, coin) = rest.split_once('.')?;
    let n = node.strip_prefix("node")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || coin.contains('.') {
        return None;
    }
    Some(coin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_runs_is_read_only_for_its_own_version_and_digest() {
        let v = image_runs("0.21.4", None, "0.21.3");
        assert_eq!(v, "0.21.4@-=0.21.3");
        let r = image_runs_of(&v, "0.21.4", None).map(|d| d.to_string());
        assert_eq!(r.as_deref(), Some("0.21.3"));
        assert_eq!(image_runs_of(&v, "0.21.5", None), None);
        assert_eq!(image_runs_of(&v, "0.21.4", Some("sha256:ab")), None);
        assert_eq!(image_runs_of("garbage", "0.21.4", None), None);
    }

    #[test]
    fn node_records_are_recognised() {
        assert_eq!(
            node_record_coin("node1.bitcoin.internal", "internal"),
            Some("bitcoin")
        );
        assert_eq!(node_record_coin("api.bitcoin.internal", "internal"), None);
        assert_eq!(node_record_coin("node1.a.b.internal", "internal"), None);
        assert_eq!(node_record_coin("node.bitcoin.internal", "internal"), None);
        assert_eq!(
            node_record_coin("node1.bitcoin.xinternal", "internal"),
            None
        );
    }

    #[test]
    fn a_replacement_mark_reads_back_with_or_without_its_attempt() {
        let with = PendingStep::Replace {
            ami: "ami-0123456789abcdef0".into(),
            attempt: "18c2f".into(),
        };
        assert_eq!(with.to_tag(), "replace:ami-0123456789abcdef0:18c2f");
        assert_eq!(PendingStep::from_tag(&with.to_tag()), with);
        // Marks written before attempts were (and the simulator's) have none.
        assert_eq!(
            PendingStep::from_tag("replace:ami-0123456789abcdef0"),
            PendingStep::Replace {
                ami: "ami-0123456789abcdef0".into(),
                attempt: String::new(),
            }
        );
    }

    #[test]
    fn version_is_unknown_while_a_step_is_pending() {
        let mut t = BTreeMap::new();
        t.insert(VERSION.to_string(), "28.1".to_string());
        assert!(version(&t, None).known().is_some());
        let p = PendingStep::from_tag("upgrade:29.0");
        assert!(version(&t, Some(&p)).known().is_none());
        t.insert(VERSION.to_string(), "bad version".to_string());
        assert!(version(&t, None).known().is_none());
    }
}
