//! # reconciler
//!
//! The engine of fleet and its `fleet` command: the command-line interface, the clock, the
//! providers that observe and change the fleet (`observe`: `aws` and `sim`), node health
//! (`health`: probes and the gate), the planner (`plan`), the executor (`apply`) and its
//! journal (`store`). The git source and HTTP server join it with issue 5 (see ARCHITECTURE.md).

pub mod apply;
pub mod cli;
mod cli_apply;
pub mod clock;
pub mod demo;
pub mod health;
pub mod observe;
pub mod plan;
pub mod render;
pub mod store;
