//! Benchmark programs, run only by `ntpx-bench`: a load generator for `BPF_PROG_TEST_RUN`
//! live frames, reply counters (plain and NTS) for the client end of the link, and the bare bounce
//! program that marks the limit of the link itself. IPv4 only. An object of their own,
//! embedded only by the bench: `ntpxd` never carries them.
#![no_std]
// Everything is inlined into the programs on purpose: the verifier follows one function,
// and BPF-to-BPF calls would cost more than they save here.
#![allow(clippy::inline_always)]
// aya's #[xdp] hands each program its context by value.
#![allow(clippy::needless_pass_by_value)]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_ktime_get_ns, bpf_ktime_get_tai_ns, bpf_xdp_adjust_tail},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use ntp_common::{
    load::{
        BUCKETS, HIST_OFFSET, HIST_PROC, HIST_RTT, HIST_TX_GAP, HIST_XLEAVE_GAP, HISTS, LoadConfig,
        NTS_PASS_EVERY, NTS_POOL, NTS_POOL_MAGIC, NTS_REQUEST_MAX, NTS_STATS, NtsPoolRequest,
        NtsStat, STATS, Stat, XLEAVE_CLIENTS, XleaveSlot, bucket_of, ntp_diff_ns, pace,
    },
    timebase::unix_ns_to_ntp,
    wire,
};
use ntp_ebpf::packet::{Frame, Span};

#[map(name = "NTPX_LOAD_CFG")]
static NTPX_LOAD_CFG: Array<LoadConfig> = Array::with_max_entries(1, 0);

#[map(name = "NTPX_LOAD_STATS")]
static NTPX_LOAD_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS, 0);

/// Shared (not per-CPU) so the object stays small on many-CPU servers. Only the counter
/// writes it, from the one receive queue of the client's veth: plain increments are exact.
#[map(name = "NTPX_LOAD_HIST")]
static NTPX_LOAD_HIST: Array<u64> = Array::with_max_entries(HISTS * BUCKETS, 0);

/// Each client's last reply, for its next interleaved request: the counter writes it,
/// the generator reads it (a torn read makes one request basic, which the server
/// answers as such).
#[map(name = "NTPX_LOAD_XLEAVE")]
static NTPX_LOAD_XLEAVE: Array<XleaveSlot> = Array::with_max_entries(XLEAVE_CLIENTS, 0);

/// The NTS generator's requests.
#[map(name = "NTPX_NTS_POOL")]
static NTPX_NTS_POOL: Array<NtsPoolRequest> = Array::with_max_entries(NTS_POOL, 0);

/// When each pool request last left (`CLOCK_MONOTONIC`, ns).
#[map(name = "NTPX_NTS_SENT")]
static NTPX_NTS_SENT: Array<u64> = Array::with_max_entries(NTS_POOL, 0);

#[map(name = "NTPX_NTS_STATS")]
static NTPX_NTS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NTS_STATS, 0);

const ETH: usize = 14;
const IP: usize = ETH;
const UDP: usize = IP + 20;
const NTP: usize = UDP + 8;
const FRAME_LEN: usize = NTP + wire::NTP_HEADER_LEN;
const ETH_P_IP: u16 = 0x0800;

#[inline(always)]
fn stat_inc(s: Stat) {
    if let Some(p) = NTPX_LOAD_STATS.get_ptr_mut(s as u32) {
        // SAFETY: a valid pointer into a map slot; per-CPU slots have no other writer, and a
        // counter that loses an increment to a race costs nothing.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn stat_min_max(min: Stat, max: Stat, v: u64) {
    if let Some(p) = NTPX_LOAD_STATS.get_ptr_mut(min as u32)
        // SAFETY: a valid pointer into a slot of the benchmark's stats array, for this run;
        // one generator writes it at a time.
        && v < unsafe { *p }
    {
        // SAFETY: a valid pointer into a slot of the benchmark's stats array, for this run;
        // one generator writes it at a time.
        unsafe { *p = v };
    }
    if let Some(p) = NTPX_LOAD_STATS.get_ptr_mut(max as u32)
        // SAFETY: a valid pointer into a slot of the benchmark's stats array, for this run;
        // one generator writes it at a time.
        && v > unsafe { *p }
    {
        // SAFETY: a valid pointer into a slot of the benchmark's stats array, for this run;
        // one generator writes it at a time.
        unsafe { *p = v };
    }
}

#[inline(always)]
fn hist_add(h: u32, v: u64) {
    let i = h * BUCKETS + bucket_of(v);
    if let Some(p) = NTPX_LOAD_HIST.get_ptr_mut(i) {
        // SAFETY: a valid pointer into a map slot; per-CPU slots have no other writer, and a
        // counter that loses an increment to a race costs nothing.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn now_ntp(tai_offset_ns: u64) -> u64 {
    // SAFETY: a BPF helper without arguments or preconditions.
    let tai = unsafe { bpf_ktime_get_tai_ns() };
    unix_ns_to_ntp(tai.wrapping_sub(tai_offset_ns))
}

/// The next request's sequence number, or `None` if it is not yet due. Paced here, not
/// by userspace: every `BPF_PROG_TEST_RUN` call costs milliseconds of set-up and
/// tear-down, so calls are long and most runs just skip their turn.
#[inline(always)]
fn paced_seq(interval: u64, burst: u64) -> Option<u64> {
    let next = NTPX_LOAD_STATS.get_ptr_mut(Stat::PacerNext as u32)?;
    // SAFETY: a BPF helper without arguments or preconditions.
    let now = unsafe { bpf_ktime_get_tai_ns() };
    // SAFETY: a valid pointer into a slot of the benchmark's stats array, for this run;
    // one generator writes it at a time.
    let n = pace(unsafe { *next }, now, interval, burst)?;
    // SAFETY: as above.
    unsafe { *next = n };
    Some(match NTPX_LOAD_STATS.get_ptr_mut(Stat::Sent as u32) {
        // SAFETY: a valid pointer into a slot of the benchmark's stats array, for this run;
        // one generator writes it at a time.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    })
}

/// Writes Ethernet, IPv4 and UDP headers (to the NTP port, no UDP checksum: IPv4 allows
/// it and every server here accepts it) for `payload` bytes of UDP payload.
#[inline(always)]
fn put_headers<const N: usize>(
    f: &Span<N>,
    m: &[u8; 16],
    (client, server): (u32, u32),
    port: u16,
    payload: usize,
) {
    // In the words the frame's alignment allows (see ntp_ebpf::packet).
    f.put_u16(0, u16::from_be_bytes([m[0], m[1]]));
    f.put_u32(2, u32::from_be_bytes([m[2], m[3], m[4], m[5]]));
    f.put_u32(6, u32::from_be_bytes([m[6], m[7], m[8], m[9]]));
    f.put_u16(10, u16::from_be_bytes([m[10], m[11]]));
    f.put_u16(12, ETH_P_IP);
    // IPv4: version/IHL, TOS, total length, id, DF, TTL 64, UDP, checksum, addresses.
    f.put_u32(IP, 0x4500_0000 | (NTP - IP + payload) as u32);
    f.put_u32(IP + 4, 0x0000_4000);
    f.put_u32(IP + 8, 0x4011_0000);
    f.put_u32(IP + 12, client);
    f.put_u32(IP + 16, server);
    f.put_u16(IP + 10, f.sum_words::<5>(IP).fold());
    f.put_u16(UDP, port);
    f.put_u16(UDP + 2, wire::NTP_PORT);
    f.put_u32(UDP + 4, ((NTP - UDP + payload) as u32) << 16);
}

/// Writes the next request over the frame. Every byte: live-frame pages are recycled
/// without being reset, so a page may come back holding a reply or a bounced request.
/// Client address and port come from a sequence number; the transmit timestamp (the
/// request's identity: servers echo it as the origin) is the departure time.
#[xdp]
pub(crate) fn ntpx_load_gen(ctx: XdpContext) -> u32 {
    let f = Frame::new(&ctx);
    let Some(cfg) = NTPX_LOAD_CFG.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // Copied out at once: the map pointer is not kept across helper calls.
    let (tai_offset, first, clients, server, m, interval, burst, xleave) = (
        cfg.tai_offset_ns,
        cfg.first_client,
        cfg.clients as u64,
        cfg.server,
        cfg.macs,
        cfg.interval_ns,
        cfg.burst,
        cfg.xleave != 0,
    );
    let Some(f) = f.exact_span::<FRAME_LEN>(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(seq) = paced_seq(interval, burst) else {
        return xdp_action::XDP_DROP;
    };
    let clients = if clients == 0 { 1 } else { clients };
    let index = (seq % clients) as u32;
    let client = first.wrapping_add(index);
    // An interleaved client names the server's receive timestamp of its last reply (the
    // origin) and its own capture of it (the receive field); none yet: a basic request.
    let last = if xleave {
        NTPX_LOAD_XLEAVE.get(index).copied().unwrap_or_default()
    } else {
        XleaveSlot::default()
    };
    // Every client a different port each round, never a privileged one.
    let port = 1024 + ((seq / clients) % 64_000) as u16;
    put_headers(&f, &m, (client, server), port, wire::NTP_HEADER_LEN);
    // NTPv4 client request, poll 6, all timestamps zero but the transmit timestamp.
    f.put_u32(
        NTP,
        u32::from_be_bytes([wire::li_vn_mode(0, 4, wire::MODE_CLIENT), 0, 6, 0]),
    );
    let mut off = NTP + 4;
    while off < NTP + wire::OFF_TRANSMIT_TS {
        f.put_u32(off, 0);
        off += 4;
    }
    f.put_u64(NTP + wire::OFF_ORIGIN_TS, last.server_rx);
    f.put_u64(NTP + wire::OFF_RECEIVE_TS, last.capture);
    f.put_u64(NTP + wire::OFF_TRANSMIT_TS, now_ntp(tai_offset));
    xdp_action::XDP_TX
}

/// The NTS generator: the pool's requests in turn (built in userspace: their
/// authenticator covers every byte), each behind headers written here, its departure
/// noted for the counter. The frame comes in [`NTS_REQUEST_MAX`] bytes of payload long
/// and is cut to the requests' length.
#[xdp]
pub(crate) fn ntpx_nts_gen(ctx: XdpContext) -> u32 {
    let Some(cfg) = NTPX_LOAD_CFG.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let (client, server, m, interval, burst) = (
        cfg.first_client,
        cfg.server,
        cfg.macs,
        cfg.interval_ns,
        cfg.burst,
    );
    let (len, port, ports) = (cfg.nts_len as usize, cfg.nts_port, cfg.nts_ports);
    if len > NTS_REQUEST_MAX || ports == 0 {
        return xdp_action::XDP_ABORTED;
    }
    let Some(f) = Frame::new(&ctx).exact_span::<{ NTP + NTS_REQUEST_MAX }>(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(seq) = paced_seq(interval, burst) else {
        return xdp_action::XDP_DROP;
    };
    let index = (seq % u64::from(NTS_POOL)) as u32;
    let Some(req) = NTPX_NTS_POOL.get(index) else {
        return xdp_action::XDP_ABORTED;
    };
    // A port per request, mixed from its index (Fibonacci hashing): the replies passed up
    // (every 16th index) and those checked in full (every 256th) then reach all the
    // client sockets, and a server's `SO_REUSEPORT` group still sees 64 flows.
    let sport = port.wrapping_add((index.wrapping_mul(0x9e37_79b1) >> 16) % ports) as u16;
    put_headers(&f, &m, (client, server), sport, len);
    let mut w = 0;
    while w < NTS_REQUEST_MAX / 4 {
        f.put_raw32(NTP + 4 * w, req.words[w]);
        w += 1;
    }
    if let Some(sent) = NTPX_NTS_SENT.get_ptr_mut(index) {
        // SAFETY: a valid pointer into the slot of this request, written only here; the
        // counter reads it (a torn read costs one response time).
        unsafe { *sent = bpf_ktime_get_ns() };
    }
    // SAFETY: the context of this run; the frame is not touched after the call.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - NTS_REQUEST_MAX as i32) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_TX
}

/// Counts and times the replies reaching the client end; everything else (ARP, ...) goes
/// to the stack.
#[xdp]
pub(crate) fn ntpx_load_count(ctx: XdpContext) -> u32 {
    let f = Frame::new(&ctx);
    let (tai_offset, step_start, echo, xleave, first) = match NTPX_LOAD_CFG.get(0) {
        Some(c) => (
            c.tai_offset_ns,
            c.step_start_ntp,
            c.echo != 0,
            c.xleave != 0,
            c.first_client,
        ),
        None => return xdp_action::XDP_PASS,
    };
    let Some(f) = f.exact_span::<FRAME_LEN>(0) else {
        return xdp_action::XDP_PASS;
    };
    if f.u16(12) != ETH_P_IP
        || f.u8(IP) != 0x45
        || f.u8(IP + 9) != 17
        || f.u16(UDP) != wire::NTP_PORT
    {
        return xdp_action::XDP_PASS;
    }
    let t4 = now_ntp(tai_offset);
    let (b0, stratum) = (f.u8(NTP), f.u8(NTP + 1));
    let origin = f.u64(NTP + wire::OFF_ORIGIN_TS);
    let t2 = f.u64(NTP + wire::OFF_RECEIVE_TS);
    let t3 = f.u64(NTP + wire::OFF_TRANSMIT_TS);
    let client_index = f.u32(IP + 16).wrapping_sub(first);
    let (leap, _, mode) = wire::split_li_vn_mode(b0);
    // A bounced request keeps our transmit timestamp where a reply has its origin.
    let t1 = if echo { t3 } else { origin };
    let mode_ok = if echo {
        mode == wire::MODE_CLIENT
    } else {
        mode == wire::MODE_SERVER
    };
    if !mode_ok || t1 > t4 {
        stat_inc(Stat::Invalid);
        return xdp_action::XDP_DROP;
    }
    if t1 < step_start {
        stat_inc(Stat::Stale);
        return xdp_action::XDP_DROP;
    }
    // (An interleaved reply's origin is our capture of the previous reply, in this step.)
    if xleave && !echo && client_index < XLEAVE_CLIENTS {
        return count_chained(client_index, origin, t2, t3, t4);
    }
    // Everything computed before the first map update, on every path: this kernel's
    // verifier (6.18) trips over stack slots that only some paths spill.
    let rtt = ntp_diff_ns(t4, t1) as u64;
    let proc = ntp_diff_ns(t3, t2);
    let proc = if proc < 0 { 0 } else { proc as u64 };
    // The client's offset: ((t2 − t1) + (t3 − t4)) / 2; one shared clock, truth 0.
    let off = i64::midpoint(ntp_diff_ns(t2, t1), ntp_diff_ns(t3, t4)).unsigned_abs();
    let tx_gap = positive(ntp_diff_ns(t4, t3));
    let flags =
        (echo as u64) | ((leap == wire::LEAP_UNSYNC) as u64) << 1 | ((stratum == 0) as u64) << 2;
    record_reply(rtt, proc, off, flags);
    if !echo {
        hist_add(HIST_TX_GAP, tx_gap);
    }
    xdp_action::XDP_DROP
}

/// A reply to a client of an interleaved load: kept for its next request; if it is an
/// interleaved reply (its origin echoes our capture of the previous one), what it
/// reports as that reply's departure is compared with the capture. A basic reply in a
/// chain (the first, or where the server fell back) counts as answered, no more.
#[inline(always)]
fn count_chained(index: u32, origin: u64, t2: u64, t3: u64, t4: u64) -> u32 {
    let Some(slot) = NTPX_LOAD_XLEAVE.get_ptr_mut(index) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: a valid pointer into the array's slot for this run; the generator only
    // reads it, and a torn pair costs one basic request.
    let last_capture = unsafe { (*slot).capture };
    let gap = positive(ntp_diff_ns(last_capture, t3));
    // SAFETY: as above.
    unsafe {
        (*slot).server_rx = t2;
        (*slot).capture = t4;
    }
    stat_inc(Stat::Answered);
    if last_capture != 0 && origin == last_capture {
        stat_inc(Stat::Interleaved);
        hist_add(HIST_XLEAVE_GAP, gap);
    }
    xdp_action::XDP_DROP
}

#[inline(always)]
fn positive(v: i64) -> u64 {
    if v < 0 { 0 } else { v as u64 }
}

/// Counts a valid reply. `flags`: bit 0 echo, bit 1 unsynchronised, bit 2 `KoD`.
#[inline(always)]
fn record_reply(rtt: u64, proc: u64, off: u64, flags: u64) {
    stat_inc(Stat::Answered);
    hist_add(HIST_RTT, rtt);
    stat_min_max(Stat::RttMin, Stat::RttMax, rtt);
    if flags & 1 != 0 {
        return;
    }
    if flags & 2 != 0 {
        stat_inc(Stat::Unsynchronised);
    }
    if flags & 4 != 0 {
        stat_inc(Stat::Kod);
    }
    hist_add(HIST_PROC, proc);
    stat_min_max(Stat::ProcMin, Stat::ProcMax, proc);
    hist_add(HIST_OFFSET, off);
}

/// Counts the NTS generator's replies and drops them, so the client end's CPU is not
/// spent taking them through its stack (which would make the generator the limit);
/// one in [`NTS_PASS_EVERY`] goes up to the generator's sockets.
#[xdp]
pub(crate) fn ntpx_nts_count(ctx: XdpContext) -> u32 {
    let f = Frame::new(&ctx);
    let Some(h) = f.span::<FRAME_LEN>(0) else {
        return xdp_action::XDP_PASS;
    };
    if h.u16(12) != ETH_P_IP
        || h.u8(IP) != 0x45
        || h.u8(IP + 9) != 17
        || h.u16(UDP) != wire::NTP_PORT
        || h.u32(NTP + wire::OFF_ORIGIN_TS) != NTS_POOL_MAGIC
    {
        return xdp_action::XDP_PASS;
    }
    let index = h.u32(NTP + wire::OFF_ORIGIN_TS + 4);
    // Replies (not kisses) timed against their request's last departure: one that came
    // after its pool slot was sent again (the pool turns in about 0.1 s at 300 k/s)
    // reads short; one whose slot was never sent, or a second late, is left out.
    if h.u8(NTP + 1) != 0
        && let Some(sent) = NTPX_NTS_SENT.get(index % NTS_POOL)
    {
        // SAFETY: a BPF helper without arguments or preconditions.
        let rtt = unsafe { bpf_ktime_get_ns() }.wrapping_sub(*sent);
        if rtt < 1_000_000_000 {
            hist_add(HIST_RTT, rtt);
        }
    }
    if index % NTS_PASS_EVERY == 0 {
        return xdp_action::XDP_PASS;
    }
    let stat = if h.u8(NTP + 1) == 0 {
        if h.raw32(NTP + 12) == u32::from_ne_bytes(*b"NTSN") {
            NtsStat::Nak
        } else {
            NtsStat::Kod
        }
    } else if f.span::<{ FRAME_LEN + 4 }>(0).is_some() {
        NtsStat::Answered
    } else {
        NtsStat::Short
    };
    if let Some(p) = NTPX_NTS_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a valid pointer into this CPU's slot, written only from here.
        unsafe { *p += 1 };
    }
    xdp_action::XDP_DROP
}

/// The limit of the link: every IPv4 frame goes straight back, addresses and ports
/// swapped (checksums are unchanged by a swap), nothing parsed beyond that.
#[xdp]
pub(crate) fn ntpx_bounce(ctx: XdpContext) -> u32 {
    let Some(f) = Frame::new(&ctx).span::<{ UDP + 8 }>(0) else {
        return xdp_action::XDP_PASS;
    };
    if f.u16(12) != ETH_P_IP {
        return xdp_action::XDP_PASS;
    }
    f.swap_macs();
    f.swap_words::<1>(IP + 12, IP + 16);
    f.swap_ports(UDP);
    xdp_action::XDP_TX
}

/// The bounce with the two clock reads every NTP reply needs (its receive and transmit
/// timestamps, written over the request's): the floor of an XDP NTP responder.
#[xdp]
pub(crate) fn ntpx_bounce_timed(ctx: XdpContext) -> u32 {
    // SAFETY: a BPF helper without arguments or preconditions.
    let rx = unsafe { bpf_ktime_get_tai_ns() };
    let Some(f) = Frame::new(&ctx).exact_span::<FRAME_LEN>(0) else {
        return xdp_action::XDP_PASS;
    };
    if f.u16(12) != ETH_P_IP {
        return xdp_action::XDP_PASS;
    }
    f.swap_macs();
    f.swap_words::<1>(IP + 12, IP + 16);
    f.swap_ports(UDP);
    f.put_u64(NTP + wire::OFF_RECEIVE_TS, rx);
    // SAFETY: as above.
    let tx = unsafe { bpf_ktime_get_tai_ns() };
    f.put_u64(NTP + wire::OFF_TRANSMIT_TS, tx);
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
