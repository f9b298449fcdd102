//! Wiring the synchronization engine to the network: resolving `server`/`pool` names,
//! one polling task per address, and one task feeding their reports to the engine.

use crate::{
    client::{self, SourceCommand, SourceEvent},
    config::{Config, SourceConfig, SourceKind},
    engine::{Engine, EngineClock, FreeRunning, Log},
    source::Poller,
    steered::SystemSteered,
    sync::discipline::Clock,
};
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::mpsc, task::JoinSet};
use tracing::{info, warn};

/// The clock the daemon steers: virtual with `-x`, the system clock without.
pub enum DaemonClock {
    /// `-x`: the system clock is never touched.
    Free(FreeRunning),
    /// The system clock, steered.
    System(SystemSteered),
}

impl Clock for DaemonClock {
    fn now(&self) -> f64 {
        match self {
            DaemonClock::Free(c) => c.now(),
            DaemonClock::System(c) => c.now(),
        }
    }
    fn frequency(&self) -> f64 {
        match self {
            DaemonClock::Free(c) => c.frequency(),
            DaemonClock::System(c) => c.frequency(),
        }
    }
    fn set_frequency(&mut self, freq: f64) {
        match self {
            DaemonClock::Free(c) => c.set_frequency(freq),
            DaemonClock::System(c) => c.set_frequency(freq),
        }
    }
    fn correct(&mut self, offset: f64, step: bool) {
        match self {
            DaemonClock::Free(c) => c.correct(offset, step),
            DaemonClock::System(c) => c.correct(offset, step),
        }
    }
}

impl EngineClock for DaemonClock {
    fn local_at(&self, sys_ns: u64) -> f64 {
        match self {
            DaemonClock::Free(c) => c.local_at(sys_ns),
            DaemonClock::System(c) => c.local_at(sys_ns),
        }
    }
    fn served_correction(&self, sys_ns: u64) -> (f64, f64) {
        match self {
            DaemonClock::Free(c) => c.served_correction(sys_ns),
            DaemonClock::System(c) => c.served_correction(sys_ns),
        }
    }
    fn slew_remaining(&self) -> f64 {
        match self {
            DaemonClock::Free(c) => c.slew_remaining(),
            DaemonClock::System(c) => c.slew_remaining(),
        }
    }
}

/// The engine as the daemon's tasks share it.
pub type SharedEngine = Arc<Mutex<Engine<DaemonClock>>>;

type Commands = Arc<Mutex<HashMap<usize, mpsc::Sender<SourceCommand>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The log files the daemon writes (`logdir`, `log`), set once at start.
pub static LOG_FILES: std::sync::OnceLock<Mutex<crate::logfiles::LogFiles>> =
    std::sync::OnceLock::new();

/// Writes the engine's log lines and log-file records.
pub fn emit(log: Vec<Log>) {
    for l in log {
        match l {
            Log::Info(m) => info!("{m}"),
            Log::Warn(m) => warn!("{m}"),
            Log::Record(r) => {
                if let Some(files) = LOG_FILES.get()
                    && let Err(e) = lock(files).write(&r)
                {
                    warn!("{e:#}");
                }
            }
        }
    }
}

/// One `server`/`pool` line being served: its addresses' ids and its resolver task.
struct Line {
    config: SourceConfig,
    ids: Arc<Mutex<Vec<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the control commands need of the source tasks.
#[derive(Clone)]
pub struct SyncHandle {
    engine: SharedEngine,
    tx: mpsc::Sender<SourceEvent>,
    commands: Commands,
    in_use: Arc<Mutex<BTreeSet<SocketAddr>>>,
    unresolved: Arc<std::sync::atomic::AtomicUsize>,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl SyncHandle {
    /// Source lines whose names have not resolved yet.
    pub fn unresolved(&self) -> usize {
        self.unresolved.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends `cmd` to the sources `ids` (all with `None`); returns how many took it.
    pub fn send(&self, ids: Option<&[usize]>, cmd: SourceCommand) -> usize {
        lock(&self.commands)
            .iter()
            .filter(|(id, _)| ids.is_none_or(|ids| ids.contains(id)))
            .filter(|(_, c)| c.try_send(cmd).is_ok())
            .count()
    }

    /// Starts resolving and polling one source line. Resolution ends once the addresses
    /// are added (a pool's task stays to replace members that fall silent).
    fn add_line(&self, sc: SourceConfig) {
        self.unresolved
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids = Arc::new(Mutex::new(Vec::new()));
        let (h, mine) = (self.clone(), ids.clone());
        let line = sc.clone();
        let task = tokio::spawn(async move {
            let addrs = resolve_until_done(&sc).await;
            h.unresolved
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let wanted = match sc.kind {
                SourceKind::Server => 1,
                SourceKind::Pool => sc.maxsources,
            };
            for addr in addrs {
                if lock(&mine).len() == wanted || !lock(&h.in_use).insert(addr) {
                    continue;
                }
                let id = lock(&h.engine).add_source(addr, sc.prefer, sc.noselect, sc.minpoll);
                info!("Added source {addr} ({} line {})", sc.name, sc.line);
                spawn_client(id, addr, &sc, &h.tx, &h.commands);
                lock(&mine).push(id);
            }
            if sc.kind == SourceKind::Pool {
                replace_dead_members(&sc, &mine, &h.engine, &h.tx, &h.commands, &h.in_use).await;
            }
        });
        lock(&self.lines).push(Line {
            config: line,
            ids,
            task,
        });
    }

    /// Stops a line's resolver and polling and takes its sources out of the engine.
    fn remove_line(&self, line: Line) {
        line.task.abort();
        let ids = lock(&line.ids).clone();
        self.send(Some(&ids), SourceCommand::Stop);
        let mut e = lock(&self.engine);
        for id in &ids {
            if let Some(s) = e.sources().get(*id) {
                lock(&self.in_use).remove(&s.addr);
            }
            lock(&self.commands).remove(id);
        }
        emit(e.remove_sources(&ids));
    }

    /// Brings the sourcedir lines in line with `wanted` (ntpxc reload sources); returns
    /// (added, removed).
    pub fn reload(&self, wanted: &[SourceConfig]) -> (usize, usize) {
        let same = |a: &SourceConfig, b: &SourceConfig| {
            SourceConfig {
                line: 0,
                ..a.clone()
            } == SourceConfig {
                line: 0,
                ..b.clone()
            }
        };
        let stale: Vec<Line> = {
            let mut lines = lock(&self.lines);
            let (keep, stale): (Vec<Line>, Vec<Line>) = lines.drain(..).partition(|l| {
                !l.config.from_sourcedir || wanted.iter().any(|w| same(w, &l.config))
            });
            *lines = keep;
            stale
        };
        let removed = stale.len();
        for l in stale {
            self.remove_line(l);
        }
        let new: Vec<SourceConfig> = {
            let lines = lock(&self.lines);
            wanted
                .iter()
                .filter(|w| !lines.iter().any(|l| same(w, &l.config)))
                .cloned()
                .collect()
        };
        let added = new.len();
        for sc in new {
            self.add_line(sc);
        }
        (added, removed)
    }
}

/// Starts resolution and polling of every configured source, and the task that feeds
/// replies to the engine; `changed` runs after every update of the engine.
pub fn start(
    config: &Config,
    engine: SharedEngine,
    changed: Arc<dyn Fn() + Send + Sync>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> SyncHandle {
    let (tx, mut rx) = mpsc::channel::<SourceEvent>(256);
    let commands: Commands = Arc::new(Mutex::new(HashMap::new()));
    let handle = SyncHandle {
        engine: engine.clone(),
        tx,
        commands: commands.clone(),
        in_use: Arc::new(Mutex::new(BTreeSet::new())),
        unresolved: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        lines: Arc::new(Mutex::new(Vec::new())),
    };
    for sc in &config.sources {
        handle.add_line(sc.clone());
    }
    tasks.spawn(async move {
        while let Some(ev) = rx.recv().await {
            let (log, used) = {
                let mut e = lock(&engine);
                match ev {
                    SourceEvent::Polled { id, reach, poll } => (e.on_polled(id, reach, poll), None),
                    SourceEvent::Reply {
                        id,
                        header,
                        t1_ns,
                        t4_ns,
                        reach,
                        poll,
                        wire,
                    } => (
                        e.on_reply(id, &header, t1_ns, t4_ns, reach, poll, wire),
                        Some(id),
                    ),
                    SourceEvent::Refused { id } => (e.on_refused(id), None),
                }
            };
            emit(log);
            if let Some(id) = used {
                let cmd = lock(&commands).get(&id).cloned();
                if let Some(c) = cmd {
                    let _ = c.try_send(SourceCommand::SampleUsed);
                }
            }
            changed();
        }
        // Every source task has ended (no sources configured, or all refused us).
        std::future::pending::<()>().await;
        Ok(())
    });
    handle
}

fn spawn_client(
    id: usize,
    addr: SocketAddr,
    sc: &SourceConfig,
    tx: &mpsc::Sender<SourceEvent>,
    commands: &Commands,
) {
    let (ctx, crx) = mpsc::channel(16);
    lock(commands).insert(id, ctx);
    let poller = Poller::new(sc.minpoll, sc.maxpoll, sc.iburst);
    tokio::spawn(client::run(id, addr, poller, tx.clone(), crx));
}

/// How often a pool looks for members to replace: about every eight polls, within
/// 1-60 s.
fn pool_check_interval(minpoll: i8) -> Duration {
    Duration::from_secs_f64((8.0 * 2f64.powi(minpoll as i32)).clamp(1.0, 60.0))
}

/// Replaces pool members that stopped answering (or refused us) with other addresses the
/// pool's name resolves to, for the daemon's life.
async fn replace_dead_members(
    sc: &SourceConfig,
    mine: &Mutex<Vec<usize>>,
    engine: &SharedEngine,
    tx: &mpsc::Sender<SourceEvent>,
    commands: &Commands,
    in_use: &Arc<Mutex<BTreeSet<SocketAddr>>>,
) {
    loop {
        tokio::time::sleep(pool_check_interval(sc.minpoll)).await;
        let dead: Vec<usize> = lock(engine)
            .dead_sources()
            .into_iter()
            .filter(|id| lock(mine).contains(id))
            .collect();
        if dead.is_empty() {
            continue;
        }
        let Ok(found) = tokio::net::lookup_host((sc.name.as_str(), sc.port)).await else {
            continue;
        };
        let mut fresh = found.filter(|a| !lock(in_use).contains(a));
        for id in dead {
            let Some(addr) = fresh.next() else { break };
            let old = lock(engine).sources().get(id).map(|s| s.addr);
            if let Some(c) = lock(commands).get(&id) {
                let _ = c.try_send(SourceCommand::Stop);
            }
            {
                let mut used = lock(in_use);
                if let Some(o) = old {
                    used.remove(&o);
                }
                used.insert(addr);
            }
            emit(lock(engine).replace_source(id, addr));
            spawn_client(id, addr, sc, tx, commands);
        }
    }
}

/// Resolves a source's name, retrying every 10 s until it resolves.
async fn resolve_until_done(sc: &SourceConfig) -> Vec<SocketAddr> {
    let mut warned = false;
    loop {
        match tokio::net::lookup_host((sc.name.as_str(), sc.port)).await {
            Ok(it) => {
                let v: Vec<SocketAddr> = it.collect();
                if !v.is_empty() {
                    return v;
                }
            }
            Err(e) if !warned => {
                warn!(
                    "Could not resolve {} (line {}): {e}; retrying",
                    sc.name, sc.line
                );
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
