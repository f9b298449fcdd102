//! Time arithmetic both answering paths share: served time, NTP formats, dispersion growth.
//!
//! Written for the BPF instruction set: 64-bit integers only, no 128-bit products.

use crate::state::{LEAP_WINDOW_AFTER_NS, LEAP_WINDOW_BEFORE_NS, ServerState, Timebase};
use crate::wire::{LEAP_UNSYNC, NANOS_PER_SEC, NTP_UNIX_OFFSET_SECS};

/// Largest |rate| a timebase may carry: 1000 ppm in 2^-32 units.
///
/// With ages bounded by [`MAX_AGE_NS`] the product age * rate stays below 2^62.
pub const MAX_RATE_FRAC: i64 = 4_294_967; // 1e-3 * 2^32
/// Largest staleness limit (600 s), bounding the age used in the rate product.
pub const MAX_AGE_NS: u64 = 600 * NANOS_PER_SEC;
/// Dispersion growth rate (RFC 5905 PHI), in parts per million.
pub const PHI_PPM: u64 = 15;

impl Timebase {
    /// Served time in ns since the Unix epoch at `CLOCK_TAI` reading `t_tai_ns`.
    ///
    /// served = base + d + d * rate, d = t - t0 (signed: a userspace receive timestamp
    /// may precede the publication it is served with).
    ///
    /// From `leap_tai_ns` on, the leap second's step applies: `CLOCK_TAI` runs on through
    /// a leap while UTC repeats (or skips) a second, and the kernel serves the right UTC
    /// from the first instant without waiting for the daemon to publish again.
    #[inline(always)]
    pub fn served_unix_ns(&self, t_tai_ns: u64) -> u64 {
        let delta = t_tai_ns.wrapping_sub(self.t0_tai_ns) as i64;
        let corr = delta.wrapping_mul(self.rate_frac) >> 32;
        let leap = if self.leap_step_ns != 0 && t_tai_ns >= self.leap_tai_ns {
            self.leap_step_ns
        } else {
            0
        };
        self.base_unix_ns
            .wrapping_add(delta as u64)
            .wrapping_add(corr as u64)
            .wrapping_add(leap as u64)
    }

    /// Age of the timebase at `t_tai_ns`, or `None` when it is stale (older than
    /// `max_age_ns`, or as far in the future after the clock was stepped back).
    #[inline(always)]
    pub fn age_ns(&self, t_tai_ns: u64) -> Option<u64> {
        let delta = t_tai_ns.wrapping_sub(self.t0_tai_ns) as i64;
        if delta.unsigned_abs() > self.max_age_ns {
            None
        } else if delta < 0 {
            Some(0)
        } else {
            Some(delta as u64)
        }
    }
}

impl ServerState {
    /// The leap indicator to serve at `t_tai_ns`: 3 (unsynchronised) inside chrony's
    /// window around a leap second, 0 once it is over, else as published.
    #[inline(always)]
    pub fn leap_at(&self, t_tai_ns: u64) -> u8 {
        let at = self.timebase.leap_tai_ns;
        if at == 0 || t_tai_ns.wrapping_add(LEAP_WINDOW_BEFORE_NS) < at {
            return self.leap;
        }
        if t_tai_ns < at.wrapping_add(LEAP_WINDOW_AFTER_NS) || self.leap == LEAP_UNSYNC {
            LEAP_UNSYNC
        } else {
            0
        }
    }

    /// Root dispersion to serve `age_ns` after publication, NTP short format: grown by
    /// PHI while synchronised (or serving `local`), chrony's fixed value otherwise.
    #[inline(always)]
    pub fn root_dispersion_at(&self, age_ns: u64) -> u32 {
        if self.stratum == 0 {
            return ns_to_ntp_short(self.root_disp_ns);
        }
        ns_to_ntp_short(grown_dispersion_ns(self.root_disp_ns, age_ns))
    }
}

/// Converts ns since the Unix epoch to an NTP 32.32 timestamp (era wraps naturally).
#[inline(always)]
pub fn unix_ns_to_ntp(ns: u64) -> u64 {
    let secs = ns / NANOS_PER_SEC + NTP_UNIX_OFFSET_SECS;
    let frac = ((ns % NANOS_PER_SEC) << 32) / NANOS_PER_SEC;
    (secs << 32) | frac
}

/// Converts ns to NTP short format (16.16 seconds), saturating at its maximum.
#[inline(always)]
pub fn ns_to_ntp_short(ns: u64) -> u32 {
    // Past 2^47 ns the shift would overflow; such values are far beyond 16.16 anyway.
    if ns >= (1u64 << 47) {
        return u32::MAX;
    }
    let v = (ns << 16) / NANOS_PER_SEC;
    if v > u32::MAX as u64 {
        u32::MAX
    } else {
        v as u32
    }
}

/// Root dispersion `age_ns` after publication: grows by PHI (15 ppm) of the age.
#[inline(always)]
pub fn grown_dispersion_ns(disp0_ns: u64, age_ns: u64) -> u64 {
    disp0_ns
        .saturating_add(age_ns / 1_000_000 * PHI_PPM + (age_ns % 1_000_000) * PHI_PPM / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    fn tb(rate_frac: i64) -> Timebase {
        Timebase {
            t0_tai_ns: 1_000 * S,
            base_unix_ns: 1_700_000_000 * S,
            rate_frac,
            max_age_ns: 10 * S,
            leap_tai_ns: 0,
            leap_step_ns: 0,
        }
    }

    #[test]
    fn served_time_advances_with_tai_and_rate() {
        assert_eq!(tb(0).served_unix_ns(1_003 * S), 1_700_000_003 * S);
        // +100 ppm over 5 s = +500 us (within 1 ns of rounding).
        let r = tb((100e-6 * 4_294_967_296.0) as i64).served_unix_ns(1_005 * S);
        assert!(r.abs_diff(1_700_000_005 * S + 500_000) <= 1, "{r}");
        // Before t0 the correction has the other sign.
        let r = tb(-MAX_RATE_FRAC).served_unix_ns(999 * S);
        assert!(r.abs_diff(1_699_999_999 * S + 1_000_000) <= 1, "{r}");
    }

    #[test]
    fn the_largest_age_and_rate_do_not_overflow() {
        let mut t = tb(MAX_RATE_FRAC);
        t.max_age_ns = MAX_AGE_NS;
        let r = t.served_unix_ns(t.t0_tai_ns + MAX_AGE_NS);
        // 600 s at MAX_RATE_FRAC (1000 ppm less 0.07 ppb of quantization): ~600 ms ahead,
        // exactly what a 128-bit product gives.
        let exact = (MAX_AGE_NS as u128 * MAX_RATE_FRAC as u128) >> 32;
        assert!(exact.abs_diff(600_000_000) < 100);
        assert!(
            r.abs_diff(t.base_unix_ns + MAX_AGE_NS + exact as u64) <= 1,
            "{r}"
        );
    }

    #[test]
    fn an_inserted_leap_second_repeats_a_second_of_utc_from_its_instant() {
        let mut t = tb(0);
        t.leap_tai_ns = 1_005 * S;
        t.leap_step_ns = -(S as i64);
        assert_eq!(t.served_unix_ns(1_005 * S - 1), 1_700_000_005 * S - 1);
        assert_eq!(t.served_unix_ns(1_005 * S), 1_700_000_004 * S);
        assert_eq!(t.served_unix_ns(1_007 * S), 1_700_000_006 * S);
        // Once the base includes it, the step is not applied twice.
        t.leap_step_ns = 0;
        assert_eq!(t.served_unix_ns(1_007 * S), 1_700_000_007 * S);
    }

    #[test]
    fn the_leap_indicator_is_unsynchronised_around_the_leap_then_normal() {
        let mut st = ServerState {
            timebase: tb(0),
            leap: 1,
            stratum: 3,
            ..ServerState::default()
        };
        assert_eq!(st.leap_at(1_000 * S), 1, "no leap published: as published");
        st.timebase.leap_tai_ns = 1_005 * S;
        assert_eq!(st.leap_at(1_004 * S), 1);
        assert_eq!(st.leap_at(1_004 * S + S / 2), 3);
        assert_eq!(st.leap_at(1_006 * S + S / 2 - 1), 3);
        assert_eq!(st.leap_at(1_006 * S + S / 2), 0);
        st.leap = 3;
        assert_eq!(
            st.leap_at(1_010 * S),
            3,
            "an unsynchronised server stays so"
        );
    }

    #[test]
    fn dispersion_grows_only_while_synchronised() {
        let mut st = ServerState {
            root_disp_ns: S,
            stratum: 3,
            ..ServerState::default()
        };
        assert_eq!(st.root_dispersion_at(0), 0x1_0000);
        assert_eq!(st.root_dispersion_at(10 * S), 0x1_0009);
        st.stratum = 0;
        assert_eq!(st.root_dispersion_at(10 * S), 0x1_0000);
    }

    #[test]
    fn ntp_formats() {
        assert_eq!(unix_ns_to_ntp(0) >> 32, NTP_UNIX_OFFSET_SECS);
        assert_eq!(unix_ns_to_ntp(250_000_000) & 0xffff_ffff, 1 << 30);
        assert_eq!(ns_to_ntp_short(S / 2), 0x8000);
        assert_eq!(ns_to_ntp_short(65_536 * S), u32::MAX);
        assert_eq!(grown_dispersion_ns(7, 2 * S), 7 + 30_000);
        assert_eq!(grown_dispersion_ns(u64::MAX, S), u64::MAX);
    }
}
