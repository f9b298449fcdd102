//! The `setup` task: rust-src for nightly, bpf-linker built against nightly's LLVM, and the
//! Debian packages the tests and the demo run; for `cargo xtask test` alone, ntpd-rs built
//! and Debian's gpsd unpacked (`ntpd_rs`, `gpsd`).

use crate::cargo::{root, status, succeeds};
use anyhow::{Context, Result, bail};
use ntpx_tests::is_root;
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

/// Installs what is missing; does nothing when everything is there.
pub(crate) fn run() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is the nightly toolchain installed?)")?;
    if !String::from_utf8_lossy(&installed.stdout).contains("rust-src") {
        println!("xtask setup: adding rust-src to the nightly toolchain");
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let tools = root().join(".tools/bpf-linker");
    let linker = tools.join("bin/bpf-linker");
    if !succeeds(Command::new(&linker).arg("--version")) {
        build_bpf_linker(&tools)?;
    }
    let missing: Vec<&str> = [
        ("ntpdig", "ntpsec-ntpdig"),
        ("chronyd", "chrony"),
        ("ip", "iproute2"),
        // The benchmark's network turns GRO on and reads veth counters.
        ("ethtool", "ethtool"),
    ]
    .iter()
    .filter(|(bin, _)| !succeeds(Command::new("sh").args(["-c", &format!("command -v {bin}")])))
    .map(|(_, pkg)| *pkg)
    .collect();
    if !missing.is_empty() {
        install_debian(&missing)?;
    }
    Ok(())
}

/// ntpd-rs's version: the `ntpd` crate, built once into .tools/ntpd-rs.
const NTPD_RS_VERSION: &str = "1.9.0";

/// ntpd-rs's daemon, built into .tools/ntpd-rs from crates.io if missing (about two
/// minutes, once): the benchmark compares with it and a test runs it as an NTS client.
pub(crate) fn ntpd_rs() -> Result<PathBuf> {
    let tools = root().join(".tools/ntpd-rs");
    let daemon = tools.join("bin/ntp-daemon");
    if !succeeds(Command::new(&daemon).arg("--version")) {
        println!(
            "xtask setup: building ntpd-rs {NTPD_RS_VERSION} into {} (minutes, once)",
            tools.display()
        );
        status(
            Command::new("cargo")
                .args([
                    "install",
                    "ntpd",
                    "--version",
                    NTPD_RS_VERSION,
                    "--locked",
                    "--root",
                ])
                .arg(&tools),
        )?;
    }
    Ok(daemon)
}

/// Debian's gpsd and the libraries it links that a minimal system may lack, unpacked
/// (not installed) into .tools/gpsd: installing the package would pull a systemd and
/// udev upgrade into the machine, and the test needs only the daemon binary.
const GPSD_PACKAGES: [&str; 5] = [
    "gpsd",
    "libgps28",
    "libbluetooth3",
    "libusb-1.0-0",
    "libdbus-1-3",
];

/// The directory of the unpacked libraries (`usr/lib/<multiarch triplet>`).
fn gpsd_libs(tools: &Path) -> PathBuf {
    ntpx_tests::unpacked_libs(tools).unwrap_or_else(|| tools.join("usr/lib/x86_64-linux-gnu"))
}

/// Downloads the packages into `debs`.
fn download(debs: &Path) -> Result<()> {
    status(
        Command::new("apt-get")
            .arg("download")
            .args(GPSD_PACKAGES)
            .current_dir(debs),
    )
}

/// gpsd's daemon unpacked into .tools/gpsd if missing (seconds, once): a test feeds it
/// NMEA and reads its SHM segment beside chronyd. Returns the root to run it from
/// (`usr/sbin/gpsd`, its libraries in `usr/lib/<triplet>`).
pub(crate) fn gpsd() -> Result<PathBuf> {
    let tools = root().join(".tools/gpsd");
    let daemon = tools.join("usr/sbin/gpsd");
    let runs = || {
        Command::new(&daemon)
            .arg("-V")
            .env("LD_LIBRARY_PATH", gpsd_libs(&tools))
            .output()
    };
    if runs().is_ok_and(|o| o.status.success()) {
        return Ok(tools);
    }
    println!(
        "xtask setup: unpacking Debian's gpsd into {}",
        tools.display()
    );
    // Unpacked afresh: a library left from another version must not be mixed in.
    let _ = std::fs::remove_dir_all(&tools);
    let debs = tools.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    // apt-get download drops privileges to _apt where it can (a warning where that user
    // cannot write here; it downloads as root then). Stale lists: update and retry.
    download(&debs).or_else(|_| {
        if !is_root() {
            bail!("apt-get download of gpsd failed; run `cargo xtask setup` as root");
        }
        status(Command::new("apt-get").arg("update").arg("-q"))?;
        download(&debs)
    })?;
    for deb in std::fs::read_dir(&debs)?.filter_map(Result::ok) {
        status(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb.path())
                .arg(&tools),
        )?;
    }
    let run = runs().with_context(|| format!("running {}", daemon.display()))?;
    if !run.status.success() {
        bail!(
            "gpsd unpacked into {} does not run: {}",
            tools.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    Ok(tools)
}

/// bpf-linker must use exactly the LLVM of the nightly rustc that emits the bitcode:
/// link it against the libLLVM shipped inside that toolchain.
fn build_bpf_linker(tools: &Path) -> Result<()> {
    println!("xtask setup: building bpf-linker 0.13.0 against nightly's LLVM (about a minute)");
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()?;
    let lib = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM-") && Path::new(n).extension().is_some_and(|e| e == "so"))
        .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
    let major = llvm
        .trim_start_matches("libLLVM-")
        .split(['-', '.'])
        .next()
        .unwrap_or_default()
        .to_string();
    let dylib = llvm
        .trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_string();
    let flags = format!(
        "-L {lib} -l dylib={dylib} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    status(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--locked",
                "--root",
            ])
            .arg(tools)
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major},no-llvm-linking"))
            .env("RUSTFLAGS", flags),
    )
}

/// Installs Debian packages with apt-get; needs root.
fn install_debian(pkgs: &[&str]) -> Result<()> {
    if !is_root() {
        bail!("missing Debian packages {pkgs:?}: run `cargo xtask setup` as root or install them");
    }
    println!("xtask setup: installing {pkgs:?}");
    // Installing chrony must not start a system chronyd that steers this machine's clock.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = status(Command::new("apt-get").arg("update").arg("-q")).and_then(|()| {
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}
