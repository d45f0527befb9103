//! tc_classifier's flow table and xdp_counter's counters against tcpdump.
//!
//! The same real traffic (pings both ways over IPv4 and IPv6, a TCP
//! transfer of a few hundred KB each way, UDP flows both ways) is captured
//! on the attach side's veth by two tcpdumps, one per direction: `-Q in` is
//! what tc ingress and XDP see, `-Q out` what tc egress sees. tcpdump's own
//! dissection of the captures (`tcpdump -r -nn -e -q`) gives every flow's
//! packets and frame bytes, keyed as README.md keys a flow; no meshbpf code
//! or constant goes into the expectation.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use common::{VethPair, ADDR, ADDR6, PEER_ADDR, PEER_ADDR6};
use serde_json::{json, Value};

/// A flow as README.md keys it: the 5-tuple and the direction, with ICMP's
/// type and code in place of the ports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    direction: &'static str,
    protocol: u8,
    src: String,
    dst: String,
    sport: u16,
    dport: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    packets: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }

    fn json(self) -> Value {
        json!({"packets": self.packets, "bytes": self.bytes})
    }
}

/// One frame as tcpdump dissected it.
#[derive(Debug)]
struct Frame {
    /// tcpdump's name of the ethertype: `IPv4`, `IPv6`, `ARP`, ...
    ethertype: String,
    /// The frame's length on the wire, Ethernet header included.
    length: u64,
    key: Key,
}

/// RFC 792 and RFC 4443 numbers of the ICMP messages ping exchanges, by the
/// words tcpdump prints for them.
const ICMP_MESSAGES: [(&str, u8, u16); 4] = [
    ("ICMP echo request", 1, 8),
    ("ICMP echo reply", 1, 0),
    ("ICMP6, echo request", 58, 128),
    ("ICMP6, echo reply", 58, 129),
];

/// `a.b.c.d.port` or `v6addr.port`, as tcpdump -nn prints an endpoint.
fn endpoint(text: &str) -> Option<(String, u16)> {
    let (addr, port) = text.rsplit_once('.')?;
    Some((addr.to_owned(), port.parse().ok()?))
}

/// Parses one line of `tcpdump -nn -e -q -t`, e.g.
/// `02:00:00:00:00:02 > 02:00:00:00:00:01, IPv4, length 74: 192.0.2.2.40820 > 192.0.2.1.7000: tcp 0`,
/// or None for a frame the test did not send.
fn parse_frame(direction: &'static str, line: &str) -> Option<Frame> {
    let (link, rest) = line.split_once(", length ")?;
    let ethertype = link.rsplit(", ").next()?.to_owned();
    let (length, network) = rest.split_once(": ")?;
    let (addresses, transport) = network.split_once(": ")?;
    let (src, dst) = addresses.split_once(" > ")?;
    let protocol = match transport.split([' ', ',']).next()? {
        "tcp" => Some(6),
        "UDP" => Some(17),
        _ => None,
    };
    let ((src, sport), (dst, dport), protocol) = match protocol {
        Some(protocol) => (endpoint(src)?, endpoint(dst)?, protocol),
        None => {
            let &(_, protocol, kind) = ICMP_MESSAGES
                .iter()
                .find(|(words, _, _)| transport.starts_with(&format!("{words},")))?;
            // Echo messages have code 0.
            ((src.to_owned(), kind), (dst.to_owned(), 0), protocol)
        }
    };
    Some(Frame {
        ethertype,
        length: length.parse().ok()?,
        key: Key {
            direction,
            protocol,
            src,
            dst,
            sport,
            dport,
        },
    })
}

/// Every frame of a pcap file, as tcpdump reads it back. A file that
/// tcpdump is still writing may end in half a record: `complete` says
/// whether to insist that it does not.
fn read_capture(file: &Path, direction: &'static str, complete: bool) -> Vec<Frame> {
    let out = common::run(
        Command::new("tcpdump")
            .args(["-nn", "-e", "-q", "-t", "-r"])
            .arg(file),
    );
    assert!(
        out.status.success() || !complete,
        "tcpdump -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            parse_frame(direction, line)
                .unwrap_or_else(|| panic!("a frame the test did not send: {line:?}"))
        })
        .collect()
}

/// A tcpdump writing the frames that cross the attach side's veth in one
/// direction to a file.
struct Capture {
    child: Option<Child>,
    stderr: BufReader<ChildStderr>,
    file: PathBuf,
    direction: &'static str,
}

impl Capture {
    /// `-Q in` or `-Q out`; returns once tcpdump captures.
    fn start(net: &VethPair, dir: &Path, queue: &str) -> Self {
        let file = dir.join(format!("{queue}.pcap"));
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", net.ns))
            // -U and --immediate-mode: each frame reaches the file as it
            // is captured, so the file can be compared with the kernel's
            // counters while tcpdump runs. Immediate mode gives every frame
            // a ring slot of the snapshot length: a short one (the headers;
            // the pcap keeps each frame's whole length) and a large buffer
            // hold a TCP burst. -Z root: the file is in a directory only
            // root may write.
            .args(["--", "tcpdump", "-i", &net.dev, "-Q", queue, "-U"])
            .args(["--immediate-mode", "-s", "200", "-B", "16384"])
            .args(["-Z", "root", "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tcpdump");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        // tcpdump says so once its socket is bound to the device and
        // filtered by direction: every frame from then on is kept.
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            let read = stderr.read_line(&mut line).expect("reading tcpdump");
            assert!(read > 0, "tcpdump -Q {queue} exited before capturing");
        }
        Capture {
            child: Some(child),
            stderr,
            file,
            direction: if queue == "in" { "ingress" } else { "egress" },
        }
    }

    /// The frames written so far.
    fn frames_so_far(&self) -> usize {
        read_capture(&self.file, self.direction, false).len()
    }

    /// Stops tcpdump as Ctrl-C does and returns every frame it captured,
    /// after checking that the kernel dropped none before tcpdump read it.
    fn stop(mut self) -> Vec<Frame> {
        let child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let out = child.wait_with_output().expect("waiting for tcpdump");
        let mut summary = String::new();
        self.stderr.read_to_string(&mut summary).unwrap();
        assert!(out.status.success(), "tcpdump: {}: {summary}", out.status);
        assert!(
            summary.lines().any(|l| l == "0 packets dropped by kernel"),
            "tcpdump lost frames: {summary}"
        );
        read_capture(&self.file, self.direction, true)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The peer connects to ADDR:port and uploads `up` bytes, the attach side
/// answers with `down` bytes once it has read them all, and both close.
fn tcp_transfer(net: &VethPair, port: u16, up: usize, down: usize) {
    let listener = VethPair::in_netns(&net.ns, || TcpListener::bind((ADDR, port)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        conn.write_all(&vec![0x33; down]).unwrap();
        got.len()
    });
    let received = VethPair::in_netns(&net.peer_ns, || {
        let mut conn = TcpStream::connect((ADDR, port)).unwrap();
        conn.write_all(&vec![0x44; up]).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).unwrap();
        reply.len()
    });
    assert_eq!((server.join().unwrap(), received), (up, down));
}

/// Sends `count` datagrams of `payload` bytes from the attach side to `to`.
fn send_udp_from_attach_side(net: &VethPair, to: SocketAddr, count: usize, payload: usize) {
    VethPair::in_netns(&net.ns, || {
        let sock = UdpSocket::bind(SocketAddr::new(
            if to.is_ipv4() { ADDR } else { ADDR6 }.parse().unwrap(),
            0,
        ))
        .unwrap();
        for _ in 0..count {
            sock.send_to(&vec![0x5a; payload], to).unwrap();
        }
    });
}

/// Bound UDP sockets at `addr:port` in namespace `ns`, so datagrams to them
/// are taken and no ICMP port unreachable comes back.
fn udp_receivers(ns: &str, endpoints: &[(&str, u16)]) -> Vec<UdpSocket> {
    VethPair::in_netns(ns, || {
        endpoints
            .iter()
            .map(|&(addr, port)| UdpSocket::bind((addr, port)).unwrap())
            .collect()
    })
}

/// TCP, then UDP both ways, then pings: an echo answered means the frames
/// queued before it went through.
fn send_traffic(net: &VethPair) {
    tcp_transfer(net, 7000, 400_000, 300_000);
    let _taken = (
        udp_receivers(
            &net.ns,
            &[(ADDR, 40001), (ADDR, 40002), (ADDR, 40003), (ADDR6, 40004)],
        ),
        udp_receivers(&net.peer_ns, &[(PEER_ADDR, 40011), (PEER_ADDR6, 40012)]),
    );
    // One socket, so one source port, per call: one flow each.
    for (port, count, payload) in [(40001, 5, 100), (40002, 12, 700), (40003, 3, 1400)] {
        net.send_udp(SocketAddr::new(ADDR.parse().unwrap(), port), count, payload);
    }
    net.send_udp(SocketAddr::new(ADDR6.parse().unwrap(), 40004), 7, 333);
    send_udp_from_attach_side(
        net,
        SocketAddr::new(PEER_ADDR.parse().unwrap(), 40011),
        9,
        1000,
    );
    send_udp_from_attach_side(
        net,
        SocketAddr::new(PEER_ADDR6.parse().unwrap(), 40012),
        4,
        50,
    );
    net.ping(ADDR, 3);
    net.ping(ADDR6, 2);
    for to in [PEER_ADDR, PEER_ADDR6] {
        common::must(&format!(
            "ip netns exec {} ping -q -n -c 2 -i 0.05 -W 2 {to}",
            net.ns
        ));
    }
}

/// Packets and bytes per flow.
fn per_flow<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> BTreeMap<Key, Count> {
    let mut flows = BTreeMap::<Key, Count>::new();
    for frame in frames {
        flows
            .entry(frame.key.clone())
            .or_default()
            .add(frame.length);
    }
    flows
}

/// `meshbpf flows DEV -j`, keyed like the capture.
fn meshbpf_flows(net: &VethPair) -> BTreeMap<Key, Count> {
    let listed = net.meshbpf(&["flows", &net.dev, "-j"]).ok().json();
    let number = |flow: &Value, field: &str| {
        flow[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {flow}"))
    };
    listed
        .as_array()
        .unwrap_or_else(|| panic!("flows is not an array: {listed}"))
        .iter()
        .map(|flow| {
            let protocol = number(flow, "protocol_number") as u8;
            let (sport, dport) = if protocol == 1 || protocol == 58 {
                ("icmp_type", "icmp_code")
            } else {
                ("sport", "dport")
            };
            let key = Key {
                direction: match flow["direction"].as_str() {
                    Some("ingress") => "ingress",
                    Some("egress") => "egress",
                    _ => panic!("no direction in {flow}"),
                },
                protocol,
                src: flow["src"].as_str().unwrap().to_owned(),
                dst: flow["dst"].as_str().unwrap().to_owned(),
                sport: number(flow, sport) as u16,
                dport: number(flow, dport) as u16,
            };
            let count = Count {
                packets: number(flow, "packets"),
                bytes: number(flow, "bytes"),
            };
            (key, count)
        })
        .collect()
}

/// What README.md says xdp_counter counts of these frames: each once in
/// `l3` by its ethertype and once in `l4` by its IP protocol.
fn xdp_expectation(frames: &[Frame]) -> Value {
    let mut total = Count::default();
    let mut l3: BTreeMap<&str, Count> = ["ipv4", "ipv6", "arp", "other"]
        .map(|name| (name, Count::default()))
        .into();
    let mut l4: BTreeMap<&str, Count> = ["tcp", "udp", "icmp", "icmpv6", "other"]
        .map(|name| (name, Count::default()))
        .into();
    for frame in frames {
        total.add(frame.length);
        let (network, transport) = match (frame.ethertype.as_str(), frame.key.protocol) {
            ("IPv4", 6) | ("IPv6", 6) => (&frame.ethertype, "tcp"),
            ("IPv4", 17) | ("IPv6", 17) => (&frame.ethertype, "udp"),
            ("IPv4", 1) => (&frame.ethertype, "icmp"),
            ("IPv6", 58) => (&frame.ethertype, "icmpv6"),
            _ => panic!("no expectation for {frame:?}"),
        };
        l3.get_mut(network.to_lowercase().as_str())
            .unwrap()
            .add(frame.length);
        l4.get_mut(transport).unwrap().add(frame.length);
    }
    let breakdown = |counts: BTreeMap<&str, Count>| -> Value {
        counts
            .into_iter()
            .map(|(name, count)| (name.to_owned(), count.json()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "packets": total.packets,
        "bytes": total.bytes,
        "l3": breakdown(l3),
        "l4": breakdown(l4),
    })
}

/// Waits until both ends have their IPv6 link-local address: the kernel
/// makes it when it sees the carrier come up, which is also when it sends
/// its MLD reports, so none of them falls into the counting.
fn wait_for_ipv6_carrier(net: &VethPair) {
    for (ns, dev) in [(&net.ns, &net.dev), (&net.peer_ns, &net.peer_dev)] {
        let up = common::wait_for(Duration::from_secs(5), || {
            let out = common::run(Command::new("ip").args([
                "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "link",
            ]));
            (!out.stdout.is_empty()).then_some(())
        });
        assert!(
            up.is_some(),
            "{dev} in {ns} never got its link-local address"
        );
    }
}

fn flows_and_stats_match_a_capture(mode: &str) {
    let net = VethPair::with_ipv6();
    wait_for_ipv6_carrier(&net);
    net.meshbpf(&["attach", &net.dev, "--mode", mode]).ok();
    let dir = tempfile::tempdir().unwrap();
    let inbound = Capture::start(&net, dir.path(), "in");
    let outbound = Capture::start(&net, dir.path(), "out");
    let (rx0, tx0) = (net.link_stats("rx").0, net.link_stats("tx").0);

    send_traffic(&net);

    // The veth counts every frame it passes, independently of tcpdump and
    // meshbpf: once both files hold as many, tcpdump has all of them.
    let settled = common::wait_for(Duration::from_secs(10), || {
        let crossed = (net.link_stats("rx").0 - rx0, net.link_stats("tx").0 - tx0);
        let captured = (
            inbound.frames_so_far() as u64,
            outbound.frames_so_far() as u64,
        );
        (crossed == captured).then_some(crossed)
    });
    assert!(
        settled.is_some(),
        "the captures never caught up with the veth's counters (rx, tx): {:?} against {:?}",
        (net.link_stats("rx").0 - rx0, net.link_stats("tx").0 - tx0),
        (inbound.frames_so_far(), outbound.frames_so_far())
    );
    let (ingress, egress) = (inbound.stop(), outbound.stop());

    let captured = per_flow(ingress.iter().chain(&egress));
    // ping four ways (v4/v6, request/reply, both directions), TCP both
    // ways, UDP: four flows in and two out.
    assert_eq!(
        captured.len(),
        16,
        "the traffic the test sent: {captured:#?}"
    );
    let counted = meshbpf_flows(&net);
    let keys: std::collections::BTreeSet<_> = captured.keys().chain(counted.keys()).collect();
    let differing: Vec<_> = keys
        .into_iter()
        .filter(|key| captured.get(key) != counted.get(key))
        .map(|key| (key, captured.get(key), counted.get(key)))
        .collect();
    assert!(
        differing.is_empty(),
        "{mode}: flows (key, tcpdump, meshbpf) that differ: {differing:#?}"
    );

    let stats = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
    let expected = xdp_expectation(&ingress);
    for field in ["packets", "bytes", "l3", "l4"] {
        assert_eq!(
            stats[field], expected[field],
            "{mode}: xdp_counter's {field} against tcpdump -Q in"
        );
    }
    let table = &stats["flows"];
    assert_eq!(
        (&table["flows"], &table["flows_created"], &table["not_ip"]),
        (&json!(captured.len()), &json!(captured.len()), &json!(0)),
        "{mode}: {table}"
    );
}

privileged_test!(
    fn native_xdp_and_tc_count_what_tcpdump_captures() {
        flows_and_stats_match_a_capture("native");
    }
);

privileged_test!(
    fn generic_xdp_and_tc_count_what_tcpdump_captures() {
        flows_and_stats_match_a_capture("skb");
    }
);
