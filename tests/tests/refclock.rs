//! Reference clocks against real writers, side by side with chronyd (Debian's 4.3) reading the same
//! samples: an NTP shared-memory segment (the protocol gpsd, phc2sys and ntpshm writers
//! use) and a SOCK socket (gpsd's chrony socket). Both daemons run with clock control
//! off, so each reports how far the system clock is from the reference. Needs root.

use anyhow::{Context, Result, bail};
use ntp_proto::refclock_formats::ShmFields as ShmTime;
use ntpx_tests::{Netns, Ntpxd, chronyc, chronyd, wait_until};
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
