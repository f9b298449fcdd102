//! The XDP fast path from userspace: loading the object, attaching it, publishing the
//! server state into its maps and reading its counters.

pub mod ifaces;
mod maps;
mod state_map;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, PerCpuArray},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use maps::{ClientRecordPod, CpuRecordPod, fill_set, fill_trie, map, map_mut, raise_memlock_limit};
use ntp_common::{
    ClientRecord, Counter, ServerState,
    state::{
        ACL_MAX_ENTRIES, CLIENT_RECORD_BYTES, DEFAULT_CLIENTLOG_LIMIT, GLOBAL_CLIENTLOG,
        GLOBAL_PORT, GLOBAL_RL_BURST, GLOBAL_RL_INTERVAL, GLOBAL_RL_KOD, GLOBAL_RL_LEAK,
        LOCAL_MAX_ENTRIES, MAP_ACL_V4, MAP_ACL_V6, MAP_CLIENTS, MAP_COUNTERS, MAP_IFACE_MACS,
        MAP_LOCAL_V4, MAP_LOCAL_V6, MAP_STATE, MAP_XSK_SLOTS, MAP_XSKS, PROG_PASS, PROG_SERVE,
        TEST_RUN_IFINDEX, XSK_MAX_ENTRIES, mac_value, xsk_slot_key,
    },
};
use ntp_proto::acl::AccessTable;
use state_map::StateMap;
use tracing::{debug, info, warn};

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
    state: Publisher,
    links: Vec<Link>,
}

/// The program attached to one interface.
struct Link {
    name: String,
    index: u32,
    id: XdpLinkId,
    mode: AttachMode,
}

/// The published state and the maps' generation it carries.
struct StateCell {
    map: StateMap,
    /// Generation of the lookup maps, stamped into every publication (never 0).
    maps_gen: u32,
}

/// Publishes the server state (the daemon's timekeeping path): a handle of its own, so
/// publishing never waits for an attach or a map update, which take the [`KernelPath`].
#[derive(Clone)]
pub struct Publisher(std::sync::Arc<std::sync::Mutex<StateCell>>);

impl Publisher {
    /// Publishes `state` under the sequence lock, with the maps' current generation.
    pub fn publish(&self, state: &ServerState) {
        let mut cell = crate::lock(&self.0);
        let mut s = *state;
        s.maps_gen = cell.maps_gen;
        cell.map.write(&s);
    }

    /// Stops the kernel answering until the next [`Self::publish`] (every request passes
    /// to the daemon).
    pub fn withdraw(&self) {
        let mut cell = crate::lock(&self.0);
        let mut s = cell.map.read();
        s.serve = 0;
        cell.map.write(&s);
    }

    /// The state as the kernel sees it now.
    pub fn published(&self) -> ServerState {
        crate::lock(&self.0).map.read()
    }

    /// Starts a new generation of the lookup maps, now whole, and republishes: what the
    /// kernel cached from them (each client's verdict, each CPU's last address and MAC)
    /// is looked up again.
    fn maps_changed(&self) {
        let mut cell = crate::lock(&self.0);
        cell.maps_gen = match cell.maps_gen.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        let mut s = cell.map.read();
        s.maps_gen = cell.maps_gen;
        cell.map.write(&s);
    }
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
        refuse_where_the_state_lock_fails()?;
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
        let state = Publisher(std::sync::Arc::new(std::sync::Mutex::new(StateCell {
            map: StateMap::new(data)?,
            maps_gen: 1,
        })));
        Ok(KernelPath {
            ebpf,
            state,
            links: Vec::new(),
        })
    }

    /// The serving program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn serve_program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROG_SERVE)
            .ok_or_else(|| anyhow!("program {PROG_SERVE} missing"))?
            .try_into()?)
    }

    /// Attaches the serving program to `iface` (see [`Self::attach_to`]).
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode> {
        let index = nix::net::if_::if_nametoindex(iface)
            .with_context(|| format!("index of interface {iface}"))?;
        self.attach_to(iface, index)
    }

    /// Attaches the serving program to interface `name`, index `index`: native mode,
    /// else generic with a warning. The interface's MAC is registered first: the program
    /// answers only frames addressed to it.
    pub fn attach_to(&mut self, name: &str, index: u32) -> Result<AttachMode> {
        // Read first (an interface without one is not Ethernet: nothing to attach to),
        // registered once attached (a failed attach leaves nothing in the map).
        let mac = ifaces::mac_address(name)?;
        let prog = self.serve_program()?;
        let (id, mode) = attach_with_fallback(prog, name, index)?;
        if let Err(e) = self.set_interface_mac(index, mac) {
            if let Err(d) = self.serve_program().and_then(|p| Ok(p.detach(id)?)) {
                debug!("Detaching from {name} again: {d:#}");
            }
            return Err(e);
        }
        self.links.push(Link {
            name: name.to_string(),
            index,
            id,
            mode,
        });
        warn_of_stripped_vlan_tags(name);
        Ok(mode)
    }

    /// Detaches the program from interface `index` (gone, or no longer served) and
    /// forgets its MAC. An interface already removed took its attachment with it.
    pub fn detach(&mut self, index: u32) -> Result<()> {
        let (gone, kept): (Vec<Link>, Vec<Link>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| l.index == index);
        self.links = kept;
        for l in gone {
            if let Err(e) = self.serve_program().and_then(|p| Ok(p.detach(l.id)?)) {
                debug!("Detaching from {} (index {index}): {e:#}", l.name);
            }
        }
        let mut macs: HashMap<&mut MapData, u32, u64> =
            HashMap::try_from(map_mut(&mut self.ebpf, MAP_IFACE_MACS)?)?;
        if macs.remove(&index).is_ok() {
            self.maps_changed();
        }
        Ok(())
    }

    /// Registers the current MAC of interface `name` (index `index`), if it changed.
    pub fn refresh_mac(&mut self, name: &str, index: u32) -> Result<()> {
        let mac = ifaces::mac_address(name)?;
        self.set_interface_mac(index, mac)
    }

    /// Registers `mac` as the address of interface `index` (a change starts a new
    /// generation of the maps).
    pub fn set_interface_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut macs: HashMap<&mut MapData, u32, u64> =
            HashMap::try_from(map_mut(&mut self.ebpf, MAP_IFACE_MACS)?)?;
        if macs.get(&index, 0).ok() == Some(mac_value(mac)) {
            return Ok(());
        }
        macs.insert(index, mac_value(mac), 0)
            .with_context(|| format!("registering the MAC of interface {index}"))?;
        self.maps_changed();
        Ok(())
    }

    /// Registers `AF_XDP` socket `sock`, bound to interface `ifindex`'s receive queue
    /// `queue`, in slot `slot`: the program redirects that queue's longer requests to it.
    pub fn register_xsk(
        &mut self,
        slot: u32,
        ifindex: u32,
        queue: u32,
        sock: &impl std::os::fd::AsRawFd,
    ) -> Result<()> {
        if slot >= XSK_MAX_ENTRIES {
            bail!("more than {XSK_MAX_ENTRIES} AF_XDP sockets");
        }
        let mut xsks: aya::maps::XskMap<&mut MapData> =
            aya::maps::XskMap::try_from(map_mut(&mut self.ebpf, MAP_XSKS)?)?;
        // The map takes its own reference to the socket.
        xsks.set(slot, sock.as_raw_fd(), 0)
            .with_context(|| format!("registering AF_XDP socket {slot}"))?;
        let mut slots: HashMap<&mut MapData, u64, u32> =
            HashMap::try_from(map_mut(&mut self.ebpf, MAP_XSK_SLOTS)?)?;
        slots
            .insert(xsk_slot_key(ifindex, queue), slot, 0)
            .with_context(|| format!("registering AF_XDP socket {slot}'s queue"))?;
        Ok(())
    }

    /// Registers `mac` for the frames of `BPF_PROG_TEST_RUN`, which arrive on the
    /// namespace's loopback.
    pub fn set_test_run_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.set_interface_mac(TEST_RUN_IFINDEX, mac)
    }

    /// Interfaces the program is attached to, with the mode of each.
    pub fn attached(&self) -> Vec<(String, AttachMode)> {
        self.links
            .iter()
            .map(|l| (l.name.clone(), l.mode))
            .collect()
    }

    /// Interfaces the program is attached to, by name and index.
    pub fn attachments(&self) -> Vec<ntp_proto::serving::Attachment> {
        self.links
            .iter()
            .map(|l| ntp_proto::serving::Attachment {
                name: l.name.clone(),
                index: l.index,
            })
            .collect()
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        for l in links {
            let result = self.serve_program().and_then(|p| Ok(p.detach(l.id)?));
            match result {
                Ok(()) => info!("Detached XDP program from {}", l.name),
                Err(e) => warn!("Could not detach XDP program from {}: {e:#}", l.name),
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
        self.maps_changed();
        Ok(())
    }

    fn maps_changed(&mut self) {
        self.state.maps_changed();
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
        let v4_changed = fill_set(&mut self.ebpf, MAP_LOCAL_V4, &v4)?;
        if fill_set(&mut self.ebpf, MAP_LOCAL_V6, &v6)? || v4_changed {
            self.maps_changed();
        }
        Ok(())
    }

    /// Publishes `state` under the sequence lock, with the maps' current generation.
    pub fn publish(&mut self, state: &ServerState) {
        self.state.publish(state);
    }

    /// Stops the kernel answering until the next [`Self::publish`] (every request passes
    /// to the daemon).
    pub fn withdraw(&mut self) {
        self.state.withdraw();
    }

    /// The handle the daemon publishes through (see [`Publisher`]).
    pub fn publisher(&self) -> Publisher {
        self.state.clone()
    }

    /// A writer of the published state on a mapping of its own, for tests that publish
    /// from another thread or leave a write unfinished; the daemon never uses one.
    pub fn state_writer(&self) -> Result<StateWriter> {
        Ok(StateWriter(crate::lock(&self.state.0).map.reopen()?))
    }

    /// The state as the kernel sees it now.
    pub fn published(&self) -> ServerState {
        self.state.published()
    }

    /// The kernel's client log: every client's address and record.
    pub fn clients(&self) -> Result<Vec<(std::net::IpAddr, ClientRecord)>> {
        let map = map(&self.ebpf, MAP_CLIENTS)?;
        client_records(map)
    }

    /// How many client records the kernel holds (keys only: half the syscalls of
    /// [`Self::clients`]).
    pub fn client_count(&self) -> Result<u64> {
        let map = map(&self.ebpf, MAP_CLIENTS)?;
        client_record_count(map)
    }

    /// Handles of their own on the kernel's client log and counters, so reading them (a
    /// syscall per record) holds no lock the publication needs. Opened while privileged:
    /// reopening a map by id needs `CAP_SYS_ADMIN`.
    pub fn monitor(&self) -> Result<KernelMonitor> {
        let reopen = |name: &str| -> Result<MapData> {
            let map = map(&self.ebpf, name)?;
            let (Map::LruHashMap(data) | Map::PerCpuArray(data)) = map else {
                bail!("map {name} is not of the kind expected");
            };
            let id = data
                .info()
                .with_context(|| format!("reading the id of map {name}"))?
                .id();
            MapData::from_id(id).with_context(|| format!("opening map {name} by id"))
        };
        Ok(KernelMonitor {
            clients: Map::LruHashMap(reopen(MAP_CLIENTS)?),
            counters: Map::PerCpuArray(reopen(MAP_COUNTERS)?),
        })
    }

    /// Every counter summed over CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<Vec<u64>> {
        let map = map(&self.ebpf, MAP_COUNTERS)?;
        counter_values(map)
    }
}

impl Drop for KernelPath {
    fn drop(&mut self) {
        // Tell any still-attached program to stop answering before the links go.
        self.withdraw();
        self.detach_all();
    }
}

/// Warns when `iface` carries VLANs but strips their tags before XDP sees the frame:
/// a request on a VLAN would be answered untagged, onto the wrong network.
fn warn_of_stripped_vlan_tags(iface: &str) {
    let vlans = ifaces::vlan_uppers(iface);
    if vlans.is_empty() {
        return;
    }
    if let Some(w) = stripped_vlan_warning(iface, &vlans, ifaces::strips_vlan_tags(iface)) {
        warn!("{w}");
    }
}

/// What to say of `iface` carrying `vlans` when reading its VLAN offload gave `strips`.
pub fn stripped_vlan_warning(
    iface: &str,
    vlans: &[String],
    strips: Result<bool>,
) -> Option<String> {
    if vlans.is_empty() {
        return None;
    }
    let vlans = vlans.join(", ");
    match strips {
        Ok(false) => None,
        Ok(true) => Some(format!(
            "{iface} strips VLAN tags on receive (rx-vlan-offload) and carries VLANs \
             ({vlans}): the XDP program cannot see their tags, so replies to requests on \
             them would leave untagged; turn the offload off (ethtool -K {iface} rxvlan off) \
             or keep their addresses out of what is served"
        )),
        Err(e) => Some(format!(
            "{iface} carries VLANs ({vlans}) and its VLAN offload could not be read \
             ({e:#}): if it strips their tags, replies to requests on them leave untagged"
        )),
    }
}

/// Refuses the fast path where its sequence lock does not hold. The program reads the
/// state between two reads of its sequence number with plain loads; x86-64 keeps loads
/// in order, but arm64 and others may reorder them (the JIT emits no barrier), so a
/// state torn by a concurrent publication could pass the check and be served.
fn refuse_where_the_state_lock_fails() -> Result<()> {
    // The kernel's machine, not this binary's target: an x86-64 build emulated on an
    // arm64 kernel still has its BPF JIT-compiled for arm64.
    let machine = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_default();
    if cfg!(target_arch = "x86_64") && machine == "x86_64" {
        Ok(())
    } else {
        bail!(
            "the XDP fast path runs on x86-64 only: on {machine} the kernel may reorder the \
             loads of its state lock and serve a torn state; serve from the daemon's \
             socket (--no-xdp)"
        )
    }
}

fn attach_with_fallback(
    prog: &mut Xdp,
    iface: &str,
    index: u32,
) -> Result<(XdpLinkId, AttachMode)> {
    match prog.attach_to_if_index(index, XdpMode::Driver) {
        Ok(id) => Ok((id, AttachMode::Native)),
        Err(native_err) => {
            let id = prog
                .attach_to_if_index(index, XdpMode::Skb)
                .with_context(|| {
                    format!("attaching XDP to {iface} (native mode failed too: {native_err})")
                })?;
            warn!("Native XDP not available on {iface} ({native_err}); attached in generic mode");
            Ok((id, AttachMode::Generic))
        }
    }
}

/// Attaches the pass-through program to `iface` so a veth peer receives `XDP_TX` frames;
/// the returned object keeps it attached until dropped.
pub fn attach_pass(iface: &str) -> Result<(Ebpf, AttachMode)> {
    let mut ebpf = Ebpf::load(crate::EBPF_OBJECT).context("loading the ntpx eBPF object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_PASS)
        .ok_or_else(|| anyhow!("program {PROG_PASS} missing"))?
        .try_into()?;
    prog.load().context("verifying the pass program")?;
    let index = nix::net::if_::if_nametoindex(iface)
        .with_context(|| format!("index of interface {iface}"))?;
    let (_, mode) = attach_with_fallback(prog, iface, index)?;
    Ok((ebpf, mode))
}

/// A second writer of the published state (see [`KernelPath::state_writer`]).
pub struct StateWriter(StateMap);

impl StateWriter {
    /// Publishes `state` as it is (its `maps_gen` included) under the sequence lock.
    pub fn publish(&mut self, state: &ServerState) {
        self.0.write(state);
    }

    /// Writes `state` and stops before the write's end, as a writer interrupted there:
    /// the sequence stays odd until the next publication.
    pub fn publish_unfinished(&mut self, state: &ServerState) {
        self.0.write_unfinished(state);
    }
}

/// The kernel's client log and counters, opened on their own (see
/// [`KernelPath::monitor`]).
pub struct KernelMonitor {
    clients: Map,
    counters: Map,
}

impl KernelMonitor {
    /// Every client's address and record.
    pub fn clients(&self) -> Result<Vec<(std::net::IpAddr, ClientRecord)>> {
        client_records(&self.clients)
    }

    /// How many client records the kernel holds.
    pub fn client_count(&self) -> Result<u64> {
        client_record_count(&self.clients)
    }

    /// Every counter summed over CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<Vec<u64>> {
        counter_values(&self.counters)
    }
}

fn counter_values(map: &Map) -> Result<Vec<u64>> {
    let arr: PerCpuArray<&MapData, CpuRecordPod> = PerCpuArray::try_from(map)?;
    let per_cpu = arr.get(&0, 0).context("reading the XDP counters")?;
    let mut sum = vec![0u64; Counter::ALL.len()];
    for record in per_cpu.iter() {
        for (s, v) in sum.iter_mut().zip(&record.0.counters) {
            *s = s.wrapping_add(*v);
        }
    }
    Ok(sum)
}

fn client_records(map: &Map) -> Result<Vec<(std::net::IpAddr, ClientRecord)>> {
    let h: HashMap<&MapData, [u8; 16], ClientRecordPod> = HashMap::try_from(map)?;
    Ok(h.iter()
        .filter_map(std::result::Result::ok)
        .map(|(k, v)| (crate::net::canonical_ip(std::net::IpAddr::from(k)), v.0))
        .collect())
}

fn client_record_count(map: &Map) -> Result<u64> {
    let h: HashMap<&MapData, [u8; 16], ClientRecordPod> = HashMap::try_from(map)?;
    Ok(h.keys().flatten().count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripped_vlan_tags_are_warned_of_only_where_there_are_vlans() {
        let vlans = vec!["eth0.10".to_string(), "eth0.20".to_string()];
        let w = stripped_vlan_warning("eth0", &vlans, Ok(true)).expect("a warning");
        assert!(w.contains("(eth0.10, eth0.20)") && w.contains("ethtool -K eth0 rxvlan off"));
        assert_eq!(stripped_vlan_warning("eth0", &vlans, Ok(false)), None);
        assert_eq!(stripped_vlan_warning("eth0", &[], Ok(true)), None);
        let unknown = stripped_vlan_warning("eth0", &vlans, Err(anyhow!("EOPNOTSUPP")));
        assert!(unknown.is_some_and(|w| w.contains("could not be read")));
    }
}
