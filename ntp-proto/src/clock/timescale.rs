//! The NTP clock's reading as a function of the system clock's, for the recent past as
//! well as now, in the scale the clock has *now*.
//!
//! A timestamp the kernel took (a request's departure, a reply's arrival) is a system
//! clock reading. Converted the moment it is used, it must land on the time scale in force
//! at that moment, however the NTP clock was corrected since: so the conversion keeps the
//! points where its rate changed and restates them with every correction, as the samples
//! are restated.

use std::collections::VecDeque;

/// How far back conversions stay exact, seconds of system time.
const KEEP_SECS: f64 = 600.0;
/// Most points kept.
const KEEP_POINTS: usize = 64;

/// A piecewise-linear map from system seconds to NTP-clock seconds.
#[derive(Clone, Debug)]
pub struct Timescale {
    /// (system, NTP clock) where each segment starts, oldest first.
    points: VecDeque<(f64, f64)>,
    /// NTP-clock seconds per system second after the last point.
    rate: f64,
}

impl Timescale {
    /// The NTP clock reads `cooked` at system time `raw` and runs `rate` times as fast.
    pub fn new(raw: f64, cooked: f64, rate: f64) -> Self {
        Timescale {
            points: VecDeque::from([(raw, cooked)]),
            rate,
        }
    }

    /// The NTP clock's reading at system time `raw`.
    pub fn cooked(&self, raw: f64) -> f64 {
        let i = self.points.partition_point(|p| p.0 <= raw);
        if i == self.points.len() {
            let (r, c) = self.points[i - 1];
            return c + (raw - r) * self.rate;
        }
        if i == 0 {
            // Older than anything kept: the oldest segment, extended.
            let (r0, c0) = self.points[0];
            let slope = match self.points.get(1) {
                Some(&(r1, c1)) if r1 > r0 => (c1 - c0) / (r1 - r0),
                _ => self.rate,
            };
            return c0 + (raw - r0) * slope;
        }
        let ((r0, c0), (r1, c1)) = (self.points[i - 1], self.points[i]);
        c0 + (raw - r0) * (c1 - c0) / (r1 - r0)
    }

    /// NTP-clock seconds per system second now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// From system time `at` on, the NTP clock runs `rate` times as fast as the system
    /// clock (it reads on without a jump).
    pub fn set_rate(&mut self, at: f64, rate: f64) {
        let c = self.cooked(at);
        self.push(at, c);
        self.rate = rate;
    }

    /// The NTP clock's scale changed at system time `at`: it was moved forward by
    /// `correction` and runs `dfreq` faster, and every reading, past or future, is restated
    /// as if it always had.
    pub fn restate(&mut self, at: f64, correction: f64, dfreq: f64) {
        let when = self.cooked(at);
        self.push(at, when);
        for p in &mut self.points {
            p.1 += correction + (p.1 - when) * dfreq;
        }
        self.rate *= 1.0 + dfreq;
    }

    /// The system clock was stepped by `step` seconds: the instants kept read that much
    /// more on it now.
    pub fn shift_system(&mut self, step: f64) {
        for p in &mut self.points {
            p.0 += step;
        }
    }

    fn push(&mut self, raw: f64, cooked: f64) {
        // Points stay in system-time order; a point at or before the last replaces the tail
        // (nothing was converted in between).
        while self.points.back().is_some_and(|p| p.0 >= raw) && self.points.len() > 1 {
            self.points.pop_back();
        }
        if self.points.back().is_some_and(|p| p.0 >= raw) {
            self.points[0] = (raw, cooked);
        } else {
            self.points.push_back((raw, cooked));
        }
        while self.points.len() > KEEP_POINTS
            || (self.points.len() > 2 && raw - self.points[1].0 > KEEP_SECS)
        {
            self.points.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_follow_each_segment() {
        let mut t = Timescale::new(0.0, 1.0, 1.0);
        t.set_rate(10.0, 0.5);
        t.set_rate(20.0, 1.0);
        assert!((t.cooked(5.0) - 6.0).abs() < 1e-12);
        assert!((t.cooked(15.0) - 13.5).abs() < 1e-12);
        assert!((t.cooked(30.0) - 26.0).abs() < 1e-12);
        assert!(
            (t.cooked(-10.0) + 9.0).abs() < 1e-12,
            "before the first point"
        );
    }

    #[test]
    fn a_correction_restates_the_past_too() {
        let mut t = Timescale::new(0.0, 0.0, 1.0);
        t.set_rate(10.0, 0.9);
        let before = t.cooked(12.0);
        // Moved forward 0.5 s at system 15 s.
        t.restate(15.0, 0.5, 0.0);
        assert!((t.cooked(12.0) - before - 0.5).abs() < 1e-12);
        assert!((t.cooked(16.0) - (t.cooked(15.0) + 0.9)).abs() < 1e-12);
        // 100 ppm faster from system 20 s: readings 10 s earlier move back 1 ms.
        let (a, b) = (t.cooked(10.0), t.cooked(20.0));
        t.restate(20.0, 0.0, 1e-4);
        assert!((t.cooked(20.0) - b).abs() < 1e-12);
        assert!((t.cooked(10.0) - (a - (b - a) * 1e-4)).abs() < 1e-12);
        // A step of the system clock: old instants read more on it now.
        let c = t.cooked(18.0);
        t.shift_system(100.0);
        assert!((t.cooked(118.0) - c).abs() < 1e-12);
    }
}
