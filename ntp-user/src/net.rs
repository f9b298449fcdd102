//! UDP sockets with kernel receive timestamps (SO_TIMESTAMPING, software).

use anyhow::{Context, Result, anyhow};
use nix::sys::socket::TimestampingFlag;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrStorage, bind,
    recvmsg, sendto, setsockopt, socket, sockopt,
};
use std::{
    io::IoSliceMut,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
};
use tokio::io::{Interest, unix::AsyncFd};

/// A received datagram with its kernel receive timestamp.
#[derive(Debug)]
pub struct Received {
    /// Bytes received (truncated to the buffer).
    pub len: usize,
    /// Sender.
    pub src: SocketAddr,
    /// Kernel software receive timestamp, CLOCK_REALTIME ns; `None` if the kernel gave none.
    pub rx_realtime_ns: Option<u64>,
}

/// A non-blocking UDP socket registered with tokio.
pub struct TimestampedSocket {
    fd: AsyncFd<OwnedFd>,
    local: SocketAddr,
}

impl TimestampedSocket {
    /// Binds `addr` with receive timestamping on (IPv6 sockets are IPv6-only).
    pub fn bind(addr: SocketAddr) -> Result<Self> {
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
        setsockopt(
            &fd,
            sockopt::Timestamping,
            &(TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
                | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE),
        )
        .context("enabling SO_TIMESTAMPING")?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .with_context(|| format!("binding UDP {addr}"))?;
        let local = local_addr(&fd)?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until it is dropped,
        // so the descriptor cannot be closed or reused while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| anyhow!("registering the socket with tokio: {e}"))?;
        Ok(TimestampedSocket { fd, local })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Receives one datagram into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<Received> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .context("waiting for the NTP socket")?;
            match guard.try_io(|fd| recv_now(fd.get_ref(), buf).map_err(std::io::Error::from)) {
                Ok(r) => return r.context("receiving on the NTP socket"),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends `data` to `dst` (a datagram socket never blocks for long; a full buffer drops).
    pub fn send_to(&self, data: &[u8], dst: SocketAddr) -> Result<()> {
        sendto(
            self.fd.get_ref().as_raw_fd(),
            data,
            &SockaddrStorage::from(dst),
            MsgFlags::MSG_DONTWAIT,
        )
        .with_context(|| format!("sending {} bytes to {dst}", data.len()))?;
        Ok(())
    }
}

fn recv_now(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::Timestamps);
    let msg =
        recvmsg::<SockaddrStorage>(fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    let mut rx = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampsns(ts) = c {
            let t = ts.system;
            if t.tv_sec() > 0 {
                rx = Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
            }
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

/// Maps an IPv4-mapped IPv6 address to IPv4, so access rules see one form.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
