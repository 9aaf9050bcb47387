//! The release watch against GitHub's REST API on loopback (`github_mock`: the shapes of
//! GitHub's documentation, ETags and 304s, rate-limit headers, and the fleet repository as
//! a real bare git repository), through the real client (octocrab) and the real OCI digest
//! resolver (against a registry on loopback that asks for a bearer token).
//!
//! What a cycle must do: read every page of releases; pick the newest eligible version; open
//! exactly one pull request whose commit changes only `version:` (and `image.digest`) and
//! whose body says what a reviewer needs; cost nothing when nothing changed; never propose a
//! bump twice; supersede an older open bump; wait out rate limits; never propose a tag that
//! fails the version rule; change nothing in a dry run; resume a cycle interrupted between
//! the branch and the pull request.

use bots::github::{GitHub, GitHubConfig, Pacer};
use bots::registry::{DigestResolver, OciResolver};
use bots::watch::{self, CoinOutcome, CycleReport, WatchSettings};
use fleet_repo_schema::{Desired, MemTree};
use fleet_tests::daemon::{Remote, git};
use fleet_tests::github_mock::{self, GitHubMock, release};
use fleet_tests::mock_http::{MockServer, Req, Resp};
use fleet_tests::workspace_root;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "ghp_test_token_0123456789";
const FLEET: &str = "acme/fleet";
const DAY: i64 = 86_400;
const DIGEST_28_2: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const DIGEST_29: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Real time for `now`, recorded (not slept) waits that advance it.
#[derive(Debug, Default)]
struct TestPacer {
    offset_ms: AtomicI64,
    sleeps: Mutex<Vec<Duration>>,
}

impl Pacer for TestPacer {
    fn now_ms(&self) -> i64 {
        now_s() * 1000 + self.offset_ms.load(Ordering::SeqCst)
    }
    fn sleep(
        &self,
        d: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        self.sleeps.lock().unwrap().push(d);
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
        Box::pin(async {})
    }
}

/// Every file of examples/fleet, with `edit` applied to (path, text).
fn example_files(edit: impl Fn(&str, String) -> String) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = workspace_root().join("examples/fleet");
    let mut v = Vec::new();
    walk(&root, &root, &mut v);
    v.into_iter()
        .map(|(p, t)| {
            let t = edit(&p, t);
            (p, t)
        })
        .collect()
}

fn desired_of(files: &[(String, String)]) -> Desired {
    let mut t = MemTree::new();
    for (p, s) in files {
        t.insert(p, s.as_bytes().to_vec());
    }
    let l = fleet_repo_schema::load(&t);
    l.desired
        .unwrap_or_else(|| panic!("fixture invalid: {:?}", l.diagnostics))
}

/// An OCI registry on loopback: `HEAD /v2/<name>/manifests/<tag>` answers 401 with a
/// bearer challenge until a token from `/token` is presented.
fn registry(tags: Tags) -> MockServer {
    let realm = Arc::new(Mutex::new(String::new()));
    let r2 = Arc::clone(&realm);
    let srv = MockServer::start(Arc::new(move |req: Req| {
        if req.path == "/token" {
            if req.query.get("scope").map(String::as_str)
                != Some("repository:coin-daemons/bitcoin:pull")
            {
                return Resp::json(400, &json!({"errors": [{"code": "DENIED"}]}));
            }
            return Resp::json(200, &json!({"token": "registry-token", "expires_in": 300}));
        }
        if req.header("authorization") != Some("Bearer registry-token") {
            return Resp::json(401, &json!({"errors": [{"code": "UNAUTHORIZED"}]})).header(
                "www-authenticate",
                format!(
                    "Bearer realm=\"{}/token\",service=\"registry.test\",scope=\"repository:coin-daemons/bitcoin:pull\"",
                    r2.lock().unwrap()
                ),
            );
        }
        let tag = req.path.rsplit('/').next().unwrap_or("");
        match tags.lock().unwrap().iter().find(|(t, _)| *t == tag) {
            Some((_, d)) => Resp::empty(200)
                .header("docker-content-digest", *d)
                .header("content-type", "application/vnd.oci.image.index.v1+json"),
            None => Resp::json(404, &json!({"errors": [{"code": "MANIFEST_UNKNOWN"}]})),
        }
    }));
    *realm.lock().unwrap() = srv.url();
    srv
}

/// The tags a registry knows, and their digests (a test pushes one by adding it).
type Tags = Arc<Mutex<Vec<(&'static str, &'static str)>>>;

struct Rig {
    _tmp: tempfile::TempDir,
    tags: Tags,
    remote: Remote,
    gh: GitHubMock,
    _registry: MockServer,
    files: Vec<(String, String)>,
    desired: Desired,
    client: GitHub,
    pacer: Arc<TestPacer>,
    resolver: OciResolver,
}

impl Rig {
    /// The example fleet on a GitHub Enterprise base path, bitcoin's image on the loopback
    /// registry (which knows 29.0), bitcoin/bitcoin with 250 releases over 3 pages.
    fn new(edit: impl Fn(&str, String) -> String) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let tags: Tags = Arc::new(Mutex::new(vec![("29.0", DIGEST_29)]));
        let reg = registry(Arc::clone(&tags));
        let host = reg.addr.to_string();
        let files = example_files(|p, t| {
            let t = if p == "coins/bitcoin.yaml" {
                t.replace(
                    "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin",
                    &format!("{host}/coin-daemons/bitcoin"),
                )
            } else {
                t
            };
            edit(p, t)
        });
        let remote = Remote::new(tmp.path(), &files);
        let gh = GitHubMock::start(TOKEN, "/api/v3");
        gh.add_repo(FLEET, &remote.origin);
        gh.set_releases("bitcoin/bitcoin", bitcoin_releases(false));
        let pacer = Arc::new(TestPacer::default());
        let client = client(&gh, TOKEN, &pacer);
        Rig {
            tags,
            desired: desired_of(&files),
            files,
            remote,
            gh,
            _registry: reg,
            client,
            pacer,
            resolver: OciResolver::new(None).unwrap(),
            _tmp: tmp,
        }
    }

    async fn cycle(&self, dry_run: bool) -> CycleReport {
        let s = WatchSettings {
            fleet_repo: FLEET.into(),
            base: "main".into(),
            subdir: String::new(),
            dry_run,
        };
        watch::cycle(
            &self.client,
            &self.desired,
            &s,
            Some(&self.resolver as &dyn DigestResolver),
            now_s() * 1000,
        )
        .await
    }

    fn file_on(&self, branch: &str, path: &str) -> String {
        let id = github_mock::git::resolve(&self.remote.origin, branch).expect("branch");
        String::from_utf8(
            github_mock::git::file(&self.remote.origin, id, path)
                .expect("file")
                .0,
        )
        .unwrap()
    }
}

fn client(gh: &GitHubMock, token: &str, pacer: &Arc<TestPacer>) -> GitHub {
    GitHub::new(
        &GitHubConfig {
            api_url: gh.api_url(),
            token: Some(token.into()),
            max_wait: Duration::from_secs(600),
        },
        Arc::clone(pacer) as Arc<dyn Pacer>,
    )
    .unwrap()
}

/// 250 releases, newest created first: a draft 30.0, a prerelease 29.1rc1, a 29.2 published
/// an hour ago (younger than min_release_age 2d), 245 old 0.x releases, and 29.0 published
/// 3 days ago but created long ago, so GitHub lists it on the last page.
fn bitcoin_releases(with_29_1: bool) -> Vec<serde_json::Value> {
    let r = "bitcoin/bitcoin";
    let now = now_s();
    let mut v = vec![
        release(r, 3000, "v30.0", None, false, "draft"),
        release(r, 2999, "v29.1rc1", Some(now - 5 * DAY), true, "rc"),
        release(r, 2998, "v29.2", Some(now - 3600), false, "too new"),
    ];
    if with_29_1 {
        v.insert(
            0,
            release(r, 3001, "v29.1", Some(now - 3 * DAY), false, "29.1 notes"),
        );
    }
    for i in 0..245u64 {
        v.push(release(
            r,
            1000 + i,
            &format!("v0.{}.{}", 20 - (i / 20), i % 20),
            Some(now - 400 * DAY),
            false,
            "old",
        ));
    }
    v.push(release(
        r,
        2000,
        "v29.0",
        Some(now - 3 * DAY),
        false,
        "## Notable changes\n\nThanks to @alice for #31415.\n\n<!-- internal -->Full changelog below.",
    ));
    v
}

fn writes(reqs: &[github_mock::Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn a_release_becomes_one_pull_request_changing_only_the_version_and_digest() {
    let rig = Rig::new(|_, t| t);
    let report = rig.cycle(false).await;
    let CoinOutcome::Opened {
        version,
        number,
        url,
        superseded,
        draft,
    } = &report.coins["bitcoin"]
    else {
        panic!("{:#?}", report.coins);
    };
    assert_eq!((version.as_str(), *number), ("29.0", 1));
    assert!(!*draft, "the image is in the registry: ready at once");
    assert!(superseded.is_empty());
    assert_eq!(url, "https://github.com/acme/fleet/pull/1");
    // Every other coin's upstream has no release here: up to date, no pull request.
    for c in ["dogecoin", "ethereum", "iota", "litecoin", "monero"] {
        assert!(
            matches!(report.coins[c], CoinOutcome::UpToDate { .. }),
            "{c}: {:?}",
            report.coins[c]
        );
    }

    // All three pages were read, following Link headers under the API base.
    let reqs = rig.gh.take_requests();
    let pages: Vec<Option<&String>> = reqs
        .iter()
        .filter(|r| r.path == "/repos/bitcoin/bitcoin/releases")
        .map(|r| r.query.get("page"))
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages[1].map(String::as_str), Some("2"));
    assert_eq!(pages[2].map(String::as_str), Some("3"));
    assert_eq!(
        writes(&reqs),
        [
            "POST /repos/acme/fleet/git/refs",
            "PUT /repos/acme/fleet/contents/coins/bitcoin.yaml",
            "POST /repos/acme/fleet/pulls"
        ]
    );

    // The branch's commit changes coins/bitcoin.yaml only, and in it only two lines.
    let pulls = rig.gh.pulls();
    assert_eq!(pulls.len(), 1);
    let p = &pulls[0];
    assert_eq!(
        (p.head.as_str(), p.base.as_str()),
        ("fleet/bump-bitcoin-29.0", "main")
    );
    assert_eq!(p.title, "bitcoin: 28.1 → 29.0");
    let changed = git(
        &rig.remote.origin,
        &["diff", "--name-only", "main", "fleet/bump-bitcoin-29.0"],
    );
    assert_eq!(changed, "coins/bitcoin.yaml");
    let before = &rig
        .files
        .iter()
        .find(|(p, _)| p == "coins/bitcoin.yaml")
        .unwrap()
        .1;
    let after = rig.file_on("fleet/bump-bitcoin-29.0", "coins/bitcoin.yaml");
    let old_digest = "sha256:fed9369828c2e48f88cfbe36ef0e2d25a14d0c48d6287e9eb59bde270e54c265";
    let expected = before
        .replace("version: \"28.1\"", "version: \"29.0\"")
        .replace(old_digest, DIGEST_29);
    assert_eq!(
        after, expected,
        "only version and digest change, every other byte stays"
    );
    let diff_lines: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff_lines.len(), 2, "{diff_lines:?}");
    let msg = git(
        &rig.remote.origin,
        &["log", "-1", "--format=%B", "fleet/bump-bitcoin-29.0"],
    );
    assert!(msg.starts_with("bitcoin: 28.1 → 29.0"), "{msg}");

    // The body: release, link, date, class, approval, image, nodes zone by zone, notes.
    let b = &p.body;
    for needle in [
        "[Release 29.0](https://github.com/bitcoin/bitcoin/releases/tag/v29.0)",
        "published 20",
        "**Version change:** major (28.1 → 29.0)",
        "**Approval:** needed (`rollout.approval: major`)",
        "`U012ABCDEF`",
        &format!("pinned to `{DIGEST_29}`"),
        "| 1 | eu-central-1a | `node1.bitcoin.internal` |",
        "| 2 | eu-central-1b | `node2.bitcoin.internal` |",
        "| 3 | eu-central-1c | `node3.bitcoin.internal` |",
        "at most 1 down at once",
        "stay so for 30m",
        "a snapshot of its data volume",
        &format!("fleet-node upgrade 29.0 {DIGEST_29}"),
        "Thanks to `@alice` for bitcoin/bitcoin#31415.",
    ] {
        assert!(b.contains(needle), "body lacks {needle:?}:\n{b}");
    }
    assert!(
        !b.contains("internal -->"),
        "HTML comments are dropped:\n{b}"
    );
    assert_eq!(report.requests.rate_limited, 0);
}

#[tokio::test]
async fn an_idle_cycle_is_free_and_never_opens_a_second_pull_request() {
    let rig = Rig::new(|_, t| t);
    rig.cycle(false).await;
    // The second cycle still pays for one page: the list of open pull requests changed
    // (the first cycle opened one). From then on nothing changes.
    let second = rig.cycle(false).await;
    assert_eq!(second.requests.counted, 1, "{:?}", second.requests);
    rig.gh.take_requests();
    let remaining = rig.gh.st().remaining;

    let report = rig.cycle(false).await;
    assert!(
        matches!(
            report.coins["bitcoin"],
            CoinOutcome::AlreadyOpen { number: 1, .. }
        ),
        "{:?}",
        report.coins["bitcoin"]
    );
    let reqs = rig.gh.take_requests();
    assert!(writes(&reqs).is_empty(), "{:?}", writes(&reqs));
    assert!(
        reqs.iter().all(|r| r.method == "GET" && r.status == 304),
        "{reqs:#?}"
    );
    // 3 pages of bitcoin's releases, 1 page for each of the 5 other coins, the open pulls.
    assert_eq!(report.requests.requests, 9);
    assert_eq!(report.requests.not_modified, 9);
    assert_eq!(
        report.requests.counted, 0,
        "an idle cycle costs no rate limit"
    );
    assert_eq!(
        rig.gh.st().remaining,
        remaining,
        "GitHub's own count agrees"
    );
    assert_eq!(rig.gh.pulls().len(), 1);
}

#[tokio::test]
async fn a_newer_release_supersedes_the_open_bump_and_a_closed_one_is_not_reopened() {
    let rig = Rig::new(|_, t| t);
    rig.cycle(false).await;
    rig.gh
        .set_releases("bitcoin/bitcoin", bitcoin_releases(true));
    let report = rig.cycle(false).await;
    let CoinOutcome::Opened {
        version,
        number,
        superseded,
        ..
    } = &report.coins["bitcoin"]
    else {
        panic!("{:?}", report.coins["bitcoin"]);
    };
    assert_eq!(
        (version.as_str(), *number, superseded.as_slice()),
        ("29.1", 2, &[1u64][..])
    );
    let pulls = rig.gh.pulls();
    assert_eq!(pulls[0].state, "closed");
    assert_eq!(pulls[1].state, "open");
    assert_eq!(
        pulls.iter().filter(|p| p.state == "open").count(),
        1,
        "one open bump per coin"
    );
    let comments = rig.gh.st().comments.clone();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].0, 1);
    assert!(
        comments[0].1.starts_with("Superseded by #2"),
        "{comments:?}"
    );
    assert!(
        github_mock::git::resolve(&rig.remote.origin, "fleet/bump-bitcoin-29.0").is_none(),
        "old branch deleted"
    );
    // 29.1 is not in the registry: the digest pin cannot follow yet, so it is a draft and
    // the body says so.
    assert!(
        pulls[1].draft && pulls[1].body.contains("not pinned yet"),
        "{}",
        pulls[1].body
    );
    assert!(
        pulls[1].body.contains("Supersedes** #1 (29.0)"),
        "{}",
        pulls[1].body
    );

    // A person closes #2 without merging: 29.1 is never proposed again.
    rig.gh.st().pulls[1].state = "closed".into();
    let report = rig.cycle(false).await;
    assert!(
        matches!(
            report.coins["bitcoin"],
            CoinOutcome::Declined { number: 2, .. }
        ),
        "{:?}",
        report.coins["bitcoin"]
    );
    assert_eq!(rig.gh.pulls().len(), 2);
}

/// bitcoin pins its image by digest and 29.0's image is not pushed yet: the bump is a draft
/// (which GitHub will not merge) saying why; cycles while the tag is missing write nothing;
/// once the tag is pushed, the next cycle writes its digest to the branch, rewrites the
/// body's image lines and marks the pull request ready (GraphQL), and the channel hears it.
/// A cycle cut off before the GraphQL call is finished by the next without a second commit.
#[tokio::test]
async fn a_bump_is_a_draft_until_its_image_is_pushed_then_pinned_and_marked_ready() {
    let rig = Rig::new(|_, t| t);
    rig.tags.lock().unwrap().clear();
    let report = rig.cycle(false).await;
    let CoinOutcome::Opened {
        number: 1, draft, ..
    } = &report.coins["bitcoin"]
    else {
        panic!("{:?}", report.coins["bitcoin"]);
    };
    assert!(*draft);
    let p = &rig.gh.pulls()[0];
    assert!(p.draft, "opened as a draft");
    assert!(
        p.body.contains("a draft until the tag is in the registry")
            && p.body.contains("the registry has no tag 29.0 yet"),
        "{}",
        p.body
    );
    let old_digest = "sha256:fed9369828c2e48f88cfbe36ef0e2d25a14d0c48d6287e9eb59bde270e54c265";
    let branch = "fleet/bump-bitcoin-29.0";
    let on_branch = rig.file_on(branch, "coins/bitcoin.yaml");
    assert!(on_branch.contains("version: \"29.0\"") || on_branch.contains("version: 29.0"));
    assert!(
        on_branch.contains(old_digest),
        "the pin is still the old image's"
    );
    let notices = report.notices(&rig.desired);
    assert!(
        notices.iter().any(|n| matches!(
            n,
            bots::slack::messages::Notice::BumpOpened {
                waiting_for_image: true,
                ..
            }
        )),
        "{notices:?}"
    );

    // Still no tag: the draft waits and nothing is written.
    rig.gh.take_requests();
    let report = rig.cycle(false).await;
    assert!(
        matches!(
            &report.coins["bitcoin"],
            CoinOutcome::AwaitingImage { number: 1, reason, .. } if reason.contains("no tag 29.0")
        ),
        "{:?}",
        report.coins["bitcoin"]
    );
    assert_eq!(writes(&rig.gh.take_requests()), Vec::<String>::new());

    // The image is pushed; the GraphQL call fails once (GraphQL's 200 with `errors`).
    rig.tags.lock().unwrap().push(("29.0", DIGEST_29));
    rig.gh.script(
        "graphql",
        Resp::json(
            200,
            &json!({"errors": [{"message": "Something went wrong while executing your query."}]}),
        ),
    );
    let report = rig.cycle(false).await;
    assert!(
        matches!(&report.coins["bitcoin"], CoinOutcome::Error { message } if message.contains("Something went wrong")),
        "{:?}",
        report.coins["bitcoin"]
    );
    let pinned = rig.file_on(branch, "coins/bitcoin.yaml");
    assert_eq!(
        pinned,
        on_branch.replace(old_digest, DIGEST_29),
        "only the digest changes on the branch"
    );
    assert!(rig.gh.pulls()[0].draft, "still a draft: the call failed");

    // The next cycle finishes: no second commit, the pull request marked ready.
    rig.gh.take_requests();
    let report = rig.cycle(false).await;
    let CoinOutcome::MarkedReady {
        number: 1, digest, ..
    } = &report.coins["bitcoin"]
    else {
        panic!("{:?}", report.coins["bitcoin"]);
    };
    assert_eq!(digest, DIGEST_29);
    let w = writes(&rig.gh.take_requests());
    assert_eq!(
        w,
        vec!["POST /api/graphql".to_string()],
        "the body was rewritten by the cut-off cycle; only the GraphQL call is left"
    );
    let p = &rig.gh.pulls()[0];
    assert!(!p.draft);
    assert!(
        p.body.contains(&format!("pinned to `{DIGEST_29}`"))
            && p.body
                .contains(&format!("`fleet-node upgrade 29.0 {DIGEST_29}`"))
            && !p.body.contains("not pinned yet"),
        "{}",
        p.body
    );
    let notices = report.notices(&rig.desired);
    assert!(
        notices.iter().any(|n| matches!(
            n,
            bots::slack::messages::Notice::BumpReady { number: 1, .. }
        )),
        "{notices:?}"
    );

    // Ready: later cycles leave it be.
    let report = rig.cycle(false).await;
    assert!(
        matches!(
            report.coins["bitcoin"],
            CoinOutcome::AlreadyOpen { number: 1, .. }
        ),
        "{:?}",
        report.coins["bitcoin"]
    );
    assert_eq!(writes(&rig.gh.take_requests()), Vec::<String>::new());
}

/// A repository that refuses drafts (private repositories on GitHub Free): the bump is
/// opened ready, its first line saying not to merge it before the digest is written.
#[tokio::test]
async fn without_drafts_the_waiting_bump_says_not_to_merge_it() {
    let rig = Rig::new(|_, t| t);
    rig.tags.lock().unwrap().clear();
    rig.gh.st().no_drafts = true;
    let report = rig.cycle(false).await;
    assert!(
        matches!(
            report.coins["bitcoin"],
            CoinOutcome::Opened {
                number: 1,
                draft: false,
                ..
            }
        ),
        "{:?}",
        report.coins["bitcoin"]
    );
    let pulls = rig.gh.pulls();
    assert_eq!(pulls.len(), 1);
    assert!(
        pulls[0].body.starts_with(bots::pr_body::NO_DRAFTS),
        "{}",
        pulls[0].body
    );
}

/// bitcoin at 28.1 while 28.2 and 29.0 are out: two pull requests, the 28 line's first, each
/// saying what it is beside the other; a newer 28.3 supersedes only the line's.
#[tokio::test]
async fn a_newer_major_and_a_newer_patch_get_a_pull_request_each() {
    let rig = Rig::new(|_, t| t);
    rig.tags.lock().unwrap().push(("28.2", DIGEST_28_2));
    let r = "bitcoin/bitcoin";
    let with = |extra: &[(u64, &str)]| {
        let mut v = bitcoin_releases(false);
        for (id, tag) in extra {
            v.push(release(r, *id, tag, Some(now_s() - 3 * DAY), false, "line"));
        }
        v
    };
    rig.gh.set_releases(r, with(&[(2500, "v28.2")]));
    let report = rig.cycle(false).await;
    let opened = |o: &CoinOutcome| match o {
        CoinOutcome::Opened {
            version,
            number,
            superseded,
            ..
        } => Some((version.clone(), *number, superseded.clone())),
        _ => None,
    };
    assert_eq!(
        opened(&report.lines["bitcoin"]),
        Some(("28.2".into(), 1, vec![])),
        "{:?}",
        report.lines
    );
    assert_eq!(
        opened(&report.coins["bitcoin"]),
        Some(("29.0".into(), 2, vec![])),
        "{:?}",
        report.coins["bitcoin"]
    );
    let pulls = rig.gh.pulls();
    assert_eq!(pulls[0].head, "fleet/bump-bitcoin-28.2");
    assert!(
        pulls[0]
            .body
            .contains("the major 29.0 is proposed in a pull request of its own"),
        "{}",
        pulls[0].body
    );
    assert!(!pulls[0].body.contains("**Skips:**"), "{}", pulls[0].body);
    assert!(
        pulls[1].body.contains(
            "**Skips:** [28.2](https://github.com/bitcoin/bitcoin/releases/tag/v28.2) (released after 28.1"
        ),
        "{}",
        pulls[1].body
    );
    assert!(
        pulls[1]
            .body
            .contains("28.2, the newest of the current line"),
        "{}",
        pulls[1].body
    );
    // Both are told in Slack, the line's first.
    let told: Vec<String> = report
        .notices(&rig.desired)
        .into_iter()
        .filter_map(|n| match n {
            bots::slack::messages::Notice::BumpOpened { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(told, ["28.2", "29.0"]);

    // Nothing new: both already open, nothing written.
    let report = rig.cycle(false).await;
    assert!(matches!(
        report.lines["bitcoin"],
        CoinOutcome::AlreadyOpen { number: 1, .. }
    ));
    assert!(matches!(
        report.coins["bitcoin"],
        CoinOutcome::AlreadyOpen { number: 2, .. }
    ));
    assert_eq!(rig.gh.pulls().len(), 2);

    // 28.3: it supersedes the line's bump only; the major's stays open.
    rig.gh
        .set_releases(r, with(&[(2500, "v28.2"), (2501, "v28.3")]));
    let report = rig.cycle(false).await;
    assert_eq!(
        opened(&report.lines["bitcoin"]),
        Some(("28.3".into(), 3, vec![1])),
        "{:?}",
        report.lines
    );
    assert!(matches!(
        report.coins["bitcoin"],
        CoinOutcome::AlreadyOpen { number: 2, .. }
    ));
    let states: Vec<(String, String)> = rig
        .gh
        .pulls()
        .iter()
        .map(|p| (p.head.clone(), p.state.clone()))
        .collect();
    assert_eq!(
        states,
        [
            ("fleet/bump-bitcoin-28.2".to_string(), "closed".to_string()),
            ("fleet/bump-bitcoin-29.0".into(), "open".into()),
            ("fleet/bump-bitcoin-28.3".into(), "open".into()),
        ]
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_or_reported() {
    let rig = Rig::new(|_, t| t);
    let reset = now_s() + 30;
    // The primary limit: 403 with remaining 0 and the reset time.
    rig.gh.script(
        "/repos/bitcoin/bitcoin/releases",
        Resp::json(403, &json!({"message": "API rate limit exceeded for user ID 4242.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}))
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", reset.to_string()),
    );
    // A secondary limit: 429 with Retry-After.
    rig.gh.script(
        "/repos/bitcoin/bitcoin/releases",
        Resp::json(
            429,
            &json!({"message": "You have exceeded a secondary rate limit."}),
        )
        .header("retry-after", "7"),
    );
    let report = rig.cycle(false).await;
    assert!(
        matches!(report.coins["bitcoin"], CoinOutcome::Opened { .. }),
        "{:?}",
        report.coins["bitcoin"]
    );
    assert_eq!(report.requests.rate_limited, 2);
    let sleeps = rig.pacer.sleeps.lock().unwrap().clone();
    let waits: Vec<u64> = sleeps
        .iter()
        .map(|d| d.as_secs())
        .filter(|s| *s >= 5)
        .collect();
    assert!(
        waits.len() == 2 && (29..=32).contains(&waits[0]) && waits[1] == 7,
        "{sleeps:?}"
    );

    // A reset beyond max_wait: the coin reports it, nothing hangs, other coins go on.
    let short = GitHub::new(
        &GitHubConfig {
            api_url: rig.gh.api_url(),
            token: Some(TOKEN.into()),
            max_wait: Duration::from_secs(60),
        },
        Arc::clone(&rig.pacer) as Arc<dyn Pacer>,
    )
    .unwrap();
    rig.gh.script(
        "/repos/bitcoin/bitcoin/releases",
        Resp::json(403, &json!({"message": "API rate limit exceeded"}))
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", (now_s() + 3000).to_string()),
    );
    let s = WatchSettings {
        fleet_repo: FLEET.into(),
        base: "main".into(),
        subdir: String::new(),
        dry_run: false,
    };
    let r = watch::cycle(&short, &rig.desired, &s, None, now_s() * 1000).await;
    let CoinOutcome::Error { message } = &r.coins["bitcoin"] else {
        panic!("{:?}", r.coins["bitcoin"])
    };
    assert!(
        message.contains("rate limited by GitHub until"),
        "{message}"
    );
    assert!(!message.contains(TOKEN));
}

#[tokio::test]
async fn a_tag_failing_the_version_rule_is_never_proposed() {
    // litecoin with a loose pattern: any tag after a `v`.
    let rig = Rig::new(|p, t| {
        if p == "coins/litecoin.yaml" {
            t.replace(
                r"tag_pattern: '^v(?P<version>\d+\.\d+\.\d+(?:\.\d+)?)$'",
                "tag_pattern: '^v(?P<version>.+)$'",
            )
        } else {
            t
        }
    });
    let now = now_s();
    rig.gh.set_releases(
        "litecoin-project/litecoin",
        vec![release(
            "litecoin-project/litecoin",
            7,
            "v0.21.9;curl${IFS}x|sh",
            Some(now - 9 * DAY),
            false,
            "",
        )],
    );
    let report = rig.cycle(false).await;
    assert!(
        matches!(report.coins["litecoin"], CoinOutcome::UpToDate { .. }),
        "{:?}",
        report.coins["litecoin"]
    );
    assert_eq!(report.rejected["litecoin"][0].tag, "v0.21.9;curl${IFS}x|sh");
    assert!(rig.gh.pulls().iter().all(|p| !p.head.contains("litecoin")));
    let notices = report.notices(&rig.desired);
    assert!(
        notices.iter().any(
            |n| matches!(n, bots::slack::Notice::ReleaseRejected { coin, .. } if coin == "litecoin")
        ),
        "{notices:?}"
    );
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_shows_the_change() {
    let rig = Rig::new(|_, t| t);
    let report = rig.cycle(true).await;
    let CoinOutcome::WouldOpen {
        branch,
        title,
        diff,
        body,
        ..
    } = &report.coins["bitcoin"]
    else {
        panic!("{:?}", report.coins["bitcoin"]);
    };
    assert_eq!(branch, "fleet/bump-bitcoin-29.0");
    assert_eq!(title, "bitcoin: 28.1 → 29.0");
    assert_eq!(diff[0], "-version: \"28.1\"");
    assert_eq!(diff[1], "+version: \"29.0\"");
    assert!(body.contains("What the merge will touch"));
    assert!(writes(&rig.gh.take_requests()).is_empty());
    assert!(rig.gh.pulls().is_empty());
}

#[tokio::test]
async fn a_cycle_cut_off_after_the_commit_is_finished_without_a_second_commit() {
    let rig = Rig::new(|_, t| t);
    // What an interrupted cycle leaves: the branch with the change, no pull request.
    let dry = rig.cycle(true).await;
    let CoinOutcome::WouldOpen { .. } = &dry.coins["bitcoin"] else {
        panic!()
    };
    let main = github_mock::git::resolve(&rig.remote.origin, "main")
        .unwrap()
        .to_string();
    rig.client
        .create_branch(FLEET, "fleet/bump-bitcoin-29.0", &main)
        .await
        .unwrap();
    let f = rig
        .client
        .file(FLEET, "coins/bitcoin.yaml", "main")
        .await
        .unwrap()
        .unwrap();
    let edited = f
        .text
        .replace("version: \"28.1\"", "version: \"29.0\"")
        .replace(
            "sha256:fed9369828c2e48f88cfbe36ef0e2d25a14d0c48d6287e9eb59bde270e54c265",
            DIGEST_29,
        );
    rig.client
        .put_file(
            FLEET,
            "coins/bitcoin.yaml",
            "fleet/bump-bitcoin-29.0",
            "bitcoin: 28.1 → 29.0",
            &edited,
            &f.sha,
        )
        .await
        .unwrap();
    rig.gh.take_requests();

    let report = rig.cycle(false).await;
    assert!(
        matches!(
            report.coins["bitcoin"],
            CoinOutcome::Opened { number: 1, .. }
        ),
        "{:?}",
        report.coins["bitcoin"]
    );
    assert_eq!(
        writes(&rig.gh.take_requests()),
        [
            "POST /repos/acme/fleet/git/refs",
            "POST /repos/acme/fleet/pulls"
        ],
        "the branch is reused as it is: no second commit"
    );
    let commits = git(
        &rig.remote.origin,
        &["rev-list", "--count", "main..fleet/bump-bitcoin-29.0"],
    );
    assert_eq!(commits, "1");
}

#[tokio::test]
async fn bad_credentials_are_an_error_that_never_shows_the_token() {
    let rig = Rig::new(|_, t| t);
    let wrong = client(&rig.gh, "ghp_wrong_token_should_not_leak", &rig.pacer);
    let s = WatchSettings {
        fleet_repo: FLEET.into(),
        base: "main".into(),
        subdir: String::new(),
        dry_run: false,
    };
    let r = watch::cycle(&wrong, &rig.desired, &s, None, now_s() * 1000).await;
    let CoinOutcome::Error { message } = &r.coins["bitcoin"] else {
        panic!("{:?}", r.coins["bitcoin"])
    };
    assert!(
        message.contains("401") && message.contains("Bad credentials"),
        "{message}"
    );
    let all = serde_json::to_string(&r).unwrap();
    assert!(!all.contains("ghp_wrong_token_should_not_leak"));
}

/// `fleet release-watch --once [--dry-run] [--format json]`, the binary, as cron runs it.
#[test]
fn the_release_watch_command() {
    // The rig's in-process client (octocrab) is built inside a runtime.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_rt = rt.enter();
    let rig = Rig::new(|_, t| t);
    let state = rig._tmp.path().join("state");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "release-watch".to_string(),
            "--once".into(),
            "--repo".into(),
            rig.remote.url(),
            "--branch".into(),
            "main".into(),
            "--github-repo".into(),
            FLEET.into(),
            "--github-api".into(),
            rig.gh.api_url(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = std::process::Command::new(fleet_tests::daemon::fleet_bin())
            .args(&args)
            .env("FLEET_GITHUB_TOKEN", TOKEN)
            .env_remove("FLEET_SLACK_BOT_TOKEN")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--dry-run"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("bitcoin: would open \"bitcoin: 28.1 → 29.0\" from fleet/bump-bitcoin-29.0"),
        "{out}"
    );
    assert!(
        out.contains("  -version: \"28.1\"\n  +version: \"29.0\""),
        "{out}"
    );
    assert!(out.contains("  | ## bitcoin 28.1 → 29.0"), "{out}");
    assert!(out.contains("dogecoin: up to date (1.14.9)"), "{out}");
    assert!(out.contains("GitHub: "), "{out}");
    assert!(rig.gh.pulls().is_empty(), "a dry run opens nothing");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));

    let (code, out, err) = run(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("bitcoin: opened #1 for 29.0: https://github.com/acme/fleet/pull/1"),
        "{out}"
    );
    let (code, out, _) = run(&["--format", "json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["coins"]["bitcoin"]["outcome"], "already-open");
    assert_eq!(v["coins"]["bitcoin"]["number"], 1);

    // A wrong token: exit 1, the error said, the token not.
    let out = std::process::Command::new(fleet_tests::daemon::fleet_bin())
        .args([
            "release-watch",
            "--once",
            "--repo",
            &rig.remote.url(),
            "--github-repo",
            FLEET,
            "--github-api",
            &rig.gh.api_url(),
            "--state-dir",
            &state.display().to_string(),
        ])
        .env("FLEET_GITHUB_TOKEN", "ghp_not_the_right_one")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("Bad credentials") && !all.contains("ghp_not_the_right_one"),
        "{all}"
    );
}
