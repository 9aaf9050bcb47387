//! `/healthz` latency of `fleet run` while clients crowd its HTTP server: idle sockets held
//! open (0 to past the 1,024 slots), with and without 70 clients that reconnect as soon as
//! they are closed. Prints p50, p99 and the worst of 200 health checks per row.
//!
//! `cargo bench -p fleet-tests --bench http_crowding --profile dev` (the `fleet` binary of
//! the workspace, or FLEET_BIN).

use fleet_tests::daemon::{Daemon, http};
use fleet_tests::workspace_root;
use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CHECKS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = workspace_root().join("examples/fleet");
    let d = Daemon::start_args(
        dir.path(),
        &[
            "--repo",
            example.to_str().expect("utf-8"),
            "--provider",
            "sim",
        ],
        &[],
    );
    let addr = d.addr;
    println!("| idle sockets | reconnecting | connected | p50 | p99 | worst | failed |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (idle_n, loops_n) in [
        (0, 0),
        (190, 0),
        (1_100, 0),
        (0, 70),
        (1_100, 70),
        (2_000, 70),
    ] {
        let idle: Vec<TcpStream> = (0..idle_n)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let loops: Vec<_> = (0..loops_n)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                        {
                            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut b = [0u8; 1];
                            while !stop.load(Ordering::SeqCst) && !matches!(s.read(&mut b), Ok(0)) {
                            }
                        }
                    }
                })
            })
            .collect();
        // Past the silent grace, so the idle sockets are the ones the server may close.
        std::thread::sleep(Duration::from_millis(1_200));
        let mut took = Vec::with_capacity(CHECKS);
        let mut failed = 0;
        for _ in 0..CHECKS {
            let t = Instant::now();
            let ok = http(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200);
            took.push(t.elapsed());
            if !ok {
                failed += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
        for l in loops {
            let _ = l.join();
        }
        let connected = idle.len();
        drop(idle);
        took.sort();
        println!(
            "| {idle_n} | {loops_n} | {connected} | {:.2} ms | {:.2} ms | {:.2} ms | {failed} |",
            percentile(&took, 0.5).as_secs_f64() * 1e3,
            percentile(&took, 0.99).as_secs_f64() * 1e3,
            took[took.len() - 1].as_secs_f64() * 1e3,
        );
        // Let the server see the closed sockets before the next row.
        std::thread::sleep(Duration::from_millis(500));
    }
    let crowded = |k: &str| {
        d.metric(&format!(
            "fleet_http_connections_crowded_total{{kind=\"{k}\"}}"
        ))
        .unwrap_or(0.0)
    };
    println!(
        "connections closed to make room: {}, shed: {}",
        crowded("evicted"),
        crowded("shed")
    );
}
