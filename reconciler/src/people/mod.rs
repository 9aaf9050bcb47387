//! The people side of `fleet run` (and `fleet release-watch`): the glue between the engine
//! and the `bots` crate, which alone talks to GitHub and Slack.
//!
//! - [`slack`]: [`slack::SlackNotifier`] turns engine events into Slack notices (a
//!   [`crate::events::Notifier`], so the executor never waits for Slack: the bot queues), and
//!   [`slack::SlackHook`] is `POST /hooks/slack`: verify Slack's signature, read the click,
//!   check the clicker is an approver, record the decision once in the journal, wake the loop.
//! - [`release_watch`]: the release watch every interval (and on a `release` webhook)
//!   against the revision in force, and its metrics.
//! - [`registry`]: the digest of a new image tag, from ECR through the AWS SDK or from any
//!   other registry through the OCI distribution API.
//! - [`volume_pr`]: the node watch's disk pull requests (a coin's data volumes filling).

pub mod registry;
pub mod release_watch;
pub mod slack;
pub mod volume_pr;

pub use release_watch::{
    WatchCounters, WatchRuntime, release_watch_loop, render_report, watch_runtime,
};
pub use slack::{SlackHook, SlackNotifier, SlackParts, channel_of, notice_of, start_slack};

/// Setting up the bots failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The Slack client could not be made.
    #[error("slack.api_url: {0}")]
    Slack(String),
    /// The GitHub client could not be made.
    #[error("github: {0}")]
    GitHub(String),
    /// The registry client could not be made.
    #[error("registry: {0}")]
    Registry(String),
}

pub(crate) fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
