//! GitHub's REST API on loopback, with the request and response shapes of GitHub's
//! documentation, for the release watch tests.
//!
//! - Releases of upstream repositories (`GET /repos/{o}/{r}/releases`), paged by
//!   `per_page`/`page` with a `Link` header, each page with an `ETag`; a conditional
//!   request whose `If-None-Match` matches is answered `304` and, as on GitHub, not charged
//!   to the rate limit. Every response carries `x-ratelimit-*` headers.
//! - The fleet repository is a **real bare git repository**: refs, contents and commits
//!   made through the API (`git/ref(s)`, `contents`) are real git objects written with git2,
//!   so `fleet run` following that repository (file://) sees the bump commit exactly as it
//!   would see one made on GitHub, and a test can merge the pull request with `git`.
//! - Pull requests (drafts too) and issue comments are kept in memory. The GraphQL endpoint
//!   (`POST /graphql`, `/api/graphql` under GitHub Enterprise's `/api/v3`) answers
//!   `markPullRequestReadyForReview` by the pull request's node id, with GraphQL's shapes:
//!   `200` and `data`, or `200` and an `errors` list.
//! - Scripted failures (rate limits, errors) are served before the normal answer.
//! - Every request is recorded (method, path, query, `If-None-Match`, body).
//! - Requests without the expected `Authorization: Bearer <token>` get `401 Bad credentials`.

use crate::mock_http::{Handler, MockServer, Req, Resp};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path (after the API prefix).
    pub path: String,
    /// Query.
    pub query: BTreeMap<String, String>,
    /// `If-None-Match` sent.
    pub if_none_match: Option<String>,
    /// Status answered.
    pub status: u16,
    /// JSON body sent.
    pub body: Value,
}

/// A pull request.
#[derive(Debug, Clone)]
pub struct PullRec {
    /// Number.
    pub number: u64,
    /// Head branch.
    pub head: String,
    /// Base branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// `open` / `closed`.
    pub state: String,
    /// Merged.
    pub merged: bool,
    /// A draft.
    pub draft: bool,
}

/// A scripted answer for the next request whose path contains `path`.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// Path fragment.
    pub path: String,
    /// Answer.
    pub resp: Resp,
}

/// The mock's state.
#[derive(Debug, Default)]
pub struct GhState {
    /// Expected token.
    pub token: String,
    /// Releases per upstream `owner/name`, newest first.
    pub releases: HashMap<String, Vec<Value>>,
    /// Fleet repositories: `owner/name` → bare git repository.
    pub repos: HashMap<String, PathBuf>,
    /// Pull requests.
    pub pulls: Vec<PullRec>,
    /// Issue comments: (number, body).
    pub comments: Vec<(u64, String)>,
    /// Every request.
    pub requests: Vec<Recorded>,
    /// Failures to serve first.
    pub script: VecDeque<Scripted>,
    /// Requests left in the rate-limit window.
    pub remaining: i64,
    /// When the window resets (unix seconds).
    pub reset: i64,
    /// Draft pull requests refused, as on private repositories of GitHub Free.
    pub no_drafts: bool,
}

/// The mock server.
#[derive(Debug)]
pub struct GitHubMock {
    server: MockServer,
    /// The state (inspect and change it between cycles).
    pub state: Arc<Mutex<GhState>>,
    prefix: String,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `2026-11-20T14:03:00Z` for unix seconds.
pub fn iso(t: i64) -> String {
    let rem = t.rem_euclid(86_400);
    let (y, m, d) = bots::pr_body::civil(t.div_euclid(86_400));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A GitHub user ("simple user") object.
pub fn user(login: &str, id: u64) -> Value {
    let u = format!("https://api.github.com/users/{login}");
    json!({
        "login": login, "id": id, "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "", "url": u, "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{u}/followers"), "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"), "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"), "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"), "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"), "type": "User",
        "user_view_type": "public", "site_admin": false
    })
}

/// A release object as `GET /repos/{o}/{r}/releases` returns it.
pub fn release(
    repo: &str,
    id: u64,
    tag: &str,
    published: Option<i64>,
    prerelease: bool,
    body: &str,
) -> Value {
    let api = format!("https://api.github.com/repos/{repo}");
    json!({
        "url": format!("{api}/releases/{id}"),
        "assets_url": format!("{api}/releases/{id}/assets"),
        "upload_url": format!("https://uploads.github.com/repos/{repo}/releases/{id}/assets{{?name,label}}"),
        "html_url": format!("https://github.com/{repo}/releases/tag/{tag}"),
        "id": id,
        "author": user("release-bot", 9_000_001),
        "node_id": format!("RE_kwDO{id}"),
        "tag_name": tag,
        "target_commitish": "master",
        "name": format!("Release {}", tag.trim_start_matches('v')),
        "draft": published.is_none(),
        "immutable": false,
        "prerelease": prerelease,
        "created_at": iso(published.unwrap_or_else(now_s) - 3600),
        "updated_at": iso(published.unwrap_or_else(now_s)),
        "published_at": published.map(iso),
        "assets": [],
        "tarball_url": format!("{api}/tarball/{tag}"),
        "zipball_url": format!("{api}/zipball/{tag}"),
        "body": body,
    })
}

fn repo_obj(full: &str) -> Value {
    let (owner, name) = full.split_once('/').unwrap_or((full, full));
    let api = format!("https://api.github.com/repos/{full}");
    json!({
        "id": 1_296_269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": name, "full_name": full,
        "owner": user(owner, 1), "private": true, "html_url": format!("https://github.com/{full}"),
        "description": "fleet repository", "fork": false, "url": api,
        "archive_url": format!("{api}/{{archive_format}}{{/ref}}"), "assignees_url": format!("{api}/assignees{{/user}}"),
        "blobs_url": format!("{api}/git/blobs{{/sha}}"), "branches_url": format!("{api}/branches{{/branch}}"),
        "collaborators_url": format!("{api}/collaborators{{/collaborator}}"), "comments_url": format!("{api}/comments{{/number}}"),
        "commits_url": format!("{api}/commits{{/sha}}"), "compare_url": format!("{api}/compare/{{base}}...{{head}}"),
        "contents_url": format!("{api}/contents/{{+path}}"), "contributors_url": format!("{api}/contributors"),
        "deployments_url": format!("{api}/deployments"), "downloads_url": format!("{api}/downloads"),
        "events_url": format!("{api}/events"), "forks_url": format!("{api}/forks"),
        "git_commits_url": format!("{api}/git/commits{{/sha}}"), "git_refs_url": format!("{api}/git/refs{{/sha}}"),
        "git_tags_url": format!("{api}/git/tags{{/sha}}"), "git_url": format!("git:github.com/{full}.git"),
        "issue_comment_url": format!("{api}/issues/comments{{/number}}"), "issue_events_url": format!("{api}/issues/events{{/number}}"),
        "issues_url": format!("{api}/issues{{/number}}"), "keys_url": format!("{api}/keys{{/key_id}}"),
        "labels_url": format!("{api}/labels{{/name}}"), "languages_url": format!("{api}/languages"),
        "merges_url": format!("{api}/merges"), "milestones_url": format!("{api}/milestones{{/number}}"),
        "notifications_url": format!("{api}/notifications{{?since,all,participating}}"), "pulls_url": format!("{api}/pulls{{/number}}"),
        "releases_url": format!("{api}/releases{{/id}}"), "ssh_url": format!("git@github.com:{full}.git"),
        "stargazers_url": format!("{api}/stargazers"), "statuses_url": format!("{api}/statuses/{{sha}}"),
        "subscribers_url": format!("{api}/subscribers"), "subscription_url": format!("{api}/subscription"),
        "tags_url": format!("{api}/tags"), "teams_url": format!("{api}/teams"), "trees_url": format!("{api}/git/trees{{/sha}}"),
        "clone_url": format!("https://github.com/{full}.git"), "hooks_url": format!("{api}/hooks"),
        "svn_url": format!("https://github.com/{full}"), "homepage": null, "language": null,
        "forks_count": 0, "stargazers_count": 0, "watchers_count": 0, "size": 108, "default_branch": "main",
        "open_issues_count": 0, "is_template": false, "topics": [], "has_issues": true, "has_projects": false,
        "has_wiki": false, "has_pages": false, "has_downloads": true, "archived": false, "disabled": false,
        "visibility": "private", "pushed_at": "2026-11-01T00:00:00Z", "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2026-11-01T00:00:00Z", "allow_forking": false, "forks": 0, "open_issues": 0, "watchers": 0
    })
}

fn pull_obj(repo: &str, p: &PullRec, head_sha: &str, base_sha: &str) -> Value {
    let api = format!("https://api.github.com/repos/{repo}");
    let owner = repo.split('/').next().unwrap_or(repo);
    json!({
        "url": format!("{api}/pulls/{}", p.number), "id": 1_000_000 + p.number,
        "node_id": format!("PR_kwDO{}", p.number), "html_url": format!("https://github.com/{repo}/pull/{}", p.number),
        "diff_url": format!("https://github.com/{repo}/pull/{}.diff", p.number),
        "patch_url": format!("https://github.com/{repo}/pull/{}.patch", p.number),
        "issue_url": format!("{api}/issues/{}", p.number), "commits_url": format!("{api}/pulls/{}/commits", p.number),
        "review_comments_url": format!("{api}/pulls/{}/comments", p.number),
        "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
        "comments_url": format!("{api}/issues/{}/comments", p.number), "statuses_url": format!("{api}/statuses/{head_sha}"),
        "number": p.number, "state": p.state, "locked": false, "title": p.title, "user": user("fleet-bot", 4242),
        "body": p.body, "labels": [], "milestone": null, "active_lock_reason": null,
        "created_at": "2026-11-30T10:00:00Z", "updated_at": "2026-11-30T10:00:00Z",
        "closed_at": if p.state == "closed" { json!("2026-11-30T11:00:00Z") } else { Value::Null },
        "merged_at": if p.merged { json!("2026-11-30T11:00:00Z") } else { Value::Null },
        "merge_commit_sha": null, "assignee": null, "assignees": [], "requested_reviewers": [], "requested_teams": [],
        "head": {"label": format!("{owner}:{}", p.head), "ref": p.head, "sha": head_sha, "user": user(owner, 1), "repo": repo_obj(repo)},
        "base": {"label": format!("{owner}:{}", p.base), "ref": p.base, "sha": base_sha, "user": user(owner, 1), "repo": repo_obj(repo)},
        "_links": {
            "self": {"href": format!("{api}/pulls/{}", p.number)},
            "html": {"href": format!("https://github.com/{repo}/pull/{}", p.number)},
            "issue": {"href": format!("{api}/issues/{}", p.number)},
            "comments": {"href": format!("{api}/issues/{}/comments", p.number)},
            "review_comments": {"href": format!("{api}/pulls/{}/comments", p.number)},
            "review_comment": {"href": format!("{api}/pulls/comments{{/number}}")},
            "commits": {"href": format!("{api}/pulls/{}/commits", p.number)},
            "statuses": {"href": format!("{api}/statuses/{head_sha}")}
        },
        "author_association": "CONTRIBUTOR", "auto_merge": null, "draft": p.draft
    })
}

fn etag(body: &[u8]) -> String {
    // FNV-1a, as a stand-in for GitHub's content hash.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in body {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("W/\"{h:016x}\"")
}

fn err(status: u16, msg: &str) -> Resp {
    Resp::json(
        status,
        &json!({"message": msg, "documentation_url": "https://docs.github.com/rest", "status": status.to_string()}),
    )
}

/// Git operations on a bare repository.
pub mod git {
    use std::path::Path;

    /// The commit a branch (or a commit id) points at.
    pub fn resolve(repo: &Path, r: &str) -> Option<git2::Oid> {
        let g = git2::Repository::open_bare(repo).ok()?;
        if let Ok(rf) = g.find_reference(&format!("refs/heads/{r}")) {
            return rf.target();
        }
        git2::Oid::from_str(r)
            .ok()
            .filter(|o| g.find_commit(*o).is_ok())
    }

    /// A file at a commit: (bytes, blob id).
    pub fn file(repo: &Path, commit: git2::Oid, path: &str) -> Option<(Vec<u8>, git2::Oid)> {
        let g = git2::Repository::open_bare(repo).ok()?;
        let tree = g.find_commit(commit).ok()?.tree().ok()?;
        let e = tree.get_path(Path::new(path)).ok()?;
        let blob = g.find_blob(e.id()).ok()?;
        Some((blob.content().to_vec(), e.id()))
    }

    fn rebuild(
        g: &git2::Repository,
        tree: Option<&git2::Tree<'_>>,
        parts: &[&str],
        blob: git2::Oid,
    ) -> Result<git2::Oid, git2::Error> {
        let mut b = g.treebuilder(tree)?;
        match parts {
            [] => Err(git2::Error::from_str("empty path")),
            [leaf] => {
                b.insert(leaf, blob, 0o100644)?;
                b.write()
            }
            [dir, rest @ ..] => {
                let sub = tree
                    .and_then(|t| t.get_name(dir))
                    .and_then(|e| g.find_tree(e.id()).ok());
                let id = rebuild(g, sub.as_ref(), rest, blob)?;
                b.insert(dir, id, 0o040000)?;
                b.write()
            }
        }
    }

    /// Commit `content` at `path` on `branch`; the new commit id.
    pub fn put(
        repo: &Path,
        branch: &str,
        path: &str,
        content: &[u8],
        message: &str,
    ) -> Result<git2::Oid, git2::Error> {
        let g = git2::Repository::open_bare(repo)?;
        let refname = format!("refs/heads/{branch}");
        let parent = g.find_reference(&refname)?.peel_to_commit()?;
        let blob = g.blob(content)?;
        let parts: Vec<&str> = path.split('/').collect();
        let tree_id = rebuild(&g, Some(&parent.tree()?), &parts, blob)?;
        let tree = g.find_tree(tree_id)?;
        let sig = git2::Signature::now("fleet-bot", "fleet-bot@users.noreply.github.com")?;
        let id = g.commit(None, &sig, &sig, message, &tree, &[&parent])?;
        g.reference(&refname, id, true, "contents API")?;
        Ok(id)
    }
}

impl GitHubMock {
    /// A mock expecting `token`, serving its API under `prefix` ("" as api.github.com,
    /// "/api/v3" as GitHub Enterprise).
    pub fn start(token: &str, prefix: &str) -> GitHubMock {
        let state = Arc::new(Mutex::new(GhState {
            token: token.to_string(),
            remaining: 5000,
            reset: now_s() + 3600,
            ..GhState::default()
        }));
        let st = Arc::clone(&state);
        let pre = prefix.to_string();
        let handler: Handler = Arc::new(move |req: Req| {
            let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
            let path = req
                .path
                .strip_prefix(pre.as_str())
                .unwrap_or(&req.path)
                .to_string();
            let resp = handle(&mut s, &req, &path);
            s.requests.push(Recorded {
                method: req.method.clone(),
                path,
                query: req.query.clone(),
                if_none_match: req.header("if-none-match").map(str::to_string),
                status: resp.status,
                body: req.json(),
            });
            resp
        });
        GitHubMock {
            server: MockServer::start(handler),
            state,
            prefix: prefix.to_string(),
        }
    }

    /// The API base URL to configure.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.server.url(), self.prefix)
    }

    /// Lock the state.
    pub fn st(&self) -> std::sync::MutexGuard<'_, GhState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serve `repo` (`owner/name`) from the bare repository at `path`.
    pub fn add_repo(&self, repo: &str, path: &Path) {
        self.st().repos.insert(repo.to_string(), path.to_path_buf());
    }

    /// Set the releases of `repo`, newest first.
    pub fn set_releases(&self, repo: &str, releases: Vec<Value>) {
        self.st().releases.insert(repo.to_string(), releases);
    }

    /// Requests recorded so far (and forget them).
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.st().requests)
    }

    /// Serve `resp` to the next request whose path contains `path`.
    pub fn script(&self, path: &str, resp: Resp) {
        self.st().script.push_back(Scripted {
            path: path.to_string(),
            resp,
        });
    }

    /// The pull requests.
    pub fn pulls(&self) -> Vec<PullRec> {
        self.st().pulls.clone()
    }
}

fn rate_headers(s: &GhState, r: Resp) -> Resp {
    r.header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", s.remaining.max(0).to_string())
        .header("x-ratelimit-reset", s.reset.to_string())
        .header("x-ratelimit-used", (5000 - s.remaining.max(0)).to_string())
        .header("x-ratelimit-resource", "core")
        .header("x-github-api-version-selected", "2022-11-28")
}

fn handle(s: &mut GhState, req: &Req, path: &str) -> Resp {
    let auth_ok = req
        .header("authorization")
        .is_some_and(|a| a == format!("Bearer {}", s.token) || a == format!("token {}", s.token));
    if !auth_ok {
        return err(401, "Bad credentials");
    }
    if let Some(i) = s.script.iter().position(|x| path.contains(&x.path)) {
        let x = s.script.remove(i).expect("scripted");
        return x.resp;
    }
    if s.remaining <= 0 && now_s() < s.reset {
        let r = err(
            403,
            "API rate limit exceeded for user ID 4242. [rate limit]",
        );
        return rate_headers(s, r);
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = req.method.as_str();
    let resp = match (m, segs.as_slice()) {
        ("GET", ["repos", o, r, "releases"]) => {
            let full = format!("{o}/{r}");
            let all = s.releases.get(&full).cloned().unwrap_or_default();
            let per: usize = req
                .query
                .get("per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30)
                .clamp(1, 100);
            let page: usize = req
                .query
                .get("page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1);
            let chunk: Vec<Value> = all
                .iter()
                .skip((page - 1) * per)
                .take(per)
                .cloned()
                .collect();
            let pages = all.len().div_ceil(per).max(1);
            let mut r = Resp::json(200, &Value::Array(chunk));
            if page < pages {
                // Absolute URLs under the same API base, as GitHub sends them.
                let host = req.header("host").unwrap_or("127.0.0.1");
                let prefix = req.path.strip_suffix(path).unwrap_or("");
                let link = format!(
                    "<http://{host}{prefix}/repos/{full}/releases?per_page={per}&page={}>; rel=\"next\", <http://{host}{prefix}/repos/{full}/releases?per_page={per}&page={pages}>; rel=\"last\"",
                    page + 1
                );
                r = r.header("link", link);
            }
            r
        }
        ("GET", ["repos", o, r, "git", "ref", "heads", branch @ ..]) => {
            let full = format!("{o}/{r}");
            let branch = branch.join("/");
            match s.repos.get(&full).and_then(|p| git::resolve(p, &branch)) {
                Some(id) => Resp::json(
                    200,
                    &json!({"ref": format!("refs/heads/{branch}"), "node_id": "REF_kwDO1", "url": format!("https://api.github.com/repos/{full}/git/refs/heads/{branch}"),
                            "object": {"sha": id.to_string(), "type": "commit", "url": format!("https://api.github.com/repos/{full}/git/commits/{id}")}}),
                ),
                None => err(404, "Not Found"),
            }
        }
        ("POST", ["repos", o, r, "git", "refs"]) => {
            let full = format!("{o}/{r}");
            let b = req.json();
            let (Some(rf), Some(sha)) = (b["ref"].as_str(), b["sha"].as_str()) else {
                return err(422, "Invalid request.");
            };
            let Some(path) = s.repos.get(&full).cloned() else {
                return err(404, "Not Found");
            };
            let g = git2::Repository::open_bare(&path).expect("bare repo");
            if g.find_reference(rf).is_ok() {
                return err(422, "Reference already exists");
            }
            let Ok(oid) = git2::Oid::from_str(sha) else {
                return err(422, "Object does not exist");
            };
            match g.reference(rf, oid, false, "create ref") {
                Ok(_) => Resp::json(
                    201,
                    &json!({"ref": rf, "node_id": "REF_kwDO2", "url": format!("https://api.github.com/repos/{full}/git/{rf}"),
                                               "object": {"sha": sha, "type": "commit", "url": format!("https://api.github.com/repos/{full}/git/commits/{sha}")}}),
                ),
                Err(_) => err(422, "Object does not exist"),
            }
        }
        ("DELETE", ["repos", o, r, "git", "refs", "heads", branch @ ..]) => {
            let full = format!("{o}/{r}");
            let branch = branch.join("/");
            let Some(path) = s.repos.get(&full).cloned() else {
                return err(404, "Not Found");
            };
            let g = git2::Repository::open_bare(&path).expect("bare repo");
            match g.find_reference(&format!("refs/heads/{branch}")) {
                Ok(mut rf) => {
                    rf.delete().expect("delete ref");
                    Resp::empty(204)
                }
                Err(_) => err(422, "Reference does not exist"),
            }
        }
        ("GET", ["repos", o, r, "contents", file @ ..]) => {
            let full = format!("{o}/{r}");
            let file = file.join("/");
            let rf = req
                .query
                .get("ref")
                .cloned()
                .unwrap_or_else(|| "main".into());
            let Some(path) = s.repos.get(&full).cloned() else {
                return err(404, "Not Found");
            };
            let Some(commit) = git::resolve(&path, &rf) else {
                return err(404, "No commit found for the ref");
            };
            match git::file(&path, commit, &file) {
                Some((bytes, id)) => Resp::json(
                    200,
                    &content_obj(&full, &file, &rf, &bytes, &id.to_string()),
                ),
                None => err(404, "Not Found"),
            }
        }
        ("PUT", ["repos", o, r, "contents", file @ ..]) => {
            let full = format!("{o}/{r}");
            let file = file.join("/");
            let b = req.json();
            let (Some(msg), Some(content), Some(branch)) = (
                b["message"].as_str(),
                b["content"].as_str(),
                b["branch"].as_str(),
            ) else {
                return err(422, "Invalid request.");
            };
            let Some(path) = s.repos.get(&full).cloned() else {
                return err(404, "Not Found");
            };
            let Some(head) = git::resolve(&path, branch) else {
                return err(404, "Branch not found");
            };
            let existing = git::file(&path, head, &file).map(|(_, id)| id.to_string());
            if existing.is_some() && b["sha"].as_str() != existing.as_deref() {
                return err(
                    409,
                    &format!("{file} does not match {}", b["sha"].as_str().unwrap_or("")),
                );
            }
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(content) else {
                return err(422, "content is not valid Base64");
            };
            match git::put(&path, branch, &file, &bytes, msg) {
                Ok(id) => {
                    let (_, blob) = git::file(&path, id, &file).expect("written file");
                    Resp::json(
                        200,
                        &json!({
                            "content": content_obj(&full, &file, branch, &bytes, &blob.to_string()),
                            "commit": {"sha": id.to_string(), "node_id": "C_kwDO1", "url": format!("https://api.github.com/repos/{full}/git/commits/{id}"),
                                       "html_url": format!("https://github.com/{full}/commit/{id}"),
                                       "author": {"date": iso(now_s()), "name": "fleet-bot", "email": "fleet-bot@users.noreply.github.com"},
                                       "committer": {"date": iso(now_s()), "name": "fleet-bot", "email": "fleet-bot@users.noreply.github.com"},
                                       "message": msg, "tree": {"url": "", "sha": ""}, "parents": [{"url": "", "html_url": "", "sha": head.to_string()}],
                                       "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null}}
                        }),
                    )
                }
                Err(e) => err(422, &e.to_string()),
            }
        }
        ("GET", ["repos", o, r, "pulls"]) => {
            let full = format!("{o}/{r}");
            let state = req
                .query
                .get("state")
                .cloned()
                .unwrap_or_else(|| "open".into());
            let base = req.query.get("base").cloned();
            let head = req.query.get("head").cloned();
            let path = s.repos.get(&full).cloned();
            let list: Vec<Value> = s
                .pulls
                .iter()
                .filter(|p| state == "all" || p.state == state)
                .filter(|p| base.as_ref().is_none_or(|b| *b == p.base))
                .filter(|p| {
                    head.as_ref()
                        .is_none_or(|h| h.split_once(':').map(|(_, b)| b) == Some(p.head.as_str()))
                })
                .map(|p| {
                    let hs = path
                        .as_ref()
                        .and_then(|r| git::resolve(r, &p.head))
                        .map(|o| o.to_string())
                        .unwrap_or_else(|| "0".repeat(40));
                    let bs = path
                        .as_ref()
                        .and_then(|r| git::resolve(r, &p.base))
                        .map(|o| o.to_string())
                        .unwrap_or_else(|| "0".repeat(40));
                    pull_obj(&full, p, &hs, &bs)
                })
                .collect();
            Resp::json(200, &Value::Array(list))
        }
        ("POST", ["repos", o, r, "pulls"]) => {
            let full = format!("{o}/{r}");
            let b = req.json();
            let (Some(title), Some(head), Some(base)) =
                (b["title"].as_str(), b["head"].as_str(), b["base"].as_str())
            else {
                return err(422, "Validation Failed");
            };
            let Some(path) = s.repos.get(&full).cloned() else {
                return err(404, "Not Found");
            };
            let (Some(hs), Some(bs)) = (git::resolve(&path, head), git::resolve(&path, base))
            else {
                return err(422, "Validation Failed");
            };
            if s.pulls.iter().any(|p| p.head == head && p.state == "open") {
                let owner = o.to_string();
                return Resp::json(
                    422,
                    &json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {owner}:{head}.")}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request", "status": "422"}),
                );
            }
            let draft = b["draft"].as_bool().unwrap_or(false);
            if draft && s.no_drafts {
                return Resp::json(
                    422,
                    &json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": "Draft pull requests are not supported in this repository."}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request", "status": "422"}),
                );
            }
            let number = s.pulls.len() as u64 + 1;
            let p = PullRec {
                draft,
                number,
                head: head.into(),
                base: base.into(),
                title: title.into(),
                body: b["body"].as_str().unwrap_or("").into(),
                state: "open".into(),
                merged: false,
            };
            let v = pull_obj(&full, &p, &hs.to_string(), &bs.to_string());
            s.pulls.push(p);
            Resp::json(201, &v)
        }
        ("PATCH", ["repos", o, r, "pulls", n]) => {
            let full = format!("{o}/{r}");
            let b = req.json();
            let Some(p) = s.pulls.iter_mut().find(|p| p.number.to_string() == *n) else {
                return err(404, "Not Found");
            };
            if let Some(st) = b["state"].as_str() {
                p.state = st.into();
            }
            if let Some(t) = b["title"].as_str() {
                p.title = t.into();
            }
            if let Some(t) = b["body"].as_str() {
                p.body = t.into();
            }
            let p = p.clone();
            let z = "0".repeat(40);
            Resp::json(200, &pull_obj(&full, &p, &z, &z))
        }
        ("POST", ["graphql"] | ["api", "graphql"]) => {
            let b = req.json();
            let q = b["query"].as_str().unwrap_or("");
            let id = b["variables"]["id"].as_str().unwrap_or("");
            if !q.contains("markPullRequestReadyForReview") {
                return Resp::json(
                    200,
                    &json!({"errors": [{"message": "this mock answers markPullRequestReadyForReview only"}]}),
                );
            }
            match s
                .pulls
                .iter_mut()
                .find(|p| format!("PR_kwDO{}", p.number) == id)
            {
                Some(p) => {
                    p.draft = false;
                    Resp::json(
                        200,
                        &json!({"data": {"markPullRequestReadyForReview": {"pullRequest": {"isDraft": false}}}}),
                    )
                }
                None => Resp::json(
                    200,
                    &json!({"data": {"markPullRequestReadyForReview": null}, "errors": [{"type": "NOT_FOUND", "path": ["markPullRequestReadyForReview"], "locations": [{"line": 1, "column": 22}], "message": format!("Could not resolve to a node with the global id of '{id}'.")}]}),
                ),
            }
        }
        ("POST", ["repos", o, r, "issues", n, "comments"]) => {
            let Ok(n) = n.parse::<u64>() else {
                return err(404, "Not Found");
            };
            let body = req.json()["body"].as_str().unwrap_or("").to_string();
            s.comments.push((n, body.clone()));
            Resp::json(
                201,
                &json!({"id": 1, "node_id": "IC_kwDO1", "url": format!("https://api.github.com/repos/{o}/{r}/issues/comments/1"),
                                    "html_url": format!("https://github.com/{o}/{r}/pull/{n}#issuecomment-1"), "body": body,
                                    "user": user("fleet-bot", 4242), "created_at": iso(now_s()), "updated_at": iso(now_s()),
                                    "issue_url": format!("https://api.github.com/repos/{o}/{r}/issues/{n}"), "author_association": "CONTRIBUTOR"}),
            )
        }
        _ => err(404, "Not Found"),
    };
    // Every successful GET carries an ETag; a conditional GET that matches is answered 304
    // and, as on GitHub, not charged to the rate limit.
    if m == "GET" && resp.status == 200 {
        let tag = etag(&resp.body);
        if req.header("if-none-match") == Some(tag.as_str()) {
            return rate_headers(s, Resp::empty(304).header("etag", tag));
        }
        s.remaining -= 1;
        return rate_headers(s, resp.header("etag", tag));
    }
    s.remaining -= 1;
    rate_headers(s, resp)
}

fn content_obj(full: &str, file: &str, rf: &str, bytes: &[u8], sha: &str) -> Value {
    // GitHub wraps the Base64 at 60 characters.
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let wrapped: Vec<String> = b64
        .as_bytes()
        .chunks(60)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let name = file.rsplit('/').next().unwrap_or(file);
    let api = format!("https://api.github.com/repos/{full}");
    json!({
        "type": "file", "encoding": "base64", "size": bytes.len(), "name": name, "path": file,
        "content": wrapped.join("\n") + "\n", "sha": sha,
        "url": format!("{api}/contents/{file}?ref={rf}"), "git_url": format!("{api}/git/blobs/{sha}"),
        "html_url": format!("https://github.com/{full}/blob/{rf}/{file}"),
        "download_url": format!("https://raw.githubusercontent.com/{full}/{rf}/{file}"),
        "_links": {"git": format!("{api}/git/blobs/{sha}"), "self": format!("{api}/contents/{file}?ref={rf}"), "html": format!("https://github.com/{full}/blob/{rf}/{file}")}
    })
}
