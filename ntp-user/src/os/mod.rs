//! The operating system around the daemon: files it reads and writes, the pidfile,
//! privileges, and systemd.

pub mod atomic_file;
pub mod config_files;
pub mod drift_file;
pub mod leap_zone;
pub mod log_files;
pub mod notify;
pub mod pidfile;
pub mod privdrop;

/// Nice value of the threads that do control work off the timekeeping thread.
const HELPER_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority (Linux nice values are per thread), so
/// the work it does never competes on equal terms with timekeeping; a thread that
/// inherited `SCHED_FIFO` (`sched_priority`) goes back to the normal scheduler first.
/// Failure only costs that protection, so it is logged, not fatal.
pub fn lower_thread_priority() {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: valid sched_param on the stack; lowering one's own policy needs no privilege.
    unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &raw const normal) };
    // SAFETY: plain syscall on this thread's id; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HELPER_NICE) } != 0 {
        tracing::debug!(
            "Could not lower a helper thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// `sched_priority`: timekeeping (this thread) under `SCHED_FIFO` at `priority`, so it runs
/// as soon as it is ready whatever else the machine does. A refusal (no `CAP_SYS_NICE`,
/// systemd's `RestrictRealtime`) is logged and the daemon runs on, as chronyd does.
pub fn set_realtime_priority(priority: i32) {
    let p = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: valid sched_param on the stack, for the calling thread (0).
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const p) } != 0 {
        tracing::error!(
            "sched_priority {priority}: could not switch to SCHED_FIFO: {}",
            std::io::Error::last_os_error()
        );
    } else {
        tracing::info!("Timekeeping runs under SCHED_FIFO priority {priority}");
    }
}

/// `lock_all`: the daemon's memory, present and future, locked in RAM (no page faults
/// to disk in the middle of an exchange). A refusal is logged and the daemon runs on.
pub fn lock_memory() {
    // SAFETY: plain syscall with flag arguments only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        tracing::error!(
            "lock_all: mlockall failed: {}",
            std::io::Error::last_os_error()
        );
    }
}
