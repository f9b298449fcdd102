//! The ntpx XDP program: answers plain NTP client requests at the driver.
//!
//! Everything that is not a 48-byte client request from an allowed source, with a fresh
//! server state, is passed to the kernel stack untouched (where `ntpxd`'s socket sees it)
//! or, for denied sources, dropped. Clients in interleaved mode are passed too: only the
//! daemon learns when a reply really left. See design.md, "The fast path".
#![no_std]
// Everything is inlined into the programs on purpose: the verifier follows one function,
// and BPF-to-BPF calls would cost more than they save here.
#![allow(clippy::inline_always)]
// aya's #[xdp] hands each program its context by value.
#![allow(clippy::needless_pass_by_value)]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST, xdp_action},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_tai_ns},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use ntp_common::{
    ClientRecord, Counter, RateLimit, RateVerdict, ServerState,
    state::{
        ACL_ALLOW, ACL_MAX_ENTRIES, CLIENT_RECORD_BYTES, DEFAULT_CLIENTLOG_LIMIT,
        IFACE_MAX_ENTRIES, LOCAL_MAX_ENTRIES, XLEAVE_TO_DAEMON, client_key_v4,
    },
    timebase::unix_ns_to_ntp,
    wire::{self, NTP_HEADER_LEN},
};

use ntp_ebpf::packet::{Csum, Frame};

/// UDP port answered; overridden by the loader from the configuration.
#[unsafe(no_mangle)]
static NTPX_PORT: u16 = wire::NTP_PORT;

#[map(name = "NTPX_STATE")]
static NTPX_STATE: Array<ServerState> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map(name = "NTPX_COUNTERS")]
static NTPX_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "NTPX_ACL_V4")]
static NTPX_ACL_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(ACL_MAX_ENTRIES, 0);

#[map(name = "NTPX_ACL_V6")]
static NTPX_ACL_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(ACL_MAX_ENTRIES, 0);

/// Unicast addresses this server answers for; anything else is passed to the stack.
#[map(name = "NTPX_LOCAL_V4")]
static NTPX_LOCAL_V4: HashMap<[u8; 4], u8> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);

#[map(name = "NTPX_LOCAL_V6")]
static NTPX_LOCAL_V6: HashMap<[u8; 16], u8> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);

/// Each serving interface's MAC address ([`ntp_common::state::mac_value`]), by index:
/// only frames addressed to it are answered.
#[map(name = "NTPX_IFACE_MACS")]
static NTPX_IFACE_MACS: HashMap<u32, u64> = HashMap::with_max_entries(IFACE_MAX_ENTRIES, 0);

/// 1 to keep the client log, 0 for `noclientlog`; set by the loader.
#[unsafe(no_mangle)]
static NTPX_CLIENTLOG: u8 = 1;

/// Per-client records (`ntpxc clients`); the loader sizes it from `clientloglimit`.
#[map(name = "NTPX_CLIENTS")]
static NTPX_CLIENTS: LruHashMap<[u8; 16], ClientRecord> =
    LruHashMap::with_max_entries(DEFAULT_CLIENTLOG_LIMIT / CLIENT_RECORD_BYTES, 0);

/// `ratelimit` settings, set by the loader (leak 0: no rate limiting).
#[unsafe(no_mangle)]
static NTPX_RL_INTERVAL_NS: u64 = 8_000_000_000;
#[unsafe(no_mangle)]
static NTPX_RL_BURST: u64 = 8;
#[unsafe(no_mangle)]
static NTPX_RL_LEAK: u8 = 0;
#[unsafe(no_mangle)]
static NTPX_RL_KOD: u8 = 0;

/// What the client log says of a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// The rate limit's verdict, and the client's record if it has one (to note the
    /// reply's receive timestamp in).
    Rate(RateVerdict, Option<*mut ClientRecord>),
    /// An interleaved-mode client: the daemon answers, with the transmit timestamp of its
    /// previous reply as the kernel saw it leave.
    Daemon,
}

/// Whether the client in `rec` is in interleaved mode: its origin timestamp names our
/// receive timestamp (chrony's clients do so from their second xleave request), or it
/// did so before and still sends a non-zero origin. A zero origin is a basic request.
#[inline(always)]
fn interleaving(rec: &ClientRecord, origin: u64) -> bool {
    origin != 0
        && (rec.xleave_tx == XLEAVE_TO_DAEMON || (rec.xleave_rx != 0 && origin == rec.xleave_rx))
}

/// Counts a request from the allowed client `key` in the client log and applies the rate
/// limit; interleaved clients are left to the daemon, which logs and limits them.
#[inline(always)]
fn log_client(key: [u8; 16], now: u64, origin: u64) -> Admission {
    // SAFETY: a read of a global the loader sets before the program is loaded; volatile so the
    // compiler keeps the load instead of folding in the compile-time default.
    if unsafe { core::ptr::read_volatile(&raw const NTPX_CLIENTLOG) } == 0 {
        return Admission::Rate(RateVerdict::Answer, None);
    }
    // SAFETY: a read of a global the loader sets before the program is loaded; volatile so the
    // compiler keeps the load instead of folding in the compile-time default.
    let rl = unsafe {
        RateLimit {
            interval_ns: core::ptr::read_volatile(&raw const NTPX_RL_INTERVAL_NS),
            burst: core::ptr::read_volatile(&raw const NTPX_RL_BURST),
            leak: core::ptr::read_volatile(&raw const NTPX_RL_LEAK),
            kod: core::ptr::read_volatile(&raw const NTPX_RL_KOD),
        }
    };
    // The record is updated in place. Another CPU may update the same record at once,
    // or the LRU may hand its slot to another client while this run holds it: the worst
    // case is a lost count or one request judged by a neighbour's bucket or hand-over
    // mark, which a client log can afford and locking here could not.
    let rec = if let Some(p) = NTPX_CLIENTS.get_ptr_mut(key) {
        p
    } else {
        // BPF_NOEXIST: of two CPUs creating the same record, one counts it.
        if NTPX_CLIENTS
            .insert(key, ClientRecord::default(), BPF_NOEXIST as u64)
            .is_ok()
        {
            count(Counter::ClientRecordsCreated);
        }
        match NTPX_CLIENTS.get_ptr_mut(key) {
            Some(p) => p,
            None => return Admission::Rate(RateVerdict::Answer, None),
        }
    };
    let ptr = rec;
    // SAFETY: the pointer comes from a map lookup in this run and stays valid until it ends;
    // concurrent updates of the record are tolerated (see above).
    let rec = unsafe { &mut *rec };
    if interleaving(rec, origin) {
        rec.xleave_tx = XLEAVE_TO_DAEMON;
        return Admission::Daemon;
    }
    let verdict = if rl.leak == 0 {
        RateVerdict::Answer
    } else {
        // SAFETY: a BPF helper without arguments or preconditions.
        rl.check(rec, now, unsafe { bpf_get_prandom_u32() })
    };
    rec.hit(now, verdict == RateVerdict::Drop);
    Admission::Rate(verdict, Some(ptr))
}

/// Notes in the client's record the receive timestamp its reply carries, for
/// recognising an interleaved client next time; a basic request ends any hand-over to
/// the daemon.
#[inline(always)]
fn remember_reply(rec: Option<*mut ClientRecord>, req: &RequestFields) {
    if let Some(p) = rec {
        // SAFETY: the pointer is into the LRU map, valid for this program run.
        unsafe {
            (*p).xleave_rx = req.rx_ntp;
            (*p).xleave_tx = 0;
        }
    }
}

const ETH_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const REPLY_TTL: u8 = 64;
/// 16-bit words in a UDP header and a bare NTP header (8 + 48 bytes).
const UDP_NTP_WORDS: usize = 28;

/// Answers NTP client requests in place.
#[xdp]
pub(crate) fn ntpx_serve(ctx: XdpContext) -> u32 {
    // The receive timestamp comes first: everything after it is server processing delay.
    // SAFETY: a BPF helper without arguments or preconditions.
    let rx_tai = unsafe { bpf_ktime_get_tai_ns() };
    count(Counter::Frames);
    let (action, reason) = serve(&ctx, rx_tai);
    count(reason);
    action
}

/// Passes every frame: attached to a veth peer so `XDP_TX` frames reach it.
#[xdp]
pub(crate) fn ntpx_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = NTPX_COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: no other writer, a plain increment is exact.
        // SAFETY: a valid pointer into a map slot; per-CPU slots have no other writer, and a
        // counter that loses an increment to a race costs nothing.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn pass(reason: Counter) -> (u32, Counter) {
    (xdp_action::XDP_PASS, reason)
}

#[inline(always)]
fn serve(ctx: &XdpContext, rx_tai: u64) -> (u32, Counter) {
    let f = Frame::new(ctx);
    let (Some(ethertype), Some(dst0)) = (f.u16(12), f.u8(0)) else {
        return pass(Counter::PassTruncated);
    };
    // Broadcast and multicast frames are never answered from here.
    if dst0 & 1 != 0 {
        return pass(Counter::PassNotLocal);
    }
    // Only frames for this interface's own MAC: in promiscuous mode the driver hands up
    // frames for other hosts, which are not ours to answer (nor to answer as them).
    if !for_this_interface(ctx, &f) {
        return pass(Counter::PassOtherMac);
    }
    if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
        return l3::<ETH_LEN>(&f, ethertype, rx_tai);
    }
    let Some(inner) = f.u16(ETH_LEN + 2) else {
        return pass(Counter::PassTruncated);
    };
    if inner != ETH_P_8021Q && inner != ETH_P_8021AD {
        return l3::<{ ETH_LEN + VLAN_LEN }>(&f, inner, rx_tai);
    }
    let Some(inner2) = f.u16(ETH_LEN + VLAN_LEN + 2) else {
        return pass(Counter::PassTruncated);
    };
    l3::<{ ETH_LEN + 2 * VLAN_LEN }>(&f, inner2, rx_tai)
}

// One instance per L2 header length keeps every packet offset a constant the verifier sees.
#[inline(always)]
fn l3<const L2: usize>(f: &Frame, ethertype: u16, rx_tai: u64) -> (u32, Counter) {
    match ethertype {
        ETH_P_IP => ipv4::<L2>(f, rx_tai),
        ETH_P_IPV6 => ipv6::<L2>(f, rx_tai),
        _ => pass(Counter::PassNotIp),
    }
}

#[inline(always)]
fn ipv4<const L2: usize>(f: &Frame, rx_tai: u64) -> (u32, Counter) {
    let ip = L2;
    let udp = L2 + IPV4_LEN;
    let ntp = udp + UDP_LEN;
    let Some(ver_ihl) = f.u8(ip) else {
        return pass(Counter::PassTruncated);
    };
    if ver_ihl >> 4 != 4 {
        return pass(Counter::PassNotIp);
    }
    if ver_ihl != 0x45 {
        return pass(Counter::PassIpOptions);
    }
    let (Some(frag), Some(proto)) = (f.u16(ip + 6), f.u8(ip + 9)) else {
        return pass(Counter::PassTruncated);
    };
    // More-fragments flag or a fragment offset: only whole datagrams are answered here.
    if frag & 0x3fff != 0 {
        return pass(Counter::PassFragment);
    }
    if proto != IPPROTO_UDP {
        return pass(Counter::PassNotNtp);
    }
    let udp_len = match check_udp(f, udp, f.u16(ip + 2), IPV4_LEN, false) {
        Ok(v) => v,
        Err(verdict) => return verdict,
    };
    // The header checksum is never offloaded on receive: a wrong one is corruption
    // (checked once the frame is known to be whole).
    if f.sum_words::<{ IPV4_LEN / 2 }>(ip).fold() != 0 {
        return (xdp_action::XDP_DROP, Counter::DropBadChecksum);
    }
    let (Some(src), Some(dst)) = (f.array::<4>(ip + 12), f.array::<4>(ip + 16)) else {
        return pass(Counter::PassTruncated);
    };
    let addr_sum = f.sum_words::<4>(ip + 12);
    if !udp_checksum_ok(f, udp, addr_sum, udp_len, false) {
        return pass(Counter::PassUdpChecksum);
    }
    // SAFETY: the value is only tested for presence, never read, so a concurrent update by the
    // daemon cannot be observed half-written.
    if unsafe { NTPX_LOCAL_V4.get(dst) }.is_none() {
        return pass(Counter::PassNotLocal);
    }
    let Some(ok) = v4_verdict(src) else {
        return (xdp_action::XDP_DROP, Counter::DropBadSource);
    };
    let (kiss, rec) = match admit(
        ok,
        client_key_v4(src),
        rx_tai,
        f.u64(ntp + wire::OFF_ORIGIN_TS).unwrap_or(0),
    ) {
        Ok(k) => k,
        Err(verdict) => return verdict,
    };
    let (state, req) = match prepare(f, ntp, rx_tai) {
        Ok(v) => v,
        Err(verdict) => return verdict,
    };
    remember_reply(rec, &req);

    f.swap_macs();
    f.swap::<4>(ip + 12, ip + 16);
    let (Some(w0), Some(w4), Some(check)) = (f.u16(ip), f.u16(ip + 8), f.u16(ip + 10)) else {
        return pass(Counter::PassTruncated);
    };
    // ECN bits are the path's, not the request's to echo (chrony's replies carry none).
    let (r0, r4) = (w0 & 0xfffc, (REPLY_TTL as u16) << 8 | (w4 & 0xff));
    f.put_u16(ip, r0);
    f.put_u16(ip + 8, r4);
    // The header's checksum, verified above, updated for the two words that changed
    // (RFC 1624, eqn. 3); swapping the addresses leaves the sum as it was.
    let mut ip_csum = Csum(0);
    ip_csum.add16(!check);
    ip_csum.add16(!w0);
    ip_csum.add16(r0);
    ip_csum.add16(!w4);
    ip_csum.add16(r4);
    f.put_u16(ip + 10, ip_csum.fold());
    answer_udp(f, udp, addr_sum, udp_len, &state, req, kiss)
}

#[inline(always)]
fn ipv6<const L2: usize>(f: &Frame, rx_tai: u64) -> (u32, Counter) {
    let ip = L2;
    let udp = L2 + IPV6_LEN;
    let ntp = udp + UDP_LEN;
    let (Some(ver), Some(next)) = (f.u8(ip), f.u8(ip + 6)) else {
        return pass(Counter::PassTruncated);
    };
    if ver >> 4 != 6 {
        return pass(Counter::PassNotIp);
    }
    if next != IPPROTO_UDP {
        // Extension headers (hop-by-hop, routing, fragment, ...) are left to the stack.
        return match next {
            0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 => pass(Counter::PassIpv6Ext),
            _ => pass(Counter::PassNotNtp),
        };
    }
    let udp_len = match check_udp(f, udp, f.u16(ip + 4), 0, true) {
        Ok(v) => v,
        Err(verdict) => return verdict,
    };
    let (Some(src), Some(dst)) = (f.array::<16>(ip + 8), f.array::<16>(ip + 24)) else {
        return pass(Counter::PassTruncated);
    };
    let addr_sum = f.sum_words::<16>(ip + 8);
    if !udp_checksum_ok(f, udp, addr_sum, udp_len, true) {
        return pass(Counter::PassUdpChecksum);
    }
    // SAFETY: the value is only tested for presence, never read, so a concurrent update by the
    // daemon cannot be observed half-written.
    if unsafe { NTPX_LOCAL_V6.get(dst) }.is_none() {
        return pass(Counter::PassNotLocal);
    }
    // Multicast, unspecified (::) and loopback (::1) cannot be real clients.
    let low = u128::from_be_bytes(src);
    if src[0] == 0xff || low <= 1 {
        return (xdp_action::XDP_DROP, Counter::DropBadSource);
    }
    // An IPv4-mapped source (::ffff:a.b.c.d) gets the IPv4 rules' verdict, as in the
    // daemon: `allow ::/0` must not open what the IPv4 rules close.
    let verdict = if low >> 32 == 0xffff {
        v4_verdict([src[12], src[13], src[14], src[15]])
    } else {
        Some(allowed(NTPX_ACL_V6.get(Key::new(128, src))))
    };
    let Some(ok) = verdict else {
        return (xdp_action::XDP_DROP, Counter::DropBadSource);
    };
    let (kiss, rec) = match admit(
        ok,
        src,
        rx_tai,
        f.u64(ntp + wire::OFF_ORIGIN_TS).unwrap_or(0),
    ) {
        Ok(k) => k,
        Err(verdict) => return verdict,
    };
    let (state, req) = match prepare(f, ntp, rx_tai) {
        Ok(v) => v,
        Err(verdict) => return verdict,
    };
    remember_reply(rec, &req);

    f.swap_macs();
    f.swap::<16>(ip + 8, ip + 24);
    // ECN: the low two bits of the traffic class, bits 4-5 of the second byte.
    if let Some(b1) = f.u8(ip + 1) {
        f.put_u8(ip + 1, b1 & 0xcf);
    }
    f.put_u8(ip + 7, REPLY_TTL);
    answer_udp(f, udp, addr_sum, udp_len, &state, req, kiss)
}

/// Whether the frame is addressed to the MAC of the interface it arrived on.
#[inline(always)]
fn for_this_interface(ctx: &XdpContext, f: &Frame) -> bool {
    // SAFETY: the context pointer is the program's argument, valid for the whole run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: the value is a plain u64 the daemon writes whole (a map update, not a
    // partial store).
    let Some(mac) = (unsafe { NTPX_IFACE_MACS.get(ifindex) }) else {
        return false;
    };
    let (Some(hi), Some(lo)) = (f.u32(0), f.u16(4)) else {
        return false;
    };
    (u64::from(hi) << 16 | u64::from(lo)) == *mac
}

/// Whether the UDP checksum of the 48-byte request at `udp` verifies (`addr_sum`: the
/// sum of the source and destination addresses). IPv4 may go without one (zero). A
/// datagram sent on this host through a veth still carries the partial checksum its
/// sender left to offload (the pseudo header's sum alone): it never crossed a wire and
/// is taken as it is, as the stack takes it.
#[inline(always)]
fn udp_checksum_ok(f: &Frame, udp: usize, addr_sum: Csum, udp_len: u16, ipv6: bool) -> bool {
    let Some(field) = f.u16(udp + 6) else {
        return false;
    };
    if !ipv6 && field == 0 {
        return true;
    }
    let mut pseudo = addr_sum;
    pseudo.add16(IPPROTO_UDP as u16);
    pseudo.add16(udp_len);
    let mut sum = pseudo;
    // 28 words: the UDP header and the 48-byte NTP header.
    sum.0 += f.sum_words::<UDP_NTP_WORDS>(udp).0;
    sum.fold() == 0 || field == !pseudo.fold()
}

/// Checks the UDP header at `udp`: served port, and the IP length field (`ip_len`, which
/// counts `ip_hdr` bytes of IP header before UDP), UDP length and frame length all saying
/// exactly 48 bytes of NTP. Returns the UDP length, or the verdict.
#[inline(always)]
fn check_udp(
    f: &Frame,
    udp: usize,
    ip_len: Option<u16>,
    ip_hdr: usize,
    ipv6: bool,
) -> Result<u16, (u32, Counter)> {
    let Some(dport) = f.u16(udp + 2) else {
        return Err(pass(Counter::PassTruncated));
    };
    // SAFETY: a read of a global the loader sets before the program is loaded; volatile so the
    // compiler keeps the load instead of folding in the compile-time default.
    if dport != unsafe { core::ptr::read_volatile(&raw const NTPX_PORT) } {
        return Err(pass(Counter::PassNotNtp));
    }
    count(Counter::NtpReceived);
    let (Some(ip_len), Some(udp_len)) = (ip_len, f.u16(udp + 4)) else {
        return Err(pass(Counter::PassTruncated));
    };
    if ip_len as usize != ip_hdr + UDP_LEN + NTP_HEADER_LEN
        || udp_len as usize != UDP_LEN + NTP_HEADER_LEN
        || !f.is_exactly(udp + UDP_LEN + NTP_HEADER_LEN)
    {
        return Err(pass(Counter::PassLength));
    }
    // The mode decides before access control, as in the daemon: a denied peer's packet is
    // the stack's to judge, not a dropped client request.
    let (Some(b0), Some(sport), Some(csum)) = (f.u8(udp + UDP_LEN), f.u16(udp), f.u16(udp + 6))
    else {
        return Err(pass(Counter::PassTruncated));
    };
    if !wire::is_answerable_request(b0) {
        return Err(pass(Counter::PassMode));
    }
    // Clients send from port 123 or an ephemeral port: a privileged source port is a
    // spoofed request aimed at some service (reflection). IPv6 requires a UDP checksum.
    if (sport < 1024 && sport != wire::NTP_PORT) || (ipv6 && csum == 0) {
        return Err((xdp_action::XDP_DROP, Counter::DropBadSource));
    }
    Ok(udp_len)
}

/// Swaps the UDP ports and finishes the reply; `addr_sum` is the checksum sum of the two
/// addresses (the pseudo header's, unchanged by their swap).
#[inline(always)]
fn answer_udp(
    f: &Frame,
    udp: usize,
    addr_sum: Csum,
    udp_len: u16,
    state: &ServerState,
    req: RequestFields,
    kiss: bool,
) -> (u32, Counter) {
    let mut csum = addr_sum;
    csum.add16(IPPROTO_UDP as u16);
    csum.add16(udp_len);
    f.swap::<2>(udp, udp + 2);
    csum.add32(f.u32(udp).unwrap_or(0));
    csum.add16(udp_len);
    finish_reply(f, udp + UDP_LEN, udp + 6, state, req, csum, kiss)
}

/// Access control, client log and rate limit for the client `key`: whether to answer with
/// a Kiss-o'-Death, or the verdict that ends the request here.
#[inline(always)]
fn admit(
    ok: bool,
    key: [u8; 16],
    rx_tai: u64,
    origin: u64,
) -> Result<(bool, Option<*mut ClientRecord>), (u32, Counter)> {
    // A denied source leaves no record (as chrony): a spoofed flood from denied
    // addresses must not evict real clients' records and reset their buckets.
    if !ok {
        return Err((xdp_action::XDP_DROP, Counter::DropDenied));
    }
    let admission = log_client(key, rx_tai, origin);
    match admission {
        Admission::Daemon => Err(pass(Counter::PassInterleaved)),
        Admission::Rate(RateVerdict::Drop, _) => {
            Err((xdp_action::XDP_DROP, Counter::DropRateLimit))
        }
        // Nobody interleaves with a Kiss-o'-Death (as chrony): its timestamps are not kept.
        Admission::Rate(RateVerdict::Kod, _) => Ok((true, None)),
        Admission::Rate(RateVerdict::Answer, rec) => Ok((false, rec)),
    }
}

/// Whether the IPv4 client `a` is allowed, or `None` if it cannot be a real client
/// (0/8, 127/8, multicast, class E, broadcast).
#[inline(always)]
fn v4_verdict(a: [u8; 4]) -> Option<bool> {
    if a[0] == 0 || a[0] == 127 || a[0] >= 224 {
        return None;
    }
    Some(allowed(NTPX_ACL_V4.get(Key::new(32, a))))
}

#[inline(always)]
fn allowed(v: Option<&u32>) -> bool {
    matches!(v, Some(&ACL_ALLOW))
}

/// The request fields a reply echoes.
#[derive(Clone, Copy)]
struct RequestFields {
    version: u8,
    poll: i8,
    client_tx: u64,
    rx_tai: u64,
    /// The receive timestamp as served (NTP format).
    rx_ntp: u64,
}

/// Reads the request fields to echo (the header was checked by `check_udp`) and the
/// state to answer with, or the verdict.
#[inline(always)]
fn prepare(
    f: &Frame,
    ntp: usize,
    rx_tai: u64,
) -> Result<(ServerState, RequestFields), (u32, Counter)> {
    let (Some(b0), Some(poll), Some(client_tx)) = (
        f.u8(ntp),
        f.u8(ntp + wire::OFF_POLL),
        f.u64(ntp + wire::OFF_TRANSMIT_TS),
    ) else {
        return Err(pass(Counter::PassTruncated));
    };
    let state = match read_state() {
        None => return Err(pass(Counter::PassNotServing)),
        Some(s) if s.serve == 0 => return Err(pass(Counter::PassNotServing)),
        Some(s) if s.timebase.age_ns(rx_tai).is_none() => return Err(pass(Counter::PassStale)),
        Some(s) => s,
    };
    let fields = RequestFields {
        version: wire::split_li_vn_mode(b0).1,
        poll: poll as i8,
        client_tx,
        rx_tai,
        rx_ntp: unix_ns_to_ntp(state.timebase.served_unix_ns(rx_tai)),
    };
    Ok((state, fields))
}

/// Reads the state under its sequence lock; `None` while the daemon is writing it.
#[inline(always)]
fn read_state() -> Option<ServerState> {
    let p = NTPX_STATE.get_ptr(0)?;
    // Volatile reads keep the compiler from merging or reordering the lock and the copy;
    // BPF loads on the architectures served here are not reordered against each other.
    // SAFETY: `p` points at the state map's one element, valid for the whole run; a torn
    // read is caught by the sequence check.
    let seq1 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).seq)) };
    if seq1 & 1 != 0 {
        return None;
    }
    // SAFETY: `p` points at the state map's one element, valid for the whole run; a torn
    // read is caught by the sequence check.
    let s = unsafe { core::ptr::read_volatile(p) };
    // SAFETY: `p` points at the state map's one element, valid for the whole run; a torn
    // read is caught by the sequence check.
    let seq2 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).seq)) };
    if seq1 != seq2 {
        return None;
    }
    Some(s)
}

/// Writes the NTP reply header, takes the transmit timestamp last, and fixes the UDP
/// checksum from the sum of everything written.
#[inline(always)]
fn finish_reply(
    f: &Frame,
    ntp: usize,
    udp_csum_off: usize,
    state: &ServerState,
    req: RequestFields,
    mut csum: Csum,
    kiss: bool,
) -> (u32, Counter) {
    let tb = &state.timebase;
    let age = tb.age_ns(req.rx_tai).unwrap_or(0);
    let poll = if req.poll < state.min_poll {
        state.min_poll
    } else {
        req.poll
    };
    // A Kiss-o'-Death RATE: unsynchronised, stratum 0, the kiss code as reference id.
    let (leap, stratum, refid_bytes) = if kiss {
        (wire::LEAP_UNSYNC, 0, *b"RATE")
    } else {
        (state.leap_at(req.rx_tai), state.stratum, state.refid)
    };
    let head = u32::from_be_bytes([
        wire::li_vn_mode(leap, req.version, wire::MODE_SERVER),
        stratum,
        poll as u8,
        state.precision as u8,
    ]);
    let root_disp = state.root_dispersion_at(age);
    let refid = u32::from_be_bytes(refid_bytes);
    let rx_ntp = req.rx_ntp;

    f.put_u32(ntp, head);
    f.put_u32(ntp + wire::OFF_ROOT_DELAY, state.root_delay);
    f.put_u32(ntp + wire::OFF_ROOT_DISP, root_disp);
    f.put_u32(ntp + wire::OFF_REFID, refid);
    f.put_u64(ntp + wire::OFF_REF_TS, state.ref_ts);
    f.put_u64(ntp + wire::OFF_ORIGIN_TS, req.client_tx);
    f.put_u64(ntp + wire::OFF_RECEIVE_TS, rx_ntp);
    csum.add32(head);
    csum.add32(state.root_delay);
    csum.add32(root_disp);
    csum.add32(refid);
    csum.add64(state.ref_ts);
    csum.add64(req.client_tx);
    csum.add64(rx_ntp);

    // SAFETY: a BPF helper without arguments or preconditions.
    let tx_tai = unsafe { bpf_ktime_get_tai_ns() };
    let tx_ntp = unix_ns_to_ntp(tb.served_unix_ns(tx_tai));
    f.put_u64(ntp + wire::OFF_TRANSMIT_TS, tx_ntp);
    csum.add64(tx_ntp);
    let c = csum.fold();
    // In UDP a computed zero is sent as all ones (zero means "no checksum").
    f.put_u16(udp_csum_off, if c == 0 { 0xffff } else { c });
    (
        xdp_action::XDP_TX,
        if kiss {
            Counter::AnsweredKod
        } else {
            Counter::Answered
        },
    )
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
