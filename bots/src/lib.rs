//! # bots
//!
//! The people side of fleet: the release-watch bot (new GitHub releases of a coin's
//! upstream become bump pull requests on the fleet repository) and the Slack bot (rollout
//! reports, approval requests, signed interaction callbacks).
//!
//! Not built yet: this crate is a placeholder that holds the workspace's shape. Issue 6
//! builds it. It will depend only on `fleet-repo-schema`, and the reconciler will reach
//! it through narrow traits (see ARCHITECTURE.md).
