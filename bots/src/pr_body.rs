//! The title, commit message and body of a bump pull request. Pure, snapshot-tested.
//!
//! The body tells a reviewer what they need to decide without leaving the page: the release
//! (name, link, publication date), the version class and whether the merge will wait for an
//! approval in Slack, the image, which nodes the merge will touch zone by zone in rollout
//! order, and the release notes (trimmed, with `@mentions` defused so nobody upstream is
//! pinged and `#123` pointed at the upstream repository rather than the fleet's).

use crate::release::Candidate;
use fleet_repo_schema::Coin;
use fleet_repo_schema::semver::{Class, classify};
use std::fmt::Write;

/// Longest release notes quoted in a body (GitHub caps a body at 65,536 characters).
pub const NOTES_LIMIT: usize = 6_000;

/// What is known of the image for the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageNote {
    /// The coin pins no digest; nothing to update.
    NotPinned,
    /// The digest of the new tag was resolved and written.
    Pinned(String),
    /// The coin pins a digest and the new tag's is not known yet (the tag is not in the
    /// registry, or the registry could not be read): the pull request is a draft, and the
    /// watch tries again each cycle; when the tag is there it writes the digest, rewrites the
    /// image lines of the body and marks the pull request ready.
    Awaiting {
        /// Why it is not known yet.
        reason: String,
    },
    /// The coin pins a digest and no registry access is configured: a draft whose pin a
    /// person must write.
    Unresolved {
        /// Why.
        reason: String,
    },
}

impl ImageNote {
    /// Whether the pull request must stay a draft: the version is bumped but the pin still
    /// names the old image.
    pub fn stale_pin(&self) -> bool {
        matches!(
            self,
            ImageNote::Awaiting { .. } | ImageNote::Unresolved { .. }
        )
    }
}

/// Everything the body says.
#[derive(Debug, Clone)]
pub struct BumpInfo<'a> {
    /// The coin as the fleet repository has it now.
    pub coin: &'a Coin,
    /// Its current version (from the file on the base branch).
    pub current: &'a str,
    /// The release proposed.
    pub candidate: &'a Candidate,
    /// Approvers named in fleet.yaml.
    pub approvers: &'a [String],
    /// The image.
    pub image: ImageNote,
    /// An older bump pull request this one replaces: (number, version).
    pub supersedes: Option<(u64, String)>,
    /// The other bump proposed beside this one, when a major and the current line's newest
    /// are proposed apart ([`crate::release::Selection::line`]).
    pub beside: Option<Beside>,
    /// Path of the coin file in the repository.
    pub file: &'a str,
}

/// The other bump of a coin whose major and current line are proposed apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beside {
    /// This is the current line's bump; this major is proposed in its own pull request.
    Major(String),
    /// This is the major bump; the current line's newest is proposed in its own, first.
    Line(String),
}

/// `fleet/bump-<coin>-<version>`.
pub fn branch_name(coin: &str, version: &str) -> String {
    format!("fleet/bump-{coin}-{version}")
}

/// The prefix of every bump branch of `coin`.
pub fn branch_prefix(coin: &str) -> String {
    format!("fleet/bump-{coin}-")
}

/// Pull request title.
pub fn title(coin: &str, current: &str, version: &str) -> String {
    format!("{coin}: {current} → {version}")
}

/// Commit message.
pub fn commit_message(b: &BumpInfo<'_>) -> String {
    let r = &b.candidate.release;
    format!(
        "{}: {} → {}\n\nUpstream release {} ({}).\nOpened by fleet release-watch.\n",
        b.coin.name, b.current, b.candidate.version, r.tag, r.url
    )
}

/// The class of the change, as the approval policy reads it.
pub fn class_of(b: &BumpInfo<'_>) -> Class {
    classify(b.current, b.candidate.version.as_str())
}

/// Whether the coin's policy makes the rollout wait for an approval.
pub fn needs_approval(b: &BumpInfo<'_>) -> bool {
    b.coin.rollout.approval.requires(class_of(b))
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// UTC date and time of unix ms, `2026-11-20 14:03 UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn human_secs(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The first line of a bump that should have been a draft, in a repository that does not
/// allow drafts.
pub const NO_DRAFTS: &str = "> ⚠️ **Do not merge this yet.** This repository does not allow draft pull requests, and `image.digest` still pins the image of the old version: write the new tag's digest first (fleet does that only for drafts).";

const IMAGE_LINE: &str = "- **Image:** ";
const STEPS_LINE: &str = "On each node: ";
const FOOTER_LINE: &str = "Opened by fleet release-watch from the upstream release above. ";

/// The body's line about the image.
fn image_line(b: &BumpInfo<'_>) -> String {
    let (repo, v) = (&b.coin.image.repository, &b.candidate.version);
    let rest = match &b.image {
        ImageNote::NotPinned => format!("`{repo}:{v}` (no digest pin)"),
        ImageNote::Pinned(d) => format!("`{repo}:{v}` pinned to `{d}`"),
        ImageNote::Awaiting { reason } => format!(
            "`{repo}:{v}`, not pinned yet: {}. This pull request is a draft until the tag is in the registry: fleet release-watch checks every cycle, then writes its digest to `image.digest` in `{}` (which still pins the image of {}) and marks the pull request ready.",
            one_line(reason),
            b.file,
            b.current
        ),
        ImageNote::Unresolved { reason } => format!(
            "`{repo}:{v}`. ⚠️ The digest of this tag could not be resolved ({}): `image.digest` in `{}` still pins the image of {}. This pull request is a draft: write the digest, then mark it ready.",
            one_line(reason),
            b.file,
            b.current
        ),
    };
    format!("{IMAGE_LINE}{rest}")
}

/// The body's line about what happens on each node.
fn steps_line(b: &BumpInfo<'_>) -> String {
    let v = &b.candidate.version;
    let snap = if b.coin.snapshots.before_upgrade {
        "a snapshot of its data volume, then "
    } else {
        ""
    };
    let pin = match &b.image {
        ImageNote::Pinned(d) => format!(" {d}"),
        _ => String::new(),
    };
    format!(
        "{STEPS_LINE}{snap}`fleet-node upgrade {v}{pin}` over SSM (the image is pulled first; only then is `node@{v}` enabled and started in place of the old version); the chain data on the EBS volume is kept."
    )
}

/// The body's last line: what the pull request changes.
fn footer_line(b: &BumpInfo<'_>) -> String {
    format!(
        "{FOOTER_LINE}This pull request changes only `version`{} in `{}`. Merge it to roll the version out; close it to decline (this version is not proposed again).",
        if matches!(b.image, ImageNote::Pinned(_)) {
            " and `image.digest`"
        } else {
            ""
        },
        b.file
    )
}

/// `old` (a body this module wrote) with its image lines rewritten for `b.image`: when a
/// draft's image is pushed, the body says so and keeps everything else (a superseded pull
/// request, a person's edits elsewhere).
pub fn with_image(old: &str, b: &BumpInfo<'_>) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in old.lines() {
        if line.starts_with(IMAGE_LINE) {
            out.push(image_line(b));
        } else if line.starts_with(STEPS_LINE) {
            out.push(steps_line(b));
        } else if line.starts_with(FOOTER_LINE) {
            out.push(footer_line(b));
        } else {
            out.push(line.to_string());
        }
    }
    let mut s = out.join("\n");
    if old.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The body.
pub fn body(b: &BumpInfo<'_>) -> String {
    let c = b.coin;
    let r = &b.candidate.release;
    let v = &b.candidate.version;
    let mut o = String::new();
    let _ = writeln!(o, "## {} {} → {}\n", c.name, b.current, v);
    let name = r
        .name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(&r.tag);
    let published = r
        .published_ms
        .map(utc)
        .unwrap_or_else(|| "unpublished".into());
    let _ = writeln!(
        o,
        "- **Release:** [{}]({}) (tag `{}`), published {published}",
        one_line(name),
        r.url,
        r.tag
    );
    let class = class_of(b);
    let _ = writeln!(
        o,
        "- **Version change:** {} ({} → {})",
        class.as_str(),
        b.current,
        v
    );
    let policy = c.rollout.approval.as_str();
    if needs_approval(b) {
        let who = if b.approvers.is_empty() {
            "nobody is listed in fleet.yaml's `approvers`".to_string()
        } else {
            b.approvers
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            o,
            "- **Approval:** needed (`rollout.approval: {policy}`): after the merge the rollout waits until an approver ({who}) approves it in Slack"
        );
    } else {
        let _ = writeln!(
            o,
            "- **Approval:** not needed (`rollout.approval: {policy}`): the rollout starts when this is merged"
        );
    }
    let _ = writeln!(o, "{}", image_line(b));
    if let Some((n, old)) = &b.supersedes {
        let _ = writeln!(o, "- **Supersedes** #{n} ({old})");
    }
    if !b.candidate.skips.is_empty() {
        let skipped: Vec<String> = b
            .candidate
            .skips
            .iter()
            .map(|s| format!("[{}]({})", s.version, s.url))
            .collect();
        let _ = writeln!(
            o,
            "- **Skips:** {} (released after {}; this bump includes them)",
            skipped.join(", "),
            b.current
        );
    }
    match &b.beside {
        Some(Beside::Major(m)) => {
            let _ = writeln!(
                o,
                "- **Stays on its line:** the major {m} is proposed in a pull request of its own; this one can merge without it"
            );
        }
        Some(Beside::Line(l)) => {
            let _ = writeln!(
                o,
                "- **A major change:** {l}, the newest of the current line, is proposed in a pull request of its own, to merge first"
            );
        }
        None => {}
    }

    let _ = writeln!(o, "\n### What the merge will touch\n");
    let nodes = c.nodes.len();
    let _ = writeln!(
        o,
        "{nodes} node{} of {}, one availability zone at a time in `placement.zones` order, at most {} down at once. Each zone must be back in sync with the chain (blocks = headers, within {} blocks of the other nodes) and stay so for {} before the next zone starts.\n",
        if nodes == 1 { "" } else { "s" },
        c.name,
        c.rollout.max_unavailable,
        c.health.max_lag_blocks,
        human_secs(c.rollout.bake.0.as_secs())
    );
    let _ = writeln!(o, "| order | zone | nodes |\n|---|---|---|");
    for (i, z) in c.zones.iter().enumerate() {
        let names: Vec<String> = c
            .nodes
            .iter()
            .filter(|n| n.zone == *z)
            .map(|n| format!("`{}`", n.dns_name))
            .collect();
        let _ = writeln!(o, "| {} | {z} | {} |", i + 1, names.join(", "));
    }
    let _ = writeln!(o, "\n{}", steps_line(b));
    let _ = writeln!(o, "\n### Release notes\n");
    match r.body.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => {
            let _ = writeln!(
                o,
                "_The release has no notes; see [the release page]({})._",
                r.url
            );
        }
        Some(notes) => {
            let upstream = c
                .upstream
                .as_ref()
                .map(|u| u.github.to_string())
                .unwrap_or_default();
            let (text, cut) = trim_notes(notes, NOTES_LIMIT);
            let _ = writeln!(
                o,
                "<details open><summary>{} notes</summary>\n",
                one_line(name)
            );
            let _ = writeln!(o, "{}", defuse(&text, &upstream));
            if cut {
                let _ = writeln!(o, "\n… trimmed; [the full notes]({}).", r.url);
            }
            let _ = writeln!(o, "\n</details>");
        }
    }
    let _ = writeln!(o, "\n---\n{}", footer_line(b));
    o
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `limit` bytes of `notes`, cut at a line boundary; and whether it was cut.
pub fn trim_notes(notes: &str, limit: usize) -> (String, bool) {
    if notes.len() <= limit {
        return (notes.to_string(), false);
    }
    let mut end = limit;
    while !notes.is_char_boundary(end) {
        end -= 1;
    }
    let cut = notes[..end]
        .rfind('\n')
        .filter(|i| *i > limit / 2)
        .unwrap_or(end);
    let mut t = notes[..cut].trim_end().to_string();
    // An unclosed code fence would swallow the rest of the body.
    if t.matches("```").count() % 2 == 1 {
        t.push_str("\n```");
    }
    (t, true)
}

/// Release notes made safe to quote in the fleet repository: `@someone` becomes
/// `` `@someone` `` (no notification), `#123` becomes `owner/repo#123` (the upstream's
/// issue, not the fleet repository's), and HTML comments are dropped.
pub fn defuse(notes: &str, upstream: &str) -> String {
    let mut out = String::with_capacity(notes.len() + 64);
    let chars: Vec<char> = notes.chars().collect();
    let mut i = 0;
    let mut in_code = false;
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { ' ' } else { chars[i - 1] };
        let boundary = !(prev.is_alphanumeric() || prev == '_' || prev == '/' || prev == '`');
        if c == '`' {
            in_code = !in_code;
            out.push(c);
            i += 1;
        } else if !in_code && c == '<' && chars[i..].starts_with(&['<', '!', '-', '-']) {
            let rest: String = chars[i..].iter().collect();
            match rest.find("-->") {
                Some(end) => i += rest[..end + 3].chars().count(),
                None => i = chars.len(),
            }
        } else if !in_code && c == '@' && boundary {
            let n = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '-' || **c == '/')
                .count();
            if n == 0 {
                out.push(c);
                i += 1;
            } else {
                out.push('`');
                out.extend(&chars[i..=i + n]);
                out.push('`');
                i += n + 1;
            }
        } else if !in_code && c == '#' && boundary && !upstream.is_empty() {
            let n = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let next = chars.get(i + 1 + n).copied().unwrap_or(' ');
            if n > 0 && !next.is_alphanumeric() {
                out.push_str(upstream);
            }
            out.push(c);
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_and_issue_numbers_are_defused() {
        let d = defuse(
            "Thanks @alice and @org/team! Fixes #123 (see #45), ## Heading, a#1, `@code #9` mail a@b.c <!-- hidden @bob -->end",
            "bitcoin/bitcoin",
        );
        assert_eq!(
            d,
            "Thanks `@alice` and `@org/team`! Fixes bitcoin/bitcoin#123 (see bitcoin/bitcoin#45), ## Heading, a#1, `@code #9` mail a@b.c end"
        );
    }

    #[test]
    fn notes_are_trimmed_at_a_line_and_fences_closed() {
        let notes = format!("intro\n```\n{}\n```\nend", "line\n".repeat(3000));
        let (t, cut) = trim_notes(&notes, 1000);
        assert!(cut && t.len() <= 1004, "{}", t.len());
        assert!(t.ends_with("\n```"));
        assert_eq!(t.matches("```").count() % 2, 0);
        let (t, cut) = trim_notes("short", 1000);
        assert!(!cut);
        assert_eq!(t, "short");
        // A multi-byte character at the limit is never split.
        let (t, _) = trim_notes(&"é".repeat(1000), 999);
        assert!(t.len() <= 999);
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_732_111_380_000), "2024-11-20 14:03 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00 UTC");
    }
}
