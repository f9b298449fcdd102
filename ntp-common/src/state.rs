//! Map values written by `ntpxd` and read by the XDP program.

use bytemuck::{Pod, Zeroable};

/// How served time follows the kernel's `CLOCK_TAI` (see [`Timebase::served_ntp`]).
///
/// Served time is kept in NTP format so a reply needs no division: the program's cost is
/// its purpose.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Timebase {
    /// `CLOCK_TAI` reading, in ns, at which this timebase was published.
    pub t0_tai_ns: u64,
    /// Served time at `t0_tai_ns`, NTP 32.32 format.
    pub base_ntp: u64,
    /// NTP units (2^-32 s) of served time per ns of `CLOCK_TAI`, less 4, in 2^-40 units
    /// (below 2^40): 2^40 x (4.294967296 x (1 + rate) - 4), with `rate` the served clock's
    /// rate relative to `CLOCK_TAI`, minus one
    /// ([`crate::timebase::SCALE_FRAC_UNIT_RATE`] at rate 0).
    pub scale_frac: u64,
    /// Age in ns after which the state is stale and the kernel stops answering.
    pub max_age_ns: u64,
    /// `CLOCK_TAI` ns of the next leap second (UTC midnight for an inserted second,
    /// 23:59:59 for a deleted one), 0 when none is announced; kept for
    /// [`LEAP_WINDOW_AFTER_NS`] after it passed, so the leap indicator stays right.
    pub leap_tai_ns: u64,
    /// What the leap second does to served time from `leap_tai_ns` on, seconds: -1 for
    /// an inserted second, +1 for a deleted one, 0 once the base already includes it.
    pub leap_step_s: i64,
}

/// chrony's leap-in-progress window around a leap second, before it: replies carry
/// leap indicator 3 (unsynchronised) from then on, since a client cannot tell which side
/// of the leap a timestamp is on.
pub const LEAP_WINDOW_BEFORE_NS: u64 = 500_000_000;
/// The window after the leap second; past it, the announcement is over (indicator 0).
pub const LEAP_WINDOW_AFTER_NS: u64 = 1_500_000_000;

/// The server's public state: what every reply says about the server's clock.
///
/// Lives in a one-entry `BPF_F_MMAPABLE` array. `seq` is a sequence lock: the daemon makes it
/// odd while it writes, even when done; readers retry or give up on an odd or changed value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ServerState {
    /// Sequence lock counter (odd while an update is in progress).
    pub seq: u64,
    /// The mapping from `CLOCK_TAI` to served time.
    pub timebase: Timebase,
    /// Reference timestamp, NTP 32.32 format.
    pub ref_ts: u64,
    /// Root delay, NTP short (16.16) format.
    pub root_delay: u32,
    /// Root dispersion at `timebase.t0_tai_ns`, NTP short format (grown by 15 ppm of age
    /// when served).
    pub root_disp: u32,
    /// Reference id as it goes on the wire.
    pub refid: [u8; 4],
    /// Generation of the maps the daemon writes for the program to look things up in
    /// (access tries, served addresses, interface MACs): what the program caches from
    /// them (a client's verdict in its record, the last address and MAC checked in the
    /// per-CPU record) holds while this stays the same. Never 0 (a new record's value).
    pub maps_gen: u32,
    /// Leap indicator (0-3).
    pub leap: u8,
    /// Stratum on the wire: 1-15, or 0 when unsynchronised (16 and above are invalid
    /// there, as chrony puts it).
    pub stratum: u8,
    /// Precision exponent (log2 seconds).
    pub precision: i8,
    /// Non-zero when the kernel may answer; zero passes every request to userspace.
    pub serve: u8,
    /// Lowest poll exponent put in a reply (a client's higher poll is echoed).
    pub min_poll: i8,
    /// Padding; always zero.
    pub pad: [u8; 3],
}

/// What the server knows of one client (kernel client log and `ntpxc clients`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClientRecord {
    /// NTP requests answered or passed on.
    pub requests: u64,
    /// NTP requests dropped (over the rate limit; a denied source has no record).
    pub dropped: u32,
    /// [`ServerState::maps_gen`] under which the kernel found this source allowed (the
    /// daemon's records leave it 0).
    pub maps_gen: u32,
    /// `CLOCK_TAI` ns of the latest request.
    pub last_tai_ns: u64,
    /// Moving average of the interval between requests, ns (0 until a second one).
    pub interval_ns: u64,
    /// Rate-limit token bucket, ns of allowance (see [`RateLimit`]).
    pub tokens_ns: u64,
    /// Requests over the rate limit (dropped, leaked or answered with a `KoD`).
    pub limited: u64,
    /// Receive timestamp (NTP format) of the latest reply: a client in interleaved mode
    /// names it in the origin field of its next request.
    pub xleave_rx: u64,
    /// Transmit timestamp (NTP format) of that reply as it really left (the kernel's TX
    /// timestamp), 0 while unknown. In the kernel's records [`XLEAVE_TO_DAEMON`] instead:
    /// the client interleaves, so its requests go to the daemon, which has TX timestamps.
    pub xleave_tx: u64,
}

/// [`ClientRecord::xleave_tx`] of a client whose requests the kernel passes to the daemon.
pub const XLEAVE_TO_DAEMON: u64 = u64::MAX;

/// chrony's `ratelimit interval I burst B leak L kod K`, as the fast path applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// 2^I seconds in ns: the allowance one answer costs and the minimum average interval.
    pub interval_ns: u64,
    /// Answers a client may have in a burst.
    pub burst: u64,
    /// On average 1 in 2^L limited requests is answered anyway (L = 0: rate limiting off).
    pub leak: u8,
    /// 1 in 2^K of the other limited requests gets a `KoD` RATE (K = 0: no `KoD`).
    pub kod: u8,
}

/// What the rate limit says of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the limit, or leaked through: answer.
    Answer,
    /// Over the limit: answer with a Kiss-o'-Death RATE.
    Kod,
    /// Over the limit: drop.
    Drop,
}

impl RateLimit {
    /// Judges a request at `now` from the client whose bucket is `rec` (updated);
    /// `random` gives a uniformly random value, asked for only when the request is over
    /// the limit (a random draw costs the fast path more than the rest of the check).
    #[inline(always)]
    pub fn check(
        &self,
        rec: &mut ClientRecord,
        now: u64,
        random: impl FnOnce() -> u32,
    ) -> RateVerdict {
        // No 128-bit products in BPF: the configuration bounds interval (2^12 s) and burst
        // (255), so the product stays far below 2^64.
        let cap = self.interval_ns.wrapping_mul(self.burst);
        let fresh = rec.is_new();
        let refill = now.saturating_sub(rec.last_tai_ns);
        rec.tokens_ns = if fresh {
            cap
        } else {
            rec.tokens_ns.saturating_add(refill).min(cap)
        };
        if rec.tokens_ns >= self.interval_ns {
            rec.tokens_ns -= self.interval_ns;
            return RateVerdict::Answer;
        }
        rec.limited += 1;
        let random = random();
        // Leak: a spoofed flood must not silence its victim entirely.
        let leak_mask = (1u32 << (self.leak & 31)) - 1;
        if random & leak_mask == 0 {
            return RateVerdict::Answer;
        }
        let kod_mask = (1u32 << (self.kod & 15)) - 1;
        if self.kod != 0 && (random >> 16) & kod_mask == 0 {
            return RateVerdict::Kod;
        }
        RateVerdict::Drop
    }
}

impl ClientRecord {
    /// Counts a request at `now` (dropped or not). In place: the kernel updates the
    /// record inside its map, with no copy on its 512-byte stack.
    #[inline(always)]
    pub fn hit(&mut self, now: u64, dropped: bool) {
        let gap = now.saturating_sub(self.last_tai_ns);
        self.interval_ns = if self.is_new() {
            0
        } else if self.interval_ns == 0 {
            gap
        } else {
            // A quarter weight for the newest interval: a few polls settle it.
            (self.interval_ns / 4) * 3 + gap / 4
        };
        if dropped {
            self.dropped = self.dropped.saturating_add(1);
        } else {
            self.requests += 1;
        }
        // Requests counted out of order (server threads, CPUs: microseconds apart) do
        // not move it back, or the next request's gap would count the same time twice;
        // a clock stepped back (more than a second) does, or the limit would refill
        // nothing until the clock caught up.
        if now > self.last_tai_ns || self.last_tai_ns - now > REORDER_NS {
            self.last_tai_ns = now;
        }
    }

    /// Whether no request has been counted yet.
    #[inline(always)]
    pub fn is_new(&self) -> bool {
        self.requests == 0 && self.dropped == 0
    }
}

/// How far back a request may be counted out of order before it is taken for a step
/// of the clock (see [`ClientRecord::hit`]).
pub const REORDER_NS: u64 = 1_000_000_000;

/// Names of the rate-limit globals set by the loader.
pub const GLOBAL_RL_INTERVAL: &str = "NTPX_RL_INTERVAL_NS";
/// Burst global.
pub const GLOBAL_RL_BURST: &str = "NTPX_RL_BURST";
/// Leak global (0: rate limiting off).
pub const GLOBAL_RL_LEAK: &str = "NTPX_RL_LEAK";
/// `KoD` global.
pub const GLOBAL_RL_KOD: &str = "NTPX_RL_KOD";

/// Bytes of `clientloglimit` per client record (chrony sizes its table in bytes).
pub const CLIENT_RECORD_BYTES: u32 = 64;
/// Default `clientloglimit`, bytes.
pub const DEFAULT_CLIENTLOG_LIMIT: u32 = 524_288;
/// Name of the client log map.
pub const MAP_CLIENTS: &str = "NTPX_CLIENTS";
/// Name of the global that turns the kernel client log on (1) or off (0).
pub const GLOBAL_CLIENTLOG: &str = "NTPX_CLIENTLOG";

/// The key of a client: its IPv6 address, or an IPv4 one mapped (`::ffff:a.b.c.d`).
#[inline(always)]
pub fn client_key_v4(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Value of the access-control LPM tries.
pub type AclValue = u32;
/// [`AclValue`] of a prefix whose clients are served.
pub const ACL_ALLOW: AclValue = 1;
/// [`AclValue`] of a prefix whose clients are dropped.
pub const ACL_DENY: AclValue = 2;

/// Largest number of entries in each access-control trie.
pub const ACL_MAX_ENTRIES: u32 = 4096;

/// Name of the state map in the eBPF object.
pub const MAP_STATE: &str = "NTPX_STATE";
/// Name of the per-CPU counter map.
pub const MAP_COUNTERS: &str = "NTPX_COUNTERS";
/// Name of the IPv4 access-control trie.
pub const MAP_ACL_V4: &str = "NTPX_ACL_V4";
/// Name of the IPv6 access-control trie.
pub const MAP_ACL_V6: &str = "NTPX_ACL_V6";
/// Name of the IPv4 served-address set.
pub const MAP_LOCAL_V4: &str = "NTPX_LOCAL_V4";
/// Name of the IPv6 served-address set.
pub const MAP_LOCAL_V6: &str = "NTPX_LOCAL_V6";
/// Largest number of served addresses of each family.
pub const LOCAL_MAX_ENTRIES: u32 = 256;
/// Name of the map of interface index to MAC address (the frames each interface may
/// answer are those addressed to its own MAC).
pub const MAP_IFACE_MACS: &str = "NTPX_IFACE_MACS";
/// Largest number of interfaces the program serves on.
pub const IFACE_MAX_ENTRIES: u32 = 1024;
/// Name of the map of the daemon's `AF_XDP` sockets (`XSKMAP`), by slot.
pub const MAP_XSKS: &str = "NTPX_XSKS";
/// Name of the map of (interface index << 32 | receive queue) to a slot of [`MAP_XSKS`]:
/// frames of a queue without an entry are not redirected.
pub const MAP_XSK_SLOTS: &str = "NTPX_XSK_SLOTS";
/// Largest number of `AF_XDP` sockets (interface queues) the daemon registers.
pub const XSK_MAX_ENTRIES: u32 = 256;
/// Bytes of metadata the program puts before a redirected frame: the receive time
/// (`CLOCK_TAI`, ns, native endian), taken when the frame reached the program.
pub const XSK_META_LEN: usize = 8;

/// The key of [`MAP_XSK_SLOTS`] for interface `ifindex`'s receive queue `queue`.
#[inline(always)]
pub fn xsk_slot_key(ifindex: u32, queue: u32) -> u64 {
    (u64::from(ifindex) << 32) | u64::from(queue)
}

/// Interface index `BPF_PROG_TEST_RUN` reports for its frames (the namespace's loopback).
pub const TEST_RUN_IFINDEX: u32 = 1;

/// A MAC address as the interface map holds it: the six bytes big-endian in the low 48 bits.
#[inline(always)]
pub fn mac_value(mac: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

/// Name of the served-port global (set at load time).
pub const GLOBAL_PORT: &str = "NTPX_PORT";
/// Name of the NTP answering XDP program.
pub const PROG_SERVE: &str = "ntpx_serve";
/// Name of the pass-through XDP program (for veth peers in tests and labs).
pub const PROG_PASS: &str = "ntpx_pass";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_one_both_sides_compile() {
        // The XDP program and the daemon agree on this layout; a change must be deliberate.
        assert_eq!(core::mem::size_of::<Timebase>(), 48);
        assert_eq!(core::mem::size_of::<ServerState>(), 88);
        assert_eq!(core::mem::align_of::<ServerState>(), 8);
        assert_eq!(core::mem::offset_of!(ServerState, seq), 0);
        assert_eq!(core::mem::offset_of!(ServerState, root_delay), 64);
        assert_eq!(core::mem::offset_of!(ServerState, maps_gen), 76);
        assert_eq!(core::mem::offset_of!(ServerState, leap), 80);
        assert_eq!(core::mem::size_of::<ClientRecord>(), 64);
        assert_eq!(core::mem::size_of::<crate::counters::CpuRecord>(), 240);
    }

    #[test]
    fn client_records_count_and_average_intervals() {
        let s = 1_000_000_000;
        let mut r = ClientRecord::default();
        r.hit(10 * s, false);
        assert_eq!((r.requests, r.dropped, r.interval_ns), (1, 0, 0));
        r.hit(18 * s, false);
        assert_eq!(r.interval_ns, 8 * s);
        r.hit(22 * s, true);
        assert_eq!(
            (r.requests, r.dropped, r.interval_ns, r.last_tai_ns),
            (2, 1, 7 * s, 22 * s)
        );
        assert_eq!(
            client_key_v4([198, 18, 0, 2])[10..],
            [0xff, 0xff, 198, 18, 0, 2]
        );
        // Counted out of order by another thread: the last time stays.
        r.hit(22 * s - 1000, false);
        assert_eq!(r.last_tai_ns, 22 * s);
        // The clock stepped back 20 s: the record follows it.
        r.hit(2 * s, false);
        assert_eq!(r.last_tai_ns, 2 * s);
    }
}

#[cfg(test)]
mod ratelimit_tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rl(leak: u8, kod: u8) -> RateLimit {
        RateLimit {
            interval_ns: 8 * S,
            burst: 8,
            leak,
            kod,
        }
    }

    fn run(rl: &RateLimit, n: u64, gap: u64, random: impl Fn(u64) -> u32) -> (u64, u64, u64) {
        let mut rec = ClientRecord::default();
        let (mut a, mut k, mut d) = (0, 0, 0);
        for i in 0..n {
            let now = 100 * S + i * gap;
            match rl.check(&mut rec, now, || random(i)) {
                RateVerdict::Answer => a += 1,
                RateVerdict::Kod => k += 1,
                RateVerdict::Drop => d += 1,
            }
            rec.hit(now, false);
        }
        (a, k, d)
    }

    #[test]
    fn burst_then_nothing_without_leak_or_kod() {
        // leak 31: 1 in 2^31, never in 100 tries with these random values.
        assert_eq!(run(&rl(31, 0), 100, 1_000, |_| 1), (8, 0, 92));
    }

    #[test]
    fn a_client_at_the_interval_is_never_limited() {
        assert_eq!(run(&rl(31, 0), 100, 8 * S, |_| 1), (100, 0, 0));
    }

    #[test]
    fn leak_and_kod_masks() {
        // random 0: every limited request leaks through.
        assert_eq!(run(&rl(2, 1), 50, 1_000, |_| 0), (50, 0, 0));
        // Low bits set (no leak), high bits clear (KoD).
        assert_eq!(run(&rl(2, 1), 50, 1_000, |_| 1), (8, 42, 0));
    }
}
