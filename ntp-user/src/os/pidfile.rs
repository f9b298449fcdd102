//! The pidfile: refuses a second daemon, written atomically, removed on exit.

use super::atomic_file::write_atomically;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// A pidfile held for the daemon's life.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id to `path`, unless another live ntpxd's is there.
    pub fn create(path: &Path) -> Result<Self> {
        if let Ok(old) = std::fs::read_to_string(path)
            && let Ok(pid) = old.trim().parse::<i32>()
            && pid != std::process::id() as i32
            && Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "ntpxd")
        {
            bail!(
                "another ntpxd is already running (pid {pid}, pidfile {})",
                path.display()
            );
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        }
        write_atomically(path, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
