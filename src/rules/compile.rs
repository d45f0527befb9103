//! Compiles filter rules into the tables xdp_mesh_filter looks packets up in.
//!
//! # What the rules mean
//!
//! The first rule, in file order, that matches a packet decides what happens
//! to it; when no rule matches, `default` decides. A rule matches when every
//! field it has matches. `src` and `dst` match when the packet's address is
//! inside the CIDR; an IPv4 CIDR matches only IPv4 packets and an IPv6 CIDR
//! only IPv6 packets. A rule without `protocol` (or with `any`) matches every
//! IP packet, whether TCP, UDP, ICMP, ICMPv6 or another IP protocol, but no
//! non-IP frame. Non-IP frames are matched only by rules naming `arp`, and
//! only if they are ARP; any other non-IP frame always gets the default.
//! `icmp` is ICMP over IPv4 and `icmpv6` is ICMPv6 over IPv6; ICMP over IPv6
//! and ICMPv6 over IPv4 count as other IP protocols. A rule with `sport` or
//! `dport` and no protocol applies to TCP and UDP only. A packet whose ports
//! are unknown (an IP fragment other than the first, or a truncated TCP or UDP
//! header) never matches a rule with a port condition; rules without one still
//! match it.
//!
//! # How the kernel finds the first match without looping over rules
//!
//! Rule addresses are cut into classes: a packet's src class is the longest
//! rule src prefix that contains its source (0 when none does), and likewise
//! for dst. Prefixes that contain one address are nested, so the rules whose
//! src contains the packet's source are exactly those whose src contains the
//! class's prefix. Ports are cut into classes at every rule range boundary,
//! per protocol and direction. The packet path then does at most five
//! lookups, whatever the number of rules (see [`CompiledFilter::classify`]):
//! two longest-prefix matches, then `(src, ANY, proto)`, `(ANY, dst, proto)`
//! and `(src, dst, proto)` in that order, and, only when the entry found says
//! ports matter, the same key with the two port classes.
//!
//! The compiler emits `(src, ANY)` for a src class whose outcome no dst can
//! change, `(ANY, dst)` likewise for a dst class, and `(src, dst)` only for the
//! pairs that neither decides alone. Nothing is emitted where the default
//! applies.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::rc::Rc;

use super::filter::{FilterRules, Rule};
use super::{Action, Limit, PortRange, Protocol, RuleError};
// The compiled form speaks of the same prefixes as the rules.
pub use super::{Family, Prefix};

/// The most entries the decision table holds.
pub const MAX_DECISIONS: usize = 262_144;
/// The wildcard address class in a decision key.
pub const ANY_CLASS: u32 = u32::MAX;
/// Marks a decision key that does not look at ports.
pub const NO_PORTS: u16 = u16::MAX;
/// The port class of a packet whose ports are unknown or that has none.
pub const UNKNOWN_PORT: u16 = 0;

/// A packet's protocol class.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtoClass {
    Tcp = 0,
    Udp = 1,
    /// ICMP over IPv4.
    Icmp = 2,
    /// ICMPv6 over IPv6.
    Icmpv6 = 3,
    OtherIp = 4,
    Arp = 5,
}

const V4: u8 = 1;
const V6: u8 = 2;

fn family_bit(family: Family) -> u8 {
    match family {
        Family::V4 => V4,
        Family::V6 => V6,
    }
}

impl ProtoClass {
    const ALL: [ProtoClass; 6] = [
        ProtoClass::Tcp,
        ProtoClass::Udp,
        ProtoClass::Icmp,
        ProtoClass::Icmpv6,
        ProtoClass::OtherIp,
        ProtoClass::Arp,
    ];

    /// The address families packets of this class can have, as bits.
    fn families(self) -> u8 {
        match self {
            ProtoClass::Icmp => V4,
            ProtoClass::Icmpv6 => V6,
            ProtoClass::Arp => 0,
            _ => V4 | V6,
        }
    }

    /// Whether `rule`'s protocol and ports can match packets of this class.
    fn admits(self, rule: &Rule) -> bool {
        match rule.protocol {
            Protocol::Any if rule.has_ports() => {
                matches!(self, ProtoClass::Tcp | ProtoClass::Udp)
            }
            Protocol::Any => self != ProtoClass::Arp,
            Protocol::Tcp => self == ProtoClass::Tcp,
            Protocol::Udp => self == ProtoClass::Udp,
            Protocol::Icmp => self == ProtoClass::Icmp,
            Protocol::Icmpv6 => self == ProtoClass::Icmpv6,
            Protocol::Arp => self == ProtoClass::Arp,
            Protocol::Number(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionKey {
    pub src: u32,
    pub dst: u32,
    pub proto: ProtoClass,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The index of the deciding rule. With `needs_ports`, the entry is not a
    /// verdict: `rule`, `action` and `rate_limited` then describe the first
    /// rule that made ports matter, and the port-keyed entry decides.
    pub rule: u32,
    pub action: Action,
    pub needs_ports: bool,
    /// Whether `rule` has a rate limit, found in `rule_limits`.
    pub rate_limited: bool,
}

/// Port -> port class, for one protocol. Classes are the intervals between
/// the boundaries of the rules' ranges, numbered from 1 in port order, so
/// that every rule range is a contiguous run of classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortClasses {
    /// 65536 entries.
    pub sport: Vec<u16>,
    /// 65536 entries.
    pub dport: Vec<u16>,
}

impl PortClasses {
    fn new<'r>(rules: impl Iterator<Item = &'r Rule> + Clone) -> Self {
        PortClasses {
            sport: port_classes(rules.clone().filter_map(|rule| rule.sport)),
            dport: port_classes(rules.filter_map(|rule| rule.dport)),
        }
    }

    fn counts(&self) -> [u16; 2] {
        [
            self.sport[usize::from(u16::MAX)],
            self.dport[usize::from(u16::MAX)],
        ]
    }

    /// The classes of `rule`'s sport and dport; all of them where it has none.
    fn spans(&self, rule: &Rule) -> [RangeInclusive<u16>; 2] {
        [span(&self.sport, rule.sport), span(&self.dport, rule.dport)]
    }
}

fn port_classes(ranges: impl Iterator<Item = PortRange>) -> Vec<u16> {
    let mut starts = vec![false; 1 << 16];
    starts[0] = true;
    for range in ranges {
        starts[usize::from(range.lo)] = true;
        if let Some(next) = range.hi.checked_add(1) {
            starts[usize::from(next)] = true;
        }
    }
    let mut class = 0;
    let mut classes = Vec::with_capacity(starts.len());
    for start in starts {
        class += u16::from(start);
        classes.push(class);
    }
    classes
}

fn span(classes: &[u16], range: Option<PortRange>) -> RangeInclusive<u16> {
    match range {
        Some(range) => classes[usize::from(range.lo)]..=classes[usize::from(range.hi)],
        None => 1..=classes[usize::from(u16::MAX)],
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    pub default: Action,
    /// Each rule src prefix once, with its class id (>= 1).
    pub src_prefixes: Vec<(Prefix, u32)>,
    pub dst_prefixes: Vec<(Prefix, u32)>,
    pub tcp_ports: PortClasses,
    pub udp_ports: PortClasses,
    /// Sorted by key.
    pub decisions: Vec<(DecisionKey, Decision)>,
    pub rule_limits: Vec<(u32, Limit)>,
    pub rate_limit: Option<Limit>,
    pub syn_flood: Option<Limit>,
    /// For the operator, such as rules that can never match.
    pub warnings: Vec<String>,
}

/// What the filter sees of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketFields {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        l4: L4,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        l4: L4,
    },
    Arp,
    /// Any other frame that is not IP.
    OtherNonIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// None when the ports are unknown: a later fragment, or a truncated header.
    Tcp(Option<Ports>),
    Udp(Option<Ports>),
    /// The ICMP of the packet's family: ICMP in IPv4, ICMPv6 in IPv6.
    Icmp,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

impl CompiledFilter {
    /// The rule that decides `packet` and its action, or None for the
    /// default: exactly the lookups xdp_mesh_filter does.
    pub fn classify(&self, packet: &PacketFields) -> Option<(u32, Action)> {
        let (src, dst, l4, icmp) = match *packet {
            PacketFields::V4 { src, dst, l4 } => (src.into(), dst.into(), l4, ProtoClass::Icmp),
            PacketFields::V6 { src, dst, l4 } => (src.into(), dst.into(), l4, ProtoClass::Icmpv6),
            PacketFields::Arp => return self.decide([0, 0], ProtoClass::Arp, None),
            PacketFields::OtherNonIp => return None,
        };
        let (proto, ports) = match l4 {
            L4::Tcp(ports) => (
                ProtoClass::Tcp,
                ports.map(|p| port_pair(&self.tcp_ports, p)),
            ),
            L4::Udp(ports) => (
                ProtoClass::Udp,
                ports.map(|p| port_pair(&self.udp_ports, p)),
            ),
            L4::Icmp => (icmp, None),
            L4::Other => (ProtoClass::OtherIp, None),
        };
        let classes = [
            longest_match(&self.src_prefixes, src),
            longest_match(&self.dst_prefixes, dst),
        ];
        self.decide(classes, proto, ports)
    }

    fn decide(
        &self,
        [s, d]: [u32; 2],
        proto: ProtoClass,
        ports: Option<[u16; 2]>,
    ) -> Option<(u32, Action)> {
        let [sport, dport] = ports.unwrap_or([UNKNOWN_PORT; 2]);
        let key = |src, dst, sport, dport| DecisionKey {
            src,
            dst,
            proto,
            sport,
            dport,
        };
        let (src, dst, found) = [(s, ANY_CLASS), (ANY_CLASS, d), (s, d)]
            .into_iter()
            .find_map(|(src, dst)| {
                Some((src, dst, self.lookup(key(src, dst, NO_PORTS, NO_PORTS))?))
            })?;
        let decision = if found.needs_ports {
            self.lookup(key(src, dst, sport, dport))?
        } else {
            found
        };
        Some((decision.rule, decision.action))
    }

    fn lookup(&self, key: DecisionKey) -> Option<Decision> {
        let index = self
            .decisions
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()?;
        Some(self.decisions[index].1)
    }
}

fn port_pair(classes: &PortClasses, ports: Ports) -> [u16; 2] {
    [
        classes.sport[usize::from(ports.src)],
        classes.dport[usize::from(ports.dst)],
    ]
}

fn longest_match(prefixes: &[(Prefix, u32)], addr: IpAddr) -> u32 {
    let host = Prefix::host(addr);
    prefixes
        .iter()
        .filter(|(prefix, _)| prefix.contains(&host))
        .max_by_key(|(prefix, _)| prefix.len)
        .map_or(0, |&(_, class)| class)
}

/// Compiles `filter`, or explains why its tables would not fit.
pub fn compile(filter: &FilterRules) -> Result<CompiledFilter, RuleError> {
    let rules = &filter.rules;
    let sides = [
        Classes::new(rules.iter().filter_map(|rule| rule.src)),
        Classes::new(rules.iter().filter_map(|rule| rule.dst)),
    ];
    let port_rules = |proto: ProtoClass| {
        rules
            .iter()
            .filter(move |rule| rule.has_ports() && proto.admits(rule))
    };
    let tcp_ports = PortClasses::new(port_rules(ProtoClass::Tcp));
    let udp_ports = PortClasses::new(port_rules(ProtoClass::Udp));
    let mut out = Emitter::new(rules);
    for proto in ProtoClass::ALL {
        let ports = match proto {
            ProtoClass::Tcp => Some(&tcp_ports),
            ProtoClass::Udp => Some(&udp_ports),
            _ => None,
        };
        View::new(proto, rules, &sides, ports).emit(&mut out);
    }
    let out = out.finish()?;
    Ok(CompiledFilter {
        default: filter.default,
        src_prefixes: sides[0].numbered(),
        dst_prefixes: sides[1].numbered(),
        tcp_ports,
        udp_ports,
        warnings: unreached(rules, &out.reached)
            .into_iter()
            .chain(mapped_v4(rules))
            .collect(),
        decisions: out.decisions,
        rule_limits: rule_limits(rules),
        rate_limit: filter.rate_limit,
        syn_flood: filter.syn_flood,
    })
}

fn rule_limits(rules: &[Rule]) -> Vec<(u32, Limit)> {
    (0..)
        .zip(rules)
        .filter_map(|(index, rule)| Some((index, rule.rate_limit?)))
        .collect()
}

/// One side's address classes: the distinct rule prefixes, sorted so that
/// each prefix is followed by the prefixes it contains. Class `c` is
/// `prefixes[c - 1]`; class 0 stands for "no rule prefix", and is the root
/// every class descends from.
struct Classes {
    prefixes: Vec<Prefix>,
    /// By class; 0 for the top-level prefixes.
    parent: Vec<u32>,
    /// By class: the last class of its subtree, so the subtree is `c..=last[c]`.
    last: Vec<u32>,
    /// The classes of IPv4 prefixes come first, then IPv6.
    v4_count: u32,
}

impl Classes {
    fn new(prefixes: impl Iterator<Item = Prefix>) -> Self {
        let mut prefixes: Vec<Prefix> = prefixes.collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        let (parent, last) = nesting(&prefixes);
        let v4_count = prefixes.iter().filter(|p| p.family == Family::V4).count() as u32;
        Classes {
            prefixes,
            parent,
            last,
            v4_count,
        }
    }

    fn class_of(&self, prefix: Option<Prefix>) -> u32 {
        prefix.map_or(0, |prefix| {
            let index = self
                .prefixes
                .binary_search(&prefix)
                .expect("every rule prefix has a class");
            index as u32 + 1
        })
    }

    fn numbered(&self) -> Vec<(Prefix, u32)> {
        self.prefixes.iter().copied().zip(1..).collect()
    }

    /// `class`, its parent, and so on up to 0.
    fn ancestors(&self, class: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(class), |&c| (c != 0).then(|| self.parent[c as usize]))
    }

    fn subtree(&self, class: u32) -> RangeInclusive<u32> {
        class..=self.last[class as usize]
    }

    /// The families a packet in `class` can have, as bits.
    fn families(&self, class: u32) -> u8 {
        match class {
            0 => V4 | V6,
            c if c <= self.v4_count => V4,
            _ => V6,
        }
    }

    /// Class 0 and the classes of the families in `families`, as id ranges.
    fn ranges(&self, families: u8) -> Vec<RangeInclusive<u32>> {
        let count = self.prefixes.len() as u32;
        let mut ranges = vec![0..=0];
        if families & V4 != 0 {
            ranges.push(1..=self.v4_count);
        }
        if families & V6 != 0 {
            ranges.push(self.v4_count + 1..=count);
        }
        ranges
    }
}

/// The parent and the last descendant of each class of the sorted
/// `prefixes`, found by walking them with the stack of open prefixes.
fn nesting(prefixes: &[Prefix]) -> (Vec<u32>, Vec<u32>) {
    let count = prefixes.len() as u32;
    let mut parent = vec![0; prefixes.len() + 1];
    let mut last = vec![count; prefixes.len() + 1];
    let mut open: Vec<u32> = Vec::new();
    for (class, prefix) in (1..).zip(prefixes) {
        while let Some(&top) = open.last() {
            if prefixes[top as usize - 1].contains(prefix) {
                break;
            }
            last[top as usize] = class - 1;
            open.pop();
        }
        parent[class as usize] = open.last().copied().unwrap_or(0);
        open.push(class);
    }
    (parent, last)
}

/// The rules one class on one side is the key of, for one protocol class:
/// enough to tell whether that class decides without the other side.
#[derive(Default)]
struct Reach {
    /// By family of the other side's address: the first rule that also
    /// needs an address on the other side.
    first_bound: [Option<u32>; 2],
    /// The first rule that needs nothing of the other side nor of ports.
    first_terminal: Option<u32>,
    /// Whether some rule needs nothing of the other side.
    other_free: bool,
    /// The other side's classes these rules need.
    others: Vec<u32>,
}

impl Reach {
    fn note(&mut self, rule: u32, other: u32, other_family: Option<Family>, has_ports: bool) {
        match other_family {
            Some(family) => {
                self.first_bound[family as usize].get_or_insert(rule);
                self.others.push(other);
            }
            None => {
                self.other_free = true;
                if !has_ports {
                    self.first_terminal.get_or_insert(rule);
                }
            }
        }
    }

    fn bound(&self, families: u8) -> Option<u32> {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|&family| families & family_bit(family) != 0)
            .filter_map(|family| self.first_bound[family as usize])
            .min()
    }
}

fn earliest(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    a.into_iter().chain(b).min()
}

/// The rules that could decide a packet at one (src class, dst class): those
/// with a port condition in file order, then the first one without, which
/// ends the chain because nothing after it can be reached.
struct Chain {
    ported: Vec<u32>,
    terminal: Option<u32>,
}

/// The rules that can match one protocol class, indexed for the compiler.
struct View<'a> {
    proto: ProtoClass,
    rules: &'a [Rule],
    sides: &'a [Classes; 2],
    ports: Option<&'a PortClasses>,
    /// Rule indices by (src class, dst class), each list cut after its first
    /// rule without ports.
    groups: HashMap<[u32; 2], Vec<u32>>,
    /// By side, then by that side's class.
    reach: [HashMap<u32, Reach>; 2],
}

impl<'a> View<'a> {
    fn new(
        proto: ProtoClass,
        rules: &'a [Rule],
        sides: &'a [Classes; 2],
        ports: Option<&'a PortClasses>,
    ) -> Self {
        let mut view = View {
            proto,
            rules,
            sides,
            ports,
            groups: HashMap::new(),
            reach: Default::default(),
        };
        for (index, rule) in (0..).zip(rules).filter(|(_, rule)| proto.admits(rule)) {
            view.add(index, rule);
        }
        view
    }

    fn add(&mut self, index: u32, rule: &Rule) {
        let keys = [
            self.sides[0].class_of(rule.src),
            self.sides[1].class_of(rule.dst),
        ];
        let group = self.groups.entry(keys).or_default();
        if group
            .last()
            .is_none_or(|&last| self.rules[last as usize].has_ports())
        {
            group.push(index);
        }
        let families = [rule.src, rule.dst].map(|prefix| prefix.map(|p| p.family));
        for side in 0..2 {
            let other = 1 - side;
            self.reach[side].entry(keys[side]).or_default().note(
                index,
                keys[other],
                families[other],
                rule.has_ports(),
            );
        }
    }

    fn families(&self, side: usize, class: u32) -> u8 {
        self.sides[side].families(class) & self.proto.families()
    }

    fn reaches(&self, side: usize, class: u32) -> impl Iterator<Item = &Reach> + '_ {
        self.sides[side]
            .ancestors(class)
            .filter_map(move |c| self.reach[side].get(&c))
    }

    fn emit(&self, out: &mut Emitter) {
        let srcs = self.alone(0, out, |_| true);
        // An (ANY, dst) entry is only looked up for a src class without its
        // own entry, so it is only needed where such a class can pair with it.
        let paired = srcs.iter().fold(0, |bits, &s| bits | self.families(0, s));
        let dsts = self.alone(1, out, |d| self.families(1, d) & paired != 0);
        self.pairs(&srcs, &dsts, out);
    }

    /// Emits the entries of the classes on `side` whose outcome the other
    /// side cannot change, where `wanted`; returns the other classes.
    fn alone(&self, side: usize, out: &mut Emitter, wanted: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut undecided = Vec::new();
        for class in self.sides[side]
            .ranges(self.proto.families())
            .into_iter()
            .flatten()
        {
            if !self.decides_alone(side, class) {
                undecided.push(class);
            } else if wanted(class) {
                let mut at = [0; 2];
                let mut key = [ANY_CLASS; 2];
                at[side] = class;
                key[side] = class;
                out.slot(Kind::Alone, key, self.proto, self.chain(at), self.ports);
            }
        }
        undecided
    }

    /// No rule that needs the other side's address precedes the first rule
    /// that needs neither it nor ports. (Exact up to rules that ports shadow.)
    fn decides_alone(&self, side: usize, class: u32) -> bool {
        let families = self.families(side, class);
        let (bound, terminal) =
            self.reaches(side, class)
                .fold((None, None), |(bound, terminal), reach| {
                    (
                        earliest(bound, reach.bound(families)),
                        earliest(terminal, reach.first_terminal),
                    )
                });
        bound.is_none_or(|bound| terminal.is_some_and(|terminal| terminal < bound))
    }

    fn chain(&self, at: [u32; 2]) -> Chain {
        let [srcs, dsts] = self.sides;
        let mut members: Vec<u32> = srcs
            .ancestors(at[0])
            .flat_map(|s| dsts.ancestors(at[1]).map(move |d| [s, d]))
            .filter_map(|key| self.groups.get(&key))
            .flatten()
            .copied()
            .collect();
        members.sort_unstable();
        let end = members
            .iter()
            .position(|&rule| !self.rules[rule as usize].has_ports())
            .unwrap_or(members.len());
        let terminal = members.get(end).copied();
        members.truncate(end);
        Chain {
            ported: members,
            terminal,
        }
    }

    /// Emits `(src, dst)` entries for the src classes in `srcs` and dst classes
    /// in `dsts` that neither decides alone, where some rule matches the pair.
    fn pairs(&self, srcs: &[u32], dsts: &[u32], out: &mut Emitter) {
        if srcs.is_empty() || dsts.is_empty() {
            return;
        }
        let shared = [V4, V6].map(|family| self.shared_partners(family, dsts));
        for &s in srcs {
            for range in self.partners(s, dsts, &shared) {
                if !out.fits() {
                    // Counting is enough to say how far over the limit this is.
                    out.needed.paired += range.len();
                    continue;
                }
                for &d in &dsts[range] {
                    out.slot(
                        Kind::Paired,
                        [s, d],
                        self.proto,
                        self.chain([s, d]),
                        self.ports,
                    );
                }
            }
        }
    }

    /// The positions in `dsts` of the classes inside dst prefixes of rules
    /// without a src, for dst classes of `family`: every src class pairs with
    /// them, so they are worked out once.
    fn shared_partners(&self, family: u8, dsts: &[u32]) -> Vec<Range<usize>> {
        let others = self.reach[0].get(&0).map_or(&[][..], |reach| &reach.others);
        let ranges = others
            .iter()
            .filter(|&&d| self.sides[1].families(d) == family)
            .map(|&d| positions(self.sides[1].subtree(d), dsts));
        merged(ranges.collect())
    }

    /// The positions in `dsts` of the dst classes some rule matches together
    /// with src class `s`.
    fn partners(&self, s: u32, dsts: &[u32], shared: &[Vec<Range<usize>>; 2]) -> Vec<Range<usize>> {
        let families = self.families(0, s);
        if self.reaches(0, s).any(|reach| reach.other_free) {
            let ranges = self.sides[1].ranges(families).into_iter();
            return merged(ranges.map(|ids| positions(ids, dsts)).collect());
        }
        let own = self.sides[0]
            .ancestors(s)
            .filter(|&c| c != 0)
            .filter_map(|c| self.reach[0].get(&c))
            .flat_map(|reach| &reach.others)
            .map(|&d| positions(self.sides[1].subtree(d), dsts));
        let common = [V4, V6]
            .into_iter()
            .zip(shared)
            .filter(|&(family, _)| families & family != 0)
            .flat_map(|(_, ranges)| ranges.iter().cloned());
        merged(own.chain(common).collect())
    }
}

/// Where the ids of `ids` sit in the sorted `classes`.
fn positions(ids: RangeInclusive<u32>, classes: &[u32]) -> Range<usize> {
    classes.partition_point(|&c| c < *ids.start())..classes.partition_point(|&c| c <= *ids.end())
}

fn merged(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.retain(|range| !range.is_empty());
    ranges.sort_unstable_by_key(|range| range.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    out
}

enum Kind {
    Alone,
    Paired,
}

/// How many entries the rules need, counted on past the limit so that the
/// error can say by how much.
#[derive(Default)]
struct Needed {
    alone: usize,
    paired: usize,
    by_port: usize,
}

impl Needed {
    fn total(&self) -> usize {
        self.alone + self.paired + self.by_port
    }
}

type Cells = HashMap<(u16, u16), u32>;

struct Emitter<'a> {
    rules: &'a [Rule],
    decisions: Vec<(DecisionKey, Decision)>,
    needed: Needed,
    reached: Vec<bool>,
    /// The port cells a run of port rules decides, by protocol and run.
    painted: HashMap<(ProtoClass, Vec<u32>), Rc<Cells>>,
}

impl<'a> Emitter<'a> {
    fn new(rules: &'a [Rule]) -> Self {
        Emitter {
            rules,
            decisions: Vec::new(),
            needed: Needed::default(),
            reached: vec![false; rules.len()],
            painted: HashMap::new(),
        }
    }

    fn fits(&self) -> bool {
        self.needed.total() <= MAX_DECISIONS
    }

    /// Emits the entries of one key, or only counts them once over the limit.
    fn slot(
        &mut self,
        kind: Kind,
        addrs: [u32; 2],
        proto: ProtoClass,
        chain: Chain,
        ports: Option<&PortClasses>,
    ) {
        match (chain.ported.is_empty(), chain.terminal) {
            (true, None) => {}
            (true, Some(terminal)) => {
                self.count(kind, 0);
                if self.fits() {
                    let decision = self.verdict(terminal);
                    self.push(addrs, proto, [NO_PORTS; 2], decision);
                }
            }
            (false, _) => {
                let ports = ports.expect("only tcp and udp admit rules with ports");
                self.port_slot(kind, addrs, proto, chain, ports);
            }
        }
    }

    /// A key whose outcome depends on ports: a head entry that says so, then
    /// one entry per port cell that some rule of the chain matches.
    fn port_slot(
        &mut self,
        kind: Kind,
        addrs: [u32; 2],
        proto: ProtoClass,
        chain: Chain,
        ports: &PortClasses,
    ) {
        let [sports, dports] = ports.counts();
        let head = Decision {
            needs_ports: true,
            ..self.describe(chain.ported[0])
        };
        let cells = self.cells(proto, ports, chain.ported);
        let port_entries = match chain.terminal {
            Some(_) => usize::from(sports) * usize::from(dports) + 1,
            None => cells.len(),
        };
        self.count(kind, port_entries);
        if !self.fits() {
            return;
        }
        self.push(addrs, proto, [NO_PORTS; 2], head);
        match chain.terminal {
            Some(terminal) => {
                let all = (1..=sports).flat_map(|a| (1..=dports).map(move |b| (a, b)));
                for cell in all {
                    let rule = cells.get(&cell).copied().unwrap_or(terminal);
                    self.push_cell(addrs, proto, cell, rule);
                }
                self.push_cell(addrs, proto, (UNKNOWN_PORT, UNKNOWN_PORT), terminal);
            }
            None => {
                for (&cell, &rule) in cells.iter() {
                    self.push_cell(addrs, proto, cell, rule);
                }
            }
        }
    }

    fn count(&mut self, kind: Kind, port_entries: usize) {
        match kind {
            Kind::Alone => self.needed.alone += 1,
            Kind::Paired => self.needed.paired += 1,
        }
        self.needed.by_port += port_entries;
    }

    /// Which rule of `run` decides each port cell that one of them matches.
    fn cells(&mut self, proto: ProtoClass, ports: &PortClasses, run: Vec<u32>) -> Rc<Cells> {
        let rules = self.rules;
        let cells = self
            .painted
            .entry((proto, run))
            .or_insert_with_key(|(_, run)| Rc::new(paint(rules, ports, run)));
        Rc::clone(cells)
    }

    fn push_cell(&mut self, addrs: [u32; 2], proto: ProtoClass, (a, b): (u16, u16), rule: u32) {
        let decision = self.verdict(rule);
        self.push(addrs, proto, [a, b], decision);
    }

    fn push(
        &mut self,
        [src, dst]: [u32; 2],
        proto: ProtoClass,
        [sport, dport]: [u16; 2],
        decision: Decision,
    ) {
        let key = DecisionKey {
            src,
            dst,
            proto,
            sport,
            dport,
        };
        self.decisions.push((key, decision));
    }

    fn describe(&self, rule: u32) -> Decision {
        let filter_rule = &self.rules[rule as usize];
        Decision {
            rule,
            action: filter_rule.action,
            needs_ports: false,
            rate_limited: filter_rule.rate_limit.is_some(),
        }
    }

    fn verdict(&mut self, rule: u32) -> Decision {
        self.reached[rule as usize] = true;
        self.describe(rule)
    }

    fn finish(mut self) -> Result<Self, RuleError> {
        if !self.fits() {
            return Err(self.too_many());
        }
        self.decisions.sort_unstable_by_key(|&(key, _)| key);
        Ok(self)
    }

    fn too_many(&self) -> RuleError {
        let needed = &self.needed;
        let message = format!(
            "the rules need at least {} decision entries, more than the {MAX_DECISIONS} the filter holds: \
             {} keyed by one address class, {} by a pair of src and dst classes, {} by port classes",
            needed.total(),
            needed.alone,
            needed.paired,
            needed.by_port
        );
        let hint = if needed.by_port > needed.paired {
            "rules with ports that come before a broader rule without ports need one entry per pair of port \
             classes for every address class they apply to; where the order does not change the outcome, move \
             such rules after the broader ones, or use fewer distinct port ranges"
        } else {
            "rules with a src address and rules with a dst address are interleaved, so neither address decides \
             alone and every pair needs an entry; where the order does not change the outcome, put the rules \
             with only a src address before those with a dst address (or after them), or merge CIDRs"
        };
        RuleError::new(message, hint)
    }
}

/// Each cell goes to the first rule of `run` that matches it.
fn paint(rules: &[Rule], ports: &PortClasses, run: &[u32]) -> Cells {
    let mut cells = Cells::new();
    for &rule in run {
        let [sports, dports] = ports.spans(&rules[rule as usize]);
        for cell in sports.flat_map(|a| dports.clone().map(move |b| (a, b))) {
            cells.entry(cell).or_insert(rule);
        }
        if cells.len() > MAX_DECISIONS {
            break; // too many already; the error needs only a lower bound
        }
    }
    cells
}

fn unreached(rules: &[Rule], reached: &[bool]) -> Vec<String> {
    rules
        .iter()
        .zip(reached)
        .enumerate()
        .filter(|&(_, (_, &reached))| !reached)
        .map(|(index, (rule, _))| {
            let name = rule
                .name
                .as_ref()
                .map(|name| format!(" ({name:?})"))
                .unwrap_or_default();
            format!(
                "rule {index}{name} is never reached: earlier rules match every packet it matches"
            )
        })
        .collect()
}

/// A deny rule on an IPv4-mapped range is a fair anti-spoofing rule, so it
/// is kept, with a warning in case the IPv4 range was meant.
fn mapped_v4(rules: &[Rule]) -> Vec<String> {
    rules
        .iter()
        .enumerate()
        .flat_map(|(index, rule)| {
            [("src", rule.src), ("dst", rule.dst)]
                .into_iter()
                .filter_map(move |(field, prefix)| {
                    let problem = prefix?.mapped_v4_problem()?;
                    Some(format!("rule {index}, field \"{field}\": {problem}"))
                })
        })
        .collect()
}

/// A rules file, parsed and compiled: everything that can be wrong with it
/// is found here, before the kernel is touched.
pub struct LoadedRules {
    pub rules: FilterRules,
    pub compiled: CompiledFilter,
}

pub fn load_rules(path: &Path) -> Result<LoadedRules, RuleError> {
    let rules = super::filter::load(path)?;
    let compiled = compile(&rules).map_err(|e| e.in_file(path))?;
    Ok(LoadedRules { rules, compiled })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::filter::parse;
    use std::time::{Duration, Instant};

    fn filter(default: &str, rules: &str) -> FilterRules {
        parse(&format!(
            r#"{{"default": "{default}", "rules": [{rules}]}}"#
        ))
        .unwrap()
    }

    fn compiled(rules: &str) -> CompiledFilter {
        compile(&filter("allow", rules)).unwrap()
    }

    #[test]
    fn ipv4_mapped_ranges_are_kept_with_a_warning() {
        let table = compiled(
            r#"{"action": "deny", "src": "::ffff:10.0.0.0/104"}, {"action": "deny", "dst": "2001:db8::/32"}"#,
        );
        assert_eq!(
            table.warnings,
            ["rule 0, field \"src\": ::ffff:10.0.0.0/104 is an IPv4-mapped IPv6 range: it matches only IPv6 packets carrying such addresses (never sent by a conforming host), not IPv4 traffic from 10.0.0.0/8; write 10.0.0.0/8 for that"]
        );
        assert_eq!(table.src_prefixes.len(), 1);
    }

    /// The error, without printing a huge table when there is none.
    fn refused(rules: &[String]) -> RuleError {
        match compile(&filter("allow", &rules.join(","))) {
            Ok(table) => panic!("compiled to {} entries", table.decisions.len()),
            Err(err) => err,
        }
    }

    fn v4(src: &str, dst: &str, l4: L4) -> PacketFields {
        PacketFields::V4 {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4,
        }
    }

    fn v6(src: &str, dst: &str, l4: L4) -> PacketFields {
        PacketFields::V6 {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4,
        }
    }

    fn tcp(sport: u16, dport: u16) -> L4 {
        L4::Tcp(Some(Ports {
            src: sport,
            dst: dport,
        }))
    }

    fn udp(sport: u16, dport: u16) -> L4 {
        L4::Udp(Some(Ports {
            src: sport,
            dst: dport,
        }))
    }

    const ALLOW: Action = Action::Allow;
    const DENY: Action = Action::Deny;

    /// The semantics, straight from the module doc, for checking the tables.
    fn first_match(filter: &FilterRules, packet: &PacketFields) -> Option<(u32, Action)> {
        (0..)
            .zip(&filter.rules)
            .find(|(_, rule)| matches(rule, packet))
            .map(|(index, rule)| (index, rule.action))
    }

    fn matches(rule: &Rule, packet: &PacketFields) -> bool {
        let (src, dst, l4, family) = match *packet {
            PacketFields::V4 { src, dst, l4 } => {
                (IpAddr::from(src), IpAddr::from(dst), l4, Family::V4)
            }
            PacketFields::V6 { src, dst, l4 } => {
                (IpAddr::from(src), IpAddr::from(dst), l4, Family::V6)
            }
            PacketFields::Arp => return rule.protocol == Protocol::Arp,
            PacketFields::OtherNonIp => return false,
        };
        let protocol = match rule.protocol {
            Protocol::Any => true,
            Protocol::Tcp => matches!(l4, L4::Tcp(_)),
            Protocol::Udp => matches!(l4, L4::Udp(_)),
            Protocol::Icmp => l4 == L4::Icmp && family == Family::V4,
            Protocol::Icmpv6 => l4 == L4::Icmp && family == Family::V6,
            Protocol::Number(_) => false,
            Protocol::Arp => false,
        };
        let inside =
            |prefix: Option<Prefix>, addr| prefix.is_none_or(|p| p.contains(&Prefix::host(addr)));
        let ports = match l4 {
            L4::Tcp(ports) | L4::Udp(ports) => ports,
            _ => None,
        };
        let in_range =
            |range: Option<PortRange>, port| range.is_none_or(|r| r.lo <= port && port <= r.hi);
        let ports_match = !rule.has_ports()
            || ports.is_some_and(|p| in_range(rule.sport, p.src) && in_range(rule.dport, p.dst));
        protocol && inside(rule.src, src) && inside(rule.dst, dst) && ports_match
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let table = compiled(
            r#"{"action": "allow", "src": "10.1.0.0/16"}, {"action": "deny", "src": "10.0.0.0/8"}"#,
        );
        let from = |src| table.classify(&v4(src, "192.0.2.1", tcp(1, 2)));
        assert_eq!(from("10.1.2.3"), Some((0, ALLOW)));
        assert_eq!(from("10.2.0.1"), Some((1, DENY)));
        assert_eq!(from("11.0.0.1"), None);
        let table = compiled(
            r#"{"action": "deny", "src": "10.0.0.0/8"}, {"action": "allow", "src": "10.1.0.0/16"}"#,
        );
        assert_eq!(
            table.classify(&v4("10.1.2.3", "192.0.2.1", L4::Other)),
            Some((0, DENY))
        );
    }

    #[test]
    fn the_default_applies_when_nothing_matches() {
        let rules = r#"{"action": "allow", "protocol": "tcp", "dport": 443}"#;
        let closed = compile(&filter("deny", rules)).unwrap();
        assert_eq!(closed.default, DENY);
        assert_eq!(
            closed.classify(&v4("192.0.2.1", "192.0.2.2", tcp(9, 443))),
            Some((0, ALLOW))
        );
        assert_eq!(
            closed.classify(&v4("192.0.2.1", "192.0.2.2", udp(9, 443))),
            None
        );
        let open = compiled(r#"{"action": "deny", "dst": "192.0.2.2"}"#);
        assert_eq!(open.default, ALLOW);
        assert_eq!(
            open.classify(&v4("192.0.2.1", "192.0.2.2", L4::Icmp)),
            Some((0, DENY))
        );
        assert_eq!(open.classify(&v4("192.0.2.1", "192.0.2.3", L4::Icmp)), None);
    }

    #[test]
    fn a_longer_prefix_still_sees_the_rules_of_the_prefixes_around_it() {
        let table = compiled(
            r#"{"action": "allow", "src": "10.1.0.0/16", "protocol": "tcp", "dport": 22},
               {"action": "deny", "src": "10.0.0.0/8"}"#,
        );
        assert_eq!(
            table.classify(&v4("10.1.0.5", "192.0.2.1", tcp(40000, 22))),
            Some((0, ALLOW))
        );
        assert_eq!(
            table.classify(&v4("10.1.0.5", "192.0.2.1", tcp(40000, 80))),
            Some((1, DENY))
        );
        assert_eq!(
            table.classify(&v4("10.2.0.5", "192.0.2.1", tcp(40000, 22))),
            Some((1, DENY))
        );
    }

    #[test]
    fn an_address_matches_only_packets_of_its_family() {
        let table = compiled(
            r#"{"action": "deny", "src": "0.0.0.0/0"}, {"action": "allow", "dst": "::/0"}"#,
        );
        assert_eq!(
            table.classify(&v4("192.0.2.1", "192.0.2.2", L4::Other)),
            Some((0, DENY))
        );
        assert_eq!(
            table.classify(&v6("2001:db8::1", "2001:db8::2", L4::Other)),
            Some((1, ALLOW))
        );
        assert_eq!(table.classify(&PacketFields::Arp), None);
    }

    #[test]
    fn ports_ranges_and_unknown_ports() {
        let table = compiled(
            r#"{"action": "deny", "protocol": "tcp", "dport": "5000-5999"},
               {"action": "allow", "protocol": "tcp", "sport": 53},
               {"action": "deny", "protocol": "tcp"}"#,
        );
        let tcp4 = |l4| table.classify(&v4("192.0.2.1", "192.0.2.2", l4));
        assert_eq!(tcp4(tcp(1, 5000)), Some((0, DENY)));
        assert_eq!(tcp4(tcp(1, 5999)), Some((0, DENY)));
        assert_eq!(tcp4(tcp(53, 4999)), Some((1, ALLOW)));
        assert_eq!(tcp4(tcp(53, 6000)), Some((1, ALLOW)));
        assert_eq!(tcp4(tcp(54, 6000)), Some((2, DENY)));
        assert_eq!(tcp4(L4::Tcp(None)), Some((2, DENY)));
        assert_eq!(tcp4(udp(1, 5000)), None);
        let only_ports = compiled(r#"{"action": "deny", "protocol": "tcp", "dport": "0-65535"}"#);
        assert_eq!(
            only_ports.classify(&v4("192.0.2.1", "192.0.2.2", L4::Tcp(None))),
            None
        );
        assert_eq!(
            only_ports.classify(&v4("192.0.2.1", "192.0.2.2", tcp(0, 0))),
            Some((0, DENY))
        );
    }

    #[test]
    fn ports_without_a_protocol_mean_tcp_and_udp() {
        let table = compiled(
            r#"{"action": "deny", "dport": 53}, {"action": "deny", "protocol": "udp", "dport": 54}"#,
        );
        let to = |l4| table.classify(&v6("2001:db8::1", "2001:db8::2", l4));
        assert_eq!(to(tcp(1, 53)), Some((0, DENY)));
        assert_eq!(to(udp(1, 53)), Some((0, DENY)));
        assert_eq!(to(tcp(1, 54)), None);
        assert_eq!(to(udp(1, 54)), Some((1, DENY)));
        assert_eq!(to(L4::Icmp), None);
        assert_eq!(to(L4::Other), None);
        assert_eq!(table.tcp_ports.dport[54], table.tcp_ports.dport[55]);
        assert_ne!(table.udp_ports.dport[54], table.udp_ports.dport[55]);
    }

    #[test]
    fn only_arp_rules_match_non_ip_frames() {
        let table = compiled(r#"{"action": "deny"}"#);
        assert_eq!(table.classify(&PacketFields::Arp), None);
        assert_eq!(
            table.classify(&v4("192.0.2.1", "192.0.2.2", L4::Other)),
            Some((0, DENY))
        );
        let table = compile(&filter("deny", r#"{"action": "allow", "protocol": "arp"}"#)).unwrap();
        assert_eq!(table.classify(&PacketFields::Arp), Some((0, ALLOW)));
        assert_eq!(table.classify(&PacketFields::OtherNonIp), None);
        assert_eq!(
            table.classify(&v4("192.0.2.1", "192.0.2.2", L4::Other)),
            None
        );
    }

    #[test]
    fn icmp_is_ipv4_and_icmpv6_is_ipv6() {
        let table = compiled(
            r#"{"action": "deny", "protocol": "icmp"}, {"action": "allow", "protocol": "icmpv6"}"#,
        );
        assert_eq!(
            table.classify(&v4("192.0.2.1", "192.0.2.2", L4::Icmp)),
            Some((0, DENY))
        );
        assert_eq!(
            table.classify(&v6("2001:db8::1", "2001:db8::2", L4::Icmp)),
            Some((1, ALLOW))
        );
        assert_eq!(
            table.classify(&v6("2001:db8::1", "2001:db8::2", L4::Other)),
            None
        );
    }

    #[test]
    fn src_and_dst_rules_that_interleave_are_decided_per_pair() {
        let table = compiled(
            r#"{"action": "deny", "dst": "192.0.2.0/24"},
               {"action": "allow", "src": "198.51.100.0/24"},
               {"action": "deny", "src": "198.51.100.0/24", "dst": "203.0.113.0/24"}"#,
        );
        let packet = |src, dst| table.classify(&v4(src, dst, udp(1, 1)));
        assert_eq!(packet("198.51.100.1", "192.0.2.1"), Some((0, DENY)));
        assert_eq!(packet("198.51.100.1", "203.0.113.1"), Some((1, ALLOW)));
        assert_eq!(packet("198.51.100.1", "10.0.0.1"), Some((1, ALLOW)));
        assert_eq!(packet("10.0.0.1", "192.0.2.1"), Some((0, DENY)));
        assert_eq!(packet("10.0.0.1", "203.0.113.1"), None);
        assert_eq!(
            table.warnings,
            ["rule 2 is never reached: earlier rules match every packet it matches"]
        );
    }

    #[test]
    fn each_src_class_gets_one_entry_per_protocol_its_family_has() {
        let table = compiled(r#"{"action": "deny", "src": "10.0.0.0/8"}"#);
        let keys: Vec<_> = table
            .decisions
            .iter()
            .map(|(key, _)| (key.src, key.dst, key.proto))
            .collect();
        let expected = [
            ProtoClass::Tcp,
            ProtoClass::Udp,
            ProtoClass::Icmp,
            ProtoClass::OtherIp,
        ]
        .map(|p| (1, ANY_CLASS, p));
        assert_eq!(keys, expected);
        assert_eq!(
            table.src_prefixes,
            [(Prefix::new("10.0.0.0".parse().unwrap(), 8), 1)]
        );
        assert!(table.dst_prefixes.is_empty());
    }

    #[test]
    fn port_rules_before_a_catch_all_look_at_ports() {
        let table = compiled(
            r#"{"action": "allow", "protocol": "tcp", "dport": 22}, {"action": "deny", "protocol": "tcp"}"#,
        );
        let key = |sport, dport| DecisionKey {
            src: 0,
            dst: ANY_CLASS,
            proto: ProtoClass::Tcp,
            sport,
            dport,
        };
        let head = table.lookup(key(NO_PORTS, NO_PORTS)).unwrap();
        assert!(head.needs_ports);
        let [a, b] = port_pair(&table.tcp_ports, Ports { src: 1, dst: 22 });
        assert_eq!(table.lookup(key(a, b)).unwrap().rule, 0);
        assert_eq!(
            table.lookup(key(UNKNOWN_PORT, UNKNOWN_PORT)).unwrap().rule,
            1
        );
        assert_eq!(
            table.decisions.len(),
            1 + 3 + 1,
            "head, 3 dport classes, unknown ports"
        );
    }

    #[test]
    fn rate_limited_rules_are_flagged_and_listed() {
        let table = compiled(
            r#"{"action": "allow", "protocol": "tcp", "dport": 22, "rate_limit": {"pps": 10, "burst": 20}},
               {"action": "allow", "protocol": "udp"}"#,
        );
        assert_eq!(table.rule_limits, [(0, Limit { pps: 10, burst: 20 })]);
        for (_, decision) in table
            .decisions
            .iter()
            .filter(|(key, _)| key.sport != NO_PORTS)
        {
            assert_eq!(decision.rate_limited, decision.rule == 0);
        }
        let udp_entry = table
            .decisions
            .iter()
            .find(|(key, _)| key.proto == ProtoClass::Udp)
            .unwrap();
        assert!(!udp_entry.1.rate_limited);
    }

    #[test]
    fn rules_that_earlier_rules_cover_are_reported() {
        let table = compiled(
            r#"{"action": "allow", "protocol": "tcp", "dport": "1-1000"},
               {"action": "deny", "protocol": "tcp", "dport": 22, "name": "ssh"},
               {"action": "deny", "src": "10.0.0.0/8"},
               {"action": "deny", "src": "10.1.0.0/16", "protocol": "udp"}"#,
        );
        assert_eq!(
            table.warnings,
            [
                "rule 1 (\"ssh\") is never reached: earlier rules match every packet it matches",
                "rule 3 is never reached: earlier rules match every packet it matches",
            ]
        );
        assert!(compiled(
            r#"{"action": "deny", "src": "10.1.0.0/16"}, {"action": "deny", "src": "10.0.0.0/8"}"#
        )
        .warnings
        .is_empty());
    }

    #[test]
    fn interleaved_src_and_dst_rules_past_the_limit_are_refused() {
        let rules: Vec<String> = (0..600u32)
            .flat_map(|i| {
                let (a, b) = (i / 256, i % 256);
                [
                    format!(r#"{{"action": "deny", "src": "10.{a}.{b}.0/24"}}"#),
                    format!(r#"{{"action": "deny", "dst": "172.16.{a}.{b}"}}"#),
                ]
            })
            .collect();
        let started = Instant::now();
        let err = refused(&rules);
        assert!(started.elapsed() < Duration::from_secs(10));
        let message = err.to_string();
        assert!(
            message.starts_with("the rules need at least 1"),
            "{message}"
        );
        assert!(
            message.contains("more than the 262144 the filter holds"),
            "{message}"
        );
        assert!(err
            .hint()
            .starts_with("rules with a src address and rules with a dst address are interleaved"));
    }

    #[test]
    fn port_classes_that_multiply_past_the_limit_are_refused() {
        let rules: Vec<String> = (1..=600)
            .flat_map(|port| {
                [
                    format!(r#"{{"action": "allow", "protocol": "tcp", "sport": {port}}}"#),
                    format!(r#"{{"action": "allow", "protocol": "tcp", "dport": {port}}}"#),
                ]
            })
            .chain([r#"{"action": "deny"}"#.to_owned()])
            .collect();
        let err = refused(&rules);
        assert_eq!(
            err.to_string(),
            "the rules need at least 362410 decision entries, more than the 262144 the filter holds: \
             5 keyed by one address class, 0 by a pair of src and dst classes, 362405 by port classes"
        );
        assert!(err
            .hint()
            .starts_with("rules with ports that come before a broader rule"));
    }

    /// xorshift64*: reproducible, and enough to spread rules over the cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    // Few addresses and lengths, so that prefixes nest and overlap often.
    const V4_POOL: [[u8; 4]; 7] = [
        [10, 0, 0, 0],
        [10, 0, 0, 1],
        [10, 0, 1, 0],
        [10, 1, 0, 0],
        [10, 1, 0, 130],
        [192, 168, 0, 255],
        [0, 0, 0, 0],
    ];
    const V4_LENGTHS: [u8; 8] = [0, 8, 16, 23, 24, 25, 31, 32];
    const V6_POOL: [[u16; 8]; 5] = [
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1],
        [0x2001, 0xdb8, 0, 1, 0, 0, 0, 0],
        [0x2001, 0xdb8, 1, 0, 0, 0, 0, 0],
        [0xfe80, 0, 0, 0, 0, 0, 0, 1],
    ];
    const V6_LENGTHS: [u8; 7] = [0, 16, 32, 48, 64, 127, 128];
    const PORTS: [u16; 9] = [0, 1, 22, 53, 443, 1023, 1024, 5000, 65535];

    fn random_addr(rng: &mut Rng, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::from(rng.pick(&V4_POOL)),
            Family::V6 => IpAddr::from(rng.pick(&V6_POOL)),
        }
    }

    fn random_prefix(rng: &mut Rng, family: Family) -> Prefix {
        let len = match family {
            Family::V4 => rng.pick(&V4_LENGTHS),
            Family::V6 => rng.pick(&V6_LENGTHS),
        };
        Prefix::new(random_addr(rng, family), len)
    }

    fn random_range(rng: &mut Rng) -> PortRange {
        let (a, b) = (rng.pick(&PORTS), rng.pick(&PORTS));
        PortRange {
            lo: a.min(b),
            hi: a.max(b),
        }
    }

    fn random_family(rng: &mut Rng) -> Family {
        rng.pick(&[Family::V4, Family::V6])
    }

    /// A rule the parser would accept.
    fn random_rule(rng: &mut Rng) -> Rule {
        use Protocol::*;
        let protocol = rng.pick(&[Any, Any, Any, Tcp, Tcp, Udp, Icmp, Icmpv6, Arp]);
        let family = protocol.family().unwrap_or_else(|| random_family(rng));
        let addressed = protocol != Arp;
        let action = rng.pick(&[Action::Allow, Action::Deny]);
        Rule {
            action,
            name: None,
            src: (addressed && rng.chance(50)).then(|| random_prefix(rng, family)),
            dst: (addressed && rng.chance(40)).then(|| random_prefix(rng, family)),
            protocol,
            sport: (protocol.has_ports() && rng.chance(20)).then(|| random_range(rng)),
            dport: (protocol.has_ports() && rng.chance(40)).then(|| random_range(rng)),
            rate_limit: (action == Action::Allow && rng.chance(20))
                .then_some(Limit { pps: 5, burst: 5 }),
        }
    }

    /// Near the pool, so that packets land on both sides of prefix edges.
    fn random_host(rng: &mut Rng, family: Family) -> IpAddr {
        let addr = random_addr(rng, family);
        if rng.chance(50) {
            return addr;
        }
        let nudge = rng.pick(&[1u8, 2, 128, 255]);
        match addr {
            IpAddr::V4(v4) => {
                let mut octets = v4.octets();
                octets[2 + rng.below(2)] ^= nudge;
                IpAddr::from(octets)
            }
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[rng.pick(&[3usize, 7, 15])] ^= nudge;
                IpAddr::from(octets)
            }
        }
    }

    fn random_ports(rng: &mut Rng) -> Option<Ports> {
        let mut port = || {
            rng.pick(&PORTS)
                .saturating_add_signed(rng.pick(&[-1i16, 0, 0, 1]))
        };
        let ports = Ports {
            src: port(),
            dst: port(),
        };
        (!rng.chance(15)).then_some(ports)
    }

    fn random_packet(rng: &mut Rng) -> PacketFields {
        match rng.below(20) {
            0 => return PacketFields::Arp,
            1 => return PacketFields::OtherNonIp,
            _ => {}
        }
        let l4 = match rng.below(6) {
            0 | 1 => L4::Tcp(random_ports(rng)),
            2 | 3 => L4::Udp(random_ports(rng)),
            4 => L4::Icmp,
            _ => L4::Other,
        };
        let family = random_family(rng);
        let (src, dst) = (random_host(rng, family), random_host(rng, family));
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => PacketFields::V4 { src, dst, l4 },
            (IpAddr::V6(src), IpAddr::V6(dst)) => PacketFields::V6 { src, dst, l4 },
            _ => unreachable!("both addresses are of one family"),
        }
    }

    #[test]
    fn the_tables_decide_every_packet_as_the_rules_do() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for set in 0..300 {
            let count = rng.below(41);
            let rules = FilterRules {
                default: rng.pick(&[Action::Allow, Action::Deny]),
                rules: (0..count).map(|_| random_rule(&mut rng)).collect(),
                rate_limit: None,
                syn_flood: None,
            };
            let table = compile(&rules).unwrap();
            assert!(
                table.decisions.windows(2).all(|pair| pair[0].0 < pair[1].0),
                "set {set}: keys repeat"
            );
            let reported: Vec<bool> = (0..count)
                .map(|rule| {
                    table
                        .warnings
                        .iter()
                        .any(|w| w.starts_with(&format!("rule {rule} ")))
                })
                .collect();
            for _ in 0..2000 {
                let packet = random_packet(&mut rng);
                let expected = first_match(&rules, &packet);
                assert_eq!(
                    table.classify(&packet),
                    expected,
                    "set {set}, {packet:?}, rules {:#?}",
                    rules.rules
                );
                if let Some((rule, _)) = expected {
                    assert!(
                        !reported[rule as usize],
                        "set {set}: rule {rule} decided {packet:?} but is reported unreached"
                    );
                }
            }
        }
    }

    fn blocklist(rng: &mut Rng, count: usize) -> Vec<Rule> {
        let mut seen = std::collections::HashSet::new();
        std::iter::repeat_with(|| {
            let bytes = rng.next().to_be_bytes();
            Prefix::new(IpAddr::from([bytes[0], bytes[1], bytes[2], 0]), 24)
        })
        .filter(|prefix| seen.insert(*prefix))
        .take(count)
        .map(|src| Rule {
            action: Action::Deny,
            name: None,
            src: Some(src),
            dst: None,
            protocol: Protocol::Any,
            sport: None,
            dport: None,
            rate_limit: None,
        })
        .collect()
    }

    fn allow_tcp(port: u16) -> Rule {
        Rule {
            action: Action::Allow,
            name: None,
            src: None,
            dst: None,
            protocol: Protocol::Tcp,
            sport: None,
            dport: Some(PortRange { lo: port, hi: port }),
            rate_limit: None,
        }
    }

    /// Compiles, and returns the table and how long it took.
    fn timed(rules: Vec<Rule>) -> (FilterRules, CompiledFilter, Duration) {
        let filter = FilterRules {
            default: Action::Deny,
            rules,
            rate_limit: None,
            syn_flood: None,
        };
        let started = Instant::now();
        let table = compile(&filter).unwrap();
        (filter, table, started.elapsed())
    }

    fn time_limit() -> Duration {
        Duration::from_secs(if cfg!(debug_assertions) { 10 } else { 1 })
    }

    #[test]
    fn ten_thousand_blocked_networks_then_two_services() {
        let mut rules = blocklist(&mut Rng(7), 10_000);
        rules.extend([allow_tcp(443), allow_tcp(80)]);
        let (filter, table, took) = timed(rules);
        eprintln!(
            "10000 deny /24 + 2 allow: {} entries in {took:?}",
            table.decisions.len()
        );
        // One entry per blocked network and IPv4 protocol class, plus the services.
        assert_eq!(table.decisions.len(), 10_000 * 4 + 1 + 2);
        assert!(took < time_limit(), "{took:?}");
        let blocked = filter.rules[1234].src.unwrap().ip().to_string();
        let mut rng = Rng(11);
        for packet in [
            v4(&blocked, "192.0.2.1", tcp(1, 443)),
            v4("192.0.2.9", "192.0.2.1", tcp(1, 443)),
        ]
        .into_iter()
        .chain(std::iter::repeat_with(|| random_packet(&mut rng)).take(200))
        {
            assert_eq!(
                table.classify(&packet),
                first_match(&filter, &packet),
                "{packet:?}"
            );
        }
    }

    #[test]
    fn two_services_then_ten_thousand_blocked_networks() {
        let mut rules = vec![allow_tcp(443), allow_tcp(80)];
        rules.extend(blocklist(&mut Rng(7), 10_000));
        let (_, table, took) = timed(rules);
        eprintln!(
            "2 allow + 10000 deny /24: {} entries in {took:?}",
            table.decisions.len()
        );
        // For TCP each blocked network needs the service ports looked at:
        // 1 head + 5 dport classes + unknown ports.
        assert_eq!(table.decisions.len(), 10_000 * (3 + 7) + 1 + 2);
        assert!(took < time_limit(), "{took:?}");
    }
}
