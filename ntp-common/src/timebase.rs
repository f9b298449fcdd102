//! Time arithmetic both answering paths share: served time in NTP format, dispersion
//! growth.
//!
//! Written for the BPF instruction set and the cost of a reply: 64-bit integers only, no
//! 128-bit products and no division (a 64-bit division is tens of cycles, and a reply
//! needed six of them).

use crate::state::{LEAP_WINDOW_AFTER_NS, LEAP_WINDOW_BEFORE_NS, ServerState, Timebase};
use crate::wire::{LEAP_UNSYNC, NANOS_PER_SEC, NTP_UNIX_OFFSET_SECS};

/// Largest staleness limit (600 s); ages the program serves are within it.
pub const MAX_AGE_NS: u64 = 600 * NANOS_PER_SEC;
/// Dispersion growth rate (RFC 5905 PHI), in parts per million.
pub const PHI_PPM: u64 = 15;
/// Whole NTP units (2^-32 s) per ns: 2^32 / 10^9 = 4.294967296.
pub const NTP_UNITS_PER_NS: u64 = 4;
/// PHI in NTP short units (2^-16 s) per ns, times 2^40 (1081 / 2^40 s/ns = 15.002 ppm):
/// dispersion grows by one multiply and a shift.
const PHI_SHORT_PER_NS_SHL40: u64 = 1081;
/// Ages beyond this (52 days) add no more dispersion than it: keeps the product in range.
const MAX_GROWTH_AGE_NS: u64 = 1 << 52;

impl Timebase {
    /// Served time, NTP 32.32 format, at `CLOCK_TAI` reading `t_tai_ns`.
    ///
    /// served = base + (t - t0) x scale (signed: a userspace receive timestamp may precede
    /// the publication it is served with).
    ///
    /// From `leap_tai_ns` on, the leap second's step applies: `CLOCK_TAI` runs on through
    /// a leap while UTC repeats (or skips) a second, and the kernel serves the right UTC
    /// from the first instant without waiting for the daemon to publish again.
    #[inline(always)]
    pub fn served_ntp(&self, t_tai_ns: u64) -> u64 {
        let delta = t_tai_ns.wrapping_sub(self.t0_tai_ns) as i64;
        let t = if delta >= 0 {
            self.base_ntp.wrapping_add(self.scaled(delta as u64))
        } else {
            self.base_ntp
                .wrapping_sub(self.scaled(delta.wrapping_neg() as u64))
        };
        if self.leap_step_s != 0 && t_tai_ns >= self.leap_tai_ns {
            t.wrapping_add((self.leap_step_s as u64) << 32)
        } else {
            t
        }
    }

    /// `d` ns of `CLOCK_TAI` in NTP units of served time: 4 d + d x frac / 2^40, the
    /// product split at 2^24 so neither part overflows for `d` below 2^48 ns (78 hours;
    /// the kernel serves ages up to 10 minutes and the daemon republishes every second),
    /// within 2 units (0.5 ns).
    #[inline(always)]
    fn scaled(&self, d: u64) -> u64 {
        let frac = self.scale_frac & SCALE_FRAC_MASK;
        (d.wrapping_mul(NTP_UNITS_PER_NS))
            .wrapping_add((d >> 24).wrapping_mul(frac) >> 16)
            .wrapping_add(((d & 0xff_ffff) * frac) >> 40)
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
            return self.root_disp;
        }
        let age = if age_ns > MAX_GROWTH_AGE_NS {
            MAX_GROWTH_AGE_NS
        } else {
            age_ns
        };
        let grown = self.root_disp as u64 + (((age >> 10) * PHI_SHORT_PER_NS_SHL40) >> 30);
        if grown > u32::MAX as u64 {
            u32::MAX
        } else {
            grown as u32
        }
    }
}

/// [`Timebase::scale_frac`] of served time running at `CLOCK_TAI`'s rate:
/// 2^40 x (2^32 / 10^9 - 4), rounded.
pub const SCALE_FRAC_UNIT_RATE: u64 = 324_319_971_766;
/// The bits of [`Timebase::scale_frac`] the arithmetic uses (below 2^40).
const SCALE_FRAC_MASK: u64 = (1 << 40) - 1;

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

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;
    /// 1 ns in NTP units, for tolerances.
    const NS: u64 = 5;

    fn tb(scale_frac: u64) -> Timebase {
        Timebase {
            t0_tai_ns: 1_000 * S,
            base_ntp: unix_ns_to_ntp(1_700_000_000 * S),
            scale_frac,
            max_age_ns: 10 * S,
            leap_tai_ns: 0,
            leap_step_s: 0,
        }
    }

    /// `scale_frac` for `rate` (as ntp-proto computes it).
    fn frac(rate: f64) -> u64 {
        ((4_294_967_296.0 / 1e9 * (1.0 + rate) - 4.0) * 1_099_511_627_776.0).round() as u64
    }

    fn ntp(unix_ns: u64) -> u64 {
        unix_ns_to_ntp(unix_ns)
    }

    #[test]
    fn served_time_advances_with_tai_and_rate() {
        let t = tb(SCALE_FRAC_UNIT_RATE);
        assert!(t.served_ntp(1_003 * S).abs_diff(ntp(1_700_000_003 * S)) <= NS);
        assert!(
            t.served_ntp(1_000 * S + 1)
                .abs_diff(ntp(1_700_000_000 * S + 1))
                <= NS
        );
        // +100 ppm over 5 s = +500 us.
        let r = tb(frac(100e-6)).served_ntp(1_005 * S);
        assert!(r.abs_diff(ntp(1_700_000_005 * S + 500_000)) <= NS, "{r}");
        // Before t0 the correction has the other sign.
        let r = tb(frac(-1e-3)).served_ntp(999 * S);
        assert!(r.abs_diff(ntp(1_699_999_999 * S + 1_000_000)) <= NS, "{r}");
    }

    #[test]
    fn the_largest_age_and_rate_stay_exact_to_nanoseconds() {
        // 600 s at +-1000 ppm: 600 s +- 600 ms, to the nanosecond.
        for rate in [1e-3, -1e-3, 0.0, 3.7e-7] {
            let mut t = tb(frac(rate));
            t.max_age_ns = MAX_AGE_NS;
            let drift = (MAX_AGE_NS as f64 * rate).round() as i64;
            let ahead = (1_700_000_000 * S + MAX_AGE_NS).wrapping_add_signed(drift);
            let got = t.served_ntp(t.t0_tai_ns + MAX_AGE_NS);
            assert!(got.abs_diff(ntp(ahead)) <= NS, "{rate}: {got}");
            let behind = (1_700_000_000 * S - MAX_AGE_NS).wrapping_add_signed(-drift);
            let back = t.served_ntp(t.t0_tai_ns - MAX_AGE_NS);
            assert!(back.abs_diff(ntp(behind)) <= NS, "{rate}: {back}");
        }
    }

    #[test]
    fn an_inserted_leap_second_repeats_a_second_of_utc_from_its_instant() {
        let mut t = tb(SCALE_FRAC_UNIT_RATE);
        t.leap_tai_ns = 1_005 * S;
        t.leap_step_s = -1;
        let close = |got: u64, unix: u64| got.abs_diff(ntp(unix)) <= NS;
        assert!(close(t.served_ntp(1_005 * S - 1), 1_700_000_005 * S - 1));
        assert!(close(t.served_ntp(1_005 * S), 1_700_000_004 * S));
        assert!(close(t.served_ntp(1_007 * S), 1_700_000_006 * S));
        // Once the base includes it, the step is not applied twice.
        t.leap_step_s = 0;
        assert!(close(t.served_ntp(1_007 * S), 1_700_000_007 * S));
    }

    #[test]
    fn the_leap_indicator_is_unsynchronised_around_the_leap_then_normal() {
        let mut st = ServerState {
            timebase: tb(SCALE_FRAC_UNIT_RATE),
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
    fn dispersion_grows_by_phi_only_while_synchronised() {
        let mut st = ServerState {
            root_disp: 0x1_0000,
            stratum: 3,
            ..ServerState::default()
        };
        assert_eq!(st.root_dispersion_at(0), 0x1_0000);
        // 15 us per second: 150 us = 9.8 short units.
        assert_eq!(st.root_dispersion_at(10 * S), 0x1_0009);
        // 600 s: 9 ms = 589.8 units.
        assert_eq!(st.root_dispersion_at(600 * S), 0x1_0000 + 589);
        // Past 52 days growth stops (at 67 s): a year still reads as more than that.
        let year = st.root_dispersion_at(365 * 86_400 * S);
        assert!(year > 0x1_0000 + (67 << 16), "{year:x}");
        st.root_disp = u32::MAX - 1;
        assert_eq!(st.root_dispersion_at(S * 100), u32::MAX);
        st.stratum = 0;
        st.root_disp = 0x1_0000;
        assert_eq!(st.root_dispersion_at(10 * S), 0x1_0000);
    }

    #[test]
    fn ntp_formats() {
        assert_eq!(unix_ns_to_ntp(0) >> 32, NTP_UNIX_OFFSET_SECS);
        assert_eq!(unix_ns_to_ntp(250_000_000) & 0xffff_ffff, 1 << 30);
        assert_eq!(ns_to_ntp_short(S / 2), 0x8000);
        assert_eq!(ns_to_ntp_short(65_536 * S), u32::MAX);
        assert_eq!(
            frac(0.0),
            SCALE_FRAC_UNIT_RATE,
            "the constant is the formula's"
        );
    }
}
