//! xdp_mesh_filter against real traffic: sockets in two namespaces, rules
//! applied through the real binary, outcomes checked on the wire and in the
//! filter's own counters.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::filter::{attach_filter, hits, rules_file, show};
use common::{VethPair, ADDR, ADDR6, PEER_ADDR, PEER_ADDR6};
use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};

/// Whether a TCP connection from `from` (any local address when None)
/// completes within `timeout`, made from namespace `ns`.
fn connects(ns: &str, from: Option<&str>, to: SocketAddr, timeout: Duration) -> bool {
    VethPair::in_netns(ns, || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        if let Some(from) = from {
            socket
                .bind(&SocketAddr::new(from.parse().unwrap(), 0).into())
                .unwrap();
        }
        socket.connect_timeout(&to.into(), timeout).is_ok()
    })
}

privileged_test!(
    fn a_denied_cidr_gets_no_replies_and_an_allowed_port_connects() {
        let net = VethPair::new();
        let listeners: Vec<TcpListener> = VethPair::in_netns(&net.ns, || {
            [8080, 8081]
                .iter()
                .map(|p| TcpListener::bind((ADDR, *p)).unwrap())
                .collect()
        });
        attach_filter(
            &net,
            &json!({"default": "deny", "rules": [
                {"action": "deny", "src": "192.0.2.0/24", "protocol": "icmp"},
                {"action": "allow", "protocol": "tcp", "dport": 8080},
            ]}),
        );

        let ping = common::sh(&format!(
            "ip netns exec {} ping -n -c 2 -i 0.2 -W 1 {ADDR}",
            net.peer_ns
        ));
        assert!(
            !ping.status.success(),
            "pings from a denied CIDR must get no replies"
        );

        let server = std::thread::spawn(move || {
            let (mut conn, _) = listeners[0].accept().unwrap();
            let mut got = String::new();
            conn.read_to_string(&mut got).unwrap();
            got
        });
        VethPair::in_netns(&net.peer_ns, || {
            let mut conn = TcpStream::connect_timeout(
                &format!("{ADDR}:8080").parse().unwrap(),
                Duration::from_secs(2),
            )
            .expect("the allowed port connects");
            conn.write_all(b"through the filter").unwrap();
        });
        assert_eq!(server.join().unwrap(), "through the filter");
        assert!(
            !connects(
                &net.peer_ns,
                None,
                format!("{ADDR}:8081").parse().unwrap(),
                Duration::from_millis(500)
            ),
            "a port no rule allows falls to the default deny"
        );

        let shown = show(&net);
        assert_eq!(
            hits(&shown, 0),
            2,
            "both echo requests hit the ICMP deny: {shown}"
        );
        assert!(
            hits(&shown, 1) >= 3,
            "the handshake and data hit the allow: {shown}"
        );
        assert!(
            shown["counters"]["defaulted"]["packets"].as_u64().unwrap() >= 1,
            "{shown}"
        );
        assert_eq!(
            shown["counters"]["verdicts"]["drop"]["packets"]
                .as_u64()
                .unwrap(),
            2 + shown["counters"]["defaulted"]["packets"].as_u64().unwrap(),
            "every drop is the ICMP rule or the default: {shown}"
        );
    }
);

privileged_test!(
    fn ipv6_is_filtered_by_its_own_rules() {
        let net = VethPair::with_ipv6();
        let (rx4, rx6) = VethPair::in_netns(&net.ns, || {
            (
                UdpSocket::bind((ADDR, 9000)).unwrap(),
                UdpSocket::bind(format!("[{ADDR6}]:9000")).unwrap(),
            )
        });
        attach_filter(
            &net,
            &json!({"default": "allow", "rules": [
                {"action": "deny", "src": format!("{PEER_ADDR6}/128"), "protocol": "udp", "dport": "9000-9001"},
            ]}),
        );
        net.send_udp(format!("[{ADDR6}]:9000").parse().unwrap(), 10, 64);
        net.send_udp(format!("{ADDR}:9000").parse().unwrap(), 10, 64);

        rx4.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 128];
        for _ in 0..10 {
            rx4.recv(&mut buf)
                .expect("IPv4 is not denied by an IPv6 rule");
        }
        rx6.set_nonblocking(true).unwrap();
        assert!(rx6.recv(&mut buf).is_err(), "no IPv6 datagram got through");
        let shown = show(&net);
        assert_eq!(hits(&shown, 0), 10, "{shown}");
        assert_eq!(shown["rules"][0]["src"], format!("{PEER_ADDR6}/128"));
        assert_eq!(shown["rules"][0]["dport"], "9000-9001");
    }
);

privileged_test!(
    fn the_rate_limit_passes_pps_times_seconds_plus_burst() {
        let (pps, burst) = (200u64, 50u64);
        let net = VethPair::new();
        attach_filter(
            &net,
            &json!({"default": "allow", "rules": [], "rate_limit": {"pps": pps, "burst": burst}}),
        );

        // Well above the rate for about a second: 40 bursts of 50 datagrams.
        let sender = VethPair::in_netns(&net.peer_ns, || UdpSocket::bind((PEER_ADDR, 0)).unwrap());
        let to: SocketAddr = format!("{ADDR}:9").parse().unwrap();
        let (rounds, per_round) = (40, 50);
        let started = Instant::now();
        for round in 0..rounds {
            for _ in 0..per_round {
                sender.send_to(b"x", to).unwrap();
            }
            if round + 1 < rounds {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let sent = (rounds * per_round) as u64;

        let stats = common::wait_for(Duration::from_secs(5), || {
            let s = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            (s["packets"].as_u64() == Some(sent)).then_some(s)
        })
        .expect("every datagram reached the filter");
        let passed = stats["verdicts"]["pass"]["packets"].as_u64().unwrap();
        // GCRA admits `burst` at once, then one per 1/pps; the kernel timestamps
        // the packets a little after the sender's clock, hence a 20 ms slack.
        let slack = 0.020;
        let low = burst as f64 + pps as f64 * (elapsed - slack);
        let high = burst as f64 + pps as f64 * (elapsed + slack);
        assert!(
            (low..=high).contains(&(passed as f64)),
            "passed {passed} of {sent} in {elapsed:.3} s; expected {low:.0}..={high:.0}"
        );
        assert_eq!(
            stats["rate_limited"]["packets"].as_u64().unwrap(),
            sent - passed
        );
        assert_eq!(stats["rate_limited_sources"], 1);
    }
);

privileged_test!(
    fn a_syn_flood_from_one_source_is_cut_while_another_connects() {
        let net = VethPair::new();
        let legit = "192.0.2.3";
        net.add_peer_address(legit);
        let listener = VethPair::in_netns(&net.ns, || TcpListener::bind((ADDR, 8080)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let (pps, flood) = (20u64, 400usize);
        attach_filter(
            &net,
            &json!({"default": "allow", "rules": [], "syn_flood": {"pps": pps}}),
        );

        // Non-blocking connects: each one is a SYN from the flooding address.
        let to: SocketAddr = format!("{ADDR}:8080").parse().unwrap();
        let started = Instant::now();
        let flooders: Vec<Socket> = VethPair::in_netns(&net.peer_ns, || {
            (0..flood)
                .map(|_| {
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    socket.set_nonblocking(true).unwrap();
                    let _ = socket.connect(&to.into());
                    socket
                })
                .collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        assert!(
            connects(
                &net.peer_ns,
                Some(legit),
                format!("{ADDR}:8080").parse().unwrap(),
                Duration::from_secs(2)
            ),
            "a second source still connects during the flood"
        );

        let stats = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        let dropped = stats["syn_dropped"]["packets"].as_u64().unwrap();
        // The flood's SYNs beyond burst (= pps) + pps × elapsed are dropped.
        let admitted_at_most = pps + (pps as f64 * (elapsed + 0.02)).ceil() as u64;
        assert!(
            dropped >= flood as u64 - admitted_at_most,
            "dropped {dropped} of {flood} SYNs in {elapsed:.3} s"
        );
        assert_eq!(
            stats["syn_flood_sources"], 1,
            "only the flooding source was ever refused: {stats}"
        );
        drop(flooders);
    }
);

privileged_test!(
    fn applying_10000_rules_under_traffic_never_misjudges_a_packet() {
        let net = VethPair::new();
        let denied = "192.0.2.3";
        net.add_peer_address(denied);
        let cidrs = |base: u32| -> Vec<Value> {
            (0..10_000u32)
                .map(|i| json!({"action": "deny", "src": format!("10.{}.{}.0/24", base + i / 256, i % 256)}))
                .collect()
        };
        // Two sets that disagree on everything but the two sources under test.
        let mut a = cidrs(0);
        a.push(json!({"action": "allow", "src": format!("{PEER_ADDR}/32"), "protocol": "udp"}));
        a.push(json!({"action": "deny", "src": format!("{denied}/32")}));
        let mut b = vec![
            json!({"action": "deny", "src": format!("{denied}/32"), "protocol": "udp", "sport": "0-65535"}),
        ];
        b.insert(
            0,
            json!({"action": "allow", "src": format!("{PEER_ADDR}/32")}),
        );
        b.extend(cidrs(100));
        let files = [
            rules_file(&json!({"default": "allow", "rules": a})),
            rules_file(&json!({"default": "deny", "rules": b})),
        ];
        attach_filter(
            &net,
            &serde_json::from_str(&std::fs::read_to_string(&files[0].path).unwrap()).unwrap(),
        );

        let receiver = VethPair::in_netns(&net.ns, || UdpSocket::bind((ADDR, 9000)).unwrap());
        // Applying 10,000 rules takes the CPU for a while: room for the backlog.
        nix::sys::socket::setsockopt(
            &receiver,
            nix::sys::socket::sockopt::RcvBufForce,
            &(16 << 20),
        )
        .unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (good, bad) = VethPair::in_netns(&net.peer_ns, || {
            (
                UdpSocket::bind((PEER_ADDR, 0)).unwrap(),
                UdpSocket::bind((denied, 0)).unwrap(),
            )
        });
        let sending = Arc::new(AtomicBool::new(true));
        let sender = {
            let sending = sending.clone();
            std::thread::spawn(move || {
                let to: SocketAddr = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 9000);
                let mut sent = 0u64;
                while sending.load(Ordering::Relaxed) {
                    good.send_to(b"good", to).unwrap();
                    bad.send_to(b"bad", to).unwrap();
                    sent += 1;
                    if sent % 16 == 0 {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
                sent
            })
        };
        let receiving = Arc::new(AtomicBool::new(true));
        let counter = {
            let receiving = receiving.clone();
            std::thread::spawn(move || {
                let (mut good, mut bad) = (0u64, 0u64);
                let mut buf = [0u8; 16];
                loop {
                    match receiver.recv_from(&mut buf) {
                        Ok((n, _)) if &buf[..n] == b"good" => good += 1,
                        Ok(_) => bad += 1,
                        Err(_) if !receiving.load(Ordering::Relaxed) => return (good, bad),
                        Err(_) => {}
                    }
                }
            })
        };

        let mut generations = Vec::new();
        for round in 0..4 {
            let file = &files[(round + 1) % 2];
            let applied = net
                .meshbpf(&[
                    "filter",
                    "apply",
                    &net.dev,
                    file.path.to_str().unwrap(),
                    "-j",
                ])
                .ok()
                .json();
            generations.push(applied["generation"].as_u64().unwrap());
        }
        sending.store(false, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        let stats = common::wait_for(Duration::from_secs(5), || {
            let s = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            (s["packets"].as_u64() == Some(2 * sent)).then_some(s)
        })
        .expect("every datagram reached the filter");
        receiving.store(false, Ordering::Relaxed);
        let (good, bad) = counter.join().unwrap();

        assert_eq!(
            generations,
            vec![0, 1, 0, 1],
            "each apply flips the generation"
        );
        assert!(sent > 1000, "traffic flowed through all four swaps: {sent}");
        // The filter's verdicts are the proof; the socket confirms what arrived.
        assert_eq!(
            stats["verdicts"]["pass"]["packets"], sent,
            "no allowed packet was dropped: {stats}"
        );
        assert_eq!(
            stats["verdicts"]["drop"]["packets"], sent,
            "no denied packet was passed: {stats}"
        );
        assert_eq!(
            bad, 0,
            "no packet from the denied source reached the socket"
        );
        assert_eq!(
            good, sent,
            "every packet from the allowed source reached the socket"
        );
    }
);

privileged_test!(
    fn swapping_programs_under_traffic_misses_no_packet_and_keeps_the_counts() {
        let net = VethPair::new();
        let first = net.meshbpf(&["attach", &net.dev, "-j"]).ok().json();
        let allow_all = rules_file(&json!({"default": "allow", "rules": []}));
        let sender = VethPair::in_netns(&net.peer_ns, || UdpSocket::bind((PEER_ADDR, 0)).unwrap());
        let sending = Arc::new(AtomicBool::new(true));
        let traffic = {
            let sending = sending.clone();
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while sending.load(Ordering::Relaxed) {
                    sender.send_to(b"count me", (ADDR, 9)).unwrap();
                    sent += 1;
                    if sent % 16 == 0 {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
                sent
            })
        };
        let mut programs = Vec::new();
        for _ in 0..3 {
            let swapped = net
                .meshbpf(&[
                    "attach",
                    &net.dev,
                    "--filter",
                    allow_all.path.to_str().unwrap(),
                    "-j",
                ])
                .ok()
                .json();
            assert_eq!(swapped["status"], "swapped");
            programs.push(swapped["program"].clone());
            net.meshbpf(&["filter", "remove", &net.dev]).ok();
            let back = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            programs.push(back["program"].clone());
            assert_eq!(
                back["link_id"], first["link_id"],
                "one link throughout: the interface kept a program"
            );
        }
        sending.store(false, Ordering::Relaxed);
        let sent = traffic.join().unwrap();

        assert_eq!(programs, ["xdp_mesh_filter", "xdp_counter"].repeat(3));
        let stats = common::wait_for(Duration::from_secs(5), || {
            let s = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            (s["l4"]["udp"]["packets"].as_u64() == Some(sent)).then_some(s)
        });
        assert!(
            stats.is_some(),
            "every one of {sent} datagrams was counted across six swaps: {}",
            net.meshbpf(&["stats", &net.dev, "-j"]).stdout
        );
    }
);
