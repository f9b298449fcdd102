//! The steering loop: from the combined estimate, correct the clock's frequency and
//! offset, stepping only where `makestep` allows.

use super::select::Combined;
use crate::clock::Clock;

/// Frequency uncertainty with nothing known (ratio).
pub const UNKNOWN_FREQ_SD: f64 = 1e-3;
/// Floor of the frequency uncertainty (ratio).
const MIN_FREQ_SD: f64 = 1e-10;
/// How fast a clock's frequency may wander: its standard deviation grows by this per
/// square root of a second (0.01 ppm/s^0.5, a quartz oscillator in a changing room).
const FREQ_WANDER: f64 = 1e-8;

/// Settings of the loop (chrony's directives of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DisciplineParams {
    /// `makestep THRESHOLD LIMIT` (LIMIT -1: always); `None`: never step.
    pub makestep: Option<(f64, i32)>,
    /// `maxupdateskew` (ratio): a frequency estimate less certain than this is not used.
    pub max_update_skew: f64,
    /// Largest frequency correction (ratio).
    pub max_frequency: f64,
    /// `logchange` (seconds): offsets larger than this are logged when slewed.
    pub log_change: f64,
}

impl Default for DisciplineParams {
    fn default() -> Self {
        DisciplineParams {
            makestep: None,
            max_update_skew: 1000e-6,
            max_frequency: 500e-6,
            log_change: 1.0,
        }
    }
}

/// What an update did, for logs and for restating sample histories.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateResult {
    /// Local time of the update (before the correction).
    pub time: f64,
    /// Offset correction applied, seconds.
    pub offset: f64,
    /// Whether the clock was stepped.
    pub stepped: bool,
    /// Frequency change applied (ratio).
    pub dfreq: f64,
    /// Whether the offset is large enough to log when slewed.
    pub log_slew: bool,
}

/// The loop's state and its statistics for `tracking`.
#[derive(Clone, Debug)]
pub struct Discipline {
    params: DisciplineParams,
    updates: u32,
    last_offset: f64,
    mean_square: f64,
    last_time: Option<f64>,
    interval: f64,
    skew: f64,
    residual_freq: f64,
    freq_sd: f64,
}

impl Discipline {
    /// A loop with the given settings.
    pub fn new(params: DisciplineParams) -> Self {
        Discipline {
            params,
            updates: 0,
            last_offset: 0.0,
            mean_square: 0.0,
            last_time: None,
            interval: 0.0,
            skew: 0.0,
            residual_freq: 0.0,
            freq_sd: UNKNOWN_FREQ_SD,
        }
    }

    /// Starts from a known frequency uncertainty (from the driftfile's skew).
    pub fn with_frequency_sd(mut self, sd: f64) -> Self {
        self.freq_sd = sd.max(MIN_FREQ_SD);
        self
    }

    /// Corrects `clock` by the combined estimate `c`.
    pub fn update<C: Clock>(&mut self, clock: &mut C, c: &Combined) -> UpdateResult {
        let now = clock.now();
        // Frequency: the estimate is the rate at which the offset grows, i.e. how much
        // faster the clock must run; an uncertain one would only add noise.
        let old = clock.frequency();
        let mut dfreq = 0.0;
        if c.skew <= self.params.max_update_skew {
            // Weigh the estimate against the frequency already in force by their
            // uncertainties (a one-dimensional Kalman update). Successive estimates share
            // all but one of their samples, so each carries only 1/n of new information:
            // its variance counts n times. The frequency itself may wander (process noise).
            if let Some(t) = self.last_time {
                let dt = (now - t).max(0.0);
                self.freq_sd = (self.freq_sd.powi(2) + FREQ_WANDER * FREQ_WANDER * dt).sqrt();
            }
            let p = self.freq_sd * self.freq_sd;
            let r = c.skew * c.skew * c.samples.max(1) as f64;
            let gain = p / (p + r);
            let max = self.params.max_frequency;
            let new = (old + gain * c.frequency).clamp(-max, max);
            clock.set_frequency(new);
            dfreq = new - old;
            self.freq_sd = (p * r / (p + r)).sqrt().max(MIN_FREQ_SD);
            self.skew = self.freq_sd.max(c.skew / (c.samples.max(1) as f64).sqrt());
        }
        self.residual_freq = c.frequency - dfreq;

        let stepped = match self.params.makestep {
            Some((threshold, limit)) => {
                c.offset.abs() > threshold && (limit < 0 || self.updates < limit as u32)
            }
            None => false,
        };
        clock.correct(c.offset, stepped);

        if let Some(t) = self.last_time {
            let dt = now - t;
            self.interval = if self.updates <= 1 {
                dt
            } else {
                0.8 * self.interval + 0.2 * dt
            };
        }
        self.mean_square = if self.updates == 0 {
            c.offset * c.offset
        } else {
            0.9 * self.mean_square + 0.1 * c.offset * c.offset
        };
        self.last_time = Some(now);
        self.last_offset = c.offset;
        self.updates += 1;
        UpdateResult {
            time: now,
            offset: c.offset,
            stepped,
            dfreq,
            log_slew: !stepped && c.offset.abs() > self.params.log_change,
        }
    }

    /// Replaces the `makestep` setting; the update count keeps running.
    pub fn set_makestep(&mut self, makestep: Option<(f64, i32)>) {
        self.params.makestep = makestep;
    }

    /// Updates so far.
    pub fn updates(&self) -> u32 {
        self.updates
    }

    /// Offset corrected at the last update, seconds.
    pub fn last_offset(&self) -> f64 {
        self.last_offset
    }

    /// Root mean square of recent offsets, seconds.
    pub fn rms_offset(&self) -> f64 {
        self.mean_square.sqrt()
    }

    /// Mean interval between updates, seconds.
    pub fn update_interval(&self) -> f64 {
        self.interval
    }

    /// Uncertainty of the frequency in force (ratio).
    pub fn skew(&self) -> f64 {
        self.skew
    }

    /// Frequency error left uncorrected at the last update (ratio).
    pub fn residual_freq(&self) -> f64 {
        self.residual_freq
    }

    /// Local time of the last update.
    pub fn last_time(&self) -> Option<f64> {
        self.last_time
    }
}

#[cfg(test)]
/// A simulated clock over a true time base: reading = true + phase, where the phase moves
/// with the intrinsic frequency error plus the correction; offset corrections apply at once.
#[derive(Clone, Debug)]
pub struct SimClock {
    /// True time now, seconds.
    pub true_time: f64,
    /// Phase (reading minus true time) at `true_time`.
    pub phase: f64,
    /// The clock's own frequency error (ratio; positive: fast).
    pub intrinsic: f64,
    /// The correction in force (ratio).
    pub correction: f64,
    /// Steps applied, for tests.
    pub steps: Vec<f64>,
}

#[cfg(test)]
impl SimClock {
    /// A clock `offset` seconds ahead of true time and `intrinsic` fast.
    pub fn new(offset: f64, intrinsic: f64) -> Self {
        SimClock {
            true_time: 0.0,
            phase: offset,
            intrinsic,
            correction: 0.0,
            steps: Vec::new(),
        }
    }

    /// Lets `dt` seconds of true time pass.
    pub fn advance(&mut self, dt: f64) {
        self.phase += (self.intrinsic + self.correction) * dt;
        self.true_time += dt;
    }

    /// The reading at a true time within the current interval (`t >= true_time`).
    pub fn reading_at(&self, t: f64) -> f64 {
        t + self.phase + (self.intrinsic + self.correction) * (t - self.true_time)
    }

    /// Reading minus true time now.
    pub fn error(&self) -> f64 {
        self.phase
    }
}

#[cfg(test)]
impl Clock for SimClock {
    fn now(&self) -> f64 {
        self.true_time + self.phase
    }
    fn frequency(&self) -> f64 {
        self.correction
    }
    fn set_frequency(&mut self, freq: f64) {
        self.correction = freq;
    }
    fn correct(&mut self, offset: f64, step: bool) {
        self.phase += offset;
        if step {
            self.steps.push(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn combined(offset: f64, frequency: f64, skew: f64) -> Combined {
        Combined {
            offset,
            offset_sd: 1e-6,
            frequency,
            skew,
            samples: 1,
            root_delay: 0.0,
            root_dispersion: 0.0,
            stratum: 2,
            leap: 0,
        }
    }

    #[test]
    fn makestep_steps_only_in_the_first_updates() {
        let mut d = Discipline::new(DisciplineParams {
            makestep: Some((1.0, 3)),
            ..Default::default()
        });
        let mut clock = SimClock::new(0.0, 0.0);
        let r = d.update(&mut clock, &combined(0.5, 0.0, 1e-6));
        assert!(!r.stepped, "under the threshold");
        let r = d.update(&mut clock, &combined(2.0, 0.0, 1e-6));
        assert!(r.stepped);
        assert!(d.update(&mut clock, &combined(-3.0, 0.0, 1e-6)).stepped);
        let r = d.update(&mut clock, &combined(5.0, 0.0, 1e-6));
        assert!(!r.stepped && r.log_slew, "fourth update slews");
        assert_eq!(clock.steps, [2.0, -3.0]);
        assert!((clock.error() - 4.5).abs() < 1e-12);
    }

    #[test]
    fn frequency_follows_certain_estimates_only() {
        let mut d = Discipline::new(DisciplineParams::default());
        let mut clock = SimClock::new(0.0, 0.0);
        let r = d.update(&mut clock, &combined(0.0, 20e-6, 1e-7));
        assert!((r.dfreq - 20e-6).abs() < 1e-12);
        let r = d.update(&mut clock, &combined(0.0, 5e-6, 2e-3));
        assert_eq!(r.dfreq, 0.0, "too uncertain");
        assert!((clock.frequency() - 20e-6).abs() < 1e-12);
        // Clamped to the kernel's range.
        d.update(&mut clock, &combined(0.0, 1e-3, 1e-7));
        assert_eq!(clock.frequency(), 500e-6);
    }

    #[test]
    fn statistics_for_tracking() {
        let mut d = Discipline::new(DisciplineParams::default());
        let mut clock = SimClock::new(0.0, 0.0);
        for off in [0.001, -0.001, 0.001] {
            d.update(&mut clock, &combined(off, 0.0, 1e-7));
            clock.advance(16.0);
        }
        assert_eq!(d.updates(), 3);
        assert_eq!(d.last_offset(), 0.001);
        assert!((d.rms_offset() - 0.001).abs() < 1e-9);
        assert!((d.update_interval() - 16.0).abs() < 0.01);
    }
}
