//! The daemon's synchronization state, sans-IO: the source table, selection, the steering
//! loop, and what the server says as a result (the [`Reference`] it publishes and the
//! `sources`/`tracking` reports). Fed with replies and kernel timestamps by the IO layer.

use crate::{
    clock::EngineClock,
    config::{LocalConfig, SyncConfig},
    packet::{NtpHeader, ntp_short_to_secs},
    reference::{REFID_LOCAL, Reference},
    report::{SourceReport, TrackingReport, logfile::Record},
    sync::{
        discipline::{Discipline, DisciplineParams, UpdateResult},
        regress::{DEFAULT_MAX_SAMPLES, SourceStats},
        sample::{Sample, SourceInfo},
        select::{Candidate, Outcome, SelectParams, SourceState, select},
    },
};
use ntp_common::wire::{LEAP_UNSYNC, STRATUM_UNSYNC};
use std::net::{IpAddr, SocketAddr};

/// The local side of an exchange with a source.
#[derive(Clone, Copy, Debug)]
pub struct WireInfo {
    /// Local address and port used.
    pub local: SocketAddr,
    /// Whether t1 is the kernel's transmit timestamp (else the daemon's clock).
    pub tx_kernel: bool,
    /// Whether t4 is the kernel's receive timestamp.
    pub rx_kernel: bool,
}

/// A log line in chrony's words.
#[derive(Clone, Debug, PartialEq)]
pub enum Log {
    /// Informational.
    Info(String),
    /// A warning.
    Warn(String),
    /// A line for one of the log files (`log measurements statistics tracking`).
    Record(Record),
}

/// One upstream address and what is known of it.
#[derive(Clone, Debug)]
pub struct SourceEntry {
    /// Shown name (the address).
    pub name: String,
    /// Where it is polled.
    pub addr: SocketAddr,
    /// `prefer` option.
    pub prefer: bool,
    /// `noselect` option.
    pub noselect: bool,
    /// Its sample window.
    pub stats: SourceStats,
    /// Reachability register.
    pub reach: u8,
    /// Poll exponent.
    pub poll: i8,
    /// Its stratum (0 before the first reply).
    pub stratum: u8,
    /// Its state after the last selection.
    pub state: SourceState,
    /// Local time of the last sample.
    pub last_rx: Option<f64>,
    /// Offset of the last sample as measured.
    pub measured: f64,
    /// Error estimate of the last sample.
    pub error: f64,
    /// Whether it refused service (`KoD` DENY/RSTR).
    pub refused: bool,
    /// Requests sent so far.
    pub polls: u32,
    /// Polling suspended by ntpxc offline.
    pub offline: bool,
    /// The last valid reply and how it travelled.
    pub last_reply: Option<(NtpHeader, WireInfo)>,
    /// The last sample taken from it.
    pub last_sample: Option<Sample>,
    /// Valid replies received.
    pub replies: u32,
    /// Samples added.
    pub samples: u32,
    /// Taken out of service (its line left the sourcedir); kept so ids stay stable.
    pub removed: bool,
}

/// Polls during which a silent source still counts toward the majority.
const STARTUP_POLLS: u32 = 4;

#[derive(Clone, Copy, Debug)]
struct Synced {
    source: usize,
    stratum: u8,
    leap: u8,
    /// Local time of the update.
    time: f64,
    /// System time of the update, ns.
    sys_ns: u64,
    root_delay: f64,
    root_dispersion: f64,
}

/// The synchronization state of the daemon.
pub struct Engine<C: EngineClock> {
    clock: C,
    sources: Vec<SourceEntry>,
    discipline: Discipline,
    params: SelectParams,
    local: Option<LocalConfig>,
    precision: f64,
    previous: Option<usize>,
    outcome: Option<Outcome>,
    synced: Option<Synced>,
}

/// Reference id of a source: its IPv4 address, or for IPv6 the first four bytes of a hash
/// of the address (RFC 5905 uses MD5; any stable hash serves loop detection).
pub fn refid_of(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            // FNV-1a: stable across runs and platforms.
            let mut h: u32 = 0x811c_9dc5;
            for b in v6.octets() {
                h = (h ^ b as u32).wrapping_mul(0x0100_0193);
            }
            h.to_be_bytes()
        }
    }
}

impl<C: EngineClock> Engine<C> {
    /// An engine steering `clock` with the configured selection and loop settings.
    pub fn new(clock: C, sync: &SyncConfig, local: Option<LocalConfig>, precision: f64) -> Self {
        Engine {
            clock,
            sources: Vec::new(),
            discipline: Discipline::new(DisciplineParams {
                makestep: sync.makestep,
                max_update_skew: sync.max_update_skew_ppm * 1e-6,
                ..Default::default()
            }),
            params: SelectParams {
                min_sources: sync.min_sources,
                max_distance: sync.max_distance,
                reselect_distance: sync.reselect_distance,
                combine_limit: sync.combine_limit,
                ..Default::default()
            },
            local,
            precision,
            previous: None,
            outcome: None,
            synced: None,
        }
    }

    /// The clock being steered.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The clock being steered, for kernel status updates.
    pub fn clock_mut(&mut self) -> &mut C {
        &mut self.clock
    }

    /// Leap indicator, root distance and offset uncertainty while synchronised.
    pub fn sync_status(&self) -> Option<(u8, f64, f64)> {
        self.synced.map(|s| {
            (
                s.leap,
                s.root_delay / 2.0 + s.root_dispersion,
                self.discipline.rms_offset(),
            )
        })
    }

    /// Adds a source; returns its id.
    pub fn add_source(
        &mut self,
        addr: SocketAddr,
        prefer: bool,
        noselect: bool,
        poll: i8,
    ) -> usize {
        self.sources.push(SourceEntry {
            name: addr.ip().to_string(),
            addr,
            prefer,
            noselect,
            stats: SourceStats::new(DEFAULT_MAX_SAMPLES),
            reach: 0,
            poll,
            stratum: 0,
            state: SourceState::Unselectable,
            last_rx: None,
            measured: 0.0,
            error: 0.0,
            refused: false,
            polls: 0,
            offline: false,
            last_reply: None,
            last_sample: None,
            replies: 0,
            samples: 0,
            removed: false,
        });
        self.sources.len() - 1
    }

    /// Takes sources out of service (ntpxc reload sources).
    pub fn remove_sources(&mut self, ids: &[usize]) -> Vec<Log> {
        let mut log = Vec::new();
        for id in ids {
            if let Some(s) = self.sources.get_mut(*id) {
                s.removed = true;
                s.stats.clear();
                s.reach = 0;
                log.push(Log::Info(format!("Removed source {}", s.name)));
            }
            if self.previous == Some(*id) {
                self.previous = None;
            }
        }
        log.extend(self.reselect());
        log
    }

    /// Sources in service, with their ids.
    fn live(&self) -> impl Iterator<Item = (usize, &SourceEntry)> {
        self.sources.iter().enumerate().filter(|(_, s)| !s.removed)
    }

    /// Ids of the sources matching `addr` (all with `None`).
    pub fn source_ids(&self, addr: Option<IpAddr>) -> Vec<usize> {
        self.live()
            .filter(|(_, s)| addr.is_none_or(|a| s.addr.ip() == a))
            .map(|(i, _)| i)
            .collect()
    }

    /// Marks sources as polled or not (ntpxc online/offline).
    pub fn set_offline(&mut self, ids: &[usize], offline: bool) {
        for i in ids {
            if let Some(s) = self.sources.get_mut(*i) {
                s.offline = offline;
            }
        }
    }

    /// Sources that have stayed silent for at least eight polls (pool members to replace).
    pub fn dead_sources(&self) -> Vec<usize> {
        self.live()
            .filter(|(_, s)| ((s.reach == 0 && s.polls >= 8) || s.refused) && !s.offline)
            .map(|(i, _)| i)
            .collect()
    }

    /// Points source `id` at a new address, forgetting everything about the old one.
    pub fn replace_source(&mut self, id: usize, addr: SocketAddr) -> Vec<Log> {
        let Some(s) = self.sources.get_mut(id) else {
            return Vec::new();
        };
        let old = std::mem::replace(&mut s.name, addr.ip().to_string());
        s.addr = addr;
        s.stats.clear();
        s.reach = 0;
        s.polls = 0;
        s.stratum = 0;
        s.state = SourceState::Unselectable;
        s.last_rx = None;
        s.refused = false;
        let mut log = vec![Log::Info(format!("Source {old} replaced with {}", s.name))];
        if self.previous == Some(id) {
            self.previous = None;
        }
        log.extend(self.reselect());
        log
    }

    /// The source table.
    pub fn sources(&self) -> &[SourceEntry] {
        &self.sources
    }

    /// A request went out: the reachability register and poll after it. A source that
    /// stopped answering may end the selection.
    pub fn on_polled(&mut self, id: usize, reach: u8, poll: i8) -> Vec<Log> {
        let Some(s) = self.sources.get_mut(id) else {
            return Vec::new();
        };
        let lost = s.reach != 0 && reach == 0;
        s.polls = s.polls.saturating_add(1);
        s.reach = reach;
        s.poll = poll;
        if lost {
            let mut log = vec![Log::Warn(format!("Source {} is unreachable", s.name))];
            log.extend(self.reselect());
            return log;
        }
        Vec::new()
    }

    /// The source refused service.
    pub fn on_refused(&mut self, id: usize) -> Vec<Log> {
        if let Some(s) = self.sources.get_mut(id) {
            s.refused = true;
            s.reach = 0;
        }
        self.reselect()
    }

    /// A valid reply from source `id`: the request left at `t1_ns` and the reply arrived
    /// at `t4_ns` (`CLOCK_REALTIME`). Adds the sample and updates the clock.
    #[allow(clippy::too_many_arguments)]
    pub fn on_reply(
        &mut self,
        id: usize,
        h: &NtpHeader,
        t1_ns: u64,
        t4_ns: u64,
        reach: u8,
        poll: i8,
        wire: WireInfo,
    ) -> Vec<Log> {
        let t1 = self.clock.local_at(t1_ns);
        let t4 = self.clock.local_at(t4_ns);
        // Server timestamps on the same scale as the local ones: system time since the
        // epoch (the local readings are that plus the clock's correction). The era is the
        // one nearest t4.
        let base = t4 - self.clock.served_correction(t4_ns).0;
        let scale = |ts: crate::packet::NtpTimestamp| {
            base + (ts.to_unix_ns(t4_ns) - t4_ns as i128) as f64 * 1e-9
        };
        let info = SourceInfo {
            root_delay: ntp_short_to_secs(h.root_delay),
            root_dispersion: ntp_short_to_secs(h.root_dispersion),
            stratum: h.stratum,
            leap: h.leap,
            precision: 2f64.powi(h.precision as i32),
        };
        let sample = Sample::from_timestamps(
            [t1, scale(h.receive_ts), scale(h.transmit_ts), t4],
            self.precision,
            &info,
        );
        let Some(s) = self.sources.get_mut(id) else {
            return Vec::new();
        };
        s.reach = reach;
        s.poll = poll;
        s.stratum = h.stratum;
        s.last_rx = Some(sample.time);
        s.measured = sample.offset;
        s.error = sample.delay / 2.0 + sample.dispersion;
        s.last_reply = Some((*h, wire));
        s.last_sample = Some(sample);
        s.replies += 1;
        s.samples += 1;
        s.stats.add(sample);
        let when = t4_ns as f64 * 1e-9;
        let (span_nr, est) = (s.stats.span_and_runs(t4).1, s.stats.estimate(t4));
        let mut log = vec![Log::Record(Record::Measurement {
            time: when,
            addr: s.name.clone(),
            leap: h.leap,
            stratum: h.stratum,
            polls: (poll, h.poll),
            figures: [
                -sample.offset,
                sample.delay,
                sample.dispersion,
                info.root_delay,
                info.root_dispersion,
            ],
            refid: u32::from_be_bytes(h.refid),
        })];
        if let Some(e) = est {
            log.push(Log::Record(Record::Statistics {
                time: when,
                addr: s.name.clone(),
                figures: [e.std_dev, -e.offset, e.offset_sd, e.frequency, e.skew],
                counts: (s.stats.len(), span_nr),
            }));
        }
        log.extend(self.reselect());
        log
    }

    /// Runs selection and, with a selection, the steering loop.
    fn reselect(&mut self) -> Vec<Log> {
        let mut log = Vec::new();
        let now = self.clock.now();
        let cands: Vec<Candidate> = self
            .live()
            .map(|(i, s)| Candidate {
                id: i,
                est: s.stats.estimate(now),
                reachable: s.reach != 0 && !s.refused,
                prefer: s.prefer,
                noselect: s.noselect,
                pending: s.polls < STARTUP_POLLS && !s.refused,
            })
            .collect();
        let sel = select(&cands, &self.params, self.previous);
        for (id, st) in &sel.states {
            if let Some(s) = self.sources.get_mut(*id) {
                s.state = *st;
            }
        }
        if sel.outcome != Outcome::Selected {
            if self.outcome != Some(sel.outcome) {
                let why = match sel.outcome {
                    Outcome::NoMajority => "Can't synchronise: no majority",
                    Outcome::NotEnoughSources => "Can't synchronise: not enough sources",
                    _ => "Can't synchronise: no selectable sources",
                };
                log.push(Log::Warn(why.to_string()));
            }
            self.outcome = Some(sel.outcome);
            self.synced = None;
            return log;
        }
        self.outcome = Some(Outcome::Selected);
        let (Some(id), Some(c)) = (sel.selected, sel.combined) else {
            return log;
        };
        if self.previous != Some(id) {
            log.push(Log::Info(format!(
                "Selected source {}",
                self.sources[id].name
            )));
        }
        self.previous = Some(id);
        let sys_ns = self.clock.system_now_ns();
        let r: UpdateResult = self.discipline.update(&mut self.clock, &c);
        for s in &mut self.sources {
            s.stats.apply_offset_correction(r.offset);
            s.stats.apply_frequency_change(r.time, r.dfreq);
        }
        if r.stepped {
            log.push(Log::Info(format!(
                "System clock was stepped by {:.6} s",
                -r.offset
            )));
        } else if r.log_slew {
            log.push(Log::Info(format!(
                "System clock wrong by {:.6} seconds, adjustment started",
                -r.offset
            )));
        }
        let combined = sel
            .states
            .iter()
            .filter(|(_, st)| matches!(st, SourceState::Selected | SourceState::Combined))
            .count();
        log.push(Log::Record(Record::Tracking {
            time: sys_ns as f64 * 1e-9,
            addr: self.sources[id].name.clone(),
            stratum: (c.stratum + 1).min(STRATUM_UNSYNC),
            figures: [
                -self.clock.frequency() * 1e6,
                self.discipline.skew() * 1e6,
                -r.offset,
                c.offset_sd,
                self.clock.slew_remaining(),
                c.root_delay,
                c.root_dispersion,
            ],
            leap: c.leap,
            combined,
        }));
        self.synced = Some(Synced {
            source: id,
            stratum: c.stratum,
            leap: c.leap,
            time: r.time,
            sys_ns,
            root_delay: c.root_delay,
            root_dispersion: c.root_dispersion + c.offset_sd,
        });
        log
    }

    /// What the server says now (system time `now_ns`).
    pub fn reference(&self, now_ns: u64) -> Reference {
        let (corr, rate) = self.clock.served_correction(now_ns);
        let mut r = match (self.synced, self.local) {
            (Some(s), _) => Reference {
                leap: s.leap,
                stratum: (s.stratum + 1).min(STRATUM_UNSYNC),
                refid: refid_of(self.sources[s.source].addr.ip()),
                ref_time_unix_ns: served_ns(s.sys_ns, self.clock.served_correction(s.sys_ns).0),
                root_delay_ns: (s.root_delay * 1e9) as u64,
                root_dispersion_ns: (s.root_dispersion * 1e9) as u64,
                offset_ns: 0,
                rate: 0.0,
            },
            (None, Some(l)) => Reference {
                refid: REFID_LOCAL,
                ..Reference::local(l.stratum, served_ns(now_ns, corr))
            },
            (None, None) => Reference::unsynchronised(),
        };
        r.offset_ns = (corr * 1e9).round() as i64;
        r.rate = rate;
        r
    }

    /// Steps the clock by the correction still being slewed (ntpxc makestep).
    pub fn make_step(&mut self) -> Vec<Log> {
        let left = self.clock.slew_remaining();
        self.clock.correct(0.0, true);
        vec![Log::Info(format!(
            "System clock was stepped by {:.6} s",
            -left
        ))]
    }

    /// Replaces the `makestep` setting (ntpxc makestep THRESHOLD LIMIT).
    pub fn set_makestep(&mut self, threshold: f64, limit: i32) {
        self.discipline.set_makestep(Some((threshold, limit)));
    }

    /// The `ntpdata` report for every source that has answered (or only `addr`'s).
    pub fn ntpdata_report(&self, addr: Option<IpAddr>) -> Vec<crate::report::NtpDataReport> {
        self.sources
            .iter()
            .filter(|s| !s.removed)
            .filter(|s| addr.is_none_or(|a| s.addr.ip() == a))
            .filter_map(|s| {
                let (h, w) = s.last_reply?;
                let sample = s.last_sample?;
                Some(crate::report::NtpDataReport {
                    remote: s.addr,
                    local: w.local,
                    leap: h.leap,
                    version: h.version,
                    mode: h.mode,
                    stratum: h.stratum,
                    poll: h.poll,
                    precision: h.precision,
                    root_delay: ntp_short_to_secs(h.root_delay),
                    root_dispersion: ntp_short_to_secs(h.root_dispersion),
                    refid: u32::from_be_bytes(h.refid),
                    ref_time: h.reference_ts.to_unix_ns(self.clock.system_now_ns()) as f64 * 1e-9,
                    offset: -sample.offset,
                    delay: sample.delay,
                    dispersion: sample.dispersion,
                    response_time: (h.transmit_ts.0.wrapping_sub(h.receive_ts.0)) as f64
                        / 4_294_967_296.0,
                    tx_kernel: w.tx_kernel,
                    rx_kernel: w.rx_kernel,
                    total_tx: s.polls,
                    total_rx: s.replies,
                    total_valid_rx: s.replies,
                    total_good_rx: s.samples,
                })
            })
            .collect()
    }

    /// The `selectdata` report at system time `now_ns`.
    pub fn selectdata_report(&self, now_ns: u64) -> Vec<crate::report::SelectDataReport> {
        let now = self.clock.local_at(now_ns);
        let ests: Vec<_> = self
            .sources
            .iter()
            .filter(|s| !s.removed)
            .map(|s| s.stats.estimate(now))
            .collect();
        let best = ests
            .iter()
            .flatten()
            .map(super::sync::regress::Estimate::distance)
            .fold(f64::INFINITY, f64::min);
        self.sources
            .iter()
            .filter(|s| !s.removed)
            .zip(&ests)
            .map(|(s, e)| {
                let state = match s.state {
                    SourceState::Selected => '*',
                    SourceState::Combined => '+',
                    SourceState::NotCombined => 'D',
                    SourceState::Falseticker => 'x',
                    SourceState::TooVariable => '~',
                    SourceState::TooFar => 'd',
                    SourceState::NoSelect => 'N',
                    SourceState::Unreachable | SourceState::Unselectable => 'M',
                };
                let (lo, hi, score) = match e {
                    Some(e) => (
                        -e.offset - e.distance(),
                        -e.offset + e.distance(),
                        e.distance() / best,
                    ),
                    None => (0.0, 0.0, 0.0),
                };
                crate::report::SelectDataReport {
                    state,
                    name: s.name.clone(),
                    auth: false,
                    noselect: s.noselect,
                    prefer: s.prefer,
                    last: s.last_rx.map(|t| (now - t).max(0.0) as u64),
                    score,
                    lo,
                    hi,
                    leap: e.map_or(0, |e| e.leap),
                }
            })
            .collect()
    }

    /// The `sourcestats` report at system time `now_ns`.
    pub fn sourcestats_report(&self, now_ns: u64) -> Vec<crate::report::SourceStatsReport> {
        let now = self.clock.local_at(now_ns);
        self.sources
            .iter()
            .filter(|s| !s.removed)
            .map(|s| {
                let (span, nr) = s.stats.span_and_runs(now);
                let e = s.stats.estimate(now);
                crate::report::SourceStatsReport {
                    name: s.name.clone(),
                    np: s.stats.len(),
                    nr,
                    span,
                    frequency_ppm: e.map_or(0.0, |e| e.frequency * 1e6),
                    skew_ppm: e.map_or(0.0, |e| e.skew * 1e6),
                    offset: e.map_or(0.0, |e| -e.offset),
                    std_dev: e.map_or(0.0, |e| e.std_dev),
                }
            })
            .collect()
    }

    /// Whether a source is selected and the clock follows it.
    pub fn synchronised(&self) -> bool {
        self.synced.is_some()
    }

    /// The `sources` report at system time `now_ns`.
    pub fn sources_report(&self, now_ns: u64) -> Vec<SourceReport> {
        let now = self.clock.local_at(now_ns);
        self.sources
            .iter()
            .filter(|s| !s.removed)
            .map(|s| {
                let adjusted = s.stats.last_sample().map_or(0.0, |x| x.offset);
                SourceReport {
                    mode: '^',
                    state: s.state.symbol(),
                    name: s.name.clone(),
                    stratum: s.stratum,
                    poll: s.poll,
                    reach: s.reach,
                    last_rx: s.last_rx.map(|t| (now - t).max(0.0) as u64),
                    // chronyc shows the local clock's offset from the source.
                    adjusted_offset: -adjusted,
                    measured_offset: -s.measured,
                    error: s.error,
                }
            })
            .collect()
    }

    /// The `tracking` report at system time `now_ns`.
    pub fn tracking_report(&self, now_ns: u64) -> TrackingReport {
        let (corr, _) = self.clock.served_correction(now_ns);
        let r = self.reference(now_ns);
        let ref_name = self
            .synced
            .map(|s| self.sources[s.source].name.clone())
            .unwrap_or_default();
        let age = self
            .synced
            .map_or(0.0, |s| self.clock.local_at(now_ns) - s.time);
        TrackingReport {
            refid: u32::from_be_bytes(r.refid),
            ref_name,
            stratum: if r.leap == LEAP_UNSYNC && self.local.is_none() {
                0
            } else {
                r.stratum
            },
            ref_time: r.ref_time_unix_ns as f64 * 1e-9,
            system_time: -corr,
            last_offset: -self.discipline.last_offset(),
            rms_offset: self.discipline.rms_offset(),
            frequency_ppm: -self.clock.frequency() * 1e6,
            residual_freq_ppm: self.discipline.residual_freq() * 1e6,
            skew_ppm: self.discipline.skew() * 1e6,
            root_delay: r.root_delay_ns as f64 * 1e-9,
            root_dispersion: r.root_dispersion_ns as f64 * 1e-9 + 15e-6 * age.max(0.0),
            update_interval: self.discipline.update_interval(),
            leap: r.leap,
        }
    }
}

fn served_ns(sys_ns: u64, corr: f64) -> u64 {
    (sys_ns as i128 + (corr * 1e9) as i128).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FreeRunning, RealtimeClock};
    use crate::packet::NtpTimestamp;
    use ntp_common::wire::NANOS_PER_SEC;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NOW: AtomicU64 = AtomicU64::new(1_800_000_000 * NANOS_PER_SEC);

    fn now_ns() -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    /// The system clock of these tests: whatever `NOW` says.
    struct TestNow;

    impl RealtimeClock for TestNow {
        fn now_ns(&self) -> u64 {
            now_ns()
        }
    }

    fn wire() -> WireInfo {
        WireInfo {
            local: "198.18.0.2:40000".parse().unwrap(),
            tx_kernel: true,
            rx_kernel: true,
        }
    }

    /// A reply from a server whose clock is `ahead` seconds ahead of ours, 1 ms each way.
    fn reply(t1: u64, ahead: f64) -> (NtpHeader, u64) {
        let a = (ahead * 1e9) as i128;
        let t2 = (t1 as i128 + 1_000_000 + a) as u64;
        let t3 = t2 + 10_000;
        let t4 = t1 + 2_010_000;
        let h = NtpHeader {
            version: 4,
            mode: 4,
            stratum: 2,
            precision: -20,
            root_delay: 0x0000_0100,
            root_dispersion: 0x0000_0100,
            receive_ts: NtpTimestamp::from_unix_ns(t2),
            transmit_ts: NtpTimestamp::from_unix_ns(t3),
            ..Default::default()
        };
        (h, t4)
    }

    #[test]
    fn following_one_server_that_is_25_ms_ahead() {
        let clock = FreeRunning::new(0.0, TestNow);
        let mut e = Engine::new(clock, &SyncConfig::default(), None, 1e-7);
        let id = e.add_source("198.18.0.1:123".parse().unwrap(), false, false, -4);
        assert_eq!(e.reference(now_ns()).leap, LEAP_UNSYNC);
        let t1 = now_ns();
        let (h, t4) = reply(t1, 0.025);
        NOW.store(t4, Ordering::Relaxed);
        let log = e.on_reply(id, &h, t1, t4, 1, -4, wire());
        assert!(
            log.contains(&Log::Info("Selected source 198.18.0.1".into())),
            "{log:?}"
        );
        let r = e.reference(now_ns());
        assert_eq!((r.stratum, r.leap, r.refid), (3, 0, [198, 18, 0, 1]));
        // Served time is now 25 ms ahead of the untouched system clock.
        assert!((r.offset_ns - 25_000_000).abs() < 1_000, "{}", r.offset_ns);
        let t = e.tracking_report(now_ns());
        assert!(
            (t.system_time + 0.025).abs() < 1e-6,
            "system clock 25 ms slow: {t:?}"
        );
        assert_eq!(t.stratum, 3);
        let s = e.sources_report(now_ns());
        assert_eq!((s[0].state, s[0].reach, s[0].stratum), ('*', 1, 2));
        assert!((s[0].measured_offset + 0.025).abs() < 1e-6);
        // The next exchange measures the corrected clock: nothing left to correct.
        let t1 = now_ns();
        let (h, t4) = reply(t1, 0.025);
        NOW.store(t4, Ordering::Relaxed);
        e.on_reply(id, &h, t1, t4, 3, -4, wire());
        let nd = e.ntpdata_report(None);
        assert_eq!((nd.len(), nd[0].stratum, nd[0].total_good_rx), (1, 2, 2));
        assert!((nd[0].response_time - 10e-6).abs() < 1e-9);
        let s = e.sources_report(now_ns());
        assert!(s[0].measured_offset.abs() < 1e-6, "{:?}", s[0]);
        assert!((e.reference(now_ns()).offset_ns - 25_000_000).abs() < 1_000);
    }

    #[test]
    fn losing_the_only_source_falls_back_to_local() {
        let local = LocalConfig {
            stratum: 10,
            ..Default::default()
        };
        let mut e = Engine::new(
            FreeRunning::new(0.0, TestNow),
            &SyncConfig::default(),
            Some(local),
            1e-7,
        );
        let id = e.add_source("198.18.0.1:123".parse().unwrap(), false, false, -4);
        let t1 = now_ns();
        let (h, t4) = reply(t1, 0.0);
        e.on_reply(id, &h, t1, t4, 1, -4, wire());
        assert!(e.synchronised());
        let log = e.on_polled(id, 0, -4);
        assert!(
            log.contains(&Log::Warn(
                "Can't synchronise: no selectable sources".into()
            )),
            "{log:?}"
        );
        let r = e.reference(now_ns());
        assert_eq!((r.stratum, r.refid), (10, REFID_LOCAL));
    }

    #[test]
    fn silent_sources_are_found_and_replaced() {
        let mut e = Engine::new(
            FreeRunning::new(0.0, TestNow),
            &SyncConfig::default(),
            None,
            1e-7,
        );
        let a = e.add_source("198.18.0.1:123".parse().unwrap(), false, false, 6);
        let b = e.add_source("198.18.0.2:123".parse().unwrap(), false, false, 6);
        for _ in 0..8 {
            e.on_polled(a, 0, 6);
            e.on_polled(b, 1, 6);
        }
        assert_eq!(e.dead_sources(), [a]);
        let log = e.replace_source(a, "198.18.0.9:123".parse().unwrap());
        assert_eq!(
            log[0],
            Log::Info("Source 198.18.0.1 replaced with 198.18.0.9".into())
        );
        assert!(e.dead_sources().is_empty());
        assert_eq!(e.sources()[a].addr, "198.18.0.9:123".parse().unwrap());
    }

    #[test]
    fn ipv6_refids_are_a_stable_hash() {
        let a = refid_of("fd00::1".parse().unwrap());
        assert_eq!(a, refid_of("fd00::1".parse().unwrap()));
        assert_ne!(a, refid_of("fd00::2".parse().unwrap()));
        assert_eq!(refid_of("10.1.2.3".parse().unwrap()), [10, 1, 2, 3]);
    }
}
