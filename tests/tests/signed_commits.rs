//! `repo.verify.allowed_signers` with real `git` and keys made by `ssh-keygen`: a commit
//! signed by an allowed key is applied; an unsigned one, one signed by another key and a
//! forged one (a signed commit whose content was changed, signature kept) are refused as an
//! invalid revision (E115) before their files are read; fleet's verdict is git's own
//! (`git verify-commit` with the same file); and in `fleet run`, a refused commit makes no
//! provider call and the next good one rolls out.

use fleet_tests::daemon::{Daemon, Remote, coin, coin_at, fleet_files, git};
use reconciler::signers::AllowedSigners;
use reconciler::source::{GitAuth, Source};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A new ed25519 key pair in `dir`: (private key path, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// Commit everything in the working clone signed with `key` (git's SSH signing), push.
fn signed_commit(r: &Remote, key: &Path, msg: &str) -> String {
    git(&r.work, &["add", "-A"]);
    git(
        &r.work,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={}", key.display()),
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            msg,
        ],
    );
    git(&r.work, &["push", "-q", "origin", "main"]);
    git(&r.work, &["rev-parse", "HEAD"])
}

/// The head commit rewritten with another message, its signature kept (a forgery), pushed.
fn forged(r: &Remote) -> String {
    let raw = git(&r.work, &["cat-file", "commit", "HEAD"]);
    assert!(raw.contains("-----BEGIN SSH SIGNATURE-----"), "{raw}");
    let changed = format!("{raw}\n\nand something else\n");
    let mut child = Command::new("git")
        .args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .current_dir(&r.work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(changed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    git(&r.work, &["update-ref", "refs/heads/main", &id]);
    git(&r.work, &["push", "-q", "--force", "origin", "main"]);
    id
}

/// What git itself says of `rev` with `allowed` as its allowed signers file.
fn git_verifies(r: &Remote, allowed: &Path, rev: &str) -> bool {
    Command::new("git")
        .args([
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
            "verify-commit",
            rev,
        ])
        .current_dir(&r.work)
        .env("HOME", &r.work)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git verify-commit")
        .status
        .success()
}

/// The fleet's verdict on the head of `r`: Ok(()) applied, Err(message of its E115).
fn verdict(source: &Source) -> Result<(), String> {
    let (_, loaded) = source.poll(None).expect("poll");
    let loaded = loaded.expect("a new revision");
    match loaded.desired {
        Some(_) => Ok(()),
        None => {
            let d = &loaded.diagnostics[0];
            assert_eq!(d.code.as_str(), "E115", "{:?}", loaded.diagnostics);
            assert_eq!(loaded.diagnostics.len(), 1, "its files are not read");
            Err(d.message.clone())
        }
    }
}

#[test]
fn only_commits_signed_by_an_allowed_key_are_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = keygen(tmp.path(), "alice");
    let (mallory, _) = keygen(tmp.path(), "mallory");
    let allowed = tmp.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("# release managers\nalice@acme.example namespaces=\"git\" {alice_pub}\n"),
    )
    .unwrap();
    let signers = AllowedSigners::parse(&std::fs::read_to_string(&allowed).unwrap()).unwrap();
    let files = fleet_files(&[coin("litecoin", "0.21.4", 2, 1, 1)]);
    let remote = Remote::new(tmp.path(), &files);
    let source = Source::for_repo(
        &remote.url(),
        Some("main".into()),
        "",
        tmp.path().join("cache"),
        GitAuth::default(),
    )
    .unwrap();
    source.require_signatures(Arc::new(signers)).unwrap();
    let head = || git(&remote.work, &["rev-parse", "HEAD"]);

    // Remote::new's commit is unsigned.
    let e = verdict(&source).unwrap_err();
    assert!(e.contains("is not signed"), "{e}");
    assert!(!git_verifies(&remote, &allowed, &head()));

    let good = signed_commit(&remote, &alice, "signed by alice");
    assert_eq!(verdict(&source), Ok(()));
    assert!(git_verifies(&remote, &allowed, &good));

    signed_commit(&remote, &mallory, "signed by mallory");
    let e = verdict(&source).unwrap_err();
    assert!(e.contains("does not allow") && e.contains("SHA256:"), "{e}");
    assert!(!git_verifies(&remote, &allowed, &head()));

    signed_commit(&remote, &alice, "alice again");
    let f = forged(&remote);
    let e = verdict(&source).unwrap_err();
    assert!(
        e.contains("does not verify") && e.contains("alice@acme.example"),
        "{e}"
    );
    assert!(!git_verifies(&remote, &allowed, &f));

    // The next good commit is applied again.
    let good = signed_commit(&remote, &alice, "alice fixes it");
    assert_eq!(verdict(&source), Ok(()));
    assert!(git_verifies(&remote, &allowed, &good));

    // A key allowed for another namespace only does not sign commits.
    std::fs::write(
        &allowed,
        format!("alice@acme.example namespaces=\"file\" {alice_pub}\n"),
    )
    .unwrap();
    let file_only = AllowedSigners::parse(&std::fs::read_to_string(&allowed).unwrap()).unwrap();
    let s2 = Source::for_repo(
        &remote.url(),
        Some("main".into()),
        "",
        tmp.path().join("cache2"),
        GitAuth::default(),
    )
    .unwrap();
    s2.require_signatures(Arc::new(file_only)).unwrap();
    let e = verdict(&s2).unwrap_err();
    assert!(e.contains("does not allow"), "{e}");
    assert!(!git_verifies(&remote, &allowed, &good));
}

fn ssm_commands(state_dir: &Path) -> usize {
    let sim: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("sim.json")).expect("sim.json"))
            .expect("sim.json is JSON");
    sim["commands"].as_array().map_or(0, Vec::len)
}

#[test]
fn fleet_run_applies_nothing_from_a_refused_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = keygen(tmp.path(), "alice");
    let allowed = tmp.path().join("allowed_signers");
    std::fs::write(&allowed, format!("alice@acme.example {alice_pub}\n")).unwrap();
    let ltc = |v: &str| fleet_files(&[coin("litecoin", v, 2, 1, 1)]);
    let remote = Remote::new(tmp.path(), &ltc("0.21.4"));
    let c1 = signed_commit(&remote, &alice, "signed fleet");
    let cfg = format!(
        "repo:\n  url: {}\n  branch: main\n  poll_interval: 1h\n  watch: true\n  verify:\n    allowed_signers: {}\n\
         provider: sim\nsim:\n  speed: 600\n\
         reconcile:\n  requeue: 1h\n  gate_poll: 10s\n  backoff_min: 100ms\n  backoff_max: 2s\n",
        remote.url(),
        allowed.display()
    );
    let mut d = Daemon::start(tmp.path(), &cfg, &[]);
    d.wait_for("in sync at the signed commit", LONG, |s| {
        s["commit"] == c1.as_str() && coin_at(s, "litecoin", "0.21.4")
    });
    let before = ssm_commands(&d.state_dir);
    // An unsigned bump: refused, reported like an invalid revision, nothing sent.
    remote.write(&ltc("0.21.5"));
    let unsigned = remote.commit_push("unsigned bump");
    let s = d.wait_for("the unsigned commit refused", LONG, |s| {
        s["validation_error"]["commit"] == unsigned.as_str()
    });
    assert_eq!(
        s["commit"],
        c1.as_str(),
        "the last good revision stays in force"
    );
    let e = &s["validation_error"]["errors"][0];
    assert_eq!(e["code"], "E115", "{s}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("not signed"),
        "{e}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ssm_commands(&d.state_dir),
        before,
        "no command from a refused commit"
    );
    assert_eq!(
        d.metric("fleet_source_valid"),
        Some(0.0),
        "as an invalid revision"
    );
    // Signed: it rolls out.
    let c3 = signed_commit(&remote, &alice, "signed bump");
    d.wait_for("the signed bump rolled out", LONG, |s| {
        s["commit"] == c3.as_str() && coin_at(s, "litecoin", "0.21.5")
    });
    assert!(ssm_commands(&d.state_dir) > before);
    let _ = d.terminate(Duration::from_secs(20));
}
