//! The clock `ntpxd` steers without `-x`: the system clock itself, through a
//! [`KernelClock`]. Offsets are slewed by running the clock at a different frequency, at
//! most `maxslewrate` (see [`FreqSlew`]); the NTP clock is the system clock plus what is
//! left of the slew.

use super::{
    Clock, EngineClock, KernelClock, KernelFrequency, epoch_of, secs_since, slew::FreqSlew,
};

/// How long a slew may run past its end before the clock notices: the owner calls
/// [`SteeredClock::tick`] at least this often while a slew runs, since an update may start
/// one at any time. At 500 ppm it overshoots by 5 µs at most.
pub const SLEW_CHECK_NS: u64 = 10_000_000;

/// The system clock, steered.
pub struct SteeredClock<K: KernelClock> {
    kernel: K,
    slew: FreqSlew,
    freq: f64,
    epoch_ns: u64,
}

impl<K: KernelClock> SteeredClock<K> {
    /// Takes control of `kernel`, starting from frequency correction `freq`, with slews of
    /// at most `max_slew_rate` (ratio).
    pub fn new(kernel: K, freq: f64, max_slew_rate: f64) -> Self {
        let epoch_ns = epoch_of(kernel.now_ns());
        let mut c = SteeredClock {
            kernel,
            slew: FreqSlew::new(max_slew_rate, freq),
            freq,
            epoch_ns,
        };
        c.apply(freq);
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

    fn now_secs(&self) -> f64 {
        secs_since(self.epoch_ns, self.kernel.now_ns())
    }

    // A kernel clock reports its own failures (the daemon logs them): steering carries
    // on with what the kernel did accept, as chronyd does.
    fn apply(&mut self, kernel_freq: f64) {
        let _ = self
            .kernel
            .set_frequency(KernelFrequency::from_ratio(kernel_freq));
    }

    /// Ends a completed slew; returns the system time (ns) of the next completion to wait
    /// for, if a slew is in progress.
    pub fn tick(&mut self) -> Option<u64> {
        let t = self.now_secs();
        if let Some(f) = self.slew.tick(t) {
            self.apply(f);
        }
        self.slew
            .deadline()
            .map(|d| (i128::from(self.epoch_ns) + (d * 1e9) as i128).max(0) as u64)
    }

    /// How long to sleep after [`Self::tick`] returned `next` at system time `now_ns`: until
    /// the slew's end, but never longer than [`SLEW_CHECK_NS`] (a new slew may start), and
    /// never less than a millisecond.
    pub fn wait_ns(next: Option<u64>, now_ns: u64) -> u64 {
        next.map_or(u64::MAX, |d| d.saturating_sub(now_ns))
            .clamp(1_000_000, SLEW_CHECK_NS)
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
        self.local_at(self.kernel.now_ns())
    }
    fn frequency(&self) -> f64 {
        self.freq
    }
    fn set_frequency(&mut self, freq: f64) {
        self.freq = freq;
        let t = self.now_secs();
        let f = self.slew.set_base(t, freq);
        self.apply(f);
    }
    fn correct(&mut self, offset: f64, step: bool) {
        let t = self.now_secs();
        if step {
            let left = self.slew.cancel(t);
            self.apply(self.slew.kernel_frequency());
            let _ = self.kernel.step(left + offset);
        } else {
            let f = self.slew.add(t, offset);
            self.apply(f);
        }
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
        let t = self.system_secs(sys_ns);
        t + self.slew.remaining_at(t)
    }
    fn slew_remaining(&self) -> f64 {
        self.slew.remaining_at(self.now_secs())
    }
    fn served_correction(&self, sys_ns: u64) -> (f64, f64) {
        // Served time stays on true time while the clock slews toward it.
        (
            self.slew.remaining_at(self.system_secs(sys_ns)),
            -self.slew.rate(),
        )
    }
}
