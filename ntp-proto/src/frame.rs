//! Ethernet frames carrying a UDP datagram, for the daemon's `AF_XDP` sockets, where the
//! daemon sees whole frames instead of a socket's datagrams: the checks the kernel's
//! stack would make on the way up (as the XDP program makes them on its own path), and
//! the reply written over the request, headers turned around.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
/// The hop limit of replies (the XDP program's too).
const REPLY_TTL: u8 = 64;

/// A UDP datagram in a frame, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    /// The sender.
    pub src: SocketAddr,
    /// Where it was sent.
    pub dst: SocketAddr,
    /// The frame's destination MAC address.
    pub dst_mac: [u8; 6],
    /// Where the UDP payload is in the frame.
    pub payload: Range<usize>,
}

/// Why a frame is not a datagram to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRefused {
    /// Shorter than its headers say, or not Ethernet II with IPv4 or IPv6 and UDP.
    Malformed,
    /// IPv4 options, a fragment, or IPv6 extension headers (the stack's to take).
    Unusual,
    /// A header or UDP checksum that does not verify.
    Checksum,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// The sum of `b` as 16-bit big-endian words (an odd last byte padded), to be folded
/// into one's complement by [`fold`]. Added as 32-bit words into 64 bits: the same sum
/// once folded (RFC 1071: the carries fold back in), with a quarter of the additions,
/// where the `AF_XDP` path checks and writes two checksums a request.
fn sum_words(b: &[u8]) -> u64 {
    let mut s: u64 = 0;
    let mut words = b.chunks_exact(4);
    for w in &mut words {
        s += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    // The tail starts at an even offset: even bytes are the high halves of words.
    for (i, &byte) in words.remainder().iter().enumerate() {
        s += u64::from(byte) << if i % 2 == 0 { 8 } else { 0 };
    }
    s
}

/// The one's-complement 16-bit value of a sum: every carry added back in.
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The pseudo header's sum for a UDP datagram of `len` bytes between `a` and `b`.
fn pseudo_sum(a: IpAddr, b: IpAddr, len: usize) -> u64 {
    let addr = |ip: IpAddr| match ip {
        IpAddr::V4(v) => sum_words(&v.octets()),
        IpAddr::V6(v) => sum_words(&v.octets()),
    };
    // UDP lengths fit 16 bits (checked where frames are parsed; replies are no longer).
    addr(a) + addr(b) + u64::from(IPPROTO_UDP) + (len & 0xffff) as u64
}

/// Parses an untagged Ethernet frame carrying UDP over IPv4 (no options, not a
/// fragment) or IPv6 (no extension headers): every length agreeing, the IPv4 header's
/// checksum and the UDP checksum verifying. As the stack (and the XDP program) do, a
/// UDP checksum left to offload by a sender on this host (a veth peer: the field holds
/// the pseudo header's sum only) is taken, and IPv4 may go without one.
pub fn parse_udp(frame: &[u8]) -> Result<UdpFrame, FrameRefused> {
    if frame.len() < ETH_LEN {
        return Err(FrameRefused::Malformed);
    }
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[..6]);
    let ip = &frame[ETH_LEN..];
    let (src, dst, udp) = match u16_at(frame, 12) {
        ETH_P_IP => {
            if ip.len() < IPV4_LEN || ip[0] >> 4 != 4 {
                return Err(FrameRefused::Malformed);
            }
            if ip[0] != 0x45 || u16_at(ip, 6) & 0x3fff != 0 {
                return Err(FrameRefused::Unusual);
            }
            if ip[9] != IPPROTO_UDP {
                return Err(FrameRefused::Malformed);
            }
            let total = usize::from(u16_at(ip, 2));
            if total < IPV4_LEN + UDP_LEN || total > ip.len() {
                return Err(FrameRefused::Malformed);
            }
            if fold(sum_words(&ip[..IPV4_LEN])) != 0xffff {
                return Err(FrameRefused::Checksum);
            }
            let a = |i: usize| IpAddr::V4(Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]));
            (a(12), a(16), ETH_LEN + IPV4_LEN..ETH_LEN + total)
        }
        ETH_P_IPV6 => {
            if ip.len() < IPV6_LEN || ip[0] >> 4 != 6 {
                return Err(FrameRefused::Malformed);
            }
            if ip[6] != IPPROTO_UDP {
                return Err(FrameRefused::Unusual);
            }
            let payload = usize::from(u16_at(ip, 4));
            if payload < UDP_LEN || IPV6_LEN + payload > ip.len() {
                return Err(FrameRefused::Malformed);
            }
            let a = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&ip[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            (
                a(8),
                a(24),
                ETH_LEN + IPV6_LEN..ETH_LEN + IPV6_LEN + payload,
            )
        }
        _ => return Err(FrameRefused::Malformed),
    };
    let ip_payload = &frame[udp.clone()];
    let len = usize::from(u16_at(ip_payload, 4));
    // As the stack: a UDP length shorter than the IP payload trims it.
    if len < UDP_LEN || len > ip_payload.len() {
        return Err(FrameRefused::Malformed);
    }
    let udp = udp.start..udp.start + len;
    let u = &frame[udp.clone()];
    let field = u16_at(u, 6);
    let v6 = src.is_ipv6();
    if field != 0 || v6 {
        let pseudo = pseudo_sum(src, dst, len);
        let whole = fold(pseudo + sum_words(u));
        // Offloaded: the field holds the pseudo header's folded sum, not complemented.
        if whole != 0xffff && field != fold(pseudo) {
            return Err(FrameRefused::Checksum);
        }
    }
    if v6 && field == 0 {
        return Err(FrameRefused::Checksum);
    }
    Ok(UdpFrame {
        src: SocketAddr::new(src, u16_at(u, 0)),
        dst: SocketAddr::new(dst, u16_at(u, 2)),
        dst_mac,
        payload: udp.start + UDP_LEN..udp.end,
    })
}

/// Writes `reply` over the request `f` was parsed from, as the answer from where it was
/// sent to its sender: MACs, addresses and ports swapped, lengths set, ECN bits cleared,
/// our hop limit, checksums computed. `reply` must be no longer than the request's
/// payload (an NTP server never answers with more than it was sent). Returns the reply
/// frame's length.
pub fn write_udp_reply(frame: &mut [u8], f: &UdpFrame, reply: &[u8]) -> Option<usize> {
    if reply.len() > f.payload.len() {
        return None;
    }
    let (eth, rest) = frame.split_at_mut(ETH_LEN);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&eth[6..12]);
    eth[6..12].copy_from_slice(&f.dst_mac);
    eth[..6].copy_from_slice(&src_mac);
    let udp_len = UDP_LEN + reply.len();
    let v6 = f.src.is_ipv6();
    let ip_hdr = if v6 { IPV6_LEN } else { IPV4_LEN };
    let ip = &mut rest[..ip_hdr];
    if v6 {
        ip[1] &= !0x30;
        ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        ip[7] = REPLY_TTL;
        let (a, b) = ip[8..40].split_at_mut(16);
        a.swap_with_slice(b);
    } else {
        ip[1] &= !0x03;
        ip[2..4].copy_from_slice(&((IPV4_LEN + udp_len) as u16).to_be_bytes());
        ip[8] = REPLY_TTL;
        let (a, b) = ip[12..20].split_at_mut(4);
        a.swap_with_slice(b);
        ip[10..12].fill(0);
        let sum = !fold(sum_words(ip));
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let start = ETH_LEN + ip_hdr;
    let u = &mut frame[start..start + udp_len];
    let (sport, dport) = (f.src.port(), f.dst.port());
    u[0..2].copy_from_slice(&dport.to_be_bytes());
    u[2..4].copy_from_slice(&sport.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[6..8].fill(0);
    u[UDP_LEN..].copy_from_slice(reply);
    let sum = !fold(pseudo_sum(f.dst.ip(), f.src.ip(), udp_len) + sum_words(u));
    // A computed zero goes as all ones (zero means "no checksum").
    let sum = if sum == 0 { 0xffff } else { sum };
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    Some(start + udp_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_sum_is_the_sum_of_16_bit_words() {
        // The definition, one 16-bit word at a time with the carry folded back in.
        let reference = |b: &[u8]| {
            let mut s: u32 = 0;
            for (i, &byte) in b.iter().enumerate() {
                s += u32::from(byte) << if i % 2 == 0 { 8 } else { 0 };
                s = (s & 0xffff) + (s >> 16);
            }
            s
        };
        let mut x: u32 = 0x1234_5678;
        for len in 0..300 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            assert_eq!(u32::from(fold(sum_words(&b))), reference(&b), "{len} bytes");
            let ones = vec![0xff; len];
            assert_eq!(u32::from(fold(sum_words(&ones))), reference(&ones));
        }
        assert_eq!(fold(sum_words(&[])), 0);
    }

    /// A frame from 02:..:01 to 02:..:02 with `payload` in UDP from `src` to `dst`,
    /// checksums right.
    fn frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        let udp_len = UDP_LEN + payload.len();
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let mut ip = vec![0x45, 0x02];
                ip.extend_from_slice(&((IPV4_LEN + udp_len) as u16).to_be_bytes());
                ip.extend_from_slice(&[0, 1, 0x40, 0, 63, IPPROTO_UDP, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let sum = !fold(sum_words(&ip));
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0x30, 0, 0]);
                f.extend_from_slice(&(udp_len as u16).to_be_bytes());
                f.extend_from_slice(&[IPPROTO_UDP, 63]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => unreachable!("one family"),
        }
        let mut u = Vec::new();
        u.extend_from_slice(&src.port().to_be_bytes());
        u.extend_from_slice(&dst.port().to_be_bytes());
        u.extend_from_slice(&(udp_len as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        let sum = !fold(pseudo_sum(src.ip(), dst.ip(), udp_len) + sum_words(&u));
        u[6..8].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&u);
        f
    }

    fn addrs(v6: bool) -> (SocketAddr, SocketAddr) {
        if v6 {
            (
                "[fd00::2]:40000".parse().unwrap(),
                "[fd00::1]:123".parse().unwrap(),
            )
        } else {
            (
                "198.18.0.2:40000".parse().unwrap(),
                "198.18.0.1:123".parse().unwrap(),
            )
        }
    }

    #[test]
    fn a_datagram_is_found_and_answered_with_its_headers_turned_around() {
        for v6 in [false, true] {
            let (src, dst) = addrs(v6);
            let payload: Vec<u8> = (0..101u8).collect();
            let mut f = frame(src, dst, &payload);
            f.extend_from_slice(&[0xee; 6]); // Ethernet padding after the datagram.
            let p = parse_udp(&f).expect("a datagram");
            assert_eq!((p.src, p.dst), (src, dst));
            assert_eq!(&f[p.payload.clone()], &payload[..]);
            let reply: Vec<u8> = (0..77u8).rev().collect();
            let n = write_udp_reply(&mut f, &p, &reply).expect("fits");
            // The reply parses as a datagram from the server to the client, checksums
            // and all (so a stack would take it), with our hop limit and no ECN.
            let r = parse_udp(&f[..n]).expect("a valid reply");
            assert_eq!((r.src, r.dst), (dst, src));
            assert_eq!(&f[r.payload.clone()], &reply[..]);
            assert_eq!(&f[..12], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
            if v6 {
                assert_eq!((f[ETH_LEN + 7], f[ETH_LEN + 1] & 0x30), (64, 0));
            } else {
                assert_eq!((f[ETH_LEN + 8], f[ETH_LEN + 1] & 3), (64, 0));
            }
            assert!(write_udp_reply(&mut f, &p, &[0; 200]).is_none(), "longer");
        }
    }

    #[test]
    fn what_the_stack_would_refuse_is_refused() {
        for v6 in [false, true] {
            let (src, dst) = addrs(v6);
            let good = frame(src, dst, &[1; 60]);
            let udp_at = ETH_LEN + if v6 { IPV6_LEN } else { IPV4_LEN };
            let mut bad_sum = good.clone();
            bad_sum[udp_at + UDP_LEN + 3] ^= 0x40;
            assert_eq!(parse_udp(&bad_sum), Err(FrameRefused::Checksum));
            // A sender on this host that left the checksum to offload: the field holds
            // the pseudo header's sum (of the true length), taken as the stack takes it.
            let mut partial = bad_sum.clone();
            let pseudo = fold(pseudo_sum(src.ip(), dst.ip(), UDP_LEN + 60));
            partial[udp_at + 6..udp_at + 8].copy_from_slice(&pseudo.to_be_bytes());
            assert!(parse_udp(&partial).is_ok());
            let mut no_sum = good.clone();
            no_sum[udp_at + 6..udp_at + 8].fill(0);
            assert_eq!(parse_udp(&no_sum).is_ok(), !v6, "only IPv4 may go without");
            assert_eq!(
                parse_udp(&good[..good.len() - 1]),
                Err(FrameRefused::Malformed)
            );
            let mut udp_len = good.clone();
            udp_len[udp_at + 5] += 1;
            assert_eq!(
                parse_udp(&udp_len),
                Err(FrameRefused::Malformed),
                "past the IP's"
            );
            // Shorter than the IP payload: trimmed, as the stack trims it (here the
            // checksum, of the whole, then fails).
            udp_len[udp_at + 5] -= 2;
            assert_eq!(parse_udp(&udp_len), Err(FrameRefused::Checksum));
        }
        let (src, dst) = addrs(false);
        let good = frame(src, dst, &[1; 60]);
        let mut header = good.clone();
        header[ETH_LEN + 8] ^= 1;
        assert_eq!(parse_udp(&header), Err(FrameRefused::Checksum));
        let mut fragment = good.clone();
        fragment[ETH_LEN + 6] |= 0x20;
        assert_eq!(parse_udp(&fragment), Err(FrameRefused::Unusual));
        let mut arp = good;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_udp(&arp), Err(FrameRefused::Malformed));
        assert_eq!(parse_udp(&[0; 10]), Err(FrameRefused::Malformed));
    }
}
