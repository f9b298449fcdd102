//! `refclock SOCK PATH`: a Unix datagram socket ntpxd creates, to which a writer such as
//! gpsd sends samples in chrony's SOCK format.

use anyhow::{Context, Result};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use tokio::net::UnixDatagram;

/// Creates the socket at `path`, replacing a stale socket left there (never another
/// kind of file).
pub fn open(path: &Path) -> Result<UnixDatagram> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    UnixDatagram::bind(path).with_context(|| format!("creating SOCK socket {}", path.display()))
}
