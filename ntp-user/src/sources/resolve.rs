//! Names to addresses: a `server`/`pool` name resolved until it resolves, and a pool's
//! name resolved again to replace members that fell silent.

use super::SyncHandle;
use crate::lock;
use ntp_proto::config::SourceConfig;
use std::{net::SocketAddr, sync::Mutex, time::Duration};
use tracing::warn;

/// How often a pool looks for members to replace: about every eight polls, within
/// 1-60 s.
fn pool_check_interval(minpoll: i8) -> Duration {
    Duration::from_secs_f64((8.0 * 2f64.powi(i32::from(minpoll))).clamp(1.0, 60.0))
}

/// Replaces pool members (among `mine`) that stopped answering (or refused us) with other
/// addresses the pool's name resolves to, for the daemon's life.
pub(super) async fn replace_dead_members(
    sc: &SourceConfig,
    mine: &Mutex<Vec<usize>>,
    h: &SyncHandle,
) {
    loop {
        tokio::time::sleep(pool_check_interval(sc.minpoll)).await;
        let dead: Vec<usize> = lock(&h.engine)
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
        let mut fresh = found.filter(|a| !lock(&h.in_use).contains(a));
        for id in dead {
            let Some(addr) = fresh.next() else { break };
            h.replace(id, addr);
        }
    }
}

/// Resolves a source's name, retrying every 10 s until it resolves.
pub(super) async fn resolve_until_done(sc: &SourceConfig) -> Vec<SocketAddr> {
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

/// Resolves `name` at once, for `allow`/`deny` and `cmdallow` hosts.
pub fn resolve_name(name: &str) -> Result<Vec<std::net::IpAddr>, String> {
    use std::net::ToSocketAddrs;
    (name, 0)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .map_err(|e| format!("cannot resolve {name}: {e}"))
}
