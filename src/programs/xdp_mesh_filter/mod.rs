//! xdp_mesh_filter: CIDR, protocol and port rules compiled into lookups,
//! per-source rate limits and SYN-flood protection.
//!
//! A rule set lives under one of two generations in every map. Applying a
//! new one writes the inactive generation, flips `active` (one 4-byte map
//! write, which the program reads once per packet), then clears the old
//! generation: a packet sees the old rule set or the new one, never a mix.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};

use crate::kernel::btf::OpenOpts;
use crate::kernel::netdev::Interface;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::kernel::xdp::{self, XdpMode};
use crate::kernel::{bpfobj, verifier};
use crate::programs::maps::{self, bytes, lookup};
use crate::programs::xdp_counter::traffic::{self, Counter, COUNTERS_MAP};
use crate::programs::{Facets, Scope};
use crate::rules::compile::{
    CompiledFilter, Decision, DecisionKey, PortClasses, ANY_CLASS, NO_PORTS,
};
use crate::rules::filter::{FilterRules, Rule};
use crate::rules::{Action, Family, Limit, PortRange, Prefix, Protocol};

use skel::types::{
    filter_action, filter_config, filter_decision, filter_family, filter_flags, filter_key,
    filter_limit, filter_limits, filter_port_classes, filter_prefix_key, filter_prefix_probe,
    filter_prefix_value, filter_proto, filter_rule, filter_stats, filter_verdict, traffic_counter,
};

pub mod health;
pub mod metrics;
pub mod skel;
pub use skel::XdpMeshFilterSkel;

plain_data!(
    filter_config,
    filter_decision,
    filter_key,
    filter_limit,
    filter_port_classes,
    filter_prefix_key,
    filter_prefix_probe,
    filter_prefix_value,
    filter_rule,
    filter_stats,
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
const PORTS_PER_GEN: u32 = filter_limits::FILTER_PORTS_PER_GEN.0;
const PREFIX_HEADER_BITS: u32 = filter_limits::FILTER_PREFIX_HEADER_BITS.0;
const HASH_LENGTHS: usize = filter_limits::FILTER_HASH_LENGTHS.0 as usize;
const NO_LENGTH: u8 = filter_limits::FILTER_NO_LENGTH.0 as u8;
const USE_TRIE: u8 = filter_limits::FILTER_USE_TRIE.0 as u8;
/// Decisions are keyed by protocol class FILTER_TCP..=FILTER_ARP.
const PROTO_CLASSES: usize = filter_proto::FILTER_ARP.0 as usize + 1;

maps::map_set! {
    /// The filter's maps, from the skeleton at attach time or from the pins later.
    FilterMaps, PinnedMaps, XdpMeshFilterSkel {
        active,
        config = filter_config,
        src_prefixes,
        dst_prefixes,
        src_exact,
        dst_exact,
        port_classes,
        decisions,
        rule_hits,
        rule_limits,
        rules,
        stats = filter_stats,
        counters,
        // The per-source rate-limiter LRU table.
        limiters,
    }
}

/// Opens and loads the program into the kernel, unattached and with no rules.
pub fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
) -> Result<XdpMeshFilterSkel<'obj>> {
    load_counting_into(object, btf, None)
}

/// Loads the program; with `counters`, it counts on in that pinned map
/// instead of a fresh one, so a swap does not reset the l3/l4 counts.
fn load_counting_into<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    btf: Option<&Path>,
    counters: Option<&Path>,
) -> Result<XdpMeshFilterSkel<'obj>> {
    let opts = OpenOpts::new(btf)?;
    verifier::load(PROGRAM, || {
        let mut open =
            skel::XdpMeshFilterSkelBuilder::default().open_opts(*opts.as_raw(), object)?;
        if let Some(pinned) = counters {
            open.maps.counters.reuse_pinned_map(pinned)?;
        }
        open.load()
    })
}

/// Pins the program and every map into `dir`, uncommitted until a link joins.
pub fn pin(skel: &XdpMeshFilterSkel<'_>, dir: &AttachmentDir) -> Result<()> {
    dir.create()?;
    FilterMaps::pin(skel, dir)?;
    bpfobj::pin(skel.progs.xdp_mesh_filter.as_fd(), &dir.prog())
}

pub fn active_generation(maps: &FilterMaps<'_>) -> Result<u8> {
    let active: Option<u32> = lookup(maps.active, &0u32.to_ne_bytes())?;
    Ok(active.unwrap_or(0) as u8 & 1)
}

/// Replaces the whole rule set atomically. Until the flip of `active`
/// nothing packets see has changed, so a failure (or a kill) before it
/// leaves the old rule set in force; after it, only cleanup remains.
pub fn apply(maps: &FilterMaps<'_>, rules: &FilterRules, compiled: &CompiledFilter) -> Result<u8> {
    let old = active_generation(maps)?;
    let new = 1 - old;
    // An interrupted apply may have left a partial inactive generation.
    clear_generation(maps, new).context("clearing the inactive generation")?;
    write_generation(maps, new, rules, compiled).context("writing the new rule set")?;
    maps.active
        .update(
            &0u32.to_ne_bytes(),
            &(new as u32).to_ne_bytes(),
            MapFlags::ANY,
        )
        .context("publishing the new rule set")?;
    clear_generation(maps, old).context("clearing the previous rule set")?;
    Ok(new)
}

fn write_generation(
    maps: &FilterMaps<'_>,
    gen: u8,
    rules: &FilterRules,
    compiled: &CompiledFilter,
) -> Result<()> {
    let split = Split::of(&compiled.decisions);
    let src_probes = write_prefixes(
        maps.src_prefixes,
        maps.src_exact,
        gen,
        &compiled.src_prefixes,
        &split.src,
    )?;
    let dst_probes = write_prefixes(
        maps.dst_prefixes,
        maps.dst_exact,
        gen,
        &compiled.dst_prefixes,
        &split.dst,
    )?;
    write_ports(
        maps.port_classes,
        gen,
        &compiled.tcp_ports,
        &compiled.udp_ports,
    )?;
    write_decisions(maps.decisions, gen, &split.rest)?;
    write_rules(maps, gen, rules, compiled)?;
    let config = filter_config {
        rate_limit: limit(compiled.rate_limit.as_ref()),
        syn_flood: limit(compiled.syn_flood.as_ref()),
        rules: rules.rules.len() as u32,
        default_action: action(compiled.default),
        decision_kinds: decision_kinds(&compiled.decisions),
        src_probes,
        dst_probes,
        pad: [0; 2],
        src_alone: split.src.get(&0).copied().unwrap_or_default(),
        dst_alone: split.dst.get(&0).copied().unwrap_or_default(),
    };
    maps.config
        .update(&(gen as u32).to_ne_bytes(), bytes(&config), MapFlags::ANY)?;
    Ok(())
}

/// Per protocol class, the decision that depends on one side's class alone.
type Alone = [filter_decision; PROTO_CLASSES];

/// The compiled decisions, sorted by where the program finds them: with
/// the source's prefix entry, with the destination's, or in `decisions`.
struct Split<'a> {
    src: HashMap<u32, Alone>,
    dst: HashMap<u32, Alone>,
    rest: Vec<&'a (DecisionKey, Decision)>,
}

impl<'a> Split<'a> {
    fn of(decisions: &'a [(DecisionKey, Decision)]) -> Self {
        let mut split = Split {
            src: HashMap::new(),
            dst: HashMap::new(),
            rest: Vec::new(),
        };
        for entry @ (key, decision) in decisions {
            let side = match (
                key.sport == NO_PORTS,
                key.src == ANY_CLASS,
                key.dst == ANY_CLASS,
            ) {
                (true, false, true) => Some((&mut split.src, key.src)),
                (true, true, false) => Some((&mut split.dst, key.dst)),
                _ => None,
            };
            match side {
                Some((alone, class)) => {
                    let decided = filter_flags::FILTER_DECIDED.0 as u8;
                    alone
                        .entry(class)
                        .or_insert([filter_decision::default(); PROTO_CLASSES])
                        [key.proto as usize] = decision_value(decision, decided);
                }
                None => split.rest.push(entry),
            }
        }
        split
    }
}

fn decision_value(decision: &Decision, extra_flags: u8) -> filter_decision {
    let flag = |set: bool, f: filter_flags| if set { f.0 as u8 } else { 0 };
    filter_decision {
        rule: decision.rule,
        action: action(decision.action),
        flags: extra_flags
            | flag(decision.needs_ports, filter_flags::FILTER_NEEDS_PORTS)
            | flag(decision.rate_limited, filter_flags::FILTER_RATE_LIMITED),
        pad: [0; 2],
    }
}

/// Which kinds of address keys the decisions use, so the program skips
/// lookups that cannot hit.
fn decision_kinds(decisions: &[(DecisionKey, Decision)]) -> u8 {
    let flag = |f: filter_flags| f.0 as u8;
    decisions
        .iter()
        .filter(|(key, _)| key.sport == NO_PORTS)
        .fold(0, |kinds, (key, _)| {
            kinds
                | match (key.src == ANY_CLASS, key.dst == ANY_CLASS) {
                    (false, true) => flag(filter_flags::FILTER_SRC_DECISIONS),
                    (true, false) => flag(filter_flags::FILTER_DST_DECISIONS),
                    _ => flag(filter_flags::FILTER_PAIR_DECISIONS),
                }
        })
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

/// Writes one side's prefixes, per family into the exact-match hash when
/// the family uses few prefix lengths, else into the trie, each with the
/// decisions of its class alone; returns the probes that tell the program
/// which map to look in (see mesh_filter.h).
fn write_prefixes(
    trie: &dyn MapCore,
    exact: &dyn MapCore,
    gen: u8,
    prefixes: &[(Prefix, u32)],
    alone: &HashMap<u32, Alone>,
) -> Result<[[filter_prefix_probe; HASH_LENGTHS]; 2]> {
    let end = filter_prefix_probe {
        len: NO_LENGTH,
        mask: [0; 16],
    };
    let mut probes = [[end; HASH_LENGTHS]; 2];
    for (list, family) in probes.iter_mut().zip([Family::V4, Family::V6]) {
        let of_family: Vec<&(Prefix, u32)> = prefixes
            .iter()
            .filter(|(p, _)| p.family == family)
            .collect();
        let mut lengths: Vec<u8> = of_family.iter().map(|(p, _)| p.len).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        let map = if lengths.len() <= HASH_LENGTHS {
            for (probe, len) in list.iter_mut().zip(lengths) {
                *probe = filter_prefix_probe {
                    len,
                    mask: mask(len),
                };
            }
            exact
        } else {
            list[0].len = USE_TRIE;
            trie
        };
        for (prefix, class) in of_family {
            let value = filter_prefix_value {
                class: *class,
                pad: 0,
                alone: alone.get(class).copied().unwrap_or_default(),
            };
            map.update(
                bytes(&prefix_key(gen, prefix)),
                bytes(&value),
                MapFlags::ANY,
            )
            .with_context(|| {
                format!("adding prefix {prefix} to {}", map.name().to_string_lossy())
            })?;
        }
    }
    Ok(probes)
}

/// The address mask of a prefix length: `len` one bits, then zeros.
fn mask(len: u8) -> [u8; 16] {
    let mut mask = [0u8; 16];
    for (i, byte) in mask.iter_mut().enumerate() {
        let ones = (len as usize).saturating_sub(i * 8).min(8);
        *byte = !(0xFFu16 >> ones) as u8;
    }
    mask
}

fn write_ports(map: &dyn MapCore, gen: u8, tcp: &PortClasses, udp: &PortClasses) -> Result<()> {
    let base = gen as u32 * PORTS_PER_GEN;
    let mut keys = Vec::with_capacity(PORTS_PER_GEN as usize * 4);
    let mut values = Vec::with_capacity(PORTS_PER_GEN as usize * 4);
    for (offset, classes) in [(0u32, tcp), (65536, udp)] {
        for port in 0..65536usize {
            keys.extend_from_slice(&(base + offset + port as u32).to_ne_bytes());
            let value = filter_port_classes {
                sport: classes.sport[port],
                dport: classes.dport[port],
            };
            values.extend_from_slice(bytes(&value));
        }
    }
    map.update_batch(&keys, &values, PORTS_PER_GEN, MapFlags::ANY, MapFlags::ANY)
        .context("writing port classes")
}

fn decision_key(gen: u8, key: &DecisionKey) -> filter_key {
    filter_key {
        src: key.src,
        dst: key.dst,
        sport: key.sport,
        dport: key.dport,
        proto: key.proto as u8,
        r#gen,
        pad: [0; 2],
    }
}

fn write_decisions(
    map: &dyn MapCore,
    gen: u8,
    decisions: &[&(DecisionKey, Decision)],
) -> Result<()> {
    if decisions.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(decisions.len() * std::mem::size_of::<filter_key>());
    let mut values = Vec::with_capacity(decisions.len() * std::mem::size_of::<filter_decision>());
    for (key, decision) in decisions {
        keys.extend_from_slice(bytes(&decision_key(gen, key)));
        values.extend_from_slice(bytes(&decision_value(decision, 0)));
    }
    map.update_batch(
        &keys,
        &values,
        decisions.len() as u32,
        MapFlags::ANY,
        MapFlags::ANY,
    )
    .context("writing decisions")
}

fn write_rules(
    maps: &FilterMaps<'_>,
    gen: u8,
    rules: &FilterRules,
    compiled: &CompiledFilter,
) -> Result<()> {
    let cpus = libbpf_rs::num_possible_cpus()?;
    let zero = vec![vec![0u8; std::mem::size_of::<Counter>()]; cpus];
    for (index, rule) in rules.rules.iter().enumerate() {
        let key = (gen as u32 * MAX_RULES + index as u32).to_ne_bytes();
        maps.rules
            .update(&key, bytes(&describe(rule)), MapFlags::ANY)?;
        maps.rule_hits.update_percpu(&key, &zero, MapFlags::ANY)?;
    }
    for (index, l) in &compiled.rule_limits {
        let key = (gen as u32 * MAX_RULES + index).to_ne_bytes();
        maps.rule_limits
            .update(&key, bytes(&limit(Some(l))), MapFlags::ANY)?;
    }
    Ok(())
}

/// How `filter_rule.protocol` records a rule's protocol ("any IP" has no
/// packet class of its own, so it borrows FILTER_NON_IP's number).
const PROTOCOLS: [(Protocol, filter_proto); 6] = [
    (Protocol::Tcp, filter_proto::FILTER_TCP),
    (Protocol::Udp, filter_proto::FILTER_UDP),
    (Protocol::Icmp, filter_proto::FILTER_ICMP),
    (Protocol::Icmpv6, filter_proto::FILTER_ICMPV6),
    (Protocol::Arp, filter_proto::FILTER_ARP),
    (Protocol::Any, filter_proto::FILTER_NON_IP),
];

fn proto(p: Protocol) -> u8 {
    PROTOCOLS
        .iter()
        .find(|(q, _)| *q == p)
        .map(|(_, c)| c.0 as u8)
        .unwrap_or_default()
}

fn protocol_of(code: u8) -> Protocol {
    PROTOCOLS
        .iter()
        .find(|(_, c)| c.0 as u8 == code)
        .map(|(p, _)| *p)
        .unwrap_or(Protocol::Any)
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
    let name: Vec<u8> = d
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Rule {
        action: if d.action == action(Action::Deny) {
            Action::Deny
        } else {
            Action::Allow
        },
        name: (!name.is_empty()).then(|| String::from_utf8_lossy(&name).into_owned()),
        src: prefix(d.src_family, d.src, d.src_len),
        dst: prefix(d.dst_family, d.dst, d.dst_len),
        protocol: protocol_of(d.protocol),
        sport: range(d.sport_lo, d.sport_hi),
        dport: range(d.dport_lo, d.dport_hi),
        rate_limit: (d.has_limit != 0).then_some(Limit {
            pps: d.limit_pps,
            burst: d.limit_burst,
        }),
    }
}

/// The rule as written, in the fixed layout `filter show` reads back.
fn describe(rule: &Rule) -> filter_rule {
    let mut d = filter_rule {
        action: action(rule.action),
        protocol: proto(rule.protocol),
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
    for (slot, byte) in d
        .name
        .iter_mut()
        .zip(rule.name.as_deref().unwrap_or("").bytes().take(31))
    {
        *slot = byte as i8;
    }
    d
}

fn clear_generation(maps: &FilterMaps<'_>, gen: u8) -> Result<()> {
    let key_gen = |key: &[u8], offset: usize| key.get(offset).copied() == Some(gen);
    let prefix_gen = std::mem::offset_of!(filter_prefix_key, r#gen);
    for trie in [
        maps.src_prefixes,
        maps.dst_prefixes,
        maps.src_exact,
        maps.dst_exact,
    ] {
        let stale: Vec<Vec<u8>> = trie.keys().filter(|k| key_gen(k, prefix_gen)).collect();
        for key in stale {
            trie.delete(&key)?;
        }
    }
    let decision_gen = std::mem::offset_of!(filter_key, r#gen);
    let stale: Vec<u8> = maps
        .decisions
        .keys()
        .filter(|k| key_gen(k, decision_gen))
        .flatten()
        .collect();
    let count = (stale.len() / std::mem::size_of::<filter_key>()) as u32;
    if count > 0 {
        maps.decisions
            .delete_batch(&stale, count, MapFlags::ANY, MapFlags::ANY)?;
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
    Ok(sum)
}

pub fn read_traffic(maps: &FilterMaps<'_>) -> Result<traffic::Traffic> {
    traffic::read_counters(maps.counters)
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
    let mut rules = Vec::with_capacity(config.rules as usize);
    for index in 0..config.rules {
        let key = (gen as u32 * MAX_RULES + index).to_ne_bytes();
        let described: filter_rule = lookup(maps.rules, &key)?.unwrap_or_default();
        let mut hits = Counter::default();
        for cpu in maps::read_per_cpu::<traffic_counter>(maps.rule_hits, u32::from_ne_bytes(key))? {
            hits.add(cpu.packets, cpu.bytes);
        }
        rules.push(ShownRule {
            index,
            rule: undescribe(&described),
            packets: hits.packets,
            bytes: hits.bytes,
        });
    }
    let limit_back = |l: &filter_limit| {
        (l.interval_ns != 0).then_some(Limit {
            pps: l.pps,
            burst: l.burst,
        })
    };
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
    let skel = load_counting_into(&mut object, btf, Some(&from.map(COUNTERS_MAP)))?;
    apply(&FilterMaps::of_skeleton(&skel), rules, compiled)?;
    pin(&skel, dir)
}

/// Loads with rules, attaches and pins; the link pin goes last and commits.
pub fn attach(
    dir: &AttachmentDir,
    iface: &Interface,
    mode: XdpMode,
    btf: Option<&Path>,
    rules: &FilterRules,
    compiled: &CompiledFilter,
) -> Result<()> {
    let mut object = MaybeUninit::uninit();
    let skel = load(&mut object, btf)?;
    apply(&FilterMaps::of_skeleton(&skel), rules, compiled)?;
    let link = xdp::create_link(skel.progs.xdp_mesh_filter.as_fd(), iface, mode)?;
    pin(&skel, dir)?;
    bpfobj::pin(link.as_fd(), &dir.link())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_exactly_len_leading_bits() {
        assert_eq!(mask(0), [0; 16]);
        assert_eq!(mask(24)[..4], [0xFF, 0xFF, 0xFF, 0]);
        assert_eq!(mask(20)[..4], [0xFF, 0xFF, 0xF0, 0]);
        assert_eq!(mask(128), [0xFF; 16]);
        assert_eq!(mask(127)[15], 0xFE);
    }
}
