//! The system clock: reading it (`read`), steering it (`system`), and the clock the daemon
//! disciplines, chosen by `-x`.

pub mod read;
pub mod system;

pub use read::{SystemRealtime, kernel_time, measure_precision, realtime_ns, tai_ns};

use ntp_proto::clock::{Clock, EngineClock, FreeRunning, SteeredClock};
use system::SystemClock;

/// The clock the daemon steers: virtual with `-x`, the system clock without.
pub enum DaemonClock {
    /// `-x`: the system clock is never touched.
    Free(FreeRunning<SystemRealtime>),
    /// The system clock, steered.
    System(SteeredClock<SystemClock>),
}

impl DaemonClock {
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
    fn set_frequency(&mut self, freq: f64) {
        self.inner_mut().set_frequency(freq);
    }
    fn correct(&mut self, offset: f64, step: bool) {
        self.inner_mut().correct(offset, step);
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
    fn slew_remaining(&self) -> f64 {
        self.inner().slew_remaining()
    }
}
