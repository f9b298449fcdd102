//! The `demo` task: the seed's topology in network namespaces (an upstream, two stratum-3
//! ntpxd servers with the XDP fast path, a client), then a failover.

use crate::cargo::{build_binaries, root};
use anyhow::{Context, Result, bail};
use ntpx_tests::{Ntpxd, SeedTopology, is_root, wait_until};
use std::time::Duration;

/// Shows the seed's topology serving time and failing over, from debug binaries.
pub(crate) fn run() -> Result<()> {
    crate::setup::run()?;
    build_binaries(false, &[])?;
    let bins = root().join("target/debug");
    // The harness finds the binaries through NTPX_BIN_DIR.
    // SAFETY: xtask has started no thread yet, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("NTPX_BIN_DIR", &bins) };
    if !is_root() {
        bail!("the demo creates network namespaces and loads XDP: run it as root");
    }
    println!(
        "== ntpx demo: the seed's topology in network namespaces on one LAN (198.18.200.0/24)"
    );
    println!(
        "   upstream ntpxd (stratum 2) -> time1, time2: ntpxd stratum 3, XDP fast path -> client ntpxd\n"
    );
    let topo = SeedTopology::new(200)?;
    let ((up, up_if, up_ip), (t1, t1_if, t1_ip), (t2, t2_if, t2_ip)) =
        (&topo.up, &topo.time1, &topo.time2);
    let (cli, dig) = (&topo.client, &topo.dig);
    let fast = "iburst minpoll -2 maxpoll -2";
    let _upstream = Ntpxd::start(up, "local stratum 2\nallow all", &["-i", up_if])?;
    // The seed's server configuration, with the pool replaced by the upstream.
    let server =
        format!("server {up_ip} {fast}\nmakestep 1.0 3\nallow 198.18.0.0/15\nlocal stratum 3");
    let time1 = Ntpxd::start(t1, &server, &["-i", t1_if])?;
    let time2 = Ntpxd::start(t2, &server, &["-i", t2_if])?;
    let client = Ntpxd::start(
        cli,
        &format!("server {t1_ip} {fast}\nserver {t2_ip} {fast}\nport 0"),
        &["--no-xdp"],
    )?;
    wait_until(
        Duration::from_secs(30),
        "the client to select a server",
        || {
            let s = client.sources();
            (s.len() == 2 && s.iter().all(|x| x.stratum == 3)).then(|| client.selected())?
        },
    )?;
    std::thread::sleep(Duration::from_secs(3));
    println!("-- time1 log");
    print!("{}", time1.proc.log());
    println!("\n-- client: ntpxc sources -v");
    print!("{}", client.ntpxc(&["sources", "-v"])?);
    println!("\n-- client: ntpxc tracking");
    print!("{}", client.ntpxc(&["tracking"])?);
    for ip in [t1_ip, t2_ip] {
        println!("\n-- ntpdig {ip} (an independent client)");
        print!("{}", dig.output("ntpdig", &["-t", "2", ip])?);
    }
    println!("\n-- time1: ntpxc serverstats");
    print!("{}", time1.ntpxc(&["serverstats"])?);

    let chosen = client.selected().context("the client lost its selection")?;
    let (stop, other) = if chosen == *t1_ip {
        ("time1", &t2_ip)
    } else {
        ("time2", &t1_ip)
    };
    println!("\n== failover: stopping {stop} ({chosen}), the client's selected server");
    let mut survivor = if chosen == *t1_ip {
        drop(time1);
        time2
    } else {
        drop(time2);
        time1
    };
    let start = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "failover", || {
        client.selected().filter(|s| s == *other)
    })?;
    println!(
        "client selected {other} after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    print!("{}", client.ntpxc(&["sources"])?);
    println!("\n-- ntpdig {other}");
    print!("{}", dig.output("ntpdig", &["-t", "2", other])?);
    println!("\n-- {other}: ntpxc xdpstats (kernel counters)");
    print!("{}", survivor.ntpxc(&["xdpstats"])?);
    survivor.proc.signal(15);
    let _ = survivor.proc.wait_exit(Duration::from_secs(5));
    println!("\n== cleaning up: stopping the daemons, removing the namespaces");
    Ok(())
}
