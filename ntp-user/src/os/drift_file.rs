//! Reading and writing the driftfile (its format is `ntp_proto::drift`).

use super::atomic_file::write_atomically;
use anyhow::{Context, Result};
use ntp_proto::drift::{self, Drift};
use std::path::Path;

/// Reads `path`; a missing or unreadable file gives `None`.
pub fn read(path: &Path) -> Option<Drift> {
    std::fs::read_to_string(path)
        .ok()
        .as_deref()
        .and_then(drift::parse)
}

/// Writes `path` atomically.
pub fn write(path: &Path, d: &Drift) -> Result<()> {
    write_atomically(path, drift::format(d).as_bytes())
        .with_context(|| format!("writing the driftfile {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_atomically_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let p = dir.join("drift");
        let d = Drift {
            freq_ppm: 40.0,
            skew_ppm: 0.5,
        };
        write(&p, &d).unwrap();
        assert_eq!(read(&p), Some(d));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        drop(tmp);
        assert_eq!(read(&p), None);
    }
}
