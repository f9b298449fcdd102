//! The XDP fast path from userspace: loading the object, attaching it, publishing the
//! server state into its maps and reading its counters.

use crate::acl::{AccessTable, Action};
use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use ntp_common::{
    ClientRecord, Counter, ServerState,
    state::{
        ACL_ALLOW, ACL_DENY, ACL_MAX_ENTRIES, CLIENT_RECORD_BYTES, DEFAULT_CLIENTLOG_LIMIT,
        GLOBAL_CLIENTLOG, GLOBAL_PORT, GLOBAL_RL_BURST, GLOBAL_RL_INTERVAL, GLOBAL_RL_KOD,
        GLOBAL_RL_LEAK, LOCAL_MAX_ENTRIES, MAP_ACL_V4, MAP_ACL_V6, MAP_CLIENTS, MAP_COUNTERS,
        MAP_LOCAL_V4, MAP_LOCAL_V6, MAP_STATE, PROG_PASS, PROG_SERVE,
    },
};
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering, fence},
};
use tracing::{info, warn};

/// How a program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the generic stack path (skb mode), slower: the driver lacks XDP support.
    Generic,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// The loaded XDP object with its maps.
pub struct KernelPath {
    ebpf: Ebpf,
    state: StateMap,
    links: Vec<(String, XdpLinkId, AttachMode)>,
}

impl KernelPath {
    /// Loads the embedded object for NTP `port` with the default client log.
    pub fn load(port: u16) -> Result<Self> {
        Self::load_with(
            port,
            Some(DEFAULT_CLIENTLOG_LIMIT / CLIENT_RECORD_BYTES),
            None,
        )
    }

    /// Loads the embedded object for NTP `port`, with a client log of `clients` records
    /// (`None`: `noclientlog`) and the `ratelimit` (which needs the client log), and
    /// verifies the serving program.
    pub fn load_with(
        port: u16,
        clients: Option<u32>,
        ratelimit: Option<ntp_common::RateLimit>,
    ) -> Result<Self> {
        raise_memlock_limit();
        let clientlog: u8 = clients.is_some() as u8;
        let rl = ratelimit.unwrap_or(ntp_common::RateLimit {
            interval_ns: 8_000_000_000,
            burst: 8,
            leak: 0,
            kod: 0,
        });
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_PORT, &port, true)
            .override_global(GLOBAL_CLIENTLOG, &clientlog, true)
            .override_global(GLOBAL_RL_INTERVAL, &rl.interval_ns, true)
            .override_global(GLOBAL_RL_BURST, &rl.burst, true)
            .override_global(GLOBAL_RL_LEAK, &rl.leak, true)
            .override_global(GLOBAL_RL_KOD, &rl.kod, true)
            .map_max_entries(MAP_CLIENTS, clients.unwrap_or(1).max(1))
            .load(crate::EBPF_OBJECT)
            .context("loading the ntpx eBPF object (needs root or CAP_BPF + CAP_NET_ADMIN)")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_SERVE)
            .ok_or_else(|| anyhow!("program {PROG_SERVE} missing from the eBPF object"))?
            .try_into()?;
        prog.load().context("verifying the XDP program")?;
        let map = ebpf
            .take_map(MAP_STATE)
            .ok_or_else(|| anyhow!("map {MAP_STATE} missing from the eBPF object"))?;
        let Map::Array(data) = map else {
            bail!("map {MAP_STATE} is not an array");
        };
        let state = StateMap::new(data)?;
        Ok(KernelPath {
            ebpf,
            state,
            links: Vec::new(),
        })
    }

    /// The serving program, e.g. for BPF_PROG_TEST_RUN.
    pub fn serve_program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROG_SERVE)
            .ok_or_else(|| anyhow!("program {PROG_SERVE} missing"))?
            .try_into()?)
    }

    /// Attaches the serving program to `iface`: native mode, else generic with a warning.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode> {
        let prog = self.serve_program()?;
        let (id, mode) = attach_with_fallback(prog, iface)?;
        self.links.push((iface.to_string(), id, mode));
        Ok(mode)
    }

    /// Interfaces the program is attached to, with the mode of each.
    pub fn attached(&self) -> Vec<(String, AttachMode)> {
        self.links.iter().map(|(i, _, m)| (i.clone(), *m)).collect()
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        for (iface, id, _) in links {
            let result = self.serve_program().and_then(|p| Ok(p.detach(id)?));
            match result {
                Ok(()) => info!("Detached XDP program from {iface}"),
                Err(e) => warn!("Could not detach XDP program from {iface}: {e:#}"),
            }
        }
    }

    /// Replaces the access-control tries with `table`'s entries.
    pub fn set_acl(&mut self, table: &AccessTable) -> Result<()> {
        let v4 = table.v4_entries();
        let v6 = table.v6_entries();
        if v4.len() > ACL_MAX_ENTRIES as usize || v6.len() > ACL_MAX_ENTRIES as usize {
            bail!("more than {ACL_MAX_ENTRIES} allow/deny subnets of one address family");
        }
        fill_trie::<4>(&mut self.ebpf, MAP_ACL_V4, &v4)?;
        fill_trie::<16>(&mut self.ebpf, MAP_ACL_V6, &v6)?;
        Ok(())
    }

    /// Sets the unicast addresses the program answers for (requests to any other address
    /// pass to the stack); entries no longer listed are removed after the new ones are in.
    pub fn set_local_addresses(&mut self, addrs: &[std::net::IpAddr]) -> Result<()> {
        use std::net::IpAddr;
        let v4: Vec<[u8; 4]> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v) if !v.is_unspecified() => Some(v.octets()),
                _ => None,
            })
            .collect();
        let v6: Vec<[u8; 16]> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v) if !v.is_unspecified() => Some(v.octets()),
                _ => None,
            })
            .collect();
        if v4.len() > LOCAL_MAX_ENTRIES as usize || v6.len() > LOCAL_MAX_ENTRIES as usize {
            bail!("more than {LOCAL_MAX_ENTRIES} served addresses of one family");
        }
        fill_set(&mut self.ebpf, MAP_LOCAL_V4, &v4)?;
        fill_set(&mut self.ebpf, MAP_LOCAL_V6, &v6)
    }

    /// Publishes `state` under the sequence lock.
    pub fn publish(&mut self, state: &ServerState) {
        self.state.write(state);
    }

    /// The state as the kernel sees it now.
    pub fn published(&self) -> ServerState {
        self.state.read()
    }

    /// The kernel's client log: every client's address and record.
    pub fn clients(&self) -> Result<Vec<(std::net::IpAddr, ClientRecord)>> {
        let map = self
            .ebpf
            .map(MAP_CLIENTS)
            .ok_or_else(|| anyhow!("map {MAP_CLIENTS} missing"))?;
        let h: HashMap<&MapData, [u8; 16], ClientRecordPod> = HashMap::try_from(map)?;
        Ok(h.iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (crate::net::canonical_ip(std::net::IpAddr::from(k)), v.0))
            .collect())
    }

    /// How many client records the kernel holds (keys only: half the syscalls of
    /// [`Self::clients`]).
    pub fn client_count(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map(MAP_CLIENTS)
            .ok_or_else(|| anyhow!("map {MAP_CLIENTS} missing"))?;
        let h: HashMap<&MapData, [u8; 16], ClientRecordPod> = HashMap::try_from(map)?;
        Ok(h.keys().filter(|k| k.is_ok()).count() as u64)
    }

    /// Every counter summed over CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<Vec<u64>> {
        let map = self
            .ebpf
            .map(MAP_COUNTERS)
            .ok_or_else(|| anyhow!("map {MAP_COUNTERS} missing"))?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Counter::ALL
            .iter()
            .map(|c| {
                let v = arr
                    .get(&(*c as u32), 0)
                    .with_context(|| format!("reading counter {}", c.name()))?;
                Ok(v.iter().sum())
            })
            .collect()
    }
}

impl Drop for KernelPath {
    fn drop(&mut self) {
        // Tell any still-attached program to stop answering before the links go.
        let mut s = self.state.read();
        s.serve = 0;
        self.state.write(&s);
        self.detach_all();
    }
}

fn attach_with_fallback(prog: &mut Xdp, iface: &str) -> Result<(XdpLinkId, AttachMode)> {
    match prog.attach(iface, XdpMode::Driver) {
        Ok(id) => Ok((id, AttachMode::Native)),
        Err(native_err) => {
            let id = prog.attach(iface, XdpMode::Skb).with_context(|| {
                format!("attaching XDP to {iface} (native mode failed too: {native_err})")
            })?;
            warn!("Native XDP not available on {iface} ({native_err}); attached in generic mode");
            Ok((id, AttachMode::Generic))
        }
    }
}

fn fill_set<const N: usize>(ebpf: &mut Ebpf, name: &str, keys: &[[u8; N]]) -> Result<()> {
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing"))?;
    let mut set: HashMap<&mut MapData, [u8; N], u8> = HashMap::try_from(map)?;
    for k in keys {
        set.insert(k, 1, 0)
            .with_context(|| format!("inserting into {name}"))?;
    }
    let stale: Vec<[u8; N]> = set
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !keys.contains(k))
        .collect();
    for k in &stale {
        set.remove(k)
            .with_context(|| format!("removing from {name}"))?;
    }
    Ok(())
}

fn fill_trie<const N: usize>(
    ebpf: &mut Ebpf,
    name: &str,
    entries: &[([u8; N], u8, Action)],
) -> Result<()> {
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing"))?;
    let mut trie: LpmTrie<&mut MapData, [u8; N], u32> = LpmTrie::try_from(map)?;
    // New entries go in before stale ones go out, so a reload never denies everyone.
    for (addr, len, action) in entries {
        let v = match action {
            Action::Allow => ACL_ALLOW,
            Action::Deny => ACL_DENY,
        };
        trie.insert(&Key::new(*len as u32, *addr), v, 0)
            .with_context(|| format!("inserting /{len} into {name}"))?;
    }
    let stale: Vec<Key<[u8; N]>> = trie
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| {
            !entries
                .iter()
                .any(|(a, l, _)| *a == k.data() && *l as u32 == k.prefix_len())
        })
        .collect();
    for k in &stale {
        trie.remove(k).with_context(|| format!("clearing {name}"))?;
    }
    Ok(())
}

/// [`ClientRecord`] as aya's map API wants it.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct ClientRecordPod(ClientRecord);

// SAFETY: ClientRecord is repr(C), all-u64, without padding (bytemuck::Pod).
unsafe impl aya::Pod for ClientRecordPod {}

/// Lets older kernels charge map memory to RLIMIT_MEMLOCK without failing (newer ones use
/// memcg accounting and ignore it).
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct; failure only matters on old kernels.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// The one-entry state array, mapped into this process so updates are a sequence lock
/// rather than a syscall the program could observe half-done.
struct StateMap {
    ptr: NonNull<ServerState>,
    len: usize,
    _map: MapData,
}

// SAFETY: the mapping is owned by this struct and only written through &mut self.
unsafe impl Send for StateMap {}
unsafe impl Sync for StateMap {}

impl StateMap {
    fn new(map: MapData) -> Result<Self> {
        let len = std::mem::size_of::<ServerState>().next_multiple_of(page_size());
        // SAFETY: mapping a BPF_F_MMAPABLE array fd, shared, at offset 0, where the kernel
        // places element 0; the length covers the element rounded up to a page.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "mmap of the {MAP_STATE} map: {}",
                std::io::Error::last_os_error()
            );
        }
        let ptr =
            NonNull::new(p.cast::<ServerState>()).ok_or_else(|| anyhow!("mmap returned null"))?;
        Ok(StateMap {
            ptr,
            len,
            _map: map,
        })
    }

    fn seq(&self) -> &AtomicU64 {
        // SAFETY: `seq` is the first, 8-byte aligned field of the mapped (page-aligned) value.
        unsafe { &*(self.ptr.as_ptr().cast::<AtomicU64>()) }
    }

    fn write(&mut self, s: &ServerState) {
        let seq = self.seq().load(Ordering::Relaxed);
        let odd = (seq | 1).wrapping_add(if seq & 1 == 1 { 2 } else { 0 });
        self.seq().store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut v = *s;
        v.seq = odd;
        // SAFETY: the mapping is valid for one ServerState and nobody else writes it.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr(), v) };
        fence(Ordering::Release);
        self.seq().store(odd.wrapping_add(1), Ordering::Release);
    }

    fn read(&self) -> ServerState {
        // SAFETY: valid mapping; only this process writes it, so no retry is needed here.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr()) }
    }
}

impl Drop for StateMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// Attaches the pass-through program to `iface` so a veth peer receives XDP_TX frames;
/// the returned object keeps it attached until dropped.
pub fn attach_pass(iface: &str) -> Result<(Ebpf, AttachMode)> {
    let mut ebpf = Ebpf::load(crate::EBPF_OBJECT).context("loading the ntpx eBPF object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_PASS)
        .ok_or_else(|| anyhow!("program {PROG_PASS} missing"))?
        .try_into()?;
    prog.load().context("verifying the pass program")?;
    let (_, mode) = attach_with_fallback(prog, iface)?;
    Ok((ebpf, mode))
}
