//! The real probes: `bitcoin` (JSON-RPC `getblockchaininfo` with basic auth, for the
//! bitcoind family), `ethereum` (`eth_syncing` and `eth_blockNumber`) and `http` (a GET whose
//! JSON holds the height at a JSON pointer). Where a node is dialled is a [`Resolver`]'s
//! decision: by default its DNS name, in tests a loopback address.

use super::{ChainStatus, DaemonVersion, ProbeError, ProbeTarget, Prober};
use async_trait::async_trait;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use fleet_repo_schema::Probe;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Turns a node into the `host:port` a probe dials.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The address of `target`'s RPC at `port` (its `health.rpc_port`).
    fn resolve(&self, target: &ProbeTarget, port: u16) -> Result<String, ProbeError>;
}

/// Production: the node's DNS name (`node<N>.<coin>.<domain>`, a Route53 record fleet keeps),
/// or the target's private address when it has one (a replacement not yet under the name).
#[derive(Debug, Clone, Copy, Default)]
pub struct DnsResolver;

impl Resolver for DnsResolver {
    fn resolve(&self, target: &ProbeTarget, port: u16) -> Result<String, ProbeError> {
        Ok(match &target.address {
            Some(ip) => format!("{ip}:{port}"),
            None => format!("{}:{port}", target.dns_name),
        })
    }
}

/// Fixed addresses by DNS name, or by private address for a target that has one (tests
/// point nodes at loopback this way). A name or address without an entry is an error, never
/// a fallback to the other or to DNS.
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
        let name = target.address.as_deref().unwrap_or(&target.dns_name);
        self.addrs
            .get(name)
            .map(|a| a.to_string())
            .ok_or_else(|| ProbeError::Config {
                node: target.key.to_string(),
                detail: format!("no address for {name} in the resolver"),
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

/// Largest answer a probe reads (a `getblockchaininfo` is a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Longest piece of node-supplied text (an RPC error message) kept in an error.
const MAX_NODE_TEXT: usize = 200;

/// The JSON-RPC 1.0 request of the `bitcoin` probe.
const GETBLOCKCHAININFO: &str =
    r#"{"jsonrpc":"1.0","id":"fleet","method":"getblockchaininfo","params":[]}"#;
/// Asked after a reading, for the client's version (`subversion`): method and request.
const GETNETWORKINFO: (&str, &str) = (
    "getnetworkinfo",
    r#"{"jsonrpc":"1.0","id":"fleet","method":"getnetworkinfo","params":[]}"#,
);
/// The `ethereum` probe's requests.
const WEB3_CLIENT_VERSION: (&str, &str) = (
    "web3_clientVersion",
    r#"{"jsonrpc":"2.0","id":3,"method":"web3_clientVersion","params":[]}"#,
);
const ETH_SYNCING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_syncing","params":[]}"#;
const ETH_BLOCK_NUMBER: &str = r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The probes over HTTP, per `health.probe`: one fresh connection per reading (no pooled
/// connection outlives a node restart), every reading bounded by the timeout.
#[derive(Clone)]
pub struct RpcProber {
    resolver: Arc<dyn Resolver>,
    credentials: RpcCredentials,
    timeout: Duration,
    client: HttpClient,
}

impl fmt::Debug for RpcProber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcProber")
            .field("resolver", &self.resolver)
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RpcProber {
    /// Probes dialling what `resolver` says, with `credentials`, each reading bounded by `timeout`.
    pub fn new(
        resolver: Arc<dyn Resolver>,
        credentials: RpcCredentials,
        timeout: Duration,
    ) -> RpcProber {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        RpcProber {
            resolver,
            credentials,
            timeout,
            client,
        }
    }

    /// The timeout of one reading.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// One reading's context. Holds the `Authorization` value, so it has no `Debug`.
struct Call<'a> {
    node: String,
    addr: String,
    coin: &'a str,
    /// `Basic …`, when the coin has credentials.
    auth: Option<HeaderValue>,
    /// Texts that must never appear in an error (password, encoded token).
    secrets: Vec<String>,
}

impl Call<'_> {
    /// A node-supplied or transport text made safe for an error: secrets replaced, control
    /// characters dropped, length bounded.
    fn clean(&self, text: &str) -> String {
        clean_text(text, &self.secrets)
    }

    fn bad(&self, detail: impl AsRef<str>) -> ProbeError {
        ProbeError::BadAnswer {
            node: self.node.clone(),
            detail: self.clean(detail.as_ref()),
        }
    }

    fn unreachable(&self, detail: impl AsRef<str>) -> ProbeError {
        ProbeError::Unreachable {
            node: self.node.clone(),
            addr: self.addr.clone(),
            detail: self.clean(detail.as_ref()),
        }
    }

    /// The error of an HTTP 401.
    fn refused(&self) -> ProbeError {
        let suffix = self.coin.to_ascii_uppercase().replace('-', "_");
        let detail = if self.auth.is_some() {
            format!(
                "the node refused the RPC credentials of {} (HTTP 401 Unauthorized): check FLEET_RPC_USER_{suffix} and FLEET_RPC_PASSWORD_{suffix}",
                self.coin
            )
        } else {
            format!(
                "the node asks for RPC credentials (HTTP 401 Unauthorized) and {} has none: set FLEET_RPC_USER_{suffix} and FLEET_RPC_PASSWORD_{suffix}",
                self.coin
            )
        };
        ProbeError::BadAnswer {
            node: self.node.clone(),
            detail,
        }
    }
}

/// An HTTP answer, read whole.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl RpcProber {
    async fn send(
        &self,
        call: &Call<'_>,
        method: Method,
        uri: &Uri,
        body: Option<&'static str>,
    ) -> Result<Answer, ProbeError> {
        let mut req = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &call.auth {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from_static(
                body.unwrap_or_default().as_bytes(),
            )))
            .map_err(|e| ProbeError::Config {
                node: call.node.clone(),
                detail: call.clean(&format!("cannot build the request: {e}")),
            })?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| transport_error(call, &e))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    call.bad(format!(
                        "answered HTTP {} with more than {} KiB",
                        status.as_u16(),
                        MAX_BODY / 1024
                    ))
                } else {
                    call.unreachable(format!(
                        "connection lost while reading the answer: {}",
                        error_chain(&*e)
                    ))
                }
            })?
            .to_bytes();
        if status == StatusCode::UNAUTHORIZED {
            return Err(call.refused());
        }
        Ok(Answer { status, body })
    }

    async fn read(
        &self,
        call: &Call<'_>,
        target: &ProbeTarget,
        base: &str,
    ) -> Result<ChainStatus, ProbeError> {
        let uri = |path: &str| -> Result<Uri, ProbeError> {
            format!("http://{base}{path}")
                .parse::<Uri>()
                .map_err(|e| ProbeError::Config {
                    node: call.node.clone(),
                    detail: call.clean(&format!("cannot make a URL of {base}{path}: {e}")),
                })
        };
        let asks_version = target.health.daemon_version;
        match target.health.probe {
            Probe::Bitcoin => {
                let u = uri("/")?;
                let a = self
                    .send(call, Method::POST, &u, Some(GETBLOCKCHAININFO))
                    .await?;
                let mut status = parse_bitcoin(a.status, &a.body).map_err(|d| call.bad(d))?;
                if asks_version {
                    status.client = self.client_version(call, &u, GETNETWORKINFO).await;
                }
                Ok(status)
            }
            Probe::Ethereum => {
                let u = uri("/")?;
                let mut status = self.read_ethereum(call, &u).await?;
                if asks_version {
                    status.client = self.client_version(call, &u, WEB3_CLIENT_VERSION).await;
                }
                Ok(status)
            }
            Probe::Http => {
                let Some(spec) = &target.health.http else {
                    return Err(ProbeError::Config {
                        node: call.node.clone(),
                        detail: "probe `http` without `health.http` settings".into(),
                    });
                };
                let a = self
                    .send(call, Method::GET, &uri(spec.path.as_str())?, None)
                    .await?;
                parse_http(
                    a.status,
                    &a.body,
                    spec.height_pointer.as_str(),
                    spec.target_pointer.as_ref().map(|p| p.as_str()),
                    spec.version_pointer
                        .as_ref()
                        .filter(|_| asks_version)
                        .map(|p| p.as_str()),
                )
                .map_err(|d| call.bad(d))
            }
            Probe::None => Err(no_probe(target)),
        }
    }

    /// The client's version, asked after a reading (`getnetworkinfo`, `web3_clientVersion`).
    /// Any failure leaves it unread (None): the reading stands, and so does the recorded
    /// version.
    async fn client_version(
        &self,
        call: &Call<'_>,
        uri: &Uri,
        (method, request): (&'static str, &'static str),
    ) -> Option<DaemonVersion> {
        match self.send(call, Method::POST, uri, Some(request)).await {
            Ok(a) => match parse_client(method, a.status, &a.body) {
                Ok(v) => v,
                Err(d) => {
                    tracing::debug!(node = %call.node, detail = %call.clean(&d), "the client's version was not read");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(node = %call.node, error = %e, "the client's version was not read");
                None
            }
        }
    }

    async fn read_ethereum(&self, call: &Call<'_>, u: &Uri) -> Result<ChainStatus, ProbeError> {
        let a = self.send(call, Method::POST, u, Some(ETH_SYNCING)).await?;
        match parse_eth_syncing(a.status, &a.body).map_err(|d| call.bad(d))? {
            EthSyncing::Syncing { current, highest } => Ok(ChainStatus {
                blocks: current,
                // Some clients report highestBlock 0 (or below currentBlock) early on.
                headers: highest.max(current),
                initial_block_download: true,
                client: None,
            }),
            EthSyncing::NotSyncing => {
                let a = self
                    .send(call, Method::POST, u, Some(ETH_BLOCK_NUMBER))
                    .await?;
                let h = parse_eth_block_number(a.status, &a.body).map_err(|d| call.bad(d))?;
                Ok(ChainStatus {
                    blocks: h,
                    headers: h,
                    initial_block_download: false,
                    client: None,
                })
            }
        }
    }
}

fn no_probe(target: &ProbeTarget) -> ProbeError {
    ProbeError::Config {
        node: target.key.to_string(),
        detail: format!(
            "{} has no probe (`health.probe: none`): there is nothing to ask",
            target.key.coin
        ),
    }
}

#[async_trait]
impl Prober for RpcProber {
    async fn probe(&self, target: &ProbeTarget) -> Result<ChainStatus, ProbeError> {
        let node = target.key.to_string();
        if target.health.probe == Probe::None {
            return Err(no_probe(target));
        }
        let Some(port) = target.health.rpc_port else {
            return Err(ProbeError::Config {
                node,
                detail: format!("{} has no `health.rpc_port`", target.key.coin),
            });
        };
        let addr = self.resolver.resolve(target, port)?;
        let coin = target.key.coin.as_str();
        let creds = self.credentials.get(coin);
        if target.health.probe == Probe::Bitcoin && creds.is_none() {
            let suffix = coin.to_ascii_uppercase().replace('-', "_");
            return Err(ProbeError::Config {
                node,
                detail: format!(
                    "no RPC credentials for {coin}: set FLEET_RPC_USER_{suffix} and FLEET_RPC_PASSWORD_{suffix}"
                ),
            });
        }
        let mut secrets = Vec::new();
        let auth = match creds {
            Some((user, password)) => {
                let token = BASE64_STANDARD.encode(format!("{user}:{password}"));
                let mut v = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                    ProbeError::Config {
                        node: node.clone(),
                        detail: format!(
                            "the RPC credentials of {coin} cannot be sent (a character HTTP headers cannot carry)"
                        ),
                    }
                })?;
                v.set_sensitive(true);
                secrets.push(password.to_string());
                secrets.push(token);
                Some(v)
            }
            None => None,
        };
        let call = Call {
            node,
            addr,
            coin,
            auth,
            secrets,
        };
        match tokio::time::timeout(self.timeout, self.read(&call, target, &call.addr)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout {
                node: call.node.clone(),
                addr: call.addr.clone(),
                ms: self.timeout.as_millis() as u64,
            }),
        }
    }
}

/// A transport error: nothing (usable) answered.
fn transport_error(call: &Call<'_>, e: &hyper_util::client::legacy::Error) -> ProbeError {
    let detail = error_chain(e);
    if !e.is_connect() {
        // Something answered, but not HTTP.
        let mut src: Option<&(dyn StdError + 'static)> = e.source();
        while let Some(s) = src {
            if let Some(h) = s.downcast_ref::<hyper::Error>()
                && h.is_parse()
            {
                return call.bad(format!("answered something that is not HTTP: {detail}"));
            }
            src = s.source();
        }
    }
    call.unreachable(detail)
}

/// `tcp connect error: Connection refused (os error 111)`: the causes of `e`, without the
/// client's generic top line when it has a cause.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if parts.last() != Some(&s) {
            parts.push(s);
        }
        cur = err.source();
    }
    if parts.len() > 1 {
        parts.remove(0);
    }
    parts.join(": ")
}

/// Secrets replaced by `<redacted>` (before anything is cut, so no part of one survives),
/// control characters dropped, at most 4 × [`MAX_NODE_TEXT`] characters kept.
fn clean_text(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        t = t.replace(s.as_str(), "<redacted>");
    }
    let t: String = t.chars().filter(|c| !c.is_control()).collect();
    if t.chars().count() > 4 * MAX_NODE_TEXT {
        let mut short: String = t.chars().take(4 * MAX_NODE_TEXT).collect();
        short.push('…');
        short
    } else {
        t
    }
}

/// Node-supplied text for a message: control characters dropped, bounded. (Secrets are
/// replaced later, by [`clean_text`], on the whole detail.)
fn node_text(s: &str) -> String {
    let t: String = s.chars().filter(|c| !c.is_control()).collect();
    if t.chars().count() > MAX_NODE_TEXT {
        let mut short: String = t.chars().take(MAX_NODE_TEXT).collect();
        short.push('…');
        short
    } else {
        t
    }
}

fn http_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("HTTP {} {r}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// The `result` of a JSON-RPC answer (1.0 or 2.0), or why there is none. Nodes of the bitcoind
/// family answer RPC errors with HTTP 500 or 404 and the error in the body, so the body is read
/// whatever the status.
fn rpc_result(method: &str, status: StatusCode, body: &[u8]) -> Result<Value, String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(if status.is_success() {
            format!(
                "answered {method} with {} and a body that is not JSON ({} bytes)",
                http_status(status),
                body.len()
            )
        } else {
            format!("answered {method} with {}", http_status(status))
        });
    };
    let Some(obj) = v.as_object() else {
        return Err(format!(
            "answered {method} with {} and JSON that is not a JSON-RPC answer",
            http_status(status)
        ));
    };
    match obj.get("error") {
        None | Some(Value::Null) => {}
        Some(err) => {
            let code = err.get("code").and_then(Value::as_i64);
            let message = err.get("message").and_then(Value::as_str).map(node_text);
            let mut d = format!("{method}: RPC error");
            if let Some(c) = code {
                d.push_str(&format!(" {c}"));
            }
            if let Some(m) = message {
                d.push_str(&format!(": {m}"));
            }
            if code == Some(-28) {
                d.push_str(" (the node is starting up)");
            }
            return Err(d);
        }
    }
    if !status.is_success() {
        return Err(format!("answered {method} with {}", http_status(status)));
    }
    match obj.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(format!("answered {method} without a result")),
    }
}

/// `getblockchaininfo`'s answer as a [`ChainStatus`].
fn parse_bitcoin(status: StatusCode, body: &[u8]) -> Result<ChainStatus, String> {
    const M: &str = "getblockchaininfo";
    let r = rpc_result(M, status, body)?;
    let field = |name: &str| -> Result<&Value, String> {
        r.get(name)
            .ok_or_else(|| format!("{M}: the result has no `{name}`"))
    };
    let count = |name: &str| -> Result<u64, String> {
        field(name)?
            .as_u64()
            .ok_or_else(|| format!("{M}: `{name}` is not a whole number ≥ 0"))
    };
    let blocks = count("blocks")?;
    let headers = count("headers")?;
    let ibd = field("initialblockdownload")?
        .as_bool()
        .ok_or_else(|| format!("{M}: `initialblockdownload` is not true or false"))?;
    Ok(ChainStatus {
        blocks,
        headers,
        initial_block_download: ibd,
        client: None,
    })
}

/// The client's version from `getnetworkinfo` (`subversion`) or `web3_clientVersion` (the
/// result itself). Ok(None): it answered with no version in it.
fn parse_client(
    method: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Option<DaemonVersion>, String> {
    let r = rpc_result(method, status, body)?;
    let text = match method {
        "getnetworkinfo" => r.get("subversion").and_then(Value::as_str),
        _ => r.as_str(),
    };
    Ok(text.and_then(DaemonVersion::from_client))
}

/// What `eth_syncing` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EthSyncing {
    /// `false`.
    NotSyncing,
    /// An object with `currentBlock` and `highestBlock`.
    Syncing { current: u64, highest: u64 },
}

fn parse_eth_syncing(status: StatusCode, body: &[u8]) -> Result<EthSyncing, String> {
    const M: &str = "eth_syncing";
    match rpc_result(M, status, body)? {
        Value::Bool(false) => Ok(EthSyncing::NotSyncing),
        Value::Object(o) => {
            let q = |name: &str| -> Result<u64, String> {
                let v = o
                    .get(name)
                    .ok_or_else(|| format!("{M}: the result has no `{name}`"))?;
                quantity(v).ok_or_else(|| format!("{M}: `{name}` is not a hex quantity"))
            };
            Ok(EthSyncing::Syncing {
                current: q("currentBlock")?,
                highest: q("highestBlock")?,
            })
        }
        _ => Err(format!(
            "{M}: expected false or a sync progress object as the result"
        )),
    }
}

fn parse_eth_block_number(status: StatusCode, body: &[u8]) -> Result<u64, String> {
    const M: &str = "eth_blockNumber";
    let r = rpc_result(M, status, body)?;
    quantity(&r).ok_or_else(|| format!("{M}: the result is not a hex quantity"))
}

/// An Ethereum quantity: `"0x1a"` (a plain whole number is accepted too).
fn quantity(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => hex_u64(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// `0x…` with 1 to 16 hex digits.
fn hex_u64(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// A height in an `http` probe's answer: a whole number, a decimal string or a `0x` string.
fn height_value(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            // 1234.0: whole and exactly representable.
            let f = n.as_f64()?;
            (f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0).then_some(f as u64)
        }),
        Value::String(s) => {
            if s.starts_with("0x") || s.starts_with("0X") {
                hex_u64(s)
            } else if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The `http` probe's answer as a [`ChainStatus`].
fn parse_http(
    status: StatusCode,
    body: &[u8],
    height_pointer: &str,
    target_pointer: Option<&str>,
    version_pointer: Option<&str>,
) -> Result<ChainStatus, String> {
    if !status.is_success() {
        return Err(format!("answered {}", http_status(status)));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        format!(
            "answered {} with a body that is not JSON ({} bytes)",
            http_status(status),
            body.len()
        )
    })?;
    let at = |ptr: &str| -> Result<u64, String> {
        let x = v
            .pointer(ptr)
            .ok_or_else(|| format!("the answer has no value at {}", node_text(ptr)))?;
        height_value(x).ok_or_else(|| {
            format!(
                "the value at {} is not a height (a whole number, a decimal or 0x string)",
                node_text(ptr)
            )
        })
    };
    let height = at(height_pointer)?;
    let headers = match target_pointer {
        // A target read a moment before the height may lag it by one: never below the height.
        Some(p) => at(p)?.max(height),
        None => height,
    };
    // The version is not part of the reading: a pointer that finds none leaves it unread.
    let client = version_pointer
        .and_then(|p| v.pointer(p))
        .and_then(Value::as_str)
        .and_then(DaemonVersion::from_client);
    Ok(ChainStatus {
        blocks: height,
        headers,
        initial_block_download: false,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeKey;
    use fleet_repo_schema::desired::{HealthSpec, HttpSpec};
    use fleet_repo_schema::values::{self, HttpPath, JsonPointer};

    const OK: StatusCode = StatusCode::OK;

    fn bitcoin(status: u16, body: &str) -> Result<ChainStatus, String> {
        parse_bitcoin(StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn clients_report_their_version() {
        let net = r#"{"result":{"version":210201,"subversion":"/LitecoinCore:0.21.2.1/","protocolversion":70017},"error":null,"id":"fleet"}"#;
        let v = parse_client("getnetworkinfo", OK, net.as_bytes()).unwrap();
        assert_eq!(v.map(|v| v.to_string()).as_deref(), Some("0.21.2.1"));
        let eth = r#"{"jsonrpc":"2.0","id":3,"result":"Geth/v1.14.12-stable-293a300d/linux-amd64/go1.23.4"}"#;
        let v = parse_client("web3_clientVersion", OK, eth.as_bytes()).unwrap();
        assert_eq!(v.map(|v| v.to_string()).as_deref(), Some("1.14.12"));
        // No version in the answer: unread. An RPC error: an error (the caller leaves it unread).
        let none = r#"{"result":{"subversion":""},"error":null,"id":"fleet"}"#;
        assert_eq!(
            parse_client("getnetworkinfo", OK, none.as_bytes()),
            Ok(None)
        );
        let err =
            r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":"fleet"}"#;
        assert!(parse_client("getnetworkinfo", StatusCode::NOT_FOUND, err.as_bytes()).is_err());
    }

    #[test]
    fn bitcoin_reads_blocks_headers_and_ibd() {
        let body = r#"{"result":{"chain":"regtest","blocks":3122,"headers":3130,
            "bestblockhash":"00","difficulty":4.6e-10,"initialblockdownload":true,
            "verificationprogress":1,"softforks":{}},"error":null,"id":"fleet"}"#;
        assert_eq!(
            bitcoin(200, body),
            Ok(ChainStatus {
                blocks: 3122,
                headers: 3130,
                initial_block_download: true,
                client: None,
            })
        );
    }

    #[test]
    fn bitcoin_rpc_errors_say_what_the_node_said() {
        // What litecoind 0.21 answers while it loads its block index.
        let e = bitcoin(
            500,
            r#"{"result":null,"error":{"code":-28,"message":"Loading block index..."},"id":"fleet"}"#,
        )
        .unwrap_err();
        assert!(e.contains("RPC error -28: Loading block index..."), "{e}");
        assert!(e.contains("starting up"), "{e}");
        let e = bitcoin(
            404,
            r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":"fleet"}"#,
        )
        .unwrap_err();
        assert!(e.contains("-32601: Method not found"), "{e}");
    }

    #[test]
    fn bitcoin_odd_answers_are_errors() {
        let cases: &[(u16, &str, &str)] = &[
            (200, "", "not JSON"),
            (200, "<html>hi</html>", "not JSON"),
            (502, "<html>Bad Gateway</html>", "HTTP 502 Bad Gateway"),
            (403, "", "HTTP 403 Forbidden"),
            (200, "[1,2]", "not a JSON-RPC answer"),
            (200, "null", "not a JSON-RPC answer"),
            (200, r#"{"id":"fleet"}"#, "without a result"),
            (200, r#"{"result":null,"error":null}"#, "has no `blocks`"),
            (200, r#"{"result":[]}"#, "has no `blocks`"),
            (
                200,
                r#"{"result":{"blocks":-1,"headers":1,"initialblockdownload":false}}"#,
                "`blocks` is not",
            ),
            (
                200,
                r#"{"result":{"blocks":1.5,"headers":1,"initialblockdownload":false}}"#,
                "`blocks` is not",
            ),
            (
                200,
                r#"{"result":{"blocks":"12","headers":1,"initialblockdownload":false}}"#,
                "`blocks` is not",
            ),
            (
                200,
                r#"{"result":{"blocks":1e30,"headers":1,"initialblockdownload":false}}"#,
                "`blocks` is not",
            ),
            (
                200,
                r#"{"result":{"blocks":184467440737095516160,"headers":1,"initialblockdownload":false}}"#,
                "`blocks` is not",
            ),
            (
                200,
                r#"{"result":{"blocks":1,"headers":1}}"#,
                "no `initialblockdownload`",
            ),
            (
                200,
                r#"{"result":{"blocks":1,"headers":1,"initialblockdownload":"no"}}"#,
                "not true or false",
            ),
            (200, r#"{"result":{},"error":"boom"}"#, "RPC error"),
            (
                200,
                r#"{"result":{},"error":{"code":"x","message":7}}"#,
                "RPC error",
            ),
        ];
        for (status, body, want) in cases {
            let e = bitcoin(*status, body).unwrap_err();
            assert!(e.contains(want), "{body:?}: {e:?} should say {want:?}");
        }
    }

    #[test]
    fn ethereum_syncing_and_block_number() {
        let p = |b: &str| parse_eth_syncing(OK, b.as_bytes());
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":1,"result":false}"#),
            Ok(EthSyncing::NotSyncing)
        );
        assert_eq!(
            p(
                r#"{"jsonrpc":"2.0","id":1,"result":{"startingBlock":"0x0","currentBlock":"0x1f4","highestBlock":"0x3E8"}}"#
            ),
            Ok(EthSyncing::Syncing {
                current: 500,
                highest: 1000
            })
        );
        for bad in [
            r#"{"jsonrpc":"2.0","id":1,"result":true}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"currentBlock":"0x1"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"currentBlock":"1f4","highestBlock":"0x1"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"the method eth_syncing does not exist"}}"#,
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let n = |b: &str| parse_eth_block_number(OK, b.as_bytes());
        assert_eq!(n(r#"{"jsonrpc":"2.0","id":2,"result":"0x10"}"#), Ok(16));
        assert_eq!(n(r#"{"jsonrpc":"2.0","id":2,"result":"0x0"}"#), Ok(0));
        assert_eq!(
            n(r#"{"jsonrpc":"2.0","id":2,"result":"0xffffffffffffffff"}"#),
            Ok(u64::MAX)
        );
        for bad in [
            r#"{"jsonrpc":"2.0","id":2,"result":"0x"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":"0x10000000000000000"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":"0x-1"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":"0x+1"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":"16"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":"0xé1"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":-1}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":[]}"#,
        ] {
            assert!(n(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_heights_at_pointers() {
        let p = |body: &str, h: &str, t: Option<&str>| parse_http(OK, body.as_bytes(), h, t, None);
        let body = r#"{"status":{"confirmedMilestone":{"index":"1234"},"latestMilestone":{"index":1236}},
            "hex":"0x4d2","num":1234,"float":1234.0,"a/b":{"m~n":7},"arr":[5,6]}"#;
        let st = |b, h| {
            Ok(ChainStatus {
                blocks: b,
                headers: h,
                initial_block_download: false,
                client: None,
            })
        };
        assert_eq!(p(body, "/num", None), st(1234, 1234));
        assert_eq!(p(body, "/hex", None), st(1234, 1234));
        assert_eq!(p(body, "/float", None), st(1234, 1234));
        assert_eq!(
            p(
                body,
                "/status/confirmedMilestone/index",
                Some("/status/latestMilestone/index")
            ),
            st(1234, 1236)
        );
        // RFC 6901 escapes and array indices.
        assert_eq!(p(body, "/a~1b/m~0n", None), st(7, 7));
        assert_eq!(p(body, "/arr/1", None), st(6, 6));
        // A target a moment behind the height is not below it.
        assert_eq!(p(body, "/num", Some("/arr/0")), st(1234, 1234));
        for (ptr, want) in [
            ("/missing", "no value at /missing"),
            ("/status", "not a height"),
            ("/arr/9", "no value"),
        ] {
            let e = p(body, ptr, None).unwrap_err();
            assert!(e.contains(want), "{ptr}: {e}");
        }
        let e = p(body, "/num", Some("/nope")).unwrap_err();
        assert!(e.contains("/nope"), "{e}");
        for v in [
            "-1",
            "1.5",
            "\"\"",
            "\"12a\"",
            "\"-3\"",
            "\" 12\"",
            "\"1e3\"",
            "true",
            "null",
            "\"0x\"",
            "1e300",
            "\"99999999999999999999999\"",
        ] {
            let b = format!(r#"{{"h":{v}}}"#);
            assert!(p(&b, "/h", None).is_err(), "{v} is not a height");
        }
        let e = parse_http(
            StatusCode::SERVICE_UNAVAILABLE,
            body.as_bytes(),
            "/num",
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e, "answered HTTP 503 Service Unavailable");
        // The version where a pointer says; no string there leaves it unread.
        let b = r#"{"num":7,"info":{"appVersion":"2.0.2"},"n":5}"#.as_bytes();
        let client = |ptr| parse_http(OK, b, "/num", None, Some(ptr)).unwrap().client;
        assert_eq!(
            client("/info/appVersion").map(|v| v.to_string()).as_deref(),
            Some("2.0.2")
        );
        assert_eq!(client("/n"), None);
        assert_eq!(client("/nowhere"), None);
        let e = parse_http(OK, b"not json", "/num", None, None).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
    }

    /// Hostile and mangled answers: every parser returns, none panics.
    #[test]
    fn hostile_answers_never_panic() {
        let deep = "[".repeat(100_000);
        let deep_obj = r#"{"result":"#.repeat(50_000);
        let mut bodies: Vec<Vec<u8>> = vec![
            deep.clone().into_bytes(),
            deep_obj.into_bytes(),
            vec![0xff, 0xfe, 0x00, 0x80],
            b"\"\\ud800\"".to_vec(),
            br#"{"result":{"blocks":1,"headers":1,"initialblockdownload":false},"result":{}}"#
                .to_vec(),
            format!(
                r#"{{"error":{{"code":-28,"message":"{}"}}}}"#,
                "x".repeat(100_000)
            )
            .into_bytes(),
            br#"{"error":{"code":-1,"message":"line\nbreak\u0000\u001b[31mred"}}"#.to_vec(),
        ];
        let seeds = [
            r#"{"result":{"blocks":3122,"headers":3130,"initialblockdownload":true},"error":null,"id":"fleet"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"currentBlock":"0x1f4","highestBlock":"0x3e8"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":"0x10"}"#,
            r#"{"a":{"b":["0x10","12",13]}}"#,
        ];
        // Deterministic mutations: flip, drop and duplicate bytes of real answers.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in seeds {
            for _ in 0..500 {
                let mut b = seed.as_bytes().to_vec();
                for _ in 0..(1 + next() % 4) {
                    let i = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[i] = next() as u8,
                        1 => {
                            b.remove(i);
                        }
                        _ => b.insert(i, b"{}[]\",:0x-9e"[(next() % 12) as usize]),
                    }
                    if b.is_empty() {
                        b.push(b'{');
                    }
                }
                bodies.push(b);
            }
        }
        for b in &bodies {
            for status in [200, 401, 500] {
                let s = StatusCode::from_u16(status).unwrap();
                let r = parse_bitcoin(s, b);
                if let Err(e) = &r {
                    assert!(e.chars().count() < 400, "bounded: {e}");
                    assert!(
                        !e.chars().any(char::is_control),
                        "no control characters: {e:?}"
                    );
                }
                let _ = parse_eth_syncing(s, b);
                let _ = parse_eth_block_number(s, b);
                let _ = parse_http(s, b, "/a/b/0", Some("/a/b/2"), Some("/a/v"));
                let _ = parse_http(s, b, "/result/blocks", None, None);
                let _ = parse_client("getnetworkinfo", s, b);
                let _ = parse_client("web3_clientVersion", s, b);
            }
        }
        assert!(parse_bitcoin(OK, deep.as_bytes()).is_err());
    }

    #[test]
    fn secrets_are_redacted_and_text_bounded() {
        let secrets = vec!["hunter2-secret".to_string(), "dTpodW50ZXIy".to_string()];
        let t = clean_text(
            "auth failed for u:hunter2-secret (Basic dTpodW50ZXIy)\n\u{1b}[0m",
            &secrets,
        );
        assert_eq!(t, "auth failed for u:<redacted> (Basic <redacted>)[0m");
        assert!(clean_text(&"y".repeat(10_000), &[]).chars().count() <= 801);
        // An empty password redacts nothing (rather than everything).
        assert_eq!(clean_text("abc", &[String::new()]), "abc");
    }

    fn target(probe: Probe, port: Option<u16>) -> ProbeTarget {
        ProbeTarget {
            key: NodeKey::parse("litecoin", "eu-central-1a", 1).unwrap(),
            instance_id: "i-1".into(),
            dns_name: "node1.litecoin.internal.example".into(),
            address: None,
            health: HealthSpec {
                probe,
                rpc_port: port,
                max_lag_blocks: 0,
                stall_timeout: values::Duration(Duration::from_secs(60)),
                sync_timeout: values::Duration(Duration::from_secs(600)),
                full_sync_estimate: None,
                http: (probe == Probe::Http).then(|| HttpSpec {
                    path: HttpPath::parse("/info").unwrap(),
                    height_pointer: JsonPointer::parse("/h").unwrap(),
                    target_pointer: None,
                    version_pointer: None,
                }),
                daemon_version: true,
                watch_interval: values::Duration(Duration::from_secs(60)),
                alert_after: values::Duration(Duration::from_secs(300)),
                min_synced: 1,
            },
        }
    }

    #[test]
    fn a_target_with_an_address_is_dialled_there_never_at_its_name() {
        let mut t = target(Probe::Bitcoin, Some(9332));
        assert_eq!(
            DnsResolver.resolve(&t, 9332).unwrap(),
            "node1.litecoin.internal.example:9332"
        );
        let mut r = StaticResolver::new();
        r.insert(
            "node1.litecoin.internal.example",
            "127.0.0.1:9".parse().unwrap(),
        );
        t.address = Some("10.0.3.7".into());
        assert_eq!(DnsResolver.resolve(&t, 9332).unwrap(), "10.0.3.7:9332");
        // The name has an entry, the address none: no fallback to the name.
        let e = r.resolve(&t, 9332).unwrap_err();
        assert!(e.to_string().contains("no address for 10.0.3.7"), "{e}");
        r.insert("10.0.3.7", "127.0.0.1:10".parse().unwrap());
        assert_eq!(r.resolve(&t, 9332).unwrap(), "127.0.0.1:10");
    }

    fn prober(creds: RpcCredentials) -> RpcProber {
        let mut r = StaticResolver::new();
        // Never dialled: every case below fails before a connection is made.
        r.insert(
            "node1.litecoin.internal.example",
            "127.0.0.1:9".parse().unwrap(),
        );
        RpcProber::new(Arc::new(r), creds, Duration::from_secs(2))
    }

    #[tokio::test]
    async fn config_errors_before_any_dial() {
        let mut creds = RpcCredentials::new();
        creds.insert("litecoin", "u".into(), "pw-not-printed".into());
        let p = prober(creds.clone());
        let e = p.probe(&target(Probe::None, Some(9332))).await.unwrap_err();
        assert!(
            matches!(&e, ProbeError::Config { detail, .. } if detail.contains("litecoin has no probe")),
            "{e}"
        );
        let e = p.probe(&target(Probe::Bitcoin, None)).await.unwrap_err();
        assert!(
            matches!(&e, ProbeError::Config { detail, .. } if detail.contains("rpc_port")),
            "{e}"
        );
        let e = prober(RpcCredentials::new())
            .probe(&target(Probe::Bitcoin, Some(9332)))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ProbeError::Config { detail, .. } if detail.contains("FLEET_RPC_PASSWORD_LITECOIN")),
            "{e}"
        );
        let mut other = target(Probe::Bitcoin, Some(9332));
        other.dns_name = "node2.litecoin.internal.example".into();
        let e = p.probe(&other).await.unwrap_err();
        assert!(matches!(e, ProbeError::Config { .. }), "{e}");
        // Nothing of the password in Debug.
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("pw-not-printed") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }
}
