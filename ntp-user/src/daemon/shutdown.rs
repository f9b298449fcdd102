//! Ending the daemon: waiting for a signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT: each a clean
//! quit, as in chrony) or a failed task, then letting go of the clock, withdrawing service
//! from the kernel, removing the control socket and saving the drift. The same runs when
//! the daemon unwinds from a panic.

use super::shared::Shared;
use crate::lock;
use anyhow::{Context, Result, anyhow};
use std::sync::Arc;
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};
use tracing::info;

/// Waits for a quitting signal (Ok), a fatal error from the engine, or a task to end (an
/// error: none should).
pub(super) async fn wait(
    tasks: &mut JoinSet<Result<()>>,
    mut fatal: tokio::sync::watch::Receiver<Option<String>>,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut sigquit = signal(SignalKind::quit()).context("installing SIGQUIT handler")?;
    tokio::select! {
        _ = sigterm.recv() => { info!("ntpxd exiting (SIGTERM)"); Ok(()) }
        _ = sigint.recv() => { info!("ntpxd exiting (SIGINT)"); Ok(()) }
        _ = sighup.recv() => { info!("ntpxd exiting (SIGHUP)"); Ok(()) }
        _ = sigquit.recv() => { info!("ntpxd exiting (SIGQUIT)"); Ok(()) }
        Ok(why) = fatal.wait_for(Option::is_some) => {
            Err(anyhow!("{}", why.clone().unwrap_or_default()))
        }
        Some(r) = tasks.join_next() => match r {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(anyhow!("a daemon task ended unexpectedly")),
            Err(e) => Err(anyhow!("a daemon task failed: {e}")),
        },
    }
}

/// Runs [`finish`] when dropped, once: on a normal return and when a panic unwinds.
pub(super) struct ExitGuard(pub Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        finish(&self.0);
    }
}

/// Lets go of the clock, withdraws the fast path, removes the control socket, saves the
/// drift. Only the first call does anything.
pub(super) fn finish(sh: &Arc<Shared>) {
    if sh.finished.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let left = lock(&sh.engine).clock_mut().release();
    if left != 0.0 {
        info!("Slew of {left:.6} s left unfinished; clock left at its base frequency");
    }
    if let Some(k) = &sh.kernel {
        let mut k = lock(k);
        k.withdraw();
        k.detach_all();
    }
    if let Some(path) = &sh.config.cmd_socket
        && sh.socket_bound.load(std::sync::atomic::Ordering::SeqCst)
    {
        let _ = std::fs::remove_file(path);
    }
    sh.save_drift();
    if let Some(s) = sh.sync.get() {
        s.save_nts_sessions();
    }
}
