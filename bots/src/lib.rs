//! # bots
//!
//! The people side of fleet:
//!
//! - the **release watch** ([`watch`]): new GitHub releases of a coin's upstream become
//!   bump pull requests on the fleet repository, one per coin bump, idempotently, through
//!   [`github`] (octocrab, conditional requests, rate limits), [`release`] (which release to
//!   propose), [`yaml_edit`] (the one-value change that keeps every other byte),
//!   [`pr_body`] (what the reviewer reads) and [`registry`] (the image digest);
//! - the **disk pull request** ([`volume`]): a coin whose data volumes fill gets one pull
//!   request raising `data_volume_gb`, with the node watch's figures;
//! - the **Slack bot** ([`slack`]): rollout reports threaded per rollout, approval requests
//!   with buttons, the signed interaction callback (slack-morphism).
//!
//! Depends on `fleet-repo-schema` only; the reconciler reaches it through [`slack::Notice`],
//! [`slack::SlackHandle`] and [`watch::cycle`].

pub mod github;
pub mod net;
pub mod pr_body;
pub mod registry;
pub mod release;
pub mod slack;
pub mod volume;
pub mod watch;
pub mod yaml_edit;
