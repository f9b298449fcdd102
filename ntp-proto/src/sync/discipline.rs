//! The clock update: from the combined estimate of the selected sources, correct the
//! clock's frequency and offset, as chrony's reference does.
//!
//! - The frequency moves toward the measured one by a gain that weighs the uncertainty of
//!   the frequency in force (`skew`, from the driftfile at start) against the
//!   measurement's: a certain clock moves little, an unknown one at once.
//! - The offset, extrapolated to now, is handed to the clock to slew at a rate that
//!   follows its size: a correction as large as the estimate's own error is spread over
//!   `corrtimeratio` times the update interval; the first update goes as fast as allowed.
//! - A step happens only where `makestep` allows, judged on the system clock's own error.

use super::select::Combined;
use crate::clock::Clock;

/// Settings of the update (chrony's directives of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DisciplineParams {
    /// `makestep THRESHOLD LIMIT` (LIMIT −1: always); `None`: never step.
    pub makestep: Option<(f64, i32)>,
    /// `maxupdateskew` (ratio): a frequency estimate less certain than this is not used.
    pub max_update_skew: f64,
    /// `corrtimeratio`.
    pub corr_time_ratio: f64,
    /// `maxclockerror` (ratio).
    pub max_clock_error: f64,
    /// `logchange` (seconds): offsets larger than this are logged.
    pub log_change: f64,
}

impl Default for DisciplineParams {
    fn default() -> Self {
        DisciplineParams {
            makestep: None,
            max_update_skew: 1000e-6,
            corr_time_ratio: 3.0,
            max_clock_error: 1e-6,
            log_change: 1.0,
        }
    }
}

/// What an update did, for logs and for restating what was measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateResult {
    /// Local time of the update, before the correction.
    pub time: f64,
    /// Offset corrected (true minus local), seconds.
    pub offset: f64,
    /// The step the system clock took, if it was stepped.
    pub stepped: Option<f64>,
    /// How much faster the clock runs than before (ratio).
    pub dfreq: f64,
    /// Whether the offset is large enough to log.
    pub log_change: bool,
}

/// The update's state and its statistics for `tracking`.
#[derive(Clone, Debug)]
pub struct Discipline {
    params: DisciplineParams,
    /// Updates of `makestep` still checked (−1: every one).
    steps_left: i32,
    /// Uncertainty of the frequency in force (ratio): 1 knows nothing.
    skew: f64,
    residual_freq: f64,
    frequency_sd: f64,
    offset_sd: f64,
    last_update: Option<f64>,
    interval: f64,
    last_offset: f64,
    mean_square: f64,
    moving_average: bool,
    updates: u32,
}

impl Discipline {
    /// An update with the given settings, knowing nothing of the clock's frequency.
    pub fn new(params: DisciplineParams) -> Self {
        Discipline {
            params,
            steps_left: params.makestep.map_or(0, |(_, l)| l),
            skew: 1.0,
            residual_freq: 0.0,
            frequency_sd: 0.0,
            offset_sd: 0.0,
            last_update: None,
            interval: 0.0,
            last_offset: 0.0,
            mean_square: 0.0,
            moving_average: false,
            updates: 0,
        }
    }

    /// Starts from a known frequency uncertainty (the driftfile's skew, ratio).
    pub fn with_skew(mut self, skew: f64) -> Self {
        self.skew = skew.max(1e-12);
        self
    }

    /// Corrects `clock` by the combined estimate `c`.
    pub fn update<C: Clock>(&mut self, clock: &mut C, c: &Combined) -> UpdateResult {
        let now = clock.now();
        let offset = c.offset + (now - c.ref_time) * c.frequency;
        let interval = self.last_update.map_or(0.0, |t| (now - t).max(0.0));

        // Frequency: the measurement is weighed against what is known of the frequency in
        // force (expected to be right: a measured 0).
        let gain = if c.skew > self.params.max_update_skew {
            0.0
        } else {
            let k = 3.0 * self.skew * self.skew;
            (k / (k + c.skew * c.skew)).clamp(0.0, 1.0)
        };
        let applied = gain * c.frequency;
        let residual = c.frequency - applied;
        let extra = (applied * applied * (1.0 - gain) + residual * residual * gain).sqrt();
        self.skew = (self.skew + gain * (c.skew - self.skew) + extra).max(1e-12);
        self.residual_freq = residual;
        self.frequency_sd = c.frequency_sd;
        self.offset_sd = c.offset_sd;
        // On the clock's scale after this update's correction (the offset moves it).
        self.last_update = Some(now + offset);
        self.interval = interval;
        self.last_offset = offset;
        self.updates += 1;
        // The offset grows at `frequency` when the clock runs that much slow: speed it up.
        let dfreq = if applied == 0.0 {
            0.0
        } else {
            clock.set_frequency((1.0 + clock.frequency()) * (1.0 + applied) - 1.0)
        };

        let step = match self.params.makestep {
            Some((threshold, _)) if self.steps_left != 0 => {
                if self.steps_left > 0 {
                    self.steps_left -= 1;
                }
                // The system clock's own error: the estimate plus what is still to slew.
                (offset + clock.uncorrected()).abs() > threshold
            }
            _ => false,
        };
        let stepped = if step {
            Some(clock.step(offset))
        } else {
            let corr_rate = self.params.corr_time_ratio * 0.5 * c.offset_sd * interval;
            clock.accrue(offset, corr_rate);
            None
        };
        self.track_rms(offset);
        UpdateResult {
            time: now,
            offset,
            stepped,
            dfreq,
            log_change: offset.abs() > self.params.log_change,
        }
    }

    /// The RMS offset for `tracking`: while offsets shrink (the start), the latest one;
    /// then a moving average of their squares.
    fn track_rms(&mut self, offset: f64) {
        let sq = offset * offset;
        if !self.moving_average && self.mean_square > 0.0 && sq > self.mean_square {
            self.moving_average = true;
        }
        if self.moving_average {
            self.mean_square += 0.1 * (sq - self.mean_square);
        } else {
            self.mean_square = sq;
        }
    }

    /// Replaces the `makestep` setting (ntpxc makestep THRESHOLD LIMIT).
    pub fn set_makestep(&mut self, makestep: Option<(f64, i32)>) {
        self.params.makestep = makestep;
        self.steps_left = makestep.map_or(0, |(_, l)| l);
    }

    /// The clock's time scale jumped for reasons of its own (an external step): the next
    /// update is a first one again.
    pub fn forget_last_update(&mut self) {
        self.last_update = None;
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

    /// Interval between the last two updates, seconds.
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

    /// Standard errors of the last estimate's offset and frequency.
    pub fn last_errors(&self) -> (f64, f64) {
        (self.offset_sd, self.frequency_sd)
    }

    /// Local time of the last update.
    pub fn last_time(&self) -> Option<f64> {
        self.last_update
    }

    /// How fast the served root dispersion grows after an update (ratio).
    pub fn dispersion_rate(&self) -> f64 {
        self.skew + self.residual_freq.abs() + self.params.max_clock_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock whose corrections take effect at once, recording them.
    #[derive(Default)]
    struct Ideal {
        now: f64,
        phase: f64,
        freq: f64,
        steps: Vec<f64>,
        rates: Vec<f64>,
    }

    impl Clock for Ideal {
        fn now(&self) -> f64 {
            self.now + self.phase
        }
        fn frequency(&self) -> f64 {
            self.freq
        }
        fn set_frequency(&mut self, freq: f64) -> f64 {
            let d = (1.0 + freq) / (1.0 + self.freq) - 1.0;
            self.freq = freq;
            d
        }
        fn accrue(&mut self, offset: f64, corr_rate: f64) {
            self.phase += offset;
            self.rates.push(corr_rate);
        }
        fn step(&mut self, offset: f64) -> f64 {
            self.phase += offset;
            self.steps.push(offset);
            offset
        }
        fn uncorrected(&self) -> f64 {
            0.0
        }
    }

    fn combined(offset: f64, frequency: f64, skew: f64) -> Combined {
        Combined {
            ref_time: 0.0,
            offset,
            offset_sd: 1e-5,
            frequency,
            frequency_sd: skew / 4.0,
            skew,
            root_delay: 0.0,
            root_dispersion: 0.0,
            stratum: 2,
            combined: 1,
        }
    }

    #[test]
    fn makestep_steps_only_in_the_first_updates() {
        let mut d = Discipline::new(DisciplineParams {
            makestep: Some((1.0, 3)),
            ..Default::default()
        });
        let mut clock = Ideal::default();
        let r = d.update(&mut clock, &combined(0.5, 0.0, 1e-6));
        assert!(r.stepped.is_none(), "under the threshold");
        let r = d.update(&mut clock, &combined(2.0, 0.0, 1e-6));
        assert_eq!(r.stepped, Some(2.0));
        assert!(
            d.update(&mut clock, &combined(-3.0, 0.0, 1e-6))
                .stepped
                .is_some()
        );
        let r = d.update(&mut clock, &combined(5.0, 0.0, 1e-6));
        assert!(r.stepped.is_none() && r.log_change, "fourth update slews");
        assert_eq!(clock.steps, [2.0, -3.0]);
        assert!((clock.phase - 4.5).abs() < 1e-12);
    }

    #[test]
    fn an_unknown_frequency_is_taken_at_once_a_known_one_barely() {
        let mut d = Discipline::new(DisciplineParams::default());
        let mut clock = Ideal::default();
        let r = d.update(&mut clock, &combined(0.0, 20e-6, 1e-7));
        assert!((r.dfreq - 20e-6).abs() < 1e-10, "{r:?}");
        // Too uncertain a measurement changes nothing.
        let r = d.update(&mut clock, &combined(0.0, 5e-6, 2e-3));
        assert_eq!(r.dfreq, 0.0);
        // From a driftfile that says 1 ppm, a measurement with 100 ppm of skew moves little.
        let mut d = Discipline::new(DisciplineParams::default()).with_skew(1e-6);
        let mut clock = Ideal::default();
        let r = d.update(&mut clock, &combined(0.0, 50e-6, 100e-6));
        assert!(r.dfreq > 0.0 && r.dfreq < 0.02e-6, "{r:?}");
    }

    #[test]
    fn the_first_correction_goes_fast_later_ones_follow_the_error() {
        let mut d = Discipline::new(DisciplineParams::default());
        let mut clock = Ideal::default();
        d.update(&mut clock, &combined(0.1, 0.0, 1e-7));
        clock.now += 64.0;
        d.update(&mut clock, &combined(1e-5, 0.0, 1e-7));
        assert_eq!(clock.rates[0], 0.0, "first update: as fast as allowed");
        // corrtimeratio 3: 1.5 × offset sd × interval.
        assert!((clock.rates[1] - 1.5 * 1e-5 * 64.0).abs() < 1e-12);
    }

    #[test]
    fn rms_offset_forgets_the_start() {
        let mut d = Discipline::new(DisciplineParams::default());
        let mut clock = Ideal::default();
        for off in [0.1, 0.001, 1e-5, 2e-5, 1e-5] {
            d.update(&mut clock, &combined(off, 0.0, 1e-7));
        }
        assert!(d.rms_offset() < 2e-5, "{}", d.rms_offset());
        assert_eq!(d.updates(), 5);
    }
}
