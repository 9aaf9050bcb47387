//! Slack: engine events as notices ([`SlackNotifier`]), the approval callback
//! ([`SlackHook`]), starting the bot, and its metrics.

use super::{SetupError, env_secret, wall_ms};
use crate::clock::Millis;
use crate::config::RunConfig;
use crate::daemon::{Good, Shared};
use crate::events::{Event, Notifier};
use crate::plan::ApprovalTarget;
use crate::server::InteractionHook;
use crate::store::{ApprovalKey, Decided, Decision, Journal};
use bots::github::SystemPacer;
use bots::slack::interaction::{self, Decision as Judged, InteractionError};
use bots::slack::messages::IncidentChange;
use bots::slack::signature::{SigningSecret, Verifier};
use bots::slack::{BotConfig, ChannelFn, MorphismApi, Notice, SlackHandle, Verdict};
use fleet_repo_schema::Version;
use fleet_repo_schema::values::CoinName;
use hyper::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch as wch;

fn strings<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

/// Executor and fetcher events, as Slack notices.
pub struct SlackNotifier {
    handle: SlackHandle,
    good: wch::Receiver<Option<Arc<Good>>>,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackNotifier")
    }
}

impl SlackNotifier {
    /// Notices go to `handle`; approvers are read from the revision in force.
    pub fn new(handle: SlackHandle, good: wch::Receiver<Option<Arc<Good>>>) -> SlackNotifier {
        SlackNotifier { handle, good }
    }

    fn approvers(&self) -> Vec<String> {
        self.good
            .borrow()
            .as_ref()
            .map(|g| strings(&g.desired.fleet.approvers))
            .unwrap_or_default()
    }
}

/// The notice for `e`, if Slack hears of it. Rendering to Slack's strings happens here, at the
/// edge: the bots crate knows nothing of the engine's types.
pub fn notice_of(
    e: &Event,
    at_ms: Millis,
    approvers: impl FnOnce() -> Vec<String>,
) -> Option<Notice> {
    Some(match e {
        Event::RolloutStarted {
            coin,
            commit,
            from,
            to,
            zones,
            steps,
        } => Notice::RolloutStarted {
            coin: coin.to_string(),
            from: strings(from),
            to: to.as_ref().map(|v| v.to_string()),
            commit: commit.clone(),
            zones: strings(zones),
            steps: *steps,
        },
        Event::ApprovalNeeded {
            coin,
            target,
            commit,
            reasons,
            from,
            zones,
            steps,
        } => Notice::ApprovalNeeded {
            key: bots::slack::ApprovalKey {
                coin: coin.to_string(),
                version: target.to_string(),
                commit: commit.clone(),
            },
            from: strings(from),
            reasons: strings(reasons),
            zones: strings(zones),
            steps: *steps,
            approvers: approvers(),
        },
        Event::ZonePassed {
            coin,
            zone,
            took_ms,
        } => Notice::ZonePassed {
            coin: coin.to_string(),
            zone: zone.to_string(),
            took_ms: *took_ms,
        },
        Event::RolloutFinished { coin, took_ms } => Notice::RolloutFinished {
            coin: coin.to_string(),
            took_ms: *took_ms,
        },
        Event::RolloutFailed { coin, failure } => {
            let (height, target) = failure.heights();
            Notice::GateFailed {
                coin: coin.to_string(),
                zone: failure.zone().map(|z| z.to_string()),
                node: failure.node().map(|n| n.to_string()),
                reason: failure.to_string(),
                height,
                target,
            }
        }
        Event::RolledBack { coin, rollback } => {
            use crate::events::RollbackOutcome;
            use bots::slack::messages::RollbackResult;
            Notice::RolledBack {
                coin: coin.to_string(),
                zone: rollback.zone.to_string(),
                nodes: rollback.nodes.iter().map(|n| n.to_string()).collect(),
                outcome: match &rollback.outcome {
                    RollbackOutcome::InSync => RollbackResult::InSync,
                    RollbackOutcome::Failed { failure } => RollbackResult::LeftForPerson {
                        reason: failure.to_string(),
                    },
                    RollbackOutcome::Cancelled => RollbackResult::LeftForPerson {
                        reason: "cancelled before it was done".into(),
                    },
                },
            }
        }
        Event::RepoInvalid {
            commit,
            in_force,
            errors,
        } => Notice::RepoInvalid {
            commit: commit.clone(),
            in_force: in_force.clone(),
            errors: strings(errors),
        },
        Event::Incident { incident, change } => {
            use crate::care::incident::{Care, Change};
            Notice::Incident {
                key: incident.subject.to_string(),
                id: incident.id,
                coin: incident.subject.coin().to_string(),
                subject: incident.subject.to_string(),
                condition: incident.condition.to_string(),
                change: match change {
                    Change::Opened => IncidentChange::Opened,
                    Change::Updated => IncidentChange::Updated,
                    Change::Resolved => IncidentChange::Resolved,
                    Change::Reopened => IncidentChange::Reopened,
                },
                care: match &incident.care {
                    Care::None => None,
                    Care::Healed { restarts, .. } => Some(format!(
                        "fleet restarted its daemon ({restarts} time{} in this incident)",
                        if *restarts == 1 { "" } else { "s" }
                    )),
                    Care::ReplaceAsked { .. } => Some(
                        "its instance fails EC2's status checks: fleet is replacing it (a new instance takes over its data volume)".into(),
                    ),
                    Care::LeftForPerson { why } => Some(format!(
                        "fleet will not heal it: {why}. A person must look."
                    )),
                },
                left_for_person: matches!(incident.care, Care::LeftForPerson { .. }),
                since_ms: incident.since_ms,
                at_ms: incident.resolved_ms.unwrap_or(at_ms),
            }
        }
        Event::DiskGrow {
            coin,
            order,
            grown,
            proposal,
        } => {
            use crate::care::disk::Proposal;
            let (pull, note) = match proposal {
                Proposal::Opened { number, url } => (Some((*number, url.clone())), None),
                Proposal::AlreadyOpen { number } => (
                    None,
                    Some(format!(
                        "Pull request #{number} asks for a larger volume already."
                    )),
                ),
                Proposal::Declined { number } => (
                    None,
                    Some(format!(
                        "Pull request #{number}, from this size, was closed: not proposed again. Raise instance.data_volume_gb by hand before the volume fills."
                    )),
                ),
                Proposal::UpToDate { current_gb } => (
                    None,
                    Some(format!(
                        "The repository asks {current_gb} GB already: the next rollout grows the volumes."
                    )),
                ),
                Proposal::Failed { message } => (
                    None,
                    Some(format!(
                        "The pull request could not be opened ({message}); tried again at the next disk read."
                    )),
                ),
                Proposal::NoGitHub => (
                    None,
                    Some(format!(
                        "No GitHub repository is configured: raise instance.data_volume_gb to {} by hand.",
                        order.to_gb
                    )),
                ),
            };
            Notice::DiskGrow {
                coin: coin.to_string(),
                node: order.node.to_string(),
                reason: order.reason.to_string(),
                from_gb: order.from_gb,
                to_gb: order.to_gb,
                // A volume filling soon says its days in its reason already.
                days_left: order
                    .days_left
                    .filter(|_| matches!(order.reason, crate::care::disk::GrowReason::Full { .. })),
                grown: grown
                    .iter()
                    .any(|(_, o)| !matches!(o, crate::events::StepOutcome::Failed { .. })),
                failed: grown
                    .iter()
                    .filter_map(|(n, o)| match o {
                        crate::events::StepOutcome::Failed { error } => {
                            Some(format!("{n}: {error}"))
                        }
                        _ => None,
                    })
                    .collect(),
                pull,
                note,
            }
        }
        Event::Gate { .. }
        | Event::Healed { .. }
        | Event::SnapshotTaken { .. }
        | Event::SnapshotDeleted { .. }
        | Event::StepStarted { .. }
        | Event::StepFinished { .. }
        | Event::Waiting { .. }
        | Event::Baking { .. } => return None,
    })
}

impl Notifier for SlackNotifier {
    fn notify(&self, at_ms: Millis, e: &Event) {
        if let Some(n) = notice_of(e, at_ms, || self.approvers()) {
            self.handle.notify(n);
        }
    }
}

/// The journal's key of a Slack button's key: the coin and version checked by their rules.
fn approval_key(k: &bots::slack::ApprovalKey) -> Option<ApprovalKey> {
    let target = match k.version.as_str() {
        "retire" => ApprovalTarget::Retire,
        v => ApprovalTarget::Version(Version::parse(v).ok()?),
    };
    Some(ApprovalKey {
        coin: CoinName::parse(&k.coin).ok()?,
        target,
        commit: k.commit.clone(),
    })
}

/// `POST /hooks/slack`.
pub struct SlackHook {
    /// Signature and replay checks.
    pub verifier: Verifier,
    /// Where decisions are recorded.
    pub journal: Arc<Journal>,
    /// To wake the loop and count.
    pub shared: Arc<Shared>,
    /// The revision in force (approvers).
    pub good: wch::Receiver<Option<Arc<Good>>>,
    /// To update the message and answer the clicker.
    pub slack: SlackHandle,
}

impl std::fmt::Debug for SlackHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackHook")
    }
}

#[async_trait::async_trait]
impl InteractionHook for SlackHook {
    async fn handle(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, String) {
        let m = &self.shared.metrics;
        let now_ms = wall_ms();
        if let Err(e) = self
            .verifier
            .check(timestamp, signature, body, now_ms / 1000)
        {
            m.slack_interaction("unauthorized");
            tracing::warn!(error = %e, "Slack interaction refused");
            return (StatusCode::UNAUTHORIZED, e.to_string());
        }
        let click = match interaction::parse(body) {
            Ok(c) => c,
            Err(e @ (InteractionError::Other(_) | InteractionError::NotOurs(_))) => {
                m.slack_interaction("ignored");
                tracing::info!(error = %e, "Slack interaction ignored");
                return (StatusCode::OK, String::new());
            }
            Err(e) => {
                m.slack_interaction("bad_request");
                return (StatusCode::BAD_REQUEST, e.to_string());
            }
        };
        let good = self.good.borrow().clone();
        let Some(good) = good else {
            m.slack_interaction("not_ready");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no revision of the fleet repository in force yet".into(),
            );
        };
        let approvers = strings(&good.desired.fleet.approvers);
        let channel = click.channel.clone().unwrap_or_default();
        let click = match interaction::decide(click, &approvers) {
            Judged::Refuse { click, reason } => {
                m.slack_interaction("refused");
                tracing::warn!(user = %click.user, coin = %click.key.coin, version = %click.key.version, "Slack approval refused: not an approver");
                self.slack
                    .ephemeral(&channel, &click.user, &format!("Not recorded: {reason}."));
                return (StatusCode::OK, String::new());
            }
            Judged::Record(c) => c,
        };
        let k = &click.key;
        let Some(key) = approval_key(k) else {
            m.slack_interaction("bad_request");
            return (StatusCode::BAD_REQUEST, "not a fleet approval".into());
        };
        let decision = match click.verdict {
            Verdict::Approved => Decision::Approved,
            Verdict::Rejected => Decision::Rejected,
        };
        // The first decision stands: the journal checks and records under one lock.
        match self
            .journal
            .decide_once(&key, decision, &click.user, now_ms.max(0) as u64)
        {
            Ok(Decided::Recorded) => {}
            Ok(Decided::AlreadyDecided { decision: d, by }) => {
                m.slack_interaction("duplicate");
                let word = match d {
                    Decision::Approved => "approved",
                    Decision::Rejected => "rejected",
                };
                self.slack.ephemeral(
                    &channel,
                    &click.user,
                    &format!("Already {word} by {by}; the first decision stands."),
                );
                return (StatusCode::OK, String::new());
            }
            Err(e) => {
                m.slack_interaction("error");
                tracing::error!(error = %e, "cannot record a Slack decision");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "fleet could not record the decision; try again".into(),
                );
            }
        }
        let word = match decision {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
        };
        m.slack_interaction(word);
        tracing::info!(coin = %k.coin, version = %k.version, commit = %k.commit, by = %click.user, decision = word, "rollout decision recorded from Slack");
        self.shared.kick.notify_one();
        if k.commit != good.rev {
            self.slack.ephemeral(
                &channel,
                &click.user,
                &format!(
                    "Recorded, but commit {} is in force now: this decision applies to commit {} only.",
                    good.rev, k.commit
                ),
            );
        }
        self.slack.notify(Notice::ApprovalDecided {
            key: k.clone(),
            verdict: click.verdict,
            by: click.user.clone(),
            at_ms: now_ms,
        });
        (StatusCode::OK, String::new())
    }
}

/// Slack, as configured: the bot's handle and worker, and the hook; None without a token.
pub struct SlackParts {
    /// Queue.
    pub handle: SlackHandle,
    /// Worker.
    pub task: tokio::task::JoinHandle<()>,
    /// Signing secret configured.
    pub verifier: Verifier,
}

impl std::fmt::Debug for SlackParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackParts")
    }
}

/// The channel: the configuration's `slack.channel`, else `notifications.slack_channel` of
/// the revision in force.
pub fn channel_of(cfg: &RunConfig, good: wch::Receiver<Option<Arc<Good>>>) -> ChannelFn {
    let fixed = cfg.slack_channel.clone();
    Arc::new(move || {
        fixed.clone().or_else(|| {
            good.borrow().as_ref().and_then(|g| {
                g.desired
                    .fleet
                    .slack_channel
                    .as_ref()
                    .map(|c| c.to_string())
            })
        })
    })
}

/// Start the Slack bot when its token is in the environment. `memory`: where it remembers
/// its approval requests and rollout threads across restarts.
pub fn start_slack(
    cfg: &RunConfig,
    channel: ChannelFn,
    memory: Option<std::path::PathBuf>,
) -> Result<Option<SlackParts>, SetupError> {
    let Some(token) = env_secret(&cfg.slack_token_env) else {
        if env_secret(&cfg.slack_signing_secret_env).is_some() {
            tracing::warn!(
                token = %cfg.slack_token_env,
                "a Slack signing secret is set but no bot token: Slack is off (POST /hooks/slack answers 503)"
            );
        }
        return Ok(None);
    };
    let api =
        MorphismApi::new(&cfg.slack_api, &token).map_err(|e| SetupError::Slack(e.to_string()))?;
    let (handle, task) = bots::slack::bot::start(
        Arc::new(api),
        Arc::new(SystemPacer),
        BotConfig {
            channel,
            repeat_window: Duration::from_millis(cfg.slack_repeat_window_ms),
            memory,
            // Operators share one channel between fleets: a simulated one says so in every
            // message.
            label: cfg
                .simulated()
                .then(|| "simulated fleet (provider: sim)".to_string()),
        },
    );
    let verifier = Verifier::new(env_secret(&cfg.slack_signing_secret_env).map(SigningSecret::new));
    Ok(Some(SlackParts {
        handle,
        task,
        verifier,
    }))
}

/// The Slack bot's counters, read at each scrape.
#[derive(Debug)]
pub struct SlackMetrics(pub Arc<bots::slack::bot::SlackStats>);

impl Collector for SlackMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let mut e = encoder.encode_descriptor(
            "fleet_slack_messages",
            "Slack messages by result (sent: posted or updated; retried: attempts to be repeated, rate_limited among them; dropped: refused for good or over the queue limit; suppressed: repeats not sent).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (k, v) in [
            ("sent", &s.sent),
            ("retried", &s.retries),
            ("rate_limited", &s.rate_limited),
            ("dropped", &s.dropped),
            ("suppressed", &s.suppressed),
        ] {
            ConstCounter::new(v.load(Ordering::SeqCst))
                .encode(e.encode_family(&[("result", k)])?)?;
        }
        let queue = ConstGauge::new(s.queued.load(Ordering::SeqCst) as i64);
        queue.encode(encoder.encode_descriptor(
            "fleet_slack_queue",
            "Slack messages waiting to be sent.",
            None,
            queue.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Failure, GatePhase};
    use crate::health::{GateFailure, WaitReason};
    use crate::node::NodeKey;
    use fleet_repo_schema::values::Zone;

    fn node() -> NodeKey {
        NodeKey::parse("bitcoin", "eu-central-1b", 1).unwrap()
    }

    /// A failure carries the node's last heights in itself; step and gate chatter is not
    /// Slack's.
    #[test]
    fn events_become_notices() {
        let none = || Vec::new();
        let failed = Event::RolloutFailed {
            coin: CoinName::parse("bitcoin").unwrap(),
            failure: Failure::Gate {
                zone: Zone::parse("eu-central-1b").unwrap(),
                node: node(),
                phase: GatePhase::AfterStep,
                failure: GateFailure::Stalled {
                    height: Some(870_000),
                    target: Some(870_900),
                    for_ms: 1_800_000,
                    waiting: WaitReason::BlocksBehindHeaders,
                },
            },
        };
        match notice_of(&failed, 0, none) {
            Some(Notice::GateFailed {
                height,
                target,
                node,
                zone,
                reason,
                ..
            }) => {
                assert_eq!((height, target), (Some(870_000), Some(870_900)));
                assert_eq!(node.as_deref(), Some("bitcoin/eu-central-1b/1"));
                assert_eq!(zone.as_deref(), Some("eu-central-1b"));
                assert!(reason.contains("failed its health gate"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let asked = Event::ApprovalNeeded {
            coin: CoinName::parse("bitcoin").unwrap(),
            target: ApprovalTarget::Version(Version::parse("29.0").unwrap()),
            commit: "c1".into(),
            reasons: vec![crate::plan::ApprovalReason::Retire { nodes: 1 }],
            from: vec![Version::parse("28.1").unwrap()],
            zones: vec![Zone::parse("eu-central-1a").unwrap()],
            steps: 1,
        };
        match notice_of(&asked, 0, || vec!["U012ABCDEF".into()]) {
            Some(Notice::ApprovalNeeded {
                key,
                approvers,
                reasons,
                ..
            }) => {
                assert_eq!(
                    (key.coin.as_str(), key.version.as_str(), key.commit.as_str()),
                    ("bitcoin", "29.0", "c1")
                );
                assert_eq!(approvers, ["U012ABCDEF"]);
                assert_eq!(reasons, ["retiring 1 node (snapshots are taken first)"]);
                // The button's key reads back as the journal's key.
                assert_eq!(
                    approval_key(&key).map(|k| k.target),
                    Some(ApprovalTarget::Version(Version::parse("29.0").unwrap()))
                );
            }
            other => panic!("{other:?}"),
        }
        let step = Event::StepFinished {
            coin: CoinName::parse("bitcoin").unwrap(),
            node: Some(node()),
            action: "upgrade",
            outcome: crate::events::StepOutcome::Done,
        };
        assert!(notice_of(&step, 0, none).is_none());
    }
}
