//! tc_classifier under BPF_PROG_TEST_RUN: the real verifier, the real kernel
//! and the real flow table, fed hand-built and garbage frames on both hooks;
//! the flow table reader against a million flows; and the verdict under tcx
//! and clsact with real traffic.
//!
//! Every test loads its own skeleton, so tests own separate maps and can run
//! in parallel. They need root; without it they skip, unless
//! MESHBPF_REQUIRE_PRIVILEGED=1 makes that a failure.

mod common;

use std::io::{Read, Write};
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::frames::{hex, Frame, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use common::frames::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use common::VethPair;
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput, TcHookBuilder, TC_INGRESS};
use meshbpf::programs::tc_classifier::skel::types::__sk_buff;
use meshbpf::programs::tc_classifier::{
    self, classes, flow_direction, flow_key, flow_value, l7_proto, FlowStats, TcClassifierSkel,
};

/// TC_ACT_UNSPEC, which is TCX_NEXT: the programs' only verdict.
const CONTINUE: u32 = -1i32 as u32;
const ETH_HLEN: usize = 14;
/// include/flow_table.h
const FLOW_L7_GUESS_PACKETS: usize = 16;

const SRC4: [u8; 4] = [192, 0, 2, 1];
const DST4: [u8; 4] = [198, 51, 100, 7];
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 2);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn direction(self) -> u8 {
        match self {
            Hook::Ingress => flow_direction::FLOW_INGRESS.0 as u8,
            Hook::Egress => flow_direction::FLOW_EGRESS.0 as u8,
        }
    }
}

/// One loaded, unattached tc_classifier with its own maps.
struct Harness<'obj> {
    skel: TcClassifierSkel<'obj>,
}

impl<'obj> Harness<'obj> {
    fn load(object: &'obj mut MaybeUninit<OpenObject>) -> Self {
        Self::load_with(object, 1024, true)
    }

    fn load_with(object: &'obj mut MaybeUninit<OpenObject>, max_flows: u32, tcx: bool) -> Self {
        let skel =
            tc_classifier::load(object, None, max_flows, tcx).expect("loading tc_classifier");
        let harness = Harness { skel };
        assert!(harness.flows().is_empty(), "a fresh table is empty");
        harness
    }

    fn try_run(&self, hook: Hook, frame: &[u8]) -> libbpf_rs::Result<u32> {
        let input = ProgramInput {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        let prog = match hook {
            Hook::Ingress => &self.skel.progs.tc_ingress,
            Hook::Egress => &self.skel.progs.tc_egress,
        };
        prog.test_run(input).map(|out| out.return_value)
    }

    /// Runs `frame` as an skb that arrives with `mark`; returns the mark
    /// and priority the program left on it.
    fn run_skb(&self, hook: Hook, frame: &[u8], mark: u32) -> (u32, u32) {
        let mark_at = mem::offset_of!(__sk_buff, mark);
        let priority_at = mem::offset_of!(__sk_buff, priority);
        let mut ctx_in = vec![0u8; mem::size_of::<__sk_buff>()];
        ctx_in[mark_at..mark_at + 4].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = vec![0u8; ctx_in.len()];
        let input = ProgramInput {
            data_in: Some(frame),
            context_in: Some(&mut ctx_in),
            context_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        };
        let prog = match hook {
            Hook::Ingress => &self.skel.progs.tc_ingress,
            Hook::Egress => &self.skel.progs.tc_egress,
        };
        let verdict = prog
            .test_run(input)
            .unwrap_or_else(|e| panic!("test run failed: {e}\nframe: {}", hex(frame)))
            .return_value;
        assert_eq!(verdict, CONTINUE, "verdict\nframe: {}", hex(frame));
        let word = |at: usize| u32::from_ne_bytes(ctx_out[at..at + 4].try_into().unwrap());
        (word(mark_at), word(priority_at))
    }

    fn apply_classes(&self, json: &str) {
        let rules = meshbpf::rules::classes::parse(json).expect("a valid class file");
        classes::apply(&classes::ClassMaps::of_skeleton(&self.skel), &rules)
            .expect("applying classes");
    }

    /// (class, ingress packets, egress packets) of every class in use.
    fn class_packets(&self) -> Vec<(String, u64, u64)> {
        classes::read(&classes::ClassMaps::of_skeleton(&self.skel))
            .expect("reading classes")
            .into_iter()
            .map(|c| (c.class, c.ingress.packets, c.egress.packets))
            .collect()
    }

    fn run(&self, hook: Hook, frame: &[u8]) {
        let verdict = self
            .try_run(hook, frame)
            .unwrap_or_else(|e| panic!("test run failed: {e}\nframe: {}", hex(frame)));
        assert_eq!(verdict, CONTINUE, "verdict\nframe: {}", hex(frame));
    }

    fn flows(&self) -> Vec<(flow_key, flow_value)> {
        tc_classifier::read_flows(&self.skel.maps.flows).expect("reading flows")
    }

    fn flow(&self, key: &flow_key) -> Option<flow_value> {
        tc_classifier::lookup_flow(&self.skel.maps.flows, key).expect("looking up a flow")
    }

    /// The flow of `key`, which must exist.
    fn expect_flow(&self, key: &flow_key) -> flow_value {
        self.flow(key).unwrap_or_else(|| {
            panic!(
                "no flow {}\ntable: {:#?}",
                show_key(key),
                self.flows()
                    .iter()
                    .map(|(k, _)| show_key(k))
                    .collect::<Vec<_>>()
            )
        })
    }

    fn stats(&self) -> FlowStats {
        tc_classifier::read_stats(&self.skel.maps.flow_stats).expect("reading flow_stats")
    }

    /// Runs `frame` once on `hook` and returns the L7 guess of `key`'s flow.
    fn l7_after(&self, hook: Hook, frame: &[u8], key: &flow_key) -> l7_proto {
        self.run(hook, frame);
        l7_proto(u32::from(self.expect_flow(key).l7))
    }
}

fn show_key(k: &flow_key) -> String {
    let addr = |a: &[u8; 16]| {
        if k.family == 4 {
            Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
        } else {
            Ipv6Addr::from(*a).to_string()
        }
    };
    format!(
        "{} {}:{} -> {}:{} proto {} dir {}",
        k.family,
        addr(&k.src),
        k.sport,
        addr(&k.dst),
        k.dport,
        k.protocol,
        k.direction
    )
}

fn key4(protocol: u8, sport: u16, dport: u16, hook: Hook) -> flow_key {
    let mut k = flow_key {
        sport,
        dport,
        family: 4,
        protocol,
        direction: hook.direction(),
        ..Default::default()
    };
    k.src[..4].copy_from_slice(&SRC4);
    k.dst[..4].copy_from_slice(&DST4);
    k
}

fn key6(protocol: u8, sport: u16, dport: u16, hook: Hook) -> flow_key {
    flow_key {
        src: SRC6.octets(),
        dst: DST6.octets(),
        sport,
        dport,
        family: 6,
        protocol,
        direction: hook.direction(),
        ..Default::default()
    }
}

fn ipv4() -> Frame {
    Frame::eth().ipv4(SRC4, DST4)
}

fn ipv6() -> Frame {
    Frame::eth().ipv6(SRC6, DST6)
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

privileged_test!(
    fn both_programs_continue_whether_loaded_for_tcx_or_clsact() {
        for tcx in [true, false] {
            let mut object = MaybeUninit::uninit();
            let h = Harness::load_with(&mut object, 16, tcx);
            for hook in [Hook::Ingress, Hook::Egress] {
                h.run(hook, &ipv4().udp(1, 2).payload(10).build());
                h.run(hook, &Frame::eth().ethertype(0x88B5).payload(46).build());
                // Cut inside the IP header (behind a VLAN tag: test runs refuse
                // an untagged IP ethertype without a whole IP header).
                let tagged = Frame::eth().vlan(1).ipv4(SRC4, DST4).build();
                h.run(hook, &tagged[..ETH_HLEN + 4 + 3]);
            }
        }
    }
);

privileged_test!(
    fn max_flows_outside_the_table_limits_is_refused() {
        for bad in [0, tc_classifier::MAX_FLOWS + 1] {
            let mut object = MaybeUninit::uninit();
            let err = tc_classifier::load(&mut object, None, bad, true)
                .err()
                .unwrap_or_else(|| panic!("max_flows {bad} loaded"));
            assert!(format!("{err:#}").contains("--max-flows"), "{err:#}");
        }
    }
);

privileged_test!(
    fn tcp_flow_key_value_flags_and_times_per_hook() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let syn = ipv4().tcp(40000, 443).tcp_flags(TCP_SYN).build();
        let ack = ipv4().tcp(40000, 443).tcp_flags(TCP_ACK).build();
        let fin = ipv4()
            .tcp(40000, 443)
            .tcp_flags(TCP_FIN | TCP_ACK)
            .payload(100)
            .build();
        let ingress = key4(IPPROTO_TCP, 40000, 443, Hook::Ingress);
        let egress = key4(IPPROTO_TCP, 40000, 443, Hook::Egress);

        let before = monotonic_ns();
        h.run(Hook::Ingress, &syn);
        let v = h.expect_flow(&ingress);
        assert_eq!((v.packets, v.bytes), (1, syn.len() as u64));
        assert_eq!(v.tcp_flags, u64::from(TCP_SYN));
        assert_eq!(v.first_seen_ns, v.last_seen_ns);
        assert!(v.first_seen_ns >= before, "first seen before the run");
        let first = v.first_seen_ns;

        h.run(Hook::Ingress, &ack);
        h.run(Hook::Ingress, &fin);
        let after = monotonic_ns();
        let v = h.expect_flow(&ingress);
        assert_eq!(v.packets, 3);
        assert_eq!(v.bytes, (syn.len() + ack.len() + fin.len()) as u64);
        assert_eq!(v.tcp_flags, u64::from(TCP_SYN | TCP_ACK | TCP_FIN));
        assert_eq!(v.first_seen_ns, first, "first seen never moves");
        assert!(v.last_seen_ns > first && v.last_seen_ns <= after);
        assert_eq!(v.l7, l7_proto::L7_UNKNOWN.0 as u8);
        assert_eq!(v.pad, 0);
        assert_eq!(
            (v.class_id, v.class_generation),
            (0, 0),
            "no classes applied: the flow is never classified"
        );

        // The same packet on the other hook is another flow.
        assert!(h.flow(&egress).is_none());
        h.run(Hook::Egress, &ack);
        let e = h.expect_flow(&egress);
        assert_eq!((e.packets, e.bytes), (1, ack.len() as u64));
        assert_eq!(e.tcp_flags, u64::from(TCP_ACK));
        assert!(e.first_seen_ns > first);
        assert_eq!(
            h.expect_flow(&ingress).packets,
            3,
            "egress left ingress alone"
        );

        // Flags accumulate, and an RST|PSH adds both.
        h.run(
            Hook::Egress,
            &ipv4().tcp(40000, 443).tcp_flags(TCP_RST | TCP_PSH).build(),
        );
        assert_eq!(
            h.expect_flow(&egress).tcp_flags,
            u64::from(TCP_ACK | TCP_RST | TCP_PSH)
        );

        let flows = h.flows();
        assert_eq!(flows.len(), 2);
        let stats = h.stats();
        assert_eq!(stats.ingress.flows_created, 1);
        assert_eq!(stats.egress.flows_created, 1);
        assert_eq!(stats.ingress.packets, 3);
        assert_eq!(stats.egress.packets, 2);
        assert_eq!(
            stats.ingress.bytes,
            (syn.len() + ack.len() + fin.len()) as u64
        );
        let total = stats.total();
        assert_eq!((total.not_ip, total.insert_failed, total.pulled), (0, 0, 0));
    }
);

privileged_test!(
    fn udp_ipv4_and_ipv6_keys() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let udp4 = ipv4().udp(5353, 9999).payload(30).build();
        let udp6 = ipv6().udp(40001, 8080).payload(70).build();
        h.run(Hook::Ingress, &udp4);
        h.run(Hook::Ingress, &udp4);
        h.run(Hook::Egress, &udp6);

        let v = h.expect_flow(&key4(IPPROTO_UDP, 5353, 9999, Hook::Ingress));
        assert_eq!(
            (v.packets, v.bytes, v.tcp_flags),
            (2, 2 * udp4.len() as u64, 0)
        );
        let v = h.expect_flow(&key6(IPPROTO_UDP, 40001, 8080, Hook::Egress));
        assert_eq!((v.packets, v.bytes), (1, udp6.len() as u64));

        // The whole table, decoded: IPv4 addresses fill the first 4 bytes only.
        let mut flows = h.flows();
        flows.sort_by_key(|(k, _)| k.family);
        assert_eq!(flows.len(), 2);
        let (k4, k6) = (&flows[0].0, &flows[1].0);
        assert_eq!(k4.family, 4);
        assert_eq!(&k4.src[..4], &SRC4);
        assert_eq!(&k4.dst[..4], &DST4);
        assert!(k4.src[4..].iter().chain(&k4.dst[4..]).all(|b| *b == 0));
        assert_eq!((k4.protocol, k4.direction, k4.pad), (IPPROTO_UDP, 0, 0));
        assert_eq!(k6.family, 6);
        assert_eq!(k6.src, SRC6.octets());
        assert_eq!(k6.dst, DST6.octets());
        assert_eq!((k6.protocol, k6.direction), (IPPROTO_UDP, 1));
    }
);

privileged_test!(
    fn ipv6_behind_extension_headers() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let chain = ipv6()
            .hop_by_hop(1)
            .routing(2)
            .ipv6_fragment(0, true)
            .dest_opts(0)
            .tcp(1234, 80)
            .tcp_flags(TCP_PSH | TCP_ACK)
            .bytes(b"GET /x HTTP/1.1\r\n\r\n")
            .build();
        let k = key6(IPPROTO_TCP, 1234, 80, Hook::Ingress);
        assert_eq!(h.l7_after(Hook::Ingress, &chain, &k), l7_proto::L7_HTTP1);
        assert_eq!(h.expect_flow(&k).tcp_flags, u64::from(TCP_PSH | TCP_ACK));

        // A later fragment has no ports: it counts on a port-less flow.
        let later = ipv6()
            .ipv6_fragment(100, false)
            .protocol(IPPROTO_UDP)
            .payload(40);
        h.run(Hook::Ingress, &later.build());
        h.expect_flow(&key6(IPPROTO_UDP, 0, 0, Hook::Ingress));

        // Eight extension headers are as many as the parser walks: the ICMPv6
        // header after them still gives type and code.
        let eight = (0..7).fold(ipv6().hop_by_hop(0), |f, _| f.dest_opts(0));
        h.run(Hook::Ingress, &eight.icmpv6(129, 0).build());
        h.expect_flow(&key6(IPPROTO_ICMPV6, 129, 0, Hook::Ingress));
        assert_eq!(h.flows().len(), 3);

        // Nine extension headers are more than the parser walks: no flow.
        let nine = (0..8).fold(ipv6().hop_by_hop(0), |f, _| f.dest_opts(0));
        h.run(Hook::Ingress, &nine.udp(1, 2).build());
        assert_eq!(h.stats().ingress.not_ip, 1);
        assert_eq!(h.flows().len(), 3);
    }
);

privileged_test!(
    fn icmp_type_and_code_are_the_ports() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        for (kind, code) in [(8, 0), (0, 0), (3, 1), (3, 3), (11, 0)] {
            h.run(Hook::Egress, &ipv4().icmp(kind, code).payload(56).build());
        }
        h.run(Hook::Egress, &ipv4().icmp(8, 0).payload(56).build());
        for (kind, code) in [(128, 0), (129, 0), (135, 0), (1, 4)] {
            h.run(Hook::Ingress, &ipv6().icmpv6(kind, code).build());
        }
        let echo = h.expect_flow(&key4(IPPROTO_ICMP, 8, 0, Hook::Egress));
        assert_eq!(echo.packets, 2);
        for (kind, code) in [(0, 0), (3, 1), (3, 3), (11, 0)] {
            assert_eq!(
                h.expect_flow(&key4(IPPROTO_ICMP, kind, code, Hook::Egress))
                    .packets,
                1
            );
        }
        for (kind, code) in [(128, 0), (129, 0), (135, 0), (1, 4)] {
            h.expect_flow(&key6(IPPROTO_ICMPV6, kind, code, Hook::Ingress));
        }
        assert_eq!(h.flows().len(), 9);

        // A later fragment of an ICMP message has no type or code to read.
        h.run(
            Hook::Egress,
            &ipv4()
                .fragment(10, false)
                .protocol(IPPROTO_ICMP)
                .payload(20)
                .build(),
        );
        h.expect_flow(&key4(IPPROTO_ICMP, 0, 0, Hook::Egress));
        // ICMP in IPv6 (and ICMPv6 in IPv4) is just a protocol number.
        h.run(
            Hook::Ingress,
            &ipv6().protocol(IPPROTO_ICMP).payload(8).build(),
        );
        h.expect_flow(&key6(IPPROTO_ICMP, 0, 0, Hook::Ingress));
    }
);

privileged_test!(
    fn vlan_tags_do_not_change_the_flow() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let plain = ipv4().udp(7, 8).payload(20).build();
        let dot1q = Frame::eth()
            .vlan(100)
            .ipv4(SRC4, DST4)
            .udp(7, 8)
            .payload(20)
            .build();
        let qinq = Frame::eth()
            .svlan(10)
            .vlan(20)
            .ipv4(SRC4, DST4)
            .udp(7, 8)
            .payload(20)
            .build();
        for frame in [&plain, &dot1q, &qinq] {
            h.run(Hook::Ingress, frame);
        }
        let v = h.expect_flow(&key4(IPPROTO_UDP, 7, 8, Hook::Ingress));
        assert_eq!(v.packets, 3);
        assert_eq!(v.bytes, (plain.len() + dot1q.len() + qinq.len()) as u64);
        let v6 = Frame::eth()
            .vlan(5)
            .ipv6(SRC6, DST6)
            .tcp(22, 50000)
            .tcp_flags(TCP_PSH | TCP_ACK)
            .bytes(b"SSH-2.0-OpenSSH_9.2\r\n")
            .build();
        let k = key6(IPPROTO_TCP, 22, 50000, Hook::Ingress);
        assert_eq!(h.l7_after(Hook::Ingress, &v6, &k), l7_proto::L7_SSH);
        // Three tags are deeper than the parser goes.
        let three = Frame::eth()
            .svlan(1)
            .vlan(2)
            .vlan(3)
            .ipv4(SRC4, DST4)
            .udp(7, 8)
            .build();
        h.run(Hook::Ingress, &three);
        assert_eq!(h.stats().ingress.not_ip, 1);
        assert_eq!(h.flows().len(), 2);
    }
);

privileged_test!(
    fn non_ip_frames_count_as_not_ip_and_make_no_flow() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let frames = [
            Frame::eth().arp_request(SRC4, DST4).build(),
            Frame::eth().svlan(7).arp_request(SRC4, DST4).build(),
            Frame::eth().ethertype(0x88B5).payload(46).build(),
            Frame::eth().ethertype(0x002E).payload(46).build(),
            Frame::eth().vlan(9).ethertype(0x0800).build(),
            Frame::eth().vlan(9).ethertype(0x86DD).payload(39).build(),
            ipv4().version(6).udp(1, 2).payload(20).build(),
            ipv6().version(4).udp(1, 2).payload(20).build(),
            ipv4().ihl(4).udp(1, 2).payload(20).build(),
        ];
        let mut bytes = 0;
        for (i, frame) in frames.iter().enumerate() {
            let hook = if i % 2 == 0 {
                Hook::Ingress
            } else {
                Hook::Egress
            };
            h.run(hook, frame);
            bytes += frame.len() as u64;
        }
        assert!(h.flows().is_empty());
        let total = h.stats().total();
        assert_eq!(total.not_ip, frames.len() as u64);
        assert_eq!(total.packets, frames.len() as u64);
        assert_eq!(total.bytes, bytes);
        assert_eq!(total.flows_created, 0);
    }
);

privileged_test!(
    /// Every prefix of a frame from the Ethernet header on, untagged and behind
    /// a VLAN tag: short of a whole IP header (and IPv6 extension chain) it is
    /// not IP; short of a whole L4 header it is a port-less flow; then the full
    /// flow. No prefix may fault.
    fn truncated_frames_never_fault() {
        /// The headers after the Ethernet header (and tag), whether they are
        /// IPv6, the protocol, the L4 header's name and the flow's ports.
        type Case = (fn(Frame) -> Frame, bool, u8, &'static str, (u16, u16));
        let cases: [Case; 6] = [
            (
                |f| {
                    f.ipv4(SRC4, DST4)
                        .tcp(1000, 80)
                        .bytes(b"GET / HTTP/1.1\r\n")
                },
                false,
                IPPROTO_TCP,
                "tcp",
                (1000, 80),
            ),
            (
                |f| f.ipv4(SRC4, DST4).udp(1000, 53).payload(20),
                false,
                IPPROTO_UDP,
                "udp",
                (1000, 53),
            ),
            (
                |f| f.ipv4(SRC4, DST4).icmp(8, 0).payload(8),
                false,
                IPPROTO_ICMP,
                "icmp",
                (8, 0),
            ),
            (
                |f| f.ipv6(SRC6, DST6).hop_by_hop(0).udp(1000, 53).payload(20),
                true,
                IPPROTO_UDP,
                "udp",
                (1000, 53),
            ),
            (
                |f| f.ipv6(SRC6, DST6).tcp(1000, 443).payload(20),
                true,
                IPPROTO_TCP,
                "tcp",
                (1000, 443),
            ),
            (
                |f| f.ipv6(SRC6, DST6).icmpv6(128, 0).payload(8),
                true,
                IPPROTO_ICMPV6,
                "icmpv6",
                (128, 0),
            ),
        ];
        for (build, ipv6, proto, l4, (sport, dport)) in cases {
            for tagged in [false, true] {
                let mut object = MaybeUninit::uninit();
                let h = Harness::load(&mut object);
                let frame = build(if tagged {
                    Frame::eth().vlan(1)
                } else {
                    Frame::eth()
                });
                let what = format!("ipv6 {ipv6} protocol {proto} tagged {tagged}");
                let bytes = frame.build();
                let l3 = frame.span(if ipv6 { "ipv6" } else { "ipv4" });
                let l4 = frame.span(l4);
                let mut refused = 0;
                for cut in ETH_HLEN..=bytes.len() {
                    match h.try_run(Hook::Ingress, &bytes[..cut]) {
                        Ok(verdict) => assert_eq!(verdict, CONTINUE, "{what}: cut {cut}"),
                        // The kernel's test run refuses an untagged IP
                        // ethertype without a whole IP header; real traffic
                        // can still bring one, hence the tagged run.
                        Err(e) if !tagged && cut < l3.end => {
                            assert_eq!(e.kind(), libbpf_rs::ErrorKind::InvalidInput, "{what}");
                            refused += 1;
                        }
                        Err(e) => panic!("{what}: cut {cut}: {e}"),
                    }
                }
                let key = |sport, dport| {
                    if ipv6 {
                        key6(proto, sport, dport, Hook::Ingress)
                    } else {
                        key4(proto, sport, dport, Hook::Ingress)
                    }
                };
                let stats = h.stats().ingress;
                assert_eq!(
                    stats.not_ip + refused,
                    (l4.start - ETH_HLEN) as u64,
                    "{what}: not IP"
                );
                let portless = h.expect_flow(&key(0, 0));
                assert_eq!(portless.packets, l4.len() as u64, "{what}: port-less");
                let full = h.expect_flow(&key(sport, dport));
                assert_eq!(
                    full.packets,
                    (bytes.len() + 1 - l4.end) as u64,
                    "{what}: full"
                );
                assert_eq!(stats.flows_created, 2, "{what}");
                assert_eq!(
                    stats.packets + refused,
                    (bytes.len() + 1 - ETH_HLEN) as u64,
                    "{what}"
                );
                assert_eq!(h.flows().len(), 2, "{what}");
                if proto == IPPROTO_TCP && !ipv6 {
                    assert_eq!(
                        full.l7,
                        l7_proto::L7_HTTP1.0 as u8,
                        "{what}: guessed once 4 bytes were in"
                    );
                }
            }
        }
    }
);

privileged_test!(
    /// One flow per protocol, each guessed from its first payload packet.
    fn l7_guesses() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let dns_query: &[u8] = &[
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 7, b'e', b'x',
            b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x01, 0x00, 0x01,
        ];
        let dns_response: &[u8] = &[
            0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 7, b'e', b'x',
            b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x01, 0x00, 0x01,
        ];
        let mut dns_tcp = vec![0, dns_query.len() as u8];
        dns_tcp.extend_from_slice(dns_query);
        let client_hello: &[u8] = &[
            0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03, 0xaa, 0xbb, 0xcc,
            0xdd, 0xee, 0xff, 0x00,
        ];
        let server_hello: &[u8] = &[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76, 0x03];
        let ssl3_hello: &[u8] = &[0x16, 0x03, 0x00, 0x00, 0x30, 0x01, 0x00, 0x00];

        let tcp: Vec<(&[u8], u16, l7_proto)> = vec![
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 80, l7_proto::L7_HTTP1),
            (b"POST /api HTTP/1.1\r\n", 80, l7_proto::L7_HTTP1),
            (b"PUT /x HTTP/1.1\r\n", 8080, l7_proto::L7_HTTP1),
            (b"HEAD / HTTP/1.0\r\n", 80, l7_proto::L7_HTTP1),
            (b"DELETE /x HTTP/1.1\r\n", 80, l7_proto::L7_HTTP1),
            (b"OPTIONS * HTTP/1.1\r\n", 80, l7_proto::L7_HTTP1),
            (b"PATCH /x HTTP/1.1\r\n", 80, l7_proto::L7_HTTP1),
            (b"CONNECT a:443 HTTP/1.1\r\n", 3128, l7_proto::L7_HTTP1),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
                80,
                l7_proto::L7_HTTP1,
            ),
            (b"HTTP/1.0 404 Not Found\r\n", 80, l7_proto::L7_HTTP1),
            (client_hello, 443, l7_proto::L7_TLS),
            (server_hello, 443, l7_proto::L7_TLS),
            (ssl3_hello, 8443, l7_proto::L7_TLS),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 80, l7_proto::L7_HTTP2),
            (b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", 22, l7_proto::L7_SSH),
            (b"SSH-1.99-Cisco-1.25\r\n", 22, l7_proto::L7_SSH),
            (&dns_tcp, 53, l7_proto::L7_DNS),
            // Negative: unknown bytes, signatures cut short, near misses.
            (
                &[0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
                80,
                l7_proto::L7_UNKNOWN,
            ),
            (b"GE", 80, l7_proto::L7_UNKNOWN),
            (b"HTTP/1", 80, l7_proto::L7_UNKNOWN),
            (b"get / HTTP/1.1\r\n", 80, l7_proto::L7_UNKNOWN),
            (b"PRI * HTTP/2.", 80, l7_proto::L7_UNKNOWN),
            (b"SSH-3.0-x\r\n", 22, l7_proto::L7_UNKNOWN),
            (&client_hello[..5], 443, l7_proto::L7_UNKNOWN),
            (
                &[0x16, 0x03, 0x05, 0x00, 0x10, 0x01],
                443,
                l7_proto::L7_UNKNOWN,
            ),
            (
                &[0x17, 0x03, 0x03, 0x00, 0x10, 0x01],
                443,
                l7_proto::L7_UNKNOWN,
            ),
            (
                &[0x16, 0x03, 0x03, 0x00, 0x10, 0x0b],
                443,
                l7_proto::L7_UNKNOWN,
            ),
            (
                &[0x16, 0x03, 0x03, 0x00, 0x00, 0x01],
                443,
                l7_proto::L7_UNKNOWN,
            ),
            (dns_query, 53, l7_proto::L7_UNKNOWN), // over TCP, without its length
            (&dns_tcp[..13], 53, l7_proto::L7_UNKNOWN),
            (&dns_tcp, 5353, l7_proto::L7_UNKNOWN),
        ];
        let mut sport = 20000;
        for (payload, port, expected) in &tcp {
            sport += 1;
            let frame = ipv4()
                .tcp(sport, *port)
                .tcp_flags(TCP_PSH | TCP_ACK)
                .bytes(payload)
                .build();
            let k = key4(IPPROTO_TCP, sport, *port, Hook::Egress);
            let got = h.l7_after(Hook::Egress, &frame, &k);
            assert_eq!(
                got,
                *expected,
                "TCP to {port}: {:?}",
                String::from_utf8_lossy(payload)
            );
        }

        let mut dns_no_question = dns_query.to_vec();
        dns_no_question[5] = 0;
        let mut dns_two_questions = dns_query.to_vec();
        dns_two_questions[5] = 2;
        let mut dns_opcode_3 = dns_query.to_vec();
        dns_opcode_3[2] = 3 << 3;
        let mut dns_notify = dns_query.to_vec();
        dns_notify[2] = 4 << 3;
        let udp: Vec<(&[u8], u16, u16, l7_proto)> = vec![
            (dns_query, 40000, 53, l7_proto::L7_DNS),
            (dns_response, 53, 40000, l7_proto::L7_DNS),
            (&dns_query[..12], 40000, 53, l7_proto::L7_DNS),
            (&dns_notify, 53, 53, l7_proto::L7_DNS),
            (&dns_query[..11], 40000, 53, l7_proto::L7_UNKNOWN),
            (&dns_no_question, 40000, 53, l7_proto::L7_UNKNOWN),
            (&dns_two_questions, 40000, 53, l7_proto::L7_UNKNOWN),
            (&dns_opcode_3, 40000, 53, l7_proto::L7_UNKNOWN),
            (dns_query, 40000, 5353, l7_proto::L7_UNKNOWN),
            (dns_query, 40000, 54, l7_proto::L7_UNKNOWN),
            (b"GET / HTTP/1.1\r\n", 40000, 80, l7_proto::L7_UNKNOWN),
            (client_hello, 40000, 443, l7_proto::L7_UNKNOWN),
        ];
        for (payload, sport, dport, expected) in &udp {
            let frame = ipv6().udp(*sport, *dport).bytes(payload).build();
            let k = key6(IPPROTO_UDP, *sport, *dport, Hook::Ingress);
            let got = h.l7_after(Hook::Ingress, &frame, &k);
            assert_eq!(got, *expected, "UDP {sport} -> {dport}: {}", hex(payload));
            // Each case is its own flow: take it out of the way of the next.
            h.skel
                .maps
                .flows
                .delete(tc_classifier::key_bytes(&k))
                .expect("deleting a flow");
        }
    }
);

privileged_test!(
    fn l7_guess_sticks_and_is_tried_on_early_packets_only() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let packet = |sport: u16, payload: &[u8]| {
            ipv4()
                .tcp(sport, 80)
                .tcp_flags(TCP_ACK | TCP_PSH)
                .bytes(payload)
                .build()
        };

        // Once guessed, the guess stays.
        let k = key4(IPPROTO_TCP, 1, 80, Hook::Ingress);
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(1, b"GET / HTTP/1.1\r\n"), &k),
            l7_proto::L7_HTTP1
        );
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(1, b"SSH-2.0-x\r\n"), &k),
            l7_proto::L7_HTTP1
        );
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(1, &[0x16, 3, 1, 0, 9, 1]), &k),
            l7_proto::L7_HTTP1
        );

        // Packets without payload, and payload that says nothing, leave the
        // flow unknown; the first packet that says something decides.
        let k = key4(IPPROTO_TCP, 2, 80, Hook::Ingress);
        let syn = ipv4().tcp(2, 80).tcp_flags(TCP_SYN).build();
        assert_eq!(h.l7_after(Hook::Ingress, &syn, &k), l7_proto::L7_UNKNOWN);
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(2, b"GE"), &k),
            l7_proto::L7_UNKNOWN
        );
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(2, b"\x00\x01\x02"), &k),
            l7_proto::L7_UNKNOWN
        );
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(2, b"POST / HTTP/1.1\r\n"), &k),
            l7_proto::L7_HTTP1
        );

        // A flow still unknown after FLOW_L7_GUESS_PACKETS packets stays so.
        let k = key4(IPPROTO_TCP, 3, 80, Hook::Ingress);
        for _ in 0..FLOW_L7_GUESS_PACKETS {
            h.run(Hook::Ingress, &packet(3, b"\x00\x01\x02\x03"));
        }
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(3, b"GET / HTTP/1.1\r\n"), &k),
            l7_proto::L7_UNKNOWN
        );
        let k = key4(IPPROTO_TCP, 4, 80, Hook::Ingress);
        for _ in 0..FLOW_L7_GUESS_PACKETS - 1 {
            h.run(Hook::Ingress, &packet(4, b"\x00\x01\x02\x03"));
        }
        assert_eq!(
            h.l7_after(Hook::Ingress, &packet(4, b"GET / HTTP/1.1\r\n"), &k),
            l7_proto::L7_HTTP1
        );
    }
);

privileged_test!(
    /// The payload is where the headers' lengths put it: after TCP options, and
    /// never in Ethernet padding beyond the IP datagram.
    fn l7_payload_follows_tcp_options_and_ignores_padding() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);

        // 8 bytes of options (NOP NOP and a timestamp-sized blob), data offset 7.
        let with_options = |sport: u16| {
            let frame = ipv4()
                .tcp(sport, 80)
                .tcp_flags(TCP_ACK | TCP_PSH)
                .bytes(b"\x01\x01\x08\x0a\x00\x00\x00\x01GET / HTTP/1.1\r\n");
            let doff = frame.span("tcp").start + 12;
            (frame.build(), doff)
        };
        let (mut frame, doff) = with_options(1);
        frame[doff] = 7 << 4;
        let k = key4(IPPROTO_TCP, 1, 80, Hook::Ingress);
        assert_eq!(h.l7_after(Hook::Ingress, &frame, &k), l7_proto::L7_HTTP1);
        // Read as data offset 5, the payload starts with the options.
        let (frame, _) = with_options(2);
        let k = key4(IPPROTO_TCP, 2, 80, Hook::Ingress);
        assert_eq!(h.l7_after(Hook::Ingress, &frame, &k), l7_proto::L7_UNKNOWN);
        // A data offset below 5 is a broken header: no payload to guess from.
        let mut frame = ipv4().tcp(3, 80).bytes(b"GET / HTTP/1.1\r\n").build();
        let at = ipv4().tcp(3, 80).span("tcp").start + 12;
        frame[at] = 4 << 4;
        let k = key4(IPPROTO_TCP, 3, 80, Hook::Ingress);
        assert_eq!(h.l7_after(Hook::Ingress, &frame, &k), l7_proto::L7_UNKNOWN);

        // A bare ACK padded to the Ethernet minimum with bytes that spell a
        // request: padding is not payload (the IP length says where data ends).
        let mut padded = ipv4().tcp(4, 80).tcp_flags(TCP_ACK).build();
        padded.extend_from_slice(b"GET / ");
        let k = key4(IPPROTO_TCP, 4, 80, Hook::Ingress);
        assert_eq!(h.l7_after(Hook::Ingress, &padded, &k), l7_proto::L7_UNKNOWN);
        assert_eq!(
            h.expect_flow(&k).bytes,
            padded.len() as u64,
            "bytes are skb->len"
        );
        let mut padded6 = ipv6().udp(4, 53).build();
        padded6.extend_from_slice(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        let k = key6(IPPROTO_UDP, 4, 53, Hook::Ingress);
        assert_eq!(
            h.l7_after(Hook::Ingress, &padded6, &k),
            l7_proto::L7_UNKNOWN
        );
    }
);

privileged_test!(
    /// The LRU never holds more than --max-flows; every flow created is counted,
    /// so created minus held is what was evicted.
    fn max_flows_bounds_the_table() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load_with(&mut object, 100, true);
        assert_eq!(h.skel.maps.flows.max_entries(), 100);
        for sport in 1..=1000u16 {
            h.run(Hook::Ingress, &ipv4().udp(sport, 53).payload(4).build());
        }
        let flows = h.flows();
        let stats = h.stats().total();
        eprintln!(
            "max_flows 100, 1000 flows: {} held, {} created",
            flows.len(),
            stats.flows_created
        );
        assert_eq!(stats.flows_created, 1000);
        assert_eq!(stats.packets, 1000);
        assert_eq!(stats.insert_failed, 0);
        assert!(
            flows.len() <= 100,
            "{} flows in a 100-flow table",
            flows.len()
        );
        // The LRU frees a batch of the oldest entries at a time, never the newest.
        assert!(flows.len() >= 50, "only {} flows held", flows.len());
        let newest = key4(IPPROTO_UDP, 1000, 53, Hook::Ingress);
        assert_eq!(h.expect_flow(&newest).packets, 1);
        assert!(flows
            .iter()
            .all(|(k, v)| k.sport > 1000 - 200 && v.packets == 1));
    }
);

/// Fills a flow table with `n` distinct flows through BPF_MAP_UPDATE_BATCH.
fn fill(map: &dyn MapCore, n: u32) -> Vec<(flow_key, flow_value)> {
    let flows: Vec<(flow_key, flow_value)> = (0..n)
        .map(|i| {
            let mut k = flow_key {
                family: 6,
                protocol: IPPROTO_TCP,
                direction: (i % 2) as u8,
                sport: (i % 65536) as u16,
                dport: 443,
                ..Default::default()
            };
            k.src[..4].copy_from_slice(&i.to_be_bytes());
            k.dst[12..].copy_from_slice(&(!i).to_be_bytes());
            let v = flow_value {
                packets: u64::from(i) + 1,
                bytes: u64::from(i) * 100,
                first_seen_ns: u64::from(i),
                last_seen_ns: u64::from(i) + 5,
                tcp_flags: u64::from(i % 256),
                l7: (i % 6) as u8,
                ..Default::default()
            };
            (k, v)
        })
        .collect();
    for chunk in flows.chunks(65536) {
        let keys: Vec<u8> = chunk
            .iter()
            .flat_map(|(k, _)| tc_classifier::key_bytes(k).to_vec())
            .collect();
        let values: Vec<u8> = chunk
            .iter()
            .flat_map(|(_, v)| {
                // SAFETY: flow_value is plain data without implicit padding.
                unsafe { plain::as_bytes(v) }.to_vec()
            })
            .collect();
        map.update_batch(
            &keys,
            &values,
            chunk.len() as u32,
            MapFlags::ANY,
            MapFlags::ANY,
        )
        .expect("BPF_MAP_UPDATE_BATCH");
    }
    flows
}

fn sorted(flows: Vec<(flow_key, flow_value)>) -> Vec<([u8; 40], flow_value)> {
    let mut out: Vec<([u8; 40], flow_value)> = flows
        .into_iter()
        .map(|(k, v)| {
            let mut raw = [0u8; 40];
            raw.copy_from_slice(tc_classifier::key_bytes(&k));
            (raw, v)
        })
        .collect();
    out.sort_by_key(|(raw, _)| *raw);
    out
}

fn same_flows(got: Vec<(flow_key, flow_value)>, want: &[([u8; 40], flow_value)], how: &str) {
    let got = sorted(got);
    assert_eq!(got.len(), want.len(), "{how}: flow count");
    for ((gk, gv), (wk, wv)) in got.iter().zip(want) {
        assert_eq!(gk, wk, "{how}: keys");
        assert_eq!(
            (
                gv.packets,
                gv.bytes,
                gv.first_seen_ns,
                gv.last_seen_ns,
                gv.tcp_flags,
                gv.l7
            ),
            (
                wv.packets,
                wv.bytes,
                wv.first_seen_ns,
                wv.last_seen_ns,
                wv.tcp_flags,
                wv.l7
            ),
            "{how}: values"
        );
    }
}

privileged_test!(
    /// read_flows reads every one of a million flows, and quickly; so does the
    /// key-by-key fallback, slowly. Timings go to stderr (`--nocapture`).
    fn read_flows_reads_a_million_flows() {
        const N: u32 = 1_000_000;
        let mut object = MaybeUninit::uninit();
        // Room to spare: an LRU at capacity may evict while it is being filled.
        let h = Harness::load_with(&mut object, 1 << 20, true);
        let map = &h.skel.maps.flows;

        let started = Instant::now();
        let want = sorted(fill(map, N));
        let filled = started.elapsed();

        let started = Instant::now();
        let batched = tc_classifier::read_flows(map).expect("read_flows");
        let batched_time = started.elapsed();
        same_flows(batched, &want, "read_flows");

        let started = Instant::now();
        let by_key = tc_classifier::read_flows_by_key(map).expect("read_flows_by_key");
        let by_key_time = started.elapsed();
        same_flows(by_key, &want, "read_flows_by_key");

        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        eprintln!(
            "{profile}: {N} flows: filled in {filled:?}, read_flows {batched_time:?}, key by key {by_key_time:?}"
        );
        // A generous bound that only a regression (short batches, a slow path
        // taken by accident) would cross.
        assert!(
            batched_time < Duration::from_secs(10),
            "read_flows took {batched_time:?}"
        );
    }
);

privileged_test!(
    /// An empty table reads as empty, and a table of one reads as one: the
    /// ENOENT of the first batch carries its entries.
    fn read_flows_at_the_edges() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load_with(&mut object, 8, true);
        assert!(tc_classifier::read_flows(&h.skel.maps.flows)
            .unwrap()
            .is_empty());
        assert!(tc_classifier::read_flows_by_key(&h.skel.maps.flows)
            .unwrap()
            .is_empty());
        for n in 1..=8 {
            h.run(Hook::Egress, &ipv4().udp(n, 9).build());
            assert_eq!(h.flows().len(), usize::from(n));
            assert_eq!(
                tc_classifier::read_flows_by_key(&h.skel.maps.flows)
                    .unwrap()
                    .len(),
                usize::from(n)
            );
        }
    }
);

fn tcx_link(prog: std::os::fd::BorrowedFd<'_>, ifindex: u32, attach: u32) -> OwnedFd {
    // SAFETY: plain data; sz tells libbpf which fields we know.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of_val(&opts) as _;
    let fd =
        unsafe { libbpf_sys::bpf_link_create(prog.as_raw_fd(), ifindex as i32, attach, &opts) };
    assert!(
        fd >= 0,
        "tcx link: {}",
        std::io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: a fresh fd that we own from here on.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn find(flows: &[(flow_key, flow_value)], pred: impl Fn(&flow_key) -> bool) -> Option<&flow_value> {
    flows.iter().find(|(k, _)| pred(k)).map(|(_, v)| v)
}

privileged_test!(
    /// With real traffic: two tc_classifiers under tcx and two under clsact on
    /// the same hooks all see every packet, and the stack still delivers it, so
    /// the verdict really is "continue" on both attach paths. The payload of a
    /// TCP exchange (in page fragments on egress) is guessed as HTTP both ways.
    fn continue_verdict_under_tcx_and_clsact_with_real_traffic() {
        let pair = VethPair::new();
        let mut objects: [MaybeUninit<OpenObject>; 4] =
            std::array::from_fn(|_| MaybeUninit::uninit());
        let [o1, o2, o3, o4] = &mut objects;
        let skels = [
            tc_classifier::load(o1, None, 1024, true).unwrap(),
            tc_classifier::load(o2, None, 1024, true).unwrap(),
            tc_classifier::load(o3, None, 1024, false).unwrap(),
            tc_classifier::load(o4, None, 1024, false).unwrap(),
        ];
        let fds: Vec<(i32, i32)> = skels
            .iter()
            .map(|s| {
                (
                    s.progs.tc_ingress.as_fd().as_raw_fd(),
                    s.progs.tc_egress.as_fd().as_raw_fd(),
                )
            })
            .collect();
        let dev = pair.dev.clone();
        let (links, udp_rx, listener) = VethPair::in_netns(&pair.ns, move || {
            let ifindex = nix::net::if_::if_nametoindex(dev.as_str()).expect("ifindex");
            // SAFETY: the skeletons outlive this closure.
            let fd = |raw: i32| unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            let mut links = Vec::new();
            for (ingress, egress) in &fds[..2] {
                links.push(tcx_link(fd(*ingress), ifindex, libbpf_sys::BPF_TCX_INGRESS));
                links.push(tcx_link(fd(*egress), ifindex, libbpf_sys::BPF_TCX_EGRESS));
            }
            for (i, (ingress, egress)) in fds[2..].iter().enumerate() {
                let prio = i as u32 + 1;
                let mut hook = TcHookBuilder::new(fd(*ingress))
                    .ifindex(ifindex as i32)
                    .replace(true)
                    .handle(prio)
                    .priority(prio)
                    .hook(TC_INGRESS);
                if i == 0 {
                    hook.create().expect("clsact");
                }
                hook.attach().expect("clsact ingress filter");
                let mut hook = TcHookBuilder::new(fd(*egress))
                    .ifindex(ifindex as i32)
                    .replace(true)
                    .handle(prio)
                    .priority(prio)
                    .hook(libbpf_rs::TC_EGRESS);
                hook.attach().expect("clsact egress filter");
            }
            let udp = UdpSocket::bind((common::ADDR, 9000)).expect("bind udp");
            udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let listener = TcpListener::bind((common::ADDR, 8080)).expect("listen");
            (links, udp, listener)
        });

        let to: SocketAddr = format!("{}:9000", common::ADDR).parse().unwrap();
        pair.send_udp(to, 5, 20);
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            let (n, _) = udp_rx
                .recv_from(&mut buf)
                .expect("the stack delivers every datagram");
            assert_eq!(n, 20);
        }

        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut req = [0u8; 256];
            let n = conn.read(&mut req).expect("read request");
            assert!(req[..n].starts_with(b"GET /"));
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .expect("write response");
        });
        let peer_ns = pair.peer_ns.clone();
        let response = VethPair::in_netns(&peer_ns, || {
            let mut conn = TcpStream::connect_timeout(
                &format!("{}:8080", common::ADDR).parse().unwrap(),
                Duration::from_secs(5),
            )
            .expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            conn.write_all(b"GET / HTTP/1.1\r\nHost: meshbpf\r\n\r\n")
                .expect("write request");
            let mut response = Vec::new();
            conn.read_to_end(&mut response).expect("read response");
            response
        });
        server.join().expect("server");
        assert!(response.starts_with(b"HTTP/1.1 200 OK"));

        let addr: Ipv4Addr = common::ADDR.parse().unwrap();
        let peer: Ipv4Addr = common::PEER_ADDR.parse().unwrap();
        let v4 = |a: &[u8; 16], want: Ipv4Addr| a[..4] == want.octets();
        for (i, skel) in skels.iter().enumerate() {
            let flows = tc_classifier::read_flows(&skel.maps.flows).unwrap();
            let udp = find(&flows, |k| {
                k.protocol == IPPROTO_UDP && k.dport == 9000 && k.direction == 0 && v4(&k.src, peer)
            })
            .unwrap_or_else(|| panic!("program {i} saw no UDP flow"));
            assert_eq!(udp.packets, 5, "program {i}");
            assert_eq!(udp.bytes, 5 * (14 + 20 + 8 + 20), "program {i}");
            let request = find(&flows, |k| {
                k.protocol == IPPROTO_TCP && k.dport == 8080 && k.direction == 0 && v4(&k.dst, addr)
            })
            .unwrap_or_else(|| panic!("program {i} saw no request flow"));
            assert_eq!(
                request.l7,
                l7_proto::L7_HTTP1.0 as u8,
                "program {i}: request"
            );
            assert_eq!(
                request.tcp_flags & u64::from(TCP_SYN | TCP_ACK | TCP_PSH),
                u64::from(TCP_SYN | TCP_ACK | TCP_PSH),
                "program {i}"
            );
            let reply = find(&flows, |k| {
                k.protocol == IPPROTO_TCP && k.sport == 8080 && k.direction == 1 && v4(&k.src, addr)
            })
            .unwrap_or_else(|| panic!("program {i} saw no response flow"));
            assert_eq!(
                reply.l7,
                l7_proto::L7_HTTP1.0 as u8,
                "program {i}: response"
            );
            let stats = tc_classifier::read_stats(&skel.maps.flow_stats).unwrap();
            eprintln!("program {i}: {stats:?}");
        }
        drop(links);
    }
);

privileged_test!(
    /// Real packets whose headers are not in the linear area: an AF_PACKET send
    /// with a virtio-net header of hdr_len 14 keeps only the Ethernet header
    /// linear and puts the rest of a large frame in page fragments. The program
    /// must pull the headers in, count it, and still key and guess the flow.
    fn headers_outside_the_linear_area_are_pulled() {
        let pair = VethPair::new();
        // Room for a 5000-byte frame on both ends, so that veth delivers it.
        common::must(&format!("ip -n {} link set {} mtu 9000", pair.ns, pair.dev));
        common::must(&format!(
            "ip -n {} link set {} mtu 9000",
            pair.peer_ns, pair.peer_dev
        ));
        let mut object = MaybeUninit::uninit();
        let skel = tc_classifier::load(&mut object, None, 64, true).unwrap();
        let egress = skel.progs.tc_egress.as_fd().as_raw_fd();
        let dev = pair.dev.clone();

        let mut request = b"GET /big HTTP/1.1\r\n".to_vec();
        request.resize(5000 - 54, b'x');
        let frame = ipv4()
            .tcp(40000, 80)
            .tcp_flags(TCP_PSH | TCP_ACK)
            .bytes(&request)
            .build();
        assert_eq!(frame.len(), 5000);

        let sent = frame.clone();
        let _link = VethPair::in_netns(&pair.ns, move || {
            let ifindex = nix::net::if_::if_nametoindex(dev.as_str()).expect("ifindex");
            // SAFETY: the skeleton outlives this closure.
            let prog = unsafe { std::os::fd::BorrowedFd::borrow_raw(egress) };
            let link = tcx_link(prog, ifindex, libbpf_sys::BPF_TCX_EGRESS);
            send_with_linear_ethernet_header(ifindex, &sent);
            link
        });

        let flows = tc_classifier::read_flows(&skel.maps.flows).unwrap();
        let stats = tc_classifier::read_stats(&skel.maps.flow_stats).unwrap();
        let k = key4(IPPROTO_TCP, 40000, 80, Hook::Egress);
        let v = find(&flows, |f| {
            tc_classifier::key_bytes(f) == tc_classifier::key_bytes(&k)
        })
        .unwrap_or_else(|| panic!("no pulled flow among {flows:?}\n{stats:?}"));
        assert_eq!((v.packets, v.bytes), (1, 5000));
        assert_eq!(v.tcp_flags, u64::from(TCP_PSH | TCP_ACK));
        assert_eq!(v.l7, l7_proto::L7_HTTP1.0 as u8);
        assert_eq!(stats.egress.pulled, 1, "{stats:?}");
        assert_eq!(stats.egress.not_ip, 0, "{stats:?}");
    }
);

/// Sends `frame` out of `ifindex` through AF_PACKET with PACKET_VNET_HDR
/// and a virtio-net header whose hdr_len keeps only the Ethernet header in
/// the skb's linear area (frames of a page or more get paged data).
fn send_with_linear_ethernet_header(ifindex: u32, frame: &[u8]) {
    // SAFETY: plain socket calls on buffers that outlive them.
    unsafe {
        let proto = (libc::ETH_P_IP as u16).to_be();
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let sock = OwnedFd::from_raw_fd(fd);
        let on: libc::c_int = 1;
        let ret = libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of_val(&on) as u32,
        );
        assert_eq!(
            ret,
            0,
            "PACKET_VNET_HDR: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // struct virtio_net_hdr: flags, gso_type, hdr_len (little endian),
        // gso_size, csum_start, csum_offset.
        let mut buf = vec![0u8, 0, ETH_HLEN as u8, 0, 0, 0, 0, 0, 0, 0];
        buf.extend_from_slice(frame);
        let sent = libc::sendto(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of_val(&addr) as u32,
        );
        assert_eq!(
            sent,
            buf.len() as isize,
            "AF_PACKET send: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A mark the packet arrives with, which classes that set no mark keep.
const MARK_IN: u32 = 0x5;

const CLASSES: &str = r#"{
  "classes": {
    "interactive": { "priority": "1:10" },
    "bulk":        { "priority": "1:30", "mark": "0x20" },
    "web":         { "mark": 80 },
    "rest":        { "mark": "0x99" } },
  "rules": [
    { "class": "interactive", "protocol": "tcp", "dport": 22 },
    { "class": "bulk", "dst": "198.51.100.0/24", "protocol": "udp" },
    { "class": "web", "l7": "tls", "direction": "egress" },
    { "class": "bulk", "dst": "2001:db8:ffff::/48", "sport": "1000-2000" },
    { "class": "interactive", "dport": "0-10" } ],
  "default": "rest" }"#;

privileged_test!(
    fn classes_set_priority_and_mark_by_the_first_matching_rule() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let ssh = ipv4().tcp(40000, 22).tcp_flags(TCP_SYN).build();
        assert_eq!(
            h.run_skb(Hook::Ingress, &ssh, MARK_IN),
            (MARK_IN, 0),
            "no classes applied yet: the packet is untouched"
        );
        assert!(h.class_packets().is_empty());

        h.apply_classes(CLASSES);
        let (interactive, bulk, rest) = (0x10010, 0x10030, 0x99);
        // The flow was seen before the classes: it is classified now.
        assert_eq!(
            h.run_skb(Hook::Ingress, &ssh, MARK_IN),
            (MARK_IN, interactive)
        );
        assert_eq!(
            h.run_skb(Hook::Egress, &ssh, MARK_IN),
            (MARK_IN, interactive)
        );
        let udp = ipv4().udp(5000, 5001).payload(20).build();
        assert_eq!(h.run_skb(Hook::Egress, &udp, MARK_IN), (0x20, bulk));
        // TCP to 198.51.100.7 is not the bulk rule's protocol: the default.
        let tcp = ipv4().tcp(40000, 8080).tcp_flags(TCP_SYN).build();
        assert_eq!(h.run_skb(Hook::Egress, &tcp, MARK_IN), (rest, 0));
        // IPv6 from port 1500 into the bulk /48; from port 3000, the default.
        let v6 = ipv6().udp(1500, 9).payload(8).build();
        assert_eq!(h.run_skb(Hook::Ingress, &v6, MARK_IN), (0x20, bulk));
        let v6_other = ipv6().udp(3000, 4000).payload(8).build();
        assert_eq!(h.run_skb(Hook::Ingress, &v6_other, MARK_IN), (rest, 0));
        // Ports 0-10 match TCP and UDP only, never an ICMP echo (type 8, code
        // 0, which flows keep in the port fields).
        let echo = ipv4().icmp(8, 0).payload(8).build();
        assert_eq!(h.run_skb(Hook::Egress, &echo, MARK_IN), (rest, 0));
        let low_port = ipv4().tcp(40001, 7).tcp_flags(TCP_SYN).build();
        assert_eq!(
            h.run_skb(Hook::Egress, &low_port, MARK_IN),
            (MARK_IN, interactive)
        );
        // Not IP: no flow and no class.
        let arp = Frame::eth().arp_request(SRC4, DST4).build();
        assert_eq!(h.run_skb(Hook::Egress, &arp, MARK_IN), (MARK_IN, 0));

        let mut counted = h.class_packets();
        counted.sort();
        assert_eq!(
            counted,
            vec![
                ("bulk".into(), 1, 1),
                ("interactive".into(), 1, 2),
                ("rest".into(), 1, 2),
                ("unclassified".into(), 0, 0),
                ("web".into(), 0, 0),
            ]
        );
    }
);

privileged_test!(
    /// Class rules on protocols without a name of their own in the program:
    /// GRE by keyword, SCTP by number, and 0 (hopopt), which is a protocol
    /// of its own and not "any".
    fn classes_by_protocol_number_and_keyword() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        h.apply_classes(
            r#"{ "classes": { "tunnel": { "mark": 47 }, "sctp": { "mark": 132 },
                              "zero": { "mark": 1000 }, "rest": { "mark": 9 } },
                 "rules": [ { "class": "tunnel", "protocol": "gre" },
                            { "class": "sctp", "protocol": 132, "dst": "198.51.100.0/24" },
                            { "class": "zero", "protocol": 0 } ],
                 "default": "rest" }"#,
        );
        let gre = ipv4().protocol(47).payload(24).build();
        assert_eq!(h.run_skb(Hook::Egress, &gre, 0), (47, 0));
        let gre6 = ipv6().protocol(47).payload(24).build();
        assert_eq!(h.run_skb(Hook::Ingress, &gre6, 0), (47, 0), "either family");
        let sctp = ipv4().protocol(132).payload(12).build();
        assert_eq!(h.run_skb(Hook::Egress, &sctp, 0), (132, 0));
        let sctp6 = ipv6().protocol(132).payload(12).build();
        assert_eq!(
            h.run_skb(Hook::Egress, &sctp6, 0),
            (9, 0),
            "an IPv4 dst: IPv4 only"
        );
        let zero = ipv4().protocol(0).payload(8).build();
        assert_eq!(h.run_skb(Hook::Ingress, &zero, 0), (1000, 0));
        // Neither TCP, UDP nor ICMP is protocol 0, nor is IPv6 behind a
        // hop-by-hop header (which the parser walks past).
        let udp = ipv4().udp(5000, 5001).payload(20).build();
        assert_eq!(h.run_skb(Hook::Egress, &udp, 0), (9, 0));
        let echo = ipv4().icmp(8, 0).payload(8).build();
        assert_eq!(h.run_skb(Hook::Egress, &echo, 0), (9, 0));
        let hop_udp = ipv6().hop_by_hop(0).udp(7, 8).payload(8).build();
        assert_eq!(h.run_skb(Hook::Ingress, &hop_udp, 0), (9, 0));

        let mut counted = h.class_packets();
        counted.sort();
        assert_eq!(
            counted,
            vec![
                ("rest".into(), 1, 3),
                ("sctp".into(), 0, 1),
                ("tunnel".into(), 1, 1),
                ("unclassified".into(), 0, 0),
                ("zero".into(), 1, 0),
            ]
        );
    }
);

privileged_test!(
    fn a_flow_is_classified_again_when_its_l7_guess_arrives() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        h.apply_classes(CLASSES);
        let syn = ipv4().tcp(40000, 8443).tcp_flags(TCP_SYN).build();
        let hello = ipv4()
            .tcp(40000, 8443)
            .tcp_flags(TCP_ACK | TCP_PSH)
            .bytes(&[
                0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
            ])
            .build();
        let ack = ipv4().tcp(40000, 8443).tcp_flags(TCP_ACK).build();
        assert_eq!(
            h.run_skb(Hook::Egress, &syn, 0),
            (0x99, 0),
            "unknown yet: the default"
        );
        assert_eq!(h.run_skb(Hook::Egress, &hello, 0), (80, 0), "TLS: web");
        assert_eq!(
            h.run_skb(Hook::Egress, &ack, 0),
            (80, 0),
            "and it stays web"
        );
        // The web rule is egress only.
        h.run_skb(Hook::Ingress, &syn, 0);
        assert_eq!(h.run_skb(Hook::Ingress, &hello, 0), (0x99, 0));
    }
);

privileged_test!(
    fn applying_new_classes_replaces_the_old_ones_for_every_flow() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        h.apply_classes(CLASSES);
        let ssh = ipv4().tcp(40000, 22).tcp_flags(TCP_ACK).build();
        assert_eq!(h.run_skb(Hook::Egress, &ssh, 0), (0, 0x10010));

        h.apply_classes(
            r#"{ "classes": { "ops": { "mark": 7 } },
                         "rules": [ { "class": "ops", "dport": 22 } ] }"#,
        );
        assert_eq!(
            h.run_skb(Hook::Egress, &ssh, 0),
            (7, 0),
            "the cached class is gone"
        );
        let udp = ipv4().udp(5000, 5001).payload(20).build();
        assert_eq!(
            h.run_skb(Hook::Egress, &udp, MARK_IN),
            (MARK_IN, 0),
            "no default now"
        );
        assert_eq!(
            h.class_packets(),
            vec![("unclassified".into(), 0, 1), ("ops".into(), 0, 1)],
            "counters start again with the new classes"
        );

        // A third apply reuses the first slot: nothing of the first file is left.
        h.apply_classes(r#"{ "classes": { "x": { "priority": 3 } }, "rules": [] }"#);
        assert_eq!(h.run_skb(Hook::Egress, &ssh, 0), (0, 0));
        assert_eq!(
            h.class_packets(),
            vec![("unclassified".into(), 0, 1), ("x".into(), 0, 0)]
        );
    }
);
