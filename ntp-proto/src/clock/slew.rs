//! Slewing an offset into a real clock by running it at a different frequency for a
//! while, never faster than `maxslewrate` (as chronyd does; adjtime's fixed 500 ppm would
//! ignore the setting).

use super::MAX_KERNEL_FREQ as KERNEL_FREQ_LIMIT;

/// The slew in progress over a base frequency.
#[derive(Clone, Debug)]
pub struct FreqSlew {
    max_rate: f64,
    base: f64,
    /// Offset left at `t_ref`, seconds (signed).
    remaining: f64,
    /// Extra frequency in force (signed ratio; zero when not slewing).
    rate: f64,
    t_ref: f64,
}

impl FreqSlew {
    /// No slew, base frequency `base`, slews at most `max_rate` fast.
    pub fn new(max_rate: f64, base: f64) -> Self {
        FreqSlew {
            max_rate,
            base,
            remaining: 0.0,
            rate: 0.0,
            t_ref: 0.0,
        }
    }

    /// Offset still to slew at time `t`.
    pub fn remaining_at(&self, t: f64) -> f64 {
        let done = self.rate * (t - self.t_ref).max(0.0);
        if done.abs() >= self.remaining.abs() {
            0.0
        } else {
            self.remaining - done
        }
    }

    /// The extra frequency in force.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The frequency the kernel must run at now.
    pub fn kernel_frequency(&self) -> f64 {
        self.base + self.rate
    }

    /// When the slew in progress completes, if one is.
    pub fn deadline(&self) -> Option<f64> {
        (self.rate != 0.0).then(|| self.t_ref + self.remaining.abs() / self.rate.abs())
    }

    fn collapse(&mut self, t: f64) {
        self.remaining = self.remaining_at(t);
        self.t_ref = t;
    }

    fn restart(&mut self) {
        // The extra rate fits inside the kernel's range next to the base frequency.
        let headroom = (KERNEL_FREQ_LIMIT - self.base.abs()).max(0.0);
        let rate = self.max_rate.min(headroom);
        self.rate = if self.remaining == 0.0 || rate == 0.0 {
            0.0
        } else {
            rate.copysign(self.remaining)
        };
    }

    /// Adds `offset` to the slew at `t`; returns the kernel frequency to set.
    pub fn add(&mut self, t: f64, offset: f64) -> f64 {
        self.collapse(t);
        self.remaining += offset;
        self.restart();
        self.kernel_frequency()
    }

    /// Changes the base frequency at `t`; returns the kernel frequency to set.
    pub fn set_base(&mut self, t: f64, base: f64) -> f64 {
        self.collapse(t);
        self.base = base;
        self.restart();
        self.kernel_frequency()
    }

    /// Ends the slew at `t` (before a step); returns what was left of it.
    pub fn cancel(&mut self, t: f64) -> f64 {
        self.collapse(t);
        let left = self.remaining;
        self.remaining = 0.0;
        self.rate = 0.0;
        left
    }

    /// At `t`: if the slew has completed, stops it and returns the kernel frequency to set.
    pub fn tick(&mut self, t: f64) -> Option<f64> {
        if self.rate != 0.0 && self.remaining_at(t) == 0.0 {
            self.collapse(t);
            self.remaining = 0.0;
            self.rate = 0.0;
            return Some(self.kernel_frequency());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slews_at_the_allowed_rate_and_stops() {
        let mut s = FreqSlew::new(100e-6, 10e-6);
        assert_eq!(s.kernel_frequency(), 10e-6);
        let f = s.add(0.0, 0.001);
        assert!((f - 110e-6).abs() < 1e-15);
        assert_eq!(s.deadline(), Some(10.0));
        assert!((s.remaining_at(5.0) - 0.0005).abs() < 1e-12);
        assert_eq!(s.tick(5.0), None);
        assert_eq!(s.tick(10.0), Some(10e-6));
        assert_eq!(s.remaining_at(20.0), 0.0);
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn never_leaves_the_kernel_range() {
        let mut s = FreqSlew::new(83_333e-6, 450e-6);
        // Only 50 ppm of headroom above a 450 ppm base.
        assert!((s.add(0.0, 0.01) - 500e-6).abs() < 1e-15);
        assert!(
            (s.add(0.0, -0.02) - 400e-6).abs() < 1e-15,
            "a negative slew runs below the base"
        );
        assert!((s.remaining_at(0.0) + 0.01).abs() < 1e-12);
    }

    #[test]
    fn cancel_and_base_changes_keep_the_remaining_offset() {
        let mut s = FreqSlew::new(500e-6, 0.0);
        s.add(0.0, -0.002);
        assert!((s.set_base(2.0, 20e-6) - (20e-6 - 480e-6)).abs() < 1e-15);
        assert!((s.remaining_at(2.0) + 0.001).abs() < 1e-12);
        assert!((s.cancel(3.0) + 0.00052).abs() < 1e-12);
        assert_eq!(s.kernel_frequency(), 20e-6);
    }
}
