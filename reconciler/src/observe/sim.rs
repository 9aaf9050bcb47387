//! The simulated fleet: instances, volumes, snapshots, DNS and, per coin, a chain whose tip
//! advances at the coin's block time. In-process, deterministic, driven by the [`Clock`]
//! passed in, and persisted in the state directory so that separate CLI runs see one world.
//!
//! It mirrors the AWS provider call for call (the same operation names, in the same order,
//! counted the same way), so faults are injected by operation name for both, and the
//! conformance suite runs the same cases against each.
//!
//! A restarted daemon is unreachable for `start_delay_ms`, then catches up like a real node:
//! headers first (`header_rate` per second), then blocks (`block_rate` per second) until it
//! reaches the tip, reporting `initial_block_download` while it is more than a day behind.

use super::*;
use crate::clock::{Clock, Millis};
use crate::health::ChainStatus;
use fleet_repo_schema::values::InstanceType;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Attempts per call before throttling becomes an error (as the AWS provider's retry policy).
pub const MAX_ATTEMPTS: u32 = 5;
/// DescribeInstances page size (EC2's maximum).
const INSTANCES_PAGE: usize = 1000;
/// DescribeVolumes page size (EC2's maximum).
const VOLUMES_PAGE: usize = 500;
/// DescribeSnapshots page size (EC2's maximum).
const SNAPSHOTS_PAGE: usize = 1000;
/// ListResourceRecordSets page size (Route53's maximum).
const RECORDS_PAGE: usize = 300;

/// How a coin's chain behaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChainParams {
    /// Time between blocks.
    pub block_ms: u64,
    /// Height at the simulation's epoch.
    pub base_height: u64,
    /// Headers a catching-up node learns per second.
    pub header_rate: f64,
    /// Blocks a catching-up node validates per second.
    pub block_rate: f64,
    /// How long a (re)started daemon is unreachable.
    pub start_delay_ms: u64,
}

impl ChainParams {
    /// Plausible figures for well-known coins, a generic chain otherwise.
    pub fn for_coin(name: &str) -> ChainParams {
        let (block_ms, base_height) = match name {
            "bitcoin" => (600_000, 870_000),
            "litecoin" => (150_000, 2_800_000),
            "dogecoin" => (60_000, 5_400_000),
            "ethereum" => (12_000, 21_000_000),
            "monero" => (120_000, 3_250_000),
            "iota" => (10_000, 9_000_000),
            _ => (60_000, 1_000_000),
        };
        ChainParams {
            block_ms,
            base_height,
            header_rate: 20_000.0,
            block_rate: 50.0,
            start_delay_ms: 30_000,
        }
    }
}

/// Settings of a simulated world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Per-coin chain behaviour; coins not listed use [`ChainParams::for_coin`].
    pub chains: BTreeMap<String, ChainParams>,
    /// Time from RunInstances to running.
    pub boot_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            chains: BTreeMap::new(),
            boot_ms: 60_000,
        }
    }
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum SimFault {
    /// The node's daemon never gets past the height it restarted at.
    NeverSyncs {
        /// Node.
        key: NodeKey,
    },
    /// The node's blocks stop at `height`.
    StallAt {
        /// Node.
        key: NodeKey,
        /// Height.
        height: u64,
    },
    /// The next `times` SSM commands (on `key`, or on any node) fail with `stderr`.
    FailCommand {
        /// Node, or any.
        key: Option<NodeKey>,
        /// How many.
        times: u32,
        /// Standard error of the failure.
        stderr: String,
    },
    /// The next `times` attempts of `op` (or of any call) are throttled.
    Throttle {
        /// Operation name (`RunInstances`…), or any.
        op: Option<String>,
        /// How many attempts.
        times: u32,
    },
    /// Launches in `zone` fail with InsufficientInstanceCapacity.
    LaunchFailsInZone {
        /// Zone.
        zone: String,
    },
    /// The next `times` calls of `op` fail before reaching the API (a crash between steps).
    FailOp {
        /// Operation name.
        op: String,
        /// How many.
        times: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Daemon {
    /// Version started (what actually runs; the tag is the record).
    version: Option<String>,
    /// When it was last (re)started.
    started_ms: Millis,
    /// Its block height when it started.
    start_height: u64,
    /// Stopped (instance stopped).
    stopped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Instance {
    id: String,
    tags: BTreeMap<String, String>,
    terminated: bool,
    stopped: bool,
    running_at_ms: Millis,
    instance_type: String,
    zone: String,
    private_ip: String,
    data_volume: Option<String>,
    daemon: Daemon,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Volume {
    id: String,
    size_gb: u32,
    snapshot_id: Option<String>,
    zone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    info: SnapshotInfo,
    /// Chain height captured.
    height: u64,
}

/// A command the simulated SSM ran, in order (what tests check zone order against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// When.
    pub at_ms: Millis,
    /// Instance.
    pub instance_id: String,
    /// Node.
    pub key: NodeKey,
    /// The shell command.
    pub command: String,
    /// Whether it succeeded.
    pub ok: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct World {
    config: SimConfig,
    epoch_ms: Millis,
    next_id: u64,
    instances: BTreeMap<String, Instance>,
    volumes: BTreeMap<String, Volume>,
    snapshots: BTreeMap<String, Snapshot>,
    /// hosted zone id -> name -> record.
    dns: BTreeMap<String, BTreeMap<String, DnsRecord>>,
    faults: Vec<SimFault>,
    commands: Vec<CommandRecord>,
    calls: u64,
    attempts: u64,
}

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

    /// Inject a fault.
    pub fn inject(&self, fault: SimFault) {
        let mut w = self.lock();
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

    /// The tip of `coin`'s chain now.
    pub fn tip(&self, coin: &str) -> u64 {
        let w = self.lock();
        w.tip(coin, self.clock.now_ms())
    }

    /// What the node's daemon reports now, as a probe would see it; Err when unreachable.
    pub fn chain_status(&self, instance_id: &str) -> Result<ChainStatus, String> {
        let w = self.lock();
        w.status(instance_id, self.clock.now_ms())
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
            for slot in &coin.nodes {
                let spec = LaunchSpec::new(&desired.fleet, &c, slot, None)?;
                let tip = w.tip(coin.name.as_str(), now);
                let id = w.create_instance(&spec, now, tip, true);
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

impl World {
    fn params(&self, coin: &str) -> ChainParams {
        self.config
            .chains
            .get(coin)
            .copied()
            .unwrap_or_else(|| ChainParams::for_coin(coin))
    }

    fn tip(&self, coin: &str, now: Millis) -> u64 {
        let p = self.params(coin);
        p.base_height + now.saturating_sub(self.epoch_ms) / p.block_ms.max(1)
    }

    fn fault_for(&self, key: &NodeKey) -> (bool, Option<u64>) {
        let mut never = false;
        let mut stall = None;
        for f in &self.faults {
            match f {
                SimFault::NeverSyncs { key: k } if k == key => never = true,
                SimFault::StallAt { key: k, height } if k == key => stall = Some(*height),
                _ => {}
            }
        }
        (never, stall)
    }

    fn status(&self, instance_id: &str, now: Millis) -> Result<ChainStatus, String> {
        let i = self
            .instances
            .get(instance_id)
            .ok_or_else(|| format!("no instance {instance_id}"))?;
        if i.terminated || i.stopped || i.daemon.stopped {
            return Err(format!(
                "{instance_id}: connection refused (instance not running)"
            ));
        }
        let coin = i.tags.get(tags::COIN).cloned().unwrap_or_default();
        let p = self.params(&coin);
        let up_at = i.daemon.started_ms.max(i.running_at_ms) + p.start_delay_ms;
        if now < up_at {
            return Err(format!(
                "{instance_id}: connection refused (daemon starting)"
            ));
        }
        let tip = self.tip(&coin, now);
        let secs = (now - up_at) as f64 / 1000.0;
        let start = i.daemon.start_height.min(tip);
        let headers = ((start as f64 + p.header_rate * secs) as u64).min(tip);
        let mut blocks = ((start as f64 + p.block_rate * secs) as u64).min(headers);
        let key = tags::node_key(&i.tags).ok();
        if let Some(key) = key {
            let (never, stall) = self.fault_for(&key);
            if never {
                blocks = start;
            }
            if let Some(h) = stall {
                blocks = blocks.min(h.max(start));
            }
        }
        let day_of_blocks = 86_400_000 / p.block_ms.max(1);
        Ok(ChainStatus {
            blocks,
            headers,
            initial_block_download: tip.saturating_sub(blocks) > day_of_blocks,
        })
    }

    fn blocks_now(&self, instance_id: &str, now: Millis) -> u64 {
        match self.status(instance_id, now) {
            Ok(s) => s.blocks,
            Err(_) => self
                .instances
                .get(instance_id)
                .map(|i| i.daemon.start_height)
                .unwrap_or(0),
        }
    }

    /// One API call: throttling and injected failures apply, as on AWS.
    fn call(&mut self, op: &str) -> Result<(), ProviderError> {
        self.calls += 1;
        for (i, f) in self.faults.iter_mut().enumerate() {
            if let SimFault::FailOp { op: o, times } = f
                && o == op
                && *times > 0
            {
                *times -= 1;
                if *times == 0 {
                    self.faults.remove(i);
                }
                return Err(ProviderError::Api {
                    op: op.to_string(),
                    code: "InjectedFailure".into(),
                    message: "the call failed before reaching the API (injected)".into(),
                    instance: None,
                });
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.attempts += 1;
            let throttled = self.faults.iter_mut().any(|f| match f {
                SimFault::Throttle { op: o, times }
                    if *times > 0 && o.as_deref().is_none_or(|o| o == op) =>
                {
                    *times -= 1;
                    true
                }
                _ => false,
            });
            self.faults
                .retain(|f| !matches!(f, SimFault::Throttle { times: 0, .. }));
            if !throttled {
                return Ok(());
            }
            if attempts >= MAX_ATTEMPTS {
                return Err(ProviderError::Throttled {
                    op: op.to_string(),
                    attempts,
                    code: "RequestLimitExceeded".into(),
                });
            }
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", 0x000f_1ee7_0000_0000_u64 + self.next_id)
    }

    fn create_instance(
        &mut self,
        spec: &LaunchSpec,
        now: Millis,
        height: u64,
        running: bool,
    ) -> String {
        let id = self.new_id("i");
        let vol = self.new_id("vol");
        self.volumes.insert(
            vol.clone(),
            Volume {
                id: vol.clone(),
                size_gb: spec.data_volume_gb,
                snapshot_id: spec.snapshot_id.clone(),
                zone: spec.slot.zone.to_string(),
            },
        );
        let n = self.next_id;
        let private_ip = format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
        // A seeded node has been up long enough to answer; a launched one boots first.
        let settled = now.saturating_sub(self.params(spec.slot.coin.as_str()).start_delay_ms);
        let running_at_ms = if running {
            settled
        } else {
            now + self.config.boot_ms
        };
        self.instances.insert(
            id.clone(),
            Instance {
                id: id.clone(),
                tags: spec.tags.clone(),
                terminated: false,
                stopped: false,
                running_at_ms,
                instance_type: spec.instance_type.to_string(),
                zone: spec.slot.zone.to_string(),
                private_ip,
                data_volume: Some(vol),
                daemon: Daemon {
                    version: Some(spec.version.to_string()),
                    started_ms: running_at_ms,
                    start_height: height,
                    stopped: false,
                },
            },
        );
        id
    }

    fn upsert_dns(&mut self, zone: &str, name: &str, ip: &str) -> bool {
        let rec = DnsRecord {
            name: name.to_string(),
            values: vec![ip.to_string()],
            ttl: 60,
        };
        let z = self.dns.entry(zone.to_string()).or_default();
        if z.get(name) == Some(&rec) {
            return false;
        }
        z.insert(name.to_string(), rec);
        true
    }

    fn live(&self, node: &NodeRef) -> Result<&Instance, ProviderError> {
        match self.instances.get(&node.instance_id) {
            Some(i)
                if !i.terminated
                    && i.tags.get(tags::MANAGED).map(String::as_str) == Some("true") =>
            {
                Ok(i)
            }
            _ => Err(ProviderError::NotFound {
                instance: node.instance_id.clone(),
            }),
        }
    }

    fn live_mut(&mut self, node: &NodeRef) -> Result<&mut Instance, ProviderError> {
        self.live(node)?;
        Ok(self.instances.get_mut(&node.instance_id).expect("checked"))
    }

    fn state(&self, i: &Instance, now: Millis) -> InstanceState {
        if i.terminated {
            InstanceState::Terminated
        } else if i.stopped {
            InstanceState::Stopped
        } else if now < i.running_at_ms {
            InstanceState::Pending
        } else {
            InstanceState::Running
        }
    }

    /// Run a command on a node through the simulated SSM.
    fn run_command(
        &mut self,
        node: &NodeRef,
        command: &str,
        now: Millis,
    ) -> Result<(), ProviderError> {
        self.call("SendCommand")?;
        let key = node.key.clone();
        let mut failed = None;
        for (idx, f) in self.faults.iter_mut().enumerate() {
            if let SimFault::FailCommand {
                key: k,
                times,
                stderr,
            } = f
                && *times > 0
                && k.as_ref().is_none_or(|k| *k == key)
            {
                *times -= 1;
                failed = Some((idx, stderr.clone(), *times == 0));
                break;
            }
        }
        self.call("GetCommandInvocation")?;
        let ok = failed.is_none();
        self.commands.push(CommandRecord {
            at_ms: now,
            instance_id: node.instance_id.clone(),
            key,
            command: command.to_string(),
            ok,
        });
        if let Some((idx, stderr, exhausted)) = failed {
            if exhausted {
                self.faults.remove(idx);
            }
            return Err(ProviderError::CommandFailed {
                instance: node.instance_id.clone(),
                status: "Failed".into(),
                exit_code: 1,
                stderr,
            });
        }
        Ok(())
    }

    fn snapshot_of(
        &mut self,
        node: &NodeRef,
        reason: &str,
        now: Millis,
    ) -> Result<Option<String>, ProviderError> {
        let i = self.live(node)?;
        let Some(vol_id) = i.data_volume.clone() else {
            return Ok(None);
        };
        let height = self.blocks_now(&node.instance_id, now);
        let vol = self
            .volumes
            .get(&vol_id)
            .cloned()
            .ok_or_else(|| ProviderError::Api {
                op: "CreateSnapshot".into(),
                code: "InvalidVolume.NotFound".into(),
                message: format!("volume {vol_id} does not exist"),
                instance: Some(node.instance_id.clone()),
            })?;
        self.call("CreateSnapshot")?;
        let id = self.new_id("snap");
        self.snapshots.insert(
            id.clone(),
            Snapshot {
                info: SnapshotInfo {
                    snapshot_id: id.clone(),
                    coin: node.key.coin.clone(),
                    zone: vol.zone.clone(),
                    size_gb: vol.size_gb,
                    started_ms: now,
                    state: "completed".into(),
                    reason: reason.to_string(),
                },
                height,
            },
        );
        Ok(Some(id))
    }
}

fn pages(n: usize, size: usize) -> u64 {
    n.div_ceil(size).max(1) as u64
}

#[async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn api_calls(&self) -> u64 {
        self.call_counts().0
    }

    async fn observe(&self, desired: &Desired) -> Result<Observed, ProviderError> {
        let mut w = self.lock();
        let now = self.clock.now_ms();
        let before = w.calls;
        let live: Vec<&Instance> = w.instances.values().filter(|i| !i.terminated).collect();
        let n_instances = live.len();
        let instances: Vec<RawInstance> = live
            .iter()
            .map(|i| RawInstance {
                instance_id: i.id.clone(),
                tags: i.tags.clone(),
                state: w.state(i, now),
                instance_type: i.instance_type.clone(),
                private_ip: Some(i.private_ip.clone()),
                data_volume: i
                    .data_volume
                    .as_ref()
                    .and_then(|v| w.volumes.get(v))
                    .map(|v| ObservedVolume {
                        volume_id: v.id.clone(),
                        size_gb: v.size_gb,
                        snapshot_id: v.snapshot_id.clone(),
                    }),
            })
            .collect();
        let domain = desired.fleet.internal_domain.as_str();
        let zone_records: Vec<DnsRecord> = w
            .dns
            .get(desired.fleet.hosted_zone_id.as_str())
            .map(|z| z.values().cloned().collect())
            .unwrap_or_default();
        let n_records = zone_records.len();
        let dns: Vec<DnsRecord> = zone_records
            .into_iter()
            .filter(|r| tags::node_record_coin(&r.name, domain).is_some())
            .collect();
        let snapshots: Vec<SnapshotInfo> = w.snapshots.values().map(|s| s.info.clone()).collect();
        let n_snapshots = snapshots.len();
        let n_volumes = instances.iter().filter(|i| i.data_volume.is_some()).count();
        drop(live);
        for (op, n) in [
            ("DescribeInstances", pages(n_instances, INSTANCES_PAGE)),
            ("DescribeVolumes", pages(n_volumes, VOLUMES_PAGE)),
            ("DescribeSnapshots", pages(n_snapshots, SNAPSHOTS_PAGE)),
            ("ListResourceRecordSets", pages(n_records, RECORDS_PAGE)),
        ] {
            for _ in 0..n {
                w.call(op)?;
            }
        }
        let calls = w.calls - before;
        drop(w);
        Ok(Observed::assemble(
            desired, instances, dns, snapshots, calls,
        ))
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
                    (w.create_instance(spec, now, height, false), Outcome::Done)
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

    async fn upgrade(&self, node: &NodeRef, version: &Version) -> Result<Outcome, ProviderError> {
        let command = restart_command(version)?;
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            let i = w.live(node)?;
            if i.tags.get(tags::VERSION).map(String::as_str) == Some(version.as_str())
                && !i.tags.contains_key(tags::PENDING)
            {
                return Ok(Outcome::AlreadyDone);
            }
            w.call("CreateTags")?;
            w.live_mut(node)?.tags.insert(
                tags::PENDING.into(),
                PendingStep {
                    step: "upgrade".into(),
                    target: version.to_string(),
                }
                .to_tag(),
            );
            let height = w.blocks_now(&node.instance_id, now);
            w.run_command(node, &command, now)?;
            {
                let i = w.live_mut(node)?;
                i.daemon = Daemon {
                    version: Some(version.to_string()),
                    started_ms: now,
                    start_height: height,
                    stopped: false,
                };
            }
            w.call("CreateTags")?;
            w.live_mut(node)?
                .tags
                .insert(tags::VERSION.into(), version.to_string());
            w.call("DeleteTags")?;
            w.live_mut(node)?.tags.remove(tags::PENDING);
            Ok(Outcome::Done)
        })
    }

    async fn confirm_version(
        &self,
        node: &NodeRef,
        version: &Version,
    ) -> Result<bool, ProviderError> {
        let command = is_active_command(version)?;
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            let i = w.live(node)?;
            if i.tags.get(tags::VERSION).map(String::as_str) == Some(version.as_str())
                && !i.tags.contains_key(tags::PENDING)
            {
                return Ok(true);
            }
            let active = !i.stopped
                && !i.daemon.stopped
                && i.daemon.version.as_deref() == Some(version.as_str());
            // The command's answer is the daemon's real state; injected command failures
            // (FailCommand) are for commands that change something, so not consumed here.
            w.call("SendCommand")?;
            w.call("GetCommandInvocation")?;
            w.commands.push(CommandRecord {
                at_ms: now,
                instance_id: node.instance_id.clone(),
                key: node.key.clone(),
                command,
                ok: active,
            });
            if !active {
                return Ok(false);
            }
            w.call("CreateTags")?;
            w.live_mut(node)?
                .tags
                .insert(tags::VERSION.into(), version.to_string());
            w.call("DeleteTags")?;
            w.live_mut(node)?.tags.remove(tags::PENDING);
            Ok(true)
        })
    }

    async fn grow_volume(&self, node: &NodeRef, size_gb: u32) -> Result<Outcome, ProviderError> {
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            let vol_id = w.live(node)?.data_volume.clone().ok_or_else(|| ProviderError::Refused {
                reason: format!("instance {} has no data volume", node.instance_id),
            })?;
            w.call("DescribeVolumes")?;
            let current = w.volumes.get(&vol_id).map(|v| v.size_gb).unwrap_or(0);
            if size_gb < current {
                return Err(ProviderError::Refused {
                    reason: format!(
                        "volume {vol_id} of {} is {current} GB; shrinking to {size_gb} GB would lose chain data (EBS cannot shrink a volume: launch a new node from a snapshot instead)",
                        node.key
                    ),
                });
            }
            if size_gb == current {
                return Ok(Outcome::AlreadyDone);
            }
            w.call("ModifyVolume")?;
            if let Some(v) = w.volumes.get_mut(&vol_id) {
                v.size_gb = size_gb;
            }
            w.call("DescribeVolumesModifications")?;
            w.run_command(node, GROW_FS_COMMAND, now)?;
            Ok(Outcome::Done)
        })
    }

    async fn change_instance_type(
        &self,
        node: &NodeRef,
        instance_type: &InstanceType,
    ) -> Result<Outcome, ProviderError> {
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            let i = w.live(node)?;
            if i.instance_type == instance_type.as_str()
                && !i.stopped
                && !i.tags.contains_key(tags::PENDING)
            {
                return Ok(Outcome::AlreadyDone);
            }
            let was_stopped = i.stopped;
            w.call("CreateTags")?;
            w.live_mut(node)?.tags.insert(
                tags::PENDING.into(),
                PendingStep {
                    step: "change-type".into(),
                    target: instance_type.to_string(),
                }
                .to_tag(),
            );
            let height = w.blocks_now(&node.instance_id, now);
            if !was_stopped {
                w.call("StopInstances")?;
                let i = w.live_mut(node)?;
                i.stopped = true;
                i.daemon.stopped = true;
                i.daemon.start_height = height;
            }
            w.call("ModifyInstanceAttribute")?;
            w.live_mut(node)?.instance_type = instance_type.to_string();
            w.call("StartInstances")?;
            let boot = w.config.boot_ms;
            let i = w.live_mut(node)?;
            i.stopped = false;
            i.running_at_ms = now + boot;
            i.daemon.stopped = false;
            i.daemon.started_ms = now + boot;
            w.call("DeleteTags")?;
            w.live_mut(node)?.tags.remove(tags::PENDING);
            Ok(Outcome::Done)
        })
    }

    async fn snapshot(&self, node: &NodeRef, reason: &str) -> Result<String, ProviderError> {
        self.with(|w, now| {
            w.call("DescribeInstances")?;
            w.snapshot_of(node, reason, now)?
                .ok_or_else(|| ProviderError::Refused {
                    reason: format!(
                        "instance {} has no data volume to snapshot",
                        node.instance_id
                    ),
                })
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
