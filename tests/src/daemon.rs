//! Running `fleet run` as a real process against a real git repository driven by the `git`
//! command line: the end-to-end tests, the crash test and the daemon benchmarks share this.

use crate::nodes::{ProcessGuard, free_port};
use crate::repo::{CoinSpec, fleet_yaml};
use hmac::{KeyInit, Mac};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `fleet` binary: `FLEET_BIN`, or the one cargo built next to this test's executable
/// (`tests/run` builds it first).
pub fn fleet_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLEET_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bench>
    for dir in exe.ancestors().skip(1).take(3) {
        let p = dir.join("fleet");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no fleet binary next to {}: build it first (`cargo build --bin fleet`, which tests/run does) or set FLEET_BIN",
        exe.display()
    )
}

/// `git` in `dir`, with a fixed identity; panics with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Fleet Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Fleet Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare "origin" repository (what GitHub would be) and a working clone operators push
/// from.
#[derive(Debug)]
pub struct Remote {
    /// The bare repository.
    pub origin: PathBuf,
    /// The working clone.
    pub work: PathBuf,
}

impl Remote {
    /// A new origin with `files` committed on `main` and pushed.
    pub fn new(root: &Path, files: &[(String, String)]) -> Remote {
        let origin = root.join("origin.git");
        let work = root.join("work");
        std::fs::create_dir_all(&origin).expect("mkdir");
        std::fs::create_dir_all(&work).expect("mkdir");
        git(&origin, &["init", "-q", "--bare", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                origin.to_str().expect("utf-8 path"),
            ],
        );
        let r = Remote { origin, work };
        r.write(files);
        r.commit_push("initial fleet");
        r
    }

    /// `file://` URL of the origin.
    pub fn url(&self) -> String {
        format!("file://{}", self.origin.display())
    }

    /// Write files into the working clone.
    pub fn write(&self, files: &[(String, String)]) {
        for (path, text) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
    }

    /// Commit everything (without pushing); the new commit id.
    pub fn commit(&self, msg: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", msg]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Commit everything and push; the new commit id.
    pub fn commit_push(&self, msg: &str) -> String {
        let rev = self.commit(msg);
        git(&self.work, &["push", "-q", "origin", "main"]);
        rev
    }

    /// Point origin's main at `rev` (a force-push of a rewritten history).
    pub fn force_push(&self, rev: &str) {
        git(&self.work, &["reset", "-q", "--hard", rev]);
        git(&self.work, &["push", "-q", "--force", "origin", "main"]);
    }
}

/// The fleet files for `coins`.
pub fn fleet_files(coins: &[CoinSpec]) -> Vec<(String, String)> {
    let mut v = vec![("fleet.yaml".to_string(), fleet_yaml())];
    for c in coins {
        v.push((format!("coins/{}.yaml", c.name), c.yaml()));
    }
    v
}

/// A coin with `zones` × `per_zone` nodes, patch-level approvals not needed, a short bake.
pub fn coin(
    name: &str,
    version: &str,
    zones: usize,
    per_zone: u32,
    max_unavailable: u32,
) -> CoinSpec {
    CoinSpec {
        name: name.into(),
        version: version.into(),
        instance_type: "c5.large".into(),
        data_volume_gb: 300,
        zones: crate::repo::SUBNETS[..zones]
            .iter()
            .map(|(z, _)| z.to_string())
            .collect(),
        nodes_per_zone: per_zone,
        max_unavailable,
        approval: "major".into(),
        bake: "5m".into(),
        before_upgrade: false,
        restore_new_nodes: true,
    }
}

/// HMAC-SHA256 of `body` under `secret`, as GitHub's `X-Hub-Signature-256`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut s = String::from("sha256=");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// One HTTP/1.1 request to `addr` (Connection: close).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(Reply { status, body })
}

/// A `fleet run` process.
#[derive(Debug)]
pub struct Daemon {
    guard: ProcessGuard,
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// Its state directory.
    pub state_dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Start `fleet run --config <config>` (the config gets `listen` and `state_dir`
    /// appended) with `env`. Returns once /healthz answers.
    pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let state_dir = dir.join("state");
        let cfg_path = dir.join("fleet-run.yaml");
        std::fs::write(
            &cfg_path,
            format!(
                "{config}\nlisten: {addr}\nstate_dir: {}\n",
                state_dir.display()
            ),
        )
        .expect("write config");
        let args = vec!["--config".to_string(), cfg_path.display().to_string()];
        Daemon::spawn(args, addr, state_dir, dir, env)
    }

    /// Start `fleet run <args> --listen <free port> --state-dir <dir>/state`.
    pub fn start_args(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let state_dir = dir.join("state");
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--listen".into(),
            addr.to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
        ]);
        Daemon::spawn(a, addr, state_dir, dir, env)
    }

    /// Start again with the same configuration (after a kill).
    pub fn restart(&mut self, dir: &Path, env: &[(&str, &str)]) {
        self.guard.kill9();
        let args = vec![
            "--config".to_string(),
            dir.join("fleet-run.yaml").display().to_string(),
        ];
        *self = Daemon::spawn(args, self.addr, self.state_dir.clone(), dir, env);
    }

    fn spawn(
        args: Vec<String>,
        addr: SocketAddr,
        state_dir: PathBuf,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = dir.join("fleet-run.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(fleet_bin());
        cmd.arg("run")
            .args(&args)
            .arg("--log-format")
            .arg("json")
            .env_remove("FLEET_GITHUB_WEBHOOK_SECRET")
            .env_remove("FLEET_GITHUB_TOKEN")
            .env_remove("FLEET_SLACK_BOT_TOKEN")
            .env_remove("FLEET_SLACK_SIGNING_SECRET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let guard = ProcessGuard::spawn("fleet run", &mut cmd);
        let mut d = Daemon {
            guard,
            addr,
            state_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if d.get("/healthz").is_some_and(|r| r.status == 200) {
                return d;
            }
            assert!(
                !d.guard.exited(),
                "fleet run exited at start:\n{}",
                d.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "fleet run did not answer /healthz in 30 s:\n{}",
                d.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// GET `path` (None: no answer).
    pub fn get(&self, path: &str) -> Option<Reply> {
        http(self.addr, "GET", path, &[], b"").ok()
    }

    /// /status as JSON.
    pub fn status(&self) -> Value {
        let r = self.get("/status").expect("/status answers");
        serde_json::from_str(&r.body).expect("/status is JSON")
    }

    /// The value of the sample `name{labels}` in /metrics (exact text before the value).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let r = self.get("/metrics")?;
        r.body.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == sample).then(|| v.parse().ok()).flatten()
        })
    }

    /// Poll `f` on /status until it holds; panics with the status and log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.get("/status")
                && let Ok(v) = serde_json::from_str::<Value>(&r.body)
                && f(&v)
            {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nstatus: {}\nlog:\n{}",
                    self.get("/status").map(|r| r.body).unwrap_or_default(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        self.guard.kill9();
    }

    /// SIGTERM and wait; the exit status (None: it had to be killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.guard.terminate(timeout)
    }

    /// `signal` (`-HUP`, …) and wait; the exit status (None: it had to be killed).
    pub fn stop_with(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        self.guard.stop_with(signal, timeout)
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Whether every node of `coin` in /status runs `version` and the coin is in sync.
pub fn coin_at(status: &Value, coin: &str, version: &str) -> bool {
    let c = &status["coins"][coin];
    if c["state"] != "in-sync" || c["desired_version"] != version {
        return false;
    }
    let Some(zones) = c["zones"].as_object() else {
        return false;
    };
    let nodes: Vec<&Value> = zones
        .values()
        .flat_map(|z| z["nodes"].as_array().into_iter().flatten())
        .collect();
    !nodes.is_empty()
        && nodes
            .iter()
            .all(|n| n["version"] == version && n["in_sync"] == true)
}
