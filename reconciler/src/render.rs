//! What people read: the plan (Terraform-like, per coin, per zone, what changes and why),
//! the live progress of an apply (a redrawn block of progress bars on a terminal, one log
//! line per meaningful event otherwise) and the closing summary.

use crate::apply::{ApplyReport, CoinOutcome};
use crate::clock::Millis;
use crate::events::{Event, StepOutcome};
use crate::health::{Verdict, WaitReason};
use crate::node::NodeKey;
use crate::plan::{Action, Plan, WaveKind};
use fleet_repo_schema::Desired;
use fleet_repo_schema::human_ms;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// ANSI styling, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Whether to emit escape codes.
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    /// Bold.
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    /// Green.
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    /// Yellow.
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    /// Red.
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    /// Dim.
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    /// Cyan.
    pub fn cyan(&self, s: &str) -> String {
        self.paint("36", s)
    }
}

/// `node3.bitcoin.internal` for a slot, or the key for a node without one.
fn node_label(desired: &Desired, key: &NodeKey) -> String {
    desired
        .coins
        .get(key.coin.as_str())
        .and_then(|c| c.nodes.iter().find(|s| NodeKey::of(s) == *key))
        .map(|s| s.dns_name.clone())
        .unwrap_or_else(|| key.to_string())
}

fn sign(a: &Action, st: Style) -> String {
    match a {
        Action::Launch { .. } => st.green("+"),
        Action::Retire { .. } | Action::DeleteDns { .. } => st.red("-"),
        _ => st.yellow("~"),
    }
}

/// The plan for people. Deterministic (snapshot-tested).
pub fn plan_human(plan: &Plan, desired: &Desired, st: Style) -> String {
    let mut o = String::new();
    if plan.is_empty() {
        let _ = writeln!(
            o,
            "{} the fleet matches the repository: {} coins, {} nodes.",
            st.green("No changes."),
            desired.coins.len(),
            desired.nodes().count()
        );
    }
    for cp in &plan.coins {
        let versions = match (&cp.target, cp.from_versions.is_empty()) {
            (Some(t), false) => format!("{} → {t}", join(&cp.from_versions, ", ")),
            (Some(t), true) => format!("at {t}"),
            (None, _) => "removed from the repository".into(),
        };
        let class = match cp.class.as_str() {
            "none" => String::new(),
            c => format!(" ({c})"),
        };
        let _ = writeln!(o, "{}  {versions}{class}", st.bold(cp.coin.as_str()));
        let coin = desired.coins.get(cp.coin.as_str());
        if let Some(c) = coin {
            let _ = writeln!(
                o,
                "  {}",
                st.dim(&format!(
                    "max_unavailable {} · bake {} · probe {} · estimated ≥ {}",
                    cp.max_unavailable,
                    human_ms(c.rollout.bake.0.as_millis() as u64),
                    probe_name(c),
                    human_ms(cp.estimate_ms)
                ))
            );
        }
        if let Some(a) = &cp.approval {
            for r in &a.reasons {
                let _ = writeln!(o, "  {} {r}", st.yellow("needs approval:"));
            }
        }
        for u in &cp.unjudged {
            let _ = writeln!(
                o,
                "  {} {}: {}",
                st.yellow("not judged:"),
                node_label(desired, &u.node),
                u.reason
            );
        }
        for r in &cp.refusals {
            let who = r
                .node
                .as_ref()
                .map(|k| format!("{}: ", node_label(desired, k)))
                .unwrap_or_default();
            let _ = writeln!(o, "  {} {who}{}", st.red("refused:"), r.reason);
        }
        for w in &cp.waves {
            let zone = w.zone.as_ref().map(|z| z.as_str()).unwrap_or("");
            let head = match w.kind {
                WaveKind::Repair => format!("{zone}  repair: back up first"),
                WaveKind::Rollout if w.parts > 1 => {
                    format!("{zone}  wave {}/{}", w.part, w.parts)
                }
                WaveKind::Rollout => zone.to_string(),
                WaveKind::Retire => format!("{zone}  retire"),
                WaveKind::Cleanup => "DNS clean-up".into(),
                WaveKind::Network => "network: the coin's security group".into(),
            };
            let gated = if w.kind == WaveKind::Repair {
                st.dim("  then gate")
            } else if w.kind == WaveKind::Rollout && !w.disrupted().is_empty() {
                st.dim(if w.part == w.parts {
                    "  then gate and bake"
                } else {
                    "  then gate"
                })
            } else {
                String::new()
            };
            let _ = writeln!(o, "  {} {head}{gated}", st.cyan("▸"));
            for s in &w.steps {
                let who = match (&s.action, &s.node) {
                    (Action::DeleteDns { .. }, _) | (_, None) => String::new(),
                    (_, Some(node)) => format!(
                        "{}{} ",
                        node_label(desired, node),
                        s.instance_id
                            .as_ref()
                            .map(|i| format!(" ({i})"))
                            .unwrap_or_default()
                    ),
                };
                let _ = writeln!(o, "      {} {who}{}", sign(&s.action, st), s.action);
                let _ = writeln!(o, "          {}", st.dim(&format!("because {}", s.reason)));
            }
        }
        let _ = writeln!(o);
    }
    if !plan.flagged.is_empty() {
        let _ = writeln!(o, "{}", st.bold("Left for a person:"));
        for f in &plan.flagged {
            let _ = writeln!(o, "  {} {}: {}", st.yellow("!"), f.what, f.reason);
        }
        let _ = writeln!(o);
    }
    if !plan.is_empty() {
        let approvals = plan.coins.iter().filter(|c| c.approval.is_some()).count();
        let refused = plan.coins.iter().filter(|c| !c.refusals.is_empty()).count();
        let mut tail = String::new();
        if approvals > 0 {
            let _ = write!(tail, ", {approvals} needing approval");
        }
        if refused > 0 {
            let _ = write!(tail, ", {}", st.red(&format!("{refused} refused")));
        }
        let unjudged = plan.unjudged().count();
        if unjudged > 0 {
            let _ = write!(
                tail,
                ", {}",
                st.yellow(&format!(
                    "{unjudged} node{} not judged",
                    if unjudged == 1 { "" } else { "s" }
                ))
            );
        }
        let coins = plan.coins.len();
        let _ = writeln!(
            o,
            "{} {} step{} in {coins} coin{}{tail}.",
            st.bold("Plan:"),
            plan.step_count(),
            if plan.step_count() == 1 { "" } else { "s" },
            if coins == 1 { "" } else { "s" },
        );
    }
    o
}

fn probe_name(c: &fleet_repo_schema::Coin) -> &'static str {
    match c.health.probe {
        fleet_repo_schema::Probe::Bitcoin => "bitcoin",
        fleet_repo_schema::Probe::Ethereum => "ethereum",
        fleet_repo_schema::Probe::Http => "http",
        fleet_repo_schema::Probe::None => "none",
    }
}

/// One coin's live state.
#[derive(Debug, Clone, Default)]
struct CoinLine {
    from: String,
    to: String,
    zones: Vec<String>,
    passed: usize,
    status: String,
    state: LineState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum LineState {
    #[default]
    Running,
    Done,
    Failed,
    Waiting,
}

/// Turns events into output: log lines, or (on a terminal) a block of per-coin progress
/// bars redrawn in place.
#[derive(Debug)]
pub struct Progress {
    st: Style,
    live: bool,
    start_ms: Millis,
    coins: BTreeMap<String, CoinLine>,
    drawn: usize,
    /// Last gate state logged per node (log mode prints changes, not every reading).
    last_logged: BTreeMap<NodeKey, &'static str>,
    /// When the bars were last drawn (real time: redraws are throttled for the terminal).
    last_draw: Option<std::time::Instant>,
}

impl Progress {
    /// `live`: redraw bars (a terminal); otherwise log lines. Times print relative to `start_ms`.
    pub fn new(st: Style, live: bool, start_ms: Millis) -> Progress {
        Progress {
            st,
            live,
            start_ms,
            coins: BTreeMap::new(),
            drawn: 0,
            last_logged: BTreeMap::new(),
            last_draw: None,
        }
    }

    fn stamp(&self, at: Millis) -> String {
        let s = at.saturating_sub(self.start_ms) / 1000;
        self.st.dim(&format!(
            "[+{:02}:{:02}:{:02}]",
            s / 3600,
            (s / 60) % 60,
            s % 60
        ))
    }

    /// Take an event; returns what to print (log lines, or escape codes that redraw).
    pub fn event(&mut self, at: Millis, e: &Event) -> String {
        let mut log = String::new();
        let stamp = self.stamp(at);
        let st = self.st;
        match e {
            Event::RolloutStarted {
                coin,
                from,
                to,
                zones,
                steps,
                ..
            } => {
                let l = self.coins.entry(coin.to_string()).or_default();
                l.from = join(from, ",");
                l.to = to
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "removed".into());
                l.zones = zones.iter().map(|z| z.to_string()).collect();
                l.status = "starting".into();
                log = format!(
                    "{} {} rollout {} → {}: {steps} steps over {}",
                    stamp.clone(),
                    st.bold(coin.as_str()),
                    if from.is_empty() { "?" } else { &l.from },
                    l.to,
                    if zones.is_empty() {
                        "no zone".to_string()
                    } else {
                        join(zones, " → ")
                    }
                );
            }
            Event::ApprovalNeeded {
                coin,
                target,
                reasons,
                ..
            } => {
                let l = self.coins.entry(coin.to_string()).or_default();
                l.state = LineState::Waiting;
                l.status = format!("waits for approval of {target}");
                log = format!(
                    "{} {} {} {}: {}",
                    stamp.clone(),
                    st.bold(coin.as_str()),
                    st.yellow("needs approval"),
                    target,
                    join(reasons, "; ")
                );
            }
            Event::StepStarted { coin, node, action } => {
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.status = format!("{}: {action}", where_(node.as_ref()));
                }
            }
            Event::StepFinished {
                coin,
                node,
                action,
                outcome,
            } => {
                let what = match outcome {
                    StepOutcome::Failed { .. } => st.red(&outcome.to_string()),
                    _ => outcome.to_string(),
                };
                log = format!(
                    "{} {} {}: {action} {what}",
                    stamp.clone(),
                    st.bold(coin.as_str()),
                    where_(node.as_ref())
                );
            }
            Event::Waiting { coin, wait, .. } => {
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.status = format!("waiting: {wait}");
                }
                log = format!(
                    "{} {} waiting: {wait}",
                    stamp.clone(),
                    st.bold(coin.as_str())
                );
            }
            Event::Gate {
                coin,
                zone,
                node,
                verdict,
            } => {
                let text = gate_text(verdict);
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.status = format!("{zone} {}: {text}", node_short(node));
                }
                // Log a node's gate when its kind of state changes, not every reading.
                let kind = match verdict {
                    Verdict::Waiting { reason, .. } => match reason {
                        WaitReason::Unreachable { .. } => "unreachable",
                        WaitReason::InitialBlockDownload => "ibd",
                        WaitReason::BlocksBehindHeaders => "behind-headers",
                        WaitReason::BehindReference { .. } => "behind-reference",
                    },
                    Verdict::InSync { .. } => "in-sync",
                    Verdict::Failed(_) => "failed",
                };
                if self.last_logged.get(node).copied() != Some(kind) {
                    self.last_logged.insert(node.clone(), kind);
                    log = format!(
                        "{} {} {zone} {}: {text}",
                        stamp.clone(),
                        st.bold(coin.as_str()),
                        node_short(node)
                    );
                }
            }
            Event::Baking {
                coin,
                zone,
                elapsed_ms,
                bake_ms,
            } => {
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.status = format!(
                        "{zone}: baking {} of {}",
                        human_ms(*elapsed_ms),
                        human_ms(*bake_ms)
                    );
                }
            }
            Event::ZonePassed {
                coin,
                zone,
                took_ms,
            } => {
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.passed += 1;
                }
                self.last_logged
                    .retain(|k, _| !(&k.coin == coin && &k.zone == zone));
                log = format!(
                    "{} {} {zone}: {} (in sync and baked, {})",
                    stamp.clone(),
                    st.bold(coin.as_str()),
                    st.green("zone passed"),
                    human_ms(*took_ms)
                );
            }
            Event::RolloutFinished { coin, took_ms } => {
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.state = LineState::Done;
                    l.passed = l.zones.len();
                    l.status = format!("done in {}", human_ms(*took_ms));
                }
                log = format!(
                    "{} {} {} in {}",
                    stamp.clone(),
                    st.bold(coin.as_str()),
                    st.green("rollout finished"),
                    human_ms(*took_ms)
                );
            }
            Event::RolloutFailed { coin, failure } => {
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.state = LineState::Failed;
                    l.status = format!("stopped: {failure}");
                }
                log = format!(
                    "{} {} {}{}: {failure}; later zones untouched",
                    stamp.clone(),
                    st.bold(coin.as_str()),
                    st.red("rollout stopped"),
                    failure
                        .zone()
                        .map(|z| format!(" in {z}"))
                        .unwrap_or_default()
                );
            }
            Event::RolledBack { coin, rollback } => {
                let ok = rollback.outcome == crate::events::RollbackOutcome::InSync;
                if let Some(l) = self.coins.get_mut(coin.as_str()) {
                    l.status = format!("{}; {rollback}", l.status);
                }
                log = format!(
                    "{} {} {} in {}: {rollback}",
                    stamp.clone(),
                    st.bold(coin.as_str()),
                    if ok {
                        st.yellow("rolled back")
                    } else {
                        st.red("rollback failed")
                    },
                    rollback.zone
                );
            }
            Event::RepoInvalid { commit, errors, .. } => {
                log = format!(
                    "{} {} {commit}: {} errors; the last good commit stays in force",
                    stamp.clone(),
                    st.red("fleet repository invalid at"),
                    errors.len()
                );
            }
            // The node watch's, which `fleet apply` does not run.
            Event::Incident { .. }
            | Event::Healed { .. }
            | Event::SnapshotTaken { .. }
            | Event::SnapshotDeleted { .. }
            | Event::DiskGrow { .. } => {}
        }
        if self.live {
            let minor = matches!(
                e,
                Event::Gate { .. } | Event::Baking { .. } | Event::StepStarted { .. }
            );
            let recent = self
                .last_draw
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(100));
            if minor && recent {
                return String::new();
            }
            self.last_draw = Some(std::time::Instant::now());
            self.redraw(at)
        } else if log.is_empty() {
            String::new()
        } else {
            log + "\n"
        }
    }

    /// The block of bars, replacing the previous one.
    fn redraw(&mut self, at: Millis) -> String {
        let mut o = String::new();
        if self.drawn > 0 {
            let _ = write!(o, "\x1b[{}A", self.drawn);
        }
        let width = self.coins.keys().map(String::len).max().unwrap_or(4);
        let _ = writeln!(
            o,
            "\x1b[2K{} rolling out {} coin{}",
            self.stamp(at),
            self.coins.len(),
            if self.coins.len() == 1 { "" } else { "s" }
        );
        for (coin, l) in &self.coins {
            let total = l.zones.len().max(1);
            let filled = (l.passed * 20) / total;
            let bar = format!("{}{}", "█".repeat(filled), "░".repeat(20 - filled));
            let bar = match l.state {
                LineState::Done => self.st.green(&bar),
                LineState::Failed => self.st.red(&bar),
                LineState::Waiting => self.st.yellow(&bar),
                LineState::Running => self.st.cyan(&bar),
            };
            let mut status = l.status.clone();
            if status.chars().count() > 70 {
                status = status.chars().take(69).collect::<String>() + "…";
            }
            let _ = writeln!(
                o,
                "\x1b[2K  {coin:<width$}  {:>9} → {:<9} {bar} {}/{} zones  {status}",
                l.from,
                l.to,
                l.passed.min(total),
                l.zones.len()
            );
        }
        self.drawn = self.coins.len() + 1;
        o
    }
}

fn node_short(k: &NodeKey) -> String {
    format!("#{}", k.index)
}

/// `eu-central-1a #2` for a node, `DNS` for a clean-up of a record without one.
fn where_(node: Option<&NodeKey>) -> String {
    match node {
        Some(n) => format!("{} {}", n.zone, node_short(n)),
        None => "DNS".into(),
    }
}

fn join<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

fn gate_text(v: &Verdict) -> String {
    match v {
        Verdict::InSync { height } => format!("in sync at {height}"),
        Verdict::Failed(f) => format!("FAILED: {f}"),
        Verdict::Waiting {
            reason,
            height,
            target,
            blocks_per_sec,
            eta_ms,
        } => {
            let mut s = format!("{reason}");
            if let (Some(h), Some(t)) = (height, target) {
                let _ = write!(s, ", {h}/{t}");
            }
            if let Some(r) = blocks_per_sec
                && *r > 0.0
            {
                let _ = write!(s, ", {r:.0} blk/s");
            }
            if let Some(e) = eta_ms {
                let _ = write!(s, ", ETA {}", human_ms(*e));
            }
            s
        }
    }
}

/// The closing summary of an apply.
pub fn summary(report: &ApplyReport, st: Style) -> String {
    let mut o = String::new();
    let width = report
        .coins
        .iter()
        .map(|c| c.coin.as_str().len())
        .max()
        .unwrap_or(4);
    for c in &report.coins {
        let (mark, what) = match &c.outcome {
            CoinOutcome::Completed => (st.green("✓"), "completed".to_string()),
            CoinOutcome::Failed { failure, rollback } => (
                st.red("✗"),
                match rollback {
                    None => format!("stopped: {failure}"),
                    Some(r) => format!("stopped: {failure}; {r}"),
                },
            ),
            CoinOutcome::AwaitingApproval => (st.yellow("…"), "waits for approval".into()),
            CoinOutcome::Rejected { by } => (st.red("✗"), format!("rejected by {by}")),
            CoinOutcome::Refused { refusals } => (
                st.red("✗"),
                format!(
                    "refused: {}",
                    refusals
                        .iter()
                        .map(|r| r.reason.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
            CoinOutcome::Cancelled => (st.yellow("■"), "cancelled between steps".into()),
            CoinOutcome::NotJudged { nodes } => (
                st.yellow("…"),
                format!(
                    "nothing to do until {} can be judged",
                    nodes
                        .iter()
                        .map(|u| u.node.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        let _ = writeln!(
            o,
            "  {mark} {:<width$}  {what}  ({} steps, {} total, {} waiting on gates and bakes)",
            c.coin.as_str(),
            c.steps,
            human_ms(c.finished_ms - c.started_ms),
            human_ms(c.gate_wait_ms)
        );
    }
    o
}
