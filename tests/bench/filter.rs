//! Section 2: the per-packet cost of xdp_mesh_filter with 1 to 10,000 CIDR or
//! port rules, and 10,000 CIDRs with one UDP port rule, on a packet that
//! misses them all and on one that hits the middle rule, and with its
//! limiters on; next to the empty XDP program and to xdp-filter holding as
//! many exact rules, all in one interleaved run.

use std::fmt;
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use libbpf_rs::{Map, MapCore, MapFlags, MapHandle, Object};
use libbpf_sys::{XDP_DROP, XDP_PASS};
use meshbpf::programs::xdp_mesh_filter::skel::types::filter_limits;
use meshbpf::programs::xdp_mesh_filter::{self, XdpMeshFilterSkel};
use meshbpf::rules::{compile, filter};

use crate::frames::{self, Frame, SRC4};
use crate::packet::{self, Case, Samples, Subject, Timed};
use crate::raw;
use crate::rulesets::{self, COUNTS};
use crate::{stats, Config};

/// What a program holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleSet {
    None,
    RateLimit,
    SynFlood,
    /// xdp_mesh_filter: one /24 per rule; xdp-filter: one address per rule.
    Cidr(usize),
    /// One TCP destination port per rule.
    Ports(usize),
    /// As many CIDR rules, then one rule denying a UDP destination port.
    Mixed(usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Program {
    Floor,
    Mesh,
    XdpFilter,
    /// A single lookup in one of the filters' maps (see [`lookups`]).
    Lookup(Table),
}

/// The maps whose single lookups explain the filters' costs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    /// xdp_mesh_filter's table of the active rule set (an inner array map),
    /// at the first level of the source address's multibit trie: every
    /// table and vector lookup the program makes is one like it.
    MeshTable,
    /// xdp-filter's per-CPU hash of addresses, probed for dst, then src.
    FilterIpv4,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// No rule applies to it.
    Plain,
    /// Near the rules, in none of them: the default allows it.
    Miss,
    /// Matches the middle rule, which drops it.
    Hit,
}

/// A packet to time a program on, and the verdict it must get.
pub struct Run {
    pub packet: Packet,
    pub frame: Frame,
    pub verdict: u32,
}

/// A loaded program with its rules, and what to time it on.
struct Scenario {
    program: Program,
    rules: RuleSet,
    fd: OwnedFd,
    runs: Vec<Run>,
}

struct Row {
    program: Program,
    rules: RuleSet,
    packet: Packet,
    frame: String,
    verdict: u32,
    samples: Samples,
}

pub struct Results {
    /// The first row is the floor.
    rows: Vec<Row>,
    rounds: usize,
    repeat: u32,
    xdp_filter_missing: bool,
}

/// xdp-filter's rule flags (xdp-filter/common_kern_user.h): a map value
/// holds them in its low bits and counts hits from bit COUNTER_SHIFT up.
pub const MAP_FLAG_SRC: u64 = 1 << 0;
const MAP_FLAG_DST: u64 = 1 << 1;
const MAP_FLAG_TCP: u64 = 1 << 2;
const MAP_FLAG_UDP: u64 = 1 << 3;
const COUNTER_SHIFT: u32 = 6;

pub fn measure(config: &Config) -> Results {
    let scenarios = scenarios(config);
    let programs: Vec<Timed> = scenarios.iter().map(Scenario::timed).collect();
    let mut samples = packet::sample_each(&programs, config.filter_rounds, config).into_iter();
    let rows = scenarios
        .iter()
        .flat_map(|s| s.runs.iter().map(move |run| (s, run)))
        .map(|(scenario, run)| Row {
            program: scenario.program,
            rules: scenario.rules,
            packet: run.packet,
            frame: run.frame.name.clone(),
            verdict: run.verdict,
            samples: samples.next().expect("one sample set per case"),
        })
        .collect();
    Results {
        rows,
        rounds: config.filter_rounds,
        repeat: config.repeat,
        xdp_filter_missing: config.xdp_filter_object.is_none(),
    }
}

/// Every program loaded and checked, in table order: the floor, the
/// limiters, then each rule count with both filters side by side.
fn scenarios(config: &Config) -> Vec<Scenario> {
    let floor = Scenario {
        program: Program::Floor,
        rules: RuleSet::None,
        fd: raw::empty_program(),
        runs: vec![Run::plain_udp()],
    };
    let mut all = vec![floor];
    for rules in [RuleSet::None, RuleSet::RateLimit, RuleSet::SynFlood] {
        all.push(mesh(rules));
    }
    for rules in counted() {
        all.push(mesh(rules));
        // xdp-filter's port rules are an array indexed by port, whose cost
        // cannot depend on how many are set: one count is enough.
        let compared =
            matches!(rules, RuleSet::Cidr(_) | RuleSet::Mixed(_)) || rules.count() == MOST;
        match &config.xdp_filter_object {
            Some(object) if compared => all.push(xdp_filter(object, rules)),
            _ => {}
        }
    }
    all.extend(lookups(config));
    all
}

/// The largest rule count, where the comparison with xdp-filter matters.
const MOST: usize = COUNTS[COUNTS.len() - 1];

/// Every CIDR rule set, then every port rule set, by count; then the
/// largest CIDR set with a port rule.
fn counted() -> impl Iterator<Item = RuleSet> {
    let cidr = COUNTS.map(RuleSet::Cidr);
    let ports = COUNTS.map(RuleSet::Ports);
    cidr.into_iter().chain(ports).chain([RuleSet::Mixed(MOST)])
}

impl Run {
    fn new(packet: Packet, frame: Frame) -> Self {
        let verdict = if packet == Packet::Hit {
            XDP_DROP
        } else {
            XDP_PASS
        };
        Run {
            packet,
            frame,
            verdict,
        }
    }

    fn plain_udp() -> Self {
        Run::new(Packet::Plain, frames::ipv4_udp_from("IPv4 UDP", SRC4))
    }

    fn plain_syn() -> Self {
        Run::new(Packet::Plain, frames::ipv4_tcp_syn_to("IPv4 TCP SYN", 443))
    }

    /// An IPv4 UDP packet from `src`, which a hit must see dropped.
    pub fn from(packet: Packet, src: [u8; 4]) -> Self {
        let label = format!("IPv4 UDP from {}", Ipv4Addr::from(src));
        Run::new(packet, frames::ipv4_udp_from(&label, src))
    }

    fn to_port(packet: Packet, dport: u16) -> Self {
        let label = format!("IPv4 TCP to port {dport}");
        Run::new(packet, frames::ipv4_tcp_syn_to(&label, dport))
    }

    /// The same packets for both filters.
    fn all_for(rules: RuleSet) -> Vec<Run> {
        match rules {
            RuleSet::None => vec![Run::plain_udp(), Run::plain_syn()],
            RuleSet::RateLimit => vec![Run::plain_udp()],
            RuleSet::SynFlood => vec![Run::plain_syn()],
            RuleSet::Cidr(n) | RuleSet::Mixed(n) => vec![
                Run::from(Packet::Miss, rulesets::miss_source(n)),
                Run::from(Packet::Hit, rulesets::hit_source(n)),
            ],
            RuleSet::Ports(n) => vec![
                Run::to_port(Packet::Miss, rulesets::miss_port(n)),
                Run::to_port(Packet::Hit, rulesets::hit_port(n)),
            ],
        }
    }
}

impl RuleSet {
    fn json(self) -> String {
        match self {
            RuleSet::None => rulesets::no_rules(),
            RuleSet::RateLimit => rulesets::limiter_only("rate_limit"),
            RuleSet::SynFlood => rulesets::limiter_only("syn_flood"),
            RuleSet::Cidr(n) => rulesets::cidr_rules(n),
            RuleSet::Ports(n) => rulesets::port_rules(n),
            RuleSet::Mixed(n) => rulesets::mixed_rules(n),
        }
    }

    fn count(self) -> usize {
        match self {
            RuleSet::Cidr(n) | RuleSet::Ports(n) | RuleSet::Mixed(n) => n,
            _ => 0,
        }
    }

    fn has_limiter(self) -> bool {
        matches!(self, RuleSet::RateLimit | RuleSet::SynFlood)
    }

    /// How it reads in `program`'s row.
    fn describe(self, program: Program) -> String {
        let n = stats::thousands(self.count());
        let s = if self.count() == 1 { "" } else { "s" };
        let admit_all = "10⁹ pps, burst 10⁹";
        match (self, program) {
            (_, Program::Floor) => "none".into(),
            (RuleSet::None, _) => "no rules".into(),
            (RuleSet::RateLimit, _) => format!("no rules; rate_limit {admit_all}"),
            (RuleSet::SynFlood, _) => format!("no rules; syn_flood {admit_all}"),
            (RuleSet::Cidr(_), Program::XdpFilter | Program::Lookup(Table::FilterIpv4)) => {
                format!("{n} exact IPv4 source{s}")
            }
            (RuleSet::Cidr(_), _) => format!("{n} CIDR rule{s} (deny src /24)"),
            (RuleSet::Ports(_), _) => format!("{n} port rule{s} (deny tcp dport)"),
            (RuleSet::Mixed(_), Program::XdpFilter) => {
                format!("{n} exact IPv4 sources + 1 UDP port")
            }
            (RuleSet::Mixed(_), _) => {
                format!("{n} CIDR rules (deny src /24) + 1 UDP port rule")
            }
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Program::Floor => "empty XDP program (floor)",
            Program::Mesh => "xdp_mesh_filter",
            Program::XdpFilter => "xdp-filter",
            Program::Lookup(Table::MeshTable) => {
                "one lookup in xdp_mesh_filter's table (inner array, first trie level)"
            }
            Program::Lookup(Table::FilterIpv4) => {
                "one lookup in xdp-filter's filter_ipv4 (per-CPU hash)"
            }
        })
    }
}

impl Scenario {
    fn timed(&self) -> Timed<'_> {
        Timed {
            name: self.label(),
            fd: self.fd.as_fd(),
            runs: self.runs.iter().map(|r| (&r.frame, r.verdict)).collect(),
        }
    }

    fn label(&self) -> String {
        match self.program {
            Program::Floor => self.program.to_string(),
            _ => format!("{}, {}", self.program, self.rules.describe(self.program)),
        }
    }
}

/// Loads xdp_mesh_filter, applies `rules` (a rules file's JSON) the way
/// `meshbpf filter apply` does, and hands it to `f`. Whatever programs `f`
/// keeps hold the maps they use once the skeleton is gone.
pub fn with_mesh<T>(rules: &str, f: impl FnOnce(&XdpMeshFilterSkel<'_>) -> T) -> T {
    let mut object = MaybeUninit::uninit();
    let skel = xdp_mesh_filter::load(&mut object, None).expect("loading xdp_mesh_filter");
    let parsed = filter::parse(rules).expect("parsing a bench rule set");
    let compiled = compile::compile(&parsed);
    xdp_mesh_filter::apply(
        &xdp_mesh_filter::FilterMaps::of_skeleton(&skel),
        &parsed,
        &compiled,
        xdp_mesh_filter::Publish::Now,
    )
    .expect("applying a bench rule set");
    f(&skel)
}

/// The filter's program, as an fd that keeps it and its maps loaded once
/// the skeleton is gone.
pub fn mesh_fd(skel: &XdpMeshFilterSkel<'_>) -> OwnedFd {
    let prog = &skel.progs.xdp_mesh_filter;
    prog.as_fd().try_clone_to_owned().expect("dup")
}

/// xdp_mesh_filter with `rules`, each packet checked once.
fn mesh(rules: RuleSet) -> Scenario {
    with_mesh(&rules.json(), |skel| {
        let scenario = Scenario {
            program: Program::Mesh,
            rules,
            fd: mesh_fd(skel),
            runs: Run::all_for(rules),
        };
        for run in &scenario.runs {
            check_mesh(skel, &scenario, run);
        }
        scenario
    })
}

/// One run must end where the row says: in the middle rule's hit counter,
/// or in the default's; with a limiter on, also in the limiter table.
/// Otherwise the bench would time a path the row does not name.
fn check_mesh(skel: &XdpMeshFilterSkel<'_>, scenario: &Scenario, run: &Run) {
    let maps = xdp_mesh_filter::FilterMaps::of_skeleton(skel);
    let middle = (scenario.rules.count() > 0).then(|| rulesets::middle(scenario.rules.count()));
    let landed = || {
        let stats = xdp_mesh_filter::read_stats(&maps).expect("reading filter stats");
        let rules = xdp_mesh_filter::read_rules(&maps).expect("reading rules");
        (
            stats.defaulted.packets,
            middle.map_or(0, |i| rules.rules[i].packets),
            skel.maps.limiters.keys().count() as u64,
        )
    };
    let before = landed();
    let subject = packet::subject(scenario.label(), scenario.fd.as_fd());
    check_run(&subject, run);
    let after = landed();
    let hit = run.packet == Packet::Hit;
    let expected = (
        u64::from(!hit),
        u64::from(hit),
        u64::from(scenario.rules.has_limiter()),
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        expected,
        "{} on {}: (defaulted, middle rule hits, limiter entries) changed unexpectedly",
        subject.name,
        run.frame.name
    );
}

/// One run, whose verdict the test run checks.
pub fn check_run(subject: &Subject<'_>, run: &Run) {
    let case = Case {
        subject,
        frame: &run.frame,
        verdict: run.verdict,
    };
    packet::test_run_ns(&case, 1);
}

/// xdp-filter's complete allow-mode program (every feature compiled in; it
/// drops what its maps name) with as many rules as `rules` has: exact
/// sources for CIDR rules, as xdp-filter has no prefixes.
fn load_xdp_filter(object_path: &Path, rules: RuleSet) -> Object {
    let object = packet::load_without_pins(object_path);
    for (map, keys, flags) in xdp_filter_rules(rules) {
        deny(&object_map(&object, map), &keys, flags);
    }
    object
}

/// The maps, keys and flags of `rules` in xdp-filter's terms; the middle
/// rule is in the first.
fn xdp_filter_rules(rules: RuleSet) -> Vec<(&'static str, Vec<Vec<u8>>, u64)> {
    let sources = |n| {
        (
            "filter_ipv4",
            (0..n).map(|i| rulesets::exact_source(i).to_vec()).collect(),
            MAP_FLAG_SRC,
        )
    };
    match rules {
        RuleSet::Cidr(n) => vec![sources(n)],
        RuleSet::Ports(n) => vec![(
            "filter_ports",
            (0..n).map(|i| port_key(rulesets::port(i))).collect(),
            MAP_FLAG_DST | MAP_FLAG_TCP,
        )],
        RuleSet::Mixed(n) => vec![
            sources(n),
            (
                "filter_ports",
                vec![port_key(rulesets::MIXED_UDP_PORT)],
                MAP_FLAG_DST | MAP_FLAG_UDP,
            ),
        ],
        _ => unreachable!("xdp-filter is only measured with counted rules"),
    }
}

/// xdp-filter with `rules`; each packet checked once, by its verdict and by
/// the hit counter of the middle rule.
fn xdp_filter(object_path: &Path, rules: RuleSet) -> Scenario {
    let object = load_xdp_filter(object_path, rules);
    let (map, keys, _) = xdp_filter_rules(rules).swap_remove(0);
    let map = object_map(&object, map);
    let middle = &keys[rulesets::middle(rules.count())];
    let scenario = Scenario {
        program: Program::XdpFilter,
        rules,
        fd: packet::program_fd(&object),
        runs: Run::all_for(rules),
    };
    for run in &scenario.runs {
        let before = xdp_filter_hits(&map, middle);
        check_run(&packet::subject(scenario.label(), scenario.fd.as_fd()), run);
        let hits = xdp_filter_hits(&map, middle) - before;
        assert_eq!(
            hits,
            u64::from(run.packet == Packet::Hit),
            "xdp-filter on {}: the middle rule counted {hits} hits",
            run.frame.name
        );
    }
    scenario
}

pub fn object_map<'a>(object: &'a Object, name: &str) -> Map<'a> {
    object
        .maps()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("xdp-filter has no map {name}"))
}

/// A port as xdp-filter keys it: the header's big-endian u16, widened as
/// loaded, without a byte swap.
fn port_key(port: u16) -> Vec<u8> {
    u32::from(u16::from_ne_bytes(port.to_be_bytes()))
        .to_ne_bytes()
        .to_vec()
}

/// xdp-filter's maps are per-CPU and it reads the running CPU's copy, so
/// every CPU gets the rule's flags: what `xdp-filter ip`/`port` write.
pub fn deny(map: &Map<'_>, keys: &[Vec<u8>], flags: u64) {
    let cpus = libbpf_rs::num_possible_cpus().expect("counting CPUs");
    let values = vec![flags.to_ne_bytes().to_vec(); cpus];
    for key in keys {
        map.update_percpu(key, &values, MapFlags::ANY)
            .unwrap_or_else(|e| panic!("adding a rule to xdp-filter's {:?}: {e}", map.name()));
    }
}

pub fn xdp_filter_hits(map: &Map<'_>, key: &[u8]) -> u64 {
    let values = map
        .lookup_percpu(key, MapFlags::ANY)
        .expect("reading an xdp-filter rule")
        .expect("the rule is there");
    values
        .iter()
        .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("8-byte values")) >> COUNTER_SHIFT)
        .sum()
}

/// Single lookups in the maps of the largest CIDR rule sets, with the keys
/// the miss and hit packets lead to: what each filter's per-packet cost is
/// made of, apart from parsing and counting.
fn lookups(config: &Config) -> Vec<Scenario> {
    let rules = RuleSet::Cidr(MOST);
    let (miss, hit) = (rulesets::miss_source(MOST), rulesets::hit_source(MOST));
    let mut all = with_mesh(&rules.json(), |skel| {
        let maps = xdp_mesh_filter::FilterMaps::of_skeleton(skel);
        let gen = xdp_mesh_filter::active_generation(&maps).expect("reading the generation");
        let table = active_table(skel, gen);
        [(Packet::Miss, miss), (Packet::Hit, hit)]
            .into_iter()
            .map(|(packet, src)| {
                lookup(
                    Table::MeshTable,
                    &table,
                    packet,
                    src,
                    first_level_key(src),
                    true,
                )
            })
            .collect::<Vec<_>>()
    });
    if let Some(path) = &config.xdp_filter_object {
        let object = load_xdp_filter(path, rules);
        let map = object_map(&object, "filter_ipv4");
        for (packet, src) in [(Packet::Miss, miss), (Packet::Hit, hit)] {
            let found = packet == Packet::Hit;
            all.push(lookup(
                Table::FilterIpv4,
                &map,
                packet,
                src,
                src.to_vec(),
                found,
            ));
        }
    }
    all
}

/// The inner map of the generation's table, as the program finds it.
fn active_table(skel: &XdpMeshFilterSkel<'_>, gen: u8) -> MapHandle {
    let id = skel
        .maps
        .tables
        .lookup(&u32::from(gen).to_ne_bytes(), MapFlags::ANY)
        .expect("reading the tables slot")
        .expect("the active generation has a table");
    let id = u32::from_ne_bytes(id[..4].try_into().expect("a map id"));
    MapHandle::from_map_id(id).expect("opening the table by id")
}

/// The table index of `addr`'s first level in the source trie.
fn first_level_key(addr: [u8; 4]) -> Vec<u8> {
    let first = filter_limits::FILTER_TABLE_SRC.0 + (u32::from(addr[0]) << 8 | u32::from(addr[1]));
    first.to_ne_bytes().to_vec()
}

/// A program that looks `key` up in `map`, after checking that the key is
/// there or not, as `found` says.
fn lookup(
    table: Table,
    map: &dyn MapCore,
    packet: Packet,
    src: [u8; 4],
    key: Vec<u8>,
    found: bool,
) -> Scenario {
    let there = if map.map_type().is_percpu() {
        map.lookup_percpu(&key, MapFlags::ANY).map(|v| v.is_some())
    } else {
        map.lookup(&key, MapFlags::ANY).map(|v| v.is_some())
    };
    let program = Program::Lookup(table);
    assert_eq!(
        there.expect("looking a key up"),
        found,
        "{program}: the key for {} is not where the row says",
        Ipv4Addr::from(src)
    );
    let mut frame = Run::plain_udp().frame;
    frame.name = format!(
        "none (key for {}, a {})",
        Ipv4Addr::from(src),
        packet.name()
    );
    Scenario {
        program,
        rules: RuleSet::Cidr(MOST),
        fd: raw::lookup_program(map.as_fd(), &key),
        // The program passes every frame: it only looks the key up.
        runs: vec![Run {
            packet,
            frame,
            verdict: XDP_PASS,
        }],
    }
}

impl Packet {
    pub fn name(self) -> &'static str {
        match self {
            Packet::Plain => "plain",
            Packet::Miss => "miss",
            Packet::Hit => "hit",
        }
    }
}

impl Results {
    fn find(&self, program: Program, rules: RuleSet, packet: Packet) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.program == program && r.rules == rules && r.packet == packet)
    }

    pub fn markdown(&self) -> String {
        let floor = &self.rows[0].samples;
        let rows = self.rows.iter().map(|row| {
            let cells = vec![
                row.rules.describe(row.program),
                row.program.to_string(),
                row.frame.clone(),
                verdict_name(row.verdict).into(),
            ];
            (cells, &row.samples)
        });
        let table = packet::timing_table(&["rules", "program", "packet", "verdict"], rows, floor);
        format!(
            "## 2. Filtering cost per packet (BPF_PROG_TEST_RUN, {repeat} runs per sample)\n\n\
Measured like section 1 ({rounds} rounds), in one run of its own whose floor is the first row. Each program is loaded once per rule \
set and filled the way its own tool does: xdp_mesh_filter through `xdp_mesh_filter::apply` (what `meshbpf filter \
apply` runs), xdp-filter (`xdpfilt_alw_all.o`: allow mode, every feature compiled in, drops what its maps name) by \
writing its per-CPU `filter_ipv4` or `filter_ports` entries on every CPU, as `xdp-filter ip`/`port` do. \
CIDR rule i denies 10.(i / 128).(2 × (i % 128)).0/24; xdp-filter, which has no prefixes, denies the exact \
address .1 of each of those /24s instead. Port rule i denies TCP destination port {first_port} + 2i in both. \
The mixed set adds, after its CIDR rules, one rule denying UDP destination port {mixed_port} (xdp-filter: that port \
in filter_ports, UDP); its packets are the CIDR set's, UDP to port 53. \
A hit comes from (or goes to) the middle rule; a miss from the odd /24 (port) next to it, which no rule holds, so \
the default allows it. Every frame is 64 B. Before timing, one run per packet must return the row's verdict and \
land in the middle rule's hit counter (hit) or in xdp_mesh_filter's `defaulted` counter (miss); with a limiter \
on, it must also create the source's limiter entry.{note}\n\n{table}{comparison}{breakdown}",
            repeat = self.repeat,
            rounds = self.rounds,
            first_port = rulesets::port(0),
            mixed_port = rulesets::MIXED_UDP_PORT,
            note = if self.xdp_filter_missing {
                " xdp-tools is not installed, so xdp-filter's rows are missing from this run."
            } else {
                ""
            },
            comparison = self.comparison(),
            breakdown = self.breakdown(),
        )
    }

    /// The single-lookup rows read against the paths the filters take.
    fn breakdown(&self) -> String {
        let floor = self.rows[0].samples.test_run().median;
        let over_floor = |table, packet| {
            self.find(Program::Lookup(table), RuleSet::Cidr(MOST), packet)
                .map(|row| stats::ns(row.samples.test_run().median - floor))
                .unwrap_or_else(|| "n/a".into())
        };
        format!(
            "\nWhere the time goes at {n} rules, from the single-lookup rows (medians over the floor): one lookup in \
xdp_mesh_filter's table (an inner array map, so a call to the array's lookup, not inlined) costs {lpm_miss} with the \
miss's key and {lpm_hit} with the hit's; one lookup in xdp-filter's filter_ipv4 {ipv4_miss} (miss) and {ipv4_hit} \
(hit). For these rule sets xdp_mesh_filter looks the source up in two levels of its table (the /16, then the /24), \
then two vectors (the source's and the protocol's; no rule names a destination or a port, so those are not looked \
up) and reads their first words. xdp-filter with every feature looks both MAC addresses up in its filter_ethernet \
hash first, then does two filter_ipv4 lookups (destination, then source), and on a miss two lookups in its port \
array.\n",
            n = stats::thousands(MOST),
            lpm_miss = over_floor(Table::MeshTable, Packet::Miss),
            lpm_hit = over_floor(Table::MeshTable, Packet::Hit),
            ipv4_miss = over_floor(Table::FilterIpv4, Packet::Miss),
            ipv4_hit = over_floor(Table::FilterIpv4, Packet::Hit),
        )
    }

    /// xdp_mesh_filter's median over xdp-filter's at equal rule counts.
    fn comparison(&self) -> String {
        let mut rows = Vec::new();
        for rules in counted() {
            for packet in [Packet::Miss, Packet::Hit] {
                let (Some(mesh), Some(other)) = (
                    self.find(Program::Mesh, rules, packet),
                    self.find(Program::XdpFilter, rules, packet),
                ) else {
                    continue;
                };
                let (m, o) = (&mesh.samples, &other.samples);
                rows.push(vec![
                    rules.describe(Program::Mesh),
                    rules.describe(Program::XdpFilter),
                    packet.name().into(),
                    stats::ns(m.test_run().median),
                    stats::ns(o.test_run().median),
                    m.test_run().versus(&o.test_run(), stats::ns)[1].clone(),
                    m.bpftool().versus(&o.bpftool(), stats::ns)[1].clone(),
                ]);
            }
        }
        if rows.is_empty() {
            return String::new();
        }
        format!(
            "\nxdp_mesh_filter against xdp-filter at equal rule counts (medians of the rows above; ratio = \
xdp_mesh_filter ÷ xdp-filter, below ×1.00 means xdp_mesh_filter is cheaper):\n\n{}",
            stats::table(
                &[
                    "xdp_mesh_filter rules",
                    "xdp-filter rules",
                    "packet",
                    "xdp_mesh_filter",
                    "xdp-filter",
                    "ratio",
                    "ratio, bpftool prog run",
                ],
                &rows
            )
        )
    }
}

pub fn verdict_name(verdict: u32) -> &'static str {
    match verdict {
        XDP_PASS => "XDP_PASS",
        XDP_DROP => "XDP_DROP",
        _ => "other",
    }
}
