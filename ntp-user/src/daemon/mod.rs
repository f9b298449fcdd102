//! `ntpxd`: start-up in order, the tasks that run for the daemon's life, and the orderly
//! exit. Each step lives in a module of its own:
//!
//! - `startup`: the access table, the engine over its clock, leap seconds, the fast path;
//! - `shared`: the state the tasks share, and publication to both answering paths;
//! - `timekeeping`: the publication loop, clock-update hooks, the slew timer;
//! - `ntp_server`: the daemon's NTP socket and the rules it answers by; `xsk_server`:
//!   the `AF_XDP` sockets of `--xsk`; `worker`: their threads, watched; `client_log`:
//!   the client records;
//! - `control_server` and `commands`: ntpxc's transports and what each request does;
//! - `counters`: serverstats and xdpstats; `shutdown`: signals and the orderly exit;
//! - `step_gate`: answers held back across a step of the clock.

mod bind;
mod client_log;
mod commands;
mod control_server;
mod counters;
mod interfaces;
mod ntp_server;
mod nts_ke;
mod shared;
mod shutdown;
mod startup;
mod step_gate;
mod timekeeping;
mod worker;
mod xsk_server;

pub use control_server::{serve, serve_udp};
pub use timekeeping::PUBLISH_INTERVAL;

use crate::{
    clock,
    os::{
        log_files::{Journal, LogFiles},
        notify,
        pidfile::PidFile,
        privdrop,
    },
    sources,
};
use anyhow::{Context, Result};
use client_log::ClientLog;
use ntp_common::ServerState;
use ntp_proto::{config::Config, reference::PublishParams, serving::Wish};
use shared::Shared;
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, atomic::AtomicI32},
};
use tokio::task::JoinSet;
use tracing::{info, warn};

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
    /// Threads answering NTP requests on the daemon's path (`--server-threads`); `None`:
    /// one per core for an NTS server, else the timekeeping thread alone.
    pub server_threads: Option<usize>,
    /// Answer longer requests (NTS, MACs) from `AF_XDP` sockets on the interfaces the XDP
    /// program serves (`--xsk`).
    pub xsk: bool,
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
    let pid_guard = match &config.pidfile {
        Some(p) => Some(PidFile::create(p)?),
        None => None,
    };
    let shared = Arc::new(set_up(config, &opts)?);
    // From here on, any way out (an error, a panic) lets go of the clock in order.
    let _exit = shutdown::ExitGuard(shared.clone());
    if let crate::clock::DaemonClock::System(c) = crate::lock(&shared.engine).clock_mut() {
        // Weak: the engine lives inside what the hook points to.
        let weak = Arc::downgrade(&shared);
        c.kernel_mut().set_before_step(Box::new(move || {
            if let Some(sh) = weak.upgrade() {
                sh.withdraw();
            }
        }));
    }
    shared.publish()?;
    // Subscribed before the interfaces are first read, so no change falls in between.
    let link_events = match &shared.kernel {
        Some(_) => Some(crate::net::link_events::LinkEvents::open()?),
        None => None,
    };
    shared.follow_interfaces_now();
    // systemd (Type=notify) may start dependent units now: the state is published.
    if let Err(e) = notify::notify("READY=1\nSTATUS=Serving") {
        warn!("{e:#}");
    }
    announce(&shared);
    if let Some(p) = shared.config.sched_priority {
        crate::os::set_realtime_priority(p);
    }
    if shared.config.lock_all {
        crate::os::lock_memory();
    }
    let mut tasks = JoinSet::new();
    let ntp = start_tasks(&shared, &opts, &mut tasks)?;
    nts_ke::start(&shared)?;
    let nts = &shared.config.nts_server;
    if nts.enabled() && nts.rotate_secs > 0 {
        tasks.spawn(nts_ke::rotate_keys(shared.clone()));
    }
    if let Some(events) = link_events {
        tasks.spawn(interfaces::follow_interfaces(shared.clone(), events));
    }
    let xsks = if opts.xsk {
        xsk_server::open(&shared)?
    } else {
        Vec::new()
    };
    drop_privileges(&shared.config, &opts, shared.kernel.is_some())?;
    ntp.serve(&shared, &mut tasks)?;
    xsk_server::serve(xsks, &shared, &mut tasks)?;
    let outcome = shutdown::wait(&mut tasks, shared.journal.fatal()).await;
    tasks.abort_all();
    shutdown::finish(&shared);
    drop(pid_guard);
    outcome
}

/// Everything the tasks share, set up from the configuration: the fast path attached,
/// the log files open, the engine over its clock.
fn set_up(config: Config, opts: &Options) -> Result<Shared> {
    let acl = startup::access_table(&config)?;
    let kt = clock::kernel_time()?;
    let params = PublishParams {
        precision: clock::measure_precision()?,
        max_age: config.xdp_stale_limit,
        serve: true,
        min_poll: ntp_proto::server::min_reply_poll(config.ratelimit.as_ref()),
    };
    let kernel = if opts.no_xdp || config.port == 0 {
        info!("XDP fast path off: all requests are answered from the daemon's socket");
        None
    } else {
        Some(Mutex::new(startup::start_kernel(&config, &acl)?))
    };
    let publisher = kernel.as_ref().map(|k| crate::lock(k).publisher());
    let monitor = match &kernel {
        Some(k) => Some(crate::lock(k).monitor()?),
        None => None,
    };
    if let Some(dir) = &config.logdir {
        // As chrony: a logdir made here belongs to the user the daemon will run as, who
        // writes the files.
        let owner = match opts.user.as_ref().or(config.user.as_ref()) {
            Some(u) => Some(privdrop::ids_of(u)?),
            None => None,
        };
        crate::os::create_dir_owned(dir, 0o750, owner)
            .with_context(|| format!("creating logdir {}", dir.display()))?;
    }
    let journal = Arc::new(Journal::new(LogFiles::new(
        config.logdir.as_deref(),
        &config.logs,
    )));
    let leaps = startup::load_leaps(&config, opts, kt.tai_offset_s)?;
    let keys = startup::load_keys(&config);
    let cookies = if config.nts_server.enabled() {
        let k = nts_ke::cookie_keys(&config.nts_server).context("NTS cookie keys")?;
        if let Some(p) = nts_ke::dump_path(&config.nts_server) {
            info!("NTS cookie keys kept in {}", p.display());
        }
        Some(k)
    } else {
        None
    };
    let mut engine = startup::new_engine(&config, opts, params.precision, &kt);
    for s in &config.sources {
        if let Some(k) = s.key.filter(|k| keys.get(*k).is_none()) {
            warn!(
                "Source {} (line {}) is to be authenticated with key {k}, which the keyfile \
                 does not have: it will not be polled",
                s.name, s.line
            );
        }
    }
    engine.set_keys(keys.clone());
    engine.set_leap_table(leaps.clone());
    engine.set_nts_refresh(config.nts_refresh);
    let secrets = ntp_proto::server::Secrets { keys, cookies };
    let engine = Arc::new(Mutex::new(engine));
    Ok(Shared {
        engine,
        journal,
        config_path: opts.config_path.clone(),
        clients: ClientLog::new(config.client_log, config.ratelimit),
        nts_ke_clients: ClientLog::new(config.client_log, config.nts_ratelimit),
        leaps,
        sync: OnceLock::new(),
        hw: OnceLock::new(),
        acl,
        secrets: std::sync::RwLock::new(secrets),
        params,
        tai_offset_s: AtomicI32::new(kt.tai_offset_s),
        state: Mutex::new(ServerState::default()),
        monitor,
        kernel,
        publisher,
        wish: Wish {
            named: opts.interfaces.clone(),
            bind: config.bind_addresses.clone(),
        },
        served: Mutex::new(None),
        pending: Mutex::default(),
        counters: counters::DaemonCounters::default(),
        slew_wake: tokio::sync::Notify::new(),
        finished: std::sync::atomic::AtomicBool::new(false),
        step_gate: step_gate::StepGate::default(),
        socket_bound: std::sync::atomic::AtomicBool::new(false),
        config,
    })
}

fn announce(sh: &Shared) {
    info!(
        "Serving {} (precision {}, kernel TAI offset {} s)",
        match &sh.config.local {
            Some(l) => format!("local stratum {}", l.stratum),
            None => "unsynchronised (no local stratum)".to_string(),
        },
        sh.params.precision,
        sh.tai_offset_s.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// The tasks that run for the daemon's life: sources, control, the publication loop
/// and (steering the real clock) the slew timer; and the NTP sockets, bound, to be
/// served once the privileges are dropped.
fn start_tasks(
    sh: &Arc<Shared>,
    opts: &Options,
    tasks: &mut JoinSet<Result<()>>,
) -> Result<ntp_server::Bound> {
    let hook = sh.clone();
    let nts = sources::nts_ke::context(&sh.config).context("NTS")?;
    let precision = 2f64.powi(i32::from(sh.params.precision));
    let hw = crate::net::hw_timestamping::enable(&sh.config.hwtimestamp, &sh.engine, precision)?;
    if let Some(h) = &hw {
        let _ = sh.hw.set(h.clone());
    }
    let handle = sources::start(
        &sh.config,
        sh.engine.clone(),
        sh.journal.clone(),
        Arc::new(move || hook.on_clock_update()),
        nts,
        hw,
    );
    let _ = sh.sync.set(handle);
    let hook = sh.clone();
    let refclock_ctx = sources::poll_task::PollContext {
        engine: sh.engine.clone(),
        journal: sh.journal.clone(),
        changed: Arc::new(move || hook.on_clock_update()),
        nts: None,
        hw: None,
    };
    crate::refclocks::start(&sh.config, &refclock_ctx, precision)?;
    let threads = ntp_server::server_threads(&sh.config, opts.server_threads);
    let ntp = ntp_server::bind(sh, threads)?;
    control_server::start(sh, tasks)?;
    if !opts.no_clock_control {
        tasks.spawn(timekeeping::slew_timer(sh.clone()));
    }
    tasks.spawn(timekeeping::publish_loop(sh.clone()));
    tasks.spawn(timekeeping::leap_timer(sh.clone()));
    Ok(ntp)
}

/// `-u USER` / `user`: everything that needed root is done by now.
fn drop_privileges(config: &Config, opts: &Options, fast_path: bool) -> Result<()> {
    let Some(user) = opts.user.as_ref().or(config.user.as_ref()) else {
        return Ok(());
    };
    let needs = privdrop::Needs {
        clock: !opts.no_clock_control,
        fast_path,
    };
    privdrop::drop_to(user, needs).with_context(|| format!("dropping privileges to {user}"))?;
    let caps: Vec<&str> = needs.caps().iter().map(|c| c.1).collect();
    info!(
        "Running as {user} with {}",
        if caps.is_empty() {
            "no capabilities".to_string()
        } else {
            caps.join(", ")
        }
    );
    Ok(())
}
