//! Percentiles from the kernel's bucketed latency counts.

use ntp_common::load::{BUCKETS, bucket_low};
use serde::{Deserialize, Serialize};

/// Counts per bucket of one latency histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
}

/// Median and 99th percentile of a latency, ns (bucket lower bounds: within 3 %).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
}

impl Histogram {
    /// A histogram from its bucket counts (`BUCKETS` of them).
    pub fn from_counts(counts: Vec<u64>) -> Self {
        debug_assert_eq!(counts.len(), BUCKETS as usize);
        Histogram { counts }
    }

    /// Number of values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The lower bound of the bucket holding the `q`-quantile (0 < q ≤ 1); `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // The smallest bucket whose cumulative count reaches ceil(q * total).
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_low(b as u32));
            }
        }
        None
    }

    /// Median and p99, if anything was counted.
    pub fn percentiles(&self) -> Option<Percentiles> {
        Some(Percentiles {
            p50: self.quantile(0.5)?,
            p99: self.quantile(0.99)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_common::load::bucket_of;

    fn hist(values: impl IntoIterator<Item = u64>) -> Histogram {
        let mut c = vec![0; BUCKETS as usize];
        for v in values {
            c[bucket_of(v) as usize] += 1;
        }
        Histogram::from_counts(c)
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        // 1..=1000 ns: the median is 500, p99 990.
        let h = hist(1..=1000);
        assert_eq!(h.total(), 1000);
        let p = h.percentiles().unwrap();
        assert!(p.p50 <= 500 && 500 - p.p50 <= 500 / 32, "{p:?}");
        assert!(p.p99 <= 990 && 990 - p.p99 <= 990 / 32, "{p:?}");
        assert_eq!(h.quantile(1.0), Some(bucket_low(bucket_of(1000))));
        assert_eq!(h.quantile(0.0001), Some(1));
    }

    #[test]
    fn an_outlier_moves_p99_only_when_it_is_over_one_percent() {
        let h = hist((0..99).map(|_| 1_000).chain([1_000_000]));
        assert_eq!(h.percentiles().unwrap().p99, bucket_low(bucket_of(1_000)));
        let h = hist((0..98).map(|_| 1_000).chain([1_000_000, 1_000_000]));
        assert_eq!(
            h.percentiles().unwrap().p99,
            bucket_low(bucket_of(1_000_000))
        );
    }

    #[test]
    fn an_empty_histogram_has_no_percentiles() {
        assert_eq!(hist([]).percentiles(), None);
    }
}
