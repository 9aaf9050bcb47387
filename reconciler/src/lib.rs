//! # reconciler
//!
//! The engine of fleet and its `fleet` command. ARCHITECTURE.md has the map; in short:
//!
//! - the repository: `source` (git or a directory) and `config` (`fleet run`'s settings);
//! - the world: `provider` (the `Provider` trait, `aws` and `sim`), `health` (probes, the one
//!   rating of "in sync", the gate), `node` (what names a node), `clock`;
//! - deciding: `plan` (pure: sorting an observation into slots, then the waves);
//! - doing: `apply` (the executor), `store` (its journal), `events` (what it reports);
//! - between rollouts: `care` (incidents and healing, pure; the node watch runs it);
//! - running: `daemon` (`fleet run`'s jobs), `server` (its HTTP endpoints), `people` (Slack and
//!   the release watch, feature `bots`);
//! - taking over nodes made outside fleet: `adopt` (`fleet adopt`);
//! - the command line: `cli`, `cli_apply`, `cli_adopt`, `cli_run`, `render`, `demo`.

pub mod adopt;
pub mod apply;
pub mod care;
pub mod cli;
mod cli_adopt;
mod cli_apply;
#[cfg(feature = "bots")]
mod cli_release_watch;
mod cli_run;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod health;
pub mod network;
pub mod node;
pub mod node_config;
#[cfg(feature = "bots")]
pub mod people;
pub mod plan;
pub mod provider;
pub mod render;
pub mod server;
pub mod signers;
pub mod source;
pub mod store;
