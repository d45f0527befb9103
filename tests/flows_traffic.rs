//! tc_classifier against real traffic: flows appear with exact tuples and
//! counts, the table respects --max-flows, and other tools' clsact filters
//! survive meshbpf coming and going.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;

use common::raw_ip::{self, GRE, GRE_PACKET};
use common::{VethPair, ADDR, PEER_ADDR};
use serde_json::Value;

fn flows(net: &VethPair, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["flows", net.dev.as_str(), "-j"];
    args.extend_from_slice(filters);
    net.meshbpf(&args).ok().json().as_array().unwrap().clone()
}

privileged_test!(
    fn a_tcp_connection_is_one_flow_per_direction_with_the_kernels_counts() {
        let net = VethPair::new();
        let listener = VethPair::in_netns(&net.ns, || TcpListener::bind((ADDR, 8080)).unwrap());
        net.meshbpf(&["attach", &net.dev]).ok();
        let (rx0, tx0) = (net.link_stats("rx"), net.link_stats("tx"));

        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            conn.write_all(&[7u8; 5000]).unwrap();
            got.len()
        });
        let sport = VethPair::in_netns(&net.peer_ns, || {
            let mut conn = TcpStream::connect((ADDR, 8080)).unwrap();
            let sport = conn.local_addr().unwrap().port();
            conn.write_all(&[1u8; 50_000]).unwrap();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).unwrap();
            assert_eq!(reply.len(), 5000);
            sport
        });
        assert_eq!(server.join().unwrap(), 50_000);
        // The last ACK may still be in flight; wait until both directions settle.
        let (rx, tx) = common::wait_for(std::time::Duration::from_secs(5), || {
            let (rx, tx) = (net.link_stats("rx"), net.link_stats("tx"));
            let all = flows(&net, &["--proto", "tcp"]);
            let counted: u64 = all.iter().map(|f| f["packets"].as_u64().unwrap()).sum();
            (counted == (rx.0 - rx0.0) + (tx.0 - tx0.0)).then_some((rx, tx))
        })
        .expect("the flow table caught up with the veth's counters");

        let all = flows(&net, &["--proto", "tcp"]);
        assert_eq!(all.len(), 2, "one flow per direction: {all:?}");
        let ingress = all.iter().find(|f| f["direction"] == "ingress").unwrap();
        assert_eq!(
            (
                &ingress["src"],
                &ingress["dst"],
                &ingress["sport"],
                &ingress["dport"]
            ),
            (
                &Value::from(PEER_ADDR),
                &Value::from(ADDR),
                &Value::from(sport),
                &Value::from(8080)
            )
        );
        // TC sees frames with their 14-byte Ethernet header; the veth counts without it.
        let ingress_packets = rx.0 - rx0.0;
        assert_eq!(ingress["packets"], ingress_packets);
        assert_eq!(ingress["bytes"], rx.1 - rx0.1 + 14 * ingress_packets);
        let egress = all.iter().find(|f| f["direction"] == "egress").unwrap();
        assert_eq!(
            (&egress["src"], &egress["sport"]),
            (&Value::from(ADDR), &Value::from(8080))
        );
        assert_eq!(egress["packets"], tx.0 - tx0.0);
        let flags: Vec<&str> = ingress["tcp_flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for flag in ["syn", "ack", "fin"] {
            assert!(flags.contains(&flag), "{flags:?}");
        }
        assert!(ingress["first_seen"].as_str().unwrap() <= ingress["last_seen"].as_str().unwrap());
    }
);

privileged_test!(
    fn udp_and_icmp_show_up_with_exact_counts() {
        let net = VethPair::new();
        let receiver = VethPair::in_netns(&net.ns, || UdpSocket::bind((ADDR, 5353)).unwrap());
        net.meshbpf(&["attach", &net.dev]).ok();
        net.send_udp(format!("{ADDR}:5353").parse().unwrap(), 5, 100);
        net.ping(ADDR, 2);
        drop(receiver);

        let udp = flows(&net, &["--proto", "udp", "--dport", "5353"]);
        assert_eq!(udp.len(), 1, "{udp:?}");
        assert_eq!(
            (&udp[0]["packets"], &udp[0]["bytes"]),
            (&Value::from(5), &Value::from(5 * (14 + 20 + 8 + 100)))
        );
        let requests = flows(&net, &["--proto", "icmp", "--src", PEER_ADDR]);
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!(
            (&requests[0]["icmp_type"], &requests[0]["packets"]),
            (&Value::from(8), &Value::from(2))
        );
        let replies = flows(&net, &["--proto", "icmp", "--src", ADDR]);
        assert_eq!(
            (&replies[0]["direction"], &replies[0]["icmp_type"]),
            (&Value::from("egress"), &Value::from(0))
        );
    }
);

privileged_test!(
    fn max_flows_bounds_the_table_and_evictions_are_counted() {
        let net = VethPair::new();
        net.meshbpf(&["attach", &net.dev, "--max-flows", "100"])
            .ok();
        VethPair::in_netns(&net.peer_ns, || {
            // Explicit source ports: an ephemeral one may be handed out again.
            for port in 20_000..21_000 {
                UdpSocket::bind((PEER_ADDR, port))
                    .unwrap()
                    .send_to(b"x", (ADDR, 9))
                    .unwrap();
            }
        });
        let table = common::wait_for(std::time::Duration::from_secs(5), || {
            let s = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            (s["flows"]["flows_created"].as_u64() >= Some(1000)).then(|| s["flows"].clone())
        })
        .expect("the classifier saw every datagram");
        assert_eq!(table["max_flows"], 100);
        // The kernel's LRU evicts in per-CPU batches, so the table may sit
        // below its size after evicting; it never holds more.
        let present = table["flows"].as_u64().unwrap();
        assert!((1..=100).contains(&present), "{table}");
        let created = table["flows_created"].as_u64().unwrap();
        assert_eq!(
            table["evictions"],
            created - present,
            "every flow created and gone is an eviction: {table}"
        );
        assert_eq!(flows(&net, &[]).len() as u64, present);
    }
);

/// Another tool's filter on the clsact qdisc: a u32 filter that matches
/// everything and only classifies (this kernel has no matchall or gact).
fn add_foreign_filter(net: &VethPair) {
    common::must(&format!(
        "ip netns exec {} tc qdisc add dev {} clsact",
        net.ns, net.dev
    ));
    common::must(&format!(
        "ip netns exec {} tc filter add dev {} ingress prio 10 u32 match u32 0 0 flowid 1:1",
        net.ns, net.dev
    ));
}

fn foreign_filter_present(net: &VethPair) -> bool {
    let out = common::sh(&format!(
        "ip netns exec {} tc filter show dev {} ingress",
        net.ns, net.dev
    ));
    String::from_utf8_lossy(&out.stdout).contains("u32")
}

privileged_test!(
    fn another_tools_clsact_filter_survives_attach_and_detach_with_both_methods() {
        for method in ["tcx", "netlink"] {
            let net = VethPair::new();
            add_foreign_filter(&net);
            let attached = net
                .meshbpf(&["attach", &net.dev, "--tc-method", method, "-j"])
                .ok()
                .json();
            assert_eq!(attached["flows"]["method"], method);
            assert_eq!(net.tc_program_count(), 2, "{method}: ours, on both hooks");
            net.ping(ADDR, 1);
            net.meshbpf(&["detach", &net.dev]).ok();
            assert!(
                foreign_filter_present(&net),
                "{method}: the other tool's filter is still there"
            );
            assert_eq!(net.tc_program_count(), 0, "{method}: none of ours is left");
        }
        // Alone on it, meshbpf removes the clsact qdisc it created.
        let net = VethPair::new();
        net.meshbpf(&["attach", &net.dev, "--tc-method", "netlink"])
            .ok();
        net.meshbpf(&["detach", &net.dev]).ok();
        let qdiscs = common::sh(&format!(
            "ip netns exec {} tc qdisc show dev {}",
            net.ns, net.dev
        ));
        assert!(
            !String::from_utf8_lossy(&qdiscs.stdout).contains("clsact"),
            "the empty clsact qdisc is gone"
        );
    }
);

privileged_test!(
    fn a_real_http_request_and_ipv6_flows_are_recognised() {
        let net = VethPair::with_ipv6();
        let listener = VethPair::in_netns(&net.ns, || {
            TcpListener::bind(format!("[{}]:8080", common::ADDR6)).unwrap()
        });
        net.meshbpf(&["attach", &net.dev]).ok();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 64];
            let n = conn.read(&mut request).unwrap();
            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            n
        });
        VethPair::in_netns(&net.peer_ns, || {
            let mut conn = TcpStream::connect(format!("[{}]:8080", common::ADDR6)).unwrap();
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: mesh\r\n\r\n")
                .unwrap();
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).unwrap();
            assert!(reply.starts_with(b"HTTP/1.1 204"));
        });
        assert!(server.join().unwrap() > 0);

        let http = common::wait_for(std::time::Duration::from_secs(5), || {
            let found = flows(&net, &["--l7", "http", "--proto", "tcp"]);
            (found.len() == 2).then_some(found)
        })
        .unwrap_or_else(|| panic!("both directions guessed as HTTP: {:?}", flows(&net, &[])));
        for flow in &http {
            assert_eq!(flow["l7"], "http");
            assert!(
                flow["src"].as_str().unwrap().starts_with("2001:db8::"),
                "{flow}"
            );
        }
        let request = http.iter().find(|f| f["direction"] == "ingress").unwrap();
        assert_eq!(
            (&request["dst"], &request["dport"]),
            (&Value::from(common::ADDR6), &Value::from(8080))
        );
    }
);

/// Runs one TCP exchange on `net`: the peer connects to ADDR:port and sends
/// `request`, the server answers `reply` once it has read all of it.
fn exchange(net: &VethPair, port: u16, request: Vec<u8>, reply: &'static [u8]) {
    let listener = VethPair::in_netns(&net.ns, || TcpListener::bind((ADDR, port)).unwrap());
    let expected = request.len();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = vec![0u8; expected];
        conn.read_exact(&mut got).unwrap();
        conn.write_all(reply).unwrap();
    });
    VethPair::in_netns(&net.peer_ns, || {
        let mut conn = TcpStream::connect((ADDR, port)).unwrap();
        conn.write_all(&request).unwrap();
        let mut answer = vec![0u8; reply.len()];
        conn.read_exact(&mut answer).unwrap();
    });
    server.join().unwrap();
}

/// The l7 of each direction of the flow to `port`, once both are there.
fn l7_by_direction(net: &VethPair, port: u16) -> (String, String) {
    let of = |flows: &[Value], direction: &str, key: &str| {
        flows
            .iter()
            .find(|f| f["direction"] == direction && f[key] == port)
            .map(|f| f["l7"].as_str().unwrap().to_owned())
    };
    let all = flows(net, &["--proto", "tcp"]);
    (
        of(&all, "ingress", "dport").unwrap_or_else(|| panic!("no request flow: {all:?}")),
        of(&all, "egress", "sport").unwrap_or_else(|| panic!("no reply flow: {all:?}")),
    )
}

privileged_test!(
    /// The guess looks at packets with payload only: after a 1 MB upload the
    /// server's reply comes hundreds of pure ACKs into its direction, and is
    /// still seen. A reply direction without a signature of its own (an
    /// HTTP/2 server's SETTINGS frame) inherits its request's guess.
    fn the_l7_guess_skips_pure_acks_and_replies_inherit_it() {
        let net = VethPair::new();
        net.meshbpf(&["attach", &net.dev]).ok();

        exchange(&net, 8081, vec![0u8; 1 << 20], b"HTTP/1.1 200 OK\r\n\r\n");
        let (upload, reply) = l7_by_direction(&net, 8081);
        assert_eq!((upload.as_str(), reply.as_str()), ("unknown", "http"));

        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        exchange(&net, 8082, preface, &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let (request, reply) = l7_by_direction(&net, 8082);
        assert_eq!((request.as_str(), reply.as_str()), ("http2", "http2"));
    }
);

privileged_test!(
    fn follow_streams_json_lines_until_ctrl_c_which_exits_130() {
        let net = VethPair::new();
        net.meshbpf(&["attach", &net.dev]).ok();
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", net.ns))
            .args([
                "--",
                common::BIN,
                "flows",
                &net.dev,
                "--follow",
                "-j",
                "--interval",
                "0.1",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut lines, &mut first).unwrap();
        let marker: Value = serde_json::from_str(&first).expect("a JSON line");
        assert!(marker["refresh"].is_string(), "{marker}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(130));
    }
);

/// Packets the HTB class `1:minor` on the attach side's veth sent. (tc
/// prints HTB classes as text even with -j.)
fn htb_class_packets(net: &VethPair, minor: &str) -> u64 {
    let out = common::run(
        Command::new("tc").args(["-n", &net.ns, "-s", "class", "show", "dev", &net.dev]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let heading = format!("class htb 1:{minor} ");
    let mut lines = text.lines().skip_while(|line| !line.starts_with(&heading));
    lines
        .next()
        .unwrap_or_else(|| panic!("no HTB class 1:{minor}: {text}"));
    // " Sent 840 bytes 7 pkt (dropped 0, ...)"
    let sent: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    match sent[..] {
        ["Sent", _, "bytes", packets, "pkt", ..] => packets.parse().unwrap(),
        _ => panic!("unexpected tc output for 1:{minor}: {text}"),
    }
}

fn egress_packets(stats: &Value, class: &str) -> u64 {
    stats["flows"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == class)
        .unwrap_or_else(|| panic!("no class {class} in {stats}"))["egress"]["packets"]
        .as_u64()
        .unwrap()
}

privileged_test!(
    fn qos_classes_steer_real_packets_into_htb_classes_by_priority_and_mark() {
        let net = VethPair::new();
        // The operator's shaping: HTB classes 1:10, 1:20 and a default 1:30;
        // skb->priority 1:10 picks 1:10 directly, and a filter sends mark 0x20
        // to 1:20 (a cls_bpf one: this kernel has no cls_fw, and u32 without
        // CONFIG_CLS_U32_MARK ignores marks).
        let tc = |args: &str| common::must(&format!("tc -n {} {args}", net.ns));
        tc(&format!(
            "qdisc add dev {} root handle 1: htb default 30",
            net.dev
        ));
        for minor in ["10", "20", "30"] {
            tc(&format!(
                "class add dev {} parent 1: classid 1:{minor} htb rate 1gbit",
                net.dev
            ));
        }
        let (_fixture, mark_filter) = common::compile_fixture("mark_to_class");
        tc(&format!(
            "filter add dev {} parent 1: protocol all prio 1 bpf obj {} sec classifier classid 1:20",
            net.dev,
            mark_filter.display()
        ));
        let dir = tempfile::tempdir().unwrap();
        let attach_with_classes = |json: &str| {
            let classes = dir.path().join("classes.json");
            std::fs::write(&classes, json).unwrap();
            let args = [
                "attach",
                &net.dev,
                "--classes",
                classes.to_str().unwrap(),
                "-j",
            ];
            net.meshbpf(&args).ok().json()
        };
        let attached = attach_with_classes(
            r#"{ "classes": { "fast": { "priority": "1:10" }, "marked": { "mark": "0x20" } },
             "rules": [ { "class": "fast", "protocol": "udp", "dport": 5001, "direction": "egress" },
                        { "class": "marked", "protocol": "udp", "dport": 5002 } ] }"#,
        );
        assert_eq!(attached["classes"], "applied");

        let send = |port: u16, count: usize| {
            VethPair::in_netns(&net.ns, || {
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..count {
                    sock.send_to(&[0x5a; 64], (PEER_ADDR, port)).unwrap();
                }
            })
        };
        let before = ["10", "20", "30"].map(|minor| htb_class_packets(&net, minor));
        send(5001, 7);
        send(5002, 5);
        // Echo replies leave through the default class.
        net.ping(ADDR, 3);
        let after = ["10", "20", "30"].map(|minor| htb_class_packets(&net, minor));
        assert_eq!(
            after[0] - before[0],
            7,
            "priority 1:10 picked HTB class 1:10"
        );
        assert_eq!(
            after[1] - before[1],
            5,
            "mark 0x20 matched the u32 filter to 1:20"
        );
        assert_eq!(
            after[2] - before[2],
            3,
            "unclassified packets took the default"
        );

        let stats = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        assert_eq!(egress_packets(&stats, "fast"), 7);
        assert_eq!(egress_packets(&stats, "marked"), 5);
        assert_eq!(egress_packets(&stats, "unclassified"), 3);
        let fast = &stats["flows"]["classes"][1];
        assert_eq!(
            (&fast["class"], &fast["priority"]),
            (&Value::from("fast"), &Value::from(0x1_0010))
        );

        // Replacing the classes on the running attachment: 5001 is marked now.
        let replaced = attach_with_classes(
            r#"{ "classes": { "marked": { "mark": 32 } },
             "rules": [ { "class": "marked", "protocol": "udp", "dport": "5001-5002" } ] }"#,
        );
        assert_eq!(
            (&replaced["status"], &replaced["classes"]),
            (&Value::from("already_attached"), &Value::from("replaced"))
        );
        send(5001, 4);
        assert_eq!(htb_class_packets(&net, "20") - after[1], 4);
        assert_eq!(htb_class_packets(&net, "10"), after[0]);
        let stats = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        assert_eq!(
            egress_packets(&stats, "marked"),
            4,
            "counters start with the new classes"
        );

        // The operator's qdisc is theirs: detach leaves it.
        net.meshbpf(&["detach", &net.dev]).ok();
        let qdiscs =
            common::run(Command::new("tc").args(["-n", &net.ns, "qdisc", "show", "dev", &net.dev]));
        assert!(String::from_utf8_lossy(&qdiscs.stdout).contains("qdisc htb 1: root"));
    }
);

/// (class, ingress packets, ingress bytes, egress packets, egress bytes) of
/// every class in `stats -j`, in map order.
fn class_counts(stats: &Value) -> Vec<(String, u64, u64, u64, u64)> {
    let n = |v: &Value| v.as_u64().unwrap();
    stats["flows"]["classes"]
        .as_array()
        .unwrap_or_else(|| panic!("no classes in {stats}"))
        .iter()
        .map(|c| {
            (
                c["class"].as_str().unwrap().to_owned(),
                n(&c["ingress"]["packets"]),
                n(&c["ingress"]["bytes"]),
                n(&c["egress"]["packets"]),
                n(&c["egress"]["bytes"]),
            )
        })
        .collect()
}

privileged_test!(
    /// A class rule naming a protocol by keyword, then by number, classifies
    /// a real GRE flow (sent through a raw IP socket), and `flows --proto
    /// gre` finds it by name.
    fn class_rules_by_protocol_keyword_and_number_classify_real_gre() {
        let net = VethPair::new();
        // Listening on the peer: no ICMP answers come back to count.
        let (_gre_rx, _udp_rx) = VethPair::in_netns(&net.peer_ns, || {
            (
                raw_ip::socket(GRE),
                UdpSocket::bind((PEER_ADDR, 6000)).unwrap(),
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let attach_with_classes = |json: &str| {
            let classes = dir.path().join("classes.json");
            std::fs::write(&classes, json).unwrap();
            let args = [
                "attach",
                &net.dev,
                "--classes",
                classes.to_str().unwrap(),
                "-j",
            ];
            net.meshbpf(&args).ok().json()
        };
        let send = |gre: usize, udp: usize| {
            raw_ip::send(&net.ns, PEER_ADDR, GRE, &GRE_PACKET, gre);
            VethPair::in_netns(&net.ns, || {
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..udp {
                    sock.send_to(&[0x5a; 32], (PEER_ADDR, 6000)).unwrap();
                }
            });
        };
        // On the wire: Ethernet, IPv4 and the GRE packet; UDP's 32 bytes.
        let gre_bytes = (14 + 20 + GRE_PACKET.len()) as u64;
        let udp_bytes = (14 + 20 + 8 + 32) as u64;

        attach_with_classes(
            r#"{ "classes": { "tunnel": { "mark": "0x47" } },
                 "rules": [ { "class": "tunnel", "protocol": "gre" } ] }"#,
        );
        send(9, 4);
        let stats = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        assert_eq!(
            class_counts(&stats),
            vec![
                ("unclassified".into(), 0, 0, 4, 4 * udp_bytes),
                ("tunnel".into(), 0, 0, 9, 9 * gre_bytes),
            ]
        );
        let gre = flows(&net, &["--proto", "gre"]);
        assert_eq!(gre.len(), 1, "{gre:?}");
        assert_eq!(
            (
                &gre[0]["protocol"],
                &gre[0]["protocol_number"],
                &gre[0]["direction"],
                &gre[0]["packets"]
            ),
            (
                &Value::from("gre"),
                &Value::from(47),
                &Value::from("egress"),
                &Value::from(9)
            )
        );
        assert_eq!(flows(&net, &["--proto", "47"]), gre);

        // By number, egress only; the counters start again.
        attach_with_classes(
            r#"{ "classes": { "tunnel": { "mark": 71 } },
                 "rules": [ { "class": "tunnel", "protocol": 47, "direction": "egress" } ] }"#,
        );
        send(5, 2);
        let stats = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        assert_eq!(
            class_counts(&stats),
            vec![
                ("unclassified".into(), 0, 0, 2, 2 * udp_bytes),
                ("tunnel".into(), 0, 0, 5, 5 * gre_bytes),
            ]
        );
    }
);

privileged_test!(
    /// Issue 15: read-only commands never report a program the kernel is
    /// not running. With tc_classifier's netlink filters gone from under
    /// its pins (an interrupted detach), `flows` must not show its table
    /// as if it still counted.
    fn a_flow_table_whose_programs_do_not_run_is_not_shown() {
        let net = VethPair::new();
        net.meshbpf(&["attach", &net.dev, "--tc-method", "netlink"])
            .ok();
        net.ping(ADDR, 1);
        assert!(!net
            .meshbpf(&["flows", "-j"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .is_empty());
        common::must(&format!(
            "ip netns exec {} tc filter del dev {} ingress && ip netns exec {} tc filter del dev {} egress",
            net.ns, net.dev, net.ns, net.dev
        ));
        let one = net.meshbpf(&["flows", &net.dev, "-j"]);
        assert_eq!(one.code, 1, "{one:?}");
        assert_eq!(
            one.json()["error"],
            format!(
                "{}'s flow table is not counting: the kernel does not run tc_classifier there, an attach or detach was interrupted",
                net.dev
            )
        );
        let all = net.meshbpf(&["flows", "-j"]);
        assert!(!all.stdout.contains(&net.dev), "{all:?}");
    }
);
