//! Validated scalar types. Each can only be built through its check, so code that holds a
//! [`Version`] knows it matches the version rule (that is what lets the reconciler put it
//! into `systemctl start node@<version>`).

use crate::decode::{Cx, Decode};
use crate::diag::Code;
use crate::yaml::{Node, ScalarKind};
use regex::Regex;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex, PoisonError};

/// Declare a string newtype checked by a regular expression.
macro_rules! pattern_string {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident, $code:expr, $pattern:literal, max $max:literal, $expected:literal, $help:literal;
    )*) => {$(
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The pattern every value matches (also in the JSON Schema).
            pub const PATTERN: &'static str = $pattern;
            /// What a valid value looks like, for error messages.
            pub const EXPECTED: &'static str = $expected;

            /// Check `s` and wrap it.
            pub fn parse(s: &str) -> Result<$name, String> {
                static RE: LazyLock<Regex> = LazyLock::new(|| Regex::new($pattern).expect("valid pattern"));
                if s.chars().count() <= $max && RE.is_match(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(format!("expected {}", $expected))
                }
            }

            /// The value.
            pub fn as_str(&self) -> &str { &self.0 }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str { &self.0 }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool { self.0 == other }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool { self.0 == *other }
        }

        /// Deserializing checks the pattern too: a value read back from a state file or an
        /// API is as trustworthy as one read from the fleet repo.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl Decode for $name {
            fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
                let text = String::decode(node, cx)?;
                match $name::parse(&text) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        let p = cx.path();
                        let shown = show(&text);
                        cx.report($code, node.span,
                            format!("`{p}` is {shown}: expected {}", $expected),
                            $help);
                        None
                    }
                }
            }
            fn schema() -> Json {
                json!({"type": "string", "pattern": $pattern, "maxLength": $max})
            }
        }
    )*};
}

/// Quote a user value for a message, shortened and with control characters escaped.
pub(crate) fn show(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    format!("\"{out}\"")
}

pattern_string! {
    /// A daemon version: the image tag and the `node@<version>` unit instance. It ends up in a
    /// shell command, so nothing outside this pattern may pass.
    Version, Code::Version, r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", max 64,
        "a version of letters, digits, '.', '_', '+', '-' (1-64 characters, starting with a letter or digit)",
        "the version becomes the image tag and the argument of `systemctl start node@<version>`, so only these characters pass: use the upstream version number, e.g. \"28.1\" or 1.14.12";
    /// A pinned image digest.
    Digest, Code::Digest, r"^sha256:[0-9a-f]{64}$", max 71,
        "`sha256:` followed by 64 lowercase hex digits",
        "copy the digest from ECR or `docker buildx imagetools inspect <image>:<version>`, or remove `digest` to run the tag unpinned";
    /// A coin's name: a DNS label, a file name, a tag value.
    CoinName, Code::CoinName, r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$", max 32,
        "1-32 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        "coin names are lowercase DNS labels, e.g. bitcoin or bitcoin-cash";
    /// An AWS region, e.g. `eu-central-1`.
    Region, Code::Identifier, r"^[a-z]{2}(?:-[a-z]+)+-[0-9]+$", max 32,
        "an AWS region such as eu-central-1",
        "use the region code, e.g. eu-central-1, not its name";
    /// An availability zone, e.g. `eu-central-1a` (or a local zone, `us-west-2-lax-1a`).
    Zone, Code::Identifier, r"^[a-z]{2}(?:-[a-z]+)+-[0-9]+(?:-[a-z]+-[0-9]+)?[a-z]$", max 40,
        "an availability zone such as eu-central-1a",
        "use the zone name, e.g. eu-central-1a (not a zone id such as euc1-az1)";
    /// A VPC id.
    VpcId, Code::Identifier, r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$", max 21,
        "a VPC id: vpc- and 8 or 17 hex digits",
        "copy the id from the VPC console or `aws ec2 describe-vpcs`";
    /// A subnet id.
    SubnetId, Code::Identifier, r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$", max 24,
        "a subnet id: subnet- and 8 or 17 hex digits",
        "copy the id from `aws ec2 describe-subnets`";
    /// A security group id.
    SecurityGroupId, Code::Identifier, r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$", max 20,
        "a security group id: sg- and 8 or 17 hex digits",
        "use the group id (sg-…), not its name";
    /// An AMI id.
    AmiId, Code::Identifier, r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$", max 21,
        "an AMI id: ami- and 8 or 17 hex digits",
        "copy the AMI id from the Packer build output or `aws ec2 describe-images`";
    /// A Route53 hosted zone id.
    HostedZoneId, Code::Identifier, r"^[A-Z0-9]{1,32}$", max 32,
        "a Route53 hosted zone id such as Z0123456789ABCDEFGHIJ (up to 32 uppercase letters and digits)",
        "copy the id from `aws route53 list-hosted-zones` without the /hostedzone/ prefix";
    /// An IAM instance profile name.
    InstanceProfile, Code::Identifier, r"^[A-Za-z0-9+=,.@_-]{1,128}$", max 128,
        "an IAM instance profile name (letters, digits and +=,.@_-)",
        "use the instance profile's name, not its ARN";
    /// An image repository without tag or digest, e.g. `123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin`.
    ImageRepo, Code::Identifier, r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$", max 255,
        "an image repository such as 123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin (no tag, no digest)",
        "write the repository without `:tag` or `@digest`: the version is the tag, and `image.digest` pins it";
    /// An EC2 instance type, e.g. `c5.large`.
    InstanceType, Code::Identifier, r"^[a-z][a-z0-9-]*\.[a-z0-9]+$", max 32,
        "an EC2 instance type such as c5.large",
        "use an EC2 instance type name, e.g. c5.large or m6i.2xlarge";
    /// A DNS domain of lowercase labels.
    DomainName, Code::Identifier, r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$", max 200,
        "a DNS name of lowercase labels such as internal or nodes.example.com",
        "use lowercase DNS labels separated by dots, without a trailing dot";
    /// A Slack user id (names and e-mails can change; ids cannot).
    SlackUserId, Code::SlackUserId, r"^[UW][A-Z0-9]{2,20}$", max 21,
        "a Slack user id such as U012ABCDEF",
        "use Slack member ids (profile, \"Copy member ID\"), not names or e-mail addresses";
    /// A Slack channel, by name (`#node-fleet`) or id (`C0123ABCD`).
    SlackChannel, Code::Identifier, r"^(?:#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{2,20})$", max 81,
        "a Slack channel such as #node-fleet or a channel id such as C0123ABCD",
        "write the channel as #name (quoted in YAML: \"#node-fleet\") or its id";
    /// A calendar date, `YYYY-MM-DD` (UTC): a deadline's day.
    Date, Code::Identifier, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", max 10,
        "a date such as 2027-01-15 (YYYY-MM-DD, UTC)",
        "write the day as YYYY-MM-DD, quoted or not: 2027-01-15";
    /// A GitHub repository, `owner/name`.
    GithubRepo, Code::Identifier, r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$", max 140,
        "a GitHub repository as owner/name, e.g. bitcoin/bitcoin",
        "write owner/name as in the repository's URL, e.g. bitcoin/bitcoin";
    /// An AWS Secrets Manager secret name.
    SecretName, Code::Identifier, r"^[A-Za-z0-9/_+=.@-]{1,512}$", max 512,
        "a Secrets Manager secret name (letters, digits and /_+=.@-)",
        "use the secret's name, e.g. nodes/bitcoin/rpc";
    /// An environment variable name.
    EnvName, Code::Identifier, r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", max 128,
        "an environment variable name (letters, digits and _, not starting with a digit)",
        "environment variable names are letters, digits and _, e.g. RPC_PORT";
    /// A Docker log driver.
    LogDriver, Code::Identifier, r"^[a-z0-9][a-z0-9_.-]{0,63}$", max 64,
        "a Docker log driver name such as gelf, awslogs or json-file",
        "use the driver's name as Docker knows it, e.g. gelf";
    /// The name of a Docker log driver option.
    LogOptName, Code::Identifier, r"^[a-z0-9][a-z0-9_.-]{0,63}$", max 64,
        "a Docker log option name such as gelf-address",
        "use the option's name as Docker knows it, e.g. gelf-address";
    /// A custom metric's name.
    MetricName, Code::Identifier, r"^[A-Za-z0-9_.-]{1,128}$", max 128,
        "a metric name (letters, digits and _.-)",
        "use letters, digits and _.- in metric names, e.g. block_height";
    /// A path inside the fleet repository, relative to its root.
    RepoPath, Code::MetricsScript, r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$", max 256,
        "a relative path inside the repository such as metrics/bitcoin.sh",
        "write the path from the repository root, e.g. metrics/bitcoin.sh";
    /// An AWS tag key. (Lengths are checked by `max`, not by `{m,n}` on Unicode classes,
    /// which would compile to a very large automaton.)
    TagKey, Code::Identifier, r"^[\p{L}\p{Z}\p{N}_.:/=+@-]+$", max 128,
        "an AWS tag key (1-128 letters, digits, spaces and _.:/=+-@)",
        "AWS tag keys are 1-128 letters, digits, spaces and _.:/=+-@";
    /// An AWS tag value.
    TagValue, Code::Identifier, r"^[\p{L}\p{Z}\p{N}_.:/=+@-]*$", max 256,
        "an AWS tag value (up to 256 letters, digits, spaces and _.:/=+-@)",
        "AWS tag values are up to 256 letters, digits, spaces and _.:/=+-@";
    /// The path of an HTTP health endpoint.
    HttpPath, Code::Identifier, r"^/[!-~]*$", max 512,
        "an absolute HTTP path such as /api/v1/info, without spaces",
        "write the path of the endpoint starting with /, e.g. /api/core/v2/info";
    /// A JSON pointer (RFC 6901) to a number in a JSON document.
    JsonPointer, Code::Identifier, r"^(?:/(?:[^~/]|~[01])*)+$", max 256,
        "a JSON pointer such as /data/blockHeight",
        "write a JSON pointer (RFC 6901) starting with /, e.g. /status/confirmedMilestone/index";
}

impl Zone {
    /// Whether this zone belongs to `region` (`eu-central-1a` to `eu-central-1`).
    pub fn in_region(&self, region: &Region) -> bool {
        match self.0.strip_prefix(region.as_str()) {
            Some(rest) => {
                (rest.len() == 1 && rest.as_bytes()[0].is_ascii_lowercase())
                    || rest.starts_with('-')
            }
            None => false,
        }
    }
}

/// An environment value written to an env file: one line, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EnvValue(String);

impl EnvValue {
    /// Check `s` and wrap it.
    pub fn parse(s: &str) -> Result<EnvValue, String> {
        if s.chars().count() > 4096 {
            return Err("longer than 4096 characters".into());
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(format!(
                "contains the control character {}",
                c.escape_debug()
            ));
        }
        Ok(EnvValue(s.to_string()))
    }
    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Decode for EnvValue {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let text = String::decode(node, cx)?;
        EnvValue::parse(&text)
            .map_err(|why| {
                let p = cx.path();
                cx.report(
                    Code::EnvValue,
                    node.span,
                    format!("`{p}` {why}"),
                    "env values are single lines: no line breaks, tabs or other control characters",
                );
            })
            .ok()
    }
    fn schema() -> Json {
        json!({"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000-\\u001f\\u007f]*$"})
    }
}

/// An IPv4 network in CIDR notation, such as `10.0.0.0/16`: its address has no bits set
/// beyond the prefix (`10.0.0.1/16` is refused, as EC2 would read it as another network than
/// the one its writer may mean). Where fleet lets RPC in from (`network.rpc_from`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Cidr(String);

impl Cidr {
    /// The syntax (the network-address rule is checked in [`Cidr::parse`]).
    pub const PATTERN: &'static str = r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/(?:3[0-2]|[12]?[0-9])$";

    /// Check `s` and wrap it.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        static RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(Cidr::PATTERN).expect("valid"));
        let expected = || "expected an IPv4 network such as 10.0.0.0/16".to_string();
        if s.len() > 18 || !RE.is_match(s) {
            return Err(expected());
        }
        let (addr, prefix) = s.split_once('/').ok_or_else(expected)?;
        let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| expected())?;
        let prefix: u32 = prefix.parse().map_err(|_| expected())?;
        let bits = u32::from(addr);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if bits & !mask != 0 {
            return Err(format!(
                "has bits set beyond its /{prefix} prefix: the network is {}/{prefix}",
                std::net::Ipv4Addr::from(bits & mask)
            ));
        }
        Ok(Cidr(s.to_string()))
    }
    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Decode for Cidr {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let text = String::decode(node, cx)?;
        Cidr::parse(&text)
            .map_err(|why| {
                let p = cx.path();
                let shown = show(&text);
                cx.report(
                    Code::Identifier,
                    node.span,
                    format!("`{p}` is {shown}: {why}"),
                    "write the network's address and prefix length, e.g. 10.0.0.0/16 for the VPC or 10.0.5.0/24 for the reconciler's subnet",
                );
            })
            .ok()
    }
    fn schema() -> Json {
        json!({"type": "string", "pattern": Cidr::PATTERN, "maxLength": 18})
    }
}

/// Declare an integer newtype with a range.
macro_rules! bounded_int {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident($int:ty), $min:literal ..= $max:literal, $low_code:expr, $high_code:expr;
    )*) => {$(
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub $int);

        impl $name {
            /// Smallest allowed value.
            pub const MIN: $int = $min;
            /// Largest allowed value.
            pub const MAX: $int = $max;
        }

        impl Decode for $name {
            fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
                let v = i128::decode(node, cx)?;
                if v < $min as i128 || v > $max as i128 {
                    let p = cx.path();
                    let code = if v < $min as i128 { $low_code } else { $high_code };
                    cx.report(code, node.span,
                        format!("`{p}` is {v}, outside {}..={}", $min, $max),
                        &format!("use a number from {} to {}", $min, $max));
                    return None;
                }
                Some($name(v as $int))
            }
            fn schema() -> Json {
                json!({"type": "integer", "minimum": $min, "maximum": $max})
            }
        }
    )*};
}

bounded_int! {
    /// A TCP port.
    Port(u16), 1 ..= 65535, Code::PortRange, Code::PortRange;
    /// Nodes per availability zone.
    NodesPerZone(u32), 1 ..= 100, Code::NodesPerZone, Code::OutOfRange;
    /// Nodes of a coin that may be down at once.
    MaxUnavailable(u32), 1 ..= 1000, Code::MaxUnavailable, Code::OutOfRange;
    /// Root volume size in GiB.
    RootVolumeGb(u32), 8 ..= 16384, Code::OutOfRange, Code::OutOfRange;
    /// Data volume size in GiB (gp3/io2 allow up to 64 TiB).
    DataVolumeGb(u32), 1 ..= 65536, Code::OutOfRange, Code::OutOfRange;
    /// Blocks a node may trail the reference height by.
    LagBlocks(u64), 0 ..= 1000000, Code::OutOfRange, Code::OutOfRange;
    /// A share in percent.
    Percent(u32), 0 ..= 100, Code::OutOfRange, Code::OutOfRange;
    /// Nodes that must be in sync for a coin to count as served.
    MinSynced(u32), 0 ..= 10000, Code::OutOfRange, Code::OutOfRange;
    /// A block height (a deadline's activation height).
    BlockHeight(u64), 1 ..= 1000000000, Code::OutOfRange, Code::OutOfRange;
    /// Scheduled snapshots kept per coin.
    SnapshotsKept(u32), 1 ..= 1000, Code::OutOfRange, Code::OutOfRange;
    /// Heals of a coin's nodes allowed in 24 hours.
    HealsPerDay(u32), 1 ..= 100, Code::OutOfRange, Code::OutOfRange;
    /// How full a data volume may get before fleet grows it, in percent.
    GrowAt(u32), 50 ..= 99, Code::OutOfRange, Code::OutOfRange;
    /// How much a grown data volume gains at least, in percent of its size.
    GrowBy(u32), 5 ..= 100, Code::OutOfRange, Code::OutOfRange;
    /// Days a data volume must have left at its growth rate.
    DaysLeft(u32), 1 ..= 3650, Code::OutOfRange, Code::OutOfRange;
}

impl Date {
    /// Midnight UTC of the day, in unix milliseconds; None when no such day exists
    /// (2027-02-30) or it is before 1970.
    pub fn unix_ms(&self) -> Option<u64> {
        let t = self.as_str();
        let (y, m, d): (i64, i64, i64) = (
            t.get(0..4)?.parse().ok()?,
            t.get(5..7)?.parse().ok()?,
            t.get(8..10)?.parse().ok()?,
        );
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days_in = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
            return None;
        }
        // Days from the civil date (Howard Hinnant's days_from_civil).
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        u64::try_from(days).ok().map(|d| d * 86_400_000)
    }
}

/// A section that is either written out or switched off with the word `off` (`heal: off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrOff<T> {
    /// `off`.
    Off,
    /// The section.
    On(T),
}

impl<T> OrOff<T> {
    /// The section, when not `off`.
    pub fn on(&self) -> Option<&T> {
        match self {
            OrOff::Off => None,
            OrOff::On(t) => Some(t),
        }
    }
}

impl<T: Decode> Decode for OrOff<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match node.scalar() {
            Some(s) if s.kind() == ScalarKind::Str && s.text == "off" => Some(OrOff::Off),
            // A setting that is a value itself (`replace_after: 1h`) reads it.
            Some(_) if T::schema().get("type").and_then(Json::as_str) != Some("object") => {
                T::decode(node, cx).map(OrOff::On)
            }
            Some(s) => {
                let p = cx.path();
                let shown = show(&s.text);
                cx.report(
                    Code::WrongType,
                    node.span,
                    format!("`{p}` is {shown}: expected `off` or a mapping of settings"),
                    &format!("write `{p}: off` to switch it off, or its settings as a mapping"),
                );
                None
            }
            None => T::decode(node, cx).map(OrOff::On),
        }
    }
    fn schema() -> Json {
        json!({"oneOf": [{"const": "off"}, T::schema()]})
    }
}

/// A duration written as `30s`, `10m`, `12h`, `2d`, `1w` or combinations (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parse `30s`, `10m`, `1h30m`… Up to 10 years; at least one part.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let mut total: u64 = 0;
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err("empty".into());
        }
        while !rest.is_empty() {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!("expected a number at `{rest}`"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| "number too large".to_string())?;
            rest = &rest[digits..];
            let unit = rest
                .chars()
                .next()
                .ok_or("a number needs a unit (s, m, h, d, w)")?;
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return Err(format!("unknown unit `{unit}` (use s, m, h, d or w)")),
            };
            rest = &rest[1..];
            total = n
                .checked_mul(secs)
                .and_then(|v| total.checked_add(v))
                .filter(|v| *v <= 10 * 365 * 86_400)
                .ok_or("longer than 10 years")?;
        }
        Ok(Duration(std::time::Duration::from_secs(total)))
    }

    /// Whole seconds.
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for Duration {
    /// The shortest spelling in the YAML syntax (`90s` is shown as `1m30s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0.as_secs();
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in [
            ("w", 604_800),
            ("d", 86_400),
            ("h", 3600),
            ("m", 60),
            ("s", 1),
        ] {
            if s >= len {
                write!(f, "{}{unit}", s / len)?;
                s %= len;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Decode for Duration {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let text = match node.scalar() {
            Some(s) if matches!(s.kind(), ScalarKind::Str | ScalarKind::Int) => s.text.clone(),
            _ => {
                cx.wrong_type(node, "a duration such as 10m");
                return None;
            }
        };
        Duration::parse(&text)
            .map_err(|why| {
                let p = cx.path();
                cx.report(
                    Code::Duration,
                    node.span,
                    format!("`{p}` is {}, not a duration: {why}", show(&text)),
                    "write a number and a unit, e.g. 30s, 10m, 12h, 2d, 1w or 1h30m",
                );
            })
            .ok()
    }
    fn schema() -> Json {
        json!({"type": "string", "pattern": "^([0-9]+[smhdw])+$"})
    }
}

/// What compiling a tag pattern gives: the pattern, or the code and reason of its refusal.
type Compiled = Result<TagPattern, (Code, String)>;
/// Outcomes of [`TagPattern::parse`] by pattern text.
static TAG_PATTERNS: LazyLock<Mutex<HashMap<String, Compiled>>> = LazyLock::new(Mutex::default);
/// Most patterns [`TAG_PATTERNS`] holds (a real fleet has a handful).
const MEMO_ENTRIES: usize = 256;
/// Longer patterns are compiled every time (real ones are under 100 bytes), which bounds
/// the memory the memo holds.
const MEMO_MAX_SOURCE: usize = 256;

/// `upstream.tag_pattern`: a regular expression with a `version` group.
#[derive(Debug, Clone)]
pub struct TagPattern {
    source: String,
    regex: Regex,
}

impl PartialEq for TagPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl TagPattern {
    /// The pattern used when a coin sets none: `v1.2.3`, `1.2`, `v2.0.0-rc.8`…
    pub const DEFAULT: &'static str =
        r"^v?(?P<version>[0-9]+(?:\.[0-9]+)*(?:[-.+]?[A-Za-z0-9.]+)?)$";

    /// Compile `source`; the error says which rule failed.
    ///
    /// Compiling is the most expensive step of loading a coin file (about a million
    /// instructions, most of them for the Unicode classes behind `\d`), and the coins of a
    /// fleet share a handful of tag conventions, so outcomes are memoized by the pattern's
    /// text: a repository of a thousand coins compiles each distinct pattern once. A clone
    /// of a compiled pattern shares its program (`Regex` is reference-counted).
    pub fn parse(source: &str) -> Result<TagPattern, (Code, String)> {
        if source.len() > MEMO_MAX_SOURCE {
            return TagPattern::compile(source);
        }
        let memo = || TAG_PATTERNS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = memo().get(source) {
            return known.clone();
        }
        // Compiled outside the lock: other threads' look-ups don't wait for it.
        let outcome = TagPattern::compile(source);
        let mut memo = memo();
        if memo.len() >= MEMO_ENTRIES {
            // Start over rather than track use: with more distinct patterns than this, the
            // loader does what it did without the memo, and what the memo holds stays small.
            memo.clear();
        }
        memo.insert(source.to_string(), outcome.clone());
        outcome
    }

    fn compile(source: &str) -> Result<TagPattern, (Code, String)> {
        let regex = regex::RegexBuilder::new(source)
            .size_limit(1 << 20)
            .nest_limit(64)
            .build()
            .map_err(|e| {
                let msg = e.to_string();
                let last = msg.lines().last().unwrap_or("").trim().to_string();
                (Code::TagPattern, last)
            })?;
        if !regex.capture_names().flatten().any(|n| n == "version") {
            return Err((
                Code::TagPatternGroup,
                "the pattern has no group named `version`".into(),
            ));
        }
        Ok(TagPattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The version a tag carries, if the tag matches.
    pub fn version_of<'t>(&self, tag: &'t str) -> Option<&'t str> {
        self.regex
            .captures(tag)
            .and_then(|c| c.name("version"))
            .map(|m| m.as_str())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl Default for TagPattern {
    /// [`TagPattern::DEFAULT`], compiled once per process.
    fn default() -> TagPattern {
        static DEFAULT: LazyLock<TagPattern> = LazyLock::new(|| {
            TagPattern::compile(TagPattern::DEFAULT).expect("the default pattern compiles")
        });
        DEFAULT.clone()
    }
}

impl serde::Serialize for TagPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl Decode for TagPattern {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let text = String::decode(node, cx)?;
        TagPattern::parse(&text)
            .map_err(|(code, why)| {
                let p = cx.path();
                let help = if code == Code::TagPatternGroup {
                    r"capture the version in a named group, e.g. '^v(?P<version>\d+\.\d+(?:\.\d+)?)$'"
                } else {
                    "fix the regular expression; in YAML, single-quote it so backslashes stay as written"
                };
                cx.report(code, node.span, format!("`{p}` does not compile: {why}"), help);
            })
            .ok()
    }
    fn schema() -> Json {
        // Not `format: regex`: editors check that as an ECMAScript regex, and Rust's
        // `(?P<version>…)` is not ECMAScript syntax.
        json!({"type": "string", "minLength": 1})
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_deadline_day_is_its_midnight_utc_and_only_real_days_are_days() {
        let d = |s: &str| Date::parse(s).unwrap().unix_ms();
        assert_eq!(d("1970-01-01"), Some(0));
        assert_eq!(d("2027-01-15"), Some(1_799_971_200_000));
        assert_eq!(d("2024-02-29"), Some(1_709_164_800_000));
        for bad in [
            "2023-02-29",
            "2027-13-01",
            "2027-04-31",
            "2027-00-10",
            "1969-12-31",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
        assert!(Date::parse("2027-1-15").is_err());
    }

    #[test]
    fn a_cidr_is_an_ipv4_network_address_with_its_prefix() {
        for ok in [
            "10.0.0.0/16",
            "0.0.0.0/0",
            "192.168.1.7/32",
            "172.16.0.0/12",
        ] {
            assert_eq!(Cidr::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(
            Cidr::parse("10.0.0.1/16").unwrap_err(),
            "has bits set beyond its /16 prefix: the network is 10.0.0.0/16"
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "256.0.0.0/8",
            "::/0",
            "10.0.0.0/16 ",
            "010.0.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn version_rule_rejects_shell_syntax() {
        for ok in [
            "0.20.0",
            "22.0",
            "v1.14.12",
            "2.0.0-rc.8",
            "25.0rc1",
            "1.2.3+build_4",
        ] {
            assert!(Version::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-1",
            ".1",
            "1 2",
            "1;rm -rf /",
            "$(id)",
            "`id`",
            "1/2",
            "a'b",
            "1\n2",
            "1.0\u{0}",
            "é1",
            &"1".repeat(65),
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_pattern_compiles() {
        // parse() compiles its pattern on first use; a pattern that fails would panic there.
        let _ = (
            Version::parse("1"),
            Digest::parse("x"),
            CoinName::parse("x"),
        );
        let _ = (Region::parse("x"), Zone::parse("x"), VpcId::parse("x"));
        let _ = (
            SubnetId::parse("x"),
            SecurityGroupId::parse("x"),
            AmiId::parse("x"),
        );
        let _ = (
            HostedZoneId::parse("x"),
            InstanceProfile::parse("x"),
            ImageRepo::parse("x"),
        );
        let _ = (
            InstanceType::parse("x"),
            DomainName::parse("x"),
            SlackUserId::parse("x"),
        );
        let _ = (
            SlackChannel::parse("x"),
            GithubRepo::parse("x"),
            SecretName::parse("x"),
        );
        let _ = (
            EnvName::parse("x"),
            MetricName::parse("x"),
            RepoPath::parse("x"),
        );
        let _ = (
            TagKey::parse("x"),
            TagValue::parse("x"),
            HttpPath::parse("x"),
        );
        let _ = JsonPointer::parse("x");
        assert!(TagKey::parse("Component").is_ok());
        assert!(TagValue::parse("nodes/bitcoin").is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("10m").unwrap().as_secs(), 600);
        assert_eq!(Duration::parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(Duration::parse("2d").unwrap().as_secs(), 172_800);
        assert_eq!(Duration::parse("0s").unwrap().as_secs(), 0);
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1.5h",
            "-1m",
            "99999999999999999999s",
            "11000d",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
        for s in ["1m30s", "12h", "2d", "1w", "0s"] {
            assert_eq!(Duration::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn zones_and_regions() {
        let r = Region::parse("eu-central-1").unwrap();
        assert!(Zone::parse("eu-central-1a").unwrap().in_region(&r));
        assert!(!Zone::parse("eu-central-2a").unwrap().in_region(&r));
        assert!(!Zone::parse("eu-west-1a").unwrap().in_region(&r));
        let r = Region::parse("us-west-2").unwrap();
        assert!(Zone::parse("us-west-2-lax-1a").unwrap().in_region(&r));
    }

    #[test]
    fn tag_patterns() {
        let p = TagPattern::parse(r"^v(?P<version>\d+\.\d+(?:\.\d+)?)$").unwrap();
        assert_eq!(p.version_of("v0.21.1"), Some("0.21.1"));
        assert_eq!(p.version_of("v25.0rc1"), None);
        assert_eq!(TagPattern::parse("^v(").unwrap_err().0, Code::TagPattern);
        assert_eq!(
            TagPattern::parse(r"^v(\d+)$").unwrap_err().0,
            Code::TagPatternGroup
        );
        let d = TagPattern::default();
        assert_eq!(d.as_str(), TagPattern::DEFAULT);
        assert_eq!(d.version_of("v2.0.0-rc.8"), Some("2.0.0-rc.8"));
        assert_eq!(d.version_of("v1.14.12"), Some("1.14.12"));
    }

    #[test]
    fn memoized_tag_patterns_are_what_compiling_gives() {
        let long = format!("^v(?P<version>{})$", "[0-9]".repeat(MEMO_MAX_SOURCE));
        for source in [r"^v(?P<version>\d+)$", "^v(", r"^v(\d+)$", &long] {
            let fresh = TagPattern::compile(source);
            for _ in 0..2 {
                let got = TagPattern::parse(source);
                assert_eq!(got.as_ref().err(), fresh.as_ref().err(), "{source}");
                assert_eq!(
                    got.ok().map(|p| p.version_of("v12")),
                    fresh.as_ref().ok().map(|p| p.version_of("v12"))
                );
            }
        }
        for i in 0..MEMO_ENTRIES + 10 {
            let _ = TagPattern::parse(&format!("^v(?P<version>{i})$"));
        }
        assert!(TAG_PATTERNS.lock().unwrap().len() <= MEMO_ENTRIES);
    }

    #[test]
    fn env_values_are_single_lines() {
        assert!(EnvValue::parse("/node/data").is_ok());
        assert!(EnvValue::parse("a\nB=1").is_err());
        assert!(EnvValue::parse("a\rb").is_err());
    }
}
