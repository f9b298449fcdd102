//! Leap seconds from the system's tz database (`leapsectz right/UTC`): the TAI-UTC offset
//! in force and the next leap second, read from the leap records of a `TZif` file.

/// Why a `TZif` file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TzifError {
    /// The magic number is missing.
    #[error("not a TZif file")]
    NotTzif,
    /// The file ends inside a header or record.
    #[error("TZif file truncated")]
    Truncated,
}

/// One leap second: when it takes effect (Unix time of the first second after it) and the
/// TAI-UTC offset from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leap {
    /// Unix time at which the new offset applies.
    pub at: i64,
    /// TAI - UTC from then on, seconds.
    pub tai_offset: i32,
}

/// TAI - UTC before the first leap second (1972).
const INITIAL_TAI_OFFSET: i32 = 10;

fn be32(b: &[u8], off: usize) -> Result<u32, TzifError> {
    let s = b.get(off..off + 4).ok_or(TzifError::Truncated)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The leap seconds in a `TZif` file (its version-1 block, whose 32-bit times reach 2038).
pub fn parse(tzif: &[u8]) -> Result<Vec<Leap>, TzifError> {
    if tzif.get(..4) != Some(b"TZif") {
        return Err(TzifError::NotTzif);
    }
    let (isut, isstd, leapcnt, timecnt, typecnt, charcnt) = (
        be32(tzif, 20)? as usize,
        be32(tzif, 24)? as usize,
        be32(tzif, 28)? as usize,
        be32(tzif, 32)? as usize,
        be32(tzif, 36)? as usize,
        be32(tzif, 40)? as usize,
    );
    let _ = (isut, isstd);
    // The counts come from the file: the records they announce must be in it before
    // anything is sized by them (a corrupt count must not allocate gigabytes).
    let start = timecnt
        .checked_mul(5)
        .and_then(|t| typecnt.checked_mul(6).and_then(|y| t.checked_add(y)))
        .and_then(|x| x.checked_add(charcnt))
        .and_then(|x| x.checked_add(44))
        .ok_or(TzifError::Truncated)?;
    let end = leapcnt
        .checked_mul(8)
        .and_then(|l| start.checked_add(l))
        .ok_or(TzifError::Truncated)?;
    if end > tzif.len() {
        return Err(TzifError::Truncated);
    }
    let mut out = Vec::with_capacity(leapcnt);
    for i in 0..leapcnt {
        // In "right" zones the record's time counts the leap seconds before it.
        let t = be32(tzif, start + i * 8)? as i32 as i64;
        let correction = be32(tzif, start + i * 8 + 4)? as i32;
        let previous = out
            .last()
            .map_or(0, |l: &Leap| l.tai_offset - INITIAL_TAI_OFFSET);
        out.push(Leap {
            at: t - previous as i64 + 1,
            tai_offset: INITIAL_TAI_OFFSET + correction,
        });
    }
    Ok(out)
}

/// TAI - UTC at Unix time `now`.
pub fn tai_offset(leaps: &[Leap], now: i64) -> i32 {
    leaps
        .iter()
        .rev()
        .find(|l| l.at <= now)
        .map_or(INITIAL_TAI_OFFSET, |l| l.tai_offset)
}

/// The leap indicator to announce at `now`: 1 (insert) or 2 (delete) when a leap second
/// ends the current UTC day, else 0.
pub fn leap_indicator(leaps: &[Leap], now: i64) -> u8 {
    let day_end = (now.div_euclid(86_400) + 1) * 86_400;
    let before = tai_offset(leaps, now);
    match leaps.iter().find(|l| l.at > now) {
        Some(l) if l.at == day_end => {
            if l.tai_offset > before {
                1
            } else {
                2
            }
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `TZif` file with no transitions and the given leap records (right-zone times).
    fn tzif(records: &[(i32, i32)]) -> Vec<u8> {
        let mut b = b"TZif2".to_vec();
        b.resize(20, 0);
        for n in [0u32, 0, records.len() as u32, 0, 1, 4] {
            b.extend_from_slice(&n.to_be_bytes());
        }
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // one type
        b.extend_from_slice(b"UTC\0");
        for (t, c) in records {
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&c.to_be_bytes());
        }
        b
    }

    // The first and the latest leap seconds: end of 1972-06-30 and of 2016-12-31.
    const JUN_1972: i64 = 78_796_800;
    const JAN_2017: i64 = 1_483_228_800;

    #[test]
    fn offsets_and_announcements() {
        // Right-zone times: the leap's UTC time minus one, plus the leaps before it (one here).
        let f = tzif(&[((JUN_1972 - 1) as i32, 1), ((JAN_2017 - 1 + 1) as i32, 27)]);
        let leaps = parse(&f).unwrap();
        assert_eq!(
            leaps[0],
            Leap {
                at: JUN_1972,
                tai_offset: 11
            }
        );
        assert_eq!(
            leaps[1],
            Leap {
                at: JAN_2017,
                tai_offset: 37
            }
        );
        assert_eq!(tai_offset(&leaps, 0), 10);
        assert_eq!(tai_offset(&leaps, JAN_2017 - 1), 11);
        assert_eq!(tai_offset(&leaps, 1_795_531_348), 37);
        assert_eq!(leap_indicator(&leaps, JAN_2017 - 3600), 1);
        assert_eq!(
            leap_indicator(&leaps, JAN_2017 - 86_401),
            0,
            "the day before"
        );
        assert_eq!(leap_indicator(&leaps, JAN_2017), 0);
        assert!(parse(b"nope").is_err());
        assert!(parse(&f[..50]).is_err());
    }

    #[test]
    fn a_count_beyond_the_file_is_refused_without_allocating() {
        // The fuzzer's find: a header announcing four billion leap seconds.
        let mut f = b"TZif".to_vec();
        f.resize(44, 0);
        f[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(&f), Err(TzifError::Truncated)));
    }
}
