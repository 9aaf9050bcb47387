//! The GitHub REST API, as the release watch uses it, on octocrab.
//!
//! octocrab carries the requests (its HTTP stack, TLS, token handling, base URL for GitHub
//! Enterprise) and its models decode the responses (`Release`, `PullRequest`, `Content`,
//! `Ref`). Around it this module adds what a bot polling dozens of repositories around the
//! clock needs, which octocrab's typed calls do not expose:
//!
//! - **Conditional requests.** Every GET remembers the response's `ETag` and sends it back
//!   as `If-None-Match`; GitHub answers an unchanged resource with `304 Not Modified`, which
//!   does not count against the rate limit. An idle poll of every coin's releases costs
//!   nothing.
//! - **Rate limits.** A `403`/`429` with `retry-after`, or with `x-ratelimit-remaining: 0`,
//!   is waited out (`retry-after` seconds, or until `x-ratelimit-reset`; a `429` without
//!   either waits a minute as GitHub's documentation asks) and retried; a wait longer than
//!   `max_wait` ends the call with [`GitHubError::RateLimited`] instead of blocking. A
//!   response that leaves no requests (`remaining: 0`) makes the next request wait for the
//!   reset rather than spend a 403. Writes are spaced by a second (GitHub's advice against
//!   secondary limits). `5xx` and transport errors are retried three times with backoff.
//! - **Pagination** through the `Link` header, only to URLs under the configured API base
//!   (the token is never sent anywhere else).
//!
//! The token is held by octocrab as a secret and never appears in a message or a log line.

use crate::release::ReleaseInfo;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time for the client: now, and waiting. Production uses the system clock and tokio's
/// sleep; tests record the waits instead of sleeping.
pub trait Pacer: Send + Sync {
    /// Unix ms.
    fn now_ms(&self) -> i64;
    /// Wait `d`.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The system clock and tokio's sleep.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemPacer;

impl Pacer for SystemPacer {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A failed call, with what was asked (method and path, never a token).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitHubError {
    /// No response (connection refused, TLS, timeout), after retries.
    #[error("{what}: no answer from GitHub ({message})")]
    Transport {
        /// Method and path.
        what: String,
        /// The error.
        message: String,
    },
    /// GitHub answered with an error.
    #[error("{what}: GitHub answered {status}: {message}")]
    Status {
        /// Method and path.
        what: String,
        /// HTTP status.
        status: u16,
        /// GitHub's `message` (and what to do, for the usual ones).
        message: String,
    },
    /// Rate limited for longer than the client waits.
    #[error(
        "{what}: rate limited by GitHub until {until}; the watch tries again on its next cycle"
    )]
    RateLimited {
        /// Method and path.
        what: String,
        /// When requests are allowed again (UTC).
        until: String,
    },
    /// The response is not what the API documents.
    #[error("{what}: unexpected response ({message})")]
    Decode {
        /// Method and path.
        what: String,
        /// The error.
        message: String,
    },
    /// Bad configuration (API URL, token).
    #[error("GitHub client: {0}")]
    Config(String),
}

impl GitHubError {
    /// The HTTP status, when GitHub answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Requests made, by kind. `counted` is what GitHub charges to the rate limit: every
/// request but a `304` answer to a conditional one.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests sent (retries included).
    pub requests: AtomicU64,
    /// Of which answered `304 Not Modified`.
    pub not_modified: AtomicU64,
    /// Of which answered `403`/`429` for a rate limit.
    pub rate_limited: AtomicU64,
}

/// A copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Requests sent.
    pub requests: u64,
    /// Answered 304.
    pub not_modified: u64,
    /// Answered 403/429 for a rate limit.
    pub rate_limited: u64,
    /// Charged to the rate limit (requests − not_modified).
    pub counted: u64,
}

impl std::ops::Sub for StatsSnapshot {
    type Output = StatsSnapshot;
    fn sub(self, o: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests - o.requests,
            not_modified: self.not_modified - o.not_modified,
            rate_limited: self.rate_limited - o.rate_limited,
            counted: self.counted - o.counted,
        }
    }
}

/// Settings.
#[derive(Clone)]
pub struct GitHubConfig {
    /// API base: `https://api.github.com`, or `https://<host>/api/v3` for GitHub Enterprise.
    pub api_url: String,
    /// Token (None: anonymous, 60 requests an hour; enough for `--dry-run` on a few coins).
    pub token: Option<String>,
    /// Longest rate-limit wait inside one call.
    pub max_wait: Duration,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

/// GitHub's API base.
pub const GITHUB_API: &str = "https://api.github.com";

#[derive(Debug, Clone)]
struct Cached {
    etag: String,
    body: bytes::Bytes,
    next: Option<String>,
}

/// One response.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    body: bytes::Bytes,
    next: Option<String>,
}

/// The client.
pub struct GitHub {
    octo: Octocrab,
    api: String,
    /// The GraphQL endpoint (`/graphql` on github.com, `/api/graphql` on GitHub Enterprise):
    /// the REST API cannot mark a draft pull request ready.
    graphql: String,
    max_wait: Duration,
    pacer: Arc<dyn Pacer>,
    cache: Mutex<HashMap<String, Cached>>,
    /// No request before this (unix ms): the last response left no requests.
    blocked_until: Mutex<i64>,
    last_write: Mutex<i64>,
    stats: Stats,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GitHub({})", self.api)
    }
}

/// A pull request, as far as the watch cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// Number.
    pub number: u64,
    /// Head branch.
    pub head: String,
    /// Title.
    pub title: String,
    /// Page.
    pub url: String,
    /// Open.
    pub open: bool,
    /// Merged.
    pub merged: bool,
    /// A draft (cannot be merged until it is marked ready).
    pub draft: bool,
    /// Its GraphQL id (to mark it ready).
    pub node_id: String,
    /// Its body.
    pub body: String,
}

/// A file of a repository at a ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Its text.
    pub text: String,
    /// Its blob id (needed to update it).
    pub sha: String,
}

/// Whether a ref was created or was there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Created now.
    Created,
    /// It existed.
    Existed,
}

fn query_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut it = part.split(';');
        let url = it.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        it.any(|p| p.trim() == "rel=\"next\"")
            .then(|| url.to_string())
    })
}

/// The GraphQL endpoint beside a REST API base.
pub fn graphql_url(api: &str) -> String {
    match api.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{api}/graphql"),
    }
}

fn header_i64(h: &HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl GitHub {
    /// A client for `cfg`. Call it inside a tokio runtime (octocrab spawns its service
    /// buffer there).
    pub fn new(cfg: &GitHubConfig, pacer: Arc<dyn Pacer>) -> Result<GitHub, GitHubError> {
        let api = cfg.api_url.trim_end_matches('/').to_string();
        crate::net::require_https(&api, "the token").map_err(GitHubError::Config)?;
        let mut b = Octocrab::builder()
            .base_uri(api.as_str())
            .map_err(|e| GitHubError::Config(format!("`{api}`: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(60)))
            .set_write_timeout(Some(Duration::from_secs(60)))
            .add_header(
                http::header::ACCEPT,
                "application/vnd.github+json".to_string(),
            );
        if let Some(t) = &cfg.token {
            b = b.personal_token(t.clone());
        }
        let octo = b.build().map_err(|e| GitHubError::Config(e.to_string()))?;
        Ok(GitHub {
            octo,
            graphql: graphql_url(&api),
            api,
            max_wait: cfg.max_wait,
            pacer,
            cache: Mutex::new(HashMap::new()),
            blocked_until: Mutex::new(0),
            last_write: Mutex::new(0),
            stats: Stats::default(),
        })
    }

    /// Requests so far.
    pub fn stats(&self) -> StatsSnapshot {
        let requests = self.stats.requests.load(Ordering::SeqCst);
        let not_modified = self.stats.not_modified.load(Ordering::SeqCst);
        StatsSnapshot {
            requests,
            not_modified,
            rate_limited: self.stats.rate_limited.load(Ordering::SeqCst),
            counted: requests - not_modified,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn until(&self, ms: i64) -> String {
        crate::pr_body::utc(ms)
    }

    async fn wait(&self, what: &str, until_ms: i64) -> Result<(), GitHubError> {
        let now = self.pacer.now_ms();
        if until_ms <= now {
            return Ok(());
        }
        let d = Duration::from_millis((until_ms - now) as u64);
        if d > self.max_wait {
            return Err(GitHubError::RateLimited {
                what: what.to_string(),
                until: self.until(until_ms),
            });
        }
        tracing::warn!(
            what,
            wait_ms = d.as_millis() as u64,
            "GitHub rate limit: waiting"
        );
        self.pacer.sleep(d).await;
        Ok(())
    }

    /// A request that got no (whole) answer: wait 1 s, 2 s, 4 s before the next try; the
    /// fourth failure is the error.
    async fn transport_failed(
        &self,
        what: &str,
        failures: &mut u32,
        message: String,
    ) -> Result<(), GitHubError> {
        *failures += 1;
        if *failures > 3 {
            return Err(GitHubError::Transport {
                what: what.to_string(),
                message,
            });
        }
        self.pacer
            .sleep(Duration::from_secs(1 << (*failures - 1)))
            .await;
        Ok(())
    }

    /// One call with the policies above. `url` is absolute and under the API base.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Resp, GitHubError> {
        let path = url.strip_prefix(&self.api).unwrap_or(url);
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        if !url.starts_with(&self.api) && url != self.graphql {
            return Err(GitHubError::Config(format!(
                "{what}: refusing to send the token outside {}",
                self.api
            )));
        }
        let get = method == Method::GET;
        let mut transport_failures = 0u32;
        let mut server_failures = 0u32;
        let mut limited = 0u32;
        loop {
            let blocked = *self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
            self.wait(&what, blocked).await?;
            if !get {
                let last = *self.last_write.lock().unwrap_or_else(|e| e.into_inner());
                if last > 0 {
                    self.wait(&what, last + 1000).await?;
                }
                *self.last_write.lock().unwrap_or_else(|e| e.into_inner()) = self.pacer.now_ms();
            }
            let cached = if get {
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(url)
                    .cloned()
            } else {
                None
            };
            self.stats.requests.fetch_add(1, Ordering::SeqCst);
            let res = match method.as_str() {
                "GET" => {
                    let mut h = HeaderMap::new();
                    if let Some(c) = &cached
                        && let Ok(v) = HeaderValue::from_str(&c.etag)
                    {
                        h.insert(http::header::IF_NONE_MATCH, v);
                    }
                    self.octo._get_with_headers(url, Some(h)).await
                }
                "POST" => self.octo._post(url, body).await,
                "PUT" => self.octo._put(url, body).await,
                "PATCH" => self.octo._patch(url, body).await,
                "DELETE" => self.octo._delete(url, body).await,
                m => {
                    return Err(GitHubError::Config(format!("method {m} not supported")));
                }
            };
            let res = match res {
                Ok(r) => r,
                Err(e) => {
                    self.transport_failed(&what, &mut transport_failures, e.to_string())
                        .await?;
                    continue;
                }
            };
            let status = res.status();
            let headers = res.headers().clone();
            let body_bytes = match res.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    self.transport_failed(&what, &mut transport_failures, e.to_string())
                        .await?;
                    continue;
                }
            };
            let now = self.pacer.now_ms();
            let remaining = header_i64(&headers, "x-ratelimit-remaining");
            let reset_ms = header_i64(&headers, "x-ratelimit-reset").map(|s| s * 1000);
            if remaining == Some(0)
                && let Some(r) = reset_ms
            {
                *self.blocked_until.lock().unwrap_or_else(|e| e.into_inner()) = r;
            }
            if status == StatusCode::NOT_MODIFIED {
                self.stats.not_modified.fetch_add(1, Ordering::SeqCst);
                if let Some(c) = cached {
                    return Ok(Resp {
                        status: StatusCode::OK,
                        body: c.body,
                        next: c.next,
                    });
                }
                return Err(GitHubError::Decode {
                    what,
                    message: "304 without a cached response".into(),
                });
            }
            let retry_after = header_i64(&headers, "retry-after");
            let is_limit = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::FORBIDDEN
                    && (retry_after.is_some() || remaining == Some(0)));
            if is_limit {
                self.stats.rate_limited.fetch_add(1, Ordering::SeqCst);
                limited += 1;
                let until = match (retry_after, reset_ms) {
                    (Some(s), _) => now + s.max(1) * 1000,
                    (None, Some(r)) if remaining == Some(0) => r.max(now) + 1000,
                    _ => now + 60_000,
                };
                if limited > 3 {
                    return Err(GitHubError::RateLimited {
                        what,
                        until: self.until(until),
                    });
                }
                self.wait(&what, until).await?;
                continue;
            }
            if status.is_server_error() {
                server_failures += 1;
                if server_failures <= 3 {
                    self.pacer
                        .sleep(Duration::from_secs(1 << (server_failures - 1)))
                        .await;
                    continue;
                }
            }
            if !status.is_success() {
                let msg = serde_json::from_slice::<Value>(&body_bytes)
                    .ok()
                    .and_then(|v| {
                        let m = v.get("message")?.as_str()?.to_string();
                        let errs = v
                            .get("errors")
                            .and_then(|e| e.as_array())
                            .map(|a| {
                                a.iter()
                                    .filter_map(|e| {
                                        e.get("message")
                                            .and_then(|m| m.as_str())
                                            .map(str::to_string)
                                    })
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            })
                            .filter(|s| !s.is_empty());
                        Some(match errs {
                            Some(e) => format!("{m} ({e})"),
                            None => m,
                        })
                    })
                    .unwrap_or_else(|| {
                        String::from_utf8_lossy(&body_bytes)
                            .chars()
                            .take(200)
                            .collect()
                    });
                let hint = match status.as_u16() {
                    401 => "; the token is missing, expired or revoked",
                    403 => "; the token lacks a permission (see README: the GitHub token)",
                    404 => "; no such resource, or the token cannot see it",
                    _ => "",
                };
                return Err(GitHubError::Status {
                    what,
                    status: status.as_u16(),
                    message: format!("{msg}{hint}"),
                });
            }
            let next = headers
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            if get
                && let Some(etag) = headers
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
            {
                self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    url.to_string(),
                    Cached {
                        etag: etag.to_string(),
                        body: body_bytes.clone(),
                        next: next.clone(),
                    },
                );
            }
            return Ok(Resp {
                status,
                body: body_bytes,
                next,
            });
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(what: &str, r: &Resp) -> Result<T, GitHubError> {
        serde_json::from_slice(&r.body).map_err(|e| GitHubError::Decode {
            what: what.to_string(),
            message: e.to_string(),
        })
    }

    /// Every page of a list, following `Link: rel="next"`.
    async fn pages<T: serde::de::DeserializeOwned>(
        &self,
        first: String,
        what: &str,
    ) -> Result<Vec<T>, GitHubError> {
        let mut out = Vec::new();
        let mut url = Some(first);
        let mut n = 0;
        while let Some(u) = url {
            n += 1;
            if n > 100 {
                return Err(GitHubError::Decode {
                    what: what.into(),
                    message: "more than 100 pages".into(),
                });
            }
            let r = self.send(Method::GET, &u, None).await?;
            let mut page: Vec<T> = Self::decode(what, &r)?;
            out.append(&mut page);
            url = r.next;
        }
        Ok(out)
    }

    /// Every release of `repo` (`owner/name`), newest first, all pages.
    pub async fn releases(&self, repo: &str) -> Result<Vec<ReleaseInfo>, GitHubError> {
        let what = format!("GET /repos/{repo}/releases");
        let list: Vec<octocrab::models::repos::Release> = self
            .pages(
                self.url(&format!("/repos/{repo}/releases?per_page=100")),
                &what,
            )
            .await?;
        Ok(list
            .into_iter()
            .map(|r| ReleaseInfo {
                tag: r.tag_name,
                name: r.name,
                draft: r.draft,
                prerelease: r.prerelease,
                published_ms: r.published_at.map(|t| t.timestamp_millis()),
                url: r.html_url.to_string(),
                body: r.body,
            })
            .collect())
    }

    /// The commit a branch points at, or None when there is no such branch.
    pub async fn branch_head(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, GitHubError> {
        let url = self.url(&format!("/repos/{repo}/git/ref/heads/{branch}"));
        match self.send(Method::GET, &url, None).await {
            Ok(r) => {
                let r: octocrab::models::repos::Ref = Self::decode("GET git/ref", &r)?;
                match r.object {
                    octocrab::models::repos::Object::Commit { sha, .. } => Ok(Some(sha)),
                    octocrab::models::repos::Object::Tag { sha, .. } => Ok(Some(sha)),
                    _ => Err(GitHubError::Decode {
                        what: format!("GET /repos/{repo}/git/ref/heads/{branch}"),
                        message: "the ref does not point at a commit".into(),
                    }),
                }
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create `branch` at `sha`.
    pub async fn create_branch(
        &self,
        repo: &str,
        branch: &str,
        sha: &str,
    ) -> Result<Created, GitHubError> {
        let url = self.url(&format!("/repos/{repo}/git/refs"));
        let body = json!({"ref": format!("refs/heads/{branch}"), "sha": sha});
        match self.send(Method::POST, &url, Some(&body)).await {
            Ok(_) => Ok(Created::Created),
            Err(e) if e.status() == Some(422) => Ok(Created::Existed),
            Err(e) => Err(e),
        }
    }

    /// Delete `branch` (gone already counts as done).
    pub async fn delete_branch(&self, repo: &str, branch: &str) -> Result<(), GitHubError> {
        let url = self.url(&format!("/repos/{repo}/git/refs/heads/{branch}"));
        match self.send(Method::DELETE, &url, None).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status(), Some(404 | 422)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A file at `git_ref`, or None when it does not exist there.
    pub async fn file(
        &self,
        repo: &str,
        path: &str,
        git_ref: &str,
    ) -> Result<Option<File>, GitHubError> {
        let url = self.url(&format!(
            "/repos/{repo}/contents/{path}?ref={}",
            query_escape(git_ref)
        ));
        let what = format!("GET /repos/{repo}/contents/{path}");
        let r = match self.send(Method::GET, &url, None).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let c: octocrab::models::repos::Content = Self::decode(&what, &r)?;
        let raw: String = c
            .content
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.as_bytes())
            .map_err(|e| GitHubError::Decode {
                what: what.clone(),
                message: format!("content is not base64: {e}"),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| GitHubError::Decode {
            what,
            message: "the file is not UTF-8".into(),
        })?;
        Ok(Some(File { text, sha: c.sha }))
    }

    /// Write `text` to `path` on `branch` as one commit; `sha` is the blob being replaced.
    /// Returns the new commit's id.
    pub async fn put_file(
        &self,
        repo: &str,
        path: &str,
        branch: &str,
        message: &str,
        text: &str,
        sha: &str,
    ) -> Result<String, GitHubError> {
        let url = self.url(&format!("/repos/{repo}/contents/{path}"));
        let body = json!({
            "message": message,
            "content": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            "sha": sha,
            "branch": branch,
        });
        let r = self.send(Method::PUT, &url, Some(&body)).await?;
        let v: Value = Self::decode("PUT contents", &r)?;
        v.pointer("/commit/sha")
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| GitHubError::Decode {
                what: format!("PUT /repos/{repo}/contents/{path}"),
                message: "no commit.sha in the answer".into(),
            })
    }

    fn pull(p: octocrab::models::pulls::PullRequest) -> Pull {
        Pull {
            number: p.number,
            head: p.head.ref_field,
            title: p.title.unwrap_or_default(),
            url: p.html_url.map(|u| u.to_string()).unwrap_or(p.url),
            open: matches!(p.state, Some(octocrab::models::IssueState::Open)),
            merged: p.merged_at.is_some(),
            draft: p.draft.unwrap_or(false),
            node_id: p.node_id.unwrap_or_default(),
            body: p.body.unwrap_or_default(),
        }
    }

    /// Pull requests into `base`: `state` is `open`, `closed` or `all`; `head` filters on
    /// `owner:branch`.
    pub async fn pulls(
        &self,
        repo: &str,
        state: &str,
        base: &str,
        head: Option<&str>,
    ) -> Result<Vec<Pull>, GitHubError> {
        let mut url = self.url(&format!(
            "/repos/{repo}/pulls?state={state}&base={}&per_page=100",
            query_escape(base)
        ));
        if let Some(h) = head {
            url.push_str(&format!("&head={}", query_escape(h)));
        }
        let list: Vec<octocrab::models::pulls::PullRequest> =
            self.pages(url, &format!("GET /repos/{repo}/pulls")).await?;
        Ok(list.into_iter().map(Self::pull).collect())
    }

    /// Open a pull request (a draft when `draft`).
    pub async fn create_pull(
        &self,
        repo: &str,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
        draft: bool,
    ) -> Result<Pull, GitHubError> {
        let url = self.url(&format!("/repos/{repo}/pulls"));
        let b = json!({"title": title, "head": head, "base": base, "body": body, "maintainer_can_modify": true, "draft": draft});
        let r = self.send(Method::POST, &url, Some(&b)).await?;
        let p: octocrab::models::pulls::PullRequest = Self::decode("POST pulls", &r)?;
        Ok(Self::pull(p))
    }

    /// Close a pull request.
    pub async fn close_pull(&self, repo: &str, number: u64) -> Result<(), GitHubError> {
        let url = self.url(&format!("/repos/{repo}/pulls/{number}"));
        self.send(Method::PATCH, &url, Some(&json!({"state": "closed"})))
            .await
            .map(|_| ())
    }

    /// Replace a pull request's body.
    pub async fn edit_pull_body(
        &self,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let url = self.url(&format!("/repos/{repo}/pulls/{number}"));
        self.send(Method::PATCH, &url, Some(&json!({"body": body})))
            .await
            .map(|_| ())
    }

    /// Mark a draft pull request ready for review (GraphQL's
    /// `markPullRequestReadyForReview`; REST has no such call). GraphQL answers `200` with an
    /// `errors` list when it fails.
    pub async fn mark_ready(&self, node_id: &str) -> Result<(), GitHubError> {
        let what = "POST graphql markPullRequestReadyForReview";
        let q = json!({
            "query": "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { isDraft } } }",
            "variables": {"id": node_id},
        });
        let r = self.send(Method::POST, &self.graphql, Some(&q)).await?;
        let v: Value = Self::decode(what, &r)?;
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array())
            && !errs.is_empty()
        {
            let m: Vec<&str> = errs
                .iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
                .collect();
            return Err(GitHubError::Decode {
                what: what.into(),
                message: m.join("; "),
            });
        }
        match v.pointer("/data/markPullRequestReadyForReview/pullRequest/isDraft") {
            Some(Value::Bool(false)) => Ok(()),
            _ => Err(GitHubError::Decode {
                what: what.into(),
                message: format!("the pull request is still a draft: {v}"),
            }),
        }
    }

    /// Comment on a pull request (an issue comment).
    pub async fn comment(&self, repo: &str, number: u64, body: &str) -> Result<(), GitHubError> {
        let url = self.url(&format!("/repos/{repo}/issues/{number}/comments"));
        let r = self
            .send(Method::POST, &url, Some(&json!({"body": body})))
            .await?;
        debug_assert!(r.status.is_success());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let l = r#"<https://api.github.com/repositories/1/releases?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("https://api.github.com/repositories/1/releases?per_page=100&page=2")
        );
        let l = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(l), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn graphql_sits_beside_the_rest_api() {
        assert_eq!(
            graphql_url("https://api.github.com"),
            "https://api.github.com/graphql"
        );
        assert_eq!(
            graphql_url("https://ghe.example.com/api/v3"),
            "https://ghe.example.com/api/graphql"
        );
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            query_escape("org:fleet/bump-x-1.0+b"),
            "org%3Afleet%2Fbump-x-1.0%2Bb"
        );
    }

    #[test]
    fn plain_http_is_refused_off_loopback_and_the_token_is_not_shown() {
        let cfg = GitHubConfig {
            api_url: "http://github.example.com/api/v3".into(),
            token: Some("ghp_secret".into()),
            max_wait: Duration::from_secs(1),
        };
        let e = GitHub::new(&cfg, Arc::new(SystemPacer)).unwrap_err();
        assert!(e.to_string().contains("clear text"), "{e}");
        assert!(!format!("{cfg:?}").contains("ghp_secret"));
    }
}
