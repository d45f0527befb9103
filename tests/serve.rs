//! `meshbpf serve` and `stats --prometheus` against the running kernel: the
//! exposition checked by Debian's promtool, exact packet counts after known
//! traffic, /healthz, signals, scrapes racing attach and detach, and Debian's
//! real Prometheus server scraping meshbpf.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::promtool::check_metrics as promtool;
use common::serve::{free_port, value, within, Server};
use common::{http, PinRoot, VethPair, ADDR};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The slots `stats -j` and the exposition both have, per interface.
const L3: [&str; 4] = ["ipv4", "ipv6", "arp", "other"];
const L4: [&str; 5] = ["tcp", "udp", "icmp", "icmpv6", "other"];

fn packets(interface: &str, layer: &str, protocol: &str) -> String {
    format!("meshbpf_packets_total{{interface=\"{interface}\",layer=\"{layer}\",protocol=\"{protocol}\"}}")
}

fn bytes(interface: &str, layer: &str, protocol: &str) -> String {
    packets(interface, layer, protocol).replace("_packets_", "_bytes_")
}

/// Lines of the exposition about `interface`.
fn series_of<'a>(text: &'a str, family: &str, interface: &str) -> Vec<&'a str> {
    let prefix = format!("{family}{{interface=\"{interface}\"");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

privileged_test!(
    fn nothing_attached_is_a_valid_exposition_that_says_so() {
        let root = PinRoot::new();
        let once = root.meshbpf(&["stats", "--prometheus"]).ok().stdout;
        promtool(&once);
        assert_eq!(value(&once, "meshbpf_up"), Some(1.0), "{once}");
        assert_eq!(value(&once, "meshbpf_attachments"), Some(0.0), "{once}");
        assert!(!once.contains("meshbpf_packets_total{"), "{once}");

        let server = Server::start(None, &root.args(&[])[..]);
        let live = server.scrape();
        promtool(&live);
        assert_eq!(value(&live, "meshbpf_attachments"), Some(0.0), "{live}");
        assert_eq!(
            value(&live, "meshbpf_health_check{check=\"bpffs\",status=\"ok\"}"),
            Some(1.0),
            "{live}"
        );
    }
);

/// A veth with meshbpf attached, and `serve` in its namespace.
fn attached() -> (VethPair, Server) {
    let net = VethPair::new();
    net.meshbpf(&["attach", &net.dev]).ok();
    let server = Server::start(Some(&net.ns), &[]);
    (net, server)
}

privileged_test!(
    fn a_scrape_counts_known_traffic_exactly_as_stats_does() {
        let (net, server) = attached();
        let datagrams = 25;
        net.send_udp(format!("{ADDR}:9").parse().unwrap(), datagrams, 100);
        let stats = common::wait_for(Duration::from_secs(5), || {
            let s = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            (s["l4"]["udp"]["packets"] == datagrams).then_some(s)
        })
        .expect("the datagrams were never counted");

        let live = server.scrape();
        promtool(&live);
        let dev = &net.dev;
        assert_eq!(
            value(&live, &packets(dev, "l4", "udp")),
            Some(datagrams as f64)
        );
        for (layer, names) in [("l3", &L3[..]), ("l4", &L4[..])] {
            for name in names {
                let counter = &stats[layer][name];
                assert_eq!(
                    value(&live, &packets(dev, layer, name)),
                    Some(counter["packets"].as_f64().unwrap()),
                    "{layer} {name}: {live}"
                );
                assert_eq!(
                    value(&live, &bytes(dev, layer, name)),
                    Some(counter["bytes"].as_f64().unwrap()),
                    "{layer} {name}: {live}"
                );
            }
        }
        assert_eq!(
            value(
                &live,
                &format!("meshbpf_map_capacity{{interface=\"{dev}\",map=\"flows\"}}")
            ),
            Some(stats["flows"]["max_flows"].as_f64().unwrap())
        );
        assert_eq!(series_of(&live, "meshbpf_program_runs_total", dev).len(), 3);

        let once = net.meshbpf(&["stats", "--prometheus"]).ok().stdout;
        promtool(&once);
        assert_eq!(
            value(&once, &packets(dev, "l4", "udp")),
            Some(datagrams as f64)
        );

        let (status, content_type, open) = server.get(
            "/metrics",
            Some("application/openmetrics-text; version=1.0.0"),
        );
        assert_eq!(status, 200);
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE meshbpf_packets counter\n"), "{open}");
        assert_eq!(
            value(&open, &packets(dev, "l4", "udp")),
            Some(datagrams as f64)
        );
    }
);

privileged_test!(
    fn healthz_is_200_until_a_check_fails_then_503() {
        let root = PinRoot::new();
        std::fs::create_dir_all(&root.path).unwrap();
        let server = Server::start(None, &root.args(&[])[..]);
        let (status, content_type, body) = server.get("/healthz", None);
        assert_eq!(content_type, "application/json");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 200, "{body}");
        assert_ne!(report["status"], "fail", "{body}");

        // What a command killed before it pinned its link leaves behind.
        std::fs::create_dir_all(root.path.join("net/ghost0/xdp_counter")).unwrap();
        let (status, _, body) = server.get("/healthz", None);
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(report["status"], "fail");
        let ghost = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["interface"] == "ghost0")
            .unwrap_or_else(|| panic!("no check of ghost0: {body}"));
        assert_eq!(ghost["status"], "fail");
        let live = server.scrape();
        assert_eq!(
            value(
                &live,
                "meshbpf_health_check{check=\"attachment ghost0/xdp_counter\",status=\"fail\"}"
            ),
            Some(1.0),
            "{live}"
        );
        assert_eq!(server.get("/nothing", None).0, 404);
    }
);

privileged_test!(
    fn sigterm_and_sigint_stop_it_with_exit_0_and_the_port_closed() {
        let root = PinRoot::new();
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            let server = Server::start(None, &root.args(&[])[..]);
            server.scrape();
            let port = server.port;
            let (status, stderr) = server.stop(signal);
            assert_eq!(status.code(), Some(0), "{signal}: {stderr}");
            assert!(
                TcpStream::connect(("127.0.0.1", port)).is_err(),
                "{signal}: port {port} still open"
            );
        }
    }
);

privileged_test!(
    fn scrapes_racing_attach_and_detach_see_all_or_nothing() {
        let net = VethPair::new();
        let server = Server::start(Some(&net.ns), &[]);
        let rounds = 10;
        let (mut present, mut absent) = (0, 0);
        std::thread::scope(|s| {
            let flips = s.spawn(|| {
                for _ in 0..rounds {
                    net.meshbpf(&["attach", &net.dev]).ok();
                    net.meshbpf(&["detach", &net.dev]).ok();
                }
            });
            while !flips.is_finished() {
                let live = server.scrape();
                let traffic = series_of(&live, "meshbpf_packets_total", &net.dev).len();
                let flows = series_of(&live, "meshbpf_flows", &net.dev).len();
                let runs = series_of(&live, "meshbpf_program_runs_total", &net.dev).len();
                match (traffic, flows, runs) {
                    (9, 1, 3) => present += 1,
                    (0, 0, 0) => absent += 1,
                    half => {
                        panic!("half an attachment (packets, flows, programs) {half:?}: {live}")
                    }
                }
            }
            flips.join().unwrap();
        });
        eprintln!("{present} scrapes saw the attachment, {absent} did not");
        assert!(
            present > 0 && absent > 0,
            "the scrapes never saw both states"
        );
    }
);

/// The shipped alerts, which the Prometheus server below evaluates.
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/meshbpf.rules.yml"
);

/// Debian's Prometheus server on a free loopback port in `ns`, scraping
/// `target` every second as job `meshbpf` and evaluating the shipped alerts
/// every second, with its config and data in a temp dir.
struct Prometheus {
    child: Child,
    port: u16,
    ns: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(ns: &str, target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: ['{RULES}']\nscrape_configs:\n  - job_name: meshbpf\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port(Some(ns));
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; make deps installs it)");
        Prometheus {
            child,
            port,
            ns: ns.to_string(),
            _dir: dir,
        }
    }

    /// The value of an instant query's single result, if there is one.
    fn query(&self, promql: &str) -> Option<String> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/api/v1/query?query={encoded}");
        let ns = Some(self.ns.as_str());
        let reachable = within(ns, || TcpStream::connect(("127.0.0.1", self.port)).is_ok());
        if !reachable {
            return None;
        }
        let answer = within(ns, || http::get(self.port, &path, None));
        if answer.status != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        Some(
            answer["data"]["result"][0]["value"][1]
                .as_str()?
                .to_string(),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

privileged_test!(
    fn prometheus_scrapes_the_exact_packet_count() {
        let (net, server) = attached();
        let prometheus = Prometheus::start(&net.ns, server.port);
        let datagrams = 40;
        net.send_udp(format!("{ADDR}:9").parse().unwrap(), datagrams, 64);

        let promql = packets(&net.dev, "l4", "udp");
        let seen = common::wait_for(Duration::from_secs(60), || {
            prometheus
                .query(&promql)
                .filter(|v| v == &datagrams.to_string())
        });
        assert_eq!(
            seen.as_deref(),
            Some("40"),
            "Prometheus never reported {datagrams} for {promql}; last answer {:?}",
            prometheus.query(&promql)
        );
        assert_eq!(
            prometheus.query("up{job=\"meshbpf\"}").as_deref(),
            Some("1")
        );
    }
);

privileged_test!(
    fn filter_verdicts_and_rule_hits_are_exact() {
        let net = VethPair::new();
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            rules.path(),
            r#"{"default": "allow", "rules": [{"action": "deny", "protocol": "udp", "dport": 9}]}"#,
        )
        .unwrap();
        net.meshbpf(&[
            "attach",
            &net.dev,
            "--filter",
            rules.path().to_str().unwrap(),
        ])
        .ok();
        let server = Server::start(Some(&net.ns), &[]);
        let (denied, allowed) = (7, 5);
        net.send_udp(format!("{ADDR}:9").parse().unwrap(), denied, 32);
        net.send_udp(format!("{ADDR}:10").parse().unwrap(), allowed, 32);
        let shown = common::wait_for(Duration::from_secs(5), || {
            let s = net.meshbpf(&["filter", "show", &net.dev, "-j"]).ok().json();
            (s["rules"][0]["packets"] == denied).then_some(s)
        })
        .expect("the denied datagrams were never counted");

        let live = server.scrape();
        promtool(&live);
        let dev = &net.dev;
        let series = |family: &str, labels: &str| {
            value(&live, &format!("{family}{{interface=\"{dev}\",{labels}}}"))
        };
        let rule = format!(
            "rule=\"0\",id=\"{}\"",
            shown["rules"][0]["id"].as_str().unwrap()
        );
        assert_eq!(
            series("meshbpf_filter_rule_packets_total", &rule),
            Some(shown["rules"][0]["packets"].as_f64().unwrap())
        );
        assert_eq!(
            series("meshbpf_filter_rule_bytes_total", &rule),
            Some(shown["rules"][0]["bytes"].as_f64().unwrap())
        );
        let pending = format!("meshbpf_filter_confirm_pending{{interface=\"{dev}\"}}");
        assert_eq!(value(&live, &pending), Some(0.0), "no apply --confirm here");
        assert_eq!(
            series("meshbpf_filter_verdict_packets_total", "verdict=\"drop\""),
            Some(denied as f64)
        );
        assert_eq!(
            series("meshbpf_filter_verdict_packets_total", "verdict=\"pass\""),
            Some(allowed as f64)
        );
        assert_eq!(
            value(
                &live,
                &format!("meshbpf_filter_rate_limited_packets_total{{interface=\"{dev}\"}}")
            ),
            Some(0.0)
        );
        assert_eq!(series("meshbpf_map_entries", "map=\"rules\""), Some(1.0));
        assert_eq!(
            series("meshbpf_map_capacity", "map=\"rules\""),
            Some(f64::from(meshbpf::programs::xdp_mesh_filter::MAX_RULES))
        );
    }
);

privileged_test!(
    fn syscall_latency_is_a_histogram_that_agrees_with_latency() {
        let root = PinRoot::new();
        let child = common::held_python("for _ in range(100): os.getpid()");
        let pid = child.id().to_string();
        root.meshbpf(&["attach", "--latency", "--pid", &pid, "--syscalls", "getpid"])
            .ok();
        common::release(child);

        let once = root.meshbpf(&["stats", "--prometheus"]).ok().stdout;
        promtool(&once);
        let report = root.meshbpf(&["latency", "-j"]).ok().json();
        let row = &report["syscalls"][0];
        assert_eq!(row["name"], "getpid", "{report}");
        let family = "meshbpf_syscall_latency_seconds";
        let get = |series: &str| value(&once, &format!("{family}{series}"));
        assert_eq!(get("_count{syscall=\"getpid\"}"), Some(100.0), "{once}");
        assert_eq!(get("_bucket{le=\"+Inf\",syscall=\"getpid\"}"), Some(100.0));
        assert_eq!(
            get("_sum{syscall=\"getpid\"}"),
            Some(row["total_ns"].as_f64().unwrap() / 1e9)
        );
        // (le in seconds, cumulative count) of every finite bucket.
        let prefix = format!("{family}_bucket{{le=\"");
        let buckets: Vec<(f64, u64)> = once
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|l| l.contains("syscall=\"getpid\""))
            .filter_map(|l| {
                let (le, rest) = l.split_once('"')?;
                let le = le.parse().ok()?;
                Some((le, rest.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        // Bucket b of `latency -j` (le_ns = 2^(b+1) - 1) is le = le_ns: a
        // latency of exactly 2^(b+1) ns is in bucket b + 1 in both.
        let mut cumulative = 0;
        for bucket in row["buckets"].as_array().unwrap() {
            cumulative += bucket["count"].as_u64().unwrap();
            let le = bucket["le_ns"].as_u64().unwrap() as f64 / 1e9;
            let found = buckets
                .iter()
                .find(|(b, _)| (b - le).abs() < le * 1e-9)
                .unwrap_or_else(|| panic!("no bucket le={le}: {once}"));
            assert_eq!(found.1, cumulative, "le={le}: {once}");
        }
        assert_eq!(cumulative, 100);
    }
);

privileged_test!(
    fn lsm_events_by_type_and_verdict_agree_with_stats() {
        let root = PinRoot::new();
        let watched = tempfile::tempdir().unwrap();
        let policy = tempfile::NamedTempFile::new().unwrap();
        let policy_json = serde_json::json!({ "watch": [watched.path()] }).to_string();
        std::fs::write(policy.path(), policy_json).unwrap();
        root.meshbpf(&[
            "attach",
            "--lsm",
            "--policy",
            policy.path().to_str().unwrap(),
        ])
        .ok();
        let file = watched.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        for _ in 0..2 {
            std::fs::read(&file).unwrap();
        }

        let once = root.meshbpf(&["stats", "--prometheus"]).ok().stdout;
        promtool(&once);
        let open = &root.lsm_stats()["events"]["open"];
        assert_eq!(open["events"], 3, "{open}");
        let get = |series: &str| value(&once, series);
        assert_eq!(
            get("meshbpf_lsm_events_total{type=\"open\"}"),
            Some(open["events"].as_f64().unwrap())
        );
        for verdict in ["denied", "audited"] {
            assert_eq!(
                get(&format!(
                    "meshbpf_lsm_verdicts_total{{type=\"open\",verdict=\"{verdict}\"}}"
                )),
                Some(open[verdict].as_f64().unwrap()),
                "{verdict}"
            );
        }
        assert_eq!(
            get("meshbpf_lsm_lost_events_total{type=\"open\"}"),
            Some(0.0)
        );
        assert_eq!(get("meshbpf_attachments"), Some(1.0));
        // Its programs' run counters, under their kernel names: the tracepoint
        // fallback's three here.
        let runs: Vec<&str> = series_of(&once, "meshbpf_program_runs_total", "")
            .into_iter()
            .map(|l| l.split_once('}').unwrap().0)
            .collect();
        assert_eq!(
            runs,
            [
                "meshbpf_program_runs_total{interface=\"\",program=\"lsm_monitor\",hook=\"tp_exec\"",
                "meshbpf_program_runs_total{interface=\"\",program=\"lsm_monitor\",hook=\"tp_sys_enter\"",
                "meshbpf_program_runs_total{interface=\"\",program=\"lsm_monitor\",hook=\"tp_sys_exit\""
            ],
            "{once}"
        );
    }
);

privileged_test!(
    fn class_counters_agree_with_stats() {
        let net = VethPair::new();
        let classes = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            classes.path(),
            r#"{"classes": {"bulk": {"mark": "0x30"}},
            "rules": [{"class": "bulk", "protocol": "udp", "dport": 9}]}"#,
        )
        .unwrap();
        net.meshbpf(&[
            "attach",
            &net.dev,
            "--classes",
            classes.path().to_str().unwrap(),
        ])
        .ok();
        let datagrams = 6;
        net.send_udp(format!("{ADDR}:9").parse().unwrap(), datagrams, 50);
        let stats = common::wait_for(Duration::from_secs(5), || {
            let s = net.meshbpf(&["stats", &net.dev, "-j"]).ok().json();
            let bulk = s["flows"]["classes"]
                .as_array()?
                .iter()
                .find(|c| c["class"] == "bulk")?
                .clone();
            (bulk["ingress"]["packets"] == datagrams).then_some(bulk)
        })
        .expect("the bulk class never counted the datagrams");

        let once = net.meshbpf(&["stats", "--prometheus"]).ok().stdout;
        promtool(&once);
        for direction in ["ingress", "egress"] {
            for unit in ["packets", "bytes"] {
                let series = format!(
                    "meshbpf_class_{unit}_total{{interface=\"{}\",class=\"bulk\",direction=\"{direction}\"}}",
                    net.dev
                );
                assert_eq!(
                    value(&once, &series),
                    Some(stats[direction][unit].as_f64().unwrap()),
                    "{series}: {once}"
                );
            }
        }
    }
);

privileged_test!(
    fn a_port_in_use_is_named_with_what_to_do() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = taken.local_addr().unwrap().to_string();
        let ran = common::meshbpf(&["serve", "--listen", &listen, "-j"]);
        assert_eq!(ran.code, 1, "{}", ran.stderr);
        let error = ran.json();
        assert_eq!(
            error["error"],
            format!("cannot listen on {listen}: Address already in use (os error 98)")
        );
        assert!(
            error["hint"]
                .as_str()
                .unwrap()
                .contains("--listen ADDR:PORT"),
            "{error}"
        );
        let usage = common::meshbpf(&["serve", "--listen", "localhost"]);
        assert_eq!(usage.code, 2, "{}", usage.stderr);
        for (budget, why) in [
            (
                "0",
                "0 would fold every rule into rule=\"other\": give at least 1",
            ),
            ("many", "'many' is not a number of rules"),
        ] {
            let usage = common::meshbpf(&["serve", "--max-series", budget]);
            assert_eq!(usage.code, 2, "{}", usage.stderr);
            assert!(usage.stderr.contains(why), "{}", usage.stderr);
        }
    }
);

/// A number of /proc/PID/status, e.g. VmRSS (in kB) or Threads.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open descriptors of `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Lets this process hold `count` more descriptors than it does: a soft
/// limit of 1,024 is common. The hard limit must allow it (raising that
/// takes CAP_SYS_RESOURCE).
fn allow_descriptors(count: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let wanted = limit.rlim_cur.max(count + 256);
    assert!(
        wanted <= limit.rlim_max,
        "this test opens {count} sockets: raise the hard limit of open files (ulimit -Hn {wanted})"
    );
    limit.rlim_cur = wanted;
    // SAFETY: setrlimit only reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// Streams a request head of `size` bytes (one endless header) to `port`
/// until done or the server closes; the answer's status, if one came.
fn huge_head(port: u16, size: usize) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sent = stream.write(b"GET /metrics HTTP/1.1\r\nX-Big: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    while sent < size {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let _ = stream.write_all(b"\r\n\r\n");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

privileged_test!(
    fn a_huge_request_head_gets_431_and_costs_no_memory() {
        let root = PinRoot::new();
        let server = Server::start(None, &root.args(&[])[..]);
        let pid = server.child.id();
        server.scrape();
        let before = proc_status(pid, "VmRSS");

        let mut request = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        request.resize(request.len() + (1 << 20), b'a');
        request.extend_from_slice(b"\r\n\r\n");
        let answer = http::exchange(server.port, &request).expect("no answer to a 1 MB head");
        assert_eq!(answer.status, 431, "{}", answer.head);
        // Cut off at the limit: a 431, or closed while still sending.
        let status = huge_head(server.port, 64 << 20);
        assert!(matches!(status, None | Some(431)), "{status:?}");

        let grown_kb = proc_status(pid, "VmRSS").saturating_sub(before);
        eprintln!("VmRSS {before} kB, +{grown_kb} kB after the heads; 64 MB one: {status:?}");
        assert!(
            grown_kb < 16 * 1024,
            "serve grew by {grown_kb} kB reading two huge heads"
        );
        server.scrape();
    }
);

privileged_test!(
    fn idle_connections_cost_no_thread_and_do_not_lock_out_a_scrape() {
        let root = PinRoot::new();
        let server = Server::start(None, &root.args(&[])[..]);
        let pid = server.child.id();
        allow_descriptors(1500);
        let idle: Vec<TcpStream> = (0..1500)
            .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
            .collect();
        // Accepted after all 1,500: by then every one of them was taken in.
        let live = server.scrape();
        assert!(live.contains("meshbpf_up 1"), "{live}");
        let threads = proc_status(pid, "Threads");
        assert!(
            threads <= 2,
            "{threads} threads with 1,500 idle connections"
        );
        let fds = open_fds(pid);
        eprintln!("1,500 idle connections: {threads} threads, {fds} descriptors");
        assert!(
            fds <= meshbpf::metrics::http::MAX_CONNECTIONS + 16,
            "{fds} descriptors open with 1,500 idle connections"
        );
        drop(idle);
    }
);

privileged_test!(
    fn a_slowloris_is_cut_once_the_head_is_late() {
        let root = PinRoot::new();
        let server = Server::start(None, &root.args(&[])[..]);
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let started = std::time::Instant::now();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            .unwrap();
        // A byte a second, paced by the read that tells whether it was cut.
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut sent = 0;
        let limit = meshbpf::metrics::http::HEAD_TIMEOUT;
        let cut = loop {
            let mut byte = [0];
            match stream.read(&mut byte) {
                Ok(0) => break true,
                Ok(_) => panic!("an answer to half a head"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break true,
            }
            if started.elapsed() > limit * 3 {
                break false;
            }
            if stream.write_all(b"a").is_err() {
                break true;
            }
            sent += 1;
        };
        let after = started.elapsed();
        eprintln!("slowloris cut after {after:?} and {sent} bytes");
        assert!(cut, "still open after {after:?} and {sent} bytes");
        assert!(
            after >= limit - Duration::from_secs(1) && after < limit * 2,
            "cut after {after:?}, not about {limit:?}"
        );
        assert!(sent >= 3, "cut after {sent} bytes");
        server.scrape();
    }
);

privileged_test!(
    fn head_is_answered_and_other_methods_and_bad_heads_are_refused() {
        let root = PinRoot::new();
        let server = Server::start(None, &root.args(&[])[..]);
        let port = server.port;
        let full = http::get(port, "/metrics", None);
        let head = http::exchange(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(head.status, 200, "{}", head.head);
        assert_eq!(head.content_type, full.content_type);
        assert!(head.head.contains("Content-Length: "), "{}", head.head);
        assert_eq!(head.body, "");

        let post = http::exchange(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let post = post.unwrap();
        assert_eq!(post.status, 405, "{}", post.head);
        assert!(post.head.contains("Allow: GET, HEAD"), "{}", post.head);
        for bad in [
            &b"hello\r\n\r\n"[..],
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            let answer = http::exchange(port, bad).unwrap();
            assert_eq!(answer.status, 400, "{}", answer.head);
        }
        assert_eq!(http::get(port, "/metrics?x=1", None).status, 200);
    }
);

/// `{rule="R",id="I"}` and the value of each rule series of `family` on
/// `interface`.
fn rule_series(text: &str, family: &str, interface: &str) -> Vec<(String, f64)> {
    series_of(text, family, interface)
        .into_iter()
        .map(|l| {
            let (labels, v) = l.rsplit_once(' ').unwrap();
            let labels = labels.split_once(",rule=").unwrap().1;
            (labels.to_string(), v.parse().unwrap())
        })
        .collect()
}

privileged_test!(
    fn ten_thousand_rules_keep_the_top_series_and_other_sums_the_rest_monotonically() {
        let net = VethPair::new();
        let rules: Vec<_> = (0..10_000)
            .map(|i| serde_json::json!({"action": "allow", "protocol": "udp", "dport": 10_000 + i}))
            .collect();
        common::filter::attach_filter(
            &net,
            &serde_json::json!({"default": "allow", "rules": rules}),
        );
        let max = 5;
        let server = Server::start(Some(&net.ns), &["--max-series", &max.to_string()]);
        let send = |rule: usize, count: usize| {
            net.send_udp(
                format!("{ADDR}:{}", 10_000 + rule).parse().unwrap(),
                count,
                10,
            );
        };
        // Eight rules hit 1 to 8 times: the five most hit keep their series.
        let hit = [3, 100, 2000, 5000, 7777, 9998, 42, 9999];
        for (n, rule) in hit.iter().enumerate() {
            send(*rule, n + 1);
        }
        let counted = |total: u64| {
            common::wait_for(Duration::from_secs(10), || {
                let shown = common::filter::show(&net);
                let sum: u64 = shown["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["packets"].as_u64().unwrap())
                    .sum();
                (sum == total).then_some(())
            })
            .unwrap_or_else(|| panic!("the filter never counted {total} hits"));
        };
        counted(36);
        let dev = &net.dev;
        let first = server.scrape();
        promtool(&first);
        let packets = rule_series(&first, "meshbpf_filter_rule_packets_total", dev);
        assert_eq!(packets.len(), max + 1, "{packets:?}");
        let own: Vec<(&str, f64)> = packets[..max]
            .iter()
            .map(|(labels, v)| (labels.split_once(',').unwrap().0, *v))
            .collect();
        // In rule order: 5000 (4 hits), 7777, 9998, 42 and 9999 (8).
        assert_eq!(
            own,
            [
                ("\"42\"", 7.0),
                ("\"5000\"", 4.0),
                ("\"7777\"", 5.0),
                ("\"9998\"", 6.0),
                ("\"9999\"", 8.0)
            ]
        );
        let (other, other_packets) = &packets[max];
        assert!(other.starts_with("\"other\",id=\"other-"), "{other}");
        assert_eq!(*other_packets, 1.0 + 2.0 + 3.0);
        let bytes = rule_series(&first, "meshbpf_filter_rule_bytes_total", dev);
        assert_eq!(bytes.len(), max + 1);
        let on = format!("{{interface=\"{dev}\"}}");
        let folded = |text: &str| value(text, &format!("meshbpf_series_folded{on}"));
        let dropped = |text: &str| value(text, &format!("meshbpf_series_dropped_total{on}"));
        assert_eq!(folded(&first), Some(9_995.0));
        assert_eq!(dropped(&first), Some(9_995.0));

        // The most hit rule now is a folded one, and a rule never hit before
        // is hit: no room, so both stay in other, which only grows.
        send(3, 100);
        send(1234, 3);
        counted(36 + 103);
        let second = server.scrape();
        promtool(&second);
        let again = rule_series(&second, "meshbpf_filter_rule_packets_total", dev);
        assert_eq!(again.len(), max + 1);
        for ((labels, before), (labels_now, now)) in packets.iter().zip(&again) {
            assert_eq!(labels, labels_now);
            assert!(now >= before, "{labels} went down: {before} -> {now}");
        }
        assert_eq!(again[max].1, 6.0 + 103.0);
        let sum: f64 = again.iter().map(|(_, v)| v).sum();
        assert_eq!(sum, (36 + 103) as f64);
        assert_eq!(dropped(&second), Some(2.0 * 9_995.0));
        let sent_bytes: f64 = rule_series(&second, "meshbpf_filter_rule_bytes_total", dev)
            .iter()
            .map(|(_, v)| v)
            .sum();
        // UDP with 10 bytes of payload: 14 + 20 + 8 + 10 bytes a frame.
        assert_eq!(sent_bytes, (36 + 103) as f64 * 52.0);
    }
);

/// bpftool's view of the kernel: "eBPF program_type xdp is available".
fn bpftool_has(features: &str, kind: &str, name: &str) -> bool {
    let line = format!("eBPF {kind} {name} is available");
    features.lines().any(|l| l.trim() == line)
}

privileged_test!(
    fn feature_ready_agrees_with_bpftool_and_sysfs_and_probes_once_per_ttl() {
        let root = PinRoot::new();
        let server = Server::start(None, &root.args(&["-vv"]));
        let live = server.scrape();
        promtool(&live);
        let out = Command::new("bpftool")
            .args(["feature", "probe", "kernel"])
            .output()
            .expect("bpftool");
        let features = String::from_utf8_lossy(&out.stdout);
        let prog = |name: &str| bpftool_has(&features, "program_type", name);
        let map = |name: &str| bpftool_has(&features, "map_type", name);
        let exists = |path: &str| std::path::Path::new(path).exists();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let mounted = |fs: &'static str| {
            mounts
                .lines()
                .filter(move |l| l.split(' ').nth(2) == Some(fs))
                .collect::<Vec<_>>()
        };
        let sched_switch = mounted("tracefs").iter().any(|l| {
            let at = l.split(' ').nth(1).unwrap();
            exists(&format!("{at}/events/sched/sched_switch/id"))
        });
        let btf = exists("/sys/kernel/btf/vmlinux");
        // tp_btf is a tracing program that needs no trampoline: bpftool's
        // "tracing" probe is fentry's, so tp_btf is judged by its parts.
        let expected = [
            ("xdp", "generic", prog("xdp")),
            ("tc_classifier", "netlink", prog("sched_cls")),
            (
                "tc_classifier",
                "tcx",
                prog("sched_cls") && common::kernel_has_tcx(),
            ),
            (
                "lsm_monitor",
                "tracepoint",
                prog("tracepoint") && sched_switch,
            ),
            ("syscall_latency", "raw_tp", prog("raw_tracepoint")),
            ("syscall_latency", "tp_btf", prog("raw_tracepoint") && btf),
            (
                "function_latency",
                "kprobe",
                prog("kprobe") && exists("/sys/bus/event_source/devices/kprobe"),
            ),
            ("function_latency", "fentry", prog("tracing")),
            ("lsm_monitor", "lsm", prog("lsm")),
            (
                "objects",
                "cgroup_skb",
                prog("cgroup_skb") && !mounted("cgroup2").is_empty(),
            ),
            ("lsm_events", "ringbuf", map("ringbuf")),
            ("filter", "lpm_trie", map("lpm_trie")),
            ("btf", "kernel", btf),
        ];
        let got: Vec<&str> = live
            .lines()
            .filter(|l| l.starts_with("meshbpf_feature_ready{"))
            .collect();
        let want: Vec<String> = expected
            .iter()
            .map(|(f, m, ready)| {
                format!(
                    "meshbpf_feature_ready{{feature=\"{f}\",mode=\"{m}\"}} {}",
                    u8::from(*ready)
                )
            })
            .collect();
        assert_eq!(got, want, "bpftool: {features}");
        // What NOTES.md measured on the development kernel (6.18).
        if std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .starts_with("6.18")
        {
            let ready = |f: &str, m: &str| {
                value(
                    &live,
                    &format!("meshbpf_feature_ready{{feature=\"{f}\",mode=\"{m}\"}}"),
                )
            };
            assert_eq!(ready("function_latency", "kprobe"), Some(0.0));
            assert_eq!(ready("function_latency", "fentry"), Some(0.0));
            assert_eq!(ready("lsm_monitor", "lsm"), Some(0.0));
            assert_eq!(ready("xdp", "generic"), Some(1.0));
        }

        // Two more scrapes within the TTL probe nothing.
        assert_eq!(
            server
                .scrape()
                .lines()
                .filter(|l| l.starts_with("meshbpf_feature_ready{"))
                .count(),
            13
        );
        server.scrape();
        let (_, stderr) = server.stop(Signal::SIGTERM);
        let probes: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("probed the hooks in"))
            .collect();
        assert_eq!(probes.len(), 1, "{stderr}");
        eprintln!("{}", probes[0]);
    }
);

privileged_test!(
    fn the_shipped_alerts_go_pending_on_a_real_prometheus_for_a_failing_check_and_a_dead_serve() {
        let root = PinRoot::new();
        let net = VethPair::new();
        net.meshbpf(&root.args(&["attach", &net.dev])).ok();
        let server = Server::start(Some(&net.ns), &root.args(&[]));
        let prometheus = Prometheus::start(&net.ns, server.port);
        let alert = |name: &str, labels: &str| {
            prometheus.query(&format!(
                "ALERTS{{alertname=\"{name}\",alertstate=\"pending\"{labels}}}"
            ))
        };
        // Healthy: scraped, and no alert of meshbpf's is pending.
        common::wait_for(Duration::from_secs(60), || {
            prometheus.query("up{job=\"meshbpf\"}").filter(|v| v == "1")
        })
        .expect("Prometheus never scraped serve");
        assert_eq!(prometheus.query("count(ALERTS)"), None);

        // What a command killed before it pinned its link leaves behind.
        std::fs::create_dir_all(root.path.join("net/ghost0/xdp_counter")).unwrap();
        let check = ",check=\"attachment ghost0/xdp_counter\",status=\"fail\"";
        let pending = common::wait_for(Duration::from_secs(30), || {
            alert("MeshbpfHealthCheckFailing", check)
        });
        assert_eq!(pending.as_deref(), Some("1"));
        assert_eq!(alert("MeshbpfDown", ""), None);
        assert_eq!(alert("MeshbpfFlowTableNearlyFull", ""), None);

        let (status, _) = server.stop(Signal::SIGTERM);
        assert!(status.success());
        let down = common::wait_for(Duration::from_secs(30), || alert("MeshbpfDown", ""));
        assert_eq!(down.as_deref(), Some("1"));
    }
);
