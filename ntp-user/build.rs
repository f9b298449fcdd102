//! Builds the XDP objects from `ntp-ebpf` with the nightly toolchain and bpf-linker
//! (through aya-build), so `ntpxd` embeds the serving object `ntpx`. With the `bench`
//! feature the benchmark's object `ntpx-bench` is built as well, for the bench crate.
//! `cargo xtask setup` installs the toolchain pieces this needs.

use anyhow::{Context, Result, bail};
use std::{env, path::PathBuf};

fn main() -> Result<()> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .context("ntp-user lives in the workspace root")?
        .to_path_buf();
    let ebpf_dir = root.join("ntp-ebpf");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("ntp-common").display()
    );

    // bpf-linker as `cargo xtask setup` builds it, before whatever PATH has.
    let linker_dir = root.join(".tools/bpf-linker/bin");
    println!("cargo:rerun-if-changed={}", linker_dir.display());
    let mut paths = vec![linker_dir.clone()];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    if !paths.iter().any(|d| d.join("bpf-linker").exists()) {
        bail!(
            "bpf-linker not found in {} or PATH: run `cargo xtask setup` first",
            linker_dir.display()
        );
    }
    let path = env::join_paths(paths).context("PATH entries contain no separator")?;
    // SAFETY: a build script is one thread; nothing reads the environment concurrently.
    unsafe {
        env::set_var("PATH", path);
        // The outer build's wrappers, flags and target must not leak into the eBPF build
        // (aya-build sets the eBPF flags itself).
        for var in [
            "RUSTC_WRAPPER",
            "RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "CARGO_ENCODED_RUSTFLAGS_HOST",
        ] {
            env::remove_var(var);
        }
    }

    let bench = env::var_os("CARGO_FEATURE_BENCH").is_some();
    let features: &[&str] = if bench { &["bench"] } else { &[] };
    let root_dir = ebpf_dir
        .to_str()
        .context("the ntp-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ntp-ebpf",
            root_dir,
            features,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building ntp-ebpf (run `cargo xtask setup` if the nightly toolchain, rust-src or bpf-linker is missing)",
    )
}
