//! Every setting of the fleet repository either converges on running nodes or is documented
//! as not doing so. The reference, `docs/fleet-repository.md`, says for each key how a change
//! takes effect (its `takes effect` column); this test changes each key of the example fleet
//! in turn, on a simulated fleet running it, and checks that `fleet plan` plans what the
//! reference promises:
//!
//! - `restart`: a restart of the coin's nodes (an upgrade, or a reconfigure with a restart);
//! - `online`: a step that takes no node down (grow a volume, rewrite metrics scripts, a
//!   record);
//! - `stop-start`: a change of instance type;
//! - `count`: nodes launched or retired;
//! - `launch-only` and `reconciler`: no step for the running nodes.
//!
//! A key of the reference without a change here fails the test: a new setting cannot be
//! silently ignored by the planner without the reference saying so.

use fleet_repo_schema::tree::FileTree;
use fleet_repo_schema::{MemTree, load};
use fleet_tests::workspace_root;
use fleet_tests::world::example_tree;
use reconciler::clock::{Clock, ManualClock};
use reconciler::plan::{Action, Plan, plan};
use reconciler::provider::sim::{SimConfig, SimProvider};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// (file, dotted key) → how a change takes effect, from the reference's tables.
fn reference() -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(workspace_root().join("docs/fleet-repository.md"))
        .expect("docs/fleet-repository.md");
    let mut file = String::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("## ") {
            if line.contains("fleet.yaml") {
                file = "fleet.yaml".into();
            } else if line.contains("coins/") {
                file = "coins/bitcoin.yaml".into();
            } else {
                file.clear();
            }
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        if file.is_empty() || cells.len() < 5 || !cells[0].starts_with("| `") {
            continue;
        }
        let key = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_string();
        let effect = cells[3].trim_matches('`').to_string();
        out.insert((file.clone(), key), effect);
    }
    out
}

/// The change this test makes to each key (a YAML value for it), or why it makes none.
fn change(file: &str, key: &str) -> Result<&'static str, &'static str> {
    Ok(match (file, key) {
        ("coins/bitcoin.yaml", k) => match k {
            "coin" => {
                return Err(
                    "a renamed coin is a new coin: the old one's retirement is `cli_apply::a_vanished_coin_is_retired_only_when_the_repository_says_so`",
                );
            }
            "version" => "\"28.2\"",
            "image.repository" => {
                "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin-core"
            }
            "image.digest" => {
                "sha256:1111111111111111111111111111111111111111111111111111111111111111"
            }
            "instance.type" => "c5.2xlarge",
            "instance.root_volume_gb" => "32",
            "instance.data_volume_gb" => "1200",
            "placement.zones" => "[eu-central-1a, eu-central-1b]",
            "placement.nodes_per_zone" => "2",
            "ports.rpc" => "[8332, 18332]",
            "ports.p2p" => "[8333, 18333]",
            "secrets" => "nodes/bitcoin/rpc-2",
            "host_config" => "{ DATA_VOLUME: /node/chain }",
            "container_config" => {
                "{ RPC_PORT: \"8332\", PORT: \"8333\", DBCACHE_MB: \"8000\", TXINDEX: \"1\" }"
            }
            "custom_metrics" => "{ block_height: metrics/bitcoin.sh, peers: metrics/litecoin.sh }",
            "tags" => "{ Component: nodes/bitcoin, CostCenter: trading }",
            "snapshots.restore_new_nodes" => "false",
            "snapshots.before_upgrade" => "false",
            "snapshots.every" => "24h",
            "snapshots.keep" => "3",
            "snapshots.max_age" => "3d",
            "snapshots.stop_daemon" => {
                return Err(
                    "how the node watch takes its scheduled snapshots, no step of the plan: `node_watch::a_consistent_snapshot_stops_the_daemon_only_when_the_coin_can_spare_a_node`",
                );
            }
            "upstream.github" => "bitcoin-core/bitcoin",
            "upstream.tag_pattern" => "'^v(?P<version>\\d+\\.\\d+)$'",
            "upstream.prereleases" => "true",
            "upstream.min_release_age" => "5d",
            "health.probe" => "none",
            "health.rpc_port" => {
                return Err(
                    "the example has one rpc port; `health.probe` covers the probe settings",
                );
            }
            "health.max_lag_blocks" => "5",
            "health.stall_timeout" => "2h",
            "health.sync_timeout" => "24h",
            "health.full_sync_estimate" => "5d",
            "health.daemon_version" => "false",
            "health.watch_interval" => "30s",
            "health.alert_after" => "10m",
            "health.min_synced" => "2",
            k if k.starts_with("deadline.") => {
                return Err(
                    "one key of a deadline alone is not a valid deadline; a deadline plans no step, it is a flag of the plan and an incident of the watch (`node_watch::a_deadline_escalates_at_14_7_and_1_days_and_when_due_then_resolves_once_upgraded`)",
                );
            }
            k if k.starts_with("disk.") => {
                return Err(
                    "a disk threshold plans no step: the node watch judges it against the agents' figures (`disk_watch::a_filling_coin_gets_one_pull_request_with_the_size_and_its_figures`, and `disk_watch::auto_grow_grows_every_volume_once_journals_it_and_the_plan_keeps_the_size` for the plan's part)",
                );
            }
            "heal.restart_after" => "1h",
            "heal.max_per_day" => "5",
            "heal.replace_after" => {
                return Err(
                    "judged by the node watch against EC2's status checks, not the plan: `node_watch::an_instance_failing_its_status_checks_is_replaced_after_replace_after_through_the_plan` and `executor::a_node_whose_instance_fails_its_status_checks_is_replaced_when_the_watch_asks`",
                );
            }
            k if k.starts_with("health.http.") => {
                return Err("only with `probe: http`, which the example's bitcoin does not use");
            }
            "rollout.max_unavailable" => "2",
            "rollout.bake" => "1h",
            "rollout.approval" => "none",
            "rollout.on_failure" => "hold",
            "logging.driver" => "awslogs",
            "logging.options" => {
                return Err(
                    "the example's bitcoin sets no logging, and options need a driver: fleet.yaml's `logging.options` covers them",
                );
            }
            _ => return Err("no change written for this key"),
        },
        ("fleet.yaml", k) => match k {
            "region" => {
                return Err(
                    "another region is another fleet: every zone and subnet changes with it",
                );
            }
            "internal_domain" => "nodes.example.com",
            "hosted_zone_id" => "Z9999999999ABCDEFGHIJ",
            "node_ami" => "ami-0fedcba9876543210",
            "instance_profile" => "fleet-node-2",
            "image_registry" => {
                return Err(
                    "every example coin names its image.repository; `image.repository` covers it",
                );
            }
            "network.vpc_id" => "vpc-0fffffffffffffff1",
            "network.subnets" => {
                "{ eu-central-1a: subnet-0aaaaaaaaaaaaaaa9, eu-central-1b: subnet-0bbbbbbbbbbbbbbb9, eu-central-1c: subnet-0ccccccccccccccc9 }"
            }
            "network.security_groups" => "[sg-0fedcba9876543210]",
            "network.rpc_from" => "[10.20.0.0/16, 192.168.0.0/24]",
            k if k.starts_with("defaults.") => {
                return Err("a default: the coin's own key covers what it does");
            }
            "notifications.slack_channel" => "\"#nodes\"",
            "approvers" => "[U012ABCDEF]",
            "retire" => "[bitcoin]",
            "limits.max_retire_percent" => "30",
            "logging.driver" => "json-file",
            "logging.options" => "{ max-size: 100m }",
            _ => return Err("no change written for this key"),
        },
        _ => return Err("not a file of the example"),
    })
}

/// `text` (a YAML mapping) with `key` (dotted) set to `value`.
fn with_key(text: &str, key: &str, value: &str) -> String {
    let mut doc: Value = serde_yaml::from_str(text).unwrap();
    let parts: Vec<&str> = key.split('.').collect();
    let mut at = &mut doc;
    for p in &parts[..parts.len() - 1] {
        let m = at.as_mapping_mut().unwrap();
        at = m
            .entry(Value::String(p.to_string()))
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
    let new: Value = serde_yaml::from_str(value).unwrap();
    at.as_mapping_mut()
        .unwrap()
        .insert(Value::String(parts[parts.len() - 1].to_string()), new);
    serde_yaml::to_string(&doc).unwrap()
}

fn read(tree: &MemTree, path: &str) -> String {
    String::from_utf8(tree.read(path, 1 << 20).unwrap()).unwrap()
}

/// The plan for the example fleet with one key changed, against a fleet running the example.
fn plan_with(file: &str, key: &str, value: &str) -> Plan {
    let tree = example_tree();
    let base = load(&tree).desired.expect("the example is valid");
    let mut changed = tree.clone();
    changed.insert(file, with_key(&read(&tree, file), key, value));
    let loaded = load(&changed);
    let desired = loaded.desired.unwrap_or_else(|| {
        panic!(
            "{file} `{key}: {value}` is invalid: {:#?}",
            loaded.diagnostics
        )
    });
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let sim = SimProvider::new(clock.clone(), SimConfig::default());
    sim.seed(&base, &BTreeMap::new()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let observed = rt.block_on(fleet_tests::observe(&sim, &desired));
    plan(&desired, &observed, clock.now_ms())
}

fn steps(p: &Plan) -> Vec<&Action> {
    p.coins
        .iter()
        .flat_map(|c| &c.waves)
        .flat_map(|w| &w.steps)
        .map(|s| &s.action)
        .collect()
}

#[test]
fn every_setting_converges_as_the_reference_says() {
    let reference = reference();
    assert!(
        reference.len() > 40,
        "the reference's tables: {} rows",
        reference.len()
    );
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for ((file, key), effect) in &reference {
        let value = match change(file, key) {
            Ok(v) => v,
            Err("no change written for this key") => {
                missing.push(format!("{file} `{key}` ({effect})"));
                continue;
            }
            Err(_) => continue,
        };
        let p = plan_with(file, key, value);
        let s = steps(&p);
        let holds = match effect.as_str() {
            "restart" => s.iter().any(|a| {
                matches!(
                    a,
                    Action::Upgrade { .. } | Action::Reconfigure { restart: true, .. }
                )
            }),
            "online" => !s.is_empty() && s.iter().all(|a| !a.disruptive()),
            "stop-start" => s.iter().any(|a| matches!(a, Action::ChangeType { .. })),
            // A replacement and, after its gate, its hand-over.
            "replace" => {
                s.iter().any(|a| matches!(a, Action::Replace { .. }))
                    && s.iter()
                        .all(|a| matches!(a, Action::Replace { .. } | Action::HandOver { .. }))
            }
            "count" => s
                .iter()
                .any(|a| matches!(a, Action::Launch { .. } | Action::Retire { .. })),
            "launch-only" | "reconciler" => s.is_empty(),
            other => panic!("{key}: unknown effect {other}"),
        };
        checked += 1;
        if !holds {
            wrong.push(format!(
                "{file} `{key}: {value}` is documented as `{effect}`, yet the plan has: {:?}",
                s.iter().map(|a| a.to_string()).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "keys of docs/fleet-repository.md this test does not change (add a change in `change`):\n{}",
        missing.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "the reference and the planner disagree:\n{}",
        wrong.join("\n")
    );
    assert!(checked > 30, "{checked} keys checked");
}

/// Every node of the example fleet carries its per-setting record (`fleet:config-keys` fits in
/// a tag), so a plan names the settings that differ rather than only their parts.
#[test]
fn the_example_nodes_record_their_settings_key_by_key() {
    let d = load(&example_tree()).desired.expect("the example is valid");
    for coin in d.coins.values() {
        let slot = &coin.nodes[0];
        let files = reconciler::node_config::NodeFiles::of(coin, slot).unwrap();
        let tag = files.key_print().to_tag();
        assert!(
            !tag.is_empty(),
            "{}: {} settings do not fit in a tag",
            coin.name,
            files.settings().len()
        );
    }
}
