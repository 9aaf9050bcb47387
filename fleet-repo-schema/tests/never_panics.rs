//! The loader never panics, whatever the input, and what it reports is well-formed.
//!
//! Three generators: arbitrary bytes; arbitrary YAML documents built from the fleet
//! format's own field names and tricky scalars; and the real example files with random
//! YAML-significant edits (the most effective at reaching the parser's corners).
//!
//! Invariants checked on every case, in words:
//! - `load` returns (a panic fails the case);
//! - desired state exists if and only if there is no error;
//! - every diagnostic points at a line that exists in its file (or at 1:1), with a
//!   column at most one past the end of that line, and renders without panicking;
//! - every diagnostic has a help text.
//!
//! Cases per property: 2,000 by default (CI); set PROPTEST_CASES for longer runs.

use fleet_repo_schema::{Color, MemTree, Severity, load, render_human};
use proptest::prelude::*;

const FLEET: &str = include_str!("../../examples/fleet/fleet.yaml");
const BITCOIN: &str = include_str!("../../examples/fleet/coins/bitcoin.yaml");
const IOTA: &str = include_str!("../../examples/fleet/coins/iota.yaml");

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn check(tree: &MemTree) {
    let loaded = load(tree);
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    assert_eq!(
        loaded.desired.is_some(),
        errors == 0,
        "{:?}",
        loaded.diagnostics
    );
    for d in &loaded.diagnostics {
        assert!(d.help.is_some(), "no help: {d:?}");
        let (line, col) = (d.span.start.line, d.span.start.col);
        assert!(line >= 1 && col >= 1, "{d:?}");
        if let Some(src) = loaded.sources.get(&d.file) {
            let lines = fleet_repo_schema::yaml::Lines::new(src);
            if !(line == 1 && col == 1) {
                let text = lines.line(line).unwrap_or_else(|| {
                    panic!(
                        "line {line} not in {} ({} lines): {d:?}",
                        d.file,
                        lines.count()
                    )
                });
                let width = text.chars().count() as u32;
                assert!(
                    col <= width + 1,
                    "column {col} past the end of line {line} ({width}): {d:?}"
                );
            }
            let _ = render_human(d, Some(src), Color::Always);
        }
    }
}

fn tree(fleet: &[u8], coin_path: &str, coin: &[u8]) -> MemTree {
    let mut t = MemTree::new();
    t.insert("fleet.yaml", fleet).insert(coin_path, coin);
    t.insert("metrics/bitcoin.sh", "#!/bin/sh\n");
    t
}

/// Field names of the format plus near misses, for keys.
const KEYS: &[&str] = &[
    "coin",
    "version",
    "image",
    "repository",
    "digest",
    "upstream",
    "github",
    "tag_pattern",
    "prereleases",
    "min_release_age",
    "instance",
    "type",
    "root_volume_gb",
    "data_volume_gb",
    "placement",
    "zones",
    "nodes_per_zone",
    "ports",
    "rpc",
    "p2p",
    "health",
    "probe",
    "rpc_port",
    "max_lag_blocks",
    "stall_timeout",
    "sync_timeout",
    "http",
    "path",
    "height_pointer",
    "rollout",
    "max_unavailable",
    "bake",
    "approval",
    "snapshots",
    "secrets",
    "host_config",
    "container_config",
    "custom_metrics",
    "tags",
    "verison",
    "<<",
    "",
    "RPC_PASSWORD",
    "fleet:x",
];

/// Scalars that sit on type and rule boundaries.
const SCALARS: &[&str] = &[
    "bitcoin",
    "0.21.4",
    "22.0",
    "1",
    "0",
    "-1",
    "65536",
    "99999999999999999999999999999999999999999",
    "0x10",
    "0o17",
    "1e3",
    ".inf",
    "~",
    "null",
    "true",
    "yes",
    "10m",
    "1h30m",
    "30 minutes",
    "''",
    "\"a\\nb\"",
    "'it''s'",
    "eu-central-1a",
    "eu-west-1a",
    "c5.large",
    "sha256:abc",
    "'^v(?P<version>\\d+)$'",
    "'^v('",
    "$(reboot)",
    "\"; rm -rf /\"",
    "U012ABCDEF",
    "none",
    "major",
    "http",
    "|\n  a\n  b",
    "é",
    "AKIAIOSFODNN7EXAMPLE",
    "metrics/bitcoin.sh",
    "../x",
];

#[derive(Debug, Clone)]
enum Doc {
    Scalar(usize),
    Seq(Vec<Doc>),
    Map(Vec<(usize, Doc)>),
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = (0..SCALARS.len()).prop_map(Doc::Scalar);
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Doc::Seq),
            prop::collection::vec((0..KEYS.len(), inner), 0..8).prop_map(Doc::Map),
        ]
    })
}

fn render(d: &Doc, indent: usize, flow: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    match d {
        Doc::Scalar(i) => out.push_str(SCALARS[*i]),
        Doc::Seq(items) if flow || items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, indent, true, out);
            }
            out.push(']');
        }
        Doc::Map(entries) if flow || entries.is_empty() => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(KEYS[*k]);
                out.push_str(": ");
                render(v, indent, true, out);
            }
            out.push('}');
        }
        Doc::Seq(items) => {
            for item in items {
                out.push('\n');
                out.push_str(&pad);
                out.push_str("- ");
                render(item, indent + 2, false, out);
            }
        }
        Doc::Map(entries) => {
            for (k, v) in entries {
                out.push('\n');
                out.push_str(&pad);
                out.push_str(KEYS[*k]);
                out.push(':');
                out.push(' ');
                render(v, indent + 2, false, out);
            }
        }
    }
}

/// YAML-significant characters and fragments for edits.
const EDITS: &[&str] = &[
    ":", "-", "- ", "[", "]", "{", "}", ",", "\t", "\n", "\n  ", "'", "\"", "&a ", "*a", "!!str ",
    "!x ", "#", "|", ">", " ", "%", "@", "?", "---\n", "...", "\u{0}", "\u{feff}", "\r", "é",
    "<<: ", "~", "0", "9", "a",
];

fn mutate(base: &str, edits: &[(usize, usize, usize)]) -> Vec<u8> {
    let mut bytes = base.as_bytes().to_vec();
    for &(pos, op, frag) in edits {
        let pos = pos % (bytes.len() + 1);
        let frag = EDITS[frag % EDITS.len()].as_bytes();
        match op % 3 {
            0 => {
                bytes.splice(pos..pos, frag.iter().copied());
            }
            1 => {
                let end = (pos + 1 + frag.len() % 4).min(bytes.len());
                bytes.drain(pos..end);
            }
            _ => {
                let end = (pos + frag.len()).min(bytes.len());
                bytes.splice(pos..end, frag.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(coin in prop::collection::vec(any::<u8>(), 0..2048),
                       fleet in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&tree(FLEET.as_bytes(), "coins/x.yaml", &coin));
        check(&tree(&fleet, "coins/x.yaml", &coin));
    }

    #[test]
    fn arbitrary_yaml(d in doc(), flow in any::<bool>()) {
        let mut text = String::new();
        render(&d, 0, flow, &mut text);
        check(&tree(FLEET.as_bytes(), "coins/bitcoin.yaml", text.as_bytes()));
        check(&tree(text.as_bytes(), "coins/bitcoin.yaml", BITCOIN.as_bytes()));
    }

    #[test]
    fn mutated_example_files(edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<usize>()), 1..6),
                             which in 0..3usize) {
        match which {
            0 => check(&tree(FLEET.as_bytes(), "coins/bitcoin.yaml", &mutate(BITCOIN, &edits))),
            1 => check(&tree(FLEET.as_bytes(), "coins/iota.yaml", &mutate(IOTA, &edits))),
            _ => check(&tree(&mutate(FLEET, &edits), "coins/bitcoin.yaml", BITCOIN.as_bytes())),
        }
    }
}

#[test]
fn the_unmutated_examples_are_valid() {
    // Without this, the mutation test could pass on inputs that never got far.
    let loaded = load(&tree(
        FLEET.as_bytes(),
        "coins/bitcoin.yaml",
        BITCOIN.as_bytes(),
    ));
    assert!(loaded.desired.is_some(), "{:?}", loaded.diagnostics);
}
