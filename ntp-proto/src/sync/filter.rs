//! The median filter of chrony's `filter` option (and of reference clocks): the samples
//! of several polls become one, made from those closest to the median offset among the
//! most precise. On a short poll over a LAN this trades packets for noise: the regression
//! sees one good sample where it would have seen many noisy ones.

use super::regression::find_best_line;
use super::sample::Sample;
use std::collections::VecDeque;

/// Most samples a filter holds.
pub const MAX_FILTER_SAMPLES: usize = 256;

/// Samples waiting to be combined.
#[derive(Clone, Debug)]
pub struct SampleFilter {
    min_samples: usize,
    max_samples: usize,
    /// A combined sample whose variance exceeds this is dropped.
    max_var: f64,
    /// Share of the samples sorted by offset that is combined (0: the median only).
    combine_ratio: f64,
    samples: VecDeque<Sample>,
    /// The newest sample, kept when the others are combined.
    last: Option<Sample>,
    /// The long-term average variance of combined samples, and its degrees of freedom.
    avg_var: f64,
    avg_var_dof: usize,
}

impl SampleFilter {
    /// A filter that combines `min_samples..=max_samples` samples (1..=256), drops
    /// results more uncertain than `max_dispersion` seconds, and combines the
    /// `combine_ratio` share of them around the median; `precision` (seconds) is the
    /// first guess of the variance.
    pub fn new(
        min_samples: usize,
        max_samples: usize,
        max_dispersion: f64,
        combine_ratio: f64,
        precision: f64,
    ) -> Self {
        let min_samples = min_samples.clamp(1, MAX_FILTER_SAMPLES);
        let max_samples = max_samples.clamp(1, MAX_FILTER_SAMPLES).max(min_samples);
        SampleFilter {
            min_samples,
            max_samples,
            max_var: max_dispersion * max_dispersion,
            combine_ratio: combine_ratio.clamp(0.0, 1.0),
            samples: VecDeque::with_capacity(max_samples),
            last: None,
            avg_var: precision * precision,
            avg_var_dof: 0,
        }
    }

    /// The filter for an NTP source's `filter polls` option: everything the polls
    /// brought, the median taken.
    pub fn for_ntp(polls: usize, precision: f64) -> Self {
        SampleFilter::new(1, polls, 16.0, 0.0, precision)
    }

    /// Most samples held (an NTP source combines after this many polls).
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }

    /// Takes a sample; false (and not taken) if it is not newer than the last one.
    pub fn add(&mut self, s: Sample) -> bool {
        if self.last.is_some_and(|l| s.time <= l.time) {
            return false;
        }
        if self.samples.len() == self.max_samples {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        self.last = Some(s);
        true
    }

    /// The newest sample taken, combined or not.
    pub fn last(&self) -> Option<&Sample> {
        self.last.as_ref()
    }

    /// The typical dispersion of a combined sample (the long-term average's root).
    pub fn avg_dispersion(&self) -> f64 {
        self.avg_var.sqrt()
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample waits.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every sample (a step, a reset).
    pub fn clear(&mut self) {
        self.samples.clear();
        self.last = None;
    }

    /// The clock was corrected at local time `when` by `correction` seconds and now runs
    /// `dfreq` faster: the samples are restated on the new scale, as the statistics are.
    pub fn restate(&mut self, when: f64, dfreq: f64, correction: f64) {
        let shift = |t: f64| correction + (t - when) * dfreq;
        for s in self.samples.iter_mut().chain(self.last.as_mut()) {
            let d = shift(s.time);
            s.time += d;
            s.offset -= d;
        }
    }

    /// Combines the waiting samples into one and empties the filter (the newest stays
    /// known); `None` with too few, or when the result is too uncertain (the samples then
    /// stay).
    pub fn combine(&mut self) -> Option<Sample> {
        if self.samples.len() < self.min_samples {
            return None;
        }
        let selected = self.select();
        let result = self.combine_selected(&selected);
        // As chrony: only a combination that was made empties the filter; after a failed
        // one the samples stay, the oldest making room for the next.
        if result.is_some() {
            self.samples.clear();
        }
        result
    }

    /// The samples to combine, oldest first: among the most precise (dispersion within
    /// 1.5 times the least, if at least four are), the middle ones by offset.
    fn select(&self) -> Vec<Sample> {
        let all: Vec<Sample> = self.samples.iter().copied().collect();
        let mut chosen: Vec<(usize, Sample)> = Vec::new();
        if all.len() > 4 {
            let least = all
                .iter()
                .map(|s| s.dispersion)
                .fold(f64::INFINITY, f64::min);
            chosen = all
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, s)| s.dispersion <= 1.5 * least)
                .collect();
        }
        if chosen.len() < 4 {
            chosen = all.iter().copied().enumerate().collect();
        }
        chosen.sort_by(|a, b| a.1.offset.total_cmp(&b.1.offset));
        let j = chosen.len();
        let from = if j > 2 {
            let f = (j as f64 * (1.0 - self.combine_ratio) / 2.0) as usize;
            f.clamp(1, (j - 1) / 2)
        } else {
            0
        };
        let mut middle: Vec<(usize, Sample)> = chosen[from..j - from].to_vec();
        middle.sort_by_key(|(i, _)| *i);
        middle.into_iter().map(|(_, s)| s).collect()
    }

    fn combine_selected(&mut self, sel: &[Sample]) -> Option<Sample> {
        let last = *sel.last()?;
        let n = sel.len();
        let x: Vec<f64> = sel.iter().map(|s| s.time - last.time).collect();
        let y: Vec<f64> = sel.iter().map(|s| s.offset).collect();
        let mean_x = x.iter().sum::<f64>() / n as f64;
        let mean_y = y.iter().sum::<f64>() / n as f64;
        let (mut var, mut disp, dof) = if n >= 4 {
            // A weighted line through them: its intercept's uncertainty at their mean
            // time is what the combination knows.
            let xc: Vec<f64> = x.iter().map(|v| v - mean_x).collect();
            let w: Vec<f64> = sel.iter().map(|s| s.dispersion.max(1e-12)).collect();
            let fit = find_best_line(&xc, &y, &w, 0, n)?;
            (fit.variance, fit.sd_a, n - 2)
        } else if n >= 2 {
            let var = y.iter().map(|v| (v - mean_y).powi(2)).sum::<f64>() / (n - 1) as f64;
            (var, var.sqrt(), n - 1)
        } else {
            (self.avg_var, self.avg_var.sqrt(), 1)
        };
        if var < 1e-20 {
            var = 1e-20;
            disp = var.sqrt();
        }
        if self.max_var > 0.0 && var > self.max_var {
            return None;
        }
        let mut previous = self.avg_var;
        if self.avg_var_dof > 50 {
            self.avg_var += dof as f64 / (dof as f64 + 50.0) * (var - self.avg_var);
        } else {
            self.avg_var = (self.avg_var * self.avg_var_dof as f64 + var * dof as f64)
                / (dof + self.avg_var_dof) as f64;
            if self.avg_var_dof == 0 {
                previous = self.avg_var;
            }
            self.avg_var_dof += dof;
        }
        // Unless this combination's variance is clearly below the long-term one, the
        // long-term one is the better guess: it keeps noise out of the regression's
        // weights.
        if var * dof as f64 / chi2_90(dof) < previous {
            disp *= (self.avg_var / var).sqrt();
        }
        let mean = |f: fn(&Sample) -> f64| sel.iter().map(f).sum::<f64>() / n as f64;
        Some(Sample {
            time: last.time + mean_x,
            offset: mean_y,
            delay: mean(|s| s.delay),
            dispersion: disp.max(mean(|s| s.dispersion)),
            root_delay: mean(|s| s.root_delay),
            root_dispersion: disp.max(mean(|s| s.root_dispersion)),
            stratum: last.stratum,
            leap: last.leap,
        })
    }
}

/// The 90 % quantile of the chi-square distribution with `dof` degrees of freedom: exact
/// values for the first ten, the Wilson-Hilferty approximation (within 0.3 %) beyond.
pub fn chi2_90(dof: usize) -> f64 {
    const FIRST: [f64; 10] = [
        2.706, 4.605, 6.251, 7.779, 9.236, 10.645, 12.017, 13.362, 14.684, 15.987,
    ];
    match dof {
        0 => FIRST[0],
        1..=10 => FIRST[dof - 1],
        _ => {
            let k = dof as f64;
            let c = 2.0 / (9.0 * k);
            k * (1.0 - c + 1.281_551_6 * c.sqrt()).powi(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: f64, offset: f64, dispersion: f64) -> Sample {
        Sample {
            time,
            offset,
            delay: 1e-4,
            dispersion,
            root_delay: 1e-3,
            root_dispersion: 1e-3,
            stratum: 1,
            leap: 0,
        }
    }

    #[test]
    fn the_median_of_an_odd_count_is_taken() {
        let mut f = SampleFilter::for_ntp(5, 1e-7);
        for (i, o) in [3e-6, -50e-6, 1e-6, 40e-6, 2e-6].iter().enumerate() {
            assert!(f.add(sample(i as f64, *o, 1e-6)));
        }
        let c = f.combine().expect("a sample");
        assert_eq!(c.offset, 2e-6);
        assert_eq!(c.time, 4.0);
        assert!(f.is_empty());
        assert_eq!(f.last().map(|s| s.time), Some(4.0));
    }

    #[test]
    fn the_two_middle_samples_of_an_even_count_are_averaged_at_their_mean_time() {
        let mut f = SampleFilter::for_ntp(4, 1e-7);
        for (i, o) in [10e-6, -30e-6, 20e-6, 100e-6].iter().enumerate() {
            f.add(sample(i as f64, *o, 1e-6));
        }
        let c = f.combine().expect("a sample");
        assert!((c.offset - 15e-6).abs() < 1e-12, "{}", c.offset);
        assert!((c.time - 1.0).abs() < 1e-12, "{}", c.time);
        // Their spread, or the long-term guess when that is larger.
        assert!(
            c.dispersion >= 5e-6 * 2f64.sqrt() - 1e-12,
            "{}",
            c.dispersion
        );
    }

    #[test]
    fn imprecise_samples_are_left_out_when_enough_precise_ones_remain() {
        // Five precise samples near zero, two imprecise far off: the median of the
        // precise five, whatever the others say.
        let mut f = SampleFilter::for_ntp(7, 1e-7);
        let data = [
            (1e-6, 1e-6),
            (500e-6, 9e-6),
            (-1e-6, 1.2e-6),
            (600e-6, 9e-6),
            (0.0, 1e-6),
            (2e-6, 1.1e-6),
            (-2e-6, 1.4e-6),
        ];
        for (i, (o, d)) in data.iter().enumerate() {
            f.add(sample(i as f64, *o, *d));
        }
        assert_eq!(f.combine().map(|c| c.offset), Some(0.0));
    }

    #[test]
    fn old_and_out_of_order_samples_are_refused_and_the_oldest_make_room() {
        let mut f = SampleFilter::for_ntp(3, 1e-7);
        assert!(f.add(sample(1.0, 1.0, 1e-6)));
        assert!(!f.add(sample(1.0, 2.0, 1e-6)));
        assert!(!f.add(sample(0.5, 2.0, 1e-6)));
        for t in 2..=4 {
            f.add(sample(f64::from(t), f64::from(t), 1e-6));
        }
        assert_eq!(f.len(), 3);
        assert_eq!(f.combine().map(|c| c.offset), Some(3.0));
    }

    #[test]
    fn a_restatement_moves_waiting_samples_with_the_clock() {
        let mut f = SampleFilter::for_ntp(2, 1e-7);
        f.add(sample(10.0, 1e-3, 1e-6));
        // The clock was moved forward 1 ms at t = 20: the sample now reads 1 ms later,
        // and the offset to the source is 1 ms less.
        f.restate(20.0, 0.0, 1e-3);
        f.add(sample(30.0, 0.0, 1e-6));
        let c = f.combine().expect("a sample");
        assert!(c.offset.abs() < 1e-12, "{}", c.offset);
    }

    #[test]
    fn chi_square_quantiles_are_close_to_the_table() {
        // 90 % quantiles from the standard table.
        for (dof, q) in [
            (1, 2.706),
            (10, 15.987),
            (20, 28.412),
            (30, 40.256),
            (60, 74.397),
        ] {
            assert!(
                (chi2_90(dof) - q).abs() / q < 0.003,
                "{dof}: {}",
                chi2_90(dof)
            );
        }
    }

    #[test]
    fn a_failed_combination_keeps_the_samples() {
        // Two samples a second apart and 20 s off each other: variance far beyond the
        // 1 s allowed here. The samples stay for the next try.
        let mut f = SampleFilter::new(1, 2, 1.0, 0.0, 1e-7);
        f.add(sample(1.0, -10.0, 1e-6));
        f.add(sample(2.0, 10.0, 1e-6));
        assert_eq!(f.combine(), None);
        assert_eq!(f.len(), 2);
        f.add(sample(3.0, 10.0, 1e-6));
        assert_eq!(f.len(), 2, "the oldest made room");
        assert_eq!(f.combine().map(|c| c.offset), Some(10.0));
    }
}
