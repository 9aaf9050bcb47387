//! What `fleet adopt` asks a node before adopting it, over SSM, and what it makes of the
//! answer. The question is one read-only shell script ([`INSPECT_SCRIPT`]): it lists the
//! active `node@*` units and, for each line `KEY=VALUE` of the two environment files the
//! operators' module writes (`/etc/sysconfig/node` for the host, `/etc/opt/node-config` for the
//! container), the key and 16 bits of SHA-256 of the value. Values never leave the node;
//! the container file may hold the secret's values.
//!
//! [`verify`] compares the answer with what the coin file says, setting by setting, and
//! [`recorded_config`] turns the result into the fingerprint adoption records: the
//! repository's, minus the parts found to differ (which the next plan then reconfigures),
//! with the node side marked as not fleet's yet ([`Fingerprint::adopted`]). Pure, except
//! for the script's text.

use crate::node_config::{ConfigPart, Fingerprint, NodeFiles, data_volume_of};
use fleet_repo_schema::Coin;
use fleet_repo_schema::values::Version;
use std::collections::BTreeMap;

/// The read-only script sent to every candidate (changes nothing; `shellcheck`ed by the
/// node-side tests). Output, one fact per line:
/// `unit <unit>` for each active `node@*` unit; `running <name>` for each running Docker
/// container; `host|container <KEY> <hash>` for each
/// setting; `missing host|container` when a file is not there.
pub const INSPECT_SCRIPT: &str = r#"set -u
# FLEET_NODE_ROOT prefixes the paths, as for fleet-node (tests run it in a sandbox).
R="${FLEET_NODE_ROOT:-}"
systemctl list-units --type=service --state=active --no-legend --plain 'node@*' \
  | while read -r unit _; do printf 'unit %s\n' "$unit"; done
docker ps --format '{{.Names}}' 2> /dev/null | while read -r name; do printf 'running %s\n' "$name"; done
hash() { printf '%s' "$1" | sha256sum | cut -c1-4; }
env_of() {
  if [ ! -r "$1" ]; then printf 'missing %s\n' "$2"; return 0; fi
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    k=${line%%=*}
    v=${line#*=}
    [ "$k" = "$line" ] && continue
    case "$k" in ''|*[!A-Za-z0-9_]*) continue ;; esac
    if [ "$3" = unquote ]; then
      case "$v" in
        \"*\") v=${v#\"}; v=${v%\"} ;;
        \'*\') v=${v#\'}; v=${v%\'} ;;
      esac
    fi
    printf '%s %s %s\n' "$2" "$k" "$(hash "$v")"
  done < "$1"
}
env_of "$R/etc/sysconfig/node" host unquote
env_of "$R/etc/opt/node-config" container literal
"#;

/// 16 bits of SHA-256 of `text`, as the script prints them (the per-setting record's hash).
pub fn value_hash(text: &str) -> String {
    crate::node_config::tiny_hash(text)
}

/// What a node answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// Active `node@*` units, e.g. `node@0.20.0.service`.
    pub units: Vec<String>,
    /// Names of the running Docker containers.
    pub containers: Vec<String>,
    /// Host settings: key → value hash (None: the file is not there).
    pub host: Option<BTreeMap<String, String>>,
    /// Container settings: key → value hash (None: the file is not there).
    pub container: Option<BTreeMap<String, String>>,
}

impl NodeReport {
    /// Read the script's output; lines of another form are ignored (a shell's noise).
    pub fn parse(out: &str) -> NodeReport {
        let mut r = NodeReport {
            units: vec![],
            containers: vec![],
            host: Some(BTreeMap::new()),
            container: Some(BTreeMap::new()),
        };
        let key_ok =
            |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        for line in out.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            match w.as_slice() {
                ["unit", u] if !u.is_empty() => r.units.push(u.to_string()),
                ["running", n] if !n.is_empty() => r.containers.push(n.to_string()),
                ["missing", "host"] => r.host = None,
                ["missing", "container"] => r.container = None,
                [file @ ("host" | "container"), k, h]
                    if key_ok(k) && h.len() == 4 && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    let m = if *file == "host" {
                        &mut r.host
                    } else {
                        &mut r.container
                    };
                    if let Some(m) = m {
                        m.insert(k.to_string(), h.to_ascii_lowercase());
                    }
                }
                _ => {}
            }
        }
        r
    }

    /// The version the node's one active unit runs, or why there is none to read.
    pub fn version(&self) -> Result<Version, String> {
        match self.units.as_slice() {
            [] => Err("no node@ unit is active on it".into()),
            [u] => {
                let v = u
                    .strip_prefix("node@")
                    .and_then(|s| s.strip_suffix(".service"))
                    .ok_or_else(|| format!("its active unit {u:?} is not node@<version>"))?;
                Version::parse(v).map_err(|_| {
                    format!("its active unit {u} names {v:?}, which is not a version fleet can run")
                })
            }
            many => Err(format!(
                "{} node@ units are active on it ({}); fleet cannot tell which is the node",
                many.len(),
                many.join(", ")
            )),
        }
    }
}

/// A setting found to differ between the node and the coin file (by name only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// Its part.
    pub part: ConfigPart,
    /// The setting, as the coin file names it, e.g. `container_config.DBCACHE`.
    pub setting: String,
    /// How it differs.
    pub how: DiffKind,
}

/// How a setting differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    /// Both have it, with other values.
    Value,
    /// The coin file sets it; the node does not have it.
    NotOnNode,
    /// The node has it; the coin file does not set it.
    OnlyOnNode,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.how {
            DiffKind::Value => write!(f, "{} differs", self.setting),
            DiffKind::NotOnNode => write!(f, "{} is not on the node", self.setting),
            DiffKind::OnlyOnNode => write!(f, "{} is on the node only", self.setting),
        }
    }
}

/// What comparing a node's answer with the coin file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Settings that differ.
    pub differences: Vec<Difference>,
    /// Keys in the container's file that the coin file does not set, taken to come from the
    /// coin's secret (counted, not named as differences).
    pub from_secret: usize,
}

/// Host keys the operators' module writes that are no setting of a coin file (`COIN` is
/// checked on its own, [`verify`]) or that fleet writes itself.
const HOST_KEYS_NOT_SETTINGS: [&str; 5] = ["COIN", "PORTS", "RPC_PORTS", "P2P_PORTS", "NODE_NAME"];

/// Compare a node's answer with `coin`'s settings. Err: a difference that makes adoption
/// unsafe (the node's `COIN` names another coin: fleet's unit would not find its container).
pub fn verify(coin: &Coin, report: &NodeReport) -> Result<Verified, String> {
    let mut v = Verified::default();
    let data_volume = data_volume_of(coin);
    // Host: the coin's host_config, its image repository (IMAGE) and data path.
    let mut want_host: BTreeMap<String, (String, String)> = coin
        .host_config
        .iter()
        .map(|(k, val)| {
            (
                k.as_str().to_string(),
                (
                    format!("host_config.{}", k.as_str()),
                    val.as_str().to_string(),
                ),
            )
        })
        .collect();
    want_host.insert(
        "IMAGE".into(),
        ("image.repository".into(), coin.image.repository.to_string()),
    );
    want_host.insert(
        "DATA_VOLUME".into(),
        ("host_config.DATA_VOLUME".into(), data_volume),
    );
    let Some(host) = &report.host else {
        return Err(
            "/etc/sysconfig/node is not on it: it was not set up by the operators' module".into(),
        );
    };
    match host.get("COIN") {
        Some(h) if *h == value_hash(coin.name.as_str()) => {}
        Some(_) => {
            return Err(format!(
                "its /etc/sysconfig/node names another COIN than {}: fleet's unit would not find its container ({}-node)",
                coin.name, coin.name
            ));
        }
        None => return Err("its /etc/sysconfig/node sets no COIN".into()),
    }
    let container = format!("{}-node", coin.name);
    if !report.containers.contains(&container) {
        return Err(format!(
            "no running container is named {container}: fleet's unit stops and replaces the daemon by that name, and would start a second one beside it"
        ));
    }
    if host.get("DATA_VOLUME") != Some(&value_hash(&data_volume_of(coin))) {
        return Err(format!(
            "its DATA_VOLUME is not the coin file's ({}): after a restart the container would look for its chain elsewhere and sync from scratch; set host_config.DATA_VOLUME to the node's",
            data_volume_of(coin)
        ));
    }
    compare(
        ConfigPart::Host,
        &want_host,
        host,
        &HOST_KEYS_NOT_SETTINGS,
        "host_config",
        &mut v.differences,
    );
    // Container: the coin's container_config; with a secret, keys the coin does not set
    // are the secret's.
    let want_container: BTreeMap<String, (String, String)> = coin
        .container_config
        .iter()
        .map(|(k, val)| {
            (
                k.as_str().to_string(),
                (
                    format!("container_config.{}", k.as_str()),
                    val.as_str().to_string(),
                ),
            )
        })
        .collect();
    let empty = BTreeMap::new();
    let container = report.container.as_ref().unwrap_or(&empty);
    if coin.secrets.is_some() {
        v.from_secret = container
            .keys()
            .filter(|k| !want_container.contains_key(*k))
            .count();
        let known: Vec<&str> = container
            .keys()
            .filter(|k| !want_container.contains_key(*k))
            .map(String::as_str)
            .collect();
        compare(
            ConfigPart::Container,
            &want_container,
            container,
            &known,
            "container_config",
            &mut v.differences,
        );
    } else {
        compare(
            ConfigPart::Container,
            &want_container,
            container,
            &[],
            "container_config",
            &mut v.differences,
        );
    }
    Ok(v)
}

fn compare(
    part: ConfigPart,
    want: &BTreeMap<String, (String, String)>,
    have: &BTreeMap<String, String>,
    ignore: &[&str],
    prefix: &str,
    out: &mut Vec<Difference>,
) {
    for (k, (setting, value)) in want {
        match have.get(k) {
            None => out.push(Difference {
                part,
                setting: setting.clone(),
                how: DiffKind::NotOnNode,
            }),
            Some(h) if *h != value_hash(value) => out.push(Difference {
                part,
                setting: setting.clone(),
                how: DiffKind::Value,
            }),
            Some(_) => {}
        }
    }
    for k in have.keys() {
        if !want.contains_key(k) && !ignore.contains(&k.as_str()) {
            out.push(Difference {
                part,
                setting: format!("{prefix}.{k}"),
                how: DiffKind::OnlyOnNode,
            });
        }
    }
}

/// The `fleet:config` and `fleet:config-keys` values adoption records for a node of
/// `files` whose answer gave `verified`: the repository's fingerprint without the parts
/// that differ, its node side marked as not fleet's; the per-setting record with the
/// differing settings marked, so the next plan names them.
pub fn recorded_config(files: &NodeFiles, verified: &Verified) -> (String, String) {
    let mut fp = files.fingerprint();
    let mut keys = files.key_print();
    for d in &verified.differences {
        fp.forget(d.part);
        match d.how {
            DiffKind::Value => keys.mark_changed(d.part, &d.setting),
            DiffKind::NotOnNode => keys.remove(d.part, &d.setting),
            DiffKind::OnlyOnNode => keys.insert_unknown(d.part, &d.setting),
        }
    }
    let fp: Fingerprint = fp.adopted();
    (fp.to_tag(), keys.to_tag())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_read_strictly() {
        let r = NodeReport::parse(
            "unit node@0.20.0.service\nhost COIN 1a2b\nhost IMAGE ffff\ncontainer RPC_PORT abcd\nnoise\nhost bad-key 1234\nhost K 12345\n",
        );
        assert_eq!(r.units, ["node@0.20.0.service"]);
        assert_eq!(r.host.as_ref().unwrap().len(), 2);
        assert_eq!(r.container.as_ref().unwrap()["RPC_PORT"], "abcd");
        assert_eq!(r.version().unwrap().as_str(), "0.20.0");
        let r = NodeReport::parse("missing host\nmissing container\n");
        assert_eq!((r.host, r.container), (None, None));
    }

    #[test]
    fn the_version_needs_exactly_one_active_unit_naming_a_version() {
        let r = |s: &str| NodeReport::parse(s).version();
        assert!(r("").unwrap_err().contains("no node@ unit"));
        assert!(
            r("unit node@1.0.service\nunit node@1.1.service\n")
                .unwrap_err()
                .contains("2 node@ units")
        );
        assert!(r("unit node@$(reboot).service\n").is_err());
        assert!(r("unit other@1.0.service\n").is_err());
    }

    #[test]
    fn value_hashes_are_the_scripts() {
        // printf '%s' 5000 | sha256sum | cut -c1-4
        assert_eq!(value_hash("5000"), "0f8e");
    }
}
