//! A plan step as provider calls: each [`Action`] becomes the call (or calls) that carry it
//! out, its outcome is journaled and told to the notifier as a [`StepOutcome`], and the coin
//! is marked changed in the shared view.

use super::{CoinReport, CoinRun, Executor, StepResult, Stop};
use crate::events::{Event, Failure, StepOutcome};
use crate::network::CoinNetwork;
use crate::node::NodeKey;
use crate::node_config::NodeFiles;
use crate::plan::{Action, Step, Wave};
use crate::provider::{DnsTarget, ImagePin, LaunchSpec, NodeRef, Outcome, ProviderError};
use crate::store::{Record, StepRecord};
use std::collections::{BTreeMap, BTreeSet};

/// Which of a wave's steps [`Executor::run_steps`] runs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Side<'a> {
    /// The steps that do not wait for the wave's gate.
    BeforeGate,
    /// The steps that wait for it, of the nodes that passed it.
    AfterGate {
        /// Those nodes.
        passed: &'a BTreeSet<NodeKey>,
    },
}

/// What [`Executor::run_steps`] did, when it went through.
#[derive(Debug, Default)]
pub(super) struct Ran {
    /// The instance id of each node whose steps all went through.
    pub(super) ids: BTreeMap<NodeKey, String>,
    /// The nodes a step failed for (their later steps skipped).
    pub(super) broken: BTreeSet<NodeKey>,
    /// The first of those failures: the coin's.
    pub(super) failure: Option<Failure>,
}

impl Ran {
    /// As a step result: a failure stops the coin.
    pub(super) fn all_done(self) -> StepResult<()> {
        super::stopped_by(self.failure)
    }
}

impl Executor {
    /// Run a wave's steps of one side of its gate, node by node: those that do not wait for
    /// it ([`crate::plan::Action::after_gate`]), or those that do of the nodes that passed
    /// it; returns the instance id of each node. A step that fails stops the coin at once,
    /// except before the gate of a wave where another node's step waits for the gate (a
    /// hand-over): then that node's other steps are skipped and the others go on, so that
    /// one failed replacement does not keep its neighbours' from their gate and hand-over.
    pub(super) async fn run_steps(
        &self,
        run: &CoinRun<'_>,
        wave: &Wave,
        side: Side<'_>,
        report: &mut CoinReport,
    ) -> StepResult<Ran> {
        let coin = &run.cp.coin;
        let mut ran = Ran::default();
        let ids = &mut ran.ids;
        let awaited: BTreeSet<&NodeKey> = wave
            .steps
            .iter()
            .filter(|s| s.action.after_gate())
            .filter_map(|s| s.node.as_ref())
            .collect();
        for step in wave.steps.iter().filter(|s| match side {
            Side::BeforeGate => !s.action.after_gate(),
            Side::AfterGate { passed } => {
                s.action.after_gate() && s.node.as_ref().is_some_and(|n| passed.contains(n))
            }
        }) {
            if run.cancel.is_cancelled() {
                return Err(ran.failure.map(Stop::from).unwrap_or(Stop::Cancelled));
            }
            if step.node.as_ref().is_some_and(|n| ran.broken.contains(n)) {
                continue;
            }
            if let (Some(node), Some(id)) = (&step.node, &step.instance_id) {
                ids.entry(node.clone()).or_insert_with(|| id.clone());
            }
            self.emit(Event::StepStarted {
                coin: coin.clone(),
                node: step.node.clone(),
                action: step.action.clone(),
            });
            let instance = step.node.as_ref().and_then(|n| ids.get(n).cloned());
            let r = self.run_step(run, step, instance).await;
            run.view.changed(coin);
            report.steps += 1;
            let (outcome, launched) = match r {
                Ok((id, Outcome::Done)) => (StepOutcome::Done, id),
                Ok((id, Outcome::AlreadyDone)) => (StepOutcome::AlreadyDone, id),
                Err(error) => (StepOutcome::Failed { error }, None),
            };
            let (recorded, detail) = match &outcome {
                StepOutcome::Done => (StepRecord::Done, step.action.to_string()),
                StepOutcome::AlreadyDone => (StepRecord::AlreadyDone, step.action.to_string()),
                StepOutcome::Failed { error } => (StepRecord::Failed, error.to_string()),
            };
            let journaled = self.journal.append(Record::Step {
                coin: coin.to_string(),
                node: step
                    .node
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                action: step.action.name().into(),
                outcome: recorded,
                detail,
                at_ms: self.now(),
            });
            self.emit(Event::StepFinished {
                coin: coin.clone(),
                node: step.node.clone(),
                action: step.action.name(),
                outcome: outcome.clone(),
            });
            if let (Some(node), Some(id)) = (&step.node, launched) {
                ids.insert(node.clone(), id);
            }
            if let StepOutcome::Failed { error } = outcome {
                let failure = Failure::Step {
                    zone: wave.zone.clone(),
                    node: step.node.clone(),
                    action: step.action.name().into(),
                    error,
                };
                let others_wait = matches!(side, Side::BeforeGate)
                    && awaited.iter().any(|k| Some(*k) != step.node.as_ref());
                match &step.node {
                    Some(node) if others_wait => {
                        ran.broken.insert(node.clone());
                        ids.remove(node);
                        ran.failure.get_or_insert(failure);
                    }
                    _ => return Err(ran.failure.map(Stop::from).unwrap_or(failure.into())),
                }
            }
            // A step done but not recorded: fleet stops the coin rather than go on without
            // a record (the next pass observes what the step did; nothing depends on the
            // lost line but the history).
            if let Err(e) = journaled {
                return Err(Stop::from(Failure::Journal {
                    error: e.to_string(),
                }));
            }
        }
        Ok(ran)
    }

    /// One step; returns the node's instance id when the step made one (a launch).
    async fn run_step(
        &self,
        run: &CoinRun<'_>,
        step: &Step,
        instance_id: Option<String>,
    ) -> Result<(Option<String>, Outcome), ProviderError> {
        let p = &self.provider;
        let desired = run.desired;
        let node = || -> Result<NodeRef, ProviderError> {
            let key = step
                .node
                .clone()
                .ok_or_else(|| ProviderError::Setup(format!("{} without a node", step.action)))?;
            Ok(NodeRef {
                instance_id: instance_id
                    .clone()
                    .ok_or_else(|| ProviderError::Setup(format!("no instance for {key}")))?,
                key,
            })
        };
        let coin = || {
            run.coin()
                .map_err(|_| ProviderError::Setup(format!("coin {} missing", run.cp.coin)))
        };
        // The step's coin and slot, for steps that render what a node should be.
        let slot = || {
            let coin = coin()?;
            let slot = coin
                .nodes
                .iter()
                .find(|s| Some(NodeKey::of(s)) == step.node)
                .ok_or_else(|| ProviderError::Setup(format!("no slot for {}", step.action)))?;
            Ok::<_, ProviderError>((coin, slot))
        };
        let coin_network = || Ok::<_, ProviderError>(CoinNetwork::of(&desired.fleet, coin()?));
        let zone_id = desired.fleet.hosted_zone_id.as_str();
        match &step.action {
            Action::Launch { snapshot_id, .. } => {
                let (coin, slot) = slot()?;
                let spec = LaunchSpec::new(&desired.fleet, coin, slot, snapshot_id.clone())?;
                let (id, o) = p.launch(&spec).await?;
                Ok((Some(id), o))
            }
            Action::Replace { .. } => {
                let (coin, slot) = slot()?;
                let spec = LaunchSpec::new(&desired.fleet, coin, slot, None)?;
                let (id, o) = p.replace(&node()?, &spec).await?;
                Ok((Some(id), o))
            }
            Action::HandOver { name } => {
                let target = DnsTarget {
                    hosted_zone_id: zone_id.to_string(),
                    name: name.clone(),
                };
                let (id, o) = p.hand_over(&node()?, &target).await?;
                Ok((Some(id), o))
            }
            Action::Upgrade {
                from,
                to,
                snapshot_first,
                confirm_first,
                reported,
            } => {
                let n = node()?;
                if *confirm_first && p.confirm_version(&n, to).await? {
                    return Ok((None, Outcome::AlreadyDone));
                }
                // The daemon runs `from` whatever the tag says: the record says so first, or
                // the crash protocol would take an upgrade to the tagged version for done.
                if *reported
                    && let Some(v) = from
                        .as_deref()
                        .and_then(|f| fleet_repo_schema::values::Version::parse(f).ok())
                {
                    p.record_version(&n, &v).await?;
                }
                if *snapshot_first {
                    p.snapshot(&n, &format!("before-upgrade:{to}")).await?;
                }
                // The coin's digest pins the image of its version, not of any other.
                let digest = run
                    .coin()
                    .ok()
                    .filter(|c| c.version == *to)
                    .and_then(|c| c.image.digest.as_ref());
                let pin = digest.map_or(ImagePin::Tag, ImagePin::Digest);
                Ok((None, p.upgrade_pinned(&n, to, pin).await?))
            }
            Action::RollBack { from, to, restore } => {
                let n = node()?;
                // The version first: the restored volume's boot starts the enabled unit.
                let o = p.upgrade_pinned(&n, to, ImagePin::AsBefore).await?;
                if !*restore {
                    return Ok((None, o));
                }
                let r = p
                    .restore_data(&n, &format!("before-upgrade:{from}"))
                    .await?;
                Ok((None, o.and(r)))
            }
            Action::Reconfigure {
                restart, version, ..
            } => {
                let n = node()?;
                let (coin, slot) = slot()?;
                let files = NodeFiles::of(coin, slot).map_err(|e| ProviderError::Refused {
                    reason: e.to_string(),
                })?;
                Ok((None, p.reconfigure(&n, version, &files, *restart).await?))
            }
            Action::SetTags { volume_id, change } => Ok((
                None,
                p.set_tags(&node()?, volume_id.as_deref(), change).await?,
            )),
            Action::SetCoinNetwork { .. } => {
                let (_, o) = p.ensure_coin_network(&coin_network()?).await?;
                Ok((None, o))
            }
            Action::SetSecurityGroups { to, .. } => {
                // The coin's own group by what the world says now (the network step before
                // made it, or a crash did and this finds it).
                let (own, _) = p.ensure_coin_network(&coin_network()?).await?;
                let mut groups = to.clone();
                groups.push(own);
                Ok((None, p.set_security_groups(&node()?, &groups).await?))
            }
            Action::GrowRootVolume { to_gb, .. } => {
                Ok((None, p.grow_root_volume(&node()?, *to_gb).await?))
            }
            Action::GrowVolume { to_gb, .. } => Ok((None, p.grow_volume(&node()?, *to_gb).await?)),
            Action::ChangeType { to, .. } | Action::Start { instance_type: to } => {
                Ok((None, p.change_instance_type(&node()?, to).await?))
            }
            Action::SetDns { name } => {
                let target = DnsTarget {
                    hosted_zone_id: zone_id.to_string(),
                    name: name.clone(),
                };
                Ok((None, p.set_dns(&node()?, &target).await?))
            }
            Action::UndoReplace { .. } => Ok((None, p.undo_replace(&node()?).await?)),
            Action::FinishRestore { snapshot } => {
                Ok((None, p.finish_restore(&node()?, snapshot).await?))
            }
            Action::Retire { dns } => {
                p.retire(&node()?, zone_id, dns).await?;
                Ok((None, Outcome::Done))
            }
            Action::DeleteDns { record } => Ok((None, p.delete_dns(zone_id, record).await?)),
        }
    }
}
