//! The journal: what fleet cannot observe in the world. Approvals given (who, when, for which
//! coin, target version and commit), when a zone's bake started and that it passed, and a
//! history of every step with its outcome.
//!
//! **The first decision stands** is an invariant of the journal, not of its callers:
//! [`Journal::decide_once`] checks for an earlier decision and appends under one lock, so
//! two clicks at once cannot both be recorded, and [`Journal::approval`] answers with the
//! first decision ever recorded for a key.
//!
//! Embedded and file-backed by default: one JSON object per line in `<state-dir>/journal.jsonl`,
//! appended and flushed to disk (fsync) before the step it records is taken as done. A line
//! cut short by a crash, or any line that does not parse, is skipped with a warning.
//!
//! Losing the journal never causes a wrong action: approvals are asked for again, bakes are
//! waited again, the history restarts. Nothing in it is needed to tell what runs where; that
//! is always observed.

use crate::clock::Millis;
use crate::events::Failure;
use crate::plan::ApprovalTarget;
use fleet_repo_schema::values::CoinName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The journal file inside the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// An approval decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Go ahead.
    Approved,
    /// Do not.
    Rejected,
}

/// What one approval is for: exactly one (coin, target, commit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApprovalKey {
    /// Coin.
    pub coin: CoinName,
    /// Target version, or the coin's retirement.
    pub target: ApprovalTarget,
    /// Commit of the fleet repository the plan came from.
    pub commit: String,
}

impl ApprovalKey {
    fn matches(&self, coin: &str, version: &str, commit: &str) -> bool {
        self.coin.as_str() == coin && self.target.as_str() == version && self.commit == commit
    }
}

/// What [`Journal::decide_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// The decision was recorded.
    Recorded,
    /// An earlier decision stands; nothing was recorded.
    AlreadyDecided {
        /// It.
        decision: Decision,
        /// By whom.
        by: String,
    },
}

/// How a step ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepRecord {
    /// It changed the world.
    Done,
    /// Nothing needed changing.
    AlreadyDone,
    /// It failed.
    Failed,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    /// A person decided on a rollout. Applies to exactly one (coin, version, commit).
    Approval {
        /// Coin.
        coin: String,
        /// Target version.
        version: String,
        /// Commit of the fleet repository the plan came from.
        commit: String,
        /// Approved or rejected.
        decision: Decision,
        /// Who (a Slack user id, `cli:<user>`).
        by: String,
        /// When.
        at_ms: Millis,
    },
    /// A coin's rollout began (written before its first step: a journal that cannot be
    /// written stops the rollout before anything is touched).
    RolloutStarted {
        /// Coin.
        coin: String,
        /// Commit of the fleet repository.
        commit: String,
        /// Steps planned.
        steps: usize,
        /// When.
        at_ms: Millis,
    },
    /// A zone's nodes all passed their gates; its bake started.
    BakeStarted {
        /// Coin.
        coin: String,
        /// Zone.
        zone: String,
        /// Target version of the rollout.
        version: String,
        /// When.
        at_ms: Millis,
    },
    /// A zone stayed healthy for the whole bake.
    ZonePassed {
        /// Coin.
        coin: String,
        /// Zone.
        zone: String,
        /// Target version of the rollout.
        version: String,
        /// When.
        at_ms: Millis,
    },
    /// A step ran.
    Step {
        /// Coin.
        coin: String,
        /// Node (`coin/zone/index`).
        node: String,
        /// Action name.
        action: String,
        /// How it ended.
        outcome: StepRecord,
        /// Details (the action in words, or the error).
        detail: String,
        /// When.
        at_ms: Millis,
    },
    /// A coin's rollout stopped on a failure (a gate, a step, the budget).
    GateFailed {
        /// Coin.
        coin: String,
        /// Node, or empty.
        node: String,
        /// Why, in words.
        reason: String,
        /// Why, as data (absent in journals written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<Box<Failure>>,
        /// The commit whose rollout stopped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        /// When.
        at_ms: Millis,
    },
    /// The node watch restarted a node's daemon (written before the restart is sent: a heal
    /// that cannot be journaled is not made, so `heal.max_per_day` holds across restarts
    /// of fleet).
    Heal {
        /// Coin.
        coin: String,
        /// Node (`coin/zone/index`).
        node: String,
        /// Why.
        reason: crate::care::heal::HealReason,
        /// The version restarted.
        version: String,
        /// When.
        at_ms: Millis,
        /// The instance, for a replacement (`reason` fails-status-checks): the plan replaces
        /// the node while this instance holds its slot (None in records of restarts, and in
        /// records written before replacements were).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance_id: Option<String>,
    },
    /// The node watch grew a coin's data volumes on its own (`disk.auto_grow`), written
    /// before the first ModifyVolume: until the repository's `data_volume_gb` says as
    /// much, this record is what keeps the larger volumes from reading as a shrink the
    /// repository asks for.
    AutoGrow {
        /// Coin.
        coin: String,
        /// The size grown to, GB.
        to_gb: u32,
        /// Why, in words (the figures).
        reason: String,
        /// When.
        at_ms: Millis,
    },
}

/// The journal. Cheap to share (`Arc`); appends are serialised.
#[derive(Debug)]
pub struct Journal {
    path: Option<PathBuf>,
    records: Mutex<Vec<Record>>,
}

/// A journal that could not be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "journal {path}: {source}; fleet stops rather than act without a record (check the state directory's disk and permissions)"
)]
pub struct JournalError {
    /// The file.
    pub path: String,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

impl Journal {
    /// A journal kept in memory only (tests, the demo).
    pub fn in_memory() -> Journal {
        Journal {
            path: None,
            records: Mutex::new(Vec::new()),
        }
    }

    /// The journal in `state_dir` (created when missing). Returns it and one warning per
    /// line that could not be read.
    pub fn open(state_dir: &Path) -> Result<(Journal, Vec<String>), JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        let err = |source| JournalError {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let mut records = Vec::new();
        let mut warnings = Vec::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                // A line cut short by a crash must not swallow the next record.
                if bytes.last().is_some_and(|b| *b != b'\n') {
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(b"\n"))
                        .map_err(err)?;
                }
                for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<Record>(line) {
                        Ok(r) => records.push(r),
                        Err(e) => warnings.push(format!(
                            "{}:{}: skipped an unreadable journal line ({e}); at worst an approval is asked again or a bake waited again",
                            path.display(),
                            i + 1
                        )),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        Ok((
            Journal {
                path: Some(path),
                records: Mutex::new(records),
            },
            warnings,
        ))
    }

    /// The records of the journal in `state_dir`, read without writing anything (no
    /// directory made, no cut line mended): for commands that change nothing, such as `fleet
    /// plan`, beside a `fleet run` that may be writing it. A missing or unreadable file is
    /// an empty journal; an unreadable line is skipped.
    pub fn peek(state_dir: &Path) -> Journal {
        let records = std::fs::read(state_dir.join(JOURNAL_FILE))
            .map(|bytes| {
                bytes
                    .split(|b| *b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<Record>(l).ok())
                    .collect()
            })
            .unwrap_or_default();
        Journal {
            path: None,
            records: Mutex::new(records),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append `r`, durably when file-backed.
    pub fn append(&self, r: Record) -> Result<(), JournalError> {
        let mut records = self.lock();
        self.append_locked(&mut records, r)
    }

    /// Append under the records' lock, held by the caller: the file line first (fsynced),
    /// then memory, so what is in memory is always on disk.
    fn append_locked(&self, records: &mut Vec<Record>, r: Record) -> Result<(), JournalError> {
        if let Some(path) = &self.path {
            let err = |source| JournalError {
                path: path.display().to_string(),
                source,
            };
            let mut line = serde_json::to_vec(&r).map_err(|e| err(std::io::Error::other(e)))?;
            line.push(b'\n');
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(err)?;
            f.write_all(&line).map_err(err)?;
            f.sync_data().map_err(err)?;
        }
        records.push(r);
        Ok(())
    }

    /// Record `decision` on `key` unless a decision on it exists: the check and the append
    /// hold one lock, so of two concurrent decisions exactly one is recorded.
    pub fn decide_once(
        &self,
        key: &ApprovalKey,
        decision: Decision,
        by: &str,
        at_ms: Millis,
    ) -> Result<Decided, JournalError> {
        let mut records = self.lock();
        if let Some((decision, by)) = first_decision(&records, key) {
            return Ok(Decided::AlreadyDecided { decision, by });
        }
        self.append_locked(
            &mut records,
            Record::Approval {
                coin: key.coin.to_string(),
                version: key.target.as_str().to_string(),
                commit: key.commit.clone(),
                decision,
                by: by.to_string(),
                at_ms,
            },
        )?;
        Ok(Decided::Recorded)
    }

    /// The heals of `coin`'s nodes made at or after `since_ms`.
    pub fn heals(&self, coin: &str, since_ms: Millis) -> Vec<crate::care::heal::PastHeal> {
        self.lock()
            .iter()
            .filter_map(|r| match r {
                Record::Heal {
                    coin: c,
                    node,
                    at_ms,
                    ..
                } if c == coin && *at_ms >= since_ms => Some(crate::care::heal::PastHeal {
                    node: crate::node::NodeKey::from_display(node)?,
                    at_ms: *at_ms,
                }),
                _ => None,
            })
            .collect()
    }

    /// The instances the node watch asked to be replaced (their node's heal, for failing EC2's
    /// status checks): what the plan reads as [`crate::plan::Observed`]'s
    /// `replace_requested`. An instance gone (replaced) asks nothing any more.
    pub fn replacements_asked(&self) -> std::collections::BTreeSet<String> {
        self.lock()
            .iter()
            .filter_map(|r| match r {
                Record::Heal {
                    reason: crate::care::heal::HealReason::FailsStatusChecks,
                    instance_id: Some(id),
                    ..
                } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// The largest size fleet grew `coin`'s data volumes to on its own, if it ever did.
    pub fn auto_grown(&self, coin: &str) -> Option<u32> {
        self.lock()
            .iter()
            .filter_map(|r| match r {
                Record::AutoGrow { coin: c, to_gb, .. } if c == coin => Some(*to_gb),
                _ => None,
            })
            .max()
    }

    /// Every coin fleet grew on its own, at its largest size: what the plan takes as the
    /// coin's data volume size until the repository says as much ([`crate::plan::Observed`]'s
    /// `auto_grown`).
    pub fn auto_grown_all(&self) -> BTreeMap<CoinName, u32> {
        let mut out: BTreeMap<CoinName, u32> = BTreeMap::new();
        for r in self.lock().iter() {
            if let Record::AutoGrow { coin, to_gb, .. } = r
                && let Ok(c) = CoinName::parse(coin)
            {
                let e = out.entry(c).or_default();
                *e = (*e).max(*to_gb);
            }
        }
        out
    }

    /// The coins whose rollout of `commit` failed and has not started again since, with why:
    /// what a restarted `fleet run` holds, so a failed upgrade is not retried on its own
    /// across a restart either (a rollback put the node back; trying again would take it
    /// down again).
    pub fn failed_at(&self, commit: &str) -> BTreeMap<CoinName, Failure> {
        let mut out = BTreeMap::new();
        for r in self.lock().iter() {
            match r {
                Record::RolloutStarted { coin, .. } => {
                    if let Ok(c) = CoinName::parse(coin) {
                        out.remove(&c);
                    }
                }
                Record::GateFailed {
                    coin,
                    failure: Some(f),
                    commit: Some(at),
                    ..
                } if at == commit => {
                    if let Ok(c) = CoinName::parse(coin) {
                        out.insert(c, (**f).clone());
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Every record, oldest first.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// The decision on `key` (the first one recorded: it stands), with who made it.
    pub fn approval(&self, key: &ApprovalKey) -> Option<(Decision, String)> {
        first_decision(&self.lock(), key)
    }

    /// When the bake of (coin, zone) towards `version` started, if it did and has not passed.
    pub fn bake_started(&self, coin: &str, zone: &str, version: &str) -> Option<Millis> {
        for r in self.lock().iter().rev() {
            match r {
                Record::ZonePassed {
                    coin: c,
                    zone: z,
                    version: v,
                    ..
                } if c == coin && z == zone && v == version => return None,
                Record::BakeStarted {
                    coin: c,
                    zone: z,
                    version: v,
                    at_ms,
                } if c == coin && z == zone && v == version => return Some(*at_ms),
                _ => {}
            }
        }
        None
    }

    /// Whether (coin, zone) passed its bake towards `version`.
    pub fn zone_passed(&self, coin: &str, zone: &str, version: &str) -> bool {
        self.lock().iter().any(|r| {
            matches!(r, Record::ZonePassed { coin: c, zone: z, version: v, .. }
                if c == coin && z == zone && v == version)
        })
    }
}

/// The first decision on `key` in `records`.
fn first_decision(records: &[Record], key: &ApprovalKey) -> Option<(Decision, String)> {
    records.iter().find_map(|r| match r {
        Record::Approval {
            coin,
            version,
            commit,
            decision,
            by,
            ..
        } if key.matches(coin, version, commit) => Some((*decision, by.clone())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_repo_schema::Version;

    fn key(commit: &str) -> ApprovalKey {
        ApprovalKey {
            coin: CoinName::parse("bitcoin").unwrap(),
            target: ApprovalTarget::Version(Version::parse("28.1").unwrap()),
            commit: commit.into(),
        }
    }

    #[test]
    fn a_failure_at_a_commit_holds_until_that_coin_starts_again() {
        let j = Journal::in_memory();
        let failure = Failure::Journal {
            error: "disk full".into(),
        };
        let started = |coin: &str, commit: &str| Record::RolloutStarted {
            coin: coin.into(),
            commit: commit.into(),
            steps: 1,
            at_ms: 0,
        };
        let failed = |coin: &str, commit: &str| Record::GateFailed {
            coin: coin.into(),
            node: String::new(),
            reason: "r".into(),
            failure: Some(Box::new(failure.clone())),
            commit: Some(commit.into()),
            at_ms: 1,
        };
        for r in [
            started("bitcoin", "c1"),
            failed("bitcoin", "c1"),
            started("litecoin", "c1"),
            failed("litecoin", "c1"),
            started("litecoin", "c1"),
            started("dogecoin", "c0"),
            failed("dogecoin", "c0"),
        ] {
            j.append(r).unwrap();
        }
        let held = j.failed_at("c1");
        assert_eq!(
            held.keys().map(|c| c.as_str()).collect::<Vec<_>>(),
            ["bitcoin"],
            "litecoin started again; dogecoin failed at another commit"
        );
        assert_eq!(held.values().next(), Some(&failure));
        assert!(j.failed_at("c2").is_empty());
    }

    #[test]
    fn the_first_decision_stands_even_when_two_race() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        let j = std::sync::Arc::new(j);
        let k = key("abc");
        // Sixteen approvers click at once, half approving, half rejecting.
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (j, k) = (j.clone(), k.clone());
                std::thread::spawn(move || {
                    let d = if i % 2 == 0 {
                        Decision::Approved
                    } else {
                        Decision::Rejected
                    };
                    j.decide_once(&k, d, &format!("U{i}"), i).unwrap()
                })
            })
            .collect();
        let results: Vec<Decided> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| **r == Decided::Recorded).count(),
            1,
            "{results:?}"
        );
        let (first, by) = j.approval(&k).unwrap();
        // Every refused click was told the decision that stands.
        for r in &results {
            if let Decided::AlreadyDecided { decision, by: b } = r {
                assert_eq!((decision, b), (&first, &by));
            }
        }
        // And so is a journal read back from disk: one approval line.
        let (j2, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(j2.approval(&k), Some((first, by)));
        assert_eq!(
            j2.records()
                .iter()
                .filter(|r| matches!(r, Record::Approval { .. }))
                .count(),
            1
        );
        // A later append of a different decision (an old journal, a hand edit) does not
        // override the first.
        let other = match first {
            Decision::Approved => Decision::Rejected,
            Decision::Rejected => Decision::Approved,
        };
        j2.append(Record::Approval {
            coin: "bitcoin".into(),
            version: "28.1".into(),
            commit: "abc".into(),
            decision: other,
            by: "U99".into(),
            at_ms: 99,
        })
        .unwrap();
        assert_eq!(j2.approval(&k).map(|(d, _)| d), Some(first));
    }

    #[test]
    fn survives_a_torn_line_and_keeps_what_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let (j, w) = Journal::open(dir.path()).unwrap();
        assert!(w.is_empty());
        j.append(Record::Approval {
            coin: "bitcoin".into(),
            version: "28.1".into(),
            commit: "abc".into(),
            decision: Decision::Approved,
            by: "U012ABCDEF".into(),
            at_ms: 5,
        })
        .unwrap();
        j.append(Record::BakeStarted {
            coin: "bitcoin".into(),
            zone: "eu-central-1a".into(),
            version: "28.1".into(),
            at_ms: 7,
        })
        .unwrap();
        // A crash in the middle of a write.
        let path = dir.path().join(JOURNAL_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"record\":\"zone-passed\",\"coin\":\"bit")
            .unwrap();
        drop(f);
        let (j, w) = Journal::open(dir.path()).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("journal.jsonl:3"));
        assert_eq!(
            j.approval(&key("abc")),
            Some((Decision::Approved, "U012ABCDEF".into()))
        );
        assert_eq!(j.approval(&key("other-commit")), None);
        assert_eq!(j.bake_started("bitcoin", "eu-central-1a", "28.1"), Some(7));
        assert!(!j.zone_passed("bitcoin", "eu-central-1a", "28.1"));
        j.append(Record::ZonePassed {
            coin: "bitcoin".into(),
            zone: "eu-central-1a".into(),
            version: "28.1".into(),
            at_ms: 9,
        })
        .unwrap();
        assert!(j.zone_passed("bitcoin", "eu-central-1a", "28.1"));
        assert_eq!(j.bake_started("bitcoin", "eu-central-1a", "28.1"), None);
        // The record after the torn line was not swallowed by it.
        let (j, w) = Journal::open(dir.path()).unwrap();
        assert_eq!(w.len(), 1);
        assert!(j.zone_passed("bitcoin", "eu-central-1a", "28.1"));
    }
}

/// An exclusive lock on a state directory, held until dropped (or the process dies: the
/// kernel releases it, so a SIGKILLed reconciler leaves no stale lock). It is an OS lock
/// (`flock`) on an open descriptor of the directory itself, not on a file in it: deleting a
/// file cannot let a second writer in while the first runs.
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] std::fs::File);

impl StateLock {
    /// Take the lock of `dir` (created if missing), or say who to stop.
    pub fn take(dir: &Path) -> Result<StateLock, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        let f = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !f.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(format!(
                "{} is not a directory: give --state-dir a directory",
                dir.display()
            ));
        }
        match f.try_lock() {
            Ok(()) => Ok(StateLock(f)),
            Err(_) => Err(format!(
                "another fleet process (a `fleet run`, or an apply) holds {}: one writer per state directory. \
                 While `fleet run` runs, read its state at GET /status",
                dir.display()
            )),
        }
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    /// Hardening: the lock is on the directory, so removing files in it (an old `fleet.lock`,
    /// everything) does not let a second writer in.
    #[test]
    fn deleting_files_does_not_release_the_state_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::take(dir.path()).unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let _ = std::fs::remove_file(e.unwrap().path());
        }
        let _ = std::fs::remove_file(dir.path().join("fleet.lock"));
        let second = StateLock::take(dir.path());
        assert!(second.is_err(), "a second writer got in");
        assert!(
            second
                .unwrap_err()
                .contains("one writer per state directory")
        );
        drop(held);
        assert!(StateLock::take(dir.path()).is_ok(), "released on drop");
        // A file is not a state directory.
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(StateLock::take(&file).is_err());
    }
}
