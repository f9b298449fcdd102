//! `ntpxd --xsk`: authenticated and NTS requests taken from `AF_XDP` sockets on the
//! interface the XDP program serves, against chronyd 4.3 as the client: NTS over IPv4
//! and a symmetric key over IPv6 (the two families' frame handling), both authenticated
//! and selected, every request having come through the socket (the program's `to-xsk`
//! counter) and none through the daemon's UDP socket, with the daemon running as
//! nobody (the sockets are opened before the privilege drop, the threads started after).
//! Needs root.

use anyhow::{Context, Result};
use ntpx_tests::{Ntpxd, chronyc, chronyd, ntpdata_field, wait_until};
use std::time::Duration;

const FAST_POLL: &str = "iburst minpoll -4 maxpoll -4";
const KEYS: &str = "1 SHA256 ASCII:sesame-open-this-door\n";

#[test]
fn chronyd_gets_nts_and_keyed_time_through_af_xdp_sockets() -> Result<()> {
    if !ntpx_tests::privileged("chronyd_gets_nts_and_keyed_time_through_af_xdp_sockets") {
        return Ok(());
    }
    let ntpx_tests::ClientServer {
        server,
        client,
        link,
        pass: _pass,
    } = ntpx_tests::client_server("xsks", "xskc", 37, "ntpx.test")?;
    let dir = ntpx_tests::TempDir::new("xsk")?;
    let (cert, key) = ntpx_tests::self_signed_certificate(&dir, "ntpx.test")?;
    let keys = dir.path().join("keys");
    std::fs::write(&keys, KEYS)?;
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let d = Ntpxd::start(
        &server,
        &format!(
            "local stratum 3\nallow all\nkeyfile {}\nntsservercert {}\nntsserverkey {}\n",
            keys.display(),
            cert.display(),
            key.display()
        ),
        &["-i", &link.server_if, "--xsk", "-u", "nobody"],
    )?;
    let (_c, _cdir, sock) = chronyd(
        &client,
        &format!(
            "keyfile {}\nntstrustedcerts {}\nnosystemcert\nserver ntpx.test nts {FAST_POLL}\n\
             server {} key 1 {FAST_POLL}\n",
            keys.display(),
            cert.display(),
            link.server_v6
        ),
    )?;
    let addrs = [link.server_v4.as_str(), link.server_v6.as_str()];
    let report = wait_until(Duration::from_secs(30), "authenticated replies", || {
        let r = chronyc(&client, &sock, &["ntpdata"]).ok()?;
        addrs
            .iter()
            .all(|a| {
                ntpdata_field(&r, a, "Total valid RX")
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_some_and(|n| n >= 5)
            })
            .then_some(r)
    })
    .with_context(|| {
        format!(
            "{}\n{}\n{}\n{}",
            chronyc(&client, &sock, &["ntpdata"]).unwrap_or_default(),
            d.ntpxc(&["xdpstats"]).unwrap_or_default(),
            d.ntpxc(&["serverstats"]).unwrap_or_default(),
            d.proc.log()
        )
    })?;
    for a in addrs {
        assert_eq!(
            ntpdata_field(&report, a, "Authenticated").as_deref(),
            Some("Yes"),
            "{a}:\n{report}"
        );
    }
    let auth = chronyc(&client, &sock, &["-c", "authdata"])?;
    let nts = auth
        .lines()
        .find(|l| l.starts_with(&link.server_v4))
        .unwrap_or_default();
    assert_eq!(nts.split(',').nth(1), Some("NTS"), "{auth}");
    assert_eq!(nts.split(',').nth(7), Some("0"), "no NTS NAK: {auth}");
    wait_until(Duration::from_secs(20), "chronyd to select ntpxd", || {
        chronyc(&client, &sock, &["-c", "sources"])
            .ok()
            .filter(|s| s.lines().any(|l| l.starts_with("^,*")))
    })?;
    // Every authenticated request came through the AF_XDP sockets: the program
    // redirected at least as many as were answered, and none went up the stack.
    // (Read in this order: a request between the two reads counts in `to-xsk` only.)
    let authenticated = d.stat("serverstats", "Authenticated NTP packets")?;
    let to_xsk = d.stat("xdpstats", "to-xsk")?;
    let passed = d.stat("xdpstats", "pass-length")?;
    println!("to-xsk {to_xsk}, authenticated replies {authenticated}, pass-length {passed}");
    assert!(authenticated >= 10, "{authenticated}");
    assert!(to_xsk >= authenticated, "{to_xsk} < {authenticated}");
    assert_eq!(passed, 0, "a longer request went to the socket");
    // The interface goes away: its socket's thread ends, the daemon stays.
    let mut d = d;
    server.ip(&["link", "del", &link.server_if])?;
    d.proc
        .wait_for_log("closed (the interface is gone)", Duration::from_secs(10))?;
    assert!(d.proc.is_running(), "{}", d.proc.log());
    Ok(())
}
