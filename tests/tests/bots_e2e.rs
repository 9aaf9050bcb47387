//! The people loop end to end, through the real `fleet run` binary: GitHub's API and Slack's
//! Web API on loopback (`github_mock`, `slack_mock`), the fleet repository a real bare git
//! repository (which the GitHub mock writes the bump commit into), the simulator as the
//! fleet.
//!
//! 1. A new upstream release → a bump pull request (and a Slack message about it).
//! 2. The pull request merged → the rollout waits for an approval (major version) and asks
//!    in Slack with buttons.
//! 3. Unsigned, mis-signed, stale and replayed callbacks get 401; a click by someone not in
//!    `approvers` is refused (told ephemerally) and records nothing.
//! 4. A signed click by an approver → recorded in the journal with who and when, the
//!    message updated, the rollout completes zone by zone, reported in one thread.
//!
//! And: Slack unreachable does not hold a rollout that needs no approval; its messages are
//! delivered once Slack answers again.

use fleet_tests::daemon::{
    Daemon, Remote, coin, coin_at, fleet_files, git, github_signature, http,
};
use fleet_tests::github_mock::{GitHubMock, release};
use fleet_tests::nodes::free_port;
use fleet_tests::slack_mock::{self, SlackMock};
use serde_json::Value;
use std::time::{Duration, Instant};

const GH_TOKEN: &str = "ghp_e2e_token";
const SLACK_TOKEN: &str = "xoxb-e2e-token";
const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const HOOK: &str = "e2e-webhook-secret";
const LONG: Duration = Duration::from_secs(90);

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn wait_until<T>(what: &str, d: &Daemon, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nlog:\n{}",
            d.log_tail()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn config(url: &str, gh: &str, slack: &str) -> String {
    format!(
        "repo:\n  url: {url}\n  branch: main\n  poll_interval: 1h\n  watch: true\n\
         provider: sim\nsim:\n  speed: 600\n\
         reconcile:\n  requeue: 1h\n  gate_poll: 10s\n  backoff_min: 100ms\n  backoff_max: 2s\n\
         github:\n  api_url: {gh}\n  repo: acme/fleet\n\
         release_watch:\n  interval: 1h\n\
         registry:\n  resolve_digests: false\n\
         slack:\n  api_url: {slack}\n  channel: \"#node-fleet\"\n"
    )
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FLEET_GITHUB_TOKEN", GH_TOKEN),
        ("FLEET_SLACK_BOT_TOKEN", SLACK_TOKEN),
        ("FLEET_SLACK_SIGNING_SECRET", SIGNING),
        ("FLEET_GITHUB_WEBHOOK_SECRET", HOOK),
    ]
}

/// A GitHub webhook delivery of `event`, signed with `secret`.
fn github_hook(d: &Daemon, event: &str, secret: &str, body: &[u8]) -> fleet_tests::daemon::Reply {
    http(
        d.addr,
        "POST",
        "/hooks/github",
        &[
            ("X-GitHub-Event", event),
            ("X-Hub-Signature-256", &github_signature(secret, body)),
        ],
        body,
    )
    .expect("POST /hooks/github")
}

fn interaction(d: &Daemon, body: &[u8], ts: &str, sig: &str) -> u16 {
    http(
        d.addr,
        "POST",
        "/hooks/slack",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Slack-Request-Timestamp", ts),
            ("X-Slack-Signature", sig),
        ],
        body,
    )
    .expect("POST /hooks/slack")
    .status
}

#[test]
fn a_release_becomes_a_pull_request_then_a_rollout_approved_in_slack() {
    let tmp = tempfile::tempdir().unwrap();
    let mut btc = coin("bitcoin", "28.1", 3, 1, 1).yaml();
    btc.push_str("upstream:\n  github: bitcoin/bitcoin\n  tag_pattern: '^v(?P<version>\\d+\\.\\d+(?:\\.\\d+)?)$'\n  min_release_age: 2d\n");
    let mut files = fleet_files(&[]);
    files.push(("coins/bitcoin.yaml".into(), btc));
    let remote = Remote::new(tmp.path(), &files);
    let gh = GitHubMock::start(GH_TOKEN, "");
    gh.add_repo("acme/fleet", &remote.origin);
    gh.set_releases(
        "bitcoin/bitcoin",
        vec![
            release(
                "bitcoin/bitcoin",
                2,
                "v29.0",
                Some(now_s() - 3 * 86_400),
                false,
                "Bitcoin Core 29.0 notes",
            ),
            release(
                "bitcoin/bitcoin",
                1,
                "v28.1",
                Some(now_s() - 90 * 86_400),
                false,
                "28.1",
            ),
        ],
    );
    let slack = SlackMock::start(SLACK_TOKEN);
    let mut d = Daemon::start(
        tmp.path(),
        &config(&remote.url(), &gh.api_url(), &slack.api_url()),
        &env(),
    );

    // 1. The release watch opens the bump and says so in Slack.
    let pr = wait_until("the bump pull request", &d, || {
        gh.pulls()
            .into_iter()
            .find(|p| p.head == "fleet/bump-bitcoin-29.0")
    });
    assert_eq!(pr.title, "bitcoin: 28.1 → 29.0");
    wait_until("the bump announced in Slack", &d, || {
        slack.posts_with("Bump PR #1: bitcoin 28.1 → 29.0").pop()
    });
    let s = d.status();
    assert_eq!(
        s["release_watch"]["coins"]["bitcoin"]["outcome"], "opened",
        "{}",
        s["release_watch"]
    );

    // 2. Merged in the local fleet repository with git (a merge commit, as GitHub's button
    //    makes) and pushed; GitHub then shows the pull request merged, and its push webhook
    //    tells fleet.
    git(&remote.work, &["fetch", "-q", "origin"]);
    git(
        &remote.work,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Merge pull request #1 from acme/fleet/bump-bitcoin-29.0",
            "origin/fleet/bump-bitcoin-29.0",
        ],
    );
    git(&remote.work, &["push", "-q", "origin", "main"]);
    let merged = git(&remote.work, &["rev-parse", "HEAD"]);
    {
        let mut st = gh.st();
        st.pulls[0].state = "closed".into();
        st.pulls[0].merged = true;
    }
    let push = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{merged}\"}}");
    let r = github_hook(&d, "push", HOOK, push.as_bytes());
    assert_eq!(r.status, 202, "{}", r.body);
    d.wait_for("the merge in force, waiting for an approval", LONG, |s| {
        s["commit"] == merged.as_str() && s["coins"]["bitcoin"]["state"] == "awaiting-approval"
    });
    let request = wait_until("the approval request in Slack", &d, || {
        slack
            .posts_with("Approval needed: bitcoin 28.1 → 29.0")
            .pop()
    });
    let parent_ts = request.ts.clone().unwrap();
    let actions = request.body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .cloned()
        .unwrap();
    let value = actions["elements"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let key: Value = serde_json::from_str(&value).unwrap();
    assert_eq!(
        key["commit"],
        merged.as_str(),
        "the approval is for the merge commit"
    );

    // 3. What must not count.
    let approve = slack_mock::form_body(&slack_mock::block_actions(
        "fleet_approve",
        &value,
        "U012ABCDEF",
        &parent_ts,
    ));
    let ts = now_s().to_string();
    assert_eq!(
        interaction(&d, &approve, &ts, "v0=deadbeef"),
        401,
        "malformed signature"
    );
    assert_eq!(
        interaction(
            &d,
            &approve,
            &ts,
            &slack_mock::sign("wrong-secret", &ts, &approve)
        ),
        401,
        "wrong secret"
    );
    let tampered = String::from_utf8(approve.clone())
        .unwrap()
        .replace("U012ABCDEF", "U034GHIJKL");
    assert_eq!(
        interaction(
            &d,
            tampered.as_bytes(),
            &ts,
            &slack_mock::sign(SIGNING, &ts, &approve)
        ),
        401,
        "tampered body"
    );
    let stale = (now_s() - 600).to_string();
    assert_eq!(
        interaction(
            &d,
            &approve,
            &stale,
            &slack_mock::sign(SIGNING, &stale, &approve)
        ),
        401,
        "10 minutes old"
    );
    let future = (now_s() + 600).to_string();
    assert_eq!(
        interaction(
            &d,
            &approve,
            &future,
            &slack_mock::sign(SIGNING, &future, &approve)
        ),
        401,
        "10 minutes ahead"
    );
    let unsigned = http(d.addr, "POST", "/hooks/slack", &[], &approve).unwrap();
    assert_eq!(unsigned.status, 401);
    let stranger = slack_mock::form_body(&slack_mock::block_actions(
        "fleet_approve",
        &value,
        "U999STRANGER",
        &parent_ts,
    ));
    assert_eq!(
        interaction(
            &d,
            &stranger,
            &ts,
            &slack_mock::sign(SIGNING, &ts, &stranger)
        ),
        200
    );
    let eph = wait_until("the stranger told why", &d, || {
        slack
            .calls()
            .into_iter()
            .find(|c| c.method == "chat.postEphemeral" && c.body["user"] == "U999STRANGER")
    });
    assert!(
        eph.body["text"]
            .as_str()
            .unwrap()
            .contains("not in fleet.yaml's `approvers`")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.status()["coins"]["bitcoin"]["state"],
        "awaiting-approval",
        "nothing moved"
    );
    let journal = std::fs::read_to_string(d.state_dir.join("journal.jsonl")).unwrap_or_default();
    assert!(
        !journal.contains("\"approval\""),
        "nothing recorded: {journal}"
    );

    // 4. An approver approves.
    let ts = now_s().to_string();
    let sig = slack_mock::sign(SIGNING, &ts, &approve);
    assert_eq!(interaction(&d, &approve, &ts, &sig), 200);
    assert_eq!(
        interaction(&d, &approve, &ts, &sig),
        401,
        "a replay of the same request"
    );
    d.wait_for("29.0 everywhere", LONG, |s| coin_at(s, "bitcoin", "29.0"));
    let journal = std::fs::read_to_string(d.state_dir.join("journal.jsonl")).unwrap();
    let approvals: Vec<Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["record"] == "approval")
        .collect();
    assert_eq!(approvals.len(), 1, "{journal}");
    assert_eq!(approvals[0]["by"], "U012ABCDEF");
    assert_eq!(approvals[0]["commit"], merged.as_str());
    assert_eq!(approvals[0]["version"], "29.0");
    assert_eq!(approvals[0]["decision"], "approved");
    assert!(approvals[0]["at_ms"].as_u64().unwrap() > 1_700_000_000_000);

    // The thread: the request updated with the decision, then the rollout's replies.
    wait_until("the rollout finished in Slack", &d, || {
        slack.posts_with("Rollout finished: bitcoin").pop()
    });
    let calls = slack.calls();
    let upd = calls
        .iter()
        .find(|c| {
            c.method == "chat.update"
                && c.body["ts"] == parent_ts.as_str()
                && c.body["blocks"]
                    .to_string()
                    .contains("Approved* by <@U012ABCDEF>")
        })
        .expect("the request updated with the decision");
    assert!(!upd.body["blocks"].to_string().contains("\"actions\""));
    let replies: Vec<String> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.body["thread_ts"] == parent_ts.as_str())
        .map(|c| c.body["text"].as_str().unwrap_or("").to_string())
        .collect();
    // The example runs on the simulator: every message says so first.
    assert!(
        replies[0].starts_with("[simulated fleet (provider: sim)] Rollout started: bitcoin → 29.0"),
        "{replies:?}"
    );
    let zones: Vec<&String> = replies
        .iter()
        .filter(|t| t.contains("in sync and baked"))
        .collect();
    assert_eq!(zones.len(), 3, "{replies:?}");
    assert!(
        zones[0].contains("eu-central-1a") && zones[2].contains("eu-central-1c"),
        "{zones:?}"
    );
    assert!(
        replies
            .last()
            .unwrap()
            .starts_with("[simulated fleet (provider: sim)] Rollout finished: bitcoin"),
        "{replies:?}"
    );
    assert_eq!(
        d.metric("fleet_slack_interactions_total{result=\"approved\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("fleet_slack_interactions_total{result=\"refused\"}"),
        Some(1.0)
    );
    assert!(
        d.metric("fleet_slack_interactions_total{result=\"unauthorized\"}")
            .unwrap()
            >= 6.0
    );
    assert_eq!(d.metric("fleet_bump_pull_requests_total"), Some(1.0));

    // 5. A `release` webhook runs the watch at once (the interval is an hour): 29.1 is out.
    let mut rs = vec![release(
        "bitcoin/bitcoin",
        3,
        "v29.1",
        Some(now_s() - 3 * 86_400),
        false,
        "29.1",
    )];
    rs.extend(gh.st().releases["bitcoin/bitcoin"].clone());
    gh.set_releases("bitcoin/bitcoin", rs);
    let ev = r#"{"action":"published","release":{"tag_name":"v29.1"},"repository":{"full_name":"bitcoin/bitcoin"}}"#;
    let r = github_hook(&d, "release", HOOK, ev.as_bytes());
    assert_eq!(r.status, 202, "{}", r.body);
    let pr2 = wait_until("the 29.1 bump", &d, || {
        gh.pulls()
            .into_iter()
            .find(|p| p.head == "fleet/bump-bitcoin-29.1")
    });
    assert_eq!(pr2.title, "bitcoin: 29.0 → 29.1");
    // A forged release event does nothing.
    let r = github_hook(&d, "release", "guess", ev.as_bytes());
    assert_eq!(r.status, 401);
    assert!(
        !d.log().contains(SLACK_TOKEN) && !d.log().contains(GH_TOKEN) && !d.log().contains(SIGNING),
        "no secret in the log"
    );
    assert_eq!(
        d.terminate(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
    // Everything was delivered: the exit does not claim messages were lost.
    assert!(!d.log().contains("still queued"), "{}", d.log_tail());
}

#[test]
fn a_rollout_without_approval_goes_on_while_slack_is_down_and_slack_hears_later() {
    let tmp = tempfile::tempdir().unwrap();
    let ltc = |v: &str| {
        let mut c = coin("litecoin", v, 3, 1, 1);
        c.approval = "none".into();
        c
    };
    let remote = Remote::new(tmp.path(), &fleet_files(&[ltc("0.21.4")]));
    let slack_port = free_port(); // nothing listens there yet: Slack is down
    let slack_url = format!("http://127.0.0.1:{slack_port}/api");
    let cfg = format!(
        "repo:\n  url: {}\n  branch: main\n  poll_interval: 1h\n  watch: true\n\
         provider: sim\nsim:\n  speed: 600\n\
         reconcile:\n  requeue: 1h\n  gate_poll: 10s\n  backoff_min: 100ms\n  backoff_max: 2s\n\
         slack:\n  api_url: {slack_url}\n",
        remote.url()
    );
    let mut d = Daemon::start(tmp.path(), &cfg, &env());
    d.wait_for("in sync", LONG, |s| coin_at(s, "litecoin", "0.21.4"));
    remote.write(&fleet_files(&[ltc("0.21.5")]));
    let c2 = remote.commit_push("litecoin 0.21.5");
    d.wait_for("0.21.5 everywhere while Slack is down", LONG, |s| {
        s["commit"] == c2.as_str() && coin_at(s, "litecoin", "0.21.5")
    });
    assert!(
        d.metric("fleet_slack_messages_total{result=\"retried\"}")
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        d.metric("fleet_slack_messages_total{result=\"sent\"}"),
        Some(0.0)
    );
    assert!(d.metric("fleet_slack_queue").unwrap() >= 1.0);

    // Slack is back: what was queued arrives, in order (the channel is fleet.yaml's).
    let slack = SlackMock::start_on(SLACK_TOKEN, slack_port);
    let fin = wait_until("the queued messages delivered", &d, || {
        slack.posts_with("Rollout finished: litecoin").pop()
    });
    assert_eq!(fin.body["channel"], "#node-fleet");
    let posts: Vec<String> = slack
        .calls()
        .into_iter()
        .filter(|c| c.ok && c.method == "chat.postMessage")
        .map(|c| c.body["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        posts[0]
            .starts_with("[simulated fleet (provider: sim)] Rollout started: litecoin → 0.21.5"),
        "{posts:?}"
    );
    assert_eq!(
        posts
            .iter()
            .filter(|p| p.contains("in sync and baked"))
            .count(),
        3,
        "{posts:?}"
    );
    assert_eq!(
        d.metric("fleet_slack_messages_total{result=\"dropped\"}"),
        Some(0.0)
    );
    assert_eq!(
        d.terminate(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
}
