//! The control transports: the Unix socket (every command) and the UDP command port
//! (read-only commands), each answering with [`Shared::handle_control`].

use super::{bind::bind_each, shared::Shared};
use anyhow::{Context, Result, anyhow};
use ntp_proto::{
    acl::{AccessTable, Action},
    config::Config,
    control::{self, MAX_DATAGRAM, MAX_REQUEST, Request, Response},
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::Arc,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UdpSocket, UnixListener, UnixStream},
};
use tracing::{debug, info, warn};

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

/// The Unix control socket at `path`, readable and writable by owner and group.
pub(super) fn bind_control(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the control socket directory {}", dir.display()))?;
    }
    // A socket left by a crashed daemon would make bind fail; a live daemon holds the pidfile.
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("restricting {}", path.display()))?;
    info!("Control socket at {}", path.display());
    Ok(l)
}

/// Who may use the UDP command port: `cmdallow`/`cmddeny`, and localhost always, as in
/// chrony.
pub(super) fn cmd_access(config: &Config) -> Result<impl Fn(IpAddr) -> bool + use<>> {
    let acl = AccessTable::from_rules(&config.cmd_acl_rules, crate::sources::resolve::resolve_name)
        .map_err(|e| anyhow!("cmdallow/cmddeny: {e}"))?;
    Ok(move |ip: IpAddr| ip.is_loopback() || acl.check(ip) == Action::Allow)
}

/// Serves read-only commands on a UDP socket (chrony's cmdport) to sources `allowed`
/// admits; others get no answer. `handle` sees every request (denied ones as errors).
pub async fn serve_udp<F>(sock: UdpSocket, allowed: impl Fn(IpAddr) -> bool, handle: F)
where
    F: Fn(Result<Request>) -> Response,
{
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let (len, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!("Command port: {e}");
                continue;
            }
        };
        if !allowed(crate::net::canonical_ip(src.ip())) {
            handle(Err(anyhow!(
                "command from {src} denied by cmdallow/cmddeny"
            )));
            continue;
        }
        let response = match control::decode_request(buf[..len].trim_ascii()) {
            Ok(r) if !r.is_read_only() => {
                handle(Err(anyhow!("{r:?} is only accepted on the Unix socket")))
            }
            other => handle(other.map_err(anyhow::Error::from)),
        };
        let out = control::encode_response(&response);
        if out.len() <= MAX_DATAGRAM {
            let _ = sock.send_to(&out, src).await;
        }
    }
}

/// Serves control connections on `listener`, answering each request with `handle`.
pub async fn serve<F>(listener: UnixListener, handle: F)
where
    F: Fn(Result<Request>) -> Response + Send + Sync + Clone + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("Control socket accept failed: {e}");
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, handle).await {
                debug!("Control connection: {e:#}");
            }
        });
    }
}

/// One request, one response.
async fn answer<F>(stream: UnixStream, handle: F) -> Result<()>
where
    F: Fn(Result<Request>) -> Response,
{
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64 + 1);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .context("control client sent nothing within 5 s")??;
    let request = control::decode_request(line.trim_ascii()).map_err(anyhow::Error::from);
    let mut out = control::encode_response(&handle(request));
    out.push(b'\n');
    w.write_all(&out)
        .await
        .context("writing control response")?;
    Ok(())
}

/// Starts the control transports the configuration asks for, answering from `sh`.
pub(super) fn start(sh: &Arc<Shared>, tasks: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    if let Some(path) = &sh.config.cmd_socket {
        let listener = bind_control(path)?;
        let sh = sh.clone();
        tasks.spawn(async move {
            serve(listener, move |req| sh.handle_control(req)).await;
            Ok(())
        });
    }
    for sock in bind_cmd_ports(&sh.config)? {
        let allowed = cmd_access(&sh.config)?;
        let sh = sh.clone();
        tasks.spawn(async move {
            serve_udp(sock, allowed, |req| sh.handle_control(req)).await;
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

    #[tokio::test]
    async fn udp_serves_read_only_commands_to_allowed_hosts() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(serve_udp(
            sock,
            |ip| ip.is_loopback(),
            |req| match req {
                Ok(Request::Tracking) => Response::Tracking(TrackingReport::default()),
                Ok(other) => Response::Error(format!("unexpected {other:?}")),
                Err(e) => Response::Error(e.to_string()),
            },
        ));
        let r = blocking(move || ntpxc::client::call_udp(addr, &Request::Tracking)).await;
        assert!(matches!(r.unwrap(), Response::Tracking(_)));
        let r = blocking(move || ntpxc::client::call_udp(addr, &Request::Burst)).await;
        let Response::Error(e) = r.unwrap() else {
            panic!()
        };
        assert!(e.contains("only accepted on the Unix socket"), "{e}");

        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(serve_udp(sock, |_| false, |_| Response::Ok));
        let r = blocking(move || ntpxc::client::call_udp(addr, &Request::Tracking)).await;
        assert!(r.is_err(), "a denied host gets no answer");
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
