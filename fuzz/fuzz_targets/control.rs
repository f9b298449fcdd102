//! The control protocol decoder on arbitrary request lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ntp_proto::control::decode_request(data);
});
