//! Indices of the XDP program's per-CPU counters.

use bytemuck::{Pod, Zeroable};

/// What the XDP program keeps per CPU: its counters, and the last lookups of the served
/// address and interface MAC (a CPU mostly serves one interface's queues and one
/// address, so these spare a hash lookup each per request). One per-CPU record: a
/// request costs one map lookup for all of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CpuRecord {
    /// Every counter, indexed by [`Counter`].
    pub counters: [u64; Counter::COUNT as usize],
    /// The last interface index whose MAC was looked up ...
    pub mac_ifindex: u32,
    /// ... under this [`crate::ServerState::maps_gen`] (0: nothing cached) ...
    pub mac_gen: u32,
    /// ... and its MAC ([`crate::state::mac_value`]).
    pub mac: u64,
    /// The last IPv4 destination found served (memory order) ...
    pub local_v4: u32,
    /// ... under this generation (0: nothing cached).
    pub local_v4_gen: u32,
    /// The last IPv6 destination found served (memory order) ...
    pub local_v6: [u32; 4],
    /// ... under this generation (0: nothing cached).
    pub local_v6_gen: u32,
    /// Padding; always zero.
    pub pad: u32,
}

/// One per-CPU counter of the XDP program.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Frames seen by the program.
    Frames = 0,
    /// UDP datagrams to the served port (NTP requests of any shape).
    NtpReceived,
    /// Requests answered with `XDP_TX`.
    Answered,
    /// Passed: not IPv4/IPv6 (after up to two VLAN tags).
    PassNotIp,
    /// Passed: not UDP, or not to the served port.
    PassNotNtp,
    /// Passed: frame ends inside a header.
    PassTruncated,
    /// Passed: IPv4 header with options.
    PassIpOptions,
    /// Passed: IPv4 fragment.
    PassFragment,
    /// Passed: IPv6 extension header.
    PassIpv6Ext,
    /// Passed: NTP payload other than exactly 48 bytes (extensions, MAC, NTS, garbage).
    PassLength,
    /// Passed: not a client-mode request of version 1-4.
    PassMode,
    /// Passed: state older than its staleness limit (daemon dead or stuck).
    PassStale,
    /// Passed: daemon says do not serve from the kernel, or the state is being written.
    PassNotServing,
    /// Dropped: source denied by the access rules.
    DropDenied,
    /// Passed: not addressed to one of the served unicast addresses (forwarded, other
    /// address, broadcast or multicast).
    PassNotLocal,
    /// Dropped: a source no reply may go to (a port below 1024 other than 123;
    /// unspecified, loopback, multicast or broadcast address) or an IPv6 datagram without
    /// a UDP checksum: reflection and amplification bait.
    DropBadSource,
    /// Dropped: over the client's rate limit.
    DropRateLimit,
    /// Answered with a Kiss-o'-Death RATE (over the rate limit).
    AnsweredKod,
    /// Passed: a client in interleaved mode (the daemon has the transmit timestamps).
    PassInterleaved,
    /// Not a verdict: client records created (a record evicted from the full table is
    /// the difference between this and the records present).
    ClientRecordsCreated,
    /// Passed: addressed to another MAC than the receiving interface's (promiscuous
    /// mode); the stack discards it.
    PassOtherMac,
    /// Dropped: the IPv4 header checksum is wrong (a corrupted request, perhaps with a
    /// flipped source address).
    DropBadChecksum,
    /// Passed: the UDP checksum does not verify. The stack decides: a locally sent
    /// datagram whose checksum was left to offload is fine there, a corrupted one is
    /// dropped.
    PassUdpChecksum,
    /// Redirected: a request longer than a bare header (NTS, a MAC) to the daemon's
    /// `AF_XDP` socket for the interface and queue (`ntpxd --xsk`).
    ToXsk,
}

impl Counter {
    /// Number of counters (size of the per-CPU array).
    pub const COUNT: u32 = 24;

    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Frames,
        Counter::NtpReceived,
        Counter::Answered,
        Counter::PassNotIp,
        Counter::PassNotNtp,
        Counter::PassTruncated,
        Counter::PassIpOptions,
        Counter::PassFragment,
        Counter::PassIpv6Ext,
        Counter::PassLength,
        Counter::PassMode,
        Counter::PassStale,
        Counter::PassNotServing,
        Counter::DropDenied,
        Counter::PassNotLocal,
        Counter::DropBadSource,
        Counter::DropRateLimit,
        Counter::AnsweredKod,
        Counter::PassInterleaved,
        Counter::ClientRecordsCreated,
        Counter::PassOtherMac,
        Counter::DropBadChecksum,
        Counter::PassUdpChecksum,
        Counter::ToXsk,
    ];

    /// Short stable name, used by `ntpxc` and the tests.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Frames => "frames",
            Counter::NtpReceived => "ntp-received",
            Counter::Answered => "answered",
            Counter::PassNotIp => "pass-not-ip",
            Counter::PassNotNtp => "pass-not-ntp",
            Counter::PassTruncated => "pass-truncated",
            Counter::PassIpOptions => "pass-ip-options",
            Counter::PassFragment => "pass-fragment",
            Counter::PassIpv6Ext => "pass-ipv6-ext",
            Counter::PassLength => "pass-length",
            Counter::PassMode => "pass-mode",
            Counter::PassStale => "pass-stale",
            Counter::PassNotServing => "pass-not-serving",
            Counter::DropDenied => "drop-denied",
            Counter::PassNotLocal => "pass-not-local",
            Counter::DropBadSource => "drop-bad-source",
            Counter::DropRateLimit => "drop-ratelimit",
            Counter::AnsweredKod => "answered-kod",
            Counter::PassInterleaved => "pass-interleaved",
            Counter::ClientRecordsCreated => "client-records-created",
            Counter::PassOtherMac => "pass-other-mac",
            Counter::DropBadChecksum => "drop-bad-checksum",
            Counter::PassUdpChecksum => "pass-udp-checksum",
            Counter::ToXsk => "to-xsk",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_at_its_index_with_a_unique_name() {
        assert_eq!(Counter::ALL.len(), Counter::COUNT as usize);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }
}
