//! xdp_mesh_filter under BPF_PROG_TEST_RUN: the real verifier, the real
//! kernel and the real maps, filled by the real compiler and `apply`, fed
//! hand-built frames.
//!
//! Every case checks the verdict and every counter the program keeps: the
//! snapshot of all of them before a run, plus exactly the changes the case
//! expects, must equal the snapshot after it, so a frame that lands in the
//! right verdict for the wrong reason (another rule, the default, a limiter)
//! fails, and so does one that moves anything else.
//!
//! Every test loads its own skeleton, so tests own separate maps and can run
//! in parallel. They need root; without it they skip, unless
//! MESHBPF_REQUIRE_PRIVILEGED=1 makes that a failure.

mod common;

use common::rng::XorShift;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::frames::{hex, Frame, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use libbpf_rs::{OpenObject, ProgramInput};
use meshbpf::programs::xdp_counter::traffic::Counter;
use meshbpf::programs::xdp_mesh_filter::{self as filter, XdpMeshFilterSkel};
use meshbpf::rules::compile::{self, CompiledFilter, PacketFields, Ports, Prefix, L4};
use meshbpf::rules::filter::{parse, FilterRules};
use meshbpf::rules::Action;
use serde_json::{json, Map, Value};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const ETH_HLEN: usize = 14;
/// An IP protocol (GRE) the filter has no class of its own for.
const IPPROTO_GRE: u8 = 47;
/// An ethertype (local experimental) that is neither IP nor ARP.
const ETH_P_EXPERIMENTAL: u16 = 0x88B5;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFFSET: usize = 13;

const SRC4: [u8; 4] = [198, 51, 100, 1];
const DST4: [u8; 4] = [192, 0, 2, 1];
const OTHER4: [u8; 4] = [198, 51, 100, 2];
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

const PASS: Verdict = Verdict::Pass;
const DROP: Verdict = Verdict::Drop;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

impl Verdict {
    fn of(action: Action) -> Verdict {
        match action {
            Action::Allow => Verdict::Pass,
            Action::Deny => Verdict::Drop,
        }
    }
}

/// Who decided a packet: a rule (by index in the file) or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    Rule(usize),
    Default,
}

use Hit::Default as DEFAULT;
use Hit::Rule;

/// A limiter that refuses an allowed burst past its allowance.
#[derive(Debug, Clone, Copy)]
enum Limiter {
    /// A rule's own limit or the interface-wide one: both count in
    /// `rate_limited` and `rate_limited_sources`.
    Rate,
    Syn,
}

#[derive(Debug, Clone, Copy)]
struct Limited {
    by: Limiter,
    /// How many packets of the burst get through.
    admitted: u64,
    /// Sources refused for the first time by this burst.
    new_sources: u64,
}

/// What running a frame `repeat` times in one call must do.
struct Expected<'a> {
    /// The traffic breakdown's slot, "l3/l4".
    slot: &'a str,
    repeat: u32,
    hit: Hit,
    /// How many runs end in XDP_PASS.
    passed: u64,
    limited: Option<Limited>,
}

/// Every counter the program keeps, by name. Source counts are not packet
/// counters; they are kept in `packets`, with `bytes` 0.
type Snapshot = BTreeMap<String, Counter>;

/// One loaded, unattached xdp_mesh_filter with its own maps and the rule set
/// last applied to them.
struct Harness<'obj> {
    skel: XdpMeshFilterSkel<'obj>,
    rules: FilterRules,
    compiled: CompiledFilter,
}

impl<'obj> Harness<'obj> {
    fn load(object: &'obj mut MaybeUninit<OpenObject>, rules: &str) -> Self {
        let skel = filter::load(object, None).expect("loading xdp_mesh_filter");
        let (rules, compiled) = compiled(rules);
        let harness = Harness {
            skel,
            rules,
            compiled,
        };
        // A fresh program is on generation 0, so the first apply publishes 1.
        harness.publish(1);
        harness
    }

    /// Replaces the rule set, as `filter apply` does.
    fn apply(&mut self, rules: &str) {
        let old = filter::read_rules(&filter::FilterMaps::of_skeleton(&self.skel))
            .expect("reading the rules")
            .generation;
        (self.rules, self.compiled) = compiled(rules);
        self.publish(1 - old);
    }

    /// Applies the harness's rule set and checks that it reads back as
    /// written, under generation `expected`, each rule with the hits the
    /// rule of the same id had before (a new id starts at zero).
    fn publish(&self, expected: u8) {
        let maps = filter::FilterMaps::of_skeleton(&self.skel);
        let before: HashMap<String, (u64, u64)> = filter::read_rules(&maps)
            .expect("reading the rules")
            .rules
            .into_iter()
            .map(|r| (r.rule.id, (r.packets, r.bytes)))
            .collect();
        let generation = filter::apply(&maps, &self.rules, &self.compiled, filter::Publish::Now)
            .expect("applying the rules");
        assert_eq!(generation, expected, "the generation flips on every apply");
        let active = filter::read_rules(&maps).expect("reading the rules");
        assert_eq!(active.generation, expected);
        assert_eq!(active.default, self.rules.default);
        assert_eq!(active.rate_limit, self.rules.rate_limit);
        assert_eq!(active.syn_flood, self.rules.syn_flood);
        let shown: Vec<_> = active.rules.iter().map(|r| r.rule.clone()).collect();
        assert_eq!(shown, self.rules.rules, "the rules read back as written");
        for rule in &active.rules {
            assert_eq!(
                (rule.packets, rule.bytes),
                before.get(&rule.rule.id).copied().unwrap_or((0, 0)),
                "rule {} ({}) does not carry the hits of its id",
                rule.index,
                rule.rule.id
            );
        }
    }

    fn run(&self, frame: &[u8], repeat: u32) -> u32 {
        let input = ProgramInput {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        self.skel
            .progs
            .xdp_mesh_filter
            .test_run(input)
            .unwrap_or_else(|e| panic!("test run failed: {e}\nframe: {}", hex(frame)))
            .return_value
    }

    fn snapshot(&self) -> Snapshot {
        let maps = filter::FilterMaps::of_skeleton(&self.skel);
        let stats = filter::read_stats(&maps).expect("reading filter_stats");
        let active = filter::read_rules(&maps).expect("reading the rules");
        let traffic = filter::read_traffic(&maps).expect("reading counters");
        let sources = |n| Counter {
            packets: n,
            bytes: 0,
        };
        let mut s = Snapshot::new();
        s.insert("verdict.pass".into(), stats.verdicts.pass);
        s.insert("verdict.drop".into(), stats.verdicts.drop);
        s.insert("defaulted".into(), stats.defaulted);
        s.insert("rate_limited".into(), stats.rate_limited);
        s.insert("syn_dropped".into(), stats.syn_dropped);
        s.insert(
            "rate_limited_sources".into(),
            sources(stats.rate_limited_sources),
        );
        s.insert("syn_flood_sources".into(), sources(stats.syn_flood_sources));
        for rule in active.rules {
            let hits = Counter {
                packets: rule.packets,
                bytes: rule.bytes,
            };
            s.insert(format!("rule[{}]", rule.index), hits);
        }
        for (name, counter) in &traffic.l3.0 {
            s.insert(format!("l3.{name}"), *counter);
        }
        for (name, counter) in &traffic.l4.0 {
            s.insert(format!("l4.{name}"), *counter);
        }
        s
    }

    /// Runs `frame` once: `hit` decides it with `verdict`, and it counts in
    /// the `slot` ("l3/l4") of the traffic breakdown.
    fn expect(&self, frame: &[u8], slot: &str, verdict: Verdict, hit: Hit) {
        self.expect_times(frame, slot, 1, verdict, hit);
    }

    /// Runs `frame` `repeat` times in one call, each decided alike.
    fn expect_times(&self, frame: &[u8], slot: &str, repeat: u32, verdict: Verdict, hit: Hit) {
        let passed = match verdict {
            Verdict::Pass => u64::from(repeat),
            Verdict::Drop => 0,
        };
        let expected = Expected {
            slot,
            repeat,
            hit,
            passed,
            limited: None,
        };
        self.check(frame, expected, "");
    }

    /// Runs an allowed burst of `repeat` frames in one call, which a limiter
    /// cuts down: the first `limited.admitted` pass, the rest are refused.
    fn expect_limited(&self, frame: &[u8], slot: &str, repeat: u32, hit: Hit, limited: Limited) {
        let expected = Expected {
            slot,
            repeat,
            hit,
            passed: limited.admitted,
            limited: Some(limited),
        };
        self.check(frame, expected, "");
    }

    /// The one place that runs a frame and compares every counter; `context`
    /// leads the failure message.
    fn check(&self, frame: &[u8], want: Expected, context: &str) {
        let Expected {
            slot,
            repeat,
            hit,
            passed,
            limited,
        } = want;
        let before = self.snapshot();
        let returned = self.run(frame, repeat);
        let after = self.snapshot();

        let packets = u64::from(repeat);
        let len = frame.len() as u64;
        let mut expected = before;
        let mut bump = |key: &str, n: u64| bump(&mut expected, key, n, n * len);
        let (l3, l4) = slot.split_once('/').expect("a slot is written l3/l4");
        bump(&format!("l3.{l3}"), packets);
        bump(&format!("l4.{l4}"), packets);
        match hit {
            Hit::Rule(index) => bump(&format!("rule[{index}]"), packets),
            Hit::Default => bump("defaulted", packets),
        }
        bump("verdict.pass", passed);
        bump("verdict.drop", packets - passed);
        if let Some(limited) = limited {
            let (refused, sources) = match limited.by {
                Limiter::Rate => ("rate_limited", "rate_limited_sources"),
                Limiter::Syn => ("syn_dropped", "syn_flood_sources"),
            };
            bump(refused, packets - passed);
            let sources = expected.get_mut(sources).expect("a sources counter");
            sources.packets += limited.new_sources;
        }
        // A limiter refuses the tail of a burst, so the last run tells.
        let last = if passed == packets {
            XDP_PASS
        } else {
            XDP_DROP
        };

        let moved = differences(&expected, &after);
        assert!(
            returned == last && moved.is_empty(),
            "{context}frame ({slot}, {} bytes, x{repeat}): {}\n\
             expected {passed} passed, decided by {hit:?}, last verdict {last}; \
             the program returned {returned}\ncounters that differ:\n{moved}",
            frame.len(),
            hex(frame),
        );
    }

    /// Runs every cut of `frame` from the end of the Ethernet header on.
    /// `stages` lists (length, slot, verdict, hit) in increasing length, the
    /// first at ETH_HLEN: each applies from its length to the next one's.
    fn sweep(&self, frame: &Frame, stages: &[(usize, &str, Verdict, Hit)]) {
        assert_eq!(stages[0].0, ETH_HLEN, "the stages start at ETH_HLEN");
        let bytes = frame.build();
        for cut in ETH_HLEN..=bytes.len() {
            let (_, slot, verdict, hit) = stages
                .iter()
                .rev()
                .find(|(from, ..)| cut >= *from)
                .expect("the first stage starts at ETH_HLEN");
            self.expect(&bytes[..cut], slot, *verdict, *hit);
        }
    }
}

fn compiled(rules: &str) -> (FilterRules, CompiledFilter) {
    let rules = parse(rules).unwrap_or_else(|e| panic!("{e}\nin {rules}"));
    let compiled = compile::compile(&rules);
    (rules, compiled)
}

fn bump(snapshot: &mut Snapshot, key: &str, packets: u64, bytes: u64) {
    snapshot
        .get_mut(key)
        .unwrap_or_else(|| panic!("no counter named {key}"))
        .add(packets, bytes);
}

/// One line per counter whose value is not the expected one.
fn differences(expected: &Snapshot, kernel: &Snapshot) -> String {
    let show = |c: Option<&Counter>| match c {
        Some(c) => format!("{} packets / {} bytes", c.packets, c.bytes),
        None => "absent".to_owned(),
    };
    let keys: BTreeSet<&String> = expected.keys().chain(kernel.keys()).collect();
    keys.into_iter()
        .filter(|key| expected.get(*key) != kernel.get(*key))
        .map(|key| {
            format!(
                "  {key}: expected {}, kernel {}\n",
                show(expected.get(key)),
                show(kernel.get(key))
            )
        })
        .collect()
}

fn v4() -> Frame {
    Frame::eth().ipv4(SRC4, DST4)
}

fn v6() -> Frame {
    Frame::eth().ipv6(SRC6, DST6)
}

fn arp() -> Frame {
    Frame::eth().arp_request(SRC4, DST4)
}

fn non_ip() -> Frame {
    Frame::eth().ethertype(ETH_P_EXPERIMENTAL).payload(46)
}

/// The builder's TCP headers carry SYN alone; this rewrites their flags.
fn with_tcp_flags(frame: &Frame, flags: u8) -> Vec<u8> {
    let mut bytes = frame.build();
    bytes[frame.span("tcp").start + TCP_FLAGS_OFFSET] = flags;
    bytes
}

privileged_test!(
    fn src_or_dst_cidr_alone() {
        for side in ["src", "dst"] {
            let mut object = MaybeUninit::uninit();
            let h = Harness::load(
                &mut object,
                &format!(
                    r#"{{"rules": [{{"action": "deny", "{side}": "203.0.113.0/24"}},
                              {{"action": "deny", "{side}": "2001:db8:bad::/48"}}]}}"#
                ),
            );
            // The address on the rule's side, and on the other side.
            let here4 = |addr: [u8; 4]| match side {
                "src" => Frame::eth().ipv4(addr, DST4),
                _ => Frame::eth().ipv4(SRC4, addr),
            };
            let there4 = |addr: [u8; 4]| match side {
                "src" => Frame::eth().ipv4(SRC4, addr),
                _ => Frame::eth().ipv4(addr, DST4),
            };
            let here6 = |addr: Ipv6Addr| match side {
                "src" => Frame::eth().ipv6(addr, DST6),
                _ => Frame::eth().ipv6(SRC6, addr),
            };
            let there6 = |addr: Ipv6Addr| match side {
                "src" => Frame::eth().ipv6(SRC6, addr),
                _ => Frame::eth().ipv6(addr, DST6),
            };

            for inside in [[203, 0, 113, 0], [203, 0, 113, 77], [203, 0, 113, 255]] {
                // Every IP protocol: the rule names none.
                h.expect(&here4(inside).tcp(1, 2).build(), "ipv4/tcp", DROP, Rule(0));
                h.expect(&here4(inside).udp(1, 2).build(), "ipv4/udp", DROP, Rule(0));
                h.expect(
                    &here4(inside).icmp(8, 0).build(),
                    "ipv4/icmp",
                    DROP,
                    Rule(0),
                );
                let gre = here4(inside).protocol(IPPROTO_GRE).payload(8).build();
                h.expect(&gre, "ipv4/other", DROP, Rule(0));
                h.expect(&there4(inside).tcp(1, 2).build(), "ipv4/tcp", PASS, DEFAULT);
            }
            for outside in [[203, 0, 112, 255], [203, 0, 114, 0]] {
                h.expect(&here4(outside).tcp(1, 2).build(), "ipv4/tcp", PASS, DEFAULT);
            }
            let inside6 = [
                Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0),
                Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff),
            ];
            for inside in inside6 {
                h.expect(&here6(inside).udp(1, 2).build(), "ipv6/udp", DROP, Rule(1));
                let icmp = here6(inside).icmpv6(128, 0).build();
                h.expect(&icmp, "ipv6/icmpv6", DROP, Rule(1));
                h.expect(&there6(inside).udp(1, 2).build(), "ipv6/udp", PASS, DEFAULT);
            }
            let outside6 = [
                Ipv6Addr::new(0x2001, 0xdb8, 0xbac, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff),
                Ipv6Addr::new(0x2001, 0xdb8, 0xbae, 0, 0, 0, 0, 0),
            ];
            for outside in outside6 {
                h.expect(&here6(outside).udp(1, 2).build(), "ipv6/udp", PASS, DEFAULT);
            }
            // ARP carries IPv4 addresses, but address rules are for IP packets.
            let arp = Frame::eth().arp_request([203, 0, 113, 1], [203, 0, 113, 2]);
            h.expect(&arp.build(), "arp/other", PASS, DEFAULT);
        }
    }
);

privileged_test!(
    fn cidrs_match_only_their_own_family() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rules": [{"action": "deny", "src": "0.0.0.0/0", "protocol": "udp"},
                      {"action": "deny", "dst": "::/0", "protocol": "tcp"}]}"#,
        );
        h.expect(&v4().udp(1, 2).build(), "ipv4/udp", DROP, Rule(0));
        h.expect(&v6().udp(1, 2).build(), "ipv6/udp", PASS, DEFAULT);
        h.expect(&v6().tcp(1, 2).build(), "ipv6/tcp", DROP, Rule(1));
        h.expect(&v4().tcp(1, 2).build(), "ipv4/tcp", PASS, DEFAULT);
        // An IPv4-mapped IPv6 address is an IPv6 packet's address.
        let mapped = Ipv4Addr::from(SRC4).to_ipv6_mapped();
        let frame = Frame::eth().ipv6(mapped, DST6).udp(1, 2).build();
        h.expect(&frame, "ipv6/udp", PASS, DEFAULT);
    }
);

privileged_test!(
    fn protocol_alone() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"default": "deny", "rules": [
            {"action": "allow", "protocol": "tcp"},
            {"action": "allow", "protocol": "udp"},
            {"action": "allow", "protocol": "icmp"},
            {"action": "allow", "protocol": "icmpv6"},
            {"action": "allow", "protocol": "arp"}]}"#,
        );
        h.expect(&v4().tcp(1, 2).build(), "ipv4/tcp", PASS, Rule(0));
        h.expect(&v6().tcp(1, 2).build(), "ipv6/tcp", PASS, Rule(0));
        h.expect(&v4().udp(1, 2).build(), "ipv4/udp", PASS, Rule(1));
        h.expect(&v6().udp(1, 2).build(), "ipv6/udp", PASS, Rule(1));
        h.expect(&v4().icmp(8, 0).build(), "ipv4/icmp", PASS, Rule(2));
        h.expect(&v6().icmpv6(128, 0).build(), "ipv6/icmpv6", PASS, Rule(3));
        h.expect(&arp().build(), "arp/other", PASS, Rule(4));
        // ICMP in the other family is another IP protocol, like GRE.
        h.expect(&v6().icmp(8, 0).build(), "ipv6/other", DROP, DEFAULT);
        h.expect(&v4().icmpv6(128, 0).build(), "ipv4/other", DROP, DEFAULT);
        let gre = v4().protocol(IPPROTO_GRE).payload(8).build();
        h.expect(&gre, "ipv4/other", DROP, DEFAULT);
        h.expect(&non_ip().build(), "other/other", DROP, DEFAULT);
    }
);

privileged_test!(
    fn protocol_any_is_every_ip_packet_and_nothing_else() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object, r#"{"rules": [{"action": "deny"}]}"#);
        h.expect(&v4().tcp(1, 2).build(), "ipv4/tcp", DROP, Rule(0));
        h.expect(&v4().udp(1, 2).build(), "ipv4/udp", DROP, Rule(0));
        h.expect(&v4().icmp(8, 0).build(), "ipv4/icmp", DROP, Rule(0));
        h.expect(&v6().icmpv6(128, 0).build(), "ipv6/icmpv6", DROP, Rule(0));
        h.expect(&v6().icmp(8, 0).build(), "ipv6/other", DROP, Rule(0));
        let gre = v6().protocol(IPPROTO_GRE).payload(8).build();
        h.expect(&gre, "ipv6/other", DROP, Rule(0));
        h.expect(&arp().build(), "arp/other", PASS, DEFAULT);
        h.expect(&non_ip().build(), "other/other", PASS, DEFAULT);
    }
);

privileged_test!(
    fn sport_and_dport_alone() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rules": [{"action": "deny", "sport": 1000},
                      {"action": "deny", "protocol": "udp", "dport": 53},
                      {"action": "deny", "protocol": "tcp", "dport": 22}]}"#,
        );
        for (ip, l3) in [(v4(), "ipv4"), (v6(), "ipv6")] {
            let slot = |l4: &str| format!("{l3}/{l4}");
            // A port condition without a protocol holds for TCP and UDP.
            h.expect(
                &ip.clone().tcp(1000, 9).build(),
                &slot("tcp"),
                DROP,
                Rule(0),
            );
            h.expect(
                &ip.clone().udp(1000, 9).build(),
                &slot("udp"),
                DROP,
                Rule(0),
            );
            h.expect(&ip.clone().tcp(999, 9).build(), &slot("tcp"), PASS, DEFAULT);
            h.expect(
                &ip.clone().tcp(1001, 9).build(),
                &slot("tcp"),
                PASS,
                DEFAULT,
            );
            // The destination port is not the source port.
            h.expect(
                &ip.clone().udp(9, 1000).build(),
                &slot("udp"),
                PASS,
                DEFAULT,
            );
            h.expect(&ip.clone().udp(9, 53).build(), &slot("udp"), DROP, Rule(1));
            h.expect(&ip.clone().tcp(9, 53).build(), &slot("tcp"), PASS, DEFAULT);
            h.expect(&ip.clone().udp(53, 9).build(), &slot("udp"), PASS, DEFAULT);
            h.expect(&ip.clone().tcp(9, 22).build(), &slot("tcp"), DROP, Rule(2));
            h.expect(&ip.clone().udp(9, 22).build(), &slot("udp"), PASS, DEFAULT);
            let gre = ip.protocol(IPPROTO_GRE).payload(8).build();
            h.expect(&gre, &slot("other"), PASS, DEFAULT);
        }
        h.expect(&v4().icmp(8, 0).build(), "ipv4/icmp", PASS, DEFAULT);
        h.expect(&v6().icmpv6(128, 0).build(), "ipv6/icmpv6", PASS, DEFAULT);
    }
);

privileged_test!(
    fn all_fields_combined_and_each_one_off() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rules": [
            {"action": "deny", "src": "198.51.100.0/24", "dst": "192.0.2.0/24",
             "protocol": "tcp", "sport": "1024-65535", "dport": 443},
            {"action": "deny", "src": "2001:db8:1::/48", "dst": "2001:db8:2::/48",
             "protocol": "udp", "sport": "1024-65535", "dport": 443}]}"#,
        );
        let src6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 9, 0, 0, 0, 1);
        let dst6 = Ipv6Addr::new(0x2001, 0xdb8, 2, 9, 0, 0, 0, 1);
        let off6 = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);

        let all4 = |src: [u8; 4], dst: [u8; 4]| Frame::eth().ipv4(src, dst);
        h.expect(&v4().tcp(1024, 443).build(), "ipv4/tcp", DROP, Rule(0));
        h.expect(&v4().tcp(65535, 443).build(), "ipv4/tcp", DROP, Rule(0));
        let one_off = [
            (all4([198, 51, 101, 1], DST4).tcp(1024, 443), "ipv4/tcp"),
            (all4(SRC4, [192, 0, 3, 1]).tcp(1024, 443), "ipv4/tcp"),
            (all4(DST4, SRC4).tcp(1024, 443), "ipv4/tcp"),
            (v4().udp(1024, 443), "ipv4/udp"),
            (v4().tcp(1023, 443), "ipv4/tcp"),
            (v4().tcp(1024, 444), "ipv4/tcp"),
        ];
        for (frame, slot) in one_off {
            h.expect(&frame.build(), slot, PASS, DEFAULT);
        }

        let all6 = |src: Ipv6Addr, dst: Ipv6Addr| Frame::eth().ipv6(src, dst);
        h.expect(
            &all6(src6, dst6).udp(40000, 443).build(),
            "ipv6/udp",
            DROP,
            Rule(1),
        );
        let one_off = [
            (all6(off6, dst6).udp(40000, 443), "ipv6/udp"),
            (all6(src6, off6).udp(40000, 443), "ipv6/udp"),
            (all6(dst6, src6).udp(40000, 443), "ipv6/udp"),
            (all6(src6, dst6).tcp(40000, 443), "ipv6/tcp"),
            (all6(src6, dst6).udp(1000, 443), "ipv6/udp"),
            (all6(src6, dst6).udp(40000, 442), "ipv6/udp"),
        ];
        for (frame, slot) in one_off {
            h.expect(&frame.build(), slot, PASS, DEFAULT);
        }
    }
);

privileged_test!(
    fn port_range_edges() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"default": "deny", "rules": [
            {"action": "allow", "protocol": "tcp", "dport": "1000-2000"},
            {"action": "allow", "protocol": "udp", "sport": "5000-5999"},
            {"action": "allow", "protocol": "udp", "dport": "65530-65535"},
            {"action": "allow", "protocol": "tcp", "sport": "0-10"}]}"#,
        );
        for (ip, l3) in [(v4(), "ipv4"), (v6(), "ipv6")] {
            let (tcp, udp) = (format!("{l3}/tcp"), format!("{l3}/udp"));
            let cases = [
                (ip.clone().tcp(40000, 999), &tcp, DROP, DEFAULT),
                (ip.clone().tcp(40000, 1000), &tcp, PASS, Rule(0)),
                (ip.clone().tcp(40000, 2000), &tcp, PASS, Rule(0)),
                (ip.clone().tcp(40000, 2001), &tcp, DROP, DEFAULT),
                (ip.clone().udp(4999, 53), &udp, DROP, DEFAULT),
                (ip.clone().udp(5000, 53), &udp, PASS, Rule(1)),
                (ip.clone().udp(5999, 53), &udp, PASS, Rule(1)),
                (ip.clone().udp(6000, 53), &udp, DROP, DEFAULT),
                (ip.clone().udp(53, 65529), &udp, DROP, DEFAULT),
                (ip.clone().udp(53, 65530), &udp, PASS, Rule(2)),
                (ip.clone().udp(53, 65535), &udp, PASS, Rule(2)),
                (ip.clone().tcp(0, 80), &tcp, PASS, Rule(3)),
                (ip.clone().tcp(10, 80), &tcp, PASS, Rule(3)),
                (ip.clone().tcp(11, 80), &tcp, DROP, DEFAULT),
                // Each range belongs to its own protocol.
                (ip.clone().udp(40000, 1000), &udp, DROP, DEFAULT),
                (ip.clone().tcp(5000, 53), &tcp, DROP, DEFAULT),
            ];
            for (frame, slot, verdict, hit) in cases {
                h.expect(&frame.build(), slot, verdict, hit);
            }
        }
    }
);

privileged_test!(
    fn overlapping_port_ranges_first_match_wins() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"default": "deny", "rules": [
            {"action": "deny", "protocol": "tcp", "dport": "1500-1600"},
            {"action": "allow", "protocol": "tcp", "dport": "1000-2000"},
            {"action": "deny", "src": "198.51.100.0/24"}]}"#,
        );
        let cases = [
            (999, DROP, Rule(2)),
            (1000, PASS, Rule(1)),
            (1499, PASS, Rule(1)),
            (1500, DROP, Rule(0)),
            (1600, DROP, Rule(0)),
            (1601, PASS, Rule(1)),
            (2000, PASS, Rule(1)),
            (2001, DROP, Rule(2)),
        ];
        for (dport, verdict, hit) in cases {
            h.expect(&v4().tcp(40000, dport).build(), "ipv4/tcp", verdict, hit);
        }
        let elsewhere = Frame::eth().ipv4(DST4, SRC4).tcp(40000, 999).build();
        h.expect(&elsewhere, "ipv4/tcp", DROP, DEFAULT);
    }
);

privileged_test!(
    fn nested_cidrs_first_match_in_file_order() {
        let from = |src: [u8; 4]| Frame::eth().ipv4(src, DST4).udp(1, 2).build();
        let mut object = MaybeUninit::uninit();
        // A broad allow before a narrow deny: the deny is never reached.
        let mut h = Harness::load(
            &mut object,
            r#"{"default": "deny", "rules": [{"action": "allow", "src": "10.0.0.0/8"},
                                         {"action": "deny", "src": "10.1.0.0/16"}]}"#,
        );
        assert_eq!(h.compiled.warnings.len(), 1, "{:?}", h.compiled.warnings);
        h.expect(&from([10, 1, 2, 3]), "ipv4/udp", PASS, Rule(0));
        h.expect(&from([10, 200, 0, 1]), "ipv4/udp", PASS, Rule(0));
        h.expect(&from([11, 0, 0, 1]), "ipv4/udp", DROP, DEFAULT);

        // The reverse: the narrow deny carves a hole in the broad allow.
        h.apply(
            r#"{"default": "deny", "rules": [{"action": "deny", "src": "10.1.0.0/16"},
                                         {"action": "allow", "src": "10.0.0.0/8"}]}"#,
        );
        h.expect(&from([10, 1, 2, 3]), "ipv4/udp", DROP, Rule(0));
        h.expect(&from([10, 0, 255, 255]), "ipv4/udp", PASS, Rule(1));
        h.expect(&from([10, 2, 0, 0]), "ipv4/udp", PASS, Rule(1));
        h.expect(&from([11, 0, 0, 1]), "ipv4/udp", DROP, DEFAULT);

        // Three levels, alternating, in both families.
        h.apply(
            r#"{"default": "deny", "rules": [
            {"action": "allow", "src": "10.1.2.0/24"},
            {"action": "deny", "src": "10.1.0.0/16"},
            {"action": "allow", "src": "10.0.0.0/8"},
            {"action": "deny", "src": "2001:db8:1:2::/64"},
            {"action": "allow", "src": "2001:db8:1::/48"},
            {"action": "deny", "src": "2001:db8::/32"}]}"#,
        );
        h.expect(&from([10, 1, 2, 3]), "ipv4/udp", PASS, Rule(0));
        h.expect(&from([10, 1, 3, 3]), "ipv4/udp", DROP, Rule(1));
        h.expect(&from([10, 9, 2, 3]), "ipv4/udp", PASS, Rule(2));
        h.expect(&from([12, 1, 2, 3]), "ipv4/udp", DROP, DEFAULT);
        let from6 = |src: Ipv6Addr| Frame::eth().ipv6(src, DST6).udp(1, 2).build();
        let cases = [
            (
                Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 9),
                DROP,
                Rule(3),
            ),
            (
                Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 9),
                PASS,
                Rule(4),
            ),
            (
                Ipv6Addr::new(0x2001, 0xdb8, 2, 2, 0, 0, 0, 9),
                DROP,
                Rule(5),
            ),
            (
                Ipv6Addr::new(0x2001, 0xdb9, 1, 2, 0, 0, 0, 9),
                DROP,
                DEFAULT,
            ),
        ];
        for (src, verdict, hit) in cases {
            h.expect(&from6(src), "ipv6/udp", verdict, hit);
        }

        // Nesting on both sides at once: the src and dst lookups must combine.
        h.apply(
            r#"{"default": "deny", "rules": [
            {"action": "deny", "src": "10.1.0.0/16", "dst": "192.0.2.0/24"},
            {"action": "allow", "dst": "192.0.2.0/24"},
            {"action": "allow", "src": "10.0.0.0/8"},
            {"action": "deny", "src": "10.1.2.0/24", "dst": "192.0.0.0/16"}]}"#,
        );
        let between = |src: [u8; 4], dst: [u8; 4]| Frame::eth().ipv4(src, dst).udp(1, 2).build();
        let cases = [
            ([10, 1, 2, 3], [192, 0, 2, 1], DROP, Rule(0)),
            ([10, 2, 0, 1], [192, 0, 2, 1], PASS, Rule(1)),
            ([11, 0, 0, 1], [192, 0, 2, 1], PASS, Rule(1)),
            ([10, 1, 2, 3], [192, 0, 3, 1], PASS, Rule(2)),
            ([10, 1, 2, 3], [198, 51, 100, 1], PASS, Rule(2)),
            ([11, 0, 0, 1], [192, 0, 3, 1], DROP, DEFAULT),
        ];
        for (src, dst, verdict, hit) in cases {
            h.expect(&between(src, dst), "ipv4/udp", verdict, hit);
        }

        // More prefix lengths than the exact-match probes take (mesh_filter.h:
        // FILTER_HASH_LENGTHS): this side is looked up in the LPM trie instead,
        // with the same answers.
        h.apply(
            r#"{"default": "deny", "rules": [
            {"action": "allow", "src": "10.1.2.0/28"},
            {"action": "deny", "src": "10.1.2.0/24"},
            {"action": "allow", "src": "10.1.0.0/20"},
            {"action": "deny", "src": "10.1.0.0/16"},
            {"action": "allow", "src": "10.0.0.0/12"},
            {"action": "deny", "src": "10.0.0.0/8"}]}"#,
        );
        h.expect(&from([10, 1, 2, 5]), "ipv4/udp", PASS, Rule(0));
        h.expect(&from([10, 1, 2, 200]), "ipv4/udp", DROP, Rule(1));
        h.expect(&from([10, 1, 9, 1]), "ipv4/udp", PASS, Rule(2));
        h.expect(&from([10, 1, 200, 1]), "ipv4/udp", DROP, Rule(3));
        h.expect(&from([10, 9, 0, 1]), "ipv4/udp", PASS, Rule(4));
        h.expect(&from([10, 99, 0, 1]), "ipv4/udp", DROP, Rule(5));
        h.expect(&from([11, 0, 0, 1]), "ipv4/udp", DROP, DEFAULT);
    }
);

privileged_test!(
    fn default_policy_both_ways() {
        let frames = [
            (v4().tcp(1, 2).build(), "ipv4/tcp"),
            (v6().udp(1, 2).build(), "ipv6/udp"),
            (v6().icmpv6(128, 0).build(), "ipv6/icmpv6"),
            (arp().build(), "arp/other"),
            (non_ip().build(), "other/other"),
            (v4().build()[..ETH_HLEN + 19].to_vec(), "other/other"),
        ];
        let mut object = MaybeUninit::uninit();
        let mut h = Harness::load(&mut object, r#"{"default": "allow", "rules": []}"#);
        for (frame, slot) in &frames {
            h.expect(frame, slot, PASS, DEFAULT);
        }
        h.apply(r#"{"default": "deny", "rules": []}"#);
        for (frame, slot) in &frames {
            h.expect(frame, slot, DROP, DEFAULT);
        }
        // A file without "default" allows.
        h.apply(r#"{"rules": []}"#);
        for (frame, slot) in &frames {
            h.expect(frame, slot, PASS, DEFAULT);
        }
    }
);

privileged_test!(
    fn non_ip_follows_the_default_unless_a_rule_names_arp() {
        let tagged_arp = Frame::eth().vlan(7).arp_request(SRC4, DST4).build();
        let mut object = MaybeUninit::uninit();
        let mut h = Harness::load(
            &mut object,
            r#"{"default": "deny", "rules": [{"action": "allow"}]}"#,
        );
        h.expect(&arp().build(), "arp/other", DROP, DEFAULT);
        h.expect(&tagged_arp, "arp/other", DROP, DEFAULT);
        h.expect(&non_ip().build(), "other/other", DROP, DEFAULT);
        h.expect(&v4().udp(1, 2).build(), "ipv4/udp", PASS, Rule(0));

        h.apply(r#"{"default": "deny", "rules": [{"action": "allow", "protocol": "arp"}]}"#);
        h.expect(&arp().build(), "arp/other", PASS, Rule(0));
        h.expect(&tagged_arp, "arp/other", PASS, Rule(0));
        h.expect(&non_ip().build(), "other/other", DROP, DEFAULT);
        h.expect(&v4().udp(1, 2).build(), "ipv4/udp", DROP, DEFAULT);
        // An ARP header cut short is not ARP.
        let short = &arp().build()[..ETH_HLEN + 7];
        h.expect(short, "other/other", DROP, DEFAULT);

        h.apply(r#"{"rules": [{"action": "deny", "protocol": "arp"}, {"action": "deny"}]}"#);
        h.expect(&arp().build(), "arp/other", DROP, Rule(0));
        h.expect(&non_ip().build(), "other/other", PASS, DEFAULT);
        h.expect(&v6().udp(1, 2).build(), "ipv6/udp", DROP, Rule(1));
    }
);

privileged_test!(
    fn vlan_tagged_frames_match_the_inner_ip() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rules": [
            {"action": "deny", "src": "198.51.100.0/24", "protocol": "udp", "dport": 53},
            {"action": "deny", "dst": "2001:db8:2::/48", "protocol": "tcp"}]}"#,
        );
        let tags = [
            Frame::eth(),
            Frame::eth().vlan(100),
            Frame::eth().svlan(200).vlan(100),
            Frame::eth().vlan(200).vlan(100),
        ];
        for tagged in tags {
            let v4 = tagged.clone().ipv4(SRC4, DST4);
            h.expect(&v4.clone().udp(9, 53).build(), "ipv4/udp", DROP, Rule(0));
            h.expect(&v4.clone().udp(9, 54).build(), "ipv4/udp", PASS, DEFAULT);
            h.expect(&v4.tcp(9, 53).build(), "ipv4/tcp", PASS, DEFAULT);
            let v6 = tagged.clone().ipv6(SRC6, DST6);
            h.expect(&v6.clone().tcp(9, 80).build(), "ipv6/tcp", DROP, Rule(1));
            h.expect(&v6.udp(9, 80).build(), "ipv6/udp", PASS, DEFAULT);
            let other = tagged.ipv6(SRC6, Ipv6Addr::LOCALHOST).tcp(9, 80).build();
            h.expect(&other, "ipv6/tcp", PASS, DEFAULT);
        }
        // Past two tags the frame is not parsed: the default, never a rule.
        let three = Frame::eth()
            .svlan(1)
            .vlan(2)
            .vlan(3)
            .ipv4(SRC4, DST4)
            .udp(9, 53);
        h.expect(&three.build(), "other/other", PASS, DEFAULT);
    }
);

privileged_test!(
    /// Cut inside the IP header, a frame is not IP: the default, never a rule.
    /// Cut inside the L4 header, its ports are unknown: port rules never match,
    /// address and protocol rules still do.
    fn truncated_headers_at_every_layer() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"default": "deny", "rules": [
            {"action": "deny", "src": "198.51.100.1", "dport": 80},
            {"action": "allow", "src": "198.51.100.1", "protocol": "tcp"},
            {"action": "allow", "src": "198.51.100.1", "protocol": "udp"},
            {"action": "allow", "src": "198.51.100.1", "protocol": "icmp"},
            {"action": "deny", "src": "198.51.100.1"},
            {"action": "deny", "src": "2001:db8:1::1", "dport": 80},
            {"action": "allow", "src": "2001:db8:1::1", "protocol": "tcp"},
            {"action": "allow", "src": "2001:db8:1::1", "protocol": "udp"},
            {"action": "allow", "src": "2001:db8:1::1", "protocol": "icmpv6"},
            {"action": "deny", "src": "2001:db8:1::1"}]}"#,
        );
        let not_ip = (ETH_HLEN, "other/other", DROP, DEFAULT);

        // (frame, L3 header name, L4 header name, rule without ports, port rule)
        let with_ports = [
            (v4().tcp(40000, 80).payload(4), "ipv4", "tcp", 1, 0),
            (v4().udp(40000, 80).payload(4), "ipv4", "udp", 2, 0),
            (
                Frame::eth()
                    .svlan(10)
                    .vlan(20)
                    .ipv4(SRC4, DST4)
                    .options(&[1; 8])
                    .tcp(40000, 80),
                "ipv4",
                "tcp",
                1,
                0,
            ),
            (v6().tcp(40000, 80).payload(4), "ipv6", "tcp", 6, 5),
            (
                Frame::eth().vlan(30).ipv6(SRC6, DST6).udp(40000, 80),
                "ipv6",
                "udp",
                7,
                5,
            ),
        ];
        for (frame, l3, l4, protocol_rule, port_rule) in with_ports {
            h.sweep(
                &frame,
                &[
                    not_ip,
                    (
                        frame.span(l3).end,
                        &format!("{l3}/other"),
                        PASS,
                        Rule(protocol_rule),
                    ),
                    (
                        frame.span(l4).end,
                        &format!("{l3}/{l4}"),
                        DROP,
                        Rule(port_rule),
                    ),
                ],
            );
        }

        // ICMP has no ports: cut short it is still ICMP to the rules.
        for (frame, l3, l4, rule) in [
            (v4().icmp(8, 0).payload(4), "ipv4", "icmp", 3),
            (v6().icmpv6(128, 0).payload(4), "ipv6", "icmpv6", 8),
        ] {
            h.sweep(
                &frame,
                &[
                    not_ip,
                    (frame.span(l3).end, &format!("{l3}/other"), PASS, Rule(rule)),
                    (frame.span(l4).end, &format!("{l3}/{l4}"), PASS, Rule(rule)),
                ],
            );
        }

        // Cut inside IPv6 extension headers, the protocol is unknown (only the
        // rule for any protocol matches) until the parser has the whole header
        // that names it: options headers and fragment headers alike.
        let chain = v6().hop_by_hop(1).dest_opts(0).udp(40000, 80).payload(4);
        h.sweep(
            &chain,
            &[
                not_ip,
                (chain.span("ipv6").end, "ipv6/other", DROP, Rule(9)),
                (chain.span("dest_opts").end, "ipv6/other", PASS, Rule(7)),
                (chain.span("udp").end, "ipv6/udp", DROP, Rule(5)),
            ],
        );
        let first = v6().ipv6_fragment(0, true).udp(40000, 80).payload(4);
        h.sweep(
            &first,
            &[
                not_ip,
                (first.span("ipv6").end, "ipv6/other", DROP, Rule(9)),
                (first.span("fragment").end, "ipv6/other", PASS, Rule(7)),
                (first.span("udp").end, "ipv6/udp", DROP, Rule(5)),
            ],
        );
    }
);

privileged_test!(
    fn fragments() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rules": [
            {"action": "allow", "protocol": "tcp", "dport": 80},
            {"action": "allow", "protocol": "udp", "dport": 53},
            {"action": "allow", "protocol": "icmp"},
            {"action": "allow", "protocol": "icmpv6"},
            {"action": "deny", "src": "198.51.100.1"},
            {"action": "deny", "src": "2001:db8:1::1"}]}"#,
        );
        // First fragments and unfragmented packets carry the ports.
        let first4 = [
            v4().fragment(0, true).tcp(40000, 80).payload(100),
            v4().dont_fragment().tcp(40000, 80),
        ];
        for frame in first4 {
            h.expect(&frame.build(), "ipv4/tcp", PASS, Rule(0));
        }
        let first4_other_port = v4().fragment(0, true).tcp(40000, 81).payload(100);
        h.expect(&first4_other_port.build(), "ipv4/tcp", DROP, Rule(4));
        let first6 = v6().ipv6_fragment(0, true).udp(40000, 53).payload(100);
        h.expect(&first6.build(), "ipv6/udp", PASS, Rule(1));
        let first6_other_port = v6().hop_by_hop(0).ipv6_fragment(0, true).udp(40000, 54);
        h.expect(&first6_other_port.build(), "ipv6/udp", DROP, Rule(5));

        // Later fragments: the ports are unknown, so the port rules pass them
        // by, but the address rules and the protocol-only rules match.
        for (offset, more) in [(1, true), (185, false), (0x1FFF, false)] {
            for (proto, slot, verdict, hit) in [
                (IPPROTO_TCP, "ipv4/tcp", DROP, Rule(4)),
                (IPPROTO_UDP, "ipv4/udp", DROP, Rule(4)),
                (IPPROTO_ICMP, "ipv4/icmp", PASS, Rule(2)),
            ] {
                let later = v4().fragment(offset, more).protocol(proto).payload(64);
                h.expect(&later.build(), slot, verdict, hit);
                let elsewhere = Frame::eth()
                    .ipv4(DST4, SRC4)
                    .fragment(offset, more)
                    .protocol(proto)
                    .payload(64);
                let (verdict, hit) = if proto == IPPROTO_ICMP {
                    (PASS, Rule(2))
                } else {
                    (PASS, DEFAULT)
                };
                h.expect(&elsewhere.build(), slot, verdict, hit);
            }
            for (proto, slot, verdict, hit) in [
                (IPPROTO_TCP, "ipv6/tcp", DROP, Rule(5)),
                (IPPROTO_UDP, "ipv6/udp", DROP, Rule(5)),
                (IPPROTO_ICMPV6, "ipv6/icmpv6", PASS, Rule(3)),
            ] {
                let later = v6().ipv6_fragment(offset, more).protocol(proto).payload(64);
                h.expect(&later.build(), slot, verdict, hit);
                let behind_options = v6()
                    .hop_by_hop(0)
                    .ipv6_fragment(offset, more)
                    .protocol(proto)
                    .payload(64);
                h.expect(&behind_options.build(), slot, verdict, hit);
            }
        }
    }
);

privileged_test!(
    fn rule_rate_limit_cuts_a_burst_per_source() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rules": [{"action": "allow", "protocol": "udp", "dport": 53,
                       "rate_limit": {"pps": 1, "burst": 5}}]}"#,
        );
        let limited = |new_sources| Limited {
            by: Limiter::Rate,
            admitted: 5,
            new_sources,
        };
        // With 1 pps, the next token is a second away: far beyond one call.
        let dns = v4().udp(40000, 53).payload(30).build();
        h.expect_limited(&dns, "ipv4/udp", 20, Rule(0), limited(1));
        let once_more = Limited {
            admitted: 0,
            ..limited(0)
        };
        h.expect_limited(&dns, "ipv4/udp", 1, Rule(0), once_more);
        // Other traffic of the same source is not this rule's.
        h.expect(&v4().tcp(40000, 53).build(), "ipv4/tcp", PASS, DEFAULT);
        h.expect(&v4().udp(40000, 54).build(), "ipv4/udp", PASS, DEFAULT);
        // Every source has its own bucket.
        let other = Frame::eth().ipv4(OTHER4, DST4).udp(40000, 53).build();
        h.expect_limited(&other, "ipv4/udp", 20, Rule(0), limited(1));
        let dns6 = v6().udp(40000, 53).build();
        h.expect_limited(&dns6, "ipv6/udp", 20, Rule(0), limited(1));
    }
);

privileged_test!(
    fn interface_rate_limit_applies_to_allowed_ip_traffic_only() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rate_limit": {"pps": 1, "burst": 4},
            "rules": [{"action": "deny", "protocol": "udp", "dport": 9}]}"#,
        );
        // Denied packets never reach the limiter, so they take no tokens.
        let denied = v4().udp(40000, 9).build();
        h.expect_times(&denied, "ipv4/udp", 10, DROP, Rule(0));
        let limited = Limited {
            by: Limiter::Rate,
            admitted: 4,
            new_sources: 1,
        };
        h.expect_limited(&v4().udp(1, 2).build(), "ipv4/udp", 10, DEFAULT, limited);
        h.expect_times(&arp().build(), "arp/other", 10, PASS, DEFAULT);
        h.expect_times(&non_ip().build(), "other/other", 10, PASS, DEFAULT);
    }
);

privileged_test!(
    fn syn_flood_limits_bare_syns_per_source() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"syn_flood": {"pps": 1, "burst": 3},
            "rules": [{"action": "allow", "protocol": "tcp", "dport": 22},
                      {"action": "deny", "protocol": "tcp", "dport": 23}]}"#,
        );
        let syn_flood = |admitted, new_sources| Limited {
            by: Limiter::Syn,
            admitted,
            new_sources,
        };
        let ssh = v4().tcp(40000, 22);
        let syn = with_tcp_flags(&ssh, TCP_SYN);
        h.expect_limited(&syn, "ipv4/tcp", 10, Rule(0), syn_flood(3, 1));
        // Only a bare SYN opens a connection; replies and the rest of a
        // connection are never SYN-limited, even from a refused source.
        let syn_ack = with_tcp_flags(&ssh, TCP_SYN | TCP_ACK);
        h.expect_times(&syn_ack, "ipv4/tcp", 10, PASS, Rule(0));
        let ack = with_tcp_flags(&ssh, TCP_ACK);
        h.expect_times(&ack, "ipv4/tcp", 10, PASS, Rule(0));
        h.expect_times(&v4().udp(40000, 22).build(), "ipv4/udp", 10, PASS, DEFAULT);
        // The source's bucket is shared by every SYN it sends, defaulted or not.
        let web = with_tcp_flags(&v4().tcp(40000, 80), TCP_SYN);
        h.expect_limited(&web, "ipv4/tcp", 1, DEFAULT, syn_flood(0, 0));

        // A second source, and an IPv6 one, get their own burst.
        let other = with_tcp_flags(&Frame::eth().ipv4(OTHER4, DST4).tcp(40000, 22), TCP_SYN);
        h.expect_limited(&other, "ipv4/tcp", 10, Rule(0), syn_flood(3, 1));
        let syn6 = with_tcp_flags(&v6().tcp(40000, 22), TCP_SYN);
        h.expect_limited(&syn6, "ipv6/tcp", 10, Rule(0), syn_flood(3, 1));

        // SYNs a rule denies never reach the limiter, so they take no tokens.
        let fresh = [203, 0, 113, 9];
        let telnet = with_tcp_flags(&Frame::eth().ipv4(fresh, DST4).tcp(40000, 23), TCP_SYN);
        h.expect_times(&telnet, "ipv4/tcp", 10, DROP, Rule(1));
        let fresh_ssh = with_tcp_flags(&Frame::eth().ipv4(fresh, DST4).tcp(40000, 22), TCP_SYN);
        h.expect_limited(&fresh_ssh, "ipv4/tcp", 10, Rule(0), syn_flood(3, 1));

        // Without the whole TCP header the flags are unknown: not a SYN (and
        // not port 22: the rule needs ports, so the default applies).
        let cut_syn = Frame::eth().ipv4([203, 0, 113, 10], DST4).tcp(40000, 22);
        let flags_but_no_header = &cut_syn.build()[..cut_syn.span("tcp").start + 14];
        h.expect_times(flags_but_no_header, "ipv4/other", 10, PASS, DEFAULT);
    }
);

privileged_test!(
    fn a_new_rule_set_flips_the_generation_with_fresh_counters() {
        let first = r#"{"rules": [{"action": "deny", "protocol": "udp", "dport": 53},
                               {"action": "allow", "protocol": "tcp"}]}"#;
        let second = r#"{"default": "deny",
                     "rules": [{"action": "allow", "protocol": "udp", "dport": 53, "name": "dns"}]}"#;
        let dns = v4().udp(40000, 53).build();
        let web = v6().tcp(40000, 443).build();

        let mut object = MaybeUninit::uninit();
        // Generation 1: a fresh program starts on 0 and the first apply flips it.
        let mut h = Harness::load(&mut object, first);
        h.expect(&dns, "ipv4/udp", DROP, Rule(0));
        h.expect(&web, "ipv6/tcp", PASS, Rule(1));
        h.expect(&web, "ipv6/tcp", PASS, Rule(1));

        // Generation 0 (apply checks the flip and the zeroed hit counters).
        h.apply(second);
        h.expect(&dns, "ipv4/udp", PASS, Rule(0));
        h.expect(&web, "ipv6/tcp", DROP, DEFAULT);

        // Back on generation 1, whose counters held the first set's hits.
        h.apply(first);
        h.expect(&dns, "ipv4/udp", DROP, Rule(0));
        h.expect(&web, "ipv6/tcp", PASS, Rule(1));
    }
);

privileged_test!(
    /// Past 8 IPv6 extension headers the protocol is unknown, even when the
    /// ninth is a later fragment: protocol rules do not match it, and a
    /// rule naming 0 (hop-by-hop) does not either.
    fn a_ninth_extension_header_leaves_the_protocol_unknown() {
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(
            &mut object,
            r#"{"rules": [{"action": "deny", "protocol": "udp"}, {"action": "deny", "protocol": 0},
                          {"action": "allow", "dst": "2001:db8::/32"}]}"#,
        );
        let eight = (0..7).fold(v6().hop_by_hop(0), |f, _| f.dest_opts(0));
        h.expect(&eight.clone().udp(1, 2).build(), "ipv6/udp", DROP, Rule(0));
        let later = eight.ipv6_fragment(10, false).udp(1, 2).build();
        h.expect(&later, "ipv6/other", PASS, Rule(2));
    }
);

privileged_test!(
    /// Hosts in 8,200 /16s need two chunks each, more than the table takes
    /// for one side: the compiler moves that side's IPv4 prefixes to the
    /// LPM trie, and the kernel must find them there.
    fn a_side_too_large_for_the_table_goes_to_the_trie() {
        const HOSTS: usize = 8_200;
        let host = |i: usize| [11 + (i / 256) as u8, (i % 256) as u8, 7, 1];
        let mut rules: Vec<String> = (0..HOSTS)
            .map(|i| {
                let [a, b, c, d] = host(i);
                format!(r#"{{"action": "deny", "dst": "{a}.{b}.{c}.{d}"}}"#)
            })
            .collect();
        rules.push(r#"{"action": "allow", "src": "10.0.0.0/8", "dst": "0.0.0.0/1"}"#.to_owned());
        let text = format!(r#"{{"default": "deny", "rules": [{}]}}"#, rules.join(","));
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object, &text);
        assert_eq!(h.compiled.lookups.v4_trie, [false, true]);
        assert_eq!(h.compiled.trie[1].len(), HOSTS + 1);

        let to = |dst: [u8; 4]| Frame::eth().ipv4([10, 1, 2, 3], dst).udp(1, 2).build();
        for i in [0, 4321, HOSTS - 1] {
            h.expect(&to(host(i)), "ipv4/udp", DROP, Rule(i));
            let [a, b, c, _] = host(i);
            h.expect(&to([a, b, c, 2]), "ipv4/udp", PASS, Rule(HOSTS));
        }
        h.expect(&to([200, 0, 7, 1]), "ipv4/udp", DROP, DEFAULT);
    }
);

privileged_test!(
    fn ten_thousand_rules_classify_like_one() {
        const DENIED: usize = 10_000;
        // Network i is 10.(i / 256).(i % 256).0/24.
        let network = |i: usize| [10, (i / 256) as u8, (i % 256) as u8];
        let mut rules: Vec<String> = (0..DENIED)
            .map(|i| {
                let [a, b, c] = network(i);
                format!(r#"{{"action": "deny", "src": "{a}.{b}.{c}.0/24"}}"#)
            })
            .collect();
        rules.push(r#"{"action": "allow", "protocol": "tcp", "dport": 443}"#.to_owned());
        let text = format!(r#"{{"default": "deny", "rules": [{}]}}"#, rules.join(","));
        let mut object = MaybeUninit::uninit();
        let h = Harness::load(&mut object, &text);

        let from = |i: usize, host: u8| {
            let [a, b, c] = network(i);
            Frame::eth().ipv4([a, b, c, host], DST4)
        };
        for i in [0, 4999, 5000, DENIED - 1] {
            h.expect(
                &from(i, 1).tcp(40000, 443).build(),
                "ipv4/tcp",
                DROP,
                Rule(i),
            );
            h.expect(
                &from(i, 254).udp(40000, 53).build(),
                "ipv4/udp",
                DROP,
                Rule(i),
            );
        }
        // Network DENIED is the first one not on the list.
        h.expect(
            &from(DENIED, 1).tcp(40000, 443).build(),
            "ipv4/tcp",
            PASS,
            Rule(DENIED),
        );
        h.expect(
            &v6().tcp(40000, 443).build(),
            "ipv6/tcp",
            PASS,
            Rule(DENIED),
        );
        h.expect(
            &from(DENIED, 1).tcp(40000, 444).build(),
            "ipv4/tcp",
            DROP,
            DEFAULT,
        );
        h.expect(
            &from(DENIED, 1).udp(40000, 443).build(),
            "ipv4/udp",
            DROP,
            DEFAULT,
        );
    }
);

/// Addresses near these, and prefixes of them, nest in every way.
const SEEDS4: [[u8; 4]; 4] = [
    [10, 1, 2, 3],
    [10, 1, 200, 7],
    [10, 77, 2, 3],
    [192, 0, 2, 9],
];
const SEEDS6: [Ipv6Addr; 4] = [
    Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 3),
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0xff, 0, 0, 0, 9),
    Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
];
const LENS4: [u8; 9] = [0, 8, 12, 16, 20, 24, 28, 31, 32];
const LENS6: [u8; 9] = [0, 16, 32, 48, 56, 64, 100, 127, 128];
/// Range ends for rules; packets use these and their neighbours.
const PORTS: [u16; 12] = [0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 32768, 65534, 65535];

/// A seed, or a seed with one bit flipped.
fn random_addr(rng: &mut XorShift, v6: bool) -> IpAddr {
    if v6 {
        let mut bits = u128::from(rng.pick(&SEEDS6));
        if rng.one_in(2) {
            bits ^= 1 << rng.below(128);
        }
        IpAddr::V6(bits.into())
    } else {
        let mut bits = u32::from(Ipv4Addr::from(rng.pick(&SEEDS4)));
        if rng.one_in(2) {
            bits ^= 1 << rng.below(32);
        }
        IpAddr::V4(bits.into())
    }
}

fn random_prefix(rng: &mut XorShift, v6: bool) -> String {
    let len = rng.pick(if v6 { &LENS6 } else { &LENS4 });
    Prefix::new(random_addr(rng, v6), len).to_string()
}

fn random_range(rng: &mut XorShift) -> Value {
    let (a, b) = (rng.pick(&PORTS), rng.pick(&PORTS));
    match (a.min(b), a.max(b)) {
        (lo, hi) if lo == hi => json!(lo),
        (lo, hi) => json!(format!("{lo}-{hi}")),
    }
}

fn random_port(rng: &mut XorShift) -> u16 {
    rng.pick(&PORTS)
        .wrapping_add(rng.pick(&[0, 0, 1, u16::MAX]))
}

/// A rule the parser accepts: its fields fit its protocol and family.
fn random_rule(rng: &mut XorShift) -> Value {
    let protocol = rng.pick(&[
        "any", "any", "tcp", "tcp", "udp", "udp", "icmp", "icmpv6", "arp",
    ]);
    let allow = rng.one_in(2);
    let mut rule = Map::new();
    rule.insert("action".into(), json!(if allow { "allow" } else { "deny" }));
    if protocol != "any" || rng.one_in(3) {
        rule.insert("protocol".into(), json!(protocol));
    }
    if protocol != "arp" {
        let v6 = match protocol {
            "icmp" => false,
            "icmpv6" => true,
            _ => rng.one_in(2),
        };
        if rng.one_in(2) {
            rule.insert("src".into(), json!(random_prefix(rng, v6)));
        }
        if rng.one_in(3) {
            rule.insert("dst".into(), json!(random_prefix(rng, v6)));
        }
    }
    if matches!(protocol, "any" | "tcp" | "udp") {
        if rng.one_in(4) {
            rule.insert("sport".into(), random_range(rng));
        }
        if rng.one_in(3) {
            rule.insert("dport".into(), random_range(rng));
        }
    }
    // A limit no test burst reaches: it exercises the rate-limited rules
    // without refusing anything.
    if allow && rng.one_in(4) {
        rule.insert(
            "rate_limit".into(),
            json!({"pps": 1_000_000, "burst": 1_000_000}),
        );
    }
    Value::Object(rule)
}

fn random_rule_set(rng: &mut XorShift) -> String {
    let rules: Vec<Value> = (0..1 + rng.below(12)).map(|_| random_rule(rng)).collect();
    let default = rng.pick(&["allow", "deny"]);
    json!({"default": default, "rules": rules}).to_string()
}

/// A frame, and what the filter must make of it.
struct Sample {
    frame: Frame,
    slot: String,
    fields: PacketFields,
}

fn random_sample(rng: &mut XorShift) -> Sample {
    let tagged = match rng.below(4) {
        0 => Frame::eth().vlan(100),
        1 => Frame::eth().svlan(200).vlan(100),
        _ => Frame::eth(),
    };
    match rng.below(12) {
        0 => Sample {
            frame: tagged.arp_request(SRC4, DST4),
            slot: "arp/other".into(),
            fields: PacketFields::Arp,
        },
        1 => Sample {
            frame: tagged.ethertype(ETH_P_EXPERIMENTAL).payload(46),
            slot: "other/other".into(),
            fields: PacketFields::OtherNonIp,
        },
        n => random_ip_sample(rng, tagged, n % 2 == 0),
    }
}

/// An IP packet's L4 header, as the builder writes it.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tcp,
    Udp,
    /// ICMP of the packet's own family.
    Icmp,
    /// ICMP of the other family: another IP protocol.
    WrongIcmp,
    Gre,
}

fn random_ip_sample(rng: &mut XorShift, tagged: Frame, v6: bool) -> Sample {
    let (src, dst) = (random_addr(rng, v6), random_addr(rng, v6));
    let (l3, ip) = match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = tagged.ipv6(s, d);
            ("ipv6", if rng.one_in(3) { ip.hop_by_hop(0) } else { ip })
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = tagged.ipv4(s, d);
            (
                "ipv4",
                if rng.one_in(3) {
                    ip.options(&[1; 8])
                } else {
                    ip
                },
            )
        }
        _ => unreachable!("both addresses are of one family"),
    };
    let fields = |l4| match (src, dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => PacketFields::V6 { src, dst, l4 },
        (IpAddr::V4(src), IpAddr::V4(dst)) => PacketFields::V4 { src, dst, l4 },
        _ => unreachable!("both addresses are of one family"),
    };
    let kind = rng.pick(&[Kind::Tcp, Kind::Udp, Kind::Icmp, Kind::WrongIcmp, Kind::Gre]);
    let ports = Ports {
        src: random_port(rng),
        dst: random_port(rng),
    };
    let icmp_name = if v6 { "icmpv6" } else { "icmp" };
    let (header, number, l4_whole, l4_unknown_ports) = match kind {
        Kind::Tcp => ("tcp", IPPROTO_TCP, L4::Tcp(Some(ports)), L4::Tcp(None)),
        Kind::Udp => ("udp", IPPROTO_UDP, L4::Udp(Some(ports)), L4::Udp(None)),
        Kind::Icmp if v6 => ("icmpv6", IPPROTO_ICMPV6, L4::Icmp, L4::Icmp),
        Kind::Icmp => ("icmp", IPPROTO_ICMP, L4::Icmp, L4::Icmp),
        Kind::WrongIcmp if v6 => (
            "icmp",
            IPPROTO_ICMP,
            L4::Other(IPPROTO_ICMP),
            L4::Other(IPPROTO_ICMP),
        ),
        Kind::WrongIcmp => (
            "icmpv6",
            IPPROTO_ICMPV6,
            L4::Other(IPPROTO_ICMPV6),
            L4::Other(IPPROTO_ICMPV6),
        ),
        Kind::Gre => (
            "other",
            IPPROTO_GRE,
            L4::Other(IPPROTO_GRE),
            L4::Other(IPPROTO_GRE),
        ),
    };
    // The breakdown's L4 slot, once the protocol is known.
    let l4_slot = match kind {
        Kind::Tcp | Kind::Udp => header,
        Kind::Icmp => icmp_name,
        Kind::WrongIcmp | Kind::Gre => "other",
    };
    let add_l4 = |frame: Frame| match kind {
        Kind::Tcp => frame.tcp(ports.src, ports.dst),
        Kind::Udp => frame.udp(ports.src, ports.dst),
        Kind::Icmp | Kind::WrongIcmp if header == "icmp" => frame.icmp(8, 0),
        Kind::Icmp | Kind::WrongIcmp => frame.icmpv6(128, 0),
        Kind::Gre => frame.protocol(IPPROTO_GRE),
    };
    let payload = rng.below(40);
    let slot = |l4: &str| format!("{l3}/{l4}");

    match rng.below(8) {
        // A later fragment: the protocol number and no L4 header.
        0 => {
            let offset = 1 + rng.below(0x1FFE) as u16;
            let more = rng.one_in(2);
            let fragment = if v6 {
                ip.ipv6_fragment(offset, more)
            } else {
                ip.fragment(offset, more)
            };
            Sample {
                frame: fragment.protocol(number).payload(payload),
                slot: slot(l4_slot),
                fields: fields(l4_unknown_ports),
            }
        }
        // Cut inside the L4 header.
        1 if kind != Kind::Gre => {
            let whole = add_l4(ip).payload(payload);
            let span = whole.span(header);
            let cut = span.start + rng.below(span.len());
            Sample {
                frame: whole.truncate(cut),
                slot: slot("other"),
                fields: fields(l4_unknown_ports),
            }
        }
        // Cut inside the IP header or the extension headers after it.
        2 => {
            let whole = add_l4(ip).payload(payload);
            let ip_header = whole.span(l3);
            let headers_end = whole
                .span(if kind == Kind::Gre { "payload" } else { header })
                .start;
            let cut = ip_header.start + rng.below(headers_end - ip_header.start);
            // Past the IP header there is at most the hop-by-hop header,
            // which the parser trusts only when whole: the protocol stays
            // unknown (see truncated_headers_at_every_layer), number 0.
            let (slot, fields) = if cut < ip_header.end {
                ("other/other".to_owned(), PacketFields::OtherNonIp)
            } else {
                (slot("other"), fields(L4::Other(0)))
            };
            Sample {
                frame: whole.truncate(cut),
                slot,
                fields,
            }
        }
        // A first fragment carries the whole L4 header.
        3 => {
            let fragment = if v6 {
                ip.ipv6_fragment(0, true)
            } else {
                ip.fragment(0, true)
            };
            Sample {
                frame: add_l4(fragment).payload(payload),
                slot: slot(l4_slot),
                fields: fields(l4_whole),
            }
        }
        _ => Sample {
            frame: add_l4(ip).payload(payload),
            slot: slot(l4_slot),
            fields: fields(l4_whole),
        },
    }
}

privileged_test!(
    /// The kernel must decide every frame as `CompiledFilter::classify`, the
    /// compiler's own model of the lookups, says: same rule (or the default),
    /// same verdict, for random rule sets mixing every field.
    fn kernel_agrees_with_the_compiled_tables() {
        const RULE_SETS: usize = 20;
        const FRAMES: usize = 200;
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut object = MaybeUninit::uninit();
        let mut h = Harness::load(&mut object, r#"{"rules": []}"#);
        for set in 0..RULE_SETS {
            let text = random_rule_set(&mut rng);
            h.apply(&text);
            for _ in 0..FRAMES {
                let sample = random_sample(&mut rng);
                let bytes = sample.frame.build();
                let decided = h.compiled.classify(&sample.fields);
                let (verdict, hit) = match decided {
                    Some((rule, action)) => (Verdict::of(action), Rule(rule as usize)),
                    None => (Verdict::of(h.rules.default), DEFAULT),
                };
                let expected = Expected {
                    slot: &sample.slot,
                    repeat: 1,
                    hit,
                    passed: u64::from(verdict == PASS),
                    limited: None,
                };
                let context = format!(
                    "rule set {set}: {text}\n{:?}\nfields: {:?}\nclassify: {decided:?}\n",
                    sample.frame, sample.fields
                );
                h.check(&bytes, expected, &context);
            }
        }
    }
);
