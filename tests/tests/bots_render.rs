//! Snapshots of what people read: the bump pull request's body (for the example bitcoin
//! coin) and every Slack message fleet sends, as the Block Kit JSON Slack receives.
//! Snapshots live in `tests/snapshots/`; `FLEET_UPDATE_SNAPSHOTS=1` rewrites them.

use bots::pr_body::{self, BumpInfo, ImageNote};
use bots::release::{Candidate, ReleaseInfo, Skipped};
use bots::slack::messages::{self, ApprovalKey, Notice, Verdict};
use fleet_repo_schema::values::Version;
use fleet_tests::check_snapshot;
use fleet_tests::world::example_tree;

const T: i64 = 1_764_000_000_000; // 2025-11-24 16:00 UTC

fn candidate(notes: &str) -> Candidate {
    Candidate {
        version: Version::parse("29.0").unwrap(),
        release: ReleaseInfo {
            tag: "v29.0".into(),
            name: Some("Bitcoin Core 29.0".into()),
            draft: false,
            prerelease: false,
            published_ms: Some(T),
            url: "https://github.com/bitcoin/bitcoin/releases/tag/v29.0".into(),
            body: Some(notes.into()),
        },
        skips: vec![Skipped {
            version: Version::parse("28.2").unwrap(),
            url: "https://github.com/bitcoin/bitcoin/releases/tag/v28.2".into(),
        }],
    }
}

#[test]
fn the_bump_pull_request_body() {
    let d = fleet_repo_schema::load(&example_tree()).desired.unwrap();
    let c = &d.coins["bitcoin"];
    let cand = candidate(
        "## Notable changes\n\n- P2P: v2 transport on by default (#29347, thanks @sipa)\n- RPC: `getblockchaininfo` reports `warnings` as a list\n\n<!-- release-process: internal -->\n### Credits\n\nThanks to everyone who contributed.",
    );
    let approvers: Vec<String> = d.fleet.approvers.iter().map(|a| a.to_string()).collect();
    let info = BumpInfo {
        coin: c,
        current: "28.1",
        candidate: &cand,
        approvers: &approvers,
        image: ImageNote::Pinned(format!("sha256:{}", "2c".repeat(32))),
        supersedes: None,
        beside: Some(pr_body::Beside::Line("28.2".into())),
        file: "coins/bitcoin.yaml",
    };
    let mut out = format!("title: {}\n", pr_body::title("bitcoin", "28.1", "29.0"));
    out.push_str(&format!(
        "branch: {}\n",
        pr_body::branch_name("bitcoin", "29.0")
    ));
    out.push_str(&format!(
        "--- commit message\n{}--- body\n",
        pr_body::commit_message(&info)
    ));
    out.push_str(&pr_body::body(&info));
    check_snapshot("pr-body-bitcoin.md", &out);

    // The other image cases and a coin whose policy needs no approval.
    let e = &d.coins["dogecoin"];
    let doge = Candidate {
        version: Version::parse("1.14.10").unwrap(),
        release: ReleaseInfo {
            tag: "v1.14.10".into(),
            name: Some("Dogecoin Core 1.14.10".into()),
            url: "https://github.com/dogecoin/dogecoin/releases/tag/v1.14.10".into(),
            body: None,
            ..candidate("").release
        },
        skips: Vec::new(),
    };
    let info = BumpInfo {
        coin: e,
        current: "1.14.9",
        candidate: &doge,
        approvers: &approvers,
        image: ImageNote::Unresolved {
            reason: "no registry access configured".into(),
        },
        supersedes: None,
        beside: Some(pr_body::Beside::Major("2.0.0".into())),
        file: "coins/dogecoin.yaml",
    };
    check_snapshot("pr-body-dogecoin.md", &pr_body::body(&info));

    // bitcoin 29.0 waiting for its image, then pinned: the draft's body, and the body once
    // the image is there, which differs from it in the image lines only.
    let waiting = BumpInfo {
        image: ImageNote::Awaiting {
            reason: "the registry has no tag 29.0 yet".into(),
        },
        supersedes: Some((41, "28.2".into())),
        ..info_of(c, &cand, &approvers)
    };
    let draft = pr_body::body(&waiting);
    check_snapshot("pr-body-bitcoin-draft.md", &draft);
    let digest = format!("sha256:{}", "2c".repeat(32));
    let pinned = BumpInfo {
        image: ImageNote::Pinned(digest.clone()),
        ..waiting.clone()
    };
    let ready = pr_body::with_image(&draft, &pinned);
    assert_eq!(
        ready,
        pr_body::body(&pinned),
        "rewriting the image lines of the draft gives the body of a pinned bump:\n{ready}"
    );
    let changed: Vec<(&str, &str)> = draft
        .lines()
        .zip(ready.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed.len(),
        3,
        "the image, the steps and the footer: {changed:#?}"
    );
    assert!(ready.contains("- **Supersedes** #41 (28.2)"));
    // A person's edit elsewhere in the body stays.
    let edited = draft.replace("### Release notes", "### Release notes (reviewed: ok)");
    assert!(pr_body::with_image(&edited, &pinned).contains("(reviewed: ok)"));
}

fn info_of<'a>(
    c: &'a fleet_repo_schema::Coin,
    cand: &'a Candidate,
    approvers: &'a [String],
) -> BumpInfo<'a> {
    BumpInfo {
        coin: c,
        current: "28.1",
        candidate: cand,
        approvers,
        image: ImageNote::NotPinned,
        supersedes: None,
        beside: None,
        file: "coins/bitcoin.yaml",
    }
}

#[test]
fn every_slack_message() {
    let key = ApprovalKey {
        coin: "bitcoin".into(),
        version: "29.0".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
    };
    let notices = vec![
        Notice::BumpOpened {
            coin: "bitcoin".into(),
            from: "28.1".into(),
            to: "29.0".into(),
            number: 42,
            url: "https://github.com/acme/fleet/pull/42".into(),
            class: "major".into(),
            approval_needed: true,
            supersedes: Some(41),
            waiting_for_image: false,
        },
        Notice::ReleaseRejected {
            coin: "litecoin".into(),
            tag: "v0.21.9;reboot".into(),
            reason: "expected a version of letters, digits, '.', '_', '+', '-'".into(),
        },
        Notice::ApprovalNeeded {
            key: key.clone(),
            from: vec!["28.1".into()],
            reasons: vec!["major version change 28.1 → 29.0 (rollout.approval: major)".into()],
            zones: vec!["eu-central-1a".into(), "eu-central-1b".into(), "eu-central-1c".into()],
            steps: 3,
            approvers: vec!["U012ABCDEF".into(), "U034GHIJKL".into()],
        },
        Notice::ApprovalDecided {
            key: key.clone(),
            verdict: Verdict::Approved,
            by: "U012ABCDEF".into(),
            at_ms: T,
        },
        Notice::RolloutStarted {
            coin: "bitcoin".into(),
            from: vec!["28.1".into()],
            to: Some("29.0".into()),
            commit: key.commit.clone(),
            zones: vec!["eu-central-1a".into(), "eu-central-1b".into(), "eu-central-1c".into()],
            steps: 3,
        },
        Notice::ZonePassed {
            coin: "bitcoin".into(),
            zone: "eu-central-1a".into(),
            took_ms: 2_100_000,
        },
        Notice::RolloutFinished {
            coin: "bitcoin".into(),
            took_ms: 6_300_000,
        },
        Notice::GateFailed {
            coin: "bitcoin".into(),
            zone: Some("eu-central-1b".into()),
            node: Some("bitcoin/eu-central-1b/1".into()),
            reason: "not in sync within 12h (sync_timeout)".into(),
            height: Some(871_002),
            target: Some(871_950),
        },
        Notice::Incident {
            key: "litecoin/eu-central-1a/1".into(),
            id: 4,
            coin: "litecoin".into(),
            subject: "litecoin/eu-central-1a/1".into(),
            condition: "stuck at 2601 while its chain moved on to 2650".into(),
            change: messages::IncidentChange::Updated,
            care: Some("fleet will not heal it: a restart did not mend it: still stuck 30m after it. A person must look.".into()),
            left_for_person: true,
            since_ms: 1_700_000_000_000,
            at_ms: 1_700_003_600_000,
        },
        Notice::Incident {
            key: "litecoin".into(),
            id: 5,
            coin: "litecoin".into(),
            subject: "litecoin".into(),
            condition: "below min_synced 1: 0 nodes in sync".into(),
            change: messages::IncidentChange::Resolved,
            care: None,
            left_for_person: false,
            since_ms: 1_700_000_000_000,
            at_ms: 1_700_000_420_000,
        },
        Notice::DiskGrow {
            coin: "bitcoin".into(),
            node: "bitcoin/eu-central-1a/1".into(),
            reason: "86.2 % used (disk.grow_at is 85 %)".into(),
            from_gb: 1000,
            to_gb: 1250,
            days_left: Some(275.6),
            grown: false,
            failed: vec![],
            pull: Some((42, "https://github.com/acme/fleet/pull/42".into())),
            note: None,
        },
        Notice::DiskGrow {
            coin: "ethereum".into(),
            node: "ethereum/eu-central-1b/1".into(),
            reason: "full in 12.0 days at the present rate (disk.min_days_left is 30)".into(),
            from_gb: 2000,
            to_gb: 3810,
            days_left: None,
            grown: true,
            failed: vec!["ethereum/eu-central-1a/1: ModifyVolume: IncorrectModificationState".into()],
            pull: None,
            note: Some("The pull request could not be opened (GitHub 502); tried again at the next disk read.".into()),
        },
        Notice::RepoInvalid {
            commit: "fedcba9876543210fedcba9876543210fedcba98".into(),
            in_force: Some(key.commit.clone()),
            errors: vec!["coins/bitcoin.yaml:9:10: E303 `version` is \"28.1; curl x | sh\": expected a version".into()],
        },
        Notice::BumpOpened {
            coin: "bitcoin".into(),
            from: "28.1".into(),
            to: "29.0".into(),
            number: 43,
            url: "https://github.com/acme/fleet/pull/43".into(),
            class: "major".into(),
            approval_needed: true,
            supersedes: None,
            waiting_for_image: true,
        },
        Notice::BumpReady {
            coin: "bitcoin".into(),
            to: "29.0".into(),
            number: 43,
            url: "https://github.com/acme/fleet/pull/43".into(),
            digest: format!("sha256:{}", "2c".repeat(32)),
        },
    ];
    let mut all = Vec::new();
    for n in &notices {
        let m = messages::render(n);
        all.push(serde_json::json!({"notice": n, "text": m.text, "blocks": m.blocks_json()}));
    }
    let req = messages::approval_request(&notices[2]).unwrap();
    let decided = messages::approval_decided(&req, &notices[3]).unwrap();
    all.push(serde_json::json!({"approval request once decided": decided.blocks_json()}));
    check_snapshot(
        "slack-messages.json",
        &(serde_json::to_string_pretty(&all).unwrap() + "\n"),
    );
}
