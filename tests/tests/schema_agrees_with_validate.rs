//! The JSON Schema that editors use agrees with `fleet validate`, checked with a real JSON
//! Schema validator (the `jsonschema` crate) over the example fleet and the corpus:
//!
//! - a file in which fleet finds nothing wrong passes the schema (an editor never shows an
//!   error that fleet would not);
//! - a file with an unknown field, a missing field, a wrong type, or a value outside an
//!   enum fails the schema (an editor catches those before CI does).
//!
//! Rules that need other files (zones against fleet.yaml's subnets, duplicate coins) or the
//! repository (metrics scripts) can't be in a per-file schema and are not compared.

use fleet_repo_schema::schema::{Kind, schema};
use fleet_repo_schema::yaml;
use fleet_tests::workspace_root;
use std::path::Path;

const STRUCTURAL: &[&str] = &["E200", "E201", "E202", "E203"];

fn validators() -> (jsonschema::Validator, jsonschema::Validator) {
    let v = |k| {
        jsonschema::draft202012::new(&schema(k)).expect("the schema is valid JSON Schema 2020-12")
    };
    (v(Kind::Fleet), v(Kind::Coin))
}

/// Files of a repository directory that parse as YAML, with fleet's codes for each.
fn files(repo: &Path) -> Vec<(String, serde_json::Value, Vec<String>)> {
    let tree = fleet_repo_schema::DirTree::new(repo).unwrap();
    let loaded = fleet_repo_schema::load(&tree);
    let mut out = Vec::new();
    for (file, text) in &loaded.sources {
        let Some(root) = yaml::parse(file, text).root else {
            continue;
        };
        let codes = loaded
            .diagnostics
            .iter()
            .filter(|d| &d.file == file)
            .map(|d| d.code.as_str().to_string())
            .collect();
        out.push((file.clone(), root.to_json(), codes));
    }
    out
}

fn check_repo(
    repo: &Path,
    fleet_v: &jsonschema::Validator,
    coin_v: &jsonschema::Validator,
    compared: &mut usize,
) {
    for (file, json, codes) in files(repo) {
        let v = if file == "fleet.yaml" {
            fleet_v
        } else {
            coin_v
        };
        let schema_errors: Vec<String> = v
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        let name = format!("{}/{file}", repo.display());
        if codes.is_empty() {
            assert!(
                schema_errors.is_empty(),
                "{name}: fleet accepts it but the schema rejects it: {schema_errors:?}"
            );
            *compared += 1;
        } else if codes.iter().any(|c| STRUCTURAL.contains(&c.as_str())) {
            assert!(
                !schema_errors.is_empty(),
                "{name}: fleet reports {codes:?} but the schema accepts it"
            );
            *compared += 1;
        }
    }
}

#[test]
fn examples_and_corpus_agree_with_the_schema() {
    let (fleet_v, coin_v) = validators();
    let mut compared = 0;
    check_repo(
        &workspace_root().join("examples/fleet"),
        &fleet_v,
        &coin_v,
        &mut compared,
    );
    let mut dirs: Vec<_> = std::fs::read_dir(workspace_root().join("tests/corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        check_repo(&dir, &fleet_v, &coin_v, &mut compared);
    }
    assert!(compared >= 90, "only {compared} files compared");
}

#[test]
fn schema_rejects_what_the_version_rule_rejects() {
    let (_, coin_v) = validators();
    let root = yaml::parse(
        "c.yaml",
        &std::fs::read_to_string(workspace_root().join("examples/fleet/coins/bitcoin.yaml"))
            .unwrap(),
    )
    .root
    .unwrap();
    let mut json = root.to_json();
    assert!(coin_v.is_valid(&json));
    for bad in ["28.1; reboot", "$(id)", "", "-1"] {
        json["version"] = serde_json::json!(bad);
        assert!(!coin_v.is_valid(&json), "{bad:?}");
    }
}
