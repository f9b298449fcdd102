//! NTS-KE as a client (RFC 8915 section 4): TLS 1.3 to the server's NTS-KE port with
//! ALPN `ntske/1`, its certificate checked against `ntstrustedcerts` and (unless
//! `nosystemcert`) the system's authorities; the NTP keys exported from the session and
//! the cookies read from the response.

use anyhow::{Context, Result, anyhow, bail};
use ntp_proto::{
    config::Config,
    nts::{self, Aead, ClientSession, KeResponse, MAX_KEY_LEN, SessionKeys},
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::warn;

/// How long connecting, and any one read or write, may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole NTS-KE may take (chrony's client limit): a server sending its bytes
/// slowly cannot hold the source's task.
const SESSION_LIMIT: Duration = Duration::from_secs(16);
/// The system's certificate authorities, where Debian and Red Hat keep them.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// An NTS source's NTS-KE server: its configured name (for the certificate check), its
/// port, and the set of trusted certificates its certificate is checked against.
#[derive(Clone, Debug)]
pub struct KeServer {
    /// The name in the `server` line.
    pub name: String,
    /// `ntsport`.
    pub port: u16,
    /// `certset`.
    pub certset: u32,
}

/// What the sources with NTS share: a TLS configuration per certificate set, and each
/// source's NTS-KE server.
pub struct NtsContext {
    /// The TLS client configuration of each certificate set in use (built when a source
    /// first names the set: at start, or when `reload sources` adds one).
    tls: Mutex<HashMap<u32, Arc<rustls::ClientConfig>>>,
    /// `ntstrustedcerts` (set, path), and whether set 0 holds the system's authorities.
    trusted: (Vec<(u32, std::path::PathBuf)>, bool),
    /// NTS-KE server of each source (by engine id).
    pub servers: Mutex<HashMap<usize, KeServer>>,
    /// The NTP server each source's NTS-KE server named, where it named one (by engine
    /// id): kept with the session at exit.
    pub named: Mutex<HashMap<usize, SocketAddr>>,
    /// `ntsdumpdir`: where the sessions (keys and cookies) are kept across restarts.
    pub dump_dir: Option<std::path::PathBuf>,
    /// `ntsaeads`: the AEAD algorithms offered, in order of preference.
    pub aeads: Vec<Aead>,
}

impl NtsContext {
    /// The TLS configuration checking certificates against set `certset`.
    pub fn tls(&self, certset: u32) -> Result<Arc<rustls::ClientConfig>> {
        let mut sets = crate::lock(&self.tls);
        if let Some(c) = sets.get(&certset) {
            return Ok(c.clone());
        }
        let (trusted, system) = &self.trusted;
        let c = Arc::new(
            tls_for_set(trusted, *system, certset)
                .with_context(|| format!("certificate set {certset}"))?,
        );
        sets.insert(certset, c.clone());
        Ok(c)
    }

    /// Where the session with NTS-KE server `name` at `addr` is kept (`NAME@IP.nts`, so
    /// each member of a pool keeps its own, as chronyd keeps them by address), or with
    /// no address the file of earlier versions (`NAME.nts`).
    fn dump_file(&self, name: &str, addr: Option<SocketAddr>) -> Option<std::path::PathBuf> {
        // A host name or address; anything else in it could leave the directory.
        let safe = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        let file = match addr {
            Some(a) => format!("{name}@{}.nts", a.ip()),
            None => format!("{name}.nts"),
        };
        (safe && !name.starts_with('.'))
            .then(|| self.dump_dir.as_ref().map(|d| d.join(file)))
            .flatten()
    }

    /// The session saved for `name` by the last run with the server at `addr`, taken
    /// (the file is removed: its cookies are used once; a NAK then brings a new NTS-KE),
    /// with the NTP server the NTS-KE server had named, if it had. Not one saved for
    /// another address (a pool's other member), nor one whose file cannot be removed
    /// (its cookies would be sent again at each start, and linked).
    pub fn take_saved(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Option<(ntp_proto::nts::ClientSession, Option<SocketAddr>)> {
        let (path, text) = [Some(addr), None].into_iter().find_map(|a| {
            let path = self.dump_file(name, a)?;
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path, text))
        })?;
        let (session, named, source) = split_named(&text);
        if source.is_some_and(|s| s != addr) {
            return None;
        }
        if let Err(e) = std::fs::remove_file(&path) {
            warn!("Saved NTS session {} not used: {e}", path.display());
            return None;
        }
        let mut prf = [0u8; 16];
        crate::net::random_bytes(&mut prf).ok()?;
        Some((
            ntp_proto::nts::ClientSession::restore(&session, prf)?,
            named,
        ))
    }

    /// Saves `dump` (a session with the server at `addr`) for `name`, readable by the
    /// daemon's user alone, with the NTP server its NTS-KE server named (`named`).
    pub fn save(&self, name: &str, addr: SocketAddr, dump: &str, named: Option<SocketAddr>) {
        let Some(path) = self.dump_file(name, Some(addr)) else {
            return;
        };
        let mut text = dump.to_string();
        text.push_str(&format!("{SOURCE}{addr}\n"));
        if let Some(a) = named {
            text.push_str(&format!("{NAMED}{a}\n"));
        }
        if let Err(e) = crate::os::atomic_file::write_atomically_mode(&path, text.as_bytes(), 0o600)
        {
            warn!("Could not save the NTS session with {name}: {e:#}");
        }
    }
}

/// The line of a saved session naming the NTP server its NTS-KE server named.
const NAMED: &str = "ntp-server ";
/// The line of a saved session naming the source (its NTS-KE server's address) it was
/// made with.
const SOURCE: &str = "source ";

/// A saved session's text without its `NAMED` and `SOURCE` lines, and the addresses
/// they give (none in files of earlier versions).
fn split_named(text: &str) -> (String, Option<SocketAddr>, Option<SocketAddr>) {
    let (mut named, mut source) = (None, None);
    let mut rest = String::new();
    for line in text.lines() {
        if let Some(a) = line.strip_prefix(NAMED) {
            named = a.trim().parse().ok();
        } else if let Some(a) = line.strip_prefix(SOURCE) {
            source = a.trim().parse().ok();
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    (rest, named, source)
}

/// The NTS context when any source uses NTS: a TLS configuration for each certificate
/// set an NTS source names (chrony's sets: 0 holds the system's authorities unless
/// `nosystemcert`, and `ntstrustedcerts` lines without a set; the others only their own
/// lines). A set a source needs with nothing in it is an error naming the source.
pub fn context(config: &Config) -> Result<Option<Arc<NtsContext>>> {
    let sources: Vec<_> = config.sources.iter().filter(|s| s.nts).collect();
    if sources.is_empty() {
        return Ok(None);
    }
    let ctx = NtsContext {
        tls: Mutex::new(HashMap::new()),
        trusted: (config.nts_trusted_certs.clone(), config.nts_system_certs),
        servers: Mutex::new(HashMap::new()),
        named: Mutex::new(HashMap::new()),
        dump_dir: config.nts_server.dump_dir.clone(),
        aeads: config.nts_aeads.clone(),
    };
    // Every set the configuration names, built now: a set with nothing to trust stops
    // the start with the source's line.
    for s in &sources {
        ctx.tls(s.certset)
            .with_context(|| format!("NTS source {} (line {})", s.name, s.line))?;
    }
    Ok(Some(Arc::new(ctx)))
}

/// The TLS client configuration trusting certificate set `set` of `trusted` (and, for
/// set 0 with `system`, the system's authorities).
fn tls_for_set(
    trusted: &[(u32, std::path::PathBuf)],
    system: bool,
    set: u32,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    for (_, path) in trusted.iter().filter(|(s, _)| *s == set) {
        for cert in certificates_in(path)? {
            // As an authority, and as itself: chronyd (GnuTLS) accepts a trusted
            // self-signed server certificate, which webpki refuses as an end entity.
            let _ = roots.add(cert.clone());
            pinned.push(cert);
        }
    }
    if set == 0
        && system
        && let Some(bundle) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file())
    {
        let certs = certificates_in(bundle)?;
        let (_, ignored) = roots.add_parsable_certificates(certs);
        if ignored > 0 {
            warn!(
                "{ignored} system certificates of {} could not be used",
                bundle.display()
            );
        }
    }
    if roots.is_empty() && pinned.is_empty() {
        if set == 0 {
            bail!("no certificate to trust (ntstrustedcerts, or the system's)");
        }
        bail!("no certificate to trust (no ntstrustedcerts {set} line)");
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("the trusted certificates")?;
    let verifier = Arc::new(TrustedOrChained { webpki, pinned });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![nts::ALPN.to_vec()];
    Ok(tls)
}

/// Accepts a server certificate that is itself one of `ntstrustedcerts` (the handshake
/// still proves the server holds its key), else one that chains to a trusted authority
/// and names the server (webpki).
#[derive(Debug)]
struct TrustedOrChained {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for TrustedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            // Trusted as itself, but only for the names it carries and while it is
            // valid, as GnuTLS checks a directly trusted certificate for chronyd.
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            let (not_before, not_after) = validity(end_entity.as_ref()).ok_or(
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
            )?;
            let t = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            if t < not_before {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidYet,
                ));
            }
            if t > not_after {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired,
                ));
            }
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// One DER element: its tag, its content, and what follows it.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = usize::from(*b.get(1)?);
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = len << 8 | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    let content = b.get(head..end)?;
    Some((tag, content, &b[end..]))
}

/// A certificate's validity period (notBefore, notAfter), Unix seconds.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let (tag, _, after_version) = der(tbs)?;
    // The version is optional ([0]); then serial, signature algorithm, issuer, validity.
    let mut rest = if tag == 0xa0 { after_version } else { tbs };
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (_, period, _) = der(rest)?;
    let (t1, from, more) = der(period)?;
    let (t2, until, _) = der(more)?;
    Some((asn1_time(t1, from)?, asn1_time(t2, until)?))
}

/// An ASN.1 `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`), Unix
/// seconds.
fn asn1_time(tag: u8, s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s.get(..4)?.parse().ok()?, &s[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, h, m, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days from 1970-01-01 to the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The PEM certificates in `path`, a file or a directory of them.
fn certificates_in(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(std::result::Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let certs = CertificateDer::pem_file_iter(&f)
            .map_err(|e| anyhow!("reading certificates in {}: {e}", f.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("reading certificates in {}: {e}", f.display()))?;
        out.extend(certs);
    }
    Ok(out)
}

/// The NTP keys for `aead` exported from an NTS-KE's TLS session (RFC 8915 5.1), on
/// either side, under the context `compliant` says (see [`nts::exporter_context`]).
pub(crate) fn export_keys<D>(
    conn: &rustls::ConnectionCommon<D>,
    aead: Aead,
    compliant: bool,
) -> Result<SessionKeys> {
    let n = aead.key_len();
    let mut keys = [[0u8; MAX_KEY_LEN]; 2];
    for (s2c, key) in keys.iter_mut().enumerate() {
        conn.export_keying_material(
            &mut key[..n],
            nts::EXPORTER_LABEL,
            Some(&nts::exporter_context(aead, compliant, s2c == 1)),
        )
        .with_context(|| {
            let which = if s2c == 1 {
                "server-to-client"
            } else {
                "client-to-server"
            };
            format!("exporting the {which} key")
        })?;
    }
    SessionKeys::new(aead, &keys[0][..n], &keys[1][..n]).ok_or_else(|| anyhow!("exported keys"))
}

/// Why an NTS-KE failed before any TLS session began (no address, no connection): such
/// a failure is tried again sooner than one after the server's TLS answered (chrony's
/// two retry factors).
#[derive(Debug)]
pub struct Unreached(pub String);

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreached {}

/// What one NTS-KE gave.
#[derive(Debug)]
pub struct Exchanged {
    /// The NTP keys, exported as the server said it exports them.
    pub keys: SessionKeys,
    /// AES-128-GCM-SIV keys exported the RFC's way, where the server did not confirm
    /// how it exports them (chrony's fallback: tried after a NAK to `keys`).
    pub alternative: Option<SessionKeys>,
    /// The server's response.
    pub response: KeResponse,
}

impl Exchanged {
    /// The NTS session with the response's cookies and `prf_key` (random bytes).
    pub fn session(&self, prf_key: [u8; 16]) -> ClientSession {
        let s = ClientSession::new(self.keys.clone(), self.response.cookies.clone(), prf_key);
        match &self.alternative {
            Some(alt) => s.with_alternative(alt.clone()),
            None => s,
        }
    }
}

/// One NTS-KE with `name`:`port`, offering `aeads` in order of preference.
pub fn key_exchange(
    tls: Arc<rustls::ClientConfig>,
    name: &str,
    address: Option<std::net::IpAddr>,
    port: u16,
    aeads: &[Aead],
) -> Result<Exchanged> {
    key_exchange_within(tls, name, address, port, aeads, SESSION_LIMIT)
}

/// A connection whose every read and write ends by `deadline`: rustls reads as often as
/// a handshake or a record needs within one call, so a bound checked between calls
/// would not hold against a server sending a byte at a time.
struct Bounded {
    sock: TcpStream,
    deadline: std::time::Instant,
}

impl Bounded {
    /// Sets the socket's timeouts to what is left (at most [`TIMEOUT`]); an error once
    /// nothing is.
    fn arm(&self) -> std::io::Result<()> {
        let left = self
            .deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the NTS-KE's time is up")
            })?;
        self.sock.set_read_timeout(Some(left.min(TIMEOUT)))?;
        self.sock.set_write_timeout(Some(left.min(TIMEOUT)))
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.sock.read(buf)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.sock.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// Whether a failed TLS handshake never got an answer from a TLS server (closed, reset,
/// silent): retried as soon as a refused connection, as chrony treats a premature end.
fn unanswered(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionReset, TimedOut, UnexpectedEof, WouldBlock};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | WouldBlock | TimedOut
    )
}

/// [`key_exchange`] with the whole session bounded to `limit`.
fn key_exchange_within(
    tls: Arc<rustls::ClientConfig>,
    name: &str,
    address: Option<std::net::IpAddr>,
    port: u16,
    aeads: &[Aead],
    limit: Duration,
) -> Result<Exchanged> {
    // The address polled, so the cookies come from the server the NTP goes to (a name
    // resolving to several servers would otherwise hand out another's).
    let addr = match address {
        Some(ip) => std::net::SocketAddr::new(ip, port),
        None => (name, port)
            .to_socket_addrs()
            .map_err(|e| Unreached(format!("resolving {name}: {e}")))?
            .next()
            .ok_or_else(|| Unreached(format!("{name} has no address")))?,
    };
    let deadline = std::time::Instant::now() + limit;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT.min(limit))
        .map_err(|e| Unreached(format!("connecting to {addr}: {e}")))?;
    let server = ServerName::try_from(name.to_string())
        .map_err(|e| anyhow!("{name} is not a name TLS can check: {e}"))?;
    let conn = rustls::ClientConnection::new(tls, server).context("TLS session")?;
    let mut s = rustls::StreamOwned::new(
        conn,
        Bounded {
            sock: tcp,
            deadline,
        },
    );
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            if unanswered(&e) {
                return Err(Unreached(format!("the TLS handshake with {addr}: {e}")).into());
            }
            return Err(e).context("the TLS handshake");
        }
    }
    s.write_all(&nts::ke_request(aeads))
        .context("sending the NTS-KE request")?;
    s.flush()?;
    if s.conn.alpn_protocol() != Some(nts::ALPN) {
        bail!(
            "the server did not negotiate {}",
            String::from_utf8_lossy(nts::ALPN)
        );
    }
    let mut msg = Vec::new();
    let mut buf = [0u8; 4096];
    let response = loop {
        let n = s.read(&mut buf).context("reading the NTS-KE response")?;
        if n == 0 {
            bail!("the server closed the connection before its response ended");
        }
        msg.extend_from_slice(&buf[..n]);
        if msg.len() > nts::MAX_KE_MESSAGE {
            bail!("the NTS-KE response is too long");
        }
        if let Some(r) = nts::parse_ke_response(&msg, aeads).map_err(|e| anyhow!("{e}"))? {
            break r;
        }
    };
    let export = |compliant: bool| export_keys(&s.conn, response.aead, compliant);
    let keys = export(response.compliant_128gcm)?;
    // AES-128-GCM-SIV without the server's word: chrony 4.4-4.6 (the keys above), or a
    // server exporting the RFC's way without knowing chrony's record.
    let alternative = (response.aead == Aead::Aes128GcmSiv && !response.compliant_128gcm)
        .then(|| export(true))
        .transpose()?;
    s.conn.send_close_notify();
    let _ = s.flush();
    Ok(Exchanged {
        keys,
        alternative,
        response,
    })
}

/// A TLS client configuration that trusts no certificate (for tests that never get
/// that far).
#[cfg(test)]
pub(crate) fn trusting_nothing() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_session_keeps_the_ntp_server_it_was_named() {
        let (rest, named, source) =
            split_named("v\nk1\nk2\nc1\nsource 198.18.0.1:123\nntp-server 198.18.0.9:1123\n");
        assert_eq!(rest, "v\nk1\nk2\nc1\n");
        assert_eq!(named, Some("198.18.0.9:1123".parse().unwrap()));
        assert_eq!(source, Some("198.18.0.1:123".parse().unwrap()));
        assert_eq!(split_named("v\nc\n"), ("v\nc\n".to_string(), None, None));
    }

    #[test]
    fn a_saved_session_is_taken_once_and_by_its_own_source() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = NtsContext {
            tls: Mutex::new(HashMap::new()),
            trusted: (Vec::new(), false),
            servers: Mutex::new(HashMap::new()),
            named: Mutex::new(HashMap::new()),
            dump_dir: Some(dir.path().to_path_buf()),
            aeads: Aead::ALL.to_vec(),
        };
        let keys = SessionKeys::new(Aead::Aes128GcmSiv, &[1; 16], &[2; 16]).unwrap();
        let session = ClientSession::new(keys, vec![vec![7; 64]], [0; 16]);
        let (a, b): (SocketAddr, SocketAddr) = (
            "198.18.0.1:123".parse().unwrap(),
            "198.18.0.2:123".parse().unwrap(),
        );
        let named = Some("198.18.0.9:1123".parse().unwrap());
        // Each member of a pool keeps its own.
        ctx.save("pool.test", a, &session.dump(), named);
        ctx.save("pool.test", b, &session.dump(), None);
        assert!(dir.path().join("pool.test@198.18.0.1.nts").is_file());
        let (restored, n) = ctx.take_saved("pool.test", a).unwrap();
        assert_eq!((restored.cookies(), n), (1, named));
        assert!(ctx.take_saved("pool.test", a).is_none(), "taken once");
        assert_eq!(ctx.take_saved("pool.test", b).unwrap().1, None);
        // A file of an earlier version (by name alone, no source line) is taken once by
        // a member; one naming another source is not taken.
        std::fs::write(dir.path().join("pool.test.nts"), session.dump()).unwrap();
        assert!(ctx.take_saved("pool.test", b).is_some());
        assert!(ctx.take_saved("pool.test", a).is_none());
        let other = format!("{}source 198.18.0.1:123\n", session.dump());
        std::fs::write(dir.path().join("pool.test.nts"), other).unwrap();
        assert!(
            ctx.take_saved("pool.test", b).is_none(),
            "a pool's other member"
        );
    }

    #[test]
    fn a_server_sending_a_byte_at_a_time_cannot_hold_the_nts_ke() {
        // A listener that never completes a handshake: a byte every 100 ms, for ever.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = listener.accept() {
                // A TLS record header announcing a long handshake message, then its body
                // slowly.
                let _ = c.write_all(&[22, 3, 3, 0x40, 0]);
                while c.write_all(&[0]).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let tls = trusting_nothing();
        let start = std::time::Instant::now();
        let limit = Duration::from_millis(1500);
        let e = key_exchange_within(
            tls,
            "localhost",
            Some([127, 0, 0, 1].into()),
            port,
            &Aead::ALL,
            limit,
        )
        .unwrap_err();
        let took = start.elapsed();
        assert!(took < limit + Duration::from_secs(1), "{took:?}: {e:#}");
        // Timed out without a TLS answer: retried as soon as an unreachable server.
        assert!(e.downcast_ref::<Unreached>().is_some(), "{e:#}");
    }

    #[test]
    fn asn1_times_are_unix_seconds() {
        assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(asn1_time(0x17, b"261130154500Z"), Some(1_796_053_500));
        assert_eq!(asn1_time(0x18, b"20261130154500Z"), Some(1_796_053_500));
        assert_eq!(asn1_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(asn1_time(0x18, b"2026113015Z"), None);
        assert_eq!(asn1_time(0x17, b"26113015450Z"), None);
        assert_eq!(der(&[0x30, 0x82, 0x01]), None, "a length past the end");
    }
}
