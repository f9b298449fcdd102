//! `refclock PHC DEVICE:extpps`: a PPS signal wired to a pin of a NIC's clock, each edge
//! timestamped by the PHC (`PTP_EXTTS_REQUEST`) and read from its event queue, as
//! chronyd's PHC driver does it. The PHC need not be synchronised: it is read against
//! the system clock every `dpoll` and only maps each edge's stamp to system time, so the
//! pulse is as exact as the NIC's stamp and that mapping.
//!
//! On kernels before 6.7 every descriptor of a PHC reads from one queue, so an event may
//! reach the task of another `extpps` clock on the same PHC: every event read is handed
//! to each clock listening on that PHC and channel ([`dispatch`]).

use super::phc::{IOC_WRITE, Phc, PtpClockTime, ptp_ioc};
use anyhow::{Result, bail};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

#[repr(C)]
struct PtpExttsRequest {
    index: u32,
    flags: u32,
    rsv: [u32; 2],
}

#[repr(C)]
struct PtpPinDesc {
    name: [u8; 64],
    index: u32,
    func: u32,
    chan: u32,
    rsv: [u32; 5],
}

#[repr(C)]
#[derive(Default)]
struct PtpExttsEvent {
    t: PtpClockTime,
    index: u32,
    flags: u32,
    rsv: [u32; 2],
}

const EXTTS_REQUEST: u64 = ptp_ioc(IOC_WRITE, 2, size_of::<PtpExttsRequest>());
const PIN_SETFUNC: u64 = ptp_ioc(IOC_WRITE, 7, size_of::<PtpPinDesc>());
/// Linux 6.7+: per-descriptor event masks.
const MASK_CLEAR_ALL: u64 = ptp_ioc(0, 19, 0);
const MASK_EN_SINGLE: u64 = ptp_ioc(IOC_WRITE, 20, size_of::<u32>());
const ENABLE_FEATURE: u32 = 1;
const RISING_EDGE: u32 = 1 << 1;
const FALLING_EDGE: u32 = 1 << 2;
const PF_NONE: u32 = 0;
const PF_EXTTS: u32 = 1;

/// A PHC with external timestamping of one channel turned on; turned off when dropped.
pub struct PinEvents {
    /// The clock, also read against the system clock.
    pub phc: Phc,
    /// The PHC's device number (which clock an event is from).
    pub dev: u64,
    /// The channel whose events this clock takes.
    pub channel: u32,
    pin: i32,
}

impl PinEvents {
    /// Opens `device` for writing and has it timestamp `channel`'s rising edges (falling
    /// where `clear`), routing `pin` to that channel unless it is −1 (a fixed pin).
    pub fn enable(
        device: &str,
        nocrossts: bool,
        pin: i32,
        channel: u32,
        clear: bool,
    ) -> Result<Self> {
        let phc = Phc::open_for(device, nocrossts, true)?;
        let fd = phc.file.as_raw_fd();
        // SAFETY: stat is plain data, filled by fstat for an open descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `st` is a stat buffer of the right size.
        if unsafe { libc::fstat(fd, &raw mut st) } < 0 {
            bail!("fstat {}: {}", phc.path, std::io::Error::last_os_error());
        }
        let dev = st.st_rdev;
        let events = PinEvents {
            phc,
            dev,
            channel,
            pin,
        };
        let edge = if clear { FALLING_EDGE } else { RISING_EDGE };
        events.configure(PF_EXTTS, ENABLE_FEATURE | edge)?;
        // Only this channel's events on this descriptor, where the kernel can (6.7+);
        // older kernels share one queue, which `dispatch` deals with.
        // SAFETY: MASK_CLEAR_ALL takes no argument; MASK_EN_SINGLE reads a u32.
        unsafe {
            if libc::ioctl(fd, MASK_CLEAR_ALL as _) == 0 {
                libc::ioctl(fd, MASK_EN_SINGLE as _, &raw const events.channel);
            }
        }
        Ok(events)
    }

    fn configure(&self, func: u32, flags: u32) -> Result<()> {
        let fd = self.phc.file.as_raw_fd();
        if let Ok(index) = u32::try_from(self.pin) {
            let desc = PtpPinDesc {
                name: [0; 64],
                index,
                func,
                chan: self.channel,
                rsv: [0; 5],
            };
            // SAFETY: PTP_PIN_SETFUNC reads a ptp_pin_desc, which `desc` is.
            if unsafe { libc::ioctl(fd, PIN_SETFUNC as _, &raw const desc) } < 0 {
                bail!(
                    "Could not enable external PHC timestamping on {}: routing pin {} to \
                     channel {} (PTP_PIN_SETFUNC): {}; use pin=-1 where the channel's pin is \
                     fixed",
                    self.phc.path,
                    self.pin,
                    self.channel,
                    std::io::Error::last_os_error()
                );
            }
        }
        let req = PtpExttsRequest {
            index: self.channel,
            flags,
            rsv: [0; 2],
        };
        // SAFETY: PTP_EXTTS_REQUEST reads a ptp_extts_request, which `req` is.
        if unsafe { libc::ioctl(fd, EXTTS_REQUEST as _, &raw const req) } < 0 {
            bail!(
                "Could not enable external PHC timestamping on {} channel {} \
                 (PTP_EXTTS_REQUEST): {}",
                self.phc.path,
                self.channel,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// The next event in the PHC's queue: (channel, PHC time in ns); `None` when the
    /// queue is empty (the read would block: a PHC ignores `O_NONBLOCK`, so the queue is
    /// polled first).
    pub fn read(&self) -> Option<(u32, i128)> {
        let fd = self.phc.file.as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no waiting.
        if unsafe { libc::poll(&raw mut pfd, 1, 0) } != 1 || pfd.revents != libc::POLLIN {
            return None;
        }
        let mut ev = PtpExttsEvent::default();
        // SAFETY: reading at most size_of::<PtpExttsEvent>() bytes into `ev`.
        let n = unsafe { libc::read(fd, (&raw mut ev).cast(), size_of::<PtpExttsEvent>()) };
        (usize::try_from(n).ok() == Some(size_of::<PtpExttsEvent>())).then(|| (ev.index, ev.t.ns()))
    }
}

impl AsRawFd for PinEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.phc.file.as_raw_fd()
    }
}

impl Drop for PinEvents {
    fn drop(&mut self) {
        // As chronyd at exit: the channel's timestamping off, the pin back to no function.
        let _ = self.configure(PF_NONE, 0);
    }
}

/// The `extpps` clocks listening: (PHC device number, channel, where its events go).
static LISTENERS: Mutex<Vec<(u64, u32, UnboundedSender<i128>)>> = Mutex::new(Vec::new());

/// Registers a clock for the events of (`dev`, `channel`).
pub fn listen(dev: u64, channel: u32) -> UnboundedReceiver<i128> {
    let (tx, rx) = unbounded_channel();
    let mut l = LISTENERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    l.retain(|(_, _, t)| !t.is_closed());
    l.push((dev, channel, tx));
    rx
}

/// Hands an event read from PHC `dev` to every clock listening on its channel.
pub fn dispatch(dev: u64, channel: u32, phc_ns: i128) {
    let l = LISTENERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (d, c, tx) in l.iter() {
        if (*d, *c) == (dev, channel) {
            let _ = tx.send(phc_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_and_layouts_are_the_kernels() {
        // From linux/ptp_clock.h on x86-64.
        assert_eq!(size_of::<PtpExttsRequest>(), 16);
        assert_eq!(size_of::<PtpPinDesc>(), 96);
        assert_eq!(size_of::<PtpExttsEvent>(), 32);
        assert_eq!(EXTTS_REQUEST, 0x4010_3d02);
        assert_eq!(PIN_SETFUNC, 0x4060_3d07);
        assert_eq!(MASK_CLEAR_ALL, 0x3d13);
        assert_eq!(MASK_EN_SINGLE, 0x4004_3d14);
    }

    #[test]
    fn events_reach_every_clock_on_their_phc_and_channel_only() {
        let mut a = listen(7, 0);
        let mut b = listen(7, 0);
        let mut other_channel = listen(7, 1);
        let mut other_phc = listen(8, 0);
        dispatch(7, 0, 42);
        assert_eq!((a.try_recv().ok(), b.try_recv().ok()), (Some(42), Some(42)));
        assert!(other_channel.try_recv().is_err());
        assert!(other_phc.try_recv().is_err());
    }

    #[test]
    fn what_is_not_a_phc_is_refused() {
        let e = PinEvents::enable("/dev/null", false, 0, 0, false)
            .err()
            .expect("not a PHC");
        assert!(
            format!("{e:#}").contains("not a PTP hardware clock"),
            "{e:#}"
        );
    }
}
