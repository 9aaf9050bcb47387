//! The health gate of one node: a pure state machine fed readings (and the coin's reference
//! height) from the moment the node's step finished, saying "waiting" (why, with rate and
//! ETA), "in sync" ([`super::ChainStatus::caught_up`], the one rule) or "failed" (stalled for
//! `stall_timeout`, or not in sync within `sync_timeout`), and failed for good once failed. A
//! node syncing from genesis ([`GateConfig::full_sync`]) is gated on progress only: it fails
//! when it stalls, never because a full sync takes days.

use super::{ChainStatus, ProbeError, WaitReason};
use crate::clock::Millis;
use fleet_repo_schema::desired::HealthSpec;
use fleet_repo_schema::human_ms;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;

/// The gate's settings, from the coin's `health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateConfig {
    /// Allowed lag behind the reference height.
    pub max_lag_blocks: u64,
    /// Height not advancing this long (while not in sync) fails the gate.
    pub stall_timeout_ms: u64,
    /// Not in sync this long after the gate started fails it.
    pub sync_timeout_ms: u64,
    /// A node syncing its chain from genesis (launched without a snapshot): hours to weeks
    /// of steady progress. Only a stall (`stall_timeout`) fails it; `sync_timeout` is for
    /// catching up after a restart.
    #[serde(default)]
    pub full_sync: bool,
}

impl GateConfig {
    /// From a coin's health settings.
    pub fn of(h: &HealthSpec) -> GateConfig {
        GateConfig {
            max_lag_blocks: h.max_lag_blocks,
            stall_timeout_ms: h.stall_timeout.0.as_millis() as u64,
            sync_timeout_ms: h.sync_timeout.0.as_millis() as u64,
            full_sync: false,
        }
    }

    /// The same, for a node syncing from genesis.
    pub fn full_sync(self) -> GateConfig {
        GateConfig {
            full_sync: true,
            ..self
        }
    }
}

/// Why a node failed its gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GateFailure {
    /// No progress for `stall_timeout`.
    Stalled {
        /// The height it is stuck at (None: it never answered).
        height: Option<u64>,
        /// The height it had to reach, when known.
        #[serde(default)]
        target: Option<u64>,
        /// For how long, ms.
        for_ms: u64,
        /// What it was waiting for.
        waiting: WaitReason,
    },
    /// In sync, but its daemon reports another version than the step started
    /// ([`crate::health::DaemonVersion::is`]): the image of that version runs something else.
    /// Failing here holds the coin; planning again would restart it on every pass.
    WrongVersion {
        /// The version the step started.
        expected: String,
        /// What the daemon reports.
        reports: String,
    },
    /// Not in sync within `sync_timeout`.
    SyncTimeout {
        /// Its last height (None: it never answered).
        height: Option<u64>,
        /// The height it had to reach.
        target: Option<u64>,
        /// The timeout, ms.
        after_ms: u64,
    },
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateFailure::Stalled {
                height: Some(h),
                for_ms,
                waiting,
                ..
            } => write!(
                f,
                "height stuck at {h} for {} while {waiting} (stall_timeout)",
                human_ms(*for_ms)
            ),
            GateFailure::Stalled {
                height: None,
                for_ms,
                waiting,
                ..
            } => write!(
                f,
                "no reading for {}: {waiting} (stall_timeout)",
                human_ms(*for_ms)
            ),
            GateFailure::WrongVersion { expected, reports } => write!(
                f,
                "in sync, but its daemon reports {reports}, not {expected}: the image of {expected} runs another version (fix the image, or set health.daemon_version: false)"
            ),
            GateFailure::SyncTimeout {
                height,
                target,
                after_ms,
            } => {
                write!(
                    f,
                    "not in sync after {} (sync_timeout)",
                    human_ms(*after_ms)
                )?;
                match (height, target) {
                    (Some(h), Some(t)) => write!(f, ": at {h} of {t}"),
                    (Some(h), None) => write!(f, ": at {h}"),
                    _ => write!(f, ": never answered"),
                }
            }
        }
    }
}

/// What the gate says after a reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Not in sync yet.
    Waiting {
        /// Why.
        reason: WaitReason,
        /// Last height read.
        height: Option<u64>,
        /// Height to reach (max of headers and reference).
        target: Option<u64>,
        /// Blocks per second over the recent readings.
        blocks_per_sec: Option<f64>,
        /// Estimated time to in-sync, ms, from that rate.
        eta_ms: Option<u64>,
    },
    /// In sync now.
    InSync {
        /// Height.
        height: u64,
    },
    /// Failed for good.
    Failed(GateFailure),
}

/// Readings kept for the rate.
const RATE_WINDOW: usize = 16;

/// The health gate of one node, from the moment its step finished. Feed it every reading
/// with [`Gate::observe`]; it keeps what it needs for stall detection and the rate.
#[derive(Debug, Clone)]
pub struct Gate {
    cfg: GateConfig,
    started_ms: Millis,
    last_height: Option<u64>,
    last_progress_ms: Millis,
    samples: VecDeque<(Millis, u64)>,
    failed: Option<GateFailure>,
}

impl Gate {
    /// A gate that starts counting at `started_ms` (when the node's step finished).
    pub fn new(cfg: GateConfig, started_ms: Millis) -> Gate {
        Gate {
            cfg,
            started_ms,
            last_height: None,
            last_progress_ms: started_ms,
            samples: VecDeque::with_capacity(RATE_WINDOW),
            failed: None,
        }
    }

    /// When it started.
    pub fn started_ms(&self) -> Millis {
        self.started_ms
    }

    /// Judge one reading taken at `now`. `reference` is the highest height among the
    /// coin's other healthy nodes (None when there is none: the node's own headers are
    /// then the only target). Once failed, a gate stays failed.
    pub fn observe(
        &mut self,
        now: Millis,
        reading: &Result<ChainStatus, ProbeError>,
        reference: Option<u64>,
    ) -> Verdict {
        if let Some(f) = &self.failed {
            return Verdict::Failed(f.clone());
        }
        let (reason, target) = match reading {
            Err(e) => (WaitReason::Unreachable { error: e.clone() }, reference),
            Ok(s) => {
                if self.last_height.is_none_or(|h| s.blocks > h) {
                    self.last_progress_ms = now;
                    self.last_height = Some(s.blocks);
                }
                if self.samples.len() == RATE_WINDOW {
                    self.samples.pop_front();
                }
                self.samples.push_back((now, s.blocks));
                match s.caught_up(reference, self.cfg.max_lag_blocks) {
                    Ok(()) => return Verdict::InSync { height: s.blocks },
                    Err(reason) => (reason, Some(s.headers.max(reference.unwrap_or(0)))),
                }
            }
        };
        let stalled_for = now.saturating_sub(self.last_progress_ms);
        if stalled_for >= self.cfg.stall_timeout_ms {
            return self.fail(GateFailure::Stalled {
                height: self.last_height,
                target,
                for_ms: stalled_for,
                waiting: reason,
            });
        }
        if !self.cfg.full_sync && now.saturating_sub(self.started_ms) >= self.cfg.sync_timeout_ms {
            return self.fail(GateFailure::SyncTimeout {
                height: self.last_height,
                target,
                after_ms: self.cfg.sync_timeout_ms,
            });
        }
        let rate = self.rate();
        let eta_ms = match (rate, target, self.last_height) {
            (Some(r), Some(t), Some(h)) if r > 0.0 => {
                Some(((t.saturating_sub(h)) as f64 / r * 1000.0) as u64)
            }
            _ => None,
        };
        Verdict::Waiting {
            reason,
            height: self.last_height,
            target,
            blocks_per_sec: rate,
            eta_ms,
        }
    }

    fn fail(&mut self, f: GateFailure) -> Verdict {
        self.failed = Some(f.clone());
        Verdict::Failed(f)
    }

    /// Blocks per second over the kept readings (None with fewer than two, or no time).
    pub fn rate(&self) -> Option<f64> {
        let (t0, h0) = *self.samples.front()?;
        let (t1, h1) = *self.samples.back()?;
        if t1 <= t0 {
            return None;
        }
        Some(h1.saturating_sub(h0) as f64 / ((t1 - t0) as f64 / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: GateConfig = GateConfig {
        max_lag_blocks: 2,
        stall_timeout_ms: 60_000,
        sync_timeout_ms: 600_000,
        full_sync: false,
    };

    fn st(blocks: u64, headers: u64, ibd: bool) -> Result<ChainStatus, ProbeError> {
        Ok(ChainStatus {
            blocks,
            headers,
            initial_block_download: ibd,
            client: None,
        })
    }

    fn down() -> Result<ChainStatus, ProbeError> {
        Err(ProbeError::Unreachable {
            node: "n".into(),
            addr: "127.0.0.1:1".into(),
            detail: "connection refused".into(),
        })
    }

    #[test]
    fn holds_while_catching_up_and_passes_at_the_reference() {
        let mut g = Gate::new(CFG, 0);
        assert!(matches!(
            g.observe(1_000, &down(), Some(100)),
            Verdict::Waiting {
                reason: WaitReason::Unreachable { .. },
                ..
            }
        ));
        assert!(matches!(
            g.observe(2_000, &st(10, 100, true), Some(100)),
            Verdict::Waiting {
                reason: WaitReason::InitialBlockDownload,
                ..
            }
        ));
        // Not in IBD but blocks < headers: still waiting.
        let v = g.observe(3_000, &st(60, 100, false), Some(100));
        let Verdict::Waiting {
            reason: WaitReason::BlocksBehindHeaders,
            blocks_per_sec: Some(r),
            eta_ms: Some(eta),
            ..
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(r, 50.0);
        assert_eq!(eta, 800);
        // blocks == headers but the headers are behind the reference by more than the lag.
        assert!(matches!(
            g.observe(4_000, &st(90, 90, false), Some(100)),
            Verdict::Waiting {
                reason: WaitReason::BehindReference { reference: 100 },
                ..
            }
        ));
        // Within max_lag_blocks (2) of the reference: in sync.
        assert_eq!(
            g.observe(5_000, &st(98, 98, false), Some(100)),
            Verdict::InSync { height: 98 }
        );
    }

    #[test]
    fn no_reference_means_own_headers() {
        let mut g = Gate::new(CFG, 0);
        assert_eq!(
            g.observe(1, &st(5, 5, false), None),
            Verdict::InSync { height: 5 }
        );
    }

    #[test]
    fn a_stall_fails_after_stall_timeout_not_before() {
        let mut g = Gate::new(CFG, 0);
        g.observe(1_000, &st(50, 100, false), Some(100));
        assert!(matches!(
            g.observe(60_999, &st(50, 100, false), Some(100)),
            Verdict::Waiting { .. }
        ));
        let v = g.observe(61_000, &st(50, 100, false), Some(100));
        assert!(
            matches!(
                &v,
                Verdict::Failed(GateFailure::Stalled {
                    height: Some(50),
                    for_ms: 60_000,
                    ..
                })
            ),
            "{v:?}"
        );
        // Failed stays failed, even if the node recovers.
        assert!(matches!(
            g.observe(62_000, &st(100, 100, false), Some(100)),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn never_answering_is_a_stall_with_no_height() {
        let mut g = Gate::new(CFG, 10);
        let v = g.observe(60_010, &down(), Some(7));
        assert!(matches!(
            v,
            Verdict::Failed(GateFailure::Stalled { height: None, .. })
        ));
        assert!(v_to_string(&v).contains("no reading for 1m"));
    }

    #[test]
    fn slow_but_steady_progress_fails_at_sync_timeout() {
        let mut g = Gate::new(CFG, 0);
        let mut t = 0;
        let mut h = 0;
        let v = loop {
            t += 30_000;
            h += 1;
            let v = g.observe(t, &st(h, 1_000, false), Some(1_000));
            if !matches!(v, Verdict::Waiting { .. }) {
                break v;
            }
        };
        assert_eq!(t, 600_000);
        assert!(
            matches!(
                v,
                Verdict::Failed(GateFailure::SyncTimeout {
                    height: Some(20),
                    target: Some(1_000),
                    ..
                })
            ),
            "{v:?}"
        );
    }

    fn v_to_string(v: &Verdict) -> String {
        match v {
            Verdict::Failed(f) => f.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_full_sync_is_gated_on_progress_not_on_sync_timeout() {
        // The same slow, steady node as above, syncing from genesis: far past sync_timeout
        // it is still waiting, with an ETA from its rate.
        let mut g = Gate::new(CFG.full_sync(), 0);
        let mut v = None;
        for i in 1..=100u64 {
            v = Some(g.observe(i * 30_000, &st(i, 1_000, true), Some(1_000)));
        }
        match v.unwrap() {
            Verdict::Waiting {
                eta_ms: Some(eta),
                blocks_per_sec: Some(r),
                ..
            } => {
                assert!((r - 1.0 / 30.0).abs() < 1e-9, "{r}");
                assert_eq!(eta, 900 * 30_000, "900 blocks left at one per 30 s");
            }
            other => panic!("{other:?}"),
        }
        // A stall still fails it.
        let v = g.observe(100 * 30_000 + 60_000, &st(100, 1_000, true), Some(1_000));
        assert!(
            matches!(v, Verdict::Failed(GateFailure::Stalled { .. })),
            "{v:?}"
        );
    }
}
