//! The production provider: EC2 (instances, EBS volumes, snapshots), Route53 (node records)
//! and SSM Run Command (restarting daemons), through the official AWS SDK for Rust.
//!
//! - Credentials come from the standard chain (environment, profiles, SSO, instance role);
//!   the endpoint can be overridden (an emulator, a VPC endpoint).
//! - Retries are the SDK's adaptive mode: throttling is retried with back-off and a client-side
//!   rate limit; a call still throttled after `max_attempts` becomes [`ProviderError::Throttled`].
//! - Observing costs O(pages), not O(instances): DescribeInstances (1,000 a page),
//!   DescribeVolumes (500), DescribeSnapshots (1,000) and ListResourceRecordSets (300). Every
//!   SDK operation is counted by an interceptor ([`CallStats`]).
//! - SSM commands always name their one instance, are waited for with a bound, and are read
//!   back with GetCommandInvocation (never ListCommandInvocations).

use super::commands::{
    BOOTSTRAP_COMMAND, is_active_command, reconfigure_command, restart_command, start_command,
    stop_command, upgrade_command,
};
use super::protocol::{InstanceFacts, InstanceRecord, confirm_marked, run_marked};
use super::*;
use crate::network::{CoinNetwork, IngressRule, ObservedGroup, Protocol, Source};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataOptionsRequest, ResourceType, Tag, TagSpecification, VolumeType,
};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_ssm::types::CommandInvocationStatus;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Error codes AWS uses for throttling.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
    "SlowDown",
];

/// How to reach AWS.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Region (default: the fleet repo's `region`, else the standard chain's).
    pub region: Option<String>,
    /// Named profile.
    pub profile: Option<String>,
    /// Endpoint override for every service.
    pub endpoint_url: Option<String>,
    /// Attempts per call, throttling included.
    pub max_attempts: u32,
    /// Adaptive retry (default): on throttling, also slow the client's own request rate.
    /// The rate limiter is shared by every client of a service in the process. `false` is
    /// the SDK's standard mode (back-off only).
    pub adaptive: bool,
    /// First retry back-off.
    pub initial_backoff: Duration,
    /// How long to wait for an SSM command.
    pub command_timeout: Duration,
    /// How long to wait for an instance's SSM agent to register (SendCommand answers
    /// `InvalidInstanceId` until then: an instance just started, by a change of type or a
    /// repair, registers a minute or two after it boots).
    pub agent_wait: Duration,
    /// Longest to establish a connection to an AWS endpoint.
    pub connect_timeout: Duration,
    /// Longest for one attempt of a call (a request and its answer).
    pub attempt_timeout: Duration,
    /// Longest for a call, its retries included: against an endpoint that accepts and never
    /// answers, a call fails with `timeout` after this, never hangs.
    pub operation_timeout: Duration,
    /// How often to poll an SSM command or an instance state.
    pub poll_interval: Duration,
    /// Extra SDK interceptors (tests use them to inject faults and isolate emulator state).
    pub interceptors: Vec<SharedInterceptor>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            region: None,
            profile: None,
            endpoint_url: None,
            max_attempts: 5,
            adaptive: true,
            initial_backoff: Duration::from_secs(1),
            command_timeout: Duration::from_secs(600),
            agent_wait: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(20),
            operation_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            interceptors: Vec::new(),
        }
    }
}

impl AwsOptions {
    /// The SDK's timeouts for every client.
    fn timeouts(&self) -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// Calls and attempts made, per operation (`ec2:DescribeInstances`…).
#[derive(Debug, Default)]
pub struct CallStats {
    calls: AtomicU64,
    attempts: AtomicU64,
    by_op: Mutex<BTreeMap<String, u64>>,
}

impl CallStats {
    /// Operations started (an operation retried three times counts once).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    /// HTTP attempts, retries included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }
    /// Calls per `service:Operation`.
    pub fn by_operation(&self) -> BTreeMap<String, u64> {
        self.by_op.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[derive(Debug)]
struct CountCalls(Arc<CallStats>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "fleet-call-counter"
    }
    fn read_before_serialization(
        &self,
        _ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = cfg.load::<Metadata>()
            && let Ok(mut by_op) = self.0.by_op.lock()
        {
            *by_op
                .entry(format!("{}:{}", m.service(), m.name()))
                .or_default() += 1;
        }
        Ok(())
    }
    fn read_before_attempt(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The AWS provider.
#[derive(Debug, Clone)]
pub struct AwsProvider {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    r53: aws_sdk_route53::Client,
    sm: aws_sdk_secretsmanager::Client,
    cw: aws_sdk_cloudwatch::Client,
    ecr: aws_sdk_ecr::Client,
    stats: Arc<CallStats>,
    opts: AwsOptions,
}

impl AwsProvider {
    /// Load the standard configuration chain and build the clients.
    pub async fn connect(opts: AwsOptions) -> AwsProvider {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &opts.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &opts.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        // The credential chain (instance metadata, SSO) is bounded too.
        let sdk = loader.timeout_config(opts.timeouts()).load().await;
        AwsProvider::from_sdk_config(&sdk, opts)
    }

    /// Build the clients from an SDK configuration.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, opts: AwsOptions) -> AwsProvider {
        let retry = if opts.adaptive {
            RetryConfig::adaptive()
        } else {
            RetryConfig::standard()
        };
        let retry = retry
            .with_max_attempts(opts.max_attempts.max(1))
            .with_initial_backoff(opts.initial_backoff);
        let stats = Arc::new(CallStats::default());
        let counter = SharedInterceptor::new(CountCalls(stats.clone()));
        let t = opts.timeouts();
        let mut ec2 = aws_sdk_ec2::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(t.clone());
        let mut ssm = aws_sdk_ssm::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(t.clone());
        let mut r53 = aws_sdk_route53::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(t.clone());
        let mut sm = aws_sdk_secretsmanager::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(t.clone());
        let mut cw = aws_sdk_cloudwatch::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(t.clone());
        let mut ecr = aws_sdk_ecr::config::Builder::from(sdk)
            .retry_config(retry)
            .timeout_config(t);
        for i in std::iter::once(&counter).chain(opts.interceptors.iter()) {
            ec2.push_interceptor(i.clone());
            ssm.push_interceptor(i.clone());
            r53.push_interceptor(i.clone());
            sm.push_interceptor(i.clone());
            cw.push_interceptor(i.clone());
            ecr.push_interceptor(i.clone());
        }
        AwsProvider {
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
            r53: aws_sdk_route53::Client::from_conf(r53.build()),
            sm: aws_sdk_secretsmanager::Client::from_conf(sm.build()),
            cw: aws_sdk_cloudwatch::Client::from_conf(cw.build()),
            ecr: aws_sdk_ecr::Client::from_conf(ecr.build()),
            stats,
            opts,
        }
    }

    /// Calls made so far.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    fn err<E>(&self, op: &str, instance: Option<&str>, e: SdkError<E>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = e.code().map(str::to_string);
        match code {
            Some(code) if THROTTLING.contains(&code.as_str()) => ProviderError::Throttled {
                op: op.to_string(),
                attempts: self.opts.max_attempts,
                code,
            },
            Some(code) if code.starts_with("InvalidInstanceID") => ProviderError::NotFound {
                instance: instance.unwrap_or("?").to_string(),
            },
            Some(code) => ProviderError::Api {
                op: op.to_string(),
                message: e.message().unwrap_or("").to_string(),
                code,
                instance: instance.map(str::to_string),
            },
            None if matches!(e, SdkError::TimeoutError(_)) => ProviderError::timed_out(
                op,
                format!(
                    "no answer within {} s (each attempt {} s, connecting {} s): the endpoint is unreachable or stalled; the next pass retries",
                    self.opts.operation_timeout.as_secs(),
                    self.opts.attempt_timeout.as_secs(),
                    self.opts.connect_timeout.as_secs()
                ),
                instance,
            ),
            None => ProviderError::Api {
                op: op.to_string(),
                code: match &e {
                    SdkError::DispatchFailure(_) => "connection",
                    SdkError::ResponseError(_) => "bad-response",
                    _ => "error",
                }
                .into(),
                message: DisplayErrorContext(&e).to_string(),
                instance: instance.map(str::to_string),
            },
        }
    }

    /// The digest of the image `name:tag` in the ECR registry of `account` in `region`
    /// (DescribeImages: no registry password, the caller's IAM identity), or None when the
    /// repository has no such tag yet. For the release watch, which opens a bump of a coin
    /// pinned by digest as a draft until its image is pushed.
    pub async fn ecr_image_digest(
        &self,
        account: &str,
        region: &str,
        name: &str,
        tag: &str,
    ) -> Result<Option<String>, ProviderError> {
        use aws_sdk_ecr::operation::describe_images::DescribeImagesError;
        use aws_sdk_ecr::types::ImageIdentifier;
        let r = self
            .ecr
            .describe_images()
            .registry_id(account)
            .repository_name(name)
            .image_ids(ImageIdentifier::builder().image_tag(tag).build())
            .customize()
            .config_override(
                aws_sdk_ecr::config::Builder::default()
                    .region(aws_config::Region::new(region.to_string())),
            )
            .send()
            .await;
        match r {
            Ok(out) => Ok(out
                .image_details()
                .iter()
                .find(|d| d.image_tags().iter().any(|t| t == tag))
                .or(out.image_details().first())
                .and_then(|d| d.image_digest())
                .map(str::to_string)),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), DescribeImagesError::ImageNotFoundException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err("ecr:DescribeImages", None, e)),
        }
    }

    /// The act of [`Provider::restore_data`] from `snapshot` (its marker written): each part
    /// looks first whether an earlier attempt did it, so a repeat after a crash anywhere
    /// finishes the job without a second volume.
    async fn restore_act(&self, node: &NodeRef, snapshot: &str) -> Result<(), ProviderError> {
        let id = node.instance_id.as_str();
        let inst = self.instance(node).await?;
        let index = node.key.index.to_string();
        let attached = data_volume_id(&inst);
        // The volume an earlier attempt made from this snapshot for this node.
        let out = self
            .ec2
            .describe_volumes()
            .filters(Self::tag_filter(tags::MANAGED, &["true"]))
            .filters(Self::tag_filter(tags::COIN, &[node.key.coin.as_str()]))
            .filters(Self::tag_filter(tags::ZONE, &[node.key.zone.as_str()]))
            .filters(Self::tag_filter(tags::INDEX, &[&index]))
            .filters(Self::filter("snapshot-id", &[snapshot]))
            .filters(Self::filter("tag-key", &[tags::RESTORES]))
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeVolumes", Some(id), e))?;
        let made = out
            .volumes()
            .iter()
            .filter(|v| {
                !matches!(
                    v.state(),
                    Some(
                        aws_sdk_ec2::types::VolumeState::Deleting
                            | aws_sdk_ec2::types::VolumeState::Deleted
                            | aws_sdk_ec2::types::VolumeState::Error
                    )
                )
            })
            .filter_map(|v| v.volume_id())
            .min()
            .map(str::to_string);
        let new = match made {
            Some(v) => v,
            None => {
                let old = attached
                    .clone()
                    .ok_or_else(|| ProviderError::no_data_volume(node))?;
                let d = self
                    .ec2
                    .describe_volumes()
                    .volume_ids(&old)
                    .send()
                    .await
                    .map_err(|e| self.err("ec2:DescribeVolumes", Some(id), e))?;
                let v = d
                    .volumes()
                    .first()
                    .ok_or_else(|| ProviderError::no_data_volume(node))?;
                let zone = v
                    .availability_zone()
                    .unwrap_or(node.key.zone.as_str())
                    .to_string();
                let mut spec = TagSpecification::builder().resource_type(ResourceType::Volume);
                for (k, val) in [
                    (tags::MANAGED, "true"),
                    (tags::COIN, node.key.coin.as_str()),
                    (tags::ZONE, node.key.zone.as_str()),
                    (tags::INDEX, index.as_str()),
                    (tags::RESTORES, old.as_str()),
                ] {
                    spec = spec.tags(Tag::builder().key(k).value(val).build());
                }
                let c = self
                    .ec2
                    .create_volume()
                    .snapshot_id(snapshot)
                    .availability_zone(zone)
                    .set_size(v.size())
                    .set_volume_type(v.volume_type().cloned())
                    .set_iops(v.iops())
                    .set_throughput(v.throughput())
                    .encrypted(true)
                    .tag_specifications(spec.build())
                    .send()
                    .await
                    .map_err(|e| self.err("ec2:CreateVolume", Some(id), e))?;
                c.volume_id().unwrap_or("").to_string()
            }
        };
        // Stopped for the swap: nothing writes to the volume it leaves.
        if state_of(&inst) == InstanceState::Pending {
            self.wait_state(node, "running").await?;
        }
        if state_of(&inst) != InstanceState::Stopped {
            self.stop_and_wait(node).await?;
        }
        if let Some(old) = attached.as_ref().filter(|o| **o != new) {
            self.detach_data_volume(old, node).await?;
            // Kept, not deleted: it holds what the failed version wrote.
            self.ec2
                .create_tags()
                .resources(old)
                .tags(Tag::builder().key(tags::RESTORED_AWAY).value(id).build())
                .send()
                .await
                .map_err(|e| self.err("ec2:CreateTags", Some(id), e))?;
        }
        if attached.as_deref() != Some(new.as_str()) {
            self.attach_data_volume(&new, node).await?;
            self.own_data_volume(id).await?;
        }
        self.start(id).await?;
        Ok(())
    }

    /// Stop the node's instance and wait until it is stopped.
    async fn stop_and_wait(&self, node: &NodeRef) -> Result<(), ProviderError> {
        let id = node.instance_id.as_str();
        self.ec2
            .stop_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| self.err("ec2:StopInstances", Some(id), e))?;
        self.wait_state(node, "stopped").await
    }

    /// Start the instance `id` (not waiting: its boot runs the node's set-up).
    async fn start(&self, id: &str) -> Result<(), ProviderError> {
        self.ec2
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| self.err("ec2:StartInstances", Some(id), e))
            .map(|_| ())
    }

    /// From now on the data volume at [`DATA_DEVICE`] of instance `id` is deleted with it, as
    /// a launched node's is (retire snapshots it first).
    async fn own_data_volume(&self, id: &str) -> Result<(), ProviderError> {
        self.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .block_device_mappings(
                aws_sdk_ec2::types::InstanceBlockDeviceMappingSpecification::builder()
                    .device_name(DATA_DEVICE)
                    .ebs(
                        aws_sdk_ec2::types::EbsInstanceBlockDeviceSpecification::builder()
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("ec2:ModifyInstanceAttribute", Some(id), e))
            .map(|_| ())
    }

    /// A filter on the tag `key`.
    fn tag_filter(key: &str, values: &[&str]) -> Filter {
        Self::filter(&format!("tag:{key}"), values)
    }

    fn filter(name: &str, values: &[&str]) -> Filter {
        let mut f = Filter::builder().name(name);
        for v in values {
            f = f.values(*v);
        }
        f.build()
    }

    /// Grow `disk` of the node to `size_gb`: ModifyVolume, wait until the instance sees the
    /// size, then the file system over SSM. Refuses to shrink.
    async fn grow_disk(
        &self,
        node: &NodeRef,
        disk: Disk,
        size_gb: u32,
    ) -> Result<Outcome, ProviderError> {
        let inst = self.instance(node).await?;
        let vol = match disk {
            Disk::Data => data_volume_id(&inst),
            Disk::Root => root_volume_id(&inst),
        }
        .ok_or_else(|| ProviderError::no_disk(node, disk))?;
        let out = self
            .ec2
            .describe_volumes()
            .volume_ids(&vol)
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeVolumes", Some(&node.instance_id), e))?;
        let current = out
            .volumes()
            .first()
            .and_then(|v| v.size())
            .unwrap_or(0)
            .max(0) as u32;
        if size_gb < current {
            return Err(ProviderError::shrink(node, disk, &vol, current, size_gb));
        }
        if size_gb == current {
            return Ok(Outcome::AlreadyDone);
        }
        self.ec2
            .modify_volume()
            .volume_id(&vol)
            .size(size_gb as i32)
            .send()
            .await
            .map_err(|e| self.err("ec2:ModifyVolume", Some(&node.instance_id), e))?;
        // The instance sees the new size only once the modification is `optimizing` (or done);
        // growing the file system before that would grow nothing.
        let deadline = tokio::time::Instant::now() + self.opts.command_timeout;
        loop {
            let out = self
                .ec2
                .describe_volumes_modifications()
                .volume_ids(&vol)
                .send()
                .await
                .map_err(|e| {
                    self.err(
                        "ec2:DescribeVolumesModifications",
                        Some(&node.instance_id),
                        e,
                    )
                })?;
            let state = out
                .volumes_modifications()
                .iter()
                .filter(|m| m.target_size() == Some(size_gb as i32))
                .filter_map(|m| m.modification_state())
                .map(|s| s.as_str().to_string())
                .next();
            match state.as_deref() {
                Some("optimizing" | "completed") => break,
                Some("failed") => {
                    return Err(ProviderError::Api {
                        op: "ec2:ModifyVolume".into(),
                        code: "ModificationFailed".into(),
                        message: format!("growing {vol} to {size_gb} GB failed"),
                        instance: Some(node.instance_id.clone()),
                    });
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::timed_out(
                    "ec2:DescribeVolumesModifications",
                    format!("{vol} did not reach `optimizing` within the bound"),
                    Some(&node.instance_id),
                ));
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
        self.run_command(
            node,
            disk.grow_command(),
            &format!("fleet: grow {} {} to {size_gb} GB", node.key, disk.name()),
        )
        .await?;
        Ok(Outcome::Done)
    }

    /// RunInstances for `spec`: in fleet.yaml's groups and the coin's own (made or brought
    /// in step first), its data volume of `data_volume_gb` (restored from the spec's snapshot)
    /// or none (a replacement, which takes over its node's volume), `extra` tags on the
    /// instance only, idempotent by `token`. Returns the instance id and private address.
    async fn run_instance(
        &self,
        spec: &LaunchSpec,
        data_volume_gb: Option<u32>,
        extra: &[(&str, &str)],
        token: &str,
    ) -> Result<(String, Option<String>), ProviderError> {
        let (own, _) = self.ensure_coin_network(&spec.network).await?;
        let mut groups = spec.security_groups.clone();
        groups.push(own);
        let root_device = self
            .ec2
            .describe_images()
            .image_ids(&spec.ami)
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeImages", None, e))?
            .images()
            .first()
            .and_then(|i| i.root_device_name())
            .map(str::to_string)
            .ok_or_else(|| ProviderError::Refused {
                reason: format!(
                    "AMI {} not found in this region; check `node_ami` in fleet.yaml",
                    spec.ami
                ),
            })?;
        let mut tags_inst = TagSpecification::builder().resource_type(ResourceType::Instance);
        let mut tags_vol = TagSpecification::builder().resource_type(ResourceType::Volume);
        for (k, v) in &spec.tags {
            tags_inst = tags_inst.tags(Tag::builder().key(k).value(v).build());
            if k != "Name" && k != tags::VERSION {
                tags_vol = tags_vol.tags(Tag::builder().key(k).value(v).build());
            }
        }
        for (k, v) in extra {
            tags_inst = tags_inst.tags(Tag::builder().key(*k).value(*v).build());
        }
        let mut req = self
            .ec2
            .run_instances()
            .image_id(&spec.ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::from(
                spec.instance_type.as_str(),
            ))
            .min_count(1)
            .max_count(1)
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(&spec.instance_profile)
                    .build(),
            )
            .user_data(aws_smithy_types::base64::encode(userdata::encode(
                &spec.user_data,
            )))
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(root_device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(spec.root_volume_gb as i32)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .encrypted(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(tags_inst.build())
            .tag_specifications(tags_vol.build())
            .client_token(token.chars().take(64).collect::<String>());
        if let Some(gb) = data_volume_gb {
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(DATA_DEVICE)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(gb as i32)
                            .volume_type(VolumeType::Gp3)
                            // retire snapshots the volume before terminating.
                            .delete_on_termination(true)
                            .encrypted(true)
                            .set_snapshot_id(spec.snapshot_id.clone())
                            .build(),
                    )
                    .build(),
            );
        }
        if spec.public_ip {
            // A public address can only be asked for on the network interface,
            // which then carries the subnet and the groups.
            req = req.network_interfaces(
                aws_sdk_ec2::types::InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(&spec.subnet_id)
                    .set_groups(Some(groups))
                    .associate_public_ip_address(true)
                    .delete_on_termination(true)
                    .build(),
            );
        } else {
            req = req.subnet_id(&spec.subnet_id);
            for sg in &groups {
                req = req.security_group_ids(sg);
            }
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err("ec2:RunInstances", None, e))?;
        let inst = out.instances().first().ok_or_else(|| ProviderError::Api {
            op: "ec2:RunInstances".into(),
            code: "bad-response".into(),
            message: "no instance in the response".into(),
            instance: None,
        })?;
        Ok((
            inst.instance_id().unwrap_or("").to_string(),
            inst.private_ip_address().map(str::to_string),
        ))
    }

    /// The instance launched to replace `old_id` (tag `fleet:replaces`), if one is not
    /// terminated.
    async fn replacement_of(
        &self,
        old_id: &str,
    ) -> Result<Option<aws_sdk_ec2::types::Instance>, ProviderError> {
        let out = self
            .ec2
            .describe_instances()
            .filters(Self::tag_filter(tags::MANAGED, &["true"]))
            .filters(Self::tag_filter(tags::REPLACES, &[old_id]))
            .filters(Self::filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped"],
            ))
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeInstances", Some(old_id), e))?;
        let mut found: Vec<aws_sdk_ec2::types::Instance> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect();
        found.sort_by(|a, b| a.instance_id().cmp(&b.instance_id()));
        Ok(found.into_iter().next())
    }

    /// Wait until volume `vol` is `want` (`available`, `in-use`).
    async fn wait_volume(&self, vol: &str, want: &str, node: &str) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.opts.command_timeout;
        loop {
            let out = self
                .ec2
                .describe_volumes()
                .volume_ids(vol)
                .send()
                .await
                .map_err(|e| self.err("ec2:DescribeVolumes", Some(node), e))?;
            let state = out
                .volumes()
                .first()
                .and_then(|v| v.state())
                .map(|s| s.as_str().to_string());
            if state.as_deref() == Some(want) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::timed_out(
                    "ec2:DescribeVolumes",
                    format!("volume {vol} did not become {want} within the bound"),
                    Some(node),
                ));
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// Detach the data volume `vol` from `from` (stopped: nothing writes to it).
    async fn detach_data_volume(&self, vol: &str, from: &NodeRef) -> Result<(), ProviderError> {
        self.ec2
            .detach_volume()
            .volume_id(vol)
            .instance_id(&from.instance_id)
            .send()
            .await
            .map_err(|e| self.err("ec2:DetachVolume", Some(&from.instance_id), e))?;
        Ok(())
    }

    /// Attach the data volume `vol` to `to` at the data device once it is free, and wait
    /// until it is in use there: a volume moves between a node's instances, never copied.
    async fn attach_data_volume(&self, vol: &str, to: &NodeRef) -> Result<(), ProviderError> {
        self.wait_volume(vol, "available", &to.instance_id).await?;
        self.ec2
            .attach_volume()
            .volume_id(vol)
            .instance_id(&to.instance_id)
            .device(DATA_DEVICE)
            .send()
            .await
            .map_err(|e| self.err("ec2:AttachVolume", Some(&to.instance_id), e))?;
        self.wait_volume(vol, "in-use", &to.instance_id).await
    }

    /// The size (GiB) and origin snapshot of every volume `filters` select, all pages.
    async fn volume_sizes(
        &self,
        filters: &[Filter],
    ) -> Result<BTreeMap<String, (u32, Option<String>)>, ProviderError> {
        let mut volumes = BTreeMap::new();
        let mut token = None;
        loop {
            let out = self
                .ec2
                .describe_volumes()
                .set_filters(Some(filters.to_vec()))
                .max_results(500)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.err("ec2:DescribeVolumes", None, e))?;
            for v in out.volumes() {
                if let Some(id) = v.volume_id() {
                    volumes.insert(
                        id.to_string(),
                        (
                            v.size().unwrap_or(0).max(0) as u32,
                            v.snapshot_id()
                                .filter(|s| !s.is_empty())
                                .map(str::to_string),
                        ),
                    );
                }
            }
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(volumes);
            }
        }
    }

    /// One managed, non-terminated instance by id.
    async fn instance(
        &self,
        node: &NodeRef,
    ) -> Result<aws_sdk_ec2::types::Instance, ProviderError> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(&node.instance_id)
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeInstances", Some(&node.instance_id), e))?;
        let inst = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(node.instance_id.as_str()))
            .cloned();
        match inst {
            Some(i)
                if tag_map(i.tags()).get(tags::MANAGED).map(String::as_str) == Some("true")
                    && !matches!(
                        i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                        Some("terminated" | "shutting-down")
                    ) =>
            {
                Ok(i)
            }
            _ => Err(ProviderError::NotFound {
                instance: node.instance_id.clone(),
            }),
        }
    }

    async fn create_tags(&self, id: &str, tags: &[(&str, &str)]) -> Result<(), ProviderError> {
        let mut req = self.ec2.create_tags().resources(id);
        for (k, v) in tags {
            req = req.tags(Tag::builder().key(*k).value(*v).build());
        }
        req.send()
            .await
            .map_err(|e| self.err("ec2:CreateTags", Some(id), e))?;
        Ok(())
    }

    async fn remove_tag(&self, id: &str, key: &str) -> Result<(), ProviderError> {
        self.ec2
            .delete_tags()
            .resources(id)
            .tags(Tag::builder().key(key).build())
            .send()
            .await
            .map_err(|e| self.err("ec2:DeleteTags", Some(id), e))?;
        Ok(())
    }

    /// Run one shell command on one instance and wait for its result.
    async fn run_command(
        &self,
        node: &NodeRef,
        command: &str,
        comment: &str,
    ) -> Result<String, ProviderError> {
        let id = node.instance_id.as_str();
        let agent_deadline = tokio::time::Instant::now() + self.opts.agent_wait;
        let out = loop {
            let sent = self
                .ssm
                .send_command()
                .document_name("AWS-RunShellScript")
                .instance_ids(id)
                .parameters("commands", vec![command.to_string()])
                .timeout_seconds(self.opts.command_timeout.as_secs().clamp(30, 2_592_000) as i32)
                .comment(comment.chars().take(100).collect::<String>())
                .send()
                .await
                .map_err(|e| self.err("ssm:SendCommand", Some(id), e));
            match sent {
                Ok(out) => break out,
                // The instance's agent has not registered yet (it just booted): nothing
                // was sent; ask again until it has, within `agent_wait`.
                Err(ProviderError::Api { ref code, .. })
                    if code == "InvalidInstanceId"
                        && tokio::time::Instant::now() < agent_deadline =>
                {
                    tokio::time::sleep(self.opts.poll_interval).await;
                }
                Err(e) => return Err(e),
            }
        };
        let command_id = out
            .command()
            .and_then(|c| c.command_id())
            .ok_or_else(|| ProviderError::Api {
                op: "ssm:SendCommand".into(),
                code: "bad-response".into(),
                message: "no command id in the response".into(),
                instance: Some(id.to_string()),
            })?
            .to_string();
        let deadline = tokio::time::Instant::now() + self.opts.command_timeout;
        loop {
            let r = self
                .ssm
                .get_command_invocation()
                .command_id(&command_id)
                .instance_id(id)
                .send()
                .await;
            match r {
                Ok(inv) => match inv.status() {
                    Some(CommandInvocationStatus::Success) => {
                        return Ok(inv.standard_output_content().unwrap_or("").to_string());
                    }
                    Some(
                        s @ (CommandInvocationStatus::Failed
                        | CommandInvocationStatus::Cancelled
                        | CommandInvocationStatus::TimedOut),
                    ) => {
                        return Err(ProviderError::CommandFailed {
                            instance: id.to_string(),
                            status: s.as_str().to_string(),
                            exit_code: inv.response_code(),
                            stderr: inv.standard_error_content().unwrap_or("").to_string(),
                        });
                    }
                    _ => {}
                },
                // Right after SendCommand the invocation may not exist yet.
                Err(e) if e.code() == Some("InvocationDoesNotExist") => {}
                Err(e) => return Err(self.err("ssm:GetCommandInvocation", Some(id), e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::CommandTimeout {
                    instance: id.to_string(),
                    command_id,
                    secs: self.opts.command_timeout.as_secs(),
                });
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    async fn wait_state(&self, node: &NodeRef, want: &str) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.opts.command_timeout;
        loop {
            let i = self.instance(node).await?;
            if i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some(want) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::timed_out(
                    "ec2:DescribeInstances",
                    format!("instance did not become {want} within the bound"),
                    Some(&node.instance_id),
                ));
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// The record `name` in the zone, if it exists.
    async fn record(&self, zone: &str, name: &str) -> Result<Option<DnsRecord>, ProviderError> {
        let out = self
            .r53
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(name)
            .start_record_type(RrType::A)
            .max_items(1)
            .send()
            .await
            .map_err(|e| self.err("route53:ListResourceRecordSets", None, e))?;
        Ok(out
            .resource_record_sets()
            .iter()
            .filter_map(to_record)
            .find(|r| r.name == name))
    }

    async fn change_record(
        &self,
        zone: &str,
        action: ChangeAction,
        rec: &DnsRecord,
    ) -> Result<(), ProviderError> {
        let build = || -> Result<ChangeBatch, aws_sdk_route53::error::BuildError> {
            let mut set = ResourceRecordSet::builder()
                .name(&rec.name)
                .r#type(RrType::A)
                .ttl(rec.ttl);
            for v in &rec.values {
                set = set.resource_records(ResourceRecord::builder().value(v).build()?);
            }
            ChangeBatch::builder()
                .comment("fleet")
                .changes(
                    Change::builder()
                        .action(action)
                        .resource_record_set(set.build()?)
                        .build()?,
                )
                .build()
        };
        let batch = build().map_err(|e| ProviderError::Setup(format!("Route53 change: {e}")))?;
        self.r53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| self.err("route53:ChangeResourceRecordSets", None, e))?;
        Ok(())
    }

    async fn upsert_record(&self, target: &DnsTarget, ip: &str) -> Result<Outcome, ProviderError> {
        let want = DnsRecord {
            name: target.name.clone(),
            values: vec![ip.to_string()],
            ttl: 60,
        };
        if self
            .record(&target.hosted_zone_id, &target.name)
            .await?
            .as_ref()
            == Some(&want)
        {
            return Ok(Outcome::AlreadyDone);
        }
        self.change_record(&target.hosted_zone_id, ChangeAction::Upsert, &want)
            .await?;
        Ok(Outcome::Done)
    }

    async fn snapshot_instance(
        &self,
        node: &NodeRef,
        inst: &aws_sdk_ec2::types::Instance,
        reason: &str,
    ) -> Result<Option<String>, ProviderError> {
        let Some(vol) = data_volume_id(inst) else {
            return Ok(None);
        };
        let tags = tag_map(inst.tags());
        let zone = inst
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or(node.key.zone.as_str())
            .to_string();
        let index = node.key.index.to_string();
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Snapshot);
        for (k, v) in [
            (tags::MANAGED, "true"),
            (tags::COIN, node.key.coin.as_str()),
            (tags::ZONE, zone.as_str()),
            (tags::INDEX, index.as_str()),
            (tags::REASON, reason),
            (
                tags::VERSION,
                tags.get(tags::VERSION).map(String::as_str).unwrap_or(""),
            ),
        ] {
            spec = spec.tags(Tag::builder().key(k).value(v).build());
        }
        let out = self
            .ec2
            .create_snapshot()
            .volume_id(&vol)
            .description(format!(
                "fleet: {} {} ({reason})",
                node.key, node.instance_id
            ))
            .tag_specifications(spec.build())
            .send()
            .await
            .map_err(|e| self.err("ec2:CreateSnapshot", Some(&node.instance_id), e))?;
        Ok(out.snapshot_id().map(str::to_string))
    }
}

/// An instance's security groups: those EC2 lists for the instance, which are its primary
/// network interface's (moto lists them only on the interface when the instance was launched
/// with one, as fleet does for a public address).
fn groups_of(i: &aws_sdk_ec2::types::Instance) -> Vec<String> {
    let ids = |gs: &[aws_sdk_ec2::types::GroupIdentifier]| -> Vec<String> {
        gs.iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect()
    };
    let own = ids(i.security_groups());
    if !own.is_empty() {
        return own;
    }
    i.network_interfaces()
        .iter()
        .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
        .map(|n| ids(n.groups()))
        .unwrap_or_default()
}

/// A security group's inbound rules, one per source (EC2 groups several in a permission).
fn rules_of(g: &aws_sdk_ec2::types::SecurityGroup) -> Vec<IngressRule> {
    let mut out = Vec::new();
    for p in g.ip_permissions() {
        let protocol = Protocol::parse(p.ip_protocol().unwrap_or("-1"));
        let rule = |source: Source| IngressRule {
            protocol: protocol.clone(),
            from_port: p.from_port().unwrap_or(-1),
            to_port: p.to_port().unwrap_or(-1),
            source,
        };
        let sources = p
            .ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip())
            .map(|c| Source::Ipv4(c.to_string()))
            .chain(
                p.ipv6_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ipv6())
                    .map(|c| Source::Ipv6(c.to_string())),
            )
            .chain(
                p.user_id_group_pairs()
                    .iter()
                    .filter_map(|r| r.group_id())
                    .map(|g| Source::Group(g.to_string())),
            )
            .chain(
                p.prefix_list_ids()
                    .iter()
                    .filter_map(|r| r.prefix_list_id())
                    .map(|l| Source::PrefixList(l.to_string())),
            );
        out.extend(sources.map(rule));
    }
    out.sort();
    out
}

/// The EC2 permission of one rule.
fn permission(r: &IngressRule) -> aws_sdk_ec2::types::IpPermission {
    use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, PrefixListId, UserIdGroupPair};
    let p = IpPermission::builder()
        .ip_protocol(r.protocol.as_str())
        .from_port(r.from_port)
        .to_port(r.to_port);
    match &r.source {
        Source::Ipv4(c) => p.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Source::Ipv6(c) => p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
        Source::Group(g) => p.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
        Source::PrefixList(l) => {
            p.prefix_list_ids(PrefixListId::builder().prefix_list_id(l).build())
        }
    }
    .build()
}

fn observed_group(g: &aws_sdk_ec2::types::SecurityGroup) -> ObservedGroup {
    ObservedGroup {
        group_id: g.group_id().unwrap_or("").to_string(),
        name: g.group_name().unwrap_or("").to_string(),
        coin: tag_map(g.tags()).get(tags::COIN).cloned(),
        vpc_id: g.vpc_id().unwrap_or("").to_string(),
        rules: rules_of(g),
    }
}

/// An instance as EC2 describes it: its facts, its tags interpreted (volume sizes are
/// read separately and filled in).
fn observed_instance(id: &str, i: &aws_sdk_ec2::types::Instance) -> ObservedInstance {
    ObservedInstance::new(
        id.to_string(),
        tag_map(i.tags()),
        state_of(i),
        i.instance_type()
            .map(|t| t.as_str())
            .unwrap_or("")
            .to_string(),
        i.private_ip_address().map(str::to_string),
        data_volume_id(i).map(|v| ObservedVolume {
            volume_id: v,
            size_gb: 0,
            snapshot_id: None,
        }),
    )
    .with_security_groups(groups_of(i))
    .with_vpc(i.vpc_id().map(str::to_string))
    .with_image(i.image_id().map(str::to_string))
    .with_subnet(i.subnet_id().map(str::to_string))
    .with_public_ip(i.public_ip_address().is_some_and(|a| !a.is_empty()))
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// The volume at the instance's root device.
fn root_volume_id(i: &aws_sdk_ec2::types::Instance) -> Option<String> {
    let root = i.root_device_name()?;
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_id())
        .map(str::to_string)
}

fn data_volume_id(i: &aws_sdk_ec2::types::Instance) -> Option<String> {
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(DATA_DEVICE))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_id())
        .map(str::to_string)
}

fn to_record(r: &ResourceRecordSet) -> Option<DnsRecord> {
    if r.r#type() != &RrType::A || r.alias_target().is_some() {
        return None;
    }
    let name = r.name().trim_end_matches('.').to_ascii_lowercase();
    Some(DnsRecord {
        name,
        values: r
            .resource_records()
            .iter()
            .map(|v| v.value().to_string())
            .collect(),
        ttl: r.ttl().unwrap_or(0),
    })
}

fn millis(t: Option<&aws_smithy_types::DateTime>) -> u64 {
    t.and_then(|t| t.to_millis().ok()).unwrap_or(0).max(0) as u64
}

fn state_of(i: &aws_sdk_ec2::types::Instance) -> InstanceState {
    InstanceState::parse(
        i.state()
            .and_then(|s| s.name())
            .map(|n| n.as_str())
            .unwrap_or("unknown"),
    )
}

/// The protocol's primitives: DescribeInstances by id, CreateTags, DeleteTags.
#[async_trait]
impl InstanceRecord for AwsProvider {
    async fn read(&self, node: &NodeRef) -> Result<InstanceFacts, ProviderError> {
        let i = self.instance(node).await?;
        Ok(InstanceFacts {
            tags: tag_map(i.tags()),
            state: state_of(&i),
            instance_type: i
                .instance_type()
                .map(|t| t.as_str())
                .unwrap_or("")
                .to_string(),
        })
    }

    async fn write_tags(&self, node: &NodeRef, t: &[(&str, &str)]) -> Result<(), ProviderError> {
        self.create_tags(&node.instance_id, t).await
    }

    async fn delete_tag(&self, node: &NodeRef, key: &str) -> Result<(), ProviderError> {
        self.remove_tag(&node.instance_id, key).await
    }
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn api_calls(&self) -> u64 {
        self.stats.calls()
    }

    async fn observe(&self, scope: &Scope) -> Result<Observation, ProviderError> {
        let before = self.stats.calls();
        // Instances: every managed one that is not terminated.
        let mut raw = Vec::new();
        // Root volumes by instance, and the devices they are at (for DescribeVolumes).
        let mut roots: BTreeMap<String, String> = BTreeMap::new();
        let mut root_devices = std::collections::BTreeSet::<String>::new();
        let mut token = None;
        loop {
            let out = self
                .ec2
                .describe_instances()
                .filters(Self::tag_filter(tags::MANAGED, &["true"]))
                .filters(Self::filter(
                    "instance-state-name",
                    &["pending", "running", "stopping", "stopped", "shutting-down"],
                ))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.err("ec2:DescribeInstances", None, e))?;
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = i.instance_id() else { continue };
                raw.push(observed_instance(id, i));
                if let (Some(dev), Some(vol)) = (i.root_device_name(), root_volume_id(i)) {
                    root_devices.insert(dev.to_string());
                    roots.insert(id.to_string(), vol);
                }
            }
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        // Data and root volumes: sizes and origins.
        let devices: Vec<&str> = std::iter::once(DATA_DEVICE)
            .chain(root_devices.iter().map(String::as_str))
            .collect();
        let volumes = self
            .volume_sizes(&[
                Self::tag_filter(tags::MANAGED, &["true"]),
                Self::filter("attachment.device", &devices),
            ])
            .await?;
        for r in &mut raw {
            if let Some(v) = &mut r.data_volume
                && let Some((size, snap)) = volumes.get(&v.volume_id)
            {
                v.size_gb = *size;
                v.snapshot_id = snap.clone();
            }
            if let Some(vol) = roots.get(&r.instance_id)
                && let Some((size, snap)) = volumes.get(vol)
            {
                r.root_volume = Some(ObservedVolume {
                    volume_id: vol.clone(),
                    size_gb: *size,
                    snapshot_id: snap.clone(),
                });
            }
        }
        // Snapshots fleet took.
        let mut snapshots = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .ec2
                .describe_snapshots()
                .owner_ids("self")
                .filters(Self::tag_filter(tags::MANAGED, &["true"]))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.err("ec2:DescribeSnapshots", None, e))?;
            for s in out.snapshots() {
                let t = tag_map(s.tags());
                snapshots.push(SnapshotInfo {
                    snapshot_id: s.snapshot_id().unwrap_or("").to_string(),
                    coin: t.get(tags::COIN).cloned().unwrap_or_default(),
                    zone: t.get(tags::ZONE).cloned().unwrap_or_default(),
                    size_gb: s.volume_size().unwrap_or(0).max(0) as u32,
                    started_ms: millis(s.start_time()),
                    state: s.state().map(|s| s.as_str()).unwrap_or("").to_string(),
                    reason: t.get(tags::REASON).cloned().unwrap_or_default(),
                });
            }
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        // The coins' own security groups.
        let mut groups = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .ec2
                .describe_security_groups()
                .filters(Self::tag_filter(tags::MANAGED, &["true"]))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.err("ec2:DescribeSecurityGroups", None, e))?;
            groups.extend(out.security_groups().iter().map(observed_group));
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        // The secrets the coins name: listed by name, ten names a request (ListSecrets' limit
        // per filter; its name filter matches prefixes, so only exact names count). Values are
        // never read.
        let mut secrets: BTreeMap<String, SecretState> = BTreeMap::new();
        for names in scope.secrets.chunks(10) {
            let mut token = None;
            loop {
                let out = self
                    .sm
                    .list_secrets()
                    .filters(
                        aws_sdk_secretsmanager::types::Filter::builder()
                            .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                            .set_values(Some(names.to_vec()))
                            .build(),
                    )
                    .include_planned_deletion(true)
                    .max_results(100)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.err("secretsmanager:ListSecrets", None, e))?;
                for s in out.secret_list() {
                    let Some(name) = s.name().filter(|n| names.iter().any(|w| w == n)) else {
                        continue;
                    };
                    let state = if s.deleted_date().is_some() {
                        SecretState::ScheduledForDeletion
                    } else {
                        SecretState::Exists
                    };
                    let e = secrets.entry(name.to_string()).or_insert(state);
                    if state == SecretState::Exists {
                        *e = state;
                    }
                }
                token = out
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        for name in &scope.secrets {
            secrets.entry(name.clone()).or_insert(SecretState::Missing);
        }
        // Node records.
        let domain = scope.internal_domain.as_str();
        let mut dns = Vec::new();
        let mut start: Option<(String, RrType)> = None;
        loop {
            let (name, ty) = match start.take() {
                Some((n, t)) => (Some(n), Some(t)),
                None => (None, None),
            };
            let out = self
                .r53
                .list_resource_record_sets()
                .hosted_zone_id(scope.hosted_zone_id.as_str())
                .max_items(300)
                .set_start_record_name(name)
                .set_start_record_type(ty)
                .send()
                .await
                .map_err(|e| self.err("route53:ListResourceRecordSets", None, e))?;
            dns.extend(
                out.resource_record_sets()
                    .iter()
                    .filter_map(to_record)
                    .filter(|r| tags::node_record_coin(&r.name, domain).is_some()),
            );
            match (
                out.is_truncated(),
                out.next_record_name(),
                out.next_record_type(),
            ) {
                (true, Some(n), Some(t)) => start = Some((n.to_string(), t.clone())),
                _ => break,
            }
        }
        let calls = self.stats.calls() - before;
        Ok(Observation::new(raw, dns, snapshots, calls)
            .with_groups(groups)
            .with_secrets(secrets))
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(String, Outcome), ProviderError> {
        let key = NodeKey::of(&spec.slot);
        let index = key.index.to_string();
        let existing = self
            .ec2
            .describe_instances()
            .filters(Self::tag_filter(tags::MANAGED, &["true"]))
            .filters(Self::tag_filter(tags::COIN, &[key.coin.as_str()]))
            .filters(Self::tag_filter(tags::ZONE, &[key.zone.as_str()]))
            .filters(Self::tag_filter(tags::INDEX, &[&index]))
            .filters(Self::filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped"],
            ))
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeInstances", None, e))?;
        let mut found: Vec<(String, Option<String>)> = existing
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some((
                    i.instance_id()?.to_string(),
                    i.private_ip_address().map(str::to_string),
                ))
            })
            .collect();
        found.sort();
        let (id, ip, launched) = match found.into_iter().next() {
            Some((id, ip)) => (id, ip, false),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let token = format!("fleet-{}-{}-{}-{nanos:x}", key.coin, key.zone, key.index);
                let (id, ip) = self
                    .run_instance(spec, Some(spec.data_volume_gb), &[], &token)
                    .await?;
                (id, ip, true)
            }
        };
        let ip = match ip {
            Some(ip) => ip,
            None => self
                .instance(&NodeRef {
                    key: key.clone(),
                    instance_id: id.clone(),
                })
                .await?
                .private_ip_address()
                .map(str::to_string)
                .ok_or_else(|| ProviderError::Api {
                    op: "ec2:DescribeInstances".into(),
                    code: "no-address".into(),
                    message: "the instance has no private address yet; the next pass retries"
                        .into(),
                    instance: Some(id.clone()),
                })?,
        };
        let dns = self.upsert_record(&spec.dns, &ip).await?;
        let outcome = if launched || dns == Outcome::Done {
            Outcome::Done
        } else {
            Outcome::AlreadyDone
        };
        Ok((id, outcome))
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
            self.run_command(node, &command, &format!("fleet: {} to {version}", node.key))
                .await
                .map(drop)
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
            self.run_command(node, &command, &format!("fleet: reconfigure {}", node.key))
                .await
                .map(drop)
        })
        .await
    }

    async fn set_tags(
        &self,
        node: &NodeRef,
        volume_id: Option<&str>,
        change: &TagChange,
    ) -> Result<Outcome, ProviderError> {
        let facts = self.read(node).await?;
        let set = !change.set.iter().all(|(k, v)| facts.tags.get(k) == Some(v));
        let unset: Vec<&String> = change
            .unset
            .iter()
            .filter(|k| facts.tags.contains_key(*k))
            .collect();
        let record = facts.tags.get(tags::COIN_TAGS) != Some(&change.record);
        if !set && unset.is_empty() && !record {
            return Ok(Outcome::AlreadyDone);
        }
        if set {
            let mut req = self.ec2.create_tags().resources(node.instance_id.as_str());
            if let Some(v) = volume_id {
                req = req.resources(v);
            }
            for (k, v) in &change.set {
                req = req.tags(Tag::builder().key(k).value(v).build());
            }
            req.send()
                .await
                .map_err(|e| self.err("ec2:CreateTags", Some(&node.instance_id), e))?;
        }
        if !unset.is_empty() {
            let mut req = self.ec2.delete_tags().resources(node.instance_id.as_str());
            if let Some(v) = volume_id {
                req = req.resources(v);
            }
            for k in unset {
                req = req.tags(Tag::builder().key(k).build());
            }
            req.send()
                .await
                .map_err(|e| self.err("ec2:DeleteTags", Some(&node.instance_id), e))?;
        }
        if record {
            self.create_tags(&node.instance_id, &[(tags::COIN_TAGS, &change.record)])
                .await?;
        }
        Ok(Outcome::Done)
    }

    async fn ensure_coin_network(
        &self,
        net: &CoinNetwork,
    ) -> Result<(String, Outcome), ProviderError> {
        let found = self
            .ec2
            .describe_security_groups()
            .filters(Self::tag_filter(tags::MANAGED, &["true"]))
            .filters(Self::tag_filter(tags::COIN, &[net.coin.as_str()]))
            .filters(Self::filter("vpc-id", &[net.vpc_id.as_str()]))
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeSecurityGroups", None, e))?;
        let found = found
            .security_groups()
            .iter()
            .map(observed_group)
            .min_by(|a, b| a.group_id.cmp(&b.group_id));
        let (id, have, mut outcome) = match found {
            Some(g) => (g.group_id, g.rules, Outcome::AlreadyDone),
            None => {
                let mut tagging =
                    TagSpecification::builder().resource_type(ResourceType::SecurityGroup);
                for (k, v) in net.tags() {
                    tagging = tagging.tags(Tag::builder().key(k).value(v).build());
                }
                let out = self
                    .ec2
                    .create_security_group()
                    .group_name(net.group_name())
                    .description(net.description())
                    .vpc_id(&net.vpc_id)
                    .tag_specifications(tagging.build())
                    .send()
                    .await
                    .map_err(|e| match self.err("ec2:CreateSecurityGroup", None, e) {
                        ProviderError::Api { code, .. } if code == "InvalidGroup.Duplicate" => {
                            ProviderError::Refused {
                                reason: format!(
                                    "a security group named {} exists in {} without fleet's tags (fleet:managed, fleet:coin={}): fleet does not take over a group it did not make; rename or delete that group",
                                    net.group_name(),
                                    net.vpc_id,
                                    net.coin
                                ),
                            }
                        }
                        e => e,
                    })?;
                let id = out.group_id().unwrap_or("").to_string();
                // EC2 gives a new group an allow-all outbound rule and no inbound one.
                (id, vec![], Outcome::Done)
            }
        };
        let change = net.diff(&have);
        if !change.add.is_empty() {
            let mut req = self.ec2.authorize_security_group_ingress().group_id(&id);
            for r in &change.add {
                req = req.ip_permissions(permission(r));
            }
            match req.send().await {
                Ok(_) => {}
                // Another pass added them meanwhile: the rules are there either way.
                Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {}
                Err(e) => return Err(self.err("ec2:AuthorizeSecurityGroupIngress", None, e)),
            }
            outcome = Outcome::Done;
        }
        if !change.revoke.is_empty() {
            let mut req = self.ec2.revoke_security_group_ingress().group_id(&id);
            for r in &change.revoke {
                req = req.ip_permissions(permission(r));
            }
            req.send()
                .await
                .map_err(|e| self.err("ec2:RevokeSecurityGroupIngress", None, e))?;
            outcome = Outcome::Done;
        }
        Ok((id, outcome))
    }

    async fn set_security_groups(
        &self,
        node: &NodeRef,
        groups: &[String],
    ) -> Result<Outcome, ProviderError> {
        let mut have = groups_of(&self.instance(node).await?);
        have.sort();
        let mut want = groups.to_vec();
        want.sort();
        if have == want {
            return Ok(Outcome::AlreadyDone);
        }
        self.ec2
            .modify_instance_attribute()
            .instance_id(node.instance_id.as_str())
            .set_groups(Some(want))
            .send()
            .await
            .map_err(|e| self.err("ec2:ModifyInstanceAttribute", Some(&node.instance_id), e))?;
        Ok(Outcome::Done)
    }

    async fn record_version(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        InstanceRecord::write_tags(self, node, &[(tags::VERSION, version.as_str())]).await
    }

    async fn record_image_runs(&self, node: &NodeRef, value: &str) -> Result<(), ProviderError> {
        InstanceRecord::write_tags(self, node, &[(tags::IMAGE_RUNS, value)]).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<Outcome, ProviderError> {
        match self
            .ec2
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map_err(|e| self.err("ec2:DeleteSnapshot", None, e))
        {
            Ok(_) => Ok(Outcome::Done),
            Err(ProviderError::Api { code, .. }) if code == "InvalidSnapshot.NotFound" => {
                Ok(Outcome::AlreadyDone)
            }
            Err(e) => Err(e),
        }
    }

    async fn status_checks(&self) -> Result<BTreeMap<String, StatusChecks>, ProviderError> {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_instance_status()
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.err("ec2:DescribeInstanceStatus", None, e))?;
            for s in page.instance_statuses() {
                let Some(id) = s.instance_id() else { continue };
                let check = |c: Option<&aws_sdk_ec2::types::InstanceStatusSummary>| {
                    c.and_then(|c| c.status())
                        .map_or(CheckState::InsufficientData, |st| {
                            CheckState::parse(st.as_str())
                        })
                };
                out.insert(
                    id.to_string(),
                    StatusChecks {
                        system: check(s.system_status()),
                        instance: check(s.instance_status()),
                    },
                );
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn disk_usage(
        &self,
        instance_ids: &[String],
        since_ms: crate::clock::Millis,
    ) -> Result<BTreeMap<String, Vec<DiskPoint>>, ProviderError> {
        use aws_sdk_cloudwatch::primitives::DateTime as CwTime;
        use aws_sdk_cloudwatch::types::{
            DimensionFilter, MetricDataQuery, MetricStat, RecentlyActive, ScanBy,
        };
        let wanted: std::collections::BTreeSet<&str> =
            instance_ids.iter().map(String::as_str).collect();
        // The series: every data volume the agents reported within three hours, named by
        // its full dimension set (the agent adds device and fstype), of our instances.
        let mut series: Vec<(String, aws_sdk_cloudwatch::types::Metric)> = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .cw
                .list_metrics()
                .namespace(disk_metric::NAMESPACE)
                .metric_name(disk_metric::NAME)
                .dimensions(
                    DimensionFilter::builder()
                        .name(disk_metric::PATH.0)
                        .value(disk_metric::PATH.1)
                        .build(),
                )
                .recently_active(RecentlyActive::Pt3H)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.err("cloudwatch:ListMetrics", None, e))?;
            for m in page.metrics() {
                let id = m
                    .dimensions()
                    .iter()
                    .find(|d| d.name() == Some(disk_metric::INSTANCE))
                    .and_then(|d| d.value());
                if let Some(id) = id.filter(|id| wanted.contains(id)) {
                    series.push((id.to_string(), m.clone()));
                }
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut out: BTreeMap<String, Vec<DiskPoint>> = BTreeMap::new();
        // GetMetricData takes 500 queries a call; each query's id names its series.
        for chunk in series.chunks(500).enumerate() {
            let (n, chunk) = chunk;
            let queries: Vec<MetricDataQuery> = chunk
                .iter()
                .enumerate()
                .map(|(i, (_, m))| {
                    MetricDataQuery::builder()
                        .id(format!("d{}", n * 500 + i))
                        .metric_stat(
                            MetricStat::builder()
                                .metric(m.clone())
                                .period(disk_metric::PERIOD_SECS)
                                .stat("Maximum")
                                .build(),
                        )
                        .return_data(true)
                        .build()
                })
                .collect();
            let mut token = None;
            loop {
                let page = self
                    .cw
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.clone()))
                    .start_time(CwTime::from_millis(since_ms as i64))
                    .end_time(CwTime::from_millis(now))
                    .scan_by(ScanBy::TimestampAscending)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.err("cloudwatch:GetMetricData", None, e))?;
                for r in page.metric_data_results() {
                    let Some(i) = r
                        .id()
                        .and_then(|id| id.strip_prefix('d'))
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| i.checked_sub(n * 500))
                    else {
                        continue;
                    };
                    let Some((instance, _)) = chunk.get(i) else {
                        continue;
                    };
                    let points = out.entry(instance.clone()).or_default();
                    for (t, v) in r.timestamps().iter().zip(r.values()) {
                        if let Ok(ms) = t.to_millis()
                            && ms >= 0
                        {
                            points.push(DiskPoint {
                                at_ms: ms as u64,
                                used_percent: *v,
                            });
                        }
                    }
                }
                token = page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        // An instance with two series (a volume's device renamed) reads as one; the order
        // is the time's.
        for points in out.values_mut() {
            points.sort_by_key(|p| p.at_ms);
            points.dedup_by(|a, b| {
                if a.at_ms == b.at_ms {
                    b.used_percent = b.used_percent.max(a.used_percent);
                    true
                } else {
                    false
                }
            });
        }
        out.retain(|_, p| !p.is_empty());
        Ok(out)
    }

    async fn restart_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        let command = restart_command(version)?;
        self.run_command(node, &command, &format!("fleet: heal {}", node.key))
            .await
            .map(drop)
    }

    async fn stop_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        let command = stop_command(version)?;
        self.run_command(
            node,
            &command,
            &format!("fleet: stop {} to snapshot", node.key),
        )
        .await
        .map(drop)
    }

    async fn start_daemon(&self, node: &NodeRef, version: &Version) -> Result<(), ProviderError> {
        let command = start_command(version)?;
        self.run_command(
            node,
            &command,
            &format!("fleet: start {} after its snapshot", node.key),
        )
        .await
        .map(drop)
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
            match self
                .run_command(node, &command, &format!("fleet: is node@{version} active"))
                .await
            {
                Ok(_) => Ok(true),
                // `systemctl is-active` exits 3 when the unit is not active.
                Err(ProviderError::CommandFailed { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn replace(
        &self,
        node: &NodeRef,
        spec: &LaunchSpec,
    ) -> Result<(String, Outcome), ProviderError> {
        let found = self.replacement_of(&node.instance_id).await?;
        let old = match self.instance(node).await {
            Ok(i) => i,
            // Handed over before (the old instance is gone): nothing left of this step.
            Err(ProviderError::NotFound { .. }) => {
                let n = found.ok_or_else(|| ProviderError::NotFound {
                    instance: node.instance_id.clone(),
                })?;
                return Ok((
                    n.instance_id().unwrap_or("").to_string(),
                    Outcome::AlreadyDone,
                ));
            }
            Err(e) => return Err(e),
        };
        let new_id = match &found {
            Some(n) => n.instance_id().unwrap_or("").to_string(),
            None => {
                let vol =
                    data_volume_id(&old).ok_or_else(|| ProviderError::nothing_to_move(node))?;
                // A retry of this replacement keeps its attempt (and so its client token: a
                // RunInstances whose answer was lost is not launched twice); a replacement
                // after an undone one gets a new attempt, EC2 keeping an old token for at
                // least a day after its instance is terminated.
                let attempt = match tag_map(old.tags())
                    .get(tags::PENDING)
                    .map(|t| PendingStep::from_tag(t))
                {
                    Some(PendingStep::Replace { ami, attempt })
                        if ami == spec.ami && !attempt.is_empty() =>
                    {
                        attempt
                    }
                    _ => std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| format!("{:x}", d.as_nanos()))
                        .unwrap_or_default(),
                };
                let token = format!("fleet-replace-{}-{attempt}", node.instance_id);
                let marker = PendingStep::Replace {
                    ami: spec.ami.clone(),
                    attempt,
                };
                self.create_tags(&node.instance_id, &[(tags::PENDING, &marker.to_tag())])
                    .await?;
                self.run_instance(
                    spec,
                    None,
                    &[
                        (tags::REPLACES, node.instance_id.as_str()),
                        (tags::TAKES_VOLUME, vol.as_str()),
                    ],
                    &token,
                )
                .await?
                .0
            }
        };
        let new = NodeRef {
            key: node.key.clone(),
            instance_id: new_id.clone(),
        };
        let inst = self.instance(&new).await?;
        let vol = ProviderError::taken_volume(node, &new_id, &tag_map(inst.tags()))?;
        // The old daemon stops here: from now on the node is down until the replacement
        // is in sync (the step is disruptive, and gated).
        if state_of(&old) != InstanceState::Stopped {
            self.stop_and_wait(node).await?;
        }
        if data_volume_id(&old).as_deref() == Some(vol.as_str()) {
            self.detach_data_volume(&vol, node).await?;
        }
        if data_volume_id(&inst).as_deref() != Some(vol.as_str()) {
            self.wait_state(&new, "running").await?;
            // Not deleted with the replacement until the hand-over: a replacement that fails
            // and is terminated by hand must not take the node's only chain with it.
            self.attach_data_volume(&vol, &new).await?;
        }
        // Always: a crash after the attach and before this left the daemon off, and the
        // every-boot set-up changes nothing on a node that runs.
        self.run_command(
            &new,
            BOOTSTRAP_COMMAND,
            &format!("fleet: {} takes over {}", new_id, node.key),
        )
        .await?;
        Ok((new_id, Outcome::Done))
    }

    async fn hand_over(
        &self,
        node: &NodeRef,
        dns: &DnsTarget,
    ) -> Result<(String, Outcome), ProviderError> {
        let new = self
            .replacement_of(&node.instance_id)
            .await?
            .ok_or_else(|| ProviderError::no_replacement(node))?;
        let new_id = new.instance_id().unwrap_or("").to_string();
        let vol = ProviderError::taken_volume(node, &new_id, &tag_map(new.tags()))?;
        if data_volume_id(&new).as_deref() != Some(vol.as_str()) {
            return Err(ProviderError::not_taken_over(node, &new_id, &vol));
        }
        let ip = new
            .private_ip_address()
            .map(str::to_string)
            .ok_or_else(|| ProviderError::Api {
                op: "ec2:DescribeInstances".into(),
                code: "no-address".into(),
                message: "the replacement has no private address yet; the next pass retries".into(),
                instance: Some(new_id.clone()),
            })?;
        let mut outcome = self.upsert_record(dns, &ip).await?;
        match self.instance(node).await {
            Ok(_) => {
                // From now on the volume is the replacement's for good: as at launch, retire
                // snapshots it, then terminating deletes it.
                self.own_data_volume(&new_id).await?;
                self.ec2
                    .terminate_instances()
                    .instance_ids(&node.instance_id)
                    .send()
                    .await
                    .map_err(|e| self.err("ec2:TerminateInstances", Some(&node.instance_id), e))?;
                outcome = Outcome::Done;
            }
            Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok((new_id, outcome))
    }

    async fn undo_replace(&self, node: &NodeRef) -> Result<Outcome, ProviderError> {
        let mut old = self.instance(node).await?;
        let mut outcome = Outcome::AlreadyDone;
        if let Some(new) = self.replacement_of(&node.instance_id).await? {
            let new_id = new.instance_id().unwrap_or("").to_string();
            let new_ref = NodeRef {
                key: node.key.clone(),
                instance_id: new_id.clone(),
            };
            let vol = ProviderError::taken_volume(node, &new_id, &tag_map(new.tags()))?;
            // Stopped first: the volume leaves an instance that no longer writes to it (EC2
            // refuses to stop one still pending).
            if state_of(&new) == InstanceState::Pending {
                self.wait_state(&new_ref, "running").await?;
            }
            if state_of(&new) != InstanceState::Stopped {
                self.stop_and_wait(&new_ref).await?;
            }
            if data_volume_id(&new).as_deref() == Some(vol.as_str()) {
                self.detach_data_volume(&vol, &new_ref).await?;
            }
            if data_volume_id(&old).as_deref() != Some(vol.as_str()) {
                self.attach_data_volume(&vol, node).await?;
                old = self.instance(node).await?;
            }
            // The volume is back; the replacement goes with its root volume only (its data
            // device was never set to be deleted with it before a hand-over).
            self.ec2
                .terminate_instances()
                .instance_ids(&new_id)
                .send()
                .await
                .map_err(|e| self.err("ec2:TerminateInstances", Some(&new_id), e))?;
            outcome = Outcome::Done;
        }
        if data_volume_id(&old).is_none() {
            return Err(ProviderError::volume_lost(node));
        }
        // Its unit is enabled and its every-boot set-up runs: the daemon comes back with the
        // instance.
        if matches!(
            state_of(&old),
            InstanceState::Stopped | InstanceState::Stopping
        ) {
            if state_of(&old) == InstanceState::Stopping {
                self.wait_state(node, "stopped").await?;
            }
            self.start(&node.instance_id).await?;
            outcome = Outcome::Done;
        }
        if state_of(&old) != InstanceState::Running {
            self.wait_state(node, "running").await?;
        }
        if tag_map(old.tags()).contains_key(tags::PENDING) {
            self.remove_tag(&node.instance_id, tags::PENDING).await?;
            outcome = Outcome::Done;
        }
        Ok(outcome)
    }

    async fn unmanaged(
        &self,
        key: &str,
        values: &[String],
    ) -> Result<Vec<crate::adopt::Candidate>, ProviderError> {
        let mut found: BTreeMap<String, (ObservedInstance, String, Vec<(String, String)>)> =
            BTreeMap::new();
        // EC2 takes up to 200 values a filter.
        for chunk in values.chunks(200) {
            let mut token = None;
            loop {
                let out = self
                    .ec2
                    .describe_instances()
                    .filters(
                        Filter::builder()
                            .name(format!("tag:{key}"))
                            .set_values(Some(chunk.to_vec()))
                            .build(),
                    )
                    .filters(Self::filter(
                        "instance-state-name",
                        &["pending", "running", "stopping", "stopped"],
                    ))
                    .max_results(1000)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.err("ec2:DescribeInstances", None, e))?;
                for i in out.reservations().iter().flat_map(|r| r.instances()) {
                    let Some(id) = i.instance_id() else { continue };
                    if tag_map(i.tags()).get(tags::MANAGED).map(String::as_str) == Some("true") {
                        continue;
                    }
                    let root = i.root_device_name();
                    let volumes: Vec<(String, String)> = i
                        .block_device_mappings()
                        .iter()
                        .filter(|m| m.device_name().is_some() && m.device_name() != root)
                        .filter_map(|m| {
                            Some((
                                m.device_name()?.to_string(),
                                m.ebs()?.volume_id()?.to_string(),
                            ))
                        })
                        .collect();
                    let mut inst = observed_instance(id, i).with_data_volume(None);
                    if let Some(r) = root_volume_id(i) {
                        inst = inst.with_root_volume(ObservedVolume {
                            volume_id: r,
                            size_gb: 0,
                            snapshot_id: None,
                        });
                    }
                    let zone = i
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or("")
                        .to_string();
                    found.insert(id.to_string(), (inst, zone, volumes));
                }
                token = out
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        // Their volumes' sizes and origins, 200 ids a request.
        let ids: Vec<String> = found
            .values()
            .flat_map(|(i, _, v)| {
                v.iter()
                    .map(|(_, id)| id.clone())
                    .chain(i.root_volume.iter().map(|r| r.volume_id.clone()))
            })
            .collect();
        let mut sizes: BTreeMap<String, (u32, Option<String>)> = BTreeMap::new();
        for chunk in ids.chunks(200) {
            sizes.extend(
                self.volume_sizes(&[Filter::builder()
                    .name("volume-id")
                    .set_values(Some(chunk.to_vec()))
                    .build()])
                    .await?,
            );
        }
        let volume = |id: &str| {
            let (size_gb, snapshot_id) = sizes.get(id).cloned().unwrap_or((0, None));
            ObservedVolume {
                volume_id: id.to_string(),
                size_gb,
                snapshot_id,
            }
        };
        Ok(found
            .into_values()
            .map(|(mut instance, zone, vols)| {
                if let Some(r) = instance.root_volume.take() {
                    instance.root_volume = Some(volume(&r.volume_id));
                }
                crate::adopt::Candidate {
                    instance,
                    zone,
                    volumes: vols
                        .into_iter()
                        .map(|(device, id)| crate::adopt::AttachedVolume {
                            device,
                            volume: volume(&id),
                        })
                        .collect(),
                }
            })
            .collect())
    }

    async fn inspect(
        &self,
        instance_ids: &[String],
        script: &str,
    ) -> Result<BTreeMap<String, Result<String, String>>, ProviderError> {
        let mut out = BTreeMap::new();
        // SendCommand takes up to 50 instances. One whose agent SSM does not know fails the
        // whole request (InvalidInstanceId): that batch is sent again one by one.
        let mut batches: Vec<Vec<String>> =
            instance_ids.chunks(50).map(<[String]>::to_vec).collect();
        while let Some(batch) = batches.pop() {
            let sent = self
                .ssm
                .send_command()
                .document_name("AWS-RunShellScript")
                .set_instance_ids(Some(batch.clone()))
                .parameters("commands", vec![script.to_string()])
                .timeout_seconds(self.opts.command_timeout.as_secs().clamp(30, 2_592_000) as i32)
                .comment("fleet adopt: read-only inspection")
                .send()
                .await
                .map_err(|e| self.err("ssm:SendCommand", None, e));
            let command_id = match sent {
                Ok(o) => o
                    .command()
                    .and_then(|c| c.command_id())
                    .unwrap_or("")
                    .to_string(),
                Err(ProviderError::Api { ref code, .. })
                    if code == "InvalidInstanceId" && batch.len() > 1 =>
                {
                    batches.extend(batch.into_iter().map(|id| vec![id]));
                    continue;
                }
                Err(e) => {
                    for id in batch {
                        out.insert(id, Err(e.to_string()));
                    }
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + self.opts.command_timeout;
            let mut waiting = batch;
            while !waiting.is_empty() {
                let mut still = Vec::new();
                for id in waiting {
                    let r = self
                        .ssm
                        .get_command_invocation()
                        .command_id(&command_id)
                        .instance_id(&id)
                        .send()
                        .await;
                    match r {
                        Ok(inv) => match inv.status() {
                            Some(CommandInvocationStatus::Success) => {
                                out.insert(
                                    id,
                                    Ok(inv.standard_output_content().unwrap_or("").to_string()),
                                );
                            }
                            Some(
                                s @ (CommandInvocationStatus::Failed
                                | CommandInvocationStatus::Cancelled
                                | CommandInvocationStatus::TimedOut),
                            ) => {
                                let err = inv.standard_error_content().unwrap_or("").trim();
                                out.insert(id, Err(format!("the command {}: {err}", s.as_str())));
                            }
                            _ => still.push(id),
                        },
                        Err(e) if e.code() == Some("InvocationDoesNotExist") => still.push(id),
                        Err(e) => {
                            let e = self.err("ssm:GetCommandInvocation", Some(&id), e);
                            out.insert(id, Err(e.to_string()));
                        }
                    }
                }
                waiting = still;
                if waiting.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    for id in waiting {
                        out.insert(
                            id,
                            Err(format!(
                                "no answer within {} s (command {command_id})",
                                self.opts.command_timeout.as_secs()
                            )),
                        );
                    }
                    break;
                }
                tokio::time::sleep(self.opts.poll_interval).await;
            }
        }
        Ok(out)
    }

    async fn adopt(
        &self,
        adoptees: &[crate::adopt::Adoptee],
    ) -> (usize, Option<(String, ProviderError)>) {
        // Look again before writing, 200 ids a request.
        let mut now: BTreeMap<String, aws_sdk_ec2::types::Instance> = BTreeMap::new();
        let ids: Vec<String> = adoptees.iter().map(|a| a.instance_id.clone()).collect();
        for chunk in ids.chunks(200) {
            let mut token = None;
            loop {
                let out = match self
                    .ec2
                    .describe_instances()
                    .set_instance_ids(Some(chunk.to_vec()))
                    .set_next_token(token)
                    .send()
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        let e = self.err("ec2:DescribeInstances", None, e);
                        return (0, Some((chunk[0].clone(), e)));
                    }
                };
                for i in out.reservations().iter().flat_map(|r| r.instances()) {
                    if let Some(id) = i.instance_id() {
                        now.insert(id.to_string(), i.clone());
                    }
                }
                token = out
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        let mut written = 0;
        for a in adoptees {
            let id = a.instance_id.as_str();
            let fail = |e: ProviderError| (written, Some((id.to_string(), e)));
            let Some(i) = now.get(id) else {
                return fail(ProviderError::NotFound {
                    instance: id.to_string(),
                });
            };
            let tags_now = tag_map(i.tags());
            if tags_now.get(tags::MANAGED).map(String::as_str) == Some("true") {
                match tags::node_key(&tags_now) {
                    Ok(k) if k == a.slot => {
                        written += 1;
                        continue;
                    }
                    _ => {
                        return fail(ProviderError::Refused {
                            reason: format!("instance {id} is managed by fleet as another node"),
                        });
                    }
                }
            }
            if data_volume_id(i).as_deref() != Some(a.volume_id.as_str()) {
                return fail(ProviderError::Refused {
                    reason: format!(
                        "instance {id} no longer has volume {} at {DATA_DEVICE}: adopt again",
                        a.volume_id
                    ),
                });
            }
            let vt = a.volume_tags();
            let vt: Vec<(&str, &str)> = vt.iter().map(|(k, v)| (*k, v.as_str())).collect();
            // Both volumes in one call (the same tags).
            let mut req = self.ec2.create_tags().set_resources(Some(
                std::iter::once(a.volume_id.clone())
                    .chain(a.root_volume_id.clone())
                    .collect(),
            ));
            for (k, v) in &vt {
                req = req.tags(Tag::builder().key(*k).value(*v).build());
            }
            if let Err(e) = req.send().await {
                return fail(self.err("ec2:CreateTags", Some(&a.volume_id), e));
            }
            let it = a.instance_tags();
            let it: Vec<(&str, &str)> = it.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let Err(e) = self.create_tags(id, &it).await {
                return fail(e);
            }
            written += 1;
        }
        (written, None)
    }

    async fn grow_volume(&self, node: &NodeRef, size_gb: u32) -> Result<Outcome, ProviderError> {
        self.grow_disk(node, Disk::Data, size_gb).await
    }

    async fn grow_root_volume(
        &self,
        node: &NodeRef,
        size_gb: u32,
    ) -> Result<Outcome, ProviderError> {
        self.grow_disk(node, Disk::Root, size_gb).await
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
            let id = node.instance_id.as_str();
            if facts.state != InstanceState::Stopped {
                self.stop_and_wait(node).await?;
            }
            if facts.instance_type != instance_type.as_str() {
                self.ec2
                    .modify_instance_attribute()
                    .instance_id(id)
                    .instance_type(
                        aws_sdk_ec2::types::AttributeValue::builder()
                            .value(instance_type.as_str())
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| self.err("ec2:ModifyInstanceAttribute", Some(id), e))?;
            }
            self.start(id).await
        })
        .await
    }

    async fn restore_data(&self, node: &NodeRef, reason: &str) -> Result<Outcome, ProviderError> {
        let index = node.key.index.to_string();
        let out = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(Self::tag_filter(tags::MANAGED, &["true"]))
            .filters(Self::tag_filter(tags::COIN, &[node.key.coin.as_str()]))
            .filters(Self::tag_filter(tags::ZONE, &[node.key.zone.as_str()]))
            .filters(Self::tag_filter(tags::INDEX, &[&index]))
            .filters(Self::tag_filter(tags::REASON, &[reason]))
            .filters(Self::filter("status", &["completed"]))
            .send()
            .await
            .map_err(|e| self.err("ec2:DescribeSnapshots", Some(&node.instance_id), e))?;
        let snapshot = out
            .snapshots()
            .iter()
            .max_by_key(|s| {
                (
                    millis(s.start_time()),
                    s.snapshot_id().unwrap_or("").to_string(),
                )
            })
            .and_then(|s| s.snapshot_id())
            .map(str::to_string)
            .ok_or_else(|| ProviderError::no_snapshot_to_restore(node, reason))?;
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
        run_marked(self, node, &step, |_| async move {
            self.restore_act(node, snapshot).await
        })
        .await
    }

    async fn snapshot(&self, node: &NodeRef, reason: &str) -> Result<String, ProviderError> {
        let inst = self.instance(node).await?;
        self.snapshot_instance(node, &inst, reason)
            .await?
            .ok_or_else(|| ProviderError::no_data_volume(node))
    }

    async fn retire(
        &self,
        node: &NodeRef,
        hosted_zone_id: &str,
        dns: &[DnsRecord],
    ) -> Result<Option<String>, ProviderError> {
        let mut snap = None;
        match self.instance(node).await {
            Ok(inst) => {
                // Snapshot first: the data volume is deleted with the instance.
                snap = self.snapshot_instance(node, &inst, "retire").await?;
                self.ec2
                    .terminate_instances()
                    .instance_ids(&node.instance_id)
                    .send()
                    .await
                    .map_err(|e| self.err("ec2:TerminateInstances", Some(&node.instance_id), e))?;
            }
            Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        for r in dns {
            self.delete_dns(hosted_zone_id, r).await?;
        }
        Ok(snap)
    }

    async fn set_dns(&self, node: &NodeRef, target: &DnsTarget) -> Result<Outcome, ProviderError> {
        let inst = self.instance(node).await?;
        let ip = inst
            .private_ip_address()
            .ok_or_else(|| ProviderError::Api {
                op: "ec2:DescribeInstances".into(),
                code: "no-address".into(),
                message: "the instance has no private address".into(),
                instance: Some(node.instance_id.clone()),
            })?
            .to_string();
        self.upsert_record(target, &ip).await
    }

    async fn delete_dns(
        &self,
        hosted_zone_id: &str,
        record: &DnsRecord,
    ) -> Result<Outcome, ProviderError> {
        match self
            .change_record(hosted_zone_id, ChangeAction::Delete, record)
            .await
        {
            Ok(()) => Ok(Outcome::Done),
            // Already gone (or changed since it was observed: the next pass sees it again).
            Err(ProviderError::Api { code, .. }) if code == "InvalidChangeBatch" => {
                Ok(Outcome::AlreadyDone)
            }
            Err(e) => Err(e),
        }
    }
}
