//! The benchmark's results, as JSON and as the Markdown section of docs/benchmarks.md.

use crate::generator::{Latency, Step};
use crate::servers::ServerKind;
use crate::testrun::TestRunFigures;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// One server's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerResult {
    /// Which server.
    pub kind: ServerKind,
    /// Every step of its ramp, in order.
    pub ramp: Vec<Step>,
    /// Highest answered rate of a step with under 1 % loss, per second.
    pub max_rate: f64,
    /// The step at the fixed load every server sustains.
    pub fixed: Option<Step>,
    /// A step of clients asking for interleaved mode (chrony's `xleave`).
    #[serde(default)]
    pub xleave: Option<Step>,
    /// Server CPU per answered request at the fixed load, µs: time its threads (process
    /// and the server end's receive thread) spent on the CPU.
    pub cpu_us_per_request: Option<f64>,
    /// For XDP programs: the kernel's run-time statistics, ns per run at the fixed load.
    pub program_ns_per_run: Option<f64>,
    /// Whatever the reader must know about this run.
    pub notes: Vec<String>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// UTC date and time of the run.
    pub date: String,
    /// `uname -sr`.
    pub kernel: String,
    /// CPU model and count.
    pub cpu: String,
    /// The command that produced it.
    pub command: String,
    /// Simulated client addresses.
    pub clients: u32,
    /// Seconds per ramp step.
    pub step_secs: f64,
    /// The fixed load, requests per second.
    pub fixed_rate: f64,
    /// Fraction of CPU time the hypervisor stole over the run (noise in every figure).
    pub steal: f64,
    /// `BPF_PROG_TEST_RUN` timings.
    pub testrun: TestRunFigures,
    /// Per server, in run order.
    pub servers: Vec<ServerResult>,
    /// The accuracy comparison's report, if it was run.
    pub accuracy: Option<String>,
}

/// The interleaved load's rate, as `ntpx-bench` runs it.
pub const XLEAVE_RATE_REPORTED: f64 = 5_000.0;

/// What a ramp's bisection starts from: the best target rate stepped under 1 % loss and
/// the lowest above it that lost more, from (target rate, loss) pairs.
pub fn bracket(steps: impl Iterator<Item = (f64, f64)> + Clone) -> Option<(f64, f64)> {
    let good = steps
        .clone()
        .filter(|s| s.1 < 0.01)
        .map(|s| s.0)
        .fold(0.0, f64::max);
    let bad = steps
        .filter(|s| s.1 >= 0.01 && s.0 > good)
        .map(|s| s.0)
        .fold(f64::INFINITY, f64::min);
    (good > 0.0 && bad.is_finite()).then_some((good, bad))
}

/// Three bisections of `(lo, hi)` at geometric means; `run(rate)` runs a step and says
/// whether it lost under 1 %.
pub fn bisect(
    (mut lo, mut hi): (f64, f64),
    mut run: impl FnMut(f64) -> Result<bool>,
) -> Result<()> {
    for _ in 0..3 {
        let mid = (lo * hi).sqrt();
        if run(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(())
}

/// Highest answered rate among steps losing under 1 %.
pub fn max_rate(ramp: &[Step]) -> f64 {
    best_rate(ramp.iter().map(|s| (s.loss(), s.answered_rate())))
}

/// The highest answered rate among (loss, answered rate) steps losing under 1 %.
pub fn best_rate(steps: impl Iterator<Item = (f64, f64)>) -> f64 {
    steps
        .filter(|&(loss, _)| loss < 0.01)
        .map(|(_, rate)| rate)
        .fold(0.0, f64::max)
}

pub(crate) fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

pub(crate) fn ns(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.2} ms", v as f64 / 1e6)
    } else if v >= 1_000 {
        format!("{:.2} µs", v as f64 / 1e3)
    } else {
        format!("{v} ns")
    }
}

fn pair(l: Option<(u64, u64)>) -> String {
    l.map_or_else(|| "–".into(), |(a, b)| format!("{} / {}", ns(a), ns(b)))
}

fn lat(l: Option<Latency>) -> Option<(u64, u64)> {
    l.map(|l| (l.p50, l.p99))
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "–".into()
    }
}

impl BenchReport {
    fn get(&self, k: ServerKind) -> Option<&ServerResult> {
        self.servers.iter().find(|s| s.kind == k)
    }

    /// The Markdown section (no surrounding markers).
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let chrony = self.get(ServerKind::Chronyd);
        let bounce = self.get(ServerKind::Bounce);
        let _ = writeln!(
            m,
            "Run {} on {} ({}), as root:\n\n    {}\n",
            self.date, self.kernel, self.cpu, self.command
        );
        let _ = writeln!(
            m,
            "Load: requests from {} client addresses (198.19.0.0/16, ports spread), rates \
             ramped in steps of {:.1} s; the fixed load for CPU and delay figures is {}. \
             CPU per request is the time the server's threads (its process and the server \
             end's receive thread, where XDP and the socket stack run) spent on a CPU, from \
             /proc/PID/task/*/schedstat, over the fixed-load step, per answered request. \
             The hypervisor stole {:.0} % of this machine's CPU time during the run.\n",
            self.clients,
            self.step_secs,
            rate(self.fixed_rate),
            100.0 * self.steal
        );
        m.push_str(
            "| server | max rate, <1% loss | vs chronyd | vs bounce | CPU per request | \
             beyond the bounce | chronyd's / this, beyond the bounce | processing delay \
             p50 / p99 | offset error p50 / p99 | response time p50 / p99 |\n",
        );
        m.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        let base = bounce.and_then(|b| b.cpu_us_per_request);
        let beyond = |s: &ServerResult| Some((s.cpu_us_per_request? - base?).max(0.0));
        for s in &self.servers {
            let fixed = s.fixed.as_ref();
            let us = |v: Option<f64>| v.map_or_else(|| "–".into(), |c| format!("{c:.2} µs"));
            let cpu_ratio = match (chrony.and_then(beyond), beyond(s)) {
                (Some(c), Some(x)) if s.kind != ServerKind::Bounce => ratio(c, x),
                _ => "–".into(),
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.kind.label(),
                rate(s.max_rate),
                chrony
                    .map(|c| ratio(s.max_rate, c.max_rate))
                    .unwrap_or_default(),
                bounce.filter(|b| b.max_rate > 0.0).map_or_else(
                    || "–".into(),
                    |b| format!("{:.0} %", 100.0 * s.max_rate / b.max_rate)
                ),
                us(s.cpu_us_per_request),
                us(beyond(s)),
                cpu_ratio,
                pair(fixed.and_then(|f| lat(f.processing))),
                pair(fixed.and_then(|f| f.offset_error.map(|p| (p.p50, p.p99)))),
                pair(fixed.and_then(|f| lat(f.rtt))),
            );
        }
        m.push('\n');
        self.goals(&mut m);
        let _ = writeln!(m, "\n{}", self.testrun.summary());
        let runs: Vec<String> = self
            .servers
            .iter()
            .filter_map(|s| {
                Some(format!(
                    "{} {:.0} ns",
                    s.kind.label(),
                    s.program_ns_per_run?
                ))
            })
            .collect();
        if !runs.is_empty() {
            let _ = writeln!(
                m,
                "Run time per program run at the fixed load, from the kernel's BPF run-time \
                 statistics: {}.",
                runs.join(", ")
            );
        }
        m.push('\n');
        for s in &self.servers {
            for n in &s.notes {
                let _ = writeln!(m, "- {}: {n}", s.kind.label());
            }
        }
        m.push_str(
            "\nEvery step, in the order run; each server's last row is the fixed load (late: replies to an earlier step):\n\n\
             | server | offered | answered | loss | refused by the server end / client end \
             | invalid | late | response time min / p50 / p99 / max |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for s in &self.servers {
            for st in s.ramp.iter().chain(s.fixed.as_ref()) {
                let rtt = st.rtt.map_or_else(
                    || "–".into(),
                    |r| {
                        format!(
                            "{} / {} / {} / {}",
                            ns(r.min),
                            ns(r.p50),
                            ns(r.p99),
                            ns(r.max)
                        )
                    },
                );
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {:.2} % | {} / {} | {} | {} | {} |",
                    s.kind.label(),
                    rate(st.offered_rate),
                    rate(st.answered_rate()),
                    100.0 * st.loss(),
                    st.refused_by_server_end,
                    st.refused_by_client_end,
                    st.invalid,
                    st.stale,
                    rtt
                );
            }
        }
        self.transmit_stamps(&mut m);
        if let Some(a) = &self.accuracy {
            let _ = writeln!(
                m,
                "\nAccuracy, same run (`injected_offset_and_drift_are_estimated`):\n\n```\n{}\n```",
                a.trim()
            );
        }
        m
    }

    /// How close each server's transmit timestamps are to its replies' departure: for
    /// basic replies at the fixed load (arrival at the client end − transmit timestamp),
    /// and for interleaved replies (the previous reply's arrival − the departure time
    /// reported for it).
    fn transmit_stamps(&self, m: &mut String) {
        if self.servers.iter().all(|s| s.xleave.is_none()) {
            return;
        }
        let pct = |p: Option<crate::histogram::Percentiles>| pair(p.map(|p| (p.p50, p.p99)));
        let _ = writeln!(
            m,
            "\nTransmit timestamps against the reply's arrival at the client end (one clock; \
             the arrival is stamped by the counter's XDP program on the client's veth, so \
             the veth's own transit is in every figure): basic replies at the fixed load, \
             and a load of 1024 clients asking for interleaved mode (chrony's `xleave`: each \
             request names the server's receive timestamp of its last reply) at {}, where \
             an interleaved reply reports the previous reply's real departure.\n\n\
             | server | basic: arrival − transmit p50 / p99 | interleaved replies | \
             interleaved: arrival − reported departure p50 / p99 |\n\
             | --- | --- | --- | --- |",
            rate(XLEAVE_RATE_REPORTED)
        );
        for s in self.servers.iter().filter(|s| s.kind != ServerKind::Bounce) {
            let basic = pct(s.fixed.as_ref().and_then(|f| f.tx_gap));
            let (share, gap) = s.xleave.as_ref().map_or_else(
                || ("–".to_string(), "–".to_string()),
                |x| {
                    let share = if x.answered > 0 {
                        format!(
                            "{:.1} % of {}",
                            100.0 * x.interleaved as f64 / x.answered as f64,
                            x.answered
                        )
                    } else {
                        "none answered".into()
                    };
                    (share, pct(x.xleave_gap))
                },
            );
            let _ = writeln!(m, "| {} | {basic} | {share} | {gap} |", s.kind.label());
        }
    }

    fn goals(&self, m: &mut String) {
        let (Some(x), Some(c)) = (self.get(ServerKind::NtpxXdp), self.get(ServerKind::Chronyd))
        else {
            return;
        };
        let yes = |ok: bool| if ok { "met" } else { "not met" };
        let rate_x = if c.max_rate > 0.0 {
            x.max_rate / c.max_rate
        } else {
            0.0
        };
        let _ = writeln!(m, "Goals for the XDP path:\n");
        let _ = writeln!(
            m,
            "- at least 10× chronyd's rate: {:.1}× ({})",
            rate_x,
            yes(rate_x >= 10.0)
        );
        if let (Some(cx), Some(cc)) = (x.cpu_us_per_request, c.cpu_us_per_request) {
            let _ = writeln!(
                m,
                "- under a tenth of chronyd's CPU per request: {:.3} of it ({})",
                cx / cc,
                yes(cx < cc / 10.0)
            );
            if let Some(b) = self
                .get(ServerKind::Bounce)
                .and_then(|b| b.cpu_us_per_request)
            {
                let (bx, bc) = ((cx - b).max(0.0), (cc - b).max(0.0));
                if bc > 0.0 {
                    let _ = writeln!(
                        m,
                        "  - beyond what the bare bounce costs on the same link (the receive \
                         thread's wake-ups, {b:.2} µs a request at this load): {:.3} of it ({})",
                        bx / bc,
                        yes(bx < bc / 10.0)
                    );
                }
            }
        }
        if let Some(b) = self.get(ServerKind::Bounce).filter(|b| b.max_rate > 0.0) {
            let pct = 100.0 * x.max_rate / b.max_rate;
            let _ = writeln!(
                m,
                "- at least 80 % of the bare-bounce limit: {pct:.1} % ({}){}",
                yes(pct >= 80.0),
                if b.notes.iter().any(|n| n.contains("generator's limit")) {
                    "; the bounce ran into the generator's limit, so this compares with what \
                     one generator core offers, not with the link's limit"
                } else {
                    ""
                }
            );
        }
        if let Some(p) = x.fixed.as_ref().and_then(|f| f.processing) {
            let _ = writeln!(
                m,
                "- median server processing delay under 2 µs: {} ({})",
                ns(p.p50),
                yes(p.p50 < 2_000)
            );
        }
    }
}

/// Replaces the text between `<!-- bench:begin -->` and `<!-- bench:end -->` in `doc`
/// with `section` (appending the markers if they are missing).
pub fn splice(doc: &str, section: &str) -> String {
    splice_named(doc, "bench", section)
}

/// [`splice`] between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
pub fn splice_named(doc: &str, name: &str, section: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let block = format!("{begin}\n{section}\n{end}");
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &doc[..b], &doc[e + end.len()..])
        }
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(sent: u64, answered: u64) -> Step {
        Step {
            sent,
            answered,
            secs: 1.0,
            offered_rate: sent as f64,
            ..Default::default()
        }
    }

    #[test]
    fn bisection_narrows_between_the_last_good_and_the_first_bad_rate() {
        let steps = [(10.0, 0.0), (20.0, 0.005), (40.0, 0.3), (80.0, 0.6)];
        assert_eq!(bracket(steps.iter().copied()), Some((20.0, 40.0)));
        assert_eq!(bracket([(10.0, 0.0)].iter().copied()), None);
        let mut tried = Vec::new();
        bisect((20.0, 40.0), |r| {
            tried.push(r);
            Ok(r < 30.0)
        })
        .unwrap();
        assert_eq!(tried.len(), 3);
        assert!((tried[0] - 800f64.sqrt()).abs() < 1e-9);
        assert!(tried[1] > tried[0] && tried[2] < tried[1], "{tried:?}");
    }

    #[test]
    fn max_rate_is_the_best_step_under_one_percent_loss() {
        let ramp = [step(1000, 1000), step(2000, 1990), step(4000, 3000)];
        assert_eq!(max_rate(&ramp), 1990.0);
        assert_eq!(max_rate(&[step(10, 0)]), 0.0);
    }

    #[test]
    fn splicing_keeps_the_rest_of_the_page() {
        let doc = "# B\n\nintro\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\ntail\n";
        let out = splice(doc, "new");
        assert_eq!(
            out,
            "# B\n\nintro\n\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\n\ntail\n"
        );
        let out = splice("# B\n", "x");
        assert!(out.ends_with("<!-- bench:begin -->\nx\n<!-- bench:end -->\n"));
    }

    #[test]
    fn the_table_has_a_row_per_server_and_the_goals() {
        let mk = |kind, rate: u64, cpu| ServerResult {
            kind,
            ramp: vec![step(rate, rate)],
            max_rate: rate as f64,
            fixed: Some(step(100, 100)),
            xleave: None,
            cpu_us_per_request: Some(cpu),
            program_ns_per_run: None,
            notes: vec![],
        };
        let r = BenchReport {
            date: "d".into(),
            kernel: "k".into(),
            cpu: "c".into(),
            command: "cargo xtask bench".into(),
            clients: 10,
            step_secs: 1.0,
            fixed_rate: 100.0,
            steal: 0.0,
            testrun: TestRunFigures::default(),
            servers: vec![
                mk(ServerKind::NtpxXdp, 2_000_000, 0.1),
                mk(ServerKind::Chronyd, 100_000, 5.0),
                mk(ServerKind::Bounce, 2_500_000, 0.05),
            ],
            accuracy: None,
        };
        let md = r.markdown();
        assert!(
            md.contains("| ntpx XDP | 2.00 M/s | 20.0× | 80 % | 0.10 µs | 0.05 µs | 99.0× |"),
            "{md}"
        );
        assert!(
            md.contains("at least 10× chronyd's rate: 20.0× (met)"),
            "{md}"
        );
        assert!(
            md.contains("80 % of the bare-bounce limit: 80.0 % (met)"),
            "{md}"
        );
    }
}
