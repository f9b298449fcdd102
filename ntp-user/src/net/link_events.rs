//! Interface and address changes as the kernel announces them (rtnetlink multicast
//! groups), so the daemon follows interfaces as they come and go without polling.
//!
//! The messages are only a signal: after each burst of them the daemon reads the whole
//! interface list again and works out what changed. Nothing is parsed, so nothing can be
//! misread, and an overflowed socket (`ENOBUFS`: the kernel dropped messages) is just
//! another signal to read everything again.

use anyhow::{Context, Result, anyhow};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use tokio::io::{Interest, unix::AsyncFd};

/// rtnetlink multicast groups: links, IPv4 addresses, IPv6 addresses.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// A route netlink socket subscribed to link and address changes.
pub struct LinkEvents {
    fd: AsyncFd<OwnedFd>,
}

impl LinkEvents {
    /// Subscribes (no privileges needed) in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .context("opening a route netlink socket")?;
        let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
            .context("subscribing to interface and address changes (netlink)")?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until it is dropped,
        // so the descriptor cannot be closed or reused while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| anyhow!("registering the netlink socket with tokio: {e}"))?;
        Ok(LinkEvents { fd })
    }

    /// Waits until the kernel announces a change, then takes every message already
    /// queued (one change often comes as several: link up, then its addresses).
    pub async fn changed(&mut self) -> Result<()> {
        loop {
            let mut ready = self
                .fd
                .readable()
                .await
                .context("waiting on the netlink socket")?;
            match drain(ready.get_inner().as_raw_fd()) {
                Ok(0) => ready.clear_ready(),
                Ok(_) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads whatever is queued without waiting; how many messages (datagrams) there
    /// were. An overflow counts as one: something changed.
    pub fn drain(&mut self) -> Result<usize> {
        drain(self.fd.get_ref().as_raw_fd())
    }
}

/// Reads every datagram queued on `fd` without waiting; how many there were (an
/// overflow counts as one).
fn drain(fd: RawFd) -> Result<usize> {
    let mut buf = [0u8; 16 * 1024];
    let mut n = 0;
    loop {
        match recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(_) | Err(Errno::ENOBUFS) => n += 1,
            Err(Errno::EAGAIN) => return Ok(n),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("reading the netlink socket"),
        }
    }
}
