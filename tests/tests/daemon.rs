//! `fleet run` end to end: the real binary, a real git repository driven by the `git` command
//! line (a bare origin and a working clone, as GitHub and an operator's laptop), the
//! simulator as the fleet, and the daemon's own HTTP endpoints as the only window into it.
//!
//! - A pushed version bump rolls out zone by zone: each zone's restarts come after the
//!   previous zone's last restart plus its bake (read from the simulator's command log).
//! - A broken commit is reported (status, metrics) and changes nothing; a fix resumes.
//! - A force-push back to an older commit converges the fleet back to its version.
//! - A webhook with a missing, wrong or tampered signature gets 401 and causes no fetch; a
//!   signed push to the watched branch fetches at once.
//! - SIGTERM stops it cleanly (exit 0).

use fleet_tests::daemon::{Daemon, Remote, coin, coin_at, fleet_files, github_signature, http};
use fleet_tests::{fleet, workspace_root};
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn config(url: &str, watch: bool) -> String {
    format!(
        "repo:\n  url: {url}\n  branch: main\n  poll_interval: 1h\n  watch: {watch}\n\
         provider: sim\nsim:\n  speed: 600\n\
         reconcile:\n  requeue: 1h\n  gate_poll: 10s\n  backoff_min: 100ms\n  backoff_max: 2s\n"
    )
}

/// (zone, sim time) of each successful upgrade to `<version>`, in order.
fn starts(state_dir: &std::path::Path, version: &str) -> Vec<(String, u64)> {
    let sim: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("sim.json")).expect("sim.json"))
            .expect("sim.json is JSON");
    let is_start = |s: &str| reconciler::provider::commands::upgrade_target(s) == Some(version);
    sim["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter(|c| c["ok"] == true && c["command"].as_str().is_some_and(is_start))
        .map(|c| {
            (
                c["key"]["zone"].as_str().unwrap_or("").to_string(),
                c["at_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn ssm_commands(state_dir: &std::path::Path) -> usize {
    let sim: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("sim.json")).expect("sim.json"))
            .expect("sim.json is JSON");
    sim["commands"].as_array().map_or(0, Vec::len)
}

/// Zones in rollout order, each zone's restarts after the previous zone's last restart
/// plus the bake (5 simulated minutes).
fn assert_zone_by_zone(s: &[(String, u64)], zones: &[&str], per_zone: usize) {
    let order: Vec<&str> = s.iter().map(|(z, _)| z.as_str()).collect();
    let want: Vec<&str> = zones
        .iter()
        .flat_map(|z| std::iter::repeat_n(*z, per_zone))
        .collect();
    assert_eq!(order, want, "restarts not zone by zone: {s:?}");
    for w in zones.windows(2) {
        let last_prev = s
            .iter()
            .filter(|(z, _)| z == w[0])
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(0);
        let first_next = s
            .iter()
            .filter(|(z, _)| z == w[1])
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(0);
        assert!(
            first_next >= last_prev + 300_000,
            "{} started {} ms (simulated) after {}'s last restart, before its 5 min bake could end",
            w[1],
            first_next.saturating_sub(last_prev),
            w[0]
        );
    }
}

#[test]
fn commits_roll_out_zone_by_zone_bad_commits_change_nothing_force_push_goes_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ltc = |v: &str| coin("litecoin", v, 3, 2, 1);
    let remote = Remote::new(tmp.path(), &fleet_files(&[ltc("0.21.4")]));
    let c1 = fleet_tests::daemon::git(&remote.work, &["rev-parse", "HEAD"]);
    let mut d = Daemon::start(tmp.path(), &config(&remote.url(), true), &[]);
    d.wait_for("the first commit in force, in sync", LONG, |s| {
        s["commit"] == c1.as_str() && coin_at(s, "litecoin", "0.21.4")
    });
    assert_eq!(d.get("/readyz").map(|r| r.status), Some(200));

    // A version bump, pushed: seen by the file watcher (polling is 1 h), rolled out.
    remote.write(&fleet_files(&[ltc("0.21.5")]));
    let c2 = remote.commit_push("litecoin 0.21.5");
    d.wait_for("0.21.5 everywhere", LONG, |s| {
        s["commit"] == c2.as_str() && coin_at(s, "litecoin", "0.21.5")
    });
    let zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"];
    assert_zone_by_zone(&starts(&d.state_dir, "0.21.5"), &zones, 2);
    // Hardening: a pass that finds nothing to do says every zone is in line (`passed`), not
    // "not yet" because no rollout said so.
    let s = d.wait_for("a converged pass after the rollout", LONG, |s| {
        s["commit"] == c2.as_str()
            && s["pass"]["running"] == false
            && s["pass"]["last_result"] == "converged"
    });
    let z = &s["coins"]["litecoin"]["zones"];
    assert!(zones.iter().all(|zone| z[*zone]["passed"] == true), "{s}");

    // A broken commit: reported with file, line and column; nothing applied.
    let before = ssm_commands(&d.state_dir);
    let broken = fleet_tests::repo::CoinSpec {
        max_unavailable: 1,
        ..ltc("0.21.9")
    }
    .yaml()
    .replace("max_unavailable: 1", "max_unavailable: lots");
    remote.write(&[("coins/litecoin.yaml".into(), broken)]);
    let c3 = remote.commit_push("broken: max_unavailable is not a number");
    let s = d.wait_for("the broken commit reported", LONG, |s| {
        s["validation_error"]["commit"] == c3.as_str()
    });
    assert_eq!(
        s["commit"],
        c2.as_str(),
        "the last good commit stays in force"
    );
    let e = &s["validation_error"]["errors"][0];
    assert_eq!(e["file"], "coins/litecoin.yaml", "{s}");
    assert!(
        e["line"].as_u64().unwrap_or(0) > 0 && e["column"].as_u64().unwrap_or(0) > 0,
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_unavailable")
            || e["message"].as_str().unwrap_or("").contains("lots"),
        "{e}"
    );
    assert_eq!(d.metric("fleet_source_valid"), Some(0.0));
    assert_eq!(
        d.metric(&format!("fleet_invalid_commit_info{{commit=\"{c3}\"}}")),
        Some(1.0)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ssm_commands(&d.state_dir),
        before,
        "an invalid commit changed the fleet"
    );
    assert!(coin_at(&d.status(), "litecoin", "0.21.5"));
    assert!(
        d.log().contains(&c3) && d.log().contains("coins/litecoin.yaml"),
        "the error is logged"
    );

    // The fix (a newer version) resumes.
    remote.write(&fleet_files(&[ltc("0.21.6")]));
    let c4 = remote.commit_push("fix, and litecoin 0.21.6");
    let s = d.wait_for("0.21.6 everywhere", LONG, |s| {
        s["commit"] == c4.as_str() && coin_at(s, "litecoin", "0.21.6")
    });
    assert!(s["validation_error"].is_null(), "{s}");
    assert_eq!(d.metric("fleet_source_valid"), Some(1.0));
    assert_zone_by_zone(&starts(&d.state_dir, "0.21.6"), &zones, 2);

    // A force-push back to c2: the branch head is the truth.
    remote.force_push(&c2);
    d.wait_for("back to 0.21.5 after the force-push", LONG, |s| {
        s["commit"] == c2.as_str() && coin_at(s, "litecoin", "0.21.5")
    });
    assert_eq!(
        starts(&d.state_dir, "0.21.5").len(),
        12,
        "6 nodes started 0.21.5 twice (up, then back)"
    );
    let passes = d
        .metric("fleet_reconcile_passes_total{result=\"converged\"}")
        .unwrap_or(0.0);
    assert!(passes >= 1.0, "metrics count passes");

    let st = d.terminate(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "SIGTERM: clean exit, got {st:?}\n{}",
        d.log_tail()
    );
    assert!(d.log().contains("stopped cleanly"));
}

#[test]
fn webhook_fetches_at_once_and_bad_signatures_change_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ltc = |v: &str| coin("litecoin", v, 1, 1, 1);
    let remote = Remote::new(tmp.path(), &fleet_files(&[ltc("0.21.4")]));
    let c1 = fleet_tests::daemon::git(&remote.work, &["rev-parse", "HEAD"]);
    let secret = "s3cret-for-the-test";
    let mut d = Daemon::start(
        tmp.path(),
        &config(&remote.url(), false),
        &[("FLEET_GITHUB_WEBHOOK_SECRET", secret)],
    );
    d.wait_for("the first commit", LONG, |s| s["commit"] == c1.as_str());
    remote.write(&fleet_files(&[ltc("0.21.5")]));
    let c2 = remote.commit_push("litecoin 0.21.5");
    let fetches = || {
        d.metric("fleet_git_fetches_total{result=\"ok\"}")
            .unwrap_or(-1.0)
    };
    let f0 = fetches();
    assert!(f0 >= 1.0);

    let body = format!(
        r#"{{"ref":"refs/heads/main","before":"{c1}","after":"{c2}","repository":{{"full_name":"example/fleet"}},"pusher":{{"name":"op"}}}}"#
    );
    // Each delivery has its own id, as GitHub's do (a repeated id is a replay, handled once).
    let deliveries = std::cell::Cell::new(0u32);
    let post = |sig: Option<&str>, event: &str, body: &str| {
        deliveries.set(deliveries.get() + 1);
        let id = format!("72d3162e-cc78-11e3-81ab-4c9367dc{:04}", deliveries.get());
        let mut h = vec![
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", id.as_str()),
            ("Content-Type", "application/json"),
        ];
        if let Some(s) = sig {
            h.push(("X-Hub-Signature-256", s));
        }
        http(d.addr, "POST", "/hooks/github", &h, body.as_bytes()).expect("webhook answers")
    };
    // Unsigned, signed with another secret, a tampered body, a sha1 signature: 401 each.
    let wrong = github_signature("not-the-secret", body.as_bytes());
    let of_other = github_signature(secret, b"{\"ref\":\"refs/heads/other\"}");
    let sha1 = "sha1=0123456789abcdef0123456789abcdef01234567";
    for sig in [
        None,
        Some(wrong.as_str()),
        Some(of_other.as_str()),
        Some(sha1),
    ] {
        let r = post(sig, "push", &body);
        assert_eq!(r.status, 401, "{sig:?}: {}", r.body);
    }
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(fetches(), f0, "a rejected webhook caused a fetch");
    assert_eq!(d.status()["commit"], c1.as_str());
    assert_eq!(
        d.metric("fleet_webhook_requests_total{result=\"unauthorized\"}"),
        Some(4.0)
    );

    // Correctly signed but not a push to the watched branch: accepted, no fetch.
    let ping = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    assert_eq!(
        post(
            Some(&github_signature(secret, ping.as_bytes())),
            "ping",
            ping
        )
        .status,
        200
    );
    let other = body.replace("refs/heads/main", "refs/heads/feature");
    assert_eq!(
        post(
            Some(&github_signature(secret, other.as_bytes())),
            "push",
            &other
        )
        .status,
        202
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fetches(), f0, "a push to another branch caused a fetch");

    // The real thing: fetched at once, rolled out.
    let r = post(
        Some(&github_signature(secret, body.as_bytes())),
        "push",
        &body,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    d.wait_for("0.21.5 after the webhook", LONG, |s| {
        s["commit"] == c2.as_str() && coin_at(s, "litecoin", "0.21.5")
    });
    assert_eq!(fetches(), f0 + 1.0);
    let _ = d.terminate(Duration::from_secs(20));
}

#[test]
fn a_plain_directory_runs_with_nothing_but_flags() {
    // `fleet run --repo examples/fleet --provider sim`: the example is a directory inside
    // fleet's own checkout, read as it is on disk.
    let tmp = tempfile::tempdir().expect("tempdir");
    let example = workspace_root().join("examples/fleet");
    let mut d = Daemon::start_args(
        tmp.path(),
        &[
            "--repo",
            example.to_str().expect("utf-8"),
            "--provider",
            "sim",
        ],
        &[],
    );
    let s = d.wait_for("the example fleet in force and in sync", LONG, |s| {
        s["commit"]
            .as_str()
            .is_some_and(|c| c.starts_with("worktree-"))
            && s["coins"].as_object().is_some_and(|c| c.len() == 6)
            && s["coins"]
                .as_object()
                .is_some_and(|c| c.values().all(|c| c["state"] == "in-sync"))
    });
    assert_eq!(s["source"]["kind"], "directory");
    assert_eq!(d.get("/readyz").map(|r| r.status), Some(200));
    let m = d.get("/metrics").expect("metrics").body;
    assert!(
        m.contains("fleet_nodes{coin=\"bitcoin\",state=\"in_sync\"} 3"),
        "{m}"
    );
    // A simulated fleet says so on every screen.
    assert!(m.contains("fleet_provider_info{provider=\"sim\"} 1"), "{m}");
    let status: serde_json::Value =
        serde_json::from_str(&d.get("/status").expect("status").body).expect("json");
    assert_eq!(status["provider"], "sim");
    assert_eq!(status["simulated"], true);
    // Versions as the daemons report them (the probe read them), and as the tags record.
    let nodes: Vec<&serde_json::Value> = status["coins"]["bitcoin"]["zones"]
        .as_object()
        .expect("zones")
        .values()
        .flat_map(|z| z["nodes"].as_array().expect("nodes"))
        .collect();
    assert_eq!(nodes.len(), 3, "{status}");
    for n in nodes {
        assert_eq!(n["version_from"], "daemon", "{n}");
        assert_eq!(n["version"], n["recorded_version"], "{n}");
    }
    assert_eq!(d.get("/nope").map(|r| r.status), Some(404));
    assert_eq!(d.get("/hooks/github").map(|r| r.status), Some(405));

    // A second reconciler on the same state directory is refused.
    let out = std::process::Command::new(fleet_tests::daemon::fleet_bin())
        .args([
            "run",
            "--repo",
            example.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--provider",
            "sim",
            "--state-dir",
        ])
        .arg(&d.state_dir)
        .output()
        .expect("run fleet");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another fleet process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // So is an apply (or a plan: with the simulator both would rewrite the fleet's state).
    let state = d.state_dir.to_str().expect("utf-8").to_string();
    let ex = example.to_str().expect("utf-8").to_string();
    let sim = ["--provider", "sim"];
    let plan = fleet(&[&["plan", "--repo", &ex, "--state-dir", &state][..], &sim].concat());
    let apply = fleet(
        &[
            &["apply", "--repo", &ex, "--state-dir", &state, "--yes"][..],
            &sim,
        ]
        .concat(),
    );
    // Refused with 1: every error of plan and apply is 1 (2 is plan's "changes").
    for (cmd, out) in [("plan", plan), ("apply", apply)] {
        assert_eq!(out.code, 1, "{cmd}: {}", out.stderr);
        assert!(out.stderr.contains("GET /status"), "{cmd}: {}", out.stderr);
    }
    let _ = d.terminate(Duration::from_secs(20));
}

#[test]
fn the_node_watch_runs_in_fleet_run_and_shows_every_node_on_metrics() {
    // The example fleet, watched every 10 s (the shortest interval allowed).
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    fleet_tests::copy_dir(&workspace_root().join("examples/fleet"), &repo).expect("copy");
    let fy = repo.join("fleet.yaml");
    let text = std::fs::read_to_string(&fy).expect("fleet.yaml").replace(
        "health:  { max_lag_blocks: 3, stall_timeout: 30m, sync_timeout: 12h }",
        "health:  { max_lag_blocks: 3, stall_timeout: 30m, sync_timeout: 12h, watch_interval: 10s }",
    );
    assert!(text.contains("watch_interval: 10s"));
    std::fs::write(&fy, text).expect("write");
    let mut d = Daemon::start_args(
        tmp.path(),
        &["--repo", repo.to_str().expect("utf-8"), "--provider", "sim"],
        &[],
    );
    let s = d.wait_for("a watch of the fleet", LONG, |s| s["watched_ms"].is_u64());
    assert!(
        s["incidents"].as_array().is_some_and(|i| i.is_empty()),
        "{s}"
    );
    let m = d.get("/metrics").expect("metrics").body;
    for want in [
        "fleet_coin_synced_nodes{coin=\"bitcoin\"} 3",
        "fleet_coin_min_synced{coin=\"bitcoin\"} 1",
        "fleet_node_in_sync{coin=\"bitcoin\",zone=\"eu-central-1a\",index=\"1\"} 1",
        "fleet_node_lag_blocks{coin=\"bitcoin\",zone=\"eu-central-1a\",index=\"1\"} 0",
        "fleet_node_probe_errors_total{coin=\"bitcoin\",zone=\"eu-central-1a\",index=\"1\"} 0",
    ] {
        assert!(m.contains(want), "{want} missing from\n{m}");
    }
    assert!(
        d.metric("fleet_watches_total").is_some_and(|w| w >= 1.0),
        "{m}"
    );
    let _ = d.terminate(Duration::from_secs(20));
}

#[test]
fn bad_configuration_is_located_and_stops_before_anything_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(&cfg, "repo:\n  url: /srv/fleet\n  poll_intervall: 30s\n").expect("write");
    let out = fleet(&["run", "--config", cfg.to_str().expect("utf-8")]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("c.yaml:3:"), "{}", out.stderr);
    assert!(out.stderr.contains("poll_intervall"), "{}", out.stderr);
    std::fs::write(&cfg, "provider: sim\nrepo:\n  poll_interval: soon\n").expect("write");
    let out = fleet(&["run", "--config", cfg.to_str().expect("utf-8")]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("repo.poll_interval") && out.stderr.contains("soon"),
        "{}",
        out.stderr
    );
    let out = fleet(&[
        "run",
        "--listen",
        "nowhere",
        "--repo",
        ".",
        "--provider",
        "sim",
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("listen"), "{}", out.stderr);
    // An allowed-signers file with a line that does not read: located, nothing starts.
    let signers = tmp.path().join("allowed_signers");
    std::fs::write(
        &signers,
        "# ok\nalice@x ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMv4+0fCEavYMb51TF5NynYid7E+GzGmk+9+MBsu7tD2\nbob@x cert-authority ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMv4+0fCEavYMb51TF5NynYid7E+GzGmk+9+MBsu7tD2\n",
    )
    .expect("write");
    std::fs::write(
        &cfg,
        format!(
            "provider: sim\nrepo:\n  url: .\n  verify:\n    allowed_signers: {}\n",
            signers.display()
        ),
    )
    .expect("write");
    let out = fleet(&["run", "--config", cfg.to_str().expect("utf-8")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("allowed_signers:3:1") && out.stderr.contains("cert-authority"),
        "{}",
        out.stderr
    );
    // The example configuration is valid.
    let example = workspace_root().join("examples/reconciler.yaml");
    let text = std::fs::read_to_string(&example).expect("examples/reconciler.yaml");
    let file = reconciler::config::parse(&text, "examples/reconciler.yaml").expect("parses");
    reconciler::config::RunConfig::resolve(file, &reconciler::config::Overrides::default())
        .expect("resolves");
}

#[test]
fn sigterm_mid_rollout_stops_between_steps_and_a_restart_finishes_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ltc = |v: &str| coin("litecoin", v, 3, 2, 1);
    let remote = Remote::new(tmp.path(), &fleet_files(&[ltc("0.21.4")]));
    // ×100: each zone takes a few seconds (restarts, then a 5 min bake = 3 s).
    let cfg = config(&remote.url(), true).replace("speed: 600", "speed: 100");
    let mut d = Daemon::start(tmp.path(), &cfg, &[]);
    d.wait_for("in sync", LONG, |s| coin_at(s, "litecoin", "0.21.4"));
    remote.write(&fleet_files(&[ltc("0.21.5")]));
    let c2 = remote.commit_push("litecoin 0.21.5");
    let s = d.wait_for("the rollout under way", LONG, |s| {
        s["coins"]["litecoin"]["state"] == "rolling-out"
            && s["coins"]["litecoin"]["steps_done"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(s["coins"]["litecoin"]["steps_total"], 6, "{s}");
    let st = d.terminate(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "SIGTERM mid-rollout: clean exit, got {st:?}\n{}",
        d.log_tail()
    );
    assert!(d.log().contains("signal received"));
    let done = starts(&d.state_dir, "0.21.5").len();
    assert!(
        done < 6,
        "the rollout was not cut short ({done} of 6 started)"
    );
    d.restart(tmp.path(), &[]);
    d.wait_for("the rollout finished after the restart", LONG, |s| {
        s["commit"] == c2.as_str() && coin_at(s, "litecoin", "0.21.5")
    });
    let zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"];
    assert_zone_by_zone(&starts(&d.state_dir, "0.21.5"), &zones, 2);
    let _ = d.terminate(Duration::from_secs(20));
}

/// A coin whose rollout failed is held at that revision, across a restart of fleet too:
/// litecoin 0.21.5 is a bad release (the simulator's `bad-release`), its first node fails
/// its gate and is rolled back (`on_failure: rollback`) to 0.21.4, in sync; a restarted
/// fleet reads the failure back from the journal and does not upgrade it again.
#[test]
fn a_failed_rollout_stays_held_across_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = |v: &str| -> Vec<(String, String)> {
        fleet_files(&[coin("litecoin", v, 3, 1, 1)])
            .into_iter()
            .map(|(p, t)| {
                (
                    p,
                    t.replace("rollout:\n", "rollout:\n  on_failure: rollback\n"),
                )
            })
            .collect()
    };
    let remote = Remote::new(tmp.path(), &files("0.21.4"));
    let mut d = Daemon::start(tmp.path(), &config(&remote.url(), true), &[]);
    d.wait_for("in sync", LONG, |s| coin_at(s, "litecoin", "0.21.4"));
    let st = d.terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{}", d.log_tail());
    // 0.21.5 never syncs, on any node.
    let path = d.state_dir.join("sim.json");
    let mut sim: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    sim["faults"]
        .as_array_mut()
        .expect("faults")
        .push(serde_json::json!({"fault": "bad-release", "coin": "litecoin", "version": "0.21.5"}));
    std::fs::write(&path, serde_json::to_vec(&sim).unwrap()).unwrap();
    d.restart(tmp.path(), &[]);
    remote.write(&files("0.21.5"));
    let c2 = remote.commit_push("litecoin 0.21.5");
    let rolled_back = |dir: &std::path::Path| {
        let sim: Value =
            serde_json::from_slice(&std::fs::read(dir.join("sim.json")).unwrap()).unwrap();
        sim["commands"].as_array().map_or(0, |c| {
            c.iter()
                .filter(|c| {
                    c["command"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("fleet-node rollback '0.21.4'"))
                })
                .count()
        })
    };
    d.wait_for("the failed rollout held", LONG, |s| {
        s["commit"] == c2.as_str() && s["coins"]["litecoin"]["state"] == "held"
    });
    assert_eq!(rolled_back(&d.state_dir), 1, "{}", d.log_tail());
    let tried = starts(&d.state_dir, "0.21.5").len();
    assert_eq!(tried, 1, "one node upgraded before its gate failed");
    let st = d.terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{}", d.log_tail());

    d.restart(tmp.path(), &[]);
    let s = d.wait_for("held again after the restart", LONG, |s| {
        s["commit"] == c2.as_str()
            && s["coins"]["litecoin"]["state"] == "held"
            && s["pass"]["number"].as_u64().unwrap_or(0) >= 1
            && s["pass"]["running"] == false
    });
    assert!(
        s["coins"]["litecoin"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{s}"
    );
    assert_eq!(
        starts(&d.state_dir, "0.21.5").len(),
        tried,
        "the restarted fleet did not try the failed version again"
    );
    assert_eq!(rolled_back(&d.state_dir), 1);
    let _ = d.terminate(Duration::from_secs(20));
}
