//! Carrying out `ntpxc` requests: reports read from the engine and the counters, and the
//! commands that change the daemon's state.

use super::{counters::bump, shared::Shared};
use crate::{clock, lock, os::config_files, sources::poll_task::SourceCommand};
use anyhow::Result;
use ntp_proto::{
    control::{Request, Response},
    report::ActivityReport,
};
use std::net::IpAddr;
use tracing::{info, warn};

impl Shared {
    /// The response to one request (`Err`: it could not be decoded or was refused).
    pub(super) fn handle_control(&self, req: Result<Request>) -> Response {
        bump(&self.counters.cmd_received);
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                bump(&self.counters.cmd_dropped);
                return Response::Error(format!("{e:#}"));
            }
        };
        match self.answer(&req) {
            Ok(r) => r,
            Err(e) => Response::Error(format!("{e:#}")),
        }
    }

    fn answer(&self, req: &Request) -> Result<Response> {
        let now = || clock::realtime_ns();
        Ok(match *req {
            Request::Serverstats => Response::Serverstats(self.server_stats()),
            Request::Xdpstats => Response::Xdpstats(self.xdp_stats()),
            Request::Sources => Response::Sources(lock(&self.engine).sources_report(now()?)),
            Request::Tracking => Response::Tracking(lock(&self.engine).tracking_report(now()?)),
            Request::Sourcestats => {
                Response::Sourcestats(lock(&self.engine).sourcestats_report(now()?))
            }
            Request::Clients => {
                Response::Clients(self.clients.report(self.kernel_clients(), clock::tai_ns()?))
            }
            Request::Selectdata => {
                Response::Selectdata(lock(&self.engine).selectdata_report(now()?))
            }
            Request::Authdata => Response::Authdata(lock(&self.engine).authdata_report()),
            Request::Ntpdata { address } => {
                Response::Ntpdata(lock(&self.engine).ntpdata_report(address))
            }
            Request::Activity => Response::Activity(self.activity()),
            Request::Burst => {
                let ids = lock(&self.engine).source_ids(None);
                let n = lock(&self.engine).burst(&ids);
                self.send_sources(Some(&ids), SourceCommand::Burst);
                info!("Burst requested on {n} sources");
                Response::Ok
            }
            Request::ReloadSources => self.reload_sources(),
            Request::Offline { address } => self.set_online(address, false),
            Request::Online { address } => self.set_online(address, true),
            Request::Makestep { threshold, limit } => self.makestep(threshold, limit),
        })
    }

    fn activity(&self) -> ActivityReport {
        let e = lock(&self.engine);
        // As chronyc's: NTP sources only, reference clocks are not counted.
        let live: Vec<_> = e
            .sources()
            .iter()
            .filter(|s| !s.removed && s.is_ntp())
            .collect();
        let off = live.iter().filter(|s| s.offline).count();
        ActivityReport {
            online: live.len() - off,
            offline: off,
            unresolved: self
                .sync
                .get()
                .map_or(0, super::super::sources::SyncHandle::unresolved),
        }
    }

    /// Sends `cmd` to the sources `ids` (all with `None`); how many took it.
    pub(super) fn send_sources(&self, ids: Option<&[usize]>, cmd: SourceCommand) -> usize {
        self.sync.get().map_or(0, |h| h.send(ids, cmd))
    }

    fn reload_sources(&self) -> Response {
        let fresh = match config_files::load(&self.config_path) {
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

    fn set_online(&self, address: Option<IpAddr>, online: bool) -> Response {
        let ids = lock(&self.engine).source_ids(address);
        if ids.is_empty() {
            return Response::Error("no such source".into());
        }
        lock(&self.engine).set_offline(&ids, !online);
        let cmd = if online {
            SourceCommand::Online
        } else {
            SourceCommand::Offline
        };
        let n = self.send_sources(Some(&ids), cmd);
        info!(
            "{n} sources set {}",
            if online { "online" } else { "offline" }
        );
        Response::Ok
    }

    fn makestep(&self, threshold: Option<f64>, limit: Option<i32>) -> Response {
        match (threshold, limit) {
            (Some(t), Some(l)) if t >= 0.0 && l >= -1 => {
                lock(&self.engine).set_makestep(t, l);
                Response::Ok
            }
            (None, None) => {
                let log = lock(&self.engine).make_step();
                self.journal.emit(log);
                if let Err(e) = self.publish() {
                    warn!("Publishing server state failed: {e:#}");
                }
                Response::Ok
            }
            _ => Response::Error(
                "makestep takes no arguments, or a threshold >= 0 and a limit >= -1".into(),
            ),
        }
    }
}
