//! # fleet-repo-schema
//!
//! The contract of a fleet repository (`fleet.yaml` and `coins/<coin>.yaml`) as Rust types:
//! loading from any [`FileTree`] (a directory, memory, a git commit), every validation rule
//! with a stable code and a file:line:column location, defaults inheritance, the typed
//! [`Desired`] fleet with its node slots, and a JSON Schema for editors.
//!
//! This crate does no network I/O and knows nothing of AWS, GitHub or Slack.
//!
//! ```
//! use fleet_repo_schema::{load, MemTree};
//! let mut repo = MemTree::new();
//! repo.insert("fleet.yaml", "region: eu-central-1\n");
//! let loaded = load(&repo);
//! assert!(loaded.desired.is_none());
//! let codes: Vec<&str> = loaded.diagnostics.iter().map(|d| d.code.as_str()).collect();
//! assert!(codes.contains(&"E201")); // a required field is missing
//! assert!(codes.contains(&"E113")); // and there is no coin
//! ```

pub mod decode;
pub mod desired;
pub mod diag;
pub mod files;
pub mod human;
pub mod load;
pub mod schema;
pub mod semver;
pub mod tree;
pub mod values;
pub mod yaml;

pub use desired::{Coin, Desired, Fleet, HealthSpec, NodeSlot};
pub use diag::{Code, Color, Diagnostic, Severity, render_human};
pub use files::{Approval, CoinFile, FleetFile, OnFailure, Probe};
pub use human::human_ms;
pub use load::{Loaded, load};
pub use tree::{DirTree, FileTree, MemTree, ReadError};
pub use values::Version;
