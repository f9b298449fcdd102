//! The driftfile: the system clock's frequency error and its uncertainty, in ppm, kept
//! across restarts (chrony's format: "FREQUENCY SKEW"; positive frequency: the clock runs
//! fast, as `tracking` shows it).

use anyhow::{Context, Result};
use std::path::Path;

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

/// Reads `path`; a missing or unreadable file gives `None`.
pub fn read(path: &Path) -> Option<Drift> {
    std::fs::read_to_string(path)
        .ok()
        .as_deref()
        .and_then(parse)
}

/// Writes `path` atomically.
pub fn write(path: &Path, d: &Drift) -> Result<()> {
    crate::daemon::write_atomically(path, format(d).as_bytes())
        .with_context(|| format!("writing the driftfile {}", path.display()))
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

    #[test]
    fn written_atomically_and_read_back() {
        let dir = std::env::temp_dir().join(format!("ntpx-drift-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("drift");
        let d = Drift {
            freq_ppm: 40.0,
            skew_ppm: 0.5,
        };
        write(&p, &d).unwrap();
        assert_eq!(read(&p), Some(d));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read(&p), None);
    }
}
