//! ntpxd: the ntpx NTP server daemon.

use anyhow::{Context, Result};
use clap::Parser;
use ntp_user::{daemon, os::config_files};
use std::{io::IsTerminal, path::PathBuf};

/// NTP server whose fast path answers client requests in the kernel (XDP).
///
/// Reads chrony.conf syntax. Plain client requests are answered by an XDP program at the
/// network driver; everything else (and everything with --no-xdp) by the daemon's own
/// socket. The daemon republishes the server state every second; if it dies, the kernel
/// stops answering within the staleness limit (`xdpstalelimit`, default 10 s) and clients
/// fail over to another server.
#[derive(Parser, Debug)]
#[command(name = "ntpxd", version)]
struct Args {
    /// Configuration file (chrony.conf syntax).
    #[arg(short = 'f', long = "config", default_value = "/etc/ntpx.conf")]
    config: PathBuf,
    /// Never adjust the system clock (the mode every test uses).
    #[arg(short = 'x')]
    no_clock_control: bool,
    /// Attach the XDP program to this interface (repeatable); default: the interfaces that
    /// carry the served addresses.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// Do not load the XDP program; answer every request from the daemon's socket.
    #[arg(long)]
    no_xdp: bool,
    /// Threads answering the requests the daemon's socket gets (all with --no-xdp; with
    /// XDP, authenticated and NTS requests and whatever the program passes up), each on a
    /// socket of its own sharing the port (the kernel spreads clients over them). 0: the
    /// timekeeping thread answers them, as chronyd does. Default: one per core when this
    /// is an NTS server (ntsservercert), else 0.
    #[arg(long, value_name = "N")]
    server_threads: Option<usize>,
    /// Take authenticated and NTS requests arriving on the interfaces the XDP program
    /// serves from `AF_XDP` sockets (one per receive queue, each with a thread), past the
    /// kernel's socket layer, instead of from the daemon's UDP sockets: less CPU per
    /// request. Their replies are never interleaved. Needs the XDP fast path.
    #[arg(long, conflicts_with = "no_xdp")]
    xsk: bool,
    /// Stay in the foreground and log to stderr (ntpxd never forks; accepted for chronyd compatibility).
    #[arg(short = 'd', action = clap::ArgAction::Count)]
    debug: u8,
    /// Do not detach from the terminal (accepted for chronyd compatibility).
    #[arg(short = 'n')]
    no_detach: bool,
    /// Run as USER once the fast path is attached and the sockets are bound, keeping only
    /// `CAP_SYS_TIME` (none with -x). The driftfile's directory must be writable by USER.
    #[arg(short = 'u', value_name = "USER")]
    user: Option<String>,
    /// Print the effective configuration (chrony.conf syntax) and exit; non-zero on errors.
    #[arg(short = 'p')]
    print_config: bool,
    /// Log level filter (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let level = if args.debug > 1 {
        "debug"
    } else {
        args.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Under systemd the journal stamps every line itself, and reads its priority from a
    // "<N>" prefix (sd-daemon(3)).
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_target(false);
        fmt.event_format(ntp_user::os::journal_priority::Prefixed(format))
            .init();
    } else {
        fmt.init();
    }
    let cfg = config_files::load(&args.config)?;
    if args.print_config {
        for w in &cfg.warnings {
            eprintln!("warning: {w}");
        }
        print!("{}", ntp_proto::config::render(&cfg));
        return Ok(());
    }
    let opts = daemon::Options {
        no_clock_control: args.no_clock_control,
        no_xdp: args.no_xdp,
        interfaces: args.interfaces,
        user: args.user,
        config_path: args.config.clone(),
        server_threads: args.server_threads,
        xsk: args.xsk,
    };
    // Timekeeping runs on this thread; the runtime's other threads only do blocking work
    // for control requests (reports of many thousand clients, file reads), at a lower
    // priority so a flood of them cannot take the CPU from the clock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(ntp_user::os::lower_thread_priority)
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(daemon::run(cfg, opts))
}
