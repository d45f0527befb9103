//! The ban set: sources xdp_mesh_filter drops before its rules.
//!
//! Host addresses are keys of `ban_v4` and `ban_v6` (one hash lookup per
//! packet, whatever the set holds), shorter CIDRs go into the
//! `ban_prefixes` trie, which the program only looks in while
//! `ban_config.prefixes` says it has entries. Every change here runs under
//! the root's exclusive lock and starts with a walk of the three maps,
//! which deletes the entries that expired (the program skips them but never
//! deletes them) and counts the rest; the counts go to `ban_config`, with
//! how many sources the limiters had promoted by then, so readers know the
//! set's size from two small reads. A promotion while a change walks the
//! maps can be counted twice, until the next change counts again.
//!
//! A change is all or nothing, however it ends: every entry it writes
//! carries its new state and the one in force, under a change number above
//! `ban_config.committed`, and the program reads the state in force until
//! one write of `ban_config` (the counts with the new number) commits them
//! all (include/mesh_filter.h, `struct filter_ban`). So a `load` of a
//! million hosts killed at any point leaves the set as it was; the next
//! change puts the uncommitted entries back first. Deleted entries are
//! written as "not banned" and removed after the commit.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use serde::Serialize;

use super::skel::types::{
    filter_ban, filter_ban_config, filter_ban_limits, filter_ban_origin, filter_ban_prefix_key,
    filter_ban_reason, filter_ban_state, filter_ban_stats, filter_ban_v6_key,
};
use super::{family, family_of, read_text, write_batch, FilterMaps};
use crate::error::Failure;
use crate::kernel::clock::{self, BootAnchor};
use crate::kernel::maps::Entries;
use crate::kernel::pod::plain_data;
use crate::programs::maps::{self, bytes, lookup};
use crate::programs::xdp_counter::traffic::Counter;
use crate::rules::bans::Ttl;
use crate::rules::{Family, Prefix};

plain_data!(
    filter_ban,
    filter_ban_state,
    filter_ban_config,
    filter_ban_prefix_key,
    filter_ban_reason,
    filter_ban_stats,
    filter_ban_v6_key,
);

/// Host entries per family.
pub const MAX_HOSTS: u32 = filter_ban_limits::FILTER_BAN_MAX_HOSTS.0;
/// CIDRs shorter than a host, both families together.
pub const MAX_PREFIXES: u32 = filter_ban_limits::FILTER_BAN_MAX_PREFIXES.0;
const REASONS: u32 = filter_ban_limits::FILTER_BAN_REASONS.0;
/// The longest reason, without its terminating NUL.
pub const MAX_REASON: usize = filter_ban_limits::FILTER_BAN_REASON_LEN.0 as usize - 1;
const PREFIX_HEADER_BITS: u32 = filter_ban_limits::FILTER_BAN_PREFIX_HEADER_BITS.0;
/// Entries per batched read.
const BATCH: usize = 8192;

/// A multiply-rotate hash (FxHash's): a million CIDRs through SipHash took
/// most of a load's time, and the keys are addresses, not attacker input
/// that could collide on purpose.
#[derive(Default)]
struct Fast(u64);

impl Hasher for Fast {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fast>>;

/// The three maps of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    V4,
    V6,
    Prefixes,
}

const TABLES: [Table; 3] = [Table::V4, Table::V6, Table::Prefixes];

impl Table {
    fn of(p: &Prefix) -> Table {
        match p.family {
            _ if p.len < p.family.bits() => Table::Prefixes,
            Family::V4 => Table::V4,
            Family::V6 => Table::V6,
        }
    }

    fn map<'a>(self, maps: &FilterMaps<'a>) -> &'a dyn MapCore {
        match self {
            Table::V4 => maps.ban_v4,
            Table::V6 => maps.ban_v6,
            Table::Prefixes => maps.ban_prefixes,
        }
    }

    fn capacity(self) -> u32 {
        match self {
            Table::Prefixes => MAX_PREFIXES,
            _ => MAX_HOSTS,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Table::V4 => "IPv4 hosts",
            Table::V6 => "IPv6 hosts",
            Table::Prefixes => "CIDRs shorter than a host",
        }
    }
}

/// Appends a CIDR's key in its map to `keys`.
fn push_key(p: &Prefix, keys: &mut Vec<u8>) {
    match Table::of(p) {
        Table::V4 => keys.extend_from_slice(&p.addr[..4]),
        Table::V6 => keys.extend_from_slice(&p.addr),
        Table::Prefixes => keys.extend_from_slice(bytes(&filter_ban_prefix_key {
            prefixlen: PREFIX_HEADER_BITS + u32::from(p.len),
            family: family(p.family),
            pad: [0; 3],
            addr: p.addr,
        })),
    }
}

/// Every entry of the set, expired ones too.
fn walk(maps: &FilterMaps<'_>) -> Result<Vec<(Prefix, filter_ban)>> {
    let mut all = Vec::new();
    // Keys in network order, read as they lie in memory.
    let v4 = Entries::<u32, filter_ban>::of(maps.ban_v4.as_fd())?;
    for (addr, ban) in v4.read_all(BATCH).context("reading ban_v4")? {
        all.push((Prefix::host(IpAddr::from(addr.to_ne_bytes())), ban));
    }
    let v6 = Entries::<filter_ban_v6_key, filter_ban>::of(maps.ban_v6.as_fd())?;
    for (key, ban) in v6.read_all(BATCH).context("reading ban_v6")? {
        all.push((Prefix::host(IpAddr::from(key.addr)), ban));
    }
    // LPM tries have no batched reads.
    let trie = Entries::<filter_ban_prefix_key, filter_ban>::of(maps.ban_prefixes.as_fd())?;
    let mut at = None;
    while let Some(key) = trie.next_key(at.as_ref())? {
        if let (Some(family), Some(ban)) = (family_of(key.family), trie.lookup(&key)?) {
            let len = (key.prefixlen - PREFIX_HEADER_BITS) as u8;
            all.push((
                Prefix {
                    family,
                    addr: key.addr,
                    len,
                },
                ban,
            ));
        }
        at = Some(key);
    }
    Ok(all)
}

/// The state of `ban` in force, as the program reads it.
fn in_force(ban: &filter_ban, committed: u64) -> &filter_ban_state {
    if ban.change > committed {
        &ban.before
    } else {
        &ban.now
    }
}

fn live(state: &filter_ban_state, now: u64) -> bool {
    state.banned != 0 && (state.expires_ns == 0 || state.expires_ns > now)
}

fn stats(maps: &FilterMaps<'_>) -> Result<filter_ban_stats> {
    let mut sum = filter_ban_stats::default();
    for cpu in maps::read_per_cpu::<filter_ban_stats>(maps.ban_stats, 0)? {
        sum.banned.packets += cpu.banned.packets;
        sum.banned.bytes += cpu.banned.bytes;
        sum.promoted += cpu.promoted;
        sum.promote_failed += cpu.promote_failed;
    }
    Ok(sum)
}

fn config(maps: &FilterMaps<'_>) -> Result<filter_ban_config> {
    Ok(lookup(maps.ban_config, &0u32.to_ne_bytes())?.unwrap_or_default())
}

/// The set in numbers, from two small reads.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BanSummary {
    /// Entries, expired ones not yet swept included.
    pub entries: u64,
    /// Of them, CIDRs shorter than a host.
    pub prefixes: u64,
    /// Per family for hosts; both families together for prefixes.
    pub capacity_hosts: u32,
    pub capacity_prefixes: u32,
    /// Packets dropped because their source was banned.
    pub banned: Counter,
    /// Sources rate limits and SYN-flood protection added.
    pub promoted: u64,
    /// Sources they could not add: the set was full.
    pub promote_failed: u64,
}

pub fn summary(maps: &FilterMaps<'_>) -> Result<BanSummary> {
    let (config, stats) = (config(maps)?, stats(maps)?);
    Ok(BanSummary {
        entries: config.hosts_v4
            + config.hosts_v6
            + config.prefixes
            + stats.promoted.saturating_sub(config.promoted_seen),
        prefixes: config.prefixes,
        capacity_hosts: MAX_HOSTS,
        capacity_prefixes: MAX_PREFIXES,
        banned: Counter {
            packets: stats.banned.packets,
            bytes: stats.banned.bytes,
        },
        promoted: stats.promoted,
        promote_failed: stats.promote_failed,
    })
}

/// One entry as `filter ban list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BanEntry {
    pub cidr: Prefix,
    /// operator, rate_limit, interface_rate_limit or syn_flood.
    pub origin: &'static str,
    pub reason: Option<String>,
    pub added_at: String,
    /// Null: never expires.
    pub expires_at: Option<String>,
    pub expires_in_ms: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
}

fn reasons(maps: &FilterMaps<'_>) -> Result<Vec<String>> {
    let entries = Entries::<u32, filter_ban_reason>::of(maps.ban_reasons.as_fd())?;
    let mut texts = vec![String::new(); REASONS as usize];
    for (index, reason) in entries
        .read_all(REASONS as usize)
        .context("reading ban_reasons")?
    {
        if let Some(slot) = texts.get_mut(index as usize) {
            *slot = read_text(&reason.text);
        }
    }
    Ok(texts)
}

fn origin(ban: &filter_ban_state) -> (&'static str, Option<u32>) {
    match filter_ban_origin(u32::from(ban.origin)) {
        filter_ban_origin::FILTER_BAN_RATE_LIMIT => ("rate_limit", Some(ban.reason)),
        filter_ban_origin::FILTER_BAN_INTERFACE_LIMIT => ("interface_rate_limit", None),
        filter_ban_origin::FILTER_BAN_SYN_FLOOD => ("syn_flood", None),
        _ => ("operator", None),
    }
}

/// The live entries in CIDR order, and how many expired ones wait for the
/// next change to sweep them.
pub fn list(maps: &FilterMaps<'_>) -> Result<(Vec<BanEntry>, usize)> {
    let anchor = BootAnchor::now();
    let texts = reasons(maps)?;
    let committed = config(maps)?.committed;
    let mut entries = Vec::new();
    let mut expired = 0;
    for (cidr, entry) in walk(maps)? {
        let ban = in_force(&entry, committed);
        if !live(ban, anchor.boottime_ns) {
            expired += 1;
            continue;
        }
        let (origin, rule) = origin(ban);
        let reason = match (origin, rule) {
            ("rate_limit", Some(rule)) => Some(format!("rate_limit rule {rule}")),
            ("interface_rate_limit", _) => Some("rate_limit (interface)".to_owned()),
            ("syn_flood", _) => Some("syn_flood".to_owned()),
            _ => texts
                .get(ban.reason as usize)
                .filter(|t| ban.reason != 0 && !t.is_empty())
                .cloned(),
        };
        let at = |ns: u64| clock::rfc3339(anchor.wall(ns));
        entries.push(BanEntry {
            cidr,
            origin,
            reason,
            added_at: at(ban.added_ns),
            expires_at: (ban.expires_ns != 0).then(|| at(ban.expires_ns)),
            expires_in_ms: (ban.expires_ns != 0)
                .then(|| (ban.expires_ns - anchor.boottime_ns) / 1_000_000),
            packets: entry.packets,
            bytes: entry.bytes,
        });
    }
    entries.sort_by_key(|a| a.cidr);
    Ok((entries, expired))
}

/// A CIDR to ban, for `ttl` or for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub prefix: Prefix,
    pub ttl: Option<Ttl>,
}

/// What a change did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Changed {
    /// New entries.
    pub added: usize,
    /// Entries that were there already: their TTL and reason start over,
    /// their counts stay.
    pub renewed: usize,
    pub deleted: Vec<Prefix>,
    /// Given to delete, but not in the set (or expired).
    pub not_banned: Vec<Prefix>,
    /// Expired entries this change deleted.
    pub swept: usize,
}

/// Sweeps the expired entries, deletes `del`, then adds `add` (the last
/// of a CIDR given twice wins) with `reason`. Either every addition fits
/// or nothing is added; in the kernel, all of it takes effect at once, at
/// the commit, or none of it.
pub fn change(
    maps: &FilterMaps<'_>,
    add: &[Ban],
    reason: Option<&str>,
    del: &[Prefix],
) -> Result<Changed> {
    let promoted_before = stats(maps)?.promoted;
    let now = BootAnchor::now().boottime_ns;
    let committed = config(maps)?.committed;
    let number = committed + 1;
    let mut changed = Changed::default();
    let mut present = settle(maps, committed, now, &mut changed)?;

    let mut deleted: FastMap<Prefix, filter_ban> = FastMap::default();
    for prefix in del {
        if let Some(old) = present.remove(prefix) {
            deleted.insert(*prefix, old);
            changed.deleted.push(*prefix);
        } else if !deleted.contains_key(prefix) {
            changed.not_banned.push(*prefix);
        }
    }
    let mut deletions: [Writes; 3] = Default::default();
    for (prefix, old) in &deleted {
        let unbanned = filter_ban_state {
            banned: 0,
            ..old.now
        };
        deletions[Table::of(prefix) as usize].push(prefix, &pending(old, unbanned, number));
    }
    write_all(maps, &deletions)?;

    let adding: FastMap<Prefix, Option<Ttl>> = add.iter().map(|b| (b.prefix, b.ttl)).collect();
    let mut held = count_tables(present.keys());
    check_room(&held, &present, &adding)?;
    let reason = match adding.is_empty() {
        true => 0,
        false => reason_index(maps, &present, &deleted, reason)?,
    };
    let mut additions: [Writes; 3] = Default::default();
    for (prefix, ttl) in &adding {
        let old = present.get(prefix).or_else(|| deleted.get(prefix));
        if present.contains_key(prefix) {
            changed.renewed += 1;
        } else {
            changed.added += 1;
            held[Table::of(prefix) as usize] += 1;
        }
        let state = filter_ban_state {
            expires_ns: ttl.map_or(0, |t| now + t.0.as_nanos() as u64),
            added_ns: now,
            reason,
            origin: filter_ban_origin::FILTER_BAN_OPERATOR.0 as u8,
            banned: 1,
            pad: [0; 2],
        };
        let entry = match old {
            Some(old) => pending(old, state, number),
            None => filter_ban {
                now: state,
                change: number,
                ..Default::default()
            },
        };
        additions[Table::of(prefix) as usize].push(prefix, &entry);
    }
    write_all(maps, &additions)?;

    // The commit: one write, which the program sees whole.
    let config = filter_ban_config {
        prefixes: held[Table::Prefixes as usize] as u64,
        hosts_v4: held[Table::V4 as usize] as u64,
        hosts_v6: held[Table::V6 as usize] as u64,
        promoted_seen: promoted_before,
        committed: number,
    };
    maps.ban_config
        .update(&0u32.to_ne_bytes(), bytes(&config), MapFlags::ANY)
        .context("writing ban_config")?;

    // Committed as "not banned": whatever remains, the next change sweeps.
    let mut unbanned: HashMap<Table, Vec<u8>> = HashMap::new();
    for prefix in deleted.keys().filter(|p| !adding.contains_key(p)) {
        push_key(prefix, unbanned.entry(Table::of(prefix)).or_default());
    }
    for (table, keys) in &unbanned {
        delete(table.map(maps), keys)?;
    }
    let mut used = used_reasons(&present);
    used.insert(reason);
    forget_unused_reasons(maps, &used)?;
    Ok(changed)
}

/// Entries of one table to write: their keys and values, concatenated.
#[derive(Default)]
struct Writes {
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl Writes {
    fn push(&mut self, prefix: &Prefix, entry: &filter_ban) {
        push_key(prefix, &mut self.keys);
        self.values.extend_from_slice(bytes(entry));
    }
}

fn write_all(maps: &FilterMaps<'_>, writes: &[Writes; 3]) -> Result<()> {
    for table in TABLES {
        let w = &writes[table as usize];
        if !w.keys.is_empty() {
            write(table, table.map(maps), &w.keys, &w.values)?;
        }
    }
    Ok(())
}

/// `old`'s entry with `now` waiting for change `number`; its counts stay.
fn pending(old: &filter_ban, now: filter_ban_state, number: u64) -> filter_ban {
    filter_ban {
        now,
        before: old.now,
        packets: old.packets,
        bytes: old.bytes,
        change: number,
    }
}

/// The entries in force, each as its state in force (in `now`): puts back
/// the entries a change killed before its commit left, and deletes those
/// that ban nobody (expired ones count as swept).
fn settle(
    maps: &FilterMaps<'_>,
    committed: u64,
    now: u64,
    changed: &mut Changed,
) -> Result<FastMap<Prefix, filter_ban>> {
    let walked = walk(maps)?;
    let mut present: FastMap<Prefix, filter_ban> =
        FastMap::with_capacity_and_hasher(walked.len(), Default::default());
    let mut gone: HashMap<Table, Vec<u8>> = HashMap::new();
    let mut put_back: [Writes; 3] = Default::default();
    for (prefix, mut ban) in walked {
        let uncommitted = ban.change > committed;
        if uncommitted {
            ban.now = ban.before;
            ban.change = 0;
        }
        if live(&ban.now, now) {
            if uncommitted {
                put_back[Table::of(&prefix) as usize].push(&prefix, &ban);
            }
            present.insert(prefix, ban);
        } else {
            changed.swept += usize::from(ban.now.banned != 0);
            push_key(&prefix, gone.entry(Table::of(&prefix)).or_default());
        }
    }
    for (table, keys) in &gone {
        delete(table.map(maps), keys)?;
    }
    write_all(maps, &put_back)?;
    Ok(present)
}

/// Deletes `keys` (concatenated) from `map`; returns how many.
fn delete(map: &dyn MapCore, keys: &[u8]) -> Result<usize> {
    let size = map.key_size() as usize;
    let count = keys.len() / size;
    if count == 0 {
        return Ok(0);
    }
    let name = map.name().to_string_lossy().into_owned();
    if map.map_type() == libbpf_rs::MapType::Hash {
        for chunk in keys.chunks(BATCH * size) {
            map.delete_batch(
                chunk,
                (chunk.len() / size) as u32,
                MapFlags::ANY,
                MapFlags::ANY,
            )
            .with_context(|| format!("deleting from {name}"))?;
        }
    } else {
        for key in keys.chunks(size) {
            map.delete(key)
                .with_context(|| format!("deleting from {name}"))?;
        }
    }
    Ok(count)
}

fn write(table: Table, map: &dyn MapCore, keys: &[u8], values: &[u8]) -> Result<()> {
    let full = |err: anyhow::Error| -> anyhow::Error {
        // E2BIG, as libbpf words it: a hash map at max_entries.
        if !format!("{err:#}").contains("Argument list too long") {
            return err;
        }
        Failure::new(format!(
            "the ban set's {} are full ({} entries): limiters filled it while this ran",
            table.describe(),
            table.capacity()
        ))
        .hint("delete bans with: meshbpf filter ban IFACE del CIDR...; or cover hosts with shorter CIDRs")
        .into()
    };
    let size = map.value_size() as usize;
    if table == Table::Prefixes {
        for (key, value) in keys
            .chunks(map.key_size() as usize)
            .zip(values.chunks(size))
        {
            map.update(key, value, MapFlags::ANY)
                .context("writing ban_prefixes")
                .map_err(full)?;
        }
        return Ok(());
    }
    write_batch(map, keys, values).map_err(full)
}

/// Entries per table, indexed by `Table as usize`.
fn count_tables<'a>(prefixes: impl Iterator<Item = &'a Prefix>) -> [usize; 3] {
    let mut counts = [0; 3];
    for p in prefixes {
        counts[Table::of(p) as usize] += 1;
    }
    counts
}

/// Refuses additions that would overflow a map, before anything is written.
fn check_room(
    held: &[usize; 3],
    present: &FastMap<Prefix, filter_ban>,
    adding: &FastMap<Prefix, Option<Ttl>>,
) -> Result<()> {
    let new = count_tables(adding.keys().filter(|p| !present.contains_key(p)));
    for table in TABLES {
        let (held, new) = (held[table as usize], new[table as usize]);
        if new > 0 && held + new > table.capacity() as usize {
            return Err(Failure::new(format!(
                "the ban set has room for {} {}; it holds {held} and {new} more would not fit: nothing was added",
                table.capacity(),
                table.describe()
            ))
            .hint("delete bans with: meshbpf filter ban IFACE del CIDR...; or cover hosts with shorter CIDRs")
            .into());
        }
    }
    Ok(())
}

/// The slot of `reason` in ban_reasons (0 for none): the one holding the
/// text already, or one no live entry uses.
fn reason_index(
    maps: &FilterMaps<'_>,
    present: &FastMap<Prefix, filter_ban>,
    deleted: &FastMap<Prefix, filter_ban>,
    reason: Option<&str>,
) -> Result<u32> {
    let Some(text) = reason.filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let texts = reasons(maps)?;
    if let Some(index) = (1..REASONS).find(|&i| texts[i as usize] == text) {
        return Ok(index);
    }
    // A deleted entry's reason stays in force until the commit.
    let mut used = used_reasons(present);
    used.extend(used_reasons(deleted));
    let Some(free) = (1..REASONS).find(|i| !used.contains(i)) else {
        return Err(Failure::new(format!(
            "{} different reasons are in use; there is no room for another",
            REASONS - 1
        ))
        .hint("reuse a reason text, or delete the bans of old ones")
        .into());
    };
    let mut slot = filter_ban_reason::default();
    for (dst, src) in slot.text.iter_mut().zip(text.bytes().take(MAX_REASON)) {
        *dst = src as i8;
    }
    maps.ban_reasons
        .update(&free.to_ne_bytes(), bytes(&slot), MapFlags::ANY)
        .context("writing ban_reasons")?;
    Ok(free)
}

fn used_reasons(entries: &FastMap<Prefix, filter_ban>) -> HashSet<u32> {
    entries
        .values()
        .filter(|b| origin(&b.now).0 == "operator")
        .map(|b| b.now.reason)
        .collect()
}

/// Clears the texts no live entry names any more.
fn forget_unused_reasons(maps: &FilterMaps<'_>, used: &HashSet<u32>) -> Result<()> {
    for (index, text) in reasons(maps)?.iter().enumerate() {
        let index = index as u32;
        if index != 0 && !text.is_empty() && !used.contains(&index) {
            maps.ban_reasons.update(
                &index.to_ne_bytes(),
                bytes(&filter_ban_reason::default()),
                MapFlags::ANY,
            )?;
        }
    }
    Ok(())
}
