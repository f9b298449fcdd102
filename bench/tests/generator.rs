//! The load generator against a bare bounce program and against ntpxd's XDP path, in
//! namespaces (needs root): every request it sends is matched and timed.

use anyhow::Result;
use ntpx_bench::generator::{Generator, Step, Template};
use ntpx_bench::nts::NtsStep;
use ntpx_bench::servers::{self, Peers, ServerKind};
use ntpx_bench::topology::{BenchNet, FIRST_CLIENT, pin_napi};
use std::time::Duration;

/// Privileged tests here pin threads to the same CPUs: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(kind: ServerKind, subnet: u8, rate: f64) -> Result<Step> {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let net = BenchNet::new(subnet)?;
    let peers = Peers {
        ntpd_rs: "/nonexistent".into(),
    };
    let _server = servers::start(kind, &net, &peers)?;
    let template = Template {
        src_mac: net.client_mac,
        dst_mac: net.server_mac,
        dst: net.link.server_v4.parse()?,
    };
    let (server_if, client_if) = (net.link.server_if.clone(), net.link.client_if.clone());
    let echo = kind.echoes();
    // Interface indexes are per namespace: the generator lives and runs inside the client's.
    net.client.run_in(move || {
        let mut g = Generator::new(&client_if, &template, FIRST_CLIENT, 64, echo)?;
        pin_napi(&server_if, &client_if)?;
        // Until the server answers (ntpxd publishes its first state within a second).
        for _ in 0..40 {
            if g.step(1_000.0, Duration::from_millis(250))?.answered > 0 {
                break;
            }
        }
        g.step(rate, Duration::from_secs(1))
    })
}

/// The step offered about `rate`, and nearly every request was answered, none twice.
fn assert_load_answered(
    (offered, rate): (f64, f64),
    (sent, answered): (u64, u64),
    step: &dyn std::fmt::Debug,
) {
    assert!(
        (offered - rate).abs() < 0.15 * rate,
        "offered {offered} for {rate}"
    );
    assert!(
        sent > 0 && answered as f64 >= 0.95 * sent as f64,
        "{step:?}"
    );
    assert!(answered <= sent, "more replies than requests: {step:?}");
}

fn assert_all_matched(s: &Step, rate: f64) {
    assert_load_answered((s.offered_rate, rate), (s.sent, s.answered), s);
    assert_eq!((s.invalid, s.stale, s.kod), (0, 0, 0), "{s:?}");
    let rtt = s.rtt.expect("response times");
    assert!(
        rtt.min <= rtt.p50 && rtt.p50 <= rtt.p99 && rtt.p99 <= rtt.max,
        "{rtt:?}"
    );
    assert!(rtt.p50 > 0 && rtt.p50 < 50_000_000, "{rtt:?}");
}

#[test]
fn generator_requests_are_matched_through_a_bare_bounce() -> Result<()> {
    if !ntpx_tests::privileged("generator_requests_are_matched_through_a_bare_bounce") {
        return Ok(());
    }
    let s = run(ServerKind::Bounce, 31, 20_000.0)?;
    assert_all_matched(&s, 20_000.0);
    // A bounced request carries no server timestamps.
    assert!(s.processing.is_none() && s.offset_error.is_none());
    Ok(())
}

#[test]
fn generator_times_ntpx_xdp_replies() -> Result<()> {
    if !ntpx_tests::privileged("generator_times_ntpx_xdp_replies") {
        return Ok(());
    }
    let s = run(ServerKind::NtpxXdp, 32, 20_000.0)?;
    assert_all_matched(&s, 20_000.0);
    assert_eq!(s.unsynchronised, 0);
    // The XDP program stamps receive and transmit microseconds apart at most; a shared
    // clock puts the client's offset within the path's asymmetry.
    let p = s.processing.expect("processing delay");
    assert!(p.p50 < 100_000, "{p:?}");
    let o = s.offset_error.expect("offset error");
    assert!(o.p50 < 5_000_000, "{o:?}");
    println!(
        "ntpx XDP at 20k/s: processing p50 {} ns, offset error p50 {} ns, response p50 {} ns",
        p.p50,
        o.p50,
        s.rtt.map_or(0, |r| r.p50)
    );
    Ok(())
}

/// One step of the NTS generator at 20 k/s against `server`, and the bytes per frame
/// the server end received meanwhile.
fn nts_step(server: ntpx_bench::nts_bench::NtsServer, subnet: u8) -> Result<(NtsStep, f64)> {
    use ntp_proto::nts::Aead;
    use ntpx_bench::nts_bench::{Credentials, session};
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let net = BenchNet::new(subnet)?;
    net.moderate_interrupts()?;
    let ip = net.link.server_v4.parse()?;
    let client = net.client.name().to_owned();
    let rx = |what: &str| -> Result<u64> {
        let path = format!("/sys/class/net/{}/statistics/rx_{what}", net.link.server_if);
        let out = net.server.output("cat", &[&path])?;
        out.trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{path}: {out:?}: {e}"))
    };
    // The generator's thread lives in the client's namespace; servers start in the
    // server's.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<_> {
                ntpx_bench::topology::enter_netns(&client)?;
                let creds = Credentials::new()?;
                let (_server, mut load) = session(server, &net, &creds, ip, Aead::AesSivCmac256)?;
                let (bytes, frames) = (rx("bytes")?, rx("packets")?);
                let s = load.step(20_000.0, Duration::from_secs(1))?;
                let per_frame = (rx("bytes")? - bytes) as f64 / (rx("packets")? - frames) as f64;
                Ok((s, per_frame))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the generator's thread panicked"))?
    })
}

/// Every request answered, the sampled replies verified under the session's keys,
/// nearly every reply timed, and frames cut to the requests' length.
fn assert_nts_step(s: &NtsStep, per_frame: f64) {
    assert_load_answered((s.offered_rate, 20_000.0), (s.sent, s.answered), s);
    assert_eq!(
        (s.naks, s.kod, s.invalid, s.failed_check),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.verified > 0, "no reply checked in full: {s:?}");
    assert!(
        s.timed as f64 >= 0.95 * s.answered as f64,
        "untimed replies: {s:?}"
    );
    let rtt = s.rtt.expect("response times");
    assert!(rtt.p99 < 50_000_000, "{rtt:?}");
    // 224-byte requests behind 42 bytes of headers (the server end's few other frames,
    // ARP and NTS-KE, barely move the mean).
    assert!((per_frame - 266.0).abs() < 4.0, "{per_frame} bytes a frame");
}

/// The NTS generator (pool requests behind headers written by its live-frames program)
/// against ntpxd's `AF_XDP` NTS path.
#[test]
fn nts_generator_requests_reach_ntpx_xsk_answered_and_timed() -> Result<()> {
    if !ntpx_tests::privileged("nts_generator_requests_reach_ntpx_xsk_answered_and_timed") {
        return Ok(());
    }
    let (s, per_frame) = nts_step(ntpx_bench::nts_bench::NtsServer::NtpxXsk, 33)?;
    assert_nts_step(&s, per_frame);
    Ok(())
}

/// The same against ntpxd's NTS socket threads (the kernel's stack, `SO_REUSEPORT`).
#[test]
fn nts_generator_requests_reach_ntpx_sockets_answered_and_timed() -> Result<()> {
    if !ntpx_tests::privileged("nts_generator_requests_reach_ntpx_sockets_answered_and_timed") {
        return Ok(());
    }
    let (s, per_frame) = nts_step(ntpx_bench::nts_bench::NtsServer::Ntpx, 34)?;
    assert_nts_step(&s, per_frame);
    Ok(())
}
