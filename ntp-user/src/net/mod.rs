//! UDP sockets with kernel receive and transmit timestamps (`SO_TIMESTAMPING`, software).

pub mod ethtool;
pub mod hw_timestamping;
pub mod link_events;
pub mod xsk;

use anyhow::{Context, Result, anyhow};
use nix::sys::socket::TimestampingFlag;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, MultiHeaders, SockFlag, SockType,
    SockaddrStorage, bind, recvmmsg, recvmsg, sendto, setsockopt, socket, sockopt,
};
use std::{
    io::IoSliceMut,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
};
use tokio::io::{Interest, unix::AsyncFd};

/// The largest datagram the daemon's NTP sockets take whole (an Ethernet frame's payload).
pub const DATAGRAM: usize = 1500;

/// A received datagram with its kernel receive timestamp.
#[derive(Debug)]
pub struct Received {
    /// Bytes received (truncated to the buffer).
    pub len: usize,
    /// Sender.
    pub src: SocketAddr,
    /// Kernel software receive timestamp, `CLOCK_REALTIME` ns; `None` if the kernel gave none.
    pub rx_realtime_ns: Option<u64>,
    /// The address it was sent to and the interface it came in on (`IP_PKTINFO`): a reply
    /// must leave from that address, or a client of a host with several addresses
    /// discards it, as chronyd's replies do.
    pub dst: Option<(IpAddr, u32)>,
    /// The NIC's receive timestamp, where the socket asked for hardware stamps.
    pub rx_hw: Option<HwStamp>,
}

/// A NIC's raw timestamp (its PHC's time) and the interface that took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwStamp {
    /// The PHC's time, ns.
    pub raw_ns: i128,
    /// The interface (`SCM_TIMESTAMPING_PKTINFO`), where the kernel says.
    pub ifindex: Option<u32>,
}

/// `SCM_TIMESTAMPING_PKTINFO`: the interface and length of a hardware-stamped packet.
const SCM_TIMESTAMPING_PKTINFO: i32 = 58;
/// `SOF_TIMESTAMPING_OPT_PKTINFO` (not among nix's flags).
const SOF_TIMESTAMPING_OPT_PKTINFO: u32 = 1 << 13;
/// `SOF_TIMESTAMPING_OPT_TX_SWHW`: both transmit stamps where the NIC stamps (without it
/// the kernel drops the software one).
const SOF_TIMESTAMPING_OPT_TX_SWHW: u32 = 1 << 14;

/// Adds raw NIC stamps to a socket's timestamping `flags` (with the interface and both
/// transmit stamps where the kernel offers them); false if the kernel refuses.
fn enable_hw_stamps(fd: &OwnedFd, flags: TimestampingFlag) -> bool {
    let hw = TimestampingFlag::SOF_TIMESTAMPING_RAW_HARDWARE
        | TimestampingFlag::SOF_TIMESTAMPING_RX_HARDWARE;
    let options = TimestampingFlag::from_bits_retain(
        SOF_TIMESTAMPING_OPT_PKTINFO | SOF_TIMESTAMPING_OPT_TX_SWHW,
    );
    setsockopt(fd, sockopt::Timestamping, &(flags | hw | options)).is_ok()
        || setsockopt(fd, sockopt::Timestamping, &(flags | hw)).is_ok()
}

/// The raw hardware stamp of a `SCM_TIMESTAMPING` message, if there is one.
fn hw_raw(ts: &nix::sys::socket::Timestamps) -> Option<i128> {
    let t = ts.hw_raw;
    (t.tv_sec() > 0 || t.tv_nsec() > 0)
        .then(|| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
}

/// The interface of a `SCM_TIMESTAMPING_PKTINFO` message (`struct scm_ts_pktinfo`).
fn ts_pktinfo_ifindex(c: &nix::sys::socket::UnknownCmsg) -> Option<u32> {
    if c.cmsg_header.cmsg_level != libc::SOL_SOCKET
        || c.cmsg_header.cmsg_type != SCM_TIMESTAMPING_PKTINFO
    {
        return None;
    }
    let b: [u8; 4] = c.data_bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_ne_bytes(b))
}

/// A transmit timestamp from a socket's error queue, with the end of the datagram it
/// belongs to. The kernel's and the NIC's come as separate messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxStamp {
    /// When the kernel handed the datagram to the device, `CLOCK_REALTIME` ns.
    pub realtime_ns: Option<u64>,
    /// When the NIC sent it (its PHC's time, ns).
    pub hw_ns: Option<i128>,
    /// The datagram's last 48 bytes (an NTP reply: its own identity).
    pub tail: [u8; 48],
}

/// A bound [`TimestampedSocket`] not yet registered with a tokio runtime.
pub struct UnregisteredSocket {
    fd: OwnedFd,
    local: SocketAddr,
    hw: bool,
}

impl UnregisteredSocket {
    /// Registers the socket with the runtime of the calling thread.
    pub fn register(self) -> Result<TimestampedSocket> {
        let UnregisteredSocket { fd, local, hw } = self;
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until it is dropped,
        // so the descriptor cannot be closed or reused while registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::ERROR) }
                .map_err(|e| anyhow!("registering the socket with tokio: {e}"))?;
        Ok(TimestampedSocket { fd, local, hw })
    }
}

/// A non-blocking UDP socket registered with tokio, receive timestamps on every datagram
/// and transmit timestamps on request.
pub struct TimestampedSocket {
    fd: AsyncFd<OwnedFd>,
    local: SocketAddr,
    /// NIC timestamps asked for (and granted).
    hw: bool,
}

impl TimestampedSocket {
    /// Binds `addr` with receive timestamping on and transmit timestamps available per
    /// datagram (IPv6 sockets are IPv6-only); with `hw`, the NIC's stamps too where it
    /// has them on.
    pub fn bind(addr: SocketAddr, hw: bool) -> Result<Self> {
        Self::open(addr, hw, false)?.register()
    }

    /// Binds `addr` as [`bind`](Self::bind) does, not yet registered with a runtime, so
    /// the thread that serves it can register it with its own. With `reuse_port`, one of
    /// a group of sockets on the same address that the kernel shares requests between
    /// (a client's requests, by its address and port, always to the same one).
    pub fn open(addr: SocketAddr, hw: bool, reuse_port: bool) -> Result<UnregisteredSocket> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket(
            family,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .with_context(|| format!("creating a UDP socket for {addr}"))?;
        if addr.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).context("setting IPV6_V6ONLY")?;
        }
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("setting SO_REUSEADDR")?;
        if reuse_port {
            setsockopt(&fd, sockopt::ReusePort, &true).context("setting SO_REUSEPORT")?;
        }
        // As chrony: a bind address the host does not have yet (the network comes up
        // after the daemon at boot) is bound all the same, and served once it appears.
        setsockopt(&fd, sockopt::IpFreebind, &true).context("setting IP_FREEBIND")?;
        if addr.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)
                .context("setting IPV6_RECVPKTINFO")?;
        } else {
            setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).context("setting IP_PKTINFO")?;
        }
        // Transmit timestamps are requested per datagram (see `send_to`) and come back
        // with the datagram itself (no OPT_TSONLY): its content names the reply, where a
        // counter (OPT_ID) drifts whenever a failed send used up a number.
        let flags = TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE;
        let hw = hw && enable_hw_stamps(&fd, flags);
        if !hw {
            setsockopt(&fd, sockopt::Timestamping, &flags).context("enabling SO_TIMESTAMPING")?;
        }
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .with_context(|| format!("binding UDP {addr}"))?;
        let local = local_addr(&fd)?;
        Ok(UnregisteredSocket { fd, local, hw })
    }

    /// Whether the NIC's stamps were asked for.
    pub fn hw(&self) -> bool {
        self.hw
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for datagrams and takes up to `bufs.len()` of them in one system call (a
    /// busy server's burst), into `out` (one entry per buffer used, in order; an entry
    /// of length 0 is a datagram to skip).
    pub async fn recv_batch(
        &self,
        bufs: &mut [[u8; DATAGRAM]],
        out: &mut Vec<Received>,
    ) -> Result<()> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .context("waiting for the NTP socket")?;
            let n = bufs.len();
            match guard
                .try_io(|fd| recv_many(fd.get_ref(), bufs, out).map_err(std::io::Error::from))
            {
                Ok(r) => {
                    // Fewer than asked for: the queue was empty, so the next call would
                    // only fail with EAGAIN. The edge of a datagram arriving since is
                    // still to come from epoll, so none is missed.
                    if r.is_ok() && out.len() < n {
                        guard.clear_ready();
                    }
                    return r.context("receiving on the NTP socket");
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads and discards every datagram queued now; how many there were.
    pub fn drain(&self, bufs: &mut [[u8; DATAGRAM]]) -> usize {
        let mut out = Vec::with_capacity(bufs.len());
        let mut n = 0;
        while recv_many(self.fd.get_ref(), bufs, &mut out).is_ok() && !out.is_empty() {
            n += out.len();
        }
        n
    }

    /// Sends `data` to `dst` (a datagram socket never blocks for long; a full buffer
    /// drops), from the local address and interface `from` when given (the request's
    /// destination); with `stamp`, asks for its transmit timestamp (see
    /// [`Self::tx_stamp`]).
    pub fn send_to(
        &self,
        data: &[u8],
        dst: SocketAddr,
        stamp: bool,
        from: Option<(IpAddr, u32)>,
    ) -> Result<()> {
        let fd = self.fd.get_ref().as_raw_fd();
        let addr = SockaddrStorage::from(dst);
        if stamp || from.is_some() {
            send_with(fd, data, &addr, stamp.then_some(self.hw), from)
        } else {
            sendto(fd, data, &addr, MsgFlags::MSG_DONTWAIT).map(|_| ())
        }
        .with_context(|| format!("sending {} bytes to {dst}", data.len()))
    }

    /// Waits for the next transmit timestamp on the error queue.
    pub async fn tx_stamp(&self) -> Result<TxStamp> {
        loop {
            let mut guard = self
                .fd
                .ready(Interest::ERROR)
                .await
                .context("waiting for a transmit timestamp")?;
            match guard.try_io(|fd| read_errqueue(fd.get_ref()).map_err(std::io::Error::from)) {
                Ok(Ok(Some(ErrStamp {
                    sw,
                    hw,
                    tail: Some(tail),
                }))) => {
                    return Ok(TxStamp {
                        realtime_ns: sw,
                        hw_ns: hw,
                        tail,
                    });
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e).context("reading the socket's error queue"),
                Err(_would_block) => continue,
            }
        }
    }
}

/// `sendmsg` with control messages (nix has no `SO_TIMESTAMPING` one): with `stamp`, a
/// request for a software transmit timestamp of this one datagram (and the NIC's with
/// `Some(true)`); with `from`, the source address and interface (`IP_PKTINFO` /
/// `IPV6_PKTINFO`).
fn send_with(
    fd: std::os::fd::RawFd,
    data: &[u8],
    addr: &SockaddrStorage,
    stamp: Option<bool>,
    from: Option<(IpAddr, u32)>,
) -> nix::Result<()> {
    use nix::sys::socket::SockaddrLike;
    // u64 elements: the control buffer must be aligned for cmsghdr; room for both.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call,
    // and each control message is written within `control` (CMSG_SPACE of a u32 and of
    // an in6_pktinfo together are well under its 128 bytes, and CMSG_NXTHDR is only
    // taken with msg_controllen covering both).
    let r = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let mut used = 0usize;
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        if let Some(hw) = stamp {
            let mut flags: u32 = libc::SOF_TIMESTAMPING_TX_SOFTWARE;
            if hw {
                flags |= libc::SOF_TIMESTAMPING_TX_HARDWARE;
            }
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SO_TIMESTAMPING;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u32>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u32>(), flags);
            used += libc::CMSG_SPACE(std::mem::size_of::<u32>() as u32) as usize;
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
        match from {
            Some((IpAddr::V4(a), ifindex)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: ifindex as libc::c_int,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let len = std::mem::size_of::<libc::in_pktinfo>() as u32;
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                used += libc::CMSG_SPACE(len) as usize;
            }
            Some((IpAddr::V6(a), ifindex)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                let len = std::mem::size_of::<libc::in6_pktinfo>() as u32;
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                used += libc::CMSG_SPACE(len) as usize;
            }
            None => {}
        }
        msg.msg_controllen = used as _;
        libc::sendmsg(fd, &raw const msg, libc::MSG_DONTWAIT)
    };
    if r < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

fn recv_now(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::Timestamps, libc::in6_pktinfo, [u32; 4]);
    let msg =
        recvmsg::<SockaddrStorage>(fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    received(&msg)
}

/// Up to `bufs.len()` datagrams in one call into `out` (cleared first); a datagram
/// from an address that is not IP is left out.
fn recv_many(
    fd: &OwnedFd,
    bufs: &mut [[u8; DATAGRAM]],
    out: &mut Vec<Received>,
) -> nix::Result<()> {
    out.clear();
    let cmsg = nix::cmsg_space!(nix::sys::socket::Timestamps, libc::in6_pktinfo, [u32; 4]);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), Some(cmsg));
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
        .iter_mut()
        .map(|b| [IoSliceMut::new(&mut b[..])])
        .collect();
    let got = recvmmsg(
        fd.as_raw_fd(),
        &mut headers,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    for msg in got {
        // Each entry stays at its buffer's index, so the caller pairs them up.
        out.push(received(&msg).unwrap_or(Received {
            len: 0,
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            rx_realtime_ns: None,
            dst: None,
            rx_hw: None,
        }));
    }
    Ok(())
}

/// What a received message says: its length, source, timestamps and destination.
fn received(msg: &nix::sys::socket::RecvMsg<'_, '_, SockaddrStorage>) -> nix::Result<Received> {
    let mut rx = None;
    let mut dst = None;
    let (mut hw, mut hw_if) = (None, None);
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::ScmTimestampsns(ts) => {
                let t = ts.system;
                if t.tv_sec() > 0 {
                    rx = Some(timespec_ns(&t));
                }
                hw = hw_raw(&ts);
            }
            ControlMessageOwned::Unknown(u) => {
                hw_if = hw_if.or(ts_pktinfo_ifindex(&u));
            }
            ControlMessageOwned::Ipv4PacketInfo(i) => {
                let a = std::net::Ipv4Addr::from(i.ipi_addr.s_addr.to_ne_bytes());
                dst = Some((IpAddr::V4(a), i.ipi_ifindex as u32));
            }
            ControlMessageOwned::Ipv6PacketInfo(i) => {
                let a = std::net::Ipv6Addr::from(i.ipi6_addr.s6_addr);
                dst = Some((IpAddr::V6(a), i.ipi6_ifindex));
            }
            _ => {}
        }
    }
    let src = msg
        .address
        .and_then(|a| to_socket_addr(&a))
        .ok_or(nix::errno::Errno::EAFNOSUPPORT)?;
    Ok(Received {
        len: msg.bytes,
        src,
        rx_realtime_ns: rx,
        dst,
        rx_hw: hw.map(|raw_ns| HwStamp {
            raw_ns,
            ifindex: hw_if,
        }),
    })
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
}

fn local_addr(fd: &OwnedFd) -> Result<SocketAddr> {
    let a: SockaddrStorage =
        nix::sys::socket::getsockname(fd.as_raw_fd()).context("getsockname")?;
    to_socket_addr(&a).ok_or_else(|| anyhow!("socket bound to a non-IP address"))
}

pub use ntp_proto::acl::canonical_ip;

/// A UDP socket connected to one upstream server, with kernel receive and transmit
/// timestamps (the transmit timestamp comes back on the socket's error queue).
pub struct ClientSocket {
    fd: AsyncFd<OwnedFd>,
    remote: SocketAddr,
    local: SocketAddr,
    /// NIC timestamps asked for.
    hw: bool,
    /// The interface the last NIC-stamped reply came in on (0: none yet): the requests
    /// leave through it too, and their stamps do not say.
    hw_ifindex: std::sync::atomic::AtomicU32,
}

/// The transmit timestamps of one datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxStamps {
    /// The kernel's software stamp, `CLOCK_REALTIME` ns.
    pub sw: Option<u64>,
    /// The NIC's stamp (its PHC's time, ns).
    pub hw: Option<i128>,
}

impl ClientSocket {
    /// Opens an ephemeral-port socket connected to `remote`; with `hw`, NIC timestamps are
    /// asked for besides the kernel's (the kernel gives them where the NIC has them
    /// enabled).
    pub fn connect(remote: SocketAddr, hw: bool) -> Result<Self> {
        let (family, any) = match remote {
            SocketAddr::V4(_) => (AddressFamily::Inet, SocketAddr::from(([0, 0, 0, 0], 0))),
            SocketAddr::V6(_) => (AddressFamily::Inet6, SocketAddr::from(([0u16; 8], 0))),
        };
        let fd = socket(
            family,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .with_context(|| format!("creating a UDP socket for {remote}"))?;
        let flags = TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_TX_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_OPT_TSONLY;
        // Transmit stamps from the NIC on every datagram of this socket; older kernels
        // refuse the options (PKTINFO and TX_SWHW came in 4.13): then the hardware
        // stamps without them, as chronyd does.
        let tx_hw = flags | TimestampingFlag::SOF_TIMESTAMPING_TX_HARDWARE;
        let ok = hw && enable_hw_stamps(&fd, tx_hw);
        if !ok {
            setsockopt(&fd, sockopt::Timestamping, &flags).context("enabling SO_TIMESTAMPING")?;
        }
        bind(fd.as_raw_fd(), &SockaddrStorage::from(any)).context("binding an ephemeral port")?;
        nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(remote))
            .with_context(|| format!("connecting to {remote}"))?;
        let local = local_addr(&fd)?;
        // SAFETY: as in TimestampedSocket::bind, the AsyncFd owns the descriptor.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::ERROR) }
                .map_err(|e| anyhow!("registering the socket with tokio: {e}"))?;
        Ok(ClientSocket {
            fd,
            remote,
            local,
            hw: ok,
            hw_ifindex: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The server this socket talks to.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The local address the kernel chose for talking to it.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The interface of the last NIC-stamped reply.
    pub fn hw_ifindex(&self) -> Option<u32> {
        Some(self.hw_ifindex.load(std::sync::atomic::Ordering::Relaxed)).filter(|i| *i != 0)
    }

    /// Sends one datagram. Transmit stamps of earlier ones still queued are dropped
    /// first: one that came after its wait would pass for this datagram's.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        while read_errqueue(self.fd.get_ref()).is_ok() {}
        nix::sys::socket::send(self.fd.get_ref().as_raw_fd(), data, MsgFlags::MSG_DONTWAIT)
            .with_context(|| format!("sending to {}", self.remote))?;
        Ok(())
    }

    /// Waits up to `wait` for the transmit timestamps of the last datagram sent: the
    /// kernel's, and the NIC's where asked for (they come as separate messages).
    pub async fn tx_timestamp(&self, wait: std::time::Duration) -> TxStamps {
        let mut got = TxStamps::default();
        let fut = async {
            loop {
                let Ok(mut guard) = self.fd.ready(Interest::ERROR).await else {
                    return;
                };
                match guard.try_io(|fd| read_errqueue(fd.get_ref()).map_err(std::io::Error::from)) {
                    Ok(Ok(Some(e))) => {
                        got.sw = got.sw.or(e.sw);
                        got.hw = got.hw.or(e.hw);
                        if got.sw.is_some() && (got.hw.is_some() || !self.hw) {
                            return;
                        }
                    }
                    Ok(Ok(None)) | Err(_) => {}
                    Ok(Err(_)) => return,
                }
            }
        };
        let _ = tokio::time::timeout(wait, fut).await;
        got
    }

    /// Receives one datagram from the server into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<Received> {
        loop {
            let mut guard = self.fd.readable().await.context("waiting for a reply")?;
            match guard.try_io(|fd| recv_now(fd.get_ref(), buf).map_err(std::io::Error::from)) {
                Ok(r) => {
                    if let Ok(Received {
                        rx_hw:
                            Some(HwStamp {
                                ifindex: Some(i), ..
                            }),
                        ..
                    }) = &r
                    {
                        self.hw_ifindex
                            .store(*i, std::sync::atomic::Ordering::Relaxed);
                    }
                    return r.with_context(|| format!("receiving from {}", self.remote));
                }
                Err(_would_block) => continue,
            }
        }
    }
}

/// `CLOCK_REALTIME` ns of a kernel timestamp.
fn timespec_ns(t: &nix::sys::time::TimeSpec) -> u64 {
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One error-queue message's timestamps and the end of its datagram (unless the socket
/// asked for timestamps only).
struct ErrStamp {
    sw: Option<u64>,
    hw: Option<i128>,
    tail: Option<[u8; 48]>,
}

/// Reads one error-queue message: `Some` if it carried a timestamp.
fn read_errqueue(fd: &OwnedFd) -> nix::Result<Option<ErrStamp>> {
    // The looped-back datagram comes with its link, IP and UDP headers.
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(
        nix::sys::socket::Timestamps,
        libc::sock_extended_err,
        libc::sockaddr_in6
    );
    let msg = recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE,
    )?;
    let (mut sw, mut hw) = (None, None);
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampsns(ts) = c {
            if ts.system.tv_sec() > 0 {
                sw = Some(timespec_ns(&ts.system));
            }
            hw = hw_raw(&ts);
        }
    }
    let len = msg.bytes;
    let tail = (len >= 48 && len <= buf.len())
        .then(|| buf[len - 48..len].try_into().ok())
        .flatten();
    Ok((sw.is_some() || hw.is_some()).then_some(ErrStamp { sw, hw, tail }))
}

/// Random bytes from a buffer per thread, refilled from the kernel 4 KiB at a time: a
/// server answering NTS requests needs two nonces a reply, and a system call for each
/// was a third of its system calls.
pub fn random_bytes_buffered(out: &mut [u8]) -> Result<()> {
    const SIZE: usize = 4096;
    thread_local! {
        static BUFFER: std::cell::RefCell<(Box<[u8; SIZE]>, usize)> =
            std::cell::RefCell::new((Box::new([0u8; SIZE]), SIZE));
    }
    if out.len() > SIZE {
        return random_bytes(out);
    }
    BUFFER.with(|b| {
        let (bytes, used) = &mut *b.borrow_mut();
        if *used + out.len() > SIZE {
            random_bytes(&mut bytes[..])?;
            *used = 0;
        }
        let taken = &mut bytes[*used..*used + out.len()];
        out.copy_from_slice(taken);
        // Bytes handed out are not left behind to be read again.
        taken.fill(0);
        *used += out.len();
        Ok(())
    })
}

/// Fills `buf` from the kernel's random number generator (keys and nonces: no fallback).
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: getrandom writes at most the given length into the buffer's tail.
        let n = unsafe { libc::getrandom(buf[at..].as_mut_ptr().cast(), buf.len() - at, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("getrandom");
            }
        } else {
            at += n as usize;
        }
    }
    Ok(())
}

/// A random 64-bit value from the kernel (for request transmit timestamps).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        // getrandom cannot fail for 8 bytes after boot; the clock is a last resort.
        use ntp_proto::clock::RealtimeClock;
        crate::clock::SystemRealtime.now_ns().rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15
    }
}
