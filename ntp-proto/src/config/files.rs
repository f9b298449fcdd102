//! Which files `include` patterns and `confdir`/`sourcedir` directories name, decided over
//! a listing the caller provides: the parser walks no directories itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the parser needs of a file system.
pub trait ConfigFiles {
    /// The bytes of the file at `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// The entries of `dir` as (name, is a regular file); `None` if it cannot be read.
    fn list(&self, dir: &Path) -> Option<Vec<(String, bool)>>;
}

/// Shell-style match of `name` against `pattern` (`*` any run, `?` one character).
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The files matching `pattern` (wildcards in the last component only), sorted; a
/// pattern without wildcards names one file, which must exist.
pub fn glob(fs: &(impl ConfigFiles + ?Sized), pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Like chrony, a pattern that matches nothing (or a missing directory) includes nothing.
    let mut out: Vec<PathBuf> = fs
        .list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|(entry, _)| matches(&name, entry))
        .map(|(entry, _)| dir.join(entry))
        .collect();
    out.sort();
    out
}

/// `*.EXT` files of `dirs`, sorted by file name; of files with the same name in several
/// directories only the first directory's is used (chrony's confdir/sourcedir rule).
pub fn dir_files(fs: &(impl ConfigFiles + ?Sized), dirs: &[&str], ext: &str) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    let suffix = format!(".{ext}");
    for dir in dirs {
        for (name, is_file) in fs.list(Path::new(dir)).unwrap_or_default() {
            if name.ends_with(&suffix) && is_file {
                let path = Path::new(dir).join(&name);
                by_name.entry(name).or_insert(path);
            }
        }
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Directories and their entries, in memory.
    struct Listing(HashMap<PathBuf, Vec<(String, bool)>>);

    impl ConfigFiles for Listing {
        fn read(&self, _: &Path) -> std::io::Result<Vec<u8>> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn list(&self, dir: &Path) -> Option<Vec<(String, bool)>> {
            self.0.get(dir).cloned()
        }
    }

    #[test]
    fn wildcards() {
        assert!(matches("*.conf", "a.conf"));
        assert!(matches("*.conf", ".conf"));
        assert!(!matches("*.conf", "a.conf.bak"));
        assert!(matches("ntp?.conf", "ntp1.conf"));
        assert!(!matches("ntp?.conf", "ntp12.conf"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "aXXbYc"));
        assert!(!matches("a*b*c", "aXXbY"));
    }

    #[test]
    fn first_directory_wins_and_only_files_count() {
        let entries = |v: &[(&str, bool)]| v.iter().map(|(n, f)| (n.to_string(), *f)).collect();
        let fs = Listing(HashMap::from([
            (
                PathBuf::from("/a"),
                entries(&[("2.conf", true), ("1.conf", true), ("d.conf", false)]),
            ),
            (
                PathBuf::from("/b"),
                entries(&[("1.conf", true), ("3.conf", true), ("x.sources", true)]),
            ),
        ]));
        assert_eq!(
            dir_files(&fs, &["/a", "/b", "/missing"], "conf"),
            [
                PathBuf::from("/a/1.conf"),
                PathBuf::from("/a/2.conf"),
                PathBuf::from("/b/3.conf")
            ]
        );
        assert_eq!(
            glob(&fs, Path::new("/b/*.conf")),
            [PathBuf::from("/b/1.conf"), PathBuf::from("/b/3.conf")]
        );
        assert!(glob(&fs, Path::new("/missing/*.conf")).is_empty());
        assert_eq!(
            glob(&fs, Path::new("/nowhere/2.conf")),
            [PathBuf::from("/nowhere/2.conf")]
        );
    }
}
