//! What fleet says in Slack, as Block Kit (slack-morphism's models, so what is sent is what
//! Slack's API documents). Pure and snapshot-tested: a [`Notice`] in, a message out.
//!
//! Text that comes from outside fleet (commit summaries, validation errors, gate reasons,
//! release names) is escaped for Slack's mrkdwn (`&`, `<`, `>`), so it cannot forge a link
//! or a mention.

use fleet_repo_schema::human_ms;
use serde::{Deserialize, Serialize};
use slack_morphism::prelude::*;

/// Button action ids.
pub const APPROVE: &str = "fleet_approve";
/// Button action ids.
pub const REJECT: &str = "fleet_reject";

/// What an approval is for: exactly one (coin, target version, commit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ApprovalKey {
    /// Coin.
    pub coin: String,
    /// Target version (or `retire`).
    pub version: String,
    /// Commit of the fleet repository.
    pub commit: String,
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Go ahead.
    Approved,
    /// Do not.
    Rejected,
}

/// Something worth telling the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Notice {
    /// The release watch opened a bump pull request.
    BumpOpened {
        /// Coin.
        coin: String,
        /// Current version.
        from: String,
        /// Proposed version.
        to: String,
        /// Pull request number.
        number: u64,
        /// Its page.
        url: String,
        /// major / minor / patch.
        class: String,
        /// Whether the rollout will wait for an approval.
        approval_needed: bool,
        /// Pull request it replaces.
        supersedes: Option<u64>,
        /// A draft until the new tag is in the registry (the coin pins a digest).
        waiting_for_image: bool,
    },
    /// A draft bump's image is in the registry: its digest is pinned and the pull request
    /// is ready for review.
    BumpReady {
        /// Coin.
        coin: String,
        /// Proposed version.
        to: String,
        /// Pull request number.
        number: u64,
        /// Its page.
        url: String,
        /// The digest pinned.
        digest: String,
    },
    /// A release tag failed the version rule and was not proposed.
    ReleaseRejected {
        /// Coin.
        coin: String,
        /// Tag.
        tag: String,
        /// Why.
        reason: String,
    },
    /// A rollout needs a person.
    ApprovalNeeded {
        /// What.
        key: ApprovalKey,
        /// Versions running now.
        from: Vec<String>,
        /// Why an approval is needed.
        reasons: Vec<String>,
        /// Zones in rollout order.
        zones: Vec<String>,
        /// Steps.
        steps: usize,
        /// Who may approve.
        approvers: Vec<String>,
    },
    /// Someone decided.
    ApprovalDecided {
        /// What.
        key: ApprovalKey,
        /// The decision.
        verdict: Verdict,
        /// Slack user id.
        by: String,
        /// When (unix ms).
        at_ms: i64,
    },
    /// A rollout started.
    RolloutStarted {
        /// Coin.
        coin: String,
        /// Versions now.
        from: Vec<String>,
        /// Target (None: the coin is being removed).
        to: Option<String>,
        /// Commit.
        commit: String,
        /// Zones in order.
        zones: Vec<String>,
        /// Steps.
        steps: usize,
    },
    /// A zone passed its gate and bake.
    ZonePassed {
        /// Coin.
        coin: String,
        /// Zone.
        zone: String,
        /// How long the zone took.
        took_ms: u64,
    },
    /// A rollout completed.
    RolloutFinished {
        /// Coin.
        coin: String,
        /// How long it took.
        took_ms: u64,
    },
    /// A rollout stopped on a failure (a gate, a step).
    GateFailed {
        /// Coin.
        coin: String,
        /// Zone.
        zone: Option<String>,
        /// Node.
        node: Option<String>,
        /// Why.
        reason: String,
        /// Last height read.
        height: Option<u64>,
        /// Height it had to reach.
        target: Option<u64>,
    },
    /// After a failed gate, the failed wave's upgraded nodes were rolled back to the versions
    /// they ran before (`rollout.on_failure: rollback`).
    RolledBack {
        /// Coin.
        coin: String,
        /// Zone.
        zone: String,
        /// Per node, `node from → to`.
        nodes: Vec<String>,
        /// How it ended.
        outcome: RollbackResult,
    },
    /// The node watch's incident: opened, updated, resolved or reopened. One Slack message
    /// per incident (keyed by `key`), updated in place; its resolution is also said in its
    /// thread, and so is a node left for a person (shown in the channel too).
    Incident {
        /// Stable across restarts of fleet: what the bot remembers the message by.
        key: String,
        /// Its number in this run of fleet.
        id: u64,
        /// Coin.
        coin: String,
        /// The node (`coin/zone/index`) or the coin.
        subject: String,
        /// What is wrong (or was, once resolved), in words.
        condition: String,
        /// What changed.
        change: IncidentChange,
        /// What fleet did about it, in words (None: nothing yet).
        care: Option<String>,
        /// Whether fleet left it for a person.
        left_for_person: bool,
        /// In trouble since (unix ms).
        since_ms: u64,
        /// Now (unix ms).
        at_ms: u64,
    },
    /// The node watch found a coin's data volumes filling.
    DiskGrow {
        /// Coin.
        coin: String,
        /// The fullest node.
        node: String,
        /// Why, with the figures.
        reason: String,
        /// The size in force, GB.
        from_gb: u32,
        /// The size asked for, GB.
        to_gb: u32,
        /// Days until the fullest is full, if measured.
        days_left: Option<f64>,
        /// fleet grew the volumes itself (`disk.auto_grow`); the nodes whose grow failed.
        grown: bool,
        /// Nodes whose volume did not grow, with why.
        failed: Vec<String>,
        /// The pull request, when there is one: number and page.
        pull: Option<(u64, String)>,
        /// What else became of the pull request (declined, could not be opened, no GitHub).
        note: Option<String>,
    },
    /// A commit of the fleet repository is invalid.
    RepoInvalid {
        /// The commit.
        commit: String,
        /// The commit still in force.
        in_force: Option<String>,
        /// `file:line:col: code message` per error.
        errors: Vec<String>,
    },
}

impl Notice {
    /// The rollout thread this notice belongs to, by coin (None: a message of its own).
    pub fn coin(&self) -> Option<&str> {
        match self {
            Notice::RolloutStarted { coin, .. }
            | Notice::ZonePassed { coin, .. }
            | Notice::RolloutFinished { coin, .. }
            | Notice::GateFailed { coin, .. } => Some(coin),
            _ => None,
        }
    }

    /// Alerts whose identical repetition is suppressed for a while.
    pub fn is_alert(&self) -> bool {
        matches!(
            self,
            Notice::GateFailed { .. }
                | Notice::RolledBack { .. }
                | Notice::RepoInvalid { .. }
                | Notice::ReleaseRejected { .. }
                | Notice::DiskGrow { .. }
        )
    }
}

/// How a rollback ended, as Slack hears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum RollbackResult {
    /// Every node rolled back is in sync again.
    InSync,
    /// It did not get there: the nodes are left for a person.
    LeftForPerson {
        /// Why, in words.
        reason: String,
    },
}

/// How an incident changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentChange {
    /// It opened.
    Opened,
    /// What is wrong, or what fleet did, changed.
    Updated,
    /// It cleared.
    Resolved,
    /// It came back soon after clearing.
    Reopened,
}

/// A message: the fallback text (notifications, screen readers) and the blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Fallback text.
    pub text: String,
    /// Blocks.
    pub blocks: Vec<SlackBlock>,
}

impl Message {
    /// slack-morphism's content.
    pub fn content(&self) -> SlackMessageContent {
        SlackMessageContent::new()
            .with_text(self.text.clone())
            .with_blocks(self.blocks.clone())
    }

    /// The same message carrying `label`: `[label] ` before its text and a first context
    /// block saying it.
    pub fn labelled(&self, label: &str) -> Message {
        let mut blocks = vec![context(format!(":test_tube: *{}*", esc(label)))];
        blocks.extend(self.blocks.iter().cloned());
        Message {
            text: format!("[{label}] {}", self.text),
            blocks,
        }
    }

    /// The blocks as the JSON Slack receives (for tests and snapshots).
    pub fn blocks_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.blocks).unwrap_or(serde_json::Value::Null)
    }
}

/// Escape text for mrkdwn.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(commit: &str) -> &str {
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        &commit[..10]
    } else {
        commit
    }
}

fn section(md: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(md)))
        .into()
}

fn context(md: String) -> SlackBlock {
    SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
        SlackBlockMarkDownText::new(md),
    )])
    .into()
}

fn versions(v: &[String]) -> String {
    match v.len() {
        0 => "nothing".into(),
        _ => v.iter().map(|s| esc(s)).collect::<Vec<_>>().join(", "),
    }
}

/// Zones in rollout order, `a → b → c`.
fn zone_path(zones: &[String]) -> String {
    zones.iter().map(|z| esc(z)).collect::<Vec<_>>().join(" → ")
}

fn button(
    action: &str,
    label: &str,
    value: &str,
    style: SlackBlockButtonStyle,
) -> SlackActionBlockElement {
    SlackActionBlockElement::Button(
        SlackBlockButtonElement::new(label.into())
            .with_action_id(action.into())
            .with_value(value.to_string())
            .with_style(style),
    )
}

/// The approval request, with Approve / Reject buttons whose value is the key.
pub fn approval_request(n: &Notice) -> Option<Message> {
    let Notice::ApprovalNeeded {
        key,
        from,
        reasons,
        zones,
        steps,
        approvers,
    } = n
    else {
        return None;
    };
    let value = serde_json::to_string(key).ok()?;
    let who = if approvers.is_empty() {
        "nobody (fleet.yaml lists no approvers)".to_string()
    } else {
        approvers
            .iter()
            .map(|a| format!("<@{}>", esc(a)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "Approval needed: {} {} → {} (commit {})",
        key.coin,
        versions(from),
        key.version,
        short(&key.commit)
    );
    let reject_confirm = SlackBlockConfirmItem::new(
        "Reject this rollout?".into(),
        SlackBlockText::Plain(SlackBlockPlainText::new(format!(
            "{} stays at {} until a new commit of the fleet repository asks again.",
            key.coin,
            versions(from)
        ))),
        "Reject".into(),
        "Cancel".into(),
    )
    .with_style("danger".into());
    let mut reject = button(REJECT, "Reject", &value, SlackBlockButtonStyle::Danger);
    if let SlackActionBlockElement::Button(b) = &mut reject {
        b.confirm = Some(reject_confirm);
    }
    Some(Message {
        text: text.clone(),
        blocks: vec![
            section(format!(
                ":raised_hand: *Approval needed:* *{}* {} → *{}*\n{}",
                esc(&key.coin),
                versions(from),
                esc(&key.version),
                reasons
                    .iter()
                    .map(|r| format!("• {}", esc(r)))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
            section(format!(
                "{steps} step(s), zone by zone: {}. Commit `{}`.",
                zone_path(zones),
                esc(short(&key.commit))
            )),
            SlackActionsBlock::new(vec![
                button(APPROVE, "Approve", &value, SlackBlockButtonStyle::Primary),
                reject,
            ])
            .with_block_id("fleet_approval".into())
            .into(),
            context(format!(
                "Approvers: {who}. An approval is for this commit only; a new commit asks again."
            )),
        ],
    })
}

/// The approval request once decided: the buttons are replaced by the decision.
pub fn approval_decided(request: &Message, n: &Notice) -> Option<Message> {
    let Notice::ApprovalDecided {
        key,
        verdict,
        by,
        at_ms,
    } = n
    else {
        return None;
    };
    let (icon, word) = match verdict {
        Verdict::Approved => (":white_check_mark:", "Approved"),
        Verdict::Rejected => (":no_entry:", "Rejected"),
    };
    let mut blocks: Vec<SlackBlock> = request
        .blocks
        .iter()
        .filter(|b| !matches!(b, SlackBlock::Actions(_)))
        .cloned()
        .collect();
    blocks.push(section(format!(
        "{icon} *{word}* by <@{}> at {}",
        esc(by),
        crate::pr_body::utc(*at_ms)
    )));
    Some(Message {
        text: format!("{word}: {} {} by {by}", key.coin, key.version),
        blocks,
    })
}

/// The message for any other notice.
pub fn render(n: &Notice) -> Message {
    match n {
        Notice::Incident {
            id,
            subject,
            condition,
            change,
            care,
            left_for_person,
            since_ms,
            at_ms,
            ..
        } => {
            let lasted = human_ms(at_ms.saturating_sub(*since_ms));
            let (icon, head) = match change {
                IncidentChange::Resolved => (":white_check_mark:", "Resolved"),
                _ if *left_for_person => (":rotating_light:", "Needs a person"),
                IncidentChange::Reopened => (":warning:", "Back again"),
                _ => (":warning:", "Incident"),
            };
            let text = match change {
                IncidentChange::Resolved => {
                    format!("Resolved #{id}: {subject} after {lasted} (was {condition})")
                }
                _ => format!("Incident #{id}: {subject} {condition}"),
            };
            let mut md = format!(
                "{icon} *{head} #{id}:* *{}* {}",
                esc(subject),
                match change {
                    IncidentChange::Resolved =>
                        format!("is back in sync after {lasted} (it was {})", esc(condition)),
                    _ => format!("is {} (for {lasted})", esc(condition)),
                }
            );
            if let Some(c) = care {
                md.push_str(&format!("\n{}", esc(c)));
            }
            Message {
                text,
                blocks: vec![section(md)],
            }
        }
        Notice::ApprovalNeeded { .. } => approval_request(n).unwrap_or_else(|| Message {
            text: "approval needed".into(),
            blocks: vec![],
        }),
        Notice::ApprovalDecided {
            key, verdict, by, ..
        } => {
            let word = match verdict {
                Verdict::Approved => "approved",
                Verdict::Rejected => "rejected",
            };
            let text = format!(
                "{} {} {word} by <@{}>",
                esc(&key.coin),
                esc(&key.version),
                esc(by)
            );
            Message {
                text: text.clone(),
                blocks: vec![section(text)],
            }
        }
        Notice::BumpOpened {
            coin,
            from,
            to,
            number,
            url,
            class,
            approval_needed,
            supersedes,
            waiting_for_image,
        } => {
            let text = format!("Bump PR #{number}: {coin} {from} → {to}");
            let mut md = format!(
                ":package: New release: *{}* {} → *{}* ({}). <{}|Pull request #{number}>",
                esc(coin),
                esc(from),
                esc(to),
                esc(class),
                esc(url)
            );
            if let Some(s) = supersedes {
                md.push_str(&format!(", replacing #{s}"));
            }
            md.push_str(if *approval_needed {
                ".\nAfter the merge the rollout waits for an approval here."
            } else {
                ".\nThe rollout starts when it is merged."
            });
            if *waiting_for_image {
                md.push_str(&format!(
                    "\nIt is a draft until the image tag `{}` is in the registry; fleet then pins its digest and marks it ready.",
                    esc(to)
                ));
            }
            Message {
                text,
                blocks: vec![section(md)],
            }
        }
        Notice::BumpReady {
            coin,
            to,
            number,
            url,
            digest,
        } => Message {
            text: format!("Bump PR #{number} ready: {coin} {to}"),
            blocks: vec![section(format!(
                ":white_check_mark: The image of *{}* *{}* is in the registry: <{}|pull request #{number}> now pins `{}` and is ready for review.",
                esc(coin),
                esc(to),
                esc(url),
                esc(digest)
            ))],
        },
        Notice::DiskGrow {
            coin,
            node,
            reason,
            from_gb,
            to_gb,
            days_left,
            grown,
            failed,
            pull,
            note,
        } => {
            let text = format!("{coin}: data volumes filling, {from_gb} → {to_gb} GB");
            let mut md = format!(
                ":floppy_disk: *{}*'s data volumes are filling: {} on `{}`",
                esc(coin),
                esc(reason),
                esc(node)
            );
            if let Some(d) = days_left {
                md.push_str(&format!(", full in {d:.1} days"));
            }
            md.push('.');
            let pr = pull
                .as_ref()
                .map(|(n, url)| format!("<{}|Pull request #{n}>", esc(url)));
            match (grown, &pr) {
                (true, Some(pr)) => md.push_str(&format!(
                    "\nfleet grew them to *{to_gb} GB* (disk.auto_grow); {pr} records it."
                )),
                (true, None) => md.push_str(&format!(
                    "\nfleet grew them to *{to_gb} GB* (disk.auto_grow)."
                )),
                (false, Some(pr)) => md.push_str(&format!(
                    "\n{pr} raises data_volume_gb {from_gb} → *{to_gb} GB*; merging grows them online."
                )),
                (false, None) => {}
            }
            let mut blocks = vec![section(md)];
            if !failed.is_empty() {
                blocks.push(section(format!(
                    ":x: Not grown: {}",
                    failed.iter().map(|f| esc(f)).collect::<Vec<_>>().join("; ")
                )));
            }
            if let Some(n) = note {
                blocks.push(context(esc(n)));
            }
            Message { text, blocks }
        }
        Notice::ReleaseRejected { coin, tag, reason } => {
            let text = format!("Release {tag} of {coin} not proposed");
            Message {
                text,
                blocks: vec![section(format!(
                    ":warning: Release `{}` of *{}* was not proposed: {}",
                    esc(tag),
                    esc(coin),
                    esc(reason)
                ))],
            }
        }
        Notice::RolloutStarted {
            coin,
            from,
            to,
            commit,
            zones,
            steps,
        } => {
            let to = to.as_deref().unwrap_or("retired");
            let text = format!("Rollout started: {coin} → {to}");
            Message {
                text,
                blocks: vec![
                    section(format!(
                        ":rocket: *Rollout started:* *{}* {} → *{}*",
                        esc(coin),
                        versions(from),
                        esc(to)
                    )),
                    context(format!(
                        "{steps} step(s), zone by zone: {} · commit `{}`",
                        zone_path(zones),
                        esc(short(commit))
                    )),
                ],
            }
        }
        Notice::ZonePassed {
            coin,
            zone,
            took_ms,
        } => {
            let text = format!("{coin}: {zone} in sync and baked");
            Message {
                text,
                blocks: vec![section(format!(
                    ":large_green_circle: *{}* zone *{}* is in sync and baked ({})",
                    esc(coin),
                    esc(zone),
                    human_ms(*took_ms)
                ))],
            }
        }
        Notice::RolloutFinished { coin, took_ms } => {
            let text = format!("Rollout finished: {coin} in {}", human_ms(*took_ms));
            Message {
                text,
                blocks: vec![section(format!(
                    ":white_check_mark: *Rollout finished:* *{}* in {}",
                    esc(coin),
                    human_ms(*took_ms)
                ))],
            }
        }
        Notice::GateFailed {
            coin,
            zone,
            node,
            reason,
            height,
            target,
        } => {
            let text = format!("Rollout stopped: {coin}: {reason}");
            let heights = match (height, target) {
                (Some(h), Some(t)) => {
                    format!("\nHeight {h} of {t} ({} behind)", t.saturating_sub(*h))
                }
                (Some(h), None) => format!("\nHeight {h}"),
                _ => String::new(),
            };
            let at = match (node, zone) {
                (Some(n), _) => format!(" on `{}`", esc(n)),
                (None, Some(z)) => format!(" in {}", esc(z)),
                _ => String::new(),
            };
            Message {
                text,
                blocks: vec![
                    section(format!(
                        ":red_circle: *Rollout stopped:* *{}*{at}: {}{heights}",
                        esc(coin),
                        esc(reason)
                    )),
                    context(
                        "Later zones are untouched. fleet does not retry this revision on its own: fix the node or push a new commit.".into(),
                    ),
                ],
            }
        }
        Notice::RolledBack {
            coin,
            zone,
            nodes,
            outcome,
        } => {
            let list: Vec<String> = nodes.iter().map(|n| format!("• `{}`", esc(n))).collect();
            let (text, md, after) = match outcome {
                RollbackResult::InSync => (
                    format!("Rolled back: {coin} in {zone}, in sync again"),
                    format!(
                        ":leftwards_arrow_with_hook: *Rolled back:* *{}* in {}, in sync again at the previous version\n{}",
                        esc(coin),
                        esc(zone),
                        list.join("\n")
                    ),
                    "The coin stays held at this revision: fix the release or push a new commit.",
                ),
                RollbackResult::LeftForPerson { reason } => (
                    format!("Rollback failed: {coin} in {zone}, left for a person"),
                    format!(
                        ":red_circle: *Rollback failed:* *{}* in {}: {}\n{}",
                        esc(coin),
                        esc(zone),
                        esc(reason),
                        list.join("\n")
                    ),
                    "These nodes are left for a person; fleet does nothing more to them at this revision.",
                ),
            };
            Message {
                text,
                blocks: vec![section(md), context(after.into())],
            }
        }
        Notice::RepoInvalid {
            commit,
            in_force,
            errors,
        } => {
            let text = format!("Fleet repository commit {} is invalid", short(commit));
            let shown: Vec<String> = errors
                .iter()
                .take(10)
                .map(|e| format!("• `{}`", esc(e)))
                .collect();
            let more = errors.len().saturating_sub(10);
            let mut md = format!(
                ":x: *Commit `{}` of the fleet repository is invalid* and was not applied; {}.\n{}",
                esc(short(commit)),
                match in_force {
                    Some(c) => format!("`{}` stays in force", esc(short(c))),
                    None => "no valid commit is in force yet".into(),
                },
                shown.join("\n")
            );
            if more > 0 {
                md.push_str(&format!("\n… and {more} more (see /status)"));
            }
            Message {
                text,
                blocks: vec![section(md)],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_cannot_forge_links_or_mentions() {
        let m = render(&Notice::GateFailed {
            coin: "x".into(),
            zone: None,
            node: Some("x/a/1".into()),
            reason: "<!channel> <https://evil|click> & more".into(),
            height: Some(5),
            target: Some(9),
        });
        let j = m.blocks_json().to_string();
        assert!(
            !j.contains("<!channel>") && !j.contains("<https://evil"),
            "{j}"
        );
        assert!(j.contains("&lt;!channel&gt;"), "{j}");
        assert!(j.contains("Height 5 of 9 (4 behind)"), "{j}");
    }

    #[test]
    fn a_rollback_says_whether_it_holds_and_escapes_the_failure() {
        let nodes = vec!["ethereum/eu-central-1a/1 1.14.12 → 1.14.11".to_string()];
        let ok = render(&Notice::RolledBack {
            coin: "ethereum".into(),
            zone: "eu-central-1a".into(),
            nodes: nodes.clone(),
            outcome: RollbackResult::InSync,
        });
        assert_eq!(
            ok.text,
            "Rolled back: ethereum in eu-central-1a, in sync again"
        );
        let j = ok.blocks_json().to_string();
        assert!(j.contains("1.14.12 → 1.14.11"), "{j}");
        assert!(j.contains("stays held"), "{j}");
        let failed = render(&Notice::RolledBack {
            coin: "ethereum".into(),
            zone: "eu-central-1a".into(),
            nodes,
            outcome: RollbackResult::LeftForPerson {
                reason: "<!here> stuck".into(),
            },
        });
        assert!(failed.text.contains("left for a person"), "{}", failed.text);
        let j = failed.blocks_json().to_string();
        assert!(
            !j.contains("<!here>") && j.contains("&lt;!here&gt; stuck"),
            "{j}"
        );
        assert!(
            failed.blocks.len() == 2
                && Notice::RolledBack {
                    coin: String::new(),
                    zone: String::new(),
                    nodes: vec![],
                    outcome: RollbackResult::InSync,
                }
                .is_alert()
        );
    }

    #[test]
    fn the_approval_buttons_carry_the_key() {
        let key = ApprovalKey {
            coin: "bitcoin".into(),
            version: "29.0".into(),
            commit: "a".repeat(40),
        };
        let m = approval_request(&Notice::ApprovalNeeded {
            key: key.clone(),
            from: vec!["28.1".into()],
            reasons: vec!["major version change".into()],
            zones: vec!["eu-central-1a".into()],
            steps: 1,
            approvers: vec!["U012ABCDEF".into()],
        })
        .unwrap();
        let j = m.blocks_json();
        let actions = j
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "actions")
            .unwrap();
        assert_eq!(actions["elements"][0]["action_id"], APPROVE);
        assert_eq!(actions["elements"][0]["type"], "button");
        assert_eq!(actions["elements"][1]["action_id"], REJECT);
        assert_eq!(actions["elements"][1]["style"], "danger");
        assert!(actions["elements"][1]["confirm"].is_object());
        let v: ApprovalKey =
            serde_json::from_str(actions["elements"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(v, key);
        let decided = approval_decided(
            &m,
            &Notice::ApprovalDecided {
                key,
                verdict: Verdict::Approved,
                by: "U012ABCDEF".into(),
                at_ms: 0,
            },
        )
        .unwrap();
        let dj = decided.blocks_json().to_string();
        assert!(!dj.contains("\"actions\""), "{dj}");
        assert!(dj.contains("Approved* by <@U012ABCDEF>"), "{dj}");
    }
}
