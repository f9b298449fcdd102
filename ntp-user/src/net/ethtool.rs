//! ethtool requests (`SIOCETHTOOL`): offload flags and timestamping capabilities.

use anyhow::{Result, bail};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_GET_TS_INFO: u32 = 0x41;
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// Runs ethtool command `data` on `iface`.
///
/// # Safety
/// `T` must be the `#[repr(C)]` struct the kernel expects for the command in its first
/// field (the kernel reads and writes that many bytes).
unsafe fn request<T>(iface: &str, data: &mut T) -> std::io::Result<()> {
    // SAFETY: the caller's promise: `data` is what SIOCETHTOOL's command expects.
    unsafe { ifreq_ioctl(iface, SIOCETHTOOL, data) }
}

/// Runs interface ioctl `request` on `iface` with an `ifreq` pointing at `data`.
///
/// # Safety
/// `T` must be the `#[repr(C)]` struct the kernel reads and writes for `request`.
unsafe fn ifreq_ioctl<T>(iface: &str, request: libc::c_ulong, data: &mut T) -> std::io::Result<()> {
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: a zeroed ifreq is a valid value; the name and data pointer are set below.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = std::ptr::from_mut(data).cast::<libc::c_char>();
    // SAFETY: plain socket(2); the descriptor is owned (and closed) below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the ioctl reads the ifreq and reads/writes `data`, both live for the call;
    // the caller passes the struct the request expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &raw mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `iface` strips VLAN tags on receive (ethtool's `rx-vlan-offload`): the XDP
/// program then sees tagged frames without their tag and would answer them untagged.
pub fn strips_vlan_tags(iface: &str) -> Result<bool> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    // SAFETY: ETHTOOL_GFLAGS reads and writes a `struct ethtool_value`, which this is.
    if let Err(e) = unsafe { request(iface, &mut value) } {
        bail!("reading the offload flags of {iface} (ethtool): {e}");
    }
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

/// What an interface can timestamp (`ethtool -T`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsInfo {
    /// `SOF_TIMESTAMPING_*` flags it supports.
    pub so_timestamping: u32,
    /// Index of its PTP hardware clock (`/dev/ptpN`), if it has one.
    pub phc_index: Option<u32>,
    /// Transmit timestamp types (`HWTSTAMP_TX_*` bits).
    pub tx_types: u32,
    /// Receive filters (`HWTSTAMP_FILTER_*` bits).
    pub rx_filters: u32,
}

/// `iface`'s timestamping capabilities.
pub fn ts_info(iface: &str) -> Result<TsInfo> {
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolTsInfo {
        cmd: u32,
        so_timestamping: u32,
        phc_index: i32,
        tx_types: u32,
        tx_reserved: [u32; 3],
        rx_filters: u32,
        rx_reserved: [u32; 3],
    }
    let mut info = EthtoolTsInfo {
        cmd: ETHTOOL_GET_TS_INFO,
        ..EthtoolTsInfo::default()
    };
    // SAFETY: ETHTOOL_GET_TS_INFO reads and writes a `struct ethtool_ts_info`, which
    // this is.
    if let Err(e) = unsafe { request(iface, &mut info) } {
        bail!("reading the timestamping capabilities of {iface} (ethtool): {e}");
    }
    Ok(TsInfo {
        so_timestamping: info.so_timestamping,
        phc_index: u32::try_from(info.phc_index).ok(),
        tx_types: info.tx_types,
        rx_filters: info.rx_filters,
    })
}

/// `iface`'s link speed in Mb/s, if it has one (a veth has none).
pub fn link_speed(iface: &str) -> Option<u32> {
    const ETHTOOL_GSET: u32 = 1;
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolCmd {
        cmd: u32,
        supported: u32,
        advertising: u32,
        speed: u16,
        duplex: u8,
        port: u8,
        phy_address: u8,
        transceiver: u8,
        autoneg: u8,
        mdio_support: u8,
        maxtxpkt: u32,
        maxrxpkt: u32,
        speed_hi: u16,
        eth_tp_mdix: u8,
        eth_tp_mdix_ctrl: u8,
        lp_advertising: u32,
        reserved: [u32; 2],
    }
    let mut c = EthtoolCmd {
        cmd: ETHTOOL_GSET,
        ..EthtoolCmd::default()
    };
    // SAFETY: ETHTOOL_GSET reads and writes a `struct ethtool_cmd`, which this is.
    unsafe { request(iface, &mut c) }.ok()?;
    let speed = (u32::from(c.speed_hi) << 16) | u32::from(c.speed);
    // SPEED_UNKNOWN is all ones.
    (speed != 0 && speed != u32::MAX && speed != 0xffff).then_some(speed)
}

/// `SIOCSHWTSTAMP`: turns the NIC's timestamping on (`tx_on`) with receive filter
/// `rx_filter` (`HWTSTAMP_FILTER_*`).
pub fn set_hw_timestamping(iface: &str, tx_on: bool, rx_filter: u32) -> std::io::Result<()> {
    const SIOCSHWTSTAMP: libc::c_ulong = 0x89b0;
    #[repr(C)]
    struct HwtstampConfig {
        flags: i32,
        tx_type: i32,
        rx_filter: i32,
    }
    let mut cfg = HwtstampConfig {
        flags: 0,
        tx_type: i32::from(tx_on),
        rx_filter: rx_filter as i32,
    };
    // SAFETY: SIOCSHWTSTAMP reads and writes a hwtstamp_config, which `cfg` is.
    unsafe { ifreq_ioctl(iface, SIOCSHWTSTAMP, &mut cfg) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_software_timestamps_and_no_phc() {
        let info = ts_info("lo").expect("lo answers ETHTOOL_GET_TS_INFO");
        // SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE.
        assert_eq!(info.so_timestamping & 0x18, 0x18, "{info:?}");
        assert_eq!(info.phc_index, None);
        assert!(ts_info("no-such-if0").is_err());
        assert!(ts_info("a-name-far-too-long-for-linux").is_err());
        assert_eq!(link_speed("lo"), None);
        assert!(set_hw_timestamping("lo", true, 0).is_err(), "lo has no NIC");
    }
}
