//! A small HTTP/1.1 server on 127.0.0.1 for the API mocks (GitHub, Slack, an OCI registry).
//! It runs on its own thread and runtime, so sync tests (that drive the `fleet` binary) and
//! async tests (that call the bots in-process) use it alike; dropping it stops it.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Req {
    /// Method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query parameters (decoded).
    pub query: BTreeMap<String, String>,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Req {
    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON (Null when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// A JSON response.
    pub fn json(status: u16, v: &serde_json::Value) -> Resp {
        Resp {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::to_vec(v).expect("JSON"),
        }
    }

    /// An empty response.
    pub fn empty(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// With a header.
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Resp {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

/// The handler.
pub type Handler = Arc<dyn Fn(Req) -> Resp + Send + Sync>;

/// A running server.
#[derive(Debug)]
pub struct MockServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query string to a map.
pub fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl MockServer {
    /// Serve `handler` on a free loopback port.
    pub fn start(handler: Handler) -> MockServer {
        MockServer::start_on(0, handler)
    }

    /// Serve `handler` on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16, handler: Handler) -> MockServer {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind loopback");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let (stream, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                        _ = &mut rx => return,
                    };
                    let h = Arc::clone(&handler);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let h = Arc::clone(&h);
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes().to_vec())
                                        .unwrap_or_default();
                                    let r = Req {
                                        method: parts.method.to_string(),
                                        path: parts.uri.path().to_string(),
                                        query: parse_query(parts.uri.query().unwrap_or("")),
                                        headers: parts
                                            .headers
                                            .iter()
                                            .map(|(k, v)| {
                                                (
                                                    k.as_str().to_string(),
                                                    v.to_str().unwrap_or("").to_string(),
                                                )
                                            })
                                            .collect(),
                                        body,
                                    };
                                    let out = h(r);
                                    let mut resp =
                                        hyper::Response::new(Full::new(Bytes::from(out.body)));
                                    *resp.status_mut() = hyper::StatusCode::from_u16(out.status)
                                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                                    for (k, v) in out.headers {
                                        if let (Ok(k), Ok(v)) = (
                                            hyper::header::HeaderName::from_bytes(k.as_bytes()),
                                            hyper::header::HeaderValue::from_str(&v),
                                        ) {
                                            resp.headers_mut().append(k, v);
                                        }
                                    }
                                    Ok::<_, std::convert::Infallible>(resp)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        MockServer {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = parse_query("head=acme%3Afleet%2Fbump-x-1.0%2Bb&state=open&x=a+b&bad=%zz");
        assert_eq!(q["head"], "acme:fleet/bump-x-1.0+b");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["bad"], "%zz");
    }
}
