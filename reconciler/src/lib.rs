//! # reconciler
//!
//! The engine of fleet and its `fleet` command: the command-line interface, the clock, the
//! providers that observe and change the fleet (`observe`: `aws` and `sim`), node health
//! (`health`: probes and the gate), the planner (`plan`), the executor (`apply`) and its
//! journal (`store`); and `fleet run`, the long-running reconciler: the fleet repository
//! (`source`), its configuration (`config`), the loop (`daemon`) and its HTTP server (`server`).

pub mod apply;
pub mod cli;
mod cli_apply;
mod cli_run;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod health;
pub mod observe;
#[cfg(feature = "bots")]
pub mod people;
pub mod plan;
pub mod render;
pub mod server;
pub mod source;
pub mod store;
