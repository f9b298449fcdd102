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
    ("asymmetry", true),
    ("auto_offline", false),
    ("burst", false),
    ("certset", true),
    ("copy", false),
    ("extfield", true),
    ("filter", true),
    ("ipv4", false),
    ("ipv6", false),
    ("key", true),
    ("maxdelay", true),
    ("maxdelaydevratio", true),
    ("maxdelayquant", true),
    ("maxdelayratio", true),
    ("maxsamples", true),
    ("mindelay", true),
    ("minsamples", true),
    ("minstratum", true),
    ("nts", false),
    ("offline", false),
    ("offset", true),
    ("polltarget", true),
    ("presend", true),
    ("require", false),
    ("trust", false),
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
    fn pool_maxsources_and_ignored_options() {
        let (p, w) = parse_source(
            SourceKind::Pool,
            1,
            &[
                "pool.example",
                "iburst",
                "maxsources",
                "3",
                "key",
                "5",
                "xleave",
            ],
        )
        .unwrap();
        assert_eq!((p.kind, p.maxsources), (SourceKind::Pool, 3));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("\"key\""));
    }

    #[test]
    fn bad_source_lines_are_errors() {
        for (args, expect) in [
            (&[][..], "missing argument in server directive"),
            (&["a", "minpoll"][..], "missing value for minpoll"),
            (&["a", "minpoll", "x"][..], "invalid minpoll \"x\""),
            (&["a", "maxpoll", "25"][..], "invalid maxpoll \"25\""),
            (&["a", "port", "0"][..], "invalid port \"0\""),
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
