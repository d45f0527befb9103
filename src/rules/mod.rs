//! What every meshbpf rule file shares (the filter today; QoS classes and LSM
//! policies reuse it): one error type that says where a file is wrong, why,
//! and what to do, and the parsers for the values rule files are made of.
//!
//! Files are read as JSON into a loose [`Value`] and checked by hand, so that
//! each error can name the rule and the field it is about. Rules are numbered
//! from 0 in file order, as `jq '.rules[3]'` numbers them. Unknown keys and
//! repeated keys are errors: a typo such as `"dpot"` must never be ignored.

pub mod bans;
pub mod classes;
pub mod compile;
pub mod compile_report;
pub mod diff;
pub mod filter;
pub mod policy;
pub mod rule_ids;
pub mod traffic;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{edit_distance, Failure};
use crate::kernel::files::{self, Kind};
use crate::proto;

/// A rule file that meshbpf refuses, located as precisely as it is known.
/// Boxed, because every parser returns it and most calls succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(Box<Details>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Details {
    path: Option<PathBuf>,
    position: Option<(usize, usize)>,
    rule: Option<usize>,
    field: Option<String>,
    message: String,
    hint: String,
}

impl RuleError {
    /// `message` says what is wrong and why; `hint` what to do about it.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        RuleError(Box::new(Details {
            path: None,
            position: None,
            rule: None,
            field: None,
            message: message.into(),
            hint: hint.into(),
        }))
    }

    /// Places the error in field `name`, as the outer part of a dotted path
    /// (`rate_limit.pps`). Fields inside a rule are named relative to the rule,
    /// so an error that already names its rule keeps its field as it is.
    pub fn in_field(mut self, name: &str) -> Self {
        if self.0.rule.is_none() {
            self.0.field = Some(match self.0.field.take() {
                Some(inner) => format!("{name}.{inner}"),
                None => name.to_owned(),
            });
        }
        self
    }

    pub fn in_rule(mut self, index: usize) -> Self {
        self.0.rule = Some(index);
        self
    }

    pub fn in_file(mut self, path: &Path) -> Self {
        self.0.path = Some(path.to_owned());
        self
    }

    fn at_position(mut self, line: usize, column: usize) -> Self {
        self.0.position = Some((line, column));
        self
    }

    pub fn hint(&self) -> &str {
        &self.0.hint
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Details {
            path,
            position,
            rule,
            field,
            message,
            hint: _,
        } = &*self.0;
        if let Some(path) = path {
            write!(f, "{}: ", path.display())?;
        }
        let mut place = Vec::new();
        if let Some((line, column)) = position {
            place.push(format!("line {line}, column {column}"));
        }
        if let Some(rule) = rule {
            place.push(format!("rule {rule}"));
        }
        if let Some(field) = field {
            place.push(format!("field \"{field}\""));
        }
        if !place.is_empty() {
            write!(f, "{}: ", place.join(", "))?;
        }
        f.write_str(message)
    }
}

impl std::error::Error for RuleError {}

impl From<RuleError> for Failure {
    fn from(err: RuleError) -> Self {
        Failure::new(err.to_string()).hint(err.0.hint)
    }
}

/// What a value should look like, so that every error about one kind of
/// value gives the same advice.
pub struct Expected {
    pub what: &'static str,
    pub hint: &'static str,
}

impl Expected {
    pub fn wrong(&self, found: &Value) -> RuleError {
        RuleError::new(
            format!("expected {}, found {}", self.what, shown(found)),
            self.hint,
        )
    }

    pub fn invalid(&self, message: String) -> RuleError {
        RuleError::new(message, self.hint)
    }
}

const CIDR: Expected = Expected {
    what: "an address or CIDR like \"203.0.113.0/24\" or \"2001:db8::/32\"",
    hint: "write an IPv4 or IPv6 address, optionally followed by /prefix-length; a bare address means that one host",
};
const PORT: Expected = Expected {
    what: "a port like 443 or a range like \"5000-5999\"",
    hint: "ports are 0-65535; write a range as a string \"low-high\" with the low end first",
};
const PROTOCOL: Expected = Expected {
    what: "a protocol like \"tcp\", \"gre\" or 47",
    hint: "write an IANA keyword in lower case (tcp, udp, icmp, icmpv6, gre, esp, ah, sctp, ...), arp, any, or an IP protocol number 0-255",
};
const ACTION: Expected = Expected {
    what: "an action like \"allow\"",
    hint: "the actions are allow, and deny (or its synonym drop)",
};
const LIMIT: Expected = Expected {
    what: "a limit like {\"pps\": 1000, \"burst\": 200}",
    hint: "a limit has \"pps\" (packets per second) and optionally \"burst\" (packets, defaults to pps)",
};
const PPS: Expected = Expected {
    what: "a whole number of packets per second, at least 1",
    hint: "write pps as a whole number such as 1000; to stop all traffic, use a deny rule instead",
};
const BURST: Expected = Expected {
    what: "a whole number of packets, at least 1",
    hint: "write burst as a whole number, or leave it out to use pps",
};
const TEXT: Expected = Expected {
    what: "a string",
    hint: "put the value in double quotes",
};

/// Reads a rule file's text as JSON. Repeated keys are refused because
/// serde_json would silently keep the last one.
pub fn parse_document(text: &str) -> Result<Value, RuleError> {
    if text.trim().is_empty() {
        return Err(RuleError::new(
            "the file is empty",
            "a rule file is one JSON object; see the README for its format",
        ));
    }
    serde_json::from_str::<Strict>(text)
        .map(|strict| strict.0)
        .map_err(json_error)
}

/// Reads a rule file of `kind` (through [`files`], so only a regular file
/// within its cap) and parses its text with `parse`; every error starts with
/// the file's path.
pub fn load_file<T>(
    path: &Path,
    kind: &Kind,
    parse: impl FnOnce(&str) -> Result<T, RuleError>,
) -> Result<T, RuleError> {
    files::read_text(path, kind)
        .map_err(|err| RuleError::new(format!("cannot read it: {}", err.reason), err.hint))
        .and_then(|text| parse(&text))
        .map_err(|err| err.in_file(path))
}

fn json_error(err: serde_json::Error) -> RuleError {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    // Strict accepts any JSON value, so its only data error is a repeated key.
    let hint = if err.is_data() {
        "keep one of the two values: a key may appear once in an object"
    } else {
        "fix the JSON there; a missing comma or quote, or a trailing comma, is the usual cause"
    };
    RuleError::new(message, hint).at_position(err.line(), err.column())
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("key \"{key}\" appears twice")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Strict(Value::Object(object)))
    }
}

/// A JSON object whose keys are all in `known`; an unknown key is reported
/// with the known key it most likely misspells.
pub fn object<'a>(
    value: &'a Value,
    expected: &Expected,
    known: &[&str],
) -> Result<&'a Map<String, Value>, RuleError> {
    let map = value.as_object().ok_or_else(|| expected.wrong(value))?;
    match map.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(unknown_key(key, known)),
        None => Ok(map),
    }
}

fn unknown_key(key: &str, known: &[&str]) -> RuleError {
    let message = match closest(key, known) {
        Some(near) => format!("not a known field; did you mean \"{near}\"?"),
        None => "not a known field".to_owned(),
    };
    RuleError::new(message, format!("the fields here are {}", known.join(", "))).in_field(key)
}

/// The known word `key` most likely misspells: at most two edits away, and
/// fewer than the word's length (any two-letter word is two edits from
/// `ah`).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|&candidate| (edit_distance(key, candidate), candidate))
        .filter(|&(distance, candidate)| distance <= 2 && distance < candidate.chars().count())
        .min()
        .map(|(_, candidate)| candidate)
}

/// Parses field `name` of `map` when it is present.
pub fn optional<T>(
    map: &Map<String, Value>,
    name: &str,
    parse: impl FnOnce(&Value) -> Result<T, RuleError>,
) -> Result<Option<T>, RuleError> {
    map.get(name)
        .map(parse)
        .transpose()
        .map_err(|err| err.in_field(name))
}

/// Parses field `name` of `map`; `hint` says what to add when it is missing.
pub fn required<T>(
    map: &Map<String, Value>,
    name: &str,
    hint: &str,
    parse: impl FnOnce(&Value) -> Result<T, RuleError>,
) -> Result<T, RuleError> {
    optional(map, name, parse)?.ok_or_else(|| RuleError::new("missing", hint).in_field(name))
}

/// A value as JSON, shortened so that a huge object cannot flood a message.
fn shown(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    let text = value.to_string();
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

pub fn text(value: &Value) -> Result<String, RuleError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| TEXT.wrong(value))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A CIDR. Sorting prefixes puts every prefix right before the prefixes it
/// contains, which the compiler relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub family: Family,
    /// IPv4 in the first 4 bytes, the rest 0; bits past `len` are 0.
    pub addr: [u8; 16],
    /// 0..=32 for IPv4, 0..=128 for IPv6.
    pub len: u8,
}

impl Prefix {
    /// The network of `addr` with `len` bits; the host bits are cleared.
    /// Panics when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Prefix {
        let family = Family::of(addr);
        assert!(len <= family.bits(), "/{len} is too long for {addr}");
        Prefix {
            family,
            addr: masked(octets(addr), len),
            len,
        }
    }

    pub fn host(addr: IpAddr) -> Prefix {
        Prefix::new(addr, Family::of(addr).bits())
    }

    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &Prefix) -> bool {
        self.family == other.family
            && self.len <= other.len
            && masked(other.addr, self.len) == self.addr
    }

    /// The netmask: `len` one bits, as address bytes.
    pub fn mask(&self) -> [u8; 16] {
        masked([0xff; 16], self.len)
    }

    /// The IPv4 range an IPv4-mapped IPv6 prefix (within ::ffff:0:0/96)
    /// spells. IPv4 traffic never carries such addresses and RFC 4291 keeps
    /// them off the wire, so a rule on one matches only spoofed IPv6 frames,
    /// never the IPv4 range it seems to name.
    pub fn mapped_v4(&self) -> Option<Prefix> {
        let IpAddr::V6(v6) = self.ip() else {
            return None;
        };
        let v4 = v6.to_ipv4_mapped()?;
        (self.len >= 96).then(|| Prefix::new(IpAddr::V4(v4), self.len - 96))
    }

    /// What is wrong with a rule on an IPv4-mapped prefix; None for others.
    pub fn mapped_v4_problem(&self) -> Option<String> {
        self.mapped_v4().map(|v4| {
            format!(
                "{self} is an IPv4-mapped IPv6 range: it matches only IPv6 packets carrying such addresses (never sent by a conforming host), not IPv4 traffic from {v4}; write {v4} for that"
            )
        })
    }

    pub fn ip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]]),
            Family::V6 => IpAddr::from(self.addr),
        }
    }
}

/// As written in rule files: `"203.0.113.0/24"`.
impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(), self.len)
    }
}

fn octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            bytes
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn masked(addr: [u8; 16], len: u8) -> [u8; 16] {
    // Shifting a u128 by 128 overflows; a /0 keeps no bits.
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    (u128::from_be_bytes(addr) & mask).to_be_bytes()
}

/// `"203.0.113.0/24"`, `"2001:db8::/32"`, or a bare address for one host.
/// Host bits must be clear: `10.0.0.1/24` is more likely a mistake than a
/// way to write `10.0.0.0/24`.
pub fn prefix(value: &Value) -> Result<Prefix, RuleError> {
    prefix_text(value.as_str().ok_or_else(|| CIDR.wrong(value))?)
}

/// [`prefix`] of a bare string, as ban lists and the command line give it.
pub fn prefix_text(text: &str) -> Result<Prefix, RuleError> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| CIDR.invalid(format!("\"{text}\" is not an IP address or CIDR")))?;
    let bits = Family::of(addr).bits();
    let len = match len_text {
        None => bits,
        Some(len) => decimal(len)
            .filter(|&len| len <= u64::from(bits))
            .ok_or_else(|| {
                CIDR.invalid(format!(
                    "\"{text}\" has prefix length \"{len}\"; an {} prefix length is 0-{bits}",
                    Family::of(addr)
                ))
            })? as u8,
    };
    let network = Prefix::new(addr, len);
    if network.ip() != addr {
        return Err(CIDR.invalid(format!("{text} has host bits set; did you mean {network}?")));
    }
    Ok(network)
}

/// Only ASCII digits: Rust's integer parsing would also take a leading `+`.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// A JSON number `443`, or a string `"443"` or `"5000-5999"`.
pub fn port_range(value: &Value) -> Result<PortRange, RuleError> {
    let not_a_port = || PORT.invalid(format!("{} is not a port (0-65535)", shown(value)));
    match value {
        Value::Number(number) => number
            .as_u64()
            .and_then(port)
            .map(single)
            .ok_or_else(not_a_port),
        Value::String(text) => match text.split_once('-') {
            None => decimal(text)
                .and_then(port)
                .map(single)
                .ok_or_else(not_a_port),
            Some((lo, hi)) => port_span(text, lo, hi),
        },
        _ => Err(PORT.wrong(value)),
    }
}

/// As written in rule files: `443` or `"5000-5999"`.
impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.lo == self.hi {
            serializer.serialize_u16(self.lo)
        } else {
            serializer.collect_str(&format_args!("{}-{}", self.lo, self.hi))
        }
    }
}

fn port(number: u64) -> Option<u16> {
    u16::try_from(number).ok()
}

fn single(port: u16) -> PortRange {
    PortRange { lo: port, hi: port }
}

fn port_span(text: &str, lo: &str, hi: &str) -> Result<PortRange, RuleError> {
    let end = |part: &str| {
        decimal(part).and_then(port).ok_or_else(|| {
            PORT.invalid(format!(
                "\"{text}\" is not a port range: \"{part}\" is not a port (0-65535)"
            ))
        })
    };
    let (lo, hi) = (end(lo)?, end(hi)?);
    if lo > hi {
        return Err(PORT.invalid(format!(
            "\"{text}\" is not a port range: {lo} is greater than {hi}"
        )));
    }
    Ok(PortRange { lo, hi })
}

/// What a rule's `protocol` names. Numbers that have a variant of their own
/// parse into it (6 is `Tcp`), so two spellings of one protocol are one
/// value; `Number` holds every other IP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    /// ICMP over IPv4.
    Icmp,
    /// ICMPv6 over IPv6.
    Icmpv6,
    /// The one non-IP protocol a rule may name.
    Arp,
    /// Any other IP protocol, by its number (the IPv4 protocol field, or the
    /// IPv6 header that follows the extension headers).
    Number(u8),
}

impl Protocol {
    const NAMED: [Protocol; 6] = [
        Protocol::Any,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Icmp,
        Protocol::Icmpv6,
        Protocol::Arp,
    ];

    /// The protocol with IP protocol number `number`.
    pub fn from_number(number: u8) -> Protocol {
        match number {
            proto::IPPROTO_TCP => Protocol::Tcp,
            proto::IPPROTO_UDP => Protocol::Udp,
            proto::IPPROTO_ICMP => Protocol::Icmp,
            proto::IPPROTO_ICMPV6 => Protocol::Icmpv6,
            other => Protocol::Number(other),
        }
    }

    /// The IP protocol number packets of this protocol carry; none for
    /// `any` and `arp`.
    pub fn ip_number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(proto::IPPROTO_TCP),
            Protocol::Udp => Some(proto::IPPROTO_UDP),
            Protocol::Icmp => Some(proto::IPPROTO_ICMP),
            Protocol::Icmpv6 => Some(proto::IPPROTO_ICMPV6),
            Protocol::Number(number) => Some(number),
            Protocol::Any | Protocol::Arp => None,
        }
    }

    fn keyword(self) -> Option<&'static str> {
        match self {
            Protocol::Any => Some("any"),
            Protocol::Tcp => Some("tcp"),
            Protocol::Udp => Some("udp"),
            Protocol::Icmp => Some("icmp"),
            Protocol::Icmpv6 => Some("icmpv6"),
            Protocol::Arp => Some("arp"),
            Protocol::Number(number) => proto::ip_protocol_name(number),
        }
    }

    /// Whether packets of this protocol carry ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Any | Protocol::Tcp | Protocol::Udp)
    }

    /// The one address family this protocol exists in, if it is tied to one.
    pub fn family(self) -> Option<Family> {
        match self {
            Protocol::Icmp => Some(Family::V4),
            Protocol::Icmpv6 => Some(Family::V6),
            _ => None,
        }
    }
}

/// Its keyword, or its number where IANA gives it none.
impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.keyword(), self) {
            (Some(keyword), _) => f.write_str(keyword),
            (None, Protocol::Number(number)) => write!(f, "{number}"),
            (None, _) => unreachable!("every named protocol has a keyword"),
        }
    }
}

/// As a rule file writes it: the keyword, or the number where there is none.
impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.keyword(), self) {
            (None, Protocol::Number(number)) => serializer.serialize_u8(*number),
            _ => serializer.collect_str(self),
        }
    }
}

/// A keyword (`"tcp"`, `"gre"`, `"ipv6-icmp"`, ...) or a number 0-255,
/// as a JSON number or, like a port, a string of digits (`"47"`).
pub fn protocol(value: &Value) -> Result<Protocol, RuleError> {
    let not_a_number = || {
        PROTOCOL.invalid(format!(
            "{} is not an IP protocol number (0-255)",
            shown(value)
        ))
    };
    let text = match value {
        Value::Number(number) => {
            return number
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(Protocol::from_number)
                .ok_or_else(not_a_number)
        }
        Value::String(text) => text,
        _ => return Err(PROTOCOL.wrong(value)),
    };
    if let Some(number) = decimal(text) {
        return u8::try_from(number)
            .map(Protocol::from_number)
            .map_err(|_| not_a_number());
    }
    if let Some((message, hint)) = proto::family_lookalike(text) {
        return Err(RuleError::new(message, hint));
    }
    Protocol::NAMED
        .into_iter()
        .find(|protocol| protocol.keyword() == Some(text))
        .or_else(|| proto::ip_protocol_number(text).map(Protocol::from_number))
        .ok_or_else(|| PROTOCOL.invalid(unknown_protocol(text)))
}

fn unknown_protocol(text: &str) -> String {
    let keywords: Vec<&str> = Protocol::NAMED
        .iter()
        .filter_map(|protocol| protocol.keyword())
        .chain(proto::ip_protocol_keywords())
        .collect();
    let lower = text.to_ascii_lowercase();
    // iptables's "all" and nft's "ip" are meshbpf's any; keywords are
    // lower case, so "TCP" is compared as "tcp".
    let near = match lower.as_str() {
        "all" | "ip" => Some("any"),
        _ => closest(&lower, &keywords),
    };
    match near {
        Some(near) => {
            format!("\"{text}\" is not a protocol meshbpf knows; did you mean \"{near}\"?")
        }
        None => format!("\"{text}\" is not a protocol meshbpf knows"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"allow"`, `"deny"`, or `"drop"`, a synonym of deny.
pub fn action(value: &Value) -> Result<Action, RuleError> {
    match value.as_str().ok_or_else(|| ACTION.wrong(value))? {
        "allow" => Ok(Action::Allow),
        "deny" | "drop" => Ok(Action::Deny),
        other => Err(ACTION.invalid(format!("\"{other}\" is not an action"))),
    }
}

/// A token bucket: `pps` packets per second on average, `burst` at once;
/// with `ban`, a source it refuses goes into the ban set for that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub pps: u64,
    pub burst: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ban: Option<bans::Ttl>,
}

impl Limit {
    /// What a refused source gets besides the drop, for tables.
    pub fn ban_note(&self) -> String {
        self.ban
            .map(|ttl| format!(", refused sources banned for {ttl}"))
            .unwrap_or_default()
    }
}

/// `{"pps": 1000, "burst": 200, "ban": "10m"}`; burst defaults to pps.
pub fn limit(value: &Value) -> Result<Limit, RuleError> {
    let map = object(value, &LIMIT, &["pps", "burst", "ban"])?;
    let pps = required(
        map,
        "pps",
        "add \"pps\": packets per second, at least 1",
        |v| count(v, &PPS),
    )?;
    let burst = optional(map, "burst", |v| count(v, &BURST))?;
    Ok(Limit {
        pps,
        burst: burst.unwrap_or(pps),
        ban: optional(map, "ban", bans::ttl_value)?,
    })
}

fn count(value: &Value, expected: &Expected) -> Result<u64, RuleError> {
    value
        .as_u64()
        .filter(|&n| n >= 1)
        .ok_or_else(|| expected.wrong(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message<T: fmt::Debug>(result: Result<T, RuleError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn prefixes_in_every_accepted_form() {
        let parsed = |text: &str| prefix(&json!(text)).unwrap().to_string();
        assert_eq!(parsed("203.0.113.0/24"), "203.0.113.0/24");
        assert_eq!(parsed("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(parsed("192.0.2.7"), "192.0.2.7/32");
        assert_eq!(parsed("2001:db8::1"), "2001:db8::1/128");
        assert_eq!(parsed("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(parsed("::/0"), "::/0");
    }

    #[test]
    fn prefixes_with_host_bits_are_refused_with_the_network() {
        assert_eq!(
            message(prefix(&json!("10.0.0.1/24"))),
            "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
        );
        assert_eq!(
            message(prefix(&json!("2001:db8::1/32"))),
            "2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?"
        );
    }

    #[test]
    fn bad_prefixes_say_what_is_wrong() {
        assert_eq!(
            message(prefix(&json!("10.0.0.256/24"))),
            "\"10.0.0.256/24\" is not an IP address or CIDR"
        );
        assert_eq!(
            message(prefix(&json!("10.0.0.0/33"))),
            "\"10.0.0.0/33\" has prefix length \"33\"; an IPv4 prefix length is 0-32"
        );
        assert_eq!(
            message(prefix(&json!("2001:db8::/+32"))),
            "\"2001:db8::/+32\" has prefix length \"+32\"; an IPv6 prefix length is 0-128"
        );
        assert_eq!(
            message(prefix(&json!(10))),
            "expected an address or CIDR like \"203.0.113.0/24\" or \"2001:db8::/32\", found 10"
        );
    }

    #[test]
    fn prefixes_contain_only_their_own_family_and_subnets() {
        let net = |text: &str| prefix(&json!(text)).unwrap();
        assert!(net("10.0.0.0/8").contains(&net("10.1.0.0/16")));
        assert!(net("10.0.0.0/8").contains(&net("10.0.0.0/8")));
        assert!(!net("10.1.0.0/16").contains(&net("10.0.0.0/8")));
        assert!(!net("10.0.0.0/8").contains(&net("11.0.0.0/16")));
        assert!(!net("0.0.0.0/0").contains(&net("::/0")));
        assert!(net("2001:db8::/32").contains(&net("2001:db8:1::/48")));
    }

    #[test]
    fn ports_as_numbers_strings_and_ranges() {
        let parsed = |value: Value| port_range(&value).unwrap();
        assert_eq!(parsed(json!(443)), PortRange { lo: 443, hi: 443 });
        assert_eq!(parsed(json!("443")), PortRange { lo: 443, hi: 443 });
        assert_eq!(parsed(json!("5000-5999")), PortRange { lo: 5000, hi: 5999 });
        assert_eq!(parsed(json!("0-65535")), PortRange { lo: 0, hi: 65535 });
        assert_eq!(parsed(json!("22-22")), PortRange { lo: 22, hi: 22 });
    }

    #[test]
    fn bad_ports_say_what_is_wrong() {
        let error = |value: Value| message(port_range(&value));
        assert_eq!(error(json!("70000")), "\"70000\" is not a port (0-65535)");
        assert_eq!(error(json!(70000)), "70000 is not a port (0-65535)");
        assert_eq!(error(json!(-1)), "-1 is not a port (0-65535)");
        assert_eq!(error(json!(44.5)), "44.5 is not a port (0-65535)");
        assert_eq!(error(json!("https")), "\"https\" is not a port (0-65535)");
        assert_eq!(
            error(json!("6000-5000")),
            "\"6000-5000\" is not a port range: 6000 is greater than 5000"
        );
        assert_eq!(
            error(json!("5000-")),
            "\"5000-\" is not a port range: \"\" is not a port (0-65535)"
        );
        assert_eq!(
            error(json!("1-70000")),
            "\"1-70000\" is not a port range: \"70000\" is not a port (0-65535)"
        );
        assert_eq!(
            error(json!([443])),
            "expected a port like 443 or a range like \"5000-5999\", found [443]"
        );
    }

    #[test]
    fn protocols_actions_and_the_drop_synonym() {
        assert_eq!(protocol(&json!("icmpv6")).unwrap(), Protocol::Icmpv6);
        assert_eq!(protocol(&json!("any")).unwrap(), Protocol::Any);
        assert_eq!(
            message(protocol(&json!("TCP"))),
            "\"TCP\" is not a protocol meshbpf knows; did you mean \"tcp\"?"
        );
        assert_eq!(action(&json!("allow")).unwrap(), Action::Allow);
        assert_eq!(action(&json!("deny")).unwrap(), Action::Deny);
        assert_eq!(action(&json!("drop")).unwrap(), Action::Deny);
        assert_eq!(
            message(action(&json!("reject"))),
            "\"reject\" is not an action"
        );
        assert_eq!(
            message(action(&json!(true))),
            "expected an action like \"allow\", found true"
        );
    }

    #[test]
    fn protocols_by_number() {
        let parsed = |value: Value| protocol(&value).unwrap();
        assert_eq!(parsed(json!(0)), Protocol::Number(0));
        assert_eq!(parsed(json!(47)), Protocol::Number(47));
        assert_eq!(parsed(json!(255)), Protocol::Number(255));
        // One protocol, one value, however it is spelled.
        assert_eq!(parsed(json!(6)), Protocol::Tcp);
        assert_eq!(parsed(json!(17)), Protocol::Udp);
        assert_eq!(parsed(json!(1)), Protocol::Icmp);
        assert_eq!(parsed(json!(58)), Protocol::Icmpv6);
        // A string of digits, as ports take one: what a converted ACL or a
        // shell variable writes.
        assert_eq!(parsed(json!("47")), Protocol::Number(47));
        assert_eq!(parsed(json!("6")), Protocol::Tcp);
        assert_eq!(parsed(json!("0")), Protocol::Number(0));
    }

    #[test]
    fn protocols_by_iana_keyword() {
        let parsed = |text: &str| protocol(&json!(text)).unwrap();
        assert_eq!(parsed("gre"), Protocol::Number(47));
        assert_eq!(parsed("esp"), Protocol::Number(50));
        assert_eq!(parsed("ah"), Protocol::Number(51));
        assert_eq!(parsed("sctp"), Protocol::Number(132));
        assert_eq!(parsed("ipip"), Protocol::Number(4));
        assert_eq!(parsed("hopopt"), Protocol::Number(0));
        assert_eq!(parsed("ipv6-icmp"), Protocol::Icmpv6);
        assert_eq!(parsed("udp"), Protocol::Udp);
        assert_eq!(parsed("arp"), Protocol::Arp);
    }

    #[test]
    fn bad_protocols_say_what_is_wrong() {
        let error = |value: Value| message(protocol(&value));
        for (value, shown) in [
            (json!(256), "256"),
            (json!(-1), "-1"),
            (json!(1.5), "1.5"),
            (json!("256"), "\"256\""),
        ] {
            assert_eq!(
                error(value),
                format!("{shown} is not an IP protocol number (0-255)")
            );
        }
        for value in [json!(true), json!(null), json!([47]), json!({"number": 47})] {
            assert_eq!(
                error(value.clone()),
                format!("expected a protocol like \"tcp\", \"gre\" or 47, found {value}")
            );
        }
        assert_eq!(
            error(json!("+47")),
            "\"+47\" is not a protocol meshbpf knows"
        );
        assert_eq!(
            error(json!("quic")),
            "\"quic\" is not a protocol meshbpf knows"
        );
        assert_eq!(error(json!("")), "\"\" is not a protocol meshbpf knows");
        let hint = protocol(&json!("quic")).unwrap_err().hint().to_owned();
        assert!(hint.contains("gre, esp, ah, sctp"), "{hint}");
    }

    #[test]
    fn misspelt_protocols_get_the_keyword_they_miss() {
        let guess = |text: &str| message(protocol(&json!(text)));
        for (typo, keyword) in [
            ("gree", "gre"),
            ("sctpp", "sctp"),
            ("upd", "udp"),
            ("icmv6", "icmpv6"),
            ("ipv6icmp", "ipv6-icmp"),
            ("ESP", "esp"),
            ("Any", "any"),
            ("all", "any"),
            ("ip", "any"),
        ] {
            assert_eq!(
                guess(typo),
                format!("\"{typo}\" is not a protocol meshbpf knows; did you mean \"{keyword}\"?")
            );
        }
        // Two letters are at most two edits from "ah": no guess.
        assert_eq!(guess("zz"), "\"zz\" is not a protocol meshbpf knows");
    }

    #[test]
    fn ipv4_and_ipv6_are_not_the_families_they_look_like() {
        let err = protocol(&json!("ipv6")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"ipv6\" names IP protocol 41 (IPv6 packets tunnelled in IP), not IPv6 traffic"
        );
        assert!(err.hint().starts_with("write 41 "), "{}", err.hint());
        assert!(message(protocol(&json!("ipv4"))).contains("IP protocol 4 "));
        assert_eq!(protocol(&json!(41)).unwrap().to_string(), "41");
    }

    #[test]
    fn every_protocol_round_trips_through_its_file_form() {
        let every = Protocol::NAMED
            .into_iter()
            .chain((0..=u8::MAX).map(Protocol::from_number));
        for p in every {
            let written = serde_json::to_value(p).unwrap();
            assert_eq!(protocol(&written).unwrap(), p, "{written}");
            // A JSON number exactly where no keyword prints.
            assert_eq!(written.is_number(), p.to_string().parse::<u8>().is_ok());
        }
        assert_eq!(
            serde_json::to_value(Protocol::Number(47)).unwrap(),
            json!("gre")
        );
        assert_eq!(
            serde_json::to_value(Protocol::Number(253)).unwrap(),
            json!(253)
        );
        assert_eq!(Protocol::Number(253).to_string(), "253");
        assert_eq!(
            serde_json::to_value(Protocol::Icmpv6).unwrap(),
            json!("icmpv6")
        );
    }

    #[test]
    fn limits_default_burst_to_pps() {
        let parsed = |value: Value| limit(&value).unwrap();
        assert_eq!(
            parsed(json!({"pps": 1000, "burst": 200})),
            Limit {
                pps: 1000,
                burst: 200,
                ban: None
            }
        );
        assert_eq!(
            parsed(json!({"pps": 100})),
            Limit {
                pps: 100,
                burst: 100,
                ban: None
            }
        );
    }

    #[test]
    fn bad_limits_name_the_inner_field() {
        let error = |value: Value| message(limit(&value).map_err(|e| e.in_field("rate_limit")));
        assert_eq!(
            error(json!({"pps": 0})),
            "field \"rate_limit.pps\": expected a whole number of packets per second, at least 1, found 0"
        );
        assert_eq!(
            error(json!({"pps": 10, "burst": 0})),
            "field \"rate_limit.burst\": expected a whole number of packets, at least 1, found 0"
        );
        assert_eq!(
            error(json!({"burst": 10})),
            "field \"rate_limit.pps\": missing"
        );
        assert_eq!(
            error(json!({"pps": 10, "brust": 5})),
            "field \"rate_limit.brust\": not a known field; did you mean \"burst\"?"
        );
        assert_eq!(
            error(json!(1000)),
            "field \"rate_limit\": expected a limit like {\"pps\": 1000, \"burst\": 200}, found 1000"
        );
    }

    #[test]
    fn unknown_keys_far_from_any_known_one_get_no_guess() {
        let err = limit(&json!({"pps": 1, "tokens": 5})).unwrap_err();
        assert_eq!(err.to_string(), "field \"tokens\": not a known field");
        assert_eq!(err.hint(), "the fields here are pps, burst, ban");
    }

    #[test]
    fn repeated_keys_and_syntax_errors_give_line_and_column() {
        assert_eq!(
            message(parse_document("{\"a\": 1,\n \"a\": 2}")),
            "line 2, column 4: key \"a\" appears twice"
        );
        assert_eq!(
            message(parse_document("{\"a\": 1,\n}")),
            "line 2, column 1: trailing comma"
        );
        assert_eq!(message(parse_document(" \n")), "the file is empty");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = json!("x".repeat(100));
        assert_eq!(shown(&long), format!("\"{}...", "x".repeat(39)));
    }

    #[test]
    fn a_rule_error_becomes_a_failure_with_its_hint() {
        let err = port_range(&json!("6000-5000"))
            .unwrap_err()
            .in_field("dport")
            .in_rule(3)
            .in_file(Path::new("/etc/meshbpf/filter.json"));
        let failure = Failure::from(err);
        assert_eq!(
            failure.to_string(),
            "/etc/meshbpf/filter.json: rule 3, field \"dport\": \"6000-5000\" is not a port range: 6000 is greater than 5000"
        );
        let explained = crate::error::explain(&anyhow::Error::new(failure));
        assert_eq!(explained.hint.as_deref(), Some(PORT.hint));
    }
}
