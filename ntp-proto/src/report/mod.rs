//! What ntpx reports, in chrony's layouts: chronyc's tables (`chronyc`), the server
//! counters (`stats`) and the log files' lines (`logfile`).

pub mod chronyc;
pub mod logfile;
pub mod stats;

pub use chronyc::*;
