//! The QoS class file that `tc_classifier` applies (`attach --classes FILE`).
//!
//! ```json
//! { "classes": {
//!     "interactive": { "priority": "1:10" },
//!     "bulk":        { "priority": "1:30", "mark": "0x30" } },
//!   "rules": [
//!     { "class": "interactive", "protocol": "tcp", "dport": 22 },
//!     { "class": "interactive", "l7": "ssh" },
//!     { "class": "bulk", "dst": "10.20.0.0/16", "direction": "egress" } ],
//!   "default": "bulk" }
//! ```
//!
//! A class sets `priority` (skb->priority: a number, or a tc class id
//! `"major:minor"` in hex, which HTB uses to pick its class directly),
//! `mark` (skb->mark: a number or `"0x..."`), or both. A rule names its
//! `class` and matches on the fields every rule file shares
//! ([`super::traffic`]: `src`, `dst`, `protocol`, `sport`, `dport`), plus
//! `l7` (the flow's payload guess: http, tls, http2, dns, ssh, unknown) and
//! `direction` (`ingress`, `egress` or `both`, the default). The first rule
//! that matches a flow picks its class; `default` names the class of flows
//! no rule matches, which otherwise keep their priority and mark.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::traffic::Traffic;
use super::{
    load_file, object, optional, parse_document, required, text, Expected, Protocol, RuleError,
};
use crate::kernel::files;
use crate::proto::{Direction, L7};

/// At most this many classes and rules (the programs' map sizes; a test
/// checks them against include/qos_classes.h).
pub const MAX_CLASSES: usize = 63;
pub const MAX_RULES: usize = 255;
/// Bytes of a class name, which the maps keep with its terminating NUL.
pub const MAX_NAME_LEN: usize = 31;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassRules {
    /// In file order; a class's id in the maps is its position plus one.
    pub classes: Vec<Class>,
    pub rules: Vec<ClassRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Class {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRule {
    pub class: String,
    pub traffic: Traffic,
    pub l7: Option<L7>,
    /// None: both directions.
    pub direction: Option<Direction>,
}

impl Serialize for ClassRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = &self.traffic;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("class", &self.class)?;
        if let Some(src) = &t.src {
            map.serialize_entry("src", src)?;
        }
        if let Some(dst) = &t.dst {
            map.serialize_entry("dst", dst)?;
        }
        if t.protocol != Protocol::Any {
            map.serialize_entry("protocol", &t.protocol)?;
        }
        if let Some(sport) = &t.sport {
            map.serialize_entry("sport", sport)?;
        }
        if let Some(dport) = &t.dport {
            map.serialize_entry("dport", dport)?;
        }
        if let Some(l7) = self.l7 {
            map.serialize_entry("l7", l7.as_str())?;
        }
        if let Some(direction) = self.direction {
            map.serialize_entry("direction", direction.as_str())?;
        }
        map.end()
    }
}

impl ClassRules {
    /// The id the maps know class `name` by: its position plus one.
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.classes
            .iter()
            .position(|class| class.name == name)
            .map(|index| index as u8 + 1)
    }
}

/// Parses and checks a class file's text.
pub fn parse(text: &str) -> Result<ClassRules, RuleError> {
    class_rules(&parse_document(text)?)
}

/// Reads and parses a class file; errors start with its path.
pub fn load(path: &Path) -> Result<ClassRules, RuleError> {
    load_file(path, &files::QOS_CLASSES, parse)
}

const FILE: Expected = Expected {
    what: "an object like {\"classes\": {...}, \"rules\": [...]}",
    hint: "a class file is one JSON object with \"classes\", \"rules\" and optionally \"default\"",
};
const CLASSES: Expected = Expected {
    what: "an object of classes like {\"bulk\": {\"mark\": 32}}",
    hint: "name each class and say what it sets: \"classes\": {\"bulk\": {\"priority\": \"1:30\"}}",
};
const CLASS: Expected = Expected {
    what: "a class like {\"priority\": \"1:10\", \"mark\": 16}",
    hint: "a class sets \"priority\", \"mark\", or both",
};
const RULES: Expected = Expected {
    what: "an array of rules",
    hint: "write \"rules\": [{\"class\": \"bulk\", \"protocol\": \"tcp\", \"dport\": 873}, ...]",
};
const RULE: Expected = Expected {
    what: "a rule like {\"class\": \"bulk\", \"dport\": 873}",
    hint: "each rule is an object with \"class\" and the fields it matches on",
};
const PRIORITY: Expected = Expected {
    what: "a priority like 6 or a tc class id like \"1:10\"",
    hint: "write a number from 0 to 4294967295, or \"major:minor\" in hex as tc writes class ids",
};
const MARK: Expected = Expected {
    what: "a mark like 16 or \"0x10\"",
    hint: "write a number from 0 to 4294967295, or a string in hex starting with 0x",
};
const L7_KIND: Expected = Expected {
    what: "a payload kind like \"tls\"",
    hint: "the payload kinds are http, tls, http2, dns, ssh and unknown",
};
const DIRECTION: Expected = Expected {
    what: "a direction like \"egress\"",
    hint: "the directions are ingress, egress and both (the default)",
};

const FILE_FIELDS: [&str; 3] = ["classes", "rules", "default"];
const CLASS_FIELDS: [&str; 2] = ["priority", "mark"];
const RULE_FIELDS: [&str; 8] = [
    "class",
    "src",
    "dst",
    "protocol",
    "sport",
    "dport",
    "l7",
    "direction",
];

fn class_rules(document: &Value) -> Result<ClassRules, RuleError> {
    let map = object(document, &FILE, &FILE_FIELDS)?;
    let classes = required(
        map,
        "classes",
        "add \"classes\": {\"NAME\": {\"priority\": ..., \"mark\": ...}}",
        class_list,
    )?;
    let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
    let rules = required(
        map,
        "rules",
        "add \"rules\": [...]; with none, only \"default\" classifies",
        |value| rule_list(value, &names),
    )?;
    let default = optional(map, "default", |value| class_name(value, &names))?;
    Ok(ClassRules {
        classes,
        rules,
        default,
    })
}

fn class_list(value: &Value) -> Result<Vec<Class>, RuleError> {
    let map = value.as_object().ok_or_else(|| CLASSES.wrong(value))?;
    if map.len() > MAX_CLASSES {
        return Err(RuleError::new(
            format!("{} classes; at most {MAX_CLASSES} are supported", map.len()),
            "merge classes that set the same priority and mark",
        ));
    }
    // serde_json keeps keys sorted; ids follow that order, which is stable.
    map.iter()
        .map(|(name, value)| class(name, value).map_err(|err| err.in_field(name)))
        .collect()
}

fn class(name: &str, value: &Value) -> Result<Class, RuleError> {
    check_name(name)?;
    let map = object(value, &CLASS, &CLASS_FIELDS)?;
    let class = Class {
        name: name.to_owned(),
        priority: optional(map, "priority", priority)?,
        mark: optional(map, "mark", mark)?,
    };
    if class.priority.is_none() && class.mark.is_none() {
        return Err(RuleError::new(
            "the class sets neither a priority nor a mark, so it would change nothing",
            "add \"priority\" (for example the HTB class id \"1:10\") or \"mark\"",
        ));
    }
    Ok(class)
}

fn check_name(name: &str) -> Result<(), RuleError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        return Ok(());
    }
    Err(RuleError::new(
        format!("\"{name}\" is not a valid class name"),
        format!("use 1 to {MAX_NAME_LEN} letters, digits, '_' or '-'"),
    ))
}

fn rule_list(value: &Value, names: &[&str]) -> Result<Vec<ClassRule>, RuleError> {
    let items = value.as_array().ok_or_else(|| RULES.wrong(value))?;
    if items.len() > MAX_RULES {
        return Err(RuleError::new(
            format!("{} rules; at most {MAX_RULES} are supported", items.len()),
            "merge rules of one class, for example adjacent CIDRs into one shorter prefix",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| rule(item, names).map_err(|err| err.in_rule(index)))
        .collect()
}

fn rule(value: &Value, names: &[&str]) -> Result<ClassRule, RuleError> {
    let map = object(value, &RULE, &RULE_FIELDS)?;
    let rule = ClassRule {
        class: required(
            map,
            "class",
            "add \"class\": the name of one of \"classes\"",
            |v| class_name(v, names),
        )?,
        traffic: Traffic::parse(map)?,
        l7: optional(map, "l7", l7)?,
        direction: optional(map, "direction", direction)?.flatten(),
    };
    check_flow_traffic(&rule)?;
    // Unlike a filter's deny rule, a class has no use for spoofed IPv6
    // sources: such a rule can only be meant for the IPv4 range.
    for (field, prefix) in rule.traffic.addresses() {
        if let Some(problem) = prefix.mapped_v4_problem() {
            return Err(
                RuleError::new(problem, "classes match IPv4 traffic by its IPv4 address")
                    .in_field(field),
            );
        }
    }
    Ok(rule)
}

/// tc_classifier keeps flows of IP traffic only.
fn check_flow_traffic(rule: &ClassRule) -> Result<(), RuleError> {
    if rule.traffic.protocol == Protocol::Arp {
        return Err(RuleError::new(
            "protocol arp is not IP, and classes apply to IP flows only",
            "remove the rule; ARP is never classified",
        )
        .in_field("protocol"));
    }
    if rule.l7.is_some() && !rule.traffic.protocol.has_ports() {
        return Err(RuleError::new(
            format!(
                "the L7 guess is made for TCP and UDP flows only, never for {}",
                rule.traffic.protocol
            ),
            "remove \"l7\", or use protocol tcp, udp or any",
        )
        .in_field("l7"));
    }
    Ok(())
}

fn class_name(value: &Value, names: &[&str]) -> Result<String, RuleError> {
    let name = text(value)?;
    if names.contains(&name.as_str()) {
        return Ok(name);
    }
    let hint = if names.is_empty() {
        "define it under \"classes\" first".to_owned()
    } else {
        format!("the classes are {}", names.join(", "))
    };
    Err(RuleError::new(
        format!("no class is named \"{name}\""),
        hint,
    ))
}

/// A number, or tc's `"major:minor"` class id in hex (`"1:10"` is 0x10010).
fn priority(value: &Value) -> Result<u32, RuleError> {
    if let Some(number) = value.as_u64() {
        return u32::try_from(number).map_err(|_| PRIORITY.wrong(value));
    }
    let text = value.as_str().ok_or_else(|| PRIORITY.wrong(value))?;
    let parsed = text.split_once(':').and_then(|(major, minor)| {
        let major = u16::from_str_radix(major, 16).ok()?;
        let minor = if minor.is_empty() {
            0
        } else {
            u16::from_str_radix(minor, 16).ok()?
        };
        Some(u32::from(major) << 16 | u32::from(minor))
    });
    parsed.ok_or_else(|| PRIORITY.invalid(format!("\"{text}\" is not a tc class id")))
}

fn mark(value: &Value) -> Result<u32, RuleError> {
    if let Some(number) = value.as_u64() {
        return u32::try_from(number).map_err(|_| MARK.wrong(value));
    }
    let text = value.as_str().ok_or_else(|| MARK.wrong(value))?;
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| MARK.invalid(format!("\"{text}\" is not a mark")))
}

fn l7(value: &Value) -> Result<L7, RuleError> {
    let text = value.as_str().ok_or_else(|| L7_KIND.wrong(value))?;
    L7::parse(text).ok_or_else(|| {
        L7_KIND.invalid(format!(
            "\"{text}\" is not a payload kind meshbpf recognizes"
        ))
    })
}

/// None for `both`.
fn direction(value: &Value) -> Result<Option<Direction>, RuleError> {
    match value.as_str().ok_or_else(|| DIRECTION.wrong(value))? {
        "ingress" => Ok(Some(Direction::Ingress)),
        "egress" => Ok(Some(Direction::Egress)),
        "both" => Ok(None),
        other => Err(DIRECTION.invalid(format!("\"{other}\" is not a direction"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let rules = parse(
            r#"{ "classes": {
                   "interactive": { "priority": "1:10" },
                   "bulk":        { "priority": "1:30", "mark": "0x30" } },
                 "rules": [
                   { "class": "interactive", "protocol": "tcp", "dport": 22 },
                   { "class": "interactive", "l7": "ssh" },
                   { "class": "bulk", "dst": "10.20.0.0/16", "direction": "egress" } ],
                 "default": "bulk" }"#,
        )
        .unwrap();
        let names: Vec<&str> = rules.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["bulk", "interactive"]);
        assert_eq!(rules.classes[0].priority, Some(0x1_0030));
        assert_eq!(rules.classes[0].mark, Some(0x30));
        assert_eq!(rules.classes[1].mark, None);
        assert_eq!(
            (rules.id_of("bulk"), rules.id_of("interactive")),
            (Some(1), Some(2))
        );
        assert_eq!(rules.rules.len(), 3);
        assert_eq!(rules.rules[1].l7, Some(L7::Ssh));
        assert_eq!(rules.rules[1].direction, None);
        assert_eq!(rules.rules[2].direction, Some(Direction::Egress));
        assert_eq!(rules.default.as_deref(), Some("bulk"));
        let json = serde_json::to_value(&rules).unwrap();
        assert_eq!(json["rules"][2]["dst"], "10.20.0.0/16");
        assert_eq!(json["rules"][0]["dport"], 22);
    }

    #[test]
    fn priorities_and_marks_in_every_accepted_form() {
        let class = |json: &str| {
            let text = format!(r#"{{"classes": {{"c": {json}}}, "rules": []}}"#);
            let rules = parse(&text).unwrap();
            (rules.classes[0].priority, rules.classes[0].mark)
        };
        assert_eq!(class(r#"{"priority": 6}"#), (Some(6), None));
        assert_eq!(class(r#"{"priority": "1:10"}"#), (Some(0x1_0010), None));
        assert_eq!(class(r#"{"priority": "ffff:"}"#), (Some(0xffff_0000), None));
        assert_eq!(class(r#"{"mark": 4294967295}"#), (None, Some(u32::MAX)));
        assert_eq!(class(r#"{"mark": "0xFF"}"#), (None, Some(255)));
    }

    #[test]
    fn each_mistake_has_its_own_message() {
        let cases = [
            (r#"{"rules": []}"#, "field \"classes\": missing"),
            (
                r#"{"classes": {}, "rules": [], "defualt": "x"}"#,
                "did you mean \"default\"?",
            ),
            (
                r#"{"classes": {"c": {}}, "rules": []}"#,
                "sets neither a priority nor a mark",
            ),
            (
                r#"{"classes": {"c": {"priority": "1.10"}}, "rules": []}"#,
                "\"1.10\" is not a tc class id",
            ),
            (
                r#"{"classes": {"c": {"mark": -1}}, "rules": []}"#,
                "expected a mark like 16",
            ),
            (
                r#"{"classes": {"c": {"mark": "12"}}, "rules": []}"#,
                "\"12\" is not a mark",
            ),
            (
                r#"{"classes": {"a b": {"mark": 1}}, "rules": []}"#,
                "\"a b\" is not a valid class name",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [{"class": "d"}]}"#,
                "rule 0, field \"class\": no class is named \"d\"",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [{"dport": 1}]}"#,
                "rule 0, field \"class\": missing",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [{"class": "c", "l7": "smtp"}]}"#,
                "\"smtp\" is not a payload kind",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [{"class": "c", "direction": "in"}]}"#,
                "\"in\" is not a direction",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [{"class": "c", "protocol": "arp"}]}"#,
                "classes apply to IP flows only",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [{"class": "c", "dst": "::ffff:10.0.0.0/104"}]}"#,
                "rule 0, field \"dst\": ::ffff:10.0.0.0/104 is an IPv4-mapped IPv6 range: it matches only IPv6 packets carrying such addresses (never sent by a conforming host), not IPv4 traffic from 10.0.0.0/8; write 10.0.0.0/8 for that",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [{"class": "c", "protocol": "icmp", "l7": "dns"}]}"#,
                "the L7 guess is made for TCP and UDP flows only",
            ),
            (
                r#"{"classes": {"c": {"mark": 1}}, "rules": [], "default": "d"}"#,
                "field \"default\": no class is named \"d\"",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.contains(expected),
                "{text}\n  gave: {message}\n  want: {expected}"
            );
        }
    }

    #[test]
    fn traffic_is_checked_as_in_filter_files() {
        let rule = |fields: &str| {
            error(&format!(
                r#"{{"classes": {{"c": {{"mark": 1}}}}, "rules": [{{"class": "c", {fields}}}]}}"#
            ))
        };
        assert!(rule(r#""protocol": "icmp", "dport": 1"#).contains("protocol icmp has no ports"));
        assert!(rule(r#""protocol": "sctp", "dport": 1"#)
            .contains("ports are matched on tcp and udp only, not on protocol sctp"));
        assert!(rule(r#""protocol": 47, "l7": "tls""#)
            .contains("the L7 guess is made for TCP and UDP flows only, never for gre"));
        assert!(
            rule(r#""src": "10.0.0.0/8", "dst": "2001:db8::/32""#).contains("no packet has both")
        );
        assert!(rule(r#""protocol": "icmpv6", "src": "10.0.0.1""#).contains("is IPv6 only"));
        assert!(rule(r#""src": "10.0.0.1/8""#).contains("rule 0, field \"src\""));
    }

    #[test]
    fn limits() {
        let classes: Vec<String> = (0..=MAX_CLASSES)
            .map(|i| format!(r#""c{i}": {{"mark": 1}}"#))
            .collect();
        let text = format!(r#"{{"classes": {{{}}}, "rules": []}}"#, classes.join(","));
        assert!(error(&text).contains("64 classes; at most 63"));
        let rules = vec![r#"{"class": "c"}"#; MAX_RULES + 1].join(",");
        let text = format!(r#"{{"classes": {{"c": {{"mark": 1}}}}, "rules": [{rules}]}}"#);
        assert!(error(&text).contains("256 rules; at most 255"));
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(error(&format!(
            r#"{{"classes": {{"{long}": {{"mark": 1}}}}, "rules": []}}"#
        ))
        .contains("not a valid class name"));
    }
}
