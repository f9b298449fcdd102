//! The NTS-KE record parsers and the NTS extension-field checks on arbitrary input: no
//! panic, a request is complete only once it ends, and only a packet authenticated
//! under a cookie this server sealed is valid (under either AEAD algorithm).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::nts::{
    self, Aead, CookieKeys, NtsCheck, ServerKey, SessionKeys, check_request, parse_ke_request,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(req)) = parse_ke_request(data) {
        // A complete request answers or refuses; never both, never a panic.
        if let Some(aead) = nts::choose_aead(&req, &Aead::ALL) {
            let _ = nts::ke_response(&req, aead, &[vec![0; 100]], None, None);
        }
        // Truncated, it is not complete.
        assert_ne!(parse_ke_request(&data[..data.len() - 1]), Ok(Some(req)));
    }
    // A client reading it as a server's response: no panic, only an algorithm offered.
    if let Ok(Some(r)) = nts::parse_ke_response(data, &[Aead::AesSivCmac256]) {
        assert_eq!(r.aead, Aead::AesSivCmac256);
    }
    let Some(key) = ServerKey::new(1, &[7; 16]) else {
        return;
    };
    let keys = CookieKeys::new(key);
    let aead = Aead::ALL[usize::from(data.first().is_some_and(|b| b & 1 == 1))];
    let n = aead.key_len();
    let Some(session) = SessionKeys::new(aead, &vec![1; n], &vec![2; n]) else {
        return;
    };
    // As sent, and with a real cookie of this server spliced in where the input has one.
    let mut with_cookie = data.to_vec();
    let cookie = keys.seal(&session, &[3; 16]);
    if with_cookie.len() >= 48 + 4 + cookie.len() {
        with_cookie[52..52 + cookie.len()].copy_from_slice(&cookie);
    }
    for packet in [data, &with_cookie[..]] {
        if let NtsCheck::Valid(r) = check_request(packet, &keys) {
            // Only under the keys this server sealed: the fuzzer cannot forge the
            // authenticator without the client-to-server key.
            assert_eq!(r.keys, session);
            assert!(r.cookies >= 1 && r.cookies <= nts::MAX_COOKIES);
            // One cookie back for the one it came with: never longer than the request.
            let reply = nts::seal_response(&packet[..48], &r, &[9; 16], &[cookie.clone()]);
            assert!(reply.len() <= packet.len(), "{} > {}", reply.len(), packet.len());
        }
    }
});
