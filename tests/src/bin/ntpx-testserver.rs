//! ntpx-testserver: an NTP server whose time is wrong by a known amount.
//!
//! Serves the system clock plus `--offset`, drifting by `--drift` ppm from the moment it
//! starts, its frequency wandering by `--wander` ppm (a sine of period `--wander-period`
//! seconds, so the truth stays a formula the tests can evaluate). `--jitter S` adds queueing on both ways, exponential with mean S each: a
//! request waits before it is stamped and a reply after, as in a loaded network, so the
//! delays a client measures are real and asymmetric. Every process here shares one system
//! clock, so a client's error against this server's truth is exactly measurable.
//!
//! Hostile modes for the client's defences: `--kod CODE` answers every request with a
//! Kiss-o'-Death, `--bad-origin` answers with an origin timestamp that is not the
//! request's, `--duplicate` sends each reply twice, and `--precision`, `--root-delay`,
//! `--root-dispersion` put any value (extreme ones included) in those fields.

use anyhow::{Context, Result, bail};
use ntp_common::{prng::XorShift, timebase::unix_ns_to_ntp, wire};
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Args {
    listen: String,
    offset: f64,
    drift_ppm: f64,
    jitter: f64,
    wander_ppm: f64,
    wander_period: f64,
    stratum: u8,
    leap: u8,
    hostile: Hostile,
}

/// What the server does wrong on purpose.
#[derive(Clone, Copy)]
struct Hostile {
    kod: Option<[u8; 4]>,
    bad_origin: bool,
    duplicate: bool,
    precision: i8,
    root_delay: u32,
    root_dispersion: u32,
}

/// Seconds as NTP short format (16.16), saturating.
fn short(seconds: f64) -> u32 {
    (seconds * 65536.0).clamp(0.0, f64::from(u32::MAX)) as u32
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        listen: "0.0.0.0:123".into(),
        offset: 0.0,
        drift_ppm: 0.0,
        jitter: 0.0,
        wander_ppm: 0.0,
        wander_period: 60.0,
        stratum: 1,
        leap: 0,
        hostile: Hostile {
            kod: None,
            bad_origin: false,
            duplicate: false,
            precision: -20,
            root_delay: 0,
            root_dispersion: 0x10,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => a.listen = value()?,
            "--offset" => a.offset = value()?.parse().context("--offset SECONDS")?,
            "--drift" => a.drift_ppm = value()?.parse().context("--drift PPM")?,
            "--jitter" => a.jitter = value()?.parse().context("--jitter SECONDS")?,
            "--wander" => a.wander_ppm = value()?.parse().context("--wander PPM")?,
            "--wander-period" => {
                a.wander_period = value()?.parse().context("--wander-period SECONDS")?;
            }
            "--stratum" => a.stratum = value()?.parse().context("--stratum N")?,
            "--leap" => a.leap = value()?.parse().context("--leap 0-3")?,
            "--kod" => {
                let code = value()?;
                a.hostile.kod = Some(
                    code.as_bytes()
                        .try_into()
                        .with_context(|| format!("--kod CODE: four characters, not {code:?}"))?,
                );
            }
            "--bad-origin" => a.hostile.bad_origin = true,
            "--duplicate" => a.hostile.duplicate = true,
            "--precision" => a.hostile.precision = value()?.parse().context("--precision LOG2")?,
            "--root-delay" => {
                a.hostile.root_delay = short(value()?.parse().context("--root-delay SECONDS")?);
            }
            "--root-dispersion" => {
                a.hostile.root_dispersion =
                    short(value()?.parse().context("--root-dispersion SECONDS")?);
            }
            "--help" | "-h" => {
                println!(
                    "ntpx-testserver [--listen ADDR:PORT] [--offset S] [--drift PPM] [--jitter S] [--wander PPM] [--wander-period S] [--stratum N] [--leap 0-3] [--kod CODE] [--bad-origin] [--duplicate] [--precision LOG2] [--root-delay S] [--root-dispersion S]"
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
    let truth = ntpx_tests::Truth {
        offset: a.offset,
        drift_ppm: a.drift_ppm,
        wander_ppm: a.wander_ppm,
        wander_period: a.wander_period,
    };
    let start = now_ns();
    let mut rng = XorShift::new(start);
    // The served time: system time + offset + drift since start + the wander's phase.
    let served = move |t: u64| -> u64 {
        let err = truth.error((t - start) as f64 * 1e-9);
        unix_ns_to_ntp((t as i128 + (err * 1e9) as i128) as u64)
    };
    let (stratum, leap, hostile) = (a.stratum, a.leap, a.hostile);
    // One queueing delay, exponential with mean `--jitter`.
    let queue = |rng: &mut XorShift| -> Duration {
        Duration::from_secs_f64(-a.jitter * (1.0 - rng.unit()).ln())
    };
    eprintln!(
        "ntpx-testserver: listening on {} (offset {} s, drift {} ppm, jitter {} s, wander {} ppm over {} s, stratum {}), start {start}",
        sock.local_addr()?,
        a.offset,
        a.drift_ppm,
        a.jitter,
        a.wander_ppm,
        a.wander_period,
        a.stratum
    );
    let mut buf = [0u8; 1500];
    loop {
        let (n, src) = sock.recv_from(&mut buf).context("receiving")?;
        if n != wire::NTP_HEADER_LEN || !wire::is_answerable_request(buf[0]) {
            continue;
        }
        let request: [u8; wire::NTP_HEADER_LEN] = buf[..n].try_into().context("request length")?;
        let (q_in, q_out) = (queue(&mut rng), queue(&mut rng));
        let sock = sock.try_clone().context("cloning the socket")?;
        // Each request queues on its own: one client's wait is not another's.
        std::thread::spawn(move || {
            // The request waited in a queue before it was stamped.
            std::thread::sleep(q_in);
            let reply = answer(&request, served(now_ns()), (stratum, leap), hostile, || {
                served(now_ns())
            });
            // And the reply waits after it.
            std::thread::sleep(q_out);
            let _ = sock.send_to(&reply, src);
            if hostile.duplicate {
                let _ = sock.send_to(&reply, src);
            }
        });
    }
}

/// The reply to `request` received at served time `rx` with (stratum, leap indicator);
/// `tx` stamps its departure; `hostile` says what to get wrong.
fn answer(
    request: &[u8; wire::NTP_HEADER_LEN],
    rx: u64,
    (stratum, leap): (u8, u8),
    hostile: Hostile,
    tx: impl Fn() -> u64,
) -> [u8; wire::NTP_HEADER_LEN] {
    let (_, version, _) = wire::split_li_vn_mode(request[0]);
    let mut reply = [0u8; wire::NTP_HEADER_LEN];
    let (leap, stratum, refid) = match hostile.kod {
        Some(code) => (wire::LEAP_UNSYNC, 0, code),
        None => (leap, stratum, *b"TEST"),
    };
    reply[0] = wire::li_vn_mode(leap, version, wire::MODE_SERVER);
    reply[wire::OFF_STRATUM] = stratum;
    reply[wire::OFF_POLL] = request[wire::OFF_POLL];
    reply[wire::OFF_PRECISION] = hostile.precision as u8;
    reply[wire::OFF_ROOT_DELAY..][..4].copy_from_slice(&hostile.root_delay.to_be_bytes());
    reply[wire::OFF_ROOT_DISP..][..4].copy_from_slice(&hostile.root_dispersion.to_be_bytes());
    reply[wire::OFF_REFID..][..4].copy_from_slice(&refid);
    reply[wire::OFF_REF_TS..][..8].copy_from_slice(&rx.to_be_bytes());
    let mut origin = [0u8; 8];
    origin.copy_from_slice(&request[wire::OFF_TRANSMIT_TS..][..8]);
    if hostile.bad_origin {
        origin[7] ^= 1;
    }
    reply[wire::OFF_ORIGIN_TS..][..8].copy_from_slice(&origin);
    reply[wire::OFF_RECEIVE_TS..][..8].copy_from_slice(&rx.to_be_bytes());
    reply[wire::OFF_TRANSMIT_TS..][..8].copy_from_slice(&tx().to_be_bytes());
    reply
}
