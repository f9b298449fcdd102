//! The `fuzz` task: the packet and reply rules, the config and file readers, the control
//! decoder and command-port answer, the poller and the engine under
//! cargo-fuzz (libFuzzer, nightly), which is installed into `.tools` when missing.

use crate::cargo::{nightly_cargo, root, status, succeeds};
use anyhow::{Context, Result};
use std::process::Command;

/// The fuzz targets (`fuzz/fuzz_targets`).
const FUZZ_TARGETS: &[&str] = &[
    "packet",
    "nts",
    "config",
    "control",
    "control_reply",
    "poller",
    "engine",
    "files",
    "frame",
];

/// Fuzzes each target for `seconds`.
pub(crate) fn run(seconds: u32) -> Result<()> {
    crate::setup::run()?;
    run_targets(&[format!("-max_total_time={seconds}")])
}

/// Runs every fuzz target with libFuzzer `args`, installing cargo-fuzz when missing.
pub(crate) fn run_targets(args: &[String]) -> Result<()> {
    let tools = root().join(".tools/cargo-fuzz");
    if !succeeds(Command::new(tools.join("bin/cargo-fuzz")).arg("--version")) {
        println!("xtask: installing cargo-fuzz into {}", tools.display());
        status(
            Command::new("cargo")
                .args([
                    "install",
                    "cargo-fuzz",
                    "--version",
                    "0.13.2",
                    "--locked",
                    "--root",
                ])
                .arg(&tools),
        )?;
    }
    for t in FUZZ_TARGETS {
        println!("xtask: fuzzing {t}");
        let mut cmd = nightly_cargo(&root().join("fuzz"))?;
        cmd.args(["fuzz", "run", t]);
        // Hand-made inputs that reach deep (a run of valid exchanges for the engine):
        // the working corpus first, where new finds go, then the seeds.
        let seeds = root().join("fuzz/seeds").join(t);
        if seeds.is_dir() {
            let corpus = root().join("fuzz/corpus").join(t);
            std::fs::create_dir_all(&corpus)
                .with_context(|| format!("creating {}", corpus.display()))?;
            cmd.arg(&corpus).arg(&seeds);
        }
        status(cmd.arg("--").args(args))?;
    }
    Ok(())
}
