//! The contract of the benchmark programs (load generator, reply counter, bare bounce),
//! which live in the same eBPF object as the server but are only ever run by
//! `ntpx-bench`.
//!
//! Latencies are kept as histograms with 32 sub-buckets per power of two (about 3 %
//! resolution) so the kernel side needs no sorting and no per-reply storage.

use bytemuck::{Pod, Zeroable};

/// Name of the generator program (run with `BPF_PROG_TEST_RUN` live frames).
pub const PROG_LOAD_GEN: &str = "ntpx_load_gen";
/// Name of the reply-counting program (attached to the client end of the link).
pub const PROG_LOAD_COUNT: &str = "ntpx_load_count";
/// Name of the bare bounce program (swap addresses, `XDP_TX`).
pub const PROG_BOUNCE: &str = "ntpx_bounce";
/// The bounce that also reads the clock twice, as any NTP reply must (receive and
/// transmit timestamps): the least an XDP NTP responder can cost.
pub const PROG_BOUNCE_TIMED: &str = "ntpx_bounce_timed";
/// Counts NTS replies to the NTS generator's pool at the client end and drops them,
/// passing a sample up to its sockets (full checks, response times).
pub const PROG_NTS_COUNT: &str = "ntpx_nts_count";
/// Its per-CPU counters (indexed by [`NtsStat`]).
pub const MAP_NTS_STATS: &str = "NTPX_NTS_STATS";
/// The high half of the transmit timestamp of every request in the NTS generator's pool
/// (the low half is the request's index), echoed in the reply's origin timestamp.
pub const NTS_POOL_MAGIC: u32 = 0x6e74_7378;
/// Replies to requests whose index is a multiple of this go up to the generator's
/// sockets; the rest are counted and dropped at the client end.
pub const NTS_PASS_EVERY: u32 = 16;
/// Name of the NTS generator program (`BPF_PROG_TEST_RUN` live frames, as the plain
/// generator): it sends the pool's requests in turn, each behind headers it writes.
pub const PROG_NTS_GEN: &str = "ntpx_nts_gen";
/// Name of the pool map ([`NTS_POOL`] [`NtsPoolRequest`]s).
pub const MAP_NTS_POOL: &str = "NTPX_NTS_POOL";
/// Name of the map of each pool request's last departure (`CLOCK_MONOTONIC`, ns), which
/// the counter times its reply against.
pub const MAP_NTS_SENT: &str = "NTPX_NTS_SENT";
/// Requests in the NTS generator's pool, sent in turn (a power of two).
pub const NTS_POOL: u32 = 1 << 15;
/// The longest NTS request the generator sends, bytes (a multiple of 4).
pub const NTS_REQUEST_MAX: usize = 256;

/// One pool request: its bytes, as 32-bit words in memory order, zero-padded to
/// [`NTS_REQUEST_MAX`] (its length is [`LoadConfig::nts_len`], the same for all).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct NtsPoolRequest {
    /// The request's bytes.
    pub words: [u32; NTS_REQUEST_MAX / 4],
}

/// What the NTS reply counter counts.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NtsStat {
    /// Replies with extension fields (authenticated), dropped after counting.
    Answered,
    /// NTS NAKs (Kiss-o'-Death NTSN), dropped.
    Nak,
    /// Other Kiss-o'-Death replies, dropped.
    Kod,
    /// Replies to the pool without extension fields, dropped.
    Short,
}

/// Number of [`NtsStat`] slots.
pub const NTS_STATS: u32 = 4;

/// Name of the configuration map (one [`LoadConfig`]).
pub const MAP_LOAD_CFG: &str = "NTPX_LOAD_CFG";
/// Name of the per-CPU scalar map (indexed by [`Stat`]).
pub const MAP_LOAD_STATS: &str = "NTPX_LOAD_STATS";
/// Name of the histogram map ([`HISTS`] × [`BUCKETS`] counts).
pub const MAP_LOAD_HIST: &str = "NTPX_LOAD_HIST";

/// What the generator and the counter are told.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LoadConfig {
    /// `CLOCK_TAI` − `CLOCK_REALTIME`, ns (the programs read `CLOCK_TAI`).
    pub tai_offset_ns: u64,
    /// First client IPv4 address (host byte order).
    pub first_client: u32,
    /// Number of client addresses the requests cycle through.
    pub clients: u32,
    /// Replies whose request left before this NTP time are stale (a previous step's).
    pub step_start_ntp: u64,
    /// 1: the target echoes requests unchanged (the bounce program).
    pub echo: u32,
    /// Server IPv4 address (host byte order).
    pub server: u32,
    /// Server MAC address, then the client end's, then padding.
    pub macs: [u8; 16],
    /// Send one request per this many ns (0: one per run of the program).
    pub interval_ns: u64,
    /// Requests that may go out back to back after a pause.
    pub burst: u64,
    /// 1: each client asks for interleaved mode once it has a reply (chrony's `xleave`),
    /// naming the server's receive timestamp and its own capture of that reply.
    pub xleave: u32,
    /// The NTS generator's request length, bytes (0: the plain generator).
    pub nts_len: u32,
    /// The NTS generator's first client port; its requests cycle through
    /// [`Self::nts_ports`] ports from there, from the address [`Self::first_client`].
    pub nts_port: u32,
    /// How many.
    pub nts_ports: u32,
}

/// What the counter keeps of a client's last reply for its next interleaved request
/// (NTP timestamps; zero: none yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XleaveSlot {
    /// The server's receive timestamp in that reply (the next request's origin).
    pub server_rx: u64,
    /// When the reply reached the client end (the next request's receive timestamp, which
    /// an interleaved reply echoes as its origin).
    pub capture: u64,
}

/// Name of the per-client array of [`XleaveSlot`]s.
pub const MAP_LOAD_XLEAVE: &str = "NTPX_LOAD_XLEAVE";
/// Clients an interleaved load can chain (slots in [`MAP_LOAD_XLEAVE`]).
pub const XLEAVE_CLIENTS: u32 = 4096;

/// Scalar statistics, one per-CPU slot each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stat {
    /// Requests the generator transmitted.
    Sent = 0,
    /// Valid replies to this step's requests.
    Answered,
    /// Replies that match no request of this step or are malformed.
    Invalid,
    /// Replies to an earlier step's requests (a server still draining its backlog).
    Stale,
    /// Valid replies with leap indicator 3 (server unsynchronised).
    Unsynchronised,
    /// Valid replies that are Kiss-o'-Death (stratum 0).
    Kod,
    /// Smallest response time, ns.
    RttMin,
    /// Largest response time, ns.
    RttMax,
    /// Smallest server processing delay, ns.
    ProcMin,
    /// Largest server processing delay, ns.
    ProcMax,
    /// The pacer's next departure time (`CLOCK_TAI` ns), not a statistic.
    PacerNext,
    /// Valid replies in interleaved mode (their transmit timestamp is the previous
    /// reply's departure).
    Interleaved,
}

/// Number of [`Stat`] slots.
pub const STATS: u32 = 12;

/// When the paced generator sends: `Some(next departure)` to send now, `None` to skip
/// this run. At most `burst` requests leave back to back after a pause.
#[inline(always)]
pub fn pace(next: u64, now: u64, interval: u64, burst: u64) -> Option<u64> {
    if interval == 0 {
        return Some(now);
    }
    if now < next {
        return None;
    }
    // No 128-bit products in BPF; interval (< 2^40) times burst (< 2^16) fits 64 bits.
    let floor = now.saturating_sub(interval.wrapping_mul(burst & 0xffff));
    Some(if next < floor { floor } else { next } + interval)
}

/// Histogram of response time (reply arrival − request departure).
pub const HIST_RTT: u32 = 0;
/// Histogram of server processing delay (its transmit − receive timestamp).
pub const HIST_PROC: u32 = 1;
/// Histogram of the absolute offset the client measures (truth: zero).
pub const HIST_OFFSET: u32 = 2;
/// Histogram of how long before its arrival at the client end a basic reply's transmit
/// timestamp was taken (arrival − transmit timestamp; one clock).
pub const HIST_TX_GAP: u32 = 3;
/// The same for interleaved replies: the previous reply's arrival − the departure time
/// this reply reports for it.
pub const HIST_XLEAVE_GAP: u32 = 4;
/// Number of histograms.
pub const HISTS: u32 = 5;
/// Buckets per histogram (enough for values past 2^40 ns).
pub const BUCKETS: u32 = 1280;

/// The bucket of `v` ns: exact below 64, then 32 per power of two.
#[inline(always)]
pub fn bucket_of(v: u64) -> u32 {
    if v < 64 {
        return v as u32;
    }
    // Most significant bit by binary search: BPF has no count-leading-zeros.
    let mut msb = 0u32;
    let mut x = v;
    if x >> 32 != 0 {
        x >>= 32;
        msb += 32;
    }
    if x >> 16 != 0 {
        x >>= 16;
        msb += 16;
    }
    if x >> 8 != 0 {
        x >>= 8;
        msb += 8;
    }
    if x >> 4 != 0 {
        x >>= 4;
        msb += 4;
    }
    if x >> 2 != 0 {
        x >>= 2;
        msb += 2;
    }
    if x >> 1 != 0 {
        msb += 1;
    }
    let e = msb - 5;
    let b = 32 * e + (v >> e) as u32;
    if b >= BUCKETS { BUCKETS - 1 } else { b }
}

/// The smallest value that falls in bucket `b`.
pub fn bucket_low(b: u32) -> u64 {
    if b < 64 {
        return b as u64;
    }
    let e = b / 32 - 1;
    ((b % 32 + 32) as u64) << e
}

/// NTP timestamp difference `a − b` (32.32 fixed point) in ns, for |a − b| < 2^31 s.
#[inline(always)]
pub fn ntp_diff_ns(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) as i64;
    let (neg, m) = if d < 0 {
        (true, d.wrapping_neg() as u64)
    } else {
        (false, d as u64)
    };
    let ns = (m >> 32) * 1_000_000_000 + (((m & 0xffff_ffff) * 1_000_000_000) >> 32);
    if neg { -(ns as i64) } else { ns as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_within_three_percent() {
        let mut last = 0;
        for v in (0..5000u64).chain((12..40).map(|s| (1u64 << s) + 12345)) {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v} went down");
            last = b;
            let low = bucket_low(b);
            assert!(low <= v, "{v} below its bucket's low {low}");
            assert!(v - low <= v / 32, "{v} too far above {low}");
        }
        assert_eq!(bucket_of(63), 63);
        assert_eq!(bucket_of(64), 64);
        assert_eq!(bucket_of(127), 95);
        assert_eq!(bucket_of(128), 96);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        // 10^6 >> 14 = 61: the bucket starts at 61 × 2^14.
        assert_eq!(bucket_low(bucket_of(1_000_000)), 61 << 14);
    }

    #[test]
    fn the_pacer_keeps_the_rate_and_bounds_bursts() {
        // 1 per 100 ns, runs every 10 ns for 10 us: 100 sent, plus the first burst.
        let (mut next, mut sent) = (0u64, 0);
        for now in (1_000..11_000).step_by(10) {
            if let Some(n) = pace(next, now, 100, 4) {
                next = n;
                sent += 1;
            }
        }
        assert!((100..=105).contains(&sent), "{sent}");
        // After a 1 ms pause only the burst goes out at once.
        let mut at_once = 0;
        let now = 1_000_000 + 11_000;
        while let Some(n) = pace(next, now, 100, 4) {
            next = n;
            at_once += 1;
        }
        assert_eq!(at_once, 5);
        assert_eq!(pace(7, 5, 0, 4), Some(5), "no interval: always");
    }

    #[test]
    fn ntp_differences_convert_to_nanoseconds_both_ways() {
        let t = 0xe000_0000_8000_0000u64;
        assert_eq!(ntp_diff_ns(t + (1 << 32), t), 1_000_000_000);
        assert_eq!(ntp_diff_ns(t, t + (1 << 31)), -500_000_000);
        // 2^-32 s is 0.23 ns: 43 units are 10 ns.
        assert_eq!(ntp_diff_ns(t + 43, t), 10);
        assert_eq!(ntp_diff_ns(t + (3 << 32) + 43, t), 3_000_000_010);
    }
}
