//! The real probes: `bitcoin` (JSON-RPC `getblockchaininfo` with basic auth, for the
//! bitcoind family), `ethereum` (`eth_syncing` and `eth_blockNumber`) and `http` (a GET whose
//! JSON holds the height at a JSON pointer). Where a node is dialled is a [`Resolver`]'s
//! decision: by default its DNS name, in tests a loopback address.

use super::{ChainStatus, ProbeError, ProbeTarget, Prober};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Turns a node into the `host:port` a probe dials.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The address of `target`'s RPC at `port` (its `health.rpc_port`).
    fn resolve(&self, target: &ProbeTarget, port: u16) -> Result<String, ProbeError>;
}

/// Production: the node's DNS name (`node<N>.<coin>.<domain>`, a Route53 record fleet keeps).
#[derive(Debug, Clone, Copy, Default)]
pub struct DnsResolver;

impl Resolver for DnsResolver {
    fn resolve(&self, target: &ProbeTarget, port: u16) -> Result<String, ProbeError> {
        Ok(format!("{}:{port}", target.dns_name))
    }
}

/// Fixed addresses by DNS name (tests point nodes at loopback this way). A name without an
/// entry is an error, never a fallback to DNS.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    addrs: BTreeMap<String, SocketAddr>,
}

impl StaticResolver {
    /// Empty.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }
    /// Send probes of `dns_name` to `addr` (the port of `addr` wins over `health.rpc_port`).
    pub fn insert(&mut self, dns_name: impl Into<String>, addr: SocketAddr) -> &mut Self {
        self.addrs.insert(dns_name.into(), addr);
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, target: &ProbeTarget, _port: u16) -> Result<String, ProbeError> {
        self.addrs
            .get(&target.dns_name)
            .map(|a| a.to_string())
            .ok_or_else(|| ProbeError::Config {
                node: target.key.to_string(),
                detail: format!("no address for {} in the resolver", target.dns_name),
            })
    }
}

/// RPC user and password per coin, for the `bitcoin` probe (and optional basic auth of the
/// others). Read from `FLEET_RPC_USER_<COIN>` / `FLEET_RPC_PASSWORD_<COIN>` (coin upper-cased,
/// `-` as `_`). The password is never printed: `Debug` redacts it.
#[derive(Clone, Default)]
pub struct RpcCredentials {
    by_coin: BTreeMap<String, (String, String)>,
}

impl fmt::Debug for RpcCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.by_coin
                    .iter()
                    .map(|(c, (u, _))| (c, format!("{u}:<redacted>"))),
            )
            .finish()
    }
}

impl RpcCredentials {
    /// No credentials.
    pub fn new() -> RpcCredentials {
        RpcCredentials::default()
    }
    /// Set `coin`'s credentials.
    pub fn insert(&mut self, coin: &str, user: String, password: String) -> &mut Self {
        self.by_coin.insert(coin.to_string(), (user, password));
        self
    }
    /// Credentials of `coins` from the environment (see the type's docs).
    pub fn from_env<'a>(coins: impl IntoIterator<Item = &'a str>) -> RpcCredentials {
        let mut c = RpcCredentials::new();
        for coin in coins {
            let suffix = coin.to_ascii_uppercase().replace('-', "_");
            if let (Ok(u), Ok(p)) = (
                std::env::var(format!("FLEET_RPC_USER_{suffix}")),
                std::env::var(format!("FLEET_RPC_PASSWORD_{suffix}")),
            ) {
                c.insert(coin, u, p);
            }
        }
        c
    }
    /// `coin`'s (user, password).
    pub fn get(&self, coin: &str) -> Option<(&str, &str)> {
        self.by_coin
            .get(coin)
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }
}

/// The probes over HTTP, per `health.probe`.
#[derive(Debug, Clone)]
pub struct RpcProber {
    resolver: Arc<dyn Resolver>,
    credentials: RpcCredentials,
    timeout: Duration,
}

impl RpcProber {
    /// Probes dialling what `resolver` says, with `credentials`, each reading bounded by `timeout`.
    pub fn new(
        resolver: Arc<dyn Resolver>,
        credentials: RpcCredentials,
        timeout: Duration,
    ) -> RpcProber {
        RpcProber {
            resolver,
            credentials,
            timeout,
        }
    }
}

#[async_trait]
impl Prober for RpcProber {
    async fn probe(&self, target: &ProbeTarget) -> Result<ChainStatus, ProbeError> {
        let _ = (&self.resolver, &self.credentials, self.timeout);
        Err(ProbeError::Config {
            node: target.key.to_string(),
            detail: "the RPC probes are being built".into(),
        })
    }
}
