//! Finding the files `include` patterns and `confdir`/`sourcedir` directories name.

use std::path::{Path, PathBuf};

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
pub fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Like chrony, a pattern that matches nothing (or a missing directory) includes nothing.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| matches(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// `*.EXT` files of `dirs`, sorted by file name; of files with the same name in several
/// directories only the first directory's is used (chrony's confdir/sourcedir rule).
pub fn dir_files(dirs: &[&str], ext: &str) -> Result<Vec<PathBuf>, String> {
    let mut by_name: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(&format!(".{ext}")) && e.path().is_file() {
                by_name.entry(name).or_insert_with(|| e.path());
            }
        }
    }
    Ok(by_name.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn directories_and_patterns() {
        let root = std::env::temp_dir().join(format!("ntpx-files-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for (d, f) in [
            (&a, "2.conf"),
            (&a, "1.conf"),
            (&b, "1.conf"),
            (&b, "3.conf"),
            (&b, "x.sources"),
            (&a, "skip.txt"),
        ] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let (sa, sb) = (
            a.to_string_lossy().into_owned(),
            b.to_string_lossy().into_owned(),
        );
        let got = dir_files(&[&sa, &sb], "conf").unwrap();
        assert_eq!(got, [a.join("1.conf"), a.join("2.conf"), b.join("3.conf")]);
        assert_eq!(dir_files(&[&sb], "sources").unwrap(), [b.join("x.sources")]);
        assert_eq!(
            glob(&b.join("*.conf")).unwrap(),
            [b.join("1.conf"), b.join("3.conf")]
        );
        assert!(glob(&root.join("missing/*.conf")).unwrap().is_empty());
        assert_eq!(glob(&a.join("2.conf")).unwrap(), [a.join("2.conf")]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
