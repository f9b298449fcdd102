//! The clocks the synchronization engine steers, and the one trait through which it
//! reaches the system clock.
//!
//! Every decision about steering (how fast to slew, when a slew ends, when to step, what
//! frequency and tick the kernel is given) is made here, over [`KernelClock`]. The daemon
//! implements that trait with `adjtimex` and `clock_settime`; the simulator with a model of
//! the kernel's clock. So the simulation tests run the steering code the daemon runs.

mod kernel;
mod steered;
pub mod timescale;
mod virtual_clock;

pub use kernel::{KernelFrequency, MAX_KERNEL_FREQ, NOMINAL_TICK_US, TICK_RANGE_US};
pub use steered::{MAX_TOTAL_FREQ, SteeredClock};
pub use timescale::Timescale;
pub use virtual_clock::FreeRunning;

/// A kernel clock call that failed, with what the kernel said.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{call}: {reason}")]
pub struct ClockError {
    /// The call, e.g. "`adjtimex(ADJ_FREQUENCY)`".
    pub call: &'static str,
    /// Why it failed.
    pub reason: String,
}

/// Reading the system clock (`CLOCK_REALTIME`).
pub trait RealtimeClock {
    /// `CLOCK_REALTIME` now, ns since the Unix epoch. A clock that cannot be read cannot be
    /// steered or served: implementations treat a failed read as fatal and say so.
    fn now_ns(&self) -> u64;
}

/// The system clock as the kernel lets it be steered.
pub trait KernelClock: RealtimeClock {
    /// Sets the tick length and frequency offset (`ADJ_TICK | ADJ_FREQUENCY`).
    fn set_frequency(&mut self, f: KernelFrequency) -> Result<(), ClockError>;
    /// Steps the clock by `offset` seconds (`clock_settime`).
    fn step(&mut self, offset: f64) -> Result<(), ClockError>;
    /// Tells the kernel whether the clock is synchronized, the leap second to apply at the
    /// end of the day (RFC 5905 leap indicator) and the error bounds in seconds.
    fn set_sync_status(
        &mut self,
        synchronized: bool,
        leap: u8,
        max_error: f64,
        est_error: f64,
    ) -> Result<(), ClockError>;
}

/// The clock being disciplined, as the steering loop sees it: the "NTP clock", the system
/// clock plus any correction still being slewed into it.
pub trait Clock {
    /// The clock's reading now, seconds.
    fn now(&self) -> f64;
    /// The frequency correction in force (ratio; positive speeds the clock up).
    fn frequency(&self) -> f64;
    /// Sets the frequency correction (within `maxdrift`); returns how much faster the clock
    /// runs than before (ratio), for restating what was measured against it.
    fn set_frequency(&mut self, freq: f64) -> f64;
    /// Moves the clock forward by `offset` seconds now, the system clock catching up by
    /// slewing; `corr_rate` (seconds²) sets how fast: the slew takes about
    /// `corr_rate / |offset|` seconds (0: as fast as allowed).
    fn accrue(&mut self, offset: f64, corr_rate: f64);
    /// Moves the clock forward by `offset` seconds now, stepping the system clock by that
    /// and any correction still outstanding; returns the step the system clock took.
    fn step(&mut self, offset: f64) -> f64;
    /// Correction not yet made on the system clock (NTP clock minus system clock), seconds.
    fn uncorrected(&self) -> f64;
}

/// A clock the engine can discipline and read at past system instants.
pub trait EngineClock: Clock {
    /// System time now (`CLOCK_REALTIME` ns).
    fn system_now_ns(&self) -> u64;
    /// System time `sys_ns` on the clock's scale of seconds, without any correction.
    fn system_secs(&self, sys_ns: u64) -> f64;
    /// The NTP clock's reading at system time `sys_ns`, on the scale it has now.
    fn local_at(&self, sys_ns: u64) -> f64;
    /// Served minus system time at `sys_ns` (seconds), and its rate.
    fn served_correction(&self, sys_ns: u64) -> (f64, f64);
    /// Counts the steps of the system clock: a timestamp is tagged with it when taken.
    fn generation(&self) -> u64 {
        0
    }
    /// A system timestamp taken at `generation`, on the system clock's scale now.
    fn rescale(&self, sys_ns: u64, generation: u64) -> u64 {
        let _ = generation;
        sys_ns
    }
    /// Someone else stepped the system clock: every correction pending or applied is
    /// meaningless on the new scale. The NTP clock starts over as the system clock.
    fn external_step(&mut self);
    /// The system time (ns) at which the NTP clock reads `local` (the inverse of
    /// [`EngineClock::local_at`], by Newton's method: the two run within `maxslewrate`
    /// (8.3 %) of each other, so for times within seconds of now four steps leave well
    /// under a nanosecond).
    fn system_at_local(&self, local: f64) -> u64 {
        let mut t = self.system_now_ns();
        for _ in 0..4 {
            let miss = local - self.local_at(t);
            let next =
                (i128::from(t) + (miss * 1e9).round() as i128).clamp(0, i128::from(u64::MAX));
            t = next as u64;
            if miss.abs() < 1e-10 {
                break;
            }
        }
        t
    }
}

/// Seconds from `epoch_ns` to `sys_ns`.
pub(crate) fn secs_since(epoch_ns: u64, sys_ns: u64) -> f64 {
    (i128::from(sys_ns) - i128::from(epoch_ns)) as f64 * 1e-9
}

/// `sys_ns` rounded down to a whole second: the origin of a clock's scale of seconds.
pub(crate) fn epoch_of(sys_ns: u64) -> u64 {
    sys_ns / 1_000_000_000 * 1_000_000_000
}

/// Notices steps of the system clock that ntpx did not make: the system clock and the
/// monotonic clock run at the same rate (both follow the frequency the kernel is given),
/// so only a step moves one against the other.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepDetector {
    last: Option<(i128, u64)>,
}

impl StepDetector {
    /// Steps smaller than this show up as offsets in new samples instead (chrony's rule).
    pub const THRESHOLD: f64 = 10.0;

    /// A reading of both clocks (ns) with the steering clock's step count; the size of a
    /// step someone else made since the last reading, if there was one.
    pub fn check(&mut self, realtime_ns: u64, monotonic_ns: u64, generation: u64) -> Option<f64> {
        let diff = i128::from(realtime_ns) - i128::from(monotonic_ns);
        let last = self.last.replace((diff, generation));
        match last {
            // Our own steps move the clock too: start over after one.
            Some((d, g)) if g == generation => {
                let step = (diff - d) as f64 * 1e-9;
                (step.abs() > Self::THRESHOLD).then_some(step)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_foreign_steps_over_ten_seconds_count() {
        let mut d = StepDetector::default();
        let s = 1_000_000_000u64;
        assert_eq!(d.check(100 * s, 5 * s, 0), None);
        assert_eq!(d.check(101 * s, 6 * s, 0), None, "time passed, no step");
        assert_eq!(
            d.check(106 * s, 7 * s, 0),
            None,
            "4 s: an offset, not a step"
        );
        assert_eq!(d.check(50 * s, 8 * s, 0), Some(-57.0));
        assert_eq!(
            d.check(200 * s, 9 * s, 1),
            None,
            "ours: the generation moved"
        );
        assert_eq!(d.check(201 * s, 10 * s, 1), None);
    }
}
