//! ntpx-testserver: an NTP server whose time is wrong by a known amount.
//!
//! Serves the system clock plus `--offset`, drifting by `--drift` ppm from the moment it
//! starts. `--jitter S` adds queueing on both ways, exponential with mean S each: a
//! request waits before it is stamped and a reply after, as in a loaded network, so the
//! delays a client measures are real and asymmetric. Every process here shares one system
//! clock, so a client's error against this server's truth is exactly measurable.

use anyhow::{Context, Result, bail};
use ntp_common::{prng::XorShift, timebase::unix_ns_to_ntp, wire};
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Args {
    listen: String,
    offset: f64,
    drift_ppm: f64,
    jitter: f64,
    stratum: u8,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        listen: "0.0.0.0:123".into(),
        offset: 0.0,
        drift_ppm: 0.0,
        jitter: 0.0,
        stratum: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => a.listen = value()?,
            "--offset" => a.offset = value()?.parse().context("--offset SECONDS")?,
            "--drift" => a.drift_ppm = value()?.parse().context("--drift PPM")?,
            "--jitter" => a.jitter = value()?.parse().context("--jitter SECONDS")?,
            "--stratum" => a.stratum = value()?.parse().context("--stratum N")?,
            "--help" | "-h" => {
                println!(
                    "ntpx-testserver [--listen ADDR:PORT] [--offset S] [--drift PPM] [--jitter S] [--stratum N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(a)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let sock = UdpSocket::bind(&a.listen).with_context(|| format!("binding {}", a.listen))?;
    let start = now_ns();
    let mut rng = XorShift::new(start);
    // The served time: system time + offset + drift since start.
    let served = |t: u64| -> u64 {
        let err = a.offset + a.drift_ppm * 1e-6 * (t - start) as f64 * 1e-9;
        unix_ns_to_ntp((t as i128 + (err * 1e9) as i128) as u64)
    };
    // One queueing delay, exponential with mean `--jitter`.
    let queue = |rng: &mut XorShift| -> Duration {
        Duration::from_secs_f64(-a.jitter * (1.0 - rng.unit()).ln())
    };
    eprintln!(
        "ntpx-testserver: listening on {} (offset {} s, drift {} ppm, jitter {} s, stratum {})",
        sock.local_addr()?,
        a.offset,
        a.drift_ppm,
        a.jitter,
        a.stratum
    );
    let mut buf = [0u8; 1500];
    loop {
        let (n, src) = sock.recv_from(&mut buf).context("receiving")?;
        if n != wire::NTP_HEADER_LEN || !wire::is_answerable_request(buf[0]) {
            continue;
        }
        // The request waited in a queue before it was stamped.
        std::thread::sleep(queue(&mut rng));
        let rx = served(now_ns());
        let (_, version, _) = wire::split_li_vn_mode(buf[0]);
        let mut reply = [0u8; wire::NTP_HEADER_LEN];
        reply[0] = wire::li_vn_mode(0, version, wire::MODE_SERVER);
        reply[wire::OFF_STRATUM] = a.stratum;
        reply[wire::OFF_POLL] = buf[wire::OFF_POLL];
        reply[wire::OFF_PRECISION] = (-20i8) as u8;
        reply[wire::OFF_ROOT_DISP..][..4].copy_from_slice(&0x10u32.to_be_bytes());
        reply[wire::OFF_REFID..][..4].copy_from_slice(b"TEST");
        reply[wire::OFF_REF_TS..][..8].copy_from_slice(&rx.to_be_bytes());
        reply[wire::OFF_ORIGIN_TS..][..8].copy_from_slice(&buf[wire::OFF_TRANSMIT_TS..][..8]);
        reply[wire::OFF_RECEIVE_TS..][..8].copy_from_slice(&rx.to_be_bytes());
        let tx = served(now_ns());
        reply[wire::OFF_TRANSMIT_TS..][..8].copy_from_slice(&tx.to_be_bytes());
        // And the reply waits after it.
        std::thread::sleep(queue(&mut rng));
        sock.send_to(&reply, src).context("sending")?;
    }
}
