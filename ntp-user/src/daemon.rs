//! `ntpxd`'s tasks: publishing the server state, the userspace NTP socket, the control
//! socket, and an orderly shutdown.

use crate::{
    acl::AccessTable,
    clock,
    config::Config,
    control::{self, Request, Response},
    drift::{self, Drift},
    engine::{Engine, FreeRunning},
    ifaces,
    kernel::KernelPath,
    net::{self, TimestampedSocket},
    packet::NtpTimestamp,
    reference::{PublishParams, server_state},
    server::{self, LastExchange, Verdict},
    stats::{NamedCounter, ServerStats, XdpStats},
    steered::SystemSteered,
    sync_task::{self, DaemonClock, SharedEngine},
};
use anyhow::{Context, Result, anyhow, bail};
use ntp_common::{Counter, ServerState};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, warn};

/// How often the state is republished (the kernel's staleness limit is counted from it).
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Command-line choices that are not in the configuration file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Never touch the system clock (`-x`).
    pub no_clock_control: bool,
    /// Do not load the XDP program (`--no-xdp`).
    pub no_xdp: bool,
    /// Interfaces to attach to (`-i`); empty means those carrying the served addresses.
    pub interfaces: Vec<String>,
    /// Run as this user once set up (`-u`).
    pub user: Option<String>,
    /// The configuration file, re-read by `reload sources`.
    pub config_path: PathBuf,
}

#[derive(Default)]
struct DaemonCounters {
    client_log_dropped: AtomicU64,
    ratelimited: AtomicU64,
    received: AtomicU64,
    answered: AtomicU64,
    ignored: AtomicU64,
    denied: AtomicU64,
    interleaved: AtomicU64,
    tx_stamps: AtomicU64,
    cmd_received: AtomicU64,
    cmd_dropped: AtomicU64,
}

struct Shared {
    config: Config,
    acl: AccessTable,
    params: PublishParams,
    tai_offset_s: std::sync::atomic::AtomicI32,
    state: Mutex<ServerState>,
    kernel: Option<Mutex<KernelPath>>,
    counters: DaemonCounters,
    clients: Mutex<std::collections::HashMap<IpAddr, ntp_common::ClientRecord>>,
    config_path: PathBuf,
    engine: SharedEngine,
    leaps: Vec<crate::leaptz::Leap>,
    sync: std::sync::OnceLock<sync_task::SyncHandle>,
}

impl Shared {
    /// Recomputes the state from the reference and publishes it to both paths.
    fn publish(&self) -> Result<()> {
        let now_tai = clock::tai_ns()?;
        // The kernel's TAI offset changes at leap seconds (and with ADJ_TAI): read it
        // with every publication, or the kernel would serve a whole second off.
        let tai = match clock::kernel_time() {
            Ok(k) => {
                self.tai_offset_s.store(k.tai_offset_s, Ordering::Relaxed);
                k.tai_offset_s
            }
            Err(_) => self.tai_offset_s.load(Ordering::Relaxed),
        };
        let now_unix = now_tai.wrapping_sub(tai as i64 as u64 * 1_000_000_000);
        let mut reference = lock(&self.engine).reference(now_unix);
        // The tz database announces a leap second the sources may not (leapsectz).
        if reference.leap == 0 && !self.leaps.is_empty() {
            reference.leap =
                crate::leaptz::leap_indicator(&self.leaps, (now_unix / 1_000_000_000) as i64);
        }
        let st = server_state(&reference, &self.params, now_tai, tai);
        *lock(&self.state) = st;
        if let Some(k) = &self.kernel {
            lock(k).publish(&st);
        }
        Ok(())
    }

    fn server_stats(&self) -> ServerStats {
        let c = &self.counters;
        let mut s = ServerStats {
            ntp_received: c.received.load(Ordering::Relaxed),
            ntp_dropped: c.denied.load(Ordering::Relaxed) + c.ratelimited.load(Ordering::Relaxed),
            cmd_received: c.cmd_received.load(Ordering::Relaxed),
            cmd_dropped: c.cmd_dropped.load(Ordering::Relaxed),
            client_log_dropped: c.client_log_dropped.load(Ordering::Relaxed),
            daemon_answered: c.answered.load(Ordering::Relaxed),
            daemon_ignored: c.ignored.load(Ordering::Relaxed),
            interleaved: c.interleaved.load(Ordering::Relaxed),
            daemon_tx_stamps: c.tx_stamps.load(Ordering::Relaxed),
            ..Default::default()
        };
        {
            let clients = lock(&self.clients);
            let held: Vec<u64> = clients
                .values()
                .filter(|r| r.xleave_tx != 0)
                .map(|r| r.xleave_rx)
                .collect();
            s.timestamps_held = held.len() as u64;
            if let (Some(lo), Some(hi)) = (held.iter().min(), held.iter().max()) {
                s.timestamp_span = (hi - lo) >> 32;
            }
        }
        if let Some(k) = self.kernel_counters() {
            let get = |c: Counter| k.get(c as usize).copied().unwrap_or(0);
            let answered = get(Counter::Answered);
            let dropped = get(Counter::DropDenied)
                + get(Counter::DropRateLimit)
                + get(Counter::DropBadSource);
            let answered = answered + get(Counter::AnsweredKod);
            let passed = get(Counter::NtpReceived).saturating_sub(answered + dropped);
            // Passed requests reach the socket and are counted there; count each once.
            s.ntp_received += answered + dropped;
            s.ntp_dropped += dropped;
            s.kernel_answered = Some(answered);
            s.kernel_passed = Some(passed);
            s.kernel_dropped = Some(dropped);
            // An LRU map evicts silently: what was created and is gone was evicted.
            if let Some(present) = self.kernel_client_count() {
                s.client_log_dropped += get(Counter::ClientRecordsCreated).saturating_sub(present);
            }
        }
        s
    }

    fn kernel_client_count(&self) -> Option<u64> {
        match lock(self.kernel.as_ref()?).client_count() {
            Ok(n) => Some(n),
            Err(e) => {
                warn!("Could not count the kernel's client records: {e:#}");
                None
            }
        }
    }

    fn kernel_clients(&self) -> Option<Vec<(IpAddr, ntp_common::ClientRecord)>> {
        match lock(self.kernel.as_ref()?).clients() {
            Ok(v) => Some(v),
            Err(e) => {
                warn!("Could not read the kernel's client log: {e:#}");
                None
            }
        }
    }

    fn kernel_counters(&self) -> Option<Vec<u64>> {
        let k = self.kernel.as_ref()?;
        match lock(k).counters() {
            Ok(v) => Some(v),
            Err(e) => {
                warn!("Could not read XDP counters: {e:#}");
                None
            }
        }
    }

    fn xdp_stats(&self) -> XdpStats {
        let interfaces = self
            .kernel
            .as_ref()
            .map(|k| {
                lock(k)
                    .attached()
                    .into_iter()
                    .map(|(i, m)| (i, m.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let counters = self
            .kernel_counters()
            .map(|v| {
                Counter::ALL
                    .iter()
                    .zip(v)
                    .map(|(c, value)| NamedCounter {
                        name: c.name().to_string(),
                        value,
                    })
                    .collect()
            })
            .unwrap_or_default();
        XdpStats {
            interfaces,
            counters,
        }
    }

    /// Counts a request from `ip` in the daemon's client log (the kernel keeps its own)
    /// and, for an allowed one, applies the rate limit as the kernel does; with the
    /// client's last exchange, for interleaved mode.
    fn log_client(
        &self,
        ip: IpAddr,
        rx_tai: u64,
        dropped: bool,
    ) -> (ntp_common::RateVerdict, LastExchange) {
        use ntp_common::RateVerdict;
        let Some(limit) = self.config.client_log else {
            return (RateVerdict::Answer, LastExchange::default());
        };
        let mut c = lock(&self.clients);
        if !c.contains_key(&ip) && c.len() >= limit as usize {
            // Full: the least recently seen client makes room, as the kernel's LRU map does.
            if let Some(oldest) = c.iter().min_by_key(|(_, r)| r.last_tai_ns).map(|(k, _)| *k) {
                c.remove(&oldest);
                self.counters
                    .client_log_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let r = c.entry(ip).or_default();
        let verdict = match &self.config.ratelimit {
            Some(rl) if !dropped => rl.check(r, rx_tai, crate::net::random_u64() as u32),
            _ => RateVerdict::Answer,
        };
        r.hit(rx_tai, dropped || verdict == RateVerdict::Drop);
        let last = LastExchange {
            rx: NtpTimestamp(r.xleave_rx),
            tx: NtpTimestamp(r.xleave_tx),
        };
        (verdict, last)
    }

    /// A kernel CLOCK_REALTIME timestamp on CLOCK_TAI, the timebase's clock.
    fn tai_of(&self, realtime_ns: u64) -> u64 {
        let offset = self.tai_offset_s.load(Ordering::Relaxed) as i64 as u64 * 1_000_000_000;
        realtime_ns.wrapping_add(offset)
    }

    /// Remembers the timestamps of a reply to `ip` that a next request may interleave
    /// with; `tx` is when it was finished, until the kernel says when it really left.
    fn note_reply(&self, ip: IpAddr, rx: NtpTimestamp, tx: NtpTimestamp) {
        if let Some(r) = lock(&self.clients).get_mut(&ip) {
            r.xleave_rx = rx.0;
            r.xleave_tx = tx.0;
        }
    }

    /// The kernel's transmit timestamp of the reply to `ip` that carried receive
    /// timestamp `rx`, CLOCK_REALTIME ns, served on the current timebase.
    fn note_departure(&self, ip: IpAddr, rx: NtpTimestamp, realtime_ns: u64) {
        let tx = server::served_ntp(&lock(&self.state), self.tai_of(realtime_ns));
        if let Some(r) = lock(&self.clients).get_mut(&ip)
            && r.xleave_rx == rx.0
        {
            r.xleave_tx = tx.0;
            self.counters.tx_stamps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Both paths' client logs merged, most active first.
    fn clients_report(&self) -> Vec<crate::report::ClientReport> {
        let mut all: std::collections::HashMap<IpAddr, ntp_common::ClientRecord> =
            lock(&self.clients).clone();
        for (ip, r) in self.kernel_clients().unwrap_or_default() {
            let e = all.entry(ip).or_default();
            e.requests += r.requests;
            e.dropped += r.dropped;
            if r.last_tai_ns > e.last_tai_ns {
                e.last_tai_ns = r.last_tai_ns;
            }
            if r.interval_ns != 0 {
                e.interval_ns = r.interval_ns;
            }
        }
        let now = clock::tai_ns().unwrap_or(0);
        let mut rows: Vec<crate::report::ClientReport> = all
            .into_iter()
            .map(|(addr, r)| crate::report::ClientReport {
                addr,
                ntp: r.requests + r.dropped,
                dropped: r.dropped,
                interval: (r.interval_ns > 0)
                    .then(|| (r.interval_ns as f64 * 1e-9).log2().round() as i32),
                last: Some(now.saturating_sub(r.last_tai_ns) / 1_000_000_000),
            })
            .collect();
        rows.sort_by(|a, b| b.ntp.cmp(&a.ntp).then(a.addr.cmp(&b.addr)));
        rows
    }

    fn handle_control(&self, req: Result<Request>) -> Response {
        self.counters.cmd_received.fetch_add(1, Ordering::Relaxed);
        match req {
            Ok(Request::Serverstats) => Response::Serverstats(self.server_stats()),
            Ok(Request::Xdpstats) => Response::Xdpstats(self.xdp_stats()),
            Ok(Request::Sources) => Response::Sources(
                lock(&self.engine).sources_report(clock::realtime_ns().unwrap_or(0)),
            ),
            Ok(Request::Tracking) => Response::Tracking(
                lock(&self.engine).tracking_report(clock::realtime_ns().unwrap_or(0)),
            ),
            Ok(Request::Sourcestats) => Response::Sourcestats(
                lock(&self.engine).sourcestats_report(clock::realtime_ns().unwrap_or(0)),
            ),
            Ok(Request::Clients) => Response::Clients(self.clients_report()),
            Ok(Request::Selectdata) => Response::Selectdata(
                lock(&self.engine).selectdata_report(clock::realtime_ns().unwrap_or(0)),
            ),
            Ok(Request::Ntpdata { address }) => {
                Response::Ntpdata(lock(&self.engine).ntpdata_report(address))
            }
            Ok(Request::Activity) => {
                let e = lock(&self.engine);
                let live: Vec<_> = e.sources().iter().filter(|s| !s.removed).collect();
                let off = live.iter().filter(|s| s.refused || s.offline).count();
                Response::Activity(crate::report::ActivityReport {
                    online: live.len() - off,
                    offline: off,
                    unresolved: self.sync.get().map(|h| h.unresolved()).unwrap_or(0),
                })
            }
            Ok(Request::Burst) => {
                let n = self
                    .sync
                    .get()
                    .map(|h| h.send(None, crate::client::SourceCommand::Burst))
                    .unwrap_or(0);
                info!("Burst requested on {n} sources");
                Response::Ok
            }
            Ok(Request::ReloadSources) => {
                let fresh = match crate::config::load(&self.config_path) {
                    Ok(c) => c,
                    Err(e) => return Response::Error(format!("{e}")),
                };
                let wanted: Vec<_> = fresh
                    .sources
                    .into_iter()
                    .filter(|s| s.from_sourcedir)
                    .collect();
                let Some(h) = self.sync.get() else {
                    return Response::Error("sources are not running".into());
                };
                let (added, removed) = h.reload(&wanted);
                info!("Reloaded sources: {added} added, {removed} removed");
                Response::Ok
            }
            Ok(Request::Offline { address } | Request::Online { address }) => {
                let offline = matches!(req, Ok(Request::Offline { .. }));
                let ids = lock(&self.engine).source_ids(address);
                if ids.is_empty() {
                    return Response::Error("no such source".into());
                }
                lock(&self.engine).set_offline(&ids, offline);
                let cmd = if offline {
                    crate::client::SourceCommand::Offline
                } else {
                    crate::client::SourceCommand::Online
                };
                let n = self
                    .sync
                    .get()
                    .map(|h| h.send(Some(&ids), cmd))
                    .unwrap_or(0);
                info!(
                    "{n} sources set {}",
                    if offline { "offline" } else { "online" }
                );
                Response::Ok
            }
            Ok(Request::Makestep { threshold, limit }) => match (threshold, limit) {
                (Some(t), Some(l)) if t >= 0.0 && l >= -1 => {
                    lock(&self.engine).set_makestep(t, l);
                    Response::Ok
                }
                (None, None) => {
                    let log = lock(&self.engine).make_step();
                    sync_task::emit(log);
                    if let Err(e) = self.publish() {
                        warn!("Publishing server state failed: {e:#}");
                    }
                    Response::Ok
                }
                _ => Response::Error(
                    "makestep takes no arguments, or a threshold >= 0 and a limit >= -1".into(),
                ),
            },
            Err(e) => {
                self.counters.cmd_dropped.fetch_add(1, Ordering::Relaxed);
                Response::Error(format!("{e:#}"))
            }
        }
    }
}

/// Locks a mutex, recovering the data if a panicking holder poisoned it (the values are
/// plain state, valid after any partial update).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config: Config, opts: Options) -> Result<()> {
    info!(
        "ntpxd version {} starting (+XDP +CMDMON +NTP{})",
        env!("CARGO_PKG_VERSION"),
        if opts.no_clock_control {
            ", clock control off"
        } else {
            ""
        }
    );
    for w in &config.warnings {
        warn!("{w}");
    }
    let acl = AccessTable::from_rules(&config.acl_rules, resolve_name)
        .map_err(|e| anyhow!("allow/deny: {e}"))?;
    let allows = |a: &crate::acl::Action| *a == crate::acl::Action::Allow;
    if !acl.v4_entries().iter().any(|e| allows(&e.2))
        && !acl.v6_entries().iter().any(|e| allows(&e.2))
    {
        warn!(
            "No allow directive: NTP clients will not be served (add e.g. `allow 192.168.0.0/16`)"
        );
    }
    let kt = clock::kernel_time()?;
    let params = PublishParams {
        precision: clock::measure_precision(),
        max_age: config.xdp_stale_limit,
        serve: true,
        min_poll: 0,
    };
    let pid_guard = match &config.pidfile {
        Some(p) => Some(PidFile::create(p)?),
        None => None,
    };

    let kernel = if opts.no_xdp || config.port == 0 {
        info!("XDP fast path off: all requests are answered from the daemon's socket");
        None
    } else {
        Some(Mutex::new(start_kernel(&config, &opts, &acl)?))
    };
    if let Some(dir) = &config.logdir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating logdir {}", dir.display()))?;
    }
    let _ = sync_task::LOG_FILES.set(Mutex::new(crate::logfiles::LogFiles::new(
        config.logdir.as_deref(),
        &config.logs,
    )));
    let leaps = load_leaps(&config, &opts, kt.tai_offset_s);
    if let Some(path) = &config.keyfile {
        // As chronyd: a missing or bad keyfile costs authentication, not the service.
        match std::fs::read_to_string(path) {
            Ok(text) => match crate::keys::parse(&text, path) {
                Ok(keys) => info!(
                    "Loaded {} symmetric keys from {}",
                    keys.len(),
                    path.display()
                ),
                Err(e) => warn!("Ignoring keyfile: {e}"),
            },
            Err(e) => warn!("Could not open keyfile {}: {e}", path.display()),
        }
    }
    let engine = Arc::new(Mutex::new(new_engine(&config, &opts, params.precision)));
    let shared = Arc::new(Shared {
        engine,
        config_path: opts.config_path.clone(),
        clients: Mutex::new(std::collections::HashMap::new()),
        leaps,
        sync: std::sync::OnceLock::new(),
        acl,
        params,
        tai_offset_s: std::sync::atomic::AtomicI32::new(kt.tai_offset_s),
        state: Mutex::new(ServerState::default()),
        kernel,
        counters: DaemonCounters::default(),
        config,
    });
    shared.publish()?;
    // systemd (Type=notify) may start dependent units now: the state is published.
    if let Err(e) = crate::notify::notify("READY=1\nSTATUS=Serving") {
        warn!("{e:#}");
    }
    info!(
        "Serving {} (precision {}, kernel TAI offset {} s)",
        match &shared.config.local {
            Some(l) => format!("local stratum {}", l.stratum),
            None => "unsynchronised (no local stratum)".to_string(),
        },
        shared.params.precision,
        shared.tai_offset_s.load(Ordering::Relaxed)
    );

    let mut tasks = tokio::task::JoinSet::new();
    let sh = shared.clone();
    let changed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        if let Err(e) = sh.publish() {
            warn!("Publishing server state failed: {e:#}");
        }
        // The kernel learns the synchronization state and leap second from us (which
        // also lets its 11-minute mode keep the RTC in step, chrony's rtcsync).
        let mut e = lock(&sh.engine);
        let status = e.sync_status();
        if let DaemonClock::System(c) = e.clock_mut() {
            match status {
                Some((leap, max_error, est_error)) => {
                    c.set_status(true, leap, max_error, est_error)
                }
                None => c.set_status(false, 0, 16.0, 16.0),
            }
        }
    });
    let handle = sync_task::start(&shared.config, shared.engine.clone(), changed, &mut tasks);
    let _ = shared.sync.set(handle);
    for sock in bind_ntp_sockets(&shared.config)? {
        let sh = shared.clone();
        tasks.spawn(async move { serve_ntp(sock, sh).await });
    }
    let cmd_socket = shared.config.cmd_socket.clone();
    if let Some(path) = &cmd_socket {
        let listener = bind_control(path)?;
        let sh = shared.clone();
        tasks.spawn(async move {
            control::serve(listener, move |req| sh.handle_control(req)).await;
            Ok(())
        });
    }
    if !opts.no_clock_control {
        let sh = shared.clone();
        tasks.spawn(async move {
            // Ends each frequency slew of the real clock on time. A slew started by an
            // update is noticed within 10 ms: at 500 ppm that overshoots by 5 us at most.
            loop {
                let next = match lock(&sh.engine).clock_mut() {
                    DaemonClock::System(c) => c.tick(),
                    DaemonClock::Free(_) => None,
                };
                let now = clock::realtime_ns().unwrap_or(0);
                let wait = next
                    .map(|d| d.saturating_sub(now))
                    .unwrap_or(u64::MAX)
                    .min(10_000_000);
                tokio::time::sleep(Duration::from_nanos(wait.max(1_000_000))).await;
            }
        });
    }
    for sock in bind_cmd_ports(&shared.config)? {
        let sh = shared.clone();
        let cmd_acl = AccessTable::from_rules(&shared.config.cmd_acl_rules, resolve_name)
            .map_err(|e| anyhow!("cmdallow/cmddeny: {e}"))?;
        tasks.spawn(async move {
            // Localhost may always ask, as in chrony.
            let allowed = move |ip: IpAddr| {
                ip.is_loopback() || cmd_acl.check(ip) == crate::acl::Action::Allow
            };
            control::serve_udp(sock, allowed, |req| sh.handle_control(req)).await;
            Ok(())
        });
    }
    let sh = shared.clone();
    tasks.spawn(async move {
        // Four publications fit in the staleness limit, whatever it is set to.
        let period =
            (sh.config.xdp_stale_limit / 4).clamp(Duration::from_millis(50), PUBLISH_INTERVAL);
        let mut tick = tokio::time::interval(period);
        let every = |d: Duration| (d.as_millis() / period.as_millis().max(1)).max(1) as u64;
        let (refresh_every, drift_every) = (every(ADDRESS_REFRESH), every(DRIFT_SAVE));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = sh.publish() {
                warn!("Publishing server state failed: {e:#}");
            }
            n += 1;
            if n.is_multiple_of(refresh_every) {
                refresh_served_addresses(&sh);
            }
            if n.is_multiple_of(drift_every) {
                save_drift(&sh);
            }
        }
    });

    if let Some(user) = opts.user.as_ref().or(shared.config.user.as_ref()) {
        crate::privdrop::drop_to(user, !opts.no_clock_control)
            .with_context(|| format!("dropping privileges to {user}"))?;
        info!(
            "Running as {user}{}",
            if opts.no_clock_control {
                " with no capabilities"
            } else {
                " with CAP_SYS_TIME"
            }
        );
    }
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let outcome = tokio::select! {
        _ = sigterm.recv() => { info!("ntpxd exiting (SIGTERM)"); Ok(()) }
        _ = sigint.recv() => { info!("ntpxd exiting (SIGINT)"); Ok(()) }
        Some(r) = tasks.join_next() => match r {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(anyhow!("a daemon task ended unexpectedly")),
            Err(e) => Err(anyhow!("a daemon task failed: {e}")),
        },
    };
    tasks.abort_all();
    if let Some(k) = &shared.kernel {
        let mut k = lock(k);
        let mut st = k.published();
        st.serve = 0;
        k.publish(&st);
        k.detach_all();
    }
    if let Some(path) = &cmd_socket {
        let _ = std::fs::remove_file(path);
    }
    save_drift(&shared);
    drop(pid_guard);
    outcome
}

/// How often the served addresses are re-read.
const ADDRESS_REFRESH: Duration = Duration::from_secs(10);

/// How often the driftfile is written (and at exit).
const DRIFT_SAVE: Duration = Duration::from_secs(3600);

/// The engine over the clock chosen by `-x`, starting from the driftfile's frequency.
fn new_engine(config: &Config, opts: &Options, precision: i8) -> Engine<DaemonClock> {
    let drift = config.driftfile.as_deref().and_then(drift::read);
    let freq = match drift {
        Some(d) => {
            info!(
                "Frequency {:.3} +/- {:.3} ppm read from {}",
                d.freq_ppm,
                d.skew_ppm,
                config
                    .driftfile
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            // The driftfile holds the clock's error (fast positive); the correction undoes it.
            -d.freq_ppm * 1e-6
        }
        None => 0.0,
    };
    let clock = if opts.no_clock_control {
        DaemonClock::Free(FreeRunning::new(freq, || clock::realtime_ns().unwrap_or(0)))
    } else {
        DaemonClock::System(SystemSteered::new(
            freq,
            config.sync.max_slew_rate_ppm * 1e-6,
        ))
    };
    Engine::new(
        clock,
        &config.sync,
        config.local,
        2f64.powi(precision as i32),
    )
}

/// Leap seconds from `leapsectz`; without `-x`, also brings the kernel's TAI offset in line.
fn load_leaps(config: &Config, opts: &Options, kernel_tai: i32) -> Vec<crate::leaptz::Leap> {
    let Some(zone) = &config.leapsectz else {
        return Vec::new();
    };
    let leaps = match crate::leaptz::load(zone) {
        Ok(l) => l,
        Err(e) => {
            warn!("leapsectz {zone}: {e:#}");
            return Vec::new();
        }
    };
    info!("Using {zone} timezone to obtain leap second data");
    let now = (clock::realtime_ns().unwrap_or(0) / 1_000_000_000) as i64;
    let offset = crate::leaptz::tai_offset(&leaps, now);
    if offset != kernel_tai {
        if opts.no_clock_control {
            info!(
                "TAI offset is {offset} seconds (the kernel's {kernel_tai} is left alone: clock control is off)"
            );
        } else {
            match crate::sysclock::SystemClock.set_tai_offset(offset) {
                Ok(()) => info!("System clock TAI offset set to {offset} seconds"),
                Err(e) => warn!("Could not set the TAI offset: {e:#}"),
            }
        }
    }
    leaps
}

/// Writes the current frequency estimate to the driftfile, if one is configured.
fn save_drift(sh: &Shared) {
    let Some(path) = &sh.config.driftfile else {
        return;
    };
    let t = lock(&sh.engine).tracking_report(clock::realtime_ns().unwrap_or(0));
    let d = Drift {
        freq_ppm: t.frequency_ppm,
        skew_ppm: t.skew_ppm,
    };
    if let Err(e) = drift::write(path, &d) {
        warn!("{e:#}");
    }
}

fn start_kernel(config: &Config, opts: &Options, acl: &AccessTable) -> Result<KernelPath> {
    let ifs = if opts.interfaces.is_empty() {
        ifaces::select(&ifaces::list()?, &config.bind_addresses)?
    } else {
        opts.interfaces.clone()
    };
    let mut k = KernelPath::load_with(config.port, config.client_log, config.ratelimit)?;
    k.set_acl(acl)?;
    k.set_local_addresses(&served_addresses(config, &ifs)?)?;
    for i in &ifs {
        let mode = k
            .attach(i)
            .with_context(|| format!("attaching XDP to {i}"))?;
        info!(
            "XDP fast path attached to {i} ({mode} mode), port {}",
            config.port
        );
    }
    Ok(k)
}

/// The unicast addresses the kernel answers for: the bound ones, or with no specific
/// bind address every address of the attached interfaces.
fn served_addresses(config: &Config, ifs: &[String]) -> Result<Vec<IpAddr>> {
    let specific: Vec<IpAddr> = config
        .bind_addresses
        .iter()
        .copied()
        .filter(|a| !a.is_unspecified())
        .collect();
    let all = ifaces::list()?;
    let mut out: Vec<IpAddr> = all
        .iter()
        .filter(|i| ifs.contains(&i.name))
        .map(|i| i.addr)
        .filter(|a| specific.is_empty() || specific.contains(a))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Re-reads the attached interfaces' addresses into the kernel (they come and go).
fn refresh_served_addresses(sh: &Shared) {
    let Some(k) = &sh.kernel else { return };
    let mut k = lock(k);
    let ifs: Vec<String> = k.attached().into_iter().map(|(i, _)| i).collect();
    match served_addresses(&sh.config, &ifs).and_then(|a| k.set_local_addresses(&a)) {
        Ok(()) => {}
        Err(e) => warn!("Could not refresh the served addresses: {e:#}"),
    }
}

fn resolve_name(name: &str) -> std::result::Result<Vec<IpAddr>, String> {
    use std::net::ToSocketAddrs;
    (name, 0)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .map_err(|e| format!("cannot resolve {name}: {e}"))
}

/// Binds `bind` on each of `configured` (or, if none are, each of `defaults`) at `port`.
/// A default address that cannot be bound (a host without IPv6) is skipped with a warning;
/// a configured one is an error.
fn bind_each<S>(
    configured: &[IpAddr],
    defaults: [IpAddr; 2],
    port: u16,
    what: &str,
    bind: impl Fn(SocketAddr) -> Result<S>,
) -> Result<Vec<S>> {
    let addrs: Vec<IpAddr> = if configured.is_empty() {
        defaults.to_vec()
    } else {
        configured.to_vec()
    };
    let mut out = Vec::new();
    for a in addrs {
        let sa = SocketAddr::new(a, port);
        match bind(sa) {
            Ok(s) => {
                info!("Listening on {sa} for {what}");
                out.push(s);
            }
            Err(e) if configured.is_empty() => warn!("Not listening on {sa} for {what}: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn bind_ntp_sockets(config: &Config) -> Result<Vec<TimestampedSocket>> {
    if config.port == 0 {
        return Ok(Vec::new());
    }
    let any = [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    let socks = bind_each(
        &config.bind_addresses,
        any,
        config.port,
        "NTP",
        TimestampedSocket::bind,
    )?;
    if socks.is_empty() {
        bail!("could not open any NTP socket on port {}", config.port);
    }
    Ok(socks)
}

/// Replies whose transmit timestamps are still to come back, by the receive timestamp
/// each carried (unique per reply: the stamp's datagram names it), with the client.
/// Bounded, and a stamp the kernel never delivers is forgotten after a while.
struct AwaitingDeparture {
    pending: std::collections::VecDeque<(NtpTimestamp, IpAddr, std::time::Instant)>,
}

impl AwaitingDeparture {
    const LIMIT: usize = 4096;
    /// A software transmit timestamp comes back within microseconds; this is generous.
    const PATIENCE: Duration = Duration::from_secs(2);

    fn push(&mut self, rx: NtpTimestamp, ip: IpAddr) {
        if self.pending.len() == Self::LIMIT {
            self.pending.pop_front();
        }
        self.pending.push_back((rx, ip, std::time::Instant::now()));
    }

    /// The client of the reply that carried receive timestamp `rx`.
    fn take(&mut self, rx: NtpTimestamp) -> Option<IpAddr> {
        while let Some(&(_, _, at)) = self.pending.front() {
            if at.elapsed() < Self::PATIENCE {
                break;
            }
            self.pending.pop_front();
        }
        let i = self.pending.iter().position(|(r, _, _)| *r == rx)?;
        self.pending.remove(i).map(|(_, ip, _)| ip)
    }
}

async fn serve_ntp(sock: TimestampedSocket, sh: Arc<Shared>) -> Result<()> {
    let mut buf = [0u8; 1500];
    let mut awaiting = AwaitingDeparture {
        pending: Default::default(),
    };
    loop {
        let r = tokio::select! {
            r = sock.recv(&mut buf) => r,
            stamp = sock.tx_stamp() => {
                match stamp {
                    Ok(st) => {
                        // The looped-back reply names itself by its receive timestamp.
                        if let Ok(h) = crate::packet::NtpHeader::parse(&st.tail)
                            && let Some(ip) = awaiting.take(h.receive_ts)
                        {
                            sh.note_departure(ip, h.receive_ts, st.realtime_ns);
                        }
                    }
                    Err(e) => debug!("{e:#}"),
                }
                continue;
            }
        };
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                warn!("{e:#}");
                continue;
            }
        };
        sh.counters.received.fetch_add(1, Ordering::Relaxed);
        let rx_tai = match r.rx_realtime_ns {
            Some(t) => sh.tai_of(t),
            None => clock::tai_ns()?,
        };
        let state = *lock(&sh.state);
        let src_ip = net::canonical_ip(r.src.ip());
        let src = std::net::SocketAddr::new(src_ip, r.src.port());
        let verdict = server::handle_request(&buf[..r.len], src, rx_tai, &state, &sh.acl);
        let verdict = match verdict {
            Verdict::Reply(p) => match sh.log_client(src_ip, rx_tai, false) {
                (ntp_common::RateVerdict::Answer, last) => Verdict::Reply(p.interleave(&last)),
                (ntp_common::RateVerdict::Kod, _) => Verdict::Reply(p.kiss_rate()),
                (ntp_common::RateVerdict::Drop, _) => {
                    sh.counters.ratelimited.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
            Verdict::Deny => {
                sh.log_client(src_ip, rx_tai, true);
                Verdict::Deny
            }
            other => other,
        };
        match verdict {
            Verdict::Reply(p) => {
                let (reply, tx_now) = p.finish(clock::tai_ns()?);
                // Only a client that may interleave needs to know when its reply left; a
                // Kiss-o'-Death is never interleaved with (as chrony).
                let stamp = p.may_interleave() && !p.is_kiss() && sh.config.client_log.is_some();
                match sock.send_to(&reply, r.src, stamp) {
                    Ok(()) => {
                        sh.counters.answered.fetch_add(1, Ordering::Relaxed);
                        if p.is_interleaved() {
                            sh.counters.interleaved.fetch_add(1, Ordering::Relaxed);
                        }
                        if stamp {
                            sh.note_reply(src_ip, p.receive_ts(), tx_now);
                            awaiting.push(p.receive_ts(), src_ip);
                        }
                    }
                    Err(e) => debug!("{e:#}"),
                }
            }
            Verdict::Ignore(why) => {
                sh.counters.ignored.fetch_add(1, Ordering::Relaxed);
                debug!("Ignored NTP datagram from {} ({why:?})", r.src);
            }
            Verdict::Deny | Verdict::BadSource => {
                sh.counters.denied.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The UDP command port (read-only commands): on `bindcmdaddress` addresses, by default
/// localhost only; nothing with `cmdport 0`.
fn bind_cmd_ports(config: &Config) -> Result<Vec<tokio::net::UdpSocket>> {
    if config.cmdport == 0 {
        return Ok(Vec::new());
    }
    let local = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    bind_each(
        &config.cmd_addresses,
        local,
        config.cmdport,
        "read-only commands",
        |sa| {
            let s = std::net::UdpSocket::bind(sa)
                .with_context(|| format!("binding the command port {sa}"))?;
            s.set_nonblocking(true)?;
            Ok(tokio::net::UdpSocket::from_std(s)?)
        },
    )
}

fn bind_control(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the control socket directory {}", dir.display()))?;
    }
    // A socket left by a crashed daemon would make bind fail; a live daemon holds the pidfile.
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("restricting {}", path.display()))?;
    info!("Control socket at {}", path.display());
    Ok(l)
}

/// The pidfile: refuses a second daemon, written atomically, removed on exit.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &Path) -> Result<Self> {
        if let Ok(old) = std::fs::read_to_string(path)
            && let Ok(pid) = old.trim().parse::<i32>()
            && pid != std::process::id() as i32
            && Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "ntpxd")
        {
            bail!(
                "another ntpxd is already running (pid {pid}, pidfile {})",
                path.display()
            );
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_atomically(path, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `data` to a temporary file beside `path`, syncs it and renames it into place,
/// so a crash leaves either the old file or the new one.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departures_are_matched_by_the_receive_timestamp_their_reply_carried() {
        let mut a = AwaitingDeparture {
            pending: Default::default(),
        };
        let (c1, c2): (IpAddr, IpAddr) =
            ("198.18.0.2".parse().unwrap(), "fd00::2".parse().unwrap());
        a.push(NtpTimestamp(10), c1);
        a.push(NtpTimestamp(11), c2);
        a.push(NtpTimestamp(12), c1);
        // Stamps may come back in any order; each is taken once.
        assert_eq!(a.take(NtpTimestamp(11)), Some(c2));
        assert_eq!(a.take(NtpTimestamp(11)), None);
        assert_eq!(a.take(NtpTimestamp(12)), Some(c1));
        assert_eq!(a.take(NtpTimestamp(99)), None);
        for i in 0..2 * AwaitingDeparture::LIMIT as u64 {
            a.push(NtpTimestamp(100 + i), c1);
        }
        assert_eq!(a.pending.len(), AwaitingDeparture::LIMIT);
        assert_eq!(a.take(NtpTimestamp(100)), None, "the oldest made room");
    }
}
