//! The simulated world: instances, volumes, snapshots, DNS records and, per coin, a chain whose
//! tip advances at the coin's block time; the faults injected into it; the commands its SSM
//! ran. Pure data and its rules, persisted as `sim.json`; [`super::SimProvider`] is the
//! provider in front of it.
//!
//! A restarted daemon is unreachable for `start_delay_ms`, then catches up like a real node:
//! headers first (`header_rate` per second), then blocks (`block_rate` per second) until it
//! reaches the tip, reporting `initial_block_download` while it is more than a day behind.

use crate::clock::Millis;
use crate::health::{ChainStatus, DaemonVersion};
use crate::network::{CoinNetwork, IngressRule};
use crate::node::NodeKey;
use crate::provider::{Disk, Outcome};
use crate::provider::{
    DnsRecord, DnsTarget, InstanceState, LaunchSpec, NodeRef, ProviderError, SnapshotInfo, tags,
    userdata,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Attempts per call before throttling becomes an error (as the AWS provider's retry policy).
pub const MAX_ATTEMPTS: u32 = 5;
/// DescribeInstances page size (EC2's maximum).
pub(super) const INSTANCES_PAGE: usize = 1000;
/// DescribeVolumes page size (EC2's maximum).
pub(super) const VOLUMES_PAGE: usize = 500;
/// DescribeSnapshots page size (EC2's maximum).
pub(super) const SNAPSHOTS_PAGE: usize = 1000;
/// DescribeSecurityGroups page size (EC2's maximum).
pub(super) const GROUPS_PAGE: usize = 1000;
/// ListResourceRecordSets page size (Route53's maximum).
pub(super) const RECORDS_PAGE: usize = 300;

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
    /// How fast the chain's data grows on a node's data volume, GB a day (worlds saved
    /// before disks were modelled: 0, a chain that does not grow).
    #[serde(default)]
    pub disk_gb_per_day: f64,
}

impl ChainParams {
    /// Plausible figures for well-known coins, a generic chain otherwise.
    pub fn for_coin(name: &str) -> ChainParams {
        let (block_ms, base_height, disk_gb_per_day) = match name {
            "bitcoin" => (600_000, 870_000, 0.3),
            "litecoin" => (150_000, 2_800_000, 0.05),
            "dogecoin" => (60_000, 5_400_000, 0.1),
            "ethereum" => (12_000, 21_000_000, 1.5),
            "monero" => (120_000, 3_250_000, 0.08),
            "iota" => (10_000, 9_000_000, 0.2),
            _ => (60_000, 1_000_000, 0.1),
        };
        ChainParams {
            block_ms,
            base_height,
            header_rate: 20_000.0,
            block_rate: 50.0,
            start_delay_ms: 30_000,
            disk_gb_per_day,
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
    /// A bad release: every daemon of `coin` started at `version` never gets past the height
    /// it started at (whichever node, for as long as it runs that version); the same node
    /// restarted at another version syncs again. What a rollback is for.
    BadRelease {
        /// Coin.
        coin: String,
        /// The version that does not sync.
        version: String,
    },
    /// A release that changes the database on its first start: a data volume a daemon of
    /// `coin` at `version` ran on holds that version's format from then on, and a daemon of
    /// an older version exits at start on it (bitcoind's "the database was written by a newer
    /// version"). A snapshot keeps the format its volume had. What `on_failure: restore` is
    /// for: rolled back in place, the old version cannot read its data.
    ChangesDatabase {
        /// Coin.
        coin: String,
        /// The version that rewrites the database.
        version: String,
    },
    /// The node's blocks stop at `height`.
    StallAt {
        /// Node.
        key: NodeKey,
        /// Height.
        height: u64,
    },
    /// The node's daemon stops at `height`, blocks and headers, as one that lost its peers
    /// does (`setnetworkactive false`, a firewall change), and answers its probe there; a
    /// restart of the daemon ends it (reconnecting is what a restart does).
    Hangs {
        /// Node.
        key: NodeKey,
        /// Height.
        height: u64,
    },
    /// The node's daemon exits `up_ms` after each start, and systemd starting it again
    /// brings it no further: its probe is refused from then until its next restart.
    CrashLoops {
        /// Node.
        key: NodeKey,
        /// How long it answers after each start.
        up_ms: u64,
    },
    /// The node's instance fails EC2's status checks (`system`: the host's, else the
    /// instance's own): nothing on it answers, SSM included, until the fault is cleared. It
    /// is the instance's, not the slot's: a new instance in the slot (a replacement) runs
    /// on another host.
    FailsStatusChecks {
        /// Node.
        key: NodeKey,
        /// The system check fails (else the instance check).
        system: bool,
        /// The instance (filled in by `inject` with the one holding the slot then).
        #[serde(default)]
        instance_id: Option<String>,
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
    /// The next `times` SendCommand calls find the instance's SSM agent not registered yet
    /// (`InvalidInstanceId`): each is a call that sends nothing, and the provider asks again.
    AgentNotReady {
        /// Calls.
        times: u32,
    },
    /// `coin`'s daemon refuses a configuration whose host or container environment
    /// contains `contains` (a setting its version does not know): from the next start after
    /// such files are written, it exits at once, and systemd restarts it in vain, until
    /// files without it are written and it is started again.
    RejectsConfig {
        /// Coin.
        coin: String,
        /// Text whose presence it refuses, e.g. `DBCACHE=-1`.
        contains: String,
    },
    /// `coin`'s image tagged `tag` runs another version, `runs` (a mislabelled image): its
    /// daemon reports `runs` whatever fleet started.
    ImageRuns {
        /// Coin.
        coin: String,
        /// The image tag (the version fleet starts).
        tag: String,
        /// What the daemon inside reports.
        runs: String,
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
pub(super) struct Daemon {
    /// Version started (what actually runs; the tag is the record).
    pub(super) version: Option<String>,
    /// When it was last (re)started.
    pub(super) started_ms: Millis,
    /// Its block height when it started.
    pub(super) start_height: u64,
    /// Stopped (instance stopped).
    pub(super) stopped: bool,
    /// Whether its `node@` unit is enabled: only then does a boot (a reboot, a stop and
    /// start) run it again, as systemd does. Nodes whose user data does not enable it (and
    /// worlds saved before this was modelled) come back without their daemon.
    #[serde(default)]
    pub(super) enabled: bool,
    /// The version of the enabled unit when another one runs: an operator started another
    /// `node@` unit by hand (the seed's `systemctl stop node@* && systemctl start
    /// node@<version>`), which enables nothing, so a boot brings this one back.
    #[serde(default)]
    pub(super) enabled_version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Instance {
    pub(super) id: String,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) terminated: bool,
    pub(super) stopped: bool,
    pub(super) running_at_ms: Millis,
    pub(super) instance_type: String,
    pub(super) zone: String,
    pub(super) private_ip: String,
    pub(super) data_volume: Option<String>,
    pub(super) daemon: Daemon,
    /// Security group ids, as launched or modified.
    #[serde(default)]
    pub(super) security_groups: Vec<String>,
    /// Launched with a public address.
    #[serde(default)]
    pub(super) public_ip: bool,
    /// Its root volume (id, GiB); None in worlds saved before it was modelled.
    #[serde(default)]
    pub(super) root: Option<(String, u32)>,
    /// Files its daemon refuses were written at this time ([`SimFault::RejectsConfig`]):
    /// every start since then exits.
    #[serde(default)]
    pub(super) rejected_config: Option<(Millis, String)>,
    /// Its VPC (None in worlds saved before it was modelled).
    #[serde(default)]
    pub(super) vpc_id: Option<String>,
    /// The AMI it was launched from (None in worlds saved before it was modelled).
    #[serde(default)]
    pub(super) ami: Option<String>,
    /// Its subnet (None in worlds saved before it was modelled).
    #[serde(default)]
    pub(super) subnet_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Volume {
    pub(super) id: String,
    pub(super) size_gb: u32,
    pub(super) snapshot_id: Option<String>,
    pub(super) zone: String,
    /// The chain's data on it: GB used at a time, growing at the coin's
    /// [`ChainParams::disk_gb_per_day`] from then (None: worlds saved before disks were
    /// modelled, whose volumes report nothing).
    #[serde(default)]
    pub(super) used: Option<(Millis, f64)>,
    /// Its size from each time on (the creation's first; a grow adds one).
    #[serde(default)]
    pub(super) sizes: Vec<(Millis, u32)>,
    /// The version whose database format it holds, when one that changes it
    /// ([`SimFault::ChangesDatabase`]) ran on it.
    #[serde(default)]
    pub(super) format: Option<String>,
    /// Not attached: a restore took it off `fleet:restored-away`'s instance.
    #[serde(default)]
    pub(super) detached_from: Option<String>,
}

/// A new volume without a snapshot is this full once its node has synced (the simulator
/// does not model the sync's own growth).
pub(super) const NEW_VOLUME_FILL: f64 = 0.6;

const DAY_MS: f64 = 86_400_000.0;

/// EBS modifies a volume at most once per 6 hours.
pub(super) const MODIFY_COOLDOWN_MS: u64 = 6 * 3_600_000;

impl Volume {
    /// Its size at `t`.
    fn size_at(&self, t: Millis) -> u32 {
        self.sizes
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map_or(self.size_gb, |(_, s)| *s)
    }

    /// GB used at `t` (None before it held data), at most its size then: a full file
    /// system stays full.
    pub(super) fn used_gb_at(&self, t: Millis, gb_per_day: f64) -> Option<f64> {
        let (at, gb) = self.used?;
        if t < at {
            return None;
        }
        let grown = gb + gb_per_day * (t - at) as f64 / DAY_MS;
        Some(grown.min(self.size_at(t) as f64))
    }

    /// Percent used at `t`.
    pub(super) fn used_percent_at(&self, t: Millis, gb_per_day: f64) -> Option<f64> {
        let size = self.size_at(t).max(1) as f64;
        self.used_gb_at(t, gb_per_day).map(|u| u / size * 100.0)
    }
}

/// A security group fleet made for a coin (the only kind the simulated account has).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Group {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) coin: String,
    pub(super) vpc_id: String,
    pub(super) rules: Vec<IngressRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub(super) info: SnapshotInfo,
    /// Chain height captured.
    pub(super) height: u64,
    /// GB of data captured (None: saved before disks were modelled).
    #[serde(default)]
    pub(super) used_gb: Option<f64>,
    /// The node whose volume it is of (None: saved before it was modelled).
    #[serde(default)]
    pub(super) node: Option<NodeKey>,
    /// The database format of its volume then ([`Volume::format`]).
    #[serde(default)]
    pub(super) format: Option<String>,
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
pub(super) struct World {
    pub(super) config: SimConfig,
    pub(super) epoch_ms: Millis,
    pub(super) next_id: u64,
    pub(super) instances: BTreeMap<String, Instance>,
    pub(super) volumes: BTreeMap<String, Volume>,
    pub(super) snapshots: BTreeMap<String, Snapshot>,
    /// Security groups by id (worlds saved before they were modelled have none).
    #[serde(default)]
    pub(super) groups: BTreeMap<String, Group>,
    /// Secrets the simulated account lacks (it has every other: a simulation has nobody to
    /// create them, so a test removes one to see a fleet without it).
    #[serde(default)]
    pub(super) missing_secrets: std::collections::BTreeSet<String>,
    /// hosted zone id -> name -> record.
    pub(super) dns: BTreeMap<String, BTreeMap<String, DnsRecord>>,
    pub(super) faults: Vec<SimFault>,
    pub(super) commands: Vec<CommandRecord>,
    pub(super) calls: u64,
    pub(super) attempts: u64,
}

impl World {
    pub(super) fn params(&self, coin: &str) -> ChainParams {
        self.config
            .chains
            .get(coin)
            .copied()
            .unwrap_or_else(|| ChainParams::for_coin(coin))
    }

    pub(super) fn tip(&self, coin: &str, now: Millis) -> u64 {
        let p = self.params(coin);
        p.base_height + now.saturating_sub(self.epoch_ms) / p.block_ms.max(1)
    }

    /// Whether the instance fails EC2's status checks, and which: Some(true) the system's.
    pub(super) fn fails_checks(&self, instance_id: &str) -> Option<bool> {
        let key = self
            .instances
            .get(instance_id)
            .and_then(|i| tags::node_key(&i.tags).ok())?;
        self.faults.iter().find_map(|f| match f {
            SimFault::FailsStatusChecks {
                key: k,
                system,
                instance_id: id,
            } if *k == key && id.as_deref().is_none_or(|id| id == instance_id) => Some(*system),
            _ => None,
        })
    }

    /// The instance holding `key`'s slot now (not terminated, not a replacement).
    pub(super) fn holder(&self, key: &NodeKey) -> Option<String> {
        self.instances
            .values()
            .filter(|i| !i.terminated && !i.tags.contains_key(tags::REPLACES))
            .find(|i| tags::node_key(&i.tags).ok().as_ref() == Some(key))
            .map(|i| i.id.clone())
    }

    /// `command` on the node's enabled `node@<version>` unit over SSM (`fleet-node restart`,
    /// `stop`, `start`), as the AWS provider sends it: refused by SSM when the instance does
    /// not run or fails its status checks, refused by the node when `version` is not the
    /// enabled unit; else run (injected command failures included). The caller then changes
    /// the daemon as the command does.
    pub(super) fn unit_command(
        &mut self,
        node: &NodeRef,
        version: &fleet_repo_schema::values::Version,
        command: &str,
        now: Millis,
    ) -> Result<(), ProviderError> {
        let (running, enabled) = {
            let i = self.live(node)?;
            let d = &i.daemon;
            (
                // Booting counts as reachable, as for every simulated command (the AWS
                // provider waits for a booting instance's agent, `agent_wait`).
                matches!(
                    self.state(i, now),
                    InstanceState::Running | InstanceState::Pending
                ),
                d.enabled
                    .then(|| d.enabled_version.clone().or_else(|| d.version.clone()))
                    .flatten(),
            )
        };
        let unreachable = self.fails_checks(&node.instance_id).is_some();
        if !running || unreachable {
            // SSM reaches no stopped or terminated instance's agent, nor one of an instance
            // that fails its status checks.
            self.call("SendCommand")?;
            return Err(ProviderError::Api {
                op: "ssm:SendCommand".into(),
                code: "InvalidInstanceId".into(),
                message: "Instances not in a valid state for account".into(),
                instance: Some(node.instance_id.clone()),
            });
        }
        if enabled.as_deref() != Some(version.as_str()) {
            self.call("SendCommand")?;
            self.call("GetCommandInvocation")?;
            self.commands.push(CommandRecord {
                at_ms: now,
                instance_id: node.instance_id.clone(),
                key: node.key.clone(),
                command: command.to_string(),
                ok: false,
            });
            return Err(ProviderError::CommandFailed {
                instance: node.instance_id.clone(),
                status: "Failed".into(),
                exit_code: 1,
                stderr: format!("fleet-node: node@{version} is not the enabled unit"),
            });
        }
        self.run_command(node, command, now)
    }

    pub(super) fn fault_for(&self, key: &NodeKey) -> (bool, Option<u64>) {
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

    pub(super) fn status(&self, instance_id: &str, now: Millis) -> Result<ChainStatus, String> {
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
        if let Some((since, why)) = &i.rejected_config
            && i.daemon.started_ms.max(i.running_at_ms) >= *since
        {
            return Err(format!(
                "{instance_id}: connection refused (the daemon exits at start: {why})"
            ));
        }
        if let Some(f) = i
            .data_volume
            .as_ref()
            .and_then(|v| self.volumes.get(v))
            .and_then(|v| v.format.as_ref())
            && let Some(v) = &i.daemon.version
            && fleet_repo_schema::semver::compare(v, f) == std::cmp::Ordering::Less
        {
            return Err(format!(
                "{instance_id}: connection refused (the daemon exits at start: the database was written by {f}, newer than {v})"
            ));
        }
        let up_at = i.daemon.started_ms.max(i.running_at_ms) + p.start_delay_ms;
        if now < up_at {
            return Err(format!(
                "{instance_id}: connection refused (daemon starting)"
            ));
        }
        let tip = self.tip(&coin, now);
        let secs = (now - up_at) as f64 / 1000.0;
        let start = i.daemon.start_height.min(tip);
        let mut headers = ((start as f64 + p.header_rate * secs) as u64).min(tip);
        let mut blocks = ((start as f64 + p.block_rate * secs) as u64).min(headers);
        let key = tags::node_key(&i.tags).ok();
        let bad_release = self.faults.iter().any(|f| {
            matches!(f, SimFault::BadRelease { coin: c, version }
                if *c == coin && i.daemon.version.as_deref() == Some(version.as_str()))
        });
        if bad_release {
            blocks = start;
        }
        if let Some(key) = &key {
            let (never, stall) = self.fault_for(key);
            if never {
                blocks = start;
            }
            if let Some(h) = stall {
                blocks = blocks.min(h.max(start));
            }
        }
        if let Some(key) = &key {
            for f in &self.faults {
                match f {
                    SimFault::Hangs { key: k, height } if k == key => {
                        let h = (*height).max(start);
                        blocks = blocks.min(h);
                        headers = headers.min(h);
                    }
                    SimFault::FailsStatusChecks { .. }
                        if self.fails_checks(instance_id).is_some() =>
                    {
                        return Err(format!(
                            "{instance_id}: no route to host (the instance fails its status checks)"
                        ));
                    }
                    SimFault::CrashLoops { key: k, up_ms } if k == key && now >= up_at + up_ms => {
                        return Err(format!(
                            "{instance_id}: connection refused (the daemon exited; systemd starts it again in vain)"
                        ));
                    }
                    _ => {}
                }
            }
        }
        let day_of_blocks = 86_400_000 / p.block_ms.max(1);
        // What it runs, in a client's words (`/bitcoin:28.1/`), read by the probes' rule.
        let client = i.daemon.version.as_deref().and_then(|v| {
            let runs = self
                .faults
                .iter()
                .find_map(|f| match f {
                    SimFault::ImageRuns { coin: c, tag, runs } if *c == coin && tag == v => {
                        Some(runs.as_str())
                    }
                    _ => None,
                })
                .unwrap_or(v);
            DaemonVersion::from_client(&format!("/{coin}:{runs}/"))
        });
        Ok(ChainStatus {
            blocks,
            headers,
            initial_block_download: tip.saturating_sub(blocks) > day_of_blocks,
            client,
        })
    }

    pub(super) fn blocks_now(&self, instance_id: &str, now: Millis) -> u64 {
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
    pub(super) fn call(&mut self, op: &str) -> Result<(), ProviderError> {
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

    /// The coin's own group, made when missing, its rules set to `net`'s; each EC2 call
    /// counted as on AWS (one DescribeSecurityGroups, then only what changes).
    pub(super) fn ensure_group(
        &mut self,
        net: &CoinNetwork,
    ) -> Result<(String, Outcome), ProviderError> {
        self.call("DescribeSecurityGroups")?;
        let found = self
            .groups
            .values()
            .filter(|g| g.coin == net.coin && g.vpc_id == net.vpc_id)
            .map(|g| g.id.clone())
            .min();
        let (id, mut outcome) = match found {
            Some(id) => (id, Outcome::AlreadyDone),
            None => {
                self.call("CreateSecurityGroup")?;
                let id = self.new_id("sg");
                self.groups.insert(
                    id.clone(),
                    Group {
                        id: id.clone(),
                        name: net.group_name(),
                        coin: net.coin.clone(),
                        vpc_id: net.vpc_id.clone(),
                        rules: vec![],
                    },
                );
                (id, Outcome::Done)
            }
        };
        let change = net.diff(&self.groups[&id].rules);
        if !change.add.is_empty() {
            self.call("AuthorizeSecurityGroupIngress")?;
            let g = self.groups.get_mut(&id).expect("just found");
            g.rules.extend(change.add);
            g.rules.sort();
            outcome = Outcome::Done;
        }
        if !change.revoke.is_empty() {
            self.call("RevokeSecurityGroupIngress")?;
            let g = self.groups.get_mut(&id).expect("just found");
            g.rules.retain(|r| !change.revoke.contains(r));
            outcome = Outcome::Done;
        }
        Ok((id, outcome))
    }

    /// Grow `disk` of the node to `size_gb`, then its file system over SSM, with EC2's calls
    /// (as the AWS provider makes them). Refuses to shrink.
    pub(super) fn grow_disk(
        &mut self,
        node: &NodeRef,
        disk: Disk,
        size_gb: u32,
        now: Millis,
    ) -> Result<Outcome, ProviderError> {
        self.call("DescribeInstances")?;
        let i = self.live(node)?;
        let (vol, current) = match disk {
            Disk::Data => i.data_volume.clone().map(|v| {
                let size = self.volumes.get(&v).map_or(0, |v| v.size_gb);
                (v, size)
            }),
            Disk::Root => i.root.clone(),
        }
        .ok_or_else(|| ProviderError::no_disk(node, disk))?;
        self.call("DescribeVolumes")?;
        if size_gb < current {
            return Err(ProviderError::shrink(node, disk, &vol, current, size_gb));
        }
        if size_gb == current {
            return Ok(Outcome::AlreadyDone);
        }
        // EBS takes one modification of a volume per 6 hours; the creation is not one.
        if disk == Disk::Data
            && let Some(last) = self
                .volumes
                .get(&vol)
                .and_then(|v| v.sizes.iter().skip(1).map(|(at, _)| *at).max())
            && now.saturating_sub(last) < MODIFY_COOLDOWN_MS
        {
            self.call("ModifyVolume")?;
            return Err(ProviderError::Api {
                op: "ec2:ModifyVolume".into(),
                code: "VolumeModificationRateExceeded".into(),
                message: format!(
                    "You've reached the maximum modification rate per volume limit. Wait at least 6 hours between modifications per EBS volume ({vol})."
                ),
                instance: Some(node.instance_id.clone()),
            });
        }
        self.call("ModifyVolume")?;
        match disk {
            Disk::Data => {
                if let Some(v) = self.volumes.get_mut(&vol) {
                    v.size_gb = size_gb;
                    v.sizes.push((now, size_gb));
                }
            }
            Disk::Root => self.live_mut(node)?.root = Some((vol, size_gb)),
        }
        self.call("DescribeVolumesModifications")?;
        self.run_command(node, disk.grow_command(), now)?;
        Ok(Outcome::Done)
    }

    /// The instance launched to replace `old_id` (tag `fleet:replaces`), if one is not
    /// terminated (the lowest id, as the AWS provider picks).
    fn replacement_of(&self, old_id: &str) -> Option<String> {
        self.instances
            .values()
            .filter(|i| {
                !i.terminated && i.tags.get(tags::REPLACES).map(String::as_str) == Some(old_id)
            })
            .map(|i| i.id.clone())
            .min()
    }

    /// [`crate::provider::Provider::replace`], with EC2's and SSM's calls as the AWS provider
    /// makes them. The chain moves with the volume: the replacement's daemon
    /// starts at the height the old one stopped at.
    pub(super) fn replace(
        &mut self,
        node: &NodeRef,
        spec: &LaunchSpec,
        now: Millis,
    ) -> Result<(String, Outcome), ProviderError> {
        self.call("DescribeInstances")?;
        let found = self.replacement_of(&node.instance_id);
        self.call("DescribeInstances")?;
        if self.live(node).is_err() {
            let id = found.ok_or_else(|| ProviderError::NotFound {
                instance: node.instance_id.clone(),
            })?;
            return Ok((id, Outcome::AlreadyDone));
        }
        let new_id = match found {
            Some(id) => id,
            None => {
                let vol = self
                    .live(node)?
                    .data_volume
                    .clone()
                    .ok_or_else(|| ProviderError::nothing_to_move(node))?;
                self.call("CreateTags")?;
                let marker = crate::provider::PendingStep::Replace {
                    ami: spec.ami.clone(),
                    attempt: String::new(),
                };
                self.live_mut(node)?
                    .tags
                    .insert(tags::PENDING.into(), marker.to_tag());
                let (group, _) = self.ensure_group(&spec.network)?;
                self.call("DescribeImages")?;
                self.call("RunInstances")?;
                let id = self.create_instance(spec, &group, now, 0, false);
                let own = self.instances.get_mut(&id).expect("just made");
                // Launched without a data volume: it takes over the node's.
                let made = own.data_volume.take();
                own.tags
                    .insert(tags::REPLACES.into(), node.instance_id.clone());
                own.tags.insert(tags::TAKES_VOLUME.into(), vol);
                // Its boot-time set-up gives up waiting for a data volume.
                own.daemon.stopped = true;
                if let Some(v) = made {
                    self.volumes.remove(&v);
                }
                id
            }
        };
        let new = NodeRef {
            key: node.key.clone(),
            instance_id: new_id.clone(),
        };
        self.call("DescribeInstances")?;
        let vol = ProviderError::taken_volume(node, &new_id, &self.live(&new)?.tags)?;
        if !self.live(node)?.stopped {
            let height = self.blocks_now(&node.instance_id, now);
            self.call("StopInstances")?;
            let old = self.live_mut(node)?;
            old.stopped = true;
            old.daemon.stopped = true;
            old.daemon.start_height = height;
        }
        // The chain is on the volume: what the old daemon had when it stopped.
        let chain = self.live(node)?.daemon.start_height;
        if self.live(node)?.data_volume.as_deref() == Some(vol.as_str()) {
            self.call("DetachVolume")?;
            self.live_mut(node)?.data_volume = None;
        }
        if self.live(&new)?.data_volume.as_deref() != Some(vol.as_str()) {
            self.call("DescribeVolumes")?;
            self.call("AttachVolume")?;
            self.live_mut(&new)?.data_volume = Some(vol.clone());
            self.call("DescribeVolumes")?;
        }
        self.run_command(&new, crate::provider::commands::BOOTSTRAP_COMMAND, now)?;
        let d = &mut self.live_mut(&new)?.daemon;
        if d.stopped {
            d.stopped = false;
            d.started_ms = now;
            d.start_height = chain;
        }
        d.enabled = true;
        Ok((new_id, Outcome::Done))
    }

    /// [`crate::provider::Provider::hand_over`], with the calls the AWS provider makes.
    pub(super) fn hand_over(
        &mut self,
        node: &NodeRef,
        dns: &DnsTarget,
    ) -> Result<(String, Outcome), ProviderError> {
        self.call("DescribeInstances")?;
        let new_id = self
            .replacement_of(&node.instance_id)
            .ok_or_else(|| ProviderError::no_replacement(node))?;
        let new = &self.instances[&new_id];
        let vol = ProviderError::taken_volume(node, &new_id, &new.tags)?;
        if new.data_volume.as_deref() != Some(vol.as_str()) {
            return Err(ProviderError::not_taken_over(node, &new_id, &vol));
        }
        let ip = new.private_ip.clone();
        let mut outcome = self.set_record(dns, &ip)?;
        self.call("DescribeInstances")?;
        if self.live(node).is_ok() {
            self.call("ModifyInstanceAttribute")?;
            self.call("TerminateInstances")?;
            self.live_mut(node)?.terminated = true;
            outcome = Outcome::Done;
        }
        Ok((new_id, outcome))
    }

    /// [`crate::provider::Provider::undo_replace`], with the calls the AWS provider makes.
    /// The chain moves back with the volume: the old daemon starts at the height the
    /// replacement's stopped at.
    pub(super) fn undo_replace(
        &mut self,
        node: &NodeRef,
        now: Millis,
    ) -> Result<Outcome, ProviderError> {
        self.call("DescribeInstances")?;
        self.live(node)?;
        let mut outcome = Outcome::AlreadyDone;
        self.call("DescribeInstances")?;
        if let Some(new_id) = self.replacement_of(&node.instance_id) {
            let new = NodeRef {
                key: node.key.clone(),
                instance_id: new_id.clone(),
            };
            let vol = ProviderError::taken_volume(node, &new_id, &self.live(&new)?.tags)?;
            if !self.live(&new)?.stopped {
                let height = self.blocks_now(&new_id, now);
                self.call("StopInstances")?;
                let i = self.live_mut(&new)?;
                i.stopped = true;
                i.daemon.stopped = true;
                i.daemon.start_height = height;
            }
            // The chain on the volume: as far as the replacement took it, or as the old
            // daemon left it when the replacement's never ran on it.
            let chain = self
                .live(&new)?
                .daemon
                .start_height
                .max(self.live(node)?.daemon.start_height);
            if self.live(&new)?.data_volume.as_deref() == Some(vol.as_str()) {
                self.call("DetachVolume")?;
                self.live_mut(&new)?.data_volume = None;
            }
            if self.live(node)?.data_volume.as_deref() != Some(vol.as_str()) {
                self.call("DescribeVolumes")?;
                self.call("AttachVolume")?;
                let old = self.live_mut(node)?;
                old.data_volume = Some(vol);
                old.daemon.start_height = chain;
                self.call("DescribeVolumes")?;
            }
            self.call("TerminateInstances")?;
            self.live_mut(&new)?.terminated = true;
            outcome = Outcome::Done;
        }
        if self.live(node)?.data_volume.is_none() {
            return Err(ProviderError::volume_lost(node));
        }
        if self.live(node)?.stopped {
            // The AWS provider then waits for `running`; a simulated call takes no clock
            // time, so the instance is observed pending until it has booted.
            self.call("StartInstances")?;
            self.boot(&node.instance_id, now);
            outcome = Outcome::Done;
        }
        if self.live(node)?.tags.contains_key(tags::PENDING) {
            self.call("DeleteTags")?;
            self.live_mut(node)?.tags.remove(tags::PENDING);
            outcome = Outcome::Done;
        }
        Ok(outcome)
    }

    /// Point the record `dns` at `ip` (one ChangeResourceRecordSets when it differs).
    fn set_record(&mut self, dns: &DnsTarget, ip: &str) -> Result<Outcome, ProviderError> {
        let same = self
            .dns
            .get(&dns.hosted_zone_id)
            .and_then(|z| z.get(&dns.name))
            .is_some_and(|r| r.values == [ip.to_string()]);
        if same {
            return Ok(Outcome::AlreadyDone);
        }
        self.call("ChangeResourceRecordSets")?;
        self.upsert_dns(&dns.hosted_zone_id, &dns.name, ip);
        Ok(Outcome::Done)
    }

    /// `files` were written on the node at `now`: whether its daemon will refuse them.
    pub(super) fn wrote_config(
        &mut self,
        node: &NodeRef,
        files: &crate::node_config::NodeFiles,
        now: Millis,
    ) -> Result<(), ProviderError> {
        let refused = self.faults.iter().find_map(|f| match f {
            SimFault::RejectsConfig { coin, contains }
                if coin == node.key.coin.as_str()
                    && (files.host_env.contains(contains.as_str())
                        || files.container_env.contains(contains.as_str())) =>
            {
                Some(format!("it refuses {contains:?} in its configuration"))
            }
            _ => None,
        });
        let i = self.live_mut(node)?;
        i.rejected_config = refused.map(|why| (now, why));
        Ok(())
    }

    pub(super) fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", 0x000f_1ee7_0000_0000_u64 + self.next_id)
    }

    /// A new instance of `spec`, in its groups and the coin's own `coin_group`.
    pub(super) fn create_instance(
        &mut self,
        spec: &LaunchSpec,
        coin_group: &str,
        now: Millis,
        height: u64,
        running: bool,
    ) -> String {
        let id = self.new_id("i");
        let vol = self.new_id("vol");
        let root = self.new_id("vol");
        let restored = spec
            .snapshot_id
            .as_ref()
            .and_then(|id| self.snapshots.get(id))
            .and_then(|s| s.used_gb);
        let used = restored
            .unwrap_or(spec.data_volume_gb as f64 * NEW_VOLUME_FILL)
            .min(spec.data_volume_gb as f64);
        self.volumes.insert(
            vol.clone(),
            Volume {
                id: vol.clone(),
                size_gb: spec.data_volume_gb,
                snapshot_id: spec.snapshot_id.clone(),
                zone: spec.slot.zone.to_string(),
                used: Some((now, used)),
                sizes: vec![(now, spec.data_volume_gb)],
                format: spec
                    .snapshot_id
                    .as_ref()
                    .and_then(|id| self.snapshots.get(id))
                    .and_then(|s| s.format.clone()),
                detached_from: None,
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
                security_groups: {
                    let mut g = spec.security_groups.clone();
                    g.push(coin_group.to_string());
                    g
                },
                public_ip: spec.public_ip,
                root: Some((root, spec.root_volume_gb)),
                rejected_config: None,
                vpc_id: Some(spec.network.vpc_id.clone()),
                ami: Some(spec.ami.clone()),
                subnet_id: Some(spec.subnet_id.clone()),
                daemon: Daemon {
                    version: Some(spec.version.to_string()),
                    started_ms: running_at_ms,
                    start_height: height,
                    stopped: false,
                    enabled: userdata::enables_the_daemon(&spec.user_data),
                    enabled_version: None,
                },
            },
        );
        id
    }

    pub(super) fn upsert_dns(&mut self, zone: &str, name: &str, ip: &str) -> bool {
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

    pub(super) fn live(&self, node: &NodeRef) -> Result<&Instance, ProviderError> {
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

    pub(super) fn live_mut(&mut self, node: &NodeRef) -> Result<&mut Instance, ProviderError> {
        self.live(node)?;
        Ok(self.instances.get_mut(&node.instance_id).expect("checked"))
    }

    pub(super) fn state(&self, i: &Instance, now: Millis) -> InstanceState {
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

    /// The instance boots (after a start, a reboot or an EC2 maintenance event) at `now`:
    /// running `boot_ms` later, its daemon with it only if its unit is enabled.
    pub(super) fn boot(&mut self, instance_id: &str, now: Millis) {
        let boot = self.config.boot_ms;
        if let Some(i) = self.instances.get_mut(instance_id) {
            i.stopped = false;
            i.running_at_ms = now + boot;
            i.daemon.stopped = !i.daemon.enabled;
            i.daemon.started_ms = now + boot;
            if i.daemon.enabled
                && let Some(v) = i.daemon.enabled_version.take()
            {
                i.daemon.version = Some(v);
            }
        }
    }

    /// Run a command on a node through the simulated SSM.
    pub(super) fn run_command(
        &mut self,
        node: &NodeRef,
        command: &str,
        now: Millis,
    ) -> Result<(), ProviderError> {
        // An agent that has not registered answers InvalidInstanceId; the provider asks
        // again (the AWS provider within `agent_wait`), each time one call.
        while let Some(i) = self
            .faults
            .iter()
            .position(|f| matches!(f, SimFault::AgentNotReady { times } if *times > 0))
        {
            self.call("SendCommand")?;
            if let SimFault::AgentNotReady { times } = &mut self.faults[i] {
                *times -= 1;
                if *times == 0 {
                    self.faults.remove(i);
                }
            }
        }
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

    /// A daemon of `node` started at `version`: when that version changes the database
    /// ([`SimFault::ChangesDatabase`]), its data volume holds that format from now on.
    pub(super) fn daemon_started(&mut self, node: &NodeRef, version: &str) {
        let changes = self.faults.iter().any(|f| {
            matches!(f, SimFault::ChangesDatabase { coin, version: v }
                if coin == node.key.coin.as_str() && v == version)
        });
        if !changes {
            return;
        }
        if let Some(vol) = self
            .instances
            .get(&node.instance_id)
            .and_then(|i| i.data_volume.clone())
            && let Some(v) = self.volumes.get_mut(&vol)
        {
            v.format = Some(version.to_string());
        }
    }

    /// Restore `node`'s data volume from its newest completed snapshot for `reason`: a new
    /// volume from it; the instance stopped, the old volume detached and kept, the new one
    /// attached, the instance booted (see [`crate::provider::Provider::restore_data`]).
    /// Returns the snapshot's id.
    pub(super) fn restore_of(
        &mut self,
        node: &NodeRef,
        reason: &str,
    ) -> Result<String, ProviderError> {
        self.call("DescribeSnapshots")?;
        self.snapshots
            .iter()
            .filter(|(_, s)| {
                s.node.as_ref() == Some(&node.key)
                    && s.info.reason == reason
                    && s.info.state == "completed"
            })
            .max_by_key(|(id, s)| (s.info.started_ms, (*id).clone()))
            .map(|(id, _)| id.clone())
            .ok_or_else(|| ProviderError::no_snapshot_to_restore(node, reason))
    }

    /// The act of a restore from `snapshot_id` (its marker written by the caller).
    pub(super) fn restore_act(
        &mut self,
        node: &NodeRef,
        snapshot_id: &str,
        now: Millis,
    ) -> Result<(), ProviderError> {
        let snap = self
            .snapshots
            .get(snapshot_id)
            .cloned()
            .ok_or_else(|| ProviderError::no_snapshot_to_restore(node, snapshot_id))?;
        let i = self.live(node)?;
        let old_id = i.data_volume.clone();
        let old = old_id.as_ref().and_then(|v| self.volumes.get(v)).cloned();
        // A repeat after a crash finds the volume it made.
        let made = self
            .volumes
            .values()
            .find(|v| {
                v.snapshot_id.as_deref() == Some(snapshot_id)
                    && v.detached_from.is_none()
                    && Some(&v.id) != old_id.as_ref()
            })
            .map(|v| v.id.clone());
        let new_id = match made {
            Some(id) => id,
            None => {
                self.call("CreateVolume")?;
                let id = self.new_id("vol");
                let size = old.as_ref().map_or(snap.info.size_gb, |v| v.size_gb);
                self.volumes.insert(
                    id.clone(),
                    Volume {
                        id: id.clone(),
                        size_gb: size,
                        snapshot_id: Some(snapshot_id.to_string()),
                        zone: snap.info.zone.clone(),
                        used: snap.used_gb.map(|u| (now, u)),
                        sizes: vec![(now, size)],
                        format: snap.format.clone(),
                        detached_from: None,
                    },
                );
                id
            }
        };
        if !self.live(node)?.stopped {
            self.call("StopInstances")?;
            let i = self.live_mut(node)?;
            i.stopped = true;
            i.daemon.stopped = true;
        }
        if let Some(old_id) = old_id.filter(|o| *o != new_id) {
            self.call("DetachVolume")?;
            self.live_mut(node)?.data_volume = None;
            if let Some(v) = self.volumes.get_mut(&old_id) {
                v.detached_from = Some(node.instance_id.clone());
            }
        }
        if self.live(node)?.data_volume.is_none() {
            self.call("AttachVolume")?;
            self.live_mut(node)?.data_volume = Some(new_id);
        }
        self.call("StartInstances")?;
        self.live_mut(node)?.daemon.start_height = snap.height;
        self.boot(&node.instance_id, now);
        Ok(())
    }

    pub(super) fn snapshot_of(
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
                    coin: node.key.coin.to_string(),
                    zone: vol.zone.clone(),
                    size_gb: vol.size_gb,
                    started_ms: now,
                    state: "completed".into(),
                    reason: reason.to_string(),
                },
                height,
                used_gb: vol.used_gb_at(now, self.params(node.key.coin.as_str()).disk_gb_per_day),
                node: Some(node.key.clone()),
                format: vol.format.clone(),
            },
        );
        Ok(Some(id))
    }
}
