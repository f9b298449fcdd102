//! A kernel clock with something run before each step: the daemon withdraws the fast
//! path's service there, so no reply mixes the old served base with the stepped clock.

use ntp_proto::clock::{ClockError, KernelClock, KernelFrequency, RealtimeClock};

/// Runs just before the clock is stepped.
pub type StepHook = Box<dyn FnMut() + Send>;

/// `K`, with [`StepHook`] run before each of its steps.
pub struct HookedStep<K> {
    inner: K,
    before_step: Option<StepHook>,
}

impl<K> HookedStep<K> {
    /// `inner` with no hook yet.
    pub fn new(inner: K) -> Self {
        HookedStep {
            inner,
            before_step: None,
        }
    }

    /// Sets what runs just before each step.
    pub fn set_before_step(&mut self, hook: StepHook) {
        self.before_step = Some(hook);
    }

    /// The clock underneath.
    pub fn inner_mut(&mut self) -> &mut K {
        &mut self.inner
    }
}

impl<K: RealtimeClock> RealtimeClock for HookedStep<K> {
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
}

impl<K: KernelClock> KernelClock for HookedStep<K> {
    fn set_frequency(&mut self, f: KernelFrequency) -> Result<(), ClockError> {
        self.inner.set_frequency(f)
    }
    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        if let Some(hook) = self.before_step.as_mut() {
            hook();
        }
        self.inner.step(offset)
    }
    fn set_sync_status(
        &mut self,
        synchronized: bool,
        leap: u8,
        max_error: f64,
        est_error: f64,
    ) -> Result<(), ClockError> {
        self.inner
            .set_sync_status(synchronized, leap, max_error, est_error)
    }
}
