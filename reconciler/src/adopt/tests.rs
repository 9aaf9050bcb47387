//! Adoption's rules on plain values: a small fleet written inline, candidates as a provider
//! reports them, node answers as the inspection script prints them.

use super::inspect::value_hash;
use super::*;
use fleet_repo_schema::{MemTree, load};

const FLEET: &str = "region: eu-central-1
internal_domain: internal
hosted_zone_id: Z0123456789ABCDEFGHIJ
network:
  vpc_id: vpc-0a1b2c3d4e5f60718
  subnets:
    eu-central-1a: subnet-0aaaaaaaaaaaaaaa1
    eu-central-1b: subnet-0bbbbbbbbbbbbbbb2
  security_groups: [sg-0123456789abcdef0]
node_ami: ami-0123456789abcdef0
instance_profile: fleet-node
image_registry: 123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons
approvers: [U012ABCDEF]
";

/// bitcoin: one node in each of two zones; litecoin: one in the first.
fn desired() -> Desired {
    let mut t = MemTree::new();
    t.insert("fleet.yaml", FLEET);
    t.insert(
        "coins/bitcoin.yaml",
        "coin: bitcoin
version: \"0.20.0\"
instance: { type: c5.large, data_volume_gb: 500 }
placement: { zones: [eu-central-1a, eu-central-1b], nodes_per_zone: 1 }
ports: { rpc: [5000], p2p: [5001] }
health: { probe: bitcoin }
host_config: { DATA_VOLUME: /node/data }
container_config: { RPC_PORT: \"5000\", PORT: \"5001\" }
",
    );
    t.insert(
        "coins/litecoin.yaml",
        "coin: litecoin
version: \"0.21.3\"
instance: { type: c5.large, data_volume_gb: 200 }
placement: { zones: [eu-central-1a], nodes_per_zone: 1 }
ports: { rpc: [9332], p2p: [9333] }
health: { probe: bitcoin }
",
    );
    let l = load(&t);
    l.desired.unwrap_or_else(|| panic!("{:#?}", l.diagnostics))
}

fn candidate(id: &str, coin: &str, zone: &str, ip: &str, devices: &[&str]) -> Candidate {
    let tags = BTreeMap::from([("Component".to_string(), format!("nodes/{coin}"))]);
    Candidate {
        instance: ObservedInstance::new(
            id.into(),
            tags,
            InstanceState::Running,
            "c5.large".into(),
            Some(ip.into()),
            None,
        ),
        zone: zone.into(),
        volumes: devices
            .iter()
            .enumerate()
            .map(|(n, d)| AttachedVolume {
                device: d.to_string(),
                volume: ObservedVolume {
                    volume_id: format!("vol-{id}-{n}"),
                    size_gb: 500,
                    snapshot_id: None,
                },
            })
            .collect(),
    }
}

/// What the inspection prints on a node the operators' module set up for `coin`.
fn answer(coin: &str, version: &str, image: &str, container: &[(&str, &str)]) -> String {
    let mut s = format!("unit node@{version}.service\nrunning {coin}-node\n");
    for (k, v) in [
        ("IMAGE", image),
        ("COIN", coin),
        ("PORTS", "5000-5001:5000-5001"),
        ("DATA_VOLUME", "/node/data"),
    ] {
        s.push_str(&format!("host {k} {}\n", value_hash(v)));
    }
    for (k, v) in container {
        s.push_str(&format!("container {k} {}\n", value_hash(v)));
    }
    s
}

const BTC_IMAGE: &str = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin";
const BTC_ENV: &[(&str, &str)] = &[("RPC_PORT", "5000"), ("PORT", "5001")];

fn record(name: &str, ip: &str) -> DnsRecord {
    DnsRecord {
        name: name.into(),
        values: vec![ip.into()],
        ttl: 300,
    }
}

fn run(
    cands: Vec<Candidate>,
    answers: &[(&str, Result<String, String>)],
    dns: &[DnsRecord],
    taken: &[NodeKey],
) -> Adoption {
    let d = desired();
    let m = Matcher::parse(Matcher::DEFAULT).unwrap();
    let ips: BTreeMap<String, String> = cands
        .iter()
        .map(|c| {
            (
                c.instance.instance_id.clone(),
                c.instance.private_ip.clone().unwrap_or_default(),
            )
        })
        .collect();
    let (ok, mut left) = screen(&d, &m, cands);
    let held: BTreeSet<String> = left.iter().map(|l| ips[&l.instance_id].clone()).collect();
    let reports: BTreeMap<String, Result<String, String>> = answers
        .iter()
        .map(|(id, a)| (id.to_string(), a.clone()))
        .collect();
    let mut a = assign(
        &d,
        ok,
        &reports,
        dns,
        &taken.iter().cloned().collect(),
        &held,
    );
    left.append(&mut a.left_alone);
    left.sort_by(|x, y| x.instance_id.cmp(&y.instance_id));
    a.left_alone = left;
    a
}

#[test]
fn matchers_parse_and_match_like_ec2_filters() {
    let m = Matcher::parse("Name=node*.{coin}.internal").unwrap();
    let coins = ["bitcoin", "litecoin"];
    assert_eq!(
        m.coins_of("node2.bitcoin.internal", coins.into_iter()),
        ["bitcoin"]
    );
    assert!(
        m.coins_of("node2.bitcoin.other", coins.into_iter())
            .is_empty()
    );
    let loose = Matcher::parse("Component=*{coin}").unwrap();
    assert_eq!(
        loose.coins_of("nodes/litecoin", coins.into_iter()),
        ["litecoin"]
    );
    for bad in [
        "Component",
        "=x{coin}",
        "fleet:coin={coin}",
        "Component=nodes",
        "K={coin}{coin}",
    ] {
        assert!(Matcher::parse(bad).is_err(), "{bad}");
    }
    assert!(glob("a*b?c", "axxxbyc") && !glob("a*b?c", "axxxbc") && glob("*", ""));
}

#[test]
fn a_node_made_by_the_module_is_adopted_into_the_slot_its_record_names() {
    let a = run(
        vec![
            candidate("i-b", "bitcoin", "eu-central-1b", "10.0.1.5", &["/dev/sdf"]),
            candidate("i-a", "bitcoin", "eu-central-1a", "10.0.0.5", &["/dev/sdf"]),
        ],
        &[
            ("i-a", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
            ("i-b", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
        ],
        &[
            record("node1.bitcoin.internal", "10.0.0.5"),
            record("node2.bitcoin.internal", "10.0.1.5"),
        ],
        &[],
    );
    assert!(a.left_alone.is_empty(), "{:#?}", a.left_alone);
    let got: Vec<(&str, String, &str, SlotFrom)> = a
        .adopted
        .iter()
        .map(|x| {
            (
                x.instance_id.as_str(),
                x.slot.to_string(),
                x.dns_name.as_str(),
                x.slot_from,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "i-a",
                "bitcoin/eu-central-1a/1".to_string(),
                "node1.bitcoin.internal",
                SlotFrom::Record
            ),
            (
                "i-b",
                "bitcoin/eu-central-1b/1".to_string(),
                "node2.bitcoin.internal",
                SlotFrom::Record
            ),
        ]
    );
    let x = &a.adopted[0];
    assert_eq!(x.version.as_str(), "0.20.0");
    assert!(x.differences.is_empty(), "{:#?}", x.differences);
    let t: BTreeMap<&str, String> = x.instance_tags().into_iter().collect();
    assert_eq!(t[tags::MANAGED], "true");
    assert_eq!(t[tags::VERSION], "0.20.0");
    assert!(
        t[tags::CONFIG].ends_with("program=adopted"),
        "{}",
        t[tags::CONFIG]
    );
    // The volume carries the identity, never the version or configuration.
    let v: Vec<&str> = x.volume_tags().iter().map(|(k, _)| *k).collect();
    assert_eq!(v, [tags::MANAGED, tags::COIN, tags::ZONE, tags::INDEX]);
}

#[test]
fn settings_that_differ_are_named_and_their_part_left_to_the_plan() {
    let a = run(
        vec![candidate(
            "i-a",
            "bitcoin",
            "eu-central-1a",
            "10.0.0.5",
            &["/dev/sdf"],
        )],
        &[(
            "i-a",
            Ok(answer(
                "bitcoin",
                "0.20.0",
                BTC_IMAGE,
                &[("RPC_PORT", "5000"), ("PORT", "6001"), ("EXTRA", "1")],
            )),
        )],
        &[],
        &[],
    );
    let x = &a.adopted[0];
    // No record points at it: the lowest free index of its zone.
    assert_eq!(x.slot_from, SlotFrom::FreeIndex);
    let said: Vec<String> = x.differences.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        said,
        [
            "container_config.PORT differs",
            "container_config.EXTRA is on the node only"
        ]
    );
    let fp = crate::node_config::Fingerprint::from_tag(&x.config);
    assert!(fp.is_adopted());
    let d = desired();
    let coin = &d.coins["bitcoin"];
    let files = NodeFiles::of(coin, &coin.nodes[0]).unwrap();
    assert_eq!(
        fp.differs(&files.fingerprint()),
        [
            crate::node_config::ConfigPart::Container,
            crate::node_config::ConfigPart::Program
        ]
    );
    // And the record names them for the plan.
    let keys = crate::node_config::KeyPrint::from_tag(&x.config_keys).unwrap();
    let named: Vec<String> = keys
        .changes(&files, &[crate::node_config::ConfigPart::Container])
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        named,
        [
            "container_config.PORT",
            "1 setting of container_config removed"
        ]
    );
}

#[test]
fn what_is_ambiguous_or_unsafe_is_left_alone_with_its_reason() {
    let mut stopped = candidate(
        "i-stopped",
        "bitcoin",
        "eu-central-1a",
        "10.0.0.9",
        &["/dev/sdf"],
    );
    stopped.instance.state = InstanceState::Stopped;
    let a = run(
        vec![
            stopped,
            candidate("i-novol", "bitcoin", "eu-central-1a", "10.0.0.2", &[]),
            candidate(
                "i-xvdg",
                "bitcoin",
                "eu-central-1a",
                "10.0.0.3",
                &["/dev/xvdg"],
            ),
            candidate(
                "i-zone",
                "litecoin",
                "eu-central-1b",
                "10.0.1.4",
                &["/dev/sdf"],
            ),
            // Two nodes claim node1 by their records (so neither gets it).
            candidate(
                "i-one",
                "bitcoin",
                "eu-central-1a",
                "10.0.0.5",
                &["/dev/sdf"],
            ),
            candidate(
                "i-two",
                "bitcoin",
                "eu-central-1a",
                "10.0.0.6",
                &["/dev/sdf"],
            ),
            // Its record is fleet's name for the node in eu-central-1a.
            candidate(
                "i-moved",
                "bitcoin",
                "eu-central-1b",
                "10.0.1.7",
                &["/dev/sdf"],
            ),
            candidate(
                "i-nounit",
                "litecoin",
                "eu-central-1a",
                "10.0.0.8",
                &["/dev/sdf"],
            ),
            candidate(
                "i-ssm",
                "litecoin",
                "eu-central-1a",
                "10.0.0.10",
                &["/dev/sdf"],
            ),
            candidate(
                "i-coin",
                "litecoin",
                "eu-central-1a",
                "10.0.0.11",
                &["/dev/sdf"],
            ),
        ],
        &[
            ("i-one", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
            ("i-two", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
            (
                "i-moved",
                Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV)),
            ),
            ("i-nounit", Ok("host COIN 0000\n".into())),
            ("i-ssm", Err("InvalidInstanceId: not managed by SSM".into())),
            // A COIN other than the coin's: fleet's unit would stop the wrong container.
            ("i-coin", Ok(answer("ltc", "0.21.3", "x/ltc", &[]))),
        ],
        &[
            record("node1.bitcoin.internal", "10.0.0.5"),
            record("node1.bitcoin.internal", "10.0.0.6"),
            record("node1.bitcoin.internal", "10.0.1.7"),
        ],
        &[],
    );
    assert!(a.adopted.is_empty(), "{:#?}", a.adopted);
    let why: BTreeMap<&str, String> = a
        .left_alone
        .iter()
        .map(|l| (l.instance_id.as_str(), l.why.to_string()))
        .collect();
    let has = |id: &str, what: &str| {
        assert!(why[id].contains(what), "{id}: {}", why[id]);
    };
    has("i-stopped", "it is stopped");
    has("i-novol", "no data volume");
    has(
        "i-xvdg",
        "/dev/xvdg; fleet's node side reads the chain from /dev/sdf",
    );
    has(
        "i-zone",
        "eu-central-1b, which the coin's placement.zones does not list",
    );
    // (i-moved, left alone, has a record of node1 too.)
    has(
        "i-one",
        "i-two, an instance left alone claim slot bitcoin/eu-central-1a/1 too",
    );
    has(
        "i-two",
        "i-one, an instance left alone claim slot bitcoin/eu-central-1a/1 too",
    );
    has("i-moved", "fleet's name for a node in eu-central-1a");
    has("i-nounit", "no node@ unit is active");
    has("i-ssm", "asking it over SSM failed: InvalidInstanceId");
    has("i-coin", "another COIN than litecoin");
    assert_eq!(a.left_alone.len(), 10);
}

#[test]
fn a_slot_a_managed_node_holds_is_never_given_and_extra_nodes_are_left_alone() {
    let d = desired();
    let held = NodeKey::of(&d.coins["bitcoin"].nodes[0]);
    let a = run(
        vec![
            candidate("i-x", "bitcoin", "eu-central-1a", "10.0.0.5", &["/dev/sdf"]),
            candidate(
                "i-y",
                "bitcoin",
                "eu-central-1b",
                "10.0.1.5",
                &["/dev/sdf", "/dev/sdg"],
            ),
            candidate("i-z", "bitcoin", "eu-central-1b", "10.0.1.6", &["/dev/sdf"]),
        ],
        &[
            ("i-x", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
            ("i-y", Ok(answer("bitcoin", "0.19.1", BTC_IMAGE, BTC_ENV))),
            ("i-z", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
        ],
        &[],
        &[held],
    );
    let got: Vec<(&str, &str)> = a
        .adopted
        .iter()
        .map(|x| (x.instance_id.as_str(), x.version.as_str()))
        .collect();
    // i-y comes first by id and takes eu-central-1b's one slot, at the version it runs.
    assert_eq!(got, [("i-y", "0.19.1")]);
    let left: Vec<(&str, String)> = a
        .left_alone
        .iter()
        .map(|l| (l.instance_id.as_str(), l.why.to_string()))
        .collect();
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(
        left.iter().all(|(_, w)| w.contains("every slot is taken")),
        "{left:#?}"
    );
}

#[test]
fn a_slot_whose_record_points_at_a_node_left_alone_is_given_to_nobody() {
    // i-held holds node1's record but cannot be asked; i-new, with no record, would get the
    // zone's one slot as its lowest free index, and the plan would move node1 to it.
    let mut other_coin = candidate("i-nocoin", "dogecoin", "eu-central-1a", "10.0.0.7", &[]);
    other_coin
        .instance
        .tags
        .insert("Component".into(), "nodes/dogecoin".into());
    let a = run(
        vec![
            candidate(
                "i-held",
                "bitcoin",
                "eu-central-1a",
                "10.0.0.5",
                &["/dev/sdf"],
            ),
            candidate(
                "i-new",
                "bitcoin",
                "eu-central-1a",
                "10.0.0.6",
                &["/dev/sdf"],
            ),
            // Stopped (left alone by screen), holding node2's record in eu-central-1b.
            {
                let mut c = candidate(
                    "i-stop",
                    "bitcoin",
                    "eu-central-1b",
                    "10.0.1.5",
                    &["/dev/sdf"],
                );
                c.instance.state = InstanceState::Stopped;
                c
            },
            candidate("i-b", "bitcoin", "eu-central-1b", "10.0.1.6", &["/dev/sdf"]),
            other_coin,
        ],
        &[
            ("i-held", Err("InvalidInstanceId".into())),
            ("i-new", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
            ("i-b", Ok(answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV))),
        ],
        &[
            record("node1.bitcoin.internal", "10.0.0.5"),
            record("node2.bitcoin.internal", "10.0.1.5"),
        ],
        &[],
    );
    assert!(a.adopted.is_empty(), "{:#?}", a.adopted);
    let why: BTreeMap<&str, String> = a
        .left_alone
        .iter()
        .map(|l| (l.instance_id.as_str(), l.why.to_string()))
        .collect();
    assert!(
        why["i-new"].contains("by the record of one left alone"),
        "{why:#?}"
    );
    assert!(
        why["i-b"].contains("by the record of one left alone"),
        "{why:#?}"
    );
    assert!(why["i-nocoin"].contains("names no coin"), "{why:#?}");
}

#[test]
fn another_data_path_or_container_name_makes_adopting_unsafe() {
    let mut moved = answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV);
    moved = moved.replace(
        &format!("host DATA_VOLUME {}", value_hash("/node/data")),
        &format!("host DATA_VOLUME {}", value_hash("/data")),
    );
    let renamed = answer("bitcoin", "0.20.0", BTC_IMAGE, BTC_ENV)
        .replace("running bitcoin-node", "running btc");
    let a = run(
        vec![
            candidate("i-a", "bitcoin", "eu-central-1a", "10.0.0.5", &["/dev/sdf"]),
            candidate("i-b", "bitcoin", "eu-central-1b", "10.0.1.5", &["/dev/sdf"]),
        ],
        &[("i-a", Ok(moved)), ("i-b", Ok(renamed))],
        &[],
        &[],
    );
    assert!(a.adopted.is_empty());
    assert!(
        a.left_alone[0]
            .why
            .to_string()
            .contains("sync from scratch"),
        "{}",
        a.left_alone[0].why
    );
    assert!(
        a.left_alone[1]
            .why
            .to_string()
            .contains("no running container is named bitcoin-node"),
        "{}",
        a.left_alone[1].why
    );
}
