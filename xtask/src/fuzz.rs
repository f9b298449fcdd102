//! The `fuzz` task: the packet parser, the config parser and the control decoder under
//! cargo-fuzz (libFuzzer, nightly), which is installed into `.tools` when missing.

use crate::cargo::{nightly_cargo, root, status, succeeds};
use anyhow::Result;
use std::process::Command;

/// The fuzz targets (`fuzz/fuzz_targets`).
const FUZZ_TARGETS: &[&str] = &["packet", "config", "control"];

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
        status(
            nightly_cargo(&root().join("fuzz"))?
                .args(["fuzz", "run", t, "--"])
                .args(args),
        )?;
    }
    Ok(())
}
