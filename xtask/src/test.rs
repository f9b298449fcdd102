//! The `test` task: formatting, clippy, the layering rules, unit tests, BPF test runs,
//! namespace tests and a short smoke run of each fuzz target.

use crate::cargo::{build_binaries, cargo, nightly_cargo, root, status, succeeds};
use anyhow::{Context, Result, bail};
use ntpx_tests::{SKIP_PRIVILEGED, is_root};
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

/// Runs every test, as root (through `sudo -n` when that works) unless privileged tests
/// are skipped explicitly.
pub(crate) fn run() -> Result<()> {
    if !is_root() && std::env::var(SKIP_PRIVILEGED).as_deref() != Ok("1") {
        if succeeds(Command::new("sudo").args(["-n", "true"])) {
            let exe = std::env::current_exe()?;
            println!("xtask test: re-running as root with sudo");
            return status(Command::new("sudo").args(["-n", "-E"]).arg(exe).arg("test"));
        }
        bail!(
            "the privileged tests (BPF, network namespaces) need root and sudo is not available: \
             run as root, or set NTPX_SKIP_PRIVILEGED=1 to skip them explicitly"
        );
    }
    crate::setup::run()?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    crate::layers::check()?;
    clippy_ebpf()?;
    let ntpd_rs = crate::setup::ntpd_rs()?;
    let gpsd = crate::setup::gpsd()?;
    build_binaries(false, &[])?;
    let (passed, failed) = run_tests(&ntpd_rs, &gpsd)?;
    // A short, deterministic smoke run of each fuzz target (`cargo xtask fuzz` fuzzes for real).
    crate::fuzz::run_targets(&["-runs=20000".into(), "-seed=1".into()])?;
    // The closing line CI reads.
    println!("\nntpx: {passed} passed, {failed} failed");
    Ok(())
}

/// The eBPF crate only builds for its own target with nightly, so it gets its own clippy
/// run; `bench` brings in the benchmark's object, which the workspace run cannot see.
fn clippy_ebpf() -> Result<()> {
    status(
        nightly_cargo(&root())?
            .args(["clippy", "-p", "ntp-ebpf", "--features", "bench"])
            .args(["--target", "bpfel-unknown-none"])
            .args(["-Z", "build-std=core", "--target-dir", "target/ebpf-clippy"])
            .args(["--", "-D", "warnings"]),
    )
}

/// Runs `cargo test`, echoing its output; returns the (passed, failed) counts over all
/// test binaries (cargo's own last line is that of the doc tests).
fn run_tests(ntpd_rs: &std::path::Path, gpsd: &std::path::Path) -> Result<(u64, u64)> {
    let mut child = Command::new("cargo")
        .current_dir(root())
        .args(["test", "--", "--nocapture"])
        .env("NTPX_BIN_DIR", root().join("target/debug"))
        .env("NTPX_NTPD_RS", ntpd_rs)
        .env("NTPX_GPSD_ROOT", gpsd)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some((p, f)) = parse_result(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let st = child.wait()?;
    if !st.success() || failed > 0 {
        println!("\nntpx: {passed} passed, {failed} failed");
        bail!("cargo test failed ({st})");
    }
    Ok((passed, failed))
}

/// Counts from a libtest summary: `test result: ok. 5 passed; 0 failed; ...`.
fn parse_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let num = |word: &str| {
        rest.split(';').find_map(|part| {
            let mut toks = part.split_whitespace().rev();
            if toks.next()? != word {
                return None;
            }
            toks.next()?.parse::<u64>().ok()
        })
    };
    Some((num("passed")?, num("failed")?))
}

#[cfg(test)]
mod tests {
    use super::parse_result;

    #[test]
    fn libtest_summaries_are_counted() {
        assert_eq!(
            parse_result(
                "test result: ok. 56 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((56, 0))
        );
        assert_eq!(
            parse_result("test result: FAILED. 6 passed; 1 failed; 0 ignored"),
            Some((6, 1))
        );
        assert_eq!(parse_result("running 7 tests"), None);
    }
}
