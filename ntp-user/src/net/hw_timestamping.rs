//! `hwtimestamp`: what each interface can timestamp, checked at start as chronyd checks
//! it. A named interface that cannot stamp in hardware (or has no PHC) stops the start,
//! as chronyd does ("Could not enable HW timestamping on IFACE"); with `*` such
//! interfaces keep kernel software timestamps, said once each. NIC timestamps are not
//! used yet: an interface that has them is named with its PHC, and software timestamps
//! are used there too.

use super::ethtool::{TsInfo, ts_info};
use anyhow::{Result, bail};
use ntp_proto::config::HwTimestampConfig;
use tracing::{info, warn};

/// `SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RX_HARDWARE |
/// SOF_TIMESTAMPING_RAW_HARDWARE`: what NIC timestamping of NTP packets needs.
const HW_FLAGS: u32 = 1 | (1 << 2) | (1 << 6);

/// Why an interface cannot give hardware timestamps, or its PHC index.
fn capability(info: &TsInfo) -> Result<u32, &'static str> {
    if info.so_timestamping & HW_FLAGS != HW_FLAGS {
        return Err("HW timestamping not supported");
    }
    info.phc_index.ok_or("PHC missing")
}

/// Checks every `hwtimestamp` line against the interfaces there are now.
pub fn check(lines: &[HwTimestampConfig]) -> Result<()> {
    for h in lines.iter().filter(|h| h.iface != "*") {
        let cap = ts_info(&h.iface)
            .map_err(|e| format!("{e:#}"))
            .and_then(|i| capability(&i).map_err(str::to_string));
        match cap {
            Ok(phc) => not_used_yet(&h.iface, phc),
            Err(why) => bail!(
                "Could not enable HW timestamping on {} (hwtimestamp, line {}): {why}; remove \
                 the line to use kernel software timestamps",
                h.iface,
                h.line
            ),
        }
    }
    if lines.iter().any(|h| h.iface == "*") {
        let named: Vec<&str> = lines.iter().map(|h| h.iface.as_str()).collect();
        for iface in candidates() {
            if named.contains(&iface.as_str()) {
                continue;
            }
            match ts_info(&iface).map(|i| capability(&i)) {
                Ok(Ok(phc)) => not_used_yet(&iface, phc),
                Ok(Err(why)) => info!("{iface}: {why}; kernel software timestamps"),
                Err(_) => info!("{iface}: no timestamping information; kernel software timestamps"),
            }
        }
    }
    Ok(())
}

fn not_used_yet(iface: &str, phc: u32) {
    warn!(
        "{iface} can timestamp in hardware (PHC /dev/ptp{phc}), but ntpx does not use NIC \
         timestamps yet: kernel software timestamps are used on it"
    );
}

/// The interfaces `*` covers: every one but loopback.
fn candidates() -> Vec<String> {
    let mut names: Vec<String> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter(|a| {
                !a.flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            })
            .map(|a| a.interface_name)
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_needs_all_three_flags_and_a_phc() {
        let full = TsInfo {
            so_timestamping: HW_FLAGS | 0x18,
            phc_index: Some(2),
            ..TsInfo::default()
        };
        assert_eq!(capability(&full), Ok(2));
        let no_tx = TsInfo {
            so_timestamping: HW_FLAGS & !1,
            ..full
        };
        assert_eq!(capability(&no_tx), Err("HW timestamping not supported"));
        let no_phc = TsInfo {
            phc_index: None,
            ..full
        };
        assert_eq!(capability(&no_phc), Err("PHC missing"));
    }

    #[test]
    fn a_named_interface_without_nic_stamps_stops_the_start() {
        let lo = ntp_proto::config::parse_str("hwtimestamp lo\n", std::path::Path::new("t"))
            .expect("valid");
        let e = check(&lo.hwtimestamp).expect_err("lo has no NIC timestamps");
        assert!(
            format!("{e:#}").contains(
                "Could not enable HW timestamping on lo (hwtimestamp, line 1): HW timestamping \
                 not supported"
            ),
            "{e:#}"
        );
        let all = ntp_proto::config::parse_str("hwtimestamp *\n", std::path::Path::new("t"))
            .expect("valid");
        check(&all.hwtimestamp).expect("* falls back to software timestamps");
    }
}
