//! Filter rules on IP protocols by number or IANA keyword, end to end: real
//! GRE and SCTP packets (from raw IP sockets) denied on a veth by a number
//! rule and a keyword rule, while UDP passes; and what `filter check` says
//! about the protocols it takes and refuses.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::filter::{attach_filter, hits, rules_file, show};
use common::raw_ip::{self, GRE, GRE_PACKET, SCTP, SCTP_PACKET};
use common::{meshbpf, VethPair, ADDR};
use serde_json::{json, Value};

privileged_test!(
    /// Issue 16's "done when": a real GRE packet on a veth is denied by a
    /// number rule, and a real SCTP packet by a keyword rule. The filter's
    /// own counters are the proof (each rule's hits, the drop verdicts);
    /// sockets behind it confirm what arrived.
    fn gre_by_number_and_sctp_by_keyword_are_denied_and_udp_passes() {
        const N: usize = 25;
        let net = VethPair::new();
        // The raw sockets count what gets through, unanswered.
        let (gre_rx, sctp_rx, udp_rx) = VethPair::in_netns(&net.ns, || {
            (
                raw_ip::socket(GRE),
                raw_ip::socket(SCTP),
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

        raw_ip::send(&net.peer_ns, ADDR, GRE, &GRE_PACKET, N);
        raw_ip::send(&net.peer_ns, ADDR, SCTP, &SCTP_PACKET, N);
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

        assert_eq!(raw_ip::drain(&gre_rx), 0, "no GRE packet got through");
        assert_eq!(raw_ip::drain(&sctp_rx), 0, "no SCTP packet got through");
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
