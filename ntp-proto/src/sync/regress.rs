//! Per-source statistics: a weighted straight-line fit of offset against time over a
//! window of samples, giving the source's offset now, the local clock's frequency error
//! relative to it, and how far both can be trusted.
//!
//! Samples with more delay than the window's best are down-weighted (their extra delay is
//! extra possible error) and, far beyond the typical excess, dropped. A runs test on the
//! residuals shortens the window when the offset no longer follows a line (the clock's
//! frequency wandered), as chrony does; the same idea, written here from its description.

use super::sample::{PHI, Sample};
use std::collections::VecDeque;

/// Default window length.
pub const DEFAULT_MAX_SAMPLES: usize = 64;
/// Frequency uncertainty assumed before there are enough samples to fit a slope (ratio).
pub const UNKNOWN_SKEW: f64 = 1e-3;
/// Fewest samples for a slope.
const MIN_FIT: usize = 3;
/// Fewest samples for the runs test to mean anything.
const MIN_RUNS_TEST: usize = 8;

/// The estimate of one source at a given local time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Offset of the source (true minus local) now, seconds.
    pub offset: f64,
    /// Standard error of `offset`, seconds.
    pub offset_sd: f64,
    /// Rate at which the offset grows (ratio): positive means the local clock runs slow.
    pub frequency: f64,
    /// Standard error of `frequency` (ratio).
    pub skew: f64,
    /// Standard deviation of the residuals, seconds.
    pub std_dev: f64,
    /// Root delay through this source, seconds.
    pub root_delay: f64,
    /// Root dispersion through this source now, seconds.
    pub root_dispersion: f64,
    /// The source's stratum.
    pub stratum: u8,
    /// The source's leap indicator.
    pub leap: u8,
    /// Samples used.
    pub samples: usize,
    /// Local time of the newest sample.
    pub last_time: f64,
}

impl Estimate {
    /// Root distance (RFC 5905 lambda): half the root delay plus the root dispersion.
    pub fn distance(&self) -> f64 {
        self.root_delay / 2.0 + self.root_dispersion
    }
}

/// The sample window of one source.
#[derive(Clone, Debug)]
pub struct SourceStats {
    samples: VecDeque<Sample>,
    max: usize,
}

struct Fit {
    a: f64,
    b: f64,
    var_a: f64,
    var_b: f64,
    sd: f64,
    signs: Vec<bool>,
}

impl SourceStats {
    /// An empty window of at most `max_samples` samples.
    pub fn new(max_samples: usize) -> Self {
        SourceStats {
            samples: VecDeque::new(),
            max: max_samples.max(MIN_FIT),
        }
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The newest sample.
    pub fn last_sample(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Adds a sample, then shortens the window while the runs test says the offsets do not
    /// follow a line.
    pub fn add(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self.samples.len() > self.max {
            self.samples.pop_front();
        }
        while self.samples.len() >= MIN_RUNS_TEST {
            let now = s.time;
            let used = self.used();
            let Some(fit) = fit(&used, now) else { break };
            // Residuals within the measurement noise floor fit the line whatever their signs.
            let floor = used
                .iter()
                .map(|s| s.dispersion)
                .fold(f64::INFINITY, f64::min);
            if fit.sd <= floor || runs_ok(&fit.signs) {
                break;
            }
            let drop = (self.samples.len() / 4).max(1);
            self.samples.drain(..drop);
        }
    }

    /// The local clock's reading moved by `delta` seconds (an offset correction): the
    /// stored offsets, measured against the old reading, shrink by it.
    pub fn apply_offset_correction(&mut self, delta: f64) {
        for s in &mut self.samples {
            s.offset -= delta;
        }
    }

    /// The local clock's rate changed by `dfreq` (ratio, positive: faster) at local time
    /// `now`: restate stored offsets as if the new rate had always applied.
    pub fn apply_frequency_change(&mut self, now: f64, dfreq: f64) {
        for s in &mut self.samples {
            s.offset -= dfreq * (s.time - now);
        }
    }

    /// Samples kept for fitting: those whose delay is not far beyond the window's best.
    fn used(&self) -> Vec<Sample> {
        let min_delay = self
            .samples
            .iter()
            .map(|s| s.delay)
            .fold(f64::INFINITY, f64::min);
        let mut excess: Vec<f64> = self.samples.iter().map(|s| s.delay - min_delay).collect();
        excess.sort_by(f64::total_cmp);
        let median = excess.get(excess.len() / 2).copied().unwrap_or(0.0);
        let limit = (4.0 * median).max(1e-6);
        self.samples
            .iter()
            .filter(|s| s.delay - min_delay <= limit)
            .copied()
            .collect()
    }

    /// Window length (newest minus oldest sample time) and the number of runs of equal
    /// residual signs about the fitted line (`sourcestats` NR).
    pub fn span_and_runs(&self, now: f64) -> (f64, usize) {
        let span = match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) => b.time - a.time,
            _ => 0.0,
        };
        let runs = fit(&self.used(), now).map_or(self.samples.len().min(1), |f| {
            1 + f.signs.windows(2).filter(|w| w[0] != w[1]).count()
        });
        (span, runs)
    }

    /// The source's estimate at local time `now`; `None` without samples.
    pub fn estimate(&self, now: f64) -> Option<Estimate> {
        let last = *self.samples.back()?;
        let used = self.used();
        let min_delay = used.iter().map(|s| s.delay).fold(f64::INFINITY, f64::min);
        let (offset, offset_sd, frequency, skew, std_dev) = if let Some(f) = fit(&used, now) {
            (f.a, f.var_a.sqrt(), f.b, f.var_b.sqrt(), f.sd)
        } else {
            let (m, sd) = weighted_mean(&used);
            (m, sd, 0.0, UNKNOWN_SKEW, sd)
        };
        let age = (now - last.time).max(0.0);
        let root_dispersion =
            last.root_dispersion + last.dispersion + offset_sd + (PHI + skew) * age;
        Some(Estimate {
            offset,
            offset_sd,
            frequency,
            skew,
            std_dev,
            root_delay: last.root_delay + min_delay,
            root_dispersion,
            stratum: last.stratum,
            leap: last.leap,
            samples: used.len(),
            last_time: last.time,
        })
    }
}

/// Each sample's weight: the inverse square of its possible error, which grows with its
/// delay beyond the best one (half the excess can fall on either side).
fn weights(samples: &[Sample]) -> Vec<f64> {
    let min_delay = samples
        .iter()
        .map(|s| s.delay)
        .fold(f64::INFINITY, f64::min);
    samples
        .iter()
        .map(|s| {
            let sigma = s.dispersion.max(1e-9) + (s.delay - min_delay) / 2.0;
            1.0 / (sigma * sigma)
        })
        .collect()
}

fn weighted_mean(samples: &[Sample]) -> (f64, f64) {
    let w = weights(samples);
    let sw: f64 = w.iter().sum();
    let m = samples
        .iter()
        .zip(&w)
        .map(|(s, w)| s.offset * w)
        .sum::<f64>()
        / sw;
    let spread = samples
        .iter()
        .map(|s| (s.offset - m).abs())
        .fold(0.0, f64::max);
    let disp = samples.iter().map(|s| s.dispersion).fold(0.0, f64::max);
    (m, spread.max(disp))
}

fn fit(samples: &[Sample], now: f64) -> Option<Fit> {
    let n = samples.len();
    if n < MIN_FIT {
        return None;
    }
    let w = weights(samples);
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (s, w) in samples.iter().zip(&w) {
        let x = s.time - now;
        sw += w;
        sx += w * x;
        sy += w * s.offset;
        sxx += w * x * x;
        sxy += w * x * s.offset;
    }
    let d = sw * sxx - sx * sx;
    if d <= 0.0 || !d.is_finite() {
        return None;
    }
    let b = (sw * sxy - sx * sy) / d;
    let a = (sy - b * sx) / sw;
    let mut wrr = 0.0;
    let mut rr = 0.0;
    let mut signs = Vec::with_capacity(n);
    for (s, w) in samples.iter().zip(&w) {
        let r = s.offset - a - b * (s.time - now);
        wrr += w * r * r;
        rr += r * r;
        signs.push(r >= 0.0);
    }
    let dof = (n - 2) as f64;
    // With perfect data the scale is zero; keep a floor so errors never claim certainty.
    let scale = (wrr / dof).max(1.0);
    Some(Fit {
        a,
        b,
        var_a: scale * sxx / d,
        var_b: scale * sw / d,
        sd: (rr / dof).sqrt(),
        signs,
    })
}

/// Wald-Wolfowitz runs test: too few runs of equal residual signs means the residuals
/// are not random around the line.
fn runs_ok(signs: &[bool]) -> bool {
    let n = signs.len() as f64;
    let pos = signs.iter().filter(|s| **s).count() as f64;
    let neg = n - pos;
    if pos == 0.0 || neg == 0.0 {
        return false;
    }
    let runs = 1 + signs.windows(2).filter(|w| w[0] != w[1]).count();
    let mean = 1.0 + 2.0 * pos * neg / n;
    let var = (mean - 1.0) * (mean - 2.0) / (n - 1.0);
    // Reject only clearly non-random residuals (about 1% one-sided).
    runs as f64 >= mean - 2.33 * var.max(0.0).sqrt()
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
            root_delay: 0.001,
            root_dispersion: 0.0005,
            stratum: 2,
            leap: 0,
        }
    }

    #[test]
    fn a_noiseless_line_is_recovered() {
        let mut st = SourceStats::new(64);
        for i in 0..20 {
            let t = i as f64 * 16.0;
            st.add(sample(t, 0.01 + 30e-6 * t, 1e-4));
        }
        let e = st.estimate(320.0).unwrap();
        assert!((e.offset - (0.01 + 30e-6 * 320.0)).abs() < 1e-9, "{e:?}");
        assert!((e.frequency - 30e-6).abs() < 1e-12);
        assert_eq!(e.samples, 20);
        assert_eq!(e.stratum, 2);
        assert!((e.root_delay - 0.0011).abs() < 1e-12);
        assert!(e.distance() > 0.0011 / 2.0 + 0.0005);
    }

    #[test]
    fn few_samples_give_a_mean_and_unknown_frequency() {
        let mut st = SourceStats::new(64);
        assert!(st.estimate(0.0).is_none());
        st.add(sample(0.0, 0.5, 1e-4));
        st.add(sample(1.0, 0.5002, 1e-4));
        let e = st.estimate(1.0).unwrap();
        assert!((e.offset - 0.5001).abs() < 1e-9);
        assert_eq!((e.frequency, e.skew), (0.0, UNKNOWN_SKEW));
    }

    #[test]
    fn a_sample_with_a_huge_delay_is_ignored() {
        let mut st = SourceStats::new(64);
        for i in 0..10 {
            let t = i as f64;
            // Delays jitter by a few microseconds around 100 us.
            st.add(sample(t, 0.002, 100e-6 + (i % 3) as f64 * 2e-6));
        }
        // Queued for 50 ms, and its offset 25 ms off as a result.
        st.add(sample(10.0, 0.027, 0.050));
        let e = st.estimate(10.0).unwrap();
        assert!((e.offset - 0.002).abs() < 1e-6, "{e:?}");
        assert_eq!(e.samples, 10);
    }

    #[test]
    fn corrections_keep_the_history_consistent() {
        let mut st = SourceStats::new(64);
        for i in 0..10 {
            let t = i as f64 * 10.0;
            st.add(sample(t, 0.1 + 20e-6 * t, 1e-4));
        }
        // The clock is corrected by the estimate at t = 90: offset to 0, rate by 20 ppm.
        let e = st.estimate(90.0).unwrap();
        st.apply_offset_correction(e.offset);
        st.apply_frequency_change(90.0, e.frequency);
        let after = st.estimate(90.0).unwrap();
        assert!(
            after.offset.abs() < 1e-9 && after.frequency.abs() < 1e-12,
            "{after:?}"
        );
        // A new sample on the corrected clock agrees with the restated history.
        st.add(sample(100.0, 0.0, 1e-4));
        assert_eq!(st.estimate(100.0).unwrap().samples, 11);
    }

    #[test]
    fn a_bend_in_the_offsets_shortens_the_window() {
        let mut st = SourceStats::new(64);
        // 40 samples on one slope, then the frequency changes by 50 ppm.
        for i in 0..40 {
            st.add(sample(i as f64, 0.0, 1e-4));
        }
        for i in 40..60 {
            st.add(sample(i as f64, 50e-6 * (i - 40) as f64, 1e-4));
        }
        assert!(st.len() < 40, "old samples kept: {}", st.len());
        let e = st.estimate(59.0).unwrap();
        assert!((e.frequency - 50e-6).abs() < 5e-6, "{e:?}");
    }

    #[test]
    fn runs_test() {
        assert!(runs_ok(&[
            true, false, true, false, true, false, true, false
        ]));
        let two_runs: Vec<bool> = (0..16).map(|i| i < 8).collect();
        assert!(!runs_ok(&two_runs));
        assert!(!runs_ok(&[true; 8]));
    }
}
