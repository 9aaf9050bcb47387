//! One cycle of the release watch: for every coin with `upstream.github`, read its releases,
//! pick the newest to propose, and make sure exactly one pull request proposes it.
//!
//! Idempotent by construction: the branch name is the bump (`fleet/bump-<coin>-<version>`),
//! and before anything is written the open and closed pull requests with that branch are
//! looked up. An open one means done; a closed one means a person declined it (or merged
//! it and the base moved on): that bump is never proposed again. A crash between creating
//! the branch, committing and opening the pull request is resumed by the next cycle (the
//! branch is reused when it already holds the change). When a newer release appears while
//! an older bump of the same coin is open, the new pull request is opened and the old one is
//! closed with a comment pointing at it, and its branch deleted: one open bump per coin and
//! line. A coin whose newest release is a new major while its current line (same major) has a
//! newer release too gets two pull requests, the line's first (Renovate's
//! `separateMajorMinor`): superseding happens within a line only, so the line's bump neither
//! closes nor is closed by the major's. Each body lists the releases it skips.

use crate::github::{Created, File, GitHub, GitHubError, Pull, StatsSnapshot};
use crate::pr_body::{self, Beside, BumpInfo, ImageNote};
use crate::registry::DigestResolver;
use crate::release::{self, Candidate, RejectedTag};
use crate::slack::messages::Notice;
use crate::yaml_edit::{self, Edit};
use fleet_repo_schema::semver;
use fleet_repo_schema::{Desired, MemTree};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Where bump pull requests go.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The fleet repository on GitHub, `owner/name`.
    pub fleet_repo: String,
    /// Its branch that fleet follows (pull requests target it).
    pub base: String,
    /// The fleet's directory inside the repository ("" for the root).
    pub subdir: String,
    /// Only say what would be done.
    pub dry_run: bool,
}

/// What the cycle did for one coin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum CoinOutcome {
    /// Nothing newer.
    UpToDate {
        /// Current version.
        current: String,
    },
    /// A newer release is not old enough yet.
    Waiting {
        /// It.
        version: String,
        /// When it will be (UTC).
        ready_at: String,
    },
    /// A pull request was opened.
    Opened {
        /// Version proposed.
        version: String,
        /// Number.
        number: u64,
        /// Page.
        url: String,
        /// Older bump pull requests closed in its favour.
        superseded: Vec<u64>,
        /// Opened as a draft: the coin pins a digest and the new tag's is not known yet.
        draft: bool,
    },
    /// A draft bump's image tag is in the registry now: its digest was written to the
    /// branch and the pull request marked ready.
    MarkedReady {
        /// Version.
        version: String,
        /// Number.
        number: u64,
        /// Page.
        url: String,
        /// The digest written.
        digest: String,
    },
    /// A draft bump still waits for its image.
    AwaitingImage {
        /// Version.
        version: String,
        /// Number.
        number: u64,
        /// Why the digest is not known yet.
        reason: String,
    },
    /// `--dry-run`: what would be opened.
    WouldOpen {
        /// Version.
        version: String,
        /// Branch.
        branch: String,
        /// Title.
        title: String,
        /// The changed lines, `-old` / `+new`.
        diff: Vec<String>,
        /// Body.
        body: String,
        /// Open bump pull requests it would close.
        would_supersede: Vec<u64>,
    },
    /// The bump is already open.
    AlreadyOpen {
        /// Version.
        version: String,
        /// Number.
        number: u64,
    },
    /// A pull request for this bump was closed before: not proposed again.
    Declined {
        /// Version.
        version: String,
        /// Number.
        number: u64,
    },
    /// Something failed; the next cycle tries again.
    Error {
        /// What.
        message: String,
    },
}

/// A whole cycle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    /// Per coin with an upstream: its newest release's bump.
    pub coins: BTreeMap<String, CoinOutcome>,
    /// Per coin whose newest release is a new major and whose current line has a newer
    /// release too: that line's bump, proposed apart (and first).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lines: BTreeMap<String, CoinOutcome>,
    /// Tags refused by the version rule, per coin.
    pub rejected: BTreeMap<String, Vec<RejectedTag>>,
    /// GitHub requests of this cycle.
    pub requests: StatsSnapshot,
}

impl CycleReport {
    /// Every outcome, the lines' first: (coin, whether it is its line's bump, outcome).
    pub fn outcomes(&self) -> impl Iterator<Item = (&str, bool, &CoinOutcome)> {
        let lines = self.lines.iter().map(|(c, o)| (c.as_str(), true, o));
        lines.chain(self.coins.iter().map(|(c, o)| (c.as_str(), false, o)))
    }

    /// Whether a coin could not be checked or proposed.
    pub fn has_errors(&self) -> bool {
        self.outcomes()
            .any(|(_, _, o)| matches!(o, CoinOutcome::Error { .. }))
    }

    /// What the channel should hear of this cycle.
    pub fn notices(&self, desired: &Desired) -> Vec<Notice> {
        let mut out = Vec::new();
        for (coin, o) in self.lines.iter().chain(&self.coins) {
            match o {
                CoinOutcome::Opened {
                    version,
                    number,
                    url,
                    superseded,
                    draft,
                } => {
                    if let Some(c) = desired.coins.get(coin) {
                        let class = semver::classify(c.version.as_str(), version);
                        out.push(Notice::BumpOpened {
                            coin: coin.clone(),
                            from: c.version.to_string(),
                            to: version.clone(),
                            number: *number,
                            url: url.clone(),
                            class: class.as_str().to_string(),
                            approval_needed: c.rollout.approval.requires(class),
                            supersedes: superseded.first().copied(),
                            waiting_for_image: *draft,
                        });
                    }
                }
                CoinOutcome::MarkedReady {
                    version,
                    number,
                    url,
                    digest,
                } => out.push(Notice::BumpReady {
                    coin: coin.clone(),
                    to: version.clone(),
                    number: *number,
                    url: url.clone(),
                    digest: digest.clone(),
                }),
                _ => {}
            }
        }
        for (coin, tags) in &self.rejected {
            for t in tags {
                out.push(Notice::ReleaseRejected {
                    coin: coin.clone(),
                    tag: t.tag.clone(),
                    reason: t.reason.clone(),
                });
            }
        }
        out
    }
}

pub(crate) fn join_path(subdir: &str, file: &str) -> String {
    let s = subdir.trim_matches('/');
    if s.is_empty() {
        file.to_string()
    } else {
        format!("{s}/{file}")
    }
}

/// Run one cycle over `desired` (the fleet repository as fleet has it in force) at `now_ms`.
pub async fn cycle(
    gh: &GitHub,
    desired: &Desired,
    settings: &WatchSettings,
    resolver: Option<&dyn DigestResolver>,
    now_ms: i64,
) -> CycleReport {
    let before = gh.stats();
    let mut report = CycleReport::default();
    // (coin, candidate, the bump beside it, whether it is the line's): a line's bump first.
    let mut candidates: Vec<(String, Candidate, Option<Beside>, bool)> = Vec::new();
    for coin in desired.coins.values() {
        let Some(up) = &coin.upstream else { continue };
        let name = coin.name.to_string();
        let releases = match gh.releases(up.github.as_str()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(coin = %name, upstream = %up.github, error = %e, "release watch: cannot read releases");
                report.coins.insert(
                    name,
                    CoinOutcome::Error {
                        message: e.to_string(),
                    },
                );
                continue;
            }
        };
        let sel = release::select(&releases, up, coin.version.as_str(), now_ms);
        for r in &sel.rejected {
            tracing::warn!(coin = %name, tag = %r.tag, captured = %r.captured, reason = %r.reason, "release tag refused by the version rule: not proposed");
        }
        if !sel.rejected.is_empty() {
            report.rejected.insert(name.clone(), sel.rejected.clone());
        }
        match (sel.candidate, sel.waiting) {
            (Some(c), _) => {
                let beside = match sel.line {
                    Some(line) => {
                        let v = line.version.to_string();
                        let major = Beside::Major(c.version.to_string());
                        candidates.push((name.clone(), line, Some(major), true));
                        Some(Beside::Line(v))
                    }
                    None => None,
                };
                candidates.push((name, c, beside, false));
            }
            (None, Some((v, at))) => {
                report.coins.insert(
                    name,
                    CoinOutcome::Waiting {
                        version: v,
                        ready_at: pr_body::utc(at),
                    },
                );
            }
            (None, None) => {
                report.coins.insert(
                    name,
                    CoinOutcome::UpToDate {
                        current: coin.version.to_string(),
                    },
                );
            }
        }
    }
    if !candidates.is_empty() {
        // One listing of the open pull requests serves every coin.
        match gh
            .pulls(&settings.fleet_repo, "open", &settings.base, None)
            .await
        {
            Ok(open) => {
                for (name, cand, beside, line) in candidates {
                    let bump = Bump {
                        coin: &name,
                        cand: &cand,
                        beside,
                    };
                    let o = match propose(gh, desired, settings, resolver, &open, &bump).await {
                        Ok(o) => o,
                        Err(e) => {
                            tracing::warn!(coin = %name, version = %cand.version, error = %e, "release watch: could not propose the bump");
                            CoinOutcome::Error {
                                message: e.to_string(),
                            }
                        }
                    };
                    if line {
                        report.lines.insert(name, o);
                    } else {
                        report.coins.insert(name, o);
                    }
                }
            }
            Err(e) => {
                for (name, _, _, line) in candidates {
                    let o = CoinOutcome::Error {
                        message: e.to_string(),
                    };
                    if line {
                        report.lines.insert(name, o);
                    } else {
                        report.coins.insert(name, o);
                    }
                }
            }
        }
    }
    report.requests = gh.stats() - before;
    report
}

pub(crate) fn owner(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

/// One bump to propose.
struct Bump<'a> {
    coin: &'a str,
    cand: &'a Candidate,
    /// The coin's other bump, when its major and its line are proposed apart.
    beside: Option<Beside>,
}

/// Make sure one pull request proposes `bump`.
async fn propose(
    gh: &GitHub,
    desired: &Desired,
    s: &WatchSettings,
    resolver: Option<&dyn DigestResolver>,
    open: &[Pull],
    bump: &Bump<'_>,
) -> Result<CoinOutcome, GitHubError> {
    let (coin, cand) = (bump.coin, bump.cand);
    let version = cand.version.to_string();
    let branch = pr_body::branch_name(coin, &version);
    let prefix = pr_body::branch_prefix(coin);
    if let Some(p) = open.iter().find(|p| p.head == branch) {
        if p.draft
            && let Some(r) = resolver
        {
            return complete_draft(gh, desired, s, r, p, bump).await;
        }
        return Ok(CoinOutcome::AlreadyOpen {
            version,
            number: p.number,
        });
    }
    // Open bumps of this coin: older ones are superseded; a newer one stays (someone may
    // have proposed it by hand with fleet's naming). When the coin's major and line are
    // proposed apart, only the bumps of this bump's own line count.
    let mut older: Vec<&Pull> = Vec::new();
    for p in open.iter().filter(|p| p.head.starts_with(&prefix)) {
        let v = &p.head[prefix.len()..];
        if bump.beside.is_some() && !release::same_line(v, &version) {
            continue;
        }
        match semver::compare(v, &version) {
            Ordering::Less => older.push(p),
            _ => {
                return Ok(CoinOutcome::AlreadyOpen {
                    version: v.to_string(),
                    number: p.number,
                });
            }
        }
    }
    let head = format!("{}:{branch}", owner(&s.fleet_repo));
    let closed = gh
        .pulls(&s.fleet_repo, "closed", &s.base, Some(&head))
        .await?;
    if let Some(p) = closed.iter().find(|p| p.head == branch) {
        return Ok(CoinOutcome::Declined {
            version,
            number: p.number,
        });
    }
    let Some(c) = desired.coins.get(coin) else {
        return Err(GitHubError::Config(format!("{coin} is not in the fleet")));
    };
    let path = join_path(&s.subdir, &c.file);
    let Some(file) = gh.file(&s.fleet_repo, &path, &s.base).await? else {
        return Err(GitHubError::Status {
            what: format!("GET /repos/{}/contents/{path}", s.fleet_repo),
            status: 404,
            message: format!("{path} is not on {}", s.base),
        });
    };
    let edit_err = |e: yaml_edit::EditError| GitHubError::Decode {
        what: path.clone(),
        message: e.to_string(),
    };
    let current = current_version(&path, &file.text, c).map_err(edit_err)?;
    if semver::compare(&current, &version) != Ordering::Less {
        // The base moved on since the revision fleet has in force.
        return Ok(CoinOutcome::UpToDate { current });
    }
    let mut edits = vec![Edit::new("version", version.clone())];
    let pinned = yaml_edit::get_scalar(&path, &file.text, "image.digest")
        .map_err(edit_err)?
        .is_some();
    let image = if !pinned {
        ImageNote::NotPinned
    } else {
        match resolver {
            None => ImageNote::Unresolved {
                reason: "no registry access configured".into(),
            },
            Some(r) => match r.resolve(c.image.repository.as_str(), &version).await {
                Ok(Some(d)) => {
                    edits.push(Edit::new("image.digest", d.clone()));
                    ImageNote::Pinned(d)
                }
                Ok(None) => ImageNote::Awaiting {
                    reason: format!("the registry has no tag {version} yet"),
                },
                Err(e) => ImageNote::Awaiting { reason: e },
            },
        }
    };
    let new_text = yaml_edit::set_scalars(&path, &file.text, &edits).map_err(edit_err)?;
    validate(gh, s, &c.file, &file.text, &new_text).await?;
    let approvers = approvers_of(desired);
    let supersedes = older
        .first()
        .map(|p| (p.number, p.head[prefix.len()..].to_string()));
    let draft = image.stale_pin();
    let info = BumpInfo {
        coin: c,
        current: &current,
        candidate: cand,
        approvers: &approvers,
        image,
        supersedes,
        beside: bump.beside.clone(),
        file: &path,
    };
    let title = pr_body::title(coin, &current, &version);
    let body = pr_body::body(&info);
    if s.dry_run {
        let diff = file
            .text
            .lines()
            .zip(new_text.lines())
            .filter(|(a, b)| a != b)
            .flat_map(|(a, b)| [format!("-{a}"), format!("+{b}")])
            .collect();
        return Ok(CoinOutcome::WouldOpen {
            version,
            branch,
            title,
            diff,
            body,
            would_supersede: older.iter().map(|p| p.number).collect(),
        });
    }
    let pr = open_pull(
        gh,
        s,
        &Change {
            branch: &branch,
            path: &path,
            file: &file,
            new_text: &new_text,
            message: &pr_body::commit_message(&info),
            title: &title,
            body: &body,
            draft,
        },
    )
    .await?;
    tracing::info!(coin, version = %version, number = pr.number, url = %pr.url, draft = pr.draft, "bump pull request opened");
    let mut superseded = Vec::new();
    for old in older {
        let note = format!(
            "Superseded by #{}: {coin} {version} is newer than {}. Closed by fleet release-watch.",
            pr.number,
            &old.head[prefix.len()..]
        );
        gh.comment(&s.fleet_repo, old.number, &note).await?;
        gh.close_pull(&s.fleet_repo, old.number).await?;
        gh.delete_branch(&s.fleet_repo, &old.head).await?;
        superseded.push(old.number);
    }
    Ok(CoinOutcome::Opened {
        version,
        number: pr.number,
        url: pr.url,
        superseded,
        draft: pr.draft,
    })
}

/// A draft bump (opened while its image tag was not in the registry): when the tag is there
/// now, write its digest to the branch, rewrite the body's image lines and mark the pull
/// request ready. Each step is idempotent, so an interrupted cycle is finished by the next.
/// A branch whose version or pin a person changed is left alone.
async fn complete_draft(
    gh: &GitHub,
    desired: &Desired,
    s: &WatchSettings,
    resolver: &dyn DigestResolver,
    p: &Pull,
    bump: &Bump<'_>,
) -> Result<CoinOutcome, GitHubError> {
    let (coin, cand) = (bump.coin, bump.cand);
    let version = cand.version.to_string();
    let already = CoinOutcome::AlreadyOpen {
        version: version.clone(),
        number: p.number,
    };
    let Some(c) = desired.coins.get(coin) else {
        return Err(GitHubError::Config(format!("{coin} is not in the fleet")));
    };
    let waiting = |reason: String| CoinOutcome::AwaitingImage {
        version: version.clone(),
        number: p.number,
        reason,
    };
    let digest = match resolver
        .resolve(c.image.repository.as_str(), &version)
        .await
    {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(waiting(format!("the registry has no tag {version} yet"))),
        Err(e) => return Ok(waiting(e)),
    };
    let path = join_path(&s.subdir, &c.file);
    let Some(file) = gh.file(&s.fleet_repo, &path, &p.head).await? else {
        return Ok(already);
    };
    let edit_err = |e: yaml_edit::EditError| GitHubError::Decode {
        what: path.clone(),
        message: e.to_string(),
    };
    let on_branch = yaml_edit::get_scalar(&path, &file.text, "version").map_err(edit_err)?;
    let pin = yaml_edit::get_scalar(&path, &file.text, "image.digest").map_err(edit_err)?;
    if on_branch.as_deref() != Some(version.as_str()) || pin.is_none() {
        tracing::info!(
            coin,
            number = p.number,
            "draft bump changed by a person: left alone"
        );
        return Ok(already);
    }
    if pin.as_deref() != Some(digest.as_str()) {
        let edits = [Edit::new("image.digest", digest.clone())];
        let new_text = yaml_edit::set_scalars(&path, &file.text, &edits).map_err(edit_err)?;
        validate(gh, s, &c.file, &file.text, &new_text).await?;
        let message = format!(
            "{coin} {version}: pin the image digest\n\n{}:{version} is {digest}.",
            c.image.repository
        );
        gh.put_file(
            &s.fleet_repo,
            &path,
            &p.head,
            &message,
            &new_text,
            &file.sha,
        )
        .await?;
    }
    let base = gh.file(&s.fleet_repo, &path, &s.base).await?;
    let current = match &base {
        Some(f) => current_version(&path, &f.text, c).map_err(edit_err)?,
        None => c.version.to_string(),
    };
    let approvers = approvers_of(desired);
    let info = BumpInfo {
        coin: c,
        current: &current,
        candidate: cand,
        approvers: &approvers,
        image: ImageNote::Pinned(digest.clone()),
        supersedes: None,
        beside: bump.beside.clone(),
        file: &path,
    };
    let body = pr_body::with_image(&p.body, &info);
    if body != p.body {
        gh.edit_pull_body(&s.fleet_repo, p.number, &body).await?;
    }
    gh.mark_ready(&p.node_id).await?;
    tracing::info!(coin, version = %version, number = p.number, digest = %digest, "draft bump pinned and marked ready");
    Ok(CoinOutcome::MarkedReady {
        version,
        number: p.number,
        url: p.url.clone(),
        digest,
    })
}

/// The approvers fleet.yaml names, for a bump's body.
fn approvers_of(desired: &Desired) -> Vec<String> {
    desired
        .fleet
        .approvers
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// The coin's version as its file on a branch says (the revision in force's when it says
/// none).
fn current_version(
    path: &str,
    text: &str,
    c: &fleet_repo_schema::Coin,
) -> Result<String, yaml_edit::EditError> {
    Ok(yaml_edit::get_scalar(path, text, "version")?.unwrap_or_else(|| c.version.to_string()))
}

/// One file's change proposed as a pull request.
pub(crate) struct Change<'a> {
    /// The branch to make (fleet's naming: it is what makes the proposal idempotent).
    pub branch: &'a str,
    /// The file's path in the repository.
    pub path: &'a str,
    /// The file on the base branch.
    pub file: &'a File,
    /// Its new text.
    pub new_text: &'a str,
    /// The commit message.
    pub message: &'a str,
    /// The pull request's title.
    pub title: &'a str,
    /// Its body.
    pub body: &'a str,
    /// Open it as a draft.
    pub draft: bool,
}

/// Make the branch from the base's head, commit the change on it, open the pull request.
/// Resumes what an interrupted cycle left: a branch that exists already is reused (and
/// written only when it does not hold the change yet), and a pull request that exists
/// already (GitHub's 422) is found and returned.
pub(crate) async fn open_pull(
    gh: &GitHub,
    s: &WatchSettings,
    c: &Change<'_>,
) -> Result<Pull, GitHubError> {
    let base_sha = gh
        .branch_head(&s.fleet_repo, &s.base)
        .await?
        .ok_or_else(|| GitHubError::Status {
            what: format!("GET /repos/{}/git/ref/heads/{}", s.fleet_repo, s.base),
            status: 404,
            message: format!("no branch {}", s.base),
        })?;
    let mut blob = c.file.sha.clone();
    if gh.create_branch(&s.fleet_repo, c.branch, &base_sha).await? == Created::Existed {
        // Left by an interrupted cycle: reuse it if it holds the change already.
        if let Some(f) = gh.file(&s.fleet_repo, c.path, c.branch).await? {
            blob = f.sha.clone();
            if f.text == c.new_text {
                blob.clear();
            }
        }
    }
    if !blob.is_empty() {
        gh.put_file(
            &s.fleet_repo,
            c.path,
            c.branch,
            c.message,
            c.new_text,
            &blob,
        )
        .await?;
    }
    let head = format!("{}:{}", owner(&s.fleet_repo), c.branch);
    match gh
        .create_pull(&s.fleet_repo, c.title, c.branch, &s.base, c.body, c.draft)
        .await
    {
        Ok(p) => Ok(p),
        Err(e) if e.status() == Some(422) => {
            // Opened by an interrupted cycle after our listing.
            let again = gh
                .pulls(&s.fleet_repo, "open", &s.base, Some(&head))
                .await?;
            if let Some(p) = again.into_iter().find(|p| p.head == c.branch) {
                return Ok(p);
            }
            if !c.draft {
                return Err(e);
            }
            // Draft pull requests are not available on every plan (private repositories
            // on GitHub Free): open it ready, its body saying why it must not be merged yet.
            // It is then not completed by the watch: only drafts are.
            tracing::warn!(branch = c.branch, error = %e, "a draft pull request was refused: opened as a ready one that says not to merge it");
            let body = format!("{}\n\n{}", pr_body::NO_DRAFTS, c.body);
            gh.create_pull(&s.fleet_repo, c.title, c.branch, &s.base, &body, false)
                .await
        }
        Err(e) => Err(e),
    }
}

/// The edited coin file must not bring an error the file did not have: both versions are
/// checked beside the base's fleet.yaml (rules that need other files of the repository,
/// such as metrics scripts, fail the same way for both and are not the edit's doing).
pub(crate) async fn validate(
    gh: &GitHub,
    s: &WatchSettings,
    coin_file: &str,
    before: &str,
    after: &str,
) -> Result<(), GitHubError> {
    let fleet_path = join_path(&s.subdir, "fleet.yaml");
    let Some(fleet) = gh.file(&s.fleet_repo, &fleet_path, &s.base).await? else {
        return Err(GitHubError::Decode {
            what: fleet_path,
            message: "fleet.yaml is missing on the base branch".into(),
        });
    };
    let errors = |text: &str| -> Vec<(String, String)> {
        let mut tree = MemTree::new();
        tree.insert("fleet.yaml", fleet.text.as_bytes().to_vec());
        tree.insert(coin_file, text.as_bytes().to_vec());
        fleet_repo_schema::load(&tree)
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == fleet_repo_schema::Severity::Error)
            .map(|d| {
                (
                    d.code.as_str().to_string(),
                    format!("{}:{}: {}", d.file, d.span.start.line, d.message),
                )
            })
            .collect()
    };
    let old: Vec<String> = errors(before).into_iter().map(|(c, _)| c).collect();
    if let Some((_, first)) = errors(after).into_iter().find(|(c, _)| !old.contains(c)) {
        return Err(GitHubError::Decode {
            what: coin_file.to_string(),
            message: format!("the bumped file would not validate ({first}); not proposed"),
        });
    }
    Ok(())
}
