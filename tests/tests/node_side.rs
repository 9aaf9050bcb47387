//! The node side on a real host, without AWS: what fleet renders for a node (the user data,
//! `deploy/node/fleet-node`, the units) checked by the tools a reviewer would use
//! (`systemd-analyze verify`, `shellcheck`, `bash -n`) and run for real in a sandbox
//! directory (`FLEET_NODE_ROOT`) whose PATH has recording stand-ins for `aws`, `docker`,
//! `mkfs.xfs`, `mount`, `systemctl` and the other tools that would touch the host.
//!
//! The stand-ins model what the real tools do that matters here: a formatted device has a
//! file system (`blkid` finds it), `systemctl enable` links the unit into
//! `multi-user.target.wants`, `docker pull` of an image the registry lacks fails with the
//! registry's message. Each logs its arguments, one call per line, to `calls.log`.
//!
//! To accept an intended change of the rendered user data:
//! `UPDATE_SNAPSHOTS=1 cargo test -p fleet-tests --test node_side`.

use fleet_repo_schema::values::{EnvName, EnvValue, Version};
use fleet_tests::workspace_root;
use fleet_tests::world::{desired_of, example_tree};
use reconciler::node_config::NodeFiles;
use reconciler::provider::{commands, userdata};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// `shellcheck` (Debian's package; tests/run installs it) finds nothing in `script`.
fn shellcheck_clean(name: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, script).unwrap();
    let out = Command::new("shellcheck")
        .args(["--shell=bash", "--severity=style"])
        .arg(&p)
        .output()
        .unwrap_or_else(|e| panic!("shellcheck: {e} (apt-get install shellcheck; tests/run does)"));
    assert!(
        out.status.success(),
        "shellcheck {name}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bitcoin_node1_user_data_snapshot() {
    let d = desired_of(&example_tree());
    let coin = &d.coins["bitcoin"];
    let ud = userdata::render(&d.fleet, coin, &coin.nodes[0]).unwrap();
    bash_syntax_ok(&ud);
    shellcheck_clean("user-data.sh", &ud);
    assert!(ud.contains("VERSION='28.1'\n"));
    assert!(ud.contains("RPC_PORTS=\"8332\"\nP2P_PORTS=\"8333\""));
    assert!(ud.contains("systemctl enable fleet-node-bootstrap.service\n"));
    // EC2 receives it gzip-compressed (cloud-init decompresses it): under 16 KiB that way,
    // and `gzip -d` gives back the script.
    let z = userdata::encode(&ud);
    assert!(
        z.len() < userdata::MAX_USER_DATA / 2,
        "{} bytes compressed",
        z.len()
    );
    assert_eq!(
        userdata::encode(&ud),
        z,
        "the same script encodes to the same bytes"
    );
    let mut gunzip = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        gunzip.stdin.take().unwrap().write_all(&z).unwrap();
    }
    let plain = gunzip.wait_with_output().unwrap();
    assert!(plain.status.success());
    assert_eq!(String::from_utf8(plain.stdout).unwrap(), ud);
    check_snapshot("user-data-bitcoin-node1.sh", &ud);
}

#[test]
fn the_node_program_passes_shellcheck() {
    shellcheck_clean("fleet-node", userdata::HELPER);
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    // A root with the host's own systemd units (for multi-user.target and the like), a
    // docker.service and the executables the units name; `verify` fails on a missing one.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let units = r.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg("/usr/lib/systemd/system")
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        units.join("docker.service"),
        "[Unit]\nDescription=Docker (stand-in)\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    executable(&r.join("usr/local/sbin/fleet-node"), userdata::HELPER);
    executable(&r.join("usr/bin/docker"), "#!/bin/sh\n");
    for (name, text) in [
        ("node@.service", userdata::NODE_UNIT),
        ("fleet-node-bootstrap.service", userdata::BOOTSTRAP_UNIT),
        ("fleet-node-metrics.service", userdata::METRICS_SERVICE),
        ("fleet-node-metrics.timer", userdata::METRICS_TIMER),
    ] {
        std::fs::write(units.join(name), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .args([
            "/etc/systemd/system/node@28.1.service",
            "/etc/systemd/system/fleet-node-bootstrap.service",
            "/etc/systemd/system/fleet-node-metrics.service",
            "/etc/systemd/system/fleet-node-metrics.timer",
        ])
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    // `verify` exits 0 on unknown keys and only warns: any word from it is a finding.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The recording stand-ins, one script answering to every tool's name.
const STAND_IN: &str = r#"#!/bin/bash
# A recording stand-in: logs the call, then behaves as the real tool would where it matters.
S="$SANDBOX"
tool=$(basename "$0")
# One write per call: tools in a pipeline (aws ... | docker login) run at once, and three
# appends each would interleave their lines.
line="$tool$(printf ' %q' "$@")"
printf '%s\n' "$line" >> "$S/calls.log"
last="${*: -1}"
case "$tool" in
  blkid)
    if [ "$1" = -s ]; then [ -f "$last.fs" ] && cat "$last.fs"; exit 0; fi
    [ -f "$last.fs" ]; exit ;;
  mkfs.xfs) echo "1b2c3d4e-0000-4000-8000-00000000abcd" > "$last.fs" ;;
  mountpoint) [ -f "$S/mounted" ]; exit ;;
  mount) touch "$S/mounted" ;;
  xfs_growfs) ;;
  findmnt)
    case "$*" in
      *SOURCE*) echo /dev/nvme0n1p1 ;;
      *FSTYPE*) echo xfs ;;
    esac ;;
  lsblk) echo nvme0n1 ;;
  growpart) [ -f "$S/grown" ] && { echo "NOCHANGE: partition 1 is size 33554399"; exit 1; }; touch "$S/grown" ;;
  curl)
    case "$*" in
      *api/token*) echo token ;;
      *local-ipv4*) echo 10.1.2.3 ;;
      *placement/region*) echo eu-central-1 ;;
      *) exit 22 ;;
    esac ;;
  aws)
    case "$1 $2" in
      "ecr get-login-password") echo "pw-from-the-role" ;;
      "secretsmanager get-secret-value") echo '{"RPC_USER":"alice","RPC_PASSWORD":"s3cret"}' ;;
      *) exit 1 ;;
    esac ;;
  docker)
    case "$1" in
      login) cat > "$S/docker-login-stdin" ;;
      ps) cat "$S/containers" 2>/dev/null ;;
      pull)
        if grep -qxF "$2" "$S/missing-images" 2>/dev/null; then
          echo "Error response from daemon: manifest for $2 not found: manifest unknown" >&2
          exit 1
        fi ;;
    esac ;;
  systemctl)
    wants="$FLEET_NODE_ROOT/etc/systemd/system/multi-user.target.wants"
    case "$1" in
      enable) mkdir -p "$wants"; ln -sf "/etc/systemd/system/$2" "$wants/$2" ;;
      disable) rm -f "$wants/${*: -1}" ;;
      list-units) cat "$S/active-units" 2>/dev/null ;;
      is-enabled) [ -L "$wants/${*: -1}" ]; exit ;;
    esac ;;
esac
exit 0
"#;

const TOOLS: &[&str] = &[
    "aws",
    "docker",
    "mkfs.xfs",
    "mount",
    "systemctl",
    "blkid",
    "mountpoint",
    "xfs_growfs",
    "curl",
    "findmnt",
    "lsblk",
    "growpart",
    "sync",
];

/// A sandbox: a root directory the node side writes into, a data device, stand-ins.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let s = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        executable(&s.path().join("bin/stand-in"), STAND_IN);
        for t in TOOLS {
            std::os::unix::fs::symlink("stand-in", s.path().join("bin").join(t)).unwrap();
        }
        std::fs::create_dir_all(s.root().join("dev")).unwrap();
        std::fs::write(s.root().join("dev/sdf"), "").unwrap();
        s
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn root(&self) -> PathBuf {
        self.path().join("root")
    }
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg(program)
            .args(args)
            .env("PATH", path)
            .env("SANDBOX", self.path())
            .env("FLEET_NODE_ROOT", self.root())
            .output()
            .unwrap()
    }
    /// The first boot: the rendered user data, as cloud-init runs it.
    fn first_boot(&self, user_data: &str) -> Output {
        let p = self.path().join("user-data.sh");
        std::fs::write(&p, user_data).unwrap();
        self.run(&p, &[])
    }
    /// `fleet-node ARGS`, as installed by the user data.
    fn fleet_node(&self, args: &[&str]) -> Output {
        self.run(&self.root().join("usr/local/sbin/fleet-node"), args)
    }
    /// The calls logged since the last take.
    fn take_calls(&self) -> Vec<String> {
        let p = self.path().join("calls.log");
        let calls = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        calls.lines().map(str::to_string).collect()
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
    fn enabled(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(
            self.root()
                .join("etc/systemd/system/multi-user.target.wants"),
        )
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
        v.sort();
        v
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bitcoin_user_data() -> String {
    let d = desired_of(&example_tree());
    let coin = &d.coins["bitcoin"];
    userdata::render(&d.fleet, coin, &coin.nodes[0]).unwrap()
}

fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

#[test]
fn first_boot_formats_and_enables_a_second_boot_formats_nothing_and_changes_nothing() {
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    let calls = s.take_calls();
    assert_eq!(count(&calls, "mkfs.xfs"), 1, "{calls:#?}");
    assert_eq!(count(&calls, "mount "), 1, "{calls:#?}");
    assert!(calls.iter().any(|c| c.starts_with("xfs_growfs -d ")));
    // The daemon's unit is enabled (a reboot brings it back), and so is the every-boot set-up.
    assert_eq!(
        s.enabled(),
        [
            "fleet-node-bootstrap.service",
            "fleet-node-metrics.timer",
            "node@28.1.service"
        ]
    );
    assert!(calls.contains(&"systemctl start --no-block node@28.1.service".to_string()));
    // The container's environment: fleet's part and the secret's keys, owner-only.
    let config = s.read("etc/opt/node-config");
    assert!(
        config.starts_with("DBCACHE_MB=4000\n")
            && config.ends_with("RPC_USER=alice\nRPC_PASSWORD=s3cret\n"),
        "{config}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.root().join("etc/opt/node-config"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The pinned digest of the version, the metrics script as written in the repository.
    assert_eq!(
        s.read("etc/fleet-node/digests/28.1").trim(),
        "sha256:fed9369828c2e48f88cfbe36ef0e2d25a14d0c48d6287e9eb59bde270e54c265"
    );
    let script =
        std::fs::read_to_string(workspace_root().join("examples/fleet/metrics/bitcoin.sh"))
            .unwrap();
    assert_eq!(s.read("etc/fleet-node/metrics/block_height"), script);
    let fstab = s.read("etc/fstab");

    // The second boot: fleet-node-bootstrap.service runs `fleet-node bootstrap`.
    ok(&s.fleet_node(&["bootstrap"]));
    let calls = s.take_calls();
    assert_eq!(
        count(&calls, "mkfs.xfs"),
        0,
        "a second boot formats nothing: {calls:#?}"
    );
    assert_eq!(count(&calls, "mount "), 0, "already mounted: {calls:#?}");
    assert_eq!(
        s.read("etc/fstab"),
        fstab,
        "one fstab line, whatever the boots"
    );
    assert_eq!(s.read("etc/opt/node-config"), config);
    assert_eq!(
        s.enabled(),
        [
            "fleet-node-bootstrap.service",
            "fleet-node-metrics.timer",
            "node@28.1.service"
        ]
    );
}

/// The index of the first recorded call that starts with `needle` (a test fails without one).
fn first_call(calls: &[String], needle: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in {calls:#?}"))
}

#[test]
fn an_upgrade_pulls_first_and_a_failed_pull_never_stops_the_running_unit() {
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    std::fs::write(
        s.path().join("active-units"),
        "node@28.1.service loaded active running Cryptocoin node 28.1\n",
    )
    .unwrap();
    let repo = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin";
    std::fs::write(s.path().join("missing-images"), format!("{repo}:29.0\n")).unwrap();
    s.take_calls();

    // The registry lacks the tag: the step fails with the registry's words, nothing stops.
    let out = s.fleet_node(&["upgrade", "29.0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manifest unknown"), "{stderr}");
    assert!(
        stderr.contains(&format!("pulling {repo}:29.0 failed")),
        "{stderr}"
    );
    let calls = s.take_calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("systemctl")),
        "a failed pull touched a unit: {calls:#?}"
    );
    assert_eq!(s.read("etc/fleet-node/version").trim(), "28.1");
    assert_eq!(
        s.enabled().last().map(String::as_str),
        Some("node@28.1.service")
    );

    // With the image there: pulled (through an ECR login) before the old unit stops.
    std::fs::remove_file(s.path().join("missing-images")).unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    ok(&s.fleet_node(&["upgrade", "29.0", &digest]));
    let calls = s.take_calls();
    let at = |needle: &str| first_call(&calls, needle);
    let pull = at(&format!("docker pull {repo}@{digest}"));
    assert!(at("aws ecr get-login-password --region eu-central-1") < pull);
    assert!(pull < at("systemctl disable --now node@28.1.service"));
    assert!(
        at("systemctl disable --now node@28.1.service") < at("systemctl enable node@29.0.service")
    );
    assert!(at("systemctl enable node@29.0.service") < at("systemctl start node@29.0.service"));
    assert_eq!(s.read("etc/fleet-node/version").trim(), "29.0");
    assert!(s.enabled().contains(&"node@29.0.service".to_string()));
    assert!(!s.enabled().contains(&"node@28.1.service".to_string()));
    // The ECR password reached docker on its standard input, never as an argument.
    assert_eq!(
        std::fs::read_to_string(s.path().join("docker-login-stdin")).unwrap(),
        "pw-from-the-role\n"
    );
    assert!(!calls.iter().any(|c| c.contains("pw-from-the-role")));

    // A value that is not a version or a digest reaches no tool.
    for bad in [
        vec!["upgrade", "1;reboot"],
        vec!["upgrade", "-x"],
        vec!["upgrade", "29.0", "sha256:nothex"],
    ] {
        let out = s.fleet_node(&bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(s.take_calls().is_empty(), "{bad:?}");
    }
}

#[test]
fn a_rollback_returns_to_the_image_the_node_pinned_for_its_previous_version() {
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    let repo = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin";
    let old = format!("sha256:{}", "0a".repeat(32));
    let new = format!("sha256:{}", "0b".repeat(32));
    ok(&s.fleet_node(&["upgrade", "28.1", &old]));
    ok(&s.fleet_node(&["upgrade", "29.0", &new]));
    s.take_calls();

    // Back to 28.1 on the digest it ran, which the repository (now pinning 29.0's) lacks.
    ok(&s.fleet_node(&["rollback", "28.1"]));
    let calls = s.take_calls();
    let at = |needle: &str| first_call(&calls, needle);
    assert!(
        at(&format!("docker pull {repo}@{old}")) < at("systemctl disable --now node@29.0.service")
    );
    assert!(at("systemctl enable node@28.1.service") < at("systemctl start node@28.1.service"));
    assert_eq!(s.read("etc/fleet-node/version").trim(), "28.1");
    assert_eq!(s.read("etc/fleet-node/digests/28.1").trim(), old);
    assert!(s.enabled().contains(&"node@28.1.service".to_string()));
    assert!(!s.enabled().contains(&"node@29.0.service".to_string()));

    // `keep` is the rollback's own word, not a digest an upgrade takes; bad versions reach
    // no tool.
    for bad in [
        vec!["upgrade", "29.0", "keep"],
        vec!["rollback", "1;reboot"],
        vec!["rollback", "28.1", &old],
    ] {
        let out = s.fleet_node(&bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(s.take_calls().is_empty(), "{bad:?}");
    }
    assert_eq!(s.read("etc/fleet-node/digests/28.1").trim(), old);
}

#[test]
fn a_heal_restarts_only_the_enabled_unit_and_changes_no_file() {
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    let version_file = s.read("etc/fleet-node/version");
    s.take_calls();

    ok(&s.fleet_node(&["restart", "28.1"]));
    assert_eq!(
        s.take_calls(),
        [
            "systemctl is-enabled --quiet node@28.1.service",
            "systemctl restart node@28.1.service"
        ]
    );
    assert_eq!(s.read("etc/fleet-node/version"), version_file);

    // Another version's unit is not the enabled one: refused, nothing restarted.
    let out = s.fleet_node(&["restart", "29.0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node@29.0 is not the enabled unit"),
        "{out:?}"
    );
    assert!(
        !s.take_calls().iter().any(|c| c.contains("restart")),
        "a unit that is not enabled was restarted"
    );
    // A value that is not a version reaches no tool.
    for bad in [
        vec!["restart", "1;reboot"],
        vec!["restart", "-x"],
        vec!["restart"],
    ] {
        assert!(!s.fleet_node(&bad).status.success(), "{bad:?}");
        assert!(s.take_calls().is_empty(), "{bad:?}");
    }
}

#[test]
fn a_consistent_snapshot_stops_and_starts_only_the_enabled_unit() {
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    let version_file = s.read("etc/fleet-node/version");
    s.take_calls();
    ok(&s.fleet_node(&["stop", "28.1"]));
    let root = s.path().join("root").display().to_string();
    assert_eq!(
        s.take_calls(),
        [
            "systemctl is-enabled --quiet node@28.1.service".to_string(),
            "systemctl stop node@28.1.service".to_string(),
            format!("sync -f {root}/node-data"),
        ]
    );
    ok(&s.fleet_node(&["start", "28.1"]));
    assert_eq!(
        s.take_calls(),
        [
            "systemctl is-enabled --quiet node@28.1.service",
            "systemctl start node@28.1.service"
        ]
    );
    assert_eq!(s.read("etc/fleet-node/version"), version_file);
    // Another version's unit is not the enabled one: neither stopped nor started.
    for cmd in ["stop", "start"] {
        let out = s.fleet_node(&[cmd, "29.0"]);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("node@29.0 is not the enabled unit"),
            "{out:?}"
        );
        assert!(
            !s.take_calls()
                .iter()
                .any(|c| c.contains(&format!("systemctl {cmd}"))),
            "{cmd}: a unit that is not enabled was touched"
        );
        for bad in [vec![cmd, "1;reboot"], vec![cmd, "-x"], vec![cmd]] {
            assert!(!s.fleet_node(&bad).status.success(), "{bad:?}");
            assert!(s.take_calls().is_empty(), "{bad:?}");
        }
    }
}

#[test]
fn the_container_publishes_rpc_on_the_private_address_only() {
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    s.take_calls();
    ok(&s.fleet_node(&["run", "28.1"]));
    let calls = s.take_calls();
    let run = calls
        .iter()
        .find(|c| c.starts_with("docker run"))
        .unwrap_or_else(|| panic!("{calls:#?}"));
    assert!(run.contains(" -p 10.1.2.3:8332:8332 "), "{run}");
    assert!(run.contains(" -p 8333:8333 -p 8333:8333/udp "), "{run}");
    assert!(
        !run.contains(" -p 8332:8332"),
        "rpc on every address: {run}"
    );
    assert!(
        run.ends_with(
            " 123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin@sha256:fed9369828c2e48f88cfbe36ef0e2d25a14d0c48d6287e9eb59bde270e54c265"
        ),
        "the pinned digest runs: {run}"
    );
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
    // Host env: double-quoted with \, ", $ and ` escaped for systemd's EnvironmentFile.
    assert!(
        ud.contains(r#"EXTRA_HOST="x'; reboot; echo '\$(id) \`id\` \"q\" \\""#),
        "{ud}"
    );
    // The whole set-up, run for real in the sandbox: the values arrive as written and
    // nothing they say is run.
    let s = Sandbox::new();
    ok(&s.first_boot(&ud));
    let written = s.read("etc/opt/node-config");
    assert!(
        written.lines().any(|l| l == format!("EXTRA={hostile}")),
        "{written}"
    );
    let calls = s.take_calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("reboot") || c.starts_with("id")),
        "{calls:#?}"
    );
    // fleet-node reads the host file back as the same value (the shell and systemd agree).
    let probe = s.path().join("probe.sh");
    std::fs::write(
        &probe,
        format!(
            ". '{}/etc/sysconfig/node'; printf '%s' \"$EXTRA_HOST\"",
            s.root().display()
        ),
    )
    .unwrap();
    let out = s.run(&probe, &[]);
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), hostile);
}

/// The command fleet sends over SSM to reconfigure `coin`'s first node, run in the sandbox.
fn reconfigure(
    s: &Sandbox,
    coin: &fleet_repo_schema::Coin,
    version: &str,
    restart: bool,
) -> Output {
    let files = NodeFiles::of(coin, &coin.nodes[0]).unwrap();
    let cmd =
        commands::reconfigure_command(&Version::parse(version).unwrap(), &files, restart).unwrap();
    let p = s.path().join("ssm-command.sh");
    std::fs::write(&p, &cmd).unwrap();
    s.run(&p, &[])
}

#[test]
fn a_reconfiguration_writes_what_differs_and_restarts_only_for_what_the_container_sees() {
    let d = desired_of(&example_tree());
    let mut coin = d.coins["bitcoin"].clone();
    let s = Sandbox::new();
    ok(&s.first_boot(&userdata::render(&d.fleet, &coin, &coin.nodes[0]).unwrap()));
    s.take_calls();

    // Nothing changed: nothing is written, nothing restarts.
    let out = reconfigure(&s, &coin, "28.1", true);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed: nothing"));
    let calls = s.take_calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("systemctl restart")),
        "{calls:#?}"
    );

    // container_config changed: the file is rewritten, the environment rebuilt with its
    // secrets, the daemon restarted once.
    coin.container_config.insert(
        EnvName::parse("DBCACHE_MB").unwrap(),
        EnvValue::parse("8000").unwrap(),
    );
    let out = reconfigure(&s, &coin, "28.1", true);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("changed: /etc/fleet-node/container.env"),
        "{said}"
    );
    let config = s.read("etc/opt/node-config");
    assert!(
        config.starts_with("DBCACHE_MB=8000\n") && config.contains("RPC_PASSWORD=s3cret"),
        "{config}"
    );
    let calls = s.take_calls();
    assert_eq!(
        count(&calls, "systemctl restart node@28.1.service"),
        1,
        "{calls:#?}"
    );
    // Again: idempotent.
    ok(&reconfigure(&s, &coin, "28.1", true));
    assert_eq!(count(&s.take_calls(), "systemctl restart"), 0);

    // A metrics script alone restarts nothing, even when a restart is allowed.
    coin.metric_scripts.insert(
        fleet_repo_schema::values::MetricName::parse("peers").unwrap(),
        "#!/bin/sh\necho 8\n".into(),
    );
    let out = reconfigure(&s, &coin, "28.1", true);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("/etc/fleet-node/metrics/peers"));
    assert_eq!(
        s.read("etc/fleet-node/metrics/peers"),
        "#!/bin/sh\necho 8\n"
    );
    assert_eq!(count(&s.take_calls(), "systemctl restart"), 0);

    // `no-restart` (an upgrade of the same node follows) writes and does not restart.
    coin.container_config.insert(
        EnvName::parse("DBCACHE_MB").unwrap(),
        EnvValue::parse("9000").unwrap(),
    );
    ok(&reconfigure(&s, &coin, "28.1", false));
    assert!(
        s.read("etc/fleet-node/container.env")
            .starts_with("DBCACHE_MB=9000\n")
    );
    assert_eq!(count(&s.take_calls(), "systemctl restart"), 0);
}

#[test]
fn a_node_set_up_by_an_older_fleet_is_brought_under_fleet_node_and_enabled() {
    // What fleet's first user data left: env files and a started, never enabled, unit.
    let d = desired_of(&example_tree());
    let coin = d.coins["litecoin"].clone();
    let s = Sandbox::new();
    let r = s.root();
    std::fs::create_dir_all(r.join("etc/sysconfig")).unwrap();
    std::fs::create_dir_all(r.join("etc/opt")).unwrap();
    std::fs::write(
        r.join("etc/sysconfig/node"),
        "IMAGE=\"x\"\nCOIN=\"litecoin\"\nPUBLISH=\"-p 9332:9332\"\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/opt/node-config"), "OLD=1\n").unwrap();
    ok(&reconfigure(&s, &coin, "0.21.4", true));
    assert!(r.join("usr/local/sbin/fleet-node").exists());
    assert_eq!(s.read("etc/fleet-node/version").trim(), "0.21.4");
    assert_eq!(
        s.enabled(),
        [
            "fleet-node-bootstrap.service",
            "fleet-node-metrics.timer",
            "node@0.21.4.service"
        ],
        "from now on a reboot brings the daemon back"
    );
    let calls = s.take_calls();
    assert_eq!(
        count(&calls, "systemctl restart node@0.21.4.service"),
        1,
        "{calls:#?}"
    );
    assert!(!s.read("etc/sysconfig/node").contains("PUBLISH"));
}

#[test]
fn the_log_driver_and_its_options_reach_docker_one_word_each() {
    // The example's fleet.yaml sends every container's logs to Graylog over GELF, with a
    // Docker template in an option: each option is one argument, whatever it holds.
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    assert_eq!(
        s.read("etc/fleet-node/logging"),
        "gelf\ngelf-address=udp://graylog.internal:12201\ntag={{.Name}}\n"
    );
    s.take_calls();
    ok(&s.fleet_node(&["run", "28.1"]));
    let calls = s.take_calls();
    let run = calls.iter().find(|c| c.starts_with("docker run")).unwrap();
    assert!(
        run.contains(" --log-driver=gelf --log-opt=gelf-address=udp://graylog.internal:12201 --log-opt=tag=\\{\\{.Name\\}\\} "),
        "{run}"
    );
}

#[test]
fn growing_the_root_grows_its_partition_and_file_system_and_again_changes_nothing() {
    let s = Sandbox::new();
    ok(&s.first_boot(&bitcoin_user_data()));
    // The root partition as sysfs shows it.
    let sys = s.root().join("sys/class/block/nvme0n1p1");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(sys.join("partition"), "1\n").unwrap();
    s.take_calls();
    ok(&s.fleet_node(&["grow-root"]));
    let calls = s.take_calls();
    assert!(
        calls.contains(&"growpart /dev/nvme0n1 1".to_string()),
        "{calls:#?}"
    );
    assert!(calls.contains(&"xfs_growfs -d /".to_string()), "{calls:#?}");
    // Run again (a retried step): growpart says NOCHANGE (exit 1), which is not a failure.
    ok(&s.fleet_node(&["grow-root"]));
}

#[test]
fn before_an_upgrade_the_running_versions_pin_stays_and_a_new_image_is_pulled_before_anything_changes()
 {
    use fleet_repo_schema::values::{Digest, ImageRepo};
    let d = desired_of(&example_tree());
    let coin = d.coins["bitcoin"].clone();
    let pinned = coin.image.digest.clone().expect("the example pins bitcoin");
    let s = Sandbox::new();
    ok(&s.first_boot(&userdata::render(&d.fleet, &coin, &coin.nodes[0]).unwrap()));
    assert_eq!(
        s.read("etc/fleet-node/digests/28.1").trim(),
        pinned.as_str()
    );
    s.take_calls();

    // A bump to 29.0 pinned at another digest: the plan writes the files at 28.1 without a
    // restart, then upgrades. The 28.1 pin must stay 28.1's: if the upgrade's pull fails or
    // the node reboots first, node@28.1 still runs the 28.1 image.
    let mut bump = coin.clone();
    bump.version = Version::parse("29.0").unwrap();
    bump.image.digest = Some(Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap());
    ok(&reconfigure(&s, &bump, "28.1", false));
    assert_eq!(
        s.read("etc/fleet-node/digests/28.1").trim(),
        pinned.as_str()
    );
    s.take_calls();

    // A restart onto another image pulls it first; a missing image fails the step before
    // any file changes or any unit is touched.
    let other = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin-knots";
    let mut moved = coin.clone();
    moved.image.repository = ImageRepo::parse(other).unwrap();
    let host_before = s.read("etc/sysconfig/node");
    std::fs::write(
        s.path().join("missing-images"),
        format!("{other}@{}\n", pinned.as_str()),
    )
    .unwrap();
    let out = reconfigure(&s, &moved, "28.1", true);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing was changed") && stderr.contains("manifest unknown"),
        "{stderr}"
    );
    assert_eq!(s.read("etc/sysconfig/node"), host_before);
    let calls = s.take_calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("systemctl")),
        "{calls:#?}"
    );
    // With the image there: pulled, then the files, then one restart.
    std::fs::remove_file(s.path().join("missing-images")).unwrap();
    ok(&reconfigure(&s, &moved, "28.1", true));
    let calls = s.take_calls();
    let at = |needle: &str| first_call(&calls, needle);
    assert!(
        at(&format!("docker pull {other}@{}", pinned.as_str()))
            < at("systemctl restart node@28.1.service")
    );
    assert!(s.read("etc/sysconfig/node").contains(other));
    // The same image again pulls nothing.
    ok(&reconfigure(&s, &moved, "28.1", true));
    assert_eq!(count(&s.take_calls(), "docker pull"), 0);
}

#[test]
fn adopts_inspection_reads_a_module_made_node_and_changes_nothing() {
    use reconciler::adopt::inspect::{INSPECT_SCRIPT, NodeReport, verify};
    shellcheck_clean("inspect.sh", &format!("#!/bin/bash\n{INSPECT_SCRIPT}"));
    let d = desired_of(&example_tree());
    for coin in d.coins.values() {
        let s = Sandbox::new();
        let root = s.root();
        std::fs::create_dir_all(root.join("etc/sysconfig")).unwrap();
        std::fs::create_dir_all(root.join("etc/opt")).unwrap();
        std::fs::write(
            root.join("etc/sysconfig/node"),
            fleet_tests::seed::host_env(coin),
        )
        .unwrap();
        std::fs::write(
            root.join("etc/opt/node-config"),
            fleet_tests::seed::container_env(coin),
        )
        .unwrap();
        std::fs::write(
            s.path().join("active-units"),
            format!(
                "node@{v}.service loaded active running Cryptocoin node for connection to the blockchain\n",
                v = coin.version
            ),
        )
        .unwrap();
        std::fs::write(
            s.path().join("containers"),
            format!("{}\n", fleet_tests::seed::container_name(coin)),
        )
        .unwrap();
        let p = s.path().join("inspect.sh");
        std::fs::write(&p, INSPECT_SCRIPT).unwrap();
        let before = (s.read("etc/sysconfig/node"), s.read("etc/opt/node-config"));
        let out = s.run(&p, &[]);
        ok(&out);
        let printed = NodeReport::parse(&String::from_utf8_lossy(&out.stdout));
        // What the moto tests answer for such a node is what the script prints on it.
        assert_eq!(
            printed,
            NodeReport::parse(&fleet_tests::seed::answer(coin, coin.version.as_str())),
            "{}",
            coin.name
        );
        assert_eq!(printed.version().unwrap(), coin.version);
        let v = verify(coin, &printed).unwrap();
        assert!(
            v.differences.is_empty(),
            "{}: {:#?}",
            coin.name,
            v.differences
        );
        assert_eq!(v.from_secret, usize::from(coin.secrets.is_some()));
        // Read-only: the files are as they were, and the only tools asked list units and
        // containers.
        assert_eq!(
            (s.read("etc/sysconfig/node"), s.read("etc/opt/node-config")),
            before
        );
        let calls = s.take_calls();
        assert!(
            calls
                .iter()
                .all(|c| c.starts_with("systemctl list-units") || c.starts_with("docker ps")),
            "{calls:#?}"
        );
        // No value leaves the node: only keys and 4 hex digits of each value's hash.
        let said = String::from_utf8_lossy(&out.stdout);
        for (_, v) in fleet_tests::seed::SECRET_KEYS {
            assert!(!said.contains(v));
        }
    }
}
