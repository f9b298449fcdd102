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
use anyhow::{Context, Result};
use ntp_proto::{engine::WireInfo, poller::INITIAL_DELAY, report::Stamp};
use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};
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
    // Where the requests go: `addr`, unless an NTS-KE server names another.
    let mut ntp_addr = addr;
    let first = Instant::now() + Duration::from_secs_f64(INITIAL_DELAY * randomness());
    if let Woken::Stop = wait(None, id, &ctx, &mut commands, first, None).await {
        return;
    }
    let mut reported = false;
    // The earliest the next NTS-KE may start (chrony's rate limit: each attempt since the
    // last reply that verified waits twice as long as the one before; none after one).
    let mut next_ke = Instant::now();
    loop {
        if sock.is_none() {
            match ClientSocket::connect(ntp_addr, ctx.hw.is_some()) {
                Ok(s) => {
                    if reported {
                        warn!("Source {ntp_addr}: socket open again");
                    }
                    sock = Some(s);
                    reported = false;
                }
                Err(e) if !reported => {
                    warn!("Source {ntp_addr}: {e:#}; trying again at each poll");
                    reported = true;
                }
                Err(e) => debug!("Source {ntp_addr}: {e:#}"),
            }
        }
        // The slot may have been given another address (or removed) while a Stop was
        // lost: the engine, not the message, says whose it is.
        if !still_ours(&ctx, id, addr) {
            return;
        }
        if lock(&ctx.engine).nts_refresh(id) {
            info!("Source {addr}: NTS keys older than ntsrefresh, a new NTS-KE");
        }
        if lock(&ctx.engine).nts_needs_ke(id) {
            let started = Instant::now();
            let attempts = lock(&ctx.engine)
                .nts_client(id)
                .map_or(0, |n| n.ke_attempts);
            if started >= next_ke || attempts == 0 {
                let (wait, target) = match key_exchange(id, addr, &ctx).await {
                    KeOutcome::Retry(wait) => (wait, None),
                    KeOutcome::Done(named, wait) => (wait, Some(named.unwrap_or(addr))),
                };
                next_ke = started + wait;
                // The slot may have been given to another server while the NTS-KE ran
                // (a pool member replaced): nothing more of it is this task's.
                if !still_ours(&ctx, id, addr) {
                    return;
                }
                // The NTS-KE server may name another NTP server or port (RFC 8915 4.1.7,
                // 4.1.8): the cookies are for it, so the polls go there.
                if let Some(t) = target.filter(|t| *t != ntp_addr) {
                    ntp_addr = t;
                    sock = None;
                    continue;
                }
            }
            if lock(&ctx.engine).nts_needs_ke(id) {
                // No keys to send with: this poll goes unanswered (as chronyd counts it),
                // and the next comes an interval later, when an NTS-KE may be due again
                // (attempted only at a poll, as chronyd does). Commands are answered.
                let log = lock(&ctx.engine).unsendable_poll(id);
                ctx.journal.emit(log);
                let next_poll =
                    Instant::now() + Duration::from_secs_f64(lock(&ctx.engine).interval(id));
                if let Woken::Stop =
                    wait(sock.as_ref(), id, &ctx, &mut commands, next_poll, None).await
                {
                    return;
                }
                continue;
            }
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

/// Keeps the NTP server named for source `id` (or that none was), to be saved with its
/// session.
fn note_named(nts: &super::nts_ke::NtsContext, id: SourceId, named: Option<SocketAddr>) {
    let mut m = lock(&nts.named);
    match named {
        Some(a) => m.insert(id, a),
        None => m.remove(&id),
    };
}

/// Whether slot `id` is still the source at `addr` this task polls (not removed, not
/// given to another server).
fn still_ours(ctx: &PollContext, id: SourceId, addr: SocketAddr) -> bool {
    lock(&ctx.engine)
        .sources()
        .get(id)
        .is_some_and(|s| s.addr == addr && !s.removed)
}

/// How an NTS-KE ended.
enum KeOutcome {
    /// The engine has the session; with the NTP server the NTS-KE server named, if it
    /// named one (its address and port resolved), and how long before another NTS-KE.
    Done(Option<SocketAddr>, Duration),
    /// Failed: try again after this long.
    Retry(Duration),
}

/// How long after the start of NTS-KE number `attempts` (since the last reply that
/// verified) the next may start, as chronyd paces them: 16 s after one that reached no
/// server, 1024 s after one whose TLS session began (however it ended: a server that
/// NAKs every request is not asked for a handshake at every poll), doubling with each
/// attempt up to 2^19 s (six days).
fn ke_backoff(attempts: u16, reached: bool) -> Duration {
    let factor: u16 = if reached { 10 } else { 4 };
    let log2 = factor.saturating_add(attempts.saturating_sub(1)).min(19);
    Duration::from_secs(1 << log2)
}

/// Where the NTS-KE server at `ke_addr` says to send NTP: its server record (a name or
/// address, resolved as `ke_addr`'s family is, else any) and port record (default 123),
/// or `None` when it gave neither.
fn named_ntp_server(
    server: Option<&str>,
    port: Option<u16>,
    ke_addr: SocketAddr,
) -> Result<Option<SocketAddr>> {
    if server.is_none() && port.is_none() {
        return Ok(None);
    }
    let port = port.unwrap_or(ntp_common::wire::NTP_PORT);
    let Some(name) = server else {
        return Ok(Some(SocketAddr::new(ke_addr.ip(), port)));
    };
    let found: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving the NTP server {name} the NTS-KE server named"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4() == ke_addr.is_ipv4())
        .or(found.first())
        .copied()
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("{name} has no address"))
}

/// Runs an NTS-KE for source `id` (off the timekeeping thread) and gives the engine the
/// session, or restores the one the last run saved; either way, how long before another
/// NTS-KE may start ([`ke_backoff`]; none after a restored session).
async fn key_exchange(id: SourceId, addr: SocketAddr, ctx: &PollContext) -> KeOutcome {
    // Neither can be missing for an NTS source; were one, it is not tried in a loop.
    const NEVER: Duration = Duration::from_hours(1);
    // Counted as attempts, so they wait their hour rather than recur at every poll.
    let Some(nts) = ctx.nts.clone() else {
        warn!(
            "Source {addr}: NTS, but no NTS source was configured at start (one added by \
             reload needs a restart of ntpxd); not polled"
        );
        lock(&ctx.engine).nts_ke_started(id);
        return KeOutcome::Retry(NEVER);
    };
    let Some(ke) = lock(&nts.servers).get(&id).cloned() else {
        lock(&ctx.engine).nts_ke_started(id);
        return KeOutcome::Retry(NEVER);
    };
    let (name, port) = (ke.name, ke.port);
    // A session the last run saved spares the first NTS-KE (as chronyd's ntsdumpdir
    // does); never a later one, which a NAK or spent cookies asked for.
    let first = lock(&ctx.engine)
        .nts_client(id)
        .is_none_or(|n| n.sessions == 0);
    if let Some((saved, named)) = first.then(|| nts.take_saved(&name, addr)).flatten() {
        info!(
            "Source {name}: NTS session restored, {} cookies{}",
            saved.cookies(),
            named.map_or(String::new(), |a| format!("; NTP server {a}"))
        );
        let (taken, stale) = {
            let mut engine = lock(&ctx.engine);
            let taken = engine.nts_session(id, addr, saved, now_ns());
            (taken, taken && engine.nts_refresh(id))
        };
        // Keys saved longer ago than ntsrefresh: dropped, and the NTS-KE made now.
        if !stale {
            if taken {
                note_named(&nts, id, named);
            }
            return KeOutcome::Done(named, Duration::ZERO);
        }
        info!("Source {name}: the restored NTS keys are older than ntsrefresh");
    }
    let attempts = lock(&ctx.engine).nts_ke_started(id);
    let target = name.clone();
    let certset = ke.certset;
    // Off the timekeeping thread, the TLS configuration too: a certificate set named for
    // the first time is read from its files now.
    let ctx_nts = nts.clone();
    let result = tokio::task::spawn_blocking(move || {
        let tls = ctx_nts.tls(certset)?;
        let exchanged =
            super::nts_ke::key_exchange(tls, &target, Some(addr.ip()), port, &ctx_nts.aeads)?;
        let r = &exchanged.response;
        let named = named_ntp_server(r.server.as_deref(), r.port, addr)?;
        Ok::<_, anyhow::Error>((exchanged, named))
    })
    .await;
    let outcome = match result {
        Ok(Ok((exchanged, named))) => {
            let mut prf = [0u8; 16];
            net::random_bytes(&mut prf).map(|()| (exchanged, named, prf))
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(anyhow::anyhow!("the NTS-KE task failed: {e}")),
    };
    match outcome {
        Ok((exchanged, named, prf)) => {
            let session = exchanged.session(prf);
            let response = exchanged.response;
            let n = response.cookies.len();
            let aead = response.aead.id();
            let accepted = lock(&ctx.engine).nts_session(id, addr, session, now_ns());
            if let Some(a) = named {
                info!(
                    "Source {name}: NTS-KE done, {n} cookies, AEAD {aead}; NTP server {a} \
                     (named by the NTS-KE server{})",
                    response
                        .server
                        .as_deref()
                        .map_or(String::new(), |s| format!(": {s}"))
                );
            } else {
                info!("Source {name}: NTS-KE done, {n} cookies, AEAD {aead}");
            }
            if accepted {
                note_named(&nts, id, named);
            }
            KeOutcome::Done(named, ke_backoff(attempts, true))
        }
        Err(e) => {
            let reached = e.downcast_ref::<super::nts_ke::Unreached>().is_none();
            let wait = ke_backoff(attempts, reached);
            warn!("Source {name}: NTS-KE failed: {e:#}; next attempt in {wait:?}");
            KeOutcome::Retry(wait)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nts_ke_attempts_are_paced_as_chronyd_paces_them() {
        let s = Duration::from_secs;
        // No server reached: from 16 s; a TLS session begun: from 1024 s; doubling.
        assert_eq!(ke_backoff(1, false), s(16));
        assert_eq!(ke_backoff(2, false), s(32));
        assert_eq!(ke_backoff(1, true), s(1024));
        assert_eq!(ke_backoff(3, true), s(4096));
        // At most 2^19 s, however many attempts.
        assert_eq!(ke_backoff(16, false), s(1 << 19));
        assert_eq!(ke_backoff(u16::MAX, true), s(1 << 19));
    }

    #[test]
    fn an_nts_ke_that_reaches_no_server_says_so() {
        // A port nothing listens on: refused before any TLS, the shorter retry.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let tls = super::super::nts_ke::trusting_nothing();
        let e = super::super::nts_ke::key_exchange(
            tls,
            "localhost",
            Some([127, 0, 0, 1].into()),
            port,
            &ntp_proto::nts::Aead::ALL,
        )
        .unwrap_err();
        assert!(
            e.downcast_ref::<super::super::nts_ke::Unreached>()
                .is_some(),
            "{e:#}"
        );
    }

    #[test]
    fn the_ntp_server_an_nts_ke_server_names_is_where_polls_go() {
        let ke: SocketAddr = "198.18.0.1:123".parse().unwrap();
        assert_eq!(named_ntp_server(None, None, ke).unwrap(), None);
        // A port alone: the same host.
        assert_eq!(
            named_ntp_server(None, Some(1123), ke).unwrap(),
            Some("198.18.0.1:1123".parse().unwrap())
        );
        // An address, default port 123.
        assert_eq!(
            named_ntp_server(Some("198.18.0.9"), None, ke).unwrap(),
            Some("198.18.0.9:123".parse().unwrap())
        );
        assert_eq!(
            named_ntp_server(Some("2001:db8::9"), Some(1123), ke).unwrap(),
            Some("[2001:db8::9]:1123".parse().unwrap())
        );
    }
}
