//! The operating system around the daemon: files it reads and writes, the pidfile,
//! privileges, and systemd.

pub mod atomic_file;
pub mod config_files;
pub mod drift_file;
pub mod journal_priority;
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

/// The calling thread back under the normal scheduler (`SCHED_OTHER`, nice 0), whatever
/// policy it inherited.
pub fn normal_scheduling() {
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: valid sched_param on the stack, for the calling thread (0); lowering one's
    // own policy needs no privilege.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &raw const normal) } != 0 {
        tracing::debug!(
            "Could not set a thread's scheduling policy: {}",
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
    // As chronyd: no limit on locked memory first, or threads made later (after the
    // privilege drop takes CAP_IPC_LOCK) could not lock their stacks and would fail.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit on the stack.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } != 0 {
        tracing::warn!(
            "lock_all: could not lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: plain syscall with flag arguments only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        tracing::error!(
            "lock_all: mlockall failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Creates `dir` and its missing parents (those 0755), the last with `mode` and, if given,
/// owned by `owner`; an existing directory is left as it is (a file there is an error).
pub fn create_dir_owned(
    dir: &std::path::Path,
    mode: u32,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => return Ok(()),
        Ok(_) => bail!("{} is not a directory", dir.display()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("checking {}", dir.display()));
        }
        Err(_) => {}
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    if let Some((uid, gid)) = owner
        && let Err(e) = nix::unistd::chown(dir, Some(uid), Some(gid))
    {
        // Not left behind with the wrong owner.
        let _ = std::fs::remove_dir(dir);
        bail!("giving {} to uid {uid}: {e}", dir.display());
    }
    Ok(())
}

/// What chronyd says of a file with more permissions than `allowed` (its
/// `UTI_CheckFilePermissions`): world-readable, world-writable or wrong permissions;
/// `None` when they are fine or the file is not a regular one.
pub fn permission_warning(path: &std::path::Path, allowed: u32) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)?;
    let extra = md.permissions().mode() & 0o777 & !allowed;
    if extra == 0 {
        return None;
    }
    let what = if extra & 0o004 != 0 {
        "World-readable"
    } else if extra & 0o002 != 0 {
        "World-writable"
    } else {
        "Wrong"
    };
    Some(format!("{what} permissions on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_missing_directory_is_made_with_its_mode_and_owner_and_an_existing_one_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let me = (nix::unistd::geteuid(), nix::unistd::getegid());
        let dir = tmp.path().join("a/b/logs");
        create_dir_owned(&dir, 0o750, Some(me)).unwrap();
        let md = std::fs::metadata(&dir).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o750);
        assert_eq!((md.uid(), md.gid()), (me.0.as_raw(), me.1.as_raw()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        create_dir_owned(&dir, 0o750, Some(me)).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700,
            "left as it was"
        );
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(create_dir_owned(&file, 0o750, None).is_err());
    }

    #[test]
    fn file_permissions_are_judged_as_chronyd_judges_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        std::fs::write(&f, "1 MD5 x\n").unwrap();
        for (mode, want) in [
            (0o640, None),
            (0o660, None),
            (0o644, Some("World-readable")),
            (0o642, Some("World-writable")),
            (0o641, None),
            (0o600 | 0o4000, None),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = permission_warning(&f, 0o771);
            assert_eq!(
                w.as_deref().map(|w| w.split(' ').next().unwrap_or("")),
                want,
                "{mode:o}"
            );
        }
        assert_eq!(permission_warning(dir.path(), 0o771), None, "not a file");
    }
}
