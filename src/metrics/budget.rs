//! The series budget (`serve --max-series N`): per interface, at most N
//! filter rules get series of their own in `meshbpf_filter_rule_packets` and
//! `meshbpf_filter_rule_bytes`; the others are summed into one series with
//! `rule="other"`, so the sum over an interface's series stays the rules'
//! total hits.
//!
//! Counters must never go down for Prometheus, so:
//! - a rule gets its own series only once it has hits, in order of hits,
//!   while fewer than N rules have one, and keeps it as long as it is in the
//!   rule set (serve remembers them): a rule is never folded back, which
//!   would make its series vanish and `other` jump by its whole count;
//! - `other`'s `id` label names the set of rules folded into it (a hash of
//!   their ids), so whenever a rule leaves that set (it got its own series,
//!   or an apply removed it) `other` becomes a new series instead of one
//!   that went down.
//!
//! QoS classes are not budgeted: a class file has at most 63 classes.

use std::collections::{HashMap, HashSet};

use super::model::{label, Family, Kind, Labels, Value};

/// Rules with series of their own, per interface, by default: 500 rules are
/// 1,000 series (packets and bytes), about what a node exporter has in all,
/// and more than a dashboard's "top rules" panel can show.
pub const DEFAULT_MAX_SERIES: usize = 500;

const PACKETS: &str = "meshbpf_filter_rule_packets";
const BYTES: &str = "meshbpf_filter_rule";

/// Which rules have series of their own, remembered between scrapes.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    kept: HashMap<String, HashSet<String>>,
    /// Rule series folded so far, over every scrape, per interface.
    dropped: HashMap<String, u64>,
}

/// One rule's series, as the filter's facet reported them.
struct RuleSeries {
    interface: String,
    id: String,
    labels: Labels,
    packets: u64,
    bytes: u64,
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Budget {
            max,
            kept: HashMap::new(),
            dropped: HashMap::new(),
        }
    }

    /// The families with the rule families folded to the budget, and
    /// `meshbpf_series_folded` and `meshbpf_series_dropped_total` added.
    pub fn apply(&mut self, mut families: Vec<Family>) -> Vec<Family> {
        let at = |name: &str, families: &[Family]| families.iter().position(|f| f.name == name);
        let (Some(p), Some(b)) = (at(PACKETS, &families), at(BYTES, &families)) else {
            return families;
        };
        let packet_samples = std::mem::take(&mut families[p].samples);
        let byte_samples = std::mem::take(&mut families[b].samples);
        let mut by_interface: Vec<(String, Vec<RuleSeries>)> = Vec::new();
        for rule in pair(packet_samples, byte_samples) {
            match by_interface.iter_mut().find(|(i, _)| *i == rule.interface) {
                Some((_, list)) => list.push(rule),
                None => by_interface.push((rule.interface.clone(), vec![rule])),
            }
        }
        self.kept
            .retain(|interface, _| by_interface.iter().any(|(i, _)| i == interface));
        let mut folded_now = Family::new(
            "meshbpf_series_folded",
            Kind::Gauge,
            "Filter rules whose series this scrape summed into rule=\"other\" (serve --max-series)",
        );
        let mut dropped = Family::new(
            "meshbpf_series_dropped",
            Kind::Counter,
            "Filter rule series summed into rule=\"other\", added up over every scrape",
        );
        for (interface, rules) in by_interface {
            let (own, folded) = self.split(&interface, rules);
            for r in own {
                families[p].add(r.labels.clone(), Value::Int(r.packets));
                families[b].add(r.labels, Value::Int(r.bytes));
            }
            let count = folded.len() as u64;
            if count > 0 {
                let labels = vec![
                    label("interface", &interface),
                    label("rule", "other"),
                    label("id", other_id(&folded)),
                ];
                let sum = |f: fn(&RuleSeries) -> u64| folded.iter().map(f).sum::<u64>();
                families[p].add(labels.clone(), Value::Int(sum(|r| r.packets)));
                families[b].add(labels, Value::Int(sum(|r| r.bytes)));
            }
            let total = self.dropped.entry(interface.clone()).or_default();
            *total += count;
            let on = vec![label("interface", &interface)];
            folded_now.add(on.clone(), Value::Int(count));
            dropped.add(on, Value::Int(*total));
        }
        families.extend([folded_now, dropped]);
        families
    }

    /// The rules that keep series of their own, in their order, and the
    /// ones folded into `other`.
    fn split(
        &mut self,
        interface: &str,
        rules: Vec<RuleSeries>,
    ) -> (Vec<RuleSeries>, Vec<RuleSeries>) {
        if rules.len() <= self.max {
            self.kept.remove(interface);
            return (rules, Vec::new());
        }
        let kept = self.kept.entry(interface.to_string()).or_default();
        let present: HashSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        kept.retain(|id| present.contains(id.as_str()));
        let mut candidates: Vec<&RuleSeries> = rules
            .iter()
            .filter(|r| r.packets > 0 && !kept.contains(&r.id))
            .collect();
        // Most hits first; the stable sort keeps rule order among equals.
        candidates.sort_by_key(|r| std::cmp::Reverse(r.packets));
        let room = self.max.saturating_sub(kept.len());
        let promoted: Vec<String> = candidates
            .into_iter()
            .take(room)
            .map(|r| r.id.clone())
            .collect();
        kept.extend(promoted);
        rules.into_iter().partition(|r| kept.contains(&r.id))
    }
}

/// The packets and bytes series of each rule, which the filter's facet
/// adds in the same order.
fn pair(packets: Vec<(Labels, Value)>, bytes: Vec<(Labels, Value)>) -> Vec<RuleSeries> {
    packets
        .into_iter()
        .zip(bytes)
        .map(|((labels, p), (_, b))| {
            let get = |name: &str| {
                labels
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            RuleSeries {
                interface: get("interface"),
                id: get("id"),
                packets: count(&p),
                bytes: count(&b),
                labels,
            }
        })
        .collect()
}

fn count(value: &Value) -> u64 {
    match value {
        Value::Int(v) => *v,
        _ => 0,
    }
}

/// `other-` and a hash of the folded rules' ids (FNV-1a, 64 bits): the same
/// set gives the same series in every process, another set another series.
fn other_id(folded: &[RuleSeries]) -> String {
    let mut ids: Vec<&str> = folded.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in ids.join("\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("other-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule families of one interface with (id, packets) rules.
    fn scrape(rules: &[(&str, u64)]) -> Vec<Family> {
        let mut packets = Family::new(PACKETS, Kind::Counter, "p");
        let mut bytes = Family::new(BYTES, Kind::Counter, "b");
        for (index, (id, hits)) in rules.iter().enumerate() {
            let labels = vec![
                label("interface", "eth0"),
                label("rule", index.to_string()),
                label("id", *id),
            ];
            packets.add(labels.clone(), Value::Int(*hits));
            bytes.add(labels, Value::Int(hits * 100));
        }
        vec![packets, bytes]
    }

    /// (rule label, id label, packets) of the packets family.
    fn series(families: &[Family]) -> Vec<(String, String, u64)> {
        let family = families.iter().find(|f| f.name == PACKETS).unwrap();
        family
            .samples
            .iter()
            .map(|(labels, v)| (labels[1].1.clone(), labels[2].1.clone(), count(v)))
            .collect()
    }

    fn gauge(families: &[Family], name: &str) -> u64 {
        let family = families.iter().find(|f| f.name == name).unwrap();
        count(&family.samples[0].1)
    }

    #[test]
    fn within_the_budget_nothing_is_folded() {
        let mut budget = Budget::new(3);
        let out = budget.apply(scrape(&[("a", 1), ("b", 0), ("c", 5)]));
        let ids: Vec<_> = series(&out).into_iter().map(|s| s.1).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(gauge(&out, "meshbpf_series_folded"), 0);
    }

    #[test]
    fn the_most_hit_rules_keep_series_and_other_sums_the_rest() {
        let mut budget = Budget::new(2);
        let out = budget.apply(scrape(&[("a", 1), ("b", 7), ("c", 0), ("d", 3)]));
        let s = series(&out);
        assert_eq!(s[0], ("1".into(), "b".into(), 7));
        assert_eq!(s[1], ("3".into(), "d".into(), 3));
        assert_eq!((s[2].0.as_str(), s[2].2), ("other", 1));
        assert!(s[2].1.starts_with("other-"));
        assert_eq!(s.len(), 3);
        assert_eq!(gauge(&out, "meshbpf_series_folded"), 2);
        let bytes = out.iter().find(|f| f.name == BYTES).unwrap();
        assert_eq!(bytes.samples[2].1, Value::Int(100));
    }

    #[test]
    fn kept_rules_stay_and_other_is_a_new_series_when_a_rule_leaves_it() {
        let mut budget = Budget::new(2);
        let first = series(&budget.apply(scrape(&[("a", 5), ("b", 0), ("c", 0)])));
        assert_eq!(first.len(), 2, "{first:?}");
        // b and c are hit; only one slot is left: b, the most hit, takes it.
        let second = series(&budget.apply(scrape(&[("a", 5), ("b", 50), ("c", 9)])));
        assert_eq!(second[0].1, "a");
        assert_eq!(second[1].1, "b");
        assert_eq!(second[2].2, 9);
        assert_ne!(first[1].1, second[2].1, "other lost b: a new series");
        // c outgrows a, but a keeps its series: nothing is folded back.
        let third = series(&budget.apply(scrape(&[("a", 5), ("b", 50), ("c", 90)])));
        assert_eq!(third[0].1, "a");
        assert_eq!((&third[2].1, third[2].2), (&second[2].1, 90));
        let out = budget.apply(scrape(&[("a", 5), ("b", 50), ("c", 90)]));
        assert_eq!(gauge(&out, "meshbpf_series_dropped"), 2 + 1 + 1 + 1);
    }
}
