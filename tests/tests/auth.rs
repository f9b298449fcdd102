//! Symmetric-key authentication against chronyd 4.3, both ways, with MD5, SHA256 (whose
//! digest `NTPv4` would truncate: `NTPv3` then, as chrony) and AES128-CMAC keys. Needs root.

use anyhow::{Context, Result};
use ntpx_tests::{Netns, Ntpxd, chronyc, chronyd, ntpdata_field, veth, wait_until, xdp_pass};
use std::time::Duration;

const FAST_POLL: &str = "iburst minpoll -4 maxpoll -4";
/// The same keys on both sides (chrony's keyfile format).
const KEYS: &str = "1 MD5 HEX:00112233445566778899AABBCCDDEEFF\n\
                    2 SHA256 ASCII:sesame-open-this-door\n\
                    3 AES128 HEX:000102030405060708090A0B0C0D0E0F\n";
/// Key 1 with another secret.
const WRONG_KEYS: &str = "1 MD5 HEX:FFEEDDCCBBAA99887766554433221100\n";

/// Writes `text` as a keyfile only its owner may read.
fn keyfile(dir: &ntpx_tests::TempDir, text: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.path().join("keys");
    std::fs::write(&p, text)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    Ok(p)
}

/// Adds `addrs` (IPv4, /24) to `iface` in `ns`.
fn add_addresses(ns: &Netns, iface: &str, addrs: &[&str]) -> Result<()> {
    for a in addrs {
        ns.ip(&["addr", "add", &format!("{a}/24"), "dev", iface])?;
    }
    Ok(())
}

/// chronyd polls ntpxd on three of its addresses, one key each: every exchange is
/// authenticated (chronyc ntpdata says so, valid replies come back) and ntpxd counts
/// them; the fast path leaves the authenticated requests to the daemon.
#[test]
fn chronyd_authenticates_ntpxd_with_md5_sha256_and_aes128() -> Result<()> {
    if !ntpx_tests::privileged("chronyd_authenticates_ntpxd_with_md5_sha256_and_aes128") {
        return Ok(());
    }
    let server = Netns::new("srv")?;
    let client = Netns::new("cli")?;
    let link = veth(&server, &client, 32)?;
    let _pass = xdp_pass(&client, &link.client_if)?;
    add_addresses(&server, &link.server_if, &["198.18.32.11", "198.18.32.12"])?;
    let dir = ntpx_tests::TempDir::new("keys")?;
    let keys = keyfile(&dir, KEYS)?;
    let d = Ntpxd::start(
        &server,
        &format!("local stratum 3\nallow all\nkeyfile {}\n", keys.display()),
        &["-i", &link.server_if],
    )?;
    let addrs = [link.server_v4.as_str(), "198.18.32.11", "198.18.32.12"];
    let (_c, _cdir, sock) = chronyd(
        &client,
        &format!(
            "keyfile {}\nserver {} key 1 {FAST_POLL}\nserver {} key 2 {FAST_POLL}\n\
             server {} key 3 {FAST_POLL}\n",
            keys.display(),
            addrs[0],
            addrs[1],
            addrs[2]
        ),
    )?;
    let report = wait_until(Duration::from_secs(20), "authenticated replies", || {
        let r = chronyc(&client, &sock, &["ntpdata"]).ok()?;
        addrs
            .iter()
            .all(|a| {
                ntpdata_field(&r, a, "Total valid RX")
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_some_and(|n| n >= 3)
            })
            .then_some(r)
    })
    .with_context(|| chronyc(&client, &sock, &["ntpdata"]).unwrap_or_default())?;
    for (a, version) in addrs.iter().zip(["4", "3", "4"]) {
        assert_eq!(
            ntpdata_field(&report, a, "Authenticated").as_deref(),
            Some("Yes"),
            "{a}:\n{report}"
        );
        assert_eq!(
            ntpdata_field(&report, a, "Version").as_deref(),
            Some(version),
            "{a}: SHA256 goes as NTPv3, as chrony sends it"
        );
    }
    let authenticated = d.stat("serverstats", "Authenticated NTP packets")?;
    assert!(authenticated >= 9, "ntpxd counted {authenticated}");
    assert!(
        d.stat("xdpstats", "pass-length")? >= 9,
        "MACs go to the daemon"
    );
    Ok(())
}

/// ntpxd polls chronyd on three of its addresses, one key each: the sources are
/// authenticated and selected; with a wrong secret for the key, every reply is refused.
#[test]
fn ntpxd_authenticates_chronyd_and_refuses_a_wrong_key() -> Result<()> {
    if !ntpx_tests::privileged("ntpxd_authenticates_chronyd_and_refuses_a_wrong_key") {
        return Ok(());
    }
    let up = Netns::new("up")?;
    let me = Netns::new("me")?;
    let link = veth(&up, &me, 33)?;
    add_addresses(&up, &link.server_if, &["198.18.33.11", "198.18.33.12"])?;
    let dir = ntpx_tests::TempDir::new("keys")?;
    let keys = keyfile(&dir, KEYS)?;
    let (_c, _cdir, _sock) = chronyd(
        &up,
        &format!("local stratum 2\nallow all\nkeyfile {}\n", keys.display()),
    )?;
    let addrs = [link.server_v4.as_str(), "198.18.33.11", "198.18.33.12"];
    let config = format!(
        "keyfile {}\nserver {} key 1 {FAST_POLL}\nserver {} key 2 {FAST_POLL}\n\
         server {} key 3 {FAST_POLL}\n",
        keys.display(),
        addrs[0],
        addrs[1],
        addrs[2]
    );
    let d = Ntpxd::start(&me, &config, &["--no-xdp"])?;
    let report = wait_until(Duration::from_secs(20), "authenticated samples", || {
        let r = d.ntpxc(&["ntpdata"]).ok()?;
        addrs
            .iter()
            .all(|a| {
                ntpdata_field(&r, a, "Total good RX")
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_some_and(|n| n >= 3)
            })
            .then_some(r)
    })
    .with_context(|| d.ntpxc(&["ntpdata"]).unwrap_or_default())?;
    for a in addrs {
        assert_eq!(
            ntpdata_field(&report, a, "Authenticated").as_deref(),
            Some("Yes"),
            "{a}:\n{report}"
        );
    }
    wait_until(Duration::from_secs(20), "a source selected", || {
        d.selected()
    })
    .with_context(|| d.ntpxc(&["sources"]).unwrap_or_default())?;
    // chronyc's authdata: symmetric keys with chrony's algorithm numbers and key bits.
    let auth = d.ntpxc(&["-c", "authdata"])?;
    for (a, want) in addrs
        .iter()
        .zip(["SK,1,1,128,", "SK,2,3,168,", "SK,3,13,128,"])
    {
        assert!(
            auth.lines().any(|l| l.starts_with(&format!("{a},{want}"))),
            "{a}: {want} not in\n{auth}"
        );
    }
    drop(d);

    // The same key number with another secret: chronyd's replies never verify.
    let wrong_dir = ntpx_tests::TempDir::new("wrong")?;
    let wrong = keyfile(&wrong_dir, WRONG_KEYS)?;
    let d = Ntpxd::start(
        &me,
        &format!(
            "keyfile {}\nserver {} key 1 {FAST_POLL}\n",
            wrong.display(),
            addrs[0]
        ),
        &["--no-xdp"],
    )?;
    let report = wait_until(Duration::from_secs(10), "requests sent", || {
        let r = d.ntpxc(&["ntpdata"]).ok()?;
        ntpdata_field(&r, addrs[0], "Total TX")
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|n| n >= 5)
            .then_some(r)
    })?;
    assert_eq!(
        ntpdata_field(&report, addrs[0], "Total valid RX").as_deref(),
        Some("0"),
        "{report}"
    );
    assert!(d.selected().is_none());
    Ok(())
}

/// chronyd as an NTS client of ntpxd (RFC 8915): it gets cookies over NTS-KE, its NTP
/// exchanges are authenticated (chronyc authdata says NTS with cookies, ntpdata
/// Authenticated), it selects ntpxd; ntpxd counts the NTS-KE sessions and the
/// authenticated packets, and keeps its cookie keys in ntsdumpdir.
#[test]
fn chronyd_is_an_nts_client_of_ntpxd() -> Result<()> {
    if !ntpx_tests::privileged("chronyd_is_an_nts_client_of_ntpxd") {
        return Ok(());
    }
    let ntpx_tests::ClientServer {
        server,
        client,
        link,
        pass: _pass,
    } = ntpx_tests::client_server("srv", "cli", 35, "ntpx.test")?;
    let dir = ntpx_tests::TempDir::new("nts")?;
    let (cert, key) = ntpx_tests::self_signed_certificate(&dir, "ntpx.test")?;
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump)?;
    let d = Ntpxd::start(
        &server,
        &format!(
            "local stratum 3\nallow all\nntsservercert {}\nntsserverkey {}\nntsdumpdir {}\n\
             ntsrotate 1\n",
            cert.display(),
            key.display(),
            dump.display()
        ),
        &["-i", &link.server_if],
    )?;
    let (_c, _cdir, sock) = chronyd(
        &client,
        &format!(
            "ntstrustedcerts {}\nnosystemcert\nserver ntpx.test nts {FAST_POLL}\n",
            cert.display()
        ),
    )?;
    let report = wait_until(Duration::from_secs(20), "NTS-authenticated replies", || {
        let r = chronyc(&client, &sock, &["ntpdata"]).ok()?;
        ntpdata_field(&r, &link.server_v4, "Total valid RX")
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|n| n >= 3)
            .then_some(r)
    })
    .with_context(|| {
        format!(
            "{}\n{}\n{}",
            chronyc(&client, &sock, &["authdata"]).unwrap_or_default(),
            chronyc(&client, &sock, &["ntpdata"]).unwrap_or_default(),
            d.proc.log()
        )
    })?;
    assert_eq!(
        ntpdata_field(&report, &link.server_v4, "Authenticated").as_deref(),
        Some("Yes"),
        "{report}"
    );
    let auth = chronyc(&client, &sock, &["-c", "authdata"])?;
    // CSV: address, mode, key id, AEAD, key bits, last NTS-KE, attempts, NAKs, cookies,
    // cookie length.
    let row: Vec<&str> = auth.lines().next().unwrap_or_default().split(',').collect();
    assert_eq!(row.get(1), Some(&"NTS"), "{auth}");
    // chronyd 4.3 has only AES-SIV-CMAC-256; 4.4 and later prefer AES-128-GCM-SIV.
    // Cookies: key id, 12-byte nonce, both keys and the tag, sealed under ntpxd's
    // AES-128-GCM-SIV cookie key, and used by chronyd as they are.
    let (aead, bits, cookie) = (row.get(3), row.get(4), row.get(9));
    assert!(
        [
            (Some(&"15"), Some(&"256"), Some(&"96")),
            (Some(&"30"), Some(&"128"), Some(&"64"))
        ]
        .contains(&(aead, bits, cookie)),
        "AEAD, key bits, cookie length: {auth}"
    );
    assert_eq!(row.get(7), Some(&"0"), "no NTS NAK: {auth}");
    assert!(
        row.get(8)
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| c >= 1),
        "cookies held: {auth}"
    );
    wait_until(Duration::from_secs(20), "chronyd to select ntpxd", || {
        chronyc(&client, &sock, &["-c", "sources"])
            .ok()
            .filter(|s| s.lines().any(|l| l.starts_with("^,*")))
    })?;
    // Cookie keys rotated every second: the client goes on, on the fresh cookies each
    // reply brings, without a NAK, past the point where its first key is forgotten.
    let mut d = d;
    d.proc
        .wait_for_log("NTS cookie key 5 in use", Duration::from_secs(10))?;
    let valid = |r: &str| {
        ntpdata_field(r, &link.server_v4, "Total valid RX")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let before = valid(&chronyc(&client, &sock, &["ntpdata"])?);
    std::thread::sleep(Duration::from_secs(1));
    assert!(valid(&chronyc(&client, &sock, &["ntpdata"])?) > before + 5);
    let auth = chronyc(&client, &sock, &["-c", "authdata"])?;
    assert_eq!(auth.split(',').nth(7), Some("0"), "no NAK: {auth}");
    assert!(d.stat("serverstats", "NTS-KE connections accepted")? >= 1);
    assert!(d.stat("serverstats", "Authenticated NTP packets")? >= 3);
    assert!(dump.join("ntpx-nts-keys").is_file(), "cookie keys kept");
    // A client that connects and sends nothing is let go after the session's 2 s.
    let addr = link.server_v4.clone();
    let held = client.run_in(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect((addr.as_str(), 4460))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let start = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
        Ok(start.elapsed())
    })?;
    assert!(held < Duration::from_secs(4), "held for {held:?}");
    Ok(())
}

/// ntpxd as an NTS client of chronyd: NTS-KE over TLS with chronyd's certificate
/// trusted, NTS-authenticated exchanges (ntpdata Authenticated, authdata NTS with
/// cookies), chronyd selected; with a certificate it does not trust, no NTS-KE succeeds
/// and nothing is measured.
#[test]
fn ntpxd_is_an_nts_client_of_chronyd() -> Result<()> {
    if !ntpx_tests::privileged("ntpxd_is_an_nts_client_of_chronyd") {
        return Ok(());
    }
    let up = Netns::new("up")?;
    let me = Netns::new("me")?;
    let link = veth(&up, &me, 36)?;
    me.set_hosts(&format!("{} chrony.test\n", link.server_v4))?;
    let dir = ntpx_tests::TempDir::new("nts")?;
    let (cert, key) = ntpx_tests::self_signed_certificate(&dir, "chrony.test")?;
    let (chrony, _cdir, _sock) = chronyd(
        &up,
        &format!(
            "local stratum 2\nallow all\nntsservercert {}\nntsserverkey {}\n",
            cert.display(),
            key.display()
        ),
    )?;
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump)?;
    let client_config = format!(
        "ntstrustedcerts {}\nnosystemcert\nntsdumpdir {}\nserver chrony.test nts {FAST_POLL}\n",
        cert.display(),
        dump.display()
    );
    let mut d = Ntpxd::start(&me, &client_config, &["--no-xdp"])?;
    let report = wait_until(Duration::from_secs(20), "NTS samples", || {
        let r = d.ntpxc(&["ntpdata"]).ok()?;
        ntpdata_field(&r, &link.server_v4, "Total good RX")
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|n| n >= 3)
            .then_some(r)
    })
    .with_context(|| {
        format!(
            "{}\n{}",
            d.ntpxc(&["authdata"]).unwrap_or_default(),
            d.proc.log()
        )
    })?;
    assert_eq!(
        ntpdata_field(&report, &link.server_v4, "Authenticated").as_deref(),
        Some("Yes"),
        "{report}"
    );
    let auth = d.ntpxc(&["-c", "authdata"])?;
    let row: Vec<&str> = auth.lines().next().unwrap_or_default().split(',').collect();
    assert_eq!(row.get(1), Some(&"NTS"), "{auth}");
    // ntpxd offers 30 first, as chrony 4.4+ does; chronyd 4.3 has only 15.
    assert!(
        [(Some(&"15"), Some(&"256")), (Some(&"30"), Some(&"128"))]
            .contains(&(row.get(3), row.get(4))),
        "AEAD and key bits: {auth}"
    );
    assert_eq!(row.get(7), Some(&"0"), "no NAK: {auth}");
    assert!(
        row.get(8)
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| c >= 6),
        "cookies kept topped up: {auth}"
    );
    wait_until(Duration::from_secs(20), "chronyd selected", || d.selected())
        .with_context(|| d.ntpxc(&["sources"]).unwrap_or_default())?;

    // Stopped and started again: the session kept in ntsdumpdir spares the NTS-KE, and
    // keeps its number and the age of its NTS-KE (as chronyd's dump does).
    let ke_age = |d: &Ntpxd| -> Result<(String, u32)> {
        let auth = d.ntpxc(&["-c", "authdata"])?;
        let row: Vec<String> = auth
            .lines()
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect();
        let age = row.get(5).and_then(|a| a.parse().ok());
        Ok((row.get(2).cloned().unwrap_or_default(), age.context(auth)?))
    };
    // Old enough that a restored session counted from the restart would read younger.
    std::thread::sleep(Duration::from_secs(2));
    let (_, age_before) = ke_age(&d)?;
    let read_before = std::time::Instant::now();
    assert!(age_before >= 2, "{age_before} s since the NTS-KE");
    d.proc.signal(libc::SIGTERM);
    assert!(
        d.proc.wait_exit(Duration::from_secs(5))?,
        "{}",
        d.proc.log()
    );
    assert!(
        dump.join(format!("chrony.test@{}.nts", link.server_v4))
            .is_file(),
        "session saved"
    );
    let mut d = Ntpxd::start(&me, &client_config, &["--no-xdp"])?;
    d.proc
        .wait_for_log("NTS session restored", Duration::from_secs(10))?;
    wait_until(
        Duration::from_secs(10),
        "samples on the restored cookies",
        || {
            let r = d.ntpxc(&["ntpdata"]).ok()?;
            ntpdata_field(&r, &link.server_v4, "Total good RX")
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|n| n >= 3)
                .then_some(())
        },
    )?;
    assert!(!d.proc.log().contains("NTS-KE done"), "{}", d.proc.log());
    let (key_id, age_after) = ke_age(&d)?;
    assert_eq!(key_id, "1", "the restored session keeps its number");
    // Whole seconds both: within one of the first reading plus the time since.
    let since = read_before.elapsed().as_secs() as u32;
    assert!(
        age_after + 1 >= age_before + since,
        "the NTS-KE's age goes on from {age_before} s ({since} s ago), not {age_after} s"
    );
    drop(d);

    // Another certificate trusted for the source (its certset 1; the right one is in
    // set 0, which it does not use): the TLS check fails, nothing is measured.
    let other = ntpx_tests::TempDir::new("other")?;
    let (wrong, _) = ntpx_tests::self_signed_certificate(&other, "chrony.test")?;
    let mut d = Ntpxd::start(
        &me,
        &format!(
            "ntstrustedcerts {}\nntstrustedcerts 1 {}\nnosystemcert\n\
             server chrony.test nts certset 1 {FAST_POLL}\n",
            cert.display(),
            wrong.display()
        ),
        &["--no-xdp"],
    )?;
    d.proc
        .wait_for_log("NTS-KE failed", Duration::from_secs(10))?;
    let r = d.ntpxc(&["ntpdata"])?;
    assert_eq!(
        ntpdata_field(&r, &link.server_v4, "Total RX").as_deref(),
        Some("0"),
        "{r}"
    );
    drop(d);
    // The sets the other way round: the source's set 2 holds chronyd's certificate.
    let mut d = Ntpxd::start(
        &me,
        &format!(
            "ntstrustedcerts {}\nntstrustedcerts 2 {}\nnosystemcert\n\
             server chrony.test nts certset 2 {FAST_POLL}\n",
            wrong.display(),
            cert.display()
        ),
        &["--no-xdp"],
    )?;
    d.proc
        .wait_for_log("NTS-KE done", Duration::from_secs(10))?;
    drop(d);

    // chronyd's own certificate trusted, but it names another host: refused too (a
    // trusted certificate stands only for the names it carries).
    drop(chrony);
    let named = ntpx_tests::TempDir::new("named")?;
    let (other_cert, other_key) = ntpx_tests::self_signed_certificate(&named, "other.test")?;
    let (_c2, _cdir2, _sock2) = chronyd(
        &up,
        &format!(
            "local stratum 2\nallow all\nntsservercert {}\nntsserverkey {}\n",
            other_cert.display(),
            other_key.display()
        ),
    )?;
    let mut d = Ntpxd::start(
        &me,
        &format!(
            "ntstrustedcerts {}\nnosystemcert\nserver chrony.test nts {FAST_POLL}\n",
            other_cert.display()
        ),
        &["--no-xdp"],
    )?;
    d.proc
        .wait_for_log("NTS-KE failed", Duration::from_secs(10))?;
    assert!(
        d.proc.log().contains("not valid for name \"chrony.test\""),
        "{}",
        d.proc.log()
    );
    Ok(())
}

/// ntpd-rs (1.9) as an NTS client of ntpxd: it verifies ntpxd's certificate (signed by
/// an authority it is given: it refuses self-signed ones), gets cookies over NTS-KE and
/// polls with NTS; ntpxd counts the NTS-KE session and the authenticated exchanges, and
/// ntpd-rs reports the source reachable. ntpd-rs has no mode without clock control: it
/// runs without `CAP_SYS_TIME` and with the `noclock` preload library, so every clock
/// change it asks for is reported done and none is made (the library's log shows it
/// asked).
#[test]
fn ntpd_rs_is_an_nts_client_of_ntpxd() -> Result<()> {
    if !ntpx_tests::privileged("ntpd_rs_is_an_nts_client_of_ntpxd") {
        return Ok(());
    }
    let daemon = ntpx_tests::ntpd_rs_daemon()?;
    let ntpx_tests::ClientServer {
        server,
        client,
        link,
        pass: _pass,
    } = ntpx_tests::client_server("srv", "cli", 37, "ntpx.test")?;
    let dir = ntpx_tests::TempDir::new("nts-rs")?;
    let (ca, cert, key) = ntpx_tests::ca_signed_certificate(&dir, "ntpx.test")?;
    let shim = ntpx_tests::preload_shim(&dir, "noclock")?;
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump)?;
    let d = Ntpxd::start(
        &server,
        &format!(
            "local stratum 3\nallow all\nntsservercert {}\nntsserverkey {}\nntsdumpdir {}\n",
            cert.display(),
            key.display(),
            dump.display()
        ),
        &["-i", &link.server_if],
    )?;
    let observe = dir.path().join("observe");
    let conf = dir.path().join("ntp.toml");
    std::fs::write(
        &conf,
        format!(
            "[observability]\nlog-level = \"info\"\nobservation-path = \"{}\"\n\n\
             [source-defaults]\npoll-interval-limits = {{ min = 0, max = 0 }}\n\
             initial-poll-interval = 0\n\n\
             [[source]]\nmode = \"nts\"\naddress = \"ntpx.test\"\n\
             certificate-authority = \"{}\"\n\n\
             [synchronization]\nminimum-agreeing-sources = 1\n",
            observe.display(),
            ca.display()
        ),
    )?;
    let changes = dir.path().join("noclock.log");
    let mut cmd = client.command("setpriv");
    cmd.args(["--bounding-set=-sys_time", "--inh-caps=-sys_time"])
        .arg(&daemon)
        .arg("-c")
        .arg(&conf)
        .env("LD_PRELOAD", &shim)
        .env("NOCLOCK_LOG", &changes);
    let rs = ntpx_tests::Proc::spawn("ntpd-rs", cmd)?;
    wait_until(Duration::from_secs(30), "authenticated exchanges", || {
        (d.stat("serverstats", "Authenticated NTP packets").ok()? >= 4).then_some(())
    })
    .with_context(|| {
        format!(
            "{}\nntpd-rs:\n{}\nntpxd:\n{}",
            d.ntpxc(&["serverstats"]).unwrap_or_default(),
            rs.log(),
            d.proc.log()
        )
    })?;
    assert!(d.stat("serverstats", "NTS-KE connections accepted")? >= 1);
    let ctl = daemon.with_file_name("ntp-ctl");
    let status = client.output(
        ctl.to_str().context("ntp-ctl path")?,
        &["status", "-c", conf.to_str().context("config path")?],
    )?;
    let asked = std::fs::read_to_string(&changes).unwrap_or_default();
    println!(
        "ntpd-rs status:\n{status}\nclock changes asked for (none made):\n{asked}ntpd-rs log:\n{}",
        rs.log()
    );
    // The library stood in for the clock (it could not have changed it: no CAP_SYS_TIME).
    assert!(asked.contains("clock_adjtime"), "{asked}");
    // The source, over NTS, with cookies in hand; selected (stratum one below ntpxd's).
    assert!(
        status.contains("ntpx.test:4460") && status.contains("[NTS]"),
        "{status}"
    );
    assert!(status.contains("Stratum:\t4"), "{status}");
    let cookies = status
        .lines()
        .find_map(|l| l.trim().strip_prefix("NTS cookies:"))
        .and_then(|c| c.trim().split('/').next()?.parse::<u32>().ok());
    assert!(cookies.is_some_and(|c| c >= 1), "{status}");
    Ok(())
}

/// An NTS-KE server naming another NTP server and port (`ntsntpserver`, and an NTP port
/// other than 123, which it then sends as a port record): ntpxd's NTS client polls what
/// it names, where its cookies are good, and gets authenticated samples; nothing listens
/// on the NTS-KE host's port 123.
#[test]
fn ntpxd_polls_the_ntp_server_its_nts_ke_server_names() -> Result<()> {
    if !ntpx_tests::privileged("ntpxd_polls_the_ntp_server_its_nts_ke_server_names") {
        return Ok(());
    }
    let up = Netns::new("up")?;
    let me = Netns::new("me")?;
    let link = veth(&up, &me, 38)?;
    let named = "198.18.38.9";
    add_addresses(&up, &link.server_if, &[named])?;
    me.set_hosts(&format!(
        "{} ntpx.test\n{named} time.ntpx.test\n",
        link.server_v4
    ))?;
    let dir = ntpx_tests::TempDir::new("nts-named")?;
    let (cert, key) = ntpx_tests::self_signed_certificate(&dir, "ntpx.test")?;
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump)?;
    let server_config = format!(
        "local stratum 3\nallow all\nport 1123\nntsservercert {}\nntsserverkey {}\n\
         ntsdumpdir {}\nntsntpserver time.ntpx.test\n",
        cert.display(),
        key.display(),
        dump.display()
    );
    let server = Ntpxd::start(&up, &server_config, &["--no-xdp"])?;
    let kept = dir.path().join("client-dump");
    std::fs::create_dir(&kept)?;
    let client_config = format!(
        "ntstrustedcerts {}\nnosystemcert\nntsdumpdir {}\nserver ntpx.test nts {FAST_POLL}\n",
        cert.display(),
        kept.display()
    );
    let samples = |d: &Ntpxd| {
        wait_until(Duration::from_secs(20), "authenticated samples", || {
            let r = d.ntpxc(&["ntpdata"]).ok()?;
            ntpdata_field(&r, &link.server_v4, "Total good RX")
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|n| n >= 3)
                .then_some(())
        })
        .with_context(|| {
            format!(
                "{}\nclient:\n{}\nserver:\n{}",
                d.ntpxc(&["ntpdata"]).unwrap_or_default(),
                d.proc.log(),
                server.proc.log()
            )
        })
    };
    let mut d = Ntpxd::start(&me, &client_config, &["--no-xdp"])?;
    d.proc
        .wait_for_log(&format!("NTP server {named}:1123"), Duration::from_secs(10))?;
    samples(&d)?;
    assert!(server.stat("serverstats", "Authenticated NTP packets")? >= 3);
    // Two ntpxd: AES-128-GCM-SIV (chrony's preference), its keys exported the RFC's way
    // (both sides send chrony's record), no NAK; cookies of 4 + 12 + 2 x 16 + 16 bytes.
    let auth = d.ntpxc(&["-c", "authdata"])?;
    let row: Vec<&str> = auth.lines().next().unwrap_or_default().split(',').collect();
    assert_eq!(
        (row.get(2), row.get(3), row.get(4), row.get(7), row.get(9)),
        (
            Some(&"1"),
            Some(&"30"),
            Some(&"128"),
            Some(&"0"),
            Some(&"64")
        ),
        "the first session, AEAD_AES_128_GCM_SIV: {auth}"
    );
    assert!(
        d.proc.log().contains("AEAD 30"),
        "the NTS-KE names its algorithm: {}",
        d.proc.log()
    );
    // Restarted: the saved session remembers where its cookies are good.
    d.proc.signal(libc::SIGTERM);
    assert!(
        d.proc.wait_exit(Duration::from_secs(5))?,
        "{}",
        d.proc.log()
    );
    let mut d = Ntpxd::start(&me, &client_config, &["--no-xdp"])?;
    d.proc
        .wait_for_log("NTS session restored", Duration::from_secs(10))?;
    assert!(
        d.proc
            .log()
            .contains(&format!("cookies; NTP server {named}:1123")),
        "{}",
        d.proc.log()
    );
    samples(&d)?;
    assert!(!d.proc.log().contains("NTS-KE done"), "{}", d.proc.log());

    // The server loses its cookie keys (restarted without its key file): the restored
    // cookies get NTS NAKs, and at its next poll the client makes a new NTS-KE (its
    // second session) and goes on, authenticated.
    drop(server);
    std::fs::remove_file(dump.join("ntpx-nts-keys"))?;
    let server = Ntpxd::start(&up, &server_config, &["--no-xdp"])?;
    let good = |d: &Ntpxd| {
        d.ntpxc(&["ntpdata"])
            .ok()
            .and_then(|r| ntpdata_field(&r, &link.server_v4, "Total good RX"))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    d.proc
        .wait_for_log("NTS-KE done", Duration::from_secs(20))
        .with_context(|| server.proc.log())?;
    let before = good(&d);
    wait_until(
        Duration::from_secs(20),
        "samples after the new NTS-KE",
        || (good(&d) >= before + 3).then_some(()),
    )
    .with_context(|| format!("client:\n{}\nserver:\n{}", d.proc.log(), server.proc.log()))?;
    let auth = d.ntpxc(&["-c", "authdata"])?;
    let row: Vec<&str> = auth.lines().next().unwrap_or_default().split(',').collect();
    assert_eq!(
        (row.get(2), row.get(6), row.get(7)),
        (Some(&"2"), Some(&"0"), Some(&"0")),
        "the second session, attempts reset by its replies, no NAK pending: {auth}"
    );
    assert!(server.stat("serverstats", "Authenticated NTP packets")? >= 3);
    Ok(())
}

/// NTS-KE connections follow chronyd's rules: the NTP access rules apply (a denied
/// client is closed on, not counted), then `ntsratelimit` (here a burst of one).
#[test]
fn nts_ke_connections_follow_the_access_rules_and_ntsratelimit() -> Result<()> {
    if !ntpx_tests::privileged("nts_ke_connections_follow_the_access_rules_and_ntsratelimit") {
        return Ok(());
    }
    let ntpx_tests::ClientServer {
        server,
        client,
        link,
        pass: _pass,
    } = ntpx_tests::client_server("kesrv", "kecli", 39, "ntpx.test")?;
    let dir = ntpx_tests::TempDir::new("ntske")?;
    let (cert, key) = ntpx_tests::self_signed_certificate(&dir, "ntpx.test")?;
    let nts = format!(
        "local stratum 3\nntsservercert {}\nntsserverkey {}\n",
        cert.display(),
        key.display()
    );
    let server_ip: std::net::IpAddr = link.server_v4.parse()?;
    // NTS-KEs from the client's namespace: how many of `tries` succeeded.
    let exchanges = |tries: usize| -> Result<usize> {
        let cert = cert.clone();
        client.run_in(move || {
            let text = format!(
                "server ntpx.test nts\nntstrustedcerts {}\nnosystemcert\n",
                cert.display()
            );
            let config = ntp_proto::config::parse_str(&text, std::path::Path::new("t.conf"))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let ctx = ntp_user::sources::nts_ke::context(&config)?.context("no NTS context")?;
            let mut done = 0;
            for _ in 0..tries {
                let tls = ctx.tls(0)?;
                let aeads = ntp_proto::nts::Aead::ALL;
                if ntp_user::sources::nts_ke::key_exchange(
                    tls,
                    "ntpx.test",
                    Some(server_ip),
                    ntp_proto::nts::KE_PORT,
                    &aeads,
                )
                .is_ok()
                {
                    done += 1;
                }
            }
            Ok(done)
        })
    };

    // Denied by the NTP rules: no NTS-KE, none counted.
    let client_ip = &link.client_v4;
    let mut d = Ntpxd::start(
        &server,
        &format!("{nts}allow all\ndeny {client_ip}\n"),
        &["--no-xdp"],
    )?;
    let listening = "Listening on 0.0.0.0:4460 for NTS-KE";
    d.proc.wait_for_log(listening, Duration::from_secs(10))?;
    assert_eq!(exchanges(2)?, 0, "{}", d.proc.log());
    assert_eq!(d.stat("serverstats", "NTS-KE connections accepted")?, 0);
    assert_eq!(d.stat("serverstats", "NTS-KE connections dropped")?, 0);
    drop(d);

    // Allowed, one connection in a burst: the first NTS-KE, then the rate limit, which
    // lets one in 16 of the rest through (leak 4, chrony's most sparing).
    let mut d = Ntpxd::start(
        &server,
        &format!("{nts}allow all\nntsratelimit interval 6 burst 1 leak 4\n"),
        &["--no-xdp"],
    )?;
    d.proc.wait_for_log(listening, Duration::from_secs(10))?;
    let served = exchanges(10)?;
    let accepted = d.stat("serverstats", "NTS-KE connections accepted")?;
    let dropped = d.stat("serverstats", "NTS-KE connections dropped")?;
    let stats = d.ntpxc(&["serverstats"])?;
    assert_eq!((accepted, dropped), (10, 10 - served as u64), "{stats}");
    // The first, and the ones that leaked: failing takes six or more of nine leaking,
    // about one run in 200 000.
    assert!((1..=6).contains(&served), "{served} served: {stats}");
    drop(d);

    // Without a limit, every one is served (more than a default limit's burst of 8).
    let mut d = Ntpxd::start(&server, &format!("{nts}allow all\n"), &["--no-xdp"])?;
    d.proc.wait_for_log(listening, Duration::from_secs(10))?;
    assert_eq!(exchanges(10)?, 10, "{}", d.proc.log());
    Ok(())
}
