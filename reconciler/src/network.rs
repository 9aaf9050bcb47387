//! A coin's own security group: the inbound rules its `ports` ask for ([`CoinNetwork::of`]),
//! the group as observed ([`ObservedGroup`]), and what differs ([`CoinNetwork::diff`]).
//!
//! fleet owns the group it makes for a coin (named `fleet-<coin>`, tagged `fleet:managed` and
//! `fleet:coin` in the fleet's VPC): its inbound rules are exactly the desired ones, anything
//! else in it is revoked. P2P ports are open to every IPv4 address (TCP and UDP: discovery of
//! the ethereum family is UDP); RPC ports only to fleet.yaml's `network.rpc_from`, and no rule
//! at all when that is empty (then only the fleet-wide groups let RPC in). Outbound rules are
//! left as EC2 makes them (all allowed: nodes talk to peers, the registry and AWS). The
//! fleet-wide `network.security_groups` still attach to every node; their rules are not
//! fleet's.
//!
//! Pure: the providers read and write groups, the planner compares them here.

use fleet_repo_schema::{Coin, Fleet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Everywhere on IPv4: where P2P is open to.
pub const ANYWHERE: &str = "0.0.0.0/0";

/// An IP protocol of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Anything else as EC2 names it (`-1` for all, `icmp`, a number): only ever observed in
    /// a rule someone else added, which fleet revokes.
    Other(String),
}

impl Protocol {
    /// EC2's name (`IpProtocol`).
    pub fn as_str(&self) -> &str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Other(s) => s,
        }
    }
    /// From EC2's name (or number: 6 and 17 are TCP and UDP).
    pub fn parse(s: &str) -> Protocol {
        match s {
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            other => Protocol::Other(other.to_string()),
        }
    }
}

/// Where a rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Source {
    /// An IPv4 network (`CidrIp`).
    Ipv4(String),
    /// An IPv6 network (`CidrIpv6`); only observed.
    Ipv6(String),
    /// Another security group (`UserIdGroupPairs`); only observed.
    Group(String),
    /// A managed prefix list; only observed.
    PrefixList(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ipv4(c) | Source::Ipv6(c) => f.write_str(c),
            Source::Group(g) => write!(f, "group {g}"),
            Source::PrefixList(p) => write!(f, "prefix list {p}"),
        }
    }
}

/// One inbound rule: a protocol, a port range and one source (EC2 groups several sources in
/// one permission; fleet keeps them apart, so a rule is added or revoked on its own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IngressRule {
    /// Protocol.
    pub protocol: Protocol,
    /// First port (EC2's `FromPort`; -1 for all).
    pub from_port: i32,
    /// Last port.
    pub to_port: i32,
    /// Where from.
    pub source: Source,
}

impl IngressRule {
    fn port(protocol: Protocol, port: u16, cidr: &str) -> IngressRule {
        IngressRule {
            protocol,
            from_port: port.into(),
            to_port: port.into(),
            source: Source::Ipv4(cidr.to_string()),
        }
    }
}

impl fmt::Display for IngressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.protocol.as_str())?;
        if self.from_port == self.to_port {
            write!(f, "{}", self.from_port)?;
        } else {
            write!(f, "{}-{}", self.from_port, self.to_port)?;
        }
        write!(f, " from {}", self.source)
    }
}

/// A coin's group as it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinNetwork {
    /// The coin.
    pub coin: String,
    /// The fleet's VPC, where the group is made.
    pub vpc_id: String,
    /// Its inbound rules, sorted, each once.
    pub rules: Vec<IngressRule>,
}

impl CoinNetwork {
    /// The group `coin` should have in `fleet`'s VPC.
    pub fn of(fleet: &Fleet, coin: &Coin) -> CoinNetwork {
        let mut rules = BTreeSet::new();
        for &p in &coin.p2p_ports {
            rules.insert(IngressRule::port(Protocol::Tcp, p, ANYWHERE));
            rules.insert(IngressRule::port(Protocol::Udp, p, ANYWHERE));
        }
        for &p in &coin.rpc_ports {
            for cidr in &fleet.rpc_from {
                rules.insert(IngressRule::port(Protocol::Tcp, p, cidr.as_str()));
            }
        }
        CoinNetwork {
            coin: coin.name.to_string(),
            vpc_id: fleet.vpc_id.to_string(),
            rules: rules.into_iter().collect(),
        }
    }

    /// The group's name, `fleet-<coin>` (unique in a VPC, so a second fleet in the same VPC
    /// with a coin of the same name is refused by EC2 rather than sharing the group).
    pub fn group_name(&self) -> String {
        format!("fleet-{}", self.coin)
    }

    /// The group's description (fixed at creation by EC2).
    pub fn description(&self) -> String {
        format!(
            "fleet: {} nodes (P2P from anywhere, RPC from network.rpc_from)",
            self.coin
        )
    }

    /// The group's tags: ownership and its name.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                crate::provider::tags::MANAGED.to_string(),
                "true".to_string(),
            ),
            (crate::provider::tags::COIN.to_string(), self.coin.clone()),
            ("Name".to_string(), self.group_name()),
        ])
    }

    /// Rules to add and rules to revoke to make `have` this.
    pub fn diff(&self, have: &[IngressRule]) -> RuleChange {
        let have: BTreeSet<&IngressRule> = have.iter().collect();
        let want: BTreeSet<&IngressRule> = self.rules.iter().collect();
        RuleChange {
            add: want.difference(&have).map(|r| (*r).clone()).collect(),
            revoke: have.difference(&want).map(|r| (*r).clone()).collect(),
        }
    }

    /// The group of this coin among `groups`, if observed: the one in the fleet's VPC
    /// (the smallest id, should there be two).
    pub fn find<'a>(&self, groups: &'a [ObservedGroup]) -> Option<&'a ObservedGroup> {
        groups
            .iter()
            .filter(|g| g.coin.as_deref() == Some(self.coin.as_str()) && g.vpc_id == self.vpc_id)
            .min_by(|a, b| a.group_id.cmp(&b.group_id))
    }
}

/// What differs between a group's rules and the wanted ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleChange {
    /// Missing rules.
    pub add: Vec<IngressRule>,
    /// Rules that should not be there.
    pub revoke: Vec<IngressRule>,
}

impl RuleChange {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.revoke.is_empty()
    }
}

/// A security group tagged `fleet:managed`, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedGroup {
    /// Group id.
    pub group_id: String,
    /// Group name.
    pub name: String,
    /// Its `fleet:coin` tag.
    pub coin: Option<String>,
    /// Its VPC.
    pub vpc_id: String,
    /// Its inbound rules, sorted.
    pub rules: Vec<IngressRule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(rules: Vec<IngressRule>) -> CoinNetwork {
        CoinNetwork {
            coin: "bitcoin".into(),
            vpc_id: "vpc-1".into(),
            rules,
        }
    }

    #[test]
    fn the_diff_adds_what_is_missing_and_revokes_what_is_not_wanted() {
        let p2p = IngressRule::port(Protocol::Tcp, 8333, ANYWHERE);
        let rpc = IngressRule::port(Protocol::Tcp, 8332, "10.0.0.0/16");
        let stray = IngressRule {
            protocol: Protocol::Other("-1".into()),
            from_port: -1,
            to_port: -1,
            source: Source::Group("sg-1".into()),
        };
        let d = net(vec![p2p.clone(), rpc.clone()]).diff(&[rpc.clone(), stray.clone()]);
        assert_eq!(d.add, vec![p2p.clone()]);
        assert_eq!(d.revoke, vec![stray]);
        assert!(net(vec![p2p.clone()]).diff(&[p2p]).is_empty());
    }

    #[test]
    fn rules_read_as_an_operator_writes_them() {
        assert_eq!(
            IngressRule::port(Protocol::Udp, 30303, ANYWHERE).to_string(),
            "udp 30303 from 0.0.0.0/0"
        );
        let range = IngressRule {
            protocol: Protocol::parse("6"),
            from_port: 1000,
            to_port: 2000,
            source: Source::Group("sg-9".into()),
        };
        assert_eq!(range.to_string(), "tcp 1000-2000 from group sg-9");
    }

    #[test]
    fn the_group_of_a_coin_is_the_one_in_the_fleets_vpc() {
        let g = |id: &str, coin: &str, vpc: &str| ObservedGroup {
            group_id: id.into(),
            name: format!("fleet-{coin}"),
            coin: Some(coin.into()),
            vpc_id: vpc.into(),
            rules: vec![],
        };
        let groups = [
            g("sg-3", "bitcoin", "vpc-2"),
            g("sg-2", "bitcoin", "vpc-1"),
            g("sg-1", "litecoin", "vpc-1"),
        ];
        assert_eq!(net(vec![]).find(&groups).unwrap().group_id, "sg-2");
    }
}
