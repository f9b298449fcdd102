//! Reading the configuration from the file system: the files `include`, `confdir` and
//! `sourcedir` name are found here and parsed by `ntp_proto::config`.

use ntp_proto::config::{Config, ConfigError, ConfigFiles};
use std::path::Path;

/// The real file system.
pub struct StdFiles;

impl ConfigFiles for StdFiles {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn list(&self, dir: &Path) -> Option<Vec<(String, bool)>> {
        let entries = std::fs::read_dir(dir).ok()?;
        Some(
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, e.path().is_file())
                })
                .collect(),
        )
    }
}

/// Reads and parses the configuration file at `path`, with the files it includes.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    ntp_proto::config::load(&StdFiles, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../ntp-proto/tests/fixtures/chrony-conf/seed.conf");

    #[test]
    fn directories_and_patterns() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
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
        use ntp_proto::config::files::{dir_files, glob};
        let got = dir_files(&StdFiles, &[&sa, &sb], "conf");
        assert_eq!(got, [a.join("1.conf"), a.join("2.conf"), b.join("3.conf")]);
        assert_eq!(
            dir_files(&StdFiles, &[&sb], "sources"),
            [b.join("x.sources")]
        );
        assert_eq!(
            glob(&StdFiles, &b.join("*.conf")),
            [b.join("1.conf"), b.join("3.conf")]
        );
        assert!(glob(&StdFiles, &root.join("missing/*.conf")).is_empty());
        assert_eq!(glob(&StdFiles, &a.join("2.conf")), [a.join("2.conf")]);
    }
    #[test]
    fn load_reads_files_and_reports_unreadable_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();

        let good = dir.join("good.conf");
        let mut bytes =
            b"# caf\xe9 in Latin-1 is fine in a comment\nport 1234 # na\xefve\nrestrict x\n"
                .to_vec();
        bytes.extend_from_slice(SEED.as_bytes());
        std::fs::write(&good, &bytes).unwrap();
        let config = load(&good).unwrap();
        assert_eq!(config.port, 1234);
        assert_eq!(config.local.map(|l| l.stratum), Some(3));
        assert_eq!(config.warnings[0].file, good);
        assert_eq!(config.warnings[0].line, 3);

        let bad = dir.join("bad.conf");
        std::fs::write(&bad, b"port 1\ndriftfile /var/lib/\xff\n").unwrap();
        let err = load(&bad).unwrap_err();
        assert_eq!(
            (err.line, err.message.as_str()),
            (2, "line is not valid UTF-8")
        );

        let missing = dir.join("missing.conf");
        let err = load(&missing).unwrap_err();
        assert_eq!(err.line, 0);
        assert_eq!(err.file, missing);
        assert!(err.message.starts_with("cannot read configuration file: "));
    }

    #[test]
    fn include_confdir_and_sourcedir_load_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["conf.d", "sources.d", "inc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("inc/a.inc"), "allow 10.0.0.0/8\n").unwrap();
        std::fs::write(root.join("conf.d/local.conf"), "local stratum 7\n").unwrap();
        std::fs::write(
            root.join("sources.d/up.sources"),
            "server 198.18.0.1 iburst\npool p.example\n",
        )
        .unwrap();
        let main = root.join("ntpx.conf");
        let r = root.display();
        std::fs::write(
            &main,
            format!(
                "include {r}/inc/*.inc\nconfdir {r}/conf.d\nsourcedir {r}/sources.d\nport 1123\n"
            ),
        )
        .unwrap();
        let c = load(&main).unwrap();
        assert_eq!(c.acl_rules.len(), 1);
        assert_eq!(c.local.map(|l| l.stratum), Some(7));
        assert_eq!(
            c.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["198.18.0.1", "p.example"]
        );
        assert_eq!(c.port, 1123, "parsing resumes in the including file");

        // An error inside an included file names that file and its line.
        std::fs::write(root.join("conf.d/bad.conf"), "\nlocal stratum 99\n").unwrap();
        let e = load(&main).unwrap_err();
        assert_eq!((e.file, e.line), (root.join("conf.d/bad.conf"), 2));
        std::fs::remove_file(root.join("conf.d/bad.conf")).unwrap();

        // Sources files take sources only.
        std::fs::write(root.join("sources.d/bad.sources"), "allow all\n").unwrap();
        let e = load(&main).unwrap_err();
        assert!(e.message.contains("not allowed in a sources file"), "{e}");
        std::fs::remove_file(root.join("sources.d/bad.sources")).unwrap();

        // A file including itself stops at the depth limit.
        let looped = root.join("loop.conf");
        std::fs::write(&looped, format!("include {}\n", looped.display())).unwrap();
        let e = load(&looped).unwrap_err();
        assert!(e.message.contains("include loop"), "{e}");
    }
}
