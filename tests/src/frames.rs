//! Crafting and checking Ethernet frames for the XDP tests: VLAN tags, IPv4/IPv6, UDP,
//! Internet checksums computed independently of the program under test.

use std::net::IpAddr;

/// What to put in a frame.
#[derive(Clone, Debug)]
pub struct Spec {
    /// 802.1Q/802.1ad tags, outermost first (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (the family picks IPv4 or IPv6).
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// UDP source port.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
    /// IPv4 flags+fragment offset field.
    pub frag: u16,
    /// Extra IPv4 option bytes (multiple of 4) after the header.
    pub ipv4_options: Vec<u8>,
    /// IPv6 extension header (next-header value, 8 bytes of body) before UDP.
    pub ipv6_ext: Option<u8>,
    /// IP protocol / IPv6 next header of the transport (17 = UDP).
    pub proto: u8,
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// IPv4 TOS / IPv6 traffic class (DSCP and ECN).
    pub tos: u8,
}

/// Client MAC used in crafted frames.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Server MAC used in crafted frames.
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

impl Spec {
    /// A UDP datagram from a client to an NTP server on port 123.
    pub fn udp(src: &str, dst: &str, payload: &[u8]) -> Self {
        Spec {
            vlans: Vec::new(),
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
            sport: 40123,
            dport: 123,
            payload: payload.to_vec(),
            frag: 0,
            ipv4_options: Vec::new(),
            ipv6_ext: None,
            proto: 17,
            dst_mac: SERVER_MAC,
            src_mac: CLIENT_MAC,
            tos: 0,
        }
    }
}

/// An NTP client request of `version`, `mode` and `poll` with transmit timestamp `tx`.
pub fn ntp_request(version: u8, mode: u8, poll: i8, tx: u64) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = (version << 3) | mode;
    b[2] = poll as u8;
    b[40..48].copy_from_slice(&tx.to_be_bytes());
    b
}

/// One's-complement sum of `data` as big-endian 16-bit words (odd length padded).
pub fn sum(data: &[u8]) -> u32 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += w as u32;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// UDP checksum over the pseudo header and `udp` (header with checksum field zero + data).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut s = sum(&ip_bytes(src)) + sum(&ip_bytes(dst));
    s += 17 + udp.len() as u32;
    s += sum(udp);
    let c = fold(s);
    if c == 0 { 0xffff } else { c }
}

/// Builds the frame described by `spec`, with correct IPv4 and UDP checksums.
pub fn build(spec: &Spec) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&spec.dst_mac);
    f.extend_from_slice(&spec.src_mac);
    for (tpid, vid) in &spec.vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    let mut udp = Vec::new();
    udp.extend_from_slice(&spec.sport.to_be_bytes());
    udp.extend_from_slice(&spec.dport.to_be_bytes());
    udp.extend_from_slice(&((8 + spec.payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&spec.payload);
    let c = udp_checksum(spec.src, spec.dst, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let hl = 20 + spec.ipv4_options.len();
            let mut ip = vec![0x40 | (hl / 4) as u8, spec.tos];
            ip.extend_from_slice(&((hl + udp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34]);
            ip.extend_from_slice(&spec.frag.to_be_bytes());
            ip.extend_from_slice(&[33, spec.proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&spec.ipv4_options);
            let c = fold(sum(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let ext_len = if spec.ipv6_ext.is_some() { 8 } else { 0 };
            let mut ip = vec![0x60 | spec.tos >> 4, (spec.tos & 0x0f) << 4, 0, 0];
            ip.extend_from_slice(&((ext_len + udp.len()) as u16).to_be_bytes());
            ip.push(spec.ipv6_ext.unwrap_or(spec.proto));
            ip.push(33);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            if spec.ipv6_ext.is_some() {
                ip.extend_from_slice(&[spec.proto, 0, 1, 4, 0, 0, 0, 0]);
            }
            f.extend_from_slice(&ip);
        }
        _ => panic!("mixed address families in a test frame"),
    }
    f.extend_from_slice(&udp);
    f
}

/// A parsed reply frame.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN ids in order.
    pub vlans: Vec<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// Whether the IPv4 header checksum verifies (always true for IPv6).
    pub ip_csum_ok: bool,
    /// Whether the UDP checksum verifies.
    pub udp_csum_ok: bool,
    /// UDP source port.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Parses a frame built like [`build`]'s (no options, no extension headers).
pub fn parse(f: &[u8]) -> Option<Parsed> {
    let mut off = 12;
    let mut vlans = Vec::new();
    let mut et = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    while et == 0x8100 || et == 0x88a8 {
        vlans.push(u16::from_be_bytes([*f.get(off + 2)?, *f.get(off + 3)?]));
        off += 4;
        et = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    }
    let l3 = off + 2;
    let (src, dst, ttl, tos, ip_ok, l4): (IpAddr, IpAddr, u8, u8, bool, usize) = match et {
        0x0800 => {
            let h = f.get(l3..l3 + 20)?;
            let s: [u8; 4] = h[12..16].try_into().ok()?;
            let d: [u8; 4] = h[16..20].try_into().ok()?;
            (s.into(), d.into(), h[8], h[1], fold(sum(h)) == 0, l3 + 20)
        }
        0x86dd => {
            let h = f.get(l3..l3 + 40)?;
            let s: [u8; 16] = h[8..24].try_into().ok()?;
            let d: [u8; 16] = h[24..40].try_into().ok()?;
            let tc = (h[0] & 0x0f) << 4 | h[1] >> 4;
            (s.into(), d.into(), h[7], tc, true, l3 + 40)
        }
        _ => return None,
    };
    let udp = f.get(l4..)?;
    let mut zeroed = udp.to_vec();
    let stored = u16::from_be_bytes([*zeroed.get(6)?, *zeroed.get(7)?]);
    zeroed[6] = 0;
    zeroed[7] = 0;
    Some(Parsed {
        dst_mac: f[0..6].try_into().ok()?,
        src_mac: f[6..12].try_into().ok()?,
        vlans,
        src,
        dst,
        ttl,
        tos,
        ip_csum_ok: ip_ok,
        udp_csum_ok: udp_checksum(src, dst, &zeroed) == stored,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp.get(8..)?.to_vec(),
    })
}

/// Sends raw Ethernet `frames` out of `iface` in namespace `ns` (an `AF_PACKET` socket: the
/// source addresses are whatever the frames say, so one namespace can be many clients).
pub fn send_frames(ns: &crate::Netns, iface: &str, frames: Vec<Vec<u8>>) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    let iface = std::ffi::CString::new(iface).context("interface name")?;
    ns.run_in(move || {
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: the name is a valid C string.
        let index = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        if index == 0 {
            bail!("no interface {iface:?}");
        }
        // SAFETY: zeroed sockaddr_ll with the fields sendto needs set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        use std::os::fd::AsRawFd;
        for f in &frames {
            // SAFETY: valid buffer and address of the stated lengths.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                // A full queue: let it drain and go on.
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                bail!("sending a frame: {e}");
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_parse_back_with_valid_checksums() {
        for (s, d) in [("198.18.0.2", "198.18.0.1"), ("fd00::2", "fd00::1")] {
            let mut spec = Spec::udp(s, d, &ntp_request(4, 3, 6, 42));
            spec.vlans = vec![(0x88a8, 7), (0x8100, 100)];
            let f = build(&spec);
            let p = parse(&f).unwrap();
            assert!(p.ip_csum_ok && p.udp_csum_ok);
            assert_eq!(p.vlans, [7, 100]);
            assert_eq!((p.sport, p.dport, p.payload.len()), (40123, 123, 48));
            // A flipped payload bit breaks the UDP checksum.
            let mut bad = f.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert!(!parse(&bad).unwrap().udp_csum_ok);
        }
    }

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 section 3 example: the words sum to 0x2ddf0, folded 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&d), 0x2ddf0);
        assert_eq!(fold(sum(&d)), !0xddf2);
    }
}
