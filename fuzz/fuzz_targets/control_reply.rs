//! The UDP command port's answer to arbitrary datagrams, whatever the handler returns: never
//! longer than the datagram (no amplification), only open commands carried out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::control::{Response, udp_answer};

fuzz_target!(|data: &[u8]| {
    let open = vec!["tracking".to_string(), "sources".to_string()];
    // The handler's answer grows with the first byte: from tiny to far beyond the request.
    let size = usize::from(data.first().copied().unwrap_or(0)) * 64;
    let mut ran = None;
    let out = udp_answer(data, &open, |r| {
        ran = Some(r.clone());
        match r {
            Ok(_) => Response::Error("x".repeat(size)),
            Err(e) => Response::Error(e),
        }
    });
    if let Some(out) = out {
        assert!(
            out.len() <= data.len(),
            "{} bytes for {}",
            out.len(),
            data.len()
        );
    }
    if let Some(Ok(req)) = ran {
        assert!(open.iter().any(|c| c == req.name()), "{req:?} is not open");
    }
});
