//! Dropping root after start-up (`ntpxd -u USER`): everything that needs privileges (maps
//! open, port 123 bound) is done by then; what is kept is `CAP_SYS_TIME` when the clock is
//! steered, and with the fast path `CAP_NET_ADMIN` and `CAP_BPF`, which attaching it to an
//! interface that appears later takes; nothing with `-x --no-xdp`.

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, User, setgid, setgroups, setuid};

/// `CAP_NET_ADMIN`'s bit.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_TIME`'s bit.
const CAP_SYS_TIME: u32 = 25;
/// `CAP_BPF`'s bit (in the second word).
const CAP_BPF: u32 = 39;
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

/// What the daemon still does once it runs as its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// It steers the system clock.
    pub clock: bool,
    /// It attaches the fast path to interfaces as they appear.
    pub fast_path: bool,
}

impl Needs {
    /// The capabilities kept, as `(bit, name)`.
    pub fn caps(self) -> Vec<(u32, &'static str)> {
        let mut v = Vec::new();
        if self.clock {
            v.push((CAP_SYS_TIME, "CAP_SYS_TIME"));
        }
        if self.fast_path {
            v.push((CAP_NET_ADMIN, "CAP_NET_ADMIN"));
            v.push((CAP_BPF, "CAP_BPF"));
        }
        v
    }
}

/// The capability sets to keep, as the two 32-bit words `capset` takes.
pub fn kept_caps(needs: Needs) -> [u32; 2] {
    let mut words = [0u32; 2];
    for (bit, _) in needs.caps() {
        words[(bit / 32) as usize] |= 1 << (bit % 32);
    }
    words
}

/// The uid and gid of `user`.
pub fn ids_of(user: &str) -> Result<(Uid, Gid)> {
    let u = User::from_name(user)
        .with_context(|| format!("looking up user {user}"))?
        .with_context(|| format!("no user named {user}"))?;
    Ok((u.uid, u.gid))
}

/// Switches to `user` (and its group), keeping only the capabilities the daemon needs.
pub fn drop_to(user: &str, needs: Needs) -> Result<()> {
    let u = User::from_name(user)
        .with_context(|| format!("looking up user {user}"))?
        .with_context(|| format!("no user named {user}"))?;
    let caps = kept_caps(needs);
    limit_for_good(caps)?;
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
/// `CAP_SETPCAP`): every capability but those kept (`caps`) leaves the bounding set, no
/// ambient ones stay, and no later exec can gain privileges (`no_new_privs`).
fn limit_for_good(caps: [u32; 2]) -> Result<()> {
    for cap in 0..=63u32 {
        if caps[(cap / 32) as usize] & (1 << (cap % 32)) != 0 {
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
    fn only_what_the_daemon_still_does_is_kept() {
        let needs = |clock, fast_path| Needs { clock, fast_path };
        assert_eq!(kept_caps(needs(true, false)), [1 << 25, 0]);
        assert_eq!(kept_caps(needs(false, false)), [0, 0]);
        assert_eq!(kept_caps(needs(false, true)), [1 << 12, 1 << 7]);
        assert_eq!(kept_caps(needs(true, true)), [1 << 25 | 1 << 12, 1 << 7]);
    }
}
