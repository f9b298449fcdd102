//! A source's poller on arbitrary replies: what it accepts answers its request, once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::poller::{PollOptions, Poller};

const COOKIE: u64 = 0x1122_3344_5566_7788;

fuzz_target!(|data: &[u8]| {
    for aimed in [false, true] {
        let mut p = Poller::new(PollOptions::default());
        let (req, _) = p.request(COOKIE, 1_800_000_000_000_000_000, 0, false);
        assert_eq!(req.len(), 48);
        let mut d = data.to_vec();
        // Also with the right origin, to reach past the first test.
        if aimed && d.len() >= 32 {
            d[24..32].copy_from_slice(&COOKIE.to_be_bytes());
        }
        if let Ok(r) = p.reply(&d) {
            assert_eq!(
                r.header.origin_ts.0, COOKIE,
                "only an answer to our request"
            );
            assert!(r.header.receive_ts.0 != 0 && r.header.transmit_ts.0 != 0);
            assert!(!r.synchronised || (1..16).contains(&r.header.stratum));
            assert!(p.reply(&d).is_err(), "a reply is taken once");
        }
        assert!(p.interval().is_finite() && p.interval() > 0.0);
    }
});
