//! The `install` task: release binaries, the systemd unit, a default configuration and
//! the state directory under an installation root.

use crate::cargo::{build_binaries, root};
use anyhow::{Context, Result};
use std::{os::unix::fs::PermissionsExt, path::Path};

/// Builds the release binaries and installs everything under `dest`.
pub(crate) fn run(dest: &Path) -> Result<()> {
    crate::setup::run()?;
    build_binaries(true, &[])?;
    for line in install(dest, &root().join("target/release"), &root())? {
        println!("installed {line}");
    }
    println!("{}", service_user(dest)?);
    println!("enable with: systemctl daemon-reload && systemctl enable --now ntpxd");
    Ok(())
}

/// Copies the binaries from `bins` and the service files from the repository `repo`
/// under `dest`; returns what was installed. An existing configuration is kept.
fn install(dest: &Path, bins: &Path, repo: &Path) -> Result<Vec<String>> {
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
    for unit in ["ntpxd.service", "ntpx-wait.service"] {
        put(
            &repo.join("dist").join(unit),
            &format!("lib/systemd/system/{unit}"),
            0o644,
            false,
        )?;
    }
    put(&repo.join("dist/ntpx.conf"), "etc/ntpx.conf", 0o644, true)?;
    put(
        &repo.join("README.md"),
        "usr/share/doc/ntpx/README.md",
        0o644,
        false,
    )?;
    // timedatectl reports "NTP service: active" for the units listed here.
    let units = dest.join("usr/lib/systemd/ntp-units.d");
    std::fs::create_dir_all(&units).with_context(|| format!("creating {}", units.display()))?;
    std::fs::write(units.join("60-ntpx.list"), "ntpxd.service\n")?;
    done.push(units.join("60-ntpx.list").display().to_string());
    let state = dest.join("var/lib/ntpx");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750))?;
    done.push(state.display().to_string());
    Ok(done)
}

/// The service user: created on a real install (`dest` = /), given the state directory;
/// under a staging root only said what to do.
fn service_user(dest: &Path) -> Result<String> {
    let state = dest.join("var/lib/ntpx");
    let exists = || {
        std::process::Command::new("id")
            .args(["-u", SERVICE_USER])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if dest != Path::new("/") {
        return Ok(format!(
            "on the target: useradd --system --home-dir /var/lib/ntpx --shell /usr/sbin/nologin {SERVICE_USER} && chown {SERVICE_USER}: /var/lib/ntpx"
        ));
    }
    if !exists() {
        crate::cargo::status(std::process::Command::new("useradd").args([
            "--system",
            "--home-dir",
            "/var/lib/ntpx",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ]))
        .context("creating the service user")?;
    }
    crate::cargo::status(
        std::process::Command::new("chown")
            .arg(format!("{SERVICE_USER}:"))
            .arg(&state),
    )
    .context("giving the state directory to the service user")?;
    Ok(format!("user {SERVICE_USER}, owner of {}", state.display()))
}

/// The user the shipped configuration runs the daemon as.
const SERVICE_USER: &str = "ntpx";

#[cfg(test)]
mod tests {
    use super::install;
    use crate::cargo::root;

    #[test]
    fn install_lays_out_a_root_and_keeps_an_existing_configuration() {
        let bins = root().join("target/debug");
        for bin in ["ntpxd", "ntpxc"] {
            assert!(
                bins.join(bin).exists(),
                "build the binaries first (cargo build -p ntp-user --bins -p ntpxc)"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path();
        let done = install(dest, &bins, &root()).unwrap();
        assert_eq!(done.len(), 9, "{done:?}");
        for f in [
            "usr/sbin/ntpxd",
            "usr/bin/ntpxc",
            "lib/systemd/system/ntpxd.service",
            "lib/systemd/system/ntpx-wait.service",
            "etc/ntpx.conf",
        ] {
            assert!(dest.join(f).is_file(), "{f} missing");
        }
        assert_eq!(
            std::fs::read_to_string(dest.join("usr/lib/systemd/ntp-units.d/60-ntpx.list")).unwrap(),
            "ntpxd.service\n"
        );
        // The shipped configuration parses, and runs the daemon as the service user.
        let conf = ntp_proto::config::parse_str(
            &std::fs::read_to_string(dest.join("etc/ntpx.conf")).unwrap(),
            &dest.join("etc/ntpx.conf"),
        )
        .unwrap();
        assert_eq!(conf.user.as_deref(), Some(super::SERVICE_USER));
        // Under a staging root the user is only named, never created.
        assert!(
            super::service_user(dest)
                .unwrap()
                .starts_with("on the target: useradd")
        );
        std::fs::write(dest.join("etc/ntpx.conf"), "local stratum 3\n").unwrap();
        let again = install(dest, &bins, &root()).unwrap();
        assert!(again.iter().any(|l| l.contains("kept the existing file")));
        assert_eq!(
            std::fs::read_to_string(dest.join("etc/ntpx.conf")).unwrap(),
            "local stratum 3\n"
        );
    }
}
