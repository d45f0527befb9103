//! Compiles filter rules into the bit vectors xdp_mesh_filter classifies with.
//!
//! # What the rules mean
//!
//! The first rule, in file order, that matches a packet decides what happens
//! to it; when no rule matches, `default` decides. A rule matches when every
//! field it has matches. `src` and `dst` match when the packet's address is
//! inside the CIDR; an IPv4 CIDR matches only IPv4 packets and an IPv6 CIDR
//! only IPv6 packets. A rule without `protocol` (or with `any`) matches every
//! IP packet, whatever its protocol, but no non-IP frame. Non-IP frames are
//! matched only by rules naming `arp`, and only if they are ARP; any other
//! non-IP frame always gets the default. A protocol named by number or IANA
//! keyword matches the packets whose IPv4 protocol field, or whose IPv6 header
//! after the extension headers, is that number; IPv6's extension headers
//! (hop-by-hop, routing, fragment, destination options, AH) are walked, so a
//! rule naming one of them matches IPv4 packets only, and an IPv6 packet whose
//! headers are not all walked matches only rules without a protocol.
//! `icmp` (1) is ICMP over IPv4 and `icmpv6` (58) is ICMPv6 over IPv6; ICMP
//! over IPv6 and ICMPv6 over IPv4 count as other IP protocols. A rule with
//! `sport` or `dport` and no protocol applies to TCP and UDP only. A packet
//! whose ports are unknown (an IP fragment other than the first, or a
//! truncated TCP or UDP header) never matches a rule with a port condition;
//! rules without one still match it.
//!
//! # How the kernel finds the first match without looping over rules
//!
//! The invariant: for each of five fields (source, destination, protocol,
//! source port, destination port), the vector the kernel finds for a packet's
//! value of the field has bit `r` set exactly when rule `r`'s condition on
//! that field holds for the packet. A rule matches when all five hold, so
//! the first matching rule is the lowest bit set in all five vectors (see
//! include/mesh_filter.h for the scan), whatever the rules combine.
//!
//! - Addresses: a packet's class on a side is the longest rule prefix on that
//!   side holding its address. Prefixes holding one address are nested, so
//!   the rules whose prefix holds the address are those whose prefix holds
//!   the class's prefix: a class's vector is its parent class's plus the
//!   rules naming exactly its prefix, and an address in no rule prefix gets
//!   the vector of the rules without one. IPv4 classes are found through a
//!   16-8-8 multibit trie in the generation's table (leaf-pushed: each entry
//!   holds the vector of the longest prefix covering it), or, when that would
//!   take too many chunks, through the LPM trie that IPv6 always uses.
//! - Ports: cut at every rule range boundary into intervals; a port's vector
//!   is that of the rules whose range holds its interval plus the rules
//!   without a condition on that side, which alone make the vector of a
//!   packet whose ports are unknown.
//! - Protocol: a vector per address family and protocol number, and one for
//!   ARP; a rule with ports and no protocol is in the TCP and UDP vectors only.
//!
//! Identical vectors are stored once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::filter::{FilterRules, Rule};
use super::{Action, Limit, PortRange, Protocol, RuleError};
use crate::programs::xdp_mesh_filter::skel::types::filter_limits;
use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};
// The compiled form speaks of the same prefixes as the rules.
pub use super::{Family, Prefix};

const TABLE_SRC: usize = filter_limits::FILTER_TABLE_SRC.0 as usize;
const TABLE_DST: usize = filter_limits::FILTER_TABLE_DST.0 as usize;
const TABLE_SPORT: usize = filter_limits::FILTER_TABLE_SPORT.0 as usize;
const TABLE_DPORT: usize = filter_limits::FILTER_TABLE_DPORT.0 as usize;
const TABLE_CHUNKS: usize = filter_limits::FILTER_TABLE_CHUNKS.0 as usize;
const CHUNK_ENTRIES: usize = filter_limits::FILTER_CHUNK_ENTRIES.0 as usize;
/// The words of a vector in the kernel, whatever the rule count.
pub const VECTOR_WORDS: usize = filter_limits::FILTER_VECTOR_WORDS.0 as usize;
/// A trie entry with this bit holds the index of its next-level chunk.
pub const CHUNK_FLAG: u32 = 0x8000_0000;
/// Bytes of one vector in the kernel: its first bit, summary and words.
pub const VECTOR_BYTES: u64 = 8 + 8 * (VECTOR_WORDS as u64 / 64 + VECTOR_WORDS as u64);
/// A side whose IPv4 prefixes would need more chunks is looked up in the
/// LPM trie instead: a chunk costs 1 KiB, a trie lookup some nanoseconds.
const MAX_SIDE_CHUNKS: usize = 16_384;
/// What one table entry costs in the kernel: entries go two to an array
/// value, which the kernel aligns to 8 bytes.
const TABLE_ENTRY_BYTES: u64 = 4;
/// Rough kernel cost of one LPM trie entry (node, key and value).
const TRIE_ENTRY_BYTES: u64 = 96;

/// The vectors of one packet field side: source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

impl Side {
    const BOTH: [Side; 2] = [Side::Src, Side::Dst];

    fn index(self) -> usize {
        self as usize
    }

    fn prefix(self, rule: &Rule) -> Option<Prefix> {
        match self {
            Side::Src => rule.src,
            Side::Dst => rule.dst,
        }
    }

    fn ports(self, rule: &Rule) -> Option<PortRange> {
        match self {
            Side::Src => rule.sport,
            Side::Dst => rule.dport,
        }
    }
}

/// Which fields the kernel looks up; a field no rule has a condition on is
/// matched by every rule, so its lookup is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Lookups {
    pub src: bool,
    pub dst: bool,
    pub protocol: bool,
    pub sport: bool,
    pub dport: bool,
    /// Per side: IPv4 addresses go through the LPM trie, not the table.
    pub v4_trie: [bool; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    pub default: Action,
    pub rules: usize,
    /// Distinct vectors by id; bit `r % 64` of word `r / 64` is rule `r`.
    pub vectors: Vec<Vec<u64>>,
    /// The generation's table, laid out as include/mesh_filter.h says.
    pub table: Vec<u32>,
    /// Per side, the prefixes the LPM trie holds (IPv6, and IPv4 on a side
    /// with `Lookups::v4_trie`), with their vector ids.
    pub trie: [Vec<(Prefix, u32)>; 2],
    /// Per side, the vector of an address no rule prefix holds.
    pub no_prefix: [u32; 2],
    /// Per side, the vector of a packet whose ports are unknown.
    pub no_ports: [u32; 2],
    pub arp: u32,
    /// The vector holding every rule, if some field value maps to it.
    pub all: Option<u32>,
    /// Per family (IPv4, IPv6), per protocol number.
    pub protocols: [Vec<u32>; 2],
    pub lookups: Lookups,
    /// Per side, the IPv4 trie chunks in the table.
    pub chunks: [usize; 2],
    /// Each rule's action, by index.
    pub rule_actions: Vec<Action>,
    pub rule_limits: Vec<(u32, Limit)>,
    pub rate_limit: Option<Limit>,
    pub syn_flood: Option<Limit>,
    /// (rule, earlier rule): the rules never reached, each with the first
    /// rule that matches every packet it matches.
    pub unreachable: Vec<(usize, usize)>,
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
    /// Another IP protocol, by number; 0 for an IPv6 packet whose extension
    /// headers were not all walked.
    Other(u8),
}

impl L4 {
    fn number(self, family: Family) -> u8 {
        match (self, family) {
            (L4::Tcp(_), _) => IPPROTO_TCP,
            (L4::Udp(_), _) => IPPROTO_UDP,
            (L4::Icmp, Family::V4) => crate::proto::IPPROTO_ICMP,
            (L4::Icmp, Family::V6) => crate::proto::IPPROTO_ICMPV6,
            (L4::Other(number), _) => number,
        }
    }

    fn ports(self) -> Option<Ports> {
        match self {
            L4::Tcp(ports) | L4::Udp(ports) => ports,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

/// How a rule set compiled, for `filter check --stats`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompileStats {
    pub rules: usize,
    /// Distinct vectors, and the kernel memory they take.
    pub vectors: usize,
    pub vector_bytes: u64,
    /// Entries of the generation's table (tries' first levels, ports, chunks).
    pub table_entries: usize,
    pub table_bytes: u64,
    /// IPv4 trie chunks per side.
    pub chunks: [usize; 2],
    /// LPM trie entries per side.
    pub trie_prefixes: [usize; 2],
    /// All of it: what one generation costs the kernel.
    pub memory_bytes: u64,
    pub lookups: Lookups,
    /// Map lookups of an IPv4 packet at most: tables, addresses, ports,
    /// the five vectors, and the matched rule's action and counter.
    pub max_map_lookups: usize,
    /// Words of the vectors a packet's scan may read, at most.
    pub max_scan_words: usize,
}

impl CompiledFilter {
    /// The rule that decides `packet` and its action, or None for the
    /// default: exactly the lookups and the scan xdp_mesh_filter does.
    pub fn classify(&self, packet: &PacketFields) -> Option<(u32, Action)> {
        let ids = match *packet {
            PacketFields::V4 { src, dst, l4 } => {
                self.ip_ids([src.into(), dst.into()], l4, Family::V4)
            }
            PacketFields::V6 { src, dst, l4 } => {
                self.ip_ids([src.into(), dst.into()], l4, Family::V6)
            }
            PacketFields::Arp => {
                // Only arp rules match ARP: its protocol vector always counts.
                let mut looked_up = self.looked_up();
                looked_up[2] = true;
                let ids = [
                    self.no_prefix[0],
                    self.no_prefix[1],
                    self.arp,
                    self.no_ports[0],
                    self.no_ports[1],
                ];
                return self.first_rule(ids, looked_up);
            }
            PacketFields::OtherNonIp => return None,
        };
        self.first_rule(ids, self.looked_up())
    }

    /// Which of the five fields the kernel looks a vector up for; the
    /// others take the all-ones vector.
    fn looked_up(&self) -> [bool; 5] {
        let l = &self.lookups;
        [l.src, l.dst, l.protocol, l.sport, l.dport]
    }

    fn first_rule(&self, ids: [u32; 5], looked_up: [bool; 5]) -> Option<(u32, Action)> {
        if self.rules == 0 {
            return None;
        }
        let all = vec![!0u64; VECTOR_WORDS];
        let vectors: [&[u64]; 5] = std::array::from_fn(|f| {
            if looked_up[f] {
                &self.vectors[ids[f] as usize][..]
            } else {
                &all[..]
            }
        });
        let rule = first_common(vectors)?;
        Some((rule, self.rule_actions[rule as usize]))
    }

    fn ip_ids(&self, addrs: [IpAddr; 2], l4: L4, family: Family) -> [u32; 5] {
        let [src, dst] = Side::BOTH.map(|side| self.address_id(side, addrs[side.index()]));
        let [sport, dport] = match l4.ports() {
            Some(ports) => [
                self.table[TABLE_SPORT + usize::from(ports.src)],
                self.table[TABLE_DPORT + usize::from(ports.dst)],
            ],
            None => self.no_ports,
        };
        let protocol = self.protocols[family_index(family)][usize::from(l4.number(family))];
        [src, dst, protocol, sport, dport]
    }

    fn address_id(&self, side: Side, addr: IpAddr) -> u32 {
        let looked_up = match side {
            Side::Src => self.lookups.src,
            Side::Dst => self.lookups.dst,
        };
        let none = self.no_prefix[side.index()];
        match addr {
            _ if !looked_up => none,
            IpAddr::V4(v4) if !self.lookups.v4_trie[side.index()] => {
                let octets = v4.octets();
                let first = [TABLE_SRC, TABLE_DST][side.index()];
                let mut entry =
                    self.table[first + (usize::from(octets[0]) << 8 | usize::from(octets[1]))];
                for &byte in &octets[2..] {
                    if entry & CHUNK_FLAG == 0 {
                        break;
                    }
                    entry = self.table[(entry & !CHUNK_FLAG) as usize + usize::from(byte)];
                }
                entry
            }
            _ => {
                let host = Prefix::host(addr);
                self.trie[side.index()]
                    .iter()
                    .filter(|(prefix, _)| prefix.contains(&host))
                    .max_by_key(|(prefix, _)| prefix.len)
                    .map_or(none, |&(_, id)| id)
            }
        }
    }

    pub fn stats(&self) -> CompileStats {
        let vector_bytes = self.vectors.len() as u64 * VECTOR_BYTES;
        let table_bytes = self.table.len() as u64 * TABLE_ENTRY_BYTES;
        let trie_prefixes = [self.trie[0].len(), self.trie[1].len()];
        let words = self.rules.div_ceil(64).max(1);
        CompileStats {
            rules: self.rules,
            vectors: self.vectors.len(),
            vector_bytes,
            table_entries: self.table.len(),
            table_bytes,
            chunks: self.chunks,
            trie_prefixes,
            memory_bytes: memory(vector_bytes, table_bytes, trie_prefixes),
            lookups: self.lookups,
            // 2 tables, 3 + 3 address levels, 2 ports, 5 vectors, then the
            // matched rule's action and counter.
            max_map_lookups: 17,
            max_scan_words: words + words.div_ceil(64),
        }
    }
}

fn memory(vector_bytes: u64, table_bytes: u64, trie_prefixes: [usize; 2]) -> u64 {
    vector_bytes + table_bytes + (trie_prefixes[0] + trie_prefixes[1]) as u64 * TRIE_ENTRY_BYTES
}

fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The lowest bit set in all of `vectors`, as the kernel's scan finds it.
fn first_common(vectors: [&[u64]; 5]) -> Option<u32> {
    let words = vectors.iter().map(|v| v.len()).min()?;
    (0..words).find_map(|w| {
        let common = vectors.iter().fold(!0u64, |acc, v| acc & v[w]);
        (common != 0).then(|| (w * 64) as u32 + common.trailing_zeros())
    })
}

/// A set of rules, one bit per rule index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn none(rules: usize) -> Bits {
        Bits(vec![0; rules.div_ceil(64).max(1)])
    }

    fn of(rules: usize, members: impl Iterator<Item = usize>) -> Bits {
        let mut bits = Bits::none(rules);
        for rule in members {
            bits.set(rule);
        }
        bits
    }

    fn set(&mut self, rule: usize) {
        self.0[rule / 64] |= 1 << (rule % 64);
    }

    fn clear(&mut self, rule: usize) {
        self.0[rule / 64] &= !(1 << (rule % 64));
    }

    fn and_words(&mut self, other: &[u64]) {
        for (word, o) in self.0.iter_mut().zip(other) {
            *word &= o;
        }
    }

    fn first(&self) -> Option<usize> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, &word)| word != 0)
            .map(|(w, word)| w * 64 + word.trailing_zeros() as usize)
    }
}

/// Stores each distinct vector once and hands out its id.
#[derive(Default)]
struct Vectors {
    ids: HashMap<Bits, u32>,
    all: Vec<Vec<u64>>,
}

impl Vectors {
    fn id(&mut self, bits: &Bits) -> u32 {
        if let Some(&id) = self.ids.get(bits) {
            return id;
        }
        let id = self.all.len() as u32;
        self.all.push(bits.0.clone());
        self.ids.insert(bits.clone(), id);
        id
    }
}

/// One side's address classes: each distinct rule prefix with the rules
/// whose prefix holds it, and the rules without a prefix on the side.
struct AddressClasses {
    without: Bits,
    /// Shortest first, so that a class comes after every class holding it.
    classes: Vec<(Prefix, Bits)>,
}

impl AddressClasses {
    fn new(rules: &[Rule], side: Side) -> Self {
        let n = rules.len();
        let without = Bits::of(n, (0..n).filter(|&r| side.prefix(&rules[r]).is_none()));
        let mut naming: HashMap<Prefix, Vec<usize>> = HashMap::new();
        for (r, rule) in rules.iter().enumerate() {
            if let Some(prefix) = side.prefix(rule) {
                naming.entry(prefix).or_default().push(r);
            }
        }
        let mut prefixes: Vec<Prefix> = naming.keys().copied().collect();
        prefixes.sort_by_key(|p| (p.len, p.family == Family::V6, p.addr));
        let mut class_of: HashMap<Prefix, usize> = HashMap::new();
        let mut classes: Vec<(Prefix, Bits)> = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let parent = (0..prefix.len)
                .rev()
                .find_map(|len| class_of.get(&Prefix::new(prefix.ip(), len)).copied());
            let mut bits = parent.map_or_else(|| without.clone(), |c| classes[c].1.clone());
            for &r in &naming[&prefix] {
                bits.set(r);
            }
            class_of.insert(prefix, classes.len());
            classes.push((prefix, bits));
        }
        AddressClasses { without, classes }
    }
}

/// A 16-8-8 multibit trie of IPv4 prefixes, leaf-pushed into `table`.
struct Ipv4Trie<'t> {
    table: &'t mut Vec<u32>,
    first: usize,
    chunks: usize,
}

impl Ipv4Trie<'_> {
    /// Paints `prefix` with `id`; prefixes come shortest first, so a longer
    /// one overwrites what it is inside of.
    fn paint(&mut self, prefix: &Prefix, id: u32) {
        let [a, b, c, _] = [
            prefix.addr[0],
            prefix.addr[1],
            prefix.addr[2],
            prefix.addr[3],
        ]
        .map(usize::from);
        let len = usize::from(prefix.len);
        let top = self.first + (a << 8 | b);
        if len <= 16 {
            let span = 1 << (16 - len);
            return self.table[top..top + span].fill(id);
        }
        let second = self.chunk(top) + c;
        if len <= 24 {
            let span = 1 << (24 - len);
            let at = second - c + (c & !(span - 1));
            return self.table[at..at + span].fill(id);
        }
        let third = self.chunk(second);
        let span = 1 << (32 - len);
        let d = usize::from(prefix.addr[3]);
        let at = third + (d & !(span - 1));
        self.table[at..at + span].fill(id);
    }

    /// The chunk under `entry`, made from what the entry held if it has none.
    fn chunk(&mut self, entry: usize) -> usize {
        let held = self.table[entry];
        if held & CHUNK_FLAG != 0 {
            return (held & !CHUNK_FLAG) as usize;
        }
        let at = self.table.len();
        self.table.resize(at + CHUNK_ENTRIES, held);
        self.table[entry] = CHUNK_FLAG | at as u32;
        self.chunks += 1;
        at
    }
}

/// The chunks a side's IPv4 prefixes need in the table.
fn chunks_needed(classes: &AddressClasses) -> usize {
    let mut second = std::collections::HashSet::new();
    let mut third = std::collections::HashSet::new();
    for (prefix, _) in classes
        .classes
        .iter()
        .filter(|(p, _)| p.family == Family::V4)
    {
        if prefix.len > 16 {
            second.insert([prefix.addr[0], prefix.addr[1]]);
        }
        if prefix.len > 24 {
            third.insert([prefix.addr[0], prefix.addr[1], prefix.addr[2]]);
        }
    }
    second.len() + third.len()
}

/// Per port, the vector id of a side's port classes; and the id of the
/// rules without a condition on the side.
fn port_vectors(rules: &[Rule], side: Side, vectors: &mut Vectors) -> (Vec<u32>, u32) {
    let n = rules.len();
    let without = Bits::of(n, (0..n).filter(|&r| side.ports(&rules[r]).is_none()));
    let mut starts: Vec<Vec<usize>> = vec![Vec::new(); 65536];
    let mut ends: Vec<Vec<usize>> = vec![Vec::new(); 65536];
    for (r, rule) in rules.iter().enumerate() {
        if let Some(range) = side.ports(rule) {
            starts[usize::from(range.lo)].push(r);
            ends[usize::from(range.hi)].push(r);
        }
    }
    let mut current = without.clone();
    let mut id = vectors.id(&current);
    let mut by_port = Vec::with_capacity(65536);
    for port in 0..65536 {
        if !starts[port].is_empty() {
            starts[port].iter().for_each(|&r| current.set(r));
            id = vectors.id(&current);
        }
        by_port.push(id);
        if !ends[port].is_empty() {
            ends[port].iter().for_each(|&r| current.clear(r));
            id = vectors.id(&current);
        }
    }
    (by_port, vectors.id(&without))
}

/// The IPv6 headers include/packet_parse.h walks past, so that no packet's
/// protocol is one of them; 0 (hop-by-hop) is what a packet whose walk
/// stopped early has instead.
const IPV6_WALKED: [u8; 5] = [0, 43, 44, 51, 60];

/// Whether `rule`'s protocol condition holds for IP packets of `family`
/// with protocol `number` (after ports narrowed `any` to TCP and UDP).
fn admits(rule: &Rule, family: Family, number: u8) -> bool {
    match rule.protocol {
        Protocol::Any if rule.has_ports() => number == IPPROTO_TCP || number == IPPROTO_UDP,
        Protocol::Any => true,
        Protocol::Arp => false,
        named => {
            named.ip_number() == Some(number)
                && named.family().is_none_or(|f| f == family)
                && !(family == Family::V6 && IPV6_WALKED.contains(&number))
        }
    }
}

/// Compiles `filter`. Every set the parser accepts fits: at most 16,384
/// rules make at most 2 x 16,385 address and 2 x 32,769 port vectors plus
/// 513 protocol ones, under 200 MiB, and a side whose IPv4 chunks would
/// pass MAX_SIDE_CHUNKS (16 MiB) goes to the trie.
pub fn compile(filter: &FilterRules) -> CompiledFilter {
    let rules = &filter.rules;
    let n = rules.len();
    let mut vectors = Vectors::default();
    let mut table = vec![0u32; TABLE_CHUNKS];
    let mut trie: [Vec<(Prefix, u32)>; 2] = Default::default();
    let mut no_prefix = [0; 2];
    let mut v4_trie = [false; 2];
    let mut chunks = [0; 2];
    // Per side, per rule: the vector id of the rules whose prefix holds its.
    let mut holding: [Vec<u32>; 2] = Default::default();

    for side in Side::BOTH {
        let classes = AddressClasses::new(rules, side);
        let i = side.index();
        no_prefix[i] = vectors.id(&classes.without);
        v4_trie[i] = chunks_needed(&classes) > MAX_SIDE_CHUNKS;
        let first = [TABLE_SRC, TABLE_DST][i];
        table[first..first + 65536].fill(no_prefix[i]);
        let mut v4 = Ipv4Trie {
            table: &mut table,
            first,
            chunks: 0,
        };
        let mut class_ids: HashMap<Prefix, u32> = HashMap::new();
        for (prefix, bits) in &classes.classes {
            let id = vectors.id(bits);
            class_ids.insert(*prefix, id);
            if prefix.family == Family::V4 && !v4_trie[i] {
                v4.paint(prefix, id);
            } else {
                trie[i].push((*prefix, id));
            }
        }
        chunks[i] = v4.chunks;
        holding[i] = rules
            .iter()
            .map(|rule| side.prefix(rule).map_or(no_prefix[i], |p| class_ids[&p]))
            .collect();
    }

    let mut no_ports = [0; 2];
    let mut by_port: [Vec<u32>; 2] = Default::default();
    for side in Side::BOTH {
        let (ids, without) = port_vectors(rules, side, &mut vectors);
        let first = [TABLE_SPORT, TABLE_DPORT][side.index()];
        table[first..first + 65536].copy_from_slice(&ids);
        (by_port[side.index()], no_ports[side.index()]) = (ids, without);
    }

    let protocols = [Family::V4, Family::V6].map(|family| {
        (0..=255u8)
            .map(|number| {
                vectors.id(&Bits::of(
                    n,
                    (0..n).filter(|&r| admits(&rules[r], family, number)),
                ))
            })
            .collect::<Vec<u32>>()
    });
    let arp = vectors.id(&Bits::of(
        n,
        (0..n).filter(|&r| rules[r].protocol == Protocol::Arp),
    ));

    let all = vectors.ids.get(&Bits::of(n, 0..n)).copied();
    let mut compiled = CompiledFilter {
        default: filter.default,
        rules: n,
        vectors: vectors.all,
        table,
        trie,
        no_prefix,
        no_ports,
        arp,
        all,
        protocols,
        lookups: Lookups {
            src: rules.iter().any(|r| r.src.is_some()),
            dst: rules.iter().any(|r| r.dst.is_some()),
            protocol: rules
                .iter()
                .any(|r| r.protocol != Protocol::Any || r.has_ports()),
            sport: rules.iter().any(|r| r.sport.is_some()),
            dport: rules.iter().any(|r| r.dport.is_some()),
            v4_trie,
        },
        chunks,
        rule_actions: rules.iter().map(|r| r.action).collect(),
        rule_limits: rule_limits(rules),
        rate_limit: filter.rate_limit,
        syn_flood: filter.syn_flood,
        unreachable: Vec::new(),
        warnings: Vec::new(),
    };
    compiled.unreachable = Coverage {
        compiled: &compiled,
        holding: &holding,
        by_port: &by_port,
    }
    .unreachable(rules);
    compiled.warnings = unreachable_warnings(rules, &compiled.unreachable)
        .chain(mapped_v4(rules))
        .collect();
    compiled
}

fn unreachable_warnings<'r>(
    rules: &'r [Rule],
    unreachable: &'r [(usize, usize)],
) -> impl Iterator<Item = String> + 'r {
    let name = |r: usize| {
        rules[r]
            .name
            .as_ref()
            .map(|name| format!(" ({name:?})"))
            .unwrap_or_default()
    };
    unreachable.iter().map(move |&(index, by)| {
        format!(
            "rule {index}{} is never reached: rule {by}{} matches every packet it matches",
            name(index),
            name(by)
        )
    })
}

/// Finds the rules an earlier rule covers, from the vectors: the rules
/// whose condition on a field holds wherever rule r's does are those in
/// the vector of r's prefix, of both ends of r's port range, and of every
/// protocol r admits.
struct Coverage<'c> {
    compiled: &'c CompiledFilter,
    holding: &'c [Vec<u32>; 2],
    by_port: &'c [Vec<u32>; 2],
}

impl Coverage<'_> {
    fn vector(&self, id: u32) -> &[u64] {
        &self.compiled.vectors[id as usize]
    }

    fn unreachable(&self, rules: &[Rule]) -> Vec<(usize, usize)> {
        let mut protocols: HashMap<(Protocol, bool), Bits> = HashMap::new();
        let mut found = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let protocol = protocols
                .entry((rule.protocol, rule.has_ports()))
                .or_insert_with(|| self.protocol_superset(rule));
            let mut all = protocol.clone();
            for side in Side::BOTH {
                let i = side.index();
                all.and_words(self.vector(self.holding[i][index]));
                match side.ports(rule) {
                    None => all.and_words(self.vector(self.compiled.no_ports[i])),
                    Some(range) => {
                        all.and_words(self.vector(self.by_port[i][usize::from(range.lo)]));
                        all.and_words(self.vector(self.by_port[i][usize::from(range.hi)]));
                    }
                }
            }
            if let Some(by) = all.first().filter(|&by| by < index) {
                found.push((index, by));
            }
        }
        found
    }

    fn protocol_superset(&self, rule: &Rule) -> Bits {
        let mut all = Bits(vec![!0; self.compiled.rules.div_ceil(64).max(1)]);
        if rule.protocol == Protocol::Arp {
            all.and_words(self.vector(self.compiled.arp));
            return all;
        }
        for (f, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            for number in (0..=255u8).filter(|&number| admits(rule, family, number)) {
                all.and_words(self.vector(self.compiled.protocols[f][usize::from(number)]));
            }
        }
        all
    }
}

fn rule_limits(rules: &[Rule]) -> Vec<(u32, Limit)> {
    (0..)
        .zip(rules)
        .filter_map(|(index, rule)| Some((index, rule.rate_limit?)))
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
    let compiled = compile(&rules);
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
        compile(&filter("allow", rules))
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
        assert_eq!(table.trie[0].len(), 1);
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
            Protocol::Number(n) => {
                l4 == L4::Other(n) && !(family == Family::V6 && IPV6_WALKED.contains(&n))
            }
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
            table.classify(&v4("10.1.2.3", "192.0.2.1", L4::Other(47))),
            Some((0, DENY))
        );
    }

    #[test]
    fn the_default_applies_when_nothing_matches() {
        let rules = r#"{"action": "allow", "protocol": "tcp", "dport": 443}"#;
        let closed = compile(&filter("deny", rules));
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
            table.classify(&v4("192.0.2.1", "192.0.2.2", L4::Other(47))),
            Some((0, DENY))
        );
        assert_eq!(
            table.classify(&v6("2001:db8::1", "2001:db8::2", L4::Other(47))),
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
        assert_eq!(to(L4::Other(47)), None);
    }

    #[test]
    fn only_arp_rules_match_non_ip_frames() {
        let table = compiled(r#"{"action": "deny"}"#);
        assert_eq!(table.classify(&PacketFields::Arp), None);
        assert_eq!(
            table.classify(&v4("192.0.2.1", "192.0.2.2", L4::Other(47))),
            Some((0, DENY))
        );
        let table = compile(&filter("deny", r#"{"action": "allow", "protocol": "arp"}"#));
        assert_eq!(table.classify(&PacketFields::Arp), Some((0, ALLOW)));
        assert_eq!(table.classify(&PacketFields::OtherNonIp), None);
        assert_eq!(
            table.classify(&v4("192.0.2.1", "192.0.2.2", L4::Other(47))),
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
            table.classify(&v6("2001:db8::1", "2001:db8::2", L4::Other(47))),
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
            ["rule 2 is never reached: rule 1 matches every packet it matches"]
        );
    }

    #[test]
    fn a_class_vector_holds_the_rules_of_the_prefixes_around_it() {
        let table = compiled(
            r#"{"action": "deny", "src": "10.0.0.0/8"}, {"action": "allow", "src": "10.1.0.0/16"},
               {"action": "deny", "dst": "192.0.2.0/24"}"#,
        );
        let entry = |a: usize, b: usize| table.table[TABLE_SRC + (a << 8 | b)];
        assert_eq!(table.vectors[entry(10, 1) as usize], [0b111]);
        assert_eq!(table.vectors[entry(10, 2) as usize], [0b101]);
        assert_eq!(table.vectors[entry(11, 0) as usize], [0b100]);
        assert_eq!(table.no_prefix[0], entry(11, 0));
        // A /24 takes a second-level chunk, leaf-pushed with its /16.
        let top = table.table[TABLE_DST + (192 << 8)];
        assert_ne!(top & CHUNK_FLAG, 0);
        let chunk = (top & !CHUNK_FLAG) as usize;
        assert_eq!(table.vectors[table.table[chunk + 2] as usize], [0b111]);
        assert_eq!(table.vectors[table.table[chunk + 3] as usize], [0b011]);
        assert_eq!(table.chunks, [0, 1]);
    }

    #[test]
    fn ports_map_to_the_vector_of_their_interval() {
        let table = compiled(
            r#"{"action": "allow", "protocol": "tcp", "dport": 22}, {"action": "deny", "dport": "20-30"},
               {"action": "deny", "protocol": "tcp"}"#,
        );
        let dport = |port: usize| &table.vectors[table.table[TABLE_DPORT + port] as usize];
        assert_eq!(dport(22), &[0b111]);
        assert_eq!(dport(21), &[0b110]);
        assert_eq!(dport(31), &[0b100]);
        assert_eq!(table.vectors[table.no_ports[1] as usize], [0b100]);
        // Ports without a protocol narrow it to TCP and UDP.
        let udp = &table.vectors[table.protocols[0][usize::from(IPPROTO_UDP)] as usize];
        assert_eq!(udp, &[0b010]);
        assert_eq!(table.vectors[table.protocols[1][47] as usize], [0]);
    }

    #[test]
    fn numbered_protocols_match_their_number_only() {
        let table = compiled(
            r#"{"action": "deny", "protocol": 47}, {"action": "deny", "protocol": "sctp"},
               {"action": "allow", "protocol": "ah"}, {"action": "allow", "protocol": 0}"#,
        );
        let v4 = |l4| table.classify(&v4("192.0.2.1", "192.0.2.2", l4));
        let v6 = |l4| table.classify(&v6("2001:db8::1", "2001:db8::2", l4));
        assert_eq!(v4(L4::Other(47)), Some((0, DENY)));
        assert_eq!(v6(L4::Other(47)), Some((0, DENY)));
        assert_eq!(v4(L4::Other(132)), Some((1, DENY)));
        assert_eq!(v4(L4::Other(51)), Some((2, ALLOW)));
        assert_eq!(v4(L4::Other(0)), Some((3, ALLOW)));
        // IPv6 walks AH; 0 is an IPv6 packet whose headers were not walked.
        assert_eq!(v6(L4::Other(51)), None);
        assert_eq!(v6(L4::Other(0)), None);
        assert_eq!(v4(L4::Other(50)), None);
        assert_eq!(v4(udp(1, 2)), None);
    }

    #[test]
    fn rate_limited_rules_are_flagged_and_listed() {
        let table = compiled(
            r#"{"action": "allow", "protocol": "tcp", "dport": 22, "rate_limit": {"pps": 10, "burst": 20}},
               {"action": "deny", "protocol": "udp"}"#,
        );
        assert_eq!(
            table.rule_limits,
            [(
                0,
                Limit {
                    pps: 10,
                    burst: 20,
                    ban: None
                }
            )]
        );
        assert_eq!(table.rule_actions, [ALLOW, DENY]);
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
                "rule 1 (\"ssh\") is never reached: rule 0 matches every packet it matches",
                "rule 3 is never reached: rule 2 matches every packet it matches",
            ]
        );
        assert!(compiled(
            r#"{"action": "deny", "src": "10.1.0.0/16"}, {"action": "deny", "src": "10.0.0.0/8"}"#
        )
        .warnings
        .is_empty());
    }

    /// Sets the cross-producting compiler refused: interleaved src-only and
    /// dst-only rules, and sport and dport rules before a catch-all.
    fn shapes_that_multiplied() -> [Vec<String>; 2] {
        let addresses = (0..600u32)
            .flat_map(|i| {
                let (a, b) = (i / 256, i % 256);
                [
                    format!(r#"{{"action": "deny", "src": "10.{a}.{b}.0/24"}}"#),
                    format!(r#"{{"action": "allow", "dst": "172.16.{a}.{b}"}}"#),
                ]
            })
            .collect();
        let ports = (1..=600)
            .flat_map(|port| {
                [
                    format!(r#"{{"action": "allow", "protocol": "tcp", "sport": {port}}}"#),
                    format!(r#"{{"action": "deny", "protocol": "tcp", "dport": {port}}}"#),
                ]
            })
            .chain([r#"{"action": "deny"}"#.to_owned()])
            .collect();
        [addresses, ports]
    }

    #[test]
    fn sets_that_multiplied_compile_and_classify_as_the_rules_say() {
        for rules in shapes_that_multiplied() {
            let filter = filter("allow", &rules.join(","));
            let table = compile(&filter);
            let mut rng = Rng(3);
            let packets = [
                v4("10.1.7.9", "172.16.2.7", tcp(5, 7)),
                v4("10.9.0.1", "172.16.2.7", tcp(600, 601)),
                v4("10.2.87.1", "172.16.0.1", udp(1, 2)),
            ];
            for packet in packets
                .into_iter()
                .chain(std::iter::repeat_with(|| random_packet(&mut rng)).take(500))
            {
                assert_eq!(
                    table.classify(&packet),
                    first_match(&filter, &packet),
                    "{packet:?}"
                );
            }
        }
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
        let protocol = rng.pick(&[
            Any,
            Any,
            Any,
            Tcp,
            Tcp,
            Udp,
            Icmp,
            Icmpv6,
            Arp,
            Number(47),
            Number(0),
            Number(51),
        ]);
        let family = protocol.family().unwrap_or_else(|| random_family(rng));
        let addressed = protocol != Arp;
        let action = rng.pick(&[Action::Allow, Action::Deny]);
        Rule {
            id: String::new(),
            action,
            name: None,
            src: (addressed && rng.chance(50)).then(|| random_prefix(rng, family)),
            dst: (addressed && rng.chance(40)).then(|| random_prefix(rng, family)),
            protocol,
            sport: (protocol.has_ports() && rng.chance(20)).then(|| random_range(rng)),
            dport: (protocol.has_ports() && rng.chance(40)).then(|| random_range(rng)),
            rate_limit: (action == Action::Allow && rng.chance(20)).then_some(Limit {
                pps: 5,
                burst: 5,
                ban: None,
            }),
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
            _ => L4::Other(rng.pick(&[47, 0, 51, 50])),
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
            let table = compile(&rules);
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
            id: String::new(),
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
            id: String::new(),
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
        let table = compile(&filter);
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
            "10000 deny /24 + 2 allow: {} vectors in {took:?}",
            table.vectors.len()
        );
        // One per blocked network, and 6 more: no source prefix (the two
        // services), every rule, the denies (no dport), each service's
        // port, and none (ARP's).
        assert_eq!(table.vectors.len(), 10_000 + 6);
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
            "2 allow + 10000 deny /24: {} vectors in {took:?}",
            table.vectors.len()
        );
        // The order of the rules does not change which vectors there are.
        assert_eq!(table.vectors.len(), 10_000 + 6);
        assert!(took < time_limit(), "{took:?}");
    }
}
