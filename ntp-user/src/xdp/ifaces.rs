//! What the kernel says of its interfaces: addresses, MACs, VLAN offload.

use anyhow::{Context, Result, bail};
use nix::net::if_::InterfaceFlags;
use ntp_proto::serving::Interface;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd};

/// The hardware (MAC) address of `iface`.
pub fn mac_address(iface: &str) -> Result<[u8; 6]> {
    for ifa in nix::ifaddrs::getifaddrs().context("listing interfaces (getifaddrs)")? {
        if ifa.interface_name != iface {
            continue;
        }
        if let Some(mac) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(nix::sys::socket::LinkAddr::addr)
        {
            return Ok(mac);
        }
    }
    bail!("interface {iface} has no MAC address (XDP serves Ethernet interfaces only)")
}

/// Whether `iface` strips VLAN tags on receive (ethtool's `rx-vlan-offload`): the XDP
/// program then sees tagged frames without their tag and would answer them untagged.
pub fn strips_vlan_tags(iface: &str) -> Result<bool> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GFLAGS: u32 = 0x25;
    const ETH_FLAG_RXVLAN: u32 = 1 << 8;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        bail!("interface name {iface} is too long");
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    // SAFETY: a zeroed ifreq is a valid value; the name and data pointer are set below.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast::<libc::c_char>();
    // SAFETY: plain socket(2); the descriptor is owned (and closed) below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket for ethtool: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads the ifreq and writes `value`, both live for the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut ifr) };
    if r < 0 {
        bail!(
            "reading the offload flags of {iface} (ethtool): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

/// The VLAN devices stacked on `iface` (from sysfs: its `upper_*` links whose device
/// is a VLAN).
pub fn vlan_uppers(iface: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/sys/class/net/{iface}")) else {
        return Vec::new();
    };
    let mut vlans: Vec<String> = dir
        .filter_map(std::result::Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_prefix("upper_")?.to_string();
            let uevent = std::fs::read_to_string(format!("/sys/class/net/{name}/uevent")).ok()?;
            uevent.lines().any(|l| l == "DEVTYPE=vlan").then_some(name)
        })
        .collect();
    vlans.sort();
    vlans
}

/// Every interface of this host (or network namespace), with its unicast addresses.
pub fn interfaces() -> Result<Vec<Interface>> {
    let mut out: Vec<Interface> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing interfaces (getifaddrs)")? {
        let i = if let Some(i) = out.iter().position(|i| i.name == ifa.interface_name) {
            i
        } else {
            // Gone between the listing and this call: the next change event resyncs.
            let Ok(index) = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()) else {
                continue;
            };
            out.push(Interface {
                name: ifa.interface_name.clone(),
                index,
                up: ifa.flags.contains(InterfaceFlags::IFF_UP),
                loopback: ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                addrs: Vec::new(),
            });
            out.len() - 1
        };
        let Some(a) = ifa.address else { continue };
        if let Some(v4) = a.as_sockaddr_in() {
            out[i].addrs.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = a.as_sockaddr_in6() {
            out[i].addrs.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}
