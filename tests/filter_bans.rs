//! The ban set of xdp_mesh_filter: real packets between two namespaces,
//! bans made through the real binary, outcomes counted on the peer's side
//! (UDP echoes that come back or not) and in `filter ban list -j`; and the
//! program alone under BPF_PROG_TEST_RUN on hand-built frames.
//!
//! The expectations come from the README's rules (a banned source gets
//! nothing; an entry stops matching at its expiry; a ban's bytes are the
//! frames' bytes at XDP: Ethernet, IP and UDP headers and the payload) and
//! from what the peer saw, never from meshbpf's own code.

mod common;

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::filter::{attach_filter, show};
use common::frames::Frame;
use common::{VethPair, ADDR, ADDR6, PEER_ADDR, PEER_ADDR6};
use libbpf_rs::{MapCore, MapFlags, ProgramInput};
use meshbpf::programs::xdp_mesh_filter::bans::{self, Ban};
use meshbpf::programs::xdp_mesh_filter::{self as filter, FilterMaps, Publish};
use meshbpf::rules::bans::ttl;
use meshbpf::rules::{compile, filter::parse};
use serde_json::{json, Value};

const PORT: u16 = 9000;
const PAYLOAD: usize = 32;
/// A second source on the peer, never banned.
const OTHER: &str = "192.0.2.3";
/// An IPv4 echo request at XDP: Ethernet 14, IPv4 20, UDP 8, the payload.
const FRAME4: u64 = 14 + 20 + 8 + PAYLOAD as u64;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Held by the tests that time something, so that the million-entry load
/// (both CPUs for a second) does not delay a TTL being measured, or the
/// other way round.
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timed() -> std::sync::MutexGuard<'static, ()> {
    TIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A UDP echo server on ADDR:PORT (and [ADDR6]:PORT) in the filtered
/// namespace, until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(net: &VethPair, v6: bool) -> Echo {
        let mut addrs = vec![format!("{ADDR}:{PORT}")];
        if v6 {
            addrs.push(format!("[{ADDR6}]:{PORT}"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads = addrs
            .into_iter()
            .map(|addr| {
                let socket = VethPair::in_netns(&net.ns, || UdpSocket::bind(&addr).unwrap());
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = socket.recv_from(&mut buf) {
                            socket.send_to(&buf[..n], from).unwrap();
                        }
                    }
                })
            })
            .collect();
        Echo { stop, threads }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP socket of the peer bound to `from`.
fn peer_socket(net: &VethPair, from: &str) -> UdpSocket {
    let socket = VethPair::in_netns(&net.peer_ns, || {
        UdpSocket::bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap()
    });
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket
}

fn server_for(from: &str) -> SocketAddr {
    match from.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => format!("{ADDR}:{PORT}"),
        IpAddr::V6(_) => format!("[{ADDR6}]:{PORT}"),
    }
    .parse()
    .unwrap()
}

/// Sends `count` datagrams from `from`, `gap` apart, and returns how many
/// echoes came back (the last one waited for 300 ms).
fn echoes_paced(net: &VethPair, from: &str, count: usize, gap: Duration) -> usize {
    let socket = peer_socket(net, from);
    for i in 0..count {
        socket.send_to(&[0x5a; PAYLOAD], server_for(from)).unwrap();
        if i + 1 < count {
            std::thread::sleep(gap);
        }
    }
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while socket.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

fn echoes(net: &VethPair, from: &str, count: usize) -> usize {
    echoes_paced(net, from, count, Duration::ZERO)
}

/// `meshbpf filter ban DEV ARGS -j`, which must succeed.
fn ban(net: &VethPair, args: &[&str]) -> Value {
    let mut all = vec!["filter", "ban", &net.dev];
    all.extend_from_slice(args);
    all.push("-j");
    net.meshbpf(&all).ok().json()
}

fn listed(net: &VethPair) -> Value {
    ban(net, &["list"])
}

/// The entry of `cidr` in a `list -j`.
fn entry<'a>(list: &'a Value, cidr: &str) -> &'a Value {
    list["bans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["cidr"] == cidr)
        .unwrap_or_else(|| panic!("{cidr} is not in the ban list: {list}"))
}

fn cidrs(list: &Value) -> Vec<String> {
    list["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["cidr"].as_str().unwrap().to_owned())
        .collect()
}

fn allow_all(net: &VethPair) {
    attach_filter(net, &json!({"default": "allow", "rules": []}));
}

privileged_test!(
    fn a_banned_source_gets_nothing_while_another_passes_until_the_ban_is_lifted() {
        let net = VethPair::new();
        net.add_peer_address(OTHER);
        allow_all(&net);
        let _echo = Echo::start(&net, false);
        assert_eq!(echoes(&net, PEER_ADDR, 5), 5, "no ban yet");

        let added = ban(&net, &["add", PEER_ADDR, "--reason", "test scanner"]);
        assert_eq!(added["added"], 1, "{added}");
        assert_eq!(
            echoes(&net, PEER_ADDR, 20),
            0,
            "a banned source gets nothing"
        );
        assert_eq!(echoes(&net, OTHER, 20), 20, "another source passes");

        let list = listed(&net);
        let e = entry(&list, &format!("{PEER_ADDR}/32"));
        assert_eq!(e["packets"], 20, "{list}");
        assert_eq!(e["bytes"], 20 * FRAME4, "{list}");
        assert_eq!(e["reason"], "test scanner");
        assert_eq!(e["origin"], "operator");
        assert_eq!(e["expires_at"], Value::Null, "no TTL: never expires");
        assert_eq!(list["banned"]["packets"], 20, "{list}");
        assert_eq!(list["entries"], 1);

        let lifted = ban(&net, &["del", PEER_ADDR, "203.0.113.1"]);
        assert_eq!(lifted["deleted"], json!([format!("{PEER_ADDR}/32")]));
        assert_eq!(lifted["not_banned"], json!(["203.0.113.1/32"]));
        assert_eq!(echoes(&net, PEER_ADDR, 20), 20, "del lifts the ban");
        assert_eq!(listed(&net)["bans"], json!([]));
        let shown = show(&net);
        assert_eq!(shown["counters"]["bans"]["entries"], 0, "{shown}");
        assert_eq!(shown["counters"]["bans"]["banned"]["packets"], 20);
    }
);

privileged_test!(
    fn a_ban_with_a_ttl_ends_on_time() {
        let net = VethPair::new();
        allow_all(&net);
        let _echo = Echo::start(&net, false);
        let ttl = Duration::from_secs(2);

        let _timed = timed();
        let before = Instant::now();
        ban(&net, &["add", PEER_ADDR, "--ttl", "2s"]);
        // The TTL starts somewhere within the command, which may wait for
        // the root's lock behind other tests' commands.
        let made = before.elapsed();
        // One datagram every 10 ms until one comes back.
        let socket = peer_socket(&net, PEER_ADDR);
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        let back = loop {
            socket
                .send_to(&[0x5a; PAYLOAD], server_for(PEER_ADDR))
                .unwrap();
            std::thread::sleep(Duration::from_millis(10));
            if socket.recv(&mut buf).is_ok() {
                break before.elapsed();
            }
            assert!(before.elapsed() < 3 * ttl, "the ban never ended");
        };
        println!(
            "traffic came back {back:?} after the ban command started, which took {made:?} (TTL {ttl:?})"
        );
        assert!(
            back >= ttl && back <= made + ttl + ttl / 10,
            "traffic came back after {back:?}, not within {ttl:?} + 10 % of the command ({made:?})"
        );

        let list = listed(&net);
        assert_eq!(list["bans"], json!([]), "an expired ban is not listed");
        assert_eq!(list["expired_unswept"], 1, "{list}");
        let swept = ban(&net, &["add", "203.0.113.1"]);
        assert_eq!(swept["swept"], 1, "the next change sweeps it: {swept}");
        assert_eq!(swept["set"]["entries"], 1);
    }
);

privileged_test!(
    fn load_takes_ipv4_ipv6_and_cidrs_and_refuses_a_file_with_bad_lines_whole() {
        let net = VethPair::with_ipv6();
        allow_all(&net);
        let _echo = Echo::start(&net, true);
        let dir = tempfile::tempdir().unwrap();
        let good = format!(
            "# a feed\n{PEER_ADDR}\n198.51.100.0/24 1h\n\n{PEER_ADDR6} 30m # a scanner\n2001:db8:bad::/48\n"
        );
        let bad = dir.path().join("bad.txt");
        std::fs::write(
            &bad,
            format!("{good}10.0.0.1/24\n203.0.113.9 forever\n::ffff:10.0.0.1\n"),
        )
        .unwrap();

        let refused = net.meshbpf(&["filter", "ban", &net.dev, "load", bad.to_str().unwrap()]);
        assert_eq!(refused.code, 1);
        let text = refused.stderr.clone();
        let path = bad.display();
        for expected in [
            format!("{path} has 3 bad lines; nothing was loaded"),
            format!("{path}:7: \"10.0.0.1/24\": 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"),
            format!("{path}:8: \"203.0.113.9 forever\": \"forever\" is not a duration"),
            format!("{path}:9: \"::ffff:10.0.0.1\": ::ffff:10.0.0.1/128 is an IPv4-mapped IPv6 range"),
            "each line is a CIDR or address, optionally followed by a TTL".to_owned(),
        ] {
            assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(
            listed(&net)["bans"],
            json!([]),
            "nothing of a bad file loads"
        );

        let file = dir.path().join("good.txt");
        std::fs::write(&file, good).unwrap();
        let loaded = ban(&net, &["load", file.to_str().unwrap()]);
        assert_eq!(loaded["added"], 4, "{loaded}");
        let list = listed(&net);
        assert_eq!(
            cidrs(&list),
            [
                "192.0.2.2/32",
                "198.51.100.0/24",
                "2001:db8::2/128",
                "2001:db8:bad::/48"
            ]
        );
        let expires_in = |cidr: &str| entry(&list, cidr)["expires_in_ms"].as_u64();
        assert!(expires_in("198.51.100.0/24").unwrap() > 3_590_000);
        assert!(expires_in("2001:db8::2/128").unwrap() > 1_790_000);
        assert_eq!(expires_in("2001:db8:bad::/48"), None);
        assert_eq!(echoes(&net, PEER_ADDR6, 10), 0, "the IPv6 host is banned");
        assert_eq!(echoes(&net, PEER_ADDR, 10), 0, "the IPv4 host is banned");
        let list = listed(&net);
        assert_eq!(entry(&list, "2001:db8::2/128")["packets"], 10);
        assert_eq!(entry(&list, "192.0.2.2/32")["packets"], 10);
    }
);

privileged_test!(
    /// A feed of a million hosts loads whole: every line is an entry, the
    /// first and the last ban their source. How long it takes is measured
    /// by `make bench` (section "ban sets"), with the release binary.
    fn loading_a_million_entries_bans_every_one() {
        let net = VethPair::new();
        net.add_peer_address(OTHER);
        allow_all(&net);
        let _echo = Echo::start(&net, false);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("million.txt");
        // 10.0.0.0 onwards, one host a line, then the peer's own address.
        let mut text = String::new();
        for i in 0..999_999u32 {
            text.push_str(&Ipv4Addr::from(0x0a00_0000 + i).to_string());
            text.push('\n');
        }
        text.push_str(&format!("{PEER_ADDR} 1h\n"));
        std::fs::write(&file, text).unwrap();

        let _timed = timed();
        let loaded = ban(&net, &["load", file.to_str().unwrap()]);
        assert_eq!(loaded["added"], 1_000_000, "{loaded}");
        assert_eq!(show(&net)["counters"]["bans"]["entries"], 1_000_000);
        assert_eq!(echoes(&net, PEER_ADDR, 10), 0, "the last line is banned");
        assert_eq!(echoes(&net, OTHER, 10), 10, "an unlisted source passes");
    }
);

privileged_test!(
    fn a_rate_limit_with_ban_promotes_the_flooder_until_the_ttl_ends() {
        let net = VethPair::new();
        net.add_peer_address(OTHER);
        attach_filter(
            &net,
            &json!({"default": "allow", "rules": [
                {"action": "allow", "protocol": "udp", "dport": PORT,
                 "rate_limit": {"pps": 10, "burst": 5}, "ban": "3s"},
            ]}),
        );
        let _echo = Echo::start(&net, false);
        let flood = 50;
        let started = Instant::now();
        let admitted = echoes(&net, PEER_ADDR, flood);
        let sent_in = started.elapsed().as_secs_f64() - 0.3;
        // GCRA admits the burst, then one per 100 ms; the first refusal bans.
        let most = 5 + (sent_in * 10.0).floor() as usize;
        assert!(
            (5..=most).contains(&admitted),
            "{admitted} of the flood came back, expected 5..={most}"
        );
        let list = listed(&net);
        let e = entry(&list, &format!("{PEER_ADDR}/32"));
        assert_eq!(e["origin"], "rate_limit", "{list}");
        assert_eq!(e["reason"], "rate_limit rule 0");
        assert!(e["expires_in_ms"].as_u64().unwrap() <= 3000);
        // One datagram is the limiter's; every later one the ban's.
        let stats = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
        assert_eq!(stats["rate_limited"]["packets"], 1, "{stats}");
        assert_eq!(e["packets"], (flood - admitted - 1) as u64, "{list}");
        assert_eq!(list["promoted"], 1);

        // Well below the limit, and still dropped; another source passes.
        assert_eq!(
            echoes_paced(&net, PEER_ADDR, 3, Duration::from_millis(300)),
            0,
            "a promoted source is dropped even below the limit"
        );
        assert_eq!(echoes(&net, OTHER, 3), 3);
        let list = listed(&net);
        assert_eq!(
            entry(&list, &format!("{PEER_ADDR}/32"))["packets"],
            (flood - admitted - 1 + 3) as u64
        );

        common::wait_for(Duration::from_secs(5), || {
            (listed(&net)["bans"] == json!([])).then_some(())
        })
        .expect("the promoted ban expires");
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "expired after {:?}, before its 3 s TTL",
            started.elapsed()
        );
        assert_eq!(
            echoes_paced(&net, PEER_ADDR, 3, Duration::from_millis(300)),
            3,
            "after the ban, traffic below the limit passes"
        );
    }
);

/// An unattached xdp_mesh_filter with an empty allow-all rule set.
fn loaded(object: &mut MaybeUninit<libbpf_rs::OpenObject>) -> filter::XdpMeshFilterSkel<'_> {
    let skel = filter::load(object, None).expect("loading xdp_mesh_filter");
    let rules = parse(r#"{"default": "allow", "rules": []}"#).unwrap();
    filter::apply(
        &FilterMaps::of_skeleton(&skel),
        &rules,
        &compile::compile(&rules),
        Publish::Now,
    )
    .unwrap();
    skel
}

fn run(skel: &filter::XdpMeshFilterSkel<'_>, frame: &[u8]) -> u32 {
    let input = ProgramInput {
        data_in: Some(frame),
        repeat: 1,
        ..Default::default()
    };
    skel.progs
        .xdp_mesh_filter
        .test_run(input)
        .unwrap()
        .return_value
}

fn udp4(src: [u8; 4]) -> Vec<u8> {
    Frame::eth()
        .ipv4(src, [192, 0, 2, 1])
        .udp(1000, 53)
        .payload(PAYLOAD)
        .build()
}

fn udp6(src: &str) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().unwrap();
    Frame::eth()
        .ipv6(src, ADDR6.parse::<std::net::Ipv6Addr>().unwrap())
        .udp(1000, 53)
        .payload(PAYLOAD)
        .build()
}

fn banned(text: &str, ttl_text: Option<&str>) -> Ban {
    Ban {
        prefix: meshbpf::rules::bans::cidr(text).unwrap(),
        ttl: ttl_text.map(|t| ttl(t).unwrap()),
    }
}

fn boottime_ns() -> u64 {
    common::kstate::boottime_ns()
}

privileged_test!(
    fn test_run_drops_banned_hosts_and_cidrs_of_both_families_only() {
        let mut object = MaybeUninit::uninit();
        let skel = loaded(&mut object);
        let maps = FilterMaps::of_skeleton(&skel);
        for frame in [
            udp4([198, 51, 100, 7]),
            udp4([203, 0, 113, 1]),
            udp6("2001:db8:bad::1"),
        ] {
            assert_eq!(run(&skel, &frame), XDP_PASS, "nothing banned yet");
        }
        bans::change(
            &maps,
            &[
                banned("198.51.100.7", Some("1h")),
                banned("203.0.113.0/24", None),
                banned("2001:db8:bad::/48", None),
                banned("2001:db8::99", None),
            ],
            None,
            &[],
        )
        .unwrap();
        let cases = [
            (udp4([198, 51, 100, 7]), XDP_DROP, "a banned IPv4 host"),
            (udp4([198, 51, 100, 8]), XDP_PASS, "its neighbour"),
            (udp4([203, 0, 113, 200]), XDP_DROP, "inside a banned /24"),
            (udp4([203, 0, 114, 1]), XDP_PASS, "outside it"),
            (udp6("2001:db8:bad:1::5"), XDP_DROP, "inside a banned /48"),
            (udp6("2001:db8::99"), XDP_DROP, "a banned IPv6 host"),
            (udp6("2001:db8::98"), XDP_PASS, "an IPv6 host not banned"),
        ];
        for (frame, verdict, what) in &cases {
            assert_eq!(run(&skel, frame), *verdict, "{what}");
        }
        let (list, _) = bans::list(&maps).unwrap();
        let packets = |cidr: &str| {
            list.iter()
                .find(|b| b.cidr.to_string() == cidr)
                .map(|b| (b.packets, b.bytes))
                .unwrap()
        };
        let frame4 = udp4([0; 4]).len() as u64;
        let frame6 = udp6("::1").len() as u64;
        assert_eq!(frame4, FRAME4);
        assert_eq!(packets("198.51.100.7/32"), (1, frame4));
        assert_eq!(packets("203.0.113.0/24"), (1, frame4));
        assert_eq!(packets("2001:db8:bad::/48"), (1, frame6));
        assert_eq!(packets("2001:db8::99/128"), (1, frame6));
        let summary = bans::summary(&maps).unwrap();
        assert_eq!(summary.entries, 4);
        assert_eq!(summary.prefixes, 2);
        assert_eq!(summary.banned.packets, 4);
        assert_eq!(summary.banned.bytes, 2 * frame4 + 2 * frame6);
    }
);

privileged_test!(
    fn test_run_ignores_an_expired_entry_and_the_next_change_sweeps_it() {
        let mut object = MaybeUninit::uninit();
        let skel = loaded(&mut object);
        let maps = FilterMaps::of_skeleton(&skel);
        bans::change(&maps, &[banned("198.51.100.7", Some("1h"))], None, &[]).unwrap();
        let frame = udp4([198, 51, 100, 7]);
        assert_eq!(run(&skel, &frame), XDP_DROP);

        // The same entry, its expiry moved to a nanosecond ago: the entry's
        // layout is what the list read back, with only the expiry changed.
        let key = [198u8, 51, 100, 7];
        let mut value = skel
            .maps
            .ban_v4
            .lookup(&key, MapFlags::ANY)
            .unwrap()
            .expect("the host is in ban_v4");
        value[..8].copy_from_slice(&(boottime_ns() - 1).to_ne_bytes());
        skel.maps
            .ban_v4
            .update(&key, &value, MapFlags::ANY)
            .unwrap();
        assert_eq!(run(&skel, &frame), XDP_PASS, "an expired ban never matches");
        let (list, expired) = bans::list(&maps).unwrap();
        assert!(list.is_empty());
        assert_eq!(expired, 1);
        let changed = bans::change(&maps, &[], None, &[]).unwrap();
        assert_eq!(changed.swept, 1);
        assert!(skel
            .maps
            .ban_v4
            .lookup(&key, MapFlags::ANY)
            .unwrap()
            .is_none());
        assert_eq!(run(&skel, &frame), XDP_PASS);
    }
);
