//! # reconciler
//!
//! The engine of fleet and its `fleet` command. Today it holds the command-line interface
//! (`fleet validate`, `fleet schema`, `fleet completions`); the git source, observers,
//! planner, executor, health probes, store and HTTP server join it as their issues land
//! (see ARCHITECTURE.md).

pub mod cli;
