//! Map values written by `ntpxd` and read by the XDP program.

use bytemuck::{Pod, Zeroable};

/// How served time follows the kernel's CLOCK_TAI (see [`Timebase::served_unix_ns`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Timebase {
    /// CLOCK_TAI reading, in ns, at which this timebase was published.
    pub t0_tai_ns: u64,
    /// Served time at `t0_tai_ns`, in ns since the Unix epoch.
    pub base_unix_ns: u64,
    /// Rate of served time relative to CLOCK_TAI, minus one, in units of 2^-32.
    pub rate_frac: i64,
    /// Age in ns after which the state is stale and the kernel stops answering.
    pub max_age_ns: u64,
}

/// The server's public state: what every reply says about the server's clock.
///
/// Lives in a one-entry `BPF_F_MMAPABLE` array. `seq` is a sequence lock: the daemon makes it
/// odd while it writes, even when done; readers retry or give up on an odd or changed value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ServerState {
    /// Sequence lock counter (odd while an update is in progress).
    pub seq: u64,
    /// The mapping from CLOCK_TAI to served time.
    pub timebase: Timebase,
    /// Reference timestamp, NTP 32.32 format.
    pub ref_ts: u64,
    /// Root dispersion at `timebase.t0_tai_ns`, in ns (grown by 15 ppm of age when served).
    pub root_disp_ns: u64,
    /// Root delay, NTP short (16.16) format.
    pub root_delay: u32,
    /// Reference id as it goes on the wire.
    pub refid: [u8; 4],
    /// Leap indicator (0-3).
    pub leap: u8,
    /// Stratum (1-16).
    pub stratum: u8,
    /// Precision exponent (log2 seconds).
    pub precision: i8,
    /// Non-zero when the kernel may answer; zero passes every request to userspace.
    pub serve: u8,
    /// Lowest poll exponent put in a reply (a client's higher poll is echoed).
    pub min_poll: i8,
    /// Padding; always zero.
    pub _pad: [u8; 3],
}

/// Value of the access-control LPM tries.
pub type AclValue = u32;
/// [`AclValue`] of a prefix whose clients are served.
pub const ACL_ALLOW: AclValue = 1;
/// [`AclValue`] of a prefix whose clients are dropped.
pub const ACL_DENY: AclValue = 2;

/// Largest number of entries in each access-control trie.
pub const ACL_MAX_ENTRIES: u32 = 4096;

/// Name of the state map in the eBPF object.
pub const MAP_STATE: &str = "NTPX_STATE";
/// Name of the per-CPU counter map.
pub const MAP_COUNTERS: &str = "NTPX_COUNTERS";
/// Name of the IPv4 access-control trie.
pub const MAP_ACL_V4: &str = "NTPX_ACL_V4";
/// Name of the IPv6 access-control trie.
pub const MAP_ACL_V6: &str = "NTPX_ACL_V6";
/// Name of the IPv4 served-address set.
pub const MAP_LOCAL_V4: &str = "NTPX_LOCAL_V4";
/// Name of the IPv6 served-address set.
pub const MAP_LOCAL_V6: &str = "NTPX_LOCAL_V6";
/// Largest number of served addresses of each family.
pub const LOCAL_MAX_ENTRIES: u32 = 256;
/// Name of the served-port global (set at load time).
pub const GLOBAL_PORT: &str = "NTPX_PORT";
/// Name of the NTP answering XDP program.
pub const PROG_SERVE: &str = "ntpx_serve";
/// Name of the pass-through XDP program (for veth peers in tests and labs).
pub const PROG_PASS: &str = "ntpx_pass";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_one_both_sides_compile() {
        // The XDP program and the daemon agree on this layout; a change must be deliberate.
        assert_eq!(core::mem::size_of::<Timebase>(), 32);
        assert_eq!(core::mem::size_of::<ServerState>(), 72);
        assert_eq!(core::mem::align_of::<ServerState>(), 8);
        assert_eq!(core::mem::offset_of!(ServerState, seq), 0);
        assert_eq!(core::mem::offset_of!(ServerState, root_delay), 56);
        assert_eq!(core::mem::offset_of!(ServerState, leap), 64);
    }
}
