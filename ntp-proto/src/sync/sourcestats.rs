//! Per-source statistics: the samples of one source, the regression over them, and what
//! selection, combining and the poller need from it (chrony's model: a weighted fit with a
//! runs test, the best single sample for the correctness interval, the regression for
//! the frequency).
//!
//! Offsets here are true minus local time (positive: the local clock is slow), frequencies
//! the rate at which that offset grows, times the local (NTP clock) time in seconds.

use super::regression::{self, MIN_POINTS, find_best_line, fit_two_factors, t_coefficient};
use super::sample::Sample;
use std::collections::VecDeque;

/// Most samples a source keeps (chrony's limit).
pub const MAX_SAMPLES: usize = 64;
/// `minsamples` default: the fewest the regression keeps when the runs test would drop more.
pub const DEFAULT_MIN_SAMPLES: usize = 6;
/// Frequency uncertainty and offset deviation while there is no regression.
const WORST_FREQ: f64 = 2000e-6;
const WORST_SD: f64 = 4.0;
const MIN_SKEW: f64 = 1e-12;
const MAX_SKEW: f64 = 1.0;
const MIN_STDDEV: f64 = 1e-9;
/// How the spread of the samples' distances turns into the weights' scale.
const SD_TO_DIST_RATIO: f64 = 0.7;
/// Samples before the delay-based sample tests start.
pub const MIN_SAMPLES_FOR_DELAY_TESTS: usize = 6;

/// Jitter asymmetry estimation: the correction is used once the fit has said the same for
/// this many updates in a row.
const ASYM_MIN_RUN: i32 = 10;
const ASYM_MAX_RUN: i32 = 1000;
const ASYM_MIN: f64 = 0.45;
const ASYM_MAX: f64 = 0.5;

/// An older sample, kept only so the runs test can look further back than the fit.
#[derive(Clone, Copy, Debug)]
struct Old {
    time: f64,
    offset: f64,
    delay: f64,
}

/// What selection needs of a source now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectionData {
    /// Offset (true − local) now, from the best sample and the regression's frequency.
    pub offset: f64,
    /// Root distance now.
    pub root_distance: f64,
    /// The correctness interval: `offset ± root_distance`.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Standard deviation of the samples about the fit.
    pub std_dev: f64,
    /// Seconds since the oldest sample.
    pub first_sample_ago: f64,
    /// Seconds since the newest sample.
    pub last_sample_ago: f64,
    /// The source's stratum.
    pub stratum: u8,
    /// The source's leap indicator.
    pub leap: u8,
}

/// What combining and the clock update need of a source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackingData {
    /// Local time the offset is for.
    pub ref_time: f64,
    /// Offset (true − local) at `ref_time`.
    pub offset: f64,
    /// Its standard error.
    pub offset_sd: f64,
    /// Rate at which the offset grows (positive: the local clock runs slow).
    pub frequency: f64,
    /// Standard error of the frequency.
    pub frequency_sd: f64,
    /// The frequency's 99.9 % bound.
    pub skew: f64,
    /// Root delay through the source.
    pub root_delay: f64,
    /// Root dispersion through the source at `ref_time`.
    pub root_dispersion: f64,
}

/// What the delay tests of a new sample need.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DelayTestData {
    /// Seconds from the regression's reference to the sample.
    pub last_sample_ago: f64,
    /// Offset (true − local) predicted at the sample's time.
    pub predicted_offset: f64,
    /// Least round-trip delay seen.
    pub min_delay: f64,
    /// Frequency bound.
    pub skew: f64,
    /// Standard deviation about the fit.
    pub std_dev: f64,
}

/// The samples of one source and the regression over them.
#[derive(Clone, Debug)]
pub struct SourceStats {
    samples: VecDeque<Sample>,
    old: VecDeque<Old>,
    max_samples: usize,
    min_samples: usize,
    /// The local clock's precision, seconds (the floor of the weights' scale).
    precision: f64,
    /// `asymmetry`: fixed (|a| ≤ 0.5), or estimated.
    fixed_asymmetry: Option<f64>,
    asymmetry: f64,
    asymmetry_run: i32,
    fit_ok: bool,
    offset_time: f64,
    offset: f64,
    frequency: f64,
    frequency_sd: f64,
    skew: f64,
    offset_sd: f64,
    std_dev: f64,
    runs: usize,
    best: usize,
    last_fit: FitRecord,
}

/// What the last regression did, for the statistics log (chrony's columns).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FitRecord {
    /// Samples it was given.
    pub samples: usize,
    /// Oldest samples it dropped to pass the runs test.
    pub dropped: usize,
    /// How far the frequency moved, in units of the previous skew.
    pub stress: f64,
    /// The jitter asymmetry it corrected the offsets for.
    pub asymmetry: f64,
}

impl SourceStats {
    /// No samples yet; at most `max_samples` (1..=64) kept, at least `min_samples` fitted;
    /// the local clock reads with `precision` seconds.
    pub fn new(max_samples: usize, min_samples: usize, precision: f64) -> Self {
        let max_samples = max_samples.clamp(1, MAX_SAMPLES);
        SourceStats {
            samples: VecDeque::new(),
            old: VecDeque::new(),
            max_samples,
            min_samples: min_samples.clamp(1, max_samples),
            precision: precision.max(1e-9),
            fixed_asymmetry: None,
            asymmetry: 0.0,
            asymmetry_run: 0,
            fit_ok: false,
            offset_time: 0.0,
            offset: 0.0,
            frequency: 0.0,
            frequency_sd: WORST_FREQ,
            skew: WORST_FREQ,
            offset_sd: WORST_SD,
            std_dev: WORST_SD,
            runs: 0,
            best: 0,
            last_fit: FitRecord::default(),
        }
    }

    /// Uses a fixed jitter asymmetry (`asymmetry` option) instead of estimating it.
    pub fn set_fixed_asymmetry(&mut self, a: f64) {
        self.fixed_asymmetry = (a.abs() <= ASYM_MAX).then_some(a);
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = SourceStats::new(self.max_samples, self.min_samples, self.precision)
            .with_asymmetry(self.fixed_asymmetry);
    }

    fn with_asymmetry(mut self, a: Option<f64>) -> Self {
        self.fixed_asymmetry = a;
        self
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The newest sample.
    pub fn last_sample(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Whether the regression has enough samples to stand on.
    pub fn fit_ok(&self) -> bool {
        self.fit_ok
    }

    /// Runs of residual signs in the current fit (`sourcestats` NR).
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// What the last regression did.
    pub fn last_fit(&self) -> FitRecord {
        self.last_fit
    }

    /// Seconds between the oldest and the newest sample.
    pub fn span(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) => b.time - a.time,
            _ => 0.0,
        }
    }

    /// The standard deviation about the fit (4 s without one).
    pub fn std_dev(&self) -> f64 {
        self.std_dev
    }

    /// Adds a sample and fits again. A sample not newer than the last one means the local
    /// time scale jumped back: everything before it is forgotten.
    pub fn add(&mut self, s: Sample) {
        if self.samples.back().is_some_and(|b| s.time <= b.time) {
            self.reset();
        }
        if self.samples.len() == self.max_samples {
            self.prune(1);
        }
        self.samples.push_back(s);
        self.regress();
    }

    /// Moves the `k` oldest samples to the runs test's store.
    fn prune(&mut self, k: usize) {
        for _ in 0..k {
            if let Some(s) = self.samples.pop_front() {
                self.old.push_back(Old {
                    time: s.time,
                    offset: s.offset,
                    delay: s.delay,
                });
            }
        }
        while self.old.len() > self.samples.len() {
            self.old.pop_front();
        }
    }

    /// Each sample's distance (half its delay plus its dispersion), and the weights: 1 for
    /// the closest, growing with the square of the excess over the spread of distances.
    fn weights(&self) -> Vec<f64> {
        let d: Vec<f64> = self
            .samples
            .iter()
            .map(|s| 0.5 * s.delay + s.dispersion)
            .collect();
        let dmin = d.iter().copied().fold(f64::INFINITY, f64::min);
        let mut sorted = d.clone();
        sorted.sort_by(f64::total_cmp);
        let m = sorted.len();
        let dmed = if m % 2 == 1 {
            sorted[m / 2]
        } else {
            0.5 * (sorted[m / 2 - 1] + sorted[m / 2])
        };
        let p = self.precision;
        let sd = ((dmed - dmin) / SD_TO_DIST_RATIO).min(dmin).max(p);
        let floor = dmin + p;
        d.iter()
            .map(|&di| {
                if di > floor {
                    (1.0 + (di - floor) / sd).powi(2)
                } else {
                    1.0
                }
            })
            .collect()
    }

    /// Least round-trip delay over the current and the older samples.
    pub fn min_delay(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.delay)
            .chain(self.old.iter().map(|o| o.delay))
            .fold(f64::INFINITY, f64::min)
    }

    /// The median round-trip delay of the current samples.
    pub fn median_delay(&self) -> f64 {
        let mut d: Vec<f64> = self.samples.iter().map(|s| s.delay).collect();
        d.sort_by(f64::total_cmp);
        d.get(d.len() / 2).copied().unwrap_or(f64::INFINITY)
    }

    /// Offsets corrected for jitter asymmetry: how much of each sample's extra delay
    /// shows up as offset, estimated by fitting offset on time and extra delay together.
    fn corrected_offsets(&mut self, x: &[f64], y: &[f64], delays: &[f64]) -> Vec<f64> {
        let min = delays.iter().copied().fold(f64::INFINITY, f64::min);
        let extra: Vec<f64> = delays.iter().map(|d| d - min).collect();
        let a = match self.fixed_asymmetry {
            Some(a) => a,
            None => self.estimate_asymmetry(x, y, &extra),
        };
        if a == 0.0 {
            return y.to_vec();
        }
        // `a` is the share of the extra delay on the way out: it makes the local clock
        // look fast by `a` times the extra delay.
        y.iter().zip(&extra).map(|(y, e)| y + a * e).collect()
    }

    fn estimate_asymmetry(&mut self, x: &[f64], y: &[f64], extra: &[f64]) -> f64 {
        // Fitted on the local-fast offset, as the correction is stated.
        let o: Vec<f64> = y.iter().map(|v| -v).collect();
        let Some([_, _, b2]) = fit_two_factors(x, extra, &o) else {
            (self.asymmetry, self.asymmetry_run) = (0.0, 0);
            return 0.0;
        };
        if (b2 > 0.0 && self.asymmetry_run < 0) || (b2 < 0.0 && self.asymmetry_run > 0) {
            (self.asymmetry, self.asymmetry_run) = (0.0, 0);
            return 0.0;
        }
        if b2 <= -ASYM_MIN {
            self.asymmetry_run = (self.asymmetry_run - 1).max(-ASYM_MAX_RUN);
        } else if b2 >= ASYM_MIN {
            self.asymmetry_run = (self.asymmetry_run + 1).min(ASYM_MAX_RUN);
        }
        if self.asymmetry_run.abs() < ASYM_MIN_RUN {
            return 0.0;
        }
        self.asymmetry = b2.clamp(-ASYM_MAX, ASYM_MAX);
        self.asymmetry
    }

    fn regress(&mut self) {
        let n = self.samples.len();
        let Some(newest) = self.samples.back().map(|s| s.time) else {
            return;
        };
        if n < MIN_POINTS {
            self.fit_ok = false;
            self.frequency_sd = WORST_FREQ;
            self.skew = WORST_FREQ;
            self.offset_sd = WORST_SD;
            self.std_dev = WORST_SD;
            self.offset_time = newest;
            self.offset = self.samples.back().map_or(0.0, |s| s.offset);
            self.best = n - 1;
            return;
        }
        let points = self
            .old
            .iter()
            .map(|o| (o.time, o.offset, o.delay))
            .chain(self.samples.iter().map(|s| (s.time, s.offset, s.delay)));
        let (mut x, mut y, mut delays) = (Vec::new(), Vec::new(), Vec::new());
        for (t, o, d) in points {
            x.push(t - newest);
            y.push(o);
            delays.push(d);
        }
        let y = self.corrected_offsets(&x, &y, &delays);
        let w = self.weights();
        let extra = self.old.len();
        let Some(fit) = find_best_line(&x, &y, &w, extra, self.min_samples) else {
            return;
        };
        let (old_frequency, old_skew) = (self.frequency, self.skew);
        self.fit_ok = true;
        self.offset_time = newest;
        self.offset = fit.a;
        self.frequency = fit.b;
        self.frequency_sd = fit.sd_b.clamp(MIN_SKEW, MAX_SKEW);
        self.skew = (fit.sd_b * t_coefficient(fit.dof)).clamp(MIN_SKEW, MAX_SKEW);
        self.offset_sd = fit.sd_a;
        self.std_dev = fit.variance.sqrt().max(MIN_STDDEV);
        self.runs = fit.runs;
        self.last_fit = FitRecord {
            samples: n,
            dropped: fit.start,
            stress: (old_frequency - fit.b).abs() / old_skew,
            asymmetry: self.fixed_asymmetry.unwrap_or(self.asymmetry),
        };
        self.prune(fit.start);
        // The best single sample: the least distance once aged by the frequency bound.
        self.best = self
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let d = s.root_dispersion + (newest - s.time) * self.skew + 0.5 * s.root_delay;
                (i, d)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(i, _)| i);
    }

    /// The source's interval and quality at local time `now`; `None` while it has too few
    /// samples to be selected (fewer than three, unless it may not keep more).
    pub fn selection_data(&self, now: f64, max_jitter: f64) -> Option<SelectionData> {
        let b = self.samples.get(self.best)?;
        let small_window =
            self.samples.len() == self.max_samples && self.samples.len() < MIN_POINTS;
        if !self.fit_ok && !small_window {
            return None;
        }
        let age = (now - b.time).abs();
        let offset = b.offset + age * self.frequency;
        let root_distance = 0.5 * b.root_delay + b.root_dispersion + age * self.skew;
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        Some(SelectionData {
            offset,
            root_distance,
            lo: offset - root_distance,
            hi: offset + root_distance,
            std_dev: if self.fit_ok {
                self.std_dev
            } else {
                max_jitter
            },
            first_sample_ago: now - first.time,
            last_sample_ago: now - last.time,
            stratum: b.stratum,
            leap: b.leap,
        })
    }

    /// The regression's estimate, for combining and the clock update.
    pub fn tracking_data(&self) -> Option<TrackingData> {
        let b = self.samples.get(self.best)?;
        Some(TrackingData {
            ref_time: self.offset_time,
            offset: self.offset,
            offset_sd: self.offset_sd,
            frequency: self.frequency,
            frequency_sd: self.frequency_sd,
            skew: self.skew,
            root_delay: b.root_delay,
            root_dispersion: b.root_dispersion
                + self.skew * (self.offset_time - b.time)
                + self.offset_sd,
        })
    }

    /// The offset (true − local) expected at local time `t`.
    pub fn predict_offset(&self, t: f64) -> f64 {
        if self.samples.len() < MIN_POINTS {
            return self.samples.back().map_or(0.0, |s| s.offset);
        }
        self.offset + (t - self.offset_time) * self.frequency
    }

    /// The frequency bound to charge a new sample's dispersion with (at most 2000 ppm).
    pub fn skew_for_dispersion(&self) -> f64 {
        self.skew.min(WORST_FREQ)
    }

    /// What the delay tests need, once there are enough samples for them.
    pub fn delay_test_data(&self, sample_time: f64) -> Option<DelayTestData> {
        if self.samples.len() < MIN_SAMPLES_FOR_DELAY_TESTS {
            return None;
        }
        let ago = sample_time - self.offset_time;
        Some(DelayTestData {
            last_sample_ago: ago,
            predicted_offset: self.offset + ago * self.frequency,
            min_delay: self.min_delay(),
            skew: self.skew,
            std_dev: self.std_dev,
        })
    }

    /// The local time scale changed at local time `when`: it was moved forward by
    /// `correction` seconds and runs `dfreq` faster. Every stored time moves as the
    /// new scale would have read it, and every offset by as much the other way.
    pub fn restate(&mut self, when: f64, dfreq: f64, correction: f64) {
        let shift = |t: f64| correction + (t - when) * dfreq;
        for s in &mut self.samples {
            let d = shift(s.time);
            s.time += d;
            s.offset -= d;
        }
        for o in &mut self.old {
            let d = shift(o.time);
            o.time += d;
            o.offset -= d;
        }
        let d = shift(self.offset_time);
        self.offset_time += d;
        self.offset -= d;
        self.frequency = (self.frequency - dfreq) / (1.0 + dfreq);
    }

    /// Adds `d` seconds of uncertainty to every sample (a clock change of known error).
    pub fn add_dispersion(&mut self, d: f64) {
        for s in &mut self.samples {
            s.dispersion += d;
            s.root_dispersion += d;
        }
    }

    /// `sourcestats` figures: frequency and skew (ratios, rate of true − local), the
    /// offset (true − local) now, and the standard deviation.
    pub fn report(&self, now: f64) -> (f64, f64, f64, f64) {
        (
            self.frequency,
            self.skew,
            self.offset + (now - self.offset_time) * self.frequency,
            self.std_dev,
        )
    }

    /// The critical number of runs for `n` residuals (re-exported for reports and tests).
    pub fn critical_runs(n: usize) -> usize {
        regression::critical_runs(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: f64, offset: f64, delay: f64) -> Sample {
        Sample {
            time,
            offset,
            delay,
            dispersion: 1e-6,
            root_delay: delay,
            root_dispersion: 1e-6,
            stratum: 1,
            leap: 0,
        }
    }

    #[test]
    fn three_samples_make_a_source_selectable() {
        let mut s = SourceStats::new(64, 6, 1e-7);
        s.add(sample(0.0, 0.001, 1e-4));
        s.add(sample(16.0, 0.001, 1e-4));
        assert!(s.selection_data(16.0, 1.0).is_none());
        assert_eq!(
            s.predict_offset(20.0),
            0.001,
            "the newest offset until a fit"
        );
        s.add(sample(32.0, 0.001, 1e-4));
        let d = s.selection_data(32.0, 1.0).unwrap();
        assert!((d.offset - 0.001).abs() < 1e-9, "{d:?}");
        assert!(d.lo < 0.001 && d.hi > 0.001);
    }

    #[test]
    fn the_frequency_and_the_offset_are_recovered() {
        let mut s = SourceStats::new(64, 6, 1e-7);
        for i in 0..20 {
            let t = 64.0 * f64::from(i);
            let noise = if i % 3 == 0 { 1e-6 } else { -5e-7 };
            s.add(sample(t, 0.01 + 5e-6 * t + noise, 1e-4));
        }
        let td = s.tracking_data().unwrap();
        assert!((td.frequency - 5e-6).abs() < 1e-8, "{td:?}");
        assert!((td.offset - (0.01 + 5e-6 * 1216.0)).abs() < 2e-6, "{td:?}");
        assert!(td.skew < 1e-7 && td.skew > td.frequency_sd, "{td:?}");
        assert!((s.predict_offset(1280.0) - (0.01 + 5e-6 * 1280.0)).abs() < 3e-6);
    }

    #[test]
    fn restating_keeps_the_estimate_on_the_new_scale() {
        let mut s = SourceStats::new(64, 6, 1e-7);
        for i in 0..10 {
            let t = 16.0 * f64::from(i);
            s.add(sample(t, 0.5 + 1e-5 * t, 1e-4));
        }
        assert!((s.predict_offset(200.0) - 0.502).abs() < 1e-9);
        // At local 150 s the offset was 0.5015 s: the clock moves forward by 0.5 s and
        // runs 10 ppm faster from then on, which leaves 1.5 ms and no frequency error.
        s.restate(150.0, 10e-6, 0.5);
        let after = s.predict_offset(200.5005);
        assert!((after - 0.0015).abs() < 1e-9, "{after}");
        assert!(s.tracking_data().unwrap().frequency.abs() < 1e-9);
    }

    #[test]
    fn a_sample_from_the_past_starts_over() {
        let mut s = SourceStats::new(64, 6, 1e-7);
        for t in [10.0, 20.0, 30.0, 40.0] {
            s.add(sample(t, 0.0, 1e-4));
        }
        s.add(sample(5.0, 0.0, 1e-4));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn long_delays_weigh_less() {
        let mut s = SourceStats::new(64, 6, 1e-7);
        for i in 0..16 {
            let t = 16.0 * f64::from(i);
            // Every fourth sample took 10 ms longer and is 5 ms off.
            let (off, delay) = if i % 4 == 3 {
                (0.005, 0.0101)
            } else {
                (0.0, 1e-4)
            };
            s.add(sample(t, off, delay));
        }
        let td = s.tracking_data().unwrap();
        assert!(td.offset.abs() < 5e-4, "{td:?}");
        assert!((s.min_delay() - 1e-4).abs() < 1e-12);
    }
}
