//! Bounds-checked access to the frame, and the Internet checksum.
//!
//! Every access checks `data + off + N <= data_end` itself, in the form the verifier
//! recognises, so no caller can read or write past the end of the frame.

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

    /// Whether the frame is exactly `n` bytes long.
    ///
    /// Two pointer comparisons rather than a length: the verifier learns the frame's extent
    /// only from comparisons of packet pointers, and a scalar length check would let LLVM
    /// drop the per-access checks the verifier needs.
    #[inline(always)]
    pub fn is_exactly(&self, n: usize) -> bool {
        self.data + n <= self.end && self.data + n + 1 > self.end
    }

    #[inline(always)]
    fn ptr<const N: usize>(&self, off: usize) -> Option<*mut u8> {
        let p = self.data + off;
        if p + N > self.end {
            None
        } else {
            Some(p as *mut u8)
        }
    }

    /// `N` bytes at `off`.
    #[inline(always)]
    pub fn array<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.ptr::<N>(off)?;
        // SAFETY: `ptr` checked that the N bytes at `off` lie inside the frame.
        Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
    }

    /// Byte at `off`.
    #[inline(always)]
    pub fn u8(&self, off: usize) -> Option<u8> {
        let p = self.ptr::<1>(off)?;
        // SAFETY: `ptr` checked that the N bytes at `off` lie inside the frame.
        Some(unsafe { *p })
    }

    /// Big-endian u16 at `off`.
    #[inline(always)]
    pub fn u16(&self, off: usize) -> Option<u16> {
        self.array::<2>(off).map(u16::from_be_bytes)
    }

    /// Big-endian u32 at `off`.
    #[inline(always)]
    pub fn u32(&self, off: usize) -> Option<u32> {
        self.array::<4>(off).map(u32::from_be_bytes)
    }

    /// Big-endian u64 at `off`.
    #[inline(always)]
    pub fn u64(&self, off: usize) -> Option<u64> {
        self.array::<8>(off).map(u64::from_be_bytes)
    }

    #[inline(always)]
    fn put<const N: usize>(&self, off: usize, v: [u8; N]) {
        if let Some(p) = self.ptr::<N>(off) {
            // SAFETY: `ptr` checked that the N bytes at `off` lie inside the frame.
            unsafe { core::ptr::write_unaligned(p.cast::<[u8; N]>(), v) };
        }
    }

    /// Writes a byte at `off`.
    #[inline(always)]
    pub fn put_u8(&self, off: usize, v: u8) {
        self.put::<1>(off, [v]);
    }

    /// Writes a big-endian u16 at `off`.
    #[inline(always)]
    pub fn put_u16(&self, off: usize, v: u16) {
        self.put::<2>(off, v.to_be_bytes());
    }

    /// Writes a big-endian u32 at `off`.
    #[inline(always)]
    pub fn put_u32(&self, off: usize, v: u32) {
        self.put::<4>(off, v.to_be_bytes());
    }

    /// Writes a big-endian u64 at `off`.
    #[inline(always)]
    pub fn put_u64(&self, off: usize, v: u64) {
        self.put::<8>(off, v.to_be_bytes());
    }

    /// Exchanges the `N` bytes at `a` with the `N` bytes at `b`.
    #[inline(always)]
    pub fn swap<const N: usize>(&self, a: usize, b: usize) {
        if let (Some(x), Some(y)) = (self.array::<N>(a), self.array::<N>(b)) {
            self.put::<N>(a, y);
            self.put::<N>(b, x);
        }
    }

    /// Exchanges the destination and source MAC addresses.
    #[inline(always)]
    pub fn swap_macs(&self) {
        self.swap::<6>(0, 6);
    }

    /// Internet-checksum sum of `N` big-endian 16-bit words at `off`.
    #[inline(always)]
    pub fn sum_words<const N: usize>(&self, off: usize) -> Csum {
        let mut c = Csum(0);
        let mut i = 0;
        while i < N {
            c.add16(self.u16(off + 2 * i).unwrap_or(0));
            i += 1;
        }
        c
    }
}

/// A running one's-complement sum (RFC 1071), folded at the end.
#[derive(Clone, Copy)]
pub struct Csum(pub u64);

impl Csum {
    /// Adds one 16-bit word.
    #[inline(always)]
    pub fn add16(&mut self, v: u16) {
        self.0 += v as u64;
    }

    /// Adds a 32-bit value as two words.
    #[inline(always)]
    pub fn add32(&mut self, v: u32) {
        self.0 += (v >> 16) as u64 + (v & 0xffff) as u64;
    }

    /// Adds a 64-bit value as four words.
    #[inline(always)]
    pub fn add64(&mut self, v: u64) {
        self.add32((v >> 32) as u32);
        self.add32(v as u32);
    }

    /// Folds the carries and returns the one's complement: the checksum field's value.
    #[inline(always)]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }
}
