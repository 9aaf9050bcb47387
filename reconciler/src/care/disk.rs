//! Disks: how full each node's data volume is, how fast it fills, and when the coin's
//! `data_volume_gb` must grow (the one rule, [`decide`]).
//!
//! The figures are the CloudWatch agent's (`disk_used_percent` of /node-data, the hour's
//! highest, over the last day: [`crate::provider::Provider::disk_usage`]). The growth rate
//! is read from the points since the volume last shrank in percent (a grow, or a prune):
//! before that, percent was of another size or another chain. The size a grow asks for is
//! the largest of three, rounded up to 10 GB:
//!
//! - the present size and `disk.grow_by` percent more;
//! - room for the data at 10 points below `disk.grow_at` (the grow must not trigger again);
//! - room for twice `disk.min_days_left` days at the present rate.
//!
//! A coin whose repository (or whose fleet's own auto-grow) already asks for more than its
//! volumes have is judged at that size: the grow is coming, it is not asked for twice.

use crate::clock::Millis;
use crate::node::NodeKey;
use crate::provider::DiskPoint;
use fleet_repo_schema::desired::DiskSpec;
use fleet_repo_schema::values::CoinName;

const DAY_MS: f64 = 86_400_000.0;

/// Largest data volume EBS makes (gp3, io2: 64 TiB), as `data_volume_gb` allows.
pub const MAX_GB: u32 = fleet_repo_schema::values::DataVolumeGb::MAX;

/// One node's data volume as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskUse {
    /// The volume's size, GB.
    pub size_gb: u32,
    /// GB used at the newest point.
    pub used_gb: f64,
    /// Percent used at the newest point.
    pub used_percent: f64,
    /// GB a day it grows by (None: fewer than two hours of points since it last shrank).
    pub gb_per_day: Option<f64>,
    /// The newest point's time.
    pub at_ms: Millis,
}

impl DiskUse {
    /// Read a volume of `size_gb` from its points (oldest first). None without points.
    pub fn read(points: &[DiskPoint], size_gb: u32) -> Option<DiskUse> {
        let last = points.last()?;
        // The points since the series last fell by more than a point of noise.
        let start = points
            .windows(2)
            .rposition(|w| w[1].used_percent < w[0].used_percent - 1.0)
            .map_or(0, |i| i + 1);
        let first = &points[start];
        let span_ms = last.at_ms.saturating_sub(first.at_ms);
        let size = size_gb as f64;
        let gb_per_day = (span_ms >= 2 * 3_600_000).then(|| {
            ((last.used_percent - first.used_percent) / 100.0 * size) / (span_ms as f64 / DAY_MS)
        });
        Some(DiskUse {
            size_gb,
            used_gb: last.used_percent / 100.0 * size,
            used_percent: last.used_percent,
            gb_per_day,
            at_ms: last.at_ms,
        })
    }

    /// Days until a volume of `size_gb` holding this data is full at this rate (None: not
    /// growing, or its rate not known yet).
    pub fn days_left_at(&self, size_gb: u32) -> Option<f64> {
        let rate = self.gb_per_day.filter(|r| *r > 0.0)?;
        Some(((size_gb as f64 - self.used_gb) / rate).max(0.0))
    }

    /// Days until this volume is full.
    pub fn days_left(&self) -> Option<f64> {
        self.days_left_at(self.size_gb)
    }
}

/// Why a coin's volumes must grow.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum GrowReason {
    /// A volume is at least `disk.grow_at` full.
    Full {
        /// Percent used.
        used_percent: f64,
        /// `disk.grow_at`.
        grow_at: u32,
    },
    /// A volume fills within `disk.min_days_left`.
    FillsSoon {
        /// Days left.
        days_left: f64,
        /// `disk.min_days_left`.
        min_days_left: u32,
    },
}

impl std::fmt::Display for GrowReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrowReason::Full {
                used_percent,
                grow_at,
            } => write!(f, "{used_percent:.1} % used (disk.grow_at is {grow_at} %)"),
            GrowReason::FillsSoon {
                days_left,
                min_days_left,
            } => write!(
                f,
                "full in {days_left:.1} days at the present rate (disk.min_days_left is {min_days_left})"
            ),
        }
    }
}

/// A coin's data volumes must grow: what to ask for and the figures behind it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GrowOrder {
    /// The coin.
    pub coin: CoinName,
    /// The size asked for today (the largest of the repository's, the volumes' and any
    /// auto-grow's).
    pub from_gb: u32,
    /// The size to ask for.
    pub to_gb: u32,
    /// The fullest node.
    pub node: NodeKey,
    /// Its figures.
    pub used_percent: f64,
    /// GB used on it.
    pub used_gb: f64,
    /// Its growth, GB a day, if known.
    pub gb_per_day: Option<f64>,
    /// Its days left, if known.
    pub days_left: Option<f64>,
    /// Why.
    pub reason: GrowReason,
    /// `disk.auto_grow`: grow at once, then record it.
    pub auto: bool,
}

/// Whether the coin's volumes must grow, judged at `asked_gb` (the largest size already
/// asked for: the repository's `data_volume_gb` or fleet's own auto-grow) for each node's
/// data in `uses`. None when no node needs it, or the volumes are as large as EBS makes them.
pub fn decide(
    coin: &CoinName,
    spec: &DiskSpec,
    asked_gb: u32,
    uses: &[(NodeKey, DiskUse)],
) -> Option<GrowOrder> {
    let mut worst: Option<(&NodeKey, &DiskUse, u32, GrowReason)> = None;
    for (key, u) in uses {
        // A volume smaller than what is asked is judged at the asked size: its grow is
        // under way (or waits for the rollout).
        let size = u.size_gb.max(asked_gb);
        let used_percent = u.used_gb / size.max(1) as f64 * 100.0;
        let reason = if used_percent >= spec.grow_at as f64 {
            GrowReason::Full {
                used_percent,
                grow_at: spec.grow_at,
            }
        } else if let Some(d) = u
            .days_left_at(size)
            .filter(|d| *d < spec.min_days_left as f64)
        {
            GrowReason::FillsSoon {
                days_left: d,
                min_days_left: spec.min_days_left,
            }
        } else {
            continue;
        };
        let fuller = worst
            .as_ref()
            .is_none_or(|(_, w, ws, _)| used_percent > w.used_gb / (*ws).max(1) as f64 * 100.0);
        if fuller {
            worst = Some((key, u, size, reason));
        }
    }
    let (node, u, size, reason) = worst?;
    let from_gb = uses
        .iter()
        .map(|(_, u)| u.size_gb)
        .chain([asked_gb, size])
        .max()
        .unwrap_or(size);
    if from_gb >= MAX_GB {
        return None;
    }
    let by_share = from_gb as f64 * (1.0 + spec.grow_by as f64 / 100.0);
    let headroom = spec.grow_at.saturating_sub(10).max(1) as f64 / 100.0;
    let by_use = u.used_gb / headroom;
    let by_rate = u
        .gb_per_day
        .filter(|r| *r > 0.0)
        .map_or(0.0, |r| u.used_gb + r * 2.0 * spec.min_days_left as f64);
    let want = by_share.max(by_use).max(by_rate).ceil() as u64;
    let to_gb = (want.div_ceil(10) * 10).min(MAX_GB as u64) as u32;
    Some(GrowOrder {
        coin: coin.clone(),
        from_gb,
        to_gb,
        node: node.clone(),
        used_percent: u.used_percent,
        used_gb: u.used_gb,
        gb_per_day: u.gb_per_day,
        days_left: u.days_left(),
        reason,
        auto: spec.auto_grow,
    })
}

/// What became of the pull request that records a grow (the bots' answer, typed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "proposal", rename_all = "kebab-case")]
pub enum Proposal {
    /// Opened now.
    Opened {
        /// Number.
        number: u64,
        /// Page.
        url: String,
    },
    /// A disk pull request of the coin is open already (one at a time).
    AlreadyOpen {
        /// Number.
        number: u64,
    },
    /// The one from this size was closed by a person: not proposed again from it.
    Declined {
        /// Number.
        number: u64,
    },
    /// The repository's base branch asks as much already.
    UpToDate {
        /// Its size, GB.
        current_gb: u64,
    },
    /// It could not be opened; the next disk read tries again.
    Failed {
        /// Why.
        message: String,
    },
    /// No GitHub repository is configured: the figures are on `/status`, `/metrics` and
    /// in the log only.
    NoGitHub,
}

impl Proposal {
    /// Worth telling people about (not a repeat of an open or settled one).
    pub fn is_news(&self) -> bool {
        matches!(
            self,
            Proposal::Opened { .. }
                | Proposal::Declined { .. }
                | Proposal::Failed { .. }
                | Proposal::NoGitHub
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    fn spec() -> DiskSpec {
        DiskSpec {
            grow_at: 85,
            min_days_left: 30,
            grow_by: 25,
            auto_grow: false,
        }
    }

    fn key(i: u32) -> NodeKey {
        NodeKey::parse("bitcoin", "eu-central-1a", i).unwrap()
    }

    fn coin() -> CoinName {
        CoinName::parse("bitcoin").unwrap()
    }

    /// Hourly points from `first` percent, `per_hour` points more each hour.
    fn series(hours: u64, first: f64, per_hour: f64) -> Vec<DiskPoint> {
        (0..=hours)
            .map(|h| DiskPoint {
                at_ms: h * H,
                used_percent: first + per_hour * h as f64,
            })
            .collect()
    }

    #[test]
    fn the_rate_is_read_since_the_volume_last_shrank() {
        // 24 hours at 1 point an hour of 500 GB: 5 GB an hour, 120 a day.
        let u = DiskUse::read(&series(24, 40.0, 1.0), 500).unwrap();
        assert!((u.gb_per_day.unwrap() - 120.0).abs() < 1e-6);
        assert!((u.used_percent - 64.0).abs() < 1e-9);
        assert!((u.days_left().unwrap() - 180.0 / 120.0).abs() < 1e-6);
        // A grow halves the percent: the rate before it is not this volume's.
        let mut s = series(10, 80.0, 0.5);
        s.extend(series(4, 42.0, 0.25).into_iter().map(|p| DiskPoint {
            at_ms: p.at_ms + 11 * H,
            ..p
        }));
        let u = DiskUse::read(&s, 1000).unwrap();
        assert!((u.gb_per_day.unwrap() - 0.25 / 100.0 * 1000.0 * 24.0).abs() < 1e-6);
        // Under two hours since: no rate, no days left.
        let u = DiskUse::read(&series(1, 40.0, 1.0), 500).unwrap();
        assert_eq!(u.gb_per_day, None);
        assert_eq!(u.days_left(), None);
        assert_eq!(DiskUse::read(&[], 500), None);
    }

    #[test]
    fn a_full_volume_grows_by_the_largest_of_three_sizes() {
        // 86 % of 500 GB, growing slowly (0.5 GB a day): grow_by's 25 % (625, rounded up
        // to 630) beats room for 430 GB at 75 % (574) and for 60 more days (460).
        let u = DiskUse::read(&series(24, 85.9, 0.1 / 24.0), 500).unwrap();
        let o = decide(&coin(), &spec(), 500, &[(key(1), u)]).unwrap();
        assert!(matches!(o.reason, GrowReason::Full { grow_at: 85, .. }));
        assert_eq!((o.from_gb, o.to_gb), (500, 630));
        // Nearly full: room at 75 % decides (495 GB / 0.75 = 660).
        let u = DiskUse::read(&series(2, 99.0, 0.0), 500).unwrap();
        assert_eq!(
            decide(&coin(), &spec(), 500, &[(key(1), u)]).unwrap().to_gb,
            660
        );
        // Fast (10 GB a day, 19 days left): room for twice 30 days on top of 310 GB wins.
        let u = DiskUse::read(&series(24, 60.0, 2.0 / 24.0), 500).unwrap();
        let o = decide(&coin(), &spec(), 500, &[(key(1), u)]).unwrap();
        assert!(matches!(o.reason, GrowReason::FillsSoon { .. }), "{o:?}");
        assert_eq!(o.to_gb, 910);
    }

    #[test]
    fn filling_within_min_days_left_grows_before_the_threshold() {
        // 50 % of 1000 GB, 20 GB a day: 25 days left < 30.
        let u = DiskUse::read(&series(24, 50.0 - 2.0, 2.0 / 24.0), 1000).unwrap();
        let o = decide(&coin(), &spec(), 1000, &[(key(1), u)]).unwrap();
        let GrowReason::FillsSoon { days_left, .. } = o.reason else {
            panic!("{o:?}")
        };
        assert!((days_left - 25.0).abs() < 1e-6, "{days_left}");
        // 500 GB used + 20 × 60 days = 1700 GB, more than 1250 by share.
        assert_eq!(o.to_gb, 1700);
        assert_eq!(o.gb_per_day.map(|r| r.round()), Some(20.0));
    }

    #[test]
    fn a_grow_already_asked_for_is_not_asked_again() {
        let u = DiskUse::read(&series(24, 85.9, 0.1 / 24.0), 500).unwrap();
        // The repository asks 630 already (the pull request merged, the rollout comes).
        assert_eq!(decide(&coin(), &spec(), 630, &[(key(1), u)]), None);
        // The fullest node is the one named.
        let low = DiskUse::read(&series(24, 10.0, 0.0), 500).unwrap();
        let o = decide(&coin(), &spec(), 500, &[(key(1), low), (key(2), u)]).unwrap();
        assert_eq!(o.node, key(2));
        // Nothing above the thresholds: nothing asked.
        assert_eq!(decide(&coin(), &spec(), 500, &[(key(1), low)]), None);
        // At EBS's largest size nothing more can be asked.
        let full = DiskUse::read(&series(2, 99.0, 0.0), MAX_GB).unwrap();
        assert_eq!(decide(&coin(), &spec(), MAX_GB, &[(key(1), full)]), None);
    }
}
