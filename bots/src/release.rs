//! Which upstream release, if any, to propose for a coin. Pure: the releases, the coin's
//! `upstream` settings, its current version and the time in, a decision out.
//!
//! A release is a candidate when it is published (not a draft), its tag matches the coin's
//! `tag_pattern`, the `version` group passes the fleet's version rule (it becomes an image
//! tag and an argument of `systemctl start node@<version>`: a tag that fails is never
//! proposed, and is reported), it is not a prerelease unless the coin allows them (GitHub's
//! flag, or a prerelease suffix such as `rc1` or `-rc.8`), it is newer than the current
//! version (ordered by [`fleet_repo_schema::semver`]) and at least `min_release_age` old.
//! The newest candidate wins; a newer release still too young is reported as waiting.
//!
//! Like Renovate's `separateMajorMinor`: when the newest candidate is a major change and the
//! current line (the same major, by [`fleet_repo_schema::semver::classify`]) has a newer
//! release too, that one is proposed as well ([`Selection::line`]), first: an operator who is
//! not ready for the major still gets the patch. Each candidate lists the candidates it
//! skips (newer than the current version, older than it).

use fleet_repo_schema::desired::UpstreamSpec;
use fleet_repo_schema::semver::{self, Class, VersionKey};
use fleet_repo_schema::values::Version;
use serde::Serialize;
use std::cmp::Ordering;

/// One GitHub release, as far as the watch cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseInfo {
    /// Tag, e.g. `v28.1`.
    pub tag: String,
    /// Title, if set.
    pub name: Option<String>,
    /// Draft (unpublished).
    pub draft: bool,
    /// Marked as a prerelease on GitHub.
    pub prerelease: bool,
    /// Publication time, unix ms (None for drafts).
    pub published_ms: Option<i64>,
    /// Release page.
    pub url: String,
    /// Release notes (Markdown).
    pub body: Option<String>,
}

/// A release chosen for a bump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The version (from the tag's `version` group), checked.
    pub version: Version,
    /// The release.
    pub release: ReleaseInfo,
    /// The other candidates between the current version and this one, oldest first: what
    /// the bump skips.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<Skipped>,
}

/// A release a bump skips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Its version.
    pub version: Version,
    /// Its release page.
    pub url: String,
}

/// A tag that matched the pattern but whose version fails the version rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedTag {
    /// The tag.
    pub tag: String,
    /// What the pattern captured.
    pub captured: String,
    /// Why it was refused.
    pub reason: String,
}

/// What the releases say for one coin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// The newest release to propose now, if any.
    pub candidate: Option<Candidate>,
    /// When `candidate` is a major change: the newest release of the current line (same
    /// major) to propose as well, first.
    pub line: Option<Candidate>,
    /// A newer release that is not old enough yet: (version, unix ms when it will be).
    pub waiting: Option<(String, i64)>,
    /// Tags refused by the version rule (never proposed; to be logged and notified).
    pub rejected: Vec<RejectedTag>,
}

/// Whether versions `a` and `b` are of one line: no major change between them (by
/// [`semver::classify`]; a version that is not number-led is of no line). Bumps of one line
/// supersede each other; a major and the current line are proposed apart.
pub fn same_line(a: &str, b: &str) -> bool {
    !matches!(semver::classify(a, b), Class::Major | Class::Unknown)
}

/// Decide for one coin: `releases` of its upstream, its `spec`, the `current` version, `now_ms`.
pub fn select(
    releases: &[ReleaseInfo],
    spec: &UpstreamSpec,
    current: &str,
    now_ms: i64,
) -> Selection {
    let min_age_ms = i64::try_from(spec.min_release_age.0.as_millis()).unwrap_or(i64::MAX);
    let mut sel = Selection::default();
    let mut ready: Vec<Candidate> = Vec::new();
    for r in releases {
        if r.draft {
            continue;
        }
        let Some(captured) = spec.tag_pattern.version_of(&r.tag) else {
            continue;
        };
        let version = match Version::parse(captured) {
            Ok(v) => v,
            Err(e) => {
                sel.rejected.push(RejectedTag {
                    tag: r.tag.clone(),
                    captured: captured.to_string(),
                    reason: format!("{e}; fleet never puts such a string in a command"),
                });
                continue;
            }
        };
        let pre =
            r.prerelease || VersionKey::parse(version.as_str()).is_some_and(|k| k.is_prerelease());
        if pre && !spec.prereleases {
            continue;
        }
        if semver::compare(version.as_str(), current) != Ordering::Greater
            || VersionKey::parse(version.as_str()).is_none()
        {
            continue;
        }
        let Some(published) = r.published_ms else {
            continue;
        };
        let ready_at = published.saturating_add(min_age_ms);
        if ready_at > now_ms {
            let newer = sel
                .waiting
                .as_ref()
                .is_none_or(|(v, _)| semver::compare(version.as_str(), v) == Ordering::Greater);
            if newer {
                sel.waiting = Some((version.to_string(), ready_at));
            }
            continue;
        }
        ready.push(Candidate {
            version,
            release: r.clone(),
            skips: Vec::new(),
        });
    }
    ready.sort_by(|a, b| semver::compare(a.version.as_str(), b.version.as_str()));
    ready.dedup_by(|a, b| a.version == b.version);
    let with_skips = |c: &Candidate| Candidate {
        skips: ready
            .iter()
            .filter(|o| semver::compare(o.version.as_str(), c.version.as_str()) == Ordering::Less)
            .map(|o| Skipped {
                version: o.version.clone(),
                url: o.release.url.clone(),
            })
            .collect(),
        ..c.clone()
    };
    sel.candidate = ready.last().map(with_skips);
    let of_line = |c: &Candidate| same_line(current, c.version.as_str());
    if sel.candidate.as_ref().is_some_and(|c| !of_line(c)) {
        sel.line = ready.iter().rev().find(|c| of_line(c)).map(with_skips);
    }
    // A waiting release older than the candidate is no news.
    if let (Some(c), Some((w, _))) = (&sel.candidate, &sel.waiting)
        && semver::compare(w, c.version.as_str()) != Ordering::Greater
    {
        sel.waiting = None;
    }
    sel
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_repo_schema::values::{Duration, GithubRepo, TagPattern};

    const DAY: i64 = 86_400_000;

    fn spec(pattern: &str, pre: bool, age_days: u64) -> UpstreamSpec {
        UpstreamSpec {
            github: GithubRepo::parse("bitcoin/bitcoin").unwrap(),
            tag_pattern: TagPattern::parse(pattern).unwrap(),
            prereleases: pre,
            min_release_age: Duration(std::time::Duration::from_secs(age_days * 86_400)),
        }
    }

    fn rel(tag: &str, published_day: i64) -> ReleaseInfo {
        ReleaseInfo {
            tag: tag.into(),
            name: None,
            draft: false,
            prerelease: false,
            published_ms: Some(published_day * DAY),
            url: format!("https://github.com/x/y/releases/tag/{tag}"),
            body: None,
        }
    }

    fn picked(s: &Selection) -> Option<&str> {
        s.candidate.as_ref().map(|c| c.version.as_str())
    }

    /// bitcoin's real history, newest first as GitHub lists it, with its tag pattern.
    #[test]
    fn bitcoin_history() {
        let rs: Vec<ReleaseInfo> = [
            "v28.1", "v27.2", "v28.0", "v27.0", "v22.1", "v22.0", "v0.21.1",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| rel(t, 100 - i as i64))
        .collect();
        let s = spec(r"^v(?P<version>\d+\.\d+(?:\.\d+)?)$", false, 2);
        assert_eq!(picked(&select(&rs, &s, "0.21.1", 200 * DAY)), Some("28.1"));
        assert_eq!(picked(&select(&rs, &s, "28.1", 200 * DAY)), None);
        assert_eq!(picked(&select(&rs, &s, "27.2", 200 * DAY)), Some("28.1"));
        // 28.1 published on day 100 is too young on day 101: 28.0 (day 98) is proposed and
        // 28.1 waits until day 102.
        let sel = select(&rs, &s, "27.0", 101 * DAY);
        assert_eq!(picked(&sel), Some("28.0"));
        assert_eq!(sel.waiting, Some(("28.1".into(), 102 * DAY)));
    }

    #[test]
    fn release_candidates_and_prereleases() {
        let mut rc = rel("v25.0rc1", 10);
        rc.prerelease = false; // only the suffix says so
        let rs = vec![rc, rel("v24.2", 5)];
        let s = spec(r"^v(?P<version>\d+\.\d+(?:\.\d+)?(?:rc\d+)?)$", false, 0);
        assert_eq!(picked(&select(&rs, &s, "24.1", 20 * DAY)), Some("24.2"));
        let s = spec(r"^v(?P<version>\d+\.\d+(?:\.\d+)?(?:rc\d+)?)$", true, 0);
        assert_eq!(picked(&select(&rs, &s, "24.1", 20 * DAY)), Some("25.0rc1"));

        // hornet: v2.0.0-rc.8 < v2.0.0-rc.10 < v2.0.0; GitHub's flag marks the rcs.
        let mut rs: Vec<ReleaseInfo> = ["v2.0.0-rc.8", "v2.0.0-rc.10"]
            .iter()
            .map(|t| {
                let mut r = rel(t, 1);
                r.prerelease = true;
                r
            })
            .collect();
        let s = spec(TagPattern::DEFAULT, true, 0);
        assert_eq!(
            picked(&select(&rs, &s, "1.2.9", 5 * DAY)),
            Some("2.0.0-rc.10")
        );
        rs.push(rel("v2.0.0", 3));
        assert_eq!(
            picked(&select(&rs, &s, "2.0.0-rc.10", 5 * DAY)),
            Some("2.0.0")
        );
        let s = spec(TagPattern::DEFAULT, false, 0);
        assert_eq!(picked(&select(&rs[..2], &s, "1.2.9", 5 * DAY)), None);
    }

    /// bitcoin at 27.1 with 27.2 and 28.0, 28.1 out: the 27 line gets 27.2 of its own, and the
    /// major bump lists what it skips.
    #[test]
    fn a_newer_major_and_a_newer_patch_are_proposed_apart() {
        let rs = vec![
            rel("v28.1", 9),
            rel("v28.0", 8),
            rel("v27.2", 7),
            rel("v27.1", 1),
        ];
        let s = spec(TagPattern::DEFAULT, false, 0);
        let sel = select(&rs, &s, "27.1", 20 * DAY);
        assert_eq!(picked(&sel), Some("28.1"));
        let line = sel.line.as_ref().map(|c| c.version.as_str());
        assert_eq!(line, Some("27.2"));
        let skips = |c: &Candidate| -> Vec<String> {
            c.skips.iter().map(|s| s.version.to_string()).collect()
        };
        assert_eq!(skips(sel.candidate.as_ref().unwrap()), ["27.2", "28.0"]);
        assert!(sel.line.as_ref().unwrap().skips.is_empty());
        assert_eq!(
            sel.candidate.as_ref().unwrap().skips[0].url,
            "https://github.com/x/y/releases/tag/v27.2"
        );
        // Already on the line's newest: only the major.
        let sel = select(&rs, &s, "27.2", 20 * DAY);
        assert_eq!((picked(&sel), sel.line.is_none()), (Some("28.1"), true));
        // Within one major: one proposal, no line of its own.
        let sel = select(&rs, &s, "28.0", 20 * DAY);
        assert_eq!((picked(&sel), sel.line.is_none()), (Some("28.1"), true));
        // Below 1.0 the second part is the major: 0.21.3 → 0.21.4 beside 0.22.0.
        let rs = vec![rel("v0.22.0", 3), rel("v0.21.4", 2)];
        let sel = select(&rs, &s, "0.21.3", 20 * DAY);
        assert_eq!(picked(&sel), Some("0.22.0"));
        assert_eq!(
            sel.line.map(|c| c.version.to_string()).as_deref(),
            Some("0.21.4")
        );
    }

    #[test]
    fn geth_patch_releases() {
        let rs = vec![rel("v1.14.12", 3), rel("v1.14.11", 2), rel("v1.13.15", 1)];
        let s = spec(TagPattern::DEFAULT, false, 0);
        assert_eq!(
            picked(&select(&rs, &s, "1.14.11", 5 * DAY)),
            Some("1.14.12")
        );
        assert_eq!(picked(&select(&rs, &s, "1.14.12", 5 * DAY)), None);
    }

    #[test]
    fn drafts_unmatched_and_unpublished_are_skipped() {
        let mut d = rel("v30.0", 1);
        d.draft = true;
        let mut np = rel("v29.0", 1);
        np.published_ms = None;
        let rs = vec![d, np, rel("nightly", 1), rel("v28.0", 1)];
        let s = spec(TagPattern::DEFAULT, false, 0);
        assert_eq!(picked(&select(&rs, &s, "27.0", 5 * DAY)), Some("28.0"));
    }

    /// A tag whose captured version would not pass the version rule is never proposed.
    #[test]
    fn a_tag_that_fails_the_version_rule_is_rejected_not_proposed() {
        let rs = vec![rel("v99.0;rm -rf /", 1), rel("v28.0", 1)];
        let s = spec(r"^v(?P<version>.+)$", false, 0);
        let sel = select(&rs, &s, "27.0", 5 * DAY);
        assert_eq!(picked(&sel), Some("28.0"));
        assert_eq!(sel.rejected.len(), 1);
        assert_eq!(sel.rejected[0].captured, "99.0;rm -rf /");
    }

    #[test]
    fn a_current_version_that_is_not_a_number_accepts_any_numbered_release() {
        let rs = vec![rel("v1.0", 1)];
        let s = spec(TagPattern::DEFAULT, false, 0);
        assert_eq!(picked(&select(&rs, &s, "latest", 5 * DAY)), Some("1.0"));
    }
}
