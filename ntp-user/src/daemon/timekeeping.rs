//! The daemon's timekeeping loops: publishing the server state on a period, telling the
//! kernel the synchronization state after each clock update, ending slews on time, and
//! the periodic chore of saving the driftfile.

use super::shared::Shared;
use crate::{
    clock,
    clock::DaemonClock,
    lock,
    os::{drift_file, notify},
    sources::poll_task::SourceCommand,
};
use ntp_common::state::LEAP_WINDOW_AFTER_NS;
use ntp_proto::{
    clock::{EngineClock, StepDetector},
    drift::Drift,
};
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tracing::{debug, warn};

/// How often the state is republished (the kernel's staleness limit is counted from it).
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the driftfile is written (and at exit).
const DRIFT_SAVE: Duration = Duration::from_hours(1);

impl Shared {
    /// After a clock update: publishes the new state and tells the kernel whether the
    /// clock is synchronized and of any leap second (which also lets its 11-minute mode
    /// keep the RTC in step, chrony's rtcsync).
    pub(super) fn on_clock_update(&self) {
        if let Err(e) = self.publish() {
            warn!("Publishing server state failed: {e:#}");
        }
        let now = clock::realtime_ns().unwrap_or_default();
        let mut e = lock(&self.engine);
        let status = e.sync_status();
        if let DaemonClock::System(c) = e.clock_mut() {
            match status {
                Some((leap, max_error, est_error)) => {
                    c.set_status(true, self.served_leap(leap, now), max_error, est_error);
                }
                None => c.set_status(false, 0, 16.0, 16.0),
            }
        }
        // The correction may have planned a new slew: the timer must wake for it.
        self.slew_wake.notify_one();
    }

    /// Compares the system clock with the monotonic clock: a step ntpx did not make resets
    /// the sources (their samples are on the old scale).
    fn check_for_external_step(&self, detector: &mut StepDetector) {
        let (Ok(real), Ok(mono)) = (clock::realtime_ns(), clock::monotonic_ns()) else {
            return;
        };
        let generation = lock(&self.engine).clock().generation();
        if let Some(step) = detector.check(real, mono, generation) {
            let log = lock(&self.engine).external_step(step);
            self.journal.emit(log);
            self.on_clock_update();
            // The sources start over at their shortest poll: waiting out the old interval
            // would leave the clock unsteered for up to 2^maxpoll seconds.
            self.send_sources(None, SourceCommand::Burst);
        }
    }

    /// Writes the current frequency estimate to the driftfile, if one is configured.
    pub(super) fn save_drift(&self) {
        let Some(path) = &self.config.driftfile else {
            return;
        };
        let t = match clock::realtime_ns() {
            Ok(now) => lock(&self.engine).tracking_report(now),
            Err(e) => {
                warn!("Not writing the driftfile: {e:#}");
                return;
            }
        };
        let d = Drift {
            freq_ppm: t.frequency_ppm,
            skew_ppm: t.skew_ppm,
        };
        if let Err(e) = drift_file::write(path, &d) {
            warn!("{e:#}");
        }
    }
}

/// Publishes on a period, with the chores that run on multiples of it.
pub(super) async fn publish_loop(sh: Arc<Shared>) -> anyhow::Result<()> {
    // Four publications fit in the staleness limit, whatever it is set to.
    let period = (sh.config.xdp_stale_limit / 4).clamp(Duration::from_millis(50), PUBLISH_INTERVAL);
    let mut tick = tokio::time::interval(period);
    let every = |d: Duration| (d.as_millis() / period.as_millis().max(1)).max(1) as u64;
    let drift_every = every(DRIFT_SAVE);
    let mut n: u64 = 0;
    let mut steps = StepDetector::default();
    loop {
        let scheduled = tick.tick().await;
        let late = tokio::time::Instant::now().saturating_duration_since(scheduled);
        sh.counters
            .publish_late_max_ns
            .fetch_max(late.as_nanos() as u64, Ordering::Relaxed);
        sh.check_for_external_step(&mut steps);
        match sh.publish() {
            // systemd's watchdog hears from the path that keeps the kernel's state fresh:
            // a daemon stuck there is restarted.
            Ok(()) => {
                if let Err(e) = notify::notify("WATCHDOG=1") {
                    debug!("{e:#}");
                }
            }
            Err(e) => warn!("Publishing server state failed: {e:#}"),
        }
        n += 1;
        if n.is_multiple_of(drift_every) {
            sh.save_drift();
        }
    }
}

/// Publishes just after a scheduled leap second, so the daemon takes up the kernel's new
/// TAI offset at once, and just after chrony's window following it, when a leap the
/// kernel did not take is the served clock's to take; not up to a period later.
pub(super) async fn leap_timer(sh: Arc<Shared>) -> anyhow::Result<()> {
    loop {
        let at = lock(&sh.state).timebase.leap_tai_ns;
        let now = clock::tai_ns()?;
        let next = [at, at + LEAP_WINDOW_AFTER_NS]
            .into_iter()
            .find(|&t| at != 0 && t > now);
        let wait = next.map_or(Duration::from_secs(1), |t| {
            Duration::from_nanos(t - now) + Duration::from_millis(1)
        });
        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        if let Some(t) = next
            && clock::tai_ns()? >= t
            && let Err(e) = sh.publish()
        {
            warn!("Publishing server state after the leap second failed: {e:#}");
        }
    }
}

/// Runs the steered clock's slew timer: at each planned change of the slew rate (or when
/// an update planned a new slew), books the slew, sets the next rate, and republishes if
/// the served rate changed, so both answering paths stay exact.
pub(super) async fn slew_timer(sh: Arc<Shared>) -> anyhow::Result<()> {
    loop {
        let (changed, next) = lock(&sh.engine).clock_mut().tick();
        if changed && let Err(e) = sh.publish() {
            warn!("Publishing server state failed: {e:#}");
        }
        let wait = match next {
            Some(at) => Duration::from_nanos(at.saturating_sub(clock::realtime_ns()?)),
            None => Duration::from_hours(1),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                if let Some(at) = next {
                    let late = clock::realtime_ns()?.saturating_sub(at);
                    sh.counters.slew_late_max_ns.fetch_max(late, Ordering::Relaxed);
                }
            }
            () = sh.slew_wake.notified() => {}
        }
    }
}
