//! The clock `ntpxd` steers without `-x`: the system clock itself, through
//! [`SystemClock`]. The NTP clock is the system clock plus what is left of the kernel's
//! slew (adjtime slews at 500 ppm).

use crate::{engine::EngineClock, sync::discipline::Clock, sysclock::SystemClock};
use tracing::warn;

/// Rate at which the kernel applies an adjtime slew.
const KERNEL_SLEW_RATE: f64 = 500e-6;

/// The real system clock.
pub struct SystemSteered {
    clock: SystemClock,
    freq: f64,
    epoch_ns: u64,
}

impl SystemSteered {
    /// Takes control of the system clock, starting from frequency correction `freq`.
    pub fn new(freq: f64) -> Self {
        let mut clock = SystemClock;
        if let Err(e) = clock.set_frequency(freq) {
            warn!("Could not set the clock frequency: {e:#}");
        }
        let epoch_ns = crate::clock::realtime_ns().unwrap_or(0) / 1_000_000_000 * 1_000_000_000;
        SystemSteered {
            clock,
            freq,
            epoch_ns,
        }
    }

    fn remaining(&self) -> f64 {
        self.clock.slew_remaining().unwrap_or(0.0)
    }

    fn secs(&self, sys_ns: u64) -> f64 {
        (sys_ns as i128 - self.epoch_ns as i128) as f64 * 1e-9
    }

    /// The kernel state to publish: synchronized, leap second, error bounds.
    pub fn set_status(&mut self, synchronized: bool, leap: u8, max_error: f64, est_error: f64) {
        if let Err(e) = self
            .clock
            .set_status(synchronized, leap, max_error, est_error)
        {
            warn!("Could not update the kernel's clock status: {e:#}");
        }
    }
}

impl Clock for SystemSteered {
    fn now(&self) -> f64 {
        self.local_at(crate::clock::realtime_ns().unwrap_or(0))
    }
    fn frequency(&self) -> f64 {
        self.freq
    }
    fn set_frequency(&mut self, freq: f64) {
        match self.clock.set_frequency(freq) {
            Ok(()) => self.freq = freq,
            Err(e) => warn!("Could not set the clock frequency: {e:#}"),
        }
    }
    fn correct(&mut self, offset: f64, step: bool) {
        let left = self.remaining();
        let r = if step {
            self.clock.step(left + offset)
        } else {
            self.clock.slew(left + offset).map(|_| ())
        };
        if let Err(e) = r {
            warn!("Could not correct the clock by {offset:.6} s: {e:#}");
        }
    }
}

impl EngineClock for SystemSteered {
    fn local_at(&self, sys_ns: u64) -> f64 {
        // The slew left at sys_ns (in the recent past) was a little larger than now.
        let now = crate::clock::realtime_ns().unwrap_or(sys_ns);
        let left = self.remaining();
        let back = KERNEL_SLEW_RATE * (now.saturating_sub(sys_ns) as f64 * 1e-9);
        let then = if left == 0.0 {
            0.0
        } else {
            left + back.copysign(left)
        };
        self.secs(sys_ns) + then
    }
    fn served_correction(&self, _sys_ns: u64) -> (f64, f64) {
        let left = self.remaining();
        // Served time stays on true time while the clock slews toward it: the correction
        // shrinks at the kernel's rate, or within the next second if it is smaller.
        let rate = -(left.abs().min(KERNEL_SLEW_RATE)).copysign(left);
        (left, rate)
    }
}
