//! Polling one upstream server: when to send, which replies to accept, the reachability
//! register and the poll interval. Sans-IO: the caller supplies timestamps and datagrams.

use crate::packet::{NtpHeader, NtpTimestamp};
use ntp_common::wire::{self, NTP_HEADER_LEN};

/// Requests sent at the start with `iburst` (chrony sends four, two seconds apart).
pub const IBURST_COUNT: u8 = 4;
/// Interval between `iburst` requests, seconds.
pub const IBURST_INTERVAL: f64 = 2.0;
/// Valid samples at one poll interval before it may grow.
pub const POLL_RAISE_AFTER: u32 = 8;

/// Kiss-o'-Death codes that change how a source is polled (RFC 5905 section 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kiss {
    /// RATE: poll less often.
    Rate,
    /// DENY or RSTR: the server refuses us; stop polling.
    Deny,
    /// Any other code: ignore the reply.
    Other([u8; 4]),
}

/// Why a datagram from the source's address was not taken as a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Too short, or not a server-mode reply of version 1-4.
    Format,
    /// No request outstanding, or the origin timestamp is not ours (late, duplicate, spoofed).
    Origin,
    /// The server is not synchronized (leap 3 or stratum 16 or more).
    Unsynchronised,
    /// Timestamps that cannot be right (zero, or transmit before receive).
    Timestamps,
    /// Root distance beyond any use (RFC 5905: 16 s).
    Distance,
}

/// What a reply was.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplyOutcome {
    /// A valid reply: the header and the local send timestamp of its request.
    Valid {
        /// The reply header.
        header: NtpHeader,
        /// Our transmit time of the request, `CLOCK_REALTIME` ns.
        sent: u64,
    },
    /// A Kiss-o'-Death.
    Kiss(Kiss),
    /// Not usable.
    Rejected(Rejected),
}

/// The polling state of one source.
#[derive(Clone, Debug)]
pub struct Poller {
    minpoll: i8,
    maxpoll: i8,
    poll: i8,
    reach: u8,
    burst_left: u8,
    outstanding: Option<(u64, u64)>,
    stopped: bool,
    good_at_poll: u32,
}

impl Poller {
    /// A poller for `minpoll..=maxpoll`, with an initial burst if `iburst`.
    pub fn new(minpoll: i8, maxpoll: i8, iburst: bool) -> Self {
        Poller {
            minpoll,
            maxpoll: maxpoll.max(minpoll),
            poll: minpoll,
            reach: 0,
            burst_left: if iburst { IBURST_COUNT } else { 0 },
            outstanding: None,
            stopped: false,
            good_at_poll: 0,
        }
    }

    /// The reachability register: bit 0 is the latest poll, set if it was answered.
    pub fn reach(&self) -> u8 {
        self.reach
    }

    /// Current poll exponent.
    pub fn poll(&self) -> i8 {
        self.poll
    }

    /// Whether a DENY/RSTR stopped polling.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Seconds to wait before the next request.
    pub fn interval(&self) -> f64 {
        if self.burst_left > 0 {
            IBURST_INTERVAL.min(2f64.powi(self.poll as i32))
        } else {
            2f64.powi(self.poll as i32)
        }
    }

    /// Builds the next request; `cookie` (random) goes in the transmit timestamp field and
    /// must come back as the origin. `sent` is the local send time, `CLOCK_REALTIME` ns.
    pub fn request(&mut self, cookie: u64, sent: u64) -> [u8; NTP_HEADER_LEN] {
        // The previous request went unanswered if it is still outstanding: shift a 0 in.
        self.reach <<= 1;
        self.burst_left = self.burst_left.saturating_sub(1);
        self.outstanding = Some((cookie, sent));
        NtpHeader {
            version: 4,
            mode: wire::MODE_CLIENT,
            poll: self.poll,
            transmit_ts: NtpTimestamp(cookie),
            ..Default::default()
        }
        .serialize()
    }

    /// Replaces the send time of the outstanding request with the kernel's transmit
    /// timestamp, when it arrives after the send.
    pub fn set_sent(&mut self, cookie: u64, sent: u64) {
        if let Some((c, s)) = self.outstanding.as_mut()
            && *c == cookie
        {
            *s = sent;
        }
    }

    /// Classifies a datagram from the source.
    pub fn reply(&mut self, datagram: &[u8]) -> ReplyOutcome {
        let Ok(h) = NtpHeader::parse(datagram) else {
            return ReplyOutcome::Rejected(Rejected::Format);
        };
        if h.mode != wire::MODE_SERVER || !(1..=4).contains(&h.version) {
            return ReplyOutcome::Rejected(Rejected::Format);
        }
        let Some((cookie, sent)) = self.outstanding else {
            return ReplyOutcome::Rejected(Rejected::Origin);
        };
        if h.origin_ts.0 != cookie {
            return ReplyOutcome::Rejected(Rejected::Origin);
        }
        // The origin matched: the server answered this poll, whatever it said.
        self.outstanding = None;
        self.reach |= 1;
        if h.stratum == 0 {
            let kiss = match &h.refid {
                b"RATE" => Kiss::Rate,
                b"DENY" | b"RSTR" => Kiss::Deny,
                other => Kiss::Other(*other),
            };
            match kiss {
                Kiss::Rate => {
                    self.poll = (self.poll + 1).min(self.maxpoll.max(self.minpoll + 1));
                    self.good_at_poll = 0;
                }
                Kiss::Deny => self.stopped = true,
                Kiss::Other(_) => {}
            }
            return ReplyOutcome::Kiss(kiss);
        }
        if h.leap == wire::LEAP_UNSYNC || h.stratum >= wire::STRATUM_UNSYNC {
            return ReplyOutcome::Rejected(Rejected::Unsynchronised);
        }
        if h.transmit_ts.0 == 0 || h.receive_ts.0 == 0 || h.transmit_ts < h.receive_ts {
            return ReplyOutcome::Rejected(Rejected::Timestamps);
        }
        let root_distance = crate::packet::ntp_short_to_secs(h.root_delay) / 2.0
            + crate::packet::ntp_short_to_secs(h.root_dispersion);
        if root_distance > 16.0 {
            return ReplyOutcome::Rejected(Rejected::Distance);
        }
        ReplyOutcome::Valid { header: h, sent }
    }

    /// Reports that a valid sample was used; after enough at this interval the interval
    /// doubles, up to `maxpoll`.
    pub fn sample_used(&mut self) {
        self.good_at_poll += 1;
        if self.burst_left == 0 && self.good_at_poll >= POLL_RAISE_AFTER && self.poll < self.maxpoll
        {
            self.poll += 1;
            self.good_at_poll = 0;
        }
    }

    /// Starts a burst of four requests at the burst interval (ntpxc burst).
    pub fn start_burst(&mut self) {
        self.burst_left = IBURST_COUNT;
    }

    /// Reports that the source is not reachable any more: poll at the minimum again.
    pub fn reset_poll(&mut self) {
        self.poll = self.minpoll;
        self.good_at_poll = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_to(req: &[u8; 48], stratum: u8, leap: u8, refid: [u8; 4]) -> Vec<u8> {
        let q = NtpHeader::parse(req).unwrap();
        NtpHeader {
            leap,
            version: 4,
            mode: 4,
            stratum,
            refid,
            origin_ts: q.transmit_ts,
            receive_ts: NtpTimestamp(100 << 32),
            transmit_ts: NtpTimestamp((100 << 32) + 5),
            ..Default::default()
        }
        .serialize()
        .to_vec()
    }

    #[test]
    fn iburst_then_minpoll() {
        let mut p = Poller::new(-2, 3, true);
        let mut intervals = Vec::new();
        for i in 0..6 {
            intervals.push(p.interval());
            let _ = p.request(i, 0);
        }
        // 2^-2 s is shorter than the burst spacing, so the burst runs at minpoll.
        assert_eq!(intervals, [0.25, 0.25, 0.25, 0.25, 0.25, 0.25]);
        let mut p = Poller::new(6, 10, true);
        let mut intervals = Vec::new();
        for i in 0..6 {
            intervals.push(p.interval());
            let _ = p.request(i, 0);
        }
        assert_eq!(intervals, [2.0, 2.0, 2.0, 2.0, 64.0, 64.0]);
    }

    #[test]
    fn reach_register_shifts_in_answers() {
        let mut p = Poller::new(6, 10, false);
        for (i, answered) in [true, false, true, true].into_iter().enumerate() {
            let req = p.request(1000 + i as u64, i as u64);
            if answered {
                assert!(matches!(
                    p.reply(&reply_to(&req, 2, 0, *b"GPS\0")),
                    ReplyOutcome::Valid { .. }
                ));
            }
        }
        assert_eq!(p.reach(), 0b1011);
        for i in 0..8 {
            let _ = p.request(2000 + i, 0);
        }
        assert_eq!(p.reach(), 0, "eight unanswered polls clear the register");
    }

    #[test]
    fn only_the_matching_origin_is_accepted_once() {
        let mut p = Poller::new(6, 10, false);
        let old = p.request(1, 0);
        let req = p.request(2, 15);
        assert_eq!(
            p.reply(&reply_to(&old, 2, 0, [0; 4])),
            ReplyOutcome::Rejected(Rejected::Origin)
        );
        let r = reply_to(&req, 2, 0, [0; 4]);
        let ReplyOutcome::Valid { sent, .. } = p.reply(&r) else {
            panic!()
        };
        assert_eq!(sent, 15);
        assert_eq!(
            p.reply(&r),
            ReplyOutcome::Rejected(Rejected::Origin),
            "a duplicate is not a second sample"
        );
    }

    #[test]
    fn bad_replies_are_rejected() {
        let mut p = Poller::new(6, 10, false);
        let req = p.request(7, 0);
        assert_eq!(
            p.reply(&[0u8; 20]),
            ReplyOutcome::Rejected(Rejected::Format)
        );
        let mut client_mode = reply_to(&req, 2, 0, [0; 4]);
        client_mode[0] = wire::li_vn_mode(0, 4, 3);
        assert_eq!(
            p.reply(&client_mode),
            ReplyOutcome::Rejected(Rejected::Format)
        );
        assert_eq!(
            p.reply(&reply_to(&req, 2, 3, [0; 4])),
            ReplyOutcome::Rejected(Rejected::Unsynchronised)
        );
        let req = p.request(8, 0);
        assert_eq!(
            p.reply(&reply_to(&req, 16, 0, [0; 4])),
            ReplyOutcome::Rejected(Rejected::Unsynchronised)
        );
        let req = p.request(9, 0);
        let mut zero_tx = reply_to(&req, 2, 0, [0; 4]);
        zero_tx[40..48].fill(0);
        assert_eq!(
            p.reply(&zero_tx),
            ReplyOutcome::Rejected(Rejected::Timestamps)
        );
    }

    #[test]
    fn kiss_codes_change_polling() {
        let mut p = Poller::new(4, 10, false);
        let req = p.request(1, 0);
        assert_eq!(
            p.reply(&reply_to(&req, 0, 3, *b"RATE")),
            ReplyOutcome::Kiss(Kiss::Rate)
        );
        assert_eq!(p.poll(), 5);
        let req = p.request(2, 0);
        assert_eq!(
            p.reply(&reply_to(&req, 0, 3, *b"DENY")),
            ReplyOutcome::Kiss(Kiss::Deny)
        );
        assert!(p.stopped());
    }

    #[test]
    fn poll_grows_with_good_samples_up_to_maxpoll() {
        let mut p = Poller::new(4, 5, false);
        for _ in 0..(3 * POLL_RAISE_AFTER) {
            p.sample_used();
        }
        assert_eq!(p.poll(), 5);
        p.reset_poll();
        assert_eq!(p.poll(), 4);
    }
}
