//! The `fleet` command line.
//!
//! [`run`] takes the arguments and the output streams, and returns the exit code, so the
//! test suite runs exactly what the binary runs, in-process.

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use fleet_repo_schema::schema::{self, Kind};
use fleet_repo_schema::{Code, Color, DirTree, Loaded, Severity, load, render_human};
use serde::Serialize;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit code: success (valid repository, command done).
pub const EXIT_OK: u8 = 0;
/// Exit code: the fleet repository is invalid; for `plan` and `apply`, any error.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: bad usage, or an I/O error (no such directory, unreadable file). `plan` and
/// `apply` use it only for usage found wrong before anything is read or observed (a bad
/// flag, as clap reports it; no `--provider`), never for an error after that:
/// `plan --detailed-exitcode` says "changes" with 2, as Terraform does, so a failure of a
/// plan that ran must not look like a pending change.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `plan --detailed-exitcode` when there are changes (or nodes it could not
/// judge).
pub const EXIT_CHANGES: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "fleet",
    version,
    about = "GitOps for fleets of cryptocurrency nodes",
    long_about = "fleet keeps a fleet of cryptocurrency nodes (bitcoind, geth, hornet, …) on AWS \
in the state a Git repository describes: daemon versions, instance types, nodes per \
availability zone, volume sizes. It rolls changes out one availability zone at a time and \
moves on only when the nodes are back in sync with their chain.\n\n\
The fleet repository holds fleet.yaml and one coins/<coin>.yaml per coin; `fleet schema` \
prints its JSON Schema and `fleet validate` checks it.",
    after_help = "Exit codes: 0 success, 1 invalid fleet repository, 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a fleet repository and report every problem with file, line and column.
    ///
    /// Reads fleet.yaml and coins/*.yaml under PATH, checks every rule of the fleet
    /// format (see `--explain CODE`) and prints each error like a compiler does, with the
    /// source line and a caret. Run it in the fleet repository's CI on every pull request.
    ///
    /// Exit status: 0 valid (warnings allowed unless --deny-warnings), 1 invalid,
    /// 2 usage or I/O error (PATH missing or unreadable).
    Validate(ValidateArgs),
    /// Print the JSON Schema of fleet.yaml or of a coin file, for editors.
    ///
    /// yaml-language-server (VS Code's YAML extension, Neovim, Helix…) completes and
    /// checks a file that starts with a modeline such as
    /// `# yaml-language-server: $schema=../schema/coin.schema.json`.
    /// Write both schemas into the fleet repository with `fleet schema --out schema/`.
    Schema(SchemaArgs),
    /// Show what fleet would change to make the fleet match the repository, and why.
    ///
    /// Observes the fleet (AWS, or the simulator kept in --state-dir) and prints, per coin
    /// and availability zone in rollout order, each step with its reason, the waves
    /// `max_unavailable` allows, which coins need an approval, what fleet refuses to do
    /// (shrinking a volume, a zone without a subnet…) and a rough duration. Changes nothing.
    ///
    /// Exit status: 0 success (with --detailed-exitcode: no changes), 1 error or a refused
    /// change, 2 with --detailed-exitcode: there are changes.
    Plan(PlanArgs),
    /// Carry out the plan: zone by zone, each zone gated on its nodes being back in sync.
    ///
    /// Shows the plan and asks for confirmation (answering `yes` also approves the coins
    /// whose policy needs an approval, recorded in the journal as cli:<user>), then applies
    /// it with live progress. Ctrl-C stops between steps, never in the middle of one; run
    /// apply again to continue.
    ///
    /// Exit status: 0 every coin completed, 1 a coin failed, was refused or cancelled.
    Apply(ApplyArgs),
    /// Take over nodes that exist (made by the operators' Terraform module or by hand)
    /// without touching them: fleet only writes its tags.
    ///
    /// Finds the instances fleet does not manage whose tag names a coin of the repository
    /// (--match, by default the module's `Component=nodes/{coin}`), gives each a slot (its
    /// zone; the index of its `node<N>.<coin>` record, else the lowest free one), asks it
    /// over SSM what it runs (its active `node@<version>` unit, and hashes of its settings,
    /// never their values) and records that in fleet's tags. It never stops, restarts or
    /// modifies anything. Prints the mapping, what it left alone and why, and the plan
    /// that follows. Adopting again changes nothing.
    ///
    /// Exit status: 0 success (instances may have been left alone), 1 error or a node whose
    /// tags could not be written, 2 usage.
    Adopt(AdoptArgs),
    /// Watch fleet reconcile the example fleet in a simulator, in accelerated time.
    ///
    /// The example fleet repository (6 coins, 18 nodes, 3 zones) is compiled in. Its nodes
    /// start at older versions in a simulated AWS; fleet plans, then upgrades them zone by
    /// zone, moving to the next zone only when the last is in sync with its chain and has
    /// baked. No AWS account, no network.
    Demo(DemoArgs),
    /// Run the reconciler: watch the fleet repository and keep the fleet converged.
    ///
    /// Fetches the repository (a local path, file://, https:// with FLEET_GIT_TOKEN, or
    /// ssh:// with a key) every poll interval, at once on a GitHub push webhook
    /// (POST /hooks/github) and on a file-system change when it is on this machine. Each
    /// valid revision is reconciled zone by zone like `fleet apply`; an invalid one is
    /// reported (/status, /metrics, logs) and not applied: the last good revision stays in
    /// force. Serves /healthz, /readyz, /metrics and /status. SIGTERM or SIGINT stop it
    /// between steps.
    ///
    /// Settings come from --config (every key: examples/reconciler.yaml), flags override
    /// them; secrets come only from the environment. With no config at all:
    /// `fleet run --repo examples/fleet` runs against the simulator on 127.0.0.1:9400.
    ///
    /// Exit status: 0 stopped by a signal, 2 bad configuration or cannot start.
    Run(RunArgs),
    /// Propose new upstream releases as bump pull requests on the fleet repository.
    ///
    /// For each coin with `upstream.github`: reads its releases (all pages, conditional
    /// requests), keeps tags matching `tag_pattern` whose version passes the version rule,
    /// skips drafts, prereleases (unless allowed) and releases younger than
    /// `min_release_age`, and opens one pull request per coin bump
    /// (branch fleet/bump-<coin>-<version>) that changes only `version:` (and
    /// `image.digest` when the registry resolves it). Never a second pull request for the
    /// same bump; an older open bump of the coin is closed in favour of the newer one.
    ///
    /// Settings come from --config (github, release_watch, registry, slack sections of
    /// examples/reconciler.yaml); the token from FLEET_GITHUB_TOKEN. `fleet run` runs the
    /// same watch every release_watch.interval when github.repo is set.
    ///
    /// Exit status: 0 done, 1 a coin could not be checked or proposed (or the repository
    /// is invalid), 2 bad configuration.
    ReleaseWatch(ReleaseWatchArgs),
    /// Print a shell completion script.
    ///
    /// bash: `fleet completions bash > /etc/bash_completion.d/fleet`;
    /// zsh: `fleet completions zsh > "${fpath[1]}/_fleet"`;
    /// fish: `fleet completions fish > ~/.config/fish/completions/fleet.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Compiler-style messages with source lines.
    Human,
    /// One JSON document, for tools.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    /// Color when printing to a terminal and NO_COLOR is unset.
    Auto,
    /// Always color.
    Always,
    /// Never color.
    Never,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Root of the fleet repository (the directory holding fleet.yaml).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Treat warnings as errors (exit 1 when there are any).
    #[arg(long)]
    deny_warnings: bool,
    /// When to use colors in human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Explain an error code (e.g. E303) and exit; `--explain all` lists every code.
    #[arg(long, value_name = "CODE")]
    explain: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderKind {
    /// The built-in simulator, kept in --state-dir (no AWS account needed).
    Sim,
    /// AWS: EC2, EBS, Route53 and SSM through the standard credential chain.
    Aws,
}

#[derive(Debug, clap::Args)]
pub(crate) struct WorldArgs {
    /// Root of the fleet repository (the directory holding fleet.yaml).
    #[arg(long, default_value = ".")]
    pub(crate) repo: PathBuf,
    /// Where the fleet is observed and changed: `aws` (your AWS account) or `sim` (a
    /// simulated fleet kept in --state-dir). Required: fleet never picks one for you.
    #[arg(long, value_enum)]
    pub(crate) provider: Option<ProviderKind>,
    /// fleet's own state: the journal (approvals, bakes, history) and, with --provider sim,
    /// the simulated fleet.
    #[arg(long, value_name = "DIR", default_value = ".fleet")]
    pub(crate) state_dir: PathBuf,
    /// With --provider aws: send every AWS call to this endpoint (an emulator).
    #[arg(long, value_name = "URL")]
    pub(crate) aws_endpoint: Option<String>,
    /// With --provider sim: run the simulated clock this many times faster than real time.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub(crate) sim_speed: f64,
    /// Do not ask the nodes before planning (where this machine cannot reach their RPC
    /// ports): each node's version is then what fleet's tag records, and a version changed
    /// by hand goes unseen.
    #[arg(long)]
    pub(crate) no_probe: bool,
    /// When to use colors.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub(crate) color: ColorChoice,
}

impl WorldArgs {
    /// The provider named, or the message saying both choices (exit [`EXIT_USAGE`]).
    pub(crate) fn provider(&self, command: &str) -> Result<ProviderKind, String> {
        self.provider.ok_or_else(|| {
            format!(
                "error: fleet {command} needs to be told where the fleet is; it never picks for you:\n  \
                 fleet {command} --provider aws   the fleet in your AWS account (region from fleet.yaml)\n  \
                 fleet {command} --provider sim   a simulated fleet, kept in --state-dir ({})",
                self.state_dir.display()
            )
        })
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub(crate) world: WorldArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub(crate) format: Format,
    /// Exit 2 when there are changes, 0 when there are none (1 stays error).
    #[arg(long)]
    pub(crate) detailed_exitcode: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    pub(crate) world: WorldArgs,
    /// Do not ask: apply, and approve the coins that need it, as the plan shows.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Coins rolled out at once.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub(crate) parallel: usize,
    /// Seconds (of the provider's clock) between health readings.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub(crate) poll: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AdoptArgs {
    #[command(flatten)]
    pub(crate) world: WorldArgs,
    /// Which instances are a coin's nodes: a tag and its value, `{coin}` standing for the
    /// coin's name, `*` and `?` as EC2's wildcards (e.g. `Name=node*.{coin}.internal`).
    #[arg(long = "match", value_name = "TAG=PATTERN", default_value = crate::adopt::Matcher::DEFAULT)]
    pub(crate) matcher: String,
    /// Show what would be adopted and the plan that would follow; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub(crate) format: Format,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How many times faster than real time the simulated fleet runs.
    #[arg(long, value_name = "FACTOR", default_value_t = 200.0)]
    pub(crate) speed: f64,
    /// When to use colors.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub(crate) color: ColorChoice,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Where the fleet is observed and changed. Overrides `provider`.
    #[arg(long, value_enum)]
    pub(crate) provider: Option<ProviderKind>,
    /// HTTP listen address (default 127.0.0.1:9400). Overrides `listen`.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// fleet's state: journal, cache clone, lock, and the simulated fleet (default .fleet).
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// How often to fetch the repository (default 30s). Overrides repo.poll_interval.
    #[arg(long, value_name = "DURATION")]
    pub(crate) poll_interval: Option<String>,
    /// With --provider sim: simulated seconds per real second. Overrides sim.speed.
    #[arg(long, value_name = "FACTOR")]
    pub(crate) sim_speed: Option<f64>,
    /// With --provider aws: send every AWS call to this endpoint (an emulator).
    #[arg(long, value_name = "URL")]
    pub(crate) aws_endpoint: Option<String>,
    /// Log format (default: human on a terminal, JSON otherwise). Level: RUST_LOG.
    #[arg(long, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    #[command(flatten)]
    pub(crate) people: PeopleArgs,
    /// Time between release watch cycles (default 10m). Overrides release_watch.interval.
    #[arg(long, value_name = "DURATION")]
    pub(crate) release_interval: Option<String>,
}

/// The configuration file and the fleet repository, shared by `run` and `release-watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct SourceArgs {
    /// The configuration file (YAML; every key is optional and documented in
    /// examples/reconciler.yaml).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The fleet repository: a local path (a git repository, or a plain directory read as
    /// it is), file://, https:// or ssh:// URL. Overrides repo.url.
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) repo: Option<String>,
    /// Branch to follow (default: the remote's default branch; also the base of bump pull
    /// requests unless github.base is set). Overrides repo.branch.
    #[arg(long)]
    pub(crate) branch: Option<String>,
}

/// GitHub and Slack endpoints, shared by `run` and `release-watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeopleArgs {
    /// GitHub API base (GitHub Enterprise: https://HOST/api/v3). Overrides github.api_url.
    #[arg(long, value_name = "URL")]
    pub(crate) github_api: Option<String>,
    /// The fleet repository on GitHub (owner/name), where bump pull requests are opened;
    /// turns the release watch on in `fleet run`. Overrides github.repo.
    #[arg(long, value_name = "OWNER/NAME")]
    pub(crate) github_repo: Option<String>,
    /// Slack Web API base. Overrides slack.api_url.
    #[arg(long, value_name = "URL")]
    pub(crate) slack_api: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReleaseWatchArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) people: PeopleArgs,
    /// fleet's state directory (a cache clone of the repository is kept there).
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Run one cycle and exit (for cron). Without it, a cycle every release_watch.interval.
    #[arg(long)]
    pub(crate) once: bool,
    /// Change nothing: print the pull requests that would be opened (title, branch, the
    /// changed lines, the body).
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub(crate) format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemaKind {
    /// fleet.yaml.
    Fleet,
    /// coins/<coin>.yaml.
    Coin,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["kind", "out"]))]
struct SchemaArgs {
    /// Which file kind's schema to print.
    #[arg(value_enum)]
    kind: Option<SchemaKind>,
    /// Write fleet.schema.json and coin.schema.json into this directory instead.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Run the `fleet` command with `args` (program name first). `color` says whether
/// `out` is a terminal that takes colors. Returns the process exit code.
pub fn run(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    color: bool,
) -> u8 {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // With --detailed-exitcode, 2 means "changes": a usage error must not say so.
    let detailed = args.iter().any(|a| a == "--detailed-exitcode");
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.exit_code() {
                0 => 0,
                _ if detailed => i32::from(EXIT_INVALID),
                c => c,
            };
            let text = if color {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            // --help and --version are successes and go to stdout.
            let _ = if code == 0 {
                write!(out, "{text}")
            } else {
                write!(err, "{text}")
            };
            return u8::try_from(code).unwrap_or(EXIT_USAGE);
        }
    };
    // plan and apply: every error is 1, whatever went wrong (see EXIT_USAGE).
    let error_code = match &cli.command {
        Command::Plan(_) | Command::Apply(_) | Command::Adopt(_) => EXIT_INVALID,
        _ => EXIT_USAGE,
    };
    let result = match cli.command {
        Command::Validate(a) => validate(&a, out, color),
        Command::Schema(a) => write_schema(&a, out),
        Command::Plan(a) => crate::cli_apply::plan_cmd(&a, out, err, color),
        Command::Apply(a) => crate::cli_apply::apply_cmd(&a, out, err, color),
        Command::Demo(a) => crate::cli_apply::demo_cmd(&a, out, color),
        Command::Adopt(a) => crate::cli_adopt::adopt_cmd(&a, out, err, color),
        Command::Run(a) => Ok(crate::cli_run::run_cmd(&a, err)),
        Command::ReleaseWatch(a) => crate::cli_run::release_watch(&a, out, err),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "fleet", out);
            Ok(EXIT_OK)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e:#}");
            error_code
        }
    }
}

fn write_schema(a: &SchemaArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        for kind in Kind::ALL {
            let path = dir.join(kind.file_name());
            std::fs::write(&path, schema::schema_text(kind))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            writeln!(out, "wrote {}", path.display())?;
        }
        return Ok(EXIT_OK);
    }
    let kind = match a.kind {
        Some(SchemaKind::Fleet) => Kind::Fleet,
        Some(SchemaKind::Coin) | None => Kind::Coin,
    };
    out.write_all(schema::schema_text(kind).as_bytes())?;
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    path: String,
    valid: bool,
    errors: usize,
    warnings: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    coins: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<usize>,
    diagnostics: &'a [fleet_repo_schema::Diagnostic],
}

fn explain(code: &str, out: &mut dyn Write) -> anyhow::Result<u8> {
    if code.eq_ignore_ascii_case("all") {
        for c in Code::ALL {
            writeln!(out, "{c}  {}", c.title())?;
        }
        return Ok(EXIT_OK);
    }
    let Some(c) = Code::parse(code) else {
        anyhow::bail!("unknown code `{code}`: `fleet validate --explain all` lists them");
    };
    writeln!(out, "{c}: {}\n\n{}", c.title(), c.explanation())?;
    Ok(EXIT_OK)
}

fn validate(a: &ValidateArgs, out: &mut dyn Write, tty: bool) -> anyhow::Result<u8> {
    if let Some(code) = &a.explain {
        return explain(code, out);
    }
    let tree = open_repo(&a.path)?;
    let loaded = load(&tree);
    let invalid = loaded.errors() > 0 || (a.deny_warnings && loaded.warnings() > 0);
    let io_failure = loaded.diagnostics.iter().any(|d| d.code == Code::Io);
    match a.format {
        Format::Json => {
            let report = JsonReport {
                path: a.path.display().to_string(),
                valid: !invalid,
                errors: loaded.errors(),
                warnings: loaded.warnings(),
                coins: loaded.desired.as_ref().map(|d| d.coins.len()),
                nodes: loaded.desired.as_ref().map(|d| d.nodes().count()),
                diagnostics: &loaded.diagnostics,
            };
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
        Format::Human => {
            let color = match a.color {
                ColorChoice::Always => Color::Always,
                ColorChoice::Never => Color::Never,
                ColorChoice::Auto if tty => Color::Always,
                ColorChoice::Auto => Color::Never,
            };
            human_report(&a.path, &loaded, invalid, color, out)?;
        }
    }
    Ok(if io_failure {
        EXIT_USAGE
    } else if invalid {
        EXIT_INVALID
    } else {
        EXIT_OK
    })
}

pub(crate) fn open_repo(path: &Path) -> anyhow::Result<DirTree> {
    DirTree::new(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open fleet repository {}: {e}\nhint: give the directory that holds fleet.yaml",
            path.display()
        )
    })
}

fn human_report(
    path: &Path,
    loaded: &Loaded,
    invalid: bool,
    color: Color,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    for d in &loaded.diagnostics {
        let src = loaded.sources.get(&d.file).map(String::as_str);
        writeln!(out, "{}", render_human(d, src, color))?;
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let warnings = loaded.warnings();
    let files = {
        let mut f: Vec<&str> = loaded.diagnostics.iter().map(|d| d.file.as_str()).collect();
        f.dedup();
        f.len()
    };
    if invalid {
        let what = if loaded.errors() > 0 {
            plural(loaded.errors(), "error")
        } else {
            format!("{} (denied)", plural(warnings, "warning"))
        };
        writeln!(
            out,
            "{}: {} is invalid: {what}{} in {}",
            paint("error", color, Severity::Error),
            path.display(),
            if loaded.errors() > 0 && warnings > 0 {
                format!(", {}", plural(warnings, "warning"))
            } else {
                String::new()
            },
            plural(files, "file"),
        )?;
    } else if let Some(d) = &loaded.desired {
        writeln!(
            out,
            "ok: {} is valid: {}, {}{}",
            path.display(),
            plural(d.coins.len(), "coin"),
            plural(d.nodes().count(), "node"),
            if warnings > 0 {
                format!(" ({})", plural(warnings, "warning"))
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

fn paint(s: &str, color: Color, sev: Severity) -> String {
    match (color, sev) {
        (Color::Never, _) => s.to_string(),
        (Color::Always, Severity::Error) => format!("\x1b[1;31m{s}\x1b[0m"),
        (Color::Always, Severity::Warning) => format!("\x1b[1;33m{s}\x1b[0m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_capture(args: &[&str]) -> (u8, String, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(
            std::iter::once("fleet").chain(args.iter().copied()),
            &mut out,
            &mut err,
            false,
        );
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn help_explains_each_subcommand() {
        let (code, out, _) = run_capture(&["--help"]);
        assert_eq!(code, 0);
        for sub in ["validate", "schema", "completions"] {
            assert!(out.contains(sub), "{out}");
        }
        let (code, out, _) = run_capture(&["validate", "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("Exit status: 0 valid"), "{out}");
    }

    #[test]
    fn missing_directory_is_a_usage_error() {
        let (code, _, err) = run_capture(&["validate", "/nonexistent/fleet"]);
        assert_eq!(code, EXIT_USAGE);
        assert!(err.contains("cannot open fleet repository"), "{err}");
        let (code, _, _) = run_capture(&["validate", "--format", "xml"]);
        assert_eq!(code, EXIT_USAGE);
    }

    #[test]
    fn explain_prints_the_long_text() {
        let (code, out, _) = run_capture(&["validate", "--explain", "e303"]);
        assert_eq!(code, 0);
        assert!(out.starts_with("E303: invalid version"), "{out}");
        let (code, _, _) = run_capture(&["validate", "--explain", "E999"]);
        assert_eq!(code, EXIT_USAGE);
    }

    #[test]
    fn completions_for_bash() {
        let (code, out, _) = run_capture(&["completions", "bash"]);
        assert_eq!(code, 0);
        assert!(out.contains("_fleet()"), "{}", &out[..200.min(out.len())]);
        assert!(out.contains("validate"));
    }

    #[test]
    fn schema_needs_a_kind_or_out() {
        let (code, _, _) = run_capture(&["schema"]);
        assert_eq!(code, EXIT_USAGE);
        let (code, out, _) = run_capture(&["schema", "coin"]);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["title"], "coins/<coin>.yaml");
    }
}
