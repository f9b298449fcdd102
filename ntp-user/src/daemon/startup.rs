//! Setting the daemon up from its configuration: the access table, the engine over the
//! clock `-x` chooses, leap seconds, the keyfile, and the XDP fast path.

use super::Options;
use crate::{
    clock::{self, DaemonClock, SystemRealtime, hooked::HookedStep, system::SystemClock},
    os::{drift_file, leap_zone},
    sources::resolve::resolve_name,
    xdp::KernelPath,
};
use anyhow::{Result, anyhow};
use ntp_proto::{
    acl::{AccessTable, Action},
    auth::KeyTable,
    clock::{FreeRunning, SteeredClock},
    config::Config,
    engine::Engine,
    leaptz::{self, Leap},
};
use tracing::{info, warn};

/// The `allow`/`deny` table, with a warning when nobody would be served.
pub(super) fn access_table(config: &Config) -> Result<AccessTable> {
    let acl = AccessTable::from_rules(&config.acl_rules, resolve_name)
        .map_err(|e| anyhow!("allow/deny: {e}"))?;
    let allows = |a: &Action| *a == Action::Allow;
    if !acl.v4_entries().iter().any(|e| allows(&e.2))
        && !acl.v6_entries().iter().any(|e| allows(&e.2))
    {
        warn!(
            "No allow directive: NTP clients will not be served (add e.g. `allow 192.168.0.0/16`)"
        );
    }
    Ok(acl)
}

/// The engine over the clock chosen by `-x`, starting from the driftfile's frequency and
/// skew; without a driftfile, from the frequency the kernel has (an earlier daemon's).
pub(super) fn new_engine(
    config: &Config,
    opts: &Options,
    precision: i8,
    kernel: &clock::read::KernelTime,
) -> Engine<DaemonClock> {
    let drift = config
        .driftfile
        .as_deref()
        .and_then(|p| drift_file::read(p).map(|d| (p, d)));
    let (freq, skew) = match drift {
        Some((path, d)) => {
            info!(
                "Frequency {:.3} +/- {:.3} ppm read from {}",
                d.freq_ppm,
                d.skew_ppm,
                path.display()
            );
            // The driftfile holds the clock's error (fast positive); the correction undoes it.
            (-d.freq_ppm * 1e-6, Some(d.skew_ppm * 1e-6))
        }
        None if !opts.no_clock_control => (kernel.frequency.ratio(), None),
        None => (0.0, None),
    };
    let max_drift = config.sync.max_drift_ppm * 1e-6;
    let clock = if opts.no_clock_control {
        DaemonClock::Free(FreeRunning::new(freq, SystemRealtime, max_drift))
    } else {
        DaemonClock::System(SteeredClock::new(
            HookedStep::new(SystemClock::take_control()),
            freq,
            config.sync.max_slew_rate_ppm * 1e-6,
            max_drift,
        ))
    };
    Engine::new(
        clock,
        &config.sync,
        config.local,
        2f64.powi(i32::from(precision)),
        skew,
    )
}

/// Leap seconds from `leapsectz`; without `-x`, also brings the kernel's TAI offset in line.
pub(super) fn load_leaps(config: &Config, opts: &Options, kernel_tai: i32) -> Result<Vec<Leap>> {
    let Some(zone) = &config.leapsectz else {
        return Ok(Vec::new());
    };
    let leaps = match leap_zone::load(zone) {
        Ok(l) => l,
        Err(e) => {
            warn!("leapsectz {zone}: {e:#}");
            return Ok(Vec::new());
        }
    };
    info!("Using {zone} timezone to obtain leap second data");
    let now = (clock::realtime_ns()? / 1_000_000_000) as i64;
    let offset = leaptz::tai_offset(&leaps, now);
    if offset != kernel_tai {
        if opts.no_clock_control {
            info!(
                "TAI offset is {offset} seconds (the kernel's {kernel_tai} is left alone: clock control is off)"
            );
        } else {
            match SystemClock.set_tai_offset(offset) {
                Ok(()) => info!("System clock TAI offset set to {offset} seconds"),
                Err(e) => warn!("Could not set the TAI offset: {e:#}"),
            }
        }
    }
    Ok(leaps)
}

/// Reads the keyfile; as chronyd, a missing or bad keyfile costs authentication, not
/// the service (and a file others may read or write is warned of, as chronyd does).
pub(super) fn load_keys(config: &Config) -> KeyTable {
    let Some(path) = &config.keyfile else {
        return KeyTable::default();
    };
    if let Some(w) = crate::os::permission_warning(path, 0o771) {
        warn!("{w}");
    }
    match std::fs::read_to_string(path) {
        Ok(text) => match ntp_proto::keys::parse(&text, path) {
            Ok(keys) => {
                let (table, problems) = KeyTable::new(&keys);
                for p in problems {
                    warn!("Ignoring a key of {}: {p}", path.display());
                }
                info!(
                    "Loaded {} symmetric keys from {}",
                    table.len(),
                    path.display()
                );
                table
            }
            Err(e) => {
                warn!("Ignoring keyfile: {e}");
                KeyTable::default()
            }
        },
        Err(e) => {
            warn!("Could not open keyfile {}: {e}", path.display());
            KeyTable::default()
        }
    }
}

/// Loads the XDP program with the access rules; it is attached to interfaces as they
/// are found (see `interfaces`).
pub(super) fn start_kernel(config: &Config, acl: &AccessTable) -> Result<KernelPath> {
    let mut k = KernelPath::load_with(config.port, config.client_log, config.ratelimit)?;
    k.set_acl(acl)?;
    Ok(k)
}
