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
        let again = install(dest, &bins, &root()).unwrap();
        assert!(again.iter().any(|l| l.contains("kept the existing file")));
        assert_eq!(
            std::fs::read_to_string(dest.join("etc/ntpx.conf")).unwrap(),
            "local stratum 3\n"
        );
    }
}
