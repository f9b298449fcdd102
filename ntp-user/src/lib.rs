//! ntpx userspace: the daemon `ntpxd`, the control client `ntpxc`, and the modules they share.
//!
//! The protocol and decision logic (`packet`, `config`, `acl`, `server`, `reference`) are
//! sans-IO; sockets, clocks and BPF maps live in `net`, `clock` and `kernel`.

pub mod acl;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod drift;
pub mod engine;
pub mod ifaces;
pub mod kernel;
pub mod keys;
pub mod leaptz;
pub mod logfiles;
pub mod net;
pub mod notify;
pub mod packet;
pub mod privdrop;
pub mod reference;
pub mod report;
pub mod server;
pub mod source;
pub mod stats;
pub mod steered;
pub mod sync;
pub mod sync_task;
pub mod sysclock;
pub mod virtclock;

/// The XDP object built from `ntp-ebpf`, embedded at build time.
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ntpx.bpf.o"));
