//! The snapshot schedule (`snapshots.every`, `snapshots.keep`): when to snapshot one of a
//! coin's nodes, and which of its scheduled snapshots to delete. Pure.
//!
//! - **A fresh copy to restore from.** When the coin's newest snapshot (of any reason, not
//!   failed) is older than `every`, one in-sync node's data volume is snapshotted (the first in
//!   key order), never while the coin rolls out and never from a node out of sync: a
//!   snapshot is what new nodes start from.
//! - **Retention deletes only what it made.** Snapshots taken for the schedule
//!   ([`SCHEDULED`]) beyond the `keep` newest are deleted, oldest first; never the coin's
//!   newest snapshot, never one still being taken, never one taken for another reason (before
//!   an upgrade, at a retirement: those are a person's way back), and never one a volume is
//!   still being made from (a launch in progress).
//! - **A consistent copy costs a node.** With `snapshots.stop_daemon` the node's daemon is
//!   stopped for the snapshot ([`crate::provider::snapshot_consistent`]): it counts as down,
//!   so it is taken only when [`may_stop`] says the coin can spare it.

use crate::clock::Millis;
use crate::node::NodeKey;
use crate::provider::SnapshotInfo;
use fleet_repo_schema::desired::SnapshotSpec;

/// The `fleet:reason` of a scheduled snapshot.
pub const SCHEDULED: &str = "scheduled";

/// What the schedule asks of one coin now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDecision {
    /// Snapshot this node's data volume.
    pub take: Option<NodeKey>,
    /// Delete these snapshots.
    pub delete: Vec<String>,
}

/// Decide for one coin: `spec` its `snapshots:`; `snapshots` its snapshots; `in_sync` its
/// nodes in sync now, in key order; `in_use` snapshots a volume is being made from.
pub fn decide(
    spec: &SnapshotSpec,
    rolling: bool,
    snapshots: &[&SnapshotInfo],
    in_sync: &[NodeKey],
    in_use: &dyn Fn(&str) -> bool,
    now: Millis,
) -> SnapshotDecision {
    let mut d = SnapshotDecision::default();
    let Some(every) = spec.every else {
        return d;
    };
    let usable: Vec<&&SnapshotInfo> = snapshots.iter().filter(|s| s.state != "error").collect();
    let newest = usable.iter().map(|s| s.started_ms).max();
    let due = newest.is_none_or(|t| now.saturating_sub(t) >= every.0.as_millis() as u64);
    if due && !rolling {
        d.take = in_sync.first().cloned();
    }
    let newest_id = usable
        .iter()
        .max_by_key(|s| (s.started_ms, s.snapshot_id.clone()))
        .map(|s| s.snapshot_id.clone());
    let mut scheduled: Vec<&&SnapshotInfo> = usable
        .iter()
        .copied()
        .filter(|s| s.reason == SCHEDULED)
        .collect();
    scheduled.sort_by_key(|s| std::cmp::Reverse((s.started_ms, s.snapshot_id.clone())));
    for s in scheduled.into_iter().skip(spec.keep as usize) {
        if s.state == "completed"
            && Some(&s.snapshot_id) != newest_id.as_ref()
            && !in_use(&s.snapshot_id)
        {
            d.delete.push(s.snapshot_id.clone());
        }
    }
    d.delete.reverse(); // oldest first
    d
}

/// Whether one more of a coin's `total` nodes may go down now (for a snapshot with its
/// daemon stopped): `synced` of them serve, so `total - synced` are down already; one more
/// must stay within `max_unavailable` and leave at least `min_synced` serving.
pub fn may_stop(max_unavailable: u32, total: usize, synced: usize, min_synced: u32) -> bool {
    let down = total.saturating_sub(synced);
    down < max_unavailable as usize && synced > min_synced as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_repo_schema::values::Duration;

    const H: u64 = 3_600_000;

    fn snap(id: &str, at: u64, reason: &str, state: &str) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_id: id.into(),
            coin: "litecoin".into(),
            zone: "eu-central-1a".into(),
            size_gb: 300,
            started_ms: at,
            state: state.into(),
            reason: reason.into(),
        }
    }

    fn spec(keep: u32) -> SnapshotSpec {
        SnapshotSpec {
            before_upgrade: true,
            restore_new_nodes: true,
            every: Some(Duration(std::time::Duration::from_secs(24 * 3600))),
            keep,
            max_age: None,
            stop_daemon: false,
        }
    }

    #[test]
    fn a_daemon_is_stopped_for_a_snapshot_only_when_the_coin_can_spare_it() {
        // Two nodes, both serving, max_unavailable 1, min_synced 1: one may stop.
        assert!(may_stop(1, 2, 2, 1));
        // One is down already: the budget is spent.
        assert!(!may_stop(1, 2, 1, 1));
        assert!(may_stop(2, 3, 2, 1));
        // Stopping would leave fewer than min_synced serving.
        assert!(!may_stop(3, 2, 2, 2));
        assert!(!may_stop(1, 1, 1, 1));
    }

    #[test]
    fn a_snapshot_is_due_every_interval_from_an_in_sync_node_and_never_while_rolling() {
        let k = NodeKey::parse("litecoin", "eu-central-1a", 1).unwrap();
        let s = [snap("snap-1", 0, SCHEDULED, "completed")];
        let refs: Vec<&SnapshotInfo> = s.iter().collect();
        let none = |_: &str| false;
        let inn = std::slice::from_ref(&k);
        assert_eq!(
            decide(&spec(7), false, &refs, inn, &none, 23 * H).take,
            None
        );
        assert_eq!(
            decide(&spec(7), false, &refs, inn, &none, 24 * H).take,
            Some(k.clone())
        );
        assert_eq!(decide(&spec(7), true, &refs, inn, &none, 24 * H).take, None);
        assert_eq!(
            decide(&spec(7), false, &refs, &[], &none, 24 * H).take,
            None
        );
        // Without `every`, nothing at all.
        let mut off = spec(1);
        off.every = None;
        assert_eq!(
            decide(&off, false, &[], inn, &none, 99 * H),
            SnapshotDecision::default()
        );
        // A failed snapshot does not count as fresh.
        let failed = [snap("snap-2", 23 * H, SCHEDULED, "error")];
        let refs: Vec<&SnapshotInfo> = failed.iter().collect();
        assert!(
            decide(&spec(7), false, &refs, inn, &none, 24 * H)
                .take
                .is_some()
        );
    }

    #[test]
    fn retention_deletes_old_scheduled_snapshots_only() {
        let s = [
            snap("snap-a", 0, SCHEDULED, "completed"),
            snap("snap-b", H, "before-upgrade:0.21.4", "completed"),
            snap("snap-c", 2 * H, SCHEDULED, "completed"),
            snap("snap-d", 3 * H, SCHEDULED, "completed"),
            snap("snap-e", 4 * H, SCHEDULED, "pending"),
            snap("snap-f", 5 * H, "retire", "completed"),
        ];
        let refs: Vec<&SnapshotInfo> = s.iter().collect();
        let none = |_: &str| false;
        // keep 1: e (pending) is the one kept; a, c, d are deleted, oldest first; b and f are
        // another reason's.
        assert_eq!(
            decide(&spec(1), false, &refs, &[], &none, 5 * H).delete,
            ["snap-a", "snap-c", "snap-d"]
        );
        assert_eq!(
            decide(&spec(3), false, &refs, &[], &none, 5 * H).delete,
            ["snap-a"]
        );
        // One a launch is restoring from stays.
        let used = |id: &str| id == "snap-a";
        assert!(
            decide(&spec(3), false, &refs, &[], &used, 5 * H)
                .delete
                .is_empty()
        );
        // The coin's newest is never deleted, even beyond keep (all scheduled, keep 1).
        let only = [
            snap("snap-x", 2 * H, SCHEDULED, "completed"),
            snap("snap-y", H, SCHEDULED, "completed"),
        ];
        let refs: Vec<&SnapshotInfo> = only.iter().collect();
        assert_eq!(
            decide(&spec(1), false, &refs, &[], &none, 5 * H).delete,
            ["snap-y"]
        );
    }
}
