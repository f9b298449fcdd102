//! The `AF_XDP` path's frame parser and reply writer on arbitrary frames: a frame taken
//! is answered within its own bytes, and the reply parses as a datagram back to its
//! sender with the payload written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::frame::{parse_udp, write_udp_reply};

fuzz_target!(|data: &[u8]| {
    let Some((&n, frame)) = data.split_first() else {
        return;
    };
    let Ok(f) = parse_udp(frame) else {
        return;
    };
    assert!(f.payload.end <= frame.len());
    let reply: Vec<u8> = (0..f.payload.len().min(usize::from(n))).map(|i| i as u8).collect();
    let mut out = frame.to_vec();
    let len = write_udp_reply(&mut out, &f, &reply).expect("a reply no longer than the request");
    assert!(len <= frame.len());
    let r = parse_udp(&out[..len]).expect("a reply the stack would take");
    assert_eq!((r.src, r.dst), (f.dst, f.src));
    assert_eq!(&out[r.payload], &reply[..]);
});
