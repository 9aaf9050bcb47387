//! The simulated fleet: the embedded default provider. In-process, deterministic, driven by the
//! [`Clock`] passed in, and persisted in the state directory so that separate CLI runs see one
//! world ([`world`] holds the world and its rules; this module the provider in front of it and
//! the prober that asks its nodes).
//!
//! It mirrors the AWS provider call for call (the same operation names, in the same order,
//! counted the same way), so faults are injected by operation name for both, and the
//! conformance suite runs the same cases against each.
//!
//! The simulator must never be kinder than AWS: each primitive is one simulated API call,
//! throttled and failed by injected faults exactly where AWS would.

use super::commands::{
    is_active_command, reconfigure_command, restart_command, start_command, stop_command,
    upgrade_command,
};
use super::protocol::{InstanceFacts, InstanceRecord, confirm_marked, run_marked};
use super::*;
use crate::network::{CoinNetwork, ObservedGroup};
pub use world::{ChainParams, CommandRecord, MAX_ATTEMPTS, SimConfig, SimFault};
use world::{
    Daemon, GROUPS_PAGE, INSTANCES_PAGE, RECORDS_PAGE, SNAPSHOTS_PAGE, VOLUMES_PAGE, World,
};

mod world;

use crate::clock::{Clock, Millis};
use crate::health::{ChainStatus, ProbeError, ProbeTarget, Prober};
use fleet_repo_schema::Desired;
use fleet_repo_schema::values::InstanceType;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The simulated provider. Cheap to clone; clones share one world.
#[derive(Debug, Clone)]
pub struct SimProvider {
    world: Arc<Mutex<World>>,
    clock: Arc<dyn Clock>,
    path: Option<PathBuf>,
}

/// The state file inside the state directory.
pub const STATE_FILE: &str = "sim.json";

impl SimProvider {
    /// An empty world kept in memory only.
    pub fn new(clock: Arc<dyn Clock>, config: SimConfig) -> SimProvider {
        let epoch_ms = clock.now_ms();
        SimProvider {
            world: Arc::new(Mutex::new(World {
                config,
                epoch_ms,
                ..World::default()
            })),
            clock,
            path: None,
        }
    }

    /// The world persisted in `state_dir` (created, or loaded when it exists).
    pub fn open(
        state_dir: &Path,
        clock: Arc<dyn Clock>,
        config: SimConfig,
    ) -> Result<SimProvider, ProviderError> {
        let path = state_dir.join(STATE_FILE);
        let world = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<World>(&bytes).map_err(|e| {
                ProviderError::Setup(format!(
                    "{}: not a simulator state file ({e}); move it away to start a new simulated fleet",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => World {
                config,
                epoch_ms: clock.now_ms(),
                ..World::default()
            },
            Err(e) => {
                return Err(ProviderError::Setup(format!(
                    "{}: cannot read: {e}",
                    path.display()
                )));
            }
        };
        std::fs::create_dir_all(state_dir).map_err(|e| {
            ProviderError::Setup(format!("{}: cannot create: {e}", state_dir.display()))
        })?;
        let p = SimProvider {
            world: Arc::new(Mutex::new(world)),
            clock,
            path: Some(path),
        };
        p.save(&p.lock())?;
        Ok(p)
    }

    /// The world saved in `state_dir` by another process, read-only (saving is a no-op):
    /// what a test's monitor reads while a reconciler runs.
    pub fn read_only(
        state_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<SimProvider, ProviderError> {
        let path = state_dir.join(STATE_FILE);
        let bytes = std::fs::read(&path)
            .map_err(|e| ProviderError::Setup(format!("{}: cannot read: {e}", path.display())))?;
        let world = serde_json::from_slice::<World>(&bytes).map_err(|e| {
            ProviderError::Setup(format!(
                "{}: not a simulator state file ({e})",
                path.display()
            ))
        })?;
        Ok(SimProvider {
            world: Arc::new(Mutex::new(world)),
            clock,
            path: None,
        })
    }

    /// Whether the world has no instance at all (a new simulated account).
    pub fn is_empty(&self) -> bool {
        self.lock().instances.is_empty()
    }

    /// Every live instance: (id, node key, chain status now or why it is unreachable).
    pub fn nodes_now(&self) -> Vec<(String, Option<NodeKey>, Result<ChainStatus, String>)> {
        let w = self.lock();
        let now = self.clock.now_ms();
        w.instances
            .values()
            .filter(|i| !i.terminated)
            .map(|i| {
                (
                    i.id.clone(),
                    tags::node_key(&i.tags).ok(),
                    w.status(&i.id, now),
                )
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock would be a bug; the world is still consistent
        // between calls, so keep going with it.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, w: &World) -> Result<(), ProviderError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(w).map_err(|e| ProviderError::Setup(e.to_string()))?;
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| ProviderError::Setup(format!("{}: cannot write: {e}", path.display())))
    }

    /// Remove (`exists: false`) or restore a secret of the simulated account.
    pub fn set_secret(&self, name: &str, exists: bool) {
        let mut w = self.lock();
        if exists {
            w.missing_secrets.remove(name);
        } else {
            w.missing_secrets.insert(name.to_string());
        }
        let _ = self.save(&w);
    }

    /// Inject a fault.
    pub fn inject(&self, fault: SimFault) {
        let mut w = self.lock();
        let fault = match fault {
            SimFault::FailsStatusChecks {
                key,
                system,
                instance_id: None,
            } => SimFault::FailsStatusChecks {
                instance_id: w.holder(&key),
                key,
                system,
            },
            f => f,
        };
        w.faults.push(fault);
        let _ = self.save(&w);
    }

    /// Remove every fault.
    pub fn clear_faults(&self) {
        let mut w = self.lock();
        w.faults.clear();
        let _ = self.save(&w);
    }

    /// The SSM commands run so far, in order.
    pub fn commands(&self) -> Vec<CommandRecord> {
        self.lock().commands.clone()
    }

    /// (calls, attempts) made so far.
    pub fn call_counts(&self) -> (u64, u64) {
        let w = self.lock();
        (w.calls, w.attempts)
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The instance holding `key`'s slot now (not a replacement in the making).
    pub fn instance_of(&self, key: &NodeKey) -> Option<String> {
        self.lock().holder(key)
    }

    /// The tip of `coin`'s chain now.
    pub fn tip(&self, coin: &str) -> u64 {
        let w = self.lock();
        w.tip(coin, self.clock.now_ms())
    }

    /// The instance a probe of `target` reaches, as the real probe's resolver dials it: its
    /// `address` when it has one, else whatever instance the record of its DNS name points
    /// at (which need not be `target.instance_id`). Err when nothing would answer.
    pub fn resolve(&self, target: &ProbeTarget) -> Result<String, String> {
        let w = self.lock();
        let ip = match &target.address {
            Some(ip) => ip.clone(),
            None => w
                .dns
                .values()
                .find_map(|z| z.get(&target.dns_name))
                .and_then(|r| r.values.first().cloned())
                .ok_or_else(|| format!("no DNS record named {}", target.dns_name))?,
        };
        w.instances
            .values()
            .filter(|i| !i.terminated && i.private_ip == ip)
            .map(|i| i.id.clone())
            .min()
            .ok_or_else(|| format!("no instance at {ip}"))
    }

    /// What the node's daemon reports now, as a probe would see it; Err when unreachable.
    pub fn chain_status(&self, instance_id: &str) -> Result<ChainStatus, String> {
        let w = self.lock();
        w.status(instance_id, self.clock.now_ms())
    }

    /// An operator upgrades `instance_id` by hand, as the seed does over SSM (`systemctl stop
    /// node@* && systemctl start node@<version>`): the daemon restarts at `version`, no tag
    /// changes and no unit is enabled (a boot brings the enabled one back). Not fleet's
    /// doing: no call is counted.
    pub fn start_by_hand(&self, instance_id: &str, version: &str) -> Result<(), ProviderError> {
        let mut w = self.lock();
        let now = self.clock.now_ms();
        let height = w.blocks_now(instance_id, now);
        let i = w
            .instances
            .get_mut(instance_id)
            .filter(|i| !i.terminated && !i.stopped)
            .ok_or_else(|| ProviderError::NotFound {
                instance: instance_id.to_string(),
            })?;
        let d = &mut i.daemon;
        if d.enabled && d.enabled_version.is_none() {
            d.enabled_version = d.version.clone();
        }
        d.version = Some(version.to_string());
        d.started_ms = now;
        d.start_height = height;
        d.stopped = false;
        self.save(&w)
    }

    /// An EC2 reboot of `instance_id` (a maintenance event, `sudo reboot`): the instance is
    /// back after `boot_ms`, its daemon only if its unit is enabled.
    pub fn reboot(&self, instance_id: &str) -> Result<(), ProviderError> {
        self.with(|w, now| {
            let height = w.blocks_now(instance_id, now);
            let i = w
                .instances
                .get_mut(instance_id)
                .filter(|i| !i.terminated)
                .ok_or_else(|| ProviderError::NotFound {
                    instance: instance_id.to_string(),
                })?;
            i.daemon.start_height = height;
            w.boot(instance_id, now);
            Ok(())
        })
    }

    /// Create every node of `desired` at once, running `versions[coin]` (or the desired
    /// version), in sync with its chain: a fleet as it was before a change.
    pub fn seed(
        &self,
        desired: &Desired,
        versions: &BTreeMap<String, Version>,
    ) -> Result<(), ProviderError> {
        let mut w = self.lock();
        let now = self.clock.now_ms();
        for coin in desired.coins.values() {
            let version = versions.get(coin.name.as_str()).unwrap_or(&coin.version);
            let mut c = coin.clone();
            c.version = version.clone();
            // Seeding is not the fleet's doing: it makes no calls.
            let calls = (w.calls, w.attempts);
            let (group, _) =
                w.ensure_group(&crate::network::CoinNetwork::of(&desired.fleet, &c))?;
            (w.calls, w.attempts) = calls;
            for slot in &coin.nodes {
                let spec = LaunchSpec::new(&desired.fleet, &c, slot, None)?;
                let tip = w.tip(coin.name.as_str(), now);
                let id = w.create_instance(&spec, &group, now, tip, true);
                let ip = w.instances[&id].private_ip.clone();
                w.upsert_dns(&spec.dns.hosted_zone_id, &spec.dns.name, &ip);
            }
        }
        self.save(&w)
    }

    /// Run `f` on the world with call accounting and save afterwards.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut World, Millis) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut w = self.lock();
        let now = self.clock.now_ms();
        let r = f(&mut w, now);
        self.save(&w)?;
        r
    }
}

fn pages(n: usize, size: usize) -> u64 {
    n.div_ceil(size).max(1) as u64
}

/// The protocol's primitives, each one simulated API call as on AWS.
#[async_trait]
impl InstanceRecord for SimProvider {
    async fn read(&self, node: &NodeRef) -> Result<InstanceFacts, ProviderError> {
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            let i = w.live(node)?;
            Ok(InstanceFacts {
                tags: i.tags.clone(),
                state: w.state(i, now),
                instance_type: i.instance_type.clone(),
            })
        })
    }

    async fn write_tags(&self, node: &NodeRef, t: &[(&str, &str)]) -> Result<(), ProviderError> {
        self.with(|w, _| {
            w.call("CreateTags")?;
            let i = w.live_mut(node)?;
            for (k, v) in t {
                i.tags.insert(k.to_string(), v.to_string());
            }
            Ok(())
        })
    }

    async fn delete_tag(&self, node: &NodeRef, key: &str) -> Result<(), ProviderError> {
        self.with(|w, _| {
            w.call("DeleteTags")?;
            w.live_mut(node)?.tags.remove(key);
            Ok(())
        })
    }
}

/// The simulator's nodes, asked through the simulator, as the RPC probes ask real ones: at
/// the address the real resolver would dial ([`SimProvider::resolve`]), so that a probe by
/// a name that points elsewhere reaches what a real one would.
#[derive(Debug, Clone)]
pub struct SimProber(pub SimProvider);

#[async_trait]
impl Prober for SimProber {
    async fn probe(&self, target: &ProbeTarget) -> Result<ChainStatus, ProbeError> {
        let unreachable = |detail| ProbeError::Unreachable {
            node: target.key.to_string(),
            addr: target
                .address
                .clone()
                .unwrap_or_else(|| target.dns_name.clone()),
            detail,
        };
        let id = self.0.resolve(target).map_err(unreachable)?;
        let mut status = self.0.chain_status(&id).map_err(unreachable)?;
        // The version is read where the real probe reads one, and only then.
        let h = &target.health;
        let reads = h.daemon_version
            && match h.probe {
                fleet_repo_schema::Probe::Http => {
                    h.http.as_ref().is_some_and(|x| x.version_pointer.is_some())
                }
                _ => true,
            };
        if !reads {
            status.client = None;
        }
        Ok(status)
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn api_calls(&self) -> u64 {
        self.call_counts().0
    }

    async fn observe(&self, scope: &Scope) -> Result<Observation, ProviderError> {
        let mut w = self.lock();
        let now = self.clock.now_ms();
        let before = w.calls;
        let instances: Vec<ObservedInstance> = w
            .instances
            .values()
            .filter(|i| !i.terminated)
            .map(|i| {
                ObservedInstance::new(
                    i.id.clone(),
                    i.tags.clone(),
                    w.state(i, now),
                    i.instance_type.clone(),
                    Some(i.private_ip.clone()),
                    i.data_volume
                        .as_ref()
                        .and_then(|v| w.volumes.get(v))
                        .map(|v| ObservedVolume {
                            volume_id: v.id.clone(),
                            size_gb: v.size_gb,
                            snapshot_id: v.snapshot_id.clone(),
                        }),
                )
                .with_security_groups(i.security_groups.clone())
                .with_vpc(i.vpc_id.clone())
                .with_image(i.ami.clone())
                .with_subnet(i.subnet_id.clone())
                .with_public_ip(i.public_ip)
            })
            .map(|o| {
                let root = w.instances.get(&o.instance_id).and_then(|i| i.root.clone());
                match root {
                    Some((volume_id, size_gb)) => o.with_root_volume(ObservedVolume {
                        volume_id,
                        size_gb,
                        snapshot_id: None,
                    }),
                    None => o,
                }
            })
            .collect();
        let zone_records: Vec<DnsRecord> = w
            .dns
            .get(scope.hosted_zone_id.as_str())
            .map(|z| z.values().cloned().collect())
            .unwrap_or_default();
        let n_records = zone_records.len();
        let dns: Vec<DnsRecord> = zone_records
            .into_iter()
            .filter(|r| tags::node_record_coin(&r.name, &scope.internal_domain).is_some())
            .collect();
        let snapshots: Vec<SnapshotInfo> = w.snapshots.values().map(|s| s.info.clone()).collect();
        let n_volumes = instances.iter().filter(|i| i.data_volume.is_some()).count();
        let groups: Vec<ObservedGroup> = w
            .groups
            .values()
            .map(|g| ObservedGroup {
                group_id: g.id.clone(),
                name: g.name.clone(),
                coin: Some(g.coin.clone()),
                vpc_id: g.vpc_id.clone(),
                rules: g.rules.clone(),
            })
            .collect();
        let secrets: BTreeMap<String, SecretState> = scope
            .secrets
            .iter()
            .map(|s| {
                let state = if w.missing_secrets.contains(s) {
                    SecretState::Missing
                } else {
                    SecretState::Exists
                };
                (s.clone(), state)
            })
            .collect();
        for (op, n) in [
            ("DescribeInstances", pages(instances.len(), INSTANCES_PAGE)),
            ("ListSecrets", scope.secrets.len().div_ceil(10) as u64),
            ("DescribeSecurityGroups", pages(groups.len(), GROUPS_PAGE)),
            ("DescribeVolumes", pages(n_volumes, VOLUMES_PAGE)),
            ("DescribeSnapshots", pages(snapshots.len(), SNAPSHOTS_PAGE)),
            ("ListResourceRecordSets", pages(n_records, RECORDS_PAGE)),
        ] {
            for _ in 0..n {
                w.call(op)?;
            }
        }
        let calls = w.calls - before;
        drop(w);
        Ok(Observation::new(instances, dns, snapshots, calls)
            .with_groups(groups)
            .with_secrets(secrets))
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(String, Outcome), ProviderError> {
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            let key = NodeKey::of(&spec.slot);
            let existing = w
                .instances
                .values()
                .filter(|i| !i.terminated && tags::node_key(&i.tags).ok().as_ref() == Some(&key))
                .map(|i| (i.id.clone(), i.private_ip.clone()))
                .min();
            let (id, outcome) = match existing {
                Some((id, _)) => (id, Outcome::AlreadyDone),
                None => {
                    let (group, _) = w.ensure_group(&spec.network)?;
                    w.call("RunInstances")?;
                    if w.faults.iter().any(|f| matches!(f, SimFault::LaunchFailsInZone { zone } if zone.as_str() == spec.slot.zone.as_str())) {
                        return Err(ProviderError::Api {
                            op: "ec2:RunInstances".into(),
                            code: "InsufficientInstanceCapacity".into(),
                            message: format!(
                                "We currently do not have sufficient {} capacity in the Availability Zone you requested ({}).",
                                spec.instance_type, spec.slot.zone
                            ),
                            instance: None,
                        });
                    }
                    let height = match &spec.snapshot_id {
                        Some(s) => w.snapshots.get(s).map(|s| s.height).ok_or_else(|| {
                            ProviderError::Api {
                                op: "ec2:RunInstances".into(),
                                code: "InvalidSnapshot.NotFound".into(),
                                message: format!("The snapshot '{s}' does not exist."),
                                instance: None,
                            }
                        })?,
                        None => 0,
                    };
                    (
                        w.create_instance(spec, &group, now, height, false),
                        Outcome::Done,
                    )
                }
            };
            let ip = w.instances[&id].private_ip.clone();
            let exists = w
                .dns
                .get(&spec.dns.hosted_zone_id)
                .and_then(|z| z.get(&spec.dns.name))
                .is_some_and(|r| r.values == [ip.clone()]);
            if !exists {
                w.call("ChangeResourceRecordSets")?;
                w.upsert_dns(&spec.dns.hosted_zone_id, &spec.dns.name, &ip);
            }
            let outcome = if outcome == Outcome::AlreadyDone && exists {
                Outcome::AlreadyDone
            } else {
                Outcome::Done
            };
            Ok((id, outcome))
        })
    }

    async fn upgrade_pinned(
        &self,
        node: &NodeRef,
        version: &Version,
        pin: ImagePin<'_>,
    ) -> Result<Outcome, ProviderError> {
        let command = upgrade_command(version, pin)?;
        let step = PendingStep::Upgrade {
            to: version.to_string(),
        };
        run_marked(self, node, &step, |_| async {
            self.with(|w, now| {
                let height = w.blocks_now(&node.instance_id, now);
                // A failed command (a failed pull) leaves the old daemon running.
                w.run_command(node, &command, now)?;
                // `fleet-node upgrade` enables the new unit and disables the others; its
                // `systemctl start` restarts nothing already running at that version (a
                // daemon started by hand at it).
                let d = &mut w.live_mut(node)?.daemon;
                let already = !d.stopped && d.version.as_deref() == Some(version.as_str());
                *d = Daemon {
                    version: Some(version.to_string()),
                    started_ms: if already { d.started_ms } else { now },
                    start_height: if already { d.start_height } else { height },
                    stopped: false,
                    enabled: true,
                    enabled_version: None,
                };
                w.daemon_started(node, version.as_str());
                Ok(())
            })
        })
        .await
    }

    async fn reconfigure(
        &self,
        node: &NodeRef,
        version: &Version,
        files: &crate::node_config::NodeFiles,
        restart: bool,
    ) -> Result<Outcome, ProviderError> {
        let command = reconfigure_command(version, files, restart)?;
        let step = PendingStep::reconfigure(files);
        run_marked(self, node, &step, |_| async {
            self.with(|w, now| {
                let height = w.blocks_now(&node.instance_id, now);
                // A failed command (a file the node refuses) changes nothing it runs.
                w.run_command(node, &command, now)?;
                w.wrote_config(node, files, now)?;
                let d = &mut w.live_mut(node)?.daemon;
                // `fleet-node apply-config` enables the unit of the version fleet recorded
                // (and the every-boot set-up).
                if d.version.as_deref() != Some(version.as_str()) && d.enabled_version.is_none() {
                    d.enabled_version = Some(version.to_string());
                }
                d.enabled = true;
                if restart {
                    d.started_ms = now;
                    d.start_height = height;
                    d.stopped = false;
                }
                Ok(())
            })
        })
        .await
    }

    async fn set_tags(
        &self,
        node: &NodeRef,
        volume_id: Option<&str>,
        change: &TagChange,
    ) -> Result<Outcome, ProviderError> {
        // (The simulator does not keep volumes' tags: `volume_id` is EC2's business.)
        let _ = volume_id;
        self.with(|w, _| {
            w.call("DescribeInstances")?;
            let i = w.live(node)?;
            let set = !change.set.iter().all(|(k, v)| i.tags.get(k) == Some(v));
            let unset = change.unset.iter().any(|k| i.tags.contains_key(k));
            let record = i.tags.get(tags::COIN_TAGS) != Some(&change.record);
            if !set && !unset && !record {
                return Ok(Outcome::AlreadyDone);
            }
            if set {
                w.call("CreateTags")?;
                let i = w.live_mut(node)?;
                i.tags
                    .extend(change.set.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            if unset {
                w.call("DeleteTags")?;
                let i = w.live_mut(node)?;
                i.tags.retain(|k, _| !change.unset.contains(k));
            }
            if record {
                w.call("CreateTags")?;
                w.live_mut(node)?
                    .tags
                    .insert(tags::COIN_TAGS.into(), change.record.clone());
            }
            Ok(Outcome::Done)
        })
    }

    async fn ensure_coin_network(
        &self,
        net: &CoinNetwork,
    ) -> Result<(String, Outcome), ProviderError> {
        self.with(|w, _| w.ensure_group(net))
    }

    async fn set_security_groups(
        &self,
        node: &NodeRef,
        groups: &[String],
    ) -> Result<Outcome, ProviderError> {
        self.with(|w, _| {
            w.call("DescribeInstances")?;
            let mut want = groups.to_vec();
            want.sort();
            let mut have = w.live(node)?.security_groups.clone();
            have.sort();
            if have == want {
                return Ok(Outcome::AlreadyDone);
            }
            w.call("ModifyInstanceAttribute")?;
            w.live_mut(node)?.security_groups = want;
            Ok(Outcome::Done)
        })
    }

    async fn record_version(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        InstanceRecord::write_tags(self, node, &[(tags::VERSION, version.as_str())]).await
    }

    async fn record_image_runs(&self, node: &NodeRef, value: &str) -> Result<(), ProviderError> {
        InstanceRecord::write_tags(self, node, &[(tags::IMAGE_RUNS, value)]).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<Outcome, ProviderError> {
        self.with(|w, _| {
            w.call("DeleteSnapshot")?;
            Ok(match w.snapshots.remove(snapshot_id) {
                Some(_) => Outcome::Done,
                None => Outcome::AlreadyDone,
            })
        })
    }

    async fn status_checks(&self) -> Result<BTreeMap<String, StatusChecks>, ProviderError> {
        self.with(|w, now| {
            let running: Vec<(String, Option<NodeKey>)> = w
                .instances
                .values()
                .filter(|i| w.state(i, now) == InstanceState::Running)
                .map(|i| (i.id.clone(), tags::node_key(&i.tags).ok()))
                .collect();
            for _ in 0..pages(running.len(), 1000) {
                w.call("DescribeInstanceStatus")?;
            }
            let ok = StatusChecks {
                system: CheckState::Ok,
                instance: CheckState::Ok,
            };
            Ok(running
                .into_iter()
                .map(|(id, key)| {
                    let _ = &key;
                    let failing = w.fails_checks(&id);
                    let checks = match failing {
                        None => ok,
                        Some(true) => StatusChecks {
                            system: CheckState::Impaired,
                            instance: CheckState::Ok,
                        },
                        Some(false) => StatusChecks {
                            system: CheckState::Ok,
                            instance: CheckState::Impaired,
                        },
                    };
                    (id, checks)
                })
                .collect())
        })
    }

    async fn disk_usage(
        &self,
        instance_ids: &[String],
        since_ms: Millis,
    ) -> Result<BTreeMap<String, Vec<DiskPoint>>, ProviderError> {
        const HOUR: u64 = disk_metric::PERIOD_SECS as u64 * 1000;
        self.with(|w, now| {
            // The agent reports from running instances whose host answers; a volume's
            // series is what it reported while attached to one of them.
            let reporting: Vec<(&String, &world::Volume, f64)> = instance_ids
                .iter()
                .filter_map(|id| {
                    let i = w.instances.get(id)?;
                    if w.state(i, now) != InstanceState::Running {
                        return None;
                    }
                    let key = tags::node_key(&i.tags).ok();
                    if w.fails_checks(id).is_some() {
                        return None;
                    }
                    let v = w.volumes.get(i.data_volume.as_ref()?)?;
                    let coin = key.map(|k| k.coin.to_string()).unwrap_or_default();
                    Some((id, v, w.params(&coin).disk_gb_per_day))
                })
                .collect();
            let series: BTreeMap<String, Vec<DiskPoint>> = reporting
                .into_iter()
                .filter_map(|(id, v, rate)| {
                    let first = since_ms.div_ceil(HOUR) * HOUR;
                    let points: Vec<DiskPoint> = (first..=now)
                        .step_by(HOUR as usize)
                        .filter_map(|t| {
                            Some(DiskPoint {
                                at_ms: t,
                                used_percent: v.used_percent_at(t, rate)?,
                            })
                        })
                        .collect();
                    (!points.is_empty()).then(|| (id.clone(), points))
                })
                .collect();
            for _ in 0..pages(series.len(), 500) {
                w.call("ListMetrics")?;
            }
            for _ in 0..pages(series.len(), 500) {
                w.call("GetMetricData")?;
            }
            Ok(series)
        })
    }

    async fn restart_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        let command = restart_command(version)?;
        self.with(|w, now| {
            let height = w.blocks_now(&node.instance_id, now);
            w.unit_command(node, version, &command, now)?;
            // `systemctl restart`: the daemon starts over where its chain is, and whatever
            // had hung it (lost peers) is gone; a daemon that crashes at start crashes again.
            let d = &mut w.live_mut(node)?.daemon;
            d.started_ms = now;
            d.start_height = height;
            d.stopped = false;
            d.version = Some(version.to_string());
            d.enabled_version = None;
            let key = node.key.clone();
            w.faults
                .retain(|f| !matches!(f, SimFault::Hangs { key: k, .. } if *k == key));
            Ok(())
        })
    }

    async fn stop_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        let command = stop_command(version)?;
        self.with(|w, now| {
            let height = w.blocks_now(&node.instance_id, now);
            w.unit_command(node, version, &command, now)?;
            // Its chain stays where it stopped; nothing answers until it is started.
            let d = &mut w.live_mut(node)?.daemon;
            d.start_height = height;
            d.stopped = true;
            Ok(())
        })
    }

    async fn start_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        let command = start_command(version)?;
        self.with(|w, now| {
            w.unit_command(node, version, &command, now)?;
            let d = &mut w.live_mut(node)?.daemon;
            if d.stopped {
                // It starts where it stopped and catches up from there.
                d.started_ms = now;
                d.stopped = false;
            }
            Ok(())
        })
    }

    async fn confirm_version(
        &self,
        node: &NodeRef,
        version: &Version,
    ) -> Result<bool, ProviderError> {
        let command = is_active_command(version)?;
        let step = PendingStep::Upgrade {
            to: version.to_string(),
        };
        confirm_marked(self, node, &step, |_| async {
            self.with(|w, now| {
                let i = w.live(node)?;
                let active = !i.stopped
                    && !i.daemon.stopped
                    && i.daemon.version.as_deref() == Some(version.as_str());
                // The command's answer is the daemon's real state; injected command
                // failures (FailCommand) are for commands that change something, so not
                // consumed here.
                w.call("SendCommand")?;
                w.call("GetCommandInvocation")?;
                w.commands.push(CommandRecord {
                    at_ms: now,
                    instance_id: node.instance_id.clone(),
                    key: node.key.clone(),
                    command: command.clone(),
                    ok: active,
                });
                Ok(active)
            })
        })
        .await
    }

    async fn replace(
        &self,
        node: &NodeRef,
        spec: &LaunchSpec,
    ) -> Result<(String, Outcome), ProviderError> {
        self.with(|w, now| w.replace(node, spec, now))
    }

    async fn hand_over(
        &self,
        node: &NodeRef,
        dns: &DnsTarget,
    ) -> Result<(String, Outcome), ProviderError> {
        self.with(|w, _| w.hand_over(node, dns))
    }

    async fn undo_replace(&self, node: &NodeRef) -> Result<Outcome, ProviderError> {
        self.with(|w, now| w.undo_replace(node, now))
    }

    async fn grow_volume(&self, node: &NodeRef, size_gb: u32) -> Result<Outcome, ProviderError> {
        self.with(|w, now| w.grow_disk(node, Disk::Data, size_gb, now))
    }

    async fn grow_root_volume(
        &self,
        node: &NodeRef,
        size_gb: u32,
    ) -> Result<Outcome, ProviderError> {
        self.with(|w, now| w.grow_disk(node, Disk::Root, size_gb, now))
    }

    async fn change_instance_type(
        &self,
        node: &NodeRef,
        instance_type: &InstanceType,
    ) -> Result<Outcome, ProviderError> {
        let step = PendingStep::ChangeType {
            to: instance_type.to_string(),
        };
        run_marked(self, node, &step, |facts| async move {
            self.with(|w, now| {
                let height = w.blocks_now(&node.instance_id, now);
                if facts.state != InstanceState::Stopped {
                    w.call("StopInstances")?;
                    let i = w.live_mut(node)?;
                    i.stopped = true;
                    i.daemon.stopped = true;
                    i.daemon.start_height = height;
                }
                w.call("ModifyInstanceAttribute")?;
                w.live_mut(node)?.instance_type = instance_type.to_string();
                w.call("StartInstances")?;
                w.boot(&node.instance_id, now);
                Ok(())
            })
        })
        .await
    }

    async fn restore_data(&self, node: &NodeRef, reason: &str) -> Result<Outcome, ProviderError> {
        let snapshot = self.with(|w, _| w.restore_of(node, reason))?;
        self.finish_restore(node, &snapshot).await
    }

    async fn finish_restore(
        &self,
        node: &NodeRef,
        snapshot: &str,
    ) -> Result<Outcome, ProviderError> {
        let step = PendingStep::Restore {
            snapshot: snapshot.to_string(),
        };
        run_marked(self, node, &step, |_| async {
            self.with(|w, now| w.restore_act(node, snapshot, now))
        })
        .await
    }

    async fn snapshot(&self, node: &NodeRef, reason: &str) -> Result<String, ProviderError> {
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            w.snapshot_of(node, reason, now)?
                .ok_or_else(|| ProviderError::no_data_volume(node))
        })
    }

    async fn retire(
        &self,
        node: &NodeRef,
        hosted_zone_id: &str,
        dns: &[DnsRecord],
    ) -> Result<Option<String>, ProviderError> {
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            let mut snap = None;
            if w.live(node).is_ok() {
                snap = w.snapshot_of(node, "retire", now)?;
                w.call("TerminateInstances")?;
                let i = w.live_mut(node)?;
                i.terminated = true;
                if let Some(v) = i.data_volume.take() {
                    w.volumes.remove(&v);
                }
            }
            for r in dns {
                let present = w.dns.get(hosted_zone_id).and_then(|z| z.get(&r.name)) == Some(r);
                if present {
                    w.call("ChangeResourceRecordSets")?;
                    if let Some(z) = w.dns.get_mut(hosted_zone_id) {
                        z.remove(&r.name);
                    }
                }
            }
            Ok(snap)
        })
    }

    async fn set_dns(&self, node: &NodeRef, target: &DnsTarget) -> Result<Outcome, ProviderError> {
        self.with(|w, _| {
            w.call("DescribeInstances")?;
            let ip = w.live(node)?.private_ip.clone();
            let same = w
                .dns
                .get(&target.hosted_zone_id)
                .and_then(|z| z.get(&target.name))
                .is_some_and(|r| r.values == [ip.clone()]);
            if same {
                return Ok(Outcome::AlreadyDone);
            }
            w.call("ChangeResourceRecordSets")?;
            w.upsert_dns(&target.hosted_zone_id, &target.name, &ip);
            Ok(Outcome::Done)
        })
    }

    async fn delete_dns(
        &self,
        hosted_zone_id: &str,
        record: &DnsRecord,
    ) -> Result<Outcome, ProviderError> {
        self.with(|w, _| {
            let present =
                w.dns.get(hosted_zone_id).and_then(|z| z.get(&record.name)) == Some(record);
            if !present {
                return Ok(Outcome::AlreadyDone);
            }
            w.call("ChangeResourceRecordSets")?;
            if let Some(z) = w.dns.get_mut(hosted_zone_id) {
                z.remove(&record.name);
            }
            Ok(Outcome::Done)
        })
    }
}
