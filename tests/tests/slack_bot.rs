//! The Slack bot against Slack's Web API on loopback (`slack_mock`), through the real
//! client (slack-morphism over hyper): what is sent (chat.postMessage / chat.update bodies,
//! blocks, threads), and how it behaves when Slack rate-limits, refuses, or is slow to
//! learn its channel. Interaction payloads as Slack sends them are parsed and judged here too.

use bots::github::Pacer;
use bots::slack::bot::{self, BotConfig, SlackStats};
use bots::slack::interaction::{self, Decision};
use bots::slack::{ApprovalKey, MorphismApi, Notice, SlackHandle, Verdict};
use fleet_tests::mock_http::Resp;
use fleet_tests::slack_mock::{self, SlackMock};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "xoxb-test-0123456789";

#[derive(Debug, Default)]
struct TestPacer {
    now_ms: AtomicI64,
    sleeps: Mutex<Vec<Duration>>,
}

impl Pacer for TestPacer {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
    fn sleep(
        &self,
        d: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        self.sleeps.lock().unwrap().push(d);
        self.now_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
        Box::pin(tokio::task::yield_now())
    }
}

fn start(
    mock: &SlackMock,
    pacer: &Arc<TestPacer>,
    channel: bot::ChannelFn,
) -> (SlackHandle, tokio::task::JoinHandle<()>) {
    let api = MorphismApi::new(&mock.api_url(), TOKEN).unwrap();
    bot::start(
        Arc::new(api),
        Arc::clone(pacer) as Arc<dyn Pacer>,
        BotConfig {
            channel,
            repeat_window: Duration::from_secs(3600),
            memory: None,
            label: None,
        },
    )
}

/// Drop the handle and wait for the worker to send everything.
async fn drain(h: SlackHandle, t: tokio::task::JoinHandle<()>) -> Arc<SlackStats> {
    let stats = h.counters();
    drop(h);
    tokio::time::timeout(Duration::from_secs(30), t)
        .await
        .expect("the queue drains")
        .unwrap();
    stats
}

fn key() -> ApprovalKey {
    ApprovalKey {
        coin: "bitcoin".into(),
        version: "29.0".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
    }
}

fn approval_needed() -> Notice {
    Notice::ApprovalNeeded {
        key: key(),
        from: vec!["28.1".into()],
        reasons: vec!["major version change 28.1 → 29.0 (rollout.approval: major)".into()],
        zones: vec!["eu-central-1a".into(), "eu-central-1b".into()],
        steps: 2,
        approvers: vec!["U012ABCDEF".into()],
    }
}

fn blocks_text(c: &slack_mock::Call) -> String {
    c.body["blocks"].to_string()
}

#[tokio::test]
async fn a_rollout_is_one_thread_under_its_approval_request() {
    let mock = SlackMock::start(TOKEN);
    let pacer = Arc::new(TestPacer::default());
    let (h, t) = start(&mock, &pacer, bot::channel("#node-fleet"));
    h.notify(approval_needed());
    h.notify(approval_needed()); // every pass asks again: posted once
    h.notify(Notice::ApprovalDecided {
        key: key(),
        verdict: Verdict::Approved,
        by: "U012ABCDEF".into(),
        at_ms: 1_764_547_300_000,
    });
    h.notify(Notice::RolloutStarted {
        coin: "bitcoin".into(),
        from: vec!["28.1".into()],
        to: Some("29.0".into()),
        commit: key().commit,
        zones: vec!["eu-central-1a".into(), "eu-central-1b".into()],
        steps: 2,
    });
    for z in ["eu-central-1a", "eu-central-1b"] {
        h.notify(Notice::ZonePassed {
            coin: "bitcoin".into(),
            zone: z.into(),
            took_ms: 1_900_000,
        });
    }
    h.notify(Notice::RolloutFinished {
        coin: "bitcoin".into(),
        took_ms: 3_800_000,
    });
    let stats = drain(h, t).await;

    let calls = mock.calls();
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "chat.postMessage", // the approval request
            "chat.update",      // decided: buttons replaced
            "chat.postMessage", // started (in the thread)
            "chat.postMessage", // zone a
            "chat.postMessage", // zone b
            "chat.postMessage", // finished
            "chat.update",      // the parent shows the outcome
        ]
    );
    let parent = calls[0].ts.clone().unwrap();
    // The request: channel, fallback text, a section, the buttons with the key as value.
    let req = &calls[0].body;
    assert_eq!(req["channel"], "#node-fleet");
    assert!(
        req["text"]
            .as_str()
            .unwrap()
            .starts_with("Approval needed: bitcoin 28.1 → 29.0")
    );
    let actions = req["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("buttons");
    assert_eq!(actions["elements"][0]["action_id"], "fleet_approve");
    assert_eq!(actions["elements"][1]["action_id"], "fleet_reject");
    let value: ApprovalKey =
        serde_json::from_str(actions["elements"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(value, key());
    // The update names who decided and has no buttons left.
    assert_eq!(calls[1].body["ts"].as_str(), Some(parent.as_str()));
    assert_eq!(calls[1].body["channel"], slack_mock::CHANNEL_ID);
    assert!(!blocks_text(&calls[1]).contains("\"actions\""));
    assert!(blocks_text(&calls[1]).contains("Approved* by <@U012ABCDEF>"));
    // Every rollout message is a reply in the request's thread.
    for c in &calls[2..6] {
        assert_eq!(
            c.body["thread_ts"].as_str(),
            Some(parent.as_str()),
            "{}",
            c.body
        );
    }
    assert!(blocks_text(&calls[3]).contains("zone *eu-central-1a* is in sync and baked (31m 40s)"));
    assert!(
        calls[5].body["text"]
            .as_str()
            .unwrap()
            .contains("Rollout finished: bitcoin in 1h 3m")
    );
    assert_eq!(calls[6].body["ts"].as_str(), Some(parent.as_str()));
    assert!(blocks_text(&calls[6]).contains("Rollout finished"));
    assert_eq!(stats.suppressed.load(Ordering::SeqCst), 1);
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_gate_failure_is_shown_in_the_channel_with_heights_and_repeats_are_suppressed() {
    let mock = SlackMock::start(TOKEN);
    let pacer = Arc::new(TestPacer::default());
    let (h, t) = start(&mock, &pacer, bot::channel("C0FLEET001"));
    h.notify(Notice::RolloutStarted {
        coin: "litecoin".into(),
        from: vec!["0.21.4".into()],
        to: Some("0.21.5".into()),
        commit: "abc".into(),
        zones: vec!["eu-central-1a".into()],
        steps: 1,
    });
    let failed = Notice::GateFailed {
        coin: "litecoin".into(),
        zone: Some("eu-central-1a".into()),
        node: Some("litecoin/eu-central-1a/1".into()),
        reason: "height stuck at 2601 for 30m (stall_timeout)".into(),
        height: Some(2601),
        target: Some(2650),
    };
    h.notify(failed.clone());
    // A restarted daemon reports the same failure again: not repeated within the window.
    h.notify(failed.clone());
    let invalid = Notice::RepoInvalid {
        commit: "f00".into(),
        in_force: Some("abc".into()),
        errors: vec!["coins/litecoin.yaml:12:20: E323 <!here> is out of range".into()],
    };
    h.notify(invalid.clone());
    h.notify(invalid);
    let stats = drain(h, t).await;
    let posts: Vec<_> = mock
        .calls()
        .into_iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect();
    assert_eq!(posts.len(), 3, "{posts:#?}");
    let fail = &posts[1];
    assert_eq!(fail.body["thread_ts"].as_str(), posts[0].ts.as_deref());
    assert_eq!(
        fail.body["reply_broadcast"], true,
        "a failure is shown in the channel too"
    );
    let text = blocks_text(fail);
    assert!(text.contains("Height 2601 of 2650 (49 behind)"), "{text}");
    assert!(text.contains("litecoin/eu-central-1a/1"), "{text}");
    let inv = blocks_text(&posts[2]);
    assert!(
        inv.contains("&lt;!here&gt;") && !inv.contains("<!here>"),
        "{inv}"
    );
    assert_eq!(stats.suppressed.load(Ordering::SeqCst), 2);
}

fn incident(
    change: bots::slack::messages::IncidentChange,
    condition: &str,
    care: Option<&str>,
    left: bool,
) -> Notice {
    Notice::Incident {
        key: "litecoin/eu-central-1a/1".into(),
        id: 1,
        coin: "litecoin".into(),
        subject: "litecoin/eu-central-1a/1".into(),
        condition: condition.into(),
        change,
        care: care.map(str::to_string),
        left_for_person: left,
        since_ms: 1_700_000_000_000,
        at_ms: 1_700_000_600_000,
    }
}

#[tokio::test]
async fn an_incident_is_one_message_updated_in_place_and_resolved_in_its_thread() {
    use bots::slack::messages::IncidentChange::*;
    let mock = SlackMock::start(TOKEN);
    let pacer = Arc::new(TestPacer::default());
    let (h, t) = start(&mock, &pacer, bot::channel("C0FLEET001"));
    h.notify(incident(
        Opened,
        "out of sync: at 2601, 12 behind",
        None,
        false,
    ));
    h.notify(incident(
        Updated,
        "stuck at 2601 while its chain moved on to 2650",
        None,
        false,
    ));
    h.notify(incident(
        Updated,
        "stuck at 2601 while its chain moved on to 2650",
        Some("fleet restarted its daemon (1 time in this incident)"),
        false,
    ));
    h.notify(incident(
        Resolved,
        "stuck at 2601 while its chain moved on to 2650",
        None,
        false,
    ));
    // Another trouble later: a new message.
    h.notify(incident(
        Opened,
        "not answering: connection refused",
        Some("fleet will not heal it: heal.max_per_day 3. A person must look."),
        true,
    ));
    drain(h, t).await;
    let calls = mock.calls();
    let by = |m: &str| {
        calls
            .iter()
            .filter(|c| c.method == m)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (posts, updates) = (by("chat.postMessage"), by("chat.update"));
    // Posted once, updated twice in place and once resolved; the resolution also in its
    // thread; the next trouble a new message.
    assert_eq!(posts.len(), 3, "{posts:#?}");
    assert_eq!(updates.len(), 3, "{updates:#?}");
    let first = posts[0].ts.clone().expect("posted");
    assert!(
        updates
            .iter()
            .all(|u| u.body["ts"].as_str() == Some(first.as_str()))
    );
    assert!(blocks_text(&updates[1]).contains("restarted its daemon"));
    assert!(
        blocks_text(&updates[2]).contains("back in sync after 10m"),
        "{}",
        blocks_text(&updates[2])
    );
    assert_eq!(posts[1].body["thread_ts"].as_str(), Some(first.as_str()));
    assert!(
        posts[1].body["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("Resolved #1")
    );
    assert!(posts[2].body.get("thread_ts").is_none_or(|t| t.is_null()));
    assert!(blocks_text(&posts[2]).contains("Needs a person"));
}

#[tokio::test]
async fn rate_limited_messages_are_retried_in_order_and_none_is_lost() {
    let mock = SlackMock::start(TOKEN);
    mock.script("chat.postMessage", slack_mock::rate_limited(3));
    mock.script("chat.postMessage", slack_mock::rate_limited(5));
    // Then a server error: retried with backoff.
    mock.script(
        "chat.postMessage",
        Resp::json(
            503,
            &serde_json::json!({"ok": false, "error": "service_unavailable"}),
        ),
    );
    let pacer = Arc::new(TestPacer::default());
    let (h, t) = start(&mock, &pacer, bot::channel("#node-fleet"));
    for i in 0..5u64 {
        h.notify(Notice::RolloutFinished {
            coin: format!("coin{i}"),
            took_ms: 1000 * i,
        });
    }
    let stats = drain(h, t).await;
    let ok: Vec<String> = mock
        .calls()
        .into_iter()
        .filter(|c| c.ok && c.method == "chat.postMessage")
        .map(|c| c.body["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ok.len(), 5, "{ok:?}");
    for (i, t) in ok.iter().enumerate() {
        assert!(t.contains(&format!("coin{i}")), "order kept: {ok:?}");
    }
    let sleeps = pacer.sleeps.lock().unwrap().clone();
    assert_eq!(
        sleeps[..2],
        [Duration::from_secs(3), Duration::from_secs(5)],
        "Retry-After honoured: {sleeps:?}"
    );
    assert_eq!(stats.rate_limited.load(Ordering::SeqCst), 2);
    assert_eq!(stats.retries.load(Ordering::SeqCst), 3);
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_permanent_error_drops_one_message_and_the_next_ones_go() {
    let mock = SlackMock::start(TOKEN);
    mock.script(
        "chat.postMessage",
        Resp::json(
            200,
            &serde_json::json!({"ok": false, "error": "not_in_channel"}),
        ),
    );
    let pacer = Arc::new(TestPacer::default());
    let (h, t) = start(&mock, &pacer, bot::channel("#node-fleet"));
    h.notify(Notice::RolloutFinished {
        coin: "a".into(),
        took_ms: 1,
    });
    h.notify(Notice::RolloutFinished {
        coin: "b".into(),
        took_ms: 1,
    });
    let stats = drain(h, t).await;
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(mock.posts_with("Rollout finished: b").len(), 1);

    // A wrong token is permanent too (invalid_auth), and never appears in what was sent.
    let (h, t) = bot::start(
        Arc::new(MorphismApi::new(&mock.api_url(), "xoxb-wrong").unwrap()),
        Arc::clone(&pacer) as Arc<dyn Pacer>,
        BotConfig {
            channel: bot::channel("#x"),
            repeat_window: Duration::ZERO,
            memory: None,
            label: None,
        },
    );
    h.notify(Notice::RolloutFinished {
        coin: "c".into(),
        took_ms: 1,
    });
    let stats = drain(h, t).await;
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn messages_wait_for_a_channel_and_are_sent_once_it_is_known() {
    let mock = SlackMock::start(TOKEN);
    let pacer = Arc::new(TestPacer::default());
    let known: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let k = Arc::clone(&known);
    let (h, t) = start(&mock, &pacer, Arc::new(move || k.lock().unwrap().clone()));
    h.notify(Notice::RolloutFinished {
        coin: "a".into(),
        took_ms: 1,
    });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(mock.calls().is_empty());
    *known.lock().unwrap() = Some("#node-fleet".into());
    let stats = drain(h, t).await;
    assert_eq!(mock.posts_with("Rollout finished: a").len(), 1);
    assert!(stats.retries.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_real_block_actions_payload_is_read_and_only_approvers_decide() {
    let value = serde_json::to_string(&key()).unwrap();
    let body = slack_mock::form_body(&slack_mock::block_actions(
        "fleet_approve",
        &value,
        "U012ABCDEF",
        "1764547200.000001",
    ));
    let click = interaction::parse(&body).unwrap();
    assert_eq!(click.verdict, Verdict::Approved);
    assert_eq!(click.key, key());
    assert_eq!(click.user, "U012ABCDEF");
    assert_eq!(click.channel.as_deref(), Some(slack_mock::CHANNEL_ID));
    assert_eq!(click.message_ts.as_deref(), Some("1764547200.000001"));
    let approvers = vec!["U012ABCDEF".to_string(), "U034GHIJKL".to_string()];
    assert!(matches!(
        interaction::decide(click.clone(), &approvers),
        Decision::Record(_)
    ));
    let mut stranger = click;
    stranger.user = "U999NOTME".into();
    assert!(matches!(
        interaction::decide(stranger, &approvers),
        Decision::Refuse { .. }
    ));

    let reject = slack_mock::form_body(&slack_mock::block_actions(
        "fleet_reject",
        &value,
        "U034GHIJKL",
        "1",
    ));
    assert_eq!(
        interaction::parse(&reject).unwrap().verdict,
        Verdict::Rejected
    );
    // Someone else's button, a forged value, a value that would put a command in the
    // journal, a shortcut, garbage: none is a decision.
    let other = slack_mock::form_body(&slack_mock::block_actions(
        "something_else",
        &value,
        "U012ABCDEF",
        "1",
    ));
    assert!(matches!(
        interaction::parse(&other),
        Err(interaction::InteractionError::NotOurs(_))
    ));
    let forged = slack_mock::form_body(&slack_mock::block_actions(
        "fleet_approve",
        "{\"coin\":\"x\"}",
        "U012ABCDEF",
        "1",
    ));
    assert!(interaction::parse(&forged).is_err());
    let evil = serde_json::json!({"coin": "bitcoin", "version": "29.0; rm -rf /", "commit": "abc"})
        .to_string();
    let evil = slack_mock::form_body(&slack_mock::block_actions(
        "fleet_approve",
        &evil,
        "U012ABCDEF",
        "1",
    ));
    assert!(matches!(
        interaction::parse(&evil),
        Err(interaction::InteractionError::NotOurs(_))
    ));
    let shortcut = slack_mock::form_body(
        &serde_json::json!({"type": "shortcut", "token": "x", "action_ts": "1", "team": {"id": "T1", "domain": "d"}, "user": {"id": "U1", "username": "u", "team_id": "T1"}, "callback_id": "c", "trigger_id": "t"}),
    );
    assert!(interaction::parse(&shortcut).is_err());
    assert!(interaction::parse(b"payload=%7Bnot json").is_err());
    assert!(interaction::parse(b"nothing=here").is_err());
}

/// A restarted daemon (a new bot on the same state file) neither asks twice for the same
/// approval nor starts a second thread for the rollout under way; the decision updates the
/// first request.
#[tokio::test]
async fn the_bot_remembers_its_requests_and_threads_across_a_restart() {
    let mock = SlackMock::start(TOKEN);
    let pacer = Arc::new(TestPacer::default());
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("slack.json");
    let boot = || {
        bot::start(
            Arc::new(MorphismApi::new(&mock.api_url(), TOKEN).unwrap()),
            Arc::clone(&pacer) as Arc<dyn Pacer>,
            BotConfig {
                channel: bot::channel("#node-fleet"),
                repeat_window: Duration::from_secs(3600),
                memory: Some(memory.clone()),
                label: None,
            },
        )
    };
    let started = |coin: &str, to: &str| Notice::RolloutStarted {
        coin: coin.into(),
        from: vec!["1".into()],
        to: Some(to.into()),
        commit: key().commit,
        zones: vec!["eu-central-1a".into()],
        steps: 1,
    };
    let (h, t) = boot();
    h.notify(approval_needed());
    h.notify(started("litecoin", "0.21.5"));
    drain(h, t).await;

    let (h, t) = boot();
    h.notify(approval_needed()); // asked again by the restarted executor
    h.notify(started("litecoin", "0.21.5")); // the same rollout, resumed
    h.notify(Notice::ZonePassed {
        coin: "litecoin".into(),
        zone: "eu-central-1a".into(),
        took_ms: 1,
    });
    h.notify(Notice::ApprovalDecided {
        key: key(),
        verdict: Verdict::Rejected,
        by: "U012ABCDEF".into(),
        at_ms: 0,
    });
    let stats = drain(h, t).await;
    assert_eq!(stats.suppressed.load(Ordering::SeqCst), 1);

    let calls = mock.calls();
    let request_ts = calls[0].ts.clone().unwrap();
    let ltc_parent = calls[1].ts.clone().unwrap();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage"
                && c.body["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("Approval needed"))
            .count(),
        1
    );
    let replies: Vec<&slack_mock::Call> = calls
        .iter()
        .filter(|c| c.body["thread_ts"] == ltc_parent.as_str())
        .collect();
    assert_eq!(
        replies.len(),
        2,
        "resumed start and the zone, in the first thread: {calls:#?}"
    );
    let upd = calls
        .iter()
        .find(|c| c.method == "chat.update")
        .expect("the decision");
    assert_eq!(upd.body["ts"], request_ts.as_str());
    assert!(
        upd.body["blocks"]
            .to_string()
            .contains("Rejected* by <@U012ABCDEF>")
    );
}

/// A simulated fleet's messages say so: the label leads the text and is the first block, of
/// new messages and of updates alike, once.
#[tokio::test]
async fn a_labelled_bot_marks_every_message() {
    let mock = SlackMock::start(TOKEN);
    let pacer = Arc::new(TestPacer::default());
    let api = MorphismApi::new(&mock.api_url(), TOKEN).unwrap();
    let (h, t) = bot::start(
        Arc::new(api),
        Arc::clone(&pacer) as Arc<dyn Pacer>,
        BotConfig {
            channel: bot::channel("#x"),
            repeat_window: Duration::ZERO,
            memory: None,
            label: Some("simulated fleet (provider: sim)".into()),
        },
    );
    h.notify(Notice::RolloutFinished {
        coin: "a".into(),
        took_ms: 1,
    });
    h.ephemeral("#x", "U012ABCDEF", "Not recorded: you are not an approver");
    drain(h, t).await;
    let ephemeral: Vec<_> = mock
        .calls()
        .into_iter()
        .filter(|c| c.method == "chat.postEphemeral")
        .collect();
    assert_eq!(ephemeral.len(), 1);
    assert_eq!(
        ephemeral[0].body["text"],
        "[simulated fleet (provider: sim)] Not recorded: you are not an approver"
    );
    let posts = mock.posts_with("Rollout finished: a");
    assert_eq!(posts.len(), 1);
    let body = &posts[0].body;
    assert_eq!(
        body["text"],
        "[simulated fleet (provider: sim)] Rollout finished: a in 0.0s"
    );
    let first = &body["blocks"][0];
    assert_eq!(first["type"], "context", "{body}");
    assert_eq!(
        first["elements"][0]["text"],
        ":test_tube: *simulated fleet (provider: sim)*"
    );
    let blocks = body["blocks"].to_string();
    assert_eq!(blocks.matches("simulated fleet").count(), 1, "{blocks}");
}
