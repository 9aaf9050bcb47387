//! The git source against real remotes: a smart-HTTP server (git's own `http-backend` behind
//! basic authentication, `tests/fixtures/git-http-server.py`, standing in for GitHub's HTTPS
//! with a token; no TLS here) and local bare repositories, written with the `git` CLI.
//!
//! Token authentication (right, wrong, missing: the error says what to set and never holds the
//! token), a force-push rewriting history, a missing branch, the remote's default branch, a
//! fleet in a subdirectory, and an invalid commit loaded as diagnostics.

use fleet_tests::daemon::{Remote, coin, fleet_files, git};
use fleet_tests::nodes::ProcessGuard;
use reconciler::source::{GitAuth, GitSource, Source, SourceError};
use std::io::BufRead;
use std::process::{Command, Stdio};

const TOKEN: &str = "github_pat_11TESTTOKEN0123456789";

struct Server {
    _guard: ProcessGuard,
    port: u16,
}

fn http_server(root: &std::path::Path) -> Server {
    let script = fleet_tests::workspace_root().join("tests/fixtures/git-http-server.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(root)
        .env("GIT_TEST_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start the git HTTP server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("port line");
    let port = line.trim().parse().expect("a port number");
    // Hand the child to a guard so it is stopped on success and on failure.
    let guard = ProcessGuard::adopt("git-http-server", child);
    Server {
        _guard: guard,
        port,
    }
}

fn source(
    url: &str,
    branch: Option<&str>,
    cache: &std::path::Path,
    token: Option<&str>,
) -> GitSource {
    GitSource::new(
        url,
        branch.map(str::to_string),
        "",
        cache.to_path_buf(),
        GitAuth {
            token: token.map(str::to_string),
            ..GitAuth::default()
        },
    )
}

#[test]
fn https_style_token_auth_fetches_and_bad_tokens_fail_without_leaking() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = Remote::new(
        tmp.path(),
        &fleet_files(&[coin("litecoin", "0.21.4", 1, 1, 1)]),
    );
    let head = git(&remote.work, &["rev-parse", "HEAD"]);
    let server = http_server(tmp.path());
    let url = format!("http://127.0.0.1:{}/origin.git", server.port);

    let ok = source(&url, Some("main"), &tmp.path().join("cache"), Some(TOKEN));
    let h = ok.fetch().expect("fetch with the token");
    assert_eq!(h.rev, head);
    let loaded = ok.load(&h.rev).expect("load the commit");
    assert_eq!(
        loaded.desired.expect("valid").coins["litecoin"]
            .version
            .as_str(),
        "0.21.4"
    );

    let wrong = "github_pat_WRONG_TOKEN_999";
    let e = source(&url, Some("main"), &tmp.path().join("cache2"), Some(wrong))
        .fetch()
        .expect_err("a wrong token fails");
    let msg = e.to_string();
    assert!(matches!(e, SourceError::Fetch { .. }), "{msg}");
    assert!(
        !msg.contains(wrong) && !msg.contains(TOKEN),
        "the token leaked: {msg}"
    );

    let e = source(&url, Some("main"), &tmp.path().join("cache3"), None)
        .fetch()
        .expect_err("no token fails");
    assert!(e.to_string().contains("FLEET_GIT_TOKEN"), "{e}");

    // A token in the URL is never shown.
    let with_creds = format!(
        "http://x-access-token:{TOKEN}@127.0.0.1:{}/origin.git",
        server.port
    );
    let s = source(&with_creds, Some("main"), &tmp.path().join("cache4"), None);
    assert!(!s.display_url().contains(TOKEN));
    assert_eq!(s.fetch().expect("credentials from the URL").rev, head);
}

#[test]
fn force_push_moves_the_branch_and_missing_branches_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = Remote::new(
        tmp.path(),
        &fleet_files(&[coin("litecoin", "0.21.4", 1, 1, 1)]),
    );
    let c1 = git(&remote.work, &["rev-parse", "HEAD"]);
    remote.write(&fleet_files(&[coin("litecoin", "0.21.5", 1, 1, 1)]));
    let c2 = remote.commit_push("bump");
    let cache = tmp.path().join("cache");
    let s = source(&remote.url(), None, &cache, None);
    assert_eq!(
        s.fetch().expect("fetch").rev,
        c2,
        "the remote's default branch"
    );

    // Rewrite history: a different commit on top of c1, force-pushed.
    git(&remote.work, &["reset", "-q", "--hard", &c1]);
    remote.write(&fleet_files(&[coin("litecoin", "0.21.7", 1, 1, 1)]));
    let c3 = remote.commit("rewritten");
    git(&remote.work, &["push", "-q", "--force", "origin", "main"]);
    let h = s.fetch().expect("fetch after the force-push");
    assert_eq!(h.rev, c3);
    let d = s.load(&h.rev).expect("load").desired.expect("valid");
    assert_eq!(d.coins["litecoin"].version.as_str(), "0.21.7");

    let e = source(&remote.url(), Some("production"), &cache, None)
        .fetch()
        .expect_err("no such branch");
    assert!(
        matches!(&e, SourceError::NoBranch { available, .. } if available.contains("main")),
        "{e}"
    );
}

#[test]
fn a_fleet_in_a_subdirectory_and_an_invalid_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files: Vec<(String, String)> = fleet_files(&[coin("litecoin", "0.21.4", 1, 1, 1)])
        .into_iter()
        .map(|(p, t)| (format!("fleet/{p}"), t))
        .chain([("README.md".to_string(), "# infra\n".to_string())])
        .collect();
    let remote = Remote::new(tmp.path(), &files);
    let sub = GitSource::new(
        &remote.url(),
        Some("main".into()),
        "fleet",
        tmp.path().join("c"),
        GitAuth::default(),
    );
    let h = sub.fetch().expect("fetch");
    assert!(sub.load(&h.rev).expect("load").desired.is_some());
    let root = GitSource::new(
        &remote.url(),
        Some("main".into()),
        "",
        tmp.path().join("c"),
        GitAuth::default(),
    );
    let loaded = root.load(&h.rev).expect("load");
    assert!(loaded.desired.is_none(), "no fleet.yaml at the root");
    let missing = GitSource::new(
        &remote.url(),
        Some("main".into()),
        "nope",
        tmp.path().join("c"),
        GitAuth::default(),
    );
    assert!(
        missing
            .load(&h.rev)
            .unwrap_err()
            .to_string()
            .contains("repo.subdir")
    );

    // An invalid commit loads as diagnostics with file and line, through the same path.
    std::fs::write(
        remote.work.join("fleet/coins/litecoin.yaml"),
        "coin: litecoin\nversion: [1\n",
    )
    .expect("write");
    let bad = remote.commit_push("broken");
    let h = sub.fetch().expect("fetch");
    assert_eq!(h.rev, bad);
    let loaded = sub.load(&bad).expect("load");
    assert!(loaded.desired.is_none());
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.file == "coins/litecoin.yaml" && d.span.start.line >= 2),
        "{:?}",
        loaded.diagnostics
    );

    // The root of a local repository is git; a directory inside it is read as it is.
    assert!(matches!(
        Source::for_repo(
            remote.work.to_str().expect("utf-8"),
            None,
            "",
            tmp.path().join("c2"),
            GitAuth::default()
        ),
        Ok(Source::Git(_))
    ));
    assert!(matches!(
        Source::for_repo(
            remote.work.join("fleet").to_str().expect("utf-8"),
            None,
            "",
            tmp.path().join("c3"),
            GitAuth::default()
        ),
        Ok(Source::Dir(_))
    ));
}
