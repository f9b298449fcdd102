//! NTP header wire format (RFC 5905 section 7.3), without extension fields.

use ntp_common::wire::{self, NTP_HEADER_LEN, NTP_UNIX_OFFSET_SECS};

/// An NTP 32.32 timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// From ns since the Unix epoch (era 0 arithmetic, wrapping into later eras).
    pub fn from_unix_ns(ns: u64) -> Self {
        NtpTimestamp(ntp_common::timebase::unix_ns_to_ntp(ns))
    }

    /// To ns since the Unix epoch, choosing the era closest to `pivot_unix_ns`.
    pub fn to_unix_ns(self, pivot_unix_ns: u64) -> i128 {
        let secs = (self.0 >> 32) as i128;
        let frac = (self.0 & 0xffff_ffff) as i128;
        let era_ns = (1i128 << 32) * 1_000_000_000;
        let ns_in_era = secs * 1_000_000_000 + ((frac * 1_000_000_000) >> 32);
        let base = ns_in_era - (NTP_UNIX_OFFSET_SECS as i128) * 1_000_000_000;
        // Pick the era that lands nearest the pivot.
        let pivot = pivot_unix_ns as i128;
        let k = (pivot - base + era_ns / 2).div_euclid(era_ns);
        base + k * era_ns
    }
}

/// Seconds in NTP short format (16.16).
pub fn ntp_short_to_secs(v: u32) -> f64 {
    v as f64 / 65536.0
}

/// An NTP header, fields as on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NtpHeader {
    /// Leap indicator (0-3).
    pub leap: u8,
    /// Protocol version (0-7).
    pub version: u8,
    /// Association mode (0-7).
    pub mode: u8,
    /// Stratum.
    pub stratum: u8,
    /// Poll exponent.
    pub poll: i8,
    /// Precision exponent.
    pub precision: i8,
    /// Root delay, 16.16.
    pub root_delay: u32,
    /// Root dispersion, 16.16.
    pub root_dispersion: u32,
    /// Reference id.
    pub refid: [u8; 4],
    /// Reference timestamp.
    pub reference_ts: NtpTimestamp,
    /// Origin timestamp.
    pub origin_ts: NtpTimestamp,
    /// Receive timestamp.
    pub receive_ts: NtpTimestamp,
    /// Transmit timestamp.
    pub transmit_ts: NtpTimestamp,
}

/// Why a datagram is not an NTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than 48 bytes.
    #[error("datagram of {0} bytes is shorter than an NTP header (48)")]
    TooShort(usize),
}

fn be_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

impl NtpHeader {
    /// Parses the first 48 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        if b.len() < NTP_HEADER_LEN {
            return Err(ParseError::TooShort(b.len()));
        }
        let (leap, version, mode) = wire::split_li_vn_mode(b[0]);
        let mut refid = [0u8; 4];
        refid.copy_from_slice(&b[wire::OFF_REFID..wire::OFF_REFID + 4]);
        Ok(NtpHeader {
            leap,
            version,
            mode,
            stratum: b[wire::OFF_STRATUM],
            poll: b[wire::OFF_POLL] as i8,
            precision: b[wire::OFF_PRECISION] as i8,
            root_delay: be_u32(b, wire::OFF_ROOT_DELAY),
            root_dispersion: be_u32(b, wire::OFF_ROOT_DISP),
            refid,
            reference_ts: NtpTimestamp(be_u64(b, wire::OFF_REF_TS)),
            origin_ts: NtpTimestamp(be_u64(b, wire::OFF_ORIGIN_TS)),
            receive_ts: NtpTimestamp(be_u64(b, wire::OFF_RECEIVE_TS)),
            transmit_ts: NtpTimestamp(be_u64(b, wire::OFF_TRANSMIT_TS)),
        })
    }

    /// Serializes to the 48-byte wire form.
    pub fn serialize(&self) -> [u8; NTP_HEADER_LEN] {
        let mut b = [0u8; NTP_HEADER_LEN];
        b[0] = wire::li_vn_mode(self.leap, self.version, self.mode);
        b[wire::OFF_STRATUM] = self.stratum;
        b[wire::OFF_POLL] = self.poll as u8;
        b[wire::OFF_PRECISION] = self.precision as u8;
        b[wire::OFF_ROOT_DELAY..][..4].copy_from_slice(&self.root_delay.to_be_bytes());
        b[wire::OFF_ROOT_DISP..][..4].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[wire::OFF_REFID..][..4].copy_from_slice(&self.refid);
        b[wire::OFF_REF_TS..][..8].copy_from_slice(&self.reference_ts.0.to_be_bytes());
        b[wire::OFF_ORIGIN_TS..][..8].copy_from_slice(&self.origin_ts.0.to_be_bytes());
        b[wire::OFF_RECEIVE_TS..][..8].copy_from_slice(&self.receive_ts.0.to_be_bytes());
        b[wire::OFF_TRANSMIT_TS..][..8].copy_from_slice(&self.transmit_ts.0.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_every_field() {
        let h = NtpHeader {
            leap: 3,
            version: 4,
            mode: 4,
            stratum: 3,
            poll: -4,
            precision: -25,
            root_delay: 0x0001_8000,
            root_dispersion: 0x0000_0042,
            refid: *b"LOCL",
            reference_ts: NtpTimestamp(0x0123_4567_89ab_cdef),
            origin_ts: NtpTimestamp(1),
            receive_ts: NtpTimestamp(u64::MAX),
            transmit_ts: NtpTimestamp(0xdead_beef_0000_0001),
        };
        let b = h.serialize();
        assert_eq!(b[0], 0b11_100_100);
        assert_eq!(b[2], 0xfc);
        assert_eq!(&b[12..16], b"LOCL");
        assert_eq!(NtpHeader::parse(&b).unwrap(), h);
    }

    #[test]
    fn short_datagram_is_rejected() {
        assert_eq!(NtpHeader::parse(&[0u8; 47]), Err(ParseError::TooShort(47)));
    }

    #[test]
    fn unix_epoch_is_ntp_2208988800() {
        assert_eq!(NtpTimestamp::from_unix_ns(0).0, 2_208_988_800u64 << 32);
        // Half a second is 2^31 in the fraction.
        assert_eq!(
            NtpTimestamp::from_unix_ns(500_000_000).0 & 0xffff_ffff,
            1 << 31
        );
    }

    #[test]
    fn timestamps_round_trip_within_a_nanosecond_across_the_2036_era() {
        for ns in [
            0u64,
            1_700_000_000_123_456_789,
            // 2036-02-07T06:28:16Z is where era 0 ends.
            2_085_978_496_000_000_000 - 1,
            2_085_978_496_000_000_000 + 999_999_999,
        ] {
            let back = NtpTimestamp::from_unix_ns(ns).to_unix_ns(ns);
            assert!((back - ns as i128).abs() <= 1, "{ns} came back as {back}");
        }
    }
}
