//! Steering the real system clock through adjtimex, adjtime and `clock_settime`: the
//! daemon's [`KernelClock`].
//!
//! Only `ntpxd` without `-x` uses this; no test runs it (the machines here must never have
//! their clock changed). What is asked of the kernel is decided in `ntp_proto::clock` and
//! by the pure functions here, which are unit-tested; the syscalls are a few lines each.

use anyhow::{Result, bail};
use ntp_proto::clock::{ClockError, KernelClock, KernelFrequency, RealtimeClock};
use tracing::warn;

/// `timex.status` bits to set for the synchronization state: `STA_UNSYNC` cleared while
/// synchronized (which also lets the kernel's 11-minute mode copy the time to the RTC,
/// `rtcsync`), and the leap second to insert or delete at the end of the day.
pub fn status_bits(current: i32, synchronized: bool, leap: u8) -> i32 {
    let mut s = current & !(libc::STA_UNSYNC | libc::STA_INS | libc::STA_DEL);
    if !synchronized {
        s |= libc::STA_UNSYNC;
    }
    match leap {
        1 => s |= libc::STA_INS,
        2 => s |= libc::STA_DEL,
        _ => {}
    }
    s
}

/// Splits an offset into the `timeval` adjtime takes (microseconds, normalized).
pub fn offset_to_timeval(offset: f64) -> libc::timeval {
    let us = (offset * 1e6).round() as i64;
    libc::timeval {
        tv_sec: us.div_euclid(1_000_000) as libc::time_t,
        tv_usec: us.rem_euclid(1_000_000) as libc::suseconds_t,
    }
}

fn timeval_to_offset(tv: &libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6
}

/// The system clock, steered for real.
#[derive(Default)]
pub struct SystemClock;

impl SystemClock {
    /// Takes control of the clock: an adjtime slew left by another daemon would fight ours.
    pub fn take_control() -> Self {
        let mut c = SystemClock;
        if let Err(e) = c.slew(0.0) {
            warn!("Could not cancel a pending adjtime slew: {e:#}");
        }
        c
    }

    /// Sets the tick and the frequency offset.
    pub fn set_rate(&mut self, f: KernelFrequency) -> Result<()> {
        // SAFETY: a zeroed timex is a valid value; only the fields `modes` names are set.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        tx.modes = libc::ADJ_TICK | libc::ADJ_FREQUENCY;
        tx.tick = f.tick_us as libc::c_long;
        tx.freq = f.freq_scaled as libc::c_long;
        adjtimex(&mut tx)
    }

    /// Starts an adjtime slew of `offset` seconds (the kernel slews at 500 ppm), replacing
    /// one in progress; returns what was left of that one. ntpxd slews by frequency
    /// instead and uses this only to cancel a slew someone else left.
    pub fn slew(&mut self, offset: f64) -> Result<f64> {
        let delta = offset_to_timeval(offset);
        // SAFETY: timeval is plain data, for which all zeroes is a valid value.
        let mut old: libc::timeval = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to valid timevals on this stack frame.
        if unsafe { libc::adjtime(&raw const delta, &raw mut old) } != 0 {
            bail!("adjtime: {}", std::io::Error::last_os_error());
        }
        Ok(timeval_to_offset(&old))
    }

    /// Steps the clock by `offset` seconds, cancelling any slew first.
    pub fn step(&mut self, offset: f64) -> Result<()> {
        self.slew(0.0)?;
        match step_relative(offset) {
            Ok(()) => Ok(()),
            // Kernels before 2.6.39 lack ADJ_SETOFFSET: read-then-set loses the time
            // between the two calls, but is the only way left.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => step_absolute(offset),
            Err(e) => bail!("adjtimex(ADJ_SETOFFSET): {e}"),
        }
    }

    /// Sets the kernel's TAI-UTC offset (`CLOCK_TAI` = `CLOCK_REALTIME` + offset).
    pub fn set_tai_offset(&mut self, offset: i32) -> Result<()> {
        // SAFETY: zeroed timex with only the fields named by `modes` set.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        tx.modes = libc::ADJ_TAI;
        tx.constant = offset as libc::c_long;
        adjtimex(&mut tx)
    }

    /// Publishes the synchronization state (and leap second) to the kernel.
    pub fn set_status(
        &mut self,
        synchronized: bool,
        leap: u8,
        max_error: f64,
        est_error: f64,
    ) -> Result<()> {
        // SAFETY: zeroed timex; read first so unrelated status bits are kept.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        adjtimex(&mut tx)?;
        let status = status_bits(tx.status, synchronized, leap);
        // SAFETY: as above, a zeroed timex with only the fields `modes` names set.
        let mut set: libc::timex = unsafe { std::mem::zeroed() };
        set.modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
        set.status = status;
        set.maxerror = (max_error * 1e6).clamp(0.0, 16e6) as libc::c_long;
        set.esterror = (est_error * 1e6).clamp(0.0, 16e6) as libc::c_long;
        adjtimex(&mut set)
    }
}

impl RealtimeClock for SystemClock {
    fn now_ns(&self) -> u64 {
        super::read::SystemRealtime.now_ns()
    }
}

/// Logs a failed kernel call once, in chrony's words, and hands it to the steering code.
fn report(call: &'static str, what: &str, r: Result<()>) -> Result<(), ClockError> {
    r.map_err(|e| {
        warn!("Could not {what}: {e:#}");
        ClockError {
            call,
            reason: format!("{e:#}"),
        }
    })
}

impl KernelClock for SystemClock {
    fn set_frequency(&mut self, f: KernelFrequency) -> Result<(), ClockError> {
        let r = self.set_rate(f);
        report(
            "adjtimex(ADJ_TICK|ADJ_FREQUENCY)",
            "set the clock frequency",
            r,
        )
    }
    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        let r = SystemClock::step(self, offset);
        report(
            "adjtimex(ADJ_SETOFFSET)",
            &format!("step the clock by {offset:.6} s"),
            r,
        )
    }
    fn set_sync_status(
        &mut self,
        synchronized: bool,
        leap: u8,
        max_error: f64,
        est_error: f64,
    ) -> Result<(), ClockError> {
        let r = self.set_status(synchronized, leap, max_error, est_error);
        report(
            "adjtimex(ADJ_STATUS)",
            "update the kernel's clock status",
            r,
        )
    }
}

fn adjtimex(tx: &mut libc::timex) -> Result<()> {
    // SAFETY: tx is a valid, initialized timex.
    if unsafe { libc::adjtimex(tx) } < 0 {
        bail!("adjtimex: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Adds `offset` seconds to the clock in one call, so no time passes between reading the
/// clock and setting it (chrony does the same).
fn step_relative(offset: f64) -> std::io::Result<()> {
    let ns = (offset * 1e9).round() as i64;
    // SAFETY: zeroed timex with only the fields named by `modes` set.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
    // The kernel wants the nanoseconds non-negative and below a second.
    tx.time.tv_sec = ns.div_euclid(1_000_000_000) as libc::time_t;
    tx.time.tv_usec = ns.rem_euclid(1_000_000_000) as libc::suseconds_t;
    // SAFETY: valid timex on this stack frame.
    if unsafe { libc::adjtimex(&raw mut tx) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the clock to its reading plus `offset` seconds.
fn step_absolute(offset: f64) -> Result<()> {
    let now = i128::from(super::read::realtime_ns()?);
    let target = now + (offset * 1e9).round() as i128;
    if target < 0 {
        bail!("refusing to step the clock before 1970");
    }
    let ts = libc::timespec {
        tv_sec: (target / 1_000_000_000) as libc::time_t,
        tv_nsec: (target % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &raw const ts) } != 0 {
        bail!("clock_settime: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_tracks_sync_and_leap() {
        let s = status_bits(libc::STA_UNSYNC | libc::STA_PLL, true, 1);
        assert_eq!(s & libc::STA_UNSYNC, 0);
        assert_ne!(s & libc::STA_INS, 0);
        assert_ne!(s & libc::STA_PLL, 0, "unrelated bits are kept");
        let s = status_bits(libc::STA_INS, false, 0);
        assert_ne!(s & libc::STA_UNSYNC, 0);
        assert_eq!(s & libc::STA_INS, 0);
        assert_ne!(status_bits(0, true, 2) & libc::STA_DEL, 0);
    }

    #[test]
    fn offsets_become_normalized_timevals() {
        let tv = offset_to_timeval(-0.25);
        assert_eq!((tv.tv_sec, tv.tv_usec), (-1, 750_000));
        assert!((timeval_to_offset(&tv) + 0.25).abs() < 1e-9);
        let tv = offset_to_timeval(1.5);
        assert_eq!((tv.tv_sec, tv.tv_usec), (1, 500_000));
    }
}
