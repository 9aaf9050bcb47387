//! The shell commands fleet sends to a node over SSM, built in one place. A version or digest
//! reaches a command only through the functions here, which check it again right before it
//! becomes part of a shell line, whatever checked it before.
//!
//! On the node, `/usr/local/sbin/fleet-node` (`deploy/node/fleet-node`, installed by the
//! user data) does the work: an upgrade pulls the new image first and only then stops and
//! disables the running version and enables and starts the new one.

use super::{ImagePin, ProviderError, userdata};
use crate::node_config::NodeFiles;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fleet_repo_schema::values::{Digest, Version};

/// The node side's program, as installed by the user data.
pub const NODE_PROGRAM: &str = "/usr/local/sbin/fleet-node";

/// The shell command that upgrades a node to `version`, its image as `pin` says (`fleet-node
/// rollback` keeps the digest the node pinned for it): pull, then switch the enabled `node@`
/// unit. A failed pull fails the command with the registry's message and leaves the running
/// daemon alone.
pub fn upgrade_command(version: &Version, pin: ImagePin<'_>) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    match pin {
        ImagePin::Tag => Ok(format!("{NODE_PROGRAM} upgrade '{v}'")),
        ImagePin::Digest(d) => Ok(format!(
            "{NODE_PROGRAM} upgrade '{v}' '{}'",
            digest_safe(d)?
        )),
        ImagePin::AsBefore => Ok(format!("{NODE_PROGRAM} rollback '{v}'")),
    }
}

/// The shell command that rewrites a node's configuration to `files` (its daemon at
/// `version`) and, when `restart`, restarts the daemon if anything it sees changed. Every
/// file travels gzip-compressed in base64 (an alphabet with no quote or shell character) and
/// is staged in a fresh directory; the new `fleet-node` from the bundle then installs each
/// file that differs atomically (`fleet-node apply-config`). Idempotent.
pub fn reconfigure_command(
    version: &Version,
    files: &NodeFiles,
    restart: bool,
) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    let mut c = String::from(
        "set -euo pipefail\nd=$(mktemp -d /tmp/fleet-config.XXXXXX)\ntrap 'rm -rf \"$d\"' EXIT\ninstall -d \"$d/metrics\"\n",
    );
    let mut put = |name: &str, text: &str| {
        c.push_str(&format!(
            "printf '%s' '{}' | base64 -d | gzip -dc > \"$d/\"'{name}'\n",
            BASE64.encode(userdata::encode(text))
        ));
    };
    put("fleet-node", userdata::HELPER);
    put("node@.service", userdata::NODE_UNIT);
    put("fleet-node-bootstrap.service", userdata::BOOTSTRAP_UNIT);
    put("fleet-node-metrics.service", userdata::METRICS_SERVICE);
    put("fleet-node-metrics.timer", userdata::METRICS_TIMER);
    put("sysconfig-node", &files.host_env);
    put("container.env", &files.container_env);
    put("secret-id", &files.secret_id);
    if &files.version != version {
        // The node is upgraded next and the upgrade pins its own digest: the staged one is
        // the target's, and the running version's pin stays.
        put("digest-keep", "");
    } else if let Some(d) = &files.digest {
        put("digest", &format!("{d}\n"));
    }
    if let Some(l) = &files.logging {
        put("logging", l);
    }
    for (name, script) in &files.metrics {
        // Names are [A-Za-z0-9_.-], not starting with a dot (NodeFiles::of).
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            || name.starts_with('.')
        {
            return Err(ProviderError::Refused {
                reason: format!("metric name {name:?} will not reach a shell"),
            });
        }
        put(&format!("metrics/{name}"), script);
    }
    let mode = if restart { "restart" } else { "no-restart" };
    c.push_str(&format!(
        "bash \"$d/fleet-node\" apply-config \"$d\" '{v}' {mode}\n"
    ));
    Ok(c)
}

/// The version an [`upgrade_command`] upgrades to, if `command` is one (what tests and
/// the simulator's records are read back with).
pub fn upgrade_target(command: &str) -> Option<&str> {
    let rest = command.strip_prefix(NODE_PROGRAM)?;
    let rest = rest
        .strip_prefix(" upgrade '")
        .or_else(|| rest.strip_prefix(" rollback '"))?;
    rest.split('\'').next()
}

/// `digest` as it may appear inside single quotes: `sha256:` and 64 lower-case hex digits.
fn digest_safe(digest: &Digest) -> Result<&str, ProviderError> {
    let d = digest.as_str();
    let ok = d.len() == 71
        && d.starts_with("sha256:")
        && d[7..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(d)
    } else {
        Err(ProviderError::Refused {
            reason: format!("digest {d:?} is not an image digest; it will not reach a shell"),
        })
    }
}

/// The shell command that succeeds exactly when `node@<version>` is active.
pub fn is_active_command(version: &Version) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    Ok(format!("systemctl is-active --quiet 'node@{v}'"))
}

/// The shell command that restarts the daemon of `node@<version>`, the node's enabled unit
/// (`fleet-node restart`, which refuses a version whose unit is not the enabled one): what
/// healing does for a stuck or crashed daemon. Changes no file and no version.
pub fn restart_command(version: &Version) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    Ok(format!("{NODE_PROGRAM} restart '{v}'"))
}

/// The command that stops the node's daemon for a consistent snapshot: `fleet-node stop`,
/// which refuses unless `node@<version>` is the enabled unit, and flushes the data volume.
pub fn stop_command(version: &Version) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    Ok(format!("{NODE_PROGRAM} stop '{v}'"))
}

/// The command that starts it again (`fleet-node start`, the enabled unit only).
pub fn start_command(version: &Version) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    Ok(format!("{NODE_PROGRAM} start '{v}'"))
}

/// The command that grows the data file system after its volume grew (xfs, mounted at
/// /node-data by the node's user data).
pub const GROW_FS_COMMAND: &str = "xfs_growfs -d /node-data";

/// The command that grows the root partition and file system after the root volume grew.
pub const GROW_ROOT_COMMAND: &str = "/usr/local/sbin/fleet-node grow-root";

/// What a replacement runs once it has its node's data volume: the every-boot set-up
/// (mount without formatting a volume that holds a file system, environment, start the
/// enabled daemon), which at its own boot gave up waiting for the volume.
pub const BOOTSTRAP_COMMAND: &str = "/usr/local/sbin/fleet-node bootstrap";

/// `version` as it may appear inside single quotes of a unit name: the version rule again,
/// and no byte outside `[A-Za-z0-9._+-]`, and no leading `-` (an option to systemctl).
fn shell_safe(version: &Version) -> Result<&str, ProviderError> {
    let v = version.as_str();
    let ok = Version::parse(v).is_ok()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        && !v.starts_with('-');
    if ok {
        Ok(v)
    } else {
        Err(ProviderError::Refused {
            reason: format!("version {v:?} is not a valid version; it will not reach a shell"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_and_check_the_version() {
        let v = Version::parse("28.1").unwrap();
        assert_eq!(
            upgrade_command(&v, ImagePin::Tag).unwrap(),
            "/usr/local/sbin/fleet-node upgrade '28.1'"
        );
        assert_eq!(
            upgrade_command(&v, ImagePin::AsBefore).unwrap(),
            "/usr/local/sbin/fleet-node rollback '28.1'"
        );
        assert_eq!(
            upgrade_target(&upgrade_command(&v, ImagePin::AsBefore).unwrap()),
            Some("28.1")
        );
        let d = Digest::parse(&format!("sha256:{}", "0f".repeat(32))).unwrap();
        assert_eq!(
            upgrade_command(&v, ImagePin::Digest(&d)).unwrap(),
            format!(
                "/usr/local/sbin/fleet-node upgrade '28.1' 'sha256:{}'",
                "0f".repeat(32)
            )
        );
        assert_eq!(
            restart_command(&v).unwrap(),
            "/usr/local/sbin/fleet-node restart '28.1'"
        );
        assert_eq!(
            is_active_command(&v).unwrap(),
            "systemctl is-active --quiet 'node@28.1'"
        );
        assert_eq!(
            upgrade_target(&upgrade_command(&v, ImagePin::Digest(&d)).unwrap()),
            Some("28.1")
        );
        assert_eq!(upgrade_target("systemctl start 'node@28.1'"), None);
        for bad in ["1; rm -rf /", "$(id)", "a b", "", "-x", "1'2"] {
            assert!(Version::parse(bad).is_err(), "{bad} must not parse");
        }
    }
}
