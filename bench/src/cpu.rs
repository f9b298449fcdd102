//! CPU time from the kernel's accounting: per CPU (/proc/stat) and per thread
//! (/proc/PID/task/TID/schedstat, exact nanoseconds on the CPU).

use anyhow::{Context, Result};

/// Busy time of each CPU (user, nice, system, irq, softirq), in clock ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Indexed by CPU number.
    pub busy_ticks: Vec<u64>,
    /// Time the hypervisor ran something else while a CPU wanted to run, all CPUs.
    pub steal_ticks: u64,
    /// Every tick of all CPUs (busy, idle, iowait, steal).
    pub total_ticks: u64,
}

impl CpuTimes {
    /// Parses the `cpuN` lines of /proc/stat.
    pub fn parse(stat: &str) -> Result<Self> {
        let mut busy = Vec::new();
        let (mut steal, mut total) = (0, 0);
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            let Some(name) = f.next() else { continue };
            let Some(n) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
                continue;
            };
            let cpu: usize = n
                .parse()
                .with_context(|| format!("CPU number in {line:?}"))?;
            let v: Vec<u64> = f
                .map(str::parse::<u64>)
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing {line:?}"))?;
            // user nice system idle iowait irq softirq steal ...
            let get = |i: usize| v.get(i).copied().unwrap_or(0);
            if busy.len() <= cpu {
                busy.resize(cpu + 1, 0);
            }
            busy[cpu] = get(0) + get(1) + get(2) + get(5) + get(6);
            steal += get(7);
            total += (0..8).map(get).sum::<u64>();
        }
        anyhow::ensure!(!busy.is_empty(), "no cpuN lines in /proc/stat");
        Ok(CpuTimes {
            busy_ticks: busy,
            steal_ticks: steal,
            total_ticks: total,
        })
    }

    /// Reads /proc/stat now.
    pub fn now() -> Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
    }

    /// Fraction of all CPU time stolen by the hypervisor between `earlier` and `self`.
    pub fn steal_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total_ticks.saturating_sub(earlier.total_ticks);
        if total == 0 {
            return 0.0;
        }
        self.steal_ticks.saturating_sub(earlier.steal_ticks) as f64 / total as f64
    }
}

/// CPU time of a process, two ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessCpu {
    /// Its live threads' time on a CPU, exact (schedstat), ns.
    pub threads_ns: u64,
    /// utime + stime, in ticks: coarse, but it keeps the time of threads that exited.
    pub ticks: u64,
}

impl ProcessCpu {
    /// Reads process `pid` now (zeros if it is gone).
    pub fn of(pid: u32) -> Self {
        let threads_ns = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| {
            tasks
                .filter_map(std::result::Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| parse_schedstat(&s))
                .sum()
        });
        let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat_ticks(&s))
            .unwrap_or(0);
        ProcessCpu { threads_ns, ticks }
    }

    /// CPU ns used since `earlier`: the exact figure, unless threads that exited in
    /// between make the coarse one larger.
    pub fn ns_since(&self, earlier: &ProcessCpu) -> u64 {
        let exact = self.threads_ns.saturating_sub(earlier.threads_ns);
        let coarse =
            (self.ticks.saturating_sub(earlier.ticks) as f64 * 1e9 / ticks_per_sec()) as u64;
        exact.max(coarse)
    }
}

/// utime + stime from a /proc/PID/stat line (fields 14 and 15; the name in parentheses
/// may hold spaces, so fields are counted after its closing parenthesis).
pub fn parse_stat_ticks(s: &str) -> Option<u64> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The first field of a schedstat line: time on the CPU, ns.
pub fn parse_schedstat(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// `USER_HZ`, the unit of /proc/stat.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  572309 0 115300 2025274 9997 0 1048 2006 0 0
cpu0 273361 1 52658 1033121 2459 7 184 988 0 0
cpu1 298947 0 62642 992153 7538 0 863 1017 0 0
intr 1234 5
";

    #[test]
    fn busy_is_everything_but_idle_and_iowait() {
        let t = CpuTimes::parse(STAT).unwrap();
        assert_eq!(
            t.busy_ticks,
            vec![273_361 + 1 + 52658 + 7 + 184, 298_947 + 62642 + 863]
        );
        assert_eq!(t.steal_ticks, 988 + 1017);
        let later = CpuTimes {
            busy_ticks: vec![t.busy_ticks[0], t.busy_ticks[1] + 250],
            steal_ticks: t.steal_ticks + 100,
            total_ticks: t.total_ticks + 400,
        };
        assert_eq!(later.steal_since(&t), 0.25);
    }

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let line = "1234 (tokio rt) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn schedstat_gives_nanoseconds_on_the_cpu() {
        assert_eq!(
            parse_schedstat("190330463 68236223 487\n"),
            Some(190_330_463)
        );
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(CpuTimes::parse("cpu0 1 2 x\n").is_err());
        assert!(CpuTimes::parse("intr 1\n").is_err());
    }
}
