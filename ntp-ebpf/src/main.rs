//! The ntpx XDP program: answers plain NTP client requests at the driver.
//!
//! Everything that is not a 48-byte client request from an allowed source, with a fresh
//! server state, is passed to the kernel stack untouched (where `ntpxd`'s socket sees it)
//! or, for denied sources, dropped. Clients in interleaved mode are passed too: only the
//! daemon learns when a reply really left. See design.md, "The fast path".
//!
//! A reply's cost is the product: word-sized packet access, no division, one per-CPU
//! counter record, the state read before any per-client work, the access-control
//! verdict kept in the client's record, a random draw only for a limited request.
#![no_std]
// Everything is inlined into the programs on purpose: the verifier follows one function,
// and BPF-to-BPF calls would cost more than they save here.
#![allow(clippy::inline_always)]
// aya's #[xdp] hands each program its context by value.
#![allow(clippy::needless_pass_by_value)]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST, xdp_action},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_tai_ns, bpf_xdp_adjust_meta},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, XskMap, lpm_trie::Key},
    programs::XdpContext,
};
use ntp_common::{
    ClientRecord, Counter, RateLimit, RateVerdict, ServerState,
    counters::CpuRecord,
    state::{
        ACL_ALLOW, ACL_MAX_ENTRIES, CLIENT_RECORD_BYTES, DEFAULT_CLIENTLOG_LIMIT,
        IFACE_MAX_ENTRIES, LOCAL_MAX_ENTRIES, XLEAVE_TO_DAEMON, XSK_MAX_ENTRIES, XSK_META_LEN,
        xsk_slot_key,
    },
    wire::{self, NTP_HEADER_LEN},
};

use ntp_ebpf::packet::{Csum, Frame, Span};

/// UDP port answered; overridden by the loader from the configuration.
#[unsafe(no_mangle)]
static NTPX_PORT: u16 = wire::NTP_PORT;

#[map(name = "NTPX_STATE")]
static NTPX_STATE: Array<ServerState> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each CPU's counters and lookup caches ([`CpuRecord`]), at index 0.
#[map(name = "NTPX_COUNTERS")]
static NTPX_COUNTERS: PerCpuArray<CpuRecord> = PerCpuArray::with_max_entries(1, 0);

// Addresses are keyed by their bytes in memory order (as loaded from the frame), the
// same bytes userspace writes as arrays.
#[map(name = "NTPX_ACL_V4")]
static NTPX_ACL_V4: LpmTrie<u32, u32> = LpmTrie::with_max_entries(ACL_MAX_ENTRIES, 0);

#[map(name = "NTPX_ACL_V6")]
static NTPX_ACL_V6: LpmTrie<[u32; 4], u32> = LpmTrie::with_max_entries(ACL_MAX_ENTRIES, 0);

/// Unicast addresses this server answers for; anything else is passed to the stack.
#[map(name = "NTPX_LOCAL_V4")]
static NTPX_LOCAL_V4: HashMap<u32, u8> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);

#[map(name = "NTPX_LOCAL_V6")]
static NTPX_LOCAL_V6: HashMap<[u32; 4], u8> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);

/// Each serving interface's MAC address ([`ntp_common::state::mac_value`]), by index:
/// only frames addressed to it are answered (cached per CPU, see [`Cpu::mac`]).
#[map(name = "NTPX_IFACE_MACS")]
static NTPX_IFACE_MACS: HashMap<u32, u64> = HashMap::with_max_entries(IFACE_MAX_ENTRIES, 0);

/// The daemon's `AF_XDP` sockets (`ntpxd --xsk`), by slot.
#[map(name = "NTPX_XSKS")]
static NTPX_XSKS: XskMap = XskMap::with_max_entries(XSK_MAX_ENTRIES, 0);

/// The slot of the socket bound to an interface's receive queue
/// ([`ntp_common::state::xsk_slot_key`]).
#[map(name = "NTPX_XSK_SLOTS")]
static NTPX_XSK_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(XSK_MAX_ENTRIES, 0);

/// 1 to keep the client log, 0 for `noclientlog`; set by the loader.
#[unsafe(no_mangle)]
static NTPX_CLIENTLOG: u8 = 1;

/// Per-client records (`ntpxc clients`), keyed by the client's IPv6 address (IPv4
/// mapped); the loader sizes it from `clientloglimit`.
#[map(name = "NTPX_CLIENTS")]
static NTPX_CLIENTS: LruHashMap<[u32; 4], ClientRecord> =
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

/// Reads a global the loader sets before the program is loaded.
macro_rules! loader_global {
    ($g:ident) => {
        // SAFETY: a plain read of a global; volatile so the compiler keeps the load
        // instead of folding in the compile-time default.
        unsafe { core::ptr::read_volatile(&raw const $g) }
    };
}

/// The longest frame an `AF_XDP` socket's 2 KiB frames take after the kernel's 256 bytes
/// of headroom and the metadata.
const XSK_FRAME_ROOM: usize = 2048 - 256 - XSK_META_LEN;

/// The third word of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), in memory order.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// This CPU's counters and caches.
struct Cpu(*mut CpuRecord);

impl Cpu {
    #[inline(always)]
    fn bump(&self, c: Counter) {
        // SAFETY: a pointer into this CPU's slot of the per-CPU map, valid for the run;
        // nothing else on this CPU writes it meanwhile.
        if let Some(v) = unsafe { (*self.0).counters.get_mut(c as usize) } {
            *v += 1;
        }
    }

    /// The MAC of interface `ifindex`, from this CPU's cache while the maps' generation
    /// is `gen`, else from the map (and cached).
    #[inline(always)]
    fn mac(&self, ifindex: u32, maps_gen: u32) -> Option<u64> {
        // SAFETY: as in `bump`.
        let r = unsafe { &mut *self.0 };
        if r.mac_gen == maps_gen && r.mac_ifindex == ifindex {
            return Some(r.mac);
        }
        // SAFETY: the value is a plain u64 the daemon writes whole (a map update, not a
        // partial store).
        let mac = *unsafe { NTPX_IFACE_MACS.get(ifindex) }?;
        (r.mac_ifindex, r.mac, r.mac_gen) = (ifindex, mac, maps_gen);
        Some(mac)
    }

    /// Whether the IPv4 address `a` (memory order) is served, cached as [`Self::mac`].
    #[inline(always)]
    fn local_v4(&self, a: u32, maps_gen: u32) -> bool {
        // SAFETY: as in `bump`.
        let r = unsafe { &mut *self.0 };
        if r.local_v4_gen == maps_gen && r.local_v4 == a {
            return true;
        }
        // SAFETY: the value is only tested for presence, never read, so a concurrent
        // update by the daemon cannot be observed half-written.
        if unsafe { NTPX_LOCAL_V4.get(a) }.is_none() {
            return false;
        }
        (r.local_v4, r.local_v4_gen) = (a, maps_gen);
        true
    }

    /// Whether the IPv6 address `a` (memory order) is served, cached as [`Self::mac`].
    #[inline(always)]
    fn local_v6(&self, a: [u32; 4], maps_gen: u32) -> bool {
        // SAFETY: as in `bump`.
        let r = unsafe { &mut *self.0 };
        if r.local_v6_gen == maps_gen && r.local_v6 == a {
            return true;
        }
        // SAFETY: as in `local_v4`.
        if unsafe { NTPX_LOCAL_V6.get(a) }.is_none() {
            return false;
        }
        (r.local_v6, r.local_v6_gen) = (a, maps_gen);
        true
    }
}

/// What a request ends as, when it is not answered: the action and the counter.
type Verdict = (u32, Counter);

#[inline(always)]
fn pass(reason: Counter) -> Verdict {
    (xdp_action::XDP_PASS, reason)
}

#[inline(always)]
fn drop(reason: Counter) -> Verdict {
    (xdp_action::XDP_DROP, reason)
}

/// Answers NTP client requests in place.
#[xdp]
pub(crate) fn ntpx_serve(ctx: XdpContext) -> u32 {
    // The receive timestamp comes first: everything after it is server processing delay.
    // SAFETY: a BPF helper without arguments or preconditions.
    let rx_tai = unsafe { bpf_ktime_get_tai_ns() };
    let Some(record) = NTPX_COUNTERS.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let cpu = Cpu(record);
    cpu.bump(Counter::Frames);
    let (action, reason) = serve(&ctx, rx_tai, &cpu);
    cpu.bump(reason);
    action
}

/// Passes every frame: attached to a veth peer so `XDP_TX` frames reach it.
#[xdp]
pub(crate) fn ntpx_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
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
/// 32-bit words in a UDP header and a bare NTP header (8 + 48 bytes).
const UDP_NTP_WORDS: usize = 14;

/// Where a frame for an interface's own unicast MAC goes; the rest is the stack's.
#[inline(always)]
fn serve(ctx: &XdpContext, rx_tai: u64, cpu: &Cpu) -> Verdict {
    let f = Frame::new(ctx);
    let Some(eth) = f.span::<ETH_LEN>(0) else {
        return pass(Counter::PassTruncated);
    };
    // Broadcast and multicast frames are never answered from here.
    if eth.u8(0) & 1 != 0 {
        return pass(Counter::PassNotLocal);
    }
    let req = Request {
        ctx,
        f: &f,
        eth,
        rx_tai,
        cpu,
    };
    let ethertype = eth.u16(12);
    if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
        return req.l3::<ETH_LEN>(ethertype);
    }
    let Some(tag) = f.span::<VLAN_LEN>(ETH_LEN) else {
        return pass(Counter::PassTruncated);
    };
    let inner = tag.u16(2);
    if inner != ETH_P_8021Q && inner != ETH_P_8021AD {
        return req.l3::<{ ETH_LEN + VLAN_LEN }>(inner);
    }
    let Some(tag2) = f.span::<VLAN_LEN>(ETH_LEN + VLAN_LEN) else {
        return pass(Counter::PassTruncated);
    };
    req.l3::<{ ETH_LEN + 2 * VLAN_LEN }>(tag2.u16(2))
}

/// One frame under the program, with what every step needs.
struct Request<'a> {
    ctx: &'a XdpContext,
    f: &'a Frame,
    eth: Span<ETH_LEN>,
    rx_tai: u64,
    cpu: &'a Cpu,
}

/// The UDP header and NTP request of a frame whose length says exactly one request.
type UdpNtp = Span<{ UDP_LEN + NTP_HEADER_LEN }>;

/// What a request to answer carries, once the headers are checked.
struct Checked {
    /// The state to answer with.
    state: ServerState,
    /// The UDP header and the request.
    udp: UdpNtp,
    /// The UDP length (the same in the reply).
    udp_len: u16,
}

impl Request<'_> {
    // One instance per L2 header length keeps every packet offset a constant the
    // verifier sees.
    #[inline(always)]
    fn l3<const L2: usize>(&self, ethertype: u16) -> Verdict {
        match ethertype {
            ETH_P_IP => self.ipv4::<L2>(),
            ETH_P_IPV6 => self.ipv6::<L2>(),
            _ => pass(Counter::PassNotIp),
        }
    }

    #[inline(always)]
    fn ipv4<const L2: usize>(&self) -> Verdict {
        let Some(h) = self.f.span::<{ IPV4_LEN + UDP_LEN }>(L2) else {
            return pass(Counter::PassTruncated);
        };
        // ver/IHL, TOS, total length | id, flags, fragment offset | TTL, protocol, checksum
        let (w0, w1, w2) = (h.u32(0), h.u32(4), h.u32(8));
        if w0 >> 28 != 4 {
            return pass(Counter::PassNotIp);
        }
        if w0 >> 24 != 0x45 {
            return pass(Counter::PassIpOptions);
        }
        // More-fragments flag or a fragment offset: only whole datagrams are answered here.
        if w1 & 0x3fff != 0 {
            return pass(Counter::PassFragment);
        }
        if (w2 >> 16) as u8 != IPPROTO_UDP {
            return pass(Counter::PassNotNtp);
        }
        let c = match self.check_udp(L2 + IPV4_LEN, h.u32(IPV4_LEN), w0 as u16, IPV4_LEN, false) {
            Ok(c) => c,
            Err((_, Counter::ToXsk)) if L2 == ETH_LEN => {
                let (src, dst) = (h.raw32(12), h.raw32(16));
                return self.to_xsk(bad_v4(src), |maps_gen| self.cpu.local_v4(dst, maps_gen));
            }
            Err((_, Counter::ToXsk)) => return pass(Counter::PassLength),
            Err(v) => return v,
        };
        let (src, dst) = (h.raw32(12), h.raw32(16));
        let mut addr_sum = Csum(0);
        addr_sum.add32(u32::from_be(src));
        addr_sum.add32(u32::from_be(dst));
        // The header checksum is never offloaded on receive: a wrong one is corruption.
        let mut header = addr_sum;
        header.add32(w0);
        header.add32(w1);
        header.add32(w2);
        if header.fold() != 0 {
            return drop(Counter::DropBadChecksum);
        }
        if !udp_checksum_ok(&c, addr_sum, false) {
            return pass(Counter::PassUdpChecksum);
        }
        if !self.cpu.local_v4(dst, c.state.maps_gen) {
            return pass(Counter::PassNotLocal);
        }
        if bad_v4(src) {
            return drop(Counter::DropBadSource);
        }
        let key = [0, 0, V4_MAPPED_WORD, src];
        let (kiss, rec) = match self.admit(&c, key, || acl_v4(src)) {
            Ok(k) => k,
            Err(v) => return v,
        };

        self.eth.swap_macs();
        h.swap_words::<1>(12, 16);
        // ECN bits are the path's, not the request's to echo (chrony's replies carry
        // none); the TTL is ours.
        let r0 = w0 & !0x0003_0000;
        let old_ttl = (w2 >> 16) as u16;
        let new_ttl = (REPLY_TTL as u16) << 8 | u16::from(IPPROTO_UDP);
        // The header's checksum, verified above, updated for the words that changed
        // (RFC 1624, eqn. 3); swapping the addresses leaves the sum as it was.
        let mut sum = Csum(0);
        sum.add16(!(w2 as u16));
        sum.add32(!w0);
        sum.add32(r0);
        sum.add16(!old_ttl);
        sum.add16(new_ttl);
        h.put_u32(0, r0);
        h.put_u32(8, u32::from(new_ttl) << 16 | u32::from(sum.fold()));
        self.answer(&c, addr_sum, rec, kiss)
    }

    #[inline(always)]
    fn ipv6<const L2: usize>(&self) -> Verdict {
        let Some(h) = self.f.span::<{ IPV6_LEN + UDP_LEN }>(L2) else {
            return pass(Counter::PassTruncated);
        };
        // version, traffic class, flow label | payload length, next header, hop limit
        let (w0, w1) = (h.u32(0), h.u32(4));
        if w0 >> 28 != 6 {
            return pass(Counter::PassNotIp);
        }
        let next = (w1 >> 8) as u8;
        if next != IPPROTO_UDP {
            // Extension headers (hop-by-hop, routing, fragment, ...) are left to the stack.
            return match next {
                0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 => pass(Counter::PassIpv6Ext),
                _ => pass(Counter::PassNotNtp),
            };
        }
        let c = match self.check_udp(L2 + IPV6_LEN, h.u32(IPV6_LEN), (w1 >> 16) as u16, 0, true) {
            Ok(c) => c,
            Err((_, Counter::ToXsk)) if L2 == ETH_LEN => {
                let src = [h.raw32(8), h.raw32(12), h.raw32(16), h.raw32(20)];
                let dst = [h.raw32(24), h.raw32(28), h.raw32(32), h.raw32(36)];
                return self.to_xsk(bad_v6(src), |maps_gen| self.cpu.local_v6(dst, maps_gen));
            }
            Err((_, Counter::ToXsk)) => return pass(Counter::PassLength),
            Err(v) => return v,
        };
        let src = [h.raw32(8), h.raw32(12), h.raw32(16), h.raw32(20)];
        let dst = [h.raw32(24), h.raw32(28), h.raw32(32), h.raw32(36)];
        let mut addr_sum = Csum(0);
        for w in [
            src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3],
        ] {
            addr_sum.add32(u32::from_be(w));
        }
        if !udp_checksum_ok(&c, addr_sum, true) {
            return pass(Counter::PassUdpChecksum);
        }
        if !self.cpu.local_v6(dst, c.state.maps_gen) {
            return pass(Counter::PassNotLocal);
        }
        if bad_v6(src) {
            return drop(Counter::DropBadSource);
        }
        // An IPv4-mapped source (::ffff:a.b.c.d) gets the IPv4 rules' verdict, as in the
        // daemon: `allow ::/0` must not open what the IPv4 rules close.
        let mapped = src[0] == 0 && src[1] == 0 && src[2] == V4_MAPPED_WORD;
        let acl = || {
            if mapped {
                acl_v4(src[3])
            } else {
                allowed(NTPX_ACL_V6.get(Key::new(128, src)))
            }
        };
        let (kiss, rec) = match self.admit(&c, src, acl) {
            Ok(k) => k,
            Err(v) => return v,
        };

        self.eth.swap_macs();
        h.swap_words::<4>(8, 24);
        // ECN: the low two bits of the traffic class, bits 20-21 of the first word.
        h.put_u32(0, w0 & !0x0030_0000);
        h.put_u32(4, (w1 & !0xff) | u32::from(REPLY_TTL));
        self.answer(&c, addr_sum, rec, kiss)
    }

    /// Checks the UDP header at `udp` (its first word `ports`): served port, and the IP
    /// length field (`ip_len`, which counts `ip_hdr` bytes of IP header before UDP), UDP
    /// length and frame length all saying exactly 48 bytes of NTP; then reads the state
    /// to answer with, before any per-client work.
    #[inline(always)]
    fn check_udp(
        &self,
        udp: usize,
        ports: u32,
        ip_len: u16,
        ip_hdr: usize,
        ipv6: bool,
    ) -> Result<Checked, Verdict> {
        if ports as u16 != loader_global!(NTPX_PORT) {
            return Err(pass(Counter::PassNotNtp));
        }
        self.cpu.bump(Counter::NtpReceived);
        if ip_len as usize != ip_hdr + UDP_LEN + NTP_HEADER_LEN {
            // Longer: a candidate for the daemon's AF_XDP socket (see `to_xsk`), once
            // the caller knows it is addressed to us.
            return Err(if ip_len as usize > ip_hdr + UDP_LEN + NTP_HEADER_LEN {
                pass(Counter::ToXsk)
            } else {
                pass(Counter::PassLength)
            });
        }
        let Some(udp) = self.f.exact_span::<{ UDP_LEN + NTP_HEADER_LEN }>(udp) else {
            return Err(pass(Counter::PassLength));
        };
        let udp_len = udp.u16(4);
        if udp_len as usize != UDP_LEN + NTP_HEADER_LEN {
            return Err(pass(Counter::PassLength));
        }
        // The mode decides before access control, as in the daemon: a denied peer's
        // packet is the stack's to judge, not a dropped client request.
        if !wire::is_answerable_request(udp.u8(UDP_LEN)) {
            return Err(pass(Counter::PassMode));
        }
        // Clients send from port 123 or an ephemeral port: a privileged source port is a
        // spoofed request aimed at some service (reflection). IPv6 requires a UDP checksum.
        let sport = (ports >> 16) as u16;
        if (sport < 1024 && sport != wire::NTP_PORT) || (ipv6 && udp.u16(6) == 0) {
            return Err(drop(Counter::DropBadSource));
        }
        // Stale or withdrawn: the daemon answers, and nothing here is charged for it.
        let state = match read_state() {
            Some(s) if s.serve != 0 => s,
            _ => return Err(pass(Counter::PassNotServing)),
        };
        if state.timebase.age_ns(self.rx_tai).is_none() {
            return Err(pass(Counter::PassStale));
        }
        // Only frames for this interface's own MAC: in promiscuous mode the driver hands
        // up frames for other hosts, which are not ours to answer (nor to answer as them).
        if !self.for_this_interface(state.maps_gen) {
            return Err(pass(Counter::PassOtherMac));
        }
        Ok(Checked {
            state,
            udp,
            udp_len,
        })
    }

    /// A request with more than a bare header (NTS, a MAC: the daemon's to answer) goes
    /// to the daemon's `AF_XDP` socket for this interface's receive queue where there is
    /// one, with its receive time in the frame's metadata; else to the stack. Checked
    /// here: its headers up to UDP's first word, addressed to this interface's MAC and
    /// (`local`, under the maps' generation) a served address; the daemon checks the
    /// rest, as the stack would. Untagged frames only: the daemon's frame parser knows
    /// no VLAN tags.
    #[inline(always)]
    fn to_xsk(&self, bad_source: bool, local: impl FnOnce(u32) -> bool) -> Verdict {
        // SAFETY: the context pointer is the program's argument, valid for the whole run.
        let (ifindex, queue) = unsafe {
            (
                (*self.ctx.ctx).ingress_ifindex,
                (*self.ctx.ctx).rx_queue_index,
            )
        };
        // Without a socket for this queue (no --xsk), the stack's, as before: nothing
        // else is looked at.
        // SAFETY: a lookup in a map of plain integers.
        let Some(&slot) = (unsafe { NTPX_XSK_SLOTS.get(xsk_slot_key(ifindex, queue)) }) else {
            return pass(Counter::PassLength);
        };
        // What the socket's frames hold (2 KiB less the kernel's headroom and ours): a
        // longer (jumbo) frame would be dropped there, so it is the stack's.
        // (A comparison of packet pointers: what the verifier allows of them.)
        if self.ctx.data() + XSK_FRAME_ROOM < self.ctx.data_end() {
            return pass(Counter::PassLength);
        }
        // The stack drops these sources as martians; so does the fast path.
        if bad_source {
            return drop(Counter::DropBadSource);
        }
        // The maps' generation comes with the state; without a state, the stack's.
        let Some(state) = read_state() else {
            return pass(Counter::PassLength);
        };
        if !self.for_this_interface(state.maps_gen) {
            return pass(Counter::PassOtherMac);
        }
        if !local(state.maps_gen) {
            return pass(Counter::PassNotLocal);
        }
        // SAFETY: the program's own context; a negative delta grows the metadata area.
        if unsafe { bpf_xdp_adjust_meta(self.ctx.ctx, -(XSK_META_LEN as i32)) } != 0 {
            return pass(Counter::PassLength);
        }
        // The packet pointers read before are stale now: the metadata's are read afresh.
        let (meta, data) = (self.ctx.metadata(), self.ctx.data());
        if meta + XSK_META_LEN > data {
            return pass(Counter::PassLength);
        }
        // SAFETY: the verifier-checked XSK_META_LEN bytes of metadata before the frame.
        unsafe { core::ptr::write_unaligned(meta as *mut u64, self.rx_tai) };
        match NTPX_XSKS.redirect(slot, u64::from(xdp_action::XDP_PASS)) {
            Ok(action) => (action, Counter::ToXsk),
            Err(action) => (action, Counter::PassLength),
        }
    }

    /// Whether the frame is addressed to the MAC of the interface it arrived on.
    #[inline(always)]
    fn for_this_interface(&self, maps_gen: u32) -> bool {
        // SAFETY: the context pointer is the program's argument, valid for the whole run.
        let ifindex = unsafe { (*self.ctx.ctx).ingress_ifindex };
        self.cpu.mac(ifindex, maps_gen) == Some(self.eth.dst_mac())
    }

    /// Access control, client log and rate limit for the client `key` (`acl` searches
    /// the access tries, only when the client's record has no verdict under the current
    /// generation): whether to answer with a Kiss-o'-Death and the record to note the
    /// reply in, or the verdict that ends the request here.
    #[inline(always)]
    fn admit(
        &self,
        c: &Checked,
        key: [u32; 4],
        acl: impl FnOnce() -> bool,
    ) -> Result<(bool, Option<*mut ClientRecord>), Verdict> {
        let maps_gen = c.state.maps_gen;
        if loader_global!(NTPX_CLIENTLOG) == 0 {
            return if acl() {
                Ok((false, None))
            } else {
                Err(drop(Counter::DropDenied))
            };
        }
        // A denied source leaves no record (as chrony): a spoofed flood from denied
        // addresses must not evict real clients' records and reset their buckets. So a
        // record under the current generation is an allowed source's.
        let rec = match NTPX_CLIENTS.get_ptr_mut(key) {
            // SAFETY: a pointer into the LRU map from this run's lookup (see below).
            Some(p) if unsafe { (*p).maps_gen } == maps_gen => p,
            Some(p) => {
                if !acl() {
                    return Err(drop(Counter::DropDenied));
                }
                // SAFETY: as above.
                unsafe { (*p).maps_gen = maps_gen };
                p
            }
            None => {
                if !acl() {
                    return Err(drop(Counter::DropDenied));
                }
                match new_record(key, maps_gen, self.cpu) {
                    Some(p) => p,
                    None => return Ok((false, None)),
                }
            }
        };
        // The record is updated in place. Another CPU may update the same record at
        // once, or the LRU may hand its slot to another client while this run holds it:
        // the worst case is a lost count or one request judged by a neighbour's bucket
        // or hand-over mark, which a client log can afford and locking here could not.
        // SAFETY: the pointer comes from a map lookup in this run and stays valid until
        // it ends; concurrent updates of the record are tolerated (see above).
        let r = unsafe { &mut *rec };
        if interleaving(r, c.udp.u64(UDP_LEN + wire::OFF_ORIGIN_TS)) {
            r.xleave_tx = XLEAVE_TO_DAEMON;
            return Err(pass(Counter::PassInterleaved));
        }
        let rl = RateLimit {
            interval_ns: loader_global!(NTPX_RL_INTERVAL_NS),
            burst: loader_global!(NTPX_RL_BURST),
            leak: loader_global!(NTPX_RL_LEAK),
            kod: loader_global!(NTPX_RL_KOD),
        };
        let verdict = if rl.leak == 0 {
            RateVerdict::Answer
        } else {
            // SAFETY: a BPF helper without arguments or preconditions.
            rl.check(r, self.rx_tai, || unsafe { bpf_get_prandom_u32() })
        };
        r.hit(self.rx_tai, verdict == RateVerdict::Drop);
        match verdict {
            RateVerdict::Drop => Err(drop(Counter::DropRateLimit)),
            // Nobody interleaves with a Kiss-o'-Death (as chrony): its timestamps are
            // not kept.
            RateVerdict::Kod => Ok((true, None)),
            RateVerdict::Answer => Ok((false, Some(rec))),
        }
    }

    /// Swaps the UDP ports and writes the reply over the request; `addr_sum` is the
    /// checksum sum of the two addresses (the pseudo header's, unchanged by their swap).
    #[inline(always)]
    fn answer(
        &self,
        c: &Checked,
        addr_sum: Csum,
        rec: Option<*mut ClientRecord>,
        kiss: bool,
    ) -> Verdict {
        let u = &c.udp;
        const NTP: usize = UDP_LEN;
        let (b0, poll) = (u.u8(NTP), u.u8(NTP + wire::OFF_POLL));
        let client_tx = u.u64(NTP + wire::OFF_TRANSMIT_TS);
        let state = &c.state;
        let tb = &state.timebase;
        let rx_ntp = tb.served_ntp(self.rx_tai);
        if let Some(p) = rec {
            // Noted for recognising an interleaved client next time; a basic request
            // ends any hand-over to the daemon.
            // SAFETY: the pointer is into the LRU map, valid for this program run.
            unsafe {
                (*p).xleave_rx = rx_ntp;
                (*p).xleave_tx = 0;
            }
        }
        let poll = if (poll as i8) < state.min_poll {
            state.min_poll as u8
        } else {
            poll
        };
        // A Kiss-o'-Death RATE: unsynchronised, stratum 0, the kiss code as reference id.
        let (leap, stratum, refid) = if kiss {
            (wire::LEAP_UNSYNC, 0, u32::from_be_bytes(*b"RATE"))
        } else {
            (
                state.leap_at(self.rx_tai),
                state.stratum,
                u32::from_be_bytes(state.refid),
            )
        };
        let head = u32::from_be_bytes([
            wire::li_vn_mode(leap, wire::split_li_vn_mode(b0).1, wire::MODE_SERVER),
            stratum,
            poll,
            state.precision as u8,
        ]);
        let root_disp = state.root_dispersion_at(tb.age_ns(self.rx_tai).unwrap_or(0));

        u.swap_ports(0);
        let mut csum = addr_sum;
        csum.add16(IPPROTO_UDP as u16);
        csum.add16(c.udp_len);
        csum.add32(u.u32(0));
        csum.add16(c.udp_len);
        u.put_u32(NTP, head);
        u.put_u32(NTP + wire::OFF_ROOT_DELAY, state.root_delay);
        u.put_u32(NTP + wire::OFF_ROOT_DISP, root_disp);
        u.put_u32(NTP + wire::OFF_REFID, refid);
        u.put_u64(NTP + wire::OFF_REF_TS, state.ref_ts);
        u.put_u64(NTP + wire::OFF_ORIGIN_TS, client_tx);
        u.put_u64(NTP + wire::OFF_RECEIVE_TS, rx_ntp);
        csum.add32(head);
        csum.add32(state.root_delay);
        csum.add32(root_disp);
        csum.add32(refid);
        csum.add64(state.ref_ts);
        csum.add64(client_tx);
        csum.add64(rx_ntp);

        // The transmit timestamp is taken last.
        // SAFETY: a BPF helper without arguments or preconditions.
        let tx_ntp = tb.served_ntp(unsafe { bpf_ktime_get_tai_ns() });
        u.put_u64(NTP + wire::OFF_TRANSMIT_TS, tx_ntp);
        csum.add64(tx_ntp);
        let sum = csum.fold();
        // In UDP a computed zero is sent as all ones (zero means "no checksum").
        u.put_u16(6, if sum == 0 { 0xffff } else { sum });
        (
            xdp_action::XDP_TX,
            if kiss {
                Counter::AnsweredKod
            } else {
                Counter::Answered
            },
        )
    }
}

/// Creates the record of a new client found allowed under ACL generation `gen`.
#[inline(always)]
fn new_record(key: [u32; 4], maps_gen: u32, cpu: &Cpu) -> Option<*mut ClientRecord> {
    // Zeroed by word stores of its own: a zeroed struct literal becomes a call to a
    // byte-at-a-time memset in BPF.
    let mut rec = core::mem::MaybeUninit::<ClientRecord>::uninit();
    let words = rec.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < size_of::<ClientRecord>() / 8 {
        // SAFETY: within the record (all-u64 fields, 8-byte aligned), on this stack.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    // SAFETY: every byte was written above, and all-zero is a valid ClientRecord.
    let mut rec = unsafe { rec.assume_init() };
    rec.maps_gen = maps_gen;
    // BPF_NOEXIST: of two CPUs creating the same record, one counts it.
    if NTPX_CLIENTS.insert(key, rec, BPF_NOEXIST as u64).is_ok() {
        cpu.bump(Counter::ClientRecordsCreated);
    }
    NTPX_CLIENTS.get_ptr_mut(key)
}

/// Whether the client in `rec` is in interleaved mode: its origin timestamp names our
/// receive timestamp (chrony's clients do so from their second xleave request), or it
/// did so before and still sends a non-zero origin. A zero origin is a basic request.
#[inline(always)]
fn interleaving(rec: &ClientRecord, origin: u64) -> bool {
    origin != 0
        && (rec.xleave_tx == XLEAVE_TO_DAEMON || (rec.xleave_rx != 0 && origin == rec.xleave_rx))
}

/// Whether the UDP checksum of the request in `c` verifies (`addr_sum`: the sum of the
/// source and destination addresses). IPv4 may go without one (zero). A datagram sent on
/// this host through a veth still carries the partial checksum its sender left to
/// offload (the pseudo header's sum alone): it never crossed a wire and is taken as it
/// is, as the stack takes it.
#[inline(always)]
fn udp_checksum_ok(c: &Checked, addr_sum: Csum, ipv6: bool) -> bool {
    let field = c.udp.u16(6);
    if !ipv6 && field == 0 {
        return true;
    }
    let mut pseudo = addr_sum;
    pseudo.add16(IPPROTO_UDP as u16);
    pseudo.add16(c.udp_len);
    let mut sum = pseudo;
    sum.0 += c.udp.sum_words::<UDP_NTP_WORDS>(0).0;
    sum.fold() == 0 || field == !pseudo.fold()
}

/// Whether the IPv4 source `a` (memory order) cannot be a real client: 0/8, 127/8,
/// multicast, class E, broadcast.
#[inline(always)]
fn bad_v4(a: u32) -> bool {
    let first = u32::from_be(a) >> 24;
    first == 0 || first == 127 || first >= 224
}

/// Whether the IPv6 source `a` (memory order) cannot be a real client: multicast,
/// unspecified (`::`), loopback (`::1`), or an IPv4-mapped address that could not be.
#[inline(always)]
fn bad_v6(a: [u32; 4]) -> bool {
    let multicast = u32::from_be(a[0]) >> 24 == 0xff;
    let low = a[0] == 0 && a[1] == 0 && a[2] == 0 && u32::from_be(a[3]) <= 1;
    let mapped = a[0] == 0 && a[1] == 0 && a[2] == V4_MAPPED_WORD;
    multicast || low || (mapped && bad_v4(a[3]))
}

/// Whether the IPv4 rules allow `a` (memory order).
#[inline(always)]
fn acl_v4(a: u32) -> bool {
    allowed(NTPX_ACL_V4.get(Key::new(32, a)))
}

#[inline(always)]
fn allowed(v: Option<&u32>) -> bool {
    matches!(v, Some(&ACL_ALLOW))
}

/// Reads the state under its sequence lock; `None` while the daemon is writing it.
#[inline(always)]
fn read_state() -> Option<ServerState> {
    let p = NTPX_STATE.get_ptr(0)?;
    // Volatile reads keep the compiler from merging or reordering the lock and the copy;
    // the CPU keeps loads in order only where the loader lets the program run (x86-64,
    // whose loads are not reordered with other loads: see KernelPath::load_with).
    // SAFETY: `p` points at the state map's one element, valid for the whole run; a torn
    // read is caught by the sequence check.
    let seq1 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).seq)) };
    if seq1 & 1 != 0 {
        return None;
    }
    // SAFETY: as above.
    let s = unsafe { core::ptr::read_volatile(p) };
    // SAFETY: as above.
    let seq2 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).seq)) };
    if seq1 != seq2 {
        return None;
    }
    Some(s)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
