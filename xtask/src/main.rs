//! `cargo xtask`: set up the toolchain, build, run the demo, run every test.

mod bench;
mod cargo;
mod demo;
mod fuzz;
mod install;
mod layers;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// ntpx project tasks.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent): rust-src for nightly,
    /// bpf-linker built against nightly's LLVM in .tools/, chrony, ntpdig and ethtool from Debian.
    Setup,
    /// Build the eBPF object and the userspace binaries (release), object embedded in ntpxd.
    Build,
    /// Start ntpxd with its XDP fast path in a namespace and query it from another.
    Demo,
    /// Build release binaries and install them with the systemd unit, a default
    /// /etc/ntpx.conf (kept if present) and the state directory, under ROOT (default /).
    Install {
        /// Installation root (a staging directory for packaging).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Fuzz the packet parser, the config parser and the control decoder (cargo-fuzz,
    /// installed into .tools when missing) for SECONDS each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Run every test: formatting, clippy, unit tests, BPF test runs, namespace tests.
    /// Privileged tests need root; NTPX_SKIP_PRIVILEGED=1 skips them explicitly.
    #[expect(
        clippy::doc_markdown,
        reason = "the doc comment is the --help text, where backticks would show as they are"
    )]
    Test,
    /// Benchmark ntpx (XDP and --no-xdp) against chronyd -x, ntpd-rs and a bare XDP
    /// bounce program under the same load, ntpx's NTS server against chronyd's (unless
    /// --servers is given), plus the accuracy comparison; rewrite the
    /// generated part of docs/benchmarks.md and docs/benchmarks.json. Installs chrony
    /// (Debian) and ntpd-rs (crates.io, into .tools/ntpd-rs) when missing. Needs root.
    Bench {
        /// Servers to run (comma-separated: ntpx-xdp, ntpx-socket, chronyd, ntpd-rs, bounce).
        #[arg(long)]
        servers: Option<String>,
        /// Seconds per ramp step.
        #[arg(long, default_value_t = 2.0)]
        step_secs: f64,
        /// Skip the accuracy comparison (a minute of polling).
        #[arg(long)]
        no_accuracy: bool,
    },
}

fn main() -> Result<()> {
    match Args::parse().task {
        Task::Setup => setup::run(),
        Task::Build => cargo::build(),
        Task::Demo => demo::run(),
        Task::Test => test::run(),
        Task::Bench {
            servers,
            step_secs,
            no_accuracy,
        } => bench::run(servers.as_deref(), step_secs, !no_accuracy),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Install { root } => install::run(&root),
    }
}
