//! The readers of what lies on disk: keyfile, driftfile, TZif leap seconds, and a
//! configuration with include/confdir/sourcedir over a file system made of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::config::{ConfigFiles, load};
use std::path::Path;

/// Three files cut from the input: the main configuration, an included one, and a
/// sources file.
struct Fs<'a>(Vec<&'a [u8]>);

impl ConfigFiles for Fs<'_> {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let i = match path.to_str() {
            Some("/etc/ntpx.conf") => 0,
            Some("/etc/ntpx.d/a.conf") => 1,
            Some("/etc/sources.d/b.sources") => 2,
            _ => return Err(std::io::ErrorKind::NotFound.into()),
        };
        self.0
            .get(i)
            .map(|b| b.to_vec())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn list(&self, dir: &Path) -> Option<Vec<(String, bool)>> {
        match dir.to_str()? {
            "/etc/ntpx.d" => Some(vec![("a.conf".into(), true), ("sub".into(), false)]),
            "/etc/sources.d" => Some(vec![("b.sources".into(), true)]),
            _ => None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = ntp_proto::keys::parse(&text, Path::new("/etc/ntpx.keys"));
    if let Some(d) = ntp_proto::drift::parse(&text) {
        assert!(d.freq_ppm.is_finite() && d.skew_ppm.is_finite());
        // What is written reads back the same.
        let again = ntp_proto::drift::parse(&ntp_proto::drift::format(&d)).expect("round trip");
        assert!((again.freq_ppm - d.freq_ppm).abs() <= 1e-3 * d.freq_ppm.abs().max(1.0));
    }
    if let Ok(leaps) = ntp_proto::leaptz::parse(data) {
        let _ = ntp_proto::leaptz::tai_offset(&leaps, 1_800_000_000);
        let li = ntp_proto::leaptz::leap_indicator(&leaps, 1_800_000_000);
        assert!(li <= 2);
    }
    let fs = Fs(data.split(|b| *b == 0).collect());
    if let Ok(c) = load(&fs, Path::new("/etc/ntpx.conf")) {
        // Whatever was read renders to a configuration that reads back.
        let rendered = ntp_proto::config::render(&c);
        ntp_proto::config::parse_str(&rendered, Path::new("/rendered"))
            .unwrap_or_else(|e| panic!("rendered configuration refused: {e}\n{rendered}"));
    }
});
