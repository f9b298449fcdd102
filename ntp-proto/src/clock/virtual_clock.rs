//! The clock `ntpxd -x` disciplines: a software clock over the untouched system clock.
//!
//! reading(t) = t + phase(t), where the phase follows the frequency correction and any
//! slew in progress. The served time is the estimate of true time: the reading plus what
//! is left of the slew, so clients see corrections at once while the local reading moves
//! smoothly (as chronyd serves its "NTP time", not its slewing system clock).

use super::{Clock, EngineClock, RealtimeClock, epoch_of, secs_since};

/// Slew rate of the virtual clock (ratio).
pub(super) const SLEW_RATE: f64 = 500e-6;

/// A piecewise-linear phase over system time (seconds since an epoch).
#[derive(Clone, Debug)]
pub struct VirtualClock {
    /// System time (s since epoch) at which `phase`/`remaining` were last collapsed.
    t_ref: f64,
    /// Phase at `t_ref`.
    phase: f64,
    /// Frequency correction (ratio).
    freq: f64,
    /// Slew left to apply at `t_ref` (signed seconds).
    remaining: f64,
}

impl VirtualClock {
    /// A clock reading exactly the system time, with `freq` as its frequency correction.
    pub fn new(freq: f64) -> Self {
        VirtualClock {
            t_ref: 0.0,
            phase: 0.0,
            freq,
            remaining: 0.0,
        }
    }

    fn slewed(&self, t: f64) -> f64 {
        let done = (SLEW_RATE * (t - self.t_ref).max(0.0)).min(self.remaining.abs());
        done.copysign(self.remaining)
    }

    /// Phase (reading minus system time) at system time `t`.
    pub fn phase_at(&self, t: f64) -> f64 {
        self.phase + self.freq * (t - self.t_ref) + self.slewed(t)
    }

    /// Reading at system time `t`.
    pub fn reading_at(&self, t: f64) -> f64 {
        t + self.phase_at(t)
    }

    /// Slew still to apply at system time `t`.
    pub fn remaining_at(&self, t: f64) -> f64 {
        self.remaining - self.slewed(t)
    }

    /// Served minus system time at `t`, and its rate: for the kernel's timebase.
    pub fn served_correction(&self, t: f64) -> (f64, f64) {
        (self.phase_at(t) + self.remaining_at(t), self.freq)
    }

    fn collapse(&mut self, t: f64) {
        self.phase = self.phase_at(t);
        self.remaining = self.remaining_at(t);
        self.t_ref = t;
    }

    /// Frequency correction in force.
    pub fn frequency(&self) -> f64 {
        self.freq
    }

    /// Sets the frequency correction from system time `t` on.
    pub fn set_frequency(&mut self, t: f64, freq: f64) {
        self.collapse(t);
        self.freq = freq;
    }

    /// Replaces the slew in progress with `offset` seconds from `t` on.
    pub fn slew(&mut self, t: f64, offset: f64) {
        self.collapse(t);
        self.remaining = offset;
    }

    /// Steps the reading by `offset` at `t`, cancelling any slew.
    pub fn step(&mut self, t: f64, offset: f64) {
        self.collapse(t);
        self.remaining = 0.0;
        self.phase += offset;
    }

    /// Moves the served time (reading plus slew left) forward by `offset` at `t`: at once
    /// in the reading if `step`, else by adding it to the slew.
    pub fn correct(&mut self, t: f64, offset: f64, step: bool) {
        self.collapse(t);
        if step {
            self.phase += self.remaining + offset;
            self.remaining = 0.0;
        } else {
            self.remaining += offset;
        }
    }
}

/// `ntpxd -x`'s clock: a [`VirtualClock`] over the system clock, which is never touched.
pub struct FreeRunning<R: RealtimeClock> {
    vc: VirtualClock,
    epoch_ns: u64,
    system: R,
}

impl<R: RealtimeClock> FreeRunning<R> {
    /// A virtual clock with frequency correction `freq` over the system clock `system`.
    pub fn new(freq: f64, system: R) -> Self {
        let epoch_ns = epoch_of(system.now_ns());
        let mut vc = VirtualClock::new(0.0);
        vc.set_frequency(0.0, freq);
        FreeRunning {
            vc,
            epoch_ns,
            system,
        }
    }

    fn now_secs(&self) -> f64 {
        self.system_secs(self.system.now_ns())
    }
}

impl<R: RealtimeClock> Clock for FreeRunning<R> {
    fn now(&self) -> f64 {
        self.local_at(self.system.now_ns())
    }
    fn frequency(&self) -> f64 {
        self.vc.frequency()
    }
    fn set_frequency(&mut self, freq: f64) {
        let t = self.now_secs();
        self.vc.set_frequency(t, freq);
    }
    fn correct(&mut self, offset: f64, step: bool) {
        let t = self.now_secs();
        self.vc.correct(t, offset, step);
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
        let t = self.system_secs(sys_ns);
        t + self.vc.served_correction(t).0
    }
    fn served_correction(&self, sys_ns: u64) -> (f64, f64) {
        self.vc.served_correction(self.system_secs(sys_ns))
    }
    fn slew_remaining(&self) -> f64 {
        self.vc.remaining_at(self.now_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_and_slew_move_the_reading() {
        let mut c = VirtualClock::new(10e-6);
        assert!((c.reading_at(100.0) - 100.001).abs() < 1e-12);
        c.slew(100.0, 0.001);
        // 500 ppm: 1 ms takes 2 s; the served time has it all at once.
        assert!((c.remaining_at(101.0) - 0.0005).abs() < 1e-12);
        let (corr, rate) = c.served_correction(101.0);
        assert!((corr - (10e-6 * 101.0 + 0.001)).abs() < 1e-12, "{corr}");
        assert_eq!(rate, 10e-6);
        assert!((c.phase_at(105.0) - (10e-6 * 105.0 + 0.001)).abs() < 1e-12);
        assert_eq!(c.remaining_at(105.0), 0.0);
    }

    #[test]
    fn negative_slews_and_steps() {
        let mut c = VirtualClock::new(0.0);
        c.slew(0.0, -0.002);
        assert!((c.phase_at(2.0) + 0.001).abs() < 1e-12);
        c.step(2.0, 0.5);
        assert!((c.phase_at(3.0) - 0.499).abs() < 1e-12);
        assert_eq!(c.remaining_at(3.0), 0.0);
        c.set_frequency(3.0, -1e-6);
        assert!((c.phase_at(4.0) - (0.499 - 1e-6)).abs() < 1e-12);
        // A correction moves the served time by exactly its size, stepped or slewed.
        let before = c.served_correction(4.0).0;
        c.correct(4.0, 0.25, false);
        assert!((c.served_correction(4.0).0 - before - 0.25).abs() < 1e-12);
        c.correct(4.0, -0.1, true);
        assert!((c.served_correction(4.0).0 - before - 0.15).abs() < 1e-12);
        assert_eq!(c.remaining_at(4.0), 0.0);
    }
}
