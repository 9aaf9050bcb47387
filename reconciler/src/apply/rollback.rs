//! `rollout.on_failure: rollback`: when a node fails its gate after its upgrade, or during
//! its zone's bake, the nodes of that zone this rollout upgraded and that are not in sync are
//! restarted at the version each ran before (the upgrade step's `from`, which the plan read
//! from the node; the journal's step record keeps it), on the image the node pinned for it,
//! and gated like any step.
//!
//! What holds:
//! - Only nodes of the failed zone that an upgrade step of this rollout took to its target
//!   (the node's record says it runs the target: an interrupted step, whose version is not
//!   known, is left alone) and that do not count as in sync by the one rating
//!   ([`crate::health::rate`]): a node that is in sync keeps the new version, one whose
//!   upgrade failed never left its old daemon (`fleet-node upgrade` pulls first).
//! - The rolled-back nodes' zone is baked as a rollout's is (journaled under
//!   `rollback:<version>`, never read as the zone's bake at a version): a daemon that looks
//!   in sync for its first minutes and then falls behind fails the rollback.
//! - It takes down no node that was up: the nodes it restarts are out of sync already, so
//!   `max_unavailable` holds as it did when the gate failed.
//! - The coin's failure stands (the coin is held until the next revision, as with `hold`);
//!   the rollback is journaled step by step and told after the failure, with its own outcome;
//!   a rollback whose gate fails too leaves the node for a person.
//! - A gate failure of an earlier zone's check, a step's or the budget's rolls nothing back.
//! - `on_failure: restore` (a version that changed the database): each rollback step first
//!   rolls the version back, then puts the data volume back from the node's newest
//!   `before-upgrade:<failed version>` snapshot ([`crate::provider::Provider::restore_data`]),
//!   so the boot that ends the swap starts the old version on the old data. The volume the
//!   failed version wrote is kept (detached, tagged): never deleted by fleet. The node is out
//!   of sync already, so stopping its instance for the swap takes nothing down.

use super::steps::Side;
use super::{CoinReport, CoinRun, Executor, StepResult, Stop};
use crate::events::{Event, Failure, GatePhase, Rollback, RollbackOutcome, RolledBack};
use crate::plan::{Action, CoinPlan, Step, Wave, WaveKind};
use fleet_repo_schema::values::{Version, Zone};
use fleet_repo_schema::{Coin, OnFailure};

/// What may be rolled back after a failure: the upgrades of the failed zone.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pending {
    zone: Zone,
    /// Per upgrade step of the zone, the rollback step that undoes it.
    steps: Vec<Step>,
}

/// What may be rolled back after `failure` of `cp`'s rollout, under `coin`'s policy: the
/// rollback of each upgrade step of the failed zone from a known earlier version. None when
/// the policy is `hold`, the failure is not a node's gate after its step or during the bake,
/// or the zone has no such upgrade.
pub(super) fn pending(coin: &Coin, cp: &CoinPlan, failure: &Failure) -> Option<Pending> {
    let restore = match coin.rollout.on_failure {
        OnFailure::Hold => return None,
        OnFailure::Rollback => false,
        OnFailure::Restore => true,
    };
    let Failure::Gate {
        zone,
        phase: GatePhase::AfterStep | GatePhase::Bake,
        ..
    } = failure
    else {
        return None;
    };
    let steps: Vec<Step> = cp
        .waves
        .iter()
        .filter(|w| w.zone.as_ref() == Some(zone))
        .flat_map(|w| &w.steps)
        .filter_map(|s| {
            let Action::Upgrade {
                from: Some(from),
                to,
                ..
            } = &s.action
            else {
                return None;
            };
            let before = Version::parse(from).ok().filter(|v| v != to)?;
            Some(Step {
                node: Some(s.node.clone()?),
                instance_id: s.instance_id.clone(),
                action: Action::RollBack {
                    from: to.clone(),
                    to: before,
                    restore,
                },
                reason: "not in sync after its upgrade (rollout.on_failure: rollback)".into(),
            })
        })
        .collect();
    (!steps.is_empty()).then(|| Pending {
        zone: zone.clone(),
        steps,
    })
}

impl Executor {
    /// Roll back what of `pending` needs it now (see the module's header): the restarts, then
    /// their gate. Told to the notifier ([`Event::RolledBack`]) and returned; None when no
    /// node needs it.
    pub(super) async fn roll_back(
        &self,
        run: &CoinRun<'_>,
        pending: Pending,
        report: &mut CoinReport,
    ) -> Option<Rollback> {
        let coin = run.coin().ok()?;
        let observed = match self.nodes_of(run, coin).await {
            Ok(o) => o,
            Err(Stop::Failed(failure)) => {
                tracing::error!(coin = %coin.name, error = %failure, "could not observe the coin to roll it back");
                return None;
            }
            Err(Stop::Cancelled) => return None,
        };
        let (health, _) = self.rate_now(coin, &observed).await;
        let steps: Vec<Step> = pending
            .steps
            .into_iter()
            .filter(|s| {
                let (Some(key), Action::RollBack { from, .. }) = (&s.node, &s.action) else {
                    return false;
                };
                let runs_target = observed
                    .iter()
                    .any(|n| n.key == *key && n.version.known() == Some(from));
                runs_target && !health.is_up(key)
            })
            .map(|mut s| {
                // The instance the node has now (a stand-in left by a crash is not it).
                s.instance_id = observed
                    .iter()
                    .find(|n| Some(&n.key) == s.node.as_ref())
                    .map(|n| n.instance_id.clone());
                s
            })
            .collect();
        if steps.is_empty() {
            return None;
        }
        let nodes = steps
            .iter()
            .filter_map(|s| match (&s.node, &s.action) {
                (Some(node), Action::RollBack { from, to, restore }) => Some(RolledBack {
                    node: node.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    restored: *restore,
                }),
                _ => None,
            })
            .collect();
        let wave = Wave {
            kind: WaveKind::Repair,
            zone: Some(pending.zone.clone()),
            part: 1,
            parts: 1,
            steps,
        };
        let outcome = match self
            .roll_back_wave(run, coin, &pending.zone, &wave, report)
            .await
        {
            Ok(()) => RollbackOutcome::InSync,
            Err(Stop::Failed(failure)) => RollbackOutcome::Failed { failure },
            Err(Stop::Cancelled) => RollbackOutcome::Cancelled,
        };
        let rollback = Rollback {
            zone: pending.zone,
            nodes,
            outcome,
        };
        self.emit(Event::RolledBack {
            coin: run.cp.coin.clone(),
            rollback: rollback.clone(),
        });
        Some(rollback)
    }

    async fn roll_back_wave(
        &self,
        run: &CoinRun<'_>,
        coin: &Coin,
        zone: &Zone,
        wave: &Wave,
        report: &mut CoinReport,
    ) -> StepResult<()> {
        let before = self.run_steps(run, wave, Side::BeforeGate, report).await?;
        let gated = self
            .gate_wave(run, coin, zone, wave, &before.ids, report)
            .await?;
        before.all_done()?;
        gated.passed_all()?;
        // As a rollout's zone: in sync for the whole bake, or the rollback failed too (a bad
        // daemon can look in sync for its first minutes). Journaled under a key of its own.
        let t0 = self.now();
        let to = wave
            .steps
            .iter()
            .find_map(|s| match &s.action {
                Action::RollBack { to, .. } => Some(to.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        self.bake_as(run, coin, zone, &format!("rollback:{to}"))
            .await?;
        report.gate_wait_ms += self.now() - t0;
        Ok(())
    }
}
