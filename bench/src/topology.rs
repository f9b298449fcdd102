//! The benchmark network: a server and a client namespace joined by a veth pair whose
//! receive work runs in NAPI threads pinned apart, so the server side has one CPU to
//! itself and the kernel's accounting of that CPU is the server's cost.

use anyhow::{Context, Result, bail};
use ntpx_tests::{Link, Netns, veth};

/// CPU of the generator, its reply counter and the client end's receive thread.
pub const CLIENT_CPU: usize = 0;
/// CPU of the server process and the server end's receive thread.
pub const SERVER_CPU: usize = 1;
/// Where the simulated clients' addresses come from (routed to the client end).
pub const CLIENT_RANGE: &str = "198.19.0.0/16";
/// First simulated client address.
pub const FIRST_CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 0, 1);

/// The two namespaces, the link and its MAC addresses.
pub struct BenchNet {
    /// Server side.
    pub server: Netns,
    /// Client side (generator and counter).
    pub client: Netns,
    /// The veth pair.
    pub link: Link,
    /// MAC of the server end.
    pub server_mac: [u8; 6],
    /// MAC of the client end.
    pub client_mac: [u8; 6],
}

/// Polls a receive thread makes on its own, after finding work, before it waits to be
/// woken again (the interface's `napi_defer_hard_irqs`).
const DEFER_HARD_IRQS: u32 = 2;
/// How long it waits between those polls, ns (`gro_flush_timeout`): 200 µs, a NIC's
/// usual receive interrupt moderation for throughput.
const GRO_FLUSH_TIMEOUT_NS: u32 = 200_000;

impl BenchNet {
    /// Builds the namespaces on subnet `net` (198.18.NET.0/24), with threaded NAPI on
    /// both ends and the simulated clients routed back through the client end.
    pub fn new(net: u8) -> Result<Self> {
        let server = Netns::new("bsrv")?;
        let client = Netns::new("bcli")?;
        let link = veth(&server, &client, net)?;
        // GRO gives a veth end a NAPI instance even without an XDP program, so frames
        // sent with XDP_TX reach a plain socket server; threaded NAPI lets us pin it.
        for (ns, ifname) in [(&server, &link.server_if), (&client, &link.client_if)] {
            ns.output("ethtool", &["-K", ifname, "gro", "on"])
                .with_context(|| format!("turning GRO on for {ifname}"))?;
            set_attr(ns, ifname, "threaded", 1)
                .with_context(|| format!("threaded NAPI on {ifname}"))?;
        }
        server.ip(&["route", "add", CLIENT_RANGE, "via", &link.client_v4])?;
        // Socket servers get 4 MiB receive buffers (frames built from XDP frames take a
        // page each, so the default 208 KiB holds only ~50 requests): a busy NTP server's
        // usual tuning, the same for all of them.
        for (key, value) in [
            ("net.core.rmem_default", "4194304"),
            ("net.core.rmem_max", "4194304"),
        ] {
            server
                .output("sysctl", &["-qw", &format!("{key}={value}")])
                .with_context(|| format!("setting {key} in the server namespace"))?;
        }
        let server_mac = mac(&server, &link.server_if)?;
        let client_mac = mac(&client, &link.client_if)?;
        Ok(BenchNet {
            server,
            client,
            link,
            server_mac,
            client_mac,
        })
    }

    /// Pins the receive threads of both ends and gives them real-time priority, as a
    /// NIC's interrupt would have (call after attaching programs: attaching can re-create
    /// them). Without it a ring of 256 frames overflows whenever a thread waits its turn.
    pub fn pin_napi(&self) -> Result<()> {
        pin_napi(&self.link.server_if, &self.link.client_if)
    }

    /// Interrupt moderation on both ends, as a NIC has it (`ethtool -C`): a receive
    /// thread that found work polls again after `GRO_FLUSH_TIMEOUT_NS` instead of
    /// waiting for the sender to wake it, up to `DEFER_HARD_IRQS` times in a row.
    /// Without it every burst the sender writes wakes the other end's thread with an
    /// inter-processor interrupt, which in a virtual machine costs more than the frame.
    pub fn moderate_interrupts(&self) -> Result<()> {
        for (ns, ifname) in [
            (&self.server, &self.link.server_if),
            (&self.client, &self.link.client_if),
        ] {
            set_attr(ns, ifname, "napi_defer_hard_irqs", DEFER_HARD_IRQS)
                .and_then(|()| set_attr(ns, ifname, "gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS))
                .with_context(|| format!("interrupt moderation on {ifname}"))?;
        }
        Ok(())
    }

    /// The receive threads of the server end (where its XDP program runs).
    pub fn server_napi_threads(&self) -> Result<Vec<u32>> {
        napi_threads(&self.link.server_if)
    }
}

/// Writes `value` to the attribute `attr` of interface `ifname` in `ns` (sysfs as the
/// namespace sees it).
fn set_attr(ns: &Netns, ifname: &str, attr: &str, value: u32) -> Result<()> {
    ns.output(
        "sh",
        &[
            "-c",
            &format!("echo {value} > /sys/class/net/{ifname}/{attr}"),
        ],
    )?;
    Ok(())
}

/// [`BenchNet::pin_napi`] by interface names (usable from a thread that cannot borrow
/// the network).
pub fn pin_napi(server_if: &str, client_if: &str) -> Result<()> {
    let mut found = 0;
    for (ifname, cpu) in [(server_if, SERVER_CPU), (client_if, CLIENT_CPU)] {
        for pid in napi_threads(ifname)? {
            pin_pid(pid, cpu)?;
            realtime(pid)?;
            found += 1;
        }
    }
    if found < 2 {
        bail!("expected NAPI threads for both veth ends, found {found}");
    }
    Ok(())
}

fn mac(ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
    let s = ns.output("cat", &[&format!("/sys/class/net/{ifname}/address")])?;
    parse_mac(s.trim()).with_context(|| format!("MAC of {ifname}: {s:?}"))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Kernel threads named `napi/IFNAME-N`.
fn napi_threads(ifname: &str) -> Result<Vec<u32>> {
    let prefix = format!("napi/{ifname}-");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").context("listing /proc")? {
        let e = e?;
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm"))
            && comm.trim_end().starts_with(&prefix)
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// `SCHED_FIFO` priority 50 for thread `pid`.
fn realtime(pid: u32) -> Result<()> {
    let p = libc::sched_param { sched_priority: 50 };
    // SAFETY: `p` is a valid sched_param for the duration of the call.
    if unsafe { libc::sched_setscheduler(pid as i32, libc::SCHED_FIFO, &raw const p) } != 0 {
        bail!(
            "real-time priority for thread {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Gives the calling thread the lowest scheduling class (`SCHED_IDLE`): it runs on its
/// CPU only when nothing else there wants to. For a generator that paces itself by
/// spinning, so its waiting takes no CPU from the server it measures.
pub fn yield_to_others() -> Result<()> {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: `p` is a valid sched_param for the duration of the call; 0: this thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const p) } != 0 {
        bail!(
            "the idle scheduling class for the generator: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Frames a full veth ring refused, by the side that refused them.
pub struct RingDrops {
    /// Requests the server end could not take (its receive thread too slow).
    pub server_end: u64,
    /// Replies the client end could not take (the rig too slow).
    pub client_end: u64,
}

impl RingDrops {
    /// The counters now.
    pub fn read(net: &BenchNet) -> Result<Self> {
        let stat = |ns: &ntpx_tests::Netns, ifname: &str, name: &str| -> Result<u64> {
            let out = ns.output("ethtool", &["-S", ifname])?;
            Ok(ethtool_counter(&out, name).unwrap_or(0))
        };
        let (s, c) = (&net.link.server_if, &net.link.client_if);
        // The sender's veth counts what its peer's ring refused: XDP frames as
        // xdp_xmit/xdp_tx errors, socket replies as dropped transmits.
        let tx_dropped = net.server.output(
            "cat",
            &[&format!("/sys/class/net/{s}/statistics/tx_dropped")],
        )?;
        Ok(RingDrops {
            server_end: stat(&net.client, c, "tx_queue_0_xdp_xmit_errors")?,
            client_end: stat(&net.server, s, "rx_queue_0_xdp_tx_errors")?
                + tx_dropped.trim().parse::<u64>().unwrap_or(0),
        })
    }
}

/// The value of counter `name` in `ethtool -S` output.
fn ethtool_counter(out: &str, name: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k.trim() == name).then(|| v.trim().parse().ok())?
    })
}

/// Moves the calling thread into the named network namespace (for the rest of its life).
pub fn enter_netns(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid namespace fd affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins every thread of process `pid` to `cpu`.
pub fn pin_pid(pid: u32, cpu: usize) -> Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of {pid}"))?;
    for t in tasks {
        let t = t.with_context(|| format!("listing the threads of {pid}"))?;
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        pin_tid(tid, cpu).with_context(|| format!("pinning a thread of {pid}"))?;
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub fn pin_thread(cpu: usize) -> Result<()> {
    pin_tid(0, cpu)
}

/// Pins thread `tid` (0: the caller) to `cpu`.
fn pin_tid(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within it for cpu < 1024.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc != 0 {
        bail!(
            "pinning thread {tid} to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_counters_are_found_by_name() {
        let out = "NIC statistics:\n     peer_ifindex: 2\n     rx_queue_0_xdp_tx_errors: 1213\n     tx_queue_0_xdp_xmit_errors: 0\n";
        assert_eq!(ethtool_counter(out, "rx_queue_0_xdp_tx_errors"), Some(1213));
        assert_eq!(ethtool_counter(out, "tx_queue_0_xdp_xmit_errors"), Some(0));
        assert_eq!(ethtool_counter(out, "rx_queue_0_xdp_tx"), None);
    }

    #[test]
    fn macs_parse_and_garbage_does_not() {
        assert_eq!(
            parse_mac("02:ab:00:10:ff:01"),
            Some([2, 0xab, 0, 0x10, 0xff, 1])
        );
        assert_eq!(parse_mac("02:ab:00:10:ff"), None);
        assert_eq!(parse_mac("02:ab:00:10:ff:zz"), None);
    }
}
