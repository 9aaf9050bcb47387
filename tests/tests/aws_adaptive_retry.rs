//! The production retry mode (adaptive) on moto: throttling that stops is absorbed, and the
//! client slows its own request rate meanwhile. In its own test binary because the SDK's
//! client-side rate limiter is shared by every client of a service in a process.

use fleet_tests::world::{AwsWorld, Fault, TestWorld};
use reconciler::provider::Scope;
use std::time::Instant;

#[tokio::test]
async fn adaptive_retry_absorbs_throttling_and_slows_down() {
    let w = AwsWorld::with_retry("adaptive_retry", true).await;
    let t = Instant::now();
    let scope = Scope::of(&w.desired().fleet);
    w.provider().observe(&scope).await.expect("observe");
    let unthrottled = t.elapsed();
    let before = w.attempts();
    w.inject(Fault::Throttle {
        op: Some("DescribeInstances"),
        times: 1,
    });
    let t = Instant::now();
    let o = w
        .provider()
        .observe(&scope)
        .await
        .expect("throttling that stops is absorbed");
    let throttled = t.elapsed();
    assert!(o.instances.is_empty());
    assert_eq!(
        w.attempts() - before,
        o.api_calls + 1,
        "one retried attempt"
    );
    eprintln!(
        "adaptive retry: observe {:.0} ms unthrottled, {:.0} ms through 1 throttle ({} calls, {} attempts)",
        unthrottled.as_secs_f64() * 1e3,
        throttled.as_secs_f64() * 1e3,
        o.api_calls,
        o.api_calls + 1
    );
}
