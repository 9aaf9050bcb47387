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

/// The words of the `takes effect` column of docs/fleet-repository.md: when a change of a key
/// reaches a running fleet. The page's "How changes take effect" explains each.
const TAKES_EFFECT: [&str; 7] = [
    "reconciler",
    "restart",
    "online",
    "stop-start",
    "replace",
    "count",
    "launch-only",
];

/// The columns of every key table of docs/fleet-repository.md.
const KEY_TABLE_COLUMNS: [&str; 5] = ["key", "type", "default", "takes effect", "meaning"];

/// `node` with its `$ref`s (`#/$defs/…`, `#/definitions/…`) followed.
fn resolved<'s>(
    root: &'s serde_json::Value,
    mut node: &'s serde_json::Value,
) -> &'s serde_json::Value {
    for _ in 0..32 {
        let Some(r) = node.get("$ref").and_then(|r| r.as_str()) else {
            return node;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are followed, found {r}"));
        node = root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {r} points at nothing"));
    }
    panic!("$refs nest deeper than 32 levels (a cycle?)")
}

/// Every key of the schema `node` at `path`, with its description: the key itself when
/// nothing is nested under it (a scalar, a list of scalars, a map of scalars), else the keys
/// nested under it (`instance.type`; a map of objects gives `map.<NAME>.key`, a list of
/// objects `list[].key`).
fn schema_keys(
    root: &serde_json::Value,
    node: &serde_json::Value,
    path: &str,
    depth: usize,
    out: &mut Vec<(String, String)>,
) {
    let mut below = Vec::new();
    nested_keys(root, node, path, depth, &mut below);
    if !below.is_empty() {
        out.extend(below);
    } else if !path.is_empty() {
        let node = resolved(root, node);
        let about = node["description"].as_str().unwrap_or("").to_string();
        out.push((path.to_string(), about));
    }
}

fn nested_keys(
    root: &serde_json::Value,
    node: &serde_json::Value,
    path: &str,
    depth: usize,
    out: &mut Vec<(String, String)>,
) {
    assert!(
        depth < 32,
        "the schema nests deeper than 32 levels at `{path}`"
    );
    let node = resolved(root, node);
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
        for (name, sub) in props {
            schema_keys(root, sub, &join(name), depth + 1, out);
        }
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        nested_keys(root, values, &join("<NAME>"), depth + 1, out);
    }
    if let Some(items) = node.get("items") {
        nested_keys(root, items, &format!("{path}[]"), depth + 1, out);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for sub in node
            .get(combinator)
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            nested_keys(root, sub, path, depth + 1, out);
        }
    }
}

/// A row of a key table of the reference.
struct KeyRow {
    /// The file kind whose section holds it.
    kind: Kind,
    /// The key, without its backticks.
    key: String,
    /// The `takes effect` cell, without backticks.
    takes_effect: String,
    /// 1-based line in the page.
    line: usize,
}

/// The cells of a markdown table line (`|` escaped as `\|` stays in its cell).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The rows of every key table of `doc`, each in the section (`## ` heading naming
/// `fleet.yaml` or `coins/<coin>.yaml`) it sits in; what is malformed goes to `problems`.
fn key_rows(doc: &str, problems: &mut Vec<String>) -> Vec<KeyRow> {
    const PAGE: &str = "docs/fleet-repository.md";
    let mut rows = Vec::new();
    let mut section: Option<Kind> = None;
    // Some(true): in a key table; Some(false): in another table; None: not in a table.
    let mut table: Option<bool> = None;
    let mut header_line = 0;
    for (i, line) in doc.lines().enumerate() {
        let n = i + 1;
        if let Some(heading) = line.strip_prefix("## ") {
            section = match (
                heading.contains("coins/<coin>.yaml"),
                heading.contains("fleet.yaml"),
            ) {
                (true, true) => {
                    problems.push(format!(
                        "{PAGE}:{n}: the heading `{heading}` names both files: name one, so its tables belong to it"
                    ));
                    None
                }
                (true, false) => Some(Kind::Coin),
                (false, true) => Some(Kind::Fleet),
                (false, false) => None,
            };
        }
        if !line.trim_start().starts_with('|') {
            table = None;
            continue;
        }
        let c = cells(line);
        match table {
            None => {
                let is_key_table = c == KEY_TABLE_COLUMNS;
                if !is_key_table && c.first().is_some_and(|h| h == "key") {
                    problems.push(format!(
                        "{PAGE}:{n}: a table of keys has the columns {c:?}; use exactly `{}`",
                        KEY_TABLE_COLUMNS.join(" | ")
                    ));
                }
                if is_key_table && section.is_none() {
                    problems.push(format!(
                        "{PAGE}:{n}: a key table outside the `fleet.yaml` and `coins/<coin>.yaml` sections: move it under the `## ` heading of its file"
                    ));
                }
                table = Some(is_key_table);
                header_line = n;
            }
            Some(false) => {}
            Some(true) if n == header_line + 1 => {} // the |---| line
            Some(true) => {
                let Some(kind) = section else { continue };
                if c.len() != KEY_TABLE_COLUMNS.len() {
                    problems.push(format!(
                        "{PAGE}:{n}: the row has {} cells, not {}: escape a `|` inside a cell as `\\|`",
                        c.len(),
                        KEY_TABLE_COLUMNS.len()
                    ));
                    continue;
                }
                let key = c[0].strip_prefix('`').and_then(|k| k.strip_suffix('`'));
                let Some(key) = key.filter(|k| !k.is_empty() && !k.contains('`')) else {
                    problems.push(format!(
                        "{PAGE}:{n}: the first cell `{}` is not a key in backticks, e.g. `instance.type`",
                        c[0]
                    ));
                    continue;
                };
                rows.push(KeyRow {
                    kind,
                    key: key.to_string(),
                    takes_effect: c[3].trim_matches('`').to_string(),
                    line: n,
                });
            }
        }
    }
    rows
}

/// GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_repository_reference_documents_every_key_of_the_schemas() {
    const PAGE: &str = "docs/fleet-repository.md";
    let doc = std::fs::read_to_string(format!("{ROOT}/{PAGE}")).unwrap();
    let mut problems = Vec::new();
    let rows = key_rows(&doc, &mut problems);
    let section = |kind: Kind| match kind {
        Kind::Fleet => "## `fleet.yaml`",
        Kind::Coin => "## `coins/<coin>.yaml`",
    };
    let keys_of = |kind: Kind| {
        let schema = schema(kind);
        let mut keys = Vec::new();
        schema_keys(&schema, &schema, "", 0, &mut keys);
        keys
    };
    let all: Vec<(Kind, Vec<(String, String)>)> =
        Kind::ALL.iter().map(|&k| (k, keys_of(k))).collect();
    for (kind, keys) in &all {
        assert!(
            keys.len() > 10,
            "found only {} keys in the {} schema: does the walk still follow its shape?",
            keys.len(),
            kind.file_name()
        );
        // (1) Every key of the schema has a row in its file's section.
        for (key, about) in keys {
            if !rows.iter().any(|r| r.kind == *kind && &r.key == key) {
                let elsewhere = rows.iter().find(|r| &r.key == key);
                let hint = match elsewhere {
                    Some(r) => format!(
                        " (line {} has a row for it, but in the other file's section: move it)",
                        r.line
                    ),
                    None => String::new(),
                };
                problems.push(format!(
                    "{PAGE} has no row for `{key}` of {}{hint}: add the row  | `{key}` | <type> | <default> | <takes effect> | <meaning> |  to a table under {} (the schema says: {about})",
                    kind.file_name(),
                    section(*kind)
                ));
            }
        }
    }
    let mut seen: Vec<(Kind, &str, usize)> = Vec::new();
    for r in &rows {
        // (2) No row for a key the schema does not have.
        let keys = &all.iter().find(|(k, _)| *k == r.kind).unwrap().1;
        if !keys.iter().any(|(k, _)| *k == r.key) {
            let other = all
                .iter()
                .find(|(k, keys)| *k != r.kind && keys.iter().any(|(key, _)| *key == r.key));
            let hint = match other {
                Some((k, _)) => format!(
                    "it is a key of {}: move the row under `{}`",
                    k.file_name(),
                    section(*k)
                ),
                None => format!(
                    "remove the row, or correct its dotted path to a key of examples/fleet/schema/{}",
                    r.kind.file_name()
                ),
            };
            problems.push(format!(
                "{PAGE}:{}: `{}` is not a key of the {} schema (stale or misspelt row): {hint}",
                r.line,
                r.key,
                r.kind.file_name()
            ));
        }
        if let Some((_, _, first)) = seen
            .iter()
            .find(|(k, key, _)| *k == r.kind && *key == r.key)
        {
            problems.push(format!(
                "{PAGE}:{}: `{}` already has a row at line {first}: keep one",
                r.line, r.key
            ));
        } else {
            seen.push((r.kind, &r.key, r.line));
        }
        // (3) One word of the vocabulary.
        if !TAKES_EFFECT.contains(&r.takes_effect.as_str()) {
            problems.push(format!(
                "{PAGE}:{}: `{}` takes effect `{}`, which is not one of {}: write exactly one of these words (each is explained under \"How changes take effect\")",
                r.line,
                r.key,
                r.takes_effect,
                TAKES_EFFECT.join(", ")
            ));
        }
    }
    // The error codes the page links ([E303]) are defined and point at ERRORS.md's headings.
    let errors = std::fs::read_to_string(format!("{ROOT}/fleet-repo-schema/ERRORS.md")).unwrap();
    let anchors: Vec<(String, String)> = errors
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| (h.split(' ').next().unwrap().to_string(), github_anchor(h)))
        .collect();
    let mut defined = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        let Some((label, target)) = line.strip_prefix('[').and_then(|l| l.split_once("]: ")) else {
            continue;
        };
        defined.push(label.to_string());
        let want = anchors
            .iter()
            .find(|(code, _)| code == label)
            .map(|(_, a)| format!("../fleet-repo-schema/ERRORS.md#{a}"));
        if want.as_deref() != Some(target) {
            problems.push(format!(
                "{PAGE}:{}: the link [{label}] points at {target}; it should be {}",
                i + 1,
                want.unwrap_or_else(|| format!("removed: ERRORS.md has no code {label}"))
            ));
        }
    }
    for (i, line) in doc.lines().enumerate() {
        for (at, _) in line.match_indices('[') {
            let code: String = line[at + 1..].chars().take(5).collect();
            let is_code = code.len() == 5
                && code.ends_with(']')
                && matches!(code.as_bytes()[0], b'E' | b'W')
                && code[1..4].bytes().all(|b| b.is_ascii_digit());
            if is_code && !defined.iter().any(|d| *d == code[..4]) {
                problems.push(format!(
                    "{PAGE}:{}: [{}] is used but not defined: add `[{0}]: ../fleet-repo-schema/ERRORS.md#<anchor>` at the end of the page",
                    i + 1,
                    &code[..4]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the fleet repository reference is out of step with the schemas:\n  {}",
        problems.join("\n  ")
    );
}
