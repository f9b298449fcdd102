//! NTS load: NTS-protected client requests (RFC 8915) sent from userspace over many
//! client sockets, and their replies counted at the client end by an XDP program (one in
//! [`NTS_PASS_EVERY`] passed up to the sockets, timed and a sample checked in full). The
//! kernel generator cannot make these requests: the authenticator covers every byte,
//! transmit timestamp included, so each is built once, in a pool, and sent again in turn.

use crate::{
    histogram::Percentiles,
    topology::{CLIENT_CPU, pin_thread},
};
use anyhow::{Context, Result, bail};
use ntp_common::load::{
    MAP_NTS_STATS, NTS_PASS_EVERY, NTS_POOL_MAGIC, NTS_STATS, NtsStat, PROG_NTS_COUNT,
};
use ntp_proto::nts::{ClientSession, MAX_COOKIES, SessionKeys};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// The high half of every pool request's transmit timestamp (the low half is its index):
/// a reply's origin timestamp names the request it answers.
const MAGIC: u32 = NTS_POOL_MAGIC;
/// Requests in the pool, sent in turn.
pub const POOL: usize = 1 << 15;
/// Every `SAMPLE`-th request's replies are checked in full (authenticator under the
/// session's server-to-client key, unique identifier, cookie): checking all would cost
/// the generator's CPU what the server spends. A multiple of [`NTS_PASS_EVERY`], so
/// those replies reach the sockets.
const SAMPLE: usize = 16 * NTS_PASS_EVERY as usize;
/// Client sockets, each its own source port, so a server's `SO_REUSEPORT` group (the
/// kernel hashes each client's address and port) spreads them over its sockets.
const SOCKETS: usize = 64;
/// Requests per `sendmmsg` call at most.
const BATCH: usize = 32;
/// How long replies are waited for after the last request of a step.
const DRAIN: Duration = Duration::from_millis(300);

/// Requests built under one NTS session, each with a fresh unique identifier and one of
/// the session's cookies, asking for one cookie back (a client in its steady state).
pub struct Pool {
    requests: Vec<Vec<u8>>,
    /// The sessions that made the sampled requests, to check their replies with.
    sessions: HashMap<usize, ClientSession>,
}

impl Pool {
    /// `POOL` requests from the keys and cookies of one NTS-KE.
    pub fn new(keys: &SessionKeys, cookies: &[Vec<u8>]) -> Result<Self> {
        if cookies.is_empty() {
            bail!("the NTS-KE gave no cookie");
        }
        let mut requests = Vec::with_capacity(POOL);
        let mut sessions = HashMap::new();
        for i in 0..POOL {
            let mut header = [0u8; 48];
            header[0] = 0x23; // leap 0, version 4, client mode
            header[40..44].copy_from_slice(&MAGIC.to_be_bytes());
            header[44..48].copy_from_slice(&(i as u32).to_be_bytes());
            // A full set of cookies (the same one reused: servers keep no record of
            // cookies), so the request asks for no placeholders beyond its own.
            let cookie = &cookies[i % cookies.len()];
            let mut prf = [0u8; 16];
            prf[..8].copy_from_slice(&(i as u64).to_be_bytes());
            prf[8..].copy_from_slice(&0x6e74_7378_6265_6e63u64.to_be_bytes());
            let mut s = ClientSession::new(keys.clone(), vec![cookie.clone(); MAX_COOKIES], prf);
            let req = s.request(&header).context("building an NTS request")?;
            if i % SAMPLE == 0 {
                sessions.insert(i, s);
            }
            requests.push(req);
        }
        Ok(Pool { requests, sessions })
    }

    /// Length of a request, bytes.
    pub fn request_len(&self) -> usize {
        self.requests.first().map_or(0, Vec::len)
    }
}

/// One step of NTS load and what came back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NtsStep {
    /// Requested rate, per second.
    pub target_rate: f64,
    /// Rate actually offered, per second.
    pub offered_rate: f64,
    /// Requests sent.
    pub sent: u64,
    /// NTS replies to pool requests (authenticated: they carry extension fields).
    pub answered: u64,
    /// Of those in the sample, how many passed the full check.
    pub verified: u64,
    /// Of those in the sample, how many failed it.
    pub failed_check: u64,
    /// NTS NAKs (the server could not use the cookie).
    pub naks: u64,
    /// Other Kiss-o'-Death replies.
    pub kod: u64,
    /// Replies that named no pool request, or carried no extension fields.
    pub invalid: u64,
    /// Sending time, seconds.
    pub secs: f64,
    /// Response time (reply received − request sent, both by this process), ns, of the
    /// replies passed up to the sockets (one in [`NTS_PASS_EVERY`]).
    pub rtt: Option<Percentiles>,
}

impl NtsStep {
    /// Requests not answered, as a fraction of those sent.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - (self.answered as f64 / self.sent as f64).min(1.0)
    }

    /// Answered requests per second.
    pub fn answered_rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.answered as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The generator: the pool and the client sockets, connected to the server.
pub struct NtsLoad {
    pool: Pool,
    socks: Vec<UdpSocket>,
    /// Monotonic departure of each pool request's last sending, ns.
    sent_at: Vec<AtomicU64>,
    /// The reply counter attached to the client end (detached when dropped).
    counter: aya::Ebpf,
}

/// The counter's totals over every CPU, by [`NtsStat`].
fn counter_totals(ebpf: &aya::Ebpf) -> Result<[u64; NTS_STATS as usize]> {
    let map = ebpf.map(MAP_NTS_STATS).context("NTS counter map missing")?;
    let stats = aya::maps::PerCpuArray::<_, u64>::try_from(map)?;
    let mut out = [0u64; NTS_STATS as usize];
    for (i, o) in out.iter_mut().enumerate() {
        *o = stats.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

/// What the receiving side counted.
#[derive(Default)]
struct Counts {
    answered: u64,
    verified: u64,
    failed_check: u64,
    naks: u64,
    kod: u64,
    invalid: u64,
    rtts: Vec<u64>,
}

impl NtsLoad {
    /// Client sockets in the calling thread's namespace, connected to `server`, and the
    /// reply counter attached to `iface` (the client end, in that namespace).
    pub fn new(server: SocketAddr, pool: Pool, iface: &str) -> Result<Self> {
        let mut counter = aya::Ebpf::load(ntp_user::BENCH_OBJECT)
            .context("loading the ntpx-bench eBPF object")?;
        let prog: &mut aya::programs::Xdp = counter
            .program_mut(PROG_NTS_COUNT)
            .context("NTS counter program missing")?
            .try_into()?;
        prog.load().context("loading the NTS counter")?;
        prog.attach(iface, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching the NTS counter to {iface}"))?;
        let socks = (0..SOCKETS)
            .map(|_| -> Result<UdpSocket> {
                let s = UdpSocket::bind("0.0.0.0:0").context("binding a client socket")?;
                s.connect(server)
                    .with_context(|| format!("connecting to {server}"))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        let sent_at = (0..POOL).map(|_| AtomicU64::new(0)).collect();
        Ok(NtsLoad {
            pool,
            socks,
            sent_at,
            counter,
        })
    }

    /// Length of the requests, bytes.
    pub fn request_len(&self) -> usize {
        self.pool.request_len()
    }

    /// Offers `rate` requests a second for `length`, then waits for the last replies.
    /// A thread sends, another receives, both on the generator's CPU (the caller stays
    /// unpinned, so the servers it starts may use every CPU).
    pub fn step(&mut self, rate: f64, length: Duration) -> Result<NtsStep> {
        let before = counter_totals(&self.counter)?;
        let stop = AtomicBool::new(false);
        let this = &*self;
        let (sent, secs, counts) = std::thread::scope(|scope| -> Result<_> {
            let receiver = scope.spawn(|| -> Result<Counts> {
                pin_thread(CLIENT_CPU)?;
                Ok(this.receive(&stop))
            });
            let sender = scope.spawn(|| -> Result<u64> {
                pin_thread(CLIENT_CPU)?;
                this.send(rate, length)
            });
            let sent = sender
                .join()
                .map_err(|_| anyhow::anyhow!("the sending thread panicked"));
            let secs = length.as_secs_f64();
            std::thread::sleep(DRAIN);
            stop.store(true, Ordering::Relaxed);
            let counts = receiver
                .join()
                .map_err(|_| anyhow::anyhow!("the receiving thread panicked"))??;
            Ok((sent??, secs, counts))
        })?;
        let after = counter_totals(&self.counter)?;
        let dropped = |s: NtsStat| after[s as usize].saturating_sub(before[s as usize]);
        let rtt = percentiles(counts.rtts);
        Ok(NtsStep {
            target_rate: rate,
            offered_rate: sent as f64 / secs,
            sent,
            answered: counts.answered + dropped(NtsStat::Answered),
            verified: counts.verified,
            failed_check: counts.failed_check,
            naks: counts.naks + dropped(NtsStat::Nak),
            kod: counts.kod + dropped(NtsStat::Kod),
            invalid: counts.invalid + dropped(NtsStat::Short),
            secs,
            rtt,
        })
    }

    /// Sends at `rate` for `length` (token bucket, batches of at most `BATCH`).
    fn send(&self, rate: f64, length: Duration) -> Result<u64> {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut next = 0usize;
        let mut sock = 0usize;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= length {
                return Ok(sent);
            }
            let due = (rate * elapsed.as_secs_f64()) as u64;
            if due <= sent {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            let n = ((due - sent) as usize).min(BATCH);
            let done = self.send_batch(&self.socks[sock], next, n)?;
            sock = (sock + 1) % SOCKETS;
            next = (next + done) % POOL;
            sent += done as u64;
        }
    }

    /// Sends pool requests `first..first + n` (wrapping) on `s`; how many went.
    fn send_batch(&self, s: &UdpSocket, first: usize, n: usize) -> Result<usize> {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(n);
        let now = monotonic_ns();
        for k in 0..n {
            let i = (first + k) % POOL;
            let r = &self.pool.requests[i];
            self.sent_at[i].store(now, Ordering::Relaxed);
            iov.push(libc::iovec {
                iov_base: r.as_ptr() as *mut libc::c_void,
                iov_len: r.len(),
            });
        }
        // Each header points at one iovec above, which points into the pool's requests,
        // all alive for the call.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: all-zero bytes are a valid mmsghdr (null pointers, no lengths).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: a connected socket, `msgs` valid for `n` entries.
        let rc = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // A full socket buffer: those requests count as not sent this round.
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e).context("sendmmsg");
        }
        Ok(rc as usize)
    }

    /// Receives and classifies replies until `stop`.
    fn receive(&self, stop: &AtomicBool) -> Counts {
        let mut counts = Counts::default();
        let mut fds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `fds` is a valid array of its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
            if n <= 0 {
                continue;
            }
            for (k, f) in fds.iter().enumerate() {
                if f.revents & libc::POLLIN == 0 {
                    continue;
                }
                while let Ok(len) = self.socks[k].recv(&mut buf) {
                    self.classify(&buf[..len], &mut counts);
                }
            }
        }
        counts
    }

    fn classify(&self, reply: &[u8], c: &mut Counts) {
        let now = monotonic_ns();
        let origin = reply.get(24..32).map(|o| {
            let hi = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
            let lo = u32::from_be_bytes([o[4], o[5], o[6], o[7]]) as usize;
            (hi, lo)
        });
        let Some((MAGIC, i)) = origin.filter(|&(_, i)| i < POOL) else {
            c.invalid += 1;
            return;
        };
        if reply[1] == 0 {
            if reply.get(12..16) == Some(&b"NTSN"[..]) {
                c.naks += 1;
            } else {
                c.kod += 1;
            }
            return;
        }
        if reply.len() <= 48 {
            c.invalid += 1;
            return;
        }
        c.answered += 1;
        c.rtts
            .push(now.saturating_sub(self.sent_at[i].load(Ordering::Relaxed)));
        if let Some(s) = self.pool.sessions.get(&i) {
            let mut s = s.clone();
            if s.reply(reply).is_ok() && s.cookies() == MAX_COOKIES {
                c.verified += 1;
            } else {
                c.failed_check += 1;
            }
        }
    }
}

/// Median and p99 of `v`, if any.
fn percentiles(v: Vec<u64>) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    let r = crate::testrun::percentiles(v);
    Some(Percentiles {
        p50: r.p50_ns,
        p99: r.p99_ns,
    })
}

/// `CLOCK_MONOTONIC`, ns (0 if it cannot be read: a response time is then lost).
fn monotonic_ns() -> u64 {
    ntp_user::clock::read::monotonic_ns().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ranks_of_the_sorted_values() {
        let p = percentiles((1..=100).rev().collect()).unwrap_or_default();
        assert_eq!((p.p50, p.p99), (50, 99));
        assert!(percentiles(Vec::new()).is_none());
    }

    #[test]
    fn loss_counts_what_was_not_answered() {
        let s = NtsStep {
            sent: 200,
            answered: 150,
            secs: 2.0,
            ..Default::default()
        };
        assert!((s.loss() - 0.25).abs() < 1e-12);
        assert!((s.answered_rate() - 75.0).abs() < 1e-12);
        assert_eq!(NtsStep::default().loss(), 1.0);
    }
}
