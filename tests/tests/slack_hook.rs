//! `POST /hooks/slack`'s handler (`reconciler::people::SlackHook`) in-process, with the Slack
//! bot posting to Slack's Web API on loopback: what is recorded in the journal for each kind
//! of click, and what the clicker is told.

use bots::github::SystemPacer;
use bots::slack::bot::{self, BotConfig};
use bots::slack::signature::{SigningSecret, Verifier};
use bots::slack::{ApprovalKey, MorphismApi};
use fleet_tests::slack_mock::{self, SlackMock};
use fleet_tests::world::example_tree;
use reconciler::daemon::{Good, Shared};
use reconciler::people::SlackHook;
use reconciler::server::InteractionHook;
use reconciler::store::{Decision, Journal};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "hook-test-signing-secret";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn click(action: &str, user: &str, version: &str, commit: &str) -> Vec<u8> {
    let key = ApprovalKey {
        coin: "bitcoin".into(),
        version: version.into(),
        commit: commit.into(),
    };
    let value = serde_json::to_string(&key).unwrap();
    slack_mock::form_body(&slack_mock::block_actions(
        action,
        &value,
        user,
        "1764547200.000001",
    ))
}

async fn send(hook: &SlackHook, body: &[u8]) -> u16 {
    let ts = now_s().to_string();
    let sig = slack_mock::sign(SECRET, &ts, body);
    hook.handle(Some(&ts), Some(&sig), body).await.0.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_decision_of_an_approver_is_recorded_for_its_key_only() {
    let slack = SlackMock::start("xoxb-hook");
    let (handle, task) = bot::start(
        Arc::new(MorphismApi::new(&slack.api_url(), "xoxb-hook").unwrap()),
        Arc::new(SystemPacer),
        BotConfig {
            channel: bot::channel("#node-fleet"),
            repeat_window: Duration::from_secs(60),
            memory: None,
            label: None,
        },
    );
    let desired = fleet_repo_schema::load(&example_tree()).desired.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None);
    let journal = Arc::new(Journal::in_memory());
    let shared = Arc::new(Shared::default());
    let hook = SlackHook {
        verifier: Verifier::new(Some(SigningSecret::new(SECRET))),
        journal: Arc::clone(&journal),
        shared: Arc::clone(&shared),
        good: rx,
        slack: handle.clone(),
    };

    // No revision in force yet: nobody can be checked against `approvers`.
    assert_eq!(
        send(&hook, &click("fleet_approve", "U012ABCDEF", "29.0", COMMIT)).await,
        503
    );
    tx.send(Some(Arc::new(Good {
        rev: COMMIT.into(),
        summary: None,
        desired: Arc::new(desired),
    })))
    .unwrap();

    // An approver (the example fleet has two) approves: recorded, the loop woken.
    assert_eq!(
        send(&hook, &click("fleet_approve", "U034GHIJKL", "29.0", COMMIT)).await,
        200
    );
    assert_eq!(
        fleet_tests::approval(&journal, "bitcoin", "29.0", COMMIT),
        Some((Decision::Approved, "U034GHIJKL".into()))
    );
    tokio::time::timeout(Duration::from_secs(1), shared.kick.notified())
        .await
        .expect("the loop is kicked");

    // The other approver rejects the same thing a moment later: the first decision stands.
    assert_eq!(
        send(&hook, &click("fleet_reject", "U012ABCDEF", "29.0", COMMIT)).await,
        200
    );
    assert_eq!(
        fleet_tests::approval(&journal, "bitcoin", "29.0", COMMIT),
        Some((Decision::Approved, "U034GHIJKL".into()))
    );

    // A rejection of another version is its own decision; an approval for an older commit
    // is recorded for that commit only, and the clicker is told.
    assert_eq!(
        send(&hook, &click("fleet_reject", "U012ABCDEF", "30.0", COMMIT)).await,
        200
    );
    assert_eq!(
        fleet_tests::approval(&journal, "bitcoin", "30.0", COMMIT),
        Some((Decision::Rejected, "U012ABCDEF".into()))
    );
    let old = "fedcba9876543210fedcba9876543210fedcba98";
    assert_eq!(
        send(&hook, &click("fleet_approve", "U012ABCDEF", "29.0", old)).await,
        200
    );
    assert_eq!(
        fleet_tests::approval(&journal, "bitcoin", "29.0", old).map(|x| x.0),
        Some(Decision::Approved)
    );
    assert_eq!(
        fleet_tests::approval(&journal, "bitcoin", "29.0", "another"),
        None
    );

    // Someone not in `approvers`: nothing recorded.
    assert_eq!(
        send(&hook, &click("fleet_approve", "U0INTRUDER", "31.0", COMMIT)).await,
        200
    );
    assert_eq!(
        fleet_tests::approval(&journal, "bitcoin", "31.0", COMMIT),
        None
    );

    drop(hook);
    drop(handle);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    let eph: Vec<(String, String)> = slack
        .calls()
        .into_iter()
        .filter(|c| c.method == "chat.postEphemeral")
        .map(|c| {
            (
                c.body["user"].as_str().unwrap().to_string(),
                c.body["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(eph.len(), 3, "{eph:?}");
    assert!(
        eph[0].0 == "U012ABCDEF" && eph[0].1.contains("Already approved by U034GHIJKL"),
        "{eph:?}"
    );
    assert!(eph[1].1.contains("applies to commit fedcba98"), "{eph:?}");
    assert!(
        eph[2].0 == "U0INTRUDER" && eph[2].1.contains("not in fleet.yaml's `approvers`"),
        "{eph:?}"
    );
    let m = shared.metrics.render();
    for (result, n) in [
        ("approved", 2),
        ("rejected", 1),
        ("duplicate", 1),
        ("refused", 1),
        ("not_ready", 1),
    ] {
        let line = format!("fleet_slack_interactions_total{{result=\"{result}\"}} {n}");
        assert!(m.contains(&line), "{line} in\n{m}");
    }
}
