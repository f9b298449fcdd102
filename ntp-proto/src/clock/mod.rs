//! The clocks the synchronization engine steers, and the one trait through which it
//! reaches the system clock.
//!
//! Every decision about steering (how fast to slew, when a slew ends, when to step, what
//! frequency and tick the kernel is given) is made here, over [`KernelClock`]. The daemon
//! implements that trait with `adjtimex` and `clock_settime`; the simulator with a model of
//! the kernel's clock. So the simulation tests run the steering code the daemon runs.

mod kernel;
pub mod slew;
mod steered;
mod virtual_clock;

pub use kernel::{KernelFrequency, MAX_KERNEL_FREQ, NOMINAL_TICK_US, TICK_RANGE_US};
pub use steered::{SLEW_CHECK_NS, SteeredClock};
pub use virtual_clock::{FreeRunning, VirtualClock};

/// A kernel clock call that failed, with what the kernel said.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{call}: {reason}")]
pub struct ClockError {
    /// The call, e.g. "`adjtimex(ADJ_FREQUENCY)`".
    pub call: &'static str,
    /// Why it failed.
    pub reason: String,
}

/// Reading the system clock (`CLOCK_REALTIME`).
pub trait RealtimeClock {
    /// `CLOCK_REALTIME` now, ns since the Unix epoch. A clock that cannot be read cannot be
    /// steered or served: implementations treat a failed read as fatal and say so.
    fn now_ns(&self) -> u64;
}

/// The system clock as the kernel lets it be steered.
pub trait KernelClock: RealtimeClock {
    /// Sets the tick length and frequency offset (`ADJ_TICK | ADJ_FREQUENCY`).
    fn set_frequency(&mut self, f: KernelFrequency) -> Result<(), ClockError>;
    /// Steps the clock by `offset` seconds (`clock_settime`).
    fn step(&mut self, offset: f64) -> Result<(), ClockError>;
    /// Tells the kernel whether the clock is synchronized, the leap second to apply at the
    /// end of the day (RFC 5905 leap indicator) and the error bounds in seconds.
    fn set_sync_status(
        &mut self,
        synchronized: bool,
        leap: u8,
        max_error: f64,
        est_error: f64,
    ) -> Result<(), ClockError>;
}

/// The clock being disciplined, as the steering loop sees it: the "NTP clock", the system
/// clock plus any correction still being slewed into it.
pub trait Clock {
    /// The clock's reading now, seconds.
    fn now(&self) -> f64;
    /// The frequency correction in force (ratio; positive speeds the clock up).
    fn frequency(&self) -> f64;
    /// Sets the frequency correction.
    fn set_frequency(&mut self, freq: f64);
    /// Moves the clock forward by `offset` seconds: at once if `step`, else by slewing
    /// (the loop counts the correction as done either way).
    fn correct(&mut self, offset: f64, step: bool);
}

/// A clock the engine can discipline and read at past system instants.
pub trait EngineClock: Clock {
    /// System time now (`CLOCK_REALTIME` ns).
    fn system_now_ns(&self) -> u64;
    /// System time `sys_ns` (`CLOCK_REALTIME` ns) on the clock's scale of seconds, without
    /// any correction.
    fn system_secs(&self, sys_ns: u64) -> f64;
    /// The NTP clock's reading at system time `sys_ns`.
    fn local_at(&self, sys_ns: u64) -> f64;
    /// Served minus system time at `sys_ns` (seconds), and its rate.
    fn served_correction(&self, sys_ns: u64) -> (f64, f64);
    /// Offset correction still being slewed, seconds.
    fn slew_remaining(&self) -> f64;
}

/// Seconds from `epoch_ns` to `sys_ns`.
pub(crate) fn secs_since(epoch_ns: u64, sys_ns: u64) -> f64 {
    (i128::from(sys_ns) - i128::from(epoch_ns)) as f64 * 1e-9
}

/// `sys_ns` rounded down to a whole second: the origin of a clock's scale of seconds.
pub(crate) fn epoch_of(sys_ns: u64) -> u64 {
    sys_ns / 1_000_000_000 * 1_000_000_000
}
