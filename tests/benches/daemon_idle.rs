//! The idle reconciler: memory and CPU of `fleet run` with 1,000 simulated nodes (100 coins ×
//! 2 zones × 5 nodes) once converged, at the default settings (fetch every 30 s, a pass
//! every 5 min, the node watch every minute: one observation and 1,000 probes), simulator at
//! real time; and the provider API calls it makes while idle, per hour.
//!
//! `cargo bench -p fleet-tests --bench daemon_idle` (the `fleet` binary must be built:
//! `cargo build --release --bin fleet`, or set FLEET_BIN). Idle window: FLEET_BENCH_IDLE_SECS
//! (default 120).

use fleet_tests::daemon::{Daemon, Remote, fleet_files};
use fleet_tests::repo::CoinSpec;
use std::time::{Duration, Instant};

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/pid/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn proc_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/pid/status");
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() {
    let idle_secs: u64 = std::env::var("FLEET_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let tmp = tempfile::tempdir().expect("tempdir");
    let coins: Vec<CoinSpec> = (0..100)
        .map(|i| {
            let mut c = fleet_tests::daemon::coin(&format!("coin-{i:03}"), "1.0.0", 2, 5, 1);
            c.bake = "10m".into();
            c
        })
        .collect();
    let remote = Remote::new(tmp.path(), &fleet_files(&coins));
    let config = format!(
        "repo:\n  url: {}\n  branch: main\nprovider: sim\nsim:\n  speed: 1\n",
        remote.url()
    );
    let t = Instant::now();
    let d = Daemon::start(tmp.path(), &config, &[]);
    let pid = d.pid().expect("pid");
    let s = d.wait_for("1,000 nodes converged", Duration::from_secs(300), |s| {
        s["pass"]["last_result"] == "converged"
    });
    let nodes: usize = s["coins"]
        .as_object()
        .map(|c| {
            c.values()
                .flat_map(|c| c["zones"].as_object().into_iter().flat_map(|z| z.values()))
                .map(|z| z["nodes"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    let first = s["pass"]["finished_ms"].as_u64().unwrap_or(0)
        - s["pass"]["started_ms"].as_u64().unwrap_or(0);
    println!(
        "fleet run with {nodes} simulated nodes in {} coins: ready and converged {:.1} s after start (first pass: observe, probe every node, plan: {first} ms)",
        s["coins"].as_object().map_or(0, |c| c.len()),
        t.elapsed().as_secs_f64()
    );
    let calls0 = d.metric("fleet_provider_api_calls_total").unwrap_or(0.0);
    let watches0 = d.metric("fleet_watches_total").unwrap_or(0.0);
    let rss_start = proc_kib(pid, "VmRSS:");
    let cpu0 = proc_cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu1 = proc_cpu_ticks(pid);
    let wall = t0.elapsed().as_secs_f64();
    let cpu_s = (cpu1 - cpu0) as f64 / clk_tck();
    let fetches = d
        .metric("fleet_git_fetches_total{result=\"ok\"}")
        .unwrap_or(0.0);
    let calls = d.metric("fleet_provider_api_calls_total").unwrap_or(0.0) - calls0;
    let watches = d.metric("fleet_watches_total").unwrap_or(0.0) - watches0;
    println!(
        "idle {wall:.0} s: CPU {cpu_s:.2} s ({:.3} % of one core), RSS {} KiB at start of idle, {} KiB at end, peak {} KiB; {fetches} fetches so far",
        cpu_s / wall * 100.0,
        rss_start,
        proc_kib(pid, "VmRSS:"),
        proc_kib(pid, "VmHWM:"),
    );
    println!(
        "idle {wall:.0} s: {watches} watches of 1,000 nodes, {calls} provider API calls ({:.0} an hour; simulated, AWS's page sizes)",
        calls / wall * 3600.0
    );
}
