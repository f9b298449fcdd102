//! The synchronization engine fed arbitrary replies from three sources at arbitrary
//! times, and arbitrary readings and pulses from two reference clocks (one numbering the
//! other's pulses): no panic, nothing non-finite, no step where makestep forbids one,
//! and no leap second served on a day none can happen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::{
    clock::{Clock, ClockError, KernelClock, KernelFrequency, RealtimeClock, SteeredClock},
    config::SyncConfig,
    engine::{Engine, SourceOptions, WireInfo},
    refclock::Reading,
    report::Stamp,
};
use std::cell::Cell;

/// 2027-01-15 00:00 UTC: no leap second can happen that day.
const START_NS: u64 = 1_800_000_000_000_000_000;

struct FakeKernel {
    now: Cell<u64>,
    steps: u32,
}

impl RealtimeClock for FakeKernel {
    fn now_ns(&self) -> u64 {
        self.now.get()
    }
}

impl KernelClock for FakeKernel {
    fn set_frequency(&mut self, _: KernelFrequency) -> Result<(), ClockError> {
        Ok(())
    }
    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        assert!(offset.is_finite());
        self.steps += 1;
        Ok(())
    }
    fn set_sync_status(&mut self, _: bool, leap: u8, max: f64, est: f64) -> Result<(), ClockError> {
        assert!(leap == 0 || leap == 3, "leap {leap} on a day without one");
        assert!(max.is_finite() && est.is_finite());
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let kernel = FakeKernel {
        now: Cell::new(START_NS),
        steps: 0,
    };
    let clock = SteeredClock::new(kernel, 0.0, 83_333e-6, 0.5);
    let sync = SyncConfig::default(); // no makestep: never a step
    let mut e = Engine::new(clock, &sync, None, 1e-7, None);
    let ids: Vec<usize> = (1..=3u8)
        .map(|i| e.add_source(([192, 0, 2, i], 123).into(), SourceOptions::default()))
        .collect();
    let wire = WireInfo {
        local: ([192, 0, 2, 100], 40000).into(),
        tx: Stamp::Kernel,
        rx: Stamp::Kernel,
    };
    let refclocks = "refclock SHM 0 poll 0 refid GPS\nrefclock SHM 1 pps lock GPS poll 0 refid PPS\n";
    let Ok(config) = ntp_proto::config::parse_str(refclocks, std::path::Path::new("f")) else {
        return;
    };
    let gps = e.add_refclock(&config.refclocks[0]);
    let pps = e.add_refclock(&config.refclocks[1]);
    let f64_at = |c: &[u8], at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&c[at..at + 8]);
        f64::from_bits(u64::from_be_bytes(b))
    };
    // Each 52-byte chunk: which source, how long until the reply arrives, then a reply.
    for (n, chunk) in data.chunks_exact(52).enumerate() {
        let id = ids[usize::from(chunk[0]) % ids.len()];
        let gap_ms = u64::from(u16::from_be_bytes([chunk[1], chunk[2]]));
        let cookie = n as u64 * 7919 + 1;
        let now = e.clock().kernel().now.get();
        let Some(_) = e.transmit(id, cookie) else {
            continue;
        };
        e.transmitted(id, cookie, now);
        let mut reply = chunk[4..52].to_vec();
        if chunk[3] & 1 == 0 {
            reply[24..32].copy_from_slice(&cookie.to_be_bytes());
        }
        let t4 = now + gap_ms * 1_000_000;
        e.clock().kernel().now.set(t4);
        e.clock_mut().tick();
        let _ = e.receive(id, &reply, t4, wire);
        let age_ns = u64::from(chunk[12]) * 10_000_000;
        let reading = Reading::Time {
            sys_ns: t4.saturating_sub(age_ns),
            offset: f64_at(chunk, 4),
            leap: chunk[13] & 3,
        };
        let _ = e.refclock_reading(gps, reading);
        let pulse = Reading::Pulse {
            sys_ns: t4,
            second: f64_at(chunk, 14),
            // Any bits: NaN, negative and huge errors must be taken without harm.
            err: f64_at(chunk, 4),
        };
        let _ = e.refclock_reading(pps, pulse);
        let _ = e.refclock_tick(gps);
        let _ = e.refclock_tick(pps);
        let r = e.reference(t4);
        assert!(
            r.leap == 0 || r.leap == 3,
            "leap {} served on a day without one",
            r.leap
        );
        assert!(r.rate.is_finite());
        let t = e.tracking_report(t4);
        for v in [
            t.system_time,
            t.last_offset,
            t.rms_offset,
            t.frequency_ppm,
            t.skew_ppm,
        ] {
            assert!(v.is_finite(), "{t:?}");
        }
        assert!(e.clock().frequency().is_finite());
    }
    assert_eq!(e.clock().kernel().steps, 0, "stepped without makestep");
});
