//! xdp_mesh_filter against a separately written reference (tests/common/reference.rs)
//! on the shared ClassBench sets (../shared/classbench), converted to the rules
//! JSON in file order (tests/common/classbench.rs).
//!
//! For each set meshbpf compiles today, the real program is loaded and filled
//! by the real `apply`, then runs under BPF_PROG_TEST_RUN every trace header
//! of the set (plain, VLAN and QinQ tagged, as a first and a later fragment,
//! with its TCP/UDP header cut), plus packets aimed at the rules' edges
//! (prefix bounds ±1, port ranges lo-1/lo/hi/hi+1, the other protocols) and
//! at their crossings (the source edge of one rule with the destination edge
//! of another and the ports of a third). Every verdict and every per-rule hit
//! counter (and the defaulted counter) must be the reference's. The same runs
//! without the set's final catch-all rule, so the default is reached.
//! MESHBPF_CLASSBENCH_DUMP=DIR writes the converted rule files, for
//! `meshbpf filter check`.

mod common;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use common::classbench::{self as cb, CbRule, Converted};
use common::frames::{Frame, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK};
use common::reference::{self, Packet, Verdict};
use common::rng::XorShift;
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput};
use meshbpf::programs::xdp_mesh_filter::skel::types::traffic_counter;
use meshbpf::programs::xdp_mesh_filter::{self as filter, FilterMaps, MAX_RULES};
use meshbpf::rules::compile;
use meshbpf::rules::filter::parse;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const IPPROTO_GRE: u8 = 47;

/// What a packet gets when no rule matches. Deny, as the firewalls and ACLs
/// that ClassBench's seeds come from end in an implicit deny; the per-rule
/// actions mix allow and deny, so a verdict alone still tells rules apart,
/// and the `defaulted` counter tells the default from a deny rule.
const DEFAULT: &str = "deny";

/// The shared sets, checked packet by packet.
const CHECKED: &[&str] = &cb::SETS;

const SEED: u64 = 0x1600_c1a5_5bec_0001;
/// Rules whose edges are probed, at most.
const EDGED_RULES: usize = 1_000;
/// Random packets per set, each from the edges of three random rules.
const CROSSINGS: usize = 20_000;
/// Uniformly random headers per set.
const UNIFORM: usize = 2_000;
/// Disagreements printed in full; the rest are counted.
const SHOWN: usize = 20;

fn read(name: &str) -> String {
    let path = cb::dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

struct Set {
    rules: Vec<CbRule>,
    trace: Vec<cb::Header>,
    converted: Converted,
}

/// The set, with another default and without its catch-all rules if asked
/// (ClassBench sets end in one, so the default is otherwise never reached).
fn set_as(name: &str, default: &str, without_catch_all: bool) -> Set {
    let rules = cb::parse_rules(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let trace = cb::parse_trace(&read(&format!("{name}_trace")))
        .unwrap_or_else(|e| panic!("{name}_trace: {e}"));
    let converted =
        cb::to_rules_json_without(&rules, default, |r| without_catch_all && r.is_catch_all());
    // MESHBPF_CLASSBENCH_DUMP=DIR keeps the converted file, for `meshbpf filter check`.
    if let Some(dir) = std::env::var_os("MESHBPF_CLASSBENCH_DUMP") {
        let suffix = if without_catch_all {
            "_no_catch_all"
        } else {
            ""
        };
        let path = std::path::Path::new(&dir).join(format!("{name}{suffix}.json"));
        let text = serde_json::to_string_pretty(&converted.json).expect("rules JSON");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    Set {
        rules,
        trace,
        converted,
    }
}

/// How a header is framed (README, "How packets are parsed for matching").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Plain,
    /// One 802.1Q tag.
    Vlan,
    /// 802.1ad outer and 802.1Q inner tags.
    QinQ,
    /// The first fragment of several: ports known.
    FirstFragment,
    /// A later fragment: no ports.
    LaterFragment,
    /// A TCP/UDP header cut before its ports end: protocol known, no ports.
    TruncatedL4,
}

const SHAPES: [Shape; 5] = [
    Shape::Vlan,
    Shape::QinQ,
    Shape::FirstFragment,
    Shape::LaterFragment,
    Shape::TruncatedL4,
];

/// A header to send: IPv4, with the L4 header its protocol calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Probe {
    src: u32,
    dst: u32,
    proto: u8,
    sport: u16,
    dport: u16,
    shape: Shape,
}

impl Probe {
    fn has_ports(&self) -> bool {
        matches!(self.proto, IPPROTO_TCP | IPPROTO_UDP)
    }

    fn frame(&self) -> Vec<u8> {
        let eth = match self.shape {
            Shape::Vlan => Frame::eth().vlan(100),
            Shape::QinQ => Frame::eth().svlan(200).vlan(100),
            _ => Frame::eth(),
        };
        let ip = eth.ipv4(Ipv4Addr::from(self.src), Ipv4Addr::from(self.dst));
        let ip = match self.shape {
            Shape::FirstFragment => ip.fragment(0, true),
            Shape::LaterFragment => {
                return ip
                    .fragment(8, true)
                    .protocol(self.proto)
                    .payload(64)
                    .build()
            }
            _ => ip,
        };
        let frame = match self.proto {
            IPPROTO_TCP => ip.tcp(self.sport, self.dport).tcp_flags(TCP_ACK),
            IPPROTO_UDP => ip.udp(self.sport, self.dport),
            IPPROTO_ICMP => ip.icmp(8, 0),
            other => ip.protocol(other).payload(8),
        };
        let frame = match self.shape {
            Shape::FirstFragment => frame.payload(64),
            // Ethernet, a 20-byte IPv4 header, 3 bytes of the ports.
            Shape::TruncatedL4 if self.has_ports() => frame.truncate(14 + 20 + 3),
            _ => frame,
        };
        frame.build()
    }

    /// What the reference sees: an IPv4 packet, its L4 protocol known; its
    /// ports only in a whole TCP/UDP header that is not a later fragment.
    fn packet(&self) -> Packet {
        let known = !matches!(self.shape, Shape::LaterFragment | Shape::TruncatedL4);
        let ports = (self.has_ports() && known).then_some((self.sport, self.dport));
        Packet::Ip {
            src: IpAddr::V4(self.src.into()),
            dst: IpAddr::V4(self.dst.into()),
            proto: Some(self.proto),
            ports,
        }
    }

    fn show(&self) -> String {
        format!(
            "{} -> {} proto {} sport {} dport {} ({:?})",
            Ipv4Addr::from(self.src),
            Ipv4Addr::from(self.dst),
            self.proto,
            self.sport,
            self.dport,
            self.shape
        )
    }
}

/// The interesting values of a prefix: just outside, the bounds, inside.
fn prefix_edges(rng: &mut XorShift, (net, len): (u32, u8)) -> Vec<u32> {
    let lo = net;
    let hi = net | !cb::mask(len);
    let inside = lo + (rng.next() as u32 & !cb::mask(len));
    let mut v = vec![lo, hi, inside];
    v.extend(lo.checked_sub(1));
    v.extend(hi.checked_add(1));
    v
}

fn port_edges(rng: &mut XorShift, (lo, hi): (u16, u16)) -> Vec<u16> {
    let inside = lo + (rng.next() % (u64::from(hi - lo) + 1)) as u16;
    let mut v = vec![lo, hi, inside];
    v.extend(lo.checked_sub(1));
    v.extend(hi.checked_add(1));
    v
}

fn protocols(rule: &CbRule) -> Vec<u8> {
    let all = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_GRE, 0, 255];
    if rule.proto_mask == 0 {
        all.to_vec()
    } else {
        // The rule's own protocol first, then one it does not name.
        vec![
            rule.proto,
            if rule.proto == IPPROTO_TCP {
                IPPROTO_UDP
            } else {
                IPPROTO_TCP
            },
        ]
    }
}

/// A header inside `rule`, for the protocol given.
fn inside(rng: &mut XorShift, rule: &CbRule, proto: u8) -> Probe {
    Probe {
        src: prefix_edges(rng, rule.src)[2],
        dst: prefix_edges(rng, rule.dst)[2],
        proto,
        sport: port_edges(rng, rule.sport)[2],
        dport: port_edges(rng, rule.dport)[2],
        shape: Shape::Plain,
    }
}

/// Packets at the edges of every rule: one field at a time moved to each of
/// its edges, the others inside; and every protocol against the rule.
fn edge_probes(rng: &mut XorShift, rules: &[CbRule]) -> Vec<Probe> {
    let mut out = Vec::new();
    for rule in rules {
        let protos = protocols(rule);
        for &proto in &protos {
            out.push(inside(rng, rule, proto));
        }
        let base = inside(rng, rule, protos[0]);
        for src in prefix_edges(rng, rule.src) {
            out.push(Probe { src, ..base });
        }
        for dst in prefix_edges(rng, rule.dst) {
            out.push(Probe { dst, ..base });
        }
        for sport in port_edges(rng, rule.sport) {
            out.push(Probe { sport, ..base });
        }
        for dport in port_edges(rng, rule.dport) {
            out.push(Probe { dport, ..base });
        }
    }
    out
}

/// Source from one rule's edges, destination from another's, ports from a
/// third's: the crossings a cross-producting or cutting classifier splits.
fn crossing_probes(rng: &mut XorShift, rules: &[CbRule], n: usize) -> Vec<Probe> {
    (0..n)
        .map(|_| {
            let (a, b, c) = (
                &rules[rng.below(rules.len())],
                &rules[rng.below(rules.len())],
                &rules[rng.below(rules.len())],
            );
            let srcs = prefix_edges(rng, a.src);
            let dsts = prefix_edges(rng, b.dst);
            let sports = port_edges(rng, c.sport);
            let dports = port_edges(rng, c.dport);
            let protos = protocols(c);
            let proto = if rng.one_in(4) {
                rng.pick(&protos)
            } else {
                protos[0]
            };
            Probe {
                src: rng.pick(&srcs),
                dst: rng.pick(&dsts),
                proto,
                sport: rng.pick(&sports),
                dport: rng.pick(&dports),
                shape: if rng.one_in(8) {
                    rng.pick(&SHAPES)
                } else {
                    Shape::Plain
                },
            }
        })
        .collect()
}

fn uniform_probes(rng: &mut XorShift, n: usize) -> Vec<Probe> {
    (0..n)
        .map(|_| Probe {
            src: rng.next() as u32,
            dst: rng.next() as u32,
            proto: rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_GRE, 50, 255]),
            sport: rng.next() as u16,
            dport: rng.next() as u16,
            shape: Shape::Plain,
        })
        .collect()
}

/// Every trace header as it is, then once in every other shape.
fn trace_probes(trace: &[cb::Header]) -> Vec<Probe> {
    let probe = |h: &cb::Header, shape| Probe {
        src: h.src,
        dst: h.dst,
        proto: h.proto,
        sport: h.sport,
        dport: h.dport,
        shape,
    };
    let plain = trace.iter().map(|h| probe(h, Shape::Plain));
    let shaped = SHAPES
        .iter()
        .flat_map(|&shape| trace.iter().map(move |h| probe(h, shape)));
    plain.chain(shaped).collect()
}

/// The per-rule hit counter of the active generation, summed over CPUs.
fn rule_packets(map: &dyn MapCore, generation: u8, index: usize) -> u64 {
    let key = (u32::from(generation) * MAX_RULES + index as u32).to_ne_bytes();
    map.lookup_percpu(&key, MapFlags::ANY)
        .expect("reading rule_hits")
        .expect("a rule_hits entry")
        .iter()
        .map(|bytes| {
            let mut c = traffic_counter::default();
            plain::copy_from_bytes(&mut c, bytes).expect("a traffic_counter");
            c.packets
        })
        .sum()
}

fn defaulted(maps: &FilterMaps<'_>) -> u64 {
    filter::read_stats(maps)
        .expect("reading filter_stats")
        .defaulted
        .packets
}

/// Who decided: a rule by its JSON index, or the default.
fn who(index: Option<usize>, converted: &Converted) -> String {
    match index {
        Some(i) => format!(
            "rule {i} (ClassBench line {}) {}",
            converted.origin[i] + 1,
            converted.json["rules"][i]
        ),
        None => "the default".into(),
    }
}

struct Outcome {
    packets: usize,
    disagreements: Vec<String>,
    /// Packets the reference gave to each rule (JSON index; None: default).
    hits: BTreeMap<Option<usize>, u64>,
}

/// Runs every probe and compares each verdict and hit counter with the
/// reference; then compares every counter once more.
fn differential(name: &str, default: &str, without_catch_all: bool) {
    let set = set_as(name, default, without_catch_all);
    let suffix = if without_catch_all {
        " without its catch-all"
    } else {
        ""
    };
    check_set(&format!("{name}{suffix}"), &set, default);
}

fn check_set(name: &str, set: &Set, default: &str) {
    let started = Instant::now();
    let text = set.converted.json.to_string();
    let rules = parse(&text).unwrap_or_else(|e| panic!("{name}: meshbpf refuses the set: {e}"));
    let compiling = Instant::now();
    let compiled = compile::compile(&rules);
    let compile_time = compiling.elapsed();

    let mut object = MaybeUninit::<OpenObject>::uninit();
    let skel = filter::load(&mut object, None).expect("loading xdp_mesh_filter");
    let maps = FilterMaps::of_skeleton(&skel);
    let generation =
        filter::apply(&maps, &rules, &compiled, filter::Publish::Now).expect("applying the rules");

    let mut rng = XorShift(SEED ^ name.len() as u64);
    let mut probes = trace_probes(&set.trace);
    let traced = set.trace.len();
    // Every rule's edges in a 1k set; in a 10k set, those of a spread sample
    // of its rules, so that the linear reference stays within the test's time.
    let step = set.rules.len().div_ceil(EDGED_RULES).max(1);
    let edged: Vec<CbRule> = set.rules.iter().step_by(step).copied().collect();
    probes.extend(edge_probes(&mut rng, &edged));
    probes.extend(crossing_probes(&mut rng, &set.rules, CROSSINGS));
    probes.extend(uniform_probes(&mut rng, UNIFORM));

    let outcome = run(&skel, &maps, generation, &set.converted, &probes);

    eprintln!(
        "{name}: {} ClassBench rules, {} kept, {} left out {:?}; default {default}; \
         compiled in {compile_time:?}; {} packets ({traced} trace headers, each in {} shapes), \
         {} decided by rules ({} rules hit), {} by the default; {} disagreements; {:?} in all",
        set.rules.len(),
        set.converted.origin.len(),
        set.converted.left_out_total(),
        set.converted.left_out,
        outcome.packets,
        SHAPES.len() + 1,
        outcome
            .hits
            .iter()
            .filter(|(k, _)| k.is_some())
            .map(|(_, n)| n)
            .sum::<u64>(),
        outcome.hits.keys().filter(|k| k.is_some()).count(),
        outcome.hits.get(&None).copied().unwrap_or(0),
        outcome.disagreements.len(),
        started.elapsed(),
    );
    let n = outcome.disagreements.len();
    assert!(
        n == 0,
        "{name}: {n} disagreements with the reference:\n{}{}",
        outcome.disagreements[..n.min(SHOWN)].join("\n"),
        if n > SHOWN {
            format!("\n... and {} more", n - SHOWN)
        } else {
            String::new()
        }
    );
}

fn run(
    skel: &filter::XdpMeshFilterSkel<'_>,
    maps: &FilterMaps<'_>,
    generation: u8,
    converted: &Converted,
    probes: &[Probe],
) -> Outcome {
    let rules = converted.json["rules"].as_array().expect("rules").len();
    let hit_map = &skel.maps.rule_hits;
    // What every counter must read: all start at zero.
    let mut tally = vec![0u64; rules];
    let mut tally_default = 0u64;
    let mut hits = BTreeMap::new();
    let mut disagreements = Vec::new();
    let reference = reference::Reference::new(&converted.json);
    for probe in probes {
        let (verdict, index) = reference.evaluate(&probe.packet());
        *hits.entry(index).or_insert(0) += 1;
        let frame = probe.frame();
        let input = ProgramInput {
            data_in: Some(&frame),
            repeat: 1,
            ..Default::default()
        };
        let returned = skel
            .progs
            .xdp_mesh_filter
            .test_run(input)
            .unwrap_or_else(|e| panic!("test run of {}: {e}", probe.show()))
            .return_value;
        let kernel_verdict = match returned {
            XDP_PASS => Some(Verdict::Allow),
            XDP_DROP => Some(Verdict::Deny),
            _ => None,
        };
        let counted = match index {
            Some(i) => {
                tally[i] += 1;
                rule_packets(hit_map, generation, i) == tally[i]
            }
            None => {
                tally_default += 1;
                defaulted(maps) == tally_default
            }
        };
        if kernel_verdict == Some(verdict) && counted {
            continue;
        }
        // Find who meshbpf counted the packet for, then take its counters as
        // the new baseline so one disagreement is reported once.
        let active = filter::read_rules(maps).expect("reading the rules");
        let mut moved = Vec::new();
        for (i, rule) in active.rules.iter().enumerate() {
            if rule.packets != tally[i] {
                moved.push(format!(
                    "{} ({:+})",
                    who(Some(i), converted),
                    rule.packets as i64 - tally[i] as i64
                ));
                tally[i] = rule.packets;
            }
        }
        let now_default = defaulted(maps);
        if now_default != tally_default {
            moved.push(format!(
                "the default ({:+})",
                now_default as i64 - tally_default as i64
            ));
            tally_default = now_default;
        }
        disagreements.push(format!(
            "packet {}: the reference says {verdict:?} by {}; meshbpf returned {returned} \
             ({kernel_verdict:?}); counters that moved against the reference: {}",
            probe.show(),
            who(index, converted),
            if moved.is_empty() {
                "none".to_string()
            } else {
                moved.join(", ")
            }
        ));
    }
    // Once more, every counter at the end.
    let active = filter::read_rules(maps).expect("reading the rules");
    assert_eq!(active.rules.len(), rules);
    for (i, rule) in active.rules.iter().enumerate() {
        if rule.packets != tally[i] {
            disagreements.push(format!(
                "at the end, {} has {} packets, the reference {}",
                who(Some(i), converted),
                rule.packets,
                tally[i]
            ));
        }
    }
    if defaulted(maps) != tally_default {
        disagreements.push(format!(
            "at the end, the default has {} packets, the reference {tally_default}",
            defaulted(maps)
        ));
    }
    Outcome {
        packets: probes.len(),
        disagreements,
        hits,
    }
}

privileged_test!(
    /// Every set compiled today: its trace, its rules' edges and crossings.
    fn compiled_sets_agree_with_the_reference() {
        for name in CHECKED {
            differential(name, DEFAULT, false);
        }
    }
);

privileged_test!(
    /// The sets without their final catch-all rule, under the other
    /// default, so that packets reach the default and the kernel's scan
    /// runs to the end of the vectors.
    fn compiled_sets_without_catch_all_agree_with_the_reference() {
        for name in CHECKED {
            differential(name, "allow", true);
        }
    }
);

privileged_test!(
    /// What an operator runs: each set attached to an interface through the
    /// CLI, shown back whole, and applied again over itself.
    fn every_set_attaches_and_applies_through_the_cli() {
        for name in CHECKED {
            let set = set_as(name, DEFAULT, false);
            let rules = set.converted.origin.len();
            let net = common::VethPair::new();
            common::filter::attach_filter(&net, &set.converted.json);
            let shown = net.meshbpf(&["filter", "show", &net.dev, "-j"]).ok().json();
            assert_eq!(
                shown["rules"].as_array().map(Vec::len),
                Some(rules),
                "{name}"
            );
            let file = common::filter::rules_file(&set.converted.json);
            let path = file.path.to_str().unwrap();
            let applied = net
                .meshbpf(&["filter", "apply", &net.dev, path, "-j"])
                .ok()
                .json();
            assert_eq!(applied["rules"], rules, "{name}: {applied}");
            assert_ne!(
                applied["generation"], shown["generation"],
                "{name}: the apply flips the generation"
            );
        }
    }
);

/// Every shared set is checked.
#[test]
fn every_shared_set_is_listed() {
    let mut listed: Vec<&str> = CHECKED.to_vec();
    listed.sort_unstable();
    let mut shared: Vec<String> = std::fs::read_dir(cb::dir())
        .expect("reading the ClassBench directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .filter(|n| n != "README.md" && !n.ends_with("_trace"))
        .collect();
    shared.sort_unstable();
    assert_eq!(
        listed,
        shared,
        "list every set of {} in CHECKED",
        cb::dir().display()
    );
}

/// The reference itself, on the README's examples.
#[test]
fn reference_follows_the_readme() {
    use serde_json::json;
    let v4 = |s: [u8; 4], d: [u8; 4], proto, ports| Packet::Ip {
        src: IpAddr::from(s),
        dst: IpAddr::from(d),
        proto: Some(proto),
        ports,
    };
    let broad_first = json!({"rules": [
        {"action": "deny", "src": "10.0.0.0/8"},
        {"action": "allow", "src": "10.1.0.0/16"}]});
    let p = v4([10, 1, 2, 3], [1, 1, 1, 1], IPPROTO_UDP, Some((1, 2)));
    assert_eq!(
        reference::evaluate(&broad_first, &p),
        (Verdict::Deny, Some(0))
    );
    let https = json!({"rules": [
        {"action": "allow", "protocol": "tcp", "dport": 443},
        {"action": "deny", "src": "203.0.113.0/24"}]});
    let from = [203, 0, 113, 9];
    let tcp443 = v4(from, [1, 1, 1, 1], IPPROTO_TCP, Some((999, 443)));
    assert_eq!(
        reference::evaluate(&https, &tcp443),
        (Verdict::Allow, Some(0))
    );
    let udp443 = v4(from, [1, 1, 1, 1], IPPROTO_UDP, Some((999, 443)));
    assert_eq!(
        reference::evaluate(&https, &udp443),
        (Verdict::Deny, Some(1))
    );
    // Ports unknown: no port rule matches; "any" with ports is tcp and udp.
    let ports = json!({"default": "deny", "rules": [
        {"action": "allow", "dport": "400-500"}, {"action": "allow", "protocol": "any"}]});
    let fragment = v4(from, [1, 1, 1, 1], IPPROTO_TCP, None);
    assert_eq!(
        reference::evaluate(&ports, &fragment),
        (Verdict::Allow, Some(1))
    );
    let gre = v4(from, [1, 1, 1, 1], IPPROTO_GRE, None);
    assert_eq!(reference::evaluate(&ports, &gre), (Verdict::Allow, Some(1)));
    assert_eq!(
        reference::evaluate(&ports, &Packet::NonIp),
        (Verdict::Deny, None)
    );
    let arp = json!({"rules": [{"action": "deny", "protocol": "arp"}]});
    assert_eq!(
        reference::evaluate(&arp, &Packet::Arp),
        (Verdict::Deny, Some(0))
    );
    assert_eq!(reference::evaluate(&arp, &tcp443), (Verdict::Allow, None));
    // Families: an IPv4 CIDR never matches IPv6.
    let v6 = Packet::Ip {
        src: "2001:db8::1".parse().unwrap(),
        dst: "2001:db8::2".parse().unwrap(),
        proto: Some(IPPROTO_UDP),
        ports: Some((1, 2)),
    };
    assert_eq!(
        reference::evaluate(&broad_first, &v6),
        (Verdict::Allow, None)
    );
    let six = json!({"rules": [{"action": "deny", "dst": "2001:db8::2"}]});
    assert_eq!(reference::evaluate(&six, &v6), (Verdict::Deny, Some(0)));
}

/// The converter on the formats' own examples.
#[test]
fn classbench_conversion() {
    let rules = cb::parse_rules(
        "@10.1.2.3/24\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\
         @0.0.0.0/0\t192.0.2.1/32\t1024 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n\
         @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x2f/0xFF\t0x0000/0x0000\t\n",
    )
    .unwrap();
    let c = cb::to_rules_json(&rules, "deny");
    assert_eq!(c.origin, vec![0, 1, 2]);
    assert!(c.left_out.is_empty());
    assert_eq!(c.json["rules"][2]["protocol"], 47);
    let r = &c.json["rules"];
    assert_eq!(r[0]["src"], "10.1.2.0/24");
    assert_eq!(r[0]["dport"], 80);
    assert_eq!(r[0]["protocol"], "tcp");
    assert!(r[0].get("dst").is_none() && r[0].get("sport").is_none());
    assert_eq!(r[1]["dst"], "192.0.2.1/32");
    assert_eq!(r[1]["sport"], "1024-65535");
    assert!(r[1].get("protocol").is_none());
    let actions: Vec<_> = (0..100).map(cb::action_of).collect();
    assert!(actions.contains(&"allow") && actions.contains(&"deny"));
    let trace = cb::parse_trace("1361257430\t3262310524\t65535\t61009\t6\t0\t471\n").unwrap();
    assert_eq!(trace[0].src, u32::from(Ipv4Addr::new(81, 35, 35, 214)));
    assert_eq!(
        (trace[0].dport, trace[0].proto, trace[0].rule),
        (61009, 6, 471)
    );
    parse(&c.json.to_string()).expect("meshbpf parses the conversion");
}
