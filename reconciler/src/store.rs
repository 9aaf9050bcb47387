//! The journal: what fleet cannot observe in the world. Approvals given (who, when, for which
//! coin, target version and commit), when a zone's bake started and that it passed, and a
//! history of every step with its outcome.
//!
//! Embedded and file-backed by default: one JSON object per line in `<state-dir>/journal.jsonl`,
//! appended and flushed to disk (fsync) before the step it records is taken as done. A line
//! cut short by a crash, or any line that does not parse, is skipped with a warning.
//!
//! Losing the journal never causes a wrong action: approvals are asked for again, bakes are
//! waited again, the history restarts. Nothing in it is needed to tell what runs where; that
//! is always observed.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
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
        /// `done`, `already-done`, `failed`.
        outcome: String,
        /// Details (the action in words, or the error).
        detail: String,
        /// When.
        at_ms: Millis,
    },
    /// A node failed its gate; the coin's rollout stopped.
    GateFailed {
        /// Coin.
        coin: String,
        /// Node.
        node: String,
        /// Why.
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append `r`, durably when file-backed.
    pub fn append(&self, r: Record) -> Result<(), JournalError> {
        let mut records = self.lock();
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

    /// Every record, oldest first.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// The latest decision on (coin, version, commit), with who made it.
    pub fn approval(&self, coin: &str, version: &str, commit: &str) -> Option<(Decision, String)> {
        self.lock().iter().rev().find_map(|r| match r {
            Record::Approval {
                coin: c,
                version: v,
                commit: k,
                decision,
                by,
                ..
            } if c == coin && v == version && k == commit => Some((*decision, by.clone())),
            _ => None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
            j.approval("bitcoin", "28.1", "abc"),
            Some((Decision::Approved, "U012ABCDEF".into()))
        );
        assert_eq!(j.approval("bitcoin", "28.1", "other-commit"), None);
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

/// The lock file that keeps two writers (a `fleet run`, a `fleet apply`) off one state
/// directory: they would both change the fleet, and with the simulator both rewrite it.
pub const LOCK_FILE: &str = "fleet.lock";

/// An exclusive lock on a state directory, held until dropped (or the process dies: the
/// kernel releases it, so a SIGKILLed reconciler leaves no stale lock).
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] std::fs::File);

impl StateLock {
    /// Take the lock of `dir` (created if missing), or say who to stop.
    pub fn take(dir: &Path) -> Result<StateLock, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
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
