//! Reference clocks in the engine: each is a source like an NTP server, fed by its
//! driver's readings instead of exchanges, polled at a fixed interval, as chrony's
//! refclock sources are.

use super::{Engine, Log, SourceOptions};
use crate::clock::EngineClock;
use crate::config::RefclockConfig;
use crate::poller::PollOptions;
use crate::refclock::{
    Reading, ReadingRefused, Refclock, leap_second_close, locked_pulse_sample, own_pulse_sample,
    pulse_offset, tai_to_utc_offset, time_sample,
};
use crate::sync::sample::Sample;
use crate::sync::sourcestats::{DEFAULT_MIN_SAMPLES, MAX_SAMPLES};
use std::net::{Ipv4Addr, SocketAddr};

impl<C: EngineClock> Engine<C> {
    /// Adds the reference clock of a `refclock` line; returns its source id.
    pub fn add_refclock(&mut self, config: &RefclockConfig) -> usize {
        let index = self.sources.iter().filter(|s| !s.is_ntp()).count();
        let rc = Refclock::new(config.clone(), index, self.precision);
        let opts = SourceOptions {
            // A reference clock's poll is fixed, as in chrony.
            poll: PollOptions {
                minpoll: config.poll,
                maxpoll: config.poll,
                iburst: false,
                polltarget: 8,
            },
            prefer: config.prefer,
            noselect: config.noselect,
            trust: config.trust,
            require: config.require,
            min_samples: config
                .min_samples
                .or(self.sync.min_samples)
                .unwrap_or(DEFAULT_MIN_SAMPLES),
            max_samples: config
                .max_samples
                .or(self.sync.max_samples)
                .unwrap_or(MAX_SAMPLES),
            ..SourceOptions::default()
        };
        let id = self.add_source(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), opts);
        let s = &mut self.sources[id];
        s.name = rc.name();
        s.stratum = config.stratum;
        s.refclock = Some(Box::new(rc));
        id
    }

    /// Reference clock `id`, if it is one.
    pub fn refclock(&self, id: usize) -> Option<&Refclock> {
        self.sources.get(id)?.refclock.as_deref()
    }

    /// Ids of the reference clocks.
    pub fn refclock_ids(&self) -> Vec<usize> {
        self.live()
            .filter(|(_, s)| !s.is_ntp())
            .map(|(i, _)| i)
            .collect()
    }

    /// A reading of reference clock `id`'s driver, checked as chrony checks it and put
    /// into its filter.
    pub fn refclock_reading(&mut self, id: usize, reading: Reading) -> Result<(), ReadingRefused> {
        let result = self.take_reading(id, reading);
        if let Some(rc) = self.sources.get_mut(id).and_then(|s| s.refclock.as_mut())
            && result.is_err()
        {
            rc.refused += 1;
        }
        result
    }

    fn take_reading(&mut self, id: usize, reading: Reading) -> Result<(), ReadingRefused> {
        let Some(rc) = self.sources.get(id).and_then(|s| s.refclock.as_deref()) else {
            return Ok(());
        };
        let sys_ns = match reading {
            Reading::Time { sys_ns, .. } | Reading::Pulse { sys_ns, .. } => sys_ns,
        };
        let sys_s = sys_ns as f64 * 1e-9;
        let near_leap = |t: f64| leap_second_close(&self.leaps, self.leap != 0, t);
        if near_leap(sys_s) {
            return Err(ReadingRefused::NearLeap);
        }
        let local = self.clock.local_at(sys_ns);
        let correction = local - self.clock.system_secs(sys_ns);
        let age = self.clock.now() - local;
        if !(0.0..=2.0 * rc.poll_interval()).contains(&age) {
            return Err(ReadingRefused::Age);
        }
        let second = match reading {
            Reading::Time {
                offset, leap: l, ..
            } if !rc.config.pps => {
                let offset = if rc.config.tai {
                    tai_to_utc_offset(&self.leaps, sys_s, offset)
                        .ok_or(ReadingRefused::TaiUnknown)?
                } else {
                    offset
                };
                if near_leap(sys_s + offset) {
                    return Err(ReadingRefused::NearLeap);
                }
                let sample = time_sample(rc, local, offset, correction, l)?;
                return self.accumulate(id, sample, false);
            }
            // `pps`: only where in the second the reading falls counts.
            Reading::Time { offset, .. } => -offset,
            Reading::Pulse { second, .. } => second,
        };
        let err = match reading {
            Reading::Pulse { err, .. } if err.is_finite() && err > 0.0 => err,
            _ => 0.0,
        };
        if !second.is_finite() {
            return Err(ReadingRefused::Insane);
        }
        let offset = pulse_offset(rc, second, correction);
        // As chrony: a lock naming no other reference clock is ignored (warned of at
        // start) and the pulses are numbered by our own time.
        let lock_rc = rc.config.lock.and_then(|lock| {
            self.sources
                .iter()
                .filter_map(|s| s.refclock.as_deref())
                .find(|l| l.refid == lock && l.refid != rc.refid)
        });
        let sample = if let Some(lock_rc) = lock_rc {
            let last = lock_rc.filter.last().ok_or(ReadingRefused::NoLock)?;
            locked_pulse_sample(
                rc,
                local,
                offset,
                last,
                lock_rc.filter.avg_dispersion(),
                lock_rc.leap,
            )?
        } else {
            // What the server says now: synchronised, or serving its local reference.
            let r = self.reference(self.clock.system_now_ns());
            let distance = (r.root_delay_ns as f64 / 2.0 + r.root_dispersion_ns as f64) * 1e-9;
            match own_pulse_sample(rc, local, offset, (r.leap, distance)) {
                Ok(s) => s,
                Err(ReadingRefused::NoLock) => {
                    // As chrony: pulses that cannot be numbered make the stored ones
                    // suspect too (not so a pulse refused for its edge).
                    if let Some(rc) = self.sources[id].refclock.as_mut() {
                        rc.filter.clear();
                    }
                    return Err(ReadingRefused::NoLock);
                }
                Err(e) => return Err(e),
            }
        };
        // As chrony: the pulse's own error on top of the precision.
        let sample = Sample {
            dispersion: sample.dispersion + err,
            root_dispersion: sample.root_dispersion + err,
            ..sample
        };
        self.accumulate(id, sample, true)
    }

    fn accumulate(&mut self, id: usize, sample: Sample, pulse: bool) -> Result<(), ReadingRefused> {
        let Some(rc) = self.sources[id].refclock.as_mut() else {
            return Ok(());
        };
        rc.accumulate(sample)?;
        rc.leap = sample.leap;
        rc.pps_active = pulse;
        Ok(())
    }

    /// Reference clock `id`'s timer fired (each driver read for polled drivers, each poll
    /// for the others): at the end of a poll the filtered sample goes to the statistics
    /// and selection runs.
    pub fn refclock_tick(&mut self, id: usize) -> Vec<Log> {
        let now_ns = self.clock.system_now_ns();
        let stratum = self.pulse_stratum(id);
        let Some(s) = self.sources.get_mut(id) else {
            return Vec::new();
        };
        let Some(rc) = s.refclock.as_mut() else {
            return Vec::new();
        };
        if !rc.tick() {
            return Vec::new();
        }
        let (reached, sample) = rc.end_poll();
        let leap = rc.leap;
        s.polls = s.polls.saturating_add(1);
        s.poller.refclock_poll(reached);
        let Some(mut sample) = sample else {
            // As chrony: selection runs at every poll of an unreachable reference clock.
            if s.poller.reach() == 0 {
                return self.reselect(None);
            }
            return Vec::new();
        };
        if let Some(st) = stratum {
            sample.stratum = st;
        }
        // The leap second of the newest reading, not of the median's last sample.
        sample.leap = leap;
        s.received = s.received.saturating_add(1);
        s.replies = s.replies.saturating_add(1);
        s.samples = s.samples.saturating_add(1);
        s.stratum = sample.stratum;
        s.measured = sample.offset;
        s.error = sample.dispersion;
        s.last_sample = Some(sample);
        self.process_sample(id, sample, now_ns, true)
    }

    /// The stratum of a pulse source numbered by the daemon's own time (chrony's
    /// `pps_stratum`): the stratum below ours while ntpx follows this or another such
    /// source, or its local reference, so a pulse never lowers the stratum it was
    /// numbered by; otherwise 0. `None`: the refclock's own stratum applies.
    fn pulse_stratum(&self, id: usize) -> Option<u8> {
        let rc = self.sources.get(id)?.refclock.as_deref()?;
        if !rc.pps_active || rc.config.lock.is_some() {
            return None;
        }
        let now_ns = self.clock.system_now_ns();
        let Some(synced) = &self.synced else {
            let r = self.reference(now_ns);
            let local_active = r.leap != ntp_common::wire::LEAP_UNSYNC;
            return Some(if local_active {
                r.stratum.saturating_sub(1)
            } else {
                0
            });
        };
        let follows_pulse = self.sources.iter().any(|s| {
            s.refclock
                .as_deref()
                .is_some_and(|o| o.refid == synced.refid && o.pps_active && o.config.lock.is_none())
        });
        Some(if follows_pulse { synced.stratum } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FreeRunning, RealtimeClock};
    use crate::config::refclocks::first_refclock as config;
    use crate::config::{RefclockDriver, SyncConfig};
    use crate::sync::select::SourceState;
    use std::{cell::Cell, rc::Rc};

    /// A system clock the test moves.
    struct Sys(Rc<Cell<u64>>);

    impl RealtimeClock for Sys {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
    }

    fn engine(start: u64) -> (Engine<FreeRunning<Sys>>, Rc<Cell<u64>>) {
        let now = Rc::new(Cell::new(start));
        let clock = FreeRunning::new(0.0, Sys(now.clone()), 500e-6);
        (
            Engine::new(clock, &SyncConfig::default(), None, 1e-7, None),
            now,
        )
    }

    fn shm(poll: i8) -> RefclockConfig {
        config(&format!("refclock SHM 0 poll {poll}"))
    }

    #[test]
    fn a_reference_clock_is_selected_and_makes_the_server_stratum_1() {
        let start = 1_700_000_000_000_000_000u64;
        let (mut e, now) = engine(start);
        let id = e.add_refclock(&shm(2));
        assert_eq!(e.sources()[id].name, "SHM0");
        assert!(matches!(
            e.refclock(id).map(|r| &r.config.driver),
            Some(RefclockDriver::Shm { .. })
        ));
        let mut t = start;
        // The reference is 1 ms ahead of the system clock.
        for _ in 0..40 {
            t += 1_000_000_000;
            now.set(t);
            let r = Reading::Time {
                sys_ns: t - 200_000_000,
                offset: 1e-3,
                leap: 0,
            };
            e.refclock_reading(id, r).expect("taken");
            let _ = e.refclock_tick(id);
        }
        let s = &e.sources()[id];
        assert_eq!(s.reach(), 0xff);
        assert_eq!(s.state(), SourceState::Selected);
        let r = e.reference(t);
        assert_eq!((r.stratum, &r.refid), (1, b"SHM0"));
        let report = e.sources_report(t);
        assert_eq!(report[0].mode, '#');
        // The served time (the NTP clock) follows the reference: 1 ms ahead of the system.
        let (corr, _) = e.clock().served_correction(t);
        assert!((corr - 1e-3).abs() < 1e-6, "{corr}");
    }

    #[test]
    fn pulses_are_numbered_by_the_local_reference_or_refused_unsynchronised() {
        let start = 1_700_000_000_000_000_000u64;
        let pps = config("refclock SHM 1 pps poll 2 refid PPS");
        let pulse = Reading::Pulse {
            sys_ns: start - 100_000_000,
            second: 2e-6,
            err: 0.0,
        };
        let (mut e, _now) = engine(start);
        let id = e.add_refclock(&pps);
        assert_eq!(e.refclock_reading(id, pulse), Err(ReadingRefused::NoLock));
        // With `local`, the server's own time numbers the pulses (chrony's behaviour).
        let now = Rc::new(Cell::new(start));
        let clock = FreeRunning::new(0.0, Sys(now.clone()), 500e-6);
        let local = crate::config::LocalConfig::default();
        let mut e = Engine::new(clock, &SyncConfig::default(), Some(local), 1e-7, None);
        let id = e.add_refclock(&pps);
        assert_eq!(e.refclock_reading(id, pulse), Ok(()));
        // A lock naming itself is no lock: the same own numbering.
        let mut e = Engine::new(
            FreeRunning::new(0.0, Sys(now), 500e-6),
            &SyncConfig::default(),
            Some(local),
            1e-7,
            None,
        );
        let id = e.add_refclock(&config("refclock SHM 1 pps lock PPS refid PPS"));
        assert_eq!(e.refclock_reading(id, pulse), Ok(()));
    }

    #[test]
    fn a_tai_reference_is_read_as_utc_through_the_leap_table() {
        let start = 1_700_000_000_000_000_000u64;
        let rc = config("leapsectz right/UTC\nrefclock PHC /dev/ptp0 tai poll 2");
        // A PHC kept in TAI by ptp4l: 37 s and 1 ms ahead of UTC.
        let reading = Reading::Time {
            sys_ns: start - 100_000_000,
            offset: 37.001,
            leap: 0,
        };
        let (mut e, _now) = engine(start);
        let id = e.add_refclock(&rc);
        assert_eq!(
            e.refclock_reading(id, reading),
            Err(ReadingRefused::TaiUnknown),
            "no leap table: TAI - UTC unknown, as chronyd"
        );
        let (mut e, _now) = engine(start);
        e.set_leap_table(vec![crate::leaptz::Leap {
            at: 1_483_228_800,
            tai_offset: 37,
        }]);
        let id = e.add_refclock(&rc);
        assert_eq!(e.refclock_reading(id, reading), Ok(()));
        let last = e
            .refclock(id)
            .and_then(|r| r.filter.last())
            .expect("a sample");
        assert!((last.offset - 0.001).abs() < 1e-6, "{}", last.offset);
    }

    #[test]
    fn readings_too_old_or_from_the_future_are_refused() {
        let start = 1_700_000_000_000_000_000u64;
        let (mut e, _now) = engine(start);
        let id = e.add_refclock(&shm(2));
        let old = Reading::Time {
            sys_ns: start - 9_000_000_000,
            offset: 0.0,
            leap: 0,
        };
        assert_eq!(e.refclock_reading(id, old), Err(ReadingRefused::Age));
        let future = Reading::Time {
            sys_ns: start + 1_000_000_000,
            offset: 0.0,
            leap: 0,
        };
        assert_eq!(e.refclock_reading(id, future), Err(ReadingRefused::Age));
        assert_eq!(e.refclock(id).map(|r| r.refused), Some(2));
        // A poll without readings leaves the register empty and no sample.
        for _ in 0..4 {
            assert!(e.refclock_tick(id).is_empty());
        }
        assert_eq!(e.sources()[id].reach(), 0);
    }
}
