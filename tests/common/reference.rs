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

fn action(text: &str) -> Verdict {
    match text {
        "allow" => Verdict::Allow,
        "deny" | "drop" => Verdict::Deny,
        other => panic!("reference: {other:?} is not an action"),
    }
}

/// The verdict for `packet` and the index of the rule that decided it (None:
/// the default).
pub fn evaluate(rules: &Value, packet: &Packet) -> (Verdict, Option<usize>) {
    let list = rules["rules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for (index, rule) in list.iter().enumerate() {
        if matches(rule, packet) {
            let act = rule["action"].as_str().expect("a rule has an action");
            return (action(act), Some(index));
        }
    }
    let default = rules["default"].as_str().unwrap_or("allow");
    (action(default), None)
}

/// Every field the rule has must match.
pub fn matches(rule: &Value, packet: &Packet) -> bool {
    let protocol = rule["protocol"].as_str().unwrap_or("any");
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
        "tcp" => proto == Some(TCP),
        "udp" => proto == Some(UDP),
        "icmp" => src.is_ipv4() && proto == Some(ICMP),
        "icmpv6" => src.is_ipv6() && proto == Some(ICMPV6),
        "arp" => false,
        other => panic!("reference: {other:?} is not a protocol"),
    };
    if !proto_ok {
        return false;
    }
    let addr_ok = |field: &str, addr: IpAddr| match rule[field].as_str() {
        None => true,
        Some(text) => in_cidr(text, addr),
    };
    if !addr_ok("src", src) || !addr_ok("dst", dst) {
        return false;
    }
    let sport = rule.get("sport");
    let dport = rule.get("dport");
    if sport.is_none() && dport.is_none() {
        return true;
    }
    // Ports only for TCP and UDP ("any" with ports means tcp and udp), and
    // only when the packet's ports are known.
    let Some((sp, dp)) = ports else {
        return false;
    };
    if proto != Some(TCP) && proto != Some(UDP) {
        return false;
    }
    let port_ok = |value: Option<&Value>, port: u16| value.is_none_or(|v| in_range(v, port));
    port_ok(sport, sp) && port_ok(dport, dp)
}

/// `"10.0.0.0/8"`, `"2001:db8::/32"` or a bare address.
pub fn in_cidr(text: &str, addr: IpAddr) -> bool {
    let (net, len) = match text.split_once('/') {
        Some((net, len)) => (net, Some(len)),
        None => (text, None),
    };
    let net: IpAddr = net.parse().expect("reference: a CIDR address");
    match (net, addr) {
        (IpAddr::V4(net), IpAddr::V4(addr)) => {
            let len: u32 = len.map_or(32, |l| l.parse().expect("a prefix length"));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(net) & mask == u32::from(addr) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(addr)) => {
            let len: u32 = len.map_or(128, |l| l.parse().expect("a prefix length"));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(net) & mask == u128::from(addr) & mask
        }
        _ => false,
    }
}

/// `443`, `"443"` or `"5000-5999"`, inclusive.
pub fn in_range(value: &Value, port: u16) -> bool {
    let (lo, hi) = match value {
        Value::Number(n) => {
            let p = n.as_u64().expect("a port number");
            (p, p)
        }
        Value::String(s) => match s.split_once('-') {
            Some((lo, hi)) => (
                lo.parse().expect("a port range"),
                hi.parse().expect("a port range"),
            ),
            None => {
                let p = s.parse().expect("a port");
                (p, p)
            }
        },
        other => panic!("reference: {other} is not a port"),
    };
    (lo..=hi).contains(&u64::from(port))
}
