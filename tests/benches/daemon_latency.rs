//! Commit-to-first-action latency of `fleet run`: the time from `git push` of a version bump
//! to the first change the reconciler makes to the fleet (the simulator's first SSM command
//! of the rollout), with the GitHub push webhook, with the file watcher, and with interval
//! polling at the default 30 s.
//!
//! `cargo bench -p fleet-tests --bench daemon_latency` (the `fleet` binary must be built:
//! `cargo build --release --bin fleet`, or set FLEET_BIN). Samples per mode:
//! FLEET_BENCH_SAMPLES (default 20; polling takes at most 8, each costs ~30 s). Modes:
//! FLEET_BENCH_MODES (default `webhook,watch,poll`).

use fleet_tests::daemon::{Daemon, Remote, coin, coin_at, fleet_files, github_signature, http};
use serde_json::Value;
use std::time::{Duration, Instant};

fn commands(state: &std::path::Path) -> usize {
    std::fs::read(state.join("sim.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["commands"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Webhook,
    Watch,
    Poll,
}

fn run(mode: Mode, samples: usize) -> Vec<f64> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = |v: &str| vec![coin("litecoin", v, 1, 1, 1)];
    let remote = Remote::new(tmp.path(), &fleet_files(&c("1.0.0")));
    let secret = "bench-secret";
    let (watch, poll) = match mode {
        Mode::Webhook => (false, "1h"),
        Mode::Watch => (true, "1h"),
        Mode::Poll => (false, "30s"),
    };
    let config = format!(
        "repo:\n  url: {}\n  branch: main\n  poll_interval: {poll}\n  watch: {watch}\n\
         provider: sim\nsim:\n  speed: 600\nreconcile:\n  requeue: 1h\n  gate_poll: 10s\n",
        remote.url()
    );
    let d = Daemon::start(
        tmp.path(),
        &config,
        &[("FLEET_GITHUB_WEBHOOK_SECRET", secret)],
    );
    d.wait_for("ready", Duration::from_secs(120), |s| {
        coin_at(s, "litecoin", "1.0.0")
    });
    let mut out = Vec::new();
    let mut phase = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 1..=samples {
        if mode == Mode::Poll {
            // Commits arrive at any moment of the poll cycle, not right after a poll (which
            // is when the previous rollout converged): wait a pseudo-random part of it.
            phase ^= phase << 13;
            phase ^= phase >> 7;
            phase ^= phase << 17;
            std::thread::sleep(Duration::from_millis(phase % 30_000));
        }
        let v = format!("1.0.{i}");
        remote.write(&fleet_files(&c(&v)));
        let before = commands(&d.state_dir);
        let rev = remote.commit(&format!("bump {v}"));
        let t0 = Instant::now();
        fleet_tests::daemon::git(&remote.work, &["push", "-q", "origin", "main"]);
        if mode == Mode::Webhook {
            let body = format!(r#"{{"ref":"refs/heads/main","after":"{rev}"}}"#);
            let sig = github_signature(secret, body.as_bytes());
            let r = http(
                d.addr,
                "POST",
                "/hooks/github",
                &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
                body.as_bytes(),
            )
            .expect("webhook");
            assert_eq!(r.status, 202);
        }
        while commands(&d.state_dir) == before {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "no action within 120 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        d.wait_for("converged", Duration::from_secs(120), |s| {
            coin_at(s, "litecoin", &v)
        });
    }
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let samples: usize = std::env::var("FLEET_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!(
        "commit-to-first-action latency (git push → first SSM command), fleet binary {}",
        fleet_tests::daemon::fleet_bin().display()
    );
    let modes = std::env::var("FLEET_BENCH_MODES").unwrap_or_else(|_| "webhook,watch,poll".into());
    for (name, mode, n) in [
        ("webhook", Mode::Webhook, samples),
        ("file watch", Mode::Watch, samples),
        ("poll 30s", Mode::Poll, samples.min(8)),
    ] {
        let key = match mode {
            Mode::Webhook => "webhook",
            Mode::Watch => "watch",
            Mode::Poll => "poll",
        };
        if !modes.split(',').any(|m| m == key) {
            continue;
        }
        let v = run(mode, n);
        println!(
            "{name:>10}: n={n:>2}  p50 {:>8.1} ms  p90 {:>8.1} ms  min {:>8.1} ms  max {:>8.1} ms",
            pct(&v, 0.5),
            pct(&v, 0.9),
            pct(&v, 0.0),
            pct(&v, 1.0)
        );
    }
    println!("(for comparison: Argo CD polls every ~3 minutes by default; expected wait 90 s)");
}
