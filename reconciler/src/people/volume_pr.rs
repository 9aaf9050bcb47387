//! The node watch's disk pull requests (`disk.grow_at`, `disk.min_days_left`): the
//! [`GrowProposer`] of `fleet run`, through the bots crate's [`bots::volume`].

use crate::care::disk::{GrowOrder, Proposal};
use crate::daemon::watch::GrowProposer;
use bots::github::GitHub;
use bots::volume::{self, GrowFigures, VolumeOutcome};
use bots::watch::WatchSettings;
use fleet_repo_schema::Desired;

/// Opens disk pull requests on the fleet repository.
#[derive(Debug)]
pub struct GitHubProposer {
    /// GitHub.
    pub gh: GitHub,
    /// The repository and its branch.
    pub settings: WatchSettings,
}

/// The figures of `order` as the pull request shows them.
pub fn figures(desired: &Desired, order: &GrowOrder, grown: bool) -> GrowFigures {
    let spec = desired.coins.get(order.coin.as_str()).map(|c| c.disk);
    GrowFigures {
        coin: order.coin.to_string(),
        from_gb: order.from_gb,
        to_gb: order.to_gb,
        node: order.node.to_string(),
        used_percent: order.used_percent,
        used_gb: order.used_gb,
        gb_per_day: order.gb_per_day,
        days_left: order.days_left,
        reason: order.reason.to_string(),
        grow_at: spec.map_or(0, |s| s.grow_at),
        min_days_left: spec.map_or(0, |s| s.min_days_left),
        grown,
    }
}

#[async_trait::async_trait]
impl GrowProposer for GitHubProposer {
    async fn propose(&self, desired: &Desired, order: &GrowOrder, grown: bool) -> Proposal {
        let f = figures(desired, order, grown);
        match volume::propose(&self.gh, &self.settings, desired, &f).await {
            Ok(VolumeOutcome::Opened { number, url }) => Proposal::Opened { number, url },
            Ok(VolumeOutcome::AlreadyOpen { number }) => Proposal::AlreadyOpen { number },
            Ok(VolumeOutcome::Declined { number }) => Proposal::Declined { number },
            Ok(VolumeOutcome::UpToDate { current_gb }) => Proposal::UpToDate { current_gb },
            Err(e) => {
                tracing::warn!(coin = %order.coin, error = %e, "disk pull request not opened; tried again at the next disk read");
                Proposal::Failed {
                    message: e.to_string(),
                }
            }
        }
    }
}
