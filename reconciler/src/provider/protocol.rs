//! The crash protocol of a step that touches a node's daemon, written once for every provider
//! and every such step:
//!
//! 1. read the instance; if its record already shows the step's result and no step is
//!    pending, the step is [`Outcome::AlreadyDone`] and nothing is touched;
//! 2. mark it: `fleet:pending = <step>:<target>`;
//! 3. act (restart the daemon, stop–resize–start the instance, …);
//! 4. record the result (e.g. `fleet:version`), only once the act succeeded;
//! 5. clear the marker.
//!
//! A crash between any two of these leaves the marker, so the next observation reports the
//! node's version as unknown rather than guessing, and the planner either repeats the step
//! (every act is idempotent) or, for an upgrade, first asks the node ([`confirm_marked`]).
//!
//! What a step means ([`PendingStep::done_on`]: when the instance already shows its result,
//! [`PendingStep::record`]: the tags that record it) is written here, once. A provider
//! supplies the three primitives ([`InstanceRecord`]: read, write tags, delete a tag) and each
//! step's act; a new kind of step is one variant here and one act per provider.

use super::{InstanceState, NodeRef, Outcome, PendingStep, ProviderError, tags};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::future::Future;

/// What the protocol reads of an instance before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    /// Every tag.
    pub tags: BTreeMap<String, String>,
    /// State now.
    pub state: InstanceState,
    /// Instance type now.
    pub instance_type: String,
}

impl InstanceFacts {
    /// Whether a step is marked as under way.
    pub fn pending(&self) -> bool {
        self.tags.contains_key(tags::PENDING)
    }
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// A provider's primitive operations on one managed instance's record.
#[async_trait]
pub trait InstanceRecord: Send + Sync {
    /// The instance now (AWS: one DescribeInstances), or [`ProviderError::NotFound`] when it
    /// is gone or not managed.
    async fn read(&self, node: &NodeRef) -> Result<InstanceFacts, ProviderError>;
    /// Write tags (AWS: CreateTags, which overwrites).
    async fn write_tags(&self, node: &NodeRef, tags: &[(&str, &str)]) -> Result<(), ProviderError>;
    /// Remove one tag (AWS: DeleteTags).
    async fn delete_tag(&self, node: &NodeRef, key: &str) -> Result<(), ProviderError>;
}

/// What each kind of marked step means, the same for every provider: when an instance
/// already shows its result, and which tags record it.
impl PendingStep {
    /// Whether `facts` show this step's result (asked only when no step is marked).
    pub fn done_on(&self, facts: &InstanceFacts) -> bool {
        match self {
            PendingStep::Upgrade { to } => facts.tag(tags::VERSION) == Some(to.as_str()),
            PendingStep::ChangeType { to } => {
                facts.instance_type == *to
                    && matches!(facts.state, InstanceState::Running | InstanceState::Pending)
            }
            PendingStep::Reconfigure { to, .. } => facts.tag(tags::CONFIG) == Some(to.as_str()),
            PendingStep::Restore { snapshot } => {
                facts.tag(tags::RESTORED) == Some(snapshot.as_str())
            }
            // Its result is another instance: the step itself looks for it.
            PendingStep::Replace { .. } | PendingStep::Unknown { .. } => false,
        }
    }

    /// The tags that record the result, written once the act succeeded, before the marker is
    /// cleared. A change of type records nothing: the instance's type is its own record.
    pub fn record(&self) -> Vec<(&'static str, &str)> {
        match self {
            PendingStep::Upgrade { to } => vec![(tags::VERSION, to.as_str())],
            PendingStep::Reconfigure { to, keys } => {
                vec![
                    (tags::CONFIG, to.as_str()),
                    (tags::CONFIG_KEYS, keys.as_str()),
                ]
            }
            PendingStep::Restore { snapshot } => vec![(tags::RESTORED, snapshot.as_str())],
            PendingStep::ChangeType { .. }
            | PendingStep::Replace { .. }
            | PendingStep::Unknown { .. } => vec![],
        }
    }
}

/// Run `step` under its marker: steps 1–5 above.
pub async fn run_marked<R, Fut>(
    r: &R,
    node: &NodeRef,
    step: &PendingStep,
    act: impl FnOnce(InstanceFacts) -> Fut + Send,
) -> Result<Outcome, ProviderError>
where
    R: InstanceRecord + ?Sized,
    Fut: Future<Output = Result<(), ProviderError>> + Send,
{
    let facts = r.read(node).await?;
    if !facts.pending() && step.done_on(&facts) {
        return Ok(Outcome::AlreadyDone);
    }
    r.write_tags(node, &[(tags::PENDING, &step.to_tag())])
        .await?;
    act(facts).await?;
    finish(r, node, step).await?;
    Ok(Outcome::Done)
}

/// Finish `step`, found interrupted (its marker present), without acting again when the node
/// confirms its result: `ask` the node; if it says yes, record the result and clear the
/// marker. True when the result holds (at once when it is recorded and nothing is marked);
/// false, with nothing changed, when the node says no.
pub async fn confirm_marked<R, Fut>(
    r: &R,
    node: &NodeRef,
    step: &PendingStep,
    ask: impl FnOnce(InstanceFacts) -> Fut + Send,
) -> Result<bool, ProviderError>
where
    R: InstanceRecord + ?Sized,
    Fut: Future<Output = Result<bool, ProviderError>> + Send,
{
    let facts = r.read(node).await?;
    if !facts.pending() && step.done_on(&facts) {
        return Ok(true);
    }
    if !ask(facts).await? {
        return Ok(false);
    }
    finish(r, node, step).await?;
    Ok(true)
}

/// Steps 4 and 5: record the result, then clear the marker.
async fn finish<R>(r: &R, node: &NodeRef, step: &PendingStep) -> Result<(), ProviderError>
where
    R: InstanceRecord + ?Sized,
{
    let record = step.record();
    if !record.is_empty() {
        r.write_tags(node, &record).await?;
    }
    r.delete_tag(node, tags::PENDING).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeKey;
    use std::sync::Mutex;

    /// One instance's tags, failing the `fail_at`-th primitive (a crash there).
    #[derive(Default)]
    struct Fake {
        tags: Mutex<BTreeMap<String, String>>,
        calls: Mutex<Vec<String>>,
        fail_at: Option<usize>,
    }

    impl Fake {
        fn call(&self, what: &str) -> Result<(), ProviderError> {
            let mut c = self.calls.lock().unwrap();
            c.push(what.to_string());
            if Some(c.len()) == self.fail_at {
                return Err(ProviderError::Setup(format!("crash at {what}")));
            }
            Ok(())
        }
        fn tag(&self, k: &str) -> Option<String> {
            self.tags.lock().unwrap().get(k).cloned()
        }
    }

    #[async_trait]
    impl InstanceRecord for Fake {
        async fn read(&self, _: &NodeRef) -> Result<InstanceFacts, ProviderError> {
            self.call("read")?;
            Ok(InstanceFacts {
                tags: self.tags.lock().unwrap().clone(),
                state: InstanceState::Running,
                instance_type: "m5.large".into(),
            })
        }
        async fn write_tags(&self, _: &NodeRef, t: &[(&str, &str)]) -> Result<(), ProviderError> {
            self.call("write")?;
            let mut m = self.tags.lock().unwrap();
            for (k, v) in t {
                m.insert(k.to_string(), v.to_string());
            }
            Ok(())
        }
        async fn delete_tag(&self, _: &NodeRef, k: &str) -> Result<(), ProviderError> {
            self.call("delete")?;
            self.tags.lock().unwrap().remove(k);
            Ok(())
        }
    }

    fn node() -> NodeRef {
        NodeRef {
            key: NodeKey::parse("bitcoin", "eu-central-1a", 1).unwrap(),
            instance_id: "i-1".into(),
        }
    }

    async fn upgrade(f: &Fake, acted: &Mutex<u32>) -> Result<Outcome, ProviderError> {
        let step = PendingStep::Upgrade { to: "2".into() };
        run_marked(f, &node(), &step, |_| async {
            f.call("act")?;
            *acted.lock().unwrap() += 1;
            Ok(())
        })
        .await
    }

    /// A crash at any point leaves either the old record with the marker (version unknown)
    /// or the finished record; repeating the step then converges and acts again only if the
    /// act itself may not have happened.
    #[tokio::test]
    async fn a_crash_anywhere_leaves_the_marker_or_the_result() {
        let order = ["read", "write", "act", "write", "delete"];
        for crash in 1..=order.len() {
            let mut f = Fake {
                fail_at: Some(crash),
                ..Fake::default()
            };
            f.tags
                .lock()
                .unwrap()
                .insert(tags::VERSION.into(), "1".into());
            let acted = Mutex::new(0);
            assert!(upgrade(&f, &acted).await.is_err(), "crash at {crash}");
            assert_eq!(*f.calls.lock().unwrap(), order[..crash], "order");
            let marked = f.tag(tags::PENDING).is_some();
            // Before the marker is written nothing changed; from then until it is cleared it
            // is there.
            assert_eq!(marked, crash >= 3, "crash at {}", order[crash - 1]);
            if crash <= 3 {
                assert_eq!(f.tag(tags::VERSION).as_deref(), Some("1"));
            }
            f.fail_at = None;
            assert_eq!(upgrade(&f, &acted).await.unwrap(), Outcome::Done);
            assert_eq!(f.tag(tags::VERSION).as_deref(), Some("2"));
            assert_eq!(f.tag(tags::PENDING), None);
            // Repeated once more: already done, nothing touched.
            f.calls.lock().unwrap().clear();
            assert_eq!(upgrade(&f, &acted).await.unwrap(), Outcome::AlreadyDone);
            assert_eq!(*f.calls.lock().unwrap(), ["read"]);
        }
    }

    #[tokio::test]
    async fn confirming_records_only_what_the_node_says() {
        let f = Fake::default();
        f.tags
            .lock()
            .unwrap()
            .insert(tags::PENDING.into(), "upgrade:2".into());
        let step = PendingStep::Upgrade { to: "2".into() };
        let n = node();
        let no = confirm_marked(&f, &n, &step, |_| async { Ok(false) });
        assert!(!no.await.unwrap());
        assert!(f.tag(tags::PENDING).is_some(), "nothing changed on a no");
        let yes = confirm_marked(&f, &n, &step, |_| async { Ok(true) });
        assert!(yes.await.unwrap());
        assert_eq!(f.tag(tags::VERSION).as_deref(), Some("2"));
        assert_eq!(f.tag(tags::PENDING), None);
    }
}
