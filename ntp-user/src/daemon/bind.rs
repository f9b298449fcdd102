//! Binding one socket per configured address, or per default address of each family.

use anyhow::Result;
use std::net::{IpAddr, SocketAddr};
use tracing::{info, warn};

/// Binds `bind` on each of `configured` (or, if none are, each of `defaults`) at `port`.
/// A default address that cannot be bound (a host without IPv6) is skipped with a warning;
/// a configured one is an error.
pub(super) fn bind_each<S>(
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
