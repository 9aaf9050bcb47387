//! A node's rendered configuration: what fleet writes on a node for its slot, file by file
//! (the layout of `deploy/node/fleet-node`), and its [`Fingerprint`], recorded on the
//! instance as the `fleet:config` tag. The planner compares the fingerprint a node carries
//! with the one the repository asks for; a difference is a `Reconfigure` step naming the
//! parts that differ (never their values). Pure: no provider, no I/O.

use crate::provider::userdata::{
    BOOTSTRAP_UNIT, HELPER, METRICS_SERVICE, METRICS_TIMER, NODE_UNIT, RenderError,
};
use fleet_repo_schema::{Coin, NodeSlot};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// Where the container sees its data when the coin does not say (`host_config.DATA_VOLUME`).
pub const DEFAULT_DATA_VOLUME: &str = "/node/data";

/// Where the container sees its chain: the coin's `host_config.DATA_VOLUME`, else
/// [`DEFAULT_DATA_VOLUME`].
pub fn data_volume_of(coin: &Coin) -> String {
    coin.host_config
        .iter()
        .find(|(k, _)| k.as_str() == "DATA_VOLUME")
        .map(|(_, v)| v.as_str().to_string())
        .unwrap_or_else(|| DEFAULT_DATA_VOLUME.to_string())
}

/// Double-quote `s` for a systemd EnvironmentFile (which also reads `\` escapes).
fn systemd_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// What fleet writes on a node for `slot` (besides the version): the node's rendered
/// configuration, one value per file of `deploy/node/fleet-node`'s layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    /// `/etc/sysconfig/node`: the coin's `host_config`, then fleet's own keys.
    pub host_env: String,
    /// `/etc/fleet-node/container.env`: the coin's `container_config`.
    pub container_env: String,
    /// `/etc/fleet-node/secret-id`: the coin's `secrets`, or empty.
    pub secret_id: String,
    /// `/etc/fleet-node/digests/<version>`: the coin's `image.digest`.
    pub digest: Option<String>,
    /// The version `digest` pins (the coin's): a reconfiguration of a node still at another
    /// version leaves that version's pin alone. Not part of the fingerprint.
    pub version: fleet_repo_schema::values::Version,
    /// `/etc/fleet-node/metrics/<name>`: the coin's `custom_metrics` scripts.
    pub metrics: Vec<(String, String)>,
    /// `/etc/fleet-node/logging`: the container's log driver on the first line, then one
    /// `name=value` option per line (the coin's `logging`, else fleet.yaml's); None: Docker's
    /// default.
    pub logging: Option<String>,
}

impl NodeFiles {
    /// The files of `slot` of `coin`, each value checked again for its place.
    pub fn of(coin: &Coin, slot: &NodeSlot) -> Result<NodeFiles, RenderError> {
        let node = slot.dns_name.clone();
        let bad = |what: String| RenderError::BadValue {
            node: node.clone(),
            what,
        };
        for (k, v) in coin.host_config.iter().chain(coin.container_config.iter()) {
            if v.as_str().chars().any(char::is_control) || k.as_str().contains('=') {
                return Err(bad(format!("env {} has a control character", k.as_str())));
            }
        }
        let list = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let all: Vec<u16> = coin
            .rpc_ports
            .iter()
            .chain(coin.p2p_ports.iter())
            .copied()
            .collect();
        let data_volume = data_volume_of(coin);
        let mut host_env = String::new();
        for (k, v) in &coin.host_config {
            if k.as_str() != "DATA_VOLUME" {
                host_env.push_str(&format!("{}={}\n", k.as_str(), systemd_quote(v.as_str())));
            }
        }
        // fleet's own keys last, so that they win.
        for (k, v) in [
            ("IMAGE", coin.image.repository.to_string()),
            ("COIN", coin.name.to_string()),
            ("PORTS", list(&all)),
            ("RPC_PORTS", list(&coin.rpc_ports)),
            ("P2P_PORTS", list(&coin.p2p_ports)),
            ("DATA_VOLUME", data_volume),
            ("NODE_NAME", node.clone()),
        ] {
            host_env.push_str(&format!("{k}={}\n", systemd_quote(&v)));
        }
        let mut container_env = String::new();
        for (k, v) in &coin.container_config {
            container_env.push_str(&format!("{}={}\n", k.as_str(), v.as_str()));
        }
        let mut metrics = Vec::new();
        for (name, script) in &coin.metric_scripts {
            // A file name under /etc/fleet-node/metrics: never `.`, `..` or hidden.
            if name.as_str().starts_with('.') {
                return Err(bad(format!(
                    "custom_metrics name {:?} starts with a dot",
                    name.as_str()
                )));
            }
            metrics.push((name.as_str().to_string(), script.clone()));
        }
        let logging = coin.logging.as_ref().map(|l| {
            let mut text = format!("{}\n", l.driver.as_str());
            for (k, v) in &l.options {
                text.push_str(&format!("{}={}\n", k.as_str(), v.as_str()));
            }
            text
        });
        Ok(NodeFiles {
            logging,
            host_env,
            container_env,
            secret_id: coin
                .secrets
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            digest: coin.image.digest.as_ref().map(|d| d.as_str().to_string()),
            version: coin.version.clone(),
            metrics,
        })
    }
}

impl NodeFiles {
    /// The fingerprint of these files, as recorded in `fleet:config`.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut metrics = String::new();
        for (name, script) in &self.metrics {
            metrics.push_str(&format!("{name}\0{script}\0"));
        }
        let program = [
            HELPER,
            NODE_UNIT,
            BOOTSTRAP_UNIT,
            METRICS_SERVICE,
            METRICS_TIMER,
        ]
        .join("\0");
        let parts = [
            (ConfigPart::Host, self.host_env.clone()),
            (ConfigPart::Container, self.container_env.clone()),
            (ConfigPart::Secret, self.secret_id.clone()),
            (ConfigPart::Image, self.digest.clone().unwrap_or_default()),
            (ConfigPart::Metrics, metrics),
            (
                ConfigPart::Logging,
                self.logging.clone().unwrap_or_default(),
            ),
            (ConfigPart::Program, program),
        ];
        Fingerprint(
            parts
                .into_iter()
                .map(|(p, text)| (p, short_hash(&text)))
                .collect(),
        )
    }
}

impl NodeFiles {
    /// Every setting these files hold, as the coin file (or fleet.yaml) names it, with its
    /// rendered value: what the plan names when a node's differs (never showing a value).
    pub fn settings(&self) -> Vec<(ConfigPart, String, String)> {
        let mut out = Vec::new();
        let env = |text: &str| -> Vec<(String, String)> {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        for (k, v) in env(&self.host_env) {
            let name = match k.as_str() {
                "IMAGE" => "image.repository".to_string(),
                "RPC_PORTS" => "ports.rpc".to_string(),
                "P2P_PORTS" => "ports.p2p".to_string(),
                "NODE_NAME" => "internal_domain".to_string(),
                // Derived from the two above, or the same for every node of a coin.
                "PORTS" | "COIN" => continue,
                _ => format!("host_config.{k}"),
            };
            out.push((ConfigPart::Host, name, v));
        }
        for (k, v) in env(&self.container_env) {
            out.push((ConfigPart::Container, format!("container_config.{k}"), v));
        }
        out.push((ConfigPart::Secret, "secrets".into(), self.secret_id.clone()));
        out.push((
            ConfigPart::Image,
            "image.digest".into(),
            self.digest.clone().unwrap_or_default(),
        ));
        for (name, script) in &self.metrics {
            out.push((
                ConfigPart::Metrics,
                format!("custom_metrics.{name}"),
                script.clone(),
            ));
        }
        if let Some(l) = &self.logging {
            let mut lines = l.lines();
            let driver = lines.next().unwrap_or_default().to_string();
            out.push((ConfigPart::Logging, "logging.driver".into(), driver));
            for (k, v) in lines.filter_map(|l| l.split_once('=')) {
                out.push((
                    ConfigPart::Logging,
                    format!("logging.options.{k}"),
                    v.to_string(),
                ));
            }
        }
        out
    }

    /// The per-setting record of these files (`fleet:config-keys`).
    pub fn key_print(&self) -> KeyPrint {
        KeyPrint(
            self.settings()
                .into_iter()
                .map(|(p, name, value)| ((p, tiny_hash(&name)), tiny_hash(&value)))
                .collect(),
        )
    }
}

/// 16 bits of SHA-256, as 4 hex digits.
pub fn tiny_hash(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d[..2].iter().map(|b| format!("{b:02x}")).collect()
}

fn short_hash(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A part of a node's configuration, as the plan names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigPart {
    /// `/etc/sysconfig/node`: `host_config`, `image.repository`, `ports`.
    Host,
    /// `/etc/fleet-node/container.env`: `container_config`.
    Container,
    /// `/etc/fleet-node/secret-id`: `secrets` (the secret's name; fleet never reads its value).
    Secret,
    /// `/etc/fleet-node/digests/<version>`: `image.digest`.
    Image,
    /// `/etc/fleet-node/metrics/`: `custom_metrics` scripts.
    Metrics,
    /// `/etc/fleet-node/logging`: `logging` (the container's log driver).
    Logging,
    /// fleet's node side itself: `fleet-node` and its units (a newer fleet).
    Program,
}

impl ConfigPart {
    /// Every part, in tag order.
    pub const ALL: [ConfigPart; 7] = [
        ConfigPart::Host,
        ConfigPart::Container,
        ConfigPart::Secret,
        ConfigPart::Image,
        ConfigPart::Metrics,
        ConfigPart::Logging,
        ConfigPart::Program,
    ];
    /// Its name in the tag.
    pub fn key(self) -> &'static str {
        match self {
            ConfigPart::Host => "host",
            ConfigPart::Container => "container",
            ConfigPart::Secret => "secret",
            ConfigPart::Image => "image",
            ConfigPart::Metrics => "metrics",
            ConfigPart::Logging => "logging",
            ConfigPart::Program => "program",
        }
    }
    /// The coin file's keys behind it, as the plan shows them.
    pub fn coin_keys(self) -> &'static str {
        match self {
            ConfigPart::Host => "host_config/image.repository/ports",
            ConfigPart::Container => "container_config",
            ConfigPart::Secret => "secrets",
            ConfigPart::Image => "image.digest",
            ConfigPart::Metrics => "custom_metrics",
            ConfigPart::Logging => "logging",
            ConfigPart::Program => "fleet's node side",
        }
    }
    /// Whether the daemon must restart to see a change of it. Only metrics scripts are
    /// outside what the container sees.
    pub fn restarts(self) -> bool {
        !matches!(self, ConfigPart::Metrics)
    }
}

impl std::fmt::Display for ConfigPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.coin_keys())
    }
}

/// Short hashes of each part of a node's configuration: `host=1a2b3c4d container=…`, the
/// value of the `fleet:config` tag (letters, digits, `=` and spaces: a valid EC2 tag value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<ConfigPart, String>);

impl Fingerprint {
    /// The tag value.
    pub fn to_tag(&self) -> String {
        ConfigPart::ALL
            .iter()
            .filter_map(|p| self.0.get(p).map(|h| format!("{}={h}", p.key())))
            .collect::<Vec<_>>()
            .join(" ")
    }
    /// Parse a tag value; parts it does not name, or names in a form this fleet does not
    /// write, count as different from anything.
    pub fn from_tag(s: &str) -> Fingerprint {
        let mut m = BTreeMap::new();
        for word in s.split_whitespace() {
            if let Some((k, h)) = word.split_once('=')
                && let Some(p) = ConfigPart::ALL.iter().find(|p| p.key() == k)
                && ((h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    || (*p == ConfigPart::Program && h == Self::ADOPTED))
            {
                m.insert(*p, h.to_ascii_lowercase());
            }
        }
        Fingerprint(m)
    }

    /// The node side of a node `fleet adopt` took over: the operators' own, not fleet's yet.
    const ADOPTED: &'static str = "adopted";

    /// The same, marking the node side as the operators' own (`program=adopted`): what
    /// `fleet adopt` records. The planner installs fleet's node side on such a node before
    /// the first step that needs it, without a restart of its own, and never for itself.
    pub fn adopted(mut self) -> Fingerprint {
        self.0.insert(ConfigPart::Program, Self::ADOPTED.into());
        self
    }

    /// Whether the node was adopted and still runs the operators' node side.
    pub fn is_adopted(&self) -> bool {
        self.0.get(&ConfigPart::Program).map(String::as_str) == Some(Self::ADOPTED)
    }

    /// The same without `part`: it then differs from anything (a part found to differ).
    pub fn forget(&mut self, part: ConfigPart) {
        self.0.remove(&part);
    }
    /// The parts where `self` (what a node carries) differs from `want`.
    pub fn differs(&self, want: &Fingerprint) -> Vec<ConfigPart> {
        ConfigPart::ALL
            .into_iter()
            .filter(|p| self.0.get(p) != want.0.get(p))
            .collect()
    }
}

/// Per setting of a node's configuration, a 16-bit hash of its name and one of its value:
/// the value of the `fleet:config-keys` tag, entries of 9 characters (the part's letter, the
/// name's hash, the value's) without separators, so up to 28 settings fit in a tag value.
/// With it the plan names the settings that differ ([`KeyPrint::changes`]); a node with more
/// settings than fit carries none (an empty tag), and the plan names parts only. A changed
/// value whose 16-bit hash happens to be equal is still a difference of its part (the
/// fingerprint), named by the part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPrint(BTreeMap<(ConfigPart, String), String>);

/// A setting that differs between a node and the repository, by name (never by value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum SettingChange {
    /// The repository sets it, the node has it with another value.
    Changed {
        /// Its part.
        part: ConfigPart,
        /// The setting, e.g. `container_config.DBCACHE`.
        setting: String,
    },
    /// The repository sets it, the node does not have it.
    Added {
        /// Its part.
        part: ConfigPart,
        /// The setting.
        setting: String,
    },
    /// The node has settings of this part the repository no longer sets (their names are
    /// not recorded, only counted).
    Removed {
        /// The part.
        part: ConfigPart,
        /// How many.
        count: usize,
    },
}

impl SettingChange {
    /// The part it belongs to.
    pub fn part(&self) -> ConfigPart {
        match self {
            SettingChange::Changed { part, .. }
            | SettingChange::Added { part, .. }
            | SettingChange::Removed { part, .. } => *part,
        }
    }
}

impl std::fmt::Display for SettingChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingChange::Changed { setting, .. } => f.write_str(setting),
            SettingChange::Added { setting, .. } => write!(f, "{setting} (new)"),
            SettingChange::Removed { part, count } => write!(
                f,
                "{count} setting{} of {} removed",
                if *count == 1 { "" } else { "s" },
                part.coin_keys()
            ),
        }
    }
}

impl ConfigPart {
    fn letter(self) -> char {
        self.key().chars().next().unwrap_or('?')
    }
}

impl KeyPrint {
    /// Most characters of an EC2 tag value.
    const MAX_TAG: usize = 256;

    /// The tag value; empty when it would not fit in one.
    pub fn to_tag(&self) -> String {
        let s: String = self
            .0
            .iter()
            .map(|((p, k), v)| format!("{}{k}{v}", p.letter()))
            .collect();
        if s.len() > Self::MAX_TAG {
            String::new()
        } else {
            s
        }
    }

    /// Parse a tag value; None when it is empty or not of this form.
    pub fn from_tag(s: &str) -> Option<KeyPrint> {
        if s.is_empty() || !s.len().is_multiple_of(9) || !s.is_ascii() {
            return None;
        }
        let mut m = BTreeMap::new();
        for i in (0..s.len()).step_by(9) {
            let e = &s[i..i + 9];
            let letter = e.chars().next()?;
            let part = ConfigPart::ALL.into_iter().find(|p| p.letter() == letter)?;
            let (k, v) = (&e[1..5], &e[5..9]);
            if !(k.bytes().chain(v.bytes())).all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            m.insert((part, k.to_ascii_lowercase()), v.to_ascii_lowercase());
        }
        Some(KeyPrint(m))
    }

    /// Mark `setting` of `part` as holding another value than the repository's (its value
    /// hash is changed in one bit): adoption found it so.
    pub fn mark_changed(&mut self, part: ConfigPart, setting: &str) {
        if let Some(v) = self.0.get_mut(&(part, tiny_hash(setting))) {
            let flipped = u16::from_str_radix(v, 16).unwrap_or(0) ^ 1;
            *v = format!("{flipped:04x}");
        }
    }

    /// Forget `setting` of `part`: the node does not have it.
    pub fn remove(&mut self, part: ConfigPart, setting: &str) {
        self.0.remove(&(part, tiny_hash(setting)));
    }

    /// Record a `setting` of `part` the repository does not set (its value unknown).
    pub fn insert_unknown(&mut self, part: ConfigPart, setting: &str) {
        self.0.insert((part, tiny_hash(setting)), "0000".into());
    }

    /// The settings of `want` that differ from this record (what a node carries), among the
    /// parts in `parts` (those whose fingerprint differs).
    pub fn changes(&self, want: &NodeFiles, parts: &[ConfigPart]) -> Vec<SettingChange> {
        let mut out = Vec::new();
        let mut wanted = std::collections::BTreeSet::new();
        for (part, name, value) in want.settings() {
            let key = (part, tiny_hash(&name));
            wanted.insert(key.clone());
            if !parts.contains(&part) {
                continue;
            }
            match self.0.get(&key) {
                None => out.push(SettingChange::Added {
                    part,
                    setting: name,
                }),
                Some(v) if *v != tiny_hash(&value) => out.push(SettingChange::Changed {
                    part,
                    setting: name,
                }),
                Some(_) => {}
            }
        }
        for part in parts {
            let count = self
                .0
                .keys()
                .filter(|k| k.0 == *part && !wanted.contains(*k))
                .count();
            if count > 0 {
                out.push(SettingChange::Removed { part: *part, count });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_quote_escapes() {
        assert_eq!(systemd_quote(r#"a"b\c$d"#), r#""a\"b\\c\$d""#);
    }

    #[test]
    fn a_fingerprint_survives_its_tag_and_names_what_differs() {
        let f = Fingerprint(
            ConfigPart::ALL
                .iter()
                .map(|p| (*p, "0123abcd".to_string()))
                .collect(),
        );
        let tag = f.to_tag();
        assert!(tag.len() < 256, "an EC2 tag value: {tag}");
        assert_eq!(Fingerprint::from_tag(&tag), f);
        let mut g = f.clone();
        g.0.insert(ConfigPart::Container, "ffffffff".into());
        assert_eq!(f.differs(&g), [ConfigPart::Container]);
        // A tag this fleet cannot read differs in every part (the node is reconfigured).
        assert_eq!(
            Fingerprint::from_tag("garbage").differs(&f),
            ConfigPart::ALL
        );
    }

    fn files(container: &[(&str, &str)]) -> NodeFiles {
        NodeFiles {
            host_env: "IMAGE=\"r/x\"\nCOIN=\"x\"\nPORTS=\"1,2\"\nRPC_PORTS=\"1\"\nP2P_PORTS=\"2\"\nDATA_VOLUME=\"/d\"\nNODE_NAME=\"n\"\n".into(),
            container_env: container.iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
            secret_id: String::new(),
            digest: None,
            version: fleet_repo_schema::values::Version::parse("1.0").unwrap(),
            metrics: vec![],
            logging: Some("gelf\ngelf-address=udp://graylog:12201\n".into()),
        }
    }

    #[test]
    fn the_per_setting_record_survives_its_tag_or_is_left_out_when_too_long() {
        let f = files(&[("DBCACHE", "4000")]);
        let names: Vec<String> = f.settings().into_iter().map(|(_, n, _)| n).collect();
        assert_eq!(
            names,
            [
                "image.repository",
                "ports.rpc",
                "ports.p2p",
                "host_config.DATA_VOLUME",
                "internal_domain",
                "container_config.DBCACHE",
                "secrets",
                "image.digest",
                "logging.driver",
                "logging.options.gelf-address"
            ]
        );
        let tag = f.key_print().to_tag();
        assert_eq!(tag.len(), 9 * names.len());
        assert_eq!(KeyPrint::from_tag(&tag), Some(f.key_print()));
        assert!(f.key_print().changes(&f, &ConfigPart::ALL).is_empty());
        for bad in ["", "x", "zzzzzzzzz", "q12345678", "c1234567g"] {
            assert_eq!(KeyPrint::from_tag(bad), None, "{bad}");
        }
        // 28 settings fit in the 256 characters of a tag value; more leave it empty.
        let many: Vec<(String, String)> = (0..30).map(|i| (format!("K{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(files(&many).key_print().to_tag(), "");
        assert_eq!(files(&many[..19]).key_print().to_tag().len(), 252);
    }
}
