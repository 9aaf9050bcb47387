//! Where the desired state comes from: the fleet repository.
//!
//! - A **git** source (libgit2 through `git2`): a local path, a `file://` URL, an HTTPS URL
//!   (with a token from the environment) or an SSH URL (with a key). The remote branch is
//!   fetched into a bare cache clone in the state directory with a forced refspec, so a
//!   force-push or a rewritten history simply moves the branch: the branch head is the truth.
//!   The desired state is loaded straight from the fetched commit's tree, never from a
//!   working copy. A poll first asks the remote for the branch head (`ls-remote`) and fetches
//!   only when it moved, so an idle poll transfers a few hundred bytes.
//! - A **directory** that is not the root of a git repository (`examples/fleet`): read as it
//!   is on disk; its revision is a hash of the files read.
//!
//! Both can be watched (`notify`) when they are on this machine, so a commit or an edit is
//! seen at once instead of at the next poll.

use fleet_repo_schema::{DirTree, FileTree, Loaded, ReadError, load};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why the repository could not be read. Messages never carry a credential.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The cache clone could not be created or opened.
    #[error("cache clone {path}: {message}")]
    Cache {
        /// Where.
        path: String,
        /// What libgit2 or the OS said.
        message: String,
    },
    /// Talking to the remote failed (unreachable, authentication, protocol).
    #[error("fetching {url}: {message}")]
    Fetch {
        /// The remote, credentials removed.
        url: String,
        /// What libgit2 said.
        message: String,
    },
    /// The remote has no such branch.
    #[error(
        "{url} has no branch `{branch}`; branches there: {available}. Set repo.branch (or --branch) to one of them"
    )]
    NoBranch {
        /// The remote, credentials removed.
        url: String,
        /// The branch asked for.
        branch: String,
        /// What the remote has.
        available: String,
    },
    /// The commit's tree could not be read.
    #[error("reading commit {commit}: {message}")]
    Tree {
        /// Commit.
        commit: String,
        /// Why.
        message: String,
    },
    /// The directory could not be read.
    #[error("{path}: {message}")]
    Dir {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
}

/// Credentials for a remote. Held here, never printed (`Debug` shows only which are set).
#[derive(Clone, Default)]
pub struct GitAuth {
    /// HTTPS token (sent as the password of `x-access-token`, as GitHub expects).
    pub token: Option<String>,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
    /// Its passphrase.
    pub ssh_passphrase: Option<String>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .field(
                "ssh_passphrase",
                &self.ssh_passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `url` with any user-info (`https://user:token@host/…`) removed, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rfind('@') {
        Some(at) => format!("<redacted>@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    // A token in the query (`?access_token=…`) or the fragment is as secret as one in the
    // user info: values go, names stay.
    let (before_frag, frag) = match tail.split_once('#') {
        Some((b, _)) => (b, "#<redacted>"),
        None => (tail, ""),
    };
    let tail = match before_frag.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=<redacted>"),
                    None if kv.is_empty() => String::new(),
                    None => "<redacted>".to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => before_frag.to_string(),
    };
    format!("{scheme}://{authority}{tail}{frag}")
}

/// The secret parts of `url`: its user info's password (or a lone token), every query value
/// and the fragment, each at least 4 characters (shorter ones would scrub ordinary words).
fn url_secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return vec![];
    };
    let mut out = Vec::new();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..end].rfind('@') {
        let info = &rest[..at];
        out.push(
            info.split_once(':')
                .map(|(_, p)| p)
                .unwrap_or(info)
                .to_string(),
        );
    }
    let tail = &rest[end..];
    let (before_frag, frag) = tail.split_once('#').unwrap_or((tail, ""));
    out.push(frag.to_string());
    if let Some((_, query)) = before_frag.split_once('?') {
        for kv in query.split('&') {
            out.push(kv.split_once('=').map(|(_, v)| v).unwrap_or(kv).to_string());
        }
    }
    out.retain(|s| s.len() >= 4);
    out
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Revision: the commit id (git) or `worktree-<hash>` (directory).
    pub rev: String,
    /// The commit's summary line and author time (git only).
    pub summary: Option<String>,
}

/// The fleet repository as a git remote fetched into a cache clone.
#[derive(Debug)]
pub struct GitSource {
    url: String,
    /// The branch followed: configured, or the remote's default resolved once at the first
    /// fetch (a later `git checkout` in a local working copy does not change it).
    branch: std::sync::Mutex<Option<String>>,
    subdir: String,
    cache: PathBuf,
    auth: GitAuth,
    /// `repo.verify.allowed_signers`: when set, a commit without a good signature by one of
    /// its keys loads as an invalid revision (E115), its files unread.
    signers: std::sync::OnceLock<Arc<crate::signers::AllowedSigners>>,
}

impl GitSource {
    /// A source for `url` (a path, `file://`, `https://`, `ssh://` or `user@host:path`),
    /// `branch` (None: the remote's default branch), the fleet files under `subdir` of the
    /// tree (`""`: the root), cached in `cache`.
    pub fn new(
        url: &str,
        branch: Option<String>,
        subdir: &str,
        cache: PathBuf,
        auth: GitAuth,
    ) -> GitSource {
        GitSource {
            url: url.to_string(),
            branch: std::sync::Mutex::new(branch),
            subdir: subdir.trim_matches('/').to_string(),
            cache,
            auth,
            signers: std::sync::OnceLock::new(),
        }
    }

    /// The remote, credentials removed.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The branch followed, once known.
    pub fn branch(&self) -> Option<String> {
        self.branch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fetch_err(&self, e: git2::Error) -> SourceError {
        SourceError::Fetch {
            url: self.display_url(),
            message: self.scrub(e.message()),
        }
    }

    /// `msg` (libgit2's words) without any credential: the token and passphrase, and the
    /// URL's own secrets (user info, query values), wherever libgit2 echoed them.
    fn scrub(&self, msg: &str) -> String {
        let mut m = scrub(msg, &self.auth).replace(&self.url, &self.display_url());
        for secret in url_secrets(&self.url) {
            m = m.replace(&secret, "<redacted>");
        }
        m
    }

    fn open_cache(&self) -> Result<git2::Repository, SourceError> {
        let err = |e: git2::Error| SourceError::Cache {
            path: self.cache.display().to_string(),
            message: e.message().to_string(),
        };
        if self.cache.join("HEAD").exists() {
            git2::Repository::open_bare(&self.cache).map_err(err)
        } else {
            std::fs::create_dir_all(&self.cache).map_err(|e| SourceError::Cache {
                path: self.cache.display().to_string(),
                message: e.to_string(),
            })?;
            git2::Repository::init_bare(&self.cache).map_err(err)
        }
    }

    fn callbacks(&self) -> git2::RemoteCallbacks<'_> {
        let mut cb = git2::RemoteCallbacks::new();
        let tries = AtomicU32::new(0);
        let host = host_of(&self.url);
        cb.credentials(move |url, user_from_url, allowed| {
            // Credentials go only to the configured host (not to where a redirect leads),
            // and never over plain http except on loopback (tests).
            if host_of(url) != host {
                return Err(git2::Error::from_str(
                    "the remote redirected to another host; credentials are sent only to the configured one",
                ));
            }
            if url.starts_with("http://") && !is_loopback(host.as_deref()) {
                return Err(git2::Error::from_str(
                    "refusing to send credentials over plain http; use an https:// URL",
                ));
            }
            // libgit2 asks again after a refused credential: give up instead of looping.
            if tries.fetch_add(1, Ordering::Relaxed) >= 3 {
                return Err(git2::Error::from_str(
                    "authentication failed (the remote refused the credentials three times)",
                ));
            }
            credential(&self.auth, user_from_url, allowed)
        });
        cb
    }

    /// Ask the remote where the branch is, fetch it when it moved, and return its head.
    /// Blocking: call from `spawn_blocking`.
    pub fn fetch(&self) -> Result<Head, SourceError> {
        let repo = self.open_cache()?;
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.fetch_err(e))?;
        let (branch, remote_oid) = {
            let conn = remote
                .connect_auth(git2::Direction::Fetch, Some(self.callbacks()), None)
                .map_err(|e| self.fetch_err(e))?;
            let branch = match self.branch() {
                Some(b) => b,
                None => {
                    let d = conn.default_branch().map_err(|e| self.fetch_err(e))?;
                    let d = d.as_str().unwrap_or("refs/heads/main");
                    let b = d.strip_prefix("refs/heads/").unwrap_or(d).to_string();
                    tracing::info!(branch = %b, "following the remote's default branch");
                    *self.branch.lock().unwrap_or_else(|e| e.into_inner()) = Some(b.clone());
                    b
                }
            };
            let want = format!("refs/heads/{branch}");
            let heads = conn.list().map_err(|e| self.fetch_err(e))?;
            let found = heads.iter().find(|h| h.name() == want).map(|h| h.oid());
            match found {
                Some(oid) => (branch, oid),
                None => {
                    let available: Vec<&str> = heads
                        .iter()
                        .filter_map(|h| h.name().strip_prefix("refs/heads/"))
                        .collect();
                    return Err(SourceError::NoBranch {
                        url: self.display_url(),
                        branch,
                        available: if available.is_empty() {
                            "none (an empty repository?)".into()
                        } else {
                            available.join(", ")
                        },
                    });
                }
            }
        };
        let local_ref = format!("refs/remotes/origin/{branch}");
        let have = repo.refname_to_id(&local_ref).ok();
        if have != Some(remote_oid) || repo.find_commit(remote_oid).is_err() {
            let mut fo = git2::FetchOptions::new();
            fo.remote_callbacks(self.callbacks());
            fo.download_tags(git2::AutotagOption::None);
            // `+`: a force-push or a rewritten history moves our ref too.
            let spec = format!("+refs/heads/{branch}:{local_ref}");
            remote
                .fetch(&[spec.as_str()], Some(&mut fo), None)
                .map_err(|e| self.fetch_err(e))?;
        }
        let oid = repo
            .refname_to_id(&local_ref)
            .map_err(|e| self.fetch_err(e))?;
        let summary = repo.find_commit(oid).ok().map(|c| {
            format!(
                "{} ({})",
                c.summary().unwrap_or("").trim(),
                c.author().name().unwrap_or("unknown")
            )
        });
        Ok(Head {
            rev: oid.to_string(),
            summary,
        })
    }

    /// Load and validate the fleet at `rev` from the cache clone. Blocking.
    pub fn load(&self, rev: &str) -> Result<Loaded, SourceError> {
        let tree_err = |m: String| SourceError::Tree {
            commit: rev.to_string(),
            message: m,
        };
        let repo = self.open_cache()?;
        let oid = git2::Oid::from_str(rev).map_err(|e| tree_err(e.message().to_string()))?;
        let commit = repo
            .find_commit(oid)
            .map_err(|e| tree_err(e.message().to_string()))?;
        if let Some(signers) = self.signers.get() {
            match signers.verify_commit(&repo, oid) {
                Ok(s) => {
                    tracing::info!(commit = rev, signer = %s.principals, key = %s.fingerprint, "the commit's signature is good")
                }
                Err(refusal) => return Ok(unsigned(rev, &refusal)),
            }
        }
        let mut tree = commit
            .tree()
            .map_err(|e| tree_err(e.message().to_string()))?;
        if !self.subdir.is_empty() {
            let entry = tree.get_path(Path::new(&self.subdir)).map_err(|_| {
                tree_err(format!(
                    "no directory `{}` in the commit; check repo.subdir",
                    self.subdir
                ))
            })?;
            tree = entry
                .to_object(&repo)
                .and_then(|o| o.peel_to_tree())
                .map_err(|_| tree_err(format!("`{}` is not a directory", self.subdir)))?;
        }
        let t = GitTree {
            repo: &repo,
            root: tree,
        };
        Ok(load(&t))
    }

    /// Require every commit to be signed by a key of `signers` (see [`crate::signers`]).
    pub fn require_signatures(&self, signers: Arc<crate::signers::AllowedSigners>) {
        let _ = self.signers.set(signers);
    }

    /// Directories to watch for changes when the remote is on this machine: its git
    /// directory (refs move there on commit, reset, push).
    pub fn local_watch_path(&self) -> Option<PathBuf> {
        let path = self.url.strip_prefix("file://").unwrap_or(&self.url);
        let p = Path::new(path);
        if !p.is_absolute() || !p.exists() {
            return None;
        }
        git2::Repository::open(p)
            .ok()
            .map(|r| r.path().to_path_buf())
    }
}

/// The host of a URL (`https://user@host:443/x` → `host`), for scp-like addresses the part
/// before `:`; None for local paths.
fn host_of(url: &str) -> Option<String> {
    let authority = if let Some((_, rest)) = url.split_once("://") {
        rest.split('/').next().unwrap_or("")
    } else if looks_like_scp(url) {
        url.split(':').next().unwrap_or("")
    } else {
        return None;
    };
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    Some(host.to_ascii_lowercase())
}

fn is_loopback(host: Option<&str>) -> bool {
    matches!(host, Some("localhost" | "127.0.0.1" | "::1"))
}

/// Remove credentials from a libgit2 message.
fn scrub(msg: &str, auth: &GitAuth) -> String {
    let mut m = msg.to_string();
    for s in [&auth.token, &auth.ssh_passphrase].into_iter().flatten() {
        if !s.is_empty() {
            m = m.replace(s.as_str(), "<redacted>");
        }
    }
    m
}

fn credential(
    auth: &GitAuth,
    user_from_url: Option<&str>,
    allowed: git2::CredentialType,
) -> Result<git2::Cred, git2::Error> {
    #[cfg(feature = "git-remote")]
    if allowed.contains(git2::CredentialType::SSH_KEY) {
        let user = user_from_url.unwrap_or("git");
        return match &auth.ssh_key {
            Some(key) => git2::Cred::ssh_key(user, None, key, auth.ssh_passphrase.as_deref()),
            None => git2::Cred::ssh_key_from_agent(user),
        };
    }
    if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
        && let Some(token) = &auth.token
    {
        return git2::Cred::userpass_plaintext(user_from_url.unwrap_or("x-access-token"), token);
    }
    if allowed.contains(git2::CredentialType::DEFAULT) {
        return git2::Cred::default();
    }
    let _ = user_from_url;
    Err(git2::Error::from_str(
        "the remote asks for credentials and none are configured: set FLEET_GIT_TOKEN (HTTPS) or repo.ssh_key (SSH)",
    ))
}

/// A commit's tree as the loader's [`FileTree`].
struct GitTree<'r> {
    repo: &'r git2::Repository,
    root: git2::Tree<'r>,
}

impl GitTree<'_> {
    fn entry(&self, path: &str) -> Option<git2::TreeEntry<'static>> {
        self.root.get_path(Path::new(path)).ok()
    }

    /// The sorted names in `dir` (the root when empty) of its sub-trees (`trees`) or of its
    /// other entries; none when `dir` is missing or not a tree.
    fn names_in(&self, dir: &str, trees: bool) -> Vec<String> {
        let sub;
        let tree = if dir.is_empty() {
            &self.root
        } else {
            let Some(e) = self.entry(dir) else {
                return Vec::new();
            };
            match e.to_object(self.repo).and_then(|o| o.peel_to_tree()) {
                Ok(t) => {
                    sub = t;
                    &sub
                }
                Err(_) => return Vec::new(),
            }
        };
        let mut names: Vec<String> = tree
            .iter()
            .filter(|e| (e.kind() == Some(git2::ObjectType::Tree)) == trees)
            .map(|e| String::from_utf8_lossy(e.name_bytes()).into_owned())
            .collect();
        names.sort();
        names
    }
}

impl FileTree for GitTree<'_> {
    fn list(&self, dir: &str) -> Result<Vec<String>, ReadError> {
        Ok(self.names_in(dir, false))
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let e = self.entry(path).ok_or(ReadError::NotFound)?;
        match e.filemode() {
            0o100644 | 0o100755 | 0o100664 => {}
            0o120000 => {
                let target = e
                    .to_object(self.repo)
                    .ok()
                    .and_then(|o| {
                        o.as_blob()
                            .map(|b| String::from_utf8_lossy(b.content()).into_owned())
                    })
                    .unwrap_or_default();
                return Err(ReadError::SymlinkOutside { target });
            }
            _ => return Err(ReadError::NotAFile),
        }
        let obj = e
            .to_object(self.repo)
            .map_err(|e| ReadError::Io(e.message().to_string()))?;
        let blob = obj.as_blob().ok_or(ReadError::NotAFile)?;
        let size = blob.size() as u64;
        if size > limit {
            return Err(ReadError::TooLarge { size, limit });
        }
        Ok(blob.content().to_vec())
    }

    fn is_file(&self, path: &str) -> bool {
        self.entry(path)
            .is_some_and(|e| matches!(e.filemode(), 0o100644 | 0o100755 | 0o100664))
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, ReadError> {
        Ok(self.names_in(dir, true))
    }
}

/// The fleet repository as a plain directory, read as it is on disk.
#[derive(Debug)]
pub struct DirSource {
    path: PathBuf,
}

impl DirSource {
    /// A directory source.
    pub fn new(path: PathBuf) -> DirSource {
        DirSource { path }
    }

    /// Read and validate; the revision is a hash of the bytes read. Blocking.
    pub fn load(&self) -> Result<(Head, Loaded), SourceError> {
        let tree = DirTree::new(&self.path).map_err(|e| SourceError::Dir {
            path: self.path.display().to_string(),
            message: format!("{e}; give the directory that holds fleet.yaml"),
        })?;
        let loaded = load(&tree);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (name, text) in &loaded.sources {
            for b in name.bytes().chain([0]).chain(text.bytes()).chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Ok((
            Head {
                rev: format!("worktree-{h:016x}"),
                summary: None,
            },
            loaded,
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The repository, whichever kind.
#[derive(Debug, Clone)]
pub enum Source {
    /// A git remote (or local repository) fetched into a cache clone.
    Git(Arc<GitSource>),
    /// A directory read as it is.
    Dir(Arc<DirSource>),
}

impl Source {
    /// Pick the kind for `repo`: a URL, the root of a git repository, or a plain directory.
    pub fn for_repo(
        repo: &str,
        branch: Option<String>,
        subdir: &str,
        cache: PathBuf,
        auth: GitAuth,
    ) -> Result<Source, SourceError> {
        let is_url = repo.contains("://") || looks_like_scp(repo);
        if is_url {
            return Ok(Source::Git(Arc::new(GitSource::new(
                repo, branch, subdir, cache, auth,
            ))));
        }
        let path = Path::new(repo)
            .canonicalize()
            .map_err(|e| SourceError::Dir {
                path: repo.to_string(),
                message: format!("{e}; give a directory, a git repository or a URL"),
            })?;
        // The root of a repository (not any directory inside one): `examples/fleet` inside
        // fleet's own checkout is read as a directory.
        if git2::Repository::open(&path)
            .ok()
            .is_some_and(|r| r.is_bare() || r.workdir().is_some_and(|w| same(w, &path)))
        {
            let url = path.display().to_string();
            return Ok(Source::Git(Arc::new(GitSource::new(
                &url, branch, subdir, cache, auth,
            ))));
        }
        Ok(Source::Dir(Arc::new(DirSource::new(path.join(subdir)))))
    }

    /// Require every commit applied to be signed by a key of `signers`: only a git
    /// repository has commits to check.
    pub fn require_signatures(
        &self,
        signers: Arc<crate::signers::AllowedSigners>,
    ) -> Result<(), SourceError> {
        match self {
            Source::Git(g) => {
                g.require_signatures(signers);
                Ok(())
            }
            Source::Dir(d) => Err(SourceError::Dir {
                path: d.path().display().to_string(),
                message: "repo.verify needs a git repository: a plain directory has no commits whose signatures could be checked".into(),
            }),
        }
    }

    /// What to watch on this machine, if anything.
    pub fn watch_path(&self) -> Option<PathBuf> {
        match self {
            Source::Git(g) => g.local_watch_path(),
            Source::Dir(d) => Some(d.path().to_path_buf()),
        }
    }

    /// For messages: the URL or path.
    pub fn describe(&self) -> String {
        match self {
            Source::Git(g) => g.display_url(),
            Source::Dir(d) => d.path().display().to_string(),
        }
    }

    /// The branch followed: the configured one, else the remote's default once a fetch has
    /// resolved it; None for a directory (and before that first fetch).
    pub fn branch(&self) -> Option<String> {
        match self {
            Source::Git(g) => g.branch(),
            Source::Dir(_) => None,
        }
    }

    /// Kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Git(_) => "git",
            Source::Dir(_) => "directory",
        }
    }

    /// Fetch; then, when the revision differs from `known`, load it. Blocking.
    pub fn poll(&self, known: Option<&str>) -> Result<(Head, Option<Loaded>), SourceError> {
        match self {
            Source::Git(g) => {
                let head = g.fetch()?;
                if Some(head.rev.as_str()) == known {
                    return Ok((head, None));
                }
                let loaded = g.load(&head.rev)?;
                Ok((head, Some(loaded)))
            }
            Source::Dir(d) => {
                let (head, loaded) = d.load()?;
                if Some(head.rev.as_str()) == known {
                    return Ok((head, None));
                }
                Ok((head, Some(loaded)))
            }
        }
    }
}

/// A commit refused for its signature, as an invalid revision: reported like one (status,
/// metrics, Slack), and the last good revision stays in force.
fn unsigned(rev: &str, refusal: &crate::signers::Refusal) -> Loaded {
    use fleet_repo_schema::diag::Span;
    use fleet_repo_schema::{Code, Diagnostic};
    Loaded {
        desired: None,
        diagnostics: vec![
            Diagnostic::error(
                Code::UnsignedCommit,
                "(commit)",
                Span::FILE_START,
                format!("commit {rev} is not applied: {refusal}"),
            )
            .with_help(
                "sign commits with a key listed in repo.verify.allowed_signers (`git config gpg.format ssh`, `git commit -S`), or add the signer's key to that file",
            ),
        ],
        sources: Default::default(),
    }
}

fn same(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `git@github.com:org/fleet.git`.
fn looks_like_scp(s: &str) -> bool {
    match (s.find('@'), s.find(':')) {
        (Some(at), Some(colon)) => at < colon && !s[..colon].contains('/'),
        _ => false,
    }
}

/// Watch `path` recursively; call `on_change` on each relevant event. Git object writes are
/// ignored (a ref update follows them). The returned watcher stops when dropped.
pub fn watch(
    path: &Path,
    on_change: impl Fn() + Send + 'static,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::Watcher;
    let root = path.to_path_buf();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            // Object writes of a git directory come before the ref update that matters;
            // judged below the watched root, so a directory named `objects` above it is fine.
            let relevant = ev.paths.iter().any(|p| {
                !p.strip_prefix(&root)
                    .unwrap_or(p)
                    .components()
                    .any(|c| c.as_os_str() == "objects")
            });
            if relevant {
                on_change();
            }
        }
    })?;
    w.watch(path, notify::RecursiveMode::Recursive)?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://x-access-token:ghp_secret@github.com/org/fleet.git"),
            "https://<redacted>@github.com/org/fleet.git"
        );
        assert_eq!(
            redact_url("https://github.com/org/fleet.git"),
            "https://github.com/org/fleet.git"
        );
        assert_eq!(redact_url("/srv/fleet"), "/srv/fleet");
        let a = GitAuth {
            token: Some("ghp_secret".into()),
            ..GitAuth::default()
        };
        assert!(!format!("{a:?}").contains("ghp_secret"));
        assert_eq!(
            scrub("bad token ghp_secret for user", &a),
            "bad token <redacted> for user"
        );
    }

    /// Hardening: a token in the query string (or the fragment) is redacted like one in the
    /// user info, and scrubbed from what libgit2 says.
    #[test]
    fn query_string_credentials_are_redacted() {
        let url = "https://git.example.com/x.git?access_token=ghp_querysecret&ref=main#frag-token";
        let shown = redact_url(url);
        assert_eq!(
            shown,
            "https://git.example.com/x.git?access_token=<redacted>&ref=<redacted>#<redacted>"
        );
        assert!(!shown.contains("ghp_querysecret") && !shown.contains("frag-token"));
        assert_eq!(
            redact_url("https://tok_only_secret@host/x?y"),
            "https://<redacted>@host/x?<redacted>"
        );
        let g = GitSource::new(
            url,
            None,
            "",
            PathBuf::from("/nonexistent"),
            GitAuth::default(),
        );
        let said = g.scrub(
            "unexpected http status 401 for https://git.example.com/x.git?access_token=ghp_querysecret (token ghp_querysecret)",
        );
        assert!(!said.contains("ghp_querysecret"), "{said}");
        assert!(url_secrets("https://user:pw_secret@h/x").contains(&"pw_secret".to_string()));
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("https://x:y@GitHub.com:443/o/r.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            host_of("git@github.com:o/r.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(host_of("ssh://git@[::1]:2222/r").as_deref(), Some("::1"));
        assert_eq!(host_of("/srv/fleet"), None);
        assert!(is_loopback(host_of("http://127.0.0.1:9/x").as_deref()));
        assert!(!is_loopback(host_of("http://example.com/x").as_deref()));
    }

    #[test]
    fn scp_like_addresses_are_urls() {
        assert!(looks_like_scp("git@github.com:org/fleet.git"));
        assert!(!looks_like_scp("/srv/fleet"));
        assert!(!looks_like_scp("./a@b/c:d"));
    }
}
