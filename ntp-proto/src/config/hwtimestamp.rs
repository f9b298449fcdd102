//! `hwtimestamp` directives: NIC timestamping per interface, with chrony's options.

use super::{invalid, missing, option_value, parse_float, parse_uint};

/// Which received packets the NIC is asked to timestamp (`rxfilter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxFilter {
    /// The best the NIC has: NTP packets, else all (chrony's default).
    Any,
    /// All packets (`all`).
    All,
    /// NTP packets only (`ntp`).
    Ntp,
    /// PTP event packets only (`ptp`: leaves all-packet stamping to ptp4l's filter).
    Ptp,
    /// None: transmit timestamps only (`none`).
    None,
}

/// One `hwtimestamp` line.
#[derive(Debug, Clone, PartialEq)]
pub struct HwTimestampConfig {
    /// The interface, or `*` for every interface that can.
    pub iface: String,
    /// Shortest interval between PHC readings, as an exponent of 2 (`minpoll`, default 0).
    pub minpoll: i8,
    /// Longest interval between PHC readings (`maxpoll`, default `minpoll` + 1).
    pub maxpoll: i8,
    /// Fewest samples of the PHC-to-system regression (`minsamples`, default 2).
    pub min_samples: usize,
    /// Most samples of the regression (`maxsamples`, default 16).
    pub max_samples: usize,
    /// Precision of the NIC's timestamps, seconds (`precision`, default 100 ns).
    pub precision: f64,
    /// Correction added to transmit timestamps, seconds (`txcomp`).
    pub tx_comp: f64,
    /// Correction added to receive timestamps, seconds (`rxcomp`).
    pub rx_comp: f64,
    /// Read the PHC between system clock reads even where cross timestamps exist.
    pub nocrossts: bool,
    /// The receive filter.
    pub rx_filter: RxFilter,
    /// Line of the directive, for messages.
    pub line: usize,
}

/// Parses the arguments of a `hwtimestamp` line.
pub(super) fn parse_hwtimestamp(line: usize, args: &[&str]) -> Result<HwTimestampConfig, String> {
    const D: &str = "hwtimestamp";
    let Some((&iface, options)) = args.split_first() else {
        return Err(missing(D, "an interface name or *"));
    };
    let mut h = HwTimestampConfig {
        iface: iface.to_string(),
        minpoll: 0,
        maxpoll: 1,
        min_samples: 2,
        max_samples: 16,
        precision: 100e-9,
        tx_comp: 0.0,
        rx_comp: 0.0,
        nocrossts: false,
        rx_filter: RxFilter::Any,
        line,
    };
    let mut maxpoll = None;
    let mut rest = options.iter();
    while let Some(&option) = rest.next() {
        let lower = option.to_ascii_lowercase();
        let o = lower.as_str();
        match o {
            "nocrossts" => h.nocrossts = true,
            "minpoll" | "maxpoll" => {
                const POLL: &str = "an integer from -6 to 20";
                let v = option_value(&mut rest, o, D, POLL)?;
                let p = v
                    .parse::<i8>()
                    .ok()
                    .filter(|p| (-6..=20).contains(p))
                    .ok_or_else(|| invalid(o, v, D, POLL))?;
                if o == "minpoll" {
                    h.minpoll = p;
                } else {
                    maxpoll = Some(p);
                }
            }
            "minsamples" | "maxsamples" => {
                const COUNT: &str = "an integer 2-64";
                let v = option_value(&mut rest, o, D, COUNT)?;
                let n = parse_uint::<usize>(v)
                    .filter(|n| (2..=64).contains(n))
                    .ok_or_else(|| invalid(o, v, D, COUNT))?;
                if o == "minsamples" {
                    h.min_samples = n;
                } else {
                    h.max_samples = n;
                }
            }
            "precision" | "txcomp" | "rxcomp" => {
                const SECS: &str = "a number of seconds under 1";
                let v = option_value(&mut rest, o, D, SECS)?;
                let x = parse_float(v)
                    .filter(|x| x.abs() < 1.0 && (o != "precision" || *x > 0.0))
                    .ok_or_else(|| invalid(o, v, D, SECS))?;
                match o {
                    "precision" => h.precision = x,
                    "txcomp" => h.tx_comp = x,
                    _ => h.rx_comp = x,
                }
            }
            "rxfilter" => {
                const F: &str = "all, ntp, ptp or none";
                let v = option_value(&mut rest, o, D, F)?;
                h.rx_filter = match v.to_ascii_lowercase().as_str() {
                    "all" => RxFilter::All,
                    "ntp" => RxFilter::Ntp,
                    "ptp" => RxFilter::Ptp,
                    "none" => RxFilter::None,
                    _ => return Err(invalid("rxfilter", v, D, F)),
                };
            }
            _ => {
                return Err(format!(
                    "invalid option \"{option}\" in hwtimestamp directive"
                ));
            }
        }
    }
    h.maxpoll = maxpoll.unwrap_or(h.minpoll.saturating_add(1));
    if h.max_samples < h.min_samples {
        h.max_samples = h.min_samples;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<HwTimestampConfig, String> {
        let args: Vec<&str> = line.split_whitespace().collect();
        parse_hwtimestamp(3, &args)
    }

    #[test]
    fn chronys_defaults_and_options() {
        let h = parse("eth0").expect("valid");
        assert_eq!((h.iface.as_str(), h.minpoll, h.maxpoll), ("eth0", 0, 1));
        assert_eq!((h.min_samples, h.max_samples, h.precision), (2, 16, 100e-9));
        assert_eq!(
            (h.rx_filter, h.nocrossts, h.line),
            (RxFilter::Any, false, 3)
        );
        let h = parse(
            "* minpoll -2 maxpoll 4 minsamples 4 maxsamples 32 precision 1e-8 txcomp 1e-7 \
             rxcomp -2e-8 nocrossts rxfilter ntp",
        )
        .expect("valid");
        assert_eq!((h.iface.as_str(), h.minpoll, h.maxpoll), ("*", -2, 4));
        assert_eq!((h.min_samples, h.max_samples), (4, 32));
        assert_eq!((h.precision, h.tx_comp, h.rx_comp), (1e-8, 1e-7, -2e-8));
        assert!(h.nocrossts);
        assert_eq!(h.rx_filter, RxFilter::Ntp);
        assert_eq!(parse("eth0 minpoll 3").expect("valid").maxpoll, 4);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, needle) in [
            ("", "missing argument"),
            ("eth0 minpoll 30", "invalid minpoll \"30\""),
            ("eth0 rxfilter some", "invalid rxfilter \"some\""),
            ("eth0 precision 0", "invalid precision"),
            ("eth0 maxsamples 1", "invalid maxsamples"),
            ("eth0 bogus", "invalid option \"bogus\""),
            ("eth0 txcomp", "missing value for txcomp"),
        ] {
            let e = parse(line).expect_err(line);
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
