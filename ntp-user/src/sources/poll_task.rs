//! Polling one upstream address: the IO around [`ntp_proto::poller::Poller`].
//!
//! Each source runs as its own task, sends requests on its own connected socket, takes
//! the kernel's transmit and receive timestamps, and reports to the synchronization task
//! over a channel. It never reads the clock it measures except as a fallback when the
//! kernel gives no timestamp.

use crate::{
    clock,
    net::{self, ClientSocket},
};
use ntp_proto::{
    engine::WireInfo,
    packet::NtpHeader,
    poller::{Kiss, Poller, ReplyOutcome},
};
use std::{net::SocketAddr, time::Duration};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Index of a source in the daemon's source table.
pub type SourceId = usize;

/// What a source task reports.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    /// A request went out (the reachability register and poll after it).
    Polled {
        /// Which source.
        id: SourceId,
        /// Reachability register.
        reach: u8,
        /// Poll exponent.
        poll: i8,
    },
    /// A valid reply, with the kernel timestamps of the exchange (`CLOCK_REALTIME` ns).
    Reply {
        /// Which source.
        id: SourceId,
        /// The reply.
        header: NtpHeader,
        /// Request transmit time.
        t1_ns: u64,
        /// Reply receive time.
        t4_ns: u64,
        /// Reachability register.
        reach: u8,
        /// Poll exponent.
        poll: i8,
        /// How the exchange went on the wire (for ntpdata).
        wire: WireInfo,
    },
    /// The source refused us (`KoD` DENY/RSTR) and is no longer polled.
    Refused {
        /// Which source.
        id: SourceId,
    },
}

/// Commands the synchronization task sends back to a source.
#[derive(Clone, Copy, Debug)]
pub enum SourceCommand {
    /// The sample was used: the poll interval may grow.
    SampleUsed,
    /// Poll now, in a burst of four (ntpxc burst).
    Burst,
    /// Stop polling (the address was replaced).
    Stop,
    /// Stop polling until `Online` (ntpxc offline).
    Offline,
    /// Resume polling (ntpxc online).
    Online,
}

fn now_ns() -> u64 {
    use ntp_proto::clock::RealtimeClock;
    clock::SystemRealtime.now_ns()
}

/// Polls `addr` until the channel closes. Replies are awaited until the next poll is due.
pub async fn run(
    id: SourceId,
    addr: SocketAddr,
    mut poller: Poller,
    events: mpsc::Sender<SourceEvent>,
    mut commands: mpsc::Receiver<SourceCommand>,
) {
    let sock = match ClientSocket::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            warn!("Source {addr}: {e:#}");
            return;
        }
    };
    let mut buf = [0u8; 1024];
    loop {
        if poller.stopped() {
            info!("Source {addr} refused service (Kiss-o'-Death); no longer polled");
            let _ = events.send(SourceEvent::Refused { id }).await;
            return;
        }
        if poller.reach() == 0 {
            // Nothing heard for eight polls: probe at the minimum interval again.
            poller.reset_poll();
        }
        let cookie = net::random_u64();
        let sent_fallback = now_ns();
        let req = poller.request(cookie, sent_fallback);
        let mut tx_kernel = false;
        if let Err(e) = sock.send(&req) {
            debug!("{e:#}");
        } else if let Some(ts) = sock.tx_timestamp(Duration::from_millis(20)).await {
            poller.set_sent(cookie, ts);
            tx_kernel = true;
        }
        if events
            .send(SourceEvent::Polled {
                id,
                reach: poller.reach(),
                poll: poller.poll(),
            })
            .await
            .is_err()
        {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(poller.interval());
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                cmd = commands.recv() => match cmd {
                    Some(SourceCommand::SampleUsed) => poller.sample_used(),
                    Some(SourceCommand::Burst) => {
                        poller.start_burst();
                        break;
                    }
                    Some(SourceCommand::Stop) | None => return,
                    Some(SourceCommand::Offline) => {
                        // Wait for Online (or the end) without polling.
                        loop {
                            match commands.recv().await {
                                Some(SourceCommand::Online) => break,
                                Some(SourceCommand::Stop) | None => return,
                                Some(_) => {}
                            }
                        }
                        break;
                    }
                    Some(SourceCommand::Online) => {}
                },
                r = sock.recv(&mut buf) => {
                    let r = match r {
                        Ok(r) => r,
                        Err(e) => {
                            // ICMP port unreachable and the like: the poll counts as unanswered.
                            debug!("Source {addr}: {e:#}");
                            continue;
                        }
                    };
                    let t4 = r.rx_realtime_ns.unwrap_or_else(now_ns);
                    match poller.reply(&buf[..r.len]) {
                        ReplyOutcome::Valid { header, sent } => {
                            let ev = SourceEvent::Reply {
                                id,
                                header,
                                t1_ns: sent,
                                t4_ns: t4,
                                reach: poller.reach(),
                                poll: poller.poll(),
                                wire: WireInfo {
                                    local: sock.local(),
                                    tx_kernel,
                                    rx_kernel: r.rx_realtime_ns.is_some(),
                                },
                            };
                            if events.send(ev).await.is_err() {
                                return;
                            }
                        }
                        ReplyOutcome::Kiss(Kiss::Rate) => {
                            warn!("Source {addr} sent Kiss-o'-Death RATE; polling less often");
                        }
                        ReplyOutcome::Kiss(k) => debug!("Source {addr}: Kiss-o'-Death {k:?}"),
                        ReplyOutcome::Rejected(why) => debug!("Source {addr}: reply rejected ({why:?})"),
                    }
                }
            }
        }
    }
}
