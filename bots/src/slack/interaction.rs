//! Slack's interaction callback: a click on Approve or Reject.
//!
//! Slack POSTs `application/x-www-form-urlencoded` with one field, `payload`, holding the
//! JSON of a `block_actions` interaction (decoded with slack-morphism's model). What fleet
//! takes from it: which button (`fleet_approve` / `fleet_reject`), the button's value (the
//! [`ApprovalKey`] it was posted with), who clicked, and where the message is. The caller
//! has verified the signature first (see `signature`); this module checks the shape and the
//! values, and [`decide`] checks the person.

use super::messages::{APPROVE, ApprovalKey, REJECT, Verdict};
use fleet_repo_schema::values::{CoinName, Version};
use slack_morphism::prelude::*;

/// A click on one of fleet's buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// Approve or reject.
    pub verdict: Verdict,
    /// What for.
    pub key: ApprovalKey,
    /// Slack user id of who clicked.
    pub user: String,
    /// Channel of the message.
    pub channel: Option<String>,
    /// The message's timestamp.
    pub message_ts: Option<String>,
}

/// Why an interaction was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    /// Not a form with a `payload`.
    #[error("expected a form body with a `payload` field")]
    NoPayload,
    /// The payload is not an interaction Slack documents.
    #[error("payload is not a Slack interaction: {0}")]
    Shape(String),
    /// An interaction fleet does not handle (a shortcut, a modal…).
    #[error("interaction `{0}` is not handled by fleet")]
    Other(String),
    /// Not one of fleet's buttons, or its value is not a key fleet wrote.
    #[error("not a fleet approval button ({0})")]
    NotOurs(String),
}

/// Who may decide, and what an unauthorised click gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record it.
    Record(Click),
    /// Refuse it; tell the user why (ephemerally).
    Refuse {
        /// The click.
        click: Click,
        /// Why.
        reason: String,
    },
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    for pair in s.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return percent_decode(v);
        }
    }
    None
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The click in a verified request body.
pub fn parse(body: &[u8]) -> Result<Click, InteractionError> {
    let payload = form_value(body, "payload").ok_or(InteractionError::NoPayload)?;
    let ev: SlackInteractionEvent =
        serde_json::from_str(&payload).map_err(|e| InteractionError::Shape(e.to_string()))?;
    let SlackInteractionEvent::BlockActions(ba) = ev else {
        let kind = serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default();
        return Err(InteractionError::Other(kind));
    };
    let action = ba
        .actions
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| InteractionError::NotOurs("no action".into()))?;
    let verdict = match action.action_id.to_string().as_str() {
        APPROVE => Verdict::Approved,
        REJECT => Verdict::Rejected,
        other => return Err(InteractionError::NotOurs(format!("action `{other}`"))),
    };
    let value = action
        .value
        .as_deref()
        .ok_or_else(|| InteractionError::NotOurs("button without a value".into()))?;
    let key: ApprovalKey = serde_json::from_str(value)
        .map_err(|_| InteractionError::NotOurs("value is not an approval key".into()))?;
    // The value went out with fleet's message and came back from Slack: check it as if
    // it were input anyway, since it is about to be written to the journal.
    let version_ok = key.version == "retire" || Version::parse(&key.version).is_ok();
    let commit_ok = !key.commit.is_empty()
        && key.commit.len() <= 80
        && key
            .commit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if CoinName::parse(&key.coin).is_err() || !version_ok || !commit_ok {
        return Err(InteractionError::NotOurs("malformed approval key".into()));
    }
    let user = ba
        .user
        .as_ref()
        .map(|u| u.id.to_string())
        .ok_or_else(|| InteractionError::Shape("no user".into()))?;
    let (channel, message_ts) = match &ba.container {
        SlackInteractionActionContainer::Message(m) => (
            m.channel_id.as_ref().map(|c| c.to_string()),
            Some(m.message_ts.to_string()),
        ),
        _ => (None, None),
    };
    let channel = channel.or_else(|| ba.channel.as_ref().map(|c| c.id.to_string()));
    Ok(Click {
        verdict,
        key,
        user,
        channel,
        message_ts,
    })
}

/// Whether `click` may be recorded: only users listed in `approvers` decide.
pub fn decide(click: Click, approvers: &[String]) -> Decision {
    if approvers.contains(&click.user) {
        Decision::Record(click)
    } else {
        let reason = if approvers.is_empty() {
            "fleet.yaml lists no approvers, so nobody can approve rollouts from Slack".to_string()
        } else {
            "you are not in fleet.yaml's `approvers`; ask one of them, or add your Slack user id there".to_string()
        };
        Decision::Refuse { click, reason }
    }
}
