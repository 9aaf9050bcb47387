//! Real node software for the health probe tests: Debian's `litecoind` and Foundry's `anvil`
//! (npm), started on loopback by the test and stopped by a guard on success and on failure.
//!
//! Where the binaries are comes from `FLEET_TEST_LITECOIND` and `FLEET_TEST_ANVIL`, which
//! `tests/run` sets after installing them. Without them the tests fail, never skip.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use fleet_repo_schema::Probe;
use fleet_repo_schema::desired::{HealthSpec, HttpSpec};
use fleet_repo_schema::values;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reconciler::health::ProbeTarget;
use reconciler::node::NodeKey;
use serde_json::{Value, json};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// Wall-clock unix milliseconds (what the gate's `now` is in production).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// `n` distinct free TCP ports on 127.0.0.1 (held together while chosen, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// One free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

fn binary_from_env(var: &str, name: &str) -> PathBuf {
    let Ok(v) = std::env::var(var) else {
        panic!(
            "{var} is not set: these tests need {name} (real node software). \
             Run them through `tests/run`, which installs it and sets {var}."
        )
    };
    let p = PathBuf::from(&v);
    let p = if p.is_dir() { p.join(name) } else { p };
    assert!(
        p.is_file(),
        "{var}={v}: no {name} binary there; `tests/run` installs it"
    );
    p
}

/// `litecoind` from `FLEET_TEST_LITECOIND` (the binary or its directory).
pub fn litecoind_bin() -> PathBuf {
    binary_from_env("FLEET_TEST_LITECOIND", "litecoind")
}

/// The version a binary says it is (`litecoind -version`, `anvil --version`), read by the
/// same rule as a probe's answer: what a probe of a node running it must report.
pub fn version_of(bin: &Path, flag: &str) -> reconciler::health::DaemonVersion {
    let out = std::process::Command::new(bin)
        .arg(flag)
        .output()
        .unwrap_or_else(|e| panic!("{} {flag}: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    reconciler::health::DaemonVersion::from_client(first)
        .unwrap_or_else(|| panic!("{} {flag} said no version: {first:?}", bin.display()))
}

/// `anvil` from `FLEET_TEST_ANVIL` (the binary or its directory).
pub fn anvil_bin() -> PathBuf {
    binary_from_env("FLEET_TEST_ANVIL", "anvil")
}

/// A child process that is stopped when the guard is dropped: SIGTERM, up to 20 s to exit
/// (a daemon flushes its databases), then SIGKILL; always waited for.
#[derive(Debug)]
pub struct ProcessGuard {
    name: String,
    child: Option<Child>,
}

impl ProcessGuard {
    /// Spawn `cmd` as `name`.
    pub fn spawn(name: &str, cmd: &mut Command) -> ProcessGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ProcessGuard {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// Guard a child spawned elsewhere (to read its stdout first).
    pub fn adopt(name: &str, child: Child) -> ProcessGuard {
        ProcessGuard {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Wait up to `timeout` for it to exit by itself (after an RPC `stop`); true if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited() {
                self.child = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// SIGKILL now, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for it to exit; its exit status, or None if it had
    /// to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.stop_with("-TERM", timeout)
    }

    /// `signal` (`-TERM`, `-HUP`, …), then wait up to `timeout` for it to exit; its exit
    /// status, or None if it had to be killed.
    pub fn stop_with(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn stop_now(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SIGTERM through kill(1): the workspace forbids unsafe code, so no libc::kill.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not exit on SIGTERM within 20 s: killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// An RPC error or a transport failure of [`JsonRpc::call`].
#[derive(Debug, Clone, PartialEq)]
pub enum RpcError {
    /// The node answered with an error object.
    Rpc {
        /// `error.code`.
        code: i64,
        /// `error.message`.
        message: String,
    },
    /// No usable answer.
    Transport(String),
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Rpc { code, message } => write!(f, "RPC error {code}: {message}"),
            RpcError::Transport(d) => f.write_str(d),
        }
    }
}

/// A JSON-RPC client for driving test nodes (mining, stopping): the test's own hands, not
/// the code under test.
#[derive(Clone)]
pub struct JsonRpc {
    url: String,
    auth: Option<String>,
    version: &'static str,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for JsonRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRpc")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl JsonRpc {
    /// JSON-RPC `version` ("1.0" for bitcoind-style nodes, "2.0" for Ethereum) at a loopback
    /// `addr`, with optional basic auth.
    pub fn new(addr: SocketAddr, version: &'static str, auth: Option<(&str, &str)>) -> JsonRpc {
        assert!(addr.ip().is_loopback(), "tests only dial loopback: {addr}");
        JsonRpc {
            url: format!("http://{addr}/"),
            auth: auth
                .map(|(u, p)| format!("Basic {}", BASE64_STANDARD.encode(format!("{u}:{p}")))),
            version,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(HttpConnector::new()),
        }
    }

    /// Call `method` with `params`, waiting up to `timeout`.
    pub async fn call_with(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let body = json!({"jsonrpc": self.version, "id": 1, "method": method, "params": params});
        let mut req =
            hyper::Request::post(&self.url).header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| RpcError::Transport(format!("{e:?}")))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| RpcError::Transport(e.to_string()))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
                RpcError::Transport(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))
            })?;
            match v.get("error") {
                None | Some(Value::Null) => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                Some(e) => Err(RpcError::Rpc {
                    code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                }),
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(RpcError::Transport(format!(
                    "{method}: no answer in {timeout:?}"
                )))
            })
    }

    /// Call `method` with `params` (30 s).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.call_with(method, params, Duration::from_secs(30))
            .await
    }
}

/// The regtest address blocks are mined to (no wallet needed).
pub const LTC_REGTEST_ADDR: &str = "rltc1qlqvaeyd85j9cd3e3xmzca4dzwawltm8lva5dug";

/// A `litecoind -regtest` on loopback with its own data directory.
#[derive(Debug)]
pub struct Litecoind {
    /// Name (for messages).
    pub name: String,
    /// RPC port.
    pub rpc_port: u16,
    /// P2P port.
    pub p2p_port: u16,
    /// Where Tor would reach the node's onion service: litecoind 0.21 binds it whenever
    /// `-bind` is given (by default 127.0.0.1:19444, shared by every node), so each node gets
    /// its own.
    onion_port: u16,
    /// RPC user.
    pub user: String,
    password: String,
    extra: Vec<String>,
    // Dropped in this order: the process, then its data directory.
    proc: Option<ProcessGuard>,
    dir: TempDir,
}

impl Litecoind {
    /// A node named `name` (not started) with RPC credentials `user`/`password`.
    pub fn new(name: &str, user: &str, password: &str) -> Litecoind {
        let ports = free_ports(3);
        Litecoind {
            name: name.to_string(),
            rpc_port: ports[0],
            p2p_port: ports[1],
            onion_port: ports[2],
            user: user.to_string(),
            password: password.to_string(),
            extra: Vec::new(),
            proc: None,
            dir: tempfile::Builder::new()
                .prefix(&format!("fleet-ltc-{name}-"))
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// Also pass `arg` at every start (e.g. `-addnode=127.0.0.1:PORT`).
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.extra.push(arg.into());
        self
    }

    /// The RPC address.
    pub fn rpc_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.rpc_port))
    }

    /// The P2P address.
    pub fn p2p_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.p2p_port))
    }

    /// Its data directory.
    pub fn datadir(&self) -> &Path {
        self.dir.path()
    }

    /// A client with the node's credentials.
    pub fn rpc(&self) -> JsonRpc {
        JsonRpc::new(self.rpc_addr(), "1.0", Some((&self.user, &self.password)))
    }

    /// Start the daemon (foreground child, logs in its data directory) and return at once.
    pub fn start(&mut self) {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        let mut cmd = Command::new(litecoind_bin());
        cmd.arg("-regtest")
            .arg(format!("-datadir={}", self.dir.path().display()))
            .args([
                "-server=1",
                "-listen=1",
                "-listenonion=0",
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
                "-dnsseed=0",
                "-upnp=0",
                "-discover=0",
                "-disablewallet",
                "-printtoconsole=0",
                // Without it regtest mining fails after height 432 (MWEB activation).
                "-vbparams=mweb:9999999999:9999999999:100000000:100000001",
            ])
            .arg(format!("-bind=127.0.0.1:{}", self.p2p_port))
            .arg(format!("-bind=127.0.0.1:{}=onion", self.onion_port))
            .arg(format!("-port={}", self.p2p_port))
            .arg(format!("-rpcport={}", self.rpc_port))
            .arg(format!("-rpcuser={}", self.user))
            .arg(format!("-rpcpassword={}", self.password))
            .args(&self.extra)
            // Debian's wrapper script writes ~/.litecoin: keep it in the node's directory.
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.proc = Some(ProcessGuard::spawn(
            &format!("litecoind {}", self.name),
            &mut cmd,
        ));
    }

    /// Wait until its RPC answers `getblockcount` (past the warm-up), up to `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let rpc = self.rpc();
        let deadline = Instant::now() + timeout;
        loop {
            match rpc.call("getblockcount", json!([])).await {
                Ok(_) => return,
                Err(e) => {
                    if self.proc.as_mut().is_none_or(ProcessGuard::exited) {
                        panic!(
                            "litecoind {} exited during start-up: {e}; {}",
                            self.name,
                            self.log_tail()
                        );
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "litecoind {} not ready after {timeout:?}: {e}; {}",
                            self.name,
                            self.log_tail()
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start and wait until ready.
    pub async fn start_ready(&mut self) {
        self.start();
        self.wait_ready(Duration::from_secs(60)).await;
    }

    /// `stop` over RPC and wait for the process to exit (killed by its guard if it does not
    /// within 30 s).
    pub async fn stop(&mut self) {
        let Some(mut p) = self.proc.take() else {
            return;
        };
        let _ = self.rpc().call("stop", json!([])).await;
        if !p.wait_exit(Duration::from_secs(30)).await {
            eprintln!("litecoind {} ignored `stop` for 30 s", self.name);
        }
        drop(p);
    }

    /// The last lines of its debug.log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.dir.path().join("regtest/debug.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "last lines of {}:\n{}",
            log.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    /// `getblockcount`.
    pub async fn block_count(&self) -> u64 {
        self.rpc()
            .call("getblockcount", json!([]))
            .await
            .unwrap_or_else(|e| panic!("getblockcount on {}: {e}", self.name))
            .as_u64()
            .expect("a count")
    }

    /// Mine `n` blocks to [`LTC_REGTEST_ADDR`].
    pub async fn mine(&self, n: u64) {
        self.rpc()
            .call_with(
                "generatetoaddress",
                json!([n, LTC_REGTEST_ADDR]),
                Duration::from_secs(300),
            )
            .await
            .unwrap_or_else(|e| panic!("generatetoaddress {n} on {}: {e}", self.name));
    }
}

/// Foundry's `anvil` on loopback (an in-memory Ethereum node that mines on demand).
#[derive(Debug)]
pub struct Anvil {
    /// Port.
    pub port: u16,
    proc: Option<ProcessGuard>,
    dir: TempDir,
}

impl Anvil {
    /// Start it on a free port and wait until it answers (up to 30 s).
    pub async fn start() -> Anvil {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("fleet-anvil-")
            .tempdir()
            .expect("temp dir");
        let log = std::fs::File::create(dir.path().join("anvil.log")).expect("log file");
        let mut cmd = Command::new(anvil_bin());
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chain-id", "31337", "--silent"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let mut a = Anvil {
            port,
            proc: Some(ProcessGuard::spawn("anvil", &mut cmd)),
            dir,
        };
        let rpc = a.rpc();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rpc.call("eth_blockNumber", json!([])).await {
                Ok(_) => return a,
                Err(e) => {
                    if a.proc.as_mut().is_none_or(ProcessGuard::exited) || Instant::now() > deadline
                    {
                        panic!("anvil did not start: {e}; log: {}", a.log());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A JSON-RPC 2.0 client.
    pub fn rpc(&self) -> JsonRpc {
        JsonRpc::new(self.addr(), "2.0", None)
    }

    /// Mine `n` blocks (`anvil_mine`).
    pub async fn mine(&self, n: u64) {
        self.rpc()
            .call("anvil_mine", json!([format!("{n:#x}")]))
            .await
            .unwrap_or_else(|e| panic!("anvil_mine {n}: {e}"));
    }

    /// Stop it now (SIGTERM, waited for).
    pub fn stop(&mut self) {
        self.proc.take();
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("anvil.log")).unwrap_or_default()
    }
}

/// A probe target for `coin`'s node `index` in `eu-central-1a`, named
/// `node<index>.<coin>.fleet.test` (tests map that name to loopback with a `StaticResolver`).
pub fn probe_target(
    coin: &str,
    index: u32,
    probe: Probe,
    rpc_port: Option<u16>,
    http: Option<(&str, &str, Option<&str>)>,
) -> ProbeTarget {
    ProbeTarget {
        key: NodeKey::parse(coin, "eu-central-1a", index).expect("a valid coin name"),
        instance_id: format!("i-{coin}{index}"),
        dns_name: format!("node{index}.{coin}.fleet.test"),
        address: None,
        health: HealthSpec {
            probe,
            rpc_port,
            max_lag_blocks: 0,
            stall_timeout: values::Duration(Duration::from_secs(60)),
            sync_timeout: values::Duration(Duration::from_secs(600)),
            full_sync_estimate: None,
            http: http.map(|(path, height, target)| HttpSpec {
                path: values::HttpPath::parse(path).expect("an HTTP path"),
                height_pointer: values::JsonPointer::parse(height).expect("a JSON pointer"),
                target_pointer: target
                    .map(|t| values::JsonPointer::parse(t).expect("a JSON pointer")),
                version_pointer: None,
            }),
            daemon_version: true,
            watch_interval: values::Duration(Duration::from_secs(60)),
            alert_after: values::Duration(Duration::from_secs(300)),
            min_synced: 1,
        },
    }
}
