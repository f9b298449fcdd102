//! What the daemon counts, and `serverstats`/`xdpstats` assembled from its counters and
//! the kernel's.

use super::shared::Shared;
use crate::lock;
use ntp_common::{ClientRecord, Counter};
use ntp_proto::report::stats::{NamedCounter, ServerStats, XdpStats};
use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
};
use tracing::warn;

/// Counters of the daemon's own socket and command ports.
#[derive(Default)]
pub(super) struct DaemonCounters {
    pub client_log_dropped: Count,
    pub ratelimited: Count,
    pub received: Count,
    pub answered: Count,
    pub ignored: Count,
    pub denied: Count,
    pub interleaved: Count,
    pub authenticated: Count,
    pub nts_ke_accepted: Count,
    pub nts_ke_dropped: Count,
    pub tx_stamps: Count,
    /// Replies sent, by who stamped the request's reception (daemon, kernel, NIC).
    pub rx_sources: [Count; 3],
    /// Replies sent, by who stamped the transmit timestamp they carry.
    pub tx_sources: [Count; 3],
    pub cmd_received: Count,
    pub cmd_dropped: Count,
    /// The latest a publication ran after its time, ns.
    pub publish_late_max_ns: AtomicU64,
    /// The latest a planned slew change ran after its time, ns.
    pub slew_late_max_ns: AtomicU64,
}

/// Shards of a [`Count`]: server threads on different cores each add to their own
/// cache line, so counting a reply never waits for another core's.
const SHARDS: usize = 8;

/// One counter slot on a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Shard(AtomicU64);

/// A counter that threads add to without sharing a cache line; read as the sum.
#[derive(Default)]
pub(super) struct Count([Shard; SHARDS]);

impl Count {
    fn total(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// This thread's shard (threads numbered in the order they first count).
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|m| *m)
}

/// Adds one to `c`.
pub(super) fn bump(c: &Count) {
    add(c, 1);
}

/// Adds `n` to `c`.
pub(super) fn add(c: &Count, n: u64) {
    c.0[shard()].0.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &Count) -> u64 {
    c.total()
}

impl Shared {
    /// `serverstats`: the daemon's counters with the kernel's added.
    pub(super) fn server_stats(&self) -> ServerStats {
        let c = &self.counters;
        let (timestamps_held, timestamp_span) = self.clients.timestamps_held();
        let mut s = ServerStats {
            ntp_received: get(&c.received),
            ntp_dropped: get(&c.denied) + get(&c.ratelimited),
            cmd_received: get(&c.cmd_received),
            cmd_dropped: get(&c.cmd_dropped),
            client_log_dropped: get(&c.client_log_dropped),
            daemon_answered: get(&c.answered),
            daemon_ignored: get(&c.ignored),
            interleaved: get(&c.interleaved),
            authenticated: get(&c.authenticated),
            nts_ke_accepted: get(&c.nts_ke_accepted),
            nts_ke_dropped: get(&c.nts_ke_dropped),
            daemon_tx_stamps: get(&c.tx_stamps),
            rx_timestamps: c.rx_sources.each_ref().map(get),
            tx_timestamps: c.tx_sources.each_ref().map(get),
            timestamps_held,
            timestamp_span,
            publish_late_max_us: c.publish_late_max_ns.load(Ordering::Relaxed) / 1000,
            slew_late_max_us: c.slew_late_max_ns.load(Ordering::Relaxed) / 1000,
            ..Default::default()
        };
        if let Some(k) = self.kernel_counters() {
            let get = |c: Counter| k.get(c as usize).copied().unwrap_or(0);
            let answered = get(Counter::Answered) + get(Counter::AnsweredKod);
            let dropped = get(Counter::DropDenied)
                + get(Counter::DropRateLimit)
                + get(Counter::DropBadSource);
            let passed = get(Counter::NtpReceived).saturating_sub(answered + dropped);
            // Passed requests reach the socket and are counted there; count each once.
            s.ntp_received += answered + dropped;
            s.ntp_dropped += dropped;
            // The XDP program reads the clock in the kernel for both stamps.
            s.rx_timestamps[1] += answered;
            s.tx_timestamps[1] += answered;
            s.kernel_answered = Some(answered);
            s.kernel_passed = Some(passed);
            s.kernel_dropped = Some(dropped);
            // An LRU map evicts silently: what was created and is gone was evicted.
            if let Some(present) = self.kernel_client_count() {
                s.client_log_dropped += get(Counter::ClientRecordsCreated).saturating_sub(present);
            }
        }
        s
    }

    /// `xdpstats`: where the fast path is attached, and its counters.
    pub(super) fn xdp_stats(&self) -> XdpStats {
        let interfaces = self
            .kernel
            .as_ref()
            .map(|k| {
                lock(k)
                    .attached()
                    .into_iter()
                    .map(|(i, m)| (i, m.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let counters = self
            .kernel_counters()
            .map(|v| {
                Counter::ALL
                    .iter()
                    .zip(v)
                    .map(|(c, value)| NamedCounter {
                        name: c.name().to_string(),
                        value,
                    })
                    .collect()
            })
            .unwrap_or_default();
        XdpStats {
            interfaces,
            counters,
        }
    }

    fn kernel_client_count(&self) -> Option<u64> {
        match self.monitor.as_ref()?.client_count() {
            Ok(n) => Some(n),
            Err(e) => {
                warn!("Could not count the kernel's client records: {e:#}");
                None
            }
        }
    }

    /// The kernel's client records (none without the fast path).
    pub(super) fn kernel_clients(&self) -> Vec<(IpAddr, ClientRecord)> {
        let Some(k) = self.monitor.as_ref() else {
            return Vec::new();
        };
        match k.clients() {
            Ok(v) => v,
            Err(e) => {
                warn!("Could not read the kernel's client log: {e:#}");
                Vec::new()
            }
        }
    }

    fn kernel_counters(&self) -> Option<Vec<u64>> {
        match self.monitor.as_ref()?.counters() {
            Ok(v) => Some(v),
            Err(e) => {
                warn!("Could not read XDP counters: {e:#}");
                None
            }
        }
    }
}
