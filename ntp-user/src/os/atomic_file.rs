//! Files replaced whole, so a crash leaves either the old content or the new.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `data` to a temporary file beside `path`, syncs it and renames it into place,
/// so a crash leaves either the old file or the new one.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
