//! The node watch of `fleet run` on the simulator, on a manual clock: one watch per simulated
//! minute, as `fleet run` makes them every `health.watch_interval`. A node whose daemon loses
//! its peers goes out of sync, then stuck; its incident opens once, its heal restarts it
//! through the provider, it catches up and the incident resolves once. A crash-looping node is
//! healed at most `heal.max_per_day` times; `heal: off` and a coin fleet is rolling out are
//! left alone.

use fleet_tests::world::{desired_of, example_tree};
use reconciler::care::Watcher;
use reconciler::care::incident::{Care, Change, Condition, Incident};
use reconciler::clock::{Clock, ManualClock};
use reconciler::daemon::watch::watch_once;
use reconciler::daemon::{Backend, Good, Shared};
use reconciler::events::{Event, RecordingNotifier, StepOutcome};
use reconciler::node::NodeKey;
use reconciler::provider::Provider;
use reconciler::provider::sim::{SimConfig, SimFault, SimProber, SimProvider};
use reconciler::store::Journal;
use std::sync::Arc;

const MIN: u64 = 60_000;

struct Fleet {
    sim: SimProvider,
    clock: ManualClock,
    good: Good,
    shared: Arc<Shared>,
    journal: Journal,
    events: Arc<RecordingNotifier>,
    watcher: Watcher,
    backend: Backend,
}

impl Fleet {
    /// The example fleet, in sync, with litecoin's file edited by `edit`.
    fn new(edit: impl Fn(&str) -> String) -> Fleet {
        let mut tree = example_tree();
        let lite = std::fs::read_to_string(
            fleet_tests::workspace_root().join("examples/fleet/coins/litecoin.yaml"),
        )
        .expect("the example litecoin");
        tree.insert("coins/litecoin.yaml", edit(&lite).into_bytes());
        let desired = desired_of(&tree);
        let clock = ManualClock::new(1_700_000_000_000);
        let sim = SimProvider::new(Arc::new(clock.clone()), SimConfig::default());
        sim.seed(&desired, &Default::default()).expect("seed");
        let backend = Backend {
            provider: Arc::new(sim.clone()),
            prober: Arc::new(SimProber(sim.clone())),
            clock: Arc::new(clock.clone()),
        };
        Fleet {
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
        }
    }

    /// One watch now, then a minute passes.
    async fn watch(&mut self) {
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
            None,
        )
        .await
        .expect("a watch");
        self.clock.advance_ms(MIN);
    }

    fn incidents(&self) -> Vec<(u64, Incident, Change)> {
        self.events
            .events()
            .into_iter()
            .filter_map(|(at, e)| match e {
                Event::Incident { incident, change } => Some((at, incident, change)),
                _ => None,
            })
            .collect()
    }

    fn heals(&self) -> Vec<(u64, NodeKey, StepOutcome)> {
        self.events
            .events()
            .into_iter()
            .filter_map(|(at, e)| match e {
                Event::Healed { node, outcome, .. } => Some((at, node, outcome)),
                _ => None,
            })
            .collect()
    }

    fn restarts(&self) -> usize {
        self.sim
            .commands()
            .iter()
            .filter(|c| c.command.contains("fleet-node restart"))
            .count()
    }
}

fn node1() -> NodeKey {
    NodeKey::parse("litecoin", "eu-central-1a", 1).unwrap()
}

#[tokio::test]
async fn a_stuck_node_opens_one_incident_is_restarted_catches_up_and_resolves_once() {
    let mut f = Fleet::new(|s| s.to_string());
    let t0 = f.clock.now_ms();
    for _ in 0..3 {
        f.watch().await;
    }
    assert!(f.incidents().is_empty(), "{:#?}", f.incidents());
    // The node loses its peers: its height stops where the chain is now.
    let hung_at = f.clock.now_ms();
    f.sim.inject(SimFault::Hangs {
        key: node1(),
        height: f.sim.tip("litecoin"),
    });
    for _ in 0..120 {
        f.watch().await;
    }
    let inc = f.incidents();
    let opened: Vec<_> = inc.iter().filter(|i| i.2 == Change::Opened).collect();
    let resolved: Vec<_> = inc.iter().filter(|i| i.2 == Change::Resolved).collect();
    assert_eq!(opened.len(), 1, "{inc:#?}");
    assert_eq!(resolved.len(), 1, "{inc:#?}");
    assert!(inc.iter().all(|i| i.1.id == opened[0].1.id), "{inc:#?}");
    assert_eq!(
        opened[0].1.subject,
        reconciler::care::incident::Subject::Node { node: node1() }
    );
    // litecoin's max_lag_blocks is 3 (2.5-minute blocks): behind from ~7.5 minutes after the
    // hang, and the incident alert_after (5m) later.
    let out_of_sync_at = opened[0].1.since_ms;
    assert!(matches!(opened[0].1.condition, Condition::OutOfSync { .. }));
    assert_eq!(opened[0].0 - out_of_sync_at, 5 * MIN, "{inc:#?}");
    // Then stuck: its height unmoved for stall_timeout (30m) while the chain moved.
    let stuck = inc
        .iter()
        .find(|i| matches!(i.1.condition, Condition::Stuck { .. }))
        .expect("the incident says stuck");
    assert_eq!(stuck.2, Change::Updated);
    assert_eq!(stuck.0 - hung_at, 30 * MIN, "{inc:#?}");
    // The heal: heal.restart_after (30m) after it went out of sync, through the provider.
    let heals = f.heals();
    assert_eq!(heals.len(), 1, "{heals:#?}");
    assert_eq!(heals[0].1, node1());
    assert_eq!(heals[0].2, StepOutcome::Done);
    assert_eq!(heals[0].0 - out_of_sync_at, 30 * MIN);
    assert_eq!(f.restarts(), 1);
    assert!(
        inc.iter()
            .any(|i| matches!(i.1.care, Care::Healed { restarts: 1, .. }))
    );
    // Back in sync: resolved within minutes of the restart.
    assert!(resolved[0].0 > heals[0].0 && resolved[0].0 - heals[0].0 <= 5 * MIN);
    assert!(f.shared.status().incidents.is_empty());
    // Journaled, for max_per_day across restarts of fleet.
    assert_eq!(f.journal.heals("litecoin", t0).len(), 1);
    let m = f.shared.metrics.render();
    assert!(
        m.contains(r#"fleet_heals_total{coin="litecoin",reason="stuck",outcome="done"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fleet_incident_changes_total{change="opened"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"fleet_node_in_sync{coin="litecoin",zone="eu-central-1a",index="1"} 1"#),
        "{m}"
    );
    println!(
        "hang -> out of sync {} min; -> incident {} min; -> stuck {} min; -> heal {} min; -> resolved {} min",
        (out_of_sync_at - hung_at) / MIN,
        (opened[0].0 - hung_at) / MIN,
        (stuck.0 - hung_at) / MIN,
        (heals[0].0 - hung_at) / MIN,
        (resolved[0].0 - hung_at) / MIN
    );
}

#[tokio::test]
async fn a_crash_looping_node_is_healed_at_most_max_per_day_then_left_for_a_person() {
    let mut f = Fleet::new(|s| format!("{s}heal:\n  restart_after: 10m\n  max_per_day: 2\n"));
    f.watch().await;
    let start = f.clock.now_ms();
    f.sim.inject(SimFault::CrashLoops {
        key: node1(),
        up_ms: 20 * MIN,
    });
    for _ in 0..(26 * 60) {
        f.watch().await;
    }
    let heals = f.heals();
    let in_first_day = heals.iter().filter(|h| h.0 < start + 24 * 60 * MIN).count();
    assert_eq!(in_first_day, 2, "{heals:#?}");
    // No two heals within 24 hours beyond the limit, whatever the window.
    for (i, h) in heals.iter().enumerate() {
        let window = heals[i..]
            .iter()
            .filter(|o| o.0 < h.0 + 24 * 60 * MIN)
            .count();
        assert!(window <= 2, "{heals:#?}");
    }
    let inc = f.incidents();
    assert!(
        inc.iter().any(
            |i| matches!(&i.1.care, Care::LeftForPerson { why } if why.contains("max_per_day 2"))
        ),
        "{inc:#?}"
    );
    // One incident per trouble: a flap within the repeat window reopens, it does not open.
    let opened = inc.iter().filter(|i| i.2 == Change::Opened).count();
    assert!(opened <= 26, "{inc:#?}");
    assert_eq!(f.restarts(), heals.len());
}

#[tokio::test]
async fn heal_off_and_a_coin_rolling_out_are_left_alone() {
    let mut f = Fleet::new(|s| format!("{s}heal: off\n"));
    f.watch().await;
    f.sim.inject(SimFault::Hangs {
        key: node1(),
        height: f.sim.tip("litecoin"),
    });
    for _ in 0..90 {
        f.watch().await;
    }
    assert!(f.heals().is_empty());
    assert_eq!(f.restarts(), 0);
    // The incident is open, and stays open: nobody restarts it.
    let open = f.shared.status().incidents;
    assert_eq!(open.len(), 1, "{open:#?}");
    assert!(matches!(open[0].condition, Condition::Stuck { .. }));

    // A coin fleet is rolling out: its nodes are its gates', nothing opens.
    let mut f = Fleet::new(|s| s.to_string());
    f.watch().await;
    f.shared.rolling_mut(|r| {
        r.insert(node1().coin.clone());
    });
    f.sim.inject(SimFault::Hangs {
        key: node1(),
        height: f.sim.tip("litecoin"),
    });
    for _ in 0..90 {
        f.watch().await;
    }
    assert!(f.incidents().is_empty(), "{:#?}", f.incidents());
    assert!(f.heals().is_empty());
}

#[tokio::test]
async fn an_instance_failing_its_status_checks_is_an_incident_and_with_replace_after_off_left_for_a_person()
 {
    let mut f = Fleet::new(|s| format!("{s}heal:\n  replace_after: off\n"));
    for _ in 0..3 {
        f.watch().await;
    }
    let broke_at = f.clock.now_ms();
    f.sim.inject(SimFault::FailsStatusChecks {
        key: node1(),
        system: true,
        instance_id: None,
    });
    for _ in 0..40 {
        f.watch().await;
    }
    let inc = f.incidents();
    assert_eq!(inc[0].2, Change::Opened, "{inc:#?}");
    assert_eq!(inc[0].0 - broke_at, 5 * MIN, "alert_after");
    assert!(
        matches!(
            inc[0].1.condition,
            Condition::StatusChecks {
                system: reconciler::provider::CheckState::Impaired,
                ..
            }
        ),
        "{inc:#?}"
    );
    // SSM cannot reach it: no restart; replacing is off, so a person is asked,
    // restart_after (30m) later.
    assert!(f.heals().is_empty());
    assert_eq!(f.restarts(), 0);
    let left = inc
        .iter()
        .find(|i| matches!(&i.1.care, Care::LeftForPerson { why } if why.contains("status checks")))
        .unwrap_or_else(|| panic!("{inc:#?}"));
    assert_eq!(left.0 - broke_at, 30 * MIN);
    // Mended (a person stopped and started it): resolved.
    f.sim.clear_faults();
    for _ in 0..5 {
        f.watch().await;
    }
    assert_eq!(
        f.incidents().last().map(|i| i.2),
        Some(Change::Resolved),
        "{:#?}",
        f.incidents()
    );
}

#[tokio::test]
async fn the_snapshot_schedule_keeps_a_fresh_copy_and_only_keep_of_its_own_over_30_days() {
    let mut f = Fleet::new(|s| {
        s.replace(
            "snapshots:\n  before_upgrade: true\n",
            "snapshots:\n  before_upgrade: true\n  every: 24h\n  keep: 3\n  max_age: 2d\n",
        )
    });
    assert_eq!(f.good.desired.coins["litecoin"].snapshots.keep, 3);
    // A fresh fleet has no snapshot: the plan says so.
    let o = observe_now(&f).await;
    let p = reconciler::plan::plan(&f.good.desired, &o, f.clock.now_ms());
    assert!(
        p.flagged
            .iter()
            .any(|fl| fl.what == "litecoin" && fl.reason.contains("no snapshot")),
        "{:#?}",
        p.flagged
    );
    let start = f.clock.now_ms();
    // One watch an hour for 30 days (the schedule is judged by time, not by watches).
    let mut most_kept = 0;
    for _ in 0..(30 * 24) {
        f.watch().await;
        f.clock.advance_ms(59 * MIN);
        most_kept = most_kept.max(litecoin_snapshots(&f).await.len());
    }
    let taken: Vec<_> = f
        .events
        .events()
        .into_iter()
        .filter_map(|(at, e)| match e {
            Event::SnapshotTaken { outcome, .. } => Some((at, outcome)),
            _ => None,
        })
        .collect();
    let deleted = f
        .events
        .events()
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::SnapshotDeleted {
                    outcome: StepOutcome::Done,
                    ..
                }
            )
        })
        .count();
    // A snapshot a day (the first at once), each taken a day after the one before.
    assert_eq!(taken.len(), 30, "{taken:#?}");
    assert!(taken.iter().all(|t| t.1 == StepOutcome::Done));
    assert_eq!(taken[0].0, start);
    for w in taken.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 24 * 60 * MIN);
    }
    // Never more than keep (3) plus the one just taken, and 3 at the end: 27 deleted.
    assert!(most_kept <= 4, "{most_kept}");
    let left = litecoin_snapshots(&f).await;
    assert_eq!(left.len(), 3, "{left:#?}");
    assert_eq!(deleted, 27);
    assert!(left.iter().all(|s| s.reason == "scheduled"));
    // The plan is content while the newest is younger than max_age, and says it when not.
    let o = observe_now(&f).await;
    let p = reconciler::plan::plan(&f.good.desired, &o, f.clock.now_ms());
    assert!(
        !p.flagged.iter().any(|fl| fl.what == "litecoin"),
        "{:#?}",
        p.flagged
    );
    let p = reconciler::plan::plan(&f.good.desired, &o, f.clock.now_ms() + 3 * 24 * 60 * MIN);
    assert!(
        p.flagged.iter().any(
            |fl| fl.what == "litecoin" && fl.reason.contains("older than snapshots.max_age 2d")
        ),
        "{:#?}",
        p.flagged
    );
}

/// The fleet as observed now.
async fn observe_now(f: &Fleet) -> reconciler::plan::Observed {
    reconciler::apply::view::observe(&f.sim, &f.good.desired)
        .await
        .expect("observe")
}

async fn litecoin_snapshots(f: &Fleet) -> Vec<reconciler::provider::SnapshotInfo> {
    observe_now(f)
        .await
        .snapshots
        .into_iter()
        .filter(|s| s.coin == "litecoin")
        .collect()
}

#[tokio::test]
async fn a_deadline_escalates_at_14_7_and_1_days_and_when_due_then_resolves_once_upgraded() {
    use reconciler::care::deadline::{DAY_MS, day};
    let start = 1_700_000_000_000u64;
    // Midnight UTC 20 days on.
    let due = (start / DAY_MS + 20) * DAY_MS;
    let date = day(due);
    let mut f = Fleet::new(|s| format!("{s}deadline:\n  version: 0.21.5\n  date: {date}\n"));
    assert_eq!(f.clock.now_ms(), start);
    let o = observe_now(&f).await;
    let p = reconciler::plan::plan(&f.good.desired, &o, start);
    let flag = p
        .flagged
        .iter()
        .find(|fl| fl.what == "litecoin")
        .unwrap_or_else(|| panic!("{:#?}", p.flagged));
    assert!(
        flag.reason
            .starts_with(&format!("deadline: 0.21.5 is due {date} (in 19 days)")),
        "{}",
        flag.reason
    );
    assert!(
        flag.reason
            .contains("2 nodes run below it: set `version` to it"),
        "{}",
        flag.reason
    );
    // One watch an hour until a day past due.
    while f.clock.now_ms() < due + DAY_MS {
        f.watch().await;
        f.clock.advance_ms(59 * MIN);
    }
    let said: Vec<(u64, u32, Change)> = f
        .incidents()
        .into_iter()
        .filter_map(|(at, i, c)| match i.condition {
            Condition::Deadline {
                stage, below: 2, ..
            } => Some((at, stage, c)),
            _ => None,
        })
        .collect();
    let h = 60 * MIN;
    // Watches fall on the hour from the start: the first at or after `t`.
    let first_at = |t: u64| start + (t - start).div_ceil(h) * h;
    assert_eq!(
        said,
        [
            (first_at(due - 14 * DAY_MS), 14, Change::Opened),
            (first_at(due - 7 * DAY_MS), 7, Change::Updated),
            (first_at(due - DAY_MS), 1, Change::Updated),
            (first_at(due), 0, Change::Updated),
        ],
        "{said:#?}"
    );
    let status = f.shared.status();
    let open = &status.incidents;
    assert!(
        open.iter().any(|i| i
            .condition
            .to_string()
            .starts_with("past its deadline: 0.21.5 was due")),
        "{open:#?}"
    );
    // Every node upgraded: resolved, once.
    let o = observe_now(&f).await;
    for n in o.nodes_of(&fleet_repo_schema::values::CoinName::parse("litecoin").unwrap()) {
        let node = reconciler::provider::NodeRef {
            key: n.key.clone(),
            instance_id: n.instance_id.clone(),
        };
        f.sim
            .upgrade(&node, &fleet_repo_schema::Version::parse("0.21.5").unwrap())
            .await
            .expect("upgrade");
    }
    for _ in 0..3 {
        f.watch().await;
    }
    let resolved = f
        .incidents()
        .into_iter()
        .filter(|(_, i, c)| {
            *c == Change::Resolved && matches!(i.condition, Condition::Deadline { .. })
        })
        .count();
    assert_eq!(resolved, 1);
}

#[tokio::test]
async fn an_instance_failing_its_status_checks_is_replaced_after_replace_after_through_the_plan() {
    let mut f = Fleet::new(|s| s.to_string());
    for _ in 0..3 {
        f.watch().await;
    }
    let broke_at = f.clock.now_ms();
    let broken = f.sim.instance_of(&node1()).expect("node 1's instance");
    f.sim.inject(SimFault::FailsStatusChecks {
        key: node1(),
        system: false,
        instance_id: None,
    });
    for _ in 0..130 {
        f.watch().await;
    }
    // Never restarted (SSM cannot reach it); one replacement asked, heal.replace_after (the
    // default 1h) after the trouble began, journaled with the instance.
    assert_eq!(f.restarts(), 0);
    let heals = f.heals();
    assert_eq!(heals.len(), 1, "{heals:#?}");
    assert_eq!(heals[0].0 - broke_at, 60 * MIN);
    assert_eq!(heals[0].1, node1());
    assert_eq!(
        f.journal
            .replacements_asked()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![broken.clone()]
    );
    assert!(
        f.incidents()
            .iter()
            .any(|i| matches!(i.1.care, Care::ReplaceAsked { .. })),
        "{:#?}",
        f.incidents()
    );
    // No pass ran here, so nothing replaced it: not asked twice within replace_after, and
    // left for a person once that passed.
    let left = f
        .incidents()
        .into_iter()
        .find(|i| matches!(&i.1.care, Care::LeftForPerson { why } if why.contains("a replacement did not mend it")))
        .unwrap_or_else(|| panic!("{:#?}", f.incidents()));
    assert_eq!(left.0 - broke_at, 120 * MIN);
    // The plan made from the observation and the journal replaces that node, and only it.
    let mut o = fleet_tests::observe(&f.sim, &f.good.desired).await;
    assert!(
        !reconciler::plan::plan(&f.good.desired, &o, 0)
            .coins
            .iter()
            .any(|c| c.coin.as_str() == "litecoin"),
        "without the request nothing is planned"
    );
    o.replace_requested = f.journal.replacements_asked();
    let p = reconciler::plan::plan(&f.good.desired, &o, 0);
    let lite = p
        .coins
        .iter()
        .find(|c| c.coin.as_str() == "litecoin")
        .unwrap();
    let steps: Vec<_> = lite
        .waves
        .iter()
        .flat_map(|w| w.steps.iter())
        .map(|s| (s.node.clone(), s.action.clone()))
        .collect();
    assert!(
        steps.iter().any(|(n, a)| n.as_ref() == Some(&node1())
            && matches!(
                a,
                reconciler::plan::Action::Replace {
                    cause: reconciler::plan::ReplaceCause::Heal
                }
            )),
        "{steps:#?}"
    );
    assert!(
        steps.iter().all(|(n, _)| n.as_ref() == Some(&node1())),
        "{steps:#?}"
    );
}

#[tokio::test]
async fn a_consistent_snapshot_stops_the_daemon_only_when_the_coin_can_spare_a_node() {
    let mut f = Fleet::new(|s| {
        s.replace(
            "snapshots:\n  before_upgrade: true\n",
            "snapshots:\n  before_upgrade: true\n  every: 24h\n  stop_daemon: true\n",
        )
    });
    assert!(f.good.desired.coins["litecoin"].snapshots.stop_daemon);
    let other = NodeKey::parse("litecoin", "eu-central-1b", 1).unwrap();
    // litecoin's other node is down (its daemon crash-loops): with max_unavailable 1 the
    // coin cannot spare another, so no snapshot is taken however long it is due.
    f.sim.inject(SimFault::CrashLoops {
        key: other.clone(),
        up_ms: 0,
    });
    for _ in 0..10 {
        f.watch().await;
    }
    let lite_cmds = |f: &Fleet| -> Vec<String> {
        f.sim
            .commands()
            .into_iter()
            .filter(|c| c.key.coin.as_str() == "litecoin")
            .map(|c| c.command)
            .filter(|c| c.contains(" stop ") || c.contains(" start "))
            .collect()
    };
    assert!(lite_cmds(&f).is_empty(), "{:?}", lite_cmds(&f));
    assert!(litecoin_snapshots(&f).await.is_empty());
    // Mended: the next watch stops node 1's daemon, snapshots its volume, starts it again.
    f.sim.clear_faults();
    for _ in 0..3 {
        f.watch().await;
    }
    let v = f.good.desired.coins["litecoin"].version.to_string();
    assert_eq!(
        lite_cmds(&f),
        vec![
            format!("/usr/local/sbin/fleet-node stop '{v}'"),
            format!("/usr/local/sbin/fleet-node start '{v}'"),
        ]
    );
    let snaps = litecoin_snapshots(&f).await;
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    assert!(f.events.events().iter().any(|(_, e)| matches!(
        e,
        Event::SnapshotTaken {
            outcome: StepOutcome::Done,
            ..
        }
    )));
    // Its daemon back, the node catches up and the coin is whole again.
    for _ in 0..5 {
        f.watch().await;
    }
    let metrics = f.shared.metrics.render();
    let in_sync: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("fleet_node_in_sync{") && l.contains("coin=\"litecoin\""))
        .collect();
    assert_eq!(in_sync.len(), 2, "{metrics}");
    assert!(in_sync.iter().all(|l| l.ends_with(" 1")), "{in_sync:?}");
}
