//! Symmetric-key authentication of NTP packets as chrony does it: a MAC after the
//! header (and any extension fields), made of the key id and `digest(key || packet)` for
//! the hash types (RFC 5905) or `AES-CMAC(key, packet)` (RFC 8573).
//!
//! `NTPv4` caps a MAC at 4 + 20 bytes, so it cannot be mistaken for an extension field
//! (RFC 7822): longer digests are truncated to 20 bytes there, and, as chrony, a client
//! whose digest would be truncated speaks `NTPv3`, where the whole digest goes.

use crate::keys::Key;
use digest::Digest;
use std::collections::HashMap;

/// Smallest MAC: key id and a 16-byte digest.
pub const MIN_MAC_LEN: usize = 4 + 16;
/// Largest MAC in an `NTPv4` packet (RFC 7822).
pub const MAX_V4_MAC_LEN: usize = 4 + 20;
/// Largest MAC at all: key id and a 64-byte digest.
pub const MAX_MAC_LEN: usize = 4 + 64;

/// A key ready to authenticate with.
#[derive(Clone)]
pub struct AuthKey {
    id: u32,
    kind: Kind,
    secret: Vec<u8>,
}

impl std::fmt::Debug for AuthKey {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthKey {{ id: {}, {:?} }}", self.id, self.kind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
    Tiger,
    Whirlpool,
    Aes128,
    Aes256,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "MD5" => Kind::Md5,
            "SHA1" => Kind::Sha1,
            "SHA256" => Kind::Sha256,
            "SHA384" => Kind::Sha384,
            "SHA512" => Kind::Sha512,
            "SHA3-224" => Kind::Sha3_224,
            "SHA3-256" => Kind::Sha3_256,
            "SHA3-384" => Kind::Sha3_384,
            "SHA3-512" => Kind::Sha3_512,
            "TIGER" => Kind::Tiger,
            "WHIRLPOOL" => Kind::Whirlpool,
            "AES128" => Kind::Aes128,
            "AES256" => Kind::Aes256,
            _ => return None,
        })
    }

    /// Bytes of the full digest.
    fn len(self) -> usize {
        match self {
            Kind::Md5 | Kind::Aes128 | Kind::Aes256 => 16,
            Kind::Sha1 => 20,
            Kind::Tiger => 24,
            Kind::Sha3_224 => 28,
            Kind::Sha256 | Kind::Sha3_256 => 32,
            Kind::Sha384 | Kind::Sha3_384 => 48,
            Kind::Sha512 | Kind::Sha3_512 | Kind::Whirlpool => 64,
        }
    }
}

fn hash<D: Digest>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = D::new();
    h.update(key);
    h.update(data);
    h.finalize().to_vec()
}

fn cmac<C: cmac::digest::KeyInit + cmac::Mac>(key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let mut m = <C as cmac::Mac>::new_from_slice(key).ok()?;
    m.update(data);
    Some(m.finalize().into_bytes().to_vec())
}

impl AuthKey {
    /// The key from a keyfile entry, or why it cannot authenticate (an AES key of the
    /// wrong length).
    pub fn new(k: &Key) -> Result<Self, String> {
        let kind = Kind::parse(&k.kind).ok_or_else(|| format!("unknown key type {}", k.kind))?;
        let need = match kind {
            Kind::Aes128 => Some(16),
            Kind::Aes256 => Some(32),
            _ => None,
        };
        if let Some(n) = need
            && k.secret.len() != n
        {
            return Err(format!(
                "key {} is {} bytes; {} needs {n}",
                k.id,
                k.secret.len(),
                k.kind
            ));
        }
        Ok(AuthKey {
            id: k.id,
            kind,
            secret: k.secret.clone(),
        })
    }

    /// The key number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// chrony's number of the key's algorithm (`HSH_*`, `CMC_*`), as `authdata` shows it.
    pub fn type_id(&self) -> u16 {
        match self.kind {
            Kind::Md5 => 1,
            Kind::Sha1 => 2,
            Kind::Sha256 => 3,
            Kind::Sha384 => 4,
            Kind::Sha512 => 5,
            Kind::Sha3_224 => 6,
            Kind::Sha3_256 => 7,
            Kind::Sha3_384 => 8,
            Kind::Sha3_512 => 9,
            Kind::Tiger => 10,
            Kind::Whirlpool => 11,
            Kind::Aes128 => 13,
            Kind::Aes256 => 14,
        }
    }

    /// The key's length, bits.
    pub fn bits(&self) -> u16 {
        (8 * self.secret.len()).min(usize::from(u16::MAX)) as u16
    }

    /// The full digest (or CMAC) of `data`.
    fn digest(&self, data: &[u8]) -> Vec<u8> {
        let k = &self.secret;
        match self.kind {
            Kind::Md5 => hash::<md5::Md5>(k, data),
            Kind::Sha1 => hash::<sha1::Sha1>(k, data),
            Kind::Sha256 => hash::<sha2::Sha256>(k, data),
            Kind::Sha384 => hash::<sha2::Sha384>(k, data),
            Kind::Sha512 => hash::<sha2::Sha512>(k, data),
            Kind::Sha3_224 => hash::<sha3::Sha3_224>(k, data),
            Kind::Sha3_256 => hash::<sha3::Sha3_256>(k, data),
            Kind::Sha3_384 => hash::<sha3::Sha3_384>(k, data),
            Kind::Sha3_512 => hash::<sha3::Sha3_512>(k, data),
            Kind::Tiger => hash::<tiger::Tiger>(k, data),
            Kind::Whirlpool => hash::<whirlpool::Whirlpool>(k, data),
            // The lengths were checked in `new`.
            Kind::Aes128 => cmac::<cmac::Cmac<aes::Aes128>>(k, data).unwrap_or_default(),
            Kind::Aes256 => cmac::<cmac::Cmac<aes::Aes256>>(k, data).unwrap_or_default(),
        }
    }

    /// Whether an `NTPv4` packet would truncate this key's digest (chrony then speaks `NTPv3`).
    pub fn truncated_in_v4(&self) -> bool {
        4 + self.kind.len() > MAX_V4_MAC_LEN
    }

    /// The MAC (key id and digest) of `data` sent in a packet of NTP `version`.
    pub fn mac(&self, data: &[u8], version: u8) -> Vec<u8> {
        let max = if version == 4 {
            MAX_V4_MAC_LEN
        } else {
            MAX_MAC_LEN
        } - 4;
        let mut out = self.id.to_be_bytes().to_vec();
        let d = self.digest(data);
        out.extend_from_slice(&d[..d.len().min(max)]);
        out
    }

    /// Whether `digest` (the MAC without its key id) authenticates `data` in a packet
    /// of NTP `version`: the full digest, or in `NTPv4` a MAC of at most 24 bytes its
    /// truncation to 20; compared in constant time.
    pub fn verify(&self, data: &[u8], version: u8, digest: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let trunc = if version == 4 && 4 + digest.len() <= MAX_V4_MAC_LEN {
            MAX_V4_MAC_LEN
        } else {
            MAX_MAC_LEN
        } - 4;
        let d = self.digest(data);
        let want = &d[..d.len().min(trunc)];
        want.len() == digest.len() && bool::from(want.ct_eq(digest))
    }
}

/// The keys of the keyfile, by number.
#[derive(Clone, Debug, Default)]
pub struct KeyTable {
    keys: HashMap<u32, AuthKey>,
}

impl KeyTable {
    /// The table of `keys`; keys that cannot authenticate are left out, each with why.
    pub fn new(keys: &[Key]) -> (Self, Vec<String>) {
        let mut t = KeyTable::default();
        let mut problems = Vec::new();
        for k in keys {
            match AuthKey::new(k) {
                Ok(a) => {
                    t.keys.insert(k.id, a);
                }
                Err(e) => problems.push(e),
            }
        }
        (t, problems)
    }

    /// Key `id`, if the keyfile has it.
    pub fn get(&self, id: u32) -> Option<&AuthKey> {
        self.keys.get(&id)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What follows the 48-byte header of a packet, as chrony reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trailer<'a> {
    /// Nothing: a plain packet.
    None,
    /// A MAC: the packet up to it, the key id and the digest.
    Mac {
        /// Everything the MAC covers.
        covered: &'a [u8],
        /// The key number.
        key_id: u32,
        /// The digest.
        digest: &'a [u8],
    },
    /// A crypto-NAK (`NTPv4`: a lone zero key id).
    CryptoNak,
    /// Extension fields, which this build does not read (NTS is not supported yet).
    ExtensionFields,
    /// Not a valid packet: wrong length or layout.
    Malformed,
}

/// Reads what follows the header of `packet` (chrony's `parse_packet`): in `NTPv3` and
/// older anything after the header is a MAC; in `NTPv4` a remainder of 20 to 24 bytes is
/// one, a lone zero word a crypto-NAK, anything else extension fields.
pub fn trailer(packet: &[u8]) -> Trailer<'_> {
    let header = ntp_common::wire::NTP_HEADER_LEN;
    if packet.len() < header || !packet.len().is_multiple_of(4) {
        return Trailer::Malformed;
    }
    let rest = packet.len() - header;
    if rest == 0 {
        return Trailer::None;
    }
    let version = (packet[0] >> 3) & 7;
    let mac = || {
        let key_id = u32::from_be_bytes([
            packet[header],
            packet[header + 1],
            packet[header + 2],
            packet[header + 3],
        ]);
        Trailer::Mac {
            covered: &packet[..header],
            key_id,
            digest: &packet[header + 4..],
        }
    };
    if version <= 3 {
        return if rest >= 4 { mac() } else { Trailer::Malformed };
    }
    if rest == 4 && packet[header..] == [0, 0, 0, 0] {
        return Trailer::CryptoNak;
    }
    if (MIN_MAC_LEN..=MAX_V4_MAC_LEN).contains(&rest) {
        return mac();
    }
    Trailer::ExtensionFields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32, kind: &str, secret: &[u8]) -> AuthKey {
        AuthKey::new(&Key {
            id,
            kind: kind.into(),
            secret: secret.to_vec(),
        })
        .unwrap()
    }

    fn packet(version: u8) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = version << 3 | 3;
        p[40..48].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        p
    }

    #[test]
    fn digests_are_the_key_then_the_packet() {
        // As Python's hashlib gives them for "key" || "abc" and "k" || "x".
        assert_eq!(
            hex(&key(1, "MD5", b"key").digest(b"abc")),
            "52878f125814206651a24111280ec873"
        );
        assert_eq!(
            hex(&key(1, "SHA1", b"key").digest(b"abc")),
            "36096e109609be59938bcd2fde6252df0e1eded5"
        );
        assert_eq!(
            hex(&key(1, "SHA256", b"k").digest(b"x")),
            "658447540603e4b7eaf861247e5ca182718bf9001fc67d18f37331415aefa4d1"
        );
        assert_eq!(key(1, "WHIRLPOOL", b"k").digest(b"x").len(), 64);
        assert_eq!(key(1, "TIGER", b"k").digest(b"x").len(), 24);
    }

    #[test]
    fn aes_cmac_matches_rfc_4493() {
        // RFC 4493 example 2: AES-128, 16-byte message.
        let k = key(9, "AES128", &unhex("2b7e151628aed2a6abf7158809cf4f3c"));
        let m = unhex("6bc1bee22e409f96e93d7e117393172a");
        assert_eq!(hex(&k.digest(&m)), "070a16b46b4d4144f79bdd9dd04a287c");
        assert!(
            AuthKey::new(&Key {
                id: 2,
                kind: "AES128".into(),
                secret: vec![0; 15]
            })
            .is_err(),
            "a 15-byte AES128 key"
        );
    }

    #[test]
    fn v4_macs_are_truncated_to_20_bytes_and_verified_as_chrony_does() {
        let k = key(7, "SHA256", b"secret");
        let p = packet(4);
        let mac = k.mac(&p, 4);
        assert_eq!(mac.len(), MAX_V4_MAC_LEN);
        assert_eq!(mac[..4], 7u32.to_be_bytes());
        assert!(k.verify(&p, 4, &mac[4..]));
        assert!(k.truncated_in_v4());
        // `NTPv3` carries the whole digest, and only the whole digest verifies there.
        let v3 = k.mac(&packet(3), 3);
        assert_eq!(v3.len(), 4 + 32);
        assert!(k.verify(&packet(3), 3, &v3[4..]));
        assert!(!k.verify(&packet(3), 3, &v3[4..24]));
        // A flipped bit anywhere fails.
        let mut bad = p.clone();
        bad[47] ^= 1;
        assert!(!k.verify(&bad, 4, &mac[4..]));
        let mut bad_mac = mac.clone();
        bad_mac[10] ^= 0x80;
        assert!(!k.verify(&p, 4, &bad_mac[4..]));
        // Another key with the same number and type fails.
        assert!(!key(7, "SHA256", b"secreT").verify(&p, 4, &mac[4..]));
        // MD5 fits `NTPv4` whole.
        assert!(!key(1, "MD5", b"k").truncated_in_v4());
    }

    #[test]
    fn the_trailer_is_read_as_chrony_reads_it() {
        let mut p = packet(4);
        assert_eq!(trailer(&p), Trailer::None);
        p.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(trailer(&p), Trailer::CryptoNak);
        let k = key(3, "MD5", b"x");
        let mut signed = packet(4);
        let mac = k.mac(&signed, 4);
        signed.extend_from_slice(&mac);
        match trailer(&signed) {
            Trailer::Mac {
                covered,
                key_id,
                digest,
            } => {
                assert_eq!((covered.len(), key_id, digest.len()), (48, 3, 16));
                assert!(k.verify(covered, 4, digest));
            }
            t => panic!("{t:?}"),
        }
        let mut ef = packet(4);
        ef.extend_from_slice(&[0u8; 28]);
        assert_eq!(trailer(&ef), Trailer::ExtensionFields);
        assert_eq!(trailer(&p[..50]), Trailer::Malformed);
        // `NTPv3`: anything after the header is a MAC.
        let mut v3 = packet(3);
        v3.extend_from_slice(&key(5, "SHA512", b"y").mac(&packet(3), 3));
        assert!(matches!(trailer(&v3), Trailer::Mac { key_id: 5, .. }));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
