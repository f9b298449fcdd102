//! Talking to ntpxd: one request and one response over its Unix control socket or its
//! UDP command port, with plain blocking sockets.

use anyhow::{Context, Result, bail};
use ntp_proto::control::{self, MAX_DATAGRAM, Request, Response, UDP_REQUEST_SIZE};
use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, UdpSocket},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

/// How long ntpxc waits for the daemon over its Unix socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each of the three UDP tries waits.
const UDP_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `req` to the daemon at `socket` and returns its response.
pub fn call(socket: &Path, req: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to ntpxd at {} (is it running?)",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(SOCKET_TIMEOUT))
        .context("setting a read timeout")?;
    let mut out = control::encode_request(req);
    out.push(b'\n');
    stream.write_all(&out).context("sending request")?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .context("finishing request")?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .read_until(b'\n', &mut line)
        .context("reading response")?;
    control::decode_response(&line)
        .with_context(|| format!("malformed response from {}", socket.display()))
}

/// Sends `req` to the daemon's UDP command port at `addr` (three tries, one second each).
/// The request is padded to one packet, and to what the reply needs when the daemon says
/// that is more (it never answers with more bytes than it received).
pub fn call_udp(addr: SocketAddr, req: &Request) -> Result<Response> {
    let mut size = UDP_REQUEST_SIZE;
    for _ in 0..2 {
        match call_udp_padded(addr, req, size)? {
            // Reports vary a little from one call to the next: some room to spare.
            Response::TooLarge(needed) if needed < MAX_DATAGRAM => {
                size = (needed + needed / 8 + 64).min(MAX_DATAGRAM);
            }
            Response::TooLarge(needed) => {
                bail!(
                    "the reply would be {needed} bytes, too large for the command port; use the Unix socket"
                )
            }
            r => return Ok(r),
        }
    }
    bail!("the reply kept growing beyond the request; use the Unix socket")
}

fn call_udp_padded(addr: SocketAddr, req: &Request, size: usize) -> Result<Response> {
    let any: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(any).context("binding a UDP socket")?;
    sock.set_read_timeout(Some(UDP_TIMEOUT))
        .context("setting a read timeout")?;
    let mut out = control::encode_request(req);
    if out.len() < size {
        out.resize(size, b' ');
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for _ in 0..3 {
        sock.send_to(&out, addr)
            .with_context(|| format!("sending to {addr}"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == addr => {
                return control::decode_response(&buf[..n])
                    .with_context(|| format!("malformed response from {addr}"));
            }
            _ => {}
        }
    }
    bail!("no response from {addr} (is ntpxd running, and is this host allowed by cmdallow?)")
}
