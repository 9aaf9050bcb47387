#![recursion_limit = "256"]
//! Helpers shared by fleet's end-to-end tests.

use std::path::{Path, PathBuf};

pub mod cloudwatch;
pub mod daemon;
pub mod github_mock;
pub mod mock_http;
pub mod nodes;
pub mod repo;
pub mod seed;
pub mod slack_mock;
pub mod world;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// What one `fleet` invocation printed and returned.
#[derive(Debug)]
pub struct Output {
    /// Exit code.
    pub code: u8,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Run the `fleet` command in-process (the same code as the binary) with `args`.
pub fn fleet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv: Vec<std::ffi::OsString> = std::iter::once("fleet".into())
        .chain(args.iter().map(|a| a.as_ref().to_os_string()))
        .collect();
    let code = reconciler::cli::run(argv, &mut out, &mut err, false);
    Output {
        code,
        stdout: String::from_utf8(out).expect("fleet prints UTF-8"),
        stderr: String::from_utf8(err).expect("fleet prints UTF-8"),
    }
}

/// Copy directory `from` into `to` recursively (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Compare `actual` with `tests/snapshots/<name>`; with `FLEET_UPDATE_SNAPSHOTS=1`, rewrite
/// the snapshot instead (review the diff like code).
pub fn check_snapshot(name: &str, actual: &str) {
    let path = workspace_root().join("tests/snapshots").join(name);
    if std::env::var_os("FLEET_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write snapshot");
        eprintln!(
            "note: rewrote {}; review the diff before committing",
            path.display()
        );
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        panic!(
            "{} differs from what fleet renders now.\n--- expected\n{expected}\n--- actual\n{actual}\n\
             If the change is intended, rerun with FLEET_UPDATE_SNAPSHOTS=1 and review the diff.",
            path.display()
        );
    }
}

/// The fleet of `desired` as `provider` sees it now, sorted into its slots.
pub async fn observe(
    provider: &dyn reconciler::provider::Provider,
    desired: &fleet_repo_schema::Desired,
) -> reconciler::plan::Observed {
    reconciler::apply::view::observe(provider, desired)
        .await
        .expect("observe")
}

/// Record an approval by `by` of every coin of `p` that needs one, for `commit`.
pub fn approve_all(
    journal: &reconciler::store::Journal,
    p: &reconciler::plan::Plan,
    commit: &str,
    by: &str,
) {
    for cp in p.coins.iter().filter(|c| c.approval.is_some()) {
        let key = reconciler::store::ApprovalKey {
            coin: cp.coin.clone(),
            target: cp.approval_target(),
            commit: commit.to_string(),
        };
        journal
            .decide_once(&key, reconciler::store::Decision::Approved, by, 0)
            .expect("journal");
    }
}

/// The decision the journal holds on (coin, version, commit), by name (`retire` for a coin's
/// retirement).
pub fn approval(
    journal: &reconciler::store::Journal,
    coin: &str,
    version: &str,
    commit: &str,
) -> Option<(reconciler::store::Decision, String)> {
    let target = match version {
        "retire" => reconciler::plan::ApprovalTarget::Retire,
        v => reconciler::plan::ApprovalTarget::Version(
            fleet_repo_schema::Version::parse(v).expect("a valid version"),
        ),
    };
    journal.approval(&reconciler::store::ApprovalKey {
        coin: fleet_repo_schema::values::CoinName::parse(coin).expect("a valid coin name"),
        target,
        commit: commit.to_string(),
    })
}
