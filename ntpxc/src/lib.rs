//! ntpxc, the control client of ntpxd: its transport (`client`), shared with the daemon's
//! tests; the command line is the binary's.

pub mod client;
