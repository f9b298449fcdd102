//! The AEAD algorithms NTS authenticates with (RFC 8915 section 5.1): AES-SIV-CMAC-256
//! (RFC 5297), which every implementation has, and AES-128-GCM-SIV (RFC 8452), which
//! chrony prefers: half the key, so shorter cookies, and POLYVAL on carry-less
//! multiplication in place of AES-SIV's serial chain of CMAC blocks.

use aes_gcm_siv::{Aes128GcmSiv, aead::AeadInPlace};
use aes_siv::{KeyInit, siv::Aes128Siv};

/// Bytes of an authentication tag (both algorithms).
pub(super) const TAG_LEN: usize = 16;
/// Bytes of the longest key (AES-SIV-CMAC-256's two AES-128 keys).
pub const MAX_KEY_LEN: usize = 32;
/// Bytes of the longest nonce this side makes (the most RFC 8915 asks for).
pub const MAX_NONCE_LEN: usize = 16;

/// An NTS AEAD algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aead {
    /// `AEAD_AES_SIV_CMAC_256` (IANA 15): the one every NTS implementation supports.
    AesSivCmac256,
    /// `AEAD_AES_128_GCM_SIV` (IANA 30).
    Aes128GcmSiv,
}

impl Aead {
    /// Every algorithm, in chrony's default order of preference (`ntsaeads 30 15`).
    pub const ALL: [Aead; 2] = [Aead::Aes128GcmSiv, Aead::AesSivCmac256];

    /// Its IANA number.
    pub const fn id(self) -> u16 {
        match self {
            Aead::AesSivCmac256 => 15,
            Aead::Aes128GcmSiv => 30,
        }
    }

    /// The algorithm numbered `id`, if supported.
    pub fn from_id(id: u16) -> Option<Aead> {
        Aead::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The algorithm whose keys are `len` bytes (keys alone tell the two apart, as
    /// chrony tells a cookie's algorithm by its keys' length).
    pub fn from_key_len(len: usize) -> Option<Aead> {
        Aead::ALL.into_iter().find(|a| a.key_len() == len)
    }

    /// Bytes of its key.
    pub const fn key_len(self) -> usize {
        match self {
            Aead::AesSivCmac256 => 32,
            Aead::Aes128GcmSiv => 16,
        }
    }

    /// Bytes of the nonces this side makes: the longest the algorithm takes, at most
    /// [`MAX_NONCE_LEN`] (RFC 8915 5.6's `N_REQ`, so no padding is ever needed after it).
    pub const fn nonce_len(self) -> usize {
        match self {
            Aead::AesSivCmac256 => 16,
            Aead::Aes128GcmSiv => 12,
        }
    }

    /// Whether a peer's nonce of `len` bytes is one the algorithm takes.
    pub const fn takes_nonce(self, len: usize) -> bool {
        match self {
            Aead::AesSivCmac256 => len > 0,
            Aead::Aes128GcmSiv => len == 12,
        }
    }
}

/// A key ready to use, its key schedule made once: kept for the server's cookie keys,
/// made per use for a session's keys.
#[derive(Clone)]
pub enum Cipher {
    /// AES-SIV-CMAC-256. The crate's instance needs `&mut` and is not `Clone`, so the
    /// key is kept and the instance made per use.
    AesSivCmac256([u8; 32]),
    /// AES-128-GCM-SIV, its key-generating key scheduled.
    Aes128GcmSiv(Box<Aes128GcmSiv>),
}

impl Cipher {
    /// `key` for `aead`, or `None` if its length is not the algorithm's.
    pub fn new(aead: Aead, key: &[u8]) -> Option<Cipher> {
        if key.len() != aead.key_len() {
            return None;
        }
        let mut k = [0u8; MAX_KEY_LEN];
        k[..key.len()].copy_from_slice(key);
        Some(Cipher::from_key(aead, &k))
    }

    /// The key for `aead` in the first [`Aead::key_len`] bytes of `key`.
    pub(super) fn from_key(aead: Aead, key: &[u8; MAX_KEY_LEN]) -> Cipher {
        match aead {
            Aead::AesSivCmac256 => Cipher::AesSivCmac256(*key),
            Aead::Aes128GcmSiv => {
                let mut k = [0u8; 16];
                k.copy_from_slice(&key[..16]);
                Cipher::Aes128GcmSiv(Box::new(Aes128GcmSiv::new(&k.into())))
            }
        }
    }

    /// Its algorithm.
    pub fn aead(&self) -> Aead {
        match self {
            Cipher::AesSivCmac256(_) => Aead::AesSivCmac256,
            Cipher::Aes128GcmSiv(_) => Aead::Aes128GcmSiv,
        }
    }

    /// Appends to `out` the ciphertext of `plain` under `nonce` and `ad` as NTS carries
    /// it (RFC 5297's tag first; RFC 8452's tag last). `false` if the nonce is not one
    /// the algorithm takes.
    pub fn seal_into(&self, nonce: &[u8], ad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> bool {
        if !self.aead().takes_nonce(nonce.len()) {
            return false;
        }
        let at = out.len();
        let sealed = match self {
            Cipher::AesSivCmac256(key) => {
                out.resize(at + TAG_LEN, 0);
                out.extend_from_slice(plain);
                let mut siv = Aes128Siv::new(key.into());
                siv.encrypt_in_place_detached([ad, nonce], &mut out[at + TAG_LEN..])
                    .map(|tag| out[at..at + TAG_LEN].copy_from_slice(&tag))
            }
            Cipher::Aes128GcmSiv(c) => {
                out.extend_from_slice(plain);
                c.encrypt_in_place_detached(nonce.into(), ad, &mut out[at..])
                    .map(|tag| out.extend_from_slice(&tag))
            }
        };
        if sealed.is_err() {
            // Only for inputs past the algorithms' limits (gigabytes): nothing half-made.
            out.truncate(at);
        }
        sealed.is_ok()
    }

    /// The plaintext of `ct` (as [`Self::seal_into`] made it) under `nonce` and `ad`, or
    /// `None` if it does not verify.
    pub fn open(&self, nonce: &[u8], ad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
        if !self.aead().takes_nonce(nonce.len()) || ct.len() < TAG_LEN {
            return None;
        }
        match self {
            Cipher::AesSivCmac256(key) => {
                let (tag, body) = ct.split_at(TAG_LEN);
                let mut plain = body.to_vec();
                let mut siv = Aes128Siv::new(key.into());
                siv.decrypt_in_place_detached([ad, nonce], &mut plain, tag.into())
                    .ok()?;
                Some(plain)
            }
            Cipher::Aes128GcmSiv(c) => {
                let (body, tag) = ct.split_at(ct.len() - TAG_LEN);
                let mut plain = body.to_vec();
                c.decrypt_in_place_detached(nonce.into(), ad, &mut plain, tag.into())
                    .ok()?;
                Some(plain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn gcm_siv_matches_rfc_8452_vectors() {
        // RFC 8452 appendix C.1: AEAD_AES_128_GCM_SIV, 8 bytes of plaintext, 1 of AAD.
        let key = unhex("01000000000000000000000000000000");
        let nonce = unhex("030000000000000000000000");
        let c = Cipher::new(Aead::Aes128GcmSiv, &key).unwrap();
        let mut out = Vec::new();
        assert!(c.seal_into(&nonce, &unhex("01"), &unhex("0200000000000000"), &mut out));
        assert_eq!(
            out,
            unhex("1e6daba35669f4273b0a1a2560969cdf 790d99759abd1508")
        );
        assert_eq!(
            c.open(&nonce, &unhex("01"), &out).unwrap(),
            unhex("0200000000000000")
        );
        // RFC 8452 C.1, no plaintext and no AAD: the tag alone.
        let mut tag = Vec::new();
        assert!(c.seal_into(&nonce, b"", b"", &mut tag));
        assert_eq!(tag, unhex("dc20e2d83f25705bb49e439eca56de25"));
    }

    #[test]
    fn siv_cmac_matches_rfc_5297_vector() {
        // RFC 5297 A.1 uses a single header and no nonce; NTS always passes a nonce,
        // so its layout (tag first) is checked against the crate's own AEAD form.
        let key = unhex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff");
        let ad = unhex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
        let plain = unhex("11223344 55667788 99aabbcc ddee");
        let mut siv = Aes128Siv::new(key.as_slice().into());
        let want = siv.encrypt([&ad], &plain).unwrap();
        assert_eq!(
            want,
            unhex("85632d07c6e8f37f950acd320a2ecc93 40c02b9690c4dc04daef7f6afe5c")
        );
        let c = Cipher::new(Aead::AesSivCmac256, &key).unwrap();
        let mut out = Vec::new();
        assert!(c.seal_into(&[7; 16], &ad, &plain, &mut out));
        let mut siv = Aes128Siv::new(key.as_slice().into());
        assert_eq!(out, siv.encrypt([&ad[..], &[7; 16]], &plain).unwrap());
        assert_eq!(c.open(&[7; 16], &ad, &out).unwrap(), plain);
    }

    #[test]
    fn anything_altered_does_not_open() {
        for aead in Aead::ALL {
            let c = Cipher::new(aead, &vec![9; aead.key_len()]).unwrap();
            let nonce = vec![3; aead.nonce_len()];
            let mut ct = Vec::new();
            assert!(c.seal_into(&nonce, b"header", b"cookie", &mut ct));
            assert_eq!(ct.len(), 6 + TAG_LEN);
            assert_eq!(c.open(&nonce, b"header", &ct).unwrap(), b"cookie");
            for i in 0..ct.len() {
                let mut bad = ct.clone();
                bad[i] ^= 1;
                assert!(
                    c.open(&nonce, b"header", &bad).is_none(),
                    "{aead:?} byte {i}"
                );
            }
            assert!(c.open(&nonce, b"headeR", &ct).is_none());
            let mut other = nonce.clone();
            other[0] ^= 1;
            assert!(c.open(&other, b"header", &ct).is_none());
            assert!(c.open(&nonce, b"header", &ct[..TAG_LEN - 1]).is_none());
            let other_key = Cipher::new(aead, &vec![8; aead.key_len()]).unwrap();
            assert!(other_key.open(&nonce, b"header", &ct).is_none());
        }
    }

    #[test]
    fn keys_and_nonces_of_the_wrong_length_are_refused() {
        assert!(Cipher::new(Aead::Aes128GcmSiv, &[0; 32]).is_none());
        assert!(Cipher::new(Aead::AesSivCmac256, &[0; 16]).is_none());
        let c = Cipher::new(Aead::Aes128GcmSiv, &[0; 16]).unwrap();
        assert!(!c.seal_into(&[0; 16], b"", b"", &mut Vec::new()));
        assert!(c.open(&[0; 11], b"", &[0; 16]).is_none());
        assert_eq!(Aead::from_id(30), Some(Aead::Aes128GcmSiv));
        assert_eq!(Aead::from_id(15), Some(Aead::AesSivCmac256));
        assert_eq!(Aead::from_id(17), None);
        assert_eq!(Aead::from_key_len(16), Some(Aead::Aes128GcmSiv));
    }
}
