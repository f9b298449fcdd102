//! `hwtimestamp` on interfaces without NIC timestamps (a veth pair), beside chronyd: a
//! named interface stops the start with chronyd's words, `*` falls back to kernel
//! software timestamps and says so per interface. Needs root.

use anyhow::Result;
use ntpx_tests::{Netns, Ntpxd, Proc, TempDir, bin, chronyd, veth};
use std::time::Duration;

#[test]
fn hwtimestamp_on_a_veth_refuses_like_chronyd_and_star_falls_back() -> Result<()> {
    if !ntpx_tests::privileged("hwtimestamp_on_a_veth_refuses_like_chronyd_and_star_falls_back") {
        return Ok(());
    }
    let server = Netns::new("hws")?;
    let client = Netns::new("hwc")?;
    let link = veth(&server, &client, 61)?;
    let line = format!("hwtimestamp {}\n", link.server_if);

    // Named: both refuse to start.
    let dir = TempDir::new("hwts")?;
    let conf = dir.path().join("ntpx.conf");
    std::fs::write(
        &conf,
        format!(
            "{line}bindcmdaddress {}\npidfile {}\n",
            dir.path().join("sock").display(),
            dir.path().join("pid").display()
        ),
    )?;
    let mut cmd = server.command(bin("ntpxd"));
    cmd.arg("-x").arg("-f").arg(&conf);
    let mut ours = Proc::spawn("ntpxd", cmd)?;
    assert!(
        !ours.wait_exit(Duration::from_secs(10))?,
        "ntpxd must not start:\n{}",
        ours.log()
    );
    let expected = format!("Could not enable HW timestamping on {}", link.server_if);
    assert!(ours.log().contains(&expected), "{}", ours.log());
    assert!(
        ours.log().contains("HW timestamping not supported"),
        "{}",
        ours.log()
    );
    let (mut theirs, _cdir, _sock) = chronyd(&server, &line)?;
    assert!(
        !theirs.wait_exit(Duration::from_secs(10))?,
        "{}",
        theirs.log()
    );
    assert!(
        theirs.log().contains(&expected),
        "chronyd:\n{}",
        theirs.log()
    );

    // `*`: software timestamps, said once for the veth; the daemon serves.
    let mut d = Ntpxd::start(
        &server,
        "hwtimestamp *\nlocal stratum 3\nallow all\n",
        &["--no-xdp"],
    )?;
    d.proc.wait_for_log(
        &format!(
            "{}: HW timestamping not supported; kernel software timestamps",
            link.server_if
        ),
        Duration::from_secs(5),
    )?;
    let log = d.proc.log();
    assert_eq!(
        log.matches("kernel software timestamps").count(),
        1,
        "once, for the one interface besides lo:\n{log}"
    );
    let dig = ntpx_tests::ntpdig(&client, &link.server_v4)?;
    assert_eq!(dig.stratum, 3, "served: {dig:?}");
    Ok(())
}
