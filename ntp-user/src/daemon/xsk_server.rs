//! `ntpxd --xsk`: requests longer than a bare header (NTS, a MAC) that reach an
//! interface the XDP program serves come to the daemon through `AF_XDP` sockets, one per
//! receive queue, each served by a thread of its own: by the same rules as on the
//! daemon's sockets ([`ntp_server::decide`]), without the socket layer's work per
//! datagram. Their receive time is the program's (`CLOCK_TAI` when the frame reached
//! it); replies are basic (never interleaved: no transmit timestamp comes back from an
//! `AF_XDP` socket) and leave through the same queue. Interfaces attached later, VLAN
//! tagged frames and everything else keep the daemon's sockets.

use super::{
    counters::bump,
    ntp_server,
    shared::Shared,
    worker::{self, OnEnd},
};
use crate::{
    lock,
    net::xsk::{self, XskSocket},
};
use anyhow::{Context, Result, anyhow};
use ntp_proto::frame;
use std::{net::SocketAddr, sync::Arc};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Frames handled per pass over the receive ring.
const BATCH: u32 = 64;
/// How often the kernel's count of dropped frames is looked at.
const DROP_CHECK: std::time::Duration = std::time::Duration::from_mins(1);

/// The number of receive queues of `iface` (from sysfs; 1 where it cannot tell).
fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Opens a socket for every receive queue of every interface the program is attached
/// to and registers each with it (before the privilege drop: `AF_XDP` needs
/// `CAP_NET_RAW`).
pub(super) fn open(sh: &Shared) -> Result<Vec<XskSocket>> {
    let kernel = sh
        .kernel
        .as_ref()
        .ok_or_else(|| anyhow!("--xsk needs the XDP fast path (it was turned off)"))?;
    let mut k = lock(kernel);
    let mut out: Vec<XskSocket> = Vec::new();
    let queues: Vec<(ntp_proto::serving::Attachment, u32)> = k
        .attachments()
        .into_iter()
        .map(|a| {
            let n = rx_queues(&a.name);
            (a, n)
        })
        .collect();
    let frames = xsk::frames_each(queues.iter().map(|q| q.1 as usize).sum());
    'ifaces: for (a, n) in queues {
        for queue in 0..n {
            if out.len() >= ntp_common::state::XSK_MAX_ENTRIES as usize {
                warn!(
                    "--xsk: no `AF_XDP` socket beyond {} queues; {} queue {queue} and later \
                     ones use the daemon's sockets",
                    out.len(),
                    a.name
                );
                break 'ifaces;
            }
            let s = XskSocket::open(&a.name, a.index, queue, frames)
                .with_context(|| format!("--xsk on {} queue {queue}", a.name))?;
            let slot = u32::try_from(out.len())?;
            k.register_xsk(slot, a.index, queue, &s)?;
            info!(
                "AF_XDP socket on {} queue {queue} ({frames} frames): longer requests (NTS, \
                 MACs) answered there",
                a.name
            );
            out.push(s);
        }
    }
    if out.is_empty() {
        info!("--xsk: the XDP program is attached to no interface yet; no AF_XDP socket");
    }
    Ok(out)
}

/// Starts a thread per socket (after the privilege drop, as the server threads); a
/// thread that fails ends a task in `tasks` with its error, which ends the daemon.
pub(super) fn serve(
    socks: Vec<XskSocket>,
    sh: &Arc<Shared>,
    tasks: &mut JoinSet<Result<()>>,
) -> Result<()> {
    for s in socks {
        let sh = sh.clone();
        // A thread whose interface went away ends quietly (its requests reach the
        // daemon's sockets again).
        worker::spawn(
            tasks,
            format!("ntpx-xsk-{}", s.queue),
            format!("the AF_XDP thread of {} queue {}", s.iface, s.queue),
            OnEnd::Quiet,
            move || serve_socket(s, &sh),
        )?;
    }
    Ok(())
}

/// One socket's thread: waits for frames, answers them, returns sent frames.
fn serve_socket(mut s: XskSocket, sh: &Shared) -> Result<()> {
    let mut seen = sh.step_gate.current();
    // The kernel's drop count, looked at once a minute and reported when it grew.
    let (mut checked, mut reported) = (std::time::Instant::now(), 0u64);
    loop {
        // Replies the device would not take yet go first; then a short wait while any
        // remain, so they do not wait for the next request.
        if s.sending() {
            s.kick();
        }
        // Frames left from the last pass need no system call to be found.
        if !s.received() && !s.wait(if s.sending() { 1 } else { 1000 }) {
            info!(
                "AF_XDP socket on {} queue {} closed (the interface is gone); its requests \
                 go to the daemon's sockets",
                s.iface, s.queue
            );
            return Ok(());
        }
        s.recycle();
        // Frames received across a step of the clock carry a receive time from before
        // it: all of them are dropped, as the daemon's sockets drop theirs.
        let now = sh.step_gate.current();
        if now != seen {
            seen = now;
            let dropped = s.drop_received();
            for _ in 0..dropped {
                bump(&sh.counters.received);
                bump(&sh.counters.ignored);
            }
            debug!("Dropped {dropped} requests received across a step of the clock");
            continue;
        }
        s.serve(BATCH, |meta, frame| answer(sh, meta, frame));
        if checked.elapsed() >= DROP_CHECK {
            checked = std::time::Instant::now();
            let dropped = s.stats().map_or(0, |st| st[0]);
            if dropped > reported {
                warn!(
                    "AF_XDP socket on {} queue {}: {} requests dropped by the kernel in the \
                     last minute (no frame free to receive into: more than the socket keeps \
                     in flight)",
                    s.iface,
                    s.queue,
                    dropped - reported
                );
                reported = dropped;
            }
        }
    }
}

/// Answers the request in `frame` in place (`meta`: the program's metadata, the receive
/// time): the reply frame's length, or `None` (counted).
fn answer(sh: &Shared, meta: &[u8], frame: &mut [u8]) -> Option<usize> {
    bump(&sh.counters.received);
    let ignore = || {
        bump(&sh.counters.ignored);
        None
    };
    let f = match frame::parse_udp(frame) {
        Ok(f) => f,
        Err(why) => {
            debug!("Ignored frame on an AF_XDP socket ({why:?})");
            return ignore();
        }
    };
    // During a step of the system clock nothing is answered (see Shared::withdraw).
    let Some(ticket) = sh.step_gate.begin() else {
        return ignore();
    };
    let Some(rx_tai) = meta.try_into().ok().map(u64::from_ne_bytes) else {
        return ignore();
    };
    let src = SocketAddr::new(crate::net::canonical_ip(f.src.ip()), f.src.port());
    // From the wire, never from this host: a loopback source is spoofed (the stack would
    // drop it as a martian), and must not pass for a local client.
    if src.ip().is_loopback() {
        bump(&sh.counters.denied);
        return None;
    }
    let datagram = &frame[f.payload.clone()];
    let finished = match ntp_server::decide(sh, datagram, src, rx_tai, ticket, false) {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => {
            debug!("{e:#}");
            return ignore();
        }
    };
    let n = frame::write_udp_reply(frame, &f, &finished.reply)?;
    // The receive time is the kernel's (the program's clock read).
    ntp_server::count_sent(sh, &finished.packet, 1);
    Some(n)
}
