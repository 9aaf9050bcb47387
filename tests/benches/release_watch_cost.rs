//! What the release watch costs GitHub: requests per cycle and how many of them count
//! against the rate limit, for 25 coins whose upstreams have 150 releases each (2 pages),
//! against GitHub's API on loopback (`github_mock`, which answers a matching
//! `If-None-Match` with 304 and does not charge it, as GitHub does).
//!
//! Cycle 1 reads everything and opens one bump; cycle 2 sees the new pull request in the
//! list; cycles 3.. are idle. Prints requests, 304s, charged requests and wall time per cycle.
//!
//! `cargo bench -p fleet-tests --bench release_watch_cost`

use bots::github::{GitHub, GitHubConfig, SystemPacer};
use bots::watch::{self, CoinOutcome, WatchSettings};
use fleet_tests::daemon::{Remote, coin, fleet_files};
use fleet_tests::github_mock::{GitHubMock, release};
use std::sync::Arc;
use std::time::{Duration, Instant};

const COINS: usize = 25;
const RELEASES: u64 = 150;

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut files = fleet_files(&[]);
        let gh = GitHubMock::start("t", "");
        for i in 0..COINS {
            let name = format!("coin{i:02}");
            let mut y = coin(&name, "1.0.0", 3, 1, 1).yaml();
            y.push_str(&format!("upstream:\n  github: upstream/{name}\n"));
            files.push((format!("coins/{name}.yaml"), y));
            let repo = format!("upstream/{name}");
            // Old releases, and for coin00 one newer than the fleet's 1.0.0.
            let mut rs: Vec<_> = (0..RELEASES)
                .map(|k| {
                    release(
                        &repo,
                        k,
                        &format!("v0.{}.{}", k / 10, k % 10),
                        Some(now - 400 * 86_400),
                        false,
                        "notes",
                    )
                })
                .collect();
            if i == 0 {
                rs.insert(
                    0,
                    release(&repo, 999, "v1.1.0", Some(now - 3 * 86_400), false, "1.1.0"),
                );
            }
            gh.set_releases(&repo, rs);
        }
        let remote = Remote::new(tmp.path(), &files);
        gh.add_repo("acme/fleet", &remote.origin);
        let mut t = fleet_repo_schema::MemTree::new();
        for (p, s) in &files {
            t.insert(p, s.as_bytes().to_vec());
        }
        let desired = fleet_repo_schema::load(&t).desired.expect("valid fleet");
        let client = GitHub::new(
            &GitHubConfig {
                api_url: gh.api_url(),
                token: Some("t".into()),
                max_wait: Duration::from_secs(60),
            },
            Arc::new(SystemPacer),
        )
        .unwrap();
        let settings = WatchSettings {
            fleet_repo: "acme/fleet".into(),
            base: "main".into(),
            subdir: String::new(),
            dry_run: false,
        };
        println!("release watch: {COINS} coins, {RELEASES}+ releases each (2 pages of 100)");
        println!(
            "{:>6} {:>9} {:>6} {:>8} {:>12} {:>9}",
            "cycle", "requests", "304s", "charged", "rate-limited", "wall ms"
        );
        for n in 1..=5 {
            let t0 = Instant::now();
            let r = watch::cycle(&client, &desired, &settings, None, now * 1000).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let s = r.requests;
            println!(
                "{n:>6} {:>9} {:>6} {:>8} {:>12} {ms:>9.1}",
                s.requests, s.not_modified, s.counted, s.rate_limited
            );
            if n == 1 {
                assert!(
                    matches!(r.coins["coin00"], CoinOutcome::Opened { .. }),
                    "{:?}",
                    r.coins["coin00"]
                );
            }
            if n >= 3 {
                assert_eq!(s.counted, 0, "an idle cycle must cost nothing");
            }
        }
    });
}
