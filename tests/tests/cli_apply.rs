//! `fleet demo` and `fleet apply` as a user runs them (in-process, the binary's own code).

use fleet_tests::{fleet, workspace_root};
use reconciler::clock::SystemClock;
use reconciler::provider::sim::{SimConfig, SimProvider};
use reconciler::store::{Journal, Record};
use std::sync::Arc;

#[test]
fn demo_reconciles_the_embedded_example_and_says_so() {
    // Very fast simulated time: the whole rollout in a few seconds of real time.
    let out = fleet(&["demo", "--speed", "5000", "--color", "never"]);
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
            "--provider".into(),
            "sim".into(),
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
    apply_args.extend(args(&["--yes", "--sim-speed", "5000"]));
    let out = fleet(&apply_args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("Summary (simulated fleet, --provider sim):"),
        "{}",
        out.stdout
    );
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
    assert!(
        out.stdout
            .starts_with("SIMULATED FLEET (--provider sim, kept in "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\n\nNo changes."), "{}", out.stdout);
}

/// No silent simulation: `plan`, `apply` and `run` without a provider named exit 2 with a
/// message giving both choices, before reading or creating anything.
#[test]
fn plan_apply_and_run_need_the_provider_named() {
    let example = workspace_root().join("examples/fleet");
    let ex = example.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let st = state.to_str().unwrap();
    // `fleet <cmd> --repo <example> --state-dir <st> <extra…>`.
    let on_example = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd, "--repo", ex, "--state-dir", st];
        args.extend_from_slice(extra);
        fleet(&args)
    };
    for (cmd, extra) in [
        ("plan", &[][..]),
        ("apply", &["--yes"][..]),
        ("adopt", &["--dry-run"][..]),
    ] {
        let out = on_example(cmd, extra);
        assert_eq!(out.code, 2, "{cmd}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.is_empty(), "{cmd}: {}", out.stdout);
        for want in [
            format!("fleet {cmd} --provider aws"),
            format!("fleet {cmd} --provider sim"),
        ] {
            assert!(out.stderr.contains(&want), "{cmd}: {}", out.stderr);
        }
        assert!(!state.exists(), "{cmd} touched the state directory");
    }
    // The simulator has no nodes made outside fleet: adopt says to use AWS (exit 1), and a
    // --match that names no coin is a usage error.
    let out = on_example("adopt", &["--provider", "sim", "--dry-run"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("use --provider aws"), "{}", out.stderr);
    let out = on_example(
        "adopt",
        &["--provider", "aws", "--match", "Component=nodes"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("{coin}"), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(&state);
    // Under --detailed-exitcode, whose 2 means "changes", the refusal is 1.
    let out = on_example("plan", &["--detailed-exitcode"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("--provider aws"), "{}", out.stderr);
    let out = on_example("run", &["--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 2, "run: {}", out.stderr);
    for want in ["provider: aws", "provider: sim", "--provider"] {
        assert!(out.stderr.contains(want), "run: {}", out.stderr);
    }
    assert!(!state.exists(), "run touched the state directory");
    // Named, a simulated fleet says so first thing.
    let out = on_example("plan", &["--provider", "sim", "--color", "never"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("SIMULATED FLEET (--provider sim"),
        "{}",
        out.stdout
    );
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
        "--provider",
        "sim",
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("E201"), "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing is planned or changed"),
        "{}",
        out.stderr
    );
}

/// A copy of the example repository, with `edit` applied to `file`'s text.
fn example_copy(file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fleet_tests::copy_dir(&workspace_root().join("examples/fleet"), dir.path()).unwrap();
    let p = dir.path().join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, edit(&text)).unwrap();
    dir
}

/// Hardening: with `--detailed-exitcode`, 2 means "changes" (as Terraform), so no error of
/// `plan` or `apply` may exit 2: a missing repository, a state directory that is a file, a
/// held lock, an unknown flag, a speed of 0 or 1e300, an AWS endpoint that refuses.
#[test]
fn plan_and_apply_errors_exit_1_never_2() {
    let repo = workspace_root().join("examples/fleet");
    let repo = repo.to_str().unwrap();
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let file = state.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let locked = tempfile::tempdir().unwrap();
    let _lock = reconciler::store::StateLock::take(locked.path()).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "no such repository",
            vec![
                "plan",
                "--detailed-exitcode",
                "--repo",
                "/nonexistent/fleet",
                "--state-dir",
                st,
                "--provider",
                "sim",
            ],
        ),
        (
            "state dir is a file",
            vec![
                "plan",
                "--detailed-exitcode",
                "--repo",
                repo,
                "--state-dir",
                file.to_str().unwrap(),
                "--provider",
                "sim",
            ],
        ),
        (
            "held lock",
            vec![
                "plan",
                "--detailed-exitcode",
                "--repo",
                repo,
                "--state-dir",
                locked.path().to_str().unwrap(),
                "--provider",
                "sim",
            ],
        ),
        (
            "unknown flag",
            vec!["plan", "--detailed-exitcode", "--no-such-flag"],
        ),
        (
            "speed 0",
            vec![
                "plan",
                "--detailed-exitcode",
                "--repo",
                repo,
                "--state-dir",
                st,
                "--provider",
                "sim",
                "--sim-speed",
                "0",
            ],
        ),
        (
            "speed 1e300",
            vec![
                "apply",
                "--yes",
                "--repo",
                repo,
                "--state-dir",
                st,
                "--provider",
                "sim",
                "--sim-speed",
                "1e300",
            ],
        ),
        (
            "AWS refuses",
            vec![
                "plan",
                "--detailed-exitcode",
                "--repo",
                repo,
                "--state-dir",
                st,
                "--provider",
                "aws",
                "--aws-endpoint",
                &endpoint,
            ],
        ),
    ];
    for (what, args) in cases {
        let t = std::time::Instant::now();
        let out = fleet(&args);
        assert_eq!(out.code, 1, "{what}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("error"), "{what}: {}", out.stderr);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "{what} took {:?}",
            t.elapsed()
        );
    }
    // Without --detailed-exitcode a usage error keeps clap's 2.
    assert_eq!(fleet(&["plan", "--no-such-flag"]).code, 2);
    assert_eq!(fleet(&["plan", "--help"]).code, 0);
}

/// Hardening: `plan` after an accelerated `apply` sees every node (the simulated clock is
/// anchored in the state directory for every command, so no node "started in the future"),
/// and a node the plan cannot judge (booting) is said, with exit 2, never "No changes".
#[test]
fn a_plan_that_cannot_see_says_so() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let desired = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
    {
        let sim =
            SimProvider::open(state.path(), Arc::new(SystemClock), SimConfig::default()).unwrap();
        sim.seed(&desired, &reconciler::demo::older_versions())
            .unwrap();
    }
    let example = workspace_root().join("examples/fleet");
    let out = fleet(&[
        "apply",
        "--yes",
        "--repo",
        example.to_str().unwrap(),
        "--state-dir",
        st,
        "--provider",
        "sim",
        "--sim-speed",
        "20000",
        "--color",
        "never",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // A new release of litecoin, planned at real speed right after.
    let bumped = example_copy("coins/litecoin.yaml", |t| {
        t.replace("version: 0.21.4", "version: 0.21.5")
    });
    let out = fleet(&[
        "plan",
        "--detailed-exitcode",
        "--repo",
        bumped.path().to_str().unwrap(),
        "--state-dir",
        st,
        "--provider",
        "sim",
        "--color",
        "never",
    ]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("litecoin  0.21.4 → 0.21.5"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("not judged"), "{}", out.stdout);

    // A node that is booting cannot be judged: the plan says so and is not empty.
    let grown = example_copy("coins/litecoin.yaml", |t| {
        t.replace("nodes_per_zone: 1", "nodes_per_zone: 2")
    });
    let g = fleet_tests::world::desired_of(&fleet_repo_schema::DirTree::new(grown.path()).unwrap());
    let clock = reconciler::clock::AnchoredClock::open(state.path(), 1.0).unwrap();
    let sim = SimProvider::open(state.path(), Arc::new(clock), SimConfig::default()).unwrap();
    let c = &g.coins["litecoin"];
    let slot = c.nodes.iter().find(|s| s.index == 2).unwrap();
    let spec = reconciler::provider::LaunchSpec::new(&g.fleet, c, slot, None).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(reconciler::provider::Provider::launch(&sim, &spec))
        .unwrap();
    drop(sim);
    let out = fleet(&[
        "plan",
        "--detailed-exitcode",
        "--repo",
        grown.path().to_str().unwrap(),
        "--state-dir",
        st,
        "--provider",
        "sim",
        "--color",
        "never",
    ]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("No changes"), "{}", out.stdout);
    assert!(out.stdout.contains("not judged:"), "{}", out.stdout);
    assert!(out.stdout.contains("is booting"), "{}", out.stdout);
}

/// Hardening: a repository that loses coins by mistake never retires them. A coin file
/// deleted is refused until fleet.yaml's `retire:` names the coin (exit 1, the nodes still
/// running after `apply --yes`); `coins/` renamed is an invalid revision (E113) that plans
/// nothing at all; confirmed, the retirement is planned, behind its approval.
#[test]
fn a_vanished_coin_is_retired_only_when_the_repository_says_so() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let desired = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
    {
        let sim =
            SimProvider::open(state.path(), Arc::new(SystemClock), SimConfig::default()).unwrap();
        sim.seed(&desired, &Default::default()).unwrap();
    }
    let run = |args: &[&str], repo: &std::path::Path| {
        let mut all = args.to_vec();
        all.extend(["--repo", repo.to_str().unwrap(), "--state-dir", st]);
        all.extend(["--provider", "sim"]);
        all.extend(["--sim-speed", "5000", "--color", "never"]);
        fleet(&all)
    };
    let dogecoin_nodes = || {
        let sim =
            SimProvider::open(state.path(), Arc::new(SystemClock), SimConfig::default()).unwrap();
        let o = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fleet_tests::observe(&sim, &desired));
        o.nodes
            .iter()
            .filter(|n| n.key.coin.as_str() == "dogecoin")
            .count()
    };
    // Two zones, one node each.
    assert_eq!(dogecoin_nodes(), 2);

    let deleted = example_copy("fleet.yaml", str::to_string);
    std::fs::remove_file(deleted.path().join("coins/dogecoin.yaml")).unwrap();
    let out = run(&["plan", "--detailed-exitcode"], deleted.path());
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("this revision retires every node of dogecoin (2 nodes)")
            && out
                .stdout
                .contains("add `retire: [dogecoin]` to fleet.yaml"),
        "{}",
        out.stdout
    );
    let out = run(&["apply", "--yes"], deleted.path());
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(dogecoin_nodes(), 2, "{}", out.stdout);

    // `git mv coins Coins`: no coins at all, refused as a revision, with the likely cause.
    let renamed = example_copy("fleet.yaml", str::to_string);
    std::fs::rename(renamed.path().join("coins"), renamed.path().join("Coins")).unwrap();
    let out = run(&["plan", "--detailed-exitcode"], renamed.path());
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("E113") && said.contains("Coins/"), "{said}");
    assert!(!said.contains("retire"), "{said}");
    assert_eq!(dogecoin_nodes(), 2);

    // Confirmed in fleet.yaml: planned, and retiring always asks for approval.
    let confirmed = example_copy("fleet.yaml", |t| format!("{t}retire: [dogecoin]\n"));
    std::fs::remove_file(confirmed.path().join("coins/dogecoin.yaml")).unwrap();
    let out = run(&["plan", "--detailed-exitcode"], confirmed.path());
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("add `retire:"), "{}", out.stdout);
    assert!(out.stdout.contains("dogecoin"), "{}", out.stdout);
    assert!(out.stdout.contains("retire"), "{}", out.stdout);
}

/// A version changed by hand (the seed's `systemctl start node@<version>` over SSM) is seen
/// from the daemon's own answer: planned with its reason, upgraded back to the repository's
/// version; a node brought to the target by hand is brought under the target's unit and
/// recorded.
#[test]
fn a_version_changed_by_hand_is_drift_and_converges() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let example = workspace_root().join("examples/fleet");
    let ex = example.to_str().unwrap();
    let desired = fleet_tests::world::desired_of(&fleet_tests::world::example_tree());
    let older: std::collections::BTreeMap<_, _> = reconciler::demo::older_versions()
        .into_iter()
        .filter(|(c, _)| c == "litecoin")
        .collect();
    let (bitcoin, litecoin) = {
        // Ten minutes ago: a restarted daemon answers only after a while, and the plan below
        // runs now.
        let then = reconciler::clock::Clock::now_ms(&SystemClock) - 600_000;
        let clock = Arc::new(reconciler::clock::ManualClock::new(then));
        let sim = SimProvider::open(state.path(), clock, SimConfig::default()).unwrap();
        sim.seed(&desired, &older).unwrap();
        let o = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fleet_tests::observe(&sim, &desired));
        let id = |coin: &str| {
            o.nodes
                .iter()
                .find(|n| n.key.coin.as_str() == coin)
                .unwrap()
                .instance_id
                .clone()
        };
        let (b, l) = (id("bitcoin"), id("litecoin"));
        sim.start_by_hand(&b, "28.0").unwrap();
        sim.start_by_hand(&l, "0.21.4").unwrap();
        (b, l)
    };
    let world = |cmd: &[&str]| {
        let mut a = cmd.to_vec();
        a.extend([
            "--repo",
            ex,
            "--state-dir",
            st,
            "--provider",
            "sim",
            "--color",
            "never",
        ]);
        fleet(&a)
    };
    let plan_out = world(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan_out.code, 2, "{}\n{}", plan_out.stdout, plan_out.stderr);
    for want in [
        "the daemon reports 28.0; fleet's tag says 28.1",
        "the daemon reports 0.21.4; fleet's tag says 0.21.3",
    ] {
        assert!(
            plan_out.stdout.contains(want),
            "{want}: {}",
            plan_out.stdout
        );
    }
    assert!(
        plan_out.stdout.contains("18 daemons said what they run"),
        "{}",
        plan_out.stdout
    );
    // Without asking the nodes, the tags are all there is: the hand change goes unseen.
    let blind = world(&["plan", "--no-probe"]);
    assert!(
        !blind.stdout.contains("the daemon reports"),
        "{}",
        blind.stdout
    );
    assert!(
        blind.stdout.contains("nodes not asked (--no-probe)"),
        "{}",
        blind.stdout
    );
    let out = world(&["apply", "--yes", "--sim-speed", "5000"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = world(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let clock = reconciler::clock::AnchoredClock::open(state.path(), 1.0).unwrap();
    let sim = SimProvider::open(state.path(), Arc::new(clock), SimConfig::default()).unwrap();
    let upgrades = |id: &str| {
        sim.commands()
            .into_iter()
            .filter(|c| c.instance_id == id && c.command.contains("fleet-node upgrade"))
            .count()
    };
    assert_eq!(
        upgrades(&bitcoin),
        1,
        "bitcoin's node is upgraded back once"
    );
    // litecoin's node runs the target by hand: one `fleet-node upgrade` brings it under its
    // unit (that it restarts nothing is `sim_world`'s to show).
    assert_eq!(
        upgrades(&litecoin),
        1,
        "litecoin's node is brought under its unit once"
    );
    for id in [&bitcoin, &litecoin] {
        let s = sim.chain_status(id).unwrap();
        let want = if id == &bitcoin { "28.1" } else { "0.21.4" };
        assert_eq!(
            s.client
                .map(|v| v.is(&fleet_repo_schema::values::Version::parse(want).unwrap())),
            Some(Some(true)),
            "{id}"
        );
    }
}
