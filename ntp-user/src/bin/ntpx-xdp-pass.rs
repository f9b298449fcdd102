//! ntpx-xdp-pass: keeps a pass-through XDP program on an interface until killed.
//!
//! For labs and tests on veth pairs: frames an XDP program sends with `XDP_TX` only arrive
//! at a veth peer that has an XDP program of its own.

use anyhow::{Context, Result};
use clap::Parser;

/// Attach ntpx's pass-through XDP program to IFACE and hold it there until SIGINT/SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "ntpx-xdp-pass", version)]
struct Args {
    /// Interface to attach to (typically the client side of a veth pair).
    iface: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (_ebpf, mode) = ntp_user::xdp::attach_pass(&args.iface)
        .with_context(|| format!("attaching the pass program to {}", args.iface))?;
    eprintln!("ntpx-xdp-pass: attached to {} ({mode} mode)", args.iface);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}
