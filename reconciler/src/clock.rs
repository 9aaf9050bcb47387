//! Time, passed in. Nothing in the engine reads the system clock directly: the simulator
//! runs on a [`ManualClock`] in tests and on a [`ScaledClock`] in the demo.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in unix milliseconds.
    fn now_ms(&self) -> Millis;
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
}
