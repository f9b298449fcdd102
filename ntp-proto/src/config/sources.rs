//! `server`/`pool` directives and the synchronization settings (`makestep`,
//! `maxdistance`, `minsources`, ...).

use super::{invalid, missing, option_value, parse_float, parse_uint};

/// Whether a source line names one server or a pool of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `server NAME`: one address.
    Server,
    /// `pool NAME`: up to `maxsources` addresses behind one name.
    Pool,
}

/// One `server` or `pool` line.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Server or pool.
    pub kind: SourceKind,
    /// Host name or address as written.
    pub name: String,
    /// Remote port (`port`, default 123).
    pub port: u16,
    /// Send a burst of requests at start (`iburst`).
    pub iburst: bool,
    /// Lowest poll exponent (`minpoll`, default 6; negative values poll faster than 1 s).
    pub minpoll: i8,
    /// Highest poll exponent (`maxpoll`, default 10).
    pub maxpoll: i8,
    /// Preferred among equally good sources (`prefer`).
    pub prefer: bool,
    /// Measured and shown but never selected (`noselect`).
    pub noselect: bool,
    /// Largest number of pool members used (`maxsources`, default 4, pools only).
    pub maxsources: usize,
    /// Samples the regression should hold at a steady poll (`polltarget`, default 8).
    pub polltarget: u32,
    /// `trust`: assumed right, its interval outvotes untrusted sources.
    pub trust: bool,
    /// `require`: nothing is selected unless this source (or another required one) agrees.
    pub require: bool,
    /// Samples with a longer round trip are dropped (`maxdelay`, default 3 s).
    pub max_delay: f64,
    /// Samples with a round trip more than this many times the shortest are dropped
    /// (`maxdelayratio`, 0: off).
    pub max_delay_ratio: f64,
    /// Samples whose extra delay exceeds this many standard deviations are dropped
    /// unless their offset says otherwise (`maxdelaydevratio`, default 10).
    pub max_delay_dev_ratio: f64,
    /// `minsamples` (default: the global one, else 6).
    pub min_samples: Option<usize>,
    /// `maxsamples` (default: the global one, else 64).
    pub max_samples: Option<usize>,
    /// `asymmetry`: the fixed share of delay variation on the way out (−0.5 to 0.5);
    /// `None` estimates it.
    pub asymmetry: Option<f64>,
    /// `offset`: seconds added to every measured offset (a known path asymmetry).
    pub offset: f64,
    /// `filter N`: the samples of N polls are combined into one (their median).
    pub filter: Option<usize>,
    /// `minstratum`: the source's stratum is taken to be at least this (a backup source).
    pub min_stratum: u8,
    /// `key N`: every exchange authenticated with key N of the keyfile.
    pub key: Option<u32>,
    /// `nts`: every exchange authenticated with NTS (RFC 8915).
    pub nts: bool,
    /// `ntsport`: the NTS-KE port (default 4460).
    pub nts_port: u16,
    /// `certset`: the set of trusted certificates the NTS-KE server's is checked
    /// against (`ntstrustedcerts`; default 0).
    pub certset: u32,
    /// Line of the directive, for log messages.
    pub line: usize,
    /// Read from a `sourcedir` file (reloaded by `ntpxc reload sources`).
    pub from_sourcedir: bool,
}

/// Poll exponent limits chrony accepts.
const MIN_POLL_LIMIT: i8 = -7;
const MAX_POLL_LIMIT: i8 = 24;

/// Options chrony documents for server/pool that ntpx accepts without acting on yet:
/// (name, takes a value).
const IGNORED_OPTIONS: &[(&str, bool)] = &[
    ("auto_offline", false),
    ("burst", false),
    ("copy", false),
    ("extfield", true),
    ("ipv4", false),
    ("ipv6", false),
    ("maxdelayquant", true),
    ("mindelay", true),
    ("offline", false),
    ("presend", true),
    ("version", true),
    ("xleave", false),
];

/// Parses the arguments of a `server`/`pool` line; warnings name ignored options.
pub(super) fn parse_source(
    kind: SourceKind,
    line: usize,
    args: &[&str],
) -> Result<(SourceConfig, Vec<String>), String> {
    let directive = match kind {
        SourceKind::Server => "server",
        SourceKind::Pool => "pool",
    };
    const POLL: &str = "an integer from -7 to 24";
    let Some((&name, options)) = args.split_first() else {
        return Err(missing(directive, "a host name or address"));
    };
    let mut s = SourceConfig {
        kind,
        name: name.to_string(),
        port: 123,
        iburst: false,
        minpoll: 6,
        maxpoll: 10,
        prefer: false,
        noselect: false,
        maxsources: 4,
        polltarget: 8,
        trust: false,
        require: false,
        max_delay: 3.0,
        max_delay_ratio: 0.0,
        max_delay_dev_ratio: 10.0,
        min_samples: None,
        max_samples: None,
        asymmetry: None,
        offset: 0.0,
        filter: None,
        min_stratum: 0,
        key: None,
        nts: false,
        nts_port: crate::nts::KE_PORT,
        certset: 0,
        line,
        from_sourcedir: false,
    };
    let mut warnings = Vec::new();
    let mut rest = options.iter();
    while let Some(&option) = rest.next() {
        let lower = option.to_ascii_lowercase();
        match lower.as_str() {
            "iburst" => s.iburst = true,
            "prefer" => s.prefer = true,
            "noselect" => s.noselect = true,
            "trust" => s.trust = true,
            "require" => s.require = true,
            "maxdelay" | "maxdelayratio" | "maxdelaydevratio" | "asymmetry" | "offset" => {
                let (expected, ok): (&str, fn(f64) -> bool) = match lower.as_str() {
                    "maxdelay" => ("a positive number of seconds", |x| x > 0.0),
                    "maxdelayratio" => ("a number, 1 or more (0: off)", |x| x == 0.0 || x >= 1.0),
                    "maxdelaydevratio" => ("a positive number", |x| x > 0.0),
                    "asymmetry" => ("a number from -0.5 to 0.5", |x| x.abs() <= 0.5),
                    _ => ("a number of seconds", |x| x.abs() < 1e6),
                };
                let v = option_value(&mut rest, &lower, directive, expected)?;
                let x = parse_float(v)
                    .filter(|x| ok(*x))
                    .ok_or_else(|| invalid(&lower, v, directive, expected))?;
                match lower.as_str() {
                    "maxdelay" => s.max_delay = x,
                    "maxdelayratio" => s.max_delay_ratio = x,
                    "maxdelaydevratio" => s.max_delay_dev_ratio = x,
                    "asymmetry" => s.asymmetry = Some(x),
                    _ => s.offset = x,
                }
            }
            "minsamples" | "maxsamples" | "polltarget" => {
                const COUNT: &str = "an integer 1-64";
                let v = option_value(&mut rest, &lower, directive, COUNT)?;
                let n = parse_uint::<usize>(v)
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| invalid(&lower, v, directive, COUNT))?;
                match lower.as_str() {
                    "minsamples" => s.min_samples = Some(n),
                    "maxsamples" => s.max_samples = Some(n),
                    _ => s.polltarget = n as u32,
                }
            }
            "key" => {
                const KEY: &str = "a key number 1-4294967295";
                let v = option_value(&mut rest, "key", directive, KEY)?;
                s.key = Some(
                    parse_uint::<u32>(v)
                        .filter(|k| *k > 0)
                        .ok_or_else(|| invalid("key", v, directive, KEY))?,
                );
            }
            "nts" => s.nts = true,
            "ntsport" => {
                const PORT: &str = "a port number";
                let v = option_value(&mut rest, "ntsport", directive, PORT)?;
                s.nts_port = parse_uint::<u16>(v)
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid("ntsport", v, directive, PORT))?;
            }
            "certset" => {
                const SET: &str = "a certificate set 0-4294967295";
                let v = option_value(&mut rest, "certset", directive, SET)?;
                s.certset =
                    parse_uint::<u32>(v).ok_or_else(|| invalid("certset", v, directive, SET))?;
            }
            "minstratum" => {
                const STRATUM: &str = "an integer 0-15";
                let v = option_value(&mut rest, "minstratum", directive, STRATUM)?;
                s.min_stratum = parse_uint::<u8>(v)
                    .filter(|n| *n <= 15)
                    .ok_or_else(|| invalid("minstratum", v, directive, STRATUM))?;
            }
            "filter" => {
                const POLLS: &str = "a number of polls, 1-256";
                let v = option_value(&mut rest, "filter", directive, POLLS)?;
                let n = parse_uint::<usize>(v)
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| invalid("filter", v, directive, POLLS))?;
                s.filter = Some(n);
            }
            "minpoll" | "maxpoll" => {
                let v = option_value(&mut rest, &lower, directive, POLL)?;
                let p = v
                    .parse::<i8>()
                    .ok()
                    .filter(|p| (MIN_POLL_LIMIT..=MAX_POLL_LIMIT).contains(p))
                    .ok_or_else(|| invalid(&lower, v, directive, POLL))?;
                if lower == "minpoll" {
                    s.minpoll = p;
                } else {
                    s.maxpoll = p;
                }
            }
            "port" => {
                let v = option_value(&mut rest, "port", directive, "a port number 1-65535")?;
                s.port = parse_uint::<u16>(v)
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid("port", v, directive, "a port number 1-65535"))?;
            }
            "maxsources" if kind == SourceKind::Pool => {
                let v = option_value(&mut rest, "maxsources", directive, "an integer 1-16")?;
                s.maxsources = parse_uint::<usize>(v)
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| invalid("maxsources", v, directive, "an integer 1-16"))?;
            }
            _ => match IGNORED_OPTIONS.iter().find(|(n, _)| *n == lower) {
                Some((_, takes_value)) => {
                    if *takes_value {
                        option_value(&mut rest, &lower, directive, "a value")?;
                    }
                    warnings.push(format!(
                        "option \"{option}\" of {directive} directive is not supported yet and is ignored"
                    ));
                }
                None => {
                    return Err(format!(
                        "unknown option \"{option}\" in {directive} directive"
                    ));
                }
            },
        }
    }
    if s.maxpoll < s.minpoll {
        // chrony raises maxpoll to minpoll rather than refusing the line.
        s.maxpoll = s.minpoll;
    }
    Ok((s, warnings))
}

/// Settings of the selection and steering loop.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// `makestep THRESHOLD LIMIT`: step if the offset exceeds THRESHOLD in the first LIMIT
    /// updates (LIMIT -1: always); `None`: never step.
    pub makestep: Option<(f64, i32)>,
    /// `maxdistance`: sources with a larger root distance are not selectable (default 3 s).
    pub max_distance: f64,
    /// `minsources`: selectable sources needed to update the clock (default 1).
    pub min_sources: usize,
    /// `maxslewrate` in ppm (default 83333.333).
    pub max_slew_rate_ppm: f64,
    /// `reselectdist` (default 100 us).
    pub reselect_distance: f64,
    /// `combinelimit` (default 3).
    pub combine_limit: f64,
    /// `maxupdateskew` in ppm (default 1000).
    pub max_update_skew_ppm: f64,
    /// `rtcsync`: let the kernel copy the system time to the RTC every 11 minutes.
    pub rtcsync: bool,
    /// `corrtimeratio` (default 3): how much longer than the update interval a correction
    /// as large as the estimate's error is spread over, times two.
    pub corr_time_ratio: f64,
    /// `maxclockerror` in ppm (default 1): how fast an unchecked clock may drift.
    pub max_clock_error_ppm: f64,
    /// `maxdrift` in ppm (default 500000, the kernel allows 100000).
    pub max_drift_ppm: f64,
    /// `maxjitter` (default 1 s): sources with more jitter are not selectable.
    pub max_jitter: f64,
    /// `stratumweight` (default 1 ms of distance per stratum).
    pub stratum_weight: f64,
    /// `logchange` (default 1 s): corrections larger than this are logged as warnings.
    pub log_change: f64,
    /// `minstratum`: sources of a lower stratum are not selectable (default 0).
    pub min_stratum: u8,
    /// Global `minsamples`.
    pub min_samples: Option<usize>,
    /// Global `maxsamples`.
    pub max_samples: Option<usize>,
    /// `maxstratum`: sources of a higher stratum are not selectable (default 15).
    pub max_stratum: u8,
    /// `maxchange OFFSET START IGNORE`: after START updates, corrections larger than
    /// OFFSET seconds are ignored IGNORE times, then the daemon exits (IGNORE < 0: never).
    pub max_change: Option<(f64, i32, i32)>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            makestep: None,
            max_distance: 3.0,
            min_sources: 1,
            max_slew_rate_ppm: 83333.333,
            reselect_distance: 1e-4,
            combine_limit: 3.0,
            max_update_skew_ppm: 1000.0,
            rtcsync: false,
            corr_time_ratio: 3.0,
            max_clock_error_ppm: 1.0,
            max_drift_ppm: 500_000.0,
            max_jitter: 1.0,
            stratum_weight: 1e-3,
            log_change: 1.0,
            min_stratum: 0,
            min_samples: None,
            max_samples: None,
            max_stratum: 15,
            max_change: None,
        }
    }
}

/// Applies one synchronization directive; `false` if `name` is not one of them.
pub(super) fn sync_directive(
    cfg: &mut SyncConfig,
    name: &str,
    args: &[&str],
) -> Result<bool, String> {
    let one_float = |what: &str, expected: &str, ok: &dyn Fn(f64) -> bool| -> Result<f64, String> {
        match args {
            [v] => parse_float(v)
                .filter(|x| ok(*x))
                .ok_or_else(|| invalid(what, v, name, expected)),
            [] => Err(missing(name, expected)),
            [_, extra, ..] => Err(format!(
                "unexpected argument \"{extra}\" in {name} directive (expected only {expected})"
            )),
        }
    };
    match name {
        "makestep" => {
            const EXPECTED: &str = "a threshold in seconds and an update limit (-1 for no limit)";
            let [thr, limit] = args else {
                return Err(format!(
                    "makestep directive needs two arguments ({EXPECTED})"
                ));
            };
            let t = parse_float(thr).filter(|t| *t >= 0.0).ok_or_else(|| {
                invalid("threshold", thr, name, "a non-negative number of seconds")
            })?;
            let l = limit
                .parse::<i32>()
                .ok()
                .filter(|l| *l >= -1)
                .ok_or_else(|| invalid("limit", limit, name, "an integer, -1 for no limit"))?;
            cfg.makestep = Some((t, l));
        }
        "maxdistance" => {
            cfg.max_distance = one_float("distance", "a positive number of seconds", &|x| x > 0.0)?;
        }
        "minsources" => {
            let [v] = args else {
                return Err(missing(name, "a positive integer"));
            };
            cfg.min_sources = parse_uint::<usize>(v)
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("count", v, name, "a positive integer"))?;
        }
        "maxslewrate" => {
            cfg.max_slew_rate_ppm = one_float("rate", "a rate in ppm up to 500000", &|x| {
                x > 0.0 && x <= 500_000.0
            })?;
        }
        "reselectdist" => {
            cfg.reselect_distance =
                one_float("distance", "a non-negative number of seconds", &|x| {
                    x >= 0.0
                })?;
        }
        "combinelimit" => {
            cfg.combine_limit = one_float("limit", "a non-negative number", &|x| x >= 0.0)?;
        }
        "maxupdateskew" => {
            cfg.max_update_skew_ppm = one_float("skew", "a positive number in ppm", &|x| x > 0.0)?;
        }
        "corrtimeratio" => {
            cfg.corr_time_ratio = one_float("ratio", "a positive number", &|x| x > 0.0)?;
        }
        "maxclockerror" => {
            cfg.max_clock_error_ppm =
                one_float("error", "a non-negative number in ppm", &|x| x >= 0.0)?;
        }
        "maxdrift" => {
            cfg.max_drift_ppm = one_float("drift", "a positive number in ppm", &|x| x > 0.0)?;
        }
        "maxjitter" => {
            cfg.max_jitter = one_float("jitter", "a positive number of seconds", &|x| x > 0.0)?;
        }
        "stratumweight" => {
            cfg.stratum_weight =
                one_float("weight", "a non-negative number of seconds", &|x| x >= 0.0)?;
        }
        "logchange" => {
            cfg.log_change = one_float("threshold", "a positive number of seconds", &|x| x > 0.0)?;
        }
        "maxchange" => {
            const EXPECTED: &str = "an offset in seconds, a number of updates and a number of \
                                    ignored corrections (-1: never exit)";
            let [offset, start, ignore] = args else {
                return Err(format!(
                    "maxchange directive needs three arguments ({EXPECTED})"
                ));
            };
            let o = parse_float(offset)
                .filter(|x| *x > 0.0)
                .ok_or_else(|| invalid("offset", offset, name, "a positive number of seconds"))?;
            let int = |what: &str, v: &str| {
                v.parse::<i32>()
                    .map_err(|_| invalid(what, v, name, "an integer"))
            };
            cfg.max_change = Some((o, int("start", start)?, int("ignore", ignore)?));
        }
        "maxstratum" => {
            let [v] = args else {
                return Err(missing(name, "an integer 0-15"));
            };
            cfg.max_stratum = parse_uint::<u8>(v)
                .filter(|n| *n <= 15)
                .ok_or_else(|| invalid("value", v, name, "an integer 0-15"))?;
        }
        "minstratum" | "minsamples" | "maxsamples" => {
            const COUNT: &str = "an integer 0-64";
            let [v] = args else {
                return Err(missing(name, COUNT));
            };
            let n = parse_uint::<usize>(v)
                .filter(|n| *n <= 64)
                .ok_or_else(|| invalid("value", v, name, COUNT))?;
            match name {
                "minstratum" => cfg.min_stratum = n.min(15) as u8,
                "minsamples" => cfg.min_samples = Some(n.max(1)),
                _ => cfg.max_samples = Some(n.max(1)),
            }
        }
        "rtcsync" => {
            if let Some(extra) = args.first() {
                return Err(format!(
                    "unexpected argument \"{extra}\" in rtcsync directive"
                ));
            }
            cfg.rtcsync = true;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(args: &[&str]) -> Result<(SourceConfig, Vec<String>), String> {
        parse_source(SourceKind::Server, 7, args)
    }

    #[test]
    fn server_options_are_read() {
        let (s, w) = server(&[
            "ntp1", "iburst", "minpoll", "-4", "maxpoll", "-2", "prefer", "port", "1123",
        ])
        .unwrap();
        assert_eq!(
            (
                s.name.as_str(),
                s.iburst,
                s.minpoll,
                s.maxpoll,
                s.prefer,
                s.port
            ),
            ("ntp1", true, -4, -2, true, 1123)
        );
        assert!(w.is_empty());
        let (d, _) = server(&["ntp2"]).unwrap();
        assert_eq!(
            (d.minpoll, d.maxpoll, d.port, d.iburst, d.noselect),
            (6, 10, 123, false, false)
        );
        let (n, _) = server(&["ntp3", "noselect", "minpoll", "8", "maxpoll", "4"]).unwrap();
        assert!(n.noselect);
        assert_eq!((n.minpoll, n.maxpoll), (8, 8));
    }

    #[test]
    fn filter_takes_a_number_of_polls() {
        let (s, w) = server(&["ntp1", "filter", "15"]).unwrap();
        assert_eq!((s.filter, w.len()), (Some(15), 0));
        assert_eq!(server(&["ntp1"]).unwrap().0.filter, None);
    }

    #[test]
    fn pool_maxsources_and_ignored_options() {
        let (p, w) = parse_source(
            SourceKind::Pool,
            1,
            &[
                "pool.example",
                "iburst",
                "maxsources",
                "3",
                "presend",
                "5",
                "xleave",
            ],
        )
        .unwrap();
        assert_eq!((p.kind, p.maxsources), (SourceKind::Pool, 3));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("\"presend\""));
    }

    #[test]
    fn certset_keys_nts_and_minstratum_are_read() {
        let s = server(&["ntp1", "nts", "ntsport", "4461"]).unwrap().0;
        assert!(s.nts && s.nts_port == 4461 && s.certset == 0);
        let s = server(&["ntp1", "nts", "certset", "7"]).unwrap().0;
        assert_eq!(s.certset, 7);
        for bad in ["x", "-1", "4294967296"] {
            assert!(server(&["ntp1", "certset", bad]).is_err(), "certset {bad}");
        }
        assert!(server(&["ntp1", "certset"]).is_err());
        assert_eq!(server(&["ntp1", "key", "5"]).unwrap().0.key, Some(5));
        for bad in ["0", "x", "4294967296"] {
            assert!(server(&["ntp1", "key", bad]).is_err(), "key {bad}");
        }
        assert_eq!(
            server(&["ntp1", "minstratum", "4"]).unwrap().0.min_stratum,
            4
        );
        assert!(server(&["ntp1", "minstratum", "16"]).is_err());
    }

    #[test]
    fn bad_source_lines_are_errors() {
        for (args, expect) in [
            (&[][..], "missing argument in server directive"),
            (&["a", "minpoll"][..], "missing value for minpoll"),
            (&["a", "minpoll", "x"][..], "invalid minpoll \"x\""),
            (&["a", "maxpoll", "25"][..], "invalid maxpoll \"25\""),
            (&["a", "port", "0"][..], "invalid port \"0\""),
            (&["a", "filter", "0"][..], "invalid filter \"0\""),
            (&["a", "filter", "257"][..], "invalid filter \"257\""),
            (&["a", "bogus"][..], "unknown option \"bogus\""),
            (
                &["a", "maxsources", "2"][..],
                "unknown option \"maxsources\" in server",
            ),
        ] {
            let e = server(args).unwrap_err();
            assert!(e.contains(expect), "{args:?}: {e}");
        }
    }

    #[test]
    fn sync_directives() {
        let mut c = SyncConfig::default();
        assert!(sync_directive(&mut c, "makestep", &["1.0", "3"]).unwrap());
        assert!(sync_directive(&mut c, "maxdistance", &["1.5"]).unwrap());
        assert!(sync_directive(&mut c, "minsources", &["2"]).unwrap());
        assert!(sync_directive(&mut c, "rtcsync", &[]).unwrap());
        assert!(!sync_directive(&mut c, "local", &[]).unwrap());
        assert_eq!(c.makestep, Some((1.0, 3)));
        assert_eq!((c.max_distance, c.min_sources, c.rtcsync), (1.5, 2, true));
        for (name, args, expect) in [
            ("makestep", &["1"][..], "needs two arguments"),
            ("makestep", &["x", "3"][..], "invalid threshold \"x\""),
            ("makestep", &["1", "-2"][..], "invalid limit \"-2\""),
            ("minsources", &["0"][..], "invalid count \"0\""),
            ("maxslewrate", &["600000"][..], "invalid rate"),
            ("rtcsync", &["yes"][..], "unexpected argument"),
        ] {
            let e = sync_directive(&mut c, name, args).unwrap_err();
            assert!(e.contains(expect), "{name} {args:?}: {e}");
        }
    }
}
