//! The `fleet` binary itself (the daemon tests in `tests/` run it as a process; having an
//! integration test here is also what makes `cargo test` build it with the workspace's
//! features, so `tests/run` needs no separate build).

use std::process::Command;

#[test]
fn the_binary_runs_and_knows_its_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["run", "--help"])
        .output()
        .expect("run fleet");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--repo",
        "--branch",
        "--provider",
        "--listen",
        "--state-dir",
    ] {
        assert!(
            help.contains(flag),
            "`fleet run --help` lacks {flag}:\n{help}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["run", "--provider", "nowhere"])
        .output()
        .expect("run fleet");
    assert_eq!(out.status.code(), Some(2), "a bad flag is a usage error");
}
