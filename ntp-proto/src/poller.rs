//! Polling one upstream server, as chrony's client does: when to send (the poll interval
//! adapts to how well the source's offsets are predicted, backs off when it goes silent),
//! which replies are valid (RFC 5905's tests), and the reachability register. Sans-IO:
//! the caller supplies timestamps, datagrams and randomness.

use crate::packet::{NtpHeader, NtpTimestamp, ntp_short_to_secs};
use ntp_common::wire;

/// Seconds from start to the first request (chrony's initial delay).
pub const INITIAL_DELAY: f64 = 0.2;
/// Good samples and requests of a burst (`iburst`, `ntpxc burst`).
pub const BURST_GOOD: u8 = 4;
/// Requests at most in a burst.
pub const BURST_TOTAL: u8 = 8;
/// Longest interval between burst requests, seconds.
const MAX_BURST_INTERVAL: f64 = 2.0;
/// Burst requests go at most this share of the poll interval apart.
const MAX_BURST_POLL_RATIO: f64 = 0.25;
/// Lowest and highest poll exponents.
const MIN_POLL: i8 = -7;
const MAX_POLL: i8 = 24;
/// Below poll 0 only on a LAN: a path of no more delay than this.
const MAX_LAN_DELAY: f64 = 0.01;
/// A reply whose server held the request longer than this is not a sample.
pub const MAX_RESPONSE_TIME: f64 = 4.0;

/// A source's polling options (chrony's `server` options of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PollOptions {
    /// `minpoll`.
    pub minpoll: i8,
    /// `maxpoll`.
    pub maxpoll: i8,
    /// `iburst`.
    pub iburst: bool,
    /// `polltarget`: samples the regression should hold at a steady poll.
    pub polltarget: u32,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            minpoll: 6,
            maxpoll: 10,
            iburst: false,
            polltarget: 8,
        }
    }
}

/// Why a datagram from the source was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Too short, or not a server-mode reply of version 1-4.
    Format,
    /// No request outstanding, or the origin timestamp is not ours (late, spoofed).
    Origin,
    /// The same reply again.
    Duplicate,
    /// A zero timestamp.
    Timestamps,
    /// Not authenticated with the source's key (no MAC, another key, or a MAC that does
    /// not verify).
    Auth,
}

/// How a source's exchanges are authenticated.
#[derive(Clone, Debug, Default)]
pub enum SourceAuth {
    /// Not at all: a MAC in a reply is ignored, as chrony ignores it.
    #[default]
    None,
    /// With this key: requests carry its MAC, replies must too.
    Key(crate::auth::AuthKey),
    /// With a key the keyfile does not have: the source cannot be polled.
    Missing(u32),
    /// With NTS: the session from the last NTS-KE (none yet, or its cookies spent).
    Nts(NtsClient),
}

/// A source's NTS state.
#[derive(Clone, Debug, Default)]
pub struct NtsClient {
    /// The session from the last NTS-KE.
    pub session: Option<crate::nts::ClientSession>,
    /// NTS-KE attempts since the last reply that verified (chrony's count: a session
    /// whose every request gets a NAK keeps counting, and each attempt waits longer).
    pub ke_attempts: u16,
    /// When the last NTS-KE succeeded (system time, ns).
    pub last_ke_ns: Option<u64>,
    /// Sessions the source has had, from an NTS-KE or restored: chronyc's `KeyID` of an
    /// NTS source (its context number; 0 before the first).
    pub sessions: u32,
}

impl NtsClient {
    /// Whether a new NTS-KE is needed before the next request (no session, no cookie
    /// left, or a NAK no valid reply answered).
    pub fn needs_ke(&self) -> bool {
        self.session.as_ref().is_none_or(|s| !s.usable())
    }
}

/// What a valid reply says of the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reply {
    /// The reply header.
    pub header: NtpHeader,
    /// Our transmit time of the request, `CLOCK_REALTIME` ns (on the scale of `generation`).
    pub sent: u64,
    /// The clock's step count when the request left.
    pub generation: u64,
    /// Whether the server is synchronised (leap not 3, stratum 1-15, root distance
    /// under 16 s): only then is the reply a sample.
    pub synchronised: bool,
    /// A Kiss-o'-Death RATE: poll less often.
    pub kiss_rate: bool,
}

/// The polling state of one source.
#[derive(Clone, Debug)]
pub struct Poller {
    opts: PollOptions,
    poll: i8,
    score: f64,
    reach: u8,
    reach_size: u8,
    unreachable_run: u32,
    tx_count: u32,
    burst: Option<(u8, u8)>,
    outstanding: Option<(u64, u64, u64)>,
    last: Option<(NtpTimestamp, NtpTimestamp)>,
    backoff: f64,
    /// The least round-trip delay of the source's samples (for the sub-second rule).
    min_delay: f64,
    auth: SourceAuth,
}

impl Poller {
    /// A poller with `opts`; `iburst` starts with a burst.
    pub fn new(opts: PollOptions) -> Self {
        let maxpoll = opts.maxpoll.max(opts.minpoll);
        let opts = PollOptions {
            minpoll: opts.minpoll.clamp(MIN_POLL, MAX_POLL),
            maxpoll: maxpoll.clamp(MIN_POLL, MAX_POLL),
            polltarget: opts.polltarget.max(1),
            ..opts
        };
        Poller {
            opts,
            // Below poll 0 only once the path is known to be short, whatever maxpoll says
            // (as chrony: the sub-second rule has the last word).
            poll: opts.minpoll.max(0),
            score: 0.0,
            reach: 0,
            reach_size: 0,
            unreachable_run: 0,
            tx_count: 0,
            burst: opts.iburst.then_some((BURST_GOOD, BURST_TOTAL)),
            outstanding: None,
            last: None,
            backoff: 0.0,
            min_delay: f64::INFINITY,
            auth: SourceAuth::None,
        }
    }

    /// The poller authenticating its exchanges as `auth` says.
    pub fn with_auth(mut self, auth: SourceAuth) -> Self {
        self.auth = auth;
        self
    }

    /// How the exchanges are authenticated.
    pub fn auth(&self) -> &SourceAuth {
        &self.auth
    }

    /// The NTS state, for a source with NTS.
    pub fn nts_mut(&mut self) -> Option<&mut NtsClient> {
        match &mut self.auth {
            SourceAuth::Nts(n) => Some(n),
            _ => None,
        }
    }

    /// The options.
    pub fn options(&self) -> &PollOptions {
        &self.opts
    }

    /// The reachability register: bit 0 is the latest poll, set if it was answered.
    pub fn reach(&self) -> u8 {
        self.reach
    }

    /// Bits of the register filled so far (at most 8).
    pub fn reach_size(&self) -> u8 {
        self.reach_size
    }

    /// Polls in a row without an answer.
    pub fn unreachable_run(&self) -> u32 {
        self.unreachable_run
    }

    /// The score towards the next poll change (chrony's measurements.log column).
    pub fn score(&self) -> f64 {
        self.score
    }

    /// Current poll exponent.
    pub fn poll(&self) -> i8 {
        self.poll
    }

    /// Whether a burst is running.
    pub fn in_burst(&self) -> bool {
        self.burst.is_some()
    }

    /// A reference clock's poll ended, with readings (`reached`) or without.
    pub fn refclock_poll(&mut self, reached: bool) {
        self.update_reach(reached);
    }

    /// A poll that could not be sent because the source has no usable NTS keys yet (an
    /// NTS-KE pending or failing): unanswered, as chrony counts it, and the end of the
    /// last request (chrony draws a new unique identifier at such a poll, so a late reply
    /// to an earlier request is no longer taken).
    pub fn unsendable(&mut self) {
        self.update_reach(false);
        self.outstanding = None;
    }

    fn update_reach(&mut self, answered: bool) {
        self.reach = (self.reach << 1) | u8::from(answered);
        self.reach_size = (self.reach_size + 1).min(8);
        if self.reach == 0 {
            self.unreachable_run += 1;
        } else {
            self.unreachable_run = 0;
        }
    }

    /// Seconds from the last request to the next: the burst spacing during a burst, the
    /// poll interval otherwise, plus any Kiss-o'-Death back-off.
    pub fn interval(&self) -> f64 {
        let poll = 2f64.powi(i32::from(self.poll));
        let base = if self.burst.is_some() {
            MAX_BURST_INTERVAL.min(MAX_BURST_POLL_RATIO * poll)
        } else {
            poll
        };
        base + self.backoff
    }

    /// Builds the next request: `cookie` (random) goes in the transmit timestamp field and
    /// must come back as the origin; `sent` is the local send time (`CLOCK_REALTIME` ns)
    /// until the kernel's transmit timestamp replaces it, `generation` the clock's step
    /// count. `system_peer`: whether the source is the selected one. Returns the request,
    /// and whether this request found the previous one unanswered (the register shifted in
    /// a zero).
    pub fn request(
        &mut self,
        cookie: u64,
        sent: u64,
        generation: u64,
        system_peer: bool,
    ) -> (Vec<u8>, bool) {
        self.tx_count += 1;
        self.backoff = 0.0;
        let missed = self.tx_count >= 2;
        if missed {
            self.update_reach(false);
            self.adjust(if system_peer { 0.1 } else { 0.25 });
        }
        if let Some((good, total)) = self.burst.as_mut() {
            *total = total.saturating_sub(1);
            if *total == 0 || *good == 0 {
                self.burst = None;
            }
        }
        self.outstanding = Some((cookie, sent, generation));
        // As chrony: NTPv3 where NTPv4 would truncate the key's digest.
        let version = match &self.auth {
            SourceAuth::Key(k) if k.truncated_in_v4() => 3,
            _ => 4,
        };
        let mut req = NtpHeader {
            version,
            mode: wire::MODE_CLIENT,
            poll: self.poll,
            transmit_ts: NtpTimestamp(cookie),
            ..Default::default()
        }
        .serialize()
        .to_vec();
        match &mut self.auth {
            SourceAuth::Key(k) => {
                let mac = k.mac(&req, version);
                req.extend_from_slice(&mac);
            }
            SourceAuth::Nts(n) => {
                // No cookie: the engine asks for an NTS-KE first; an unsigned request
                // would only be refused.
                if let Some(signed) = n.session.as_mut().and_then(|s| s.request(&req)) {
                    req = signed;
                }
            }
            SourceAuth::None | SourceAuth::Missing(_) => {}
        }
        (req, missed)
    }

    /// Replaces the send time of the outstanding request with the kernel's transmit
    /// timestamp, when it arrives after the send.
    pub fn set_sent(&mut self, cookie: u64, sent: u64) {
        if let Some((c, s, _)) = self.outstanding.as_mut()
            && *c == cookie
        {
            *s = sent;
        }
    }

    /// Checks a datagram from the source (RFC 5905's tests 1-3, 6 and 7). A valid reply
    /// clears the outstanding request and fills a bit of the register: 1 if the server is
    /// synchronised, else 0.
    pub fn reply(&mut self, datagram: &[u8]) -> Result<Reply, Rejected> {
        let h = NtpHeader::parse(datagram).map_err(|_| Rejected::Format)?;
        if h.mode != wire::MODE_SERVER || !(1..=4).contains(&h.version) {
            return Err(Rejected::Format);
        }
        let (cookie, sent, generation) = self.outstanding.ok_or(Rejected::Origin)?;
        if h.origin_ts.0 != cookie {
            return Err(Rejected::Origin);
        }
        match &mut self.auth {
            SourceAuth::Key(k) => {
                let ok = match crate::auth::trailer(datagram) {
                    crate::auth::Trailer::Mac {
                        covered,
                        key_id,
                        digest,
                    } => key_id == k.id() && k.verify(covered, h.version, digest),
                    _ => false,
                };
                if !ok {
                    return Err(Rejected::Auth);
                }
            }
            SourceAuth::Nts(n) => {
                let checked = n.session.as_mut().map(|s| s.reply(datagram));
                match checked {
                    Some(Ok(())) => n.ke_attempts = 0,
                    // A NAK is settled at the next poll (see `NtsClient::needs_ke`).
                    Some(Err(_)) | None => return Err(Rejected::Auth),
                }
            }
            SourceAuth::None | SourceAuth::Missing(_) => {}
        }
        if self.last == Some((h.receive_ts, h.transmit_ts)) {
            return Err(Rejected::Duplicate);
        }
        if h.receive_ts.0 == 0 || h.transmit_ts.0 == 0 {
            return Err(Rejected::Timestamps);
        }
        // The first valid reply to a request is the only one taken.
        self.outstanding = None;
        self.last = Some((h.receive_ts, h.transmit_ts));
        self.tx_count = 0;
        let kiss_rate = h.leap == wire::LEAP_UNSYNC && h.stratum == 0 && &h.refid == b"RATE";
        let distance = ntp_short_to_secs(h.root_delay) / 2.0 + ntp_short_to_secs(h.root_dispersion);
        let synchronised = h.leap != wire::LEAP_UNSYNC
            && h.stratum != 0
            && h.stratum < wire::STRATUM_UNSYNC
            && distance < 16.0;
        self.update_reach(synchronised);
        if kiss_rate {
            // chrony's answer to RATE: wait four more intervals, and no burst.
            self.backoff = 4.0 * 2f64.powi(i32::from(self.poll));
            self.burst = None;
        }
        Ok(Reply {
            header: h,
            sent,
            generation,
            synchronised,
            kiss_rate,
        })
    }

    /// A good sample went into the statistics (`samples` of them now): the poll interval
    /// follows how well it was predicted. An offset further from the prediction than the
    /// sample's own distance shortens the interval at once (by the log of the ratio);
    /// otherwise it lengthens slowly once the statistics hold `polltarget` samples.
    /// `min_delay` is the least round-trip delay seen, for the sub-second rule.
    pub fn sample_taken(&mut self, error: f64, distance: f64, samples: usize, min_delay: f64) {
        self.good_reply();
        self.sample_processed(error, distance, samples, min_delay);
    }

    /// A good reply: one fewer for a burst to collect.
    pub fn good_reply(&mut self) {
        if let Some((good, _)) = self.burst.as_mut() {
            *good = good.saturating_sub(1);
            if *good == 0 {
                self.burst = None;
            }
        }
    }

    /// A sample reached the statistics (with `filter`, one per several replies): the
    /// poll follows how well it was predicted (`error` against `distance`) and how many
    /// samples the statistics hold.
    pub fn sample_processed(&mut self, error: f64, distance: f64, samples: usize, min_delay: f64) {
        let adj = if error > distance && distance > 0.0 {
            -(error / distance).log2()
        } else {
            let target = f64::from(self.opts.polltarget);
            let a = (samples as f64 / target - 1.0) / target;
            if (samples as f64) < target {
                2.0 * a
            } else {
                a
            }
        };
        self.min_delay = min_delay;
        self.adjust(adj);
    }

    /// A valid reply that was not a good sample: the interval lengthens a little (more if
    /// the reply failed chrony's test D: a loop back to us, an unsynchronised server).
    pub fn sample_refused(&mut self, test_d_failed: bool) {
        self.adjust(if test_d_failed { 0.1 } else { 0.02 });
    }

    fn adjust(&mut self, adj: f64) {
        self.score += adj;
        let mut poll = i32::from(self.poll);
        if self.score >= 1.0 {
            let k = self.score.floor();
            poll += k as i32;
            self.score -= k;
        } else if self.score < 0.0 {
            let k = (self.score - 1.0).trunc();
            poll += k as i32;
            self.score -= k;
        }
        if poll < i32::from(self.opts.minpoll) {
            poll = i32::from(self.opts.minpoll);
            self.score = 0.0;
        } else if poll > i32::from(self.opts.maxpoll) {
            poll = i32::from(self.opts.maxpoll);
            self.score = 1.0;
        }
        // Sub-second polling only on a short path to a reachable source.
        if poll < 0 && (self.reach == 0 || self.min_delay > MAX_LAN_DELAY) {
            poll = 0;
        }
        self.poll = poll as i8;
    }

    /// Starts a burst (ntpxc burst).
    pub fn start_burst(&mut self) {
        self.burst = Some((BURST_GOOD, BURST_TOTAL));
    }

    /// Forgets the outstanding request and the interval (the clock's scale jumped): poll
    /// from `minpoll` again.
    pub fn reset(&mut self) {
        self.outstanding = None;
        self.last = None;
        self.tx_count = 0;
        self.poll = self.opts.minpoll.max(0);
        self.score = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_to(req: &[u8], stratum: u8, leap: u8, refid: [u8; 4]) -> Vec<u8> {
        let q = NtpHeader::parse(req).unwrap();
        NtpHeader {
            leap,
            version: 4,
            mode: 4,
            stratum,
            refid,
            origin_ts: q.transmit_ts,
            receive_ts: NtpTimestamp((100 << 32) + u64::from(q.transmit_ts.0 as u16)),
            transmit_ts: NtpTimestamp((100 << 32) + 5 + u64::from(q.transmit_ts.0 as u16)),
            ..Default::default()
        }
        .serialize()
        .to_vec()
    }

    fn key(kind: &str) -> crate::auth::AuthKey {
        crate::auth::AuthKey::new(&crate::keys::Key {
            id: 5,
            kind: kind.into(),
            secret: b"sesame".repeat(6)[..if kind == "AES128" { 16 } else { 20 }].to_vec(),
        })
        .unwrap()
    }

    /// A reply to `req` signed by `k` as a server would, in the request's version.
    fn signed_reply(req: &[u8], k: &crate::auth::AuthKey) -> Vec<u8> {
        let version = (req[0] >> 3) & 7;
        let mut r = reply_to(&req[..48], 2, 0, [0; 4]);
        r[0] = wire::li_vn_mode(0, version, wire::MODE_SERVER);
        let mac = k.mac(&r, version);
        r.extend_from_slice(&mac);
        r
    }

    #[test]
    fn an_authenticated_source_takes_only_replies_under_its_key() {
        for (kind, version, len) in [("MD5", 4, 68), ("SHA256", 3, 84), ("AES128", 4, 68)] {
            let k = key(kind);
            let mut p = Poller::new(opts(6, 10, false)).with_auth(SourceAuth::Key(k.clone()));
            let (req, _) = p.request(0x1234_5678, 1, 0, false);
            assert_eq!((req.len(), (req[0] >> 3) & 7), (len, version), "{kind}");
            assert!(matches!(
                crate::auth::trailer(&req),
                crate::auth::Trailer::Mac { key_id: 5, .. }
            ));
            // Unsigned, signed by another key, tampered: all refused.
            assert_eq!(p.reply(&reply_to(&req, 2, 0, [0; 4])), Err(Rejected::Auth));
            let mut other = signed_reply(&req, &k);
            let n = other.len();
            other[n - 1] ^= 1;
            assert_eq!(p.reply(&other), Err(Rejected::Auth));
            let mut tampered = signed_reply(&req, &k);
            tampered[1] = 1;
            assert_eq!(p.reply(&tampered), Err(Rejected::Auth));
            assert!(p.reply(&signed_reply(&req, &k)).is_ok(), "{kind}");
        }
        // An unauthenticated source ignores a MAC, as chrony does.
        let mut p = Poller::new(opts(6, 10, false));
        let (req, _) = p.request(0x1234_5678, 1, 0, false);
        assert_eq!(req.len(), 48);
        assert!(p.reply(&signed_reply(&req, &key("MD5"))).is_ok());
    }

    #[test]
    fn an_nts_nak_asks_for_a_new_nts_ke_only_if_no_valid_reply_follows() {
        use crate::nts::{self, Aead, ClientSession, CookieKeys, NtsCheck, ServerKey};
        let server = CookieKeys::new(ServerKey::new(1, &[9; 16]).unwrap());
        let keys = nts::SessionKeys::new(Aead::Aes128GcmSiv, &[1; 16], &[2; 16]).unwrap();
        let cookies = (0..8).map(|i| server.seal(&keys, &[i; 16])).collect();
        let session = ClientSession::new(keys, cookies, [3; 16]);
        let mut p = Poller::new(opts(6, 10, false)).with_auth(SourceAuth::Nts(NtsClient {
            session: Some(session),
            ..NtsClient::default()
        }));
        let answer = |req: &[u8], nak: bool| {
            let NtsCheck::Valid(r) = nts::check_request(req, &server) else {
                panic!("the request did not verify");
            };
            let mut h = reply_to(&req[..48], 2, 0, [0; 4]);
            if nak {
                h[1] = 0;
                h[12..16].copy_from_slice(b"NTSN");
                nts::nak_response(&h, &r.uid)
            } else {
                nts::seal_response(&h, &r, &[7; 16], &[])
            }
        };
        // A NAK (anyone on the path can send one), then the server's reply: taken.
        let (req, _) = p.request(0x1234_5678, 1, 0, false);
        assert_eq!(p.reply(&answer(&req, true)), Err(Rejected::Auth));
        assert!(p.reply(&answer(&req, false)).is_ok());
        let n = p.nts_mut().unwrap();
        assert!(!n.session.as_ref().unwrap().nak());
        assert!(!n.needs_ke(), "a valid reply followed the NAK");
        // A request whose reply is lost: no NAK, nothing to settle.
        let (late, _) = p.request(0x1234_567a, 2, 0, false);
        assert!(!p.nts_mut().unwrap().needs_ke(), "a lost reply is no NAK");
        // A poll that could not be sent ends that request: its reply, late, is not taken.
        p.unsendable();
        assert_eq!(p.reply(&answer(&late, false)), Err(Rejected::Origin));
        // A NAK alone: a new NTS-KE before the next request.
        let (req, _) = p.request(0x1234_5679, 3, 0, false);
        assert_eq!(p.reply(&answer(&req, true)), Err(Rejected::Auth));
        let n = p.nts_mut().unwrap();
        assert!(n.session.as_ref().unwrap().nak(), "chronyc's NAK column");
        assert!(n.needs_ke());
    }

    fn opts(minpoll: i8, maxpoll: i8, iburst: bool) -> PollOptions {
        PollOptions {
            minpoll,
            maxpoll,
            iburst,
            polltarget: 8,
        }
    }

    #[test]
    fn iburst_sends_four_good_two_seconds_apart_then_polls() {
        let mut p = Poller::new(opts(6, 10, true));
        for i in 0..4 {
            assert_eq!(p.interval(), 2.0, "burst request {i}");
            let (req, _) = p.request(i + 1, 0, 0, false);
            p.reply(&reply_to(&req, 2, 0, *b"GPS\0")).unwrap();
            p.sample_taken(1e-6, 1e-3, i as usize + 1, 1e-3);
        }
        assert!(!p.in_burst());
        assert_eq!(p.interval(), 64.0);
    }

    #[test]
    fn reach_register_shifts_in_answers_and_misses() {
        let mut p = Poller::new(opts(4, 4, false));
        let (req, missed) = p.request(1, 0, 0, false);
        assert!(!missed);
        p.reply(&reply_to(&req, 2, 0, [0; 4])).unwrap();
        assert_eq!((p.reach(), p.reach_size()), (0b1, 1));
        p.request(2, 0, 0, false);
        let (_, missed) = p.request(3, 0, 0, false);
        assert!(missed, "the second request found the first unanswered");
        assert_eq!(p.reach(), 0b10);
        // An unsynchronised server answers, but shifts in a zero.
        let (req, _) = p.request(4, 0, 0, false);
        let r = p.reply(&reply_to(&req, 16, 3, [0; 4])).unwrap();
        assert!(!r.synchronised);
        assert_eq!(p.reach() & 1, 0);
    }

    #[test]
    fn only_the_matching_origin_is_accepted_once() {
        let mut p = Poller::new(opts(6, 10, false));
        let (req, _) = p.request(42, 7, 3, false);
        let mut bad = reply_to(&req, 2, 0, [0; 4]);
        bad[24..32].copy_from_slice(&43u64.to_be_bytes());
        assert_eq!(p.reply(&bad), Err(Rejected::Origin));
        let good = reply_to(&req, 2, 0, [0; 4]);
        let r = p.reply(&good).unwrap();
        assert_eq!((r.sent, r.generation), (7, 3));
        assert_eq!(p.reply(&good), Err(Rejected::Origin), "taken once");
        assert_eq!(p.reply(&good[..40]), Err(Rejected::Format));
    }

    #[test]
    fn kiss_rate_backs_off_other_kisses_are_just_unsynchronised() {
        let mut p = Poller::new(opts(4, 10, true));
        let (req, _) = p.request(1, 0, 0, false);
        let r = p.reply(&reply_to(&req, 0, 3, *b"RATE")).unwrap();
        assert!(r.kiss_rate && !r.synchronised);
        assert!(!p.in_burst());
        assert_eq!(p.interval(), 16.0 + 64.0);
        let (req, _) = p.request(2, 0, 0, false);
        let r = p.reply(&reply_to(&req, 0, 3, *b"DENY")).unwrap();
        assert!(!r.kiss_rate && !r.synchronised);
        assert_eq!(p.interval(), 16.0, "DENY is not acted on (as chrony)");
    }

    #[test]
    fn the_interval_follows_prediction_quality() {
        let mut p = Poller::new(opts(4, 10, false));
        // Well predicted samples: after eight, the poll rises slowly.
        for n in 1..=40 {
            p.sample_taken(1e-6, 1e-4, n.min(64), 1e-3);
        }
        assert!(p.poll() >= 6, "{}", p.poll());
        // A surprise a hundred times the distance: down by log2(100), to minpoll here.
        p.sample_taken(1e-2, 1e-4, 40, 1e-3);
        assert_eq!(p.poll(), 4);
        // Silence: each missed answer adds a quarter.
        for i in 0..16 {
            p.request(100 + i, 0, 0, false);
        }
        assert!(p.poll() >= 7, "backed off: {}", p.poll());
    }

    #[test]
    fn sub_second_polling_only_on_a_short_path() {
        // Even with maxpoll -7 the path must first prove short (chrony's 127-filter: ten
        // requests in ten seconds over 20 ms).
        let mut p = Poller::new(opts(-7, -7, false));
        assert_eq!(p.poll(), 0, "maxpoll -7 starts at 0 too");
        let (req, _) = p.request(1, 0, 0, false);
        p.reply(&reply_to(&req, 2, 0, [0; 4])).unwrap();
        p.sample_taken(1e-6, 1e-4, 1, 1e-4);
        assert_eq!(p.poll(), -7);
        let mut p = Poller::new(opts(-7, 6, false));
        assert_eq!(p.poll(), 0, "starts at 0");
        let (req, _) = p.request(1, 0, 0, false);
        p.reply(&reply_to(&req, 2, 0, [0; 4])).unwrap();
        p.sample_taken(0.1, 1e-4, 1, 1e-4);
        assert_eq!(p.poll(), -7, "a LAN path may poll below a second");
        let mut p = Poller::new(opts(-7, 6, false));
        let (req, _) = p.request(1, 0, 0, false);
        p.reply(&reply_to(&req, 2, 0, [0; 4])).unwrap();
        p.sample_taken(0.1, 1e-4, 1, 0.02);
        assert_eq!(p.poll(), 0, "not over a 20 ms path");
    }
}
