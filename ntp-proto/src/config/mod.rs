//! Parser for chrony.conf-style configuration files.
//!
//! Existing chrony configurations must load: directives ntpx does not implement yet are
//! reported as warnings instead of errors, so an operator can switch daemons without editing
//! the file first. Arguments of implemented directives are checked strictly, because a
//! silently misread access rule or port is worse than refusing to start.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::acl::{AclError, Action, Rule, Target};

pub mod files;
pub mod hwtimestamp;
pub mod refclocks;
mod render;
pub use files::{ConfigFiles, matches};
mod sources;
pub use hwtimestamp::{HwTimestampConfig, RxFilter};
pub use refclocks::{RefclockConfig, RefclockDriver};
pub use render::render;
pub use sources::{SourceConfig, SourceKind, SyncConfig};

/// Default UDP port for NTP service.
pub const DEFAULT_PORT: u16 = 123;
/// Default UDP port for monitoring commands, as in chrony.
pub const DEFAULT_CMDPORT: u16 = 323;
/// Default path of the Unix control socket.
pub const DEFAULT_CMD_SOCKET: &str = "/run/ntpx/ntpxd.sock";
/// Default path of the PID file.
pub const DEFAULT_PIDFILE: &str = "/run/ntpx/ntpxd.pid";
/// Default for `xdpstalelimit`.
pub const DEFAULT_XDP_STALE_LIMIT: Duration = Duration::from_secs(10);
/// Largest accepted `xdpstalelimit`.
pub const MAX_XDP_STALE_LIMIT: Duration = Duration::from_mins(10);

/// chrony's `ntsrefresh` default: 4 weeks, seconds.
pub const DEFAULT_NTS_REFRESH: u32 = 2_419_200;

/// Directives documented in chrony 4.x's chrony.conf(5) that ntpx accepts but ignores for now.
///
/// Kept sorted so the test can check for duplicates; implemented directives are not listed.
pub const UNSUPPORTED_DIRECTIVES: &[&str] = &[
    "acquisitionport",
    "bindacqaddress",
    "bindacqdevice",
    "broadcast",
    "clockprecision",
    "dscp",
    "dumpdir",
    "fallbackdrift",
    "hwclockfile",
    "hwtsinterface",
    "hwtstimeout",
    "initstepslew",
    "logbanner",
    "mailonchange",
    "manual",
    "maxtxbuffers",
    "nocerttimecheck",
    "ntpsigndsocket",
    "ntsprocesses",
    "peer",
    "ptpdomain",
    "ptpport",
    "refresh",
    "rtcautotrim",
    "rtcdevice",
    "rtcfile",
    "rtconutc",
    "tempcomp",
];

/// Most clients the logs keep, whatever `clientloglimit` says (32 MiB of records).
pub const MAX_CLIENT_RECORDS: u32 = 1 << 19;

/// Characters that start a comment at the beginning of a line or after whitespace.
const COMMENT_CHARS: &[char] = &['#', '!', ';', '%'];

/// The daemon settings read from a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Local reference mode (`local`); `None` when not configured.
    pub local: Option<LocalConfig>,
    /// `allow`/`deny` directives in file order.
    pub acl_rules: Vec<Rule>,
    /// NTP server port (`port`); 0 disables the server port.
    pub port: u16,
    /// Addresses to bind the NTP socket to (`bindaddress`), at most one per family.
    pub bind_addresses: Vec<IpAddr>,
    /// Where the frequency offset is saved (`driftfile`).
    pub driftfile: Option<PathBuf>,
    /// Unix control socket path; `None` when disabled with `bindcmdaddress /`.
    pub cmd_socket: Option<PathBuf>,
    /// Addresses for the UDP command port (`bindcmdaddress IP`), at most one per family.
    pub cmd_addresses: Vec<IpAddr>,
    /// `cmdallow`/`cmddeny` in file order (for the UDP command port; localhost is always
    /// allowed, as in chrony).
    pub cmd_acl_rules: Vec<Rule>,
    /// UDP port for monitoring commands (`cmdport`); 0 disables it.
    pub cmdport: u16,
    /// `opencommands`: the monitoring commands the UDP command port answers.
    pub open_commands: Vec<String>,
    /// `cmdratelimit`: the limit per host on the UDP command port (localhost exempt).
    pub cmd_ratelimit: ntp_common::RateLimit,
    /// PID file path; `None` when disabled with `pidfile /`.
    pub pidfile: Option<PathBuf>,
    /// How old the XDP fast path's shared state may get before it stops answering.
    pub xdp_stale_limit: Duration,
    /// Directory of the log files (`logdir`).
    pub logdir: Option<PathBuf>,
    /// Log files written there (`log measurements statistics tracking`).
    pub logs: Vec<String>,
    /// `ratelimit`: the limit applied per client in both answering paths.
    pub ratelimit: Option<ntp_common::RateLimit>,
    /// `ntsratelimit`: the limit on NTS-KE connections per client (chrony's default
    /// interval 6: one a 64 s, bursts of 8).
    pub nts_ratelimit: Option<ntp_common::RateLimit>,
    /// Client log size in records (`clientloglimit` bytes / 64); `None`: `noclientlog`.
    pub client_log: Option<u32>,
    /// Symmetric keys file (`keyfile`).
    pub keyfile: Option<PathBuf>,
    /// Zone of the tz database with leap seconds (`leapsectz`, e.g. right/UTC).
    pub leapsectz: Option<String>,
    /// User to run as once set up (`user`; `ntpxd -u` overrides it).
    pub user: Option<String>,
    /// `sched_priority`: run timekeeping under `SCHED_FIFO` at this priority (1-99).
    pub sched_priority: Option<i32>,
    /// `lock_all`: keep the daemon's memory locked in RAM.
    pub lock_all: bool,
    /// `server` and `pool` lines in file order.
    pub sources: Vec<SourceConfig>,
    /// `refclock` lines in file order.
    pub refclocks: Vec<RefclockConfig>,
    /// `hwtimestamp` lines in file order.
    pub hwtimestamp: Vec<HwTimestampConfig>,
    /// Selection and steering settings.
    pub sync: SyncConfig,
    /// `authselectmode` (default mix), already applied to `sources`.
    pub auth_select: AuthSelectMode,
    /// The NTS server (`ntsservercert`/`ntsserverkey` given).
    pub nts_server: NtsServerConfig,
    /// `ntstrustedcerts [SET] PATH`: certificates (PEM files or directories of them) NTS
    /// servers may present, by certificate set (`certset`; set 0 also holds the
    /// system's authorities unless `nosystemcert`).
    pub nts_trusted_certs: Vec<(u32, PathBuf)>,
    /// Whether the system's certificate authorities are trusted too (`nosystemcert`:
    /// no).
    pub nts_system_certs: bool,
    /// `ntsaeads`: the AEAD algorithms NTS may use, in order of preference (the client
    /// offers them so; the server takes the first of a client's it has here). Default
    /// chrony's: AES-128-GCM-SIV, then AES-SIV-CMAC-256.
    pub nts_aeads: Vec<crate::nts::Aead>,
    /// `ntsrefresh`: the longest an NTS source keeps the keys of one NTS-KE, seconds.
    pub nts_refresh: u32,
    /// Non-fatal problems found while parsing, in file order.
    pub warnings: Vec<ConfigWarning>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            local: None,
            acl_rules: Vec::new(),
            port: DEFAULT_PORT,
            bind_addresses: Vec::new(),
            driftfile: None,
            cmd_socket: Some(PathBuf::from(DEFAULT_CMD_SOCKET)),
            cmd_addresses: Vec::new(),
            cmd_acl_rules: Vec::new(),
            cmdport: DEFAULT_CMDPORT,
            open_commands: crate::control::DEFAULT_OPEN_COMMANDS
                .iter()
                .map(|c| (*c).to_string())
                .collect(),
            // chrony limits the command port only when asked; an exposed port is better
            // limited by default, with chrony's cmdratelimit defaults.
            cmd_ratelimit: rate_limit("cmdratelimit", &[], -4, false)
                .unwrap_or_else(|_| unreachable!("the defaults are valid")),
            pidfile: Some(PathBuf::from(DEFAULT_PIDFILE)),
            xdp_stale_limit: DEFAULT_XDP_STALE_LIMIT,
            logdir: None,
            logs: Vec::new(),
            leapsectz: None,
            keyfile: None,
            ratelimit: None,
            nts_ratelimit: None,
            client_log: Some(
                ntp_common::state::DEFAULT_CLIENTLOG_LIMIT / ntp_common::state::CLIENT_RECORD_BYTES,
            ),
            user: None,
            sched_priority: None,
            lock_all: false,
            sources: Vec::new(),
            refclocks: Vec::new(),
            hwtimestamp: Vec::new(),
            sync: SyncConfig::default(),
            auth_select: AuthSelectMode::default(),
            nts_server: NtsServerConfig::default(),
            nts_trusted_certs: Vec::new(),
            nts_system_certs: true,
            nts_aeads: crate::nts::Aead::ALL.to_vec(),
            nts_refresh: DEFAULT_NTS_REFRESH,
            warnings: Vec::new(),
        }
    }
}

/// Options of the `local` directive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalConfig {
    /// Stratum reported while the local reference is active (1-15).
    pub stratum: u8,
    /// Orphan mode: peers at the same stratum are assumed not to serve real time.
    pub orphan: bool,
    /// Root distance in seconds at which the local reference takes over.
    pub distance: f64,
    /// The local reference is used only once the root distance has been below this
    /// (seconds; 0: from the start).
    pub activate: f64,
    /// Least time since the last clock update before it takes over, seconds.
    pub wait_synced: f64,
    /// Least time unsynchronised before it takes over, seconds (`None`: 300 with
    /// `orphan`, else 0).
    pub wait_unsynced: Option<f64>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            stratum: 10,
            orphan: false,
            distance: 1.0,
            activate: 0.0,
            wait_synced: 0.0,
            wait_unsynced: None,
        }
    }
}

impl LocalConfig {
    /// Seconds unsynchronised before the local reference takes over.
    pub fn wait_unsynced(&self) -> f64 {
        self.wait_unsynced
            .unwrap_or(if self.orphan { 300.0 } else { 0.0 })
    }
}

/// A non-fatal problem in the configuration, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file the line came from.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What was ignored and why.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// A configuration that cannot be used; `line` is 0 when the file itself could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {}", file.display(), line, message)]
pub struct ConfigError {
    /// The file being parsed.
    pub file: PathBuf,
    /// 1-based line number, or 0 for file-level errors.
    pub line: usize,
    /// What is wrong, naming the bad token and what was expected.
    pub message: String,
}

/// Parses configuration text; `file` is only used in warnings and errors.
///
/// `include`, `confdir` and `sourcedir` find no files: text alone names none.
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut parser = Parser::new(&NoFiles, file);
    for (index, line) in text.lines().enumerate() {
        parser.line(index + 1, line)?;
    }
    parser.finish()
}

/// Reads and parses a configuration file, with the files it includes, through `fs`.
///
/// Bytes that are not UTF-8 are tolerated inside comments, since old configuration files
/// often carry Latin-1 remarks, but not in directives, where they would corrupt paths.
pub fn load(fs: &dyn ConfigFiles, path: &Path) -> Result<Config, ConfigError> {
    let mut parser = Parser::new(fs, path);
    parser.load_file(path, FileKind::Config)?;
    parser.finish()
}

/// chrony's NTS server directives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtsServerConfig {
    /// `ntsservercert` files (PEM chains), one per `ntsserverkey`.
    pub certs: Vec<PathBuf>,
    /// `ntsserverkey` files (PEM private keys).
    pub keys: Vec<PathBuf>,
    /// `ntsport` (default 4460).
    pub port: u16,
    /// `maxntsconnections` (default 100).
    pub max_connections: usize,
    /// `ntsntpserver`: the NTP server NTS-KE clients are sent to, if not this one.
    pub ntp_server: Option<String>,
    /// `ntsdumpdir`: where the cookie keys are kept across restarts.
    pub dump_dir: Option<PathBuf>,
    /// `ntsrotate` seconds (default one week; 0: never).
    pub rotate_secs: u64,
}

impl Default for NtsServerConfig {
    fn default() -> Self {
        NtsServerConfig {
            certs: Vec::new(),
            keys: Vec::new(),
            port: crate::nts::KE_PORT,
            max_connections: 100,
            ntp_server: None,
            dump_dir: None,
            rotate_secs: 604_800,
        }
    }
}

impl NtsServerConfig {
    /// Whether the NTS server runs.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }
}

/// chrony's `authselectmode`: the selection options authentication gives sources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthSelectMode {
    /// Unauthenticated sources are never selected (they get `noselect`).
    Require,
    /// With an authenticated source, unauthenticated ones get `noselect`.
    Prefer,
    /// With both kinds, authenticated sources get `require` and `trust`: unauthenticated
    /// ones count only where they agree with the authenticated majority.
    #[default]
    Mix,
    /// Authentication plays no part in selection.
    Ignore,
}

impl AuthSelectMode {
    /// Gives `sources` the options this mode implies (sources with `noselect` are left
    /// as they are and count as neither kind).
    pub fn apply(self, sources: &mut [SourceConfig]) {
        let counted = |s: &&mut SourceConfig| !s.noselect;
        let authenticated = |s: &SourceConfig| s.key.is_some() || s.nts;
        let any_auth = sources.iter().any(|s| !s.noselect && authenticated(s));
        let any_plain = sources.iter().any(|s| !s.noselect && !authenticated(s));
        for s in sources.iter_mut().filter(|s| counted(s)) {
            match (self, authenticated(s)) {
                (AuthSelectMode::Require, false) => s.noselect = true,
                (AuthSelectMode::Prefer, false) if any_auth => s.noselect = true,
                (AuthSelectMode::Mix, true) if any_plain => {
                    s.require = true;
                    s.trust = true;
                }
                _ => {}
            }
        }
    }
}

/// Deepest nesting of `include`/`confdir` (a loop of includes ends here, with an error).
const MAX_INCLUDE_DEPTH: usize = 10;

/// What a file may contain: a configuration, or (from `sourcedir`) only sources.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Config,
    Sources,
}

/// A file system with nothing in it.
struct NoFiles;

impl ConfigFiles for NoFiles {
    fn read(&self, _: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn list(&self, _: &Path) -> Option<Vec<(String, bool)>> {
        None
    }
}

impl Parser<'_> {
    /// The configuration, with `authselectmode` applied to its sources.
    fn finish(mut self) -> Result<Config, ConfigError> {
        let mode = self.config.auth_select;
        mode.apply(&mut self.config.sources);
        // As chronyd: TAI - UTC comes from the leap table.
        if self.config.leapsectz.is_none()
            && let Some(r) = self.config.refclocks.iter().find(|r| r.tai)
        {
            return Err(ConfigError {
                file: self.file.clone(),
                line: r.line,
                message: "refclock option tai requires leapsectz (TAI - UTC comes from it)"
                    .to_string(),
            });
        }
        // As chronyd: a rate limit needs the client log to keep its counts in.
        if let Some((file, line)) = self.noclientlog_at.take()
            && (self.config.ratelimit.is_some() || self.config.nts_ratelimit.is_some())
        {
            return Err(ConfigError {
                file,
                line,
                message: "noclientlog: rate limiting (ratelimit, ntsratelimit) needs the \
                          client log"
                    .to_string(),
            });
        }
        let n = &self.config.nts_server;
        if n.certs.len() != n.keys.len() {
            return Err(ConfigError {
                file: self.file.clone(),
                line: 0,
                message: format!(
                    "{} ntsservercert and {} ntsserverkey directives: each certificate needs \
                     its key",
                    n.certs.len(),
                    n.keys.len()
                ),
            });
        }
        Ok(self.config)
    }
}

struct Parser<'a> {
    fs: &'a dyn ConfigFiles,
    file: PathBuf,
    config: Config,
    depth: usize,
    kind: FileKind,
    /// Where a `noclientlog` directive was read, if one was.
    noclientlog_at: Option<(PathBuf, usize)>,
}

impl<'a> Parser<'a> {
    fn new(fs: &'a dyn ConfigFiles, file: &Path) -> Self {
        Parser {
            fs,
            file: file.to_path_buf(),
            config: Config::default(),
            depth: 0,
            kind: FileKind::Config,
            noclientlog_at: None,
        }
    }

    /// Parses `path` as a file of `kind`, then returns to the including file.
    fn load_file(&mut self, path: &Path, kind: FileKind) -> Result<(), ConfigError> {
        let bytes = self.fs.read(path).map_err(|err| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            message: format!("cannot read configuration file: {err}"),
        })?;
        let outer = (
            std::mem::replace(&mut self.file, path.to_path_buf()),
            self.kind,
        );
        self.kind = kind;
        self.depth += 1;
        let result = self.parse_bytes(&bytes);
        self.depth -= 1;
        (self.file, self.kind) = outer;
        result
    }

    fn parse_bytes(&mut self, bytes: &[u8]) -> Result<(), ConfigError> {
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let number = index + 1;
            if let Ok(line) = std::str::from_utf8(raw) {
                self.line(number, line)?;
            } else {
                let lossy = String::from_utf8_lossy(raw);
                let content = strip_comment(&lossy);
                if content.contains(char::REPLACEMENT_CHARACTER) {
                    return Err(self.error(number, "line is not valid UTF-8".to_string()));
                }
                self.line(number, content)?;
            }
        }
        Ok(())
    }

    /// `include PATTERN`, `confdir DIR...`, `sourcedir DIR...`: the files they name, in order.
    fn includes(&mut self, number: usize, name: &str, args: &[&str]) -> Result<(), ConfigError> {
        if self.depth > MAX_INCLUDE_DEPTH {
            return Err(self.error(
                number,
                format!("{name} nested more than {MAX_INCLUDE_DEPTH} deep (an include loop?)"),
            ));
        }
        if args.is_empty() {
            return Err(self.error(number, missing(name, "a path")));
        }
        let (files, kind) = match name {
            "include" => {
                let mut files = Vec::new();
                for pattern in args {
                    files.extend(files::glob(self.fs, Path::new(pattern)));
                }
                (files, FileKind::Config)
            }
            "confdir" => (files::dir_files(self.fs, args, "conf"), FileKind::Config),
            _ => (
                files::dir_files(self.fs, args, "sources"),
                FileKind::Sources,
            ),
        };
        for f in files {
            self.load_file(&f, kind)?;
        }
        Ok(())
    }

    fn error(&self, line: usize, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line,
            message,
        }
    }

    fn warn(&mut self, line: usize, message: String) {
        self.config.warnings.push(ConfigWarning {
            file: self.file.clone(),
            line,
            message,
        });
    }

    fn line(&mut self, number: usize, text: &str) -> Result<(), ConfigError> {
        let mut tokens = strip_comment(text).split_whitespace();
        let Some(name) = tokens.next() else {
            return Ok(());
        };
        let args: Vec<&str> = tokens.collect();
        let lower = name.to_ascii_lowercase();
        if self.kind == FileKind::Sources
            && !matches!(lower.as_str(), "server" | "pool" | "peer" | "refclock")
        {
            return Err(self.error(number, format!("directive \"{name}\" is not allowed in a sources file (only server, pool, peer, refclock)")));
        }
        if matches!(lower.as_str(), "include" | "confdir" | "sourcedir") {
            return self.includes(number, &lower, &args);
        }
        self.directive(number, name, &args)
            .map_err(|message| self.error(number, message))
    }

    /// Applies one directive; the error is a message without location.
    fn directive(&mut self, line: usize, name: &str, args: &[&str]) -> Result<(), String> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "local" => {
                let local = Self::local(args)?;
                self.config.local = Some(local);
            }
            "allow" => self
                .config
                .acl_rules
                .push(acl_rule("allow", Action::Allow, args)?),
            "deny" => self
                .config
                .acl_rules
                .push(acl_rule("deny", Action::Deny, args)?),
            "cmdallow" => {
                self.config
                    .cmd_acl_rules
                    .push(acl_rule("cmdallow", Action::Allow, args)?);
            }
            "cmddeny" => self
                .config
                .cmd_acl_rules
                .push(acl_rule("cmddeny", Action::Deny, args)?),
            "port" => self.config.port = port("port", args)?,
            "cmdport" => self.config.cmdport = port("cmdport", args)?,
            "bindaddress" => {
                let token = single_arg("bindaddress", args, "an IPv4 or IPv6 address")?;
                let addr = IpAddr::from_str(token).map_err(|_| {
                    invalid("address", token, "bindaddress", "an IPv4 or IPv6 address")
                })?;
                replace_same_family(&mut self.config.bind_addresses, addr);
            }
            "bindcmdaddress" => self.bindcmdaddress(args)?,
            "driftfile" => self.driftfile(line, args)?,
            "pidfile" => {
                let token = single_arg("pidfile", args, "a file path, or / to disable")?;
                // chrony documents "/" as the way to turn the PID file off.
                self.config.pidfile = (token != "/").then(|| PathBuf::from(token));
            }
            "xdpstalelimit" => self.config.xdp_stale_limit = xdp_stale_limit(args)?,
            "user" => self.config.user = Some(single_arg("user", args, "a user name")?.to_string()),
            "noclientlog" => {
                self.config.client_log = None;
                self.noclientlog_at = Some((self.file.clone(), line));
            }
            "lock_all" => self.config.lock_all = true,
            "sched_priority" => {
                const PRIORITY: &str = "a priority from 0 (off) to 99";
                let v = single_arg("sched_priority", args, PRIORITY)?;
                let p = parse_uint::<i32>(v)
                    .filter(|p| *p <= 99)
                    .ok_or_else(|| invalid("priority", v, "sched_priority", PRIORITY))?;
                self.config.sched_priority = (p > 0).then_some(p);
            }
            "ratelimit" => self.config.ratelimit = Some(rate_limit("ratelimit", args, 3, true)?),
            "ntsratelimit" => {
                self.config.nts_ratelimit = Some(rate_limit("ntsratelimit", args, 6, false)?);
            }
            "cmdratelimit" => {
                self.config.cmd_ratelimit = rate_limit("cmdratelimit", args, -4, false)?;
            }
            "opencommands" => {
                let mut open = Vec::new();
                for c in args {
                    let c = c.to_ascii_lowercase();
                    if !crate::control::OPENABLE_COMMANDS.contains(&c.as_str()) {
                        return Err(invalid(
                            "command",
                            &c,
                            "opencommands",
                            &crate::control::OPENABLE_COMMANDS.join(", "),
                        ));
                    }
                    open.push(c);
                }
                self.config.open_commands = open;
            }
            "clientloglimit" => {
                let v = single_arg("clientloglimit", args, "a size in bytes")?;
                let bytes = parse_uint::<u32>(v)
                    .ok_or_else(|| invalid("limit", v, "clientloglimit", "a size in bytes"))?;
                let mut records = (bytes / ntp_common::state::CLIENT_RECORD_BYTES).max(1);
                if records > MAX_CLIENT_RECORDS {
                    // Kernel memory (the LRU map is allocated whole) and the time a
                    // `clients` dump takes both grow with it.
                    self.warn(
                        line,
                        format!(
                            "clientloglimit {bytes} is more than ntpx keeps; using {} bytes \
                             ({MAX_CLIENT_RECORDS} clients)",
                            MAX_CLIENT_RECORDS * ntp_common::state::CLIENT_RECORD_BYTES
                        ),
                    );
                    records = MAX_CLIENT_RECORDS;
                }
                if self.config.client_log.is_some() {
                    self.config.client_log = Some(records);
                }
            }
            "ntstrustedcerts" => {
                // chrony's optional set number first (0 by default).
                let (set, path) = match args {
                    [p] => (0, *p),
                    [set, p] => (
                        parse_uint::<u32>(set).ok_or_else(|| {
                            format!(
                                "ntstrustedcerts: invalid certificate set \"{set}\" \
                                 (expected 0 through 4294967295)"
                            )
                        })?,
                        *p,
                    ),
                    _ => return Err(missing("ntstrustedcerts", "[SET] FILE|DIRECTORY")),
                };
                self.config
                    .nts_trusted_certs
                    .push((set, PathBuf::from(path)));
            }
            "nosystemcert" => self.config.nts_system_certs = false,
            "ntsaeads" => {
                // As chrony: numbers this build does not support are passed over (with
                // a warning here); a list left empty would make NTS impossible.
                if args.is_empty() {
                    return Err(missing("ntsaeads", "AEAD algorithm IDs (15, 30)"));
                }
                let mut aeads = Vec::new();
                for a in args {
                    // Any number chrony takes (up to INT_MAX) is read; unknown ones
                    // are passed over.
                    let id = parse_uint::<u32>(a)
                        .filter(|n| i32::try_from(*n).is_ok())
                        .ok_or_else(|| invalid("ID", a, "ntsaeads", "15 or 30"))?;
                    match u16::try_from(id).ok().and_then(crate::nts::Aead::from_id) {
                        Some(aead) if !aeads.contains(&aead) => aeads.push(aead),
                        Some(_) => {}
                        None => self.warn(
                            line,
                            format!("ntsaeads: AEAD algorithm {id} is not supported (15, 30)"),
                        ),
                    }
                }
                if aeads.is_empty() {
                    return Err("ntsaeads: none of the algorithms is supported \
                                (expected 15 or 30)"
                        .into());
                }
                self.config.nts_aeads = aeads;
            }
            "ntsrefresh" => {
                let v = single_arg("ntsrefresh", args, "seconds")?;
                // chrony's range: 0 (an NTS-KE before every request) to INT_MAX.
                self.config.nts_refresh = parse_uint::<u32>(v)
                    .filter(|n| i32::try_from(*n).is_ok())
                    .ok_or_else(|| {
                        invalid("interval", v, "ntsrefresh", "seconds, 0 to 2147483647")
                    })?;
            }
            "ntsservercert" => {
                let v = single_arg("ntsservercert", args, "a file path")?;
                self.config.nts_server.certs.push(PathBuf::from(v));
            }
            "ntsserverkey" => {
                let v = single_arg("ntsserverkey", args, "a file path")?;
                self.config.nts_server.keys.push(PathBuf::from(v));
            }
            "ntsport" => {
                let v = single_arg("ntsport", args, "a port number")?;
                self.config.nts_server.port = parse_uint::<u16>(v)
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid("port", v, "ntsport", "a port number"))?;
            }
            "maxntsconnections" => {
                let v = single_arg("maxntsconnections", args, "a number of connections")?;
                self.config.nts_server.max_connections = parse_uint::<usize>(v)
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        invalid("number", v, "maxntsconnections", "1 to 10000 connections")
                    })?;
            }
            "ntsntpserver" => {
                let v = single_arg("ntsntpserver", args, "a host name or address")?;
                self.config.nts_server.ntp_server = Some(v.to_string());
            }
            // `ntscachedir`: chrony's earlier name for it, still read.
            "ntsdumpdir" | "ntscachedir" => {
                let v = single_arg(&lower, args, "a directory")?;
                self.config.nts_server.dump_dir = Some(PathBuf::from(v));
            }
            "ntsrotate" => {
                let v = single_arg("ntsrotate", args, "seconds")?;
                self.config.nts_server.rotate_secs = parse_uint::<u64>(v)
                    .ok_or_else(|| invalid("interval", v, "ntsrotate", "seconds"))?;
            }
            "keyfile" => {
                self.config.keyfile =
                    Some(PathBuf::from(single_arg("keyfile", args, "a file path")?));
            }
            "leapsectz" => {
                let zone = single_arg("leapsectz", args, "a zone name such as right/UTC")?;
                self.config.leapsectz = Some(zone.to_string());
            }
            "logdir" => {
                self.config.logdir =
                    Some(PathBuf::from(single_arg("logdir", args, "a directory")?));
            }
            "log" => {
                if args.is_empty() {
                    return Err(missing(
                        "log",
                        "measurements, statistics, tracking, rtc, refclocks or tempcomp",
                    ));
                }
                for kind in args {
                    match kind.to_ascii_lowercase().as_str() {
                        k @ ("measurements" | "statistics" | "tracking") => {
                            self.config.logs.push(k.to_string());
                        }
                        // chrony's other logs have nothing to record in ntpx yet.
                        "rawmeasurements" | "rtc" | "refclocks" | "tempcomp" | "selection" => self
                            .warn(
                                line,
                                format!("log \"{kind}\" is not supported yet and is ignored"),
                            ),
                        _ => {
                            return Err(invalid(
                                "log",
                                kind,
                                "log",
                                "measurements, statistics, tracking, rtc, refclocks, tempcomp or selection",
                            ));
                        }
                    }
                }
            }
            "server" | "pool" => {
                let kind = if lower == "server" {
                    SourceKind::Server
                } else {
                    SourceKind::Pool
                };
                let (mut source, warnings) = sources::parse_source(kind, line, args)?;
                source.from_sourcedir = self.kind == FileKind::Sources;
                self.config.sources.push(source);
                for w in warnings {
                    self.warn(line, w);
                }
            }
            "refclock" => {
                if self.kind == FileKind::Sources {
                    // `ntpxc reload sources` adds and removes NTP sources only.
                    return Err("refclock in a sourcedir file is not supported yet; put it \
                                in the main configuration"
                        .to_string());
                }
                let r = refclocks::parse_refclock(line, args)?;
                self.config.refclocks.push(r);
            }
            "hwtimestamp" => {
                let h = hwtimestamp::parse_hwtimestamp(line, args)?;
                self.config.hwtimestamp.push(h);
            }
            "smoothtime" | "leapseclist" | "binddevice" | "bindcmddevice" => {
                return Err(fail_closed(&lower));
            }
            "authselectmode" => {
                let mode = single_arg(&lower, args, "require, prefer, mix or ignore")?;
                self.config.auth_select = match mode.to_ascii_lowercase().as_str() {
                    "require" => AuthSelectMode::Require,
                    "prefer" => AuthSelectMode::Prefer,
                    "mix" => AuthSelectMode::Mix,
                    "ignore" => AuthSelectMode::Ignore,
                    _ => {
                        return Err(invalid(
                            "mode",
                            mode,
                            "authselectmode",
                            "require, prefer, mix or ignore",
                        ));
                    }
                };
            }
            "leapsecmode" => {
                let mode = single_arg(&lower, args, "system, step, slew or ignore")?;
                match mode.to_ascii_lowercase().as_str() {
                    // The kernel inserts or deletes the second: chrony's default on Linux.
                    "system" => {}
                    "step" | "slew" | "ignore" => {
                        return Err(format!(
                            "leapsecmode {mode} is not supported yet (only system: the kernel \
                             applies the leap second); refusing to handle leap seconds \
                             differently from what this configuration asks"
                        ));
                    }
                    _ => {
                        return Err(invalid(
                            "mode",
                            mode,
                            "leapsecmode",
                            "system, step, slew or ignore",
                        ));
                    }
                }
            }
            sync if sources::sync_directive(&mut self.config.sync, sync, args)? => {}
            known if UNSUPPORTED_DIRECTIVES.contains(&known) => self.warn(
                line,
                format!("directive \"{name}\" is not supported yet and is ignored"),
            ),
            _ => self.warn(line, format!("unknown directive \"{name}\" ignored")),
        }
        Ok(())
    }

    fn local(args: &[&str]) -> Result<LocalConfig, String> {
        const STRATUM: &str = "an integer 1-15";
        const SECONDS: &str = "a non-negative number of seconds";
        let mut local = LocalConfig::default();
        let mut rest = args.iter();
        while let Some(&option) = rest.next() {
            let lower = option.to_ascii_lowercase();
            match lower.as_str() {
                "orphan" => local.orphan = true,
                "stratum" => {
                    let value = option_value(&mut rest, "stratum", "local", STRATUM)?;
                    local.stratum = parse_uint::<u8>(value)
                        .filter(|s| (1..=15).contains(s))
                        .ok_or_else(|| invalid("stratum", value, "local", STRATUM))?;
                }
                "distance" => {
                    let value = option_value(&mut rest, "distance", "local", SECONDS)?;
                    local.distance = parse_float(value)
                        .filter(|d| *d >= 0.0)
                        .ok_or_else(|| invalid("distance", value, "local", SECONDS))?;
                }
                "activate" | "waitsynced" | "waitunsynced" => {
                    let value = option_value(&mut rest, &lower, "local", SECONDS)?;
                    let v = parse_float(value)
                        .filter(|d| *d >= 0.0)
                        .ok_or_else(|| invalid(&lower, value, "local", SECONDS))?;
                    match lower.as_str() {
                        "activate" => local.activate = v,
                        "waitsynced" => local.wait_synced = v,
                        _ => local.wait_unsynced = Some(v),
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown option \"{option}\" in local directive (expected stratum, \
                         orphan, distance, activate, waitsynced or waitunsynced)"
                    ));
                }
            }
        }
        Ok(local)
    }

    fn bindcmdaddress(&mut self, args: &[&str]) -> Result<(), String> {
        const EXPECTED: &str = "an IP address, an absolute socket path, or / to disable";
        let token = single_arg("bindcmdaddress", args, EXPECTED)?;
        if token == "/" {
            self.config.cmd_socket = None;
        } else if token.starts_with('/') {
            self.config.cmd_socket = Some(PathBuf::from(token));
        } else {
            let addr = IpAddr::from_str(token)
                .map_err(|_| invalid("address", token, "bindcmdaddress", EXPECTED))?;
            replace_same_family(&mut self.config.cmd_addresses, addr);
        }
        Ok(())
    }

    fn driftfile(&mut self, line: usize, args: &[&str]) -> Result<(), String> {
        const SECONDS: &str = "a positive number of seconds";
        let Some((&path, options)) = args.split_first() else {
            return Err(missing("driftfile", "a file path"));
        };
        let mut rest = options.iter();
        while let Some(&option) = rest.next() {
            if !option.eq_ignore_ascii_case("interval") {
                return Err(format!(
                    "unknown option \"{option}\" in driftfile directive (expected interval)"
                ));
            }
            let value = option_value(&mut rest, "interval", "driftfile", SECONDS)?;
            parse_float(value)
                .filter(|v| *v > 0.0)
                .ok_or_else(|| invalid("interval", value, "driftfile", SECONDS))?;
            self.warn(
                line,
                format!(
                    "option \"{option}\" of driftfile directive is not supported yet and is \
                     ignored"
                ),
            );
        }
        self.config.driftfile = Some(PathBuf::from(path));
        Ok(())
    }
}

/// Returns the part of a line before any comment.
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (index, c) in line.char_indices() {
        if after_space && COMMENT_CHARS.contains(&c) {
            return &line[..index];
        }
        after_space = c.is_whitespace();
    }
    line
}

fn acl_rule(directive: &str, action: Action, args: &[&str]) -> Result<Rule, String> {
    let (all, rest) = match args.split_first() {
        Some((first, rest)) if first.eq_ignore_ascii_case("all") => (true, rest),
        _ => (false, args),
    };
    let target = match rest {
        [] => Target::Everything,
        [token] => Target::parse(token).map_err(|err| acl_message(err, directive))?,
        [_, extra, ..] => {
            return Err(format!(
                "unexpected argument \"{extra}\" in {directive} directive \
                 (expected [all] [SUBNET])"
            ));
        }
    };
    Ok(Rule {
        action,
        all,
        target,
    })
}

fn acl_message(err: AclError, directive: &str) -> String {
    match err {
        AclError::Invalid {
            what,
            token,
            expected,
        } => invalid(what, &token, directive, &expected),
        other => format!("{other} in {directive} directive"),
    }
}

fn port(directive: &str, args: &[&str]) -> Result<u16, String> {
    const EXPECTED: &str = "an integer 0-65535";
    let token = single_arg(directive, args, EXPECTED)?;
    parse_uint(token).ok_or_else(|| invalid("port", token, directive, EXPECTED))
}

fn xdp_stale_limit(args: &[&str]) -> Result<Duration, String> {
    const EXPECTED: &str = "a number of seconds greater than 0 and at most 600";
    let token = single_arg("xdpstalelimit", args, EXPECTED)?;
    parse_float(token)
        .filter(|secs| *secs > 0.0)
        .map(Duration::from_secs_f64)
        // Tiny values round to zero nanoseconds, which would disable the check entirely.
        .filter(|limit| !limit.is_zero() && *limit <= MAX_XDP_STALE_LIMIT)
        .ok_or_else(|| invalid("stale limit", token, "xdpstalelimit", EXPECTED))
}

/// chrony accepts only one address per family, a later one replacing the earlier.
fn replace_same_family(list: &mut Vec<IpAddr>, addr: IpAddr) {
    list.retain(|existing| existing.is_ipv4() != addr.is_ipv4());
    list.push(addr);
}

/// `ratelimit [interval I] [burst B] [leak L] [kod K]` with chrony's defaults (3, 8, 2, 0).
/// `ratelimit` and `cmdratelimit` (which has no `kod` and a shorter default interval).
fn rate_limit(
    directive: &str,
    args: &[&str],
    default_interval: i32,
    kod_allowed: bool,
) -> Result<ntp_common::RateLimit, String> {
    let (mut interval, mut burst, mut leak, mut kod) = (default_interval, 8u64, 2u8, 0u8);
    let mut rest = args.iter();
    while let Some(&option) = rest.next() {
        let lower = option.to_ascii_lowercase();
        // chrony reads any of -32 to 32 and clamps it to what its rate limiter takes
        // (bursts up to 255 are read too, as earlier versions did).
        let (clamp, top) = match lower.as_str() {
            "interval" => ((-19, 12), 32),
            "burst" => ((1, 255), 255),
            "leak" => ((1, 4), 32),
            "kod" if kod_allowed => ((0, 4), 32),
            _ => {
                return Err(format!(
                    "unknown option \"{option}\" in {directive} directive (expected interval, burst, leak{})",
                    if kod_allowed { " or kod" } else { "" }
                ));
            }
        };
        let expected = format!("an integer from -32 to {top}");
        let v = option_value(&mut rest, &lower, directive, &expected)?;
        let n = v
            .parse::<i32>()
            .ok()
            .filter(|n| (-32..=top).contains(n))
            .ok_or_else(|| invalid(&lower, v, directive, &expected))?
            .clamp(clamp.0, clamp.1);
        match lower.as_str() {
            "interval" => interval = n,
            "burst" => burst = n as u64,
            "leak" => leak = n as u8,
            _ => kod = n as u8,
        }
    }
    Ok(ntp_common::RateLimit {
        interval_ns: (2f64.powi(interval) * 1e9) as u64,
        burst,
        leak,
        kod,
    })
}

fn single_arg<'t>(directive: &str, args: &[&'t str], expected: &str) -> Result<&'t str, String> {
    match args {
        [] => Err(missing(directive, expected)),
        [token] => Ok(token),
        [_, extra, ..] => Err(format!(
            "unexpected argument \"{extra}\" in {directive} directive \
             (expected only {expected})"
        )),
    }
}

fn option_value<'t>(
    rest: &mut std::slice::Iter<'_, &'t str>,
    option: &str,
    directive: &str,
    expected: &str,
) -> Result<&'t str, String> {
    rest.next().copied().ok_or_else(|| {
        format!("missing value for {option} in {directive} directive (expected {expected})")
    })
}

/// The refusal for a directive ntpxd cannot honour yet and must not run without: its
/// absence would weaken what the operator configured (fail closed).
fn fail_closed(directive: &str) -> String {
    let what = match directive {
        "smoothtime" => "the smoothing its clients expect (a leap smear)",
        "leapseclist" => "the leap seconds that list announces",
        "binddevice" => "keeping the NTP port to that interface",
        "bindcmddevice" => "keeping the command port to that interface",
        _ => "the NTS service its clients expect",
    };
    format!(
        "directive \"{directive}\" is not supported yet; refusing to start without {what} \
         (remove the line to run without it)"
    )
}

fn missing(directive: &str, expected: &str) -> String {
    format!("missing argument in {directive} directive (expected {expected})")
}

fn invalid(what: &str, token: &str, directive: &str, expected: &str) -> String {
    format!("invalid {what} \"{token}\" in {directive} directive (expected {expected})")
}

/// Plain decimal only: `FromStr` would also take a leading `+`, which chrony does not.
fn parse_uint<T: FromStr>(token: &str) -> Option<T> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

fn parse_float(token: &str) -> Option<f64> {
    token.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Subnet;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new("/etc/ntpx.conf"))
    }

    fn warnings(config: &Config) -> Vec<(usize, String)> {
        config
            .warnings
            .iter()
            .map(|w| (w.line, w.message.clone()))
            .collect()
    }

    fn unsupported(line: usize, name: &str) -> (usize, String) {
        (
            line,
            format!("directive \"{name}\" is not supported yet and is ignored"),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // seed.conf from shared/fixtures (copied into tests/fixtures): a user's configuration with ntpx's first target features.
    const SEED: &str = include_str!("../../tests/fixtures/chrony-conf/seed.conf");

    // debian-default.conf from shared/fixtures (copied into tests/fixtures): Debian's packaged chrony.conf.
    const DEBIAN_DEFAULT: &str =
        include_str!("../../tests/fixtures/chrony-conf/debian-default.conf");

    // chrony.conf.example1 from shared/fixtures (copied into tests/fixtures): chrony's minimal example.
    const EXAMPLE1: &str = include_str!("../../tests/fixtures/chrony-conf/chrony.conf.example1");

    // chrony.conf.example2 from shared/fixtures (copied into tests/fixtures): chrony's distribution example.
    const EXAMPLE2: &str = include_str!("../../tests/fixtures/chrony-conf/chrony.conf.example2");

    // chrony.conf.example3 from shared/fixtures (copied into tests/fixtures): chrony's annotated example with every option commented out.
    const EXAMPLE3: &str = include_str!("../../tests/fixtures/chrony-conf/chrony.conf.example3");

    #[test]
    fn defaults_match_documentation() {
        let config = Config::default();
        assert_eq!(config.port, 123);
        assert_eq!(config.cmdport, 323);
        assert_eq!(
            config.cmd_socket,
            Some(PathBuf::from("/run/ntpx/ntpxd.sock"))
        );
        assert_eq!(config.pidfile, Some(PathBuf::from("/run/ntpx/ntpxd.pid")));
        assert_eq!(config.xdp_stale_limit, Duration::from_secs(10));
        assert!(config.local.is_none() && config.acl_rules.is_empty());
        assert!(config.bind_addresses.is_empty() && config.cmd_addresses.is_empty());
        assert!(config.driftfile.is_none() && config.warnings.is_empty());
        assert_eq!(parse("").unwrap(), config);
    }

    #[test]
    fn seed_file_parses_with_expected_warnings() {
        let config = parse(SEED).unwrap();
        assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
        assert_eq!(config.keyfile, Some(PathBuf::from("/etc/chrony.keys")));
        assert_eq!(config.logdir, Some(PathBuf::from("/var/log/chrony")));
        assert_eq!(config.sources.len(), 1);
        let pool = &config.sources[0];
        assert_eq!(
            (pool.kind, pool.name.as_str(), pool.iburst, pool.line),
            (SourceKind::Pool, "2.pl.pool.ntp.org", true, 1)
        );
        assert_eq!(config.sync.makestep, Some((1.0, 3)));
        assert!(config.sync.rtcsync);
        assert_eq!(
            config.acl_rules,
            vec![Rule {
                action: Action::Allow,
                all: false,
                target: Target::Subnet(Subnet::parse("192.168.0.0/16").unwrap()),
            }]
        );
        assert_eq!(
            config.local,
            Some(LocalConfig {
                stratum: 3,
                ..LocalConfig::default()
            })
        );
        assert_eq!(
            config.driftfile,
            Some(PathBuf::from("/var/lib/chrony/drift"))
        );
        assert_eq!(config.port, DEFAULT_PORT);
    }

    #[test]
    fn debian_default_parses_with_expected_warnings() {
        let config = parse(DEBIAN_DEFAULT).unwrap();
        assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
        assert_eq!(
            config.nts_server.dump_dir,
            Some(PathBuf::from("/var/lib/chrony"))
        );
        assert_eq!(
            config.driftfile,
            Some(PathBuf::from("/var/lib/chrony/chrony.drift"))
        );
        assert!(config.acl_rules.is_empty() && config.local.is_none());
    }

    #[test]
    fn chrony_examples_parse_with_expected_warnings() {
        let config = parse(EXAMPLE1).unwrap();
        assert!(warnings(&config).is_empty());
        assert_eq!(config.sources[0].name, "pool.ntp.org");
        assert_eq!(
            config.driftfile,
            Some(PathBuf::from("/var/lib/chrony/drift"))
        );

        let config = parse(EXAMPLE2).unwrap();
        assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
        // The commented-out allow and local lines must stay inert.
        assert!(config.acl_rules.is_empty() && config.local.is_none());

        let config = parse(EXAMPLE3).unwrap();
        assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
        assert_eq!(
            config.driftfile,
            Some(PathBuf::from("/var/lib/chrony/drift"))
        );
        assert!(config.acl_rules.is_empty() && config.local.is_none());
        assert_eq!(config.cmd_addresses, Vec::<IpAddr>::new());
    }

    #[test]
    fn uncommented_example3_lines_parse() {
        // Every "! directive" line in chrony's example is meant to be enabled by removing
        // the "!"; doing so for all of them must be accepted, except the lines that ask for
        // what ntpx cannot do yet, which refuse to start (fail closed) naming their line.
        const REFUSED: &[&str] = &["leapsecmode slew"];
        // Lines that exclude another one the example enables, as chronyd refuses them
        // together (noclientlog with its ratelimit): enabled alone below.
        const EXCLUSIVE: &[&str] = &["noclientlog"];
        let mut refused = Vec::new();
        let enabled: String = EXAMPLE3
            .lines()
            // "! a comment" documents the comment syntax rather than a directive.
            .map(|l| match l {
                "! a comment" => l,
                _ => l.strip_prefix("! ").unwrap_or(l),
            })
            .enumerate()
            .map(|(i, l)| {
                if EXCLUSIVE.iter().any(|r| l.starts_with(r)) {
                    assert!(parse(l).is_ok(), "{l}");
                    return "#".to_string();
                }
                if REFUSED.iter().any(|r| l.starts_with(r)) {
                    refused.push((i + 1, l));
                    return "#".to_string();
                }
                l.to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(refused.len(), 1, "{refused:?}");
        for (line, text) in refused {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, 1);
            assert!(
                e.message.contains("not supported yet"),
                "{line}: {}",
                e.message
            );
        }
        let config = parse(&enabled).unwrap();
        let table = crate::acl::AccessTable::from_rules(&config.acl_rules, |_| Ok(vec![])).unwrap();
        assert_eq!(table.check(ip("192.168.1.1")), Action::Allow);
        assert_eq!(table.check(ip("192.168.100.1")), Action::Deny);
        assert_eq!(config.local.map(|l| l.stratum), Some(10));
        assert_eq!(
            config.pidfile,
            Some(PathBuf::from("/var/run/chrony/chronyd.pid"))
        );
        assert_eq!(config.cmd_addresses, vec![ip("0.0.0.0"), ip("::")]);
        assert!(
            config
                .warnings
                .iter()
                .all(|w| w.message.contains("not supported yet"))
        );
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.message.contains("\"mailonchange\""))
        );
    }

    #[test]
    fn broken_lines_report_token_expectation_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                "local stratum x",
                "invalid stratum \"x\" in local directive (expected an integer 1-15)",
            ),
            (
                "local stratum 0",
                "invalid stratum \"0\" in local directive (expected an integer 1-15)",
            ),
            (
                "local stratum 16",
                "invalid stratum \"16\" in local directive (expected an integer 1-15)",
            ),
            (
                "local stratum",
                "missing value for stratum in local directive (expected an integer 1-15)",
            ),
            (
                "local stratum 3 foo",
                "unknown option \"foo\" in local directive (expected stratum, orphan, \
                 distance, activate, waitsynced or waitunsynced)",
            ),
            (
                "local distance -1",
                "invalid distance \"-1\" in local directive \
                 (expected a non-negative number of seconds)",
            ),
            (
                "local distance nan",
                "invalid distance \"nan\" in local directive \
                 (expected a non-negative number of seconds)",
            ),
            (
                "local waitsynced soon",
                "invalid waitsynced \"soon\" in local directive \
                 (expected a non-negative number of seconds)",
            ),
            (
                "allow 10.0.0.0/33",
                "invalid prefix length \"33\" in allow directive (expected an integer 0-32)",
            ),
            (
                "deny 300.1.1.1",
                "invalid address \"300.1.1.1\" in deny directive (expected an IPv4 or IPv6 \
                 address, optionally followed by /PREFIX)",
            ),
            (
                "allow all 2001:db8::/200",
                "invalid prefix length \"200\" in allow directive (expected an integer 0-128)",
            ),
            (
                "allow 10.0.0.0/8 192.168.0.0/16",
                "unexpected argument \"192.168.0.0/16\" in allow directive \
                 (expected [all] [SUBNET])",
            ),
            (
                "deny bad_host!",
                "invalid subnet or hostname \"bad_host!\" in deny directive (expected \
                 ADDRESS, ADDRESS/PREFIX, a partial IPv4 address like 192.168, or a hostname)",
            ),
            (
                "port",
                "missing argument in port directive (expected an integer 0-65535)",
            ),
            (
                "port 65536",
                "invalid port \"65536\" in port directive (expected an integer 0-65535)",
            ),
            (
                "port +123",
                "invalid port \"+123\" in port directive (expected an integer 0-65535)",
            ),
            (
                "port 123 456",
                "unexpected argument \"456\" in port directive \
                 (expected only an integer 0-65535)",
            ),
            (
                "cmdport -1",
                "invalid port \"-1\" in cmdport directive (expected an integer 0-65535)",
            ),
            (
                "bindaddress eth0",
                "invalid address \"eth0\" in bindaddress directive \
                 (expected an IPv4 or IPv6 address)",
            ),
            (
                "bindaddress",
                "missing argument in bindaddress directive (expected an IPv4 or IPv6 address)",
            ),
            (
                "bindcmdaddress run/ntpx.sock",
                "invalid address \"run/ntpx.sock\" in bindcmdaddress directive (expected an \
                 IP address, an absolute socket path, or / to disable)",
            ),
            (
                "driftfile",
                "missing argument in driftfile directive (expected a file path)",
            ),
            (
                "driftfile /var/lib/drift hourly",
                "unknown option \"hourly\" in driftfile directive (expected interval)",
            ),
            (
                "driftfile /var/lib/drift interval 0",
                "invalid interval \"0\" in driftfile directive \
                 (expected a positive number of seconds)",
            ),
            (
                "pidfile /a /b",
                "unexpected argument \"/b\" in pidfile directive \
                 (expected only a file path, or / to disable)",
            ),
            (
                "xdpstalelimit 0",
                "invalid stale limit \"0\" in xdpstalelimit directive \
                 (expected a number of seconds greater than 0 and at most 600)",
            ),
            (
                "xdpstalelimit 600.5",
                "invalid stale limit \"600.5\" in xdpstalelimit directive \
                 (expected a number of seconds greater than 0 and at most 600)",
            ),
            (
                "xdpstalelimit 1e-300",
                "invalid stale limit \"1e-300\" in xdpstalelimit directive \
                 (expected a number of seconds greater than 0 and at most 600)",
            ),
            (
                "XDPSTALELIMIT ten",
                "invalid stale limit \"ten\" in xdpstalelimit directive \
                 (expected a number of seconds greater than 0 and at most 600)",
            ),
        ];
        for (index, &(broken, message)) in cases.iter().enumerate() {
            // Vary the position so a wrong line count cannot pass by accident.
            let preamble = "# comment\n\nport 123\n".repeat(index % 3);
            let line = preamble.lines().count() + 1;
            let text = format!("{preamble}{broken}\nrtcsync\n");
            let err = parse(&text).expect_err(broken);
            assert_eq!(err.line, line, "{broken}");
            assert_eq!(err.message, message, "{broken}");
            assert_eq!(err.to_string(), format!("/etc/ntpx.conf:{line}: {message}"));
        }
    }

    #[test]
    fn comments_start_at_line_start_or_after_whitespace() {
        let config = parse(
            "  # indented comment\n\
             ; semicolon\n\
             % percent\n\
             ! bang\n\
             driftfile /var/lib/a#b   # trailing comment\n\
             port 1123 ;trailing\n\
             pidfile /run/x%y\n",
        )
        .unwrap();
        assert!(config.warnings.is_empty());
        assert_eq!(config.driftfile, Some(PathBuf::from("/var/lib/a#b")));
        assert_eq!(config.port, 1123);
        assert_eq!(config.pidfile, Some(PathBuf::from("/run/x%y")));
    }

    #[test]
    fn directive_names_are_case_insensitive_and_crlf_is_accepted() {
        let config = parse("PORT 4123\r\nLocal Stratum 5 ORPHAN\r\nMakeStep 1 3\r\n").unwrap();
        assert_eq!(config.port, 4123);
        assert_eq!(
            config.local,
            Some(LocalConfig {
                stratum: 5,
                orphan: true,
                ..LocalConfig::default()
            })
        );
        assert!(warnings(&config).is_empty());
        assert_eq!(config.sync.makestep, Some((1.0, 3)));
    }

    #[test]
    fn unknown_directives_warn_once_per_line() {
        let config = parse("restrict default nomodify\nserver a.example iburst\n").unwrap();
        assert_eq!(
            warnings(&config),
            vec![(1, "unknown directive \"restrict\" ignored".to_string())]
        );
    }

    #[test]
    fn local_options() {
        let local = |text: &str| parse(text).unwrap().local;
        assert_eq!(local("local"), Some(LocalConfig::default()));
        assert_eq!(LocalConfig::default().stratum, 10);
        assert_eq!(
            local("local orphan distance 0.25 stratum 15"),
            Some(LocalConfig {
                stratum: 15,
                orphan: true,
                distance: 0.25,
                ..LocalConfig::default()
            })
        );
        assert_eq!(
            local("local stratum 4\nlocal stratum 6").map(|l| l.stratum),
            Some(6)
        );
        let config = parse("local stratum 2 activate 0.5 waitsynced 7200 waitunsynced 30").unwrap();
        assert!(warnings(&config).is_empty());
        let l = config.local.expect("local");
        assert_eq!(
            (l.stratum, l.activate, l.wait_synced, l.wait_unsynced()),
            (2, 0.5, 7200.0, 30.0)
        );
        // chrony's defaults: 300 s unsynchronised before an orphan takes over, else none.
        assert_eq!(
            local("local orphan").map(|l| l.wait_unsynced()),
            Some(300.0)
        );
        assert_eq!(local("local").map(|l| l.wait_unsynced()), Some(0.0));
        assert!(parse("local waitsynced -1").is_err());
    }

    #[test]
    fn acl_rules_keep_order_and_keywords() {
        let config = parse(
            "allow\n\
             deny all 10/8\n\
             allow 10.1\n\
             deny ntp.example.com\n\
             allow all\n",
        )
        .unwrap();
        let subnet = |s: &str| Target::Subnet(Subnet::parse(s).unwrap());
        let rule = |action, all, target| Rule {
            action,
            all,
            target,
        };
        assert_eq!(
            config.acl_rules,
            vec![
                rule(Action::Allow, false, Target::Everything),
                rule(Action::Deny, true, subnet("10.0.0.0/8")),
                rule(Action::Allow, false, subnet("10.1.0.0/16")),
                rule(Action::Deny, false, Target::Name("ntp.example.com".into())),
                rule(Action::Allow, true, Target::Everything),
            ]
        );
    }

    #[test]
    fn bind_addresses_keep_one_per_family() {
        let config = parse(
            "bindaddress 192.0.2.1\n\
             bindaddress 2001:db8::1\n\
             bindaddress 192.0.2.2\n",
        )
        .unwrap();
        assert_eq!(
            config.bind_addresses,
            vec![ip("2001:db8::1"), ip("192.0.2.2")]
        );
    }

    #[test]
    fn bindcmdaddress_paths_and_addresses() {
        let config = parse(
            "bindcmdaddress /var/run/ntpx/cmd.sock\n\
             bindcmdaddress 127.0.0.1\n\
             bindcmdaddress ::1\n\
             bindcmdaddress 0.0.0.0\n",
        )
        .unwrap();
        assert_eq!(
            config.cmd_socket,
            Some(PathBuf::from("/var/run/ntpx/cmd.sock"))
        );
        assert_eq!(config.cmd_addresses, vec![ip("::1"), ip("0.0.0.0")]);
        let config = parse("bindcmdaddress /").unwrap();
        assert_eq!(config.cmd_socket, None);
    }

    #[test]
    fn ports_pidfile_and_stale_limit() {
        let config =
            parse("port 0\ncmdport 0\npidfile /\nxdpstalelimit 2.5\ndriftfile /d interval 60\n")
                .unwrap();
        assert_eq!(config.port, 0);
        assert_eq!(config.cmdport, 0);
        assert_eq!(config.pidfile, None);
        assert_eq!(config.xdp_stale_limit, Duration::from_millis(2500));
        assert_eq!(config.driftfile, Some(PathBuf::from("/d")));
        assert_eq!(
            warnings(&config),
            vec![(
                5,
                "option \"interval\" of driftfile directive is not supported yet and is \
                 ignored"
                    .to_string()
            )]
        );
        let config = parse("xdpstalelimit 600\npidfile /tmp/p.pid").unwrap();
        assert_eq!(config.xdp_stale_limit, MAX_XDP_STALE_LIMIT);
        assert_eq!(config.pidfile, Some(PathBuf::from("/tmp/p.pid")));
    }

    #[test]
    fn unsupported_list_is_sorted_unique_and_disjoint_from_implemented() {
        assert!(UNSUPPORTED_DIRECTIVES.windows(2).all(|w| w[0] < w[1]));
        let implemented = [
            "local",
            "allow",
            "deny",
            "port",
            "cmdport",
            "bindaddress",
            "bindcmdaddress",
            "driftfile",
            "pidfile",
            "xdpstalelimit",
        ];
        for name in implemented {
            assert!(!UNSUPPORTED_DIRECTIVES.contains(&name), "{name}");
        }
        for name in UNSUPPORTED_DIRECTIVES {
            let config = parse(&format!("{name} x")).unwrap();
            assert_eq!(warnings(&config), vec![unsupported(1, name)]);
        }
    }

    #[test]
    fn what_cannot_be_honoured_refuses_to_start_with_its_line() {
        for (text, expect) in [
            (
                "refclock PPS /dev/pps0",
                "refclock driver PPS is not supported yet",
            ),
            (
                "smoothtime 400 0.001",
                "directive \"smoothtime\" is not supported yet",
            ),
            (
                "leapseclist /usr/share/zoneinfo/leap-seconds.list",
                "\"leapseclist\"",
            ),
            ("leapsecmode slew", "leapsecmode slew is not supported yet"),
            ("binddevice eth1", "keeping the NTP port to that interface"),
            (
                "ntstrustedcerts one /etc/a.pem",
                "invalid certificate set \"one\"",
            ),
            ("authselectmode sometimes", "invalid mode \"sometimes\""),
            ("ntsaeads 17 31", "none of the algorithms is supported"),
            ("ntsaeads fifteen", "invalid ID \"fifteen\""),
            ("ntsaeads 15 2147483648", "invalid ID \"2147483648\""),
            ("ntsaeads", "ntsaeads"),
            ("ntsrefresh -1", "invalid interval \"-1\""),
            ("ntsrefresh 2147483648", "invalid interval \"2147483648\""),
            ("ntsrefresh 1 2", "ntsrefresh"),
            (
                "refclock SHM 0 tai",
                "refclock option tai requires leapsectz",
            ),
        ] {
            let e = parse(&format!("allow all\n{text}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.message.contains(expect), "{text}: {}", e.message);
        }
        let e = parse("ntsserverkey /etc/k.pem\n").unwrap_err();
        assert!(
            e.message.contains("each certificate needs its key"),
            "{}",
            e.message
        );
        let c = parse("ntsserverkey /etc/k.pem\nntsservercert /etc/c.pem\nntsport 4461\n").unwrap();
        assert!(c.nts_server.enabled());
        assert_eq!(c.nts_server.port, 4461);
        // chrony's default order, an operator's own, and numbers not supported passed
        // over with a warning naming the line.
        use crate::nts::Aead;
        assert_eq!(c.nts_aeads, [Aead::Aes128GcmSiv, Aead::AesSivCmac256]);
        let c = parse("ntsaeads 15\n").unwrap();
        assert_eq!(c.nts_aeads, [Aead::AesSivCmac256]);
        // chrony's NTS-KE refresh: 4 weeks unless given, 0 to INT_MAX seconds.
        assert_eq!(c.nts_refresh, 2_419_200);
        assert_eq!(parse("ntsrefresh 0\n").unwrap().nts_refresh, 0);
        // ntsratelimit: ratelimit's options but kod, chrony's default interval 6.
        let r = parse("ntsratelimit burst 2\n")
            .unwrap()
            .nts_ratelimit
            .unwrap();
        assert_eq!(
            (r.interval_ns, r.burst, r.leak, r.kod),
            (64_000_000_000, 2, 2, 0)
        );
        assert_eq!(parse("allow all\n").unwrap().nts_ratelimit, None);
        let e = parse("ntsratelimit kod 1\n").unwrap_err();
        assert!(
            e.message.contains("unknown option \"kod\""),
            "{}",
            e.message
        );
        // chrony's earlier name for ntsdumpdir.
        assert_eq!(
            parse("ntscachedir /var/lib/chrony\n")
                .unwrap()
                .nts_server
                .dump_dir,
            Some(PathBuf::from("/var/lib/chrony"))
        );
        assert_eq!(
            parse("ntsrefresh 2147483647\n").unwrap().nts_refresh,
            i32::MAX as u32
        );
        let c = parse("allow all\nntsaeads 17 15 30 15 70000\n").unwrap();
        assert_eq!(c.nts_aeads, [Aead::AesSivCmac256, Aead::Aes128GcmSiv]);
        assert_eq!(
            warnings(&c),
            [
                (
                    2,
                    "ntsaeads: AEAD algorithm 17 is not supported (15, 30)".into()
                ),
                (
                    2,
                    "ntsaeads: AEAD algorithm 70000 is not supported (15, 30)".into()
                )
            ]
        );
        for text in [
            "authselectmode mix",
            "authselectmode ignore",
            "authselectmode require",
            "leapsecmode system",
        ] {
            let c = parse(text).unwrap();
            assert!(warnings(&c).is_empty(), "{text}: {:?}", warnings(&c));
        }
    }

    #[test]
    fn authselectmode_gives_sources_chronys_options() {
        let sel = |c: &Config| -> Vec<(bool, bool, bool)> {
            c.sources
                .iter()
                .map(|s| (s.noselect, s.require, s.trust))
                .collect()
        };
        let lines = "server a key 1\nserver b\nserver c noselect\n";
        // mix (the default): the authenticated source must be agreed with.
        let c = parse(lines).unwrap();
        assert_eq!(
            sel(&c),
            [
                (false, true, true),
                (false, false, false),
                (true, false, false)
            ]
        );
        let c = parse(&format!("authselectmode prefer\n{lines}")).unwrap();
        assert_eq!(
            sel(&c),
            [
                (false, false, false),
                (true, false, false),
                (true, false, false)
            ]
        );
        let c = parse("authselectmode require\nserver b\n").unwrap();
        assert_eq!(sel(&c), [(true, false, false)]);
        let c = parse(&format!("authselectmode ignore\n{lines}")).unwrap();
        assert_eq!(
            sel(&c),
            [
                (false, false, false),
                (false, false, false),
                (true, false, false)
            ]
        );
        // prefer without any authenticated source, mix without unauthenticated ones:
        // nothing changes.
        let c = parse("authselectmode prefer\nserver b\n").unwrap();
        assert_eq!(sel(&c), [(false, false, false)]);
        let c = parse("server a key 1\n").unwrap();
        assert_eq!(sel(&c), [(false, false, false)]);
    }

    #[test]
    fn maxchange_maxstratum_opencommands_and_cmdratelimit() {
        let c = parse("maxchange 1000 1 2\nmaxstratum 4\n").unwrap();
        assert_eq!(c.sync.max_change, Some((1000.0, 1, 2)));
        assert_eq!(c.sync.max_stratum, 4);
        assert!(parse("maxchange 1000 1").is_err());
        assert!(parse("maxchange -1 1 2").is_err());
        let d = Config::default();
        assert_eq!(
            d.open_commands,
            ["activity", "sources", "sourcestats", "tracking"]
        );
        assert_eq!(
            (d.cmd_ratelimit.interval_ns, d.cmd_ratelimit.burst),
            (62_500_000, 8)
        );
        let c = parse("opencommands tracking clients\ncmdratelimit interval 1 burst 2\n").unwrap();
        assert_eq!(c.open_commands, ["tracking", "clients"]);
        assert_eq!(
            (c.cmd_ratelimit.interval_ns, c.cmd_ratelimit.burst),
            (2_000_000_000, 2)
        );
        assert!(parse("opencommands").unwrap().open_commands.is_empty());
        assert!(parse("opencommands makestep").is_err());
        assert!(
            parse("cmdratelimit kod 1").is_err(),
            "no kod on the command port"
        );
    }

    #[test]
    fn clientloglimit_is_bounded() {
        assert_eq!(parse("clientloglimit 6400").unwrap().client_log, Some(100));
        let c = parse("clientloglimit 4000000000").unwrap();
        assert_eq!(c.client_log, Some(MAX_CLIENT_RECORDS));
        assert!(warnings(&c)[0].1.contains("more than ntpx keeps"));
        assert_eq!(
            parse("noclientlog\nclientloglimit 6400")
                .unwrap()
                .client_log,
            None
        );
    }

    #[test]
    fn ratelimit_defaults_options_and_errors() {
        let c = parse("ratelimit\n").unwrap();
        let r = c.ratelimit.unwrap();
        assert_eq!(
            (r.interval_ns, r.burst, r.leak, r.kod),
            (8_000_000_000, 8, 2, 0)
        );
        let c = parse("ratelimit interval -2 burst 4 leak 3 kod 1\n").unwrap();
        let r = c.ratelimit.unwrap();
        assert_eq!(
            (r.interval_ns, r.burst, r.leak, r.kod),
            (250_000_000, 4, 3, 1)
        );
        // Out of the limiter's range: clamped, as chrony does (leak 1 to 4, kod 0 to 4).
        let r = parse("ratelimit interval 13 burst 0 leak 16 kod 9\n")
            .unwrap()
            .ratelimit
            .unwrap();
        assert_eq!(
            (r.interval_ns, r.burst, r.leak, r.kod),
            (4_096_000_000_000, 1, 4, 4)
        );
        let r = parse("ratelimit interval -32 leak -3\n")
            .unwrap()
            .ratelimit
            .unwrap();
        assert_eq!((r.interval_ns, r.leak), ((2f64.powi(-19) * 1e9) as u64, 1));
        for (line, expect) in [
            ("ratelimit interval 33", "invalid interval \"33\""),
            ("ratelimit burst 256", "invalid burst \"256\""),
            ("ratelimit leak -33", "invalid leak \"-33\""),
            ("ratelimit leak", "missing value for leak"),
            ("ratelimit foo 1", "unknown option \"foo\""),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.message.contains(expect), "{line}: {e}");
        }
        // As chronyd: no rate limit without the client log, named at its line.
        for text in [
            "allow all\nnoclientlog\nratelimit\n",
            "allow all\nnoclientlog\nntsratelimit\n",
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.message.contains("needs the client log"), "{e}");
        }
        assert!(parse("noclientlog\ncmdratelimit burst 2\n").is_ok());
    }
}
