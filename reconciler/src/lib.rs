//! # reconciler
//!
//! The engine of fleet and its `fleet` command: the command-line interface, the clock, the
//! providers that observe and change the fleet (`observe`: `aws` and `sim`) and node health.
//! The git source, planner, executor, probes, store and HTTP server join it as their issues
//! land (see ARCHITECTURE.md).

pub mod cli;
pub mod clock;
pub mod health;
pub mod observe;
