//! One coin's part of the plan: per slot, what differs between the desired coin and its
//! observed node; then the repair waves, the zone waves of at most `max_unavailable`
//! disruptive nodes, retirements and clean-ups; the approval the change needs and a rough
//! duration.

use super::*;
use crate::node_config::{ConfigPart, Fingerprint, NodeFiles};
use crate::provider::{InstanceState, ObservedVersion, PendingStep, SecretState};
use fleet_repo_schema::Coin;
use fleet_repo_schema::semver::classify;

pub(super) fn plan_coin(
    desired: &Desired,
    coin: &Coin,
    observed: &Observed,
    snapshots: &[&SnapshotInfo],
    retire: Vec<Step>,
    cleanup: Vec<Step>,
) -> CoinPlan {
    let mut refusals = Vec::new();
    let mut unjudged = Vec::new();
    let mut from_versions: BTreeSet<Version> = BTreeSet::new();
    let (mut known_class, mut unknown_plain, mut unknown_confirm) = (Class::None, false, false);
    // Per zone: disruptive node step lists, quiet steps, and the steps that bring nodes that
    // are down now back up.
    let mut zones: Vec<(Zone, Vec<Vec<Step>>, Vec<Step>)> = Vec::new();
    let mut repairs: Vec<(Zone, Vec<Step>)> = Vec::new();
    let coin_nodes = observed.nodes_of(&coin.name);
    // The size of the coin's data volumes: the repository's, or what fleet grew them to on
    // its own (`disk.auto_grow`) until the repository catches up.
    let data_gb = coin
        .data_volume_gb
        .max(observed.auto_grown.get(&coin.name).copied().unwrap_or(0));
    // A coin's nodes mostly run one or two versions: classify each once.
    let mut classes: BTreeMap<String, Class> = BTreeMap::new();
    // The coin's own security group: Some(None) when groups were read and it has none.
    let net = crate::network::CoinNetwork::of(&desired.fleet, coin);
    let coin_group = observed.groups.as_deref().map(|gs| net.find(gs));
    let newest_snapshot = snapshots
        .iter()
        .filter(|s| s.state != "error" && s.size_gb <= data_gb)
        .max_by_key(|s| s.started_ms);
    for zone in &coin.zones {
        let mut disruptive: Vec<Vec<Step>> = Vec::new();
        let mut quiet: Vec<Step> = Vec::new();
        let mut repair: Vec<Step> = Vec::new();
        if !desired.fleet.subnets.contains_key(zone) {
            refusals.push(Refusal {
                node: None,
                reason: format!(
                    "zone {zone} has no subnet in fleet.yaml `network.subnets`: add one before placing {} there",
                    coin.name
                ),
            });
        }
        for slot in coin.nodes.iter().filter(|s| &s.zone == zone) {
            let key = NodeKey::of(slot);
            let found = coin_nodes.binary_search_by(|n| n.key.cmp(&key));
            let Some(n) = found.ok().map(|i| &coin_nodes[i]) else {
                let snapshot_id = if coin.snapshots.restore_new_nodes {
                    newest_snapshot.map(|s| s.snapshot_id.clone())
                } else {
                    None
                };
                disruptive.push(vec![Step {
                    node: Some(key),
                    instance_id: None,
                    action: Action::Launch {
                        version: coin.version.clone(),
                        instance_type: coin.instance_type.clone(),
                        data_volume_gb: data_gb,
                        full_sync_ms: snapshot_id
                            .is_none()
                            .then_some(coin.health.full_sync_estimate)
                            .flatten()
                            .map(|d| d.0.as_millis() as u64),
                        snapshot_id,
                        dns_name: slot.dns_name.clone(),
                        public_ip: crate::provider::needs_public_ip(coin),
                    },
                    reason: "the slot has no node".into(),
                }]);
                continue;
            };
            let id = Some(n.instance_id.clone());
            let mut steps: Vec<Step> = Vec::new();
            let step = |action: Action, reason: String| Step {
                node: Some(key.clone()),
                instance_id: id.clone(),
                action,
                reason,
            };
            let hand_over = |name: &str| {
                step(
                    Action::HandOver {
                        name: name.to_string(),
                    },
                    "the name and the slot go to the replacement once it is in sync".into(),
                )
            };
            match &n.state {
                InstanceState::Running | InstanceState::Stopped | InstanceState::Stopping => {}
                InstanceState::Pending => {
                    // Booting: nothing can be judged until it runs (its type and version may
                    // differ); the budget check counts it as down meanwhile.
                    unjudged.push(Unjudged {
                        node: key.clone(),
                        instance_id: n.instance_id.clone(),
                        reason: format!(
                            "instance {} is booting (EC2 state pending); it is judged once it runs",
                            n.instance_id
                        ),
                    });
                    continue;
                }
                other => {
                    refusals.push(Refusal {
                        node: Some(key.clone()),
                        reason: format!(
                            "instance {} is {}; fleet waits for it to settle (the next pass replaces a terminated node)",
                            n.instance_id,
                            other.as_str()
                        ),
                    });
                    continue;
                }
            }
            // An interrupted replacement resumes first, whatever else differs (its volume
            // may be on the replacement already); or, when the repository wants this instance
            // again (what caused the replacement was set back), it is undone.
            if let Some(PendingStep::Replace { ami, .. }) = &n.pending {
                // Undone only when the instance's AMI and subnet are known to be the ones
                // wanted.
                let wanted_again = n.image_id.is_some()
                    && n.subnet_id.is_some()
                    && replace_cause(desired, zone, n).is_none();
                disruptive.push(if wanted_again {
                    let mut undo = vec![step(
                        Action::UndoReplace { ami: ami.clone() },
                        format!(
                            "an earlier replacement did not finish, and node_ami and the zone's subnet are this instance's again ({})",
                            n.image_id.as_deref().unwrap_or("?")
                        ),
                    )];
                    // A hand-over cut off after it moved the name: the name comes back too.
                    if !n.dns_names.iter().any(|d| d == &slot.dns_name) {
                        undo.push(step(
                            Action::SetDns {
                                name: slot.dns_name.clone(),
                            },
                            "no record of this name points at the node".into(),
                        ));
                    }
                    undo
                } else {
                    vec![
                        step(
                            Action::Replace {
                                cause: ReplaceCause::Resume,
                            },
                            "an earlier replacement did not finish".into(),
                        ),
                        hand_over(&slot.dns_name),
                    ]
                });
                continue;
            }
            // A restore of the data volume cut off (perhaps between the old volume's detach and
            // the new one's attach): it is finished before anything else is judged.
            if let Some(PendingStep::Restore { snapshot }) = &n.pending {
                disruptive.push(vec![step(
                    Action::FinishRestore {
                        snapshot: snapshot.clone(),
                    },
                    format!("an earlier restore of its data volume from {snapshot} did not finish"),
                )]);
                continue;
            }
            match &n.data_volume {
                None => {
                    refusals.push(Refusal {
                        node: Some(key.clone()),
                        reason: format!(
                            "instance {} has no data volume at /dev/sdf; attach the node's volume or retire the node by hand",
                            n.instance_id
                        ),
                    });
                    continue;
                }
                Some(v) if v.size_gb > data_gb => {
                    refusals.push(Refusal {
                        node: Some(key.clone()),
                        reason: format!(
                            "{}: data_volume_gb {} is smaller than volume {} of {key} ({} GB); EBS volumes cannot shrink without losing the chain: set it back to at least {} (a smaller volume needs a new node restored from a snapshot)",
                            coin.file, coin.data_volume_gb, v.volume_id, v.size_gb, v.size_gb
                        ),
                    });
                    continue;
                }
                Some(v) if v.size_gb < data_gb => steps.push(step(
                    Action::GrowVolume {
                        volume_id: v.volume_id.clone(),
                        from_gb: v.size_gb,
                        to_gb: data_gb,
                    },
                    if data_gb > coin.data_volume_gb {
                        format!(
                            "fleet grew the coin's data volumes to {data_gb} GB (disk.auto_grow)"
                        )
                    } else {
                        format!("data_volume_gb is {}", coin.data_volume_gb)
                    },
                )),
                Some(_) => {}
            }
            let stopped = matches!(n.state, InstanceState::Stopped | InstanceState::Stopping);
            let pending_change_type = matches!(n.pending, Some(PendingStep::ChangeType { .. }));
            if n.instance_type != coin.instance_type.as_str() || pending_change_type {
                steps.push(step(
                    Action::ChangeType {
                        from: n.instance_type.clone(),
                        to: coin.instance_type.clone(),
                    },
                    if pending_change_type && n.instance_type == coin.instance_type.as_str() {
                        "an earlier change of type did not finish".into()
                    } else {
                        format!("instance.type is {}", coin.instance_type)
                    },
                ));
            } else if stopped {
                steps.push(step(
                    Action::Start {
                        instance_type: coin.instance_type.clone(),
                    },
                    "the instance is stopped".into(),
                ));
            }
            // The version the daemon runs: what it says itself where that is not what the
            // tag records (a node upgraded by hand), else as far as the record goes. Such a
            // node is upgraded like any other: `fleet-node upgrade` enables the target's unit
            // and disables the others, and starts nothing that already runs, so a daemon
            // started by hand at the target is brought under its unit without a restart (a
            // confirmation alone would leave the old unit enabled, to come back at the next
            // boot).
            let mut reported = n.runs_other_than_recorded();
            // The node's image was found running another version after fleet started it
            // (fleet:image-runs), and the coin still asks for that image: restarting it again
            // changes nothing, so the coin waits for a person.
            let digest = coin.image.digest.as_ref().map(|d| d.to_string());
            if let Some(d) = reported
                && n.tags
                    .get(crate::provider::tags::IMAGE_RUNS)
                    .is_some_and(|v| {
                        crate::provider::tags::image_runs_of(
                            v,
                            coin.version.as_str(),
                            digest.as_deref(),
                        ) == Some(d)
                    })
            {
                refusals.push(Refusal {
                    node: Some(key.clone()),
                    reason: format!(
                        "the image of {} runs {d} (found after fleet started it; {}): fix the image (image.digest, or another version), or set health.daemon_version: false",
                        coin.version,
                        crate::provider::tags::IMAGE_RUNS
                    ),
                });
                reported = None;
            }
            let reported_v = reported.and_then(|d| Version::parse(&d.to_string()).ok());
            let at_target_by_hand = reported.is_some_and(|d| d.is(&coin.version) == Some(true));
            let (running, confirm_first): (Option<&Version>, bool) =
                match (reported, &reported_v, &n.version, &n.pending) {
                    (Some(_), Some(v), _, _) => (Some(v), false),
                    (_, _, version, pending) => match (version, pending) {
                        (ObservedVersion::Known { version }, _) => (Some(version), false),
                        (
                            ObservedVersion::Unknown { .. },
                            Some(
                                PendingStep::ChangeType { .. }
                                | PendingStep::Reconfigure { .. }
                                | PendingStep::Replace { .. }
                                | PendingStep::Restore { .. },
                            ),
                        ) => (n.recorded_version.as_ref(), false),
                        (
                            ObservedVersion::Unknown { .. },
                            Some(p @ PendingStep::Upgrade { .. }),
                        ) => (None, p.is_upgrade_to(&coin.version)),
                        (ObservedVersion::Unknown { .. }, _) => (None, false),
                    },
                };
            if running != Some(&coin.version) || reported.is_some() {
                // An upgrade to the target cut off after its marker was written leaves the
                // node at either the version it was recorded at or the target: the change
                // is at most recorded → target, whatever the daemon says when asked.
                let size_from = running.or(if confirm_first {
                    n.recorded_version.as_ref()
                } else {
                    None
                });
                match size_from {
                    Some(v) => {
                        from_versions.insert(v.clone());
                        let c = *classes
                            .entry(v.to_string())
                            .or_insert_with(|| classify(v.as_str(), coin.version.as_str()));
                        known_class = known_class.max(c);
                    }
                    // An interrupted upgrade to the target with no recorded version counts
                    // as unknown only when no node tells the change's size.
                    None if confirm_first => unknown_confirm = true,
                    None => unknown_plain = true,
                }
                let reason = match (reported, running, &n.version) {
                    (Some(d), _, ObservedVersion::Known { version: tag }) => format!(
                        "version is {}: the daemon reports {d}; fleet's tag says {tag}",
                        coin.version
                    ),
                    (_, Some(v), _) => format!("version is {} (runs {v})", coin.version),
                    (_, None, ObservedVersion::Unknown { reason }) => {
                        format!(
                            "version is {}; the node's is unknown: {reason}",
                            coin.version
                        )
                    }
                    (_, None, _) => format!("version is {}", coin.version),
                };
                steps.push(step(
                    Action::Upgrade {
                        from: reported
                            .map(|d| d.to_string())
                            .or_else(|| running.map(|v| v.to_string())),
                        to: coin.version.clone(),
                        snapshot_first: coin.snapshots.before_upgrade,
                        confirm_first,
                        // Only needed where the tag already names the target: elsewhere the
                        // upgrade runs anyway.
                        reported: reported.is_some() && n.version.known() == Some(&coin.version),
                    },
                    reason,
                ));
            }
            // The node's rendered configuration, by its fingerprint. An upgrade of the same
            // node restarts the daemon anyway: the files are written first, without a restart
            // of their own. A node without a readable fingerprint (launched by an older fleet
            // or by hand) differs in every part.
            match NodeFiles::of(coin, slot) {
                // (A stopped node is started first, by the zone's repair wave.)
                Ok(files) => {
                    let have = n.config();
                    let mut changed = have.differs(&files.fingerprint());
                    // A node `fleet adopt` took over still runs the operators' node side.
                    // fleet's is installed (without a restart of its own) before the first
                    // step that needs it: an upgrade, a change of type (whose start must find
                    // the daemon's unit enabled), a grown root, a reconfiguration of another
                    // part. Never for itself: adopting changes nothing on a node.
                    let adopted = have.is_adopted();
                    let node_side_first = adopted
                        && steps.iter().any(|s| {
                            matches!(s.action, Action::Upgrade { .. } | Action::ChangeType { .. })
                        });
                    if adopted {
                        let needed = node_side_first
                            || changed.iter().any(|p| *p != ConfigPart::Program)
                            || n.root_volume
                                .as_ref()
                                .is_some_and(|v| v.size_gb < coin.root_volume_gb);
                        if !needed {
                            changed.retain(|p| *p != ConfigPart::Program);
                        }
                    }
                    if !changed.is_empty() {
                        // An upgrade restarts the daemon, so the files go first without a
                        // restart of their own; except for a daemon already at the target by
                        // hand, whose upgrade restarts nothing: its files come after it, at
                        // the target, with their own restart.
                        let upgrading = !at_target_by_hand
                            && steps.iter().any(|s| {
                                matches!(
                                    s.action,
                                    Action::Upgrade {
                                        confirm_first: false,
                                        ..
                                    }
                                )
                            });
                        // (An adopted node whose daemon is at the target by hand: its
                        // node side goes first, and restarts for what else differs, since
                        // that upgrade restarts nothing.)
                        let restart = if node_side_first {
                            at_target_by_hand
                        } else {
                            !upgrading
                        } && changed
                            .iter()
                            .any(|p| p.restarts() && !(adopted && *p == ConfigPart::Program));
                        let reason = if have == Fingerprint::default() {
                            "the node carries no configuration fingerprint (fleet:config)".into()
                        } else if adopted && changed == [ConfigPart::Program] {
                            "the node was adopted: fleet's node side is installed before the steps that need it".into()
                        } else {
                            "the coin file's settings differ from the node's".into()
                        };
                        // Before the upgrade: it installs the node side the upgrade runs.
                        // After it for a daemon at the target by hand (see above).
                        let at = if at_target_by_hand && !node_side_first {
                            steps.len()
                        } else if node_side_first {
                            steps
                                .iter()
                                .position(|s| {
                                    matches!(
                                        s.action,
                                        Action::Upgrade { .. } | Action::ChangeType { .. }
                                    )
                                })
                                .unwrap_or(steps.len())
                        } else {
                            steps
                                .iter()
                                .position(|s| matches!(s.action, Action::Upgrade { .. }))
                                .unwrap_or(steps.len())
                        };
                        let version = if at_target_by_hand && !node_side_first {
                            coin.version.clone()
                        } else {
                            n.recorded_version
                                .clone()
                                .unwrap_or_else(|| coin.version.clone())
                        };
                        let settings = n
                            .key_print()
                            .map(|k| k.changes(&files, &changed))
                            .unwrap_or_default();
                        steps.insert(
                            at,
                            step(
                                Action::Reconfigure {
                                    changed,
                                    settings,
                                    version,
                                    restart,
                                },
                                reason,
                            ),
                        );
                    }
                }
                Err(e) => refusals.push(Refusal {
                    node: Some(key.clone()),
                    reason: format!("{}: {e}", coin.file),
                }),
            }
            // The root volume grows online, after a reconfiguration (which installs the
            // `fleet-node` that grows the partition on nodes set up before it).
            if let Some(v) = n
                .root_volume
                .as_ref()
                .filter(|v| v.size_gb < coin.root_volume_gb)
            {
                steps.push(step(
                    Action::GrowRootVolume {
                        volume_id: v.volume_id.clone(),
                        from_gb: v.size_gb,
                        to_gb: coin.root_volume_gb,
                    },
                    format!("instance.root_volume_gb is {}", coin.root_volume_gb),
                ));
            }
            // Tags the coin lists, and the instance's Name: set where they differ; a key the
            // coin dropped is deleted when the node's record says fleet wrote it (never a tag
            // someone else wrote).
            let set: BTreeMap<String, String> = coin
                .tags
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
                .chain([("Name".to_string(), slot.dns_name.clone())])
                .filter(|(k, v)| n.tags.get(k) != Some(v))
                .collect();
            let had = n
                .tags
                .get(tags::COIN_TAGS)
                .map(String::as_str)
                .unwrap_or("");
            let unset: Vec<String> = n
                .tags
                .keys()
                .filter(|k| {
                    !k.starts_with("fleet:")
                        && !k.starts_with("aws:")
                        && k.as_str() != "Name"
                        && !coin.tags.keys().any(|c| c.as_str() == k.as_str())
                        && tags::recorded_coin_tag(had, k)
                })
                .cloned()
                .collect();
            let record = tags::coin_tags_record(coin.tags.keys().map(|k| k.as_str()));
            if !set.is_empty() || !unset.is_empty() || had != record {
                let keys: Vec<&str> = set.keys().chain(unset.iter()).map(String::as_str).collect();
                let reason = if keys.is_empty() {
                    "the node does not record which of its tags are the coin's".to_string()
                } else {
                    format!("tags {} differ from the coin file", keys.join(", "))
                };
                steps.push(step(
                    Action::SetTags {
                        volume_id: n.data_volume.as_ref().map(|v| v.volume_id.clone()),
                        change: crate::provider::TagChange { set, unset, record },
                    },
                    reason,
                ));
            }
            // A node in another VPC than fleet.yaml's (the fleet moved) keeps its groups: none
            // of the fleet's VPC can be attached to it; it is replaced by hand.
            let other_vpc = n
                .vpc_id
                .as_deref()
                .is_some_and(|v| v != desired.fleet.vpc_id.as_str());
            if let Some(have) = n.security_groups.as_ref().filter(|_| !other_vpc) {
                let mut want: Vec<String> = desired
                    .fleet
                    .security_groups
                    .iter()
                    .map(|g| g.to_string())
                    .collect();
                want.sort();
                want.dedup();
                // With the coin's own group when groups were read (it is made first when
                // missing, so the node lacks it).
                let own = coin_group.flatten().map(|g| g.group_id.clone());
                let mut all = want.clone();
                all.extend(own.clone());
                all.sort();
                let differs = match coin_group {
                    Some(None) => true,
                    _ => *have != all,
                };
                if differs {
                    let reason = if have.iter().all(|g| want.contains(g)) && own.is_none() {
                        format!("the node lacks the coin's own group {}", net.group_name())
                    } else {
                        "the instance's security groups are not fleet.yaml's network.security_groups and the coin's own".into()
                    };
                    steps.push(step(
                        Action::SetSecurityGroups {
                            from: have.clone(),
                            to: want,
                            coin_group: own,
                        },
                        reason,
                    ));
                }
            }
            if !n.dns_names.iter().any(|d| d == &slot.dns_name) {
                steps.push(step(
                    Action::SetDns {
                        name: slot.dns_name.clone(),
                    },
                    "no record of this name points at the node".into(),
                ));
            }
            // A new AMI needs a new instance, launched as the coin says now: the one step the
            // node gets (what else differs comes with it; a larger data volume is grown by
            // the next plan).
            let cause = replace_cause(desired, zone, n).or_else(|| {
                observed
                    .replace_requested
                    .contains(&n.instance_id)
                    .then_some(ReplaceCause::Heal)
            });
            if let Some(cause) = cause {
                let reason = match &cause {
                    ReplaceCause::Subnet { to, .. } => {
                        format!("network.subnets gives {zone} the subnet {to}")
                    }
                    ReplaceCause::Heal => format!(
                        "instance {} fails EC2's status checks: the node watch asked for a new one (heal.replace_after)",
                        n.instance_id
                    ),
                    _ => format!("node_ami is {}", desired.fleet.node_ami),
                };
                steps = vec![
                    step(Action::Replace { cause }, reason),
                    hand_over(&slot.dns_name),
                ];
            }
            if stopped
                && let Some(i) = steps.iter().position(|s| {
                    matches!(s.action, Action::ChangeType { .. } | Action::Start { .. })
                })
            {
                repair.push(steps.remove(i));
            }
            if steps.iter().any(|s| s.action.disruptive()) {
                disruptive.push(steps);
            } else {
                quiet.extend(steps);
            }
        }
        zones.push((zone.clone(), disruptive, quiet));
        if !repair.is_empty() {
            repairs.push((zone.clone(), repair));
        }
    }

    // Nodes already down that no step of this plan brings up: they eat into max_unavailable.
    let max_unavailable = coin.rollout.max_unavailable.max(1);
    let down_elsewhere = coin_nodes
        .iter()
        .filter(|n| !matches!(n.state, InstanceState::Running))
        .filter(|n| {
            !zones
                .iter()
                .any(|(_, d, _)| d.iter().any(|steps| steps[0].node.as_ref() == Some(&n.key)))
                && !repairs
                    .iter()
                    .any(|(_, r)| r.iter().any(|s| s.node.as_ref() == Some(&n.key)))
        })
        .count() as u32;
    let batch = max_unavailable.saturating_sub(down_elsewhere).max(1) as usize;

    let mut waves = Vec::new();
    // A missing group is made when something will use it: a node in the fleet's VPC, or a
    // launch (which makes it anyway).
    let needs_group = coin_nodes.iter().any(|n| {
        n.vpc_id
            .as_deref()
            .is_none_or(|v| v == desired.fleet.vpc_id.as_str())
    }) || zones.iter().any(|(_, d, _)| {
        d.iter()
            .flatten()
            .any(|s| matches!(s.action, Action::Launch { .. }))
    });
    let network = match coin_group {
        Some(None) if !needs_group => None,
        Some(None) => Some(Action::SetCoinNetwork {
            group_id: None,
            name: net.group_name(),
            add: net.rules.clone(),
            revoke: vec![],
        }),
        Some(Some(g)) => {
            let change = net.diff(&g.rules);
            (!change.is_empty()).then(|| Action::SetCoinNetwork {
                group_id: Some(g.group_id.clone()),
                name: net.group_name(),
                add: change.add,
                revoke: change.revoke,
            })
        }
        None => None,
    };
    if let Some(action) = network {
        let reason = match &action {
            Action::SetCoinNetwork { group_id: None, .. } => {
                "the coin has no security group of its own".to_string()
            }
            _ => "the group's inbound rules differ from the coin's ports and network.rpc_from"
                .to_string(),
        };
        waves.push(Wave {
            kind: WaveKind::Network,
            zone: None,
            part: 1,
            parts: 1,
            steps: vec![Step {
                node: None,
                instance_id: None,
                action,
                reason,
            }],
        });
    }
    let mut estimate_ms = 0;
    for (zone, steps) in repairs {
        estimate_ms += steps
            .iter()
            .map(|s| s.action.estimate_ms())
            .max()
            .unwrap_or(0);
        waves.push(Wave {
            kind: WaveKind::Repair,
            zone: Some(zone),
            part: 1,
            parts: 1,
            steps,
        });
    }
    for (zone, disruptive, quiet) in zones {
        let parts = disruptive.len().div_ceil(batch) as u32;
        if disruptive.is_empty() {
            if !quiet.is_empty() {
                waves.push(Wave {
                    kind: WaveKind::Rollout,
                    zone: Some(zone),
                    part: 1,
                    parts: 1,
                    steps: quiet,
                });
            }
            continue;
        }
        let mut quiet = Some(quiet);
        // Moved, not copied, into their waves.
        let mut nodes = disruptive.into_iter();
        for i in 0..parts {
            let b: Vec<Vec<Step>> = nodes.by_ref().take(batch).collect();
            estimate_ms += b
                .iter()
                .map(|node| node.iter().map(|s| s.action.estimate_ms()).sum::<u64>())
                .max()
                .unwrap_or(0);
            let mut steps: Vec<Step> = quiet.take().unwrap_or_default();
            steps.extend(b.into_iter().flatten());
            waves.push(Wave {
                kind: WaveKind::Rollout,
                zone: Some(zone.clone()),
                part: i + 1,
                parts,
                steps,
            });
        }
        estimate_ms += coin.rollout.bake.0.as_millis() as u64;
    }
    let n_retire = retire.len();
    let rw = retire_waves(retire, batch);
    estimate_ms += parallel_waves_ms(&rw);
    waves.extend(rw);
    if !cleanup.is_empty() {
        waves.push(Wave {
            kind: WaveKind::Cleanup,
            zone: None,
            part: 1,
            parts: 1,
            steps: cleanup,
        });
    }

    refusals.extend(secret_refusal(coin, observed, &waves));

    let class = if unknown_plain || (known_class == Class::None && unknown_confirm) {
        known_class.max(Class::Unknown)
    } else {
        known_class
    };
    let mut reasons = Vec::new();
    if needs_approval(coin.rollout.approval, class) {
        reasons.push(ApprovalReason::VersionChange {
            class,
            from: from_versions.iter().cloned().collect(),
            to: coin.version.clone(),
            policy: coin.rollout.approval,
        });
    }
    if n_retire > 0 {
        reasons.push(ApprovalReason::Retire { nodes: n_retire });
    }
    let n_replace = waves
        .iter()
        .flat_map(|w| &w.steps)
        // An interrupted replacement resumes without asking again: its node is down.
        .filter(|s| {
            matches!(s.action, Action::Replace { ref cause } if !matches!(cause, ReplaceCause::Resume))
        })
        .count();
    if n_replace > 0 && coin.rollout.approval != Approval::None {
        reasons.push(ApprovalReason::Replace {
            nodes: n_replace,
            policy: coin.rollout.approval,
        });
    }
    CoinPlan {
        coin: coin.name.clone(),
        target: Some(coin.version.clone()),
        from_versions: from_versions.into_iter().collect(),
        class,
        approval: (!reasons.is_empty()).then_some(ApprovalNeed { reasons }),
        max_unavailable,
        waves,
        refusals,
        unjudged,
        estimate_ms,
    }
}

/// What only a new instance of `n` can take, if anything: fleet.yaml's `node_ami` is not
/// the one it was launched from, or the zone's subnet is not its own.
fn replace_cause(desired: &Desired, zone: &Zone, n: &ObservedNode) -> Option<ReplaceCause> {
    let ami = desired.fleet.node_ami.as_str();
    let subnet = desired.fleet.subnets.get(zone).map(|s| s.as_str());
    match (n.image_id.as_deref(), n.subnet_id.as_deref()) {
        (Some(have), _) if have != ami => Some(ReplaceCause::Ami {
            from: have.to_string(),
            to: ami.to_string(),
        }),
        (_, Some(have)) if subnet.is_some_and(|s| s != have) => Some(ReplaceCause::Subnet {
            from: have.to_string(),
            to: subnet.unwrap_or_default().to_string(),
        }),
        _ => None,
    }
}

/// The coin's secret is read by its nodes at every boot and at each reconfiguration
/// (`fleet-node bootstrap`, `apply-config`): a plan with such a step for a coin whose secret
/// cannot be read is refused, before any node depends on it.
fn secret_refusal(coin: &Coin, observed: &Observed, waves: &[Wave]) -> Option<Refusal> {
    let name = coin.secrets.as_ref()?;
    let state = observed.secrets.as_ref()?.get(name.as_str())?;
    let why = match state {
        SecretState::Exists => return None,
        SecretState::Missing => "does not exist",
        SecretState::ScheduledForDeletion => "is scheduled for deletion",
    };
    let needing = waves
        .iter()
        .flat_map(|w| &w.steps)
        .filter(|s| {
            matches!(
                s.action,
                Action::Launch { .. }
                    | Action::Replace { .. }
                    | Action::UndoReplace { .. }
                    | Action::FinishRestore { .. }
                    | Action::Reconfigure { .. }
                    | Action::ChangeType { .. }
                    | Action::Start { .. }
            )
        })
        .count();
    (needing > 0).then(|| Refusal {
        node: None,
        reason: format!(
            "{}: secret {name} {why} in Secrets Manager, and the nodes read it at every boot and reconfiguration ({needing} step{} of this plan boot or reconfigure one): create or restore it, or change `secrets`",
            coin.file,
            plural(needing)
        ),
    })
}

/// Rough duration of waves run one after the other, each as long as its slowest step.
fn parallel_waves_ms(waves: &[Wave]) -> u64 {
    waves
        .iter()
        .map(|w| {
            w.steps
                .iter()
                .map(|s| s.action.estimate_ms())
                .max()
                .unwrap_or(0)
        })
        .sum()
}

/// The plan of a coin gone from the repository: only retirements, one node at a time, always
/// approved by a person.
pub(super) fn plan_removed(coin: CoinName, steps: Vec<Step>) -> CoinPlan {
    let nodes = steps.len();
    let waves = retire_waves(steps, 1);
    CoinPlan {
        coin,
        target: None,
        from_versions: vec![],
        class: Class::None,
        approval: Some(ApprovalNeed {
            reasons: vec![ApprovalReason::RemovedCoin { nodes }],
        }),
        max_unavailable: 1,
        estimate_ms: parallel_waves_ms(&waves),
        waves,
        refusals: vec![],
        unjudged: vec![],
    }
}

/// Retirements grouped by zone (sorted), `batch` nodes at a time.
fn retire_waves(steps: Vec<Step>, batch: usize) -> Vec<Wave> {
    let mut by_zone: BTreeMap<Option<Zone>, Vec<Step>> = BTreeMap::new();
    for s in steps {
        by_zone
            .entry(s.node.as_ref().map(|k| k.zone.clone()))
            .or_default()
            .push(s);
    }
    let mut waves = Vec::new();
    for (zone, mut steps) in by_zone {
        steps.sort_by(|a, b| a.node.cmp(&b.node));
        let batch = batch.max(1);
        let parts = steps.len().div_ceil(batch) as u32;
        let mut steps = steps.into_iter();
        for i in 0..parts {
            waves.push(Wave {
                kind: WaveKind::Retire,
                zone: zone.clone(),
                part: i + 1,
                parts,
                steps: steps.by_ref().take(batch).collect(),
            });
        }
    }
    waves
}
