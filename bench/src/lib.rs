//! ntpx benchmarks: the load generator and the side-by-side comparison runs.
//!
//! The generator is the kernel's own: the `ntpx_load_gen` XDP program run through
//! `BPF_PROG_TEST_RUN` with live frames transmits crafted requests out of the client end of
//! a veth pair, and `ntpx_load_count`, attached to that end, times and counts the replies.
//! Everything measured is computed from those two programs' maps and from the kernel's
//! CPU accounting.

pub mod cpu;
pub mod generator;
pub mod histogram;
pub mod nts;
pub mod nts_bench;
pub mod report;
pub mod servers;
pub mod testrun;
pub mod topology;
