//! `cargo xtask`: set up the toolchain, build, run the demo, run every test.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ntpx_tests::{Ntpxd, SeedTopology, wait_until};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

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
    Test,
    /// Benchmark ntpx (XDP and --no-xdp) against chronyd -x, ntpd-rs and a bare XDP
    /// bounce program under the same load, plus the accuracy comparison; rewrite the
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
        Task::Setup => setup(),
        Task::Build => {
            setup()?;
            cargo(&["build", "--release", "-p", "ntp-user", "--bins"])?;
            println!(
                "Built {}",
                root()
                    .join("target/release/{ntpxd,ntpxc,ntpx-xdp-pass}")
                    .display()
            );
            Ok(())
        }
        Task::Demo => {
            setup()?;
            cargo(&["build", "-p", "ntp-user", "--bins"])?;
            demo()
        }
        Task::Test => test(),
        Task::Bench {
            servers,
            step_secs,
            no_accuracy,
        } => bench(servers.as_deref(), step_secs, !no_accuracy),
        Task::Fuzz { seconds } => {
            setup()?;
            fuzz(&[format!("-max_total_time={seconds}")])
        }
        Task::Install { root: dest } => {
            setup()?;
            cargo(&["build", "--release", "-p", "ntp-user", "--bins"])?;
            for line in install(&dest, &root().join("target/release"), &root())? {
                println!("installed {line}");
            }
            println!("enable with: systemctl daemon-reload && systemctl enable --now ntpxd");
            Ok(())
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn cargo(args: &[&str]) -> Result<()> {
    status(Command::new("cargo").current_dir(root()).args(args))
}

/// Copies the binaries from `bins` and the service files from the repository `repo`
/// under `dest`; returns what was installed. An existing configuration is kept.
fn install(dest: &Path, bins: &Path, repo: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mut done = Vec::new();
    let mut put = |from: &Path, rel: &str, mode: u32, keep: bool| -> Result<()> {
        let to = dest.join(rel);
        if keep && to.exists() {
            done.push(format!("{} (kept the existing file)", to.display()));
            return Ok(());
        }
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Copy then rename: a running daemon's binary is replaced, not overwritten.
        let tmp = to.with_extension("ntpx-install");
        std::fs::copy(from, &tmp)
            .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &to).with_context(|| format!("installing {}", to.display()))?;
        done.push(to.display().to_string());
        Ok(())
    };
    put(&bins.join("ntpxd"), "usr/sbin/ntpxd", 0o755, false)?;
    put(&bins.join("ntpxc"), "usr/bin/ntpxc", 0o755, false)?;
    put(
        &bins.join("ntpx-xdp-pass"),
        "usr/lib/ntpx/ntpx-xdp-pass",
        0o755,
        false,
    )?;
    put(
        &repo.join("dist/ntpxd.service"),
        "lib/systemd/system/ntpxd.service",
        0o644,
        false,
    )?;
    put(&repo.join("dist/ntpx.conf"), "etc/ntpx.conf", 0o644, true)?;
    put(
        &repo.join("README.md"),
        "usr/share/doc/ntpx/README.md",
        0o644,
        false,
    )?;
    let state = dest.join("var/lib/ntpx");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750))?;
    done.push(state.display().to_string());
    Ok(done)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn setup() -> Result<()> {
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
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
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
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = status(Command::new("apt-get").arg("update").arg("-q")).and_then(|_| {
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

fn test() -> Result<()> {
    if !is_root() && std::env::var("NTPX_SKIP_PRIVILEGED").as_deref() != Ok("1") {
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
    setup()?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    clippy_ebpf()?;
    cargo(&["build", "-p", "ntp-user", "--bins"])?;
    let (passed, failed) = run_tests()?;
    // A short, deterministic smoke run of each fuzz target (`cargo xtask fuzz` fuzzes for real).
    fuzz(&["-runs=20000".into(), "-seed=1".into()])?;
    // The closing line CI reads.
    println!("\nntpx: {passed} passed, {failed} failed");
    Ok(())
}

/// Runs `cargo test`, echoing its output; returns the (passed, failed) counts over all
/// test binaries (cargo's own last line is that of the doc tests).
fn run_tests() -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("cargo")
        .current_dir(root())
        .args(["test", "--", "--nocapture"])
        .env("NTPX_BIN_DIR", root().join("target/debug"))
        .stdout(std::process::Stdio::piped())
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

/// The fuzz targets (fuzz/fuzz_targets).
const FUZZ_TARGETS: &[&str] = &["packet", "config", "control"];

/// Runs every fuzz target with libFuzzer `args`, installing cargo-fuzz when missing.
fn fuzz(args: &[String]) -> Result<()> {
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
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools.join("bin"), root().join(".tools/bpf-linker/bin")];
    paths.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(paths)?;
    for t in FUZZ_TARGETS {
        println!("xtask: fuzzing {t}");
        status(
            Command::new("cargo")
                .current_dir(root().join("fuzz"))
                .args(["+nightly", "fuzz", "run", t, "--"])
                .args(args)
                .env("PATH", &path)
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    Ok(())
}

/// ntpd-rs's version: the `ntpd` crate, built once into .tools/ntpd-rs.
const NTPD_RS_VERSION: &str = "1.9.0";

fn bench(servers: Option<&str>, step_secs: f64, accuracy: bool) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask bench needs root (namespaces, XDP, BPF_PROG_TEST_RUN)");
    }
    setup()?;
    let tools = root().join(".tools/ntpd-rs");
    let daemon = tools.join("bin/ntp-daemon");
    if !succeeds(Command::new(&daemon).arg("--version")) {
        println!(
            "xtask bench: building ntpd-rs {NTPD_RS_VERSION} into {} (minutes, once)",
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
    cargo(&[
        "build",
        "--release",
        "-p",
        "ntp-user",
        "--bins",
        "-p",
        "ntpx-bench",
    ])?;
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
    let mut command = String::from("cargo xtask bench");
    if let Some(s) = servers {
        args.extend(["--servers".into(), s.to_string()]);
        command.push_str(&format!(" --servers {s}"));
    }
    if step_secs != 2.0 {
        command.push_str(&format!(" --step-secs {step_secs}"));
    }
    if accuracy {
        cargo(&["build", "-p", "ntp-user", "--bins"])?;
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
    args.extend(["--command".into(), command]);
    status(
        Command::new(root().join("target/release/ntpx-bench"))
            .current_dir(root())
            .args(&args),
    )
}

/// The eBPF crate only builds for its own target with nightly, so it gets its own clippy run.
fn clippy_ebpf() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![root().join(".tools/bpf-linker/bin")];
    paths.extend(std::env::split_paths(&path));
    status(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "+nightly",
                "clippy",
                "-p",
                "ntp-ebpf",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(["-Z", "build-std=core", "--target-dir", "target/ebpf-clippy"])
            .args(["--", "-D", "warnings"])
            .env("PATH", std::env::join_paths(paths)?)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}

fn demo() -> Result<()> {
    let bins = root().join("target/debug");
    // SAFETY: single-threaded at this point; the harness reads it to find the binaries.
    unsafe { std::env::set_var("NTPX_BIN_DIR", &bins) };
    if !is_root() {
        bail!("the demo creates network namespaces and loads XDP: run it as root");
    }
    println!(
        "== ntpx demo: the seed's topology in network namespaces on one LAN (198.18.200.0/24)"
    );
    println!(
        "   upstream ntpxd (stratum 2) -> time1, time2: ntpxd stratum 3, XDP fast path -> client ntpxd\n"
    );
    let topo = SeedTopology::new(200)?;
    let ((up, up_if, up_ip), (t1, t1_if, t1_ip), (t2, t2_if, t2_ip)) =
        (&topo.up, &topo.time1, &topo.time2);
    let (cli, dig) = (&topo.client, &topo.dig);
    let fast = "iburst minpoll -2 maxpoll -2";
    let _upstream = Ntpxd::start(up, "local stratum 2\nallow all", &["-i", up_if])?;
    // The seed's server configuration, with the pool replaced by the upstream.
    let server =
        format!("server {up_ip} {fast}\nmakestep 1.0 3\nallow 198.18.0.0/15\nlocal stratum 3");
    let time1 = Ntpxd::start(t1, &server, &["-i", t1_if])?;
    let time2 = Ntpxd::start(t2, &server, &["-i", t2_if])?;
    let client = Ntpxd::start(
        cli,
        &format!("server {t1_ip} {fast}\nserver {t2_ip} {fast}\nport 0"),
        &["--no-xdp"],
    )?;
    wait_until(
        Duration::from_secs(30),
        "the client to select a server",
        || {
            let s = client.sources();
            (s.len() == 2 && s.iter().all(|x| x.stratum == 3)).then(|| client.selected())?
        },
    )?;
    std::thread::sleep(Duration::from_secs(3));
    println!("-- time1 log");
    print!("{}", time1.proc.log());
    println!("\n-- client: ntpxc sources -v");
    print!("{}", client.ntpxc(&["sources", "-v"])?);
    println!("\n-- client: ntpxc tracking");
    print!("{}", client.ntpxc(&["tracking"])?);
    for ip in [t1_ip, t2_ip] {
        println!("\n-- ntpdig {ip} (an independent client)");
        print!("{}", dig.output("ntpdig", &["-t", "2", ip])?);
    }
    println!("\n-- time1: ntpxc serverstats");
    print!("{}", time1.ntpxc(&["serverstats"])?);

    let chosen = client.selected().context("the client lost its selection")?;
    let (stop, other) = if chosen == *t1_ip {
        ("time1", &t2_ip)
    } else {
        ("time2", &t1_ip)
    };
    println!("\n== failover: stopping {stop} ({chosen}), the client's selected server");
    let mut survivor = if chosen == *t1_ip {
        drop(time1);
        time2
    } else {
        drop(time2);
        time1
    };
    let start = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "failover", || {
        client.selected().filter(|s| s == *other)
    })?;
    println!(
        "client selected {other} after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    print!("{}", client.ntpxc(&["sources"])?);
    println!("\n-- ntpdig {other}");
    print!("{}", dig.output("ntpdig", &["-t", "2", other])?);
    println!("\n-- {other}: ntpxc xdpstats (kernel counters)");
    print!("{}", survivor.ntpxc(&["xdpstats"])?);
    survivor.proc.signal(15);
    let _ = survivor.proc.wait_exit(Duration::from_secs(5));
    println!("\n== cleaning up: stopping the daemons, removing the namespaces");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{install, parse_result, root};

    #[test]
    fn install_lays_out_a_root_and_keeps_an_existing_configuration() {
        let bins = root().join("target/debug");
        assert!(
            bins.join("ntpxd").exists(),
            "build the binaries first (cargo build -p ntp-user)"
        );
        let dest = std::env::temp_dir().join(format!("ntpx-install-{}", std::process::id()));
        let done = install(&dest, &bins, &root()).unwrap();
        assert_eq!(done.len(), 7, "{done:?}");
        for f in [
            "usr/sbin/ntpxd",
            "usr/bin/ntpxc",
            "lib/systemd/system/ntpxd.service",
            "etc/ntpx.conf",
        ] {
            assert!(dest.join(f).is_file(), "{f} missing");
        }
        std::fs::write(dest.join("etc/ntpx.conf"), "local stratum 3\n").unwrap();
        let again = install(&dest, &bins, &root()).unwrap();
        assert!(again.iter().any(|l| l.contains("kept the existing file")));
        assert_eq!(
            std::fs::read_to_string(dest.join("etc/ntpx.conf")).unwrap(),
            "local stratum 3\n"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }

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
