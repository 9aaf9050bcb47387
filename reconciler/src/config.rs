//! `fleet run`'s configuration: one YAML file (every key optional, documented in
//! `examples/reconciler.yaml`), secrets from the environment only, flags over both.
//!
//! Precedence: flag > file > built-in default. Secrets (the webhook secret, the git token,
//! the SSH key passphrase, node RPC credentials) are read from environment variables whose
//! names the file may change, never from the file itself: a config file gets copied, pasted
//! and committed.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration problem, with where it is and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither the file nor a flag says where the fleet is.
    #[error(
        "no provider named: fleet run never picks one for you.\n  provider: aws   (in the config file, or --provider aws) reconciles the fleet in your AWS account\n  provider: sim   (or --provider sim) reconciles a simulated fleet kept in state_dir"
    )]
    NoProvider,
    /// The file could not be read.
    #[error("{path}: cannot read: {message}")]
    Read {
        /// File.
        path: String,
        /// OS error.
        message: String,
    },
    /// The file is not valid (YAML syntax, unknown key, wrong type).
    #[error(
        "{path}:{line}:{column}: {message}\nhelp: every key is described in examples/reconciler.yaml"
    )]
    Parse {
        /// File.
        path: String,
        /// 1-based line (0: unknown).
        line: usize,
        /// 1-based column (0: unknown).
        column: usize,
        /// What serde_yaml said.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{key}: {message}")]
    Value {
        /// Key (`repo.poll_interval`, or the flag).
        key: String,
        /// Why, and what would be right.
        message: String,
    },
}

/// The file, as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The fleet repository.
    /// (An empty section, `repo:` with nothing under it, is allowed.)
    #[serde(default)]
    pub repo: Option<RepoFile>,
    /// `sim` or `aws`.
    pub provider: Option<String>,
    /// HTTP listen address.
    pub listen: Option<String>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// Loop timing.
    /// (An empty section, `reconcile:` with nothing under it, is allowed.)
    #[serde(default)]
    pub reconcile: Option<ReconcileFile>,
    /// AWS settings.
    /// (An empty section, `aws:` with nothing under it, is allowed.)
    #[serde(default)]
    pub aws: Option<AwsFile>,
    /// Simulator settings.
    /// (An empty section, `sim:` with nothing under it, is allowed.)
    #[serde(default)]
    pub sim: Option<SimFile>,
    /// GitHub webhook.
    /// (An empty section, `webhook:` with nothing under it, is allowed.)
    #[serde(default)]
    pub webhook: Option<WebhookFile>,
    /// The fleet repository on GitHub (bump pull requests) and the API.
    #[serde(default)]
    pub github: Option<GithubFile>,
    /// The release watch.
    #[serde(default)]
    pub release_watch: Option<ReleaseWatchFile>,
    /// The image registry, for digests of bumped versions.
    #[serde(default)]
    pub registry: Option<RegistryFile>,
    /// Slack.
    #[serde(default)]
    pub slack: Option<SlackFile>,
}

/// `github:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubFile {
    /// API base (GitHub Enterprise: `https://<host>/api/v3`).
    pub api_url: Option<String>,
    /// `owner/name` of the fleet repository on GitHub.
    pub repo: Option<String>,
    /// Branch bump pull requests target (default: `repo.branch`, else `main`).
    pub base: Option<String>,
    /// Env var holding the token.
    pub token_env: Option<String>,
}

/// `release_watch:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseWatchFile {
    /// On or off (default: on when `github.repo` is set).
    pub enabled: Option<bool>,
    /// Time between cycles.
    pub interval: Option<String>,
    /// Longest wait for a GitHub rate limit inside a cycle.
    pub max_rate_wait: Option<String>,
}

/// `registry:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Resolve digests at all (default true).
    pub resolve_digests: Option<bool>,
    /// Env var holding the registry user.
    pub username_env: Option<String>,
    /// Env var holding the registry password or token.
    pub password_env: Option<String>,
}

/// `slack:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFile {
    /// Web API base.
    pub api_url: Option<String>,
    /// Channel (default: fleet.yaml's `notifications.slack_channel`).
    pub channel: Option<String>,
    /// Env var holding the bot token (`xoxb-…`).
    pub token_env: Option<String>,
    /// Env var holding the app's signing secret.
    pub signing_secret_env: Option<String>,
    /// Identical alerts are not repeated within this.
    pub repeat_window: Option<String>,
}

/// The file with its sections filled in.
struct Resolved {
    repo: RepoFile,
    provider: Option<String>,
    listen: Option<String>,
    state_dir: Option<PathBuf>,
    reconcile: ReconcileFile,
    aws: AwsFile,
    sim: SimFile,
    webhook: WebhookFile,
    github: GithubFile,
    release_watch: ReleaseWatchFile,
    registry: RegistryFile,
    slack: SlackFile,
}

/// `repo:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoFile {
    /// Path or URL.
    pub url: Option<String>,
    /// Branch (default: the remote's default branch).
    pub branch: Option<String>,
    /// Directory of the fleet inside the repository.
    pub subdir: Option<String>,
    /// Fetch interval (`30s`).
    pub poll_interval: Option<String>,
    /// Watch a local repository for changes.
    pub watch: Option<bool>,
    /// Cache clone location.
    pub cache_dir: Option<PathBuf>,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
    /// Env var holding the HTTPS token.
    pub token_env: Option<String>,
    /// Env var holding the SSH key's passphrase.
    pub ssh_passphrase_env: Option<String>,
    /// Which commits may be applied.
    pub verify: Option<VerifyFile>,
}

/// `repo.verify:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    /// An OpenSSH `allowed_signers` file: only commits signed by one of its keys are applied.
    pub allowed_signers: PathBuf,
}

/// `reconcile:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileFile {
    /// Safety-net period between passes.
    pub requeue: Option<String>,
    /// First retry delay after an error.
    pub backoff_min: Option<String>,
    /// Longest retry delay.
    pub backoff_max: Option<String>,
    /// Coins rolled out at once.
    pub parallel_coins: Option<usize>,
    /// Time between gate readings.
    pub gate_poll: Option<String>,
}

/// `aws:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsFile {
    /// Region (default: fleet.yaml's `region`).
    pub region: Option<String>,
    /// Endpoint override (an emulator).
    pub endpoint_url: Option<String>,
}

/// `sim:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFile {
    /// Simulated seconds per real second.
    pub speed: Option<f64>,
    /// `in-sync` (default) or `empty`.
    pub start: Option<String>,
}

/// `webhook:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Env var holding the GitHub webhook secret.
    pub secret_env: Option<String>,
}

/// What the flags of `fleet run` may set (None: not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// --repo
    pub repo: Option<String>,
    /// --branch
    pub branch: Option<String>,
    /// --provider
    pub provider: Option<String>,
    /// --listen
    pub listen: Option<String>,
    /// --state-dir
    pub state_dir: Option<PathBuf>,
    /// --sim-speed
    pub sim_speed: Option<f64>,
    /// --aws-endpoint
    pub aws_endpoint: Option<String>,
    /// --poll-interval
    pub poll_interval: Option<String>,
    /// --github-api
    pub github_api: Option<String>,
    /// --github-repo
    pub github_repo: Option<String>,
    /// --slack-api
    pub slack_api: Option<String>,
    /// --release-interval
    pub release_interval: Option<String>,
}

/// Where the simulator starts when its state directory holds no fleet yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimStart {
    /// Every node of the first valid commit, running its version, in sync.
    InSync,
    /// Nothing: the first pass launches every node.
    Empty,
}

/// Which provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// The simulator.
    Sim,
    /// AWS.
    Aws,
}

impl RunConfig {
    /// The provider named, which `fleet run` needs: [`ConfigError::NoProvider`] otherwise.
    pub fn provider(&self) -> Result<ProviderChoice, ConfigError> {
        self.provider.ok_or(ConfigError::NoProvider)
    }

    /// Whether the fleet is a simulation (its Slack messages and screens say so).
    pub fn simulated(&self) -> bool {
        self.provider == Some(ProviderChoice::Sim)
    }
}

impl ProviderChoice {
    /// Its name in the configuration, on `/status` and in the `provider` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderChoice::Sim => "sim",
            ProviderChoice::Aws => "aws",
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Path or URL of the fleet repository.
    pub repo: String,
    /// Branch (None: the remote's default).
    pub branch: Option<String>,
    /// Fleet directory inside the repository.
    pub subdir: String,
    /// Fetch interval, ms.
    pub poll_interval_ms: u64,
    /// Watch a local repository.
    pub watch: bool,
    /// Cache clone.
    pub cache_dir: PathBuf,
    /// SSH key.
    pub ssh_key: Option<PathBuf>,
    /// Env var of the HTTPS token.
    pub token_env: String,
    /// Env var of the SSH passphrase.
    pub ssh_passphrase_env: String,
    /// `repo.verify.allowed_signers`, read: only commits signed by one of its keys are
    /// applied ([`crate::signers`]).
    pub allowed_signers: Option<std::sync::Arc<crate::signers::AllowedSigners>>,
    /// Provider: never a default. `fleet run` refuses to start without one
    /// ([`RunConfig::provider`]); `fleet release-watch` needs none.
    pub provider: Option<ProviderChoice>,
    /// Listen address.
    pub listen: SocketAddr,
    /// State directory.
    pub state_dir: PathBuf,
    /// Requeue period, ms.
    pub requeue_ms: u64,
    /// Backoff bounds, ms.
    pub backoff_min_ms: u64,
    /// Backoff bounds, ms.
    pub backoff_max_ms: u64,
    /// Coins at once.
    pub parallel_coins: usize,
    /// Gate polling, ms.
    pub gate_poll_ms: u64,
    /// AWS region override.
    pub aws_region: Option<String>,
    /// AWS endpoint override.
    pub aws_endpoint: Option<String>,
    /// Simulator speed.
    pub sim_speed: f64,
    /// Simulator start.
    pub sim_start: SimStart,
    /// Env var of the webhook secret.
    pub webhook_secret_env: String,
    /// GitHub API base.
    pub github_api: String,
    /// The fleet repository on GitHub (None: no release watch).
    pub github_repo: Option<String>,
    /// Branch bump pull requests target.
    pub github_base: String,
    /// Env var of the GitHub token.
    pub github_token_env: String,
    /// Release watch on.
    pub release_watch: bool,
    /// Release watch period, ms.
    pub release_interval_ms: u64,
    /// Longest rate-limit wait, ms.
    pub max_rate_wait_ms: u64,
    /// Resolve image digests.
    pub resolve_digests: bool,
    /// Env var of the registry user.
    pub registry_username_env: String,
    /// Env var of the registry password.
    pub registry_password_env: String,
    /// Slack Web API base.
    pub slack_api: String,
    /// Slack channel override.
    pub slack_channel: Option<String>,
    /// Env var of the Slack bot token.
    pub slack_token_env: String,
    /// Env var of the Slack signing secret.
    pub slack_signing_secret_env: String,
    /// Identical alerts are not repeated within this, ms.
    pub slack_repeat_window_ms: u64,
}

/// GitHub's API.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// Slack's Web API.
pub const DEFAULT_SLACK_API: &str = "https://slack.com/api";

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9400";

impl RunConfig {
    /// Read `path` (if given), apply `flags`, check every value.
    pub fn load(path: Option<&Path>, flags: &Overrides) -> Result<RunConfig, ConfigError> {
        let file = match path {
            None => ConfigFile::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                parse(&text, &p.display().to_string())?
            }
        };
        RunConfig::resolve(file, flags)
    }

    /// Resolve a parsed file with `flags`.
    pub fn resolve(f: ConfigFile, flags: &Overrides) -> Result<RunConfig, ConfigError> {
        let f = Resolved {
            repo: f.repo.unwrap_or_default(),
            provider: f.provider,
            listen: f.listen,
            state_dir: f.state_dir,
            reconcile: f.reconcile.unwrap_or_default(),
            aws: f.aws.unwrap_or_default(),
            sim: f.sim.unwrap_or_default(),
            webhook: f.webhook.unwrap_or_default(),
            github: f.github.unwrap_or_default(),
            release_watch: f.release_watch.unwrap_or_default(),
            registry: f.registry.unwrap_or_default(),
            slack: f.slack.unwrap_or_default(),
        };
        let state_dir = flags
            .state_dir
            .clone()
            .or(f.state_dir)
            .unwrap_or_else(|| PathBuf::from(".fleet"));
        let provider = match flags.provider.clone().or(f.provider).as_deref() {
            // Never a default: a production config that forgets the key must not run a
            // simulated fleet and report it converged.
            None => None,
            Some("sim") => Some(ProviderChoice::Sim),
            Some("aws") => Some(ProviderChoice::Aws),
            Some(other) => {
                return Err(ConfigError::Value {
                    key: "provider".into(),
                    message: format!("`{other}` is not a provider; use `sim` or `aws`"),
                });
            }
        };
        let listen_s = flags
            .listen
            .clone()
            .or(f.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| ConfigError::Value {
            key: "listen".into(),
            message: format!("`{listen_s}` is not an address:port such as {DEFAULT_LISTEN}"),
        })?;
        let dur =
            |key: &str, v: Option<String>, default: u64, min: u64| -> Result<u64, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) => {
                        let ms = parse_duration(&s).map_err(|m| ConfigError::Value {
                            key: key.into(),
                            message: m,
                        })?;
                        if ms < min {
                            return Err(ConfigError::Value {
                                key: key.into(),
                                message: format!("`{s}` is below the minimum of {min} ms"),
                            });
                        }
                        Ok(ms)
                    }
                }
            };
        let poll_interval_ms = dur(
            "repo.poll_interval",
            flags.poll_interval.clone().or(f.repo.poll_interval),
            30_000,
            100,
        )?;
        let requeue_ms = dur("reconcile.requeue", f.reconcile.requeue, 300_000, 100)?;
        let backoff_min_ms = dur("reconcile.backoff_min", f.reconcile.backoff_min, 1_000, 10)?;
        let backoff_max_ms = dur(
            "reconcile.backoff_max",
            f.reconcile.backoff_max,
            300_000,
            10,
        )?;
        if backoff_max_ms < backoff_min_ms {
            return Err(ConfigError::Value {
                key: "reconcile.backoff_max".into(),
                message: "must not be below reconcile.backoff_min".into(),
            });
        }
        let gate_poll_ms = dur("reconcile.gate_poll", f.reconcile.gate_poll, 5_000, 10)?;
        let parallel_coins = f.reconcile.parallel_coins.unwrap_or(32);
        if parallel_coins == 0 {
            return Err(ConfigError::Value {
                key: "reconcile.parallel_coins".into(),
                message: "must be at least 1".into(),
            });
        }
        let sim_speed = flags.sim_speed.or(f.sim.speed).unwrap_or(1.0);
        if let Err(message) = crate::clock::check_speed(sim_speed) {
            return Err(ConfigError::Value {
                key: "sim.speed".into(),
                message,
            });
        }
        let sim_start = match f.sim.start.as_deref().unwrap_or("in-sync") {
            "in-sync" => SimStart::InSync,
            "empty" => SimStart::Empty,
            other => {
                return Err(ConfigError::Value {
                    key: "sim.start".into(),
                    message: format!("`{other}`: use `in-sync` or `empty`"),
                });
            }
        };
        let env_name = |key: &str,
                        v: Option<String>,
                        default: &str|
         -> Result<String, ConfigError> {
            let v = v.unwrap_or_else(|| default.to_string());
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConfigError::Value {
                    key: key.into(),
                    message: format!(
                        "`{v}` is not an environment variable name (letters, digits, _): the file names the variable, the secret stays in the environment"
                    ),
                });
            }
            Ok(v)
        };
        let repo = flags
            .repo
            .clone()
            .or(f.repo.url)
            .unwrap_or_else(|| ".".into());
        let subdir = f.repo.subdir.unwrap_or_default();
        if subdir.split('/').any(|c| c == "..") {
            return Err(ConfigError::Value {
                key: "repo.subdir".into(),
                message: "must stay inside the repository (no `..`)".into(),
            });
        }
        let url = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
            let v = v.unwrap_or_else(|| default.to_string());
            let ok = v.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some()
            });
            if !ok {
                return Err(ConfigError::Value {
                    key: key.into(),
                    message: format!("`{v}` is not an http(s) URL such as {default}"),
                });
            }
            Ok(v.trim_end_matches('/').to_string())
        };
        let github_repo = flags.github_repo.clone().or(f.github.repo);
        if let Some(r) = &github_repo
            && fleet_repo_schema::values::GithubRepo::parse(r).is_err()
        {
            return Err(ConfigError::Value {
                key: "github.repo".into(),
                message: format!("`{r}` is not owner/name, e.g. acme/fleet"),
            });
        }
        let branch = flags.branch.clone().or(f.repo.branch);
        let github_base = f
            .github
            .base
            .or_else(|| branch.clone())
            .unwrap_or_else(|| "main".into());
        let release_watch = f.release_watch.enabled.unwrap_or(github_repo.is_some());
        if release_watch && github_repo.is_none() {
            return Err(ConfigError::Value {
                key: "release_watch.enabled".into(),
                message: "the release watch needs github.repo (owner/name of the fleet repository on GitHub)".into(),
            });
        }
        let release_interval_ms = dur(
            "release_watch.interval",
            flags.release_interval.clone().or(f.release_watch.interval),
            600_000,
            100,
        )?;
        let max_rate_wait_ms = dur(
            "release_watch.max_rate_wait",
            f.release_watch.max_rate_wait,
            900_000,
            0,
        )?;
        let slack_repeat_window_ms =
            dur("slack.repeat_window", f.slack.repeat_window, 3_600_000, 0)?;
        Ok(RunConfig {
            github_api: url(
                "github.api_url",
                flags.github_api.clone().or(f.github.api_url),
                DEFAULT_GITHUB_API,
            )?,
            github_repo,
            github_base,
            github_token_env: env_name(
                "github.token_env",
                f.github.token_env,
                "FLEET_GITHUB_TOKEN",
            )?,
            release_watch,
            release_interval_ms,
            max_rate_wait_ms,
            resolve_digests: f.registry.resolve_digests.unwrap_or(true),
            registry_username_env: env_name(
                "registry.username_env",
                f.registry.username_env,
                "FLEET_REGISTRY_USERNAME",
            )?,
            registry_password_env: env_name(
                "registry.password_env",
                f.registry.password_env,
                "FLEET_REGISTRY_PASSWORD",
            )?,
            slack_api: url(
                "slack.api_url",
                flags.slack_api.clone().or(f.slack.api_url),
                DEFAULT_SLACK_API,
            )?,
            slack_channel: f.slack.channel.filter(|c| !c.is_empty()),
            slack_token_env: env_name(
                "slack.token_env",
                f.slack.token_env,
                "FLEET_SLACK_BOT_TOKEN",
            )?,
            slack_signing_secret_env: env_name(
                "slack.signing_secret_env",
                f.slack.signing_secret_env,
                "FLEET_SLACK_SIGNING_SECRET",
            )?,
            slack_repeat_window_ms,
            cache_dir: f
                .repo
                .cache_dir
                .unwrap_or_else(|| state_dir.join("repo-cache")),
            repo,
            branch,
            subdir,
            poll_interval_ms,
            watch: f.repo.watch.unwrap_or(true),
            ssh_key: f.repo.ssh_key,
            token_env: env_name("repo.token_env", f.repo.token_env, "FLEET_GIT_TOKEN")?,
            ssh_passphrase_env: env_name(
                "repo.ssh_passphrase_env",
                f.repo.ssh_passphrase_env,
                "FLEET_GIT_SSH_PASSPHRASE",
            )?,
            allowed_signers: match f.repo.verify {
                None => None,
                Some(v) => Some(std::sync::Arc::new(read_allowed_signers(
                    &v.allowed_signers,
                )?)),
            },
            provider,
            listen,
            state_dir,
            requeue_ms,
            backoff_min_ms,
            backoff_max_ms,
            parallel_coins,
            gate_poll_ms,
            aws_region: f.aws.region,
            aws_endpoint: flags.aws_endpoint.clone().or(f.aws.endpoint_url),
            sim_speed,
            sim_start,
            webhook_secret_env: env_name(
                "webhook.secret_env",
                f.webhook.secret_env,
                "FLEET_GITHUB_WEBHOOK_SECRET",
            )?,
        })
    }
}

/// Parse the config file's text.
pub fn parse(text: &str, path: &str) -> Result<ConfigFile, ConfigError> {
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError::Parse {
            path: path.to_string(),
            line,
            column,
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or("")
                .to_string(),
        }
    })
}

/// `500ms`, `30s`, `5m`, `2h`, `1d`, or a combination (`1h30m`).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration such as 500ms, 30s, 5m, 1h30m");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Read `repo.verify.allowed_signers`; a line that does not read is located.
fn read_allowed_signers(
    path: &std::path::Path,
) -> Result<crate::signers::AllowedSigners, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        message: format!("{e} (repo.verify.allowed_signers)"),
    })?;
    crate::signers::AllowedSigners::parse(&text).map_err(|errs| {
        let first = &errs[0];
        let more = match errs.len() {
            1 => String::new(),
            n => format!(" ({} more lines do not read)", n - 1),
        };
        ConfigError::Parse {
            path: path.display().to_string(),
            line: first.line,
            column: 1,
            message: format!(
                "repo.verify.allowed_signers: {}{more}; the format is ssh-keygen's ALLOWED SIGNERS: `principals [namespaces=\"git\"] ssh-ed25519 AAAA…`",
                first.message
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn defaults_make_a_working_daemon_once_the_provider_is_named() {
        let c = RunConfig::resolve(ConfigFile::default(), &Overrides::default()).unwrap();
        assert!(matches!(c.provider(), Err(ConfigError::NoProvider)));
        let sim = Overrides {
            provider: Some("sim".into()),
            ..Overrides::default()
        };
        let c = RunConfig::resolve(ConfigFile::default(), &sim).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(matches!(c.provider(), Ok(ProviderChoice::Sim)));
        assert_eq!(c.poll_interval_ms, 30_000);
        assert_eq!(c.cache_dir, PathBuf::from(".fleet/repo-cache"));
        assert_eq!(c.webhook_secret_env, "FLEET_GITHUB_WEBHOOK_SECRET");
    }

    #[test]
    fn flags_override_the_file() {
        let f = parse(
            "repo:\n  url: /srv/fleet\n  branch: main\n  poll_interval: 10s\nprovider: aws\nlisten: 0.0.0.0:9500\n",
            "c.yaml",
        )
        .unwrap();
        let flags = Overrides {
            branch: Some("staging".into()),
            provider: Some("sim".into()),
            ..Overrides::default()
        };
        let c = RunConfig::resolve(f, &flags).unwrap();
        assert_eq!(c.repo, "/srv/fleet");
        assert_eq!(c.branch.as_deref(), Some("staging"));
        assert!(matches!(c.provider(), Ok(ProviderChoice::Sim)));
        assert_eq!(c.poll_interval_ms, 10_000);
        assert_eq!(c.listen.port(), 9500);
    }

    #[test]
    fn unknown_keys_are_located() {
        let e = parse("repo:\n  url: x\n  brnch: main\n", "c.yaml").unwrap_err();
        match e {
            ConfigError::Parse { line, message, .. } => {
                assert_eq!(line, 3);
                assert!(message.contains("brnch"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secrets_are_not_values_of_the_file() {
        let f = parse(
            "provider: sim\nwebhook:\n  secret_env: \"s3cr3t value\"\n",
            "c.yaml",
        )
        .unwrap();
        let e = RunConfig::resolve(f, &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("environment variable name"), "{e}");
        // No `secret:` key: a secret in the file is an unknown key.
        assert!(parse("webhook:\n  secret: abc\n", "c.yaml").is_err());
    }

    #[test]
    fn the_people_sections() {
        let sim = Overrides {
            provider: Some("sim".into()),
            ..Overrides::default()
        };
        let c = RunConfig::resolve(ConfigFile::default(), &sim).unwrap();
        assert!(!c.release_watch, "off without github.repo");
        assert_eq!(c.github_api, DEFAULT_GITHUB_API);
        assert_eq!(c.slack_api, DEFAULT_SLACK_API);
        assert_eq!(c.release_interval_ms, 600_000);
        assert_eq!(c.slack_repeat_window_ms, 3_600_000);
        assert_eq!(c.github_base, "main");
        let f = parse(
            "repo:\n  branch: prod\ngithub:\n  repo: acme/fleet\n  api_url: https://ghe.example.com/api/v3/\nslack:\n  channel: C0123\n  repeat_window: 10m\n",
            "c.yaml",
        )
        .unwrap();
        let c = RunConfig::resolve(f, &sim).unwrap();
        assert!(c.release_watch, "on with github.repo");
        assert_eq!(
            c.github_base, "prod",
            "pull requests target the followed branch"
        );
        assert_eq!(c.github_api, "https://ghe.example.com/api/v3");
        assert_eq!(c.slack_channel.as_deref(), Some("C0123"));
        assert_eq!(c.slack_repeat_window_ms, 600_000);
        let bad = |y: &str| {
            RunConfig::resolve(parse(y, "c.yaml").unwrap(), &sim)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("github:\n  repo: not a repo\n").contains("github.repo"));
        assert!(bad("release_watch:\n  enabled: true\n").contains("needs github.repo"));
        assert!(bad("github:\n  api_url: ftp://x\n").contains("github.api_url"));
        assert!(bad("slack:\n  token_env: xoxb-123 456\n").contains("environment variable name"));
        assert!(
            parse("slack:\n  token: xoxb-123\n", "c.yaml").is_err(),
            "no secrets in the file"
        );
    }
}
