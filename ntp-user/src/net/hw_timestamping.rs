//! `hwtimestamp`: NIC timestamps for the exchanges with upstream servers, as chronyd
//! takes them. At start each interface is checked (`ethtool -T`): a named one that
//! cannot stamp in hardware or has no PHC stops the start, with chronyd's words ("Could
//! not enable HW timestamping on IFACE"); with `*` such interfaces keep kernel software
//! timestamps, said once each. Where the NIC can, its timestamping is turned on
//! (`SIOCSHWTSTAMP`), its PHC is read every `minpoll` against the system clock into a
//! [`HwClock`], and the client sockets ask for raw hardware stamps, which the poll tasks
//! turn into system time through it (receive stamps moved from the preamble to the end
//! of the frame, `rxcomp`/`txcomp` applied). Until a PHC has two readings, or for a
//! packet through another interface, kernel software stamps are used.

use super::HwStamp;
use super::ethtool::{TsInfo, link_speed, set_hw_timestamping, ts_info};
use crate::{lock, refclocks::phc::Phc, sources::SharedEngine};
use anyhow::{Context, Result, bail};
use ntp_proto::config::{HwTimestampConfig, RxFilter};
use ntp_proto::hwclock::HwClock;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// `SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RX_HARDWARE |
/// SOF_TIMESTAMPING_RAW_HARDWARE`: what NIC timestamping of NTP packets needs.
const HW_FLAGS: u32 = 1 | (1 << 2) | (1 << 6);
/// `HWTSTAMP_FILTER_*` values.
const FILTER_NONE: u32 = 0;
const FILTER_ALL: u32 = 1;
const FILTER_PTP_V2_L4_EVENT: u32 = 6;
const FILTER_PTP_V2_EVENT: u32 = 12;
const FILTER_NTP_ALL: u32 = 15;
/// A NIC stamp further than this from the kernel's is not believed (chrony's limit).
const MAX_TS_DELAY_NS: i128 = 1_000_000_000;

/// Why an interface cannot give hardware timestamps, or its PHC index.
fn capability(info: &TsInfo) -> Result<u32, &'static str> {
    if info.so_timestamping & HW_FLAGS != HW_FLAGS {
        return Err("HW timestamping not supported");
    }
    info.phc_index.ok_or("PHC missing")
}

/// The receive filter to ask for, as chronyd chooses it from what the NIC offers.
fn rx_filter(wanted: RxFilter, offered: u32) -> u32 {
    let has = |f: u32| offered & (1 << f) != 0;
    match wanted {
        RxFilter::Any if has(FILTER_NTP_ALL) => FILTER_NTP_ALL,
        RxFilter::Any if has(FILTER_ALL) => FILTER_ALL,
        RxFilter::Ntp => FILTER_NTP_ALL,
        RxFilter::Ptp if has(FILTER_PTP_V2_L4_EVENT) => FILTER_PTP_V2_L4_EVENT,
        RxFilter::Ptp if has(FILTER_PTP_V2_EVENT) => FILTER_PTP_V2_EVENT,
        RxFilter::All => FILTER_ALL,
        RxFilter::Any | RxFilter::Ptp | RxFilter::None => FILTER_NONE,
    }
}

/// One interface whose NIC stamps are in use.
struct Interface {
    name: String,
    ifindex: u32,
    config: HwTimestampConfig,
    clock: HwClock,
    /// Link speed, Mb/s (for moving receive stamps to the end of the frame).
    speed: Option<u32>,
}

/// The interfaces with NIC stamps, shared by the PHC tasks and the poll tasks.
pub struct HwClocks {
    ifaces: Mutex<Vec<Interface>>,
}

impl HwClocks {
    /// The system time (ns) of NIC stamp `s`, `None` where it cannot be told (another
    /// interface, a PHC not read yet, a stamp too far from `near_ns`, the kernel's stamp
    /// or the daemon's clock read).
    /// `rx_len`: the NTP datagram's length for a receive stamp (and whether it came over
    /// IPv6), `None` for a transmit stamp.
    pub fn to_system_ns(
        &self,
        engine: &SharedEngine,
        s: HwStamp,
        rx_len: Option<(usize, bool)>,
        near_ns: Option<u64>,
    ) -> Option<u64> {
        let ifaces = lock(&self.ifaces);
        let iface = match s.ifindex {
            Some(i) => ifaces.iter().find(|f| f.ifindex == i)?,
            // Without the interface (a transmit stamp), only one can have taken it.
            None if ifaces.len() == 1 => ifaces.first()?,
            None => return None,
        };
        let mut raw = s.raw_ns;
        if let (Some((len, v6)), Some(speed)) = (rx_len, iface.speed) {
            // NIC receive stamps mark the frame's start; NTP's mark its end: Ethernet,
            // IP and UDP headers, the data and the frame check sequence.
            let l2 = 14 + if v6 { 40 } else { 20 } + 8 + len + 4;
            raw += (l2 as i128 * 8 * 1000) / i128::from(speed);
        }
        let sys = lock(engine).hw_to_system_ns(&iface.clock, raw)?;
        let comp = match rx_len {
            Some(_) => -iface.config.rx_comp,
            None => iface.config.tx_comp,
        };
        let t = i128::from(sys) + (comp * 1e9).round() as i128;
        if let Some(near) = near_ns
            && (t - i128::from(near)).abs() > MAX_TS_DELAY_NS
        {
            return None;
        }
        u64::try_from(t).ok()
    }
}

/// Turns on NIC timestamping where the `hwtimestamp` lines ask and the NIC can; `None`
/// when no interface has it. Starts a PHC reading task per interface.
pub fn enable(
    lines: &[HwTimestampConfig],
    engine: &SharedEngine,
    precision: f64,
) -> Result<Option<Arc<HwClocks>>> {
    let mut chosen: Vec<(String, HwTimestampConfig, u32, TsInfo)> = Vec::new();
    for h in lines.iter().filter(|h| h.iface != "*") {
        let cap = ts_info(&h.iface)
            .map_err(|e| format!("{e:#}"))
            .and_then(|i| capability(&i).map(|phc| (phc, i)).map_err(str::to_string));
        match cap {
            Ok((phc, info)) => chosen.push((h.iface.clone(), h.clone(), phc, info)),
            Err(why) => bail!(
                "Could not enable HW timestamping on {} (hwtimestamp, line {}): {why}; remove \
                 the line to use kernel software timestamps",
                h.iface,
                h.line
            ),
        }
    }
    if let Some(star) = lines.iter().find(|h| h.iface == "*") {
        for iface in candidates() {
            if lines.iter().any(|h| h.iface == iface) {
                continue;
            }
            match ts_info(&iface).map(|i| (capability(&i), i)) {
                Ok((Ok(phc), info)) => chosen.push((iface, star.clone(), phc, info)),
                Ok((Err(why), _)) => info!("{iface}: {why}; kernel software timestamps"),
                Err(_) => info!("{iface}: no timestamping information; kernel software timestamps"),
            }
        }
    }
    let mut ifaces = Vec::new();
    let mut phcs = Vec::new();
    for (name, config, phc_index, info) in chosen {
        let filter = rx_filter(config.rx_filter, info.rx_filters);
        if let Err(e) = set_hw_timestamping(&name, true, filter) {
            if config.iface == "*" {
                warn!("{name}: could not enable HW timestamping ({e}); kernel software timestamps");
                continue;
            }
            bail!(
                "Could not enable HW timestamping on {name} (hwtimestamp, line {}): \
                 SIOCSHWTSTAMP: {e}",
                config.line
            );
        }
        let path = format!("/dev/ptp{phc_index}");
        let opened = Phc::open(&path, config.nocrossts).and_then(|phc| {
            let i = nix::net::if_::if_nametoindex(name.as_str())
                .with_context(|| format!("the index of interface {name}"))?;
            Ok((phc, i))
        });
        let (phc, ifindex) = match opened {
            Ok(p) => p,
            // As chronyd: `*` leaves out an interface it cannot use.
            Err(e) if config.iface == "*" => {
                warn!("{name}: {e:#}; kernel software timestamps");
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "Could not enable HW timestamping on {name} (hwtimestamp, line {})",
                        config.line
                    )
                });
            }
        };
        info!(
            "Enabled HW timestamping {}on {name} (PHC {path})",
            if filter == FILTER_NONE {
                "(TX only) "
            } else {
                ""
            }
        );
        phcs.push((ifindex, phc, config.minpoll));
        ifaces.push(Interface {
            speed: link_speed(&name),
            name,
            ifindex,
            clock: HwClock::new(config.min_samples, config.max_samples, config.precision),
            config,
        });
    }
    if ifaces.is_empty() {
        return Ok(None);
    }
    let clocks = Arc::new(HwClocks {
        ifaces: Mutex::new(ifaces),
    });
    for (ifindex, phc, poll) in phcs {
        tokio::spawn(read_phc(
            ifindex,
            phc,
            poll,
            clocks.clone(),
            engine.clone(),
            precision,
        ));
    }
    Ok(Some(clocks))
}

/// Reads interface `ifindex`'s PHC every 2^`poll` seconds into its clock.
async fn read_phc(
    ifindex: u32,
    mut phc: Phc,
    poll: i8,
    clocks: Arc<HwClocks>,
    engine: SharedEngine,
    precision: f64,
) {
    let period = Duration::from_secs_f64(2f64.powi(i32::from(poll)));
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        timer.tick().await;
        match phc.read() {
            Ok(readings) => {
                failing = false;
                let mut ifaces = lock(&clocks.ifaces);
                if let Some(i) = ifaces.iter_mut().find(|i| i.ifindex == ifindex) {
                    lock(&engine).hw_reading(&mut i.clock, &readings, precision);
                    // The link may have come up or changed speed since (chronyd reads it
                    // at every PHC poll too).
                    i.speed = link_speed(&i.name);
                }
            }
            Err(e) if !failing => {
                let name = lock(&clocks.ifaces)
                    .iter()
                    .find(|i| i.ifindex == ifindex)
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                warn!("{name}: {e:#}; software timestamps until it reads again");
                failing = true;
            }
            Err(_) => {}
        }
    }
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
    fn the_receive_filter_is_chosen_as_chronyd_chooses_it() {
        let ntp_and_all = (1 << FILTER_NTP_ALL) | (1 << FILTER_ALL);
        assert_eq!(rx_filter(RxFilter::Any, ntp_and_all), FILTER_NTP_ALL);
        assert_eq!(rx_filter(RxFilter::Any, 1 << FILTER_ALL), FILTER_ALL);
        assert_eq!(rx_filter(RxFilter::Any, 0), FILTER_NONE);
        assert_eq!(
            rx_filter(RxFilter::Ptp, 1 << FILTER_PTP_V2_EVENT),
            FILTER_PTP_V2_EVENT
        );
        assert_eq!(rx_filter(RxFilter::None, ntp_and_all), FILTER_NONE);
        assert_eq!(rx_filter(RxFilter::All, 0), FILTER_ALL);
    }
}
