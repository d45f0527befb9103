//! The filter rule file that `xdp_mesh_filter` enforces.
//!
//! ```json
//! { "default": "allow",
//!   "rules": [
//!     { "action": "deny",  "src": "203.0.113.0/24" },
//!     { "action": "allow", "protocol": "tcp", "dport": 443, "name": "https" },
//!     { "action": "deny",  "src": "2001:db8::/32", "protocol": "udp", "dport": "5000-5999" },
//!     { "action": "allow", "protocol": "tcp", "dport": 22, "rate_limit": {"pps": 10, "burst": 20} },
//!     { "action": "allow", "protocol": "arp" } ],
//!   "rate_limit": { "pps": 1000, "burst": 200 },
//!   "syn_flood":  { "pps": 100 } }
//! ```
//!
//! A rule has `action` (`allow`, `deny`, or `drop`, a synonym of deny) and
//! optionally `id`, `name`, `src`, `dst` (an address or CIDR), `protocol` (`tcp`,
//! `udp`, `icmp`, `icmpv6`, `arp`, `any`, the default, another IANA keyword
//! such as `gre`, or an IP protocol number 0-255), `sport`, `dport`
//! (a port or `"low-high"` range) and, on allow rules only, `rate_limit`,
//! with `ban` (a TTL such as `"10m"`) beside it to put the sources it refuses
//! into the ban set. `"ban"` may also go inside any limit object, and does
//! in `"syn_flood": {"pps": 100, "ban": "10m"}`.
//! Which packets a rule matches is described in [`super::compile`].
//!
//! Every rule has an id, which carries its counters across rule sets (see
//! [`super::rule_ids`]): the one it gives, or one derived from what it
//! matches and does.
//!
//! Contradictory rules are refused with the reason: those that
//! [`super::traffic`] refuses in every rule file, and a rate limit on a deny
//! rule, which would limit nothing.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::traffic::Traffic;
use super::{
    action, bans, limit, load_file, object, optional, parse_document, required, rule_ids, text,
    Action, Expected, Limit, PortRange, Prefix, Protocol, RuleError,
};
use crate::kernel::files;

/// The most rules one file may have.
pub const MAX_RULES: usize = 16384;

/// Serializes back to the file format, but with every id: see
/// [`FilterRules::to_file`] for the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterRules {
    /// What happens to a packet that no rule matches. A file without
    /// `"default"` allows such packets: a filter that is deployed before its
    /// rules are complete then blocks only what it names, instead of
    /// cutting a host off.
    pub default: Action,
    pub rules: Vec<Rule>,
    /// Applies to all traffic; its enforcement is xdp_mesh_filter's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Limit>,
    /// Applies to TCP SYNs; its enforcement is xdp_mesh_filter's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_flood: Option<Limit>,
}

/// Serializes back to the file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Unique in its set: given in the file, or [`super::rule_ids`]'s.
    pub id: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<Prefix>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<Prefix>,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<PortRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<PortRange>,
    /// Only on allow rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Limit>,
}

impl FilterRules {
    /// The set as a rule file that parses back to it: derived ids, which a
    /// file may not give, are left to be derived again.
    pub fn to_file(&self) -> Value {
        let mut file = serde_json::to_value(self).expect("rules serialize");
        for rule in file["rules"].as_array_mut().into_iter().flatten() {
            if let Some(fields) = rule.as_object_mut() {
                if fields["id"].as_str().is_some_and(rule_ids::is_derived) {
                    fields.remove("id");
                }
            }
        }
        file
    }
}

impl Rule {
    /// One line for tables: the conditions in file order, the limit and
    /// the name.
    pub fn summary(&self) -> String {
        let rule = self;
        let mut parts = Vec::new();
        if let Some(src) = rule.src {
            parts.push(format!("src {src}"));
        }
        if let Some(dst) = rule.dst {
            parts.push(format!("dst {dst}"));
        }
        if rule.protocol != Protocol::Any {
            parts.push(rule.protocol.to_string());
        }
        let range = |r: PortRange| {
            if r.lo == r.hi {
                r.lo.to_string()
            } else {
                format!("{}-{}", r.lo, r.hi)
            }
        };
        if let Some(r) = rule.sport {
            parts.push(format!("sport {}", range(r)));
        }
        if let Some(r) = rule.dport {
            parts.push(format!("dport {}", range(r)));
        }
        if let Some(l) = rule.rate_limit {
            parts.push(format!(
                "limit {} pps burst {}{}",
                l.pps,
                l.burst,
                l.ban_note()
            ));
        }
        if parts.is_empty() {
            parts.push("any IP packet".into());
        }
        if let Some(name) = &rule.name {
            parts.push(format!("({name})"));
        }
        parts.join(" ")
    }

    pub fn has_ports(&self) -> bool {
        self.sport.is_some() || self.dport.is_some()
    }
}

/// Parses and checks a filter file's text.
pub fn parse(text: &str) -> Result<FilterRules, RuleError> {
    filter_rules(&parse_document(text)?)
}

/// Reads and parses a filter file; errors start with its path.
pub fn load(path: &Path) -> Result<FilterRules, RuleError> {
    load_file(path, &files::FILTER_RULES, parse)
}

const FILE: Expected = Expected {
    what: "an object like {\"default\": \"allow\", \"rules\": [...]}",
    hint: "a filter file is one JSON object with \"rules\" and optionally \"default\", \"rate_limit\" and \"syn_flood\"",
};
const RULES: Expected = Expected {
    what: "an array of rules",
    hint: "write \"rules\": [{\"action\": \"deny\", \"src\": \"203.0.113.0/24\"}, ...]",
};
const RULE: Expected = Expected {
    what: "a rule like {\"action\": \"deny\", \"src\": \"203.0.113.0/24\"}",
    hint: "each rule is an object with \"action\" and the fields it matches on",
};

const FILE_FIELDS: [&str; 4] = ["default", "rules", "rate_limit", "syn_flood"];
const RULE_FIELDS: [&str; 10] = [
    "id",
    "action",
    "name",
    "src",
    "dst",
    "protocol",
    "sport",
    "dport",
    "rate_limit",
    "ban",
];

fn filter_rules(document: &Value) -> Result<FilterRules, RuleError> {
    let map = object(document, &FILE, &FILE_FIELDS)?;
    Ok(FilterRules {
        default: optional(map, "default", action)?.unwrap_or(Action::Allow),
        rules: required(
            map,
            "rules",
            "add \"rules\": [...]; an empty list applies the default to everything",
            rule_list,
        )?,
        rate_limit: optional(map, "rate_limit", limit)?,
        syn_flood: optional(map, "syn_flood", limit)?,
    })
}

fn rule_list(value: &Value) -> Result<Vec<Rule>, RuleError> {
    let items = value.as_array().ok_or_else(|| RULES.wrong(value))?;
    if items.len() > MAX_RULES {
        return Err(RuleError::new(
            format!("{} rules; at most {MAX_RULES} are supported", items.len()),
            "merge rules, for example adjacent CIDRs with the same action into one shorter prefix",
        ));
    }
    let mut rules = Vec::with_capacity(items.len());
    let mut given = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let (rule, id) = rule(item).map_err(|err| err.in_rule(index))?;
        rules.push(rule);
        given.push(id);
    }
    rule_ids::assign(&mut rules, given)?;
    Ok(rules)
}

/// A rule, with its id still empty, and the id the file gives it.
fn rule(value: &Value) -> Result<(Rule, Option<String>), RuleError> {
    let map = object(value, &RULE, &RULE_FIELDS)?;
    let Traffic {
        src,
        dst,
        protocol,
        sport,
        dport,
    } = Traffic::parse(map)?;
    let id = optional(map, "id", rule_ids::given)?;
    let rule = Rule {
        id: String::new(),
        action: required(
            map,
            "action",
            "add \"action\": \"allow\" or \"action\": \"deny\"",
            action,
        )?,
        name: optional(map, "name", text)?,
        src,
        dst,
        protocol,
        sport,
        dport,
        rate_limit: ban_next_to(optional(map, "rate_limit", limit)?, map)?,
    };
    check_rate_limit(&rule)?;
    Ok((rule, id))
}

/// A rule's `"ban"` beside its `"rate_limit"`, moved into the limit it
/// belongs to (where `"ban"` may also be written, as in `"syn_flood"`).
fn ban_next_to(
    limit: Option<Limit>,
    map: &serde_json::Map<String, Value>,
) -> Result<Option<Limit>, RuleError> {
    let Some(ttl) = optional(map, "ban", bans::ttl_value)? else {
        return Ok(limit);
    };
    let fail = |message: &str, hint: &str| Err(RuleError::new(message, hint).in_field("ban"));
    match limit {
        None => fail(
            "\"ban\" bans the sources a rate limit refuses, and this rule has no \"rate_limit\"",
            "add \"rate_limit\": {\"pps\": ..., \"burst\": ...} to the rule, or remove \"ban\"",
        ),
        Some(Limit { ban: Some(_), .. }) => fail(
            "\"ban\" is given both beside \"rate_limit\" and inside it",
            "keep one of the two",
        ),
        Some(limit) => Ok(Some(Limit {
            ban: Some(ttl),
            ..limit
        })),
    }
}

fn check_rate_limit(rule: &Rule) -> Result<(), RuleError> {
    if rule.action == Action::Deny && rule.rate_limit.is_some() {
        return Err(RuleError::new(
            "only allow rules can be rate limited, and this rule denies",
            "remove \"rate_limit\", or make the rule \"allow\"",
        )
        .in_field("rate_limit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{ "default": "allow",
      "rules": [
        { "action": "deny",  "src": "203.0.113.0/24" },
        { "action": "allow", "protocol": "tcp", "dport": 443, "name": "https" },
        { "action": "deny",  "src": "2001:db8::/32", "protocol": "udp", "dport": "5000-5999" },
        { "action": "allow", "protocol": "tcp", "dport": 22, "rate_limit": {"pps": 10, "burst": 20} },
        { "action": "allow", "protocol": "arp" } ],
      "rate_limit": { "pps": 1000, "burst": 200 },
      "syn_flood":  { "pps": 100 } }"#;

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// The error for a file whose rule 1 is `rule`.
    fn rule_error(rule: &str) -> String {
        error(&format!(r#"{{"rules": [{{"action": "allow"}}, {rule}]}}"#))
    }

    fn net(text: &str) -> Prefix {
        super::super::prefix(&Value::from(text)).unwrap()
    }

    #[test]
    fn ban_goes_beside_a_rate_limit_or_inside_a_limit() {
        let ttl = |s| Some(bans::ttl(s).unwrap());
        let filter = parse(
            r#"{"rules": [{"action": "allow", "rate_limit": {"pps": 10}, "ban": "10m"}],
                "syn_flood": {"pps": 5, "ban": "1h"}}"#,
        )
        .unwrap();
        assert_eq!(filter.rules[0].rate_limit.unwrap().ban, ttl("10m"));
        assert_eq!(filter.syn_flood.unwrap().ban, ttl("1h"));
        // Written back inside the limit, which parses to the same rules.
        let file = filter.to_file();
        assert_eq!(
            file["rules"][0]["rate_limit"],
            serde_json::json!({"pps": 10, "burst": 10, "ban": "10m"}),
            "{file}"
        );
        assert_eq!(parse(&file.to_string()).unwrap(), filter);
        assert_eq!(
            rule_error(r#"{"action": "allow", "ban": "10m"}"#),
            "rule 1, field \"ban\": \"ban\" bans the sources a rate limit refuses, and this rule has no \"rate_limit\""
        );
        assert_eq!(
            rule_error(
                r#"{"action": "allow", "rate_limit": {"pps": 1, "ban": "1m"}, "ban": "10m"}"#
            ),
            "rule 1, field \"ban\": \"ban\" is given both beside \"rate_limit\" and inside it"
        );
        assert!(
            rule_error(r#"{"action": "allow", "rate_limit": {"pps": 1}, "ban": "1ms"}"#)
                .contains("is outside 1s to 365 days"),
        );
    }

    #[test]
    fn the_example_parses_field_by_field() {
        let filter = parse(EXAMPLE).unwrap();
        assert_eq!(filter.default, Action::Allow);
        assert_eq!(
            filter.rate_limit,
            Some(Limit {
                pps: 1000,
                burst: 200,
                ban: None
            })
        );
        assert_eq!(
            filter.syn_flood,
            Some(Limit {
                pps: 100,
                burst: 100,
                ban: None
            })
        );
        assert_eq!(filter.rules.len(), 5);
        assert_eq!(
            filter.rules[2],
            Rule {
                id: filter.rules[2].id.clone(),
                action: Action::Deny,
                name: None,
                src: Some(net("2001:db8::/32")),
                dst: None,
                protocol: Protocol::Udp,
                sport: None,
                dport: Some(PortRange { lo: 5000, hi: 5999 }),
                rate_limit: None,
            }
        );
        assert_eq!(filter.rules[1].name.as_deref(), Some("https"));
        assert_eq!(
            filter.rules[3].rate_limit,
            Some(Limit {
                pps: 10,
                burst: 20,
                ban: None
            })
        );
        assert_eq!(filter.rules[4].protocol, Protocol::Arp);
    }

    #[test]
    fn defaults_allow_any_protocol_and_no_limits() {
        let filter = parse(r#"{"rules": [{"action": "drop"}]}"#).unwrap();
        assert_eq!(filter.default, Action::Allow);
        assert_eq!(filter.rate_limit, None);
        assert_eq!(filter.syn_flood, None);
        assert_eq!(filter.rules[0].action, Action::Deny);
        assert_eq!(filter.rules[0].protocol, Protocol::Any);
        let filter = parse(r#"{"default": "drop", "rules": []}"#).unwrap();
        assert_eq!(filter.default, Action::Deny);
    }

    #[test]
    fn any_protocol_may_have_ports() {
        let filter =
            parse(r#"{"rules": [{"action": "deny", "sport": "1-1023", "dst": "10.0.0.0/8"}]}"#);
        assert_eq!(
            filter.unwrap().rules[0].sport,
            Some(PortRange { lo: 1, hi: 1023 })
        );
    }

    #[test]
    fn serializing_gives_back_the_same_rules() {
        let filter = parse(EXAMPLE).unwrap();
        let text = filter.to_file().to_string();
        assert_eq!(parse(&text).unwrap(), filter);
        assert!(text.contains(r#""dport":"5000-5999""#), "{text}");
        assert!(text.contains(r#""dport":443"#), "{text}");
    }

    #[test]
    fn ports_on_protocols_without_ports() {
        assert_eq!(
            rule_error(r#"{"action": "allow", "protocol": "icmp", "dport": 8}"#),
            "rule 1, field \"dport\": protocol icmp has no ports"
        );
        assert_eq!(
            rule_error(r#"{"action": "allow", "protocol": "icmpv6", "sport": 1}"#),
            "rule 1, field \"sport\": protocol icmpv6 has no ports"
        );
        assert_eq!(
            rule_error(r#"{"action": "allow", "protocol": "arp", "dport": 1}"#),
            "rule 1, field \"dport\": protocol arp has no ports"
        );
        assert_eq!(
            rule_error(r#"{"action": "allow", "protocol": "sctp", "dport": 80}"#),
            "rule 1, field \"dport\": ports are matched on tcp and udp only, not on protocol sctp"
        );
        assert_eq!(
            rule_error(r#"{"action": "allow", "protocol": 253, "sport": "1-2"}"#),
            "rule 1, field \"sport\": ports are matched on tcp and udp only, not on protocol 253"
        );
        let err =
            parse(r#"{"rules": [{"action": "deny", "protocol": "gre", "dport": 1}]}"#).unwrap_err();
        assert_eq!(
            err.hint(),
            "remove \"dport\", or use protocol tcp, udp or any"
        );
    }

    #[test]
    fn numbered_protocols_take_addresses_of_either_family() {
        let filter = parse(
            r#"{"rules": [
                {"action": "deny", "protocol": 47, "src": "10.0.0.0/8", "dst": "192.0.2.1"},
                {"action": "deny", "protocol": "esp", "dst": "2001:db8::/32"},
                {"action": "allow", "protocol": "6", "dport": 22}]}"#,
        )
        .unwrap();
        assert_eq!(filter.rules[0].protocol, Protocol::Number(47));
        assert_eq!(filter.rules[1].protocol, Protocol::Number(50));
        assert_eq!(filter.rules[2].protocol, Protocol::Tcp);
        let text = filter.to_file().to_string();
        assert!(text.contains(r#""protocol":"gre""#), "{text}");
        assert!(text.contains(r#""protocol":"esp""#), "{text}");
        assert_eq!(parse(&text).unwrap(), filter);
    }

    #[test]
    fn arp_with_an_address() {
        assert_eq!(
            rule_error(r#"{"action": "deny", "protocol": "arp", "src": "10.0.0.0/8"}"#),
            "rule 1, field \"src\": protocol arp is not IP, so an arp rule cannot have an address"
        );
        assert_eq!(
            rule_error(r#"{"action": "deny", "protocol": "arp", "dst": "10.0.0.1"}"#),
            "rule 1, field \"dst\": protocol arp is not IP, so an arp rule cannot have an address"
        );
    }

    #[test]
    fn src_and_dst_of_different_families() {
        assert_eq!(
            rule_error(r#"{"action": "deny", "src": "10.0.0.0/8", "dst": "2001:db8::/32"}"#),
            "rule 1, field \"dst\": 2001:db8::/32 is IPv6 but src 10.0.0.0/8 is IPv4; no packet has both"
        );
    }

    #[test]
    fn icmp_with_ipv6_and_icmpv6_with_ipv4() {
        assert_eq!(
            rule_error(r#"{"action": "deny", "protocol": "icmp", "src": "2001:db8::/32"}"#),
            "rule 1, field \"src\": protocol icmp is IPv4 only, but 2001:db8::/32 is IPv6"
        );
        assert_eq!(
            rule_error(r#"{"action": "deny", "protocol": "icmpv6", "dst": "10.0.0.0/8"}"#),
            "rule 1, field \"dst\": protocol icmpv6 is IPv6 only, but 10.0.0.0/8 is IPv4"
        );
    }

    #[test]
    fn rate_limit_on_a_deny_rule() {
        assert_eq!(
            rule_error(r#"{"action": "drop", "rate_limit": {"pps": 5}}"#),
            "rule 1, field \"rate_limit\": only allow rules can be rate limited, and this rule denies"
        );
    }

    #[test]
    fn too_many_rules() {
        let rules = vec![r#"{"action": "deny"}"#; MAX_RULES + 1].join(",");
        assert_eq!(
            error(&format!(r#"{{"rules": [{rules}]}}"#)),
            "field \"rules\": 16385 rules; at most 16384 are supported"
        );
        let rules = vec![r#"{"action": "deny"}"#; MAX_RULES].join(",");
        assert!(parse(&format!(r#"{{"rules": [{rules}]}}"#)).is_ok());
    }

    #[test]
    fn empty_and_invalid_json() {
        assert_eq!(error(""), "the file is empty");
        assert_eq!(
            error("{\"rules\": [\n  {\"action\": \"deny\"}\n  {\"action\": \"allow\"}]}"),
            "line 3, column 3: expected `,` or `]`"
        );
        assert_eq!(
            error("{\"rules\": ["),
            "line 1, column 11: EOF while parsing a list"
        );
    }

    #[test]
    fn typos_are_never_ignored() {
        assert_eq!(
            rule_error(r#"{"action": "allow", "protocol": "tcp", "dpot": 22}"#),
            "rule 1, field \"dpot\": not a known field; did you mean \"dport\"?"
        );
        assert_eq!(
            error(r#"{"rules": [], "defualt": "deny"}"#),
            "field \"defualt\": not a known field; did you mean \"default\"?"
        );
        assert_eq!(
            rule_error(r#"{"action": "allow", "rate_limit": {"pps": 5, "brust": 9}}"#),
            "rule 1, field \"rate_limit.brust\": not a known field; did you mean \"burst\"?"
        );
    }

    #[test]
    fn wrong_types_name_the_rule_and_field() {
        assert_eq!(
            rule_error(r#"{"action": "allow", "dport": true}"#),
            "rule 1, field \"dport\": expected a port like 443 or a range like \"5000-5999\", found true"
        );
        assert_eq!(
            rule_error(r#"{"action": "allow", "name": 7}"#),
            "rule 1, field \"name\": expected a string, found 7"
        );
        assert_eq!(
            rule_error(r#"{"action": "allow", "src": "10.0.0.1/24"}"#),
            "rule 1, field \"src\": 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
        );
        assert_eq!(
            rule_error(r#"["allow"]"#),
            "rule 1: expected a rule like {\"action\": \"deny\", \"src\": \"203.0.113.0/24\"}, found [\"allow\"]"
        );
        assert_eq!(
            rule_error(r#"{"src": "10.0.0.0/8"}"#),
            "rule 1, field \"action\": missing"
        );
        assert_eq!(error(r#"{"default": "allow"}"#), "field \"rules\": missing");
        assert_eq!(
            error(r#"{"rules": {}}"#),
            "field \"rules\": expected an array of rules, found {}"
        );
        assert_eq!(
            error(r#"[]"#),
            "expected an object like {\"default\": \"allow\", \"rules\": [...]}, found []"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter.json");
        std::fs::write(&path, r#"{"rules": [{"action": "allow", "dport": 70000}]}"#).unwrap();
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!(
                "{}: rule 0, field \"dport\": 70000 is not a port (0-65535)",
                path.display()
            )
        );
        let missing = dir.path().join("missing.json");
        assert_eq!(
            load(&missing).unwrap_err().to_string(),
            format!(
                "{}: cannot read it: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }
}
