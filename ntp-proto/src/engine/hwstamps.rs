//! NIC timestamps in the engine's terms: PHC readings go into an interface's
//! [`HwClock`] with their system times taken onto the NTP clock's scale, and a NIC
//! timestamp comes out as the system time the engine measures with.

use super::Engine;
use crate::clock::EngineClock;
use crate::hwclock::HwClock;
use crate::refclock::Reading;
use crate::refclock_formats::{PhcTriple, phc_reading};

impl<C: EngineClock> Engine<C> {
    /// Takes one poll's PHC readings into `hw` (`precision`: the system clock's).
    pub fn hw_reading(&self, hw: &mut HwClock, readings: &[PhcTriple], precision: f64) {
        if let Some((sys_ns, phc_ns, err)) = phc_reading(readings, precision) {
            let generation = self.clock.generation();
            hw.add(phc_ns, sys_ns, err, generation, |ns| {
                self.clock.local_at(ns)
            });
        }
    }

    /// The system time (ns) of NIC timestamp `phc_ns` through `hw`, once it can tell.
    pub fn hw_to_system_ns(&self, hw: &HwClock, phc_ns: i128) -> Option<u64> {
        let local = hw.cook(phc_ns, self.clock.generation(), |ns| {
            self.clock.local_at(ns)
        })?;
        Some(self.clock.system_at_local(local))
    }

    /// A pulse the PHC timestamped on a pin (`refclock PHC ...:extpps`): its system time
    /// through `hw`, and where in its second the system clock was at it (the pulse marks
    /// the start of the reference's second); `None` until `hw` can tell.
    pub fn phc_pulse(&self, hw: &HwClock, phc_ns: i128) -> Option<Reading> {
        let sys_ns = self.hw_to_system_ns(hw, phc_ns)?;
        Some(Reading::Pulse {
            sys_ns,
            second: (sys_ns % 1_000_000_000) as f64 * 1e-9,
            err: hw.error(),
        })
    }
}
