//! Answering NTP client requests in userspace, by the same rules as the XDP program.
//!
//! A decision is a pure function of the datagram, its source, its receive timestamp and
//! the published state; the transmit timestamp is filled in at the last moment by
//! [`PendingReply::finish`].

use crate::acl::{AccessTable, Action};
use crate::auth::{KeyTable, Trailer, trailer};
use crate::nts::{self, CookieKeys, NONCE_LEN, NtsCheck, NtsRequest};
use crate::packet::{NtpHeader, NtpTimestamp};
use ntp_common::{
    RateLimit, ServerState,
    wire::{self, NTP_HEADER_LEN},
};
use std::net::{IpAddr, SocketAddr};

/// Why a datagram got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not an NTP header alone or with a MAC (extension fields and NTS are not served
    /// yet), or malformed.
    Length,
    /// Not a client request of version 1-4.
    Mode,
    /// A MAC with a key this server does not have, or that does not verify: chrony
    /// sends nothing back (no crypto-NAK for symmetric keys).
    Auth,
}

/// The secrets authenticated requests are answered with: the keyfile's keys, and the
/// NTS cookie keys when the server offers NTS.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    /// Symmetric keys.
    pub keys: KeyTable,
    /// NTS cookie keys (`ntsserverkey` configured).
    pub cookies: Option<CookieKeys>,
}

/// What to do with a datagram.
// One per datagram, moved once and never stored: boxing the reply would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Answer it (finish the reply with a transmit timestamp).
    Reply(PendingReply),
    /// Not for this path; counted, not answered.
    Ignore(Ignored),
    /// The source is not allowed; dropped.
    Deny,
    /// No reply may go to the source (a privileged port other than 123, or a multicast,
    /// broadcast or unspecified address): reflection bait, dropped.
    BadSource,
}

/// The NTS part of a reply.
#[derive(Clone, Debug, PartialEq)]
enum NtsPart {
    /// An authenticated reply: the request, the authenticator's nonce, new cookies.
    Reply(NtsRequest, [u8; NONCE_LEN], Vec<Vec<u8>>),
    /// An NTS NAK echoing this unique identifier.
    Nak(Vec<u8>),
}

/// A reply complete but for its transmit timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingReply {
    header: NtpHeader,
    state: ServerState,
    /// The request's origin timestamp field (naming our previous reply in interleaved mode).
    request_origin: NtpTimestamp,
    /// The request's receive timestamp field (an interleaved reply's origin).
    request_receive: NtpTimestamp,
    /// In interleaved mode, the transmit timestamp of the previous reply to this client.
    previous_transmit: Option<NtpTimestamp>,
    /// The key the request was authenticated with: the reply carries a MAC under it.
    key_id: Option<u32>,
    /// An NTS request's reply fields.
    nts: Option<NtsPart>,
}

/// The timestamps of the latest reply to a client, for interleaved mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastExchange {
    /// The receive timestamp that reply carried.
    pub rx: NtpTimestamp,
    /// When it really left (the kernel's transmit timestamp), or the one it carried;
    /// zero while unknown.
    pub tx: NtpTimestamp,
}

impl PendingReply {
    /// The same reply as a Kiss-o'-Death RATE (over the rate limit): unsynchronised,
    /// stratum 0, reference id "RATE".
    pub fn kiss_rate(mut self) -> Self {
        self.header.leap = wire::LEAP_UNSYNC;
        self.header.stratum = 0;
        self.header.refid = *b"RATE";
        self
    }

    /// The reply in interleaved mode (RFC 9769, as chrony serves it) when the client's
    /// origin timestamp names the receive timestamp of `last`, whose transmit timestamp
    /// is known: it then carries that earlier, exact transmit timestamp, and echoes the
    /// request's receive field as its origin so the client can tell the modes apart.
    pub fn interleave(mut self, last: &LastExchange) -> Self {
        let origin = self.request_origin;
        if origin.0 != 0 && origin == last.rx && last.tx.0 != 0 {
            self.header.origin_ts = self.request_receive;
            self.previous_transmit = Some(last.tx);
        }
        self
    }

    /// Whether this is a Kiss-o'-Death (stratum 0).
    pub fn is_kiss(&self) -> bool {
        self.header.stratum == 0
    }

    /// Whether [`Self::interleave`] made this an interleaved reply.
    pub fn is_interleaved(&self) -> bool {
        self.previous_transmit.is_some()
    }

    /// Whether the client could be asking for interleaved mode (a non-zero origin): its
    /// reply's real transmit time is then worth recording.
    pub fn may_interleave(&self) -> bool {
        self.is_interleaved() || self.request_origin.0 != 0
    }

    /// The receive timestamp the reply carries.
    pub fn receive_ts(&self) -> NtpTimestamp {
        self.header.receive_ts
    }

    /// The key the request was authenticated with, if it was.
    pub fn key_id(&self) -> Option<u32> {
        self.key_id
    }

    /// Whether the reply is NTS-authenticated (a NAK is not).
    pub fn is_nts(&self) -> bool {
        matches!(self.nts, Some(NtsPart::Reply(..)))
    }

    /// Whether the reply is an NTS NAK.
    pub fn is_nts_nak(&self) -> bool {
        matches!(self.nts, Some(NtsPart::Nak(_)))
    }

    /// The reply as sent when the transmit timestamp is taken at `tx_tai_ns` (with the
    /// MAC, under `keys`, of an authenticated request's key), and the transmit timestamp
    /// of this moment (an interleaved reply carries an earlier one).
    pub fn finish(&self, tx_tai_ns: u64, secrets: &Secrets) -> (Vec<u8>, NtpTimestamp) {
        let now = served_ntp(&self.state, tx_tai_ns);
        let mut h = self.header;
        h.transmit_ts = self.previous_transmit.unwrap_or(now);
        if let Some(NtsPart::Nak(uid)) = &self.nts {
            // RFC 8915 5.7: a Kiss-o'-Death NTSN, unauthenticated, echoing the identifier.
            h.leap = wire::LEAP_UNSYNC;
            h.stratum = 0;
            h.refid = *b"NTSN";
            return (nts::nak_response(&h.serialize(), uid), now);
        }
        if let Some(NtsPart::Reply(req, nonce, cookies)) = &self.nts {
            return (nts::seal_response(&h.serialize(), req, nonce, cookies), now);
        }
        let mut out = h.serialize().to_vec();
        if let Some(k) = self.key_id.and_then(|id| secrets.keys.get(id)) {
            let mac = k.mac(&out, h.version);
            out.extend_from_slice(&mac);
        }
        (out, now)
    }
}

/// chrony's lowest rate-limiting interval: without `ratelimit`, a client's poll is
/// echoed unless it is below this.
pub const MIN_LIMIT_POLL: i8 = -19;

/// The lowest poll exponent a reply carries (chrony: the larger of the client's and the
/// `ratelimit` interval, which suggests a client polling faster slow down).
pub fn min_reply_poll(ratelimit: Option<&RateLimit>) -> i8 {
    ratelimit.map_or(MIN_LIMIT_POLL, |r| {
        let log2 = (r.interval_ns as f64 * 1e-9).log2().round();
        log2.clamp(f64::from(MIN_LIMIT_POLL), 12.0) as i8
    })
}

/// `tai_ns` (`CLOCK_TAI`) as the server serves it under `state`'s timebase.
pub fn served_ntp(state: &ServerState, tai_ns: u64) -> NtpTimestamp {
    NtpTimestamp(state.timebase.served_ntp(tai_ns))
}

/// Whether a reply to `src` could be anything but reflection: the kernel path's rule
/// (loopback is fine here: local clients reach the socket through `lo`).
fn replyable(src: SocketAddr) -> bool {
    let port_ok = src.port() >= 1024 || src.port() == ntp_common::wire::NTP_PORT;
    let addr_ok = match src.ip() {
        IpAddr::V4(v) => {
            !(v.is_unspecified() || v.is_multicast() || v.is_broadcast() || v.octets()[0] >= 240)
        }
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast()),
    };
    port_ok && addr_ok
}

/// The checks of [`handle_request`] that cost nothing (shape, mode, source, access),
/// in its order: their verdict, or `None` for a request that goes on to the rate limit
/// and then to authentication, whose cryptography a rate-limited client must not be
/// able to spend (chrony's order).
pub fn screen(datagram: &[u8], src: SocketAddr, acl: &AccessTable) -> Option<Verdict> {
    if matches!(trailer(datagram), Trailer::CryptoNak | Trailer::Malformed) {
        return Some(Verdict::Ignore(Ignored::Length));
    }
    if !datagram
        .first()
        .is_some_and(|b| wire::is_answerable_request(*b))
    {
        return Some(Verdict::Ignore(Ignored::Mode));
    }
    if !replyable(src) {
        return Some(Verdict::BadSource);
    }
    if acl.check(src.ip()) != Action::Allow {
        return Some(Verdict::Deny);
    }
    None
}

/// Decides how to answer `datagram` from `src`, received at kernel TAI time `rx_tai_ns`;
/// a request with a MAC is answered only if it verifies under one of `secrets`' keys, an
/// NTS request only if the server offers NTS (`random` gives the NTS nonces).
pub fn handle_request(
    datagram: &[u8],
    src: SocketAddr,
    rx_tai_ns: u64,
    state: &ServerState,
    acl: &AccessTable,
    secrets: &Secrets,
    random: &mut dyn FnMut() -> [u8; NONCE_LEN],
) -> Verdict {
    if let Some(v) = screen(datagram, src, acl) {
        return v;
    }
    handle_screened(datagram, rx_tai_ns, state, secrets, random)
}

/// [`handle_request`] for a request [`screen`] passed (the daemon screens before its
/// rate limit, and does not screen twice).
pub fn handle_screened(
    datagram: &[u8],
    rx_tai_ns: u64,
    state: &ServerState,
    secrets: &Secrets,
    random: &mut dyn FnMut() -> [u8; NONCE_LEN],
) -> Verdict {
    let keys = &secrets.keys;
    let trailer = trailer(datagram);
    let key_id = match trailer {
        Trailer::Mac { key_id, .. } => Some(key_id),
        _ => None,
    };
    let extension_fields = trailer == Trailer::ExtensionFields;
    // After access control, as chrony checks it: a denied source learns nothing, not
    // even whether its key is known.
    if let Trailer::Mac {
        covered,
        key_id,
        digest,
    } = trailer
    {
        let version = (datagram[0] >> 3) & 7;
        if !keys
            .get(key_id)
            .is_some_and(|k| k.verify(covered, version, digest))
        {
            return Verdict::Ignore(Ignored::Auth);
        }
    }
    let nts = if extension_fields {
        // Only NTS fields are read; others are ignored (RFC 7822), the request answered
        // as a plain one. An NTS request to a server without NTS gets nothing.
        let check = match &secrets.cookies {
            Some(cookies) => nts::check_request(datagram, cookies),
            None => match nts::check_request(datagram, &nts::CookieKeys::none()) {
                NtsCheck::NotNts => NtsCheck::NotNts,
                _ => return Verdict::Ignore(Ignored::Length),
            },
        };
        let cookies = secrets.cookies.as_ref();
        match check {
            NtsCheck::Valid(req) => {
                let Some(cookies) = cookies else {
                    return Verdict::Ignore(Ignored::Length);
                };
                let fresh = (0..req.cookies)
                    .map(|_| cookies.seal(&req.keys, &random()))
                    .collect();
                Some(NtsPart::Reply(req, random(), fresh))
            }
            NtsCheck::Nak { uid } => Some(NtsPart::Nak(uid)),
            NtsCheck::NotNts => None,
            NtsCheck::Invalid => return Verdict::Ignore(Ignored::Length),
        }
    } else {
        None
    };
    let Ok(req) = NtpHeader::parse(&datagram[..NTP_HEADER_LEN]) else {
        return Verdict::Ignore(Ignored::Length);
    };
    let tb = &state.timebase;
    let age = rx_tai_ns.saturating_sub(tb.t0_tai_ns);
    let header = NtpHeader {
        leap: state.leap_at(rx_tai_ns),
        version: req.version,
        mode: wire::MODE_SERVER,
        stratum: state.stratum,
        poll: req.poll.max(state.min_poll),
        precision: state.precision,
        root_delay: state.root_delay,
        root_dispersion: state.root_dispersion_at(age),
        refid: state.refid,
        reference_ts: NtpTimestamp(state.ref_ts),
        origin_ts: req.transmit_ts,
        receive_ts: served_ntp(state, rx_tai_ns),
        transmit_ts: NtpTimestamp(0),
    };
    Verdict::Reply(PendingReply {
        header,
        state: *state,
        request_origin: req.origin_ts,
        request_receive: req.receive_ts,
        previous_transmit: None,
        key_id,
        nts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts `t` is the served time of Unix ns `unix`: the timebase's scale puts it
    /// within a unit or two of 2^-32 s of the exact conversion.
    #[track_caller]
    fn assert_served(t: NtpTimestamp, unix: u64) {
        let want = NtpTimestamp::from_unix_ns(unix);
        assert!(
            t.0.abs_diff(want.0) <= 4,
            "{t:?} is not {want:?} ({unix} ns)"
        );
    }
    use crate::acl::{Action, Subnet};
    use crate::reference::{PublishParams, Reference, server_state};
    use std::time::Duration;

    const S: u64 = 1_000_000_000;
    const NOW: u64 = 1_800_000_000 * S;

    fn state() -> ServerState {
        let p = PublishParams {
            precision: -24,
            max_age: Duration::from_secs(10),
            serve: true,
            min_poll: 2,
        };
        let mut r = Reference::local(3, NOW);
        r.root_delay_ns = S / 2;
        server_state(&r, &p, NOW, 0)
    }

    fn allow_all() -> AccessTable {
        let mut t = AccessTable::new();
        t.apply(Action::Allow, false, None);
        t
    }

    fn request(version: u8, mode: u8, poll: i8) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0] = wire::li_vn_mode(0, version, mode);
        b[2] = poll as u8;
        b[40..48].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        b
    }

    fn src() -> SocketAddr {
        "198.18.0.2:40000".parse().unwrap()
    }

    #[test]
    fn screening_decides_what_needs_no_cryptography_and_passes_the_rest() {
        let req = request(4, 3, 6);
        assert!(screen(&req, src(), &allow_all()).is_none());
        // A request with a MAC or NTS fields goes on too: its keys are checked later.
        let mut with_mac = req.to_vec();
        with_mac.extend_from_slice(&[0, 0, 0, 1]);
        with_mac.extend_from_slice(&[0xab; 16]);
        assert!(screen(&with_mac, src(), &allow_all()).is_none());
        assert_eq!(
            screen(&req, src(), &AccessTable::new()),
            Some(Verdict::Deny)
        );
        assert_eq!(
            screen(&request(4, 4, 6), src(), &allow_all()),
            Some(Verdict::Ignore(Ignored::Mode))
        );
        assert_eq!(
            screen(&req[..40], src(), &allow_all()),
            Some(Verdict::Ignore(Ignored::Length))
        );
        assert_eq!(
            screen(&[], src(), &allow_all()),
            Some(Verdict::Ignore(Ignored::Length))
        );
        let port_zero: SocketAddr = "198.18.0.2:0".parse().unwrap();
        assert_eq!(
            screen(&req, port_zero, &allow_all()),
            Some(Verdict::BadSource)
        );
    }

    #[test]
    fn client_request_gets_a_server_reply() {
        let rx = NOW + 3 * S;
        let Verdict::Reply(p) = handle_request(
            &request(4, 3, 6),
            src(),
            rx,
            &state(),
            &allow_all(),
            &Secrets::default(),
            &mut || [0; 16],
        ) else {
            panic!("not answered");
        };
        let r = NtpHeader::parse(&p.finish(rx + 1_000, &Secrets::default()).0).unwrap();
        assert_eq!(
            (r.leap, r.version, r.mode, r.stratum, r.poll, r.precision),
            (0, 4, 4, 3, 6, -24)
        );
        assert_eq!(r.origin_ts, NtpTimestamp(0x1122_3344_5566_7788));
        assert_served(r.receive_ts, rx);
        assert_served(r.transmit_ts, rx + 1_000);
        assert_eq!(r.refid, crate::reference::REFID_LOCAL);
        assert_eq!(r.root_delay, 0x8000);
        // 3 s of age at 15 ppm: 45 us of dispersion, about 3 units of 2^-16 s.
        assert_eq!(
            r.root_dispersion,
            ntp_common::timebase::ns_to_ntp_short(45_000)
        );
        assert_eq!(r.reference_ts, NtpTimestamp::from_unix_ns(NOW));
    }

    #[test]
    fn every_version_from_1_to_4_is_echoed_and_low_polls_are_raised() {
        for v in 1..=4 {
            let Verdict::Reply(p) = handle_request(
                &request(v, 3, -6),
                src(),
                NOW,
                &state(),
                &allow_all(),
                &Secrets::default(),
                &mut || [0; 16],
            ) else {
                panic!("version {v} not answered");
            };
            let r = NtpHeader::parse(&p.finish(NOW, &Secrets::default()).0).unwrap();
            assert_eq!((r.version, r.poll), (v, 2));
        }
    }

    #[test]
    fn other_modes_versions_and_lengths_are_ignored() {
        for (v, m) in [
            (0, 3),
            (5, 3),
            (4, 1),
            (4, 2),
            (4, 4),
            (4, 5),
            (4, 6),
            (4, 7),
            (4, 0),
        ] {
            assert_eq!(
                handle_request(
                    &request(v, m, 0),
                    src(),
                    NOW,
                    &state(),
                    &allow_all(),
                    &Secrets::default(),
                    &mut || [0; 16]
                ),
                Verdict::Ignore(Ignored::Mode),
                "version {v} mode {m}"
            );
        }
        let mut long = [0u8; 80];
        long[..48].copy_from_slice(&request(4, 3, 0));
        // Too short, not whole words, a crypto-NAK, extension fields (28 bytes).
        for len in [0, 47, 49, 52, 76] {
            assert_eq!(
                handle_request(
                    &long[..len],
                    src(),
                    NOW,
                    &state(),
                    &allow_all(),
                    &Secrets::default(),
                    &mut || [0; 16]
                ),
                Verdict::Ignore(Ignored::Length),
                "{len} bytes"
            );
        }
        // 20 bytes after the header: a MAC (key 0, which nobody has).
        assert_eq!(
            handle_request(
                &long[..68],
                src(),
                NOW,
                &state(),
                &allow_all(),
                &Secrets::default(),
                &mut || [0; 16]
            ),
            Verdict::Ignore(Ignored::Auth)
        );
    }

    #[test]
    fn unknown_extension_fields_are_ignored_and_the_request_answered() {
        let mut req = request(4, 3, 6).to_vec();
        // An extension field of an unknown type, 28 bytes.
        req.extend_from_slice(&[0x20, 0x05, 0, 28]);
        req.extend_from_slice(&[0; 24]);
        let Verdict::Reply(p) = handle_request(
            &req,
            src(),
            NOW,
            &state(),
            &allow_all(),
            &Secrets::default(),
            &mut || [0; 16],
        ) else {
            panic!("not answered");
        };
        assert_eq!(
            p.finish(NOW, &Secrets::default()).0.len(),
            48,
            "a plain reply"
        );
    }

    fn keys() -> Secrets {
        let parsed = crate::keys::parse(
            "1 MD5 HEX:00112233445566778899aabbccddeeff\n2 SHA256 ASCII:sesame\n3 AES128 HEX:000102030405060708090a0b0c0d0e0f\n",
            std::path::Path::new("keys"),
        )
        .unwrap();
        let (t, problems) = KeyTable::new(&parsed);
        assert!(problems.is_empty(), "{problems:?}");
        Secrets {
            keys: t,
            cookies: None,
        }
    }

    #[test]
    fn authenticated_requests_get_replies_under_the_same_key() {
        let keys = keys();
        for (id, version, mac_len) in [(1, 4, 20), (2, 4, 24), (2, 3, 36), (3, 4, 20)] {
            let key = keys.keys.get(id).unwrap();
            let mut req = request(version, 3, 6).to_vec();
            let mac = key.mac(&req, version);
            req.extend_from_slice(&mac);
            assert_eq!(req.len(), 48 + mac_len, "key {id} v{version}");
            let Verdict::Reply(p) =
                handle_request(&req, src(), NOW, &state(), &allow_all(), &keys, &mut || {
                    [0; 16]
                })
            else {
                panic!("key {id} v{version} not answered");
            };
            assert_eq!(p.key_id(), Some(id));
            let (reply, _) = p.finish(NOW + 5, &keys);
            assert_eq!(reply.len(), req.len(), "the reply is the request's size");
            let Trailer::Mac {
                covered,
                key_id,
                digest,
            } = trailer(&reply)
            else {
                panic!("no MAC in the reply");
            };
            assert_eq!(key_id, id);
            assert!(
                key.verify(covered, version, digest),
                "the reply's MAC verifies"
            );
            // A bit flipped in the request, a wrong key, an unknown key: nothing back.
            let mut bad = req.clone();
            bad[45] ^= 1;
            assert_eq!(
                handle_request(&bad, src(), NOW, &state(), &allow_all(), &keys, &mut || [0;
                    16]),
                Verdict::Ignore(Ignored::Auth)
            );
            let mut other = req.clone();
            other[48..52].copy_from_slice(&(id % 3 + 1).to_be_bytes());
            assert_eq!(
                handle_request(
                    &other,
                    src(),
                    NOW,
                    &state(),
                    &allow_all(),
                    &keys,
                    &mut || [0; 16]
                ),
                Verdict::Ignore(Ignored::Auth)
            );
            assert_eq!(
                handle_request(
                    &req,
                    src(),
                    NOW,
                    &state(),
                    &allow_all(),
                    &Secrets::default(),
                    &mut || [0; 16]
                ),
                Verdict::Ignore(Ignored::Auth)
            );
        }
    }

    #[test]
    fn sources_no_reply_may_go_to_are_dropped() {
        for bad in [
            "198.18.0.2:1000",
            "198.18.0.2:0",
            "224.0.0.1:40000",
            "255.255.255.255:40000",
            "0.0.0.0:40000",
            "[ff02::1]:40000",
        ] {
            let s: SocketAddr = bad.parse().unwrap();
            assert_eq!(
                handle_request(
                    &request(4, 3, 6),
                    s,
                    NOW,
                    &state(),
                    &allow_all(),
                    &Secrets::default(),
                    &mut || [0; 16]
                ),
                Verdict::BadSource,
                "{bad}"
            );
        }
        for good in ["198.18.0.2:123", "127.0.0.1:40000", "[fd00::2]:1024"] {
            let s: SocketAddr = good.parse().unwrap();
            assert!(
                matches!(
                    handle_request(
                        &request(4, 3, 6),
                        s,
                        NOW,
                        &state(),
                        &allow_all(),
                        &Secrets::default(),
                        &mut || [0; 16]
                    ),
                    Verdict::Reply(_)
                ),
                "{good}"
            );
        }
    }

    #[test]
    fn a_kiss_of_death_keeps_the_timestamps() {
        let Verdict::Reply(p) = handle_request(
            &request(4, 3, 6),
            src(),
            NOW,
            &state(),
            &allow_all(),
            &Secrets::default(),
            &mut || [0; 16],
        ) else {
            panic!()
        };
        assert!(!p.is_kiss());
        assert!(p.clone().kiss_rate().is_kiss());
        let k = NtpHeader::parse(&p.kiss_rate().finish(NOW, &Secrets::default()).0).unwrap();
        assert_eq!((k.leap, k.stratum, k.refid, k.mode), (3, 0, *b"RATE", 4));
        assert_eq!(k.origin_ts, NtpTimestamp(0x1122_3344_5566_7788));
    }

    /// A request carrying `origin` and `receive` in its origin and receive fields.
    fn request_naming(origin: u64, receive: u64) -> [u8; 48] {
        let mut b = request(4, 3, 6);
        b[24..32].copy_from_slice(&origin.to_be_bytes());
        b[32..40].copy_from_slice(&receive.to_be_bytes());
        b
    }

    fn answer(req: &[u8], rx: u64) -> PendingReply {
        match handle_request(
            req,
            src(),
            rx,
            &state(),
            &allow_all(),
            &Secrets::default(),
            &mut || [0; 16],
        ) {
            Verdict::Reply(p) => p,
            other => panic!("not answered: {other:?}"),
        }
    }

    #[test]
    fn a_request_naming_our_last_receive_timestamp_gets_an_interleaved_reply() {
        let last = LastExchange {
            rx: NtpTimestamp(0xe000_0000_1234_0000),
            tx: NtpTimestamp(0xe000_0000_1240_0000),
        };
        let client_rx = 0xe000_0001_0000_0000;
        let rx = NOW + 3 * S;
        let p = answer(&request_naming(last.rx.0, client_rx), rx).interleave(&last);
        assert!(p.is_interleaved() && p.may_interleave());
        let (bytes, tx_now) = p.finish(rx + 1_000, &Secrets::default());
        let r = NtpHeader::parse(&bytes).unwrap();
        // RFC 9769: origin echoes the request's receive field, receive is this
        // exchange's, transmit is the previous reply's real departure.
        assert_eq!(r.origin_ts, NtpTimestamp(client_rx));
        assert_served(r.receive_ts, rx);
        assert_eq!(r.transmit_ts, last.tx);
        assert_served(tx_now, rx + 1_000);
        assert_served(p.receive_ts(), rx);
    }

    #[test]
    fn basic_replies_unless_the_origin_names_a_reply_whose_departure_is_known() {
        let last = LastExchange {
            rx: NtpTimestamp(0xe000_0000_1234_0000),
            tx: NtpTimestamp(0xe000_0000_1240_0000),
        };
        let unknown_tx = LastExchange {
            tx: NtpTimestamp(0),
            ..last
        };
        for (origin, last, may) in [
            (0, last, false),
            (0, LastExchange::default(), false),
            (last.rx.0 + 1, last, true),
            (last.tx.0, last, true),
            (last.rx.0, unknown_tx, true),
        ] {
            let p = answer(&request_naming(origin, 77), NOW).interleave(&last);
            assert!(!p.is_interleaved(), "origin {origin:#x} {last:?}");
            assert_eq!(p.may_interleave(), may, "origin {origin:#x}");
            let r = NtpHeader::parse(&p.finish(NOW + 5, &Secrets::default()).0).unwrap();
            assert_eq!(r.origin_ts, NtpTimestamp(0x1122_3344_5566_7788));
            assert_served(r.transmit_ts, NOW + 5);
        }
    }

    #[test]
    fn denied_sources_are_dropped() {
        let mut acl = allow_all();
        acl.apply(
            Action::Deny,
            false,
            Some(Subnet::parse("198.18.0.0/24").unwrap()),
        );
        assert_eq!(
            handle_request(
                &request(4, 3, 0),
                src(),
                NOW,
                &state(),
                &acl,
                &Secrets::default(),
                &mut || [0; 16]
            ),
            Verdict::Deny
        );
        assert!(matches!(
            handle_request(
                &request(4, 3, 0),
                "198.18.1.2:40000".parse().unwrap(),
                NOW,
                &state(),
                &acl,
                &Secrets::default(),
                &mut || [0; 16]
            ),
            Verdict::Reply(_)
        ));
        assert_eq!(
            handle_request(
                &request(4, 3, 0),
                src(),
                NOW,
                &state(),
                &AccessTable::new(),
                &Secrets::default(),
                &mut || [0; 16]
            ),
            Verdict::Deny
        );
    }
}
