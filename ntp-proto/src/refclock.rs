//! Reference clocks as chrony handles them, without IO: a driver's readings (the
//! reference's time at a system time, or a pulse) are checked and collected in a median
//! filter; at the end of every poll the filter gives the source statistics one sample.
//! The daemon reads the drivers (SHM, SOCK, PHC) and hands the readings to the engine.

use crate::config::refclocks::RefclockConfig;
use crate::sync::filter::SampleFilter;
use crate::sync::sample::Sample;

/// How far (as a share of the pulse interval) a pulse may be from the sample of the
/// reference clock it is locked to (chrony's `PPS_LOCK_LIMIT`).
pub const PPS_LOCK_LIMIT: f64 = 0.4;

/// The largest offset a reading may claim, seconds (about 68 years: a reading beyond it
/// is garbage, not time).
const MAX_OFFSET: f64 = 2_147_483_647.0;

/// One reading from a driver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading {
    /// The reference's time at system time `sys_ns` (`CLOCK_REALTIME`, ns):
    /// `offset` = reference − system, seconds; `leap` 0 none, 1 insert, 2 delete.
    Time {
        /// System time of the reading.
        sys_ns: u64,
        /// Reference minus system time, seconds.
        offset: f64,
        /// Leap second the reference announces.
        leap: u8,
    },
    /// A pulse seen at system time `sys_ns`; `second` is where in its interval the
    /// system clock was at the pulse (system − reference, seconds), only known modulo
    /// the pulse interval.
    Pulse {
        /// System time of the pulse.
        sys_ns: u64,
        /// System minus reference time, modulo the pulse interval.
        second: f64,
        /// The error of the pulse's system time beyond the clock's precision (a PHC
        /// stamp mapped through its readings), seconds: added to its dispersion.
        err: f64,
    },
}

/// Why a reading was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadingRefused {
    /// Not a finite offset within range.
    Insane,
    /// Taken in the future, or more than two polls ago.
    Age,
    /// A leap value other than 0, 1 or 2.
    Leap,
    /// Not newer than the last reading.
    Order,
    /// A pulse with nothing to number it: the lock clock has no recent sample, or the
    /// daemon is not synchronised well enough to tell which second it marks.
    NoLock,
    /// A pulse too far from its lock clock's sample.
    LockLimit,
    /// A pulse outside the `width` window.
    Edge,
    /// A TAI reading with no leap table to tell TAI - UTC (`tai`).
    TaiUnknown,
    /// Taken within [`LEAP_SECOND_CLOSE`] of a leap second, where a reference may not
    /// have applied it yet, or the system clock repeats a second (chrony drops these).
    NearLeap,
}

/// How near a leap second readings are dropped, seconds (chrony's figure).
pub const LEAP_SECOND_CLOSE: f64 = 5.0;

/// Whether Unix time `t` is within [`LEAP_SECOND_CLOSE`] of a leap second: one of the
/// leap table's, or (`announced`) the one due at the end of the UTC day.
pub fn leap_second_close(leaps: &[crate::leaptz::Leap], announced: bool, t: f64) -> bool {
    let near = |at: f64| t >= at - LEAP_SECOND_CLOSE && t < at + LEAP_SECOND_CLOSE;
    let midnight = (t / 86_400.0).round() * 86_400.0;
    leaps.iter().any(|l| near(l.at as f64)) || (announced && near(midnight))
}

/// A TAI clock's `offset` (reference − system, seconds) at system time `sys_s` (Unix
/// seconds) as a UTC clock's: less TAI - UTC at the reference's time, found as chronyd
/// finds it (from the reference's TAI time, then again at the UTC time that gives, so a
/// reading next to a leap second takes the right side). `None` without a leap table.
pub fn tai_to_utc_offset(leaps: &[crate::leaptz::Leap], sys_s: f64, offset: f64) -> Option<f64> {
    if leaps.is_empty() {
        return None;
    }
    let tai = sys_s + offset;
    let first = crate::leaptz::tai_offset(leaps, tai.floor() as i64);
    let utc = tai - f64::from(first);
    let tai_utc = crate::leaptz::tai_offset(leaps, utc.floor() as i64);
    Some(offset - f64::from(tai_utc))
}

/// A reference clock's state between polls.
#[derive(Clone, Debug)]
pub struct Refclock {
    /// Its configuration line.
    pub config: RefclockConfig,
    /// Its reference id (configured, or the driver's name and index).
    pub refid: [u8; 4],
    /// The readings of the current poll.
    pub(crate) filter: SampleFilter,
    /// The dispersion of one reading: the larger of the system's and the configured
    /// precision.
    pub(crate) precision: f64,
    /// Driver reads in the current poll.
    driver_polled: u32,
    /// Readings taken in the current poll (reachability).
    reached: u32,
    /// The leap second of the latest reading.
    pub(crate) leap: u8,
    /// Whether the latest reading was a pulse.
    pub(crate) pps_active: bool,
    /// Readings taken, ever.
    pub readings: u64,
    /// Readings refused, ever.
    pub refused: u64,
}

impl Refclock {
    /// The reference clock of `config`, the `index`th refclock line (for its default
    /// refid), on a system clock of `system_precision` seconds.
    pub fn new(config: RefclockConfig, index: usize, system_precision: f64) -> Self {
        let precision = system_precision.max(config.precision);
        let refid = config
            .refid
            .unwrap_or_else(|| default_refid(config.driver.name(), index));
        let filter = SampleFilter::new(1, config.filter, config.max_dispersion, 0.6, precision);
        Refclock {
            config,
            refid,
            filter,
            precision,
            driver_polled: 0,
            reached: 0,
            leap: 0,
            pps_active: false,
            readings: 0,
            refused: 0,
        }
    }

    /// The reference id as chronyc prints it.
    pub fn name(&self) -> String {
        refid_name(self.refid)
    }

    /// Seconds between driver reads (only meaningful for polled drivers).
    pub fn driver_interval(&self) -> f64 {
        2f64.powi(i32::from(self.config.dpoll))
    }

    /// Seconds between samples given to the statistics.
    pub fn poll_interval(&self) -> f64 {
        2f64.powi(i32::from(self.config.poll))
    }

    /// Counts a tick of the refclock's timer (a driver read for polled drivers, the
    /// poll itself for the others); true when the poll is complete.
    pub fn tick(&mut self) -> bool {
        if self.config.driver.is_polled() {
            self.driver_polled += 1;
            let reads = 1u32 << (self.config.poll - self.config.dpoll).clamp(0, 31);
            if self.driver_polled < reads {
                return false;
            }
        }
        self.driver_polled = 0;
        true
    }

    /// Ends a poll: whether any reading was taken in it (reachability), and the filter's
    /// combined sample if it gives one.
    pub fn end_poll(&mut self) -> (bool, Option<Sample>) {
        let reached = self.reached > 0;
        self.reached = 0;
        (reached, self.filter.combine())
    }

    /// Takes a checked sample into the filter.
    pub(crate) fn accumulate(&mut self, sample: Sample) -> Result<(), ReadingRefused> {
        self.reached += 1;
        if !self.filter.add(sample) {
            return Err(ReadingRefused::Order);
        }
        self.readings += 1;
        Ok(())
    }
}

/// The sample of a time reading: `local` the local (NTP clock) time of the reading,
/// `correction` what the NTP clock was ahead of the system clock then.
pub fn time_sample(
    rc: &Refclock,
    local: f64,
    offset: f64,
    correction: f64,
    leap: u8,
) -> Result<Sample, ReadingRefused> {
    if !offset.is_finite() || offset.abs() > MAX_OFFSET {
        return Err(ReadingRefused::Insane);
    }
    if leap > 2 {
        return Err(ReadingRefused::Leap);
    }
    Ok(sample(
        rc,
        local,
        offset - correction + rc.config.offset,
        leap,
    ))
}

fn sample(rc: &Refclock, local: f64, offset: f64, leap: u8) -> Sample {
    Sample {
        time: local,
        offset,
        delay: rc.config.delay,
        dispersion: rc.precision,
        root_delay: rc.config.delay,
        root_dispersion: rc.precision,
        stratum: rc.config.stratum,
        leap,
    }
}

/// A pulse's offset (reference − NTP clock) within the pulse interval, centred on 0:
/// `second` is system − reference modulo the interval, `correction` as for
/// [`time_sample`].
pub fn pulse_offset(rc: &Refclock, second: f64, correction: f64) -> f64 {
    let rate = f64::from(rc.config.rate.max(1));
    let mut offset = -(second + correction) + rc.config.offset;
    offset -= (offset * rate).trunc() / rate;
    if offset < -0.5 / rate {
        offset += 1.0 / rate;
    } else if offset >= 0.5 / rate {
        offset -= 1.0 / rate;
    }
    offset
}

/// The sample of a pulse numbered by `lock`'s latest sample (`lock_dispersion`: that
/// clock's typical dispersion): the pulse is put in the interval nearest that sample.
pub fn locked_pulse_sample(
    rc: &Refclock,
    local: f64,
    offset: f64,
    lock: &Sample,
    lock_dispersion: f64,
    lock_leap: u8,
) -> Result<Sample, ReadingRefused> {
    let rate = f64::from(rc.config.rate.max(1));
    if (local - lock.time).abs() >= f64::from(rc.config.max_lock_age) / rate {
        return Err(ReadingRefused::NoLock);
    }
    let offset = offset + ((lock.offset - offset) * rate).round() / rate;
    let root_dispersion = lock.root_dispersion + lock_dispersion;
    if (lock.offset - offset).abs() + root_dispersion + rc.precision > PPS_LOCK_LIMIT / rate {
        return Err(ReadingRefused::LockLimit);
    }
    check_edge(rc, lock.offset - offset, 0.0)?;
    Ok(sample(rc, local, offset, lock_leap))
}

/// The sample of a pulse numbered by the daemon's own time, which must be synchronised
/// (or serving its `local` reference) to within half the pulse interval: `reference` is
/// what the server says now, its leap indicator and root distance; the pulse carries
/// that leap indicator on.
pub fn own_pulse_sample(
    rc: &Refclock,
    local: f64,
    offset: f64,
    reference: (u8, f64),
) -> Result<Sample, ReadingRefused> {
    let rate = f64::from(rc.config.rate.max(1));
    let (leap, distance) = reference;
    if leap > 2 || distance >= 0.5 / rate {
        return Err(ReadingRefused::NoLock);
    }
    check_edge(rc, offset, distance)?;
    Ok(sample(rc, local, offset, leap))
}

/// chrony's `width` check: a pulse (or its distance) too near the other edge of the
/// pulse is the wrong edge.
fn check_edge(rc: &Refclock, offset: f64, distance: f64) -> Result<(), ReadingRefused> {
    let width = rc.config.width;
    if width <= 0.0 {
        return Ok(());
    }
    let rate = f64::from(rc.config.rate.max(1));
    let max_error = 0.5 * width.min(1.0 / rate - width);
    if offset.abs() > max_error || distance > max_error {
        return Err(ReadingRefused::Edge);
    }
    Ok(())
}

/// chrony's default refid: the driver's first three letters and the refclock's index
/// (two digits from the tenth on).
pub fn default_refid(driver: &str, index: usize) -> [u8; 4] {
    let mut id = [0u8; 4];
    for (d, s) in id.iter_mut().zip(driver.bytes().take(3)) {
        *d = s;
    }
    id[3] = b'0' + (index % 10) as u8;
    if index >= 10 {
        id[2] = b'0' + ((index / 10) % 10) as u8;
    }
    id
}

/// A refid as text: its characters up to the first zero byte.
pub fn refid_name(refid: [u8; 4]) -> String {
    refid
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| {
            if b.is_ascii_graphic() {
                *b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tai_reference_reads_as_utc_on_either_side_of_a_leap_second() {
        use crate::leaptz::Leap;
        // 2017-01-01: TAI - UTC from 36 to 37.
        let at = 1_483_228_800i64;
        let leaps = [
            Leap {
                at: at - 10 * 86_400 * 365,
                tai_offset: 36,
            },
            Leap { at, tai_offset: 37 },
        ];
        let sys = at as f64 - 100.0;
        // A TAI clock 36 s ahead of UTC before the leap, 37 after; the system in UTC.
        let before = tai_to_utc_offset(&leaps, sys, 36.000_2).unwrap();
        assert!((before - 0.000_2).abs() < 1e-9, "{before}");
        let after = tai_to_utc_offset(&leaps, at as f64 + 100.0, 37.000_2).unwrap();
        assert!((after - 0.000_2).abs() < 1e-9, "{after}");
        // Half a second into the first UTC second after the leap.
        let edge = tai_to_utc_offset(&leaps, at as f64 + 0.5, 37.0).unwrap();
        assert!(edge.abs() < 1e-9, "{edge}");
        assert_eq!(tai_to_utc_offset(&[], sys, 37.0), None);
        // Just before the leap, a TAI reading already past it: one lookup would say 37
        // and read the reference a second behind; the second lookup says 36.
        let close = tai_to_utc_offset(&leaps, at as f64 - 10.0, 36.0).unwrap();
        assert!(close.abs() < 1e-9, "{close}");
    }

    #[test]
    fn readings_near_a_leap_second_are_told() {
        use crate::leaptz::Leap;
        let at = 1_483_228_800i64;
        let leaps = [Leap { at, tai_offset: 37 }];
        let t = at as f64;
        assert!(leap_second_close(&leaps, false, t - 4.9));
        assert!(leap_second_close(&leaps, false, t + 4.9));
        assert!(!leap_second_close(&leaps, false, t - 5.1));
        assert!(!leap_second_close(&leaps, false, t + 5.0));
        // Without a table, the leap the sources announce for midnight.
        let other_midnight = t + 86_400.0 * 30.0;
        assert!(!leap_second_close(&leaps, false, other_midnight - 1.0));
        assert!(leap_second_close(&[], true, other_midnight - 1.0));
        assert!(!leap_second_close(&[], true, other_midnight - 3600.0));
    }
    use crate::config::refclocks::RefclockDriver;

    fn config(driver: RefclockDriver) -> RefclockConfig {
        RefclockConfig {
            poll: 2,
            ..RefclockConfig::new(driver, 1)
        }
    }

    fn shm() -> Refclock {
        Refclock::new(
            config(RefclockDriver::Shm {
                segment: 0,
                perm: 0o600,
            }),
            0,
            1e-7,
        )
    }

    #[test]
    fn default_refids_are_chronys() {
        assert_eq!(&default_refid("SHM", 0), b"SHM0");
        assert_eq!(&default_refid("SOCK", 1), b"SOC1");
        assert_eq!(&default_refid("PHC", 12), b"PH12");
        assert_eq!(refid_name(*b"GPS\0"), "GPS");
    }

    #[test]
    fn a_poll_ends_after_two_to_the_poll_minus_dpoll_reads() {
        let mut rc = shm();
        let ends: Vec<bool> = (0..8).map(|_| rc.tick()).collect();
        assert_eq!(ends, [false, false, false, true, false, false, false, true]);
        let mut sock = Refclock::new(
            config(RefclockDriver::Sock {
                path: "/run/x.sock".into(),
            }),
            1,
            1e-7,
        );
        assert!(sock.tick(), "an unpolled driver's timer is the poll");
    }

    #[test]
    fn time_readings_become_samples_with_the_configured_offset_and_delay() {
        let mut rc = shm();
        rc.config.offset = 0.25;
        rc.config.delay = 1e-3;
        let s = time_sample(&rc, 100.0, 0.5, 0.125, 1).expect("sane");
        assert_eq!(
            (s.time, s.offset, s.delay),
            (100.0, 0.5 - 0.125 + 0.25, 1e-3)
        );
        assert_eq!((s.dispersion, s.stratum, s.leap), (1e-7, 0, 1));
        assert_eq!(
            time_sample(&rc, 1.0, f64::NAN, 0.0, 0),
            Err(ReadingRefused::Insane)
        );
        assert_eq!(
            time_sample(&rc, 1.0, 0.0, 0.0, 3),
            Err(ReadingRefused::Leap)
        );
    }

    #[test]
    fn the_filter_gives_the_median_of_a_poll_and_reachability() {
        let mut rc = shm();
        for (i, off) in [1e-6, 2e-6, 100e-6, 3e-6].iter().enumerate() {
            let s = time_sample(&rc, 10.0 + i as f64, *off, 0.0, 0).expect("sane");
            rc.accumulate(s).expect("in order");
        }
        let late = time_sample(&rc, 12.5, 0.0, 0.0, 0).expect("sane");
        assert_eq!(rc.accumulate(late), Err(ReadingRefused::Order));
        let (reached, s) = rc.end_poll();
        let s = s.expect("combined");
        assert!(reached);
        assert!(
            s.offset < 10e-6,
            "the outlier is not in the median: {}",
            s.offset
        );
        assert_eq!(rc.end_poll(), (false, None));
    }

    #[test]
    fn pulses_are_centred_and_numbered_by_their_lock() {
        let mut rc = shm();
        // System 0.3 s past the pulse: the reference is 0.3 s ahead... or 0.7 behind.
        assert!((pulse_offset(&rc, 0.3, 0.0) + 0.3).abs() < 1e-12);
        assert!((pulse_offset(&rc, 0.7, 0.0) - 0.3).abs() < 1e-12);
        rc.config.rate = 4;
        assert!((pulse_offset(&rc, 0.3, 0.0) - (-0.05)).abs() < 1e-12);
        rc.config.rate = 1;
        // The lock says the reference is 2.0000010 s ahead; the pulse says 1 µs mod 1 s.
        let lock = Sample {
            time: 100.0,
            offset: 2.0 + 1.2e-6,
            delay: 0.0,
            dispersion: 1e-4,
            root_delay: 0.0,
            root_dispersion: 1e-4,
            stratum: 0,
            leap: 1,
        };
        let s = locked_pulse_sample(&rc, 100.5, 1e-6, &lock, 1e-4, 1).expect("locked");
        assert!((s.offset - (2.0 + 1e-6)).abs() < 1e-12, "{}", s.offset);
        assert_eq!(s.leap, 1);
        assert_eq!(
            locked_pulse_sample(&rc, 103.0, 1e-6, &lock, 1e-4, 0),
            Err(ReadingRefused::NoLock),
            "older than maxlockage pulses"
        );
        let far = Sample {
            offset: 2.45,
            ..lock
        };
        assert_eq!(
            locked_pulse_sample(&rc, 100.5, 0.0, &far, 1e-4, 0),
            Err(ReadingRefused::LockLimit)
        );
        let s = own_pulse_sample(&rc, 1.0, 1e-6, (1, 0.01)).expect("numbered");
        assert_eq!(s.leap, 1, "the announced leap second is carried on");
        assert_eq!(
            own_pulse_sample(&rc, 1.0, 1e-6, (0, 0.6)),
            Err(ReadingRefused::NoLock)
        );
        assert_eq!(
            own_pulse_sample(&rc, 1.0, 1e-6, (3, 0.0)),
            Err(ReadingRefused::NoLock),
            "unsynchronised"
        );
        rc.config.width = 0.1;
        assert_eq!(
            own_pulse_sample(&rc, 1.0, 0.06, (0, 0.01)),
            Err(ReadingRefused::Edge)
        );
    }
}
