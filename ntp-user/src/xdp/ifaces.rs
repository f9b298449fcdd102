//! Choosing the interfaces the XDP program attaches to.

use anyhow::{Context, Result, bail};
use nix::net::if_::InterfaceFlags;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd};

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceAddr {
    /// Interface name.
    pub name: String,
    /// An address it carries.
    pub addr: IpAddr,
    /// Whether the interface is up.
    pub up: bool,
    /// Whether it is a loopback interface.
    pub loopback: bool,
}

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

/// Every address of every interface on this host (or network namespace).
pub fn list() -> Result<Vec<IfaceAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing interfaces (getifaddrs)")? {
        let Some(a) = ifa.address else { continue };
        let addr = if let Some(v4) = a.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = a.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        out.push(IfaceAddr {
            name: ifa.interface_name.clone(),
            addr,
            up: ifa.flags.contains(InterfaceFlags::IFF_UP),
            loopback: ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK),
        });
    }
    Ok(out)
}

/// The interfaces that carry the served addresses: those holding a bound address, or with
/// no (or a wildcard) bind address every interface that is up and not loopback.
pub fn select(all: &[IfaceAddr], bind: &[IpAddr]) -> Result<Vec<String>> {
    let specific: Vec<IpAddr> = bind
        .iter()
        .copied()
        .filter(|a| !a.is_unspecified())
        .collect();
    let mut names = BTreeSet::new();
    for i in all {
        let carries = if specific.is_empty() {
            i.up && !i.loopback
        } else {
            specific.contains(&i.addr)
        };
        if carries {
            names.insert(i.name.clone());
        }
    }
    if names.is_empty() {
        if specific.is_empty() {
            bail!("no interface is up with an address to serve on (use -i IFACE or --no-xdp)");
        }
        bail!("no interface carries the bind address(es) {specific:?} (use -i IFACE or --no-xdp)");
    }
    Ok(names.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ia(name: &str, addr: &str, up: bool, loopback: bool) -> IfaceAddr {
        IfaceAddr {
            name: name.into(),
            addr: addr.parse().unwrap(),
            up,
            loopback,
        }
    }

    fn host() -> Vec<IfaceAddr> {
        vec![
            ia("lo", "127.0.0.1", true, true),
            ia("eth0", "198.18.0.1", true, false),
            ia("eth0", "fd00::1", true, false),
            ia("eth1", "198.18.1.1", true, false),
            ia("eth2", "198.18.2.1", false, false),
        ]
    }

    #[test]
    fn wildcard_serves_every_up_non_loopback_interface() {
        assert_eq!(select(&host(), &[]).unwrap(), ["eth0", "eth1"]);
        assert_eq!(
            select(&host(), &["0.0.0.0".parse().unwrap()]).unwrap(),
            ["eth0", "eth1"]
        );
    }

    #[test]
    fn bind_address_picks_its_interface() {
        assert_eq!(
            select(&host(), &["fd00::1".parse().unwrap()]).unwrap(),
            ["eth0"]
        );
        assert_eq!(
            select(&host(), &["198.18.1.1".parse().unwrap()]).unwrap(),
            ["eth1"]
        );
        let err = select(&host(), &["203.0.113.9".parse().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("203.0.113.9"), "{err}");
    }

    #[test]
    fn nothing_to_serve_is_an_error() {
        assert!(select(&host()[..1], &[]).is_err());
    }
}
