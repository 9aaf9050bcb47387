//! Incidents: what the node watch tells people. Pure: ratings and time in, changes out.
//!
//! **One incident per subject** (a node, or a coin below `health.min_synced`), opened once,
//! updated in place when what is wrong changes kind (lagging became stuck, a heal was tried,
//! it was left for a person), resolved once when it clears. An incident that clears and
//! comes back within the repeat window is the same incident reopened, not a new one: a
//! flapping node is one Slack message, not one per flap.
//!
//! When a node's incident opens: stuck (the rating's [`NodeHealth::Stuck`]: height unchanged
//! for `health.stall_timeout` while the reference moved) at once; anything else that does not
//! count as serving (lagging, unreachable, down) once it has lasted `health.alert_after`. A
//! node fleet is itself changing (a step pending on it, or its coin rolling out) opens
//! nothing: its gate watches it.

use crate::clock::Millis;
use crate::health::NodeHealth;
use crate::health::rating::DownReason;
use crate::node::NodeKey;
use fleet_repo_schema::values::CoinName;
use serde::Serialize;
use std::fmt;

/// What an incident is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "subject", rename_all = "kebab-case")]
pub enum Subject {
    /// One node.
    Node {
        /// The node.
        node: NodeKey,
    },
    /// A coin as a whole.
    Coin {
        /// The coin.
        coin: CoinName,
    },
    /// A coin's deadline.
    Deadline {
        /// The coin.
        coin: CoinName,
    },
}

impl Subject {
    /// The coin it belongs to.
    pub fn coin(&self) -> &CoinName {
        match self {
            Subject::Node { node } => &node.coin,
            Subject::Coin { coin } | Subject::Deadline { coin } => coin,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Node { node } => write!(f, "{node}"),
            Subject::Coin { coin } => write!(f, "{coin}"),
            Subject::Deadline { coin } => write!(f, "{coin}'s deadline"),
        }
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "condition", rename_all = "kebab-case")]
pub enum Condition {
    /// Answering but behind (lagging) for `alert_after`.
    OutOfSync {
        /// Its height.
        height: u64,
        /// The coin's reference height.
        reference: Option<u64>,
    },
    /// Its height has not moved for the stall timeout while the reference did.
    Stuck {
        /// The height it sits at.
        height: u64,
        /// Since when.
        since_ms: Millis,
        /// The reference now.
        reference: u64,
    },
    /// Its probe got no answer for `alert_after`.
    Unreachable {
        /// The probe's error, in words.
        error: String,
    },
    /// Down without a reading (its instance not running) for `alert_after`.
    Down {
        /// Why.
        reason: DownReason,
    },
    /// Its instance fails EC2's status checks, for `alert_after`.
    StatusChecks {
        /// The system check (AWS's host and network).
        system: crate::provider::CheckState,
        /// The instance check (its operating system).
        instance: crate::provider::CheckState,
    },
    /// Nodes run below the version the coin's deadline requires, with 14 days or fewer left
    /// (`stage`: 14, 7, 1, or 0 once due).
    Deadline {
        /// The version required.
        version: fleet_repo_schema::Version,
        /// When it is due (unix ms).
        due_ms: Millis,
        /// The stage: 14, 7, 1 days, 0 once due.
        stage: u32,
        /// Nodes below it.
        below: usize,
    },
    /// Fewer of the coin's nodes in sync than `health.min_synced`, for `alert_after`.
    BelowMinSynced {
        /// In sync now.
        synced: usize,
        /// The minimum.
        min: u32,
    },
}

impl Condition {
    /// The kind, for metrics and for telling a change of kind from a new height:
    /// `out-of-sync`, `stuck`, `unreachable`, `down`, `below-min-synced`.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::OutOfSync { .. } => "out-of-sync",
            Condition::Stuck { .. } => "stuck",
            Condition::Unreachable { .. } => "unreachable",
            Condition::Down { .. } => "down",
            Condition::StatusChecks { .. } => "status-checks",
            Condition::Deadline { .. } => "deadline",
            Condition::BelowMinSynced { .. } => "below-min-synced",
        }
    }

    /// What must change for a change to be announced: the kind, and a deadline's stage.
    fn phase(&self) -> (&'static str, u32) {
        match self {
            Condition::Deadline { stage, .. } => (self.kind(), *stage),
            _ => (self.kind(), 0),
        }
    }

    /// The condition of a node rated `h`, when it is one (None: it serves).
    pub fn of_node(h: &NodeHealth, reference: Option<u64>) -> Option<Condition> {
        Some(match h {
            NodeHealth::InSync { .. } | NodeHealth::Running => return None,
            NodeHealth::Lagging { height, .. } => Condition::OutOfSync {
                height: *height,
                reference,
            },
            NodeHealth::Stuck {
                height,
                since_ms,
                reference,
            } => Condition::Stuck {
                height: *height,
                since_ms: *since_ms,
                reference: *reference,
            },
            NodeHealth::Unreachable { error } => Condition::Unreachable {
                error: error.to_string(),
            },
            NodeHealth::Down { reason } => Condition::Down { reason: *reason },
        })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::OutOfSync { height, reference } => match reference {
                Some(r) => write!(
                    f,
                    "out of sync: at {height}, {} behind",
                    r.saturating_sub(*height)
                ),
                None => write!(f, "out of sync at {height}"),
            },
            Condition::Stuck {
                height, reference, ..
            } => write!(
                f,
                "stuck at {height} while its chain moved on to {reference}"
            ),
            Condition::Unreachable { error } => write!(f, "not answering: {error}"),
            Condition::Down { reason } => match reason {
                DownReason::NotRunning => f.write_str("down: its instance is not running"),
                DownReason::StepPending => f.write_str("down: a step of fleet's is pending"),
                DownReason::NotProbed => f.write_str("down: running but not probed"),
            },
            Condition::StatusChecks { system, instance } => write!(
                f,
                "failing EC2's status checks (system {}, instance {})",
                system.as_str(),
                instance.as_str()
            ),
            Condition::Deadline {
                version,
                due_ms,
                stage,
                below,
            } => {
                let nodes = if *below == 1 {
                    "node runs"
                } else {
                    "nodes run"
                };
                let when = crate::care::deadline::day(*due_ms);
                match stage {
                    0 => write!(
                        f,
                        "past its deadline: {version} was due {when}, and {below} {nodes} below it"
                    ),
                    d => write!(
                        f,
                        "due to run {version} by {when} (within {d} day{}): {below} {nodes} below it",
                        if *d == 1 { "" } else { "s" }
                    ),
                }
            }
            Condition::BelowMinSynced { synced, min } => write!(
                f,
                "below min_synced {min}: {synced} node{} in sync",
                if *synced == 1 { "" } else { "s" }
            ),
        }
    }
}

/// What has been done about an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "care", rename_all = "kebab-case")]
pub enum Care {
    /// Nothing (yet).
    None,
    /// fleet restarted the daemon (this many times during the incident).
    Healed {
        /// Restarts.
        restarts: u32,
        /// The last one.
        at_ms: Millis,
    },
    /// fleet asked for a new instance (it fails EC2's status checks); the rollout makes it.
    ReplaceAsked {
        /// When.
        at_ms: Millis,
    },
    /// fleet will not heal it: a person must look.
    LeftForPerson {
        /// Why not.
        why: String,
    },
}

/// One incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// Its number, unique within the run (and the key of its Slack message).
    pub id: u64,
    /// What it is about.
    pub subject: Subject,
    /// What is wrong now (or was, once resolved).
    pub condition: Condition,
    /// Since when the subject has been in trouble.
    pub since_ms: Millis,
    /// When it opened.
    pub opened_ms: Millis,
    /// What fleet did about it.
    pub care: Care,
    /// When it cleared, once it has.
    pub resolved_ms: Option<Millis>,
}

/// How an incident changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// It opened.
    Opened,
    /// What is wrong changed kind, or what fleet did about it changed.
    Updated,
    /// It cleared.
    Resolved,
    /// It came back within the repeat window of its resolution.
    Reopened,
}

/// What one subject looks like at one watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The subject.
    pub subject: Subject,
    /// What is wrong, if anything.
    pub condition: Option<Condition>,
    /// fleet itself is changing it (a step pending, a rollout of its coin): nothing opens.
    pub fleets_own: bool,
    /// `health.alert_after` of its coin, ms.
    pub alert_after_ms: u64,
}

#[derive(Debug, Clone)]
struct Track {
    /// In trouble since (None: fine at the last watch).
    bad_since: Option<Millis>,
    incident: Option<Incident>,
}

/// The incidents of a fleet, open and recently resolved.
#[derive(Debug, Default)]
pub struct Incidents {
    tracks: std::collections::BTreeMap<Subject, Track>,
    next_id: u64,
}

impl Incidents {
    /// Take one watch's view of every subject (`seen`); subjects not in it are gone (a node
    /// retired, a coin removed) and their incidents resolve. `repeat_ms` is the window within
    /// which a resolved incident that comes back is reopened rather than opened anew.
    pub fn observe(
        &mut self,
        seen: &[Seen],
        now: Millis,
        repeat_ms: u64,
    ) -> Vec<(Incident, Change)> {
        let mut out = Vec::new();
        let present: std::collections::BTreeSet<&Subject> =
            seen.iter().map(|s| &s.subject).collect();
        // Gone: resolve what is open, forget the rest.
        self.tracks.retain(|subject, t| {
            if present.contains(subject) {
                return true;
            }
            if let Some(i) = t.incident.as_mut().filter(|i| i.resolved_ms.is_none()) {
                i.resolved_ms = Some(now);
                out.push((i.clone(), Change::Resolved));
            }
            false
        });
        for s in seen {
            let t = self.tracks.entry(s.subject.clone()).or_insert(Track {
                bad_since: None,
                incident: None,
            });
            match &s.condition {
                None => {
                    t.bad_since = None;
                    if let Some(i) = t.incident.as_mut() {
                        if i.resolved_ms.is_none() {
                            i.resolved_ms = Some(now);
                            out.push((i.clone(), Change::Resolved));
                        } else if now.saturating_sub(i.resolved_ms.unwrap_or(now)) >= repeat_ms {
                            t.incident = None;
                        }
                    }
                }
                Some(c) => {
                    let since = *t.bad_since.get_or_insert(now);
                    let open = t.incident.as_mut().filter(|i| i.resolved_ms.is_none());
                    if let Some(i) = open {
                        if i.condition.phase() != c.phase() {
                            i.condition = c.clone();
                            out.push((i.clone(), Change::Updated));
                        } else {
                            // Same kind, newer figures: kept, not announced.
                            i.condition = c.clone();
                        }
                        continue;
                    }
                    let due = matches!(c, Condition::Stuck { .. } | Condition::Deadline { .. })
                        || now.saturating_sub(since) >= s.alert_after_ms;
                    if s.fleets_own || !due {
                        continue;
                    }
                    match t.incident.as_mut() {
                        Some(i) if now.saturating_sub(i.resolved_ms.unwrap_or(0)) < repeat_ms => {
                            i.resolved_ms = None;
                            i.condition = c.clone();
                            i.since_ms = since;
                            out.push((i.clone(), Change::Reopened));
                        }
                        _ => {
                            self.next_id += 1;
                            let i = Incident {
                                id: self.next_id,
                                subject: s.subject.clone(),
                                condition: c.clone(),
                                since_ms: since,
                                opened_ms: now,
                                care: Care::None,
                                resolved_ms: None,
                            };
                            t.incident = Some(i.clone());
                            out.push((i, Change::Opened));
                        }
                    }
                }
            }
        }
        out
    }

    /// Since when `subject` has been in trouble (None: fine at the last watch).
    pub fn bad_since(&self, subject: &Subject) -> Option<Millis> {
        self.tracks.get(subject).and_then(|t| t.bad_since)
    }

    /// Record what fleet did about `subject`'s open incident; returns the incident when that
    /// changed it (to announce), None when it has none open or nothing changed.
    pub fn cared(&mut self, subject: &Subject, care: Care) -> Option<Incident> {
        let i = self
            .tracks
            .get_mut(subject)?
            .incident
            .as_mut()
            .filter(|i| i.resolved_ms.is_none())?;
        if i.care == care {
            return None;
        }
        i.care = care;
        Some(i.clone())
    }

    /// The open incidents, by subject.
    pub fn open(&self) -> Vec<Incident> {
        self.tracks
            .values()
            .filter_map(|t| t.incident.clone())
            .filter(|i| i.resolved_ms.is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u32) -> Subject {
        Subject::Node {
            node: NodeKey::parse("litecoin", "eu-central-1a", i).unwrap(),
        }
    }

    fn lag(height: u64) -> Option<Condition> {
        Some(Condition::OutOfSync {
            height,
            reference: Some(height + 50),
        })
    }

    fn seen(subject: &Subject, condition: Option<Condition>) -> Seen {
        Seen {
            subject: subject.clone(),
            condition,
            fleets_own: false,
            alert_after_ms: 300_000,
        }
    }

    fn changes(v: &[(Incident, Change)]) -> Vec<(u64, Change)> {
        v.iter().map(|(i, c)| (i.id, *c)).collect()
    }

    #[test]
    fn an_incident_opens_after_alert_after_once_updates_on_a_new_kind_and_resolves_once() {
        let n = node(1);
        let mut inc = Incidents::default();
        let w = 3_600_000;
        assert!(inc.observe(&[seen(&n, lag(100))], 0, w).is_empty());
        assert!(inc.observe(&[seen(&n, lag(101))], 299_999, w).is_empty());
        let opened = inc.observe(&[seen(&n, lag(102))], 300_000, w);
        assert_eq!(changes(&opened), [(1, Change::Opened)]);
        assert_eq!(opened[0].0.since_ms, 0);
        // Newer heights of the same kind are not announced.
        assert!(inc.observe(&[seen(&n, lag(103))], 360_000, w).is_empty());
        let stuck = Some(Condition::Stuck {
            height: 103,
            since_ms: 360_000,
            reference: 200,
        });
        let upd = inc.observe(&[seen(&n, stuck.clone())], 420_000, w);
        assert_eq!(changes(&upd), [(1, Change::Updated)]);
        assert!(inc.observe(&[seen(&n, stuck)], 480_000, w).is_empty());
        assert_eq!(inc.open().len(), 1);
        let res = inc.observe(&[seen(&n, None)], 540_000, w);
        assert_eq!(changes(&res), [(1, Change::Resolved)]);
        assert!(inc.observe(&[seen(&n, None)], 600_000, w).is_empty());
        assert!(inc.open().is_empty());
    }

    #[test]
    fn stuck_opens_at_once_and_a_flap_within_the_window_reopens_the_same_incident() {
        let n = node(2);
        let mut inc = Incidents::default();
        let w = 3_600_000;
        let stuck = Some(Condition::Stuck {
            height: 7,
            since_ms: 0,
            reference: 9,
        });
        assert_eq!(
            changes(&inc.observe(&[seen(&n, stuck.clone())], 0, w)),
            [(1, Change::Opened)]
        );
        inc.observe(&[seen(&n, None)], 60_000, w);
        // Back within the window: the same incident, reopened.
        assert_eq!(
            changes(&inc.observe(&[seen(&n, stuck.clone())], 120_000, w)),
            [(1, Change::Reopened)]
        );
        inc.observe(&[seen(&n, None)], 180_000, w);
        // Fine for longer than the window: forgotten; trouble after that is a new incident.
        inc.observe(&[seen(&n, None)], 180_000 + w, w);
        assert_eq!(
            changes(&inc.observe(&[seen(&n, stuck)], 200_000 + w, w)),
            [(2, Change::Opened)]
        );
    }

    #[test]
    fn nothing_opens_for_a_node_fleet_is_changing_and_a_gone_subject_resolves() {
        let n = node(3);
        let mut inc = Incidents::default();
        let mut s = seen(&n, lag(5));
        s.fleets_own = true;
        inc.observe(std::slice::from_ref(&s), 0, 1);
        assert!(inc.observe(std::slice::from_ref(&s), 900_000, 1).is_empty());
        // Fleet is done with it and it is still behind, since the start: open at once.
        s.fleets_own = false;
        assert_eq!(
            changes(&inc.observe(std::slice::from_ref(&s), 960_000, 1)),
            [(1, Change::Opened)]
        );
        // Care is recorded once per change.
        let healed = Care::Healed {
            restarts: 1,
            at_ms: 960_000,
        };
        assert!(inc.cared(&n, healed.clone()).is_some());
        assert!(inc.cared(&n, healed).is_none());
        // Retired: the incident resolves.
        assert_eq!(
            changes(&inc.observe(&[], 1_000_000, 1)),
            [(1, Change::Resolved)]
        );
    }
}
