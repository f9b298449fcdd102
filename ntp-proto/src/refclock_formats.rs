//! What reference clock drivers read, decoded without IO: the NTP shared-memory segment
//! (gpsd, ntpshm writers, phc2sys), chrony's SOCK sample, and the PHC-versus-system clock
//! readings of the `PTP_SYS_OFFSET*` ioctls.

use crate::refclock::Reading;

/// Key of shared-memory segment 0 (`"NTP0"`); segment N is this plus N.
pub const SHM_KEY: i32 = 0x4e54_5030;
/// chrony's SOCK protocol identifier (`"SOCK"`).
pub const SOCK_MAGIC: i32 = 0x534f_434b;
/// Length of a SOCK sample on a 64-bit system: a timeval, a double and four ints.
pub const SOCK_SAMPLE_LEN: usize = 40;

const NS: i128 = 1_000_000_000;

/// The NTP shared-memory segment (`struct shmTime` of ntpd, gpsd and chrony), laid out
/// as on 64-bit Linux: the daemon reads the segment into it, writers in tests fill it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShmFields {
    /// 0: use when valid; 1: use when valid and `count` did not change while reading.
    pub mode: i32,
    /// Bumped by the writer around each update (mode 1).
    pub count: i32,
    /// The reference's time, seconds.
    pub clock_sec: i64,
    /// The reference's time, microseconds.
    pub clock_usec: i32,
    /// The system time the reference's time was taken at, seconds.
    pub receive_sec: i64,
    /// The same, microseconds.
    pub receive_usec: i32,
    /// Leap second: 0 none, 1 insert, 2 delete, 3 not synchronised.
    pub leap: i32,
    /// The reference's precision, log2 seconds (not used by readers).
    pub precision: i32,
    /// Not used by readers.
    pub nsamples: i32,
    /// Set by the writer when a sample is ready, cleared by the reader.
    pub valid: i32,
    /// The reference's time, nanoseconds (where the writer fills it).
    pub clock_nsec: i32,
    /// The system time, nanoseconds (where the writer fills it).
    pub receive_nsec: i32,
    /// Reserved.
    pub dummy: [i32; 8],
}

/// Whether a segment holds a new sample read whole (`count_after`: the segment's count
/// read again after the fields): the reader then clears `valid`, usable or not.
pub fn shm_consistent(t: &ShmFields, count_after: i32) -> bool {
    (t.mode == 0 || t.mode == 1) && t.valid != 0 && !(t.mode == 1 && t.count != count_after)
}

/// The reading in a segment, if it holds a new, consistent one (see [`shm_consistent`]).
/// As chrony: the nanosecond fields are used only where they agree with the microsecond
/// ones (older writers leave them 0).
pub fn shm_reading(t: &ShmFields, count_after: i32) -> Option<Reading> {
    if !shm_consistent(t, count_after) {
        return None;
    }
    let use_ns = t.clock_nsec / 1000 == t.clock_usec && t.receive_nsec / 1000 == t.receive_usec;
    let (clock_ns, receive_ns) = if use_ns {
        (i128::from(t.clock_nsec), i128::from(t.receive_nsec))
    } else {
        (
            i128::from(t.clock_usec) * 1000,
            i128::from(t.receive_usec) * 1000,
        )
    };
    let clock = i128::from(t.clock_sec) * NS + clock_ns;
    let receive = i128::from(t.receive_sec) * NS + receive_ns;
    let sys_ns = u64::try_from(receive).ok()?;
    Some(Reading::Time {
        sys_ns,
        offset: (clock - receive) as f64 * 1e-9,
        leap: u8::try_from(t.leap).unwrap_or(u8::MAX),
    })
}

/// Why a SOCK datagram was not a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SockError {
    /// Not the 40 bytes of a sample.
    #[error("unexpected length {0} (a SOCK sample is {SOCK_SAMPLE_LEN} bytes)")]
    Length(usize),
    /// Another protocol's datagram.
    #[error("unexpected magic number {0:#x}")]
    Magic(u32),
    /// A time before the epoch or an offset that is not a number.
    #[error("insane time or offset")]
    Insane,
}

/// A SOCK sample (native byte order, as the writer on the same host sent it): the
/// system time of the measurement, the offset of true time from it (or, for a pulse,
/// where in the second the system clock was), the leap second.
pub fn sock_reading(b: &[u8]) -> Result<Reading, SockError> {
    let bytes: &[u8; SOCK_SAMPLE_LEN] = b.try_into().map_err(|_| SockError::Length(b.len()))?;
    let i64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[o..o + 8]);
        i64::from_ne_bytes(a)
    };
    let i32_at = |o: usize| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&bytes[o..o + 4]);
        i32::from_ne_bytes(a)
    };
    let magic = i32_at(36);
    if magic != SOCK_MAGIC {
        return Err(SockError::Magic(magic as u32));
    }
    let (sec, usec) = (i64_at(0), i64_at(8));
    let offset = f64::from_bits(i64_at(16) as u64);
    let (pulse, leap) = (i32_at(24), i32_at(28));
    let sys = i128::from(sec) * NS + i128::from(usec) * 1000;
    let sys_ns = u64::try_from(sys).map_err(|_| SockError::Insane)?;
    if !offset.is_finite() {
        return Err(SockError::Insane);
    }
    Ok(if pulse != 0 {
        Reading::Pulse {
            sys_ns,
            second: offset,
            err: 0.0,
        }
    } else {
        Reading::Time {
            sys_ns,
            offset,
            leap: u8::try_from(leap).unwrap_or(u8::MAX),
        }
    })
}

/// Builds a SOCK sample (for writers and tests).
pub fn sock_sample(sec: i64, usec: i64, offset: f64, pulse: bool, leap: i32) -> [u8; 40] {
    let mut b = [0u8; SOCK_SAMPLE_LEN];
    b[0..8].copy_from_slice(&sec.to_ne_bytes());
    b[8..16].copy_from_slice(&usec.to_ne_bytes());
    b[16..24].copy_from_slice(&offset.to_bits().to_ne_bytes());
    b[24..28].copy_from_slice(&i32::from(pulse).to_ne_bytes());
    b[28..32].copy_from_slice(&leap.to_ne_bytes());
    b[36..40].copy_from_slice(&SOCK_MAGIC.to_ne_bytes());
    b
}

/// One PHC reading: system time before, the PHC's time, system time after (ns since
/// the epoch; a cross timestamp has before = after).
pub type PhcTriple = [i128; 3];

/// The PHC's offset from the system clock from one ioctl's readings: those whose
/// system-clock interval is within `precision` of the shortest are averaged (the others
/// were interrupted or delayed), the PHC time taken at the middle of each interval.
/// Returns the system time and the PHC's time there (ns) and the reading's error (s), or
/// `None` when the readings are unusable (an interval running backwards: a step). The
/// PHC's time stays an integer: a PHC counting from zero is 1.7e18 ns from the system
/// clock, where an `f64` of the difference would keep only 256 ns.
pub fn phc_reading(readings: &[PhcTriple], precision: f64) -> Option<(u64, i128, f64)> {
    let first = readings.first()?;
    let delays: Vec<i128> = readings.iter().map(|r| r[2] - r[0]).collect();
    if delays.iter().any(|d| *d < 0) {
        return None;
    }
    let min = *delays.iter().min()?;
    let tolerance = (precision * 1e9).max(1.0) as i128;
    let (mut n, mut sys_sum, mut phc_sum, mut delay_sum) = (0i128, 0i128, 0i128, 0i128);
    for (r, d) in readings.iter().zip(&delays) {
        if *d > min + tolerance {
            continue;
        }
        n += 1;
        // Relative to the first reading, so the sums stay small.
        sys_sum += (r[0] - first[0]) * 2 + d;
        phc_sum += (r[1] - first[1]) * 2;
        delay_sum += d;
    }
    let sys = first[0] * 2 + sys_sum / n;
    let phc = first[1] * 2 + phc_sum / n;
    let sys_ns = u64::try_from(sys / 2).ok()?;
    let err = (delay_sum as f64 / n as f64 * 0.5e-9).max(precision);
    Some((sys_ns, phc / 2, err))
}

/// The PHC's offset from the system clock from one ioctl's readings (see
/// [`phc_reading`]): the system time (ns), PHC − system (s) and the error (s).
pub fn phc_offset(readings: &[PhcTriple], precision: f64) -> Option<(u64, f64, f64)> {
    let (sys_ns, phc_ns, err) = phc_reading(readings, precision)?;
    Some((sys_ns, (phc_ns - i128::from(sys_ns)) as f64 * 1e-9, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ShmFields {
        ShmFields {
            mode: 1,
            count: 7,
            clock_sec: 1_700_000_000,
            clock_usec: 500_001,
            receive_sec: 1_700_000_000,
            receive_usec: 500_000,
            leap: 0,
            valid: 1,
            clock_nsec: 500_001_250,
            receive_nsec: 500_000_000,
            ..ShmFields::default()
        }
    }

    #[test]
    fn the_segment_layout_is_the_one_writers_use() {
        // 96 bytes on 64-bit Linux, the nanosecond fields at 52 and 56.
        assert_eq!(size_of::<ShmFields>(), 96);
        assert_eq!(std::mem::offset_of!(ShmFields, valid), 48);
        assert_eq!(std::mem::offset_of!(ShmFields, clock_nsec), 52);
        assert_eq!(std::mem::offset_of!(ShmFields, receive_nsec), 56);
    }

    #[test]
    fn shm_segments_are_read_as_chrony_reads_them() {
        let Some(Reading::Time {
            sys_ns,
            offset,
            leap,
        }) = shm_reading(&fields(), 7)
        else {
            panic!("a valid sample");
        };
        assert_eq!((sys_ns, leap), (1_700_000_000_500_000_000, 0));
        assert!((offset - 1.25e-6).abs() < 1e-12, "{offset}");
        // nsec fields that disagree with usec ones (an old writer): usec used.
        let old = ShmFields {
            clock_nsec: 0,
            ..fields()
        };
        let Some(Reading::Time { offset, .. }) = shm_reading(&old, 7) else {
            panic!("valid");
        };
        assert!((offset - 1e-6).abs() < 1e-12);
        assert_eq!(shm_reading(&fields(), 8), None, "count moved while reading");
        let mode0 = ShmFields {
            mode: 0,
            ..fields()
        };
        assert!(shm_reading(&mode0, 8).is_some(), "mode 0 ignores count");
        assert_eq!(
            shm_reading(
                &ShmFields {
                    valid: 0,
                    ..fields()
                },
                7
            ),
            None
        );
        assert_eq!(
            shm_reading(
                &ShmFields {
                    mode: 2,
                    ..fields()
                },
                7
            ),
            None
        );
        let before_epoch = ShmFields {
            receive_sec: -5,
            ..fields()
        };
        assert_eq!(shm_reading(&before_epoch, 7), None);
    }

    #[test]
    fn sock_samples_round_trip_and_garbage_is_refused() {
        let b = sock_sample(1_700_000_000, 250_000, -0.5, false, 1);
        assert_eq!(
            sock_reading(&b),
            Ok(Reading::Time {
                sys_ns: 1_700_000_000_250_000_000,
                offset: -0.5,
                leap: 1
            })
        );
        let p = sock_sample(1_700_000_000, 0, 3e-6, true, 0);
        assert_eq!(
            sock_reading(&p),
            Ok(Reading::Pulse {
                sys_ns: 1_700_000_000_000_000_000,
                second: 3e-6,
                err: 0.0
            })
        );
        assert_eq!(sock_reading(&b[..39]), Err(SockError::Length(39)));
        let mut bad = b;
        bad[36] ^= 1;
        assert!(matches!(sock_reading(&bad), Err(SockError::Magic(_))));
        let nan = sock_sample(1, 0, f64::NAN, false, 0);
        assert_eq!(sock_reading(&nan), Err(SockError::Insane));
        let neg = sock_sample(-1, 0, 0.0, false, 0);
        assert_eq!(sock_reading(&neg), Err(SockError::Insane));
    }

    #[test]
    fn phc_readings_average_the_shortest_intervals() {
        let t = 1_700_000_000_000_000_000i128;
        // The PHC is 37 s + 100 ns ahead; one reading was interrupted for 20 µs.
        let r =
            |start: i128, delay: i128| [start, start + delay / 2 + 37 * NS + 100, start + delay];
        let readings = [r(t, 1000), r(t + 5000, 20_000), r(t + 30_000, 1040)];
        let (sys, offset, err) = phc_offset(&readings, 1e-7).expect("usable");
        assert!((offset - (37.0 + 100e-9)).abs() < 1e-9, "{offset}");
        assert!(sys > t as u64 && sys < (t + 31_000) as u64);
        assert!(
            (err - 510e-9).abs() < 1e-12,
            "half the mean interval: {err}"
        );
        // A cross timestamp: one reading with no interval.
        let (sys, offset, _) = phc_offset(&[[t, t + 5, t]], 1e-9).expect("usable");
        assert_eq!((sys, offset), (t as u64, 5e-9));
        assert_eq!(
            phc_offset(&[[t, t, t - 1]], 1e-7),
            None,
            "a step mid-reading"
        );
        assert_eq!(phc_offset(&[], 1e-7), None);
        // A PHC counting from zero keeps its nanoseconds.
        let (sys, phc, _) = phc_reading(&[[t, 123_456_789, t]], 1e-9).expect("usable");
        assert_eq!((sys, phc), (t as u64, 123_456_789));
    }
}
