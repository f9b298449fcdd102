//! A NIC's clock (PHC) mapped onto the NTP clock, as chrony's hardware-clock tracking
//! maps it: readings of the PHC against the system clock (from the `PTP_SYS_OFFSET*`
//! ioctls) are kept, and a straight line through the latest of them turns a NIC
//! timestamp into local time.
//!
//! The system times of the readings are taken onto the NTP clock's current scale when
//! the line is fitted (the engine's clock keeps its recent past), so the daemon's own
//! slews and frequency changes of the system clock do not bend the line: chrony restates
//! its samples at every such change for the same reason.

use crate::sync::regression::find_best_line;
use std::collections::VecDeque;

/// Most readings kept (chrony's limit).
pub const MAX_SAMPLES: usize = 64;
/// Largest believable frequency difference between the PHC and the system clock.
const MAX_FREQ_OFFSET: f64 = 2.0 / 3.0;

/// One reading: the PHC's time and the system time it was taken at.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reading {
    phc_ns: i128,
    sys_ns: u64,
    err: f64,
}

/// The PHC of one interface, tracked against the system clock.
#[derive(Clone, Debug)]
pub struct HwClock {
    min_samples: usize,
    max_samples: usize,
    /// The NIC's timestamping precision, seconds.
    precision: f64,
    readings: VecDeque<Reading>,
    /// The system clock's step count when the readings were taken: after a step their
    /// system times are on another scale.
    generation: u64,
}

/// The line through the readings: PHC seconds since the newest reading as a function of
/// local seconds since it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fit {
    /// The newest reading.
    phc_ref: i128,
    local_ref: f64,
    /// PHC offset at the newest reading's local time (seconds) and rate (PHC seconds per
    /// local second).
    offset: f64,
    rate: f64,
}

impl HwClock {
    /// A clock fitted over `min_samples..=max_samples` readings (2-64) whose timestamps
    /// are good to `precision` seconds.
    pub fn new(min_samples: usize, max_samples: usize, precision: f64) -> Self {
        let min_samples = min_samples.clamp(2, MAX_SAMPLES);
        HwClock {
            min_samples,
            max_samples: max_samples.clamp(min_samples, MAX_SAMPLES),
            precision,
            readings: VecDeque::with_capacity(MAX_SAMPLES),
            generation: 0,
        }
    }

    /// Readings held.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether no reading is held.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// Takes a reading: the PHC showed `phc_ns` at system time `sys_ns` (taken at the
    /// system clock's step count `generation`), give or take `err` seconds. A reading
    /// after a step of the system clock, or that does not follow the last one in both
    /// clocks (a step of either), starts the line over; so does one the line does not pass
    /// within its error, or a line whose rate is not believable (chrony's reset).
    pub fn add(
        &mut self,
        phc_ns: i128,
        sys_ns: u64,
        err: f64,
        generation: u64,
        local_at: impl Fn(u64) -> f64,
    ) {
        if generation != self.generation {
            self.readings.clear();
            self.generation = generation;
        }
        let r = Reading {
            phc_ns,
            sys_ns,
            err: err.max(self.precision),
        };
        if self
            .readings
            .back()
            .is_some_and(|l| r.phc_ns <= l.phc_ns || r.sys_ns <= l.sys_ns)
        {
            self.readings.clear();
        }
        if self.readings.len() == self.max_samples {
            self.readings.pop_front();
        }
        self.readings.push_back(r);
        if self.readings.len() < 2 {
            return;
        }
        match self.fit(&local_at) {
            Some(f) if f.offset.abs() <= r.err && (f.rate - 1.0).abs() <= MAX_FREQ_OFFSET => {}
            _ => {
                self.readings.clear();
                self.readings.push_back(r);
            }
        }
    }

    fn fit(&self, local_at: &impl Fn(u64) -> f64) -> Option<Fit> {
        let last = *self.readings.back()?;
        let local_ref = local_at(last.sys_ns);
        if self.readings.len() == 1 {
            return None;
        }
        let x: Vec<f64> = self
            .readings
            .iter()
            .map(|r| local_at(r.sys_ns) - local_ref)
            .collect();
        let y: Vec<f64> = self
            .readings
            .iter()
            .map(|r| (r.phc_ns - last.phc_ns) as f64 * 1e-9)
            .collect();
        let (offset, rate) = if self.readings.len() == 2 {
            let dx = x[1] - x[0];
            if dx <= 0.0 {
                return None;
            }
            (0.0, (y[1] - y[0]) / dx)
        } else {
            let w = vec![1.0; x.len()];
            let f = find_best_line(&x, &y, &w, 0, self.min_samples.min(x.len()))?;
            (f.a, f.b)
        };
        Some(Fit {
            phc_ref: last.phc_ns,
            local_ref,
            offset,
            rate,
        })
    }

    /// The local time (the NTP clock's reading, on its current scale) at which the PHC
    /// showed `phc_ns`; `None` until two readings are held, or when the system clock was
    /// stepped since they were taken (`generation`: its step count now).
    pub fn cook(
        &self,
        phc_ns: i128,
        generation: u64,
        local_at: impl Fn(u64) -> f64,
    ) -> Option<f64> {
        if generation != self.generation {
            return None;
        }
        let f = self.fit(&local_at)?;
        if f.rate <= 0.0 {
            return None;
        }
        let dy = (phc_ns - f.phc_ref) as f64 * 1e-9;
        Some(f.local_ref + (dy - f.offset) / f.rate)
    }

    /// The error of a cooked timestamp: the newest reading's.
    pub fn error(&self) -> f64 {
        self.readings.back().map_or(f64::INFINITY, |r| r.err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system clock whose NTP-clock reading is exact (no correction).
    fn local(ns: u64) -> f64 {
        ns as f64 * 1e-9
    }

    #[test]
    fn nic_timestamps_are_mapped_through_the_phc_readings() {
        // The PHC runs 37 s ahead (TAI) and 20 ppm fast; readings every second, ±50 ns.
        let phc_at = |sys: u64| (sys as f64 * (1.0 + 20e-6)) as i128 + 37_000_000_000;
        let mut hw = HwClock::new(2, 16, 1e-8);
        let noise = [30i128, -50, 10, 45, -20, 0, -35, 25];
        for k in 0..16u64 {
            let sys = 1_000_000_000_000 + k * 1_000_000_000;
            hw.add(phc_at(sys) + noise[k as usize % 8], sys, 5e-8, 0, local);
        }
        assert!(hw.len() >= 8, "{}", hw.len());
        // A packet stamped by the NIC half a second after the last reading.
        let sys = 1_000_000_000_000 + 15_500_000_000;
        let cooked = hw.cook(phc_at(sys), 0, local).expect("fitted");
        assert!(
            (cooked - local(sys)).abs() < 50e-9,
            "{}",
            cooked - local(sys)
        );
    }

    #[test]
    fn a_step_of_either_clock_starts_over() {
        let mut hw = HwClock::new(2, 16, 1e-8);
        for k in 0..5i128 {
            let sys = 1_000_000_000_000 + k as u64 * 1_000_000_000;
            hw.add(i128::from(sys) + 5, sys, 1e-8, 0, local);
        }
        assert_eq!(hw.len(), 5);
        // The PHC stepped back (ptp4l stepping it): only the new reading stays.
        hw.add(1_000_000_000_000, 1_006_000_000_000, 1e-8, 0, local);
        assert_eq!(hw.len(), 1);
        assert_eq!(
            hw.cook(1_000_000_000_000, 0, local),
            None,
            "one reading is no line"
        );
        // A reading far off the line (a 1 ms jump) starts over too.
        let mut hw = HwClock::new(2, 16, 1e-8);
        for k in 0..5u64 {
            let sys = 1_000_000_000_000 + k * 1_000_000_000;
            hw.add(i128::from(sys), sys, 1e-8, 0, local);
        }
        let sys = 1_005_000_000_000;
        hw.add(i128::from(sys) + 1_000_000, sys, 1e-8, 0, local);
        assert_eq!(hw.len(), 1);
        // The system clock was stepped: nothing is cooked until readings on the new
        // scale come, and the first of them starts the line over.
        let mut hw = HwClock::new(2, 16, 1e-8);
        for k in 0..5u64 {
            let sys = 1_000_000_000_000 + k * 1_000_000_000;
            hw.add(i128::from(sys), sys, 1e-8, 0, local);
        }
        assert!(hw.cook(1_004_500_000_000, 0, local).is_some());
        assert_eq!(hw.cook(1_004_500_000_000, 1, local), None);
        hw.add(1_005_000_000_000, 1_005_000_000_000, 1e-8, 1, local);
        assert_eq!(hw.len(), 1);
    }

    #[test]
    fn the_line_is_on_the_ntp_clocks_current_scale() {
        // The daemon made the system clock run 100 ppm slow from 5 s on; the NTP clock
        // (what `local_at` gives) is unaffected, and so is the mapping.
        let bend = 1_005_000_000_000u64;
        let sys_of_true = |t: u64| {
            if t <= bend {
                t
            } else {
                bend + ((t - bend) as f64 * (1.0 - 100e-6)) as u64
            }
        };
        let true_of_sys = |s: u64| {
            if s <= bend {
                s as f64 * 1e-9
            } else {
                (bend as f64 + (s - bend) as f64 / (1.0 - 100e-6)) * 1e-9
            }
        };
        let mut hw = HwClock::new(2, 16, 1e-8);
        for k in 0..12u64 {
            let t = 1_000_000_000_000 + k * 1_000_000_000;
            hw.add(i128::from(t), sys_of_true(t), 1e-8, 0, true_of_sys);
        }
        let t = 1_000_000_000_000 + 11_500_000_000u64;
        let cooked = hw.cook(i128::from(t), 0, true_of_sys).expect("fitted");
        assert!(
            (cooked - t as f64 * 1e-9).abs() < 5e-9,
            "{}",
            cooked - t as f64 * 1e-9
        );
    }
}
