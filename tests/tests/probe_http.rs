//! The probes' HTTP side against a tiny local server (tokio, 127.0.0.1): the `http` probe's
//! pointers and height formats, non-2xx, timeouts, non-HTTP answers; and the JSON-RPC probes'
//! requests and error answers that real nodes only give in bad moments (401, -28 warm-up,
//! Ethereum still syncing).

use fleet_repo_schema::Probe;
use fleet_tests::nodes::{free_port, now_ms, probe_target};
use reconciler::health::probe::{RpcCredentials, RpcProber, StaticResolver};
use reconciler::health::{
    ChainStatus, Gate, GateConfig, ProbeError, ProbeTarget, Prober, Verdict, WaitReason,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// How the server answers.
#[derive(Debug, Clone)]
enum Answer {
    Json(u16, String),
    Raw(&'static [u8]),
    Hang,
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A server on 127.0.0.1 that answers by `handler` and records what it saw. Aborted on drop.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let mut len = 0;
    let mut authorization = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().ok()?,
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        authorization,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    })
}

async fn serve(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (handler, seen) = (handler.clone(), seen2.clone());
            tokio::spawn(async move {
                let Some(req) = read_request(&mut s).await else {
                    return;
                };
                seen.lock().unwrap().push(req.clone());
                match handler(&req) {
                    Answer::Json(status, body) => {
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                    }
                    Answer::Raw(bytes) => {
                        let _ = s.write_all(bytes).await;
                    }
                    Answer::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Server { addr, seen, task }
}

fn prober_at(addr: SocketAddr, coin: &str, creds: RpcCredentials, timeout: Duration) -> RpcProber {
    let mut r = StaticResolver::new();
    r.insert(format!("node1.{coin}.fleet.test"), addr);
    RpcProber::new(Arc::new(r), creds, timeout)
}

fn http_target(path: &str, height: &str, target: Option<&str>) -> ProbeTarget {
    probe_target(
        "iota",
        1,
        Probe::Http,
        Some(14265),
        Some((path, height, target)),
    )
}

fn st(blocks: u64, headers: u64, ibd: bool) -> Result<ChainStatus, ProbeError> {
    Ok(ChainStatus {
        blocks,
        headers,
        initial_block_download: ibd,
        client: None,
    })
}

fn bad_answer(r: &Result<ChainStatus, ProbeError>) -> String {
    match r {
        Err(ProbeError::BadAnswer { detail, .. }) => detail.clone(),
        other => panic!("expected a bad answer, got {other:?}"),
    }
}

#[tokio::test]
async fn http_probe_reads_heights_at_pointers() {
    let server = serve(|req| match req.path.as_str() {
        "/api/core/v2/info" => Answer::Json(
            200,
            r#"{"name":"HORNET","version":"2.0.2","status":{"confirmedMilestone":{"index":"8000"},"latestMilestone":{"index":"0x1f42"}}}"#
                .into(),
        ),
        "/num" => Answer::Json(200, r#"{"data":{"height":123456}}"#.into()),
        "/hex" => Answer::Json(200, r#"{"h":"0x1E240"}"#.into()),
        "/odd" => Answer::Json(200, r#"{"h":"12.5","neg":-3,"big":"0x10000000000000000","deep":[[[[1]]]]}"#.into()),
        "/down" => Answer::Json(503, r#"{"h":1}"#.into()),
        "/redirect" => Answer::Json(301, "".into()),
        "/html" => Answer::Json(200, "<html>ok</html>".into()),
        _ => Answer::Json(404, "{}".into()),
    })
    .await;
    let p = prober_at(
        server.addr,
        "iota",
        RpcCredentials::new(),
        Duration::from_secs(5),
    );

    // Decimal string height, 0x-hex string target: blocks < headers, the gate holds.
    let t = http_target(
        "/api/core/v2/info",
        "/status/confirmedMilestone/index",
        Some("/status/latestMilestone/index"),
    );
    let reading = p.probe(&t).await;
    assert_eq!(reading, st(8000, 8002, false));
    // With `health.http.version_pointer`, the client's version from the same answer (hornet's
    // info shape); without one it stays unread.
    let mut with_version = t.clone();
    if let Some(h) = with_version.health.http.as_mut() {
        h.version_pointer =
            Some(fleet_repo_schema::values::JsonPointer::parse("/version").unwrap());
    }
    let client = p.probe(&with_version).await.expect("a reading").client;
    assert_eq!(client.map(|v| v.to_string()).as_deref(), Some("2.0.2"));
    with_version.health.daemon_version = false;
    assert_eq!(
        p.probe(&with_version).await.expect("a reading").client,
        None
    );
    let now = now_ms();
    let cfg = GateConfig {
        max_lag_blocks: 0,
        stall_timeout_ms: 60_000,
        sync_timeout_ms: 600_000,
        full_sync: false,
    };
    assert!(matches!(
        Gate::new(cfg, now).observe(now, &reading, None),
        Verdict::Waiting {
            reason: WaitReason::BlocksBehindHeaders,
            ..
        }
    ));

    // A number; no target pointer: headers = height, and the gate passes at the reference.
    let reading = p.probe(&http_target("/num", "/data/height", None)).await;
    assert_eq!(reading, st(123_456, 123_456, false));
    assert_eq!(
        Gate::new(cfg, now).observe(now, &reading, Some(123_456)),
        Verdict::InSync { height: 123_456 }
    );
    assert_eq!(
        p.probe(&http_target("/hex", "/h", None)).await,
        st(123_456, 123_456, false)
    );
    {
        let seen = server.seen.lock().unwrap();
        assert!(
            seen.iter()
                .all(|s| s.method == "GET" && s.authorization.is_none()),
            "{seen:?}"
        );
    }

    for (path, ptr, want) in [
        ("/odd", "/h", "/h is not a height"),
        ("/odd", "/neg", "not a height"),
        ("/odd", "/big", "not a height"),
        ("/odd", "/deep", "not a height"),
        ("/odd", "/nothing/here", "no value at /nothing/here"),
        ("/down", "/h", "HTTP 503"),
        ("/redirect", "/h", "HTTP 301"),
        ("/missing", "/h", "HTTP 404"),
        ("/html", "/h", "not JSON"),
    ] {
        let r = p.probe(&http_target(path, ptr, None)).await;
        let d = bad_answer(&r);
        assert!(d.contains(want), "{path} {ptr}: {d:?} should say {want:?}");
    }
}

#[tokio::test]
async fn a_silent_server_is_a_timeout_and_a_closed_port_unreachable() {
    let server = serve(|_| Answer::Hang).await;
    let timeout = Duration::from_millis(300);
    let p = prober_at(server.addr, "iota", RpcCredentials::new(), timeout);
    let t = http_target("/info", "/h", None);
    let t0 = Instant::now();
    let r = p.probe(&t).await;
    let took = t0.elapsed();
    assert!(
        matches!(&r, Err(ProbeError::Timeout { ms: 300, addr, .. }) if *addr == server.addr.to_string()),
        "{r:?}"
    );
    assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
    // The server did get the request: the timeout covered the wait for the answer.
    assert_eq!(server.seen.lock().unwrap().len(), 1);

    // The same for the JSON-RPC probes (both Ethereum requests share one timeout).
    let eth = prober_at(server.addr, "ethereum", RpcCredentials::new(), timeout);
    let r = eth
        .probe(&probe_target(
            "ethereum",
            1,
            Probe::Ethereum,
            Some(8545),
            None,
        ))
        .await;
    assert!(matches!(r, Err(ProbeError::Timeout { .. })), "{r:?}");

    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let p = prober_at(
        closed,
        "iota",
        RpcCredentials::new(),
        Duration::from_secs(5),
    );
    let t0 = Instant::now();
    let r = p.probe(&t).await;
    assert!(matches!(&r, Err(ProbeError::Unreachable { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    eprintln!("closed port: {}", r.unwrap_err());
}

#[tokio::test]
async fn not_http_is_a_bad_answer() {
    let server = serve(|_| Answer::Raw(b"SSH-2.0-OpenSSH_9.2\r\n")).await;
    let p = prober_at(
        server.addr,
        "iota",
        RpcCredentials::new(),
        Duration::from_secs(5),
    );
    let r = p.probe(&http_target("/info", "/h", None)).await;
    let d = bad_answer(&r);
    assert!(d.contains("not HTTP"), "{d}");
}

const PASSWORD: &str = "s3cret-pass-never-shown";

fn litecoin_creds() -> RpcCredentials {
    let mut c = RpcCredentials::new();
    c.insert("litecoin", "rpcuser".into(), PASSWORD.into());
    c
}

#[tokio::test]
async fn bitcoin_probe_request_and_error_answers() {
    let server = serve(|req| {
        // The request the bitcoin probe sends, with basic auth.
        let auth_ok = req.authorization.as_deref() == Some("Basic cnBjdXNlcjpzM2NyZXQtcGFzcy1uZXZlci1zaG93bg==");
        match (req.path.as_str(), auth_ok) {
            (_, false) => Answer::Json(401, String::new()),
            ("/", true) => Answer::Json(
                500,
                r#"{"result":null,"error":{"code":-28,"message":"Loading block index..."},"id":"fleet"}"#
                    .into(),
            ),
            _ => Answer::Json(404, String::new()),
        }
    })
    .await;
    let t = probe_target("litecoin", 1, Probe::Bitcoin, Some(9332), None);
    let p = prober_at(
        server.addr,
        "litecoin",
        litecoin_creds(),
        Duration::from_secs(5),
    );
    let r = p.probe(&t).await;
    let d = bad_answer(&r);
    assert!(d.contains("RPC error -28: Loading block index..."), "{d}");
    {
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen[0].method, "POST");
        assert_eq!(
            seen[0].body,
            r#"{"jsonrpc":"1.0","id":"fleet","method":"getblockchaininfo","params":[]}"#
        );
    }

    let mut wrong = RpcCredentials::new();
    wrong.insert("litecoin", "rpcuser".into(), format!("{PASSWORD}-wrong"));
    let r = prober_at(server.addr, "litecoin", wrong, Duration::from_secs(5))
        .probe(&t)
        .await;
    let d = bad_answer(&r);
    assert!(
        d.contains("refused the RPC credentials of litecoin (HTTP 401"),
        "{d}"
    );
    let shown = format!("{} {:?}", r.as_ref().unwrap_err(), r);
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[tokio::test]
async fn ethereum_probe_while_syncing_holds_the_gate() {
    let server = serve(|req| {
        let body = if req.body.contains("eth_syncing") {
            r#"{"jsonrpc":"2.0","id":1,"result":{"startingBlock":"0x0","currentBlock":"0x64","highestBlock":"0xc8"}}"#
        } else {
            r#"{"jsonrpc":"2.0","id":2,"result":"0x64"}"#
        };
        Answer::Json(200, body.into())
    })
    .await;
    let t = probe_target("ethereum", 1, Probe::Ethereum, Some(8545), None);
    let p = prober_at(
        server.addr,
        "ethereum",
        RpcCredentials::new(),
        Duration::from_secs(5),
    );
    let reading = p.probe(&t).await;
    assert_eq!(reading, st(100, 200, true));
    let now = now_ms();
    let cfg = GateConfig {
        max_lag_blocks: 1_000,
        stall_timeout_ms: 60_000,
        sync_timeout_ms: 600_000,
        full_sync: false,
    };
    // Syncing: held even with a generous max_lag and a reference it already meets.
    assert!(matches!(
        Gate::new(cfg, now).observe(now, &reading, Some(100)),
        Verdict::Waiting {
            reason: WaitReason::InitialBlockDownload,
            ..
        }
    ));
    // eth_syncing's object already holds both heights: eth_blockNumber is not asked, only the
    // client's version after the reading.
    let seen: Vec<String> = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].contains("eth_syncing"), "{seen:?}");
    assert!(seen[1].contains("web3_clientVersion"), "{seen:?}");
}
