//! Builds the XDP object (ntp-ebpf) with the nightly toolchain and bpf-linker, so that
//! `ntpxd` embeds it. `cargo xtask setup` installs what this needs.
//!
//! Set NTPX_EBPF_OBJ to a prebuilt object to skip the nested build.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("ntp-user lives in the workspace root")
        .to_path_buf();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("ntpx.bpf.o");
    println!("cargo:rerun-if-env-changed=NTPX_EBPF_OBJ");

    if let Some(obj) = env::var_os("NTPX_EBPF_OBJ") {
        println!("cargo:rerun-if-changed={}", Path::new(&obj).display());
        copy(Path::new(&obj), &out);
        return;
    }
    for dir in [
        "ntp-ebpf/src",
        "ntp-ebpf/Cargo.toml",
        "ntp-common/src",
        "ntp-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let linker_dir = root.join(".tools/bpf-linker/bin");
    println!(
        "cargo:rerun-if-changed={}",
        linker_dir.join("bpf-linker").display()
    );
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir.clone()];
    paths.extend(env::split_paths(&path));
    let path = env::join_paths(paths).expect("PATH entries contain no separator");
    if !linker_dir.join("bpf-linker").exists() && which("bpf-linker", &path).is_none() {
        panic!(
            "bpf-linker not found in {} or PATH: run `cargo xtask setup` first",
            linker_dir.display()
        );
    }

    let target_dir = root.join("target/ebpf");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .args(["+nightly", "build", "-p", "ntp-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", &path)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-C\x1fdebuginfo=2\x1f-C\x1flink-arg=--btf",
        );
    // The outer build's toolchain, wrappers and flags must not leak into the eBPF build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_ENCODED_RUSTFLAGS_HOST",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running cargo +nightly for ntp-ebpf: {e}"));
    if !output.status.success() {
        panic!(
            "building ntp-ebpf failed (run `cargo xtask setup` if the nightly toolchain, rust-src or bpf-linker is missing):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    copy(
        &target_dir.join("bpfel-unknown-none/release/ntp-ebpf"),
        &out,
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

fn which(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.exists())
}
