//! ntpx-load: the kernel load generator on its own, in the current network namespace.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ntpx_bench::generator::{Generator, Template};
use ntpx_bench::topology::{FIRST_CLIENT, parse_mac};
use std::time::Duration;

/// Send NTP client requests out of IFACE at rising rates and report, per step, the
/// offered and answered rates, loss, invalid replies and response times.
///
/// Requests are crafted by an XDP program run with `BPF_PROG_TEST_RUN` live frames (no
/// socket): from CLIENTS addresses starting at 198.19.0.1, ports spread, each carrying
/// its departure time as transmit timestamp. A second XDP program on IFACE matches
/// replies by their origin timestamp and times them. IFACE must be a veth end whose peer
/// has NAPI (an XDP program, or GRO on). Needs root. Run it inside the client's
/// namespace (`ip netns exec NS ntpx-load ...`); the server must route 198.19.0.0/16
/// back through IFACE.
#[derive(Parser, Debug)]
#[command(name = "ntpx-load", version)]
struct Args {
    /// Interface to send from (the client end of a veth pair).
    #[arg(long)]
    iface: String,
    /// Server IPv4 address.
    #[arg(long)]
    server: std::net::Ipv4Addr,
    /// Server MAC address (aa:bb:cc:dd:ee:ff).
    #[arg(long)]
    server_mac: String,
    /// Requests per second of each step, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,20000,50000,100000"
    )]
    rates: Vec<f64>,
    /// Seconds per step.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Number of simulated client addresses.
    #[arg(long, default_value_t = 1024)]
    clients: u32,
    /// The target bounces requests back unchanged (a bare bounce program).
    #[arg(long)]
    echo: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.secs <= 0.0 || a.secs > 600.0 {
        bail!("--secs must be in (0, 600]");
    }
    if a.rates.iter().any(|r| !(*r > 0.0 && *r <= 50e6)) {
        bail!("every rate must be in (0, 50e6] per second");
    }
    let server_mac =
        parse_mac(&a.server_mac).context("--server-mac: expected aa:bb:cc:dd:ee:ff")?;
    let own = std::fs::read_to_string(format!("/sys/class/net/{}/address", a.iface))
        .with_context(|| format!("no interface {}", a.iface))?;
    let src_mac = parse_mac(own.trim()).context("reading the interface's MAC")?;
    let template = Template {
        src_mac,
        dst_mac: server_mac,
        dst: a.server,
    };
    let mut g = Generator::new(&a.iface, &template, FIRST_CLIENT, a.clients, a.echo)?;
    println!(
        "offered/s  answered/s  loss%  invalid  late  rtt_min_ns rtt_p50_ns rtt_p99_ns rtt_max_ns"
    );
    for rate in &a.rates {
        let s = g.step(*rate, Duration::from_secs_f64(a.secs))?;
        let r = s.rtt.unwrap_or_default();
        println!(
            "{:>9.0}  {:>10.0}  {:>5.2}  {:>7}  {:>4}  {:>10} {:>10} {:>10} {:>10}",
            s.offered_rate,
            s.answered_rate(),
            100.0 * s.loss(),
            s.invalid,
            s.stale,
            r.min,
            r.p50,
            r.p99,
            r.max
        );
    }
    Ok(())
}
