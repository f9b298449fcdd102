//! ntpxd started before the network: interfaces and addresses come, go and change while
//! it runs, and the fast path follows them (netlink events, no polling). Needs root.

use anyhow::{Context, Result, bail};
use ntpx_tests::{Netns, Ntpxd, Proc, veth_named, veth_names, xdp_pass};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const SERVE_ALL: &str = "local stratum 3\nallow all\n";

/// Sends one client request from `client` to `addr`:123; whether a reply came within
/// half a second.
fn answered(client: &Netns, addr: &str) -> Result<bool> {
    let addr: std::net::IpAddr = addr.parse()?;
    client.run_in(move || {
        let bind = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let req = ntpx_tests::frames::ntp_request(4, 3, 6, 0x0123_4567_89ab_cdef);
        s.send_to(&req, (addr, 123))?;
        let mut buf = [0u8; 128];
        Ok(matches!(s.recv_from(&mut buf), Ok((48, _))))
    })
}

/// The kernel's `answered` counter.
fn kernel_answered(d: &Ntpxd) -> Result<u64> {
    d.stat("xdpstats", "answered")
}

/// Waits (at most `within`) until a request to `addr` is answered by the fast path;
/// how long that took.
fn kernel_answers(d: &Ntpxd, client: &Netns, addr: &str, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let before = kernel_answered(d)?;
        if answered(client, addr)? && kernel_answered(d)? > before {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!(
                "{addr} not answered by the fast path within {within:?}:\n{}\n{}",
                d.ntpxc(&["xdpstats"])?,
                d.proc.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `needle` in the daemon's log, at most `within`.
fn logged(p: &mut Proc, needle: &str, within: Duration) -> Result<()> {
    p.wait_for_log(needle, within)
        .with_context(|| format!("waiting for {needle:?} in the log"))
}

/// Started with only loopback up (and as an unprivileged user), ntpxd serves from its
/// socket and says what it waits for; a veth pair that appears is served by the fast
/// path within a second; its removal is logged and breaks nothing; added again (same
/// name, new index) it is served again; an address changed is served at once and the
/// old one left to the stack; a macvlan on it is served where its frames arrive
/// (generic mode: the veth passes frames for another MAC up to the stack); its MAC
/// changed in place is followed.
#[test]
fn the_fast_path_follows_interfaces_as_they_come_and_go() -> Result<()> {
    if !ntpx_tests::privileged("the_fast_path_follows_interfaces_as_they_come_and_go") {
        return Ok(());
    }
    let server = Netns::new("srv")?;
    let client = Netns::new("cli")?;
    let mut d = Ntpxd::start(&server, SERVE_ALL, &["-u", "nobody"])?;
    logged(
        &mut d.proc,
        "Fast path waiting for an interface that is up with an address",
        Duration::from_secs(5),
    )?;
    logged(
        &mut d.proc,
        "Running as nobody with CAP_NET_ADMIN, CAP_BPF",
        Duration::from_secs(5),
    )?;
    assert!(
        d.ntpxc(&["xdpstats"])?
            .contains("XDP fast path not attached")
    );

    let (a, b) = veth_names();
    let link = veth_named(&server, &client, 29, &a, &b)?;
    let _pass = xdp_pass(&client, &link.client_if)?;
    let took = kernel_answers(&d, &client, &link.server_v4, Duration::from_secs(3))?;
    println!("a new interface served by the fast path after {took:?}");
    assert!(took < Duration::from_secs(1), "served after {took:?}");
    assert!(answered(&client, &link.server_v6)?, "IPv6 too");
    let stats = d.ntpxc(&["xdpstats"])?;
    assert!(stats.contains(&format!("Attached to {a}")), "{stats}");

    // Gone: logged, the daemon carries on.
    server.ip(&["link", "del", &a])?;
    logged(&mut d.proc, &format!("{a} is gone"), Duration::from_secs(3))?;
    assert!(
        d.ntpxc(&["xdpstats"])?
            .contains("XDP fast path not attached")
    );
    assert!(d.proc.is_running(), "{}", d.proc.log());

    // Back under the same name (a new interface index): served again.
    let link = veth_named(&server, &client, 29, &a, &b)?;
    let _pass = xdp_pass(&client, &link.client_if)?;
    kernel_answers(&d, &client, &link.server_v4, Duration::from_secs(1))?;

    // A new address served at once; the old one is no longer the fast path's.
    // A different prefix: deleting a primary address deletes its secondaries with it.
    server.ip(&["addr", "add", "198.18.29.11/25", "dev", &a])?;
    server.ip(&["addr", "del", &format!("{}/24", link.server_v4), "dev", &a])?;
    kernel_answers(&d, &client, "198.18.29.11", Duration::from_secs(1))?;
    // The addition and the removal are two changes: the second may still be on its way.
    let last_served = |d: &Ntpxd| {
        d.proc
            .log()
            .lines()
            .rev()
            .find(|l| l.contains("Fast path serving"))
            .unwrap_or_default()
            .to_string()
    };
    let old = format!("{},", link.server_v4);
    ntpx_tests::wait_until(Duration::from_secs(1), "the old address left", || {
        let last = last_served(&d);
        (last.contains("198.18.29.11") && !last.contains(&old)).then_some(())
    })
    .with_context(|| last_served(&d))?;
    let passed_before = d.stat("xdpstats", "pass-not-local")?;
    assert!(
        !answered(&client, &link.server_v4)?,
        "the old address is gone"
    );
    assert!(
        d.stat("xdpstats", "pass-not-local")? > passed_before,
        "a request to the old address is left to the stack"
    );

    // A macvlan on the veth, with an address of its own: the program goes where its
    // frames arrive (the macvlan, generic mode) and answers there.
    server.ip(&[
        "link", "add", "mv29", "link", &a, "type", "macvlan", "mode", "bridge",
    ])?;
    server.ip(&["addr", "add", "198.18.29.21/24", "dev", "mv29"])?;
    server.ip(&["link", "set", "mv29", "up"])?;
    kernel_answers(&d, &client, "198.18.29.21", Duration::from_secs(2))?;
    let stats = d.ntpxc(&["xdpstats"])?;
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("Attached to mv29") && l.contains("generic")),
        "{stats}"
    );

    // The veth's MAC changed in place: frames for the new one are the fast path's.
    server.ip(&["link", "set", "dev", &a, "address", "02:00:00:00:29:01"])?;
    client.ip(&["neigh", "flush", "dev", &b])?;
    kernel_answers(&d, &client, "198.18.29.11", Duration::from_secs(1))?;
    Ok(())
}

/// An interface named with `-i` that does not exist yet, and a `bindaddress` the host
/// does not have yet, are waited for: the daemon starts, says so, and serves both paths
/// once they appear.
#[test]
fn a_named_interface_and_a_bind_address_not_there_yet_are_waited_for() -> Result<()> {
    if !ntpx_tests::privileged("a_named_interface_and_a_bind_address_not_there_yet_are_waited_for")
    {
        return Ok(());
    }
    let server = Netns::new("srv")?;
    let client = Netns::new("cli")?;
    let (a, b) = veth_names();
    let config = format!("{SERVE_ALL}bindaddress 198.18.31.1\n");
    let mut d = Ntpxd::start(&server, &config, &["-i", &a])?;
    logged(
        &mut d.proc,
        &format!("Fast path waiting for interface(s) {a} to exist and be up"),
        Duration::from_secs(5),
    )?;
    logged(
        &mut d.proc,
        "Listening on 198.18.31.1:123",
        Duration::from_secs(5),
    )?;
    let link = veth_named(&server, &client, 31, &a, &b)?;
    let _pass = xdp_pass(&client, &link.client_if)?;
    kernel_answers(&d, &client, &link.server_v4, Duration::from_secs(1))?;
    // The daemon's socket, bound before the address existed, answers what the fast path
    // leaves to it (a request with IP options).
    let daemon_before = d.stat("serverstats", "Daemon NTP packets answered")?;
    let ok = client.run_in({
        let addr = link.server_v4.clone();
        move || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            ntpx_tests::set_ip_options(&s, &[1, 1, 1, 0])?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let req = ntpx_tests::frames::ntp_request(4, 3, 6, 1);
            s.send_to(&req, (addr.as_str(), 123))?;
            let mut buf = [0u8; 128];
            Ok(matches!(s.recv_from(&mut buf), Ok((48, _))))
        }
    })?;
    assert!(ok, "no answer from the daemon's socket:\n{}", d.proc.log());
    assert!(d.stat("serverstats", "Daemon NTP packets answered")? > daemon_before);
    Ok(())
}
