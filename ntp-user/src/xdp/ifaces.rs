//! What the kernel says of its interfaces: addresses, MACs, VLAN offload.

use anyhow::{Context, Result, bail};
use nix::net::if_::InterfaceFlags;
use ntp_proto::serving::Interface;
use std::net::IpAddr;

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

pub use crate::net::ethtool::strips_vlan_tags;

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
