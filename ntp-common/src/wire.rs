//! NTP header layout constants (RFC 5905, section 7.3) shared by both answering paths.

/// Length of an NTP header without extension fields or MAC.
pub const NTP_HEADER_LEN: usize = 48;
/// Default NTP UDP port.
pub const NTP_PORT: u16 = 123;

/// Offset of the LI/VN/mode byte.
pub const OFF_LI_VN_MODE: usize = 0;
/// Offset of the stratum byte.
pub const OFF_STRATUM: usize = 1;
/// Offset of the poll exponent.
pub const OFF_POLL: usize = 2;
/// Offset of the precision exponent.
pub const OFF_PRECISION: usize = 3;
/// Offset of the root delay (NTP short format).
pub const OFF_ROOT_DELAY: usize = 4;
/// Offset of the root dispersion (NTP short format).
pub const OFF_ROOT_DISP: usize = 8;
/// Offset of the reference id.
pub const OFF_REFID: usize = 12;
/// Offset of the reference timestamp.
pub const OFF_REF_TS: usize = 16;
/// Offset of the origin timestamp.
pub const OFF_ORIGIN_TS: usize = 24;
/// Offset of the receive timestamp.
pub const OFF_RECEIVE_TS: usize = 32;
/// Offset of the transmit timestamp.
pub const OFF_TRANSMIT_TS: usize = 40;

/// Association mode of a client request.
pub const MODE_CLIENT: u8 = 3;
/// Association mode of a server reply.
pub const MODE_SERVER: u8 = 4;
/// Lowest protocol version answered.
pub const MIN_VERSION: u8 = 1;
/// Highest protocol version answered.
pub const MAX_VERSION: u8 = 4;

/// Leap indicator: no warning.
pub const LEAP_NONE: u8 = 0;
/// Leap indicator: last minute of the day has 61 seconds.
pub const LEAP_INSERT: u8 = 1;
/// Leap indicator: last minute of the day has 59 seconds.
pub const LEAP_DELETE: u8 = 2;
/// Leap indicator: clock unsynchronized.
pub const LEAP_UNSYNC: u8 = 3;

/// Stratum reported while unsynchronized (RFC 5905: 16 = unsynchronized).
pub const STRATUM_UNSYNC: u8 = 16;

/// Seconds from the NTP era 0 epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
/// Nanoseconds per second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Splits the first header byte into (leap, version, mode).
#[inline(always)]
pub const fn split_li_vn_mode(b: u8) -> (u8, u8, u8) {
    (b >> 6, (b >> 3) & 7, b & 7)
}

/// Builds the first header byte from (leap, version, mode).
#[inline(always)]
pub const fn li_vn_mode(leap: u8, version: u8, mode: u8) -> u8 {
    ((leap & 3) << 6) | ((version & 7) << 3) | (mode & 7)
}

/// Whether a request header byte is one the fast path answers: client mode, versions 1-4.
#[inline(always)]
pub const fn is_answerable_request(b: u8) -> bool {
    let (_, version, mode) = split_li_vn_mode(b);
    mode == MODE_CLIENT && version >= MIN_VERSION && version <= MAX_VERSION
}
