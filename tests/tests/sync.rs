//! ntpxd -x following real upstream servers in network namespaces (needs root).
//!
//! Every namespace shares the machine's one clock, so the truth is known: an upstream that
//! serves the system clock is exactly right, and ntpx-testserver is wrong by exactly what
//! it was told.

use anyhow::{Context, Result, bail};
use ntpx_tests::{
    Lan, Netns, Ntpxd, Proc, SeedTopology, bin, chronyc, chronyd, ntpdig_best, wait_until, xdp_pass,
};
use std::time::{Duration, Instant};

/// Parses "0.000001234 seconds fast of NTP time" / "12.345 ppm slow" to a signed number
/// (fast positive).
fn signed_fast_slow(v: &str) -> Result<f64> {
    let mut t = v.split_whitespace();
    let x: f64 = t.next().context("number")?.parse()?;
    Ok(if v.contains("slow") { -x } else { x })
}

const FAST_POLL: &str = "iburst minpoll -4 maxpoll -4";

#[test]
fn ntpxd_selects_chronyd_and_serves_stratum_3() -> Result<()> {
    if !ntpx_tests::privileged("ntpxd_selects_chronyd_and_serves_stratum_3") {
        return Ok(());
    }
    let mut lan = Lan::new(40)?;
    let up = Netns::new("up")?;
    let srv = Netns::new("srv")?;
    let cli = Netns::new("cli")?;
    let (_, up_ip) = lan.join(&up, 1)?;
    let (srv_if, srv_ip) = lan.join(&srv, 2)?;
    lan.join(&cli, 3)?;
    let _pass = xdp_pass(lan.hub(), lan.hub_if(2).context("hub if")?)?;
    let (_up, _dir, _sock) = chronyd(&up, "local stratum 2\nallow all")?;
    let logs = ntpx_tests::TempDir::new("logs")?;
    let mut d = Ntpxd::start(
        &srv,
        // The same upstream over IPv4 (preferred) and IPv6.
        &format!(
            "server {up_ip} {FAST_POLL} prefer\nserver fd00:198:18:40::1 {FAST_POLL}\nallow all\n\
             logdir {}\nlog measurements statistics tracking",
            logs.path().display()
        ),
        &["-i", &srv_if],
    )?;
    let start = Instant::now();
    wait_until(Duration::from_secs(30), "ntpxd to select chronyd", || {
        d.selected().filter(|s| *s == up_ip)
    })
    .with_context(|| d.proc.log())?;
    // As in chrony, `prefer` leaves the others out of the combination ('-').
    wait_until(
        Duration::from_secs(10),
        "the IPv6 source to be measured and not preferred",
        || {
            d.sources()
                .iter()
                .any(|s| s.name == "fd00:198:18:40::1" && s.state == "-" && s.stratum == 2)
                .then_some(())
        },
    )
    .with_context(|| d.ntpxc(&["sources"]).unwrap_or_default())?;
    println!("selected after {:?}", start.elapsed());
    // The log line follows the state change by a moment.
    d.proc
        .wait_for_log(&format!("Selected source {up_ip}"), Duration::from_secs(5))?;
    assert_eq!(d.tracking("Stratum")?, "3");
    let s = d.sources();
    assert_eq!(s[0].stratum, 2, "upstream stratum");
    assert!(
        s[0].measured.abs() < 0.001,
        "offset to chronyd {} s",
        s[0].measured
    );
    // The rest of chronyc's commands against the live daemon.
    let np = |d: &Ntpxd| -> Option<usize> {
        let stats = d.ntpxc(&["sourcestats"]).ok()?;
        let row = stats.lines().nth(2)?;
        row.starts_with(up_ip.as_str())
            .then(|| row.split_whitespace().nth(1)?.parse().ok())?
    };
    wait_until(
        Duration::from_secs(10),
        "eight samples in sourcestats",
        || np(&d).filter(|n| *n >= 8),
    )
    .with_context(|| d.ntpxc(&["sourcestats"]).unwrap_or_default())?;
    assert!(
        d.ntpxc(&["sourcestats", "-v"])?
            .contains("Number of sample points")
    );
    assert!(
        d.ntpxc(&["activity"])?
            .contains("2 sources online\n0 sources offline")
    );
    assert_eq!(d.ntpxc(&["burst"])?, "200 OK\n");
    let sd = d.ntpxc(&["selectdata", "-v"])?;
    let line = sd
        .lines()
        .find(|l| l.contains(up_ip.as_str()))
        .context("selectdata row")?;
    assert!(
        line.starts_with("* ") && line.contains(" N -P--- -P--- "),
        "{sd}"
    );
    let nd = d.ntpxc(&["ntpdata", &up_ip])?;
    assert!(
        nd.contains("Remote address  : 198.18.40.1 (C6122801)")
            && nd.contains("Stratum         : 2"),
        "{nd}"
    );
    assert!(
        nd.contains("TX timestamping : Kernel\nRX timestamping : Kernel"),
        "{nd}"
    );
    assert_eq!(d.ntpxc(&["makestep"])?, "200 OK\n");
    assert_eq!(d.ntpxc(&["offline", &up_ip])?, "200 OK\n");
    assert!(
        d.ntpxc(&["activity"])?
            .contains("1 sources online\n1 sources offline")
    );
    assert_eq!(d.ntpxc(&["online"])?, "200 OK\n");
    assert!(
        d.ntpxc(&["activity"])?
            .contains("2 sources online\n0 sources offline")
    );
    assert!(
        d.ntpxc(&["offline", "203.0.113.1"]).is_err(),
        "unknown source"
    );
    assert_eq!(d.ntpxc(&["makestep", "0.5", "-1"])?, "200 OK\n");
    let waited = d.ntpxc(&["waitsync", "10", "0.01", "0", "0.2"])?;
    assert!(waited.starts_with("try: 1, refid: C6122801"), "{waited}");
    // CSV output parses, with the same values the aligned reports show.
    let csv = d.ntpxc(&["-c", "tracking"])?;
    assert_eq!(csv.trim_end().split(',').count(), 14, "{csv}");
    assert_eq!(csv.split(',').nth(2), Some("3"), "stratum: {csv}");
    for (cmd, fields) in [
        ("sourcestats", 8),
        ("selectdata", 10),
        ("activity", 5),
        ("sources", 10),
        ("serverstats", 24),
    ] {
        let out = d.ntpxc(&["-c", cmd])?;
        for line in out.lines() {
            assert_eq!(line.split(',').count(), fields, "{cmd}: {line}");
        }
    }
    let (out, err) = d.ntpxc_interactive("tracking\n\nbogus\nsources -v\nquit\nactivity\n")?;
    assert!(
        out.contains("Reference ID    : C6122801") && out.contains("Source mode"),
        "{out}"
    );
    assert!(
        !out.contains("sources online"),
        "commands after quit ran: {out}"
    );
    assert!(err.contains("bogus"), "{err}");
    for (file, column) in [
        ("measurements.log", "Peer del."),
        ("statistics.log", "Est offset"),
        ("tracking.log", "Rem. corr."),
    ] {
        let text =
            std::fs::read_to_string(logs.path().join(file)).with_context(|| file.to_string())?;
        assert!(
            text.lines().nth(1).is_some_and(|l| l.contains(column)),
            "{file}:\n{text}"
        );
        assert!(text.lines().any(|l| l.contains(&up_ip)), "{file}:\n{text}");
    }
    let log = d.proc.log();
    assert!(
        log.contains("Burst requested on 2 sources") && log.contains("System clock was stepped by"),
        "{log}"
    );
    // Clients of ntpxd see stratum 3, answered by the kernel.
    let dig = ntpdig_best(&cli, &srv_ip, 3)?;
    assert_eq!(dig.stratum, 3, "{}", dig.line);
    assert!(d.stat("xdpstats", "answered")? >= 1);
    Ok(())
}

/// The seed's topology: upstream stratum 2, two stratum-3 ntpxd servers with the fast
/// path, a client ntpxd listing both; stopping the selected server fails over.
#[test]
fn failover_pair_serves_a_client_and_survives_losing_one_server() -> Result<()> {
    if !ntpx_tests::privileged("failover_pair_serves_a_client_and_survives_losing_one_server") {
        return Ok(());
    }
    let t = SeedTopology::new(41)?;
    let (up_ip, (a, a_if, a_ip), (b, b_if, b_ip)) = (&t.up.2, &t.time1, &t.time2);
    let (cli, dig) = (&t.client, &t.dig);
    let (_up, _dir, _sock) = chronyd(&t.up.0, "local stratum 2\nallow all")?;
    let server_conf = format!("server {up_ip} {FAST_POLL}\nallow all\nlocal stratum 10");
    let mut da = Some(Ntpxd::start(a, &server_conf, &["-i", a_if])?);
    let mut db = Some(Ntpxd::start(b, &server_conf, &["-i", b_if])?);
    let client = Ntpxd::start(
        cli,
        &format!("server {a_ip} {FAST_POLL}\nserver {b_ip} {FAST_POLL}\nport 0"),
        &["--no-xdp"],
    )?;
    for d in [da.as_ref(), db.as_ref()].into_iter().flatten() {
        wait_until(Duration::from_secs(30), "servers to sync", || d.selected())
            .with_context(|| d.proc.log())?;
    }
    let first = wait_until(
        Duration::from_secs(30),
        "the client to select a server",
        || {
            let s = client.sources();
            // Both servers at stratum 3 and one selected.
            (s.len() == 2 && s.iter().all(|x| x.stratum == 3)).then(|| client.selected())?
        },
    )
    .with_context(|| client.proc.log())?;
    println!(
        "client selected {first}; sources:\n{}",
        client.ntpxc(&["sources"])?
    );
    assert_eq!(client.tracking("Stratum")?, "4");
    // Stop whichever server is selected now (it may have changed since).
    let first = client.selected().context("the client lost its selection")?;

    let (survivor, survivor_ip) = if first == *a_ip {
        da = None;
        (db.take(), b_ip.clone())
    } else {
        db = None;
        (da.take(), a_ip.clone())
    };
    let stopped = Instant::now();
    let next = wait_until(
        Duration::from_secs(30),
        "failover to the other server",
        || client.selected().filter(|s| *s == survivor_ip),
    )
    .with_context(|| client.proc.log())?;
    println!("failed over to {next} in {:?}", stopped.elapsed());
    let d = ntpdig_best(dig, &survivor_ip, 3)?;
    assert_eq!(d.stratum, 3, "surviving server: {}", d.line);
    assert!(survivor.context("survivor")?.stat("xdpstats", "answered")? > 0);
    let _ = (da, db);
    Ok(())
}

/// ntpxd -x and chronyd -x follow one upstream that is 25 ms ahead, drifting +40 ppm, with
/// 100 us of exponential queueing each way; both estimates are compared with the truth.
#[test]
fn injected_offset_and_drift_are_estimated() -> Result<()> {
    if !ntpx_tests::privileged("injected_offset_and_drift_are_estimated") {
        return Ok(());
    }
    const OFFSET: f64 = 0.025;
    const DRIFT_PPM: f64 = 40.0;
    const JITTER: f64 = 100e-6;
    let mut lan = Lan::new(42)?;
    let up = Netns::new("up")?;
    let x = Netns::new("ntpx")?;
    let c = Netns::new("chrony")?;
    let (_, up_ip) = lan.join(&up, 1)?;
    lan.join(&x, 2)?;
    lan.join(&c, 3)?;
    let mut cmd = up.command(bin("ntpx-testserver"));
    cmd.args([
        "--listen",
        &format!("{up_ip}:123"),
        "--offset",
        &OFFSET.to_string(),
    ])
    .args([
        "--drift",
        &DRIFT_PPM.to_string(),
        "--jitter",
        &JITTER.to_string(),
    ]);
    let mut server = Proc::spawn("testserver", cmd)?;
    server.wait_for_log("listening", Duration::from_secs(10))?;
    let started = Instant::now();
    let line = format!("server {up_ip} iburst minpoll -3 maxpoll -3");
    let d = Ntpxd::start(&x, &format!("{line}\nport 0"), &["--no-xdp"])?;
    let (_chrony, _dir, sock) = chronyd(&c, &format!("{line}\nport 0"))?;
    std::thread::sleep(Duration::from_mins(1));
    let truth_offset = OFFSET + DRIFT_PPM * 1e-6 * started.elapsed().as_secs_f64();
    // "System time: X seconds slow of NTP time": the system clock is behind by the offset.
    let x_sys = signed_fast_slow(&d.tracking("System time")?)?;
    let x_freq = signed_fast_slow(&d.tracking("Frequency")?)?;
    let ct = chronyc(&c, &sock, &["tracking"])?;
    let grab = |label: &str| -> Result<f64> {
        let v = ct
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == label)
                    .map(|(_, v)| v.trim().to_string())
            })
            .with_context(|| format!("{label} in chronyc tracking:\n{ct}"))?;
        signed_fast_slow(&v)
    };
    let (c_sys, c_freq) = (grab("System time")?, grab("Frequency")?);
    let report = format!(
        "truth: system clock {:.6} s slow, {DRIFT_PPM:.3} ppm slow\n\
         ntpxd -x:   offset error {:+.6} s, frequency error {:+.3} ppm\n\
         chronyd -x: offset error {:+.6} s, frequency error {:+.3} ppm",
        truth_offset,
        x_sys + truth_offset,
        x_freq + DRIFT_PPM,
        c_sys + truth_offset,
        c_freq + DRIFT_PPM
    );
    println!("{report}");
    // The frequency read at one instant, at poll -3 with 100 µs of jitter, scatters by
    // about 5 ppm in both daemons (a regression over ~8 s of samples): 20 ppm is a 4σ bound
    // that still catches a wrong estimate (40 ppm off is the drift itself).
    if (x_sys + truth_offset).abs() > 0.001 || (x_freq + DRIFT_PPM).abs() > 20.0 {
        bail!(
            "ntpxd's estimate is off:\n{report}\n{}",
            d.ntpxc(&["tracking"])?
        );
    }
    Ok(())
}

/// A pool takes `maxsources` of the addresses its name resolves to and replaces a member
/// that falls silent with another.
#[test]
fn silent_pool_members_are_replaced() -> Result<()> {
    if !ntpx_tests::privileged("silent_pool_members_are_replaced") {
        return Ok(());
    }
    let mut lan = Lan::new(43)?;
    let cli = Netns::new("cli")?;
    lan.join(&cli, 9)?;
    let mut servers: Vec<(Netns, String, Option<Proc>)> = ntpx_tests::testservers(&mut lan, 3)?
        .into_iter()
        .map(|(ns, ip, p)| (ns, ip, Some(p)))
        .collect();
    let hosts: String = servers
        .iter()
        .map(|s| format!("{} pool.ntpx.test\n", s.1))
        .collect();
    cli.set_hosts(&hosts)?;
    let mut d = Ntpxd::start(
        &cli,
        "pool pool.ntpx.test iburst minpoll -4 maxpoll -4 maxsources 2\nport 0",
        &["--no-xdp"],
    )?;
    let names = |d: &Ntpxd| d.sources().into_iter().map(|s| s.name).collect::<Vec<_>>();
    wait_until(Duration::from_secs(20), "two pool members", || {
        (names(&d).len() == 2).then_some(())
    })?;
    let first = names(&d);
    assert!(
        !first.contains(&servers[2].1),
        "maxsources 2 took {first:?}"
    );
    // Silence the first member.
    let victim = first[0].clone();
    if let Some(s) = servers.iter_mut().find(|s| s.1 == victim) {
        s.2 = None;
    }
    let start = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the silent member to be replaced",
        || {
            let n = names(&d);
            (n.contains(&servers[2].1) && !n.contains(&victim)).then_some(())
        },
    )
    .with_context(|| d.proc.log())?;
    d.proc.wait_for_log(
        &format!("Source {victim} replaced with {}", servers[2].1),
        Duration::from_secs(5),
    )?;
    println!("replaced {victim} after {:?}", start.elapsed());
    wait_until(Duration::from_secs(10), "the new member to answer", || {
        d.sources()
            .iter()
            .any(|s| s.name == servers[2].1 && s.reach != "0")
            .then_some(())
    })?;
    Ok(())
}

/// `ntpxc reload sources` re-reads the sourcedir: lines that left are removed, new ones
/// added, the main configuration's sources kept.
#[test]
fn reload_sources_follows_the_sourcedir() -> Result<()> {
    if !ntpx_tests::privileged("reload_sources_follows_the_sourcedir") {
        return Ok(());
    }
    let mut lan = Lan::new(44)?;
    let cli = Netns::new("cli")?;
    lan.join(&cli, 9)?;
    let servers = ntpx_tests::testservers(&mut lan, 3)?;
    let dir = ntpx_tests::TempDir::new("sources")?;
    let file = dir.path().join("upstream.sources");
    let line = |ip: &str| format!("server {ip} {FAST_POLL}\n");
    std::fs::write(&file, line(&servers[1].1))?;
    let conf = format!(
        "{}sourcedir {}\nport 0",
        line(&servers[0].1),
        dir.path().display()
    );
    let d = Ntpxd::start(&cli, &conf, &["--no-xdp"])?;
    let names = |d: &Ntpxd| {
        let mut v: Vec<String> = d.sources().into_iter().map(|s| s.name).collect();
        v.sort();
        v
    };
    wait_until(Duration::from_secs(10), "both sources", || {
        (names(&d).len() == 2).then_some(())
    })?;
    std::fs::write(&file, line(&servers[2].1))?;
    assert_eq!(d.ntpxc(&["reload", "sources"])?, "200 OK\n");
    let want = vec![servers[0].1.clone(), servers[2].1.clone()];
    wait_until(Duration::from_secs(10), "the sourcedir change", || {
        (names(&d) == want).then_some(())
    })
    .with_context(|| format!("{:?}\n{}", names(&d), d.proc.log()))?;
    assert!(
        d.proc
            .log()
            .contains("Reloaded sources: 1 added, 1 removed"),
        "{}",
        d.proc.log()
    );
    assert!(
        d.proc
            .log()
            .contains(&format!("Removed source {}", servers[1].1))
    );
    Ok(())
}

/// Both daemons serve what they follow: an upstream 25 ms ahead, drifting +40 ppm, its
/// frequency wandering by ±1 ppm over a minute, behind 50 µs of queueing each way. After
/// a minute to settle, each is asked for the time every half second for a minute, and
/// the time it serves is compared with the truth: the RMS and largest error, and the
/// frequency error (the slope of the error). ntpxd -x beside chronyd -x.
#[test]
fn served_time_under_wander_and_jitter_beside_chronyd() -> Result<()> {
    if !ntpx_tests::privileged("served_time_under_wander_and_jitter_beside_chronyd") {
        return Ok(());
    }
    let truth = ntpx_tests::Truth {
        offset: 0.025,
        drift_ppm: 40.0,
        wander_ppm: 1.0,
        wander_period: 60.0,
    };
    let mut lan = Lan::new(45)?;
    let up = Netns::new("up")?;
    let x = Netns::new("ntpx")?;
    let c = Netns::new("chrony")?;
    let probe = Netns::new("probe")?;
    let (_, up_ip) = lan.join(&up, 1)?;
    let (_, x_ip) = lan.join(&x, 2)?;
    let (_, c_ip) = lan.join(&c, 3)?;
    lan.join(&probe, 4)?;
    let mut cmd = up.command(bin("ntpx-testserver"));
    cmd.args(["--listen", &format!("{up_ip}:123")])
        .args(["--offset", &truth.offset.to_string()])
        .args(["--drift", &truth.drift_ppm.to_string()])
        .args(["--wander", &truth.wander_ppm.to_string()])
        .args(["--wander-period", &truth.wander_period.to_string()])
        .args(["--jitter", "50e-6"]);
    let mut server = Proc::spawn("testserver", cmd)?;
    server.wait_for_log("listening", Duration::from_secs(10))?;
    let start: u64 = server
        .log()
        .rsplit("start ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .context("the test server's start time")?;
    let line = format!("server {up_ip} iburst minpoll -3 maxpoll -3\nallow all");
    let _d = Ntpxd::start(&x, &line, &["--no-xdp"])?;
    let (_chrony, _dir, _sock) = chronyd(&c, &line)?;
    std::thread::sleep(Duration::from_mins(1));
    let measure = |ip: &str| -> Result<(f64, f64, f64, f64)> {
        let out = probe.output(
            bin("ntpx-probe").to_str().context("path")?,
            &[&format!("{ip}:123"), "120", "0.5"],
        )?;
        // Served minus true time at each exchange's midpoint, with the exchange's round
        // trip (the probe's own time excluded).
        let mut all = Vec::new();
        for l in out.lines() {
            let t: Vec<u64> = l
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let [t1, t2, t3, t4] = t[..] else { continue };
            let mid = |a: u64, b: u64| (a as f64 + b as f64) * 0.5e-9;
            let local = mid(t1, t4);
            let served = mid(t2, t3);
            let elapsed = local - start as f64 * 1e-9;
            let delay = (t4 as f64 - t1 as f64 - (t3 as f64 - t2 as f64)) * 1e-9;
            all.push((elapsed, served - local - truth.error(elapsed), delay));
        }
        // The probe reads the clock around its own send and receive: when its thread is
        // held up between them (the two probes run at once on two cores), the round trip
        // grows and the midpoint is off by half the hold-up, whichever daemon it was
        // asking. Such exchanges say nothing of the daemon (no extra delay is injected on
        // the probe's path): those 200 µs over the median round trip are left out, as an
        // NTP client leaves out its slow exchanges.
        let mut delays: Vec<f64> = all.iter().map(|p| p.2).collect();
        delays.sort_by(f64::total_cmp);
        let median = delays.get(delays.len() / 2).copied().unwrap_or(0.0);
        let points: Vec<(f64, f64)> = all
            .iter()
            .filter(|p| p.2 <= median + 200e-6)
            .map(|p| (p.0, p.1))
            .collect();
        anyhow::ensure!(
            points.len() >= 100,
            "only {} answers from {ip}",
            points.len()
        );
        let n = points.len() as f64;
        let rms = (points.iter().map(|p| p.1 * p.1).sum::<f64>() / n).sqrt();
        let max = points.iter().fold(0.0f64, |m, p| m.max(p.1.abs()));
        let (mx, my) = (
            points.iter().map(|p| p.0).sum::<f64>() / n,
            points.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let slope = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        Ok((rms, max, my, slope * 1e6))
    };
    // Both at once: the wander is the same for both, whatever phase of it they are in.
    let (x, c) = std::thread::scope(|s| {
        let x = s.spawn(|| measure(&x_ip));
        let c = s.spawn(|| measure(&c_ip));
        (x.join(), c.join())
    });
    let (x, c) = (
        x.map_err(|_| anyhow::anyhow!("the ntpxd probe panicked"))?,
        c.map_err(|_| anyhow::anyhow!("the chronyd probe panicked"))?,
    );
    let (xr, xm, xb, xf) = x?;
    let (cr, cm, cb, cf) = c?;
    let report = format!(
        "served time against the truth over the same minute (wander ±1 ppm/60 s, jitter 50 us each way):\n\
         ntpxd -x:   RMS {:.1} us (mean {:+.1}, spread {:.1}), max {:.1} us, frequency error {:+.3} ppm\n\
         chronyd -x: RMS {:.1} us (mean {:+.1}, spread {:.1}), max {:.1} us, frequency error {:+.3} ppm",
        xr * 1e6,
        xb * 1e6,
        (xr * xr - xb * xb).max(0.0).sqrt() * 1e6,
        xm * 1e6,
        xf,
        cr * 1e6,
        cb * 1e6,
        (cr * cr - cb * cb).max(0.0).sqrt() * 1e6,
        cm * 1e6,
        cf
    );
    println!("{report}");
    // The mean is mostly the rig's path asymmetry (the test server's threads and sleeps,
    // the probe's own wake-ups), which neither daemon can see; the spread about it and
    // the frequency error are the daemons' own. Measured over runs here, ntpxd's spread
    // was 0.6-1.9 times chronyd's (docs/benchmarks.md): the bound leaves room for a run's
    // luck and fails a daemon that serves clearly worse time.
    let (xs, cs) = (
        (xr * xr - xb * xb).max(0.0).sqrt(),
        (cr * cr - cb * cb).max(0.0).sqrt(),
    );
    anyhow::ensure!(
        xs <= (2.0 * cs).max(30e-6)
            && xb.abs() <= cb.abs() + 50e-6
            && xf.abs() <= (2.0 * cf.abs()).max(1.0),
        "ntpxd serves worse time than chronyd (spread {:.1} us against {:.1} us):\n{report}",
        xs * 1e6,
        cs * 1e6
    );
    Ok(())
}

/// The only upstream announces a leap second on a day none can happen: ntpxd serves no
/// leap and tells the kernel none (chrony's rule: 30 June and 31 December only).
#[test]
fn a_leap_second_from_one_source_on_a_wrong_day_is_ignored() -> Result<()> {
    if !ntpx_tests::privileged("a_leap_second_from_one_source_on_a_wrong_day_is_ignored") {
        return Ok(());
    }
    let mut lan = Lan::new(46)?;
    let cli = Netns::new("cli")?;
    lan.join(&cli, 9)?;
    let liar = Netns::new("liar")?;
    let (_, liar_ip) = lan.join(&liar, 1)?;
    let mut cmd = liar.command(bin("ntpx-testserver"));
    cmd.args(["--listen", &format!("{liar_ip}:123"), "--leap", "1"]);
    let mut server = Proc::spawn("testserver", cmd)?;
    server.wait_for_log("listening", Duration::from_secs(10))?;
    let d = Ntpxd::start(
        &cli,
        &format!("server {liar_ip} {FAST_POLL}\nallow all"),
        &["--no-xdp"],
    )?;
    wait_until(
        Duration::from_secs(30),
        "ntpxd to select the source",
        || d.selected(),
    )?;
    let nd = d.ntpxc(&["ntpdata", &liar_ip])?;
    assert!(nd.contains("Leap status     : Insert second"), "{nd}");
    // Today is not the last day of June or December: nothing is announced.
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let days = unix / 86_400;
    let leap_day = ntp_proto::calendar::leap_day((days * 86_400) as i64);
    anyhow::ensure!(!leap_day, "this test cannot run on a leap day");
    assert_eq!(d.tracking("Leap status")?, "Normal");
    Ok(())
}

/// chrony's orphan mode on the typical pair with no upstream: both run
/// `local stratum 10 orphan` and poll each other. The one with the lower address serves
/// its own clock at stratum 10; the other follows it at stratum 11. When the lower one
/// dies, the other serves its own clock once its last update is older than `waitsynced`.
#[test]
fn an_orphan_pair_settles_on_one_and_fails_over() -> Result<()> {
    if !ntpx_tests::privileged("an_orphan_pair_settles_on_one_and_fails_over") {
        return Ok(());
    }
    let mut lan = Lan::new(47)?;
    let a = Netns::new("orphan-a")?;
    let b = Netns::new("orphan-b")?;
    let (_, a_ip) = lan.join(&a, 1)?;
    let (_, b_ip) = lan.join(&b, 2)?;
    let conf = |peer: &str| {
        format!(
            "server {peer} iburst minpoll 0 maxpoll 0\n\
             local stratum 10 orphan distance 0 waitsynced 4 waitunsynced 0\nallow all"
        )
    };
    let mut da = Ntpxd::start(&a, &conf(&b_ip), &["--no-xdp"])?;
    let db = Ntpxd::start(&b, &conf(&a_ip), &["--no-xdp"])?;
    let a_hex = a_ip
        .split('.')
        .filter_map(|o| o.parse::<u8>().ok())
        .map(|o| format!("{o:02X}"))
        .collect::<String>();
    wait_until(
        Duration::from_secs(40),
        "the higher server to follow the lower one at stratum 11",
        || {
            let refid = db.tracking("Reference ID").ok()?;
            let stratum = db.tracking("Stratum").ok()?;
            (refid.starts_with(&a_hex) && stratum == "11").then_some(())
        },
    )?;
    assert!(
        da.tracking("Reference ID")?.starts_with("7F7F0101") && da.tracking("Stratum")? == "10",
        "the lower server serves its own clock:\n{}",
        da.ntpxc(&["tracking"])?
    );
    let sd = da.ntpxc(&["selectdata"])?;
    assert!(
        sd.lines().any(|l| l.starts_with("O ") && l.contains(&b_ip)),
        "the follower is an orphan to the lower server:\n{sd}"
    );
    da.proc.signal(9);
    da.proc.wait_exit(Duration::from_secs(5))?;
    let gone = std::time::Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the survivor to serve its own clock",
        || {
            let refid = db.tracking("Reference ID").ok()?;
            (refid.starts_with("7F7F0101") && db.tracking("Stratum").ok()? == "10").then_some(())
        },
    )?;
    let took = gone.elapsed();
    println!("the survivor took over after {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "not before waitsynced: {took:?}"
    );
    Ok(())
}

/// A source whose socket cannot be opened (no route to it yet) is not given up: each
/// poll tries again, and once the route is there the source is polled and selected.
#[test]
fn a_source_without_a_route_is_retried_at_each_poll() -> Result<()> {
    if !ntpx_tests::privileged("a_source_without_a_route_is_retried_at_each_poll") {
        return Ok(());
    }
    let mut lan = Lan::new(48)?;
    let up = Netns::new("up")?;
    let cli = Netns::new("noroute")?;
    let (_, up_ip) = lan.join(&up, 1)?;
    let (cli_if, _) = lan.join(&cli, 2)?;
    let mut cmd = up.command(bin("ntpx-testserver"));
    cmd.args(["--listen", &format!("{up_ip}:123")]);
    let mut server = Proc::spawn("testserver", cmd)?;
    server.wait_for_log("listening", Duration::from_secs(10))?;
    cli.ip(&["route", "del", "198.18.48.0/24", "dev", &cli_if])?;
    let mut d = Ntpxd::start(
        &cli,
        &format!("server {up_ip} iburst minpoll 0 maxpoll 0\nlocal stratum 3\nallow all"),
        &["--no-xdp"],
    )?;
    d.proc
        .wait_for_log("trying again at each poll", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.selected().is_none(), "nothing to select yet");
    cli.ip(&["route", "add", "198.18.48.0/24", "dev", &cli_if])?;
    d.proc
        .wait_for_log("socket open again", Duration::from_secs(10))?;
    wait_until(Duration::from_secs(20), "the source to be selected", || {
        d.selected()
    })?;
    Ok(())
}

/// Hostile upstreams beside honest ones: servers that kiss (RATE, DENY, RSTR), answer
/// with an origin that is not ours, send every reply twice, stamp one NTP era ahead
/// (2^32 s: the same on the wire), announce a leap second from a minority on a day
/// none can happen, or fill precision, root delay and root dispersion with extremes
/// (the largest, and zero). ntpxd follows only what an honest server says, backs off
/// from RATE as chronyd does, counts what it refused, serves its clients no leap, and
/// every figure it reports stays a number.
#[test]
fn hostile_upstreams_change_nothing_the_clients_see() -> Result<()> {
    if !ntpx_tests::privileged("hostile_upstreams_change_nothing_the_clients_see") {
        return Ok(());
    }
    let mut lan = Lan::new(49)?;
    let up = Netns::new("hostile")?;
    let (up_if, _) = lan.join(&up, 1)?;
    let cli = Netns::new("victim")?;
    let (_, cli_ip) = lan.join(&cli, 2)?;
    // (name, host number, testserver arguments)
    let servers: [(&str, u8, &[&str]); 12] = [
        ("honest", 11, &[]),
        ("honest", 12, &[]),
        ("honest", 13, &[]),
        ("era", 14, &["--offset", "4294967296"]),
        ("duplicate", 15, &["--duplicate"]),
        (
            "zero-root",
            16,
            &["--precision", "-128", "--root-dispersion", "0"],
        ),
        ("leap", 17, &["--leap", "1"]),
        ("rate", 18, &["--kod", "RATE"]),
        ("deny", 19, &["--kod", "DENY"]),
        ("rstr", 20, &["--kod", "RSTR"]),
        ("origin", 21, &["--bad-origin"]),
        (
            "extreme",
            22,
            &[
                "--precision",
                "127",
                "--root-delay",
                "70000",
                "--root-dispersion",
                "70000",
            ],
        ),
    ];
    let ip = |n: u8| format!("198.18.49.{n}");
    let mut procs = Vec::new();
    let mut config = String::from("allow all\n");
    for (_, n, args) in &servers {
        up.ip(&["addr", "add", &format!("{}/24", ip(*n)), "dev", &up_if])?;
        let mut cmd = up.command(bin("ntpx-testserver"));
        cmd.args(["--listen", &format!("{}:123", ip(*n)), "--stratum", "2"])
            .args(*args);
        let mut p = Proc::spawn("testserver", cmd)?;
        p.wait_for_log("listening", Duration::from_secs(10))?;
        procs.push(p);
        config.push_str(&format!("server {} {FAST_POLL}\n", ip(*n)));
    }
    let mut d = Ntpxd::start(&cli, &config, &["--no-xdp"])?;
    wait_until(Duration::from_secs(30), "a source to be selected", || {
        d.selected()
    })?;
    // Ten seconds of polling at 16 a second per source.
    std::thread::sleep(Duration::from_secs(10));
    let rows = d.sources();
    let row = |n: u8| rows.iter().find(|r| r.name == ip(n));
    let ntpdata = |n: u8, label: &str| -> Result<u64> {
        let out = d.ntpxc(&["ntpdata", &ip(n)])?;
        out.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == label)
                    .and_then(|(_, v)| v.trim().parse().ok())
            })
            .with_context(|| format!("{label} of {}:\n{out}", ip(n)))
    };
    let mut report = String::new();
    for (name, n, _) in &servers {
        report.push_str(&format!(
            "{name:>9} {:?}: TX {} RX {} valid {}\n",
            row(*n),
            ntpdata(*n, "Total TX")?,
            ntpdata(*n, "Total RX")?,
            ntpdata(*n, "Total valid RX")?
        ));
    }
    println!("{report}");
    let state = |n: u8| row(n).map(|r| r.state.clone()).unwrap_or_default();
    // Only honest timestamps are followed (the era server's are honest on the wire).
    for n in [11, 12, 13, 14, 15, 16, 17] {
        assert!(
            ["*", "+", "-"].contains(&state(n).as_str()),
            "{} usable:\n{report}",
            ip(n)
        );
        let r = row(n).context("row")?;
        assert!(r.measured.abs() < 0.01, "{} measured:\n{report}", ip(n));
    }
    for n in [18, 19, 20, 21, 22] {
        assert!(
            !["*", "+", "-"].contains(&state(n).as_str()),
            "{} never usable:\n{report}",
            ip(n)
        );
        assert_eq!(row(n).map(|r| r.reach.as_str()), Some("0"), "{report}");
    }
    // A reply with another origin is not a reply to us; a second copy is not a second
    // sample.
    assert_eq!(ntpdata(21, "Total valid RX")?, 0, "{report}");
    let (rx, valid) = (ntpdata(15, "Total RX")?, ntpdata(15, "Total valid RX")?);
    assert!(rx >= 2 * valid - 2 && valid > 20, "{report}");
    // Sources that give no sample are polled no faster than once a second (chrony's
    // rule for sub-second polling). RATE: four more intervals between polls, as
    // chronyd; DENY and RSTR are only not used (chronyd does not act on them either), so
    // they are polled as often as a server that never answers us.
    let unanswered_tx = ntpdata(21, "Total TX")?;
    assert!(ntpdata(18, "Total TX")? * 3 < unanswered_tx, "{report}");
    for n in [19, 20] {
        assert!(
            ntpdata(n, "Total TX")?.abs_diff(unanswered_tx) <= 2,
            "{report}"
        );
    }
    d.proc
        .wait_for_log("Kiss-o'-Death RATE", Duration::from_secs(1))?;
    // The leap second of one source in seven, on a day none can happen, goes nowhere.
    let leap = d.ntpxc(&["ntpdata", &ip(17)])?;
    assert!(leap.contains("Leap status     : Insert second"), "{leap}");
    assert_eq!(d.tracking("Leap status")?, "Normal");
    assert_eq!(d.tracking("Stratum")?, "3");
    let dig = ntpdig_best(&up, &cli_ip, 3)?;
    assert!(dig.line.contains("no-leap"), "{}", dig.line);
    assert!(dig.offset.abs() < 0.01, "{}", dig.line);
    // Every figure is a number.
    for cmd in [
        &["sources", "-v"][..],
        &["sourcestats", "-v"],
        &["tracking"],
        &["selectdata"],
        &["ntpdata"],
    ] {
        let out = d.ntpxc(cmd)?.to_lowercase();
        assert!(
            !out.contains("nan") && !out.contains("inf"),
            "ntpxc {cmd:?}:\n{out}"
        );
    }
    Ok(())
}
