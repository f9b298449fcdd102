//! Wiring the synchronization engine to the network: resolving `server`/`pool` names and
//! one polling task per address, each handing its replies to the engine.

pub mod nts_ke;
pub mod poll_task;
pub mod resolve;

use crate::{clock::DaemonClock, lock, os::log_files::Journal};
use ntp_proto::{
    config::{Config, SourceConfig, SourceKind},
    engine::{Engine, SourceOptions},
};
use poll_task::{PollContext, SourceCommand};
use resolve::{replace_dead_members, resolve_until_done};
use std::time::Duration;
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::sync::mpsc;
use tracing::{error, info};

/// The engine as the daemon's tasks share it.
pub type SharedEngine = Arc<Mutex<Engine<DaemonClock>>>;

type Commands = Arc<Mutex<HashMap<usize, mpsc::Sender<SourceCommand>>>>;

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
    journal: Arc<Journal>,
    ctx: PollContext,
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
                let opts = SourceOptions::from_config(&sc, lock(&h.engine).sync_config());
                let id = lock(&h.engine).add_source(addr, opts);
                info!("Added source {addr} ({} line {})", sc.name, sc.line);
                if sc.nts
                    && let Some(n) = &h.ctx.nts
                {
                    lock(&n.servers).insert(
                        id,
                        nts_ke::KeServer {
                            name: sc.name.clone(),
                            port: sc.nts_port,
                            certset: sc.certset,
                        },
                    );
                }
                h.spawn_poller(id, addr);
                lock(&mine).push(id);
            }
            if sc.kind == SourceKind::Pool {
                replace_dead_members(&sc, &mine, &h).await;
            }
        });
        lock(&self.lines).push(Line {
            config: line,
            ids,
            task,
        });
    }

    /// Starts polling source `id` at `addr` with the options of its line, supervised: a
    /// polling task that panics is reported and started again (after 2, 4, ... 64 s),
    /// unless the source was stopped or given another address meanwhile.
    fn spawn_poller(&self, id: usize, addr: SocketAddr) {
        let h = self.clone();
        let (tx, rx) = mpsc::channel(16);
        lock(&self.commands).insert(id, tx.clone());
        tokio::spawn(async move {
            let (mut tx, mut rx) = (tx, rx);
            let mut failures = 0u32;
            loop {
                let started = std::time::Instant::now();
                let task = tokio::spawn(poll_task::run(id, addr, h.ctx.clone(), rx));
                let Err(e) = task.await else {
                    return;
                };
                // A task that ran a long while before failing starts the back-off over.
                if started.elapsed() > Duration::from_mins(10) {
                    failures = 0;
                }
                failures += 1;
                let wait = Duration::from_secs(1 << failures.min(6));
                error!(
                    "Source {addr}: its polling task failed ({e}); starting it again in {wait:?}"
                );
                tokio::time::sleep(wait).await;
                let mut commands = lock(&h.commands);
                if !commands.get(&id).is_some_and(|c| c.same_channel(&tx)) {
                    return;
                }
                (tx, rx) = mpsc::channel(16);
                commands.insert(id, tx.clone());
            }
        });
    }

    /// Points source `id` at `addr` instead of the address it polled (a pool member that
    /// fell silent), and starts polling it.
    fn replace(&self, id: usize, addr: SocketAddr) {
        let old = lock(&self.engine).sources().get(id).map(|s| s.addr);
        if let Some(c) = lock(&self.commands).get(&id) {
            let _ = c.try_send(SourceCommand::Stop);
        }
        {
            let mut used = lock(&self.in_use);
            if let Some(o) = old {
                used.remove(&o);
            }
            used.insert(addr);
        }
        self.journal
            .emit(lock(&self.engine).replace_source(id, addr));
        self.spawn_poller(id, addr);
    }

    /// Stops a line's resolver and polling and takes its sources out of the engine.
    fn remove_line(&self, line: &Line) {
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
        self.journal.emit(e.remove_sources(&ids));
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
            self.remove_line(&l);
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

impl SyncHandle {
    /// Saves every NTS source's session (keys and cookies) in `ntsdumpdir`, so the next
    /// run needs no NTS-KE (at exit).
    pub fn save_nts_sessions(&self) {
        let Some(nts) = &self.ctx.nts else { return };
        let sessions = lock(&self.engine).nts_sessions();
        let servers = lock(&nts.servers);
        for (id, addr, dump) in sessions {
            if let Some(ke) = servers.get(&id) {
                let named = lock(&nts.named).get(&id).copied();
                nts.save(&ke.name, addr, &dump, named);
            }
        }
    }
}

/// Starts resolution and polling of every configured source; `changed` runs after each
/// reply the engine takes.
pub fn start(
    config: &Config,
    engine: SharedEngine,
    journal: Arc<Journal>,
    changed: Arc<dyn Fn() + Send + Sync>,
    nts: Option<Arc<nts_ke::NtsContext>>,
    hw: Option<Arc<crate::net::hw_timestamping::HwClocks>>,
) -> SyncHandle {
    let handle = SyncHandle {
        ctx: PollContext {
            engine: engine.clone(),
            journal: journal.clone(),
            changed,
            nts,
            hw,
        },
        engine,
        journal,
        commands: Arc::new(Mutex::new(HashMap::new())),
        in_use: Arc::new(Mutex::new(BTreeSet::new())),
        unresolved: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        lines: Arc::new(Mutex::new(Vec::new())),
    };
    for sc in &config.sources {
        handle.add_line(sc.clone());
    }
    handle
}
