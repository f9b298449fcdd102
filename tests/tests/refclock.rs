//! Reference clocks against real writers, side by side with chronyd (Debian's 4.3) reading the same
//! samples: an NTP shared-memory segment (the protocol gpsd, phc2sys and ntpshm writers
//! use) and a SOCK socket (gpsd's chrony socket); and gpsd itself (Debian's 3.22) fed
//! NMEA through a pty. Both daemons run with clock control off, so each reports how far
//! the system clock is from the reference. Needs root.

use anyhow::{Context, Result, bail};
use ntp_proto::refclock_formats::ShmFields as ShmTime;
use ntpx_tests::{Netns, Ntpxd, Proc, chronyc, chronyd, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far ahead of the system clock the writers put the reference.
const SHM_OFFSET_NS: i64 = 250_000_000;
const SOCK_OFFSET: f64 = -0.125;

/// A writer thread that stops (and cleans up) when dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Writes one sample (times in ns since the epoch) as a mode-1 writer does: count odd
/// while the fields change, even and `valid` set once they are written.
///
/// # Safety
/// `p` must point to an attached segment of at least `size_of::<ShmTime>()` bytes.
unsafe fn write_sample(p: *mut ShmTime, count: i32, clock: i64, rx: i64) {
    // SAFETY: the caller's promise; volatile, as readers in other processes look.
    unsafe {
        (&raw mut (*p).count).write_volatile(count - 1);
        (&raw mut (*p).mode).write_volatile(1);
        (&raw mut (*p).clock_sec).write_volatile(clock / 1_000_000_000);
        (&raw mut (*p).clock_usec).write_volatile(((clock % 1_000_000_000) / 1000) as i32);
        (&raw mut (*p).receive_sec).write_volatile(rx / 1_000_000_000);
        (&raw mut (*p).receive_usec).write_volatile(((rx % 1_000_000_000) / 1000) as i32);
        (&raw mut (*p).leap).write_volatile(0);
        (&raw mut (*p).precision).write_volatile(-20);
        (&raw mut (*p).clock_nsec).write_volatile((clock % 1_000_000_000) as i32);
        (&raw mut (*p).receive_nsec).write_volatile((rx % 1_000_000_000) as i32);
        (&raw mut (*p).count).write_volatile(count);
        (&raw mut (*p).valid).write_volatile(1);
    }
}

/// Writes the same sample into NTP SHM segments `numbers` ten times a second, as gpsd
/// does (mode 1: count bumped around the update), the reference `ahead_ns` ahead;
/// the segments are removed at the end. One segment per reader: a reader clears the
/// segment's `valid` flag, so two readers of one segment take each other's samples.
fn shm_writer(numbers: &[i32], ahead_ns: i64) -> Result<Writer> {
    let mut segments = Vec::new();
    for n in numbers {
        let key = 0x4e54_5030 + n;
        // SAFETY: shmget with a size and flags.
        let id = unsafe { libc::shmget(key, size_of::<ShmTime>(), libc::IPC_CREAT | 0o600) };
        if id < 0 {
            bail!("shmget: {}", std::io::Error::last_os_error());
        }
        // SAFETY: attaching the segment just created; the kernel picks the address.
        let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if p as isize == -1 {
            bail!("shmat: {}", std::io::Error::last_os_error());
        }
        segments.push((id, p as usize));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut count = 0;
        while !s.load(Ordering::Relaxed) {
            let t = now();
            let rx = i64::try_from(t.as_nanos()).unwrap_or_default();
            let clock = rx + ahead_ns;
            count += 2;
            for (_, addr) in &segments {
                // SAFETY: `addr` is an attached segment of size_of::<ShmTime>() bytes,
                // detached only after this loop.
                unsafe { write_sample(*addr as *mut ShmTime, count, clock, rx) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (id, addr) in segments {
            // SAFETY: detaching and removing the segments this thread attached.
            unsafe {
                libc::shmdt(addr as *const libc::c_void);
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    });
    Ok(Writer {
        stop,
        thread: Some(thread),
    })
}

/// Sends a SOCK sample (the reference `SOCK_OFFSET` from the system clock) to each of
/// `paths` four times a second, once they exist.
fn sock_writer(paths: Vec<std::path::PathBuf>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        while !s.load(Ordering::Relaxed) {
            let t = now();
            let sample = ntp_proto::refclock_formats::sock_sample(
                t.as_secs() as i64,
                i64::from(t.subsec_micros()),
                SOCK_OFFSET,
                false,
                0,
            );
            for p in &paths {
                let _ = sock.send_to(&sample, p);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    Writer {
        stop,
        thread: Some(thread),
    }
}

/// chronyc's / ntpxc's "System time : X seconds fast|slow of NTP time" as seconds the
/// system clock is ahead.
fn system_time(tracking: &str) -> Option<f64> {
    let line = tracking.lines().find(|l| l.starts_with("System time"))?;
    let v = line.split_once(':')?.1.trim();
    let mut words = v.split_whitespace();
    let x: f64 = words.next()?.parse().ok()?;
    match words.nth(1)? {
        "fast" => Some(x),
        "slow" => Some(-x),
        _ => None,
    }
}

/// Waits until both daemons select `refid` and their estimate of the system clock's
/// offset has settled within 1 µs of `expected` (seconds the system clock is ahead);
/// returns (ntpxd's, chronyd's).
fn both_settle(
    d: &Ntpxd,
    chrony_ns: &Netns,
    sock: &std::path::Path,
    refid: &str,
    expected: f64,
) -> Result<(f64, f64)> {
    wait_until(
        Duration::from_mins(1),
        "both select the reference clock",
        || {
            let ours = d.ntpxc(&["sources"]).ok()?;
            let theirs = chronyc(chrony_ns, sock, &["sources"]).ok()?;
            let selected = |s: &str| s.lines().any(|l| l.starts_with("#*") && l.contains(refid));
            let (a, b) = (
                system_time(&d.ntpxc(&["tracking"]).ok()?)?,
                system_time(&chronyc(chrony_ns, sock, &["tracking"]).ok()?)?,
            );
            (selected(&ours)
                && selected(&theirs)
                && (a - expected).abs() < 1e-6
                && (b - expected).abs() < 1e-6)
                .then_some((a, b))
        },
    )
    .with_context(|| {
        format!(
            "ntpxd:\n{}\n{}\nchronyd:\n{}\n{}",
            d.ntpxc(&["sources"]).unwrap_or_default(),
            d.ntpxc(&["tracking"]).unwrap_or_default(),
            chronyc(chrony_ns, sock, &["sources"]).unwrap_or_default(),
            chronyc(chrony_ns, sock, &["tracking"]).unwrap_or_default()
        )
    })
}

#[test]
fn shm_refclock_reads_what_chronyd_reads() -> Result<()> {
    if !ntpx_tests::privileged("shm_refclock_reads_what_chronyd_reads") {
        return Ok(());
    }
    // Segment numbers of our own (segments are shared by every network namespace).
    let number = 40 + 2 * (std::process::id() % 50) as i32;
    let _writer = shm_writer(&[number, number + 1], SHM_OFFSET_NS)?;
    let line = |n: i32| format!("refclock SHM {n} poll 2 refid GPS\n");
    let ours = Netns::new("shm1")?;
    let theirs = Netns::new("shm2")?;
    let d = Ntpxd::start(&ours, &line(number), &[])?;
    let (c, _cdir, sock) = chronyd(&theirs, &line(number + 1))?;
    let (a, b) = both_settle(&d, &theirs, &sock, "GPS", -0.25)
        .with_context(|| format!("chronyd's log:\n{}", c.log()))?;
    println!("system clock vs reference: ntpxd {a:+.9} s, chronyd {b:+.9} s");
    // The writer's samples carry no noise: both estimates are the reference's offset.
    assert!((a - b).abs() <= 1e-6, "ntpxd {a} vs chronyd {b}");
    // The server takes the reference clock's stratum 0 as its own 1, with its refid.
    let tracking = d.ntpxc(&["tracking"])?;
    assert!(tracking.contains("(GPS)"), "{tracking}");
    assert!(
        tracking
            .lines()
            .any(|l| l.starts_with("Stratum") && l.trim_end().ends_with(": 1")),
        "{tracking}"
    );
    let sources = d.ntpxc(&["sources"])?;
    assert!(
        sources.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(..3) == Some(&["#*", "GPS", "0"][..])
        }),
        "a # line of stratum 0:\n{sources}"
    );
    Ok(())
}

/// A reference keeping TAI (a PHC under ptp4l, here a SHM writer 37 s ahead of UTC plus
/// the usual offset), `tai` with `leapsectz right/UTC`: both daemons take TAI - UTC from
/// the tz database and report the same UTC offset.
#[test]
fn a_tai_refclock_reads_as_chronyd_reads_it() -> Result<()> {
    if !ntpx_tests::privileged("a_tai_refclock_reads_as_chronyd_reads_it") {
        return Ok(());
    }
    let number = 41 + 2 * (std::process::id() % 50) as i32 + 100;
    let _writer = shm_writer(&[number, number + 1], 37_000_000_000 + SHM_OFFSET_NS)?;
    let line = |n: i32| format!("leapsectz right/UTC\nrefclock SHM {n} poll 2 refid PTP tai\n");
    let ours = Netns::new("tai1")?;
    let theirs = Netns::new("tai2")?;
    let d = Ntpxd::start(&ours, &line(number), &[])?;
    let (c, _cdir, sock) = chronyd(&theirs, &line(number + 1))?;
    let (a, b) = both_settle(&d, &theirs, &sock, "PTP", -0.25)
        .with_context(|| format!("chronyd's log:\n{}", c.log()))?;
    println!("TAI reference as UTC: ntpxd {a:+.9} s, chronyd {b:+.9} s");
    assert!((a - b).abs() <= 1e-6, "ntpxd {a} vs chronyd {b}");
    Ok(())
}

#[test]
fn sock_refclock_reads_what_chronyd_reads() -> Result<()> {
    if !ntpx_tests::privileged("sock_refclock_reads_what_chronyd_reads") {
        return Ok(());
    }
    let dir = ntpx_tests::TempDir::new("sock")?;
    let (p1, p2) = (dir.path().join("ntpx.sock"), dir.path().join("chrony.sock"));
    let ours = Netns::new("sock1")?;
    let theirs = Netns::new("sock2")?;
    let d = Ntpxd::start(
        &ours,
        &format!("refclock SOCK {} poll 2 refid NMEA\n", p1.display()),
        &[],
    )?;
    let (_c, _cdir, sock) = chronyd(
        &theirs,
        &format!("refclock SOCK {} poll 2 refid NMEA\n", p2.display()),
    )?;
    let _writer = sock_writer(vec![p1, p2]);
    let (a, b) = both_settle(&d, &theirs, &sock, "NMEA", 0.125)?;
    println!("system clock vs reference: ntpxd {a:+.9} s, chronyd {b:+.9} s");
    // The writer's samples carry no noise: both estimates are the reference's offset.
    assert!((a - b).abs() <= 1e-6, "ntpxd {a} vs chronyd {b}");
    Ok(())
}

/// Debian's gpsd unpacked by `cargo xtask setup` (`NTPX_GPSD_ROOT`): (daemon, library
/// directory).
fn gpsd() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let root = match std::env::var_os("NTPX_GPSD_ROOT") {
        Some(r) => std::path::PathBuf::from(r),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/gpsd"),
    };
    let daemon = root.join("usr/sbin/gpsd");
    if !daemon.is_file() {
        bail!(
            "gpsd not found at {} (cargo xtask test unpacks it there; or set NTPX_GPSD_ROOT)",
            daemon.display()
        );
    }
    let libs = ntpx_tests::unpacked_libs(&root)
        .with_context(|| format!("no usr/lib/*-linux-gnu under {}", root.display()))?;
    Ok((daemon, libs))
}

/// A pseudo-terminal in raw mode, its slave reachable as `link` (a symlink): what gpsd
/// opens as the receiver's serial line. Both ends stay open while it lives.
struct Pty {
    master: std::os::fd::OwnedFd,
    _slave: std::os::fd::OwnedFd,
}

impl Pty {
    fn new(link: &std::path::Path) -> Result<Self> {
        use std::os::fd::FromRawFd;
        let (mut m, mut s) = (-1, -1);
        let mut name = [0 as libc::c_char; 64];
        // SAFETY: openpty writes two descriptors and a NUL-terminated name of at most
        // 64 bytes (glibc's ttyname limit for Unix98 ptys is far below) into our storage.
        let r = unsafe {
            libc::openpty(
                &raw mut m,
                &raw mut s,
                name.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r != 0 {
            bail!("openpty: {}", std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened by openpty and are owned here alone.
        let (master, slave) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(m),
                std::os::fd::OwnedFd::from_raw_fd(s),
            )
        };
        // SAFETY: `name` was NUL-terminated by openpty.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: termios is plain data; tcgetattr fills it, cfmakeraw edits it.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(s, &raw mut t) == 0 {
                libc::cfmakeraw(&raw mut t);
                libc::tcsetattr(s, libc::TCSANOW, &raw const t);
            }
        }
        std::os::unix::fs::symlink(&path, link)
            .with_context(|| format!("linking {} to {path}", link.display()))?;
        Ok(Pty {
            master,
            _slave: slave,
        })
    }
}

/// An NMEA sentence with its checksum.
fn nmea(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

/// What a receiver with a fix sends over its serial line for the second starting at
/// `unix_secs`: RMC (time, date, valid), GSA (3D fix), GGA (fix quality 1).
fn nmea_cycle(unix_secs: u64) -> String {
    let (days, s) = (unix_secs / 86_400, unix_secs % 86_400);
    let hms = format!("{:02}{:02}{:02}.00", s / 3600, s / 60 % 60, s % 60);
    let (y, m, d) = ntp_proto::calendar::civil_date(days as i64);
    let dmy = format!("{d:02}{m:02}{:02}", y % 100);
    [
        nmea(&format!(
            "GPRMC,{hms},A,4807.038,N,01131.000,E,0.0,0.0,{dmy},,,A"
        )),
        nmea("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"),
        nmea(&format!(
            "GPGGA,{hms},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
        )),
    ]
    .concat()
}

/// How long after the second a receiver's sentences leave (they name that second).
const NMEA_LATE: Duration = Duration::from_millis(100);

/// Writes each second's sentences into every pty at once, `NMEA_LATE` after the second.
fn nmea_writer(ptys: Vec<Pty>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Never blocked by a pty nobody reads (a gpsd that died): what does not fit is lost.
    for p in &ptys {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&p.master);
        // SAFETY: fcntl on a descriptor this writer owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let t = now();
            let next = t.as_secs() + 1;
            std::thread::sleep((Duration::from_secs(next) + NMEA_LATE).saturating_sub(t));
            let cycle = nmea_cycle(next);
            for p in &ptys {
                // SAFETY: writing our own buffer to a descriptor this writer owns.
                let _ = unsafe {
                    libc::write(
                        std::os::fd::AsRawFd::as_raw_fd(&p.master),
                        cycle.as_ptr().cast(),
                        cycle.len(),
                    )
                };
            }
        }
    });
    Writer {
        stop,
        thread: Some(thread),
    }
}

/// Runs `f` on a thread of its own that first moves to a new IPC namespace: what it
/// starts shares System V shared memory with nothing else on the machine (gpsd writes
/// segments 0 and 1, which a system's own readers may use).
fn in_new_ipc_namespace<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare with one namespace flag; it moves only this thread.
                if unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
                    bail!("unshare(CLONE_NEWIPC): {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the IPC namespace's thread panicked"))?
    })
}

/// gpsd (Debian's 3.22) in `ns`, reading the receiver on `device`, with the shim that
/// has it take the pty for a serial port.
fn start_gpsd(ns: &Netns, shim: &std::path::Path, device: &std::path::Path) -> Result<Proc> {
    let (daemon, libs) = gpsd()?;
    let mut cmd = ns.command(&daemon);
    cmd.args(["-N", "-n", "-D", "3"])
        .arg(device)
        .env("LD_PRELOAD", shim)
        .env("SERIALTTY_PATHS", device)
        .env("LD_LIBRARY_PATH", libs);
    Proc::spawn("gpsd", cmd)
}

/// gpsd feeding a GPS receiver's time through SHM segment 0, as on a stratum-1 server
/// with a serial GPS: one gpsd per daemon, each fed the same sentences at the same
/// instants, ntpxd and chronyd each reading segment 0 of its own IPC namespace. Both
/// must select the clock and see the system clock ahead of it by the sentences'
/// lateness (plus the moment gpsd takes to read them), the same within 0.5 ms.
#[test]
fn gpsd_feeds_ntpxd_as_it_feeds_chronyd() -> Result<()> {
    if !ntpx_tests::privileged("gpsd_feeds_ntpxd_as_it_feeds_chronyd") {
        return Ok(());
    }
    let dir = ntpx_tests::TempDir::new("gpsd")?;
    let shim = ntpx_tests::preload_shim(&dir, "serialtty")?;
    let (dev1, dev2) = (dir.path().join("gps1"), dir.path().join("gps2"));
    let _writer = nmea_writer(vec![Pty::new(&dev1)?, Pty::new(&dev2)?]);
    let line = "refclock SHM 0 refid GPS poll 2\n";
    let ours = Netns::new("gpsd1")?;
    let theirs = Netns::new("gpsd2")?;
    let (d, g1) = in_new_ipc_namespace(|| {
        let d = Ntpxd::start(&ours, line, &[])?;
        Ok((d, start_gpsd(&ours, &shim, &dev1)?))
    })?;
    let ((c, _cdir, sock), g2) = in_new_ipc_namespace(|| {
        let c = chronyd(&theirs, line)?;
        Ok((c, start_gpsd(&theirs, &shim, &dev2)?))
    })?;
    let late = NMEA_LATE.as_secs_f64();
    let logs = || {
        format!(
            "ntpxd:\n{}\n{}\nchronyd:\n{}\n{}\n{}\ngpsd (ours):\n{}",
            d.ntpxc(&["sources"]).unwrap_or_default(),
            d.ntpxc(&["tracking"]).unwrap_or_default(),
            chronyc(&theirs, &sock, &["sources"]).unwrap_or_default(),
            chronyc(&theirs, &sock, &["tracking"]).unwrap_or_default(),
            c.log(),
            g1.log()
        )
    };
    // Four polls of 4 s after both first select the clock, so each estimate rests on
    // several medians of the same gpsd readings.
    let selected_at = wait_until(Duration::from_secs(90), "both select gpsd's clock", || {
        let selected = |s: String| s.lines().any(|l| l.starts_with("#*") && l.contains("GPS"));
        (selected(d.ntpxc(&["sources"]).ok()?)
            && selected(chronyc(&theirs, &sock, &["sources"]).ok()?))
        .then(std::time::Instant::now)
    })
    .with_context(logs)?;
    std::thread::sleep(Duration::from_secs(16).saturating_sub(selected_at.elapsed()));
    // Both estimates rest on the same readings; a scheduling hiccup of one gpsd moves
    // one for a poll, so they are compared until they agree (or a minute is up).
    let both = || {
        Some((
            system_time(&d.ntpxc(&["tracking"]).ok()?)?,
            system_time(&chronyc(&theirs, &sock, &["tracking"]).ok()?)?,
        ))
    };
    let in_range = |x: f64| x > late && x < late + 0.02;
    let (a, b) = match wait_until(Duration::from_mins(1), "the two estimates to agree", || {
        both().filter(|&(a, b)| in_range(a) && in_range(b) && (a - b).abs() < 5e-4)
    }) {
        Ok(v) => v,
        Err(_) => both().context("reading both daemons' tracking")?,
    };
    println!(
        "system clock ahead of gpsd's time (sentences {late} s late): ntpxd {a:+.6} s, \
         chronyd {b:+.6} s"
    );
    for (who, x) in [("ntpxd", a), ("chronyd", b)] {
        assert!(
            x > late && x < late + 0.02,
            "{who} sees the system clock {x} s ahead; the sentences left {late} s late\n{}",
            logs()
        );
    }
    assert!((a - b).abs() < 5e-4, "ntpxd {a} vs chronyd {b}\n{}", logs());
    drop(g2);
    Ok(())
}

/// No PHC here to take pulses from: what can be checked is that an `extpps` clock that
/// cannot be set up stops the start, naming its line and the device, as chronyd stops.
#[test]
fn an_extpps_clock_that_is_not_a_phc_stops_the_start_with_its_line() -> Result<()> {
    if !ntpx_tests::privileged("an_extpps_clock_that_is_not_a_phc_stops_the_start_with_its_line") {
        return Ok(());
    }
    let dir = ntpx_tests::TempDir::new("extpps")?;
    let conf = dir.path().join("ntpx.conf");
    std::fs::write(
        &conf,
        format!(
            "local stratum 3\nrefclock PHC /dev/null:extpps:pin=-1 lock NMEA\n\
             bindcmdaddress {}\npidfile {}\n",
            dir.path().join("ntpxd.sock").display(),
            dir.path().join("ntpxd.pid").display()
        ),
    )?;
    let ns = Netns::new("extpps")?;
    let mut cmd = ns.command(ntpx_tests::bin("ntpxd"));
    cmd.arg("-x").arg("-f").arg(&conf);
    let mut p = Proc::spawn("ntpxd", cmd)?;
    assert!(!p.wait_exit(Duration::from_secs(20))?, "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("refclock PHC (line 2)")
            && log.contains("/dev/null is not a PTP hardware clock"),
        "{log}"
    );
    Ok(())
}
