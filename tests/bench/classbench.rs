//! Section 7: xdp_mesh_filter on the shared ClassBench rule sets (acl1, fw1,
//! ipc1 of 1,000 and 10,000 rules): compile time, the kernel's memory for
//! the maps, and the per-packet cost over a sample of each set's trace next
//! to the empty program, every sampled packet first checked against the
//! separately written reference evaluator.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use libbpf_rs::{MapCore, MapFlags};
use libbpf_sys::{XDP_DROP, XDP_PASS};
use meshbpf::kernel::netdev;
use meshbpf::kernel::xdp::{self, XdpMode};
use meshbpf::programs::xdp_mesh_filter::{self, FilterMaps, XdpMeshFilterSkel, MAX_RULES};
use meshbpf::rules::{compile, filter};

use crate::common::classbench as cb;
use crate::common::frames::{Frame as Builder, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK};
use crate::common::reference::{Packet, Reference, Verdict};
use crate::common::VethPair;
use crate::footprint;
use crate::frames::Frame;
use crate::packet::{self, Case};
use crate::raw;
use crate::stats::{self, Summary};
use crate::Config;

/// Trace headers timed per set, spread evenly over the trace.
const SAMPLED: usize = 1_000;
/// Runs per BPF_PROG_TEST_RUN call, per packet and round.
const REPEAT: u32 = 20_000;
/// Compiles timed per set.
const COMPILES: usize = 5;

pub struct SetRow {
    name: &'static str,
    rules: usize,
    compile_ms: Summary,
    vectors: usize,
    footprint: footprint::Footprint,
    /// Per packet, the median over rounds: the filter's and the floor's.
    mesh: Vec<f64>,
    floor: Vec<f64>,
    defaulted: usize,
}

pub struct Results {
    rows: Vec<SetRow>,
    rounds: usize,
}

pub fn measure(config: &Config) -> Results {
    let net = VethPair::new();
    let floor = raw::empty_program();
    let _floor_link = attach(&net.peer_ns, &net.peer_dev, floor.as_fd());
    let rows = cb::SETS
        .iter()
        .map(|name| {
            eprintln!("bench: ClassBench {name}");
            measure_set(name, &net, &floor, config.filter_rounds)
        })
        .collect();
    Results {
        rows,
        rounds: config.filter_rounds,
    }
}

/// Attaches `prog` natively to `dev` in `ns`: an attached program stays in
/// the kernel's XDP dispatcher, so a test run neither adds it nor removes
/// it, each of which waits for an RCU grace period (milliseconds here) and
/// would make thousands of short runs take an hour. No traffic flows on
/// the pair.
fn attach(ns: &str, dev: &str, prog: BorrowedFd<'_>) -> OwnedFd {
    VethPair::in_netns(ns, || {
        let iface = netdev::resolve(dev).expect("the bench's veth");
        xdp::create_link(prog, &iface, XdpMode::Native).expect("attaching to the bench's veth")
    })
}

fn read(name: &str) -> String {
    let path = cb::dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn measure_set(name: &'static str, net: &VethPair, floor: &OwnedFd, rounds: usize) -> SetRow {
    let rules = cb::parse_rules(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let trace = cb::parse_trace(&read(&format!("{name}_trace")))
        .unwrap_or_else(|e| panic!("{name}_trace: {e}"));
    let converted = cb::to_rules_json(&rules, "deny");
    assert_eq!(
        converted.left_out_total(),
        0,
        "{name}: rules the JSON cannot say: {:?}",
        converted.left_out
    );
    let parsed = filter::parse(&converted.json.to_string())
        .unwrap_or_else(|e| panic!("{name}: meshbpf refuses the set: {e}"));
    let compile_ms: Vec<f64> = (0..COMPILES)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(compile::compile(&parsed));
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let compiled = compile::compile(&parsed);

    let mut object = MaybeUninit::uninit();
    let skel = xdp_mesh_filter::load(&mut object, None).expect("loading xdp_mesh_filter");
    let maps = FilterMaps::of_skeleton(&skel);
    let gen = xdp_mesh_filter::apply(&maps, &parsed, &compiled, xdp_mesh_filter::Publish::Now)
        .expect("applying the set");
    let prog = skel.progs.xdp_mesh_filter.as_fd();
    let _link = attach(&net.ns, &net.dev, prog);

    let reference = Reference::new(&converted.json);
    let step = (trace.len() / SAMPLED).max(1);
    let headers: Vec<&cb::Header> = trace.iter().step_by(step).take(SAMPLED).collect();
    let mesh_subject = packet::subject(format!("xdp_mesh_filter, {name}"), prog);
    let floor_subject = packet::subject("empty XDP program (floor)", floor.as_fd());
    let mut defaulted = 0;
    let frames: Vec<(Frame, u32)> = headers
        .iter()
        .map(|header| {
            let (frame, expected) = (frame_of(header), reference.evaluate(&packet_of(header)));
            let verdict = match expected.0 {
                Verdict::Allow => XDP_PASS,
                Verdict::Deny => XDP_DROP,
            };
            defaulted += usize::from(expected.1.is_none());
            check(
                &skel,
                &maps,
                gen,
                &mesh_subject,
                &frame,
                verdict,
                expected.1,
            );
            (frame, verdict)
        })
        .collect();

    let mut mesh = vec![Vec::new(); frames.len()];
    let mut empty = vec![Vec::new(); frames.len()];
    for _ in 0..rounds {
        for (i, (frame, verdict)) in frames.iter().enumerate() {
            let case = |subject, verdict| Case {
                subject,
                frame,
                verdict,
            };
            mesh[i].push(packet::test_run_ns(&case(&mesh_subject, *verdict), REPEAT));
            empty[i].push(packet::test_run_ns(&case(&floor_subject, XDP_PASS), REPEAT));
        }
    }
    let median = |samples: &Vec<f64>| Summary::of(samples).median;
    SetRow {
        name,
        rules: parsed.rules.len(),
        compile_ms: Summary::of(&compile_ms),
        vectors: compiled.vectors.len(),
        footprint: footprint::of(prog),
        mesh: mesh.iter().map(median).collect(),
        floor: empty.iter().map(median).collect(),
        defaulted,
    }
}

/// The header as the filter sees it: a plain IPv4 frame with the L4 header
/// its protocol calls for.
fn frame_of(header: &cb::Header) -> Frame {
    let ip = Builder::eth().ipv4(Ipv4Addr::from(header.src), Ipv4Addr::from(header.dst));
    let builder = match header.proto {
        IPPROTO_TCP => ip.tcp(header.sport, header.dport).tcp_flags(TCP_ACK),
        IPPROTO_UDP => ip.udp(header.sport, header.dport),
        IPPROTO_ICMP => ip.icmp(8, 0),
        other => ip.protocol(other).payload(8),
    };
    let bytes = builder.build();
    Frame {
        name: format!("trace header ({} B)", bytes.len()),
        bytes,
        l3: "ipv4",
        l4: "other",
    }
}

fn packet_of(header: &cb::Header) -> Packet {
    let ports = matches!(header.proto, IPPROTO_TCP | IPPROTO_UDP);
    Packet::Ip {
        src: IpAddr::V4(header.src.into()),
        dst: IpAddr::V4(header.dst.into()),
        proto: Some(header.proto),
        ports: ports.then_some((header.sport, header.dport)),
    }
}

/// One run must return the reference's verdict and count in the rule the
/// reference names (or in the default's counter).
fn check(
    skel: &XdpMeshFilterSkel<'_>,
    maps: &FilterMaps<'_>,
    gen: u8,
    subject: &packet::Subject<'_>,
    frame: &Frame,
    verdict: u32,
    rule: Option<usize>,
) {
    let landed = || match rule {
        Some(index) => {
            let key = (u32::from(gen) * MAX_RULES + index as u32).to_ne_bytes();
            skel.maps
                .rule_hits
                .lookup_percpu(&key, MapFlags::ANY)
                .expect("reading a rule's hits")
                .expect("every rule has hits")
                .iter()
                .map(|cpu| u64::from_ne_bytes(cpu[..8].try_into().expect("packets")))
                .sum::<u64>()
        }
        None => {
            xdp_mesh_filter::read_stats(maps)
                .expect("reading the filter's counters")
                .defaulted
                .packets
        }
    };
    let before = landed();
    packet::test_run_ns(
        &Case {
            subject,
            frame,
            verdict,
        },
        1,
    );
    assert_eq!(
        landed() - before,
        1,
        "{}: {} did not land in {rule:?}",
        subject.name,
        frame.name
    );
}

/// The value at quantile `q` of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

impl Results {
    pub fn markdown(&self) -> String {
        let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let over: Vec<f64> = r.mesh.iter().zip(&r.floor).map(|(m, f)| m - f).collect();
                vec![
                    r.name.to_string(),
                    stats::thousands(r.rules),
                    stats::ms(r.compile_ms.median),
                    stats::thousands(r.vectors),
                    mib(r.footprint.inner_bytes),
                    mib(r.footprint.map_bytes),
                    stats::ns(quantile(&r.floor, 0.5)),
                    stats::ns(quantile(&r.mesh, 0.5)),
                    stats::ns(quantile(&r.mesh, 0.9)),
                    stats::ns(quantile(&over, 0.5)),
                    stats::ns(quantile(&over, 0.9)),
                    format!("{} / {}", r.defaulted, r.mesh.len()),
                ]
            })
            .collect();
        let insns = self.rows.first().map_or(0, |r| r.footprint.verified_insns);
        format!(
            "## 7. ClassBench rule sets (BPF_PROG_TEST_RUN, {REPEAT} runs per sample)\n\n\
The shared sets (`../shared/classbench`, ClassBench's acl1, fw1 and ipc1 seeds, 1,000 and 10,000 rules), converted \
to the rules JSON in file order with alternating actions by rule index and `\"default\": \"deny\"` \
(tests/common/classbench.rs; no rule is left out). Compile: the median of {COMPILES} runs of \
`rules::compile::compile` on the parsed set. Memory is the kernel's: the `memlock` of every map the loaded program \
uses, after `xdp_mesh_filter::apply` of the set, with the inner maps of its `tables` and `vectors` map-in-maps \
(which hold the set's table and vectors) counted on their own too. The verifier processed {insns} instructions of \
the program (its `verified_insns`; the same for every set, as rules are data). Per packet: {SAMPLED} headers of \
each set's trace, taken evenly over it, each framed as a plain IPv4 packet (TCP with ACK, UDP, ICMP echo, or the \
protocol's number with 8 bytes of payload); {rounds} rounds, each timing every packet on the filter and on the \
empty program in turn; a packet's figure is its median over the rounds, and the table gives the median (p50) and \
the 90th percentile (p90) over packets, also of each packet's difference over the floor. Before timing, every \
sampled packet must get the verdict of the reference evaluator (tests/common/reference.rs, a linear first-match \
walk over the rules JSON) and land in the hit counter of the rule it names, or in `defaulted`. The same program, \
maps and packets stay in the CPU's caches between runs, as in section 2.\n\n{}",
            stats::table(
                &[
                    "set",
                    "rules",
                    "compile",
                    "vectors",
                    "rule-set maps",
                    "all maps",
                    "floor p50",
                    "p50",
                    "p90",
                    "p50 over floor",
                    "p90 over floor",
                    "defaulted",
                ],
                &rows
            ),
            rounds = self.rounds,
        )
    }
}
