//! A simulator of clocks and networks that runs the daemon's own synchronization code:
//! the [`Engine`] (pollers, statistics, selection, the clock update) over the daemon's
//! [`SteeredClock`] on a model of the kernel clock, polled on the schedule the daemon's
//! tasks keep, through a network of exponential delay tails, asymmetry, loss and outages,
//! to servers that may be wrong or step. The true offset of the client's system clock and
//! its effective frequency error (slews included) are sampled every simulated second and
//! judged as chrony's simulation tests judge chronyd.

mod kernel;
mod scenarios;

use crate::{
    clock::{Clock, EngineClock, RealtimeClock, SteeredClock},
    config::SyncConfig,
    engine::{Engine, Log, SourceOptions, WireInfo},
    packet::{NtpHeader, NtpTimestamp},
    report::Stamp,
};
use kernel::{KernelModel, true_ns};
use ntp_common::prng::XorShift;
use std::{cmp::Ordering, collections::BinaryHeap};

/// The local clock's precision (clknetsim's clocks read in about 100 ns).
const PRECISION: f64 = 1e-7;
/// How late the daemon's timers fire: tokio's timer wheel has millisecond slots.
const TIMER_GRANULARITY: f64 = 1e-3;

/// One upstream server.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    /// Its clock minus true time, seconds.
    pub offset: f64,
    /// Steps of its clock: (true time, seconds added).
    pub steps: Vec<(f64, f64)>,
    /// Its stratum.
    pub stratum: u8,
    /// The client's options for it.
    pub opts: SourceOptions,
    /// Extra one-way delay on the way to it, seconds (a slower path).
    pub extra_delay: f64,
    /// A route change: from this true time on, this much more delay on the way to it.
    pub route_change: Option<(f64, f64)>,
    /// Its clock's frequency error (ratio), from the start.
    pub drift: f64,
    /// Standard deviation of the normal error of its receive and transmit timestamps
    /// (a server cooking NIC timestamps through its PHC readings), seconds.
    pub stamp_jitter: f64,
}

impl Server {
    /// A perfect stratum-1 server.
    pub(crate) fn good(opts: SourceOptions) -> Self {
        Server {
            offset: 0.0,
            steps: Vec::new(),
            stratum: 1,
            opts,
            extra_delay: 0.0,
            route_change: None,
            drift: 0.0,
            stamp_jitter: 0.0,
        }
    }

    fn error_at(&self, t: f64) -> f64 {
        self.offset
            + self.drift * t
            + self
                .steps
                .iter()
                .filter(|(at, _)| t >= *at)
                .map(|(_, by)| by)
                .sum::<f64>()
    }
}

/// A reference clock on the client (a GPS receiver through SHM, a PHC).
#[derive(Clone, Debug)]
pub(crate) struct SimRefclock {
    /// Its `refclock` line.
    pub config: crate::config::RefclockConfig,
    /// Its time minus true time, seconds.
    pub offset: f64,
    /// Standard deviation of the normal noise of each reading, seconds.
    pub jitter: f64,
}

/// How long after a pulse the daemon reads its timestamp from the PHC, seconds.
const PULSE_READ_DELAY: f64 = 2e-5;

/// Whether a simulated reference clock is a PHC timestamping pulses (`extpps`); it needs
/// the scenario's NIC, whose clock it is.
fn extpps(rc: &SimRefclock) -> bool {
    matches!(
        rc.config.driver,
        crate::config::RefclockDriver::Phc { extpps: true, .. }
    )
}

/// The client's NIC, with a clock of its own that timestamps its packets (`hwtimestamp`)
/// and is read against the system clock as the `PTP_SYS_OFFSET*` ioctls read it.
#[derive(Clone, Debug)]
pub(crate) struct SimNic {
    /// Its clock minus true time at the start, seconds.
    pub offset: f64,
    /// Its clock's frequency error (ratio).
    pub freq: f64,
    /// Mean time between the two system clock reads around a PHC reading, seconds.
    pub phc_delay: f64,
    /// Standard deviation of that time, seconds.
    pub phc_jitter: f64,
    /// Share of the extra time that falls before the PHC is read (0.5: symmetric).
    pub phc_asym: f64,
    /// The PHC is read every 2^poll seconds (`hwtimestamp minpoll`).
    pub poll: i8,
    /// Readings per poll (chrony takes 25).
    pub readings: usize,
}

/// The network between the client and every server.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    /// Minimum one-way delay, seconds.
    pub base_delay: f64,
    /// Mean of the exponential extra delay, seconds.
    pub jitter: f64,
    /// chrony's `jitter_asymmetry`: the way out gets `1 − 2a` of the jitter, back `1 + 2a`.
    pub asymmetry: f64,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// True-time intervals in which nothing passes.
    pub outages: Vec<(f64, f64)>,
    /// Only one request in this many gets through (1: all).
    pub pass_every: u64,
    /// Mean (exponential) time between a packet on the wire and the kernel's software
    /// timestamp of it: after arrival, before departure (0: exact stamps).
    pub sw_stamp_latency: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            base_delay: 1e-4,
            jitter: 1e-4,
            asymmetry: 0.0,
            loss: 0.0,
            outages: Vec::new(),
            pass_every: 1,
            sw_stamp_latency: 0.0,
        }
    }
}

/// A scenario: the client, its servers, the network and the run.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    /// The client's clock minus true time at the start, seconds.
    pub time_offset: f64,
    /// The client's oscillator frequency error at the start (positive: fast).
    pub freq_offset: f64,
    /// Standard deviation of the per-second random walk of that error.
    pub wander: f64,
    /// The servers.
    pub servers: Vec<Server>,
    /// The client's reference clocks.
    pub refclocks: Vec<SimRefclock>,
    /// The client's NIC stamps its packets (`hwtimestamp`); `None`: kernel software
    /// stamps.
    pub nic: Option<SimNic>,
    /// The network.
    pub net: Network,
    /// The client's synchronization settings.
    pub sync: SyncConfig,
    /// The driftfile's frequency (ppm, the clock's error, fast positive) and skew (ppm).
    pub drift: Option<(f64, f64)>,
    /// `local`.
    pub local: Option<crate::config::LocalConfig>,
    /// Jumps of the client's clock nobody announced: (true time, seconds).
    pub client_jumps: Vec<(f64, f64)>,
    /// Seconds simulated.
    pub limit: f64,
    /// Seed of the randomness.
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            time_offset: 0.1,
            freq_offset: 1e-4,
            wander: 1e-9,
            servers: vec![Server::good(SourceOptions::default())],
            refclocks: Vec::new(),
            nic: None,
            net: Network::default(),
            sync: SyncConfig::default(),
            drift: None,
            local: None,
            client_jumps: Vec::new(),
            limit: 10_000.0,
            seed: 1,
        }
    }
}

/// What a run recorded: per simulated second, the system clock's offset from true time
/// (or from the servers' time, where they stepped) and its effective frequency error.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trace {
    /// Offset at second k, seconds (positive: ahead).
    pub offset: Vec<f64>,
    /// Effective rate error at second k (slewing counts).
    pub freq: Vec<f64>,
    /// The frequency the clock runs at without slewing, at second k, minus one.
    pub base_freq: Vec<f64>,
    /// Log lines with the second they came at.
    pub log: Vec<(f64, String)>,
    /// Steps of the system clock.
    pub steps: Vec<f64>,
    /// The served time's offset (system clock plus the correction a reply carries) at
    /// second k.
    pub served: Vec<f64>,
    /// The served time's offset just before and just after each change of the slew rate:
    /// they differ where the served rate and the kernel's disagree.
    pub served_across_ticks: Vec<(f64, f64)>,
    /// The log-file lines (measurements, statistics, tracking) in order.
    pub records: Vec<String>,
    /// Requests sent.
    pub requests: u64,
    /// What the server said at second k: stratum, reference id, root distance.
    pub reference: Vec<(u8, [u8; 4], f64)>,
    /// The daemon gave up (a fatal log line), at this second.
    pub exited: Option<f64>,
}

/// chrony's pass bounds (`check_sync` in its test harness).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Synchronized no earlier than this, seconds.
    pub min_sync: f64,
    /// Synchronized no later than this; the statistics window starts here.
    pub max_sync: f64,
    /// Largest offset in the window, and the threshold of "synchronized".
    pub time_max: f64,
    /// Largest frequency error in the window, and the threshold of "synchronized".
    pub freq_max: f64,
    /// RMS offset in the window.
    pub time_rms: f64,
    /// RMS frequency error in the window.
    pub freq_rms: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            min_sync: 120.0,
            max_sync: 210.0,
            time_max: 1e-3,
            freq_max: 5e-4,
            time_rms: 3e-4,
            freq_rms: 1e-5,
        }
    }
}

/// What a trace shows against bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Figures {
    /// When the clock was last outside the limits, plus one second.
    pub sync_time: f64,
    /// Over the window: largest and RMS offset, largest and RMS frequency error.
    pub max_offset: f64,
    /// RMS offset.
    pub rms_offset: f64,
    /// Largest frequency error.
    pub max_freq: f64,
    /// RMS frequency error.
    pub rms_freq: f64,
}

impl Trace {
    /// The figures chrony's harness computes: the sync time, then the statistics from
    /// `from` (seconds) to the end.
    pub(crate) fn figures(&self, b: &Bounds, from: f64) -> Figures {
        let last_bad = self
            .offset
            .iter()
            .zip(&self.freq)
            .enumerate()
            .filter(|(_, (o, f))| o.abs() > b.time_max || f.abs() > b.freq_max)
            .map(|(k, _)| k)
            .max();
        let sync_time = last_bad.map_or(0.0, |k| k as f64 + 1.0);
        let start = from as usize;
        let o = &self.offset[start.min(self.offset.len())..];
        let f = &self.freq[start.min(self.freq.len())..];
        let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt();
        let max = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        Figures {
            sync_time,
            max_offset: max(o),
            rms_offset: rms(o),
            max_freq: max(f),
            rms_freq: rms(f),
        }
    }

    /// Whether the trace passes `b`; the figures either way.
    pub(crate) fn check(&self, b: &Bounds) -> (bool, Figures) {
        let f = self.figures(b, b.max_sync);
        let ok = f.sync_time >= b.min_sync - 1e-6
            && f.sync_time <= b.max_sync + 1e-6
            && f.max_offset <= b.time_max
            && f.max_freq <= b.freq_max
            && f.rms_offset <= b.time_rms
            && f.rms_freq <= b.freq_rms;
        (ok, f)
    }

    /// Log lines containing `text`.
    pub(crate) fn count(&self, text: &str) -> usize {
        self.log.iter().filter(|(_, l)| l.contains(text)).count()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    /// Source `i`'s poll timer (token: only the latest counts).
    Transmit { src: usize, token: u64 },
    /// A request reaches server `src`.
    AtServer { src: usize, cookie: u64 },
    /// A reply reaches the client.
    AtClient { src: usize, reply: [u8; 48] },
    /// The clock's slew timer (token: only the latest counts).
    ClockTimer { token: u64 },
    /// A simulated second: wander, and a sample of the trace.
    Second,
    /// Reference clock `rc`'s timer: a driver read and the end of a poll.
    Refclock { rc: usize },
    /// The NIC's PHC is read.
    Phc,
    /// A pulse of `extpps` reference clock `rc`, read from the PHC's event queue.
    Pulse { rc: usize },
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    at: f64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        // A max-heap popping the earliest first.
        o.at.total_cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

/// A running simulation.
pub(crate) struct Sim {
    sc: Scenario,
    engine: Engine<SteeredClock<KernelModel>>,
    ids: Vec<usize>,
    refclock_ids: Vec<usize>,
    hw: Option<crate::hwclock::HwClock>,
    rng: XorShift,
    queue: BinaryHeap<Queued>,
    seq: u64,
    now: f64,
    transmit_token: Vec<u64>,
    /// Per source: (true time of the last send, its randomness factor).
    last_sent: Vec<(f64, f64)>,
    clock_token: u64,
    requests: u64,
    trace: Trace,
}

impl Sim {
    /// Sets up `sc`: the client daemon starts at true time 0.
    pub(crate) fn new(sc: Scenario) -> Self {
        let model = KernelModel::new(sc.time_offset, sc.freq_offset);
        // The driftfile's frequency is the clock's error; the correction undoes it.
        let freq = sc.drift.map_or(0.0, |(f, _)| -f * 1e-6);
        let clock = SteeredClock::new(
            model,
            freq,
            sc.sync.max_slew_rate_ppm * 1e-6,
            sc.sync.max_drift_ppm * 1e-6,
        );
        let mut engine = Engine::new(
            clock,
            &sc.sync,
            sc.local,
            PRECISION,
            sc.drift.map(|(_, s)| s * 1e-6),
        );
        let ids: Vec<usize> = sc
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let addr = format!("192.168.123.{}:123", i + 1)
                    .parse()
                    .unwrap_or_else(|_| unreachable!("a literal address"));
                engine.add_source(addr, s.opts)
            })
            .collect();
        let refclock_ids: Vec<usize> = sc
            .refclocks
            .iter()
            .map(|r| engine.add_refclock(&r.config))
            .collect();
        let n = sc.servers.len();
        let rng = XorShift::new(sc.seed);
        let mut sim = Sim {
            engine,
            ids,
            refclock_ids,
            hw: sc
                .nic
                .as_ref()
                .map(|_| crate::hwclock::HwClock::new(2, 16, 1e-9)),
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0.0,
            transmit_token: vec![0; n],
            last_sent: vec![(0.0, 1.0); n],
            clock_token: 0,
            requests: 0,
            trace: Trace::default(),
            sc,
        };
        for src in 0..n {
            let r = sim.randomness();
            sim.schedule(
                crate::poller::INITIAL_DELAY * r,
                Event::Transmit { src, token: 0 },
            );
        }
        for rc in 0..sim.refclock_ids.len() {
            sim.schedule(0.0, Event::Refclock { rc });
            if extpps(&sim.sc.refclocks[rc]) {
                sim.schedule(1.0 + PULSE_READ_DELAY, Event::Pulse { rc });
            }
        }
        if sim.sc.nic.is_some() {
            sim.schedule(0.0, Event::Phc);
        }
        sim.schedule(0.0, Event::Second);
        sim.arm_clock_timer();
        sim
    }

    /// chrony's scheduling randomness: a factor in [1, 1.02].
    fn randomness(&mut self) -> f64 {
        1.0 + 0.02 * self.rng.unit()
    }

    fn exponential(&mut self) -> f64 {
        -(1.0 - self.rng.unit()).ln()
    }

    /// A standard normal deviate (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (1.0 - self.rng.unit(), self.rng.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn schedule(&mut self, at: f64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    fn model(&self) -> &KernelModel {
        self.engine.clock().kernel()
    }

    /// Runs to the scenario's limit.
    pub(crate) fn run(mut self) -> Trace {
        while let Some(q) = self.queue.pop() {
            if q.at > self.sc.limit || self.trace.exited.is_some() {
                break;
            }
            let jumps: Vec<f64> = self
                .sc
                .client_jumps
                .iter()
                .filter(|(t, _)| *t > self.now && *t <= q.at)
                .map(|(_, x)| *x)
                .collect();
            self.engine.clock_mut().kernel_mut().advance_to(q.at);
            for x in jumps {
                self.engine.clock_mut().kernel_mut().jump(x);
            }
            self.now = q.at;
            self.handle(q.event);
        }
        self.trace.steps = self.model().steps.clone();
        self.trace.requests = self.requests;
        self.trace
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Second => {
                let (error, rate) = (self.model().error(), self.model().rate());
                let reference = self.reference_error(self.now);
                self.trace.offset.push(error - reference);
                self.trace.freq.push(rate);
                let served = self.served_error();
                self.trace.served.push(served);
                let r = self.engine.reference(self.model().now_ns());
                let distance = (r.root_delay_ns as f64 / 2.0 + r.root_dispersion_ns as f64) * 1e-9;
                self.trace.reference.push((r.stratum, r.refid, distance));
                let base = self.engine.clock().frequency();
                let intrinsic = self.model().intrinsic;
                self.trace
                    .base_freq
                    .push((1.0 + intrinsic) * (1.0 + base) - 1.0);
                if self.sc.wander > 0.0 {
                    let step = self.sc.wander * self.normal();
                    self.engine.clock_mut().kernel_mut().intrinsic += step;
                }
                self.schedule(self.now + 1.0, Event::Second);
            }
            Event::ClockTimer { token } => {
                if token == self.clock_token {
                    let before = self.served_error();
                    self.engine.clock_mut().tick();
                    let after = self.served_error();
                    self.trace.served_across_ticks.push((before, after));
                    self.arm_clock_timer();
                }
            }
            Event::Transmit { src, token } => {
                if token == self.transmit_token[src] {
                    self.transmit(src);
                }
            }
            Event::AtServer { src, cookie } => self.serve(src, cookie),
            Event::Refclock { rc } => self.read_refclock(rc),
            Event::Pulse { rc } => self.read_pulse(rc),
            Event::Phc => self.read_phc(),
            Event::AtClient { src, reply } => {
                let t4 = self.stamp(true);
                let wire = WireInfo {
                    local: ([192, 168, 123, 100], 40000).into(),
                    tx: if self.hw_fitted() {
                        Stamp::Hardware
                    } else {
                        Stamp::Kernel
                    },
                    rx: if self.hw_fitted() {
                        Stamp::Hardware
                    } else {
                        Stamp::Kernel
                    },
                };
                let log = self.engine.receive(self.ids[src], &reply, t4, wire);
                self.note(log);
                self.arm_clock_timer();
                // The poll task restarts its timer from the last send with the new interval.
                let (sent, r) = self.last_sent[src];
                let next = sent + self.engine.interval(self.ids[src]) * r;
                self.rearm_transmit(src, next.max(self.now));
            }
        }
    }

    /// Whether the NIC's stamps are in use (its PHC readings make a line).
    fn hw_fitted(&self) -> bool {
        self.hw.as_ref().is_some_and(|h| h.len() >= 2)
    }

    /// The system time of true time `now + dt`, as the kernel clock will read then.
    fn system_ns_in(&self, dt: f64) -> u64 {
        let m = self.model();
        // In integer ns: an absolute time as f64 is only good to 256 ns.
        let d = (dt * 1e9 * (1.0 + m.rate())).round() as i64;
        m.now_ns().saturating_add_signed(d)
    }

    /// The NIC's clock at true time `now + dt`, ns.
    fn nic_ns_in(&self, nic: &SimNic, dt: f64) -> i128 {
        let t = self.now + dt;
        i128::from(true_ns(t)) + ((nic.offset + nic.freq * t) * 1e9).round() as i128
    }

    /// The daemon's timestamp of a packet on the wire now (`rx`: arriving): the NIC's,
    /// through its PHC readings, once they tell; else the kernel's software stamp,
    /// taken after arrival or before departure.
    fn stamp(&mut self, rx: bool) -> u64 {
        if let (Some(nic), Some(hw)) = (self.sc.nic.clone(), self.hw.as_ref()) {
            let nic_ns = self.nic_ns_in(&nic, 0.0);
            if let Some(t) = self.engine.hw_to_system_ns(hw, nic_ns) {
                return t;
            }
        }
        let latency = self.sc.net.sw_stamp_latency * self.exponential();
        self.system_ns_in(if rx { latency } else { -latency })
    }

    /// One poll of the NIC's PHC: `readings` ioctl readings a few microseconds apart.
    fn read_phc(&mut self) {
        let Some(nic) = self.sc.nic.clone() else {
            return;
        };
        let mut readings = Vec::with_capacity(nic.readings);
        for i in 0..nic.readings {
            let start = i as f64 * 3e-6;
            let extra = nic.phc_jitter * self.normal().abs();
            let before = nic.phc_delay / 2.0 + nic.phc_asym * extra;
            let total = nic.phc_delay + extra;
            readings.push([
                i128::from(self.system_ns_in(start)),
                self.nic_ns_in(&nic, start + before),
                i128::from(self.system_ns_in(start + total)),
            ]);
        }
        if let Some(mut hw) = self.hw.take() {
            self.engine.hw_reading(&mut hw, &readings, PRECISION);
            self.hw = Some(hw);
        }
        self.schedule(self.now + 2f64.powi(i32::from(nic.poll)), Event::Phc);
    }

    /// A pulse at the start of true second `⌊now⌋`, timestamped by the NIC's PHC on a pin
    /// (`jitter`: the stamp's noise) and read a moment later, as the daemon's `extpps`
    /// task reads it: mapped to system time through the PHC readings.
    fn read_pulse(&mut self, rc: usize) {
        let edge = self.now.floor();
        let noise_ns = (self.sc.refclocks[rc].jitter * self.normal() * 1e9).round() as i128;
        if let (Some(nic), Some(hw)) = (self.sc.nic.clone(), self.hw.as_ref()) {
            let phc_ns = self.nic_ns_in(&nic, edge - self.now) + noise_ns;
            if let Some(reading) = self.engine.phc_pulse(hw, phc_ns) {
                let _ = self.engine.refclock_reading(self.refclock_ids[rc], reading);
            }
        }
        self.schedule(edge + 1.0 + PULSE_READ_DELAY, Event::Pulse { rc });
    }

    /// A reference clock's timer, as the daemon's refclock task runs it: read the
    /// driver (polled drivers), end the poll when due, and come back after `dpoll`.
    fn read_refclock(&mut self, rc: usize) {
        let id = self.refclock_ids[rc];
        let sim_rc = self.sc.refclocks[rc].clone();
        // An `extpps` PHC gives pulses only (its readings map the PHC, see read_pulse).
        if sim_rc.config.driver.is_polled() && !extpps(&sim_rc) {
            let noise = sim_rc.jitter * self.normal();
            let reading = crate::refclock::Reading::Time {
                sys_ns: self.model().now_ns(),
                offset: sim_rc.offset + noise - self.model().error(),
                leap: 0,
            };
            let _ = self.engine.refclock_reading(id, reading);
        }
        let log = self.engine.refclock_tick(id);
        self.note(log);
        self.arm_clock_timer();
        let interval = if sim_rc.config.driver.is_polled() {
            2f64.powi(i32::from(sim_rc.config.dpoll))
        } else {
            2f64.powi(i32::from(sim_rc.config.poll))
        };
        self.schedule(self.now + interval, Event::Refclock { rc });
    }

    /// What a reply sent now would be off by: the system clock's reading plus the
    /// correction the daemon adds to it, against the reference.
    fn served_error(&self) -> f64 {
        let sys = self.model().now_ns();
        let (corr, _) = self.engine.clock().served_correction(sys);
        self.model().error() + corr - self.reference_error(self.now)
    }

    /// The servers' error where all of them stepped: the client should follow them.
    fn reference_error(&self, t: f64) -> f64 {
        let errs: Vec<f64> = self.sc.servers.iter().map(|s| s.error_at(t)).collect();
        if let Some(first) = errs.first()
            && errs.iter().all(|e| (e - first).abs() < 1e-12)
        {
            *first
        } else {
            0.0
        }
    }

    fn rearm_transmit(&mut self, src: usize, at: f64) {
        self.transmit_token[src] += 1;
        let token = self.transmit_token[src];
        self.schedule(at, Event::Transmit { src, token });
    }

    fn transmit(&mut self, src: usize) {
        let cookie = self.rng.next_u64();
        let id = self.ids[src];
        let Some((req, log)) = self.engine.transmit(id, cookie) else {
            return;
        };
        self.note(log);
        let t1 = self.stamp(false);
        self.engine.transmitted(id, cookie, t1);
        let r = self.randomness();
        self.last_sent[src] = (self.now, r);
        let next = self.now + self.engine.interval(id) * r;
        self.rearm_transmit(src, next);
        self.arm_clock_timer();
        self.requests += 1;
        let _ = req;
        if let Some(d) = self.delay(src, true) {
            self.schedule(self.now + d, Event::AtServer { src, cookie });
        }
    }

    /// One-way delay to (`out`) or from server `src`; `None` if the packet is lost.
    fn delay(&mut self, src: usize, out: bool) -> Option<f64> {
        let net = self.sc.net.clone();
        if net
            .outages
            .iter()
            .any(|(a, b)| self.now >= *a && self.now < *b)
        {
            return None;
        }
        if out && net.pass_every > 1 && !self.requests.is_multiple_of(net.pass_every) {
            return None;
        }
        if net.loss > 0.0 && self.rng.unit() < net.loss {
            return None;
        }
        let a = if out {
            1.0 - 2.0 * net.asymmetry
        } else {
            1.0 + 2.0 * net.asymmetry
        };
        let s = &self.sc.servers[src];
        let changed = s
            .route_change
            .filter(|(at, _)| self.now >= *at)
            .map_or(0.0, |(_, d)| d);
        let extra = if out { s.extra_delay + changed } else { 0.0 };
        Some(net.base_delay + extra + a * net.jitter * self.exponential())
    }

    fn serve(&mut self, src: usize, cookie: u64) {
        let jitter = self.sc.servers[src].stamp_jitter;
        // Drawn only when asked for, so scenarios without it keep their random paths.
        let (e2, e3) = if jitter > 0.0 {
            (jitter * self.normal(), jitter * self.normal())
        } else {
            (0.0, 0.0)
        };
        let s = &self.sc.servers[src];
        let t2 = self.now + s.error_at(self.now) + e2;
        let t3 = t2 - e2 + 1e-6 + e3;
        let reply = NtpHeader {
            leap: 0,
            version: 4,
            mode: 4,
            stratum: s.stratum,
            poll: 6,
            precision: -23,
            refid: *b"GPS\0",
            reference_ts: NtpTimestamp::from_unix_ns(true_ns(t2 - 1.0)),
            origin_ts: NtpTimestamp(cookie),
            receive_ts: NtpTimestamp::from_unix_ns(true_ns(t2)),
            transmit_ts: NtpTimestamp::from_unix_ns(true_ns(t3)),
            ..Default::default()
        }
        .serialize();
        if let Some(d) = self.delay(src, false) {
            self.schedule(self.now + 1e-6 + d, Event::AtClient { src, reply });
        }
    }

    /// Schedules the clock's slew timer where the clock asks for it, as late as the
    /// daemon's timer would fire.
    fn arm_clock_timer(&mut self) {
        self.clock_token += 1;
        let target = self.engine.clock().next_change_ns();
        let m = self.model();
        let ahead = (target as f64 - m.now_ns() as f64) * 1e-9 / (1.0 + m.rate());
        let wait = (ahead.max(0.0) / TIMER_GRANULARITY).ceil() * TIMER_GRANULARITY;
        let token = self.clock_token;
        self.schedule(
            self.now + wait.max(TIMER_GRANULARITY),
            Event::ClockTimer { token },
        );
    }

    fn note(&mut self, log: Vec<Log>) {
        for l in log {
            match l {
                Log::Info(m) | Log::Warn(m) => self.trace.log.push((self.now, m)),
                Log::Fatal(m) => {
                    self.trace.log.push((self.now, m));
                    self.trace.exited = Some(self.now);
                }
                Log::Record(r) => self.trace.records.push(r.line()),
            }
        }
    }
}

/// Runs `sc` with `seeds` seeds and checks each against `b`; returns the figures, and
/// panics with all of them if any run fails.
pub(crate) fn run_seeds(name: &str, sc: &Scenario, seeds: &[u64], b: &Bounds) -> Vec<Figures> {
    let mut all = Vec::new();
    let mut failed = Vec::new();
    for &seed in seeds {
        let trace = Sim::new(Scenario { seed, ..sc.clone() }).run();
        let (ok, f) = trace.check(b);
        println!(
            "{name} seed {seed}: synced {:.0} s, max {:.2e} s, RMS {:.2e} s, max freq {:.2e}, RMS freq {:.2e}, route restarts {}",
            f.sync_time,
            f.max_offset,
            f.rms_offset,
            f.max_freq,
            f.rms_freq,
            trace.count("statistics start over")
        );
        if !ok {
            failed.push((seed, f));
        }
        all.push(f);
    }
    assert!(failed.is_empty(), "{name}: outside {b:?}: {failed:?}");
    all
}
