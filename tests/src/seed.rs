//! Nodes as the operators' Terraform module sets them up today (`../shared/seed`): the
//! module's tags on the instance, a data volume, a `node<N>.<coin>` record, and on the host
//! the two environment files its user data writes (`/etc/sysconfig/node` for the unit,
//! `/etc/opt/node-config` for the container, with the secret's keys merged in) and a started
//! `node@<version>` unit. What `fleet adopt` is tested against.

use fleet_repo_schema::Coin;
use reconciler::adopt::inspect::value_hash;

/// The keys the module's user data merges into the container's file from the coin's secret
/// (their values are test-only).
pub const SECRET_KEYS: &[(&str, &str)] = &[("RPC_PASSWORD", "test-only-password")];

/// `/etc/sysconfig/node` as the module writes it: IMAGE, COIN, PORTS (Docker's `-p` range
/// form), DATA_VOLUME, then the coin's host_config.
pub fn host_env(coin: &Coin) -> String {
    let data_volume = reconciler::node_config::data_volume_of(coin);
    let ports: Vec<String> = coin
        .rpc_ports
        .iter()
        .chain(&coin.p2p_ports)
        .map(|p| format!("{p}:{p}"))
        .collect();
    let mut s = format!(
        "IMAGE={}\nCOIN={}\nPORTS=\"{}\"\nDATA_VOLUME={data_volume}\n",
        coin.image.repository,
        coin.name,
        ports.join(" ")
    );
    for (k, v) in &coin.host_config {
        if k.as_str() != "DATA_VOLUME" {
            s.push_str(&format!("{}={}\n", k.as_str(), v.as_str()));
        }
    }
    s
}

/// `/etc/opt/node-config` as the module writes it: the coin's container_config, then the
/// secret's keys when the coin has a secret.
pub fn container_env(coin: &Coin) -> String {
    let mut s = String::new();
    for (k, v) in &coin.container_config {
        s.push_str(&format!("{}={}\n", k.as_str(), v.as_str()));
    }
    if coin.secrets.is_some() {
        for (k, v) in SECRET_KEYS {
            s.push_str(&format!("{k}={v}\n"));
        }
    }
    s
}

/// The module's container name: `<coin>-node` (its unit's `--name=${COIN}-node`).
pub fn container_name(coin: &Coin) -> String {
    format!("{}-node", coin.name)
}

/// What `fleet adopt`'s inspection prints on such a node running `version` (node_side.rs
/// runs the script on these files and checks it prints this).
pub fn answer(coin: &Coin, version: &str) -> String {
    let mut s = format!(
        "unit node@{version}.service\nrunning {}\n",
        container_name(coin)
    );
    let unquote = |v: &str| v.trim_matches('"').to_string();
    for line in host_env(coin).lines() {
        if let Some((k, v)) = line.split_once('=') {
            s.push_str(&format!("host {k} {}\n", value_hash(&unquote(v))));
        }
    }
    for line in container_env(coin).lines() {
        if let Some((k, v)) = line.split_once('=') {
            s.push_str(&format!("container {k} {}\n", value_hash(v)));
        }
    }
    s
}
