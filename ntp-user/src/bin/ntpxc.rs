//! ntpxc: the ntpx control client, in the manner of chronyc.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use ntp_user::{
    control::{self, Request, Response},
    report,
};
use std::path::PathBuf;

/// Default control socket of ntpxd.
const DEFAULT_SOCKET: &str = "/run/ntpx/ntpxd.sock";

/// Query and control ntpxd (chronyc's commands and output layout).
#[derive(Parser, Debug)]
#[command(name = "ntpxc", version, disable_help_flag = true)]
struct Args {
    /// The daemon's control socket (a path, as chrony's `bindcmdaddress`).
    #[arg(short = 'h', long = "host", default_value = DEFAULT_SOCKET, value_name = "SOCKET")]
    host: PathBuf,
    /// Print comma-separated values instead of the aligned report.
    #[arg(short = 'c')]
    csv: bool,
    /// Do not resolve addresses to names (accepted; nothing is resolved yet).
    #[arg(short = 'n')]
    numeric: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
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
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (req, verbose) = match args.command {
        Command::Serverstats => (Request::Serverstats, false),
        Command::Xdpstats => (Request::Xdpstats, false),
        Command::Sources { verbose } => (Request::Sources, verbose),
        Command::Tracking => (Request::Tracking, false),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resp = rt.block_on(control::call(&args.host, &req))?;
    match resp {
        Response::Serverstats(s) if args.csv => print!("{}", s.render_csv()),
        Response::Serverstats(s) => print!("{}", s.render()),
        Response::Xdpstats(s) => print!("{}", s.render()),
        Response::Sources(rows) if args.csv => print!("{}", report::render_sources_csv(&rows)),
        Response::Sources(rows) => print!("{}", report::render_sources(&rows, verbose)),
        Response::Tracking(t) if args.csv => print!("{}", t.render_csv()),
        Response::Tracking(t) => print!("{}", t.render()),
        Response::Error(e) => bail!("ntpxd: {e}"),
    }
    Ok(())
}
