//! Following the interfaces: the fast path attached where the configuration says to
//! serve, detached where it no longer can, and the served addresses kept to what the
//! interfaces carry, as the kernel announces links and addresses coming and going. Until
//! an interface is there, the daemon's socket answers alone.

use super::shared::Shared;
use crate::{lock, net::link_events::LinkEvents, xdp::ifaces};
use anyhow::Result;
use ntp_proto::serving::{Attachment, changes};
use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tracing::{debug, info, warn};

/// How long a burst of changes may take to settle before the interfaces are read again
/// (a new interface's link-up and its addresses come as separate messages).
const SETTLE: Duration = Duration::from_millis(20);
/// How often what failed (an attach, the address update) is tried again without a
/// change to prompt it.
const RETRY: Duration = Duration::from_secs(30);
/// How long to wait before reopening a netlink socket that failed.
const REOPEN: Duration = Duration::from_secs(5);

/// What the last pass could not do, so it is retried (and warned of once).
#[derive(Default)]
pub(super) struct Pending {
    /// Attachments that failed, not yet warned of again.
    failed: HashSet<Attachment>,
    /// The served addresses could not be set.
    addresses: bool,
}

impl Pending {
    fn any(&self) -> bool {
        !self.failed.is_empty() || self.addresses
    }
}

impl Shared {
    /// Brings the attachments and served addresses in line with the interfaces there are
    /// now; whether something failed (and is to be retried). Takes the fast path's lock
    /// (attaching can take milliseconds), never the one publication takes.
    pub(super) fn follow_interfaces_now(&self) -> bool {
        let Some(k) = &self.kernel else { return false };
        let all = match ifaces::interfaces() {
            Ok(all) => all,
            Err(e) => {
                warn!("Could not list the interfaces: {e:#}");
                return true;
            }
        };
        let wanted = self.wish.interfaces(&all);
        let mut k = lock(k);
        // The orderly exit detached everything under this lock: attach nothing after it.
        if self.finished.load(Ordering::SeqCst) {
            return false;
        }
        let mut pending = lock(&self.pending);
        let (attach, detach) = changes(&k.attachments(), &wanted);
        for d in detach {
            let gone = !all.iter().any(|i| i.index == d.index);
            if let Err(e) = k.detach(d.index) {
                warn!("Could not detach the fast path from {}: {e:#}", d.name);
            }
            if gone {
                info!("{} is gone: the fast path left it", d.name);
            } else {
                info!("No longer serving on {}: the fast path left it", d.name);
            }
        }
        pending.failed.retain(|f| wanted.contains(f));
        for a in attach {
            match k.attach_to(&a.name, a.index) {
                Ok(mode) => {
                    info!(
                        "XDP fast path attached to {} ({mode} mode), port {}",
                        a.name, self.config.port
                    );
                    pending.failed.remove(&a);
                }
                Err(e) => {
                    let first = pending.failed.insert(a.clone());
                    let say = format!(
                        "Could not attach the fast path to {}: {e:#}; its requests are \
                         answered from the daemon's socket",
                        a.name
                    );
                    if first {
                        warn!("{say}");
                    } else {
                        debug!("{say}");
                    }
                }
            }
        }
        let now = k.attachments();
        for a in &now {
            // A MAC address changed in place (bonds and VLANs follow their ports).
            if let Err(e) = k.refresh_mac(&a.name, a.index) {
                debug!("Reading the MAC of {}: {e:#}", a.name);
            }
        }
        let addrs = self.wish.addresses(&all, &now);
        let mut served = lock(&self.served);
        if served.as_ref() != Some(&addrs) {
            match k.set_local_addresses(&addrs) {
                Ok(()) => {
                    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                    if list.is_empty() {
                        info!(
                            "Fast path waiting for {}; the daemon's socket answers meanwhile",
                            self.wish.awaited()
                        );
                    } else {
                        info!("Fast path serving {}", list.join(", "));
                    }
                    *served = Some(addrs);
                    pending.addresses = false;
                }
                Err(e) => {
                    if !pending.addresses {
                        warn!("Could not update the served addresses: {e:#}");
                    }
                    pending.addresses = true;
                }
            }
        }
        pending.any()
    }
}

/// Follows link and address changes (announced on `events`) for the daemon's life.
/// Nothing here stops the daemon: a failing netlink socket is reopened, a failed pass
/// retried.
pub(super) async fn follow_interfaces(sh: Arc<Shared>, mut events: LinkEvents) -> Result<()> {
    let mut retry = false;
    loop {
        let woke = if retry {
            tokio::select! {
                r = events.changed() => r,
                () = tokio::time::sleep(RETRY) => Ok(()),
            }
        } else {
            events.changed().await
        };
        if let Err(e) = woke {
            warn!("Interface changes: {e:#}; listening again in {REOPEN:?}");
            tokio::time::sleep(REOPEN).await;
            match LinkEvents::open() {
                Ok(fresh) => events = fresh,
                Err(e) => {
                    warn!("{e:#}");
                    continue;
                }
            }
        }
        tokio::time::sleep(SETTLE).await;
        if let Err(e) = events.drain() {
            debug!("{e:#}");
        }
        // Off the timekeeping thread: listing interfaces and attaching are syscalls that
        // can take milliseconds.
        let pass = sh.clone();
        retry = match tokio::task::spawn_blocking(move || pass.follow_interfaces_now()).await {
            Ok(failed) => failed,
            Err(e) => {
                warn!("Following the interfaces failed: {e}");
                true
            }
        };
    }
}
