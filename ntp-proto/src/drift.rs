//! The driftfile: the system clock's frequency error and its uncertainty, in ppm, kept
//! across restarts (chrony's format: "FREQUENCY SKEW"; positive frequency: the clock runs
//! fast, as `tracking` shows it).

/// A driftfile's content.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drift {
    /// Frequency error of the system clock, ppm (positive: fast).
    pub freq_ppm: f64,
    /// Its uncertainty, ppm.
    pub skew_ppm: f64,
}

/// Parses "FREQ SKEW"; `None` for anything else (a corrupt file is ignored, not fatal).
pub fn parse(text: &str) -> Option<Drift> {
    let mut t = text.split_whitespace();
    let freq_ppm: f64 = t.next()?.parse().ok()?;
    let skew_ppm: f64 = t.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000.0);
    (freq_ppm.is_finite() && skew_ppm.is_finite() && freq_ppm.abs() <= 500_000.0)
        .then_some(Drift { freq_ppm, skew_ppm })
}

/// The file's text.
pub fn format(d: &Drift) -> String {
    format!("{:>10.3} {:>10.3}\n", d.freq_ppm, d.skew_ppm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_chrony_files() {
        let d = Drift {
            freq_ppm: -35.006,
            skew_ppm: 1.389,
        };
        assert_eq!(parse(&format(&d)), Some(d));
        assert_eq!(
            parse("   12.345     0.020\n").map(|d| d.freq_ppm),
            Some(12.345)
        );
        assert_eq!(parse("7.5").map(|d| d.skew_ppm), Some(1_000_000.0));
        assert_eq!(parse(""), None);
        assert_eq!(parse("garbage 1"), None);
        assert_eq!(parse("NaN 1"), None);
    }
}
