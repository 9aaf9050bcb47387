//! Ordering and classifying daemon versions as upstreams actually tag them: bitcoin's
//! `0.21.1` → `22.0` → `27.0` (two parts, then a major jump), release candidates written
//! `25.0rc1` or `1.2.0-rc1` or `2.0.0-rc.8`, monero's four parts `0.18.3.4`, a leading `v`.
//!
//! A version is split into numeric release parts and an optional prerelease suffix. Missing
//! parts count as 0 (`22.0` == `22.0.0`); a prerelease sorts before its release
//! (`25.0rc1` < `25.0`); prerelease suffixes compare part by part, numbers numerically
//! (`rc.8` < `rc.10`). A version with no leading number (`latest`, `stable`) has no
//! release parts: it is [`Class::Unknown`] against anything, and the approval policy treats
//! unknown as major. Below 1.0 a change of the second part is major (`0.20` → `0.21`).

use serde::Serialize;
use std::cmp::Ordering;

/// A version split for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionKey {
    /// Release numbers: `1.14.12` → [1, 14, 12].
    pub release: Vec<u64>,
    /// Prerelease parts (`rc.8` → [Str("rc"), Num(8)]); empty for a release.
    pub pre: Vec<PrePart>,
}

/// One part of a prerelease suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrePart {
    /// Digits.
    Num(u64),
    /// Letters (and anything else), compared as text.
    Str(String),
}

impl VersionKey {
    /// Split `s`; None when it does not start with a number (after an optional `v`).
    pub fn parse(s: &str) -> Option<VersionKey> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        // Build metadata (`+…`) never orders versions.
        let s = s.split('+').next().unwrap_or("");
        let mut release = Vec::new();
        let mut rest = s;
        loop {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                break;
            }
            release.push(rest[..digits].parse::<u64>().ok()?);
            rest = &rest[digits..];
            match rest.strip_prefix('.') {
                Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
                _ => break,
            }
        }
        if release.is_empty() {
            return None;
        }
        let rest = rest.trim_start_matches(['-', '.', '_']);
        let mut pre = Vec::new();
        for chunk in rest.split(['.', '-', '_']).filter(|c| !c.is_empty()) {
            // `rc1` is two parts, "rc" and 1, so that rc2 < rc10.
            let mut cur = chunk;
            while !cur.is_empty() {
                let digits = cur.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    pre.push(PrePart::Num(cur[..digits].parse().unwrap_or(u64::MAX)));
                    cur = &cur[digits..];
                } else {
                    let letters = cur.bytes().take_while(|b| !b.is_ascii_digit()).count();
                    pre.push(PrePart::Str(cur[..letters].to_ascii_lowercase()));
                    cur = &cur[letters..];
                }
            }
        }
        Some(VersionKey { release, pre })
    }

    /// Release part `i`, 0 when absent.
    fn part(&self, i: usize) -> u64 {
        self.release.get(i).copied().unwrap_or(0)
    }

    /// Whether this is a prerelease (`rc1`, `-beta.2`).
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }
}

impl Ord for VersionKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.release.len().max(other.release.len());
        for i in 0..n {
            match self.part(i).cmp(&other.part(i)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.pre.cmp(&other.pre),
        }
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// How big a version change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Same version.
    None,
    /// Only the third part or later, or only the prerelease suffix, differs.
    Patch,
    /// The second part differs.
    Minor,
    /// The first part differs.
    Major,
    /// One of them is not a number-led version: treated as major by approval policies.
    Unknown,
}

impl Class {
    /// `major`, `minor`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Class::None => "none",
            Class::Patch => "patch",
            Class::Minor => "minor",
            Class::Major => "major",
            Class::Unknown => "unknown",
        }
    }
}

/// The class of the change from `from` to `to` (either direction: a downgrade of the major
/// part is major too).
pub fn classify(from: &str, to: &str) -> Class {
    if from == to {
        return Class::None;
    }
    let (Some(a), Some(b)) = (VersionKey::parse(from), VersionKey::parse(to)) else {
        return Class::Unknown;
    };
    if a.part(0) != b.part(0) || (a.part(0) == 0 && a.part(1) != b.part(1)) {
        // Below 1.0 the second part is the breaking one (0.20 → 0.21 is major), as semver
        // and `rollout.approval`'s documentation have it.
        Class::Major
    } else if a.part(1) != b.part(1) {
        Class::Minor
    } else {
        // Same major and minor: a later part, the prerelease, or only the spelling differs.
        Class::Patch
    }
}

/// `a` compared with `b` as versions; versions that do not parse sort before those that do,
/// and among themselves by text.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (VersionKey::parse(a), VersionKey::parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_tag_histories_order_right() {
        let bitcoin = [
            "0.20.0", "0.21.1", "22.0", "22.1", "25.0rc1", "25.0rc2", "25.0", "27.0", "28.1",
        ];
        for w in bitcoin.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        let hornet = [
            "2.0.0-rc.1",
            "2.0.0-rc.8",
            "2.0.0-rc.10",
            "2.0.0",
            "2.0.1",
            "2.0.2",
        ];
        for w in hornet.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert_eq!(compare("v1.14.12", "1.14.11"), Ordering::Greater);
        assert_eq!(compare("0.18.3.4", "0.18.3.3"), Ordering::Greater);
        assert_eq!(
            compare("22.0", "22.0.0"),
            Ordering::Less,
            "ties broken by text"
        );
        assert_eq!(
            VersionKey::parse("22.0")
                .unwrap()
                .cmp(&VersionKey::parse("22.0.0").unwrap()),
            Ordering::Equal
        );
        assert_eq!(compare("latest", "0.1"), Ordering::Less);
    }

    #[test]
    fn classes() {
        assert_eq!(classify("0.21.1", "22.0"), Class::Major);
        assert_eq!(classify("22.0", "0.21.1"), Class::Major, "downgrade");
        assert_eq!(classify("22.0", "22.1"), Class::Minor);
        assert_eq!(classify("1.14.11", "1.14.12"), Class::Patch);
        assert_eq!(classify("1.2.0-rc1", "1.2.0"), Class::Patch);
        assert_eq!(classify("25.0rc1", "25.0"), Class::Patch);
        assert_eq!(classify("2.0.0-rc.8", "2.0.0"), Class::Patch);
        assert_eq!(classify("1.13.15", "1.14.0-rc.1"), Class::Minor);
        assert_eq!(classify("0.18.3.3", "0.18.3.4"), Class::Patch);
        assert_eq!(classify("0.20.0", "0.21.0"), Class::Major, "below 1.0");
        assert_eq!(classify("0.21.3", "0.21.4"), Class::Patch);
        assert_eq!(classify("28.1", "28.1"), Class::None);
        assert_eq!(
            classify("22.0", "22.0.0"),
            Class::Patch,
            "spelled differently"
        );
        assert_eq!(classify("latest", "1.0"), Class::Unknown);
        assert_eq!(classify("v27.0", "28.0"), Class::Major);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "",
            "v",
            ".",
            "1.",
            "1..2",
            "99999999999999999999999",
            "1-",
            "1.2.3-rc.99999999999999999999999",
            "+build",
        ] {
            let _ = VersionKey::parse(s);
            let _ = classify(s, "1.0");
            let _ = compare(s, "1.0");
        }
    }
}
