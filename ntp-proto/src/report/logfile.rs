//! chrony's log files (`logdir`, `log measurements statistics tracking`): one line per
//! event in chrony's column layouts, with the banner repeated every `logbanner` lines.

use crate::sync::sourcestats::FitRecord;
use std::collections::HashMap;

/// Lines between banners (chrony's `logbanner` default).
pub const BANNER_EVERY: u32 = 32;

/// One log record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A reply from a source (measurements.log).
    Measurement {
        /// Unix seconds.
        time: f64,
        /// Source address.
        addr: String,
        /// Leap indicator.
        leap: u8,
        /// Stratum.
        stratum: u8,
        /// Local and remote poll exponents.
        polls: (i8, i8),
        /// The poller's score towards a poll change.
        score: f64,
        /// chrony's tests A-D: maxdelay (with the precision and response time),
        /// maxdelayratio, maxdelaydevratio, no synchronisation loop.
        delay_tests: [bool; 4],
        /// Who stamped the transmission and the reception.
        stamps: (super::chronyc::Stamp, super::chronyc::Stamp),
        /// Offset (source minus local: positive when the local clock is slow), delay,
        /// dispersion, root delay, root dispersion.
        figures: [f64; 5],
        /// Reference id.
        refid: u32,
    },
    /// A source's regression after a sample (statistics.log).
    Statistics {
        /// Unix seconds.
        time: f64,
        /// Source address.
        addr: String,
        /// Std deviation, estimated offset, offset sd, frequency (ratio), skew (ratio).
        figures: [f64; 5],
        /// What the regression was given and dropped.
        fit: FitRecord,
        /// Runs of residual signs among the samples kept.
        runs: usize,
    },
    /// A clock update (tracking.log).
    Tracking {
        /// Unix seconds.
        time: f64,
        /// Reference address.
        addr: String,
        /// Our stratum.
        stratum: u8,
        /// Frequency (ppm, fast positive), skew (ppm), offset (s), offset sd (s), remaining
        /// correction (s), root delay (s), root dispersion (s).
        figures: [f64; 7],
        /// Leap indicator.
        leap: u8,
        /// Sources combined.
        combined: usize,
    },
}

fn date(t: f64) -> String {
    // "Tue Nov 24 14:42:28 2026" -> "2026-11-24 14:42:28"
    let c = crate::report::ctime_utc(t);
    let p: Vec<&str> = c.split_whitespace().collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| Some(m) == p.get(1))
    .map_or(0, |i| i + 1);
    format!(
        "{}-{month:02}-{} {}",
        p.get(4).unwrap_or(&""),
        p.get(2).unwrap_or(&""),
        p.get(3).unwrap_or(&"")
    )
}

/// C's `%W.Pe`: an exponent of at least two digits with its sign ("-8.621e-06").
fn sci(x: f64, width: usize, prec: usize) -> String {
    let r = format!("{x:.prec$e}");
    let (mant, exp) = r.split_once('e').unwrap_or((&r, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{:>width$}", format!("{mant}e{sign}{digits:0>2}"))
}

fn leap(l: u8) -> char {
    match l {
        0 => 'N',
        1 => '+',
        2 => '-',
        _ => '?',
    }
}

impl Record {
    /// The file the record goes to.
    pub fn file(&self) -> &'static str {
        match self {
            Record::Measurement { .. } => "measurements.log",
            Record::Statistics { .. } => "statistics.log",
            Record::Tracking { .. } => "tracking.log",
        }
    }

    /// The column header written at the top and every [`BANNER_EVERY`] lines.
    pub fn banner(&self) -> &'static str {
        match self {
            Record::Measurement { .. } => {
                "   Date (UTC) Time     IP Address   L St 123 567 ABCD  LP RP Score    Offset  Peer del. Peer disp.  Root del. Root disp. Refid     MTxRx"
            }
            Record::Statistics { .. } => {
                "   Date (UTC) Time     IP Address    Std dev'n Est offset  Offset sd  Diff freq   Est skew  Stress  Ns  Bs  Nr  Asym"
            }
            Record::Tracking { .. } => {
                "   Date (UTC) Time     IP Address   St   Freq ppm   Skew ppm     Offset L Co  Offset sd Rem. corr. Root delay Root disp. Max. error"
            }
        }
    }

    /// The line.
    pub fn line(&self) -> String {
        let e = |x: f64| sci(x, 10, 3);
        match self {
            Record::Measurement {
                time,
                addr,
                leap: l,
                stratum,
                polls,
                score,
                delay_tests,
                stamps,
                figures: f,
                refid,
            } => format!(
                "{} {:<15} {} {:2} 111 111 {} {:3} {:2} {:4.2} {} {} {} {} {} {:08X} 4B {} {}",
                date(*time),
                addr,
                leap(*l),
                stratum,
                delay_tests
                    .iter()
                    .map(|ok| if *ok { '1' } else { '0' })
                    .collect::<String>(),
                polls.0,
                polls.1,
                score,
                e(f[0]),
                e(f[1]),
                e(f[2]),
                e(f[3]),
                e(f[4]),
                refid,
                stamps.0.letter(),
                stamps.1.letter()
            ),
            Record::Statistics {
                time,
                addr,
                figures: f,
                fit,
                runs,
            } => format!(
                "{} {:<15} {} {} {} {} {} {} {:3} {:3} {:3} {:5.2}",
                date(*time),
                addr,
                e(f[0]),
                e(f[1]),
                e(f[2]),
                e(f[3]),
                e(f[4]),
                sci(fit.stress, 7, 1),
                fit.samples,
                fit.dropped,
                runs,
                fit.asymmetry
            ),
            Record::Tracking {
                time,
                addr,
                stratum,
                figures: f,
                leap: l,
                combined,
            } => format!(
                "{} {:<15} {:2} {:10.3} {:10.3} {} {} {:2} {} {} {} {} {}",
                date(*time),
                addr,
                stratum,
                f[0],
                f[1],
                e(f[2]),
                leap(*l),
                combined,
                e(f[3]),
                e(f[4]),
                e(f[5]),
                e(f[6]),
                e(f[5] / 2.0 + f[6] + f[2].abs())
            ),
        }
    }
}

/// Which records go to the log files (`log`) and where the banners fall; the writing
/// itself is the daemon's.
#[derive(Debug, Default)]
pub struct LogBook {
    enabled: Vec<String>,
    lines: HashMap<&'static str, u32>,
}

impl LogBook {
    /// Logs `kinds` ("measurements", "statistics", "tracking").
    pub fn new(kinds: &[String]) -> Self {
        LogBook {
            enabled: kinds.to_vec(),
            lines: HashMap::new(),
        }
    }

    /// The file `r` goes to and the text to append to it (with a banner when one is due);
    /// `None` if its kind is not enabled.
    pub fn entry(&mut self, r: &Record) -> Option<(&'static str, String)> {
        let kind = r.file().trim_end_matches(".log");
        if !self.enabled.iter().any(|k| k == kind) {
            return None;
        }
        let n = self.lines.entry(r.file()).or_insert(0);
        let mut text = String::new();
        if (*n).is_multiple_of(BANNER_EVERY) {
            let rule = "=".repeat(r.banner().len());
            text.push_str(&format!("{rule}\n{}\n{rule}\n", r.banner()));
        }
        *n += 1;
        text.push_str(&r.line());
        text.push('\n');
        Some((r.file(), text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracking() -> Record {
        Record::Tracking {
            time: 1_795_531_348.0,
            addr: "10.231.0.1".into(),
            stratum: 4,
            figures: [
                -3.541, 0.075, -8.621e-6, 2.94e-3, -2.084e-4, 1.534e-2, 3.472e-3,
            ],
            leap: 0,
            combined: 2,
        }
    }

    #[test]
    fn exponents_as_c_prints_them() {
        assert_eq!(sci(-8.621e-6, 10, 3), "-8.621e-06");
        assert_eq!(sci(0.2296, 10, 3), " 2.296e-01");
        assert_eq!(sci(12345.0, 10, 3), " 1.234e+04");
        assert_eq!(sci(0.0, 8, 2), "0.00e+00");
    }

    #[test]
    fn lines_follow_the_banner_columns() {
        let t = tracking();
        let line = t.line();
        assert!(
            line.starts_with(
                "2026-11-24 14:42:28 10.231.0.1       4     -3.541      0.075 -8.621e-06 N  2"
            ),
            "{line}"
        );
        let m = Record::Measurement {
            time: 1_795_531_348.0,
            addr: "10.231.0.1".into(),
            leap: 0,
            stratum: 2,
            polls: (6, 6),
            score: 1.0,
            delay_tests: [true, true, false, true],
            stamps: (crate::report::Stamp::Daemon, crate::report::Stamp::Kernel),
            figures: [-4.966e-3, 0.2296, 1.577e-5, 0.1615, 7.446e-3],
            refid: 0xCB00_717B,
        };
        assert!(
            m.line().contains(" N  2 111 111 1101   6  6 1.00 "),
            "{}",
            m.line()
        );
        assert!(m.line().ends_with("CB00717B 4B D K"), "{}", m.line());
        // The example line of chrony.conf(5), columns and all.
        let st = Record::Statistics {
            time: 1_470_807_650.0,
            addr: "203.0.113.15".into(),
            figures: [6.261e-3, -3.247e-3, 2.220e-3, 1.874e-6, 1.080e-6],
            fit: FitRecord {
                samples: 16,
                dropped: 0,
                stress: 7.8e-2,
                asymmetry: 0.0,
            },
            runs: 8,
        };
        assert_eq!(
            st.line(),
            "2016-08-10 05:40:50 203.0.113.15     6.261e-03 -3.247e-03  2.220e-03  1.874e-06  1.080e-06 7.8e-02  16   0   8  0.00"
        );
    }

    #[test]
    fn a_banner_every_32_lines_and_only_enabled_kinds() {
        let mut book = LogBook::new(&["tracking".to_string()]);
        let mut text = String::new();
        for _ in 0..40 {
            let (file, t) = book.entry(&tracking()).unwrap();
            assert_eq!(file, "tracking.log");
            text.push_str(&t);
        }
        let stats = Record::Statistics {
            time: 0.0,
            addr: "x".into(),
            figures: [0.0; 5],
            fit: FitRecord::default(),
            runs: 1,
        };
        assert_eq!(book.entry(&stats), None);
        assert_eq!(text.lines().filter(|l| l.contains("Date (UTC)")).count(), 2);
        assert_eq!(text.lines().filter(|l| l.starts_with("2026-")).count(), 40);
    }
}
