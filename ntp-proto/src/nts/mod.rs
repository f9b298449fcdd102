//! NTS (RFC 8915), without IO: the NTS-KE records, the server's cookies, and the NTS
//! extension fields of NTP packets, for the server and the client. The daemon runs TLS
//! and the sockets; random bytes (keys, nonces) come in as arguments.

mod aead;
mod siv;

use aead::TAG_LEN;
pub use aead::{Aead, Cipher, MAX_KEY_LEN, MAX_NONCE_LEN};

/// The NTS-KE server's TCP port.
pub const KE_PORT: u16 = 4460;
/// The NTS-KE ALPN protocol name.
pub const ALPN: &[u8] = b"ntske/1";
/// The TLS exporter label the NTP keys come from.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-network-time-security";
/// The NTS-KE next protocol `NTPv4`.
pub const PROTOCOL_NTPV4: u16 = 0;
/// Most cookies handed out at once.
pub const MAX_COOKIES: usize = 8;
/// Longest cookie a client keeps (chrony's limit).
pub const MAX_COOKIE_LEN: usize = 256;
/// Longest NTS-KE message the server reads (chrony's limit).
pub const MAX_KE_MESSAGE: usize = 16384;

const CRITICAL: u16 = 1 << 15;
const REC_END: u16 = 0;
const REC_NEXT_PROTOCOL: u16 = 1;
const REC_ERROR: u16 = 2;
const REC_WARNING: u16 = 3;
const REC_AEAD: u16 = 4;
const REC_COOKIE: u16 = 5;
const REC_SERVER: u16 = 6;
const REC_PORT: u16 = 7;
/// chrony's record (IANA 1024, empty, not critical) by which a client asks for, and a
/// server confirms, AES-128-GCM-SIV keys exported under the RFC's context: chrony 4.4 to
/// 4.6 exported them under AES-SIV-CMAC-256's number, and a peer that does not send it
/// is taken to be one of those.
const REC_COMPLIANT_128GCM: u16 = 1024;

/// NTS-KE error: a critical record the server does not know.
pub const ERROR_UNRECOGNIZED_CRITICAL: u16 = 0;
/// NTS-KE error: a malformed or unacceptable request.
pub const ERROR_BAD_REQUEST: u16 = 1;

/// The NTP extension field types of NTS.
const EF_UNIQUE_ID: u16 = 0x0104;
const EF_COOKIE: u16 = 0x0204;
const EF_COOKIE_PLACEHOLDER: u16 = 0x0304;
const EF_AUTHENTICATOR: u16 = 0x0404;
/// Shortest extension field in `NTPv4` (RFC 7822).
const MIN_EF_LEN: usize = 16;
/// Shortest unique identifier a request may carry (RFC 8915: 32 bytes).
const MIN_UID_LEN: usize = 32;
/// Bytes of the random nonce material callers pass in: the longest nonce any algorithm
/// here uses (each takes the first [`Aead::nonce_len`] bytes).
pub const NONCE_LEN: usize = MAX_NONCE_LEN;

/// What an NTS-KE client asked for, once its message is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeRequest {
    /// Next protocols offered, in order.
    pub protocols: Vec<u16>,
    /// AEAD algorithms offered, in order.
    pub aeads: Vec<u16>,
    /// Whether the client asked for AES-128-GCM-SIV keys under the RFC's exporter
    /// context (chrony's record 1024).
    pub compliant_128gcm: bool,
}

/// Why a client message is refused: the NTS-KE error code to send.
pub type KeError = u16;

/// Reads an NTS-KE client message: `Ok(None)` while it is incomplete (no End of Message
/// yet), the request once it is, or the error to answer with.
pub fn parse_ke_request(msg: &[u8]) -> Result<Option<KeRequest>, KeError> {
    let mut req = KeRequest {
        protocols: Vec::new(),
        aeads: Vec::new(),
        compliant_128gcm: false,
    };
    let (mut seen_protocol, mut seen_aead) = (false, false);
    let mut at = 0;
    loop {
        let Some((kind, body, next)) = record_at(msg, at) else {
            return Ok(None);
        };
        at = next;
        let critical = kind & CRITICAL != 0;
        let pairs = |b: &[u8]| -> Option<Vec<u16>> {
            (b.len().is_multiple_of(2)).then(|| {
                b.chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
        };
        match kind & !CRITICAL {
            REC_END => {
                // As chrony's server: one Next Protocol record, and with NTPv4 one AEAD
                // record; only a well-formed request is answered by what it offers.
                // End of Message itself critical (RFC 8915 4.1.1).
                let ntpv4 = req.protocols.contains(&PROTOCOL_NTPV4);
                if !critical
                    || !body.is_empty()
                    || !seen_protocol
                    || (ntpv4 && !seen_aead)
                    || at != msg.len()
                {
                    return Err(ERROR_BAD_REQUEST);
                }
                return Ok(Some(req));
            }
            REC_NEXT_PROTOCOL => {
                // Critical and not empty (RFC 8915 4.1.2, as chrony checks).
                if seen_protocol || !critical || body.is_empty() {
                    return Err(ERROR_BAD_REQUEST);
                }
                seen_protocol = true;
                req.protocols = pairs(body).ok_or(ERROR_BAD_REQUEST)?;
            }
            REC_AEAD => {
                if seen_aead || body.is_empty() {
                    return Err(ERROR_BAD_REQUEST);
                }
                seen_aead = true;
                req.aeads = pairs(body).ok_or(ERROR_BAD_REQUEST)?;
            }
            REC_COMPLIANT_128GCM => {
                if !body.is_empty() {
                    return Err(ERROR_BAD_REQUEST);
                }
                req.compliant_128gcm = true;
            }
            // A client sends no errors, warnings or cookies (chrony refuses them);
            // server and port wishes are fine to ignore.
            REC_ERROR | REC_WARNING | REC_COOKIE => return Err(ERROR_BAD_REQUEST),
            REC_SERVER | REC_PORT => {}
            _ if critical => return Err(ERROR_UNRECOGNIZED_CRITICAL),
            _ => {}
        }
    }
}

/// The NTS-KE record at `at` in `msg`: its type (critical bit included), its body, and
/// where the next begins; `None` if the message ends before it does.
fn record_at(msg: &[u8], at: usize) -> Option<(u16, &[u8], usize)> {
    let head = msg.get(at..at + 4)?;
    let kind = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let body = msg.get(at + 4..at + 4 + len)?;
    Some((kind, body, at + 4 + len))
}

fn record(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// The AEAD algorithm for a request: the first the client offers that is `enabled`
/// (chrony's choice: the client's order decides), or `None` without `NTPv4` or a common
/// algorithm (answered by [`ke_refusal`]).
pub fn choose_aead(req: &KeRequest, enabled: &[Aead]) -> Option<Aead> {
    if !req.protocols.contains(&PROTOCOL_NTPV4) {
        return None;
    }
    req.aeads
        .iter()
        .filter_map(|&id| Aead::from_id(id))
        .find(|a| enabled.contains(a))
}

/// The server's answer to a request for which [`choose_aead`] chose `aead`: `NTPv4` with
/// it (confirming the compliant key export where the client asked and it applies),
/// `cookies`, and the NTP server and port to use when they are not this host's and 123.
pub fn ke_response(
    req: &KeRequest,
    aead: Aead,
    cookies: &[Vec<u8>],
    server: Option<&str>,
    port: Option<u16>,
) -> Vec<u8> {
    let mut out = Vec::new();
    record(
        &mut out,
        CRITICAL | REC_NEXT_PROTOCOL,
        &PROTOCOL_NTPV4.to_be_bytes(),
    );
    record(&mut out, CRITICAL | REC_AEAD, &aead.id().to_be_bytes());
    if compliant_export(aead, req.compliant_128gcm) {
        record(&mut out, REC_COMPLIANT_128GCM, &[]);
    }
    for c in cookies {
        record(&mut out, REC_COOKIE, c);
    }
    if let Some(s) = server {
        record(&mut out, REC_SERVER, s.as_bytes());
    }
    if let Some(p) = port {
        record(&mut out, REC_PORT, &p.to_be_bytes());
    }
    record(&mut out, CRITICAL | REC_END, &[]);
    out
}

/// Whether keys for `aead` are exported under the RFC's context, given whether the peer
/// sent (or, to a client, confirmed) chrony's compliant-export record. Without it an
/// AES-128-GCM-SIV peer is taken to be chrony 4.4 to 4.6, which exported under 15.
fn compliant_export(aead: Aead, record: bool) -> bool {
    aead == Aead::Aes128GcmSiv && record
}

/// The answer to a request [`choose_aead`] found nothing for (RFC 8915 4.1.2, 4.1.5,
/// as chrony answers): an empty Next Protocol record without `NTPv4` offered, else
/// `NTPv4` and an empty AEAD record; no cookies.
pub fn ke_refusal(req: &KeRequest) -> Vec<u8> {
    let mut out = Vec::new();
    if req.protocols.contains(&PROTOCOL_NTPV4) {
        record(
            &mut out,
            CRITICAL | REC_NEXT_PROTOCOL,
            &PROTOCOL_NTPV4.to_be_bytes(),
        );
        record(&mut out, CRITICAL | REC_AEAD, &[]);
    } else {
        record(&mut out, CRITICAL | REC_NEXT_PROTOCOL, &[]);
    }
    record(&mut out, CRITICAL | REC_END, &[]);
    out
}

/// An NTS-KE error message.
pub fn ke_error(code: KeError) -> Vec<u8> {
    let mut out = Vec::new();
    record(&mut out, CRITICAL | REC_ERROR, &code.to_be_bytes());
    record(&mut out, CRITICAL | REC_END, &[]);
    out
}

/// The TLS exporter context (RFC 8915 5.1) of the client-to-server (`s2c` false) or
/// server-to-client key for `NTPv4` with `aead`, `compliant` as the exchange settled it
/// (see [`ke_response`], [`KeResponse::compliant_128gcm`]): AES-128-GCM-SIV keys not
/// exported compliantly carry AES-SIV-CMAC-256's number, as chrony 4.4 to 4.6 made them.
pub fn exporter_context(aead: Aead, compliant: bool, s2c: bool) -> [u8; 5] {
    let [p0, p1] = PROTOCOL_NTPV4.to_be_bytes();
    let id = if aead == Aead::Aes128GcmSiv && !compliant {
        Aead::AesSivCmac256.id()
    } else {
        aead.id()
    };
    let [a0, a1] = id.to_be_bytes();
    [p0, p1, a0, a1, u8::from(s2c)]
}

/// Whether the server's keys for a request were exported compliantly (for
/// [`exporter_context`]).
pub fn request_compliant(req: &KeRequest, aead: Aead) -> bool {
    compliant_export(aead, req.compliant_128gcm)
}

/// A key the server seals its cookies under: AES-128-GCM-SIV for keys made now (as
/// chrony makes them), AES-SIV-CMAC-256 for keys saved by earlier versions.
#[derive(Clone)]
pub struct ServerKey {
    /// Its number, carried in every cookie.
    pub id: u32,
    bytes: [u8; MAX_KEY_LEN],
    cipher: Cipher,
}

impl ServerKey {
    /// Key `id` of `bytes`, its algorithm told by their length (16: AES-128-GCM-SIV,
    /// 32: AES-SIV-CMAC-256); `None` for any other length.
    pub fn new(id: u32, bytes: &[u8]) -> Option<Self> {
        let aead = Aead::from_key_len(bytes.len())?;
        let mut key = [0u8; MAX_KEY_LEN];
        key[..bytes.len()].copy_from_slice(bytes);
        Some(ServerKey {
            id,
            bytes: key,
            cipher: Cipher::new(aead, bytes)?,
        })
    }

    /// The key's bytes (to save it).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.aead().key_len()]
    }

    /// Its algorithm.
    pub fn aead(&self) -> Aead {
        self.cipher.aead()
    }
}

impl std::fmt::Debug for ServerKey {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKey {{ id: {} }}", self.id)
    }
}

/// The client's two NTP keys and their algorithm, as a cookie carries them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    aead: Aead,
    c2s: [u8; MAX_KEY_LEN],
    s2c: [u8; MAX_KEY_LEN],
}

impl SessionKeys {
    /// Keys for `aead`, or `None` if either is not its length.
    pub fn new(aead: Aead, c2s: &[u8], s2c: &[u8]) -> Option<Self> {
        let n = aead.key_len();
        if c2s.len() != n || s2c.len() != n {
            return None;
        }
        let mut k = SessionKeys {
            aead,
            c2s: [0; MAX_KEY_LEN],
            s2c: [0; MAX_KEY_LEN],
        };
        k.c2s[..n].copy_from_slice(c2s);
        k.s2c[..n].copy_from_slice(s2c);
        Some(k)
    }

    /// Their algorithm.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// The client-to-server key.
    pub fn c2s(&self) -> &[u8] {
        &self.c2s[..self.aead.key_len()]
    }

    /// The server-to-client key.
    pub fn s2c(&self) -> &[u8] {
        &self.s2c[..self.aead.key_len()]
    }

    /// The cipher of the client-to-server (`s2c` false) or server-to-client key.
    fn cipher(&self, s2c: bool) -> Cipher {
        Cipher::from_key(self.aead, if s2c { &self.s2c } else { &self.c2s })
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys {{ {:?} }}", self.aead)
    }
}

/// The server's cookie keys: the current one seals, it and the previous ones open (so
/// cookies handed out before a rotation stay good for a while). A cookie is the key's
/// number, a nonce, and the sealed session keys, whose length tells their algorithm
/// (as in chrony's cookies).
#[derive(Clone, Debug)]
pub struct CookieKeys {
    keys: Vec<ServerKey>,
}

/// How many keys open cookies (the current and the ones before it).
const KEPT_KEYS: usize = 3;

impl CookieKeys {
    /// Keys with `current` the one that seals.
    pub fn new(current: ServerKey) -> Self {
        CookieKeys {
            keys: vec![current],
        }
    }

    /// No keys at all: opens nothing (to tell NTS requests from others without NTS).
    pub fn none() -> Self {
        CookieKeys { keys: Vec::new() }
    }

    /// Makes `next` the sealing key; the oldest beyond [`KEPT_KEYS`] is forgotten.
    pub fn rotate(&mut self, next: ServerKey) {
        self.keys.insert(0, next);
        self.keys.truncate(KEPT_KEYS);
    }

    /// Every key, newest first (to save them).
    pub fn keys(&self) -> &[ServerKey] {
        &self.keys
    }

    /// Keys from a saved list, newest first; `None` if it is empty.
    pub fn from_keys(keys: Vec<ServerKey>) -> Option<Self> {
        (!keys.is_empty()).then(|| CookieKeys {
            keys: keys.into_iter().take(KEPT_KEYS).collect(),
        })
    }

    /// A cookie holding `session`: key id, nonce (the first bytes of `nonce` the key's
    /// algorithm takes), and both keys sealed under the id and nonce.
    pub fn seal(&self, session: &SessionKeys, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let Some(k) = self.keys.first() else {
            return Vec::new();
        };
        let id = k.id.to_be_bytes();
        let nonce = &nonce[..k.aead().nonce_len()];
        let n = session.aead.key_len();
        let mut plain = [0u8; 2 * MAX_KEY_LEN];
        plain[..n].copy_from_slice(session.c2s());
        plain[n..2 * n].copy_from_slice(session.s2c());
        let mut out = Vec::with_capacity(4 + nonce.len() + TAG_LEN + 2 * n);
        out.extend_from_slice(&id);
        out.extend_from_slice(nonce);
        if !k.cipher.seal_into(nonce, &id, &plain[..2 * n], &mut out) {
            return Vec::new();
        }
        out
    }

    /// The session keys in a cookie this server sealed (under a key it still has).
    pub fn open(&self, cookie: &[u8]) -> Option<SessionKeys> {
        let id = u32::from_be_bytes(cookie.get(..4)?.try_into().ok()?);
        let k = self.keys.iter().find(|k| k.id == id)?;
        let nonce_end = 4 + k.aead().nonce_len();
        let nonce = cookie.get(4..nonce_end)?;
        let sealed = cookie.get(nonce_end..)?;
        let mut buf = [0u8; 2 * MAX_KEY_LEN];
        let plain = buf.get_mut(..sealed.len().checked_sub(TAG_LEN)?)?;
        if !k.cipher.open_into(nonce, &cookie[..4], sealed, plain) {
            return None;
        }
        let n = plain.len() / 2;
        let aead = Aead::from_key_len(n).filter(|_| plain.len() == 2 * n)?;
        SessionKeys::new(aead, &plain[..n], &plain[n..])
    }
}

/// One extension field: its type, where it starts, and its body.
struct Field<'a> {
    kind: u16,
    start: usize,
    body: &'a [u8],
}

/// The extension fields after the 48-byte header, all well-formed: read in place, as
/// often as needed (walking a few fields costs less than collecting them).
#[derive(Clone, Copy)]
struct Fields<'a> {
    packet: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Each field in order.
    fn iter(self) -> impl Iterator<Item = Field<'a>> {
        let mut at = ntp_common::wire::NTP_HEADER_LEN;
        std::iter::from_fn(move || {
            let (field, len) = field_at(self.packet, at)?;
            at += len;
            Some(field)
        })
    }

    /// The last field.
    fn last(self) -> Option<Field<'a>> {
        self.iter().last()
    }
}

/// The field at `at` and its length, if one is there and well-formed (as chrony's
/// `NEF_ParseField`: at least 16 bytes, whole words, inside the packet).
fn field_at(packet: &[u8], at: usize) -> Option<(Field<'_>, usize)> {
    let head = packet.get(at..at + 4)?;
    let kind = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if len < MIN_EF_LEN || !len.is_multiple_of(4) {
        return None;
    }
    let body = packet.get(at + 4..at + len)?;
    Some((
        Field {
            kind,
            start: at,
            body,
        },
        len,
    ))
}

/// The extension fields of `packet`, or `None` if any is malformed.
fn fields(packet: &[u8]) -> Option<Fields<'_>> {
    let mut at = ntp_common::wire::NTP_HEADER_LEN;
    while at < packet.len() {
        at += field_at(packet, at)?.1;
    }
    Some(Fields { packet })
}

/// A verified NTS request: what its reply needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtsRequest {
    /// The unique identifier to echo.
    pub uid: Vec<u8>,
    /// The keys from its cookie.
    pub keys: SessionKeys,
    /// Cookies to hand back: one for the cookie used, one per placeholder.
    pub cookies: usize,
}

/// What a datagram with extension fields is, as NTS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NtsCheck {
    /// Not an NTS request (no NTS fields).
    NotNts,
    /// An NTS request whose cookie opened and whose authenticator verified.
    Valid(NtsRequest),
    /// An NTS request this server cannot use (a cookie it cannot open, an authenticator
    /// that does not verify): answered with an NTS NAK echoing `uid`.
    Nak {
        /// The unique identifier to echo.
        uid: Vec<u8>,
    },
    /// Malformed: no reply.
    Invalid,
}

/// Checks an NTS request (RFC 8915 section 5.7): one unique identifier, one cookie, any
/// placeholders of the cookie's length, and the authenticator last, over everything
/// before it, under the cookie's client-to-server key.
pub fn check_request(packet: &[u8], keys: &CookieKeys) -> NtsCheck {
    let Some(fields) = fields(packet) else {
        return NtsCheck::Invalid;
    };
    let nts = |k: u16| {
        matches!(
            k,
            EF_UNIQUE_ID | EF_COOKIE | EF_COOKIE_PLACEHOLDER | EF_AUTHENTICATOR
        )
    };
    if !fields.iter().any(|f| nts(f.kind)) {
        return NtsCheck::NotNts;
    }
    // Exactly one of each.
    let one = |kind: u16| {
        let mut of_kind = fields.iter().filter(|f| f.kind == kind);
        of_kind.next().filter(|_| of_kind.next().is_none())
    };
    let (Some(auth), Some(uid), Some(cookie)) = (fields.last(), one(EF_UNIQUE_ID), one(EF_COOKIE))
    else {
        return NtsCheck::Invalid;
    };
    if auth.kind != EF_AUTHENTICATOR || uid.body.len() < MIN_UID_LEN {
        return NtsCheck::Invalid;
    }
    let placeholders = fields
        .iter()
        .filter(|f| f.kind == EF_COOKIE_PLACEHOLDER)
        .count();
    if fields
        .iter()
        .filter(|f| f.kind == EF_COOKIE_PLACEHOLDER)
        .any(|f| f.body.len() != cookie.body.len())
    {
        return NtsCheck::Invalid;
    }
    let uid = uid.body.to_vec();
    let Some(session) = keys.open(cookie.body) else {
        return NtsCheck::Nak { uid };
    };
    if open_authenticator(&packet[..auth.start], auth.body, &session.cipher(false)).is_none() {
        return NtsCheck::Nak { uid };
    }
    NtsCheck::Valid(NtsRequest {
        uid,
        keys: session,
        cookies: (1 + placeholders).min(MAX_COOKIES),
    })
}

/// Decrypts an authenticator body over `ad` under `cipher`: its plaintext (the
/// encrypted extension fields; requests have none, and an empty plaintext allocates
/// nothing), or `None`.
fn open_authenticator(ad: &[u8], body: &[u8], cipher: &Cipher) -> Option<Vec<u8>> {
    let nonce_len = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let ct_len = usize::from(u16::from_be_bytes(body.get(2..4)?.try_into().ok()?));
    let padded = |n: usize| n.next_multiple_of(4);
    // The nonce padded to at least the algorithm's own nonce length (RFC 8915 5.6's
    // N_REQ, chrony's "missing padding" check): a reply, whose nonce is that long, is
    // then never larger than the request.
    let aead = cipher.aead();
    if !aead.takes_nonce(nonce_len)
        || ct_len < TAG_LEN
        || 4 + padded(nonce_len).max(aead.nonce_len()) + padded(ct_len) > body.len()
    {
        return None;
    }
    let nonce = &body[4..4 + nonce_len];
    let ct_at = 4 + padded(nonce_len);
    cipher.open(nonce, ad, &body[ct_at..ct_at + ct_len])
}

/// Appends the authenticator field over everything in `out` (the associated data):
/// `nonce` (cut to its algorithm's length) and, sealed under `cipher`, the plaintext
/// `plain` writes, both padded to whole words. Sealed in place, with no copies.
fn push_authenticator(
    out: &mut Vec<u8>,
    cipher: &Cipher,
    nonce: &[u8],
    plain: impl FnOnce(&mut Vec<u8>),
) {
    let nonce = &nonce[..cipher.aead().nonce_len().min(nonce.len())];
    let start = out.len();
    out.extend_from_slice(&EF_AUTHENTICATOR.to_be_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&(nonce.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(nonce);
    out.resize(start + 8 + nonce.len().next_multiple_of(4), 0);
    let ct_at = out.len();
    plain(out);
    out.resize(out.len() + TAG_LEN, 0);
    let ct_len = out.len() - ct_at;
    let (ad, rest) = out.split_at_mut(start);
    if !cipher.seal_in_place(nonce, ad, &mut rest[ct_at - start..]) {
        // Only past the algorithms' limits (gigabytes): no authenticator at all.
        out.truncate(start);
        return;
    }
    out.resize(field_len(out.len() - start - 4) + start, 0);
    let len = out.len() - start;
    out[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
    out[start + 6..start + 8].copy_from_slice(&(ct_len as u16).to_be_bytes());
}

/// Bytes of an extension field whose body is `body` bytes (padded to whole words).
fn field_len(body: usize) -> usize {
    (4 + body).next_multiple_of(4).max(MIN_EF_LEN)
}

fn push_field(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    let len = field_len(body.len());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + len - 4 - body.len(), 0);
}

/// The NTS reply to `req`: `header` (the reply's 48 bytes, transmit timestamp set),
/// the unique identifier echoed, and an authenticator under the server-to-client key,
/// with `nonce`, over both, whose encrypted fields are `cookies` (new ones for the
/// client).
pub fn seal_response(
    header: &[u8],
    req: &NtsRequest,
    nonce: &[u8; NONCE_LEN],
    cookies: &[Vec<u8>],
) -> Vec<u8> {
    // Sized once: growing it was a third of the reply's copying.
    let plain_len: usize = cookies.iter().map(|c| field_len(c.len())).sum();
    let auth_len = field_len(4 + NONCE_LEN + TAG_LEN + plain_len);
    let mut out = Vec::with_capacity(header.len() + field_len(req.uid.len()) + auth_len);
    out.extend_from_slice(header);
    push_field(&mut out, EF_UNIQUE_ID, &req.uid);
    push_authenticator(&mut out, &req.keys.cipher(true), nonce, |plain| {
        for c in cookies {
            push_field(plain, EF_COOKIE, c);
        }
    });
    out
}

/// An NTS NAK: `header` (a Kiss-o'-Death NTSN) with the unique identifier echoed.
pub fn nak_response(header: &[u8], uid: &[u8]) -> Vec<u8> {
    let mut out = header.to_vec();
    push_field(&mut out, EF_UNIQUE_ID, uid);
    out
}

/// The NTS-KE request a client sends: `NTPv4` with the algorithms `aeads` in order of
/// preference, and chrony's record asking for compliant AES-128-GCM-SIV keys when that
/// is among them.
pub fn ke_request(aeads: &[Aead]) -> Vec<u8> {
    let mut out = Vec::new();
    record(
        &mut out,
        CRITICAL | REC_NEXT_PROTOCOL,
        &PROTOCOL_NTPV4.to_be_bytes(),
    );
    let ids: Vec<u8> = aeads.iter().flat_map(|a| a.id().to_be_bytes()).collect();
    record(&mut out, CRITICAL | REC_AEAD, &ids);
    if aeads.contains(&Aead::Aes128GcmSiv) {
        record(&mut out, REC_COMPLIANT_128GCM, &[]);
    }
    record(&mut out, CRITICAL | REC_END, &[]);
    out
}

/// What an NTS-KE server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeResponse {
    /// The AEAD algorithm the server chose.
    pub aead: Aead,
    /// Whether the server confirmed compliant AES-128-GCM-SIV keys (chrony's record).
    pub compliant_128gcm: bool,
    /// Cookies for the NTP exchanges.
    pub cookies: Vec<Vec<u8>>,
    /// Another NTP server to use, if the server named one.
    pub server: Option<String>,
    /// Another NTP port to use, if the server named one.
    pub port: Option<u16>,
}

/// Reads an NTS-KE server's message to a request that `offered` algorithms: `Ok(None)`
/// while incomplete, the response, or why it cannot be used (an error record, another
/// protocol, an algorithm not offered, no cookies).
pub fn parse_ke_response(msg: &[u8], offered: &[Aead]) -> Result<Option<KeResponse>, String> {
    let mut r = KeResponse {
        aead: Aead::AesSivCmac256,
        compliant_128gcm: false,
        cookies: Vec::new(),
        server: None,
        port: None,
    };
    let (mut protocol_ok, mut aead_ok) = (false, false);
    let mut at = 0;
    loop {
        let Some((kind, body, next)) = record_at(msg, at) else {
            return Ok(None);
        };
        at = next;
        match kind & !CRITICAL {
            REC_END => break,
            REC_NEXT_PROTOCOL => protocol_ok = body == PROTOCOL_NTPV4.to_be_bytes(),
            REC_AEAD => {
                // One algorithm, one we offered (as chrony's client checks).
                let [a, b] = body else {
                    return Err("the server agreed to no AEAD algorithm offered".into());
                };
                let chosen = Aead::from_id(u16::from_be_bytes([*a, *b]));
                r.aead = chosen.filter(|c| offered.contains(c)).ok_or_else(|| {
                    format!(
                        "the server chose AEAD algorithm {}",
                        u16::from_be_bytes([*a, *b])
                    )
                })?;
                aead_ok = true;
            }
            REC_COMPLIANT_128GCM => {
                if !body.is_empty() {
                    return Err("a malformed compliant-export record".into());
                }
                r.compliant_128gcm = true;
            }
            REC_ERROR => {
                let code = body
                    .get(..2)
                    .map_or(u16::MAX, |b| u16::from_be_bytes([b[0], b[1]]));
                return Err(format!("the server answered error {code}"));
            }
            // chrony's limits: 1 to 256 bytes, whole words.
            REC_COOKIE
                if !body.is_empty()
                    && body.len() <= MAX_COOKIE_LEN
                    && body.len().is_multiple_of(4)
                    && r.cookies.len() < MAX_COOKIES =>
            {
                r.cookies.push(body.to_vec());
            }
            REC_SERVER => {
                r.server = Some(
                    std::str::from_utf8(body)
                        .map_err(|_| "a server name that is not UTF-8".to_string())?
                        .to_string(),
                );
            }
            REC_PORT => {
                let [a, b] = body else {
                    return Err("a malformed port record".into());
                };
                r.port = Some(u16::from_be_bytes([*a, *b]));
            }
            // More cookies than can be used, warnings: nothing to act on.
            REC_COOKIE | REC_WARNING => {}
            _ if kind & CRITICAL != 0 => {
                return Err(format!("an unknown critical record {}", kind & !CRITICAL));
            }
            _ => {}
        }
    }
    if !protocol_ok || !aead_ok {
        return Err("the server did not agree to NTPv4 with an AEAD algorithm offered".into());
    }
    if r.cookies.is_empty() {
        return Err("the server gave no cookies".into());
    }
    Ok(Some(r))
}

/// A client's NTS state with one server: the session keys, the cookies left, and a
/// PRF (AES-CMAC under a random key, over a counter) for unique identifiers and nonces,
/// so the sans-IO core needs no random source of its own.
#[derive(Clone)]
pub struct ClientSession {
    keys: SessionKeys,
    /// AES-128-GCM-SIV keys exported the compliant way, kept while the server may be
    /// one that made them so without saying (chrony's fallback): used after a NAK
    /// before any reply verified. Boxed: rarely there, and a source's state stays small.
    alternative: Option<Box<SessionKeys>>,
    /// Whether the last request got an NTS NAK naming it.
    nak: bool,
    /// Whether the last request got a reply that verified.
    answered: bool,
    cookies: std::collections::VecDeque<Vec<u8>>,
    prf: [u8; 16],
    counter: u64,
    /// The unique identifier of the request awaiting its reply.
    pending: Option<[u8; 32]>,
    /// Its context number (chronyc's `KeyID`) and the system time of its NTS-KE, ns,
    /// as saved with it and restored (chronyd keeps both); the source's own count and
    /// time are the ones in use.
    context: Option<(u32, u64)>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientSession {{ {} cookies }}", self.cookies.len())
    }
}

/// The first line of a saved client session.
const DUMP_VERSION: &str = "ntpx-nts-session 1";
/// The line of a saved client session with its context number and NTS-KE time.
const CONTEXT: &str = "context ";

/// Why a reply to an NTS request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// An NTS NAK naming our request. Unauthenticated, so it settles nothing yet (RFC
    /// 8915 5.7, as chrony): a reply that verifies may still follow; if none does, the
    /// next request switches to the alternative keys or [`ClientSession::usable`] says a
    /// new NTS-KE is needed.
    Nak,
    /// Not an authentic reply to our request.
    Invalid,
}

impl ClientSession {
    /// A session from an NTS-KE: its keys and cookies, and `prf_key` (random bytes).
    pub fn new(keys: SessionKeys, cookies: Vec<Vec<u8>>, prf_key: [u8; 16]) -> Self {
        ClientSession {
            keys,
            alternative: None,
            nak: false,
            answered: false,
            cookies: cookies.into(),
            prf: prf_key,
            counter: 0,
            pending: None,
            context: None,
        }
    }

    /// The context number and system time of its NTS-KE (ns) it was saved with, if any.
    pub fn context(&self) -> Option<(u32, u64)> {
        self.context
    }

    /// Numbers it `number` among its source's sessions, made by an NTS-KE at `ke_ns`
    /// (saved by [`Self::dump`]).
    pub fn set_context(&mut self, number: u32, ke_ns: u64) {
        self.context = Some((number, ke_ns));
    }

    /// The session with `keys` to fall back on after a NAK unanswered by a valid reply
    /// before any reply verified (chrony's switch to compliant AES-128-GCM-SIV keys).
    #[must_use]
    pub fn with_alternative(mut self, keys: SessionKeys) -> Self {
        self.alternative = Some(Box::new(keys));
        self
    }

    /// The algorithm in use.
    pub fn aead(&self) -> Aead {
        self.keys.aead
    }

    /// Whether requests can go on: cookies left, and no NAK unanswered by a valid reply
    /// that the alternative keys cannot meet (else a new NTS-KE is needed).
    pub fn usable(&self) -> bool {
        !self.cookies.is_empty() && (!self.nak() || self.alternative.is_some())
    }

    /// Whether the last request got a NAK and no valid reply (chronyc's `NAK` column).
    pub fn nak(&self) -> bool {
        self.nak && !self.answered
    }

    /// Cookies left.
    pub fn cookies(&self) -> usize {
        self.cookies.len()
    }

    /// The session as kept across a restart (`ntsdumpdir`): its keys and cookies, as
    /// lines of hex under a version line, and its context number and NTS-KE time.
    pub fn dump(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut out = format!(
            "{DUMP_VERSION}\n{}\n{}\n",
            hex(self.keys.c2s()),
            hex(self.keys.s2c())
        );
        if let Some((number, ke_ns)) = self.context {
            out.push_str(&format!("{CONTEXT}{number} {ke_ns}\n"));
        }
        for c in &self.cookies {
            out.push_str(&hex(c));
            out.push('\n');
        }
        out
    }

    /// A session saved by [`Self::dump`], with `prf_key` (fresh random bytes); `None` if
    /// the text is not one, or holds no cookie.
    pub fn restore(text: &str, prf_key: [u8; 16]) -> Option<Self> {
        let unhex = |s: &str| -> Option<Vec<u8>> {
            if !s.len().is_multiple_of(2) {
                return None;
            }
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect()
        };
        let mut lines = text.lines();
        if lines.next()? != DUMP_VERSION {
            return None;
        }
        let c2s = unhex(lines.next()?)?;
        let s2c = unhex(lines.next()?)?;
        let keys = SessionKeys::new(Aead::from_key_len(c2s.len())?, &c2s, &s2c)?;
        let mut context = None;
        let cookies: Vec<Vec<u8>> = lines
            .filter(|l| match l.strip_prefix(CONTEXT) {
                Some(c) => {
                    // Sessions saved before the context was kept have no such line.
                    let mut n = c.split_whitespace().map(str::parse::<u64>);
                    if let (Some(Ok(number)), Some(Ok(ke_ns))) = (n.next(), n.next()) {
                        context = u32::try_from(number).ok().map(|number| (number, ke_ns));
                    }
                    false
                }
                None => true,
            })
            .map(unhex)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .filter(|c| !c.is_empty() && c.len() <= MAX_COOKIE_LEN)
            .take(MAX_COOKIES)
            .collect();
        if cookies.is_empty() {
            return None;
        }
        let mut session = ClientSession::new(keys, cookies, prf_key);
        session.context = context;
        Some(session)
    }

    /// Length of the cookies held (0 with none).
    pub fn cookie_len(&self) -> usize {
        self.cookies.front().map_or(0, Vec::len)
    }

    fn random16(&mut self) -> [u8; 16] {
        use cmac::Mac;
        self.counter += 1;
        let mut m = <cmac::Cmac<aes::Aes128> as cmac::digest::KeyInit>::new((&self.prf).into());
        m.update(&self.counter.to_be_bytes());
        m.finalize().into_bytes().into()
    }

    /// The NTS request for `header` (a client request's 48 bytes): a fresh unique
    /// identifier, one cookie, placeholders to be sent back up to eight, and the
    /// authenticator; `None` with no cookie left (a new NTS-KE is needed).
    pub fn request(&mut self, header: &[u8]) -> Option<Vec<u8>> {
        if !self.usable() {
            return None;
        }
        if self.nak() {
            // Only a NAK since the NTS-KE: our keys, not the cookies, are wrong.
            self.keys = *self.alternative.take()?;
        }
        self.nak = false;
        self.answered = false;
        let cookie = self.cookies.pop_front()?;
        let mut uid = [0u8; 32];
        uid[..16].copy_from_slice(&self.random16());
        uid[16..].copy_from_slice(&self.random16());
        let nonce = self.random16();
        let mut p = header.to_vec();
        push_field(&mut p, EF_UNIQUE_ID, &uid);
        push_field(&mut p, EF_COOKIE, &cookie);
        let wanted = MAX_COOKIES - 1 - self.cookies.len().min(MAX_COOKIES - 1);
        for _ in 0..wanted {
            push_field(&mut p, EF_COOKIE_PLACEHOLDER, &vec![0u8; cookie.len()]);
        }
        push_authenticator(&mut p, &self.keys.cipher(false), &nonce, |_| {});
        self.pending = Some(uid);
        Some(p)
    }

    /// Checks a reply to the last request: the unique identifier ours, the
    /// authenticator (last) verified under the server-to-client key; its cookies are
    /// kept. A Kiss-o'-Death NTSN naming our identifier is a NAK.
    pub fn reply(&mut self, packet: &[u8]) -> Result<(), ReplyError> {
        let uid = self.pending.ok_or(ReplyError::Invalid)?;
        let outer = fields(packet).ok_or(ReplyError::Invalid)?;
        let ours = outer
            .iter()
            .any(|f| f.kind == EF_UNIQUE_ID && f.body.get(..32) == Some(&uid[..]));
        if !ours {
            return Err(ReplyError::Invalid);
        }
        let nak = packet.get(1) == Some(&0) && packet.get(12..16) == Some(&b"NTSN"[..]);
        let auth = outer.last().filter(|f| f.kind == EF_AUTHENTICATOR);
        let Some(auth) = auth else {
            if !nak {
                return Err(ReplyError::Invalid);
            }
            // The request stays open: a valid reply may still come.
            self.nak = true;
            return Err(ReplyError::Nak);
        };
        let plain = open_authenticator(&packet[..auth.start], auth.body, &self.keys.cipher(true))
            .ok_or(ReplyError::Invalid)?;
        self.pending = None;
        self.answered = true;
        // The keys work: nothing to fall back on any more (chrony drops it likewise).
        self.alternative = None;
        let mut inner = vec![0u8; ntp_common::wire::NTP_HEADER_LEN];
        inner.extend_from_slice(&plain);
        // None if any is malformed.
        for f in fields(&inner).iter().flat_map(|f| f.iter()) {
            if f.kind == EF_COOKIE && self.cookies.len() < MAX_COOKIES {
                self.cookies.push_back(f.body.to_vec());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(aead: Aead) -> CookieKeys {
        CookieKeys::new(ServerKey::new(7, &vec![0x42; aead.key_len()]).unwrap())
    }

    fn session(aead: Aead) -> SessionKeys {
        let n = aead.key_len();
        SessionKeys::new(aead, &vec![1; n], &vec![2; n]).unwrap()
    }

    /// A client's request as chrony builds it: header, unique id, cookie, `n`
    /// placeholders, authenticator with a nonce of `nonce_len` bytes (padded to 4).
    fn request_with_nonce(
        cookie: &[u8],
        placeholders: usize,
        c2s: &SessionKeys,
        nonce_len: usize,
    ) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x23;
        push_field(&mut p, EF_UNIQUE_ID, &[9u8; 32]);
        push_field(&mut p, EF_COOKIE, cookie);
        for _ in 0..placeholders {
            push_field(&mut p, EF_COOKIE_PLACEHOLDER, &vec![0u8; cookie.len()]);
        }
        let nonce = vec![5u8; nonce_len];
        // A real ciphertext; for a nonce the algorithm does not take, one made with a
        // nonce it does (so only the nonce's length can make the server refuse it).
        let aead = c2s.aead();
        let sealing = if aead.takes_nonce(nonce_len) {
            nonce.clone()
        } else {
            vec![5u8; aead.nonce_len()]
        };
        let mut ct = Vec::new();
        assert!(
            Cipher::new(aead, c2s.c2s())
                .unwrap()
                .seal_into(&sealing, &p, b"", &mut ct)
        );
        assert_eq!(ct.len(), TAG_LEN);
        let mut body = vec![0, nonce_len as u8, 0, ct.len() as u8];
        body.extend_from_slice(&nonce);
        body.resize(4 + nonce_len.next_multiple_of(4), 0);
        body.extend_from_slice(&ct);
        push_field(&mut p, EF_AUTHENTICATOR, &body);
        p
    }

    fn request(cookie: &[u8], placeholders: usize, c2s: &SessionKeys) -> Vec<u8> {
        request_with_nonce(cookie, placeholders, c2s, c2s.aead().nonce_len())
    }

    #[test]
    fn ke_requests_are_read_and_answered_as_rfc_8915_says() {
        // Next protocol `NTPv4` (critical), AEAD 15, End (critical).
        let msg = [0x80, 1, 0, 2, 0, 0, 0, 4, 0, 2, 0, 15, 0x80, 0, 0, 0];
        assert_eq!(parse_ke_request(&msg[..10]), Ok(None), "incomplete");
        let req = parse_ke_request(&msg).unwrap().unwrap();
        assert_eq!(
            (
                req.protocols.clone(),
                req.aeads.clone(),
                req.compliant_128gcm
            ),
            (vec![0], vec![15], false)
        );
        assert_eq!(choose_aead(&req, &Aead::ALL), Some(Aead::AesSivCmac256));
        let resp = ke_response(
            &req,
            Aead::AesSivCmac256,
            &[vec![0xaa; 100], vec![0xbb; 100]],
            None,
            None,
        );
        assert_eq!(resp[..6], [0x80, 1, 0, 2, 0, 0]);
        assert_eq!(resp[6..12], [0x80, 4, 0, 2, 0, 15]);
        assert_eq!(resp[12..16], [0, 5, 0, 100]);
        assert_eq!(resp[resp.len() - 4..], [0x80, 0, 0, 0]);
        // The client's order decides among the enabled ones; none in common, or no
        // NTPv4: refused.
        let both = |aeads: Vec<u16>| KeRequest {
            protocols: vec![0],
            aeads,
            compliant_128gcm: false,
        };
        assert_eq!(
            choose_aead(&both(vec![30, 15]), &Aead::ALL),
            Some(Aead::Aes128GcmSiv)
        );
        assert_eq!(
            choose_aead(&both(vec![15, 30]), &Aead::ALL),
            Some(Aead::AesSivCmac256)
        );
        assert_eq!(
            choose_aead(&both(vec![17, 30, 15]), &[Aead::AesSivCmac256]),
            Some(Aead::AesSivCmac256)
        );
        assert_eq!(choose_aead(&both(vec![30]), &[Aead::AesSivCmac256]), None);
        // Refused as chrony refuses: NTPv4 and an empty AEAD record, no cookies.
        assert_eq!(
            ke_refusal(&both(vec![30])),
            [0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 0, 0x80, 0, 0, 0]
        );
        assert_eq!(choose_aead(&both(vec![17]), &Aead::ALL), None);
        let ntpv5 = KeRequest {
            protocols: vec![0x8001],
            ..both(vec![15])
        };
        assert_eq!(choose_aead(&ntpv5, &Aead::ALL), None);
        assert_eq!(ke_refusal(&ntpv5), [0x80, 1, 0, 0, 0x80, 0, 0, 0]);
        assert!(parse_ke_response(&ke_refusal(&both(vec![30])), &Aead::ALL).is_err());
        // An unknown critical record, a second protocol record, no protocol record, a
        // compliant-export record with a body.
        assert_eq!(
            parse_ke_request(&[0x80, 99, 0, 0, 0x80, 0, 0, 0]),
            Err(ERROR_UNRECOGNIZED_CRITICAL)
        );
        assert_eq!(
            parse_ke_request(&[0x80, 1, 0, 2, 0, 0, 0x80, 1, 0, 2, 0, 0, 0x80, 0, 0, 0]),
            Err(ERROR_BAD_REQUEST)
        );
        assert_eq!(parse_ke_request(&[0x80, 0, 0, 0]), Err(ERROR_BAD_REQUEST));
        // Malformed as chrony's server reads it, each refused with error 1 (not answered
        // by what it offers): a Next Protocol record not critical, or empty; NTPv4
        // without an AEAD record, or with an empty one; a warning from a client; an End
        // of Message not critical.
        for msg in [
            &[0, 1, 0, 2, 0, 0, 0, 4, 0, 2, 0, 15, 0x80, 0, 0, 0][..],
            &[0x80, 1, 0, 0, 0, 4, 0, 2, 0, 15, 0x80, 0, 0, 0],
            &[0x80, 1, 0, 2, 0, 0, 0x80, 0, 0, 0],
            &[0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 0, 0x80, 0, 0, 0],
            &[
                0x80, 1, 0, 2, 0, 0, 0, 4, 0, 2, 0, 15, 0, 3, 0, 2, 0, 0, 0x80, 0, 0, 0,
            ],
            &[0x80, 1, 0, 2, 0, 0, 0, 4, 0, 2, 0, 15, 0, 0, 0, 0],
        ] {
            assert_eq!(parse_ke_request(msg), Err(ERROR_BAD_REQUEST), "{msg:?}");
        }
        // Well-formed without NTPv4 (no AEAD record needed): answered with an empty
        // Next Protocol record.
        let v5 = parse_ke_request(&[0x80, 1, 0, 2, 0x80, 1, 0x80, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(choose_aead(&v5, &Aead::ALL), None);
        assert_eq!(ke_refusal(&v5), [0x80, 1, 0, 0, 0x80, 0, 0, 0]);
        assert_eq!(
            parse_ke_request(&[0x80, 1, 0, 2, 0, 0, 4, 0, 0, 1, 0, 0x80, 0, 0, 0]),
            Err(ERROR_BAD_REQUEST)
        );
        assert_eq!(ke_error(1), [0x80, 2, 0, 2, 0, 1, 0x80, 0, 0, 0]);
    }

    #[test]
    fn gcm_siv_keys_are_exported_compliantly_only_when_both_sides_say_so() {
        // chrony 4.7's request: AEADs 30 and 15, and the compliant-export record.
        let msg = ke_request(&Aead::ALL);
        let req = parse_ke_request(&msg).unwrap().unwrap();
        assert_eq!(
            (req.aeads.clone(), req.compliant_128gcm),
            (vec![30, 15], true)
        );
        let aead = choose_aead(&req, &Aead::ALL).unwrap();
        assert_eq!(aead, Aead::Aes128GcmSiv);
        assert!(request_compliant(&req, aead));
        let resp = ke_response(&req, aead, &[vec![1; 64]], None, None);
        let r = parse_ke_response(&resp, &Aead::ALL).unwrap().unwrap();
        assert_eq!((r.aead, r.compliant_128gcm), (Aead::Aes128GcmSiv, true));
        assert_eq!(exporter_context(aead, true, false), [0, 0, 0, 30, 0]);
        assert_eq!(exporter_context(aead, true, true), [0, 0, 0, 30, 1]);
        // chrony 4.4-4.6's request (no record): the server exports under 15 and does
        // not confirm.
        let old = KeRequest {
            compliant_128gcm: false,
            ..req.clone()
        };
        assert!(!request_compliant(&old, aead));
        let resp = ke_response(&old, aead, &[vec![1; 64]], None, None);
        let r = parse_ke_response(&resp, &Aead::ALL).unwrap().unwrap();
        assert_eq!((r.aead, r.compliant_128gcm), (Aead::Aes128GcmSiv, false));
        assert_eq!(exporter_context(aead, false, true), [0, 0, 0, 15, 1]);
        // AES-SIV-CMAC-256 is exported under 15 either way, and never confirmed.
        assert!(!request_compliant(&req, Aead::AesSivCmac256));
        assert_eq!(
            exporter_context(Aead::AesSivCmac256, true, false),
            [0, 0, 0, 15, 0]
        );
        let resp = ke_response(&req, Aead::AesSivCmac256, &[vec![1; 64]], None, None);
        assert!(
            !parse_ke_response(&resp, &Aead::ALL)
                .unwrap()
                .unwrap()
                .compliant_128gcm
        );
        // Offering AES-SIV-CMAC-256 alone asks for no compliant export.
        let siv = parse_ke_request(&ke_request(&[Aead::AesSivCmac256]))
            .unwrap()
            .unwrap();
        assert_eq!((siv.aeads, siv.compliant_128gcm), (vec![15], false));
    }

    #[test]
    fn cookies_open_under_any_kept_key_and_nothing_else() {
        // (cookie key, session) -> cookie length: AES-128-GCM-SIV keys seal with a
        // 12-byte nonce, AES-SIV-CMAC-256 keys (saved by earlier versions) with 16.
        for (key, sess, len) in [
            (Aead::Aes128GcmSiv, Aead::Aes128GcmSiv, 4 + 12 + 32 + 16),
            (Aead::Aes128GcmSiv, Aead::AesSivCmac256, 4 + 12 + 64 + 16),
            (Aead::AesSivCmac256, Aead::AesSivCmac256, 4 + 16 + 64 + 16),
            (Aead::AesSivCmac256, Aead::Aes128GcmSiv, 4 + 16 + 32 + 16),
        ] {
            let mut k = keys(key);
            let c = k.seal(&session(sess), &[3; NONCE_LEN]);
            assert_eq!(c.len(), len, "{key:?} {sess:?}");
            assert_eq!(k.open(&c), Some(session(sess)));
            k.rotate(ServerKey::new(8, &[0x43; 16]).unwrap());
            assert_eq!(k.open(&c), Some(session(sess)), "the previous key opens");
            for i in 0..c.len() {
                let mut bad = c.clone();
                bad[i] ^= 1;
                assert_eq!(k.open(&bad), None, "{key:?} {sess:?} byte {i}");
            }
            assert_eq!(k.open(&c[..c.len() - 1]), None);
            for id in 9..12 {
                k.rotate(ServerKey::new(id, &[id as u8; 16]).unwrap());
            }
            assert_eq!(k.open(&c), None, "rotated out");
        }
        assert!(ServerKey::new(1, &[0; 24]).is_none());
        assert_eq!(ServerKey::new(1, &[5; 16]).unwrap().bytes(), [5; 16]);
    }

    #[test]
    fn cookies_of_earlier_versions_still_open() {
        // Before AES-128-GCM-SIV: a 32-byte key sealing both 32-byte keys with
        // AES-SIV-CMAC-256 under the headers (key id, nonce).
        use aes_siv::{KeyInit, siv::Aes128Siv};
        let key = [0x42u8; 32];
        let id = 7u32.to_be_bytes();
        let nonce = [3u8; 16];
        let mut plain = vec![1u8; 32];
        plain.extend_from_slice(&[2; 32]);
        let mut cookie = id.to_vec();
        cookie.extend_from_slice(&nonce);
        cookie.extend(
            Aes128Siv::new((&key).into())
                .encrypt([&id[..], &nonce[..]], &plain)
                .unwrap(),
        );
        let k = CookieKeys::new(ServerKey::new(7, &key).unwrap());
        assert_eq!(k.open(&cookie), Some(session(Aead::AesSivCmac256)));
    }

    #[test]
    fn a_valid_request_gets_a_reply_the_client_can_open() {
        for aead in Aead::ALL {
            let k = keys(Aead::Aes128GcmSiv);
            let sess = session(aead);
            let cookie = k.seal(&sess, &[3; NONCE_LEN]);
            let req = request(&cookie, 2, &sess);
            let NtsCheck::Valid(r) = check_request(&req, &k) else {
                panic!("{aead:?}: {:?}", check_request(&req, &k));
            };
            assert_eq!((r.uid.clone(), r.cookies), (vec![9u8; 32], 3));
            let fresh: Vec<Vec<u8>> = (0..3).map(|i| k.seal(&sess, &[i; 16])).collect();
            let reply = seal_response(&[0x24; 48], &r, &[6; NONCE_LEN], &fresh);
            assert!(reply.len() <= req.len(), "no larger than the request");
            // The client's side: the unique identifier echoed, the authenticator (its
            // nonce the algorithm's length) opens under the server-to-client key and
            // holds the cookies.
            let f: Vec<_> = fields(&reply).unwrap().iter().collect();
            assert_eq!(f.len(), 2);
            assert_eq!((f[0].kind, f[0].body), (EF_UNIQUE_ID, &[9u8; 32][..]));
            assert_eq!(f[1].kind, EF_AUTHENTICATOR);
            assert_eq!(usize::from(f[1].body[1]), aead.nonce_len());
            let s2c = Cipher::new(aead, sess.s2c()).unwrap();
            let plain = open_authenticator(&reply[..f[1].start], f[1].body, &s2c).unwrap();
            let c2s = Cipher::new(aead, sess.c2s()).unwrap();
            assert!(open_authenticator(&reply[..f[1].start], f[1].body, &c2s).is_none());
            let mut inner = vec![0u8; 48];
            inner.extend_from_slice(&plain);
            let cookies: Vec<_> = fields(&inner).unwrap().iter().collect();
            assert_eq!(cookies.len(), 3);
            assert!(
                cookies
                    .iter()
                    .all(|c| c.kind == EF_COOKIE && k.open(c.body) == Some(sess.clone()))
            );
        }
    }

    #[test]
    fn bad_requests_get_a_nak_or_nothing() {
        for aead in Aead::ALL {
            let k = keys(Aead::Aes128GcmSiv);
            let sess = session(aead);
            let cookie = k.seal(&sess, &[3; NONCE_LEN]);
            // Signed with the wrong key, or a cookie of another server: NAK.
            let n = aead.key_len();
            let wrong = SessionKeys::new(aead, &vec![9; n], &vec![9; n]).unwrap();
            let bad = request(&cookie, 0, &wrong);
            assert!(matches!(check_request(&bad, &k), NtsCheck::Nak { .. }));
            let other = CookieKeys::new(ServerKey::new(7, &[0x99; 16]).unwrap());
            let req = request(&cookie, 0, &sess);
            assert!(matches!(check_request(&req, &other), NtsCheck::Nak { .. }));
            // A tampered header: the authenticator fails.
            let mut t = req.clone();
            t[40] ^= 1;
            assert!(matches!(check_request(&t, &k), NtsCheck::Nak { .. }));
            // Malformed fields, no authenticator last: nothing.
            assert_eq!(check_request(&req[..req.len() - 4], &k), NtsCheck::Invalid);
            let mut no_auth = vec![0u8; 48];
            push_field(&mut no_auth, EF_UNIQUE_ID, &[1; 32]);
            push_field(&mut no_auth, EF_COOKIE, &cookie);
            assert_eq!(check_request(&no_auth, &k), NtsCheck::Invalid);
            // Two unique identifiers or two cookies, each otherwise valid: nothing.
            for twice in [EF_UNIQUE_ID, EF_COOKIE] {
                let mut p = vec![0u8; 48];
                p[0] = 0x23;
                push_field(&mut p, EF_UNIQUE_ID, &[9u8; 32]);
                push_field(&mut p, EF_COOKIE, &cookie);
                let body = if twice == EF_COOKIE {
                    &cookie[..]
                } else {
                    &[8u8; 32][..]
                };
                push_field(&mut p, twice, body);
                let mut ct = Vec::new();
                let nonce = vec![5u8; aead.nonce_len()];
                assert!(
                    Cipher::new(aead, sess.c2s())
                        .unwrap()
                        .seal_into(&nonce, &p, b"", &mut ct)
                );
                let mut auth = vec![0, nonce.len() as u8, 0, ct.len() as u8];
                auth.extend_from_slice(&nonce);
                auth.extend_from_slice(&ct);
                push_field(&mut p, EF_AUTHENTICATOR, &auth);
                assert_eq!(check_request(&p, &k), NtsCheck::Invalid, "{twice:#x}");
            }
            // A short nonce, unpadded (its reply would be larger than the request), or
            // one AES-128-GCM-SIV does not take.
            let short = request_with_nonce(&cookie, 0, &sess, 4);
            assert!(matches!(check_request(&short, &k), NtsCheck::Nak { .. }));
            if aead == Aead::Aes128GcmSiv {
                let long = request_with_nonce(&cookie, 0, &sess, 16);
                assert!(matches!(check_request(&long, &k), NtsCheck::Nak { .. }));
            }
        }
        // Not NTS at all.
        let mut other_ef = vec![0u8; 48];
        push_field(&mut other_ef, 0x2005, &[0; 12]);
        assert_eq!(
            check_request(&other_ef, &keys(Aead::Aes128GcmSiv)),
            NtsCheck::NotNts
        );
        let nak = nak_response(&[0; 48], &[9; 32]);
        assert_eq!(nak.len(), 48 + 36);
    }

    #[test]
    fn a_client_session_talks_to_this_server() {
        for aead in Aead::ALL {
            let server = keys(Aead::Aes128GcmSiv);
            let session_keys = session(aead);
            let cookies: Vec<Vec<u8>> = (0..8)
                .map(|i| server.seal(&session_keys, &[i; NONCE_LEN]))
                .collect();
            let mut client = ClientSession::new(session_keys.clone(), cookies, [4; 16]);
            assert_eq!(client.aead(), aead);
            let header = [0x23u8; 48];
            let req = client.request(&header).unwrap();
            assert_eq!(client.cookies(), 7);
            let NtsCheck::Valid(r) = check_request(&req, &server) else {
                panic!("the server refused the client's request");
            };
            assert_eq!(r.cookies, 1, "seven left: no placeholder");
            let fresh = vec![server.seal(&session_keys, &[9; NONCE_LEN])];
            let reply = seal_response(&[0x24; 48], &r, &[6; NONCE_LEN], &fresh);
            // A tampered reply, or one to another request, is refused; ours is taken
            // once.
            let mut bad = reply.clone();
            bad[47] ^= 1;
            assert_eq!(client.reply(&bad), Err(ReplyError::Invalid));
            assert_eq!(client.reply(&reply), Ok(()));
            assert_eq!(client.cookies(), 8);
            assert_eq!(client.reply(&reply), Err(ReplyError::Invalid), "replayed");
            // Low on cookies: placeholders ask for more.
            for _ in 0..5 {
                client.request(&header).unwrap();
            }
            let req = client.request(&header).unwrap();
            let NtsCheck::Valid(r) = check_request(&req, &server) else {
                panic!();
            };
            assert_eq!((client.cookies(), r.cookies), (2, 6));
            // A NAK naming our request settles nothing (anyone who saw the request can
            // send one): the server's real reply is still taken, and the session goes on.
            let mut kiss = [0u8; 48];
            kiss[12..16].copy_from_slice(b"NTSN");
            let nak = nak_response(&kiss, &r.uid);
            assert_eq!(client.reply(&nak), Err(ReplyError::Nak));
            let reply = seal_response(&[0x24; 48], &r, &[6; NONCE_LEN], &[]);
            assert_eq!(client.reply(&reply), Ok(()));
            assert!(client.usable());
            // A NAK and no valid reply: a new NTS-KE before the next request.
            let req = client.request(&header).unwrap();
            let NtsCheck::Valid(r) = check_request(&req, &server) else {
                panic!();
            };
            assert_eq!(
                client.reply(&nak_response(&kiss, &r.uid)),
                Err(ReplyError::Nak)
            );
            assert!(!client.usable());
            assert!(client.request(&header).is_none());
            // No cookies left: no request.
            let mut empty = ClientSession::new(session(aead), vec![], [1; 16]);
            assert!(empty.request(&header).is_none());
            // Saved and restored (a restart): the same keys and cookies, still accepted.
            let mut restored = ClientSession::restore(&client.dump(), [8; 16]).unwrap();
            assert_eq!(
                (restored.cookies(), restored.aead()),
                (client.cookies(), aead)
            );
            let req = restored.request(&header).unwrap();
            assert!(matches!(check_request(&req, &server), NtsCheck::Valid(_)));
            // Its context number and NTS-KE time go with it; a session saved before they
            // were kept has none.
            assert_eq!(restored.context(), None);
            client.set_context(3, 1_700_000_000_123_456_789);
            let again = ClientSession::restore(&client.dump(), [8; 16]).unwrap();
            assert_eq!(again.context(), Some((3, 1_700_000_000_123_456_789)));
            assert_eq!(again.cookies(), client.cookies());
            let odd = client.dump().replace("context 3 ", "context x ");
            assert_eq!(
                ClientSession::restore(&odd, [8; 16]).unwrap().context(),
                None
            );
            assert!(ClientSession::restore("junk", [0; 16]).is_none());
            assert!(
                ClientSession::restore(&empty.dump(), [0; 16]).is_none(),
                "no cookie"
            );
        }
    }

    #[test]
    fn a_nak_to_keys_exported_the_old_way_switches_to_the_compliant_ones() {
        // The server exported compliantly without confirming it: its cookies hold the
        // compliant keys, our first guess (chrony 4.4-4.6's export) fails.
        let server = keys(Aead::Aes128GcmSiv);
        let old = SessionKeys::new(Aead::Aes128GcmSiv, &[1; 16], &[2; 16]).unwrap();
        let compliant = SessionKeys::new(Aead::Aes128GcmSiv, &[3; 16], &[4; 16]).unwrap();
        let cookies: Vec<Vec<u8>> = (0..8)
            .map(|i| server.seal(&compliant, &[i; NONCE_LEN]))
            .collect();
        let mut client = ClientSession::new(old.clone(), cookies.clone(), [4; 16])
            .with_alternative(compliant.clone());
        assert_eq!(round(&mut client, &server, false), Err(ReplyError::Nak));
        // The next request, with the cookies left, is under the compliant keys.
        assert!(client.usable(), "the alternative keys are still to try");
        assert_eq!(round(&mut client, &server, false), Ok(()));
        assert_eq!(client.cookies(), 6, "the cookies are kept");
        // They work: a later NAK with no valid reply means new cookies are needed.
        assert_eq!(round(&mut client, &server, true), Err(ReplyError::Nak));
        assert!(!client.usable());
        // A reply that verified under the first keys ends the alternative too: the
        // server exports as chrony 4.4-4.6 do, and a NAK then means the cookies.
        let old_cookies: Vec<Vec<u8>> = (0..8).map(|i| server.seal(&old, &[i; 16])).collect();
        let mut client =
            ClientSession::new(old.clone(), old_cookies, [4; 16]).with_alternative(compliant);
        assert_eq!(round(&mut client, &server, false), Ok(()));
        assert_eq!(round(&mut client, &server, true), Err(ReplyError::Nak));
        assert!(!client.usable(), "no switch after a verified reply");
        // Without an alternative, no switch either.
        let mut plain = ClientSession::new(old, cookies, [4; 16]);
        assert_eq!(round(&mut plain, &server, false), Err(ReplyError::Nak));
        assert!(!plain.usable());
    }

    /// One request of `client` to `server` and the answer to it: the server's own (a
    /// reply, or a NAK if the request does not verify), or a NAK however it verified
    /// (`nak`: one an attacker sends, or the server's after it lost its keys).
    fn round(client: &mut ClientSession, server: &CookieKeys, nak: bool) -> Result<(), ReplyError> {
        let req = client.request(&[0x23; 48]).expect("a request");
        let mut kiss = [0u8; 48];
        kiss[12..16].copy_from_slice(b"NTSN");
        match check_request(&req, server) {
            NtsCheck::Valid(r) if !nak => {
                client.reply(&seal_response(&[0x24; 48], &r, &[6; NONCE_LEN], &[]))
            }
            NtsCheck::Valid(NtsRequest { uid, .. }) | NtsCheck::Nak { uid } => {
                client.reply(&nak_response(&kiss, &uid))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ke_responses_are_read_as_a_client_must() {
        let req = parse_ke_request(&ke_request(&Aead::ALL)).unwrap().unwrap();
        let msg = ke_response(
            &req,
            Aead::AesSivCmac256,
            &[vec![1; 100], vec![2; 100]],
            Some("ntp.test"),
            Some(1123),
        );
        assert_eq!(
            parse_ke_response(&msg[..msg.len() - 1], &Aead::ALL),
            Ok(None)
        );
        let r = parse_ke_response(&msg, &Aead::ALL).unwrap().unwrap();
        assert_eq!((r.cookies.len(), r.aead), (2, Aead::AesSivCmac256));
        assert_eq!(
            (r.server.as_deref(), r.port),
            (Some("ntp.test"), Some(1123))
        );
        assert!(parse_ke_response(&ke_error(1), &Aead::ALL).is_err());
        let no_cookies = ke_response(&req, Aead::AesSivCmac256, &[], None, None);
        assert!(parse_ke_response(&no_cookies, &Aead::ALL).is_err());
        // An algorithm the client did not offer.
        let gcm = ke_response(&req, Aead::Aes128GcmSiv, &[vec![1; 64]], None, None);
        assert!(parse_ke_response(&gcm, &[Aead::AesSivCmac256]).is_err());
        assert!(parse_ke_response(&gcm, &Aead::ALL).is_ok());
        // The AEAD record not of exactly one algorithm, or record 1024 with a body: as
        // chrony's client, refused (here in place of the record the server sent).
        assert_eq!(gcm[6..12], [0x80, 4, 0, 2, 0, 30]);
        let two = [&gcm[..6], &[0x80, 4, 0, 4, 0, 30, 0, 15], &gcm[12..]].concat();
        assert!(parse_ke_response(&two, &Aead::ALL).is_err(), "{two:?}");
        let mut long_1024 = gcm.clone();
        let at = long_1024
            .windows(4)
            .position(|w| w == [4, 0, 0, 0])
            .unwrap();
        long_1024.splice(at..at + 4, [4, 0, 0, 2, 0, 0]);
        assert!(parse_ke_response(&long_1024, &Aead::ALL).is_err());
    }
}
