//! The chrony.conf parser on arbitrary text: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = ntp_proto::config::parse_str(text, std::path::Path::new("fuzz.conf"))
    {
        // What parses renders to something that parses again.
        let again = ntp_proto::config::render(&c);
        assert!(
            ntp_proto::config::parse_str(&again, std::path::Path::new("rendered.conf")).is_ok(),
            "{again}"
        );
    }
});
