//! The first-boot user data of a node, rendered from `deploy/node/user-data.sh.tmpl` with
//! `deploy/node/node@.service` embedded. Nodes fleet launches look to operators exactly like
//! the ones they run today: the same env files, the same unit, `node@<version>`.
//!
//! Every value comes from a validated [`Desired`](fleet_repo_schema::Desired) and is
//! additionally quoted for the place it goes (single-quoted for the shell, double-quoted for
//! systemd's EnvironmentFile, raw for Docker's `--env-file`, whose format has no quoting).

use fleet_repo_schema::values::Version;
use fleet_repo_schema::{Coin, Fleet, NodeSlot};

/// The template.
pub const TEMPLATE: &str = include_str!("../../../deploy/node/user-data.sh.tmpl");
/// The unit.
pub const NODE_UNIT: &str = include_str!("../../../deploy/node/node@.service");
/// EC2's limit on user data before base64.
pub const MAX_USER_DATA: usize = 16 * 1024;
/// Where the container sees its data when the coin does not say (`host_config.DATA_VOLUME`).
pub const DEFAULT_DATA_VOLUME: &str = "/node/data";

/// Rendering failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// A value is unfit for its place (should be impossible after validation).
    #[error("user data for {node}: {what}")]
    BadValue {
        /// The node.
        node: String,
        /// What.
        what: String,
    },
    /// Too large for EC2.
    #[error(
        "user data for {node} is {size} bytes, over EC2's 16 KiB; shorten host_config/container_config"
    )]
    TooLarge {
        /// The node.
        node: String,
        /// Size.
        size: usize,
    },
}

/// Single-quote `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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

/// Replace each `{{NAME}}` of `template` in one pass, so that a value that happens to contain
/// `{{…}}` is never expanded itself.
fn substitute(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unterminated {{ in the template".to_string())?;
        let name = &after[..end];
        let value = values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("the template names an unknown value {{{{{name}}}}}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Render the user data of `slot`.
pub fn render(fleet: &Fleet, coin: &Coin, slot: &NodeSlot) -> Result<String, RenderError> {
    let node = slot.dns_name.clone();
    let bad = |what: String| RenderError::BadValue {
        node: node.clone(),
        what,
    };
    // Checked again here: these end up in a shell script.
    let version = Version::parse(coin.version.as_str())
        .map_err(|e| bad(format!("version {:?}: {e}", coin.version.as_str())))?;
    for (k, v) in coin.host_config.iter().chain(coin.container_config.iter()) {
        if v.as_str().chars().any(char::is_control) || k.as_str().contains('=') {
            return Err(bad(format!("env {} has a control character", k.as_str())));
        }
    }

    let ports: Vec<u16> = coin
        .rpc_ports
        .iter()
        .chain(coin.p2p_ports.iter())
        .copied()
        .collect();
    let publish = ports
        .iter()
        .map(|p| format!("-p {p}:{p}"))
        .collect::<Vec<_>>()
        .join(" ");
    let ports_s = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let data_volume = coin
        .host_config
        .iter()
        .find(|(k, _)| k.as_str() == "DATA_VOLUME")
        .map(|(_, v)| v.as_str().to_string())
        .unwrap_or_else(|| DEFAULT_DATA_VOLUME.to_string());

    let mut host = String::new();
    for (k, v) in &coin.host_config {
        if k.as_str() != "DATA_VOLUME" {
            host.push_str(&format!("{}={}\n", k.as_str(), systemd_quote(v.as_str())));
        }
    }
    // fleet's own keys last, so that they win.
    for (k, v) in [
        ("IMAGE", coin.image.repository.to_string()),
        ("COIN", coin.name.to_string()),
        ("PORTS", ports_s),
        ("PUBLISH", publish),
        ("DATA_VOLUME", data_volume),
        ("NODE_NAME", node.clone()),
    ] {
        host.push_str(&format!("{k}={}\n", systemd_quote(&v)));
    }
    let mut container = String::new();
    for (k, v) in &coin.container_config {
        container.push_str(&format!("{}={}\n", k.as_str(), v.as_str()));
    }

    let secret = shell_quote(coin.secrets.as_ref().map(|s| s.as_str()).unwrap_or(""));
    let values: [(&str, &str); 7] = [
        ("COIN", &shell_quote(coin.name.as_str())),
        ("VERSION", &shell_quote(version.as_str())),
        ("NODE_NAME", &shell_quote(&node)),
        ("SECRET_ID", &secret),
        ("HOST_ENV", host.trim_end()),
        ("CONTAINER_ENV", container.trim_end()),
        ("NODE_UNIT", NODE_UNIT.trim_end()),
    ];
    let out = substitute(TEMPLATE, &values).map_err(bad)?;
    let _ = fleet;
    if out.len() > MAX_USER_DATA {
        return Err(RenderError::TooLarge {
            node,
            size: out.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn substitution_is_one_pass() {
        let out = substitute("a={{A}} b={{B}}", &[("A", "{{B}}"), ("B", "x")]).unwrap();
        assert_eq!(out, "a={{B}} b=x");
        assert!(substitute("{{C}}", &[]).is_err());
    }

    #[test]
    fn systemd_quote_escapes() {
        assert_eq!(systemd_quote(r#"a"b\c$d"#), r#""a\"b\\c\$d""#);
    }
}
