//! The XDP program run on crafted frames through `BPF_PROG_TEST_RUN` (needs root).

use aya::programs::{TestRun, TestRunOptions};
use ntp_common::{Counter, ServerState};
use ntp_proto::{
    acl::{AccessTable, Action, Subnet},
    packet::{NtpHeader, NtpTimestamp},
    reference::{PublishParams, Reference, server_state},
};
use ntp_user::{clock, xdp::KernelPath};
use ntpx_tests::frames::{self, CLIENT_MAC, SERVER_MAC, Spec, ntp_request};
use std::time::Duration;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const CLIENT_TX: u64 = 0x1234_5678_9abc_def0;

struct Fixture {
    k: KernelPath,
}

fn state_now(stale_limit: Duration, serve: bool) -> ServerState {
    let tai = clock::tai_ns().unwrap();
    let off = clock::kernel_time().unwrap().tai_offset_s;
    let now_unix = tai - off as u64 * 1_000_000_000;
    let mut r = Reference::local(3, now_unix);
    r.root_delay_ns = 250_000_000;
    r.root_dispersion_ns = 1_000_000;
    let p = PublishParams {
        precision: -24,
        max_age: stale_limit,
        serve,
        min_poll: 3,
    };
    server_state(&r, &p, tai, off)
}

impl Fixture {
    /// Loads the program with a fresh state and `allow all` minus 198.18.9.0/24 and `fd00:9::/32`.
    fn new() -> Option<Self> {
        if !ntpx_tests::privileged("xdp_testrun") {
            return None;
        }
        let mut k = KernelPath::load(123).expect("loading the XDP program");
        k.set_acl(&allow_all_but(&["198.18.9.0/24", "fd00:9::/32"]))
            .unwrap();
        let local: Vec<std::net::IpAddr> = ["198.18.0.1", "fd00:198:18::1", "fd00::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        k.set_local_addresses(&local).unwrap();
        k.set_test_run_mac(SERVER_MAC).unwrap();
        k.publish(&state_now(Duration::from_secs(10), true));
        Some(Fixture { k })
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let (rc, out, _) = run_once(&mut self.k, frame);
        (rc, out)
    }

    fn counter(&self, c: Counter) -> u64 {
        self.k.counters().unwrap()[c as usize]
    }

    /// Runs `frame` and asserts it was passed untouched.
    fn assert_passed(&mut self, frame: &[u8], what: &str) {
        let (rc, out) = self.run(frame);
        assert_eq!(rc, XDP_PASS, "{what}: expected XDP_PASS");
        assert_eq!(out, frame, "{what}: passed frame was modified");
    }
}

/// One `BPF_PROG_TEST_RUN` of `k`'s program on `frame`: its verdict, the frame after
/// it, and the run's duration.
fn run_once(k: &mut KernelPath, frame: &[u8]) -> (u32, Vec<u8>, Duration) {
    let mut out = vec![0u8; frame.len() + 512];
    let prog = k.serve_program().unwrap();
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out, r.duration)
}

/// `allow all` with `deny` for each of `subnets`.
fn allow_all_but(subnets: &[&str]) -> AccessTable {
    let mut acl = AccessTable::new();
    acl.apply(Action::Allow, false, None);
    for s in subnets {
        acl.apply(Action::Deny, false, Some(Subnet::parse(s).unwrap()));
    }
    acl
}

/// A valid client request from `src` to `dst`.
fn request_frame(src: &str, dst: &str) -> Vec<u8> {
    frames::build(&Spec::udp(src, dst, &ntp_request(4, 3, 6, CLIENT_TX)))
}

fn realtime_ns() -> u64 {
    clock::realtime_ns().unwrap()
}

/// Checks a reply to a request built from `req`: addresses, checksums, NTP fields.
fn check_reply(req: &Spec, out: &[u8], in_len: usize, version: u8, before: u64, after: u64) {
    assert_eq!(out.len(), in_len, "reply size differs from request size");
    let p = frames::parse(out).expect("reply parses");
    assert_eq!(p.dst_mac, CLIENT_MAC);
    assert_eq!(p.src_mac, SERVER_MAC);
    assert_eq!(p.vlans, req.vlans.iter().map(|v| v.1).collect::<Vec<_>>());
    assert_eq!((p.src, p.dst), (req.dst, req.src), "addresses swapped");
    assert_eq!((p.sport, p.dport), (req.dport, req.sport), "ports swapped");
    assert_eq!(p.ttl, 64);
    assert!(p.ip_csum_ok, "IPv4 header checksum");
    assert!(p.udp_csum_ok, "UDP checksum");
    let h = NtpHeader::parse(&p.payload).unwrap();
    assert_eq!((h.leap, h.version, h.mode, h.stratum), (0, version, 4, 3));
    assert_eq!(h.poll, 6, "client poll echoed");
    assert_eq!(h.precision, -24);
    assert_eq!(h.refid, [127, 127, 1, 1]);
    assert_eq!(h.root_delay, 0x4000, "0.25 s root delay in 16.16");
    // 1 ms at publication plus 15 ppm of a few ms: 65 or 66 units of 2^-16 s.
    assert!(
        (65..=67).contains(&h.root_dispersion),
        "root dispersion {}",
        h.root_dispersion
    );
    assert_eq!(h.origin_ts, NtpTimestamp(CLIENT_TX));
    let rx = h.receive_ts.to_unix_ns(before) as u64;
    let tx = h.transmit_ts.to_unix_ns(before) as u64;
    assert!(rx <= tx, "receive {rx} after transmit {tx}");
    // Served time is the system clock here: both stamps fall inside the run (+1 ns rounding).
    assert!(
        rx + 1 >= before && tx <= after + 1,
        "stamps {rx}..{tx} outside {before}..{after}"
    );
    assert!(tx - rx < 1_000_000, "server processing took {} ns", tx - rx);
}

#[test]
fn valid_requests_are_answered_v4_v6_and_vlan() {
    let Some(mut fx) = Fixture::new() else { return };
    let tags: [Vec<(u16, u16)>; 3] = [vec![], vec![(0x8100, 42)], vec![(0x88a8, 7), (0x8100, 42)]];
    let mut answered = 0;
    for (src, dst) in [
        ("198.18.0.2", "198.18.0.1"),
        ("fd00:198:18::2", "fd00:198:18::1"),
    ] {
        for vlans in &tags {
            for version in 1..=4 {
                let mut spec = Spec::udp(src, dst, &ntp_request(version, 3, 6, CLIENT_TX));
                spec.vlans = vlans.clone();
                let frame = frames::build(&spec);
                let before = realtime_ns();
                let (rc, out) = fx.run(&frame);
                let after = realtime_ns();
                assert_eq!(rc, XDP_TX, "{src} vlans {vlans:?} v{version} not answered");
                check_reply(&spec, &out, frame.len(), version, before, after);
                answered += 1;
            }
        }
    }
    assert_eq!(fx.counter(Counter::Answered), answered);
    assert_eq!(fx.counter(Counter::NtpReceived), answered);
}

#[test]
fn low_client_poll_is_raised_to_the_minimum() {
    let Some(mut fx) = Fixture::new() else { return };
    let spec = Spec::udp(
        "198.18.0.2",
        "198.18.0.1",
        &ntp_request(4, 3, -3, CLIENT_TX),
    );
    let (rc, out) = fx.run(&frames::build(&spec));
    assert_eq!(rc, XDP_TX);
    let h = NtpHeader::parse(&frames::parse(&out).unwrap().payload).unwrap();
    assert_eq!(h.poll, 3);
}

#[test]
fn malformed_and_foreign_frames_pass_untouched() {
    let Some(mut fx) = Fixture::new() else { return };
    let good4 = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    let good6 = Spec::udp("fd00::2", "fd00::1", &ntp_request(4, 3, 6, CLIENT_TX));
    let mut qinq = good6.clone();
    qinq.vlans = vec![(0x88a8, 1), (0x8100, 2)];

    // Every truncation of a valid frame down to a bare Ethernet header (BPF_PROG_TEST_RUN
    // refuses shorter XDP input with EINVAL).
    for spec in [&good4, &good6, &qinq] {
        let f = frames::build(spec);
        for len in 14..f.len() {
            fx.assert_passed(&f[..len], &format!("truncated to {len} of {}", f.len()));
        }
    }
    let mut cases: Vec<(String, Spec)> = Vec::new();
    for frag in [0x2000u16, 0x0001, 0x3fff, 0x1fff] {
        let mut s = good4.clone();
        s.frag = frag;
        cases.push((format!("IPv4 fragment field {frag:#x}"), s));
    }
    let mut s = good4.clone();
    s.ipv4_options = vec![1, 1, 1, 0];
    cases.push(("IPv4 options".into(), s));
    for ext in [0u8, 43, 44, 60] {
        let mut s = good6.clone();
        s.ipv6_ext = Some(ext);
        cases.push((format!("IPv6 extension header {ext}"), s));
    }
    for (v, m) in [
        (0, 3),
        (5, 3),
        (7, 3),
        (4, 0),
        (4, 1),
        (4, 2),
        (4, 4),
        (4, 5),
        (4, 6),
        (4, 7),
        (1, 0),
    ] {
        for base in [&good4, &good6] {
            let mut s = base.clone();
            s.payload = ntp_request(v, m, 6, CLIENT_TX).to_vec();
            cases.push((format!("version {v} mode {m}"), s));
        }
    }
    for port in [122u16, 124, 323, 12300] {
        let mut s = good4.clone();
        s.dport = port;
        cases.push((format!("port {port}"), s));
    }
    let mut tcp = good4.clone();
    tcp.proto = 6;
    cases.push(("TCP".into(), tcp));
    for (what, spec) in &cases {
        fx.assert_passed(&frames::build(spec), what);
    }
    // NTP payloads of 49..=1500 bytes (extension fields, MACs, NTS, garbage): never answered.
    for len in 49..=1500 {
        for base in [&good4, &good6] {
            let mut s = base.clone();
            let mut p = ntp_request(4, 3, 6, CLIENT_TX).to_vec();
            p.resize(len, 0xab);
            s.payload = p;
            fx.assert_passed(&frames::build(&s), &format!("{len}-byte payload"));
        }
    }
    // Not for us, or nobody to answer.
    let mut other_dst = good4.clone();
    other_dst.dst = "198.18.0.9".parse().unwrap();
    cases.push(("IPv4 destination not served".into(), other_dst));
    let mut other_dst6 = good6.clone();
    other_dst6.dst = "fd00::9".parse().unwrap();
    cases.push(("IPv6 destination not served".into(), other_dst6));
    let mut bcast = good4.clone();
    bcast.dst = "255.255.255.255".parse().unwrap();
    cases.push(("broadcast destination".into(), bcast));
    for src in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255"] {
        let mut s = good4.clone();
        s.src = src.parse().unwrap();
        cases.push((format!("source {src}"), s));
    }
    for src in ["::", "::1", "ff02::1"] {
        let mut s = good6.clone();
        s.src = src.parse().unwrap();
        cases.push((format!("source {src}"), s));
    }
    let mut port0 = good4.clone();
    port0.sport = 0;
    cases.push(("source port 0".into(), port0));
    let mut low_port = good4.clone();
    low_port.sport = 1000;
    cases.push(("source port 1000".into(), low_port));
    let bad_sources = cases.split_off(cases.len() - 9);
    for (what, spec) in &cases[cases.len() - 3..] {
        fx.assert_passed(&frames::build(spec), what);
    }
    for (what, spec) in &bad_sources {
        assert_eq!(
            fx.run(&frames::build(spec)).0,
            XDP_DROP,
            "{what} not dropped"
        );
    }
    let mut from_123 = good4.clone();
    from_123.sport = 123;
    assert_eq!(
        fx.run(&frames::build(&from_123)).0,
        XDP_TX,
        "server-to-server requests from port 123"
    );
    let mut group_mac = frames::build(&good4);
    group_mac[0] = 0x01;
    fx.assert_passed(&group_mac, "multicast destination MAC");
    let mut no_csum6 = frames::build(&good6);
    let n = no_csum6.len();
    no_csum6[n - 48 - 2] = 0;
    no_csum6[n - 48 - 1] = 0;
    assert_eq!(fx.run(&no_csum6).0, XDP_DROP, "IPv6 without a UDP checksum");
    assert_eq!(fx.counter(Counter::PassNotLocal), 4);
    assert_eq!(fx.counter(Counter::DropBadSource), 10);

    // Non-IP ethertypes and a frame too short for Ethernet.
    let mut arp = frames::build(&good4);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    fx.assert_passed(&arp, "ARP");
    // IPv4 version field wrong under an IPv4 ethertype.
    let mut badver = frames::build(&good4);
    badver[14] = 0x65;
    fx.assert_passed(&badver, "IP version 6 under ethertype 0x0800");
    // A frame with trailing padding beyond the IP datagram.
    let mut padded = frames::build(&good4);
    padded.extend_from_slice(&[0; 4]);
    fx.assert_passed(&padded, "trailing bytes");

    assert_eq!(
        fx.counter(Counter::Answered),
        1,
        "only the request from port 123"
    );
    assert!(fx.counter(Counter::PassFragment) >= 4);
    assert!(fx.counter(Counter::PassIpOptions) >= 1);
    assert!(fx.counter(Counter::PassIpv6Ext) >= 4);
    assert!(fx.counter(Counter::PassLength) >= 2 * 1452);
    assert!(fx.counter(Counter::PassMode) >= 22);
    assert!(fx.counter(Counter::PassTruncated) > 0);
}

#[test]
fn denied_sources_with_other_modes_are_left_to_the_stack() {
    let Some(mut fx) = Fixture::new() else { return };
    // A denied peer's symmetric-mode packet is not a dropped client request.
    let spec = Spec::udp("198.18.9.7", "198.18.0.1", &ntp_request(4, 1, 6, CLIENT_TX));
    fx.assert_passed(&frames::build(&spec), "denied source, symmetric mode");
    assert_eq!(
        (
            fx.counter(Counter::PassMode),
            fx.counter(Counter::DropDenied)
        ),
        (1, 0)
    );
}

#[test]
fn denied_and_unlisted_sources_are_dropped() {
    let Some(mut fx) = Fixture::new() else { return };
    for (src, dst) in [("198.18.9.7", "198.18.0.1"), ("fd00:9::7", "fd00::1")] {
        let spec = Spec::udp(src, dst, &ntp_request(4, 3, 6, CLIENT_TX));
        let (rc, _) = fx.run(&frames::build(&spec));
        assert_eq!(rc, XDP_DROP, "{src} should be denied");
    }
    assert_eq!(fx.counter(Counter::DropDenied), 2);
    // With no rule at all nothing is allowed (chrony: no client is served unless allowed).
    fx.k.set_acl(&AccessTable::new()).unwrap();
    let spec = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    assert_eq!(fx.run(&frames::build(&spec)).0, XDP_DROP);
    assert_eq!(fx.counter(Counter::DropDenied), 3);
}

#[test]
fn stale_or_withdrawn_state_is_not_served() {
    let Some(mut fx) = Fixture::new() else { return };
    let spec = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    let frame = frames::build(&spec);
    assert_eq!(fx.run(&frame).0, XDP_TX);

    // A state published 2 s ago with a 1 s limit is stale.
    let mut old = state_now(Duration::from_secs(1), true);
    old.timebase.t0_tai_ns -= 2_000_000_000;
    fx.k.publish(&old);
    fx.assert_passed(&frame, "stale state");
    assert_eq!(fx.counter(Counter::PassStale), 1);

    fx.k.publish(&state_now(Duration::from_secs(10), false));
    fx.assert_passed(&frame, "serve flag off");
    assert_eq!(fx.counter(Counter::PassNotServing), 1);

    fx.k.publish(&state_now(Duration::from_secs(10), true));
    assert_eq!(fx.run(&frame).0, XDP_TX);
}

/// A state whose sequence is odd (a write in progress) is never served, however fresh
/// and valid its body; the finished write is.
#[test]
fn a_state_being_written_is_never_served() {
    let Some(mut fx) = Fixture::new() else { return };
    let frame = request_frame("198.18.0.2", "198.18.0.1");
    let mut w = fx.k.state_writer().expect("a second state writer");
    let mut st = state_now(Duration::from_secs(10), true);
    st.maps_gen = fx.k.published().maps_gen;
    w.publish_unfinished(&st);
    assert_eq!(fx.k.published().seq & 1, 1, "the sequence is odd");
    fx.assert_passed(&frame, "a write in progress");
    assert_eq!(fx.counter(Counter::PassNotServing), 1);
    w.publish(&st);
    assert_eq!(fx.run(&frame).0, XDP_TX);
}

/// Two states, each consistent in itself, published back to back from another thread
/// while the program answers: every reply is wholly one or the other (stratum, refid,
/// root delay, reference and receive timestamps agree), never a mix of the two.
#[test]
fn a_state_published_while_serving_is_never_served_torn() {
    let Some(mut fx) = Fixture::new() else { return };
    let frame = request_frame("198.18.0.2", "198.18.0.1");
    let base = {
        let mut st = state_now(Duration::from_mins(1), true);
        st.maps_gen = fx.k.published().maps_gen;
        st
    };
    // B serves time 1000 s ahead of A: a reply's receive timestamp says which base it
    // came from.
    let make = |stratum: u8, tag: u8, ahead_s: u64| {
        let mut st = base;
        st.stratum = stratum;
        st.refid = [tag; 4];
        st.root_delay = u32::from(tag) * 0x101;
        st.ref_ts = u64::from(tag) << 56;
        st.timebase.base_ntp += ahead_s << 32;
        st
    };
    let (a, b) = (make(2, b'A', 0), make(4, b'B', 1000));
    let mut w = fx.k.state_writer().expect("a second state writer");
    w.publish(&a);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                w.publish(if n.is_multiple_of(2) { &a } else { &b });
                n += 1;
            }
            n
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (mut seen_a, mut seen_b, mut passed) = (0u64, 0u64, 0u64);
    for _ in 0..200_000 {
        if std::time::Instant::now() > deadline {
            break;
        }
        let before = realtime_ns();
        let (rc, out) = fx.run(&frame);
        if rc == XDP_PASS {
            passed += 1;
            continue;
        }
        assert_eq!(rc, XDP_TX);
        let h = NtpHeader::parse(&frames::parse(&out).unwrap().payload).unwrap();
        let ahead = h.receive_ts.to_unix_ns(before) - i128::from(before);
        let (want, tag) = if h.stratum == 2 { (a, b'A') } else { (b, b'B') };
        let whole = h.refid == [tag; 4]
            && h.root_delay == want.root_delay
            && h.reference_ts.0 == want.ref_ts
            && if tag == b'A' {
                ahead.abs() < 1_000_000_000
            } else {
                (ahead - 1_000_000_000_000).abs() < 1_000_000_000
            };
        assert!(
            whole,
            "a torn reply: stratum {} refid {:?} root delay {:#x} ref {:#x}, {} s ahead",
            h.stratum,
            h.refid,
            h.root_delay,
            h.reference_ts.0,
            ahead / 1_000_000_000
        );
        if tag == b'A' {
            seen_a += 1;
        } else {
            seen_b += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let publications = writer.join().expect("writer thread");
    println!(
        "torn-state check: {seen_a} replies from A, {seen_b} from B, {passed} passed \
         (a write in progress), {publications} publications"
    );
    assert!(
        seen_a > 100 && seen_b > 100,
        "both states served: {seen_a}, {seen_b}"
    );
}

/// What the program caches from the daemon's maps (each client's access verdict in
/// its record, each CPU's last served address and interface MAC) follows every change
/// of them at once.
#[test]
fn cached_lookups_follow_every_change_of_the_maps() {
    let Some(mut fx) = Fixture::new() else { return };
    let v4 = request_frame("198.18.5.5", "198.18.0.1");
    let v6 = request_frame("fd00:5::5", "fd00:198:18::1");
    for f in [&v4, &v6] {
        assert_eq!(fx.run(f).0, XDP_TX);
        assert_eq!(fx.run(f).0, XDP_TX, "answered again from the caches");
    }
    // Denied now: the verdict in the client's record is not trusted past the change.
    fx.k.set_acl(&allow_all_but(&["198.18.5.0/24", "fd00:5::/32"]))
        .unwrap();
    for f in [&v4, &v6] {
        assert_eq!(fx.run(f).0, XDP_DROP, "denied after the change");
    }
    assert_eq!(fx.counter(Counter::DropDenied), 2);
    fx.k.set_acl(&allow_all_but(&[])).unwrap();
    for f in [&v4, &v6] {
        assert_eq!(fx.run(f).0, XDP_TX, "allowed again");
    }
    // The served address withdrawn: passed to the stack, not answered from the cache.
    fx.k.set_local_addresses(&["198.18.0.9".parse().unwrap(), "fd00::9".parse().unwrap()])
        .unwrap();
    fx.assert_passed(&v4, "an address no longer served (IPv4)");
    fx.assert_passed(&v6, "an address no longer served (IPv6)");
    assert_eq!(fx.counter(Counter::PassNotLocal), 2);
    fx.k.set_local_addresses(&[
        "198.18.0.1".parse().unwrap(),
        "fd00:198:18::1".parse().unwrap(),
    ])
    .unwrap();
    assert_eq!(fx.run(&v4).0, XDP_TX);
    // The interface's MAC changed: frames for the old one are not ours.
    fx.k.set_test_run_mac([2, 0, 0, 0, 0, 0x99]).unwrap();
    fx.assert_passed(&v4, "the old MAC");
    assert_eq!(fx.counter(Counter::PassOtherMac), 1);
    fx.k.set_test_run_mac(SERVER_MAC).unwrap();
    assert_eq!(fx.run(&v4).0, XDP_TX);
}

/// A kernel clock whose step only runs `on_step` (the machine's clock is never stepped
/// in tests).
struct StepProbe {
    on_step: Box<dyn FnMut(f64) + Send>,
}

impl ntp_proto::clock::RealtimeClock for StepProbe {
    fn now_ns(&self) -> u64 {
        realtime_ns()
    }
}

impl ntp_proto::clock::KernelClock for StepProbe {
    fn set_frequency(
        &mut self,
        _: ntp_proto::clock::KernelFrequency,
    ) -> Result<(), ntp_proto::clock::ClockError> {
        Ok(())
    }
    fn step(&mut self, offset: f64) -> Result<(), ntp_proto::clock::ClockError> {
        (self.on_step)(offset);
        Ok(())
    }
    fn set_sync_status(
        &mut self,
        _: bool,
        _: u8,
        _: f64,
        _: f64,
    ) -> Result<(), ntp_proto::clock::ClockError> {
        Ok(())
    }
}

/// The daemon's step path (the steering code over a kernel clock with the daemon's
/// hook, which withdraws the fast path) leaves nothing for the program to serve at the
/// moment the clock moves: a request arriving then goes to the daemon.
#[test]
fn the_fast_path_is_withdrawn_before_the_clock_steps() {
    use ntp_proto::clock::{Clock, SteeredClock};
    use ntp_user::clock::hooked::HookedStep;
    use std::sync::{Arc, Mutex};
    let Some(fx) = Fixture::new() else { return };
    let k = Arc::new(Mutex::new(fx.k));
    let frame = request_frame("198.18.0.2", "198.18.0.1");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let probe = StepProbe {
        on_step: Box::new({
            let (k, seen, frame) = (k.clone(), seen.clone(), frame.clone());
            move |offset| {
                let (rc, _, _) = run_once(&mut k.lock().unwrap(), &frame);
                seen.lock().unwrap().push((offset, rc));
            }
        }),
    };
    let mut kernel = HookedStep::new(probe);
    kernel.set_before_step(Box::new({
        let k = k.clone();
        move || k.lock().unwrap().withdraw()
    }));
    let mut clock = SteeredClock::new(kernel, 0.0, 83_333e-6, 500e-6);
    clock.step(0.25);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(0.25, XDP_PASS)],
        "at the step the request is passed to the daemon"
    );
    let k = k.lock().unwrap();
    assert_eq!(
        k.published().serve,
        0,
        "withdrawn until the next publication"
    );
    assert_eq!(k.counters().unwrap()[Counter::PassNotServing as usize], 1);
}

#[test]
fn served_time_follows_the_published_timebase() {
    let Some(mut fx) = Fixture::new() else { return };
    // Serve time 25 ms ahead of the system clock, running 40 ppm fast.
    let tai = clock::tai_ns().unwrap();
    let off = clock::kernel_time().unwrap().tai_offset_s;
    let mut r = Reference::local(2, tai - off as u64 * 1_000_000_000);
    r.offset_ns = 25_000_000;
    r.rate = 40e-6;
    let p = PublishParams {
        precision: -24,
        max_age: Duration::from_secs(10),
        serve: true,
        min_poll: 0,
    };
    fx.k.publish(&server_state(&r, &p, tai, off));
    std::thread::sleep(Duration::from_millis(200));
    let spec = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    let before = realtime_ns();
    let (rc, out) = fx.run(&frames::build(&spec));
    let after = realtime_ns();
    assert_eq!(rc, XDP_TX);
    let h = NtpHeader::parse(&frames::parse(&out).unwrap().payload).unwrap();
    let rx = h.receive_ts.to_unix_ns(before) as u64;
    // ~200 ms elapsed: 25 ms + 40 ppm of it (8 us) ahead of the system clock.
    let lo = before + 25_000_000 + 7_000;
    let hi = after + 25_000_000 + 12_000;
    assert!((lo..=hi).contains(&rx), "receive {rx} not in {lo}..{hi}");
    assert_eq!(h.stratum, 2);
}

#[test]
fn cost_per_request_is_reported() {
    let Some(mut fx) = Fixture::new() else { return };
    let spec = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    let frame = frames::build(&spec);
    // The program rewrites the frame in place, so `repeat` would time replies, not requests:
    // time single runs instead and report their median.
    let mut ns = Vec::new();
    for _ in 0..2000 {
        let (rc, _, took) = run_once(&mut fx.k, &frame);
        assert_eq!(rc, XDP_TX);
        ns.push(took.as_nanos());
    }
    ns.sort_unstable();
    println!(
        "XDP answer, IPv4: median {} ns, p99 {} ns per request (BPF_PROG_TEST_RUN, 2000 single runs)",
        ns[1000], ns[1980]
    );
    assert_eq!(fx.counter(Counter::Answered), 2000);
}

#[test]
fn client_log_counts_requests_and_drops() {
    let Some(mut fx) = Fixture::new() else { return };
    let ok = request_frame("198.18.0.2", "198.18.0.1");
    let denied = request_frame("198.18.9.7", "198.18.0.1");
    let v6 = request_frame("fd00:198:18::2", "fd00:198:18::1");
    assert_eq!(fx.run(&ok).0, XDP_TX);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fx.run(&ok).0, XDP_TX);
    assert_eq!(fx.run(&denied).0, XDP_DROP);
    assert_eq!(fx.run(&v6).0, XDP_TX);
    let mut clients = fx.k.clients().unwrap();
    clients.sort_by_key(|c| c.0);
    let find = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        clients.iter().find(|c| c.0 == ip).map(|c| c.1).unwrap()
    };
    let a = find("198.18.0.2");
    assert_eq!((a.requests, a.dropped), (2, 0));
    assert!(
        a.interval_ns >= 50_000_000 && a.interval_ns < 5_000_000_000,
        "{a:?}"
    );
    // A denied source leaves no record (as chrony).
    assert!(
        !clients
            .iter()
            .any(|c| c.0 == "198.18.9.7".parse::<std::net::IpAddr>().unwrap())
    );
    assert_eq!(find("fd00:198:18::2").requests, 1);
    assert_eq!(clients.len(), 2);
}

#[test]
fn noclientlog_keeps_no_records() {
    if !ntpx_tests::privileged("noclientlog_keeps_no_records") {
        return;
    }
    let mut k = KernelPath::load_with(123, None, None).unwrap();
    let mut acl = AccessTable::new();
    acl.apply(Action::Allow, false, None);
    k.set_acl(&acl).unwrap();
    k.set_local_addresses(&["198.18.0.1".parse().unwrap()])
        .unwrap();
    k.set_test_run_mac(SERVER_MAC).unwrap();
    k.publish(&state_now(Duration::from_secs(10), true));
    let mut fx = Fixture { k };
    let ok = request_frame("198.18.0.2", "198.18.0.1");
    assert_eq!(fx.run(&ok).0, XDP_TX);
    assert!(fx.k.clients().unwrap().is_empty());
}

/// A fixture with a rate limit and a client log of `clients` records.
fn limited(rl: ntp_common::RateLimit, clients: u32) -> Option<Fixture> {
    if !ntpx_tests::privileged("rate limit") {
        return None;
    }
    let mut k = KernelPath::load_with(123, Some(clients), Some(rl)).unwrap();
    let mut acl = AccessTable::new();
    acl.apply(Action::Allow, false, None);
    k.set_acl(&acl).unwrap();
    k.set_local_addresses(&["198.18.0.1".parse().unwrap()])
        .unwrap();
    k.set_test_run_mac(SERVER_MAC).unwrap();
    k.publish(&state_now(Duration::from_mins(1), true));
    Some(Fixture { k })
}

#[derive(Debug, Default, PartialEq)]
struct Outcome {
    answered: u64,
    kod: u64,
    dropped: u64,
}

/// Sends `n` requests from `src` as fast as the test runs them.
fn flood(fx: &mut Fixture, src: &str, n: u64) -> Outcome {
    let frame = frames::build(&Spec::udp(
        src,
        "198.18.0.1",
        &ntp_request(4, 3, 6, CLIENT_TX),
    ));
    let mut o = Outcome::default();
    for _ in 0..n {
        let (rc, out) = fx.run(&frame);
        match rc {
            XDP_DROP => o.dropped += 1,
            XDP_TX => {
                let h = NtpHeader::parse(&frames::parse(&out).unwrap().payload).unwrap();
                if h.stratum == 0 && h.refid == *b"RATE" {
                    assert_eq!(h.leap, 3);
                    o.kod += 1;
                } else {
                    o.answered += 1;
                }
            }
            other => panic!("unexpected verdict {other}"),
        }
    }
    o
}

const HOUR_NS: u64 = 4096 * 1_000_000_000; // interval 12: no refill during a test

#[test]
fn rate_limit_gives_the_burst_then_leaks_and_kisses_in_proportion() {
    let (burst, leak, kod) = (8u64, 2u8, 1u8);
    let rl = ntp_common::RateLimit {
        interval_ns: HOUR_NS,
        burst,
        leak,
        kod,
    };
    let Some(mut fx) = limited(rl, 1024) else {
        return;
    };
    let n = 4000;
    assert_eq!(
        flood(&mut fx, "198.18.0.2", burst),
        Outcome {
            answered: burst,
            kod: 0,
            dropped: 0
        }
    );
    let o = flood(&mut fx, "198.18.0.2", n);
    // Over the limit: answered with probability p = 2^-leak; of the rest, KoD with 2^-kod.
    let p_leak = 0.5f64.powi(leak as i32);
    let p_kod = (1.0 - p_leak) * 0.5f64.powi(kod as i32);
    let p_drop = 1.0 - p_leak - p_kod;
    let within = |count: u64, p: f64| {
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        (count as f64 - mean).abs() <= 5.0 * sd
    };
    assert!(within(o.answered, p_leak), "{o:?}");
    assert!(within(o.kod, p_kod), "{o:?}");
    assert!(within(o.dropped, p_drop), "{o:?}");
    assert_eq!(fx.counter(Counter::Answered), burst + o.answered);
    assert_eq!(fx.counter(Counter::AnsweredKod), o.kod);
    assert_eq!(fx.counter(Counter::DropRateLimit), o.dropped);
    println!(
        "rate limit over {n} requests past the burst: {o:?} (expected {:.0}/{:.0}/{:.0})",
        n as f64 * p_leak,
        n as f64 * p_kod,
        n as f64 * p_drop
    );
    // Another client is not affected by the first one's flood.
    assert_eq!(flood(&mut fx, "198.18.0.3", burst).answered, burst);
}

#[test]
fn without_kod_nothing_is_kissed_and_the_burst_is_exact() {
    // kod 0: no KoD at all; leak 16: about one answer in 65536.
    let rl = ntp_common::RateLimit {
        interval_ns: HOUR_NS,
        burst: 5,
        leak: 16,
        kod: 0,
    };
    let Some(mut fx) = limited(rl, 1024) else {
        return;
    };
    let first = flood(&mut fx, "198.18.0.2", 5);
    assert_eq!(
        first,
        Outcome {
            answered: 5,
            kod: 0,
            dropped: 0
        }
    );
    let o = flood(&mut fx, "198.18.0.2", 1000);
    assert_eq!(o.kod, 0);
    assert!(o.answered <= 3, "{o:?}");
    assert_eq!(o.answered + o.dropped, 1000);
}

#[test]
fn a_full_client_log_evicts_the_least_recent_clients() {
    let rl = ntp_common::RateLimit {
        interval_ns: HOUR_NS,
        burst: 2,
        leak: 16,
        kod: 0,
    };
    let Some(mut fx) = limited(rl, 4) else { return };
    for i in 0..10 {
        flood(&mut fx, &format!("198.18.0.{}", 10 + i), 3);
    }
    let clients = fx.k.clients().unwrap();
    assert!(
        clients.len() <= 4,
        "{} records in a 4-record table",
        clients.len()
    );
    // Evictions are what was created and is gone (serverstats' "Client log records
    // dropped").
    let created = fx.counter(Counter::ClientRecordsCreated);
    assert_eq!(created, 10);
    assert_eq!(fx.k.client_count().unwrap(), clients.len() as u64);
    assert!(created - clients.len() as u64 >= 6);
    // The first client was evicted: it comes back with a fresh burst.
    assert_eq!(flood(&mut fx, "198.18.0.10", 2).answered, 2);
    assert_eq!(fx.counter(Counter::ClientRecordsCreated), 11);
}

/// A request from `src` with `origin` and `receive` in its origin and receive fields.
fn request_naming(src: &str, origin: u64, receive: u64) -> Vec<u8> {
    let mut ntp = ntp_request(4, 3, 6, CLIENT_TX);
    ntp[24..32].copy_from_slice(&origin.to_be_bytes());
    ntp[32..40].copy_from_slice(&receive.to_be_bytes());
    frames::build(&Spec::udp(src, "198.18.0.1", &ntp))
}

fn receive_ts(reply: &[u8]) -> u64 {
    NtpHeader::parse(&frames::parse(reply).unwrap().payload)
        .unwrap()
        .receive_ts
        .0
}

#[test]
fn interleaved_clients_are_left_to_the_daemon() {
    let Some(mut fx) = Fixture::new() else { return };
    let c = "198.18.0.5";
    // chrony's xleave client: a basic first request (origin 0), answered here ...
    let (rc, out) = fx.run(&request_naming(c, 0, 0));
    assert_eq!(rc, XDP_TX);
    let rx1 = receive_ts(&out);
    // ... then one naming that reply's receive timestamp: only the daemon knows when its
    // replies left, so it goes up, untouched.
    fx.assert_passed(&request_naming(c, rx1, 0x55), "interleaved request");
    // Its later requests name the daemon's receive timestamps: they go up too.
    fx.assert_passed(
        &request_naming(c, 0xdead_beef, 0x56),
        "later interleaved request",
    );
    assert_eq!(fx.counter(Counter::PassInterleaved), 2);
    // The daemon logs and limits what it answers: the kernel counted only the first.
    let rec = fx.k.clients().unwrap();
    let rec = rec
        .iter()
        .find(|r| r.0 == c.parse::<std::net::IpAddr>().unwrap());
    assert_eq!(rec.map(|r| r.1.requests), Some(1));
    // A basic request again (origin 0) is answered here and ends the hand-over.
    assert_eq!(fx.run(&request_naming(c, 0, 0)).0, XDP_TX);
    let (rc, _) = fx.run(&request_naming(c, 0x1234, 0));
    assert_eq!(rc, XDP_TX, "a stray non-zero origin is a basic request");
    // Classic ntpd clients name our transmit timestamp, never the receive one: answered.
    let d = "198.18.0.6";
    let (_, out) = fx.run(&request_naming(d, 0, 0));
    let tx = NtpHeader::parse(&frames::parse(&out).unwrap().payload)
        .unwrap()
        .transmit_ts
        .0;
    for _ in 0..3 {
        assert_eq!(fx.run(&request_naming(d, tx, 0x77)).0, XDP_TX);
    }
    // Another client naming c's receive timestamp is not c.
    assert_eq!(fx.run(&request_naming("198.18.0.7", rx1, 0)).0, XDP_TX);
    assert_eq!(fx.counter(Counter::PassInterleaved), 2);
}

#[test]
fn hostile_frames_are_never_answered_wrongly() {
    let Some(mut fx) = Fixture::new() else { return };
    let mut rng = ntp_common::prng::XorShift::new(0x5eed);
    let good = request_frame("198.18.0.2", "198.18.0.1");
    let good6 = request_frame("fd00::2", "fd00::1");
    let mut answered = 0;
    const RUNS: usize = 100_000;
    for i in 0..RUNS {
        let frame: Vec<u8> = match i % 3 {
            // Random bytes of random length.
            0 => {
                let len = 14 + (rng.next_u64() % 1487) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            }
            // A valid request with a few random bytes changed.
            1 | 2 => {
                let mut f = if i % 3 == 1 {
                    good.clone()
                } else {
                    good6.clone()
                };
                for _ in 0..=(rng.next_u64() % 3) {
                    let at = (rng.next_u64() as usize) % f.len();
                    f[at] = rng.next_u64() as u8;
                }
                f
            }
            _ => unreachable!(),
        };
        let (rc, out) = fx.run(&frame);
        match rc {
            XDP_PASS => assert_eq!(out, frame, "run {i}: a passed frame was modified"),
            XDP_DROP => {}
            XDP_TX => {
                answered += 1;
                assert_eq!(out.len(), frame.len(), "run {i}: reply size differs");
                // What was answered must have been a client request to us, and the reply
                // must be a well-formed server reply.
                let req = frames::parse(&frame).expect("answered frame parses");
                assert_eq!(req.payload.len(), 48);
                assert!(
                    ntp_common::wire::is_answerable_request(req.payload[0]),
                    "run {i}"
                );
                assert_eq!(req.dport, 123);
                let rep = frames::parse(&out).expect("reply parses");
                assert!(rep.ip_csum_ok && rep.udp_csum_ok, "run {i}: checksums");
                assert_eq!(NtpHeader::parse(&rep.payload).unwrap().mode, 4);
            }
            other => panic!("run {i}: verdict {other}"),
        }
    }
    // Mutations that leave a request valid (a changed poll, a timestamp byte) are answered.
    assert!(answered > 0 && answered < RUNS / 2, "{answered} answered");
    println!("hostile frames: {RUNS} run, {answered} still-valid requests answered");
}

/// The reply to `spec` as the program sends it, or the verdict.
fn reply_to(fx: &mut Fixture, spec: &Spec) -> (u32, Option<NtpHeader>, Vec<u8>) {
    let (rc, out) = fx.run(&frames::build(spec));
    let h = frames::parse(&out).and_then(|p| NtpHeader::parse(&p.payload).ok());
    (rc, h, out)
}

#[test]
fn mapped_ipv6_sources_get_the_ipv4_verdict_as_in_the_daemon() {
    let Some(mut fx) = Fixture::new() else { return };
    // IPv4 allows 10.250.0.0/24 only; IPv6 allows everything.
    let mut acl = AccessTable::new();
    acl.apply(
        Action::Allow,
        false,
        Some(Subnet::parse("10.250.0.0/24").unwrap()),
    );
    acl.apply(Action::Allow, false, Some(Subnet::parse("::/0").unwrap()));
    fx.k.set_acl(&acl).unwrap();
    // Random addresses, mapped and not, in and out of the IPv4 rule: the kernel's
    // verdict is the daemon's every time.
    let mut rng = ntp_common::prng::XorShift::new(0x5eed);
    let mut seen = [0u32; 2];
    for i in 0..400u32 {
        let r = rng.next_u64();
        let v4 = if i % 2 == 0 {
            std::net::Ipv4Addr::new(10, 250, 0, (r % 250) as u8 + 1)
        } else {
            std::net::Ipv4Addr::from((r as u32) | 0x0100_0000)
        };
        let src: std::net::IpAddr = if i % 3 == 0 {
            std::net::Ipv6Addr::from(u128::from(r) << 64 | u128::from(r >> 7)).into()
        } else {
            v4.to_ipv6_mapped().into()
        };
        let daemon = ntp_proto::server::handle_request(
            &ntp_request(4, 3, 6, CLIENT_TX),
            std::net::SocketAddr::new(src, 40000),
            clock::tai_ns().unwrap(),
            &fx.k.published(),
            &acl,
            &ntp_proto::server::Secrets::default(),
            &mut || [0; 16],
        );
        let daemon_answers = matches!(daemon, ntp_proto::server::Verdict::Reply(_));
        let (rc, _, _) = reply_to(
            &mut fx,
            &Spec::udp(
                &src.to_string(),
                "fd00::1",
                &ntp_request(4, 3, 6, CLIENT_TX),
            ),
        );
        assert_eq!(
            rc == XDP_TX,
            daemon_answers,
            "{src}: kernel {rc}, daemon {daemon:?}"
        );
        seen[usize::from(daemon_answers)] += 1;
    }
    assert!(
        seen[0] > 50 && seen[1] > 50,
        "both verdicts tried: {seen:?}"
    );
}

#[test]
fn replies_follow_chronys_rules_for_poll_ecn_and_an_unsynchronised_server() {
    let Some(mut fx) = Fixture::new() else { return };
    // ECN CE on the request: the reply carries no ECN bits, v4 and v6.
    let mut v4 = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    v4.tos = 0xb8 | 3;
    let (rc, _, out) = reply_to(&mut fx, &v4);
    assert_eq!(rc, XDP_TX);
    let p = frames::parse(&out).unwrap();
    assert_eq!(p.tos, 0xb8, "DSCP kept, ECN cleared");
    assert!(p.ip_csum_ok && p.udp_csum_ok);
    let mut v6 = Spec::udp("fd00::2", "fd00::1", &ntp_request(4, 3, 6, CLIENT_TX));
    v6.tos = 0xb8 | 3;
    let (_, _, out) = reply_to(&mut fx, &v6);
    assert_eq!(frames::parse(&out).unwrap().tos, 0xb8);
    // Poll: the larger of the client's and the minimum (the ratelimit interval).
    for (client, served) in [(-6i8, 3i8), (3, 3), (10, 10)] {
        let spec = Spec::udp(
            "198.18.0.2",
            "198.18.0.1",
            &ntp_request(4, 3, client, CLIENT_TX),
        );
        assert_eq!(reply_to(&mut fx, &spec).1.unwrap().poll, served);
    }
    // Unsynchronised: what chronyd sends, from both paths.
    let tai = clock::tai_ns().unwrap();
    let off = clock::kernel_time().unwrap().tai_offset_s;
    let p = PublishParams {
        precision: -24,
        max_age: Duration::from_secs(10),
        serve: true,
        min_poll: ntp_proto::server::MIN_LIMIT_POLL,
    };
    let st = server_state(&Reference::unsynchronised(), &p, tai, off);
    fx.k.publish(&st);
    std::thread::sleep(Duration::from_millis(100));
    let spec = Spec::udp(
        "198.18.0.2",
        "198.18.0.1",
        &ntp_request(4, 3, -6, CLIENT_TX),
    );
    let h = reply_to(&mut fx, &spec).1.unwrap();
    assert_eq!(
        (h.leap, h.stratum, h.poll, h.refid, h.reference_ts.0),
        (3, 0, -6, [0; 4], 0),
        "no raise of the poll without ratelimit"
    );
    assert_eq!((h.root_delay, h.root_dispersion), (0x1_0000, 0x1_0000));
}

#[test]
fn frames_for_another_mac_or_with_bad_checksums_are_not_answered() {
    let Some(mut fx) = Fixture::new() else { return };
    let good = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    assert_eq!(fx.run(&frames::build(&good)).0, XDP_TX);
    // Another host's MAC (promiscuous mode): left to the stack, untouched.
    let mut other = good.clone();
    other.dst_mac = [0x02, 0, 0, 0, 0, 0x99];
    fx.assert_passed(&frames::build(&other), "another MAC");
    assert_eq!(fx.counter(Counter::PassOtherMac), 1);
    // A corrupted IPv4 header: dropped.
    let mut frame = frames::build(&good);
    frame[14 + 15] ^= 0x01; // the source address's last byte
    assert_eq!(fx.run(&frame).0, XDP_DROP);
    assert_eq!(fx.counter(Counter::DropBadChecksum), 1);
    // A corrupted payload (UDP checksum wrong), v4 and v6: left to the stack.
    for spec in [
        good.clone(),
        Spec::udp("fd00::2", "fd00::1", &ntp_request(4, 3, 6, CLIENT_TX)),
    ] {
        let mut frame = frames::build(&spec);
        let last = frame.len() - 1;
        frame[last] ^= 0x40;
        fx.assert_passed(&frame, "bad UDP checksum");
    }
    assert_eq!(fx.counter(Counter::PassUdpChecksum), 2);
    // IPv4 without a UDP checksum is still answered.
    let mut frame = frames::build(&good);
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    assert_eq!(fx.run(&frame).0, XDP_TX);
    // A datagram sent on this host through a veth carries the partial checksum left
    // to offload (the pseudo header's sum): answered, as the stack would take it.
    let mut frame = frames::build(&good);
    let mut pseudo = frames::sum(&[198, 18, 0, 2, 198, 18, 0, 1]) + 17 + 56;
    while pseudo > 0xffff {
        pseudo = (pseudo & 0xffff) + (pseudo >> 16);
    }
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&(pseudo as u16).to_be_bytes());
    assert_eq!(fx.run(&frame).0, XDP_TX);
    assert_eq!(fx.counter(Counter::PassUdpChecksum), 2);
}

#[test]
fn a_leap_second_is_served_from_its_instant_with_chronys_indicator() {
    let Some(mut fx) = Fixture::new() else { return };
    let spec = Spec::udp("198.18.0.2", "198.18.0.1", &ntp_request(4, 3, 6, CLIENT_TX));
    let mut st = state_now(Duration::from_secs(10), true);
    st.leap = 1;
    let s = 1_000_000_000u64;
    let now_tai = clock::tai_ns().unwrap();
    // Announced, 10 s ahead: the indicator as announced, the time untouched.
    st.timebase.leap_tai_ns = now_tai + 10 * s;
    st.timebase.leap_step_s = -1;
    fx.k.publish(&st);
    let before = realtime_ns();
    let h = reply_to(&mut fx, &spec).1.unwrap();
    assert_eq!(h.leap, 1);
    assert!(h.receive_ts.to_unix_ns(before) as u64 + 1 >= before);
    // Inserted 0.2 s ago (published before it): UTC repeats a second, and replies say
    // "unsynchronised" inside chrony's window.
    st.timebase.leap_tai_ns = now_tai - s / 5;
    fx.k.publish(&st);
    let before = realtime_ns();
    let (rc, h, _) = reply_to(&mut fx, &spec);
    let after = realtime_ns();
    assert_eq!(rc, XDP_TX);
    let h = h.unwrap();
    assert_eq!(h.leap, 3, "leap in progress");
    let rx = h.receive_ts.to_unix_ns(before) as u64;
    assert!(
        rx + s + 1 >= before && rx + s <= after + 1,
        "served {rx}, system {before}..{after}: one second back"
    );
    // The daemon's path computes the same from the same state.
    let t = clock::tai_ns().unwrap();
    let daemon = ntp_proto::server::served_ntp(&fx.k.published(), t);
    let sys = realtime_ns();
    assert!((daemon.to_unix_ns(sys) as u64 + s).abs_diff(sys) < 1_000_000);
    // Past the window: indicator 0, the step kept.
    st.timebase.leap_tai_ns = now_tai - 2 * s;
    fx.k.publish(&st);
    let h = reply_to(&mut fx, &spec).1.unwrap();
    assert_eq!(h.leap, 0);
}
