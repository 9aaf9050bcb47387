//! `fleet adopt`: the command around [`crate::adopt::run`]: its output, human and JSON.

use crate::adopt::{Matcher, Report, SlotFrom};
use crate::cli::{AdoptArgs, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Format};
use crate::cli_apply::{open_world, runtime, style};
use crate::plan::{Plan, plan};
use crate::render::plan_human;
use std::io::Write;

/// `fleet adopt`.
pub(crate) fn adopt_cmd(
    a: &AdoptArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<u8> {
    let matcher = match Matcher::parse(&a.matcher) {
        Ok(m) => m,
        Err(e) => {
            writeln!(err, "error: --match {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let rt = runtime()?;
    rt.block_on(async {
        let w = match open_world("adopt", false, &a.world, err, tty).await? {
            Ok(w) => w,
            Err(code) => return Ok(code),
        };
        let report = crate::adopt::run(w.provider.as_ref(), &w.desired, &matcher, a.dry_run)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let observed = w.with_daemons(report.observed.clone()).await;
        let asked = observed.nodes.iter().filter(|n| n.daemon.is_some()).count();
        let p = plan(&w.desired, &observed, w.now_ms());
        match a.format {
            Format::Human => {
                let st = style(a.world.color, tty);
                out.write_all(human(&report, &matcher, a.dry_run).as_bytes())?;
                writeln!(
                    out,
                    "\n{}",
                    st.bold(if a.dry_run {
                        "The plan once they are adopted:"
                    } else {
                        "The plan now:"
                    })
                )?;
                out.write_all(plan_human(&p, &w.desired, st).as_bytes())?;
                writeln!(
                    out,
                    "{}",
                    st.dim(&format!(
                        "({} API calls; {})",
                        report.api_calls,
                        if a.world.no_probe {
                            "nodes not asked (--no-probe): versions as their units say".to_string()
                        } else {
                            format!("{asked} daemons said what they run")
                        }
                    ))
                )?;
            }
            Format::Json => {
                #[derive(serde::Serialize)]
                struct Failed<'a> {
                    instance_id: &'a str,
                    error: String,
                }
                #[derive(serde::Serialize)]
                struct J<'a> {
                    dry_run: bool,
                    matcher: &'a Matcher,
                    candidates: usize,
                    adopted: &'a [crate::adopt::Adoptee],
                    left_alone: &'a [crate::adopt::LeftAlone],
                    written: usize,
                    failed: Option<Failed<'a>>,
                    api_calls: u64,
                    plan: &'a Plan,
                }
                serde_json::to_writer_pretty(
                    &mut *out,
                    &J {
                        dry_run: a.dry_run,
                        matcher: &matcher,
                        candidates: report.candidates,
                        adopted: &report.adoption.adopted,
                        left_alone: &report.adoption.left_alone,
                        written: report.written,
                        failed: report.failed.as_ref().map(|(id, e)| Failed {
                            instance_id: id,
                            error: e.to_string(),
                        }),
                        api_calls: report.api_calls,
                        plan: &p,
                    },
                )?;
                writeln!(out)?;
            }
        }
        if let Some((id, e)) = &report.failed {
            writeln!(
                err,
                "error: adopting {id} failed: {e}; nothing after it was written, and `fleet adopt` again goes on from it"
            )?;
            return Ok(EXIT_INVALID);
        }
        Ok(EXIT_OK)
    })
}

/// The mapping and what was left alone, for a terminal.
fn human(r: &Report, m: &Matcher, dry_run: bool) -> String {
    let mut s = String::new();
    let a = &r.adoption;
    s.push_str(&format!(
        "fleet adopt: {} unmanaged instance{} match {}={}; {} {}, {} left alone{}\n",
        r.candidates,
        if r.candidates == 1 { "" } else { "s" },
        m.key,
        m.pattern,
        a.adopted.len(),
        if dry_run {
            "would be adopted"
        } else {
            "adopted"
        },
        a.left_alone.len(),
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    ));
    if !a.adopted.is_empty() {
        s.push_str(if dry_run {
            "\nWould adopt (only fleet's tags are written; nothing is stopped or restarted):\n"
        } else {
            "\nAdopted (only fleet's tags were written; nothing was stopped or restarted):\n"
        });
        // Written in this order, stopping at the first failure.
        for (i, x) in a.adopted.iter().enumerate() {
            let written = dry_run || i < r.written;
            s.push_str(&format!(
                "  {}  {}  {} ({})  runs {}  data {}{}\n",
                x.instance_id,
                x.slot,
                x.dns_name,
                match x.slot_from {
                    SlotFrom::Record => "its record",
                    SlotFrom::FreeIndex => "no record named it: the plan writes this one",
                },
                x.version,
                x.volume_id,
                if written { "" } else { "  (not written)" }
            ));
            for d in &x.differences {
                s.push_str(&format!(
                    "      {d}: the coin file is the truth, the plan reconfigures it\n"
                ));
            }
            if x.from_secret > 0 {
                s.push_str(&format!(
                    "      {} key{} of the container's environment taken to come from the coin's secret\n",
                    x.from_secret,
                    if x.from_secret == 1 { "" } else { "s" }
                ));
            }
        }
    }
    if !a.left_alone.is_empty() {
        s.push_str("\nLeft alone:\n");
        for l in &a.left_alone {
            s.push_str(&format!(
                "  {}  {}: {}\n",
                l.instance_id,
                l.coin.as_deref().unwrap_or("?"),
                l.why
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adopt::inspect::{DiffKind, Difference};
    use crate::adopt::{Adoptee, Adoption, LeftAlone, Why};
    use crate::node::NodeKey;
    use crate::node_config::ConfigPart;

    fn adoptee(id: &str, index: u32) -> Adoptee {
        Adoptee {
            instance_id: id.into(),
            slot: NodeKey::parse("bitcoin", "eu-central-1a", index).unwrap(),
            dns_name: format!("node{index}.bitcoin.internal"),
            slot_from: SlotFrom::Record,
            volume_id: format!("vol-{id}"),
            root_volume_id: None,
            version: fleet_repo_schema::values::Version::parse("0.20.0").unwrap(),
            differences: vec![],
            from_secret: 0,
            config: String::new(),
            config_keys: String::new(),
            coin_tags: String::new(),
        }
    }

    #[test]
    fn the_report_says_what_was_written_what_differs_and_why_a_node_was_left_alone() {
        let mut first = adoptee("i-1", 1);
        first.differences.push(Difference {
            part: ConfigPart::Container,
            setting: "container_config.PORT".into(),
            how: DiffKind::Value,
        });
        first.from_secret = 2;
        let r = Report {
            adoption: Adoption {
                adopted: vec![first, adoptee("i-2", 2)],
                left_alone: vec![LeftAlone {
                    instance_id: "i-3".into(),
                    coin: Some("bitcoin".into()),
                    why: Why::NoDataVolume,
                }],
            },
            candidates: 3,
            written: 1,
            failed: Some((
                "i-2".into(),
                crate::provider::ProviderError::Refused { reason: "x".into() },
            )),
            observed: Default::default(),
            api_calls: 9,
        };
        let m = Matcher::parse(Matcher::DEFAULT).unwrap();
        let text = human(&r, &m, false);
        assert!(
            text.starts_with("fleet adopt: 3 unmanaged instances match Component=nodes/{coin}; 2 adopted, 1 left alone\n"),
            "{text}"
        );
        assert!(text.contains("  i-1  bitcoin/eu-central-1a/1  node1.bitcoin.internal (its record)  runs 0.20.0  data vol-i-1\n"), "{text}");
        assert!(
            text.contains("container_config.PORT differs: the coin file is the truth"),
            "{text}"
        );
        assert!(
            text.contains(
                "2 keys of the container's environment taken to come from the coin's secret"
            ),
            "{text}"
        );
        // The run stopped at i-2: it is listed as not written.
        assert!(text.contains("data vol-i-2  (not written)"), "{text}");
        assert!(
            text.contains("  i-3  bitcoin: it has no data volume besides its root"),
            "{text}"
        );
        let dry = human(&r, &m, true);
        assert!(dry.contains("would be adopted") && dry.contains("(dry run: nothing written)"));
        assert!(!dry.contains("(not written)"), "{dry}");
    }
}
