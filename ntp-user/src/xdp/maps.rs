//! Filling the fast path's maps from userspace: address sets and access tries replaced
//! without a gap, client records in the form aya's map API wants.

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, Map, MapData, lpm_trie::Key},
};
use ntp_common::{
    ClientRecord,
    counters::CpuRecord,
    state::{ACL_ALLOW, ACL_DENY},
};
use ntp_proto::acl::Action;

/// The object's map `name`.
pub(super) fn map<'e>(ebpf: &'e Ebpf, name: &str) -> Result<&'e Map> {
    ebpf.map(name).ok_or_else(|| anyhow!("map {name} missing"))
}

/// The object's map `name`, to write.
pub(super) fn map_mut<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing"))
}

/// Makes the set `name` hold exactly `keys` (new ones in before stale ones out);
/// whether anything changed.
pub(super) fn fill_set<const N: usize>(
    ebpf: &mut Ebpf,
    name: &str,
    keys: &[[u8; N]],
) -> Result<bool> {
    let map = map_mut(ebpf, name)?;
    let mut set: HashMap<&mut MapData, [u8; N], u8> = HashMap::try_from(map)?;
    let present: Vec<[u8; N]> = set.keys().filter_map(std::result::Result::ok).collect();
    let mut changed = false;
    for k in keys.iter().filter(|k| !present.contains(k)) {
        set.insert(k, 1, 0)
            .with_context(|| format!("inserting into {name}"))?;
        changed = true;
    }
    for k in present.iter().filter(|k| !keys.contains(k)) {
        set.remove(k)
            .with_context(|| format!("removing from {name}"))?;
        changed = true;
    }
    Ok(changed)
}

pub(super) fn fill_trie<const N: usize>(
    ebpf: &mut Ebpf,
    name: &str,
    entries: &[([u8; N], u8, Action)],
) -> Result<()> {
    let map = map_mut(ebpf, name)?;
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
        .filter_map(std::result::Result::ok)
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
pub(super) struct ClientRecordPod(pub(super) ClientRecord);

// SAFETY: ClientRecord is repr(C), all-u64, without padding (bytemuck::Pod).
unsafe impl aya::Pod for ClientRecordPod {}

/// [`CpuRecord`] as aya's map API wants it.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(super) struct CpuRecordPod(pub(super) CpuRecord);

// SAFETY: CpuRecord is repr(C), of u32 and u64 fields, without padding (bytemuck::Pod).
unsafe impl aya::Pod for CpuRecordPod {}

/// Lets older kernels charge map memory to `RLIMIT_MEMLOCK` without failing (newer ones use
/// memcg accounting and ignore it).
pub(super) fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct; failure only matters on old kernels.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) };
}
