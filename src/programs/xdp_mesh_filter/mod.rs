//! xdp_mesh_filter: CIDR, protocol and port rules compiled into lookups,
//! per-source rate limits and SYN-flood protection.
//!
//! A rule set lives under one of two generations: in the keys of the
//! per-rule maps and the tries, and as the inner maps (its table and
//! vectors) in that generation's slot of `tables` and `vectors`. Applying a
//! new one writes the inactive generation, flips `active` (one 4-byte map
//! write, which the program reads once per packet), then clears the old
//! generation: a packet sees the old rule set or the new one, never a mix.
//! The inner maps are created for each apply at the set's size; one that a
//! killed apply made but never put in a slot dies with its process.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject};

use crate::kernel::btf::OpenOpts;
use crate::kernel::netdev::Interface;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpfobj, maps as kmaps, verifier};
use crate::programs::capture::{self, capture_maps};
use crate::programs::maps::{self, bytes, lookup};
use crate::programs::xdp_counter::traffic::{self, Counter, COUNTERS_MAP};
use crate::programs::{Facets, Scope};
use crate::rules::bans::Ttl;
use crate::rules::compile::{CompiledFilter, Side};
use crate::rules::filter::{FilterRules, Rule};
use crate::rules::{Action, Family, Limit, PortRange, Prefix, Protocol};

use skel::types::{
    filter_action, filter_config, filter_family, filter_limit, filter_limits, filter_lookups,
    filter_prefix_key, filter_rule, filter_rule_action, filter_rule_protocol, filter_stats,
    filter_vector, filter_verdict, traffic_counter,
};

pub mod bans;
pub mod confirm;
pub mod health;
pub mod metrics;
pub mod rule_counters;
pub mod skel;
pub use skel::XdpMeshFilterSkel;

plain_data!(
    filter_config,
    filter_limit,
    filter_prefix_key,
    filter_rule,
    filter_rule_action,
    filter_stats,
    filter_vector,
    traffic_counter,
);

pub const PROGRAM: &str = "xdp_mesh_filter";

pub const FACETS: Facets = Facets {
    name: PROGRAM,
    scope: Scope::Interface,
    metrics: metrics::families,
    health: Some(health::checks),
    stats: None,
};

/// Rules in one generation of the rule set.
pub const MAX_RULES: u32 = filter_limits::FILTER_MAX_RULES.0;
const PREFIX_HEADER_BITS: u32 = filter_limits::FILTER_PREFIX_HEADER_BITS.0;

maps::map_set! {
    /// The filter's maps, from the skeleton at attach time or from the pins later.
    FilterMaps, PinnedMaps, XdpMeshFilterSkel {
        active,
        config = filter_config,
        src_prefixes,
        dst_prefixes,
        tables,
        vectors,
        rule_actions,
        rule_hits,
        rule_limits,
        rules,
        stats = filter_stats,
        counters,
        confirm,
        // The per-source rate-limiter LRU table.
        limiters,
        ban_v4,
        ban_v6,
        ban_prefixes,
        ban_reasons,
        ban_config,
        ban_stats,
    }
}

/// Opens and loads the program into the kernel, unattached and with no rules.
pub fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
) -> Result<XdpMeshFilterSkel<'obj>> {
    load_counting_into(object, btf, None)
}

/// Loads the program; with `from`, it counts on in that attachment's
/// pinned counters instead of fresh ones, so a swap does not reset the
/// l3/l4 counts, and a capture running there goes on here.
fn load_counting_into<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
    from: Option<&AttachmentDir>,
) -> Result<XdpMeshFilterSkel<'obj>> {
    let opts = OpenOpts::new(btf)?;
    verifier::load(PROGRAM, || {
        let mut open =
            skel::XdpMeshFilterSkelBuilder::default().open_opts(*opts.as_raw(), object)?;
        if let Some(from) = from {
            open.maps
                .counters
                .reuse_pinned_map(from.map(COUNTERS_MAP))?;
            capture::reuse(capture_maps!(mut open.maps), from)?;
        }
        open.load()
    })
}

/// Pins the program and every map into `dir`, uncommitted until a link joins.
pub fn pin(skel: &XdpMeshFilterSkel<'_>, dir: &AttachmentDir) -> Result<()> {
    dir.create()?;
    FilterMaps::pin(skel, dir)?;
    capture::pin(capture_maps!(skel.maps), dir)?;
    bpfobj::pin(
        skel.progs.filter_control.as_fd(),
        &dir.pin(confirm::CONTROL_PIN),
    )?;
    bpfobj::pin(skel.progs.xdp_mesh_filter.as_fd(), &dir.prog())
}

pub fn active_generation(maps: &FilterMaps<'_>) -> Result<u8> {
    let active: Option<u32> = lookup(maps.active, &0u32.to_ne_bytes())?;
    Ok(active.unwrap_or(0) as u8 & 1)
}

/// How an apply publishes its rule set.
#[derive(Debug, Clone, Copy)]
pub enum Publish<'fd> {
    /// Flip `active` and free the previous set.
    Now,
    /// Keep the previous set and arm the kernel's timer to put it back
    /// unless `filter confirm` comes within the window (see [`confirm`]).
    UnlessConfirmed {
        control: BorrowedFd<'fd>,
        window: Duration,
    },
}

/// Replaces the whole rule set atomically. Until the flip of `active`
/// nothing packets see has changed, so a failure (or a kill) before it
/// leaves the old rule set in force; after it, only cleanup remains. The
/// rules whose ids survive keep their counts (see [`rule_counters`]).
pub fn apply(
    maps: &FilterMaps<'_>,
    rules: &FilterRules,
    compiled: &CompiledFilter,
    publish: Publish<'_>,
) -> Result<u8> {
    let old = active_generation(maps)?;
    let new = 1 - old;
    let before = rule_counters::stored(maps, old).context("reading the rules' counts")?;
    let carried = rule_counters::carried(&before, rules);
    // An interrupted apply may have left a partial inactive generation.
    clear_generation(maps, new).context("clearing the inactive generation")?;
    let table = write_generation(maps, new, rules, compiled, &carried)
        .context("writing the new rule set")?;
    match publish {
        Publish::Now => {
            maps.active
                .update(
                    &0u32.to_ne_bytes(),
                    &(new as u32).to_ne_bytes(),
                    MapFlags::ANY,
                )
                .context("publishing the new rule set")?;
            // Deleting its inner maps also waits until no packet still
            // runs on the old set, so its counts are final below.
            clear_generation(maps, old).context("clearing the previous rule set")?;
        }
        Publish::UnlessConfirmed { control, window } => {
            confirm::arm(control, new, window)?;
            wait_for_packets(maps, new, &table)?;
        }
    }
    rule_counters::settle(maps, &before, new, rules).context("carrying the rules' counts")?;
    Ok(new)
}

/// Returns once no packet runs on what `active` said before: an update of
/// a map-in-map slot waits for running programs (synchronize_rcu), so
/// rewriting the new generation's slot with its own table is a barrier.
fn wait_for_packets(maps: &FilterMaps<'_>, gen: u8, table: &MapHandle) -> Result<()> {
    let fd = table.as_fd().as_raw_fd() as u32;
    maps.tables
        .update(
            &(gen as u32).to_ne_bytes(),
            &fd.to_ne_bytes(),
            MapFlags::ANY,
        )
        .context("waiting for packets on the previous rule set")?;
    Ok(())
}

/// Frees what the previous generation still holds once a confirmation
/// settled for the active one.
pub fn free_previous(maps: &FilterMaps<'_>) -> Result<()> {
    let active = active_generation(maps)?;
    clear_generation(maps, 1 - active).context("clearing the previous rule set")
}

fn write_generation(
    maps: &FilterMaps<'_>,
    gen: u8,
    rules: &FilterRules,
    compiled: &CompiledFilter,
    carried: &[traffic_counter],
) -> Result<MapHandle> {
    let table = table_map(compiled).context("creating the rule set's table")?;
    let vectors = vector_map(compiled).context("creating the rule set's vectors")?;
    for side in [Side::Src, Side::Dst] {
        let trie = [maps.src_prefixes, maps.dst_prefixes][side as usize];
        write_trie(trie, gen, &compiled.trie[side as usize])?;
    }
    write_rules(maps, gen, rules, compiled, carried)?;
    let key = (gen as u32).to_ne_bytes();
    for (outer, inner) in [(maps.tables, &table), (maps.vectors, &vectors)] {
        let fd = inner.as_fd().as_raw_fd() as u32;
        outer
            .update(&key, &fd.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| {
                format!(
                    "publishing {} to the program",
                    inner.name().to_string_lossy()
                )
            })?;
    }
    maps.config
        .update(&key, bytes(&config(compiled)), MapFlags::ANY)?;
    Ok(table)
}

fn config(compiled: &CompiledFilter) -> filter_config {
    let flag = |set: bool, f: filter_lookups| if set { f.0 as u8 } else { 0 };
    let l = &compiled.lookups;
    let mut protocols = [0u32; 512];
    for (half, ids) in protocols.chunks_mut(256).zip(&compiled.protocols) {
        half.copy_from_slice(ids);
    }
    filter_config {
        rate_limit: limit(compiled.rate_limit.as_ref()),
        syn_flood: limit(compiled.syn_flood.as_ref()),
        rules: compiled.rules as u32,
        default_action: action(compiled.default),
        lookups: flag(l.src, filter_lookups::FILTER_LOOKUP_SRC)
            | flag(l.dst, filter_lookups::FILTER_LOOKUP_DST)
            | flag(l.protocol, filter_lookups::FILTER_LOOKUP_PROTOCOL)
            | flag(l.sport, filter_lookups::FILTER_LOOKUP_SPORT)
            | flag(l.dport, filter_lookups::FILTER_LOOKUP_DPORT)
            | flag(l.v4_trie[0], filter_lookups::FILTER_LOOKUP_SRC_V4_TRIE)
            | flag(l.v4_trie[1], filter_lookups::FILTER_LOOKUP_DST_V4_TRIE),
        pad: [0; 2],
        no_prefix: compiled.no_prefix,
        no_ports: compiled.no_ports,
        arp: compiled.arp,
        all: compiled.all.unwrap_or(u32::MAX),
        protocols,
    }
}

/// The generation's table as an inner map of `tables`, filled: two entries
/// to a value, the even one in the low half.
fn table_map(compiled: &CompiledFilter) -> Result<MapHandle> {
    let pairs: Vec<u64> = compiled
        .table
        .chunks(2)
        .map(|pair| u64::from(pair[0]) | u64::from(pair.get(1).copied().unwrap_or(0)) << 32)
        .collect();
    let map = kmaps::create_inner_array("filter_table", 8, pairs.len())?;
    let keys: Vec<u8> = (0..pairs.len() as u32).flat_map(u32::to_ne_bytes).collect();
    let values: Vec<u8> = pairs.iter().flat_map(|v| v.to_ne_bytes()).collect();
    write_batch(&map, &keys, &values)?;
    Ok(map)
}

/// The distinct vectors as an inner map of `vectors`, filled.
fn vector_map(compiled: &CompiledFilter) -> Result<MapHandle> {
    let size = std::mem::size_of::<filter_vector>();
    let map = kmaps::create_inner_array("filter_vectors", size, compiled.vectors.len())?;
    let keys: Vec<u8> = (0..compiled.vectors.len() as u32)
        .flat_map(u32::to_ne_bytes)
        .collect();
    let mut values = Vec::with_capacity(size * compiled.vectors.len());
    for words in &compiled.vectors {
        values.extend_from_slice(bytes(&vector(words)));
    }
    write_batch(&map, &keys, &values)?;
    Ok(map)
}

fn write_batch(map: &dyn MapCore, keys: &[u8], values: &[u8]) -> Result<()> {
    kmaps::update_batch(map, keys, values)
}

/// A vector in the kernel's layout: its words padded to the full width,
/// with the summary and the first bit the scan starts from.
fn vector(words: &[u64]) -> filter_vector {
    let mut v = filter_vector::default();
    v.words[..words.len()].copy_from_slice(words);
    for (w, &word) in words.iter().enumerate() {
        if word != 0 {
            v.summary[w / 64] |= 1 << (w % 64);
        }
    }
    v.first = words
        .iter()
        .enumerate()
        .find(|(_, &word)| word != 0)
        .map_or(u32::MAX, |(w, word)| {
            (w * 64) as u32 + word.trailing_zeros()
        });
    v
}

fn write_trie(trie: &dyn MapCore, gen: u8, prefixes: &[(Prefix, u32)]) -> Result<()> {
    for (prefix, id) in prefixes {
        trie.update(
            bytes(&prefix_key(gen, prefix)),
            &id.to_ne_bytes(),
            MapFlags::ANY,
        )
        .with_context(|| {
            format!(
                "adding prefix {prefix} to {}",
                trie.name().to_string_lossy()
            )
        })?;
    }
    Ok(())
}

fn action(a: Action) -> u8 {
    match a {
        Action::Allow => filter_action::FILTER_ALLOW.0 as u8,
        Action::Deny => filter_action::FILTER_DENY.0 as u8,
    }
}

fn family(f: Family) -> u8 {
    match f {
        Family::V4 => filter_family::FILTER_IPV4.0 as u8,
        Family::V6 => filter_family::FILTER_IPV6.0 as u8,
    }
}

/// GCRA parameters for a token bucket of `burst` at `pps`.
fn limit(l: Option<&Limit>) -> filter_limit {
    match l {
        None => filter_limit::default(),
        Some(l) => {
            let interval_ns = 1_000_000_000 / l.pps;
            filter_limit {
                interval_ns,
                tolerance_ns: (l.burst - 1) * interval_ns,
                pps: l.pps,
                burst: l.burst,
                ban_ns: l.ban.map_or(0, |ttl| ttl.0.as_nanos() as u64),
            }
        }
    }
}

fn prefix_key(gen: u8, p: &Prefix) -> filter_prefix_key {
    filter_prefix_key {
        prefixlen: PREFIX_HEADER_BITS + p.len as u32,
        r#gen,
        family: family(p.family),
        addr: p.addr,
        pad: [0; 2],
    }
}

/// `carried[i]`: what rule `i` counted under earlier rule sets.
fn write_rules(
    maps: &FilterMaps<'_>,
    gen: u8,
    rules: &FilterRules,
    compiled: &CompiledFilter,
    carried: &[traffic_counter],
) -> Result<()> {
    // One batch per map rather than a syscall per entry: 10,000 rules were
    // 30,000 updates.
    let count = rules.rules.len();
    let mut keys = Vec::with_capacity(4 * count);
    let mut described = Vec::with_capacity(std::mem::size_of::<filter_rule>() * count);
    let mut does = Vec::with_capacity(std::mem::size_of::<filter_rule_action>() * count);
    for ((index, rule), carried) in rules.rules.iter().enumerate().zip(carried) {
        keys.extend_from_slice(&rule_key(gen, index as u32));
        described.extend_from_slice(bytes(&filter_rule {
            carried: *carried,
            ..describe(rule)
        }));
        does.extend_from_slice(bytes(&filter_rule_action {
            action: action(rule.action),
            rate_limited: u8::from(rule.rate_limit.is_some()),
            pad: [0; 2],
        }));
    }
    write_batch(maps.rules, &keys, &described)?;
    write_batch(maps.rule_actions, &keys, &does)?;
    let per_cpu =
        (std::mem::size_of::<Counter>().next_multiple_of(8)) * libbpf_rs::num_possible_cpus()?;
    write_batch(maps.rule_hits, &keys, &vec![0u8; per_cpu * count])?;
    let mut limit_keys = Vec::new();
    let mut limits = Vec::new();
    for (index, l) in &compiled.rule_limits {
        limit_keys.extend_from_slice(&rule_key(gen, *index));
        limits.extend_from_slice(bytes(&limit(Some(l))));
    }
    write_batch(maps.rule_limits, &limit_keys, &limits)?;
    Ok(())
}

/// How `filter_rule` records a rule's protocol: its kind and number.
fn protocol_code(p: Protocol) -> (u8, u8) {
    match (p, p.ip_number()) {
        (_, Some(number)) => (filter_rule_protocol::FILTER_RULE_IP_NUMBER.0 as u8, number),
        (Protocol::Arp, None) => (filter_rule_protocol::FILTER_RULE_ARP.0 as u8, 0),
        _ => (filter_rule_protocol::FILTER_RULE_ANY_IP.0 as u8, 0),
    }
}

fn protocol_of(kind: u8, number: u8) -> Protocol {
    match kind {
        k if k == filter_rule_protocol::FILTER_RULE_IP_NUMBER.0 as u8 => {
            Protocol::from_number(number)
        }
        k if k == filter_rule_protocol::FILTER_RULE_ARP.0 as u8 => Protocol::Arp,
        _ => Protocol::Any,
    }
}

fn family_of(code: u8) -> Option<Family> {
    match code {
        c if c == family(Family::V4) => Some(Family::V4),
        c if c == family(Family::V6) => Some(Family::V6),
        _ => None,
    }
}

/// Reads back what [`describe`] wrote.
fn undescribe(d: &filter_rule) -> Rule {
    let prefix = |fam: u8, addr: [u8; 16], len: u8| {
        family_of(fam).map(|family| Prefix { family, addr, len })
    };
    let range = |lo: u16, hi: u16| (lo <= hi).then_some(PortRange { lo, hi });
    let name = read_text(&d.name);
    Rule {
        id: read_text(&d.id),
        action: if d.action == action(Action::Deny) {
            Action::Deny
        } else {
            Action::Allow
        },
        name: (!name.is_empty()).then_some(name),
        src: prefix(d.src_family, d.src, d.src_len),
        dst: prefix(d.dst_family, d.dst, d.dst_len),
        protocol: protocol_of(d.protocol_kind, d.ip_proto),
        sport: range(d.sport_lo, d.sport_hi),
        dport: range(d.dport_lo, d.dport_hi),
        // filter_rule has no room for it: read_rules takes it from rule_limits.
        rate_limit: (d.has_limit != 0).then_some(Limit {
            pps: d.limit_pps,
            burst: d.limit_burst,
            ban: None,
        }),
    }
}

/// A rule as `filter show` will read it back once applied (a long name
/// is cut to fit), for comparing a file with what the kernel holds.
pub fn as_stored(rule: &Rule) -> Rule {
    let mut stored = undescribe(&describe(rule));
    if let (Some(limit), Some(given)) = (&mut stored.rate_limit, rule.rate_limit) {
        limit.ban = given.ban;
    }
    stored
}

/// The rule as written, in the fixed layout `filter show` reads back.
fn describe(rule: &Rule) -> filter_rule {
    let (protocol_kind, ip_proto) = protocol_code(rule.protocol);
    let mut d = filter_rule {
        action: action(rule.action),
        protocol_kind,
        ip_proto,
        ..Default::default()
    };
    if let Some(src) = rule.src {
        (d.src, d.src_family, d.src_len) = (src.addr, family(src.family), src.len);
    }
    if let Some(dst) = rule.dst {
        (d.dst, d.dst_family, d.dst_len) = (dst.addr, family(dst.family), dst.len);
    }
    (d.sport_lo, d.sport_hi) = rule.sport.map(|r| (r.lo, r.hi)).unwrap_or((1, 0));
    (d.dport_lo, d.dport_hi) = rule.dport.map(|r| (r.lo, r.hi)).unwrap_or((1, 0));
    if let Some(l) = rule.rate_limit {
        (d.has_limit, d.limit_pps, d.limit_burst) = (1, l.pps, l.burst);
    }
    copy_text(&mut d.name, rule.name.as_deref().unwrap_or(""));
    copy_text(&mut d.id, &rule.id);
    d
}

/// Copies as much of `text` as fits before a terminating NUL.
fn copy_text(field: &mut [i8], text: &str) {
    let room = field.len() - 1;
    for (slot, byte) in field.iter_mut().zip(text.bytes().take(room)) {
        *slot = byte as i8;
    }
}

/// Reads back what [`copy_text`] wrote.
fn read_text(field: &[i8]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn clear_generation(maps: &FilterMaps<'_>, gen: u8) -> Result<()> {
    let prefix_gen = std::mem::offset_of!(filter_prefix_key, r#gen);
    for trie in [maps.src_prefixes, maps.dst_prefixes] {
        let stale: Vec<Vec<u8>> = trie
            .keys()
            .filter(|k| k.get(prefix_gen).copied() == Some(gen))
            .collect();
        for key in stale {
            trie.delete(&key)?;
        }
    }
    // Emptying a slot lets the kernel free its inner map once no packet
    // that read it is still running.
    let key = (gen as u32).to_ne_bytes();
    for outer in [maps.tables, maps.vectors] {
        if outer.lookup(&key, MapFlags::ANY)?.is_some() {
            outer.delete(&key)?;
        }
    }
    Ok(())
}

/// The filter's own counters, summed over CPUs.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FilterCounters {
    pub verdicts: Verdicts,
    /// Packets no rule matched, which got the default policy.
    pub defaulted: Counter,
    pub rate_limited: Counter,
    pub syn_dropped: Counter,
    /// Sources refused at least once by a rate limit / by SYN-flood protection
    /// (as long as the limiter table remembers them).
    pub rate_limited_sources: u64,
    pub syn_flood_sources: u64,
    /// The ban set: its size and what it dropped.
    pub bans: bans::BanSummary,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Verdicts {
    pub pass: Counter,
    pub drop: Counter,
}

pub fn read_stats(maps: &FilterMaps<'_>) -> Result<FilterCounters> {
    let mut sum = FilterCounters::default();
    for cpu in maps::read_per_cpu::<filter_stats>(maps.stats, 0)? {
        let add = |sum: &mut Counter, c: &traffic_counter| sum.add(c.packets, c.bytes);
        add(
            &mut sum.verdicts.pass,
            &cpu.verdicts[filter_verdict::FILTER_PASS.0 as usize],
        );
        add(
            &mut sum.verdicts.drop,
            &cpu.verdicts[filter_verdict::FILTER_DROP.0 as usize],
        );
        add(&mut sum.defaulted, &cpu.defaulted);
        add(&mut sum.rate_limited, &cpu.rate_limited);
        add(&mut sum.syn_dropped, &cpu.syn_dropped);
        sum.rate_limited_sources += cpu.rate_limited_sources;
        sum.syn_flood_sources += cpu.syn_flood_sources;
    }
    sum.bans = bans::summary(maps)?;
    Ok(sum)
}

pub fn read_traffic(maps: &FilterMaps<'_>) -> Result<traffic::Traffic> {
    traffic::read_counters(maps.counters)
}

/// The key of rule `index` of generation `gen` in the per-rule maps.
fn rule_key(gen: u8, index: u32) -> [u8; 4] {
    (gen as u32 * MAX_RULES + index).to_ne_bytes()
}

/// The active rule set as `filter show` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActiveRules {
    pub generation: u8,
    pub default: Action,
    pub rate_limit: Option<Limit>,
    pub syn_flood: Option<Limit>,
    pub rules: Vec<ShownRule>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ShownRule {
    pub index: u32,
    #[serde(flatten)]
    pub rule: Rule,
    pub packets: u64,
    pub bytes: u64,
}

pub fn read_rules(maps: &FilterMaps<'_>) -> Result<ActiveRules> {
    let gen = active_generation(maps)?;
    let config: filter_config =
        lookup(maps.config, &(gen as u32).to_ne_bytes())?.unwrap_or_default();
    let limit_back = |l: &filter_limit| {
        (l.interval_ns != 0).then_some(Limit {
            pps: l.pps,
            burst: l.burst,
            ban: (l.ban_ns != 0).then_some(Ttl(Duration::from_nanos(l.ban_ns))),
        })
    };
    let rules = rule_counters::stored(maps, gen)?
        .iter()
        .enumerate()
        .map(|(index, stored)| {
            let total = stored.total();
            let mut rule = undescribe(&stored.described);
            if rule.rate_limit.is_some() {
                let limit: Option<filter_limit> =
                    lookup(maps.rule_limits, &rule_key(gen, index as u32))?;
                rule.rate_limit = limit.as_ref().and_then(limit_back).or(rule.rate_limit);
            }
            Ok(ShownRule {
                index: index as u32,
                rule,
                packets: total.packets,
                bytes: total.bytes,
            })
        })
        .collect::<Result<_>>()?;
    Ok(ActiveRules {
        generation: gen,
        default: if config.default_action == action(Action::Deny) {
            Action::Deny
        } else {
            Action::Allow
        },
        rate_limit: limit_back(&config.rate_limit),
        syn_flood: limit_back(&config.syn_flood),
        rules,
    })
}

/// Loads the program with its rules and pins it into `dir`, uncommitted,
/// counting on in the counters of `from`: a swap then moves `from`'s link
/// onto it.
pub fn install(
    dir: &AttachmentDir,
    btf: Option<&Path>,
    from: &AttachmentDir,
    rules: &FilterRules,
    compiled: &CompiledFilter,
) -> Result<()> {
    let mut object = MaybeUninit::uninit();
    let skel = load_counting_into(&mut object, btf, Some(from))?;
    apply_fresh(&skel, rules, compiled)?;
    pin(&skel, dir)
}

/// The first rule set of a freshly loaded program, in force at once.
fn apply_fresh(
    skel: &XdpMeshFilterSkel<'_>,
    rules: &FilterRules,
    compiled: &CompiledFilter,
) -> Result<u8> {
    apply(
        &FilterMaps::of_skeleton(skel),
        rules,
        compiled,
        Publish::Now,
    )
}

/// Loads with rules, attaches and pins; the link pin goes last and commits.
/// `ready` runs between the rules and the link, and its error stops it.
pub fn attach(
    dir: &AttachmentDir,
    iface: &Interface,
    mode: XdpMode,
    btf: Option<&Path>,
    rules: &FilterRules,
    compiled: &CompiledFilter,
    ready: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let mut object = MaybeUninit::uninit();
    let skel = load(&mut object, btf)?;
    apply_fresh(&skel, rules, compiled)?;
    ready()?;
    let link = xdp::create_link(skel.progs.xdp_mesh_filter.as_fd(), iface, mode)?;
    pin(&skel, dir)?;
    bpfobj::pin(link.as_fd(), &dir.link())
}
