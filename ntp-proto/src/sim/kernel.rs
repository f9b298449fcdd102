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

    /// How fast the reading moves against true time, minus one.
    pub(crate) fn rate(&self) -> f64 {
        self.intrinsic + self.setting.ratio()
    }

    /// True time now, seconds.
    pub(crate) fn true_time(&self) -> f64 {
        self.true_time
    }

    /// Reading minus true time now, seconds.
    pub(crate) fn error(&self) -> f64 {
        self.phase
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

    /// Runs the clock's slew timer as the daemon does, until true time `end`.
    fn run_until(c: &mut SteeredClock<KernelModel>, end: f64) {
        loop {
            let next = c.tick();
            let t = c.kernel().true_time();
            if t >= end {
                return;
            }
            let wait = SteeredClock::<KernelModel>::wait_ns(next, c.kernel().now_ns());
            let to = (t + wait as f64 * 1e-9).min(end);
            c.kernel_mut().advance_to(to);
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
        // 1 ms at 500 ppm takes 2 s: the NTP clock has it at once, the system clock gets
        // there in 2 s and then runs at the base frequency again. The base (-10 ppm, which
        // cancels the oscillator's +10 ppm) leaves 490 ppm of the kernel's range to slew.
        let mut c = SteeredClock::new(KernelModel::new(0.0, 10e-6), -10e-6, 500e-6);
        assert!(c.kernel().rate().abs() < 1e-10);
        c.correct(0.001, false);
        assert!((c.kernel().rate() - 490e-6).abs() < 1e-10);
        assert!((c.slew_remaining() - 0.001).abs() < 1e-9);
        run_until(&mut c, 1.0);
        assert!((c.kernel().error() - 0.00049).abs() < 1e-8);
        run_until(&mut c, 3.0);
        assert!(c.kernel().rate().abs() < 1e-10, "slew over");
        let overshoot = c.kernel().error() - 0.001;
        // The timer notices the end within 10 ms: at most 5 µs past it. The slew is
        // counted in system seconds, which run 490 ppm fast meanwhile: 0.49 µs short.
        assert!(
            (-0.5e-6..=5e-6).contains(&overshoot),
            "overshoot {overshoot}"
        );
        assert_eq!(c.slew_remaining(), 0.0);
        assert!(c.kernel().steps.is_empty());
    }

    #[test]
    fn makestep_steps_where_allowed_and_slews_where_not() {
        use crate::sync::discipline::{Discipline, DisciplineParams};
        use crate::sync::select::Combined;
        let update = |offset| Combined {
            offset,
            offset_sd: 1e-6,
            frequency: 0.0,
            skew: 1e-6,
            samples: 1,
            root_delay: 0.0,
            root_dispersion: 0.0,
            stratum: 2,
            leap: 0,
        };
        let mut d = Discipline::new(DisciplineParams {
            makestep: Some((1.0, 1)),
            ..Default::default()
        });
        let mut c = SteeredClock::new(KernelModel::new(-2.0, 0.0), 0.0, 500e-6);
        // The first update may step: 2 s is over the threshold.
        assert!(d.update(&mut c, &update(2.0)).stepped);
        assert_eq!(c.kernel().steps, [2.0]);
        assert!(c.kernel().error().abs() < 1e-9);
        // The second may not: 1.5 s is slewed at 500 ppm, 3000 s of it.
        assert!(!d.update(&mut c, &update(1.5)).stepped);
        assert_eq!(c.kernel().steps.len(), 1);
        assert!((c.kernel().rate() - 500e-6).abs() < 1e-10);
        run_until(&mut c, 1000.0);
        assert!((c.kernel().error() - 0.5).abs() < 1e-6);
        assert!((c.slew_remaining() - 1.0).abs() < 1e-3);
    }
}
