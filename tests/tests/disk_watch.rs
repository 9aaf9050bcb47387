//! Disks on the simulator, on a manual clock: the simulator grows each chain's data on its
//! nodes' volumes (`ChainParams::disk_gb_per_day`), the node watch reads them as the
//! CloudWatch agent's hourly figures every 15 minutes, and when a coin's volumes fill
//! (`disk.min_days_left`, `disk.grow_at`) it opens exactly one pull request raising
//! `data_volume_gb` on GitHub's REST API on loopback (`github_mock`: the fleet repository a
//! real bare git repository), with the size the rule gives and the figures in its body;
//! with `disk.auto_grow` it grows every node's volume first, journals it, and the plan
//! reads the larger volumes as the coin's size, not as a shrink.

use bots::github::{GitHub, GitHubConfig, SystemPacer};
use bots::watch::WatchSettings;
use fleet_repo_schema::MemTree;
use fleet_tests::daemon::Remote;
use fleet_tests::github_mock::{self, GitHubMock};
use fleet_tests::workspace_root;
use reconciler::care::Watcher;
use reconciler::care::disk::{GrowOrder, Proposal};
use reconciler::clock::ManualClock;
use reconciler::daemon::watch::{GrowProposer, watch_once};
use reconciler::daemon::{Backend, Good, Shared};
use reconciler::events::{Event, RecordingNotifier, StepOutcome};
use reconciler::people::volume_pr::GitHubProposer;
use reconciler::provider::sim::{ChainParams, SimConfig, SimProber, SimProvider};
use reconciler::store::Journal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "ghp_test_token_0123456789";
const FLEET: &str = "acme/fleet";
const MIN: u64 = 60_000;
/// litecoin's chain grows this fast in these tests: its 300 GB volumes, 60 % full when
/// made, have 6 days left.
const GB_PER_DAY: f64 = 20.0;

/// Every file of examples/fleet, litecoin's edited by `edit`.
fn example_files(edit: &dyn Fn(String) -> String) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = workspace_root().join("examples/fleet");
    let mut v = Vec::new();
    walk(&root, &root, &mut v);
    v.into_iter()
        .map(|(p, t)| {
            let t = if p == "coins/litecoin.yaml" {
                edit(t)
            } else {
                t
            };
            (p, t)
        })
        .collect()
}

struct Rig {
    _tmp: tempfile::TempDir,
    remote: Remote,
    gh: GitHubMock,
    sim: SimProvider,
    clock: ManualClock,
    good: Good,
    shared: Arc<Shared>,
    journal: Journal,
    events: Arc<RecordingNotifier>,
    watcher: Watcher,
    backend: Backend,
    proposer: Option<Arc<dyn GrowProposer>>,
}

impl Rig {
    fn new(edit: &dyn Fn(String) -> String, github: bool) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let files = example_files(edit);
        let mut tree = MemTree::new();
        for (p, t) in &files {
            tree.insert(p, t.as_bytes().to_vec());
        }
        let desired = fleet_tests::world::desired_of(&tree);
        let remote = Remote::new(tmp.path(), &files);
        let gh = GitHubMock::start(TOKEN, "/api/v3");
        gh.add_repo(FLEET, &remote.origin);
        let clock = ManualClock::new(1_700_000_000_000);
        let mut config = SimConfig::default();
        config.chains.insert(
            "litecoin".into(),
            ChainParams {
                disk_gb_per_day: GB_PER_DAY,
                ..ChainParams::for_coin("litecoin")
            },
        );
        let sim = SimProvider::new(Arc::new(clock.clone()), config);
        sim.seed(&desired, &Default::default()).expect("seed");
        let backend = Backend {
            provider: Arc::new(sim.clone()),
            prober: Arc::new(SimProber(sim.clone())),
            clock: Arc::new(clock.clone()),
        };
        let proposer: Option<Arc<dyn GrowProposer>> = github.then(|| {
            Arc::new(GitHubProposer {
                gh: GitHub::new(
                    &GitHubConfig {
                        api_url: gh.api_url(),
                        token: Some(TOKEN.into()),
                        max_wait: Duration::from_secs(60),
                    },
                    Arc::new(SystemPacer),
                )
                .unwrap(),
                settings: WatchSettings {
                    fleet_repo: FLEET.into(),
                    base: "main".into(),
                    subdir: String::new(),
                    dry_run: false,
                },
            }) as Arc<dyn GrowProposer>
        });
        Rig {
            _tmp: tmp,
            remote,
            gh,
            sim,
            clock,
            good: Good {
                rev: "c1".into(),
                summary: None,
                desired: Arc::new(desired),
            },
            shared: Arc::new(Shared::default()),
            journal: Journal::in_memory(),
            events: Arc::new(RecordingNotifier::default()),
            watcher: Watcher::default(),
            backend,
            proposer,
        }
    }

    /// Watches every 15 minutes (each one reads the disks) for `hours`.
    async fn watch_for(&mut self, hours: u64) {
        for _ in 0..hours * 4 {
            let notifier = reconciler::daemon::report::StatusNotifier {
                shared: Arc::clone(&self.shared),
                next: self.events.clone(),
            };
            watch_once(
                &self.shared,
                &self.good,
                &self.backend,
                &self.journal,
                &notifier,
                &mut self.watcher,
                3_600_000,
                self.proposer.as_deref(),
            )
            .await
            .expect("a watch");
            self.clock.advance_ms(15 * MIN);
        }
    }

    fn grows(&self) -> Vec<(GrowOrder, Vec<StepOutcome>, Proposal)> {
        self.events
            .events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::DiskGrow {
                    order,
                    grown,
                    proposal,
                    ..
                } => Some((order, grown.into_iter().map(|(_, o)| o).collect(), proposal)),
                _ => None,
            })
            .collect()
    }

    fn file_on(&self, branch: &str, path: &str) -> String {
        let id = github_mock::git::resolve(&self.remote.origin, branch).expect("branch");
        String::from_utf8(
            github_mock::git::file(&self.remote.origin, id, path)
                .expect("file")
                .0,
        )
        .unwrap()
    }
}

/// The size the rule asks for a volume holding `used_gb` growing GB_PER_DAY, with the
/// default thresholds (30 days, 85 %, 25 %): twice 30 days of growth wins here.
fn expected_size(used_gb: f64) -> u32 {
    let want = (used_gb + GB_PER_DAY * 60.0)
        .max(300.0 * 1.25)
        .max(used_gb / 0.75)
        .ceil() as u32;
    want.div_ceil(10) * 10
}

#[tokio::test]
async fn a_filling_coin_gets_one_pull_request_with_the_size_and_its_figures() {
    let mut rig = Rig::new(&|t| t, true);
    rig.watch_for(48).await;
    let grows = rig.grows();
    assert_eq!(grows.len(), 1, "one grow told: {grows:#?}");
    let (order, grown, proposal) = &grows[0];
    assert_eq!(order.coin.as_str(), "litecoin");
    assert!(grown.is_empty(), "auto_grow is off: nothing grown");
    let Proposal::Opened { number, .. } = proposal else {
        panic!("{proposal:?}")
    };
    // Measured as the simulator grows it; 6 days left is under disk.min_days_left.
    assert!(
        (order.gb_per_day.unwrap() - GB_PER_DAY).abs() < 1e-6,
        "{order:?}"
    );
    let days = order.days_left.unwrap();
    assert!(days > 5.5 && days < 6.0, "{days}");
    assert_eq!(order.from_gb, 300);
    assert_eq!(order.to_gb, expected_size(order.used_gb), "{order:?}");

    // Exactly one pull request, however many disk reads saw the coin filling since.
    let pulls = rig.gh.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    let pr = &pulls[0];
    assert_eq!(pr.number, *number);
    assert_eq!(pr.head, "fleet/disk-litecoin-300gb");
    assert_eq!(pr.state, "open");
    assert_eq!(
        pr.title,
        format!("litecoin: grow the data volume 300 → {} GB", order.to_gb)
    );
    for s in [
        format!("| Proposed | {} GB |", order.to_gb),
        "| Growth (last day) | 20.00 GB a day |".to_string(),
        format!("| Used | {:.1} %", order.used_percent),
        "`disk.min_days_left` 30".to_string(),
        format!("`{}`", order.node),
    ] {
        assert!(pr.body.contains(&s), "{s} not in\n{}", pr.body);
    }
    // The commit changes data_volume_gb and nothing else.
    let before =
        std::fs::read_to_string(workspace_root().join("examples/fleet/coins/litecoin.yaml"))
            .unwrap();
    let after = rig.file_on("fleet/disk-litecoin-300gb", "coins/litecoin.yaml");
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(
        changed[0]
            .1
            .contains(&format!("data_volume_gb: {}", order.to_gb)),
        "{changed:?}"
    );
    // The grow is on /status, the nodes' figures on /metrics.
    let st = rig.shared.status_mut(|s| s.clone());
    let lite = &st.coins["litecoin"];
    assert!(
        lite.disk
            .as_ref()
            .is_some_and(|d| d.order.to_gb == order.to_gb)
    );
    let metrics = rig.shared.metrics.render();
    let series = |name: &str| -> Vec<f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("coin=\"litecoin\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let used = series("fleet_node_disk_used_percent{");
    assert_eq!(used.len(), 2, "{metrics}");
    assert!(used.iter().all(|p| *p > 60.0 && *p < 85.0), "{used:?}");
    let left = series("fleet_node_disk_days_left{");
    assert_eq!(left.len(), 2, "{metrics}");
    assert!(left.iter().all(|d| *d < 6.0), "{left:?}");
    // Nothing was grown: the volumes wait for the merge.
    let observed = fleet_tests::observe(&rig.sim, &rig.good.desired).await;
    for n in observed.nodes_of(&order.coin) {
        assert_eq!(n.data_volume.as_ref().unwrap().size_gb, 300);
    }
}

#[tokio::test]
async fn auto_grow_grows_every_volume_once_journals_it_and_the_plan_keeps_the_size() {
    let mut rig = Rig::new(&|t| format!("{t}disk:\n  auto_grow: true\n"), true);
    rig.watch_for(48).await;
    let grows = rig.grows();
    assert_eq!(grows.len(), 1, "one grow: {grows:#?}");
    let (order, grown, proposal) = &grows[0];
    assert_eq!(grown, &vec![StepOutcome::Done, StepOutcome::Done]);
    assert!(matches!(proposal, Proposal::Opened { .. }), "{proposal:?}");
    assert_eq!(rig.journal.auto_grown("litecoin"), Some(order.to_gb));
    let observed = fleet_tests::observe(&rig.sim, &rig.good.desired).await;
    for n in observed.nodes_of(&order.coin) {
        assert_eq!(n.data_volume.as_ref().unwrap().size_gb, order.to_gb);
    }
    let pulls = rig.gh.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        pulls[0].title,
        format!(
            "litecoin: record the data volume grown to {} GB",
            order.to_gb
        )
    );
    assert!(
        pulls[0].body.contains("has grown the volumes"),
        "{}",
        pulls[0].body
    );

    // The repository still says 300: without the journal's record the larger volumes read
    // as a shrink the repository asks for; with it, they are the coin's size.
    let d = &rig.good.desired;
    let bare = reconciler::plan::plan(d, &observed, 0);
    let refused = &bare
        .coins
        .iter()
        .find(|c| c.coin.as_str() == "litecoin")
        .unwrap()
        .refusals;
    assert!(
        refused.iter().any(|r| r.reason.contains("cannot shrink")),
        "{refused:?}"
    );
    let mut with = observed.clone();
    with.auto_grown = rig.journal.auto_grown_all();
    let p = reconciler::plan::plan(d, &with, 0);
    // Nothing to do for litecoin: no refusal, no step (the plan lists it not at all).
    assert!(
        !p.coins.iter().any(|c| c.coin.as_str() == "litecoin"),
        "{:#?}",
        p.coins
    );
    assert!(
        p.flagged
            .iter()
            .any(|f| f.reason.contains("grew litecoin's data volumes")),
        "{:?}",
        p.flagged
    );
}

#[tokio::test]
async fn without_github_the_grow_is_told_once_and_nothing_is_grown() {
    let mut rig = Rig::new(&|t| t, false);
    rig.watch_for(24).await;
    let grows = rig.grows();
    assert_eq!(grows.len(), 1, "{grows:#?}");
    assert_eq!(grows[0].2, Proposal::NoGitHub);
    assert!(grows[0].1.is_empty());
    assert!(rig.gh.pulls().is_empty());
}
