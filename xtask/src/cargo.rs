//! Running commands, and cargo in the workspace with the project's own tools on `PATH`;
//! the `build` task.

use anyhow::{Context, Result, bail};
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

/// Cargo arguments selecting the userspace binaries: `ntpxd` and `ntpx-xdp-pass` from
/// `ntp-user`, `ntpxc` from its own crate.
const BINARIES: [&str; 5] = ["-p", "ntp-user", "--bins", "-p", "ntpxc"];

/// Builds the release binaries (the eBPF object embedded in `ntpxd`) and says where they are.
pub(crate) fn build() -> Result<()> {
    crate::setup::run()?;
    build_binaries(true, &[])?;
    println!(
        "Built {}",
        root()
            .join("target/release/{ntpxd,ntpxc,ntpx-xdp-pass}")
            .display()
    );
    Ok(())
}

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs `cmd`, failing unless it exits successfully.
pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// Whether `cmd` runs and exits successfully; its output is discarded.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Runs cargo with `args` in the workspace root.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    status(Command::new("cargo").current_dir(root()).args(args))
}

/// Builds the userspace binaries into `target/release` or `target/debug`, together with
/// whatever `extra` cargo arguments select.
pub(crate) fn build_binaries(release: bool, extra: &[&str]) -> Result<()> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend(BINARIES);
    args.extend(extra);
    cargo(&args)
}

/// A `cargo +nightly` command in `dir` that finds bpf-linker and cargo-fuzz in `.tools`.
pub(crate) fn nightly_cargo(dir: &Path) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .arg("+nightly")
        .env("PATH", tools_path()?)
        // cargo xtask runs on stable: a RUSTUP_TOOLCHAIN naming it must not pull the
        // nightly build's own cargo and rustc calls back onto stable.
        .env_remove("RUSTUP_TOOLCHAIN");
    Ok(cmd)
}

/// `PATH` with the tools `cargo xtask` installs into `.tools` ahead of the system's.
fn tools_path() -> Result<OsString> {
    let tools = root().join(".tools");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools.join("bpf-linker/bin"), tools.join("cargo-fuzz/bin")];
    paths.extend(std::env::split_paths(&path));
    Ok(std::env::join_paths(paths)?)
}
