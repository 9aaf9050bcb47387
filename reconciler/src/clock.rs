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

/// The latest wall time handed out: [`SystemClock`] never goes back, even when NTP steps the
/// system clock back (bakes and timeouts are differences of two readings).
static LATEST_WALL_MS: AtomicU64 = AtomicU64::new(0);

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        LATEST_WALL_MS.fetch_max(wall, Ordering::SeqCst).max(wall)
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

/// The fastest a simulated clock runs, for every command (`plan`, `apply`, `demo`, `run`):
/// 100,000 simulated seconds a real second; beyond it polls and timeouts round to nothing.
pub const MAX_SPEED: f64 = 100_000.0;

/// `speed` if it is a usable simulated clock speed: finite, above 0, at most [`MAX_SPEED`].
pub fn check_speed(speed: f64) -> Result<f64, String> {
    if speed.is_finite() && speed > 0.0 && speed <= MAX_SPEED {
        Ok(speed)
    } else {
        Err(format!(
            "{speed} is not a speed above 0 and at most {MAX_SPEED}"
        ))
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

/// A scaled clock whose origin is kept in a file, so that a simulated fleet's time goes on
/// across restarts of the process (as AWS's does while the reconciler is down): simulated
/// now = `sim_ms + (wall now - wall_ms) × speed`. Changing the speed re-anchors at the
/// current simulated time, so time never jumps back.
#[derive(Debug, Clone)]
pub struct AnchoredClock {
    anchor: Anchor,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Anchor {
    wall_ms: Millis,
    sim_ms: Millis,
    speed: f64,
}

impl Anchor {
    fn at(&self, wall: Millis) -> Millis {
        self.sim_ms + (wall.saturating_sub(self.wall_ms) as f64 * self.speed) as Millis
    }
}

/// The anchor file inside the state directory.
pub const ANCHOR_FILE: &str = "sim-clock.json";

impl AnchoredClock {
    /// Open (or create) the anchor in `state_dir` at `speed`.
    pub fn open(state_dir: &std::path::Path, speed: f64) -> std::io::Result<AnchoredClock> {
        let path = state_dir.join(ANCHOR_FILE);
        let wall = SystemClock.now_ms();
        let old = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Anchor>(&b).ok());
        let anchor = match old {
            Some(a) if a.speed == speed => a,
            Some(a) => Anchor {
                wall_ms: wall,
                sim_ms: a.at(wall),
                speed,
            },
            None => Anchor {
                wall_ms: wall,
                sim_ms: wall,
                speed,
            },
        };
        if old != Some(anchor) {
            std::fs::create_dir_all(state_dir)?;
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&anchor).unwrap_or_default())?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(AnchoredClock { anchor })
    }

    /// Read the anchor of `state_dir` without changing it (another process's clock).
    pub fn read(state_dir: &std::path::Path) -> std::io::Result<AnchoredClock> {
        let b = std::fs::read(state_dir.join(ANCHOR_FILE))?;
        let anchor = serde_json::from_slice::<Anchor>(&b)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(AnchoredClock { anchor })
    }

    /// The speed.
    pub fn speed(&self) -> f64 {
        self.anchor.speed
    }
}

impl Clock for AnchoredClock {
    fn now_ms(&self) -> Millis {
        self.anchor.at(SystemClock.now_ms())
    }
    fn sleep(&self, ms: u64) -> Sleep {
        let real = Duration::from_secs_f64(ms as f64 / 1000.0 / self.anchor.speed.max(1e-9));
        Box::pin(tokio::time::sleep(real))
    }
}
