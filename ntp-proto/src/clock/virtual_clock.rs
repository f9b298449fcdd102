//! The clock `ntpxd -x` disciplines: a software clock over the untouched system clock.
//!
//! Its reading is the system clock's run through a [`Timescale`]: corrections move it at
//! once and frequency corrections change its rate, with nothing to slew (there is no
//! physical clock to catch up). The served time is this reading, the estimate of true time.

use super::{
    Clock, EngineClock, MAX_TOTAL_FREQ, RealtimeClock, epoch_of, secs_since, timescale::Timescale,
};

/// `ntpxd -x`'s clock: a software clock over the system clock, which is never touched.
pub struct FreeRunning<R: RealtimeClock> {
    system: R,
    epoch_ns: u64,
    base: f64,
    max_drift: f64,
    scale: Timescale,
}

impl<R: RealtimeClock> FreeRunning<R> {
    /// A software clock with frequency correction `freq` (within `max_drift`) over the
    /// system clock `system`.
    pub fn new(freq: f64, system: R, max_drift: f64) -> Self {
        let epoch_ns = epoch_of(system.now_ns());
        let now = secs_since(epoch_ns, system.now_ns());
        let max_drift = max_drift.clamp(0.0, MAX_TOTAL_FREQ);
        let base = freq.clamp(-max_drift, max_drift);
        FreeRunning {
            system,
            epoch_ns,
            base,
            max_drift,
            scale: Timescale::new(now, now, 1.0 + base),
        }
    }

    fn raw_now(&self) -> f64 {
        self.system_secs(self.system.now_ns())
    }
}

impl<R: RealtimeClock> Clock for FreeRunning<R> {
    fn now(&self) -> f64 {
        self.scale.cooked(self.raw_now())
    }
    fn frequency(&self) -> f64 {
        self.base
    }
    fn set_frequency(&mut self, freq: f64) -> f64 {
        let new = freq.clamp(-self.max_drift, self.max_drift);
        let dfreq = (1.0 + new) / (1.0 + self.base) - 1.0;
        self.base = new;
        let raw = self.raw_now();
        self.scale.restate(raw, 0.0, dfreq);
        dfreq
    }
    fn accrue(&mut self, offset: f64, _corr_rate: f64) {
        let raw = self.raw_now();
        self.scale.restate(raw, offset, 0.0);
    }
    fn step(&mut self, offset: f64) -> f64 {
        self.accrue(offset, 0.0);
        offset
    }
    fn uncorrected(&self) -> f64 {
        0.0
    }
}

impl<R: RealtimeClock> EngineClock for FreeRunning<R> {
    fn system_now_ns(&self) -> u64 {
        self.system.now_ns()
    }
    fn system_secs(&self, sys_ns: u64) -> f64 {
        secs_since(self.epoch_ns, sys_ns)
    }
    fn local_at(&self, sys_ns: u64) -> f64 {
        self.scale.cooked(self.system_secs(sys_ns))
    }
    fn served_correction(&self, sys_ns: u64) -> (f64, f64) {
        let raw = self.system_secs(sys_ns);
        (self.scale.cooked(raw) - raw, self.scale.rate() - 1.0)
    }
    fn external_step(&mut self) {
        let raw = self.raw_now();
        self.scale = Timescale::new(raw, raw, 1.0 + self.base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Fake(Cell<u64>);

    impl RealtimeClock for &Fake {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
    }

    #[test]
    fn corrections_move_the_served_time_at_once_and_frequency_its_rate() {
        let sys = Fake(Cell::new(1_800_000_000_000_000_000));
        let mut c = FreeRunning::new(10e-6, &sys, 0.1);
        let t0 = sys.0.get();
        sys.0.set(t0 + 100_000_000_000);
        let (corr, rate) = c.served_correction(sys.0.get());
        assert!((corr - 10e-6 * 100.0).abs() < 1e-9 && (rate - 10e-6).abs() < 1e-15);
        c.accrue(0.25, 1.0);
        assert!((c.served_correction(sys.0.get()).0 - 0.25 - 1e-3).abs() < 1e-9);
        assert_eq!(c.uncorrected(), 0.0, "nothing is left to slew");
        let dfreq = c.set_frequency(-1e-6);
        assert!((dfreq + 11e-6).abs() < 1e-9);
        sys.0.set(sys.0.get() + 10_000_000_000);
        let (corr, _) = c.served_correction(sys.0.get());
        assert!((corr - (0.251 - 1e-5)).abs() < 1e-9, "{corr}");
        // Readings before the change are restated onto the new rate.
        let earlier = c.local_at(t0 + 50_000_000_000);
        assert!(
            (earlier - (50.0 + 0.25 + 5e-4 + 11e-6 * 50.0)).abs() < 1e-6,
            "{earlier}"
        );
    }
}
