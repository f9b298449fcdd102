//! ntpxc: the ntpx control client, in the manner of chronyc.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use ntp_proto::{
    control::{Request, Response},
    report,
};
use ntpxc::client;
use std::path::PathBuf;

/// Where the daemon is.
enum Target {
    /// Its Unix control socket.
    Socket(PathBuf),
    /// Its UDP command port.
    Udp(std::net::SocketAddr),
}

impl Target {
    fn parse(host: &str, port: u16) -> Result<Self> {
        if host.starts_with('/') {
            return Ok(Target::Socket(PathBuf::from(host)));
        }
        use std::net::ToSocketAddrs;
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} has no address"))?;
        Ok(Target::Udp(addr))
    }

    fn call(&self, req: &Request) -> Result<Response> {
        match self {
            Target::Socket(p) => client::call(p, req),
            Target::Udp(a) => client::call_udp(*a, req),
        }
    }
}

/// Default control socket of ntpxd.
const DEFAULT_SOCKET: &str = "/run/ntpx/ntpxd.sock";

/// Query and control ntpxd (chronyc's commands and output layout).
#[derive(Parser, Debug)]
#[command(name = "ntpxc", version, disable_help_flag = true)]
struct Args {
    /// The daemon: its control socket (a path, all commands) or a host name or address
    /// (its UDP command port, read-only commands).
    #[arg(short = 'h', long = "host", default_value = DEFAULT_SOCKET, value_name = "HOST|SOCKET")]
    host: String,
    /// Print comma-separated values instead of the aligned report.
    #[arg(short = 'c')]
    csv: bool,
    /// Do not resolve addresses to names (accepted; nothing is resolved yet).
    #[arg(short = 'n')]
    numeric: bool,
    /// UDP command port of a host given with -h.
    #[arg(short = 'p', value_name = "PORT", default_value_t = 323)]
    port: u16,
    /// Authenticate commands (accepted for chronyc compatibility; the Unix socket needs no
    /// authentication).
    #[arg(short = 'a')]
    auth: bool,
    /// Print the version and exit.
    #[arg(short = 'v', action = clap::ArgAction::Version)]
    print_version: Option<bool>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// With no command, ntpxc reads commands from its input at an `ntpxc>` prompt.
    #[command(subcommand)]
    command: Option<Command>,
}

/// One line typed at the interactive prompt.
#[derive(Parser, Debug)]
#[command(
    name = "",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Server counters: NTP and command packets, and the XDP fast path's share.
    Serverstats,
    /// The XDP fast path: interfaces it is attached to and every kernel counter.
    Xdpstats,
    /// The time sources: state, stratum, poll, reachability, last sample.
    Sources {
        /// Print the legend explaining the columns.
        #[arg(short = 'v')]
        verbose: bool,
    },
    /// The reference and the state of the system clock.
    Tracking,
    /// Per-source statistics: samples, runs, span, frequency, skew, offset, deviation.
    Sourcestats {
        /// Print the legend explaining the columns.
        #[arg(short = 'v')]
        verbose: bool,
    },
    /// How many sources are online, offline or not yet resolved.
    Activity,
    /// NTP clients seen by the kernel's fast path and the daemon: requests, drops, interval.
    Clients,
    /// Each source's state in selection, options, score and offset interval.
    Selectdata {
        /// Print the legend explaining the columns.
        #[arg(short = 'v')]
        verbose: bool,
    },
    /// The last exchange with each source (or the one at ADDRESS), field by field.
    Ntpdata {
        /// Address of the source.
        address: Option<std::net::IpAddr>,
    },
    /// How each source is authenticated: symmetric key, NTS (cookies, key exchanges).
    Authdata,
    /// Send a burst of four requests to every source now.
    Burst,
    /// Re-read the sourcedir files: `reload sources`.
    Reload {
        /// What to reload (only "sources").
        #[arg(value_parser = ["sources"])]
        what: String,
    },
    /// Stop polling a source (every source without an address).
    Offline {
        /// Address of the source.
        address: Option<std::net::IpAddr>,
    },
    /// Resume polling a source (every source without an address).
    Online {
        /// Address of the source.
        address: Option<std::net::IpAddr>,
    },
    /// Step the clock by the correction left now; or, with THRESHOLD LIMIT, set makestep.
    Makestep {
        /// Step threshold in seconds.
        threshold: Option<f64>,
        /// Number of updates in which stepping is allowed (-1: no limit).
        #[arg(allow_negative_numbers = true)]
        limit: Option<i32>,
    },
    /// Wait until synchronised: `MAX_TRIES` (0: forever), `MAX_CORRECTION` seconds (0: any),
    /// `MAX_SKEW` ppm (0: any), INTERVAL seconds between tries (default 10).
    Waitsync {
        /// Tries before giving up (0: no limit).
        #[arg(default_value_t = 0)]
        max_tries: u32,
        /// Largest remaining correction accepted, seconds (0: any).
        #[arg(default_value_t = 0.0)]
        max_correction: f64,
        /// Largest skew accepted, ppm (0: any).
        #[arg(default_value_t = 0.0)]
        max_skew: f64,
        /// Seconds between tries.
        #[arg(default_value_t = 10.0)]
        interval: f64,
    },
}

/// Polls `tracking` until the daemon is synchronised within the limits (chronyc waitsync).
fn waitsync(
    host: &Target,
    max_tries: u32,
    max_correction: f64,
    max_skew: f64,
    interval: f64,
) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        let t = match host.call(&Request::Tracking)? {
            Response::Tracking(t) => t,
            Response::Error(e) => bail!("ntpxd: {e}"),
            other => bail!("unexpected response {other:?}"),
        };
        let synced = t.refid != 0 && t.leap != 3;
        println!(
            "try: {tries}, refid: {:08X}, correction: {:.9}, skew: {:.3}",
            t.refid,
            t.system_time.abs(),
            t.skew_ppm
        );
        if synced
            && (max_correction == 0.0 || t.system_time.abs() <= max_correction)
            && (max_skew == 0.0 || t.skew_ppm <= max_skew)
        {
            return Ok(());
        }
        if max_tries != 0 && tries >= max_tries {
            bail!("not synchronised after {tries} tries");
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(interval.max(0.1)));
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let target = Target::parse(&args.host, args.port)?;
    match args.command {
        Some(cmd) => execute(&target, args.csv, &cmd),
        None => interactive(&target, args.csv),
    }
}

/// chronyc's interactive mode: a prompt, one command per line, `quit` or end of input ends.
fn interactive(host: &Target, csv: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let prompt = stdin.is_terminal();
    if prompt {
        println!("ntpxc version {}", env!("CARGO_PKG_VERSION"));
    }
    let mut lines = stdin.lock().lines();
    loop {
        if prompt {
            print!("ntpxc> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next() else {
            return Ok(());
        };
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            None => continue,
            Some("quit" | "exit") => return Ok(()),
            Some("help") => {
                let _ = <Line as clap::CommandFactory>::command().print_help();
                continue;
            }
            Some(_) => {}
        }
        match Line::try_parse_from(&words) {
            Ok(l) => {
                if let Err(e) = execute(host, csv, &l.command) {
                    eprintln!("{e:#}");
                }
            }
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// Runs one command against the daemon and prints its answer.
fn execute(host: &Target, csv: bool, command: &Command) -> Result<()> {
    if let Command::Waitsync {
        max_tries,
        max_correction,
        max_skew,
        interval,
    } = *command
    {
        return waitsync(host, max_tries, max_correction, max_skew, interval);
    }
    let (req, verbose) = match *command {
        Command::Serverstats => (Request::Serverstats, false),
        Command::Xdpstats => (Request::Xdpstats, false),
        Command::Sources { verbose } => (Request::Sources, verbose),
        Command::Tracking => (Request::Tracking, false),
        Command::Sourcestats { verbose } => (Request::Sourcestats, verbose),
        Command::Activity => (Request::Activity, false),
        Command::Selectdata { verbose } => (Request::Selectdata, verbose),
        Command::Clients => (Request::Clients, false),
        Command::Ntpdata { address } => (Request::Ntpdata { address }, false),
        Command::Authdata => (Request::Authdata, false),
        Command::Burst => (Request::Burst, false),
        Command::Reload { .. } => (Request::ReloadSources, false),
        Command::Offline { address } => (Request::Offline { address }, false),
        Command::Online { address } => (Request::Online { address }, false),
        Command::Makestep { threshold, limit } => (Request::Makestep { threshold, limit }, false),
        Command::Waitsync { .. } => unreachable!("handled above"),
    };
    let resp = host.call(&req)?;
    match resp {
        Response::Serverstats(s) if csv => print!("{}", s.render_csv()),
        Response::Serverstats(s) => print!("{}", s.render()),
        Response::Xdpstats(s) => print!("{}", s.render()),
        Response::Sources(rows) if csv => print!("{}", report::render_sources_csv(&rows)),
        Response::Sources(rows) => print!("{}", report::render_sources(&rows, verbose)),
        Response::Tracking(t) if csv => print!("{}", t.render_csv()),
        Response::Tracking(t) => print!("{}", t.render()),
        Response::Sourcestats(rows) if csv => print!("{}", report::render_sourcestats_csv(&rows)),
        Response::Sourcestats(rows) => print!("{}", report::render_sourcestats(&rows, verbose)),
        Response::Activity(a) if csv => print!("{}", a.render_csv()),
        Response::Activity(a) => print!("{}", a.render()),
        Response::Clients(rows) if csv => print!("{}", report::render_clients_csv(&rows)),
        Response::Clients(rows) => print!("{}", report::render_clients(&rows)),
        Response::Selectdata(rows) if csv => print!("{}", report::render_selectdata_csv(&rows)),
        Response::Selectdata(rows) => print!("{}", report::render_selectdata(&rows, verbose)),
        Response::Ntpdata(rows) => rows.iter().for_each(|r| print!("{}", r.render())),
        Response::Authdata(rows) if csv => print!("{}", report::render_authdata_csv(&rows)),
        Response::Authdata(rows) => print!("{}", report::render_authdata(&rows)),
        Response::Ok => println!("200 OK"),
        Response::Error(e) => bail!("ntpxd: {e}"),
        Response::TooLarge(n) => {
            bail!("ntpxd: the reply ({n} bytes) does not fit the command port")
        }
    }
    Ok(())
}
