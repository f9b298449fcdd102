//! Following the interfaces: the fast path attached where the configuration says to
//! serve, detached where it no longer can, and the served addresses kept to what the
//! interfaces carry, as the kernel announces links and addresses coming and going. Until
//! an interface is there, the daemon's socket answers alone.

use super::shared::Shared;
use crate::{lock, net::link_events::LinkEvents, xdp::ifaces};
use anyhow::Result;
use ntp_proto::serving::{Attachment, changes};
use std::{sync::Arc, time::Duration};
use tracing::{debug, info, warn};

/// How long a burst of changes may take to settle before the interfaces are read again
/// (a new interface's link-up and its addresses come as separate messages).
const SETTLE: Duration = Duration::from_millis(20);

impl Shared {
    /// Brings the attachments and served addresses in line with the interfaces there are
    /// now. Takes the fast path's lock (attaching can take milliseconds), never the one
    /// publication takes.
    pub(super) fn follow_interfaces_now(&self) {
        let Some(k) = &self.kernel else { return };
        let all = match ifaces::interfaces() {
            Ok(all) => all,
            Err(e) => {
                warn!("Could not list the interfaces: {e:#}");
                return;
            }
        };
        let wanted = self.wish.interfaces(&all);
        let mut k = lock(k);
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
        for Attachment { name, index } in attach {
            match k.attach_to(&name, index) {
                Ok(mode) => info!(
                    "XDP fast path attached to {name} ({mode} mode), port {}",
                    self.config.port
                ),
                Err(e) => warn!(
                    "Could not attach the fast path to {name}: {e:#}; its requests are \
                     answered from the daemon's socket"
                ),
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
                }
                Err(e) => warn!("Could not update the served addresses: {e:#}"),
            }
        }
    }
}

/// Follows link and address changes (announced on `events`) for the daemon's life.
pub(super) async fn follow_interfaces(sh: Arc<Shared>, mut events: LinkEvents) -> Result<()> {
    loop {
        events.changed().await?;
        tokio::time::sleep(SETTLE).await;
        events.drain()?;
        // Off the timekeeping thread: listing interfaces and attaching are syscalls that
        // can take milliseconds.
        let sh = sh.clone();
        tokio::task::spawn_blocking(move || sh.follow_interfaces_now()).await?;
    }
}
