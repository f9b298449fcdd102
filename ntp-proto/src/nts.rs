//! NTS (RFC 8915), server side, without IO: the NTS-KE records, the server's cookies, and
//! the NTS extension fields of NTP packets. The daemon runs TLS and the sockets; random
//! bytes (keys, nonces) come in as arguments.

use aes_siv::KeyInit;
use aes_siv::siv::Aes128Siv;

/// The NTS-KE server's TCP port.
pub const KE_PORT: u16 = 4460;
/// The NTS-KE ALPN protocol name.
pub const ALPN: &[u8] = b"ntske/1";
/// The TLS exporter label the NTP keys come from.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-network-time-security";
/// AEAD algorithm `AEAD_AES_SIV_CMAC_256` (IANA 15): the one every client supports.
pub const AEAD_AES_SIV_CMAC_256: u16 = 15;
/// Bytes of an `AEAD_AES_SIV_CMAC_256` key.
pub const KEY_LEN: usize = 32;
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
/// Bytes of the SIV tag.
const TAG_LEN: usize = 16;
/// Nonce length the server uses (and the least it pads to).
pub const NONCE_LEN: usize = 16;

/// What an NTS-KE client asked for, once its message is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeRequest {
    /// Next protocols offered, in order.
    pub protocols: Vec<u16>,
    /// AEAD algorithms offered, in order.
    pub aeads: Vec<u16>,
}

/// Why a client message is refused: the NTS-KE error code to send.
pub type KeError = u16;

/// Reads an NTS-KE client message: `Ok(None)` while it is incomplete (no End of Message
/// yet), the request once it is, or the error to answer with.
pub fn parse_ke_request(msg: &[u8]) -> Result<Option<KeRequest>, KeError> {
    let mut req = KeRequest {
        protocols: Vec::new(),
        aeads: Vec::new(),
    };
    let (mut seen_protocol, mut seen_aead) = (false, false);
    let mut at = 0;
    loop {
        let Some(head) = msg.get(at..at + 4) else {
            return Ok(None);
        };
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let Some(body) = msg.get(at + 4..at + 4 + len) else {
            return Ok(None);
        };
        at += 4 + len;
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
                if !body.is_empty() || !seen_protocol || at != msg.len() {
                    return Err(ERROR_BAD_REQUEST);
                }
                return Ok(Some(req));
            }
            REC_NEXT_PROTOCOL => {
                if seen_protocol {
                    return Err(ERROR_BAD_REQUEST);
                }
                seen_protocol = true;
                req.protocols = pairs(body).ok_or(ERROR_BAD_REQUEST)?;
            }
            REC_AEAD => {
                if seen_aead {
                    return Err(ERROR_BAD_REQUEST);
                }
                seen_aead = true;
                req.aeads = pairs(body).ok_or(ERROR_BAD_REQUEST)?;
            }
            // A client sends no errors or cookies; warnings and server/port wishes are
            // fine to ignore.
            REC_ERROR | REC_COOKIE => return Err(ERROR_BAD_REQUEST),
            REC_WARNING | REC_SERVER | REC_PORT => {}
            _ if critical => return Err(ERROR_UNRECOGNIZED_CRITICAL),
            _ => {}
        }
    }
}

fn record(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// The server's answer to a request: `NTPv4` with `AEAD_AES_SIV_CMAC_256` if offered (else
/// an error, since no other is supported), `cookies`, and the NTP server and port to use
/// when they are not this host's and 123.
pub fn ke_response(
    req: &KeRequest,
    cookies: &[Vec<u8>],
    server: Option<&str>,
    port: Option<u16>,
) -> Result<Vec<u8>, KeError> {
    if !req.protocols.contains(&PROTOCOL_NTPV4) || !req.aeads.contains(&AEAD_AES_SIV_CMAC_256) {
        return Err(ERROR_BAD_REQUEST);
    }
    let mut out = Vec::new();
    record(
        &mut out,
        CRITICAL | REC_NEXT_PROTOCOL,
        &PROTOCOL_NTPV4.to_be_bytes(),
    );
    record(&mut out, REC_AEAD, &AEAD_AES_SIV_CMAC_256.to_be_bytes());
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
    Ok(out)
}

/// An NTS-KE error message.
pub fn ke_error(code: KeError) -> Vec<u8> {
    let mut out = Vec::new();
    record(&mut out, CRITICAL | REC_ERROR, &code.to_be_bytes());
    record(&mut out, CRITICAL | REC_END, &[]);
    out
}

/// The TLS exporter context of the client-to-server (`s2c` false) or server-to-client
/// key for `NTPv4` with `AEAD_AES_SIV_CMAC_256`.
pub fn exporter_context(s2c: bool) -> [u8; 5] {
    let [p0, p1] = PROTOCOL_NTPV4.to_be_bytes();
    let [a0, a1] = AEAD_AES_SIV_CMAC_256.to_be_bytes();
    [p0, p1, a0, a1, u8::from(s2c)]
}

/// A key the server seals its cookies under.
#[derive(Clone)]
pub struct ServerKey {
    /// Its number, carried in every cookie.
    pub id: u32,
    /// The AES-SIV key.
    pub key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ServerKey {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKey {{ id: {} }}", self.id)
    }
}

/// The client's two NTP keys, as a cookie carries them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Client to server.
    pub c2s: [u8; KEY_LEN],
    /// Server to client.
    pub s2c: [u8; KEY_LEN],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys")
    }
}

/// The server's cookie keys: the current one seals, it and the previous ones open (so
/// cookies handed out before a rotation stay good for a while).
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

    /// A cookie holding `session`: key id, `nonce`, and the SIV of both keys.
    pub fn seal(&self, session: &SessionKeys, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let Some(k) = self.keys.first() else {
            return Vec::new();
        };
        let id = k.id.to_be_bytes();
        let mut plain = Vec::with_capacity(2 * KEY_LEN);
        plain.extend_from_slice(&session.c2s);
        plain.extend_from_slice(&session.s2c);
        let mut siv = Aes128Siv::new((&k.key).into());
        let sealed = siv
            .encrypt([&id[..], &nonce[..]], &plain)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(4 + NONCE_LEN + sealed.len());
        out.extend_from_slice(&id);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The session keys in a cookie this server sealed (under a key it still has).
    pub fn open(&self, cookie: &[u8]) -> Option<SessionKeys> {
        if cookie.len() != 4 + NONCE_LEN + TAG_LEN + 2 * KEY_LEN {
            return None;
        }
        let id = u32::from_be_bytes(cookie[..4].try_into().ok()?);
        let k = self.keys.iter().find(|k| k.id == id)?;
        let nonce = &cookie[4..4 + NONCE_LEN];
        let mut siv = Aes128Siv::new((&k.key).into());
        let plain = siv
            .decrypt([&cookie[..4], nonce], &cookie[4 + NONCE_LEN..])
            .ok()?;
        Some(SessionKeys {
            c2s: plain[..KEY_LEN].try_into().ok()?,
            s2c: plain[KEY_LEN..].try_into().ok()?,
        })
    }
}

/// One extension field: its type, where it starts, and its body.
struct Field<'a> {
    kind: u16,
    start: usize,
    body: &'a [u8],
}

/// The extension fields after the 48-byte header, or `None` if they are malformed (as
/// chrony's `NEF_ParseField`: at least 16 bytes, whole words, inside the packet).
fn fields(packet: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = ntp_common::wire::NTP_HEADER_LEN;
    while at < packet.len() {
        let head = packet.get(at..at + 4)?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if len < MIN_EF_LEN || !len.is_multiple_of(4) || at + len > packet.len() {
            return None;
        }
        out.push(Field {
            kind,
            start: at,
            body: &packet[at + 4..at + len],
        });
        at += len;
    }
    Some(out)
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
    let uids: Vec<&Field> = fields.iter().filter(|f| f.kind == EF_UNIQUE_ID).collect();
    let cookies: Vec<&Field> = fields.iter().filter(|f| f.kind == EF_COOKIE).collect();
    let (Some(auth), [uid], [cookie]) = (fields.last(), uids.as_slice(), cookies.as_slice()) else {
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
    if open_authenticator(&packet[..auth.start], auth.body, &session.c2s).is_none() {
        return NtsCheck::Nak { uid };
    }
    NtsCheck::Valid(NtsRequest {
        uid,
        keys: session,
        cookies: (1 + placeholders).min(MAX_COOKIES),
    })
}

/// Decrypts an authenticator body over `ad` under `key`: its plaintext (the encrypted
/// extension fields), or `None`.
fn open_authenticator(ad: &[u8], body: &[u8], key: &[u8; KEY_LEN]) -> Option<Vec<u8>> {
    let nonce_len = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let ct_len = usize::from(u16::from_be_bytes(body.get(2..4)?.try_into().ok()?));
    let padded = |n: usize| n.next_multiple_of(4);
    // The nonce padded to at least 16 bytes (chrony's "missing padding" check): a reply,
    // whose nonce is 16 bytes, is then never larger than the request.
    if nonce_len == 0
        || ct_len < TAG_LEN
        || 4 + padded(nonce_len).max(NONCE_LEN) + padded(ct_len) > body.len()
    {
        return None;
    }
    let nonce = &body[4..4 + nonce_len];
    let ct_at = 4 + padded(nonce_len);
    let ct = &body[ct_at..ct_at + ct_len];
    let mut siv = Aes128Siv::new(key.into());
    siv.decrypt([ad, nonce], ct).ok()
}

fn push_field(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    let len = (4 + body.len()).next_multiple_of(4).max(MIN_EF_LEN);
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
    let mut out = header.to_vec();
    push_field(&mut out, EF_UNIQUE_ID, &req.uid);
    let mut plain = Vec::new();
    for c in cookies {
        push_field(&mut plain, EF_COOKIE, c);
    }
    let mut siv = Aes128Siv::new((&req.keys.s2c).into());
    let ct = siv
        .encrypt([&out[..], &nonce[..]], &plain)
        .unwrap_or_default();
    let mut body = Vec::with_capacity(4 + NONCE_LEN + ct.len() + 3);
    body.extend_from_slice(&(NONCE_LEN as u16).to_be_bytes());
    body.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    body.extend_from_slice(nonce);
    body.extend_from_slice(&ct);
    push_field(&mut out, EF_AUTHENTICATOR, &body);
    out
}

/// An NTS NAK: `header` (a Kiss-o'-Death NTSN) with the unique identifier echoed.
pub fn nak_response(header: &[u8], uid: &[u8]) -> Vec<u8> {
    let mut out = header.to_vec();
    push_field(&mut out, EF_UNIQUE_ID, uid);
    out
}

/// The NTS-KE request a client sends: `NTPv4` with `AEAD_AES_SIV_CMAC_256`.
pub fn ke_request() -> Vec<u8> {
    let mut out = Vec::new();
    record(
        &mut out,
        CRITICAL | REC_NEXT_PROTOCOL,
        &PROTOCOL_NTPV4.to_be_bytes(),
    );
    record(&mut out, REC_AEAD, &AEAD_AES_SIV_CMAC_256.to_be_bytes());
    record(&mut out, CRITICAL | REC_END, &[]);
    out
}

/// What an NTS-KE server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeResponse {
    /// Cookies for the NTP exchanges.
    pub cookies: Vec<Vec<u8>>,
    /// Another NTP server to use, if the server named one.
    pub server: Option<String>,
    /// Another NTP port to use, if the server named one.
    pub port: Option<u16>,
}

/// Reads an NTS-KE server's message: `Ok(None)` while incomplete, the response, or why it
/// cannot be used (an error record, another protocol or AEAD, no cookies).
pub fn parse_ke_response(msg: &[u8]) -> Result<Option<KeResponse>, String> {
    let mut r = KeResponse {
        cookies: Vec::new(),
        server: None,
        port: None,
    };
    let (mut protocol_ok, mut aead_ok) = (false, false);
    let mut at = 0;
    loop {
        let Some(head) = msg.get(at..at + 4) else {
            return Ok(None);
        };
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let Some(body) = msg.get(at + 4..at + 4 + len) else {
            return Ok(None);
        };
        at += 4 + len;
        match kind & !CRITICAL {
            REC_END => break,
            REC_NEXT_PROTOCOL => protocol_ok = body == PROTOCOL_NTPV4.to_be_bytes(),
            REC_AEAD => aead_ok = body == AEAD_AES_SIV_CMAC_256.to_be_bytes(),
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
        return Err("the server did not agree to NTPv4 with AEAD_AES_SIV_CMAC_256".into());
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
    cookies: std::collections::VecDeque<Vec<u8>>,
    prf: [u8; 16],
    counter: u64,
    /// The unique identifier of the request awaiting its reply.
    pending: Option<[u8; 32]>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientSession {{ {} cookies }}", self.cookies.len())
    }
}

/// The first line of a saved client session.
const DUMP_VERSION: &str = "ntpx-nts-session 1";

/// Why a reply to an NTS request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// An NTS NAK for our request: the cookies are no good, a new NTS-KE is needed.
    Nak,
    /// Not an authentic reply to our request.
    Invalid,
}

impl ClientSession {
    /// A session from an NTS-KE: its keys and cookies, and `prf_key` (random bytes).
    pub fn new(keys: SessionKeys, cookies: Vec<Vec<u8>>, prf_key: [u8; 16]) -> Self {
        ClientSession {
            keys,
            cookies: cookies.into(),
            prf: prf_key,
            counter: 0,
            pending: None,
        }
    }

    /// Cookies left.
    pub fn cookies(&self) -> usize {
        self.cookies.len()
    }

    /// The session as kept across a restart (`ntsdumpdir`): its keys and cookies, as
    /// lines of hex under a version line.
    pub fn dump(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut out = format!(
            "{DUMP_VERSION}\n{}\n{}\n",
            hex(&self.keys.c2s),
            hex(&self.keys.s2c)
        );
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
        let c2s: [u8; KEY_LEN] = unhex(lines.next()?)?.try_into().ok()?;
        let s2c: [u8; KEY_LEN] = unhex(lines.next()?)?.try_into().ok()?;
        let cookies: Vec<Vec<u8>> = lines
            .map(unhex)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .filter(|c| !c.is_empty() && c.len() <= MAX_COOKIE_LEN)
            .take(MAX_COOKIES)
            .collect();
        if cookies.is_empty() {
            return None;
        }
        Some(ClientSession::new(
            SessionKeys { c2s, s2c },
            cookies,
            prf_key,
        ))
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
        let mut siv = Aes128Siv::new((&self.keys.c2s).into());
        let ct = siv.encrypt([&p[..], &nonce[..]], b"").unwrap_or_default();
        let mut body = Vec::with_capacity(4 + NONCE_LEN + ct.len());
        body.extend_from_slice(&(NONCE_LEN as u16).to_be_bytes());
        body.extend_from_slice(&(ct.len() as u16).to_be_bytes());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        push_field(&mut p, EF_AUTHENTICATOR, &body);
        self.pending = Some(uid);
        Some(p)
    }

    /// Checks a reply to the last request: the unique identifier ours, the
    /// authenticator (last) verified under the server-to-client key; its cookies are
    /// kept. A Kiss-o'-Death NTSN naming our identifier is a NAK.
    pub fn reply(&mut self, packet: &[u8]) -> Result<(), ReplyError> {
        let uid = self.pending.ok_or(ReplyError::Invalid)?;
        let fields = fields(packet).ok_or(ReplyError::Invalid)?;
        let ours = fields
            .iter()
            .any(|f| f.kind == EF_UNIQUE_ID && f.body.get(..32) == Some(&uid[..]));
        if !ours {
            return Err(ReplyError::Invalid);
        }
        let nak = packet.get(1) == Some(&0) && packet.get(12..16) == Some(&b"NTSN"[..]);
        let auth = fields.last().filter(|f| f.kind == EF_AUTHENTICATOR);
        let Some(auth) = auth else {
            return Err(if nak {
                self.pending = None;
                ReplyError::Nak
            } else {
                ReplyError::Invalid
            });
        };
        let plain = open_authenticator(&packet[..auth.start], auth.body, &self.keys.s2c)
            .ok_or(ReplyError::Invalid)?;
        self.pending = None;
        let mut inner = vec![0u8; ntp_common::wire::NTP_HEADER_LEN];
        inner.extend_from_slice(&plain);
        for f in fields_of(&inner) {
            if f.kind == EF_COOKIE && self.cookies.len() < MAX_COOKIES {
                self.cookies.push_back(f.body.to_vec());
            }
        }
        Ok(())
    }
}

/// The well-formed fields of `packet` (none if any is malformed).
fn fields_of(packet: &[u8]) -> Vec<Field<'_>> {
    fields(packet).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CookieKeys {
        CookieKeys::new(ServerKey {
            id: 7,
            key: [0x42; KEY_LEN],
        })
    }

    fn session() -> SessionKeys {
        SessionKeys {
            c2s: [1; KEY_LEN],
            s2c: [2; KEY_LEN],
        }
    }

    /// A client's request as chrony builds it: header, unique id, cookie, `n`
    /// placeholders, authenticator with a 16-byte nonce.
    fn request(cookie: &[u8], placeholders: usize, c2s: &[u8; KEY_LEN]) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x23;
        push_field(&mut p, EF_UNIQUE_ID, &[9u8; 32]);
        push_field(&mut p, EF_COOKIE, cookie);
        for _ in 0..placeholders {
            push_field(&mut p, EF_COOKIE_PLACEHOLDER, &vec![0u8; cookie.len()]);
        }
        let nonce = [5u8; 16];
        let ct = Aes128Siv::new(c2s.into())
            .encrypt([&p[..], &nonce[..]], b"")
            .unwrap();
        let mut body = vec![0, 16, 0, ct.len() as u8];
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        push_field(&mut p, EF_AUTHENTICATOR, &body);
        p
    }

    #[test]
    fn ke_requests_are_read_and_answered_as_rfc_8915_says() {
        // Next protocol `NTPv4` (critical), AEAD 15, End (critical).
        let msg = [0x80, 1, 0, 2, 0, 0, 0, 4, 0, 2, 0, 15, 0x80, 0, 0, 0];
        assert_eq!(parse_ke_request(&msg[..10]), Ok(None), "incomplete");
        let req = parse_ke_request(&msg).unwrap().unwrap();
        assert_eq!(
            (req.protocols.clone(), req.aeads.clone()),
            (vec![0], vec![15])
        );
        let resp = ke_response(&req, &[vec![0xaa; 100], vec![0xbb; 100]], None, None).unwrap();
        assert_eq!(resp[..6], [0x80, 1, 0, 2, 0, 0]);
        assert_eq!(resp[6..12], [0, 4, 0, 2, 0, 15]);
        assert_eq!(resp[12..16], [0, 5, 0, 100]);
        assert_eq!(resp[resp.len() - 4..], [0x80, 0, 0, 0]);
        // Only GCM-SIV offered: refused.
        let gcm = KeRequest {
            protocols: vec![0],
            aeads: vec![30],
        };
        assert_eq!(ke_response(&gcm, &[], None, None), Err(ERROR_BAD_REQUEST));
        // An unknown critical record, a second protocol record, no protocol record.
        assert_eq!(
            parse_ke_request(&[0x80, 99, 0, 0, 0x80, 0, 0, 0]),
            Err(ERROR_UNRECOGNIZED_CRITICAL)
        );
        assert_eq!(
            parse_ke_request(&[0x80, 1, 0, 2, 0, 0, 0x80, 1, 0, 2, 0, 0, 0x80, 0, 0, 0]),
            Err(ERROR_BAD_REQUEST)
        );
        assert_eq!(parse_ke_request(&[0x80, 0, 0, 0]), Err(ERROR_BAD_REQUEST));
        assert_eq!(ke_error(1), [0x80, 2, 0, 2, 0, 1, 0x80, 0, 0, 0]);
        assert_eq!(exporter_context(true), [0, 0, 0, 15, 1]);
    }

    #[test]
    fn cookies_open_under_any_kept_key_and_nothing_else() {
        let mut k = keys();
        let c = k.seal(&session(), &[3; NONCE_LEN]);
        assert_eq!(c.len(), 100);
        assert_eq!(k.open(&c), Some(session()));
        k.rotate(ServerKey {
            id: 8,
            key: [0x43; KEY_LEN],
        });
        assert_eq!(k.open(&c), Some(session()), "the previous key still opens");
        let mut bad = c.clone();
        bad[50] ^= 1;
        assert_eq!(k.open(&bad), None);
        for id in 9..12 {
            k.rotate(ServerKey {
                id,
                key: [id as u8; KEY_LEN],
            });
        }
        assert_eq!(k.open(&c), None, "rotated out");
    }

    #[test]
    fn a_valid_request_gets_a_reply_the_client_can_open() {
        let k = keys();
        let cookie = k.seal(&session(), &[3; NONCE_LEN]);
        let req = request(&cookie, 2, &session().c2s);
        let NtsCheck::Valid(r) = check_request(&req, &k) else {
            panic!("{:?}", check_request(&req, &k));
        };
        assert_eq!((r.uid.clone(), r.cookies), (vec![9u8; 32], 3));
        let fresh: Vec<Vec<u8>> = (0..3).map(|i| k.seal(&session(), &[i; 16])).collect();
        let reply = seal_response(&[0x24; 48], &r, &[6; NONCE_LEN], &fresh);
        assert!(reply.len() <= req.len(), "no larger than the request");
        // The client's side: the unique identifier echoed, the authenticator opens under
        // the server-to-client key and holds the cookies.
        let f = fields(&reply).unwrap();
        assert_eq!((f[0].kind, f[0].body), (EF_UNIQUE_ID, &[9u8; 32][..]));
        assert_eq!(f[1].kind, EF_AUTHENTICATOR);
        let plain = open_authenticator(&reply[..f[1].start], f[1].body, &session().s2c).unwrap();
        let mut inner = vec![0u8; 48];
        inner.extend_from_slice(&plain);
        let cookies = fields(&inner).unwrap();
        assert_eq!(cookies.len(), 3);
        assert!(
            cookies
                .iter()
                .all(|c| c.kind == EF_COOKIE && k.open(c.body).is_some())
        );
    }

    #[test]
    fn bad_requests_get_a_nak_or_nothing() {
        let k = keys();
        let cookie = k.seal(&session(), &[3; NONCE_LEN]);
        // Signed with the wrong key, or a cookie of another server: NAK.
        let wrong = request(&cookie, 0, &[9; KEY_LEN]);
        assert!(matches!(check_request(&wrong, &k), NtsCheck::Nak { .. }));
        let other = CookieKeys::new(ServerKey {
            id: 7,
            key: [0x99; KEY_LEN],
        });
        let req = request(&cookie, 0, &session().c2s);
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
        // Not NTS at all.
        let mut other_ef = vec![0u8; 48];
        push_field(&mut other_ef, 0x2005, &[0; 12]);
        assert_eq!(check_request(&other_ef, &k), NtsCheck::NotNts);
        let nak = nak_response(&[0; 48], &[9; 32]);
        assert_eq!(nak.len(), 48 + 36);
        // A short nonce, unpadded: its reply would be larger than the request.
        let mut short = vec![0u8; 48];
        short[0] = 0x23;
        push_field(&mut short, EF_UNIQUE_ID, &[9u8; 32]);
        push_field(&mut short, EF_COOKIE, &cookie);
        let nonce = [5u8; 4];
        let ct = Aes128Siv::new((&session().c2s).into())
            .encrypt([&short[..], &nonce[..]], b"")
            .unwrap();
        let mut body = vec![0, 4, 0, ct.len() as u8];
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        push_field(&mut short, EF_AUTHENTICATOR, &body);
        assert!(matches!(check_request(&short, &k), NtsCheck::Nak { .. }));
    }

    #[test]
    fn a_client_session_talks_to_this_server() {
        let server = keys();
        let session_keys = session();
        let cookies: Vec<Vec<u8>> = (0..8)
            .map(|i| server.seal(&session_keys, &[i; NONCE_LEN]))
            .collect();
        let mut client = ClientSession::new(session_keys.clone(), cookies, [4; 16]);
        let header = [0x23u8; 48];
        let req = client.request(&header).unwrap();
        assert_eq!(client.cookies(), 7);
        let NtsCheck::Valid(r) = check_request(&req, &server) else {
            panic!("the server refused the client's request");
        };
        assert_eq!(r.cookies, 1, "seven left: no placeholder");
        let fresh = vec![server.seal(&session_keys, &[9; NONCE_LEN])];
        let reply = seal_response(&[0x24; 48], &r, &[6; NONCE_LEN], &fresh);
        // A tampered reply, or one to another request, is refused; ours is taken once.
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
        // A NAK naming our request.
        let mut kiss = [0u8; 48];
        kiss[12..16].copy_from_slice(b"NTSN");
        let nak = nak_response(&kiss, &r.uid);
        assert_eq!(client.reply(&nak), Err(ReplyError::Nak));
        // No cookies left: no request.
        let mut empty = ClientSession::new(session(), vec![], [1; 16]);
        assert!(empty.request(&header).is_none());
        // Saved and restored (a restart): the same keys and cookies, still accepted.
        let mut restored = ClientSession::restore(&client.dump(), [8; 16]).unwrap();
        assert_eq!(restored.cookies(), client.cookies());
        let req = restored.request(&header).unwrap();
        assert!(matches!(check_request(&req, &server), NtsCheck::Valid(_)));
        assert!(ClientSession::restore("junk", [0; 16]).is_none());
        assert!(
            ClientSession::restore(&empty.dump(), [0; 16]).is_none(),
            "no cookie"
        );
    }

    #[test]
    fn ke_responses_are_read_as_a_client_must() {
        let req = parse_ke_request(&ke_request()).unwrap().unwrap();
        let msg = ke_response(
            &req,
            &[vec![1; 100], vec![2; 100]],
            Some("ntp.test"),
            Some(1123),
        )
        .unwrap();
        assert_eq!(parse_ke_response(&msg[..msg.len() - 1]), Ok(None));
        let r = parse_ke_response(&msg).unwrap().unwrap();
        assert_eq!(r.cookies.len(), 2);
        assert_eq!(
            (r.server.as_deref(), r.port),
            (Some("ntp.test"), Some(1123))
        );
        assert!(parse_ke_response(&ke_error(1)).is_err());
        let no_cookies = ke_response(&req, &[], None, None).unwrap();
        assert!(parse_ke_response(&no_cookies).is_err());
    }
}
