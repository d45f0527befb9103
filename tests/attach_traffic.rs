//! End to end against the running kernel: attach through the real binary, send
//! real packets across a veth pair between two namespaces, read exact counts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{VethPair, ADDR, ADDR6};
use serde_json::{json, Value};

const ETH: u64 = 14;
const IPV4: u64 = 20;
const IPV6: u64 = 40;
const UDP: u64 = 8;
/// `ping`'s default echo: 8 bytes of ICMP header and 56 of data.
const ICMP_ECHO: u64 = 64;

fn stats(net: &VethPair) -> Value {
    net.meshbpf(&["stats", &net.dev, "-j"]).ok().json()
}

/// Reads stats until `l4.<proto>.packets` reaches `packets`, then returns them.
fn stats_once(net: &VethPair, proto: &str, packets: u64) -> Value {
    common::wait_for(Duration::from_secs(5), || {
        let s = stats(net);
        (s["l4"][proto]["packets"].as_u64() >= Some(packets)).then_some(s)
    })
    .unwrap_or_else(|| panic!("{proto} never reached {packets} packets: {}", stats(net)))
}

fn counts_udp_and_icmp_exactly(mode: &str) {
    let net = VethPair::new();
    let attached = net
        .meshbpf(&["attach", &net.dev, "--mode", mode, "-j"])
        .ok()
        .json();
    assert_eq!(attached["status"], "attached");
    assert_eq!(attached["mode"], mode);
    assert_eq!(attached["interface"], net.dev.as_str());
    assert_eq!(
        net.xdp_prog_id(),
        attached["prog_id"].as_u64(),
        "the kernel runs the program meshbpf reported"
    );

    let (datagrams, payload) = (25, 200);
    net.send_udp(format!("{ADDR}:9").parse().unwrap(), datagrams, payload);
    net.ping(ADDR, 3);

    let s = stats_once(&net, "icmp", 3);
    let udp_bytes = datagrams as u64 * (ETH + IPV4 + UDP + payload as u64);
    let icmp_bytes = 3 * (ETH + IPV4 + ICMP_ECHO);
    assert_eq!(
        s["l4"]["udp"],
        json!({"packets": datagrams, "bytes": udp_bytes})
    );
    assert_eq!(s["l4"]["icmp"], json!({"packets": 3, "bytes": icmp_bytes}));
    // Static neighbours and no IPv6: nothing else crossed the wire.
    let total = datagrams as u64 + 3;
    assert_eq!(s["packets"], total);
    assert_eq!(s["bytes"], udp_bytes + icmp_bytes);
    assert_eq!(
        s["l3"]["ipv4"],
        json!({"packets": total, "bytes": udp_bytes + icmp_bytes})
    );
    for zero in [
        &s["l3"]["ipv6"],
        &s["l3"]["arp"],
        &s["l3"]["other"],
        &s["l4"]["tcp"],
        &s["l4"]["other"],
    ] {
        assert_eq!(zero, &json!({"packets": 0, "bytes": 0}), "{s}");
    }
    assert_eq!(s["mode"], mode);
    assert_eq!(s["state"], "attached");
    assert!(s["attached_at"].as_str().unwrap().ends_with('Z'), "{s}");

    let tc_method = if common::kernel_has_tcx() {
        "tcx"
    } else {
        "netlink"
    };
    assert_eq!(
        s["flows"]["method"], tc_method,
        "tc_classifier comes with attach: {s}"
    );
    assert_eq!(
        net.tc_program_count(),
        2,
        "tc_classifier on ingress and egress"
    );

    let detached = net.meshbpf(&["detach", &net.dev, "-j"]).ok().json();
    let programs = common::detached_programs(&detached);
    assert_eq!(programs, ["tc_classifier", "xdp_counter"]);
    assert_eq!(
        net.tc_program_count(),
        0,
        "detach leaves no tc program on the link"
    );
    assert_eq!(
        net.xdp_prog_id(),
        None,
        "detach leaves no XDP program on the link"
    );
    assert!(
        !net.pin_dir().exists(),
        "detach leaves no pins: {}",
        net.pin_dir().display()
    );
}

privileged_test!(
    fn native_mode_counts_udp_and_icmp_exactly() {
        counts_udp_and_icmp_exactly("native");
    }
);

privileged_test!(
    fn skb_mode_counts_udp_and_icmp_exactly() {
        counts_udp_and_icmp_exactly("skb");
    }
);

privileged_test!(
    fn ipv6_udp_is_counted_exactly() {
        let net = VethPair::with_ipv6();
        net.meshbpf(&["attach", &net.dev]).ok();
        let (datagrams, payload) = (10, 100);
        net.send_udp(
            SocketAddr::new(ADDR6.parse().unwrap(), 9),
            datagrams,
            payload,
        );
        let s = stats_once(&net, "udp", datagrams as u64);
        assert_eq!(
            s["l4"]["udp"],
            json!({"packets": datagrams, "bytes": datagrams as u64 * (ETH + IPV6 + UDP + payload as u64)})
        );
        // The kernel may still send MLD reports of its own: ICMPv6 is the only other IPv6 traffic.
        let v6 = s["l3"]["ipv6"]["packets"].as_u64().unwrap();
        assert_eq!(
            v6,
            datagrams as u64 + s["l4"]["icmpv6"]["packets"].as_u64().unwrap(),
            "{s}"
        );
    }
);

privileged_test!(
    fn a_tcp_connection_matches_the_kernels_own_counters() {
        let net = VethPair::new();
        let listener = VethPair::in_netns(&net.ns, || TcpListener::bind((ADDR, 8080)).unwrap());
        net.meshbpf(&["attach", &net.dev]).ok();
        let (rx_packets_before, rx_bytes_before) = net.link_stats("rx");

        let sent = vec![0xab_u8; 100_000];
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            conn.write_all(b"done").unwrap();
            got.len()
        });
        VethPair::in_netns(&net.peer_ns, || {
            let mut conn = TcpStream::connect((ADDR, 8080)).unwrap();
            conn.write_all(&sent).unwrap();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).unwrap();
            assert_eq!(reply, b"done");
        });
        assert_eq!(server.join().unwrap(), sent.len());

        let (rx_packets, rx_bytes) = net.link_stats("rx");
        let s = common::wait_for(Duration::from_secs(5), || {
            let s = stats(&net);
            (s["packets"].as_u64() == Some(rx_packets - rx_packets_before)).then_some(s)
        })
        .unwrap_or_else(|| {
            panic!(
                "counts never matched the veth's rx counters: {}",
                stats(&net)
            )
        });
        let packets = rx_packets - rx_packets_before;
        assert_eq!(s["l4"]["tcp"]["packets"], packets, "{s}");
        // XDP sees whole frames; the veth counts bytes after the Ethernet header.
        assert_eq!(
            s["l4"]["tcp"]["bytes"],
            rx_bytes - rx_bytes_before + ETH * packets,
            "{s}"
        );
        assert!(
            s["l4"]["tcp"]["bytes"].as_u64().unwrap() > sent.len() as u64,
            "every payload byte crossed: {s}"
        );
    }
);

privileged_test!(
    fn attaching_twice_keeps_the_first_attachment() {
        let net = VethPair::new();
        let first = net.meshbpf(&["attach", &net.dev, "-j"]).ok().json();
        let again = net.meshbpf(&["attach", &net.dev, "-j"]).ok().json();
        assert_eq!(again["status"], "already_attached");
        assert_eq!(again["prog_id"], first["prog_id"]);
        assert_eq!(again["link_id"], first["link_id"]);
        let human = net.meshbpf(&["attach", &net.dev]).ok();
        assert!(human.stdout.contains("already attached"), "{human:?}");

        let other_mode = net.meshbpf(&["attach", &net.dev, "--mode", "skb"]);
        assert_eq!(other_mode.code, 1, "{other_mode:?}");
        assert!(
            other_mode.stderr.contains("already attached")
                && other_mode.stderr.contains("native mode, not skb mode"),
            "{other_mode:?}"
        );
        assert_eq!(net.xdp_prog_id(), first["prog_id"].as_u64());
        let listed = net.meshbpf(&["stats", "-j"]).ok().json();
        let ours: Vec<&Value> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["interface"] == net.dev.as_str())
            .collect();
        assert_eq!(ours.len(), 1, "one attachment, never duplicated: {listed}");
    }
);

privileged_test!(
    fn concurrent_attaches_make_one_attachment() {
        let net = VethPair::new();
        let outcomes: Vec<Value> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| net.meshbpf(&["attach", &net.dev, "-j"]).ok().json()))
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let attached = outcomes
            .iter()
            .filter(|o| o["status"] == "attached")
            .count();
        assert_eq!(attached, 1, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| o["prog_id"] == outcomes[0]["prog_id"]),
            "{outcomes:?}"
        );
    }
);

privileged_test!(
    fn stats_lists_every_attachment_as_an_array() {
        let (a, b) = (VethPair::new(), VethPair::new());
        a.meshbpf(&["attach", &a.dev]).ok();
        b.meshbpf(&["attach", &b.dev, "--mode", "skb"]).ok();
        let all = common::meshbpf(&["stats", "-j"]).ok().json();
        let names: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["interface"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&a.dev.as_str()) && names.contains(&b.dev.as_str()),
            "{all}"
        );
        // Seen from outside their namespace, the links are live but not on a local interface.
        let b_seen = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["interface"] == b.dev.as_str())
            .unwrap();
        assert_eq!(b_seen["state"], "elsewhere", "{b_seen}");
        let table = b.meshbpf(&["stats"]).ok();
        assert!(
            table.stdout.contains(&b.dev)
                && table.stdout.contains("skb")
                && table.stdout.contains("total"),
            "{table:?}"
        );
    }
);

privileged_test!(
    fn a_deleted_interface_leaves_a_defunct_attachment_that_attach_replaces() {
        let net = VethPair::new();
        let first = net.meshbpf(&["attach", &net.dev, "-j"]).ok().json();
        common::must(&format!("ip -n {} link del {}", net.ns, net.dev));
        let gone = common::meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        assert_eq!(gone["state"], "defunct", "{gone}");
        assert_eq!(gone["mode"], Value::Null);

        common::must(&format!(
            "ip link add {} netns {} type veth peer name {} netns {} && ip -n {} link set {} up && ip -n {} link set {} up",
            net.dev, net.ns, net.peer_dev, net.peer_ns, net.ns, net.dev, net.peer_ns, net.peer_dev
        ));
        let again = net.meshbpf(&["attach", &net.dev, "-j"]).ok().json();
        assert_eq!(again["status"], "attached");
        assert_ne!(again["prog_id"], first["prog_id"]);
        assert_eq!(net.xdp_prog_id(), again["prog_id"].as_u64());
    }
);

privileged_test!(
    fn an_interrupted_attach_leaves_a_directory_that_the_next_attach_sweeps() {
        let net = VethPair::new();
        // What a command killed before pinning its link leaves behind.
        common::must(&format!("mkdir -p {}/xdp_counter", net.pin_dir().display()));
        let stats = common::meshbpf(&["stats", &net.dev]);
        assert_eq!(
            stats.code, 1,
            "a link-less directory is no attachment: {stats:?}"
        );
        let attached = net.meshbpf(&["attach", &net.dev, "-j"]).ok().json();
        assert_eq!(attached["status"], "attached");
        assert!(net.pin_dir().join("xdp_counter/link").exists());
    }
);

privileged_test!(
    fn detach_of_nothing_succeeds_and_says_so() {
        let net = VethPair::new();
        let r = net.meshbpf(&["detach", &net.dev, "-j"]).ok().json();
        assert_eq!(r, json!({"interface": net.dev, "detached": []}));
        let human = net.meshbpf(&["detach", &net.dev]).ok();
        assert!(
            human.stdout.contains("nothing of meshbpf's is attached"),
            "{human:?}"
        );
    }
);
