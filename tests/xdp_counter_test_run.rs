//! xdp_counter under BPF_PROG_TEST_RUN: the real verifier, the real kernel
//! and the real per-CPU map, fed hand-built and garbage frames.
//!
//! Every test loads its own skeleton, so tests own separate maps and can run
//! in parallel. They need root; without it they skip, unless
//! MESHBPF_REQUIRE_PRIVILEGED=1 makes that a failure, so a privileged run
//! cannot pass by skipping everything.

mod common;

use common::rng::XorShift;

use std::mem::MaybeUninit;
use std::net::Ipv6Addr;

use common::frames::{hex, Frame, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use common::xdp_counter::{zero, Harness, ETH_HLEN, XDP_PASS};
use libbpf_rs::ErrorKind;
use meshbpf::programs::xdp_counter::traffic::Breakdown;

const SRC4: [u8; 4] = [192, 0, 2, 1];
const DST4: [u8; 4] = [192, 0, 2, 2];
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

fn ipv4() -> Frame {
    Frame::eth().ipv4(SRC4, DST4)
}

fn ipv6() -> Frame {
    Frame::eth().ipv6(SRC6, DST6)
}

privileged_test!(
    fn ipv4_tcp_udp_icmp() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        h.assert_counted(&ipv4().tcp(40000, 443).payload(100).build(), "ipv4", "tcp");
        h.assert_counted(&ipv4().udp(40000, 53).payload(30).build(), "ipv4", "udp");
        h.assert_counted(&ipv4().icmp(8, 0).payload(56).build(), "ipv4", "icmp");
        // Headers with nothing after them are still whole headers.
        h.assert_counted(&ipv4().tcp(1, 2).build(), "ipv4", "tcp");
        h.assert_counted(&ipv4().udp(1, 2).build(), "ipv4", "udp");
        h.assert_counted(&ipv4().icmp(0, 0).build(), "ipv4", "icmp");
        h.assert_counted(&ipv4().protocol(132).payload(12).build(), "ipv4", "other");
    }
);

privileged_test!(
    fn ipv6_tcp_udp_icmpv6() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        h.assert_counted(&ipv6().tcp(40000, 443).payload(100).build(), "ipv6", "tcp");
        h.assert_counted(&ipv6().udp(40000, 53).payload(30).build(), "ipv6", "udp");
        h.assert_counted(&ipv6().icmpv6(128, 0).payload(56).build(), "ipv6", "icmpv6");
        h.assert_counted(&ipv6().tcp(1, 2).build(), "ipv6", "tcp");
        h.assert_counted(&ipv6().udp(1, 2).build(), "ipv6", "udp");
        h.assert_counted(&ipv6().icmpv6(135, 0).build(), "ipv6", "icmpv6");
        h.assert_counted(&ipv6().build(), "ipv6", "other");
    }
);

privileged_test!(
    fn arp_and_non_ip_frames() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let arp = Frame::eth().arp_request(SRC4, DST4);
        h.assert_counted(&arp.build(), "arp", "other");
        h.assert_counted(
            &Frame::eth().svlan(7).arp_request(SRC4, DST4).build(),
            "arp",
            "other",
        );
        // Local experimental ethertype, then an 802.3 length field.
        h.assert_counted(
            &Frame::eth().ethertype(0x88B5).payload(46).build(),
            "other",
            "other",
        );
        h.assert_counted(
            &Frame::eth().ethertype(0x002E).payload(46).build(),
            "other",
            "other",
        );
        h.assert_counted(&Frame::eth().ethertype(0x0800).build(), "other", "other");
        h.assert_counted(
            &Frame::eth().vlan(5).ethertype(0x88B5).payload(46).build(),
            "other",
            "other",
        );
    }
);

privileged_test!(
    fn ip_version_must_match_the_ethertype() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        for version in [0, 6, 15] {
            let frame = ipv4().version(version).udp(1, 2).payload(40).build();
            h.assert_counted(&frame, "other", "other");
        }
        for version in [0, 4, 15] {
            let frame = ipv6().version(version).udp(1, 2).payload(40).build();
            h.assert_counted(&frame, "other", "other");
        }
    }
);

privileged_test!(
    fn vlan_tags() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let dot1q = Frame::eth()
            .vlan(100)
            .ipv4(SRC4, DST4)
            .udp(5000, 5001)
            .payload(20);
        h.assert_counted(&dot1q.build(), "ipv4", "udp");
        let qinq = Frame::eth()
            .svlan(10)
            .vlan(20)
            .ipv6(SRC6, DST6)
            .tcp(1, 2)
            .payload(20);
        h.assert_counted(&qinq.build(), "ipv6", "tcp");
        let double_dot1q = Frame::eth().vlan(10).vlan(20).ipv4(SRC4, DST4).icmp(8, 0);
        h.assert_counted(&double_dot1q.build(), "ipv4", "icmp");
        let three_tags = Frame::eth()
            .svlan(10)
            .vlan(20)
            .vlan(30)
            .ipv4(SRC4, DST4)
            .udp(1, 2)
            .payload(20);
        h.assert_counted(&three_tags.build(), "other", "other");
        let three_tags = Frame::eth()
            .svlan(10)
            .svlan(20)
            .svlan(30)
            .ipv6(SRC6, DST6)
            .udp(1, 2);
        h.assert_counted(&three_tags.build(), "other", "other");
    }
);

privileged_test!(
    fn ipv4_options_at_every_ihl() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        for ihl in 6..=15u8 {
            // NOP options: the parser must skip them by IHL, not parse them.
            let options = vec![1u8; (usize::from(ihl) - 5) * 4];
            let udp = ipv4().options(&options).udp(1, 2).payload(8).build();
            assert_eq!(udp[ETH_HLEN] & 0x0F, ihl);
            h.assert_counted(&udp, "ipv4", "udp");
            let tcp = ipv4().options(&options).tcp(1, 2).build();
            h.assert_counted(&tcp, "ipv4", "tcp");
            // IHL says options follow, but the frame ends inside them.
            let short = ipv4().options(&options).tcp(1, 2).build();
            h.assert_counted(&short[..ETH_HLEN + 20], "other", "other");
        }
    }
);

privileged_test!(
    fn ipv4_ihl_below_5_is_other() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        for ihl in 0..5 {
            let frame = ipv4().ihl(ihl).udp(1, 2).payload(40).build();
            h.assert_counted(&frame, "other", "other");
        }
    }
);

privileged_test!(
    fn ipv4_fragments() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        // Non-first fragments carry no L4 header, only the protocol number.
        for (proto, l4) in [
            (IPPROTO_UDP, "udp"),
            (IPPROTO_TCP, "tcp"),
            (IPPROTO_ICMP, "icmp"),
            (IPPROTO_ICMPV6, "other"),
        ] {
            for (offset, more) in [(185, true), (185, false), (1, false), (0x1FFF, false)] {
                let frame = ipv4().fragment(offset, more).protocol(proto).build();
                h.assert_counted(&frame, "ipv4", l4);
                let frame = ipv4()
                    .fragment(offset, more)
                    .protocol(proto)
                    .payload(3)
                    .build();
                h.assert_counted(&frame, "ipv4", l4);
            }
        }
        // A first fragment carries the L4 header, so it must be whole.
        let first = ipv4().fragment(0, true).udp(1, 2).payload(100);
        h.assert_counted(&first.build(), "ipv4", "udp");
        let cut = first.span("udp").start + 4;
        h.assert_counted(&first.clone().truncate(cut).build(), "ipv4", "other");
        // DF shares the 16-bit field with the offset and must not look like one.
        let df = ipv4().dont_fragment().udp(1, 2).payload(100);
        h.assert_counted(&df.build(), "ipv4", "udp");
        let cut = df.span("udp").start + 4;
        h.assert_counted(&df.clone().truncate(cut).build(), "ipv4", "other");
        let df_later = ipv4()
            .dont_fragment()
            .fragment(10, false)
            .protocol(IPPROTO_UDP);
        h.assert_counted(&df_later.build(), "ipv4", "udp");
    }
);

privileged_test!(
    fn ipv6_each_extension_header() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        // Non-zero lengths check each header's own length arithmetic.
        let with_ext = [
            ("hop_by_hop", ipv6().hop_by_hop(0)),
            ("hop_by_hop", ipv6().hop_by_hop(3)),
            ("routing", ipv6().routing(0)),
            ("routing", ipv6().routing(2)),
            ("dest_opts", ipv6().dest_opts(0)),
            ("dest_opts", ipv6().dest_opts(40)),
            ("fragment", ipv6().ipv6_fragment(0, true)),
            ("fragment", ipv6().ipv6_fragment(0, false)),
            ("ah", ipv6().ah(4)),
            ("ah", ipv6().ah(20)),
        ];
        for (name, prefix) in with_ext {
            let frame = prefix.clone().udp(1, 2).payload(10);
            assert_eq!(frame.span(name).start, ETH_HLEN + 40);
            h.assert_counted(&frame.build(), "ipv6", "udp");
            h.assert_counted(&prefix.clone().tcp(1, 2).build(), "ipv6", "tcp");
            h.assert_counted(&prefix.clone().icmpv6(128, 0).build(), "ipv6", "icmpv6");
            h.assert_counted(&prefix.build(), "ipv6", "other");
            // The L4 header begins where the header's length says, not earlier.
            let bytes = frame.build();
            h.assert_counted(&bytes[..frame.span("udp").end - 1], "ipv6", "other");
        }
    }
);

privileged_test!(
    fn ipv6_extension_chains() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let chain = ipv6()
            .hop_by_hop(1)
            .dest_opts(0)
            .routing(2)
            .ipv6_fragment(0, true)
            .ah(12)
            .dest_opts(1)
            .tcp(1, 2)
            .payload(30);
        h.assert_counted(&chain.build(), "ipv6", "tcp");
        let seven = (0..6).fold(ipv6().hop_by_hop(0), |f, _| f.dest_opts(0));
        h.assert_counted(&seven.clone().udp(1, 2).build(), "ipv6", "udp");
        let nine = (0..8).fold(ipv6().hop_by_hop(0), |f, _| f.dest_opts(0));
        h.assert_counted(&nine.udp(1, 2).build(), "ipv6", "other");
        let nine = (0..8).fold(ipv6().hop_by_hop(0), |f, _| f.ipv6_fragment(0, false));
        h.assert_counted(&nine.udp(1, 2).build(), "ipv6", "other");
        // A ninth header that is a later fragment is past the limit too.
        let eight = (0..7).fold(ipv6().hop_by_hop(0), |f, _| f.dest_opts(0));
        let later = eight.ipv6_fragment(10, false).udp(1, 2);
        h.assert_counted(&later.build(), "ipv6", "other");
    }
);

privileged_test!(
    /// A layer counts only when its whole header is there and valid: an ARP
    /// header with its addresses, at the lengths its types need; an L4
    /// header within the IP datagram's own length, not in the frame's
    /// padding after it.
    fn headers_must_be_whole_by_their_own_lengths() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let arp = |htype: u16, ptype: u16, hlen: u8, plen: u8, body: usize| {
            let mut bytes = [htype.to_be_bytes(), ptype.to_be_bytes()].concat();
            bytes.extend([hlen, plen, 0, 1]);
            bytes.extend(std::iter::repeat_n(0u8, body));
            Frame::eth().ethertype(0x0806).bytes(&bytes).build()
        };
        h.assert_counted(&arp(1, 0x0800, 6, 4, 20), "arp", "other");
        h.assert_counted(&arp(1, 0x0800, 6, 4, 19), "other", "other");
        h.assert_counted(&arp(1, 0x0800, 8, 4, 24), "other", "other");
        h.assert_counted(&arp(1, 0x0800, 6, 16, 44), "other", "other");
        h.assert_counted(&arp(1, 0x0800, 0, 4, 20), "other", "other");
        // Another hardware type with its own address length is ARP still.
        h.assert_counted(&arp(32, 0x0800, 20, 4, 48), "arp", "other");

        // A 24-byte datagram (4 bytes of UDP) padded to 60 bytes.
        let mut short = ipv4()
            .protocol(IPPROTO_UDP)
            .bytes(&[0, 1, 0, 2])
            .payload(32)
            .build();
        short[16..18].copy_from_slice(&24u16.to_be_bytes());
        h.assert_counted(&short, "ipv4", "other");
        short[16..18].copy_from_slice(&28u16.to_be_bytes());
        h.assert_counted(&short, "ipv4", "udp");
        // A total length shorter than the header is not IPv4.
        short[16..18].copy_from_slice(&19u16.to_be_bytes());
        h.assert_counted(&short, "other", "other");
        // IPv6: 4 bytes of payload, then padding.
        let mut short6 = ipv6()
            .protocol(IPPROTO_UDP)
            .bytes(&[0, 1, 0, 2])
            .payload(32)
            .build();
        short6[18..20].copy_from_slice(&4u16.to_be_bytes());
        h.assert_counted(&short6, "ipv6", "other");
        short6[18..20].copy_from_slice(&8u16.to_be_bytes());
        h.assert_counted(&short6, "ipv6", "udp");
    }
);

privileged_test!(
    /// IPV6_EXT_MAX is 8: a chain of exactly 8 extension headers is within the
    /// limit, so its L4 header must still be classified.
    fn ipv6_chain_of_eight_extension_headers() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let eight = (0..7).fold(ipv6().hop_by_hop(0), |f, _| f.dest_opts(0));
        h.assert_counted(&eight.udp(1, 2).build(), "ipv6", "udp");
    }
);

privileged_test!(
    fn ipv6_fragments() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let first = ipv6().ipv6_fragment(0, true).udp(1, 2).payload(100);
        h.assert_counted(&first.build(), "ipv6", "udp");
        let cut = first.span("udp").start + 7;
        h.assert_counted(&first.clone().truncate(cut).build(), "ipv6", "other");
        for (proto, l4) in [
            (IPPROTO_UDP, "udp"),
            (IPPROTO_TCP, "tcp"),
            (IPPROTO_ICMPV6, "icmpv6"),
            (IPPROTO_ICMP, "other"),
        ] {
            for (offset, more) in [(185, true), (185, false), (1, false), (0x1FFF, true)] {
                let later = ipv6().ipv6_fragment(offset, more).protocol(proto);
                h.assert_counted(&later.build(), "ipv6", l4);
                let later = ipv6()
                    .hop_by_hop(0)
                    .ipv6_fragment(offset, more)
                    .protocol(proto)
                    .payload(5);
                h.assert_counted(&later.build(), "ipv6", l4);
            }
        }
    }
);

privileged_test!(
    /// Extension headers after a fragment header belong to the fragmentable part
    /// and travel only in the first fragment: a later fragment's data is opaque,
    /// and its protocol (here destination options) is not an L4 protocol.
    fn ipv6_later_fragment_data_is_not_parsed_as_headers() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let later = ipv6().ipv6_fragment(100, false).dest_opts(0).udp(1, 2);
        h.assert_counted(&later.build(), "ipv6", "other");
    }
);

privileged_test!(
    fn icmp_in_the_wrong_address_family_is_l4_other() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        h.assert_counted(&ipv6().icmp(8, 0).payload(56).build(), "ipv6", "other");
        h.assert_counted(&ipv4().icmpv6(128, 0).payload(56).build(), "ipv4", "other");
        h.assert_counted(&ipv6().dest_opts(0).icmp(8, 0).build(), "ipv6", "other");
    }
);

privileged_test!(
    fn truncation_at_every_byte() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);

        let qinq_tcp = Frame::eth()
            .svlan(10)
            .vlan(20)
            .ipv4(SRC4, DST4)
            .options(&[1; 8])
            .tcp(1, 2)
            .payload(4);
        h.sweep(
            &qinq_tcp,
            &[
                (qinq_tcp.span("ipv4").end, "ipv4", "other"),
                (qinq_tcp.span("tcp").end, "ipv4", "tcp"),
            ],
        );

        let ext_chain = Frame::eth()
            .vlan(30)
            .ipv6(SRC6, DST6)
            .hop_by_hop(1)
            .routing(1)
            .ipv6_fragment(0, true)
            .ah(4)
            .dest_opts(0)
            .udp(1, 2)
            .payload(3);
        h.sweep(
            &ext_chain,
            &[
                (ext_chain.span("ipv6").end, "ipv6", "other"),
                (ext_chain.span("udp").end, "ipv6", "udp"),
            ],
        );

        for (frame, l3, l4) in [
            (ipv4().udp(1, 2).payload(2), "ipv4", "udp"),
            (ipv4().icmp(8, 0), "ipv4", "icmp"),
            (ipv6().tcp(1, 2), "ipv6", "tcp"),
            (ipv6().icmpv6(128, 0), "ipv6", "icmpv6"),
        ] {
            h.sweep(
                &frame,
                &[
                    (frame.span(l3).end, l3, "other"),
                    (frame.span(l4).end, l3, l4),
                ],
            );
        }

        let arp = Frame::eth().vlan(1).arp_request(SRC4, DST4);
        // ARP needs its addresses too: 8 + 2 x (6 + 4) bytes.
        h.sweep(&arp, &[(arp.span("arp").end, "arp", "other")]);

        // Later fragments are classified as soon as the fragment information is.
        let later4 = ipv4().fragment(100, false).protocol(IPPROTO_UDP).payload(8);
        h.sweep(&later4, &[(later4.span("ipv4").end, "ipv4", "udp")]);
        let later6 = ipv6()
            .hop_by_hop(0)
            .ipv6_fragment(100, false)
            .protocol(IPPROTO_TCP)
            .payload(8);
        h.sweep(
            &later6,
            &[
                (later6.span("ipv6").end, "ipv6", "other"),
                (later6.span("fragment").end, "ipv6", "tcp"),
            ],
        );
    }
);

privileged_test!(
    /// The kernel refuses XDP test runs on less data than an Ethernet header
    /// (bpf_test_init: `user_size < ETH_HLEN` is -EINVAL), so the program's own
    /// handling of such frames cannot be exercised this way; the refusal is
    /// asserted so that a kernel that starts accepting them fails here.
    fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let frame = ipv4().udp(1, 2).build();
        for len in 0..ETH_HLEN {
            let err = h
                .run(&frame[..len], 1)
                .expect_err("a frame shorter than 14 bytes was accepted");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{len} bytes: {err}");
        }
        assert_eq!(h.traffic(), zero(), "the program never ran");
        h.assert_counted(&frame[..ETH_HLEN], "other", "other");
    }
);

privileged_test!(
    fn repeat_counts_every_run() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let frame = Frame::eth()
            .vlan(9)
            .ipv4(SRC4, DST4)
            .udp(1, 2)
            .payload(64)
            .build();
        h.assert_counted_times(&frame, 1000, "ipv4", "udp");
    }
);

/// Frames that reach deep into the parser, for the corpus to mutate.
fn templates() -> Vec<Vec<u8>> {
    [
        Frame::eth()
            .svlan(1)
            .vlan(2)
            .ipv4(SRC4, DST4)
            .options(&[1; 12])
            .tcp(1, 2),
        ipv4().udp(1, 2).payload(16),
        ipv4().icmp(8, 0),
        ipv4().fragment(3, true).protocol(IPPROTO_UDP).payload(16),
        Frame::eth()
            .vlan(3)
            .ipv6(SRC6, DST6)
            .hop_by_hop(0)
            .routing(1)
            .udp(1, 2),
        ipv6().ipv6_fragment(0, true).ah(4).dest_opts(0).tcp(1, 2),
        ipv6()
            .ipv6_fragment(7, false)
            .protocol(IPPROTO_ICMPV6)
            .payload(16),
        ipv6().icmpv6(128, 0),
        (0..8).fold(ipv6(), |f, _| f.dest_opts(0)).udp(1, 2),
        Frame::eth().arp_request(SRC4, DST4),
    ]
    .iter()
    .map(Frame::build)
    .collect()
}

/// Values that steer a parser into its branches when they land in an
/// ethertype, version/IHL, next-header or length byte.
const INTERESTING: [u8; 22] = [
    0x00, 0x01, 0x04, 0x05, 0x06, 0x0F, 0x11, 0x2B, 0x2C, 0x33, 0x3A, 0x3B, 0x3C, 0x45, 0x4F, 0x60,
    0x81, 0x86, 0x88, 0xA8, 0xDD, 0xFF,
];

privileged_test!(
    fn garbage_corpus_never_faults() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object);
        let templates = templates();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let runs = 4000u64;
        let mut bytes = 0u64;
        for _ in 0..runs {
            let frame = if rng.below(4) == 0 {
                // Mostly header-sized frames: that is where parsing happens.
                let len = if rng.below(4) == 0 {
                    ETH_HLEN + rng.below(1500)
                } else {
                    ETH_HLEN + rng.below(120)
                };
                (0..len).map(|_| rng.byte()).collect()
            } else {
                let mut frame = templates[rng.below(templates.len())].clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(frame.len());
                    frame[at] = if rng.below(2) == 0 {
                        INTERESTING[rng.below(INTERESTING.len())]
                    } else {
                        rng.byte()
                    };
                }
                if rng.below(2) == 0 {
                    frame.truncate(ETH_HLEN + rng.below(frame.len() - ETH_HLEN + 1));
                }
                frame
            };
            let verdict = h
                .run(&frame, 1)
                .unwrap_or_else(|e| panic!("test run failed: {e}\nframe: {}", hex(&frame)));
            assert_eq!(verdict, XDP_PASS, "frame: {}", hex(&frame));
            bytes += frame.len() as u64;
        }
        let traffic = h.traffic();
        let sum = |b: &Breakdown| {
            b.0.iter()
                .fold((0, 0), |(p, by), (_, c)| (p + c.packets, by + c.bytes))
        };
        assert_eq!(sum(&traffic.l3), (runs, bytes), "{traffic:?}");
        assert_eq!(sum(&traffic.l4), (runs, bytes), "{traffic:?}");
        assert_eq!((traffic.packets, traffic.bytes), (runs, bytes));
        // A corpus that never reached a slot would not exercise its path.
        for (name, counter) in traffic.l3.0.iter().chain(&traffic.l4.0) {
            assert!(
                counter.packets > 0,
                "the corpus never produced {name}: {traffic:?}"
            );
        }
    }
);
