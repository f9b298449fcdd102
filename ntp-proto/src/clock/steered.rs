//! The clock `ntpxd` steers without `-x`: the system clock itself, through a
//! [`KernelClock`].
//!
//! The NTP clock is the system clock plus the correction still to be made (the *offset
//! register*); every timestamp and every served time is read on the NTP clock, so a
//! correction counts in full at once while the system clock slews toward it. Slewing runs
//! the kernel clock faster or slower (tick and frequency together, up to `maxslewrate`),
//! at a rate proportional to the correction: a correction as large as the measurements'
//! own error is spread over about `corrtimeratio` times the interval between updates,
//! a large one goes at the most the rate allows. The rate is set again whenever the
//! correction, the base frequency or the slew's planned end changes; in between, the
//! achieved part is booked from the time that passed.

use super::{
    Clock, EngineClock, KernelClock, KernelFrequency, epoch_of, secs_since, timescale::Timescale,
};
use std::collections::VecDeque;

/// Largest total frequency offset the kernel's tick and frequency reach together (±10 %,
/// chrony's 100000 ppm).
pub const MAX_TOTAL_FREQ: f64 = 0.1;
/// A correction below this is done.
const MIN_CORRECTION: f64 = 1e-9;
/// Shortest and longest a slew is planned to take, seconds.
const MIN_SLEW_SECS: f64 = 1.0;
const MAX_SLEW_SECS: f64 = 1e4;
/// How long after a frequency change the kernel may still run at the old one: the tick
/// takes effect within one tick of 10 µs-or-so per second of change, which gives each
/// change of slew rate a small known error (chrony's figure for current kernels).
const FREQ_CHANGE_DELAY: f64 = 1.1e-5;

/// The system clock, steered.
pub struct SteeredClock<K: KernelClock> {
    kernel: K,
    epoch_ns: u64,
    /// Frequency correction (ratio; positive speeds the clock up).
    base: f64,
    /// Largest frequency correction allowed (`maxdrift`).
    max_drift: f64,
    /// Largest slew rate (`maxslewrate`).
    max_slew_rate: f64,
    /// Correction still to make (NTP clock minus system clock) at `slew_start`.
    register: f64,
    /// Kernel frequency in force beyond `base`.
    slew: f64,
    /// System time the register was last booked at.
    slew_start: f64,
    /// The correction-time product of the last correction (seconds²): how fast to go.
    corr_rate: f64,
    /// How long the slew was planned to take, and how far past plans slews ran.
    planned: f64,
    excess: f64,
    /// System time of the next planned change of slew rate.
    deadline: f64,
    /// Error of the last slew-rate change (the kernel's latency times the change).
    slew_error: f64,
    scale: Timescale,
    generation: u64,
    /// Steps of the system clock: (generation after, seconds).
    steps: VecDeque<(u64, f64)>,
}

impl<K: KernelClock> SteeredClock<K> {
    /// Takes control of `kernel`, starting from frequency correction `freq`, with slews of
    /// at most `max_slew_rate` and corrections of at most `max_drift` (ratios).
    pub fn new(kernel: K, freq: f64, max_slew_rate: f64, max_drift: f64) -> Self {
        let epoch_ns = epoch_of(kernel.now_ns());
        let now = secs_since(epoch_ns, kernel.now_ns());
        let max_drift = max_drift.clamp(0.0, MAX_TOTAL_FREQ);
        let mut c = SteeredClock {
            kernel,
            epoch_ns,
            base: freq.clamp(-max_drift, max_drift),
            max_drift,
            max_slew_rate: max_slew_rate.clamp(1e-9, MAX_TOTAL_FREQ),
            register: 0.0,
            slew: 0.0,
            slew_start: now,
            corr_rate: 0.0,
            planned: 0.0,
            excess: 0.0,
            deadline: now + MAX_SLEW_SECS,
            slew_error: 0.0,
            scale: Timescale::new(now, now, 1.0),
            generation: 0,
            steps: VecDeque::new(),
        };
        c.replan(now);
        c
    }

    /// The kernel clock beneath.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The kernel clock beneath, for its owner (the simulator lets time pass on it).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    fn raw_now(&self) -> f64 {
        secs_since(self.epoch_ns, self.kernel.now_ns())
    }

    /// How much of the register the slew removes per system second: the NTP clock runs at
    /// the base rate, the system clock at base plus slew.
    fn booking_rate(&self) -> f64 {
        self.slew / (1.0 + self.base + self.slew)
    }

    /// Books the part of the correction done by system time `raw`.
    fn book(&mut self, raw: f64) {
        let elapsed = raw - self.slew_start;
        self.register -= self.booking_rate() * elapsed;
        // A slew that ran past its planned end tells how late the timer fires: plan the
        // next ones no shorter than that, so the overshoot stays small.
        self.excess = (self.excess + 1e-9) * 0.9;
        let late = elapsed - self.planned;
        if late > self.excess && late <= 100.0 {
            self.excess = late;
        }
        self.slew_start = raw;
    }

    /// Books the slew so far and sets the rate for what is left.
    fn replan(&mut self, raw: f64) {
        self.book(raw);
        let r = self.register;
        let duration = if r.abs() < MIN_CORRECTION {
            MAX_SLEW_SECS
        } else {
            (self.corr_rate / r.abs())
                .max(MIN_SLEW_SECS)
                .max(5.0 * self.excess)
        };
        // `maxslewrate` bounds how much faster (or slower) than the NTP clock the system
        // clock runs.
        let corr = (r / duration).clamp(-self.max_slew_rate, self.max_slew_rate);
        let total = (self.base + corr * (1.0 + self.base)).clamp(-MAX_TOTAL_FREQ, MAX_TOTAL_FREQ);
        let setting = KernelFrequency::from_ratio(total);
        // A kernel clock reports its own failures (the daemon logs them): steering carries
        // on with what the kernel has, as chronyd does.
        let actual = match self.kernel.set_frequency(setting) {
            Ok(()) => setting.ratio(),
            Err(_) => self.base + self.slew,
        };
        let old = self.slew;
        self.slew = actual - self.base;
        self.slew_error = (old - self.slew).abs() * FREQ_CHANGE_DELAY;
        let e = self.booking_rate();
        self.scale.set_rate(raw, 1.0 - e);
        self.planned = if r.abs() < MIN_CORRECTION || r * e <= 0.0 {
            MAX_SLEW_SECS
        } else {
            (r / e).clamp(MIN_SLEW_SECS, MAX_SLEW_SECS)
        };
        self.deadline = raw + self.planned;
    }

    /// At or after the time [`Self::next_change_ns`] named: books the slew and sets the
    /// rate for what is left. True if the rate the NTP clock runs at changed (the served
    /// timebase must be published again).
    pub fn tick(&mut self) -> bool {
        let raw = self.raw_now();
        // A timer rounded to the nanosecond may land a hair early.
        if raw < self.deadline - 1e-6 {
            return false;
        }
        let before = self.scale.rate();
        self.replan(raw);
        self.scale.rate() != before
    }

    /// System time (ns) at which [`Self::tick`] must run next.
    pub fn next_change_ns(&self) -> u64 {
        (i128::from(self.epoch_ns) + (self.deadline * 1e9) as i128).max(0) as u64
    }

    /// The error the last change of slew rate leaves in timestamps taken around it.
    pub fn slew_error(&self) -> f64 {
        self.slew_error
    }

    /// Lets go of the clock (the daemon is exiting): the slew in progress is cancelled and
    /// the kernel left at the base frequency, so the clock does not run on at a slew's
    /// rate until something else steers it. Returns the correction left unmade.
    pub fn release(&mut self) -> f64 {
        let raw = self.raw_now();
        self.book(raw);
        let left = self.register;
        self.register = 0.0;
        self.corr_rate = 0.0;
        let _ = self
            .kernel
            .set_frequency(KernelFrequency::from_ratio(self.base));
        self.slew = 0.0;
        self.scale.restate(raw, -left, 0.0);
        self.scale.set_rate(raw, 1.0);
        self.deadline = raw + MAX_SLEW_SECS;
        left
    }

    /// The kernel state to publish: synchronized, leap second, error bounds.
    pub fn set_status(&mut self, synchronized: bool, leap: u8, max_error: f64, est_error: f64) {
        let _ = self
            .kernel
            .set_sync_status(synchronized, leap, max_error, est_error);
    }
}

impl<K: KernelClock> Clock for SteeredClock<K> {
    fn now(&self) -> f64 {
        self.scale.cooked(self.raw_now())
    }
    fn frequency(&self) -> f64 {
        self.base
    }
    fn set_frequency(&mut self, freq: f64) -> f64 {
        let raw = self.raw_now();
        self.book(raw);
        let new = freq.clamp(-self.max_drift, self.max_drift);
        let dfreq = (1.0 + new) / (1.0 + self.base) - 1.0;
        self.base = new;
        self.scale.restate(raw, 0.0, dfreq);
        self.replan(raw);
        dfreq
    }
    fn accrue(&mut self, offset: f64, corr_rate: f64) {
        let raw = self.raw_now();
        self.book(raw);
        self.register += offset;
        self.corr_rate = corr_rate;
        self.scale.restate(raw, offset, 0.0);
        self.replan(raw);
    }
    fn step(&mut self, offset: f64) -> f64 {
        let raw = self.raw_now();
        self.book(raw);
        let system = self.register + offset;
        self.scale.restate(raw, offset, 0.0);
        if self.kernel.step(system).is_ok() {
            self.register = 0.0;
            self.slew_start = raw + system;
            self.scale.shift_system(system);
            self.generation += 1;
            self.steps.push_back((self.generation, system));
            while self.steps.len() > 16 {
                self.steps.pop_front();
            }
            self.replan(raw + system);
            system
        } else {
            // The step failed: slew it instead, at the fastest rate.
            self.register += offset;
            self.corr_rate = 0.0;
            self.replan(raw);
            0.0
        }
    }
    fn uncorrected(&self) -> f64 {
        let raw = self.raw_now();
        self.register - self.booking_rate() * (raw - self.slew_start)
    }
}

impl<K: KernelClock> EngineClock for SteeredClock<K> {
    fn system_now_ns(&self) -> u64 {
        self.kernel.now_ns()
    }
    fn system_secs(&self, sys_ns: u64) -> f64 {
        secs_since(self.epoch_ns, sys_ns)
    }
    fn local_at(&self, sys_ns: u64) -> f64 {
        self.scale.cooked(self.system_secs(sys_ns))
    }
    fn served_correction(&self, sys_ns: u64) -> (f64, f64) {
        let raw = self.system_secs(sys_ns);
        (self.scale.cooked(raw) - raw, self.scale.rate() - 1.0)
    }
    fn generation(&self) -> u64 {
        self.generation
    }
    fn external_step(&mut self) {
        // As chrony cancels its offset correction: nothing of the old plan is booked, the
        // register is empty, and the scale starts over at the system clock. The epoch
        // stays: a step of decades costs the f64 seconds about 0.1 µs of resolution, and
        // moving it would move every time the engine holds.
        let raw = self.raw_now();
        self.register = 0.0;
        self.corr_rate = 0.0;
        self.slew_start = raw;
        self.planned = 0.0;
        self.excess = 0.0;
        self.scale = Timescale::new(raw, raw, 1.0);
        self.generation += 1;
        self.replan(raw);
    }
    fn rescale(&self, sys_ns: u64, generation: u64) -> u64 {
        let shift: f64 = self
            .steps
            .iter()
            .filter(|(g, _)| *g > generation)
            .map(|(_, s)| s)
            .sum();
        (i128::from(sys_ns) + (shift * 1e9).round() as i128).max(0) as u64
    }
}
