//! `BPF_PROG_TEST_RUN` timings of the answering program beside the bare bounce program,
//! on the same valid request.

use anyhow::{Context, Result, bail};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use ntp_proto::{
    acl::{AccessTable, Action},
    reference::{PublishParams, Reference, server_state},
};
use ntp_user::{clock, xdp::KernelPath};
use ntpx_tests::frames;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const XDP_TX: u32 = 3;

/// Nanoseconds per run, median and p99 over single runs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct RunTimes {
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
}

/// The two programs' timings.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct TestRunFigures {
    /// `ntpx_serve` answering a valid IPv4 request.
    pub serve: RunTimes,
    /// `ntpx_serve` with `noclientlog`.
    #[serde(default)]
    pub serve_no_clientlog: RunTimes,
    /// `ntpx_bounce` on the same frame.
    pub bounce: RunTimes,
    /// `ntpx_bounce_timed`: the bounce with the two clock reads a reply needs.
    #[serde(default)]
    pub bounce_timed: RunTimes,
    /// Single runs timed per program.
    pub runs: usize,
}

impl TestRunFigures {
    /// One sentence with the figures and their ratio, for the report and `ntpx-bench testrun`.
    pub fn summary(&self) -> String {
        let ratio = |t: &RunTimes| t.p50_ns as f64 / self.bounce.p50_ns.max(1) as f64;
        let timed = |t: &RunTimes| t.p50_ns as f64 / self.bounce_timed.p50_ns.max(1) as f64;
        format!(
            "BPF_PROG_TEST_RUN, {} single runs each on a valid IPv4 request: `ntpx_serve` \
             median {} ns (p99 {}, {:.2}x the bounce, {:.2}x the timed bounce), with \
             `noclientlog` {} ns (p99 {}, {:.2}x, {:.2}x), bare bounce median {} ns (p99 \
             {}), the bounce with the two clock reads a reply needs (receive and transmit \
             timestamps) {} ns (p99 {}); each single run includes the test-run's own \
             overhead, the same for all.",
            self.runs,
            self.serve.p50_ns,
            self.serve.p99_ns,
            ratio(&self.serve),
            timed(&self.serve),
            self.serve_no_clientlog.p50_ns,
            self.serve_no_clientlog.p99_ns,
            ratio(&self.serve_no_clientlog),
            timed(&self.serve_no_clientlog),
            self.bounce.p50_ns,
            self.bounce.p99_ns,
            self.bounce_timed.p50_ns,
            self.bounce_timed.p99_ns
        )
    }
}

/// Times `runs` single runs of each program on one valid IPv4 request: a program
/// rewrites its frame in place, so `repeat` would time replies after the first.
pub fn measure(runs: usize) -> Result<TestRunFigures> {
    let ntp = frames::ntp_request(4, 3, 6, 0x1234_5678_9abc_def0);
    let frame = &frames::build(&frames::Spec::udp("198.19.0.1", "198.18.30.1", &ntp));
    let serve = time_serve(KernelPath::load(123)?, frame, runs).context("timing ntpx_serve")?;
    // Without the client log (`noclientlog`): what the per-client record costs.
    let serve_no_clientlog = time_serve(KernelPath::load_with(123, None, None)?, frame, runs)
        .context("timing ntpx_serve without the client log")?;

    let mut ebpf =
        aya::Ebpf::load(ntp_user::BENCH_OBJECT).context("loading the ntpx-bench eBPF object")?;
    let mut bounce_of = |name: &str| -> Result<RunTimes> {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
        time(prog, frame, runs).with_context(|| format!("timing {name}"))
    };
    let bounce = bounce_of(ntp_common::load::PROG_BOUNCE)?;
    let bounce_timed = bounce_of(ntp_common::load::PROG_BOUNCE_TIMED)?;
    Ok(TestRunFigures {
        serve,
        serve_no_clientlog,
        bounce,
        bounce_timed,
        runs,
    })
}

/// Times the answering program of `k`, set up to serve `frame`'s destination.
fn time_serve(mut k: KernelPath, frame: &[u8], runs: usize) -> Result<RunTimes> {
    let mut acl = AccessTable::new();
    acl.apply(Action::Allow, false, None);
    k.set_acl(&acl)?;
    k.set_local_addresses(&["198.18.30.1".parse()?])?;
    k.set_test_run_mac(frames::SERVER_MAC)?;
    let tai = clock::tai_ns()?;
    let off = clock::kernel_time()?.tai_offset_s;
    let r = Reference::local(3, tai - off as u64 * 1_000_000_000);
    let p = PublishParams {
        precision: -24,
        max_age: Duration::from_mins(10),
        serve: true,
        min_poll: 0,
    };
    k.publish(&server_state(&r, &p, tai, off));
    time(k.serve_program()?, frame, runs)
}

fn time(prog: &Xdp, frame: &[u8], runs: usize) -> Result<RunTimes> {
    let mut ns = Vec::with_capacity(runs);
    let mut out = vec![0u8; frame.len()];
    for _ in 0..runs {
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })?;
        if r.return_value != XDP_TX {
            bail!("returned {} instead of XDP_TX", r.return_value);
        }
        ns.push(r.duration.as_nanos() as u64);
    }
    Ok(percentiles(ns))
}

/// Median and p99 of `v`.
pub fn percentiles(mut v: Vec<u64>) -> RunTimes {
    if v.is_empty() {
        return RunTimes::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    RunTimes {
        p50_ns: at(0.5),
        p99_ns: at(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let r = percentiles((1..=100).collect());
        assert_eq!((r.p50_ns, r.p99_ns), (50, 99));
        let r = percentiles(vec![7]);
        assert_eq!((r.p50_ns, r.p99_ns), (7, 7));
        assert_eq!(percentiles(vec![]).p50_ns, 0);
    }
}
