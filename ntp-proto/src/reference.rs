//! What the server says about its clock, and the kernel state derived from it.
//!
//! The synchronization code (a later layer) produces a [`Reference`]; this module turns it
//! into the [`ServerState`] both answering paths serve from.

use crate::calendar::leap_day;
use ntp_common::{
    ServerState, Timebase,
    state::LEAP_WINDOW_AFTER_NS,
    timebase::{PHI_PPM, ns_to_ntp_short, unix_ns_to_ntp},
    wire::{LEAP_UNSYNC, NANOS_PER_SEC, STRATUM_UNSYNC},
};
use std::time::Duration;

/// Reference id chrony uses for its local reference (127.127.1.1).
pub const REFID_LOCAL: [u8; 4] = [127, 127, 1, 1];

/// The server's reference: its source of time and how far the served time is from the
/// system clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reference {
    /// Leap indicator to announce.
    pub leap: u8,
    /// Stratum to announce.
    pub stratum: u8,
    /// Reference id to announce.
    pub refid: [u8; 4],
    /// When the reference was last updated, ns since the Unix epoch.
    pub ref_time_unix_ns: u64,
    /// Root delay to announce, ns.
    pub root_delay_ns: u64,
    /// Root dispersion at `ref_time_unix_ns`, ns.
    pub root_dispersion_ns: u64,
    /// Served time minus system time, ns (the correction not yet applied to the clock).
    pub offset_ns: i64,
    /// Rate of served time relative to the system clock, minus one.
    pub rate: f64,
}

impl Reference {
    /// Not synchronized and no local reference: leap 3, stratum 16 (0 on the wire), and
    /// the root delay and dispersion of 1 s chrony sends then.
    pub fn unsynchronised() -> Self {
        Reference {
            leap: LEAP_UNSYNC,
            stratum: STRATUM_UNSYNC,
            refid: [0; 4],
            ref_time_unix_ns: 0,
            root_delay_ns: NANOS_PER_SEC,
            root_dispersion_ns: NANOS_PER_SEC,
            offset_ns: 0,
            rate: 0.0,
        }
    }

    /// `local stratum N`: the system clock is served as is, at stratum N.
    pub fn local(stratum: u8, now_unix_ns: u64) -> Self {
        Reference {
            leap: 0,
            stratum,
            refid: REFID_LOCAL,
            ref_time_unix_ns: now_unix_ns,
            root_delay_ns: 0,
            root_dispersion_ns: 0,
            offset_ns: 0,
            rate: 0.0,
        }
    }
}

/// How the state is published, beyond the reference itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PublishParams {
    /// Precision exponent of the server's clock.
    pub precision: i8,
    /// Age after which the kernel stops answering.
    pub max_age: Duration,
    /// Whether the kernel may answer at all.
    pub serve: bool,
    /// Lowest poll exponent put in replies.
    pub min_poll: i8,
}

/// Builds the state to publish at kernel time `now_tai_ns`, with the kernel's TAI-UTC
/// offset `tai_offset_s` (`CLOCK_TAI` = `CLOCK_REALTIME` + offset).
pub fn server_state(
    r: &Reference,
    p: &PublishParams,
    now_tai_ns: u64,
    tai_offset_s: i32,
) -> ServerState {
    let now_unix_ns = now_tai_ns.wrapping_sub((tai_offset_s as i64 * NANOS_PER_SEC as i64) as u64);
    let since_ref = if r.ref_time_unix_ns == 0 {
        0
    } else {
        now_unix_ns.saturating_sub(r.ref_time_unix_ns)
    };
    let disp = r
        .root_dispersion_ns
        .saturating_add(since_ref / 1_000_000 * PHI_PPM);
    let max_age_ns = (p.max_age.as_nanos() as u64).min(ntp_common::timebase::MAX_AGE_NS);
    ServerState {
        seq: 0,
        timebase: Timebase {
            t0_tai_ns: now_tai_ns,
            base_ntp: unix_ns_to_ntp(now_unix_ns.wrapping_add(r.offset_ns as u64)),
            scale_frac: scale_frac(r.rate),
            max_age_ns,
            leap_tai_ns: 0,
            leap_step_s: 0,
        },
        ref_ts: if r.ref_time_unix_ns == 0 {
            0
        } else {
            unix_ns_to_ntp(r.ref_time_unix_ns)
        },
        root_disp: ns_to_ntp_short(disp),
        root_delay: ns_to_ntp_short(r.root_delay_ns),
        refid: r.refid,
        maps_gen: 0,
        leap: r.leap,
        stratum: if r.stratum >= STRATUM_UNSYNC {
            0
        } else {
            r.stratum
        },
        precision: p.precision,
        serve: p.serve as u8,
        min_poll: p.min_poll,
        pad: [0; 3],
    }
}

/// Largest |rate| of served time against `CLOCK_TAI` a timebase carries: 1000 ppm
/// (the kernel's own frequency range is 500 ppm).
pub const MAX_SERVED_RATE: f64 = 1e-3;

/// The timebase's scale for served time running at `1 + rate` times `CLOCK_TAI`
/// (clamped to [`MAX_SERVED_RATE`]): NTP units per ns less 4, in 2^-40 units.
pub fn scale_frac(rate: f64) -> u64 {
    let rate = if rate.is_finite() {
        rate.clamp(-MAX_SERVED_RATE, MAX_SERVED_RATE)
    } else {
        0.0
    };
    ((4_294_967_296.0 / 1e9 * (1.0 + rate) - 4.0) * 1_099_511_627_776.0).round() as u64
}

/// Where a leap second the previous publication carried stands now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PassedLeap {
    /// None has passed.
    None,
    /// It has passed and the base includes it: the kernel's TAI offset moved, or an
    /// earlier publication saw it taken.
    InBase,
    /// It has passed but the kernel has not taken it yet (its midnight follows the
    /// system clock, which may trail the served time): the timebase keeps applying it.
    Pending,
    /// chrony's window after it is over and the kernel has not taken it (clock control
    /// off, or the kernel would not): the served clock must take it now, as a step of
    /// this many seconds; the base includes it after that.
    TakeNow(f64),
}

/// Judges the leap second in `previous` (published with TAI offset `previous_offset_s`)
/// at kernel time `now_tai_ns`, when the kernel's offset is `tai_offset_s`.
pub fn passed_leap(
    previous: &Timebase,
    now_tai_ns: u64,
    tai_offset_s: i32,
    previous_offset_s: i32,
) -> PassedLeap {
    let at = previous.leap_tai_ns;
    if at == 0 || now_tai_ns < at {
        PassedLeap::None
    } else if previous.leap_step_s == 0 || tai_offset_s != previous_offset_s {
        PassedLeap::InBase
    } else if now_tai_ns >= at + LEAP_WINDOW_AFTER_NS {
        PassedLeap::TakeNow(previous.leap_step_s as f64)
    } else {
        PassedLeap::Pending
    }
}

/// Puts the leap second `st` announces into its timebase, so both paths serve it
/// exactly from its first instant: `st` was built at kernel time `now_tai_ns` with TAI
/// offset `tai_offset_s`; `previous` is the state published before it, and `passed` what
/// [`passed_leap`] said of its leap (with [`PassedLeap::TakeNow`] taken by now). A leap
/// is scheduled only on the last day of June or December (UTC midnight for an inserted
/// second, 23:59:59 for a deleted one). Once it has passed it is kept, with its step,
/// until the base includes it, then without the step for the rest of chrony's window;
/// it is never scheduled twice.
pub fn schedule_leap(
    st: &mut ServerState,
    now_tai_ns: u64,
    tai_offset_s: i32,
    previous: &ServerState,
    passed: PassedLeap,
) {
    let at = previous.timebase.leap_tai_ns;
    match passed {
        PassedLeap::None => {}
        PassedLeap::Pending => {
            st.timebase.leap_tai_ns = at;
            st.timebase.leap_step_s = previous.timebase.leap_step_s;
            return;
        }
        PassedLeap::InBase | PassedLeap::TakeNow(_) => {
            if now_tai_ns < at + LEAP_WINDOW_AFTER_NS {
                st.timebase.leap_tai_ns = at;
                st.timebase.leap_step_s = 0;
            }
            return;
        }
    }
    let now_unix_s = (now_tai_ns / NANOS_PER_SEC) as i64 - i64::from(tai_offset_s);
    if !(st.leap == LEAP_INSERT || st.leap == LEAP_DELETE) || !leap_day(now_unix_s) {
        return;
    }
    let midnight = (now_unix_s.div_euclid(86_400) + 1) * 86_400;
    let (at, step) = if st.leap == LEAP_INSERT {
        (midnight, -1)
    } else {
        (midnight - 1, 1)
    };
    st.timebase.leap_tai_ns = ((at + i64::from(tai_offset_s)) as u64) * NANOS_PER_SEC;
    st.timebase.leap_step_s = step;
}

/// Leap indicator of an inserted second.
const LEAP_INSERT: u8 = 1;
/// Leap indicator of a deleted second.
const LEAP_DELETE: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::NtpTimestamp;

    const S: u64 = NANOS_PER_SEC;

    /// Asserts a served time (ns) is `want` to within the timebase's arithmetic: under
    /// a nanosecond for ages up to minutes, a few over the half-day these tests span.
    #[track_caller]
    fn assert_near(got: u64, want: u64) {
        assert!(got.abs_diff(want) <= 4, "{got} is not {want}");
    }

    /// Served time at `t` (TAI ns) in ns since the Unix epoch, to the nearest ns.
    fn served(tb: &Timebase, t: u64) -> u64 {
        let pivot = t.saturating_sub(37 * S);
        NtpTimestamp(tb.served_ntp(t)).to_unix_ns(pivot) as u64
    }

    fn params() -> PublishParams {
        PublishParams {
            precision: -25,
            max_age: Duration::from_secs(10),
            serve: true,
            min_poll: 0,
        }
    }

    #[test]
    fn local_reference_serves_the_system_clock() {
        let now_unix = 1_800_000_000 * S + 123;
        let tai = 37;
        let st = server_state(
            &Reference::local(3, now_unix),
            &params(),
            now_unix + 37 * S,
            tai,
        );
        assert_eq!(st.stratum, 3);
        assert_eq!(st.leap, 0);
        assert_eq!(st.refid, REFID_LOCAL);
        assert_eq!(st.timebase.max_age_ns, 10 * S);
        // 2.5 s later on the kernel's TAI clock the served time is 2.5 s later in UTC.
        let t = now_unix + 37 * S + 2_500_000_000;
        assert_near(served(&st.timebase, t), now_unix + 2_500_000_000);
        assert_eq!(st.ref_ts, unix_ns_to_ntp(now_unix));
    }

    #[test]
    fn offset_and_rate_shift_served_time() {
        let now_unix = 1_800_000_000 * S;
        let mut r = Reference::local(2, now_unix);
        r.offset_ns = -25_000_000; // served time 25 ms behind the system clock
        r.rate = 40e-6; // and running 40 ppm fast
        let st = server_state(&r, &params(), now_unix, 0);
        assert_near(served(&st.timebase, now_unix), now_unix - 25_000_000);
        let later = served(&st.timebase, now_unix + 10 * S);
        let expect = now_unix + 10 * S - 25_000_000 + 400_000;
        assert!(later.abs_diff(expect) <= 1, "{later} vs {expect}");
        // A userspace timestamp taken just before publication is still served correctly.
        let before = served(&st.timebase, now_unix - S);
        assert!(before.abs_diff(now_unix - S - 25_000_000 - 40_000) <= 1);
    }

    #[test]
    fn rate_is_clamped_to_what_the_kernel_arithmetic_allows() {
        let mut r = Reference::local(2, 1);
        r.rate = 0.5;
        let st = server_state(&r, &params(), 10 * S, 0);
        assert_eq!(st.timebase.scale_frac, scale_frac(MAX_SERVED_RATE));
        assert!(scale_frac(MAX_SERVED_RATE) < 1 << 40);
        assert!(scale_frac(-MAX_SERVED_RATE) > 0);
        assert_eq!(scale_frac(f64::NAN), scale_frac(0.0));
        assert_eq!(scale_frac(0.0), ntp_common::timebase::SCALE_FRAC_UNIT_RATE);
    }

    #[test]
    fn staleness_limit_bounds_age() {
        let st = server_state(&Reference::local(3, 50 * S), &params(), 50 * S, 0);
        assert_eq!(st.timebase.age_ns(60 * S), Some(10 * S));
        assert_eq!(st.timebase.age_ns(60 * S + 1), None);
        // Slightly before publication (a userspace timestamp) counts as fresh; far before
        // (the clock was stepped back) as stale.
        assert_eq!(st.timebase.age_ns(50 * S - 1), Some(0));
        assert_eq!(st.timebase.age_ns(39 * S), None);
    }

    #[test]
    fn dispersion_grows_15_ppm_of_age() {
        assert_eq!(ns_to_ntp_short(S), 0x0001_0000);
        assert_eq!(ns_to_ntp_short(u64::MAX), u32::MAX);
        // An old reference has already grown its dispersion when published.
        let mut r = Reference::local(3, 100 * S);
        r.root_dispersion_ns = S;
        let st = server_state(&r, &params(), 200 * S, 0);
        assert_eq!(st.root_disp, ns_to_ntp_short(S + 100 * 15 * 1000));
    }

    #[test]
    fn unsynchronised_reference_says_so_as_chrony_does() {
        let st = server_state(&Reference::unsynchronised(), &params(), 5 * S, 0);
        assert_eq!(
            (st.leap, st.stratum, st.ref_ts, st.refid),
            (3, 0, 0, [0; 4])
        );
        assert_eq!(st.root_delay, 0x1_0000, "1 s");
        assert_eq!(st.root_dispersion_at(100 * S), 0x1_0000, "1 s, not grown");
    }

    #[test]
    fn a_leap_second_is_scheduled_on_its_day_only_and_once() {
        // 2026-12-31 12:00:00 UTC, TAI offset 37.
        let noon = 1_798_718_400u64;
        let midnight = noon + 43_200;
        let tai = |unix: u64| (unix + 37) * S;
        let mut r = Reference::local(3, noon * S);
        r.leap = 1;
        let none = ServerState::default();
        let fresh = PassedLeap::None;
        let mut st = server_state(&r, &params(), tai(noon), 37);
        schedule_leap(&mut st, tai(noon), 37, &none, fresh);
        assert_eq!(st.timebase.leap_tai_ns, tai(midnight));
        assert_eq!(st.timebase.leap_step_s, -1);
        // Served UTC repeats the second from the leap on.
        let tb = st.timebase;
        assert_near(served(&tb, tai(midnight) - 1), midnight * S - 1);
        assert_near(served(&tb, tai(midnight)), (midnight - 1) * S);
        // Deleted: at 23:59:59 the served time skips to midnight.
        r.leap = 2;
        let mut del = server_state(&r, &params(), tai(noon), 37);
        schedule_leap(&mut del, tai(noon), 37, &none, fresh);
        assert_eq!(del.timebase.leap_tai_ns, tai(midnight - 1));
        assert_near(served(&del.timebase, tai(midnight - 1)), midnight * S);
        // The day before: nothing.
        r.leap = 1;
        let mut early = server_state(&r, &params(), tai(noon - 86_400), 37);
        schedule_leap(&mut early, tai(noon - 86_400), 37, &none, fresh);
        assert_eq!(early.timebase.leap_tai_ns, 0);
        // After the leap the kernel's offset is 38 and the clock reads 23:59:59 again
        // (still the leap day, the sources still announcing): the instant is kept for the
        // window, with no step, and not scheduled a second time.
        let after = tai(midnight) + S / 2;
        let passed = passed_leap(&st.timebase, after, 38, 37);
        assert_eq!(passed, PassedLeap::InBase);
        let mut next = server_state(&r, &params(), after, 38);
        schedule_leap(&mut next, after, 38, &st, passed);
        assert_eq!(next.timebase.leap_tai_ns, tai(midnight));
        assert_eq!(next.timebase.leap_step_s, 0);
        assert_eq!(next.leap_at(after), 3);
        let later = tai(midnight) + 2 * S;
        let passed = passed_leap(&next.timebase, later, 38, 38);
        assert_eq!(passed, PassedLeap::InBase);
        let mut done = server_state(&r, &params(), later, 38);
        schedule_leap(&mut done, later, 38, &next, passed);
        assert_eq!(done.timebase.leap_tai_ns, 0);
    }

    #[test]
    fn a_leap_the_kernel_has_not_taken_stays_in_the_timebase_then_the_clock_takes_it() {
        let noon = 1_798_718_400u64;
        let midnight = noon + 43_200;
        let tai = |unix: u64| (unix + 37) * S;
        let mut r = Reference::local(3, noon * S);
        r.leap = 1;
        let mut st = server_state(&r, &params(), tai(noon), 37);
        schedule_leap(
            &mut st,
            tai(noon),
            37,
            &ServerState::default(),
            PassedLeap::None,
        );
        // Just after the instant the kernel's offset is still 37 (its midnight follows a
        // system clock a little behind): the step stays, and the served time is right.
        let after = tai(midnight) + S / 2;
        let passed = passed_leap(&st.timebase, after, 37, 37);
        assert_eq!(passed, PassedLeap::Pending);
        let mut next = server_state(&r, &params(), after, 37);
        schedule_leap(&mut next, after, 37, &st, passed);
        assert_eq!(next.timebase.leap_step_s, -1);
        assert_near(served(&next.timebase, after), midnight * S - S / 2);
        // Past chrony's window, still not taken: the served clock must take it.
        let late = tai(midnight) + 2 * S;
        assert_eq!(
            passed_leap(&next.timebase, late, 37, 37),
            PassedLeap::TakeNow(-1.0)
        );
        // Before the instant nothing has passed.
        assert_eq!(
            passed_leap(&st.timebase, tai(midnight) - 1, 37, 37),
            PassedLeap::None
        );
    }
}
