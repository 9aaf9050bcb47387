//! The shell commands fleet sends to a node over SSM, built in one place. A version reaches a
//! command only through [`restart_command`] or [`is_active_command`], which check it again
//! right before it becomes part of a shell line, whatever checked it before.

use super::ProviderError;
use fleet_repo_schema::values::Version;

/// The shell command that restarts a node at `version`.
pub fn restart_command(version: &Version) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    Ok(format!(
        "systemctl stop 'node@*' && systemctl start 'node@{v}'"
    ))
}

/// The shell command that succeeds exactly when `node@<version>` is active.
pub fn is_active_command(version: &Version) -> Result<String, ProviderError> {
    let v = shell_safe(version)?;
    Ok(format!("systemctl is-active --quiet 'node@{v}'"))
}

/// The command that grows the data file system after its volume grew (xfs, mounted at
/// /node-data by the node's user data).
pub const GROW_FS_COMMAND: &str = "xfs_growfs -d /node-data";

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
            restart_command(&v).unwrap(),
            "systemctl stop 'node@*' && systemctl start 'node@28.1'"
        );
        assert_eq!(
            is_active_command(&v).unwrap(),
            "systemctl is-active --quiet 'node@28.1'"
        );
        for bad in ["1; rm -rf /", "$(id)", "a b", "", "-x", "1'2"] {
            assert!(Version::parse(bad).is_err(), "{bad} must not parse");
        }
    }
}
