//! `refclock PHC DEVICE`: a PTP hardware clock (a NIC's clock disciplined by ptp4l, or
//! one with a PPS on a pin), read against the system clock with the best ioctl the
//! driver has, as chronyd reads it: a cross timestamp (`PTP_SYS_OFFSET_PRECISE`), else
//! readings between two system clock reads (`PTP_SYS_OFFSET_EXTENDED`, then
//! `PTP_SYS_OFFSET`).

use anyhow::{Context, Result, bail};
use ntp_proto::refclock_formats::PhcTriple;
use std::fs::File;
use std::os::fd::AsRawFd;

/// Most readings one ioctl gives (`PTP_MAX_SAMPLES`).
const MAX_SAMPLES: usize = 25;
/// Readings asked for per poll (chrony's `PHC_READINGS`).
const READINGS: usize = 25;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct PtpClockTime {
    sec: i64,
    nsec: u32,
    reserved: u32,
}

impl PtpClockTime {
    pub(super) fn ns(self) -> i128 {
        i128::from(self.sec) * 1_000_000_000 + i128::from(self.nsec)
    }
}

#[repr(C)]
struct PtpClockCaps {
    words: [i32; 20],
}

#[repr(C)]
struct PtpSysOffset {
    n_samples: u32,
    rsv: [u32; 3],
    ts: [PtpClockTime; 2 * MAX_SAMPLES + 1],
}

#[repr(C)]
struct PtpSysOffsetPrecise {
    device: PtpClockTime,
    sys_realtime: PtpClockTime,
    sys_monoraw: PtpClockTime,
    rsv: [u32; 4],
}

#[repr(C)]
struct PtpSysOffsetExtended {
    n_samples: u32,
    clockid: i32,
    rsv: [u32; 2],
    ts: [[PtpClockTime; 3]; MAX_SAMPLES],
}

/// `_IOC(dir, '=', nr, size)` of the PTP clock ioctls.
pub(super) const fn ptp_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0x3d << 8) | nr
}
pub(super) const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const GETCAPS: u64 = ptp_ioc(IOC_READ, 1, size_of::<PtpClockCaps>());
const SYS_OFFSET: u64 = ptp_ioc(IOC_WRITE, 5, size_of::<PtpSysOffset>());
const SYS_OFFSET_PRECISE: u64 = ptp_ioc(IOC_READ | IOC_WRITE, 8, size_of::<PtpSysOffsetPrecise>());
const SYS_OFFSET_EXTENDED: u64 =
    ptp_ioc(IOC_READ | IOC_WRITE, 9, size_of::<PtpSysOffsetExtended>());

/// Which ioctl answered last (tried in order until one does, then kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not known yet.
    Unknown,
    /// `PTP_SYS_OFFSET_PRECISE`.
    Precise,
    /// `PTP_SYS_OFFSET_EXTENDED`.
    Extended,
    /// `PTP_SYS_OFFSET`.
    Basic,
}

/// An open PTP hardware clock.
pub struct Phc {
    pub(super) file: File,
    /// The device path, for messages.
    pub path: String,
    nocrossts: bool,
    mode: Mode,
}

impl Phc {
    /// Opens `device`: a `/dev/ptpN` path, or an interface whose PHC it is.
    pub fn open(device: &str, nocrossts: bool) -> Result<Self> {
        Self::open_for(device, nocrossts, false)
    }

    /// As [`Phc::open`], for writing too where `write` (configuring pins and external
    /// timestamps needs it).
    pub fn open_for(device: &str, nocrossts: bool, write: bool) -> Result<Self> {
        let path = if device.starts_with('/') {
            device.to_string()
        } else {
            let info = crate::net::ethtool::ts_info(device)
                .with_context(|| format!("finding the PHC of interface {device}"))?;
            let Some(index) = info.phc_index else {
                bail!("interface {device} has no PTP hardware clock");
            };
            format!("/dev/ptp{index}")
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .with_context(|| format!("opening PHC {path}"))?;
        let mut caps = PtpClockCaps { words: [0; 20] };
        // SAFETY: PTP_CLOCK_GETCAPS writes a ptp_clock_caps, which `caps` is.
        if unsafe { libc::ioctl(file.as_raw_fd(), GETCAPS as _, &raw mut caps) } < 0 {
            bail!(
                "{path} is not a PTP hardware clock (PTP_CLOCK_GETCAPS: {})",
                std::io::Error::last_os_error()
            );
        }
        Ok(Phc {
            file,
            path,
            nocrossts,
            mode: Mode::Unknown,
        })
    }

    /// The ioctl in use.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Readings of the PHC against the system clock, with the best ioctl that works.
    pub fn read(&mut self) -> Result<Vec<PhcTriple>> {
        let fd = self.file.as_raw_fd();
        let try_mode = |m: Mode, current: Mode| current == Mode::Unknown || current == m;
        if try_mode(Mode::Precise, self.mode)
            && !self.nocrossts
            && let Some(r) = precise(fd)
        {
            self.mode = Mode::Precise;
            return Ok(r);
        }
        if try_mode(Mode::Extended, self.mode)
            && let Some(r) = extended(fd)
        {
            self.mode = Mode::Extended;
            return Ok(r);
        }
        if try_mode(Mode::Basic, self.mode)
            && let Some(r) = basic(fd)
        {
            self.mode = Mode::Basic;
            return Ok(r);
        }
        bail!(
            "reading PHC {} failed: {}",
            self.path,
            std::io::Error::last_os_error()
        )
    }
}

fn precise(fd: i32) -> Option<Vec<PhcTriple>> {
    let mut o = PtpSysOffsetPrecise {
        device: PtpClockTime::default(),
        sys_realtime: PtpClockTime::default(),
        sys_monoraw: PtpClockTime::default(),
        rsv: [0; 4],
    };
    // SAFETY: the ioctl reads and writes a ptp_sys_offset_precise, which `o` is.
    if unsafe { libc::ioctl(fd, SYS_OFFSET_PRECISE as _, &raw mut o) } < 0 {
        return None;
    }
    let sys = o.sys_realtime.ns();
    Some(vec![[sys, o.device.ns(), sys]])
}

fn extended(fd: i32) -> Option<Vec<PhcTriple>> {
    let mut o = PtpSysOffsetExtended {
        n_samples: READINGS as u32,
        clockid: libc::CLOCK_REALTIME,
        rsv: [0; 2],
        ts: [[PtpClockTime::default(); 3]; MAX_SAMPLES],
    };
    // SAFETY: the ioctl reads and writes a ptp_sys_offset_extended, which `o` is.
    if unsafe { libc::ioctl(fd, SYS_OFFSET_EXTENDED as _, &raw mut o) } < 0 {
        return None;
    }
    let n = (o.n_samples as usize).min(MAX_SAMPLES);
    Some(
        o.ts[..n]
            .iter()
            .map(|t| [t[0].ns(), t[1].ns(), t[2].ns()])
            .collect(),
    )
}

fn basic(fd: i32) -> Option<Vec<PhcTriple>> {
    let mut o = PtpSysOffset {
        n_samples: READINGS as u32,
        rsv: [0; 3],
        ts: [PtpClockTime::default(); 2 * MAX_SAMPLES + 1],
    };
    // SAFETY: the ioctl reads and writes a ptp_sys_offset, which `o` is.
    if unsafe { libc::ioctl(fd, SYS_OFFSET as _, &raw mut o) } < 0 {
        return None;
    }
    let n = (o.n_samples as usize).min(MAX_SAMPLES);
    Some(
        (0..n)
            .map(|i| [o.ts[2 * i].ns(), o.ts[2 * i + 1].ns(), o.ts[2 * i + 2].ns()])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // From linux/ptp_clock.h on x86-64.
        assert_eq!(GETCAPS, 0x8050_3d01);
        assert_eq!(SYS_OFFSET, 0x4340_3d05);
        assert_eq!(SYS_OFFSET_PRECISE, 0xc040_3d08);
        assert_eq!(SYS_OFFSET_EXTENDED, 0xc4c0_3d09);
    }

    #[test]
    fn what_is_not_a_phc_is_refused_with_its_name() {
        let e = Phc::open("/dev/null", false).err().expect("not a PHC");
        assert!(
            format!("{e:#}").contains("/dev/null is not a PTP hardware clock"),
            "{e:#}"
        );
        let e = Phc::open("lo", false).err().expect("lo has none");
        assert!(
            format!("{e:#}").contains("interface lo has no PTP hardware clock"),
            "{e:#}"
        );
    }
}
