//! The NTP header parser and the userspace reply rules on arbitrary datagrams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::{
    acl::{AccessTable, Action},
    packet::NtpHeader,
    reference::{PublishParams, Reference, server_state},
    server::{Verdict, handle_request},
};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let _ = NtpHeader::parse(data);
    let params = PublishParams {
        precision: -24,
        max_age: Duration::from_secs(10),
        serve: true,
        min_poll: 0,
    };
    let now = 1_800_000_000_000_000_000;
    let state = server_state(&Reference::local(3, now), &params, now, 37);
    let mut acl = AccessTable::new();
    acl.apply(Action::Allow, false, None);
    let src = "198.18.0.2:40000".parse().expect("literal address");
    if let Verdict::Reply(p) = handle_request(data, src, now, &state, &acl) {
        // A reply is never larger than its request.
        assert!(p.finish(now + 1000).0.len() <= data.len());
    }
});
