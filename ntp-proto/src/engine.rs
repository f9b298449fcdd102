//! The daemon's synchronization state, sans-IO: the sources (each with its poller and
//! statistics), selection, the clock update, and what the server says as a result (the
//! [`Reference`] it publishes and chronyc's reports).
//!
//! The IO layer asks it what to send ([`Engine::transmit`]), when ([`Engine::interval`]),
//! and hands it what came back ([`Engine::receive`]) with the kernel's timestamps. A reply
//! becomes a sample if it passes chrony's tests; each sample is followed by a selection,
//! and the clock is updated only when the selected source has a new sample.

use crate::{
    auth::KeyTable,
    calendar::leap_day,
    clock::EngineClock,
    config::{LocalConfig, SourceConfig, SyncConfig},
    packet::{NtpHeader, NtpTimestamp, ntp_short_to_secs},
    poller::{MAX_RESPONSE_TIME, NtsClient, PollOptions, Poller, SourceAuth},
    refclock::Refclock,
    reference::Reference,
    report::{
        AuthDataReport, NtpDataReport, SelectDataReport, SourceReport, SourceStatsReport, Stamp,
        TrackingReport, logfile::Record,
    },
    sync::{
        discipline::{Discipline, DisciplineParams, UpdateResult},
        filter::SampleFilter,
        sample::{Sample, SourceInfo},
        select::{
            BAD_UPDATES_LIMIT, Candidate, Combined, Memory, NoSelection, Outcome, SelectParams,
            SourceState, select,
        },
        sourcestats::{DEFAULT_MIN_SAMPLES, MAX_SAMPLES, SourceStats},
    },
};
use ntp_common::wire::{LEAP_UNSYNC, STRATUM_UNSYNC};
use std::net::{IpAddr, SocketAddr};

mod hwstamps;
#[cfg(test)]
mod nts_tests;
mod refclocks;

/// A source's options: its `server`/`pool` line with the global defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceOptions {
    /// Polling.
    pub poll: PollOptions,
    /// `prefer`.
    pub prefer: bool,
    /// `noselect`.
    pub noselect: bool,
    /// `trust`.
    pub trust: bool,
    /// `require`.
    pub require: bool,
    /// `maxdelay`, seconds.
    pub max_delay: f64,
    /// `maxdelayratio` (0: off).
    pub max_delay_ratio: f64,
    /// `maxdelaydevratio`.
    pub max_delay_dev_ratio: f64,
    /// `minsamples`.
    pub min_samples: usize,
    /// `maxsamples`.
    pub max_samples: usize,
    /// `asymmetry` (fixed), or `None` to estimate it.
    pub asymmetry: Option<f64>,
    /// `offset`, seconds added to every measured offset.
    pub offset: f64,
    /// `filter`: polls whose samples are combined into one.
    pub filter: Option<usize>,
    /// `minstratum`: the least stratum the source is taken to have.
    pub min_stratum: u8,
    /// `key`: the keyfile's key its exchanges are authenticated with.
    pub key: Option<u32>,
    /// `nts`: its exchanges are authenticated with NTS.
    pub nts: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            poll: PollOptions::default(),
            prefer: false,
            noselect: false,
            trust: false,
            require: false,
            max_delay: 3.0,
            max_delay_ratio: 0.0,
            max_delay_dev_ratio: 10.0,
            min_samples: DEFAULT_MIN_SAMPLES,
            max_samples: MAX_SAMPLES,
            asymmetry: None,
            offset: 0.0,
            filter: None,
            min_stratum: 0,
            key: None,
            nts: false,
        }
    }
}

impl SourceOptions {
    /// The options of a `server`/`pool` line.
    pub fn from_config(sc: &SourceConfig, sync: &SyncConfig) -> Self {
        SourceOptions {
            poll: PollOptions {
                minpoll: sc.minpoll,
                maxpoll: sc.maxpoll,
                iburst: sc.iburst,
                polltarget: sc.polltarget,
            },
            prefer: sc.prefer,
            noselect: sc.noselect,
            trust: sc.trust,
            require: sc.require,
            max_delay: sc.max_delay,
            max_delay_ratio: sc.max_delay_ratio,
            max_delay_dev_ratio: sc.max_delay_dev_ratio,
            min_samples: sc
                .min_samples
                .or(sync.min_samples)
                .unwrap_or(DEFAULT_MIN_SAMPLES),
            max_samples: sc.max_samples.or(sync.max_samples).unwrap_or(MAX_SAMPLES),
            asymmetry: sc.asymmetry,
            offset: sc.offset,
            filter: sc.filter,
            min_stratum: sc.min_stratum,
            key: sc.key,
            nts: sc.nts,
        }
    }
}

/// Why a valid reply was not taken as a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// chrony's tests A and B: too much delay, a slow server.
    Delay,
    /// Test C: more delay than the source's spread explains.
    DelayDeviation,
    /// Test D: the source follows us.
    Loop,
}

/// Samples in a row whose delays, the best of them included, are well above the best the
/// statistics hold before the path is taken to have changed (a lasting route change, not
/// spikes): the statistics start over with them.
const ROUTE_CHANGE_SAMPLES: usize = 8;

/// A log line in chrony's words.
#[derive(Clone, Debug, PartialEq)]
pub enum Log {
    /// Informational.
    Info(String),
    /// A warning.
    Warn(String),
    /// A line for one of the log files (`log measurements statistics tracking`).
    Record(Record),
    /// An error after which the daemon must exit (chrony's `maxchange` giving up).
    Fatal(String),
}

/// The local side of an exchange with a source.
#[derive(Clone, Copy, Debug)]
pub struct WireInfo {
    /// Local address and port used.
    pub local: SocketAddr,
    /// Who took t1.
    pub tx: Stamp,
    /// Who took t4.
    pub rx: Stamp,
}

/// One upstream address and what is known of it.
#[derive(Clone, Debug)]
pub struct SourceEntry {
    /// Shown name (the address).
    pub name: String,
    /// Where it is polled.
    pub addr: SocketAddr,
    /// Its options.
    pub opts: SourceOptions,
    /// Its polling state.
    pub poller: Poller,
    /// Its samples and their regression.
    pub stats: SourceStats,
    /// What selection keeps of it.
    pub sel: Memory,
    /// New samples since the clock was last updated.
    pub updates: u32,
    /// Its stratum (0 before the first reply).
    pub stratum: u8,
    /// Local time of the last sample.
    pub last_rx: Option<f64>,
    /// Offset (true − local) of the last sample as measured.
    pub measured: f64,
    /// Error estimate of the last sample.
    pub error: f64,
    /// Polling suspended by ntpxc offline.
    pub offline: bool,
    /// Taken out of service (its line left the sourcedir); kept so ids stay stable.
    pub removed: bool,
    /// The last valid reply and how it travelled.
    pub last_reply: Option<(NtpHeader, WireInfo)>,
    /// The last sample taken from it.
    pub last_sample: Option<Sample>,
    /// Requests sent.
    pub polls: u32,
    /// Datagrams from its address, valid or not.
    pub received: u32,
    /// Valid replies.
    pub replies: u32,
    /// Good samples.
    pub samples: u32,
    /// The latest samples, taken or refused for their delay (a route change shows here).
    recent: std::collections::VecDeque<Sample>,
    /// `filter`: samples waiting to be combined, and the polls counted towards it.
    filter: Option<(SampleFilter, usize)>,
    /// A reference clock's state (`None`: an NTP source).
    pub refclock: Option<Box<Refclock>>,
}

impl SourceEntry {
    /// The reachability register.
    pub fn reach(&self) -> u8 {
        self.poller.reach()
    }

    /// The poll exponent.
    pub fn poll(&self) -> i8 {
        self.poller.poll()
    }

    /// Its state after the last selection.
    pub fn state(&self) -> SourceState {
        self.sel.state
    }

    /// Its reference id: a reference clock's own, else from its address.
    pub fn ref_id(&self) -> [u8; 4] {
        match &self.refclock {
            Some(rc) => rc.refid,
            None => refid_of(self.addr.ip()),
        }
    }

    /// Whether it is an NTP source (not a reference clock).
    pub fn is_ntp(&self) -> bool {
        self.refclock.is_none()
    }
}

#[derive(Clone, Debug)]
struct Synced {
    /// The reference id and name of the source as it was when the clock followed it (a
    /// pool may give the slot another address later).
    refid: [u8; 4],
    name: String,
    stratum: u8,
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
    /// The keyfile's keys, for sources with `key`.
    keys: KeyTable,
    /// The leap table (`leapsectz`), for reference clocks keeping TAI.
    leaps: Vec<crate::leaptz::Leap>,
    discipline: Discipline,
    params: SelectParams,
    sync: SyncConfig,
    local: Option<LocalConfig>,
    precision: f64,
    selected: Option<usize>,
    synced: Option<Synced>,
    /// The leap second a majority of the sources announce, on a day one may happen.
    leap: u8,
    /// The last reason nothing was selected (logged once).
    last_failure: Option<NoSelection>,
    /// Local time since which the clock has been unsynchronised (`local waitunsynced`).
    unsynced_since: f64,
    /// Whether the root distance has been below `local activate` (or it is 0).
    local_activated: bool,
    /// `maxchange`: the limit, updates before it applies, large corrections still to
    /// ignore (negative: all).
    max_change: Option<(f64, i32, i32)>,
    /// `ntsrefresh`, ns.
    nts_refresh_ns: u64,
}

/// Reference id of a source: its IPv4 address, or for IPv6 the first four bytes of the
/// MD5 digest of the address, as RFC 5905 and chrony have it (loop detection needs the
/// same value on every server).
pub fn refid_of(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            use md5::Digest;
            let d = md5::Md5::digest(v6.octets());
            [d[0], d[1], d[2], d[3]]
        }
    }
}

impl<C: EngineClock> Engine<C> {
    /// An engine steering `clock` with the configured selection and update settings;
    /// `drift_skew` is the driftfile's frequency uncertainty (ratio), if one was read.
    pub fn new(
        clock: C,
        sync: &SyncConfig,
        local: Option<LocalConfig>,
        precision: f64,
        drift_skew: Option<f64>,
    ) -> Self {
        let mut discipline = Discipline::new(DisciplineParams {
            makestep: sync.makestep,
            max_update_skew: sync.max_update_skew_ppm * 1e-6,
            corr_time_ratio: sync.corr_time_ratio,
            max_clock_error: sync.max_clock_error_ppm * 1e-6,
            log_change: sync.log_change,
        });
        if let Some(s) = drift_skew {
            discipline = discipline.with_skew(s);
        }
        Engine {
            sources: Vec::new(),
            keys: KeyTable::default(),
            leaps: Vec::new(),
            discipline,
            params: SelectParams {
                min_sources: sync.min_sources,
                max_distance: sync.max_distance,
                max_jitter: sync.max_jitter,
                reselect_distance: sync.reselect_distance,
                stratum_weight: sync.stratum_weight,
                combine_limit: sync.combine_limit,
                max_clock_error: sync.max_clock_error_ppm * 1e-6,
                min_stratum: sync.min_stratum,
                max_stratum: sync.max_stratum,
                orphan_stratum: local.filter(|l| l.orphan).map(|l| l.stratum),
            },
            sync: sync.clone(),
            local_activated: local.is_some_and(|l| l.activate == 0.0),
            local,
            precision,
            selected: None,
            synced: None,
            leap: 0,
            last_failure: None,
            unsynced_since: clock.now(),
            max_change: sync.max_change,
            nts_refresh_ns: u64::from(crate::config::DEFAULT_NTS_REFRESH) * 1_000_000_000,
            clock,
        }
    }

    /// The clock being steered.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The clock being steered, for the slew timer and kernel status updates.
    pub fn clock_mut(&mut self) -> &mut C {
        &mut self.clock
    }

    /// The update's state (for the driftfile).
    pub fn discipline(&self) -> &Discipline {
        &self.discipline
    }

    /// Leap indicator, root distance and offset uncertainty while synchronised.
    pub fn sync_status(&self) -> Option<(u8, f64, f64)> {
        self.synced.as_ref().map(|s| {
            let (offset_sd, _) = self.discipline.last_errors();
            (self.leap, s.root_delay / 2.0 + s.root_dispersion, offset_sd)
        })
    }

    /// Authenticates sources with `keys` (the keyfile's) from now on.
    pub fn set_keys(&mut self, keys: KeyTable) {
        self.keys = keys;
    }

    /// The leap table (`leapsectz`): TAI - UTC for reference clocks that keep TAI.
    pub fn set_leap_table(&mut self, leaps: Vec<crate::leaptz::Leap>) {
        self.leaps = leaps;
    }

    /// How a source with `opts` is authenticated.
    fn auth_for(&self, opts: &SourceOptions) -> SourceAuth {
        if opts.nts {
            return SourceAuth::Nts(NtsClient::default());
        }
        match opts.key {
            None => SourceAuth::None,
            Some(id) => self
                .keys
                .get(id)
                .map_or(SourceAuth::Missing(id), |k| SourceAuth::Key(k.clone())),
        }
    }

    /// Whether source `id` uses NTS and needs an NTS-KE before its next request.
    pub fn nts_needs_ke(&self, id: usize) -> bool {
        self.nts_client(id).is_some_and(NtsClient::needs_ke)
    }

    /// `ntsrefresh`, checked once a poll before [`Self::nts_needs_ke`] (chrony's check
    /// before a request): drops source `id`'s keys if their NTS-KE is older, unless a
    /// NAK left the alternative keys to try first (chrony switches to them then).
    /// Whether they were dropped.
    pub fn nts_refresh(&mut self, id: usize) -> bool {
        let now = self.clock.system_now_ns();
        let refresh = self.nts_refresh_ns;
        let Some(n) = self.sources.get_mut(id).and_then(|s| s.poller.nts_mut()) else {
            return false;
        };
        let stale = n
            .last_ke_ns
            .is_some_and(|t| now.saturating_sub(t) > refresh);
        let alternative = n.session.as_ref().is_some_and(|s| s.nak() && s.usable());
        if !stale || alternative || n.session.is_none() {
            return false;
        }
        n.session = None;
        true
    }

    /// The system clock stepped by `step` seconds: NTS-KE times move with it, so their
    /// age (`ntsrefresh`, authdata) is not the step's (chrony keeps it on a monotonic
    /// clock).
    fn shift_nts_times(&mut self, step: f64) {
        let shift = (step * 1e9).round() as i64;
        for s in &mut self.sources {
            if let Some(t) = s.poller.nts_mut().and_then(|n| n.last_ke_ns.as_mut()) {
                *t = t.saturating_add_signed(shift);
            }
        }
    }

    /// Source `id`'s NTS-KE with `addr` at system time `now_ns` gave `session`; dropped if
    /// the slot has since been given another address or removed (a pool member replaced
    /// while its NTS-KE ran: the session is the old server's). Whether it was taken.
    pub fn nts_session(
        &mut self,
        id: usize,
        addr: SocketAddr,
        session: crate::nts::ClientSession,
        now_ns: u64,
    ) -> bool {
        let Some(n) = self
            .sources
            .get_mut(id)
            .filter(|s| s.addr == addr && !s.removed)
            .and_then(|s| s.poller.nts_mut())
        else {
            return false;
        };
        // A restored session keeps its number and the time of its NTS-KE, as chronyd's
        // do (one dated ahead of now: now), so `ntsrefresh` counts from that NTS-KE.
        let (number, ke_ns) = match session.context() {
            Some((number, ke_ns)) if number > n.sessions => (number, ke_ns.min(now_ns)),
            _ => (n.sessions.saturating_add(1), now_ns),
        };
        n.session = Some(session);
        n.last_ke_ns = Some(ke_ns);
        n.sessions = number;
        true
    }

    /// `ntsrefresh`: an NTS source's keys older than `secs` are dropped for a new NTS-KE
    /// (chrony's default: 4 weeks).
    pub fn set_nts_refresh(&mut self, secs: u32) {
        self.nts_refresh_ns = u64::from(secs) * 1_000_000_000;
    }

    /// Source `id`'s NTS state, if it uses NTS (its sessions, NTS-KE attempts).
    pub fn nts_client(&self, id: usize) -> Option<&NtsClient> {
        match self.sources.get(id).map(|s| s.poller.auth()) {
            Some(SourceAuth::Nts(n)) => Some(n),
            _ => None,
        }
    }

    /// Every NTS source's usable session, saved (see `ClientSession::dump`), by source
    /// id with the source's address: not one a NAK left unanswered (its keys, the ones
    /// saved, were just refused).
    pub fn nts_sessions(&self) -> Vec<(usize, SocketAddr, String)> {
        let now = self.clock.system_now_ns();
        self.sources
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.removed)
            .filter_map(|(i, s)| match s.poller.auth() {
                SourceAuth::Nts(n) => {
                    n.session
                        .as_ref()
                        .filter(|x| x.usable() && !x.nak())
                        .map(|x| {
                            // Saved with its number and NTS-KE time as the source has them
                            // (the time moved with any step since).
                            let mut x = x.clone();
                            x.set_context(n.sessions, n.last_ke_ns.unwrap_or(now));
                            (i, s.addr, x.dump())
                        })
                }
                _ => None,
            })
            .collect()
    }

    /// Source `id` starts an NTS-KE; how many it has started since its last reply that
    /// verified, this one included (the next waits the longer for it).
    pub fn nts_ke_started(&mut self, id: usize) -> u16 {
        self.sources
            .get_mut(id)
            .and_then(|s| s.poller.nts_mut())
            .map_or(0, |n| {
                n.ke_attempts = n.ke_attempts.saturating_add(1);
                n.ke_attempts
            })
    }

    /// A poll of source `id` that could not be sent for want of NTS keys: counted as
    /// unanswered (chrony's reachability), so a source whose NTS-KE keeps failing becomes
    /// unreachable and leaves the selection (a pool replaces it).
    pub fn unsendable_poll(&mut self, id: usize) -> Vec<Log> {
        let now = self.clock.system_now_ns();
        let Some(s) = self.sources.get_mut(id).filter(|s| !s.removed) else {
            return Vec::new();
        };
        let was_reachable = s.poller.reach() != 0;
        s.poller.unsendable();
        let mut log = Vec::new();
        if was_reachable && s.poller.reach() == 0 {
            log.push(Log::Warn(format!("Source {} is unreachable", s.name)));
            log.extend(self.reselect(None));
        }
        log.extend(self.missing_sample(id, now));
        log
    }

    /// Adds a source; returns its id.
    pub fn add_source(&mut self, addr: SocketAddr, opts: SourceOptions) -> usize {
        self.sources.push(SourceEntry {
            name: addr.ip().to_string(),
            addr,
            opts,
            poller: Poller::new(opts.poll).with_auth(self.auth_for(&opts)),
            stats: self.new_stats(&opts),
            sel: Memory::default(),
            updates: 0,
            stratum: 0,
            last_rx: None,
            measured: 0.0,
            error: 0.0,
            offline: false,
            removed: false,
            last_reply: None,
            last_sample: None,
            polls: 0,
            received: 0,
            replies: 0,
            samples: 0,
            recent: std::collections::VecDeque::new(),
            filter: opts
                .filter
                .map(|n| (SampleFilter::for_ntp(n, self.precision), 0)),
            refclock: None,
        });
        self.sources.len() - 1
    }

    fn new_stats(&self, opts: &SourceOptions) -> SourceStats {
        let mut s = SourceStats::new(opts.max_samples, opts.min_samples, self.precision);
        if let Some(a) = opts.asymmetry {
            s.set_fixed_asymmetry(a);
        }
        s
    }

    /// Takes sources out of service (ntpxc reload sources).
    pub fn remove_sources(&mut self, ids: &[usize]) -> Vec<Log> {
        let mut log = Vec::new();
        for id in ids {
            if let Some(s) = self.sources.get_mut(*id) {
                s.removed = true;
                s.stats.reset();
                log.push(Log::Info(format!("Removed source {}", s.name)));
            }
            if self.selected == Some(*id) {
                self.selected = None;
            }
        }
        log.extend(self.reselect(None));
        log
    }

    /// Sources in service, with their ids.
    fn live(&self) -> impl Iterator<Item = (usize, &SourceEntry)> {
        self.sources.iter().enumerate().filter(|(_, s)| !s.removed)
    }

    /// Ids of the NTP sources matching `addr` (all with `None`).
    pub fn source_ids(&self, addr: Option<IpAddr>) -> Vec<usize> {
        self.live()
            .filter(|(_, s)| s.is_ntp() && addr.is_none_or(|a| s.addr.ip() == a))
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

    /// Starts a burst on sources `ids` (ntpxc burst); how many.
    pub fn burst(&mut self, ids: &[usize]) -> usize {
        let mut n = 0;
        for &i in ids {
            if let Some(s) = self.sources.get_mut(i).filter(|s| !s.removed && !s.offline) {
                s.poller.start_burst();
                n += 1;
            }
        }
        n
    }

    /// Sources to replace (pool members): silent for eight polls, or bad for four of
    /// their own updates in a row.
    pub fn dead_sources(&self) -> Vec<usize> {
        self.live()
            .filter(|(_, s)| {
                let silent = s.poller.reach() == 0 && s.poller.reach_size() >= 8;
                (silent || s.sel.bad_updates >= BAD_UPDATES_LIMIT) && !s.offline && s.is_ntp()
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Points source `id` at a new address, forgetting everything about the old one.
    pub fn replace_source(&mut self, id: usize, addr: SocketAddr) -> Vec<Log> {
        let Some(opts) = self.sources.get(id).map(|s| s.opts) else {
            return Vec::new();
        };
        let stats = self.new_stats(&opts);
        let auth = self.auth_for(&opts);
        let s = &mut self.sources[id];
        let old = std::mem::replace(&mut s.name, addr.ip().to_string());
        s.addr = addr;
        s.stats = stats;
        s.poller = Poller::new(opts.poll).with_auth(auth);
        s.sel = Memory::default();
        s.updates = 0;
        s.stratum = 0;
        s.last_rx = None;
        s.polls = 0;
        (s.received, s.replies, s.samples) = (0, 0, 0);
        // Nothing measured of the old address may count for the new one.
        s.recent.clear();
        s.last_reply = None;
        s.last_sample = None;
        if let Some((f, n)) = s.filter.as_mut() {
            f.clear();
            *n = 0;
        }
        let mut log = vec![Log::Info(format!("Source {old} replaced with {}", s.name))];
        if self.selected == Some(id) {
            self.selected = None;
        }
        log.extend(self.reselect(None));
        log
    }

    /// The source table.
    pub fn sources(&self) -> &[SourceEntry] {
        &self.sources
    }

    /// The next request to source `id`, with random `cookie` as its transmit timestamp;
    /// `None` if the source is not to be polled. A request that finds the previous one
    /// unanswered may end the selection.
    pub fn transmit(&mut self, id: usize, cookie: u64) -> Option<(Vec<u8>, Vec<Log>)> {
        let now = self.clock.system_now_ns();
        let generation = self.clock.generation();
        let peer = self.selected == Some(id);
        let s = self
            .sources
            .get_mut(id)
            .filter(|s| !s.removed && !s.offline)
            .filter(|s| !matches!(s.poller.auth(), SourceAuth::Missing(_)))
            .filter(|s| !matches!(s.poller.auth(), SourceAuth::Nts(n) if n.needs_ke()))?;
        let was_reachable = s.poller.reach() != 0;
        let (req, missed) = s.poller.request(cookie, now, generation, peer);
        s.polls = s.polls.saturating_add(1);
        let mut log = Vec::new();
        if missed && was_reachable && s.poller.reach() == 0 {
            log.push(Log::Warn(format!("Source {} is unreachable", s.name)));
            log.extend(self.reselect(None));
        }
        if missed {
            log.extend(self.missing_sample(id, now));
        }
        Some((req, log))
    }

    /// The kernel's transmit timestamp of the request with `cookie`.
    pub fn transmitted(&mut self, id: usize, cookie: u64, t1_ns: u64) {
        if let Some(s) = self.sources.get_mut(id) {
            s.poller.set_sent(cookie, t1_ns);
        }
    }

    /// Seconds from the last request to source `id` to the next.
    pub fn interval(&self, id: usize) -> f64 {
        self.sources.get(id).map_or(64.0, |s| s.poller.interval())
    }

    /// A datagram from source `id` that arrived at system time `t4_ns` (the kernel's
    /// receive timestamp, `CLOCK_REALTIME`).
    pub fn receive(&mut self, id: usize, datagram: &[u8], t4_ns: u64, wire: WireInfo) -> Vec<Log> {
        let Some(s) = self.sources.get_mut(id) else {
            return Vec::new();
        };
        let was_reachable = s.poller.reach() != 0;
        s.received = s.received.saturating_add(1);
        let Ok(r) = s.poller.reply(datagram) else {
            return Vec::new();
        };
        s.replies += 1;
        s.last_reply = Some((r.header, wire));
        let mut log = Vec::new();
        if r.kiss_rate {
            log.push(Log::Warn(format!(
                "Source {} sent Kiss-o'-Death RATE; polling less often",
                s.name
            )));
        }
        if !r.synchronised {
            // chrony's test D fails for these (as for a loop): +0.1 to the poll.
            s.poller.sample_refused(true);
            if was_reachable && s.poller.reach() == 0 {
                log.extend(self.reselect(None));
            }
            log.extend(self.missing_sample(id, t4_ns));
            return log;
        }
        if r.generation != self.clock.generation() {
            // The clock was stepped while the exchange was in flight: the receive stamp may
            // be on either side of the step. Counted as an answer, not taken as a sample.
            log.extend(self.missing_sample(id, t4_ns));
            return log;
        }
        let t1_ns = r.sent;
        let (sample, response_time) = self.measure(id, &r.header, t1_ns, t4_ns);
        let good = self.sample_is_good(id, &sample, &r.header, response_time, &wire);
        let s = &mut self.sources[id];
        s.stratum = r.header.stratum;
        log.push(Log::Record(measurement(
            s, &r.header, &sample, t4_ns, good, wire,
        )));
        match good {
            Ok(()) => {}
            Err(Refusal::DelayDeviation) => {
                s.poller.sample_refused(false);
                if let Some(l) = self.watch_route(id, sample) {
                    log.push(l);
                    self.sources[id].updates += 1;
                    log.extend(self.reselect(Some(id)));
                } else {
                    log.extend(self.missing_sample(id, t4_ns));
                }
                return log;
            }
            Err(why) => {
                s.poller.sample_refused(why == Refusal::Loop);
                log.extend(self.missing_sample(id, t4_ns));
                return log;
            }
        }
        // As chronyd: a measurement within seconds of a leap second may straddle it (the
        // server or this clock may not have applied it yet), so it is not used.
        if crate::refclock::leap_second_close(&self.leaps, self.leap != 0, t4_ns as f64 * 1e-9) {
            log.push(Log::Info(format!(
                "Sample from {} ignored: close to a leap second",
                self.sources[id].name
            )));
            return log;
        }
        // A route change restarts the statistics from the latest samples, this one included.
        let restarted = self.watch_route(id, sample);
        let s = &mut self.sources[id];
        s.samples += 1;
        s.measured = sample.offset;
        s.error = sample.delay / 2.0 + sample.dispersion;
        s.last_sample = Some(sample);
        s.poller.good_reply();
        if let Some(l) = restarted {
            log.push(l);
            if let Some((f, n)) = s.filter.as_mut() {
                f.clear();
                *n = 0;
            }
            log.extend(self.process_sample(id, sample, t4_ns, false));
            return log;
        }
        if let Some(sample) = self.filtered(id, Some(sample)) {
            log.extend(self.process_sample(id, sample, t4_ns, true));
        }
        log
    }

    /// With `filter`: takes the poll's sample (`None`: the poll brought none) and, once
    /// the configured number of polls is counted, gives the combined sample. Without a
    /// filter the sample passes through.
    fn filtered(&mut self, id: usize, sample: Option<Sample>) -> Option<Sample> {
        let Some((f, count)) = self.sources.get_mut(id)?.filter.as_mut() else {
            return sample;
        };
        if let Some(s) = sample {
            f.add(s);
        }
        *count += 1;
        if *count < f.max_samples() {
            return None;
        }
        // As chrony: a failed combination keeps counting, and the next poll tries again.
        let combined = f.combine()?;
        *count = 0;
        Some(combined)
    }

    /// A poll of source `id` that brought no good sample: with `filter` it still counts
    /// towards the combination.
    fn missing_sample(&mut self, id: usize, now_ns: u64) -> Vec<Log> {
        match self.filtered(id, None) {
            Some(sample) => self.process_sample(id, sample, now_ns, true),
            None => Vec::new(),
        }
    }

    /// Puts `sample` into source `id`'s statistics (`add` false: they were just restarted
    /// with it), adapts the poll, and selects.
    fn process_sample(&mut self, id: usize, sample: Sample, now_ns: u64, add: bool) -> Vec<Log> {
        let mut log = Vec::new();
        let s = &mut self.sources[id];
        let predicted = s.stats.predict_offset(sample.time);
        if add {
            s.stats.add(sample);
        }
        s.updates += 1;
        s.last_rx = Some(sample.time);
        let filter_delay = s
            .filter
            .as_ref()
            .and_then(|(f, _)| f.last())
            .map_or(f64::INFINITY, |l| l.delay);
        s.poller.sample_processed(
            (sample.offset - predicted).abs(),
            sample.dispersion + sample.delay / 2.0,
            s.stats.len(),
            s.stats.min_delay().min(filter_delay),
        );
        let now = self.clock.local_at(now_ns);
        if let Some(td) = s.stats.tracking_data() {
            log.push(Log::Record(Record::Statistics {
                time: now_ns as f64 * 1e-9,
                addr: s.name.clone(),
                figures: [
                    s.stats.std_dev(),
                    -(td.offset + (now - td.ref_time) * td.frequency),
                    td.offset_sd,
                    // chrony's sign: positive when the local clock runs fast.
                    -td.frequency,
                    td.skew,
                ],
                fit: s.stats.last_fit(),
                runs: s.stats.runs(),
            }));
        }
        log.extend(self.reselect(Some(id)));
        log
    }

    /// The sample of an exchange: local times on the NTP clock, the server's on the same
    /// scale of seconds; and the server's response time.
    fn measure(&self, id: usize, h: &NtpHeader, t1_ns: u64, t4_ns: u64) -> (Sample, f64) {
        let s = &self.sources[id];
        let t1 = self.clock.local_at(t1_ns);
        let t4 = self.clock.local_at(t4_ns);
        // The server's timestamps as system-clock seconds, in the era nearest t4.
        let scale = |ts: NtpTimestamp| {
            let ns = ts.to_unix_ns(t4_ns).clamp(0, i128::from(u64::MAX)) as u64;
            self.clock.system_secs(ns)
        };
        let (t2, t3) = (scale(h.receive_ts), scale(h.transmit_ts));
        let info = SourceInfo {
            root_delay: ntp_short_to_secs(h.root_delay),
            root_dispersion: ntp_short_to_secs(h.root_dispersion),
            // `minstratum`: a backup source looks further away than it says.
            stratum: h.stratum.max(self.sources[id].opts.min_stratum),
            leap: h.leap,
            precision: 2f64.powi(i32::from(h.precision)),
        };
        let mut sample = Sample::from_timestamps(
            [t1, t2, t3, t4],
            self.precision,
            s.stats.skew_for_dispersion(),
            &info,
        );
        sample.offset += s.opts.offset;
        (sample, (t3 - t2).abs())
    }

    /// chrony's tests of a sample (A: delay and response time, B: delay ratio, C: delay
    /// deviation, D: not a loop back to us). `Err(true)` for a loop.
    fn sample_is_good(
        &self,
        id: usize,
        sample: &Sample,
        h: &NtpHeader,
        response_time: f64,
        wire: &WireInfo,
    ) -> Result<(), Refusal> {
        let s = &self.sources[id];
        let o = &s.opts;
        let precision = self.precision + 2f64.powi(i32::from(h.precision));
        if sample.delay - sample.dispersion > o.max_delay
            || precision > o.max_delay
            || response_time > MAX_RESPONSE_TIME
        {
            return Err(Refusal::Delay);
        }
        let error_rate = self.params.max_clock_error;
        if let Some(d) = s.stats.delay_test_data(sample.time) {
            let drift = d.last_sample_ago.abs() * (d.skew + error_rate);
            if o.max_delay_ratio >= 1.0 && sample.delay > d.min_delay * o.max_delay_ratio + drift {
                return Err(Refusal::Delay);
            }
            let max_delta = d.std_dev * o.max_delay_dev_ratio + drift;
            let delta = (sample.delay - d.min_delay) / 2.0;
            let surprise = (sample.offset - d.predicted_offset).abs() - delta;
            if delta > max_delta && surprise <= max_delta {
                return Err(Refusal::DelayDeviation);
            }
        }
        let us = refid_of(wire.local.ip());
        if h.stratum > 1 && h.refid == us {
            return Err(Refusal::Loop);
        }
        Ok(())
    }

    /// Notes a sample of source `id` (taken or refused for its delay) and looks for a
    /// route change: when even the best of the latest samples took far longer than the
    /// best the statistics hold (by four times their median excess), the path changed and
    /// the old samples only mislead (weighted by delay, they would outvote the new path
    /// for hours). The statistics start over from the latest samples.
    fn watch_route(&mut self, id: usize, sample: Sample) -> Option<Log> {
        let s = &mut self.sources[id];
        s.recent.push_back(sample);
        while s.recent.len() > ROUTE_CHANGE_SAMPLES {
            s.recent.pop_front();
        }
        if s.recent.len() < ROUTE_CHANGE_SAMPLES || s.stats.len() < ROUTE_CHANGE_SAMPLES {
            return None;
        }
        let (old_min, old_median) = (s.stats.min_delay(), s.stats.median_delay());
        let new_min = s
            .recent
            .iter()
            .map(|r| r.delay)
            .fold(f64::INFINITY, f64::min);
        let threshold = (4.0 * (old_median - old_min)).max(10.0 * self.precision);
        if new_min - old_min <= threshold {
            return None;
        }
        s.stats.reset();
        for r in std::mem::take(&mut s.recent) {
            s.stats.add(r);
        }
        Some(Log::Warn(format!(
            "Source {}: the path's delay changed from {old_min:.6} to {new_min:.6} seconds; its statistics start over",
            s.name
        )))
    }

    /// Runs selection (`updated`: the source that just gave a sample) and, when the
    /// selected source has a new sample, the clock update.
    pub fn reselect(&mut self, updated: Option<usize>) -> Vec<Log> {
        let now = self.clock.now();
        let cands: Vec<Candidate> = self
            .sources
            .iter()
            .map(|s| {
                let live = !s.removed;
                Candidate {
                    data: live
                        .then(|| s.stats.selection_data(now, self.params.max_jitter))
                        .flatten(),
                    tracking: live.then(|| s.stats.tracking_data()).flatten(),
                    reach: s.poller.reach(),
                    reach_size: s.poller.reach_size(),
                    unreachable_run: s.poller.unreachable_run(),
                    noselect: s.opts.noselect || !live,
                    prefer: s.opts.prefer,
                    trust: s.opts.trust,
                    require: s.opts.require && live,
                    updates: s.updates,
                    ref_id: u32::from_be_bytes(s.ref_id()),
                    local_ref_id: s
                        .last_reply
                        .map(|(_, w)| u32::from_be_bytes(refid_of(w.local.ip()))),
                }
            })
            .collect();
        let mut mem: Vec<Memory> = self.sources.iter().map(|s| s.sel).collect();
        let outcome = select(&cands, &mut mem, &self.params, self.selected, updated);
        for (s, m) in self.sources.iter_mut().zip(mem) {
            s.sel = m;
        }
        match outcome {
            Outcome::None(NoSelection::WaitsStats) => Vec::new(),
            Outcome::None(why) => self.lose_selection(why),
            Outcome::Selected {
                selected,
                update,
                leap,
            } => {
                let mut log = Vec::new();
                self.last_failure = None;
                if self.selected != Some(selected) {
                    log.push(Log::Info(format!(
                        "Selected source {}",
                        self.sources[selected].name
                    )));
                }
                self.selected = Some(selected);
                let unix = (self.clock.system_now_ns() / 1_000_000_000) as i64;
                let leap = if leap != 0 && leap_day(unix) { leap } else { 0 };
                if let Some(c) = update {
                    log.extend(self.update_clock(selected, &c, leap));
                }
                log
            }
        }
    }

    fn lose_selection(&mut self, why: NoSelection) -> Vec<Log> {
        let mut log = Vec::new();
        if self.last_failure != Some(why) {
            let text = match why {
                NoSelection::NoMajority { agree, of } if agree <= 1 => {
                    format!("Can't synchronise: no majority (no agreement among {of} sources)")
                }
                NoSelection::NoMajority { agree, of } => {
                    format!("Can't synchronise: no majority (only {agree} of {of} sources agree)")
                }
                NoSelection::WaitsSources => "Can't synchronise: not enough sources".to_string(),
                NoSelection::NoSelectable | NoSelection::WaitsStats => {
                    "Can't synchronise: no selectable sources".to_string()
                }
            };
            // Nothing to lose before the first selection: only a failure after one is news.
            if self.selected.is_some() || matches!(why, NoSelection::NoMajority { .. }) {
                log.push(Log::Warn(text));
            }
        }
        self.last_failure = Some(why);
        self.selected = None;
        // As chrony: with no source selectable the clock keeps its last reference, whose
        // distance grows until clients (or `local`) give up on it; only sources that
        // disagree with no majority make it unsynchronised at once.
        if matches!(why, NoSelection::NoMajority { .. }) {
            self.set_unsynchronised();
        }
        log
    }

    fn set_unsynchronised(&mut self) {
        if self.synced.take().is_some() {
            self.unsynced_since = self.clock.now();
        }
    }

    /// Updates the clock from the combined estimate, and restates every source's samples
    /// in the clock's new scale.
    fn update_clock(&mut self, selected: usize, c: &Combined, leap: u8) -> Vec<Log> {
        if let Some(refused) = self.check_max_change(c) {
            for s in &mut self.sources {
                s.updates = 0;
            }
            return vec![refused];
        }
        // As chrony: the leap indicator changes only with an update that was taken.
        self.leap = leap;
        let sys_ns = self.clock.system_now_ns();
        let r: UpdateResult = self.discipline.update(&mut self.clock, c);
        for s in &mut self.sources {
            s.stats.restate(r.time, r.dfreq, r.offset);
            if let Some((f, _)) = s.filter.as_mut() {
                f.restate(r.time, r.dfreq, r.offset);
            }
            if let Some(rc) = s.refclock.as_mut() {
                rc.filter.restate(r.time, r.dfreq, r.offset);
            }
            for h in &mut s.recent {
                let shift = r.offset + (h.time - r.time) * r.dfreq;
                h.time += shift;
                h.offset -= shift;
            }
            s.updates = 0;
            if let Some(l) = s.last_rx.as_mut() {
                *l += r.offset + (*l - r.time) * r.dfreq;
            }
        }
        let mut log = Vec::new();
        if let Some(step) = r.stepped {
            self.shift_nts_times(step);
            log.push(Log::Info(format!(
                "System clock was stepped by {step:.6} seconds"
            )));
        } else if r.log_change {
            log.push(Log::Warn(format!(
                "System clock wrong by {:.6} seconds, adjustment started",
                r.offset
            )));
        }
        log.push(Log::Record(Record::Tracking {
            time: sys_ns as f64 * 1e-9,
            addr: self.sources[selected].name.clone(),
            stratum: (c.stratum + 1).min(STRATUM_UNSYNC),
            figures: [
                -self.clock.frequency() * 1e6,
                self.discipline.skew() * 1e6,
                -r.offset,
                c.offset_sd,
                self.clock.uncorrected(),
                c.root_delay,
                c.root_dispersion,
            ],
            leap: self.leap,
            combined: c.combined,
        }));
        self.synced = Some(Synced {
            refid: self.sources[selected].ref_id(),
            name: self.sources[selected].name.clone(),
            stratum: c.stratum,
            // On the clock's scale after the correction (a step moves both).
            time: r.time + r.offset,
            sys_ns: self.clock.system_now_ns(),
            root_delay: c.root_delay,
            root_dispersion: c.root_dispersion,
        });
        if let Some(l) = self.local
            && c.root_delay / 2.0 + c.root_dispersion < l.activate
        {
            self.local_activated = true;
        }
        log
    }

    /// `maxchange`: a correction too large once the first updates are past is refused
    /// (a warning) a configured number of times, then the daemon gives up (fatal), as
    /// chrony does: a man in the middle cannot walk the clock far.
    fn check_max_change(&mut self, c: &Combined) -> Option<Log> {
        let (limit, start, ignore) = self.max_change.as_mut()?;
        if *start < 0 {
            return None;
        }
        if *start > 0 {
            *start -= 1;
            return None;
        }
        let offset = c.offset + (self.clock.now() - c.ref_time) * c.frequency;
        if offset.abs() <= *limit {
            return None;
        }
        let text = format!(
            "Adjustment of {:.3} seconds exceeds the allowed maximum of {:.3} seconds ({})",
            offset,
            *limit,
            if *ignore == 0 { "exiting" } else { "ignored" }
        );
        if *ignore == 0 {
            return Some(Log::Fatal(text));
        }
        if *ignore > 0 {
            *ignore -= 1;
        }
        Some(Log::Warn(text))
    }

    /// The clock's time scale jumped by itself (an external step): everything measured is
    /// forgotten, the sources are polled from their shortest interval again, and the next
    /// update counts as a first one.
    pub fn external_step(&mut self, step: f64) -> Vec<Log> {
        self.clock.external_step();
        self.shift_nts_times(step);
        for s in &mut self.sources {
            s.stats.reset();
            s.poller.reset();
            s.updates = 0;
            s.last_rx = None;
            s.recent.clear();
            if let Some((f, n)) = s.filter.as_mut() {
                f.clear();
                *n = 0;
            }
            if let Some(rc) = s.refclock.as_mut() {
                rc.filter.clear();
            }
        }
        self.discipline.forget_last_update();
        self.selected = None;
        self.set_unsynchronised();
        vec![Log::Warn(format!(
            "System clock wrong by {step:.6} seconds (an external step): all sources reset"
        ))]
    }

    /// What the server says now (system time `now_ns`): the reference it follows, or
    /// with `local` its own clock once the reference is too far or too long gone (or
    /// never was), as chrony decides.
    pub fn reference(&self, now_ns: u64) -> Reference {
        let (corr, rate) = self.clock.served_correction(now_ns);
        let now = self.clock.local_at(now_ns);
        let synced = self.synced.as_ref().map(|s| {
            let age = now - s.time;
            let dispersion = s.root_dispersion + age.abs() * self.discipline.dispersion_rate();
            (s, age, dispersion)
        });
        let local = self.local.filter(|l| {
            let waited = match synced {
                Some((_, age, _)) => age >= l.wait_synced,
                None => now - self.unsynced_since >= l.wait_unsynced(),
            };
            self.local_activated && waited
        });
        let mut r = match (synced, local) {
            (Some((s, _, dispersion)), l)
                if l.is_none_or(|l| s.root_delay / 2.0 + dispersion <= l.distance) =>
            {
                let ref_corr = self.clock.served_correction(s.sys_ns).0;
                Reference {
                    leap: self.leap,
                    stratum: (s.stratum + 1).min(STRATUM_UNSYNC),
                    refid: s.refid,
                    ref_time_unix_ns: served_ns(s.sys_ns, ref_corr),
                    root_delay_ns: (s.root_delay * 1e9) as u64,
                    root_dispersion_ns: (dispersion * 1e9) as u64,
                    offset_ns: 0,
                    rate: 0.0,
                }
            }
            // A second back, so no transmit timestamp a client sees precedes it.
            (_, Some(l)) => Reference::local(
                l.stratum,
                served_ns(now_ns, corr).saturating_sub(1_000_000_000),
            ),
            (_, None) => Reference::unsynchronised(),
        };
        if r.ref_time_unix_ns > served_ns(now_ns, corr) {
            r.ref_time_unix_ns = served_ns(now_ns, corr);
        }
        r.offset_ns = (corr * 1e9).round() as i64;
        r.rate = rate;
        r
    }

    /// Steps the clock by the correction still being slewed (ntpxc makestep).
    pub fn make_step(&mut self) -> Vec<Log> {
        let step = self.clock.step(0.0);
        self.shift_nts_times(step);
        vec![Log::Info(format!(
            "System clock was stepped by {step:.6} seconds"
        ))]
    }

    /// A leap second the kernel did not take by the end of chrony's window (clock
    /// control off, or the kernel would not): the clock takes it as a step of `step`
    /// seconds, as chronyd does in its step mode. The sources leapt too, so nothing
    /// measured needs restating.
    pub fn leap_step(&mut self, step: f64) -> Vec<Log> {
        let taken = self.clock.step(step);
        self.shift_nts_times(taken);
        vec![Log::Warn(
            "System clock was stepped for leap second".to_string(),
        )]
    }

    /// Replaces the `makestep` setting (ntpxc makestep THRESHOLD LIMIT).
    pub fn set_makestep(&mut self, threshold: f64, limit: i32) {
        self.discipline.set_makestep(Some((threshold, limit)));
    }

    /// Whether a source is selected and the clock follows it.
    pub fn synchronised(&self) -> bool {
        self.synced.is_some()
    }

    /// The `ntpdata` report for every source (or only `addr`'s); as chronyd, one that
    /// never gave a sample shows zeros beside its counters, which say why.
    pub fn ntpdata_report(&self, addr: Option<IpAddr>) -> Vec<NtpDataReport> {
        let now_ns = self.clock.system_now_ns();
        self.live()
            .map(|(_, s)| s)
            .filter(|s| s.is_ntp() && addr.is_none_or(|a| s.addr.ip() == a))
            .map(|s| {
                let (h, w) = s.last_reply.unwrap_or_else(|| {
                    let local = match s.addr {
                        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                    };
                    let wire = WireInfo {
                        local,
                        tx: Stamp::Daemon,
                        rx: Stamp::Daemon,
                    };
                    (NtpHeader::default(), wire)
                });
                let (offset, delay, dispersion) = s
                    .last_sample
                    .map_or((0.0, 0.0, 0.0), |x| (x.offset, x.delay, x.dispersion));
                let ref_time = if h.reference_ts.0 == 0 {
                    0.0
                } else {
                    h.reference_ts.to_unix_ns(now_ns) as f64 * 1e-9
                };
                NtpDataReport {
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
                    ref_time,
                    offset,
                    delay,
                    dispersion,
                    response_time: (h.transmit_ts.0.wrapping_sub(h.receive_ts.0)) as f64
                        / 4_294_967_296.0,
                    tx_stamp: w.tx,
                    rx_stamp: w.rx,
                    total_tx: s.polls,
                    total_rx: s.received,
                    total_valid_rx: s.replies,
                    total_good_rx: s.samples,
                    authenticated: !matches!(s.poller.auth(), SourceAuth::None),
                }
            })
            .collect()
    }

    /// The `authdata` report: how each source is authenticated.
    pub fn authdata_report(&self) -> Vec<AuthDataReport> {
        self.live()
            .filter(|(_, s)| s.is_ntp())
            .map(|(_, s)| {
                let (mode, key_id, key_type, key_bits) = match s.poller.auth() {
                    SourceAuth::None => ("-", 0, 0, 0),
                    SourceAuth::Key(k) => ("SK", k.id(), k.type_id(), k.bits()),
                    SourceAuth::Missing(id) => ("SK", *id, 0, 0),
                    // As chronyc shows it: the session's number and the algorithm of its
                    // keys, none before the first NTS-KE.
                    SourceAuth::Nts(n) => {
                        match n.session.as_ref().map(crate::nts::ClientSession::aead) {
                            Some(a) => ("NTS", n.sessions, a.id(), 8 * a.key_len() as u16),
                            None => ("NTS", n.sessions, 0, 0),
                        }
                    }
                };
                let mut r = AuthDataReport {
                    name: s.name.clone(),
                    mode: mode.into(),
                    key_id,
                    key_type,
                    key_bits,
                    last_ke_ago: None,
                    ke_attempts: 0,
                    naks: 0,
                    cookies: 0,
                    cookie_len: 0,
                };
                if let SourceAuth::Nts(n) = s.poller.auth() {
                    let now = self.clock.system_now_ns();
                    r.last_ke_ago = n
                        .last_ke_ns
                        .map(|t| (now.saturating_sub(t) / 1_000_000_000) as u32);
                    r.ke_attempts = n.ke_attempts;
                    if let Some(sess) = &n.session {
                        // chronyc's NAK column: whether the last request got one.
                        r.naks = u16::from(sess.nak());
                        r.cookies = sess.cookies() as u16;
                        r.cookie_len = sess.cookie_len() as u16;
                    }
                }
                r
            })
            .collect()
    }

    /// The `selectdata` report at system time `now_ns`.
    pub fn selectdata_report(&self, now_ns: u64) -> Vec<SelectDataReport> {
        let now = self.clock.local_at(now_ns);
        self.live()
            .map(|(_, s)| {
                let d = s.stats.selection_data(now, self.params.max_jitter);
                let (lo, hi) = d.map_or((0.0, 0.0), |d| (-d.hi, -d.lo));
                SelectDataReport {
                    state: s.sel.state.select_letter(),
                    name: s.name.clone(),
                    auth: false,
                    noselect: s.opts.noselect,
                    prefer: s.opts.prefer,
                    last: s.last_rx.map(|t| (now - t).max(0.0) as u64),
                    score: s.sel.score,
                    lo,
                    hi,
                    leap: d.map_or(0, |d| d.leap),
                }
            })
            .collect()
    }

    /// The `sourcestats` report at system time `now_ns`.
    pub fn sourcestats_report(&self, now_ns: u64) -> Vec<SourceStatsReport> {
        let now = self.clock.local_at(now_ns);
        self.live()
            .map(|(_, s)| {
                let (frequency, skew, offset, std_dev) = s.stats.report(now);
                let known = !s.stats.is_empty();
                SourceStatsReport {
                    name: s.name.clone(),
                    np: s.stats.len(),
                    nr: s.stats.runs(),
                    span: s.stats.span(),
                    // chrony's sign: positive when the local clock runs fast.
                    frequency_ppm: if known { -frequency * 1e6 } else { 0.0 },
                    skew_ppm: if known { skew * 1e6 } else { 0.0 },
                    offset: if known { -offset } else { 0.0 },
                    std_dev: if known { std_dev } else { 0.0 },
                }
            })
            .collect()
    }

    /// The `sources` report at system time `now_ns`.
    pub fn sources_report(&self, now_ns: u64) -> Vec<SourceReport> {
        let now = self.clock.local_at(now_ns);
        self.live()
            .map(|(_, s)| {
                let adjusted = s.stats.last_sample().map_or(0.0, |x| x.offset);
                SourceReport {
                    mode: if s.is_ntp() { '^' } else { '#' },
                    state: s.sel.state.symbol(),
                    name: s.name.clone(),
                    stratum: s.stratum,
                    poll: s.poller.poll(),
                    reach: s.poller.reach(),
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
        // The source's name only while its reference is the one served.
        let ref_name = self
            .synced
            .as_ref()
            .filter(|s| r.leap != LEAP_UNSYNC && r.refid == s.refid)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        TrackingReport {
            refid: u32::from_be_bytes(r.refid),
            ref_name,
            stratum: if r.leap == LEAP_UNSYNC { 0 } else { r.stratum },
            ref_time: r.ref_time_unix_ns as f64 * 1e-9,
            system_time: -corr,
            last_offset: -self.discipline.last_offset(),
            rms_offset: self.discipline.rms_offset(),
            frequency_ppm: -self.clock.frequency() * 1e6,
            residual_freq_ppm: -self.discipline.residual_freq() * 1e6,
            skew_ppm: self.discipline.skew() * 1e6,
            root_delay: r.root_delay_ns as f64 * 1e-9,
            root_dispersion: r.root_dispersion_ns as f64 * 1e-9,
            update_interval: self.discipline.update_interval(),
            leap: r.leap,
        }
    }

    /// The settings the engine was made with.
    pub fn sync_config(&self) -> &SyncConfig {
        &self.sync
    }
}

/// The `measurements.log` line of an exchange.
fn measurement(
    s: &SourceEntry,
    h: &NtpHeader,
    sample: &Sample,
    t4_ns: u64,
    good: Result<(), Refusal>,
    wire: WireInfo,
) -> Record {
    Record::Measurement {
        delay_tests: [
            good != Err(Refusal::Delay),
            true,
            good != Err(Refusal::DelayDeviation),
            good != Err(Refusal::Loop),
        ],
        stamps: (wire.tx, wire.rx),
        time: t4_ns as f64 * 1e-9,
        addr: s.name.clone(),
        leap: h.leap,
        stratum: h.stratum,
        polls: (s.poller.poll(), h.poll),
        score: s.poller.score(),
        figures: [
            sample.offset,
            sample.delay,
            sample.dispersion,
            ntp_short_to_secs(h.root_delay),
            ntp_short_to_secs(h.root_dispersion),
        ],
        refid: u32::from_be_bytes(h.refid),
    }
}

fn served_ns(sys_ns: u64, corr: f64) -> u64 {
    (i128::from(sys_ns) + (corr * 1e9) as i128).max(0) as u64
}
