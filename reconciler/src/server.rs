//! The reconciler's HTTP server (one port): `/healthz`, `/readyz`, `/metrics`, `/status`,
//! `POST /hooks/github` and `POST /hooks/slack`.
//!
//! `/hooks/slack` is Slack's interaction callback (Approve / Reject buttons). The server
//! only reads the body (at most 1 MB, 20 s) and hands it with the two signature headers to
//! an [`InteractionHook`] (the bots glue in `people.rs`), which verifies Slack's `v0`
//! signature before anything else. Without Slack configured it answers 503.
//!
//! The webhook is verified before anything else is read from the request: the body's
//! HMAC-SHA256 under the shared secret must equal `X-Hub-Signature-256` (compared in
//! constant time by `hmac`'s `verify_slice`). Anything unsigned, mis-signed, or sent while
//! no secret is configured gets 401 and changes nothing. A verified push to the watched
//! branch wakes the fetcher; the push's content is not trusted for anything else: fleet
//! fetches the branch itself.

use crate::daemon::Shared;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest webhook body read. GitHub caps payloads at 25 MB; a push to a fleet repository
/// (a few commits of YAML) is far below, and an unauthenticated client can make the server
/// buffer up to this much per connection before the signature is known.
pub const MAX_BODY: usize = 5 * 1024 * 1024;
/// Connections served at once. A slot is a task and a few KB of buffers, so there are many
/// (the systemd unit raises the descriptor limit for them). When every slot is taken, the
/// connection that has waited longest without sending a request, if it has waited at least
/// [`SILENT_GRACE`], is closed to make room: a client that sends nothing cannot crowd out a
/// health check. When none has, the new connection is closed at once (shed) rather than left
/// in the kernel's backlog, where it would only delay the others.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a new connection may stay silent before it may be closed to make room: a real
/// client sends its request at once.
pub const SILENT_GRACE: Duration = Duration::from_secs(1);
/// Time for a client to send a request's headers (the first one, and each next one on a
/// kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a connection is kept, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Time to send a whole request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// Webhook deliveries remembered, so that a replayed (signed) delivery does nothing twice.
pub const DELIVERIES_REMEMBERED: usize = 4096;

/// A webhook secret. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// From the secret's bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Whether `header` (`sha256=<64 hex>`) is the HMAC-SHA256 of `body` under `secret`.
/// Constant time in the signature's value.
pub fn verify_github_signature(secret: &Secret, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(sig) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret.0) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Largest Slack interaction body read (Slack's payloads are a few KB).
pub const MAX_SLACK_BODY: usize = 1024 * 1024;

/// Handles Slack's interaction callback: verifies, decides, answers (status, body).
#[async_trait::async_trait]
pub trait InteractionHook: Send + Sync {
    /// One request: Slack's `X-Slack-Request-Timestamp` and `X-Slack-Signature`, the body.
    async fn handle(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, String);
}

/// The Slack route, when Slack is configured.
#[derive(Clone)]
pub struct SlackRoute(pub Arc<dyn InteractionHook>);

impl std::fmt::Debug for SlackRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackRoute")
    }
}

/// What the server needs.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The daemon's shared state.
    pub shared: Arc<Shared>,
    /// The GitHub webhook secret (None: the webhook answers 401 to everything).
    pub webhook_secret: Option<Secret>,
    /// Slack's interaction callback (None: 503).
    pub slack: Option<SlackRoute>,
    /// Webhook deliveries already handled.
    pub deliveries: Arc<Deliveries>,
}

/// The last [`DELIVERIES_REMEMBERED`] webhook delivery ids (`X-GitHub-Delivery`), oldest
/// forgotten first.
#[derive(Debug, Default)]
pub struct Deliveries(
    std::sync::Mutex<(
        std::collections::HashSet<String>,
        std::collections::VecDeque<String>,
    )>,
);

impl Deliveries {
    /// Whether `id` is seen for the first time (and remember it).
    pub fn first_time(&self, id: &str) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, order) = &mut *g;
        if !seen.insert(id.to_string()) {
            return false;
        }
        order.push_back(id.to_string());
        if order.len() > DELIVERIES_REMEMBERED
            && let Some(old) = order.pop_front()
        {
            seen.remove(&old);
        }
        true
    }
}

/// Connections that have not sent a request yet, oldest first: the ones closed to make room.
#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    queue: std::collections::VecDeque<(u64, std::time::Instant, CancellationToken)>,
}

impl Waiting {
    fn add(&mut self) -> (u64, CancellationToken) {
        self.next += 1;
        let t = CancellationToken::new();
        self.queue
            .push_back((self.next, std::time::Instant::now(), t.clone()));
        (self.next, t)
    }
    fn remove(&mut self, id: u64) {
        self.queue.retain(|(i, _, _)| *i != id);
    }
    /// Whether connection `id` is still silent (has sent no request).
    fn contains(&self, id: u64) -> bool {
        self.queue.iter().any(|(i, _, _)| *i == id)
    }
    /// Close the connection that has waited longest, if it has been silent for
    /// [`SILENT_GRACE`]; false when none has.
    fn evict_oldest(&mut self) -> bool {
        match self.queue.front() {
            Some((_, since, _)) if since.elapsed() >= SILENT_GRACE => {
                if let Some((_, _, t)) = self.queue.pop_front() {
                    t.cancel();
                }
                true
            }
            _ => false,
        }
    }
}

/// The queue, whatever happened to a task that held its lock (a panic leaves it sound).
fn waiting(w: &std::sync::Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serve on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: ServerState, shutdown: CancellationToken) {
    let state = Arc::new(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let silent = Arc::new(std::sync::Mutex::new(Waiting::default()));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: close the longest-waiting silent connection and take its slot.
                let freed = if waiting(&silent).evict_oldest() {
                    tokio::time::timeout(
                        Duration::from_millis(200),
                        Arc::clone(&slots).acquire_owned(),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                } else {
                    None
                };
                match freed {
                    Some(p) => {
                        state.shared.metrics.connection("evicted");
                        p
                    }
                    None => {
                        state.shared.metrics.connection("shed");
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        // Keep-alive only while the port is not crowded: a connection that stays open holds
        // its slot between requests.
        let keep_alive = slots.available_permits() >= MAX_CONNECTIONS / 2;
        let (id, evict) = waiting(&silent).add();
        let state = Arc::clone(&state);
        let metrics_state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        let silent = Arc::clone(&silent);
        tokio::spawn(async move {
            let _permit = permit;
            let s = Arc::clone(&silent);
            let svc = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                // It sent a request: no longer a candidate for eviction.
                waiting(&s).remove(id);
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(keep_alive)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::pin!(conn);
            // A connection lives at most CONNECTION_LIFETIME (a keep-alive client cannot hold
            // a slot for ever); on shutdown, the request under way is answered first.
            tokio::select! {
                r = conn.as_mut() => {
                    // Silent until hyper's header timeout: one more way a client that sends
                    // nothing loses its slot, and shows in the metrics.
                    if r.is_err() && waiting(&silent).contains(id) {
                        metrics_state.shared.metrics.connection("timed-out");
                    }
                }
                _ = evict.cancelled() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                }
            }
            waiting(&silent).remove(id);
        });
    }
}

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut b = body.into();
    b.push('\n');
    reply(code, "text/plain; charset=utf-8", b)
}

/// `req` as a GET of the same path (for HEAD).
fn get_of(req: Request<Incoming>) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    parts.method = Method::GET;
    Request::from_parts(parts, body)
}

async fn handle(state: &ServerState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        // Load balancers check with HEAD: the GET answer, without its body.
        (Method::HEAD, "/healthz" | "/readyz") => {
            let (parts, _) = Box::pin(handle(state, get_of(req))).await.into_parts();
            Response::from_parts(parts, Full::new(Bytes::new()))
        }
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (Method::GET, "/readyz") => {
            if state.shared.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ready")
            } else {
                let s = state.shared.status();
                let why = if s.commit.is_none() {
                    match (&s.source.last_fetch_error, &s.validation_error) {
                        (Some(e), _) => format!("no valid revision yet: fetch failed: {e}"),
                        (None, Some(v)) => {
                            format!("no valid revision yet: {} is invalid", v.commit)
                        }
                        (None, None) => "no valid revision yet".to_string(),
                    }
                } else {
                    match (&s.pass.last_error, s.pass.running) {
                        (Some(e), _) => format!("the fleet has not been observed yet: {e}"),
                        (None, true) => "the first pass is observing the fleet".to_string(),
                        (None, false) => "the fleet has not been observed yet".to_string(),
                    }
                };
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"))
            }
        }
        (Method::GET, "/metrics") => reply(
            StatusCode::OK,
            crate::daemon::metrics::CONTENT_TYPE,
            state.shared.metrics.render(),
        ),
        (Method::GET, "/status") => {
            let s = state.shared.status();
            match serde_json::to_vec_pretty(&s) {
                Ok(b) => reply(StatusCode::OK, "application/json", b),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (Method::POST, "/hooks/github") => github(state, req).await,
        (Method::POST, "/hooks/slack") => slack(state, req).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/status") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        (_, "/hooks/github" | "/hooks/slack") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; endpoints: /healthz /readyz /metrics /status POST /hooks/github POST /hooks/slack",
        ),
    }
}

async fn github(state: &ServerState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let m = &state.shared.metrics;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = header("x-hub-signature-256");
    let event = header("x-github-event").unwrap_or_default();
    let delivery = header("x-github-delivery").unwrap_or_default();
    let Some(secret) = &state.webhook_secret else {
        m.webhook("unauthorized");
        return text(
            StatusCode::UNAUTHORIZED,
            "webhook secret not configured: set the variable named by webhook.secret_env (FLEET_GITHUB_WEBHOOK_SECRET)",
        );
    };
    if signature.is_none() {
        m.webhook("unauthorized");
        return text(StatusCode::UNAUTHORIZED, "missing X-Hub-Signature-256");
    }
    // The signature is checked before anything is said about the request, even "ignored".
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            m.webhook("too_large");
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body over 5 MB");
        }
        Err(_) => {
            m.webhook("timeout");
            return text(StatusCode::REQUEST_TIMEOUT, "body not received in time");
        }
    };
    if !verify_github_signature(secret, &body, signature.as_deref()) {
        m.webhook("unauthorized");
        tracing::warn!(delivery = %delivery, "webhook signature mismatch: rejected");
        return text(StatusCode::UNAUTHORIZED, "signature does not match");
    }
    // A signed delivery replayed (by GitHub's redelivery, or by someone who captured it)
    // does nothing a second time.
    if !delivery.is_empty() && !state.deliveries.first_time(&delivery) {
        m.webhook("duplicate");
        return text(
            StatusCode::OK,
            format!("delivery {delivery} was handled already"),
        );
    }
    match event.as_str() {
        "ping" => {
            m.webhook("ping");
            text(StatusCode::OK, "pong")
        }
        "release" => {
            // A release of an upstream (the hook of a mirror or a GitHub App): run the release
            // watch now. Like a push, the payload is only a wake-up call: the watch reads the
            // releases from the API itself.
            let action = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_string))
                .unwrap_or_default();
            if matches!(
                action.as_str(),
                "published" | "released" | "prereleased" | "edited"
            ) {
                m.webhook("release");
                tracing::info!(delivery = %delivery, action = %action, "release webhook: running the release watch now");
                state.shared.release_now.notify_one();
                text(StatusCode::ACCEPTED, "release watch now")
            } else {
                m.webhook("ignored");
                text(
                    StatusCode::ACCEPTED,
                    format!("ignored release action `{action}`"),
                )
            }
        }
        "push" => {
            let git_ref = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("ref").and_then(|r| r.as_str()).map(str::to_string));
            let Some(git_ref) = git_ref else {
                m.webhook("bad_request");
                return text(StatusCode::BAD_REQUEST, "push event without a `ref`");
            };
            let branch = state
                .shared
                .branch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let ours = match &branch {
                Some(b) => git_ref == format!("refs/heads/{b}"),
                None => git_ref.starts_with("refs/heads/"),
            };
            if ours {
                m.webhook("accepted");
                tracing::info!(delivery = %delivery, git_ref = %git_ref, "push webhook: fetching now");
                state.shared.fetch_now.notify_one();
                text(StatusCode::ACCEPTED, "fetching")
            } else {
                m.webhook("ignored");
                text(
                    StatusCode::ACCEPTED,
                    format!("ignored: {git_ref} is not the watched branch"),
                )
            }
        }
        other => {
            m.webhook("ignored");
            text(StatusCode::ACCEPTED, format!("ignored event `{other}`"))
        }
    }
}

async fn slack(state: &ServerState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let m = &state.shared.metrics;
    let Some(route) = &state.slack else {
        m.slack_interaction("not_configured");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Slack is not configured: set the variables named by slack.token_env and slack.signing_secret_env",
        );
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (ts, sig) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    );
    if ts.is_none() || sig.is_none() {
        m.slack_interaction("unauthorized");
        return text(
            StatusCode::UNAUTHORIZED,
            "missing X-Slack-Signature or X-Slack-Request-Timestamp",
        );
    }
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_SLACK_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            m.slack_interaction("too_large");
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MB");
        }
        Err(_) => {
            m.slack_interaction("timeout");
            return text(StatusCode::REQUEST_TIMEOUT, "body not received in time");
        }
    };
    let (code, msg) = route.0.handle(ts.as_deref(), sig.as_deref(), &body).await;
    if msg.is_empty() {
        reply(code, "text/plain; charset=utf-8", Bytes::new())
    } else {
        text(code, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of GitHub's documentation ("Validating webhook deliveries").
    #[test]
    fn githubs_published_test_vector() {
        let secret = Secret::new("It's a Secret to Everybody");
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_github_signature(
            &secret,
            b"Hello, World!",
            Some(good)
        ));
        assert!(!verify_github_signature(
            &secret,
            b"Hello, World?",
            Some(good)
        ));
        assert!(!verify_github_signature(
            &Secret::new("wrong"),
            b"Hello, World!",
            Some(good)
        ));
        let flipped = good.replace("757107", "757108");
        assert!(!verify_github_signature(
            &secret,
            b"Hello, World!",
            Some(&flipped)
        ));
        assert!(!verify_github_signature(&secret, b"Hello, World!", None));
        assert!(!verify_github_signature(
            &secret,
            b"Hello, World!",
            Some(&good[7..])
        ));
        assert!(!verify_github_signature(
            &secret,
            b"Hello, World!",
            Some("sha256=")
        ));
        assert!(!verify_github_signature(
            &secret,
            b"Hello, World!",
            Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d")
        ));
        assert!(!verify_github_signature(
            &secret,
            b"Hello, World!",
            Some(&good[..good.len() - 2])
        ));
        assert!(!format!("{secret:?}").contains("Secret to"));
    }
}
