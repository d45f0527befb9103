//! The package's systemd units under a real systemd: runs inside the VM
//! that `tests/vm/run --systemd tests/vm/systemd-setup` boots with systemd
//! as PID 1 and the .deb installed (tests/vm/tests). systemctl starts and
//! stops the units; the kernel's own tools (ip, tc, bpftool), sockets,
//! promtool and systemd's own timestamps say what happened.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{must, run, Ran, VethPair, MAC, PEER_MAC};
use serde_json::{json, Value};

/// The package's binary, which the units run.
const INSTALLED: &str = "/usr/bin/meshbpf";
/// meshbpf-serve.service's address.
const SERVE: &str = "127.0.0.1:9435";

/// The interface tests/vm/systemd-setup creates before the boot, its peer's
/// namespace, and the rule its saved set holds.
const BOOT_DEV: &str = "msdboot0";
const BOOT_PEER_NS: &str = "msdbootp";
const BOOT_ADDR: &str = "192.0.2.1";
const BOOT_RULE: &str = "no-discard";

/// The attach test's interface is in the root namespace too: a subnet of
/// its own, apart from the boot interface's.
const ADDR: &str = "198.51.100.1";
const PEER_ADDR: &str = "198.51.100.2";

const ETH_IPV4_UDP: u64 = 14 + 20 + 8;
/// `ping`'s default echo request: 8 bytes of ICMP header and 56 of data.
const ETH_IPV4_ECHO: u64 = 14 + 20 + 64;

fn systemctl(args: &[&str]) -> Ran {
    Ran::from(run(Command::new("systemctl").args(args)))
}

/// `systemctl show UNIT -p NAME...` as a map.
fn unit_properties(unit: &str, names: &[&str]) -> BTreeMap<String, String> {
    let mut command = Command::new("systemctl");
    command.args(["show", unit]);
    for name in names {
        command.args(["-p", name]);
    }
    let shown = Ran::from(run(&mut command)).ok();
    shown
        .stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ActiveState, SubState and Result of `unit`.
fn unit_state(unit: &str) -> [String; 3] {
    let p = unit_properties(unit, &["ActiveState", "SubState", "Result"]);
    ["ActiveState", "SubState", "Result"].map(|k| p[k].clone())
}

fn monotonic(unit: &str, property: &str) -> u64 {
    let value = &unit_properties(unit, &[property])[property];
    value
        .parse()
        .unwrap_or_else(|e| panic!("{unit} {property}={value}: {e}"))
}

/// A timestamp of systemd itself (`systemctl show` without a unit).
fn manager_monotonic(property: &str) -> u64 {
    let shown = systemctl(&["show", "-p", property, "--value"]).ok();
    shown
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("systemd's {property}={}: {e}", shown.stdout))
}

fn installed(args: &[&str]) -> Ran {
    Ran::from(run(Command::new(INSTALLED).args(args)))
}

/// A veth pair whose `dev` is in the root namespace, where systemd and udev
/// see it (an interface of the host, as the units expect), named there by
/// `ip netns attach` so that VethPair's tools reach it.
fn root_veth(name: &str) -> VethPair {
    let net = VethPair {
        ns: format!("{name}r"),
        peer_ns: format!("{name}p"),
        dev: format!("{name}a"),
        peer_dev: format!("{name}b"),
    };
    let (ns, pns, dev, pdev) = (&net.ns, &net.peer_ns, &net.dev, &net.peer_dev);
    must(&format!("ip netns attach {ns} 1 && ip netns add {pns}"));
    must(&format!(
        "ip link add {dev} address {MAC} type veth peer name {pdev} netns {pns} address {PEER_MAC}"
    ));
    must(&format!(
        "sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1 && ip netns exec {pns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
    ));
    must(&format!(
        "ip addr add {ADDR}/24 dev {dev} && ip -n {pns} addr add {PEER_ADDR}/24 dev {pdev}"
    ));
    must(&format!(
        "ip neigh add {PEER_ADDR} lladdr {PEER_MAC} dev {dev} nud permanent && ip -n {pns} neigh add {ADDR} lladdr {MAC} dev {pdev} nud permanent"
    ));
    must(&format!(
        "ip link set {dev} up && ip -n {pns} link set lo up && ip -n {pns} link set {pdev} up"
    ));
    net
}

/// GETs `path` from meshbpf-serve with Python's urllib: (status, body), or
/// None while nothing listens.
fn scrape(path: &str) -> Option<(u16, String)> {
    let script = "import sys, urllib.request, urllib.error\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=10); code = r.status; body = r.read()\n\
        except urllib.error.HTTPError as e:\n    code = e.code; body = e.read()\n\
        except OSError:\n    sys.exit(3)\n\
        print(code); sys.stdout.write(body.decode())";
    let out = run(Command::new("python3").args(["-c", script, &format!("http://{SERVE}{path}")]));
    if out.status.code() == Some(3) {
        return None;
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let (code, body) = text.split_once('\n').expect("python printed the status");
    Some((code.parse().unwrap(), body.to_string()))
}

/// The value of the sample of `family` whose labels include all of `labels`.
fn sample(metrics: &str, family: &str, labels: &[&str]) -> f64 {
    let found: Vec<f64> = metrics
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{family}{{")) || line.starts_with(&format!("{family} "))
        })
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one sample of {family} {labels:?} in:\n{metrics}"
    );
    found[0]
}

/// What runs on `net.dev` and what meshbpf pinned for it is gone, by the
/// kernel's account: no XDP program, no tc program (tcx or clsact), no
/// program of the ids that ran, no pins.
fn nothing_left(net: &VethPair, prog_ids: &[u64]) {
    assert_eq!(
        net.xdp_prog_id(),
        None,
        "an XDP program is left on {}",
        net.dev
    );
    assert_eq!(
        net.tc_program_count(),
        0,
        "a tc program is left on {}",
        net.dev
    );
    for direction in ["ingress", "egress"] {
        let shown = run(Command::new("tc").args(["filter", "show", "dev", &net.dev, direction]));
        assert_eq!(
            String::from_utf8_lossy(&shown.stdout),
            "",
            "tc filters left on {} {direction}",
            net.dev
        );
    }
    for id in prog_ids {
        assert!(!common::prog_exists(*id), "program {id} is still loaded");
    }
    assert!(
        !net.pin_dir().exists(),
        "{} is left",
        net.pin_dir().display()
    );
}

/// The program ids `stats -j` reports, each checked against the kernel's
/// list (bpftool): loaded, and of the type its hook runs.
fn running_programs(stats: &Value) -> Vec<u64> {
    let programs = stats["runtime"]["programs"]
        .as_array()
        .expect("stats lists its programs");
    programs
        .iter()
        .map(|p| {
            let id = p["prog_id"].as_u64().unwrap();
            let shown = Ran::from(run(Command::new("bpftool").args([
                "-j",
                "prog",
                "show",
                "id",
                &id.to_string(),
            ])))
            .ok()
            .json();
            let prog_type = if p["hook"] == "xdp" {
                "xdp"
            } else {
                "sched_cls"
            };
            assert_eq!(shown["type"], prog_type, "{p} vs {shown}");
            id
        })
        .collect()
}

privileged_test!(
    /// meshbpf-attach@ and meshbpf-serve started and stopped by systemctl:
    /// exact counts of real traffic in `stats` and in the scrape, and
    /// nothing left on the interface once the unit stopped.
    fn the_attach_and_serve_units_count_traffic_and_leave_nothing_behind() {
        let net = root_veth("msdat");
        let unit = format!("meshbpf-attach@{}.service", net.dev);
        // BindsTo= and After= the device unit: udev must have told systemd.
        systemctl(&["start", &unit]).ok();
        assert_eq!(unit_state(&unit), ["active", "exited", "success"]);
        let device = format!("sys-subsystem-net-devices-{}.device", net.dev);
        assert_eq!(
            unit_properties(&device, &["ActiveState"])["ActiveState"],
            "active"
        );

        let (datagrams, payload) = (25_u64, 200_u64);
        net.send_udp(
            format!("{ADDR}:9").parse().unwrap(),
            datagrams as usize,
            payload as usize,
        );
        net.ping(ADDR, 3);
        let stats = common::wait_for(Duration::from_secs(10), || {
            let s = installed(&["stats", &net.dev, "-j"]).ok().json();
            (s["l4"]["icmp"]["packets"].as_u64() >= Some(3)).then_some(s)
        })
        .expect("the pings never showed up in stats");
        let udp_bytes = datagrams * (ETH_IPV4_UDP + payload);
        assert_eq!(
            stats["l4"]["udp"],
            json!({"packets": datagrams, "bytes": udp_bytes})
        );
        assert_eq!(
            stats["l4"]["icmp"],
            json!({"packets": 3, "bytes": 3 * ETH_IPV4_ECHO})
        );
        assert_eq!(stats["packets"], datagrams + 3, "no other traffic: {stats}");
        assert_eq!(stats["state"], "attached");
        assert_eq!(net.xdp_prog_id(), stats["prog_id"].as_u64(), "{stats}");
        let prog_ids = running_programs(&stats);
        assert_eq!(
            prog_ids.len(),
            3,
            "xdp_counter and tc_classifier twice: {stats}"
        );

        systemctl(&["start", "meshbpf-serve.service"]).ok();
        let (status, metrics) = common::wait_for(Duration::from_secs(60), || scrape("/metrics"))
            .expect("meshbpf-serve never answered on 127.0.0.1:9435");
        assert_eq!(status, 200, "{metrics}");
        common::promtool::check_metrics(&metrics);
        let dev = format!("interface=\"{}\"", net.dev);
        let l4 = "layer=\"l4\"";
        let packets = "meshbpf_packets_total";
        assert_eq!(
            sample(&metrics, packets, &[&dev, l4, "protocol=\"udp\""]),
            datagrams as f64
        );
        assert_eq!(
            sample(&metrics, packets, &[&dev, l4, "protocol=\"icmp\""]),
            3.0
        );
        assert_eq!(
            sample(
                &metrics,
                "meshbpf_bytes_total",
                &[&dev, l4, "protocol=\"udp\""]
            ),
            udp_bytes as f64
        );
        assert_eq!(sample(&metrics, "meshbpf_up", &[]), 1.0);
        // /healthz is `meshbpf health`: with the unit's capabilities, no
        // check fails.
        let (status, health) = scrape("/healthz").expect("/healthz");
        assert_eq!(status, 200, "{health}");
        systemctl(&["stop", "meshbpf-serve.service"]).ok();
        assert_eq!(
            unit_state("meshbpf-serve.service"),
            ["inactive", "dead", "success"]
        );
        assert_eq!(scrape("/metrics"), None, "meshbpf-serve still listens");

        systemctl(&["stop", &unit]).ok();
        assert_eq!(unit_state(&unit), ["inactive", "dead", "success"]);
        nothing_left(&net, &prog_ids);
    }
);

/// A socket on the boot interface's address, `port`.
fn udp_receiver(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind((BOOT_ADDR, port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    socket
}

/// Counts the datagrams that reach `socket`: until `expected` arrived or
/// 5 s passed, then whatever else is already queued.
fn received(socket: &UdpSocket, expected: usize) -> usize {
    let mut got = 0;
    let mut buf = [0; 64];
    common::wait_for(Duration::from_secs(5), || {
        if socket.recv(&mut buf).is_ok() {
            got += 1;
        }
        (got >= expected).then_some(())
    });
    // Anything beyond what was expected would be counted too.
    socket.set_nonblocking(true).unwrap();
    while socket.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

privileged_test!(
    /// meshbpf-filter@, enabled before the boot with a saved rule set
    /// (tests/vm/systemd-setup), ran during the boot before
    /// network-pre.target by systemd's own timestamps, and its set is the
    /// one in force: the denied port gets nothing, the other everything.
    fn the_filter_unit_restores_the_saved_set_at_boot_before_network_pre() {
        let unit = format!("meshbpf-filter@{BOOT_DEV}.service");
        let device = format!("sys-subsystem-net-devices-{BOOT_DEV}.device");
        // multi-user.target does not wait for the unit (no default
        // dependencies, as nftables.service): the boot is finished once
        // every job the boot queued is done, the unit's start among them.
        let running = systemctl(&["is-system-running", "--wait"]);
        let failed = systemctl(&["--failed", "--no-legend", "--plain"]).ok();
        assert_eq!(
            running.stdout.trim(),
            "running",
            "failed units: {}",
            failed.stdout
        );
        assert_eq!(unit_state(&unit), ["active", "exited", "success"]);
        let started = monotonic(&unit, "InactiveExitTimestampMonotonic");
        let active = monotonic(&unit, "ActiveEnterTimestampMonotonic");
        let network_pre = monotonic("network-pre.target", "ActiveEnterTimestampMonotonic");
        let device_up = monotonic(&device, "ActiveEnterTimestampMonotonic");
        let finished = manager_monotonic("FinishTimestampMonotonic");
        assert!(
            0 < device_up
                && device_up <= started
                && started < active
                && active <= network_pre
                && network_pre <= finished,
            "device {device_up}, filter started {started} and active {active}, network-pre.target {network_pre}, boot finished {finished} (µs)"
        );

        let shown = installed(&["filter", "show", BOOT_DEV, "-j"]).ok().json();
        assert_eq!(shown["rules"][0]["id"], BOOT_RULE, "{shown}");
        let xdp = Ran::from(run(
            Command::new("ip").args(["-j", "-d", "link", "show", "dev", BOOT_DEV])
        ))
        .ok()
        .json();
        let prog_id = xdp[0]["xdp"]["prog"]["id"]
            .as_u64()
            .expect("an XDP program on the interface");
        let prog = Ran::from(run(Command::new("bpftool").args([
            "-j",
            "prog",
            "show",
            "id",
            &prog_id.to_string(),
        ])))
        .ok()
        .json();
        assert!(
            "xdp_mesh_filter".starts_with(prog["name"].as_str().unwrap()),
            "{prog}"
        );

        let (denied, allowed) = (udp_receiver(9), udp_receiver(10));
        // The denied datagrams first: once the allowed ones arrived, the
        // kernel saw all of them.
        VethPair::in_netns(BOOT_PEER_NS, || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            for (port, count) in [(9, 5), (10, 7)] {
                for _ in 0..count {
                    sock.send_to(b"boot", SocketAddr::new(BOOT_ADDR.parse().unwrap(), port))
                        .unwrap();
                }
            }
        });
        assert_eq!(received(&allowed, 7), 7, "allowed datagrams lost");
        assert_eq!(
            received(&denied, 0),
            0,
            "the saved rule let datagrams through"
        );
        let shown = installed(&["filter", "show", BOOT_DEV, "-j"]).ok().json();
        assert_eq!(common::filter::hits(&shown, 0), 5, "{shown}");

        systemctl(&["stop", &unit]).ok();
        assert_eq!(unit_state(&unit), ["inactive", "dead", "success"]);
        let after = Ran::from(run(
            Command::new("ip").args(["-j", "-d", "link", "show", "dev", BOOT_DEV])
        ))
        .ok()
        .json();
        assert_eq!(
            after[0]["xdp"],
            Value::Null,
            "XDP left on {BOOT_DEV}: {after}"
        );
        assert!(
            !common::prog_exists(prog_id),
            "program {prog_id} is still loaded"
        );
        assert!(!Path::new(common::ROOT).join("net").join(BOOT_DEV).exists());
        assert!(
            Path::new(&format!("/var/lib/meshbpf/filter/{BOOT_DEV}.json")).exists(),
            "stopping (as at shutdown) must keep the set for the next boot"
        );
    }
);
