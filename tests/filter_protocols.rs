//! Filter rules on IP protocols by number or IANA keyword, end to end: real
//! GRE and SCTP packets (raw IP sockets; this kernel has neither GRE nor
//! SCTP, and needs neither to send them) denied on a veth by a number rule
//! and a keyword rule, while UDP passes; and what `filter check` says about
//! protocols it takes and refuses.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::filter::{attach_filter, hits, rules_file, show};
use common::{meshbpf, VethPair, ADDR};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};

const GRE: i32 = 47;
const SCTP: i32 = 132;

/// A GRE header carrying IPv4 (RFC 2784: no flags, version 0, protocol
/// type 0x0800), then a few bytes.
const GRE_PACKET: [u8; 24] = [
    0x00, 0x00, 0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
];
/// An SCTP common header (ports 5000 -> 6000, a verification tag, no
/// checksum) and an empty DATA chunk header.
const SCTP_PACKET: [u8; 16] = [
    0x13, 0x88, 0x17, 0x70, 0, 0, 0, 1, 0, 0, 0, 0, 0x00, 0x03, 0x00, 0x04,
];

fn raw_socket(protocol: i32) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(protocol)))
        .unwrap_or_else(|e| panic!("raw socket for IP protocol {protocol}: {e}"));
    socket.set_nonblocking(true).unwrap();
    socket
}

/// Sends `count` packets of IP protocol `protocol` with `payload` from the
/// peer; the kernel writes the IP header.
fn send_raw(net: &VethPair, protocol: i32, payload: &[u8], count: usize) {
    VethPair::in_netns(&net.peer_ns, || {
        let socket = raw_socket(protocol);
        let to: SocketAddr = format!("{ADDR}:0").parse().unwrap();
        for _ in 0..count {
            socket.send_to(payload, &to.into()).expect("sending raw IP");
        }
    });
}

/// Packets waiting on a nonblocking socket, read until none is left.
fn drain(socket: &Socket) -> usize {
    let mut buf = [std::mem::MaybeUninit::new(0u8); 2048];
    std::iter::from_fn(|| socket.recv(&mut buf).ok()).count()
}

privileged_test!(
    /// Issue 16's "done when": a real GRE packet on a veth is denied by a
    /// number rule, and a real SCTP packet by a keyword rule. The filter's
    /// own counters are the proof (each rule's hits, the drop verdicts);
    /// sockets behind it confirm what arrived.
    fn gre_by_number_and_sctp_by_keyword_are_denied_and_udp_passes() {
        const N: usize = 25;
        let net = VethPair::new();
        // Listening raw sockets also keep the host from answering a GRE or
        // SCTP packet that got through with ICMP protocol unreachable.
        let (gre_rx, sctp_rx, udp_rx) = VethPair::in_netns(&net.ns, || {
            (
                raw_socket(GRE),
                raw_socket(SCTP),
                UdpSocket::bind((ADDR, 9000)).unwrap(),
            )
        });
        attach_filter(
            &net,
            &json!({"default": "allow", "rules": [
                {"action": "deny", "protocol": 47},
                {"action": "deny", "protocol": "sctp"},
            ]}),
        );

        send_raw(&net, GRE, &GRE_PACKET, N);
        send_raw(&net, SCTP, &SCTP_PACKET, N);
        net.send_udp(format!("{ADDR}:9000").parse().unwrap(), N, 32);
        let stats = common::wait_for(Duration::from_secs(5), || {
            let s = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            (s["packets"].as_u64() == Some(3 * N as u64)).then_some(s)
        })
        .unwrap_or_else(|| panic!("the filter saw all {} packets", 3 * N));

        udp_rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let udp = std::iter::from_fn(|| udp_rx.recv(&mut buf).ok()).count();
        assert_eq!(udp, N, "every UDP datagram arrived");

        let shown = show(&net);
        assert_eq!(
            (
                &shown["rules"][0]["protocol"],
                &shown["rules"][1]["protocol"]
            ),
            (&Value::from("gre"), &Value::from("sctp")),
            "filter show prints the protocols by keyword: {shown}"
        );
        assert_eq!(
            hits(&shown, 0),
            N as u64,
            "GRE hit the number rule: {shown}"
        );
        assert_eq!(
            hits(&shown, 1),
            N as u64,
            "SCTP hit the keyword rule: {shown}"
        );
        let counters = &shown["counters"];
        assert_eq!(
            counters["verdicts"]["drop"]["packets"],
            2 * N as u64,
            "{shown}"
        );
        assert_eq!(counters["verdicts"]["pass"]["packets"], N as u64, "{shown}");
        assert_eq!(counters["defaulted"]["packets"], N as u64, "{shown}");
        assert_eq!(
            stats["verdicts"]["drop"]["packets"],
            2 * N as u64,
            "{stats}"
        );

        assert_eq!(drain(&gre_rx), 0, "no GRE packet got through");
        assert_eq!(drain(&sctp_rx), 0, "no SCTP packet got through");
    }
);

fn check(rules: &Value) -> common::Ran {
    let file = rules_file(rules);
    meshbpf(&["filter", "check", file.path.to_str().unwrap(), "-j"])
}

#[test]
fn check_takes_every_spelling_of_a_protocol() {
    let r = check(&json!({"rules": [
        {"action": "deny", "protocol": 0},
        {"action": "deny", "protocol": 255},
        {"action": "deny", "protocol": "47", "src": "10.0.0.0/8"},
        {"action": "deny", "protocol": "esp", "dst": "2001:db8::/32"},
        {"action": "deny", "protocol": "ah"},
        {"action": "deny", "protocol": "ipip"},
        {"action": "allow", "protocol": "ipv6-icmp"},
        {"action": "allow", "protocol": 6, "dport": 22},
    ]}))
    .ok();
    assert_eq!(r.json()["rules"], 8, "{r:?}");
}

#[test]
fn check_refuses_bad_protocols_with_the_reason_and_a_hint() {
    let cases = [
        (json!(256), "256 is not an IP protocol number (0-255)"),
        (json!(-1), "-1 is not an IP protocol number (0-255)"),
        (json!(1.5), "1.5 is not an IP protocol number (0-255)"),
        (
            json!(["gre"]),
            "expected a protocol like \"tcp\", \"gre\" or 47, found [\"gre\"]",
        ),
        (
            json!("gree"),
            "\"gree\" is not a protocol meshbpf knows; did you mean \"gre\"?",
        ),
        (
            json!("ipv6"),
            "\"ipv6\" names IP protocol 41 (IPv6 packets tunnelled in IP), not IPv6 traffic",
        ),
    ];
    for (protocol, expected) in cases {
        let r = check(&json!({"rules": [{"action": "deny", "protocol": protocol}]}));
        assert_eq!(r.code, 1, "{protocol}: {r:?}");
        let error = r.json();
        let message = error["error"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("rule 0, field \"protocol\": {expected}")),
            "{protocol}: {message}"
        );
        assert!(
            !error["hint"].as_str().unwrap_or_default().is_empty(),
            "{error}"
        );
    }
    let r = check(&json!({"rules": [{"action": "deny", "protocol": "sctp", "dport": 80}]}));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.json()["error"].as_str().unwrap().ends_with(
            "rule 0, field \"dport\": ports are matched on tcp and udp only, not on protocol sctp"
        ),
        "{r:?}"
    );
}
