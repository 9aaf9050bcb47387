//! Time, passed in. Nothing in the engine reads the system clock directly: the simulator
//! runs on a [`ManualClock`] in tests and on a [`ScaledClock`] in the demo.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// A future that completes after a clock's duration.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of the current time, and of waiting on it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in unix milliseconds.
    fn now_ms(&self) -> Millis;
    /// Wait `ms` of this clock's time (real time by default).
    fn sleep(&self, ms: u64) -> Sleep {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }
}

/// Tokio's time from `start`: with tokio's paused time (tests, the rollout benchmark) waits
/// cost nothing and coins waiting in parallel share one timeline exactly.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: Millis,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `start` now. Call inside a tokio runtime.
    pub fn new(start: Millis) -> TokioClock {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> Millis {
        self.start + self.origin.elapsed().as_millis() as u64
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at `start`.
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(start)))
    }
    /// Move forward.
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// Set.
    pub fn set(&self, at: Millis) {
        self.0.store(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
    /// Moves the clock forward by `ms` at once (one waiter at a time: with several tasks
    /// waiting in parallel use [`TokioClock`] under paused time instead).
    fn sleep(&self, ms: u64) -> Sleep {
        self.advance_ms(ms);
        Box::pin(tokio::task::yield_now())
    }
}

/// Real time sped up `factor` times from `start` (the demo's accelerated time).
#[derive(Debug, Clone)]
pub struct ScaledClock {
    start: Millis,
    origin: Instant,
    factor: f64,
}

impl ScaledClock {
    /// Starts at `start`, running `factor` times faster than real time.
    pub fn new(start: Millis, factor: f64) -> ScaledClock {
        ScaledClock {
            start,
            origin: Instant::now(),
            factor,
        }
    }
}

impl Clock for ScaledClock {
    fn now_ms(&self) -> Millis {
        self.start + (self.origin.elapsed().as_secs_f64() * 1000.0 * self.factor) as u64
    }
    fn sleep(&self, ms: u64) -> Sleep {
        let real = Duration::from_secs_f64(ms as f64 / 1000.0 / self.factor.max(1e-9));
        Box::pin(tokio::time::sleep(real))
    }
}
