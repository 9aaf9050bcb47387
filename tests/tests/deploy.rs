//! The `deploy/` files of the reconciler kept in step with the code:
//!
//! - `deploy/iam-policy.json` grants exactly the AWS actions `reconciler/src/provider/aws.rs`
//!   needs: every SDK operation called on its clients (`self.ec2.describe_instances()` →
//!   `ec2:DescribeInstances`) plus the permissions those calls imply (`iam:PassRole` when
//!   RunInstances names an instance profile, `ec2:CreateTags` when a call tags on create).
//!   A new AWS call without a policy change fails, and so does a grant nothing calls.
//! - `deploy/fleet.service` carries the hardening keys and writes nowhere but its state dir.
//! - `deploy/Containerfile`'s final stage runs as a non-root uid.
//!
//! Text checks with std and serde_json only: nothing here needs a build of the binary, an AWS
//! account or a container engine.

use fleet_tests::workspace_root;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn read(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// --- the IAM policy --------------------------------------------------------------------------

/// Where the AWS calls are made; every other source file must leave the SDK alone.
const AWS_SOURCE: &str = "reconciler/src/provider/aws.rs";

/// Methods of an SDK client that are not AWS operations.
const CLIENT_METHODS: &[&str] = &["clone", "config", "as_ref"];

/// Permissions a call needs besides its own action, keyed by a builder method that implies them.
const IMPLIED: &[(&str, &str, &str)] = &[
    (
        ".iam_instance_profile(",
        "iam:PassRole",
        "RunInstances with an instance profile passes its role",
    ),
    (
        ".tag_specifications(",
        "ec2:CreateTags",
        "tagging on create (RunInstances, CreateSnapshot) is authorised as CreateTags",
    ),
];

/// Actions AWS authorises only on `Resource: "*"` (no resource-level permissions).
fn star_only(action: &str) -> bool {
    action.starts_with("ec2:Describe")
        || action == "ssm:GetCommandInvocation"
        || action == "secretsmanager:ListSecrets"
        // CloudWatch's reads name no resource (the Service Authorization Reference lists
        // none for either).
        || action == "cloudwatch:GetMetricData"
        || action == "cloudwatch:ListMetrics"
}

/// The source without `//` comments (whole-line and trailing), so prose never counts as a call.
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| {
            let mut in_str = false;
            let b = l.as_bytes();
            let mut end = b.len();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'\\' if in_str => i += 1,
                    b'"' => in_str = !in_str,
                    b'/' if !in_str && b.get(i + 1) == Some(&b'/') => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            &l[..end]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `describe_volumes_modifications` → `DescribeVolumesModifications`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The IAM prefix of an SDK crate (`aws_sdk_route53` → `route53`): the crate's name but for
/// the few services whose IAM prefix differs.
fn iam_prefix(krate: &str) -> String {
    match krate {
        "cloudwatchlogs" => "logs",
        "elasticloadbalancingv2" => "elasticloadbalancing",
        other => other,
    }
    .to_string()
}

/// The client fields of the provider: field name → IAM prefix (`r53: aws_sdk_route53::Client`).
fn client_fields(src: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in src.lines() {
        let l = line.trim().trim_end_matches(',');
        let Some((field, ty)) = l.split_once(':') else {
            continue;
        };
        let field = field.trim().trim_start_matches("pub ").trim();
        let ty = ty.trim();
        if let Some(krate) = ty
            .strip_prefix("aws_sdk_")
            .and_then(|t| t.strip_suffix("::Client"))
            && !field.is_empty()
            && field.chars().all(is_ident)
        {
            out.insert(field.to_string(), iam_prefix(krate));
        }
    }
    out
}

/// Every operation called on a client field, as `(IAM action, line)`: `.ec2` then, across
/// whitespace and line breaks, `.snake_name(`.
fn sdk_calls(src: &str, fields: &BTreeMap<String, String>) -> Vec<(String, usize)> {
    let mut calls = Vec::new();
    for (field, prefix) in fields {
        let needle = format!(".{field}");
        let mut from = 0;
        while let Some(pos) = src[from..].find(&needle) {
            let start = from + pos;
            let after = start + needle.len();
            from = after;
            if src[after..].chars().next().is_some_and(is_ident) {
                continue; // `.ec2_thing`, another name
            }
            let rest = src[after..].trim_start();
            let Some(rest) = rest.strip_prefix('.') else {
                continue;
            };
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if name.is_empty() || !rest[name.len()..].starts_with('(') {
                continue;
            }
            if CLIENT_METHODS.contains(&name.as_str()) {
                continue;
            }
            let line = src[..start].lines().count();
            calls.push((format!("{prefix}:{}", pascal(&name)), line));
        }
    }
    calls.sort_by_key(|c| c.1);
    calls
}

/// The actions the code needs, each with why.
fn needed_actions() -> BTreeMap<String, String> {
    let src = strip_comments(&read(AWS_SOURCE));
    let fields = client_fields(&src);
    assert!(
        !fields.is_empty(),
        "no `name: aws_sdk_<service>::Client` fields found in {AWS_SOURCE}; update this test to how the provider holds its clients"
    );
    let calls = sdk_calls(&src, &fields);
    // Every request is sent once: as many `.send()` as calls found, or some call was written
    // in a form this scan does not see (a client in a local variable…) and could slip past.
    let sends = src.matches(".send()").count();
    assert_eq!(
        sends,
        calls.len(),
        "{AWS_SOURCE} has {sends} `.send()` but this test recognised {} calls on the clients {:?}: {:#?}\n\
         Call the SDK as `self.<client>.<operation>()` or teach this test the new form.",
        calls.len(),
        fields.keys().collect::<Vec<_>>(),
        calls
    );
    let mut need = BTreeMap::new();
    for (action, line) in calls {
        need.entry(action)
            .or_insert_with(|| format!("called at {AWS_SOURCE}:{line}"));
    }
    for (marker, action, why) in IMPLIED {
        if src.contains(marker) {
            need.entry(action.to_string())
                .or_insert_with(|| format!("{why} (`{marker}` in {AWS_SOURCE})"));
        }
    }
    need
}

fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().expect("a string in a list").to_string())
            .collect(),
        _ => panic!("expected a string or a list of strings, got {v}"),
    }
}

fn policy() -> Value {
    serde_json::from_str(&read("deploy/iam-policy.json")).expect("deploy/iam-policy.json is JSON")
}

fn statements(p: &Value) -> &Vec<Value> {
    p["Statement"].as_array().expect("Statement is a list")
}

/// The actions the policy grants, each with the Sids granting it.
fn granted_actions(p: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in statements(p) {
        let sid = s["Sid"].as_str().unwrap_or("(no Sid)").to_string();
        for a in as_list(&s["Action"]) {
            out.entry(a).or_default().push(sid.clone());
        }
    }
    out
}

fn lines_or_none(lines: &[String]) -> String {
    if lines.is_empty() {
        "  none".into()
    } else {
        lines.join("\n")
    }
}

#[test]
fn iam_policy_grants_exactly_the_calls_fleet_makes() {
    let need = needed_actions();
    let p = policy();
    let granted = granted_actions(&p);
    let missing: Vec<String> = need
        .iter()
        .filter(|(a, _)| !granted.contains_key(*a))
        .map(|(a, why)| format!("  {a}: {why}"))
        .collect();
    let unused: Vec<String> = granted
        .iter()
        .filter(|(a, _)| !need.contains_key(*a))
        .map(|(a, sids)| format!("  {a} (statements {})", sids.join(", ")))
        .collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "deploy/iam-policy.json and {AWS_SOURCE} disagree.\n\
         Called by fleet but not granted (add them, scoped like their neighbours):\n{}\n\
         Granted but never called (remove them):\n{}",
        lines_or_none(&missing),
        lines_or_none(&unused),
    );
}

#[test]
fn iam_policy_is_allow_only_without_wildcards_and_scopes_what_it_can() {
    let p = policy();
    assert_eq!(p["Version"], "2012-10-17");
    let mut sids = BTreeSet::new();
    for s in statements(&p) {
        let sid = s["Sid"].as_str().expect("every statement has a Sid");
        assert!(sids.insert(sid), "Sid {sid} twice");
        assert_eq!(s["Effect"], "Allow", "{sid}");
        for k in ["NotAction", "NotResource", "Principal"] {
            assert!(s.get(k).is_none(), "{sid}: {k} has no place here");
        }
        let actions = as_list(&s["Action"]);
        for a in &actions {
            assert!(!a.contains('*'), "{sid}: wildcard action {a}");
        }
        let resources = as_list(&s["Resource"]);
        if resources.iter().any(|r| r == "*") {
            let scoped: Vec<&String> = actions.iter().filter(|a| !star_only(a)).collect();
            assert!(
                scoped.is_empty(),
                "{sid}: Resource \"*\" for {scoped:?}, which support resource-level permissions"
            );
        } else {
            for r in &resources {
                assert!(r.starts_with("arn:aws:"), "{sid}: {r} is not an ARN");
            }
        }
    }
}

/// `pub const NAME: &str = "value";` in provider/tags.rs.
fn fleet_tag_keys() -> BTreeSet<String> {
    read("reconciler/src/provider/tags.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once("&str = \"")?.1.split_once('"'))
        .map(|(v, _)| v.to_string())
        .collect()
}

#[test]
fn iam_policy_conditions_use_the_tags_fleet_writes() {
    let tags = fleet_tag_keys();
    assert!(tags.contains("fleet:managed"), "tags.rs: {tags:?}");
    let p = policy();
    let mut used = BTreeSet::new();
    for s in statements(&p) {
        let Some(cond) = s.get("Condition").and_then(Value::as_object) else {
            continue;
        };
        for keys in cond.values() {
            for (key, value) in keys.as_object().expect("operator → {key: value}") {
                if let Some(tag) = key
                    .strip_prefix("aws:ResourceTag/")
                    .or_else(|| key.strip_prefix("aws:RequestTag/"))
                {
                    used.insert(tag.to_string());
                } else if key == "aws:TagKeys" {
                    // Patterns (`fleet:*` in a StringNotLike) name no one tag.
                    used.extend(as_list(value).into_iter().filter(|k| !k.contains('*')));
                }
            }
        }
    }
    let unknown: Vec<&String> = used.difference(&tags).collect();
    assert!(
        unknown.is_empty(),
        "the policy's conditions name tags provider/tags.rs does not define: {unknown:?}"
    );
    assert!(used.contains("fleet:managed"));
}

#[test]
fn iam_policy_placeholders_are_documented() {
    let text = read("deploy/iam-policy.json");
    let doc = read("deploy/README.md");
    let mut rest = text.as_str();
    let mut seen = BTreeSet::new();
    while let Some(i) = rest.find("${") {
        let tail = &rest[i + 2..];
        let end = tail.find('}').expect("an unclosed ${");
        seen.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    assert!(seen.contains("ACCOUNT_ID"), "{seen:?}");
    for name in &seen {
        assert!(
            doc.contains(&format!("`${{{name}}}`")),
            "deploy/README.md does not document the placeholder ${{{name}}}"
        );
    }
}

#[test]
fn only_observe_aws_calls_aws() {
    let mut offenders = Vec::new();
    let mut stack = vec![
        workspace_root().join("reconciler/src"),
        workspace_root().join("bots"),
    ];
    let aws = workspace_root().join(AWS_SOURCE);
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p != aws
                && std::fs::read_to_string(&p).is_ok_and(|s| s.contains("aws_sdk_"))
            {
                offenders.push(p.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these files use the AWS SDK, which this test only scans in {AWS_SOURCE}: {offenders:?}; \
         scan them too so deploy/iam-policy.json keeps covering every call"
    );
}

// --- the systemd unit ------------------------------------------------------------------------

/// `[Section]` → key → every assignment in order.
fn unit_file(path: &Path) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not key=value: {line}", path.display()));
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

/// systemd time span in seconds: `900`, `90s`, `15min`, `1h`.
fn seconds(span: &str) -> u64 {
    let digits: String = span.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap_or(0);
    match span[digits.len()..].trim() {
        "" | "s" | "sec" => n,
        "m" | "min" => n * 60,
        "h" | "hr" => n * 3600,
        other => panic!("unexpected time unit {other:?} in {span:?}"),
    }
}

const UNIT: &str = "deploy/fleet.service";
const STATE_DIR: &str = "/var/lib/fleet";

#[test]
fn systemd_unit_is_hardened_and_writes_only_its_state_dir() {
    let unit = unit_file(&workspace_root().join(UNIT));
    let svc = unit.get("Service").expect("[Service]");
    let last = |k: &str| -> &str {
        svc.get(k)
            .and_then(|v| v.last())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{UNIT}: {k}= is missing"))
    };
    let mut wrong = Vec::new();
    for (key, want) in [
        (
            "ExecStart",
            "/usr/local/bin/fleet run --config /etc/fleet/config.yaml",
        ),
        ("EnvironmentFile", "-/etc/fleet/secrets.env"),
        ("Restart", "always"),
        ("RestartSec", "5"),
        ("KillSignal", "SIGTERM"),
        ("StateDirectory", "fleet"),
        ("UMask", "0077"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        match svc.get(key).and_then(|v| v.last()) {
            Some(v) if v == want => {}
            got => wrong.push(format!("{key}={want} (found {got:?})")),
        }
    }
    assert!(wrong.is_empty(), "{UNIT} needs:\n  {}", wrong.join("\n  "));

    // Not root: a dynamic user or a named one.
    let dynamic = svc
        .get("DynamicUser")
        .and_then(|v| v.last())
        .is_some_and(|v| v == "yes");
    if !dynamic {
        let user = last("User");
        assert!(user != "root" && user != "0", "{UNIT}: User={user}");
    }

    // Address families: exactly these, as an allow list.
    let families: BTreeSet<&str> = svc["RestrictAddressFamilies"]
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    assert_eq!(
        families,
        BTreeSet::from(["AF_INET", "AF_INET6", "AF_UNIX"]),
        "{UNIT}: RestrictAddressFamilies"
    );

    // The system call allow list is @system-service (deny lists may follow with `~`).
    let filters = &svc["SystemCallFilter"];
    assert!(
        filters
            .iter()
            .any(|f| !f.starts_with('~') && f.split_whitespace().any(|x| x == "@system-service")),
        "{UNIT}: SystemCallFilter=@system-service is missing: {filters:?}"
    );

    // No capabilities at all: every assignment empty.
    let caps = svc
        .get("CapabilityBoundingSet")
        .expect("CapabilityBoundingSet=");
    assert!(
        caps.iter().all(String::is_empty),
        "{UNIT}: CapabilityBoundingSet must be empty, is {caps:?}"
    );
    if let Some(ambient) = svc.get("AmbientCapabilities") {
        assert!(ambient.iter().all(String::is_empty), "{UNIT}: {ambient:?}");
    }

    // Writable: the state directory and nothing else.
    let mut writable = Vec::new();
    for key in ["ReadWritePaths", "ReadWriteDirectories"] {
        for v in svc.get(key).into_iter().flatten() {
            writable.extend(
                v.split_whitespace()
                    .map(|p| p.trim_start_matches(['-', '+']).trim_end_matches('/')),
            );
        }
    }
    let others: Vec<&&str> = writable.iter().filter(|p| **p != STATE_DIR).collect();
    assert!(
        others.is_empty(),
        "{UNIT}: writable paths other than {STATE_DIR}: {others:?}"
    );

    // Longer than fleet's own bound on a stop (it waits for the step under way that long,
    // then exits as a crash would), so that systemd never SIGKILLs it first.
    let stop = seconds(last("TimeoutStopSec"));
    let grace = reconciler::daemon::SHUTDOWN_GRACE.as_secs();
    assert!(
        stop >= grace + 15,
        "{UNIT}: TimeoutStopSec={stop}s does not leave fleet its {grace} s shutdown grace"
    );

    let u = unit.get("Unit").expect("[Unit]");
    for k in ["StartLimitIntervalSec", "StartLimitBurst"] {
        assert!(u.contains_key(k), "{UNIT}: [Unit] {k}= is missing");
    }
}

// --- the container image ---------------------------------------------------------------------

/// Instructions (keyword upper-cased, arguments) with continuations joined and comments dropped.
fn containerfile(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        let (kw, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        out.push((kw.to_ascii_uppercase(), args.trim().to_string()));
    }
    out
}

#[test]
fn container_image_final_stage_runs_as_a_non_root_uid() {
    let file = "deploy/Containerfile";
    let ins = containerfile(&read(file));
    let last_from = ins
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("a FROM line");
    let last_stage = &ins[last_from..];
    let user = last_stage
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.as_str())
        .unwrap_or_else(|| panic!("{file}: the final stage has no USER line, so it runs as root"));
    let uid = user.split(':').next().unwrap_or("");
    let uid: u32 = uid.parse().unwrap_or_else(|_| {
        panic!("{file}: USER {user}: use a numeric uid (non-root is then checkable)")
    });
    assert_ne!(uid, 0, "{file}: USER {user} is root");
    let has = |kw: &str, arg: &str| last_stage.iter().any(|(k, a)| k == kw && a.contains(arg));
    assert!(has("EXPOSE", "9400"), "{file}: EXPOSE 9400");
    assert!(has("VOLUME", STATE_DIR), "{file}: VOLUME {STATE_DIR}");
    assert!(
        has("ENTRYPOINT", "\"fleet\""),
        "{file}: ENTRYPOINT [\"fleet\"]"
    );

    let ignore = read(".dockerignore");
    let entries: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for e in ["target", "tests/.deps", ".git"] {
        assert!(entries.contains(e), ".dockerignore does not exclude {e}");
    }
}

#[test]
fn iam_policy_lets_fleet_write_every_tag_its_steps_record() {
    use reconciler::provider::{PendingStep, tags};
    // What the crash protocol writes on a managed instance after its launch: the marker of
    // each kind of step, then the tags that record its result.
    let steps = [
        PendingStep::Upgrade { to: "1".into() },
        PendingStep::ChangeType {
            to: "c5.large".into(),
        },
        PendingStep::Reconfigure {
            to: "host=00000000".into(),
            keys: "c12345678".into(),
        },
    ];
    let mut written: BTreeSet<String> = [tags::PENDING.to_string()].into();
    for s in &steps {
        written.extend(s.record().into_iter().map(|(k, _)| k.to_string()));
    }
    let p = policy();
    let allowed: BTreeSet<String> = statements(&p)
        .iter()
        .filter(|s| as_list(&s["Action"]).contains(&"ec2:CreateTags".to_string()))
        .filter(|s| {
            s["Condition"]
                .get("StringEquals")
                .is_some_and(|c| c.get("ec2:CreateAction").is_none())
        })
        .filter_map(|s| s["Condition"].get("ForAllValues:StringEquals"))
        .flat_map(|c| as_list(&c["aws:TagKeys"]))
        .collect();
    let missing: Vec<&String> = written.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "deploy/iam-policy.json does not let fleet write {missing:?} on managed instances (add them to the CreateTags statement's aws:TagKeys)"
    );
}

#[test]
fn iam_policy_keeps_fleet_tags_out_of_coin_tagging() {
    // The statement that lets fleet converge a coin's own tags must not let it (or whoever
    // holds the role) write fleet's record or AWS's reserved keys.
    let p = policy();
    let coin_tags = statements(&p)
        .iter()
        .find(|s| s["Sid"] == "SetCoinTagsOnManagedInstancesAndVolumes")
        .expect("the coin tags statement");
    let denied = as_list(&coin_tags["Condition"]["ForAllValues:StringNotLike"]["aws:TagKeys"]);
    assert_eq!(denied, ["fleet:*", "aws:*"]);
    assert_eq!(
        coin_tags["Condition"]["StringEquals"]["aws:ResourceTag/fleet:managed"],
        "true"
    );
}

/// `fleet adopt`'s own policy grants only the inspection and fleet's identity tags, exactly
/// the tags adoption writes, only with `fleet:managed=true`; its placeholders are documented.
#[test]
fn the_adopt_policy_grants_the_inspection_and_exactly_the_tags_adoption_writes() {
    let text = read("deploy/iam-adopt-policy.json");
    let p: Value = serde_json::from_str(&text).expect("deploy/iam-adopt-policy.json is JSON");
    let actions: BTreeSet<String> = granted_actions(&p).into_keys().collect();
    assert_eq!(
        actions,
        BTreeSet::from(["ec2:CreateTags".to_string(), "ssm:SendCommand".to_string()])
    );
    for s in statements(&p) {
        assert_eq!(s["Effect"], "Allow");
    }
    let tagging = statements(&p)
        .iter()
        .find(|s| as_list(&s["Action"]) == ["ec2:CreateTags"])
        .expect("a CreateTags statement");
    assert_eq!(
        tagging["Condition"]["StringEquals"]["aws:RequestTag/fleet:managed"],
        "true"
    );
    let keys: BTreeSet<String> =
        as_list(&tagging["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"])
            .into_iter()
            .collect();
    // What adoption writes, asked of the code.
    let a = reconciler::adopt::Adoptee {
        instance_id: "i-0123456789abcdef0".into(),
        slot: reconciler::node::NodeKey::parse("bitcoin", "eu-central-1a", 1).unwrap(),
        dns_name: "node1.bitcoin.internal".into(),
        slot_from: reconciler::adopt::SlotFrom::Record,
        volume_id: "vol-0123456789abcdef0".into(),
        root_volume_id: None,
        version: fleet_repo_schema::values::Version::parse("28.1").unwrap(),
        differences: vec![],
        from_secret: 0,
        config: String::new(),
        config_keys: String::new(),
        coin_tags: String::new(),
    };
    let written: BTreeSet<String> = a
        .instance_tags()
        .into_iter()
        .chain(a.volume_tags())
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(keys, written);
    let doc = read("deploy/README.md");
    for name in ["MATCH_TAG", "MATCH_VALUE", "ACCOUNT_ID", "REGION"] {
        assert!(text.contains(&format!("${{{name}}}")), "{name}");
        assert!(
            doc.contains(&format!("`${{{name}}}`")),
            "{name} undocumented"
        );
    }
}
