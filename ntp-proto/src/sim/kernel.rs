//! A model of the Linux kernel clock as `adjtimex` and `clock_settime` steer it: a tick
//! within ±10 % of nominal, a frequency offset clamped to ±500 ppm, steps, and an
//! oscillator with its own frequency error. True time is the simulation's.

use crate::clock::{
    ClockError, KernelClock, KernelFrequency, MAX_KERNEL_FREQ, NOMINAL_TICK_US, RealtimeClock,
    TICK_RANGE_US,
};

/// `CLOCK_REALTIME` at true time zero (before any phase error): 2027-01-15.
pub(crate) const EPOCH_NS: u64 = 1_800_000_000_000_000_000;

/// The simulated kernel clock.
#[derive(Clone, Debug)]
pub(crate) struct KernelModel {
    /// True time now, seconds since the start.
    true_time: f64,
    /// Reading minus true time at `true_time`, seconds.
    phase: f64,
    /// The oscillator's own frequency error (ratio; positive: fast).
    pub intrinsic: f64,
    /// The setting in force.
    pub setting: KernelFrequency,
    /// Steps applied, seconds.
    pub steps: Vec<f64>,
    /// Settings the kernel refused.
    pub refused: u32,
    /// The last status set: synchronized, leap.
    pub status: (bool, u8),
}

impl KernelModel {
    /// A clock `offset` seconds ahead of true time whose oscillator runs `intrinsic` fast.
    pub(crate) fn new(offset: f64, intrinsic: f64) -> Self {
        KernelModel {
            true_time: 0.0,
            phase: offset,
            intrinsic,
            setting: KernelFrequency {
                tick_us: NOMINAL_TICK_US,
                freq_scaled: 0,
            },
            steps: Vec::new(),
            refused: 0,
            status: (false, 0),
        }
    }

    /// How fast the reading moves against true time, minus one: the oscillator's rate
    /// times the rate the tick and frequency offset make of it.
    pub(crate) fn rate(&self) -> f64 {
        (1.0 + self.intrinsic) * (1.0 + self.setting.ratio()) - 1.0
    }

    /// True time now, seconds.
    pub(crate) fn true_time(&self) -> f64 {
        self.true_time
    }

    /// Reading minus true time now, seconds.
    pub(crate) fn error(&self) -> f64 {
        self.phase
    }

    /// The clock jumps by `x` seconds without the daemon's doing (someone else stepped it).
    pub(crate) fn jump(&mut self, x: f64) {
        self.phase += x;
    }

    /// Lets true time run on to `t` at the rate in force.
    pub(crate) fn advance_to(&mut self, t: f64) {
        if t > self.true_time {
            self.phase += self.rate() * (t - self.true_time);
            self.true_time = t;
        }
    }

    /// The reading (`CLOCK_REALTIME` ns) at true time `t`, not before now, if nothing
    /// changes the setting until then.
    pub(crate) fn reading_ns_at(&self, t: f64) -> u64 {
        let phase = self.phase + self.rate() * (t - self.true_time).max(0.0);
        true_ns(t + phase)
    }
}

/// True time `t` (seconds since the start) on the `CLOCK_REALTIME` scale.
pub(crate) fn true_ns(t: f64) -> u64 {
    (EPOCH_NS as i128 + (t * 1e9).round() as i128) as u64
}

impl RealtimeClock for KernelModel {
    fn now_ns(&self) -> u64 {
        self.reading_ns_at(self.true_time)
    }
}

impl KernelClock for KernelModel {
    fn set_frequency(&mut self, f: KernelFrequency) -> Result<(), ClockError> {
        if !(TICK_RANGE_US.0..=TICK_RANGE_US.1).contains(&f.tick_us) {
            self.refused += 1;
            return Err(ClockError {
                call: "adjtimex(ADJ_TICK)",
                reason: "Invalid argument".into(),
            });
        }
        // The kernel clamps the frequency offset silently.
        let max = (MAX_KERNEL_FREQ * 1e6 * 65536.0) as i64;
        self.setting = KernelFrequency {
            tick_us: f.tick_us,
            freq_scaled: f.freq_scaled.clamp(-max, max),
        };
        Ok(())
    }

    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        self.phase += offset;
        self.steps.push(offset);
        Ok(())
    }

    fn set_sync_status(
        &mut self,
        synchronized: bool,
        leap: u8,
        _max_error: f64,
        _est_error: f64,
    ) -> Result<(), ClockError> {
        self.status = (synchronized, leap);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, EngineClock, SteeredClock};

    /// Runs the clock's slew timer as the daemon does (on time), until true time `end`.
    fn run_until(c: &mut SteeredClock<KernelModel>, end: f64) {
        loop {
            let k = c.kernel();
            let ahead = (c.next_change_ns() as f64 - k.now_ns() as f64) * 1e-9 / (1.0 + k.rate());
            let at = k.true_time() + ahead.max(0.0) + 1e-9;
            if at > end {
                c.kernel_mut().advance_to(end);
                return;
            }
            c.kernel_mut().advance_to(at);
            c.tick();
        }
    }

    #[test]
    fn the_kernel_clamps_frequency_and_refuses_bad_ticks() {
        let mut k = KernelModel::new(0.0, 0.0);
        k.set_frequency(KernelFrequency {
            tick_us: 10_000,
            freq_scaled: 900 * 65536,
        })
        .unwrap();
        assert!((k.rate() - 500e-6).abs() < 1e-12);
        let tick = KernelFrequency {
            tick_us: 12_000,
            freq_scaled: 0,
        };
        assert!(k.set_frequency(tick).is_err());
        assert_eq!(k.refused, 1);
        k.set_frequency(KernelFrequency::from_ratio(0.05)).unwrap();
        k.advance_to(10.0);
        assert!((k.error() - 0.5).abs() < 1e-9, "{}", k.error());
    }

    #[test]
    fn a_slew_ends_on_time() {
        // 1 ms at a 500 ppm limit takes 2 s: the NTP clock has it at once, the system
        // clock gets there and then runs at the base frequency again (which cancels the
        // oscillator's own 10 ppm).
        let mut c = SteeredClock::new(KernelModel::new(0.0, 10e-6), -10e-6, 500e-6, 0.1);
        assert!(c.kernel().rate().abs() < 1e-9);
        c.accrue(0.001, 0.0);
        assert!(
            (c.kernel().rate() - 500e-6).abs() < 1e-6,
            "{}",
            c.kernel().rate()
        );
        assert!((c.uncorrected() - 0.001).abs() < 1e-9);
        run_until(&mut c, 1.0);
        assert!((c.kernel().error() - 0.0005).abs() < 1e-6);
        run_until(&mut c, 3.0);
        assert!(
            c.kernel().rate().abs() < 1e-9,
            "slew over: {}",
            c.kernel().rate()
        );
        assert!(
            (c.kernel().error() - 0.001).abs() < 1e-8,
            "{}",
            c.kernel().error()
        );
        assert!(c.uncorrected().abs() < 1e-9);
        assert!(c.kernel().steps.is_empty());
    }

    #[test]
    fn releasing_the_clock_cancels_the_slew_and_keeps_the_base_frequency() {
        // The oscillator is 50 ppm fast; the base corrects it. A 0.1 s slew is running when
        // the daemon exits: the kernel must go back to the base, not stay at the slew rate.
        let base = 1.0 / (1.0 + 50e-6) - 1.0;
        let mut c = SteeredClock::new(KernelModel::new(0.0, 50e-6), base, 0.083, 0.1);
        c.accrue(0.1, 0.0);
        run_until(&mut c, 0.5);
        assert!(c.kernel().rate() > 0.08);
        let left = c.release();
        assert!(left > 0.05 && left < 0.1, "{left}");
        assert!(c.kernel().rate().abs() < 1e-9, "{}", c.kernel().rate());
        assert_eq!(c.uncorrected(), 0.0);
        let error = c.kernel().error();
        run_until(&mut c, 100.0);
        assert!(
            (c.kernel().error() - error).abs() < 1e-7,
            "no drift after release"
        );
    }

    #[test]
    fn an_external_step_drops_the_plan_and_keeps_the_base_frequency() {
        // A 10 ms slew is under way when someone else steps the clock by 2 s: the slew is
        // dropped (it was for the old scale), the NTP clock reads the system clock again,
        // the base frequency still holds, and samples taken before are on another scale.
        let base = 1.0 / (1.0 + 20e-6) - 1.0;
        let mut c = SteeredClock::new(KernelModel::new(0.0, 20e-6), base, 500e-6, 0.1);
        c.accrue(0.01, 0.0);
        run_until(&mut c, 5.0);
        let before = c.generation();
        c.kernel_mut().phase += 2.0;
        c.external_step();
        assert!(c.generation() > before);
        assert_eq!(c.uncorrected(), 0.0);
        let sys = c.kernel().now_ns();
        let (corr, rate) = c.served_correction(sys);
        assert!(corr.abs() < 1e-9 && rate.abs() < 1e-9, "{corr} {rate}");
        assert!(c.kernel().rate().abs() < 1e-9, "{}", c.kernel().rate());
        let error = c.kernel().error();
        run_until(&mut c, 60.0);
        assert!((c.kernel().error() - error).abs() < 1e-7, "no slew left");
    }

    #[test]
    fn a_small_correction_is_spread_over_its_correction_time() {
        // 10 µs with the error of a 10 µs estimate after a 64 s interval (corrtimeratio
        // 3): about 96 s, at 0.1 ppm, no faster.
        let mut c = SteeredClock::new(KernelModel::new(0.0, 0.0), 0.0, 0.083, 0.1);
        c.accrue(1e-5, 1.5 * 1e-5 * 64.0);
        assert!(
            (c.kernel().rate() - 1e-5 / 96.0).abs() < 1e-10,
            "{}",
            c.kernel().rate()
        );
        run_until(&mut c, 48.0);
        assert!(
            (c.kernel().error() - 5e-6).abs() < 1e-8,
            "{}",
            c.kernel().error()
        );
        run_until(&mut c, 200.0);
        assert!((c.kernel().error() - 1e-5).abs() < 1e-9);
    }

    #[test]
    fn large_slews_use_the_tick() {
        // 0.1 s at the default 83333 ppm takes 1.2 s: beyond what ADJ_FREQUENCY alone does.
        let mut c = SteeredClock::new(KernelModel::new(0.0, 0.0), 0.0, 0.083_333, 0.1);
        c.accrue(0.1, 0.0);
        assert!(
            c.kernel().setting.tick_us > 10_700,
            "{:?}",
            c.kernel().setting
        );
        run_until(&mut c, 1.3);
        assert!(
            (c.kernel().error() - 0.1).abs() < 1e-7,
            "{}",
            c.kernel().error()
        );
        // What the rounding of the rates left (nanoseconds) goes within a second.
        assert!(c.kernel().rate().abs() < 1e-7, "{}", c.kernel().rate());
        run_until(&mut c, 3.0);
        assert!(c.kernel().rate().abs() < 1e-9, "{}", c.kernel().rate());
        assert!(
            (c.kernel().error() - 0.1).abs() < 1e-8,
            "{}",
            c.kernel().error()
        );
        assert_eq!(c.kernel().refused, 0);
    }

    #[test]
    fn makestep_steps_where_allowed_and_slews_where_not() {
        use crate::sync::discipline::{Discipline, DisciplineParams};
        use crate::sync::select::Combined;
        let update = |offset| Combined {
            ref_time: 0.0,
            offset,
            offset_sd: 1e-6,
            frequency: 0.0,
            frequency_sd: 1e-8,
            skew: 1e-6,
            root_delay: 0.0,
            root_dispersion: 0.0,
            stratum: 2,
            combined: 1,
        };
        let mut d = Discipline::new(DisciplineParams {
            makestep: Some((1.0, 1)),
            ..Default::default()
        });
        let mut c = SteeredClock::new(KernelModel::new(-2.0, 0.0), 0.0, 500e-6, 0.1);
        // The first update may step: 2 s is over the threshold.
        let r = d.update(&mut c, &update(2.0));
        assert_eq!(r.stepped, Some(2.0));
        assert_eq!(c.kernel().steps, [2.0]);
        assert!(c.kernel().error().abs() < 1e-9);
        // The second may not: 1.5 s is slewed at 500 ppm, 3000 s of it.
        assert!(d.update(&mut c, &update(1.5)).stepped.is_none());
        assert_eq!(c.kernel().steps.len(), 1);
        assert!((c.kernel().rate() - 500e-6).abs() < 1e-6);
        run_until(&mut c, 1000.0);
        assert!((c.kernel().error() - 0.5).abs() < 1e-3);
        assert!((c.uncorrected() - 1.0).abs() < 1e-3);
    }
}
