//! The control protocol between `ntpxc` and `ntpxd`: one JSON request line, one JSON
//! response line, over a Unix stream socket (the path chrony calls `bindcmdaddress`).

use crate::report::{
    ActivityReport, ClientReport, NtpDataReport, SelectDataReport, SourceReport, SourceStatsReport,
    TrackingReport,
};
use crate::stats::{ServerStats, XdpStats};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 4096;

/// A control request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    /// Server counters (chronyc serverstats).
    Serverstats,
    /// The XDP fast path's attachment and counters.
    Xdpstats,
    /// The sources and their state (chronyc sources).
    Sources,
    /// The reference and the clock's state (chronyc tracking).
    Tracking,
    /// Per-source regression statistics (chronyc sourcestats).
    Sourcestats,
    /// How many sources are online (chronyc activity).
    Activity,
    /// Each source's state in selection (chronyc selectdata).
    Selectdata,
    /// Per-client request counts, kernel and daemon merged (chronyc clients).
    Clients,
    /// The last exchange with each source, or one (chronyc ntpdata).
    Ntpdata {
        /// Which source.
        address: Option<std::net::IpAddr>,
    },
    /// Poll every source now, four times (chronyc burst).
    Burst,
    /// Re-read the sourcedir files, adding and removing sources (chronyc reload sources).
    ReloadSources,
    /// Stop polling the source at `address` (all sources without one).
    Offline {
        /// Which source.
        address: Option<std::net::IpAddr>,
    },
    /// Resume polling (chronyc online).
    Online {
        /// Which source.
        address: Option<std::net::IpAddr>,
    },
    /// Step by the correction left (no arguments) or set makestep (chronyc makestep).
    Makestep {
        /// Threshold in seconds, with `limit`.
        threshold: Option<f64>,
        /// Update limit (-1: no limit).
        limit: Option<i32>,
    },
}

/// A control response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Answer to [`Request::Serverstats`].
    Serverstats(ServerStats),
    /// Answer to [`Request::Xdpstats`].
    Xdpstats(XdpStats),
    /// Answer to [`Request::Sources`].
    Sources(Vec<SourceReport>),
    /// Answer to [`Request::Tracking`].
    Tracking(TrackingReport),
    /// Answer to [`Request::Sourcestats`].
    Sourcestats(Vec<SourceStatsReport>),
    /// Answer to [`Request::Activity`].
    Activity(ActivityReport),
    /// Answer to [`Request::Clients`].
    Clients(Vec<ClientReport>),
    /// Answer to [`Request::Selectdata`].
    Selectdata(Vec<SelectDataReport>),
    /// Answer to [`Request::Ntpdata`].
    Ntpdata(Vec<NtpDataReport>),
    /// A command was carried out (chronyc's "200 OK").
    Ok,
    /// The request failed.
    Error(String),
}

impl Request {
    /// Whether the command only reads state (allowed over the UDP command port).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::Serverstats
                | Request::Xdpstats
                | Request::Sources
                | Request::Tracking
                | Request::Sourcestats
                | Request::Activity
                | Request::Ntpdata { .. }
                | Request::Selectdata
                | Request::Clients
        )
    }
}

/// Largest UDP command datagram.
const MAX_DATAGRAM: usize = 65_000;

/// Serves read-only commands on a UDP socket (chrony's cmdport) to sources `allowed`
/// admits; others get no answer. `handle` sees every request (denied ones as errors).
pub async fn serve_udp<F>(
    sock: tokio::net::UdpSocket,
    allowed: impl Fn(std::net::IpAddr) -> bool,
    handle: F,
) where
    F: Fn(Result<Request>) -> Response,
{
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let (len, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("Command port: {e}");
                continue;
            }
        };
        if !allowed(crate::net::canonical_ip(src.ip())) {
            handle(Err(anyhow::anyhow!(
                "command from {src} denied by cmdallow/cmddeny"
            )));
            continue;
        }
        let response = match decode_request(buf[..len].trim_ascii()) {
            Ok(r) if !r.is_read_only() => handle(Err(anyhow::anyhow!(
                "{r:?} is only accepted on the Unix socket"
            ))),
            other => handle(other),
        };
        if let Ok(out) = serde_json::to_vec(&response)
            && out.len() <= MAX_DATAGRAM
        {
            let _ = sock.send_to(&out, src).await;
        }
    }
}

/// Sends `req` to the daemon's UDP command port at `addr` (three tries, one second each).
pub async fn call_udp(addr: std::net::SocketAddr, req: &Request) -> Result<Response> {
    let any: std::net::SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(any)
        .await
        .context("binding a UDP socket")?;
    let out = serde_json::to_vec(req).context("encoding request")?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for _ in 0..3 {
        sock.send_to(&out, addr)
            .await
            .with_context(|| format!("sending to {addr}"))?;
        match tokio::time::timeout(std::time::Duration::from_secs(1), sock.recv_from(&mut buf))
            .await
        {
            Ok(Ok((n, from))) if from == addr => {
                return serde_json::from_slice(&buf[..n])
                    .with_context(|| format!("malformed response from {addr}"));
            }
            _ => continue,
        }
    }
    bail!("no response from {addr} (is ntpxd running, and is this host allowed by cmdallow?)")
}

/// Decodes one request line; errors say what was wrong with it.
pub fn decode_request(line: &[u8]) -> Result<Request> {
    if line.len() > MAX_REQUEST {
        bail!("request of {} bytes exceeds {MAX_REQUEST}", line.len());
    }
    serde_json::from_slice(line).context("malformed control request")
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
                tracing::warn!("Control socket accept failed: {e}");
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, handle).await {
                tracing::debug!("Control connection: {e:#}");
            }
        });
    }
}

async fn answer<F>(stream: UnixStream, handle: F) -> Result<()>
where
    F: Fn(Result<Request>) -> Response,
{
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        reader.read_until(b'\n', &mut line),
    )
    .await
    .context("control client sent nothing within 5 s")??;
    let _ = read;
    let response = handle(decode_request(line.trim_ascii()));
    let mut out = serde_json::to_vec(&response).context("encoding control response")?;
    out.push(b'\n');
    w.write_all(&out)
        .await
        .context("writing control response")?;
    Ok(())
}

/// Sends `req` to the daemon at `socket` and returns its response.
pub async fn call(socket: &Path, req: &Request) -> Result<Response> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "connecting to ntpxd at {} (is it running?)",
            socket.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut out = serde_json::to_vec(req).context("encoding request")?;
    out.push(b'\n');
    w.write_all(&out).await.context("sending request")?;
    w.shutdown().await.context("finishing request")?;
    let mut line = Vec::new();
    BufReader::new(r)
        .read_until(b'\n', &mut line)
        .await
        .context("reading response")?;
    serde_json::from_slice(&line)
        .with_context(|| format!("malformed response from {}", socket.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        assert_eq!(
            decode_request(br#"{"command":"serverstats"}"#).unwrap(),
            Request::Serverstats
        );
        assert_eq!(
            decode_request(br#"{"command":"xdpstats"}"#).unwrap(),
            Request::Xdpstats
        );
        assert!(decode_request(br#"{"command":"reboot"}"#).is_err());
        assert!(decode_request(b"\xff\x00garbage").is_err());
        assert!(decode_request(&vec![b' '; MAX_REQUEST + 1]).is_err());
    }

    #[tokio::test]
    async fn udp_serves_read_only_commands_to_allowed_hosts() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(serve_udp(
            sock,
            |ip| ip.is_loopback(),
            |req| match req {
                Ok(Request::Tracking) => Response::Tracking(Default::default()),
                Ok(other) => Response::Error(format!("unexpected {other:?}")),
                Err(e) => Response::Error(e.to_string()),
            },
        ));
        assert!(matches!(
            call_udp(addr, &Request::Tracking).await.unwrap(),
            Response::Tracking(_)
        ));
        let Response::Error(e) = call_udp(addr, &Request::Burst).await.unwrap() else {
            panic!()
        };
        assert!(e.contains("only accepted on the Unix socket"), "{e}");

        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(serve_udp(sock, |_| false, |_| Response::Ok));
        assert!(
            call_udp(addr, &Request::Tracking).await.is_err(),
            "a denied host gets no answer"
        );
    }

    #[tokio::test]
    async fn a_request_is_answered_over_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("ntpx-control-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(serve(listener, |req| match req {
            Ok(Request::Serverstats) => Response::Serverstats(ServerStats {
                ntp_received: 7,
                ..Default::default()
            }),
            Ok(other) => Response::Error(format!("unexpected {other:?}")),
            Err(e) => Response::Error(e.to_string()),
        }));
        let resp = call(&path, &Request::Serverstats).await.unwrap();
        let Response::Serverstats(s) = resp else {
            panic!("{resp:?}")
        };
        assert_eq!(s.ntp_received, 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
