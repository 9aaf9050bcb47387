//! The first-boot user data of a node: a snapshot of what fleet renders for the example
//! bitcoin node (review changes to it like code), a shell syntax check, and the quoting of
//! values that look like shell.
//!
//! To accept an intended change: `UPDATE_SNAPSHOTS=1 cargo test -p fleet-tests --test node_user_data`.

use fleet_repo_schema::values::{EnvName, EnvValue};
use fleet_tests::workspace_root;
use fleet_tests::world::{desired_of, example_tree};
use reconciler::provider::userdata;
use std::process::Command;

fn check_snapshot(name: &str, actual: &str) {
    let path = workspace_root().join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from what fleet renders now; if the change is intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff",
        path.display()
    );
}

fn bash_syntax_ok(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("user-data.sh");
    std::fs::write(&p, script).unwrap();
    let out = Command::new("bash")
        .arg("-n")
        .arg(&p)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bitcoin_node1_user_data_snapshot() {
    let d = desired_of(&example_tree());
    let coin = &d.coins["bitcoin"];
    let ud = userdata::render(&d.fleet, coin, &coin.nodes[0]).unwrap();
    bash_syntax_ok(&ud);
    assert!(ud.contains("COIN='bitcoin'\nVERSION='28.1'\nNODE_NAME='node1.bitcoin.internal'"));
    assert!(ud.contains("PUBLISH=\"-p 8332:8332 -p 8333:8333\""));
    assert!(ud.contains("systemctl start \"node@$VERSION\""));
    assert!(ud.len() < userdata::MAX_USER_DATA);
    check_snapshot("user-data-bitcoin-node1.sh", &ud);
}

#[test]
fn values_that_look_like_shell_stay_data() {
    let d = desired_of(&example_tree());
    let mut coin = d.coins["litecoin"].clone();
    let hostile = "x'; reboot; echo '$(id) `id` \"q\" \\";
    coin.container_config.insert(
        EnvName::parse("EXTRA").unwrap(),
        EnvValue::parse(hostile).unwrap(),
    );
    coin.host_config.insert(
        EnvName::parse("EXTRA_HOST").unwrap(),
        EnvValue::parse(hostile).unwrap(),
    );
    let ud = userdata::render(&d.fleet, &coin, &coin.nodes[0]).unwrap();
    bash_syntax_ok(&ud);
    // Container env: raw inside a quoted heredoc (no expansion; Docker's --env-file has no quoting).
    assert!(ud.contains(&format!("\nEXTRA={hostile}\n")), "{ud}");
    // Host env: double-quoted with \, ", $ and ` escaped for systemd's EnvironmentFile.
    assert!(
        ud.contains(r#"EXTRA_HOST="x'; reboot; echo '\$(id) \`id\` \"q\" \\""#),
        "{ud}"
    );
    // Run the env-file part of the script for real, into a scratch directory, and read back.
    let start = ud.find("cat > /etc/opt/node-config").unwrap();
    let end = ud[start..].find("FLEET_CONTAINER_ENV\n").unwrap() + start;
    let end = end + ud[end..].find('\n').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("node-config");
    let part = ud[start..end].replace("/etc/opt/node-config", out_file.to_str().unwrap());
    let st = Command::new("bash").arg("-c").arg(&part).status().unwrap();
    assert!(st.success());
    let written = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        written.lines().any(|l| l == format!("EXTRA={hostile}")),
        "{written}"
    );
}
