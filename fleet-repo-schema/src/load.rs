//! Loading a fleet repository: read, parse, decode, check every rule, resolve defaults.

use crate::decode::{Cx, Decode, Entries, Spanned};
use crate::desired::{self, *};
use crate::diag::{Code, Diagnostic, Pos, Severity, Span};
use crate::files::*;
use crate::tree::{FileTree, ReadError};
use crate::values::*;
use crate::yaml;
use std::collections::{BTreeMap, HashMap};

/// Largest file read (fleet files are a few KiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most coin files a repository may hold.
pub const MAX_COINS: usize = 5000;
/// The fleet-wide file.
pub const FLEET_FILE: &str = "fleet.yaml";
/// The directory of coin files.
pub const COINS_DIR: &str = "coins";
/// Tags a coin may set: AWS allows 50 per resource and fleet writes up to 8 (Name, and
/// `fleet:` managed, coin, zone, index, version, pending, and one spare for its records).
pub const MAX_COIN_TAGS: usize = 40;
/// Shortest `stall_timeout` and `sync_timeout`.
pub const MIN_HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The outcome of loading a repository.
#[derive(Debug)]
pub struct Loaded {
    /// The desired state, when there are no errors (warnings allowed).
    pub desired: Option<Desired>,
    /// Every error and warning, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// The text of each file read, for showing source lines.
    pub sources: BTreeMap<String, String>,
}

impl Loaded {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

struct Loader<'t> {
    tree: &'t dyn FileTree,
    diagnostics: Vec<Diagnostic>,
    sources: BTreeMap<String, String>,
}

impl Loader<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    /// Read and parse one file into a tree of nodes.
    fn parse_file(&mut self, path: &str) -> Option<yaml::Node> {
        let bytes = match self.tree.read(path, MAX_FILE_BYTES) {
            Ok(b) => b,
            Err(e) => {
                let (code, help) = match &e {
                    ReadError::NotFound if path == FLEET_FILE => (
                        Code::MissingFleetFile,
                        "create fleet.yaml at the repository root, or point fleet at the repository's root directory",
                    ),
                    ReadError::TooLarge { .. } => (
                        Code::FileTooLarge,
                        "fleet files are a few KiB: remove the file from the repository or move it out of coins/",
                    ),
                    ReadError::SymlinkOutside { .. } => (
                        Code::SymlinkOutside,
                        "replace the link with a regular file holding the content, so the repository is self-contained",
                    ),
                    ReadError::NotAFile => (
                        Code::SymlinkOutside,
                        "fleet reads regular files only: replace this FIFO, device or git submodule with a regular YAML file",
                    ),
                    ReadError::NotFound | ReadError::Io(_) => (
                        Code::Io,
                        "check the file's permissions and that it still exists",
                    ),
                };
                let msg = match &e {
                    ReadError::NotFound if path == FLEET_FILE => {
                        "the repository has no fleet.yaml".to_string()
                    }
                    other => format!("cannot read {path}: {other}"),
                };
                self.push(Diagnostic::error(code, path, Span::FILE_START, msg).with_help(help));
                return None;
            }
        };
        if let Some(i) = bytes.iter().position(|b| *b == 0) {
            let p = position_of_byte(&bytes, i);
            self.push(
                Diagnostic::error(Code::Binary, path, Span::point(p), "binary file: it contains NUL bytes".into())
                    .with_help("a fleet file is YAML text; remove this file or replace it with the YAML it should hold"),
            );
            return None;
        }
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                let p = position_of_byte(&bytes, e.valid_up_to());
                self.push(
                    Diagnostic::error(
                        Code::NotUtf8,
                        path,
                        Span::point(p),
                        format!("not valid UTF-8 (byte 0x{:02x})", bytes[e.valid_up_to()]),
                    )
                    .with_help("save the file as UTF-8"),
                );
                return None;
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        self.sources.insert(path.to_string(), text.to_string());
        let parsed = yaml::parse(path, text);
        self.diagnostics.extend(parsed.diagnostics);
        match parsed.root {
            Some(root) => Some(root),
            None if !self.diagnostics.iter().any(|d| d.file == path) => {
                self.push(
                    Diagnostic::error(Code::EmptyDocument, path, Span::FILE_START, format!("{path} holds no YAML document"))
                        .with_help(if path == FLEET_FILE {
                            "fill in the fleet-wide settings: region, internal_domain, hosted_zone_id, network, node_ami, instance_profile, image_registry"
                        } else {
                            "delete the file, or fill in the coin: coin, version, instance, placement, ports, health"
                        }),
                );
                None
            }
            None => None,
        }
    }

    fn decode<T: Decode>(&mut self, path: &str, root: &yaml::Node) -> Option<T> {
        let mut cx = Cx::new(path, T::schema);
        // A struct with an unknown field next to good ones still decodes (the unknown
        // field is reported), so the cross-file rules below run and report more.
        let v = T::decode(root, &mut cx);
        self.diagnostics.extend(cx.diagnostics);
        v
    }
}

/// 1-based line and column of byte `i` of `bytes` (columns count characters; line breaks
/// as YAML counts them, see [`yaml::Lines`]).
fn position_of_byte(bytes: &[u8], i: usize) -> Pos {
    let before = String::from_utf8_lossy(&bytes[..i]);
    let lines = yaml::Lines::new(&before);
    let line = lines.count() as u32;
    let col = lines.line(line).map_or(0, |l| l.chars().count()) as u32 + 1;
    Pos { line, col }
}

/// Load the repository held by `tree`: every error of every file, and the desired state
/// when there are none.
pub fn load(tree: &dyn FileTree) -> Loaded {
    let mut l = Loader {
        tree,
        diagnostics: Vec::new(),
        sources: BTreeMap::new(),
    };

    let fleet: Option<FleetFile> = l
        .parse_file(FLEET_FILE)
        .and_then(|root| l.decode(FLEET_FILE, &root));

    let mut coins: Vec<(String, CoinFile)> = Vec::new();
    let coin_files;
    match tree.list(COINS_DIR) {
        Ok(names) => {
            let (yaml_files, others): (Vec<String>, Vec<String>) = names
                .into_iter()
                .filter(|n| !n.starts_with('.'))
                .partition(|n| n.ends_with(".yaml") || n.ends_with(".yml"));
            for name in others {
                let path = format!("{COINS_DIR}/{name}");
                let upper = name.to_ascii_lowercase();
                let help = if upper.ends_with(".yaml") || upper.ends_with(".yml") {
                    format!(
                        "coin files are coins/<coin>.yaml in lower case: rename it to coins/{}",
                        upper
                    )
                } else {
                    "coin files are coins/<coin>.yaml: move this file out of coins/ or rename it"
                        .into()
                };
                l.push(
                    Diagnostic::error(
                        Code::NotCoinFile,
                        &path,
                        Span::FILE_START,
                        format!("{path} is not a coin file and is not read"),
                    )
                    .with_help(&help),
                );
            }
            for dir in tree.list_dirs(COINS_DIR).unwrap_or_default() {
                if dir.starts_with('.') {
                    continue;
                }
                let path = format!("{COINS_DIR}/{dir}/");
                l.push(
                    Diagnostic::error(
                        Code::NotCoinFile,
                        &path,
                        Span::FILE_START,
                        format!("{path} is a directory: nothing in it is read"),
                    )
                    .with_help("coin files are directly in coins/: move its coin files up, or the directory out"),
                );
            }
            coin_files = yaml_files.len();
            if yaml_files.len() > MAX_COINS {
                l.push(
                    Diagnostic::error(
                        Code::TooManyCoins,
                        COINS_DIR,
                        Span::FILE_START,
                        format!(
                            "{} coin files, more than the {MAX_COINS} supported",
                            yaml_files.len()
                        ),
                    )
                    .with_help("split the fleet into several repositories (one reconciler each)"),
                );
            }
            for name in yaml_files.into_iter().take(MAX_COINS) {
                let path = format!("{COINS_DIR}/{name}");
                if let Some(root) = l.parse_file(&path)
                    && let Some(coin) = l.decode::<CoinFile>(&path, &root)
                {
                    coins.push((path, coin));
                }
            }
        }
        Err(e) => {
            let (code, help) = match e {
                ReadError::SymlinkOutside { .. } => (
                    Code::SymlinkOutside,
                    "replace the link with a real coins/ directory inside the repository",
                ),
                _ => (Code::Io, "check the directory's permissions"),
            };
            coin_files = usize::MAX;
            l.push(
                Diagnostic::error(
                    code,
                    COINS_DIR,
                    Span::FILE_START,
                    format!("cannot list {COINS_DIR}/: {e}"),
                )
                .with_help(help),
            );
        }
    }
    // No coin file at all: never "valid, 0 coins" (which would retire the whole fleet).
    if coin_files == 0 {
        let near: Vec<String> = tree
            .list_dirs("")
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d != COINS_DIR && d.eq_ignore_ascii_case(COINS_DIR))
            .collect();
        let help = match near.first() {
            Some(d) => format!(
                "the coin files are in {d}/: rename it to coins/ (lower case; `git mv {d} coins`)"
            ),
            None => "add coins/<coin>.yaml files; to retire coins on purpose, delete their files and list them in fleet.yaml `retire:` (at least one coin must remain)".into(),
        };
        l.push(
            Diagnostic::error(
                Code::NoCoins,
                COINS_DIR,
                Span::FILE_START,
                "the repository has no coin files under coins/".into(),
            )
            .with_help(&help),
        );
    }

    if let Some(f) = &fleet {
        check_fleet(&mut l.diagnostics, f);
    }
    // Invalid approver ids are left out of the list and reported as E316 (while decoding
    // fleet.yaml, so once and for all here, not rescanned for every coin).
    let approvers_rejected = l
        .diagnostics
        .iter()
        .any(|d| d.code == Code::SlackUserId && d.file == FLEET_FILE);
    let mut seen: HashMap<String, (String, Span)> = HashMap::new();
    for (path, coin) in &coins {
        check_coin(
            &mut l.diagnostics,
            tree,
            fleet.as_ref(),
            approvers_rejected,
            path,
            coin,
        );
        let name = coin.coin.value.as_str().to_string();
        if let Some((first, span)) = seen.get(&name) {
            l.diagnostics.push(
                Diagnostic::error(
                    Code::DuplicateCoin,
                    path,
                    coin.coin.span,
                    format!(
                        "coin `{name}` is already defined in {first}:{}:{}",
                        span.start.line, span.start.col
                    ),
                )
                .with_help("keep one file per coin: delete or rename one of them"),
            );
        } else {
            seen.insert(name, (path.clone(), coin.coin.span));
        }
    }

    let mut diagnostics = l.diagnostics;
    // Grouped by file to build one line table per file rather than one per diagnostic (a
    // file can have thousands). The sort is stable, so the final order is unchanged.
    diagnostics.sort_by(|a, b| a.file.cmp(&b.file));
    for group in diagnostics.chunk_by_mut(|a, b| a.file == b.file) {
        if let Some(src) = l.sources.get(&group[0].file) {
            let lines = yaml::Lines::new(src);
            for d in group {
                d.span = lines.clamp(d.span);
            }
        }
    }
    diagnostics.sort_by(|a, b| (&a.file, a.span, a.code).cmp(&(&b.file, b.span, b.code)));
    diagnostics.dedup();
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    let desired = match (has_errors, fleet) {
        (false, Some(f)) => Some(resolve(&f, &coins, tree)),
        _ => None,
    };
    Loaded {
        desired,
        diagnostics,
        sources: l.sources,
    }
}

fn err(out: &mut Vec<Diagnostic>, code: Code, file: &str, span: Span, msg: String, help: &str) {
    out.push(Diagnostic::error(code, file, span, msg).with_help(help));
}

/// Security groups an instance may have (AWS's default quota per network interface).
pub const MAX_GROUPS_PER_NODE: usize = 5;

fn check_fleet(out: &mut Vec<Diagnostic>, f: &FleetFile) {
    // fleet attaches each coin's own group besides these.
    if let Some(g) = f.network.security_groups.get(MAX_GROUPS_PER_NODE - 1) {
        err(
            out,
            Code::OutOfRange,
            FLEET_FILE,
            g.span,
            format!(
                "{} security groups: AWS allows {MAX_GROUPS_PER_NODE} per network interface and fleet attaches each coin's own group too, so at most {} here",
                f.network.security_groups.len(),
                MAX_GROUPS_PER_NODE - 1
            ),
            "merge groups into at most 4: each coin's own group is the fifth, and 5 is AWS's default quota of security groups per network interface",
        );
    }
    if let Some(h) = f.defaults.as_ref().and_then(|d| d.health.as_ref()) {
        check_health_timeouts(
            out,
            FLEET_FILE,
            "defaults.health",
            &h.stall_timeout,
            &h.sync_timeout,
        );
        check_watch(out, FLEET_FILE, "defaults.health", &h.watch_interval);
    }
    check_heal(
        out,
        FLEET_FILE,
        "defaults.heal",
        f.defaults.as_ref().and_then(|d| d.heal.as_ref()),
    );
    for (zone, _) in &f.network.subnets.0 {
        if !zone.value.in_region(&f.region.value) {
            err(
                out,
                Code::ZoneNotInRegion,
                FLEET_FILE,
                zone.span,
                format!(
                    "subnet zone `{}` is not in region `{}`",
                    zone.value, f.region.value
                ),
                &format!(
                    "list only zones of {} (e.g. {}a), or change `region`",
                    f.region.value, f.region.value
                ),
            );
        }
    }
}

fn effective_approval(f: Option<&FleetFile>, c: &CoinFile) -> Approval {
    c.rollout
        .as_ref()
        .and_then(|r| r.approval.as_ref().map(|a| a.value))
        .or_else(|| {
            f.and_then(|f| f.defaults.as_ref())
                .and_then(|d| d.rollout.as_ref())
                .and_then(|r| r.approval.as_ref().map(|a| a.value))
        })
        .unwrap_or(builtin::APPROVAL)
}

/// Key names that hint at a credential.
const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "PRIVATE_KEY",
    "PRIVKEY",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "CREDENTIAL",
    "RPCAUTH",
    "AUTH_KEY",
    "MNEMONIC",
    "SEED_PHRASE",
];

/// Whether a value is a reference to a secret rather than the secret itself.
fn is_reference(v: &str) -> bool {
    v.is_empty()
        || v.starts_with('/')
        || (v.starts_with("${") && v.ends_with('}'))
        || (v.starts_with('<') && v.ends_with('>'))
        || v.starts_with("arn:aws:secretsmanager:")
        || v.starts_with("arn:aws:ssm:")
        || v.eq_ignore_ascii_case("changeme")
}

/// Why `value` (under `key`) looks like a credential, if it does.
pub fn credential_reason(key: &str, value: &str) -> Option<&'static str> {
    static PATTERNS: std::sync::LazyLock<Vec<(regex::Regex, &'static str)>> =
        std::sync::LazyLock::new(|| {
            [
                (
                    r"(?:^|[^A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?:$|[^A-Z0-9])",
                    "an AWS access key id",
                ),
                (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
                (r"xox[abposr]-[A-Za-z0-9-]{10,}", "a Slack token"),
                (
                    r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}",
                    "a GitHub token",
                ),
                (
                    r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@",
                    "a URL with a password",
                ),
            ]
            .into_iter()
            .map(|(p, why)| (regex::Regex::new(p).expect("valid"), why))
            .collect()
        });
    if let Some((_, why)) = PATTERNS.iter().find(|(re, _)| re.is_match(value)) {
        return Some(why);
    }
    let upper = key.to_ascii_uppercase();
    if SECRET_WORDS.iter().any(|w| upper.contains(w)) && !is_reference(value) {
        return Some("a credential (its name says so)");
    }
    None
}

fn check_env(
    out: &mut Vec<Diagnostic>,
    file: &str,
    section: &str,
    env: &Entries<EnvName, EnvValue>,
) {
    for (k, v) in &env.0 {
        if let Some(why) = credential_reason(k.value.as_str(), v.value.as_str()) {
            let mut d = Diagnostic::error(
                Code::Credential,
                file,
                v.span,
                format!("`{section}.{}` holds what looks like {why}, in clear text", k.value),
            )
            .with_help("move it into the coin's Secrets Manager secret (`secrets:`); its keys become container environment variables");
            d.redact_source = true;
            out.push(d);
        }
    }
}

/// The rules of one coin file, and those between it and fleet.yaml. `approvers_rejected`:
/// fleet.yaml's `approvers` held invalid ids (already reported).
fn check_coin(
    out: &mut Vec<Diagnostic>,
    tree: &dyn FileTree,
    f: Option<&FleetFile>,
    approvers_rejected: bool,
    path: &str,
    c: &CoinFile,
) {
    // coins/<coin>.yaml
    let stem = path
        .strip_prefix("coins/")
        .and_then(|n| n.strip_suffix(".yaml").or_else(|| n.strip_suffix(".yml")))
        .unwrap_or(path);
    if stem != c.coin.value.as_str() {
        err(
            out,
            Code::CoinFileMismatch,
            path,
            c.coin.span,
            format!("`coin` is `{}` but the file is named {stem}", c.coin.value),
            &format!(
                "rename the file to coins/{}.yaml, or set `coin: {stem}`",
                c.coin.value
            ),
        );
    }

    // Zones.
    let mut seen: HashMap<&Zone, Span> = HashMap::new();
    for z in c.placement.zones.iter() {
        if let Some(first) = seen.get(&z.value) {
            err(
                out,
                Code::DuplicateZone,
                path,
                z.span,
                format!(
                    "zone `{}` is listed twice in `placement.zones` (first at line {})",
                    z.value, first.start.line
                ),
                "list each zone once; raise `placement.nodes_per_zone` for more nodes per zone",
            );
            continue;
        }
        seen.insert(&z.value, z.span);
        let Some(f) = f else { continue };
        if !z.value.in_region(&f.region.value) {
            err(
                out,
                Code::ZoneNotInRegion,
                path,
                z.span,
                format!(
                    "zone `{}` is not in the fleet's region `{}`",
                    z.value, f.region.value
                ),
                &format!("use zones of {} (fleet.yaml `region`)", f.region.value),
            );
        } else if !f.network.subnets.0.iter().any(|(k, _)| k.value == z.value) {
            let have: Vec<String> = f
                .network
                .subnets
                .0
                .iter()
                .map(|(k, _)| k.value.to_string())
                .collect();
            err(
                out,
                Code::ZoneWithoutSubnet,
                path,
                z.span,
                format!(
                    "zone `{}` has no subnet in fleet.yaml `network.subnets`",
                    z.value
                ),
                &format!(
                    "add a subnet for it to fleet.yaml, or use one of: {}",
                    have.join(", ")
                ),
            );
        }
    }

    // Ports.
    // Invalid rpc ports were reported while decoding; they are kept as `None` so that the
    // list still counts as written (a probe then needs no second error for it).
    let rpc_written = c.ports.rpc.as_deref().is_some_and(|r| !r.is_empty());
    let rpc: Vec<Spanned<Port>> = c
        .ports
        .rpc
        .iter()
        .flatten()
        .filter_map(|p| {
            p.value.0.map(|value| Spanned {
                value,
                span: p.span,
            })
        })
        .collect();
    let rpc = rpc.as_slice();
    let p2p = c.ports.p2p.as_deref().unwrap_or_default();
    let mut seen_ports: HashMap<u16, Span> = HashMap::new();
    for p in rpc.iter().chain(p2p) {
        if let Some(first) = seen_ports.get(&p.value.0) {
            err(
                out,
                Code::DuplicatePort,
                path,
                p.span,
                format!(
                    "port {} is used twice (first at line {}, column {})",
                    p.value.0, first.start.line, first.start.col
                ),
                "list each port once, under either `rpc` or `p2p`",
            );
        } else {
            seen_ports.insert(p.value.0, p.span);
        }
    }

    // Health.
    let h = &c.health;
    if let Some(rp) = &h.rpc_port {
        if !rpc.iter().any(|p| p.value == rp.value) {
            let list: Vec<String> = rpc.iter().map(|p| p.value.0.to_string()).collect();
            err(
                out,
                Code::RpcPort,
                path,
                rp.span,
                format!(
                    "`health.rpc_port` {} is not among `ports.rpc` [{}]",
                    rp.value.0,
                    list.join(", ")
                ),
                "use one of the rpc ports, or add this port to `ports.rpc`",
            );
        }
    } else if h.probe.value != Probe::None && !rpc_written {
        err(
            out,
            Code::RpcPort,
            path,
            h.probe.span,
            format!(
                "probe `{}` needs an rpc port, but `ports.rpc` is empty",
                h.probe.value
            ),
            "add the node's RPC port to `ports.rpc`, or use `probe: none`",
        );
    }
    match (&h.http, h.probe.value) {
        (None, Probe::Http) => err(
            out,
            Code::HttpProbe,
            path,
            h.probe.span,
            "probe `http` needs `health.http` with `path` and `height_pointer`".into(),
            "add e.g. `http: { path: /api/core/v2/info, height_pointer: /confirmedMilestone/index }` under `health`",
        ),
        (Some(hp), p) if p != Probe::Http => err(
            out,
            Code::HttpProbe,
            path,
            hp.span,
            format!("`health.http` is set but the probe is `{p}`"),
            "remove `health.http`, or set `probe: http`",
        ),
        _ => {}
    }

    // A restoring rollback needs the snapshot it restores.
    let on_failure = c
        .rollout
        .as_ref()
        .and_then(|r| r.on_failure.as_ref())
        .or_else(|| {
            f.and_then(|f| f.defaults.as_ref())
                .and_then(|d| d.rollout.as_ref())
                .and_then(|r| r.on_failure.as_ref())
        });
    let snapshots_off = c
        .snapshots
        .as_ref()
        .and_then(|s| s.before_upgrade.as_ref())
        .filter(|b| !b.value);
    if let (Some(of), Some(off)) = (on_failure, snapshots_off)
        && of.value == OnFailure::Restore
    {
        err(
            out,
            Code::RestoreWithoutSnapshot,
            path,
            off.span,
            format!(
                "`{}` rolls back with `on_failure: restore`, which restores the before-upgrade snapshot, but `snapshots.before_upgrade` is false",
                c.coin.value
            ),
            "set `snapshots.before_upgrade: true`, or `rollout.on_failure: rollback`",
        );
    }

    // Approvals need approvers.
    if let Some(f) = f {
        let approval = effective_approval(Some(f), c);
        // Rejected approver ids were left out of the list: don't also claim it is empty.
        if approval != Approval::None
            && !approvers_rejected
            && f.approvers.as_ref().is_none_or(Vec::is_empty)
        {
            let span = c
                .rollout
                .as_ref()
                .and_then(|r| r.approval.as_ref().map(|a| a.span))
                .unwrap_or(c.coin.span);
            err(
                out,
                Code::NoApprovers,
                path,
                span,
                format!(
                    "rollouts of `{}` need approval (`{approval}`) but fleet.yaml lists no `approvers`",
                    c.coin.value
                ),
                "add Slack user ids to fleet.yaml `approvers`, or set `rollout.approval: none`",
            );
        }
    }

    // Environment.
    if let Some(env) = &c.host_config {
        for (k, _) in &env.0 {
            if [
                "IMAGE",
                "COIN",
                "PORTS",
                "RPC_PORTS",
                "P2P_PORTS",
                "NODE_NAME",
            ]
            .contains(&k.value.as_str())
            {
                let field = match k.value.as_str() {
                    "IMAGE" => "image.repository and version",
                    "COIN" => "coin",
                    "NODE_NAME" => "the node's DNS name (internal_domain)",
                    _ => "ports",
                };
                err(
                    out,
                    Code::ReservedEnv,
                    path,
                    k.span,
                    format!("`host_config.{}` is written by fleet", k.value),
                    &format!("remove it; fleet sets it from `{field}`"),
                );
            }
        }
        check_env(out, path, "host_config", env);
    }
    if let Some(env) = &c.container_config {
        check_env(out, path, "container_config", env);
    }

    // Metrics scripts live in the repository.
    if let Some(m) = &c.custom_metrics {
        for (name, script) in &m.0 {
            let p = script.value.as_str();
            if p.split('/').any(|s| s == "." || s == "..") {
                err(
                    out,
                    Code::MetricsScript,
                    path,
                    script.span,
                    format!(
                        "`custom_metrics.{}` path `{p}` leaves the repository or uses `.`",
                        name.value
                    ),
                    "write the path from the repository root without `.` or `..`, e.g. metrics/bitcoin.sh",
                );
            } else if !tree.is_file(p) {
                err(
                    out,
                    Code::MetricsScript,
                    path,
                    script.span,
                    format!(
                        "`custom_metrics.{}` script `{p}` does not exist in the repository",
                        name.value
                    ),
                    "add the script to the repository, or fix the path (relative to the repository root)",
                );
            } else if let Err(what) = read_metrics_script(tree, p) {
                err(
                    out,
                    Code::MetricsScript,
                    path,
                    script.span,
                    format!("`custom_metrics.{}` script `{p}` {what}", name.value),
                    "keep a metrics script a small text file (it is installed on every node through its user data)",
                );
            }
        }
    }

    // Tags.
    if let Some(t) = &c.tags {
        for (k, _) in &t.0 {
            let lower = k.value.as_str().to_ascii_lowercase();
            if lower.starts_with("fleet:") || lower.starts_with("aws:") {
                err(
                    out,
                    Code::ReservedTag,
                    path,
                    k.span,
                    format!("tag key `{}` uses a reserved prefix", k.value),
                    "`fleet:` tags record fleet's ownership and `aws:` belongs to AWS: choose another key",
                );
            } else if k.value.as_str() == "Name" {
                err(
                    out,
                    Code::ReservedTag,
                    path,
                    k.span,
                    "tag key `Name` is written by fleet".into(),
                    "fleet names every node node<N>.<coin>.<internal_domain>: remove the tag",
                );
            }
        }
        if t.0.len() > MAX_COIN_TAGS
            && let Some((k, _)) = t.0.get(MAX_COIN_TAGS)
        {
            err(
                out,
                Code::TooManyTags,
                path,
                k.span,
                format!(
                    "{} tags: AWS allows 50 per resource and fleet writes up to {} of its own, so a coin may set at most {MAX_COIN_TAGS}",
                    t.0.len(),
                    50 - MAX_COIN_TAGS
                ),
                "remove tags (or move what they say to one tag)",
            );
        }
    }

    check_health_timeouts(
        out,
        path,
        "health",
        &c.health.stall_timeout,
        &c.health.sync_timeout,
    );
    check_watch(out, path, "health", &c.health.watch_interval);
    if let Some(d) = &c.deadline {
        match (&d.value.height, &d.value.date) {
            (None, None) | (Some(_), Some(_)) => err(
                out,
                Code::OutOfRange,
                path,
                d.span,
                "`deadline` needs exactly one of `height` and `date`".to_string(),
                "write `height:` (an activation height) or `date:` (YYYY-MM-DD), not both",
            ),
            (None, Some(t)) if t.value.unix_ms().is_none() => err(
                out,
                Code::OutOfRange,
                path,
                t.span,
                format!("`deadline.date` is {}: no such day", t.value),
                "write a day of the calendar, YYYY-MM-DD, from 1970 on",
            ),
            _ => {}
        }
    }
    if let Some(e) = c.snapshots.as_ref().and_then(|s| s.every.as_ref())
        && e.value.0 < std::time::Duration::from_secs(3600)
    {
        err(
            out,
            Code::OutOfRange,
            path,
            e.span,
            format!(
                "`snapshots.every` is {}: a snapshot of a whole chain that often costs more than it saves",
                e.value
            ),
            "set it to at least 1h (24h is usual)",
        );
    }
    check_heal(out, path, "heal", c.heal.as_ref());
    if let Some(m) = &c.health.min_synced {
        let nodes = c.placement.zones.len() as u64 * u64::from(c.placement.nodes_per_zone.0);
        if u64::from(m.value.0) > nodes {
            err(
                out,
                Code::OutOfRange,
                path,
                m.span,
                format!(
                    "`health.min_synced` is {} but the coin has {nodes} node{}: it could never be met, and its incident would never close",
                    m.value.0,
                    if nodes == 1 { "" } else { "s" }
                ),
                &format!("set it to at most {nodes}, or add nodes"),
            );
        }
    }
}

/// Shortest `health.watch_interval`: probing more often than this only loads the nodes.
pub const MIN_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn check_watch(
    out: &mut Vec<Diagnostic>,
    path: &str,
    section: &str,
    watch: &Option<Spanned<Duration>>,
) {
    if let Some(d) = watch
        && d.value.0 < MIN_WATCH_INTERVAL
    {
        err(
            out,
            Code::OutOfRange,
            path,
            d.span,
            format!(
                "`{section}.watch_interval` is {}: fleet would probe every node more often than every {}s",
                d.value,
                MIN_WATCH_INTERVAL.as_secs()
            ),
            &format!(
                "set it to at least {}s (1m is the default)",
                MIN_WATCH_INTERVAL.as_secs()
            ),
        );
    }
}

/// A restart sooner than a restart takes would restart a node that is only starting.
fn check_heal(out: &mut Vec<Diagnostic>, path: &str, section: &str, heal: Option<&OrOff<Heal>>) {
    if let Some(d) = heal
        .and_then(OrOff::on)
        .and_then(|h| h.restart_after.as_ref())
        && d.value.0 < MIN_HEALTH_TIMEOUT
    {
        err(
            out,
            Code::OutOfRange,
            path,
            d.span,
            format!(
                "`{section}.restart_after` is {}: a node could be restarted again before its last restart finished",
                d.value
            ),
            &format!(
                "set it to at least {}m (30m is the default)",
                MIN_HEALTH_TIMEOUT.as_secs() / 60
            ),
        );
    }
    if let Some(OrOff::On(d)) = heal
        .and_then(OrOff::on)
        .and_then(|h| h.replace_after.as_ref())
        && d.value.0.as_secs() < builtin::HEAL_REPLACE_AFTER_MIN_SECS
    {
        err(
            out,
            Code::OutOfRange,
            path,
            d.span,
            format!(
                "`{section}.replace_after` is {}: a host event that clears itself in minutes would cost a new instance",
                d.value
            ),
            &format!(
                "set it to at least {}m (1h is the default), or `off`",
                builtin::HEAL_REPLACE_AFTER_MIN_SECS / 60
            ),
        );
    }
}

/// A gate that fails before a node can even restart is a mistake, not a policy.
fn check_health_timeouts(
    out: &mut Vec<Diagnostic>,
    path: &str,
    section: &str,
    stall: &Option<Spanned<Duration>>,
    sync: &Option<Spanned<Duration>>,
) {
    for (name, d) in [("stall_timeout", stall), ("sync_timeout", sync)] {
        if let Some(d) = d
            && d.value.0 < MIN_HEALTH_TIMEOUT
        {
            err(
                out,
                Code::OutOfRange,
                path,
                d.span,
                format!(
                    "`{section}.{name}` is {}: every gate would fail before a node restarted",
                    d.value
                ),
                &format!(
                    "set it to at least {}m (a restart alone takes tens of seconds)",
                    MIN_HEALTH_TIMEOUT.as_secs() / 60
                ),
            );
        }
    }
}

/// The content of a metrics script, or what is wrong with it.
fn read_metrics_script(tree: &dyn FileTree, p: &str) -> Result<String, String> {
    let bytes = tree
        .read(p, MAX_METRICS_SCRIPT as u64)
        .map_err(|e| match e {
            ReadError::TooLarge { size, limit } => format!("is {size} bytes, over {limit}"),
            e => format!("cannot be read: {e}"),
        })?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(text)
}

/// The coin's healing: its own `heal:` section, else fleet.yaml's `defaults.heal`, else the
/// built-in one (on); `off` at either level switches it off. The section a coin writes
/// replaces the default's as a whole.
fn heal_spec(h: Option<&OrOff<Heal>>) -> Option<HealSpec> {
    let h = match h {
        Some(OrOff::Off) => return None,
        Some(OrOff::On(h)) => Some(h),
        None => None,
    };
    Some(HealSpec {
        restart_after: h
            .and_then(|h| h.restart_after.as_ref())
            .map(|s| s.value)
            .unwrap_or(Duration(std::time::Duration::from_secs(
                builtin::HEAL_RESTART_AFTER_SECS,
            ))),
        max_per_day: h
            .and_then(|h| h.max_per_day)
            .map_or(builtin::HEAL_MAX_PER_DAY, |m| m.0),
        replace_after: match h.and_then(|h| h.replace_after.as_ref()) {
            Some(OrOff::Off) => None,
            Some(OrOff::On(d)) => Some(d.value),
            None => Some(Duration(std::time::Duration::from_secs(
                builtin::HEAL_REPLACE_AFTER_SECS,
            ))),
        },
    })
}

fn spanned_value<T: Clone>(s: &Spanned<T>) -> T {
    s.value.clone()
}

fn resolve(f: &FleetFile, coins: &[(String, CoinFile)], tree: &dyn FileTree) -> Desired {
    let dr = f.defaults.as_ref().and_then(|d| d.rollout.as_ref());
    let dh = f.defaults.as_ref().and_then(|d| d.health.as_ref());
    let fleet = Fleet {
        region: f.region.value.clone(),
        internal_domain: f.internal_domain.clone(),
        hosted_zone_id: f.hosted_zone_id.clone(),
        vpc_id: f.network.vpc_id.clone(),
        subnets: f.network.subnets.to_map(),
        security_groups: f
            .network
            .security_groups
            .iter()
            .map(spanned_value)
            .collect(),
        rpc_from: f.network.rpc_from.clone().unwrap_or_default(),
        node_ami: f.node_ami.clone(),
        instance_profile: f.instance_profile.clone(),
        image_registry: f.image_registry.clone(),
        slack_channel: f
            .notifications
            .as_ref()
            .and_then(|n| n.slack_channel.clone()),
        approvers: f.approvers.iter().flatten().map(spanned_value).collect(),
        retire: f.retire.clone().unwrap_or_default(),
        max_retire_percent: f
            .limits
            .as_ref()
            .and_then(|l| l.max_retire_percent)
            .map_or(builtin::MAX_RETIRE_PERCENT, |p| p.0),
    };
    let mut out = BTreeMap::new();
    for (path, c) in coins {
        let name = c.coin.value.clone();
        let cr = c.rollout.as_ref();
        let ch = &c.health;
        let repository = c
            .image
            .as_ref()
            .and_then(|i| i.repository.clone())
            .unwrap_or_else(|| {
                ImageRepo::parse(&format!("{}/{}", f.image_registry, name))
                    .expect("registry and coin name are both valid, so is their join")
            });
        let rpc_ports: Vec<u16> = c
            .ports
            .rpc
            .iter()
            .flatten()
            .filter_map(|p| p.value.0.map(|p| p.0))
            .collect();
        let zones: Vec<Zone> = c.placement.zones.iter().map(spanned_value).collect();
        let coin =
            Coin {
                nodes: desired::node_slots(
                    &name,
                    &zones,
                    c.placement.nodes_per_zone.0,
                    &f.internal_domain,
                ),
                name: name.clone(),
                file: path.clone(),
                version: c.version.value.clone(),
                image: ImageRef {
                    repository,
                    digest: c.image.as_ref().and_then(|i| i.digest.clone()),
                },
                upstream: c.upstream.as_ref().map(|u| UpstreamSpec {
                    github: u.github.clone(),
                    tag_pattern: u
                        .tag_pattern
                        .as_ref()
                        .map(spanned_value)
                        .unwrap_or_default(),
                    prereleases: u.prereleases.unwrap_or(false),
                    min_release_age: u
                        .min_release_age
                        .unwrap_or(Duration(std::time::Duration::ZERO)),
                }),
                instance_type: c.instance.instance_type.clone(),
                root_volume_gb: c
                    .instance
                    .root_volume_gb
                    .map_or(builtin::ROOT_VOLUME_GB, |v| v.0),
                data_volume_gb: c.instance.data_volume_gb.value.0,
                zones,
                nodes_per_zone: c.placement.nodes_per_zone.0,
                rpc_ports: rpc_ports.clone(),
                p2p_ports: c.ports.p2p.iter().flatten().map(|p| p.value.0).collect(),
                health: HealthSpec {
                    probe: ch.probe.value,
                    rpc_port: ch
                        .rpc_port
                        .as_ref()
                        .map(|p| p.value.0)
                        .or(rpc_ports.first().copied()),
                    max_lag_blocks: ch
                        .max_lag_blocks
                        .or(dh.and_then(|d| d.max_lag_blocks))
                        .map_or(builtin::MAX_LAG_BLOCKS, |v| v.0),
                    stall_timeout: ch
                        .stall_timeout
                        .as_ref()
                        .map(|s| s.value)
                        .or(dh.and_then(|d| d.stall_timeout.as_ref().map(|s| s.value)))
                        .unwrap_or(Duration(std::time::Duration::from_secs(
                            builtin::STALL_TIMEOUT_SECS,
                        ))),
                    sync_timeout: ch
                        .sync_timeout
                        .as_ref()
                        .map(|s| s.value)
                        .or(dh.and_then(|d| d.sync_timeout.as_ref().map(|s| s.value)))
                        .unwrap_or(Duration(std::time::Duration::from_secs(
                            builtin::SYNC_TIMEOUT_SECS,
                        ))),
                    full_sync_estimate: ch.full_sync_estimate,
                    http: ch.http.as_ref().map(|h| HttpSpec {
                        path: h.value.path.clone(),
                        height_pointer: h.value.height_pointer.clone(),
                        target_pointer: h.value.target_pointer.clone(),
                        version_pointer: h.value.version_pointer.clone(),
                    }),
                    daemon_version: ch.daemon_version.unwrap_or(true),
                    watch_interval: ch
                        .watch_interval
                        .as_ref()
                        .map(|s| s.value)
                        .or(dh.and_then(|d| d.watch_interval.as_ref().map(|s| s.value)))
                        .unwrap_or(Duration(std::time::Duration::from_secs(
                            builtin::WATCH_INTERVAL_SECS,
                        ))),
                    alert_after: ch.alert_after.or(dh.and_then(|d| d.alert_after)).unwrap_or(
                        Duration(std::time::Duration::from_secs(builtin::ALERT_AFTER_SECS)),
                    ),
                    min_synced: ch
                        .min_synced
                        .as_ref()
                        .map_or(builtin::MIN_SYNCED, |m| m.value.0),
                },
                deadline: c.deadline.as_ref().and_then(|d| {
                    let d = &d.value;
                    let by = match (&d.height, &d.date) {
                        (Some(h), None) => DeadlineBy::Height(h.value.0),
                        (None, Some(t)) => DeadlineBy::Date(t.value.unix_ms()?),
                        // Refused by check_coin.
                        _ => return None,
                    };
                    Some(DeadlineSpec {
                        version: d.version.value.clone(),
                        by,
                    })
                }),
                disk: {
                    let cd = c.disk.as_ref();
                    let dd = f.defaults.as_ref().and_then(|d| d.disk.as_ref());
                    DiskSpec {
                        grow_at: cd
                            .and_then(|d| d.grow_at)
                            .or(dd.and_then(|d| d.grow_at))
                            .map_or(builtin::DISK_GROW_AT, |v| v.0),
                        min_days_left: cd
                            .and_then(|d| d.min_days_left)
                            .or(dd.and_then(|d| d.min_days_left))
                            .map_or(builtin::DISK_MIN_DAYS_LEFT, |v| v.0),
                        grow_by: cd
                            .and_then(|d| d.grow_by)
                            .or(dd.and_then(|d| d.grow_by))
                            .map_or(builtin::DISK_GROW_BY, |v| v.0),
                        auto_grow: cd
                            .and_then(|d| d.auto_grow)
                            .or(dd.and_then(|d| d.auto_grow))
                            .unwrap_or(false),
                    }
                },
                heal: heal_spec(
                    c.heal
                        .as_ref()
                        .or(f.defaults.as_ref().and_then(|d| d.heal.as_ref())),
                ),
                rollout: RolloutSpec {
                    max_unavailable: cr
                        .and_then(|r| r.max_unavailable.as_ref())
                        .or(dr.and_then(|d| d.max_unavailable.as_ref()))
                        .map_or(builtin::MAX_UNAVAILABLE, |v| v.value.0),
                    bake: cr
                        .and_then(|r| r.bake)
                        .or(dr.and_then(|d| d.bake))
                        .unwrap_or(Duration(std::time::Duration::from_secs(builtin::BAKE_SECS))),
                    approval: effective_approval(Some(f), c),
                    on_failure: cr
                        .and_then(|r| r.on_failure.as_ref())
                        .or(dr.and_then(|d| d.on_failure.as_ref()))
                        .map(|s| s.value)
                        .unwrap_or(OnFailure::Hold),
                },
                snapshots: SnapshotSpec {
                    before_upgrade: c
                        .snapshots
                        .as_ref()
                        .and_then(|s| s.before_upgrade.as_ref())
                        .is_none_or(|b| b.value),
                    restore_new_nodes: c
                        .snapshots
                        .as_ref()
                        .and_then(|s| s.restore_new_nodes)
                        .unwrap_or(true),
                    every: c
                        .snapshots
                        .as_ref()
                        .and_then(|s| s.every.as_ref())
                        .map(|e| e.value),
                    keep: c
                        .snapshots
                        .as_ref()
                        .and_then(|s| s.keep)
                        .map_or(builtin::SNAPSHOTS_KEEP, |k| k.0),
                    max_age: c.snapshots.as_ref().and_then(|s| s.max_age),
                    stop_daemon: c
                        .snapshots
                        .as_ref()
                        .and_then(|s| s.stop_daemon)
                        .unwrap_or(false),
                },
                secrets: c.secrets.clone(),
                host_config: c
                    .host_config
                    .as_ref()
                    .map(Entries::to_map)
                    .unwrap_or_default(),
                container_config: c
                    .container_config
                    .as_ref()
                    .map(Entries::to_map)
                    .unwrap_or_default(),
                custom_metrics: c
                    .custom_metrics
                    .as_ref()
                    .map(Entries::to_map)
                    .unwrap_or_default(),
                logging: c
                    .logging
                    .as_ref()
                    .or(f.logging.as_ref())
                    .map(|l| LoggingSpec {
                        driver: l.driver.clone(),
                        options: l.options.as_ref().map(Entries::to_map).unwrap_or_default(),
                    }),
                // Checked by check_coin: present, small, text.
                metric_scripts: c
                    .custom_metrics
                    .as_ref()
                    .map(Entries::to_map)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(n, p)| Some((n, read_metrics_script(tree, p.as_str()).ok()?)))
                    .collect(),
                tags: c.tags.as_ref().map(Entries::to_map).unwrap_or_default(),
            };
        out.insert(name.as_str().to_string(), coin);
    }
    Desired { fleet, coins: out }
}
