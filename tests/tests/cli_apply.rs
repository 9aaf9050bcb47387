//! `fleet demo` and `fleet apply` as a user runs them (in-process, the binary's own code).

use fleet_tests::{fleet, workspace_root};
use reconciler::clock::SystemClock;
use reconciler::provider::sim::{SimConfig, SimProvider};
use reconciler::store::{Journal, Record};
use std::sync::Arc;

#[test]
fn demo_reconciles_the_embedded_example_and_says_so() {
    // Very fast simulated time: the whole rollout in a few seconds of real time.
    let out = fleet(&["demo", "--speed", "20000", "--color", "never"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = &out.stdout;
    for expected in [
        "1. The plan",
        "bitcoin  27.2 → 28.1 (major)",
        "needs approval: major version change 27.2 → 28.1",
        "bitcoin eu-central-1a: zone passed",
        "bitcoin rollout finished",
        "Converged: the plan is now empty: all 18 nodes run the repository's versions.",
    ] {
        assert!(s.contains(expected), "missing {expected:?} in:\n{s}");
    }
    // Zone order is visible in the log: bitcoin's zone b starts after zone a passed.
    let a_passed = s.find("bitcoin eu-central-1a: zone passed").unwrap();
    let b_step = s.find("bitcoin eu-central-1b #1: upgrade done").unwrap();
    assert!(a_passed < b_step);
}

#[test]
fn apply_with_yes_rolls_out_records_approvals_and_leaves_nothing_to_do() {
    let state = tempfile::tempdir().unwrap();
    let repo = workspace_root().join("examples/fleet");
    // The fleet as it was: the example one release behind, in the simulator's state dir.
    {
        let desired = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
        let sim =
            SimProvider::open(state.path(), Arc::new(SystemClock), SimConfig::default()).unwrap();
        sim.seed(&desired, &reconciler::demo::older_versions())
            .unwrap();
    }
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--repo".into(),
            repo.display().to_string(),
            "--state-dir".into(),
            state.path().display().to_string(),
            "--color".into(),
            "never".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut plan_args = vec!["plan".to_string()];
    plan_args.extend(args(&["--detailed-exitcode"]));
    let out = fleet(&plan_args);
    assert_eq!(out.code, 2, "changes pending: {}", out.stdout);

    let mut apply_args = vec!["apply".to_string()];
    apply_args.extend(args(&["--yes", "--sim-speed", "20000"]));
    let out = fleet(&apply_args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Summary:"), "{}", out.stdout);
    assert_eq!(out.stdout.matches("completed").count(), 6, "{}", out.stdout);

    // The confirmation approved the coins that needed it, in the journal.
    let (journal, warnings) = Journal::open(state.path()).unwrap();
    assert!(warnings.is_empty());
    let approvals: Vec<String> = journal
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Record::Approval { coin, by, .. } if by.starts_with("cli:") => Some(coin),
            _ => None,
        })
        .collect();
    assert_eq!(approvals, ["bitcoin", "monero"]);

    let out = fleet(&plan_args);
    assert_eq!(out.code, 0, "nothing left: {}", out.stdout);
    assert!(out.stdout.starts_with("No changes."), "{}", out.stdout);
}

#[test]
fn an_invalid_repository_plans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.yaml"), "region: eu-central-1\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = fleet(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("E201"), "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing is planned or changed"),
        "{}",
        out.stderr
    );
}
