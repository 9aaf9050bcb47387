//! Slack's Web API on loopback (`POST /api/chat.postMessage`, `chat.update`,
//! `chat.postEphemeral`) with the shapes of Slack's documentation: JSON bodies with a bearer
//! token, `{"ok": true, …}` answers, `{"ok": false, "error": "invalid_auth"}` for a wrong
//! token, and scripted `429 Too Many Requests` with `Retry-After` or API errors. Every call
//! is recorded with its JSON body. Also builds and signs interaction callbacks as Slack
//! sends them to an app's request URL.

use crate::mock_http::{Handler, MockServer, Req, Resp};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    /// `chat.postMessage`, …
    pub method: String,
    /// Its JSON body.
    pub body: Value,
    /// The answer's `ts` (posts), when it succeeded.
    pub ts: Option<String>,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The mock's state.
#[derive(Debug, Default)]
pub struct SlackState {
    /// Expected bot token.
    pub token: String,
    /// Calls, in order.
    pub calls: Vec<Call>,
    /// Answers to serve first: (method, response).
    pub script: VecDeque<(String, Resp)>,
    next: u64,
}

/// The mock server.
#[derive(Debug)]
pub struct SlackMock {
    server: MockServer,
    /// State.
    pub state: Arc<Mutex<SlackState>>,
}

/// The channel id the mock answers with.
pub const CHANNEL_ID: &str = "C0FLEET001";

impl SlackMock {
    /// A mock expecting `token`.
    pub fn start(token: &str) -> SlackMock {
        SlackMock::start_on(token, 0)
    }

    /// A mock expecting `token` on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(token: &str, port: u16) -> SlackMock {
        let state = Arc::new(Mutex::new(SlackState {
            token: token.into(),
            ..SlackState::default()
        }));
        let st = Arc::clone(&state);
        let handler: Handler = Arc::new(move |req: Req| {
            let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
            handle(&mut s, &req)
        });
        SlackMock {
            server: MockServer::start_on(port, handler),
            state,
        }
    }

    /// The API base to configure (`…/api`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.server.url())
    }

    /// Lock the state.
    pub fn st(&self) -> std::sync::MutexGuard<'_, SlackState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    /// Serve `resp` to the next call of `method`.
    pub fn script(&self, method: &str, resp: Resp) {
        self.st().script.push_back((method.to_string(), resp));
    }

    /// Successful posts whose text contains `needle`.
    pub fn posts_with(&self, needle: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.ok && c.method == "chat.postMessage")
            .filter(|c| c.body["text"].as_str().is_some_and(|t| t.contains(needle)))
            .collect()
    }
}

/// A `429 Too Many Requests` as Slack sends it.
pub fn rate_limited(retry_after_s: u64) -> Resp {
    Resp::json(429, &json!({"ok": false, "error": "ratelimited"}))
        .header("retry-after", retry_after_s.to_string())
}

fn handle(s: &mut SlackState, req: &Req) -> Resp {
    let method = req
        .path
        .strip_prefix("/api/")
        .unwrap_or(&req.path)
        .to_string();
    let body = req.json();
    let auth_ok = req.header("authorization") == Some(format!("Bearer {}", s.token).as_str());
    if let Some(i) = s.script.iter().position(|(m, _)| *m == method) {
        let (_, r) = s.script.remove(i).expect("scripted");
        s.calls.push(Call {
            method,
            body,
            ts: None,
            ok: false,
        });
        return r;
    }
    if !auth_ok {
        s.calls.push(Call {
            method,
            body,
            ts: None,
            ok: false,
        });
        return Resp::json(200, &json!({"ok": false, "error": "invalid_auth"}));
    }
    let r = match method.as_str() {
        "chat.postMessage" => {
            s.next += 1;
            let ts = format!("1764547200.{:06}", s.next);
            let msg = json!({
                "type": "message", "subtype": "bot_message", "text": body["text"], "ts": ts,
                "username": "fleet", "bot_id": "B0FLEET01", "app_id": "A0FLEET01",
                "blocks": body["blocks"], "thread_ts": body["thread_ts"],
            });
            s.calls.push(Call {
                method,
                body,
                ts: Some(ts.clone()),
                ok: true,
            });
            json!({"ok": true, "channel": CHANNEL_ID, "ts": ts, "message": msg})
        }
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or("").to_string();
            let msg = json!({"text": body["text"], "blocks": body["blocks"]});
            s.calls.push(Call {
                method,
                body: body.clone(),
                ts: Some(ts.clone()),
                ok: true,
            });
            json!({"ok": true, "channel": body["channel"], "ts": ts, "text": msg["text"], "message": msg})
        }
        "chat.postEphemeral" => {
            s.calls.push(Call {
                method,
                body,
                ts: None,
                ok: true,
            });
            json!({"ok": true, "message_ts": "1764547200.999999"})
        }
        _ => {
            s.calls.push(Call {
                method,
                body,
                ts: None,
                ok: false,
            });
            json!({"ok": false, "error": "unknown_method"})
        }
    };
    Resp::json(200, &r)
}

/// A `block_actions` interaction payload for a click on `action_id` with `value`, by
/// `user`, on the message `message_ts` (shape of Slack's documentation).
pub fn block_actions(action_id: &str, value: &str, user: &str, message_ts: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": "ops", "name": "ops", "team_id": "T0FLEET01"},
        "api_app_id": "A0FLEET01",
        "token": "verification-token-not-used",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL_ID, "is_ephemeral": false},
        "trigger_id": "12345.98765.abcd2358fdea",
        "team": {"id": "T0FLEET01", "domain": "fleet-ops"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": CHANNEL_ID, "name": "node-fleet"},
        "message": {"type": "message", "subtype": "bot_message", "text": "Approval needed", "ts": message_ts, "bot_id": "B0FLEET01"},
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/T0FLEET01/1/xyz",
        "actions": [{
            "action_id": action_id, "block_id": "fleet_approval",
            "text": {"type": "plain_text", "text": "Approve", "emoji": true},
            "value": value, "style": "primary", "type": "button", "action_ts": "1764547300.000100"
        }]
    })
}

/// The form body Slack posts: `payload=<urlencoded JSON>`.
pub fn form_body(payload: &Value) -> Vec<u8> {
    let json = payload.to_string();
    let mut out = String::from("payload=");
    for b in json.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into_bytes()
}

/// `v0=<hex>` of `body` at `timestamp` under `secret`, as Slack signs.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let mut s = String::from("v0=");
    for b in mac.finalize().into_bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
