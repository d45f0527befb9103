//! Rule ids: what carries a rule's counters from one rule set to the next.
//!
//! The invariant: within a set, ids are unique, and a rule without an id of
//! its own gets the same id in every set that has the same rule with the
//! same number of identical rules before it. A derived id depends only on
//! the rule's action and match fields (not its name or rate limit), so
//! re-applying a file, reordering it, adding rules around a rule or
//! changing its limit keeps its id and its counters; changing what it
//! matches makes it a new rule. An id the file gives survives any change.
//!
//! Derived ids are `auto-` and 12 hex digits of a 64-bit FNV-1a hash of the
//! rule's canonical text; the second of two identical rules gets `-2` after
//! it. Given ids may not start with `auto-`, so the two never collide.

use std::collections::HashMap;

use serde_json::Value;

use super::filter::Rule;
use super::{text, Protocol, RuleError};

/// The longest id, in bytes: the kernel keeps it with its NUL in 64.
pub const MAX_ID_LEN: usize = 63;
const DERIVED: &str = "auto-";

/// Parses an id as a rule file gives it.
pub fn given(value: &Value) -> Result<String, RuleError> {
    let id = text(value)?;
    let hint = "an id is 1 to 63 letters, digits or . _ - : / @, e.g. \"ssh-from-bastion\"";
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(RuleError::new(
            format!("id {id:?} is {} bytes long", id.len()),
            hint,
        ));
    }
    if let Some(bad) = id.chars().find(|c| !allowed(*c)) {
        return Err(RuleError::new(
            format!("id {id:?} has the character {bad:?}"),
            hint,
        ));
    }
    if is_derived(&id) {
        return Err(RuleError::new(
            format!("id {id:?} starts with {DERIVED:?}, which meshbpf keeps for ids it derives"),
            "choose another id, or leave \"id\" out to keep the derived one",
        ));
    }
    Ok(id)
}

/// Whether meshbpf derived the id (a file cannot give such an id).
pub fn is_derived(id: &str) -> bool {
    id.starts_with(DERIVED)
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-:/@".contains(c)
}

/// Gives every rule its id: `given[i]` if there is one, else the derived
/// one. Refuses an id given twice, naming both rules.
pub fn assign(rules: &mut [Rule], given: Vec<Option<String>>) -> Result<(), RuleError> {
    let mut first: HashMap<String, usize> = HashMap::new();
    for (index, (rule, id)) in rules.iter_mut().zip(given).enumerate() {
        let id = match id {
            Some(id) => {
                if let Some(earlier) = first.get(&id) {
                    return Err(RuleError::new(
                        format!("id {id:?} is already rule {earlier}'s"),
                        "give each rule its own id",
                    )
                    .in_field("id")
                    .in_rule(index));
                }
                id
            }
            None => {
                let base = derived(rule);
                (1..)
                    .map(|n| match n {
                        1 => base.clone(),
                        n => format!("{base}-{n}"),
                    })
                    .find(|id| !first.contains_key(id))
                    .expect("some suffix is free")
            }
        };
        first.insert(id.clone(), index);
        rule.id = id;
    }
    Ok(())
}

/// The id of a rule without one: its canonical text's hash.
pub fn derived(rule: &Rule) -> String {
    let side = |p: Option<super::Prefix>| p.map(|p| p.to_string()).unwrap_or_default();
    let range =
        |r: Option<super::PortRange>| r.map(|r| format!("{}-{}", r.lo, r.hi)).unwrap_or_default();
    let protocol = match (rule.protocol.ip_number(), rule.protocol) {
        (Some(number), _) => number.to_string(),
        (None, Protocol::Arp) => "arp".into(),
        (None, _) => "any".into(),
    };
    let canonical = format!(
        "{}|{}|{}|{}|{}|{}",
        rule.action.as_str(),
        side(rule.src),
        side(rule.dst),
        protocol,
        range(rule.sport),
        range(rule.dport)
    );
    format!("{DERIVED}{:012x}", fnv1a(canonical.as_bytes()) >> 16)
}

/// FNV-1a, 64 bits: stable across releases and platforms, which std's
/// hasher does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::super::filter::parse;

    fn ids(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .rules
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn derived_ids_follow_what_a_rule_matches_not_where_it_is() {
        let one = ids(r#"{"rules": [
            {"action": "deny", "src": "10.0.0.0/8"},
            {"action": "allow", "protocol": "tcp", "dport": 22}]}"#);
        let reordered = ids(r#"{"rules": [
            {"action": "allow", "protocol": 6, "dport": "22-22", "name": "ssh",
             "rate_limit": {"pps": 5}},
            {"action": "drop", "src": "10.0.0.0/8"}]}"#);
        assert_eq!(one, vec![reordered[1].clone(), reordered[0].clone()]);
        assert!(one[0].starts_with("auto-") && one[0].len() == 17, "{one:?}");
        let changed = ids(r#"{"rules": [{"action": "deny", "src": "10.0.0.0/9"}]}"#);
        assert_ne!(changed[0], one[0]);
        let other_action = ids(r#"{"rules": [{"action": "allow", "src": "10.0.0.0/8"}]}"#);
        assert_ne!(other_action[0], one[0]);
    }

    #[test]
    fn identical_rules_get_numbered_ids() {
        let got = ids(r#"{"rules": [{"action": "deny"}, {"action": "deny"}, {"action": "deny"}]}"#);
        assert_eq!(got[1], format!("{}-2", got[0]));
        assert_eq!(got[2], format!("{}-3", got[0]));
    }

    #[test]
    fn given_ids_are_kept_and_checked() {
        let got = ids(r#"{"rules": [{"id": "ssh", "action": "allow"}, {"action": "deny"}]}"#);
        assert_eq!(got[0], "ssh");
        assert_eq!(
            error(r#"{"rules": [{"id": "a", "action": "allow"}, {"id": "a", "action": "deny"}]}"#),
            "rule 1, field \"id\": id \"a\" is already rule 0's"
        );
        assert!(error(r#"{"rules": [{"id": "", "action": "allow"}]}"#).contains("0 bytes"));
        assert!(error(&format!(
            r#"{{"rules": [{{"id": "{}", "action": "allow"}}]}}"#,
            "x".repeat(64)
        ))
        .contains("64 bytes"));
        assert!(error(r#"{"rules": [{"id": "a b", "action": "allow"}]}"#).contains("' '"));
        assert!(error(r#"{"rules": [{"id": "auto-1", "action": "allow"}]}"#).contains("derives"));
        assert!(error(r#"{"rules": [{"id": 7, "action": "allow"}]}"#).contains("field \"id\""));
    }
}
