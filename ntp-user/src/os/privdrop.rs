//! Dropping root after start-up (`ntpxd -u USER`): everything that needs privileges (XDP
//! attached, maps open, port 123 bound) is done by then; what is kept is `CAP_SYS_TIME` when
//! the clock is steered, nothing with `-x`.

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, User, setgid, setgroups, setuid};

/// `CAP_SYS_TIME`'s bit.
const CAP_SYS_TIME: u32 = 25;
/// _`LINUX_CAPABILITY_VERSION_3`.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The capability sets to keep: `CAP_SYS_TIME` only if the clock is steered.
pub fn kept_caps(steer_clock: bool) -> [u32; 2] {
    if steer_clock {
        [1 << CAP_SYS_TIME, 0]
    } else {
        [0, 0]
    }
}

/// The uid and gid of `user`.
pub fn ids_of(user: &str) -> Result<(Uid, Gid)> {
    let u = User::from_name(user)
        .with_context(|| format!("looking up user {user}"))?
        .with_context(|| format!("no user named {user}"))?;
    Ok((u.uid, u.gid))
}

/// Switches to `user` (and its group), keeping only the capabilities the daemon needs.
pub fn drop_to(user: &str, steer_clock: bool) -> Result<()> {
    let u = User::from_name(user)
        .with_context(|| format!("looking up user {user}"))?
        .with_context(|| format!("no user named {user}"))?;
    limit_for_good(steer_clock)?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_KEEPCAPS): {}",
            std::io::Error::last_os_error()
        );
    }
    setgroups(&[u.gid]).context("setgroups")?;
    setgid(u.gid).context("setgid")?;
    setuid(u.uid).context("setuid")?;
    let caps = kept_caps(steer_clock);
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: caps[0],
            permitted: caps[0],
            inheritable: 0,
        },
        CapData {
            effective: caps[1],
            permitted: caps[1],
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a version-3 header and two data words, as the ABI defines.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        bail!("capset: {}", std::io::Error::last_os_error());
    }
    if Uid::current() != u.uid || Gid::current() != u.gid {
        bail!(
            "still running as uid {} gid {}",
            Uid::current(),
            Gid::current()
        );
    }
    Ok(())
}

/// Makes the drop final, before the uid changes (dropping from the bounding set needs
/// `CAP_SETPCAP`): every capability but the one kept leaves the bounding set, no ambient
/// ones stay, and no later exec can gain privileges (`no_new_privs`).
fn limit_for_good(steer_clock: bool) -> Result<()> {
    for cap in 0..=63u32 {
        if steer_clock && cap == CAP_SYS_TIME {
            continue;
        }
        // SAFETY: prctl with integer arguments only; caps the kernel does not know fail
        // with EINVAL, which ends the loop.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            bail!("prctl(PR_CAPBSET_DROP, {cap}): {e}");
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cap_sys_time_is_kept_and_only_when_steering() {
        assert_eq!(kept_caps(true), [1 << 25, 0]);
        assert_eq!(kept_caps(false), [0, 0]);
    }
}
