//! Test worlds for the provider conformance suite: the same cases run against the simulator
//! and against the AWS provider on moto server (loopback), through one trait.
//!
//! The AWS world gives each test its own moto account (`x-moto-account-id`), creates the VPC,
//! subnets, security group and hosted zone the example fleet names, and rewrites the example
//! fleet.yaml to the ids moto handed out. Faults are injected with an SDK interceptor that
//! rewrites responses the way AWS sends them (throttling errors, a failed command invocation)
//! or fails a call before it is sent (a crash between two steps).

use async_trait::async_trait;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use fleet_repo_schema::{Desired, DirTree, FileTree, MemTree, load};
use reconciler::clock::ManualClock;
use reconciler::node::NodeKey;
use reconciler::provider::Provider;
use reconciler::provider::aws::{AwsOptions, AwsProvider};
use reconciler::provider::sim::{SimConfig, SimFault, SimProvider};
use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault both worlds can inject, by AWS operation name.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The next `times` attempts of `op` (or of any call) are throttled.
    Throttle {
        /// Operation, e.g. `DescribeInstances`.
        op: Option<&'static str>,
        /// Attempts.
        times: u32,
    },
    /// The next `times` calls of `op` fail before they are sent.
    FailOp {
        /// Operation.
        op: &'static str,
        /// Calls.
        times: u32,
    },
    /// The next SSM command fails on the instance with `stderr`.
    CommandFails {
        /// Standard error.
        stderr: String,
    },
    /// The next `times` SendCommand calls are answered as SSM answers for an instance whose
    /// agent has not registered yet (`InvalidInstanceId`, recorded real response shape).
    AgentNotReady {
        /// Calls.
        times: u32,
    },
    /// The node's instance fails EC2's instance status check (on AWS: moto's
    /// DescribeInstanceStatus answer with that instance's check made `impaired`, the shape
    /// EC2 gives a failing one).
    FailsStatusChecks {
        /// The node.
        key: NodeKey,
        /// Its instance.
        instance_id: String,
    },
}

/// One world the conformance cases run in.
#[async_trait]
pub trait TestWorld: Send + Sync {
    /// `sim` or `aws`.
    fn name(&self) -> &'static str;
    /// The provider under test.
    fn provider(&self) -> &dyn Provider;
    /// The example fleet, with ids that exist in this world.
    fn desired(&self) -> &Desired;
    /// Inject a fault.
    fn inject(&self, fault: Fault);
    /// Remove all faults.
    fn clear_faults(&self);
    /// SSM commands sent so far: (instance id, shell command).
    fn commands(&self) -> Vec<(String, String)>;
    /// HTTP attempts (or simulated attempts) so far.
    fn attempts(&self) -> u64;
    /// Make the secret `name` exist (with a dummy value) or not, in the world's account.
    async fn set_secret(&self, name: &str, exists: bool);
    /// Let `d` of the world's time pass (the simulator's clock; moto has none to wait for:
    /// its instances run at once).
    async fn pass_time(&self, d: Duration);
    /// An AMI of the world's region other than the example fleet's `node_ami`.
    async fn another_ami(&self) -> String;
    /// `hours` of the CloudWatch agent on `instance_id` reporting its data volume, one
    /// figure an hour, rising (moto: PutMetricData as the agent sends it, with a series of
    /// the root file system beside it; the simulator: the time passes and its chain grows).
    async fn agent_reports(&self, instance_id: &str, hours: u32);
}

/// The example fleet repository as a memory tree.
pub fn example_tree() -> MemTree {
    let root = crate::workspace_root().join("examples/fleet");
    let dir = DirTree::new(&root).expect("examples/fleet exists");
    let mut mem = MemTree::new();
    // FileTree lists files only, so name the example's directories.
    for d in ["", "coins", "metrics"] {
        for name in dir.list(d).expect("readable") {
            let p = if d.is_empty() {
                name
            } else {
                format!("{d}/{name}")
            };
            let bytes = dir.read(&p, 1 << 20).expect("readable");
            mem.insert(&p, bytes);
        }
    }
    mem
}

/// Load a tree that must be valid.
pub fn desired_of(tree: &dyn FileTree) -> Desired {
    let loaded = load(tree);
    match loaded.desired {
        Some(d) => d,
        None => panic!("test fleet invalid: {:#?}", loaded.diagnostics),
    }
}

/// The simulator world, on a manual clock.
#[derive(Debug)]
pub struct SimWorld {
    /// Provider.
    pub sim: SimProvider,
    /// Clock.
    pub clock: ManualClock,
    desired: Desired,
}

impl SimWorld {
    /// A new empty simulated fleet.
    pub fn new() -> SimWorld {
        let clock = ManualClock::new(1_700_000_000_000);
        SimWorld {
            sim: SimProvider::new(Arc::new(clock.clone()), SimConfig::default()),
            clock,
            desired: desired_of(&example_tree()),
        }
    }
}

impl Default for SimWorld {
    fn default() -> Self {
        SimWorld::new()
    }
}

#[async_trait]
impl TestWorld for SimWorld {
    fn name(&self) -> &'static str {
        "sim"
    }
    fn provider(&self) -> &dyn Provider {
        &self.sim
    }
    fn desired(&self) -> &Desired {
        &self.desired
    }
    fn inject(&self, fault: Fault) {
        self.sim.inject(match fault {
            Fault::Throttle { op, times } => SimFault::Throttle {
                op: op.map(str::to_string),
                times,
            },
            Fault::FailOp { op, times } => SimFault::FailOp {
                op: op.to_string(),
                times,
            },
            Fault::CommandFails { stderr } => SimFault::FailCommand {
                key: None::<NodeKey>,
                times: 1,
                stderr,
            },
            Fault::AgentNotReady { times } => SimFault::AgentNotReady { times },
            Fault::FailsStatusChecks { key, .. } => SimFault::FailsStatusChecks {
                key,
                system: false,
                instance_id: None,
            },
        });
    }
    fn clear_faults(&self) {
        self.sim.clear_faults();
    }
    fn commands(&self) -> Vec<(String, String)> {
        self.sim
            .commands()
            .into_iter()
            .map(|c| (c.instance_id, c.command))
            .collect()
    }
    fn attempts(&self) -> u64 {
        self.sim.call_counts().1
    }
    async fn set_secret(&self, name: &str, exists: bool) {
        self.sim.set_secret(name, exists);
    }
    async fn another_ami(&self) -> String {
        "ami-0fedcba9876543210".into()
    }
    async fn pass_time(&self, d: Duration) {
        self.clock.advance_ms(d.as_millis() as u64);
    }
    async fn agent_reports(&self, _instance_id: &str, hours: u32) {
        self.clock.advance_ms(u64::from(hours) * 3_600_000);
    }
}

/// The moto endpoint the test command started (`FLEET_TEST_MOTO`), or a clear failure.
pub fn moto_endpoint() -> String {
    match std::env::var("FLEET_TEST_MOTO") {
        Ok(url) => {
            assert!(
                url.starts_with("http://127.0.0.1:") || url.starts_with("http://[::1]:"),
                "FLEET_TEST_MOTO must be a loopback URL, not {url}"
            );
            url
        }
        Err(_) => panic!(
            "FLEET_TEST_MOTO is not set: these tests need moto server on loopback. \
             Run them through `tests/run`, which installs and starts it."
        ),
    }
}

/// A 12-digit moto account for `test` in this process: each test sees only its own resources.
pub fn account_for(test: &str) -> String {
    let mut h = DefaultHasher::new();
    test.hash(&mut h);
    std::process::id().hash(&mut h);
    format!("{:012}", h.finish() % 1_000_000_000_000)
}

#[derive(Debug, Default)]
struct FaultState {
    faults: Vec<Fault>,
    commands: Vec<(String, String)>,
    /// What a node prints for a command, by instance id (moto runs nothing and answers
    /// every GetCommandInvocation with an empty output).
    answers: BTreeMap<String, String>,
    /// Operations to fail once after so many more calls of them succeed.
    fail_after: Vec<(&'static str, u32)>,
}

/// What a node prints for the command a GetCommandInvocation asks about (found when the
/// request is signed, answered when the response comes).
#[derive(Debug, Clone)]
struct Answer {
    command_id: String,
    instance_id: String,
    stdout: String,
}

impl aws_smithy_types::config_bag::Storable for Answer {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// The test interceptor: moto account header, fault injection, SendCommand recording.
#[derive(Debug, Clone)]
pub struct TestInterceptor {
    account: String,
    state: Arc<Mutex<FaultState>>,
    /// Where CloudWatch's requests go instead of moto, which does not speak its protocol
    /// (RPC v2 CBOR): the loopback stand-in ([`crate::cloudwatch`]).
    cloudwatch: Option<String>,
}

fn op_name(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map(|m| m.name().to_string())
        .unwrap_or_default()
}

impl Intercept for TestInterceptor {
    fn name(&self) -> &'static str {
        "fleet-test-faults"
    }

    fn read_before_serialization(
        &self,
        _ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = op_name(cfg);
        let mut st = self.state.lock().unwrap();
        if let Some(i) = st.fail_after.iter().position(|(o, _)| *o == op) {
            if st.fail_after[i].1 == 0 {
                st.fail_after.remove(i);
                return Err(format!("{op}: injected failure before the call was sent").into());
            }
            st.fail_after[i].1 -= 1;
        }
        for f in st.faults.iter_mut() {
            if let Fault::FailOp { op: o, times } = f
                && *o == op
                && *times > 0
            {
                *times -= 1;
                return Err(format!("{op}: injected failure before the call was sent").into());
            }
        }
        Ok(())
    }

    fn modify_before_signing(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = ctx.request_mut();
        req.headers_mut()
            .insert("x-moto-account-id", self.account.clone());
        if let Some(cw) = &self.cloudwatch {
            let uri = req.uri().to_string();
            if let Some(i) = uri.find("/service/GraniteServiceVersion20100801/") {
                req.set_uri(format!("{cw}{}", &uri[i..]))?;
            }
        }
        if op_name(cfg) == "GetCommandInvocation"
            && let Some(body) = req.body().bytes()
        {
            let v: serde_json::Value = serde_json::from_slice(body)?;
            let instance_id = v["InstanceId"].as_str().unwrap_or("").to_string();
            let stdout = self
                .state
                .lock()
                .unwrap()
                .answers
                .get(&instance_id)
                .cloned();
            if let Some(stdout) = stdout {
                cfg.interceptor_state().store_put(Answer {
                    command_id: v["CommandId"].as_str().unwrap_or("").to_string(),
                    instance_id,
                    stdout,
                });
            }
        }
        if op_name(cfg) == "SendCommand"
            && let Some(body) = req.body().bytes()
        {
            let v: serde_json::Value = serde_json::from_slice(body)?;
            let ids = v["InstanceIds"].as_array().cloned().unwrap_or_default();
            let cmds = v["Parameters"]["commands"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut st = self.state.lock().unwrap();
            for id in &ids {
                for c in &cmds {
                    st.commands.push((
                        id.as_str().unwrap_or("").to_string(),
                        c.as_str().unwrap_or("").to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = op_name(cfg);
        let service = cfg
            .load::<Metadata>()
            .map(|m| m.service().to_string())
            .unwrap_or_default();
        let mut st = self.state.lock().unwrap();
        let mut throttle = false;
        let mut fail_command = None;
        let mut agent_not_ready = false;
        let impaired: Vec<String> = st
            .faults
            .iter()
            .filter_map(|f| match f {
                Fault::FailsStatusChecks { instance_id, .. } if op == "DescribeInstanceStatus" => {
                    Some(instance_id.clone())
                }
                _ => None,
            })
            .collect();
        for f in st.faults.iter_mut() {
            match f {
                Fault::AgentNotReady { times } if *times > 0 && op == "SendCommand" => {
                    *times -= 1;
                    agent_not_ready = true;
                    break;
                }
                Fault::Throttle { op: o, times } if *times > 0 && o.is_none_or(|o| o == op) => {
                    *times -= 1;
                    throttle = true;
                    break;
                }
                Fault::CommandFails { stderr } if op == "GetCommandInvocation" => {
                    fail_command = Some(stderr.clone());
                }
                _ => {}
            }
        }
        if fail_command.is_some() {
            st.faults
                .retain(|f| !matches!(f, Fault::CommandFails { .. }));
        }
        drop(st);
        let resp = ctx.response_mut();
        if !impaired.is_empty() && resp.status().is_success() {
            // DescribeInstanceStatus's answer for failing instances, a recorded real response
            // shape (EC2 API reference, DescribeInstanceStatus example; moto reports every
            // instance `ok` and its streamed body cannot be edited here): each instance's
            // `instanceStatus` impaired, its `reachability` check failed.
            let items: String = impaired
                .iter()
                .map(|id| {
                    format!(
                        "<item><instanceId>{id}</instanceId><availabilityZone>eu-central-1a</availabilityZone>\
                         <instanceState><code>16</code><name>running</name></instanceState>\
                         <systemStatus><status>ok</status><details><item><name>reachability</name><status>passed</status></item></details></systemStatus>\
                         <instanceStatus><status>impaired</status><details><item><name>reachability</name><status>failed</status>\
                         <impairedSince>2026-12-03T10:00:00.000Z</impairedSince></item></details></instanceStatus><eventsSet/></item>"
                    )
                })
                .collect();
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstanceStatusResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                 <requestId>3be1508e-c444-4fef-89cc-0b1223c4f02f</requestId><instanceStatusSet>{items}</instanceStatusSet>\
                 </DescribeInstanceStatusResponse>"
            );
            resp.headers_mut().remove("content-length");
            resp.headers_mut()
                .insert("content-type", "text/xml;charset=UTF-8");
            *resp.body_mut() = SdkBody::from(xml);
        }
        if let Some(a) = cfg.load::<Answer>()
            && resp.status().is_success()
        {
            // SSM's GetCommandInvocation answer for a finished command (its recorded shape,
            // as moto also returns it), with what the node printed: node_side.rs shows the
            // script prints exactly this on such a node.
            let v = serde_json::json!({
                "CommandId": a.command_id,
                "InstanceId": a.instance_id,
                "Comment": "",
                "DocumentName": "AWS-RunShellScript",
                "DocumentVersion": "$DEFAULT",
                "PluginName": "aws:runShellScript",
                "ResponseCode": 0,
                "ExecutionStartDateTime": "2026-12-02T10:00:00.000Z",
                "ExecutionElapsedTime": "PT0.05S",
                "ExecutionEndDateTime": "2026-12-02T10:00:00.050Z",
                "Status": "Success",
                "StatusDetails": "Success",
                "StandardOutputContent": a.stdout,
                "StandardOutputUrl": "",
                "StandardErrorContent": "",
                "StandardErrorUrl": "",
                "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false}
            });
            resp.headers_mut().remove("content-length");
            resp.headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            *resp.body_mut() = SdkBody::from(serde_json::to_vec(&v)?);
        }
        if agent_not_ready {
            // What SSM returns for an instance not (yet) managed by it.
            *resp.status_mut() = 400u16.try_into().unwrap();
            resp.headers_mut().remove("content-length");
            resp.headers_mut()
                .insert("content-type", "application/x-amz-json-1.1");
            *resp.body_mut() = SdkBody::from(
                "{\"__type\":\"InvalidInstanceId\",\"Message\":\"Instances [[i-0123456789abcdef0]] not in a valid state for account 123456789012\"}",
            );
        } else if throttle {
            let (status, body, content_type) = throttling_response(&service);
            *resp.status_mut() = status.try_into().unwrap();
            resp.headers_mut().remove("content-length");
            resp.headers_mut().insert("content-type", content_type);
            *resp.body_mut() = SdkBody::from(body);
        } else if let Some(stderr) = fail_command {
            let body = resp.body().bytes().unwrap_or(b"{}").to_vec();
            let mut v: serde_json::Value = serde_json::from_slice(&body)?;
            v["Status"] = "Failed".into();
            v["StatusDetails"] = "Failed".into();
            v["ResponseCode"] = 1.into();
            v["StandardErrorContent"] = stderr.into();
            resp.headers_mut().remove("content-length");
            *resp.body_mut() = SdkBody::from(serde_json::to_vec(&v)?);
        }
        Ok(())
    }
}

/// What each AWS protocol sends back when it throttles (status, body, content type).
pub fn throttling_response(service: &str) -> (u16, String, &'static str) {
    match service.to_ascii_lowercase().as_str() {
        s if s.contains("ec2") => (
            503,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>5a1b2c3d-test</RequestID></Response>".into(),
            "text/xml;charset=UTF-8",
        ),
        s if s.contains("route") => (
            400,
            "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>5a1b2c3d-test</RequestId></ErrorResponse>".into(),
            "text/xml",
        ),
        _ => (
            400,
            "{\"__type\":\"ThrottlingException\",\"message\":\"Rate exceeded\"}".into(),
            "application/x-amz-json-1.1",
        ),
    }
}

/// The AWS provider on moto, in its own account, with the example fleet's resources created.
#[derive(Debug)]
pub struct AwsWorld {
    /// Provider.
    pub aws: AwsProvider,
    /// The interceptor's state.
    interceptor: TestInterceptor,
    /// Raw clients for setting up and checking (same account).
    pub ec2: aws_sdk_ec2::Client,
    /// Route53 client.
    pub r53: aws_sdk_route53::Client,
    /// Secrets Manager client.
    pub sm: aws_sdk_secretsmanager::Client,
    /// CloudWatch's stand-in (what the nodes' agents send).
    pub cloudwatch: crate::cloudwatch::CloudWatchFake,
    desired: Desired,
}

/// SDK configuration for moto: loopback endpoint, dummy credentials, fixed region.
pub async fn moto_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .region(aws_config::Region::new("eu-central-1"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "fleet-tests",
        ))
        .load()
        .await
}

impl AwsWorld {
    /// From now on, a command on `instance_id` prints `stdout` (moto runs nothing).
    pub fn answer_as(&self, instance_id: &str, stdout: String) {
        self.interceptor
            .state
            .lock()
            .unwrap()
            .answers
            .insert(instance_id.to_string(), stdout);
    }

    /// The call of `op` after the next `after` ones fails before it is sent (a crash there).
    pub fn fail_op_after(&self, op: &'static str, after: u32) {
        self.interceptor
            .state
            .lock()
            .unwrap()
            .fail_after
            .push((op, after));
    }

    /// A fresh world for the test named `test`, with the SDK's standard retry mode: adaptive
    /// mode's client-side rate limiter is process-wide, so one test's injected throttling
    /// would slow every other test in the binary (`aws_adaptive_retry.rs` tests adaptive).
    pub async fn new(test: &str) -> AwsWorld {
        AwsWorld::with_retry(test, false).await
    }

    /// A fresh world, choosing the retry mode.
    pub async fn with_retry(test: &str, adaptive: bool) -> AwsWorld {
        let cloudwatch = crate::cloudwatch::CloudWatchFake::start();
        let interceptor = TestInterceptor {
            cloudwatch: Some(cloudwatch.url()),
            account: account_for(test),
            state: Arc::default(),
        };
        let sdk = moto_sdk_config().await;
        let shared = SharedInterceptor::new(interceptor.clone());
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&sdk)
                .interceptor(interceptor.clone())
                .build(),
        );
        let r53 = aws_sdk_route53::Client::from_conf(
            aws_sdk_route53::config::Builder::from(&sdk)
                .interceptor(interceptor.clone())
                .build(),
        );
        let sm = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&sdk)
                .interceptor(interceptor.clone())
                .build(),
        );
        let aws = AwsProvider::from_sdk_config(
            &sdk,
            AwsOptions {
                initial_backoff: Duration::from_millis(5),
                adaptive,
                poll_interval: Duration::from_millis(20),
                command_timeout: Duration::from_secs(30),
                agent_wait: Duration::from_secs(5),
                // moto, not AWS: a page of 1,000 instances takes it seconds, and more on a
                // busy 2-core machine, where AWS answers in well under one. The production
                // bounds are tested against an endpoint that never answers (hardening.rs).
                attempt_timeout: Duration::from_secs(120),
                operation_timeout: Duration::from_secs(300),
                interceptors: vec![shared],
                ..AwsOptions::default()
            },
        );
        create_instance_profile(&interceptor.account, "fleet-node");
        let desired = setup_network(&ec2, &r53).await;
        AwsWorld {
            aws,
            interceptor,
            ec2,
            r53,
            sm,
            cloudwatch,
            desired,
        }
    }
}

/// Create an IAM instance profile in moto's `account` (RunInstances checks that it exists).
/// fleet itself needs no IAM client, so this is one plain query-API POST on loopback.
pub fn create_instance_profile(account: &str, name: &str) {
    use std::io::{Read, Write};
    let endpoint = moto_endpoint();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let body =
        format!("Action=CreateInstanceProfile&InstanceProfileName={name}&Version=2010-05-08");
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nx-moto-account-id: {account}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conn = std::net::TcpStream::connect(host).expect("moto reachable");
    conn.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    conn.read_to_string(&mut resp).expect("read");
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.contains("EntityAlreadyExists"),
        "CreateInstanceProfile: {resp}"
    );
}

/// A public AMI of moto's with a root device (fleet reads it for RunInstances), other than
/// `except`.
async fn public_ami(ec2: &aws_sdk_ec2::Client, except: Option<&str>) -> String {
    ec2.describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("DescribeImages")
        .images()
        .iter()
        .filter(|i| i.root_device_name().is_some())
        .filter_map(|i| i.image_id())
        .find(|id| Some(*id) != except && fleet_repo_schema::values::AmiId::parse(id).is_ok())
        .expect("moto has public AMIs")
        .to_string()
}

/// Create the VPC, one subnet per zone, a security group, the hosted zone and find an AMI;
/// return the example fleet rewritten to use them.
pub async fn setup_network(ec2: &aws_sdk_ec2::Client, r53: &aws_sdk_route53::Client) -> Desired {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.20.0.0/16")
        .send()
        .await
        .expect("CreateVpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let mut subnets = Vec::new();
    for (i, zone) in ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
        .iter()
        .enumerate()
    {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.20.{}.0/22", 4 * i))
            .availability_zone(*zone)
            .send()
            .await
            .expect("CreateSubnet")
            .subnet()
            .and_then(|s| s.subnet_id())
            .expect("subnet id")
            .to_string();
        subnets.push(s);
    }
    let sg = ec2
        .create_security_group()
        .group_name("fleet-nodes")
        .description("fleet test nodes")
        .vpc_id(&vpc)
        .send()
        .await
        .expect("CreateSecurityGroup")
        .group_id()
        .expect("group id")
        .to_string();
    let ami = public_ami(ec2, None).await;
    let zone = r53
        .create_hosted_zone()
        .name("internal")
        .caller_reference(format!("fleet-test-{vpc}"))
        .send()
        .await
        .expect("CreateHostedZone")
        .hosted_zone()
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
        .expect("zone id");

    let mut tree = example_tree();
    let fleet = String::from_utf8(tree.read("fleet.yaml", 1 << 20).unwrap()).unwrap();
    let fleet = fleet
        .replace("vpc-0a1b2c3d4e5f60718", &vpc)
        .replace("subnet-0aaaaaaaaaaaaaaa1", &subnets[0])
        .replace("subnet-0bbbbbbbbbbbbbbb2", &subnets[1])
        .replace("subnet-0ccccccccccccccc3", &subnets[2])
        .replace("sg-0123456789abcdef0", &sg)
        .replace("ami-0123456789abcdef0", &ami)
        .replace("Z0123456789ABCDEFGHIJ", &zone);
    tree.insert("fleet.yaml", fleet);
    desired_of(&tree)
}

#[async_trait]
impl TestWorld for AwsWorld {
    fn name(&self) -> &'static str {
        "aws"
    }
    fn provider(&self) -> &dyn Provider {
        &self.aws
    }
    fn desired(&self) -> &Desired {
        &self.desired
    }
    fn inject(&self, fault: Fault) {
        self.interceptor.state.lock().unwrap().faults.push(fault);
    }
    fn clear_faults(&self) {
        self.interceptor.state.lock().unwrap().faults.clear();
    }
    fn commands(&self) -> Vec<(String, String)> {
        self.interceptor.state.lock().unwrap().commands.clone()
    }
    fn attempts(&self) -> u64 {
        self.aws.stats().attempts()
    }
    async fn set_secret(&self, name: &str, exists: bool) {
        if exists {
            self.sm
                .create_secret()
                .name(name)
                .secret_string(r#"{"RPC_PASSWORD":"test-only"}"#)
                .send()
                .await
                .expect("CreateSecret");
        } else {
            self.sm
                .delete_secret()
                .secret_id(name)
                .force_delete_without_recovery(true)
                .send()
                .await
                .expect("DeleteSecret");
        }
    }
    async fn another_ami(&self) -> String {
        public_ami(&self.ec2, Some(self.desired.fleet.node_ami.as_str())).await
    }
    async fn pass_time(&self, _d: Duration) {}
    async fn agent_reports(&self, instance_id: &str, hours: u32) {
        use crate::cloudwatch::Datum;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // As the agent sends them: InstanceId appended, device and fstype beside the path,
        // the root file system's series beside the data volume's.
        let datum = |path: &str, device: &str, at_s: i64, value: f64| Datum {
            namespace: "CWAgent".into(),
            name: "disk_used_percent".into(),
            dimensions: vec![
                ("InstanceId".into(), instance_id.into()),
                ("path".into(), path.into()),
                ("device".into(), device.into()),
                ("fstype".into(), "xfs".into()),
            ],
            at_s,
            value,
        };
        self.cloudwatch.put((0..=hours).flat_map(|h| {
            let at = now - i64::from(hours - h) * 3600 - 60;
            [
                datum("/node-data", "nvme1n1", at, 50.0 + f64::from(h) * 0.5),
                datum("/", "nvme0n1p1", at, 97.0),
            ]
        }));
    }
}
