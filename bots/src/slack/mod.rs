//! Slack: notifications, approval requests and the interaction callback.
//!
//! [`messages`] renders what is said (Block Kit), [`bot`] queues and posts it (chat.postMessage,
//! chat.update, chat.postEphemeral through slack-morphism, retried on 429 and outages),
//! [`signature`] verifies Slack's `v0` request signatures, [`interaction`] reads a button
//! click and checks who clicked.

pub mod bot;
pub mod interaction;
pub mod messages;
pub mod signature;

pub use bot::{BotConfig, ChannelFn, MorphismApi, SlackApi, SlackHandle, SlackStats};
pub use messages::{ApprovalKey, Notice, Verdict};
