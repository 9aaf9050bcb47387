//! The committed JSON Schemas and ERRORS.md are what the code generates and knows.

use fleet_repo_schema::Code;
use fleet_repo_schema::schema::{Kind, schema, schema_text};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn committed_schemas_are_current() {
    for kind in Kind::ALL {
        let path = format!("{ROOT}/examples/fleet/schema/{}", kind.file_name());
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == schema_text(kind),
            "{path} is stale: run `cargo run --bin fleet -- schema --out examples/fleet/schema`"
        );
    }
}

#[test]
fn example_files_point_editors_at_the_schema() {
    let first = |p: &str| std::fs::read_to_string(format!("{ROOT}/examples/fleet/{p}")).unwrap();
    assert!(
        first("fleet.yaml")
            .starts_with("# yaml-language-server: $schema=schema/fleet.schema.json\n")
    );
    for coin in [
        "bitcoin", "ethereum", "iota", "litecoin", "dogecoin", "monero",
    ] {
        assert!(
            first(&format!("coins/{coin}.yaml"))
                .starts_with("# yaml-language-server: $schema=../schema/coin.schema.json\n"),
            "{coin}"
        );
    }
}

#[test]
fn schema_describes_every_field_and_forbids_unknown_ones() {
    fn walk(v: &serde_json::Value, path: &str) {
        if v["type"] == "object" && v.get("properties").is_some() {
            assert_eq!(v["additionalProperties"], false, "{path}");
            for (name, sub) in v["properties"].as_object().unwrap() {
                let p = format!("{path}.{name}");
                assert!(
                    sub["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{p} has no description"
                );
                walk(sub, &p);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, &format!("{path}[]"));
        }
    }
    let coin = schema(Kind::Coin);
    walk(&coin, "coin");
    walk(&schema(Kind::Fleet), "fleet");
    let required: Vec<&str> = coin["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        [
            "coin",
            "version",
            "instance",
            "placement",
            "ports",
            "health"
        ]
    );
    assert_eq!(
        coin["properties"]["version"]["pattern"],
        "^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
    );
    assert_eq!(
        coin["properties"]["rollout"]["properties"]["approval"]["enum"],
        serde_json::json!(["none", "major", "minor", "always"])
    );
}

#[test]
fn errors_md_lists_every_code_with_its_title() {
    let doc = std::fs::read_to_string(format!("{ROOT}/fleet-repo-schema/ERRORS.md")).unwrap();
    for c in Code::ALL {
        let heading = format!("## {} — {}", c.as_str(), c.title());
        assert!(doc.contains(&heading), "ERRORS.md lacks `{heading}`");
    }
    let count = doc.lines().filter(|l| l.starts_with("## ")).count();
    assert_eq!(
        count,
        Code::ALL.len(),
        "ERRORS.md lists codes that don't exist"
    );
}
