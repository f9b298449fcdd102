//! The NTP header parser and the userspace reply rules on arbitrary datagrams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::{
    acl::{AccessTable, Action},
    auth::{KeyTable, Trailer, trailer},
    packet::{NtpHeader, NtpTimestamp},
    reference::{PublishParams, Reference, server_state},
    server::{LastExchange, Secrets, Verdict, handle_request},
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
    let keys = ntp_proto::keys::parse("1 MD5 ASCII:fuzz\n", std::path::Path::new("k"))
        .expect("a literal keyfile");
    let (keys, _) = KeyTable::new(&keys);
    let secrets = Secrets {
        keys,
        cookies: ntp_proto::nts::ServerKey::new(1, &[7; 16]).map(ntp_proto::nts::CookieKeys::new),
    };
    let keys = &secrets.keys;
    let mut random = || [5u8; 16];
    if let Verdict::Reply(p) = handle_request(data, src, now, &state, &acl, &secrets, &mut random) {
        // A reply is never larger than its request; an authenticated one only comes for
        // a request that verified under the key it names, and carries a MAC that does.
        let (reply, _) = p.finish(now + 1000, &secrets);
        assert!(reply.len() <= data.len());
        if let Some(id) = p.key_id() {
            let k = keys.get(id).expect("answered under a known key");
            let Trailer::Mac { covered, digest, .. } = trailer(data) else {
                panic!("an authenticated reply to a request without a MAC");
            };
            assert!(k.verify(covered, (data[0] >> 3) & 7, digest));
            let Trailer::Mac { covered, key_id, digest } = trailer(&reply) else {
                panic!("an authenticated request answered without a MAC");
            };
            assert_eq!(key_id, id);
            assert!(k.verify(covered, (reply[0] >> 3) & 7, digest));
        }
        // Interleaved mode (chrony's rules): only when the request names the receive
        // timestamp of the last reply and its transmit time is known; the reply then
        // carries that transmit time and echoes the request's receive field.
        let request = NtpHeader::parse(data).expect("a request answered parses");
        let origin = request.origin_ts;
        for (rx, tx) in [(origin.0, 77), (origin.0, 0), (origin.0 ^ 1, 77)] {
            let last = LastExchange {
                rx: NtpTimestamp(rx),
                tx: NtpTimestamp(tx),
            };
            let q = p.clone().interleave(&last);
            let expected = origin.0 != 0 && rx == origin.0 && tx != 0;
            assert_eq!(q.is_interleaved(), expected);
            let (reply, _) = q.finish(now + 1000, &secrets);
            let h = NtpHeader::parse(&reply).expect("a reply parses");
            if expected {
                assert_eq!(h.transmit_ts, NtpTimestamp(tx));
                assert_eq!(h.origin_ts, request.receive_ts);
            } else {
                assert_eq!(
                    h.origin_ts, request.transmit_ts,
                    "basic mode echoes the transmit"
                );
            }
        }
    }
});
