//! A reference for xdp_mesh_filter's verdicts, written from the README's
//! "Matching semantics" and "How packets are parsed for matching" alone: a
//! plain linear first-match walk over the rules JSON as a `serde_json::Value`.
//! It shares no code with meshbpf's parser, compiler or their emulation, so a
//! disagreement points at one of the two, never at both alike.
//!
//! It takes the rules file as written (it does not validate it: give it one
//! that `meshbpf filter check` accepts).

use std::net::IpAddr;

use serde_json::Value;

/// What a packet is, once parsed as the README says the filter parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// An IPv4 or IPv6 packet. `proto` is the L4 protocol reached (None when
    /// the L4 header is never reached: "another IP protocol"); `ports` are
    /// known only for a TCP/UDP header present in full, and not in a later
    /// fragment.
    Ip {
        src: IpAddr,
        dst: IpAddr,
        proto: Option<u8>,
        ports: Option<(u16, u16)>,
    },
    Arp,
    /// Any other frame, or an IP header that is truncated or invalid.
    NonIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
/// Hop-by-hop, routing, fragment, AH, destination options (README).
const IPV6_EXTENSIONS: [u8; 5] = [0, 43, 44, 51, 60];

/// The README's keywords for other protocols, from IANA's registry.
fn named_protocol(keyword: &str) -> Option<u8> {
    Some(match keyword {
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "sctp" => 132,
        "ipip" => 4,
        _ => return None,
    })
}

fn action(text: &str) -> Verdict {
    match text {
        "allow" => Verdict::Allow,
        "deny" | "drop" => Verdict::Deny,
        other => panic!("reference: {other:?} is not an action"),
    }
}

/// A rule set read from its JSON once, so that evaluating many packets does
/// not parse the same strings again: nothing else is precomputed, and each
/// packet still walks every rule in file order.
pub struct Reference {
    rules: Vec<Rule>,
    default: Verdict,
}

/// One rule's fields as the file writes them (absent: any).
struct Rule {
    action: Verdict,
    protocol: String,
    src: Option<Cidr>,
    dst: Option<Cidr>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
}

struct Cidr {
    net: IpAddr,
    len: u32,
}

impl Reference {
    pub fn new(rules: &Value) -> Self {
        let list = rules["rules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let cidr = |rule: &Value, field: &str| rule[field].as_str().map(cidr);
        let ports = |rule: &Value, field: &str| rule.get(field).map(port_range);
        Reference {
            rules: list
                .iter()
                .map(|rule| Rule {
                    action: action(rule["action"].as_str().expect("a rule has an action")),
                    protocol: match &rule["protocol"] {
                        Value::Number(n) => n.to_string(),
                        other => other.as_str().unwrap_or("any").to_owned(),
                    },
                    src: cidr(rule, "src"),
                    dst: cidr(rule, "dst"),
                    sport: ports(rule, "sport"),
                    dport: ports(rule, "dport"),
                })
                .collect(),
            default: action(rules["default"].as_str().unwrap_or("allow")),
        }
    }

    /// The verdict for `packet` and the index of the rule that decided it
    /// (None: the default).
    pub fn evaluate(&self, packet: &Packet) -> (Verdict, Option<usize>) {
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.matches(packet) {
                return (rule.action, Some(index));
            }
        }
        (self.default, None)
    }
}

/// [`Reference::evaluate`] for one packet.
pub fn evaluate(rules: &Value, packet: &Packet) -> (Verdict, Option<usize>) {
    Reference::new(rules).evaluate(packet)
}

impl Rule {
    /// Every field the rule has must match.
    fn matches(&self, packet: &Packet) -> bool {
        let protocol = self.protocol.as_str();
        let (src, dst, proto, ports) = match *packet {
            Packet::Arp => return protocol == "arp",
            Packet::NonIp => return false,
            Packet::Ip {
                src,
                dst,
                proto,
                ports,
            } => (src, dst, proto, ports),
        };
        let proto_ok = match protocol {
            "any" => true,
            "tcp" | "6" => proto == Some(TCP),
            "udp" | "17" => proto == Some(UDP),
            "icmp" | "1" => src.is_ipv4() && proto == Some(ICMP),
            "icmpv6" | "ipv6-icmp" | "58" => src.is_ipv6() && proto == Some(ICMPV6),
            "arp" => false,
            other => {
                let number = named_protocol(other)
                    .or_else(|| other.parse().ok())
                    .unwrap_or_else(|| panic!("reference: {other:?} is not a protocol"));
                // IPv6 walks past these headers: no IPv6 packet reaches one
                // as its protocol.
                proto == Some(number) && !(src.is_ipv6() && IPV6_EXTENSIONS.contains(&number))
            }
        };
        if !proto_ok {
            return false;
        }
        let addr_ok = |cidr: &Option<Cidr>, addr| cidr.as_ref().is_none_or(|c| c.contains(addr));
        if !addr_ok(&self.src, src) || !addr_ok(&self.dst, dst) {
            return false;
        }
        if self.sport.is_none() && self.dport.is_none() {
            return true;
        }
        // Ports only for TCP and UDP ("any" with ports means tcp and udp),
        // and only when the packet's ports are known.
        let Some((sp, dp)) = ports else {
            return false;
        };
        if proto != Some(TCP) && proto != Some(UDP) {
            return false;
        }
        let port_ok =
            |range: Option<(u16, u16)>, port| range.is_none_or(|(lo, hi)| lo <= port && port <= hi);
        port_ok(self.sport, sp) && port_ok(self.dport, dp)
    }
}

/// `"10.0.0.0/8"`, `"2001:db8::/32"` or a bare address (one host).
fn cidr(text: &str) -> Cidr {
    let (net, len) = match text.split_once('/') {
        Some((net, len)) => (net, Some(len)),
        None => (text, None),
    };
    let net: IpAddr = net.parse().expect("reference: a CIDR address");
    let host = if net.is_ipv4() { 32 } else { 128 };
    let len = len.map_or(host, |l| l.parse().expect("reference: a prefix length"));
    Cidr { net, len }
}

impl Cidr {
    /// The same family, and the same first `len` bits.
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.net, addr) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// `443`, `"443"` or `"5000-5999"`, inclusive.
fn port_range(value: &Value) -> (u16, u16) {
    let port = |text: &str| text.parse::<u16>().expect("reference: a port");
    match value {
        Value::Number(n) => {
            let p = u16::try_from(n.as_u64().expect("a port number")).expect("a port");
            (p, p)
        }
        Value::String(s) => match s.split_once('-') {
            Some((lo, hi)) => (port(lo), port(hi)),
            None => (port(s), port(s)),
        },
        other => panic!("reference: {other} is not a port"),
    }
}
