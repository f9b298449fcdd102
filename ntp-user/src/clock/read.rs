//! Reading the system clocks. Nothing here adjusts a clock.

use anyhow::{Context, Result, bail};
use nix::time::{ClockId, clock_gettime};
use ntp_proto::clock::{KernelFrequency, RealtimeClock};

/// Nanoseconds on `clock`.
fn now_ns(clock: ClockId) -> Result<u64> {
    let ts = clock_gettime(clock).with_context(|| format!("clock_gettime({clock:?})"))?;
    Ok(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}

/// `CLOCK_TAI` in ns: the clock the XDP program timestamps with.
pub fn tai_ns() -> Result<u64> {
    now_ns(ClockId::CLOCK_TAI)
}

/// `CLOCK_MONOTONIC` in ns: runs at the system clock's rate, but is never stepped.
pub fn monotonic_ns() -> Result<u64> {
    now_ns(ClockId::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in ns since the Unix epoch.
pub fn realtime_ns() -> Result<u64> {
    now_ns(ClockId::CLOCK_REALTIME)
}

/// `CLOCK_TAI` in ns with the kernel's TAI offset in force at that reading: the offset is
/// read before and after the clock, again until both agree, so a leap second or
/// `ADJ_TAI` between the calls cannot pair a reading with the wrong offset.
pub fn tai_with_offset() -> Result<(u64, i32)> {
    let mut before = kernel_time()?.tai_offset_s;
    loop {
        let tai = tai_ns()?;
        let after = kernel_time()?.tai_offset_s;
        if after == before {
            return Ok((tai, after));
        }
        before = after;
    }
}

/// The kernel's view of the clock discipline, read without changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelTime {
    /// TAI - UTC in seconds (`CLOCK_TAI` = `CLOCK_REALTIME` + this).
    pub tai_offset_s: i32,
    /// Whether the kernel considers the clock synchronized (`STA_UNSYNC` clear).
    pub synchronized: bool,
    /// The tick and frequency offset in force (what an earlier daemon left).
    pub frequency: KernelFrequency,
}

/// Reads the TAI offset and sync status with `adjtimex(modes = 0)`, which changes nothing.
pub fn kernel_time() -> Result<KernelTime> {
    // SAFETY: timex is plain data, for which all zeroes is a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: a valid, initialized timex; modes = 0 makes the call read-only.
    let state = unsafe { libc::adjtimex(&raw mut tx) };
    if state < 0 {
        bail!("adjtimex(read): {}", std::io::Error::last_os_error());
    }
    Ok(KernelTime {
        tai_offset_s: tx.tai,
        synchronized: tx.status & libc::STA_UNSYNC == 0,
        frequency: KernelFrequency {
            tick_us: tx.tick,
            freq_scaled: tx.freq,
        },
    })
}

/// `CLOCK_REALTIME` for the steering code, which cannot go on without it: a failed read
/// (only possible if the kernel lost the clock) ends the daemon with a message saying so.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRealtime;

impl RealtimeClock for SystemRealtime {
    fn now_ns(&self) -> u64 {
        match realtime_ns() {
            Ok(t) => t,
            Err(e) => panic!("the system clock cannot be read: {e:#}"),
        }
    }
}

/// The precision exponent to announce: log2 of the smallest step seen between readings of
/// the system clock (reading overhead or resolution, whichever is larger), rounded up.
pub fn measure_precision() -> Result<i8> {
    let mut best = u64::MAX;
    let mut last = realtime_ns()?;
    for _ in 0..1000 {
        let t = realtime_ns()?;
        if t > last {
            best = best.min(t - last);
        }
        last = t;
    }
    Ok(precision_exponent(best))
}

/// `log2(step_ns` * 1e-9) rounded up, within [-30, 0].
pub fn precision_exponent(step_ns: u64) -> i8 {
    if step_ns == 0 || step_ns == u64::MAX {
        return -20;
    }
    let secs = step_ns as f64 * 1e-9;
    (secs.log2().ceil() as i32).clamp(-30, 0) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_exponent_rounds_up() {
        assert_eq!(precision_exponent(20), -25); // 2^-25 s = 29.8 ns >= 20 ns
        assert_eq!(precision_exponent(30), -24);
        assert_eq!(precision_exponent(1_000), -19);
        assert_eq!(precision_exponent(1), -29);
        assert_eq!(precision_exponent(u64::MAX), -20);
    }

    #[test]
    fn tai_and_realtime_differ_by_the_kernel_tai_offset() {
        let k = kernel_time().unwrap();
        let tai = tai_ns().unwrap();
        let real = realtime_ns().unwrap();
        let diff = tai as i64 - real as i64 - k.tai_offset_s as i64 * 1_000_000_000;
        assert!(
            diff.abs() < 50_000_000,
            "TAI - REALTIME - offset = {diff} ns"
        );
    }
}
