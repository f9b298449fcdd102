//! ntpx-bench: ntpx against chronyd and ntpd-rs, and against the bare-bounce limit.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ntp_proto::nts::Aead;
use ntpx_bench::{
    cpu::{CpuTimes, ProcessCpu},
    generator::{Generator, Step, Template},
    nts_bench,
    report::{BenchReport, ServerResult, bisect, bracket, max_rate, splice, splice_named},
    servers::{self, Peers, ServerKind},
    testrun,
    topology::{
        BenchNet, CLIENT_CPU, FIRST_CLIENT, RingDrops, SERVER_CPU, enter_netns, pin_pid, pin_thread,
    },
};
use std::path::PathBuf;
use std::time::Duration;

/// Run each server in turn under the same load in two network namespaces and report
/// the rate each answers with under 1 % loss, its CPU per request, its processing delay
/// and the offset error its replies give a client; write docs/benchmarks.md's generated
/// section and a JSON copy. Needs root and two CPUs: the generator gets one, the server
/// (process and receive thread) the other. `cargo xtask bench` installs the comparison
/// servers and runs this.
#[derive(Parser, Debug)]
#[command(name = "ntpx-bench", version)]
struct Args {
    /// Servers to run, comma-separated: ntpx-xdp, ntpx-socket, chronyd, ntpd-rs, bounce.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ntpx-xdp,ntpx-socket,chronyd,ntpd-rs,bounce"
    )]
    servers: Vec<String>,
    /// ntpd-rs's daemon binary.
    #[arg(long, default_value = ".tools/ntpd-rs/bin/ntp-daemon")]
    ntpd_rs: PathBuf,
    /// Seconds per ramp step.
    #[arg(long, default_value_t = 2.0)]
    step_secs: f64,
    /// Simulated client addresses.
    #[arg(long, default_value_t = 1024)]
    clients: u32,
    /// The fixed load (requests per second) for the CPU and delay figures; by default
    /// 80 % of the lowest rate a server sustained under 1 % loss.
    #[arg(long)]
    fixed_rate: Option<f64>,
    /// The ramp stops here (requests per second).
    #[arg(long, default_value_t = 16_000_000.0)]
    max_rate: f64,
    /// The AEAD algorithm the NTS clients offer (15: AES-SIV-CMAC-256, the one chronyd
    /// 4.3 has; 30: AES-128-GCM-SIV).
    #[arg(long, default_value_t = 15, value_parser = parse_aead)]
    nts_aead: u16,
    /// Markdown file whose generated section is replaced.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Where to write the JSON copy.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A file holding the accuracy comparison's output, to include.
    #[arg(long)]
    accuracy: Option<PathBuf>,
    /// The command line to print in the report.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
    #[command(subcommand)]
    only: Option<Only>,
}

/// A part of the benchmark run on its own.
#[derive(clap::Subcommand, Debug)]
enum Only {
    /// Print only the `BPF_PROG_TEST_RUN` figures (answering program beside the bare
    /// bounce, the same request): seconds, no namespaces.
    Testrun {
        /// Single runs timed per program.
        #[arg(long, default_value_t = 20_000)]
        runs: usize,
    },
    /// Only the NTS comparison: ntpxd's NTS server (a thread per core, and one thread)
    /// beside chronyd's, NTS requests from a userspace generator; with --markdown, its
    /// section (`bench-nts`) of the file is replaced.
    Nts {
        /// Servers to run, comma-separated: ntpx (--no-xdp, a thread per core), ntpx-1
        /// (one server thread), chronyd, ntpx-xdp (XDP attached), ntpx-xsk (XDP with
        /// `AF_XDP` sockets for NTS).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ntpx,ntpx-1,chronyd,ntpx-xdp,ntpx-xsk"
        )]
        servers: Vec<String>,
    },
}

fn main() -> Result<()> {
    let a = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("ntpx-bench needs root (namespaces, XDP, BPF_PROG_TEST_RUN)");
    }
    if let Some(Only::Testrun { runs }) = a.only {
        let t = testrun::measure(runs.max(1))?;
        println!("{}", t.summary());
        return Ok(());
    }
    if !(a.step_secs > 0.0 && a.step_secs <= 60.0) {
        bail!("--step-secs must be in (0, 60]");
    }
    if let Some(Only::Nts { servers }) = &a.only {
        let servers = servers
            .iter()
            .map(|s| {
                nts_bench::NtsServer::from_key(s).with_context(|| format!("unknown server {s:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        return nts_only(&a, &servers);
    }
    let kinds: Vec<ServerKind> = a
        .servers
        .iter()
        .map(|s| ServerKind::from_key(s).with_context(|| format!("unknown server {s:?}")))
        .collect::<Result<_>>()?;
    let cpus = CpuTimes::now()?.busy_ticks.len();
    if cpus <= SERVER_CPU {
        bail!("two CPUs needed (generator and server apart), found {cpus}");
    }
    set_bin_dir()?;
    let peers = Peers {
        ntpd_rs: a.ntpd_rs.clone(),
    };

    eprintln!("ntpx-bench: BPF_PROG_TEST_RUN timings");
    let testrun = testrun::measure(20_000)?;

    let run_start = CpuTimes::now()?;
    let net = BenchNet::new(30)?;
    enter_netns(net.client.name())?;
    pin_thread(CLIENT_CPU)?;
    let template = Template {
        src_mac: net.client_mac,
        dst_mac: net.server_mac,
        dst: net.link.server_v4.parse()?,
    };
    let mut results = Vec::new();
    for kind in kinds {
        eprintln!("ntpx-bench: {} (ramp)", kind.label());
        let r = ramp(kind, &net, &peers, &template, &a)
            .with_context(|| format!("ramping {}", kind.label()))?;
        results.push(r);
    }
    // The fixed load: what every server sustained (under 1 % loss), or --fixed-rate.
    let fixed_rate = a.fixed_rate.unwrap_or_else(|| {
        let least = results
            .iter()
            .filter(|r| r.kind != ServerKind::Bounce)
            .map(|r| r.max_rate)
            .fold(f64::INFINITY, f64::min);
        if least.is_finite() {
            (least * 0.8).max(1_000.0)
        } else {
            20_000.0
        }
    });
    for r in &mut results {
        eprintln!("ntpx-bench: {} at {fixed_rate:.0}/s", r.kind.label());
        fixed_load(r, &net, &peers, &template, &a, fixed_rate)
            .with_context(|| format!("fixed load on {}", r.kind.label()))?;
        if r.kind != ServerKind::Bounce {
            eprintln!(
                "ntpx-bench: {} interleaved at {XLEAVE_RATE:.0}/s",
                r.kind.label()
            );
            let mut sess = Session::start(r.kind, &net, &peers, &template, &a)?;
            sess.g.set_xleave(true)?;
            let s = sess
                .step(
                    &net,
                    XLEAVE_RATE,
                    Duration::from_secs_f64(a.step_secs.max(3.0)),
                )
                .with_context(|| format!("interleaved load on {}", r.kind.label()))?;
            show(&s, " (interleaved)");
            r.xleave = Some(s);
        }
    }

    let report = BenchReport {
        date: utc_now(),
        kernel: command_line("uname", &["-sr"]),
        cpu: cpu_model(cpus),
        command: a.command.clone(),
        clients: a.clients,
        step_secs: a.step_secs,
        fixed_rate,
        steal: CpuTimes::now()?.steal_since(&run_start),
        testrun,
        servers: results,
        accuracy: match &a.accuracy {
            Some(p) => Some(
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            ),
            None => None,
        },
    };
    let md = report.markdown();
    println!("{md}");
    if let Some(p) = &a.json {
        let json = serde_json::to_string_pretty(&report)?;
        ntp_user::os::atomic_file::write_atomically(p, json.as_bytes())?;
    }
    if let Some(p) = &a.markdown {
        let doc = std::fs::read_to_string(p).unwrap_or_default();
        ntp_user::os::atomic_file::write_atomically(p, splice(&doc, &md).as_bytes())?;
    }
    Ok(())
}

/// The NTS comparison on a network of its own.
fn nts_only(a: &Args, servers: &[nts_bench::NtsServer]) -> Result<()> {
    let aead = Aead::from_id(a.nts_aead).context("--nts-aead")?;
    set_bin_dir()?;
    let net = BenchNet::new(31)?;
    net.moderate_interrupts()?;
    // The generator pins its own threads: servers started from this thread may use
    // every CPU (a thread per core is what ntpx's NTS server is measured with).
    enter_netns(net.client.name())?;
    let (results, request_len) = nts_bench::run(
        &net,
        servers,
        Duration::from_secs_f64(a.step_secs),
        a.fixed_rate,
        aead,
    )?;
    let md = nts_bench::markdown(&results, &utc_now(), &a.command, request_len, aead);
    println!("{md}");
    if let Some(p) = &a.markdown {
        let doc = std::fs::read_to_string(p).unwrap_or_default();
        let out = splice_named(&doc, "bench-nts", &md);
        ntp_user::os::atomic_file::write_atomically(p, out.as_bytes())?;
    }
    Ok(())
}

/// An AEAD algorithm number NTS supports here.
fn parse_aead(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|id| Aead::from_id(*id).is_some())
        .ok_or_else(|| format!("\"{s}\" is not 15 or 30"))
}

/// Where the test helpers find ntpxd: beside this binary, unless set.
fn set_bin_dir() -> Result<()> {
    if std::env::var_os("NTPX_BIN_DIR").is_none() {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("binary directory")?;
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("NTPX_BIN_DIR", dir) };
    }
    Ok(())
}

/// The rate of the interleaved load: modest, so every client's next request leaves well
/// after its last reply arrived (each of 1024 clients polls about every 0.2 s).
const XLEAVE_RATE: f64 = ntpx_bench::report::XLEAVE_RATE_REPORTED;

/// A server running with the generator attached and ready.
struct Session {
    running: servers::Running,
    g: Generator,
}

impl Session {
    fn start(
        kind: ServerKind,
        net: &BenchNet,
        peers: &Peers,
        template: &Template,
        a: &Args,
    ) -> Result<Self> {
        let running = servers::start(kind, net, peers)?;
        let mut g = Generator::new(
            &net.link.client_if,
            template,
            FIRST_CLIENT,
            a.clients,
            kind.echoes(),
        )?;
        net.pin_napi()?;
        // Ready when a probe is answered (daemons start asynchronously).
        let mut ready = false;
        for _ in 0..40 {
            if g.step(2_000.0, Duration::from_millis(250))?.answered > 0 {
                ready = true;
                break;
            }
        }
        if !ready {
            bail!("no replies after 10 s:\n{}", running.log());
        }
        if let Some(pid) = running.pid() {
            // Threads started since the first pinning.
            pin_pid(pid, SERVER_CPU)?;
        }
        // A discarded warm-up step: first requests meet cold caches and lazy set-up.
        g.step(10_000.0, Duration::from_secs(1))?;
        Ok(Session { running, g })
    }

    /// One step, with the requests and replies the veth rings refused on each side.
    fn step(&mut self, net: &BenchNet, rate: f64, length: Duration) -> Result<Step> {
        let before = RingDrops::read(net)?;
        let mut s = self.g.step(rate, length)?;
        let after = RingDrops::read(net)?;
        s.refused_by_server_end = after.server_end.saturating_sub(before.server_end);
        s.refused_by_client_end = after.client_end.saturating_sub(before.client_end);
        Ok(s)
    }
}

fn show(s: &Step, what: &str) {
    eprintln!(
        "  offered {:>10.0}/s answered {:>10.0}/s loss {:>6.2} %{what}",
        s.offered_rate,
        s.answered_rate(),
        100.0 * s.loss()
    );
}

/// Ramps the rate until the server loses over half, the generator falls behind or the
/// ceiling is reached, then bisects between the last step under 1 % loss and the first
/// over it.
fn ramp(
    kind: ServerKind,
    net: &BenchNet,
    peers: &Peers,
    template: &Template,
    a: &Args,
) -> Result<ServerResult> {
    let mut sess = Session::start(kind, net, peers, template, a)?;
    let step = Duration::from_secs_f64(a.step_secs);
    let mut notes = Vec::new();
    let mut ramp: Vec<Step> = Vec::new();
    let mut rate = 10_000.0f64;
    loop {
        let s = sess.step(net, rate, step)?;
        show(&s, "");
        // The pacer keeps the offered rate within a few percent of the target while
        // the generator keeps up; well short of it, the generator is the limit.
        let generator_limited = s.offered_rate < 0.8 * rate;
        let lossy = s.loss() > 0.5;
        ramp.push(s);
        if generator_limited {
            notes.push(format!(
                "the generator's limit was reached at {:.0} requests/s offered",
                ramp.last().map_or(0.0, |s| s.offered_rate)
            ));
            break;
        }
        if lossy || rate * 2.0 > a.max_rate {
            break;
        }
        rate *= 2.0;
    }
    if let Some(between) = bracket(ramp.iter().map(|s| (s.target_rate, s.loss()))) {
        bisect(between, |rate| {
            let s = sess.step(net, rate, step)?;
            show(&s, " (bisecting)");
            let good = s.loss() < 0.01;
            ramp.push(s);
            Ok(good)
        })?;
    }
    Ok(ServerResult {
        kind,
        max_rate: max_rate(&ramp),
        ramp,
        fixed: None,
        xleave: None,
        cpu_us_per_request: None,
        program_ns_per_run: None,
        notes,
    })
}

/// The fixed-load step: delays, offset error and the CPU the server's threads used.
fn fixed_load(
    r: &mut ServerResult,
    net: &BenchNet,
    peers: &Peers,
    template: &Template,
    a: &Args,
    rate: f64,
) -> Result<()> {
    let mut sess = Session::start(r.kind, net, peers, template, a)?;
    // The server's threads: its process (if any) and the server end's receive thread,
    // where XDP runs and where a socket server's packets cross the stack.
    let mut threads = net.server_napi_threads()?;
    threads.extend(sess.running.pid());
    let snapshot = || {
        threads
            .iter()
            .map(|p| ProcessCpu::of(*p))
            .collect::<Vec<_>>()
    };
    // The kernel's own count of the serving program's run time (BPF_STATS_RUN_TIME),
    // on only while this file descriptor lives.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics: {e}"))?;
    let prog = match r.kind {
        ServerKind::NtpxXdp => Some(ntp_common::state::PROG_SERVE),
        ServerKind::Bounce => Some(ntp_common::load::PROG_BOUNCE),
        _ => None,
    };
    let prog_before = prog.map(program_stats);
    let before = snapshot();
    let fixed = sess.step(net, rate, Duration::from_secs_f64(a.step_secs.max(3.0)))?;
    let used_ns: u64 = snapshot()
        .iter()
        .zip(&before)
        .map(|(after, before)| after.ns_since(before))
        .sum();
    if let (Some(p), Some((t0, n0))) = (prog, prog_before) {
        let (t1, n1) = program_stats(p);
        if n1 > n0 {
            r.program_ns_per_run = Some(t1.saturating_sub(t0) as f64 / (n1 - n0) as f64);
        }
    }
    show(&fixed, " (fixed load)");
    r.cpu_us_per_request =
        (fixed.answered > 0).then(|| used_ns as f64 / 1e3 / fixed.answered as f64);
    if fixed.loss() >= 0.01 {
        r.notes.push(format!(
            "lost {:.1} % at the fixed load",
            100.0 * fixed.loss()
        ));
    }
    if fixed.unsynchronised > 0 {
        r.notes.push(
            "answers with leap indicator 3 (it has no sources, so it calls itself \
             unsynchronised); every reply was still counted as answered"
                .into(),
        );
    }
    r.fixed = Some(fixed);
    Ok(())
}

/// (run time ns, runs) summed over loaded programs named `name`.
fn program_stats(name: &str) -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .fold((0, 0), |(t, n), p| {
            (t + p.run_time().as_nanos() as u64, n + p.run_count())
        })
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model(cpus: usize) -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".into(), |(_, m)| m.trim().to_string());
    format!("{model}, {cpus} CPUs")
}

fn utc_now() -> String {
    command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}
