//! ntpx's daemon `ntpxd`: the IO edges around the sans-IO core in `ntp_proto`.
//!
//! - `daemon`: start-up, the shared state, the NTP socket, the control server, the exit;
//! - `sources`: polling upstream servers and resolving their names;
//! - `clock`: reading and steering the system clock;
//! - `xdp`: loading and attaching the fast path, its maps, the interfaces it serves;
//! - `net`: UDP sockets with kernel timestamps;
//! - `os`: files, the pidfile, privileges, systemd.

pub mod clock;
pub mod daemon;
pub mod net;
pub mod os;
pub mod refclocks;
pub mod sources;
pub mod xdp;

pub use ntp_proto;

/// The serving XDP object (`ntpx_serve`, `ntpx_pass`) built from `ntp-ebpf`, embedded at
/// build time.
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ntpx"));

/// The benchmark's XDP object (load generator, reply counter, bare bounce), for the bench.
#[cfg(feature = "bench")]
pub const BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ntpx-bench"));

/// Locks a mutex, recovering the data if a panicking holder poisoned it (the values are
/// plain state, valid after any partial update).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
