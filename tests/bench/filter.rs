//! Section 2: the per-packet cost of xdp_mesh_filter with 1 to 10,000 CIDR or
//! port rules, on a packet that misses them all and on one that hits the
//! middle rule, and with its limiters on; next to the empty XDP program and
//! to xdp-filter holding as many exact rules, all in one interleaved run.

use std::fmt;
use std::mem::{self, MaybeUninit};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::slice;

use libbpf_rs::{Map, MapCore, MapFlags, Object};
use libbpf_sys::{XDP_DROP, XDP_PASS};
use meshbpf::programs::xdp_mesh_filter::skel::types::{filter_family, filter_prefix_key};
use meshbpf::programs::xdp_mesh_filter::{self, XdpMeshFilterSkel};
use meshbpf::rules::{compile, filter};

use crate::frames::{self, Frame, SRC4};
use crate::packet::{self, Case, Samples, Subject};
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
    /// xdp_mesh_filter's exact-match hash of source prefixes, which
    /// the rule sets here (one prefix length, /24) are looked up in.
    SrcPrefixes,
    /// xdp-filter's per-CPU hash of addresses, probed for dst, then src.
    FilterIpv4,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Packet {
    /// No rule applies to it.
    Plain,
    /// Near the rules, in none of them: the default allows it.
    Miss,
    /// Matches the middle rule, which drops it.
    Hit,
}

/// A packet to time a program on, and the verdict it must get.
struct Run {
    packet: Packet,
    frame: Frame,
    verdict: u32,
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
const MAP_FLAG_SRC: u64 = 1 << 0;
const MAP_FLAG_DST: u64 = 1 << 1;
const MAP_FLAG_TCP: u64 = 1 << 2;
const COUNTER_SHIFT: u32 = 6;

pub fn measure(config: &Config) -> Results {
    let scenarios = scenarios(config);
    let subjects: Vec<Subject> = scenarios
        .iter()
        .map(|s| packet::subject(s.label(), s.fd.as_fd()))
        .collect();
    let cases: Vec<Case> = scenarios
        .iter()
        .zip(&subjects)
        .flat_map(|(scenario, subject)| {
            scenario.runs.iter().map(move |run| Case {
                subject,
                frame: &run.frame,
                verdict: run.verdict,
            })
        })
        .collect();
    let mut samples = packet::sample(&cases, config.filter_rounds, config).into_iter();
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
        let compared = matches!(rules, RuleSet::Cidr(_)) || rules.count() == MOST;
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

/// Every CIDR rule set, then every port rule set, by count.
fn counted() -> impl Iterator<Item = RuleSet> {
    let cidr = COUNTS.map(RuleSet::Cidr);
    let ports = COUNTS.map(RuleSet::Ports);
    cidr.into_iter().chain(ports)
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

    fn from(packet: Packet, src: [u8; 4]) -> Self {
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
            RuleSet::Cidr(n) => vec![
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
        }
    }

    fn count(self) -> usize {
        match self {
            RuleSet::Cidr(n) | RuleSet::Ports(n) => n,
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
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Program::Floor => "empty XDP program (floor)",
            Program::Mesh => "xdp_mesh_filter",
            Program::XdpFilter => "xdp-filter",
            Program::Lookup(Table::SrcPrefixes) => {
                "one probe of xdp_mesh_filter's src_exact (prefix hash, /24)"
            }
            Program::Lookup(Table::FilterIpv4) => {
                "one lookup in xdp-filter's filter_ipv4 (per-CPU hash)"
            }
        })
    }
}

impl Scenario {
    fn label(&self) -> String {
        match self.program {
            Program::Floor => self.program.to_string(),
            _ => format!("{}, {}", self.program, self.rules.describe(self.program)),
        }
    }
}

/// Loads xdp_mesh_filter, applies `rules` the way `meshbpf filter apply`
/// does, and hands it to `f`. Whatever programs `f` keeps hold the maps they
/// use once the skeleton is gone.
fn with_mesh<T>(rules: RuleSet, f: impl FnOnce(&XdpMeshFilterSkel<'_>) -> T) -> T {
    let mut object = MaybeUninit::uninit();
    let skel = xdp_mesh_filter::load(&mut object, None).expect("loading xdp_mesh_filter");
    let parsed = filter::parse(&rules.json()).expect("parsing a bench rule set");
    let compiled = compile::compile(&parsed).expect("compiling a bench rule set");
    xdp_mesh_filter::apply(
        &xdp_mesh_filter::FilterMaps::of_skeleton(&skel),
        &parsed,
        &compiled,
    )
    .expect("applying a bench rule set");
    f(&skel)
}

/// xdp_mesh_filter with `rules`, each packet checked once.
fn mesh(rules: RuleSet) -> Scenario {
    with_mesh(rules, |skel| {
        let scenario = Scenario {
            program: Program::Mesh,
            rules,
            fd: skel
                .progs
                .xdp_mesh_filter
                .as_fd()
                .try_clone_to_owned()
                .expect("dup"),
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
fn check_run(subject: &Subject<'_>, run: &Run) {
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
    let (map, keys, flags) = xdp_filter_rules(rules);
    deny(&object_map(&object, map), &keys, flags);
    object
}

/// The map, keys and flags of `rules` in xdp-filter's terms.
fn xdp_filter_rules(rules: RuleSet) -> (&'static str, Vec<Vec<u8>>, u64) {
    match rules {
        RuleSet::Cidr(n) => (
            "filter_ipv4",
            (0..n).map(|i| rulesets::exact_source(i).to_vec()).collect(),
            MAP_FLAG_SRC,
        ),
        RuleSet::Ports(n) => (
            "filter_ports",
            (0..n).map(|i| port_key(rulesets::port(i))).collect(),
            MAP_FLAG_DST | MAP_FLAG_TCP,
        ),
        _ => unreachable!("xdp-filter is only measured with counted rules"),
    }
}

/// xdp-filter with `rules`; each packet checked once, by its verdict and by
/// the hit counter of the middle rule.
fn xdp_filter(object_path: &Path, rules: RuleSet) -> Scenario {
    let object = load_xdp_filter(object_path, rules);
    let (map, keys, _) = xdp_filter_rules(rules);
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

fn object_map<'a>(object: &'a Object, name: &str) -> Map<'a> {
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
fn deny(map: &Map<'_>, keys: &[Vec<u8>], flags: u64) {
    let cpus = libbpf_rs::num_possible_cpus().expect("counting CPUs");
    let values = vec![flags.to_ne_bytes().to_vec(); cpus];
    for key in keys {
        map.update_percpu(key, &values, MapFlags::ANY)
            .unwrap_or_else(|e| panic!("adding a rule to xdp-filter's {:?}: {e}", map.name()));
    }
}

fn xdp_filter_hits(map: &Map<'_>, key: &[u8]) -> u64 {
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
    let mut all = with_mesh(rules, |skel| {
        let maps = xdp_mesh_filter::FilterMaps::of_skeleton(skel);
        let gen = xdp_mesh_filter::active_generation(&maps).expect("reading the generation");
        let tries = &skel.maps.src_exact;
        vec![
            lookup(
                Table::SrcPrefixes,
                tries,
                Packet::Miss,
                miss,
                prefix_key(gen, miss),
            ),
            lookup(
                Table::SrcPrefixes,
                tries,
                Packet::Hit,
                hit,
                prefix_key(gen, hit),
            ),
        ]
    });
    if let Some(path) = &config.xdp_filter_object {
        let object = load_xdp_filter(path, rules);
        let map = object_map(&object, "filter_ipv4");
        for (packet, src) in [(Packet::Miss, miss), (Packet::Hit, hit)] {
            all.push(lookup(Table::FilterIpv4, &map, packet, src, src.to_vec()));
        }
    }
    all
}

/// A program that looks `key` up in `map`, after checking that the key is
/// there (hit) or not (miss) as the row says.
fn lookup(table: Table, map: &dyn MapCore, packet: Packet, src: [u8; 4], key: Vec<u8>) -> Scenario {
    let found = if map.map_type().is_percpu() {
        map.lookup_percpu(&key, MapFlags::ANY).map(|v| v.is_some())
    } else {
        map.lookup(&key, MapFlags::ANY).map(|v| v.is_some())
    };
    let program = Program::Lookup(table);
    assert_eq!(
        found.expect("looking a key up"),
        packet == Packet::Hit,
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

/// filter_prefix_key for an IPv4 address: the generation and family bytes
/// count towards the prefix, then the whole address.
/// The exact-match key the program probes for `addr` with the rule sets'
/// one prefix length, /24: the address masked, the length in the key.
fn prefix_key(gen: u8, addr: [u8; 4]) -> Vec<u8> {
    key_bytes(|key: &mut filter_prefix_key| {
        key.prefixlen = 16 + 24;
        key.r#gen = gen;
        key.family = filter_family::FILTER_IPV4.0 as u8;
        key.addr[..3].copy_from_slice(&addr[..3]);
    })
}

/// A map key's bytes, zeroed first: the kernel compares whole keys, padding
/// included.
fn key_bytes<T: Copy>(fill: impl FnOnce(&mut T)) -> Vec<u8> {
    // SAFETY: T is a generated #[repr(C)] struct of integers and byte
    // arrays, for which all zeros is a value.
    let mut key: T = unsafe { mem::zeroed() };
    fill(&mut key);
    // SAFETY: zeroed() initialized every byte, padding included, and field
    // writes leave padding alone.
    unsafe { slice::from_raw_parts((&key as *const T).cast::<u8>(), mem::size_of::<T>()) }.to_vec()
}

impl Packet {
    fn name(self) -> &'static str {
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
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let mut cells = vec![
                    row.rules.describe(row.program),
                    row.program.to_string(),
                    row.frame.clone(),
                    verdict_name(row.verdict).into(),
                ];
                cells.extend(row.samples.cells(floor));
                cells
            })
            .collect();
        let headers = [
            &["rules", "program", "packet", "verdict"][..],
            &packet::TIMING_HEADERS,
        ]
        .concat();
        format!(
            "## 2. Filtering cost per packet (BPF_PROG_TEST_RUN, {repeat} runs per sample)\n\n\
Measured like section 1 ({rounds} rounds), in one run of its own whose floor is the first row. Each program is loaded once per rule \
set and filled the way its own tool does: xdp_mesh_filter through `xdp_mesh_filter::apply` (what `meshbpf filter \
apply` runs), xdp-filter (`xdpfilt_alw_all.o`: allow mode, every feature compiled in, drops what its maps name) by \
writing its per-CPU `filter_ipv4` or `filter_ports` entries on every CPU, as `xdp-filter ip`/`port` do. \
CIDR rule i denies 10.(i / 128).(2 × (i % 128)).0/24; xdp-filter, which has no prefixes, denies the exact \
address .1 of each of those /24s instead. Port rule i denies TCP destination port {first_port} + 2i in both. \
A hit comes from (or goes to) the middle rule; a miss from the odd /24 (port) next to it, which no rule holds, so \
the default allows it. Every frame is 64 B. Before timing, one run per packet must return the row's verdict and \
land in the middle rule's hit counter (hit) or in xdp_mesh_filter's `defaulted` counter (miss); with a limiter \
on, it must also create the source's limiter entry.{note}\n\n{table}{comparison}{breakdown}",
            repeat = self.repeat,
            rounds = self.rounds,
            first_port = rulesets::port(0),
            note = if self.xdp_filter_missing {
                " xdp-tools is not installed, so xdp-filter's rows are missing from this run."
            } else {
                ""
            },
            table = stats::table(&headers, &rows),
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
xdp_mesh_filter's exact-match hash of source prefixes (all rules are /24, so one probe) costs {lpm_miss} for the \
miss's source and {lpm_hit} for the hit's; one lookup in xdp-filter's filter_ipv4 {ipv4_miss} (miss) and {ipv4_hit} \
(hit). These rule sets only have source-only decisions, which the prefix entry carries (class 0's are in the \
config), so xdp_mesh_filter does that one probe and no decisions lookup, hit or miss. xdp-filter with every feature \
looks both MAC addresses up in its filter_ethernet hash first, then does two filter_ipv4 lookups (destination, then \
source), and on a miss two lookups in its port array.\n",
            n = stats::thousands(MOST),
            lpm_miss = over_floor(Table::SrcPrefixes, Packet::Miss),
            lpm_hit = over_floor(Table::SrcPrefixes, Packet::Hit),
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

fn verdict_name(verdict: u32) -> &'static str {
    match verdict {
        XDP_PASS => "XDP_PASS",
        XDP_DROP => "XDP_DROP",
        _ => "other",
    }
}
