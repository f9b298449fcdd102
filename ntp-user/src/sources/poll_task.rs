//! Polling one upstream address: the IO around the engine's poller for it.
//!
//! Each source runs as its own task on its own connected socket: it asks the engine for
//! the next request and when to send it, takes the kernel's transmit and receive
//! timestamps, and hands every reply to the engine (all on the daemon's one thread). It
//! never reads the clock it measures except as a fallback when the kernel gives no
//! timestamp.

use super::SharedEngine;
use crate::{
    clock, lock,
    net::{self, ClientSocket},
    os::log_files::Journal,
};
use ntp_proto::{engine::WireInfo, poller::INITIAL_DELAY, report::Stamp};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, info, warn};

/// Index of a source in the daemon's source table.
pub type SourceId = usize;

/// Commands the daemon sends a source's task.
#[derive(Clone, Copy, Debug)]
pub enum SourceCommand {
    /// Poll now (ntpxc burst: the engine has started the burst).
    Burst,
    /// Stop polling (the address was replaced or removed).
    Stop,
    /// Stop polling until `Online` (ntpxc offline).
    Offline,
    /// Resume polling (ntpxc online).
    Online,
}

/// What a source's task works with.
#[derive(Clone)]
pub struct PollContext {
    /// The engine.
    pub engine: SharedEngine,
    /// Where the engine's log lines go.
    pub journal: Arc<Journal>,
    /// Runs after each reply the engine took (the clock may have been updated).
    pub changed: Arc<dyn Fn() + Send + Sync>,
    /// NTS: the TLS configuration and each NTS source's NTS-KE server.
    pub nts: Option<Arc<super::nts_ke::NtsContext>>,
    /// `hwtimestamp`: the interfaces whose NIC stamps are in use.
    pub hw: Option<Arc<crate::net::hw_timestamping::HwClocks>>,
}

fn now_ns() -> u64 {
    use ntp_proto::clock::RealtimeClock;
    clock::SystemRealtime.now_ns()
}

/// chrony's scheduling randomness: intervals stretched by a factor in [1, 1.02], so
/// clients started together drift apart.
fn randomness() -> f64 {
    1.0 + 0.02 * (net::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// What ended a wait between polls.
enum Woken {
    /// Time for the next request.
    Due,
    /// The task is to end.
    Stop,
}

/// Polls `addr` as source `id` until told to stop. A socket that cannot be opened (no
/// route yet, no address of that family) is tried again at every poll, each try counted
/// as an unanswered poll: the source shows as unreachable, and a pool replaces it.
pub async fn run(
    id: SourceId,
    addr: SocketAddr,
    ctx: PollContext,
    mut commands: mpsc::Receiver<SourceCommand>,
) {
    let mut sock: Option<ClientSocket> = None;
    let first = Instant::now() + Duration::from_secs_f64(INITIAL_DELAY * randomness());
    if let Woken::Stop = wait(None, id, &ctx, &mut commands, first, None).await {
        return;
    }
    let mut reported = false;
    loop {
        if sock.is_none() {
            match ClientSocket::connect(addr, ctx.hw.is_some()) {
                Ok(s) => {
                    if reported {
                        warn!("Source {addr}: socket open again");
                    }
                    sock = Some(s);
                    reported = false;
                }
                Err(e) if !reported => {
                    warn!("Source {addr}: {e:#}; trying again at each poll");
                    reported = true;
                }
                Err(e) => debug!("Source {addr}: {e:#}"),
            }
        }
        // The slot may have been given another address (or removed) while a Stop was
        // lost: the engine, not the message, says whose it is.
        if lock(&ctx.engine)
            .sources()
            .get(id)
            .is_none_or(|s| s.addr != addr || s.removed)
        {
            return;
        }
        if lock(&ctx.engine).nts_needs_ke(id)
            && let Some(backoff) = key_exchange(id, addr, &ctx).await
        {
            // Failed: try again later (chrony's back-off), still answering commands.
            if let Woken::Stop = wait(
                sock.as_ref(),
                id,
                &ctx,
                &mut commands,
                Instant::now() + backoff,
                None,
            )
            .await
            {
                return;
            }
            continue;
        }
        let cookie = net::random_u64();
        let sent_fallback = now_ns();
        let Some((req, log)) = lock(&ctx.engine).transmit(id, cookie) else {
            // Offline or removed: wait for a command.
            match commands.recv().await {
                Some(SourceCommand::Stop) | None => return,
                Some(_) => continue,
            }
        };
        ctx.journal.emit(log);
        let sent_at = Instant::now();
        let stretch = randomness();
        let mut tx_stamp = Stamp::Daemon;
        if let Some(s) = &sock {
            if let Err(e) = s.send(&req) {
                debug!("Source {addr}: {e:#}");
            } else {
                let ts = s.tx_timestamp(Duration::from_millis(20)).await;
                let hw = ts.hw.zip(ctx.hw.as_ref()).and_then(|(raw_ns, clocks)| {
                    let stamp = net::HwStamp {
                        raw_ns,
                        ifindex: s.hw_ifindex(),
                    };
                    // Checked against the kernel's stamp, or the daemon's clock read.
                    let near = ts.sw.unwrap_or(sent_fallback);
                    clocks.to_system_ns(&ctx.engine, stamp, None, Some(near))
                });
                let (t1, how) = match (hw, ts.sw) {
                    (Some(t), _) => (t, Stamp::Hardware),
                    (None, Some(t)) => (t, Stamp::Kernel),
                    (None, None) => (sent_fallback, Stamp::Daemon),
                };
                lock(&ctx.engine).transmitted(id, cookie, t1);
                tx_stamp = how;
            }
        }
        if let Woken::Stop = wait(
            sock.as_ref(),
            id,
            &ctx,
            &mut commands,
            sent_at,
            Some((stretch, tx_stamp)),
        )
        .await
        {
            return;
        }
    }
}

/// Runs an NTS-KE for source `id` (off the timekeeping thread) and gives the engine the
/// session; on failure, how long to wait before the next attempt (doubling from 16 s to
/// about an hour, as chrony's retries grow).
async fn key_exchange(id: SourceId, addr: SocketAddr, ctx: &PollContext) -> Option<Duration> {
    let nts = ctx.nts.clone()?;
    let ke = lock(&nts.servers).get(&id).cloned()?;
    let (name, port) = (ke.name, ke.port);
    // A session the last run saved spares an NTS-KE (as chronyd's ntsdumpdir does).
    if let Some(saved) = nts.take_saved(&name) {
        info!(
            "Source {name}: NTS session restored, {} cookies",
            saved.cookies()
        );
        lock(&ctx.engine).nts_session(id, saved, now_ns());
        return None;
    }
    let tls = nts.tls(ke.certset)?;
    let target = name.clone();
    let result = tokio::task::spawn_blocking(move || {
        super::nts_ke::key_exchange(tls, &target, Some(addr.ip()), port)
    })
    .await;
    let outcome = match result {
        Ok(Ok((keys, response))) => {
            let mut prf = [0u8; 16];
            net::random_bytes(&mut prf).map(|()| (keys, response, prf))
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(anyhow::anyhow!("the NTS-KE task failed: {e}")),
    };
    match outcome {
        Ok((keys, response, prf)) => {
            let n = response.cookies.len();
            if response.server.is_some() || response.port.is_some() {
                warn!(
                    "Source {name}: the NTS-KE server names another NTP server ({:?} port \
                     {:?}); ntpx polls the source's own address",
                    response.server, response.port
                );
            }
            let session = ntp_proto::nts::ClientSession::new(keys, response.cookies, prf);
            lock(&ctx.engine).nts_session(id, session, now_ns());
            info!("Source {name}: NTS-KE done, {n} cookies");
            None
        }
        Err(e) => {
            let attempts = lock(&ctx.engine).nts_ke_failed(id);
            let wait = Duration::from_secs(16u64 << attempts.saturating_sub(1).min(8));
            warn!("Source {name}: NTS-KE failed: {e:#}; next attempt in {wait:?}");
            Some(wait)
        }
    }
}

/// Waits until the next request is due: at `until`, or with `after_send` (the stretch
/// factor and whether the kernel stamped the send) at the engine's interval after
/// `until`, which a reply may change. Replies and commands are handled meanwhile.
async fn wait(
    sock: Option<&ClientSocket>,
    id: SourceId,
    ctx: &PollContext,
    commands: &mut mpsc::Receiver<SourceCommand>,
    until: Instant,
    after_send: Option<(f64, Stamp)>,
) -> Woken {
    // Room for an NTS reply with eight cookies of up to 256 bytes (chrony's limit).
    let mut buf = [0u8; 4096];
    loop {
        let deadline = match after_send {
            Some((stretch, _)) => {
                let interval = lock(&ctx.engine).interval(id) * stretch;
                until + Duration::from_secs_f64(interval)
            }
            None => until,
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Woken::Due,
            cmd = commands.recv() => match cmd {
                Some(SourceCommand::Burst) => return Woken::Due,
                Some(SourceCommand::Stop) | None => return Woken::Stop,
                Some(SourceCommand::Offline) => loop {
                    match commands.recv().await {
                        Some(SourceCommand::Online) => return Woken::Due,
                        Some(SourceCommand::Stop) | None => return Woken::Stop,
                        Some(_) => {}
                    }
                },
                Some(SourceCommand::Online) => {}
            },
            Some(r) = recv(sock, &mut buf) => {
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        // ICMP port unreachable and the like: the poll counts as unanswered.
                        debug!("{e:#}");
                        continue;
                    }
                };
                let Some(sock) = sock else { continue };
                let hw = r.rx_hw.zip(ctx.hw.as_ref()).and_then(|(stamp, clocks)| {
                    let v6 = r.src.is_ipv6();
                    let near = r.rx_realtime_ns.unwrap_or_else(now_ns);
                    clocks.to_system_ns(&ctx.engine, stamp, Some((r.len, v6)), Some(near))
                });
                let (t4, rx) = match (hw, r.rx_realtime_ns) {
                    (Some(t), _) => (t, Stamp::Hardware),
                    (None, Some(t)) => (t, Stamp::Kernel),
                    (None, None) => (now_ns(), Stamp::Daemon),
                };
                let wire = WireInfo {
                    local: sock.local(),
                    tx: after_send.map_or(Stamp::Daemon, |(_, s)| s),
                    rx,
                };
                let log = lock(&ctx.engine).receive(id, &buf[..r.len], t4, wire);
                // Publish first: after a step the kernel serves nothing until then, and
                // a log write can take a while.
                (ctx.changed)();
                ctx.journal.emit(log);
            }
        }
    }
}

/// A reply on `sock`; without a socket, never.
async fn recv(
    sock: Option<&ClientSocket>,
    buf: &mut [u8],
) -> Option<anyhow::Result<net::Received>> {
    match sock {
        Some(s) => Some(s.recv(buf).await),
        None => std::future::pending().await,
    }
}
