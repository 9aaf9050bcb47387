//! Durations for people, in one format everywhere fleet shows one (the plan, the progress
//! display, gate failures, Slack): `1.5s`, `42s`, `10m`, `12m 5s`, `3h`, `3h 2m`.
//!
//! Written here, beside the repository's own [`crate::values::Duration`], because both the
//! reconciler and the bots show durations and this is the one crate they share.

/// `ms` for people: seconds below a minute (a tenth under ten seconds), then minutes and
/// seconds, then hours and minutes.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        if ms < 10_000 && !ms.is_multiple_of(1000) {
            return format!("{:.1}s", ms as f64 / 1000.0);
        }
        return format!("{s}s");
    }
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m, s) {
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_ms(0), "0s");
        assert_eq!(human_ms(1_500), "1.5s");
        assert_eq!(human_ms(42_000), "42s");
        assert_eq!(human_ms(45_000), "45s");
        assert_eq!(human_ms(600_000), "10m");
        assert_eq!(human_ms(725_000), "12m 5s");
        assert_eq!(human_ms(750_000), "12m 30s");
        assert_eq!(human_ms(3_600_000), "1h");
        assert_eq!(human_ms(3_900_000), "1h 5m");
        assert_eq!(human_ms(3 * 3_600_000 + 120_000), "3h 2m");
    }
}
