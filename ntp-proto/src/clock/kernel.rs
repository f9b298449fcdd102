//! What the kernel's clock accepts: a tick length and a frequency offset (`adjtimex`
//! `ADJ_TICK` and `ADJ_FREQUENCY`), and what rate they make the clock run at.

/// The kernel's limit on `ADJ_FREQUENCY`: 500 ppm.
pub const MAX_KERNEL_FREQ: f64 = 500e-6;
/// The nominal tick with `USER_HZ` = 100: 10 000 µs per 1/100 s.
pub const NOMINAL_TICK_US: i64 = 10_000;
/// The ticks the kernel accepts: ±10 % of nominal (`900000/USER_HZ` to `1100000/USER_HZ`).
pub const TICK_RANGE_US: (i64, i64) = (9_000, 11_000);

/// One setting of the kernel clock's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFrequency {
    /// `timex.tick`: µs added per `1/USER_HZ` s.
    pub tick_us: i64,
    /// `timex.freq`: ppm with 16 fractional bits, within ±500 ppm.
    pub freq_scaled: i64,
}

impl KernelFrequency {
    /// The setting nearest `ratio` (positive speeds the clock up): the frequency offset
    /// alone up to ±500 ppm, the tick as well beyond, up to ±10 %.
    pub fn from_ratio(ratio: f64) -> Self {
        let limit = MAX_KERNEL_FREQ;
        let tick_us = if ratio.abs() <= limit {
            NOMINAL_TICK_US
        } else {
            let steps = (ratio * NOMINAL_TICK_US as f64).round() as i64;
            (NOMINAL_TICK_US + steps).clamp(TICK_RANGE_US.0, TICK_RANGE_US.1)
        };
        let rest = (ratio - tick_ratio(tick_us)).clamp(-limit, limit);
        KernelFrequency {
            tick_us,
            freq_scaled: (rest * 1e6 * 65536.0).round() as i64,
        }
    }

    /// The rate this setting makes the clock run at, relative to its natural rate.
    pub fn ratio(&self) -> f64 {
        tick_ratio(self.tick_us) + self.freq_scaled as f64 / 65536.0 / 1e6
    }
}

fn tick_ratio(tick_us: i64) -> f64 {
    (tick_us - NOMINAL_TICK_US) as f64 / NOMINAL_TICK_US as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_scaling_and_limit() {
        let f = KernelFrequency::from_ratio(35e-6);
        assert_eq!((f.tick_us, f.freq_scaled), (10_000, 35 * 65536));
        assert!((KernelFrequency::from_ratio(12.5e-6).ratio() - 12.5e-6).abs() < 1e-12);
        // ADJ_FREQUENCY never carries more than the kernel's 500 ppm.
        let f = KernelFrequency::from_ratio(-1e-3);
        assert!(f.freq_scaled >= -500 * 65536, "{f:?}");
    }

    #[test]
    fn beyond_500_ppm_the_tick_carries_the_rest() {
        for r in [600e-6, -0.02, 0.083_333, 0.1, -0.1, 501e-6] {
            let f = KernelFrequency::from_ratio(r);
            assert!((TICK_RANGE_US.0..=TICK_RANGE_US.1).contains(&f.tick_us));
            assert!(f.freq_scaled.abs() <= 500 * 65536);
            assert!((f.ratio() - r).abs() < 1e-10, "{r}: {f:?}");
        }
        let f = KernelFrequency::from_ratio(0.5);
        assert_eq!(
            f.tick_us, TICK_RANGE_US.1,
            "no more than the kernel accepts"
        );
        assert!((f.ratio() - 0.1005).abs() < 1e-9);
    }
}
