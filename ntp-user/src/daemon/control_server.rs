//! The control transports: the Unix socket (every command) and the UDP command port
//! (read-only commands), each answering with [`Shared::handle_control`].

use super::{bind::bind_each, shared::Shared};
use anyhow::{Context, Result, anyhow, bail};
use ntp_common::{ClientRecord, RateVerdict};
use ntp_proto::{
    acl::{AccessTable, Action},
    config::Config,
    control::{self, MAX_DATAGRAM, MAX_REQUEST, Request, Response},
};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::Arc,
};
use tokio::net::{UdpSocket, UnixListener, UnixStream};
use tracing::{debug, error, info, warn};

/// How long a control client may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The UDP command port (read-only commands): on `bindcmdaddress` addresses, by default
/// localhost only; nothing with `cmdport 0`.
pub(super) fn bind_cmd_ports(config: &Config) -> Result<Vec<UdpSocket>> {
    if config.cmdport == 0 {
        return Ok(Vec::new());
    }
    let local = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    bind_each(
        &config.cmd_addresses,
        local,
        config.cmdport,
        "read-only commands",
        |sa| {
            let s = std::net::UdpSocket::bind(sa)
                .with_context(|| format!("binding the command port {sa}"))?;
            s.set_nonblocking(true)?;
            Ok(UdpSocket::from_std(s)?)
        },
    )
}

/// The Unix control socket at `path`, readable and writable by owner and group; `None`
/// (logged) when its directory could let other users in, as chrony disables it.
pub(super) fn bind_control(path: &Path) -> Result<Option<UnixListener>> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .with_context(|| {
                    format!("creating the control socket directory {}", dir.display())
                })?;
        }
        if let Err(e) = check_socket_dir(dir) {
            error!("{e}; control socket {} disabled", path.display());
            return Ok(None);
        }
    }
    // A socket left by a crashed daemon would make bind fail; a live daemon holds the pidfile.
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("restricting {}", path.display()))?;
    info!("Control socket at {}", path.display());
    Ok(Some(l))
}

/// The control socket's directory must be ours (or root's) and closed to other users:
/// anyone who can write there could replace the socket, anyone who can search it could
/// connect and change the clock.
fn check_socket_dir(dir: &Path) -> Result<()> {
    let md =
        std::fs::symlink_metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !md.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if md.mode() & 0o007 != 0 {
        bail!(
            "wrong permissions on {} ({:o}: other users have access)",
            dir.display(),
            md.mode() & 0o777
        );
    }
    let euid = nix::unistd::geteuid().as_raw();
    if md.uid() != euid && md.uid() != 0 {
        bail!(
            "wrong owner of {} (uid {} is neither {euid} nor root)",
            dir.display(),
            md.uid()
        );
    }
    // Members of a group that may write there could replace the socket.
    let egid = nix::unistd::getegid().as_raw();
    if md.mode() & 0o020 != 0 && md.gid() != egid {
        bail!(
            "wrong group of {} (gid {} may write there, ours is {egid})",
            dir.display(),
            md.gid()
        );
    }
    Ok(())
}

/// What the UDP command port answers, and to whom.
pub struct CommandPolicy<A: Fn(IpAddr) -> bool> {
    /// `cmdallow`/`cmddeny` (localhost is always allowed, as in chrony).
    pub allowed: A,
    /// `opencommands`: the commands answered.
    pub open: Vec<String>,
    /// `cmdratelimit`, per host; localhost is never limited.
    pub limit: ntp_common::RateLimit,
}

/// The command port's policy from the configuration.
pub(super) fn cmd_policy(
    config: &Config,
) -> Result<CommandPolicy<impl Fn(IpAddr) -> bool + use<>>> {
    let acl = AccessTable::from_rules(&config.cmd_acl_rules, crate::sources::resolve::resolve_name)
        .map_err(|e| anyhow!("cmdallow/cmddeny: {e}"))?;
    Ok(CommandPolicy {
        allowed: move |ip: IpAddr| ip.is_loopback() || acl.check(ip) == Action::Allow,
        open: config.open_commands.clone(),
        limit: config.cmd_ratelimit,
    })
}

/// Hosts the command port's rate limit remembers; the least recent makes room.
const LIMITED_HOSTS: usize = 1024;

/// Per-host token buckets of the command port.
#[derive(Default)]
struct HostLimits(HashMap<IpAddr, ClientRecord>);

impl HostLimits {
    /// Whether a request from `ip` at monotonic `now_ns` is within `limit`.
    fn admit(&mut self, ip: IpAddr, now_ns: u64, limit: &ntp_common::RateLimit) -> bool {
        if !self.0.contains_key(&ip)
            && self.0.len() >= LIMITED_HOSTS
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, r)| r.last_tai_ns)
                .map(|(k, _)| *k)
        {
            self.0.remove(&oldest);
        }
        let r = self.0.entry(ip).or_default();
        let verdict = limit.check(r, now_ns, || crate::net::random_u64() as u32);
        r.hit(now_ns, verdict != RateVerdict::Answer);
        verdict == RateVerdict::Answer
    }
}

/// The reply to one datagram, or nothing (see [`control::udp_answer`]).
fn udp_reply<F>(datagram: &[u8], open: &[String], handle: &F) -> Option<Vec<u8>>
where
    F: Fn(Result<Request>) -> Response,
{
    control::udp_answer(datagram, open, |r| handle(r.map_err(|e| anyhow!(e))))
}

/// Serves the open monitoring commands on a UDP socket (chrony's cmdport) to the hosts
/// `policy` admits, within its rate limit; others get no answer. `handle` sees every
/// request (refused ones as errors).
pub async fn serve_udp<A, F>(sock: UdpSocket, policy: CommandPolicy<A>, handle: F)
where
    A: Fn(IpAddr) -> bool,
    F: Fn(Result<Request>) -> Response + Send + Sync + Clone + 'static,
{
    let open = Arc::new(policy.open.clone());
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut limits = HostLimits::default();
    loop {
        let (len, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!("Command port: {e}");
                continue;
            }
        };
        let ip = crate::net::canonical_ip(src.ip());
        // Port 0 cannot be answered; an oversized datagram is no ntpxc request.
        if src.port() == 0 || len > MAX_DATAGRAM {
            continue;
        }
        if !(policy.allowed)(ip) {
            handle(Err(anyhow!(
                "command from {src} denied by cmdallow/cmddeny"
            )));
            continue;
        }
        let now = crate::clock::monotonic_ns().unwrap_or_default();
        if !ip.is_loopback() && !limits.admit(ip, now, &policy.limit) {
            continue;
        }
        // Reports may take a while (a client log of many thousand records): off the
        // thread that keeps time.
        let (datagram, open, handle) = (buf[..len].to_vec(), open.clone(), handle.clone());
        let reply = tokio::task::spawn_blocking(move || udp_reply(&datagram, &open, &handle)).await;
        if let Ok(Some(out)) = reply {
            let _ = sock.send_to(&out, src).await;
        }
    }
}

/// Control connections served at once; more are closed at once (a client that opens many
/// and sends nothing must not pile up tasks).
const MAX_CONNECTIONS: usize = 16;

/// Serves control connections on `listener`, answering each request with `handle`.
pub async fn serve<F>(listener: UnixListener, handle: F)
where
    F: Fn(Result<Request>) -> Response + Send + Sync + Clone + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("Control socket accept failed: {e}");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("Control connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, handle).await {
                debug!("Control connection: {e:#}");
            }
            drop(slot);
        });
    }
}

/// One request, one response, all of it off the thread that keeps time: reading,
/// answering (a report of many thousand clients), encoding and writing (megabytes).
async fn answer<F>(stream: UnixStream, handle: F) -> Result<()>
where
    F: Fn(Result<Request>) -> Response + Send + 'static,
{
    let stream = stream.into_std().context("taking the control connection")?;
    tokio::task::spawn_blocking(move || answer_blocking(&stream, &handle))
        .await
        .context("answering the control request")?
}

fn answer_blocking<F>(stream: &std::os::unix::net::UnixStream, handle: &F) -> Result<()>
where
    F: Fn(Result<Request>) -> Response,
{
    use std::io::{Read, Write};
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    // One deadline for the whole request: a client trickling bytes cannot hold the
    // connection (and its thread) longer.
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let mut line = Vec::new();
    let mut chunk = [0u8; 1024];
    while !line.contains(&b'\n') && line.len() <= MAX_REQUEST {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            bail!("control client sent no complete request within 5 s");
        }
        stream.set_read_timeout(Some(left))?;
        let n = (&*stream)
            .read(&mut chunk)
            .context("reading the control request")?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&chunk[..n]);
    }
    if let Some(end) = line.iter().position(|b| *b == b'\n') {
        line.truncate(end);
    }
    let request = control::decode_request(line.trim_ascii()).map_err(anyhow::Error::from);
    let mut out = control::encode_response(&handle(request));
    out.push(b'\n');
    (&*stream)
        .write_all(&out)
        .context("writing control response (the client took none within 5 s)")?;
    Ok(())
}

/// Starts the control transports the configuration asks for, answering from `sh`.
pub(super) fn start(sh: &Arc<Shared>, tasks: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    if let Some(path) = &sh.config.cmd_socket
        && let Some(listener) = bind_control(path)?
    {
        sh.socket_bound
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let sh = sh.clone();
        tasks.spawn(async move {
            serve(listener, move |req| sh.handle_control(req)).await;
            Ok(())
        });
    }
    for sock in bind_cmd_ports(&sh.config)? {
        let policy = cmd_policy(&sh.config)?;
        let sh = sh.clone();
        tasks.spawn(async move {
            serve_udp(sock, policy, move |req| sh.handle_control(req)).await;
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::report::{TrackingReport, stats::ServerStats};

    /// Runs a blocking ntpxc call off the runtime's thread.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    fn policy(allow: bool, open: &[&str]) -> CommandPolicy<impl Fn(IpAddr) -> bool> {
        CommandPolicy {
            allowed: move |ip: IpAddr| allow && ip.is_loopback(),
            open: open.iter().map(|c| (*c).to_string()).collect(),
            limit: ntp_proto::config::Config::default().cmd_ratelimit,
        }
    }

    fn tracking_only(req: Result<Request>) -> Response {
        match req {
            Ok(Request::Tracking) => Response::Tracking(TrackingReport::default()),
            Ok(other) => Response::Error(format!("unexpected {other:?}")),
            Err(e) => Response::Error(e.to_string()),
        }
    }

    #[tokio::test]
    async fn udp_serves_open_commands_to_allowed_hosts() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(serve_udp(sock, policy(true, &["tracking"]), tracking_only));
        let r = blocking(move || ntpxc::client::call_udp(addr, &Request::Tracking)).await;
        assert!(matches!(r.unwrap(), Response::Tracking(_)));
        for req in [Request::Burst, Request::Clients] {
            let r = blocking(move || ntpxc::client::call_udp(addr, &req)).await;
            let Response::Error(e) = r.unwrap() else {
                panic!()
            };
            assert!(e.contains("not open on the command port"), "{e}");
        }

        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(serve_udp(sock, policy(false, &["tracking"]), |_| {
            Response::Ok
        }));
        let r = blocking(move || ntpxc::client::call_udp(addr, &Request::Tracking)).await;
        assert!(r.is_err(), "a denied host gets no answer");
    }

    #[test]
    fn a_reply_is_never_larger_than_its_request() {
        let open = vec!["tracking".to_string()];
        let bare = control::encode_request(&Request::Tracking);
        let full = control::encode_response(&tracking_only(Ok(Request::Tracking)));
        assert!(
            full.len() > bare.len(),
            "the test needs a reply larger than the request"
        );
        // Too short even to say the reply needs more room: nothing at all.
        assert_eq!(udp_reply(b"{}", &open, &tracking_only), None);
        // Unpadded: only the answer that the reply needs more room, no larger than the
        // request.
        let r = udp_reply(&bare, &open, &tracking_only).expect("a short answer");
        assert!(r.len() <= bare.len());
        assert_eq!(
            control::decode_response(&r).unwrap(),
            Response::TooLarge(full.len())
        );
        let mut padded = bare.clone();
        // Padded to that size: the reply.
        padded.resize(full.len(), b' ');
        assert_eq!(udp_reply(&padded, &open, &tracking_only), Some(full));
    }

    #[test]
    fn the_command_port_limits_each_host() {
        // chrony's cmdratelimit defaults: 16 a second after a burst of 8.
        let limit = ntp_proto::config::Config::default().cmd_ratelimit;
        let mut limits = HostLimits::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let answered = (0..1000)
            .filter(|i| limits.admit(ip, 1_000_000_000 + i * 1000, &limit))
            .count();
        // Eight from the burst, and about one in four of the rest leaks (leak 2).
        assert!((8..400).contains(&answered), "{answered}");
        assert!(
            limits.admit(other, 1_000_001_000, &limit),
            "another host has its own bucket"
        );
        // A second later there are tokens again.
        assert!(limits.admit(ip, 3_000_000_000, &limit));
    }

    #[test]
    fn the_socket_directory_must_be_closed_to_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(check_socket_dir(dir.path()).is_ok());
        // Group-writable is fine for our own group (the test runs as its owner).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(check_socket_dir(dir.path()).is_ok());
        // Handing the directory to another group needs root (as `cargo xtask test` runs).
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(dir.path(), None, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
            let e = check_socket_dir(dir.path()).unwrap_err().to_string();
            assert!(e.contains("wrong group"), "{e}");
            nix::unistd::chown(dir.path(), None, Some(nix::unistd::getegid())).unwrap();
        } else {
            println!("not root: the foreign-group case is checked only as root");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_socket_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("wrong permissions"), "{e}");
        let sock = dir.path().join("s.sock");
        assert!(
            bind_control(&sock).unwrap().is_none(),
            "disabled, as chrony does"
        );
        assert!(!sock.exists());
    }

    #[tokio::test]
    async fn a_request_is_answered_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(serve(listener, |req| match req {
            Ok(Request::Serverstats) => Response::Serverstats(ServerStats {
                ntp_received: 7,
                ..Default::default()
            }),
            Ok(other) => Response::Error(format!("unexpected {other:?}")),
            Err(e) => Response::Error(e.to_string()),
        }));
        let p = path.clone();
        let resp = blocking(move || ntpxc::client::call(&p, &Request::Serverstats))
            .await
            .unwrap();
        let Response::Serverstats(s) = resp else {
            panic!("{resp:?}")
        };
        assert_eq!(s.ntp_received, 7);
    }
}
