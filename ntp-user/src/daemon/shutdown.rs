//! Ending the daemon: waiting for a signal or a failed task, then withdrawing service
//! from the kernel, removing the control socket and saving the drift.

use super::shared::Shared;
use crate::lock;
use anyhow::{Context, Result, anyhow};
use std::sync::Arc;
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};
use tracing::info;

/// Waits for SIGTERM or SIGINT (Ok) or for a task to end (an error: none should).
pub(super) async fn wait(tasks: &mut JoinSet<Result<()>>) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = sigterm.recv() => { info!("ntpxd exiting (SIGTERM)"); Ok(()) }
        _ = sigint.recv() => { info!("ntpxd exiting (SIGINT)"); Ok(()) }
        Some(r) = tasks.join_next() => match r {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(anyhow!("a daemon task ended unexpectedly")),
            Err(e) => Err(anyhow!("a daemon task failed: {e}")),
        },
    }
}

/// Stops every task, withdraws the fast path, removes the control socket, saves the drift.
pub(super) fn finish(sh: &Arc<Shared>, tasks: &mut JoinSet<Result<()>>) {
    tasks.abort_all();
    if let Some(k) = &sh.kernel {
        let mut k = lock(k);
        let mut st = k.published();
        st.serve = 0;
        k.publish(&st);
        k.detach_all();
    }
    if let Some(path) = &sh.config.cmd_socket {
        let _ = std::fs::remove_file(path);
    }
    sh.save_drift();
}
