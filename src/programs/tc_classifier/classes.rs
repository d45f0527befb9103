//! QoS classes on tc_classifier's maps (include/qos_classes.h): writing a
//! class file into the slot not in use and switching to it, and reading
//! the classes in use back with their counters.

use std::mem;

use anyhow::{Context, Result};
use libbpf_rs::MapFlags;
use serde::Serialize;

use super::skel::types::{
    class_config, class_counters, class_def, class_limits, class_rule, class_sets,
};
use super::TcClassifierSkel;
use crate::error::Failure;
use crate::kernel::pins::AttachmentDir;
use crate::kernel::pod::plain_data;
use crate::programs::maps::{self, bytes};
use crate::programs::xdp_counter::traffic::Counter;
use crate::proto::Direction;
use crate::rules::classes::{Class, ClassRule, ClassRules};
use crate::rules::traffic::Traffic;
use crate::rules::{Family, PortRange, Prefix};

// Padding is explicit in the header.
plain_data!(class_config, class_counters, class_def, class_rule);

const CLASS_MAX: u32 = class_limits::CLASS_MAX.0;
const RULES_MAX: u32 = class_limits::CLASS_RULES_MAX.0;
/// `class_rule.l7` of a rule that matches every guess (CLASS_L7_ANY).
const L7_ANY: u8 = 0xff;

maps::map_set! {
    /// The QoS class maps of tc_classifier.
    ClassMaps, PinnedClassMaps, TcClassifierSkel {
        config = qos_config,
        classes = qos_classes,
        rules = qos_rules,
        counters = qos_counters,
    }
    missing: missing_maps
}

fn missing_maps(dir: &AttachmentDir) -> Failure {
    Failure::new(format!(
        "the tc_classifier attachment at {} has no QoS class maps",
        dir.path.display()
    ))
    .hint("it was attached by an older meshbpf: detach and attach again")
}

fn generation(maps: &ClassMaps<'_>) -> Result<u32> {
    let raw = maps
        .config
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("reading qos_config")?
        .unwrap_or_default();
    let mut config = class_config::default();
    plain::copy_from_bytes(&mut config, &raw)
        .map_err(|e| anyhow::anyhow!("qos_config has an unexpected size: {e:?}"))?;
    Ok(config.generation)
}

/// The generation after `current`; never 0 (no classes), and always the
/// other slot.
fn next_generation(current: u32) -> u32 {
    current.checked_add(1).unwrap_or(2)
}

/// Writes `rules` into the slot not in use, then switches to it: packets
/// see the old classes or the new ones, and every flow is classified again.
pub fn apply(maps: &ClassMaps<'_>, rules: &ClassRules) -> Result<()> {
    let next = next_generation(generation(maps)?);
    let slot = next & 1;

    let mut defs = vec![class_def::default(); CLASS_MAX as usize];
    for (index, class) in rules.classes.iter().enumerate() {
        defs[index + 1] = definition(class);
    }
    for (id, def) in defs.iter().enumerate() {
        let key = (slot * CLASS_MAX + id as u32).to_ne_bytes();
        maps.classes
            .update(&key, bytes(def), MapFlags::ANY)
            .context("writing qos_classes")?;
    }

    let cpus = libbpf_rs::num_possible_cpus()?;
    let zero = vec![vec![0u8; mem::size_of::<class_counters>()]; cpus];
    for id in 0..CLASS_MAX {
        let key = (slot * CLASS_MAX + id).to_ne_bytes();
        maps.counters
            .update_percpu(&key, &zero, MapFlags::ANY)
            .context("clearing qos_counters")?;
    }

    // The default class is a last rule that matches everything; a zeroed
    // rule (class 0) ends the list.
    let default = rules.default.as_deref().map(|name| ClassRule {
        class: name.to_owned(),
        traffic: Traffic::everything(),
        l7: None,
        direction: None,
    });
    let compiled = rules
        .rules
        .iter()
        .chain(default.as_ref())
        .map(|rule| compile(rule, rules.id_of(&rule.class).unwrap_or_default()))
        .chain([class_rule::default()]);
    for (index, rule) in compiled.enumerate() {
        let key = (slot * RULES_MAX + index as u32).to_ne_bytes();
        maps.rules
            .update(&key, bytes(&rule), MapFlags::ANY)
            .context("writing qos_rules")?;
    }

    let config = class_config { generation: next };
    maps.config
        .update(&0u32.to_ne_bytes(), bytes(&config), MapFlags::ANY)
        .context("switching qos_config to the new classes")
}

fn definition(class: &Class) -> class_def {
    let mut def = class_def::default();
    for (slot, byte) in def.name.iter_mut().zip(class.name.bytes()) {
        *slot = byte as _;
    }
    if let Some(priority) = class.priority {
        def.priority = priority;
        def.sets |= class_sets::CLASS_SET_PRIORITY.0;
    }
    if let Some(mark) = class.mark {
        def.mark = mark;
        def.sets |= class_sets::CLASS_SET_MARK.0;
    }
    def
}

/// A prefix as the program compares it: words of the address and the mask
/// as they lie in memory. No prefix is a mask of zeros, which everything
/// matches.
fn words(prefix: Option<Prefix>) -> ([u32; 4], [u32; 4]) {
    let Some(prefix) = prefix else {
        return ([0; 4], [0; 4]);
    };
    let mask = prefix.mask();
    let word = |bytes: &[u8; 16], i: usize| {
        u32::from_ne_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    (
        std::array::from_fn(|i| word(&prefix.addr, i)),
        std::array::from_fn(|i| word(&mask, i)),
    )
}

fn compile(rule: &ClassRule, class_id: u8) -> class_rule {
    let t = &rule.traffic;
    let (src, src_mask) = words(t.src);
    let (dst, dst_mask) = words(t.dst);
    let family = match t
        .addresses()
        .next()
        .map(|(_, p)| p.family)
        .or(t.protocol.family())
    {
        None => 0,
        Some(Family::V4) => 4,
        Some(Family::V6) => 6,
    };
    let every_port = PortRange {
        lo: 0,
        hi: u16::MAX,
    };
    let (sport, dport) = (t.sport.unwrap_or(every_port), t.dport.unwrap_or(every_port));
    // None for any (class rules refuse arp, the other protocol without one).
    let protocol = t.protocol.ip_number();
    class_rule {
        src,
        src_mask,
        dst,
        dst_mask,
        sport_lo: sport.lo,
        sport_hi: sport.hi,
        dport_lo: dport.lo,
        dport_hi: dport.hi,
        family,
        protocol: protocol.unwrap_or_default(),
        has_protocol: u8::from(protocol.is_some()),
        l7: rule.l7.map_or(L7_ANY, |l7| l7.raw()),
        directions: match rule.direction {
            None => 0b11,
            Some(direction) => 1 << direction.raw(),
        },
        needs_ports: u8::from(t.has_ports()),
        class_id,
        ..Default::default()
    }
}

/// A class in use, with what it counted since it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct ClassUse {
    /// "unclassified" for flows no rule matched.
    pub class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    pub ingress: Counter,
    pub egress: Counter,
}

/// The name counters of unclassified IP packets go by.
pub const UNCLASSIFIED: &str = "unclassified";

/// The classes in use and their counters; empty when none were applied.
pub fn read(maps: &ClassMaps<'_>) -> Result<Vec<ClassUse>> {
    let generation = generation(maps)?;
    if generation == 0 {
        return Ok(Vec::new());
    }
    let slot = generation & 1;
    let mut uses = Vec::new();
    for id in 0..CLASS_MAX {
        let index = slot * CLASS_MAX + id;
        let raw = maps
            .classes
            .lookup(&index.to_ne_bytes(), MapFlags::ANY)
            .context("reading qos_classes")?
            .unwrap_or_default();
        let mut def = class_def::default();
        plain::copy_from_bytes(&mut def, &raw)
            .map_err(|e| anyhow::anyhow!("qos_classes has an unexpected value size: {e:?}"))?;
        let name = name_of(&def);
        if id != 0 && name.is_empty() {
            continue;
        }
        let mut class = ClassUse {
            class: if id == 0 {
                UNCLASSIFIED.to_owned()
            } else {
                name
            },
            priority: (def.sets & class_sets::CLASS_SET_PRIORITY.0 != 0).then_some(def.priority),
            mark: (def.sets & class_sets::CLASS_SET_MARK.0 != 0).then_some(def.mark),
            ingress: Counter::default(),
            egress: Counter::default(),
        };
        for cpu in maps::read_per_cpu::<class_counters>(maps.counters, index)? {
            let (i, e) = (
                Direction::Ingress.raw() as usize,
                Direction::Egress.raw() as usize,
            );
            class.ingress.add(cpu.packets[i], cpu.bytes[i]);
            class.egress.add(cpu.packets[e], cpu.bytes[e]);
        }
        uses.push(class);
    }
    Ok(uses)
}

fn name_of(def: &class_def) -> String {
    let bytes: Vec<u8> = def
        .name
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::L7;
    use crate::rules::classes::{self, MAX_CLASSES, MAX_NAME_LEN, MAX_RULES};

    #[test]
    fn file_limits_fit_the_maps() {
        // Class id 0 is "no class", and one rule slot ends the list (after
        // the default's catch-all rule, which the file's rules leave room for).
        assert_eq!(MAX_CLASSES, CLASS_MAX as usize - 1);
        assert_eq!(MAX_RULES, RULES_MAX as usize - 1);
        assert_eq!(MAX_NAME_LEN, class_limits::CLASS_NAME_LEN.0 as usize - 1);
        assert_eq!(mem::size_of::<class_rule>(), 4 * 16 + 8 + 8);
        assert_eq!(mem::size_of::<class_def>(), 32 + 16);
    }

    #[test]
    fn rules_compile_to_what_the_program_compares() {
        let rules = classes::parse(
            r#"{"classes": {"a": {"mark": 1}, "b": {"priority": 2}},
                "rules": [{"class": "b", "src": "10.1.0.0/16", "protocol": "udp", "dport": "53-54",
                           "l7": "dns", "direction": "ingress"},
                          {"class": "a", "protocol": "icmpv6"}]}"#,
        )
        .unwrap();
        let udp = compile(&rules.rules[0], 2);
        assert_eq!(udp.src[0], u32::from_ne_bytes([10, 1, 0, 0]));
        assert_eq!(udp.src_mask[0], u32::from_ne_bytes([255, 255, 0, 0]));
        assert_eq!(&udp.src_mask[1..], &[0; 3]);
        assert_eq!(udp.dst_mask, [0; 4]);
        assert_eq!(
            (udp.family, udp.has_protocol, udp.protocol, udp.needs_ports),
            (4, 1, 17, 1)
        );
        assert_eq!(
            (udp.sport_lo, udp.sport_hi, udp.dport_lo, udp.dport_hi),
            (0, 65535, 53, 54)
        );
        assert_eq!(
            (udp.l7, udp.directions, udp.class_id),
            (L7::Dns.raw(), 1, 2)
        );
        let icmp = compile(&rules.rules[1], 1);
        assert_eq!(
            (
                icmp.family,
                icmp.has_protocol,
                icmp.protocol,
                icmp.needs_ports
            ),
            (6, 1, 58, 0)
        );
        assert_eq!((icmp.l7, icmp.directions), (L7_ANY, 0b11));
        let def = definition(&rules.classes[1]);
        assert_eq!(
            (def.priority, def.sets),
            (2, class_sets::CLASS_SET_PRIORITY.0)
        );
        assert_eq!(name_of(&def), "b");
        assert_eq!(
            next_generation(u32::MAX) & 1,
            0,
            "the other slot after wrapping"
        );
        assert_eq!(next_generation(0), 1);
    }

    #[test]
    fn any_protocol_is_not_protocol_zero() {
        let rules = classes::parse(
            r#"{"classes": {"a": {"mark": 1}},
                "rules": [{"class": "a", "protocol": "gre"}, {"class": "a", "protocol": 0},
                          {"class": "a", "protocol": "any", "dst": "10.0.0.0/8"}],
                "default": "a"}"#,
        )
        .unwrap();
        let compiled: Vec<(u8, u8, u8)> = rules
            .rules
            .iter()
            .map(|rule| compile(rule, 1))
            .map(|c| (c.has_protocol, c.protocol, c.family))
            .collect();
        assert_eq!(compiled, vec![(1, 47, 0), (1, 0, 0), (0, 0, 4)]);
    }
}
