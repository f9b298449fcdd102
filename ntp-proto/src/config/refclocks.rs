//! `refclock` directives: chrony's drivers (SHM, SOCK, PHC) and options.

use super::{invalid, missing, option_value, parse_float, parse_uint};
use std::path::PathBuf;

/// Where a reference clock's readings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefclockDriver {
    /// `SHM N[:perm=MODE]`: the NTP shared-memory segment `0x4e545030 + N` (gpsd,
    /// ntpshm writers, phc2sys).
    Shm {
        /// Segment number.
        segment: u32,
        /// Permissions of a segment the daemon creates (default 0600).
        perm: u32,
    },
    /// `SOCK PATH`: a Unix datagram socket the daemon creates, to which a writer (gpsd)
    /// sends samples in chrony's SOCK format.
    Sock {
        /// The socket's path.
        path: PathBuf,
    },
    /// `PHC DEVICE[:nocrossts][:extpps][:pin=N][:channel=N][:clear]`: a PTP hardware
    /// clock, by device path or by the name of the interface it belongs to.
    Phc {
        /// `/dev/ptpN` or an interface name.
        device: String,
        /// Read the clock between two system clock reads even where the driver offers
        /// cross timestamps.
        nocrossts: bool,
        /// Timestamps of an external pulse on a pin (a PPS into the NIC).
        extpps: bool,
        /// The pin the pulse comes in on; −1 where the channel's pin is fixed (no pin
        /// is configured).
        pin: i32,
        /// The channel of that pin.
        channel: u32,
        /// The pulse's falling edge.
        clear: bool,
    },
}

impl RefclockDriver {
    /// The driver's name as chrony spells it.
    pub fn name(&self) -> &'static str {
        match self {
            RefclockDriver::Shm { .. } => "SHM",
            RefclockDriver::Sock { .. } => "SOCK",
            RefclockDriver::Phc { .. } => "PHC",
        }
    }

    /// Whether the daemon reads this driver every `dpoll` (SOCK samples come on their own).
    pub fn is_polled(&self) -> bool {
        !matches!(self, RefclockDriver::Sock { .. })
    }
}

/// One `refclock` line, with chrony's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RefclockConfig {
    /// The driver and its parameter.
    pub driver: RefclockDriver,
    /// Seconds between samples given to the source statistics, as an exponent of 2
    /// (`poll`, default 4).
    pub poll: i8,
    /// Seconds between driver reads, as an exponent of 2 (`dpoll`, default 0).
    pub dpoll: i8,
    /// Readings the median filter holds (`filter`, default 64).
    pub filter: usize,
    /// Seconds added to every reading (`offset`).
    pub offset: f64,
    /// The assumed round trip of a reading (`delay`, default 1e-9 s).
    pub delay: f64,
    /// The reading's precision in seconds (`precision`; the system's if larger).
    pub precision: f64,
    /// Filtered samples with a larger dispersion are dropped (`maxdispersion`; 0: none).
    pub max_dispersion: f64,
    /// Stratum of the clock (`stratum`, default 0: the server becomes stratum 1).
    pub stratum: u8,
    /// Reference id (`refid`); default the driver's first three letters and its index.
    pub refid: Option<[u8; 4]>,
    /// `lock REFID`: the pulses are numbered by that reference clock's samples.
    pub lock: Option<[u8; 4]>,
    /// `pps`: the readings are pulses (only the fraction of the second is known).
    pub pps: bool,
    /// Pulses per second (`rate`, default 1).
    pub rate: u32,
    /// Pulses a `lock` sample stays usable for (`maxlockage`, default 2).
    pub max_lock_age: u32,
    /// Pulse width in seconds (`width`; 0: not checked).
    pub width: f64,
    /// Preferred in selection (`prefer`).
    pub prefer: bool,
    /// Never selected (`noselect`).
    pub noselect: bool,
    /// Trusted in selection (`trust`).
    pub trust: bool,
    /// Required in selection (`require`).
    pub require: bool,
    /// `minsamples` (default: the global one).
    pub min_samples: Option<usize>,
    /// `maxsamples` (default: the global one).
    pub max_samples: Option<usize>,
    /// `tai`: the reference keeps TAI, its offset corrected by TAI - UTC from the leap
    /// table (`leapsectz` required).
    pub tai: bool,
    /// Line of the directive, for messages.
    pub line: usize,
}

impl RefclockConfig {
    /// `driver` with chrony's defaults for every option, from line `line`.
    pub fn new(driver: RefclockDriver, line: usize) -> Self {
        RefclockConfig {
            driver,
            poll: 4,
            dpoll: 0,
            filter: 64,
            offset: 0.0,
            delay: 1e-9,
            precision: 0.0,
            max_dispersion: 0.0,
            stratum: 0,
            refid: None,
            lock: None,
            pps: false,
            rate: 1,
            max_lock_age: 2,
            width: 0.0,
            prefer: false,
            noselect: false,
            trust: false,
            require: false,
            min_samples: None,
            max_samples: None,
            tai: false,
            line,
        }
    }
}

/// Driver names chrony has that ntpx does not read yet.
const UNSUPPORTED_DRIVERS: &[&str] = &["PPS", "RTC"];

/// chrony's `refid` syntax: up to four characters, left-aligned, zero-padded.
pub fn parse_refid(token: &str) -> Option<[u8; 4]> {
    if token.is_empty() || token.len() > 4 || !token.is_ascii() {
        return None;
    }
    let mut id = [0u8; 4];
    id[..token.len()].copy_from_slice(token.as_bytes());
    Some(id)
}

fn parse_driver(name: &str, param: &str) -> Result<RefclockDriver, String> {
    const D: &str = "refclock";
    let mut parts = param.split(':');
    let head = parts.next().unwrap_or_default();
    let opts: Vec<&str> = parts.collect();
    let unknown = |o: &str| format!("invalid option \"{o}\" of {name} driver in {D} directive");
    match name {
        "SHM" => {
            let segment = parse_uint::<u32>(head)
                .ok_or_else(|| invalid("segment", head, D, "a segment number"))?;
            let mut perm = 0o600;
            for o in opts {
                let Some(v) = o.strip_prefix("perm=") else {
                    return Err(unknown(o));
                };
                perm = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|p| *p <= 0o777)
                    .ok_or_else(|| invalid("perm", v, D, "an octal mode such as 0600"))?;
            }
            Ok(RefclockDriver::Shm { segment, perm })
        }
        "SOCK" => {
            if let Some(o) = opts.first() {
                return Err(unknown(o));
            }
            if !head.starts_with('/') {
                return Err(invalid("path", head, D, "an absolute socket path"));
            }
            Ok(RefclockDriver::Sock { path: head.into() })
        }
        "PHC" => {
            let mut d = RefclockDriver::Phc {
                device: head.to_string(),
                nocrossts: false,
                extpps: false,
                pin: 0,
                channel: 0,
                clear: false,
            };
            let RefclockDriver::Phc {
                nocrossts,
                extpps,
                pin,
                channel,
                clear,
                ..
            } = &mut d
            else {
                unreachable!("built just above");
            };
            for o in opts {
                match o.split_once('=') {
                    None if o == "nocrossts" => *nocrossts = true,
                    None if o == "extpps" => *extpps = true,
                    None if o == "clear" => *clear = true,
                    Some(("pin", v)) => {
                        *pin = if v == "-1" { Some(-1) } else { parse_uint(v) }
                            .ok_or_else(|| invalid("pin", v, D, "a pin index or -1"))?;
                    }
                    Some(("channel", v)) => {
                        *channel =
                            parse_uint(v).ok_or_else(|| invalid("channel", v, D, "a number"))?;
                    }
                    _ => return Err(unknown(o)),
                }
            }
            if head.is_empty() {
                return Err(missing(D, "a PHC device or interface name"));
            }
            Ok(d)
        }
        n if UNSUPPORTED_DRIVERS.contains(&n) => Err(format!(
            "refclock driver {n} is not supported yet (SHM, SOCK and PHC are); refusing to \
             start without the reference clock this configuration relies on"
        )),
        n => Err(invalid("driver", n, D, "SHM, SOCK or PHC")),
    }
}

/// Parses the arguments of a `refclock` line.
pub(super) fn parse_refclock(line: usize, args: &[&str]) -> Result<RefclockConfig, String> {
    const D: &str = "refclock";
    let (Some(&name), Some(&param)) = (args.first(), args.get(1)) else {
        return Err(missing(D, "a driver name and its parameter"));
    };
    let mut r = RefclockConfig::new(parse_driver(name, param)?, line);
    let mut rest = args[2..].iter();
    while let Some(&option) = rest.next() {
        let lower = option.to_ascii_lowercase();
        let o = lower.as_str();
        match o {
            "prefer" => r.prefer = true,
            "noselect" => r.noselect = true,
            "trust" => r.trust = true,
            "require" => r.require = true,
            "pps" => r.pps = true,
            "refid" | "lock" => {
                let v = option_value(&mut rest, o, D, "up to four characters")?;
                let id = parse_refid(v).ok_or_else(|| invalid(o, v, D, "up to four characters"))?;
                if o == "refid" {
                    r.refid = Some(id);
                } else {
                    r.lock = Some(id);
                }
            }
            "poll" | "dpoll" => {
                const POLL: &str = "an integer from -7 to 24";
                let v = option_value(&mut rest, o, D, POLL)?;
                let p = v
                    .parse::<i8>()
                    .ok()
                    .filter(|p| (-7..=24).contains(p))
                    .ok_or_else(|| invalid(o, v, D, POLL))?;
                if o == "poll" {
                    r.poll = p;
                } else {
                    r.dpoll = p;
                }
            }
            "filter" | "rate" | "maxlockage" | "minsamples" | "maxsamples" | "stratum" => {
                let (expected, ok): (&str, fn(u64) -> bool) = match o {
                    // chrony takes any count and holds at most 256.
                    "filter" => ("a number of samples", |_| true),
                    "rate" => ("an integer 1-1000000", |n| (1..=1_000_000).contains(&n)),
                    "maxlockage" => ("an integer 0-1000", |n| n <= 1000),
                    "stratum" => ("an integer 0-15", |n| n <= 15),
                    _ => ("an integer 1-64", |n| (1..=64).contains(&n)),
                };
                let v = option_value(&mut rest, o, D, expected)?;
                let n = parse_uint::<u64>(v)
                    .filter(|n| ok(*n))
                    .ok_or_else(|| invalid(o, v, D, expected))?;
                match o {
                    "filter" => r.filter = n.clamp(1, 256) as usize,
                    "rate" => r.rate = n as u32,
                    "maxlockage" => r.max_lock_age = n as u32,
                    "stratum" => r.stratum = n as u8,
                    "minsamples" => r.min_samples = Some(n as usize),
                    _ => r.max_samples = Some(n as usize),
                }
            }
            "offset" | "delay" | "precision" | "maxdispersion" | "width" => {
                let (expected, ok): (&str, fn(f64) -> bool) = match o {
                    "offset" => ("a number of seconds", |x| x.abs() < 1e6),
                    _ => ("a non-negative number of seconds", |x| {
                        (0.0..1e3).contains(&x)
                    }),
                };
                let v = option_value(&mut rest, o, D, expected)?;
                let x = parse_float(v)
                    .filter(|x| ok(*x))
                    .ok_or_else(|| invalid(o, v, D, expected))?;
                match o {
                    "offset" => r.offset = x,
                    "delay" => r.delay = x,
                    "precision" => r.precision = x,
                    "maxdispersion" => r.max_dispersion = x,
                    _ => r.width = x,
                }
            }
            "maxunreach" => {
                // Only chrony's default (unlimited) is honoured; a limit would change
                // which sources can be selected, so it is not silently ignored.
                return Err(format!(
                    "option \"{option}\" of refclock directive is not supported yet; refusing \
                     to select differently from what this configuration asks"
                ));
            }
            "tai" => r.tai = true,
            "local" => {
                return Err(format!(
                    "option \"{option}\" of refclock directive is not supported yet; refusing \
                     to start without it (remove the option or the line)"
                ));
            }
            _ => return Err(format!("invalid option \"{option}\" in refclock directive")),
        }
    }
    if r.dpoll > r.poll && r.driver.is_polled() {
        // As chrony: the driver is read at least once per poll.
        r.dpoll = r.poll;
    }
    Ok(r)
}

/// The first `refclock` line of configuration `text`, for tests elsewhere.
#[cfg(test)]
pub(crate) fn first_refclock(text: &str) -> RefclockConfig {
    let c = super::parse_str(text, std::path::Path::new("test.conf"))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    c.refclocks[0].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<RefclockConfig, String> {
        let args: Vec<&str> = line.split_whitespace().collect();
        parse_refclock(7, &args)
    }

    #[test]
    fn chronys_defaults() {
        let r = parse("SHM 0").expect("valid");
        assert_eq!(
            r.driver,
            RefclockDriver::Shm {
                segment: 0,
                perm: 0o600
            }
        );
        assert_eq!((r.poll, r.dpoll, r.filter, r.stratum), (4, 0, 64, 0));
        assert_eq!(
            (r.delay, r.offset, r.rate, r.max_lock_age),
            (1e-9, 0.0, 1, 2)
        );
        assert_eq!(r.refid, None);
        assert_eq!(r.line, 7);
    }

    #[test]
    fn drivers_and_their_options() {
        let r =
            parse("SHM 2:perm=0644 refid GPS offset 0.5 delay 0.2 precision 1e-3").expect("valid");
        assert_eq!(
            r.driver,
            RefclockDriver::Shm {
                segment: 2,
                perm: 0o644
            }
        );
        assert_eq!(r.refid, Some(*b"GPS\0"));
        assert_eq!((r.offset, r.delay, r.precision), (0.5, 0.2, 1e-3));
        let r =
            parse("PHC /dev/ptp0:nocrossts:extpps:pin=1:channel=2:clear poll 0 dpoll -2 prefer")
                .expect("valid");
        assert_eq!(
            r.driver,
            RefclockDriver::Phc {
                device: "/dev/ptp0".into(),
                nocrossts: true,
                extpps: true,
                pin: 1,
                channel: 2,
                clear: true
            }
        );
        assert_eq!((r.poll, r.dpoll, r.prefer), (0, -2, true));
        // chrony's way of saying the channel's pin is fixed.
        let r = parse("PHC /dev/ptp1:extpps:pin=-1").expect("valid");
        assert!(matches!(r.driver, RefclockDriver::Phc { pin: -1, .. }));
        assert!(parse("PHC /dev/ptp1:extpps:pin=-2").is_err());
        let r = parse("SOCK /run/chrony.ttyS0.sock refid PPS lock NMEA pps noselect trust")
            .expect("valid");
        assert_eq!(
            r.driver,
            RefclockDriver::Sock {
                path: "/run/chrony.ttyS0.sock".into()
            }
        );
        assert_eq!(r.lock, Some(*b"NMEA"));
        assert!(r.pps && r.noselect && r.trust);
    }

    #[test]
    fn dpoll_is_at_most_poll_for_polled_drivers() {
        assert_eq!(parse("SHM 0 poll 2 dpoll 3").expect("valid").dpoll, 2);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, needle) in [
            ("SHM", "missing argument"),
            ("SHM x", "invalid segment \"x\""),
            ("SHM 0:perm=999", "invalid perm"),
            ("SHM 0:size=3", "invalid option \"size=3\" of SHM driver"),
            ("PPS /dev/pps0", "driver PPS is not supported yet"),
            ("GPSD 0", "invalid driver \"GPSD\""),
            ("SOCK relative.sock", "absolute socket path"),
            ("PHC /dev/ptp0:pin=x", "invalid pin"),
            ("SHM 0 poll 30", "invalid poll \"30\""),
            ("SHM 0 refid TOOLONG", "invalid refid"),
            ("SHM 0 filter x", "invalid filter"),
            ("SHM 0 stratum 16", "invalid stratum"),
            (
                "SHM 0 local",
                "option \"local\" of refclock directive is not supported yet",
            ),
            ("SHM 0 local", "not supported yet"),
            ("SHM 0 maxunreach 4", "not supported yet"),
            ("SHM 0 bogus", "invalid option \"bogus\""),
            ("SHM 0 offset", "missing value for offset"),
        ] {
            let e = parse(line).expect_err(line);
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
