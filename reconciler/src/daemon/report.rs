//! The executor's and fetcher's events as the daemon reports them: `/status` and the metrics
//! kept current during a rollout, and one structured log line per event that matters. Passes
//! every event on to the next notifier (Slack, when configured).

use super::Shared;
use super::status::CoinState;
use crate::care::incident::Change;
use crate::clock::Millis;
use crate::events::{Event, Notifier, StepOutcome};
use crate::health::Verdict;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Keeps /status and the metrics current from the executor's events, logs them, and passes
/// them on.
pub struct StatusNotifier {
    /// What it updates.
    pub shared: Arc<Shared>,
    /// Who hears next.
    pub next: Arc<dyn Notifier>,
}

impl std::fmt::Debug for StatusNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusNotifier")
    }
}

impl Notifier for StatusNotifier {
    fn notify(&self, at_ms: Millis, e: &Event) {
        self.next.notify(at_ms, e);
        log_event(e);
        match e {
            Event::RolloutStarted { coin, .. } => {
                self.shared.rolling_mut(|r| r.insert(coin.clone()));
            }
            Event::RolloutFinished { coin, .. } | Event::RolloutFailed { coin, .. } => {
                self.shared.rolling_mut(|r| r.remove(coin));
            }
            Event::Incident { incident, change } => {
                let open = self.shared.status_mut(|s| {
                    s.incidents.retain(|i| i.id != incident.id);
                    if *change != Change::Resolved {
                        s.incidents.push(incident.clone());
                        s.incidents.sort_by_key(|i| i.id);
                    }
                    s.incidents.clone()
                });
                self.shared.metrics.incident(&open, *change);
                return;
            }
            Event::Healed {
                coin,
                reason,
                outcome,
                ..
            } => {
                self.shared.metrics.healed(coin, *reason, outcome);
                return;
            }
            Event::SnapshotTaken { coin, outcome, .. } => {
                self.shared
                    .metrics
                    .scheduled_snapshot(coin, "taken", outcome);
                return;
            }
            Event::SnapshotDeleted { coin, outcome, .. } => {
                self.shared
                    .metrics
                    .scheduled_snapshot(coin, "deleted", outcome);
                return;
            }
            Event::DiskGrow {
                coin,
                order,
                grown,
                proposal,
            } => {
                self.shared
                    .metrics
                    .disk_grow(coin, !grown.is_empty(), proposal);
                self.shared.status_mut(|s| {
                    s.coins.entry(coin.to_string()).or_default().disk =
                        Some(super::status::DiskGrowStatus {
                            order: order.clone(),
                            grown: !grown.is_empty(),
                            proposal: proposal.clone(),
                            at_ms,
                        });
                });
                return;
            }
            _ => {}
        }
        self.shared.status_mut(|s| {
            let Some(coin) = e.coin() else { return };
            let c = s.coins.entry(coin.to_string()).or_default();
            match e {
                Event::RolloutStarted { steps, .. } => {
                    c.state = CoinState::RollingOut;
                    c.steps_total = *steps;
                    c.steps_done = 0;
                    c.reason = None;
                    c.failure = None;
                    for z in c.zones.values_mut() {
                        z.passed = false;
                    }
                }
                Event::ApprovalNeeded { target, .. } => {
                    c.state = CoinState::AwaitingApproval;
                    c.reason = Some(format!("{target} needs an approval"));
                }
                Event::StepStarted { node, .. } => {
                    c.current_zone = node.as_ref().map(|n| n.zone.to_string());
                }
                Event::StepFinished { .. } => c.steps_done += 1,
                Event::Gate {
                    zone,
                    node,
                    verdict,
                    ..
                } => {
                    let z = c.zones.entry(zone.to_string()).or_default();
                    let name = node.to_string();
                    if let Some(n) = z.nodes.iter_mut().find(|n| n.node == name) {
                        match verdict {
                            Verdict::InSync { height } => {
                                n.height = Some(*height);
                                n.in_sync = Some(true);
                                n.gate = Some("in sync".into());
                            }
                            Verdict::Waiting {
                                reason,
                                height,
                                target,
                                ..
                            } => {
                                n.height = *height;
                                n.headers = *target;
                                n.in_sync = Some(false);
                                n.gate = Some(format!("waiting: {reason}"));
                            }
                            Verdict::Failed(f) => {
                                n.in_sync = Some(false);
                                n.gate = Some(format!("failed: {f}"));
                            }
                        }
                    }
                }
                Event::ZonePassed { zone, .. } => {
                    c.zones.entry(zone.to_string()).or_default().passed = true;
                }
                Event::RolloutFinished { .. } => {
                    c.state = CoinState::InSync;
                    c.current_zone = None;
                }
                Event::RolloutFailed { failure, .. } => {
                    c.state = CoinState::Failed;
                    c.reason = Some(failure.to_string());
                    c.failure = Some(failure.clone());
                    c.rollback = None;
                }
                Event::RolledBack { rollback, .. } => {
                    if let Some(f) = &c.failure {
                        c.reason = Some(format!("{f}; {rollback}"));
                    }
                    c.rollback = Some(rollback.clone());
                }
                Event::Waiting { .. }
                | Event::Baking { .. }
                | Event::RepoInvalid { .. }
                | Event::Incident { .. }
                | Event::Healed { .. }
                | Event::SnapshotTaken { .. }
                | Event::SnapshotDeleted { .. }
                | Event::DiskGrow { .. } => {}
            }
        });
        if let Event::StepFinished { outcome, .. } = e {
            if *outcome == StepOutcome::Done {
                self.shared.steps_done.fetch_add(1, Ordering::SeqCst);
            }
            self.shared.metrics.step(outcome);
        }
    }
}

/// One log line per event that a person reading the logs wants.
fn log_event(e: &Event) {
    match e {
        Event::RolloutStarted {
            coin, to, steps, ..
        } => {
            let to = to.as_ref().map(|v| v.as_str()).unwrap_or("retire");
            tracing::info!(coin = %coin, to, steps, "rollout started")
        }
        Event::ApprovalNeeded {
            coin,
            target,
            commit,
            ..
        } => {
            tracing::info!(coin = %coin, version = %target, commit = %commit, "waiting for an approval")
        }
        Event::StepStarted { coin, node, action } => {
            let zone = node
                .as_ref()
                .map(|n| n.zone.to_string())
                .unwrap_or_default();
            let node = node.as_ref().map(|n| n.to_string()).unwrap_or_default();
            tracing::info!(coin = %coin, zone, node, step = %action, "step")
        }
        Event::StepFinished {
            coin,
            node,
            action,
            outcome,
        } => {
            let zone = node
                .as_ref()
                .map(|n| n.zone.to_string())
                .unwrap_or_default();
            let node = node.as_ref().map(|n| n.to_string()).unwrap_or_default();
            tracing::info!(coin = %coin, zone, node, step = %action, outcome = %outcome, "step finished")
        }
        Event::ZonePassed {
            coin,
            zone,
            took_ms,
        } => {
            tracing::info!(coin = %coin, zone = %zone, took_ms, "zone in sync and baked")
        }
        Event::RolloutFinished { coin, took_ms } => {
            tracing::info!(coin = %coin, took_ms, "rollout finished")
        }
        Event::RolledBack { coin, rollback } => match &rollback.outcome {
            crate::events::RollbackOutcome::InSync => {
                tracing::warn!(coin = %coin, zone = %rollback.zone, "{rollback}")
            }
            _ => tracing::error!(coin = %coin, zone = %rollback.zone, "{rollback}"),
        },
        Event::RolloutFailed { coin, failure } => tracing::error!(
            coin = %coin,
            zone = failure.zone().map(|z| z.to_string()).unwrap_or_default(),
            node = failure.node().map(|n| n.to_string()).unwrap_or_default(),
            reason = %failure,
            "rollout stopped"
        ),
        Event::Waiting { coin, zone, wait } => {
            tracing::info!(coin = %coin, zone = %zone, reason = %wait, "waiting")
        }
        Event::Incident { incident, change } => match change {
            Change::Resolved => tracing::info!(
                incident = incident.id,
                subject = %incident.subject,
                was = %incident.condition,
                "incident resolved"
            ),
            _ => tracing::warn!(
                incident = incident.id,
                subject = %incident.subject,
                condition = %incident.condition,
                change = ?change,
                care = ?incident.care,
                "incident"
            ),
        },
        Event::Healed {
            coin,
            node,
            reason,
            version,
            outcome,
        } => match outcome {
            StepOutcome::Failed { error } => tracing::error!(
                coin = %coin, node = %node, reason = %reason, version = %version, error = %error,
                "heal: the restart failed"
            ),
            _ if reason.replaces() => tracing::warn!(
                coin = %coin, node = %node, reason = %reason,
                "heal: replacement of the instance asked; the next pass replaces it"
            ),
            _ => tracing::warn!(
                coin = %coin, node = %node, reason = %reason, version = %version,
                "heal: restarted the daemon"
            ),
        },
        Event::SnapshotTaken {
            coin,
            node,
            snapshot_id,
            outcome,
        } => match outcome {
            StepOutcome::Failed { error } => tracing::error!(
                coin = %coin, node = %node, error = %error, "scheduled snapshot failed"
            ),
            _ => tracing::info!(
                coin = %coin, node = %node, snapshot = snapshot_id.as_deref().unwrap_or(""),
                "scheduled snapshot taken"
            ),
        },
        Event::SnapshotDeleted {
            coin,
            snapshot_id,
            outcome,
        } => match outcome {
            StepOutcome::Failed { error } => tracing::warn!(
                coin = %coin, snapshot = %snapshot_id, error = %error,
                "old scheduled snapshot not deleted"
            ),
            _ => {
                tracing::info!(coin = %coin, snapshot = %snapshot_id, "old scheduled snapshot deleted")
            }
        },
        Event::DiskGrow {
            coin,
            order,
            grown,
            proposal,
        } => {
            for (node, outcome) in grown {
                match outcome {
                    StepOutcome::Failed { error } => tracing::error!(
                        coin = %coin, node = %node, to_gb = order.to_gb, error = %error,
                        "auto-grow: the data volume did not grow"
                    ),
                    _ => tracing::warn!(
                        coin = %coin, node = %node, to_gb = order.to_gb,
                        "auto-grow: data volume grown"
                    ),
                }
            }
            tracing::warn!(
                coin = %coin, node = %order.node, from_gb = order.from_gb, to_gb = order.to_gb,
                reason = %order.reason, proposal = ?proposal,
                "data volumes filling: grow asked"
            );
        }
        Event::Gate { .. } | Event::Baking { .. } | Event::RepoInvalid { .. } => {}
    }
}
