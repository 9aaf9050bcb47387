//! The Slack bot: a queue of notices and one worker that posts them, in order.
//!
//! - **Never in the way.** [`SlackHandle::notify`] only queues; the executor never waits for
//!   Slack. Slack down or rate-limited holds the queue, not a rollout.
//! - **Retried, not lost.** A `429` is retried after its `Retry-After`, server errors and
//!   transport failures with a backoff (1 s doubling to 5 min), for as long as it takes; the
//!   queue keeps its order, so a thread's parent is always posted before its replies. Only
//!   a permanent API error (`channel_not_found`, `invalid_auth`, `invalid_blocks`…) drops a
//!   message, with an error in the log. The queue holds at most [`QUEUE_LIMIT`] messages;
//!   beyond that the oldest are dropped and counted.
//! - **One thread per rollout.** The approval request (or the first message of a rollout
//!   that needs none) is the parent; the start, each zone, the end and a failure are
//!   replies (a failure also shown in the channel). When the rollout ends the parent is
//!   updated with the outcome, and an approval request's buttons are replaced by who
//!   decided.
//! - **No floods.** An approval request is posted once per (coin, version, commit); an
//!   identical alert (gate failure, invalid commit, refused release tag) is not repeated
//!   within `repeat_window`.

use super::messages::{self, ApprovalKey, Message, Notice};
use crate::github::Pacer;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Most messages waiting at once.
pub const QUEUE_LIMIT: usize = 10_000;

/// A call to Slack that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again (after this long, when Slack said).
    Retry {
        /// Slack's `Retry-After`.
        after: Option<Duration>,
        /// What happened.
        message: String,
    },
    /// Will not work on a retry.
    Permanent(String),
}

/// Where a posted message is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Posted {
    /// Channel id.
    pub channel: String,
    /// Message timestamp (its id).
    pub ts: String,
}

/// The three calls the bot makes. [`MorphismApi`] is Slack's Web API through
/// slack-morphism; tests can count or fail calls behind it.
#[async_trait::async_trait]
pub trait SlackApi: Send + Sync {
    /// chat.postMessage.
    async fn post(
        &self,
        channel: &str,
        thread: Option<&str>,
        broadcast: bool,
        m: &Message,
    ) -> Result<Posted, SendError>;
    /// chat.update.
    async fn update(&self, at: &Posted, m: &Message) -> Result<(), SendError>;
    /// chat.postEphemeral.
    async fn ephemeral(&self, channel: &str, user: &str, text: &str) -> Result<(), SendError>;
}

/// Slack's Web API through slack-morphism's hyper client.
pub struct MorphismApi {
    client: SlackClient<SlackClientHyperHttpsConnector>,
    token: SlackApiToken,
}

impl std::fmt::Debug for MorphismApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MorphismApi(<token redacted>)")
    }
}

/// Slack's API base.
pub const SLACK_API: &str = "https://slack.com/api";

impl MorphismApi {
    /// A client of `api_url` (Slack's, or a test server on loopback) with the bot token.
    pub fn new(api_url: &str, token: &str) -> Result<MorphismApi, String> {
        let api = api_url.trim_end_matches('/');
        crate::net::require_https(api, "the bot token")?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .or_else(|_| {
                // No system roots (a minimal container): only loopback http can work.
                hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
            })
            .map_err(|e| format!("TLS: {e}"))?;
        let connector = builder.https_or_http().enable_http1().build();
        let client = SlackClient::new(
            SlackClientHyperConnector::with_connector(connector).with_slack_api_url(api),
        );
        Ok(MorphismApi {
            client,
            token: SlackApiToken::new(SlackApiTokenValue::new(token.to_string())),
        })
    }
}

fn classify(e: SlackClientError) -> SendError {
    match e {
        SlackClientError::RateLimitError(r) => SendError::Retry {
            after: r.retry_after,
            message: "rate limited (429)".into(),
        },
        SlackClientError::ApiError(a) => {
            let retry = matches!(
                a.code.as_str(),
                "ratelimited"
                    | "internal_error"
                    | "fatal_error"
                    | "service_unavailable"
                    | "request_timeout"
            );
            if retry {
                SendError::Retry {
                    after: None,
                    message: a.code,
                }
            } else {
                SendError::Permanent(a.code)
            }
        }
        SlackClientError::HttpError(h) if h.status_code.is_client_error() => {
            SendError::Permanent(format!("HTTP {}", h.status_code))
        }
        SlackClientError::HttpError(h) => SendError::Retry {
            after: None,
            message: format!("HTTP {}", h.status_code),
        },
        other => SendError::Retry {
            after: None,
            message: other.to_string().lines().next().unwrap_or("").to_string(),
        },
    }
}

#[async_trait::async_trait]
impl SlackApi for MorphismApi {
    async fn post(
        &self,
        channel: &str,
        thread: Option<&str>,
        broadcast: bool,
        m: &Message,
    ) -> Result<Posted, SendError> {
        let session = self.client.open_session(&self.token);
        let mut req = SlackApiChatPostMessageRequest::new(channel.into(), m.content())
            .with_unfurl_links(false)
            .with_unfurl_media(false);
        if let Some(t) = thread {
            req = req.with_thread_ts(t.into());
            if broadcast {
                req = req.with_reply_broadcast(true);
            }
        }
        let r = session.chat_post_message(&req).await.map_err(classify)?;
        Ok(Posted {
            channel: r.channel.to_string(),
            ts: r.ts.to_string(),
        })
    }

    async fn update(&self, at: &Posted, m: &Message) -> Result<(), SendError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiChatUpdateRequest::new(
            at.channel.clone().into(),
            m.content(),
            at.ts.clone().into(),
        );
        session
            .chat_update(&req)
            .await
            .map_err(classify)
            .map(|_| ())
    }

    async fn ephemeral(&self, channel: &str, user: &str, text: &str) -> Result<(), SendError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.into(),
            user.into(),
            SlackMessageContent::new().with_text(text.to_string()),
        );
        session
            .chat_post_ephemeral(&req)
            .await
            .map_err(classify)
            .map(|_| ())
    }
}

/// Counters, for /metrics.
#[derive(Debug, Default)]
pub struct SlackStats {
    /// Messages posted or updated.
    pub sent: AtomicU64,
    /// Attempts that will be retried.
    pub retries: AtomicU64,
    /// Of which 429s.
    pub rate_limited: AtomicU64,
    /// Dropped (permanent error, or the queue overflowed).
    pub dropped: AtomicU64,
    /// Identical alerts not repeated, approval requests not asked twice.
    pub suppressed: AtomicU64,
    /// Waiting now.
    pub queued: AtomicU64,
}

enum Job {
    Notice(Notice),
    Ephemeral {
        channel: String,
        user: String,
        text: String,
    },
}

/// Queues work for the bot. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct SlackHandle {
    tx: mpsc::UnboundedSender<Job>,
    stats: Arc<SlackStats>,
}

impl std::fmt::Debug for SlackHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SlackHandle(queued {})",
            self.stats.queued.load(Ordering::Relaxed)
        )
    }
}

impl SlackHandle {
    /// Queue a notice.
    pub fn notify(&self, n: Notice) {
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Job::Notice(n)).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Queue a message only `user` sees.
    pub fn ephemeral(&self, channel: &str, user: &str, text: &str) {
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        let j = Job::Ephemeral {
            channel: channel.into(),
            user: user.into(),
            text: text.into(),
        };
        if self.tx.send(j).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &SlackStats {
        &self.stats
    }

    /// The counters, shared (they outlive the handle).
    pub fn counters(&self) -> Arc<SlackStats> {
        Arc::clone(&self.stats)
    }
}

/// Where messages go: a channel name or id, read when a message is sent (the reconciler
/// takes it from the revision in force). None: not known yet; messages wait.
pub type ChannelFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Settings.
#[derive(Clone)]
pub struct BotConfig {
    /// Channel (name or id).
    pub channel: ChannelFn,
    /// Identical alerts are not repeated within this.
    pub repeat_window: Duration,
    /// Where the bot remembers its approval requests and open rollout threads across
    /// restarts (None: in memory only). A restarted daemon then neither asks twice for the
    /// same approval nor starts a second thread for a rollout under way.
    pub memory: Option<std::path::PathBuf>,
    /// A label every message carries, in its text and as its first block (a simulated
    /// fleet's messages say so: `Some("simulated fleet")`).
    pub label: Option<String>,
}

impl std::fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotConfig")
            .field("channel", &(self.channel)())
            .field("repeat_window", &self.repeat_window)
            .field("memory", &self.memory)
            .field("label", &self.label)
            .finish()
    }
}

/// A fixed channel.
pub fn channel(name: &str) -> ChannelFn {
    let n = name.to_string();
    Arc::new(move || Some(n.clone()))
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Thread {
    parent: Posted,
    parent_msg: Message,
    /// The rollout it reports: (coin, target, commit).
    #[serde(default)]
    rollout: Option<ApprovalKey>,
}

/// What survives a restart (`BotConfig::memory`).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Memory {
    approvals: Vec<(ApprovalKey, Posted, Message)>,
    threads: Vec<(String, Thread)>,
    /// Incidents' messages, by the incident's key (absent in memories saved before).
    #[serde(default)]
    incidents: Vec<(String, Posted)>,
}

/// Incident messages remembered at most (the oldest are forgotten first).
const REMEMBERED_INCIDENTS: usize = 1_000;

/// Approval requests remembered at most (the oldest are forgotten first).
const REMEMBERED_APPROVALS: usize = 1_000;

/// The worker's state.
struct Worker {
    api: Arc<dyn SlackApi>,
    pacer: Arc<dyn Pacer>,
    cfg: BotConfig,
    stats: Arc<SlackStats>,
    /// Approval requests posted: where, and the message (to update it); oldest first.
    approvals: Vec<(ApprovalKey, Posted, Message)>,
    /// The thread of each coin's rollout in progress.
    threads: HashMap<String, Thread>,
    /// Alert text → when last sent.
    alerts: HashMap<String, i64>,
    /// Incident messages by key, oldest first.
    incidents: Vec<(String, Posted)>,
}

/// Start the bot: returns the handle and the worker's task, which ends once every handle
/// is dropped and the queue is empty.
pub fn start(
    api: Arc<dyn SlackApi>,
    pacer: Arc<dyn Pacer>,
    cfg: BotConfig,
) -> (SlackHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(SlackStats::default());
    let memory: Memory = cfg
        .memory
        .as_ref()
        .and_then(|p| match std::fs::read(p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| tracing::warn!(path = %p.display(), error = %e, "Slack bot memory unreadable: starting afresh"))
                .ok(),
            Err(_) => None,
        })
        .unwrap_or_default();
    let w = Worker {
        api,
        pacer,
        cfg,
        stats: Arc::clone(&stats),
        approvals: memory.approvals,
        threads: memory.threads.into_iter().collect(),
        alerts: HashMap::new(),
        incidents: memory.incidents,
    };
    let task = tokio::spawn(w.run(rx));
    (SlackHandle { tx, stats }, task)
}

impl Worker {
    fn approval(&self, key: &ApprovalKey) -> Option<(Posted, Message)> {
        self.approvals
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, p, m)| (p.clone(), m.clone()))
    }

    fn remember_approval(&mut self, key: ApprovalKey, at: Posted, m: Message) {
        self.approvals.retain(|(k, _, _)| *k != key);
        self.approvals.push((key, at, m));
        let over = self.approvals.len().saturating_sub(REMEMBERED_APPROVALS);
        self.approvals.drain(..over);
        self.save();
    }

    /// Write the memory (atomically: a temporary file renamed over it).
    fn save(&self) {
        let Some(path) = &self.cfg.memory else { return };
        let m = Memory {
            approvals: self.approvals.clone(),
            threads: self
                .threads
                .iter()
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect(),
            incidents: self.incidents.clone(),
        };
        let tmp = path.with_extension("tmp");
        let r = serde_json::to_vec(&m)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the Slack bot's memory");
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut queue: VecDeque<Job> = VecDeque::new();
        loop {
            if queue.is_empty() {
                match rx.recv().await {
                    Some(j) => queue.push_back(j),
                    None => return,
                }
            }
            while let Ok(j) = rx.try_recv() {
                queue.push_back(j);
            }
            while queue.len() > QUEUE_LIMIT {
                queue.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::SeqCst);
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                tracing::error!("Slack queue over {QUEUE_LIMIT} messages: dropped the oldest");
            }
            if let Some(j) = queue.pop_front() {
                self.handle(j).await;
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Run `call` until it succeeds or fails for good.
    async fn with_retry<T, F, Fut>(&self, what: &str, mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SendError>>,
    {
        let mut backoff = Duration::from_secs(1);
        loop {
            match call().await {
                Ok(t) => {
                    self.stats.sent.fetch_add(1, Ordering::SeqCst);
                    return Some(t);
                }
                Err(SendError::Retry { after, message }) => {
                    self.stats.retries.fetch_add(1, Ordering::SeqCst);
                    let wait = match after {
                        Some(a) => {
                            self.stats.rate_limited.fetch_add(1, Ordering::SeqCst);
                            a.max(Duration::from_millis(100))
                        }
                        None => {
                            let b = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(300));
                            b
                        }
                    };
                    tracing::warn!(what, error = %message, retry_in_ms = wait.as_millis() as u64, "Slack call failed; retrying");
                    self.pacer.sleep(wait).await;
                }
                Err(SendError::Permanent(e)) => {
                    self.stats.dropped.fetch_add(1, Ordering::SeqCst);
                    tracing::error!(what, error = %e, "Slack refused the message; dropped (check the channel, the token's scopes, and that the bot is in the channel)");
                    return None;
                }
            }
        }
    }

    /// `m` as sent: with the configured label (labelled only here, so a message kept to be
    /// updated later is labelled once).
    fn labelled(&self, m: &Message) -> Message {
        match &self.cfg.label {
            Some(l) => m.labelled(l),
            None => m.clone(),
        }
    }

    async fn post(&self, thread: Option<&str>, broadcast: bool, m: &Message) -> Option<Posted> {
        let m = &self.labelled(m);
        let api = Arc::clone(&self.api);
        let channel = Arc::clone(&self.cfg.channel);
        self.with_retry("chat.postMessage", || {
            let (api, m) = (Arc::clone(&api), m.clone());
            let ch = channel();
            let thread = thread.map(str::to_string);
            async move {
                let Some(ch) = ch else {
                    return Err(SendError::Retry {
                        after: Some(Duration::from_secs(5)),
                        message: "no Slack channel known yet (slack.channel, or notifications.slack_channel in fleet.yaml)".into(),
                    });
                };
                api.post(&ch, thread.as_deref(), broadcast, &m).await
            }
        })
        .await
    }

    async fn update(&self, at: &Posted, m: &Message) {
        let m = &self.labelled(m);
        let api = Arc::clone(&self.api);
        self.with_retry("chat.update", || {
            let (api, at, m) = (Arc::clone(&api), at.clone(), m.clone());
            async move { api.update(&at, &m).await }
        })
        .await;
    }

    /// Post `m` in the coin's thread if it has one, else as a new message.
    async fn in_thread(&mut self, coin: &str, m: &Message, broadcast: bool) {
        let parent = self.threads.get(coin).map(|t| t.parent.ts.clone());
        match parent {
            Some(ts) => {
                self.post(Some(&ts), broadcast, m).await;
            }
            None => {
                if let Some(p) = self.post(None, false, m).await {
                    self.threads.insert(
                        coin.to_string(),
                        Thread {
                            parent: p,
                            parent_msg: m.clone(),
                            rollout: None,
                        },
                    );
                    self.save();
                }
            }
        }
    }

    /// The rollout ended: add the outcome to its parent message.
    async fn close_thread(&mut self, coin: &str, outcome: &Message) {
        let Some(t) = self.threads.remove(coin) else {
            return;
        };
        self.save();
        let mut m = t.parent_msg.clone();
        if let Some(b) = outcome.blocks.first() {
            m.blocks.retain(|b| !matches!(b, SlackBlock::Actions(_)));
            m.blocks.push(b.clone());
        }
        self.update(&t.parent, &m).await;
    }

    async fn handle(&mut self, j: Job) {
        let n = match j {
            Job::Ephemeral {
                channel,
                user,
                text,
            } => {
                let text = match &self.cfg.label {
                    Some(l) => format!("[{l}] {text}"),
                    None => text,
                };
                let api = Arc::clone(&self.api);
                self.with_retry("chat.postEphemeral", || {
                    let (api, c, u, t) = (
                        Arc::clone(&api),
                        channel.clone(),
                        user.clone(),
                        text.clone(),
                    );
                    async move { api.ephemeral(&c, &u, &t).await }
                })
                .await;
                return;
            }
            Job::Notice(n) => n,
        };
        let now = self.pacer.now_ms();
        let m = messages::render(&n);
        if n.is_alert() {
            let window = self.cfg.repeat_window.as_millis() as i64;
            let key = m.text.clone() + &m.blocks_json().to_string();
            if let Some(last) = self.alerts.get(&key)
                && now - last < window
            {
                self.stats.suppressed.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(text = %m.text, "identical Slack alert suppressed");
                return;
            }
            self.alerts.retain(|_, t| now - *t < window);
            self.alerts.insert(key, now);
        }
        match &n {
            Notice::ApprovalNeeded { key, .. } => {
                if self.approval(key).is_some() {
                    self.stats.suppressed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if let Some(p) = self.post(None, false, &m).await {
                    self.remember_approval(key.clone(), p, m);
                }
            }
            Notice::ApprovalDecided { key, .. } => match self.approval(key) {
                Some((at, req)) => {
                    if let Some(upd) = messages::approval_decided(&req, &n) {
                        self.update(&at, &upd).await;
                        self.remember_approval(key.clone(), at, upd);
                    }
                }
                None => {
                    self.post(None, false, &m).await;
                }
            },
            Notice::RolloutStarted {
                coin, to, commit, ..
            } => {
                let key = ApprovalKey {
                    coin: coin.clone(),
                    version: to.clone().unwrap_or_else(|| "retire".into()),
                    commit: commit.clone(),
                };
                let resumed = self
                    .threads
                    .get(coin)
                    .is_some_and(|t| t.rollout.as_ref() == Some(&key));
                if resumed {
                    // The same rollout again (a restarted daemon, a preempted pass): its
                    // thread goes on.
                } else if let Some((at, req)) = self.approval(&key) {
                    // The approval request is the thread's parent when there was one.
                    self.threads.insert(
                        coin.clone(),
                        Thread {
                            parent: at,
                            parent_msg: req,
                            rollout: None,
                        },
                    );
                } else {
                    self.threads.remove(coin);
                }
                self.in_thread(coin, &m, false).await;
                if let Some(t) = self.threads.get_mut(coin) {
                    t.rollout = Some(key);
                }
                self.save();
            }
            Notice::ZonePassed { coin, .. } => self.in_thread(coin, &m, false).await,
            Notice::RolloutFinished { coin, .. } => {
                self.in_thread(coin, &m, false).await;
                self.close_thread(coin, &m).await;
            }
            Notice::GateFailed { coin, .. } => {
                self.in_thread(coin, &m, true).await;
                self.close_thread(coin, &m).await;
            }
            Notice::Incident {
                key,
                change,
                left_for_person,
                ..
            } => {
                let known = self
                    .incidents
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, p)| p.clone());
                match (known, change) {
                    (Some(at), _) => {
                        self.update(&at, &m).await;
                        // The resolution, and a node left for a person, are said in the
                        // incident's thread too (the latter in the channel as well).
                        if *change == messages::IncidentChange::Resolved || *left_for_person {
                            self.post(Some(&at.ts), *left_for_person, &m).await;
                        }
                        if *change == messages::IncidentChange::Resolved {
                            self.incidents.retain(|(k, _)| k != key);
                            self.save();
                        }
                    }
                    (None, messages::IncidentChange::Resolved) => {
                        self.post(None, false, &m).await;
                    }
                    (None, _) => {
                        if let Some(p) = self.post(None, false, &m).await {
                            self.incidents.push((key.clone(), p));
                            let over = self.incidents.len().saturating_sub(REMEMBERED_INCIDENTS);
                            self.incidents.drain(..over);
                            self.save();
                        }
                    }
                }
            }
            Notice::BumpOpened { .. }
            | Notice::BumpReady { .. }
            | Notice::ReleaseRejected { .. }
            | Notice::DiskGrow { .. }
            | Notice::RolledBack { .. }
            | Notice::RepoInvalid { .. } => {
                self.post(None, false, &m).await;
            }
        }
    }
}
