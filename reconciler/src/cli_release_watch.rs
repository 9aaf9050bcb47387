//! `fleet release-watch`: one cycle (`--once`) or a cycle every interval, outside `fleet run`,
//! reading the repository into its own cache clone.

use crate::config::RunConfig;
use crate::people::{SlackParts, env_secret, render_report, start_slack, wall_ms, watch_runtime};
use bots::registry::DigestResolver;
use bots::watch;
use std::sync::Arc;
use std::time::Duration;

/// `fleet release-watch`.
pub fn release_watch_cmd(
    cfg: RunConfig,
    once: bool,
    dry_run: bool,
    json: bool,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(async {
        let Some(watch) = watch_runtime(&cfg, dry_run)? else {
            anyhow::bail!(
                "no fleet repository on GitHub to open pull requests on: set github.repo in the config or --github-repo owner/name"
            );
        };
        let auth = crate::source::GitAuth {
            token: env_secret(&cfg.token_env),
            ssh_key: cfg.ssh_key.clone(),
            ssh_passphrase: env_secret(&cfg.ssh_passphrase_env),
        };
        // Its own cache: a `fleet run` on the same state directory fetches into repo-cache.
        let source = crate::source::Source::for_repo(
            &cfg.repo,
            cfg.branch.clone(),
            &cfg.subdir,
            cfg.state_dir.join("release-watch-cache"),
            auth,
        )?;
        // Proposals start from a revision fleet would apply, nothing else.
        if let Some(signers) = &cfg.allowed_signers {
            source.require_signatures(Arc::clone(signers))?;
        }
        let mut slack: Option<SlackParts> = None;
        let mut code = crate::cli::EXIT_OK;
        loop {
            let src = source.clone();
            let (head, loaded) = tokio::task::spawn_blocking(move || src.poll(None)).await??;
            let Some(loaded) = loaded else {
                anyhow::bail!("the fleet repository could not be read");
            };
            let Some(desired) = loaded.desired else {
                writeln!(err, "error: revision {} of the fleet repository is invalid:", head.rev)?;
                for d in loaded.diagnostics.iter().filter(|d| d.severity == fleet_repo_schema::Severity::Error) {
                    writeln!(err, "  {}:{}:{}: {} {}", d.file, d.span.start.line, d.span.start.col, d.code.as_str(), d.message)?;
                }
                return Ok(crate::cli::EXIT_INVALID);
            };
            if slack.is_none() && !dry_run {
                let ch = cfg
                    .slack_channel
                    .clone()
                    .or_else(|| desired.fleet.slack_channel.as_ref().map(|c| c.to_string()));
                slack = start_slack(&cfg, Arc::new(move || ch.clone()), None)?;
            }
            let report = watch::cycle(
                &watch.gh,
                &desired,
                &watch.settings,
                watch.resolver.as_ref().map(|r| r as &dyn DigestResolver),
                wall_ms(),
            )
            .await;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                render_report(&report, out)?;
            }
            if let Some(s) = &slack {
                for n in report.notices(&desired) {
                    s.handle.notify(n);
                }
            }
            if report.has_errors() {
                code = crate::cli::EXIT_INVALID;
            }
            if once {
                break;
            }
            tokio::time::sleep(watch.interval).await;
        }
        if let Some(s) = slack {
            // Let the queue drain (bounded): a cron job must not exit before Slack heard.
            let SlackParts { handle, task, .. } = s;
            drop(handle);
            if tokio::time::timeout(Duration::from_secs(30), task).await.is_err() {
                writeln!(err, "warning: Slack did not take every message within 30 s")?;
            }
        }
        Ok(code)
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    r
}
