//! NTS load: NTS-protected client requests (RFC 8915), built in userspace (the
//! authenticator covers every byte, transmit timestamp included, so each is built once,
//! in a pool) and sent in turn by a `BPF_PROG_TEST_RUN` live-frames program, as the plain
//! load is, which writes the headers and notes each departure. An XDP program at the
//! client end times and counts the replies, passing one in [`NTS_PASS_EVERY`] up to the
//! client sockets, where a sample is checked in full.

use crate::{
    generator::{LiveFrames, Template, histogram, reset_counts, stat_sum, write_config},
    histogram::Percentiles,
    topology::{CLIENT_CPU, pin_thread, yield_to_others},
};
use anyhow::{Context, Result, bail};
use ntp_common::load::{
    HIST_RTT, LoadConfig, MAP_NTS_POOL, MAP_NTS_STATS, NTS_PASS_EVERY, NTS_POOL, NTS_POOL_MAGIC,
    NTS_REQUEST_MAX, NTS_STATS, NtsPoolRequest, NtsStat, PROG_NTS_COUNT, PROG_NTS_GEN, Stat,
};
use ntp_proto::nts::{ClientSession, MAX_COOKIES, SessionKeys};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// The high half of every pool request's transmit timestamp (the low half is its index):
/// a reply's origin timestamp names the request it answers.
const MAGIC: u32 = NTS_POOL_MAGIC;
/// Requests in the pool, sent in turn.
pub const POOL: usize = NTS_POOL as usize;
/// Every `SAMPLE`-th request's replies are checked in full (authenticator under the
/// session's server-to-client key, unique identifier, cookie): checking all would cost
/// the generator's CPU what the server spends. A multiple of [`NTS_PASS_EVERY`], so
/// those replies reach the sockets.
const SAMPLE: usize = 16 * NTS_PASS_EVERY as usize;
/// Client ports (a socket on each, for the replies passed up; the generator mixes a
/// request's port from its index), so a server's `SO_REUSEPORT` group (the kernel
/// hashes each client's address and port) spreads the requests over its sockets.
const SOCKETS: usize = 64;
/// Requests that may leave back to back after a pause.
const BURST: u64 = 32;
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
    /// Response time (reply at the client end's counter − the request's departure from
    /// the generator program, one clock), ns.
    pub rtt: Option<Percentiles>,
    /// Replies timed for it.
    #[serde(default)]
    pub timed: u64,
    /// Requests the server end's veth ring refused (its receive thread too slow).
    #[serde(default)]
    pub refused_by_server_end: u64,
    /// Replies the client end's ring refused (the rig's loss, not the server's).
    #[serde(default)]
    pub refused_by_client_end: u64,
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

/// The generator: the pool (in its map), the programs and the client sockets.
pub struct NtsLoad {
    pool: Pool,
    socks: Vec<UdpSocket>,
    /// The generator program and the reply counter, attached to the client end
    /// (detached when dropped).
    ebpf: aya::Ebpf,
    live: LiveFrames,
    cfg: LoadConfig,
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
}

impl NtsLoad {
    /// The programs loaded in the calling thread's namespace, the counter attached to
    /// `iface` (the client end, with address `client`), the pool written to its map, and
    /// client sockets on consecutive ports, connected to `server`.
    pub fn new(
        server: SocketAddr,
        pool: Pool,
        iface: &str,
        template: &Template,
        client: Ipv4Addr,
    ) -> Result<Self> {
        let mut ebpf = aya::Ebpf::load(ntp_user::BENCH_OBJECT)
            .context("loading the ntpx-bench eBPF object")?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut(PROG_NTS_GEN)
            .context("NTS generator program missing")?
            .try_into()?;
        prog.load().context("loading the NTS generator")?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut(PROG_NTS_COUNT)
            .context("NTS counter program missing")?
            .try_into()?;
        prog.load().context("loading the NTS counter")?;
        prog.attach(iface, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching the NTS counter to {iface}"))?;
        let len = pool.request_len();
        if len > NTS_REQUEST_MAX {
            bail!("NTS requests of {len} bytes: the generator sends up to {NTS_REQUEST_MAX}");
        }
        {
            let map = ebpf.map_mut(MAP_NTS_POOL).context("NTS pool map missing")?;
            let mut slots = aya::maps::Array::<_, PoolRequestPod>::try_from(map)?;
            for (i, r) in pool.requests.iter().enumerate() {
                let mut slot = NtsPoolRequest {
                    words: [0; NTS_REQUEST_MAX / 4],
                };
                for (w, b) in slot.words.iter_mut().zip(r.chunks(4)) {
                    let mut word = [0u8; 4];
                    word[..b.len()].copy_from_slice(b);
                    *w = u32::from_ne_bytes(word);
                }
                slots
                    .set(i as u32, PoolRequestPod(slot), 0)
                    .with_context(|| format!("writing pool request {i}"))?;
            }
        }
        let (port, socks) = client_sockets(client, server)?;
        let cfg = LoadConfig {
            first_client: u32::from(client),
            clients: 1,
            server: match server.ip() {
                std::net::IpAddr::V4(v) => u32::from(v),
                std::net::IpAddr::V6(v) => bail!("the NTS generator is IPv4 only, not {v}"),
            },
            macs: template.macs(),
            burst: BURST,
            nts_len: len as u32,
            nts_port: u32::from(port),
            nts_ports: SOCKETS as u32,
            ..LoadConfig::default()
        };
        // The program writes every byte it sends, and cuts the frame to the requests'
        // length.
        let live = LiveFrames::new(vec![0u8; 42 + NTS_REQUEST_MAX], iface)?;
        Ok(NtsLoad {
            pool,
            socks,
            ebpf,
            live,
            cfg,
        })
    }

    /// Length of the requests, bytes.
    pub fn request_len(&self) -> usize {
        self.pool.request_len()
    }

    /// Offers `rate` requests a second for `length`, then waits for the last replies.
    /// The sending thread and the receiving one both run on the generator's CPU; the
    /// servers may use every CPU.
    pub fn step(&mut self, rate: f64, length: Duration) -> Result<NtsStep> {
        if rate.is_nan() || rate <= 0.0 {
            bail!("rate must be positive, not {rate}");
        }
        self.cfg.interval_ns = (1e9 / rate).max(1.0) as u64;
        write_config(&mut self.ebpf, self.cfg)?;
        reset_counts(&mut self.ebpf)?;
        let before = counter_totals(&self.ebpf)?;
        let stop = AtomicBool::new(false);
        let (socks, pool) = (&self.socks, &self.pool);
        let (ebpf, live) = (&mut self.ebpf, &mut self.live);
        let (secs, counts) = std::thread::scope(|scope| -> Result<_> {
            let receiver = scope.spawn(|| -> Result<Counts> {
                pin_thread(CLIENT_CPU)?;
                Ok(receive(socks, pool, &stop))
            });
            let sender = scope.spawn(move || -> Result<f64> {
                pin_thread(CLIENT_CPU)?;
                yield_to_others()?;
                live.send_for(ebpf, PROG_NTS_GEN, rate, length)
            });
            let secs = sender
                .join()
                .map_err(|_| anyhow::anyhow!("the sending thread panicked"));
            std::thread::sleep(DRAIN);
            stop.store(true, Ordering::Relaxed);
            let counts = receiver
                .join()
                .map_err(|_| anyhow::anyhow!("the receiving thread panicked"))??;
            Ok((secs??, counts))
        })?;
        let after = counter_totals(&self.ebpf)?;
        let dropped = |s: NtsStat| after[s as usize].saturating_sub(before[s as usize]);
        let sent = stat_sum(&self.ebpf, Stat::Sent)?;
        let times = histogram(&self.ebpf, HIST_RTT)?;
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
            rtt: times.percentiles(),
            timed: times.total(),
            ..NtsStep::default()
        })
    }
}

/// `SOCKETS` client sockets on consecutive ports of `client`, connected to `server`:
/// the first port and the sockets.
fn client_sockets(client: Ipv4Addr, server: SocketAddr) -> Result<(u16, Vec<UdpSocket>)> {
    // Ports below the usual ephemeral range (32768 up), so no socket of the namespace
    // takes one meanwhile, tried in blocks until one is wholly free (the namespace is
    // the bench's own: the first normally is).
    for block in 0..64u16 {
        let first = 20_000 + block * SOCKETS as u16;
        let socks: std::io::Result<Vec<UdpSocket>> = (0..SOCKETS as u16)
            .map(|k| UdpSocket::bind(SocketAddr::new(client.into(), first + k)))
            .collect();
        let Ok(socks) = socks else {
            continue;
        };
        for s in &socks {
            s.connect(server)
                .with_context(|| format!("connecting to {server}"))?;
            s.set_nonblocking(true)?;
        }
        return Ok((first, socks));
    }
    bail!("no {SOCKETS} consecutive free UDP ports on {client}")
}

/// `NtsPoolRequest` for aya's map API.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct PoolRequestPod(NtsPoolRequest);
// SAFETY: NtsPoolRequest is repr(C), Copy and bytemuck::Pod: any bit pattern is valid.
unsafe impl aya::Pod for PoolRequestPod {}

/// Receives and classifies the replies passed up to `socks` until `stop`.
fn receive(socks: &[UdpSocket], pool: &Pool, stop: &AtomicBool) -> Counts {
    let mut counts = Counts::default();
    let mut fds: Vec<libc::pollfd> = socks
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
            while let Ok(len) = socks[k].recv(&mut buf) {
                classify(pool, &buf[..len], &mut counts);
            }
        }
    }
    counts
}

/// Counts a reply passed up; checks it in full if its request is in the sample.
fn classify(pool: &Pool, reply: &[u8], c: &mut Counts) {
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
    if let Some(s) = pool.sessions.get(&i) {
        let mut s = s.clone();
        if s.reply(reply).is_ok() && s.cookies() == MAX_COOKIES {
            c.verified += 1;
        } else {
            c.failed_check += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
