//! The operating system around the daemon: files it reads and writes, the pidfile,
//! privileges, and systemd.

pub mod atomic_file;
pub mod config_files;
pub mod drift_file;
pub mod leap_zone;
pub mod log_files;
pub mod notify;
pub mod pidfile;
pub mod privdrop;
