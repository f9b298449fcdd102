//! Bounds-checked access to the frame, and the Internet checksum.
//!
//! A [`Span`] is `N` bytes of the frame whose end was checked against `data_end` once,
//! in the form the verifier recognises; every access inside it is at a constant offset
//! below `N`, so it needs no check of its own (the verifier extends the checked range to
//! every packet pointer derived from the same `data`). One check per header instead of
//! one per field: fewer instructions, and no per-field checks for LLVM to merge into a
//! shape the verifier cannot follow.

use aya_ebpf::programs::XdpContext;

/// The frame under the program, as two addresses.
pub struct Frame {
    data: usize,
    end: usize,
}

impl Frame {
    /// Wraps the context's frame.
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Frame {
            data: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The `N` bytes at `off`, if the frame holds them.
    #[inline(always)]
    pub fn span<const N: usize>(&self, off: usize) -> Option<Span<N>> {
        let p = self.data + off;
        if p + N > self.end {
            None
        } else {
            Some(Span { p: p as *mut u8 })
        }
    }

    /// The `N` bytes at `off`, if the frame ends exactly after them.
    ///
    /// Two pointer comparisons rather than a length: the verifier learns the frame's
    /// extent only from comparisons of packet pointers.
    #[inline(always)]
    pub fn exact_span<const N: usize>(&self, off: usize) -> Option<Span<N>> {
        let p = self.data + off;
        if p + N <= self.end && p + N + 1 > self.end {
            Some(Span { p: p as *mut u8 })
        } else {
            None
        }
    }
}

/// `N` bytes of the frame, checked to lie inside it.
///
/// Accessors take offsets within the span; an access that would leave it reads 0 or
/// writes nothing (the offsets are constants, so the test folds away).
#[derive(Clone, Copy)]
pub struct Span<const N: usize> {
    p: *mut u8,
}

impl<const N: usize> Span<N> {
    /// The address of the `W` bytes at `off`, if they are inside the span.
    #[inline(always)]
    fn at<const W: usize>(&self, off: usize) -> Option<*mut u8> {
        if off + W <= N {
            Some(self.p.wrapping_add(off))
        } else {
            None
        }
    }

    /// Byte at `off`.
    #[inline(always)]
    pub fn u8(&self, off: usize) -> u8 {
        // SAFETY: `at` keeps the byte inside the span, which lies inside the frame.
        self.at::<1>(off).map_or(0, |p| unsafe { *p })
    }

    /// Big-endian u16 at `off`.
    #[inline(always)]
    pub fn u16(&self, off: usize) -> u16 {
        self.at::<2>(off).map_or(0, |p| {
            // SAFETY: inside the span (see `at`); alignment as `word_access` explains.
            u16::from_be(unsafe { word_access::load::<u16>(p) })
        })
    }

    /// The 4 bytes at `off` as a u32 in memory order (addresses, map keys).
    #[inline(always)]
    pub fn raw32(&self, off: usize) -> u32 {
        self.at::<4>(off).map_or(0, |p| {
            // SAFETY: inside the span (see `at`); alignment as `word_access` explains.
            unsafe { word_access::load::<u32>(p) }
        })
    }

    /// Big-endian u32 at `off`.
    #[inline(always)]
    pub fn u32(&self, off: usize) -> u32 {
        u32::from_be(self.raw32(off))
    }

    /// Big-endian u64 at `off`, as two 32-bit loads (NTP fields are at best 4-byte
    /// aligned in a frame).
    #[inline(always)]
    pub fn u64(&self, off: usize) -> u64 {
        u64::from(self.u32(off)) << 32 | u64::from(self.u32(off + 4))
    }

    /// Writes a byte at `off`.
    #[inline(always)]
    pub fn put_u8(&self, off: usize, v: u8) {
        if let Some(p) = self.at::<1>(off) {
            // SAFETY: inside the span (see `at`).
            unsafe { *p = v };
        }
    }

    /// Writes a big-endian u16 at `off`.
    #[inline(always)]
    pub fn put_u16(&self, off: usize, v: u16) {
        if let Some(p) = self.at::<2>(off) {
            // SAFETY: inside the span (see `at`); alignment as `word_access` explains.
            unsafe { word_access::store::<u16>(p, v.to_be()) };
        }
    }

    /// Writes `v` (memory order) as the 4 bytes at `off`.
    #[inline(always)]
    pub fn put_raw32(&self, off: usize, v: u32) {
        if let Some(p) = self.at::<4>(off) {
            // SAFETY: inside the span (see `at`); alignment as `word_access` explains.
            unsafe { word_access::store::<u32>(p, v) };
        }
    }

    /// Writes a big-endian u32 at `off`.
    #[inline(always)]
    pub fn put_u32(&self, off: usize, v: u32) {
        self.put_raw32(off, v.to_be());
    }

    /// Writes a big-endian u64 at `off`, as two 32-bit stores.
    #[inline(always)]
    pub fn put_u64(&self, off: usize, v: u64) {
        self.put_u32(off, (v >> 32) as u32);
        self.put_u32(off + 4, v as u32);
    }

    /// Exchanges the `W` 32-bit words at `a` with those at `b` (IP addresses).
    #[inline(always)]
    pub fn swap_words<const W: usize>(&self, a: usize, b: usize) {
        let mut i = 0;
        while i < W {
            let (x, y) = (self.raw32(a + 4 * i), self.raw32(b + 4 * i));
            self.put_raw32(a + 4 * i, y);
            self.put_raw32(b + 4 * i, x);
            i += 1;
        }
    }

    /// Exchanges the source and destination ports of a UDP header at `off`.
    #[inline(always)]
    pub fn swap_ports(&self, off: usize) {
        self.put_u32(off, self.u32(off).rotate_left(16));
    }

    /// The destination MAC address of an Ethernet header at 0, big-endian in the low 48
    /// bits.
    #[inline(always)]
    pub fn dst_mac(&self) -> u64 {
        u64::from(self.u16(0)) << 32 | u64::from(self.u32(2))
    }

    /// Exchanges the destination and source MAC addresses of an Ethernet header at 0 (as
    /// 2 + 4 and 4 + 2 bytes: the words its alignment allows).
    #[inline(always)]
    pub fn swap_macs(&self) {
        let dst = self.dst_mac();
        let src = u64::from(self.u32(6)) << 16 | u64::from(self.u16(10));
        self.put_u16(0, (src >> 32) as u16);
        self.put_u32(2, src as u32);
        self.put_u32(6, (dst >> 16) as u32);
        self.put_u16(10, dst as u16);
    }

    /// Internet-checksum sum of the `W` big-endian 32-bit words at `off`.
    #[inline(always)]
    pub fn sum_words<const W: usize>(&self, off: usize) -> Csum {
        let mut c = Csum(0);
        let mut i = 0;
        while i < W {
            c.add32(self.u32(off + 4 * i));
            i += 1;
        }
        c
    }
}

/// Word-sized loads and stores in the frame.
///
/// The kernel lays frames out so the IP header is 4-byte aligned (`NET_IP_ALIGN`), and
/// the verifier checks every access against that where the architecture needs aligned
/// loads (`check_pkt_ptr_alignment`), rejecting the program at load rather than letting
/// it fault: so 32-bit accesses of the IP, UDP and NTP fields (all at offsets of 4 past
/// it) and 16-bit ones of the Ethernet header load everywhere, and where the JIT allows
/// unaligned access (x86-64, arm64) they run as one instruction whatever the driver's
/// headroom. A byte-wise `read_unaligned` would cost four loads and three shifts each.
mod word_access {
    /// One load of a `T` at `p`.
    ///
    /// # Safety
    /// `p` must point at `size_of::<T>()` readable bytes of the frame.
    #[inline(always)]
    #[allow(clippy::cast_ptr_alignment)] // as the module explains
    pub(super) unsafe fn load<T: Copy>(p: *const u8) -> T {
        // SAFETY: readable per the caller; alignment as the module explains.
        unsafe { core::ptr::read_volatile(p.cast::<T>()) }
    }

    /// One store of a `T` at `p`.
    ///
    /// # Safety
    /// `p` must point at `size_of::<T>()` writable bytes of the frame.
    #[inline(always)]
    #[allow(clippy::cast_ptr_alignment)] // as the module explains
    pub(super) unsafe fn store<T: Copy>(p: *mut u8, v: T) {
        // SAFETY: writable per the caller; alignment as the module explains.
        unsafe { core::ptr::write_volatile(p.cast::<T>(), v) }
    }
}

/// A running one's-complement sum (RFC 1071), folded at the end.
///
/// 32-bit values are added whole: 2^16 is 1 modulo 2^16 - 1, so the fold gives what the
/// sum of their 16-bit halves would (for up to 2^16 of them).
#[derive(Clone, Copy)]
pub struct Csum(pub u64);

impl Csum {
    /// Adds one 16-bit word.
    #[inline(always)]
    pub fn add16(&mut self, v: u16) {
        self.0 += v as u64;
    }

    /// Adds a 32-bit value (two words).
    #[inline(always)]
    pub fn add32(&mut self, v: u32) {
        self.0 += v as u64;
    }

    /// Adds a 64-bit value (four words).
    #[inline(always)]
    pub fn add64(&mut self, v: u64) {
        self.0 += (v >> 32) + (v & 0xffff_ffff);
    }

    /// Folds the carries and returns the one's complement: the checksum field's value.
    #[inline(always)]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        // From below 2^48: at most 2^32 + 2^16, then 2^17, then 2^16, then below it.
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }
}
