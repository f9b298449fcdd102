//! The daemon's state shared by its tasks, and publication of the server state to both
//! answering paths.

use super::{client_log::ClientLog, counters::DaemonCounters};
use crate::{
    clock, lock,
    os::log_files::Journal,
    sources::SharedEngine,
    sources::SyncHandle,
    xdp::{KernelPath, Publisher},
};
use anyhow::Result;
use ntp_common::ServerState;
use ntp_proto::{
    acl::AccessTable,
    config::Config,
    leaptz::{self, Leap},
    reference::{PassedLeap, PublishParams, passed_leap, schedule_leap, server_state},
    server::Secrets,
    serving::Wish,
};
use std::{
    path::PathBuf,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicI32, Ordering},
    },
};

/// What the daemon's tasks share.
pub(super) struct Shared {
    pub config: Config,
    pub config_path: PathBuf,
    pub acl: AccessTable,
    /// The keyfile's keys and the NTS cookie keys (rotated: `ntsrotate`).
    pub secrets: std::sync::RwLock<Secrets>,
    pub params: PublishParams,
    /// The kernel's TAI - UTC offset, seconds, as last read.
    pub tai_offset_s: AtomicI32,
    /// The state both paths serve from, as last published.
    pub state: Mutex<ServerState>,
    pub kernel: Option<Mutex<KernelPath>>,
    /// Publishes the state to the fast path without taking `kernel`'s lock.
    pub publisher: Option<Publisher>,
    /// Where the configuration asks to serve (`-i`, `bindaddress`).
    pub wish: Wish,
    /// What the last pass over the interfaces could not do.
    pub pending: Mutex<super::interfaces::Pending>,
    /// The addresses the fast path answers for, as last set (`None`: not yet).
    pub served: Mutex<Option<Vec<std::net::IpAddr>>>,
    /// The kernel's client log and counters on handles of their own: reading them takes
    /// no lock the publication needs.
    pub monitor: Option<crate::xdp::KernelMonitor>,
    pub counters: DaemonCounters,
    pub clients: ClientLog,
    /// The clients of the NTS-KE server, rate-limited with `ntsratelimit`.
    pub nts_ke_clients: ClientLog,
    pub engine: SharedEngine,
    pub journal: std::sync::Arc<Journal>,
    pub leaps: Vec<Leap>,
    pub sync: OnceLock<SyncHandle>,
    /// `hwtimestamp`: the interfaces whose NIC stamps are in use (set at start).
    pub hw: OnceLock<std::sync::Arc<crate::net::hw_timestamping::HwClocks>>,
    /// Wakes the slew timer when an update planned a new slew.
    pub slew_wake: tokio::sync::Notify,
    /// Set once the orderly exit has run.
    pub finished: std::sync::atomic::AtomicBool,
    /// Closed from a step of the system clock to the publication after it (see
    /// [`Shared::withdraw`]).
    pub step_gate: super::step_gate::StepGate,
    /// Set once the control socket is bound: only then is it ours to remove at exit.
    pub socket_bound: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The secrets, for reading (a panic elsewhere while rotating cannot have left them
    /// half-written: a rotation replaces them whole).
    pub(super) fn secrets(&self) -> std::sync::RwLockReadGuard<'_, Secrets> {
        self.secrets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Recomputes the state from the reference and publishes it to both paths.
    pub(super) fn publish(&self) -> Result<()> {
        // The engine stays locked until both paths have the state, and is locked before
        // the clock is read: a step made meanwhile (ntpxc makestep on a helper thread)
        // would leave them serving the old base.
        let mut engine = lock(&self.engine);
        // The kernel's TAI offset changes at leap seconds (and with ADJ_TAI): read with
        // the clock at every publication, or the kernel would serve a whole second off.
        let (now_tai, tai) = clock::tai_with_offset()?;
        let old_tai = self.tai_offset_s.swap(tai, Ordering::Relaxed);
        let now_unix = now_tai.wrapping_sub(tai as i64 as u64 * 1_000_000_000);
        let passed = passed_leap(&lock(&self.state).timebase, now_tai, tai, old_tai);
        if let PassedLeap::TakeNow(step) = passed {
            self.journal.emit(engine.leap_step(step));
        }
        let mut reference = engine.reference(now_unix);
        reference.leap = self.served_leap(reference.leap, now_unix);
        let mut st = server_state(&reference, &self.params, now_tai, tai);
        let mut served = lock(&self.state);
        schedule_leap(&mut st, now_tai, tai, &served, passed);
        *served = st;
        drop(served);
        // A step that withdrew the daemon's path is over: the state has the new base.
        self.step_gate.open();
        if let Some(p) = &self.publisher {
            p.publish(&st);
        }
        drop(engine);
        Ok(())
    }

    /// Withdraws both paths' service before the system clock is stepped: the kernel
    /// passes every request to the daemon, and the daemon's path (on server threads, or
    /// a step made from a helper thread) answers nothing until the next publication, so
    /// no reply mixes the old base with the stepped clock.
    pub(super) fn withdraw(&self) {
        if let Some(p) = &self.publisher {
            p.withdraw();
        }
        self.step_gate.close();
    }

    /// The leap indicator to serve and to give the kernel at `now_unix_ns`: with
    /// `leapsectz`, the tz database's, whatever the sources say (chrony's rule: the
    /// database is authoritative); without it, the sources' majority.
    pub(super) fn served_leap(&self, sources: u8, now_unix_ns: u64) -> u8 {
        if sources == ntp_common::wire::LEAP_UNSYNC || self.leaps.is_empty() {
            return sources;
        }
        leaptz::leap_indicator(&self.leaps, (now_unix_ns / 1_000_000_000) as i64)
    }

    /// A kernel `CLOCK_REALTIME` timestamp on `CLOCK_TAI`, the timebase's clock.
    pub(super) fn tai_of(&self, realtime_ns: u64) -> u64 {
        let offset = self.tai_offset_s.load(Ordering::Relaxed) as i64 as u64 * 1_000_000_000;
        realtime_ns.wrapping_add(offset)
    }
}
