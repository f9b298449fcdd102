//! The daemon's NTP socket: requests the kernel passes up (and every request with
//! `--no-xdp`) answered by the same rules as the XDP program, and the kernel's transmit
//! timestamps of its replies kept for interleaved mode.

use super::{
    bind::bind_each,
    counters::bump,
    shared::Shared,
    worker::{self, OnEnd},
};
use crate::{
    clock, lock,
    net::{self, Received, TimestampedSocket, TxStamp, UnregisteredSocket},
};
use anyhow::{Context, Result, anyhow, bail};
use ntp_common::RateVerdict;
use ntp_proto::{
    config::Config,
    packet::{NtpHeader, NtpTimestamp},
    server::{self, Verdict},
};
use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// A nonce for NTS (cookies, authenticators); the kernel's generator cannot fail after
/// boot, and a failure would only repeat a nonce, so it is logged, not fatal.
fn random_nonce() -> [u8; ntp_proto::nts::NONCE_LEN] {
    let mut n = [0u8; ntp_proto::nts::NONCE_LEN];
    if let Err(e) = net::random_bytes_buffered(&mut n) {
        warn!("{e:#}");
        n[..8].copy_from_slice(&net::random_u64().to_ne_bytes());
    }
    n
}

/// How many threads of their own answer the daemon's NTP requests: `asked` (the
/// command line), else one per core for an NTS server, whose requests each cost their
/// cryptography, else none: the timekeeping thread answers, as chronyd's one thread does
/// (and a simulator interposing the C library expects of a daemon).
pub(super) fn server_threads(config: &Config, asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| {
        if config.nts_server.enabled() && config.port != 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            0
        }
    })
}

/// The NTP sockets, bound (before the privilege drop: port 123 needs it) and not yet
/// served.
pub(super) enum Bound {
    /// Served by the timekeeping thread.
    OnTimekeeping(Vec<TimestampedSocket>),
    /// One group per server thread: a socket of each bound address.
    Threads(Vec<Vec<UnregisteredSocket>>),
}

/// Binds the NTP port for `threads` server threads (0: the timekeeping thread), each
/// with one socket of every bound address's `SO_REUSEPORT` group. The kernel hashes
/// the client's address and port; a client that changes ports between requests, as
/// chronyd does, may reach another thread, and interleaved mode still works: each
/// thread notes its replies' departures in the one client log.
pub(super) fn bind(sh: &Shared, threads: usize) -> Result<Bound> {
    let hw = sh.hw.get().is_some();
    if threads == 0 || sh.config.port == 0 {
        let socks = bind_ntp_sockets(&sh.config, "NTP", |a| TimestampedSocket::bind(a, hw))?;
        return Ok(Bound::OnTimekeeping(socks));
    }
    let what = format!("NTP ({threads} threads)");
    let groups = bind_ntp_sockets(&sh.config, &what, |a| {
        (0..threads)
            .map(|_| TimestampedSocket::open(a, hw, true))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut per_thread: Vec<Vec<UnregisteredSocket>> = (0..threads).map(|_| Vec::new()).collect();
    for group in groups {
        for (i, sock) in group.into_iter().enumerate() {
            per_thread[i].push(sock);
        }
    }
    Ok(Bound::Threads(per_thread))
}

impl Bound {
    /// Starts answering: tasks of the timekeeping thread, or the server threads (made
    /// after the privilege drop, so they have no more than the daemon keeps: the
    /// bounding set and `no_new_privs` are per thread). A thread that fails ends a task
    /// in `tasks` with its error, which ends the daemon.
    pub(super) fn serve(self, sh: &Arc<Shared>, tasks: &mut JoinSet<Result<()>>) -> Result<()> {
        let per_thread = match self {
            Bound::OnTimekeeping(socks) => {
                for sock in socks {
                    tasks.spawn(serve_ntp(sock, sh.clone()));
                }
                return Ok(());
            }
            Bound::Threads(t) => t,
        };
        for (i, socks) in per_thread.into_iter().enumerate() {
            let sh = sh.clone();
            worker::spawn(
                tasks,
                format!("ntpx-ntp-{i}"),
                format!("NTP server thread {i}"),
                OnEnd::Fatal,
                move || serve_on_thread(socks, sh),
            )?;
        }
        Ok(())
    }
}

/// One server thread's life: its sockets served on a runtime of its own.
fn serve_on_thread(socks: Vec<UnregisteredSocket>, sh: Arc<Shared>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the thread's tokio runtime")?;
    rt.block_on(async move {
        let mut set = JoinSet::new();
        for s in socks {
            set.spawn(serve_ntp(s.register()?, sh.clone()));
        }
        match set.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(anyhow!("{e}")),
            None => Ok(()),
        }
    })
}

/// Binds the NTP sockets with `bind`: the `bindaddress` addresses, or the wildcard of
/// each family.
fn bind_ntp_sockets<S>(
    config: &Config,
    what: &str,
    bind: impl Fn(SocketAddr) -> Result<S>,
) -> Result<Vec<S>> {
    if config.port == 0 {
        return Ok(Vec::new());
    }
    let any = [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    let socks = bind_each(&config.bind_addresses, any, config.port, what, bind)?;
    if socks.is_empty() {
        bail!("could not open any NTP socket on port {}", config.port);
    }
    Ok(socks)
}

/// Replies whose transmit timestamps are still to come back, by the receive timestamp
/// each carried (unique per reply: the stamp's datagram names it), with the client.
/// Bounded, and a stamp the kernel never delivers is forgotten after a while.
#[derive(Default)]
struct AwaitingDeparture {
    /// Receive timestamp, client, when sent, whether the NIC's stamp was noted, and the
    /// step gate's sequence then (a stamp from before a step is not taken after it).
    pending: VecDeque<(NtpTimestamp, IpAddr, Instant, bool, u64)>,
}

impl AwaitingDeparture {
    const LIMIT: usize = 4096;
    /// A software transmit timestamp comes back within microseconds; this is generous.
    const PATIENCE: Duration = Duration::from_secs(2);

    fn push(&mut self, rx: NtpTimestamp, ip: IpAddr, seq: u64) {
        if self.pending.len() == Self::LIMIT {
            self.pending.pop_front();
        }
        self.pending.push_back((rx, ip, Instant::now(), false, seq));
    }

    /// The client of the reply that carried receive timestamp `rx`, if its stamp is to
    /// be noted. `keep`: the reply stays awaited (NIC stamps come as a message of their
    /// own) until it is forgotten; once the NIC's stamp (`from_nic`) was noted, the
    /// kernel's, coarser, is not taken over it.
    fn take(&mut self, rx: NtpTimestamp, keep: bool, from_nic: bool, seq: u64) -> Option<IpAddr> {
        while let Some(&(_, _, at, ..)) = self.pending.front() {
            if at.elapsed() < Self::PATIENCE {
                break;
            }
            self.pending.pop_front();
        }
        let i = self.pending.iter().position(|(r, ..)| *r == rx)?;
        if self.pending.get(i)?.4 != seq {
            self.pending.remove(i);
            return None;
        }
        if keep {
            let entry = self.pending.get_mut(i)?;
            if entry.3 && !from_nic {
                return None;
            }
            entry.3 |= from_nic;
            return Some(entry.1);
        }
        self.pending.remove(i).map(|(_, ip, ..)| ip)
    }
}

/// Answers requests on `sock` for the daemon's life.
pub(super) async fn serve_ntp(sock: TimestampedSocket, sh: Arc<Shared>) -> Result<()> {
    // Datagrams taken in one system call: a burst costs one call, not one each.
    const BATCH: usize = 16;
    let mut bufs = vec![[0u8; net::DATAGRAM]; BATCH];
    let mut got = Vec::with_capacity(BATCH);
    let mut awaiting = AwaitingDeparture::default();
    // The step gate's sequence at the last batch: when it moved, the clock was stepped,
    // and whatever was queued was stamped before the step (see drop_stale).
    let mut seen = sh.step_gate.current();
    loop {
        let r = tokio::select! {
            r = sock.recv_batch(&mut bufs, &mut got) => r,
            stamp = sock.tx_stamp() => {
                match stamp {
                    Ok(st) => note_departure(&sh, &st, &mut awaiting, sock.hw()),
                    Err(e) => debug!("{e:#}"),
                }
                continue;
            }
        };
        match r {
            Ok(()) => {
                if drop_stale(&sock, &sh, &mut seen, got.len(), &mut bufs) {
                    continue;
                }
                for (r, buf) in got.iter().zip(&bufs) {
                    if r.len == 0 {
                        // Empty, or its control data could not be read.
                        bump(&sh.counters.ignored);
                        continue;
                    }
                    answer(&sock, &sh, &buf[..r.len.min(buf.len())], r, &mut awaiting)?;
                }
            }
            Err(e) => warn!("{e:#}"),
        }
    }
}

/// Drops a batch (and everything still queued) received across a step of the clock:
/// stamped before the step, it would be answered from the state after it. Whether it
/// did.
fn drop_stale(
    sock: &TimestampedSocket,
    sh: &Shared,
    seen: &mut u64,
    batch: usize,
    bufs: &mut [[u8; net::DATAGRAM]],
) -> bool {
    let now = sh.step_gate.current();
    if now == *seen {
        return false;
    }
    *seen = now;
    let dropped = batch + sock.drain(bufs);
    for _ in 0..dropped {
        bump(&sh.counters.ignored);
    }
    debug!("Dropped {dropped} requests received across a step of the clock");
    true
}

/// A transmit timestamp came back: the reply it belongs to names itself by its receive
/// timestamp.
fn note_departure(sh: &Shared, st: &TxStamp, awaiting: &mut AwaitingDeparture, hw: bool) {
    // The NIC's stamp, where it can be told in system time; else the kernel's.
    let nic = st.hw_ns.zip(sh.hw.get()).and_then(|(raw_ns, clocks)| {
        let stamp = net::HwStamp {
            raw_ns,
            ifindex: None,
        };
        clocks.to_system_ns(&sh.engine, stamp, None, st.realtime_ns)
    });
    let Some(sys_ns) = nic.or(st.realtime_ns) else {
        return;
    };
    if let Ok(h) = NtpHeader::parse(&st.tail)
        && let Some(ip) = awaiting.take(h.receive_ts, hw, nic.is_some(), sh.step_gate.current())
    {
        let state = *lock(&sh.state);
        // Counted once per reply: the kernel's stamp, or the NIC's alone.
        let first = st.realtime_ns.is_some() || nic.is_some() && !hw;
        if sh
            .clients
            .note_departure(ip, h.receive_ts, sh.tai_of(sys_ns), &state)
            && first
        {
            bump(&sh.counters.tx_stamps);
        }
    }
}

/// A reply the rules call for, finished: its bytes, what it answers and its transmit
/// timestamp.
pub(super) struct Finished {
    /// The datagram to send.
    pub reply: Vec<u8>,
    /// The reply before it was finished (what kind it is).
    pub packet: server::PendingReply,
    /// The transmit timestamp it carries.
    pub tx_now: NtpTimestamp,
}

/// Applies the rules to one request from `src` received at `rx_tai` (the step gate's
/// `ticket` taken when it was read): the reply to send, or `None`, counted. Interleaved
/// replies only where `interleave` (the path learns when its replies leave).
pub(super) fn decide(
    sh: &Shared,
    datagram: &[u8],
    src: SocketAddr,
    rx_tai: u64,
    ticket: u64,
    interleave: bool,
) -> Result<Option<Finished>> {
    let state = *lock(&sh.state);
    // Taken once for the request and its reply (a shared lock's count is a cache line
    // every server thread writes), only for a request past the screen and the rate
    // limit, and before the transmit timestamp, the last thing read.
    let mut secrets = None;
    // The rate limit before any cryptography (chrony's order): a client over it cannot
    // make the server open cookies or check MACs. A denied source leaves no record (as
    // chrony): a spoofed flood from denied addresses must not push real clients out.
    let verdict = if let Some(v) = server::screen(datagram, src, &sh.acl) {
        v
    } else {
        let (rate, last) = sh.clients.log(src.ip(), rx_tai, &sh.counters);
        if rate == RateVerdict::Drop {
            bump(&sh.counters.ratelimited);
            return Ok(None);
        }
        let guard = secrets.insert(sh.secrets());
        let v = server::handle_screened(datagram, rx_tai, &state, guard, &mut random_nonce);
        match (v, rate) {
            (Verdict::Reply(p), RateVerdict::Answer) if interleave => {
                Verdict::Reply(p.interleave(&last))
            }
            (Verdict::Reply(p), RateVerdict::Answer) => Verdict::Reply(p),
            // An NTS NAK over the rate limit gets nothing (chrony: the kisses conflict).
            (Verdict::Reply(p), _) if p.is_nts_nak() => {
                bump(&sh.counters.ratelimited);
                return Ok(None);
            }
            (Verdict::Reply(p), _) => Verdict::Reply(p.kiss_rate()),
            (other, _) => other,
        }
    };
    match verdict {
        Verdict::Reply(packet) => {
            let secrets = secrets.unwrap_or_else(|| sh.secrets());
            let (reply, tx_now) = packet.finish(clock::tai_ns()?, &secrets);
            drop(secrets);
            // A step since the request was read: its stamps and the state disagree.
            // Never more bytes back than came in (RFC 8915 5.6; no amplification).
            if !sh.step_gate.still_open(ticket) || reply.len() > datagram.len() {
                bump(&sh.counters.ignored);
                return Ok(None);
            }
            Ok(Some(Finished {
                reply,
                packet,
                tx_now,
            }))
        }
        Verdict::Ignore(why) => {
            bump(&sh.counters.ignored);
            debug!("Ignored NTP datagram from {src} ({why:?})");
            Ok(None)
        }
        Verdict::Deny | Verdict::BadSource => {
            bump(&sh.counters.denied);
            Ok(None)
        }
    }
}

/// Counts a reply sent: who stamped the request's reception (`rx_source`), and the
/// transmit timestamp it carries (an interleaved one, the kernel's of the last reply;
/// else the daemon's clock read before sending).
pub(super) fn count_sent(sh: &Shared, p: &server::PendingReply, rx_source: usize) {
    bump(&sh.counters.answered);
    bump(&sh.counters.rx_sources[rx_source]);
    bump(&sh.counters.tx_sources[usize::from(p.is_interleaved())]);
    if p.is_interleaved() {
        bump(&sh.counters.interleaved);
    }
    if p.key_id().is_some() || p.is_nts() {
        bump(&sh.counters.authenticated);
    }
}

/// Answers one datagram (or not, as the rules say).
fn answer(
    sock: &TimestampedSocket,
    sh: &Shared,
    datagram: &[u8],
    r: &Received,
    awaiting: &mut AwaitingDeparture,
) -> Result<()> {
    bump(&sh.counters.received);
    // During a step of the system clock nothing is answered (see Shared::withdraw).
    let Some(ticket) = sh.step_gate.begin() else {
        bump(&sh.counters.ignored);
        return Ok(());
    };
    // The NIC's receive stamp where it can be told in system time, else the kernel's.
    let nic = r.rx_hw.zip(sh.hw.get()).and_then(|(stamp, clocks)| {
        let v6 = r.src.is_ipv6();
        clocks.to_system_ns(&sh.engine, stamp, Some((r.len, v6)), r.rx_realtime_ns)
    });
    let (rx_tai, rx_source) = match (nic, r.rx_realtime_ns) {
        (Some(t), _) => (sh.tai_of(t), 2),
        (None, Some(t)) => (sh.tai_of(t), 1),
        (None, None) => (clock::tai_ns()?, 0),
    };
    let src_ip = net::canonical_ip(r.src.ip());
    let src = SocketAddr::new(src_ip, r.src.port());
    let Some(Finished {
        reply,
        packet: p,
        tx_now,
    }) = decide(sh, datagram, src, rx_tai, ticket, true)?
    else {
        return Ok(());
    };
    // Only a client that may interleave needs to know when its reply left; a
    // Kiss-o'-Death is never interleaved with (as chrony).
    let stamp = p.may_interleave() && !p.is_kiss() && sh.clients.enabled();
    // From the address the request went to, unless this socket is bound to one.
    let from = r.dst.filter(|_| sock.local_addr().ip().is_unspecified());
    match sock.send_to(&reply, r.src, stamp, from) {
        Ok(()) => {
            count_sent(sh, &p, rx_source);
            if stamp {
                sh.clients.note_reply(src_ip, p.receive_ts(), tx_now);
                awaiting.push(p.receive_ts(), src_ip, ticket);
            }
        }
        Err(e) => debug!("{e:#}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departures_are_matched_by_the_receive_timestamp_their_reply_carried() {
        let mut a = AwaitingDeparture::default();
        let (c1, c2): (IpAddr, IpAddr) =
            ("198.18.0.2".parse().unwrap(), "fd00::2".parse().unwrap());
        a.push(NtpTimestamp(10), c1, 0);
        a.push(NtpTimestamp(11), c2, 0);
        a.push(NtpTimestamp(12), c1, 0);
        // Stamps may come back in any order; each is taken once.
        assert_eq!(a.take(NtpTimestamp(11), false, false, 0), Some(c2));
        assert_eq!(a.take(NtpTimestamp(11), false, false, 0), None);
        // With NIC stamps the reply stays awaited for the second message; the kernel's
        // stamp is noted until the NIC's was, never after it.
        assert_eq!(a.take(NtpTimestamp(12), true, false, 0), Some(c1));
        assert_eq!(a.take(NtpTimestamp(12), true, true, 0), Some(c1));
        assert_eq!(a.take(NtpTimestamp(12), true, false, 0), None);
        assert_eq!(a.take(NtpTimestamp(10), true, true, 0), Some(c1));
        assert_eq!(a.take(NtpTimestamp(10), true, false, 0), None);
        assert_eq!(a.take(NtpTimestamp(99), false, false, 0), None);
        for i in 0..2 * AwaitingDeparture::LIMIT as u64 {
            a.push(NtpTimestamp(100 + i), c1, 0);
        }
        assert_eq!(a.pending.len(), AwaitingDeparture::LIMIT);
        assert_eq!(
            a.take(NtpTimestamp(100), false, false, 0),
            None,
            "the oldest made room"
        );
        // A departure stamped before a step of the clock is not taken after it.
        a.push(NtpTimestamp(7), c2, 4);
        assert_eq!(a.take(NtpTimestamp(7), false, false, 6), None);
        a.push(NtpTimestamp(8), c2, 6);
        assert_eq!(a.take(NtpTimestamp(8), false, false, 6), Some(c2));
    }
}
