//! The first-boot user data of a node, rendered from `deploy/node/user-data.sh.tmpl` with
//! the node side embedded: `deploy/node/fleet-node` (installed as /usr/local/sbin/fleet-node)
//! and its units. Nodes fleet launches look to operators like the ones they run today: the
//! same env files, the same unit, `node@<version>`, now enabled so that it survives reboots.
//!
//! Every value comes from a validated [`Desired`](fleet_repo_schema::Desired) and is
//! additionally quoted for the place it goes (single-quoted for the shell, double-quoted for
//! systemd's EnvironmentFile, raw for Docker's `--env-file`, whose format has no quoting).

use crate::node_config::NodeFiles;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fleet_repo_schema::values::Version;
use fleet_repo_schema::{Coin, Fleet, NodeSlot};

/// The template.
pub const TEMPLATE: &str = include_str!("../../../deploy/node/user-data.sh.tmpl");
/// The daemon's unit.
pub const NODE_UNIT: &str = include_str!("../../../deploy/node/node@.service");
/// The node side's program (`/usr/local/sbin/fleet-node`).
pub const HELPER: &str = include_str!("../../../deploy/node/fleet-node");
/// Every boot: `fleet-node bootstrap`.
pub const BOOTSTRAP_UNIT: &str = include_str!("../../../deploy/node/fleet-node-bootstrap.service");
/// The custom metrics, run by their timer.
pub const METRICS_SERVICE: &str = include_str!("../../../deploy/node/fleet-node-metrics.service");
/// Every minute.
pub const METRICS_TIMER: &str = include_str!("../../../deploy/node/fleet-node-metrics.timer");
/// EC2's limit on user data before base64, which applies to the gzip-compressed script
/// ([`encode`]; cloud-init decompresses it).
pub const MAX_USER_DATA: usize = 16 * 1024;

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
        "user data for {node} is {size} bytes compressed, over EC2's 16 KiB; shorten host_config, container_config or the custom_metrics scripts"
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
    let files = NodeFiles::of(coin, slot)?;
    let digest = match &files.digest {
        Some(d) => format!(
            "printf '%s\\n' {} > \"$ROOT/etc/fleet-node/digests/$VERSION\"",
            shell_quote(d)
        ),
        None => "# (no image digest pinned: the image is pulled by its version tag)".into(),
    };
    let mut metrics = String::new();
    for (name, script) in &files.metrics {
        metrics.push_str(&format!(
            "printf '%s' {} | base64 -d > \"$ROOT/etc/fleet-node/metrics/\"{}\n",
            shell_quote(&BASE64.encode(script)),
            shell_quote(name)
        ));
    }
    if metrics.is_empty() {
        metrics.push_str("# (no custom metrics)");
    }
    // The log settings are repository text too: base64, like the scripts.
    match &files.logging {
        Some(l) => metrics.push_str(&format!(
            "\nprintf '%s' {} | base64 -d > \"$ROOT/etc/fleet-node/logging\"",
            shell_quote(&BASE64.encode(l))
        )),
        None => metrics.push_str("\n# (no log driver set: Docker's default)"),
    }
    let values: [(&str, &str); 11] = [
        ("VERSION", &shell_quote(version.as_str())),
        ("SECRET_ID", &shell_quote(&files.secret_id)),
        ("HOST_ENV", files.host_env.trim_end()),
        ("CONTAINER_ENV", files.container_env.trim_end()),
        ("DIGEST", &digest),
        ("METRICS", metrics.trim_end()),
        ("HELPER", HELPER.trim_end()),
        ("NODE_UNIT", NODE_UNIT.trim_end()),
        ("BOOTSTRAP_UNIT", BOOTSTRAP_UNIT.trim_end()),
        ("METRICS_SERVICE", METRICS_SERVICE.trim_end()),
        ("METRICS_TIMER", METRICS_TIMER.trim_end()),
    ];
    let out = substitute(TEMPLATE, &values).map_err(bad)?;
    let _ = fleet;
    let size = encode(&out).len();
    if size > MAX_USER_DATA {
        return Err(RenderError::TooLarge { node, size });
    }
    Ok(out)
}

/// Whether rendered `user_data` leaves the daemon enabled on every boot: it enables
/// fleet-node-bootstrap.service, which enables `node@<version>` (both run for real in
/// `tests/tests/node_side.rs`). The simulator asks this of each launch, so a template that
/// stops enabling them gives simulated nodes that stay down after a reboot, as real ones would.
pub fn enables_the_daemon(user_data: &str) -> bool {
    user_data
        .lines()
        .any(|l| l.trim() == "systemctl enable fleet-node-bootstrap.service")
        && HELPER.contains("  systemctl enable \"node@$version.service\"\n")
}

/// The user data as EC2 receives it (before base64): gzip, which cloud-init recognises and
/// decompresses. The node side is ~10 KiB of script; compressed, a node's user data is a
/// third of that, which leaves room for the coin's settings under EC2's 16 KiB.
pub fn encode(plain: &str) -> Vec<u8> {
    use std::io::Write as _;
    // mtime 0, no file name: the same script always encodes to the same bytes.
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(plain.as_bytes()).expect("writing to memory");
    z.finish().expect("writing to memory")
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
}
