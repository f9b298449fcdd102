//! Reference clocks: each `refclock` line's driver (an SHM segment, a SOCK socket, a PHC,
//! a PPS on a PHC's pin) opened at start, while the daemon still has the rights to, and a task per clock on the
//! timekeeping thread that hands its readings to the engine and ends each poll.

pub mod extpps;
pub mod phc;
pub mod shm;
pub mod sock;

use crate::{lock, sources::poll_task::PollContext};
use anyhow::{Context, Result};
use ntp_proto::{
    config::{Config, RefclockConfig, RefclockDriver},
    refclock::Reading,
    refclock_formats::{phc_offset, sock_reading},
};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

/// An opened driver.
enum Driver {
    Shm(shm::Segment),
    Sock(tokio::net::UnixDatagram),
    Phc(phc::Phc),
    Extpps(extpps::PinEvents),
}

fn open(rc: &RefclockConfig) -> Result<Driver> {
    Ok(match &rc.driver {
        RefclockDriver::Shm { segment, perm } => {
            Driver::Shm(shm::Segment::attach(*segment, *perm)?)
        }
        RefclockDriver::Sock { path } => Driver::Sock(sock::open(path)?),
        RefclockDriver::Phc {
            device,
            nocrossts,
            extpps: true,
            pin,
            channel,
            clear,
        } => Driver::Extpps(extpps::PinEvents::enable(
            device, *nocrossts, *pin, *channel, *clear,
        )?),
        RefclockDriver::Phc {
            device, nocrossts, ..
        } => Driver::Phc(phc::Phc::open(device, *nocrossts)?),
    })
}

/// Opens every reference clock of `config`, adds each to the engine and starts its task;
/// an error names the line (chronyd, too, refuses to start without a configured
/// reference clock).
pub fn start(config: &Config, ctx: &PollContext, precision: f64) -> Result<()> {
    for rc in &config.refclocks {
        let driver = open(rc)
            .with_context(|| format!("refclock {} (line {})", rc.driver.name(), rc.line))?;
        let id = lock(&ctx.engine).add_refclock(rc);
        let line = rc.line;
        let name = lock(&ctx.engine).sources()[id].name.clone();
        info!(
            "Added reference clock {name} ({} line {}, poll {} dpoll {})",
            rc.driver.name(),
            rc.line,
            rc.poll,
            rc.dpoll
        );
        let ctx = ctx.clone();
        let rc = rc.clone();
        let task = tokio::spawn(async move {
            match driver {
                Driver::Sock(s) => run_sock(id, &name, &rc, s, ctx).await,
                Driver::Extpps(p) => run_extpps(id, &name, &rc, p, ctx, precision).await,
                polled => run_polled(id, &name, &rc, polled, ctx, precision).await,
            }
        });
        // The driver cannot be opened again once privileges are dropped: a task that
        // fails is reported, loudly, and the clock stays unreachable.
        tokio::spawn(async move {
            if let Err(e) = task.await {
                error!("reference clock (line {line}) stopped: its task failed ({e})");
            }
        });
    }
    // As chrony: a `lock` naming no other reference clock is warned of (the pulses are
    // then numbered by our own time).
    let refids: Vec<[u8; 4]> = {
        let e = lock(&ctx.engine);
        e.refclock_ids()
            .iter()
            .filter_map(|id| e.refclock(*id).map(|r| r.refid))
            .collect()
    };
    for rc in &config.refclocks {
        if let Some(l) = rc.lock
            && (!refids.contains(&l) || rc.refid == Some(l))
        {
            warn!(
                "Invalid lock refid {} (refclock line {})",
                ntp_proto::refclock::refid_name(l),
                rc.line
            );
        }
    }
    Ok(())
}

/// A timer every 2^`log2` seconds, its first tick at once, late ticks not bunched.
fn timer(log2: i8) -> tokio::time::Interval {
    let period = Duration::from_secs_f64(2f64.powi(i32::from(log2)));
    let mut t = tokio::time::interval_at(Instant::now(), period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Whether a driver's reads are failing: the first failure is warned of, the rest kept
/// quiet until it reads again, which is said.
#[derive(Default)]
struct Health {
    failing: bool,
}

impl Health {
    /// The value of a read, or `None` (said as above).
    fn check<T>(&mut self, name: &str, read: Result<T>) -> Option<T> {
        match read {
            Ok(v) => {
                if self.failing {
                    info!("{name}: readings again");
                    self.failing = false;
                }
                Some(v)
            }
            Err(e) => {
                if !self.failing {
                    warn!("{name}: {e:#}");
                    self.failing = true;
                }
                None
            }
        }
    }
}

/// Hands a reading to the engine.
fn take(ctx: &PollContext, id: usize, name: &str, reading: Reading) {
    if let Err(why) = lock(&ctx.engine).refclock_reading(id, reading) {
        debug!("{name}: reading refused ({why:?})");
    }
}

/// The end of a timer period: a poll may end, the clock may be updated.
fn tick(ctx: &PollContext, id: usize) {
    let log = lock(&ctx.engine).refclock_tick(id);
    if !log.is_empty() {
        (ctx.changed)();
    }
    ctx.journal.emit(log);
}

/// SHM and PHC: read every `dpoll`.
async fn run_polled(
    id: usize,
    name: &str,
    rc: &RefclockConfig,
    mut driver: Driver,
    ctx: PollContext,
    precision: f64,
) {
    let mut timer = timer(rc.dpoll);
    let mut health = Health::default();
    loop {
        timer.tick().await;
        let reading = match &mut driver {
            Driver::Shm(seg) => Ok(seg.read()),
            Driver::Phc(p) => p.read().map(|r| {
                phc_offset(&r, precision).map(|(sys_ns, offset, _err)| Reading::Time {
                    sys_ns,
                    offset,
                    leap: 0,
                })
            }),
            Driver::Sock(_) | Driver::Extpps(_) => Ok(None),
        };
        if let Some(Some(r)) = health.check(name, reading) {
            take(&ctx, id, name, r);
        }
        tick(&ctx, id);
    }
}

/// SOCK: samples come when the writer sends them; the poll ends every `poll`.
async fn run_sock(
    id: usize,
    name: &str,
    rc: &RefclockConfig,
    sock: tokio::net::UnixDatagram,
    ctx: PollContext,
) {
    // As chrony: the first poll ends at once (an empty one), then every `poll`.
    let mut timer = timer(rc.poll);
    // Room for a longer datagram, so a wrong length is seen as such.
    let mut buf = [0u8; 64];
    let mut warned = false;
    loop {
        tokio::select! {
            _ = timer.tick() => tick(&ctx, id),
            r = sock.recv(&mut buf) => match r {
                Ok(n) => match sock_reading(&buf[..n]) {
                    Ok(reading) => take(&ctx, id, name, reading),
                    Err(e) if !warned => {
                        warn!("{name}: a datagram that is not a SOCK sample ({e}); ignoring such");
                        warned = true;
                    }
                    Err(e) => debug!("{name}: {e}"),
                },
                Err(e) => {
                    warn!("{name}: reading the socket failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

/// `extpps`: the PHC is read against the system clock every `dpoll` (into a line of its
/// own, as chronyd keeps one per PHC), each pulse's stamp is taken from the PHC's event
/// queue as it comes and mapped to system time through that line; the poll ends every
/// `dpoll` tick as for the other polled drivers.
async fn run_extpps(
    id: usize,
    name: &str,
    rc: &RefclockConfig,
    events: extpps::PinEvents,
    ctx: PollContext,
    precision: f64,
) {
    let (dev, channel) = (events.dev, events.channel);
    let mut pulses = extpps::listen(dev, channel);
    // SAFETY: the PinEvents (and its descriptor) moves into the AsyncFd, which owns it
    // until it is dropped, so the descriptor cannot be closed or reused while registered.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE)
    };
    let mut queue = match registered {
        Ok(q) => q,
        Err(e) => {
            error!("{name}: cannot wait for the PHC's events: {e}");
            return;
        }
    };
    let mut line = ntp_proto::hwclock::HwClock::new(2, 16, precision.max(rc.precision));
    let mut timer = timer(rc.dpoll);
    let mut last = None;
    let mut health = Health::default();
    loop {
        tokio::select! {
            _ = timer.tick() => {
                if let Some(r) = health.check(name, queue.get_mut().phc.read()) {
                    lock(&ctx.engine).hw_reading(&mut line, &r, precision);
                }
                tick(&ctx, id);
            }
            ready = queue.readable() => match ready {
                Ok(mut guard) => {
                    while let Some((ch, phc_ns)) = guard.get_inner().read() {
                        extpps::dispatch(dev, ch, phc_ns);
                    }
                    guard.clear_ready();
                }
                Err(e) => {
                    warn!("{name}: waiting for the PHC's events failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Some(phc_ns) = pulses.recv() => {
                // As chronyd: the same stamp twice (two descriptors of one queue) once.
                if last == Some(phc_ns) {
                    continue;
                }
                last = Some(phc_ns);
                let reading = lock(&ctx.engine).phc_pulse(&line, phc_ns);
                if let Some(r) = reading {
                    take(&ctx, id, name, r);
                } else {
                    debug!("{name}: a pulse before the PHC's line is known");
                }
            }
        }
    }
}
