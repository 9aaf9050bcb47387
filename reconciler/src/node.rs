//! What names a node everywhere in the engine: its slot, `(coin, zone, index)`.
//!
//! One type for the planner, the executor, the providers, the journal and the notifier, built
//! only from validated parts: a [`NodeKey`] read back from AWS tags has passed the same
//! coin-name and zone rules as one made from the fleet repository.

use fleet_repo_schema::NodeSlot;
use fleet_repo_schema::values::{CoinName, Zone};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of a node, as recorded in its tags: coin, zone, index within the zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeKey {
    /// Coin name.
    pub coin: CoinName,
    /// Availability zone.
    pub zone: Zone,
    /// 1-based index within the zone.
    pub index: u32,
}

impl NodeKey {
    /// The key of a desired slot.
    pub fn of(slot: &NodeSlot) -> NodeKey {
        NodeKey {
            coin: slot.coin.clone(),
            zone: slot.zone.clone(),
            index: slot.index,
        }
    }

    /// A key from its three parts as text (tags, tests), each checked by its rule.
    pub fn parse(coin: &str, zone: &str, index: u32) -> Result<NodeKey, String> {
        Ok(NodeKey {
            coin: CoinName::parse(coin).map_err(|e| format!("coin {coin:?}: {e}"))?,
            zone: Zone::parse(zone).map_err(|e| format!("zone {zone:?}: {e}"))?,
            index,
        })
    }
}

impl NodeKey {
    /// The key written as its `Display` (`coin/zone/index`), as the journal keeps it.
    pub fn from_display(s: &str) -> Option<NodeKey> {
        let mut parts = s.split('/');
        let (coin, zone, index) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        NodeKey::parse(coin, zone, index.parse().ok()?).ok()
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.coin, self.zone, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_shown_as_slots() {
        let k = NodeKey::parse("bitcoin", "eu-central-1a", 2).unwrap();
        assert_eq!(k.to_string(), "bitcoin/eu-central-1a/2");
        assert!(NodeKey::parse("Bit coin", "eu-central-1a", 1).is_err());
        assert!(NodeKey::parse("bitcoin", "", 1).is_err());
        // Serialized as plain strings, as before the parts were typed.
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            r#"{"coin":"bitcoin","zone":"eu-central-1a","index":2}"#
        );
        let bad = r#"{"coin":"x y","zone":"eu-central-1a","index":2}"#;
        assert!(serde_json::from_str::<NodeKey>(bad).is_err());
        // Read back from its Display, as the journal keeps it.
        assert_eq!(NodeKey::from_display(&k.to_string()), Some(k));
        for bad in [
            "bitcoin/eu-central-1a",
            "bitcoin/eu-central-1a/x",
            "a/b/1/2",
        ] {
            assert_eq!(NodeKey::from_display(bad), None, "{bad}");
        }
    }
}
