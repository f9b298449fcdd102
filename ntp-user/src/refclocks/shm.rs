//! `refclock SHM N`: the NTP shared-memory segment a GPS daemon (gpsd), phc2sys or any
//! ntpshm writer fills, attached as chronyd attaches it.

use anyhow::{Result, bail};
use ntp_proto::refclock::Reading;
use ntp_proto::refclock_formats::{SHM_KEY, ShmFields, shm_consistent, shm_reading};

/// An attached segment.
pub struct Segment {
    ptr: *mut ShmFields,
    /// The segment's number, for messages.
    pub number: u32,
}

// SAFETY: the mapping stays valid until `Drop` detaches it, and the segment is only read
// and written through this value, by whichever thread owns it.
unsafe impl Send for Segment {}

impl Segment {
    /// Attaches segment `number` (key 0x4e545030 + N), creating it with mode `perm` if no
    /// writer has yet, as chronyd does (0600 by default: only root's writers).
    pub fn attach(number: u32, perm: u32) -> Result<Self> {
        let key = SHM_KEY.wrapping_add(number as i32);
        let flags = libc::IPC_CREAT | (perm & 0o777) as i32;
        // SAFETY: plain shmget(2) with a size and flags; no memory is touched.
        let id = unsafe { libc::shmget(key, size_of::<ShmFields>(), flags) };
        if id < 0 {
            bail!(
                "shmget of SHM segment {number} (key {key:#x}): {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: attaching a segment of at least size_of::<ShmFields>() bytes (shmget
        // fails for an existing smaller one); the kernel picks the address.
        let ptr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if ptr as isize == -1 {
            bail!(
                "shmat of SHM segment {number}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Segment {
            ptr: ptr.cast(),
            number,
        })
    }

    /// The segment's sample, if a new consistent one is there; marks it read (valid = 0)
    /// as the protocol asks.
    pub fn read(&mut self) -> Option<Reading> {
        let p = self.ptr;
        // SAFETY: `p` points to the attached segment for the life of `self`; a writer in
        // another process may change it at any time, hence volatile reads of each field
        // and the count checked again afterwards (mode 1).
        let (t, count_after) = unsafe {
            let t = ShmFields {
                mode: (&raw const (*p).mode).read_volatile(),
                count: (&raw const (*p).count).read_volatile(),
                clock_sec: (&raw const (*p).clock_sec).read_volatile(),
                clock_usec: (&raw const (*p).clock_usec).read_volatile(),
                receive_sec: (&raw const (*p).receive_sec).read_volatile(),
                receive_usec: (&raw const (*p).receive_usec).read_volatile(),
                leap: (&raw const (*p).leap).read_volatile(),
                valid: (&raw const (*p).valid).read_volatile(),
                clock_nsec: (&raw const (*p).clock_nsec).read_volatile(),
                receive_nsec: (&raw const (*p).receive_nsec).read_volatile(),
                ..ShmFields::default()
            };
            (t, (&raw const (*p).count).read_volatile())
        };
        if !shm_consistent(&t, count_after) {
            return None;
        }
        // SAFETY: as above; clearing `valid` tells the writer the sample was taken (even
        // one whose times turn out unusable, as chrony does).
        unsafe { (&raw mut (*p).valid).write_volatile(0) };
        shm_reading(&t, count_after)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: detaching the address shmat returned; nothing uses it afterwards.
        unsafe { libc::shmdt(self.ptr.cast()) };
    }
}
