//! The contract between the ntpx XDP program and its userspace daemon.
//!
//! Everything here is compiled twice, for `bpfel-unknown-none` and for the host, so the
//! map layouts and the timebase arithmetic cannot drift apart between the two sides.
#![cfg_attr(not(test), no_std)]
// The eBPF side wants these small functions inlined into the program (no BPF-to-BPF calls
// for the verifier to follow); the hint is deliberate.
#![allow(clippy::inline_always)]

pub mod counters;
pub mod load;
pub mod prng;
pub mod state;
pub mod timebase;
pub mod wire;

pub use counters::Counter;
pub use state::{AclValue, ClientRecord, RateLimit, RateVerdict, ServerState, Timebase};
