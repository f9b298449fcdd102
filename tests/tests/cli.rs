//! The binaries' command lines and their errors for bad input (no privileges needed).

use ntpx_tests::{TempDir, bin};
use std::process::Command;

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ntpxd_rejects_a_malformed_config_line_with_file_line_and_reason() {
    let dir = TempDir::new("cli").unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "allow all\nlocal stratum x\n").unwrap();
    let (ok, _, err) = run(Command::new(bin("ntpxd")).arg("-x").arg("-f").arg(&conf));
    assert!(!ok, "ntpxd accepted a bad config");
    let expect = format!("{}:2:", conf.display());
    assert!(err.contains(&expect), "no {expect:?} in: {err}");
    assert!(err.contains("\"x\""), "bad token not named: {err}");
}

#[test]
fn ntpxd_names_a_missing_config_file() {
    let (ok, _, err) = run(Command::new(bin("ntpxd")).args(["-x", "-f", "/nonexistent/ntpx.conf"]));
    assert!(!ok);
    assert!(err.contains("/nonexistent/ntpx.conf"), "{err}");
}

#[test]
fn ntpxd_help_explains_the_options() {
    let (ok, out, _) = run(Command::new(bin("ntpxd")).arg("--help"));
    assert!(ok);
    for opt in [
        "-f, --config",
        "-x",
        "--no-xdp",
        "-i, --interface",
        "chrony.conf",
    ] {
        assert!(out.contains(opt), "--help lacks {opt:?}:\n{out}");
    }
}

#[test]
fn ntpxc_says_when_the_daemon_is_not_there() {
    let (ok, _, err) =
        run(Command::new(bin("ntpxc")).args(["-h", "/nonexistent/ntpxd.sock", "serverstats"]));
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/ntpxd.sock") && err.contains("is it running"),
        "{err}"
    );
}

#[test]
fn ntpxd_p_prints_the_effective_configuration_and_starts_nothing() {
    let dir = TempDir::new("cli").unwrap();
    let conf = dir.path().join("ntpx.conf");
    std::fs::write(&conf, "pool pool.example iburst\nmakestep 1.0 3\ndscp 46\nallow 192.168.0.0/16\nlocal stratum 3\n").unwrap();
    let (ok, out, err) = run(Command::new(bin("ntpxd")).arg("-p").arg("-f").arg(&conf));
    assert!(ok, "{err}");
    for line in [
        "pool pool.example minpoll 6 maxpoll 10 iburst maxsources 4",
        "makestep 1 3",
        "allow 192.168.0.0/16",
        "local stratum 3 distance 1",
        "port 123",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing:\n{out}");
    }
    assert!(
        err.contains("ntpx.conf:3: directive \"dscp\" is not supported yet"),
        "{err}"
    );
    std::fs::write(&conf, "local stratum 3\nmakestep 1\n").unwrap();
    let (ok, _, err) = run(Command::new(bin("ntpxd")).arg("-p").arg("-f").arg(&conf));
    assert!(!ok && err.contains("ntpx.conf:2:"), "{err}");
}

#[test]
fn ntpxc_v_prints_its_version() {
    let (ok, out, _) = run(Command::new(bin("ntpxc")).arg("-v"));
    assert!(ok && out.starts_with("ntpxc "), "{out}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/ntpxd.service"
    ))
    .unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("ExecStart=/usr/sbin/ntpxd -f /etc/ntpx.conf")
    );
    // Verify the same unit with ExecStart pointing at the binary just built (the real path
    // only exists once installed).
    let dir = TempDir::new("unit").unwrap();
    let copy = dir.path().join("ntpxd.service");
    let built = bin("ntpxd");
    std::fs::write(
        &copy,
        unit.replace("/usr/sbin/ntpxd", &built.to_string_lossy()),
    )
    .unwrap();
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    assert!(ok, "systemd-analyze verify failed:\n{out}{err}");
    // An early-boot time service: before time-sync.target, not after the network.
    assert!(unit.contains("Before=time-sync.target") && unit.contains("Wants=time-sync.target"));
    assert!(!unit.contains("network-online"), "no wait for the network");
}

/// ntpx-wait.service (chrony-wait's counterpart) holds time-sync.target until ntpxc
/// waitsync succeeds, and verifies with ntpxc where the unit names it.
#[test]
fn the_wait_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/ntpx-wait.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ntpxc -h 127.0.0.1,::1 waitsync 0 0.1 0.0 1"));
    assert!(unit.contains("Before=time-sync.target") && unit.contains("Requires=ntpxd.service"));
    // Verified beside the daemon's unit, which it requires, both pointing at the binaries
    // just built.
    let dir = TempDir::new("unit").unwrap();
    let daemon = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/ntpxd.service"
    ))
    .unwrap();
    std::fs::write(
        dir.path().join("ntpxd.service"),
        daemon.replace("/usr/sbin/ntpxd", &bin("ntpxd").to_string_lossy()),
    )
    .unwrap();
    let copy = dir.path().join("ntpx-wait.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/ntpxc", &bin("ntpxc").to_string_lossy()),
    )
    .unwrap();
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    assert!(ok, "systemd-analyze verify failed:\n{out}{err}");
}

#[test]
fn the_default_configuration_loads_without_warnings() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/ntpx.conf");
    let (ok, out, err) = run(Command::new(bin("ntpxd")).args(["-p", "-f", conf]));
    assert!(ok && err.is_empty(), "{err}");
    assert!(out.contains("pool pool.ntp.org"), "{out}");
}
