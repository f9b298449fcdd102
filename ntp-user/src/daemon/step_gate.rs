//! Holding the daemon's answers back across a step of the system clock: from the step
//! until the publication of the state with the new base, a reply would mix the old base
//! with the stepped clock. Server threads (and a step made from a helper thread) answer
//! beside the timekeeping thread, so the gate is a sequence they read at the start and
//! the end of every answer.

use std::sync::atomic::{AtomicU64, Ordering};

/// Odd while a step waits for its publication.
#[derive(Default)]
pub(super) struct StepGate(AtomicU64);

impl StepGate {
    /// Before a step. Called under the engine's lock, as [`Self::open`] is: they never
    /// race.
    pub(super) fn close(&self) {
        if self.0.load(Ordering::Acquire).is_multiple_of(2) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// After a publication: a step before it is over.
    pub(super) fn open(&self) {
        if !self.0.load(Ordering::Acquire).is_multiple_of(2) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// As an answer starts: its ticket, or `None` while closed (the request is dropped;
    /// the client asks again).
    pub(super) fn begin(&self) -> Option<u64> {
        let s = self.0.load(Ordering::Acquire);
        s.is_multiple_of(2).then_some(s)
    }

    /// The sequence as it stands (it changes at every step and at the publication
    /// after it).
    pub(super) fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Whether a reply begun with `ticket` may go: no step came in between.
    pub(super) fn still_open(&self, ticket: u64) -> bool {
        self.0.load(Ordering::Acquire) == ticket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_holds_back_answers_begun_before_it_and_new_ones_until_published() {
        let g = StepGate::default();
        let t = g.begin().expect("open at start");
        assert!(g.still_open(t));
        g.close();
        assert_eq!(g.begin(), None, "closed from the step");
        assert!(
            !g.still_open(t),
            "an answer begun before the step is dropped"
        );
        g.close();
        assert_eq!(g.begin(), None, "a second step keeps it closed");
        g.open();
        let t2 = g.begin().expect("open after the publication");
        assert!(t2 != t && g.still_open(t2) && !g.still_open(t));
        g.open();
        assert!(
            g.still_open(t2),
            "a publication without a step changes nothing"
        );
    }
}
