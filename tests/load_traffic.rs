//! `meshbpf load`, `attach --object`, `list` and `unload` against the running
//! kernel: an object compiled at test time counts real packets on a veth,
//! a global set with --set changes what it does, and unload leaves nothing.

mod common;

use meshbpf::kernel::runstats::StatsEnabled;

use std::net::UdpSocket;
use std::time::Duration;

use common::{bpftool_u64_array, compile_fixture, named, PinRoot, VethPair, ADDR, PEER_ADDR};

const ETH: u64 = 14;
const IPV4: u64 = 20;
const UDP: u64 = 8;
const PORT: u16 = 7070;
/// XDP verdicts, as the fixture's `verdict` global takes them.
const XDP_DROP: &str = "1";

/// The fixture's totals map: [packets, bytes].
fn totals(root: &PinRoot, name: &str) -> Vec<u64> {
    bpftool_u64_array(&root.loaded().join(name).join("map_totals"))
}

fn wait_for_packets(root: &PinRoot, name: &str, packets: u64) -> Vec<u64> {
    common::wait_for(Duration::from_secs(5), || {
        let t = totals(root, name);
        (t[0] >= packets).then_some(t)
    })
    .unwrap_or_else(|| panic!("never counted {packets} packets: {:?}", totals(root, name)))
}

/// A UDP socket listening on ADDR in the attach namespace.
fn receiver(net: &VethPair) -> UdpSocket {
    let sock = VethPair::in_netns(&net.ns, || UdpSocket::bind((ADDR, PORT)).expect("bind"));
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    sock
}

/// Datagrams that reach the socket, until none comes for a while.
fn received(sock: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    std::iter::from_fn(|| sock.recv(&mut buf).ok()).count()
}

privileged_test!(
    fn a_loaded_xdp_program_counts_real_traffic_and_unload_removes_it() {
        let (_dir, obj) = compile_fixture("load_counter");
        let obj = obj.to_str().unwrap();
        let root = PinRoot::new();
        let net = VethPair::new();

        let loaded = root
            .meshbpf(&["load", obj, "--name", "counter", "--pin-maps", "-j"])
            .ok()
            .json();
        assert_eq!(loaded["status"], "loaded");
        assert_eq!(loaded["kind"], "loaded");
        assert_eq!(loaded["programs"][0]["name"], "count_packets");
        assert_eq!(loaded["programs"][0]["section"], "xdp");
        assert_eq!(loaded["programs"][0]["prog_type"], "xdp");
        assert_eq!(loaded["programs"][0]["attachments"], serde_json::json!([]));
        let prog_id = loaded["programs"][0]["prog_id"].as_u64().unwrap();
        assert!(common::prog_exists(prog_id));
        let counter_dir = root.loaded().join("counter");
        assert_eq!(
            named(&loaded["maps"], "totals")["pin_path"],
            counter_dir.join("map_totals").to_str().unwrap()
        );

        let attached = net
            .meshbpf(&root.args(&["attach", &net.dev, "--object", "counter", "-j"]))
            .ok()
            .json();
        assert_eq!(attached["status"], "attached");
        assert_eq!(attached["program"], "count_packets");
        assert_eq!(attached["attach_point"], net.dev.as_str());
        assert_eq!(attached["method"], "xdp native");
        assert_eq!(attached["prog_id"], prog_id);
        assert_eq!(net.xdp_prog_id(), Some(prog_id), "the kernel runs it");
        let link_pin = root
            .path
            .join("net")
            .join(&net.dev)
            .join("counter:count_packets")
            .join("link");
        assert_eq!(attached["pin_path"], link_pin.to_str().unwrap());
        let again = net
            .meshbpf(&root.args(&["attach", &net.dev, "--object", "counter", "-j"]))
            .ok()
            .json();
        assert_eq!(again["status"], "already_attached");
        assert_eq!(again["link_id"], attached["link_id"]);

        let sock = receiver(&net);
        // Run-time statistics for as long as this fd lives (never the sysctl):
        // `list` then shows how often the kernel ran the program.
        let stats_on = StatsEnabled::enable().expect("BPF_ENABLE_STATS");
        let (rx_packets_before, rx_bytes_before) = net.link_stats("rx");
        let (datagrams, payload) = (25u64, 100u64);
        net.send_udp(
            format!("{ADDR}:{PORT}").parse().unwrap(),
            datagrams as usize,
            payload as usize,
        );
        let t = wait_for_packets(&root, "counter", datagrams);
        assert_eq!(
            t,
            vec![datagrams, datagrams * (ETH + IPV4 + UDP + payload)],
            "static neighbours and no IPv6: only the datagrams crossed"
        );
        let (rx_packets, rx_bytes) = net.link_stats("rx");
        assert_eq!(rx_packets - rx_packets_before, datagrams);
        // The veth's rx_bytes leave out the Ethernet header.
        assert_eq!(rx_bytes - rx_bytes_before, t[1] - datagrams * ETH);
        assert_eq!(received(&sock), datagrams as usize, "XDP_PASS delivers");

        let list = net.meshbpf(&root.args(&["list", "-j"])).ok().json();
        let counter = named(&list, "counter");
        assert_eq!(counter["kind"], "loaded");
        assert!(
            counter["file"]
                .as_str()
                .unwrap()
                .ends_with("load_counter.bpf.o"),
            "{counter}"
        );
        drop(stats_on);
        let program = &counter["programs"][0];
        assert_eq!(program["run_cnt"], datagrams, "one run per received packet");
        assert!(program["run_time_ns"].as_u64().unwrap() > 0, "{program}");
        let attachment = &counter["programs"][0]["attachments"][0];
        assert_eq!(attachment["attach_point"], net.dev.as_str());
        assert_eq!(attachment["method"], "xdp native");
        assert_eq!(attachment["state"], "attached");
        assert_eq!(attachment["link_id"], attached["link_id"]);
        let totals_map = named(&counter["maps"], "totals");
        assert_eq!(totals_map["map_type"], "array");
        assert_eq!(totals_map["entries"], 2);
        assert_eq!(totals_map["max_entries"], 2);
        let sources = named(&counter["maps"], "sources");
        assert_eq!(sources["map_type"], "hash");
        assert_eq!(sources["entries"], 1, "one peer address: {PEER_ADDR}");
        assert_eq!(sources["max_entries"], 64);
        let human = net.meshbpf(&root.args(&["list"])).ok();
        assert!(human.stdout.contains("loaded object counter"), "{human:?}");
        assert!(human.stdout.contains("xdp native"), "{human:?}");

        let unloaded = net
            .meshbpf(&root.args(&["unload", "counter", "-j"]))
            .ok()
            .json();
        assert_eq!(unloaded["status"], "unloaded");
        assert_eq!(unloaded["programs"][0]["prog_id"], prog_id);
        assert_eq!(net.xdp_prog_id(), None, "the link left the interface");
        assert!(
            !counter_dir.exists(),
            "no pins left in {}",
            counter_dir.display()
        );
        assert!(!link_pin.exists(), "no attachment pin left");
        assert!(
            root.loaded_entries().is_empty(),
            "{:?}",
            root.loaded_entries()
        );
        assert!(
            common::wait_for(Duration::from_secs(5), || (!common::prog_exists(prog_id))
                .then_some(()))
            .is_some(),
            "program id {prog_id} still exists after unload"
        );
        let gone = root.meshbpf(&["unload", "counter", "-j"]);
        assert_eq!(gone.code, 1);
        assert_eq!(gone.json()["error"], "no object named 'counter' is loaded");
    }
);

privileged_test!(
    fn set_changes_what_the_program_does() {
        let (_dir, obj) = compile_fixture("load_counter");
        let root = PinRoot::new();
        let net = VethPair::new();
        let loaded = root
            .meshbpf(&[
                "load",
                obj.to_str().unwrap(),
                "--name",
                "dropper",
                "--pin-maps",
                "--set",
                &format!("verdict={XDP_DROP}"),
                "--set",
                "min_len=0x0e",
                "-j",
            ])
            .ok()
            .json();
        assert_eq!(
            loaded["globals"],
            serde_json::json!({"verdict": 1, "min_len": 14})
        );
        net.meshbpf(&root.args(&["attach", &net.dev, "--object", "dropper", "--mode", "skb"]))
            .ok();

        let sock = receiver(&net);
        let datagrams = 10;
        net.send_udp(format!("{ADDR}:{PORT}").parse().unwrap(), datagrams, 64);
        let t = wait_for_packets(&root, "dropper", datagrams as u64);
        assert_eq!(t[0], datagrams as u64);
        assert_eq!(received(&sock), 0, "verdict=1 is XDP_DROP: nothing arrives");

        let list = net.meshbpf(&root.args(&["list", "-j"])).ok().json();
        let dropper = named(&list, "dropper");
        assert_eq!(dropper["globals"]["verdict"], 1);
        assert_eq!(
            dropper["programs"][0]["attachments"][0]["method"],
            "xdp skb"
        );

        // detach IFACE sees the loaded object's attachment as meshbpf's.
        let detached = net
            .meshbpf(&root.args(&["detach", &net.dev, "-j"]))
            .ok()
            .json();
        assert_eq!(detached["detached"][0]["program"], "dropper:count_packets");
        assert_eq!(net.xdp_prog_id(), None);
        let list = net.meshbpf(&root.args(&["list", "-j"])).ok().json();
        assert_eq!(
            named(&list, "dropper")["programs"][0]["attachments"],
            serde_json::json!([]),
            "still loaded, no longer attached"
        );
    }
);

privileged_test!(
    fn a_loaded_tc_program_runs_beside_meshbpfs_own_and_detach_removes_both() {
        let (_dir, obj) = compile_fixture("load_skb");
        let root = PinRoot::new();
        let net = VethPair::new();
        net.meshbpf(&root.args(&["attach", &net.dev, "--mode", "skb"]))
            .ok();
        root.meshbpf(&["load", obj.to_str().unwrap(), "--name", "tcx", "--pin-maps"])
            .ok();
        let attached = net
            .meshbpf(&root.args(&[
                "attach",
                &net.dev,
                "--object",
                "tcx",
                "--prog",
                "count_ingress",
                "-j",
            ]))
            .ok()
            .json();
        assert_eq!(attached["method"], "tcx");
        assert_eq!(attached["attach_point"], format!("{} ingress", net.dev));
        assert_eq!(
            net.tc_program_count(),
            3,
            "tc_classifier on ingress and egress, and the loaded program"
        );

        // A listener, so no ICMP port unreachable flows back.
        let sock = receiver(&net);
        let (datagrams, payload) = (12u64, 50u64);
        net.send_udp(
            format!("{ADDR}:{PORT}").parse().unwrap(),
            datagrams as usize,
            payload as usize,
        );
        let counted = common::wait_for(Duration::from_secs(5), || {
            let c = bpftool_u64_array(&root.loaded().join("tcx").join("map_ingress"));
            (c[0] >= datagrams).then_some(c)
        })
        .expect("the tc program counted the datagrams");
        assert_eq!(
            received(&sock),
            datagrams as usize,
            "TCX_NEXT lets them through"
        );
        // tc ingress sees the frame with its Ethernet header.
        assert_eq!(
            counted,
            vec![datagrams, datagrams * (ETH + IPV4 + UDP + payload)]
        );

        let list = net.meshbpf(&root.args(&["list", "-j"])).ok().json();
        let kinds: Vec<(&str, &str)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["kind"].as_str().unwrap(), o["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("attachment", "tc_classifier"),
                ("attachment", "xdp_counter"),
                ("loaded", "tcx")
            ]
        );
        let classifier = named(&list, "tc_classifier");
        let mut methods: Vec<(&str, &str)> = classifier["programs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let a = &p["attachments"][0];
                (
                    a["attach_point"].as_str().unwrap(),
                    a["method"].as_str().unwrap(),
                )
            })
            .collect();
        methods.sort();
        let ingress = format!("{} ingress", net.dev);
        let egress = format!("{} egress", net.dev);
        assert_eq!(
            methods,
            [(egress.as_str(), "tcx"), (ingress.as_str(), "tcx")]
        );
        let flows = named(&classifier["maps"], "flows");
        assert_eq!(flows["map_type"], "lru_hash");
        assert_eq!(flows["entries"], 1, "one 5-tuple, one direction: {flows}");
        assert_eq!(flows["max_entries"], 65536);
        let counter = named(&list, "xdp_counter");
        assert_eq!(counter["interface"], net.dev.as_str());
        assert_eq!(
            counter["programs"][0]["attachments"][0]["method"],
            "xdp skb"
        );
        assert_eq!(
            named(&counter["maps"], "counters")["pin_path"],
            root.path
                .join("net")
                .join(&net.dev)
                .join("xdp_counter")
                .join("counters")
                .to_str()
                .unwrap()
        );

        let detached = net
            .meshbpf(&root.args(&["detach", &net.dev, "-j"]))
            .ok()
            .json();
        let programs = common::detached_programs(&detached);
        assert_eq!(
            programs,
            ["tc_classifier", "tcx:count_ingress", "xdp_counter"]
        );
        assert_eq!(net.tc_program_count(), 0);
        root.meshbpf(&["unload", "tcx"]).ok();
    }
);
