//! UTC calendar dates from Unix time, for reports and the leap-second rule.

/// (year, month 1-12, day 1-31) of a count of days since 1970-01-01 (proleptic
/// Gregorian, by era arithmetic).
pub fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether a leap second may end the UTC day of `unix_secs`: only 30 June and 31
/// December (chrony's rule; a source announcing one on another day is ignored).
pub fn leap_day(unix_secs: i64) -> bool {
    let (_, month, day) = civil_date(unix_secs.div_euclid(86_400));
    (month == 6 && day == 30) || (month == 12 && day == 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_leap_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert!(leap_day(1_498_867_199), "2017-06-30 23:59:59");
        assert!(leap_day(1_483_142_400), "2016-12-31 00:00");
        assert!(!leap_day(1_795_996_800), "2026-11-30");
        assert!(!leap_day(1_498_867_200), "2017-07-01");
    }
}
