//! What applying a filter rule set would change, rule by rule.
//!
//! The invariant: rules are matched by id (see [`super::rule_ids`]), so
//! every rule of either set is in exactly one of added (its id is new),
//! removed (its id is gone), changed (same id, other content), or
//! unchanged; a rule kept with or without changes is also moved when its
//! order relative to the other kept rules differs. Moved rules are the
//! fewest that explain the new order: the kept rules outside a longest
//! subsequence that both sets order alike. Rules that only shift because
//! others were added or removed above them are not moved.

use std::collections::HashMap;

use serde::Serialize;

use super::filter::{FilterRules, Rule};
use super::{Action, Limit};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleDiff {
    pub added: Vec<Placed>,
    pub removed: Vec<Placed>,
    pub changed: Vec<Changed>,
    pub moved: Vec<Moved>,
    pub unchanged: usize,
    /// The default policy and the interface-wide limits, where they differ.
    pub settings: Vec<Setting>,
}

impl RuleDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.moved.is_empty()
            && self.settings.is_empty()
    }
}

/// A rule and its index in its set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placed {
    pub index: usize,
    #[serde(flatten)]
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub id: String,
    pub old_index: usize,
    pub index: usize,
    /// The fields that differ, in file order.
    pub fields: Vec<&'static str>,
    pub before: Rule,
    pub after: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moved {
    pub id: String,
    pub old_index: usize,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub field: &'static str,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The settings of a rule set besides its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub default: Action,
    pub rate_limit: Option<Limit>,
    pub syn_flood: Option<Limit>,
}

impl Settings {
    pub fn of(rules: &FilterRules) -> Settings {
        Settings {
            default: rules.default,
            rate_limit: rules.rate_limit,
            syn_flood: rules.syn_flood,
        }
    }
}

/// From `old` (as the kernel holds it) to `new`.
pub fn diff(old: &[Rule], old_settings: Settings, new: &FilterRules) -> RuleDiff {
    let old_at: HashMap<&str, usize> = old
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let new_ids: HashMap<&str, usize> = new
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let placed = |index: usize, rule: &Rule| Placed {
        index,
        rule: rule.clone(),
    };
    let mut out = RuleDiff {
        added: Vec::new(),
        removed: old
            .iter()
            .enumerate()
            .filter(|(_, r)| !new_ids.contains_key(r.id.as_str()))
            .map(|(i, r)| placed(i, r))
            .collect(),
        changed: Vec::new(),
        moved: Vec::new(),
        unchanged: 0,
        settings: settings(old_settings, Settings::of(new)),
    };
    // (new index, old index) of the kept rules, in new order.
    let mut kept = Vec::new();
    for (index, rule) in new.rules.iter().enumerate() {
        let Some(&old_index) = old_at.get(rule.id.as_str()) else {
            out.added.push(placed(index, rule));
            continue;
        };
        kept.push((index, old_index));
        let fields = changed_fields(&old[old_index], rule);
        if fields.is_empty() {
            out.unchanged += 1;
        } else {
            out.changed.push(Changed {
                id: rule.id.clone(),
                old_index,
                index,
                fields,
                before: old[old_index].clone(),
                after: rule.clone(),
            });
        }
    }
    let in_order = longest_increasing(&kept.iter().map(|&(_, o)| o).collect::<Vec<_>>());
    out.moved = kept
        .iter()
        .enumerate()
        .filter(|(k, _)| !in_order[*k])
        .map(|(_, &(index, old_index))| Moved {
            id: new.rules[index].id.clone(),
            old_index,
            index,
        })
        .collect();
    out
}

fn changed_fields(a: &Rule, b: &Rule) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut differs = |name: &'static str, differ: bool| {
        if differ {
            fields.push(name);
        }
    };
    differs("action", a.action != b.action);
    differs("name", a.name != b.name);
    differs("src", a.src != b.src);
    differs("dst", a.dst != b.dst);
    differs("protocol", a.protocol != b.protocol);
    differs("sport", a.sport != b.sport);
    differs("dport", a.dport != b.dport);
    differs("rate_limit", a.rate_limit != b.rate_limit);
    fields
}

fn settings(old: Settings, new: Settings) -> Vec<Setting> {
    let limit = |l: Option<Limit>| l.map(|l| format!("{} pps, burst {}", l.pps, l.burst));
    [
        (
            "default",
            Some(old.default.to_string()),
            Some(new.default.to_string()),
        ),
        ("rate_limit", limit(old.rate_limit), limit(new.rate_limit)),
        ("syn_flood", limit(old.syn_flood), limit(new.syn_flood)),
    ]
    .into_iter()
    .filter(|(_, before, after)| before != after)
    .map(|(field, before, after)| Setting {
        field,
        before,
        after,
    })
    .collect()
}

/// Marks the elements of one longest strictly increasing subsequence of
/// `values` (patience sorting, O(n log n): sets have up to 16,384 rules).
fn longest_increasing(values: &[usize]) -> Vec<bool> {
    // tails[k]: the index of the smallest last value of an increasing
    // subsequence of length k + 1; before[i]: the element before i in it.
    let mut tails: Vec<usize> = Vec::new();
    let mut before = vec![None; values.len()];
    for (i, &v) in values.iter().enumerate() {
        let k = tails.partition_point(|&t| values[t] < v);
        before[i] = k.checked_sub(1).map(|p| tails[p]);
        match tails.get_mut(k) {
            Some(slot) => *slot = i,
            None => tails.push(i),
        }
    }
    let mut marked = vec![false; values.len()];
    let mut at = tails.last().copied();
    while let Some(i) = at {
        marked[i] = true;
        at = before[i];
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::super::filter::parse;
    use super::*;

    fn diff_of(old: &str, new: &str) -> RuleDiff {
        let old = parse(old).unwrap();
        diff(&old.rules, Settings::of(&old), &parse(new).unwrap())
    }

    fn ids(placed: &[Placed]) -> Vec<(usize, &str)> {
        placed
            .iter()
            .map(|p| (p.index, p.rule.id.as_str()))
            .collect()
    }

    #[test]
    fn the_same_set_is_no_change() {
        let set = r#"{"rules": [{"id": "a", "action": "allow"}, {"action": "deny", "dport": 1}]}"#;
        let d = diff_of(set, set);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.unchanged, 2);
    }

    #[test]
    fn added_removed_changed_and_moved_by_id() {
        let d = diff_of(
            r#"{"rules": [
                {"id": "a", "action": "allow", "dport": 1},
                {"id": "b", "action": "allow", "dport": 2},
                {"id": "c", "action": "allow", "dport": 3},
                {"id": "d", "action": "allow", "dport": 4}]}"#,
            r#"{"default": "deny", "rules": [
                {"id": "new", "action": "deny"},
                {"id": "c", "action": "allow", "dport": 3},
                {"id": "a", "action": "allow", "dport": 1},
                {"id": "b", "action": "deny", "dport": 2, "name": "two"}]}"#,
        );
        assert_eq!(ids(&d.added), vec![(0, "new")]);
        assert_eq!(ids(&d.removed), vec![(3, "d")]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(
            (
                d.changed[0].id.as_str(),
                d.changed[0].old_index,
                d.changed[0].index
            ),
            ("b", 1, 3)
        );
        assert_eq!(d.changed[0].fields, vec!["action", "name"]);
        // a and b keep their order; c jumped above them.
        assert_eq!(
            d.moved,
            vec![Moved {
                id: "c".into(),
                old_index: 2,
                index: 1
            }]
        );
        assert_eq!(d.unchanged, 2);
        assert_eq!(
            d.settings,
            vec![Setting {
                field: "default",
                before: Some("allow".into()),
                after: Some("deny".into())
            }]
        );
    }

    #[test]
    fn rules_shifted_by_an_insertion_are_not_moved() {
        let d = diff_of(
            r#"{"rules": [{"action": "allow", "dport": 1}, {"action": "allow", "dport": 2}]}"#,
            r#"{"rules": [{"action": "deny", "src": "10.0.0.0/8"},
                {"action": "allow", "dport": 1}, {"action": "allow", "dport": 2}]}"#,
        );
        assert_eq!(d.added.len(), 1);
        assert!(d.moved.is_empty() && d.changed.is_empty() && d.removed.is_empty());
        assert_eq!(d.unchanged, 2);
    }

    #[test]
    fn a_derived_id_follows_the_match_so_a_new_match_is_a_new_rule() {
        let d = diff_of(
            r#"{"rules": [{"action": "allow", "dport": 1, "rate_limit": {"pps": 5}}]}"#,
            r#"{"rules": [{"action": "allow", "dport": 1, "rate_limit": {"pps": 9}},
                {"action": "allow", "dport": 3}]}"#,
        );
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].fields, vec!["rate_limit"]);
        assert_eq!(d.added.len(), 1);
    }

    #[test]
    fn longest_increasing_marks_the_fewest_moves() {
        let marked = longest_increasing(&[3, 0, 1, 4, 2]);
        assert_eq!(marked, vec![false, true, true, false, true]);
        assert_eq!(longest_increasing(&[]), Vec::<bool>::new());
        assert!(longest_increasing(&[0, 1, 2]).iter().all(|&m| m));
    }
}
