//! Telling systemd the daemon is ready (`sd_notify` protocol, `Type=notify`), without
//! libsystemd: one datagram to the socket named in `NOTIFY_SOCKET`.

use anyhow::{Context, Result};
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") to `socket`: a path, or `@name` for an abstract socket.
pub fn notify_to(socket: &str, state: &str) -> Result<()> {
    let sock = UnixDatagram::unbound().context("creating the notify socket")?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .context("abstract notify socket name")?;
        sock.send_to_addr(state.as_bytes(), &addr)
    } else {
        sock.send_to(state.as_bytes(), socket)
    }
    .with_context(|| format!("notifying systemd at {socket}"))?;
    Ok(())
}

/// Sends `state` to systemd if it started us with `Type=notify`; does nothing otherwise.
pub fn notify(state: &str) -> Result<()> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(s) if !s.is_empty() => notify_to(&s, state),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("ntpx-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ntpx-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "READY=1").unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
