//! Deadlines (`deadline: { version, height | date }`): when a required version is due, and
//! how loudly to say that nodes still run below it. Pure.
//!
//! A date is its midnight UTC. A height becomes a date from the coin's block rate as the
//! watch measured it (the reference height over time, once it has moved [`MIN_BLOCKS`]); until
//! then its date is unknown and only the height is shown. The escalation has four stages, by
//! the days left: 14, 7 and 1, and 0 once due; each is said once (the deadline's incident,
//! updated in place), and the incident resolves when every node runs the version or a later
//! one.

use crate::clock::Millis;
use fleet_repo_schema::desired::DeadlineBy;

/// A day, ms.
pub const DAY_MS: u64 = 86_400_000;

/// Blocks the reference must move before its rate turns a height into a date.
pub const MIN_BLOCKS: u64 = 10;

/// The days-left thresholds at which fleet speaks.
pub const STAGES: [u32; 3] = [14, 7, 1];

/// The one rule for "runs below the deadline's `version`": the version its daemon reports,
/// else the one fleet recorded, orders before `version` (a later one meets it); a node whose
/// version is not known counts as below.
pub fn runs_below(node: &crate::plan::ObservedNode, version: &fleet_repo_schema::Version) -> bool {
    node.daemon
        .map(|v| v.to_string())
        .or_else(|| node.version.known().map(|v| v.to_string()))
        .is_none_or(|v| {
            fleet_repo_schema::semver::compare(&v, version.as_str()) == std::cmp::Ordering::Less
        })
}

/// When the deadline falls: its date, or its height at the measured `ms_per_block` from the
/// `reference` height now (None: the rate is not known yet).
pub fn due_ms(
    by: DeadlineBy,
    reference: Option<u64>,
    ms_per_block: Option<f64>,
    now: Millis,
) -> Option<Millis> {
    match by {
        DeadlineBy::Date(ms) => Some(ms),
        DeadlineBy::Height(h) => {
            let r = reference?;
            if r >= h {
                return Some(now);
            }
            let rate = ms_per_block.filter(|r| r.is_finite() && *r > 0.0)?;
            Some(now.saturating_add(((h - r) as f64 * rate) as u64))
        }
    }
}

/// The stage for a deadline due at `due` seen at `now`: 0 once due, else the smallest of
/// [`STAGES`] at or above the days left; None while more than 14 days are left.
pub fn stage(due: Millis, now: Millis) -> Option<u32> {
    if due <= now {
        return Some(0);
    }
    let left = due - now;
    STAGES
        .iter()
        .rev()
        .copied()
        .find(|d| left <= u64::from(*d) * DAY_MS)
}

/// The day of `ms` (unix ms), `YYYY-MM-DD` (UTC).
pub fn day(ms: Millis) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (ms / DAY_MS) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// How long until `due`, in days once a day or more (`19 days`), else as a duration.
pub fn time_left(due: Millis, now: Millis) -> String {
    let left = due.saturating_sub(now);
    match left / DAY_MS {
        0 => fleet_repo_schema::human_ms(left),
        1 => "1 day".into(),
        d => format!("{d} days"),
    }
}

/// A coin's block rate as the watch sees its reference height move.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockRate {
    first: Option<(Millis, u64)>,
    last: Option<(Millis, u64)>,
}

impl BlockRate {
    /// The reference is `height` at `now`.
    pub fn saw(&mut self, height: u64, now: Millis) {
        if self.first.is_none_or(|(_, h)| height < h) {
            // The first sighting, or a chain that went back (a reset regtest): start over.
            self.first = Some((now, height));
        }
        self.last = Some((now, height));
    }

    /// Milliseconds per block, once the reference moved [`MIN_BLOCKS`].
    pub fn ms_per_block(&self) -> Option<f64> {
        let ((t0, h0), (t1, h1)) = (self.first?, self.last?);
        (h1.saturating_sub(h0) >= MIN_BLOCKS).then(|| (t1 - t0) as f64 / (h1 - h0) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_14_7_1_and_0_once_due() {
        let due = 100 * DAY_MS;
        assert_eq!(stage(due, due - 15 * DAY_MS), None);
        assert_eq!(stage(due, due - 14 * DAY_MS), Some(14));
        assert_eq!(stage(due, due - 8 * DAY_MS), Some(14));
        assert_eq!(stage(due, due - 7 * DAY_MS), Some(7));
        assert_eq!(stage(due, due - 2 * DAY_MS), Some(7));
        assert_eq!(stage(due, due - DAY_MS), Some(1));
        assert_eq!(stage(due, due - 1), Some(1));
        assert_eq!(stage(due, due), Some(0));
    }

    #[test]
    fn a_height_becomes_a_date_from_the_measured_rate() {
        let mut r = BlockRate::default();
        r.saw(1_000, 0);
        r.saw(1_009, 9 * 600_000);
        assert_eq!(r.ms_per_block(), None, "fewer than 10 blocks");
        r.saw(1_010, 10 * 600_000);
        assert_eq!(r.ms_per_block(), Some(600_000.0));
        // 1,440 blocks of ten minutes to go: ten days.
        let now = 10 * 600_000;
        assert_eq!(
            due_ms(
                DeadlineBy::Height(2_450),
                Some(1_010),
                r.ms_per_block(),
                now
            ),
            Some(now + 10 * DAY_MS)
        );
        assert_eq!(
            due_ms(DeadlineBy::Height(2_450), Some(1_010), None, now),
            None
        );
        assert_eq!(
            due_ms(DeadlineBy::Height(900), Some(1_010), None, now),
            Some(now)
        );
        assert_eq!(due_ms(DeadlineBy::Date(5), None, None, now), Some(5));
        assert_eq!(day(1_799_971_200_000), "2027-01-15");
        assert_eq!(day(1_709_164_800_000 + 3_600_000), "2024-02-29");
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(time_left(20 * DAY_MS - 1, 0), "19 days");
        assert_eq!(time_left(DAY_MS, 0), "1 day");
    }
}
