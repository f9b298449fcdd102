//! The clock `ntpxd` steers without `-x`: the system clock itself, through
//! [`SystemClock`]. Offsets are slewed by running the clock at a different frequency, at
//! most `maxslewrate` (see [`FreqSlew`]); the NTP clock is the system clock plus what is
//! left of the slew.

use crate::{
    engine::EngineClock,
    sync::{discipline::Clock, slew::FreqSlew},
    sysclock::SystemClock,
};
use tracing::warn;

/// The real system clock.
pub struct SystemSteered {
    clock: SystemClock,
    slew: FreqSlew,
    freq: f64,
    epoch_ns: u64,
}

impl SystemSteered {
    /// Takes control of the system clock, starting from frequency correction `freq`, with
    /// slews of at most `max_slew_rate` (ratio).
    pub fn new(freq: f64, max_slew_rate: f64) -> Self {
        let epoch_ns = crate::clock::realtime_ns().unwrap_or(0) / 1_000_000_000 * 1_000_000_000;
        let mut c = SystemSteered {
            clock: SystemClock,
            slew: FreqSlew::new(max_slew_rate, freq),
            freq,
            epoch_ns,
        };
        // An adjtime slew left by another daemon would fight ours.
        if let Err(e) = c.clock.slew(0.0) {
            warn!("Could not cancel a pending adjtime slew: {e:#}");
        }
        c.apply(freq);
        c
    }

    fn secs(&self, sys_ns: u64) -> f64 {
        (sys_ns as i128 - self.epoch_ns as i128) as f64 * 1e-9
    }

    fn now_secs(&self) -> f64 {
        self.secs(crate::clock::realtime_ns().unwrap_or(self.epoch_ns))
    }

    fn apply(&mut self, kernel_freq: f64) {
        if let Err(e) = self.clock.set_frequency(kernel_freq) {
            warn!("Could not set the clock frequency: {e:#}");
        }
    }

    /// Ends a completed slew; returns the system time (ns) of the next completion to wait
    /// for, if a slew is in progress.
    pub fn tick(&mut self) -> Option<u64> {
        let t = self.now_secs();
        if let Some(f) = self.slew.tick(t) {
            self.apply(f);
        }
        self.slew
            .deadline()
            .map(|d| (self.epoch_ns as i128 + (d * 1e9) as i128).max(0) as u64)
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
        self.local_at(crate::clock::realtime_ns().unwrap_or(self.epoch_ns))
    }
    fn frequency(&self) -> f64 {
        self.freq
    }
    fn set_frequency(&mut self, freq: f64) {
        self.freq = freq;
        let t = self.now_secs();
        let f = self.slew.set_base(t, freq);
        self.apply(f);
    }
    fn correct(&mut self, offset: f64, step: bool) {
        let t = self.now_secs();
        if step {
            let left = self.slew.cancel(t);
            self.apply(self.slew.kernel_frequency());
            if let Err(e) = self.clock.step(left + offset) {
                warn!("Could not step the clock by {offset:.6} s: {e:#}");
            }
        } else {
            let f = self.slew.add(t, offset);
            self.apply(f);
        }
    }
}

impl EngineClock for SystemSteered {
    fn local_at(&self, sys_ns: u64) -> f64 {
        let t = self.secs(sys_ns);
        t + self.slew.remaining_at(t)
    }
    fn slew_remaining(&self) -> f64 {
        self.slew.remaining_at(self.now_secs())
    }
    fn served_correction(&self, sys_ns: u64) -> (f64, f64) {
        // Served time stays on true time while the clock slews toward it.
        (self.slew.remaining_at(self.secs(sys_ns)), -self.slew.rate())
    }
}
