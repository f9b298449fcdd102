//! The servers compared, each started in the server namespace with clock control off
//! and pinned to the server CPU.

use crate::topology::{BenchNet, SERVER_CPU, pin_pid};
use anyhow::{Context, Result, bail};
use ntpx_tests::{Ntpxd, Proc, TempDir, chronyd};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One of the servers the benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerKind {
    /// ntpxd -x with its XDP program attached natively.
    NtpxXdp,
    /// ntpxd -x --no-xdp: the userspace socket path.
    NtpxSocket,
    /// chronyd -x.
    Chronyd,
    /// ntpd-rs without sources (it then never touches the clock), without `CAP_SYS_TIME`.
    NtpdRs,
    /// The bare bounce program: the limit of the link.
    Bounce,
}

impl ServerKind {
    /// Every server, in report order.
    pub const ALL: [ServerKind; 5] = [
        ServerKind::NtpxXdp,
        ServerKind::NtpxSocket,
        ServerKind::Chronyd,
        ServerKind::NtpdRs,
        ServerKind::Bounce,
    ];

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            ServerKind::NtpxXdp => "ntpx XDP",
            ServerKind::NtpxSocket => "ntpx --no-xdp",
            ServerKind::Chronyd => "chronyd -x",
            ServerKind::NtpdRs => "ntpd-rs",
            ServerKind::Bounce => "bare XDP bounce",
        }
    }

    /// The command-line name (`--servers`).
    pub fn key(self) -> &'static str {
        match self {
            ServerKind::NtpxXdp => "ntpx-xdp",
            ServerKind::NtpxSocket => "ntpx-socket",
            ServerKind::Chronyd => "chronyd",
            ServerKind::NtpdRs => "ntpd-rs",
            ServerKind::Bounce => "bounce",
        }
    }

    /// Parses a command-line name.
    pub fn from_key(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == s)
    }

    /// Whether the target echoes requests instead of answering them.
    pub fn echoes(self) -> bool {
        self == ServerKind::Bounce
    }
}

/// A running server; stopped when dropped.
pub enum Running {
    /// ntpxd.
    Ntpx(Ntpxd),
    /// chronyd or ntpd-rs, with its private directory.
    Daemon(Proc, TempDir),
    /// The bounce program, attached for as long as this lives.
    Bounce(Box<aya::Ebpf>),
}

/// Where the comparison servers are.
#[derive(Clone, Debug)]
pub struct Peers {
    /// ntpd-rs's `ntp-daemon` binary.
    pub ntpd_rs: PathBuf,
}

const CONFIG: &str = "local stratum 3\nallow all\n";

/// Starts `kind` on the server side of `net` and pins it to the server CPU.
pub fn start(kind: ServerKind, net: &BenchNet, peers: &Peers) -> Result<Running> {
    let r = match kind {
        ServerKind::NtpxXdp => {
            let d = Ntpxd::start(&net.server, CONFIG, &["-i", &net.link.server_if])?;
            if !d.proc.log().contains("native mode") {
                bail!("XDP not attached in native mode:\n{}", d.proc.log());
            }
            Running::Ntpx(d)
        }
        ServerKind::NtpxSocket => Running::Ntpx(Ntpxd::start(&net.server, CONFIG, &["--no-xdp"])?),
        ServerKind::Chronyd => {
            let (p, dir, _sock) = chronyd(&net.server, CONFIG)?;
            Running::Daemon(p, dir)
        }
        ServerKind::NtpdRs => {
            let (p, dir) = ntpd_rs(net, &peers.ntpd_rs)?;
            Running::Daemon(p, dir)
        }
        ServerKind::Bounce => {
            let ifname = net.link.server_if.clone();
            let ebpf = net.server.run_in(move || attach_bounce(&ifname))?;
            Running::Bounce(Box::new(ebpf))
        }
    };
    if let Some(pid) = r.pid() {
        pin_pid(pid, SERVER_CPU)?;
    }
    Ok(r)
}

impl Running {
    /// The server process, if it is one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Running::Ntpx(d) => Some(d.proc.pid()),
            Running::Daemon(p, _) => Some(p.pid()),
            Running::Bounce(_) => None,
        }
    }

    /// The server's log so far (for errors).
    pub fn log(&self) -> String {
        match self {
            Running::Ntpx(d) => d.proc.log(),
            Running::Daemon(p, _) => p.log(),
            Running::Bounce(_) => String::new(),
        }
    }
}

fn ntpd_rs(net: &BenchNet, bin: &Path) -> Result<(Proc, TempDir)> {
    if !bin.exists() {
        bail!(
            "{} not found (`cargo xtask bench` installs ntpd-rs into .tools/ntpd-rs)",
            bin.display()
        );
    }
    let dir = TempDir::new("ntpd-rs")?;
    let conf = dir.path().join("ntp.toml");
    std::fs::write(
        &conf,
        format!(
            "[observability]\nlog-level = \"warn\"\nobservation-path = \"{}\"\n\n\
             [[server]]\nlisten = \"0.0.0.0:123\"\n\n\
             [synchronization]\nlocal-stratum = 3\n",
            dir.path().join("observe").display()
        ),
    )
    .context("writing ntp.toml")?;
    // No sources: ntpd-rs then never steers. Without CAP_SYS_TIME it could not anyway.
    let mut cmd = net.server.command("setpriv");
    cmd.args(["--bounding-set=-sys_time", "--inh-caps=-sys_time"])
        .arg(bin)
        .arg("-c")
        .arg(&conf);
    let p = Proc::spawn("ntpd-rs", cmd)?;
    Ok((p, dir))
}

fn attach_bounce(ifname: &str) -> Result<aya::Ebpf> {
    let mut ebpf =
        aya::Ebpf::load(ntp_user::BENCH_OBJECT).context("loading the ntpx-bench eBPF object")?;
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(ntp_common::load::PROG_BOUNCE)
        .context("bounce program missing")?
        .try_into()?;
    prog.load().context("loading the bounce program")?;
    prog.attach(ifname, aya::programs::XdpMode::Driver)
        .with_context(|| format!("attaching the bounce program to {ifname}"))?;
    Ok(ebpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for k in ServerKind::ALL {
            assert_eq!(ServerKind::from_key(k.key()), Some(k));
        }
        assert_eq!(ServerKind::from_key("ntpd"), None);
    }
}
