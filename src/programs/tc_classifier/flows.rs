//! Flows as tc_classifier records them, and the queries `meshbpf flows`
//! runs over them: filters, ordering and top N. Pure logic, no kernel.
//!
//! A flow is one 5-tuple in one direction, as the packets carry it: an
//! ingress flow's `src` is the remote peer, an egress flow's `src` is this
//! host. ICMP and ICMPv6 have no ports: the kernel puts the message type in
//! `sport` and the code in `dport`, and port filters never match them.
//!
//! Selection is built for big tables (the kernel allows 4,194,304 flows):
//! one filtering pass in place, then a partial selection of the top N
//! (`select_nth_unstable_by`, O(n)) and a sort of those N only.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::error::Failure;
use crate::proto::{
    family_lookalike, has_ports, icmp_type_name, parse_protocol, protocol_name, Direction,
    IPPROTO_ICMP, IPPROTO_ICMPV6, L7,
};
use crate::rules::{self, PortRange, Prefix, RuleError};

/// An address of `struct flow_key`: IPv4 fills the first 4 bytes.
pub fn address(family: u8, bytes: [u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

/// One entry of tc_classifier's flow table, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Host order; ICMP type for ICMP/ICMPv6.
    pub sport: u16,
    /// Host order; ICMP code for ICMP/ICMPv6.
    pub dport: u16,
    /// IP protocol number.
    pub protocol: u8,
    pub direction: Direction,
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC ns.
    pub first_seen_ns: u64,
    /// CLOCK_MONOTONIC ns.
    pub last_seen_ns: u64,
    /// Every TCP flag seen, ORed (TCP header bits).
    pub tcp_flags: u8,
    pub l7: L7,
}

/// What makes a flow itself: the kernel's map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub direction: Direction,
}

impl Flow {
    pub fn key(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            protocol: self.protocol,
            direction: self.direction,
        }
    }

    pub fn has_ports(&self) -> bool {
        has_ports(self.protocol)
    }

    pub fn is_icmp(&self) -> bool {
        matches!(self.protocol, IPPROTO_ICMP | IPPROTO_ICMPV6)
    }

    /// `10.0.0.1:443`, `[2001:db8::1]:443`; the bare address without ports.
    pub fn src_endpoint(&self) -> String {
        endpoint(self.src, self.has_ports().then_some(self.sport))
    }

    pub fn dst_endpoint(&self) -> String {
        endpoint(self.dst, self.has_ports().then_some(self.dport))
    }

    /// `tcp`, `icmp echo-request`, `icmpv6 type 200 code 1`, `gre`, `253`.
    pub fn protocol_text(&self) -> String {
        let name = protocol_name(self.protocol);
        if !self.is_icmp() {
            return name;
        }
        match icmp_type_name(self.protocol, self.sport) {
            Some(kind) if self.dport == 0 => format!("{name} {kind}"),
            Some(kind) => format!("{name} {kind} code {}", self.dport),
            None => format!("{name} type {} code {}", self.sport, self.dport),
        }
    }
}

pub fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V4(v4), Some(port)) => format!("{v4}:{port}"),
        (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        (addr, None) => addr.to_string(),
    }
}

/// Something that carries a flow, such as a flow with its interface.
pub trait HasFlow {
    fn flow(&self) -> &Flow;

    /// Breaks ties between equal flows of different sources (interfaces).
    fn source(&self) -> &str {
        ""
    }
}

impl HasFlow for Flow {
    fn flow(&self) -> &Flow {
        self
    }
}

/// The flags of `meshbpf flows` that choose, order and limit flows, as
/// typed: [`FlowQuery::from_args`] parses them.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Only flows whose source is in this CIDR (or is this address)
    #[arg(long, value_name = "CIDR")]
    pub src: Option<String>,

    /// Only flows whose destination is in this CIDR (or is this address)
    #[arg(long, value_name = "CIDR")]
    pub dst: Option<String>,

    /// Only flows with this port (or range, e.g. 8000-8080) on either side
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,

    /// Only flows with this source port (or range)
    #[arg(long, value_name = "PORT")]
    pub sport: Option<String>,

    /// Only flows with this destination port (or range)
    #[arg(long, value_name = "PORT")]
    pub dport: Option<String>,

    /// Only flows of this protocol: an IANA keyword (tcp, udp, icmp, icmpv6, gre, esp, sctp, ...) or an IP protocol number
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<String>,

    /// Only flows whose payload looks like: http, tls, http2, dns, ssh or unknown
    #[arg(long, value_name = "L7")]
    pub l7: Option<String>,

    /// Only flows with at least this many packets
    #[arg(long, value_name = "N")]
    pub min_packets: Option<u64>,

    /// Only flows with at least this many bytes
    #[arg(long, value_name = "N")]
    pub min_bytes: Option<u64>,

    /// Order, largest or latest first
    #[arg(long, value_enum, default_value = "bytes")]
    pub sort: FlowSort,

    /// Show at most N flows
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowSort {
    Bytes,
    Packets,
    /// First seen, newest first
    First,
    /// Last seen, newest first
    Last,
}

/// The filters, order and limit of one `meshbpf flows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowQuery {
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    /// Either side.
    pub port: Option<PortRange>,
    pub sport: Option<PortRange>,
    pub dport: Option<PortRange>,
    pub protocol: Option<u8>,
    pub l7: Option<L7>,
    pub min_packets: u64,
    pub min_bytes: u64,
    pub sort: FlowSort,
    pub top: Option<usize>,
}

impl Default for FlowQuery {
    fn default() -> Self {
        FlowQuery {
            src: None,
            dst: None,
            port: None,
            sport: None,
            dport: None,
            protocol: None,
            l7: None,
            min_packets: 0,
            min_bytes: 0,
            sort: FlowSort::Bytes,
            top: None,
        }
    }
}

/// A flag's value refused by one of the shared rule parsers, as the
/// operator typed it: `--src: 10.0.0.1/24 has host bits set; ...`.
fn flag_error(flag: &str, err: RuleError) -> Failure {
    let hint = err.hint().to_string();
    Failure::new(format!("{flag}: {err}")).hint(hint)
}

fn cidr_flag(flag: &str, text: &Option<String>) -> Result<Option<Prefix>, Failure> {
    text.as_ref()
        .map(|t| rules::prefix(&Value::String(t.clone())).map_err(|e| flag_error(flag, e)))
        .transpose()
}

fn port_flag(flag: &str, text: &Option<String>) -> Result<Option<PortRange>, Failure> {
    text.as_ref()
        .map(|t| rules::port_range(&Value::String(t.clone())).map_err(|e| flag_error(flag, e)))
        .transpose()
}

impl FlowQuery {
    pub fn from_args(args: &QueryArgs) -> Result<FlowQuery, Failure> {
        let protocol = args
            .proto
            .as_deref()
            .map(|text| {
                parse_protocol(text).ok_or_else(|| match family_lookalike(text) {
                    Some((message, hint)) => Failure::new(format!("--proto: {message}")).hint(hint),
                    None => Failure::new(format!(
                        "--proto: \"{text}\" is not a protocol: write an IANA keyword (tcp, udp, icmp, icmpv6, gre, esp, ah, sctp, ...) or a number 0-255"
                    ))
                    .hint("the keywords are listed in the README; an IP protocol number always works, such as 47 for GRE"),
                })
            })
            .transpose()?;
        let l7 = args
            .l7
            .as_deref()
            .map(|text| {
                L7::parse(text).ok_or_else(|| {
                    Failure::new(format!(
                        "--l7: \"{text}\" is not a payload kind meshbpf recognizes"
                    ))
                    .hint("the kinds are http, tls, http2, dns, ssh and unknown")
                })
            })
            .transpose()?;
        Ok(FlowQuery {
            src: cidr_flag("--src", &args.src)?,
            dst: cidr_flag("--dst", &args.dst)?,
            port: port_flag("--port", &args.port)?,
            sport: port_flag("--sport", &args.sport)?,
            dport: port_flag("--dport", &args.dport)?,
            protocol,
            l7,
            min_packets: args.min_packets.unwrap_or(0),
            min_bytes: args.min_bytes.unwrap_or(0),
            sort: args.sort,
            top: args.top,
        })
    }

    /// Whether a flow passes every filter. Port filters match only flows
    /// with ports (TCP, UDP): ICMP type and code are not ports.
    pub fn matches(&self, flow: &Flow) -> bool {
        let in_prefix = |prefix: &Option<Prefix>, addr: IpAddr| match prefix {
            None => true,
            Some(p) => p.contains(&Prefix::host(addr)),
        };
        let in_range = |range: &Option<PortRange>, port: u16| match range {
            None => true,
            Some(r) => r.lo <= port && port <= r.hi,
        };
        let ports_wanted = self.port.is_some() || self.sport.is_some() || self.dport.is_some();
        flow.packets >= self.min_packets
            && flow.bytes >= self.min_bytes
            && self.protocol.is_none_or(|p| p == flow.protocol)
            && self.l7.is_none_or(|l7| l7 == flow.l7)
            && (!ports_wanted || flow.has_ports())
            && in_range(&self.sport, flow.sport)
            && in_range(&self.dport, flow.dport)
            && self.port.is_none_or(|r| {
                (r.lo <= flow.sport && flow.sport <= r.hi)
                    || (r.lo <= flow.dport && flow.dport <= r.hi)
            })
            && in_prefix(&self.src, flow.src)
            && in_prefix(&self.dst, flow.dst)
    }

    /// The order of `--sort`, largest or newest first; equal flows in key
    /// order (addresses, ports, protocol, direction), then by source, so
    /// the output is the same on every run.
    pub fn compare<T: HasFlow>(&self, a: &T, b: &T) -> Ordering {
        let (fa, fb) = (a.flow(), b.flow());
        let metric = match self.sort {
            FlowSort::Bytes => fb.bytes.cmp(&fa.bytes),
            FlowSort::Packets => fb.packets.cmp(&fa.packets),
            FlowSort::First => fb.first_seen_ns.cmp(&fa.first_seen_ns),
            FlowSort::Last => fb.last_seen_ns.cmp(&fa.last_seen_ns),
        };
        metric
            .then_with(|| fa.key().cmp(&fb.key()))
            .then_with(|| a.source().cmp(b.source()))
    }

    /// Filters in place, then keeps the top N in order.
    pub fn select<T: HasFlow>(&self, mut items: Vec<T>) -> Selection<T> {
        let total = items.len();
        items.retain(|item| self.matches(item.flow()));
        let matched = items.len();
        self.order(&mut items);
        Selection {
            items,
            total,
            matched,
        }
    }

    /// Orders already-filtered items and cuts them to the top N.
    pub fn order<T: HasFlow>(&self, items: &mut Vec<T>) {
        if let Some(top) = self.top {
            if top < items.len() {
                // Everything before `top` is then no smaller than it.
                items.select_nth_unstable_by(top, |a, b| self.compare(a, b));
                items.truncate(top);
            }
        }
        items.sort_unstable_by(|a, b| self.compare(a, b));
    }
}

/// What a query kept, and out of how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<T> {
    /// The top N matching flows, in order.
    pub items: Vec<T>,
    /// Flows read.
    pub total: usize,
    /// Flows that passed the filters (before --top).
    pub matched: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};
    use clap::Parser;
    use std::time::Instant;

    fn v4(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn flow(src: &str, sport: u16, dst: &str, dport: u16, protocol: u8) -> Flow {
        Flow {
            src: v4(src),
            dst: v4(dst),
            sport,
            dport,
            protocol,
            direction: Direction::Ingress,
            packets: 1,
            bytes: 100,
            first_seen_ns: 1_000,
            last_seen_ns: 2_000,
            tcp_flags: 0,
            l7: L7::Unknown,
        }
    }

    fn args(extra: &[&str]) -> QueryArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: QueryArgs,
        }
        Wrapper::try_parse_from(std::iter::once("flows").chain(extra.iter().copied()))
            .unwrap()
            .args
    }

    fn query(extra: &[&str]) -> FlowQuery {
        FlowQuery::from_args(&args(extra)).unwrap()
    }

    fn error(extra: &[&str]) -> String {
        FlowQuery::from_args(&args(extra)).unwrap_err().to_string()
    }

    #[test]
    fn raw_values_decode() {
        assert_eq!(Direction::from_raw(0), Some(Direction::Ingress));
        assert_eq!(Direction::from_raw(1), Some(Direction::Egress));
        assert_eq!(Direction::from_raw(2), None);
        assert_eq!(L7::from_raw(0), L7::Unknown);
        assert_eq!(L7::from_raw(1), L7::Http1);
        assert_eq!(L7::from_raw(5), L7::Ssh);
        assert_eq!(L7::from_raw(6), L7::Unknown);
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(address(4, bytes), v4("10.0.0.1"));
        let six: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(address(6, six.octets()), IpAddr::V6(six));
    }

    #[test]
    fn endpoints_bracket_ipv6_with_ports_only() {
        let mut f = flow("10.0.0.1", 40000, "10.0.0.2", 443, IPPROTO_TCP);
        assert_eq!(f.src_endpoint(), "10.0.0.1:40000");
        assert_eq!(f.dst_endpoint(), "10.0.0.2:443");
        f.src = "2001:db8::1".parse().unwrap();
        assert_eq!(f.src_endpoint(), "[2001:db8::1]:40000");
        f.protocol = IPPROTO_ICMPV6;
        f.sport = 128;
        f.dport = 0;
        assert_eq!(f.src_endpoint(), "2001:db8::1");
        assert_eq!(f.dst_endpoint(), "10.0.0.2");
        assert_eq!(f.protocol_text(), "icmpv6 echo-request");
        f.protocol = IPPROTO_ICMP;
        f.sport = 3;
        f.dport = 1;
        assert_eq!(f.protocol_text(), "icmp unreachable code 1");
        f.sport = 42;
        assert_eq!(f.protocol_text(), "icmp type 42 code 1");
        f.protocol = 47;
        assert_eq!(f.protocol_text(), "gre");
        f.protocol = 253;
        assert_eq!(f.protocol_text(), "253");
        assert_eq!(f.src_endpoint(), "2001:db8::1");
    }

    #[test]
    fn flags_parse_into_a_query() {
        let q = query(&[
            "--src",
            "10.0.0.0/8",
            "--dst",
            "2001:db8::1",
            "--port",
            "8000-8080",
            "--sport",
            "53",
            "--dport",
            "1-1023",
            "--proto",
            "udp",
            "--l7",
            "dns",
            "--min-packets",
            "2",
            "--min-bytes",
            "100",
            "--sort",
            "last",
            "--top",
            "5",
        ]);
        assert_eq!(q.src.unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(q.dst.unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(q.port, Some(PortRange { lo: 8000, hi: 8080 }));
        assert_eq!(q.sport, Some(PortRange { lo: 53, hi: 53 }));
        assert_eq!(q.dport, Some(PortRange { lo: 1, hi: 1023 }));
        assert_eq!(q.protocol, Some(IPPROTO_UDP));
        assert_eq!(q.l7, Some(L7::Dns));
        assert_eq!((q.min_packets, q.min_bytes), (2, 100));
        assert_eq!(q.sort, FlowSort::Last);
        assert_eq!(q.top, Some(5));
        assert_eq!(query(&[]), FlowQuery::default());
    }

    #[test]
    fn bad_flags_name_the_flag_and_say_why() {
        assert_eq!(
            error(&["--src", "10.0.0.1/24"]),
            "--src: 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
        );
        assert_eq!(
            error(&["--dst", "example.com"]),
            "--dst: \"example.com\" is not an IP address or CIDR"
        );
        assert_eq!(
            error(&["--port", "70000"]),
            "--port: \"70000\" is not a port (0-65535)"
        );
        assert_eq!(
            error(&["--dport", "90-80"]),
            "--dport: \"90-80\" is not a port range: 90 is greater than 80"
        );
        assert!(error(&["--sport", "x"]).starts_with("--sport: "));
        assert!(error(&["--proto", "tpc"]).starts_with("--proto: \"tpc\" is not a protocol"));
        assert_eq!(
            error(&["--proto", "ipv6"]),
            "--proto: \"ipv6\" names IP protocol 41 (IPv6 packets tunnelled in IP), not IPv6 traffic"
        );
        assert!(error(&["--l7", "quic"]).starts_with("--l7: \"quic\""));
        let failure = FlowQuery::from_args(&args(&["--src", "10.0.0.1/24"])).unwrap_err();
        let explained = crate::error::explain(&failure.into());
        assert!(explained.hint.unwrap().contains("prefix-length"));
    }

    #[test]
    fn filters_match_what_they_say() {
        let web = flow("10.1.2.3", 40000, "192.0.2.10", 443, IPPROTO_TCP);
        let dns = Flow {
            l7: L7::Dns,
            packets: 2,
            bytes: 150,
            ..flow("192.0.2.53", 53, "10.1.2.3", 50000, IPPROTO_UDP)
        };
        let ping = flow("10.1.2.3", 8, "192.0.2.10", 0, IPPROTO_ICMP);
        let six = Flow {
            src: "2001:db8::5".parse().unwrap(),
            dst: "2001:db8:1::9".parse().unwrap(),
            ..flow("0.0.0.0", 22, "0.0.0.0", 50000, IPPROTO_TCP)
        };
        let gre = flow("10.1.2.3", 0, "192.0.2.10", 0, 47);
        let all = [&web, &dns, &ping, &six, &gre];
        let hits = |q: FlowQuery| -> Vec<usize> {
            all.iter()
                .enumerate()
                .filter(|(_, f)| q.matches(f))
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(hits(query(&[])), vec![0, 1, 2, 3, 4]);
        assert_eq!(hits(query(&["--src", "10.0.0.0/8"])), vec![0, 2, 4]);
        assert_eq!(hits(query(&["--dst", "10.1.2.3"])), vec![1]);
        assert_eq!(hits(query(&["--src", "2001:db8::/32"])), vec![3]);
        assert_eq!(hits(query(&["--src", "0.0.0.0/0"])), vec![0, 1, 2, 4]);
        assert_eq!(hits(query(&["--port", "443"])), vec![0]);
        assert_eq!(hits(query(&["--port", "53"])), vec![1]);
        assert_eq!(hits(query(&["--port", "22"])), vec![3]);
        assert_eq!(hits(query(&["--port", "40000-50000"])), vec![0, 1, 3]);
        assert_eq!(hits(query(&["--sport", "53"])), vec![1]);
        assert_eq!(hits(query(&["--dport", "53"])), Vec::<usize>::new());
        // ICMP type 8 is not port 8, nor is code 0 port 0.
        assert_eq!(hits(query(&["--port", "8"])), Vec::<usize>::new());
        assert_eq!(hits(query(&["--dport", "0"])), Vec::<usize>::new());
        assert_eq!(hits(query(&["--proto", "icmp"])), vec![2]);
        assert_eq!(hits(query(&["--proto", "6"])), vec![0, 3]);
        assert_eq!(hits(query(&["--proto", "gre"])), vec![4]);
        assert_eq!(hits(query(&["--proto", "47"])), vec![4]);
        assert_eq!(hits(query(&["--l7", "dns"])), vec![1]);
        assert_eq!(hits(query(&["--l7", "unknown"])), vec![0, 2, 3, 4]);
        assert_eq!(hits(query(&["--min-packets", "2"])), vec![1]);
        assert_eq!(hits(query(&["--min-bytes", "101"])), vec![1]);
        assert_eq!(
            hits(query(&[
                "--src",
                "10.0.0.0/8",
                "--proto",
                "tcp",
                "--dport",
                "443"
            ])),
            vec![0]
        );
    }

    fn sized(n: u8, bytes: u64, packets: u64, first: u64, last: u64) -> Flow {
        Flow {
            bytes,
            packets,
            first_seen_ns: first,
            last_seen_ns: last,
            ..flow(&format!("10.0.0.{n}"), 1000, "10.0.0.254", 80, IPPROTO_TCP)
        }
    }

    fn order(q: &FlowQuery, flows: &[Flow]) -> Vec<u8> {
        q.select(flows.to_vec())
            .items
            .iter()
            .map(|f| match f.src {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn each_sort_puts_the_largest_or_newest_first_and_ties_in_key_order() {
        let flows = [
            sized(3, 500, 1, 30, 300),
            sized(1, 100, 9, 10, 900),
            sized(2, 500, 5, 20, 100),
            sized(4, 300, 5, 40, 400),
        ];
        let by = |sort: &str| order(&query(&["--sort", sort]), &flows);
        assert_eq!(by("bytes"), vec![2, 3, 4, 1]);
        assert_eq!(by("packets"), vec![1, 2, 4, 3]);
        assert_eq!(by("first"), vec![4, 3, 2, 1]);
        assert_eq!(by("last"), vec![1, 4, 3, 2]);
    }

    #[test]
    fn ties_between_sources_are_broken_by_source() {
        struct Tagged(&'static str, Flow);
        impl HasFlow for Tagged {
            fn flow(&self) -> &Flow {
                &self.1
            }
            fn source(&self) -> &str {
                self.0
            }
        }
        let f = sized(1, 100, 1, 1, 1);
        let items = vec![
            Tagged("eth1", f.clone()),
            Tagged("eth0", f.clone()),
            Tagged("eth2", f),
        ];
        let sel = FlowQuery::default().select(items);
        let names: Vec<_> = sel.items.iter().map(|t| t.0).collect();
        assert_eq!(names, vec!["eth0", "eth1", "eth2"]);
    }

    #[test]
    fn top_keeps_the_first_n_of_the_full_order() {
        let flows: Vec<Flow> = (1..=50u8)
            .map(|n| sized(n, u64::from(n % 7) * 100, 1, 0, 0))
            .collect();
        let full = order(&query(&[]), &flows);
        for top in [0usize, 1, 3, 7, 49, 50, 51, 1000] {
            let q = query(&["--top", &top.to_string()]);
            let sel = q.select(flows.clone());
            assert_eq!(sel.total, 50);
            assert_eq!(sel.matched, 50);
            assert_eq!(order(&q, &flows), full[..top.min(50)].to_vec(), "top {top}");
        }
        let sel = query(&["--top", "2", "--min-bytes", "600"]).select(flows);
        assert_eq!((sel.total, sel.matched, sel.items.len()), (50, 7, 2));
    }

    /// 1,000,000 flows, a filter that keeps about half, top 10 by bytes.
    /// The bound is generous for debug builds on a busy machine; in a
    /// release build this takes a few tens of milliseconds.
    #[test]
    fn a_million_flows_filter_and_top_10_quickly() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64*: reproducible, no dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let flows: Vec<Flow> = (0..1_000_000u32)
            .map(|i| {
                let r = next();
                Flow {
                    src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff))),
                    dst: IpAddr::V4(Ipv4Addr::from(if r & 1 == 0 {
                        0xc000_0200 | (r as u32 >> 24)
                    } else {
                        0xc633_6400 | (r as u32 >> 24)
                    })),
                    sport: (r >> 8) as u16 | 1024,
                    dport: if r & 2 == 0 { 443 } else { 53 },
                    protocol: if r & 2 == 0 { IPPROTO_TCP } else { IPPROTO_UDP },
                    direction: Direction::Ingress,
                    packets: (r >> 40) & 0xffff,
                    bytes: (r >> 20) & 0xff_ffff,
                    first_seen_ns: r >> 3,
                    last_seen_ns: r >> 2,
                    tcp_flags: 0,
                    l7: L7::Unknown,
                }
            })
            .collect();
        let q = query(&["--dst", "192.0.2.0/24", "--top", "10"]);
        let expected: Vec<u64> = {
            let mut kept: Vec<u64> = flows
                .iter()
                .filter(|f| q.matches(f))
                .map(|f| f.bytes)
                .collect();
            kept.sort_unstable_by(|a, b| b.cmp(a));
            kept.truncate(10);
            kept
        };
        let start = Instant::now();
        let sel = q.select(flows);
        let took = start.elapsed();
        eprintln!(
            "filter + top 10 of 1,000,000 flows ({} matched): {took:?}",
            sel.matched
        );
        assert!(sel.matched > 400_000 && sel.matched < 600_000);
        let got: Vec<u64> = sel.items.iter().map(|f| f.bytes).collect();
        assert_eq!(got, expected);
        assert!(took.as_secs_f64() < 5.0, "took {took:?}");
    }
}
