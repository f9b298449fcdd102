//! The NTS comparison: ntpxd's NTS server (its server threads, and one thread alone)
//! beside chronyd's under the same NTS load, on the benchmark network.

use crate::{
    cpu::ProcessCpu,
    generator::Template,
    nts::{NtsLoad, NtsStep, POOL, Pool},
    report::{self, ns, rate},
    topology::{BenchNet, RingDrops},
};
use anyhow::{Context, Result, anyhow, bail};
use ntp_common::load::NTS_PASS_EVERY;
use ntp_proto::nts::{Aead, KE_PORT, SessionKeys};
use ntpx_tests::{Ntpxd, Proc, TempDir, chronyd};
use serde::{Deserialize, Serialize};
use std::{
    fmt::Write,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The name in the servers' certificate.
const NAME: &str = "nts.bench";

/// A server of the NTS comparison. NTS requests take ntpxd's socket path either way; it
/// runs without its XDP program unless named so, because on a veth an attached program
/// moves the stack's receive work for every passed request from the sending side's CPU
/// to the server end's receive thread, which the socket servers would not pay: the rows
/// would compare rigs rather than servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NtsServer {
    /// ntpxd -x --no-xdp with its default server threads (one per core for NTS).
    Ntpx,
    /// The same with `--server-threads 1`.
    NtpxOneThread,
    /// ntpxd -x with its XDP program attached (it passes NTS requests up).
    NtpxXdp,
    /// ntpxd -x --xsk: the XDP program redirects NTS requests to `AF_XDP` sockets.
    NtpxXsk,
    /// chronyd -x (one process answers NTP).
    Chronyd,
}

impl NtsServer {
    /// Every server, in report order.
    pub const ALL: [NtsServer; 5] = [
        NtsServer::Ntpx,
        NtsServer::NtpxOneThread,
        NtsServer::Chronyd,
        NtsServer::NtpxXdp,
        NtsServer::NtpxXsk,
    ];

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            NtsServer::Ntpx => "ntpx --no-xdp (a thread per core)",
            NtsServer::NtpxOneThread => "ntpx --no-xdp --server-threads 1",
            NtsServer::NtpxXdp => "ntpx with XDP (a thread per core)",
            NtsServer::NtpxXsk => "ntpx with XDP --xsk (AF_XDP socket per queue)",
            NtsServer::Chronyd => "chronyd -x",
        }
    }

    /// Parses a command-line name: ntpx, ntpx-1, ntpx-xdp, ntpx-xsk, chronyd.
    pub fn from_key(s: &str) -> Option<Self> {
        match s {
            "ntpx" => Some(NtsServer::Ntpx),
            "ntpx-1" => Some(NtsServer::NtpxOneThread),
            "ntpx-xdp" => Some(NtsServer::NtpxXdp),
            "ntpx-xsk" => Some(NtsServer::NtpxXsk),
            "chronyd" => Some(NtsServer::Chronyd),
            _ => None,
        }
    }
}

/// One server's NTS figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NtsResult {
    /// Which server.
    pub server: NtsServer,
    /// Every step, in order.
    pub ramp: Vec<NtsStep>,
    /// Highest answered rate of a step losing under 1 %, per second.
    pub max_rate: f64,
    /// The fixed-load step.
    pub fixed: Option<NtsStep>,
    /// Server CPU (its threads and processes, and the server end's receive thread) per
    /// answered request at the fixed load, µs.
    pub cpu_us_per_request: Option<f64>,
    /// The part of it spent by the server's own threads and processes, µs.
    pub process_us_per_request: Option<f64>,
}

/// Highest answered rate among steps losing under 1 %.
pub fn max_rate(ramp: &[NtsStep]) -> f64 {
    report::best_rate(ramp.iter().map(|s| (s.loss(), s.answered_rate())))
}

/// A running NTS server; stopped when dropped.
pub enum Running {
    /// ntpxd.
    Ntpx(Ntpxd),
    /// chronyd, and the directory its files are in (removed when dropped).
    Chronyd(Proc, #[allow(dead_code)] TempDir),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Ntpx(d) => d.proc.pid(),
            Running::Chronyd(p, _) => p.pid(),
        }
    }

    fn log(&self) -> String {
        match self {
            Running::Ntpx(d) => d.proc.log(),
            Running::Chronyd(p, _) => p.log(),
        }
    }
}

/// Certificate, key and a directory for the servers' files.
pub struct Credentials {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Credentials {
    /// A self-signed certificate for the benchmark's name.
    pub fn new() -> Result<Self> {
        let dir = TempDir::new("nts-bench")?;
        let (cert, key) = ntpx_tests::self_signed_certificate(&dir, NAME)?;
        Ok(Credentials { dir, cert, key })
    }
}

fn start(server: NtsServer, net: &BenchNet, c: &Credentials) -> Result<Running> {
    let dump = c.dir.path().join(format!("dump-{server:?}"));
    std::fs::create_dir_all(&dump).with_context(|| format!("creating {}", dump.display()))?;
    let config = format!(
        "local stratum 3\nallow all\nntsservercert {}\nntsserverkey {}\nntsdumpdir {}\n",
        c.cert.display(),
        c.key.display(),
        dump.display()
    );
    let iface = net.link.server_if.as_str();
    let ntpx = |args: &[&str]| Ntpxd::start(&net.server, &config, args).map(Running::Ntpx);
    Ok(match server {
        NtsServer::Ntpx => ntpx(&["--no-xdp"])?,
        NtsServer::NtpxOneThread => ntpx(&["--no-xdp", "--server-threads", "1"])?,
        NtsServer::NtpxXdp => ntpx(&["-i", iface])?,
        NtsServer::NtpxXsk => ntpx(&["-i", iface, "--xsk"])?,
        NtsServer::Chronyd => {
            let (p, dir, _sock) = chronyd(&net.server, &config)?;
            Running::Chronyd(p, dir)
        }
    })
}

/// One NTS-KE with the server offering `aead` alone, retried while it starts.
fn key_exchange(
    server: IpAddr,
    cert: &Path,
    running: &Running,
    aead: Aead,
) -> Result<(SessionKeys, Vec<Vec<u8>>)> {
    let text = format!(
        "server {NAME} nts\nntstrustedcerts {}\nnosystemcert\nntsaeads {}\n",
        cert.display(),
        aead.id()
    );
    let config = ntp_proto::config::parse_str(&text, Path::new("nts-bench.conf"))
        .map_err(|e| anyhow!("{e}"))?;
    let ctx = ntp_user::sources::nts_ke::context(&config)?.context("no NTS context")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tls = ctx.tls(0)?;
        match ntp_user::sources::nts_ke::key_exchange(tls, NAME, Some(server), KE_PORT, &[aead]) {
            Ok(e) => return Ok((e.keys, e.response.cookies)),
            Err(e) if Instant::now() > deadline => {
                bail!("NTS-KE with {server}: {e:#}\n{}", running.log())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn show(s: &NtsStep, what: &str) {
    eprintln!(
        "  offered {:>9.0}/s answered {:>9.0}/s loss {:>6.2} % checked {}/{}{what}",
        s.offered_rate,
        s.answered_rate(),
        100.0 * s.loss(),
        s.verified,
        s.verified + s.failed_check
    );
}

/// Ramps each server (doubling from 5 k/s until over half is lost or the generator
/// falls behind, then three bisections), then runs each at `fixed` (by default 80 % of
/// the lowest rate any sustained) to measure its CPU per request.
/// Every client offers `aead` alone. Also returns the length of the requests, bytes.
pub fn run(
    net: &BenchNet,
    servers: &[NtsServer],
    step: Duration,
    fixed: Option<f64>,
    aead: Aead,
) -> Result<(Vec<NtsResult>, usize)> {
    let creds = Credentials::new()?;
    let mut request_len = 0;
    let server_ip: IpAddr = net.link.server_v4.parse()?;
    let mut results = Vec::new();
    for &server in servers {
        eprintln!("ntpx-bench: NTS, {} (ramp)", server.label());
        let (running, mut load) = session(server, net, &creds, server_ip, aead)?;
        request_len = load.request_len();
        let mut ramp: Vec<NtsStep> = Vec::new();
        let mut r = 5_000.0f64;
        loop {
            let s = measured_step(&mut load, net, r, step)?;
            show(&s, "");
            let behind = s.offered_rate < 0.8 * r;
            let lossy = s.loss() > 0.5;
            ramp.push(s);
            if behind || lossy || r > 2e6 {
                break;
            }
            r *= 2.0;
        }
        bisect(&mut load, net, &mut ramp, step)?;
        drop(running);
        results.push(NtsResult {
            server,
            max_rate: max_rate(&ramp),
            ramp,
            fixed: None,
            cpu_us_per_request: None,
            process_us_per_request: None,
        });
    }
    let fixed = fixed.unwrap_or_else(|| {
        let least = results
            .iter()
            .map(|r| r.max_rate)
            .fold(f64::INFINITY, f64::min);
        if least.is_finite() && least > 0.0 {
            (least * 0.8).max(1_000.0)
        } else {
            2_000.0
        }
    });
    for r in &mut results {
        eprintln!("ntpx-bench: NTS, {} at {fixed:.0}/s", r.server.label());
        let (running, mut load) = session(r.server, net, &creds, server_ip, aead)?;
        let napi = net.server_napi_threads()?;
        let procs = process_tree(running.pid());
        let snapshot = |ids: &[u32]| ids.iter().map(|p| ProcessCpu::of(*p)).collect::<Vec<_>>();
        let used = |before: &[ProcessCpu], ids: &[u32]| -> u64 {
            snapshot(ids)
                .iter()
                .zip(before)
                .map(|(a, b)| a.ns_since(b))
                .sum()
        };
        let (napi0, procs0) = (snapshot(&napi), snapshot(&procs));
        let s = measured_step(&mut load, net, fixed, step.max(Duration::from_secs(3)))?;
        let (napi_ns, proc_ns) = (used(&napi0, &napi), used(&procs0, &procs));
        show(&s, " (fixed load)");
        if s.answered > 0 {
            let per = |ns: u64| ns as f64 / 1e3 / s.answered as f64;
            r.cpu_us_per_request = Some(per(napi_ns + proc_ns));
            r.process_us_per_request = Some(per(proc_ns));
        }
        r.fixed = Some(s);
        drop(running);
    }
    Ok((results, request_len))
}

/// Starts `server`, gets cookies from it and builds the generator, warmed up (call from
/// a thread in the client's namespace).
pub fn session(
    server: NtsServer,
    net: &BenchNet,
    creds: &Credentials,
    ip: IpAddr,
    aead: Aead,
) -> Result<(Running, NtsLoad)> {
    let running = start(server, net, creds)?;
    net.pin_napi()?;
    let (keys, cookies) = key_exchange(ip, &creds.cert, &running, aead)?;
    let pool = Pool::new(&keys, &cookies)?;
    let IpAddr::V4(dst) = ip else {
        bail!("the NTS generator is IPv4 only, not {ip}");
    };
    let template = Template {
        src_mac: net.client_mac,
        dst_mac: net.server_mac,
        dst,
    };
    let client = net
        .link
        .client_v4
        .parse()
        .with_context(|| format!("the client end's address {}", net.link.client_v4))?;
    let mut load = NtsLoad::new(
        SocketAddr::new(ip, 123),
        pool,
        &net.link.client_if,
        &template,
        client,
    )?;
    net.pin_napi()?;
    let warm = load.step(2_000.0, Duration::from_secs(1))?;
    if warm.answered == 0 {
        bail!(
            "{}: no NTS replies ({} NAKs, {} invalid)\n{}",
            server.label(),
            warm.naks,
            warm.invalid,
            running.log()
        );
    }
    Ok((running, load))
}

/// One step, with the requests and replies the veth rings refused on each side (the
/// client end's: the rig's loss, not the server's).
fn measured_step(
    load: &mut NtsLoad,
    net: &BenchNet,
    rate: f64,
    length: Duration,
) -> Result<NtsStep> {
    let before = RingDrops::read(net)?;
    let mut s = load.step(rate, length)?;
    let after = RingDrops::read(net)?;
    s.refused_by_server_end = after.server_end.saturating_sub(before.server_end);
    s.refused_by_client_end = after.client_end.saturating_sub(before.client_end);
    Ok(s)
}

/// Three bisections between the best step under 1 % loss and the first over it.
fn bisect(
    load: &mut NtsLoad,
    net: &BenchNet,
    ramp: &mut Vec<NtsStep>,
    step: Duration,
) -> Result<()> {
    let Some(between) = report::bracket(ramp.iter().map(|s| (s.target_rate, s.loss()))) else {
        return Ok(());
    };
    report::bisect(between, |rate| {
        let s = measured_step(load, net, rate, step)?;
        show(&s, " (bisecting)");
        let good = s.loss() < 0.01;
        ramp.push(s);
        Ok(good)
    })
}

/// `pid` and its descendants (chronyd's NTS-KE helpers are processes of their own).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        let path = format!("/proc/{p}/task/{p}/children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    out
}

/// The Markdown section: the table, the goal, every step.
pub fn markdown(
    results: &[NtsResult],
    date: &str,
    command: &str,
    request_len: usize,
    aead: Aead,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Run {date}, as root:\n\n    {command}\n");
    let chrony = results
        .iter()
        .find(|r| r.server == NtsServer::Chronyd)
        .map_or(0.0, |r| r.max_rate);
    let _ = writeln!(
        o,
        "NTS requests of {request_len} bytes under AEAD {} (unique identifier, one cookie, \
         authenticator; asking for one cookie back), built in advance (a pool of {POOL}) \
         and sent from 64 client ports as the plain load is: `BPF_PROG_TEST_RUN` live \
         frames out of the client end, from a thread on CPU 0 in the idle scheduling \
         class (it paces itself by spinning, and yields to any server thread there), so \
         requests reach the server end's receive thread as frames from a NIC would and \
         their receive work is the server's cost. An XDP program on the client end times \
         and counts the replies and passes one in {NTS_PASS_EVERY} up to the client \
         sockets (a sample of those checked in full: unique identifier, authenticator, \
         new cookie). Servers are not pinned: each may use both CPUs, one of which the \
         generator shares. Both veth ends moderate their receive \
         interrupts as a NIC does (`napi_defer_hard_irqs` 2, `gro_flush_timeout` 200 µs). \
         CPU per request: the server's threads \
         and processes and the server end's receive thread over the fixed-load step, per \
         answered request; \"the server's own\" leaves the receive thread out. A server \
         seals its cookies under its own choice of algorithm (ntpx and chrony 4.4 and later: \
         AES-128-GCM-SIV; chrony 4.3: AES-SIV-CMAC-256).\n",
        aead.id()
    );
    let _ = writeln!(
        o,
        "| server | max rate, <1% loss | vs chronyd | CPU per request | of which the server's own | response time p50 / p99 | replies checked in full |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |");
    for r in results {
        let (checked, failed) = r.ramp.iter().chain(&r.fixed).fold((0, 0), |(c, f), s| {
            (c + s.verified + s.failed_check, f + s.failed_check)
        });
        let rtt = r.fixed.as_ref().and_then(|s| s.rtt);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {checked} ({failed} failed) |",
            r.server.label(),
            rate(r.max_rate),
            if chrony > 0.0 {
                format!("{:.2}×", r.max_rate / chrony)
            } else {
                "–".into()
            },
            r.cpu_us_per_request
                .map_or_else(|| "–".into(), |c| format!("{c:.2} µs")),
            r.process_us_per_request
                .map_or_else(|| "–".into(), |c| format!("{c:.2} µs")),
            rtt.map_or_else(|| "–".into(), |p| format!("{} / {}", ns(p.p50), ns(p.p99))),
        );
    }
    // The goal is the product's: the best of ntpx's ways of serving NTS.
    if let Some(n) = results
        .iter()
        .filter(|r| r.server != NtsServer::Chronyd)
        .max_by(|a, b| a.max_rate.total_cmp(&b.max_rate))
        && chrony > 0.0
    {
        let x = n.max_rate / chrony;
        let _ = writeln!(
            o,
            "\nGoal: at least twice chronyd's NTS rate: {} {x:.2}× ({})",
            n.server.label(),
            if x >= 2.0 { "met" } else { "not met" }
        );
    }
    let _ = writeln!(
        o,
        "\n| server | offered | answered | loss | NAKs | invalid | refused by the server end / the client end |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in results {
        for s in r.ramp.iter().chain(&r.fixed) {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.2} % | {} | {} | {} / {} |",
                r.server.label(),
                rate(s.offered_rate),
                rate(s.answered_rate()),
                100.0 * s.loss(),
                s.naks,
                s.invalid,
                s.refused_by_server_end,
                s.refused_by_client_end
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(sent: u64, answered: u64) -> NtsStep {
        NtsStep {
            target_rate: sent as f64,
            offered_rate: sent as f64,
            sent,
            answered,
            secs: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn the_report_compares_with_chronyd_and_says_whether_the_goal_is_met() {
        let r = |server, answered| NtsResult {
            server,
            ramp: vec![step(answered, answered)],
            max_rate: answered as f64,
            fixed: None,
            cpu_us_per_request: Some(10.0),
            process_us_per_request: Some(6.0),
        };
        let md = markdown(
            &[r(NtsServer::Ntpx, 50_000), r(NtsServer::Chronyd, 20_000)],
            "now",
            "cargo xtask bench",
            228,
            Aead::AesSivCmac256,
        );
        assert!(md.contains("| 2.50× |"), "{md}");
        assert!(md.contains("228 bytes under AEAD 15"), "{md}");
        assert!(md.contains("2.50× (met)"), "{md}");
        assert_eq!(max_rate(&[step(100, 100), step(200, 150)]), 100.0);
    }
}
