//! Per-rule counters that outlive the rule set they were counted under.
//!
//! The invariant: a rule's count is its `carried` (in the user-space-only
//! `rules` map) plus what the program counted in `rule_hits` under the
//! active generation, wrapping. The program only ever adds to `rule_hits`,
//! and only user space writes `carried`, so neither carrying counts into a
//! new rule set nor resetting them races a packet: an apply gives each rule
//! whose id survives the old rule's count as `carried`, and a reset sets
//! `carried` to minus what `rule_hits` holds.
//!
//! An apply reads the old counts before it publishes the new set and adds
//! what the old set counted meanwhile once no packet runs on it, so the
//! counts are exact; an apply killed between the two loses only what
//! arrived in between.

use std::collections::HashMap;

use anyhow::Result;
use libbpf_rs::MapFlags;

use super::skel::types::{filter_config, filter_rule, traffic_counter};
use super::{active_generation, rule_key, FilterMaps};
use crate::programs::maps::{self, bytes, lookup};
use crate::rules::filter::FilterRules;

/// A rule as a generation stores it, with what the program counted for it.
#[derive(Debug, Clone)]
pub struct StoredRule {
    pub described: filter_rule,
    pub live: traffic_counter,
}

impl StoredRule {
    pub fn id(&self) -> String {
        super::read_text(&self.described.id)
    }

    pub fn total(&self) -> traffic_counter {
        plus(&self.described.carried, &self.live)
    }
}

fn plus(a: &traffic_counter, b: &traffic_counter) -> traffic_counter {
    traffic_counter {
        packets: a.packets.wrapping_add(b.packets),
        bytes: a.bytes.wrapping_add(b.bytes),
    }
}

fn minus(a: &traffic_counter, b: &traffic_counter) -> traffic_counter {
    traffic_counter {
        packets: a.packets.wrapping_sub(b.packets),
        bytes: a.bytes.wrapping_sub(b.bytes),
    }
}

/// The rules of generation `gen`, in order.
pub fn stored(maps: &FilterMaps<'_>, gen: u8) -> Result<Vec<StoredRule>> {
    let config: filter_config =
        lookup(maps.config, &(gen as u32).to_ne_bytes())?.unwrap_or_default();
    (0..config.rules)
        .map(|index| {
            let key = rule_key(gen, index);
            let described: filter_rule = lookup(maps.rules, &key)?.unwrap_or_default();
            let mut live = traffic_counter::default();
            for cpu in
                maps::read_per_cpu::<traffic_counter>(maps.rule_hits, u32::from_ne_bytes(key))?
            {
                live = plus(&live, &cpu);
            }
            Ok(StoredRule { described, live })
        })
        .collect()
}

/// What each rule of `rules` starts from: the count of the old rule with
/// its id, or zero.
pub fn carried(old: &[StoredRule], rules: &FilterRules) -> Vec<traffic_counter> {
    let by_id: HashMap<String, traffic_counter> = old.iter().map(|r| (r.id(), r.total())).collect();
    rules
        .rules
        .iter()
        .map(|rule| by_id.get(&rule.id).copied().unwrap_or_default())
        .collect()
}

/// Adds to generation `new`'s rules what their old rules counted since
/// `before` was read; call it once no packet runs on the old generation.
pub fn settle(
    maps: &FilterMaps<'_>,
    before: &[StoredRule],
    new: u8,
    rules: &FilterRules,
) -> Result<()> {
    if before.is_empty() {
        return Ok(());
    }
    let after = stored(maps, 1 - new)?;
    let since: HashMap<String, traffic_counter> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (b.id(), minus(&a.live, &b.live)))
        .filter(|(_, d)| d.packets != 0 || d.bytes != 0)
        .collect();
    for (index, rule) in rules.rules.iter().enumerate() {
        let Some(delta) = since.get(&rule.id) else {
            continue;
        };
        let key = rule_key(new, index as u32);
        let mut described: filter_rule = lookup(maps.rules, &key)?.unwrap_or_default();
        described.carried = plus(&described.carried, delta);
        maps.rules.update(&key, bytes(&described), MapFlags::ANY)?;
    }
    Ok(())
}

/// Zeroes the counts of the active set's rules, or of the rule with id
/// `only`; returns the ids reset (none: `only` is not in the set).
pub fn reset(maps: &FilterMaps<'_>, only: Option<&str>) -> Result<Vec<String>> {
    let gen = active_generation(maps)?;
    let mut reset = Vec::new();
    for (index, stored) in stored(maps, gen)?.into_iter().enumerate() {
        let id = stored.id();
        if only.is_some_and(|only| only != id) {
            continue;
        }
        let described = filter_rule {
            carried: minus(&traffic_counter::default(), &stored.live),
            ..stored.described
        };
        maps.rules.update(
            &rule_key(gen, index as u32),
            bytes(&described),
            MapFlags::ANY,
        )?;
        reset.push(id);
    }
    Ok(reset)
}
