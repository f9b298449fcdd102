//! The one-entry state array mapped into the daemon: the server state published under a
//! sequence lock.

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::MapData;
use ntp_common::{ServerState, state::MAP_STATE};
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering, fence},
};

/// The one-entry state array, mapped into this process so updates are a sequence lock
/// rather than a syscall the program could observe half-done.
pub(super) struct StateMap {
    ptr: NonNull<ServerState>,
    len: usize,
    map: MapData,
}

// SAFETY: the mapping is owned by this struct and only written through &mut self.
unsafe impl Send for StateMap {}
// SAFETY: shared references only read the mapping (volatile reads of plain data).
unsafe impl Sync for StateMap {}

impl StateMap {
    pub(super) fn new(map: MapData) -> Result<Self> {
        let len = std::mem::size_of::<ServerState>().next_multiple_of(page_size());
        // SAFETY: mapping a BPF_F_MMAPABLE array fd, shared, at offset 0, where the kernel
        // places element 0; the length covers the element rounded up to a page.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "mmap of the {MAP_STATE} map: {}",
                std::io::Error::last_os_error()
            );
        }
        let ptr =
            NonNull::new(p.cast::<ServerState>()).ok_or_else(|| anyhow!("mmap returned null"))?;
        Ok(StateMap { ptr, len, map })
    }

    /// A second mapping of the same map (opened by id: needs `CAP_SYS_ADMIN`).
    pub(super) fn reopen(&self) -> Result<Self> {
        let id = self
            .map
            .info()
            .context("reading the id of the state map")?
            .id();
        StateMap::new(MapData::from_id(id).context("opening the state map by id")?)
    }

    fn seq(&self) -> &AtomicU64 {
        // SAFETY: `seq` is the first, 8-byte aligned field of the mapped (page-aligned) value.
        unsafe { &*(self.ptr.as_ptr().cast::<AtomicU64>()) }
    }

    pub(super) fn write(&mut self, s: &ServerState) {
        let odd = self.write_unfinished(s);
        fence(Ordering::Release);
        self.seq().store(odd.wrapping_add(1), Ordering::Release);
    }

    /// The first half of [`Self::write`]: the sequence made odd and the body written;
    /// readers refuse the state until a write finishes. Returns the odd sequence.
    pub(super) fn write_unfinished(&mut self, s: &ServerState) -> u64 {
        let seq = self.seq().load(Ordering::Relaxed);
        let odd = (seq | 1).wrapping_add(if seq & 1 == 1 { 2 } else { 0 });
        self.seq().store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut v = *s;
        v.seq = odd;
        // SAFETY: the mapping is valid for one ServerState; writers are serialised by
        // their owners (the daemon has one; tests keep a second to themselves).
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr(), v) };
        odd
    }

    pub(super) fn read(&self) -> ServerState {
        // SAFETY: valid mapping; only this process writes it, so no retry is needed here.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr()) }
    }
}

impl Drop for StateMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}
