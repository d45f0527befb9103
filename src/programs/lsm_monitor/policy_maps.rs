//! The policy in the maps: two generations of every table, `active` naming
//! the one in use.
//!
//! A replacement writes the idle generation, flips `active` (one 4-byte
//! write, read once per event), waits for the events already running (an
//! RCU grace period), then clears the old one: an event sees the old
//! policy or the new one, never a mix. A failure or a kill before the
//! flip leaves the old policy in force; the next replacement clears what
//! was half written.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use serde::Serialize;

use super::skel::types::{
    lsm_cgroup_key, lsm_comm_key, lsm_limits, lsm_path_flags, lsm_path_key, lsm_path_rule,
    lsm_policy, lsm_policy_flags, lsm_uid_key,
};
use super::{LsmMonitorSkel, Mode};
use crate::error::Failure;
use crate::kernel::maps as kmaps;
use crate::kernel::pod::plain_data;
use crate::programs::maps::{self, bytes, lookup};
use crate::rules::policy::CompiledPolicy;

// Padding is explicit in the header.
plain_data!(
    lsm_policy,
    lsm_path_key,
    lsm_path_rule,
    lsm_uid_key,
    lsm_comm_key,
    lsm_cgroup_key,
);

const KEY_PATH_LEN: usize = lsm_limits::LSM_KEY_PATH_LEN.0 as usize;
const ENFORCE: u32 = lsm_policy_flags::LSM_POLICY_ENFORCE.0;

maps::map_set! {
    /// The policy maps, from the skeleton at attach time or from the pins.
    PolicyMaps, PinnedPolicyMaps, LsmMonitorSkel {
        active,
        policy,
        paths,
        uids = allow_uids,
        comms = allow_comms,
        cgroups = allow_cgroups,
    }
}

pub fn active_generation(maps: &PolicyMaps<'_>) -> Result<u8> {
    let active: Option<u32> = lookup(maps.active, &0u32.to_ne_bytes())?;
    Ok(active.unwrap_or(0) as u8 & 1)
}

/// The LPM key of a policy path: the generation byte and the path bytes
/// are the prefix, so its length in bits counts both.
pub fn path_key(generation: u8, path: &[u8]) -> Result<lsm_path_key> {
    if path.is_empty() || path.len() > KEY_PATH_LEN {
        return Err(Failure::new(format!(
            "policy path key '{}' has {} bytes; keys have 1 to {KEY_PATH_LEN}",
            String::from_utf8_lossy(path),
            path.len()
        ))
        .into());
    }
    let mut key = lsm_path_key {
        prefixlen: 8 * (1 + path.len() as u32),
        generation,
        ..Default::default()
    };
    key.path[..path.len()].copy_from_slice(path);
    Ok(key)
}

fn comm_key(generation: u8, comm: &[u8; 16]) -> lsm_comm_key {
    lsm_comm_key {
        generation: generation.into(),
        comm: comm.map(|b| b as _),
    }
}

/// The `policy` slot's flags for a compiled policy in a mode: the mode is
/// the runtime's to set, whatever the compiled flags say.
fn policy_flags(compiled: &CompiledPolicy, mode: Mode) -> u32 {
    let flags = compiled.flags & !ENFORCE;
    match mode {
        Mode::Audit => flags,
        Mode::Enforce => flags | ENFORCE,
    }
}

fn write_generation(
    maps: &PolicyMaps<'_>,
    gen: u8,
    compiled: &CompiledPolicy,
    mode: Mode,
) -> Result<()> {
    const ALLOWED: [u8; 1] = [1];
    for entry in &compiled.paths {
        let key = path_key(gen, &entry.key)?;
        let rule = lsm_path_rule {
            flags: entry.flags,
            pad: 0,
        };
        maps.paths
            .update(bytes(&key), bytes(&rule), MapFlags::ANY)
            .with_context(|| format!("adding path '{}'", String::from_utf8_lossy(&entry.key)))?;
    }
    for &uid in &compiled.uids {
        let key = lsm_uid_key {
            generation: gen.into(),
            uid,
        };
        maps.uids.update(bytes(&key), &ALLOWED, MapFlags::ANY)?;
    }
    for comm in &compiled.comms {
        maps.comms
            .update(bytes(&comm_key(gen, comm)), &ALLOWED, MapFlags::ANY)?;
    }
    for &cgroup_id in &compiled.cgroups {
        let key = lsm_cgroup_key {
            generation: gen.into(),
            pad: 0,
            cgroup_id,
        };
        maps.cgroups.update(bytes(&key), &ALLOWED, MapFlags::ANY)?;
    }
    let slot = lsm_policy {
        flags: policy_flags(compiled, mode),
        pad: 0,
    };
    maps.policy
        .update(&u32::from(gen).to_ne_bytes(), bytes(&slot), MapFlags::ANY)?;
    Ok(())
}

/// Removes every entry of generation `gen`, and its policy flags.
fn clear_generation(maps: &PolicyMaps<'_>, gen: u8) -> Result<()> {
    let path_gen = std::mem::offset_of!(lsm_path_key, generation);
    let stale: Vec<Vec<u8>> = maps
        .paths
        .keys()
        .filter(|k| k.get(path_gen) == Some(&gen))
        .collect();
    for key in stale {
        maps.paths.delete(&key)?;
    }
    // The allow-lists' keys start with the generation as a u32.
    let of_gen = |key: &Vec<u8>| key.get(..4) == Some(&u32::from(gen).to_ne_bytes()[..]);
    for table in [maps.uids, maps.comms, maps.cgroups] {
        let stale: Vec<Vec<u8>> = table.keys().filter(of_gen).collect();
        for key in stale {
            table.delete(&key)?;
        }
    }
    maps.policy.update(
        &u32::from(gen).to_ne_bytes(),
        bytes(&lsm_policy::default()),
        MapFlags::ANY,
    )?;
    Ok(())
}

/// Replaces the whole policy atomically and sets the mode with it;
/// returns the generation now in use.
pub fn apply(maps: &PolicyMaps<'_>, compiled: &CompiledPolicy, mode: Mode) -> Result<u8> {
    let old = active_generation(maps)?;
    let new = 1 - old;
    clear_generation(maps, new).context("clearing the idle policy generation")?;
    write_generation(maps, new, compiled, mode).context("writing the new policy")?;
    maps.active
        .update(
            &0u32.to_ne_bytes(),
            &u32::from(new).to_ne_bytes(),
            MapFlags::ANY,
        )
        .context("publishing the new policy")?;
    // An event that read `active` before the flip still looks up the old
    // generation: clearing it under that event would let it through.
    kmaps::wait_for_running_programs()?;
    clear_generation(maps, old).context("clearing the previous policy")?;
    Ok(new)
}

/// The policy in force, as counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    #[serde(skip)]
    pub mode: Mode,
    pub generation: u8,
    /// Prefixes given each flag by the policy: "/etc" counts once for its
    /// two entries, and a prefix under another with the same flag (which
    /// its entries inherit) does not count.
    pub watched_prefixes: usize,
    pub deny_write_prefixes: usize,
    pub deny_exec_prefixes: usize,
    pub deny_ptrace_other_users: bool,
    pub deny_modules: bool,
    pub allow_uids: usize,
    pub allow_comms: usize,
    pub allow_cgroups: usize,
}

/// The prefix an LPM entry stands for: its path without the final byte,
/// the NUL of "/etc\0" (the file) or the slash of "/etc/" (what is under).
fn prefix_of(key: &lsm_path_key) -> Vec<u8> {
    let len = (key.prefixlen / 8).saturating_sub(1) as usize;
    key.path[..len.min(KEY_PATH_LEN).saturating_sub(1)].to_vec()
}

/// Whether `outer` covers `inner`: it is the root (""), or `inner` is under
/// it.
fn covers(outer: &[u8], inner: &[u8]) -> bool {
    outer.is_empty() || (inner.starts_with(outer) && inner.get(outer.len()) == Some(&b'/'))
}

/// The prefixes of `set` that no other prefix of it covers.
fn outermost(set: &BTreeSet<Vec<u8>>) -> usize {
    set.iter()
        .filter(|p| !set.iter().any(|q| q != *p && covers(q, p)))
        .count()
}

pub fn summary(maps: &PolicyMaps<'_>) -> Result<PolicySummary> {
    let gen = active_generation(maps)?;
    let slot: lsm_policy = lookup(maps.policy, &u32::from(gen).to_ne_bytes())?.unwrap_or_default();
    let mut by_flag: [BTreeSet<Vec<u8>>; 3] = Default::default();
    for raw in maps.paths.keys() {
        let mut key = lsm_path_key::default();
        plain::copy_from_bytes(&mut key, &raw)
            .map_err(|e| anyhow::anyhow!("unexpected path key size: {e:?}"))?;
        if key.generation != gen {
            continue;
        }
        let Some(rule) = lookup::<lsm_path_rule>(maps.paths, &raw)? else {
            continue;
        };
        let flags = [
            lsm_path_flags::LSM_PATH_WATCH,
            lsm_path_flags::LSM_PATH_DENY_WRITE,
            lsm_path_flags::LSM_PATH_DENY_EXEC,
        ];
        for (set, flag) in by_flag.iter_mut().zip(flags) {
            if rule.flags & flag.0 != 0 {
                set.insert(prefix_of(&key));
            }
        }
    }
    let count_gen = |table: &dyn MapCore| {
        table
            .keys()
            .filter(|k| k.get(..4) == Some(&u32::from(gen).to_ne_bytes()[..]))
            .count()
    };
    let [watched, deny_write, deny_exec] = by_flag;
    let has = |flag: lsm_policy_flags| slot.flags & flag.0 != 0;
    Ok(PolicySummary {
        mode: Mode::of(has(lsm_policy_flags::LSM_POLICY_ENFORCE)),
        generation: gen,
        watched_prefixes: outermost(&watched),
        deny_write_prefixes: outermost(&deny_write),
        deny_exec_prefixes: outermost(&deny_exec),
        deny_ptrace_other_users: has(lsm_policy_flags::LSM_POLICY_DENY_PTRACE_OTHER_USERS),
        deny_modules: has(lsm_policy_flags::LSM_POLICY_DENY_MODULES),
        allow_uids: count_gen(maps.uids),
        allow_comms: count_gen(maps.comms),
        allow_cgroups: count_gen(maps.cgroups),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys_count_the_generation_byte_and_every_path_byte() {
        let key = path_key(1, b"/etc/").unwrap();
        assert_eq!(key.prefixlen, 8 * (1 + 5));
        assert_eq!(key.generation, 1);
        assert_eq!(&key.path[..6], b"/etc/\0");
        let exact = path_key(0, b"/etc\0").unwrap();
        assert_eq!(exact.prefixlen, 48);
        assert_eq!(prefix_of(&exact), b"/etc");
        assert_eq!(prefix_of(&key), b"/etc");
        let longest = vec![b'a'; KEY_PATH_LEN];
        assert_eq!(path_key(0, &longest).unwrap().prefixlen, 8 * 256);
        assert!(path_key(0, &[b'a'; KEY_PATH_LEN + 1]).is_err());
        assert!(path_key(0, b"").is_err());
    }

    #[test]
    fn prefixes_under_one_with_the_same_flag_do_not_count() {
        let set: BTreeSet<Vec<u8>> = [&b"/etc"[..], b"/etc/ssh", b"/etcetera", b"/var/log"]
            .iter()
            .map(|p| p.to_vec())
            .collect();
        assert_eq!(outermost(&set), 3);
        let with_root: BTreeSet<Vec<u8>> = [vec![], b"/etc".to_vec()].into_iter().collect();
        assert_eq!(outermost(&with_root), 1);
    }

    #[test]
    fn the_key_layout_is_the_headers() {
        assert_eq!(std::mem::size_of::<lsm_path_key>(), 4 + 1 + KEY_PATH_LEN);
        assert_eq!(std::mem::offset_of!(lsm_path_key, generation), 4);
        assert_eq!(std::mem::size_of::<lsm_comm_key>(), 20);
        assert_eq!(std::mem::size_of::<lsm_cgroup_key>(), 16);
        assert_eq!(
            &bytes(&comm_key(1, b"sshd\0\0\0\0\0\0\0\0\0\0\0\0"))[..8],
            b"\x01\0\0\0sshd"
        );
    }

    fn compiled(flags: u32) -> CompiledPolicy {
        CompiledPolicy {
            flags,
            paths: Vec::new(),
            uids: Vec::new(),
            comms: Vec::new(),
            cgroups: Vec::new(),
        }
    }

    #[test]
    fn the_mode_is_the_runtimes_to_set() {
        let deny_modules = lsm_policy_flags::LSM_POLICY_DENY_MODULES.0;
        assert_eq!(
            policy_flags(&compiled(deny_modules | ENFORCE), Mode::Audit),
            deny_modules
        );
        assert_eq!(
            policy_flags(&compiled(deny_modules), Mode::Enforce),
            deny_modules | ENFORCE
        );
    }
}
