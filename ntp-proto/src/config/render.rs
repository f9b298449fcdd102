//! The effective configuration in chrony.conf syntax (`ntpxd -p`).

use super::{Config, RefclockConfig, RefclockDriver, RxFilter, SourceKind};
use crate::acl::{Action, Target};
use std::fmt::Write;

/// A `refclock` line: the driver, then every option (defaults included).
fn refclock_line(r: &RefclockConfig) -> String {
    let driver = match &r.driver {
        RefclockDriver::Shm { segment, perm } => format!("SHM {segment}:perm={perm:04o}"),
        RefclockDriver::Sock { path } => format!("SOCK {}", path.display()),
        RefclockDriver::Phc {
            device,
            nocrossts,
            extpps,
            pin,
            channel,
            clear,
        } => {
            let mut d = format!("PHC {device}");
            for (on, word) in [
                (*nocrossts, ":nocrossts"),
                (*extpps, ":extpps"),
                (*clear, ":clear"),
            ] {
                if on {
                    d += word;
                }
            }
            if *extpps {
                d += &format!(":pin={pin}:channel={channel}");
            }
            d
        }
    };
    let mut line = format!(
        "refclock {driver} poll {} dpoll {} filter {} offset {} delay {} precision {} \
         maxdispersion {} stratum {} rate {} maxlockage {} width {}",
        r.poll,
        r.dpoll,
        r.filter,
        r.offset,
        r.delay,
        r.precision,
        r.max_dispersion,
        r.stratum,
        r.rate,
        r.max_lock_age,
        r.width
    );
    for (id, word) in [(r.refid, "refid"), (r.lock, "lock")] {
        if let Some(id) = id {
            line += &format!(" {word} {}", crate::refclock::refid_name(id));
        }
    }
    for (on, word) in [
        (r.pps, "pps"),
        (r.prefer, "prefer"),
        (r.noselect, "noselect"),
        (r.trust, "trust"),
        (r.require, "require"),
        (r.tai, "tai"),
    ] {
        if on {
            line += &format!(" {word}");
        }
    }
    if let Some(n) = r.min_samples {
        line += &format!(" minsamples {n}");
    }
    if let Some(n) = r.max_samples {
        line += &format!(" maxsamples {n}");
    }
    line
}

/// Every setting in force, one directive per line, defaults included.
pub fn render(c: &Config) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let mut w = |line: String| {
        let _ = writeln!(o, "{line}");
    };
    for s in &c.sources {
        let kind = match s.kind {
            SourceKind::Server => "server",
            SourceKind::Pool => "pool",
        };
        let mut line = format!(
            "{kind} {} minpoll {} maxpoll {}",
            s.name, s.minpoll, s.maxpoll
        );
        if s.port != 123 {
            line += &format!(" port {}", s.port);
        }
        for (on, word) in [
            (s.iburst, "iburst"),
            (s.prefer, "prefer"),
            (s.noselect, "noselect"),
        ] {
            if on {
                line += &format!(" {word}");
            }
        }
        for (on, word) in [(s.trust, "trust"), (s.require, "require")] {
            if on {
                line += &format!(" {word}");
            }
        }
        if s.kind == SourceKind::Pool {
            line += &format!(" maxsources {}", s.maxsources);
        }
        // Only what differs from chrony's defaults, so a rendered line reads like its source.
        for (value, default, word) in [
            (f64::from(s.polltarget), 8.0, "polltarget"),
            (s.max_delay, 3.0, "maxdelay"),
            (s.max_delay_ratio, 0.0, "maxdelayratio"),
            (s.max_delay_dev_ratio, 10.0, "maxdelaydevratio"),
        ] {
            if value != default {
                line += &format!(" {word} {value}");
            }
        }
        if let Some(n) = s.min_samples {
            line += &format!(" minsamples {n}");
        }
        if let Some(n) = s.max_samples {
            line += &format!(" maxsamples {n}");
        }
        if let Some(a) = s.asymmetry {
            line += &format!(" asymmetry {a}");
        }
        if s.offset != 0.0 {
            line += &format!(" offset {}", s.offset);
        }
        if let Some(n) = s.filter {
            line += &format!(" filter {n}");
        }
        if s.min_stratum != 0 {
            line += &format!(" minstratum {}", s.min_stratum);
        }
        if let Some(k) = s.key {
            line += &format!(" key {k}");
        }
        if s.nts {
            line += " nts";
            if s.nts_port != crate::nts::KE_PORT {
                line += &format!(" ntsport {}", s.nts_port);
            }
            if s.certset != 0 {
                line += &format!(" certset {}", s.certset);
            }
        }
        w(line);
    }
    for r in &c.refclocks {
        w(refclock_line(r));
    }
    for h in &c.hwtimestamp {
        let filter = match h.rx_filter {
            RxFilter::Any => "",
            RxFilter::All => " rxfilter all",
            RxFilter::Ntp => " rxfilter ntp",
            RxFilter::Ptp => " rxfilter ptp",
            RxFilter::None => " rxfilter none",
        };
        w(format!(
            "hwtimestamp {} minpoll {} maxpoll {} minsamples {} maxsamples {} precision {} \
             txcomp {} rxcomp {}{}{filter}",
            h.iface,
            h.minpoll,
            h.maxpoll,
            h.min_samples,
            h.max_samples,
            h.precision,
            h.tx_comp,
            h.rx_comp,
            if h.nocrossts { " nocrossts" } else { "" }
        ));
    }
    let sync = &c.sync;
    if let Some((t, l)) = sync.makestep {
        w(format!("makestep {t} {l}"));
    }
    w(format!("maxdistance {}", sync.max_distance));
    w(format!("minsources {}", sync.min_sources));
    w(format!("maxslewrate {}", sync.max_slew_rate_ppm));
    w(format!("reselectdist {}", sync.reselect_distance));
    w(format!("combinelimit {}", sync.combine_limit));
    w(format!("maxupdateskew {}", sync.max_update_skew_ppm));
    w(format!("corrtimeratio {}", sync.corr_time_ratio));
    w(format!("maxclockerror {}", sync.max_clock_error_ppm));
    w(format!("maxdrift {}", sync.max_drift_ppm));
    w(format!("maxjitter {}", sync.max_jitter));
    w(format!("stratumweight {}", sync.stratum_weight));
    w(format!("logchange {}", sync.log_change));
    w(format!("minstratum {}", sync.min_stratum));
    w(format!("maxstratum {}", sync.max_stratum));
    if let Some((o, start, ignore)) = sync.max_change {
        w(format!("maxchange {o} {start} {ignore}"));
    }
    if let Some(n) = sync.min_samples {
        w(format!("minsamples {n}"));
    }
    if let Some(n) = sync.max_samples {
        w(format!("maxsamples {n}"));
    }
    if sync.rtcsync {
        w("rtcsync".into());
    }
    if let Some(l) = &c.local {
        let mut line = format!(
            "local stratum {}{} distance {}",
            l.stratum,
            if l.orphan { " orphan" } else { "" },
            l.distance
        );
        if l.activate != 0.0 {
            line += &format!(" activate {}", l.activate);
        }
        if l.wait_synced != 0.0 {
            line += &format!(" waitsynced {}", l.wait_synced);
        }
        if let Some(w) = l.wait_unsynced {
            line += &format!(" waitunsynced {w}");
        }
        w(line);
    }
    let rules = c
        .acl_rules
        .iter()
        .map(|r| (r, ""))
        .chain(c.cmd_acl_rules.iter().map(|r| (r, "cmd")));
    for (r, prefix) in rules {
        let verb = match r.action {
            Action::Allow => format!("{prefix}allow"),
            Action::Deny => format!("{prefix}deny"),
        };
        let all = if r.all { " all" } else { "" };
        let target = match &r.target {
            Target::Everything => String::new(),
            Target::Subnet(s) => format!(" {s}"),
            Target::Name(n) => format!(" {n}"),
        };
        w(format!("{verb}{all}{target}"));
    }
    w(format!("port {}", c.port));
    for a in &c.bind_addresses {
        w(format!("bindaddress {a}"));
    }
    if let Some(p) = &c.driftfile {
        w(format!("driftfile {}", p.display()));
    }
    w(format!(
        "bindcmdaddress {}",
        c.cmd_socket
            .as_ref()
            .map_or_else(|| "/".into(), |p| p.display().to_string())
    ));
    for a in &c.cmd_addresses {
        w(format!("bindcmdaddress {a}"));
    }
    w(format!("cmdport {}", c.cmdport));
    w(format!(
        "pidfile {}",
        c.pidfile
            .as_ref()
            .map_or_else(|| "/".into(), |p| p.display().to_string())
    ));
    w(format!("xdpstalelimit {}", c.xdp_stale_limit.as_secs_f64()));
    if let Some(r) = &c.ratelimit {
        w(format!(
            "ratelimit interval {} burst {} leak {} kod {}",
            (r.interval_ns as f64 * 1e-9).log2().round() as i32,
            r.burst,
            r.leak,
            r.kod
        ));
    }
    if let Some(r) = &c.nts_ratelimit {
        w(format!(
            "ntsratelimit interval {} burst {} leak {}",
            (r.interval_ns as f64 * 1e-9).log2().round() as i32,
            r.burst,
            r.leak
        ));
    }
    match c.client_log {
        Some(n) => w(format!(
            "clientloglimit {}",
            n * ntp_common::state::CLIENT_RECORD_BYTES
        )),
        None => w("noclientlog".into()),
    }
    for (set, path) in &c.nts_trusted_certs {
        w(match set {
            0 => format!("ntstrustedcerts {}", path.display()),
            n => format!("ntstrustedcerts {n} {}", path.display()),
        });
    }
    if !c.nts_system_certs {
        w("nosystemcert".to_string());
    }
    if c.nts_aeads != crate::nts::Aead::ALL {
        let ids: Vec<String> = c.nts_aeads.iter().map(|a| a.id().to_string()).collect();
        w(format!("ntsaeads {}", ids.join(" ")));
    }
    if c.nts_refresh != super::DEFAULT_NTS_REFRESH {
        w(format!("ntsrefresh {}", c.nts_refresh));
    }
    if let Some(k) = &c.keyfile {
        w(format!("keyfile {}", k.display()));
    }
    if let Some(z) = &c.leapsectz {
        w(format!("leapsectz {z}"));
    }
    if let Some(d) = &c.logdir {
        w(format!("logdir {}", d.display()));
    }
    if !c.logs.is_empty() {
        w(format!("log {}", c.logs.join(" ")));
    }
    if let Some(u) = &c.user {
        w(format!("user {u}"));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    #[test]
    fn rendered_configuration_parses_back_to_the_same() {
        let text = "pool p.example iburst maxsources 3\nserver 198.18.0.1 minpoll -4 maxpoll 2 prefer port 1123\nserver nts.example nts certset 2\nrefclock PHC /dev/ptp0:extpps:pin=1 poll 2 refid PPS lock NMEA pps prefer\nrefclock SHM 0 offset 0.5 delay 0.2 tai\nhwtimestamp eth0 rxfilter ntp nocrossts\nhwtimestamp * minpoll -2\n\
                    makestep 1 3\nrtcsync\nminsources 2\nlocal stratum 3 orphan\nallow 192.168.0.0/16\n\
                    deny all 192.168.7.0/24\nallow\ncmdallow 198.18.0.0/16\nport 4123\nbindaddress 198.18.0.1\n\
                    driftfile /var/lib/ntpx/drift\nbindcmdaddress /\npidfile /run/x.pid\nxdpstalelimit 2.5\nuser ntpx\nlogdir /var/log/ntpx\nlog measurements tracking\nratelimit interval 2 burst 4 leak 3 kod 1\nntsratelimit interval 3 burst 1\n\
                    ntstrustedcerts /etc/a.pem\nntstrustedcerts 2 /etc/b.pem\nnosystemcert\nleapsectz right/UTC\nntsaeads 15\nntsrefresh 86400\n";
        let c = parse_str(text, Path::new("t.conf")).unwrap();
        let out = render(&c);
        let again = parse_str(&out, Path::new("rendered.conf")).unwrap();
        assert_eq!(again, c, "{out}");
        assert!(
            out.contains("server 198.18.0.1 minpoll -4 maxpoll 2 port 1123 prefer\n"),
            "{out}"
        );
        assert!(out.contains("deny all 192.168.7.0/24\n"));
        assert!(out.contains("bindcmdaddress /\n"));
        assert!(out.contains(" nts certset 2\n"), "{out}");
        assert!(
            out.contains("ntstrustedcerts 2 /etc/b.pem\nnosystemcert\n"),
            "{out}"
        );
    }
}
