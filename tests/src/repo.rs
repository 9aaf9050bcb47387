//! Fleet repositories written from a few parameters: the property tests and the planner
//! benchmark generate their fleets as YAML text and `load` it, so every `Desired` they use
//! is one the loader accepts from a real repository.

use fleet_repo_schema::{Desired, MemTree, load};
use std::fmt::Write as _;

/// The example fleet's three zones and their subnets.
pub const SUBNETS: [(&str, &str); 3] = [
    ("eu-central-1a", "subnet-0aaaaaaaaaaaaaaa1"),
    ("eu-central-1b", "subnet-0bbbbbbbbbbbbbbb2"),
    ("eu-central-1c", "subnet-0ccccccccccccccc3"),
];

/// The hosted zone of [`fleet_yaml`].
pub const HOSTED_ZONE: &str = "Z0123456789ABCDEFGHIJ";

/// The settings of one coin file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinSpec {
    /// Coin (and file) name.
    pub name: String,
    /// `version`.
    pub version: String,
    /// `instance.type`.
    pub instance_type: String,
    /// `instance.data_volume_gb`.
    pub data_volume_gb: u32,
    /// `placement.zones`, in rollout order.
    pub zones: Vec<String>,
    /// `placement.nodes_per_zone`.
    pub nodes_per_zone: u32,
    /// `rollout.max_unavailable`.
    pub max_unavailable: u32,
    /// `rollout.approval`: none, major, minor, always.
    pub approval: String,
    /// `rollout.bake`, e.g. `1m`.
    pub bake: String,
    /// `snapshots.before_upgrade`.
    pub before_upgrade: bool,
    /// `snapshots.restore_new_nodes`.
    pub restore_new_nodes: bool,
}

impl CoinSpec {
    /// `coins/<name>.yaml`.
    pub fn yaml(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "coin: {name}\n\
             version: \"{version}\"\n\
             instance:\n  type: {ty}\n  data_volume_gb: {vol}\n\
             placement:\n  zones: [{zones}]\n  nodes_per_zone: {npz}\n\
             ports:\n  rpc: [8332]\n  p2p: [8333]\n\
             health:\n  probe: bitcoin\n\
             rollout:\n  max_unavailable: {mu}\n  bake: {bake}\n  approval: {approval}\n\
             snapshots:\n  before_upgrade: {bu}\n  restore_new_nodes: {rn}\n",
            name = self.name,
            version = self.version,
            ty = self.instance_type,
            vol = self.data_volume_gb,
            zones = self.zones.join(", "),
            npz = self.nodes_per_zone,
            mu = self.max_unavailable,
            bake = self.bake,
            approval = self.approval,
            bu = self.before_upgrade,
            rn = self.restore_new_nodes,
        );
        s
    }
}

/// fleet.yaml of a fleet in eu-central-1 with [`SUBNETS`].
pub fn fleet_yaml() -> String {
    let mut subnets = String::new();
    for (zone, subnet) in SUBNETS {
        let _ = writeln!(subnets, "    {zone}: {subnet}");
    }
    format!(
        "region: eu-central-1\n\
         internal_domain: internal\n\
         hosted_zone_id: {HOSTED_ZONE}\n\
         network:\n  vpc_id: vpc-0a1b2c3d4e5f60718\n  subnets:\n{subnets}  security_groups: [sg-0123456789abcdef0]\n\
         node_ami: ami-0123456789abcdef0\n\
         instance_profile: fleet-node\n\
         image_registry: 123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons\n\
         notifications:\n  slack_channel: \"#node-fleet\"\n\
         approvers: [U012ABCDEF]\n"
    )
}

/// The repository of `coins` under [`fleet_yaml`].
pub fn repo_of(coins: &[CoinSpec]) -> MemTree {
    let mut t = MemTree::new();
    t.insert("fleet.yaml", fleet_yaml());
    for c in coins {
        t.insert(&format!("coins/{}.yaml", c.name), c.yaml());
    }
    t
}

/// `coins` loaded; panics with the diagnostics if the loader refuses them.
///
/// No coins at all is a world, not a repository: the loader refuses a fleet without coins
/// (E113), so an empty list is the fleet of [`fleet_yaml`] with its coins taken away.
pub fn desired_of_specs(coins: &[CoinSpec]) -> Desired {
    if coins.is_empty() {
        let placeholder = CoinSpec {
            name: "placeholder".into(),
            version: "1.0.0".into(),
            instance_type: "m5.large".into(),
            data_volume_gb: 100,
            zones: vec![SUBNETS[0].0.into()],
            nodes_per_zone: 1,
            max_unavailable: 1,
            approval: "none".into(),
            bake: "1m".into(),
            before_upgrade: false,
            restore_new_nodes: false,
        };
        let mut d = desired_of_specs(&[placeholder]);
        d.coins.clear();
        return d;
    }
    let loaded = load(&repo_of(coins));
    match loaded.desired {
        Some(d) => d,
        None => panic!(
            "generated repository refused: {:#?}\n{}",
            loaded.diagnostics,
            coins.iter().map(CoinSpec::yaml).collect::<String>()
        ),
    }
}
