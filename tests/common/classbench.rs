//! ClassBench rule sets and header traces (format: ../shared/classbench/README.md),
//! and their conversion to meshbpf's rules JSON, rule for rule in file order.
//!
//! The conversion is written from the two formats alone. What the rules JSON
//! cannot say (a partial protocol mask; ports on a protocol other than TCP
//! and UDP) leaves the rule out, counted by reason.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

/// The shared sets, by file name; `every_shared_set_is_listed` keeps the
/// list whole.
pub const SETS: [&str; 6] = [
    "acl1_1000",
    "fw1_1000",
    "ipc1_1000",
    "acl1_10000",
    "fw1_10000",
    "ipc1_10000",
];

/// Where the shared sets are: `$MESHBPF_CLASSBENCH`, else `../shared/classbench`
/// beside the checkout (the layout at CI and in the worktrees).
pub fn dir() -> PathBuf {
    match std::env::var_os("MESHBPF_CLASSBENCH") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/classbench"),
    }
}

/// One ClassBench rule: prefixes with host bits cleared, inclusive port ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CbRule {
    pub src: (u32, u8),
    pub dst: (u32, u8),
    pub sport: (u16, u16),
    pub dport: (u16, u16),
    pub proto: u8,
    pub proto_mask: u8,
}

/// One trace header; `rule` is the rule it was generated from (not
/// necessarily its first match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub rule: usize,
}

pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn prefix(text: &str) -> Result<(u32, u8), String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not ADDR/LEN"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{len:?}: {e}"))?;
    if len > 32 {
        return Err(format!("/{len} is longer than 32"));
    }
    Ok((u32::from(addr) & mask(len), len))
}

fn range(text: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not LO : HI"))?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("{lo:?}: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("{hi:?}: {e}"))?;
    if lo > hi {
        return Err(format!("{text:?}: {lo} > {hi}"));
    }
    Ok((lo, hi))
}

fn hex_u8(text: &str) -> Result<u8, String> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| format!("{text:?} is not 0x.."))?;
    u8::from_str_radix(digits, 16).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a rule file: `@SRC/LEN \t DST/LEN \t LO : HI \t LO : HI \t P/M \t F/M`.
pub fn parse_rules(text: &str) -> Result<Vec<CbRule>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            let line = line.strip_prefix('@').ok_or_else(|| at("no @".into()))?;
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            if fields.len() < 5 {
                return Err(at(format!("{} fields", fields.len())));
            }
            let (proto, proto_mask) = fields[4]
                .split_once('/')
                .ok_or_else(|| at("protocol is not P/M".into()))?;
            Ok(CbRule {
                src: prefix(fields[0]).map_err(at)?,
                dst: prefix(fields[1]).map_err(at)?,
                sport: range(fields[2]).map_err(at)?,
                dport: range(fields[3]).map_err(at)?,
                proto: hex_u8(proto).map_err(at)?,
                proto_mask: hex_u8(proto_mask).map_err(at)?,
            })
        })
        .collect()
}

/// Parses a trace: `SRC DST SPORT DPORT PROTO FLAGS RULE` per line.
pub fn parse_trace(text: &str) -> Result<Vec<Header>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let at = |e: String| format!("trace line {}: {e}: {line:?}", n + 1);
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 7 {
                return Err(at(format!("{} fields", f.len())));
            }
            let num = |i: usize| f[i].parse::<u64>().map_err(|e| at(format!("{e}")));
            let narrow = |i: usize, max: u64| {
                num(i).and_then(|v| {
                    if v <= max {
                        Ok(v)
                    } else {
                        Err(at(format!("field {i} {v} > {max}")))
                    }
                })
            };
            Ok(Header {
                src: narrow(0, u32::MAX.into())? as u32,
                dst: narrow(1, u32::MAX.into())? as u32,
                sport: narrow(2, 65535)? as u16,
                dport: narrow(3, 65535)? as u16,
                proto: narrow(4, 255)? as u8,
                rule: num(6)? as usize,
            })
        })
        .collect()
}

/// The action of ClassBench rule `index`: a fixed hash of the index, so the
/// same set converts alike on every run, allow and deny mixed about evenly.
pub fn action_of(index: usize) -> &'static str {
    // splitmix64's finalizer.
    let mut z = (index as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z & 1 == 0 {
        "allow"
    } else {
        "deny"
    }
}

/// The rules JSON of a set and how its rules map to the ClassBench file.
pub struct Converted {
    pub json: Value,
    /// For each JSON rule, the index of the ClassBench rule it came from.
    pub origin: Vec<usize>,
    /// Rules left out, by reason ("protocol 47", ...).
    pub left_out: BTreeMap<String, usize>,
}

impl Converted {
    pub fn left_out_total(&self) -> usize {
        self.left_out.values().sum()
    }
}

fn cidr((addr, len): (u32, u8)) -> String {
    format!("{}/{len}", Ipv4Addr::from(addr))
}

fn port_value((lo, hi): (u16, u16)) -> Value {
    if lo == hi {
        json!(lo)
    } else {
        json!(format!("{lo}-{hi}"))
    }
}

/// Converts in file order. `/0` and `0 : 65535` become absent fields; any
/// other range is written as the rules JSON accepts it (`443` or `"lo-hi"`).
pub fn to_rules_json(rules: &[CbRule], default: &str) -> Converted {
    to_rules_json_without(rules, default, |_| false)
}

impl CbRule {
    /// Matches every packet: nothing after it is reached, nor the default.
    pub fn is_catch_all(&self) -> bool {
        let full = (0, u16::MAX);
        self.src.1 == 0
            && self.dst.1 == 0
            && self.sport == full
            && self.dport == full
            && self.proto_mask == 0
    }
}

/// As [`to_rules_json`], leaving out (counted as "dropped by the test") the
/// rules `skip` names; the others keep their index's action.
pub fn to_rules_json_without(
    rules: &[CbRule],
    default: &str,
    skip: impl Fn(&CbRule) -> bool,
) -> Converted {
    let mut out = Vec::new();
    let mut origin = Vec::new();
    let mut left_out = BTreeMap::<String, usize>::new();
    for (index, rule) in rules.iter().enumerate() {
        if skip(rule) {
            *left_out.entry("dropped by the test".into()).or_default() += 1;
            continue;
        }
        let protocol = match (rule.proto_mask, rule.proto) {
            (0x00, _) => None,
            (0xFF, 6) => Some(json!("tcp")),
            (0xFF, 17) => Some(json!("udp")),
            (0xFF, 1) => Some(json!("icmp")),
            (0xFF, p) => Some(json!(p)),
            (m, p) => {
                *left_out
                    .entry(format!("protocol mask 0x{p:02x}/0x{m:02x}"))
                    .or_default() += 1;
                continue;
            }
        };
        let full = (0, u16::MAX);
        let has_ports = rule.sport != full || rule.dport != full;
        let ports_allowed = matches!(rule.proto_mask, 0x00) || [6, 17].contains(&rule.proto);
        if has_ports && !ports_allowed {
            *left_out
                .entry(format!("ports on protocol {}", rule.proto))
                .or_default() += 1;
            continue;
        }
        let mut r = Map::new();
        r.insert("action".into(), json!(action_of(index)));
        if rule.src.1 != 0 {
            r.insert("src".into(), json!(cidr(rule.src)));
        }
        if rule.dst.1 != 0 {
            r.insert("dst".into(), json!(cidr(rule.dst)));
        }
        if let Some(p) = protocol {
            r.insert("protocol".into(), p);
        }
        if rule.sport != full {
            r.insert("sport".into(), port_value(rule.sport));
        }
        if rule.dport != full {
            r.insert("dport".into(), port_value(rule.dport));
        }
        out.push(Value::Object(r));
        origin.push(index);
    }
    Converted {
        json: json!({ "default": default, "rules": out }),
        origin,
        left_out,
    }
}
