//! ntpx's sans-IO core: everything the daemon decides, apart from how it talks to sockets,
//! clocks and BPF maps.
//!
//! Time enters only as arguments or through the clock traits in [`clock`]; datagrams
//! enter as byte slices; files as bytes or through [`config::ConfigFiles`]. So every rule
//! here is a plain unit test, and the simulator in the tests runs the same steering code
//! the daemon runs.
#![forbid(unsafe_code)]

pub mod acl;
pub mod auth;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod control;
pub mod drift;
pub mod engine;
pub mod frame;
pub mod hwclock;
pub mod keys;
pub mod leaptz;
pub mod nts;
pub mod packet;
pub mod poller;
pub mod refclock;
pub mod refclock_formats;
pub mod reference;
pub mod report;
pub mod server;
pub mod serving;
pub mod sync;

#[cfg(test)]
mod sim;
