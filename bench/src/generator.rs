//! The load generator: `BPF_PROG_TEST_RUN` live frames out of the client end of a veth pair,
//! paced in chunks from userspace, and the reply counter on the same interface.

use crate::histogram::{Histogram, Percentiles};
use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use ntp_common::load::{
    BUCKETS, HIST_OFFSET, HIST_PROC, HIST_RTT, HIST_TX_GAP, HIST_XLEAVE_GAP, HISTS, LoadConfig,
    MAP_LOAD_CFG, MAP_LOAD_HIST, MAP_LOAD_STATS, MAP_LOAD_XLEAVE, PROG_LOAD_COUNT, PROG_LOAD_GEN,
    STATS, Stat, XLEAVE_CLIENTS, XleaveSlot,
};
use ntp_common::timebase::unix_ns_to_ntp;
use ntpx_tests::frames;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Requests that may leave back to back after a pause (well inside a 256-frame ring).
const BURST: u64 = 32;
/// Target length of one `BPF_PROG_TEST_RUN` call: each costs milliseconds of set-up and
/// tear-down (a page pool), during which nothing is sent.
const CALL: Duration = Duration::from_secs(2);
/// Frames per batch inside the kernel (its `xdp_do_flush` interval).
const BATCH: u32 = 64;
/// How long replies may trail the last request of a step.
const GRACE: Duration = Duration::from_millis(300);

/// Addresses of the request template.
#[derive(Clone, Debug)]
pub struct Template {
    /// Client-side MAC (the generator's interface).
    pub src_mac: [u8; 6],
    /// Server-side MAC.
    pub dst_mac: [u8; 6],
    /// Server address.
    pub dst: Ipv4Addr,
}

impl Template {
    /// The MACs as the load configuration holds them: the server's, then the client
    /// end's.
    pub fn macs(&self) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[..6].copy_from_slice(&self.dst_mac);
        m[6..12].copy_from_slice(&self.src_mac);
        m
    }
}

/// A 90-byte `NTPv4` client request frame to `t.dst`: the initial content of the
/// generator's pages (the program rewrites every byte of each frame it sends).
pub fn request_frame(t: &Template) -> Vec<u8> {
    let ntp = frames::ntp_request(4, ntp_common::wire::MODE_CLIENT, 6, 0);
    let mut spec = frames::Spec::udp("0.0.0.0", &t.dst.to_string(), &ntp);
    spec.sport = 0;
    (spec.dst_mac, spec.src_mac) = (t.dst_mac, t.src_mac);
    frames::build(&spec)
}

/// What one step measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Step {
    /// Requested rate, per second.
    pub target_rate: f64,
    /// Rate actually offered (requests sent / step length), per second.
    pub offered_rate: f64,
    /// Requests sent.
    pub sent: u64,
    /// Valid replies.
    pub answered: u64,
    /// Replies that matched no request or were malformed.
    pub invalid: u64,
    /// Late replies to an earlier step.
    pub stale: u64,
    /// Valid replies with leap indicator 3.
    pub unsynchronised: u64,
    /// Valid replies that were Kiss-o'-Death.
    pub kod: u64,
    /// Step length, seconds (sending only).
    pub secs: f64,
    /// Response time (reply arrival − request departure), ns.
    pub rtt: Option<Latency>,
    /// Server processing delay (its transmit − receive timestamps), ns.
    pub processing: Option<Latency>,
    /// Absolute offset the client measures (truth 0), ns.
    pub offset_error: Option<Percentiles>,
    /// Requests the server end's ring refused (counted by the client end's veth).
    #[serde(default)]
    pub refused_by_server_end: u64,
    /// Replies the client end's ring refused (the rig's loss, not the server's).
    #[serde(default)]
    pub refused_by_client_end: u64,
    /// Basic replies: how long before the reply reached the client end its transmit
    /// timestamp was taken, ns.
    #[serde(default)]
    pub tx_gap: Option<Percentiles>,
    /// Replies in interleaved mode (an interleaved load only).
    #[serde(default)]
    pub interleaved: u64,
    /// Interleaved replies: how long before the previous reply reached the client end
    /// the departure time this reply reports for it was taken, ns.
    #[serde(default)]
    pub xleave_gap: Option<Percentiles>,
}

impl Step {
    /// Answered rate, per second.
    pub fn answered_rate(&self) -> f64 {
        self.answered as f64 / self.secs.max(1e-9)
    }

    /// Fraction of requests not answered.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - (self.answered as f64 / self.sent as f64).min(1.0)
    }
}

/// Minimum, median, p99 and maximum of a latency, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Smallest.
    pub min: u64,
    /// Median (bucket lower bound, within 3 %).
    pub p50: u64,
    /// 99th percentile (bucket lower bound, within 3 %).
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// The generator and counter programs, loaded, with the counter attached. Interface
/// indexes belong to a network namespace: create and step it from a thread inside the
/// client's namespace.
pub struct Generator {
    ebpf: Ebpf,
    live: LiveFrames,
    cfg: LoadConfig,
    _link: XdpLinkId,
}

/// `BPF_PROG_TEST_RUN` live frames out of an interface: the frame a generator program
/// is given (it writes every byte it sends) and how fast its calls run.
pub(crate) struct LiveFrames {
    frame: Vec<u8>,
    /// struct `xdp_md`: data 0, `data_end` the frame's length, `data_meta` 0, ingress
    /// ifindex.
    ctx: [u8; 24],
    /// How many program runs a second a call manages (learnt; sizes the next call).
    runs_per_sec: f64,
}

impl LiveFrames {
    /// Frames of `frame`'s length and initial content, out of interface `iface` (of the
    /// calling thread's namespace).
    pub(crate) fn new(frame: Vec<u8>, iface: &str) -> Result<Self> {
        let ifindex = if_index(iface)?;
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        Ok(LiveFrames {
            frame,
            ctx,
            runs_per_sec: 2e6,
        })
    }

    /// Runs program `prog` of `ebpf` (pacing itself at `rate`, told by the load
    /// configuration) for `length`, in calls as long as [`CALL`]; the seconds it ran.
    pub(crate) fn send_for(
        &mut self,
        ebpf: &mut Ebpf,
        prog: &str,
        rate: f64,
        length: Duration,
    ) -> Result<f64> {
        // At modest rates every request leaves at once (a flush per run), so the time from
        // its stamp to the wire is not a batch's wait; at high rates batches save the CPU.
        let batch = if rate <= 200_000.0 { 1 } else { BATCH };
        let prog = xdp(ebpf, prog)?;
        let start = Instant::now();
        loop {
            let remaining = length.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                break;
            }
            let n = (self.runs_per_sec * remaining.min(CALL).as_secs_f64()).clamp(1e3, 4e9);
            let t = Instant::now();
            prog.test_run(TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(&self.ctx),
                repeat: n as u32,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN with live frames")?;
            let took = t.elapsed().as_secs_f64();
            if took > 0.0 {
                self.runs_per_sec = n / took;
            }
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

/// Writes the load configuration both programs read.
pub(crate) fn write_config(ebpf: &mut Ebpf, cfg: LoadConfig) -> Result<()> {
    let map = ebpf
        .map_mut(MAP_LOAD_CFG)
        .ok_or_else(|| anyhow!("map {MAP_LOAD_CFG} missing"))?;
    let mut a: Array<_, LoadConfigPod> = Array::try_from(map)?;
    a.set(0, LoadConfigPod(cfg), 0)
        .context("writing the load configuration")?;
    Ok(())
}

/// Zeroes the statistics (the minima at their largest) and the histograms.
pub(crate) fn reset_counts(ebpf: &mut Ebpf) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| anyhow!("counting CPUs: {e}"))?;
    {
        let map = ebpf
            .map_mut(MAP_LOAD_STATS)
            .ok_or_else(|| anyhow!("map {MAP_LOAD_STATS} missing"))?;
        let mut stats: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        for i in 0..STATS {
            let v = if i == Stat::RttMin as u32 || i == Stat::ProcMin as u32 {
                u64::MAX
            } else {
                0
            };
            let values = PerCpuValues::try_from(vec![v; cpus])
                .map_err(|e| anyhow!("per-CPU values for {cpus} CPUs: {e}"))?;
            stats
                .set(i, values, 0)
                .with_context(|| format!("resetting statistic {i}"))?;
        }
    }
    let map = ebpf
        .map_mut(MAP_LOAD_HIST)
        .ok_or_else(|| anyhow!("map {MAP_LOAD_HIST} missing"))?;
    let mut hist: Array<_, u64> = Array::try_from(map)?;
    for i in 0..HISTS * BUCKETS {
        hist.set(i, 0, 0)
            .with_context(|| format!("resetting histogram slot {i}"))?;
    }
    Ok(())
}

/// Statistic `s` on each CPU.
fn per_cpu(ebpf: &Ebpf, s: Stat) -> Result<Vec<u64>> {
    let map = ebpf
        .map(MAP_LOAD_STATS)
        .ok_or_else(|| anyhow!("map {MAP_LOAD_STATS} missing"))?;
    let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    Ok(stats.get(&(s as u32), 0)?.iter().copied().collect())
}

/// Statistic `s` summed over the CPUs.
pub(crate) fn stat_sum(ebpf: &Ebpf, s: Stat) -> Result<u64> {
    Ok(per_cpu(ebpf, s)?.iter().sum())
}

/// Histogram `h` as the counter left it.
pub(crate) fn histogram(ebpf: &Ebpf, h: u32) -> Result<Histogram> {
    let map = ebpf
        .map(MAP_LOAD_HIST)
        .ok_or_else(|| anyhow!("map {MAP_LOAD_HIST} missing"))?;
    let hist: Array<_, u64> = Array::try_from(map)?;
    let counts = (0..BUCKETS)
        .map(|b| hist.get(&(h * BUCKETS + b), 0))
        .collect::<Result<Vec<u64>, _>>()?;
    Ok(Histogram::from_counts(counts))
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?)
}

impl Generator {
    /// Loads the programs in the calling thread's network namespace and attaches the
    /// counter to `iface` (native mode). Requests come from `clients` addresses starting
    /// at `first_client`; with `echo`, the target bounces requests instead of answering.
    pub fn new(
        iface: &str,
        template: &Template,
        first_client: Ipv4Addr,
        clients: u32,
        echo: bool,
    ) -> Result<Self> {
        let mut ebpf =
            Ebpf::load(ntp_user::BENCH_OBJECT).context("loading the ntpx-bench eBPF object")?;
        xdp(&mut ebpf, PROG_LOAD_GEN)?
            .load()
            .context("loading the generator program")?;
        let count = xdp(&mut ebpf, PROG_LOAD_COUNT)?;
        count.load().context("loading the counter program")?;
        let link = count
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching the counter to {iface} (native mode)"))?;
        let live = LiveFrames::new(request_frame(template), iface)?;
        let cfg = LoadConfig {
            tai_offset_ns: tai_offset_ns()?,
            first_client: u32::from(first_client),
            clients: clients.max(1),
            step_start_ntp: 0,
            interval_ns: 0,
            burst: BURST,
            echo: echo as u32,
            xleave: 0,
            server: u32::from(template.dst),
            macs: template.macs(),
            ..LoadConfig::default()
        };
        let mut g = Generator {
            ebpf,
            live,
            cfg,
            _link: link,
        };
        g.write_config()?;
        Ok(g)
    }

    fn write_config(&mut self) -> Result<()> {
        write_config(&mut self.ebpf, self.cfg)
    }

    /// Makes every client ask for interleaved mode once it has had a reply (chrony's
    /// `xleave`), or not. The chains start afresh each step.
    pub fn set_xleave(&mut self, on: bool) -> Result<()> {
        if on && self.cfg.clients > XLEAVE_CLIENTS {
            bail!(
                "an interleaved load chains at most {XLEAVE_CLIENTS} clients, not {}",
                self.cfg.clients
            );
        }
        self.cfg.xleave = on as u32;
        self.write_config()
    }

    fn reset(&mut self) -> Result<()> {
        reset_counts(&mut self.ebpf)?;
        if self.cfg.xleave != 0 {
            let map = self
                .ebpf
                .map_mut(MAP_LOAD_XLEAVE)
                .ok_or_else(|| anyhow!("map {MAP_LOAD_XLEAVE} missing"))?;
            let mut slots: Array<_, XleaveSlotPod> = Array::try_from(map)?;
            for i in 0..self.cfg.clients.min(XLEAVE_CLIENTS) {
                slots
                    .set(i, XleaveSlotPod(XleaveSlot::default()), 0)
                    .with_context(|| format!("resetting interleave slot {i}"))?;
            }
        }
        Ok(())
    }

    /// Offers `rate` requests per second for `length`, then waits for stragglers. The
    /// generator program paces itself; calls run it as often as they can.
    pub fn step(&mut self, rate: f64, length: Duration) -> Result<Step> {
        if rate.is_nan() || rate <= 0.0 {
            bail!("rate must be positive, not {rate}");
        }
        // The new step's start first: a reply to the previous step arriving during the
        // reset then counts as late, not as answered.
        let now_unix = ntp_user::clock::realtime_ns()?;
        self.cfg.step_start_ntp = unix_ns_to_ntp(now_unix);
        self.cfg.interval_ns = (1e9 / rate).max(1.0) as u64;
        self.write_config()?;
        self.reset()?;
        let secs = self
            .live
            .send_for(&mut self.ebpf, PROG_LOAD_GEN, rate, length)?;
        std::thread::sleep(GRACE);
        let mut step = self.collect()?;
        step.target_rate = rate;
        step.secs = secs;
        step.offered_rate = step.sent as f64 / secs;
        Ok(step)
    }

    fn collect(&mut self) -> Result<Step> {
        let sum = |s: Stat| stat_sum(&self.ebpf, s);
        let min = |s: Stat| {
            Ok::<_, anyhow::Error>(per_cpu(&self.ebpf, s)?.into_iter().min().unwrap_or(0))
        };
        let max = |s: Stat| {
            Ok::<_, anyhow::Error>(per_cpu(&self.ebpf, s)?.into_iter().max().unwrap_or(0))
        };
        let read = |h: u32| histogram(&self.ebpf, h);
        let latency = |h: Histogram, lo: u64, hi: u64| {
            h.percentiles().map(|p| Latency {
                min: lo,
                p50: p.p50,
                p99: p.p99,
                max: hi,
            })
        };
        Ok(Step {
            sent: sum(Stat::Sent)?,
            answered: sum(Stat::Answered)?,
            invalid: sum(Stat::Invalid)?,
            stale: sum(Stat::Stale)?,
            unsynchronised: sum(Stat::Unsynchronised)?,
            kod: sum(Stat::Kod)?,
            rtt: latency(read(HIST_RTT)?, min(Stat::RttMin)?, max(Stat::RttMax)?),
            processing: latency(read(HIST_PROC)?, min(Stat::ProcMin)?, max(Stat::ProcMax)?),
            offset_error: read(HIST_OFFSET)?.percentiles(),
            tx_gap: read(HIST_TX_GAP)?.percentiles(),
            interleaved: sum(Stat::Interleaved)?,
            xleave_gap: read(HIST_XLEAVE_GAP)?.percentiles(),
            ..Default::default()
        })
    }
}

/// `XleaveSlot` for aya's map API.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct XleaveSlotPod(XleaveSlot);
// SAFETY: XleaveSlot is repr(C), Copy and bytemuck::Pod: any bit pattern is valid.
unsafe impl aya::Pod for XleaveSlotPod {}

/// `LoadConfig` for aya's map API.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct LoadConfigPod(LoadConfig);
// SAFETY: LoadConfig is repr(C), Copy and bytemuck::Pod: any bit pattern is valid.
unsafe impl aya::Pod for LoadConfigPod {}

fn if_index(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface).context("interface name")?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        bail!("no interface {iface}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

/// `CLOCK_TAI` − `CLOCK_REALTIME`, ns, rounded to whole seconds (it only ever is whole).
fn tai_offset_ns() -> Result<u64> {
    let tai = ntp_user::clock::tai_ns()?;
    let real = ntp_user::clock::realtime_ns()?;
    let secs = ((tai as i128 - real as i128) as f64 / 1e9).round() as i64;
    Ok((secs.max(0) as u64) * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_well_formed_ntp_request() {
        let t = Template {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            dst: Ipv4Addr::new(198, 18, 30, 1),
        };
        let f = request_frame(&t);
        assert_eq!(f.len(), 14 + 20 + 8 + 48);
        assert_eq!(&f[0..6], &t.dst_mac);
        assert_eq!(&f[30..34], &[198, 18, 30, 1]);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 76);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 123);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 56);
        assert!(ntp_common::wire::is_answerable_request(f[42]));
    }

    #[test]
    fn loss_and_rates_follow_the_counts() {
        let s = Step {
            sent: 1000,
            answered: 990,
            secs: 2.0,
            ..Default::default()
        };
        assert!((s.loss() - 0.01).abs() < 1e-12);
        assert_eq!(s.answered_rate(), 495.0);
        assert_eq!(Step::default().loss(), 0.0);
    }
}
