//! The AEAD algorithms NTS authenticates with (RFC 8915 section 5.1): AES-SIV-CMAC-256
//! (RFC 5297), which every implementation has, and AES-128-GCM-SIV (RFC 8452), which
//! chrony prefers: half the key, so shorter cookies, and POLYVAL on carry-less
//! multiplication in place of AES-SIV's serial chain of CMAC blocks.

use super::siv;
use aes_gcm_siv::{AesGcmSiv, KeyInit, aead::AeadInPlace};

/// AES-128-GCM-SIV on the encrypt-only AES-128 (the crate's default type also
/// schedules decryption keys, which GCM-SIV never uses, for every message's key).
type Aes128GcmSiv = AesGcmSiv<aes::Aes128Enc>;

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

/// A key of an algorithm. A session's keys are scheduled per message (an NTS server's
/// change with nearly every request, and the `aes` crate's key schedules are too large
/// to move around cheaply); a kept key's AES-128-GCM-SIV key-generating key is
/// scheduled once.
#[derive(Clone)]
pub struct Cipher {
    aead: Aead,
    key: [u8; MAX_KEY_LEN],
    scheduled: Option<Box<Aes128GcmSiv>>,
}

impl Cipher {
    /// `key` for `aead`, kept and used many times (the server's cookie keys), or `None`
    /// if its length is not the algorithm's.
    pub fn new(aead: Aead, key: &[u8]) -> Option<Cipher> {
        if key.len() != aead.key_len() {
            return None;
        }
        let mut k = [0u8; MAX_KEY_LEN];
        k[..key.len()].copy_from_slice(key);
        let mut c = Cipher::from_key(aead, &k);
        if aead == Aead::Aes128GcmSiv {
            c.scheduled = Some(Box::new(c.gcm_siv_key()));
        }
        Some(c)
    }

    /// The key for `aead` in the first [`Aead::key_len`] bytes of `key`, for a few
    /// messages.
    pub(super) fn from_key(aead: Aead, key: &[u8; MAX_KEY_LEN]) -> Cipher {
        Cipher {
            aead,
            key: *key,
            scheduled: None,
        }
    }

    fn gcm_siv_key(&self) -> Aes128GcmSiv {
        Aes128GcmSiv::new(aes::Block::from_slice(&self.key[..16]))
    }

    /// `f` of the AES-128-GCM-SIV key, scheduled now unless it was kept.
    fn with_gcm_siv<R>(&self, f: impl FnOnce(&Aes128GcmSiv) -> R) -> R {
        match &self.scheduled {
            Some(c) => f(c),
            None => f(&self.gcm_siv_key()),
        }
    }

    /// Its algorithm.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// Appends to `out` the ciphertext of `plain` under `nonce` and `ad` as NTS carries
    /// it (RFC 5297's tag first; RFC 8452's tag last). `false` if the nonce is not one
    /// the algorithm takes.
    pub fn seal_into(&self, nonce: &[u8], ad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> bool {
        let at = out.len();
        out.extend_from_slice(plain);
        out.resize(out.len() + TAG_LEN, 0);
        let sealed = self.seal_in_place(nonce, ad, &mut out[at..]);
        if !sealed {
            out.truncate(at);
        }
        sealed
    }

    /// Seals in place: `buf` holds the plaintext followed by [`TAG_LEN`] bytes of room,
    /// and then the ciphertext as NTS carries it. `false`, and `buf` unchanged, if the
    /// nonce is not one the algorithm takes or `buf` has no room for the tag.
    pub fn seal_in_place(&self, nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool {
        if !self.aead().takes_nonce(nonce.len()) || buf.len() < TAG_LEN {
            return false;
        }
        let plain_len = buf.len() - TAG_LEN;
        match self.aead {
            Aead::AesSivCmac256 => {
                buf.copy_within(..plain_len, TAG_LEN);
                let key = &self.key;
                let tag = siv::seal(key, &[ad, nonce], &mut buf[TAG_LEN..]);
                buf[..TAG_LEN].copy_from_slice(&tag);
                true
            }
            Aead::Aes128GcmSiv => {
                let (plain, tag_room) = buf.split_at_mut(plain_len);
                match self.with_gcm_siv(|c| c.encrypt_in_place_detached(nonce.into(), ad, plain)) {
                    Ok(tag) => {
                        tag_room.copy_from_slice(&tag);
                        true
                    }
                    // Only for inputs past the algorithm's limits (gigabytes).
                    Err(_) => false,
                }
            }
        }
    }

    /// The plaintext of `ct` (as [`Self::seal_into`] made it) under `nonce` and `ad`, or
    /// `None` if it does not verify.
    pub fn open(&self, nonce: &[u8], ad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
        let mut plain = vec![0; ct.len().checked_sub(TAG_LEN)?];
        self.open_into(nonce, ad, ct, &mut plain).then_some(plain)
    }

    /// Decrypts `ct` into `plain`, which must be [`TAG_LEN`] bytes shorter; `false` (and
    /// `plain` not the plaintext) if it does not verify or the lengths do not fit.
    pub fn open_into(&self, nonce: &[u8], ad: &[u8], ct: &[u8], plain: &mut [u8]) -> bool {
        if !self.aead().takes_nonce(nonce.len()) || ct.len() != plain.len() + TAG_LEN {
            return false;
        }
        match self.aead {
            Aead::AesSivCmac256 => {
                let (tag, body) = ct.split_at(TAG_LEN);
                plain.copy_from_slice(body);
                let Ok(tag) = tag.try_into() else {
                    return false;
                };
                siv::open(&self.key, &[ad, nonce], plain, tag)
            }
            Aead::Aes128GcmSiv => {
                let (body, tag) = ct.split_at(plain.len());
                plain.copy_from_slice(body);
                self.with_gcm_siv(|c| {
                    c.decrypt_in_place_detached(nonce.into(), ad, plain, tag.into())
                })
                .is_ok()
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::nts) fn unhex(s: &str) -> Vec<u8> {
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
    fn siv_cmac_carries_the_tag_first_over_ad_then_nonce() {
        // RFC 8915 5.6: the associated data, then the nonce, as S2V's headers; the
        // vectors themselves are checked in `siv`.
        use aes_siv::{KeyInit as _, siv::Aes128Siv};
        let key = unhex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff");
        let ad = unhex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
        let plain = unhex("11223344 55667788 99aabbcc ddee");
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
