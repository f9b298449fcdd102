//! `AF_XDP` sockets: frames the XDP program redirects to the daemon, read from a ring
//! shared with the kernel and answered in the same memory, without the socket layer's
//! per-datagram work (routing, socket lookup, buffers). One socket per interface receive
//! queue; the frame memory (UMEM) is the socket's own.
//!
//! Every frame of the UMEM is, at any moment, in exactly one place: the fill ring (the
//! kernel's to receive into), the receive ring (received, ours to read), the transmit
//! ring (a reply, the kernel's to send) or the completion ring (sent, ours to refill).
//! Replies are written over their requests, so a frame goes round fill → receive →
//! transmit → completion → fill, or straight back to fill when a request is dropped.

use anyhow::{Context, Result, bail};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

const AF_XDP: i32 = 44;
const SOL_XDP: i32 = 283;
const XDP_MMAP_OFFSETS: i32 = 1;
const XDP_RX_RING: i32 = 2;
const XDP_TX_RING: i32 = 3;
const XDP_UMEM_REG: i32 = 4;
const XDP_UMEM_FILL_RING: i32 = 5;
const XDP_UMEM_COMPLETION_RING: i32 = 6;
const XDP_STATISTICS: i32 = 7;
const PGOFF_RX_RING: i64 = 0;
const PGOFF_TX_RING: i64 = 0x8000_0000;
const PGOFF_FILL_RING: i64 = 0x1_0000_0000;
const PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;
/// `XDP_COPY`: copy mode even where the driver could do zero-copy. Zero-copy would move
/// the whole queue's receive path into this socket's memory, making every frame the fast
/// path answers or the stack takes a copy.
const XDP_COPY: u16 = 1 << 1;

/// Bytes per frame of the UMEM (a page holds two; the largest Ethernet frame fits).
pub const FRAME_SIZE: usize = 2048;
/// Frames of all the sockets together, to be shared out: what the frames in flight
/// need at the highest rates measured (a veth's one queue at 160 k/s lost requests with
/// 4096 frames, when replies waited for completion, and none with 16384).
const FRAMES_BUDGET: u32 = 32768;
/// Frames of one socket, at least and at most.
const FRAMES_MIN: u32 = 2048;
const FRAMES_MAX: u32 = 16384;

/// Frames (and ring entries) for each of `sockets` sockets: the budget shared out, a
/// power of two between the bounds (2048 frames: 4 MiB a socket).
pub fn frames_each(sockets: usize) -> u32 {
    let n = u32::try_from(sockets.max(1)).unwrap_or(u32::MAX);
    (FRAMES_BUDGET / n)
        .clamp(FRAMES_MIN, FRAMES_MAX)
        .next_power_of_two()
        .min(FRAMES_MAX)
}

#[repr(C)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

/// A descriptor of the receive and transmit rings.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Desc {
    addr: u64,
    len: u32,
    options: u32,
}

#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

/// The start of the frame (chunk) holding UMEM address `addr`.
fn chunk(addr: u64) -> u64 {
    addr & !(FRAME_SIZE as u64 - 1)
}

/// An anonymous mapping, unmapped when dropped.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` at page offset `pgoff` (a ring), or anonymous memory.
    fn new(len: usize, fd: Option<(RawFd, i64)>) -> Result<Self> {
        let (flags, fd, off) = match fd {
            Some((fd, off)) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd, off),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            ),
        };
        // SAFETY: a fresh mapping the kernel places; nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped, once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// One ring shared with the kernel: `T` entries, a producer and a consumer index.
struct Ring<T> {
    _map: Mapping,
    /// Entries (a power of two).
    size: u32,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    desc: *mut T,
    /// Our copy of the index we advance.
    head: u32,
}

impl<T: Copy> Ring<T> {
    // The casts are checked: the page-aligned mapping plus offsets aligned for each type.
    #[allow(clippy::cast_ptr_alignment)]
    fn map(fd: RawFd, off: &RingOffset, pgoff: i64, size: u32) -> Result<Self> {
        if !off.producer.is_multiple_of(4)
            || !off.consumer.is_multiple_of(4)
            || !off.desc.is_multiple_of(align_of::<T>() as u64)
        {
            bail!("the kernel's ring offsets are not aligned");
        }
        let len = usize::try_from(off.desc)? + size as usize * size_of::<T>();
        let map = Mapping::new(len, Some((fd, pgoff)))?;
        let base = map.ptr.cast::<u8>();
        // SAFETY: the kernel's offsets lie within the mapping it sized (XDP_MMAP_OFFSETS).
        let (producer, consumer, desc) = unsafe {
            (
                base.add(usize::try_from(off.producer)?).cast::<AtomicU32>(),
                base.add(usize::try_from(off.consumer)?).cast::<AtomicU32>(),
                base.add(usize::try_from(off.desc)?).cast::<T>(),
            )
        };
        Ok(Ring {
            _map: map,
            size,
            producer,
            consumer,
            desc,
            head: 0,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a u32 index in the mapping, which lives as long as `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { &*self.consumer }
    }

    fn slot(&self, i: u32) -> *mut T {
        // SAFETY: the index is masked into the ring's `size` entries.
        unsafe { self.desc.add((i & (self.size - 1)) as usize) }
    }

    /// Producer side: room for this many more entries.
    fn room(&self) -> u32 {
        self.size
            - self
                .head
                .wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    /// Producer side: writes one entry (after checking `room`).
    fn put(&mut self, v: T) {
        // SAFETY: a slot the kernel does not read until the producer index passes it.
        unsafe { self.slot(self.head).write(v) };
        self.head = self.head.wrapping_add(1);
    }

    /// Producer side: hands the entries written to the kernel.
    fn submit(&self) {
        self.producer().store(self.head, Ordering::Release);
    }

    /// Consumer side: entries ready to read.
    fn ready(&self) -> u32 {
        self.producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    /// Consumer side: reads the next entry (after checking `ready`).
    fn take(&mut self) -> T {
        // SAFETY: a slot the kernel filled before moving the producer index past it.
        let v = unsafe { self.slot(self.head).read() };
        self.head = self.head.wrapping_add(1);
        v
    }

    /// Consumer side: gives the entries read back to the kernel.
    fn release(&self) {
        self.consumer().store(self.head, Ordering::Release);
    }
}

/// An `AF_XDP` socket bound to one receive queue of one interface, with its UMEM.
pub struct XskSocket {
    fd: OwnedFd,
    umem: Mapping,
    fill: Ring<u64>,
    completion: Ring<u64>,
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    /// The interface's name, for messages.
    pub iface: String,
    /// The receive queue.
    pub queue: u32,
}

// SAFETY: the raw pointers are into mappings the socket owns; it is used by one thread
// at a time (moved to its server thread, never shared).
unsafe impl Send for XskSocket {}

fn setsockopt<T>(fd: RawFd, opt: i32, v: &T, what: &str) -> Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            opt,
            (&raw const *v).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl XskSocket {
    /// Opens a socket on `iface` (index `ifindex`) queue `queue`, in copy mode, with
    /// `frames` frames (a power of two; every ring as long).
    pub fn open(iface: &str, ifindex: u32, queue: u32, frames: u32) -> Result<Self> {
        if !frames.is_power_of_two() {
            bail!("{frames} frames: not a power of two");
        }
        // SAFETY: socket(2) with constant arguments.
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            bail!(
                "opening an AF_XDP socket: {} (needs CAP_NET_RAW and a kernel with \
                 CONFIG_XDP_SOCKETS)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a descriptor just opened, owned here alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mapping::new(frames as usize * FRAME_SIZE, None).context("the UMEM")?;
        let reg = UmemReg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(
            raw,
            XDP_UMEM_REG,
            &reg,
            "registering the UMEM (XDP_UMEM_REG)",
        )?;
        for (opt, what) in [
            (XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (XDP_RX_RING, "XDP_RX_RING"),
            (XDP_TX_RING, "XDP_TX_RING"),
        ] {
            setsockopt(raw, opt, &frames, what)?;
        }
        let mut off = MmapOffsets::default();
        let mut len = size_of::<MmapOffsets>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `off`.
        if unsafe {
            libc::getsockopt(
                raw,
                SOL_XDP,
                XDP_MMAP_OFFSETS,
                (&raw mut off).cast(),
                &raw mut len,
            )
        } < 0
        {
            bail!("XDP_MMAP_OFFSETS: {}", std::io::Error::last_os_error());
        }
        let mut s = XskSocket {
            fill: Ring::map(raw, &off.fr, PGOFF_FILL_RING, frames).context("the fill ring")?,
            completion: Ring::map(raw, &off.cr, PGOFF_COMPLETION_RING, frames)
                .context("the completion ring")?,
            rx: Ring::map(raw, &off.rx, PGOFF_RX_RING, frames).context("the receive ring")?,
            tx: Ring::map(raw, &off.tx, PGOFF_TX_RING, frames).context("the transmit ring")?,
            fd,
            umem,
            iface: iface.to_string(),
            queue,
        };
        // Every frame is the kernel's to receive into, to begin with.
        for i in 0..u64::from(frames) {
            s.fill.put(i * FRAME_SIZE as u64);
        }
        s.fill.submit();
        let addr = SockaddrXdp {
            family: AF_XDP as u16,
            flags: XDP_COPY,
            ifindex,
            queue_id: queue,
            shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a sockaddr_xdp of the size passed.
        if unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast(),
                size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        } < 0
        {
            bail!(
                "binding an AF_XDP socket to {iface} queue {queue}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(s)
    }

    /// Waits up to `timeout_ms` for received frames; `false` once the socket is dead
    /// (its interface unregistered: the kernel unbinds it and reports an error).
    pub fn wait(&self, timeout_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        // An unbound socket polls as idle: a quiet wait is when to look for its error.
        if n != 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0 {
            return true;
        }
        // An error pending on the socket (ENETDOWN once the device went away); reading
        // it clears it.
        let mut err: i32 = 0;
        let mut len = size_of::<i32>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one int.
        unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &raw mut len,
            )
        };
        err != libc::ENETDOWN && pfd.revents & libc::POLLNVAL == 0
    }

    /// Whether received frames wait in the receive ring.
    pub fn received(&self) -> bool {
        self.rx.ready() > 0
    }

    /// Frames sent since the last call go back to the fill ring.
    pub fn recycle(&mut self) {
        let n = self.completion.ready().min(self.fill.room());
        for _ in 0..n {
            let addr = self.completion.take();
            self.fill.put(chunk(addr));
        }
        if n > 0 {
            self.completion.release();
            self.fill.submit();
        }
    }

    /// Whether replies are still waiting in the transmit ring.
    pub fn sending(&self) -> bool {
        self.tx.head != self.tx.consumer().load(Ordering::Acquire)
    }

    /// Returns every received frame to the fill ring unread; how many.
    pub fn drop_received(&mut self) -> u32 {
        let n = self.rx.ready();
        for _ in 0..n {
            let d = self.rx.take();
            self.fill.put(chunk(d.addr));
        }
        if n > 0 {
            self.rx.release();
            self.fill.submit();
        }
        n
    }

    /// Handles up to `max` received frames: `f` gets each frame's metadata area and
    /// frame (in the UMEM, to answer in place) and returns the reply's length, or `None`
    /// to drop it; a frame is only offered while the transmit ring has room for its
    /// reply (else it is dropped unread). Returns how many replies were queued.
    pub fn serve(&mut self, max: u32, mut f: impl FnMut(&[u8], &mut [u8]) -> Option<usize>) -> u32 {
        let n = self.rx.ready().min(max);
        let mut replies = 0;
        for _ in 0..n {
            let d = self.rx.take();
            let base = chunk(d.addr);
            let start = d.addr as usize;
            let end = start + d.len as usize;
            let meta = ntp_common::state::XSK_META_LEN;
            let sane = end <= self.umem.len
                && (end - base as usize) <= FRAME_SIZE
                && start >= base as usize + meta;
            let out = if sane && self.tx.room() > 0 {
                // SAFETY: [start - meta, end) lies in the UMEM within one frame, which
                // is ours (taken off the receive ring) until it is queued again.
                let (meta_area, frame) = unsafe {
                    let p = self.umem.ptr.cast::<u8>();
                    (
                        std::slice::from_raw_parts(p.add(start - meta), meta),
                        std::slice::from_raw_parts_mut(p.add(start), d.len as usize),
                    )
                };
                f(meta_area, frame)
            } else {
                None
            };
            match out {
                Some(len) if len <= d.len as usize => {
                    self.tx.put(Desc {
                        addr: d.addr,
                        len: len as u32,
                        options: 0,
                    });
                    replies += 1;
                }
                // Dropped: straight back to be received into. The slot written is free:
                // the kernel's consumer index is at most `frames` - 1 entries behind our
                // head, this frame not being among the entries it has yet to read.
                _ => self.fill.put(base),
            }
        }
        if n > 0 {
            self.rx.release();
            self.fill.submit();
        }
        if replies > 0 {
            self.tx.submit();
            self.kick();
        }
        replies
    }

    /// Has the kernel send what the transmit ring holds: in copy mode a call sends up to
    /// a batch, so calls go on while they make progress; what the device will not take
    /// now waits for the next call (the thread calls again while `sending`).
    pub fn kick(&self) {
        for _ in 0..self.tx.size / 32 {
            let before = self.tx.consumer().load(Ordering::Acquire);
            // SAFETY: sendto with no data, the wake-up `AF_XDP` defines.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let after = self.tx.consumer().load(Ordering::Acquire);
            if after == self.tx.head || after == before {
                break;
            }
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
                ) {
                    break;
                }
            }
        }
    }
}

impl XskSocket {
    /// The kernel's counters of this socket (`XDP_STATISTICS`): frames dropped, invalid
    /// receive and transmit descriptors, drops for a full receive ring, for an empty fill
    /// ring, and sends that found the transmit ring empty.
    pub fn stats(&self) -> Option<[u64; 6]> {
        let mut st = [0u64; 6];
        let mut len = size_of::<[u64; 6]>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `st`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_XDP,
                XDP_STATISTICS,
                st.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        (r == 0).then_some(st)
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_the_kernels() {
        // From linux/if_xdp.h.
        assert_eq!(size_of::<UmemReg>(), 32);
        assert_eq!(size_of::<MmapOffsets>(), 128);
        assert_eq!(size_of::<Desc>(), 16);
        assert_eq!(size_of::<SockaddrXdp>(), 16);
        assert!(FRAME_SIZE.is_power_of_two());
    }

    #[test]
    fn the_frame_budget_is_shared_out_in_powers_of_two() {
        assert_eq!(frames_each(1), 16384);
        assert_eq!(frames_each(2), 16384);
        assert_eq!(frames_each(3), 16384);
        assert_eq!(frames_each(4), 8192);
        assert_eq!(frames_each(8), 4096);
        assert_eq!(frames_each(16), 2048);
        assert_eq!(frames_each(256), 2048);
    }
}
