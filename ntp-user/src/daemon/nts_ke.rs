//! The NTS-KE server (RFC 8915 section 4): TLS 1.3 on `ntsport` (4460), ALPN `ntske/1`;
//! each client gets the NTP keys exported from its TLS session sealed into eight cookies
//! under the server's cookie keys, which persist in `ntsdumpdir`.
//!
//! Connections are served on threads of their own, at most `maxntsconnections` at once,
//! never on the timekeeping thread.

use super::shared::Shared;
use crate::net::random_bytes;
use anyhow::{Context, Result, anyhow, bail};
use ntp_common::RateVerdict;
use ntp_proto::{
    config::{Config, NtsServerConfig},
    nts::{self, CookieKeys, NONCE_LEN, ServerKey},
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tracing::{debug, info, warn};

/// How long a client may take over its exchange.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The file in `ntsdumpdir` holding the cookie keys.
const KEYS_FILE: &str = "ntpx-nts-keys";

/// The cookie keys: read from `ntsdumpdir` if it holds them, else new ones (saved there).
pub(super) fn cookie_keys(nts: &NtsServerConfig) -> Result<CookieKeys> {
    if let Some(dir) = &nts.dump_dir {
        let path = dir.join(KEYS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let keys = parse_keys(&text)
                    .with_context(|| format!("reading the NTS keys in {}", path.display()))?;
                if let Some(k) = CookieKeys::from_keys(keys) {
                    info!("NTS cookie keys read from {}", path.display());
                    return Ok(k);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    let keys = CookieKeys::new(new_key(1)?);
    save_keys(nts, &keys);
    Ok(keys)
}

/// When the newest cookie key was made (Unix seconds): the key file is written when a
/// key is made, so its modification time says (chronyd keeps the key's age likewise);
/// without the file, now. The rotation schedule goes on from it across restarts, or a
/// daemon restarted more often than `ntsrotate` would never rotate.
fn newest_key_made(nts: &NtsServerConfig) -> u64 {
    dump_path(nts)
        .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(unix_now, |d| d.as_secs())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long until the next rotation of keys whose newest was made at `created`: the
/// rest of `every`, nothing if overdue (a clock set back counts as just made).
fn until_rotation(created: u64, now: u64, every: u64) -> Duration {
    let age = now.saturating_sub(created);
    Duration::from_secs(every.saturating_sub(age))
}

/// A new cookie key: AES-128-GCM-SIV, as chrony makes them (shorter cookies, and the
/// cheaper algorithm for the two cookie operations of every request).
fn new_key(id: u32) -> Result<ServerKey> {
    let mut key = [0u8; 16];
    random_bytes(&mut key)?;
    ServerKey::new(id, &key).ok_or_else(|| anyhow!("a cookie key of the wrong length"))
}

/// Saves the keys in `ntsdumpdir`, readable by the daemon's user alone; a failure only
/// costs the clients' cookies at the next start.
fn save_keys(nts: &NtsServerConfig, keys: &CookieKeys) {
    let Some(dir) = &nts.dump_dir else { return };
    let mut text = String::new();
    for k in keys.keys() {
        let hex: String = k.bytes().iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!("{} {hex}\n", k.id));
    }
    let path = dir.join(KEYS_FILE);
    if let Err(e) = crate::os::atomic_file::write_atomically_mode(&path, text.as_bytes(), 0o600) {
        warn!("Could not save the NTS cookie keys: {e:#}");
    }
}

fn parse_keys(text: &str) -> Result<Vec<ServerKey>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (id, hex) = l.split_once(' ').ok_or_else(|| anyhow!("malformed line"))?;
            let id: u32 = id.parse().context("key id")?;
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
                .collect::<Result<_, _>>()
                .context("key")?;
            // 16 bytes: AES-128-GCM-SIV; 32: AES-SIV-CMAC-256 (saved by earlier
            // versions, whose cookies clients still hold).
            ServerKey::new(id, &bytes)
                .ok_or_else(|| anyhow!("a key of {} bytes (expected 16 or 32)", bytes.len()))
        })
        .collect()
}

/// Replaces the sealing cookie key every `ntsrotate` seconds (the previous ones keep
/// opening the cookies clients hold), saving the keys each time. Runs for the daemon's
/// life (started only with NTS on and a non-zero interval).
pub(super) async fn rotate_keys(sh: Arc<Shared>) -> Result<()> {
    let every = sh.config.nts_server.rotate_secs.max(1);
    let created = newest_key_made(&sh.config.nts_server);
    let mut wait = until_rotation(created, unix_now(), every);
    if wait < Duration::from_secs(every) {
        info!("NTS cookie key rotation due in {} s", wait.as_secs());
    }
    loop {
        tokio::time::sleep(wait).await;
        wait = Duration::from_secs(every);
        let sh = sh.clone();
        let rotated = tokio::task::spawn_blocking(move || -> Result<u32> {
            // Built and saved outside the lock: a request's reply never waits on the
            // key's generation or the file's fsync.
            let Some(mut keys) = sh.secrets().cookies.clone() else {
                return Ok(0);
            };
            let id = keys
                .keys()
                .iter()
                .map(|k| k.id)
                .max()
                .unwrap_or(0)
                .wrapping_add(1);
            keys.rotate(new_key(id)?);
            sh.secrets
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .cookies = Some(keys.clone());
            save_keys(&sh.config.nts_server, &keys);
            Ok(id)
        })
        .await;
        match rotated {
            Ok(Ok(id)) => info!("NTS cookie key {id} in use"),
            Ok(Err(e)) => warn!("Could not rotate the NTS cookie key: {e:#}"),
            Err(e) => warn!("Rotating the NTS cookie key failed: {e}"),
        }
    }
}

/// The TLS configuration from `ntsservercert`/`ntsserverkey` (the first pair: ntpx serves
/// one certificate), TLS 1.3 only, ALPN `ntske/1`.
fn tls_config(nts: &NtsServerConfig) -> Result<Arc<rustls::ServerConfig>> {
    let (Some(cert), Some(key)) = (nts.certs.first(), nts.keys.first()) else {
        bail!("no ntsservercert and ntsserverkey");
    };
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("reading the NTS server key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the NTS server certificate and key do not go together")?;
    c.alpn_protocols = vec![nts::ALPN.to_vec()];
    Ok(Arc::new(c))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow!("reading the NTS server certificate {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("reading the NTS server certificate {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

/// Binds the NTS-KE port (on the `bindaddress` addresses, else every address of each
/// family) and serves it on threads. Called before privileges are dropped: the
/// certificate and key are read here.
pub(super) fn start(sh: &Arc<Shared>) -> Result<()> {
    let nts = &sh.config.nts_server;
    if !nts.enabled() {
        return Ok(());
    }
    let tls = tls_config(nts)?;
    // One count for every listener: maxntsconnections is the daemon's, not a port's.
    let active = Arc::new(AtomicUsize::new(0));
    for listener in bind(&sh.config)? {
        let (sh, tls, active) = (sh.clone(), tls.clone(), active.clone());
        std::thread::Builder::new()
            .name("nts-ke".into())
            .spawn(move || accept_loop(&sh, &tls, &listener, &active))
            .context("starting the NTS-KE thread")?;
    }
    Ok(())
}

fn bind(config: &Config) -> Result<Vec<TcpListener>> {
    let port = config.nts_server.port;
    let specific: Vec<IpAddr> = config
        .bind_addresses
        .iter()
        .copied()
        .filter(|a| !a.is_unspecified())
        .collect();
    let addrs: Vec<IpAddr> = if specific.is_empty() {
        vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
    } else {
        specific
    };
    let mut out = Vec::new();
    for a in addrs {
        let sa = SocketAddr::new(a, port);
        match listen(sa) {
            Ok(l) => {
                info!("Listening on {sa} for NTS-KE");
                out.push(l);
            }
            Err(e) if a.is_unspecified() => warn!("Not listening on {sa} for NTS-KE: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        bail!("could not open the NTS-KE port {port}");
    }
    Ok(out)
}

/// A TCP listener on `sa` (IPv6-only for an IPv6 address, bindable before the address
/// exists, as the NTP sockets are).
fn listen(sa: SocketAddr) -> Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let family = if sa.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .with_context(|| format!("creating a TCP socket for {sa}"))?;
    if sa.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).context("setting IPV6_V6ONLY")?;
    }
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("setting SO_REUSEADDR")?;
    setsockopt(&fd, sockopt::IpFreebind, &true).context("setting IP_FREEBIND")?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(sa)).with_context(|| format!("binding {sa}"))?;
    listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))
        .with_context(|| format!("listening on {sa}"))?;
    Ok(TcpListener::from(fd))
}

fn accept_loop(
    sh: &Arc<Shared>,
    tls: &Arc<rustls::ServerConfig>,
    listener: &TcpListener,
    active: &Arc<AtomicUsize>,
) {
    crate::os::lower_thread_priority();
    let max = sh.config.nts_server.max_connections;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                debug!("NTS-KE accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // As chronyd: the NTP access rules apply (a denied client is closed on, not
        // counted), then the connection is counted and `ntsratelimit` applied.
        if sh.acl.check(peer.ip()) != ntp_proto::acl::Action::Allow {
            debug!("NTS-KE connection from {peer} refused: access denied");
            continue;
        }
        super::counters::bump(&sh.counters.nts_ke_accepted);
        // Logged only to be limited (nothing reports the NTS-KE clients).
        let rate = match sh.config.nts_ratelimit {
            Some(_) => {
                let now = crate::clock::tai_ns().unwrap_or(0);
                let ip = ntp_proto::acl::canonical_ip(peer.ip());
                sh.nts_ke_clients.log(ip, now, &sh.counters).0
            }
            None => RateVerdict::Answer,
        };
        if rate != RateVerdict::Answer {
            debug!("NTS-KE connection from {peer} refused: rate limit");
            super::counters::bump(&sh.counters.nts_ke_dropped);
            continue;
        }
        if active.load(Ordering::Relaxed) >= max {
            super::counters::bump(&sh.counters.nts_ke_dropped);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (sh, tls, mine) = (sh.clone(), tls.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("nts-ke-conn".into())
            .spawn(move || {
                crate::os::lower_thread_priority();
                if let Err(e) = serve(&sh, tls, stream) {
                    debug!("NTS-KE with {peer}: {e:#}");
                }
                mine.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            // Its slot back: the connection was never served.
            active.fetch_sub(1, Ordering::Relaxed);
            warn!("Could not start an NTS-KE connection thread: {e}");
        }
    }
}

/// What is left of a session's time, or an error once it is spent: the timeout covers
/// the whole session (handshake, request, response), as chrony's does, so a client
/// trickling bytes cannot hold a connection.
fn remaining(deadline: std::time::Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        bail!("the NTS-KE session took longer than {TIMEOUT:?}");
    }
    Ok(left)
}

/// One NTS-KE exchange: the request read in full, the keys exported, the cookies sent.
fn serve(sh: &Shared, tls: Arc<rustls::ServerConfig>, tcp: TcpStream) -> Result<()> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let conn = rustls::ServerConnection::new(tls).context("TLS session")?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut msg = Vec::new();
    let mut buf = [0u8; 1024];
    let request = loop {
        let left = remaining(deadline)?;
        s.sock.set_read_timeout(Some(left))?;
        s.sock.set_write_timeout(Some(left))?;
        let n = s.read(&mut buf).context("reading the NTS-KE request")?;
        if s.conn.alpn_protocol() != Some(nts::ALPN) {
            bail!(
                "the client did not negotiate {}",
                String::from_utf8_lossy(nts::ALPN)
            );
        }
        if n == 0 {
            bail!("connection closed before the request ended");
        }
        msg.extend_from_slice(&buf[..n]);
        if msg.len() > nts::MAX_KE_MESSAGE {
            bail!("request too long");
        }
        match nts::parse_ke_request(&msg) {
            Ok(Some(r)) => break Ok(r),
            Ok(None) => {}
            Err(code) => break Err(code),
        }
    };
    let chosen = request.map(|req| {
        let aead = nts::choose_aead(&req, &sh.config.nts_aeads);
        (req, aead)
    });
    let reply = match chosen {
        Ok((req, None)) => nts::ke_refusal(&req),
        Ok((req, Some(aead))) => {
            let compliant = nts::request_compliant(&req, aead);
            let session = crate::sources::nts_ke::export_keys(&s.conn, aead, compliant)?;
            debug!("NTS-KE: AEAD {} (compliant export: {compliant})", aead.id());
            let mut cookies = Vec::with_capacity(nts::MAX_COOKIES);
            for _ in 0..nts::MAX_COOKIES {
                let mut nonce = [0u8; NONCE_LEN];
                random_bytes(&mut nonce)?;
                let secrets = sh.secrets();
                let keys = secrets
                    .cookies
                    .as_ref()
                    .ok_or_else(|| anyhow!("no cookie keys"))?;
                cookies.push(keys.seal(&session, &nonce));
            }
            let server = sh.config.nts_server.ntp_server.as_deref();
            let port = (sh.config.port != ntp_common::wire::NTP_PORT).then_some(sh.config.port);
            nts::ke_response(&req, aead, &cookies, server, port)
        }
        Err(code) => nts::ke_error(code),
    };
    let left = remaining(deadline)?;
    s.sock.set_write_timeout(Some(left))?;
    s.write_all(&reply).context("sending the NTS-KE response")?;
    s.conn.send_close_notify();
    s.flush().context("closing the TLS session")?;
    Ok(())
}

/// Where the keys are kept, for the log.
pub(super) fn dump_path(nts: &NtsServerConfig) -> Option<PathBuf> {
    nts.dump_dir.as_ref().map(|d| d.join(KEYS_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::nts::{Aead, SessionKeys};

    #[test]
    fn cookie_keys_survive_a_restart_in_the_dump_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nts = NtsServerConfig {
            dump_dir: Some(dir.path().to_path_buf()),
            ..NtsServerConfig::default()
        };
        let first = cookie_keys(&nts).unwrap();
        let created = newest_key_made(&nts);
        let path = dump_path(&nts).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = cookie_keys(&nts).unwrap();
        assert!(
            newest_key_made(&nts).abs_diff(created) <= 1,
            "the newest key's age is kept"
        );
        // The age is the file's: written when its newest key was made.
        let then = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(then)
            .unwrap();
        assert_eq!(newest_key_made(&nts), 1_600_000_000);
        let session = SessionKeys::new(Aead::AesSivCmac256, &[1; 32], &[2; 32]).unwrap();
        let cookie = first.seal(&session, &[7; NONCE_LEN]);
        assert_eq!(first.keys()[0].aead(), Aead::Aes128GcmSiv, "new keys");
        assert_eq!(
            again.open(&cookie),
            Some(session.clone()),
            "the same keys after a restart"
        );
        std::fs::write(&path, "1 zz\n").unwrap();
        assert!(cookie_keys(&nts).is_err(), "a damaged key file is an error");
        std::fs::write(&path, format!("1 {}\n", "ab".repeat(24))).unwrap();
        let e = cookie_keys(&nts).unwrap_err();
        assert!(format!("{e:#}").contains("24 bytes"), "{e:#}");
        // A key file of an earlier version (32-byte AES-SIV-CMAC-256 keys): its keys
        // still open the cookies they sealed, and a rotation adds a new kind of key.
        std::fs::write(&path, format!("5 {}\n", "42".repeat(32))).unwrap();
        let old = cookie_keys(&nts).unwrap();
        let mut earlier = CookieKeys::new(ServerKey::new(5, &[0x42; 32]).unwrap());
        let cookie = earlier.seal(&session, &[7; NONCE_LEN]);
        assert_eq!(old.open(&cookie), Some(session.clone()));
        earlier.rotate(new_key(6).unwrap());
        assert_eq!(earlier.open(&cookie), Some(session));
    }

    #[test]
    fn rotation_continues_on_the_schedule_of_the_saved_keys() {
        let week = 7 * 86400;
        assert_eq!(until_rotation(1000, 1000, week), Duration::from_secs(week));
        assert_eq!(
            until_rotation(1000, 1000 + week - 5, week),
            Duration::from_secs(5)
        );
        assert_eq!(until_rotation(1000, 1000 + 2 * week, week), Duration::ZERO);
        // A clock set back before the key was made: as if just made.
        assert_eq!(until_rotation(5000, 1000, week), Duration::from_secs(week));
    }
}
