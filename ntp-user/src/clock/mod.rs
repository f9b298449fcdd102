//! The system clock: reading it (`read`), steering it (`system`), and the clock the daemon
//! disciplines, chosen by `-x`.

pub mod hooked;
pub mod read;
pub mod system;

pub use read::{
    SystemRealtime, kernel_time, measure_precision, monotonic_ns, realtime_ns, tai_ns,
    tai_with_offset,
};

use hooked::HookedStep;
use ntp_proto::clock::{Clock, EngineClock, FreeRunning, SteeredClock};
use system::SystemClock;

/// The clock the daemon steers: virtual with `-x`, the system clock without.
pub enum DaemonClock {
    /// `-x`: the system clock is never touched.
    Free(FreeRunning<SystemRealtime>),
    /// The system clock, steered (with the daemon's hook before each step).
    System(SteeredClock<HookedStep<SystemClock>>),
}

impl DaemonClock {
    /// Runs the slew timer if it is due; true if the served rate changed. The system time
    /// (ns) it is due next, if the clock has one.
    pub fn tick(&mut self) -> (bool, Option<u64>) {
        match self {
            DaemonClock::Free(_) => (false, None),
            DaemonClock::System(c) => (c.tick(), Some(c.next_change_ns())),
        }
    }

    /// Lets go of the clock at exit: a running slew is cancelled and the kernel left at
    /// the base frequency. The correction left unmade, seconds.
    pub fn release(&mut self) -> f64 {
        match self {
            DaemonClock::Free(_) => 0.0,
            DaemonClock::System(c) => c.release(),
        }
    }

    fn inner(&self) -> &dyn EngineClock {
        match self {
            DaemonClock::Free(c) => c,
            DaemonClock::System(c) => c,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn EngineClock {
        match self {
            DaemonClock::Free(c) => c,
            DaemonClock::System(c) => c,
        }
    }
}

impl Clock for DaemonClock {
    fn now(&self) -> f64 {
        self.inner().now()
    }
    fn frequency(&self) -> f64 {
        self.inner().frequency()
    }
    fn set_frequency(&mut self, freq: f64) -> f64 {
        self.inner_mut().set_frequency(freq)
    }
    fn accrue(&mut self, offset: f64, corr_rate: f64) {
        self.inner_mut().accrue(offset, corr_rate);
    }
    fn step(&mut self, offset: f64) -> f64 {
        self.inner_mut().step(offset)
    }
    fn uncorrected(&self) -> f64 {
        self.inner().uncorrected()
    }
}

impl EngineClock for DaemonClock {
    fn system_now_ns(&self) -> u64 {
        self.inner().system_now_ns()
    }
    fn system_secs(&self, sys_ns: u64) -> f64 {
        self.inner().system_secs(sys_ns)
    }
    fn local_at(&self, sys_ns: u64) -> f64 {
        self.inner().local_at(sys_ns)
    }
    fn served_correction(&self, sys_ns: u64) -> (f64, f64) {
        self.inner().served_correction(sys_ns)
    }
    fn generation(&self) -> u64 {
        self.inner().generation()
    }
    fn rescale(&self, sys_ns: u64, generation: u64) -> u64 {
        self.inner().rescale(sys_ns, generation)
    }
    fn external_step(&mut self) {
        self.inner_mut().external_step();
    }
}
