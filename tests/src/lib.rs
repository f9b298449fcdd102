//! Test harness for ntpx: network namespaces joined by veth pairs, child processes that
//! are always ended, and the privilege check every privileged test starts with.
//!
//! Namespaces are named `ntpxt-<pid>-<n>` so a run can remove what an earlier, killed
//! run of its own left behind without touching anything else.

pub mod frames;

use anyhow::{Context, Result, bail};
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Environment variable that explicitly opts out of privileged tests.
pub const SKIP_PRIVILEGED: &str = "NTPX_SKIP_PRIVILEGED";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether privileged tests should run: true as root; a panic with a clear message when not
/// root, unless `NTPX_SKIP_PRIVILEGED=1` opts out (then false, and the test says it skipped).
pub fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var(SKIP_PRIVILEGED).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: needs root, and {SKIP_PRIVILEGED}=1 opts out");
        return false;
    }
    panic!(
        "{test} needs root (BPF, network namespaces). Run `cargo xtask test` as root, \
         or set {SKIP_PRIVILEGED}=1 to skip privileged tests explicitly."
    );
}

/// Directory holding the workspace's built binaries (ntpxd, ntpxc, ntpx-xdp-pass).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NTPX_BIN_DIR") {
        return PathBuf::from(d);
    }
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Path of a workspace binary, failing clearly if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (`cargo build -p ntp-user`; `cargo xtask test` does)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Removes namespaces an earlier run of this harness left behind (its pid is gone).
pub fn remove_stale_namespaces() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("ntpxt-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(name));
        }
    }
}

/// Puts IPv4 options (`opts`, e.g. a no-op `[1, 1, 1, 0]`) on `sock`'s datagrams, so the
/// fast path passes them up to the daemon.
pub fn set_ip_options(sock: &std::net::UdpSocket, opts: &[u8]) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a valid socket with a buffer that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            opts.as_ptr().cast(),
            opts.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("IP_OPTIONS: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name containing `tag`, loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        remove_stale_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("ntpxt-{}-{n}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it creates stay there.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a valid namespace fd affects only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    /// Gives the namespace its own /etc/hosts (`ip netns exec` mounts /etc/netns/NAME/hosts
    /// over it); removed with the namespace.
    pub fn set_hosts(&self, content: &str) -> Result<()> {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("hosts"), content).context("writing the namespace's hosts file")
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args` inside the namespace and returns its stdout (error on failure).
    pub fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep nothing alive: deleting the name unmounts it, and
        // the veth ends are destroyed with the last reference.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// Addresses of the two ends of a link.
#[derive(Clone, Debug)]
pub struct Link {
    /// Interface name on the server side.
    pub server_if: String,
    /// Interface name on the client side.
    pub client_if: String,
    /// Server IPv4 address.
    pub server_v4: String,
    /// Client IPv4 address.
    pub client_v4: String,
    /// Server IPv6 address.
    pub server_v6: String,
    /// Client IPv6 address.
    pub client_v6: String,
}

/// Joins `server` and `client` with a veth pair on subnet number `net` (0-255):
/// 198.18.NET.1/24 and `fd00:198:18:NET::1/64` on the server, .2 / `::2` on the client.
/// 198.18.0.0/15 is the benchmarking range: nothing outside these namespaces uses it.
pub fn veth(server: &Netns, client: &Netns, net: u8) -> Result<Link> {
    let (a, b) = veth_names();
    veth_named(server, client, net, &a, &b)
}

/// Unique names for the two ends of a veth pair (server end, client end).
pub fn veth_names() -> (String, String) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}{n}", std::process::id() % 100_000);
    (format!("nxs{id}"), format!("nxc{id}"))
}

/// As [`veth`], with the ends named `a` (server) and `b` (client).
pub fn veth_named(server: &Netns, client: &Netns, net: u8, a: &str, b: &str) -> Result<Link> {
    let (a, b) = (a.to_string(), b.to_string());
    ip(&[
        "link",
        "add",
        &a,
        "netns",
        server.name(),
        "type",
        "veth",
        "peer",
        "name",
        &b,
        "netns",
        client.name(),
    ])?;
    let l = Link {
        server_if: a,
        client_if: b,
        server_v4: format!("198.18.{net}.1"),
        client_v4: format!("198.18.{net}.2"),
        server_v6: format!("fd00:198:18:{net}::1"),
        client_v6: format!("fd00:198:18:{net}::2"),
    };
    for (ns, ifname, v4, v6) in [
        (server, &l.server_if, &l.server_v4, &l.server_v6),
        (client, &l.client_if, &l.client_v4, &l.client_v6),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            ifname,
            "nodad",
        ])?;
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(l)
}

/// A shared segment: a hub namespace with a bridge, and nodes joined to it by veth pairs.
/// Node N gets 198.18.NET.N/24 and `fd00:198:18:NET::N/64`.
pub struct Lan {
    hub: Netns,
    net: u8,
    /// Hub-side interface of each node, by node number.
    pub hub_ifs: Vec<(u8, String)>,
}

impl Lan {
    /// A hub namespace with bridge `br0` for subnet number `net`.
    pub fn new(net: u8) -> Result<Self> {
        let hub = Netns::new("hub")?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        Ok(Lan {
            hub,
            net,
            hub_ifs: Vec::new(),
        })
    }

    /// The hub namespace.
    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// Joins `ns` as node `n` (1-254); returns (node interface, IPv4 address).
    pub fn join(&mut self, ns: &Netns, n: u8) -> Result<(String, String)> {
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{c}", std::process::id() % 100_000);
        let (h, x) = (format!("nxh{id}"), format!("nxn{id}"));
        ip(&[
            "link",
            "add",
            &h,
            "netns",
            self.hub.name(),
            "type",
            "veth",
            "peer",
            "name",
            &x,
            "netns",
            ns.name(),
        ])?;
        self.hub.ip(&["link", "set", &h, "master", "br0"])?;
        self.hub.ip(&["link", "set", &h, "up"])?;
        let v4 = format!("198.18.{}.{n}", self.net);
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", &x])?;
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("fd00:198:18:{}::{n}/64", self.net),
            "dev",
            &x,
            "nodad",
        ])?;
        ns.ip(&["link", "set", &x, "up"])?;
        self.hub_ifs.push((n, h));
        Ok((x, v4))
    }

    /// The hub-side interface of node `n`.
    pub fn hub_if(&self, n: u8) -> Option<&str> {
        self.hub_ifs
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, i)| i.as_str())
    }
}

/// The seed's topology on one LAN: an upstream (node 1), the server pair time1 and time2
/// (nodes 2 and 3, their hub ends with the pass program so `XDP_TX` replies cross the
/// bridge), a client (node 4) and a namespace for independent queries (node 5).
pub struct SeedTopology {
    /// The shared segment.
    pub lan: Lan,
    /// Upstream namespace, interface, address.
    pub up: (Netns, String, String),
    /// First server.
    pub time1: (Netns, String, String),
    /// Second server.
    pub time2: (Netns, String, String),
    /// The client namespace.
    pub client: Netns,
    /// A namespace for ntpdig.
    pub dig: Netns,
    _passes: Vec<Proc>,
}

impl SeedTopology {
    /// Builds it on subnet number `net`.
    pub fn new(net: u8) -> Result<Self> {
        let mut lan = Lan::new(net)?;
        let mut node = |tag: &str, n: u8| -> Result<(Netns, String, String)> {
            let ns = Netns::new(tag)?;
            let (ifname, ip) = lan.join(&ns, n)?;
            Ok((ns, ifname, ip))
        };
        let up = node("up", 1)?;
        let time1 = node("time1", 2)?;
        let time2 = node("time2", 3)?;
        let client = node("client", 4)?.0;
        let dig = node("dig", 5)?.0;
        let mut passes = Vec::new();
        for n in [1, 2, 3] {
            passes.push(xdp_pass(
                lan.hub(),
                lan.hub_if(n).context("hub interface")?,
            )?);
        }
        Ok(SeedTopology {
            lan,
            up,
            time1,
            time2,
            client,
            dig,
            _passes: passes,
        })
    }
}

/// `n` ntpx-testservers (stratum 2, no error) joined to `lan` as nodes 1..=n, each in its
/// own namespace: (namespace, address, process).
pub fn testservers(lan: &mut Lan, n: u8) -> Result<Vec<(Netns, String, Proc)>> {
    let mut out = Vec::new();
    for node in 1..=n {
        let ns = Netns::new("up")?;
        let (_, ip) = lan.join(&ns, node)?;
        let mut cmd = ns.command(bin("ntpx-testserver"));
        cmd.args(["--listen", &format!("{ip}:123"), "--stratum", "2"]);
        let mut p = Proc::spawn("testserver", cmd)?;
        p.wait_for_log("listening", Duration::from_secs(10))?;
        out.push((ns, ip, p));
    }
    Ok(out)
}

/// chronyd -x in `ns` with `config` lines (pidfile, driftfile, command socket and cmdport 0
/// are added); returns the process and its command socket for chronyc -h.
pub fn chronyd(ns: &Netns, config: &str) -> Result<(Proc, TempDir, PathBuf)> {
    let dir = TempDir::new("chronyd")?;
    let sock = dir.path().join("chronyd.sock");
    let conf = dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "{config}\ncmdport 0\nbindcmdaddress {}\npidfile {}\ndriftfile {}\n",
            sock.display(),
            dir.path().join("chronyd.pid").display(),
            dir.path().join("drift").display()
        ),
    )?;
    let mut cmd = ns.command("chronyd");
    cmd.args(["-x", "-d", "-u", "root", "-f"]).arg(&conf);
    let p = Proc::spawn("chronyd", cmd)?;
    Ok((p, dir, sock))
}

/// `chronyc -h SOCKET -n ARGS` in `ns`.
pub fn chronyc(ns: &Netns, sock: &std::path::Path, args: &[&str]) -> Result<String> {
    let mut a = vec!["-h", sock.to_str().context("socket path")?, "-n"];
    a.extend_from_slice(args);
    ns.output("chronyc", &a)
}

/// Polls `f` every 250 ms until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child process, ended (SIGTERM, then SIGKILL) when dropped; stderr kept in a file.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
    label: String,
}

impl Proc {
    /// Starts `cmd`, sending its stderr (and stdout) to a log file named after `label`.
    pub fn spawn(label: &str, mut cmd: Command) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("ntpxt-{}-{n}-{label}.log", std::process::id()));
        let f =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let f2 = f.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(f2))
            .stderr(Stdio::from(f))
            .spawn()
            .with_context(|| format!("starting {label}: {cmd:?}"))?;
        Ok(Proc {
            child: Some(child),
            log,
            label: label.to_string(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, failing after `timeout` or if the process exits.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!(
                    "{} exited ({st}) before logging {needle:?}:\n{}",
                    self.label,
                    self.log()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}:\n{}",
                    self.label,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (e.g. libc SIGKILL = 9) to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Waits for the process to exit, up to `timeout`; returns whether it exited with success.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<bool> {
        let start = Instant::now();
        let Some(c) = self.child.as_mut() else {
            return Ok(true);
        };
        loop {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                return Ok(st.success());
            }
            if start.elapsed() > timeout {
                bail!("{} still running after {timeout:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// What `ntpx-testserver` serves, as its error against the system clock.
#[derive(Clone, Copy, Debug)]
pub struct Truth {
    /// Seconds ahead at the start.
    pub offset: f64,
    /// Frequency error, ppm.
    pub drift_ppm: f64,
    /// Amplitude of the sine wander of the frequency, ppm.
    pub wander_ppm: f64,
    /// Period of the wander, seconds.
    pub wander_period: f64,
}

impl Truth {
    /// Served minus system time `elapsed` seconds after the start: the offset, the drift,
    /// and the phase the wander has built up.
    pub fn error(&self, elapsed: f64) -> f64 {
        let w = std::f64::consts::TAU / self.wander_period;
        self.offset
            + self.drift_ppm * 1e-6 * elapsed
            + self.wander_ppm * 1e-6 * (1.0 - (w * elapsed).cos()) / w
    }

    /// The frequency error (ppm) `elapsed` seconds after the start.
    pub fn frequency_ppm(&self, elapsed: f64) -> f64 {
        let w = std::f64::consts::TAU / self.wander_period;
        self.drift_ppm + self.wander_ppm * (w * elapsed).sin()
    }
}

/// A private scratch directory (mode 0700), removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates `ntpxt-<pid>-<tag>-<random>` under the system temp dir.
    pub fn new(tag: &str) -> Result<Self> {
        let prefix = format!("ntpxt-{}-{tag}-", std::process::id());
        use std::os::unix::fs::PermissionsExt;
        // chronyd refuses a state directory others may read.
        let d = tempfile::Builder::new()
            .prefix(&prefix)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .with_context(|| format!("creating a scratch directory {prefix}*"))?;
        Ok(TempDir(d))
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

/// An `ntpxd` under test: its scratch dir, control socket and process.
pub struct Ntpxd {
    /// The process.
    pub proc: Proc,
    /// Its control socket.
    pub socket: PathBuf,
    _dir: TempDir,
}

impl Ntpxd {
    /// Starts `ntpxd -x` in `ns` with `config` (a pidfile and control socket in a private
    /// directory are appended) and `extra` arguments; waits until it serves.
    pub fn start(ns: &Netns, config: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(ns, config, extra, &[])
    }

    /// As [`Ntpxd::start`], with extra environment variables.
    pub fn start_with_env(
        ns: &Netns,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = TempDir::new("ntpxd")?;
        let socket = dir.path().join("ntpxd.sock");
        let conf = dir.path().join("ntpx.conf");
        let full = format!(
            "{config}\nbindcmdaddress {}\npidfile {}\n",
            socket.display(),
            dir.path().join("ntpxd.pid").display()
        );
        std::fs::write(&conf, full)?;
        let mut cmd = ns.command(bin("ntpxd"));
        cmd.arg("-x")
            .arg("-f")
            .arg(&conf)
            .args(extra)
            .envs(env.iter().copied());
        let mut proc = Proc::spawn("ntpxd", cmd)?;
        proc.wait_for_log("Control socket at", Duration::from_secs(20))?;
        Ok(Ntpxd {
            proc,
            socket,
            _dir: dir,
        })
    }

    /// Runs `ntpxc -h SOCKET args` and returns its stdout.
    pub fn ntpxc(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(bin("ntpxc"));
        c.arg("-h").arg(&self.socket).args(args);
        run(&mut c)
    }

    /// Runs `ntpxc -h SOCKET` with no command, feeding `input` to its prompt; returns
    /// (stdout, stderr).
    pub fn ntpxc_interactive(&self, input: &str) -> Result<(String, String)> {
        use std::io::Write;
        let mut child = Command::new(bin("ntpxc"))
            .arg("-h")
            .arg(&self.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ntpxc")?;
        child
            .stdin
            .take()
            .context("ntpxc stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `ntpxc -c sources`, parsed.
    pub fn sources(&self) -> Vec<SourceRow> {
        self.ntpxc(&["-c", "sources"])
            .unwrap_or_default()
            .lines()
            .filter_map(SourceRow::parse)
            .collect()
    }

    /// The address of the selected source, if any.
    pub fn selected(&self) -> Option<String> {
        self.sources()
            .into_iter()
            .find(|s| s.state == "*")
            .map(|s| s.name)
    }

    /// A value of `ntpxc tracking` by its label.
    pub fn tracking(&self, label: &str) -> Result<String> {
        let out = self.ntpxc(&["tracking"])?;
        out.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == label)
                    .map(|(_, v)| v.trim().to_string())
            })
            .with_context(|| format!("{label:?} not in tracking:\n{out}"))
    }

    /// A value from `ntpxc xdpstats` (kernel counter by name) or `serverstats` (by label).
    pub fn stat(&self, command: &str, label: &str) -> Result<u64> {
        let out = self.ntpxc(&[command])?;
        for line in out.lines() {
            if let Some((l, v)) = line.split_once(':')
                && l.trim() == label
            {
                return v
                    .trim()
                    .parse()
                    .with_context(|| format!("value of {label:?} in {line:?}"));
            }
        }
        bail!("{label:?} not in `ntpxc {command}` output:\n{out}")
    }
}

/// One line of `ntpxc -c sources`.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRow {
    /// State symbol (`*`, `+`, `-`, `x`, `~`, `?`).
    pub state: String,
    /// Address.
    pub name: String,
    /// Stratum.
    pub stratum: u8,
    /// Reachability register, octal as printed.
    pub reach: String,
    /// Measured offset of the last sample, seconds (local clock minus source).
    pub measured: f64,
}

impl SourceRow {
    /// Parses `mode,state,name,stratum,poll,reach,lastrx,adjusted,measured,error`.
    pub fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 10 {
            return None;
        }
        Some(SourceRow {
            state: f[1].to_string(),
            name: f[2].to_string(),
            stratum: f[3].parse().ok()?,
            reach: f[5].to_string(),
            measured: f[8].parse().ok()?,
        })
    }
}

/// A server namespace and a client namespace joined by a veth, the client end keeping
/// the pass-through program (so the server's `XDP_TX` replies arrive).
pub struct ClientServer {
    /// The server's namespace.
    pub server: Netns,
    /// The client's namespace.
    pub client: Netns,
    /// The veth between them.
    pub link: Link,
    /// The client end's pass-through program.
    pub pass: Proc,
}

/// [`ClientServer`] on subnet `net` (namespaces tagged `server` and `client`), the
/// client resolving `name` to the server's IPv4 address.
pub fn client_server(server: &str, client: &str, net: u8, name: &str) -> Result<ClientServer> {
    let server = Netns::new(server)?;
    let client = Netns::new(client)?;
    let link = veth(&server, &client, net)?;
    let pass = xdp_pass(&client, &link.client_if)?;
    client.set_hosts(&format!("{} {name}\n", link.server_v4))?;
    Ok(ClientServer {
        server,
        client,
        link,
        pass,
    })
}

/// Keeps ntpx's pass-through XDP program on a client-side veth so `XDP_TX` replies arrive.
pub fn xdp_pass(ns: &Netns, iface: &str) -> Result<Proc> {
    let mut cmd = ns.command(bin("ntpx-xdp-pass"));
    cmd.arg(iface);
    let mut p = Proc::spawn("xdp-pass", cmd)?;
    p.wait_for_log("attached to", Duration::from_secs(20))?;
    Ok(p)
}

/// One ntpdig measurement: offset and stratum as ntpdig reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct Dig {
    /// Offset of the server's clock from ours, seconds.
    pub offset: f64,
    /// ntpdig's error bound (+/-), seconds: grows with the round-trip delay it saw.
    pub error: f64,
    /// Stratum reported by the server.
    pub stratum: u8,
    /// The raw line.
    pub line: String,
}

/// Queries `server` from `ns` with ntpdig (one sample, 2 s timeout; it never sets the clock
/// without -S or -s).
pub fn ntpdig(ns: &Netns, server: &str) -> Result<Dig> {
    let out = ns.output("ntpdig", &["-t", "2", server])?;
    parse_ntpdig(&out).with_context(|| format!("parsing ntpdig output {out:?}"))
}

/// The best of `n` ntpdig queries: the one with the smallest error bound (as NTP's own
/// clock filter prefers the sample with the least delay; ntpdig is a Python program whose
/// own scheduling delays dominate on a loaded machine).
pub fn ntpdig_best(ns: &Netns, server: &str, n: usize) -> Result<Dig> {
    let mut best: Option<Dig> = None;
    for _ in 0..n {
        let d = ntpdig(ns, server)?;
        if best.as_ref().is_none_or(|b| d.error < b.error) {
            best = Some(d);
        }
    }
    best.context("no ntpdig query made")
}

/// Parses ntpdig's result line: `DATE TIME (+0000) +0.000012 +/- 0.000040 HOST ADDR s3 no-leap`.
pub fn parse_ntpdig(out: &str) -> Result<Dig> {
    for line in out.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let Some(pm) = toks.iter().position(|t| *t == "+/-") else {
            continue;
        };
        let offset: f64 = toks
            .get(pm.wrapping_sub(1))
            .context("offset before +/-")?
            .parse()
            .context("offset")?;
        let error: f64 = toks
            .get(pm + 1)
            .context("error after +/-")?
            .parse()
            .context("error bound")?;
        let stratum = toks
            .iter()
            .find_map(|t| t.strip_prefix('s').and_then(|s| s.parse::<u8>().ok()))
            .context("stratum token sN")?;
        return Ok(Dig {
            offset,
            error,
            stratum,
            line: line.to_string(),
        });
    }
    bail!("no result line")
}

/// A self-signed certificate and key for `name` (EC P-256), made with openssl.
pub fn self_signed_certificate(
    dir: &TempDir,
    name: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((cert, key))
}

/// A certificate for `name` signed by a throwaway authority (EC P-256, openssl): the
/// authority's certificate, the server's certificate and its key. For clients that
/// refuse a self-signed server certificate (ntpd-rs, webpki).
pub fn ca_signed_certificate(dir: &TempDir, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let p = |f: &str| dir.path().join(f);
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .context("running openssl")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=ntpx test CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", "ca.key", "-out", "ca.pem"])
        .collect::<Vec<_>>(),
    )?;
    let subject = format!("/CN={name}");
    openssl(
        &[&["req"][..], &ec, &["-subj", &subject]]
            .concat()
            .into_iter()
            .chain(["-keyout", "server.key", "-out", "server.csr"])
            .collect::<Vec<_>>(),
    )?;
    std::fs::write(
        p("server.ext"),
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])?;
    Ok((p("ca.pem"), p("server.pem"), p("server.key")))
}

/// ntpd-rs's daemon: `NTPX_NTPD_RS`, else the one `cargo xtask setup` builds into
/// `.tools/ntpd-rs`.
pub fn ntpd_rs_daemon() -> Result<PathBuf> {
    let path = match std::env::var_os("NTPX_NTPD_RS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/ntpd-rs/bin/ntp-daemon"),
    };
    if !path.is_file() {
        bail!(
            "ntpd-rs not found at {} (cargo xtask test builds it there; or set NTPX_NTPD_RS)",
            path.display()
        );
    }
    Ok(path)
}

/// The libraries of a Debian package tree unpacked under `root`
/// (`usr/lib/<multiarch triplet>`, whatever the machine's).
pub fn unpacked_libs(root: &std::path::Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join("usr/lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-linux-gnu"))
}

/// A preload library of tests/shim (`NAME.c`), built into `dir`: `noclock` lets a daemon
/// that cannot run without clock control (ntpd-rs) run with every clock change it asks
/// for reported done and none made; `serialtty` has gpsd take a pty for a serial port.
pub fn preload_shim(dir: &TempDir, name: &str) -> Result<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("shim/{name}.c"));
    let out = dir.path().join(format!("{name}.so"));
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .output()
        .context("running cc")?;
    anyhow::ensure!(
        built.status.success(),
        "building {}: {}",
        src.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    Ok(out)
}

/// The value of `field` in chronyc's `ntpdata` block of `addr` in `report`.
pub fn ntpdata_field(report: &str, addr: &str, field: &str) -> Option<String> {
    let block = report.split("\nRemote address").find(|b| {
        b.trim_start()
            .trim_start_matches(':')
            .trim_start()
            .starts_with(addr)
    })?;
    block
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntpdig_result_line_is_parsed() {
        let d = parse_ntpdig(
            "2026-11-24 16:00:00.123456 (+0000) -0.000021 +/- 0.000043 198.18.0.1 s3 no-leap\n",
        )
        .unwrap();
        assert_eq!(d.stratum, 3);
        assert!((d.offset + 0.000_021).abs() < 1e-12);
        assert!((d.error - 0.000_043).abs() < 1e-12);
        assert!(parse_ntpdig("ntpdig: no eligible servers\n").is_err());
    }
}
