//! ntpx-probe: asks an NTP server for the time, COUNT times, INTERVAL seconds apart, and
//! prints each exchange's four timestamps (ns since the Unix epoch): the local send and
//! receive times from the system clock, the server's receive and transmit times from its
//! reply. The tests compare servers against a known truth with it.

use anyhow::{Context, Result, bail};
use ntp_common::{timebase::unix_ns_to_ntp, wire};
use ntp_proto::packet::NtpTimestamp;
use std::{
    net::UdpSocket,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, count, interval] = args.as_slice() else {
        bail!("usage: ntpx-probe SERVER:PORT COUNT INTERVAL_SECONDS");
    };
    let count: u32 = count.parse().context("COUNT")?;
    let interval: f64 = interval.parse().context("INTERVAL_SECONDS")?;
    let sock = UdpSocket::bind("0.0.0.0:0").context("binding")?;
    sock.connect(server)
        .with_context(|| format!("connecting to {server}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 1500];
    for _ in 0..count {
        let mut req = [0u8; wire::NTP_HEADER_LEN];
        req[0] = wire::li_vn_mode(0, 4, wire::MODE_CLIENT);
        let t1 = now_ns();
        let cookie = unix_ns_to_ntp(t1);
        req[wire::OFF_TRANSMIT_TS..][..8].copy_from_slice(&cookie.to_be_bytes());
        sock.send(&req).context("sending")?;
        if let Ok(n) = sock.recv(&mut buf) {
            let t4 = now_ns();
            let field =
                |off: usize| u64::from_be_bytes(buf[off..off + 8].try_into().unwrap_or([0; 8]));
            if n >= wire::NTP_HEADER_LEN && field(wire::OFF_ORIGIN_TS) == cookie {
                let t2 = NtpTimestamp(field(wire::OFF_RECEIVE_TS)).to_unix_ns(t1);
                let t3 = NtpTimestamp(field(wire::OFF_TRANSMIT_TS)).to_unix_ns(t1);
                println!("{t1} {t2} {t3} {t4}");
            }
        }
        std::thread::sleep(Duration::from_secs_f64(interval));
    }
    Ok(())
}
