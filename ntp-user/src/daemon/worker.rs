//! Threads of the daemon's own that answer requests beside the timekeeping thread (NTP
//! server threads, `AF_XDP` threads), each watched by a task of the daemon's: a thread
//! that fails or panics ends the daemon with its error.

use anyhow::{Context, Result, anyhow};
use tokio::task::JoinSet;

/// What a worker's return without an error means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnEnd {
    /// It should never end: ending is an error, and ends the daemon.
    Fatal,
    /// It may end (its interface went away): the daemon goes on.
    Quiet,
}

/// Starts thread `thread` running `work` under normal scheduling (not under
/// `sched_priority`'s `SCHED_FIFO`, inherited from the thread that made it: a flood of
/// requests must not take the CPU from timekeeping), watched by a task in `tasks`;
/// `what` names it in errors.
pub(super) fn spawn(
    tasks: &mut JoinSet<Result<()>>,
    thread: String,
    what: String,
    on_end: OnEnd,
    work: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(thread)
        .spawn(move || {
            crate::os::normal_scheduling();
            let _ = done.send(work());
        })
        .with_context(|| format!("starting {what}"))?;
    tasks.spawn(async move {
        match ended.await {
            Ok(Err(e)) => Err(e.context(what)),
            Ok(Ok(())) if on_end == OnEnd::Quiet => std::future::pending().await,
            Ok(Ok(())) => Err(anyhow!("{what} ended")),
            Err(_) => Err(anyhow!("{what} panicked")),
        }
    });
    Ok(())
}
