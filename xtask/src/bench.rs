//! The `bench` task: ntpx against chronyd, ntpd-rs and a bare XDP bounce program under
//! the same load, the NTS servers of ntpx and chronyd, and the accuracy comparison; rewrites the generated part of
//! docs/benchmarks.md and docs/benchmarks.json.

use crate::cargo::{build_binaries, root, status};
use anyhow::{Context, Result, bail};
use ntpx_tests::is_root;
use std::process::Command;

/// Runs the benchmark with `servers` (all by default) and `step_secs` per ramp step, and
/// the accuracy comparison when `accuracy`.
pub(crate) fn run(servers: Option<&str>, step_secs: f64, accuracy: bool) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask bench needs root (namespaces, XDP, BPF_PROG_TEST_RUN)");
    }
    crate::setup::run()?;
    let daemon = crate::setup::ntpd_rs()?;
    build_binaries(true, &["-p", "ntpx-bench"])?;
    let mut args: Vec<String> = vec![
        "--ntpd-rs".into(),
        daemon.display().to_string(),
        "--step-secs".into(),
        step_secs.to_string(),
        "--markdown".into(),
        "docs/benchmarks.md".into(),
        "--json".into(),
        "docs/benchmarks.json".into(),
    ];
    // The command line recorded in the report, so a reader can rerun exactly this.
    let mut command = String::from("cargo xtask bench");
    if let Some(s) = servers {
        args.extend(["--servers".into(), s.to_string()]);
        command.push_str(&format!(" --servers {s}"));
    }
    if step_secs != 2.0 {
        command.push_str(&format!(" --step-secs {step_secs}"));
    }
    if accuracy {
        build_binaries(false, &[])?;
        println!("xtask bench: accuracy comparison (about a minute)");
        let out = Command::new("cargo")
            .current_dir(root())
            .args([
                "test",
                "-p",
                "ntpx-tests",
                "--test",
                "sync",
                "injected_offset_and_drift_are_estimated",
                "--",
                "--nocapture",
            ])
            .output()
            .context("running the accuracy comparison")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "the accuracy comparison failed:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("truth:")
                    || l.starts_with("ntpxd -x:")
                    || l.starts_with("chronyd -x:")
            })
            .collect();
        let file = root().join("target/bench-accuracy.txt");
        std::fs::write(&file, report.join("\n"))
            .with_context(|| format!("writing {}", file.display()))?;
        args.extend(["--accuracy".into(), file.display().to_string()]);
    } else {
        command.push_str(" --no-accuracy");
    }
    args.extend(["--command".into(), command.clone()]);
    status(
        Command::new(root().join("target/release/ntpx-bench"))
            .current_dir(root())
            .args(&args),
    )?;
    // The NTS comparison (its own section of docs/benchmarks.md), with the whole run.
    if servers.is_none() {
        println!("xtask bench: NTS servers (a few minutes)");
        status(
            Command::new(root().join("target/release/ntpx-bench"))
                .current_dir(root())
                .args(["--step-secs", &step_secs.to_string()])
                .args(["--markdown", "docs/benchmarks.md", "--command", &command])
                .arg("nts"),
        )?;
    }
    Ok(())
}
