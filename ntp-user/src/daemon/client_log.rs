//! The daemon's client log (the kernel keeps its own for the requests it answers): request
//! counts, the rate limit, and the last exchange an interleaved client may name.

use super::counters::DaemonCounters;
use crate::lock;
use ntp_common::{ClientRecord, RateLimit, RateVerdict, ServerState};
use ntp_proto::{
    packet::NtpTimestamp,
    report::ClientReport,
    server::{self, LastExchange},
};
use std::{collections::HashMap, net::IpAddr, sync::Mutex};

/// Makes room in a full log: the least recently seen eighth goes at once (as the
/// kernel's LRU map would let them go), so a flood of new addresses costs one pass over
/// the log per eighth of it rather than one per request. Returns how many went.
fn evict_least_recent(records: &mut HashMap<IpAddr, ClientRecord>) -> usize {
    let n = (records.len() / 8).max(1);
    let mut ages: Vec<(u64, IpAddr)> = records.iter().map(|(ip, r)| (r.last_tai_ns, *ip)).collect();
    if n < ages.len() {
        ages.select_nth_unstable(n - 1);
        ages.truncate(n);
    }
    for (_, ip) in &ages {
        records.remove(ip);
    }
    ages.len()
}

/// Per-client records of requests that reached the daemon's socket.
pub(super) struct ClientLog {
    /// `clientloglimit` in records; `None` with `noclientlog`.
    limit: Option<u32>,
    ratelimit: Option<RateLimit>,
    records: Mutex<HashMap<IpAddr, ClientRecord>>,
}

impl ClientLog {
    /// A log of at most `limit` clients (none with `None`), rate-limiting with `ratelimit`.
    pub(super) fn new(limit: Option<u32>, ratelimit: Option<RateLimit>) -> Self {
        ClientLog {
            limit,
            ratelimit,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Whether clients are logged (and so may interleave).
    pub(super) fn enabled(&self) -> bool {
        self.limit.is_some()
    }

    /// Counts a request from `ip` (an allowed source: denied ones leave no record) and
    /// applies the rate limit as the kernel does; with the client's last exchange, for
    /// interleaved mode.
    pub(super) fn log(
        &self,
        ip: IpAddr,
        rx_tai: u64,
        counters: &DaemonCounters,
    ) -> (RateVerdict, LastExchange) {
        let Some(limit) = self.limit else {
            return (RateVerdict::Answer, LastExchange::default());
        };
        let mut c = lock(&self.records);
        if !c.contains_key(&ip) && c.len() >= limit as usize {
            let gone = evict_least_recent(&mut c);
            super::counters::add(&counters.client_log_dropped, gone as u64);
        }
        let r = c.entry(ip).or_default();
        let verdict = match &self.ratelimit {
            Some(rl) => rl.check(r, rx_tai, || crate::net::random_u64() as u32),
            None => RateVerdict::Answer,
        };
        r.hit(rx_tai, verdict == RateVerdict::Drop);
        let last = LastExchange {
            rx: NtpTimestamp(r.xleave_rx),
            tx: NtpTimestamp(r.xleave_tx),
        };
        (verdict, last)
    }

    /// Remembers the timestamps of a reply to `ip` that a next request may interleave
    /// with; `tx` is when it was finished, until the kernel says when it really left.
    pub(super) fn note_reply(&self, ip: IpAddr, rx: NtpTimestamp, tx: NtpTimestamp) {
        if let Some(r) = lock(&self.records).get_mut(&ip) {
            r.xleave_rx = rx.0;
            r.xleave_tx = tx.0;
        }
    }

    /// The kernel's transmit timestamp of the reply to `ip` that carried receive
    /// timestamp `rx`, on `CLOCK_TAI`, served on `state`'s timebase; true if it was noted.
    pub(super) fn note_departure(
        &self,
        ip: IpAddr,
        rx: NtpTimestamp,
        tai_ns: u64,
        state: &ServerState,
    ) -> bool {
        let tx = server::served_ntp(state, tai_ns);
        match lock(&self.records).get_mut(&ip) {
            Some(r) if r.xleave_rx == rx.0 => {
                r.xleave_tx = tx.0;
                true
            }
            _ => false,
        }
    }

    /// How many interleave timestamps are held, and the span (seconds) between the
    /// oldest and the newest.
    pub(super) fn timestamps_held(&self) -> (u64, u64) {
        let records = lock(&self.records);
        let held: Vec<u64> = records
            .values()
            .filter(|r| r.xleave_tx != 0)
            .map(|r| r.xleave_rx)
            .collect();
        let span = match (held.iter().min(), held.iter().max()) {
            (Some(lo), Some(hi)) => (hi - lo) >> 32,
            _ => 0,
        };
        (held.len() as u64, span)
    }

    /// This log merged with the kernel's records, most active first, at `CLOCK_TAI` `now`.
    pub(super) fn report(
        &self,
        kernel: Vec<(IpAddr, ClientRecord)>,
        now: u64,
    ) -> Vec<ClientReport> {
        let mut all: HashMap<IpAddr, ClientRecord> = lock(&self.records).clone();
        for (ip, r) in kernel {
            let e = all.entry(ip).or_default();
            e.requests += r.requests;
            e.dropped += r.dropped;
            if r.last_tai_ns > e.last_tai_ns {
                e.last_tai_ns = r.last_tai_ns;
            }
            if r.interval_ns != 0 {
                e.interval_ns = r.interval_ns;
            }
        }
        let mut rows: Vec<ClientReport> = all
            .into_iter()
            .map(|(addr, r)| ClientReport {
                addr,
                ntp: r.requests + u64::from(r.dropped),
                dropped: u64::from(r.dropped),
                interval: (r.interval_ns > 0)
                    .then(|| (r.interval_ns as f64 * 1e-9).log2().round() as i32),
                last: Some(now.saturating_sub(r.last_tai_ns) / 1_000_000_000),
            })
            .collect();
        rows.sort_by(|a, b| b.ntp.cmp(&a.ntp).then(a.addr.cmp(&b.addr)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_lets_the_least_recent_eighth_go() {
        let mut m: HashMap<IpAddr, ClientRecord> = (0..64u8)
            .map(|i| {
                let r = ClientRecord {
                    last_tai_ns: 1000 + u64::from(i),
                    ..Default::default()
                };
                (IpAddr::from([10, 0, 0, i]), r)
            })
            .collect();
        assert_eq!(evict_least_recent(&mut m), 8);
        assert_eq!(m.len(), 56);
        assert!((0..8u8).all(|i| !m.contains_key(&IpAddr::from([10, 0, 0, i]))));
        assert!(m.contains_key(&IpAddr::from([10, 0, 0, 8])));
    }
}
