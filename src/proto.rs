//! The packet vocabulary that rules, programs and reports share: IP
//! protocol numbers and names, TCP flags and ICMP types by name, the
//! direction of traffic, and tc_classifier's guess at the payload.

use std::fmt;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// `enum flow_direction` of include/flow_table.h.
    pub fn from_raw(raw: u8) -> Option<Direction> {
        match raw {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }

    /// `enum flow_direction`.
    pub fn raw(self) -> u8 {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the first payload bytes of a flow look like (`enum l7_proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L7 {
    Unknown,
    Http1,
    Tls,
    Http2,
    Dns,
    Ssh,
}

impl L7 {
    /// In the order of `enum l7_proto`.
    pub const ALL: [L7; 6] = [L7::Unknown, L7::Http1, L7::Tls, L7::Http2, L7::Dns, L7::Ssh];

    /// `enum l7_proto`; values this build does not know are `Unknown`.
    pub fn from_raw(raw: u8) -> L7 {
        L7::ALL
            .get(usize::from(raw))
            .copied()
            .unwrap_or(L7::Unknown)
    }

    /// `enum l7_proto`.
    pub fn raw(self) -> u8 {
        L7::ALL
            .iter()
            .position(|&l7| l7 == self)
            .unwrap_or_default() as u8
    }

    /// The name in output and in `--l7`.
    pub fn as_str(self) -> &'static str {
        match self {
            L7::Unknown => "unknown",
            L7::Http1 => "http",
            L7::Tls => "tls",
            L7::Http2 => "http2",
            L7::Dns => "dns",
            L7::Ssh => "ssh",
        }
    }

    /// A name as `--l7` takes it, in any case; `http1` is a synonym of `http`.
    pub fn parse(text: &str) -> Option<L7> {
        let lower = text.to_ascii_lowercase();
        if lower == "http1" {
            return Some(L7::Http1);
        }
        L7::ALL.into_iter().find(|l7| l7.as_str() == lower)
    }
}

impl fmt::Display for L7 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IANA's keywords ("Assigned Internet Protocol Numbers") of the protocols
/// rules name most, and `ipv6-icmp`, IANA's own name for ICMPv6, as an
/// alias: the first keyword of a number is the one meshbpf prints. `ipip`
/// is 4, what Linux's ipip tunnels carry (IANA's IPIP, 94, goes by its
/// number); IANA's `ipv4` and `ipv6` are in [`FAMILY_LOOKALIKES`] instead.
const IP_PROTOCOL_KEYWORDS: [(u8, &str); 26] = [
    (0, "hopopt"),
    (1, "icmp"),
    (2, "igmp"),
    (4, "ipip"),
    (6, "tcp"),
    (8, "egp"),
    (9, "igp"),
    (17, "udp"),
    (27, "rdp"),
    (33, "dccp"),
    (43, "ipv6-route"),
    (44, "ipv6-frag"),
    (46, "rsvp"),
    (47, "gre"),
    (50, "esp"),
    (51, "ah"),
    (58, "icmpv6"),
    (58, "ipv6-icmp"),
    (59, "ipv6-nonxt"),
    (60, "ipv6-opts"),
    (88, "eigrp"),
    (89, "ospf"),
    (103, "pim"),
    (112, "vrrp"),
    (115, "l2tp"),
    (132, "sctp"),
];

/// IANA's keywords for IPv4 in IP (4) and IPv6 in IP (41, 6in4) read as
/// "IPv4 traffic" and "IPv6 traffic", which a rule on them would silently
/// not match: meshbpf neither takes nor prints them, and says what to write.
/// (number, keyword, family, the family's every-address prefix)
const FAMILY_LOOKALIKES: [(u8, &str, &str, &str); 2] = [
    (4, "ipv4", "IPv4", "0.0.0.0/0"),
    (41, "ipv6", "IPv6", "::/0"),
];

/// IANA's keyword for IP protocol `number`, if this table has one.
pub fn ip_protocol_name(number: u8) -> Option<&'static str> {
    IP_PROTOCOL_KEYWORDS
        .iter()
        .find(|(n, _)| *n == number)
        .map(|(_, name)| *name)
}

/// The IP protocol number of an IANA keyword (lower case).
pub fn ip_protocol_number(keyword: &str) -> Option<u8> {
    IP_PROTOCOL_KEYWORDS
        .iter()
        .find(|(_, name)| *name == keyword)
        .map(|(n, _)| *n)
}

/// Every keyword [`ip_protocol_number`] takes, aliases included.
pub fn ip_protocol_keywords() -> impl Iterator<Item = &'static str> {
    IP_PROTOCOL_KEYWORDS.iter().map(|(_, name)| *name)
}

/// Why `text` (any case) is refused when it is `ipv4` or `ipv6`, and what
/// to write instead: (message, hint).
pub fn family_lookalike(text: &str) -> Option<(String, String)> {
    let lower = text.to_ascii_lowercase();
    let (number, _, family, every) = FAMILY_LOOKALIKES
        .iter()
        .find(|(_, keyword, _, _)| *keyword == lower)?;
    Some((
        format!(
            "\"{text}\" names IP protocol {number} ({family} packets tunnelled in IP), not {family} traffic"
        ),
        format!(
            "write {number} to match the tunnel's packets; to match {family} traffic, give an {family} src or dst such as \"{every}\""
        ),
    ))
}

/// The IANA keyword, else the number (`47` is `gre`, `253` stays `253`):
/// JSON output carries the number itself as well, for scripts.
pub fn protocol_name(protocol: u8) -> String {
    ip_protocol_name(protocol).map_or_else(|| protocol.to_string(), str::to_owned)
}

/// A keyword of [`ip_protocol_name`]'s table (any case) or a number 0-255.
pub fn parse_protocol(text: &str) -> Option<u8> {
    let lower = text.to_ascii_lowercase();
    if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
        return lower.parse().ok();
    }
    ip_protocol_number(&lower)
}

/// Whether the kernel's sport/dport of this protocol are ports (TCP, UDP);
/// for ICMP they are type and code, and for the rest 0.
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, IPPROTO_TCP | IPPROTO_UDP)
}

/// The TCP flags in the order a connection usually shows them: opening,
/// data, congestion signals, closing. (Bits as in the TCP header.)
pub const TCP_FLAGS: [(u8, &str); 8] = [
    (0x02, "syn"),
    (0x10, "ack"),
    (0x08, "psh"),
    (0x20, "urg"),
    (0x40, "ece"),
    (0x80, "cwr"),
    (0x01, "fin"),
    (0x04, "rst"),
];

/// The names of the flags set in `flags`, lower case, in [`TCP_FLAGS`] order.
pub fn tcp_flag_names(flags: u8) -> Vec<&'static str> {
    TCP_FLAGS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// For tables: `SYN,ACK,FIN`; empty when no flag was seen.
pub fn tcp_flags_text(flags: u8) -> String {
    tcp_flag_names(flags)
        .iter()
        .map(|name| name.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(",")
}

/// Common ICMP/ICMPv6 message types by name, for tables.
pub fn icmp_type_name(protocol: u8, icmp_type: u16) -> Option<&'static str> {
    Some(match (protocol, icmp_type) {
        (IPPROTO_ICMP, 0) | (IPPROTO_ICMPV6, 129) => "echo-reply",
        (IPPROTO_ICMP, 8) | (IPPROTO_ICMPV6, 128) => "echo-request",
        (IPPROTO_ICMP, 3) | (IPPROTO_ICMPV6, 1) => "unreachable",
        (IPPROTO_ICMP, 11) | (IPPROTO_ICMPV6, 3) => "time-exceeded",
        (IPPROTO_ICMP, 5) | (IPPROTO_ICMPV6, 137) => "redirect",
        (IPPROTO_ICMPV6, 2) => "packet-too-big",
        (IPPROTO_ICMPV6, 133) => "router-solicitation",
        (IPPROTO_ICMPV6, 134) => "router-advertisement",
        (IPPROTO_ICMPV6, 135) => "neighbor-solicitation",
        (IPPROTO_ICMPV6, 136) => "neighbor-advertisement",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_l7_and_protocols_round_trip() {
        for l7 in L7::ALL {
            assert_eq!(L7::parse(l7.as_str()), Some(l7));
        }
        assert_eq!(L7::Http1.as_str(), "http");
        assert_eq!(L7::parse("HTTP1"), Some(L7::Http1));
        assert_eq!(L7::parse("quic"), None);
        for p in [
            IPPROTO_TCP,
            IPPROTO_UDP,
            IPPROTO_ICMP,
            IPPROTO_ICMPV6,
            47,
            0,
            255,
        ] {
            assert_eq!(parse_protocol(&protocol_name(p)), Some(p));
        }
        assert_eq!(parse_protocol("TCP"), Some(IPPROTO_TCP));
        assert_eq!(parse_protocol("256"), None);
        assert_eq!(parse_protocol("+6"), None);
        assert_eq!(parse_protocol(""), None);
        assert_eq!(parse_protocol("quic"), None);
    }

    #[test]
    fn protocols_print_and_parse_by_their_iana_keyword() {
        assert_eq!(protocol_name(47), "gre");
        assert_eq!(protocol_name(132), "sctp");
        assert_eq!(
            protocol_name(58),
            "icmpv6",
            "the first keyword, not the alias"
        );
        assert_eq!(protocol_name(253), "253", "no keyword: the number");
        assert_eq!(parse_protocol("GRE"), Some(47));
        assert_eq!(parse_protocol("ipv6-icmp"), Some(IPPROTO_ICMPV6));
        assert_eq!(parse_protocol("ipip"), Some(4));
        for number in 0..=u8::MAX {
            assert_eq!(parse_protocol(&protocol_name(number)), Some(number));
        }
        for keyword in ip_protocol_keywords() {
            let number = ip_protocol_number(keyword).unwrap();
            assert!(ip_protocol_name(number).is_some(), "{keyword}");
        }
    }

    #[test]
    fn ipv4_and_ipv6_are_refused_with_the_number_they_name() {
        assert_eq!(parse_protocol("ipv6"), None);
        assert_eq!(parse_protocol("ipv4"), None);
        assert_eq!(protocol_name(41), "41");
        let (message, hint) = family_lookalike("IPv6").unwrap();
        assert_eq!(
            message,
            "\"IPv6\" names IP protocol 41 (IPv6 packets tunnelled in IP), not IPv6 traffic"
        );
        assert_eq!(
            hint,
            "write 41 to match the tunnel's packets; to match IPv6 traffic, give an IPv6 src or dst such as \"::/0\""
        );
        assert!(family_lookalike("ipv4")
            .unwrap()
            .0
            .contains("IP protocol 4 "));
        assert_eq!(family_lookalike("ipip"), None);
    }

    #[test]
    fn tcp_flags_in_connection_order() {
        assert_eq!(tcp_flags_text(0), "");
        assert_eq!(tcp_flags_text(0x02), "SYN");
        assert_eq!(tcp_flags_text(0x01 | 0x02 | 0x10), "SYN,ACK,FIN");
        assert_eq!(tcp_flags_text(0xff), "SYN,ACK,PSH,URG,ECE,CWR,FIN,RST");
        assert_eq!(tcp_flag_names(0x14), vec!["ack", "rst"]);
    }
}
