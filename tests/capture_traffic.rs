//! `meshbpf capture` against real traffic, read back by tools that share no
//! code with meshbpf: tcpdump (libpcap's pcapng reader) and tshark
//! (Wireshark's). Datagrams are sent from chosen addresses and ports with
//! chosen payload sizes, so what the files must hold follows from what was
//! sent and the README: a frame of a UDP payload of P bytes is 14 + 20 + 8 + P
//! bytes; the comment says "rule ID (index N), verdict V"; --snaplen keeps
//! the first N bytes, --src and --rule select, and nothing else is written.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::filter::attach_filter;
use common::{VethPair, ADDR, BIN, PEER_ADDR};
use serde_json::{json, Value};

/// The peer's second source, which the rules below let through or drop by
/// a rule of its own.
const OTHER_ADDR: &str = "192.0.2.3";
const DPORT: u16 = 9000;
/// Ethernet, IPv4 without options, UDP.
const HEADERS: usize = 14 + 20 + 8;

/// Sends one UDP datagram of each payload size from `src:sport` in the
/// peer's namespace to the attach side.
fn send_from(net: &VethPair, src: &str, sport: u16, payloads: &[usize]) {
    VethPair::in_netns(&net.peer_ns, || {
        let sock = UdpSocket::bind((src, sport)).expect("bind udp");
        let to: SocketAddr = format!("{ADDR}:{DPORT}").parse().unwrap();
        for &size in payloads {
            sock.send_to(&vec![0x5a; size], to).expect("send udp");
        }
    });
}

/// `meshbpf capture DEV ARGS` started inside the attach namespace, its
/// stdout piped.
fn spawn_capture(net: &VethPair, args: &[&str]) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.ns))
        .arg("--")
        .arg(BIN)
        .args(["capture", &net.dev])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning meshbpf capture")
}

/// A capture writing to a file; returns once the file has its header,
/// which meshbpf writes only after switching the selection on.
fn capture_to_file(net: &VethPair, file: &Path, args: &[&str]) -> Child {
    let mut all = vec!["-w", file.to_str().unwrap(), "-j"];
    all.extend_from_slice(args);
    let mut child = spawn_capture(net, &all);
    // Generous: an attach in another test holds the state lock while the
    // verifier checks the filter, which takes seconds on a loaded machine.
    let started = common::wait_for(Duration::from_secs(30), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("capture ended before it started: {status}");
        }
        std::fs::metadata(file).ok().filter(|m| m.len() > 0)
    });
    if started.is_none() {
        child.kill().unwrap();
        panic!(
            "capture wrote no header in 30 s: {:?}",
            child.wait_with_output()
        );
    }
    child
}

/// Waits for the capture to end (--count, a signal) and takes what it printed.
fn finished(mut child: Child) -> Output {
    let exited = common::wait_for(Duration::from_secs(10), || child.try_wait().unwrap());
    if exited.is_none() {
        child.kill().unwrap();
        panic!(
            "capture did not end within 10 s: {:?}",
            child.wait_with_output()
        );
    }
    child.wait_with_output().unwrap()
}

/// A packet as tshark decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decoded {
    len: usize,
    caplen: usize,
    src: String,
    dst: String,
    sport: Option<u16>,
    dport: Option<u16>,
    comment: String,
    interface: String,
    time_ns: u128,
}

fn tshark(file: &Path) -> Vec<Decoded> {
    let fields = [
        "frame.len",
        "frame.cap_len",
        "ip.src",
        "ip.dst",
        "udp.srcport",
        "udp.dstport",
        "frame.comment",
        "frame.interface_name",
        "frame.time_epoch",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    read_back(&mut cmd)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), fields.len(), "tshark line {line:?}");
            let (secs, frac) = f[8].split_once('.').expect("epoch with a fraction");
            Decoded {
                len: f[0].parse().unwrap(),
                caplen: f[1].parse().unwrap(),
                src: f[2].into(),
                dst: f[3].into(),
                sport: f[4].parse().ok(),
                dport: f[5].parse().ok(),
                comment: f[6].into(),
                interface: f[7].into(),
                time_ns: secs.parse::<u128>().unwrap() * 1_000_000_000
                    + format!("{frac:0<9}")[..9].parse::<u128>().unwrap(),
            }
        })
        .collect()
}

/// What `tcpdump -nn -e -q -t` prints of one UDP frame: frame length,
/// `src.sport`, `dst.dport`, UDP payload length.
#[derive(Debug, PartialEq, Eq)]
struct Dumped {
    len: usize,
    from: String,
    to: String,
    payload: usize,
}

/// Parses `02:..:02 > 02:..:01, IPv4, length 52: 192.0.2.2.4000 >
/// 192.0.2.1.9000: UDP, length 10`.
fn parse_tcpdump(line: &str) -> Dumped {
    let parts = || -> Option<Dumped> {
        let (link, rest) = line.split_once(": ")?;
        let (_, len) = link.rsplit_once("length ")?;
        let (ends, udp) = rest.split_once(": UDP, length ")?;
        let (from, to) = ends.split_once(" > ")?;
        Some(Dumped {
            len: len.parse().ok()?,
            from: from.into(),
            to: to.into(),
            payload: udp.trim().parse().ok()?,
        })
    };
    parts().unwrap_or_else(|| panic!("not a UDP frame line of tcpdump: {line:?}"))
}

fn tcpdump_file(file: &Path) -> Vec<Dumped> {
    read_back(
        Command::new("tcpdump")
            .args(["-nn", "-e", "-q", "-t", "-r"])
            .arg(file),
    )
    .lines()
    .map(parse_tcpdump)
    .collect()
}

/// What a reader of a capture file printed; it must have read it all.
fn read_back(cmd: &mut Command) -> String {
    let out = common::run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `capture` check of `health -j` for the test's interface.
fn capture_check(net: &VethPair) -> Value {
    let report = net.meshbpf(&["health", "-j"]).json();
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "capture" && c["interface"] == net.dev.as_str())
        .unwrap_or_else(|| panic!("no capture check: {report}"))
        .clone()
}

/// Waits until tshark reads `count` packets in the file a capture writes.
fn wait_for_packets(file: &Path, count: usize) {
    let written = common::wait_for(Duration::from_secs(10), || {
        Some(tshark(file)).filter(|d| d.len() == count)
    });
    assert!(
        written.is_some(),
        "the capture did not write {count} packets in 10 s: {:?}",
        tshark(file)
    );
}

/// The capture's JSON summary on stdout.
fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "capture printed no JSON summary ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A veth pair whose peer sends from PEER_ADDR and OTHER_ADDR, the filter
/// attached with `rules`, and a directory for the files.
fn two_sources(rules: Value) -> (VethPair, tempfile::TempDir) {
    let net = VethPair::new();
    net.add_peer_address(OTHER_ADDR);
    attach_filter(&net, &rules);
    (net, tempfile::tempdir().unwrap())
}

/// The rules most tests use: PEER_ADDR dropped by rule `drop-peer`.
fn drop_peer() -> Value {
    json!({"default": "allow", "rules": [
        {"id": "drop-peer", "action": "deny", "src": PEER_ADDR},
    ]})
}

/// What tcpdump must print of datagrams of these payload sizes sent from
/// `src:sport` to the attach side.
fn udp_frames(src: &str, sport: u16, payloads: &[usize]) -> Vec<Dumped> {
    payloads
        .iter()
        .map(|&p| Dumped {
            len: HEADERS + p,
            from: format!("{src}.{sport}"),
            to: format!("{ADDR}.{DPORT}"),
            payload: p,
        })
        .collect()
}

privileged_test!(
    /// The dropped source's datagrams, and nothing else, read back alike by
    /// tcpdump and tshark: addresses, ports, lengths, comment, interface and
    /// a wall-clock time within the test's run.
    fn a_drop_capture_holds_exactly_the_dropped_packets() {
        let (net, dir) = two_sources(drop_peer());
        let file = dir.path().join("drop.pcapng");
        let payloads = [10, 11, 100, 1000, 1400];
        let before = now_ns();
        let child = capture_to_file(&net, &file, &["--verdict", "drop", "--count", "5"]);
        // Passed traffic before, between and after: none of it belongs in the file.
        send_from(&net, OTHER_ADDR, 4100, &[20, 21]);
        send_from(&net, PEER_ADDR, 4000, &payloads[..2]);
        send_from(&net, OTHER_ADDR, 4100, &[22]);
        send_from(&net, PEER_ADDR, 4000, &payloads[2..]);
        let out = finished(child);
        let after = now_ns();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let s = summary(&out);
        assert_eq!(s["packets"], 5, "{s}");
        assert_eq!(s["lost"], 0, "{s}");
        assert_eq!(s["ended"], "count", "{s}");

        assert_eq!(tcpdump_file(&file), udp_frames(PEER_ADDR, 4000, &payloads));

        let decoded = tshark(&file);
        assert_eq!(decoded.len(), 5, "{decoded:?}");
        for (d, &p) in decoded.iter().zip(&payloads) {
            assert_eq!((d.len, d.caplen), (HEADERS + p, HEADERS + p), "{d:?}");
            assert_eq!((d.src.as_str(), d.dst.as_str()), (PEER_ADDR, ADDR));
            assert_eq!((d.sport, d.dport), (Some(4000), Some(DPORT)));
            assert_eq!(d.comment, "rule drop-peer (index 0), verdict drop");
            assert_eq!(d.interface, net.dev);
            assert!(
                (before..=after).contains(&d.time_ns),
                "packet time {} outside the test's {before}..{after}",
                d.time_ns
            );
        }
    }
);

privileged_test!(
    /// --rule by name keeps the second deny rule's packets only, and
    /// --snaplen cuts each to its first 40 bytes while the original length
    /// stays the frame's.
    fn rule_and_snaplen_select_and_cut_exactly() {
        let (net, dir) = two_sources(json!({"default": "allow", "rules": [
            {"id": "first", "action": "deny", "src": PEER_ADDR},
            {"id": "second", "name": "other-source", "action": "deny", "src": OTHER_ADDR},
        ]}));
        let file = dir.path().join("rule.pcapng");
        let child = capture_to_file(
            &net,
            &file,
            &["--rule", "other-source", "--snaplen", "40", "--count", "3"],
        );
        send_from(&net, PEER_ADDR, 4000, &[50, 51]);
        send_from(&net, OTHER_ADDR, 4100, &[60, 1, 300]);
        let out = finished(child);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(summary(&out)["packets"], 3);
        let decoded = tshark(&file);
        let got: Vec<(usize, usize, &str, &str)> = decoded
            .iter()
            .map(|d| (d.len, d.caplen, d.src.as_str(), d.comment.as_str()))
            .collect();
        let comment = "rule second (index 1), verdict drop";
        assert_eq!(
            got,
            [60, 1, 300].map(|p| (HEADERS + p, 40, OTHER_ADDR, comment)),
        );
    }
);

privileged_test!(
    /// `capture --src ... --verdict pass -w - | tcpdump -r -`: the stream
    /// reads as it comes, with the selected source's packets only, though
    /// both sources pass; the JSON summary goes to stderr, as stdout
    /// carries the packets.
    fn src_selects_and_the_stream_reads_in_tcpdump() {
        let (net, _dir) = two_sources(json!({"default": "allow", "rules": [
            {"action": "deny", "src": "198.51.100.0/24"},
        ]}));
        let mut capture = spawn_capture(
            &net,
            &[
                "--src",
                &format!("{OTHER_ADDR}/32"),
                "--verdict",
                "pass",
                "--count",
                "4",
                "-w",
                "-",
                "-j",
            ],
        );
        let mut tcpdump = Command::new("tcpdump")
            .args(["-nn", "-e", "-q", "-t", "-r", "-"])
            .stdin(capture.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tcpdump");
        // tcpdump says so once it has read the header, which comes after
        // the selection is on.
        let mut line = String::new();
        BufReader::new(tcpdump.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("reading from file -"), "tcpdump: {line:?}");
        send_from(&net, PEER_ADDR, 4000, &[30, 31]);
        send_from(&net, OTHER_ADDR, 4100, &[40, 41, 42, 43]);
        send_from(&net, PEER_ADDR, 4000, &[32]);
        let out = finished(capture);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let s: Value = serde_json::from_slice(&out.stderr).expect("JSON summary on stderr");
        assert_eq!(
            (s["packets"].clone(), s["file"].clone()),
            (json!(4), json!("stdout"))
        );
        let dumped = tcpdump.wait_with_output().unwrap();
        assert!(dumped.status.success(), "{dumped:?}");
        let lines: Vec<Dumped> = String::from_utf8_lossy(&dumped.stdout)
            .lines()
            .map(parse_tcpdump)
            .collect();
        assert_eq!(lines, udp_frames(OTHER_ADDR, 4100, &[40, 41, 42, 43]));
    }
);

privileged_test!(
    /// A second capture on the interface is refused and leaves the first's
    /// file alone; Ctrl-C ends the first with exit 130 and a summary of what
    /// it wrote; a capture killed outright is named by `health` and switched
    /// off by `health --fix`, and the next one starts and captures.
    fn one_capture_per_interface_and_how_captures_end() {
        let (net, dir) = two_sources(drop_peer());
        let first = dir.path().join("first.pcapng");
        let child = capture_to_file(&net, &first, &["--verdict", "drop"]);
        // Bounded, so that a second capture wrongly let in ends and fails
        // the test instead of hanging it.
        let second = net.meshbpf(&[
            "capture",
            &net.dev,
            "--duration",
            "3s",
            "-w",
            first.to_str().unwrap(),
        ]);
        assert_eq!(second.code, 1, "{second:?}");
        assert!(
            second.stderr.contains("another `meshbpf capture` runs"),
            "{second:?}"
        );
        send_from(&net, PEER_ADDR, 4000, &[10, 20, 30]);
        wait_for_packets(&first, 3);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let out = finished(child);
        assert_eq!(out.status.code(), Some(130), "{out:?}");
        let s = summary(&out);
        assert_eq!(
            (s["packets"].clone(), s["ended"].clone()),
            (json!(3), json!("interrupted"))
        );
        assert_eq!(tshark(&first).len(), 3);

        let killed = dir.path().join("killed.pcapng");
        let mut child = capture_to_file(&net, &killed, &[]);
        let pid = child.id();
        assert_eq!(capture_check(&net)["status"], "ok");
        child.kill().unwrap();
        child.wait().unwrap();
        let stale = capture_check(&net);
        assert_eq!(stale["status"], "warn", "{stale}");
        assert!(
            stale["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("pid {pid}")),
            "{stale}"
        );
        let fixed = net.meshbpf(&["health", "--fix", "-j"]).json();
        let fix = fixed["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["action"] == "stop_stale_capture")
            .unwrap_or_else(|| panic!("no stop_stale_capture fix: {fixed}"))
            .clone();
        assert_eq!(fix["done"], true, "{fix}");
        assert_eq!(capture_check(&net)["status"], "ok");
        let next = dir.path().join("next.pcapng");
        let child = capture_to_file(&net, &next, &["--verdict", "drop", "--count", "1"]);
        send_from(&net, PEER_ADDR, 4000, &[77]);
        let out = finished(child);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let decoded = tshark(&next);
        assert_eq!(decoded.len(), 1, "{decoded:?}");
        assert_eq!(
            (decoded[0].len, decoded[0].src.as_str()),
            (HEADERS + 77, PEER_ADDR)
        );
    }
);

/// The comment of every packet xdp_counter passed.
const COUNTER_PASS: &str = "xdp_counter (no rules), verdict pass";

privileged_test!(
    /// On xdp_counter (no filter), the capture keeps what it passes:
    /// exactly the selected source's datagrams, with xdp_counter named in
    /// the comment; what xdp_counter can never select is refused up front.
    fn xdp_counter_captures_what_it_passes() {
        let net = VethPair::new();
        net.add_peer_address(OTHER_ADDR);
        net.meshbpf(&["attach", &net.dev, "--no-flows", "-j"]).ok();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("counter.pcapng");
        let src = format!("{OTHER_ADDR}/32");
        let child = capture_to_file(&net, &file, &["--src", &src, "--count", "3"]);
        send_from(&net, PEER_ADDR, 4000, &[10]);
        send_from(&net, OTHER_ADDR, 4100, &[20, 21, 500]);
        let out = finished(child);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(summary(&out)["packets"], 3);
        assert_eq!(
            tcpdump_file(&file),
            udp_frames(OTHER_ADDR, 4100, &[20, 21, 500])
        );
        let comments: Vec<String> = tshark(&file).into_iter().map(|d| d.comment).collect();
        assert_eq!(comments, [COUNTER_PASS; 3]);
        assert_eq!(capture_check(&net)["status"], "ok");

        for (args, says) in [
            (
                ["--verdict", "drop"],
                "passes every packet, so the capture would select nothing",
            ),
            (["--rule", "r1"], "which has no rules"),
        ] {
            let refused = dir.path().join("refused.pcapng");
            let mut argv = vec!["capture", &net.dev, "-w", refused.to_str().unwrap()];
            argv.extend(args);
            let ran = net.meshbpf(&argv);
            assert_eq!(ran.code, 1, "{ran:?}");
            assert!(ran.stderr.contains(says), "{ran:?}");
            assert!(!refused.exists(), "a refused capture created its file");
        }
    }
);

privileged_test!(
    /// A capture started on xdp_counter goes on while `attach --filter`
    /// swaps the filter in and `filter remove` swaps it out again: every
    /// datagram of the source is in the file once, in order, each named
    /// by the program that decided it.
    fn a_capture_goes_on_across_swaps_of_the_program() {
        let net = VethPair::new();
        net.meshbpf(&["attach", &net.dev, "--no-flows", "-j"]).ok();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("swaps.pcapng");
        let src = format!("{PEER_ADDR}/32");
        let child = capture_to_file(&net, &file, &["--src", &src, "--count", "6"]);
        send_from(&net, PEER_ADDR, 4000, &[10, 11]);
        wait_for_packets(&file, 2);
        assert_eq!(attach_filter(&net, &drop_peer())["status"], "swapped");
        send_from(&net, PEER_ADDR, 4000, &[12, 13]);
        wait_for_packets(&file, 4);
        net.meshbpf(&["filter", "remove", &net.dev, "-j"]).ok();
        send_from(&net, PEER_ADDR, 4000, &[14, 15]);
        let out = finished(child);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let s = summary(&out);
        assert_eq!(
            (s["packets"].clone(), s["lost"].clone()),
            (json!(6), json!(0)),
            "{s}"
        );
        let got: Vec<(usize, String)> = tshark(&file)
            .into_iter()
            .map(|d| (d.len, d.comment))
            .collect();
        let drop = "rule drop-peer (index 0), verdict drop";
        let want: Vec<(usize, String)> = [
            (10, COUNTER_PASS),
            (11, COUNTER_PASS),
            (12, drop),
            (13, drop),
            (14, COUNTER_PASS),
            (15, COUNTER_PASS),
        ]
        .into_iter()
        .map(|(p, c)| (HEADERS + p, c.to_string()))
        .collect();
        assert_eq!(got, want);
    }
);

/// `-w -` on a terminal is refused before anything is captured: pcapng
/// would garble it. `script` gives the command a pseudo-terminal.
#[test]
fn pcapng_to_a_terminal_is_refused() {
    let command = format!("{BIN} capture lo -w -");
    let out = common::run(Command::new("script").args(["-qec", &command, "/dev/null"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("stdout is a terminal"), "{text}");
    assert!(text.contains("| tcpdump -nn -r -"), "{text}");
}
