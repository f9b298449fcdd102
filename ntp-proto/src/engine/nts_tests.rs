//! The engine's side of an NTS source: its sessions counted, its NTS-KE attempts reset
//! by a reply that verifies, and polls it cannot send for want of keys unanswered.

use super::*;
use crate::clock::{FreeRunning, RealtimeClock};
use crate::nts::{self, Aead, ClientSession, CookieKeys, NtsCheck, ServerKey, SessionKeys};
use std::{cell::Cell, rc::Rc};

/// A system clock the test moves.
struct Sys(Rc<Cell<u64>>);

impl RealtimeClock for Sys {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}

const S: u64 = 1_000_000_000;

/// The NTS server's reply to `req`, synchronised, at `now`.
fn reply(req: &[u8], server: &CookieKeys, now: u64) -> Vec<u8> {
    let NtsCheck::Valid(r) = nts::check_request(req, server) else {
        panic!("the request did not verify");
    };
    let q = NtpHeader::parse(&req[..48]).unwrap();
    let h = NtpHeader {
        version: 4,
        mode: 4,
        stratum: 2,
        refid: [1, 2, 3, 4],
        origin_ts: q.transmit_ts,
        receive_ts: NtpTimestamp::from_unix_ns(now),
        transmit_ts: NtpTimestamp::from_unix_ns(now),
        reference_ts: NtpTimestamp::from_unix_ns(now - S),
        ..Default::default()
    };
    let fresh = vec![server.seal(&r.keys, &[4; 16])];
    nts::seal_response(&h.serialize(), &r, &[5; 16], &fresh)
}

#[test]
fn an_nts_source_counts_sessions_and_turns_unreachable_without_keys() {
    let now = Rc::new(Cell::new(1_700_000_000 * S));
    let clock = FreeRunning::new(0.0, Sys(now.clone()), 500e-6);
    let mut e = Engine::new(clock, &SyncConfig::default(), None, 1e-7, None);
    let opts = SourceOptions {
        nts: true,
        ..SourceOptions::default()
    };
    let id = e.add_source("198.18.0.1:123".parse().unwrap(), opts);
    assert!(e.nts_needs_ke(id));
    assert!(e.transmit(id, 1).is_none(), "no request without keys");
    assert_eq!(
        (
            e.nts_client(id).unwrap().sessions,
            e.authdata_report()[0].key_id
        ),
        (0, 0)
    );

    // An NTS-KE (its attempt counted), then a session: chronyc's KeyID 1.
    let server = CookieKeys::new(ServerKey::new(1, &[9; 16]).unwrap());
    let keys = SessionKeys::new(Aead::Aes128GcmSiv, &[1; 16], &[2; 16]).unwrap();
    let cookies = (0..8).map(|i| server.seal(&keys, &[i; 16])).collect();
    assert_eq!(e.nts_ke_started(id), 1);
    let session = ClientSession::new(keys, cookies, [3; 16]);
    // Not for a slot given to another server meanwhile.
    let other = "198.18.0.9:123".parse().unwrap();
    assert!(!e.nts_session(id, other, session.clone(), now.get()));
    assert!(e.nts_needs_ke(id));
    assert!(e.nts_session(id, e.sources()[id].addr, session, now.get()));
    let a = &e.authdata_report()[0];
    assert_eq!(
        (a.key_id, a.key_type, a.key_bits, a.ke_attempts),
        (1, 30, 128, 1)
    );
    assert_eq!(
        e.nts_sessions().len(),
        1,
        "a usable session is saved at exit"
    );

    // A reply that verifies: reachable, and the attempts start again from 0.
    let (req, _) = e.transmit(id, 0x1234_5678).unwrap();
    now.set(now.get() + S / 100);
    let wire = WireInfo {
        local: "198.18.0.2:40000".parse().unwrap(),
        tx: Stamp::Kernel,
        rx: Stamp::Kernel,
    };
    e.receive(id, &reply(&req, &server, now.get()), now.get(), wire);
    assert_eq!(e.sources()[id].poller.reach(), 1);
    assert_eq!(e.authdata_report()[0].ke_attempts, 0);

    // A NAK no reply follows: the session is not saved (its keys were just refused).
    let (req, _) = e.transmit(id, 0x1234_5679).unwrap();
    let NtsCheck::Valid(r) = nts::check_request(&req, &server) else {
        panic!();
    };
    let mut kiss = NtpHeader::parse(&reply(&req, &server, now.get())[..48]).unwrap();
    kiss.stratum = 0;
    kiss.refid = *b"NTSN";
    e.receive(
        id,
        &nts::nak_response(&kiss.serialize(), &r.uid),
        now.get(),
        wire,
    );
    assert!(e.nts_sessions().is_empty());
    assert_eq!(e.authdata_report()[0].naks, 1);

    // Polls without keys (an NTS-KE failing): unanswered, until the source is
    // unreachable, which is said once.
    let mut warnings = Vec::new();
    for _ in 0..8 {
        now.set(now.get() + 64 * S);
        for l in e.unsendable_poll(id) {
            if let Log::Warn(w) = l {
                warnings.push(w);
            }
        }
    }
    assert_eq!(e.sources()[id].poller.reach(), 0);
    assert_eq!(warnings, ["Source 198.18.0.1 is unreachable"]);
    assert_eq!(e.sources()[id].polls, 2, "no request was sent for them");

    // A new session holding compliant keys in reserve, its first request NAK'd: still
    // usable (the reserve keys are to be tried), yet not saved, since what would be
    // saved are the keys just refused.
    let old = SessionKeys::new(Aead::Aes128GcmSiv, &[5; 16], &[6; 16]).unwrap();
    let compliant = SessionKeys::new(Aead::Aes128GcmSiv, &[7; 16], &[8; 16]).unwrap();
    let cookies = (0..8).map(|i| server.seal(&compliant, &[i; 16])).collect();
    let session = ClientSession::new(old, cookies, [3; 16]).with_alternative(compliant);
    assert!(e.nts_session(id, e.sources()[id].addr, session, now.get()));
    let (req, _) = e.transmit(id, 0x1234_567a).unwrap();
    let NtsCheck::Nak { uid } = nts::check_request(&req, &server) else {
        panic!("the reserve keys were used first");
    };
    let mut kiss = NtpHeader::parse(&req[..48]).unwrap();
    (kiss.origin_ts, kiss.mode, kiss.stratum) = (kiss.transmit_ts, 4, 0);
    kiss.refid = *b"NTSN";
    let nak = nts::nak_response(&kiss.serialize(), &uid);
    e.receive(id, &nak, now.get(), wire);
    assert_eq!(e.authdata_report()[0].naks, 1, "the NAK was taken");
    assert!(!e.nts_needs_ke(id), "the reserve keys are still to try");
    assert!(e.nts_sessions().is_empty());
}

#[test]
fn nts_keys_are_refreshed_after_ntsrefresh_and_a_restored_session_keeps_its_context() {
    let now = Rc::new(Cell::new(1_700_000_000 * S));
    let clock = FreeRunning::new(0.0, Sys(now.clone()), 500e-6);
    let mut e = Engine::new(clock, &SyncConfig::default(), None, 1e-7, None);
    e.set_nts_refresh(3600);
    let id = e.add_source("198.18.0.1:123".parse().unwrap(), opts_nts());
    let addr = e.sources()[id].addr;
    let server = CookieKeys::new(ServerKey::new(1, &[9; 16]).unwrap());
    let keys = SessionKeys::new(Aead::Aes128GcmSiv, &[1; 16], &[2; 16]).unwrap();
    let cookies: Vec<_> = (0..8).map(|i| server.seal(&keys, &[i; 16])).collect();

    // A session saved by an earlier run: its number and NTS-KE time come back (as
    // chronyd restores them), and the refresh counts from that NTS-KE.
    let mut saved = ClientSession::new(keys.clone(), cookies.clone(), [3; 16]);
    saved.set_context(4, now.get() - 3000 * S);
    let restored = ClientSession::restore(&saved.dump(), [5; 16]).unwrap();
    assert!(e.nts_session(id, addr, restored, now.get()));
    let a = &e.authdata_report()[0];
    assert_eq!(a.key_id, 4);
    assert_eq!(
        e.nts_client(id).unwrap().last_ke_ns,
        Some(now.get() - 3000 * S)
    );
    assert!(
        !e.nts_refresh(id) && !e.nts_needs_ke(id),
        "50 minutes old: kept"
    );
    assert!(e.transmit(id, 1).is_some());
    now.set(now.get() + 600 * S);
    assert!(!e.nts_refresh(id), "an hour to the second: kept");
    now.set(now.get() + S);
    assert!(e.nts_refresh(id), "past an hour: dropped");
    assert!(e.nts_needs_ke(id), "a new NTS-KE");
    assert!(
        e.nts_client(id).unwrap().session.is_none(),
        "its cookies dropped"
    );
    assert!(e.transmit(id, 2).is_none(), "no request with the old keys");
    assert!(e.nts_sessions().is_empty(), "nothing to save");

    // The new NTS-KE's session: the next number, dated now, and saved so.
    let fresh = ClientSession::new(keys.clone(), cookies.clone(), [6; 16]);
    assert!(e.nts_session(id, addr, fresh, now.get()));
    assert_eq!(e.authdata_report()[0].key_id, 5);
    assert!(!e.nts_refresh(id) && !e.nts_needs_ke(id));
    let dump = &e.nts_sessions()[0].2;
    let back = ClientSession::restore(dump, [7; 16]).unwrap();
    assert_eq!(back.context(), Some((5, now.get())));

    // A step of the system clock (here one ntpx did not make) moves the NTS-KE's time
    // with it: ten seconds later and two hours on, the keys are ten seconds old.
    let ke = now.get();
    now.set(now.get() + 10 * S + 7200 * S);
    e.external_step(7200.0);
    assert_eq!(e.nts_client(id).unwrap().last_ke_ns, Some(ke + 7200 * S));
    assert!(!e.nts_refresh(id), "not aged by the step");
    assert_eq!(e.authdata_report()[0].last_ke_ago, Some(10));
    assert_eq!(
        ClientSession::restore(&e.nts_sessions()[0].2, [7; 16])
            .unwrap()
            .context(),
        Some((5, ke + 7200 * S)),
        "saved on the clock's new scale"
    );

    // ntsrefresh 0: an NTS-KE before every request, and each session's keys used once
    // (refreshed before the next poll, not before the request they were made for).
    e.set_nts_refresh(0);
    now.set(now.get() + S);
    assert!(e.nts_refresh(id) && e.nts_needs_ke(id));
    let fresh = ClientSession::new(keys.clone(), cookies.clone(), [9; 16]);
    assert!(e.nts_session(id, addr, fresh, now.get()));
    assert!(!e.nts_needs_ke(id));
    assert!(e.transmit(id, 3).is_some(), "the new keys used once");
    now.set(now.get() + 1);
    assert!(e.nts_refresh(id), "and dropped at the next poll");
    // A saved NTS-KE time ahead of the clock (the clock stepped back since) is now.
    let mut e2 = Engine::new(
        FreeRunning::new(0.0, Sys(now.clone()), 500e-6),
        &SyncConfig::default(),
        None,
        1e-7,
        None,
    );
    let id2 = e2.add_source("198.18.0.1:123".parse().unwrap(), opts_nts());
    let mut ahead = back;
    ahead.set_context(5, now.get() + 100 * S);
    assert!(e2.nts_session(id2, addr, ahead, now.get()));
    assert_eq!(e2.nts_client(id2).unwrap().last_ke_ns, Some(now.get()));
}

/// An NTS source's options.
fn opts_nts() -> SourceOptions {
    SourceOptions {
        nts: true,
        ..SourceOptions::default()
    }
}
