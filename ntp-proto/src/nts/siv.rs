//! AES-SIV-CMAC-256 (RFC 5297) for NTS, on the `aes` crate's encrypt-only AES-128:
//! S2V's CMACs and the CTR keystream written over the block cipher directly.
//!
//! Why not the `aes-siv` crate: its generic composition moved the key schedules of
//! its CMAC and CTR instances by value on every message (a tenth of an NTS request's
//! time was `memmove`: the crate's AES-128 is 704 bytes, its software fallback's
//! schedule), scheduled AES decryption keys SIV never uses, and ran S2V's strings one
//! after another through a digest API. An NTS server makes a new key pair for nearly
//! every request, so set-up and latency are most of the cost; here the strings' CMACs
//! run interleaved in one call of the AES-NI backend.

use aes::{
    Aes128Enc, Block,
    cipher::{BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, KeyInit, consts::U16},
};
use subtle::ConstantTimeEq;

/// Bytes of the synthetic IV (the tag).
pub(super) const TAG_LEN: usize = 16;

/// Counter blocks made at once: AES-NI pipelines eight blocks.
const PAR_BLOCKS: usize = 8;

/// RFC 5297's `dbl`: doubling in GF(2^128) with its polynomial. Without a branch: the
/// values doubled (CMAC's `L`, S2V's `D`) are secret.
fn dbl(x: u128) -> u128 {
    (x << 1) ^ ((x >> 127) * 0x87)
}

/// One CMAC (RFC 4493) under way: its message, the blocks done, its state, and whether
/// the message ends here (its final block then taken with a subkey) or goes on later.
#[derive(Clone, Copy)]
struct Chain<'a> {
    msg: &'a [u8],
    done: usize,
    x: u128,
    ends: bool,
}

impl<'a> Chain<'a> {
    fn new(msg: &'a [u8], x: u128, ends: bool) -> Chain<'a> {
        Chain {
            msg,
            done: 0,
            x,
            ends,
        }
    }

    /// Blocks this message takes: all of it, padded, if it ends here, else its whole
    /// blocks.
    fn blocks(&self) -> usize {
        if self.ends {
            self.msg.len().div_ceil(16).max(1)
        } else {
            self.msg.len() / 16
        }
    }

    /// The next block to encrypt (the state XOR the next message block, the final one
    /// padded and with its subkey), or `None` when done.
    #[inline]
    fn next_input(&self, k1: u128, k2: u128) -> Option<u128> {
        if self.done == self.blocks() {
            return None;
        }
        let from = 16 * self.done;
        let total = self.msg.len();
        let m = if self.ends && self.done + 1 == self.blocks() {
            let mut m = [0u8; 16];
            m[..total - from].copy_from_slice(&self.msg[from..]);
            if total > 0 && total.is_multiple_of(16) {
                u128::from_be_bytes(m) ^ k1
            } else {
                m[total - from] = 0x80;
                u128::from_be_bytes(m) ^ k2
            }
        } else {
            // A whole block before the last: inside the message.
            self.msg
                .get(from..from + 16)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u128::from_be_bytes)
        };
        Some(self.x ^ m)
    }
}

/// Runs `chains` to their ends a block of each in turn: S2V's strings are independent
/// CMACs, and the processor overlaps their blocks, so S2V's latency is nearer the longest
/// string's than their sum. (Batches of eight through the backend's parallel call
/// measured no faster: they encrypt idle lanes too.)
// Inlined into the backend's call, which alone is compiled with AES-NI: the block
// function inlines only there (measured: a fifth of an NTS request's time otherwise).
#[allow(clippy::inline_always)]
#[inline(always)]
fn run<B: BlockBackend<BlockSize = U16>>(
    backend: &mut B,
    chains: &mut [Chain<'_>],
    k: (u128, u128),
) {
    loop {
        let mut any = false;
        for c in chains.iter_mut() {
            if let Some(x) = c.next_input(k.0, k.1) {
                let mut block = x.to_be_bytes().into();
                backend.proc_block_inplace(&mut block);
                c.x = u128::from_be_bytes(block.into());
                c.done += 1;
                any = true;
            }
        }
        if !any {
            return;
        }
    }
}

/// S2V (RFC 5297 2.4) over `headers` and `plain`, run on the CMAC key's backend:
/// the synthetic IV into `v`.
struct S2v<'a> {
    headers: &'a [&'a [u8]],
    plain: &'a [u8],
    v: &'a mut [u8; 16],
}

impl BlockSizeUser for S2v<'_> {
    type BlockSize = U16;
}

impl BlockClosure for S2v<'_> {
    // As `run`: part of the backend's call.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        let mut l = Block::default();
        backend.proc_block_inplace(&mut l);
        let k1 = dbl(u128::from_be_bytes(l.into()));
        let k = (k1, dbl(k1));
        // First every string's CMAC, beside the plaintext's blocks that the result
        // does not touch (all but its last 16 to 31 bytes).
        let n = self.plain.len();
        let untouched = n.saturating_sub(16) / 16 * 16;
        let mut plain = Chain::new(&self.plain[..untouched], 0, false);
        let zero = [0u8; 16];
        let mut strings = std::iter::once(&zero[..]).chain(self.headers.iter().copied());
        let mut d = 0u128;
        let mut first = true;
        loop {
            const BATCH: usize = 8;
            let mut chains = [Chain::new(&[], 0, false); BATCH];
            let mut count = 0;
            if first {
                chains[0] = plain;
                count = 1;
            }
            for s in strings.by_ref().take(BATCH - count) {
                chains[count] = Chain::new(s, 0, true);
                count += 1;
            }
            run(backend, &mut chains[..count], k);
            let mut skip = 0;
            if first {
                plain = chains[0];
                d = chains[1].x;
                skip = 2;
            }
            for c in &chains[skip..count] {
                d = dbl(d) ^ c.x;
            }
            if count < BATCH {
                break;
            }
            first = false;
        }
        // Then the plaintext's end: XORed with D if at least a block long, else
        // padded and XORed with D doubled.
        let mut tail = [0u8; 32];
        let end = if n >= 16 {
            let rest = &self.plain[untouched..];
            tail[..rest.len()].copy_from_slice(rest);
            let at = rest.len() - 16;
            let mut t = [0u8; 16];
            t.copy_from_slice(&tail[at..at + 16]);
            tail[at..at + 16].copy_from_slice(&(u128::from_be_bytes(t) ^ d).to_be_bytes());
            rest.len()
        } else {
            let mut padded = [0u8; 16];
            padded[..n].copy_from_slice(self.plain);
            padded[n] = 0x80;
            tail[..16].copy_from_slice(&(dbl(d) ^ u128::from_be_bytes(padded)).to_be_bytes());
            16
        };
        let mut last = [Chain::new(&tail[..end], plain.x, true)];
        run(backend, &mut last, k);
        *self.v = last[0].x.to_be_bytes();
    }
}

/// The synthetic IV of `headers` and `plain` under the key's first half.
fn s2v(key: &[u8; 32], headers: &[&[u8]], plain: &[u8]) -> [u8; 16] {
    let mut v = [0u8; 16];
    Aes128Enc::new(Block::from_slice(&key[..16])).encrypt_with_backend(S2v {
        headers,
        plain,
        v: &mut v,
    });
    v
}

/// XORs `data` with the CTR keystream under the key's second half from the synthetic
/// IV `iv` (RFC 5297 2.6: the top bits of its last two 32-bit words cleared).
fn ctr(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let cipher = Aes128Enc::new(Block::from_slice(&key[16..]));
    let mut counter = u128::from_be_bytes(*iv) & !(1 << 63 | 1 << 31);
    for chunk in data.chunks_mut(16 * PAR_BLOCKS) {
        let mut ks = [Block::default(); PAR_BLOCKS];
        let n = chunk.len().div_ceil(16);
        for b in &mut ks[..n] {
            *b = counter.to_be_bytes().into();
            counter = counter.wrapping_add(1);
        }
        cipher.encrypt_blocks(&mut ks[..n]);
        for (d, k) in chunk.iter_mut().zip(ks.iter().flatten()) {
            *d ^= k;
        }
    }
}

/// Encrypts `data` in place under `key` and `headers` (NTS: the associated data, then
/// the nonce): the tag. The key is scheduled per message: an NTS server's session keys
/// change with nearly every request.
pub(super) fn seal(key: &[u8; 32], headers: &[&[u8]], data: &mut [u8]) -> [u8; TAG_LEN] {
    let v = s2v(key, headers, data);
    ctr(key, &v, data);
    v
}

/// Decrypts `data` in place under `key`, `headers` and `tag`; `false` (and `data`
/// encrypted again, so nothing unverified is left) if it does not verify.
pub(super) fn open(
    key: &[u8; 32],
    headers: &[&[u8]],
    data: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> bool {
    ctr(key, tag, data);
    if bool::from(s2v(key, headers, data).ct_eq(tag)) {
        return true;
    }
    ctr(key, tag, data);
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nts::aead::tests::unhex;

    /// RFC 5297 appendix A.1 (one header, no nonce), A.2 (three headers, the last a
    /// nonce), and the empty case: tag, then ciphertext.
    #[test]
    fn matches_rfc_5297_vectors() {
        let cases: [(&str, &[&str], &str, &str); 3] = [
            (
                "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                &["101112131415161718191a1b1c1d1e1f2021222324252627"],
                "112233445566778899aabbccddee",
                "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c",
            ),
            (
                "7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f",
                &[
                    "00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100",
                    "102030405060708090a0",
                    "09f911029d74e35bd84156c5635688c0",
                ],
                "7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553",
                "7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d",
            ),
            (
                "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                &[],
                "",
                "f2007a5beb2b8900c588a7adf599f172",
            ),
        ];
        for (key, headers, plain, want) in cases {
            let key: [u8; 32] = unhex(key).try_into().unwrap();
            let headers: Vec<Vec<u8>> = headers.iter().map(|h| unhex(h)).collect();
            let headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
            let mut data = unhex(plain);
            let tag = seal(&key, &headers, &mut data);
            let want = unhex(want);
            assert_eq!([&tag[..], &data].concat(), want, "{key:?}");
            assert!(open(&key, &headers, &mut data, &tag));
            assert_eq!(data, unhex(plain));
        }
    }

    /// More headers than one batch of chains holds.
    #[test]
    fn agrees_with_the_aes_siv_crate_for_many_headers() {
        use aes_siv::{KeyInit as _, siv::Aes128Siv};
        let key = [0x5a; 32];
        let strings: Vec<Vec<u8>> = (0..12).map(|i| vec![i as u8; 3 * i]).collect();
        for count in 0..strings.len() {
            let headers: Vec<&[u8]> = strings[..count].iter().map(Vec::as_slice).collect();
            for len in [0, 5, 16, 40] {
                let mut data = vec![0x33; len];
                let tag = seal(&key, &headers, &mut data);
                let want = Aes128Siv::new((&key).into())
                    .encrypt(&headers, &vec![0x33; len])
                    .unwrap();
                assert_eq!([&tag[..], &data].concat(), want, "{count} headers, {len}");
            }
        }
    }

    /// Every length around the block and batch boundaries (S2V's short and long
    /// branches, CMAC's padded and whole final blocks, CTR's batches), against the
    /// `aes-siv` crate.
    #[test]
    fn agrees_with_the_aes_siv_crate_at_every_length() {
        use aes_siv::{KeyInit as _, siv::Aes128Siv};
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 31 + 5) as u8).collect();
        for ad_len in [0, 1, 15, 16, 17, 48, 200] {
            for len in 0..=(16 * PAR_BLOCKS + 20) {
                let (ad, nonce) = (&bytes[..ad_len], &bytes[100..116]);
                let mut data = bytes[..len].to_vec();
                let tag = seal(&key, &[ad, nonce], &mut data);
                let mut theirs = Aes128Siv::new((&key).into());
                let want = theirs.encrypt([ad, nonce], &bytes[..len]).unwrap();
                assert_eq!([&tag[..], &data].concat(), want, "ad {ad_len} len {len}");
                assert!(open(&key, &[ad, nonce], &mut data, &tag));
                assert_eq!(data, &bytes[..len]);
                if len > 0 {
                    let mut bad = tag;
                    bad[len % 16] ^= 4;
                    let mut ct = want[16..].to_vec();
                    assert!(!open(&key, &[ad, nonce], &mut ct, &bad));
                    assert_eq!(ct, &want[16..], "a failed open leaves the ciphertext");
                }
            }
        }
    }
}
