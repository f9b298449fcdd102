//! The NTS-KE record parsers and the NTS extension-field checks on arbitrary input: no
//! panic, a request is complete only once it ends, and only a packet authenticated
//! under a cookie this server sealed is valid (under either AEAD algorithm). And a
//! request signed as a client would, its shape taken from the input (identifier
//! length, placeholders, another extension field, nonce length), is valid and its reply
//! never longer than it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::nts::{
    self, Aead, Cipher, CookieKeys, NtsCheck, ServerKey, SessionKeys, check_request,
    parse_ke_request,
};

/// Appends an extension field of `kind` holding `body`, padded to whole words.
fn push_field(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    let len = (4 + body.len()).next_multiple_of(4).max(16);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + len - 4 - body.len(), 0);
}

/// A request for `cookie` under `session`, shaped by `shape`.
fn signed_request(shape: &[u8], cookie: &[u8], session: &SessionKeys) -> Vec<u8> {
    let at = |i: usize| shape.get(i).copied().unwrap_or(0);
    let aead = session.aead();
    let mut p = vec![0u8; 48];
    p[0] = 0x23;
    p[40..48].copy_from_slice(&[at(5); 8]);
    push_field(&mut p, 0x0104, &vec![at(6); 32 + usize::from(at(1) % 40)]);
    push_field(&mut p, 0x0204, cookie);
    for _ in 0..at(2) % 10 {
        push_field(&mut p, 0x0304, &vec![0; cookie.len()]);
    }
    if at(3) % 2 == 1 {
        push_field(
            &mut p,
            0x2005,
            &vec![at(7); 12 + 4 * usize::from(at(3) % 16)],
        );
    }
    let nonce_len = match aead {
        Aead::AesSivCmac256 => 16 + usize::from(at(4) % 17),
        Aead::Aes128GcmSiv => 12,
    };
    let nonce = vec![at(8); nonce_len];
    let mut ct = Vec::new();
    let Some(c2s) = Cipher::new(aead, session.c2s()) else {
        return p;
    };
    assert!(c2s.seal_into(&nonce, &p, b"", &mut ct));
    let mut body = Vec::new();
    body.extend_from_slice(&(nonce_len as u16).to_be_bytes());
    body.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    body.extend_from_slice(&nonce);
    body.resize(body.len().next_multiple_of(4), 0);
    body.extend_from_slice(&ct);
    push_field(&mut p, 0x0404, &body);
    p
}

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
            assert!(
                reply.len() <= packet.len(),
                "{} > {}",
                reply.len(),
                packet.len()
            );
        }
    }
    // Signed as a client would: valid, and answered with a cookie for every one asked
    // (up to eight) in a reply no longer than the request.
    let signed = signed_request(data, &cookie, &session);
    let NtsCheck::Valid(r) = check_request(&signed, &keys) else {
        panic!(
            "a signed request refused: {:?}",
            check_request(&signed, &keys)
        );
    };
    assert_eq!(r.keys, session);
    let asked = 1 + usize::from(data.get(2).copied().unwrap_or(0) % 10);
    assert_eq!(r.cookies, asked.min(nts::MAX_COOKIES));
    let fresh: Vec<Vec<u8>> = (0..r.cookies)
        .map(|_| keys.seal(&session, &[4; 16]))
        .collect();
    let reply = nts::seal_response(&signed[..48], &r, &[9; 16], &fresh);
    assert!(
        reply.len() <= signed.len(),
        "{} > {}",
        reply.len(),
        signed.len()
    );
});
