//! The log files (`logdir`, `log`): the lines `ntp_proto::report::logfile` makes, appended
//! to their files.

use anyhow::{Context, Result};
use ntp_proto::{
    engine::Log,
    report::logfile::{LogBook, Record},
};
use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Mutex,
};
use tracing::{error, info, warn};

/// The log files enabled by `log`, in `logdir`.
#[derive(Debug, Default)]
pub struct LogFiles {
    dir: Option<PathBuf>,
    book: LogBook,
}

impl LogFiles {
    /// Logs `kinds` ("measurements", "statistics", "tracking") into `dir`.
    pub fn new(dir: Option<&Path>, kinds: &[String]) -> Self {
        LogFiles {
            dir: dir.map(Path::to_path_buf),
            book: LogBook::new(kinds),
        }
    }

    /// Appends `r` to its file (with a banner when one is due); a no-op if not enabled.
    pub fn write(&mut self, r: &Record) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let Some((file, text)) = self.book.entry(r) else {
            return Ok(());
        };
        let path = dir.join(file);
        // Never through a link someone planted in the log directory.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Where the engine's log lines go: messages to the daemon's log, records to the log
/// files, and a fatal error to whoever waits to end the daemon.
#[derive(Debug)]
pub struct Journal {
    files: Mutex<LogFiles>,
    fatal: tokio::sync::watch::Sender<Option<String>>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new(LogFiles::default())
    }
}

impl Journal {
    /// A journal writing records to `files`.
    pub fn new(files: LogFiles) -> Self {
        Journal {
            files: Mutex::new(files),
            fatal: tokio::sync::watch::channel(None).0,
        }
    }

    /// Learns of the first fatal error the engine reports (the daemon must then exit).
    pub fn fatal(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    /// Writes the engine's log lines and log-file records.
    pub fn emit(&self, log: Vec<Log>) {
        for l in log {
            match l {
                Log::Info(m) => info!("{m}"),
                Log::Warn(m) => warn!("{m}"),
                Log::Fatal(m) => {
                    error!("{m}");
                    self.fatal.send_if_modified(|f| {
                        let first = f.is_none();
                        if first {
                            *f = Some(m);
                        }
                        first
                    });
                }
                Log::Record(r) => {
                    if let Err(e) = crate::lock(&self.files).write(&r) {
                        warn!("{e:#}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracking() -> Record {
        Record::Tracking {
            time: 1_795_531_348.0,
            addr: "10.231.0.1".into(),
            stratum: 4,
            figures: [
                -3.541, 0.075, -8.621e-6, 2.94e-3, -2.084e-4, 1.534e-2, 3.472e-3,
            ],
            leap: 0,
            combined: 2,
        }
    }

    #[test]
    fn files_get_a_banner_every_32_lines_and_only_enabled_kinds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut logs = LogFiles::new(Some(dir), &["tracking".to_string()]);
        for _ in 0..40 {
            logs.write(&tracking()).unwrap();
        }
        let stats = Record::Statistics {
            time: 0.0,
            addr: "x".into(),
            figures: [0.0; 5],
            fit: ntp_proto::sync::sourcestats::FitRecord::default(),
            runs: 1,
        };
        logs.write(&stats).unwrap();
        let text = std::fs::read_to_string(dir.join("tracking.log")).unwrap();
        assert_eq!(text.lines().filter(|l| l.contains("Date (UTC)")).count(), 2);
        assert_eq!(text.lines().filter(|l| l.starts_with("2026-")).count(), 40);
        assert!(!dir.join("statistics.log").exists());
    }

    #[test]
    fn a_fatal_line_reaches_whoever_ends_the_daemon_once() {
        let j = Journal::default();
        let rx = j.fatal();
        assert!(rx.borrow().is_none());
        j.emit(vec![Log::Warn("just a warning".into())]);
        assert!(rx.borrow().is_none());
        j.emit(vec![
            Log::Fatal("first".into()),
            Log::Fatal("second".into()),
        ]);
        assert_eq!(rx.borrow().as_deref(), Some("first"));
    }
}
