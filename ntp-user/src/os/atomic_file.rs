//! Files replaced whole, so a crash leaves either the old content or the new, and so a
//! directory another account can write to cannot redirect the write (the class of
//! chrony's CVE-2020-14367): the temporary file is created exclusively, never through a
//! symbolic link, and the directory is synced after the rename.

use anyhow::{Context, Result};
use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

/// Tells temporary files of one process apart.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Writes `data` (mode `0644`) to a new temporary file beside `path`, syncs it, renames
/// it into place and syncs the directory.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    write_atomically_mode(path, data, 0o644)
}

/// As [`write_atomically`], the file created with permissions `mode` (0o600 for
/// secrets: never readable by others, not even for a moment).
pub fn write_atomically_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing the directory {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        // Someone who can write the directory points the next temporary name elsewhere:
        // exclusive creation refuses it rather than writing through it.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let p = dir.path().join("drift");
        let next = COUNTER.load(Ordering::Relaxed);
        for n in next..next + 64 {
            let tmp = p.with_extension(format!("tmp.{}.{n}", std::process::id()));
            std::os::unix::fs::symlink(&victim, tmp).unwrap();
        }
        assert!(write_atomically(&p, b"evil").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
